//! RTP sessions on UDP with symmetric RTP latching, and the two-leg relay (IO edge).
//!
//! - [`Latch`] (sans-IO) decides where a leg's media goes. It starts at the address
//!   from SDP (if any); the first valid RTP packet (parses, negotiated payload type,
//!   the expected SSRC when one is known) latches the leg to the address it came from,
//!   which is what phones behind NAT need. A packet from another address re-latches
//!   only when the latched source has been silent for [`LatchConfig::guard`], or, if
//!   [`LatchConfig::relatch_on_ssrc_change`] is set, when it brings a new SSRC. Other
//!   packets from foreign addresses are dropped (this is the defence against RTP
//!   injection/"RTP bleed"; turning on SSRC re-latching weakens it for peers that
//!   switch address mid-call).
//! - [`RtpSession`]: one leg's RTP and RTCP sockets with their latches and receive
//!   statistics; `recv_rtp` / `send_rtp` for legs that terminate media (analog ports).
//! - [`spawn_relay`]: forwards RTP and RTCP between two sessions without decoding
//!   (SIP to SIP calls with the same codec), validating headers, latching both legs,
//!   and keeping per-leg counters and RFC 3550 receive statistics. The task ends when
//!   the [`RelayHandle`] is dropped; the ports go back to the pool with the sessions.
//!
//! Limits: no SRTP; no RTCP generation in relay mode (the endpoints' own RTCP is
//! forwarded unchanged, SSRCs are not rewritten); packets that cannot be sent at once
//! (socket buffer full) are dropped and counted, never queued.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::port::PortPair;
use crate::rtcp::{parse_compound, CallQuality, ReceiverStats};
use crate::rtp::{parse, PayloadMap, RtpPacket, CLOCK_RATE, MAX_PACKET};
use crate::{Error, Result};

/// Latching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// A new source address is accepted once the latched one has been silent this long.
    pub guard: Duration,
    /// Re-latch at once when a packet from a new address carries a new SSRC.
    pub relatch_on_ssrc_change: bool,
}

impl Default for LatchConfig {
    fn default() -> Self {
        LatchConfig {
            guard: Duration::from_secs(2),
            relatch_on_ssrc_change: false,
        }
    }
}

/// What the latch made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// The leg is now latched to this address (first packet or re-latch).
    Latched(SocketAddr),
    /// From a foreign address, or not acceptable: drop.
    Reject,
}

#[derive(Debug, Clone, Copy)]
struct Latched {
    addr: SocketAddr,
    ssrc: Option<u32>,
    last_seen: Instant,
}

/// Symmetric RTP latching for one leg (sans-IO).
#[derive(Debug, Clone)]
pub struct Latch {
    config: LatchConfig,
    signalled: Option<SocketAddr>,
    expected_ssrc: Option<u32>,
    latched: Option<Latched>,
}

impl Latch {
    /// A latch that sends to `signalled` (from SDP) until media arrives.
    pub fn new(
        config: LatchConfig,
        signalled: Option<SocketAddr>,
        expected_ssrc: Option<u32>,
    ) -> Self {
        Latch {
            config,
            signalled,
            expected_ssrc,
            latched: None,
        }
    }

    /// New SDP address (re-INVITE); the next valid packet latches again.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        self.signalled = addr;
        self.latched = None;
    }

    /// Where to send: the latched address, else the signalled one.
    pub fn target(&self) -> Option<SocketAddr> {
        self.latched.map(|l| l.addr).or(self.signalled)
    }

    /// True once media has latched.
    pub fn is_latched(&self) -> bool {
        self.latched.is_some()
    }

    /// A valid packet (already parsed, payload type checked) from `from` with `ssrc`
    /// (`None` for RTCP, which latches by address only).
    pub fn on_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: Option<u32>,
    ) -> LatchDecision {
        match self.latched.as_mut() {
            None => {
                if let (Some(want), Some(got)) = (self.expected_ssrc, ssrc) {
                    if want != got {
                        return LatchDecision::Reject;
                    }
                }
                self.latched = Some(Latched {
                    addr: from,
                    ssrc,
                    last_seen: now,
                });
                LatchDecision::Latched(from)
            }
            Some(l) if l.addr == from => {
                l.last_seen = now;
                if ssrc.is_some() {
                    l.ssrc = ssrc;
                }
                LatchDecision::Accept
            }
            Some(l) => {
                let quiet = now.saturating_duration_since(l.last_seen) >= self.config.guard;
                let new_ssrc = self.config.relatch_on_ssrc_change
                    && ssrc.is_some()
                    && l.ssrc.is_some()
                    && ssrc != l.ssrc;
                if quiet || new_ssrc {
                    *l = Latched {
                        addr: from,
                        ssrc: ssrc.or(l.ssrc),
                        last_seen: now,
                    };
                    LatchDecision::Latched(from)
                } else {
                    LatchDecision::Reject
                }
            }
        }
    }
}

