//! Small, allocation-free readers for the header grammars the message layer checks and
//! the transaction layer needs (RFC 3261 25.1): comma lists, parameters, name-addr /
//! addr-spec, Via and CSeq. They work on unfolded header values (see `scan`).

use super::scan::{is_token, is_token_byte};

const WSP: [char; 2] = [' ', '\t'];

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing SP / HTAB (a byte loop; `trim_matches` with a char
/// set is several times slower on these short strings).
pub(crate) fn trim_wsp(s: &str) -> &str {
    trim_wsp_end(trim_wsp_start(s))
}

/// `s` without leading SP / HTAB.
pub(crate) fn trim_wsp_start(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| is_wsp(b)).count();
    s.get(n..).unwrap_or_default()
}

/// `s` without trailing SP / HTAB.
pub(crate) fn trim_wsp_end(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|&b| is_wsp(b)).count();
    s.get(..s.len() - n).unwrap_or_default()
}

/// A list that keeps its first `N` items inline and moves to the heap only beyond that,
/// so the header readers allocate nothing for the usual handful of values and
/// parameters (the message hot path reads several per message).
#[derive(Debug, Clone)]
pub(crate) struct InlineList<T: Copy + Default, const N: usize> {
    inline: [T; N],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy + Default, const N: usize> InlineList<T, N> {
    pub(crate) fn new() -> Self {
        Self {
            inline: [T::default(); N],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if !self.spill.is_empty() {
            self.spill.push(item);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = item;
            self.len += 1;
        } else {
            self.spill.reserve(N * 2);
            self.spill.extend_from_slice(&self.inline);
            self.spill.push(item);
        }
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for InlineList<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        if self.spill.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.spill
        }
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for InlineList<T, N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for InlineList<T, N> {}

/// Parts of a comma or semicolon list.
pub(crate) type Parts<'a> = InlineList<&'a str, 4>;

/// Header or URI parameters, `(name, value)`.
pub(crate) type ParamList<'a> = InlineList<(&'a str, Option<&'a str>), 6>;

/// Bytes that can change the state of [`split_top_level`]'s scan (besides the separator).
const fn special_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'\\' as usize] = true;
    table[b',' as usize] = true;
    table[b';' as usize] = true;
    table
}
static SPECIAL: [bool; 256] = special_bytes();

/// Splits `s` at `sep` bytes that are outside quoted strings and `<...>`.
/// Returns `None` when a quoted string or angle bracket is left open.
///
/// `sep` is `,` or `;` in every caller; the scan skips bytes that cannot change its state
/// with one table lookup each.
pub(crate) fn split_top_level(s: &str, sep: u8) -> Option<Parts<'_>> {
    debug_assert!(sep == b',' || sep == b';');
    let mut parts = Parts::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    // Jump to the next byte that can change the state. A skipped byte after a backslash
    // inside quotes is the escaped byte itself, so the escape ends there.
    while let Some(skip) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| SPECIAL[usize::from(b)]))
    {
        if skip > 0 {
            escaped = false;
        }
        let at = i + skip;
        let b = bytes.get(at).copied().unwrap_or_default();
        i = at + 1;
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' if !in_angle => in_angle = true,
            b'>' if in_angle => in_angle = false,
            _ if b == sep && !in_angle => {
                parts.push(s.get(start..at)?);
                start = at + 1;
            }
            _ => {}
        }
    }
    if in_quotes || in_angle {
        return None;
    }
    parts.push(s.get(start..)?);
    Some(parts)
}

/// `s` split at the first `b` (an ASCII byte), without it. A byte loop: the strings are
/// short, where `str::split_once` costs more in set-up than in search.
pub(crate) fn split_once_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|x| x == b)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Index of the first `b` (an ASCII byte) in `s`.
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|x| x == b)
}

/// Does `s` hold a space or a tab?
pub(crate) fn has_wsp(s: &str) -> bool {
    s.bytes().any(|b| b == b' ' || b == b'\t')
}

/// A parameter list such as `;tag=1;lr` read from the text after the first `;`.
/// Yields `(name, value)`; errors name what is wrong.
pub(crate) fn params(s: &str) -> Result<ParamList<'_>, &'static str> {
    let s = trim_wsp(s);
    if s.is_empty() {
        return Ok(ParamList::new());
    }
    let s = s
        .strip_prefix(';')
        .ok_or("text after the value does not start with ';'")?;
    let mut out = ParamList::new();
    for &raw in split_top_level(s, b';')
        .ok_or("unterminated quoted string in a parameter")?
        .iter()
    {
        let (name, value) = match split_once_byte(raw, b'=') {
            Some((n, v)) => (trim_wsp(n), Some(trim_wsp(v))),
            None => (trim_wsp(raw), None),
        };
        if !is_token(name) {
            return Err("empty or non-token parameter name");
        }
        if let Some(v) = value {
            if v.is_empty() {
                return Err("parameter with '=' but no value");
            }
            let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            let ipv6 = v.starts_with('[') && v.ends_with(']');
            if !quoted && !ipv6 && !v.bytes().all(|b| is_token_byte(b) || b == b':') {
                return Err("parameter value is neither a token nor a quoted string");
            }
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Finds parameter `name` (case-insensitive) in a list from [`params`].
pub(crate) fn find_param<'a>(
    list: &[(&'a str, Option<&'a str>)],
    name: &str,
) -> Option<Option<&'a str>> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameAddr<'a> {
    /// Display name as written (quotes kept), if any.
    pub display: Option<&'a str>,
    /// The URI text (inside `<>` when present).
    pub uri: &'a str,
    /// Header parameters.
    pub params: ParamList<'a>,
}

/// End (exclusive) of the quoted string that starts at `s[0] == '"'`.
fn quoted_string_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate().skip(1) {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return Some(i + 1);
        }
    }
    None
}

