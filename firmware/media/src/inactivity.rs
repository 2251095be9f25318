//! Media inactivity timer: notices a SIP leg whose far end vanished (no BYE, no RTP).
//!
//! One [`InactivityTimer`] per leg measures the time since the last valid RTP or RTCP
//! packet the leg received. While it is armed ([`InactivityTimer::arm`]: the call is
//! up), a silence longer than the active timeout (`[media] rtp_timeout_s`, default
//! [`DEFAULT_RTP_TIMEOUT`]) expires it; while the leg is on hold (the far end sent
//! `a=sendonly` or `a=inactive`: little or no RTP is expected) the longer hold timeout
//! applies (`rtp_hold_timeout_s`, default [`DEFAULT_RTP_HOLD_TIMEOUT`]). A timeout of
//! zero disables the check in that state. The clock starts again whenever the timer is
//! armed or its state changes, so a call answered after a long ring, or a leg resumed
//! after hold, gets a whole timeout before it can expire.
//!
//! Sans-IO: every input carries `now`; [`InactivityTimer::timeout`] says when the next
//! check is due and [`InactivityTimer::poll`] reports the expiry exactly once (the
//! timer is disarmed then). The media engine drives it from its 20 ms tick.

use std::time::{Duration, Instant};

/// Default silence after which an active leg is ended (`[media] rtp_timeout_s`).
pub const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default silence after which a held leg is ended (`[media] rtp_hold_timeout_s`).
pub const DEFAULT_RTP_HOLD_TIMEOUT: Duration = Duration::from_secs(600);

/// The two timeouts; [`Duration::ZERO`] disables the check in that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InactivityConfig {
    /// Silence allowed while the leg is active.
    pub active: Duration,
    /// Silence allowed while the leg is on hold.
    pub held: Duration,
}

impl Default for InactivityConfig {
    fn default() -> Self {
        InactivityConfig {
            active: DEFAULT_RTP_TIMEOUT,
            held: DEFAULT_RTP_HOLD_TIMEOUT,
        }
    }
}

/// What the leg's signalling says about the media to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Not checked: the call is not up yet (ringing, early media, queued) or is ending.
    Off,
    /// The call is up: RTP is expected all the time.
    Active,
    /// The far end holds the call (`sendonly` / `inactive`): the hold timeout applies.
    Held,
}

/// The inactivity timer of one leg. See the module docs.
#[derive(Debug, Clone)]
pub struct InactivityTimer {
    config: InactivityConfig,
    watch: Watch,
    /// Last valid packet, or when the watch last changed, whichever is later.
    last: Option<Instant>,
}

impl InactivityTimer {
    /// A timer that is off until [`InactivityTimer::arm`].
    pub fn new(config: InactivityConfig) -> InactivityTimer {
        InactivityTimer {
            config,
            watch: Watch::Off,
            last: None,
        }
    }

    /// The current watch state.
    pub fn watch(&self) -> Watch {
        self.watch
    }

    /// Sets the watch state at `now`. A change restarts the silence count; setting the
    /// same state again changes nothing.
    pub fn arm(&mut self, now: Instant, watch: Watch) {
        if watch == self.watch {
            return;
        }
        self.watch = watch;
        self.last = Some(now);
    }

    /// A valid RTP or RTCP packet arrived at `now`.
    pub fn on_packet(&mut self, now: Instant) {
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
    }

    /// The silence allowed in the current state, if checked at all.
    pub fn limit(&self) -> Option<Duration> {
        let limit = match self.watch {
            Watch::Off => return None,
            Watch::Active => self.config.active,
            Watch::Held => self.config.held,
        };
        (!limit.is_zero()).then_some(limit)
    }

    /// When the timer expires if no packet comes first; `None` while it is off or
    /// disabled.
    pub fn timeout(&self) -> Option<Instant> {
        Some(self.last? + self.limit()?)
    }

