//! Small signal-processing helpers for 8 kHz telephone audio: Goertzel tone power,
//! tone-to-signal ratio, RMS, and sine/tone generators that play a
//! [`line_proto::ToneSpec`] with its cadence. Used by the simulator and by tests.

use std::f64::consts::TAU;

use line_proto::ToneSpec;

/// Telephone sample rate (Hz).
pub const SAMPLE_RATE: f64 = 8000.0;
/// Samples per millisecond at [`SAMPLE_RATE`].
pub const SAMPLES_PER_MS: u64 = 8;
/// Peak amplitude of a full-scale µ-law sine (+3.14 dBm0).
pub const FULL_SCALE: f64 = 32124.0;
/// Level of a full-scale sine in dBm0 (ITU-T G.711).
#[expect(
    clippy::approx_constant,
    reason = "3.14 dBm0 is G.711's full-scale level, not π"
)]
pub const FULL_SCALE_DBM0: f64 = 3.14;

/// Goertzel power of `samples` at `freq_hz`: `|X(f)|²` of the block's DTFT at that
/// frequency. A sine of amplitude `A` at `freq_hz` over `N` samples gives about
/// `(A·N/2)²`.
pub fn goertzel_power(samples: &[i16], freq_hz: f64, sample_rate: f64) -> f64 {
    let w = TAU * freq_hz / sample_rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0)
}

/// Share of the block's energy that lies at `freq_hz` (8 kHz sampling), in `0.0..=1.0`.
///
/// Defined as `2·P / (N·E)` where `P` is [`goertzel_power`] at `freq_hz`, `N` the sample
/// count and `E = Σx²` the block energy: a pure sine at `freq_hz` gives ≈ 1.0, each tone
/// of an equal-level two-tone pair ≈ 0.5, silence and other frequencies ≈ 0. Blocks of
/// 100 ms or more keep leakage between tones 50 Hz apart small. Clamped to 1.0.
pub fn tone_ratio(samples: &[i16], freq_hz: f64) -> f64 {
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if samples.is_empty() || energy == 0.0 {
        return 0.0;
    }
    let n = samples.len() as f64;
    (2.0 * goertzel_power(samples, freq_hz, SAMPLE_RATE) / (n * energy)).min(1.0)
}

/// Root-mean-square level of `samples` (0.0 for an empty block).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (energy / samples.len() as f64).sqrt()
}

/// Peak amplitude of a sine at `level_dbm0` (3.14 dBm0 = µ-law full scale).
pub fn dbm0_to_amplitude(level_dbm0: f64) -> f64 {
    FULL_SCALE * 10f64.powf((level_dbm0 - FULL_SCALE_DBM0) / 20.0)
}

/// A continuous-phase sine at 8 kHz.
#[derive(Debug, Clone)]
pub struct SineGenerator {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl SineGenerator {
    /// A sine of `freq_hz` with peak `amplitude`.
    pub fn new(freq_hz: f64, amplitude: i16) -> Self {
        Self::with_amplitude(freq_hz, f64::from(amplitude))
    }

    fn with_amplitude(freq_hz: f64, amplitude: f64) -> Self {
        SineGenerator {
            step: TAU * freq_hz / SAMPLE_RATE,
            phase: 0.0,
            amplitude,
        }
    }

    /// The frequency in Hz.
    pub fn freq_hz(&self) -> f64 {
        self.step * SAMPLE_RATE / TAU
    }

    /// The next sample as a float (unclipped).
    fn next_f64(&mut self) -> f64 {
        let v = self.amplitude * self.phase.sin();
        self.phase = (self.phase + self.step) % TAU;
        v
    }

    /// The next sample.
    pub fn next_sample(&mut self) -> i16 {
        clip(self.next_f64())
    }

    /// Fills `out` with the next samples, continuing the phase.
    pub fn fill(&mut self, out: &mut [i16]) {
        for o in out {
            *o = self.next_sample();
        }
    }
}

fn clip(v: f64) -> i16 {
    v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// Plays a [`ToneSpec`]: one or two frequencies at its level, gated by its cadence.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    spec: ToneSpec,
    tones: Vec<SineGenerator>,
    /// Samples played since the tone started; drives the cadence.
    elapsed: u64,
}

impl ToneGenerator {
    /// Starts `spec` at the beginning of its cadence.
    pub fn new(spec: ToneSpec) -> Self {
        let amp = dbm0_to_amplitude(f64::from(spec.level_dbm0));
        let tones = [spec.freq1_hz, spec.freq2_hz]
            .into_iter()
            .filter(|&f| f != 0)
            .map(|f| SineGenerator::with_amplitude(f64::from(f), amp))
            .collect();
        ToneGenerator {
            spec,
            tones,
            elapsed: 0,
        }
    }

