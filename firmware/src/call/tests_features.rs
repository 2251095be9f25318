//! Agent feature codes dialled from SIP phones (see `features.rs`) on a virtual clock,
//! with the dial plan and call center of `tests_queue.rs` (SIP-only phones 210 and
//! 211, queue 7001 with agents 100 and 200, default codes `*61`..`*64`).

use std::time::Duration;

use line_proto::Event;

use super::tests_queue::{agent, agent_states, center, login, pin_checks, plays, stops};
use super::tests_sip::*;
use super::*;
use crate::acd::{AgentId, AgentState, Strategy};
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

const PHONE: LegId = LegId(7);

fn harness() -> Harness {
    Harness::with(|s| s.acd = Some(center(Strategy::RoundRobin)))
}

impl Harness {
    fn pin_answer(&mut self, check: u64, ok: bool) -> Vec<Output> {
        self.cc.agent_pin_checked(self.now, check, ok);
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
        self.take()
    }
}

fn confirmation(out: &[Output], leg_id: LegId) -> bool {
    out.contains(&Output::SipAnswer { leg: leg_id })
        && plays(out)
            == vec![(
                leg(leg_id),
                Playback::looped(Sound::Tone(Tone::Confirmation)),
            )]
}

/// Agent `id` logs in from SIP phone 210 with `dialled`; the PIN check says `ok`.
fn sip_login(h: &mut Harness, dialled: &str, ok: bool) -> Vec<Output> {
    h.incoming(PHONE, SipOrigin::Extension("210".into()), "210", dialled);
    let out = h.take();
    let checks = pin_checks(&out);
    assert_eq!(checks.len(), 1, "{out:?}");
    assert_eq!(checks[0].2, "1234");
    // Nothing is answered (nor refused) before the PIN check says.
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::SipAnswer { .. } | Output::SipHangup { .. } | Output::SipRinging { .. }
    )));
    h.pin_answer(checks[0].0, ok)
}

#[test]
fn a_sip_phone_logs_an_agent_in_hears_confirmation_and_gets_the_queue_calls() {
    let mut h = harness();
    let out = sip_login(&mut h, "*61100*1234#", true);
    assert!(confirmation(&out, PHONE), "{out:?}");
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::AgentState { extension: Some(e), .. } if e == "210"
    )));
    // The box hangs up once the confirmation has played; no CDR for a feature code.
    h.advance(CONFIRMATION - Duration::from_millis(1));
    assert!(hangups(&h.take()).is_empty());
    h.advance(Duration::from_millis(1));
    let out = h.take();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Normal)]);
    assert_eq!(stops(&out), vec![leg(PHONE)]);
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    h.advance(Duration::from_secs(5));
    assert!(cdrs(&h.take()).is_empty());
    // A caller to the queue now rings the SIP phone the agent logged in on.
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    let (_, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Extension("210".into()));
}

#[test]
fn a_code_without_its_final_hash_is_taken_as_dialled_with_it() {
    let mut h = harness();
    let out = sip_login(&mut h, "*61100*1234", true);
    assert!(confirmation(&out, PHONE), "{out:?}");
}

#[test]
fn a_wrong_pin_is_forbidden_and_logs_nobody_in() {
    let mut h = harness();
    let out = sip_login(&mut h, "*61100*1234#", false);
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Forbidden)]);
    assert!(agent_states(&out).is_empty());
    assert!(!out.contains(&Output::SipAnswer { leg: PHONE }));
    assert!(plays(&out).is_empty());
    // Nothing is left waiting on the leg.
    h.advance(Duration::from_secs(10));
    assert!(h.take().is_empty());
    assert_eq!(h.cc.timeout(), None);
    // The queue has nobody to ring.
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    assert!(dials(&h.take()).is_empty());
}

#[test]
fn malformed_or_incomplete_codes_are_not_found_and_change_nothing() {
    for dialled in ["*61100", "*61100#", "*61*1234#", "*61ab*1234#", "*6"] {
        let mut h = harness();
        h.incoming(PHONE, SipOrigin::Extension("210".into()), "210", dialled);
        let out = h.take();
        assert_eq!(
            hangups(&out),
            vec![(PHONE, EndReason::Unallocated)],
            "{dialled}: {out:?}"
        );
        assert!(pin_checks(&out).is_empty(), "{dialled}");
        assert!(agent_states(&out).is_empty(), "{dialled}");
        h.advance(Duration::from_secs(5));
        // No call was made of it: no CDR, nothing pending.
        assert!(cdrs(&h.take()).is_empty(), "{dialled}");
        assert_eq!(h.cc.timeout(), None, "{dialled}");
    }
}

