//! DTMF both ways: RFC 4733 telephone-events over RTP, their mapping to the line
//! controller's digits, and in-band DTMF detection on linear PCM.
//!
//! - [`TelephoneEvent`]: the events 0-9, `*`, `#`, A-D and flash (16), converted from and
//!   to the line controller's ASCII digits ([`line_proto::Event::Digit`],
//!   [`line_proto::Event::HookFlash`], [`line_proto::Command::FxoDial`]).
//! - [`TelephoneEventEncoder`]: from a key press and release, the packet sequence of
//!   RFC 4733 2.5: one timestamp per event, the marker bit on the first packet, the
//!   duration growing every ptime, three end packets (E bit), and segments for events
//!   longer than 0xFFFF samples (2.5.1.3).
//! - [`TelephoneEventDecoder`]: from received packets, exactly one start and one end per
//!   event whatever is retransmitted, reordered or lost: a lost first packet still
//!   starts the event, lost end packets end it on the next event or after
//!   [`DEFAULT_END_TIMEOUT`] without updates.
//! - [`InbandDetector`]: Goertzel detection over the 8 DTMF frequencies in blocks of
//!   102 samples (12.75 ms) with level, twist, relative-peak, energy-ratio and
//!   stationarity checks; a digit starts after two agreeing blocks and ends after two
//!   blocks that no longer carry both its tones (a lenient test that bridges 10 ms
//!   dropouts), so per ITU-T Q.24 tones and pauses of 40 ms are accepted and
//!   20 ms tones are not. Goertzel comes from [`branchline_board::dsp`].
//!   [`InbandDetector::in_tone`] tells the IO edge when to mute the audio it forwards
//!   (gateways' "RFC 2833 mode": a digit goes out as an event, not also as tone).
//! - [`DtmfPlayer`]: the other way, received events played as dual tones towards an
//!   analog phone, for at least 40 ms and as long as the event lasted.
//!
//! Limits: one event block per packet is read (RFC 4733 2.5.1.5 multi-event packets
//! and RFC 2198 redundancy give their first block only); events above 16 (RFC 4734
//! modem tones) are refused. The in-band detector does not check frequency deviation
//! beyond what the 78 Hz Goertzel bins imply (tones off by 3.5 % may still be
//! accepted).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use branchline_board::dsp::{dbm0_to_amplitude, goertzel_power, SineGenerator, SAMPLE_RATE};

use crate::{Error, Result};

/// A telephone event this box handles: DTMF 0-15 and flash (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TelephoneEvent(u8);

impl TelephoneEvent {
    /// Hook flash (event 16).
    pub const FLASH: TelephoneEvent = TelephoneEvent(16);

    /// From an RFC 4733 event code (0..=16).
    pub fn from_code(code: u8) -> Result<Self> {
        if code <= 16 {
            Ok(TelephoneEvent(code))
        } else {
            Err(Error::TelephoneEvent {
                reason: "event code above 16 (only DTMF and flash are supported)",
            })
        }
    }

    /// The RFC 4733 event code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// From a dialled character `0-9 * # A-D` as the line controller sends it.
    pub fn from_digit(digit: u8) -> Result<Self> {
        let code = match digit {
            b'0'..=b'9' => digit - b'0',
            b'*' => 10,
            b'#' => 11,
            b'A'..=b'D' => digit - b'A' + 12,
            _ => return Err(Error::NotADigit { digit }),
        };
        Ok(TelephoneEvent(code))
    }

    /// The dialled character, `None` for flash.
    pub fn to_digit(self) -> Option<u8> {
        Some(match self.0 {
            0..=9 => b'0' + self.0,
            10 => b'*',
            11 => b'#',
            12..=15 => b'A' + self.0 - 12,
            _ => return None,
        })
    }

    /// The event a line-controller event stands for: a digit or a hook flash.
    pub fn from_line_event(event: &line_proto::Event) -> Option<Self> {
        match event {
            line_proto::Event::Digit(d) => Self::from_digit(*d).ok(),
            line_proto::Event::HookFlash => Some(Self::FLASH),
            _ => None,
        }
    }

