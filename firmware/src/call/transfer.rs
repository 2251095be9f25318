//! Call transfer: SIP phones' REFER (RFC 3515) blind and attended, INVITE with
//! `Replaces` (RFC 3891), and analog phones' transfer on hang-up (flash, dial, hang up:
//! [`CallControl::transfer_on_hang_up`], attended or on ringing).
//!
//! The SIP endpoint accepts a REFER from a local phone, checks the phone may dial the
//! target (toll rules) and resolves a `Replaces` to one of the box's own legs; call
//! control then moves the parties:
//!
//! - **Blind** ([`TransferTarget::Number`]): the call the transferor is in ends (its
//!   CDR, answered, hung up by the transferor's side) and the transferee calls the
//!   target as a new call, through the normal dial plan: an FXS port, SIP phones, or an
//!   outside number over the trunk or an FXO line. The new call's CDR lists the old
//!   one (and the transferor's number) in its `transfer_chain`, after the old call's
//!   own chain, so a call transferred twice names both calls it went through. The transferor's leg stays until the outcome: the target
//!   answering gives it `200` ([`Output::SipTransferStatus`]), a failure the matching
//!   status (486, 480, 404, 503), and then the box ends the leg (the phone usually
//!   hangs up on its own first, which changes nothing). The transferee is not given
//!   back to the transferor when the target fails: it gets the failure like any caller.
//! - **Attended** ([`TransferTarget::Replaces`]): the transferor talks to X on one leg
//!   and to Y on another; both calls end (two CDRs) and X and Y are bridged as a new,
//!   already answered call whose `transfer_chain` ends with the call the REFER came in. Both
//!   legs of the transferor end and the REFER gets `200`.
//! - **INVITE with Replaces** for a dialog the box holds: the new leg takes the old
//!   leg's place (answered at once), the old leg is ended, and the call goes on as a
//!   new call whose `transfer_chain` ends with the replaced leg's call (transferred
//!   by the replaced leg's party).
//!
//! A transfer of a call that is not connected (still ringing, or the leg is an offer)
//! is refused with `481` and nothing changes; an unknown target with `404`.

use std::time::Instant;

use super::{
    Call, CallControl, CallKey, CallPhase, CdrTransferHop, Direction, Disposition, EndReason, Fxs,
    HangupSide, LegId, LegInfo, Output, Party, PortState, SipOrigin, TransferTarget,
};

/// The status a transfer reports when the call to the target failed.
pub(super) fn transfer_failure_status(disposition: Disposition) -> u16 {
    match disposition {
        Disposition::Answered => 200,
        Disposition::Busy => 486,
        Disposition::NoAnswer => 480,
        Disposition::Unallocated => 404,
        Disposition::Congestion => 503,
        Disposition::Abandoned => 487,
    }
}

/// What a party of a call brings to the call it is transferred into.
struct Moved {
    party: Party,
    number: String,
    name: String,
    sip_call_id: Option<String>,
    /// Outside the box (a PSTN line or the trunk).
    outside: bool,
}

impl CallControl {
    pub(super) fn transfer(&mut self, now: Instant, leg: LegId, target: TransferTarget) {
        match target {
            TransferTarget::Number(number) => self.blind_transfer(now, leg, number),
            TransferTarget::Replaces(other) => self.attended_transfer(now, leg, other),
        }
    }

    /// Reports a transfer's outcome to the transferor and ends its leg.
    pub(super) fn finish_transfer(&mut self, transferor: Option<LegId>, status: u16) {
        let Some(leg) = transferor else {
            return;
        };
        if self.legs.contains_key(&leg) {
            self.outputs
                .push_back(Output::SipTransferStatus { leg, status });
            self.hangup_leg(leg, EndReason::Normal);
        }
    }

    /// Refuses a transfer: the transferor keeps its call.
    fn refuse_transfer(&mut self, leg: LegId, status: u16) {
        tracing::info!(%leg, status, "transfer refused");
        self.outputs
            .push_back(Output::SipTransferStatus { leg, status });
    }

