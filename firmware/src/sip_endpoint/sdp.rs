//! SDP offer/answer for the box's audio legs (RFC 4566 syntax, RFC 3264 negotiation).
//!
//! The box speaks G.711 only (PCMU payload 0, PCMA payload 8) with RFC 4733
//! telephone-event, so a SIP leg's media is one audio stream: an address, a port, one
//! codec, an optional telephone-event payload type, a packetisation time and a
//! direction (`a=sendrecv`, `sendonly`, `recvonly`, `inactive`: hold and resume).
//!
//! - [`parse`] reads a session description into a [`SessionDescription`]: the session
//!   and media `c=` lines, every `m=` line with its formats and the `a=rtpmap`,
//!   `a=fmtp`, `a=ptime` and direction attributes. Anything malformed is a
//!   [`SdpError`] naming the line; nothing here panics on any input (property-tested).
//! - [`negotiate`] picks what the box can do from a remote offer (or reads a remote
//!   answer): the first audio stream with a port, the first format in the peer's
//!   order that is PCMU or PCMA (static payload types or dynamic ones mapped by
//!   `rtpmap`), telephone-event if offered, ptime 10/20/30 (20 when absent or
//!   another value), and the direction as the peer sees it. No usable audio stream is
//!   [`NegotiationError`] (the endpoint answers `488 Not Acceptable Here`).
//! - [`build_offer`] and [`build_answer`] write the box's own offer or answer ([`LocalMedia`]).
//!
//! # Why not a crate
//!
//! crates.io was checked: `sdp` (webrtc-rs, 0.17) is built for WebRTC sessions
//! (ICE, DTLS, many media) and brings its own dependencies; `sdp-types` (0.3) parses
//! the line structure but leaves `rtpmap`, `fmtp`, `ptime` and the direction as
//! uninterpreted attribute strings, so the part that matters here (reading those and
//! the RFC 3264 answer rules) would be ours anyway. The subset the box needs is small
//! and is written here with errors that name the offending line.
//!
//! # Limits
//!
//! Only the first `m=audio` line with a non-zero port is used; further streams (a
//! video line from a softphone) are answered with port 0 as RFC 3264 6 requires.
//! IPv4 and IPv6 `c=` addresses are read; host names in `c=` are refused (no DNS here).
//! No `a=rtcp` (RTCP is on RTP port + 1), no SRTP (`RTP/SAVP` streams are refused),
//! no ICE.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use line_proto::g711::Law;

/// Largest SDP body read (bytes); real offers are well under 2 KiB.
pub const MAX_SDP_LEN: usize = 16 * 1024;

/// Media direction (RFC 3264 5.1, 6.1) as written in the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`: the writer only sends (it put the other side on hold).
    SendOnly,
    /// `a=recvonly`: the writer only receives.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes for an offer with this direction (RFC 3264 6.1):
    /// sendonly is answered recvonly, recvonly sendonly, inactive inactive.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the writer of this direction holds the call (it does not want to
    /// receive media: `sendonly` or `inactive`).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// One `m=` line with what the box reads of its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, ...
    pub media: String,
    /// Transport port (0: stream refused or disabled).
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub proto: String,
    /// Formats (payload types for RTP) in the writer's order of preference.
    pub formats: Vec<String>,
    /// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`: payload type, encoding
    /// (upper-cased), clock rate.
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// `a=ptime` in ms.
    pub ptime: Option<u32>,
    /// The media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The media-level direction attribute.
    pub direction: Option<Direction>,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute.
    pub direction: Option<Direction>,
    /// Every `m=` line in order.
    pub media: Vec<MediaDescription>,
}

