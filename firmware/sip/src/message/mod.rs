//! SIP messages: the only way untrusted bytes become an [`rsip::SipMessage`], and back.
//!
//! # Why a layer in front of rsip
//!
//! rsip 0.4 is the message type the rest of the crate uses, but its parser is
//! unmaintained and too trusting to face the network: it does not undo header folding,
//! does not know compact header names (`i:`, `v:`, `l:` ...), matches methods
//! case-insensitively, accepts `SIP/1.0`, keeps a Request-URI's unparsed tail silently
//! (it drops `?headers` and anything after them), stores a body as `Vec<u8>` but writes
//! it back through `String::from_utf8_lossy`, and performs none of the RFC 3261 checks
//! (mandatory headers, Content-Length, CSeq/method agreement). So this module scans and
//! checks the bytes itself (the `scan` and `grammar` submodules), builds the
//! `rsip::Request` / `rsip::Response` from the checked parts, and uses rsip's own
//! parser only for the Request-URI, whose result is compared with the original text so
//! that anything rsip cannot represent is refused instead of silently changed. Every
//! rsip defect found this way has a regression fixture under `tests/data/regressions/`.
//!
//! # Submodules and roles
//!
//! - `scan`: start line and header lines: CRLF handling, folding, size and count
//!   limits, UTF-8 and control characters.
//! - `headers`: header names, compact forms, and construction of rsip headers.
//! - `grammar`: readers for comma lists, parameters, name-addr, Via and CSeq.
//! - `fields`: the accessors the transaction layer uses
//!   ([`top_via_branch`], [`cseq`], [`call_id`], [`from_tag`], [`to_tag`],
//!   [`transaction_fields`]); they never panic, whatever the message holds.
//! - `stream`: [`frame_stream`] splits a TCP/TLS byte stream into messages and
//!   RFC 5626 keepalives.
//!
//! # Decisions
//!
//! - Line ends: CRLF per RFC 3261 7.5. A bare LF is also accepted as a line end:
//!   RFC 4475 has no test that requires refusing it, several deployed stacks emit it,
//!   and since the box never relays raw bytes (it is a B2BUA and re-serializes with
//!   CRLF) leniency here cannot smuggle anything past a downstream parser. A bare CR is
//!   refused, as are control characters outside a quoted-pair.
//! - Leading CRLFs before the start line are skipped (RFC 3261 7.5).
//! - A datagram (UDP) may omit Content-Length; bytes beyond Content-Length are dropped
//!   and a shorter body is an error (RFC 3261 18.3). Stream transports must frame with
//!   [`frame_stream`] first, which requires Content-Length (RFC 3261 20.14).
//! - Max-Forwards may be absent from a request (RFC 3261 16.3 step 3 passes such a
//!   request); Via, From, To, Call-ID and CSeq are required in both directions, and the
//!   top Via must carry a `branch` (RFC 3261 8.1.1.7; RFC 2543 peers without one are
//!   refused, see [`ParseError::MissingBranch`]).
//!
//! # Limits of rsip the caller must know
//!
//! - rsip's `Method` is a closed set of 14 methods: any other method (legal per
//!   RFC 3261) gives [`ParseError::UnknownMethod`] (answer 501 if at all).
//! - Only `sip:` and `sips:` Request-URIs are representable (rsip prints any other
//!   scheme as `scheme://...`): others give [`ParseError::UnsupportedUriScheme`] (416).
//! - rsip keeps the reason phrase only for status codes it does not know; for known
//!   codes it prints its own (`503 ServiceUnavailable`).
//! - URI headers (`?Route=...`) are not representable and are refused in a
//!   Request-URI (they are not allowed there by RFC 3261 19.1.1 anyway).

mod fields;
pub(crate) mod grammar;
mod headers;
mod scan;
mod stream;

use std::fmt::Write as _;

use rsip::prelude::HasHeaders;
use rsip::SipMessage;

pub use fields::{
    call_id, cseq, from_tag, to_tag, top_via_branch, transaction_fields, FieldError,
    TransactionFields,
};
pub use stream::{frame_stream, Frame};

use headers::Known;

/// Size and count limits applied before anything is allocated per header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message (head and body), in bytes. Default 64 KiB, the
    /// largest a UDP datagram can carry; larger messages get [`ParseError::TooLarge`].
    pub max_message_len: usize,
    /// Most header fields (after unfolding) one message may have. Default 128.
    pub max_headers: usize,
    /// Longest start line or header field (after unfolding), in bytes. Default 8 KiB.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_len: 64 * 1024,
            max_headers: 128,
            max_line_len: 8 * 1024,
        }
    }
}

