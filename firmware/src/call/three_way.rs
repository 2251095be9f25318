//! Three-way calling from an analog phone by hook-flash (issue 6).
//!
//! A phone in a call flashes (the peer is held, dial tone), calls a second party, and
//! once that call is answered flashes again: the three talk in a conference room
//! ([`Output::Conference`]). Call waiting is unchanged: a call answered by flash is
//! swapped with the held one on the next flash, as before; only a held call the phone
//! put on hold itself to dial out (a consultation) is joined.
//!
//! During the three-way call further flashes are ignored. When the phone hangs up, both
//! calls end. When one far party leaves (hangs up, or anything else changes its bridge),
//! the room is closed and the phone talks with the other party alone: two-party again.
//!
//! Limits: the phone's own CDRs stay two calls (the first and the consultation), as
//! without the three-way; no transfer on hang-up (both far parties are released).

use line_proto::Command;

use super::{CallControl, CallKey, CallPhase, ConferenceOp, ConferenceRole, Fxs, Party, RoomId};

/// A phone's three-way call.
#[derive(Debug, Clone)]
pub(super) struct ThreeWay {
    room: RoomId,
    /// The call held for the consultation, and its far party.
    held: (CallKey, Party),
    /// The consultation call, and its far party.
    active: (CallKey, Party),
}

impl CallControl {
    /// Second flash of a consultation on `port`: `active` (connected) and `held` join.
    /// Returns false (nothing done) when the calls are not what a three-way needs.
    pub(super) fn start_three_way(&mut self, port: u8, active: CallKey, held: CallKey) -> bool {
        let me = Party::Fxs(port);
        let (Some(active_peer), Some(held_peer)) =
            (self.peer_of(active, me), self.peer_of(held, me))
        else {
            return false;
        };
        let connected = |k: CallKey| {
            self.calls
                .get(&k)
                .is_some_and(|c| c.phase == CallPhase::Connected)
        };
        if !connected(active) || !connected(held) {
            return false;
        }
        let room = self.next_room;
        self.next_room += 1;
        self.disconnect(me, active_peer);
        for party in [me, held_peer, active_peer] {
            self.conference(
                room,
                ConferenceOp::Join {
                    end: party.media(),
                    role: ConferenceRole::Talker,
                },
            );
        }
        self.cmd(port, Command::StopTone);
        tracing::info!(port, room, "three-way call");
        self.three_ways.insert(
            port,
            ThreeWay {
                room,
                held: (held, held_peer),
                active: (active, active_peer),
            },
        );
        true
    }

    /// The phone on `port` hangs up in a three-way call: the room closes and the held
    /// call ends too (the active one ends with the normal on-hook handling).
    pub(super) fn three_way_hung_up(&mut self, now: std::time::Instant, port: u8) {
        let Some(t) = self.three_ways.remove(&port) else {
            return;
        };
        self.close_three_way(port, &t);
        if let Some(p) = self.fxs.get_mut(&port) {
            p.held = None;
            p.consult = false;
        }
        self.end_call(
            now,
            t.held.0,
            Some(Party::Fxs(port)),
            crate::cdr::HangupSide::Caller,
            super::EndReason::Normal,
        );
    }

    /// A bridge of `a` or `b` is about to change: a three-way call with either as a
    /// far party goes back to two parties (the phone and the other far party).
    pub(super) fn drop_three_ways_of(&mut self, a: Party, b: Party) {
        if self.three_ways.is_empty() {
            return;
        }
        let ports: Vec<u8> = self
            .three_ways
            .iter()
            .filter(|(_, t)| [t.held.1, t.active.1].iter().any(|p| *p == a || *p == b))
            .map(|(&port, _)| port)
            .collect();
        for port in ports {
            let Some(t) = self.three_ways.remove(&port) else {
                continue;
            };
            self.close_three_way(port, &t);
            let me = Party::Fxs(port);
            let held_up = self.calls.contains_key(&t.held.0);
            let active_up = self.calls.contains_key(&t.active.0);
            match (held_up, active_up) {
                (true, false) => {
                    // The consultation ended: the held call is the phone's call again
                    // (its state no longer names the ending call, which is then
                    // released without touching the phone).
                    let role = match self.calls.get(&t.held.0) {
                        Some(c) if c.caller == me => Fxs::Caller(t.held.0),
                        _ => Fxs::Callee(t.held.0),
                    };
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.held = None;
                        p.consult = false;
                    }
                    self.set_fxs(port, role);
                    self.connect(me, t.held.1);
                }
                // The held call ended: the phone stays in the consultation call (the
                // held call's end clears `held` as usual).
                (false, true) => self.connect(me, t.active.1),
                // Both calls go on (a far end put its leg on hold): back to the
                // consultation as it was, the first call held; the phone may flash.
                _ => {}
            }
            tracing::info!(port, room = t.room, "three-way call back to two parties");
        }
    }

    fn close_three_way(&mut self, port: u8, t: &ThreeWay) {
        for party in [Party::Fxs(port), t.held.1, t.active.1] {
            self.conference(t.room, ConferenceOp::Leave { end: party.media() });
        }
    }

    /// Whether `port` is in a three-way call.
    pub(super) fn in_three_way(&self, port: u8) -> bool {
        self.three_ways.contains_key(&port)
    }
}
