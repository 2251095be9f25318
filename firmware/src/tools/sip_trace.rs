//! The live SIP message trace of the diagnostics pages (issue 8: "a live SIP message
//! trace filtered by number or call-id").
//!
//! The SIP endpoint hands every message it receives (after the flood guard, CRLF
//! keep-alives left out) and every message it sends to [`SipTrace::record`]. That
//! costs one reference-counted clone of the message's bytes: the trace keeps the last
//! [`TRACE_KEEP`] messages in a ring and, only while someone watches, passes each new
//! one to the watchers ([`SipTrace::subscribe`], a bounded broadcast: a watcher that
//! falls [`LIVE_BACKLOG`] messages behind is told how many it missed). Everything
//! else is done when a technician reads the trace: the text, the headers the filter
//! looks at, and the redaction of digest responses.
//!
//! What a [`TraceFilter`] matches: a message whose Call-ID equals the filter, or whose
//! request URI, `From` or `To` user part contains it (a number or part of one:
//! `2001`, `+3314`). The header scan is a light one of our own over the text (full
//! and compact header names), not the SIP parser: it must show malformed messages
//! too, which the parser refuses.
//!
//! Redaction: the `response`, `cnonce` and `nonce` values of `Authorization` and
//! `Proxy-Authorization` headers are replaced with `"…"` (a digest response allows an
//! offline guess of the password). Phone numbers are not masked: the trace shows
//! whole messages, like the packet capture, and needs the same permission
//! (`diagnostics.download`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

/// Messages the trace keeps for a technician who opens the page after the fact.
pub const TRACE_KEEP: usize = 200;
/// Messages a live watcher may fall behind before it is told it missed some.
pub const LIVE_BACKLOG: usize = 256;
/// Bytes of one message shown; the rest is cut (with a note).
pub const MAX_SHOWN: usize = 8 * 1024;
/// Longest filter accepted, bytes.
pub const MAX_FILTER: usize = 128;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by the box.
    In,
    /// Sent by the box.
    Out,
}

/// One message as it crossed the wire.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Wall-clock ms since the Unix epoch.
    pub at_ms: i64,
    /// In or out.
    pub direction: Direction,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The far end.
    pub peer: SocketAddr,
    /// The message bytes, as sent or received.
    pub bytes: Bytes,
}

/// A traced message as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceEntry {
    /// Position in the trace since the daemon started (gaps: messages dropped from
    /// the ring or missed by a slow watcher).
    pub seq: u64,
    /// Wall-clock ms since the Unix epoch.
    pub at_ms: i64,
    /// `in` or `out`.
    pub direction: Direction,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The far end, `ip:port`.
    pub peer: String,
    /// The request line or status line.
    pub first_line: String,
    /// The Call-ID, when the message has one.
    pub call_id: Option<String>,
    /// The whole message, digest secrets redacted, cut at [`MAX_SHOWN`] bytes.
    pub text: String,
}

/// What a technician looks for: a Call-ID or (part of) a number. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFilter(String);

impl TraceFilter {
    /// Reads `?filter=`: trimmed, at most [`MAX_FILTER`] bytes, printable, no spaces.
    pub fn parse(text: &str) -> Result<TraceFilter, String> {
        let text = text.trim();
        if text.len() > MAX_FILTER {
            return Err(format!("at most {MAX_FILTER} bytes"));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("a Call-ID or a number, without spaces".to_owned());
        }
        Ok(TraceFilter(text.to_owned()))
    }

    /// The filter text (empty for none).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn matches(&self, heads: &Heads<'_>) -> bool {
        let f = self.0.as_str();
        f.is_empty()
            || heads.call_id == Some(f)
            || [heads.request_user, heads.from_user, heads.to_user]
                .into_iter()
                .flatten()
                .any(|u| u.contains(f))
    }
}

/// A live watcher's next item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// A new message that matches.
    Entry(TraceEntry),
    /// This many messages went by while the watcher was behind.
    Missed(u64),
}

/// The trace: cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct SipTrace {
    inner: Arc<Mutex<Ring>>,
    live: broadcast::Sender<Arc<(u64, Captured)>>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    kept: VecDeque<(u64, Captured)>,
}

impl Default for SipTrace {
    fn default() -> Self {
        SipTrace::new()
    }
}

