//! Supervisor listen / whisper / barge (see `supervise.rs`) on a virtual clock, with the
//! dial plan and call center of `tests_queue.rs`: agent 100 logs in on 102 (FXS 2), 101
//! (FXS 1) calls 102, and the supervisor dials from 103 (FXS 3).

use std::time::Duration;

use line_proto::Event;

use super::tests_queue::{agent, harness, login};
use super::tests_sip::*;
use super::*;
use crate::acd::codes::SuperviseMode;
use crate::tones::Tone;

fn checks(out: &[Output]) -> Vec<(u64, String, crate::acd::AgentId, SuperviseMode)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CheckSupervisor {
                check,
                extension,
                agent,
                mode,
            } => Some((*check, extension.clone(), agent.clone(), *mode)),
            _ => None,
        })
        .collect()
}

fn conference(out: &[Output]) -> Vec<(RoomId, ConferenceOp)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Conference { room, op } => Some((*room, *op)),
            _ => None,
        })
        .collect()
}

fn join(end: MediaEnd, role: ConferenceRole) -> ConferenceOp {
    ConferenceOp::Join { end, role }
}

fn leave(end: MediaEnd) -> ConferenceOp {
    ConferenceOp::Leave { end }
}

/// Agent 100 on 102 (FXS 2) talking with 101 (FXS 1).
fn agent_in_a_call() -> Harness {
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::Connect(port(1), port(2))), "{out:?}");
    h
}

/// The supervisor on FXS 3 dials `code` and the right check is answered `allowed`.
fn supervise(h: &mut Harness, code: &str, allowed: bool) -> Vec<Output> {
    h.ev(3, Event::OffHook);
    h.dial(3, code);
    let out = h.take();
    let c = checks(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0].1, "103");
    assert_eq!(c[0].2, agent("100"));
    assert!(
        conference(&out).is_empty(),
        "nothing joins before the check"
    );
    h.cc.supervisor_checked(h.now, c[0].0, allowed);
    h.drain()
}

#[test]
fn listen_whisper_and_barge_join_the_agents_call_and_the_keys_switch_modes() {
    for (code, mode, role) in [
        ("*65100#", SuperviseMode::Listen, ConferenceRole::Listener),
        (
            "*66100#",
            SuperviseMode::Whisper,
            ConferenceRole::Whisperer { to: port(2) },
        ),
        ("*67100#", SuperviseMode::Barge, ConferenceRole::Talker),
    ] {
        let mut h = agent_in_a_call();
        h.ev(3, Event::OffHook);
        h.dial(3, code);
        let out = h.take();
        assert_eq!(checks(&out)[0].3, mode);
        h.cc.supervisor_checked(h.now, checks(&out)[0].0, true);
        let out = h.drain();
        // The two-party bridge goes first, then the three join one room.
        let disc = out
            .iter()
            .position(|o| *o == Output::Disconnect(port(2), port(1)));
        let first_join = out
            .iter()
            .position(|o| matches!(o, Output::Conference { .. }));
        assert!(disc.is_some() && disc < first_join, "{out:?}");
        let room = conference(&out)[0].0;
        assert_eq!(
            conference(&out),
            vec![
                (room, join(port(2), ConferenceRole::Talker)),
                (room, join(port(1), ConferenceRole::Talker)),
                (room, join(port(3), role)),
            ]
        );
        assert!(out.contains(&Output::PortState {
            port: 3,
            state: PortState::Talking
        }));
        assert!(!tone_is(&out, 3, Tone::Unobtainable));
    }
}