/// Why bytes were not accepted as a SIP message.
///
/// [`ParseError::status_hint`] says which response (if any) a server could send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but line ends (a keepalive datagram): ignore it.
    #[error("no message: only line ends")]
    Empty,
    /// The message is larger than [`Limits::max_message_len`].
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes seen (or announced by Content-Length).
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More header fields than [`Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A start line or header field longer than [`Limits::max_line_len`].
    #[error("line {line} is {len} bytes long, the limit is {limit}")]
    LineTooLong {
        /// 1-based line number (the start line is 1).
        line: usize,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The head is not closed by an empty line (in a datagram: the message is cut).
    #[error("the header section is not terminated by an empty line")]
    MissingHeaderTerminator,
    /// A CR not followed by LF.
    #[error("bare CR on line {line}")]
    BareCr {
        /// 1-based line number.
        line: usize,
    },
    /// A control character outside a quoted-pair.
    #[error("control character {byte:#04x} on line {line}")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
        /// The byte.
        byte: u8,
    },
    /// A start line or header field that is not UTF-8.
    #[error("line {line} is not valid UTF-8")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// The start line has the wrong shape.
    #[error("invalid start line: {reason}")]
    InvalidStartLine {
        /// What is wrong.
        reason: &'static str,
    },
    /// A SIP version other than 2.0: answer 505.
    #[error("unsupported SIP version {version:?}")]
    UnsupportedVersion {
        /// The version as written.
        version: String,
    },
    /// A syntactically valid method that rsip cannot represent: answer 501.
    #[error("unknown method {method:?}")]
    UnknownMethod {
        /// The method as written.
        method: String,
    },
    /// A status code that is not three digits in 100..=699.
    #[error("invalid status code {code:?}")]
    InvalidStatusCode {
        /// The code as written (truncated to 16 bytes).
        code: String,
    },
    /// A malformed Request-URI.
    #[error("invalid Request-URI: {reason}")]
    InvalidRequestUri {
        /// What is wrong.
        reason: &'static str,
    },
    /// A Request-URI scheme rsip cannot represent: answer 416.
    #[error("unsupported Request-URI scheme {scheme:?}")]
    UnsupportedUriScheme {
        /// The scheme as written.
        scheme: String,
    },
    /// rsip failed on, or would silently change, a `sip:`/`sips:` Request-URI.
    #[error("rsip cannot represent Request-URI {uri:?}: {detail}")]
    UriNotRepresentable {
        /// The URI as written.
        uri: String,
        /// rsip's error, or what it turned the URI into.
        detail: String,
    },
    /// A header line that is not `name: value`.
    #[error("malformed header on line {line}: {reason}")]
    MalformedHeader {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A mandatory header is missing.
    #[error("missing mandatory header {name}")]
    MissingHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// A header that may appear once appears more than once (or holds several values).
    #[error("header {name} appears more than once")]
    DuplicateHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// A known header's value does not follow its grammar.
    #[error("invalid {name} header on line {line}: {reason}")]
    InvalidHeader {
        /// Canonical header name.
        name: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The CSeq method differs from the request method (RFC 3261 8.1.1.5).
    #[error("CSeq method {cseq_method:?} differs from request method {method:?}")]
    CSeqMethodMismatch {
        /// Request-line method.
        method: String,
        /// CSeq method.
        cseq_method: String,
    },
    /// The top Via has no `branch` parameter (an RFC 2543 peer): not supported.
    #[error("the top Via header has no branch parameter")]
    MissingBranch,
    /// A stream message without Content-Length (RFC 3261 20.14).
    #[error("Content-Length is required on stream transports")]
    MissingContentLength,
    /// The body is shorter than Content-Length says (RFC 3261 18.3).
    #[error("Content-Length is {content_length} but only {actual} body bytes follow")]
    BodyTooShort {
        /// Declared length.
        content_length: usize,
        /// Bytes present.
        actual: usize,
    },
}

impl ParseError {
    /// The status code a server may answer a request with when its bytes failed with
    /// this error, or `None` when the bytes must be dropped silently (nothing to answer,
    /// or not enough of a message to build a response from).
    pub fn status_hint(&self) -> Option<u16> {
        match self {
            Self::Empty | Self::MissingHeaderTerminator | Self::BareCr { .. } => None,
            Self::TooLarge { .. } => Some(513),
            Self::UnsupportedVersion { .. } => Some(505),
            Self::UnknownMethod { .. } => Some(501),
            Self::UnsupportedUriScheme { .. } => Some(416),
            _ => Some(400),
        }
    }
}

/// Parses one message from a datagram (UDP) or from a slice [`frame_stream`] returned.
///
/// The result has been checked as described in the module doc. Bytes after the body
/// that Content-Length announces are ignored (RFC 3261 18.3).
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
    if bytes.len() > limits.max_message_len {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            limit: limits.max_message_len,
        });
    }
    if scan::leading_line_ends(bytes) == bytes.len() {
        return Err(ParseError::Empty);
    }
    let head = scan::scan_head(bytes, limits)?;
    let start = parse_start_line(head.start_line)?;
    let checked = check_fields(&head, &start)?;

    let available = bytes.get(head.body_offset..).unwrap_or_default();
    let body = match checked.content_length {
        Some(cl) if cl > available.len() => {
            return Err(ParseError::BodyTooShort {
                content_length: cl,
                actual: available.len(),
            })
        }
        Some(cl) => available.get(..cl).unwrap_or_default(),
        None => available,
    };

    let mut headers = Vec::with_capacity(head.fields.len());
    for field in head.fields {
        headers.push(headers::to_rsip(
            field.known,
            field.name,
            field.value.into_owned(),
        ));
    }
    let headers = rsip::Headers::from(headers);

    Ok(match start {
        StartLine::Request {
            method,
            method_text,
            uri,
        } => SipMessage::Request(rsip::Request {
            method: method.ok_or_else(|| ParseError::UnknownMethod {
                method: method_text.to_owned(),
            })?,
            uri,
            version: rsip::Version::V2,
            headers,
            body: body.to_vec(),
        }),
        StartLine::Response { code, reason } => SipMessage::Response(rsip::Response {
            status_code: status_code(code, reason),
            version: rsip::Version::V2,
            headers,
            body: body.to_vec(),
        }),
    })
}

/// rsip's status code for `code`, keeping the reason phrase for codes rsip does not
/// know (for known ones rsip has no place for it).
fn status_code(code: u16, reason: &str) -> rsip::StatusCode {
    match rsip::StatusCode::from(code) {
        rsip::StatusCode::Other(code, _) => rsip::StatusCode::Other(code, reason.to_owned()),
        known => known,
    }
}

/// Writes a message in wire form: start line, headers, empty line, body, with CRLF line
/// ends. rsip's `Display` writes each part; the body is copied byte for byte (rsip's own
/// `Display` would pass it through `from_utf8_lossy`), and any CR or LF inside a start
/// line or header (possible only in a message built in code) is replaced by a space so
/// that a value can never inject a header.
pub fn serialize(msg: &SipMessage) -> Vec<u8> {
    let mut text = String::with_capacity(512);
    let mut line = String::with_capacity(128);
    match msg {
        SipMessage::Request(r) => {
            let _ = write!(line, "{} {} {}", r.method, r.uri, r.version);
        }
        SipMessage::Response(r) => {
            let _ = write!(line, "{} {}", r.version, r.status_code);
        }
    }
    push_line(&mut text, &line);
    for header in msg.headers().iter() {
        line.clear();
        let _ = write!(line, "{header}");
        push_line(&mut text, &line);
    }
    text.push_str("\r\n");
    let body = msg.body();
    let mut out = text.into_bytes();
    out.reserve(body.len());
    out.extend_from_slice(body);
    out
}

fn push_line(out: &mut String, line: &str) {
    if line.contains(['\r', '\n']) {
        out.extend(
            line.chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
        );
    } else {
        out.push_str(line);
    }
    out.push_str("\r\n");
}

/// A checked start line.
enum StartLine<'a> {
    Request {
        method: Option<rsip::Method>,
        method_text: &'a str,
        uri: rsip::Uri,
    },
    Response {
        code: u16,
        reason: &'a str,
    },
}

fn is_sip_version_prefix(s: &str) -> bool {
    s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else if is_sip_version_prefix(version) && version.len() <= 16 {
        Err(ParseError::UnsupportedVersion {
            version: version.to_owned(),
        })
    } else {
        Err(ParseError::InvalidStartLine {
            reason: "no SIP version",
        })
    }
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    if is_sip_version_prefix(line) {
        let (version, rest) = line.split_once(' ').ok_or(ParseError::InvalidStartLine {
            reason: "status line without a status code",
        })?;
        check_version(version)?;
        let (code_text, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = (code_text.len() == 3)
            .then(|| code_text.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| ParseError::InvalidStatusCode {
                code: code_text.chars().take(16).collect(),
            })?;
        return Ok(StartLine::Response { code, reason });
    }

    let mut parts = line.split(' ');
    let (Some(method_text), Some(uri_text), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::InvalidStartLine {
            reason: "request line is not exactly: method SP Request-URI SP version",
        });
    };
    if method_text.is_empty() || uri_text.is_empty() || version.is_empty() {
        return Err(ParseError::InvalidStartLine {
            reason: "request line has an empty element (doubled or trailing SP)",
        });
    }
    check_version(version)?;
    if !scan::is_token(method_text) {
        return Err(ParseError::InvalidStartLine {
            reason: "method is not a token",
        });
    }
    let uri = parse_request_uri(uri_text)?;
    // An unknown method is reported after the header checks (see `parse`), so that a
    // message that is also malformed gets 400 rather than 501 (RFC 4475 mismatch02).
    let method = method_from_token(method_text);
    Ok(StartLine::Request {
        method,
        method_text,
        uri,
    })
}

/// Maps a method token (case-sensitive, RFC 3261 7.1) to rsip's method.
pub(crate) fn method_from_token(token: &str) -> Option<rsip::Method> {
    use rsip::Method as M;
    Some(match token {
        "INVITE" => M::Invite,
        "ACK" => M::Ack,
        "BYE" => M::Bye,
        "CANCEL" => M::Cancel,
        "OPTIONS" => M::Options,
        "REGISTER" => M::Register,
        "PRACK" => M::PRack,
        "UPDATE" => M::Update,
        "INFO" => M::Info,
        "MESSAGE" => M::Message,
        "NOTIFY" => M::Notify,
        "SUBSCRIBE" => M::Subscribe,
        "REFER" => M::Refer,
        "PUBLISH" => M::Publish,
        _ => return None,
    })
}

fn parse_request_uri(text: &str) -> Result<rsip::Uri, ParseError> {
    if text.starts_with('<') {
        return Err(ParseError::InvalidRequestUri {
            reason: "Request-URI enclosed in <>",
        });
    }
    let Some((scheme, rest)) = text.split_once(':') else {
        return Err(ParseError::InvalidRequestUri {
            reason: "no scheme",
        });
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(ParseError::InvalidRequestUri {
            reason: "malformed scheme",
        });
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Err(ParseError::UnsupportedUriScheme {
            scheme: scheme.chars().take(32).collect(),
        });
    }
    // Userinfo may hold '?' (user-unreserved); the host part may not hold headers.
    let host_part = rest.split_once('@').map_or(rest, |(_, host)| host);
    if host_part.contains('?') {
        return Err(ParseError::InvalidRequestUri {
            reason: "headers (?...) are not allowed in a Request-URI",
        });
    }
    if host_part.is_empty() || host_part.starts_with([';', ':']) {
        return Err(ParseError::InvalidRequestUri { reason: "no host" });
    }
    let not_representable = |detail: String| ParseError::UriNotRepresentable {
        uri: text.chars().take(256).collect(),
        detail,
    };
    let uri = rsip::Uri::try_from(text).map_err(|e| not_representable(e.to_string()))?;
    // rsip ignores what it cannot tokenize; refuse rather than silently change the URI.
    let printed = uri.to_string();
    if !printed.eq_ignore_ascii_case(text) {
        return Err(not_representable(format!("rsip reads it as {printed:?}")));
    }
    Ok(uri)
}

/// What [`check_fields`] learnt.
struct Checked {
    content_length: Option<usize>,
}

fn invalid(name: Known, line: usize, reason: &'static str) -> ParseError {
    ParseError::InvalidHeader {
        name: name.name(),
        line,
        reason,
    }
}

/// Checks mandatory, single-valued and scalar headers (RFC 3261 8.1.1, 8.2, 20).
fn check_fields(head: &scan::Head<'_>, start: &StartLine<'_>) -> Result<Checked, ParseError> {
    let mut seen_via = false;
    let mut count = [0u8; 6]; // From, To, Call-ID, CSeq, Max-Forwards, Content-Length
    let mut content_length = None;
    let mut content_type_seen = false;
    let mut expires_seen = false;

    let mut once = |slot: usize, k: Known| -> Result<(), ParseError> {
        count[slot] = count[slot].saturating_add(1);
        if count[slot] > 1 {
            Err(ParseError::DuplicateHeader { name: k.name() })
        } else {
            Ok(())
        }
    };

    for field in &head.fields {
        let Some(k) = field.known else { continue };
        let value: &str = &field.value;
        let line = field.line;
        match k {
            Known::Via => {
                let parms = grammar::split_top_level(value, b',')
                    .ok_or_else(|| invalid(k, line, "unterminated quoted string"))?;
                for (i, parm) in parms.iter().enumerate() {
                    let via = grammar::via_parm(parm).map_err(|r| invalid(k, line, r))?;
                    if !seen_via && i == 0 {
                        match grammar::find_param(&via.params, "branch") {
                            Some(Some(_)) => {}
                            Some(None) => return Err(invalid(k, line, "branch without a value")),
                            None => return Err(ParseError::MissingBranch),
                        }
                    }
                }
                seen_via = true;
            }
            Known::From | Known::To => {
                once(if k == Known::From { 0 } else { 1 }, k)?;
                let parts = grammar::split_top_level(value, b',')
                    .ok_or_else(|| invalid(k, line, "unterminated quoted string or <"))?;
                for part in parts.iter() {
                    grammar::name_addr(part).map_err(|r| invalid(k, line, r))?;
                }
                if parts.len() != 1 {
                    return Err(ParseError::DuplicateHeader { name: k.name() });
                }
            }
            Known::Contact if value != "*" => {
                let parts = grammar::split_top_level(value, b',')
                    .ok_or_else(|| invalid(k, line, "unterminated quoted string or <"))?;
                for part in parts.iter() {
                    grammar::name_addr(part).map_err(|r| invalid(k, line, r))?;
                }
            }
            Known::CallId => {
                once(2, k)?;
                if value.is_empty() || grammar::has_wsp(value) {
                    return Err(invalid(k, line, "empty or contains whitespace"));
                }
            }
            Known::CSeq => {
                once(3, k)?;
                let (_, cseq_method) = grammar::cseq(value).map_err(|r| invalid(k, line, r))?;
                if let StartLine::Request { method_text, .. } = start {
                    if cseq_method != *method_text {
                        return Err(ParseError::CSeqMethodMismatch {
                            method: (*method_text).to_owned(),
                            cseq_method: cseq_method.to_owned(),
                        });
                    }
                }
            }
            Known::MaxForwards => {
                once(4, k)?;
                match grammar::digits_u32(value) {
                    Some(n) if n <= 255 => {}
                    _ => return Err(invalid(k, line, "not a number in 0..=255")),
                }
            }
            Known::ContentLength => {
                once(5, k)?;
                let n = grammar::digits_u32(value)
                    .ok_or_else(|| invalid(k, line, "not a non-negative 32-bit number"))?;
                content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            Known::ContentType => {
                if content_type_seen {
                    return Err(ParseError::DuplicateHeader { name: k.name() });
                }
                content_type_seen = true;
                if !value.contains('/') {
                    return Err(invalid(k, line, "not a type/subtype media type"));
                }
            }
            Known::Expires | Known::MinExpires => {
                if k == Known::Expires {
                    if expires_seen {
                        return Err(ParseError::DuplicateHeader { name: k.name() });
                    }
                    expires_seen = true;
                }
                if grammar::digits_u32(value).is_none() {
                    return Err(invalid(k, line, "not delta-seconds below 2**32"));
                }
            }
            Known::RetryAfter => {
                let seconds = value
                    .split([' ', '\t', ';', '('])
                    .next()
                    .unwrap_or_default();
                if grammar::digits_u32(seconds).is_none() {
                    return Err(invalid(k, line, "not delta-seconds below 2**32"));
                }
            }
            // rfc1123-date, always in GMT (RFC 3261 20.17).
            Known::Date if !value.ends_with(" GMT") => {
                return Err(invalid(k, line, "time zone is not GMT"));
            }
            _ => {}
        }
    }

    if !seen_via {
        return Err(ParseError::MissingHeader { name: "Via" });
    }
    for (slot, name) in [(0, "From"), (1, "To"), (2, "Call-ID"), (3, "CSeq")] {
        if count[slot] == 0 {
            return Err(ParseError::MissingHeader { name });
        }
    }
    Ok(Checked { content_length })
}

#[cfg(test)]
mod tests;
