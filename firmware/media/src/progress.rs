//! Call-progress tone detection on a PSTN line: busy and congestion (reorder) tones,
//! recognised by their frequencies and cadence, so a call dialled on an FXO line can
//! tell "the number is busy" from "nobody answers" (the exchange sends no signal for
//! either, only tones).
//!
//! [`ProgressDetector::new`] takes the tones to listen for as the country's
//! [`ToneSpec`]s (the same table the box plays its own tones from: ITU-T E.180
//! supplement 2). Audio goes in as linear PCM in any length; it is judged in 20 ms
//! blocks. A block is "tone" when it is at -40 dBm0 or louder and the tone's
//! frequencies hold at least 70 % of its energy (Goertzel,
//! [`branchline_board::dsp::tone_ratio`]). Each burst of tone and the pause after it
//! form a cycle; a cycle matches a cadence step when both durations are within
//! [`tolerance_ms`] (20 %, at least 60 ms: 20 ms blocks and an exchange's timing
//! spread). A tone is reported after [`CYCLES`] cycles in a row that match its cadence's
//! steps in order (and at least as many as the cadence has steps: UK congestion's
//! 0.4/0.35 + 0.225/0.525 s is not taken for UK busy's 0.375/0.375 s nor the other way
//! round), about two seconds of busy tone. Continuous tones
//! (no cadence) are not listened for: they say nothing a ring timeout does not.
//!
//! Tones that share frequencies and differ by cadence (US busy 480+620 Hz 0.5/0.5 s,
//! reorder 0.25/0.25 s; the 425 Hz countries' busy and ringback) are told apart by the
//! cadence; ringback never matches a busy cadence. Speech does not either: it is not
//! two pure tones at a steady level in steady bursts.
//!
//! Hand-written: no crate detects call-progress tones; the Goertzel filter is the
//! board crate's, as for the fax and DTMF detectors.

use branchline_board::dsp::{dbm0_to_amplitude, rms, tone_ratio};
use line_proto::ToneSpec;

use crate::jitter::FRAME_SAMPLES;

/// What the line's tones say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressTone {
    /// The called number is busy.
    Busy,
    /// The network cannot complete the call (congestion / reorder / unobtainable with a
    /// cadence).
    Congestion,
}

/// Matching cycles in a row needed before a tone is reported.
pub const CYCLES: u32 = 2;

const BLOCK_MS: u32 = 20;
const MIN_RATIO: f64 = 0.7;
const MIN_LEVEL_DBM0: f64 = -40.0;

/// How far a measured burst or pause may be from the cadence's: 20 %, at least 60 ms.
pub fn tolerance_ms(nominal_ms: u32) -> u32 {
    (nominal_ms / 5).max(60)
}

#[derive(Debug, Clone)]
struct Target {
    tone: ProgressTone,
    freqs: Vec<f64>,
    /// (on, off) in ms per cadence step.
    steps: Vec<(u32, u32)>,
    /// Matching cycles in a row so far.
    matched: u32,
    /// The cadence step the next cycle must match (steps are matched in order).
    next_step: usize,
    /// Whether the current burst is this target's frequencies.
    hearing: bool,
}

fn step_matches((on, off): (u32, u32), on_ms: u32, off_ms: u32) -> bool {
    on_ms.abs_diff(on) <= tolerance_ms(on) && off_ms.abs_diff(off) <= tolerance_ms(off)
}

impl Target {
    /// One cycle heard: continues the run when it matches the step due, else starts a
    /// new run at whichever step it matches (or none).
    fn hear(&mut self, on_ms: u32, off_ms: u32) {
        let n = self.steps.len();
        if self.hearing
            && self.matched > 0
            && step_matches(self.steps[self.next_step], on_ms, off_ms)
        {
            self.matched += 1;
            self.next_step = (self.next_step + 1) % n;
            return;
        }
        match self
            .steps
            .iter()
            .position(|&s| self.hearing && step_matches(s, on_ms, off_ms))
        {
            Some(i) => {
                self.matched = 1;
                self.next_step = (i + 1) % n;
            }
            None => self.matched = 0,
        }
    }

    fn needed(&self) -> u32 {
        CYCLES.max(self.steps.len() as u32)
    }
}

/// Detector for one line; reports the first tone recognised, once.
#[derive(Debug, Clone)]
pub struct ProgressDetector {
    targets: Vec<Target>,
    block: [i16; FRAME_SAMPLES],
    fill: usize,
    min_rms: f64,
    /// Length of the current burst (ms) and of the pause after it.
    on_ms: u32,
    off_ms: u32,
    reported: Option<ProgressTone>,
    pending: Option<ProgressTone>,
}

