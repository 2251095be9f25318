//! Small helpers between the SIP crate's types and the endpoint: transport kinds,
//! header readers, raw responses to messages that did not parse, request building.

use std::net::{IpAddr, SocketAddr};

use branchline_sip::transaction::{self, Peer};
use branchline_sip::transport::TransportKind as WireKind;
use rsip::headers::UntypedHeader;
use rsip::Header;

/// The transaction layer's kind for a transport kind.
pub(super) fn tx_kind(kind: WireKind) -> transaction::TransportKind {
    match kind {
        WireKind::Udp => transaction::TransportKind::Udp,
        WireKind::Tcp => transaction::TransportKind::Tcp,
        WireKind::Tls => transaction::TransportKind::Tls,
    }
}

/// The transport's kind for a transaction layer kind.
pub(super) fn wire_kind(kind: transaction::TransportKind) -> WireKind {
    match kind {
        transaction::TransportKind::Udp => WireKind::Udp,
        transaction::TransportKind::Tcp => WireKind::Tcp,
        transaction::TransportKind::Tls => WireKind::Tls,
    }
}

/// rsip's transport for a transport kind (registrar flows).
pub(super) fn rsip_transport(kind: WireKind) -> rsip::Transport {
    match kind {
        WireKind::Udp => rsip::Transport::Udp,
        WireKind::Tcp => rsip::Transport::Tcp,
        WireKind::Tls => rsip::Transport::Tls,
    }
}

/// The transaction layer's kind for an rsip transport (registrar flows, trunk targets);
/// anything but TCP and TLS is UDP.
pub(super) fn kind_of_rsip(t: rsip::Transport) -> transaction::TransportKind {
    match t {
        rsip::Transport::Tcp => transaction::TransportKind::Tcp,
        rsip::Transport::Tls | rsip::Transport::TlsSctp => transaction::TransportKind::Tls,
        _ => transaction::TransportKind::Udp,
    }
}

/// A peer from an address and rsip transport.
pub(super) fn peer(addr: SocketAddr, t: rsip::Transport) -> Peer {
    Peer {
        addr,
        transport: kind_of_rsip(t),
    }
}

/// The value of the first header named `name` (case-insensitive; rsip keeps unknown
/// headers as `Other`).
pub(super) fn header<'a>(headers: &'a rsip::Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = name_value(h)?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

fn name_value(h: &Header) -> Option<(&str, &str)> {
    Some(match h {
        Header::Other(n, v) => (n.as_str(), v.as_str()),
        Header::UserAgent(v) => ("User-Agent", v.value()),
        Header::ContentType(v) => ("Content-Type", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        _ => return None,
    })
}

/// Every challenge of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`).
pub(super) fn challenges(response: &rsip::Response, proxy: bool) -> Vec<String> {
    response
        .headers
        .iter()
        .filter_map(|h| match (h, proxy) {
            (Header::WwwAuthenticate(v), false) => Some(v.value().to_owned()),
            (Header::ProxyAuthenticate(v), true) => Some(v.value().to_owned()),
            (Header::Other(n, v), false) if n.eq_ignore_ascii_case("WWW-Authenticate") => {
                Some(v.clone())
            }
            (Header::Other(n, v), true) if n.eq_ignore_ascii_case("Proxy-Authenticate") => {
                Some(v.clone())
            }
            _ => None,
        })
        .collect()
}

/// The user part of a name-addr header value (`"Bob" <sip:201@host>;tag=x` -> `201`).
pub(super) fn user_of_name_addr(value: &str) -> Option<String> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let rest = inner
        .trim()
        .strip_prefix("sip:")
        .or_else(|| inner.trim().strip_prefix("sips:"))
        .or_else(|| inner.trim().strip_prefix("tel:"))?;
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if inner.trim().starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split(';').next().unwrap_or(user);
    (!user.is_empty()).then(|| user.to_owned())
}

