//! RTCP (RFC 3550 section 6): sender and receiver reports, receiver statistics, round
//! trip time, and a per-call quality estimate (E-model R-factor and MOS).
//!
//! - [`parse_compound`] validates a compound packet (RFC 3550 A.2: version 2, lengths
//!   add up, padding only on the last packet, SR or RR first) and returns its SR, RR,
//!   SDES (CNAME), BYE and other packets; [`build_report`] writes SR or RR + SDES CNAME.
//! - [`ReceiverStats`]: per-source state of RFC 3550 A.1 (extended highest sequence
//!   number, source validation with probation, cycles), A.3 (expected, lost, fraction
//!   lost per interval) and A.8 (interarrival jitter), and the LSR/DLSR fields of the
//!   report blocks it produces.
//! - [`round_trip_time`]: RTT from a report block about our stream (A - LSR - DLSR).
//! - [`ReportSchedule`]: when a terminating leg sends its next report (randomised
//!   intervals around 5 s, the first after half an interval); [`append_bye`] ends a
//!   compound packet with a BYE when the leg closes.
//! - [`CallQuality`]: loss %, jitter, RTT, and the simplified E-model of ITU-T G.107
//!   with the G.113 Appendix I packet-loss robustness of G.711 (Bpl 25.1 with PLC, 4.3
//!   without, Ie 0), random loss (BurstR 1), and MOS from R (G.107 Annex B).
//!
//! Written here because the Rust RTCP crates found either pull in a WebRTC stack or do
//! not keep receiver statistics; the wire format is small. Limits: the schedule is the
//! fixed-minimum one of a two-party session (no member counting, no bandwidth
//! fraction, no reconsideration), no XR/feedback packets (parsed as
//! [`RtcpPacket::Other`]), SDES items other than CNAME are skipped.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;

/// One reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed; negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from the source, 0 if none.
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s.
    pub dlsr: u32,
}

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit, seconds since 1900 in the high word).
    pub ntp: u64,
    /// RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// Sender report.
    SenderReport {
        /// Sender's SSRC.
        ssrc: u32,
        /// Sender information.
        info: SenderInfo,
        /// Reception reports.
        blocks: Vec<ReportBlock>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Reporter's SSRC.
        ssrc: u32,
        /// Reception reports.
        blocks: Vec<ReportBlock>,
    },
    /// Source description: `(ssrc, CNAME)` per chunk.
    SourceDescription(Vec<(u32, Option<String>)>),
    /// Goodbye from these sources.
    Bye(Vec<u32>),
    /// Any other packet type (APP, XR, feedback), skipped.
    Other {
        /// Its packet type.
        packet_type: u8,
    },
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn invalid(offset: usize, reason: &'static str) -> Error {
    Error::Rtcp { offset, reason }
}

/// Parses and validates a compound RTCP packet.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if buf.len() - at < 4 {
            return Err(invalid(at, "truncated header"));
        }
        let b0 = buf[at];
        if b0 >> 6 != 2 {
            return Err(invalid(at, "version is not 2"));
        }
        let count = usize::from(b0 & 0x1F);
        let pt = buf[at + 1];
        let len = 4 * (usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])) + 1);
        if at + len > buf.len() {
            return Err(invalid(at, "length runs past the end"));
        }
        let mut body = &buf[at + 4..at + len];
        if b0 & 0x20 != 0 {
            if at + len != buf.len() {
                return Err(invalid(at, "padding before the last packet"));
            }
            let pad = usize::from(*body.last().unwrap_or(&0));
            if pad == 0 || pad > body.len() {
                return Err(invalid(at, "bad padding length"));
            }
            body = &body[..body.len() - pad];
        }
        if out.is_empty() && pt != PT_SR && pt != PT_RR {
            return Err(invalid(at, "compound packet does not start with SR or RR"));
        }
        out.push(parse_one(at, pt, count, body)?);
        at += len;
    }
    if out.is_empty() {
        return Err(invalid(0, "empty"));
    }
    Ok(out)
}

