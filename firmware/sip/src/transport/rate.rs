//! Per-source token buckets, checked for every datagram and every framed message
//! before anything parses it.
//!
//! Sources are keyed by IP address; IPv6 sources by their /64 prefix, since one
//! subscriber usually holds a whole /64 and could otherwise rotate addresses to get a
//! fresh bucket for every packet. The table is bounded ([`RateConfig::max_sources`]):
//! buckets that have refilled completely are swept out at most once a second, and
//! while the table is still full, new sources share one overflow bucket, so a flood
//! from spoofed addresses costs bounded memory and cannot starve known sources.
//!
//! Pure: the caller passes `now`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Rate limit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Sustained messages per second per source.
    pub messages_per_second: u32,
    /// Bucket size: messages a source may send in a burst after being quiet.
    pub burst: u32,
    /// Most sources tracked individually.
    pub max_sources: usize,
}

impl Default for RateConfig {
    /// 200 messages/s, burst 400, 4096 sources: far above what a phone sends, far
    /// below what a flood sends. A busy trunk can exceed it (100 calls/s is about 700
    /// messages/s): exempt the trunk's servers with [`RateLimiter::set_exempt`].
    fn default() -> Self {
        Self {
            messages_per_second: 200,
            burst: 400,
            max_sources: 4096,
        }
    }
}

/// Why a [`RateConfig`] is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateConfigError {
    /// `messages_per_second` is 0.
    #[error("rate limit: messages_per_second must be at least 1")]
    ZeroRate,
    /// `burst` is 0.
    #[error("rate limit: burst must be at least 1")]
    ZeroBurst,
    /// `max_sources` is 0.
    #[error("rate limit: max_sources must be at least 1")]
    ZeroSources,
}

impl RateConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), RateConfigError> {
        if self.messages_per_second == 0 {
            return Err(RateConfigError::ZeroRate);
        }
        if self.burst == 0 {
            return Err(RateConfigError::ZeroBurst);
        }
        if self.max_sources == 0 {
            return Err(RateConfigError::ZeroSources);
        }
        Ok(())
    }
}

/// One token, in the fixed-point units buckets count in (integer arithmetic keeps
/// refills exact: a token per `1 / rate` seconds, to the nanosecond).
const TOKEN: u128 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens times [`TOKEN`].
    tokens: u128,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: u128, now: Instant) -> Self {
        Self {
            tokens: capacity,
            updated: now,
        }
    }

    /// Adds `rate` tokens per elapsed second, up to `capacity` (both in [`TOKEN`]s
    /// per token: `rate` is messages per second).
    fn refill(&mut self, rate: u128, capacity: u128, now: Instant) {
        // A clock that went backwards adds nothing and does not move `updated` back.
        if now > self.updated {
            let elapsed = now.duration_since(self.updated).as_nanos();
            self.tokens = self
                .tokens
                .saturating_add(elapsed.saturating_mul(rate))
                .min(capacity);
            self.updated = now;
        }
    }

    fn take(&mut self) -> bool {
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// The per-source limiter.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateConfig,
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
    last_sweep: Option<Instant>,
    exempt: HashSet<IpAddr>,
}

/// How often full buckets are swept out of the table at most.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The key a source is counted under: the IPv4 address, or the /64 of an IPv6 one.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

