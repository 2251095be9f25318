//! Exponential backoff with full jitter, seeded.
//!
//! After the `n`th consecutive failure (n from 1) the wait is uniform in
//! `[0, min(cap, base * 2^(n-1))]` ("full jitter"): boxes that lost HQ at the same
//! moment spread their retries instead of arriving together when it returns.
//! [`Backoff::at_cap`] is the wait after a failure that retrying soon cannot fix (HQ
//! refused the batch): uniform in `[cap/2, cap]`.
//!
//! The random numbers come from a SplitMix64 generator written here rather than from
//! `rand`: its output for a seed is the same on every platform (rand's `SmallRng`
//! differs between 32- and 64-bit targets, and the box runs on armv7 and aarch64), so a
//! test's virtual-clock schedule is the schedule on the box.

use std::time::{Duration, Instant};

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest wait.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    /// 1 s, doubling up to 5 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

/// A deterministic 64-bit generator (SplitMix64), the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..=max` (negligible modulo bias: `max` is far below 2^64).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }
}

/// Consecutive-failure counter that turns failures into waits.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff with no failures yet, drawing its jitter from `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The settings.
    pub fn config(&self) -> BackoffConfig {
        self.config
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The largest wait after the next failure: `min(cap, base * 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.config
            .base
            .checked_mul(factor)
            .map_or(self.config.cap, |d| d.min(self.config.cap))
    }

    /// Records a failure at `now`; returns when to try again.
    pub fn fail(&mut self, now: Instant) -> Instant {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        now + self.jitter(Duration::ZERO, ceiling)
    }

    /// Records a failure that retrying soon cannot fix; returns when to try again, in
    /// `[cap/2, cap]` from `now`.
    pub fn at_cap(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let cap = self.config.cap;
        now + self.jitter(cap / 2, cap)
    }

    /// Records a success: the next failure waits at most `base` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    fn jitter(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low);
        let micros = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
        low + Duration::from_micros(self.rng.up_to(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }

    #[test]
    fn waits_stay_under_a_doubling_ceiling_up_to_the_cap() {
        let now = Instant::now();
        let mut backoff = Backoff::new(config(), 1);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = backoff.ceiling();
            ceilings.push(ceiling.as_millis());
            let wait = backoff.fail(now) - now;
            assert!(wait <= ceiling, "{wait:?} > {ceiling:?}");
        }
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000, 60000]
        );
        backoff.succeed();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let now = Instant::now();
        let mut backoff = Backoff::new(config(), 42);
        let cap = config().cap;
        let waits: Vec<Duration> = (0..2000)
            .map(|_| {
                backoff.failures = 20;
                backoff.fail(now) - now
            })
            .collect();
        assert!(waits.iter().all(|w| *w <= cap));
        // Full jitter: some waits in the lowest and in the highest tenth.
        assert!(waits.iter().any(|w| *w < cap / 10));
        assert!(waits.iter().any(|w| *w > cap * 9 / 10));
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let now = Instant::now();
        let schedule = |seed| {
            let mut b = Backoff::new(config(), seed);
            (0..8).map(|_| b.fail(now)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
    }

    #[test]
    fn at_cap_waits_between_half_the_cap_and_the_cap() {
        let now = Instant::now();
        let mut backoff = Backoff::new(config(), 3);
        for _ in 0..200 {
            let wait = backoff.at_cap(now) - now;
            assert!(wait >= config().cap / 2 && wait <= config().cap, "{wait:?}");
        }
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let now = Instant::now();
        let mut backoff = Backoff::new(
            BackoffConfig {
                base: Duration::from_secs(u64::MAX / 4),
                cap: Duration::from_secs(1 << 40),
            },
            1,
        );
        for _ in 0..70 {
            assert!(backoff.fail(now) - now <= Duration::from_secs(1 << 40));
        }
    }
}