/// Counters of one leg.
#[derive(Debug, Clone, Default)]
pub struct LegStats {
    /// Valid RTP packets received and accepted.
    pub rtp_in: u64,
    /// RTP packets sent (forwarded or originated).
    pub rtp_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Malformed RTP or unexpected payload types dropped.
    pub rtp_invalid: u64,
    /// Packets from foreign addresses dropped by the latch.
    pub rtp_foreign: u64,
    /// Packets dropped because there was nowhere to send or the socket was full.
    pub send_dropped: u64,
    /// RTCP packets received (valid).
    pub rtcp_in: u64,
    /// RTCP packets dropped as malformed or foreign.
    pub rtcp_invalid: u64,
    /// Times the RTP latch moved.
    pub relatches: u64,
    /// RFC 3550 statistics of the source currently received.
    pub receiver: Option<ReceiverStats>,
}

impl LegStats {
    /// Quality of what this leg receives (loss, jitter; RTT unknown in relay mode).
    pub fn quality(&self, rtt: Option<Duration>, jitter_buffer: Duration) -> Option<CallQuality> {
        self.receiver
            .as_ref()
            .map(|r| r.quality(rtt, jitter_buffer, true))
    }

    fn record_rtp(&mut self, now: Instant, p: &RtpPacket<'_>) {
        self.rtp_in += 1;
        self.bytes_in += p.payload.len() as u64;
        let fresh = self.receiver.as_ref().is_none_or(|r| r.ssrc() != p.ssrc);
        if fresh {
            self.receiver = Some(ReceiverStats::new(p.ssrc, p.seq, CLOCK_RATE));
        }
        if let Some(r) = self.receiver.as_mut() {
            r.update(now, p.seq, p.timestamp);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Stats are plain counters; a panic elsewhere cannot leave them half-updated in a
    // way that matters, so a poisoned lock is still read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call leg's sockets, latches and statistics.
#[derive(Debug)]
pub struct RtpSession {
    ports: PortPair,
    payloads: PayloadMap,
    rtp_latch: Latch,
    rtcp_latch: Latch,
    stats: Arc<Mutex<LegStats>>,
}

/// A packet [`RtpSession::recv_rtp`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// Sender.
    pub from: SocketAddr,
    /// Arrival time.
    pub at: Instant,
}

fn io_err(op: &'static str, addr: SocketAddr, e: &std::io::Error) -> Error {
    Error::Io {
        op,
        addr,
        kind: e.kind(),
    }
}

impl RtpSession {
    /// A leg on `ports` whose peer announced `remote` (RTP address from SDP; RTCP is
    /// assumed on the next port until RTCP arrives).
    pub fn new(
        ports: PortPair,
        remote: Option<SocketAddr>,
        payloads: PayloadMap,
        latch: LatchConfig,
    ) -> Self {
        let rtcp_remote = remote.map(|mut a| {
            a.set_port(a.port().wrapping_add(1));
            a
        });
        RtpSession {
            ports,
            payloads,
            rtp_latch: Latch::new(latch, remote, None),
            rtcp_latch: Latch::new(latch, rtcp_remote, None),
            stats: Arc::new(Mutex::new(LegStats::default())),
        }
    }

    /// Expect this SSRC (from SDP `a=ssrc`) before latching.
    pub fn expect_ssrc(&mut self, ssrc: u32) {
        self.rtp_latch.expected_ssrc = Some(ssrc);
    }

    /// Local RTP address (for SDP).
    pub fn local_rtp_addr(&self) -> Result<SocketAddr> {
        self.ports.rtp_addr()
    }

    /// Where RTP goes now.
    pub fn rtp_target(&self) -> Option<SocketAddr> {
        self.rtp_latch.target()
    }

    /// A handle on the counters (shared with a relay task).
    pub fn stats(&self) -> Arc<Mutex<LegStats>> {
        Arc::clone(&self.stats)
    }

    /// Checks one received RTP datagram and runs the latch; true when it is accepted.
    fn accept_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let mut stats = lock(&self.stats);
        let Ok(p) = parse(data) else {
            stats.rtp_invalid += 1;
            return false;
        };
        if self.payloads.classify(p.payload_type).is_none() {
            stats.rtp_invalid += 1;
            return false;
        }
        match self.rtp_latch.on_packet(now, from, Some(p.ssrc)) {
            LatchDecision::Reject => {
                stats.rtp_foreign += 1;
                false
            }
            decision => {
                if let LatchDecision::Latched(_) = decision {
                    stats.relatches += 1;
                }
                stats.record_rtp(now, &p);
                true
            }
        }
    }

    fn accept_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        let ok = parse_compound(data).is_ok()
            && self.rtcp_latch.on_packet(now, from, None) != LatchDecision::Reject;
        let mut stats = lock(&self.stats);
        if ok {
            stats.rtcp_in += 1;
        } else {
            stats.rtcp_invalid += 1;
        }
        ok
    }

