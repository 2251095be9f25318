//! Meet-me conference rooms (issue 6): rooms configured with a number, a PIN and a
//! party limit (`[[conference_rooms]]`), dialled from analog phones like extensions.
//!
//! Dialling a room's number answers at once and asks for the PIN: the spoken prompt
//! [`PIN_PROMPT`] when the box has it (after a wrong try [`WRONG_PIN_PROMPT`] first),
//! else [`Tone::Confirmation`] (three short beeps, repeated); the caller keys the PIN
//! and `#` (the first key stops the prompt). A right PIN joins the phone to the room (`Output::Conference`, everyone hears
//! everyone) and the room hears the entry beep ([`ConferenceOp::Beep`]); hanging up
//! leaves it, and the others hear the exit beep. A wrong PIN (or none within
//! [`PIN_TIMEOUT`]) plays the prompt again; after [`PIN_TRIES`] wrong tries the caller
//! gets number-unobtainable tone and no more tries (an analog phone cannot be hung up
//! by the box; it is released on hook). A full room gives busy tone, at dialling and
//! again if it filled up while the PIN was keyed. The engine's room is made by the
//! first join and goes with the last leave.
//!
//! Limits: analog phones only (a SIP phone or trunk caller dialling a room gets 404,
//! as for an unknown number; PSTN lines cannot be routed to rooms); no CDR for a room
//! visit; a full room and the refusal are tones, not spoken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use line_proto::Command;

use crate::acd::codes::Pin;
use crate::prompts::Playback;
use crate::tones::Tone;

