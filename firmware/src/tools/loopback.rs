//! The loopback test of an idle analog port (issue 8, ports page), as AudioCodes and
//! Grandstream gateways run it: the line controller turns the port's voice path back
//! on itself (`Command::SetLoopback`), the box sends a known test signal as the port's
//! audio frames and judges what comes back. It checks the whole digital voice path of
//! the port (the link, the MCU's frame handling, the codec), which a line test's DC
//! reading cannot.
//!
//! The signal ([`test_signal`]): [`LEAD_FRAMES`] of silence, a [`TONE_HZ`] Hz tone at
//! [`TONE_DBM0`] dBm0 for [`TONE_FRAMES`] frames (the 1004 Hz "digital milliwatt"
//! test tone of ITU-T O.6 at the usual -10 dBm0 test level), then [`QUIET_FRAMES`] of
//! silence, [`PRIME_FRAMES`] of them sent ahead at the start. The run collects what the
//! port sends back for as long as the signal plus [`MAX_DELAY_FRAMES`] and judges it ([`judge`], sans-IO: samples in, verdict out):
//!
//! | check | how | fails when |
//! | --- | --- | --- |
//! | audio back | the tone's onset: the first 5 ms window within 10 dB of the loudest, which must reach [`NO_AUDIO_DBM0`] | nothing comes back (dead codec, loopback not supported, link fault) |
//! | delay | onset of the tone in the frames received minus its onset in the frames sent (received frames counted from the loopback's start), 5 ms steps | over [`MAX_DELAY_FRAMES`] × 20 ms (then no audio is found) |
//! | level | RMS of each 20 ms frame of the tone received (trimmed 20 ms at each edge), the median over the frames that came | off [`TONE_DBM0`] by more than [`LEVEL_TOLERANCE_DB`] dB |
//! | signal to noise and distortion | per frame, energy of the sine at [`TONE_HZ`] fitted to it (least squares) against the rest: SINAD, the median over the frames | under [`MIN_SINAD_DB`] dB (a clean G.711 path gives about 37 dB at -10 dBm0), or more than [`MAX_LOST_SHARE`] of the tone's frames lost (silent) |
//! | idle noise | level of the silence after the tone (the median of its 20 ms frames) | above [`MAX_IDLE_NOISE_DBM0`] dBm0 |
//!
//! Levels are dBm0 by ITU-T G.711 (a full-scale sine is +3.14 dBm0, see
//! [`branchline_board::dsp`]). The main loop's status publisher owns the runs
//! ([`crate::web::status::StatusPublisher::loopback_test`]): it refuses a port with a
//! call up, off the hook, ringing or under another test, sends a frame every 20 ms,
//! and always turns the loopback off again (at the end, at [`LOOPBACK_TEST_TIMEOUT`],
//! and when a call arrives on the port).
//!
//! Why by hand: the measurements are a two-term least-squares fit and RMS over a few
//! thousand samples ([`branchline_board::dsp`] has the RMS and the sine generator); no
//! crate judges a telephone voice path.

use std::time::{Duration, Instant};

use branchline_board::dsp::{rms, SineGenerator, FULL_SCALE, FULL_SCALE_DBM0};
use line_proto::AUDIO_FRAME_LEN;
use serde::Serialize;

/// The test tone's frequency (ITU-T O.6: 1004 Hz, off the 8 kHz sampling's
/// sub-harmonics).
pub const TONE_HZ: f64 = 1004.0;
/// The test tone's level.
pub const TONE_DBM0: f64 = -10.0;
/// Silent frames before the tone.
pub const LEAD_FRAMES: usize = 5;
/// Frames of tone (500 ms).
pub const TONE_FRAMES: usize = 25;
/// Silent frames after the tone (500 ms), for the idle noise.
pub const QUIET_FRAMES: usize = 25;
/// The longest round trip the test waits for (200 ms).
pub const MAX_DELAY_FRAMES: usize = 10;
/// Frames sent ahead at the start (with the first one), so the line controller's
/// receive queue holds a frame at each of its 20 ms ticks even when the daemon's
/// frames arrive up to 100 ms late (a loaded box; the simulator catches up to five
/// missed ticks at once): a tick with no frame would cut a 20 ms hole in the tone. The delay is measured frame for frame (received index against sent index),
/// so these do not count in it.
pub const PRIME_FRAMES: usize = 5;
/// Level window: the tone must come back within this many dB of [`TONE_DBM0`].
pub const LEVEL_TOLERANCE_DB: f64 = 3.0;
/// Least signal to noise and distortion ratio that passes.
pub const MIN_SINAD_DB: f64 = 25.0;
/// Loudest idle noise that passes.
pub const MAX_IDLE_NOISE_DBM0: f64 = -50.0;
/// Most of the tone's frames that may be lost (silent) on the way before the test
/// fails on them.
pub const MAX_LOST_SHARE: f64 = 0.2;
/// Below this, nothing came back.
pub const NO_AUDIO_DBM0: f64 = -40.0;
/// How long a run may take before it is judged with what arrived (the signal and
/// its round trip take 1.3 s).
pub const LOOPBACK_TEST_TIMEOUT: Duration = Duration::from_secs(3);

