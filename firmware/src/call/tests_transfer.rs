//! Transfers by SIP phones (REFER blind and attended, INVITE with Replaces) on a
//! virtual clock, with the dial plan of `tests_sip.rs`: 101 FXS 1, 102 FXS 2 + SIP,
//! 103 FXS 3 without call waiting, 210/211 SIP only, FXO 6 outside, prefix 9.

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::cdr::{Direction, Disposition, HangupSide};
use crate::tones::Tone;

const IN3: LegId = LegId(3);

/// A trunk call (IN1, from +4930123) answered by SIP phone 210 on the returned leg.
fn trunk_call_answered_by_210(h: &mut Harness) -> LegId {
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "210");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: phone });
    let out = h.take();
    assert!(
        out.contains(&Output::Connect(leg(IN1), leg(phone))),
        "{out:?}"
    );
    phone
}

fn status(out: &[Output]) -> Vec<(LegId, u16)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SipTransferStatus { leg, status } => Some((*leg, *status)),
            _ => None,
        })
        .collect()
}

fn blind(h: &mut Harness, leg: LegId, number: &str) {
    h.sip(SipInput::Transfer {
        leg,
        target: TransferTarget::Number(number.into()),
    });
}

#[test]
fn blind_transfer_of_a_trunk_caller_to_an_fxs_port() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    h.advance(Duration::from_secs(5));
    blind(&mut h, phone, "101");
    let out = h.take();
    // The first call is over (answered; the transferor's side ended it) ...
    let first = cdrs(&out);
    assert_eq!(first.len(), 1, "{out:?}");
    assert_eq!(first[0].call_id, "t-1");
    assert_eq!(first[0].disposition, Disposition::Answered);
    assert_eq!(first[0].hangup_side, HangupSide::Callee);
    assert!(out.contains(&Output::Disconnect(leg(IN1), leg(phone))));
    // ... and port 1 rings with the trunk caller's number; nobody is hung up yet and
    // the trunk leg is not answered or alerted again.
    assert!(has_cmd(&out, 1, |c| matches!(c,
        Command::SendCallerId { caller_id, .. } if caller_id.number.as_str() == "+4930123")));
    assert!(hangups(&out).is_empty(), "{out:?}");
    assert!(status(&out).is_empty(), "{out:?}");
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::SipAnswer { .. } | Output::SipRinging { .. })));

    h.advance(Duration::from_secs(3));
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::Connect(leg(IN1), port(1))), "{out:?}");
    assert_eq!(status(&out), [(phone, 200)]);
    assert_eq!(hangups(&out), [(phone, EndReason::Normal)]);
    assert!(!out.contains(&Output::SipAnswer { leg: IN1 }));

    h.advance(Duration::from_secs(10));
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    let second = &cdrs(&out)[0];
    assert_eq!(second.call_id, "t-2");
    assert_eq!(second.direction, Direction::Inbound);
    assert_eq!(
        (second.caller.as_str(), second.callee.as_str()),
        ("+4930123", "101")
    );
    assert_eq!(second.callee_port, Some(1));
    assert_eq!(second.disposition, Disposition::Answered);
    // The transferee's leg links the two records, and the transfer chain names the
    // first call and who transferred it.
    assert_eq!(second.caller_sip_call_id, first[0].caller_sip_call_id);
    assert_eq!(second.billable_ms(), 10_000);
    assert!(first[0].transfer_chain.is_empty());
    assert_eq!(
        second.transfer_chain,
        [crate::cdr::CdrTransferHop {
            call_id: "t-1".into(),
            transferred_by: "210".into(),
        }]
    );
}