/// Why a body is not a session description the box can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Larger than [`MAX_SDP_LEN`].
    #[error("SDP body of {len} bytes exceeds {MAX_SDP_LEN} bytes")]
    TooLarge {
        /// Body length.
        len: usize,
    },
    /// Not UTF-8.
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    /// Does not start with `v=0`.
    #[error("SDP does not start with v=0")]
    NoVersion,
    /// A line is not `<letter>=<value>`.
    #[error("SDP line {line}: not <type>=<value>")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// A `c=` line the box cannot use.
    #[error("SDP line {line}: bad c= line: {reason}")]
    BadConnection {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A malformed `m=` line.
    #[error("SDP line {line}: bad m= line: {reason}")]
    BadMedia {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A malformed `a=rtpmap` or `a=ptime`.
    #[error("SDP line {line}: bad {attribute} attribute")]
    BadAttribute {
        /// 1-based line number.
        line: usize,
        /// `rtpmap` or `ptime`.
        attribute: &'static str,
    },
}

/// Reads a session description (see the module doc).
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge { len: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut sdp = SessionDescription {
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut seen_version = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let bytes = raw.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(SdpError::BadLine { line });
        }
        let kind = bytes[0];
        let value = &raw[2..];
        if !seen_version {
            if kind != b'v' || value.trim() != "0" {
                return Err(SdpError::NoVersion);
            }
            seen_version = true;
            continue;
        }
        match kind {
            b'c' => {
                let addr = parse_connection(value, line)?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sdp.connection = Some(addr),
                }
            }
            b'm' => sdp.media.push(parse_media(value, line)?),
            b'a' => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let direction = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (direction, sdp.media.last_mut()) {
                    (Some(d), Some(m)) => m.direction = Some(d),
                    (Some(d), None) => sdp.direction = Some(d),
                    (None, Some(m)) => match name {
                        "rtpmap" => m.rtpmaps.push(parse_rtpmap(arg, line)?),
                        "ptime" => {
                            let ms = arg
                                .trim()
                                .parse::<f64>()
                                .ok()
                                .filter(|v| v.is_finite() && *v > 0.0 && *v <= 1000.0);
                            let ms = ms.ok_or(SdpError::BadAttribute {
                                line,
                                attribute: "ptime",
                            })?;
                            m.ptime = Some(ms.round() as u32);
                        }
                        _ => {}
                    },
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::NoVersion);
    }
    Ok(sdp)
}

fn parse_connection(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    let bad = |reason| SdpError::BadConnection { line, reason };
    let mut parts = value.split_whitespace();
    let (Some(net), Some(family), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected: IN IP4|IP6 <address>"));
    };
    if net != "IN" {
        return Err(bad("network type is not IN"));
    }
    // Multicast TTL/count suffixes (`/127`) are not for unicast calls.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad("address is not an IP literal"))?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(bad("address family does not match the address")),
    }
}

fn parse_media(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let bad = |reason| SdpError::BadMedia { line, reason };
    let mut parts = value.split_whitespace();
    let media = parts.next().ok_or(bad("no media type"))?;
    let port_text = parts.next().ok_or(bad("no port"))?;
    // `<port>/<count>`: the count is for layered encodings, not used for audio calls.
    let port = port_text
        .split('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or(bad("port is not a number in 0..=65535"))?;
    let proto = parts.next().ok_or(bad("no transport protocol"))?;
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(bad("no formats"));
    }
    if formats.len() > 64 {
        return Err(bad("more than 64 formats"));
    }
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        rtpmaps: Vec::new(),
        ptime: None,
        connection: None,
        direction: None,
    })
}

fn parse_rtpmap(arg: &str, line: usize) -> Result<(u8, String, u32), SdpError> {
    let bad = SdpError::BadAttribute {
        line,
        attribute: "rtpmap",
    };
    let (pt, rest) = arg.trim().split_once(' ').ok_or(bad.clone())?;
    let pt = pt
        .parse::<u8>()
        .ok()
        .filter(|p| *p < 128)
        .ok_or(bad.clone())?;
    let mut enc = rest.trim().split('/');
    let name = enc.next().filter(|n| !n.is_empty()).ok_or(bad.clone())?;
    let clock = enc.next().and_then(|c| c.parse::<u32>().ok()).ok_or(bad)?;
    Ok((pt, name.to_ascii_uppercase(), clock))
}