const SAMPLES_PER_MS: usize = 8;
/// Onset search window (5 ms).
const ONSET_WINDOW: usize = 5 * SAMPLES_PER_MS;
/// Trimmed from each edge of the tone and of the quiet part (20 ms).
const EDGE: usize = 20 * SAMPLES_PER_MS;

/// One 20 ms frame of linear PCM.
pub type Pcm = [i16; AUDIO_FRAME_LEN];

/// The frames the box sends: silence, the tone, silence.
pub fn test_signal() -> Vec<Pcm> {
    let amplitude = dbm0_to_peak(TONE_DBM0);
    let mut sine = SineGenerator::new(TONE_HZ, amplitude);
    let mut out = vec![[0i16; AUDIO_FRAME_LEN]; LEAD_FRAMES];
    for _ in 0..TONE_FRAMES {
        let mut f = [0i16; AUDIO_FRAME_LEN];
        sine.fill(&mut f);
        out.push(f);
    }
    out.extend(std::iter::repeat_n([0i16; AUDIO_FRAME_LEN], QUIET_FRAMES));
    out
}

fn dbm0_to_peak(level_dbm0: f64) -> i16 {
    let a = FULL_SCALE * 10f64.powf((level_dbm0 - FULL_SCALE_DBM0) / 20.0);
    a.round().clamp(0.0, f64::from(i16::MAX)) as i16
}

/// The level of `samples` in dBm0: the RMS against a sine's (a sine of peak `A` has
/// RMS `A/√2`); `None` for silence (digital zero).
pub fn level_dbm0(samples: &[i16]) -> Option<f64> {
    let r = rms(samples);
    (r > 0.0).then(|| 20.0 * (r * std::f64::consts::SQRT_2 / FULL_SCALE).log10() + FULL_SCALE_DBM0)
}

/// Signal to noise and distortion of a block holding a tone at `freq_hz`: the energy
/// of the best-fitting sine at that frequency (a least-squares fit of its sine and
/// cosine parts, so leakage between the two does not bias it as a single DFT bin
/// would) against the rest, in dB (capped at 90 dB for a pure tone).
pub fn sinad_db(samples: &[i16], freq_hz: f64) -> Option<f64> {
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if energy <= 0.0 || samples.is_empty() {
        return None;
    }
    let w = std::f64::consts::TAU * freq_hz / 8000.0;
    let (mut cc, mut ss, mut cs, mut xc, mut xs) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (n, &x) in samples.iter().enumerate() {
        let (s, c) = (w * n as f64).sin_cos();
        let x = f64::from(x);
        cc += c * c;
        ss += s * s;
        cs += c * s;
        xc += x * c;
        xs += x * s;
    }
    let det = cc * ss - cs * cs;
    if det.abs() < 1e-9 {
        return None;
    }
    let alpha = (xc * ss - xs * cs) / det;
    let beta = (xs * cc - xc * cs) / det;
    let tone = (alpha * xc + beta * xs).clamp(0.0, energy);
    let rest = energy - tone;
    Some(if rest <= energy * 1e-9 {
        90.0
    } else {
        (10.0 * (tone / rest).log10()).min(90.0)
    })
}

/// The median of `values` (`None` when there are none).
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// One check of a loopback test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoopbackCheck {
    /// `audio back`, `delay`, `level`, `signal to noise`, `idle noise`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// The measured value and, when it failed, what that usually means.
    pub detail: String,
}

