//! Click-to-call (see `click.rs`) on a virtual clock, with the dial plan of
//! `tests_sip.rs` (101 FXS 1, 102 FXS 2 + SIP, 103 FXS 3, 210/211 SIP only, FXO 6
//! outside, prefix 9).

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::cdr::Disposition;

impl Harness {
    /// A click-to-call now; its outputs are collected like an event's.
    fn click(&mut self, from: &str, to: &str) -> Result<String, ClickToCallError> {
        let r = self.cc.click_to_call(self.now, from, to);
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
        r
    }
}

fn rings(out: &[Output], port: u8) -> bool {
    has_cmd(out, port, |c| matches!(c, Command::Ring(_)))
}

fn caller_id_on(out: &[Output], port: u8) -> Option<(String, String)> {
    out.iter().find_map(|o| match o {
        Output::Command {
            port: p,
            command: Command::SendCallerId { caller_id, .. },
        } if *p == port => Some((
            caller_id.number.as_str().to_owned(),
            caller_id.name.as_str().to_owned(),
        )),
        _ => None,
    })
}

fn port_states(out: &[Output], port: u8) -> Vec<PortState> {
    out.iter()
        .filter_map(|o| match o {
            Output::PortState { port: p, state } if *p == port => Some(*state),
            _ => None,
        })
        .collect()
}

#[test]
fn the_callers_phone_rings_showing_the_target_then_the_target_rings_showing_the_caller() {
    let mut h = Harness::new();
    let id = h.click("101", "103").expect("started");
    let out = h.take();
    assert!(rings(&out, 1), "{out:?}");
    assert!(
        !rings(&out, 3),
        "nothing rings the target before the caller answers"
    );
    assert_eq!(
        caller_id_on(&out, 1),
        Some(("103".into(), "Ext 103".into()))
    );
    assert_eq!(port_states(&out, 1), vec![PortState::Ringing]);
    // The user lifts the phone: it stops ringing, the target rings with 101's ID
    // and the user hears ringback, as if 103 had been dialled.
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing), "{out:?}");
    assert!(rings(&out, 3), "{out:?}");
    assert_eq!(
        caller_id_on(&out, 3),
        Some(("101".into(), "Ext 101".into()))
    );
    assert!(tone_is(&out, 1, crate::tones::Tone::Ringback));
    // The call is the one the API named.
    let snap = h.cc.snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].call_id, id);
    assert_eq!(
        (
            snap[0].caller_number.as_str(),
            snap[0].callee_number.as_str()
        ),
        ("101", "103")
    );
    h.ev(3, Event::OffHook);
    assert!(h.take().contains(&Output::Connect(port(1), port(3))));
    h.advance(Duration::from_secs(10));
    h.ev(1, Event::OnHook);
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(cdr.call_id, id);
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "103"));
}

#[test]
fn an_outside_number_is_dialled_at_once_when_the_phone_answers() {
    let mut h = Harness::new();
    let id = h.click("102", "95551234").expect("started");
    let out = h.take();
    // Caller ID shows the number without the outside-line prefix.
    assert_eq!(
        caller_id_on(&out, 2),
        Some(("5551234".into(), String::new()))
    );
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    // No inter-digit wait: the line is seized and dialled now.
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(has_cmd(
        &out,
        6,
        |c| matches!(c, Command::FxoDial(d) if d.as_str() == "5551234")
    ));
    assert_eq!(h.cc.snapshot()[0].call_id, id);
    assert_eq!(h.cc.snapshot()[0].direction, Direction::Outbound);
}

#[test]
fn a_customers_or_leads_number_gets_the_outside_line_prefix() {
    let mut h = Harness::new();
    let to = h.cc.outside_dial_string("5551234").expect("prefix 9");
    assert_eq!(to, "95551234");
    h.click("102", &to).expect("started");
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(has_cmd(
        &out,
        6,
        |c| matches!(c, Command::FxoDial(d) if d.as_str() == "5551234")
    ));
    h.cc.settings.outside_line_prefix = None;
    assert_eq!(
        h.cc.outside_dial_string("5551234"),
        Err(ClickToCallError::NoOutsideLine("5551234".into()))
    );
}