    /// The line-controller command that plays this event on an FXO line (a one-digit
    /// [`line_proto::Command::FxoDial`]); `None` for flash, which the line controller
    /// has no command for.
    pub fn to_fxo_dial(self) -> Option<line_proto::Command> {
        let d = self.to_digit()?;
        let s = [d];
        line_proto::Command::fxo_dial(std::str::from_utf8(&s).ok()?)
    }

    /// Low-group and high-group frequency in Hz, `None` for flash.
    pub fn frequencies(self) -> Option<(f64, f64)> {
        let d = self.to_digit()?;
        for (r, row) in KEYPAD.iter().enumerate() {
            if let Some(c) = row.iter().position(|&k| k == d) {
                return Some((ROWS[r], COLS[c]));
            }
        }
        None
    }
}

/// The 4-byte payload of a telephone-event packet (RFC 4733 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventPayload {
    /// The event.
    pub event: TelephoneEvent,
    /// E bit: the event has ended.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration in timestamp units since the event's timestamp.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first event block of a payload.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let [code, flags, d0, d1] = *payload.first_chunk::<4>().ok_or(Error::TelephoneEvent {
            reason: "payload shorter than 4 bytes",
        })?;
        Ok(EventPayload {
            event: TelephoneEvent::from_code(code)?,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4 payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event.0,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// One telephone-event packet to send: give it the stream's next sequence number
/// ([`crate::rtp::RtpSender::next_other`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Marker bit (first packet of an event).
    pub marker: bool,
    /// RTP timestamp: the event's start (or its segment's start).
    pub timestamp: u32,
    /// The payload.
    pub payload: EventPayload,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    event: TelephoneEvent,
    volume: u8,
    /// Timestamp of the current segment.
    timestamp: u32,
    /// Duration within the current segment.
    duration: u32,
    stopped: bool,
}

/// RFC 4733 sender: call [`start`](Self::start) on key press,
/// [`tick`](Self::tick) every ptime, [`stop`](Self::stop) on release, and keep calling
/// `tick` until it returns `None` (the end packet is repeated twice more).
#[derive(Debug, Clone)]
pub struct TelephoneEventEncoder {
    ptime_samples: u32,
    sending: Option<Sending>,
    end_repeats: u8,
}

/// Times the end packet is sent in total (RFC 4733 2.5.1.4 recommends three).
pub const END_PACKETS: u8 = 3;

impl TelephoneEventEncoder {
    /// An encoder whose updates are `ptime_samples` apart (160 for 20 ms).
    pub fn new(ptime_samples: u32) -> Self {
        TelephoneEventEncoder {
            ptime_samples: ptime_samples.clamp(1, 0xFFFF),
            sending: None,
            end_repeats: 0,
        }
    }

    /// True while an event or its end retransmissions are being sent (the audio
    /// stream should stay quiet meanwhile).
    pub fn is_active(&self) -> bool {
        self.sending.is_some()
    }

    /// A key was pressed at RTP time `timestamp`: the first packet (marker set,
    /// duration 0). Refused while another key is held; a pending end retransmission of
    /// a previous event is cut short.
    pub fn start(
        &mut self,
        event: TelephoneEvent,
        volume: u8,
        timestamp: u32,
    ) -> Result<EventPacket> {
        if self.sending.is_some_and(|s| !s.stopped) {
            return Err(Error::TelephoneEvent {
                reason: "an event is already in progress",
            });
        }
        let s = Sending {
            event,
            volume: volume.min(63),
            timestamp,
            duration: 0,
            stopped: false,
        };
        self.sending = Some(s);
        self.end_repeats = 0;
        Ok(Self::packet(&s, true, false))
    }

    fn packet(s: &Sending, marker: bool, end: bool) -> EventPacket {
        EventPacket {
            marker,
            timestamp: s.timestamp,
            payload: EventPayload {
                event: s.event,
                end,
                volume: s.volume,
                duration: s.duration.min(0xFFFF) as u16,
            },
        }
    }

    /// One ptime later: the next update, a segment boundary, or an end repetition.
    pub fn tick(&mut self) -> Option<EventPacket> {
        let s = self.sending.as_mut()?;
        if s.stopped {
            if self.end_repeats == 0 {
                self.sending = None;
                return None;
            }
            self.end_repeats -= 1;
            let p = Self::packet(s, false, true);
            if self.end_repeats == 0 {
                self.sending = None;
            }
            return Some(p);
        }
        s.duration += self.ptime_samples;
        if s.duration >= 0xFFFF {
            // RFC 4733 2.5.1.3: close this segment at the maximum duration and go on
            // with a new timestamp.
            let overflow = s.duration - 0xFFFF;
            s.duration = 0xFFFF;
            let p = Self::packet(s, false, false);
            s.timestamp = s.timestamp.wrapping_add(0xFFFF);
            s.duration = overflow;
            return Some(p);
        }
        Some(Self::packet(s, false, false))
    }

    /// The key was released: the first end packet; two more follow from
    /// [`tick`](Self::tick). `None` if no event is in progress.
    pub fn stop(&mut self) -> Option<EventPacket> {
        let s = self.sending.as_mut().filter(|s| !s.stopped)?;
        s.stopped = true;
        self.end_repeats = END_PACKETS - 1;
        Some(Self::packet(s, false, true))
    }
}

/// A digit seen by a decoder or detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfEvent {
    /// The event began.
    Start {
        /// Which.
        event: TelephoneEvent,
        /// Level in -dBm0 (RFC 4733 volume; the measured level for in-band).
        volume: u8,
    },
    /// The event ended.
    End {
        /// Which.
        event: TelephoneEvent,
        /// Total duration in samples (8 kHz).
        duration: u32,
    },
}

