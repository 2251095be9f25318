//! Meet-me conference rooms (issue 6): rooms configured with a number, a PIN and a
//! party limit (`[[conference_rooms]]`), dialled from analog phones like extensions,
//! called by local SIP phones (an INVITE to the room's number), and reached by trunk
//! callers whose DID maps to a room's number.
//!
//! Dialling a room's number answers at once (a SIP caller gets `200`) and asks for the
//! PIN: the spoken prompt
//! [`PIN_PROMPT`] when the box has it (after a wrong try [`WRONG_PIN_PROMPT`] first),
//! else [`Tone::Confirmation`] (three short beeps, repeated); the caller keys the PIN
//! and `#` (FXS digits, or RFC 4733 / SIP INFO digits from a SIP leg; the first key
//! stops the prompt). A right PIN joins the phone or leg to the room
//! (`Output::Conference`, everyone hears everyone) and the room hears the entry beep
//! ([`ConferenceOp::Beep`]); hanging up (on hook, BYE) leaves it, and the others hear
//! the exit beep. A wrong PIN (or none within [`PIN_TIMEOUT`]) plays the prompt
//! again; after [`PIN_TRIES`] wrong tries an analog caller gets number-unobtainable
//! tone and no more tries (an analog phone cannot be hung up by the box; it is
//! released on hook) and the box hangs up a SIP caller (BYE). A full room gives busy:
//! busy tone on an analog phone, `486 Busy Here` to a SIP caller at dialling (before
//! the answer), and a BYE if it filled up while the PIN was keyed. The engine's room
//! is made by the first join and goes with the last leave.
//!
//! Every visit has a CDR (the callee is the room's number): answered when the box
//! answered (at once), ended when the phone hung up (hung up by the caller) or the box
//! refused it after wrong PINs, a room that filled up meanwhile, or a shutdown
//! (hung up by the system); a room full at dialling is a busy CDR. The CDR carries a
//! SIP caller's call-id and goes to the outbox like any other.
//!
//! Limits: PSTN lines (FXO) cannot be routed to rooms; a full room and the refusal are
//! tones or SIP statuses, not spoken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use line_proto::Command;

use crate::acd::codes::Pin;
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

use crate::cdr::{Direction, Disposition, HangupSide};

use super::{
    Call, CallControl, CallPhase, ConferenceOp, ConferenceRole, EndReason, Fxs, LegId, Output,
    Party, RoomId,
};

/// The spoken PIN prompt (in the built-in prompt set).
pub const PIN_PROMPT: &str = "conf-pin";
/// Said before the PIN prompt after a wrong PIN.
pub const WRONG_PIN_PROMPT: &str = "conf-wrong-pin";

