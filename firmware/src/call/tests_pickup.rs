//! Call pickup (see `pickup.rs`) on a virtual clock, with the dial plan of
//! `tests_sip.rs` (101-103 on FXS 1-3, 102 also a SIP phone, 210 and 211 SIP only) and
//! PSTN line 5's ring group changed to 101 + 103 + 210.

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::tones::Tone;

fn harness() -> Harness {
    Harness::with(|s| {
        s.fxo_lines[0].inbound = vec!["101".into(), "103".into(), "210".into()];
    })
}

#[test]
fn directed_pickup_answers_the_call_ringing_that_extension() {
    let mut h = harness();
    // 101 calls 103 (FXS 3 only).
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    assert!(has_cmd(&h.take(), 3, |c| matches!(c, Command::Ring(_))));
    // 102 picks it up with **103.
    h.ev(2, Event::OffHook);
    h.dial(2, "**103");
    let out = h.take();
    assert!(out.contains(&Output::Connect(port(1), port(2))), "{out:?}");
    assert!(has_cmd(&out, 3, |c| *c == Command::StopRing));
    assert!(
        has_cmd(&out, 1, |c| *c == Command::StopTone),
        "ringback stops"
    );
    // The call is 102's now: 101 hanging up leaves 102 with busy tone, and the CDR
    // names 102's port as the callee.
    h.advance(Duration::from_secs(2));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(tone_is(&out, 2, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.callee_port, cdr.disposition),
        (Some(2), Disposition::Answered)
    );
}

#[test]
fn group_pickup_takes_a_call_ringing_the_same_ring_group_only() {
    let mut h = harness();
    // 102 calls 101; 103 shares line 5's group with 101: *8 picks the call up.
    h.ev(2, Event::OffHook);
    h.dial(2, "101");
    h.take();
    h.ev(3, Event::OffHook);
    h.dial(3, "*8");
    let out = h.take();
    assert!(out.contains(&Output::Connect(port(2), port(3))), "{out:?}");
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing));
    h.ev(2, Event::OnHook);
    h.ev(3, Event::OnHook);
    h.take();

    // 101 calls 103; 102 is in no group with 103: refused, 103 rings on.
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    h.take();
    h.ev(2, Event::OffHook);
    h.dial(2, "*8");
    let out = h.take();
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
    assert!(!has_cmd(&out, 3, |c| *c == Command::StopRing));
}

#[test]
fn nothing_to_pick_up_or_a_bad_extension_gives_unobtainable() {
    let mut h = harness();
    for code in ["*8", "**101", "**109"] {
        h.ev(2, Event::OffHook);
        h.dial(2, code);
        let out = h.take();
        assert!(tone_is(&out, 2, Tone::Unobtainable), "{code}: {out:?}");
        // A failed attempt is on record, as for an unknown number.
        assert_eq!(cdrs(&out).len(), 1, "{code}");
        h.ev(2, Event::OnHook);
        h.take();
    }
    // "**1" waits for more digits.
    h.ev(2, Event::OffHook);
    h.dial(2, "**1");
    assert!(!tone_is(&h.take(), 2, Tone::Unobtainable));
}

const PICKER: LegId = LegId(9);

fn sip_picks(h: &mut Harness, from: &str, code: &str) -> Vec<Output> {
    h.incoming(PICKER, SipOrigin::Extension(from.into()), from, code);
    h.take()
}

#[test]
fn a_sip_phone_picks_up_a_call_ringing_an_analog_phone_directed_or_in_its_group() {
    for (code, from) in [("**103", "211"), ("*8", "210"), ("**103#", "211")] {
        let mut h = harness();
        h.ev(1, Event::OffHook);
        h.dial(1, "103");
        h.take();
        let out = sip_picks(&mut h, from, code);
        // The INVITE is answered and bridged to the caller; 103 stops ringing.
        assert!(
            out.contains(&Output::SipAnswer { leg: PICKER }),
            "{code}: {out:?}"
        );
        assert!(
            out.contains(&Output::Connect(port(1), leg(PICKER))),
            "{code}: {out:?}"
        );
        assert!(has_cmd(&out, 3, |c| *c == Command::StopRing), "{code}");
        assert!(has_cmd(&out, 1, |c| *c == Command::StopTone), "{code}");
        h.advance(Duration::from_secs(3));
        h.ev(1, Event::OnHook);
        let out = h.take();
        assert_eq!(hangups(&out), [(PICKER, EndReason::Normal)], "{code}");
        let cdr = &cdrs(&out)[0];
        assert_eq!(cdr.disposition, Disposition::Answered, "{code}");
        assert_eq!(cdr.billable_ms(), 3_000, "{code}");
        assert_eq!(
            cdr.callee_sip_call_id.as_deref(),
            Some("call-9@phone"),
            "{code}"
        );
        assert_eq!(h.cc.active_calls(), 0);
    }
}

#[test]
fn a_call_offered_to_a_sip_phone_is_picked_up_and_the_offer_withdrawn() {
    // 101 calls 210 (SIP only): an analog phone in 210's group takes it with *8, and
    // (another call) a SIP phone with **210.
    for (analog, code) in [(true, "*8"), (false, "**210")] {
        let mut h = harness();
        h.ev(1, Event::OffHook);
        h.dial(1, "210");
        let (offer, _, _) = only_dial(&h.take());
        let out = if analog {
            h.ev(3, Event::OffHook);
            h.dial(3, code);
            h.take()
        } else {
            sip_picks(&mut h, "211", code)
        };
        let picker = if analog { port(3) } else { leg(PICKER) };
        assert!(
            out.contains(&Output::Connect(port(1), picker)),
            "{code}: {out:?}"
        );
        assert_eq!(
            hangups(&out),
            [(offer, EndReason::Normal)],
            "{code}: {out:?}"
        );
    }
}

#[test]
fn a_sip_pickup_with_nothing_to_pick_up_is_an_unknown_number() {
    let mut h = harness();
    for code in ["*8", "**103", "**999"] {
        let out = sip_picks(&mut h, "210", code);
        assert!(
            !out.contains(&Output::SipAnswer { leg: PICKER }),
            "{code}: {out:?}"
        );
        assert_eq!(
            hangups(&out),
            [(PICKER, EndReason::Unallocated)],
            "{code}: {out:?}"
        );
        assert_eq!(
            cdrs(&out)[0].disposition,
            Disposition::Unallocated,
            "{code}"
        );
        h.sip(SipInput::Ended {
            leg: PICKER,
            reason: EndReason::Normal,
        });
        h.take();
    }
}
