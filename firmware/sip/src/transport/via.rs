//! The top Via: `received` and `rport` on the way in (RFC 3261 18.2.1, RFC 3581
//! section 4) and where a response goes (RFC 3261 18.2.2, RFC 3581 section 4).
//!
//! These work on the header *text*, not on rsip's typed Via: rsip does not keep
//! parameter spans, mis-handles bare `rport` and IPv6 `received` values, and does not
//! treat the compact form `v:` as a Via. A Via header value may hold several via-parms
//! separated by commas (`Via: SIP/2.0/UDP a;branch=1, SIP/2.0/TCP b;branch=2`); only
//! the first one is read or rewritten and everything after its comma is kept byte for
//! byte. The grammar followed is RFC 3261 section 25.1 (`via-parm`), with linear white
//! space allowed around `/`, `:`, `;` and `=`, IPv6 references in brackets, parameters
//! without values, and quoted-string values (which may contain `,` and `;`).
//!
//! `received` is written without brackets for IPv6 (RFC 3261's ABNF says
//! `IPv6address`); both forms are accepted when read (RFC 5118 section 4.5).

use std::net::{IpAddr, SocketAddr};

use super::{ConnectionId, Flow, TransportKind};

/// Why a Via could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    /// The request has no Via header.
    #[error("the message has no Via header")]
    Missing,
    /// The header value is empty.
    #[error("the Via header is empty")]
    Empty,
    /// The sent-protocol (`SIP/2.0/UDP`) is malformed.
    #[error("malformed sent-protocol at byte {at} of Via {value:?}")]
    BadProtocol {
        /// Byte offset in the header value.
        at: usize,
        /// The header value.
        value: String,
    },
    /// The sent-by host is missing or malformed.
    #[error("malformed sent-by host at byte {at} of Via {value:?}")]
    BadHost {
        /// Byte offset in the header value.
        at: usize,
        /// The header value.
        value: String,
    },
    /// The sent-by port is not a number in 1..=65535.
    #[error("bad sent-by port {port:?} in Via {value:?}")]
    BadPort {
        /// The port text.
        port: String,
        /// The header value.
        value: String,
    },
    /// A parameter is malformed (empty name or value, unterminated quote or bracket).
    #[error("malformed Via parameter at byte {at} of Via {value:?}")]
    BadParam {
        /// Byte offset in the header value.
        at: usize,
        /// The header value.
        value: String,
    },
    /// Something other than a parameter or a comma follows the via-parm.
    #[error("unexpected text at byte {at} of Via {value:?}")]
    Trailing {
        /// Byte offset in the header value.
        at: usize,
        /// The header value.
        value: String,
    },
    /// `received` is not an IP address.
    #[error("Via received={received:?} is not an IP address")]
    BadReceived {
        /// The parameter value.
        received: String,
    },
    /// `rport` carries a value that is not a port.
    #[error("Via rport={rport:?} is not a port")]
    BadRport {
        /// The parameter value.
        rport: String,
    },
}

/// The sent-by host of a Via.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViaHost {
    /// An IPv4 address or a bracketed IPv6 reference.
    Ip(IpAddr),
    /// A host name.
    Name(String),
}

/// The fields of the top via-parm that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopVia {
    /// The transport token as written (`UDP`, `TCP`, `TLS`, ...).
    pub transport: String,
    /// The sent-by host.
    pub host: ViaHost,
    /// The sent-by port, if written.
    pub port: Option<u16>,
    /// The `received` parameter.
    pub received: Option<IpAddr>,
    /// The `rport` parameter: `None` when absent, `Some(None)` when bare.
    pub rport: Option<Option<u16>>,
    /// The `maddr` parameter.
    pub maddr: Option<String>,
    /// The `branch` parameter.
    pub branch: Option<String>,
}

/// The byte layout of the first via-parm of a header value.
struct Layout<'a> {
    transport: &'a str,
    /// The host as written (with brackets for IPv6).
    host: &'a str,
    port: Option<&'a str>,
    /// Where the sent-by (host and port) ends.
    sent_by_end: usize,
    params: Vec<(&'a str, Option<&'a str>)>,
    /// Where the last parameter ends; the rest is white space and an optional
    /// `, next-via`.
    end: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

