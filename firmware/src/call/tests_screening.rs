//! Caller screening (blacklist / allowlist) in call control, on a virtual clock, with
//! the dial plan of `tests_sip` (FXO 5 rings 101 on FXS 1 and SIP phone 210).

use std::time::Duration;

use line_proto::{CallerId, Command, Event, Presentation};

use super::tests_sip::{cdrs, dials, hangups, has_cmd, Harness, IN1, IN2};
use super::*;
use crate::blacklist::{Blacklist, BlockAction, EntryAction, Mode, Settings};
use crate::cdr::{CdrBlocked, CdrBlockedAction, CdrBlockedMode, Disposition, HangupSide};

fn list(mode: Mode, default_action: BlockAction, entries: &[(&str, Option<&str>)]) -> Blacklist {
    let mut b = Blacklist::new(Settings {
        mode,
        default_action,
    });
    for (pattern, action) in entries {
        b.insert(
            pattern.parse().expect("pattern"),
            action.map(|a| a.parse::<EntryAction>().expect("action")),
        );
    }
    b
}

fn harness(b: Blacklist) -> Harness {
    let mut h = Harness::new();
    h.cc.set_blacklist(b);
    h
}

fn hits(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::BlacklistHit { pattern, .. } => Some(pattern.clone()),
            _ => None,
        })
        .collect()
}

fn rings(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Command {
                command: Command::Ring(_),
                ..
            }
        )
    })
}

fn cid(number: &str) -> Option<CallerId> {
    Some(CallerId::new(number, "").expect("caller id"))
}

#[test]
fn a_listed_trunk_caller_is_refused_with_the_entry_action() {
    for (action, reason, disposition) in [
        (None, EndReason::Busy, Disposition::Busy),
        (Some("busy"), EndReason::Busy, Disposition::Busy),
        (
            Some("congestion"),
            EndReason::Congestion,
            Disposition::Congestion,
        ),
        (
            Some("reject"),
            EndReason::Forbidden,
            Disposition::Congestion,
        ),
    ] {
        let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("0900*", action)]));
        h.incoming(IN1, SipOrigin::Trunk, "09001234", "210");
        let out = h.take();
        assert_eq!(hangups(&out), [(IN1, reason)], "{action:?}");
        assert!(dials(&out).is_empty(), "nobody is rung: {out:?}");
        assert_eq!(hits(&out), ["0900*"]);
        let cdr = &cdrs(&out)[0];
        assert_eq!(cdr.disposition, disposition);
        assert_eq!(cdr.hangup_side, HangupSide::System);
        assert_eq!(cdr.direction, Direction::Inbound);
        assert_eq!(cdr.caller, "09001234");
        assert_eq!(cdr.caller_sip_call_id.as_deref(), Some("call-1@phone"));
        let blocked = cdr.blocked.as_ref().expect("blocked");
        assert_eq!(blocked.mode, CdrBlockedMode::Deny);
        assert_eq!(blocked.pattern.as_deref(), Some("0900*"));
        assert_eq!(h.cc.active_calls(), 0);
        assert_eq!(h.cc.active_legs(), 0);
    }
}

#[test]
fn other_trunk_callers_and_local_phones_are_not_screened() {
    let mut h = harness(list(
        Mode::Deny,
        BlockAction::Reject,
        &[("0900*", None), ("211", None)],
    ));
    h.incoming(IN1, SipOrigin::Trunk, "0301234", "210");
    let out = h.take();
    assert_eq!(dials(&out).len(), 1, "210 rings: {out:?}");
    assert!(hangups(&out).is_empty());
    assert!(hits(&out).is_empty());
    // A local phone whose extension matches an entry still calls.
    h.incoming(IN2, SipOrigin::Extension("211".into()), "211", "101");
    let out = h.take();
    assert!(
        has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    assert!(hits(&out).is_empty());
}

#[test]
fn allow_mode_lets_only_listed_callers_through() {
    let mut h = harness(list(
        Mode::Allow,
        BlockAction::Congestion,
        &[("+4930*", None), ("+4930666", Some("reject"))],
    ));
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "210");
    let out = h.take();
    assert_eq!(dials(&out).len(), 1, "listed: rings {out:?}");
    h.incoming(IN2, SipOrigin::Trunk, "+4940123", "210");
    let out = h.take();
    assert_eq!(hangups(&out), [(IN2, EndReason::Congestion)]);
    assert!(hits(&out).is_empty(), "no entry to count");
    assert_eq!(
        cdrs(&out)[0].blocked,
        Some(CdrBlocked {
            mode: CdrBlockedMode::Allow,
            action: CdrBlockedAction::Congestion,
            pattern: None,
        })
    );
    // An exception inside the allowed prefix.
    h.incoming(LegId(3), SipOrigin::Trunk, "+4930666", "210");
    let out = h.take();
    assert_eq!(hangups(&out), [(LegId(3), EndReason::Forbidden)]);
    assert_eq!(hits(&out), ["+4930666"]);
}

