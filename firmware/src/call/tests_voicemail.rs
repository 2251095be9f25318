//! Voicemail on a virtual clock (see `voicemail.rs`), with the dial plan of
//! `tests_sip.rs` (101 FXS 1, 102 FXS 2 + SIP, 103 FXS 3 without call waiting, 210/211
//! SIP only, FXO 5 rings 101 and 210) and mailboxes 101, 102 (15 s no-answer time) and
//! 103 (with a greeting prompt).

use std::path::PathBuf;
use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::voicemail::{BEEP, PIN_FAILURES, STUTTER};
use super::*;
use crate::acd::codes::FeatureCodes;
use crate::acd::{AcdConfig, OverflowTarget, QueueConfig, Strategy};
use crate::cdr::{Disposition, HangupSide};
use crate::prompts::{Playback, Sound};
use crate::tones::{Country, Tone};

const GREETING: Duration = Duration::from_secs(3);

fn mailbox(number: &str) -> MailboxSettings {
    MailboxSettings {
        number: number.to_owned(),
        greeting: None,
        max_message: Duration::from_secs(60),
        max_messages: 3,
        on_busy: true,
        on_no_answer: true,
        no_answer: None,
    }
}

fn msg(id: i64, mailbox: &str, heard: bool) -> MessageInfo {
    MessageInfo {
        id,
        mailbox: mailbox.to_owned(),
        file: PathBuf::from(format!("/data/voicemail/msg-{mailbox}-{id}.wav")),
        duration: Duration::from_secs(4),
        heard,
    }
}

fn vm_harness(messages: Vec<MessageInfo>) -> Harness {
    let mut h = Harness::with(|s| {
        s.prompts.insert("vm-greeting-103".to_owned(), GREETING);
    });
    let mut b102 = mailbox("102");
    b102.no_answer = Some(Duration::from_secs(15));
    let mut b103 = mailbox("103");
    b103.greeting = Some("vm-greeting-103".to_owned());
    h.cc.set_voicemail(VoicemailSettings {
        codes: VoicemailCodes::default(),
        mailboxes: vec![mailbox("101"), b102, b103],
        messages,
    });
    drained(&mut h);
    h
}

fn tone_is(out: &[Output], port: u8, tone: Tone) -> bool {
    let want = Country::Us.tone(tone);
    out.iter().any(|o| {
        matches!(o, Output::Command { port: p, command: Command::PlayTone(t) } if *p == port && *t == want)
    })
}

fn has_cmd(out: &[Output], port: u8, f: impl Fn(&Command) -> bool) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Command { port: p, command } if *p == port && f(command)))
}

fn captures(out: &[Output]) -> Vec<Deposit> {
    out.iter()
        .filter_map(|o| match o {
            Output::Capture(d) => Some(Deposit::clone(d)),
            _ => None,
        })
        .collect()
}

fn capture_ends(out: &[Output]) -> Vec<(MediaEnd, u64, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CaptureEnd { end, capture, keep } => Some((*end, *capture, *keep)),
            _ => None,
        })
        .collect()
}

/// Everything call control put out since the last take (outputs of direct calls).
fn drained(h: &mut Harness) -> Vec<Output> {
    while let Some(o) = h.cc.poll_output() {
        h.out.push(o);
    }
    h.take()
}

fn plays(out: &[Output]) -> Vec<(MediaEnd, Playback)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Play { end, playback } => Some((*end, playback.clone())),
            _ => None,
        })
        .collect()
}

fn beep() -> Playback {
    Playback::looped(Sound::Tone(Tone::VoicemailBeep))
}

fn message_plays(out: &[Output]) -> Vec<PathBuf> {
    out.iter()
        .filter_map(|o| match o {
            Output::PlayMessage { file, .. } => Some(file.clone()),
            _ => None,
        })
        .collect()
}

fn waiting(out: &[Output]) -> Vec<(String, usize, usize)> {
    out.iter()
        .filter_map(|o| match o {
            Output::MessageWaiting {
                mailbox,
                new,
                heard,
            } => Some((mailbox.clone(), *new, *heard)),
            _ => None,
        })
        .collect()
}