/// Wrong PINs after which the caller is refused.
pub const PIN_TRIES: u32 = 3;
/// Time to key the PIN (each try).
pub const PIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A meet-me room as call control knows it (from `[[conference_rooms]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetMeRoom {
    /// The number dialled.
    pub number: String,
    /// The PIN asked for.
    pub pin: Pin,
    /// Parties at most.
    pub max_parties: usize,
}

/// Where a phone is in the meet-me flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attendee {
    /// Keying the PIN of room `room` (index in the settings).
    Pin {
        room: usize,
        digits: String,
        tries: u32,
        deadline: Instant,
    },
    /// In room `room`.
    In { room: usize },
}

/// The meet-me state: who is where, and the engine room of each occupied room.
#[derive(Debug, Default)]
pub(super) struct MeetMe {
    /// By the attendee's phone: an FXS port or a SIP leg (answered by this module).
    pub(super) attendees: BTreeMap<Party, Attendee>,
    /// Room index -> (engine room, attendees in it).
    occupied: BTreeMap<usize, (RoomId, BTreeSet<Party>)>,
    /// Each attendee's visit, for its CDR (a call record kept out of the calls).
    visits: BTreeMap<Party, Call>,
}

impl MeetMe {
    fn parties(&self, room: usize) -> usize {
        self.occupied.get(&room).map_or(0, |(_, p)| p.len())
    }

    pub(super) fn timeout(&self) -> Option<Instant> {
        self.attendees
            .values()
            .filter_map(|a| match a {
                Attendee::Pin { deadline, .. } => Some(*deadline),
                Attendee::In { .. } => None,
            })
            .min()
    }
}

impl CallControl {
    /// The room `digits` name, if any.
    pub(super) fn meetme_room(&self, digits: &str) -> Option<usize> {
        self.settings
            .conference_rooms
            .iter()
            .position(|r| r.number == digits)
    }

    /// Whether `digits` start a room's number.
    pub(super) fn meetme_prefix(&self, digits: &str) -> bool {
        self.settings
            .conference_rooms
            .iter()
            .any(|r| r.number.starts_with(digits))
    }

    /// FXS `port` dialled room `room` (`digits`, since `started`).
    pub(super) fn meetme_dialled(
        &mut self,
        now: Instant,
        port: u8,
        room: usize,
        started: Instant,
        digits: String,
    ) {
        let Some(r) = self.settings.conference_rooms.get(room) else {
            return;
        };
        if self.meetme.parties(room) >= r.max_parties {
            tracing::info!(port, room = r.number, "conference room full");
            self.lockout(now, port, Tone::Busy);
            return self.failed_cdr(
                now,
                port,
                started,
                digits,
                Direction::Internal,
                Disposition::Busy,
            );
        }
        self.set_fxs(port, Fxs::MeetMe);
        let visit = self.call_from_port(port, started, Direction::Internal, digits);
        self.meetme_visit(now, Party::Fxs(port), visit);
        self.meetme_ask_first(now, Party::Fxs(port), room);
    }

    /// `who`'s visit (`visit`, the call as dialled) starts: given an id, answered now.
    fn meetme_visit(&mut self, now: Instant, who: Party, visit: Call) {
        let key = self.take_key();
        let visit = Call {
            id: format!("{}-{}", self.settings.call_id_prefix, key),
            phase: CallPhase::Connected,
            answered: Some(now),
            ..visit
        };
        self.meetme.visits.insert(who, visit);
    }

    /// `who`'s visit ends now (`side` hung up): its CDR.
    fn meetme_visit_over(&mut self, now: Instant, who: Party, side: HangupSide) {
        if let Some(visit) = self.meetme.visits.remove(&who) {
            self.record_cdr(now, &visit, Disposition::Answered, side);
        }
    }

    /// An incoming SIP leg (a local phone, or a trunk caller whose DID maps to the
    /// room) called room `room` (`call`, as it came in): answered, or `486 Busy Here`
    /// when the room is full.
    pub(super) fn sip_meetme_dialled(&mut self, now: Instant, leg: LegId, room: usize, call: Call) {
        let Some(r) = self.settings.conference_rooms.get(room) else {
            return;
        };
        if self.meetme.parties(room) >= r.max_parties {
            tracing::info!(%leg, room = r.number, "conference room full");
            self.outputs.push_back(Output::SipHangup {
                leg,
                reason: EndReason::Busy,
            });
            let key = self.take_key();
            let call = Call {
                id: format!("{}-{}", self.settings.call_id_prefix, key),
                ..call
            };
            return self.record_cdr(now, &call, Disposition::Busy, HangupSide::System);
        }
        self.outputs.push_back(Output::SipAnswer { leg });
        self.meetme_visit(now, Party::Sip(leg), call);
        self.meetme_ask_first(now, Party::Sip(leg), room);
    }

    fn meetme_ask_first(&mut self, now: Instant, who: Party, room: usize) {
        let number = self.settings.conference_rooms[room].number.clone();
        tracing::info!(
            ?who,
            room = number,
            "conference room dialled: asking for the PIN"
        );
        self.meetme.attendees.insert(
            who,
            Attendee::Pin {
                room,
                digits: String::new(),
                tries: 0,
                deadline: now + PIN_TIMEOUT,
            },
        );
        self.meetme_ask_pin(who, false);
    }

    /// Whether `who` is keying a room's PIN or in a room.
    pub(super) fn is_meetme_attendee(&self, who: Party) -> bool {
        self.meetme.attendees.contains_key(&who)
    }

    /// Asks `who` for the PIN: the spoken prompts when the box has them, else the
    /// tone (an analog port's tone generator, or the tone played to a SIP leg).
    fn meetme_ask_pin(&mut self, who: Party, after_wrong: bool) {
        let has = |name: &str| self.settings.prompts.contains_key(name);
        if !has(PIN_PROMPT) {
            return match who {
                Party::Fxs(port) => self.tone(port, Tone::Confirmation),
                _ => self.outputs.push_back(Output::Play {
                    end: who.media(),
                    playback: Playback::looped(Sound::Tone(Tone::Confirmation)),
                }),
            };
        }
        let mut once = Vec::new();
        if after_wrong && has(WRONG_PIN_PROMPT) {
            once.push(WRONG_PIN_PROMPT.to_owned());
        }
        once.push(PIN_PROMPT.to_owned());
        if let Party::Fxs(port) = who {
            self.cmd(port, Command::StopTone);
        }
        self.outputs.push_back(Output::Play {
            end: who.media(),
            playback: Playback { once, then: None },
        });
    }

    /// Stops the PIN prompt, tone or spoken.
    fn meetme_quiet(&mut self, who: Party) {
        match who {
            Party::Fxs(port) => {
                self.cmd(port, Command::StopTone);
                if self.settings.prompts.contains_key(PIN_PROMPT) {
                    self.outputs
                        .push_back(Output::StopPlay { end: who.media() });
                }
            }
            _ => self
                .outputs
                .push_back(Output::StopPlay { end: who.media() }),
        }
    }

    /// `who` is refused after dialling: an analog phone hears `tone` until on hook,
    /// a SIP leg (answered) is hung up.
    fn meetme_refuse(&mut self, now: Instant, who: Party, tone: Tone) {
        match who {
            Party::Fxs(port) => self.lockout(now, port, tone),
            Party::Sip(leg) => self.outputs.push_back(Output::SipHangup {
                leg,
                reason: EndReason::Normal,
            }),
            Party::Fxo(_) => {}
        }
    }

    /// A key pressed by a phone in the meet-me flow.
    pub(super) fn meetme_digit(&mut self, now: Instant, who: Party, d: char) {
        let Some(Attendee::Pin {
            room,
            digits,
            tries,
            ..
        }) = self.meetme.attendees.get(&who).cloned()
        else {
            return; // in the room: keys do nothing
        };
        if digits.is_empty() {
            self.meetme_quiet(who);
        }
        if d != '#' {
            let mut digits = digits;
            digits.push(d);
            if digits.len() > 8 {
                return self.meetme_wrong_pin(now, who, room, tries);
            }
            self.meetme.attendees.insert(
                who,
                Attendee::Pin {
                    room,
                    digits,
                    tries,
                    deadline: now + PIN_TIMEOUT,
                },
            );
            return;
        }
        let right = self
            .settings
            .conference_rooms
            .get(room)
            .is_some_and(|r| r.pin.expose() == digits);
        if right {
            self.meetme_join(now, who, room);
        } else {
            self.meetme_wrong_pin(now, who, room, tries);
        }
    }

    fn meetme_wrong_pin(&mut self, now: Instant, who: Party, room: usize, tries: u32) {
        let tries = tries + 1;
        let number = self
            .settings
            .conference_rooms
            .get(room)
            .map(|r| r.number.clone())
            .unwrap_or_default();
        if tries >= PIN_TRIES {
            tracing::warn!(
                ?who,
                room = number,
                "conference room refused: {PIN_TRIES} wrong PINs"
            );
            self.meetme.attendees.remove(&who);
            if let Party::Sip(_) = who {
                self.meetme_quiet(who);
            }
            self.meetme_visit_over(now, who, HangupSide::System);
            return self.meetme_refuse(now, who, Tone::Unobtainable);
        }
        tracing::info!(?who, room = number, tries, "wrong conference PIN");
        self.meetme.attendees.insert(
            who,
            Attendee::Pin {
                room,
                digits: String::new(),
                tries,
                deadline: now + PIN_TIMEOUT,
            },
        );
        self.meetme_quiet(who);
        self.meetme_ask_pin(who, true);
    }

    fn meetme_join(&mut self, now: Instant, who: Party, room: usize) {
        let Some(r) = self.settings.conference_rooms.get(room) else {
            return;
        };
        let (number, max) = (r.number.clone(), r.max_parties);
        if self.meetme.parties(room) >= max {
            tracing::info!(?who, room = number, "conference room full");
            self.meetme.attendees.remove(&who);
            self.meetme_visit_over(now, who, HangupSide::System);
            return self.meetme_refuse(now, who, Tone::Busy);
        }
        let id = match self.meetme.occupied.get(&room) {
            Some((id, _)) => *id,
            None => {
                let id = self.next_room;
                self.next_room += 1;
                self.meetme.occupied.insert(room, (id, BTreeSet::new()));
                id
            }
        };
        if let Some((_, members)) = self.meetme.occupied.get_mut(&room) {
            members.insert(who);
        }
        self.meetme.attendees.insert(who, Attendee::In { room });
        self.conference(
            id,
            ConferenceOp::Join {
                end: who.media(),
                role: ConferenceRole::Talker,
            },
        );
        self.conference(id, ConferenceOp::Beep { entry: true });
        tracing::info!(
            ?who,
            room = number,
            parties = self.meetme.parties(room),
            "joined conference room"
        );
    }

    /// The SIP leg `leg` of the meet-me flow ended (BYE, CANCEL, a failure): it leaves
    /// its room. Returns false when `leg` is not in the meet-me flow.
    pub(super) fn sip_meetme_ended(&mut self, now: Instant, leg: LegId) -> bool {
        if !self.is_meetme_attendee(Party::Sip(leg)) {
            return false;
        }
        self.meetme_hung_up(now, Party::Sip(leg));
        true
    }

    /// `who` hung up in the meet-me flow.
    pub(super) fn meetme_hung_up(&mut self, now: Instant, who: Party) {
        self.meetme_visit_over(now, who, HangupSide::Caller);
        let room = match self.meetme.attendees.remove(&who) {
            Some(Attendee::In { room }) => room,
            Some(Attendee::Pin { .. }) => return self.meetme_quiet(who),
            None => return,
        };
        let Some((id, members)) = self.meetme.occupied.get_mut(&room) else {
            return;
        };
        let id = *id;
        members.remove(&who);
        let left = members.len();
        if left == 0 {
            self.meetme.occupied.remove(&room);
        }
        self.conference(id, ConferenceOp::Leave { end: who.media() });
        if left > 0 {
            self.conference(id, ConferenceOp::Beep { entry: false });
        }
        tracing::info!(?who, parties = left, "left conference room");
    }

    /// Shutdown: every phone leaves its room (no beeps), PIN entries end and SIP legs
    /// in the flow are hung up.
    pub(super) fn meetme_close_all(&mut self, now: Instant) {
        let attendees = std::mem::take(&mut self.meetme.attendees);
        for (who, a) in attendees {
            self.meetme_visit_over(now, who, HangupSide::System);
            if let Attendee::In { room } = a {
                if let Some((id, _)) = self.meetme.occupied.get(&room) {
                    let id = *id;
                    self.conference(id, ConferenceOp::Leave { end: who.media() });
                }
            } else if let Party::Sip(_) = who {
                self.outputs
                    .push_back(Output::StopPlay { end: who.media() });
            }
            if let Party::Sip(leg) = who {
                self.outputs.push_back(Output::SipHangup {
                    leg,
                    reason: EndReason::Normal,
                });
            }
        }
        self.meetme.occupied.clear();
    }

    /// PIN entries that ran out of time count as wrong tries.
    pub(super) fn meetme_timeouts(&mut self, now: Instant) {
        let due: Vec<(Party, usize, u32)> = self
            .meetme
            .attendees
            .iter()
            .filter_map(|(&who, a)| match a {
                Attendee::Pin {
                    room,
                    tries,
                    deadline,
                    ..
                } if *deadline <= now => Some((who, *room, *tries)),
                _ => None,
            })
            .collect();
        for (who, room, tries) in due {
            self.meetme_wrong_pin(now, who, room, tries);
        }
    }
}