/// Without updates for this long, a started event is ended.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Receiving {
    event: TelephoneEvent,
    /// Timestamp of the current segment.
    seg_ts: u32,
    /// Longest duration seen in the current segment.
    seg_duration: u32,
    /// Duration of earlier segments.
    earlier: u32,
    last_update: Instant,
}

/// RFC 4733 receiver for one stream (sans-IO).
#[derive(Debug, Clone)]
pub struct TelephoneEventDecoder {
    current: Option<Receiving>,
    /// Timestamps of recently finished events, to ignore their retransmissions.
    ended: [Option<u32>; 8],
    ended_next: usize,
    events: VecDeque<DtmfEvent>,
    end_timeout: Duration,
}

impl Default for TelephoneEventDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_END_TIMEOUT)
    }
}

impl TelephoneEventDecoder {
    /// A decoder that ends an event after `end_timeout` without packets.
    pub fn new(end_timeout: Duration) -> Self {
        TelephoneEventDecoder {
            current: None,
            ended: [None; 8],
            ended_next: 0,
            events: VecDeque::new(),
            end_timeout,
        }
    }

    /// Takes one telephone-event packet (its RTP timestamp and payload). A malformed
    /// payload is refused and changes nothing.
    pub fn handle(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Result<()> {
        let p = EventPayload::parse(payload)?;
        if self.ended.contains(&Some(timestamp)) {
            return Ok(()); // retransmitted end of a finished event
        }
        if let Some(cur) = self.current.as_mut() {
            let diff = timestamp.wrapping_sub(cur.seg_ts) as i32;
            if diff == 0 {
                cur.seg_duration = cur.seg_duration.max(u32::from(p.duration));
                cur.last_update = now;
                if p.end {
                    self.finish();
                }
                return Ok(());
            }
            if diff < 0 {
                return Ok(()); // older than the event in progress: stale
            }
            let continuation = p.event == cur.event
                && cur.seg_duration + 1600 >= 0xFFFF
                && (diff as u32) <= 0xFFFF;
            if continuation {
                cur.earlier += diff as u32;
                cur.seg_ts = timestamp;
                cur.seg_duration = u32::from(p.duration);
                cur.last_update = now;
                if p.end {
                    self.finish();
                }
                return Ok(());
            }
            self.finish();
        }
        self.events.push_back(DtmfEvent::Start {
            event: p.event,
            volume: p.volume,
        });
        self.current = Some(Receiving {
            event: p.event,
            seg_ts: timestamp,
            seg_duration: u32::from(p.duration),
            earlier: 0,
            last_update: now,
        });
        if p.end {
            self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(cur) = self.current.take() {
            self.events.push_back(DtmfEvent::End {
                event: cur.event,
                duration: cur.earlier + cur.seg_duration,
            });
            self.ended[self.ended_next] = Some(cur.seg_ts);
            self.ended_next = (self.ended_next + 1) % self.ended.len();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_update + self.end_timeout)
    }

    /// Ends an event whose updates stopped (all end packets lost).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timeout().is_some_and(|t| now >= t) {
            self.finish();
        }
    }