fn cdrs(out: &[Output]) -> Vec<Cdr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cdr(c) => Some(Cdr::clone(c)),
            _ => None,
        })
        .collect()
}

fn pin_checks(out: &[Output]) -> Vec<(u64, String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CheckMailboxPin {
                check,
                mailbox,
                pin,
            } => Some((*check, mailbox.clone(), pin.expose().to_owned())),
            _ => None,
        })
        .collect()
}

/// The beep, then the capture of `end` into `mailbox` (returned).
fn beep_then_capture(h: &mut Harness, end: MediaEnd, mailbox: &str) -> Deposit {
    let out = h.take();
    assert!(plays(&out).contains(&(end, beep())), "{out:?}");
    assert!(captures(&out).is_empty(), "recording before the beep");
    h.advance(BEEP);
    let out = h.take();
    assert!(out.contains(&Output::StopPlay { end }), "{out:?}");
    let c = captures(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0].end, end);
    assert_eq!(c[0].mailbox, mailbox);
    assert_eq!(c[0].max, Duration::from_secs(60));
    c[0].clone()
}

#[test]
fn an_unanswered_call_goes_to_the_mailbox_after_its_no_answer_time_and_hash_ends_it() {
    let mut h = vm_harness(Vec::new());
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let out = h.take();
    // 102 rings on FXS 2 and its SIP phone.
    assert!(has_cmd(&out, 2, |c| matches!(c, Command::Ring(_))));
    let sip_leg = out
        .iter()
        .find_map(|o| match o {
            Output::SipDial { leg, .. } => Some(*leg),
            _ => None,
        })
        .expect("the SIP phone is offered the call");
    // 14 s: still ringing. 15 s: the mailbox answers.
    h.advance(Duration::from_secs(14));
    assert!(captures(&h.take()).is_empty());
    h.advance(Duration::from_secs(1));
    let out = h.out.clone();
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing), "{out:?}");
    assert!(out.contains(&Output::SipHangup {
        leg: sip_leg,
        reason: EndReason::NoAnswer
    }));
    assert!(
        has_cmd(&out, 1, |c| *c == Command::StopTone),
        "ringback stops"
    );
    let d = beep_then_capture(&mut h, MediaEnd::Port(1), "102");
    assert_eq!(d.caller_number, "101");
    assert!(cdrs(&h.out).is_empty(), "no CDR while recording");
    h.advance(Duration::from_secs(5));
    h.dial(1, "#");
    let out = h.take();
    assert_eq!(
        capture_ends(&out),
        vec![(MediaEnd::Port(1), d.capture, true)]
    );
    assert!(tone_is(&out, 1, Tone::Confirmation), "{out:?}");
    let cdr = cdrs(&out).pop().expect("CDR");
    assert_eq!(cdr.disposition, Disposition::NoAnswer);
    assert_eq!(cdr.callee, "102");
    // The daemon stored it: 102 now has a new message.
    h.cc.voicemail_message_done(d.capture, Some(msg(7, "102", false)));
    assert_eq!(waiting(&drained(&mut h)), vec![("102".to_owned(), 1, 0)]);
    assert_eq!(h.cc.mailbox_counts("102"), Some((1, 0)));
}

#[test]
fn a_busy_extension_plays_its_greeting_then_records_until_the_caller_hangs_up() {
    let mut h = vm_harness(Vec::new());
    // 103 (no call waiting) is off-hook: busy.
    h.ev(3, Event::OffHook);
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    let out = h.take();
    assert!(!tone_is(&out, 1, Tone::Busy), "{out:?}");
    assert!(plays(&out).contains(&(
        MediaEnd::Port(1),
        Playback {
            once: vec!["vm-greeting-103".to_owned()],
            then: None
        }
    )));
    // `#` is not needed: the greeting plays to its end, then the beep.
    h.advance(GREETING);
    let d = beep_then_capture(&mut h, MediaEnd::Port(1), "103");
    h.advance(Duration::from_secs(8));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(
        capture_ends(&out),
        vec![(MediaEnd::Port(1), d.capture, true)]
    );
    let cdr = cdrs(&out).pop().expect("CDR");
    assert_eq!(cdr.disposition, Disposition::Busy);
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
}