    /// The connected call `leg` is a party of, and its peer.
    fn connected_peer(&self, leg: LegId) -> Option<(CallKey, Party)> {
        let key = self.legs.get(&leg)?.call;
        let call = self.calls.get(&key)?;
        if call.phase != CallPhase::Connected {
            return None;
        }
        self.peer_of(key, Party::Sip(leg)).map(|p| (key, p))
    }

    /// The transfer chain of a call that continues `call` after the phone `by` (a SIP
    /// phone's leg or an analog port) transferred it: `call`'s own chain and then `call`
    /// itself.
    fn chain_after(&self, call: &Call, by: Party) -> Vec<CdrTransferHop> {
        let mut chain = call.transfer_chain.clone();
        chain.push(CdrTransferHop {
            call_id: call.id.clone(),
            transferred_by: self.party_number(by),
        });
        chain
    }

    /// What `party` of `call` takes into a new call.
    fn moved(&self, call: &Call, party: Party) -> Moved {
        let is_caller = call.caller == party;
        let number = if is_caller {
            call.caller_number.clone()
        } else {
            let n = self.party_number(party);
            if n.is_empty() {
                call.callee_number.clone()
            } else {
                n
            }
        };
        let name = if is_caller {
            call.caller_name.clone()
        } else {
            match party {
                Party::Fxs(p) => self.port_name(p),
                Party::Sip(_) => self
                    .settings
                    .sip_extensions
                    .iter()
                    .find(|e| e.number == number)
                    .map(|e| e.name.clone())
                    .unwrap_or_default(),
                Party::Fxo(_) => String::new(),
            }
        };
        let sip_call_id = match party {
            Party::Sip(l) => self.legs.get(&l).map(|i| i.sip_call_id.clone()),
            _ => None,
        };
        let outside = match call.direction {
            Direction::Inbound => is_caller,
            Direction::Outbound => !is_caller,
            Direction::Internal => false,
        };
        Moved {
            party,
            number,
            name,
            sip_call_id,
            outside,
        }
    }

    /// Takes connected call `key` apart because `by` (a party of it) transferred it:
    /// its bridge goes and its CDR is written; no party is released.
    fn detach(&mut self, now: Instant, key: CallKey, by: Party) -> Option<Call> {
        let call = self.calls.remove(&key)?;
        if let Some(callee) = call.callee {
            self.disconnect(call.caller, callee);
        }
        let side = if call.caller == by {
            HangupSide::Caller
        } else {
            HangupSide::Callee
        };
        self.emit_cdr(now, &call, Disposition::Answered, side);
        // Transferred away: the agent of a queue call is done with it.
        self.queue_call_gone(now, key, call.queue.as_ref());
        Some(call)
    }

    /// Makes `party` belong to call `key` (port state, leg, line).
    fn adopt(&mut self, party: Party, key: CallKey, caller: bool) {
        match party {
            Party::Fxs(p) => {
                let state = if caller {
                    Fxs::Caller(key)
                } else {
                    Fxs::Callee(key)
                };
                self.set_fxs(p, state);
            }
            Party::Sip(l) => {
                if let Some(info) = self.legs.get_mut(&l) {
                    info.call = key;
                }
                self.leg_moved(l);
            }
            Party::Fxo(line) => {
                if let Some(f) = self.fxo.get_mut(&line) {
                    f.call = Some(key);
                }
            }
        }
    }

    fn blind_transfer(&mut self, now: Instant, leg: LegId, number: String) {
        let Some((key, peer)) = self.connected_peer(leg) else {
            return self.refuse_transfer(leg, 481);
        };
        let outside = self
            .outside_number(&number)
            .map(|n| n.trim_end_matches('#').to_string())
            .filter(|n| !n.is_empty());
        let extension = self.is_extension(&number);
        if !extension && outside.is_none() {
            return self.refuse_transfer(leg, 404);
        }
        let Some(old) = self.detach(now, key, Party::Sip(leg)) else {
            return;
        };
        let x = self.moved(&old, peer);
        tracing::info!(%leg, call = old.id, transferee = x.number, target = number, "blind transfer");
        let direction = match (x.outside, outside.is_some()) {
            (_, true) => Direction::Outbound,
            (true, false) => Direction::Inbound,
            (false, false) => Direction::Internal,
        };
        let call = Call {
            caller_sip_call_id: x.sip_call_id,
            transfer_chain: self.chain_after(&old, Party::Sip(leg)),
            transferor: Some(leg),
            caller_connected: true,
            ..Call::new(
                direction,
                x.party,
                x.number,
                x.name,
                outside.clone().unwrap_or(number),
                now,
            )
        };
        if outside.is_some() {
            self.call_outside(now, call);
        } else {
            self.call_extension(now, call);
        }
    }