fn parse_blocks(at: usize, body: &[u8], count: usize) -> Result<Vec<ReportBlock>> {
    if body.len() < 24 * count {
        return Err(invalid(at, "report blocks truncated"));
    }
    Ok((0..count)
        .map(|i| {
            let b = &body[24 * i..24 * i + 24];
            let lost = be32(b, 4);
            // 24-bit two's complement.
            let cumulative = ((lost & 0x00FF_FFFF) << 8) as i32 >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: cumulative,
                highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                lsr: be32(b, 16),
                dlsr: be32(b, 20),
            }
        })
        .collect())
}

fn parse_one(at: usize, pt: u8, count: usize, body: &[u8]) -> Result<RtcpPacket> {
    Ok(match pt {
        PT_SR => {
            if body.len() < 24 {
                return Err(invalid(at, "SR shorter than its sender info"));
            }
            let info = SenderInfo {
                ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                rtp_timestamp: be32(body, 12),
                packets: be32(body, 16),
                octets: be32(body, 20),
            };
            RtcpPacket::SenderReport {
                ssrc: be32(body, 0),
                info,
                blocks: parse_blocks(at, &body[24..], count)?,
            }
        }
        PT_RR => {
            if body.len() < 4 {
                return Err(invalid(at, "RR without SSRC"));
            }
            RtcpPacket::ReceiverReport {
                ssrc: be32(body, 0),
                blocks: parse_blocks(at, &body[4..], count)?,
            }
        }
        PT_SDES => {
            let mut chunks = Vec::new();
            let mut p = 0;
            for _ in 0..count {
                if body.len() < p + 4 {
                    return Err(invalid(at, "SDES chunk truncated"));
                }
                let ssrc = be32(body, p);
                p += 4;
                let mut cname = None;
                loop {
                    let Some(&item) = body.get(p) else {
                        return Err(invalid(at, "SDES items not terminated"));
                    };
                    if item == 0 {
                        // End of list, then padding to a 32-bit boundary.
                        p = (p + 4) & !3;
                        break;
                    }
                    let Some(&ilen) = body.get(p + 1) else {
                        return Err(invalid(at, "SDES item truncated"));
                    };
                    let ilen = usize::from(ilen);
                    let Some(text) = body.get(p + 2..p + 2 + ilen) else {
                        return Err(invalid(at, "SDES item truncated"));
                    };
                    if item == 1 {
                        cname = Some(String::from_utf8_lossy(text).into_owned());
                    }
                    p += 2 + ilen;
                }
                chunks.push((ssrc, cname));
            }
            RtcpPacket::SourceDescription(chunks)
        }
        PT_BYE => {
            if body.len() < 4 * count {
                return Err(invalid(at, "BYE source list truncated"));
            }
            RtcpPacket::Bye((0..count).map(|i| be32(body, 4 * i)).collect())
        }
        other => RtcpPacket::Other { packet_type: other },
    })
}

/// Writes a compound report: an SR when `sender` is given, else an RR, with up to 31
/// report blocks, followed by an SDES with `cname` (truncated to 255 bytes).
pub fn build_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    blocks: &[ReportBlock],
    cname: &str,
) -> Vec<u8> {
    let blocks = &blocks[..blocks.len().min(31)];
    let mut out = Vec::with_capacity(64 + 24 * blocks.len() + cname.len());
    let words = 1 + if sender.is_some() { 5 } else { 0 } + 6 * blocks.len();
    out.push(0x80 | blocks.len() as u8);
    out.push(if sender.is_some() { PT_SR } else { PT_RR });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    for b in blocks {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.lsr.to_be_bytes());
        out.extend_from_slice(&b.dlsr.to_be_bytes());
    }
    // SDES with one chunk: SSRC, CNAME item, end, padding to 32 bits.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + name.len() + 1;
    let padded = (chunk + 3) & !3;
    out.push(0x81);
    out.push(PT_SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + padded - chunk + 1, 0);
    out
}