#[test]
fn the_recording_stops_at_the_longest_message() {
    let mut h = vm_harness(Vec::new());
    h.ev(3, Event::OffHook);
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    // `#` during the greeting skips to the beep.
    h.advance(Duration::from_secs(1));
    h.dial(1, "#");
    let d = beep_then_capture(&mut h, MediaEnd::Port(1), "103");
    h.advance(Duration::from_secs(59));
    assert!(capture_ends(&h.take()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        capture_ends(&h.take()),
        vec![(MediaEnd::Port(1), d.capture, true)]
    );
}

#[test]
fn a_full_mailbox_or_none_leaves_the_caller_with_busy() {
    let mut h = vm_harness(vec![
        msg(1, "103", false),
        msg(2, "103", true),
        msg(3, "103", false),
    ]);
    h.ev(3, Event::OffHook);
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Busy), "{out:?}");
    assert!(plays(&out).is_empty());
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
    // 210 (a SIP phone) has no mailbox: its callers are refused as before.
    h.incoming(IN1, SipOrigin::Trunk, "0301234567", "210");
    let leg = h
        .take()
        .iter()
        .find_map(|o| match o {
            Output::SipDial { leg, .. } => Some(*leg),
            _ => None,
        })
        .expect("210 offered");
    h.sip(SipInput::Ended {
        leg,
        reason: EndReason::Busy,
    });
    let out = h.take();
    assert!(
        captures(&out).is_empty() && plays(&out).is_empty(),
        "{out:?}"
    );
}

#[test]
fn a_sip_caller_is_answered_by_the_mailbox_and_ends_its_message_with_rfc4733_hash() {
    let mut h = vm_harness(Vec::new());
    h.incoming(IN1, SipOrigin::Trunk, "0301234567", "101");
    h.take();
    h.advance(Duration::from_secs(30));
    let out = h.out.clone();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }), "{out:?}");
    let d = beep_then_capture(&mut h, MediaEnd::Leg(IN1), "101");
    assert_eq!(d.caller_number, "0301234567");
    h.advance(Duration::from_secs(3));
    h.sip(SipInput::Digit {
        leg: IN1,
        digit: '#',
    });
    let out = h.take();
    assert_eq!(
        capture_ends(&out),
        vec![(MediaEnd::Leg(IN1), d.capture, true)]
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SipHangup { leg, .. } if *leg == IN1)));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
}

#[test]
fn a_sip_phone_that_answers_busy_sends_the_caller_to_the_mailbox() {
    let mut h = vm_harness(Vec::new());
    h.ev(1, Event::OffHook);
    h.ev(2, Event::OffHook); // FXS 2 busy: only 102's SIP phone is offered the call
    h.dial(1, "102");
    let out = h.take();
    let leg = out
        .iter()
        .find_map(|o| match o {
            Output::SipDial { leg, .. } => Some(*leg),
            _ => None,
        })
        .expect("SIP offer");
    h.sip(SipInput::Ended {
        leg,
        reason: EndReason::Busy,
    });
    beep_then_capture(&mut h, MediaEnd::Port(1), "102");
}