#[test]
fn pause_unpause_and_logout_from_the_phone_the_agent_is_on() {
    let mut h = harness();
    sip_login(&mut h, "*61100*1234#", true);
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    h.take();
    let mut next = 10;
    let mut code = |h: &mut Harness, dialled: &str| {
        next += 1;
        let l = LegId(next);
        h.incoming(l, SipOrigin::Extension("210".into()), "210", dialled);
        (l, h.take())
    };
    let (l, out) = code(&mut h, "*6342#");
    assert!(confirmation(&out, l), "{out:?}");
    assert!(matches!(
        agent_states(&out).as_slice(),
        [(a, AgentState::Paused(Some(_)))] if *a == agent("100")
    ));
    let (l, out) = code(&mut h, "*64");
    assert!(confirmation(&out, l), "{out:?}");
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    // From another phone no agent is on: refused, the agent stays logged in.
    h.incoming(LegId(99), SipOrigin::Extension("211".into()), "211", "*62");
    let out = h.take();
    assert_eq!(hangups(&out), vec![(LegId(99), EndReason::Forbidden)]);
    let (l, out) = code(&mut h, "*62");
    assert!(confirmation(&out, l), "{out:?}");
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::LoggedOut)]
    );
}

#[test]
fn the_phone_giving_up_ends_the_feature_leg_quietly() {
    // Hanging up during the confirmation: the playback stops, no hang-up is sent.
    let mut h = harness();
    sip_login(&mut h, "*61100*1234#", true);
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(stops(&out), vec![leg(PHONE)]);
    assert!(hangups(&out).is_empty());
    assert_eq!(h.cc.timeout(), None);
    // Cancelling while the PIN check runs: the log-in still happens (as on an analog
    // phone hung up meanwhile), the gone leg is neither answered nor hung up.
    let mut h = harness();
    h.incoming(
        PHONE,
        SipOrigin::Extension("210".into()),
        "210",
        "*61200*1234#",
    );
    let check = pin_checks(&h.take())[0].0;
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    assert!(h.take().is_empty());
    let out = h.pin_answer(check, true);
    assert_eq!(
        agent_states(&out),
        vec![(agent("200"), AgentState::Available)]
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::SipAnswer { .. } | Output::SipHangup { .. })));
}

#[test]
fn shutdown_ends_feature_legs() {
    let mut h = harness();
    h.incoming(
        PHONE,
        SipOrigin::Extension("210".into()),
        "210",
        "*61100*1234#",
    );
    h.take();
    h.cc.shutdown(h.now);
    while let Some(o) = h.cc.poll_output() {
        h.out.push(o);
    }
    assert_eq!(hangups(&h.take()), vec![(PHONE, EndReason::Congestion)]);
}

#[test]
fn without_a_call_center_star_codes_go_to_the_dial_plan() {
    let mut h = Harness::new();
    h.incoming(
        PHONE,
        SipOrigin::Extension("210".into()),
        "210",
        "*61100*1234#",
    );
    let out = h.take();
    assert_eq!(hangups(&out), vec![(PHONE, EndReason::Unallocated)]);
    assert!(pin_checks(&out).is_empty());
}

#[test]
fn trunk_callers_cannot_dial_feature_codes() {
    let mut h = harness();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "*61100*1234#");
    let out = h.take();
    assert!(pin_checks(&out).is_empty(), "{out:?}");
    assert_eq!(hangups(&out), vec![(IN1, EndReason::Unallocated)]);
}

fn dispositions(out: &[Output]) -> Vec<(u64, AgentId, String, String, u8)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Disposition {
                check,
                agent,
                call_id,
                caller,
                digit,
                ..
            } => Some((
                *check,
                agent.clone(),
                call_id.clone(),
                caller.clone(),
                *digit,
            )),
            _ => None,
        })
        .collect()
}

