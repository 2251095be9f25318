//! The echo test's delay line: what a caller says comes back to them a fixed time later.
//!
//! A phone that dials the echo test code (see `branchline_firmware::call::echo`) hears
//! its own voice [`ECHO_DELAY`] late: long enough to be heard apart from the sidetone
//! (the ear tells speech delayed by 0.5 s from speech as it is spoken), short enough to
//! judge the path both ways, including what the line, the codec and the jitter buffer do
//! to it. The media engine captures the caller's audio into the line ([`DelayLine::push`],
//! one 20 ms frame as it arrives) and plays it back from it ([`DelayLine::fill`], one
//! frame per tick).
//!
//! Capture and playback run on different clocks (the board's frames or a jitter buffer's
//! pops against the engine's tick), so the line keeps the delay rather than a sample
//! count: it starts *priming* (silence out) until it holds the delay, plays from then
//! on, and primes again after running dry (the caller's audio stopped coming, e.g. a
//! stalled line link): the delay stays the delay instead of shrinking to nothing after
//! the first gap. It never holds more than the delay plus [`SLACK`]: the oldest audio is
//! dropped when capture runs ahead, so memory is bounded whatever the clocks do.
//!
//! Sans-IO and allocation-free after construction (a ring of fixed capacity).

use std::collections::VecDeque;
use std::time::Duration;

/// The delay of the echo test.
pub const ECHO_DELAY: Duration = Duration::from_millis(500);

/// How much audio beyond the delay the line holds before it drops the oldest.
pub const SLACK: Duration = Duration::from_millis(200);

/// Samples per second (G.711, narrowband).
const RATE: usize = 8000;

/// A fixed delay for linear 8 kHz PCM. See the module docs.
#[derive(Debug, Clone)]
pub struct DelayLine {
    buf: VecDeque<i16>,
    delay: usize,
    cap: usize,
    priming: bool,
    dropped: u64,
    underruns: u64,
}

impl DelayLine {
    /// A line that gives back what it is fed `delay` later (rounded to whole samples).
    pub fn new(delay: Duration) -> DelayLine {
        let delay = samples(delay);
        let cap = delay + samples(SLACK);
        DelayLine {
            buf: VecDeque::with_capacity(cap),
            delay,
            cap,
            priming: true,
            dropped: 0,
            underruns: 0,
        }
    }

    /// Feeds audio in as it arrives. When more than the delay plus [`SLACK`] would be
    /// held, the oldest samples are dropped (counted in [`DelayLine::dropped`]).
    pub fn push(&mut self, pcm: &[i16]) {
        let pcm = &pcm[pcm.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + pcm.len()).saturating_sub(self.cap);
        if over > 0 {
            self.buf.drain(..over);
            self.dropped += over as u64;
        }
        self.buf.extend(pcm.iter().copied());
    }

    /// Fills `out` with the audio fed the delay ago; silence while priming. Running
    /// dry in the middle of `out` fills the rest with silence and primes again.
    pub fn fill(&mut self, out: &mut [i16]) {
        if self.priming {
            if self.buf.len() < self.delay {
                out.fill(0);
                return;
            }
            self.priming = false;
        }
        let n = self.buf.len().min(out.len());
        for (o, s) in out.iter_mut().zip(self.buf.drain(..n)) {
            *o = s;
        }
        if n < out.len() {
            out[n..].fill(0);
            self.priming = true;
            self.underruns += 1;
        }
    }

    /// Samples dropped because capture ran ahead of playback.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Times playback ran dry and the line primed again.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }
}

fn samples(d: Duration) -> usize {
    (d.as_micros() as usize * RATE).div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    /// A frame whose samples all carry `n` (so a frame's age can be read back).
    fn frame(n: i16) -> [i16; FRAME] {
        [n; FRAME]
    }

    #[test]
    fn audio_comes_back_the_delay_later_and_silence_before() {
        let mut line = DelayLine::new(ECHO_DELAY);
        let delay_frames = 25; // 500 ms of 20 ms frames
        let mut out = [7i16; FRAME];
        for i in 1..=100i16 {
            line.push(&frame(i));
            line.fill(&mut out);
            if (i as usize) < delay_frames {
                assert_eq!(out, [0; FRAME], "frame {i}: still priming");
            } else {
                // The frame fed 24 ticks earlier, pushed before this tick's fill.
                let expected = i - delay_frames as i16 + 1;
                assert_eq!(out, frame(expected), "frame {i}");
            }
        }
        assert_eq!((line.dropped(), line.underruns()), (0, 0));
    }

    #[test]
    fn a_gap_in_the_audio_primes_again_so_the_delay_is_kept() {
        let mut line = DelayLine::new(Duration::from_millis(100)); // 5 frames
        let mut out = [0i16; FRAME];
        for i in 1..=10 {
            line.push(&frame(i));
            line.fill(&mut out);
        }
        assert_eq!(out, frame(6));
        // The caller's audio stops: what is held plays out, then silence.
        for expected in 7..=10 {
            line.fill(&mut out);
            assert_eq!(out, frame(expected));
        }
        line.fill(&mut out);
        assert_eq!(out, [0; FRAME]);
        assert_eq!(line.underruns(), 1);
        // It comes back: silence again until the delay is held, then the same delay.
        for i in 11..=14 {
            line.push(&frame(i));
            line.fill(&mut out);
            assert_eq!(out, [0; FRAME], "frame {i} while priming again");
        }
        line.push(&frame(15));
        line.fill(&mut out);
        assert_eq!(out, frame(11));
    }

    #[test]
    fn capture_running_ahead_drops_the_oldest_and_stays_bounded() {
        let mut line = DelayLine::new(ECHO_DELAY);
        let cap = samples(ECHO_DELAY + SLACK);
        for i in 0..1000 {
            line.push(&frame(i));
        }
        assert_eq!(line.buf.len(), cap);
        assert_eq!(line.dropped(), (1000 * FRAME - cap) as u64);
        // The newest audio is what is held: it plays from the oldest kept frame on.
        let mut out = [0i16; FRAME];
        line.fill(&mut out);
        assert_eq!(out, frame(1000 - (cap / FRAME) as i16));
        // One push larger than the whole line keeps only its tail.
        let big: Vec<i16> = (0..(cap as i32 * 2)).map(|i| i as i16).collect();
        line.push(&big);
        assert_eq!(line.buf.len(), cap);
        assert_eq!(line.buf.back(), big.last());
    }

    #[test]
    fn odd_sized_fills_and_pushes_keep_sample_order() {
        let mut line = DelayLine::new(Duration::from_millis(1)); // 8 samples
        let input: Vec<i16> = (1..=200).collect();
        let mut got = Vec::new();
        for chunk in input.chunks(7) {
            line.push(chunk);
            let mut out = [0i16; 5];
            line.fill(&mut out);
            got.extend(out.iter().copied().filter(|&s| s != 0));
        }
        let mut rest = [0i16; 64];
        line.fill(&mut rest);
        got.extend(rest.iter().copied().filter(|&s| s != 0));
        assert_eq!(got, input, "every sample once, in order");
    }

    #[test]
    fn the_delay_rounds_to_whole_samples() {
        assert_eq!(samples(ECHO_DELAY), 4000);
        assert_eq!(samples(Duration::from_micros(125)), 1);
        assert_eq!(samples(Duration::from_micros(126)), 2);
        assert_eq!(samples(Duration::ZERO), 0);
    }
}