#[test]
fn blind_transfer_to_a_busy_extension_reports_486_and_releases_everyone() {
    let mut h = Harness::new();
    // 103 (no call waiting) is busy: off-hook dialling.
    h.ev(3, Event::OffHook);
    let phone = trunk_call_answered_by_210(&mut h);
    blind(&mut h, phone, "103");
    let out = h.take();
    assert_eq!(status(&out), [(phone, 486)]);
    let mut hung = hangups(&out);
    hung.sort();
    assert_eq!(hung, [(IN1, EndReason::Busy), (phone, EndReason::Normal)]);
    let records = cdrs(&out);
    assert_eq!(records.len(), 2, "{out:?}");
    assert_eq!(records[1].disposition, Disposition::Busy);
    assert_eq!(records[1].callee, "103");
    assert_eq!(h.cc.active_calls(), 0);
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn unanswered_blind_transfer_times_out_with_480() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    blind(&mut h, phone, "211");
    let (target, _, _) = only_dial(&h.take());
    h.advance(Duration::from_secs(31));
    let out = h.take();
    assert_eq!(status(&out), [(phone, 480)]);
    let mut hung = hangups(&out);
    hung.sort();
    // (The answered trunk leg gets a BYE whatever the reason says.)
    let mut want = vec![
        (IN1, EndReason::NoAnswer),
        (phone, EndReason::Normal),
        (target, EndReason::NoAnswer),
    ];
    want.sort();
    assert_eq!(hung, want);
}

#[test]
fn refused_transfers_change_nothing() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    // Not a number of the dial plan.
    blind(&mut h, phone, "555");
    assert_eq!(
        h.take(),
        [Output::SipTransferStatus {
            leg: phone,
            status: 404
        }]
    );
    // The trunk leg is not a transferor: its call is the one of the phone's leg, but
    // an unknown leg has no call.
    blind(&mut h, LegId(77), "101");
    assert_eq!(
        h.take(),
        [Output::SipTransferStatus {
            leg: LegId(77),
            status: 481
        }]
    );
    // The call is still up and ends normally.
    assert_eq!(h.cc.active_calls(), 1);
    h.sip(SipInput::Ended {
        leg: phone,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    assert_eq!(cdrs(&out).len(), 1);
}

#[test]
fn a_ringing_call_cannot_be_transferred() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.take();
    blind(&mut h, IN1, "102");
    assert_eq!(
        h.take(),
        [Output::SipTransferStatus {
            leg: IN1,
            status: 481
        }]
    );
    assert!(h.cc.active_calls() == 1);
}

#[test]
fn blind_transfer_to_an_outside_number_uses_the_line_and_is_done_when_dialled() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    blind(&mut h, phone, "95551234#");
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(out.contains(&Output::Connect(leg(IN1), port(6))));
    assert_eq!(status(&out), [(phone, 200)]);
    assert_eq!(hangups(&out), [(phone, EndReason::Normal)]);
    // The transferee (already answered) is not answered again.
    assert!(!out.contains(&Output::SipAnswer { leg: IN1 }));
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.direction, Direction::Outbound);
    assert_eq!(cdr.callee, "5551234");
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease));
}

#[test]
fn the_transferor_hanging_up_first_changes_nothing() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    blind(&mut h, phone, "211");
    let (target, _, _) = only_dial(&h.take());
    // Phones often send BYE right after the 202 / NOTIFY 100.
    h.sip(SipInput::Ended {
        leg: phone,
        reason: EndReason::Normal,
    });
    // A re-INVITE hold on a leg that is no longer a party bridges nothing.
    h.sip(SipInput::Hold {
        leg: phone,
        held: false,
    });
    assert_eq!(h.take(), []);
    h.sip(SipInput::Answered { leg: target });
    let out = h.take();
    assert_eq!(out, [Output::Connect(leg(IN1), leg(target))]);
}

#[test]
fn a_waiting_transferor_holding_or_dialling_touches_no_bridge() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    blind(&mut h, phone, "101");
    h.take();
    h.sip(SipInput::Hold {
        leg: phone,
        held: true,
    });
    h.sip(SipInput::Hold {
        leg: phone,
        held: false,
    });
    h.sip(SipInput::Digit {
        leg: phone,
        digit: '5',
    });
    assert_eq!(h.take(), []);
}

