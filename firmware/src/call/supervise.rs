//! Supervisor listen, whisper and barge on an agent's live call (issue 6).
//!
//! A supervisor dials a code on an FXS phone (`*65<agent id>#` listen, `*66` whisper,
//! `*67` barge by default, [`crate::acd::codes`]), or a local SIP phone sends an
//! INVITE to the same code (`sip:*65100%23@box`; the `#` may be left out, like the
//! agent codes, see `features`). Call control looks for the agent's live call: a
//! connected call with the agent's logged-in extension (its FXS port or its SIP
//! phone's leg) as one party, bridged to the other party (not on hold). With none, or
//! with a supervisor in that call already, an analog phone hears number-unobtainable
//! tone and a SIP phone gets `480 Temporarily Unavailable` (phones show it as "not
//! available now", which is what it is: the agent exists but has no call to join).
//! Otherwise the right is checked outside call control (a store read):
//! [`Output::CheckSupervisor`] asks whether the user owning the dialling extension
//! may `calls.listen` the agent's groups, [`CallControl::supervisor_checked`] answers
//! (the phone is quiet meanwhile; a SIP phone's INVITE stays unanswered). Refused:
//! number-unobtainable tone, or `403 Forbidden` for a SIP phone.
//!
//! Allowed: the agent's two-party bridge is removed and agent, peer and supervisor
//! join a conference room ([`Output::Conference`]), the supervisor as listener
//! (nobody hears them), whisperer to the agent (the caller does not hear them) or
//! talker (barge, everyone hears everyone). A SIP supervisor's INVITE is answered
//! (`200`) and its leg is the room member. During the session the supervisor's keys
//! (FXS digits, or RFC 4733 / SIP INFO digits from a SIP phone) switch the mode: `4`
//! listen, `5` whisper, `6` barge (other keys do nothing).
//!
//! Ending:
//! - The supervisor hangs up (on hook, or BYE from a SIP phone): the three leave the
//!   room and agent and peer are bridged again (the fast two-party path).
//! - Anything that changes the bridges of the agent or the peer (either hangs up, the
//!   agent holds the call with a hook-flash, a transfer) ends the supervision first:
//!   the three leave the room and an analog supervisor hears busy tone (quiet after
//!   the usual lockout time) until they hang up, while the box hangs up a SIP
//!   supervisor's leg (BYE); the call's own handling then goes on as without a
//!   supervisor.
//!
//! Limits: one supervisor per call; trunk callers cannot supervise (feature codes are
//! for local phones); the agent and the caller hear no tone when a supervisor joins;
//! a supervision leaves no CDR.

use std::time::Instant;

use line_proto::Command;

use crate::acd::codes::SuperviseMode;
use crate::acd::AgentId;
use crate::tones::Tone;

use super::{
    CallControl, CallKey, CallPhase, ConferenceOp, ConferenceRole, EndReason, Fxs, LegId, MediaEnd,
    Output, Party, RoomId, LOCKOUT_TONE,
};

/// A supervisor in an agent's call.
#[derive(Debug, Clone)]
pub(super) struct Supervision {
    call: CallKey,
    room: RoomId,
    agent: Party,
    peer: Party,
    mode: SuperviseMode,
}

/// A supervisor right being checked.
#[derive(Debug, Clone)]
pub(super) struct PendingSupervision {
    /// The supervisor's phone: an FXS port or a SIP phone's (unanswered) leg.
    from: Party,
    agent: AgentId,
    mode: SuperviseMode,
}

impl Supervision {
    fn role(&self) -> ConferenceRole {
        role_of(self.mode, self.agent.media())
    }
}

fn role_of(mode: SuperviseMode, agent: MediaEnd) -> ConferenceRole {
    match mode {
        SuperviseMode::Listen => ConferenceRole::Listener,
        SuperviseMode::Whisper => ConferenceRole::Whisperer { to: agent },
        SuperviseMode::Barge => ConferenceRole::Talker,
    }
}

impl CallControl {
    /// `*65<agent>#` and friends, dialled on FXS port or sent by a SIP phone's leg
    /// `from` (extension `extension`).
    pub(super) fn request_supervision(
        &mut self,
        now: Instant,
        from: Party,
        extension: String,
        agent: AgentId,
        mode: SuperviseMode,
    ) {
        if self.agent_live_call(&agent).is_none() {
            tracing::info!(?from, %agent, mode = mode.as_str(), "supervision refused: the agent has no live call");
            return self.supervision_refused(now, from, EndReason::NoAnswer);
        }
        let check = self.next_supervise_check;
        self.next_supervise_check += 1;
        self.supervise_checks.insert(
            check,
            PendingSupervision {
                from,
                agent: agent.clone(),
                mode,
            },
        );
        // Quiet until the check answers (a SIP phone's leg stays unanswered).
        if let Party::Fxs(port) = from {
            self.cmd(port, Command::StopTone);
            self.set_fxs(port, Fxs::Lockout { quiet_at: None });
        }
        self.outputs.push_back(Output::CheckSupervisor {
            check,
            extension,
            agent,
            mode,
        });
    }