#[test]
fn the_supervisor_switches_modes_by_key_and_hanging_up_restores_the_two_party_bridge() {
    let mut h = agent_in_a_call();
    let out = supervise(&mut h, "*65100#", true);
    let room = conference(&out)[0].0;
    let set = |role| vec![(room, ConferenceOp::SetRole { end: port(3), role })];
    h.ev(3, Event::Digit(b'5'));
    assert_eq!(
        conference(&h.take()),
        set(ConferenceRole::Whisperer { to: port(2) })
    );
    h.ev(3, Event::Digit(b'6'));
    assert_eq!(conference(&h.take()), set(ConferenceRole::Talker));
    // The same mode again, or a key that means nothing, changes nothing.
    for d in [b'6', b'7', b'#', b'0'] {
        h.ev(3, Event::Digit(d));
        assert!(h.take().is_empty());
    }
    h.ev(3, Event::Digit(b'4'));
    assert_eq!(conference(&h.take()), set(ConferenceRole::Listener));
    // The agent's and caller's keys are theirs (not mode switches).
    h.ev(2, Event::Digit(b'6'));
    assert!(conference(&h.take()).is_empty());
    // The supervisor hangs up: everyone leaves, agent and caller are bridged again.
    h.ev(3, Event::OnHook);
    let out = h.take();
    assert_eq!(
        conference(&out),
        vec![
            (room, leave(port(3))),
            (room, leave(port(2))),
            (room, leave(port(1)))
        ]
    );
    assert!(out.contains(&Output::Connect(port(2), port(1))), "{out:?}");
    assert!(out.contains(&Output::PortState {
        port: 3,
        state: PortState::Idle
    }));
    // The call goes on; it ends normally later.
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(
        out.contains(&Output::Disconnect(port(1), port(2))),
        "{out:?}"
    );
    assert!(conference(&out).is_empty());
    // A later supervision gets a new room.
    let mut h = agent_in_a_call();
    let first = conference(&supervise(&mut h, "*65100#", true))[0].0;
    h.ev(3, Event::OnHook);
    h.take();
    let second = conference(&supervise(&mut h, "*67100#", true))[0].0;
    assert_ne!(first, second);
}

#[test]
fn when_the_caller_or_the_agent_hangs_up_the_supervisor_is_dropped() {
    for gone in [1u8, 2] {
        let mut h = agent_in_a_call();
        let out = supervise(&mut h, "*66100#", true);
        let room = conference(&out)[0].0;
        h.advance(Duration::from_secs(3));
        h.ev(gone, Event::OnHook);
        let out = h.take();
        let ops = conference(&out);
        assert_eq!(
            ops,
            vec![
                (room, leave(port(3))),
                (room, leave(port(2))),
                (room, leave(port(1)))
            ],
            "{out:?}"
        );
        assert!(tone_is(&out, 3, Tone::Busy), "{out:?}");
        // No bridge comes back, and the call's CDR is written as usual.
        assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
        assert_eq!(cdrs(&out).len(), 1);
        // The busy tone goes quiet after the lockout time; hanging up idles the port.
        h.advance(LOCKOUT_TONE + Duration::from_secs(1));
        let out = h.take();
        assert!(has_cmd(&out, 3, |c| *c == Command::StopTone), "{out:?}");
        h.ev(3, Event::OnHook);
        let out = h.take();
        assert!(out.contains(&Output::PortState {
            port: 3,
            state: PortState::Idle
        }));
        assert!(conference(&out).is_empty());
    }
}

#[test]
fn the_agent_holding_the_call_ends_the_supervision() {
    let mut h = agent_in_a_call();
    supervise(&mut h, "*67100#", true);
    h.ev(2, Event::HookFlash);
    let out = h.take();
    assert_eq!(conference(&out).len(), 3, "{out:?}");
    assert!(tone_is(&out, 3, Tone::Busy));
    // Hold is still hold: no bridge, dial tone for the agent.
    assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
    assert!(tone_is(&out, 2, Tone::Dial));
}

#[test]
fn a_refused_right_no_live_call_or_a_malformed_code_gives_unobtainable_and_changes_nothing() {
    // The store says no.
    let mut h = agent_in_a_call();
    let out = supervise(&mut h, "*65100#", false);
    assert!(tone_is(&out, 3, Tone::Unobtainable), "{out:?}");
    assert!(conference(&out).is_empty());
    assert!(!out.iter().any(|o| matches!(o, Output::Disconnect(..))));
    // The agent and caller still talk: hanging up ends their call normally.
    h.ev(3, Event::OnHook);
    h.ev(1, Event::OnHook);
    assert!(h.take().contains(&Output::Disconnect(port(1), port(2))));

    // Agent 200 is not logged in; agent 100 is, but not in a call.
    let mut h = harness();
    login(&mut h, 2, "100");
    for code in ["*65200#", "*66100#"] {
        h.ev(3, Event::OffHook);
        h.dial(3, code);
        let out = h.take();
        assert!(checks(&out).is_empty(), "{code}: {out:?}");
        assert!(tone_is(&out, 3, Tone::Unobtainable), "{code}");
        h.ev(3, Event::OnHook);
        h.take();
    }
    // Malformed: a one-digit agent ID, something after the ID.
    let mut h = agent_in_a_call();
    for code in ["*651#", "*66100*"] {
        h.ev(3, Event::OffHook);
        h.dial(3, code);
        let out = h.take();
        assert!(checks(&out).is_empty() && conference(&out).is_empty());
        assert!(tone_is(&out, 3, Tone::Unobtainable), "{code}: {out:?}");
        h.ev(3, Event::OnHook);
        h.take();
    }
}