#[test]
fn fxs_transferee_hears_ringback_and_gets_the_new_call() {
    let mut h = Harness::new();
    // FXS 101 calls SIP 210, which transfers it to SIP 211.
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: phone });
    h.take();
    blind(&mut h, phone, "211");
    let out = h.take();
    let (target, t, _) = only_dial(&out);
    assert_eq!(t, SipTarget::Extension("211".into()));
    h.sip(SipInput::Ringing { leg: target });
    assert!(tone_is(&h.take(), 1, Tone::Ringback));
    h.sip(SipInput::Answered { leg: target });
    let out = h.take();
    assert!(out.contains(&Output::Connect(port(1), leg(target))));
    assert_eq!(status(&out), [(phone, 200)]);
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(target, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.direction, Direction::Internal);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "211"));
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
}

#[test]
fn a_call_transferred_twice_names_both_calls_in_its_chain() {
    let mut h = Harness::new();
    // FXS 101 calls SIP 210; 210 transfers it to 211; 211 transfers it to FXS 103.
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: phone });
    h.take();
    blind(&mut h, phone, "211");
    let (second, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: second });
    let out = h.take();
    assert_eq!(status(&out), [(phone, 200)]);
    blind(&mut h, second, "103");
    let out = h.take();
    let records = cdrs(&out);
    assert_eq!(records.len(), 1, "{out:?}");
    assert_eq!(records[0].call_id, "t-2");
    assert_eq!(
        records[0].transfer_chain,
        [crate::cdr::CdrTransferHop {
            call_id: "t-1".into(),
            transferred_by: "210".into(),
        }]
    );
    h.ev(3, Event::OffHook);
    h.advance(Duration::from_secs(4));
    h.ev(1, Event::OnHook);
    let out = h.take();
    let third = &cdrs(&out)[0];
    assert_eq!(third.call_id, "t-3");
    assert_eq!(
        (third.caller.as_str(), third.callee.as_str()),
        ("101", "103")
    );
    let chain: Vec<(&str, &str)> = third
        .transfer_chain
        .iter()
        .map(|hop| (hop.call_id.as_str(), hop.transferred_by.as_str()))
        .collect();
    assert_eq!(chain, [("t-1", "210"), ("t-2", "211")]);
}

#[test]
fn attended_transfer_bridges_the_two_far_parties() {
    let mut h = Harness::new();
    // Phone 210 calls FXS 101 (IN1), then holds it and calls 211 (IN2).
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.sip(SipInput::Hold {
        leg: IN1,
        held: true,
    });
    h.incoming(IN2, SipOrigin::Extension("210".into()), "210", "211");
    let (y, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: y });
    h.take();
    h.advance(Duration::from_secs(4));
    h.sip(SipInput::Transfer {
        leg: IN1,
        target: TransferTarget::Replaces(IN2),
    });
    let out = h.take();
    let records = cdrs(&out);
    assert_eq!(records.len(), 2, "{out:?}");
    assert!(records
        .iter()
        .all(|c| c.disposition == Disposition::Answered && c.hangup_side == HangupSide::Caller));
    assert!(out.contains(&Output::Disconnect(leg(IN2), leg(y))));
    assert!(out.contains(&Output::Connect(port(1), leg(y))), "{out:?}");
    assert_eq!(status(&out), [(IN1, 200)]);
    let mut hung = hangups(&out);
    hung.sort();
    assert_eq!(hung, [(IN1, EndReason::Normal), (IN2, EndReason::Normal)]);
    // 101 and 211 talk; 211 hangs up.
    h.sip(SipInput::Ended {
        leg: y,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "211"));
    assert_eq!(cdr.direction, Direction::Internal);
    assert_eq!(cdr.callee_sip_call_id, records[1].callee_sip_call_id);
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn attended_transfer_needs_two_connected_calls() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    // The second call still rings.
    h.incoming(IN2, SipOrigin::Extension("210".into()), "210", "211");
    h.take();
    h.sip(SipInput::Transfer {
        leg: IN1,
        target: TransferTarget::Replaces(IN2),
    });
    assert_eq!(
        h.take(),
        [Output::SipTransferStatus {
            leg: IN1,
            status: 481
        }]
    );
    // A leg cannot replace itself.
    h.sip(SipInput::Transfer {
        leg: IN1,
        target: TransferTarget::Replaces(IN1),
    });
    assert_eq!(
        h.take(),
        [Output::SipTransferStatus {
            leg: IN1,
            status: 481
        }]
    );
    assert_eq!(h.cc.active_calls(), 2);
}