    /// Whether the timer expired at `now`: `Some(silence)` once (then it is off until
    /// armed again), `None` otherwise.
    pub fn poll(&mut self, now: Instant) -> Option<Duration> {
        let deadline = self.timeout()?;
        if now < deadline {
            return None;
        }
        let silence = now.saturating_duration_since(self.last?);
        self.watch = Watch::Off;
        Some(silence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(active: u64, held: u64) -> InactivityConfig {
        InactivityConfig {
            active: Duration::from_secs(active),
            held: Duration::from_secs(held),
        }
    }

    /// Advances a virtual clock in 20 ms ticks (the engine's) until the timer fires or
    /// `limit` passes; a packet arrives every `packet_every` ticks when given.
    fn run(
        t: &mut InactivityTimer,
        start: Instant,
        limit: Duration,
        packet_every: Option<u32>,
    ) -> Option<Instant> {
        let tick = Duration::from_millis(20);
        let mut now = start;
        let mut n = 0u32;
        while now < start + limit {
            now += tick;
            n += 1;
            if packet_every.is_some_and(|k| n % k == 0) {
                t.on_packet(now);
            }
            if t.poll(now).is_some() {
                return Some(now);
            }
        }
        None
    }

    #[test]
    fn a_silent_active_leg_times_out_after_the_timeout() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(3, 30));
        t.arm(t0, Watch::Active);
        t.on_packet(t0 + SECOND);
        assert_eq!(t.timeout(), Some(t0 + 4 * SECOND));
        assert_eq!(t.poll(t0 + 4 * SECOND - Duration::from_millis(1)), None);
        assert_eq!(t.poll(t0 + 4 * SECOND), Some(3 * SECOND));
        // Once: the timer is off after firing.
        assert_eq!(t.watch(), Watch::Off);
        assert_eq!(t.poll(t0 + 100 * SECOND), None);
        assert_eq!(t.timeout(), None);
    }

    #[test]
    fn flowing_packets_keep_it_from_expiring() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(3, 30));
        t.arm(t0, Watch::Active);
        // A packet every 20 ms for ten minutes: never fires.
        assert_eq!(run(&mut t, t0, 600 * SECOND, Some(1)), None);
        // Even a packet every 2.9 s (long gaps, comfort noise) keeps it up.
        let t1 = t0 + 600 * SECOND;
        assert_eq!(run(&mut t, t1, 600 * SECOND, Some(145)), None);
        // Then the far end vanishes: it fires 3 s after the last packet.
        let t2 = t1 + 600 * SECOND;
        let last = t.timeout().expect("armed") - 3 * SECOND;
        let fired = run(&mut t, t2, 60 * SECOND, None).expect("fires");
        assert_eq!(fired.saturating_duration_since(last), 3 * SECOND);
    }

    #[test]
    fn hold_uses_the_longer_timeout_and_resume_restarts_the_count() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(3, 30));
        t.arm(t0, Watch::Active);
        t.arm(t0 + SECOND, Watch::Held);
        // Silent on hold for 29 s: still up.
        assert_eq!(run(&mut t, t0 + SECOND, 29 * SECOND, None), None);
        // Resumed at 30 s: a whole active timeout from then.
        t.arm(t0 + 30 * SECOND, Watch::Active);
        assert_eq!(t.timeout(), Some(t0 + 33 * SECOND));
        assert_eq!(t.poll(t0 + 32 * SECOND), None);
        // Held again and silent: fires 30 s after the hold began.
        t.arm(t0 + 32 * SECOND, Watch::Held);
        let fired = run(&mut t, t0 + 32 * SECOND, 60 * SECOND, None).expect("fires");
        assert_eq!(fired, t0 + 62 * SECOND);
    }

    #[test]
    fn zero_disables_the_check_in_that_state() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(0, 30));
        t.arm(t0, Watch::Active);
        assert_eq!(t.limit(), None);
        assert_eq!(t.timeout(), None);
        assert_eq!(run(&mut t, t0, 3600 * SECOND, None), None);
        // The hold timeout still applies on hold.
        t.arm(t0 + 3600 * SECOND, Watch::Held);
        assert_eq!(t.timeout(), Some(t0 + 3630 * SECOND));

        let mut held_off = InactivityTimer::new(config(3, 0));
        held_off.arm(t0, Watch::Held);
        assert_eq!(run(&mut held_off, t0, 3600 * SECOND, None), None);
    }

    #[test]
    fn an_unarmed_leg_never_expires() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(3, 30));
        // Ringing, queued with early media: no RTP from the caller, no timeout.
        assert_eq!(run(&mut t, t0, 600 * SECOND, None), None);
        // Arming after a long silence gives a whole timeout from the arming.
        t.arm(t0 + 600 * SECOND, Watch::Active);
        assert_eq!(t.poll(t0 + 602 * SECOND), None);
        assert_eq!(t.poll(t0 + 603 * SECOND), Some(3 * SECOND));
        // Arming the same state twice does not restart the count.
        let mut u = InactivityTimer::new(config(3, 30));
        u.arm(t0, Watch::Active);
        u.arm(t0 + 2 * SECOND, Watch::Active);
        assert_eq!(u.timeout(), Some(t0 + 3 * SECOND));
    }

    #[test]
    fn a_packet_older_than_the_last_does_not_move_the_clock_back() {
        let t0 = Instant::now();
        let mut t = InactivityTimer::new(config(3, 30));
        t.arm(t0 + 2 * SECOND, Watch::Active);
        // Stamped before the arming (queued in the socket reader meanwhile).
        t.on_packet(t0 + SECOND);
        assert_eq!(t.timeout(), Some(t0 + 5 * SECOND));
    }
}