fn skip_ws(s: &[u8], mut at: usize) -> usize {
    while at < s.len() && is_ws(s[at]) {
        at += 1;
    }
    at
}

fn scan(s: &[u8], mut at: usize, ok: fn(u8) -> bool) -> usize {
    while at < s.len() && ok(s[at]) {
        at += 1;
    }
    at
}

fn layout(value: &str) -> Result<Layout<'_>, ViaError> {
    let s = value.as_bytes();
    let bad_protocol = |at| ViaError::BadProtocol {
        at,
        value: value.to_owned(),
    };
    let bad_param = |at| ViaError::BadParam {
        at,
        value: value.to_owned(),
    };

    let mut at = skip_ws(s, 0);
    if at == s.len() {
        return Err(ViaError::Empty);
    }
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport
    let mut transport = "";
    for part in 0..3 {
        if part > 0 {
            at = skip_ws(s, at);
            if s.get(at) != Some(&b'/') {
                return Err(bad_protocol(at));
            }
            at = skip_ws(s, at + 1);
        }
        let end = scan(s, at, is_token);
        if end == at {
            return Err(bad_protocol(at));
        }
        transport = &value[at..end];
        at = end;
    }
    // LWS sent-by
    let host_start = skip_ws(s, at);
    if host_start == at {
        return Err(bad_protocol(at));
    }
    let bad_host = || ViaError::BadHost {
        at: host_start,
        value: value.to_owned(),
    };
    let host_end = if s.get(host_start) == Some(&b'[') {
        let close = s[host_start..]
            .iter()
            .position(|&b| b == b']')
            .ok_or_else(bad_host)?;
        host_start + close + 1
    } else {
        scan(s, host_start, is_host_char)
    };
    if host_end == host_start {
        return Err(bad_host());
    }
    let host = &value[host_start..host_end];
    let mut sent_by_end = host_end;
    let mut port = None;
    let colon = skip_ws(s, host_end);
    if s.get(colon) == Some(&b':') {
        let digits = skip_ws(s, colon + 1);
        let end = scan(s, digits, |b| b.is_ascii_digit());
        if end == digits {
            return Err(ViaError::BadPort {
                port: String::new(),
                value: value.to_owned(),
            });
        }
        port = Some(&value[digits..end]);
        sent_by_end = end;
    }

    // *( SEMI via-params )
    let mut params = Vec::new();
    let mut end = sent_by_end;
    loop {
        let semi = skip_ws(s, end);
        if s.get(semi) != Some(&b';') {
            break;
        }
        let name_start = skip_ws(s, semi + 1);
        let name_end = scan(s, name_start, is_token);
        if name_end == name_start {
            return Err(bad_param(name_start));
        }
        let name = &value[name_start..name_end];
        let equals = skip_ws(s, name_end);
        if s.get(equals) == Some(&b'=') {
            let value_start = skip_ws(s, equals + 1);
            let value_end = scan_param_value(s, value_start).ok_or(bad_param(value_start))?;
            params.push((name, Some(&value[value_start..value_end])));
            end = value_end;
        } else {
            params.push((name, None));
            end = name_end;
        }
    }
    let rest = skip_ws(s, end);
    if rest < s.len() && s[rest] != b',' {
        return Err(ViaError::Trailing {
            at: rest,
            value: value.to_owned(),
        });
    }
    Ok(Layout {
        transport,
        host,
        port,
        sent_by_end,
        params,
        end,
    })
}