#[test]
fn invite_with_replaces_takes_over_a_connected_leg() {
    let mut h = Harness::new();
    let phone = trunk_call_answered_by_210(&mut h);
    h.sip(SipInput::Incoming {
        leg: IN3,
        origin: SipOrigin::Extension("211".into()),
        caller_number: "211".into(),
        caller_name: String::new(),
        dialled: "210".into(),
        sip_call_id: "pickup@phone".into(),
        replaces: Some(phone),
    });
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN3 }), "{out:?}");
    assert!(out.contains(&Output::Disconnect(leg(IN1), leg(phone))));
    assert!(out.contains(&Output::Connect(leg(IN3), leg(IN1))));
    assert_eq!(hangups(&out), [(phone, EndReason::Normal)]);
    assert_eq!(cdrs(&out).len(), 1);
    h.sip(SipInput::Ended {
        leg: IN3,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.direction, Direction::Outbound);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("211", "+4930123")
    );
    assert_eq!(cdr.caller_sip_call_id.as_deref(), Some("pickup@phone"));
}

#[test]
fn invite_with_replaces_for_a_ringing_leg_is_refused() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "210");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::Incoming {
        leg: IN3,
        origin: SipOrigin::Extension("211".into()),
        caller_number: "211".into(),
        caller_name: String::new(),
        dialled: "210".into(),
        sip_call_id: "pickup@phone".into(),
        replaces: Some(phone),
    });
    assert_eq!(
        h.take(),
        [Output::SipHangup {
            leg: IN3,
            reason: EndReason::Forbidden
        }]
    );
    assert_eq!(h.cc.active_legs(), 2);
}

// Analog phones: flash, dial the target, hang up (transfer on hang-up).