/// The measurements and verdict of a loopback test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoopbackResult {
    /// Which run this is (the publisher numbers them; the API waits for its own).
    pub id: u64,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: i64,
    /// Whether every check passed.
    pub passed: bool,
    /// The first failed check in words, or "all checks passed".
    pub reason: String,
    /// The checks, in the order of the module doc's table.
    pub checks: Vec<LoopbackCheck>,
    /// The tone's level back, tenths of a dBm0 (sent: -100).
    pub level_tenth_dbm0: Option<i32>,
    /// The round trip, ms.
    pub delay_ms: Option<u32>,
    /// Signal to noise and distortion, tenths of a dB.
    pub sinad_tenth_db: Option<i32>,
    /// Idle noise, tenths of a dBm0 (`None`: digital silence).
    pub idle_noise_tenth_dbm0: Option<i32>,
    /// Frames sent and received.
    pub frames_sent: usize,
    /// Frames the port sent back.
    pub frames_received: usize,
}

fn tenths(v: f64) -> i32 {
    (v * 10.0).round() as i32
}

/// What [`judge`] measured (before numbering).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Whether every check passed.
    pub passed: bool,
    /// The checks.
    pub checks: Vec<LoopbackCheck>,
    /// Tone level back, dBm0.
    pub level_dbm0: Option<f64>,
    /// Round trip, ms.
    pub delay_ms: Option<u32>,
    /// SINAD, dB.
    pub sinad_db: Option<f64>,
    /// Idle noise, dBm0 (`None`: digital silence or not measured).
    pub idle_noise_dbm0: Option<f64>,
}

fn check(name: &'static str, passed: bool, detail: String) -> LoopbackCheck {
    LoopbackCheck {
        name,
        passed,
        detail,
    }
}