impl RateLimiter {
    /// A limiter; the config must have passed [`RateConfig::validate`] (a zero rate or
    /// burst drops everything).
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
            overflow: None,
            last_sweep: None,
            exempt: HashSet::new(),
        }
    }

    /// Replaces the set of addresses that are never limited (the trunk's servers,
    /// once resolved). Exact addresses, not prefixes.
    pub fn set_exempt(&mut self, addresses: impl IntoIterator<Item = IpAddr>) {
        self.exempt = addresses.into_iter().map(|ip| ip.to_canonical()).collect();
    }

    /// Number of sources tracked individually.
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }

    /// Takes one message from `source`'s bucket: `true` to let it through, `false` to
    /// drop it.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.exempt.is_empty() && self.exempt.contains(&source.to_canonical()) {
            return true;
        }
        let rate = u128::from(self.config.messages_per_second);
        let capacity = u128::from(self.config.burst) * TOKEN;
        let key = source_key(source);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            bucket.refill(rate, capacity, now);
            return bucket.take();
        }
        if self.buckets.len() >= self.config.max_sources {
            self.sweep(now);
        }
        if self.buckets.len() < self.config.max_sources {
            let mut bucket = Bucket::full(capacity, now);
            let allowed = bucket.take();
            self.buckets.insert(key, bucket);
            return allowed;
        }
        let overflow = self
            .overflow
            .get_or_insert_with(|| Bucket::full(capacity, now));
        overflow.refill(rate, capacity, now);
        overflow.take()
    }

    /// Drops buckets that have refilled completely (their sources have been quiet long
    /// enough that forgetting them changes nothing), at most once per
    /// [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let rate = u128::from(self.config.messages_per_second);
        let capacity = u128::from(self.config.burst) * TOKEN;
        self.buckets.retain(|_, bucket| {
            bucket.refill(rate, capacity, now);
            bucket.tokens < capacity
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, burst: u32, max_sources: usize) -> RateConfig {
        RateConfig {
            messages_per_second: rate,
            burst,
            max_sources,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(config(10, 5, 16));
        let a = ip("192.0.2.1");
        let passed = (0..20).filter(|_| limiter.check(a, start)).count();
        assert_eq!(passed, 5, "only the burst passes at one instant");
        // 10/s: 100 ms buys one message.
        assert!(!limiter.check(a, start + Duration::from_millis(50)));
        assert!(limiter.check(a, start + Duration::from_millis(150)));
        assert!(!limiter.check(a, start + Duration::from_millis(150)));
        // Over one second at a steady 20/s, about 10 pass.
        let mut passed = 0;
        for i in 1..=20 {
            if limiter.check(a, start + Duration::from_millis(150 + 50 * i)) {
                passed += 1;
            }
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn sources_are_independent() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(config(1, 2, 16));
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert!(limiter.check(a, now));
        assert!(limiter.check(a, now));
        assert!(!limiter.check(a, now));
        assert!(limiter.check(b, now), "a flood from a leaves b alone");
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(config(1, 1, 16));
        assert!(limiter.check(ip("2001:db8:1:2::1"), now));
        assert!(!limiter.check(ip("2001:db8:1:2:ffff::9"), now), "same /64");
        assert!(limiter.check(ip("2001:db8:1:3::1"), now), "other /64");
        assert!(limiter.check(ip("192.0.2.1"), now));
        assert!(
            !limiter.check(ip("::ffff:192.0.2.1"), now),
            "mapped is the same source"
        );
    }

    #[test]
    fn table_is_bounded_and_overflow_sources_share_a_bucket() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(config(1, 2, 3));
        for i in 1..=3 {
            // Each source spends one token, so none is sweepable.
            assert!(limiter.check(ip(&format!("192.0.2.{i}")), now));
        }
        assert_eq!(limiter.tracked_sources(), 3);
        // A spoofed flood from many more sources: they share two tokens.
        let passed = (10..200)
            .filter(|i| limiter.check(ip(&format!("198.51.{}.{}", i / 250, i % 250)), now))
            .count();
        assert_eq!(passed, 2);
        assert_eq!(limiter.tracked_sources(), 3);
        // Known sources keep their own buckets.
        assert!(limiter.check(ip("192.0.2.1"), now));
        // Once the known sources have been quiet long enough, the sweep frees room.
        let later = now + Duration::from_secs(5);
        assert!(limiter.check(ip("203.0.113.1"), later));
        assert_eq!(limiter.tracked_sources(), 1);
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let now = Instant::now() + Duration::from_secs(10);
        let mut limiter = RateLimiter::new(config(1, 1, 4));
        let a = ip("192.0.2.1");
        assert!(limiter.check(a, now));
        assert!(!limiter.check(a, now - Duration::from_secs(5)));
        assert!(!limiter.check(a, now));
        assert!(limiter.check(a, now + Duration::from_secs(1)));
    }

    #[test]
    fn exempt_addresses_are_never_limited() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(config(1, 1, 4));
        limiter.set_exempt([ip("198.51.100.10")]);
        assert!((0..1000).all(|_| limiter.check(ip("198.51.100.10"), now)));
        assert!((0..10).all(|_| limiter.check(ip("::ffff:198.51.100.10"), now)));
        // Only that address: its neighbours are limited as usual.
        assert!(limiter.check(ip("198.51.100.11"), now));
        assert!(!limiter.check(ip("198.51.100.11"), now));
        limiter.set_exempt([]);
        assert!(limiter.check(ip("198.51.100.10"), now));
        assert!(!limiter.check(ip("198.51.100.10"), now));
    }

    #[test]
    fn validation_rejects_zeroes() {
        assert_eq!(config(0, 1, 1).validate(), Err(RateConfigError::ZeroRate));
        assert_eq!(config(1, 0, 1).validate(), Err(RateConfigError::ZeroBurst));
        assert_eq!(
            config(1, 1, 0).validate(),
            Err(RateConfigError::ZeroSources)
        );
        assert_eq!(RateConfig::default().validate(), Ok(()));
    }
}