/// Reads one `name-addr` / `addr-spec` with parameters (RFC 3261 20.10, 25.1).
pub(crate) fn name_addr(value: &str) -> Result<NameAddr<'_>, &'static str> {
    let s = trim_wsp(value);
    if s.is_empty() {
        return Err("empty value");
    }
    let (display, rest) = if s.starts_with('"') {
        let end = quoted_string_end(s).ok_or("unterminated quoted display name")?;
        let rest = trim_wsp_start(s.get(end..).unwrap_or_default());
        if !rest.starts_with('<') {
            return Err("quoted display name not followed by <uri>");
        }
        (s.get(..end), rest)
    } else if let Some(lt) = find_byte(s, b'<') {
        let display = trim_wsp(s.get(..lt).unwrap_or_default());
        if !display
            .bytes()
            .all(|b| is_token_byte(b) || b == b' ' || b == b'\t')
        {
            return Err("unquoted display name has characters outside token");
        }
        let rest = s.get(lt..).unwrap_or_default();
        ((!display.is_empty()).then_some(display), rest)
    } else {
        // addr-spec: the URI ends at the first ';' (RFC 3261 20.10: parameters after an
        // addr-spec are header parameters).
        let (uri, params_text) = match find_byte(s, b';') {
            Some(i) => (
                s.get(..i).unwrap_or_default(),
                s.get(i..).unwrap_or_default(),
            ),
            None => (s, ""),
        };
        let uri = trim_wsp(uri);
        check_uri_text(uri)?;
        if uri.bytes().any(|b| b == b'?' || b == b',') {
            return Err("URI with '?' or ',' must be enclosed in <>");
        }
        return Ok(NameAddr {
            display: None,
            uri,
            params: params(params_text)?,
        });
    };
    let inner_end = find_byte(rest, b'>').ok_or("'<' without '>'")?;
    let uri = rest.get(1..inner_end).unwrap_or_default();
    check_uri_text(uri)?;
    let params = params(rest.get(inner_end + 1..).unwrap_or_default())?;
    Ok(NameAddr {
        display,
        uri,
        params,
    })
}

/// A URI in a header: non-empty, a scheme, no whitespace.
fn check_uri_text(uri: &str) -> Result<(), &'static str> {
    if uri.is_empty() {
        return Err("empty URI");
    }
    if has_wsp(uri) {
        return Err("whitespace inside a URI");
    }
    match split_once_byte(uri, b':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err("URI without a scheme"),
    }
}

/// One `via-parm` (RFC 3261 20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViaParm<'a> {
    /// Transport token (`UDP`, `TCP`, `TLS`, ...), as written.
    pub transport: &'a str,
    /// `host[:port]` as written: may hold the linear white space RFC 3261 allows
    /// around the `:` (`COLON = SWS ":" SWS`); [`ViaParm::sent_by_key`] drops it.
    pub sent_by: &'a str,
    /// Via parameters.
    pub params: ParamList<'a>,
}

/// Reads one `via-parm`: `SIP / 2.0 / transport sent-by *( ; via-params )`, with the
/// linear whitespace RFC 3261 allows around `/`.
pub(crate) fn via_parm(s: &str) -> Result<ViaParm<'_>, &'static str> {
    let s = trim_wsp(s);
    let (proto_and_host, params_text) = match find_byte(s, b';') {
        Some(i) => (
            s.get(..i).unwrap_or_default(),
            s.get(i..).unwrap_or_default(),
        ),
        None => (s, ""),
    };
    let (name, after_name) = split_once_byte(proto_and_host, b'/').ok_or("no protocol version")?;
    let (version, rest) = split_once_byte(after_name, b'/').ok_or("no transport")?;
    let (name, version) = (trim_wsp(name), trim_wsp(version));
    let rest = trim_wsp_start(rest);
    if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
        return Err("sent-protocol is not SIP/2.0");
    }
    let split = rest
        .bytes()
        .position(|b| b == b' ' || b == b'\t')
        .ok_or("no sent-by after the transport")?;
    let transport = rest.get(..split).unwrap_or_default();
    let sent_by = trim_wsp(rest.get(split..).unwrap_or_default());
    if !is_token(transport) {
        return Err("transport is not a token");
    }
    if sent_by.is_empty() || !sent_by_spacing_ok(sent_by) {
        return Err("missing or malformed sent-by");
    }
    Ok(ViaParm {
        transport,
        sent_by,
        params: params(params_text)?,
    })
}