/// Judges `received` (what the port sent back from the moment the loopback was
/// turned on, in order) against [`test_signal`] (see the module doc's table).
pub fn judge(received: &[i16]) -> Judgement {
    let sent_onset = LEAD_FRAMES * AUDIO_FRAME_LEN;
    let tone_len = TONE_FRAMES * AUDIO_FRAME_LEN;
    let mut out = Judgement {
        passed: false,
        checks: Vec::new(),
        level_dbm0: None,
        delay_ms: None,
        sinad_db: None,
        idle_noise_dbm0: None,
    };
    // The onset: the first window within 10 dB of the loudest one (so steady noise
    // under the tone is not taken for it), when the loudest is loud enough at all.
    let loudest = received
        .chunks(ONSET_WINDOW)
        .filter_map(level_dbm0)
        .fold(f64::NEG_INFINITY, f64::max);
    let threshold = (loudest - 10.0).max(NO_AUDIO_DBM0);
    let onset = (loudest >= NO_AUDIO_DBM0)
        .then(|| {
            received
                .chunks(ONSET_WINDOW)
                .position(|w| level_dbm0(w).is_some_and(|l| l >= threshold))
        })
        .flatten()
        .map(|i| i * ONSET_WINDOW);
    let latest = sent_onset + MAX_DELAY_FRAMES * AUDIO_FRAME_LEN;
    let onset = match onset {
        Some(o) if o + ONSET_WINDOW <= sent_onset => {
            let noise = level_dbm0(&received[..sent_onset.min(received.len())]);
            out.checks.push(check(
                "audio back",
                false,
                format!(
                    "sound came back before the test tone was sent ({}): a noisy or crossed voice path",
                    noise.map_or_else(|| "?".to_owned(), |n| format!("{n:.1} dBm0"))
                ),
            ));
            return out;
        }
        Some(o) if o <= latest => o,
        _ => {
            out.checks.push(check(
                "audio back",
                false,
                format!(
                    "no audio came back within {} ms ({} ms received): the codec, the line controller's loopback or the link is dead",
                    MAX_DELAY_FRAMES * 20,
                    received.len() / SAMPLES_PER_MS
                ),
            ));
            return out;
        }
    };
    out.checks.push(check(
        "audio back",
        true,
        "the test tone came back".to_owned(),
    ));
    let delay_ms = (onset.saturating_sub(sent_onset) / SAMPLES_PER_MS) as u32;
    out.delay_ms = Some(delay_ms);
    out.checks.push(check(
        "delay",
        true,
        format!("{delay_ms} ms round trip (5 ms steps)"),
    ));
    // The tone as received, trimmed at both edges, frame by frame (frames as they
    // came: received[k * 160..]). A frame lost on the way (a link or queue drop) is a
    // silent frame; the level and SINAD are the medians over the frames that came,
    // so one or two lost frames do not hide a clean path, and more than
    // MAX_LOST_SHARE of them fail it.
    let tone_end = (onset + tone_len).min(received.len());
    let (from, to) = (onset + EDGE, tone_end.saturating_sub(EDGE));
    let frames: Vec<&[i16]> = received
        .chunks_exact(AUDIO_FRAME_LEN)
        .enumerate()
        .filter(|(k, _)| k * AUDIO_FRAME_LEN >= from && (k + 1) * AUDIO_FRAME_LEN <= to)
        .map(|(_, f)| f)
        .collect();
    let came: Vec<&[i16]> = frames
        .iter()
        .copied()
        .filter(|f| level_dbm0(f).is_some_and(|l| l >= NO_AUDIO_DBM0))
        .collect();
    let lost = frames.len() - came.len();
    let level = median(came.iter().filter_map(|f| level_dbm0(f)));
    out.level_dbm0 = level;
    let level_ok = level.is_some_and(|l| (l - TONE_DBM0).abs() <= LEVEL_TOLERANCE_DB);
    out.checks.push(check(
        "level",
        level_ok,
        match level {
            Some(l) if level_ok => format!("{l:.1} dBm0 (sent {TONE_DBM0:.1} dBm0)"),
            Some(l) => format!(
                "{l:.1} dBm0, sent {TONE_DBM0:.1} dBm0: off by {:.1} dB (more than {LEVEL_TOLERANCE_DB:.0} dB; wrong gains or a failing codec)",
                l - TONE_DBM0
            ),
            None => "the tone did not last (the audio stopped)".to_owned(),
        },
    ));
    let sinad = median(came.iter().filter_map(|f| sinad_db(f, TONE_HZ)));
    out.sinad_db = sinad;
    let too_many_lost = frames.is_empty() || lost as f64 > frames.len() as f64 * MAX_LOST_SHARE;
    let sinad_ok = sinad.is_some_and(|s| s >= MIN_SINAD_DB) && !too_many_lost;
    let lost_text = if lost > 0 {
        format!(", {lost} of {} tone frames lost", frames.len())
    } else {
        String::new()
    };
    out.checks.push(check(
        "signal to noise",
        sinad_ok,
        match sinad {
            Some(s) if too_many_lost => {
                format!("{s:.1} dB SINAD{lost_text}: audio frames are lost on the voice path")
            }
            Some(s) if sinad_ok => format!("{s:.1} dB SINAD{lost_text}"),
            Some(s) => format!(
                "{s:.1} dB SINAD{lost_text}, under {MIN_SINAD_DB:.0} dB: too noisy or distorted"
            ),
            None => "no tone to measure".to_owned(),
        },
    ));
    // The silence after the tone.
    let quiet_start = onset + tone_len + EDGE;
    let quiet_end = (onset + tone_len + QUIET_FRAMES * AUDIO_FRAME_LEN - EDGE).min(received.len());
    let quiet = received.get(quiet_start..quiet_end).unwrap_or(&[]);
    if quiet.len() >= 100 * SAMPLES_PER_MS {
        // The median frame's level, so the tone's tail shifted in by a frame or two
        // the line controller's queue ran short of is not taken for noise.
        let mut levels: Vec<f64> = quiet
            .chunks(AUDIO_FRAME_LEN)
            .map(|f| level_dbm0(f).unwrap_or(f64::NEG_INFINITY))
            .collect();
        levels.sort_by(f64::total_cmp);
        let noise = Some(levels[levels.len() / 2]).filter(|l| l.is_finite());
        out.idle_noise_dbm0 = noise;
        let ok = noise.is_none_or(|n| n <= MAX_IDLE_NOISE_DBM0);
        out.checks.push(check(
            "idle noise",
            ok,
            match noise {
                None => "digital silence".to_owned(),
                Some(n) if ok => format!("{n:.1} dBm0"),
                Some(n) => format!(
                    "{n:.1} dBm0 with nothing sent, above {MAX_IDLE_NOISE_DBM0:.0} dBm0: too noisy"
                ),
            },
        ));
    } else {
        out.checks.push(check(
            "idle noise",
            false,
            format!(
                "the audio stopped before the quiet part ({} ms received)",
                received.len() / SAMPLES_PER_MS
            ),
        ));
    }
    out.passed = out.checks.iter().all(|c| c.passed);
    out
}