#[test]
fn anonymous_trunk_callers_follow_the_anonymous_entry() {
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("anonymous", None)]));
    for (i, from) in ["anonymous", ""].into_iter().enumerate() {
        let leg = LegId(10 + i as u64);
        h.incoming(leg, SipOrigin::Trunk, from, "210");
        let out = h.take();
        assert_eq!(hangups(&out), [(leg, EndReason::Busy)], "{from:?}");
        assert_eq!(hits(&out), ["anonymous"]);
        assert_eq!(cdrs(&out)[0].caller, from);
    }
    h.incoming(IN1, SipOrigin::Trunk, "5551234", "210");
    assert_eq!(dials(&h.take()).len(), 1);
}

#[test]
fn a_listed_pstn_caller_is_left_unanswered_and_nobody_rings() {
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("5551234", None)]));
    h.ev(
        5,
        Event::RingDetected {
            caller_id: cid("5551234"),
        },
    );
    let out = h.take();
    assert!(!rings(&out), "no extension rings: {out:?}");
    assert!(dials(&out).is_empty());
    assert!(!has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    assert_eq!(hits(&out), ["5551234"]);
    assert!(
        cdrs(&out).is_empty(),
        "the CDR waits for the caller to give up"
    );
    // More bursts: still nothing, and no second hit.
    for _ in 0..3 {
        h.advance(Duration::from_secs(6));
        h.ev(
            5,
            Event::RingDetected {
                caller_id: cid("5551234"),
            },
        );
        let out = h.take();
        assert!(!rings(&out) && hits(&out).is_empty() && dials(&out).is_empty());
    }
    // The caller gives up.
    h.advance(Duration::from_secs(9));
    let out = h.take();
    assert!(!has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::Busy);
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
    assert_eq!(cdr.caller, "5551234");
    assert_eq!(cdr.answered_at_ms, None);
    assert_eq!(
        cdr.blocked.as_ref().and_then(|b| b.pattern.as_deref()),
        Some("5551234")
    );
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn a_pstn_ring_without_caller_id_waits_for_it_while_screening_is_on() {
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("0900*", None)]));
    h.ev(5, Event::RingDetected { caller_id: None });
    let out = h.take();
    assert!(!rings(&out) && dials(&out).is_empty(), "{out:?}");
    // The caller ID comes with the second burst: not listed, so 101 and 210 ring.
    h.advance(Duration::from_secs(6));
    h.ev(
        5,
        Event::RingDetected {
            caller_id: cid("0301234"),
        },
    );
    let out = h.take();
    assert!(
        has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "{out:?}"
    );
    assert!(has_cmd(
        &out,
        1,
        |c| matches!(c, Command::SendCallerId { caller_id, .. } if caller_id.number.as_str() == "0301234")
    ));
    assert_eq!(dials(&out).len(), 1);
    // 101 answers: a normal call.
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoSeize));

    // Listed, with the caller ID on the second burst: blocked then.
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("0900*", None)]));
    h.ev(5, Event::RingDetected { caller_id: None });
    h.advance(Duration::from_secs(6));
    h.ev(
        5,
        Event::RingDetected {
            caller_id: cid("09007"),
        },
    );
    let out = h.take();
    assert!(!rings(&out) && dials(&out).is_empty(), "{out:?}");
    assert_eq!(hits(&out), ["0900*"]);
}

#[test]
fn a_second_burst_without_caller_id_screens_the_caller_as_anonymous() {
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("anonymous", None)]));
    h.ev(5, Event::RingDetected { caller_id: None });
    h.advance(Duration::from_secs(6));
    h.ev(5, Event::RingDetected { caller_id: None });
    let out = h.take();
    assert!(!rings(&out), "{out:?}");
    assert_eq!(hits(&out), ["anonymous"]);
    // A withheld caller ID on the first ring is anonymous at once.
    let mut h = harness(list(Mode::Deny, BlockAction::Busy, &[("anonymous", None)]));
    let mut withheld = CallerId::new("", "").expect("cid");
    withheld.presentation = Presentation::Private;
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(withheld),
        },
    );
    assert_eq!(hits(&h.take()), ["anonymous"]);
}

#[test]
fn pstn_allow_mode_and_no_screening() {
    // Allow mode: an unlisted PSTN caller is not rung through.
    let mut h = harness(list(Mode::Allow, BlockAction::Busy, &[("555*", None)]));
    h.ev(
        5,
        Event::RingDetected {
            caller_id: cid("6661234"),
        },
    );
    let out = h.take();
    assert!(!rings(&out) && hits(&out).is_empty(), "{out:?}");
    h.advance(Duration::from_secs(9));
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(
        cdr.blocked.as_ref().map(|b| (b.mode, b.pattern.clone())),
        Some((CdrBlockedMode::Allow, None))
    );
    h.ev(
        5,
        Event::RingDetected {
            caller_id: cid("5551234"),
        },
    );
    assert!(rings(&h.take()));

    // No list: a ring without caller ID rings the extensions at once, as before.
    let mut h = Harness::new();
    h.ev(5, Event::RingDetected { caller_id: None });
    assert!(rings(&h.take()));
}

#[test]
fn a_new_list_applies_to_the_next_call() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "09001", "210");
    assert_eq!(dials(&h.take()).len(), 1);
    h.cc.set_blacklist(list(Mode::Deny, BlockAction::Reject, &[("0900*", None)]));
    assert_eq!(h.cc.blacklist().len(), 1);
    h.incoming(IN2, SipOrigin::Trunk, "09002", "210");
    assert_eq!(hangups(&h.take()), [(IN2, EndReason::Forbidden)]);
}