impl Harness {
    fn disposition_answer(&mut self, check: u64, ok: bool) -> Vec<Output> {
        self.cc.disposition_stored(self.now, check, ok);
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
        self.take()
    }
}

/// Agent 100 on FXS 2 answers 101's queue call; 101 hangs up: the agent is in its
/// 2 s wrap-up. Returns the call's id.
fn wrapped_up_call(h: &mut Harness) -> String {
    login(h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    h.take();
    h.ev(2, Event::OffHook);
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::OnHook);
    h.ev(2, Event::OnHook);
    let out = h.take();
    assert_eq!(
        agent_states(&out).last(),
        Some(&(agent("100"), AgentState::WrapUp))
    );
    cdrs(&out)[0].call_id.clone()
}

#[test]
fn an_agent_in_wrap_up_tags_the_call_with_a_customer_type_digit() {
    let mut h = harness();
    let call = wrapped_up_call(&mut h);
    h.ev(2, Event::OffHook);
    h.dial(2, "*603");
    let out = h.take();
    let d = dispositions(&out);
    assert_eq!(
        d.iter()
            .map(|(_, a, c, from, digit)| (a, c, from.as_str(), *digit))
            .collect::<Vec<_>>(),
        vec![(&agent("100"), &call, "101", 3)],
        "{out:?}"
    );
    // Quiet until the store says; then the confirmation.
    assert!(!tone_is(&out, 2, Tone::Confirmation));
    let out = h.disposition_answer(d[0].0, true);
    assert!(tone_is(&out, 2, Tone::Confirmation), "{out:?}");
    h.ev(2, Event::OnHook);
    // Keyed again in the same wrap-up: replaces it (the store's upsert); a digit no
    // type has is refused by the store: number unobtainable.
    h.ev(2, Event::OffHook);
    h.dial(2, "*608");
    let d = dispositions(&h.take());
    assert_eq!(d[0].4, 8);
    let out = h.disposition_answer(d[0].0, false);
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
    h.ev(2, Event::OnHook);
    h.take();
    // An answer for a check nobody waits for changes nothing.
    assert!(h.disposition_answer(d[0].0, true).is_empty());
    // Wrap-up over: nothing to tag, refused without asking the store.
    h.advance(Duration::from_secs(3));
    h.take();
    h.ev(2, Event::OffHook);
    h.dial(2, "*603");
    let out = h.take();
    assert!(dispositions(&out).is_empty(), "{out:?}");
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
}

#[test]
fn a_disposition_needs_an_agent_with_a_call_to_wrap_up() {
    // Nobody logged in on 103.
    let mut h = harness();
    wrapped_up_call(&mut h);
    h.ev(3, Event::OffHook);
    h.dial(3, "*603");
    let out = h.take();
    assert!(dispositions(&out).is_empty());
    assert!(tone_is(&out, 3, Tone::Unobtainable), "{out:?}");
    // Logged in but never answered a call: nothing to tag.
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(2, Event::OffHook);
    h.dial(2, "*603");
    let out = h.take();
    assert!(dispositions(&out).is_empty());
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
    // A malformed code: refused by the parser, nothing asked.
    h.ev(2, Event::OnHook);
    h.ev(2, Event::OffHook);
    h.dial(2, "*60*");
    let out = h.take();
    assert!(dispositions(&out).is_empty());
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
}

#[test]
fn a_sip_agent_keys_the_disposition_from_the_phone() {
    let mut h = harness();
    sip_login(&mut h, "*61100*1234#", true);
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    // 101 calls the queue; the agent's SIP phone 210 answers; 101 hangs up.
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let (offer, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: offer });
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::OnHook);
    let out = h.take();
    let call = cdrs(&out)[0].call_id.clone();
    h.sip(SipInput::Ended {
        leg: offer,
        reason: EndReason::Normal,
    });
    h.take();
    let tag = LegId(40);
    h.incoming(tag, SipOrigin::Extension("210".into()), "210", "*605#");
    let d = dispositions(&h.take());
    assert_eq!((d[0].2.as_str(), d[0].4), (call.as_str(), 5));
    let out = h.disposition_answer(d[0].0, true);
    assert!(confirmation(&out, tag), "{out:?}");
}