#[test]
fn no_answer_within_30_s_stops_the_ringing_and_writes_a_no_answer_cdr() {
    let mut h = Harness::new();
    let id = h.click("101", "103").expect("started");
    h.take();
    h.advance(CLICK_TO_CALL_ANSWER - Duration::from_millis(100));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(100));
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing), "{out:?}");
    assert_eq!(port_states(&out, 1), vec![PortState::Idle]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.call_id, id);
    assert_eq!(cdr.disposition, Disposition::NoAnswer);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "103"));
    assert_eq!(cdr.answered_at_ms, None);
    // Lifting the phone now gives plain dial tone.
    h.ev(1, Event::OffHook);
    assert!(tone_is(&h.take(), 1, crate::tones::Tone::Dial));
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let is_bad = |r: Result<String, ClickToCallError>, to: &str| matches!(r, Err(ClickToCallError::BadNumber { to: t, .. }) if t == to);
    for to in ["", "10a", "1#", "555", "1", "9", "101"] {
        let r = h.click("101", to);
        assert!(is_bad(r.clone(), to), "{to:?}: {r:?}");
    }
    assert_eq!(
        h.click("150", "103"),
        Err(ClickToCallError::UnknownExtension("150".into()))
    );
    assert!(h.take().is_empty(), "refusals send nothing");
    // A phone in use is busy.
    h.ev(1, Event::OffHook);
    h.take();
    assert_eq!(
        h.click("101", "103"),
        Err(ClickToCallError::Busy("101".into()))
    );
    assert!(h.take().is_empty());
    // And a phone already ringing for a click-to-call is busy too.
    h.click("102", "103").expect("started");
    h.take();
    assert_eq!(
        h.click("102", "101"),
        Err(ClickToCallError::Busy("102".into()))
    );
}

#[test]
fn a_call_to_a_phone_ringing_for_a_click_to_call_gets_busy() {
    let mut h = Harness::new();
    h.click("103", "101").expect("started");
    h.take();
    // 101 calls 103 (no call waiting on 103 anyway): busy, 103 keeps its click ring.
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    let out = h.take();
    assert!(tone_is(&out, 1, crate::tones::Tone::Busy), "{out:?}");
    assert!(!has_cmd(&out, 3, |c| *c == Command::StopRing));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
}

#[test]
fn a_fault_while_ringing_ends_the_click_to_call_with_a_cdr() {
    let mut h = Harness::new();
    let id = h.click("101", "103").expect("started");
    h.take();
    h.ev(1, Event::Fault(line_proto::FaultKind::OverCurrent));
    let out = h.take();
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.call_id.as_str(), cdr.disposition),
        (id.as_str(), Disposition::Congestion)
    );
    assert_eq!(h.cc.timeout(), None, "no click deadline is left");
}

fn dial_caller_id(out: &[Output]) -> Option<(String, String)> {
    out.iter().find_map(|o| match o {
        Output::SipDial {
            caller_number,
            caller_name,
            ..
        } => Some((caller_number.clone(), caller_name.clone())),
        _ => None,
    })
}

#[test]
fn a_sip_only_extension_is_invited_and_the_leg_that_answers_calls_the_target() {
    let mut h = Harness::new();
    let id = h.click("210", "101").expect("started");
    let out = h.take();
    let (l, target, sip_call_id) = only_dial(&out);
    assert_eq!(target, SipTarget::Extension("210".into()));
    assert!(sip_call_id.starts_with(&format!("{id}-")), "{sip_call_id}");
    assert_eq!(dial_caller_id(&out), Some(("101".into(), "Ext 101".into())));
    assert!(!rings(&out, 1), "the target waits for the answer");
    // Its phone is busy for another click meanwhile.
    assert_eq!(
        h.click("210", "103"),
        Err(ClickToCallError::Busy("210".into()))
    );
    h.advance(Duration::from_secs(3));
    h.sip(SipInput::Answered { leg: l });
    let out = h.take();
    // No 200 OK or 180 towards it: the leg is up already, it is the caller now.
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::SipAnswer { .. } | Output::SipRinging { .. })));
    assert!(rings(&out, 1), "{out:?}");
    assert_eq!(
        caller_id_on(&out, 1),
        Some(("210".into(), "Phone 210".into()))
    );
    assert_eq!(h.cc.snapshot()[0].call_id, id);
    h.ev(1, Event::OffHook);
    assert!(h.take().contains(&Output::Connect(leg(l), port(1))));
    h.advance(Duration::from_secs(4));
    h.sip(SipInput::Ended {
        leg: l,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert!(tone_is(&out, 1, crate::tones::Tone::Busy), "{out:?}");
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.call_id, id);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str(), cdr.disposition),
        ("210", "101", Disposition::Answered)
    );
    assert_eq!(
        cdr.caller_sip_call_id.as_deref(),
        Some(sip_call_id.as_str())
    );
}

