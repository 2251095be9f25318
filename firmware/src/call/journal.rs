//! The journal of live calls: what lets a CDR survive a power cut in the middle of
//! its call (issue 6: "kill -9 during a recorded call leaves ... a CDR marked
//! interrupted after restart").
//!
//! A CDR is written when its call ends, so a box that loses power mid-call would lose
//! the record of every call that was up. Call control therefore keeps the store told
//! of its live calls through [`Output::Journal`], in the same ordered output queue as
//! the CDRs themselves (so a call's journal row is always written before its CDR,
//! whose transaction deletes it):
//!
//! - when a call is answered, its row is added at once ([`JournalUpdate::Upsert`]):
//!   the answered calls are the ones worth a record (and the ones being recorded);
//! - every [`JOURNAL_REFRESH`] while anything is live, the whole journal is rewritten
//!   ([`JournalUpdate::Replace`]): every call up (answered or ringing) with the CDR it
//!   would get if the box stopped then, and the CDRs that wait for their legs' quality
//!   reports (as they stand, `ended`); rows of calls that ended meanwhile go;
//! - one last replace after the last call ended empties the journal (rows whose CDR
//!   could not be stored do not linger).
//!
//! At the next start the store turns each row into the call's CDR
//! ([`crate::store::Store::recover_live_calls`]): a call that was up ends at the
//! journal's last refresh (so at most [`JOURNAL_REFRESH`] early), ended by the box
//! (`hangup_side` `system`), marked `interrupted`; an ended call's CDR is stored as it
//! stood. Each row is stored once: the CDR's transaction deletes the row.
//!
//! The cost is one small write per answered call and one per refresh while calls are
//! up (never while the box is idle). The refresh period bounds how early an
//! interrupted call's recorded end may be; five seconds keeps a busy box's flash
//! writes low. Calls in meet-me rooms (whose records are per visit) are not
//! journaled.

use std::time::{Duration, Instant};

use crate::cdr::{Disposition, HangupSide, JournalUpdate, LiveCall};

use super::{CallControl, Output};

/// How often the whole journal is rewritten while calls are live.
pub const JOURNAL_REFRESH: Duration = Duration::from_secs(5);

/// Call control's side of the journal: when it is next rewritten. Which calls have a
/// row is kept on each call and pending CDR (their `journaled` flag), so that the
/// check after every event costs a flag test per live call, not a search.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// The next full rewrite, while there is anything to rewrite.
    refresh_at: Option<Instant>,
}

impl CallControl {
    /// When [`CallControl::update_journal`] must next run for the journal's refresh
    /// (`None` while nothing is live and the journal is empty).
    pub fn journal_deadline(&self) -> Option<Instant> {
        self.journal.refresh_at
    }

    /// Brings the journal of live calls up to date after the events handled so far
    /// (the daemon calls it after every event and at [`Self::journal_deadline`]):
    /// queues an [`Output::Journal`] when a call was answered since, or when the
    /// refresh is due.
    pub fn update_journal(&mut self, now: Instant) {
        let live = !self.calls.is_empty() || !self.pending_cdrs.is_empty();
        if self.journal.refresh_at.is_some_and(|at| now >= at) {
            let calls = self.live_calls(now, |_, _| true);
            self.mark_journaled(|_| true);
            self.journal.refresh_at = (live || !calls.is_empty()).then(|| now + JOURNAL_REFRESH);
            self.outputs
                .push_back(Output::Journal(JournalUpdate::Replace(calls)));
            return;
        }
        let new = self.live_calls(now, |answered, journaled| answered && !journaled);
        if !new.is_empty() {
            self.mark_journaled(|answered| answered);
            self.outputs
                .push_back(Output::Journal(JournalUpdate::Upsert(new)));
        }
        if self.journal.refresh_at.is_none() && live {
            self.journal.refresh_at = Some(now + JOURNAL_REFRESH);
        }
    }

    /// Marks the live calls and pending CDRs `which` picks (by whether they were
    /// answered) as having a journal row.
    fn mark_journaled(&mut self, which: impl Fn(bool) -> bool) {
        for call in self.calls.values_mut() {
            if which(call.answered.is_some()) {
                call.journaled = true;
            }
        }
        for p in &mut self.pending_cdrs {
            if which(p.cdr.answered_at_ms.is_some()) {
                p.journaled = true;
            }
        }
    }

    /// The live calls `want` picks (by whether it was answered and whether it has a
    /// journal row), and the CDRs waiting for quality reports it picks likewise.
    fn live_calls(&self, now: Instant, want: impl Fn(bool, bool) -> bool) -> Vec<LiveCall> {
        let mut out = Vec::new();
        for call in self.calls.values() {
            let answered = call.answered.is_some();
            if !want(answered, call.journaled) {
                continue;
            }
            let disposition = if answered {
                Disposition::Answered
            } else {
                Disposition::NoAnswer
            };
            let mut cdr = self.cdr_of(now, call, disposition, HangupSide::System);
            cdr.interrupted = true;
            out.push(LiveCall {
                cdr,
                ended: false,
                recordings: Vec::new(),
            });
        }
        for p in &self.pending_cdrs {
            if want(p.cdr.answered_at_ms.is_some(), p.journaled) {
                out.push(LiveCall {
                    cdr: p.cdr.clone(),
                    ended: true,
                    recordings: Vec::new(),
                });
            }
        }
        out
    }
}