    /// The next start or end, in order.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }
}

/// Low-group (row) frequencies.
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies.
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[u8; 4]; 4] = [
    [b'1', b'2', b'3', b'A'],
    [b'4', b'5', b'6', b'B'],
    [b'7', b'8', b'9', b'C'],
    [b'*', b'0', b'#', b'D'],
];
/// Goertzel block length (12.75 ms); 102 samples put the 8 frequencies near bin
/// centres and keep adjacent rows (73 Hz apart) about 20 dB apart.
pub const BLOCK: usize = 102;

/// Thresholds of the in-band detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InbandConfig {
    /// Weakest accepted tone (each of the pair) in dBm0.
    pub min_level_dbm0: f64,
    /// How much louder the high tone may be than the low tone (dB).
    pub max_forward_twist_db: f64,
    /// How much louder the low tone may be than the high tone (dB).
    pub max_reverse_twist_db: f64,
    /// How far above the other tones of its group a tone must be (dB).
    pub min_peak_ratio_db: f64,
    /// Smallest share of the block energy the two tones must hold.
    pub min_energy_ratio: f64,
}

impl Default for InbandConfig {
    fn default() -> Self {
        InbandConfig {
            min_level_dbm0: -30.0,
            max_forward_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            min_peak_ratio_db: 8.0,
            min_energy_ratio: 0.7,
        }
    }
}

/// In-band DTMF detector for one audio stream (FXO callers dialling into the box).
#[derive(Debug, Clone)]
pub struct InbandDetector {
    config: InbandConfig,
    coeffs: [f64; 8],
    block: [i16; BLOCK],
    fill: usize,
    candidate: Option<u8>,
    candidate_hits: u32,
    current: Option<(TelephoneEvent, u32)>,
    misses: u32,
    events: VecDeque<DtmfEvent>,
    min_power: f64,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new(InbandConfig::default())
    }
}

impl InbandDetector {
    /// A detector with these thresholds.
    pub fn new(config: InbandConfig) -> Self {
        let mut coeffs = [0.0; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            *c = *f;
        }
        let amp = dbm0_to_amplitude(config.min_level_dbm0);
        InbandDetector {
            config,
            coeffs,
            block: [0; BLOCK],
            fill: 0,
            candidate: None,
            candidate_hits: 0,
            current: None,
            misses: 0,
            events: VecDeque::new(),
            // Goertzel power of a sine of amplitude A over N samples is (A·N/2)².
            min_power: (amp * BLOCK as f64 / 2.0).powi(2),
        }
    }

