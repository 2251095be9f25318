//! Packet loss concealment for G.711 on linear PCM, after ITU-T G.711 Appendix I.
//!
//! While audio arrives, [`Plc::good`] keeps the last 390 samples (48.75 ms). When a
//! frame is missing, [`Plc::conceal`] estimates the pitch period (normalised
//! cross-correlation over 20 ms, lags 40..=120 samples, i.e. 66-200 Hz) and repeats the
//! last pitch period; after 10 ms it repeats the last two periods, after 20 ms the last
//! three (as Appendix I does, to avoid a buzzy sound), joining each cycle with a
//! quarter-period overlap-add. From 10 ms into the erasure the output is attenuated
//! linearly by 20 % per 10 ms, so it is silent after 60 ms. The first good frame after
//! an erasure is overlap-added with the continuing synthetic signal over a quarter
//! period plus 4 ms per further 10 ms of erasure (at most 10 ms).
//!
//! Difference from Appendix I: no 3.75 ms output delay. Appendix I delays all audio so
//! it can overlap-add at the start of an erasure; here the synthetic signal starts one
//! pitch period back, which continues a voiced signal smoothly without that delay (the
//! line controller path has tight latency). Unvoiced input gets a less smooth start.
//!
//! Written here because no maintained crate implements G.711 Appendix I; it is about
//! 150 lines and fully tested below.

/// Samples of history kept (Appendix I HISTORYLEN).
const HISTORY: usize = 390;
/// Shortest pitch period searched (200 Hz).
const PITCH_MIN: usize = 40;
/// Longest pitch period searched (66.7 Hz).
const PITCH_MAX: usize = 120;
/// Correlation window (20 ms).
const CORR_LEN: usize = 160;
/// Samples per 10 ms.
const TEN_MS: usize = 80;
/// Output is silent once an erasure is this long (60 ms).
pub const SILENT_AFTER: usize = 480;

/// G.711 Appendix I style concealment state for one audio stream.
#[derive(Debug, Clone)]
pub struct Plc {
    history: [i16; HISTORY],
    /// Samples concealed in the current erasure, 0 when audio is flowing.
    erased: usize,
    pitch: usize,
    /// Pitch buffer: the last `3 * pitch + pitch / 4` samples at erasure start.
    pitch_buf: [f32; HISTORY],
    /// Position inside the repeated cycle.
    pos: usize,
    /// Pitch periods in the repeated cycle (1..=3).
    periods: usize,
}

impl Default for Plc {
    fn default() -> Self {
        Self::new()
    }
}

impl Plc {
    /// A concealer with empty (silent) history.
    pub fn new() -> Self {
        Plc {
            history: [0; HISTORY],
            erased: 0,
            pitch: PITCH_MIN,
            pitch_buf: [0.0; HISTORY],
            pos: 0,
            periods: 1,
        }
    }

    /// Forgets history (new stream).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// True while concealing (since the last [`Plc::good`]).
    pub fn is_concealing(&self) -> bool {
        self.erased > 0
    }

    /// Samples concealed in the current erasure.
    pub fn erased_samples(&self) -> usize {
        self.erased
    }

    /// The pitch period (samples) used by the current or last erasure.
    pub fn pitch(&self) -> usize {
        self.pitch
    }

    /// Received audio: smooths the join if it ends an erasure (modifying the first
    /// samples of `samples`), then records it as history.
    pub fn good(&mut self, samples: &mut [i16]) {
        if self.erased > 0 {
            let extra = (self.erased - 1) / TEN_MS;
            let len = (self.pitch / 4 + extra * 32).min(TEN_MS).min(samples.len());
            for (i, s) in samples.iter_mut().take(len).enumerate() {
                let synth = self.next_synthetic();
                let w = (i + 1) as f32 / (len + 1) as f32;
                *s = clip(w * f32::from(*s) + (1.0 - w) * synth);
            }
            self.erased = 0;
        }
        self.push_history(samples);
    }

    /// Fills `out` with concealment for missing audio, continuing any erasure in
    /// progress.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.erased == 0 {
            self.start_erasure();
        }
        for o in out.iter_mut() {
            *o = clip(self.next_synthetic());
        }
        // Concealed audio becomes history too, so a following erasure (after a short
        // burst of good audio) repeats what the listener last heard.
        self.push_history(out);
    }

    fn push_history(&mut self, samples: &[i16]) {
        if samples.len() >= HISTORY {
            self.history
                .copy_from_slice(&samples[samples.len() - HISTORY..]);
        } else {
            self.history.copy_within(samples.len().., 0);
            self.history[HISTORY - samples.len()..].copy_from_slice(samples);
        }
    }

    fn start_erasure(&mut self) {
        self.pitch = find_pitch(&self.history);
        for (d, &s) in self.pitch_buf.iter_mut().zip(self.history.iter()) {
            *d = f32::from(s);
        }
        self.periods = 1;
        self.pos = 0;
    }

    /// Sample `pos` of the cycle made of the last `periods` pitch periods, with its last
    /// quarter period cross-faded into the samples that precede the cycle so the
    /// wrap-around is seamless.
    fn cycle_sample(&self, periods: usize, pos: usize) -> f32 {
        let p = self.pitch;
        let q = (p / 4).max(1);
        let len = periods * p;
        let start = HISTORY - len;
        let idx = start + pos;
        let v = self.pitch_buf[idx];
        if pos + q >= len && start >= q {
            let w = (pos + q + 1 - len) as f32 / (q + 1) as f32;
            (1.0 - w) * v + w * self.pitch_buf[idx - len]
        } else {
            v
        }
    }

    /// Next synthetic sample with attenuation; advances the erasure clock.
    fn next_synthetic(&mut self) -> f32 {
        let k = self.erased;
        if k >= SILENT_AFTER {
            self.erased += 1;
            return 0.0;
        }
        // Appendix I: one more pitch period at 10 ms and at 20 ms into the erasure;
        // continuing at the same absolute index keeps the phase.
        let wanted = (1 + k / TEN_MS).min(3);
        if wanted > self.periods {
            self.pos += (wanted - self.periods) * self.pitch;
            self.periods = wanted;
        }
        let v = self.cycle_sample(self.periods, self.pos);
        self.pos += 1;
        if self.pos >= self.periods * self.pitch {
            self.pos = 0;
        }
        let gain = if k < TEN_MS {
            1.0
        } else {
            1.0 - 0.2 * (k - TEN_MS) as f32 / TEN_MS as f32
        };
        self.erased += 1;
        v * gain.max(0.0)
    }
}