#[test]
fn a_queue_overflowing_to_voicemail_records_a_message_instead_of_busy() {
    let mut q = QueueConfig::new(
        "sales".parse().expect("name"),
        "7001".parse().expect("number"),
        Strategy::RingAll,
    );
    q.on_no_agents = Some(OverflowTarget::Voicemail("102".parse().expect("ext")));
    let acd = AcdSettings {
        config: AcdConfig::new(vec![q], Vec::new()).expect("config"),
        codes: FeatureCodes::default(),
    };
    let mut h = Harness::with(|s| s.acd = Some(acd));
    h.cc.set_voicemail(VoicemailSettings {
        codes: VoicemailCodes::default(),
        mailboxes: vec![mailbox("102")],
        messages: Vec::new(),
    });
    h.take();
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.out.clone();
    assert!(!tone_is(&out, 1, Tone::Busy), "{out:?}");
    let d = beep_then_capture(&mut h, MediaEnd::Port(1), "102");
    h.dial(1, "#");
    let mut out = h.take();
    assert_eq!(
        capture_ends(&out),
        vec![(MediaEnd::Port(1), d.capture, true)]
    );
    h.ev(1, Event::OnHook);
    out.extend(h.take());
    // The CDR keeps the queue the call left, unanswered, and where it went.
    let c = cdrs(&out).pop().expect("CDR");
    let q = c.queue.as_ref().expect("queue kept");
    assert_eq!((q.queue.as_str(), q.agent.as_deref()), ("sales", None));
    assert_eq!(
        c.queue_overflow,
        Some(crate::cdr::CdrQueueOverflow::Voicemail)
    );
}

#[test]
fn the_own_mailbox_code_plays_new_messages_first_and_7_deletes_9_keeps() {
    let mut h = vm_harness(vec![
        msg(1, "102", true),
        msg(2, "102", false),
        msg(3, "102", false),
        msg(4, "101", false),
    ]);
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(tone_is(&out, 2, Tone::StutterDial), "{out:?}");
    h.dial(2, "*97");
    let out = h.take();
    assert!(pin_checks(&out).is_empty(), "no PIN from the own phone");
    assert_eq!(message_plays(&out), vec![msg(2, "102", false).file]);
    // Played to its end: heard, then the choice.
    h.advance(Duration::from_secs(4));
    let out = h.take();
    assert!(out.contains(&Output::MessageHeard { id: 2 }), "{out:?}");
    assert_eq!(waiting(&out), vec![("102".to_owned(), 1, 2)]);
    assert!(tone_is(&out, 2, Tone::Confirmation));
    // 9 keeps it: the next new one plays; 7 deletes that one mid-play.
    h.dial(2, "9");
    assert_eq!(message_plays(&h.take()), vec![msg(3, "102", false).file]);
    h.dial(2, "7");
    let out = h.take();
    assert!(out.contains(&Output::DeleteMessage { id: 3 }), "{out:?}");
    assert_eq!(waiting(&out), vec![("102".to_owned(), 0, 2)]);
    // The old (heard) message comes last; * replays it; # ends the list.
    assert_eq!(message_plays(&out), vec![msg(1, "102", true).file]);
    h.dial(2, "*");
    assert_eq!(message_plays(&h.take()), vec![msg(1, "102", true).file]);
    h.dial(2, "#");
    let out = h.take();
    assert!(message_plays(&out).is_empty());
    assert!(tone_is(&out, 2, Tone::Confirmation), "no more messages");
    let cdr = cdrs(&out).pop().expect("CDR");
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(cdr.callee, "*97");
    assert_eq!(h.cc.mailbox_counts("102"), Some((0, 2)));
    // Hanging up, then off-hook again: steady dial tone (nothing new).
    h.ev(2, Event::OnHook);
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(tone_is(&out, 2, Tone::Dial) && !tone_is(&out, 2, Tone::StutterDial));
}

#[test]
fn stutter_dial_tone_turns_steady_and_stops_at_the_first_digit() {
    let mut h = vm_harness(vec![msg(4, "101", false)]);
    h.ev(1, Event::OffHook);
    assert!(tone_is(&h.take(), 1, Tone::StutterDial));
    h.advance(STUTTER);
    assert!(tone_is(&h.take(), 1, Tone::Dial));
    h.ev(1, Event::OnHook);
    h.ev(1, Event::OffHook);
    assert!(tone_is(&h.take(), 1, Tone::StutterDial));
    h.dial(1, "1");
    h.advance(STUTTER);
    let out = h.take();
    assert!(
        !tone_is(&out, 1, Tone::Dial),
        "dial tone after a digit: {out:?}"
    );
    // A phone without new messages (103) gets steady dial tone at once.
    h.ev(3, Event::OffHook);
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Dial) && !tone_is(&out, 3, Tone::StutterDial));
}

