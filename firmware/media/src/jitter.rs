//! Adaptive jitter buffer for RTP audio going to an analog port.
//!
//! Sans-IO: [`JitterBuffer::push`] takes a parsed packet and its arrival time,
//! [`JitterBuffer::pop`] is called every 20 ms by the port's frame clock and returns one
//! [`Frame`] of 160 linear samples: received audio, concealment ([`crate::plc`]),
//! comfort noise (RFC 3389 level) or silence.
//!
//! How it works:
//! - Packets are kept by extended sequence number (so reordered packets line up and a
//!   duplicate is recognised), and placed on the playout timeline by extended
//!   timestamp. Both are unwrapped against the current position, so 16-bit sequence
//!   and 32-bit timestamp wrap-around are invisible. Packets of 10, 20 or 30 ms (up to
//!   [`MAX_PACKET_SAMPLES`]) mix freely: frames are cut from the timeline sample-exact.
//! - Delay measurement: for each packet the transit time `arrival - timestamp` (in
//!   samples) goes into a window of the last [`WINDOW`] packets and into the RFC 3550
//!   interarrival jitter `J`. The target delay is the 98th percentile of
//!   `transit - min(transit)` over the window, at least `3 J`, clamped to the
//!   configured `min..=max`. The current delay is how long the fastest packet of the
//!   window waits before it plays.
//! - Adaptation (adaptive mode): the current delay is kept within one frame above the
//!   target: when it is a frame or more above, the buffer skips a frame, when it is
//!   below, it plays a frame of silence without moving on; both only while the audio is silent (a gap, comfort noise or a
//!   frame below about -47 dBm0), so speech is not cut. This also absorbs clock drift
//!   between the sender and the port clock. Outside silence it only acts when forced:
//!   above the maximum delay it drops audio, when the fastest packets arrive late it
//!   inserts a concealed frame. At a talkspurt start (marker bit, nothing older queued)
//!   it re-anchors straight to the target.
//! - Resync: an SSRC change, a timestamp jump of more than a second, or eight new
//!   packets in a row arriving too late reset the timeline to the newest packet.
//! - Fixed mode ([`JitterConfig::fixed`]) for fax and modem passthrough: the delay
//!   stays at the configured value, no PLC (missing audio is silence), and the only
//!   adjustment is a one-frame slip when sender and port clocks have drifted more
//!   than half the delay apart.
//!
//! Limits: one G.711 law per stream at a time (PCMU/PCMA both accepted and decoded);
//! the silence test is energy-only (no VAD), so continuous background noise above the
//! threshold delays adaptation until a gap or the forced limits.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use line_proto::g711::Law;

use crate::plc::{Plc, SILENT_AFTER};
use crate::rtp::{PayloadKind, PayloadMap, RtpPacket, CLOCK_RATE};
use crate::{Error, Result};

/// Samples in one frame to or from the line controller (20 ms at 8 kHz).
pub const FRAME_SAMPLES: usize = 160;
/// Longest audio payload accepted (60 ms).
pub const MAX_PACKET_SAMPLES: usize = 480;
/// Packets in the delay-measurement window.
pub const WINDOW: usize = 250;
/// A frame with mean square below this is silence for adaptation (RMS 100, about
/// -47 dBm0).
const SILENCE_MEAN_SQUARE: i64 = 100 * 100;
/// Hysteresis of the fixed-mode drift correction (10 ms).
const HYSTERESIS: i64 = 80;
/// A timestamp this far from the playout position is a new timeline (1 s).
const JUMP: i64 = CLOCK_RATE as i64;
/// New packets late in a row before the timeline is re-anchored.
const LATE_STREAK_RESYNC: u32 = 8;
/// Packets held at most (bounds memory whatever the sender does).
const MAX_QUEUE: usize = 256;

/// How the buffer chooses its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterMode {
    /// Target follows the measured jitter within `min..=max`; PLC on.
    Adaptive,
    /// Constant delay for fax/modem passthrough; PLC off.
    Fixed,
}