/// Appends an RTCP BYE for `ssrc` to a compound packet from [`build_report`] (RFC 3550
/// 6.6: a BYE ends a compound packet that starts with SR or RR).
pub fn append_bye(compound: &mut Vec<u8>, ssrc: u32) {
    compound.extend_from_slice(&[0x81, PT_BYE, 0, 1]);
    compound.extend_from_slice(&ssrc.to_be_bytes());
}

/// When to send the next report for one stream (sans-IO): RFC 3550 6.2 and 6.3 reduced
/// to what a two-party call needs. The first report goes out after half an interval,
/// later ones every interval; each interval is randomised over `[0.5, 1.5]` of the
/// nominal value (RFC 3550 6.3.1) so that the reports of many calls do not bunch up.
/// With two members the bandwidth rule of 6.2 gives less than the 5 s minimum, so the
/// nominal interval is a constant, 5 s by default ([`DEFAULT_REPORT_INTERVAL`]).
#[derive(Debug, Clone)]
pub struct ReportSchedule {
    interval: Duration,
    rng: u64,
    next: Option<Instant>,
}

/// RFC 3550 6.2: the recommended minimum interval between reports.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);

impl ReportSchedule {
    /// A schedule with nominal `interval` (clamped to at least 100 ms) and a random
    /// `seed` for the jitter of the intervals.
    pub fn new(interval: Duration, seed: u64) -> Self {
        ReportSchedule {
            interval: interval.max(Duration::from_millis(100)),
            // xorshift needs a non-zero state.
            rng: seed | 1,
            next: None,
        }
    }

    fn randomised(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // A factor in [0.5, 1.5) in 1/1024 steps.
        let factor = 512 + (self.rng % 1024) as u32;
        self.interval * factor / 1024
    }

    /// Called on every clock tick: true when a report is due at `now`. The first call
    /// only arms the schedule (the first report is due half an interval later).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.next {
            None => {
                let first = self.randomised() / 2;
                self.next = Some(now + first);
                false
            }
            Some(at) if now >= at => {
                let next = self.randomised();
                self.next = Some(now + next);
                true
            }
            Some(_) => false,
        }
    }

    /// When the next report is due, once armed.
    pub fn timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// A wall-clock time in NTP format, supplied by the IO edge (sans-IO cores take it as
/// an input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// Seconds between 1900-01-01 and 1970-01-01.
    const UNIX_OFFSET: u64 = 2_208_988_800;

    /// From time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let secs = since_epoch.as_secs() + Self::UNIX_OFFSET;
        let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The middle 32 bits (LSR / RTT arithmetic, 1/65536 s units).
    pub fn middle(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// Round-trip time from a report block about our stream, received at `now`:
/// `now - LSR - DLSR` (RFC 3550 6.4.1). `None` when the peer has not seen an SR yet or
/// the result is negative (clock or peer error).
pub fn round_trip_time(block: &ReportBlock, now: NtpTime) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let rtt = now
        .middle()
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    if rtt > 0x8000_0000 {
        return None;
    }
    Some(Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65536))
}

const MIN_SEQUENTIAL: u32 = 2;
const MAX_DROPOUT: u32 = 3000;
const MAX_MISORDER: u32 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Reception statistics for one source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Transit of the previous packet in timestamp units.
    transit: Option<i64>,
    /// Jitter in timestamp units, times 16 (A.8).
    jitter_q4: i64,
    epoch: Option<Instant>,
    last_sr: Option<(u32, Instant)>,
    /// Packets that failed validation (probation, big jumps).
    pub rejected: u64,
}