#[test]
fn a_sip_phone_that_declines_or_does_not_answer_ends_the_click_to_call_with_a_cdr() {
    let mut h = Harness::new();
    let id = h.click("211", "95551234").expect("started");
    let (l, _, _) = only_dial(&h.take());
    h.sip(SipInput::Ended {
        leg: l,
        reason: EndReason::Busy,
    });
    let out = h.take();
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.call_id.as_str(), cdr.disposition, cdr.direction),
        (id.as_str(), Disposition::Busy, Direction::Outbound)
    );
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("211", "5551234")
    );
    assert!(hangups(&out).is_empty(), "the leg ended by itself");
    // Nobody answers the next one: after 30 s the INVITE is cancelled.
    let id = h.click("211", "101").expect("started again");
    let (l, _, _) = only_dial(&h.take());
    h.advance(CLICK_TO_CALL_ANSWER);
    let out = h.take();
    assert_eq!(hangups(&out), vec![(l, EndReason::NoAnswer)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.call_id.as_str(), cdr.disposition),
        (id.as_str(), Disposition::NoAnswer)
    );
    assert_eq!(h.cc.timeout(), None);
    assert_eq!(h.cc.active_legs(), 0);
    // A late answer on the cancelled leg is hung up again, nothing rings.
    h.sip(SipInput::Answered { leg: l });
    let out = h.take();
    assert_eq!(hangups(&out), vec![(l, EndReason::Normal)]);
    assert!(!rings(&out, 1));
}

#[test]
fn plus_numbers_follow_the_sites_numbering_plan() {
    for (country, number, want) in [
        (Country::De, "+4930123456", "030123456"),
        (Country::De, "+12125550100", "0012125550100"),
        (Country::Us, "+12125550100", "12125550100"),
        (Country::Us, "+4930123456", "0114930123456"),
        (Country::Jp, "+81312345678", "0312345678"),
        (Country::Jp, "+4930123456", "0104930123456"),
        (Country::Uk, "+442079460000", "02079460000"),
        (Country::Fr, "+33123456789", "0123456789"),
        (Country::Cn, "+861012345678", "01012345678"),
    ] {
        assert_eq!(
            e164_dialable(country, number).as_deref(),
            Ok(want),
            "{country:?} {number}"
        );
    }
    // Refusals name the problem.
    for (bad, why) in [
        ("4930123456", "starts with +"),
        ("+", "followed by digits"),
        ("+49 30", "followed by digits"),
        ("+49", "nothing follows"),
        ("+1234567890123456", "at most 15"),
    ] {
        let e = e164_dialable(Country::De, bad).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn a_plus_number_is_clicked_through_the_outside_line_in_national_or_international_form() {
    // The harness is a US site (NANP) with outside prefix 9 and FXO 6.
    let mut h = Harness::new();
    let to =
        h.cc.outside_dial_string("+4930123456")
            .expect("international");
    assert_eq!(to, "90114930123456");
    assert_eq!(
        h.cc.outside_dial_string("+12125550100").as_deref(),
        Ok("912125550100")
    );
    let id = h.click("102", &to).expect("started");
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(
        has_cmd(
            &out,
            6,
            |c| matches!(c, Command::FxoDial(d) if d.as_str() == "0114930123456")
        ),
        "{out:?}"
    );
    assert_eq!(h.cc.snapshot()[0].call_id, id);
    // Refused before anything rings: a bad + number, and no outside line at all.
    for bad in ["+", "+1", "+12345678901234567"] {
        assert!(
            matches!(
                h.cc.outside_dial_string(bad),
                Err(ClickToCallError::BadNumber { .. })
            ),
            "{bad}"
        );
    }
    h.cc.settings.outside_line_prefix = None;
    assert_eq!(
        h.cc.outside_dial_string("+4930123456"),
        Err(ClickToCallError::NoOutsideLine("+4930123456".into()))
    );
}

#[test]
fn a_click_to_a_route_the_phone_may_not_use_is_refused_before_anything_rings() {
    // `00` needs `international`: 101 and 211 hold it, 103 and 210 do not.
    let mut h = permission_harness();
    for from in ["103", "210"] {
        let err = h.click(from, "90049301234").expect_err("refused");
        assert_eq!(
            err,
            ClickToCallError::NotPermitted {
                from: from.into(),
                to: "90049301234".into(),
                refused: RouteRefused {
                    route: "international".into(),
                    permission: "international".into(),
                },
            }
        );
        assert!(err.to_string().contains("\"international\""), "{err}");
        assert!(h.take().is_empty(), "nothing rings, no CDR");
    }
    // The phone may dial what needs no permission.
    h.click("103", "90301234").expect("national is open");
    assert!(rings(&h.take(), 3));
    // Phones holding it are rung.
    h.click("101", "90049301234").expect("101 holds it");
    assert!(rings(&h.take(), 1));
    h.click("211", "90049301234").expect("211 holds it");
    assert!(matches!(
        only_dial(&h.take()),
        (_, SipTarget::Extension(e), _) if e == "211"
    ));
}