    /// Feeds samples (any length, e.g. one 20 ms frame).
    pub fn process(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let n = (BLOCK - self.fill).min(rest.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&rest[..n]);
            self.fill += n;
            rest = &rest[n..];
            if self.fill == BLOCK {
                self.fill = 0;
                let block = self.block;
                let continues = self
                    .current
                    .is_some_and(|(ev, _)| self.continues(&block, ev));
                let hit = self.classify(&block);
                self.step(hit, continues);
            }
        }
    }

    /// The next digit start or end.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.events.pop_front()
    }

    /// True while a digit is in progress or a block already looked like one (a start
    /// may follow with the next block). The IO edge mutes the audio it forwards
    /// meanwhile, so that a digit sent as an RFC 4733 event is not also heard in-band.
    pub fn in_tone(&self) -> bool {
        self.current.is_some() || self.candidate.is_some()
    }

    /// Which digit one block holds, if any: `(digit, level -dBm0, stationary)`.
    fn classify(&self, x: &[i16; BLOCK]) -> Option<(u8, u8, bool)> {
        let energy: f64 = x.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        if energy <= 0.0 {
            return None;
        }
        let mut p = [0.0f64; 8];
        for (pi, f) in p.iter_mut().zip(self.coeffs) {
            *pi = goertzel_power(x, f, SAMPLE_RATE);
        }
        let (rows, cols) = p.split_at(4);
        let best = |g: &[f64]| {
            let (i, &m) = g
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap_or((0, &0.0));
            (i, m)
        };
        let (ri, rp) = best(rows);
        let (ci, cp) = best(cols);
        if rp < self.min_power || cp < self.min_power {
            return None;
        }
        let twist = 10.0 * (cp / rp).log10();
        if twist > self.config.max_forward_twist_db || -twist > self.config.max_reverse_twist_db {
            return None;
        }
        let peak = 10f64.powf(self.config.min_peak_ratio_db / 10.0);
        let others_ok = |g: &[f64], i: usize, m: f64| {
            g.iter().enumerate().all(|(j, &v)| j == i || v * peak <= m)
        };
        if !others_ok(rows, ri, rp) || !others_ok(cols, ci, cp) {
            return None;
        }
        // Share of the block energy in the two tones (each sine: 2P/N of Σx²).
        let ratio = 2.0 * (rp + cp) / (BLOCK as f64 * energy);
        if ratio < self.config.min_energy_ratio {
            return None;
        }
        // Stationarity: both halves of the block carry the tone at about the same
        // energy (within 1.8 dB). A block only partly covered by a tone fails, which
        // is what makes 20 ms tones too short for two agreeing blocks.
        let strong = {
            let half = BLOCK / 2;
            let e1: f64 = x[..half].iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            let e2 = energy - e1;
            e1 > 0.0 && e2 > 0.0 && e1 / e2 < 1.5 && e2 / e1 < 1.5
        };
        // Level of the weaker tone in -dBm0, for the event's volume.
        let amp = 2.0 * rp.min(cp).sqrt() / BLOCK as f64;
        let dbm0 = 20.0 * (amp / dbm0_to_amplitude(0.0)).log10();
        let volume = (-dbm0).clamp(0.0, 63.0) as u8;
        Some((KEYPAD[ri][ci], volume, strong))
    }

    /// Whether a block still carries the digit being detected: both of its tones above
    /// the level floor (10 dB under the start threshold) and holding a fair share of
    /// the energy. Lenient on purpose, so dropouts of up to 10 ms (which leave blocks
    /// with only part of the tone) do not split a digit in two.
    fn continues(&self, x: &[i16; BLOCK], ev: TelephoneEvent) -> bool {
        let Some((lo, hi)) = ev.frequencies() else {
            return false;
        };
        let energy: f64 = x.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        let (pl, ph) = (
            goertzel_power(x, lo, SAMPLE_RATE),
            goertzel_power(x, hi, SAMPLE_RATE),
        );
        let weak = self.min_power / 10.0;
        energy > 0.0
            && pl >= weak
            && ph >= weak
            && 2.0 * (pl + ph) / (BLOCK as f64 * energy) >= 0.15
    }

    fn step(&mut self, hit: Option<(u8, u8, bool)>, continues: bool) {
        if let Some((ev, started)) = self.current {
            if continues {
                self.misses = 0;
                self.current = Some((ev, started + BLOCK as u32));
                return;
            }
            self.misses += 1;
            if self.misses < 2 {
                return;
            }
            self.events.push_back(DtmfEvent::End {
                event: ev,
                duration: started,
            });
            self.current = None;
            self.candidate = None;
            self.candidate_hits = 0;
        }
        match hit {
            Some((d, volume, true)) => {
                if self.candidate == Some(d) {
                    self.candidate_hits += 1;
                } else {
                    self.candidate = Some(d);
                    self.candidate_hits = 1;
                }
                if self.candidate_hits >= 2 {
                    if let Ok(event) = TelephoneEvent::from_digit(d) {
                        self.events.push_back(DtmfEvent::Start { event, volume });
                        self.current = Some((event, 2 * BLOCK as u32));
                        self.misses = 0;
                    }
                    self.candidate = None;
                    self.candidate_hits = 0;
                }
            }
            _ => {
                self.candidate = None;
                self.candidate_hits = 0;
            }
        }
    }
}

