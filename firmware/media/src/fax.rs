//! Fax and modem tone detection: CED (2100 Hz answer tone) and CNG (1100 Hz calling
//! tone, 0.5 s on / 3 s off), which switch a call to G.711 passthrough.
//!
//! [`FaxDetector::process`] takes linear PCM from either direction of a call in 20 ms
//! blocks. A block is "tone on" when the tone frequency holds at least 80 % of its
//! energy (Goertzel, [`branchline_board::dsp::tone_ratio`]) at -43 dBm0 or louder
//! (T.30's receive range). CED is reported after 500 ms of tone, bridging a single
//! missing block (the 180° phase reversals of V.8 ANSam blank one block); CNG after one
//! burst of 400-700 ms that then stops (a continuous 1100 Hz tone is not CNG).
//!
//! On a [`FaxEvent`] the caller switches the call to passthrough:
//! [`passthrough_jitter_config`] (fixed delay, no PLC) for the jitter buffer, no
//! comfort noise or VAD on the sending side, and G.711 kept end to end (no
//! transcoding). T.38 is not supported.

use branchline_board::dsp::{dbm0_to_amplitude, rms, tone_ratio};

use crate::jitter::{JitterConfig, FRAME_SAMPLES};

/// Fixed jitter-buffer delay used in passthrough (ms).
pub const PASSTHROUGH_DELAY_MS: u32 = 60;

/// The jitter buffer configuration for fax/modem passthrough.
pub fn passthrough_jitter_config() -> JitterConfig {
    // PASSTHROUGH_DELAY_MS is within JitterConfig::fixed's accepted range.
    JitterConfig::fixed(PASSTHROUGH_DELAY_MS).unwrap_or_default()
}

/// Which tone was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaxTone {
    /// 2100 Hz answer tone (fax machine or modem answering, V.25 ANS / V.8 ANSam).
    Ced,
    /// 1100 Hz calling tone (fax machine calling, T.30 CNG).
    Cng,
}

/// A detection: switch the call to passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaxEvent {
    /// The tone.
    pub tone: FaxTone,
    /// Samples processed when it was recognised.
    pub at_sample: u64,
}

const CED_HZ: f64 = 2100.0;
const CNG_HZ: f64 = 1100.0;
const MIN_RATIO: f64 = 0.8;
const MIN_LEVEL_DBM0: f64 = -43.0;
const BLOCK_MS: u32 = 20;
const CED_MIN_MS: u32 = 500;
const CNG_MIN_MS: u32 = 400;
const CNG_MAX_MS: u32 = 700;

/// Detector for one call; reports each tone once.
#[derive(Debug, Clone)]
pub struct FaxDetector {
    block: [i16; FRAME_SAMPLES],
    fill: usize,
    samples: u64,
    min_rms: f64,
    ced_on_ms: u32,
    ced_gap: bool,
    cng_on_ms: u32,
    cng_off_blocks: u32,
    reported: Option<FaxEvent>,
    pending: Option<FaxEvent>,
}

impl Default for FaxDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl FaxDetector {
    /// A detector that has heard nothing.
    pub fn new() -> Self {
        FaxDetector {
            block: [0; FRAME_SAMPLES],
            fill: 0,
            samples: 0,
            min_rms: dbm0_to_amplitude(MIN_LEVEL_DBM0) / 2f64.sqrt(),
            ced_on_ms: 0,
            ced_gap: false,
            cng_on_ms: 0,
            cng_off_blocks: 0,
            reported: None,
            pending: None,
        }
    }

    /// The tone recognised so far, if any.
    pub fn detected(&self) -> Option<FaxEvent> {
        self.reported
    }