/// The end of a `gen-value` (token, host, IPv6 reference or quoted-string) starting at
/// `at`, or `None` when it is empty or unterminated.
fn scan_param_value(s: &[u8], at: usize) -> Option<usize> {
    match s.get(at)? {
        b'"' => {
            let mut i = at + 1;
            while i < s.len() {
                match s[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'[' => {
            let close = s[at..].iter().position(|&b| b == b']')?;
            Some(at + close + 1)
        }
        _ => {
            let end = scan(s, at, |b| is_token(b) || b == b':');
            (end > at).then_some(end)
        }
    }
}

fn parse_host(host: &str) -> Option<ViaHost> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| ViaHost::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(ViaHost::Ip(IpAddr::V4(ip)));
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ]; labels do not start or end
    // with '-' (an underscore is tolerated: deployed devices send it).
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = !trimmed.is_empty()
        && trimmed
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    labels_ok.then(|| ViaHost::Name(host.to_owned()))
}

fn parse_ip_param(value: &str) -> Option<IpAddr> {
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse().ok()
}

/// Reads the first via-parm of a Via header value.
pub fn parse_top_via(value: &str) -> Result<TopVia, ViaError> {
    let layout = layout(value)?;
    let host = parse_host(layout.host).ok_or_else(|| ViaError::BadHost {
        at: 0,
        value: value.to_owned(),
    })?;
    let port = match layout.port {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| ViaError::BadPort {
                    port: text.to_owned(),
                    value: value.to_owned(),
                })?,
        ),
    };
    let mut via = TopVia {
        transport: layout.transport.to_owned(),
        host,
        port,
        received: None,
        rport: None,
        maddr: None,
        branch: None,
    };
    for (name, param) in layout.params {
        if name.eq_ignore_ascii_case("received") && via.received.is_none() {
            let text = param.unwrap_or("");
            via.received = Some(parse_ip_param(text).ok_or_else(|| ViaError::BadReceived {
                received: text.to_owned(),
            })?);
        } else if name.eq_ignore_ascii_case("rport") && via.rport.is_none() {
            via.rport = Some(match param {
                None => None,
                Some(text) => Some(text.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(
                    || ViaError::BadRport {
                        rport: text.to_owned(),
                    },
                )?),
            });
        } else if name.eq_ignore_ascii_case("maddr") && via.maddr.is_none() {
            via.maddr = param.map(str::to_owned);
        } else if name.eq_ignore_ascii_case("branch") && via.branch.is_none() {
            via.branch = param.map(str::to_owned);
        }
    }
    Ok(via)
}

/// Rewrites the first via-parm of a Via header value for a request that arrived from
/// `source`, returning the whole new header value (later via-parms unchanged).
///
/// - `received=<source IP>` is added when the sent-by host is not that IP (a host
///   name always differs), and always when the client asked for `rport` (RFC 3581
///   section 4). A `received` the client wrote itself is replaced, or removed when
///   none is due: only this hop may state what it saw.
/// - A bare `rport` becomes `rport=<source port>`. An `rport` that already carries a
///   value is overwritten with the observed port for the same reason; duplicate
///   `received`/`rport` parameters collapse into one.
/// - Every other parameter is kept as written (white space around `;`/`=` is
///   dropped); text before the parameters (protocol and sent-by) and after the first
///   via-parm is kept byte for byte.
///
/// IPv4-mapped IPv6 sources (from a dual-stack socket) are written as IPv4.
pub fn rewrite_top_via(value: &str, source: SocketAddr) -> Result<String, ViaError> {
    let top = parse_top_via(value)?;
    let layout = layout(value)?;
    let source_ip = source.ip().to_canonical();
    let host_differs = match top.host {
        ViaHost::Ip(ip) => ip.to_canonical() != source_ip,
        ViaHost::Name(_) => true,
    };
    let want_received = host_differs || top.rport.is_some();

    let mut out = String::with_capacity(value.len() + 40);
    out.push_str(&value[..layout.sent_by_end]);
    let mut received_written = false;
    let mut rport_written = false;
    for (name, param) in &layout.params {
        if name.eq_ignore_ascii_case("received") {
            if want_received && !received_written {
                out.push_str(";received=");
                out.push_str(&source_ip.to_string());
                received_written = true;
            }
        } else if name.eq_ignore_ascii_case("rport") {
            if !rport_written {
                out.push_str(";rport=");
                out.push_str(&source.port().to_string());
                rport_written = true;
            }
        } else {
            out.push(';');
            out.push_str(name);
            if let Some(param) = param {
                out.push('=');
                out.push_str(param);
            }
        }
    }
    if want_received && !received_written {
        out.push_str(";received=");
        out.push_str(&source_ip.to_string());
    }
    out.push_str(&value[layout.end..]);
    Ok(out)
}