#[test]
fn any_mailbox_with_its_pin_from_another_phone() {
    let mut h = vm_harness(vec![msg(4, "101", false)]);
    h.ev(3, Event::OffHook);
    h.dial(3, "*98101#");
    let out = h.take();
    assert!(
        tone_is(&out, 3, Tone::Confirmation),
        "asks for the PIN: {out:?}"
    );
    h.dial(3, "4711#");
    let checks = pin_checks(&h.take());
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (checks[0].1.as_str(), checks[0].2.as_str()),
        ("101", "4711")
    );
    h.cc.mailbox_pin_checked(h.now, checks[0].0, true);
    assert_eq!(
        message_plays(&drained(&mut h)),
        vec![msg(4, "101", false).file]
    );
}

#[test]
fn wrong_pins_are_refused_and_lock_the_mailbox() {
    let mut h = vm_harness(Vec::new());
    for _ in 0..PIN_FAILURES {
        h.ev(3, Event::OffHook);
        h.dial(3, "*98101#1234#");
        let checks = pin_checks(&h.take());
        assert_eq!(checks.len(), 1);
        h.cc.mailbox_pin_checked(h.now, checks[0].0, false);
        let out = drained(&mut h);
        assert!(tone_is(&out, 3, Tone::Unobtainable), "{out:?}");
        assert!(message_plays(&out).is_empty());
        assert_eq!(cdrs(&out).len(), 1);
        h.ev(3, Event::OnHook);
        h.take();
    }
    // Locked: refused without a check, even with the right PIN.
    h.ev(3, Event::OffHook);
    h.dial(3, "*98101#");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Unobtainable), "{out:?}");
    h.dial(3, "4711#");
    assert!(pin_checks(&h.take()).is_empty());
    h.ev(3, Event::OnHook);
    // After the lockout a check is asked again.
    h.advance(voicemail::PIN_LOCKOUT);
    h.ev(3, Event::OffHook);
    h.dial(3, "*98101#4711#");
    assert_eq!(pin_checks(&h.take()).len(), 1);
}

#[test]
fn malformed_codes_and_pins_are_refused_and_change_nothing() {
    let mut h = vm_harness(vec![msg(4, "101", false)]);
    // A mailbox number with a star, one too long, a PIN too short: refused without a
    // check; nothing is played, marked or deleted.
    for (digits, tone) in [
        ("*98*", Tone::Unobtainable),
        ("*981234567", Tone::Unobtainable),
        ("*98101#12#", Tone::Unobtainable),
    ] {
        h.ev(3, Event::OffHook);
        h.take();
        h.dial(3, digits);
        let out = h.take();
        assert!(tone_is(&out, 3, tone), "{digits}: {out:?}");
        assert!(pin_checks(&out).is_empty(), "{digits}");
        assert!(message_plays(&out).is_empty());
        h.ev(3, Event::OnHook);
    }
    assert_eq!(h.cc.mailbox_counts("101"), Some((1, 0)));
    // The own-mailbox code from a phone whose extension has none: unobtainable.
    let mut h = Harness::new();
    h.cc.set_voicemail(VoicemailSettings {
        codes: VoicemailCodes::default(),
        mailboxes: vec![mailbox("102")],
        messages: Vec::new(),
    });
    h.ev(3, Event::OffHook);
    h.dial(3, "*97");
    assert!(tone_is(&h.take(), 3, Tone::Unobtainable));
}

#[test]
fn a_caller_hanging_up_during_the_greeting_leaves_no_message() {
    let mut h = vm_harness(Vec::new());
    // 103 busy; 101 calls it and hangs up during the greeting: no capture, a CDR.
    h.ev(3, Event::OffHook);
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    h.advance(Duration::from_secs(1));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(captures(&out).is_empty() && capture_ends(&out).is_empty());
    assert!(out.contains(&Output::StopPlay {
        end: MediaEnd::Port(1)
    }));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
}