    /// Receives the next accepted RTP packet into `buf` (drops and counts the rest).
    pub async fn recv_rtp(&mut self, buf: &mut [u8]) -> Result<Received> {
        loop {
            let (len, from) = self.ports.rtp.recv_from(buf).await.map_err(|e| {
                io_err(
                    "recv",
                    self.ports
                        .rtp_addr()
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    &e,
                )
            })?;
            let at = Instant::now();
            if self.accept_rtp(at, from, &buf[..len]) {
                return Ok(Received { len, from, at });
            }
        }
    }

    /// Sends an RTP packet to the latched (or signalled) address; without one the
    /// packet is dropped and counted.
    pub async fn send_rtp(&self, packet: &[u8]) -> Result<()> {
        let Some(to) = self.rtp_latch.target() else {
            lock(&self.stats).send_dropped += 1;
            return Ok(());
        };
        self.ports
            .rtp
            .send_to(packet, to)
            .await
            .map_err(|e| io_err("send", to, &e))?;
        lock(&self.stats).rtp_out += 1;
        Ok(())
    }
}

/// Keeps a relay running; dropping it stops the relay and frees both legs' ports.
#[derive(Debug)]
pub struct RelayHandle {
    task: JoinHandle<()>,
    /// Counters of leg A and leg B.
    pub stats: [Arc<Mutex<LegStats>>; 2],
}

impl RelayHandle {
    /// Snapshot of both legs' counters.
    pub fn snapshot(&self) -> [LegStats; 2] {
        [lock(&self.stats[0]).clone(), lock(&self.stats[1]).clone()]
    }

    /// True once the relay task has ended (socket error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards what arrives on `a` to `b`'s peer and the reverse, RTP and RTCP, until the
/// handle is dropped. Must be called inside a tokio runtime.
pub fn spawn_relay(mut a: RtpSession, mut b: RtpSession) -> RelayHandle {
    let stats = [a.stats(), b.stats()];
    let task = tokio::spawn(async move {
        let mut buf_a = [0u8; MAX_PACKET];
        let mut buf_b = [0u8; MAX_PACKET];
        let mut buf_ca = [0u8; MAX_PACKET];
        let mut buf_cb = [0u8; MAX_PACKET];
        loop {
            tokio::select! {
                r = a.ports.rtp.recv_from(&mut buf_a) => {
                    let Ok((len, from)) = r else { break };
                    forward_rtp(&mut a, &b, Instant::now(), from, &buf_a[..len]);
                }
                r = b.ports.rtp.recv_from(&mut buf_b) => {
                    let Ok((len, from)) = r else { break };
                    forward_rtp(&mut b, &a, Instant::now(), from, &buf_b[..len]);
                }
                r = a.ports.rtcp.recv_from(&mut buf_ca) => {
                    let Ok((len, from)) = r else { break };
                    forward_rtcp(&mut a, &b, Instant::now(), from, &buf_ca[..len]);
                }
                r = b.ports.rtcp.recv_from(&mut buf_cb) => {
                    let Ok((len, from)) = r else { break };
                    forward_rtcp(&mut b, &a, Instant::now(), from, &buf_cb[..len]);
                }
            }
        }
    });
    RelayHandle { task, stats }
}

fn forward_rtp(
    from_leg: &mut RtpSession,
    to_leg: &RtpSession,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
) {
    if !from_leg.accept_rtp(now, from, data) {
        return;
    }
    let sent = to_leg
        .rtp_latch
        .target()
        .is_some_and(|to| to_leg.ports.rtp.try_send_to(data, to).is_ok());
    let mut s = lock(&to_leg.stats);
    if sent {
        s.rtp_out += 1;
    } else {
        s.send_dropped += 1;
    }
}

fn forward_rtcp(
    from_leg: &mut RtpSession,
    to_leg: &RtpSession,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
) {
    if !from_leg.accept_rtcp(now, from, data) {
        return;
    }
    if let Some(to) = to_leg.rtcp_latch.target() {
        // RTCP is best effort: a full socket buffer drops the report.
        let _ = to_leg.ports.rtcp.try_send_to(data, to);
    }
}

#[cfg(test)]
mod tests;