    fn attended_transfer(&mut self, now: Instant, leg: LegId, other: LegId) {
        let (Some((k1, x)), Some((k2, y))) = (self.connected_peer(leg), self.connected_peer(other))
        else {
            return self.refuse_transfer(leg, 481);
        };
        if k1 == k2 {
            return self.refuse_transfer(leg, 481);
        }
        let (Some(c1), Some(c2)) = (
            self.detach(now, k1, Party::Sip(leg)),
            self.detach(now, k2, Party::Sip(other)),
        ) else {
            return;
        };
        let (a, b) = (self.moved(&c1, x), self.moved(&c2, y));
        tracing::info!(%leg, %other, x = a.number, y = b.number, "attended transfer");
        let chain = self.chain_after(&c1, Party::Sip(leg));
        self.bridge_moved(now, a, b, chain);
        self.finish_transfer(Some(leg), 200);
        self.hangup_leg(other, EndReason::Normal);
    }

    /// An INVITE with `Replaces` naming leg `old`: the new leg takes its place.
    pub(super) fn incoming_replaces(
        &mut self,
        now: Instant,
        leg: LegId,
        origin: SipOrigin,
        (caller_number, caller_name): (String, String),
        sip_call_id: String,
        old: LegId,
    ) {
        if self.legs.contains_key(&leg) {
            tracing::warn!(%leg, "incoming SIP leg with an id already in use ignored");
            return;
        }
        let connected = self.connected_peer(old);
        let (Some((key, peer)), false, false) = (connected, self.shut_down, leg.is_outgoing())
        else {
            tracing::info!(%leg, %old, "INVITE with Replaces for a call that is not connected");
            self.outputs.push_back(Output::SipHangup {
                leg,
                reason: EndReason::Forbidden,
            });
            return;
        };
        let (number, name, outside) = match &origin {
            SipOrigin::Extension(ext) => {
                let name = if caller_name.is_empty() {
                    self.settings
                        .sip_extensions
                        .iter()
                        .find(|e| &e.number == ext)
                        .map(|e| e.name.clone())
                        .unwrap_or_default()
                } else {
                    caller_name
                };
                (ext.clone(), name, false)
            }
            SipOrigin::Trunk => (caller_number, caller_name, true),
        };
        self.legs.insert(
            leg,
            LegInfo {
                call: key,
                number: number.clone(),
                sip_call_id: sip_call_id.clone(),
                far_held: false,
                phone: !outside,
            },
        );
        let Some(c) = self.detach(now, key, Party::Sip(old)) else {
            return;
        };
        let z = self.moved(&c, peer);
        tracing::info!(%leg, %old, call = c.id, "leg replaced (INVITE with Replaces)");
        self.outputs.push_back(Output::SipAnswer { leg });
        let newcomer = Moved {
            party: Party::Sip(leg),
            number,
            name,
            sip_call_id: Some(sip_call_id),
            outside,
        };
        let chain = self.chain_after(&c, Party::Sip(old));
        self.bridge_moved(now, newcomer, z, chain);
        self.hangup_leg(old, EndReason::Normal);
    }