/// Pitch period of the end of `history` by normalised cross-correlation of the last
/// 20 ms against the same window `lag` samples earlier.
fn find_pitch(history: &[i16; HISTORY]) -> usize {
    let end = HISTORY;
    let target = &history[end - CORR_LEN..end];
    let mut best = (PITCH_MIN, f32::MIN);
    for lag in PITCH_MIN..=PITCH_MAX {
        let cand = &history[end - CORR_LEN - lag..end - lag];
        let (mut corr, mut energy) = (0.0f32, 0.0f32);
        for (&a, &b) in target.iter().zip(cand) {
            let (a, b) = (f32::from(a), f32::from(b));
            corr += a * b;
            energy += b * b;
        }
        let score = if energy > 0.0 {
            corr / energy.sqrt()
        } else {
            0.0
        };
        if score > best.1 {
            best = (lag, score);
        }
    }
    best.0
}

fn clip(v: f32) -> i16 {
    v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use branchline_board::dsp::{rms, SineGenerator};

    /// A voiced-like signal: pulse-shaped periodic wave with period `p`.
    fn voiced(p: usize, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let ph = ((i + offset) % p) as f32 / p as f32;
                let v = (std::f32::consts::TAU * ph).sin() * 6000.0
                    + (2.0 * std::f32::consts::TAU * ph).sin() * 3000.0
                    + (3.0 * std::f32::consts::TAU * ph).cos() * 1500.0;
                v as i16
            })
            .collect()
    }

    #[test]
    fn finds_pitch_of_periodic_signal() {
        for p in [40, 57, 80, 100, 120] {
            let mut plc = Plc::new();
            plc.good(&mut voiced(p, 400, 0));
            let mut out = [0i16; 160];
            plc.conceal(&mut out);
            assert_eq!(plc.pitch(), p, "period {p}");
        }
    }

    #[test]
    fn first_10ms_continue_the_waveform() {
        let p = 73;
        let all = voiced(p, 800, 0);
        let mut plc = Plc::new();
        let mut head = all[..480].to_vec();
        plc.good(&mut head);
        let mut out = [0i16; 80];
        plc.conceal(&mut out);
        let truth = &all[480..560];
        let err: Vec<i16> = out.iter().zip(truth).map(|(a, b)| a - b).collect();
        // The synthetic signal tracks the real continuation closely (the tail
        // cross-fade of the cycle costs a little).
        assert!(
            rms(&err) < 0.05 * rms(truth),
            "err {} vs {}",
            rms(&err),
            rms(truth)
        );
    }

    #[test]
    fn fades_to_silence_after_60ms() {
        let mut plc = Plc::new();
        let mut g = SineGenerator::new(300.0, 10_000);
        let mut buf = [0i16; 400];
        g.fill(&mut buf);
        plc.good(&mut buf);
        let mut frames = Vec::new();
        for _ in 0..4 {
            let mut out = [0i16; 160];
            plc.conceal(&mut out);
            frames.push(out);
        }
        let levels: Vec<f64> = frames.iter().map(|f| rms(f)).collect();
        assert!(levels[0] > 5000.0, "{levels:?}");
        assert!(levels[1] < levels[0] && levels[2] < levels[1], "{levels:?}");
        // 60 ms = samples 480..: frame 3 (480..640) is silent.
        assert_eq!(levels[3], 0.0, "{levels:?}");
        assert!(frames[2][159].unsigned_abs() < 400);
        assert_eq!(plc.erased_samples(), 640);
    }

    #[test]
    fn recovery_is_smooth() {
        let p = 64;
        let all = voiced(p, 1200, 0);
        let mut plc = Plc::new();
        let mut head = all[..480].to_vec();
        plc.good(&mut head);
        let mut out = [0i16; 160];
        plc.conceal(&mut out);
        assert!(plc.is_concealing());
        let mut back = all[640..800].to_vec();
        plc.good(&mut back);
        assert!(!plc.is_concealing());
        // No jump at the join bigger than the signal's own sample-to-sample steps.
        let max_step = all.windows(2).map(|w| (w[1] - w[0]).abs()).max().unwrap();
        let join = (back[0] - out[159]).abs();
        assert!(join <= max_step + 200, "join {join} > {max_step}");
        // After the overlap the good audio is untouched.
        assert_eq!(&back[80..], &all[720..800]);
    }

    #[test]
    fn silent_history_conceals_silence_and_long_recovery_fades_in() {
        let mut plc = Plc::new();
        let mut out = [1i16; 160];
        plc.conceal(&mut out);
        assert_eq!(out, [0; 160]);
        for _ in 0..5 {
            plc.conceal(&mut out);
        }
        let mut good = [8000i16; 160];
        plc.good(&mut good);
        // The overlap after a long erasure fades the good audio in from silence.
        assert!(good[0] < 1000, "{}", good[0]);
        assert_eq!(good[159], 8000);
    }
}