impl ProgressDetector {
    /// A detector for `tones`; tones without a cadence are left out.
    pub fn new(tones: &[(ProgressTone, ToneSpec)]) -> ProgressDetector {
        let targets = tones
            .iter()
            .filter(|(_, spec)| !spec.cadence.is_continuous() && spec.freq1_hz > 0)
            .map(|(tone, spec)| Target {
                tone: *tone,
                freqs: [spec.freq1_hz, spec.freq2_hz]
                    .into_iter()
                    .filter(|&f| f > 0)
                    .map(f64::from)
                    .collect(),
                steps: spec
                    .cadence
                    .steps
                    .iter()
                    .map(|s| (u32::from(s.on_ms), u32::from(s.off_ms)))
                    .collect(),
                matched: 0,
                next_step: 0,
                hearing: false,
            })
            .collect();
        ProgressDetector {
            targets,
            block: [0; FRAME_SAMPLES],
            fill: 0,
            min_rms: dbm0_to_amplitude(MIN_LEVEL_DBM0) / 2f64.sqrt(),
            on_ms: 0,
            off_ms: 0,
            reported: None,
            pending: None,
        }
    }

    /// The tone recognised so far, if any.
    pub fn detected(&self) -> Option<ProgressTone> {
        self.reported
    }

    /// The detection, once.
    pub fn poll_event(&mut self) -> Option<ProgressTone> {
        self.pending.take()
    }