impl SipTrace {
    /// An empty trace.
    pub fn new() -> SipTrace {
        SipTrace {
            inner: Arc::default(),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }

    /// Records one message (the SIP endpoint calls this for each).
    pub fn record(&self, message: Captured) {
        let seq = {
            let mut ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = ring.next_seq;
            ring.next_seq += 1;
            if ring.kept.len() == TRACE_KEEP {
                ring.kept.pop_front();
            }
            ring.kept.push_back((seq, message.clone()));
            seq
        };
        if self.live.receiver_count() > 0 {
            // No receiver left between the check and the send is fine: dropped.
            let _ = self.live.send(Arc::new((seq, message)));
        }
    }

    /// The newest `limit` kept messages that match `filter`, oldest first.
    pub fn recent(&self, filter: &TraceFilter, limit: usize) -> Vec<TraceEntry> {
        let kept: Vec<(u64, Captured)> = {
            let ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            ring.kept.iter().cloned().collect()
        };
        let mut out: Vec<TraceEntry> = kept
            .iter()
            .rev()
            .filter_map(|(seq, c)| entry_if(*seq, c, filter))
            .take(limit)
            .collect();
        out.reverse();
        out
    }

    /// A watcher of messages recorded from now on.
    pub fn subscribe(&self) -> Watcher {
        Watcher {
            rx: self.live.subscribe(),
        }
    }
}

/// Receives the messages recorded after [`SipTrace::subscribe`].
#[derive(Debug)]
pub struct Watcher {
    rx: broadcast::Receiver<Arc<(u64, Captured)>>,
}

impl Watcher {
    /// The next message matching `filter`, or how many went by while this watcher
    /// was behind; `None` once the trace is gone (the daemon stops).
    pub async fn next(&mut self, filter: &TraceFilter) -> Option<Live> {
        loop {
            match self.rx.recv().await {
                Ok(item) => {
                    let (seq, c) = &*item;
                    if let Some(e) = entry_if(*seq, c, filter) {
                        return Some(Live::Entry(e));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Live::Missed(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn entry_if(seq: u64, c: &Captured, filter: &TraceFilter) -> Option<TraceEntry> {
    let text = String::from_utf8_lossy(&c.bytes);
    let heads = Heads::of(&text);
    if !filter.matches(&heads) {
        return None;
    }
    let mut shown = redact(&text);
    if shown.len() > MAX_SHOWN {
        let mut cut = MAX_SHOWN;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str(&format!(
            "\n[… {} more bytes not shown]",
            c.bytes.len() - cut
        ));
    }
    Some(TraceEntry {
        seq,
        at_ms: c.at_ms,
        direction: c.direction,
        transport: c.transport,
        peer: c.peer.to_string(),
        first_line: text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
        call_id: heads.call_id.map(str::to_owned),
        text: shown,
    })
}

/// The parts of a message the filter looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Heads<'a> {
    call_id: Option<&'a str>,
    request_user: Option<&'a str>,
    from_user: Option<&'a str>,
    to_user: Option<&'a str>,
}

impl<'a> Heads<'a> {
    fn of(text: &'a str) -> Heads<'a> {
        let mut heads = Heads::default();
        let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
        if let Some(first) = lines.next() {
            // "INVITE sip:2001@host SIP/2.0"; a status line has no URI.
            if !first.starts_with("SIP/") {
                heads.request_user = first.split(' ').nth(1).and_then(uri_user);
            }
        }
        for line in lines {
            if line.is_empty() {
                break; // the body
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "call-id" | "i" => heads.call_id = heads.call_id.or(Some(value)),
                "from" | "f" => heads.from_user = heads.from_user.or_else(|| uri_user(value)),
                "to" | "t" => heads.to_user = heads.to_user.or_else(|| uri_user(value)),
                _ => {}
            }
        }
        heads
    }
}

/// The user part of the first SIP URI in a header value or request line.
fn uri_user(value: &str) -> Option<&str> {
    let start = value.find("sip:").map(|i| i + 4).or_else(|| {
        value
            .find("sips:")
            .map(|i| i + 5)
            .or_else(|| value.find("tel:").map(|i| i + 4))
    })?;
    let rest = &value[start..];
    let end = rest.find(['@', '>', ';', ' ', '?']).unwrap_or(rest.len());
    let user = &rest[..end];
    // `sip:host` has no user part: what ends at '@' is one.
    (rest[end..].starts_with('@') || value[..start].ends_with("tel:")).then_some(user)
}

/// The message with the digest secrets of its (Proxy-)Authorization headers replaced.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_auth = i > 0
            && line.split_once(':').is_some_and(|(n, _)| {
                let n = n.trim().to_ascii_lowercase();
                n == "authorization" || n == "proxy-authorization"
            });
        if is_auth {
            out.push_str(&redact_params(line, &["response", "cnonce", "nonce"]));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `line` with the values of the named `name=value` / `name="value"` parameters
/// replaced by `"…"`.
fn redact_params(line: &str, names: &[&str]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        let lower = rest.to_ascii_lowercase();
        // The earliest of the named parameters left in the line.
        let next = names
            .iter()
            .filter_map(|name| find_param(&lower, name).map(|at| (at, name.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        let value_start = at + len + 1;
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let end = match value.strip_prefix('"') {
            Some(quoted) => quoted.find('"').map_or(value.len(), |q| q + 2),
            None => value.find([',', '\r', '\n', ' ']).unwrap_or(value.len()),
        };
        out.push_str("\"…\"");
        rest = &value[end..];
    }
}

/// Where parameter `name=` starts in `lower` (lower-cased), as a whole parameter:
/// after a comma, the header's colon or the `Digest` scheme (spaces between allowed).
fn find_param(lower: &str, name: &str) -> Option<usize> {
    let needle = format!("{name}=");
    let mut from = 0;
    while let Some(i) = lower[from..].find(&needle) {
        let at = from + i;
        let before = lower[..at].trim_end();
        if before.ends_with(',') || before.ends_with(':') || before.ends_with("digest") {
            return Some(at);
        }
        from = at + needle.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:2001@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1\r\n\
        f: \"Alice\" <sip:+33140000000@192.0.2.9>;tag=a\r\n\
        To: <sip:2001@192.0.2.1>\r\n\
        Call-ID: abc-123@host\r\n\
        CSeq: 2 INVITE\r\n\
        Proxy-Authorization: Digest username=\"alice\", realm=\"box\", nonce=\"n0nce\", uri=\"sip:2001@192.0.2.1\", response=\"0123456789abcdef\", qop=auth, nc=00000001, cnonce=\"c1\"\r\n\
        Content-Length: 0\r\n\r\n";

    fn captured(text: &str, direction: Direction) -> Captured {
        Captured {
            at_ms: 1_000,
            direction,
            transport: "udp",
            peer: "192.0.2.9:5060".parse().unwrap(),
            bytes: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    fn filter(f: &str) -> TraceFilter {
        TraceFilter::parse(f).unwrap()
    }

    #[test]
    fn heads_read_full_and_compact_names_and_tel_uris() {
        let h = Heads::of(INVITE);
        assert_eq!(h.call_id, Some("abc-123@host"));
        assert_eq!(h.request_user, Some("2001"));
        assert_eq!(h.from_user, Some("+33140000000"));
        assert_eq!(h.to_user, Some("2001"));
        let h = Heads::of("SIP/2.0 200 OK\r\ni: x\r\nt: <tel:+4930123>\r\nFrom: <sip:box.example>\r\n\r\nFrom: <sip:9@body>\r\n");
        assert_eq!(h.request_user, None);
        assert_eq!(h.call_id, Some("x"));
        assert_eq!(h.to_user, Some("+4930123"));
        assert_eq!(
            h.from_user, None,
            "sip:host has no user; the body is not read"
        );
    }

    #[test]
    fn the_filter_matches_a_call_id_or_part_of_a_number() {
        let t = SipTrace::new();
        t.record(captured(INVITE, Direction::In));
        t.record(captured(
            "SIP/2.0 486 Busy Here\r\nCall-ID: other\r\nTo: <sip:2002@b>\r\n\r\n",
            Direction::Out,
        ));
        let all = t.recent(&TraceFilter::default(), 10);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].seq, all[1].seq), (0, 1));
        assert_eq!(all[1].first_line, "SIP/2.0 486 Busy Here");
        assert_eq!(all[1].direction, Direction::Out);
        for (f, want) in [
            ("abc-123@host", vec![0]),
            ("abc-123", vec![]),
            ("2001", vec![0]),
            ("+3314", vec![0]),
            ("2002", vec![1]),
            ("200", vec![0, 1]),
            ("9999", vec![]),
        ] {
            let got: Vec<u64> = t.recent(&filter(f), 10).iter().map(|e| e.seq).collect();
            assert_eq!(got, want, "{f}");
        }
        assert_eq!(
            t.recent(&TraceFilter::default(), 1)[0].seq,
            1,
            "newest kept"
        );
    }

    #[test]
    fn digest_secrets_are_redacted_and_the_rest_kept() {
        let t = SipTrace::new();
        t.record(captured(INVITE, Direction::In));
        let text = &t.recent(&TraceFilter::default(), 1)[0].text;
        for secret in ["0123456789abcdef", "n0nce", "\"c1\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("username=\"alice\""), "{text}");
        assert!(text.contains("uri=\"sip:2001@192.0.2.1\""), "{text}");
        assert!(text.contains("response=\"…\""), "{text}");
        assert!(text.contains("qop=auth, nc=00000001"), "{text}");
        assert!(text.contains("Call-ID: abc-123@host"), "{text}");
        // An unquoted response (seen from some phones) too.
        let line = "Authorization: Digest username=\"a\",response=deadbeef,nonce=xyz\r\n";
        let red = redact(&format!("REGISTER sip:b SIP/2.0\r\n{line}\r\n"));
        assert!(!red.contains("deadbeef") && !red.contains("xyz"), "{red}");
    }

    #[test]
    fn the_ring_keeps_the_newest_and_long_messages_are_cut() {
        let t = SipTrace::new();
        for i in 0..TRACE_KEEP + 5 {
            t.record(captured(
                &format!("OPTIONS sip:{i}@h SIP/2.0\r\n\r\n"),
                Direction::Out,
            ));
        }
        let all = t.recent(&TraceFilter::default(), usize::MAX);
        assert_eq!(all.len(), TRACE_KEEP);
        assert_eq!(all[0].seq, 5);
        let big = format!("MESSAGE sip:1@h SIP/2.0\r\n\r\n{}", "é".repeat(MAX_SHOWN));
        t.record(captured(&big, Direction::In));
        let e = &t.recent(&TraceFilter::default(), 1)[0];
        assert!(e.text.len() < MAX_SHOWN + 100, "{}", e.text.len());
        assert!(
            e.text.ends_with("more bytes not shown]"),
            "{}",
            &e.text[e.text.len() - 40..]
        );
    }

    #[test]
    fn malformed_and_binary_messages_are_shown_not_refused() {
        let t = SipTrace::new();
        t.record(captured("GARBAGE\u{0}\u{1}", Direction::In));
        let mut bytes = b"INVITE sip:7@h SIP/2.0\r\n".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        t.record(Captured {
            bytes: Bytes::from(bytes),
            ..captured("", Direction::In)
        });
        let all = t.recent(&TraceFilter::default(), 10);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].call_id, None);
        assert!(all[1].text.contains('\u{fffd}'));
        assert_eq!(t.recent(&filter("7"), 10).len(), 1);
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(TraceFilter::parse("a b").is_err());
        assert!(TraceFilter::parse("x\u{7}").is_err());
        assert!(TraceFilter::parse(&"1".repeat(MAX_FILTER + 1)).is_err());
        assert_eq!(TraceFilter::parse("  2001 ").unwrap().as_str(), "2001");
    }

    #[tokio::test]
    async fn watchers_get_new_matching_messages_and_hear_what_they_missed() {
        let t = SipTrace::new();
        t.record(captured(INVITE, Direction::In)); // before: not live
        let mut w = t.subscribe();
        t.record(captured(
            "SIP/2.0 200 OK\r\nCall-ID: zzz\r\n\r\n",
            Direction::Out,
        ));
        t.record(captured(INVITE, Direction::Out));
        match w.next(&filter("2001")).await {
            Some(Live::Entry(e)) => assert_eq!((e.seq, e.direction), (2, Direction::Out)),
            other => panic!("{other:?}"),
        }
        for _ in 0..LIVE_BACKLOG + 3 {
            t.record(captured(INVITE, Direction::In));
        }
        assert_eq!(w.next(&filter("2001")).await, Some(Live::Missed(3)));
        drop(t);
        // The kept messages are still read, then the end.
        let mut n = 0;
        while let Some(Live::Entry(_)) = w.next(&TraceFilter::default()).await {
            n += 1;
        }
        assert_eq!(n, LIVE_BACKLOG);
    }
}
