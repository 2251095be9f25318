//! The SIP side of call control: what [`SipInput`]s do to calls, and outgoing legs.
//!
//! Legs are parties like ports (see the parent module docs). An incoming leg is the
//! caller of a new call routed by its `dialled` number; outgoing legs are offers of a
//! call to a SIP extension (forked by the endpoint to every registered contact) or to
//! the trunk. An offer that ends before answer is withdrawn from the call; when no
//! offer is left, the call fails with what the last one said (busy, no answer,
//! unallocated, congestion), except that a trunk leg failing with congestion sends an
//! outside call on to its next route (FXO). Inputs for legs call control does not know
//! (already ended, never seen) are ignored, except a late answer on an outgoing leg,
//! which is hung up again.

use std::time::Instant;

use line_proto::Command;

use super::{
    Call, CallControl, CallKey, CallPhase, Direction, Disposition, EndReason, Fxs, HangupSide,
    LegId, LegInfo, Output, Party, SipInput, SipOrigin, SipTarget,
};

impl CallControl {
    /// Handles one input from the SIP endpoint.
    pub fn handle_sip(&mut self, now: Instant, input: SipInput) {
        match input {
            SipInput::Incoming {
                leg,
                origin,
                caller_number,
                caller_name,
                dialled,
                sip_call_id,
                replaces,
            } => match replaces {
                Some(old) => self.incoming_replaces(
                    now,
                    leg,
                    origin,
                    (caller_number, caller_name),
                    sip_call_id,
                    old,
                ),
                None => self.incoming(
                    now,
                    leg,
                    origin,
                    (caller_number, caller_name),
                    dialled,
                    sip_call_id,
                ),
            },
            SipInput::Ringing { leg } => self.leg_ringing(leg),
            SipInput::EarlyMedia { leg } => self.leg_early_media(leg),
            SipInput::Answered { leg } => self.leg_answered(now, leg),
            SipInput::Ended { leg, reason } => self.leg_ended(now, leg, reason),
            SipInput::Digit { leg, digit } => self.leg_digit(now, leg, digit),
            SipInput::Hold { leg, held } => self.leg_hold(now, leg, held),
            SipInput::Transfer { leg, target } => self.transfer(now, leg, target),
            SipInput::Media { leg } => {
                if self.legs.contains_key(&leg) {
                    self.media_legs.insert(leg);
                }
            }
            SipInput::Quality { leg, quality } => self.leg_quality(leg, quality),
            SipInput::MediaTimeout { leg } => {
                self.leg_system_end(now, leg, super::HangupCause::MediaTimeout)
            }
            SipInput::SessionExpired { leg } => {
                self.leg_system_end(now, leg, super::HangupCause::SessionExpired)
            }
        }
    }

    /// The box ends `leg` for `cause`: the media engine heard nothing from it for its
    /// inactivity timeout, or its session timer expired (its far end vanished without
    /// a BYE). The leg gets a BYE and everything else happens as if it had hung up
    /// (the other party is released, queues and features clean up), except that the
    /// call's CDR says the box ended it: `hangup_side` `system`, `hangup_cause`
    /// `media_timeout` or `session_expired`. A leg call control no longer knows is
    /// still ended, so that the endpoint does not keep a dead dialog.
    fn leg_system_end(&mut self, now: Instant, leg: LegId, cause: super::HangupCause) {
        let key = self.legs.get(&leg).map(|l| l.call);
        tracing::warn!(%leg, call = ?key.and_then(|k| self.calls.get(&k)).map(|c| &c.id), cause = cause.as_str(), "ending the call");
        if let Some(call) = key.and_then(|k| self.calls.get_mut(&k)) {
            call.hangup_cause = Some(cause);
        }
        self.outputs.push_back(Output::SipHangup {
            leg,
            reason: EndReason::Normal,
        });
        self.leg_ended(now, leg, EndReason::Normal);
    }

    /// SIP legs call control is tracking (incoming and outgoing).
    pub fn active_legs(&self) -> usize {
        self.legs.len()
    }