    /// A new call, answered now, between two parties that were talking before.
    fn bridge_moved(
        &mut self,
        now: Instant,
        a: Moved,
        b: Moved,
        transfer_chain: Vec<CdrTransferHop>,
    ) {
        let direction = match (a.outside, b.outside) {
            (false, false) => Direction::Internal,
            (true, false) => Direction::Inbound,
            (_, true) => Direction::Outbound,
        };
        let key = self.new_call(Call {
            callee: Some(b.party),
            phase: CallPhase::Connected,
            answered: Some(now),
            caller_alerted: true,
            caller_sip_call_id: a.sip_call_id,
            callee_sip_call_id: b.sip_call_id,
            transfer_chain,
            caller_connected: true,
            ..Call::new(direction, a.party, a.number, a.name, b.number, now)
        });
        self.adopt(a.party, key, true);
        self.adopt(b.party, key, false);
        let held =
            |p: Party| matches!(p, Party::Sip(l) if self.legs.get(&l).is_some_and(|i| i.far_held));
        let (a_held, b_held) = (held(a.party), held(b.party));
        if !a_held && !b_held {
            self.connect(a.party, b.party);
        }
        // A party still holding its leg holds the new call from its start.
        for (p, on) in [(a.party, a_held), (b.party, b_held)] {
            if on {
                self.hold_clock(now, key, p, true);
            }
        }
        for p in [a.party, b.party] {
            if let Party::Fxo(line) = p {
                self.port_state(line, PortState::Talking);
            }
        }
        self.desk_transferred(now, key);
    }

    /// The analog phone on `port` hangs up while consulting: it had put call `held` on
    /// hold and dialled call `consult`. Its held party goes to the consultation's party
    /// instead of ringing the phone back:
    ///
    /// - `consult` answered (attended transfer): both calls end (two CDRs, answered,
    ///   hung up by the phone) and the two far parties are bridged as a new, answered
    ///   call whose `transfer_chain` ends with the held call;
    /// - `consult` still ringing (transfer on ringing): the held call ends (its CDR) and
    ///   the held party takes the phone's place in `consult`, which goes on ringing the
    ///   same target; when it is answered the two talk, when it fails the held party
    ///   gets the failure like any caller.
    ///
    /// Returns false (nothing done: the phone is rung back as before) when the calls
    /// are not a consultation's, e.g. the held call's far party left meanwhile.
    pub(super) fn transfer_on_hang_up(
        &mut self,
        now: Instant,
        port: u8,
        consult: CallKey,
        held: CallKey,
    ) -> bool {
        let by = Party::Fxs(port);
        if consult == held || self.call_phase(held) != Some(CallPhase::Connected) {
            return false;
        }
        let Some(x) = self.peer_of(held, by) else {
            return false;
        };
        match self.call_phase(consult) {
            Some(CallPhase::Connected) => {
                let Some(y) = self.peer_of(consult, by) else {
                    return false;
                };
                let (Some(c1), Some(c2)) =
                    (self.detach(now, held, by), self.detach(now, consult, by))
                else {
                    return false;
                };
                let (a, b) = (self.moved(&c1, x), self.moved(&c2, y));
                tracing::info!(port, x = a.number, y = b.number, "analog attended transfer");
                let chain = self.chain_after(&c1, by);
                self.bridge_moved(now, a, b, chain);
                true
            }
            Some(CallPhase::Alerting)
                if self.calls.get(&consult).is_some_and(|c| c.caller == by) =>
            {
                let Some(c1) = self.detach(now, held, by) else {
                    return false;
                };
                let a = self.moved(&c1, x);
                let chain = self.chain_after(&c1, by);
                let Some(call) = self.calls.get_mut(&consult) else {
                    return true;
                };
                tracing::info!(
                    port,
                    x = a.number,
                    target = call.callee_number,
                    "analog transfer on ringing"
                );
                let early_media = call.early_media;
                call.caller = a.party;
                call.caller_number = a.number;
                call.caller_name = a.name;
                call.caller_sip_call_id = a.sip_call_id;
                call.transfer_chain = chain;
                call.caller_connected = true;
                call.caller_alerted = true;
                if call.direction != Direction::Outbound {
                    call.direction = if a.outside {
                        Direction::Inbound
                    } else {
                        Direction::Internal
                    };
                }
                self.cmd(port, line_proto::Command::StopTone);
                if let Some(leg) = early_media {
                    self.disconnect(by, Party::Sip(leg));
                }
                self.adopt(a.party, consult, true);
                if let Some(leg) = early_media {
                    self.connect(a.party, Party::Sip(leg));
                }
                if let Party::Fxs(p) = a.party {
                    if early_media.is_none() {
                        self.tone(p, crate::tones::Tone::Ringback);
                    }
                }
                self.desk_transferred(now, consult);
                true
            }
            _ => false,
        }
    }
}