/// Shortest tone [`DtmfPlayer`] plays for an event (ITU-T Q.24 receivers need 40 ms).
pub const MIN_PLAYED: u32 = 40 * 8;
/// Longest tone [`DtmfPlayer`] plays for one event when no end arrives (samples).
pub const MAX_PLAYED: u32 = 5 * 8000;

#[derive(Debug, Clone)]
struct Playing {
    low: SineGenerator,
    high: SineGenerator,
    played: u32,
    until: Option<u32>,
}

/// Plays received telephone-events as DTMF tones (sans-IO): for an analog phone that
/// should hear the digits a SIP peer sends as RFC 4733. [`start`](Self::start) on the
/// event's start, [`release`](Self::release) with its total duration on its end, and
/// [`fill`](Self::fill) for every frame going to the port: while it returns true the
/// frame holds the tone (and should replace the audio). A tone lasts the event's
/// duration, at least [`MIN_PLAYED`] and at most [`MAX_PLAYED`] samples.
#[derive(Debug, Clone, Default)]
pub struct DtmfPlayer {
    playing: Option<Playing>,
}

impl DtmfPlayer {
    /// A player that plays nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the tone of `event` at `volume` -dBm0 per frequency (RFC 4733 volume,
    /// clamped to 3..=36 so that a bogus 0 does not clip and a bogus 63 is still
    /// heard). Flash has no tone and is ignored. A tone in progress is replaced.
    pub fn start(&mut self, event: TelephoneEvent, volume: u8) {
        let Some((lo, hi)) = event.frequencies() else {
            return;
        };
        let amp = dbm0_to_amplitude(-f64::from(volume.clamp(3, 36))).round() as i16;
        self.playing = Some(Playing {
            low: SineGenerator::new(lo, amp),
            high: SineGenerator::new(hi, amp),
            played: 0,
            until: None,
        });
    }

    /// The event ended after `duration` samples: the tone stops once that much has
    /// been played (at least [`MIN_PLAYED`]).
    pub fn release(&mut self, duration: u32) {
        if let Some(p) = self.playing.as_mut() {
            p.until = Some(duration.clamp(MIN_PLAYED, MAX_PLAYED));
        }
    }

    /// True while a tone is being played.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Writes the next samples of the tone into `out` and returns true, or leaves `out`
    /// alone and returns false when no tone is playing. The frame that reaches the end
    /// is filled to its end with tone (tones end on frame boundaries).
    pub fn fill(&mut self, out: &mut [i16]) -> bool {
        let Some(p) = self.playing.as_mut() else {
            return false;
        };
        let limit = p.until.unwrap_or(MAX_PLAYED);
        if p.played >= limit {
            self.playing = None;
            return false;
        }
        for o in out.iter_mut() {
            *o = p.low.next_sample().saturating_add(p.high.next_sample());
        }
        p.played = p.played.saturating_add(out.len() as u32);
        true
    }
}

#[cfg(test)]
mod tests;
