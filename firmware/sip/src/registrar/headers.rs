//! Small header readers shared by the registrar and the trunk: splitting
//! comma-separated header values, reading `Contact` entries and their parameters,
//! comparing SIP URIs the way bindings need. rsip parses one `Contact` value per
//! header and does not know `*`; these fill that gap without panicking on anything.

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Param, Uri};

/// Splits a header value at top-level commas (not inside `"…"` or `<…>`), trimming
/// each part and dropping empty ones.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut angle = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// Every `Contact` value of the message, split.
pub(crate) fn contact_values(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::Contact(c) => Some(c.value()),
            _ => None,
        })
        .flat_map(split_list)
        .map(str::to_owned)
        .collect()
}

/// A `name-addr` or `addr-spec` with its header parameters (RFC 3261 20.10), read
/// without rsip's tokenizer, which refuses quoted parameter values such as
/// `+sip.instance="<urn:uuid:…>"` or Polycom's `methods="INVITE, ACK"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// The URI text.
    pub uri: String,
    /// Header parameters in order; quoted values keep their quotes.
    pub params: Vec<(String, Option<String>)>,
}

/// End (index of the closing quote) of a quoted string starting at `s[0] == '"'`.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Reads one Contact/From/To value; `None` when it is malformed.
pub(crate) fn parse_name_addr(value: &str) -> Option<NameAddr> {
    let v = value.trim();
    let (display, uri, rest) = if let Some(stripped) = v.strip_prefix('"') {
        let end = quoted_end(v)?;
        let name = stripped
            .get(..end - 1)?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        let after = v.get(end + 1..)?.trim_start();
        let inner = after.strip_prefix('<')?;
        let close = inner.find('>')?;
        (Some(name), &inner[..close], &inner[close + 1..])
    } else if let Some(open) = v.find('<') {
        let name = v[..open].trim();
        if name.contains(['>', ';', '"']) {
            return None;
        }
        let inner = &v[open + 1..];
        let close = inner.find('>')?;
        let display = (!name.is_empty()).then(|| name.to_owned());
        (display, &inner[..close], &inner[close + 1..])
    } else {
        let end = v.find(';').unwrap_or(v.len());
        (None, &v[..end], &v[end..])
    };
    let uri = uri.trim();
    if uri.is_empty() || uri.contains(['<', '>', '"', ' ', ',']) {
        return None;
    }
    let mut params = Vec::new();
    let rest = rest.trim();
    if !rest.is_empty() {
        let body = rest.strip_prefix(';')?;
        let mut parts = Vec::new();
        let mut quoted = false;
        let mut escaped = false;
        let mut start = 0;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ';' if !quoted => {
                    parts.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if quoted {
            return None;
        }
        parts.push(&body[start..]);
        for part in parts {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (part.trim(), None),
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
            {
                return None;
            }
            if let Some(val) = value {
                if val.is_empty()
                    || (val.starts_with('"') && quoted_end(val) != Some(val.len() - 1))
                {
                    return None;
                }
            }
            params.push((name.to_owned(), value.map(str::to_owned)));
        }
    }
    Some(NameAddr {
        display,
        uri: uri.to_owned(),
        params,
    })
}

/// A Contact value as an rsip typed Contact: our reader for the value, rsip for the
/// URI. `None` when malformed or when rsip cannot represent the URI (rsip 0.4 cannot
/// hold IPv6 literals).
pub(crate) fn parse_contact(value: &str) -> Option<rsip::typed::Contact> {
    let na = parse_name_addr(value)?;
    let uri = Uri::try_from(na.uri.as_str()).ok()?;
    let params = na
        .params
        .iter()
        .map(|(n, v)| Param::try_from((n.as_str(), v.as_deref())).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(rsip::typed::Contact {
        display_name: na.display,
        uri,
        params,
    })
}

/// The value of the first header named `name` (case-insensitive), typed or not.
pub(crate) fn header_value<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| named_value(h, name))
}