    /// Feeds samples (any length).
    pub fn process(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let n = (FRAME_SAMPLES - self.fill).min(rest.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&rest[..n]);
            self.fill += n;
            rest = &rest[n..];
            if self.fill == FRAME_SAMPLES {
                self.fill = 0;
                let block = self.block;
                self.step(&block);
            }
        }
    }

    fn step(&mut self, x: &[i16]) {
        if self.reported.is_some() {
            return;
        }
        let loud = rms(x) >= self.min_rms;
        let heard: Vec<bool> = self
            .targets
            .iter()
            .map(|t| loud && t.freqs.iter().map(|&f| tone_ratio(x, f)).sum::<f64>() >= MIN_RATIO)
            .collect();
        let tone = heard.iter().any(|&h| h);
        if tone {
            if self.off_ms > 0 {
                // A burst and its pause are complete: one cycle.
                self.cycle();
                self.on_ms = 0;
                self.off_ms = 0;
            }
            if self.on_ms == 0 {
                for (t, &h) in self.targets.iter_mut().zip(&heard) {
                    t.hearing = h;
                }
            }
            self.on_ms += BLOCK_MS;
        } else if self.on_ms > 0 {
            self.off_ms += BLOCK_MS;
            // A pause longer than any cadence's: whatever was heard was no cadence.
            let longest = self
                .targets
                .iter()
                .flat_map(|t| t.steps.iter().map(|&(_, off)| off + tolerance_ms(off)))
                .max()
                .unwrap_or(0);
            if self.off_ms > longest {
                self.reset();
            }
        }
        // A burst longer than any cadence's: a continuous tone or speech.
        let longest_on = self
            .targets
            .iter()
            .flat_map(|t| t.steps.iter().map(|&(on, _)| on + tolerance_ms(on)))
            .max()
            .unwrap_or(0);
        if self.on_ms > longest_on {
            self.reset();
        }
    }

    fn cycle(&mut self) {
        let (on, off) = (self.on_ms, self.off_ms);
        let mut found = None;
        for t in &mut self.targets {
            t.hear(on, off);
            if t.matched >= t.needed() && found.is_none() {
                found = Some(t.tone);
            }
        }
        if let Some(tone) = found {
            self.reported = Some(tone);
            self.pending = Some(tone);
        }
    }

    fn reset(&mut self) {
        self.on_ms = 0;
        self.off_ms = 0;
        for t in &mut self.targets {
            t.matched = 0;
            t.hearing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use branchline_board::dsp::{SineGenerator, ToneGenerator};
    use line_proto::Cadence;

    use super::*;

    fn spec(f1: u16, f2: u16, cadence: &[(u16, u16)]) -> ToneSpec {
        ToneSpec {
            freq1_hz: f1,
            freq2_hz: f2,
            level_dbm0: -19,
            cadence: Cadence::from_pairs(cadence).expect("cadence"),
        }
    }

    fn us() -> ProgressDetector {
        ProgressDetector::new(&[
            (ProgressTone::Busy, spec(480, 620, &[(500, 500)])),
            (ProgressTone::Congestion, spec(480, 620, &[(250, 250)])),
        ])
    }

    fn de() -> ProgressDetector {
        ProgressDetector::new(&[
            (ProgressTone::Busy, spec(425, 0, &[(480, 480)])),
            (ProgressTone::Congestion, spec(425, 0, &[(240, 240)])),
        ])
    }

    /// Feeds `ms` of `spec` (from its start) and returns when it was detected (ms).
    fn feed(d: &mut ProgressDetector, spec: ToneSpec, ms: u32) -> Option<(ProgressTone, u32)> {
        let mut gen = ToneGenerator::new(spec);
        let mut buf = [0i16; 80];
        for t in 0..(ms / 10) {
            gen.fill(&mut buf);
            d.process(&buf);
            if let Some(tone) = d.poll_event() {
                return Some((tone, (t + 1) * 10));
            }
        }
        None
    }

    #[test]
    fn us_busy_is_busy_after_two_cycles() {
        let mut d = us();
        let (tone, at) = feed(&mut d, spec(480, 620, &[(500, 500)]), 6000).expect("busy");
        assert_eq!(tone, ProgressTone::Busy);
        // Two whole cycles and the start of the third burst.
        assert!((2000..=2200).contains(&at), "at {at} ms");
        assert_eq!(d.detected(), Some(ProgressTone::Busy));
        assert_eq!(d.poll_event(), None, "reported once");
    }

    #[test]
    fn us_reorder_is_congestion() {
        let mut d = us();
        let (tone, at) = feed(&mut d, spec(480, 620, &[(250, 250)]), 6000).expect("reorder");
        assert_eq!(tone, ProgressTone::Congestion);
        assert!(at <= 1200, "at {at} ms");
    }

    #[test]
    fn german_busy_and_congestion_share_425_hz() {
        let mut d = de();
        assert_eq!(
            feed(&mut d, spec(425, 0, &[(480, 480)]), 6000).map(|x| x.0),
            Some(ProgressTone::Busy)
        );
        let mut d = de();
        assert_eq!(
            feed(&mut d, spec(425, 0, &[(240, 240)]), 6000).map(|x| x.0),
            Some(ProgressTone::Congestion)
        );
    }

    #[test]
    fn ringback_silence_speech_and_continuous_tones_are_not_busy() {
        // US ringback 440+480 2 s / 4 s; German ringback 425 Hz 1 s / 4 s.
        assert_eq!(
            feed(&mut us(), spec(440, 480, &[(2000, 4000)]), 20_000),
            None
        );
        assert_eq!(feed(&mut de(), spec(425, 0, &[(1000, 4000)]), 20_000), None);
        // A dial tone (continuous).
        assert_eq!(feed(&mut de(), spec(425, 0, &[]), 10_000), None);
        assert_eq!(feed(&mut us(), spec(350, 440, &[]), 10_000), None);
        // Silence.
        let mut d = us();
        d.process(&[0i16; 8000 * 10]);
        assert_eq!(d.poll_event(), None);
        // A busy cadence at the wrong frequency (1 kHz beeps).
        assert_eq!(feed(&mut us(), spec(1000, 0, &[(500, 500)]), 10_000), None);
    }

    #[test]
    fn a_quiet_tone_below_minus_40_dbm0_is_not_heard() {
        let mut quiet = spec(480, 620, &[(500, 500)]);
        quiet.level_dbm0 = -50;
        assert_eq!(feed(&mut us(), quiet, 10_000), None);
    }

    #[test]
    fn off_cadence_bursts_are_not_busy_and_a_late_match_still_counts() {
        // 900/900 is outside 500/500 +- 100 ms.
        assert_eq!(feed(&mut us(), spec(480, 620, &[(900, 900)]), 10_000), None);
        // 560/440 is inside the tolerance.
        assert_eq!(
            feed(&mut us(), spec(480, 620, &[(560, 440)]), 6000).map(|x| x.0),
            Some(ProgressTone::Busy)
        );
        // Speech-like noise first, then busy: still found.
        let mut d = us();
        let mut noise = SineGenerator::new(300.0, 3000);
        let mut buf = [0i16; 160];
        for i in 0..100 {
            noise.fill(&mut buf);
            for (k, s) in buf.iter_mut().enumerate() {
                *s = s.wrapping_add(((i * 7919 + k * 104_729) % 2001) as i16 - 1000);
            }
            d.process(&buf);
        }
        assert_eq!(d.poll_event(), None);
        assert_eq!(
            feed(&mut d, spec(480, 620, &[(500, 500)]), 6000).map(|x| x.0),
            Some(ProgressTone::Busy)
        );
    }

    #[test]
    fn a_two_step_cadence_needs_both_steps() {
        // UK congestion: 400 Hz 0.4 on 0.35 off 0.225 on 0.525 off.
        let uk = spec(400, 0, &[(400, 350), (225, 525)]);
        let mut d = ProgressDetector::new(&[
            (ProgressTone::Busy, spec(400, 0, &[(375, 375)])),
            (ProgressTone::Congestion, uk.clone()),
        ]);
        assert_eq!(
            feed(&mut d, uk, 6000).map(|x| x.0),
            Some(ProgressTone::Congestion)
        );
    }

    #[test]
    fn uk_busy_is_not_taken_for_congestion_whose_first_step_it_resembles() {
        let mut d = ProgressDetector::new(&[
            (
                ProgressTone::Congestion,
                spec(400, 0, &[(400, 350), (225, 525)]),
            ),
            (ProgressTone::Busy, spec(400, 0, &[(375, 375)])),
        ]);
        assert_eq!(
            feed(&mut d, spec(400, 0, &[(375, 375)]), 6000).map(|x| x.0),
            Some(ProgressTone::Busy)
        );
    }

    #[test]
    fn no_targets_or_continuous_only_never_reports() {
        let mut d = ProgressDetector::new(&[(ProgressTone::Congestion, spec(400, 0, &[]))]);
        assert_eq!(feed(&mut d, spec(400, 0, &[(375, 375)]), 5000), None);
        let mut d = ProgressDetector::new(&[]);
        assert_eq!(feed(&mut d, spec(480, 620, &[(500, 500)]), 5000), None);
    }
}