/// What the box uses of a remote description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where the peer wants RTP (address and port; the address is unspecified,
    /// `0.0.0.0`, when an old-style hold put it there).
    pub rtp: SocketAddr,
    /// The codec chosen.
    pub law: Law,
    /// Its payload type (0, 8, or the peer's dynamic number).
    pub payload_type: u8,
    /// The peer's telephone-event payload type, if it offered one at 8000 Hz.
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time: 10, 20 or 30 ms.
    pub ptime_ms: u32,
    /// The peer's direction (session or media level; sendrecv when absent, and
    /// inactive when the address is `0.0.0.0`, RFC 2543 hold).
    pub direction: Direction,
    /// Index of the audio `m=` line used (the answer keeps the others with port 0).
    pub media_index: usize,
    /// Number of `m=` lines in the remote description.
    pub media_count: usize,
}

/// Why an offer or answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The body is not SDP the box can read.
    #[error(transparent)]
    Syntax(#[from] SdpError),
    /// No `m=audio` line with a non-zero port over plain RTP.
    #[error("no usable audio stream (m=audio with a port over RTP/AVP)")]
    NoAudio,
    /// The audio stream offers no PCMU or PCMA.
    #[error("no common codec: the box speaks PCMU and PCMA, the peer offered {offered}")]
    NoCommonCodec {
        /// What was offered, as `pt:encoding` items.
        offered: String,
    },
    /// The audio stream has no connection address.
    #[error("the audio stream has no c= address")]
    NoConnection,
}