/// Every value of headers named `name` (one per header line, not split).
pub(crate) fn header_values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter_map(|h| named_value(h, name))
        .collect()
}

fn named_value<'a>(h: &'a Header, name: &str) -> Option<&'a str> {
    let (n, v): (&str, &str) = match h {
        Header::Other(n, v) => (n.as_str(), v.as_str()),
        Header::Expires(v) => ("Expires", v.value()),
        Header::MinExpires(v) => ("Min-Expires", v.value()),
        Header::CallId(v) => ("Call-ID", v.value()),
        Header::CSeq(v) => ("CSeq", v.value()),
        Header::To(v) => ("To", v.value()),
        Header::From(v) => ("From", v.value()),
        Header::UserAgent(v) => ("User-Agent", v.value()),
        Header::ContentType(v) => ("Content-Type", v.value()),
        Header::Require(v) => ("Require", v.value()),
        Header::Authorization(v) => ("Authorization", v.value()),
        Header::ProxyAuthorization(v) => ("Proxy-Authorization", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        Header::RetryAfter(v) => ("Retry-After", v.value()),
        Header::Via(v) => ("Via", v.value()),
        Header::Event(v) => ("Event", v.value()),
        Header::Contact(v) => ("Contact", v.value()),
        Header::Allow(v) => ("Allow", v.value()),
        Header::MaxForwards(v) => ("Max-Forwards", v.value()),
        Header::ContentLength(v) => ("Content-Length", v.value()),
        Header::Supported(v) => ("Supported", v.value()),
        Header::Accept(v) => ("Accept", v.value()),
        Header::Server(v) => ("Server", v.value()),
        Header::SubscriptionState(v) => ("Subscription-State", v.value()),
        Header::Date(v) => ("Date", v.value()),
        Header::Unsupported(v) => ("Unsupported", v.value()),
        _ => return None,
    };
    n.eq_ignore_ascii_case(name).then_some(v)
}

/// The leading integer of a header like `Retry-After: 120 (maintenance);duration=60`.
pub(crate) fn leading_u32(value: &str) -> Option<u32> {
    let digits: &str = value
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    if digits.is_empty() {
        return None;
    }
    // Saturate absurd values instead of failing: they are clamped by the caller.
    Some(
        digits
            .parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32),
    )
}

/// A strict unsigned decimal (RFC 3261 `delta-seconds`); values beyond `u32` saturate
/// (RFC 3261 20.19 allows that for Expires).
pub(crate) fn delta_seconds(value: &str) -> Option<u32> {
    let v = value.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32),
    )
}

/// The value of the parameter `name` (case-insensitive) among `params`, with quotes
/// removed; `Some("")` for a flag parameter.
pub(crate) fn param_value(params: &[Param], name: &str) -> Option<String> {
    params.iter().find_map(|p| match p {
        Param::Expires(e) if name.eq_ignore_ascii_case("expires") => Some(e.value().to_owned()),
        Param::Q(q) if name.eq_ignore_ascii_case("q") => Some(q.value().to_owned()),
        Param::Tag(t) if name.eq_ignore_ascii_case("tag") => Some(t.value().to_owned()),
        Param::Other(n, v) if n.value().eq_ignore_ascii_case(name) => Some(
            v.as_ref()
                .map(|v| v.value().trim_matches('"').to_owned())
                .unwrap_or_default(),
        ),
        _ => None,
    })
}

