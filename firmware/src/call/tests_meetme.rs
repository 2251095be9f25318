//! Meet-me conference rooms (see `meetme.rs`) on a virtual clock, with the dial plan of
//! `tests_sip.rs` (101-103 on FXS 1-3) and room 800 (PIN 4711, at most 2 parties).

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::tones::Tone;

fn harness() -> Harness {
    Harness::with(|s| {
        s.conference_rooms = vec![MeetMeRoom {
            number: "800".into(),
            pin: "4711".parse().expect("pin"),
            max_parties: 2,
        }];
    })
}

fn conference(out: &[Output]) -> Vec<(RoomId, ConferenceOp)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Conference { room, op } => Some((*room, *op)),
            _ => None,
        })
        .collect()
}

/// `port` dials room 800 and hears the PIN prompt.
fn dial_room(h: &mut Harness, port: u8) {
    h.ev(port, Event::OffHook);
    h.dial(port, "800");
    let out = h.take();
    assert!(tone_is(&out, port, Tone::Confirmation), "{out:?}");
    assert!(conference(&out).is_empty());
    // Answered: the port shows as talking from now on.
    assert!(out.contains(&Output::PortState {
        port,
        state: PortState::Talking
    }));
}

#[test]
fn the_right_pin_joins_the_room_with_beeps_and_hanging_up_leaves_it() {
    let mut h = harness();
    dial_room(&mut h, 1);
    h.dial(1, "4711#");
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    let ops = conference(&out);
    let room = ops[0].0;
    assert_eq!(
        ops,
        vec![
            (
                room,
                ConferenceOp::Join {
                    end: port(1),
                    role: ConferenceRole::Talker
                }
            ),
            (room, ConferenceOp::Beep { entry: true }),
        ]
    );
    // A second party joins the same room; keys in the room do nothing.
    dial_room(&mut h, 2);
    h.dial(2, "4711#");
    let ops = conference(&h.take());
    assert_eq!(ops[0].0, room);
    h.ev(1, Event::Digit(b'5'));
    assert!(h.take().is_empty());
    // The first leaves: the other hears the exit beep.
    h.ev(1, Event::OnHook);
    let ops = conference(&h.take());
    assert_eq!(
        ops,
        vec![
            (room, ConferenceOp::Leave { end: port(1) }),
            (room, ConferenceOp::Beep { entry: false }),
        ]
    );
    // The last leaves: no beep; the next visit gets a new engine room.
    h.ev(2, Event::OnHook);
    assert_eq!(
        conference(&h.take()),
        vec![(room, ConferenceOp::Leave { end: port(2) })]
    );
    dial_room(&mut h, 3);
    h.dial(3, "4711#");
    assert_ne!(conference(&h.take())[0].0, room);
}

#[test]
fn three_wrong_pins_refuse_the_caller_and_a_timeout_counts_as_one() {
    let mut h = harness();
    dial_room(&mut h, 1);
    h.dial(1, "1234#");
    let out = h.take();
    assert!(
        tone_is(&out, 1, Tone::Confirmation),
        "prompt again: {out:?}"
    );
    // No PIN within the time: the second try is used up.
    h.advance(PIN_TIMEOUT + Duration::from_secs(1));
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Confirmation), "{out:?}");
    // Too many digits: the third.
    h.dial(1, "123456789");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Unobtainable), "{out:?}");
    assert!(conference(&out).is_empty());
    // Refused: the right PIN now does nothing.
    h.dial(1, "4711#");
    assert!(conference(&h.take()).is_empty());
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(out.contains(&Output::PortState {
        port: 1,
        state: PortState::Idle
    }));
    assert!(conference(&out).is_empty());
}

#[test]
fn a_full_room_gives_busy_at_dialling_and_after_the_pin() {
    let mut h = harness();
    // 1 and 2 both start keying the PIN; the room takes two.
    dial_room(&mut h, 1);
    dial_room(&mut h, 2);
    dial_room(&mut h, 3);
    h.dial(1, "4711#");
    h.dial(2, "4711#");
    h.take();
    // 3 was admitted to the PIN prompt while the room was empty; it is full now.
    h.dial(3, "4711#");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Busy), "{out:?}");
    assert!(conference(&out).is_empty());
    h.ev(3, Event::OnHook);
    h.take();
    // Dialling a full room: busy at once, no PIN prompt.
    h.ev(3, Event::OffHook);
    h.dial(3, "800");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Busy), "{out:?}");
    assert!(!tone_is(&out, 3, Tone::Confirmation));
}

#[test]
fn room_numbers_are_in_the_dial_plan_and_a_busy_phone_in_a_room_is_not_rung() {
    let mut h = harness();
    // "80" is a prefix of the room: more digits are awaited, not unobtainable.
    h.ev(1, Event::OffHook);
    h.dial(1, "80");
    let out = h.take();
    assert!(!tone_is(&out, 1, Tone::Unobtainable));
    h.dial(1, "0");
    assert!(tone_is(&h.take(), 1, Tone::Confirmation));
    h.dial(1, "4711#");
    h.take();
    // 102 calls 101, which is in the room: busy.
    h.ev(2, Event::OffHook);
    h.dial(2, "101");
    let out = h.take();
    assert!(tone_is(&out, 2, Tone::Busy), "{out:?}");
    assert!(!has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))));
    // Click-to-call cannot target a room.
    assert!(h.cc.click_to_call(h.now, "103", "800").is_err());
}

#[test]
fn with_the_prompts_installed_the_pin_is_asked_for_in_words() {
    let mut h = Harness::with(|s| {
        s.conference_rooms = vec![MeetMeRoom {
            number: "800".into(),
            pin: "4711".parse().expect("pin"),
            max_parties: 2,
        }];
        for p in [PIN_PROMPT, WRONG_PIN_PROMPT] {
            s.prompts.insert(p.to_owned(), Duration::from_secs(2));
        }
    });
    let play = |once: &[&str]| Output::Play {
        end: port(1),
        playback: crate::prompts::Playback {
            once: once.iter().map(|s| s.to_string()).collect(),
            then: None,
        },
    };
    h.ev(1, Event::OffHook);
    h.dial(1, "800");
    let out = h.take();
    assert!(out.contains(&play(&[PIN_PROMPT])), "{out:?}");
    assert!(!tone_is(&out, 1, Tone::Confirmation));
    // The first key stops it; a wrong PIN says so and asks again.
    h.dial(1, "1");
    assert!(h.take().contains(&Output::StopPlay { end: port(1) }));
    h.dial(1, "#");
    assert!(h.take().contains(&play(&[WRONG_PIN_PROMPT, PIN_PROMPT])));
    // Hanging up during the prompt stops it.
    h.ev(1, Event::OnHook);
    assert!(h.take().contains(&Output::StopPlay { end: port(1) }));
}