/// Jitter buffer settings (validated by the constructors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    mode: JitterMode,
    min_samples: i64,
    max_samples: i64,
}

fn ms_to_samples(ms: u32) -> i64 {
    i64::from(ms) * i64::from(CLOCK_RATE) / 1000
}

impl JitterConfig {
    /// Adaptive delay between `min_ms` and `max_ms` (e.g. 20 and 200).
    /// `min_ms <= max_ms <= 2000` and `max_ms >= 20`.
    pub fn adaptive(min_ms: u32, max_ms: u32) -> Result<Self> {
        let err = |reason| Error::JitterConfig {
            reason,
            min_ms,
            max_ms,
        };
        if min_ms > max_ms {
            return Err(err("minimum above maximum"));
        }
        if max_ms < 20 {
            return Err(err("maximum below one 20 ms frame"));
        }
        if max_ms > 2000 {
            return Err(err("maximum above 2000 ms"));
        }
        Ok(JitterConfig {
            mode: JitterMode::Adaptive,
            min_samples: ms_to_samples(min_ms),
            max_samples: ms_to_samples(max_ms),
        })
    }

    /// Constant delay of `delay_ms` (20..=1000) for passthrough.
    pub fn fixed(delay_ms: u32) -> Result<Self> {
        if !(20..=1000).contains(&delay_ms) {
            return Err(Error::JitterConfig {
                reason: "fixed delay outside 20..=1000 ms",
                min_ms: delay_ms,
                max_ms: delay_ms,
            });
        }
        Ok(JitterConfig {
            mode: JitterMode::Fixed,
            min_samples: ms_to_samples(delay_ms),
            max_samples: ms_to_samples(delay_ms),
        })
    }

    /// The mode.
    pub fn mode(&self) -> JitterMode {
        self.mode
    }
}

impl Default for JitterConfig {
    /// Adaptive, 20..=200 ms.
    fn default() -> Self {
        JitterConfig {
            mode: JitterMode::Adaptive,
            min_samples: ms_to_samples(20),
            max_samples: ms_to_samples(200),
        }
    }
}

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Received audio (all 160 samples).
    Audio,
    /// Some or all samples synthesised by PLC.
    Concealed,
    /// Comfort noise at the level of the last RFC 3389 packet.
    ComfortNoise,
    /// Nothing to play (before the first packet, after PLC faded, fixed-mode loss,
    /// adaptation).
    Silence,
}

/// One 20 ms frame for the line controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the samples are.
    pub kind: FrameKind,
    /// Linear PCM, 8 kHz.
    pub pcm: [i16; FRAME_SAMPLES],
    /// Sequence numbers of the first and last packets whose audio is in the frame.
    pub seqs: Option<(u16, u16)>,
}

impl Frame {
    fn silence() -> Self {
        Frame {
            kind: FrameKind::Silence,
            pcm: [0; FRAME_SAMPLES],
            seqs: None,
        }
    }

    /// The frame companded for an audio frame to the line controller.
    pub fn to_g711(&self, law: Law) -> [u8; FRAME_SAMPLES] {
        let mut out = [0u8; FRAME_SAMPLES];
        law.encode_block(&self.pcm, &mut out);
        out
    }
}

/// Why the timeline was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncReason {
    /// The first packet of the stream.
    Start,
    /// A new SSRC.
    SsrcChange,
    /// The timestamp jumped more than a second.
    TimestampJump,
    /// New packets kept arriving after their play time.
    LateStreak,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushOutcome {
    /// Queued for playout.
    Queued,
    /// Queued after resetting the timeline.
    Resync(ResyncReason),
    /// Same sequence number already queued: dropped.
    Duplicate,
    /// Its play time has passed: dropped.
    Late,
    /// A telephone-event packet: not audio, not queued (feed it to
    /// [`crate::dtmf::TelephoneEventDecoder`]).
    NotAudio,
}