    /// A supervision request from `from` is refused: an analog phone hears
    /// number-unobtainable tone, a SIP phone's leg is refused with `reason`.
    fn supervision_refused(&mut self, now: Instant, from: Party, reason: EndReason) {
        match from {
            Party::Sip(leg) => {
                if self.feature_legs.remove(&leg).is_some() {
                    self.outputs.push_back(Output::SipHangup { leg, reason });
                }
            }
            _ => self.feature_done(now, from, false),
        }
    }

    /// The answer to [`Output::CheckSupervisor`] `check`: whether the supervisor may
    /// listen to the agent's calls (false also for an unknown user or a store error).
    /// The agent's call is looked up again: it may have ended or changed meanwhile.
    pub fn supervisor_checked(&mut self, now: Instant, check: u64, allowed: bool) {
        let Some(pending) = self.supervise_checks.remove(&check) else {
            return;
        };
        let from = pending.from;
        let waiting = match from {
            Party::Fxs(port) => {
                self.fxs.get(&port).is_some_and(|p| p.off_hook)
                    && self.fxs_state(port) == Some(Fxs::Lockout { quiet_at: None })
            }
            // The phone may have given up (CANCEL) meanwhile.
            Party::Sip(leg) => self.feature_legs.contains_key(&leg),
            Party::Fxo(_) => false,
        };
        if !waiting {
            return; // hung up meanwhile
        }
        if !allowed {
            tracing::warn!(?from, agent = %pending.agent, mode = pending.mode.as_str(), "supervision refused: no right to listen to this agent's calls");
            return self.supervision_refused(now, from, EndReason::Forbidden);
        }
        let Some((call, agent, peer)) = self.agent_live_call(&pending.agent) else {
            tracing::info!(?from, agent = %pending.agent, "supervision refused: the agent's call ended");
            return self.supervision_refused(now, from, EndReason::NoAnswer);
        };
        if let Party::Sip(leg) = from {
            // The leg is the supervisor's from now on, no longer a feature code's.
            self.feature_legs.remove(&leg);
            self.outputs.push_back(Output::SipAnswer { leg });
        }
        let room = self.next_room;
        self.next_room += 1;
        // The fast two-party bridge goes; the room carries the call from now on.
        self.disconnect(agent, peer);
        let s = Supervision {
            call,
            room,
            agent,
            peer,
            mode: pending.mode,
        };
        for (end, role) in [
            (agent.media(), ConferenceRole::Talker),
            (peer.media(), ConferenceRole::Talker),
            (from.media(), s.role()),
        ] {
            self.conference(room, ConferenceOp::Join { end, role });
        }
        tracing::info!(?from, agent = %pending.agent, mode = pending.mode.as_str(), room, "supervisor joined the agent's call");
        self.supervisions.insert(from, s);
        if let Party::Fxs(port) = from {
            self.set_fxs(port, Fxs::Supervisor(call));
        }
    }

    /// A key pressed by a supervisor in a call: `4` listen, `5` whisper, `6` barge.
    pub(super) fn supervisor_digit(&mut self, from: Party, d: char) {
        let mode = match d {
            '4' => SuperviseMode::Listen,
            '5' => SuperviseMode::Whisper,
            '6' => SuperviseMode::Barge,
            _ => return,
        };
        let Some(s) = self.supervisions.get_mut(&from) else {
            return;
        };
        if s.mode == mode {
            return;
        }
        s.mode = mode;
        let (room, role) = (s.room, s.role());
        tracing::info!(?from, mode = mode.as_str(), "supervisor changed mode");
        self.conference(
            room,
            ConferenceOp::SetRole {
                end: from.media(),
                role,
            },
        );
    }

    /// Whether `from` is a supervisor in an agent's call.
    pub(super) fn is_supervisor(&self, from: Party) -> bool {
        self.supervisions.contains_key(&from)
    }

    /// The SIP supervisor's leg `leg` ended (BYE or a failure): like an analog
    /// supervisor hanging up. Returns false when `leg` is no supervisor's.
    pub(super) fn sip_supervisor_ended(&mut self, leg: LegId) -> bool {
        if !self.is_supervisor(Party::Sip(leg)) {
            return false;
        }
        self.supervisor_hung_up(Party::Sip(leg));
        true
    }