#[test]
fn a_late_answer_is_ignored_and_a_call_that_ended_meanwhile_is_refused() {
    // The supervisor hangs up before the check answers.
    let mut h = agent_in_a_call();
    h.ev(3, Event::OffHook);
    h.dial(3, "*65100#");
    let check = checks(&h.take())[0].0;
    h.ev(3, Event::OnHook);
    h.take();
    h.cc.supervisor_checked(h.now, check, true);
    assert!(h.drain().is_empty());
    // An unknown check number is ignored.
    h.cc.supervisor_checked(h.now, 999, true);
    assert!(h.drain().is_empty());
    // The call ends while the check runs.
    h.ev(3, Event::OffHook);
    h.dial(3, "*65100#");
    let check = checks(&h.take())[0].0;
    h.ev(1, Event::OnHook);
    h.take();
    h.cc.supervisor_checked(h.now, check, true);
    let out = h.drain();
    assert!(tone_is(&out, 3, Tone::Unobtainable), "{out:?}");
    assert!(conference(&out).is_empty());
}

#[test]
fn a_supervised_call_takes_no_second_supervisor() {
    // 101 is the supervisor this time, watching agent 100 (102) talk to 103.
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(3, Event::OffHook);
    h.dial(3, "102");
    h.advance(Duration::from_secs(1));
    h.ev(2, Event::OffHook);
    h.take();
    h.ev(1, Event::OffHook);
    h.dial(1, "*65100#");
    let check = checks(&h.take())[0].0;
    h.cc.supervisor_checked(h.now, check, true);
    assert_eq!(conference(&h.drain()).len(), 3);
    // A SIP phone cannot dial codes; a second FXS supervisor would need a free port:
    // the supervisor's own phone dialling again is not possible either (it is in the
    // call). So the rule is checked on the call lookup: the call is taken.
    assert!(h.cc.agent_live_call(&agent("100")).is_none());
}

// ----- Supervisors at SIP phones (phone 210, leg 7) -----

const PHONE: LegId = LegId(7);

/// SIP phone 210 sends an INVITE to `code`; returns the check's number.
fn sip_supervise_check(h: &mut Harness, code: &str) -> u64 {
    h.incoming(PHONE, SipOrigin::Extension("210".into()), "210", code);
    let out = h.take();
    let c = checks(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!((c[0].1.as_str(), &c[0].2), ("210", &agent("100")));
    // Nothing answered, refused or joined before the check.
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::SipAnswer { .. } | Output::SipHangup { .. } | Output::Conference { .. }
    )));
    c[0].0
}

fn sip_key(h: &mut Harness, d: char) {
    h.sip(SipInput::Digit {
        leg: PHONE,
        digit: d,
    });
}