/// A loopback test in progress on one port.
#[derive(Debug, Clone)]
pub struct LoopbackRun {
    id: u64,
    started: Instant,
    deadline: Instant,
    signal: Vec<Pcm>,
    sent: usize,
    received: Vec<i16>,
    frames_received: usize,
}

impl LoopbackRun {
    /// A run numbered `id`, started (the loopback command sent) at `now`.
    pub fn new(id: u64, now: Instant) -> LoopbackRun {
        LoopbackRun {
            id,
            started: now,
            deadline: now + LOOPBACK_TEST_TIMEOUT,
            signal: test_signal(),
            sent: 0,
            received: Vec::new(),
            frames_received: 0,
        }
    }

    /// Its number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When it is judged with what arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The next frame to send (one per 20 ms); `None` once the signal is out.
    pub fn poll_frame(&mut self) -> Option<Pcm> {
        let f = self.signal.get(self.sent).copied();
        if f.is_some() {
            self.sent += 1;
        }
        f
    }

    /// The frames due by `now`: [`PRIME_FRAMES`] ahead, then one per 20 ms since the
    /// start, counted from the start (not from the last call), so a main loop that
    /// polls late sends what is due and the line controller's queue never drifts dry.
    pub fn poll_frames(&mut self, now: Instant) -> Vec<Pcm> {
        let elapsed = now.saturating_duration_since(self.started).as_millis() as usize;
        let due = (1 + PRIME_FRAMES + elapsed / 20).min(self.signal.len());
        (self.sent..due).map_while(|_| self.poll_frame()).collect()
    }

    /// A frame the port sent back; true when the run has all it waits for.
    pub fn on_audio(&mut self, pcm: &Pcm) -> bool {
        self.frames_received += 1;
        self.received.extend_from_slice(pcm);
        self.frames_received >= self.signal.len() + MAX_DELAY_FRAMES
    }

    /// The verdict now (at the end, or at the deadline with what arrived).
    pub fn finish(self, now_ms: i64) -> LoopbackResult {
        let j = judge(&self.received);
        let reason = j.checks.iter().find(|c| !c.passed).map_or_else(
            || "all checks passed".to_owned(),
            |c| format!("{}: {}", c.name, c.detail),
        );
        LoopbackResult {
            id: self.id,
            at_ms: now_ms,
            passed: j.passed,
            reason,
            checks: j.checks,
            level_tenth_dbm0: j.level_dbm0.map(tenths),
            delay_ms: j.delay_ms,
            sinad_tenth_db: j.sinad_db.map(tenths),
            idle_noise_tenth_dbm0: j.idle_noise_dbm0.map(tenths),
            frames_sent: self.sent,
            frames_received: self.frames_received,
        }
    }

