//! Hold time of a call, for its CDR (issue 6 item 10: CDRs carry hold time).
//!
//! A call is on hold while at least one of its parties holds it: an analog phone that
//! put it on hold by hook-flash (to answer a waiting call, to swap, or to consult), or
//! a SIP party whose re-INVITE holds its leg (`sendonly` / `inactive`). Two parties
//! holding at once count once. [`HoldClock`] adds up those intervals; call control
//! tells it when each party starts and stops holding, and the CDR takes
//! [`HoldClock::total`] at the call's end (a call that ends on hold counts until then).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::Party;

/// The time a call spent on hold (see the module docs).
#[derive(Debug, Clone, Default)]
pub(super) struct HoldClock {
    /// The parties holding the call right now.
    holders: BTreeSet<Party>,
    /// Since when the call is on hold (some party holds it).
    since: Option<Instant>,
    /// The closed hold intervals so far.
    total: Duration,
}

impl HoldClock {
    /// `party` holds the call from `now` (again: no change).
    pub(super) fn start(&mut self, party: Party, now: Instant) {
        if self.holders.insert(party) && self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// `party` no longer holds the call from `now` (not holding: no change).
    pub(super) fn stop(&mut self, party: Party, now: Instant) {
        if self.holders.remove(&party) && self.holders.is_empty() {
            if let Some(since) = self.since.take() {
                self.total += now.saturating_duration_since(since);
            }
        }
    }

    /// Whether `party` holds the call.
    #[cfg(test)]
    fn holds(&self, party: Party) -> bool {
        self.holders.contains(&party)
    }

    /// Hold time up to `now` (the call's end, for the CDR).
    pub(super) fn total(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::sip::LegId;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn intervals_add_up_and_overlaps_count_once() {
        let t0 = Instant::now();
        let mut h = HoldClock::default();
        assert_eq!(h.total(t0 + secs(5)), Duration::ZERO);
        h.start(Party::Fxs(1), t0 + secs(10));
        h.start(Party::Fxs(1), t0 + secs(12)); // again: still from 10
        assert!(h.holds(Party::Fxs(1)));
        h.stop(Party::Fxs(1), t0 + secs(15));
        assert!(!h.holds(Party::Fxs(1)));
        assert_eq!(h.total(t0 + secs(100)), secs(5));
        // Both parties hold, overlapping: 20..30 and 25..40 count as 20..40.
        let leg = Party::Sip(LegId(7));
        h.start(Party::Fxs(1), t0 + secs(20));
        h.start(leg, t0 + secs(25));
        h.stop(Party::Fxs(1), t0 + secs(30));
        assert_eq!(
            h.total(t0 + secs(35)),
            secs(5 + 15),
            "still held by the leg"
        );
        h.stop(leg, t0 + secs(40));
        assert_eq!(h.total(t0 + secs(100)), secs(25));
        // Stopping a party that does not hold changes nothing.
        h.stop(leg, t0 + secs(50));
        assert_eq!(h.total(t0 + secs(100)), secs(25));
    }

    #[test]
    fn a_call_ending_on_hold_counts_until_its_end() {
        let t0 = Instant::now();
        let mut h = HoldClock::default();
        h.start(Party::Fxs(2), t0 + secs(3));
        assert_eq!(h.total(t0 + secs(10)), secs(7));
        // A clock going backwards (not monotonic input) never underflows.
        assert_eq!(h.total(t0), Duration::ZERO);
    }
}
