//! Supervisor listen, whisper and barge on an agent's live call (issue 6).
//!
//! A supervisor dials a code on an FXS phone (`*65<agent id>#` listen, `*66` whisper,
//! `*67` barge by default, [`crate::acd::codes`]). Call control looks for the agent's
//! live call: a connected call with the agent's logged-in extension (its FXS port or
//! its SIP phone's leg) as one party, bridged to the other party (not on hold). With
//! none, or with a supervisor in that call already, the phone hears
//! number-unobtainable tone. Otherwise the right is checked outside call control (a
//! store read): [`Output::CheckSupervisor`] asks whether the user owning the dialling
//! extension may `calls.listen` the agent's groups, [`CallControl::supervisor_checked`]
//! answers (the phone is quiet meanwhile). Refused: number-unobtainable tone.
//!
//! Allowed: the agent's two-party bridge is removed and agent, peer and supervisor
//! join a conference room ([`Output::Conference`]), the supervisor as listener
//! (nobody hears them), whisperer to the agent (the caller does not hear them) or
//! talker (barge, everyone hears everyone). During the session the supervisor's keys
//! switch the mode: `4` listen, `5` whisper, `6` barge (other keys do nothing).
//!
//! Ending:
//! - The supervisor hangs up: the three leave the room and agent and peer are bridged
//!   again (the fast two-party path).
//! - Anything that changes the bridges of the agent or the peer (either hangs up, the
//!   agent holds the call with a hook-flash, a transfer) ends the supervision first:
//!   the three leave the room and the supervisor hears busy tone (quiet after the
//!   usual lockout time) until they hang up; the call's own handling then goes on as
//!   without a supervisor.
//!
//! Limits: one supervisor per call; supervisors dial from FXS phones only (like the
//! agent codes); the agent and the caller hear no tone when a supervisor joins.

use std::time::Instant;

use line_proto::Command;

use crate::acd::codes::SuperviseMode;
use crate::acd::AgentId;
use crate::tones::Tone;

use super::{
    CallControl, CallKey, CallPhase, ConferenceOp, ConferenceRole, Fxs, MediaEnd, Output, Party,
    RoomId, LOCKOUT_TONE,
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
    port: u8,
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
    /// `*65<agent>#` and friends, dialled on FXS `port` (extension `extension`).
    pub(super) fn request_supervision(
        &mut self,
        now: Instant,
        port: u8,
        extension: String,
        agent: AgentId,
        mode: SuperviseMode,
    ) {
        if self.agent_live_call(&agent).is_none() {
            tracing::info!(port, %agent, mode = mode.as_str(), "supervision refused: the agent has no live call");
            return self.feature_done(now, Party::Fxs(port), false);
        }
        let check = self.next_supervise_check;
        self.next_supervise_check += 1;
        self.supervise_checks.insert(
            check,
            PendingSupervision {
                port,
                agent: agent.clone(),
                mode,
            },
        );
        // Quiet until the check answers.
        self.cmd(port, Command::StopTone);
        self.set_fxs(port, Fxs::Lockout { quiet_at: None });
        self.outputs.push_back(Output::CheckSupervisor {
            check,
            extension,
            agent,
            mode,
        });
    }

    /// The answer to [`Output::CheckSupervisor`] `check`: whether the supervisor may
    /// listen to the agent's calls (false also for an unknown user or a store error).
    /// The agent's call is looked up again: it may have ended or changed meanwhile.
    pub fn supervisor_checked(&mut self, now: Instant, check: u64, allowed: bool) {
        let Some(pending) = self.supervise_checks.remove(&check) else {
            return;
        };
        let port = pending.port;
        let waiting = self.fxs.get(&port).is_some_and(|p| p.off_hook)
            && self.fxs_state(port) == Some(Fxs::Lockout { quiet_at: None });
        if !waiting {
            return; // hung up meanwhile
        }
        if !allowed {
            tracing::warn!(port, agent = %pending.agent, mode = pending.mode.as_str(), "supervision refused: no right to listen to this agent's calls");
            return self.feature_done(now, Party::Fxs(port), false);
        }
        let Some((call, agent, peer)) = self.agent_live_call(&pending.agent) else {
            tracing::info!(port, agent = %pending.agent, "supervision refused: the agent's call ended");
            return self.feature_done(now, Party::Fxs(port), false);
        };
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
            (Party::Fxs(port).media(), s.role()),
        ] {
            self.conference(room, ConferenceOp::Join { end, role });
        }
        tracing::info!(port, agent = %pending.agent, mode = pending.mode.as_str(), room, "supervisor joined the agent's call");
        self.supervisions.insert(port, s);
        self.set_fxs(port, Fxs::Supervisor(call));
    }

    /// A key pressed by a supervisor in a call: `4` listen, `5` whisper, `6` barge.
    pub(super) fn supervisor_digit(&mut self, port: u8, d: char) {
        let mode = match d {
            '4' => SuperviseMode::Listen,
            '5' => SuperviseMode::Whisper,
            '6' => SuperviseMode::Barge,
            _ => return,
        };
        let Some(s) = self.supervisions.get_mut(&port) else {
            return;
        };
        if s.mode == mode {
            return;
        }
        s.mode = mode;
        let (room, role) = (s.room, s.role());
        tracing::info!(port, mode = mode.as_str(), "supervisor changed mode");
        self.conference(
            room,
            ConferenceOp::SetRole {
                end: Party::Fxs(port).media(),
                role,
            },
        );
    }

    /// The supervisor on `port` hung up: the call goes on as a two-party bridge.
    pub(super) fn supervisor_hung_up(&mut self, port: u8) {
        let Some(s) = self.supervisions.remove(&port) else {
            return;
        };
        self.close_room(port, &s);
        let still = self.calls.get(&s.call).is_some_and(|c| {
            c.phase == CallPhase::Connected
                && ((c.caller == s.agent && c.callee == Some(s.peer))
                    || (c.caller == s.peer && c.callee == Some(s.agent)))
        });
        if still {
            self.connect(s.agent, s.peer);
        }
        tracing::info!(port, room = s.room, "supervisor left the agent's call");
    }

    /// A bridge of `a` or `b` is about to change: the supervisions of calls they are
    /// agent or peer of end (their supervisors hear busy tone).
    pub(super) fn drop_supervisions_of(&mut self, a: Party, b: Party) {
        if self.supervisions.is_empty() {
            return;
        }
        let ports: Vec<u8> = self
            .supervisions
            .iter()
            .filter(|(_, s)| [s.agent, s.peer].iter().any(|p| *p == a || *p == b))
            .map(|(&port, _)| port)
            .collect();
        for port in ports {
            let Some(s) = self.supervisions.remove(&port) else {
                continue;
            };
            self.close_room(port, &s);
            tracing::info!(
                port,
                room = s.room,
                "the supervised call changed: supervisor dropped"
            );
            if self.fxs.get(&port).is_some_and(|p| p.off_hook) {
                self.tone(port, Tone::Busy);
                self.set_fxs(port, Fxs::Lockout { quiet_at: None });
                self.supervisors_dropped.push(port);
            } else {
                self.set_fxs(port, Fxs::Idle);
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

    fn close_room(&mut self, port: u8, s: &Supervision) {
        for end in [Party::Fxs(port).media(), s.agent.media(), s.peer.media()] {
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
