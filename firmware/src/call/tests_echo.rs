//! The echo test on a virtual clock (see `echo.rs`), with the dial plan of
//! `tests_sip.rs` (101 FXS 1, 102 FXS 2 + SIP, 210/211 SIP only) and the default code
//! `*43`.

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::cdr::{Disposition, HangupSide};
use crate::tones::Tone;

fn echo(end: MediaEnd, on: bool) -> Output {
    Output::Echo { end, on }
}

fn echoes(out: &[Output]) -> Vec<Output> {
    out.iter()
        .filter(|o| matches!(o, Output::Echo { .. }))
        .cloned()
        .collect()
}

#[test]
fn an_analog_phone_hears_itself_until_it_hangs_up() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "*4");
    assert!(echoes(&h.take()).is_empty(), "not before the whole code");
    h.dial(1, "3");
    let out = h.take();
    assert_eq!(echoes(&out), [echo(port(1), true)]);
    assert!(dials(&out).is_empty());
    assert!(!has_cmd(&out, 1, |c| matches!(c, Command::PlayTone(_))));
    assert_eq!(h.cc.active_calls(), 1);

    // Keys and hook-flash change nothing while it runs.
    h.advance(Duration::from_secs(10));
    h.ev(1, Event::Digit(b'5'));
    h.ev(1, Event::HookFlash);
    assert!(h.take().iter().all(|o| !matches!(
        o,
        Output::Echo { .. } | Output::Command { .. } | Output::Cdr(_)
    )));

    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(echoes(&out), [echo(port(1), false)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "*43"));
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
    assert!(cdr.answered_at_ms.is_some());
    assert_eq!(h.cc.active_calls(), 0);
    // Nothing is left to time out.
    h.advance(ECHO_TEST_LIMIT * 2);
    assert!(h.take().is_empty());
}

#[test]
fn the_box_ends_an_analog_test_after_the_limit_with_busy_tone() {
    let mut h = Harness::new();
    h.ev(2, Event::OffHook);
    h.dial(2, "*43");
    assert_eq!(echoes(&h.take()), [echo(port(2), true)]);
    h.advance(ECHO_TEST_LIMIT - Duration::from_millis(1));
    assert!(echoes(&h.take()).is_empty());
    h.advance(Duration::from_millis(1));
    let out = h.take();
    assert_eq!(echoes(&out), [echo(port(2), false)]);
    assert!(tone_is(&out, 2, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("102", "*43"));
    assert_eq!(cdr.hangup_side, HangupSide::System);
    // The phone hangs up on the busy tone: an idle port, no second CDR.
    h.ev(2, Event::OnHook);
    assert!(cdrs(&h.take()).is_empty());
    h.ev(2, Event::OffHook);
    assert!(tone_is(&h.take(), 2, Tone::Dial));
}

#[test]
fn a_sip_phone_is_answered_and_gets_a_bye_after_the_limit() {
    let mut h = Harness::new();
    // The phone's send key `#` is taken as part of the number.
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "*43#");
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert_eq!(echoes(&out), [echo(leg(IN1), true)]);
    assert!(dials(&out).is_empty());
    h.advance(ECHO_TEST_LIMIT);
    let out = h.take();
    assert_eq!(echoes(&out), [echo(leg(IN1), false)]);
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("210", "*43#"));
    assert_eq!(cdr.caller_sip_call_id.as_deref(), Some("call-1@phone"));
    assert_eq!(cdr.hangup_side, HangupSide::System);
    assert_eq!(cdr.disposition, Disposition::Answered);
}

#[test]
fn a_sip_phone_hanging_up_ends_its_test() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "*43");
    h.take();
    h.advance(Duration::from_secs(3));
    h.sip(SipInput::Digit {
        leg: IN1,
        digit: '7',
    });
    assert!(h.take().is_empty(), "keys are ignored");
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(echoes(&out), [echo(leg(IN1), false)]);
    assert!(hangups(&out).is_empty(), "the phone hung up: no BYE back");
    assert_eq!(cdrs(&out)[0].hangup_side, HangupSide::Caller);
    assert_eq!(h.cc.active_legs(), 0);
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn trunk_callers_cannot_reach_the_echo_test() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "*43");
    let out = h.take();
    assert!(echoes(&out).is_empty());
    assert_eq!(hangups(&out), [(IN1, EndReason::Unallocated)]);
}

#[test]
fn turned_off_the_code_is_an_unknown_number() {
    let mut h = Harness::with(|s| s.echo_test_code = None);
    h.ev(1, Event::OffHook);
    h.dial(1, "*43");
    let out = h.take();
    assert!(echoes(&out).is_empty());
    assert!(tone_is(&out, 1, Tone::Unobtainable));
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "*43");
    let out = h.take();
    assert!(echoes(&out).is_empty());
    assert_eq!(hangups(&out), [(IN1, EndReason::Unallocated)]);
}

#[test]
fn another_code_can_be_configured() {
    let mut h = Harness::with(|s| s.echo_test_code = Some("#99".to_owned()));
    h.ev(1, Event::OffHook);
    h.dial(1, "#99");
    assert_eq!(echoes(&h.take()), [echo(port(1), true)]);
    h.ev(3, Event::OffHook);
    h.dial(3, "*43");
    let out = h.take();
    assert!(echoes(&out).is_empty());
    assert!(tone_is(&out, 3, Tone::Unobtainable));
}