    /// Feeds samples (any length).
    pub fn process(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let n = (FRAME_SAMPLES - self.fill).min(rest.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&rest[..n]);
            self.fill += n;
            self.samples += n as u64;
            rest = &rest[n..];
            if self.fill == FRAME_SAMPLES {
                self.fill = 0;
                let block = self.block;
                self.step(&block);
            }
        }
    }

    /// The detection, once.
    pub fn poll_event(&mut self) -> Option<FaxEvent> {
        self.pending.take()
    }

    fn step(&mut self, x: &[i16]) {
        if self.reported.is_some() {
            return;
        }
        let loud = rms(x) >= self.min_rms;
        let ced = loud && tone_ratio(x, CED_HZ) >= MIN_RATIO;
        let cng = loud && tone_ratio(x, CNG_HZ) >= MIN_RATIO;

        if ced {
            self.ced_on_ms += BLOCK_MS;
            self.ced_gap = false;
        } else if self.ced_on_ms > 0 && !self.ced_gap {
            self.ced_gap = true; // one block of grace (phase reversal)
        } else {
            self.ced_on_ms = 0;
            self.ced_gap = false;
        }
        if self.ced_on_ms >= CED_MIN_MS {
            return self.report(FaxTone::Ced);
        }

        if cng {
            self.cng_on_ms += BLOCK_MS;
            self.cng_off_blocks = 0;
        } else if self.cng_on_ms > 0 {
            self.cng_off_blocks += 1;
            if self.cng_off_blocks >= 2 {
                let burst = self.cng_on_ms;
                self.cng_on_ms = 0;
                self.cng_off_blocks = 0;
                if (CNG_MIN_MS..=CNG_MAX_MS).contains(&burst) {
                    self.report(FaxTone::Cng);
                }
            }
        }
        if self.cng_on_ms > CNG_MAX_MS + BLOCK_MS {
            // Too long for CNG; keep counting so it never qualifies.
            self.cng_on_ms = CNG_MAX_MS + 2 * BLOCK_MS;
        }
    }

    fn report(&mut self, tone: FaxTone) {
        let ev = FaxEvent {
            tone,
            at_sample: self.samples,
        };
        self.reported = Some(ev);
        self.pending = Some(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter::JitterMode;
    use branchline_board::dsp::SineGenerator;

    fn sine(hz: f64, dbm0: f64, ms: usize) -> Vec<i16> {
        let mut g = SineGenerator::new(hz, dbm0_to_amplitude(dbm0) as i16);
        let mut v = vec![0i16; ms * 8];
        g.fill(&mut v);
        v
    }

    fn run(signal: &[i16]) -> Option<FaxEvent> {
        let mut d = FaxDetector::new();
        let mut seen = None;
        for c in signal.chunks(160) {
            d.process(c);
            if let Some(e) = d.poll_event() {
                assert!(seen.is_none(), "reported twice");
                seen = Some(e);
            }
        }
        seen
    }

    #[test]
    fn ced_after_half_a_second() {
        let mut s = vec![0i16; 800];
        s.extend(sine(2100.0, -12.0, 3000));
        let e = run(&s).unwrap();
        assert_eq!(e.tone, FaxTone::Ced);
        // 100 ms of silence + 500 ms of tone (+ up to one block of alignment).
        assert!((4800..=5000).contains(&e.at_sample), "{}", e.at_sample);
    }

    #[test]
    fn ced_with_phase_reversals() {
        // ANSam-like: phase flips every 450 ms.
        let mut s = Vec::new();
        for k in 0..6 {
            let mut part = sine(2100.0, -12.0, 450);
            if k % 2 == 1 {
                part.iter_mut().for_each(|x| *x = -*x);
            }
            s.extend(part);
        }
        assert_eq!(run(&s).map(|e| e.tone), Some(FaxTone::Ced));
    }

    #[test]
    fn cng_cadence() {
        let mut s = Vec::new();
        for _ in 0..2 {
            s.extend(sine(1100.0, -20.0, 500));
            s.extend(vec![0i16; 8 * 3000]);
        }
        let e = run(&s).unwrap();
        assert_eq!(e.tone, FaxTone::Cng);
        assert!(
            e.at_sample < 8 * 700,
            "after the first burst: {}",
            e.at_sample
        );
    }

    #[test]
    fn non_fax_signals_do_not_trigger() {
        assert_eq!(run(&sine(2100.0, -12.0, 300)), None, "short 2100 Hz");
        assert_eq!(run(&sine(1100.0, -12.0, 3000)), None, "continuous 1100 Hz");
        assert_eq!(run(&sine(1100.0, -12.0, 200)), None, "short 1100 Hz");
        assert_eq!(run(&sine(2100.0, -50.0, 2000)), None, "too quiet");
        assert_eq!(run(&sine(1800.0, -12.0, 2000)), None, "other tone");
        // Dial tone (350 + 440 Hz).
        let a = sine(350.0, -13.0, 2000);
        let b = sine(440.0, -13.0, 2000);
        let dial: Vec<i16> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| x.saturating_add(*y))
            .collect();
        assert_eq!(run(&dial), None);
    }

    #[test]
    fn passthrough_config_is_fixed() {
        assert_eq!(passthrough_jitter_config().mode(), JitterMode::Fixed);
    }
}