/// A trunk call (IN1, from +4930123) answered on FXS 1 (101); 101 flashes (the trunk
/// caller is held, dial tone) and dials 103.
fn trunk_caller_held_while_101_dials_103(h: &mut Harness) {
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    h.ev(1, Event::OffHook);
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(
        out.contains(&Output::Disconnect(port(1), leg(IN1)))
            || out.contains(&Output::Disconnect(leg(IN1), port(1))),
        "{out:?}"
    );
    assert!(tone_is(&out, 1, Tone::Dial), "{out:?}");
    h.dial(1, "103");
    let out = h.take();
    assert!(
        has_cmd(&out, 3, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
}

fn connected(out: &[Output], a: MediaEnd, b: MediaEnd) -> bool {
    out.contains(&Output::Connect(a, b)) || out.contains(&Output::Connect(b, a))
}

#[test]
fn an_analog_phone_hanging_up_after_the_consultation_answered_makes_an_attended_transfer() {
    let mut h = Harness::new();
    trunk_caller_held_while_101_dials_103(&mut h);
    h.ev(3, Event::OffHook);
    let out = h.take();
    assert!(connected(&out, port(1), port(3)), "{out:?}");
    h.advance(Duration::from_secs(4));
    h.ev(1, Event::OnHook);
    let out = h.take();
    // Both of 101's calls end (answered, hung up by 101); the trunk caller and 103
    // talk as a new call, 101 is idle (no recall, no busy tone), nothing hung up.
    let ended = cdrs(&out);
    assert_eq!(ended.len(), 2, "{out:?}");
    let first = ended
        .iter()
        .find(|c| c.caller == "+4930123")
        .expect("trunk call's CDR");
    let consult = ended
        .iter()
        .find(|c| c.caller == "101")
        .expect("consultation's CDR");
    assert_eq!(first.disposition, Disposition::Answered);
    // Held from the flash to the transfer: dialling (100 ms a digit) and 4 s of talk.
    assert_eq!(first.hold_ms, Some(4_300), "{first:?}");
    assert_eq!(
        (consult.callee.as_str(), consult.disposition),
        ("103", Disposition::Answered)
    );
    assert!(connected(&out, leg(IN1), port(3)), "{out:?}");
    assert!(hangups(&out).is_empty(), "{out:?}");
    assert!(
        !has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    assert!(!tone_is(&out, 3, Tone::Busy), "{out:?}");
    assert_eq!(h.cc.active_calls(), 1);
    // 103 hangs up: the new call's CDR names the trunk call and 101 as transferor.
    h.advance(Duration::from_secs(10));
    h.ev(3, Event::OnHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let c = &cdrs(&out)[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("+4930123", "103"));
    assert_eq!(c.direction, Direction::Inbound);
    assert_eq!(c.disposition, Disposition::Answered);
    assert_eq!(c.billable_ms(), 10_000);
    assert_eq!(c.transfer_chain.len(), 1, "{c:?}");
    assert_eq!(c.transfer_chain[0].call_id, first.call_id);
    assert_eq!(c.transfer_chain[0].transferred_by, "101");
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn an_analog_phone_hanging_up_while_the_target_rings_transfers_on_ringing() {
    let mut h = Harness::new();
    trunk_caller_held_while_101_dials_103(&mut h);
    h.advance(Duration::from_secs(2));
    h.ev(1, Event::OnHook);
    let out = h.take();
    // The trunk call ends (its CDR); 103 goes on ringing (no stop, no new caller ID),
    // 101 is not rung back.
    let ended = cdrs(&out);
    assert_eq!(ended.len(), 1, "{out:?}");
    assert_eq!(ended[0].caller, "+4930123");
    let first_id = ended[0].call_id.clone();
    assert!(!has_cmd(&out, 3, |c| *c == Command::StopRing), "{out:?}");
    assert!(
        !has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    assert!(hangups(&out).is_empty(), "{out:?}");
    h.ev(3, Event::OffHook);
    let out = h.take();
    assert!(connected(&out, leg(IN1), port(3)), "{out:?}");
    h.advance(Duration::from_secs(6));
    h.ev(3, Event::OnHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let c = &cdrs(&out)[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("+4930123", "103"));
    assert_eq!(c.direction, Direction::Inbound);
    assert_eq!(c.disposition, Disposition::Answered);
    assert_eq!(c.billable_ms(), 6_000);
    assert_eq!(c.transfer_chain.len(), 1, "{c:?}");
    assert_eq!(c.transfer_chain[0].call_id, first_id);
    assert_eq!(c.transfer_chain[0].transferred_by, "101");
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn a_call_transferred_on_ringing_that_is_not_answered_gives_the_caller_the_failure() {
    let mut h = Harness::new();
    trunk_caller_held_while_101_dials_103(&mut h);
    h.ev(1, Event::OnHook);
    h.take();
    // Nobody answers 103: the ring timeout ends the call; the trunk caller is hung up.
    h.advance(Duration::from_secs(120));
    let out = h.take();
    assert!(has_cmd(&out, 3, |c| *c == Command::StopRing), "{out:?}");
    assert_eq!(hangups(&out).len(), 1, "{out:?}");
    let c = &cdrs(&out)[0];
    assert_eq!(c.caller, "+4930123");
    assert_eq!(c.disposition, Disposition::NoAnswer);
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn hanging_up_before_the_consultation_is_dialled_or_after_it_failed_rings_the_phone_back() {
    // Dial tone only, nothing dialled: recall, as before.
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    h.ev(1, Event::OffHook);
    h.ev(1, Event::HookFlash);
    h.take();
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(cdrs(&out).is_empty(), "{out:?}");
    assert!(
        has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    // The consultation got busy (103 is off-hook and has no call waiting): recall.
    let mut h = Harness::new();
    h.ev(3, Event::OffHook);
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    h.ev(1, Event::OffHook);
    h.ev(1, Event::HookFlash);
    h.dial(1, "103");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Busy), "{out:?}");
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(
        has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    assert!(hangups(&out).is_empty(), "{out:?}");
}
