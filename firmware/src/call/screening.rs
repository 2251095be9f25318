//! Caller screening in call control: inbound calls from outside (the SIP trunk, PSTN
//! rings on FXO lines) are checked against the [`Blacklist`] before anyone rings.
//! Local phones (FXS ports, local SIP accounts) are never screened.
//!
//! - A blocked trunk call is refused at once with the entry's action (486, 503 or
//!   403, see [`crate::blacklist`]); its CDR is written then.
//! - A blocked PSTN call is not answered: nobody rings, the line is not seized, and the
//!   call ends (with its CDR) when the caller gives up and the ringing stops.
//! - While screening is on (any entry, or allow mode), a PSTN ring without caller ID
//!   waits for the next burst before anyone rings: the caller ID arrives between the
//!   first and second ring on most lines. A second burst still without one screens
//!   the caller as anonymous.
//!
//! Each block with an entry emits [`Output::BlacklistHit`] (the daemon counts it in
//! the store); the CDR carries a `blocked` part and the disposition `busy` or
//! `congestion` ([`disposition`]).

use std::time::Instant;

use line_proto::CallerId;

use super::{Call, CallControl, CallKey, Disposition, EndReason, HangupSide, Output, Party};
use crate::blacklist::{Blacklist, BlockAction, Caller, Mode, Verdict};
use crate::cdr::{CdrBlocked, CdrBlockedAction, CdrBlockedMode};

/// The CDR disposition of a call blocked with `action`.
pub(super) fn disposition(action: Option<CdrBlockedAction>) -> Disposition {
    match action {
        Some(CdrBlockedAction::Busy) => Disposition::Busy,
        _ => Disposition::Congestion,
    }
}

fn cdr_action(action: BlockAction) -> CdrBlockedAction {
    match action {
        BlockAction::Busy => CdrBlockedAction::Busy,
        BlockAction::Congestion => CdrBlockedAction::Congestion,
        BlockAction::Reject => CdrBlockedAction::Reject,
    }
}

/// What a SIP caller is told.
fn end_reason(action: BlockAction) -> EndReason {
    match action {
        BlockAction::Busy => EndReason::Busy,
        BlockAction::Congestion => EndReason::Congestion,
        BlockAction::Reject => EndReason::Forbidden,
    }
}

impl CallControl {
    /// Replaces the screening list (the daemon loads it from the store at start and
    /// whenever it changes). Calls in progress are not screened again.
    pub fn set_blacklist(&mut self, list: Blacklist) {
        self.blacklist = list;
    }

    /// The screening list in force.
    pub fn blacklist(&self) -> &Blacklist {
        &self.blacklist
    }

    /// Whether screening can block anyone at all.
    pub(super) fn screening_on(&self) -> bool {
        !self.blacklist.is_empty() || self.blacklist.settings().mode == Mode::Allow
    }

    /// Screens a trunk caller: the call back when it passes; a blocked one is over.
    pub(super) fn screen_trunk(&mut self, now: Instant, call: Call) -> Option<Call> {
        let verdict = self.blacklist.screen(Caller::from_sip(&call.caller_number));
        if verdict == Verdict::Pass {
            return Some(call);
        }
        let key = self.new_call(call);
        self.block(now, key, verdict);
        None
    }

    /// Screens PSTN caller `caller_id` of call `key` on FXO `port`: blocked, or its
    /// line's extensions (or queue) ring.
    pub(super) fn screen_pstn(
        &mut self,
        now: Instant,
        key: CallKey,
        port: u8,
        caller_id: Option<&CallerId>,
    ) {
        let verdict = self.blacklist.screen(Caller::from_caller_id(caller_id));
        if !self.block(now, key, verdict) {
            self.ring_pstn_targets(now, key, port);
        }
    }

    /// Carries out `verdict` on call `key`: true when it blocked the call.
    fn block(&mut self, now: Instant, key: CallKey, verdict: Verdict) -> bool {
        let Verdict::Block {
            action,
            pattern,
            mode,
        } = verdict
        else {
            return false;
        };
        let at_ms = self.wall(now);
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        call.blocked = Some(CdrBlocked {
            mode: match mode {
                Mode::Deny => CdrBlockedMode::Deny,
                Mode::Allow => CdrBlockedMode::Allow,
            },
            action: cdr_action(action),
            pattern: pattern.clone(),
        });
        tracing::info!(
            call = call.id,
            mode = mode.as_str(),
            pattern = pattern.as_deref().unwrap_or("(not on the allowlist)"),
            action = action.as_str(),
            "inbound call blocked by caller screening"
        );
        let caller = call.caller;
        if let Some(pattern) = pattern {
            self.outputs
                .push_back(Output::BlacklistHit { pattern, at_ms });
        }
        if let Party::Sip(leg) = caller {
            if let Some(call) = self.calls.remove(&key) {
                self.hangup_leg(leg, end_reason(action));
                self.emit_cdr(
                    now,
                    &call,
                    disposition(Some(cdr_action(action))),
                    HangupSide::System,
                );
            }
        }
        // A PSTN caller is left ringing, unanswered, until it gives up.
        true
    }
}