/// Do two SIP URIs address the same contact? Scheme, user, host (case-insensitive)
/// and port (absent = the scheme's default) must agree; parameters are ignored
/// (a simplification of RFC 3261 19.1.4 that treats `;transport=` changes as the
/// same contact, which is what a refresh from the same phone needs).
pub(crate) fn same_contact_uri(a: &Uri, b: &Uri) -> bool {
    let scheme = |u: &Uri| {
        u.scheme
            .as_ref()
            .map(|s| s.to_string().to_ascii_lowercase())
    };
    let port = |u: &Uri| {
        u.host_with_port
            .port
            .as_ref()
            .map(|p| *p.value())
            .unwrap_or_else(|| {
                if scheme(u).as_deref() == Some("sips") {
                    5061
                } else {
                    5060
                }
            })
    };
    scheme(a) == scheme(b)
        && a.user() == b.user()
        && a.host_with_port
            .host
            .to_string()
            .eq_ignore_ascii_case(&b.host_with_port.host.to_string())
        && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""Doe, John" <sip:a@b;x=1,2>;q=0.5 , <sip:c@d>, ,"#),
            vec![r#""Doe, John" <sip:a@b;x=1,2>;q=0.5"#, "<sip:c@d>"]
        );
        assert_eq!(
            split_list(r#""a\"," <sip:x@y>, *"#),
            vec![r#""a\"," <sip:x@y>"#, "*"]
        );
        assert!(split_list("").is_empty());
    }

    #[test]
    fn name_addr_forms() {
        let na = parse_name_addr(
            r#""Anna \"A\"" <sip:201@192.0.2.1:5062>;+sip.instance="<urn:uuid:1>";reg-id=1;methods="INVITE, ACK""#,
        )
        .unwrap();
        assert_eq!(na.display.as_deref(), Some("Anna \"A\""));
        assert_eq!(na.uri, "sip:201@192.0.2.1:5062");
        assert_eq!(
            na.params,
            vec![
                ("+sip.instance".into(), Some("\"<urn:uuid:1>\"".into())),
                ("reg-id".into(), Some("1".into())),
                ("methods".into(), Some("\"INVITE, ACK\"".into())),
            ]
        );
        let na = parse_name_addr("sip:201@host;expires=60").unwrap();
        assert_eq!((na.uri.as_str(), na.params.len()), ("sip:201@host", 1));
        let na = parse_name_addr("Anna <sip:201@host>").unwrap();
        assert_eq!(na.display.as_deref(), Some("Anna"));
        for bad in [
            "",
            "<>",
            "<sip:a@b",
            "\"x <sip:a@b>",
            "<sip:a@b>;=1",
            "<sip:a@b>;x=\"open",
            "<sip:a@b> junk",
            "<sip:a@b>;x=",
        ] {
            assert!(parse_name_addr(bad).is_none(), "{bad}");
        }
        let c =
            parse_contact("<sip:201@192.0.2.1>;+sip.instance=\"<urn:uuid:1>\";expires=60").unwrap();
        assert_eq!(
            param_value(&c.params, "+sip.instance").as_deref(),
            Some("<urn:uuid:1>")
        );
        assert_eq!(param_value(&c.params, "expires").as_deref(), Some("60"));
        assert!(parse_contact("<sip:201@[2001:db8::1]:5060>").is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(delta_seconds(" 3600 "), Some(3600));
        assert_eq!(delta_seconds("99999999999"), Some(u32::MAX));
        assert_eq!(delta_seconds("-1"), None);
        assert_eq!(delta_seconds("1e3"), None);
        assert_eq!(delta_seconds(""), None);
        assert_eq!(leading_u32("120 (maintenance);duration=60"), Some(120));
        assert_eq!(leading_u32("soon"), None);
    }

    #[test]
    fn uri_comparison() {
        let u = |s: &str| Uri::try_from(s).unwrap();
        assert!(same_contact_uri(
            &u("sip:201@192.0.2.5:5060"),
            &u("sip:201@192.0.2.5")
        ));
        assert!(same_contact_uri(
            &u("sip:201@PHONE.example"),
            &u("sip:201@phone.example;transport=tcp")
        ));
        assert!(!same_contact_uri(
            &u("sip:201@192.0.2.5:5062"),
            &u("sip:201@192.0.2.5")
        ));
        assert!(!same_contact_uri(
            &u("sip:202@192.0.2.5"),
            &u("sip:201@192.0.2.5")
        ));
        assert!(!same_contact_uri(
            &u("sips:201@192.0.2.5"),
            &u("sip:201@192.0.2.5")
        ));
    }
}