    /// The supervisor `from` hung up: the call goes on as a two-party bridge.
    pub(super) fn supervisor_hung_up(&mut self, from: Party) {
        let Some(s) = self.supervisions.remove(&from) else {
            return;
        };
        self.close_room(from, &s);
        let still = self.calls.get(&s.call).is_some_and(|c| {
            c.phase == CallPhase::Connected
                && ((c.caller == s.agent && c.callee == Some(s.peer))
                    || (c.caller == s.peer && c.callee == Some(s.agent)))
        });
        if still {
            self.connect(s.agent, s.peer);
        }
        tracing::info!(?from, room = s.room, "supervisor left the agent's call");
    }

    /// A bridge of `a` or `b` is about to change: the supervisions of calls they are
    /// agent or peer of end (analog supervisors hear busy tone, SIP supervisors' legs
    /// are hung up).
    pub(super) fn drop_supervisions_of(&mut self, a: Party, b: Party) {
        if self.supervisions.is_empty() {
            return;
        }
        let supervisors: Vec<Party> = self
            .supervisions
            .iter()
            .filter(|(_, s)| [s.agent, s.peer].iter().any(|p| *p == a || *p == b))
            .map(|(&from, _)| from)
            .collect();
        for from in supervisors {
            let Some(s) = self.supervisions.remove(&from) else {
                continue;
            };
            self.close_room(from, &s);
            tracing::info!(
                ?from,
                room = s.room,
                "the supervised call changed: supervisor dropped"
            );
            match from {
                Party::Fxs(port) if self.fxs.get(&port).is_some_and(|p| p.off_hook) => {
                    self.tone(port, Tone::Busy);
                    self.set_fxs(port, Fxs::Lockout { quiet_at: None });
                    self.supervisors_dropped.push(port);
                }
                Party::Fxs(port) => self.set_fxs(port, Fxs::Idle),
                Party::Sip(leg) => self.outputs.push_back(Output::SipHangup {
                    leg,
                    reason: EndReason::Normal,
                }),
                Party::Fxo(_) => {}
            }
        }
    }

    /// Shutdown: SIP supervisors' legs are hung up (analog supervisors are silenced
    /// with every port).
    pub(super) fn supervisions_close_all(&mut self) {
        let supervisors: Vec<Party> = self.supervisions.keys().copied().collect();
        for from in supervisors {
            let Some(s) = self.supervisions.remove(&from) else {
                continue;
            };
            self.close_room(from, &s);
            if let Party::Sip(leg) = from {
                self.outputs.push_back(Output::SipHangup {
                    leg,
                    reason: EndReason::Normal,
                });
            }
        }
    }

    /// Dropped supervisors' busy tone goes quiet after the usual lockout time.
    pub(super) fn settle_dropped_supervisors(&mut self, now: Instant) {
        for port in std::mem::take(&mut self.supervisors_dropped) {
            if self.fxs_state(port) == Some(Fxs::Lockout { quiet_at: None }) {
                self.set_fxs(
                    port,
                    Fxs::Lockout {
                        quiet_at: Some(now + LOCKOUT_TONE),
                    },
                );
            }
        }
    }

    fn close_room(&mut self, from: Party, s: &Supervision) {
        for end in [from.media(), s.agent.media(), s.peer.media()] {
            self.conference(s.room, ConferenceOp::Leave { end });
        }
    }

    pub(super) fn conference(&mut self, room: RoomId, op: ConferenceOp) {
        self.outputs.push_back(Output::Conference { room, op });
    }

    /// The agent's live call: a connected call with the agent's logged-in extension as
    /// a party, bridged to the other party, and no supervisor yet. Returns the call,
    /// the agent's party and the peer.
    pub(super) fn agent_live_call(&self, agent: &AgentId) -> Option<(CallKey, Party, Party)> {
        let (_, _, Some(extension)) = self.acd()?.agent(agent)? else {
            return None;
        };
        let is_agent = |p: Party| match p {
            Party::Fxs(port) => self.port_number(port) == extension,
            Party::Sip(leg) => self
                .legs
                .get(&leg)
                .is_some_and(|i| i.phone && i.number == extension),
            Party::Fxo(_) => false,
        };
        self.calls.iter().find_map(|(&key, c)| {
            let callee = c.callee?;
            if c.phase != CallPhase::Connected || self.supervisions.values().any(|s| s.call == key)
            {
                return None;
            }
            let (agent, peer) = if is_agent(c.callee?) {
                (callee, c.caller)
            } else if is_agent(c.caller) {
                (c.caller, callee)
            } else {
                return None;
            };
            let (x, y) = (agent.media(), peer.media());
            self.bridges
                .contains(&(x.min(y), x.max(y)))
                .then_some((key, agent, peer))
        })
    }
}