/// Counters and current delays.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Audio and CN packets accepted.
    pub queued: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Frames with concealment.
    pub concealed_frames: u64,
    /// Frames of audio played.
    pub audio_frames: u64,
    /// Samples skipped to shrink the delay (or on overflow).
    pub dropped_samples: u64,
    /// Frames inserted to grow the delay.
    pub inserted_frames: u64,
    /// Timeline resets (not counting the start).
    pub resyncs: u64,
    /// Current delay in ms.
    pub current_delay_ms: f64,
    /// Target delay in ms.
    pub target_delay_ms: f64,
    /// RFC 3550 interarrival jitter in ms.
    pub jitter_ms: f64,
}

#[derive(Debug, Clone)]
struct Stored {
    ext_ts: i64,
    seq: u16,
    /// Linear samples (empty for comfort noise).
    pcm: Vec<i16>,
    /// RFC 3389 noise level (-dBov) for CN packets.
    cn_level: Option<u8>,
}

impl Stored {
    fn end(&self) -> i64 {
        self.ext_ts + self.pcm.len() as i64
    }
}

/// Where the timeline is.
#[derive(Debug, Clone)]
struct Timeline {
    ssrc: u32,
    /// Extended timestamp of the next sample to play; `None` until the first pop after
    /// a (re)anchor.
    play_ts: Option<i64>,
    /// Extended timestamp of the packet that (re)started the timeline.
    anchor_ts: i64,
    /// Re-anchor at the next pop (talkspurt start or resync).
    reanchor: bool,
    highest_seq: i64,
    last_played_seq: Option<i64>,
}