    /// The tone being played.
    pub fn spec(&self) -> &ToneSpec {
        &self.spec
    }

    /// Fills `out` with the next samples; time advances by `out.len() / 8` ms.
    pub fn fill(&mut self, out: &mut [i16]) {
        for o in out {
            let on = self.spec.cadence.is_on_at(self.elapsed / SAMPLES_PER_MS);
            let v: f64 = self.tones.iter_mut().map(SineGenerator::next_f64).sum();
            *o = if on { clip(v) } else { 0 };
            self.elapsed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_proto::Cadence;

    #[test]
    fn pure_sine_ratio() {
        let mut g = SineGenerator::new(1000.0, 10_000);
        let mut buf = vec![0i16; 1600];
        g.fill(&mut buf);
        assert!(
            tone_ratio(&buf, 1000.0) > 0.9,
            "{}",
            tone_ratio(&buf, 1000.0)
        );
        assert!(tone_ratio(&buf, 1400.0) < 0.05);
        assert!((rms(&buf) - 10_000.0 / 2f64.sqrt()).abs() < 50.0);
        // Continuous phase: a second block continues the first.
        let mut more = vec![0i16; 160];
        g.fill(&mut more);
        assert!(tone_ratio(&more, 1000.0) > 0.9);
        assert_eq!(tone_ratio(&[0; 160], 1000.0), 0.0);
        assert_eq!(tone_ratio(&[], 1000.0), 0.0);
        assert_eq!(rms(&[]), 0.0);
    }

    #[test]
    fn goertzel_scale() {
        let mut g = SineGenerator::new(1000.0, 1000);
        let mut buf = vec![0i16; 800];
        g.fill(&mut buf);
        let expected = (1000.0 * 800.0 / 2.0f64).powi(2);
        let p = goertzel_power(&buf, 1000.0, SAMPLE_RATE);
        assert!((p / expected - 1.0).abs() < 0.01, "{p} vs {expected}");
    }

    fn dial_tone(cadence: Cadence) -> ToneSpec {
        ToneSpec {
            freq1_hz: 350,
            freq2_hz: 440,
            level_dbm0: -13,
            cadence,
        }
    }

    #[test]
    fn dial_tone_two_frequencies() {
        let mut t = ToneGenerator::new(dial_tone(Cadence::continuous()));
        let mut buf = vec![0i16; 1600];
        t.fill(&mut buf);
        for f in [350.0, 440.0] {
            let r = tone_ratio(&buf, f);
            assert!(r > 0.4 && r < 0.6, "{f}: {r}");
        }
        assert!(tone_ratio(&buf, 1000.0) < 0.05);
        // -13 dBm0 per tone: amplitude = 32124·10^(-16.14/20) ≈ 5010.
        let amp = dbm0_to_amplitude(-13.0);
        assert!((amp - 5010.0).abs() < 1.0, "{amp}");
        let expected_rms = (2.0 * amp * amp / 2.0).sqrt();
        assert!((rms(&buf) - expected_rms).abs() / expected_rms < 0.02);
    }

    #[test]
    fn cadence_gates_output() {
        // Busy-like: 500 ms on, 500 ms off.
        let spec = dial_tone(Cadence::from_pairs(&[(500, 500)]).unwrap());
        let mut t = ToneGenerator::new(spec.clone());
        let mut on = vec![0i16; 4000];
        let mut off = vec![0i16; 4000];
        let mut on_again = vec![0i16; 4000];
        t.fill(&mut on);
        t.fill(&mut off);
        t.fill(&mut on_again);
        assert!(rms(&on) > 3000.0);
        assert_eq!(rms(&off), 0.0);
        assert!(rms(&on_again) > 3000.0);
        assert!(tone_ratio(&on_again, 440.0) > 0.4);
        assert_eq!(t.spec(), &spec);
    }

    #[test]
    fn single_frequency_full_scale_clips_not_wraps() {
        let spec = ToneSpec {
            freq1_hz: 1000,
            freq2_hz: 0,
            level_dbm0: 3,
            cadence: Cadence::continuous(),
        };
        let mut t = ToneGenerator::new(spec);
        let mut buf = vec![0i16; 800];
        t.fill(&mut buf);
        assert!(tone_ratio(&buf, 1000.0) > 0.9);
        assert!(buf.iter().all(|&s| s.unsigned_abs() <= 32124));
    }
}