    /// The run cut short (a call arrived, the port went off-hook, the daemon stops):
    /// failed with `why`, whatever arrived.
    pub fn abort(self, now_ms: i64, why: &str) -> LoopbackResult {
        let mut r = self.finish(now_ms);
        r.passed = false;
        r.reason = format!("aborted: {why}");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_proto::g711::Law;

    /// The signal through a G.711 codec (what a clean loop returns), delayed by
    /// `delay_frames` frames of silence, each sample scaled by `gain`, plus `noise`
    /// (peak of a deterministic pseudo-random noise), `frames` frames in all.
    fn looped(delay_frames: usize, gain: f64, noise: i16, frames: usize) -> Vec<i16> {
        let mut out = vec![0i16; delay_frames * AUDIO_FRAME_LEN];
        for f in test_signal() {
            let mut coded = [0u8; AUDIO_FRAME_LEN];
            Law::Ulaw.encode_block(&f, &mut coded);
            let mut back = [0i16; AUDIO_FRAME_LEN];
            Law::Ulaw.decode_block(&coded, &mut back);
            out.extend(back.iter().map(|&s| (f64::from(s) * gain).round() as i16));
        }
        out.resize(frames * AUDIO_FRAME_LEN, 0);
        let mut seed: u32 = 0x1234_5678;
        for s in &mut out {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let r = i32::from((seed >> 16) as u16 as i16) * i32::from(noise) / 32768;
            *s = (i32::from(*s) + r).clamp(-32768, 32767) as i16;
        }
        out
    }

    const ALL: usize = LEAD_FRAMES + TONE_FRAMES + QUIET_FRAMES + MAX_DELAY_FRAMES;

    #[test]
    fn the_signal_is_a_minus_10_dbm0_1004_hz_burst_between_silences() {
        let s = test_signal();
        assert_eq!(s.len(), LEAD_FRAMES + TONE_FRAMES + QUIET_FRAMES);
        let tone: Vec<i16> = s[LEAD_FRAMES..LEAD_FRAMES + TONE_FRAMES].concat();
        let level = level_dbm0(&tone).expect("level");
        assert!((level - TONE_DBM0).abs() < 0.05, "{level}");
        assert!(branchline_board::dsp::tone_ratio(&tone, TONE_HZ) > 0.99);
        assert!(s[..LEAD_FRAMES].iter().flatten().all(|&x| x == 0));
        assert!(s[LEAD_FRAMES + TONE_FRAMES..]
            .iter()
            .flatten()
            .all(|&x| x == 0));
    }

    #[test]
    fn a_clean_loop_passes_with_its_level_delay_and_sinad() {
        let j = judge(&looped(1, 1.0, 0, ALL));
        assert!(j.passed, "{:?}", j.checks);
        let level = j.level_dbm0.expect("level");
        assert!((level - TONE_DBM0).abs() < 0.3, "{level}");
        assert_eq!(j.delay_ms, Some(20));
        // µ-law's quantization noise at -10 dBm0: about 37 dB (G.712 asks 35).
        let sinad = j.sinad_db.expect("sinad");
        assert!((33.0..45.0).contains(&sinad), "{sinad}");
        assert_eq!(j.idle_noise_dbm0, None, "digital silence");
    }

    #[test]
    fn a_delayed_loop_passes_with_the_delay_measured() {
        let j = judge(&looped(7, 1.0, 0, ALL));
        assert!(j.passed, "{:?}", j.checks);
        assert_eq!(j.delay_ms, Some(140));
    }

    #[test]
    fn an_attenuated_loop_fails_on_level() {
        // -6 dB: a half.
        let j = judge(&looped(1, 0.5, 0, ALL));
        assert!(!j.passed);
        let failed: Vec<_> = j.checks.iter().filter(|c| !c.passed).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].name, "level");
        assert!(
            failed[0].detail.contains("off by -6.0 dB"),
            "{}",
            failed[0].detail
        );
        // -2 dB is inside the window.
        assert!(judge(&looped(1, 0.79, 0, ALL)).passed);
    }

    #[test]
    fn a_noisy_loop_fails_on_sinad_and_idle_noise() {
        // Noise of peak 800 (about -30 dBm0) under a -10 dBm0 tone: about 20 dB SINAD.
        let j = judge(&looped(1, 1.0, 800, ALL));
        assert!(!j.passed);
        let names: Vec<_> = j
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["signal to noise", "idle noise"], "{:?}", j.checks);
        // Faint noise (about -60 dBm0) passes.
        let j = judge(&looped(1, 1.0, 50, ALL));
        assert!(j.passed, "{:?}", j.checks);
        assert!(j.idle_noise_dbm0.expect("noise") < MAX_IDLE_NOISE_DBM0);
    }

    #[test]
    fn sinad_of_a_pure_tone_is_capped_and_of_a_tone_with_noise_matches_the_mix() {
        let mut sine = SineGenerator::new(TONE_HZ, 7000);
        let mut tone = vec![0i16; 4000];
        sine.fill(&mut tone);
        assert!(sinad_db(&tone, TONE_HZ).expect("sinad") > 60.0);
        // A second tone at a tenth of the amplitude: 20 dB below.
        let mut other = SineGenerator::new(1500.0, 700);
        let mut two = vec![0i16; 4000];
        other.fill(&mut two);
        for (t, o) in tone.iter_mut().zip(&two) {
            *t += *o;
        }
        let s = sinad_db(&tone, TONE_HZ).expect("sinad");
        assert!((19.5..20.5).contains(&s), "{s}");
        assert_eq!(sinad_db(&[0; 100], TONE_HZ), None);
    }

    #[test]
    fn a_lost_frame_or_two_pass_and_many_fail() {
        let lose = |frames: &[usize]| {
            let mut r = looped(1, 1.0, 0, ALL);
            for &k in frames {
                r[k * AUDIO_FRAME_LEN..(k + 1) * AUDIO_FRAME_LEN].fill(0);
            }
            judge(&r)
        };
        // Frames 10 and 20 (inside the tone, which comes back in frames 6..31).
        let j = lose(&[10, 20]);
        assert!(j.passed, "{:?}", j.checks);
        assert!(
            j.checks[3].detail.contains("2 of 23 tone frames lost"),
            "{:?}",
            j.checks
        );
        let j = lose(&[8, 10, 12, 14, 16, 18, 20]);
        assert!(!j.passed);
        assert!(
            j.checks[3].detail.contains("audio frames are lost"),
            "{:?}",
            j.checks
        );
    }

    #[test]
    fn silence_or_nothing_fails_as_no_audio_back() {
        for received in [vec![0i16; ALL * AUDIO_FRAME_LEN], Vec::new()] {
            let j = judge(&received);
            assert!(!j.passed);
            assert_eq!(j.checks.len(), 1);
            assert_eq!(j.checks[0].name, "audio back");
            assert!(j.checks[0].detail.contains("no audio came back"));
        }
        // Too late: past the longest round trip.
        let j = judge(&looped(MAX_DELAY_FRAMES + 3, 1.0, 0, ALL + 5));
        assert!(!j.passed);
        assert!(j.checks[0].detail.contains("no audio came back"));
    }

    #[test]
    fn loud_noise_before_the_tone_is_a_noisy_path_not_a_short_delay() {
        let j = judge(&looped(1, 1.0, 12_000, ALL));
        assert!(!j.passed);
        assert!(
            j.checks[0].detail.contains("before the test tone"),
            "{:?}",
            j.checks
        );
    }

    #[test]
    fn a_run_sends_the_signal_once_and_ends_when_all_is_back() {
        let now = Instant::now();
        let mut run = LoopbackRun::new(7, now);
        assert_eq!(run.deadline(), now + LOOPBACK_TEST_TIMEOUT);
        let mut sent = Vec::new();
        while let Some(f) = run.poll_frame() {
            sent.push(f);
        }
        assert_eq!(sent, test_signal());
        assert_eq!(run.poll_frame(), None);
        assert!(run.poll_frames(now + Duration::from_secs(9)).is_empty());
        let mut primed = LoopbackRun::new(9, now);
        assert_eq!(primed.poll_frames(now).len(), 1 + PRIME_FRAMES);
        assert!(primed
            .poll_frames(now + Duration::from_millis(19))
            .is_empty());
        assert_eq!(primed.poll_frames(now + Duration::from_millis(20)).len(), 1);
        // Polled late: what is due, counted from the start.
        assert_eq!(
            primed.poll_frames(now + Duration::from_millis(105)).len(),
            4
        );
        assert_eq!(
            primed.poll_frames(now + Duration::from_secs(9)).len(),
            55 - 11
        );
        // Back unchanged, one frame late.
        let mut done = run.on_audio(&[0; AUDIO_FRAME_LEN]);
        for f in &sent {
            assert!(!done);
            done = run.on_audio(f);
        }
        for _ in 0..MAX_DELAY_FRAMES - 1 {
            assert!(!done);
            done = run.on_audio(&[0; AUDIO_FRAME_LEN]);
        }
        assert!(done);
        let r = run.finish(1234);
        assert!(r.passed, "{r:?}");
        assert_eq!((r.id, r.at_ms, r.delay_ms), (7, 1234, Some(20)));
        assert_eq!(r.level_tenth_dbm0, Some(-100));
        assert_eq!(r.reason, "all checks passed");
        assert_eq!((r.frames_sent, r.frames_received), (55, 65));
        // Aborted: failed with why, whatever the audio.
        let r = LoopbackRun::new(8, now).abort(99, "a call arrived");
        assert!(!r.passed);
        assert_eq!(r.reason, "aborted: a call arrived");
    }
}