#[test]
fn a_sip_phone_opens_its_mailbox_with_star97_and_any_with_star98_and_rfc4733_pin() {
    let mut h = vm_harness(vec![msg(4, "101", false), msg(5, "210", false)]);
    h.cc.set_voicemail(VoicemailSettings {
        codes: VoicemailCodes::default(),
        mailboxes: vec![mailbox("101"), mailbox("210")],
        messages: vec![msg(4, "101", false), msg(5, "210", false)],
    });
    h.take();
    // 210's own mailbox: answered, its message plays as audio on the leg; 7 deletes.
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "*97");
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }), "{out:?}");
    assert_eq!(message_plays(&out), vec![msg(5, "210", false).file]);
    h.sip(SipInput::Digit {
        leg: IN1,
        digit: '7',
    });
    let out = h.take();
    assert!(out.contains(&Output::DeleteMessage { id: 5 }), "{out:?}");
    // No more messages: the box hangs up (a BYE; an analog phone would hear the
    // confirmation beeps until it hangs up).
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SipHangup { leg, .. } if *leg == IN1)));
    // Mailbox 101 from 211's phone, the `#` left out; the PIN keyed as RFC 4733.
    h.incoming(IN2, SipOrigin::Extension("211".into()), "211", "*98101");
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN2 }), "{out:?}");
    for d in "4711#".chars() {
        h.sip(SipInput::Digit { leg: IN2, digit: d });
    }
    let checks = pin_checks(&h.take());
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (checks[0].1.as_str(), checks[0].2.as_str()),
        ("101", "4711")
    );
    h.cc.mailbox_pin_checked(h.now, checks[0].0, true);
    assert_eq!(
        message_plays(&drained(&mut h)),
        vec![msg(4, "101", false).file]
    );
}

#[test]
fn a_sip_phone_dialling_a_malformed_code_or_its_missing_mailbox_gets_404() {
    let mut h = vm_harness(Vec::new());
    for (leg, dialled) in [(IN1, "*98*1"), (IN2, "*97")] {
        // 211 has no mailbox.
        h.incoming(leg, SipOrigin::Extension("211".into()), "211", dialled);
        let out = h.take();
        assert!(
            out.contains(&Output::SipHangup {
                leg,
                reason: EndReason::Unallocated
            }),
            "{dialled}: {out:?}"
        );
        assert!(!out.contains(&Output::SipAnswer { leg }));
    }
}

#[test]
fn a_message_deleted_through_the_api_is_forgotten_and_message_waiting_follows() {
    let mut h = vm_harness(vec![msg(4, "101", false)]);
    h.cc.voicemail_message_removed(4);
    assert_eq!(waiting(&drained(&mut h)), vec![("101".to_owned(), 0, 0)]);
    // An unknown id changes nothing.
    h.cc.voicemail_message_removed(99);
    assert!(waiting(&drained(&mut h)).is_empty());
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Dial) && !tone_is(&out, 1, Tone::StutterDial));
}

#[test]
fn the_menu_prompt_lists_the_choices_after_a_message_when_the_box_has_it() {
    let mut h = Harness::with(|s| {
        s.prompts
            .insert(voicemail::MENU_PROMPT.to_owned(), Duration::from_secs(6));
    });
    h.cc.set_voicemail(VoicemailSettings {
        codes: VoicemailCodes::default(),
        mailboxes: vec![mailbox("102")],
        messages: vec![msg(2, "102", false)],
    });
    drained(&mut h);
    h.ev(2, Event::OffHook);
    h.dial(2, "*97");
    h.take();
    h.advance(Duration::from_secs(4));
    let out = h.take();
    assert!(plays(&out).contains(&(
        MediaEnd::Port(2),
        Playback {
            once: vec![voicemail::MENU_PROMPT.to_owned()],
            then: None
        }
    )));
    assert!(!tone_is(&out, 2, Tone::Confirmation), "{out:?}");
}
