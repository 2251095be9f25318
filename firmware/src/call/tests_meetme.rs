//! Meet-me conference rooms (see `meetme.rs`) on a virtual clock, with the dial plan of
//! `tests_sip.rs` (101-103 on FXS 1-3) and room 800 (PIN 4711, at most 2 parties).

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::cdr::{Direction, Disposition, HangupSide};
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

// ----- SIP callers (see `meetme.rs`): local phone 210, trunk callers by DID -----

const PHONE: LegId = LegId(7);

fn sip_keys(h: &mut Harness, leg_id: LegId, keys: &str) {
    for d in keys.chars() {
        h.advance(Duration::from_millis(100));
        h.sip(SipInput::Digit {
            leg: leg_id,
            digit: d,
        });
    }
}

fn pin_tone(leg_id: LegId) -> Output {
    Output::Play {
        end: leg(leg_id),
        playback: crate::prompts::Playback::looped(crate::prompts::Sound::Tone(Tone::Confirmation)),
    }
}

/// SIP phone 210 calls room 800: answered at once, the PIN tone plays on its leg.
fn sip_dial_room(h: &mut Harness, leg_id: LegId) {
    h.incoming(leg_id, SipOrigin::Extension("210".into()), "210", "800");
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: leg_id }), "{out:?}");
    assert!(out.contains(&pin_tone(leg_id)), "{out:?}");
    assert!(conference(&out).is_empty());
    assert!(cdrs(&out).is_empty());
}

#[test]
fn a_sip_phone_keys_the_pin_by_rfc4733_joins_the_room_and_leaves_with_bye() {
    let mut h = harness();
    dial_room(&mut h, 1);
    h.dial(1, "4711#");
    let room = conference(&h.take())[0].0;
    sip_dial_room(&mut h, PHONE);
    sip_keys(&mut h, PHONE, "4");
    assert_eq!(h.take(), vec![Output::StopPlay { end: leg(PHONE) }]);
    sip_keys(&mut h, PHONE, "711#");
    assert_eq!(
        conference(&h.take()),
        vec![
            (
                room,
                ConferenceOp::Join {
                    end: leg(PHONE),
                    role: ConferenceRole::Talker
                }
            ),
            (room, ConferenceOp::Beep { entry: true }),
        ]
    );
    // Keys in the room do nothing; BYE leaves it and the analog phone hears the beep.
    sip_keys(&mut h, PHONE, "5");
    assert!(h.take().is_empty());
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(
        conference(&out),
        vec![
            (room, ConferenceOp::Leave { end: leg(PHONE) }),
            (room, ConferenceOp::Beep { entry: false }),
        ]
    );
    assert!(
        hangups(&out).is_empty(),
        "the phone hung up itself: {out:?}"
    );
    // The visit's CDR: 210 to room 800, answered at once, hung up by the phone.
    let visit = cdrs(&out);
    assert_eq!(visit.len(), 1, "{out:?}");
    let c = &visit[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("210", "800"));
    assert_eq!(c.direction, Direction::Internal);
    assert_eq!(
        (c.disposition, c.hangup_side),
        (Disposition::Answered, HangupSide::Caller)
    );
    assert_eq!(c.answered_at_ms, Some(c.started_at_ms));
    assert_eq!(c.caller_sip_call_id.as_deref(), Some("call-7@phone"));
    // The analog phone's visit ends on hook, with its own CDR.
    h.ev(1, Event::OnHook);
    let visit = cdrs(&h.take());
    assert_eq!(visit.len(), 1);
    assert_eq!(
        (visit[0].caller.as_str(), visit[0].caller_port),
        ("101", Some(1))
    );
    assert_eq!(visit[0].callee, "800");
}

#[test]
fn three_wrong_pins_from_a_sip_phone_end_its_leg() {
    let mut h = harness();
    sip_dial_room(&mut h, PHONE);
    sip_keys(&mut h, PHONE, "1234#");
    let out = h.take();
    assert!(out.contains(&pin_tone(PHONE)), "asked again: {out:?}");
    // A timeout is the second try.
    h.advance(PIN_TIMEOUT + Duration::from_secs(1));
    assert!(h.take().contains(&pin_tone(PHONE)));
    sip_keys(&mut h, PHONE, "9#");
    let out = h.take();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Normal)], "{out:?}");
    assert!(conference(&out).is_empty());
    // The refused visit is on record, ended by the box.
    let visit = cdrs(&out);
    assert_eq!(visit.len(), 1, "{out:?}");
    assert_eq!(
        (visit[0].callee.as_str(), visit[0].hangup_side),
        ("800", HangupSide::System)
    );
    // Its BYE's answer (the endpoint's Ended) changes nothing any more.
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    assert!(h.take().is_empty());
}

#[test]
fn a_full_room_refuses_a_sip_caller_with_busy_before_answer() {
    let mut h = harness();
    for p in [1, 2] {
        dial_room(&mut h, p);
        h.dial(p, "4711#");
        h.take();
    }
    h.incoming(PHONE, SipOrigin::Extension("210".into()), "210", "800");
    let out = h.take();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Busy)], "{out:?}");
    assert!(!out.contains(&Output::SipAnswer { leg: PHONE }));
    // Admitted to the prompt while there was room, full by the time of the PIN: BYE.
    let mut h = harness();
    dial_room(&mut h, 1);
    sip_dial_room(&mut h, PHONE);
    dial_room(&mut h, 2);
    h.dial(1, "4711#");
    h.dial(2, "4711#");
    h.take();
    sip_keys(&mut h, PHONE, "4711#");
    let out = h.take();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Normal)], "{out:?}");
    assert!(conference(&out).is_empty());
}

#[test]
fn a_trunk_caller_whose_did_maps_to_a_room_joins_with_the_pin_and_shutdown_ends_legs() {
    let mut h = harness();
    h.incoming(PHONE, SipOrigin::Trunk, "0612345678", "800");
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: PHONE }), "{out:?}");
    sip_keys(&mut h, PHONE, "4711#");
    let room = conference(&h.take())[0].0;
    // A second caller still keying its PIN; shutdown hangs both up.
    h.incoming(LegId(8), SipOrigin::Trunk, "0612345679", "800");
    h.take();
    h.cc.shutdown(h.now);
    let out = h.drain();
    assert!(conference(&out).contains(&(room, ConferenceOp::Leave { end: leg(PHONE) })));
    let mut ended = hangups(&out);
    ended.sort();
    assert_eq!(
        ended,
        vec![(PHONE, EndReason::Normal), (LegId(8), EndReason::Normal)]
    );
}