    fn incoming(
        &mut self,
        now: Instant,
        leg: LegId,
        origin: SipOrigin,
        (caller_number, caller_name): (String, String),
        dialled: String,
        sip_call_id: String,
    ) {
        if self.legs.contains_key(&leg) {
            tracing::warn!(%leg, "incoming SIP leg with an id already in use ignored");
            return;
        }
        if self.shut_down || leg.is_outgoing() {
            // An incoming leg with an outgoing id would collide with ours.
            self.outputs.push_back(Output::SipHangup {
                leg,
                reason: EndReason::Congestion,
            });
            return;
        }
        if let SipOrigin::Extension(ext) = &origin {
            if self.sip_feature_code(now, leg, ext, &dialled)
                || self.sip_pickup(now, leg, ext, &dialled, &sip_call_id)
            {
                return;
            }
        }
        let (direction, number, name) = match &origin {
            // A local phone is known by the extension it authenticated as, whatever its
            // From header says.
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
                (Direction::Internal, ext.clone(), name)
            }
            SipOrigin::Trunk => {
                let name = self.outside_caller_name(&caller_number, caller_name);
                (Direction::Inbound, caller_number, name)
            }
        };
        self.legs.insert(
            leg,
            LegInfo {
                call: 0, // set by new_call
                number: number.clone(),
                sip_call_id: sip_call_id.clone(),
                far_held: false,
                phone: matches!(origin, SipOrigin::Extension(_)),
            },
        );
        let call = Call {
            caller_sip_call_id: Some(sip_call_id),
            ..Call::new(
                direction,
                Party::Sip(leg),
                number,
                name,
                dialled.clone(),
                now,
            )
        };
        // Outside callers are screened before anything rings (see `screening`).
        let mut call = match origin {
            SipOrigin::Trunk => match self.screen_trunk(now, call) {
                Some(call) => call,
                None => return,
            },
            SipOrigin::Extension(_) if self.is_echo_code(&dialled) => {
                return self.sip_echo_test(now, call);
            }
            SipOrigin::Extension(ref ext) => match self.sip_voicemail_code(now, call, ext) {
                Some(call) => call,
                None => return,
            },
        };
        // A meet-me room (a local phone, or a trunk caller past screening whose DID maps
        // to the room): the leg is the meet-me flow's, with no call or CDR.
        if let Some(room) = self.meetme_room(&dialled) {
            self.legs.remove(&leg);
            return self.sip_meetme_dialled(now, leg, room, call);
        }
        if self.is_extension(&dialled) {
            return self.call_extension(now, call);
        }
        let outside = self
            .outside_number(&dialled)
            .map(|n| n.trim_end_matches('#').to_string())
            .filter(|n| !n.is_empty());
        match (&origin, outside) {
            // Only local phones may call out (no trunk-to-trunk tromboning).
            (SipOrigin::Extension(_), Some(number)) => {
                call.direction = Direction::Outbound;
                call.callee_number = number;
                self.call_outside(now, call);
            }
            _ => {
                tracing::info!(%leg, dialled, "SIP call to an unallocated number");
                let key = self.new_call(call);
                self.fail_call(now, key, Disposition::Unallocated, HangupSide::System);
            }
        }
    }

    /// Offers call `key` to a SIP target on a new outgoing leg standing for `number`.
    pub(super) fn offer_sip(
        &mut self,
        now: Instant,
        key: CallKey,
        target: SipTarget,
        number: String,
    ) -> Option<LegId> {
        let ring_timeout = self.settings.ring_timeout;
        let n = self.next_leg;
        let leg = LegId(LegId::OUTGOING | n);
        let call = self.calls.get_mut(&key)?;
        self.next_leg += 1;
        let sip_call_id = format!("{}-{}@{}", call.id, n, self.settings.sip_host);
        call.ringing_legs.push(leg);
        call.callee_sip_call_id = Some(sip_call_id.clone());
        // Local phones ring for the ring timeout; the trunk (like an FXO line) is left
        // to the far end and the caller.
        if matches!(target, SipTarget::Extension(_)) && call.last_ring.is_none() {
            call.deadline = Some(now + ring_timeout);
        }
        let (caller_number, caller_name) = (call.caller_number.clone(), call.caller_name.clone());
        self.legs.insert(
            leg,
            LegInfo {
                call: key,
                phone: matches!(target, SipTarget::Extension(_)),
                number,
                sip_call_id: sip_call_id.clone(),
                far_held: false,
            },
        );
        let phone = matches!(target, SipTarget::Extension(_));
        self.outputs.push_back(Output::SipDial {
            leg,
            target,
            caller_number,
            caller_name,
            sip_call_id,
        });
        if phone {
            self.desk_offer(now, key, Party::Sip(leg));
        }
        Some(leg)
    }

    /// The call and whether `leg` is one of its unanswered offers.
    fn leg_call(&self, leg: LegId) -> Option<(CallKey, &Call)> {
        let key = self.legs.get(&leg)?.call;
        self.calls.get(&key).map(|c| (key, c))
    }

    fn leg_ringing(&mut self, leg: LegId) {
        let Some((key, call)) = self.leg_call(leg) else {
            tracing::debug!(%leg, "ringing on an unknown leg ignored");
            return;
        };
        if call.phase == CallPhase::Alerting && call.ringing_legs.contains(&leg) {
            self.caller_hears_ringback(key);
        }
    }

    /// An offered leg has early media (183 with SDP): the caller hears it instead of
    /// ringback (a phone's tone stops; a SIP caller gets 183 with SDP), bridged until
    /// the answer, which keeps the bridge (no gap). The first such leg wins; a PSTN
    /// caller keeps hearing its line ring (it is not answered before an extension is).
    fn leg_early_media(&mut self, leg: LegId) {
        let Some((key, call)) = self.leg_call(leg) else {
            tracing::debug!(%leg, "early media on an unknown leg ignored");
            return;
        };
        if call.phase != CallPhase::Alerting
            || !call.ringing_legs.contains(&leg)
            || call.early_media.is_some()
            || call.queue.is_some()
        {
            return;
        }
        let (caller, connected) = (call.caller, call.caller_connected);
        match caller {
            Party::Fxo(_) => return,
            Party::Fxs(port) => self.cmd(port, Command::StopTone),
            Party::Sip(c) if !connected => self.outputs.push_back(Output::SipRinging {
                leg: c,
                early_media: true,
            }),
            Party::Sip(_) => {}
        }
        if let Some(call) = self.calls.get_mut(&key) {
            call.early_media = Some(leg);
            call.caller_alerted = true;
        }
        tracing::info!(%leg, "early media to the caller");
        if !matches!(caller, Party::Sip(c) if self.legs.get(&c).is_some_and(|i| i.far_held)) {
            self.connect(caller, Party::Sip(leg));
        }
    }

    fn leg_answered(&mut self, now: Instant, leg: LegId) {
        if let Some(click) = self.sip_clicks.remove(&leg) {
            return self.click_sip_answered(now, leg, click);
        }
        if self.is_lead_leg(leg) {
            return self.lead_answered(now, leg);
        }
        let Some((key, call)) = self.leg_call(leg) else {
            if leg.is_outgoing() {
                // Answered after call control gave up on it (the caller hung up, or
                // another device answered first): end it again.
                tracing::debug!(%leg, "late answer on a withdrawn leg: hanging up");
                self.outputs.push_back(Output::SipHangup {
                    leg,
                    reason: EndReason::Normal,
                });
            }
            return;
        };
        if call.phase != CallPhase::Connected && call.ringing_legs.contains(&leg) {
            self.answer(now, key, Party::Sip(leg));
        } else {
            tracing::debug!(%leg, "answer on a leg that is not offering a call ignored");
        }
    }

    fn leg_ended(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        if self.sip_feature_leg_ended(leg)
            || self.sip_supervisor_ended(leg)
            || self.sip_meetme_ended(now, leg)
        {
            return;
        }
        // The agent's phone is free only once its leg is gone (see `with_acd_deferred`).
        self.with_acd_deferred(now, |cc| cc.leg_ended_inner(now, leg, reason));
        self.forget_leg_media(leg);
    }

    fn leg_ended_inner(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        if let Some(click) = self.sip_clicks.remove(&leg) {
            self.click_sip_failed(now, leg, click, Some(reason));
            self.legs.remove(&leg);
            return;
        }
        if self.is_lead_leg(leg) {
            return self.lead_leg_ended(now, leg, reason);
        }
        let Some((key, call)) = self.leg_call(leg) else {
            tracing::debug!(%leg, ?reason, "end of an unknown leg ignored");
            self.legs.remove(&leg);
            return;
        };
        let me = Party::Sip(leg);
        if call.caller == me || call.callee == Some(me) {
            let side = if call.caller == me {
                HangupSide::Caller
            } else {
                HangupSide::Callee
            };
            self.legs.remove(&leg);
            self.end_call(now, key, Some(me), side, EndReason::Normal);
            return;
        }
        if !call.ringing_legs.contains(&leg) {
            self.legs.remove(&leg);
            return;
        }
        self.legs.remove(&leg);
        if self.queue_offer_failed(now, key, me) {
            return; // the ACD decides what the caller gets next
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.ringing_legs.retain(|&l| l != leg);
        if call.early_media == Some(leg) {
            // Its early media ends with it; whoever still rings gives ringback again.
            call.early_media = None;
            let caller = call.caller;
            let others_ring = !call.ringing.is_empty() || !call.ringing_legs.is_empty();
            self.disconnect(caller, Party::Sip(leg));
            if others_ring {
                if let Party::Fxs(port) = caller {
                    self.tone(port, crate::tones::Tone::Ringback);
                }
            }
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if !call.ringing.is_empty() || !call.ringing_legs.is_empty() {
            return; // other devices still ring
        }
        if call.last_ring.is_some() {
            // A PSTN caller keeps ringing until it gives up (nobody free to answer).
            tracing::info!(%leg, ?reason, "PSTN call: the SIP extension did not take it");
            return;
        }
        if reason == EndReason::Congestion && call.outside.is_some() {
            tracing::info!(%leg, "trunk call failed with congestion: next route");
            self.next_route(now, key, true);
            return;
        }
        let (disposition, side) = match reason {
            EndReason::Busy => (Disposition::Busy, HangupSide::Callee),
            EndReason::NoAnswer | EndReason::Normal => (Disposition::NoAnswer, HangupSide::Callee),
            EndReason::Unallocated => (Disposition::Unallocated, HangupSide::System),
            EndReason::Congestion | EndReason::Forbidden => {
                (Disposition::Congestion, HangupSide::System)
            }
        };
        let trigger = match disposition {
            Disposition::Busy => Some(super::voicemail::Trigger::Busy),
            Disposition::NoAnswer => Some(super::voicemail::Trigger::NoAnswer),
            _ => None,
        };
        if let Some(mailbox) = trigger.and_then(|t| self.deposit_target(key, t)) {
            if self.start_deposit(now, key, &mailbox, disposition) {
                return;
            }
        }
        self.fail_call(now, key, disposition, side);
    }

    /// A digit from a SIP leg: dialled on an FXO line the leg talks to (post-dial
    /// DTMF for IVRs); other peers get the RFC 4733 events from the media engine.
    fn leg_digit(&mut self, now: Instant, leg: LegId, digit: char) {
        if self.is_supervisor(Party::Sip(leg)) {
            return self.supervisor_digit(Party::Sip(leg), digit);
        }
        if self.is_meetme_attendee(Party::Sip(leg)) {
            return self.meetme_digit(now, Party::Sip(leg), digit);
        }
        if let Some(key) = self.survey_of(Party::Sip(leg)) {
            return self.survey_digit(now, key, digit);
        }
        if let Some(key) = self.vm_session_of(Party::Sip(leg)) {
            return self.vm_digit(now, key, digit);
        }
        if self.echo_test_of(Party::Sip(leg)).is_some() {
            return tracing::debug!(%leg, "key ignored in the echo test");
        }
        let Some((key, call)) = self.leg_call(leg) else {
            return;
        };
        if call.phase == CallPhase::Alerting {
            return;
        }
        if let Some(Party::Fxo(line)) = self.peer_of(key, Party::Sip(leg)) {
            let mut buf = [0u8; 4];
            match Command::fxo_dial(digit.encode_utf8(&mut buf)) {
                Some(cmd) => self.cmd(line, cmd),
                None => tracing::debug!(%leg, %digit, "digit cannot be dialled on a line"),
            }
        }
    }

    /// The far end holds or resumes `leg`: its media is unbridged or bridged again;
    /// the call goes on, and the CDR counts the time on hold.
    fn leg_hold(&mut self, now: Instant, leg: LegId, held: bool) {
        let Some(info) = self.legs.get_mut(&leg) else {
            return;
        };
        if info.far_held == held {
            return;
        }
        info.far_held = held;
        let key = info.call;
        if self
            .call_phase(key)
            .is_none_or(|p| p == CallPhase::Alerting)
        {
            return;
        }
        self.hold_clock(now, key, Party::Sip(leg), held);
        let Some(peer) = self.peer_of(key, Party::Sip(leg)) else {
            return;
        };
        if held {
            self.disconnect(Party::Sip(leg), peer);
        } else if self.party_active(peer, key) {
            self.connect(Party::Sip(leg), peer);
        }
    }

    /// Whether `party` takes part in `key` right now (not holding it).
    fn party_active(&self, party: Party, key: CallKey) -> bool {
        match party {
            Party::Fxs(p) => matches!(
                self.fxs.get(&p).map(|x| &x.state),
                Some(Fxs::Caller(k) | Fxs::Callee(k)) if *k == key
            ),
            Party::Sip(l) => self.legs.get(&l).is_some_and(|i| !i.far_held),
            Party::Fxo(_) => true,
        }
    }
}