/// The call center of [`harness`] with agent 100 in extension mode `mode`.
fn harness_with_mode(mode: crate::acd::ExtensionMode) -> Harness {
    Harness::with(|s| {
        let base = center(Strategy::RoundRobin);
        let agents = base
            .config
            .agents()
            .iter()
            .cloned()
            .map(|mut a| {
                if a.id == agent("100") {
                    a.mode = mode.clone();
                }
                a
            })
            .collect();
        let config =
            crate::acd::AcdConfig::new(base.config.queues().to_vec(), agents).expect("config");
        s.acd = Some(AcdSettings {
            config,
            codes: base.codes,
        });
    })
}

#[test]
fn extension_modes_refuse_feature_code_log_ins_they_do_not_take() {
    // Automatic: the desktop logs in, not the phone (403 even with the right PIN).
    let mut h = harness_with_mode(crate::acd::ExtensionMode::Automatic);
    let out = sip_login(&mut h, "*61100*1234#", true);
    assert_eq!(
        hangups(&out),
        vec![(PHONE, EndReason::Forbidden)],
        "{out:?}"
    );
    assert!(agent_states(&out).is_empty());
    // The desktop's log-in (the API found phone 210) works.
    assert_eq!(
        h.cc.agent_desk(
            h.now,
            agent("100"),
            DeskAction::Login {
                extension: "210".into()
            }
        ),
        Some(Ok(()))
    );
    let out = h.drain();
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    assert_eq!(
        h.cc.acd()
            .and_then(|a| a.agent(&agent("100")))
            .and_then(|a| a.2),
        Some("210")
    );
    // Fixed on 211: the phone 210 is refused, 211 logs in.
    let mut h = harness_with_mode(crate::acd::ExtensionMode::Fixed("211".into()));
    let out = sip_login(&mut h, "*61100*1234#", true);
    assert_eq!(
        hangups(&out),
        vec![(PHONE, EndReason::Forbidden)],
        "{out:?}"
    );
    h.incoming(
        LegId(8),
        SipOrigin::Extension("211".into()),
        "211",
        "*61100*1234#",
    );
    let checks = pin_checks(&h.take());
    let out = h.pin_answer(checks[0].0, true);
    assert!(confirmation(&out, LegId(8)), "{out:?}");
    // Login mode (the default): the desktop is refused, nothing changes.
    let mut h = harness_with_mode(crate::acd::ExtensionMode::Login);
    let refused = h.cc.agent_desk(
        h.now,
        agent("100"),
        DeskAction::Login {
            extension: "210".into(),
        },
    );
    assert!(
        matches!(
            refused,
            Some(Err(crate::acd::InputError::WrongLoginPath { .. }))
        ),
        "{refused:?}"
    );
    assert!(agent_states(&h.drain()).is_empty());
}

#[test]
fn a_direct_call_to_the_sip_phone_an_agent_is_logged_in_on_pops_up() {
    let mut h = harness();
    sip_login(&mut h, "*61100*1234#", true);
    h.advance(CONFIRMATION);
    h.sip(SipInput::Ended {
        leg: PHONE,
        reason: EndReason::Normal,
    });
    h.take();
    // A trunk caller dials 210 directly (no queue): agent 100's desktop hears it ring.
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "210");
    let out = h.take();
    let (phone, target, _) = only_dial(&out);
    assert_eq!(target, SipTarget::Extension("210".into()));
    let rang: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::AgentCall(e) => Some(e.as_ref().clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rang.len(), 1, "{out:?}");
    assert_eq!(rang[0].agent.as_str(), "100");
    assert_eq!(rang[0].kind, AgentCallKind::Ringing);
    assert_eq!(rang[0].queue, None);
    assert_eq!(rang[0].caller_number, "+4930123");
    assert_eq!(rang[0].extension.as_deref(), Some("210"));
    assert_eq!(rang[0].transferred_from, None);
    // The phone answers: the desktop hears that too.
    h.sip(SipInput::Answered { leg: phone });
    let out = h.take();
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::AgentCall(e) if e.kind == AgentCallKind::Answered && e.agent.as_str() == "100"
        )),
        "{out:?}"
    );
}