/// The display name of a name-addr (`"Bob" <sip:...>` -> `Bob`), if any.
pub(super) fn display_name(value: &str) -> Option<String> {
    let before = value.split('<').next()?.trim();
    let name = before.trim_matches('"').trim();
    (!name.is_empty() && value.contains('<')).then(|| name.replace("\\\"", "\""))
}

/// The From header value of a request, as written.
pub(super) fn from_value(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::From(f) => Some(f.value().to_owned()),
        _ => None,
    })
}

/// Whether the source IP is one of `ips`, comparing IPv4-mapped addresses as IPv4.
pub(super) fn ip_in(ip: IpAddr, ips: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ips.iter().any(|i| i.to_canonical() == ip)
}

/// What a message that failed to parse still offers for a response: the headers
/// RFC 3261 8.2.6.2 copies, read from the raw bytes.
#[derive(Debug, Default)]
struct RawHead {
    vias: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: Option<String>,
}

/// A stateless response (`400`, `501`, `505`, ...) to bytes that did not parse, when
/// they are a request with the Via, From, To, Call-ID and CSeq a response needs, each
/// readable as UTF-8 without control characters; `None` means drop silently.
pub(super) fn raw_response(bytes: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    // Requests only: never answer a response.
    if bytes.len() < 4 || bytes[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let head_end = find(bytes, b"\r\n\r\n")
        .or_else(|| find(bytes, b"\n\n"))
        .unwrap_or(bytes.len());
    let mut head = RawHead::default();
    for line in bytes[..head_end].split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let wanted = matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        );
        if !wanted {
            continue;
        }
        // A header we must copy that is not clean text: drop the whole message.
        let value = std::str::from_utf8(value).ok()?.trim();
        if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
            return None;
        }
        let value = value.to_owned();
        match name.as_str() {
            "via" | "v" => head.vias.push(value),
            "from" | "f" => head.from = Some(value),
            "to" | "t" => head.to = Some(value),
            "call-id" | "i" => head.call_id = Some(value),
            _ => head.cseq = Some(value),
        }
    }
    let (Some(from), Some(to), Some(call_id), Some(cseq)) =
        (head.from, head.to, head.call_id, head.cseq)
    else {
        return None;
    };
    if head.vias.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for v in &head.vias {
        out.push_str("Via: ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    let to = if to.contains(";tag=") {
        to
    } else {
        format!("{to};tag=bl-malformed")
    };
    out.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
    ));
    if status == 501 || status == 405 {
        out.push_str("Allow: ");
        out.push_str(branchline_sip::trunk::registration::ALLOW);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A standard reason phrase for the status codes the endpoint sends raw.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        416 => "Unsupported URI Scheme",
        501 => "Not Implemented",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Bad Request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_responses_need_the_copied_headers() {
        let msg = b"FOO sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 FOO\r\n\r\n";
        let r = String::from_utf8(raw_response(msg, 501, "Not Implemented").unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 501 Not Implemented\r\n"), "{r}");
        assert!(r.contains("To: <sip:x@y>;tag=bl-malformed\r\n"), "{r}");
        assert!(r.contains("Allow: "), "{r}");
        let no_via = b"INVITE sip:x@y SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(raw_response(no_via, 400, "Bad Request").is_none());
        let bad_utf8 = b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:\xff@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(raw_response(bad_utf8, 400, "Bad Request").is_none());
        assert!(raw_response(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
        assert!(raw_response(b"", 400, "x").is_none());
    }

    #[test]
    fn name_addr_readers() {
        assert_eq!(
            user_of_name_addr("\"Bob\" <sip:201@host>;tag=x").as_deref(),
            Some("201")
        );
        assert_eq!(
            user_of_name_addr("<sip:+4930123;user=phone@host>").as_deref(),
            Some("+4930123")
        );
        assert_eq!(user_of_name_addr("sip:55@h;tag=1").as_deref(), Some("55"));
        assert_eq!(user_of_name_addr("<sip:host>"), None);
        assert_eq!(
            display_name("\"Bob B\" <sip:201@h>").as_deref(),
            Some("Bob B")
        );
        assert_eq!(display_name("<sip:201@h>"), None);
    }
}