#[test]
fn a_sip_phone_supervises_switches_modes_by_rfc4733_and_its_bye_restores_the_bridge() {
    let mut h = agent_in_a_call();
    // `#` left out like the agent codes.
    let check = sip_supervise_check(&mut h, "*65100");
    h.cc.supervisor_checked(h.now, check, true);
    let out = h.drain();
    assert!(out.contains(&Output::SipAnswer { leg: PHONE }), "{out:?}");
    assert!(out.contains(&Output::Disconnect(port(2), port(1))));
    let room = conference(&out)[0].0;
    assert_eq!(
        conference(&out),
        vec![
            (room, join(port(2), ConferenceRole::Talker)),
            (room, join(port(1), ConferenceRole::Talker)),
            (room, join(leg(PHONE), ConferenceRole::Listener)),
        ]
    );
    // No confirmation tone and no hang-up: the leg is the supervisor's now.
    h.advance(CONFIRMATION + Duration::from_secs(1));
    let out = h.take();
    assert!(hangups(&out).is_empty(), "{out:?}");
    let set = |role| {
        vec![(
            room,
            ConferenceOp::SetRole {
                end: leg(PHONE),
                role,
            },
        )]
    };
    sip_key(&mut h, '5');
    assert_eq!(
        conference(&h.take()),
        set(ConferenceRole::Whisperer { to: port(2) })
    );
    sip_key(&mut h, '6');
    assert_eq!(conference(&h.take()), set(ConferenceRole::Talker));
    sip_key(&mut h, '9');
    assert!(h.take().is_empty());
    sip_key(&mut h, '4');
    assert_eq!(conference(&h.take()), set(ConferenceRole::Listener));
    // BYE from the phone: everyone leaves the room, agent and caller are bridged again.
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(
        conference(&out),
        vec![
            (room, leave(leg(PHONE))),
            (room, leave(port(2))),
            (room, leave(port(1)))
        ]
    );
    assert!(out.contains(&Output::Connect(port(2), port(1))), "{out:?}");
    assert!(hangups(&out).is_empty());
    // The call goes on and ends normally, with one CDR.
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(cdrs(&out).len(), 1);
    assert!(conference(&out).is_empty());
}

#[test]
fn sip_supervision_refusals_map_to_sip_statuses_and_change_nothing() {
    // No live call: 480 at once, no check.
    let mut h = harness();
    login(&mut h, 2, "100");
    h.incoming(PHONE, SipOrigin::Extension("210".into()), "210", "*66100#");
    let out = h.take();
    assert!(checks(&out).is_empty());
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::NoAnswer)], "{out:?}");
    // No right: 403, the agent's bridge untouched.
    let mut h = agent_in_a_call();
    let check = sip_supervise_check(&mut h, "*67100#");
    h.cc.supervisor_checked(h.now, check, false);
    let out = h.drain();
    assert_eq!(
        hangups(&out),
        vec![(PHONE, EndReason::Forbidden)],
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Disconnect(..) | Output::Conference { .. } | Output::SipAnswer { .. }
    )));
    // The call ended during the check: 480.
    let mut h = agent_in_a_call();
    let check = sip_supervise_check(&mut h, "*65100#");
    h.ev(1, Event::OnHook);
    h.take();
    h.cc.supervisor_checked(h.now, check, true);
    let out = h.drain();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::NoAnswer)], "{out:?}");
    assert!(conference(&out).is_empty());
    // The phone gave up (CANCEL) during the check: the answer does nothing.
    let mut h = agent_in_a_call();
    let check = sip_supervise_check(&mut h, "*65100#");
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    h.take();
    h.cc.supervisor_checked(h.now, check, true);
    assert!(h.drain().is_empty());
}

#[test]
fn when_the_agents_call_changes_the_sip_supervisor_is_hung_up() {
    for gone in [1u8, 2] {
        let mut h = agent_in_a_call();
        let check = sip_supervise_check(&mut h, "*67100#");
        h.cc.supervisor_checked(h.now, check, true);
        let room = conference(&h.drain())[0].0;
        h.ev(gone, Event::OnHook);
        let out = h.take();
        assert_eq!(
            conference(&out),
            vec![
                (room, leave(leg(PHONE))),
                (room, leave(port(2))),
                (room, leave(port(1)))
            ],
            "{out:?}"
        );
        assert_eq!(hangups(&out), vec![(PHONE, EndReason::Normal)]);
        assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
        // The endpoint's report of the BYE changes nothing more.
        h.sip(SipInput::Ended {
            leg: PHONE,
            reason: EndReason::Normal,
        });
        assert!(h.take().is_empty());
    }
    // Shutdown hangs up the supervisor too.
    let mut h = agent_in_a_call();
    let check = sip_supervise_check(&mut h, "*65100#");
    h.cc.supervisor_checked(h.now, check, true);
    h.drain();
    h.cc.shutdown(h.now);
    let out = h.drain();
    assert!(
        hangups(&out).contains(&(PHONE, EndReason::Normal)),
        "{out:?}"
    );
}