impl ViaParm<'_> {
    /// The sent-by as transactions compare it (RFC 3261 17.2.3): without the white
    /// space around `:` and lowercased (host names are case-insensitive), so
    /// `Host.Example : 5060` and `host.example:5060` are the same sent-by.
    pub(crate) fn sent_by_key(&self) -> String {
        self.sent_by
            .bytes()
            .filter(|&b| !is_wsp(b))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    }
}

/// White space inside a sent-by only next to the `:` before the port (`host : 5060`),
/// never between two other words (`host 5060`).
fn sent_by_spacing_ok(sent_by: &str) -> bool {
    let mut words = sent_by.split(WSP).filter(|w| !w.is_empty());
    let Some(mut previous) = words.next() else {
        return false;
    };
    for word in words {
        if !previous.ends_with(':') && !word.starts_with(':') {
            return false;
        }
        previous = word;
    }
    true
}

/// The largest CSeq number RFC 3261 8.1.1.5 allows (it must be below 2**31).
pub(crate) const CSEQ_MAX: u32 = (1 << 31) - 1;

/// Reads a CSeq value `1*DIGIT LWS Method`.
pub(crate) fn cseq(s: &str) -> Result<(u32, &str), &'static str> {
    let mut it = s.split(WSP).filter(|p| !p.is_empty());
    let num = it.next().ok_or("empty CSeq")?;
    let method = it.next().ok_or("CSeq without a method")?;
    if it.next().is_some() {
        return Err("extra text after the CSeq method");
    }
    let n = digits_u32(num).ok_or("CSeq number is not a 32-bit decimal")?;
    if n > CSEQ_MAX {
        return Err("CSeq number is not below 2**31");
    }
    if !is_token(method) {
        return Err("CSeq method is not a token");
    }
    Ok((n, method))
}

/// `1*DIGIT` that fits in a u32 (leading zeros allowed, as in `0068`).
pub(crate) fn digits_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = s.trim_start_matches('0');
    if trimmed.len() > 10 {
        return None;
    }
    if trimmed.is_empty() {
        return Some(0);
    }
    trimmed.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let v = via_parm("SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.sent_by, "spindle.example.com");
        assert_eq!(find_param(&v.params, "branch"), Some(Some("z9hG4bK9ikj8")));
    }

    #[test]
    fn via_sent_by_may_have_lws_around_its_colon() {
        for (text, key) in [
            (
                "SIP/2.0/UDP Host.Example : 5060;branch=z9hG4bKa",
                "host.example:5060",
            ),
            (
                "SIP/2.0/UDP host.example:\t5060 ;branch=z9hG4bKa",
                "host.example:5060",
            ),
            ("SIP / 2.0 / UDP [2001:DB8::1] :5070", "[2001:db8::1]:5070"),
            ("SIP/2.0/UDP 192.0.2.1", "192.0.2.1"),
        ] {
            let v = via_parm(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(v.sent_by_key(), key, "{text}");
        }
        for bad in ["SIP/2.0/UDP host 5060", "SIP/2.0/UDP host : 5060 extra"] {
            assert!(via_parm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn via_with_empty_params_is_rejected() {
        assert!(via_parm("SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(via_parm("SIP/2.0/UDP").is_err());
        assert!(via_parm("SIP/3.0/UDP a").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = name_addr("\"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com> ; tag = 98asjd8")
            .unwrap();
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(find_param(&n.params, "tag"), Some(Some("98asjd8")));
        let n = name_addr("sip:caller@example.net;tag=1").unwrap();
        assert_eq!(n.uri, "sip:caller@example.net");
        assert_eq!(find_param(&n.params, "tag"), Some(Some("1")));
        let n = name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some("caller"));
        assert!(name_addr("\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(name_addr("Bell, Alexander <sip:a@b>").is_err());
        assert!(name_addr("< sip:t.watson@example.org >").is_err());
        assert!(name_addr("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(cseq("0009 INVITE"), Ok((9, "INVITE")));
        assert!(cseq("2147483648 INVITE").is_err());
        assert!(cseq("36893488147419103232 INVITE").is_err());
        assert!(cseq("-1 INVITE").is_err());
        assert!(cseq("1").is_err());
    }

    #[test]
    fn top_level_split_respects_quotes_and_angles() {
        let parts = split_top_level("\"a,b\" <sip:x;a=1,2>, sip:y", b',').unwrap();
        assert_eq!(parts.len(), 2);
        assert!(split_top_level("\"open", b',').is_none());
    }
}