/// Whether a header name is Via in its long or compact form.
fn is_via_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v")
}

/// Applies [`rewrite_top_via`] to the first Via header of a parsed request (rsip
/// keeps a compact-form `v:` header as [`rsip::Header::Other`]; it becomes a
/// [`rsip::Header::Via`]). Fails, changing nothing, when there is no Via or it is
/// malformed.
pub fn apply_received_rport(
    headers: &mut rsip::Headers,
    source: SocketAddr,
) -> Result<(), ViaError> {
    use rsip::headers::UntypedHeader as _;
    let header = headers
        .iter_mut()
        .find(|h| match h {
            rsip::Header::Via(_) => true,
            rsip::Header::Other(name, _) => is_via_name(name),
            _ => false,
        })
        .ok_or(ViaError::Missing)?;
    let current = match header {
        rsip::Header::Via(via) => via.value().to_owned(),
        rsip::Header::Other(_, value) => value.clone(),
        _ => return Err(ViaError::Missing),
    };
    let rewritten = rewrite_top_via(&current, source)?;
    *header = rsip::Header::Via(rsip::headers::Via::new(rewritten));
    Ok(())
}

/// A computed destination for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The transport.
    pub kind: TransportKind,
    /// The destination address.
    pub dest: SocketAddr,
    /// The local address to send from (UDP: the socket the request arrived on).
    pub local: Option<SocketAddr>,
    /// The connection to use first (TCP/TLS: the one the request arrived on).
    pub connection: Option<ConnectionId>,
}

/// Where a response goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseRoute {
    /// Send along this route.
    Send(Route),
    /// The destination is a host name: resolve it with RFC 3263 section 5 and send to
    /// the result over `kind`.
    Resolve {
        /// The transport.
        kind: TransportKind,
        /// The host name to resolve.
        host: String,
        /// The port (explicit or the transport's default).
        port: u16,
    },
}