impl ReceiverStats {
    /// Statistics for a new source whose first packet has sequence number `seq`; pass
    /// that packet to [`update`](Self::update) too. The source is valid after two
    /// sequential packets (probation); counting starts with the second.
    pub fn new(ssrc: u32, seq: u16, clock_rate: u32) -> Self {
        let mut s = ReceiverStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            epoch: None,
            last_sr: None,
            rejected: 0,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    /// The source.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// One packet arrived at `now`. Returns false when it was not counted (source on
    /// probation, or a sequence jump that is not yet confirmed).
    pub fn update(&mut self, now: Instant, seq: u16, rtp_timestamp: u32) -> bool {
        if !self.update_seq(seq) {
            self.rejected += 1;
            return false;
        }
        // A.8 interarrival jitter, arrival time in timestamp units.
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_nanos()
            * u128::from(self.clock_rate)
            / 1_000_000_000) as i64;
        let transit = arrival - i64::from(rtp_timestamp);
        if let Some(prev) = self.transit {
            // Timestamps wrap: the difference of two transits is taken modulo 2^32.
            let d = i64::from(((transit - prev) as i32).unsigned_abs());
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
        true
    }

    /// RFC 3550 A.1 `update_seq`.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            // Source not yet valid: needs MIN_SEQUENTIAL packets in sequence.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            // In order, with permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            // The sequence number made a very large jump.
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets: the other side restarted without telling
                // us, so just re-sync (treat this packet as the first).
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // else: duplicate or reordered packet, counted.
        self.received += 1;
        true
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected so far.
    pub fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Packets received (counted) so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Cumulative lost (negative with duplicates).
    pub fn lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received)
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// An SR from this source arrived at `now`.
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block for this source at `now`; starts a new interval for the
    /// fraction lost (A.3).
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                (
                    lsr,
                    (d.as_nanos() * 65536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32,
                )
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq: self.extended_max(),
            jitter: self.jitter(),
            lsr,
            dlsr,
        }
    }

    /// Quality snapshot: loss over the whole call, this source's jitter, the given RTT
    /// and jitter-buffer delay, G.711 with or without PLC.
    pub fn quality(
        &self,
        rtt: Option<Duration>,
        jitter_buffer: Duration,
        plc: bool,
    ) -> CallQuality {
        let expected = f64::from(self.expected().max(1));
        let loss = (self.lost().max(0) as f64 / expected * 100.0).min(100.0);
        let jitter_ms = f64::from(self.jitter()) * 1000.0 / f64::from(self.clock_rate);
        CallQuality::estimate(loss, jitter_ms, rtt, jitter_buffer, plc)
    }
}

/// Per-call quality snapshot for the diagnostics page and CDRs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallQuality {
    /// Packets lost, percent.
    pub loss_percent: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms, when known.
    pub rtt_ms: Option<f64>,
    /// E-model transmission rating (0..=100).
    pub r_factor: f64,
    /// Mean opinion score estimated from R (1.0..=4.5).
    pub mos: f64,
}

/// G.711 packetisation plus codec delay assumed in the mouth-to-ear delay (ms).
const PACKETISATION_MS: f64 = 20.0;

impl CallQuality {
    /// Simplified E-model (G.107): `R = 93.2 - Id - Ie,eff` with
    /// `Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)` for the one-way delay
    /// `d = rtt/2 + jitter buffer + 20 ms` and
    /// `Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)` (G.711: Ie 0, Bpl 25.1 with PLC,
    /// 4.3 without; random loss).
    pub fn estimate(
        loss_percent: f64,
        jitter_ms: f64,
        rtt: Option<Duration>,
        jitter_buffer: Duration,
        plc: bool,
    ) -> Self {
        let rtt_ms = rtt.map(|r| r.as_secs_f64() * 1000.0);
        let d =
            rtt_ms.unwrap_or(0.0) / 2.0 + jitter_buffer.as_secs_f64() * 1000.0 + PACKETISATION_MS;
        let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
        let bpl = if plc { 25.1 } else { 4.3 };
        let ppl = loss_percent.clamp(0.0, 100.0);
        let ie_eff = 95.0 * ppl / (ppl + bpl);
        let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
        CallQuality {
            loss_percent: ppl,
            jitter_ms,
            rtt_ms,
            r_factor: r,
            mos: mos_from_r(r),
        }
    }
}

/// MOS from R (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The cubic dips just below 1 for R < 6.5; MOS is 1 at worst.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

#[cfg(test)]
mod tests;