/// The jitter buffer of one incoming audio stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    payloads: PayloadMap,
    plc: Plc,
    plc_enabled: bool,
    epoch: Option<Instant>,
    timeline: Option<Timeline>,
    queue: BTreeMap<i64, Stored>,
    transits: VecDeque<i64>,
    last_transit: Option<i64>,
    /// RFC 3550 jitter in samples, times 16 (A.8 fixed point).
    jitter_q4: i64,
    late_streak: u32,
    last_silent: bool,
    cn_level: Option<u8>,
    noise_state: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer for a stream whose payload types are `payloads`.
    pub fn new(config: JitterConfig, payloads: PayloadMap) -> Self {
        JitterBuffer {
            config,
            payloads,
            plc: Plc::new(),
            plc_enabled: config.mode == JitterMode::Adaptive,
            epoch: None,
            timeline: None,
            queue: BTreeMap::new(),
            transits: VecDeque::with_capacity(WINDOW),
            last_transit: None,
            jitter_q4: 0,
            late_streak: 0,
            last_silent: true,
            cn_level: None,
            noise_state: 0x1234_5678,
            stats: JitterStats::default(),
        }
    }

    /// Switches to another configuration (e.g. fixed passthrough after a CED/CNG tone)
    /// keeping queued audio; PLC follows the mode.
    pub fn set_config(&mut self, config: JitterConfig) {
        self.config = config;
        self.plc_enabled = config.mode == JitterMode::Adaptive;
        if !self.plc_enabled {
            self.plc.reset();
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Counters and delays.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.target_delay_ms = self.target_delay() as f64 / 8.0;
        s.jitter_ms = self.jitter_samples() as f64 / 8.0;
        s
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn samples_at(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        let ns = now.saturating_duration_since(epoch).as_nanos();
        i64::try_from(ns * u128::from(CLOCK_RATE) / 1_000_000_000).unwrap_or(i64::MAX)
    }

    fn jitter_samples(&self) -> i64 {
        self.jitter_q4 >> 4
    }

    /// The delay the buffer aims for, in samples.
    fn target_delay(&self) -> i64 {
        let (min, max) = (self.config.min_samples, self.config.max_samples);
        if self.config.mode == JitterMode::Fixed || self.transits.is_empty() {
            return min;
        }
        let floor = self.transits.iter().copied().min().unwrap_or(0);
        let mut spread: Vec<i64> = self.transits.iter().map(|t| t - floor).collect();
        let k = (spread.len() * 98 / 100).min(spread.len() - 1);
        let (_, p98, _) = spread.select_nth_unstable(k);
        (*p98).max(3 * self.jitter_samples()).clamp(min, max)
    }

    fn min_transit(&self) -> i64 {
        self.transits.iter().copied().min().unwrap_or(0)
    }

    /// Takes one received packet that arrived at `now`. Packets of payload types the
    /// call did not negotiate are refused with an error and change nothing.
    pub fn push(&mut self, now: Instant, packet: &RtpPacket<'_>) -> Result<PushOutcome> {
        let kind =
            self.payloads
                .classify(packet.payload_type)
                .ok_or(Error::UnexpectedPayloadType {
                    pt: packet.payload_type,
                })?;
        let (pcm, cn_level) = match kind {
            PayloadKind::TelephoneEvent => return Ok(PushOutcome::NotAudio),
            PayloadKind::Audio(law) => {
                if packet.payload.len() > MAX_PACKET_SAMPLES {
                    return Err(Error::PayloadTooLong {
                        len: packet.payload.len(),
                        max: MAX_PACKET_SAMPLES,
                    });
                }
                let mut pcm = vec![0i16; packet.payload.len()];
                law.decode_block(packet.payload, &mut pcm);
                (pcm, None)
            }
            // RFC 3389: first byte is the noise level in -dBov; an empty CN payload is
            // treated as "very quiet".
            PayloadKind::ComfortNoise => (
                Vec::new(),
                Some(packet.payload.first().map_or(127, |l| l & 0x7F)),
            ),
        };
        let arrival = self.samples_at(now);
        let mut outcome = PushOutcome::Queued;

        let reason = match &self.timeline {
            None => Some(ResyncReason::Start),
            Some(t) if t.ssrc != packet.ssrc => Some(ResyncReason::SsrcChange),
            Some(t) => {
                let reference = t.play_ts.unwrap_or(t.anchor_ts);
                let ext_ts = unwrap_ts(reference, packet.timestamp);
                let ext_seq = unwrap_seq(t.highest_seq, packet.seq);
                let new_seq = ext_seq > t.highest_seq;
                if new_seq && ((ext_ts - reference).abs() > JUMP + self.config.max_samples) {
                    Some(ResyncReason::TimestampJump)
                } else {
                    None
                }
            }
        };
        if let Some(reason) = reason {
            self.reset_timeline(packet, reason);
            if reason != ResyncReason::Start {
                outcome = PushOutcome::Resync(reason);
            }
        }

        let Some(t) = self.timeline.as_mut() else {
            return Ok(outcome);
        };
        let reference = t.play_ts.unwrap_or(t.anchor_ts);
        let ext_ts = unwrap_ts(reference, packet.timestamp);
        let ext_seq = unwrap_seq(t.highest_seq, packet.seq);
        let new_seq = ext_seq > t.highest_seq;

        if self.queue.contains_key(&ext_seq) {
            self.stats.duplicates += 1;
            return Ok(PushOutcome::Duplicate);
        }
        let end = ext_ts + pcm.len() as i64;
        let already_played = t.last_played_seq.is_some_and(|s| ext_seq <= s);
        let past = t
            .play_ts
            .is_some_and(|p| if pcm.is_empty() { ext_ts < p } else { end <= p });
        if already_played || past {
            self.stats.late += 1;
            if new_seq {
                t.highest_seq = ext_seq;
                self.measure(arrival - ext_ts);
                self.late_streak += 1;
                if self.late_streak >= LATE_STREAK_RESYNC {
                    self.reset_timeline(packet, ResyncReason::LateStreak);
                    let base = i64::from(packet.timestamp);
                    self.insert(
                        i64::from(packet.seq),
                        base,
                        packet.seq,
                        pcm,
                        cn_level,
                        arrival,
                    );
                    return Ok(PushOutcome::Resync(ResyncReason::LateStreak));
                }
            }
            return Ok(PushOutcome::Late);
        }
        self.late_streak = 0;
        if new_seq {
            t.highest_seq = ext_seq;
        }
        // Talkspurt start with nothing older waiting: re-anchor at the next pop.
        if packet.marker
            && self.config.mode == JitterMode::Adaptive
            && t.play_ts.is_some()
            && !self.queue.values().any(|s| s.ext_ts < ext_ts)
        {
            t.reanchor = true;
            t.anchor_ts = ext_ts;
        }
        // Too far ahead: move the play position so the delay stays within the maximum.
        if let Some(p) = t.play_ts {
            let limit = self.config.max_samples + FRAME_SAMPLES as i64;
            if end - p > limit {
                let frames =
                    (end - self.config.max_samples - p).div_euclid(FRAME_SAMPLES as i64) + 1;
                let new_p = p + frames * FRAME_SAMPLES as i64;
                self.stats.dropped_samples += (new_p - p) as u64;
                t.play_ts = Some(new_p);
                self.queue
                    .retain(|_, s| s.end() > new_p || (s.pcm.is_empty() && s.ext_ts >= new_p));
            }
        }
        self.insert(ext_seq, ext_ts, packet.seq, pcm, cn_level, arrival);
        Ok(outcome)
    }

    fn insert(
        &mut self,
        ext_seq: i64,
        ext_ts: i64,
        seq: u16,
        pcm: Vec<i16>,
        cn_level: Option<u8>,
        arrival: i64,
    ) {
        self.measure(arrival - ext_ts);
        if self.queue.len() >= MAX_QUEUE {
            self.queue.pop_first();
        }
        self.queue.insert(
            ext_seq,
            Stored {
                ext_ts,
                seq,
                pcm,
                cn_level,
            },
        );
        self.stats.queued += 1;
    }

    /// Delay statistics: RFC 3550 A.8 jitter in samples and the transit window. Late
    /// packets count too, or the estimate would ignore exactly the delays it must cover.
    fn measure(&mut self, transit: i64) {
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        if self.transits.len() == WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
    }

    fn reset_timeline(&mut self, packet: &RtpPacket<'_>, reason: ResyncReason) {
        if reason != ResyncReason::Start {
            self.stats.resyncs += 1;
        }
        // Extended values restart near the origin; the transit window is kept only for
        // a late streak (same sender clock, so the measured spread is still valid).
        let keep_window = reason == ResyncReason::LateStreak;
        let base_ts = i64::from(packet.timestamp);
        if !keep_window {
            self.transits.clear();
            self.last_transit = None;
            self.jitter_q4 = 0;
        } else if let Some(t) = &self.timeline {
            // Re-express the window relative to the new timestamp origin.
            let old_ext = unwrap_ts(t.play_ts.unwrap_or(t.anchor_ts), packet.timestamp);
            let shift = old_ext - base_ts;
            for tr in self.transits.iter_mut() {
                *tr += shift;
            }
            if let Some(l) = self.last_transit.as_mut() {
                *l += shift;
            }
        }
        self.queue.clear();
        self.late_streak = 0;
        self.timeline = Some(Timeline {
            ssrc: packet.ssrc,
            play_ts: None,
            anchor_ts: base_ts,
            reanchor: true,
            highest_seq: i64::from(packet.seq),
            last_played_seq: None,
        });
    }

    /// The next 20 ms frame; call every 20 ms of the port clock.
    pub fn pop(&mut self, now: Instant) -> Frame {
        let t_now = self.samples_at(now);
        let min_transit = self.min_transit();
        let target = self.target_delay();
        let mode = self.config.mode;
        let Some(t) = self.timeline.as_mut() else {
            return self.silence_frame();
        };
        if t.reanchor {
            // Whole frames before the anchoring packet, so 20 ms packets map onto
            // 20 ms frames one to one; never start past its first sample.
            let ahead = (t.anchor_ts - (t_now - min_transit - target)).max(0);
            let frames = (ahead + FRAME_SAMPLES as i64 - 1) / FRAME_SAMPLES as i64;
            let p = t.anchor_ts - frames * FRAME_SAMPLES as i64;
            if let Some(old) = t.play_ts {
                if p > old {
                    self.stats.dropped_samples += (p - old) as u64;
                }
            }
            t.play_ts = Some(p);
            t.reanchor = false;
        }
        let Some(mut play) = t.play_ts else {
            return self.silence_frame();
        };
        let current = t_now - play - min_transit;
        self.stats.current_delay_ms = current as f64 / 8.0;
        let max = self.config.max_samples;

        // Adaptation.
        let mut insert = false;
        match mode {
            JitterMode::Adaptive => {
                // Stable band: target <= current < target + one frame.
                if current >= target + FRAME_SAMPLES as i64 {
                    // Whole frames keep packets aligned with frames.
                    let step = FRAME_SAMPLES as i64;
                    let forced = current > max + HYSTERESIS;
                    if forced || self.upcoming_silent(play) {
                        play += step;
                        self.stats.dropped_samples += step as u64;
                    }
                } else if current < target
                    && ((self.last_silent && self.upcoming_silent(play)) || current < 0)
                {
                    insert = true;
                }
            }
            JitterMode::Fixed => {
                let drift = current - target;
                if drift > target / 2 + HYSTERESIS {
                    play += FRAME_SAMPLES as i64;
                    self.stats.dropped_samples += FRAME_SAMPLES as u64;
                } else if drift < -(target / 2 + HYSTERESIS) {
                    insert = true;
                }
            }
        }
        if let Some(t) = self.timeline.as_mut() {
            t.play_ts = Some(play);
        }
        if insert {
            self.stats.inserted_frames += 1;
            if !self.last_silent && self.plc_enabled {
                let mut f = Frame::silence();
                f.kind = FrameKind::Concealed;
                self.plc.conceal(&mut f.pcm);
                self.stats.concealed_frames += 1;
                return f;
            }
            return self.silence_frame();
        }
        let frame = self.assemble(play);
        if let Some(t) = self.timeline.as_mut() {
            t.play_ts = Some(play + FRAME_SAMPLES as i64);
        }
        frame
    }

    fn silence_frame(&mut self) -> Frame {
        if let Some(level) = self.cn_level {
            let mut f = Frame::silence();
            f.kind = FrameKind::ComfortNoise;
            self.comfort_noise(level, &mut f.pcm);
            return f;
        }
        Frame::silence()
    }

    /// True when the frame at `play` has no audio or only quiet audio.
    fn upcoming_silent(&self, play: i64) -> bool {
        let end = play + FRAME_SAMPLES as i64;
        let (mut energy, mut n) = (0i64, 0i64);
        for s in self.queue.values() {
            if s.ext_ts >= end || s.end() <= play {
                continue;
            }
            let from = (play.max(s.ext_ts) - s.ext_ts) as usize;
            let to = (end.min(s.end()) - s.ext_ts) as usize;
            for &x in &s.pcm[from..to] {
                energy += i64::from(x) * i64::from(x);
                n += 1;
            }
        }
        n == 0 || energy < SILENCE_MEAN_SQUARE * n
    }

    /// Cuts the frame `[play, play + 160)` from the queue, concealing the gaps.
    fn assemble(&mut self, play: i64) -> Frame {
        let end = play + FRAME_SAMPLES as i64;
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut have = [false; FRAME_SAMPLES];
        let mut seqs: Option<(u16, u16)> = None;
        let mut played_seq: Option<i64> = None;
        for (&ext_seq, s) in &self.queue {
            if s.ext_ts >= end {
                continue;
            }
            if s.pcm.is_empty() {
                // Comfort noise takes effect at its timestamp.
                if s.ext_ts < end {
                    self.cn_level = s.cn_level;
                    played_seq = Some(played_seq.map_or(ext_seq, |p: i64| p.max(ext_seq)));
                }
                continue;
            }
            if s.end() <= play {
                continue;
            }
            let from = play.max(s.ext_ts);
            let to = end.min(s.end());
            let mut used = false;
            for ts in from..to {
                let i = (ts - play) as usize;
                if !have[i] {
                    have[i] = true;
                    pcm[i] = s.pcm[(ts - s.ext_ts) as usize];
                    used = true;
                }
            }
            if used {
                seqs = Some(match seqs {
                    None => (s.seq, s.seq),
                    Some((a, _)) => (a, s.seq),
                });
                played_seq = Some(played_seq.map_or(ext_seq, |p: i64| p.max(ext_seq)));
            }
        }
        // Drop what is fully played; remember the newest sequence number played.
        self.queue.retain(|_, s| {
            if s.pcm.is_empty() {
                s.ext_ts >= end
            } else {
                s.end() > end
            }
        });
        if let (Some(p), Some(t)) = (played_seq, self.timeline.as_mut()) {
            t.last_played_seq = Some(t.last_played_seq.map_or(p, |l| l.max(p)));
        }

        let audio = have.iter().filter(|&&h| h).count();
        if audio > 0 {
            self.cn_level = None;
        }
        let mut kind = if audio == FRAME_SAMPLES {
            FrameKind::Audio
        } else {
            FrameKind::Silence
        };
        let mut i = 0;
        while i < FRAME_SAMPLES {
            let j = (i..FRAME_SAMPLES)
                .find(|&j| have[j] != have[i])
                .unwrap_or(FRAME_SAMPLES);
            if have[i] {
                self.plc.good(&mut pcm[i..j]);
            } else if self.plc_enabled && self.cn_level.is_none() && self.plc_active() {
                self.plc.conceal(&mut pcm[i..j]);
                kind = FrameKind::Concealed;
            } else if let Some(level) = self.cn_level {
                self.comfort_noise(level, &mut pcm[i..j]);
                if audio == 0 {
                    kind = FrameKind::ComfortNoise;
                }
            }
            i = j;
        }
        if kind == FrameKind::Silence && audio > 0 {
            // Partly received with the rest left silent (fixed mode): still audio.
            kind = FrameKind::Audio;
        }
        match kind {
            FrameKind::Audio => self.stats.audio_frames += 1,
            FrameKind::Concealed => self.stats.concealed_frames += 1,
            _ => {}
        }
        let energy: i64 = pcm.iter().map(|&x| i64::from(x) * i64::from(x)).sum();
        self.last_silent = audio == 0 || energy < SILENCE_MEAN_SQUARE * FRAME_SAMPLES as i64;
        Frame { kind, pcm, seqs }
    }

    /// Conceal only while an erasure is young enough to be heard and audio has played.
    fn plc_active(&self) -> bool {
        if self.plc.is_concealing() {
            self.plc.erased_samples() < SILENT_AFTER
        } else {
            !self.last_silent
        }
    }

    /// White noise at `level` -dBov (RFC 3389), from a fixed-seed LCG.
    fn comfort_noise(&mut self, level: u8, out: &mut [i16]) {
        let rms = 32767.0 * 10f32.powf(-f32::from(level) / 20.0);
        // Uniform noise in [-a, a] has RMS a / sqrt(3).
        let amp = (rms * 3f32.sqrt()).min(32767.0);
        for o in out {
            self.noise_state = self
                .noise_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let u = (self.noise_state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            *o = (u * amp) as i16;
        }
    }

    /// When the current delay is measured in pops: for tests and the diagnostics page.
    pub fn current_delay(&self) -> Duration {
        Duration::from_micros((self.stats.current_delay_ms.max(0.0) * 1000.0) as u64)
    }
}

/// Unwraps a 32-bit timestamp to the extended value nearest `reference`.
fn unwrap_ts(reference: i64, ts: u32) -> i64 {
    reference + i64::from(ts.wrapping_sub(reference as u32) as i32)
}

/// Unwraps a 16-bit sequence number to the extended value nearest `reference`.
fn unwrap_seq(reference: i64, seq: u16) -> i64 {
    reference + i64::from(seq.wrapping_sub(reference as u16) as i16)
}

#[cfg(test)]
mod tests;