/// Reads a remote offer or answer and picks the box's codec (see the module doc): the
/// peer's order of preference decides between PCMU and PCMA.
pub fn negotiate(body: &[u8]) -> Result<RemoteMedia, NegotiationError> {
    let sdp = parse(body)?;
    let media_count = sdp.media.len();
    let (media_index, m) = sdp
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio" && m.port != 0 && m.proto.eq_ignore_ascii_case("RTP/AVP"))
        .ok_or(NegotiationError::NoAudio)?;
    let encoding_of = |pt: u8| -> Option<(&str, u32)> {
        m.rtpmaps
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, n, c)| (n.as_str(), *c))
    };
    let mut chosen = None;
    let mut telephone_event_pt = None;
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let law = match (pt, encoding_of(pt)) {
            (_, Some(("PCMU", 8000))) => Some(Law::Ulaw),
            (_, Some(("PCMA", 8000))) => Some(Law::Alaw),
            (0, None) => Some(Law::Ulaw),
            (8, None) => Some(Law::Alaw),
            (_, Some(("TELEPHONE-EVENT", 8000))) => {
                if telephone_event_pt.is_none() {
                    telephone_event_pt = Some(pt);
                }
                None
            }
            _ => None,
        };
        if let (Some(law), None) = (law, chosen) {
            chosen = Some((law, pt));
        }
    }
    let Some((law, payload_type)) = chosen else {
        let offered = m
            .formats
            .iter()
            .map(|f| {
                let name = f
                    .parse::<u8>()
                    .ok()
                    .and_then(encoding_of)
                    .map_or("?", |(n, _)| n);
                format!("{f}:{name}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        return Err(NegotiationError::NoCommonCodec { offered });
    };
    let addr = m
        .connection
        .or(sdp.connection)
        .ok_or(NegotiationError::NoConnection)?;
    let ptime_ms = m.ptime.filter(|p| matches!(p, 10 | 20 | 30)).unwrap_or(20);
    let mut direction = m.direction.or(sdp.direction).unwrap_or(Direction::SendRecv);
    if addr.is_unspecified() {
        direction = Direction::Inactive;
    }
    Ok(RemoteMedia {
        rtp: SocketAddr::new(addr, m.port),
        law,
        payload_type,
        telephone_event_pt,
        ptime_ms,
        direction,
        media_index,
        media_count,
    })
}

/// The box's side of a session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// Session id and version (`o=` line); the version must grow with every change.
    pub session_id: u64,
    /// `o=` version.
    pub session_version: u64,
    /// Our RTP address.
    pub rtp: SocketAddr,
    /// The direction we write.
    pub direction: Direction,
    /// Packetisation time.
    pub ptime_ms: u32,
}

/// The telephone-event payload type the box offers.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// Writes the box's offer: PCMU and PCMA (the preferred law first) and
/// telephone-event 0-16.
pub fn build_offer(local: &LocalMedia, preferred: Law) -> Vec<u8> {
    let codecs: [(u8, &str); 2] = match preferred {
        Law::Ulaw => [(0, "PCMU"), (8, "PCMA")],
        Law::Alaw => [(8, "PCMA"), (0, "PCMU")],
    };
    let mut out = header(local);
    let _ = write!(
        out,
        "m=audio {} RTP/AVP {} {} {TELEPHONE_EVENT_PT}\r\n",
        local.rtp.port(),
        codecs[0].0,
        codecs[1].0
    );
    for (pt, name) in codecs {
        let _ = write!(out, "a=rtpmap:{pt} {name}/8000\r\n");
    }
    let _ = write!(
        out,
        "a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000\r\na=fmtp:{TELEPHONE_EVENT_PT} 0-16\r\n"
    );
    let _ = write!(
        out,
        "a=ptime:{}\r\na={}\r\n",
        local.ptime_ms,
        local.direction.attribute()
    );
    out.into_bytes()
}

/// Writes the box's answer to `remote` (an offer read with [`negotiate`]): the chosen
/// codec and, if offered, telephone-event, each with the offerer's payload type; other
/// `m=` lines refused with port 0 (RFC 3264 6).
pub fn build_answer(local: &LocalMedia, remote: &RemoteMedia) -> Vec<u8> {
    let mut out = header(local);
    let name = match remote.law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    };
    for i in 0..remote.media_count.max(1) {
        if i != remote.media_index {
            // A refused stream keeps its position with port 0 (formats are required).
            let _ = write!(out, "m=audio 0 RTP/AVP 0\r\n");
            continue;
        }
        let _ = write!(
            out,
            "m=audio {} RTP/AVP {}",
            local.rtp.port(),
            remote.payload_type
        );
        if let Some(te) = remote.telephone_event_pt {
            let _ = write!(out, " {te}");
        }
        out.push_str("\r\n");
        let _ = write!(out, "a=rtpmap:{} {name}/8000\r\n", remote.payload_type);
        if let Some(te) = remote.telephone_event_pt {
            let _ = write!(
                out,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        let _ = write!(
            out,
            "a=ptime:{}\r\na={}\r\n",
            local.ptime_ms,
            local.direction.attribute()
        );
    }
    out.into_bytes()
}

fn header(local: &LocalMedia) -> String {
    let (family, ip) = match local.rtp.ip() {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    format!(
        "v=0\r\no=branchline {} {} IN {family} {ip}\r\ns=branchline\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n";

    #[test]
    fn picks_the_peers_first_g711_and_telephone_event() {
        let r = negotiate(OFFER.as_bytes()).unwrap();
        assert_eq!(r.rtp, "192.0.2.5:4000".parse().unwrap());
        assert_eq!((r.law, r.payload_type), (Law::Alaw, 8));
        assert_eq!(r.telephone_event_pt, Some(101));
        assert_eq!(r.ptime_ms, 20);
        assert_eq!(r.direction, Direction::SendRecv);
    }

    #[test]
    fn static_payload_types_without_rtpmap_and_dynamic_pcmu() {
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/AVP 0\n";
        let r = negotiate(body.as_bytes()).unwrap();
        assert_eq!((r.law, r.payload_type, r.ptime_ms), (Law::Ulaw, 0, 20));
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/AVP 112\na=rtpmap:112 pcmu/8000\na=ptime:30\n";
        let r = negotiate(body.as_bytes()).unwrap();
        assert_eq!((r.law, r.payload_type, r.ptime_ms), (Law::Ulaw, 112, 30));
    }

    #[test]
    fn hold_directions_and_old_style_hold() {
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/AVP 0\na=sendonly\n";
        let r = negotiate(body.as_bytes()).unwrap();
        assert_eq!(r.direction, Direction::SendOnly);
        assert!(r.direction.is_hold());
        assert_eq!(r.direction.answer(), Direction::RecvOnly);
        let body = "v=0\na=inactive\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/AVP 0\n";
        assert_eq!(
            negotiate(body.as_bytes()).unwrap().direction,
            Direction::Inactive
        );
        let body = "v=0\nc=IN IP4 0.0.0.0\nm=audio 5000 RTP/AVP 0\n";
        assert_eq!(
            negotiate(body.as_bytes()).unwrap().direction,
            Direction::Inactive
        );
    }

    #[test]
    fn no_common_codec_and_no_audio() {
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/AVP 9 18\na=rtpmap:18 G729/8000\n";
        let e = negotiate(body.as_bytes()).unwrap_err();
        assert!(matches!(e, NegotiationError::NoCommonCodec { .. }), "{e}");
        assert!(e.to_string().contains("18:G729"), "{e}");
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=video 5000 RTP/AVP 96\n";
        assert_eq!(negotiate(body.as_bytes()), Err(NegotiationError::NoAudio));
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5000 RTP/SAVP 0\n";
        assert_eq!(negotiate(body.as_bytes()), Err(NegotiationError::NoAudio));
        let body = "v=0\nm=audio 5000 RTP/AVP 0\n";
        assert_eq!(
            negotiate(body.as_bytes()),
            Err(NegotiationError::NoConnection)
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases: &[(&str, SdpError)] = &[
            ("", SdpError::NoVersion),
            ("o=x\n", SdpError::NoVersion),
            ("v=0\nbogus\n", SdpError::BadLine { line: 2 }),
            (
                "v=0\nc=IN IP4 host.example\n",
                SdpError::BadConnection {
                    line: 2,
                    reason: "address is not an IP literal",
                },
            ),
            (
                "v=0\nc=IN IP6 10.0.0.1\n",
                SdpError::BadConnection {
                    line: 2,
                    reason: "address family does not match the address",
                },
            ),
            (
                "v=0\nm=audio 99999 RTP/AVP 0\n",
                SdpError::BadMedia {
                    line: 2,
                    reason: "port is not a number in 0..=65535",
                },
            ),
            (
                "v=0\nm=audio 5000 RTP/AVP\n",
                SdpError::BadMedia {
                    line: 2,
                    reason: "no formats",
                },
            ),
            (
                "v=0\nm=audio 5000 RTP/AVP 0\na=rtpmap:300 PCMU/8000\n",
                SdpError::BadAttribute {
                    line: 3,
                    attribute: "rtpmap",
                },
            ),
            (
                "v=0\nm=audio 5000 RTP/AVP 0\na=ptime:-5\n",
                SdpError::BadAttribute {
                    line: 3,
                    attribute: "ptime",
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse(body.as_bytes()).as_ref().err(),
                Some(want),
                "{body:?}"
            );
        }
        assert_eq!(parse(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
        assert_eq!(
            parse(&vec![b'v'; MAX_SDP_LEN + 1]),
            Err(SdpError::TooLarge {
                len: MAX_SDP_LEN + 1
            })
        );
    }

    #[test]
    fn offer_and_answer_round_trip() {
        let local = LocalMedia {
            session_id: 7,
            session_version: 1,
            rtp: "127.0.0.1:10000".parse().unwrap(),
            direction: Direction::SendRecv,
            ptime_ms: 20,
        };
        let offer = build_offer(&local, Law::Alaw);
        let r = negotiate(&offer).unwrap();
        assert_eq!((r.law, r.payload_type), (Law::Alaw, 8));
        assert_eq!(r.telephone_event_pt, Some(TELEPHONE_EVENT_PT));
        assert_eq!(r.rtp, local.rtp);

        // An offer with a video line first: the answer keeps both m= lines.
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=video 6000 RTP/AVP 96\nm=audio 5000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=sendonly\n";
        let remote = negotiate(body.as_bytes()).unwrap();
        let answer = build_answer(
            &LocalMedia {
                direction: remote.direction.answer(),
                ..local
            },
            &remote,
        );
        let parsed = parse(&answer).unwrap();
        assert_eq!(parsed.media.len(), 2);
        assert_eq!(parsed.media[0].port, 0);
        assert_eq!(parsed.media[1].port, 10000);
        assert_eq!(parsed.media[1].formats, vec!["0", "101"]);
        assert_eq!(parsed.media[1].direction, Some(Direction::RecvOnly));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = negotiate(&body);
        }

        #[test]
        fn never_panics_on_sdp_like_text(body in "(v=0\n)?([cmao]=[ -~]{0,40}\n){0,12}") {
            let _ = negotiate(body.as_bytes());
        }
    }
}