/// Where the response to a request goes, from the response's top Via (the request's,
/// after [`rewrite_top_via`]) and the flow the request arrived over.
///
/// - TCP/TLS (RFC 3261 18.2.2): over the connection the request came in on. Should it
///   be gone, [`Transport::send`](super::Transport::send) opens a new one to the
///   address in `received` (else the sent-by IP, else the flow's peer IP) and the
///   sent-by port (else the transport's default).
/// - UDP with `maddr`: to `maddr` and the sent-by port (else 5060).
/// - UDP with `received`: to that IP, and to the `rport` value when there is one
///   (RFC 3581 section 4), else the sent-by port, else 5060; from the socket the request
///   arrived on.
/// - Otherwise to the sent-by host and port, resolving names.
pub fn response_route(top: &TopVia, arrived: &Flow) -> ResponseRoute {
    let kind = arrived.kind;
    let sent_by_port = top.port.unwrap_or(kind.default_port());
    if kind.is_stream() {
        let ip = top
            .received
            .or(match top.host {
                ViaHost::Ip(ip) => Some(ip),
                ViaHost::Name(_) => None,
            })
            .unwrap_or(arrived.peer.ip());
        return ResponseRoute::Send(Route {
            kind,
            dest: SocketAddr::new(ip, sent_by_port),
            local: Some(arrived.local),
            connection: arrived.connection,
        });
    }
    let send = |ip: IpAddr, port: u16| {
        ResponseRoute::Send(Route {
            kind,
            dest: SocketAddr::new(ip, port),
            local: Some(arrived.local),
            connection: None,
        })
    };
    if let Some(maddr) = &top.maddr {
        return match parse_ip_param(maddr) {
            Some(ip) => send(ip, sent_by_port),
            None => ResponseRoute::Resolve {
                kind,
                host: maddr.clone(),
                port: sent_by_port,
            },
        };
    }
    if let Some(received) = top.received {
        let port = top.rport.flatten().unwrap_or(sent_by_port);
        return send(received, port);
    }
    match &top.host {
        ViaHost::Ip(ip) => send(*ip, top.rport.flatten().unwrap_or(sent_by_port)),
        ViaHost::Name(host) => ResponseRoute::Resolve {
            kind,
            host: host.clone(),
            port: sent_by_port,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::headers::UntypedHeader as _;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bare_rport_is_filled_and_received_added_even_when_host_matches() {
        let value = "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK776";
        let out = rewrite_top_via(value, addr("192.0.2.1:5060")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch=z9hG4bK776;received=192.0.2.1"
        );
    }

    #[test]
    fn nat_source_gets_received_and_rport() {
        // RFC 3581 section 4 example shape.
        let value = "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff";
        let out = rewrite_top_via(value, addr("192.0.2.1:9988")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.1"
        );
        let top = parse_top_via(&out).unwrap();
        assert_eq!(top.received, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(top.rport, Some(Some(9988)));
        assert_eq!(top.branch.as_deref(), Some("z9hG4bKkjshdyff"));
    }

    #[test]
    fn matching_host_without_rport_is_left_alone() {
        let value = "SIP/2.0/TCP 192.0.2.4:5070;branch=z9hG4bK1";
        assert_eq!(
            rewrite_top_via(value, addr("192.0.2.4:33000")).unwrap(),
            value
        );
    }

    #[test]
    fn host_name_always_differs() {
        let value = "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1";
        assert_eq!(
            rewrite_top_via(value, addr("192.0.2.4:5060")).unwrap(),
            "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=192.0.2.4"
        );
    }

    #[test]
    fn ipv6_sent_by_and_source() {
        let value = "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3;rport";
        let out = rewrite_top_via(value, addr("[2001:db8::9:255]:6000")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3;rport=6000;received=2001:db8::9:255"
        );
        let top = parse_top_via(&out).unwrap();
        assert_eq!(top.host, ViaHost::Ip("2001:db8::9:1".parse().unwrap()));
        assert_eq!(top.received, Some("2001:db8::9:255".parse().unwrap()));
        // Same IPv6 written differently is the same host.
        let same = "SIP/2.0/UDP [2001:0db8:0:0:0:0:9:1];branch=z9hG4bK2";
        assert_eq!(
            rewrite_top_via(same, addr("[2001:db8::9:1]:5060")).unwrap(),
            same
        );
    }

    #[test]
    fn bracketed_ipv6_received_is_read() {
        let top =
            parse_top_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK")
                .unwrap();
        assert_eq!(top.received, Some("2001:db8::9:255".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_source_is_written_as_ipv4() {
        let value = "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1";
        assert_eq!(
            rewrite_top_via(value, addr("[::ffff:192.0.2.9]:5060")).unwrap(),
            "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1;received=192.0.2.9"
        );
        let same = "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1";
        assert_eq!(
            rewrite_top_via(same, addr("[::ffff:192.0.2.9]:5060")).unwrap(),
            same
        );
    }

    #[test]
    fn only_the_first_via_parm_of_a_line_is_touched() {
        let value = "SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKa , SIP/2.0/TCP 10.0.0.2;rport;branch=z9hG4bKb";
        let out = rewrite_top_via(value, addr("198.51.100.1:1024")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP 10.0.0.1;rport=1024;branch=z9hG4bKa;received=198.51.100.1 , SIP/2.0/TCP 10.0.0.2;rport;branch=z9hG4bKb"
        );
    }

    #[test]
    fn white_space_and_odd_spellings_are_accepted() {
        // LWS around '/', ':', ';', '=' and a folded line, lower-case names.
        let value =
            "  SIP / 2.0 / udp\r\n  host.example.com : 5062 ; RPORT ; Branch = z9hG4bKx ;lr";
        let out = rewrite_top_via(value, addr("203.0.113.5:40000")).unwrap();
        assert_eq!(
            out,
            "  SIP / 2.0 / udp\r\n  host.example.com : 5062;rport=40000;Branch=z9hG4bKx;lr;received=203.0.113.5"
        );
        let top = parse_top_via(value).unwrap();
        assert_eq!(top.transport, "udp");
        assert_eq!(top.port, Some(5062));
        assert_eq!(top.rport, Some(None));
    }

    #[test]
    fn quoted_values_may_hold_commas_and_semicolons() {
        let value = "SIP/2.0/UDP 10.0.0.1;x=\"a,b;c\\\"d\";branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9";
        let out = rewrite_top_via(value, addr("192.0.2.1:5060")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP 10.0.0.1;x=\"a,b;c\\\"d\";branch=z9hG4bK1;received=192.0.2.1, SIP/2.0/UDP 10.0.0.9"
        );
    }

    #[test]
    fn forged_received_and_duplicate_rport_are_replaced() {
        let value = "SIP/2.0/UDP 10.0.0.1;received=6.6.6.6;rport=1;rport;branch=z9hG4bK1";
        let out = rewrite_top_via(value, addr("192.0.2.1:7000")).unwrap();
        assert_eq!(
            out,
            "SIP/2.0/UDP 10.0.0.1;received=192.0.2.1;rport=7000;branch=z9hG4bK1"
        );
        // A forged received on a Via that needs none is dropped.
        let value = "SIP/2.0/UDP 192.0.2.1;received=6.6.6.6;branch=z9hG4bK1";
        assert_eq!(
            rewrite_top_via(value, addr("192.0.2.1:7000")).unwrap(),
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"
        );
    }

    #[test]
    fn malformed_vias_are_errors() {
        let src = addr("192.0.2.1:5060");
        for (value, want) in [
            ("", "empty"),
            ("   ", "empty"),
            ("SIP/2.0", "protocol"),
            ("SIP/2.0/UDP", "protocol"),
            ("SIP/2.0/UDP10.0.0.1", "protocol"),
            ("SIP//UDP 10.0.0.1", "protocol"),
            ("SIP/2.0/UDP ;branch=1", "host"),
            ("SIP/2.0/UDP [2001:db8::1;branch=1", "host"),
            ("SIP/2.0/UDP [not-ipv6];branch=1", "host"),
            ("SIP/2.0/UDP -bad-.example.com", "host"),
            ("SIP/2.0/UDP a..b", "host"),
            ("SIP/2.0/UDP 10.0.0.1:", "port"),
            ("SIP/2.0/UDP 10.0.0.1:70000", "port"),
            ("SIP/2.0/UDP 10.0.0.1:0", "port"),
            ("SIP/2.0/UDP 10.0.0.1;", "param"),
            ("SIP/2.0/UDP 10.0.0.1;=x", "param"),
            ("SIP/2.0/UDP 10.0.0.1;branch=", "param"),
            ("SIP/2.0/UDP 10.0.0.1;x=\"open", "param"),
            ("SIP/2.0/UDP 10.0.0.1 garbage", "trailing"),
            ("SIP/2.0/UDP 10.0.0.1;branch=a<b", "trailing"),
            ("SIP/2.0/UDP 10.0.0.1;received=nothere", "received"),
            ("SIP/2.0/UDP 10.0.0.1;received", "received"),
            ("SIP/2.0/UDP 10.0.0.1;rport=abc", "rport"),
            ("SIP/2.0/UDP 10.0.0.1;rport=0", "rport"),
            ("SIP/2.0/UDP h\u{e9}st", "trailing"),
        ] {
            let err = rewrite_top_via(value, src).expect_err(value);
            let kind = match err {
                ViaError::Empty => "empty",
                ViaError::BadProtocol { .. } => "protocol",
                ViaError::BadHost { .. } => "host",
                ViaError::BadPort { .. } => "port",
                ViaError::BadParam { .. } => "param",
                ViaError::Trailing { .. } => "trailing",
                ViaError::BadReceived { .. } => "received",
                ViaError::BadRport { .. } => "rport",
                ViaError::Missing => "missing",
            };
            assert_eq!(kind, want, "{value:?}: {err}");
        }
    }

    #[test]
    fn compact_form_header_in_rsip_is_rewritten_and_normalised() {
        let mut headers = rsip::Headers::default();
        headers.push(rsip::Header::Other(
            "v".into(),
            "SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1".into(),
        ));
        headers.push(rsip::Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0",
        )));
        apply_received_rport(&mut headers, addr("192.0.2.1:7000")).unwrap();
        let vias: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            vias,
            [
                "Via: SIP/2.0/UDP 10.0.0.1;rport=7000;branch=z9hG4bK1;received=192.0.2.1",
                "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK0",
            ]
        );
    }

    #[test]
    fn missing_or_malformed_via_changes_nothing() {
        let mut headers = rsip::Headers::default();
        headers.push(rsip::Header::CallId("a@b".into()));
        assert_eq!(
            apply_received_rport(&mut headers, addr("192.0.2.1:7000")),
            Err(ViaError::Missing)
        );
        headers.push(rsip::Header::Via(rsip::headers::Via::new("SIP/2.0/UDP")));
        let before = headers.clone();
        assert!(apply_received_rport(&mut headers, addr("192.0.2.1:7000")).is_err());
        assert_eq!(headers, before);
    }

    fn flow(kind: TransportKind, peer: &str, connection: Option<u64>) -> Flow {
        Flow {
            kind,
            local: addr("192.0.2.100:5060"),
            peer: addr(peer),
            connection: connection.map(ConnectionId::new),
        }
    }

    fn route_of(via: &str, arrived: &Flow) -> ResponseRoute {
        response_route(&parse_top_via(via).unwrap(), arrived)
    }

    #[test]
    fn udp_responses_follow_received_and_rport() {
        let arrived = flow(TransportKind::Udp, "203.0.113.9:9988", None);
        let local = Some(addr("192.0.2.100:5060"));
        let send = |dest: &str| {
            ResponseRoute::Send(Route {
                kind: TransportKind::Udp,
                dest: addr(dest),
                local,
                connection: None,
            })
        };
        // rport filled: received IP and rport port.
        assert_eq!(
            route_of(
                "SIP/2.0/UDP 10.1.1.1:4540;rport=9988;received=203.0.113.9",
                &arrived
            ),
            send("203.0.113.9:9988")
        );
        // received without rport: sent-by port.
        assert_eq!(
            route_of("SIP/2.0/UDP 10.1.1.1:4540;received=203.0.113.9", &arrived),
            send("203.0.113.9:4540")
        );
        // received without rport or sent-by port: 5060.
        assert_eq!(
            route_of("SIP/2.0/UDP host.example;received=203.0.113.9", &arrived),
            send("203.0.113.9:5060")
        );
        // No received: the sent-by itself.
        assert_eq!(
            route_of("SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bK", &arrived),
            send("203.0.113.9:5070")
        );
        // maddr wins.
        assert_eq!(
            route_of(
                "SIP/2.0/UDP 10.1.1.1:4540;maddr=198.51.100.1;received=203.0.113.9",
                &arrived
            ),
            send("198.51.100.1:4540")
        );
        // A name without received needs DNS.
        assert_eq!(
            route_of("SIP/2.0/UDP pc.example.com:5070", &arrived),
            ResponseRoute::Resolve {
                kind: TransportKind::Udp,
                host: "pc.example.com".into(),
                port: 5070
            }
        );
    }

    #[test]
    fn stream_responses_use_the_arrival_connection_with_a_fallback() {
        let arrived = flow(TransportKind::Tls, "203.0.113.9:40000", Some(7));
        assert_eq!(
            route_of(
                "SIP/2.0/TLS phone.example;rport=40000;received=203.0.113.9",
                &arrived
            ),
            ResponseRoute::Send(Route {
                kind: TransportKind::Tls,
                dest: addr("203.0.113.9:5061"),
                local: Some(addr("192.0.2.100:5060")),
                connection: Some(ConnectionId::new(7)),
            })
        );
        let arrived = flow(TransportKind::Tcp, "203.0.113.9:40000", Some(8));
        assert_eq!(
            route_of("SIP/2.0/TCP phone.example:5070", &arrived),
            ResponseRoute::Send(Route {
                kind: TransportKind::Tcp,
                dest: addr("203.0.113.9:5070"),
                local: Some(addr("192.0.2.100:5060")),
                connection: Some(ConnectionId::new(8)),
            })
        );
    }
}