use super::{CallControl, ConferenceOp, ConferenceRole, Fxs, MediaEnd, Output, RoomId};

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
    pub(super) attendees: BTreeMap<u8, Attendee>,
    /// Room index -> (engine room, ports in it).
    occupied: BTreeMap<usize, (RoomId, BTreeSet<u8>)>,
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

    /// FXS `port` dialled room `room`.
    pub(super) fn meetme_dialled(&mut self, now: Instant, port: u8, room: usize) {
        let Some(r) = self.settings.conference_rooms.get(room) else {
            return;
        };
        if self.meetme.parties(room) >= r.max_parties {
            tracing::info!(port, room = r.number, "conference room full");
            return self.lockout(now, port, Tone::Busy);
        }
        tracing::info!(
            port,
            room = r.number,
            "conference room dialled: asking for the PIN"
        );
        self.meetme.attendees.insert(
            port,
            Attendee::Pin {
                room,
                digits: String::new(),
                tries: 0,
                deadline: now + PIN_TIMEOUT,
            },
        );
        self.set_fxs(port, Fxs::MeetMe);
        self.meetme_ask_pin(port, false);
    }

    /// Asks `port` for the PIN: the spoken prompts when the box has them, else the
    /// tone.
    fn meetme_ask_pin(&mut self, port: u8, after_wrong: bool) {
        let has = |name: &str| self.settings.prompts.contains_key(name);
        if !has(PIN_PROMPT) {
            return self.tone(port, Tone::Confirmation);
        }
        let mut once = Vec::new();
        if after_wrong && has(WRONG_PIN_PROMPT) {
            once.push(WRONG_PIN_PROMPT.to_owned());
        }
        once.push(PIN_PROMPT.to_owned());
        self.cmd(port, Command::StopTone);
        self.outputs.push_back(Output::Play {
            end: MediaEnd::Port(port),
            playback: Playback { once, then: None },
        });
    }

    /// Stops the PIN prompt, tone or spoken.
    fn meetme_quiet(&mut self, port: u8) {
        self.cmd(port, Command::StopTone);
        if self.settings.prompts.contains_key(PIN_PROMPT) {
            self.outputs.push_back(Output::StopPlay {
                end: MediaEnd::Port(port),
            });
        }
    }

    /// A key pressed by a phone in the meet-me flow.
    pub(super) fn meetme_digit(&mut self, now: Instant, port: u8, d: char) {
        let Some(Attendee::Pin {
            room,
            digits,
            tries,
            ..
        }) = self.meetme.attendees.get(&port).cloned()
        else {
            return; // in the room: keys do nothing
        };
        if digits.is_empty() {
            self.meetme_quiet(port);
        }
        if d != '#' {
            let mut digits = digits;
            digits.push(d);
            if digits.len() > 8 {
                return self.meetme_wrong_pin(now, port, room, tries);
            }
            self.meetme.attendees.insert(
                port,
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
            self.meetme_join(now, port, room);
        } else {
            self.meetme_wrong_pin(now, port, room, tries);
        }
    }

    fn meetme_wrong_pin(&mut self, now: Instant, port: u8, room: usize, tries: u32) {
        let tries = tries + 1;
        let number = self
            .settings
            .conference_rooms
            .get(room)
            .map(|r| r.number.clone())
            .unwrap_or_default();
        if tries >= PIN_TRIES {
            tracing::warn!(
                port,
                room = number,
                "conference room refused: {PIN_TRIES} wrong PINs"
            );
            self.meetme.attendees.remove(&port);
            return self.lockout(now, port, Tone::Unobtainable);
        }
        tracing::info!(port, room = number, tries, "wrong conference PIN");
        self.meetme.attendees.insert(
            port,
            Attendee::Pin {
                room,
                digits: String::new(),
                tries,
                deadline: now + PIN_TIMEOUT,
            },
        );
        self.meetme_quiet(port);
        self.meetme_ask_pin(port, true);
    }

    fn meetme_join(&mut self, now: Instant, port: u8, room: usize) {
        let Some(r) = self.settings.conference_rooms.get(room) else {
            return;
        };
        let (number, max) = (r.number.clone(), r.max_parties);
        if self.meetme.parties(room) >= max {
            tracing::info!(port, room = number, "conference room full");
            self.meetme.attendees.remove(&port);
            return self.lockout(now, port, Tone::Busy);
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
        if let Some((_, ports)) = self.meetme.occupied.get_mut(&room) {
            ports.insert(port);
        }
        self.meetme.attendees.insert(port, Attendee::In { room });
        self.conference(
            id,
            ConferenceOp::Join {
                end: MediaEnd::Port(port),
                role: ConferenceRole::Talker,
            },
        );
        self.conference(id, ConferenceOp::Beep { entry: true });
        tracing::info!(
            port,
            room = number,
            parties = self.meetme.parties(room),
            "joined conference room"
        );
    }

    /// The phone on `port` hung up in the meet-me flow.
    pub(super) fn meetme_hung_up(&mut self, port: u8) {
        let room = match self.meetme.attendees.remove(&port) {
            Some(Attendee::In { room }) => room,
            Some(Attendee::Pin { .. }) => return self.meetme_quiet(port),
            None => return,
        };
        let Some((id, ports)) = self.meetme.occupied.get_mut(&room) else {
            return;
        };
        let id = *id;
        ports.remove(&port);
        let left = ports.len();
        if left == 0 {
            self.meetme.occupied.remove(&room);
        }
        self.conference(
            id,
            ConferenceOp::Leave {
                end: MediaEnd::Port(port),
            },
        );
        if left > 0 {
            self.conference(id, ConferenceOp::Beep { entry: false });
        }
        tracing::info!(port, parties = left, "left conference room");
    }

    /// Shutdown: every phone leaves its room (no beeps) and PIN entries end.
    pub(super) fn meetme_close_all(&mut self) {
        let attendees = std::mem::take(&mut self.meetme.attendees);
        for (port, a) in attendees {
            if let Attendee::In { room } = a {
                if let Some((id, _)) = self.meetme.occupied.get(&room) {
                    let id = *id;
                    self.conference(
                        id,
                        ConferenceOp::Leave {
                            end: MediaEnd::Port(port),
                        },
                    );
                }
            }
        }
        self.meetme.occupied.clear();
    }

    /// PIN entries that ran out of time count as wrong tries.
    pub(super) fn meetme_timeouts(&mut self, now: Instant) {
        let due: Vec<(u8, usize, u32)> = self
            .meetme
            .attendees
            .iter()
            .filter_map(|(&port, a)| match a {
                Attendee::Pin {
                    room,
                    tries,
                    deadline,
                    ..
                } if *deadline <= now => Some((port, *room, *tries)),
                _ => None,
            })
            .collect();
        for (port, room, tries) in due {
            self.meetme_wrong_pin(now, port, room, tries);
        }
    }
}
