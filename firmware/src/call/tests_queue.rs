//! Call queues on real calls (see `queue.rs`) on a virtual clock, with the dial plan of
//! `tests_sip.rs` (101 FXS 1, 102 FXS 2 + SIP, 103 FXS 3, 210/211 SIP only, FXO 5
//! inbound, FXO 6 outside, prefix 9) plus queue "sales" on 7001 (agents 100 and 200,
//! round-robin, 10 s ring timeout, 2 s wrap-up) and the default feature codes.

use std::collections::BTreeMap;
use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_sip::*;
use super::*;
use crate::acd::codes::FeatureCodes;
use crate::acd::{
    AcdConfig, AgentConfig, AgentId, AgentState, Member, MusicOnHold, QueueConfig, Strategy,
};
use crate::cdr::Disposition;
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

pub(super) fn agent(id: &str) -> AgentId {
    id.parse().expect("agent id")
}

pub(super) fn center(strategy: Strategy) -> AcdSettings {
    center_with(strategy, Duration::from_secs(2))
}

/// [`center`] with another wrap-up time.
fn center_with(strategy: Strategy, wrap_up: Duration) -> AcdSettings {
    let agents = ["100", "200"]
        .iter()
        .map(|id| AgentConfig {
            id: agent(id),
            skills: Default::default(),
            recording: Default::default(),
            mode: Default::default(),
        })
        .collect();
    let mut q = QueueConfig::new(
        "sales".parse().expect("name"),
        "7001".parse().expect("number"),
        strategy,
    );
    q.members = ["100", "200"]
        .iter()
        .map(|id| Member {
            agent: agent(id),
            penalty: 0,
        })
        .collect();
    q.ring_timeout = Duration::from_secs(10);
    q.wrap_up = wrap_up;
    AcdSettings {
        config: AcdConfig::new(vec![q], agents).expect("config"),
        codes: FeatureCodes::default(),
    }
}

pub(super) fn harness() -> Harness {
    Harness::with(|s| {
        s.acd = Some(center(Strategy::RoundRobin));
        s.fxo_lines[0].inbound = vec!["7001".into()];
    })
}

pub(super) fn pin_checks(out: &[Output]) -> Vec<(u64, AgentId, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CheckAgentPin { check, agent, pin } => {
                Some((*check, agent.clone(), pin.expose().to_owned()))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn agent_states(out: &[Output]) -> Vec<(AgentId, AgentState)> {
    out.iter()
        .filter_map(|o| match o {
            Output::AgentState { agent, state, .. } => Some((agent.clone(), state.clone())),
            _ => None,
        })
        .collect()
}

fn rings(out: &[Output], port: u8) -> bool {
    has_cmd(out, port, |c| matches!(c, Command::Ring(_)))
}

/// Agent `id` logs in on FXS `port` with PIN 1234, which the store confirms.
pub(super) fn login(h: &mut Harness, port: u8, id: &str) {
    h.ev(port, Event::OffHook);
    h.dial(port, &format!("*61{id}*1234#"));
    let out = h.take();
    let checks = pin_checks(&out);
    assert_eq!(checks.len(), 1, "{out:?}");
    assert_eq!((&checks[0].1, checks[0].2.as_str()), (&agent(id), "1234"));
    h.cc.agent_pin_checked(h.now, checks[0].0, true);
    let out = h.drain();
    assert!(tone_is(&out, port, Tone::Confirmation), "{out:?}");
    assert_eq!(agent_states(&out), vec![(agent(id), AgentState::Available)]);
    h.ev(port, Event::OnHook);
    h.take();
}

impl Harness {
    pub(super) fn drain(&mut self) -> Vec<Output> {
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
        self.take()
    }
}

#[test]
fn an_agent_logs_in_by_feature_code_and_answers_a_queued_caller() {
    let mut h = harness();
    login(&mut h, 2, "100");
    // 101 dials the queue: music on hold, and agent 100's phone (102, FXS 2) rings
    // with 101's caller ID.
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::MusicOnHold), "{out:?}");
    assert!(!tone_is(&out, 1, Tone::Ringback));
    assert!(rings(&out, 2));
    assert!(has_cmd(
        &out,
        2,
        |c| matches!(c, Command::SendCallerId { caller_id, .. } if caller_id.number.as_str() == "101")
    ));
    assert!(
        agent_states(&out).contains(&(agent("100"), AgentState::Ringing(crate::acd::CallId(1))))
    );
    // The agent answers: music stops, caller and agent are bridged.
    h.advance(Duration::from_secs(3));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::Connect(port(1), port(2))), "{out:?}");
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    assert!(agent_states(&out)
        .iter()
        .any(|(a, s)| *a == agent("100") && matches!(s, AgentState::OnCall(_))));
    // The caller hangs up: a CDR, and the agent goes to wrap-up, then available.
    h.advance(Duration::from_secs(20));
    h.ev(1, Event::OnHook);
    let out = h.take();
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "7001"));
    // Waited from entering the queue (after the 4 digits) to the answer, 3 s later.
    assert_eq!(
        cdr.queue,
        Some(crate::cdr::CdrQueue {
            queue: "sales".into(),
            agent: Some("100".into()),
            wait_ms: 3_000,
        })
    );
    assert_eq!(agent_states(&out), vec![(agent("100"), AgentState::WrapUp)]);
    h.ev(2, Event::OnHook);
    h.advance(Duration::from_secs(2));
    assert_eq!(
        agent_states(&h.take()),
        vec![(agent("100"), AgentState::Available)]
    );
}

#[test]
fn a_caller_who_hangs_up_while_waiting_is_abandoned_and_the_agent_stops_ringing() {
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    assert!(rings(&h.take(), 2));
    h.advance(Duration::from_secs(4));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing), "{out:?}");
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::NoAnswer);
    assert_eq!(
        cdr.queue.as_ref().map(|q| (q.agent.clone(), q.wait_ms)),
        Some((None, 4_000))
    );
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    assert_eq!(
        h.cc.acd()
            .expect("acd")
            .waiting(&"sales".parse().expect("q")),
        vec![]
    );
}

#[test]
fn an_unanswered_offer_moves_on_to_the_next_agent_after_the_queue_ring_timeout() {
    let mut h = harness();
    login(&mut h, 2, "100");
    login(&mut h, 3, "200");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    let first = if rings(&out, 2) { 2 } else { 3 };
    let second = 5 - first;
    assert!(!rings(&out, second));
    // The queue's 10 s, not call control's 30 s ring timeout.
    h.advance(Duration::from_millis(9_900));
    assert!(!has_cmd(&h.take(), first, |c| *c == Command::StopRing));
    h.advance(Duration::from_millis(200));
    let out = h.take();
    assert!(has_cmd(&out, first, |c| *c == Command::StopRing), "{out:?}");
    assert!(rings(&out, second));
    // The caller is still waiting, with music.
    assert!(cdrs(&out).is_empty());
}

#[test]
fn an_agent_whose_phone_is_busy_is_skipped() {
    let mut h = harness();
    login(&mut h, 3, "100");
    login(&mut h, 2, "200");
    // Agent 100's phone (103, FXS 3 only) is off-hook on a private call attempt.
    h.ev(3, Event::OffHook);
    h.take();
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    assert!(!rings(&out, 3));
    assert!(rings(&out, 2), "{out:?}");
}

#[test]
fn a_pstn_caller_is_answered_by_the_queue_and_hears_music() {
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(line_proto::CallerId::new("5550100", "").expect("cid")),
        },
    );
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(tone_is(&out, 5, Tone::MusicOnHold));
    assert!(rings(&out, 2));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(
        out.contains(&Output::Connect(port(2), port(5)))
            || out.contains(&Output::Connect(port(5), port(2))),
        "{out:?}"
    );
    // The far end hangs up (disconnect supervision).
    h.ev(5, Event::PolarityReversal);
    let out = h.take();
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Answered);
    assert_eq!(agent_states(&out), vec![(agent("100"), AgentState::WrapUp)]);
}

#[test]
fn a_sip_caller_rings_until_an_agent_answers_on_a_sip_phone() {
    let mut h = Harness::with(|s| s.acd = Some(center(Strategy::RingAll)));
    // Agent 200 logs in on 102 (FXS 2 + SIP phone 102): both ring.
    login(&mut h, 2, "200");
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    let out = h.take();
    assert!(
        out.contains(&Output::SipRinging {
            leg: IN1,
            early_media: false
        }),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::SipAnswer { .. })));
    assert!(rings(&out, 2));
    let (phone, target, _) = only_dial(&out);
    assert_eq!(target, SipTarget::Extension("102".into()));
    // The SIP phone answers: the analog phone stops ringing, the caller is answered.
    h.sip(SipInput::Answered { leg: phone });
    let out = h.take();
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing), "{out:?}");
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), leg(phone))));
}

#[test]
fn a_declining_sip_phone_is_an_offer_rejected() {
    let mut h = harness();
    login(&mut h, 2, "100");
    login(&mut h, 3, "200");
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    let out = h.take();
    // Round-robin starts with agent 100 on 102: FXS 2 and SIP phone 102 ring.
    let (phone, _, _) = only_dial(&out);
    assert!(rings(&out, 2));
    h.sip(SipInput::Ended {
        leg: phone,
        reason: EndReason::Busy,
    });
    // FXS 2 still rings for agent 100: not rejected yet. FXS 2 faulting ends it.
    let out = h.take();
    assert!(!rings(&out, 3), "{out:?}");
    h.ev(2, Event::Fault(line_proto::FaultKind::OverCurrent));
    let out = h.take();
    assert!(rings(&out, 3), "{out:?}");
    assert!(cdrs(&out).is_empty());
}

#[test]
fn wrong_pins_are_refused_and_lock_the_agent_id_out() {
    let mut h = harness();
    for attempt in 0..PIN_FAILURES {
        h.ev(2, Event::OffHook);
        h.dial(2, "*61100*9999#");
        let checks = pin_checks(&h.take());
        assert_eq!(checks.len(), 1, "attempt {attempt}");
        h.cc.agent_pin_checked(h.now, checks[0].0, false);
        let out = h.drain();
        assert!(tone_is(&out, 2, Tone::Unobtainable), "attempt {attempt}");
        assert!(agent_states(&out).is_empty());
        h.ev(2, Event::OnHook);
        h.take();
    }
    // Locked out: not even checked, even with the right PIN.
    h.ev(2, Event::OffHook);
    h.dial(2, "*61100*1234#");
    let out = h.take();
    assert!(pin_checks(&out).is_empty());
    assert!(tone_is(&out, 2, Tone::Unobtainable));
    h.ev(2, Event::OnHook);
    // After the lockout the right PIN works.
    h.advance(PIN_LOCKOUT);
    h.take();
    login(&mut h, 2, "100");
}

#[test]
fn malformed_and_refused_feature_codes_give_unobtainable_and_change_nothing() {
    let mut h = harness();
    // A letter-free but malformed login (no PIN separator), logout while logged out,
    // pause while logged out.
    for code in ["*61100#", "*62", "*63#"] {
        h.ev(3, Event::OffHook);
        h.dial(3, code);
        let out = h.take();
        assert!(tone_is(&out, 3, Tone::Unobtainable), "{code}: {out:?}");
        assert!(
            agent_states(&out).is_empty() && pin_checks(&out).is_empty(),
            "{code}"
        );
        h.ev(3, Event::OnHook);
        h.take();
    }
    // Agent 100 logged in on FXS 2: agent 200 cannot take FXS 2.
    login(&mut h, 2, "100");
    h.ev(2, Event::OffHook);
    h.dial(2, "*61200*1234#");
    let (check, _, _) = pin_checks(&h.take())[0].clone();
    h.cc.agent_pin_checked(h.now, check, true);
    let out = h.drain();
    assert!(tone_is(&out, 2, Tone::Unobtainable), "{out:?}");
    assert!(agent_states(&out).is_empty());
}

#[test]
fn pause_and_logout_by_feature_code() {
    let mut h = harness();
    // Agent 100 on 103 (FXS 3 only).
    login(&mut h, 3, "100");
    h.ev(3, Event::OffHook);
    h.dial(3, "*6307#");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Confirmation));
    assert_eq!(
        agent_states(&out),
        vec![(
            agent("100"),
            AgentState::Paused(Some("07".parse().expect("reason")))
        )]
    );
    h.ev(3, Event::OnHook);
    // A caller waits: the paused agent is not rung.
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    assert!(!rings(&h.take(), 3));
    h.ev(3, Event::OffHook);
    h.dial(3, "*64");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Confirmation));
    assert_eq!(agent_states(&out)[0], (agent("100"), AgentState::Available));
    // Unpaused while the phone is still off-hook: that offer is refused; once the
    // phone is down the call is offered again after the retry delay.
    h.ev(3, Event::OnHook);
    h.take();
    h.advance(crate::acd::RETRY_DELAY);
    assert!(rings(&h.take(), 3));
    h.ev(1, Event::OnHook);
    h.take();
    h.ev(3, Event::OffHook);
    h.dial(3, "*62");
    let out = h.take();
    assert!(tone_is(&out, 3, Tone::Confirmation));
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::LoggedOut)]
    );
}

pub(super) fn plays(out: &[Output]) -> Vec<(MediaEnd, crate::prompts::Playback)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Play { end, playback } => Some((*end, playback.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn stops(out: &[Output]) -> Vec<MediaEnd> {
    out.iter()
        .filter_map(|o| match o {
            Output::StopPlay { end } => Some(*end),
            _ => None,
        })
        .collect()
}

/// The English announcement set plus a music prompt "moh".
fn prompt_set() -> BTreeMap<String, Duration> {
    let mut names: Vec<String> = ["queue-position", "queue-wait", "minute", "minutes", "moh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend((0..20).map(|n| format!("num-{n}")));
    names.extend((2..10).map(|t| format!("num-{}", t * 10)));
    names
        .into_iter()
        .map(|n| (n, Duration::from_millis(800)))
        .collect()
}

fn with_music(music: MusicOnHold, announce: Option<Duration>, prompts: bool) -> Harness {
    Harness::with(|s| {
        let mut acd = center(Strategy::RoundRobin);
        let mut queues = acd.config.queues().to_vec();
        queues[0].music_on_hold = music;
        queues[0].announce_every = announce;
        let agents = acd.config.agents().to_vec();
        acd.config = AcdConfig::new(queues, agents).expect("config");
        s.acd = Some(acd);
        s.fxo_lines[0].inbound = vec!["7001".into()];
        if prompts {
            s.prompts = prompt_set();
        }
    })
}

#[test]
fn a_music_prompt_plays_through_the_media_engine_and_stops_on_connect() {
    let mut h = with_music(MusicOnHold::Prompt("moh".into()), None, true);
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    assert_eq!(
        plays(&out),
        vec![(port(1), Playback::looped(Sound::Prompt("moh".into())))],
        "{out:?}"
    );
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    assert!(!tone_is(&out, 1, Tone::MusicOnHold));
    assert!(rings(&out, 2));
    // The agent answers: the music stops before caller and agent are bridged.
    h.ev(2, Event::OffHook);
    let out = h.drain();
    let stop = out
        .iter()
        .position(|o| *o == Output::StopPlay { end: port(1) })
        .unwrap_or_else(|| panic!("no StopPlay: {out:?}"));
    let connect = out
        .iter()
        .position(|o| matches!(o, Output::Connect(..)))
        .unwrap_or_else(|| panic!("no Connect: {out:?}"));
    assert!(stop < connect);
}

#[test]
fn a_missing_music_prompt_falls_back_to_the_tone() {
    let mut h = with_music(MusicOnHold::Prompt("moh".into()), None, false);
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::MusicOnHold), "{out:?}");
    assert!(plays(&out).is_empty());
}

#[test]
fn a_sip_caller_gets_early_media_music_and_is_answered_only_by_an_agent() {
    let mut h = with_music(MusicOnHold::Tone, None, false);
    login(&mut h, 3, "100");
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    let out = h.take();
    assert!(
        out.contains(&Output::SipRinging {
            leg: IN1,
            early_media: true
        }),
        "{out:?}"
    );
    assert_eq!(
        plays(&out),
        vec![(leg(IN1), Playback::looped(Sound::Tone(Tone::MusicOnHold)))]
    );
    assert!(!out.iter().any(|o| matches!(o, Output::SipAnswer { .. })));
    // The caller gives up: the music stops, the call is abandoned.
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(stops(&out), vec![leg(IN1)], "{out:?}");
    assert_eq!(cdrs(&out).len(), 1);
}

#[test]
fn a_sip_caller_to_a_silent_queue_keeps_its_own_ringback() {
    let mut h = with_music(MusicOnHold::Silence, None, false);
    login(&mut h, 3, "100");
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    let out = h.take();
    assert!(plays(&out).is_empty(), "{out:?}");
    assert!(!out.contains(&Output::SipRinging {
        leg: IN1,
        early_media: true
    }));
}

#[test]
fn announcements_are_spoken_when_the_prompts_are_there_then_the_music_resumes() {
    let every = Duration::from_secs(30);
    let mut h = with_music(MusicOnHold::Prompt("moh".into()), Some(every), true);
    // Nobody logged in: the callers wait (no on_no_agents overflow configured).
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    h.ev(3, Event::OffHook);
    h.dial(3, "7001");
    h.take();
    h.advance(every);
    let out = h.take();
    let mut got = plays(&out);
    got.sort_by_key(|(end, _)| format!("{end:?}"));
    assert_eq!(got.len(), 2, "{out:?}");
    let (end, first) = &got[0];
    assert_eq!(*end, port(1));
    assert_eq!(first.once[..2], ["queue-position", "num-1"]);
    assert_eq!(first.then, Some(Sound::Prompt("moh".into())));
    assert_eq!(got[1].1.once[..2], ["queue-position", "num-2"]);
}

#[test]
fn without_prompts_announcements_are_only_logged() {
    let every = Duration::from_secs(30);
    let mut h = with_music(MusicOnHold::Tone, Some(every), false);
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    h.take();
    h.advance(every * 3);
    let out = h.take();
    assert!(plays(&out).is_empty(), "{out:?}");
}

#[test]
fn announcement_wording() {
    let have = prompt_set();
    let s = |v: Vec<String>| v.join(" ");
    assert_eq!(
        s(super::queue::announcement(&have, 4, None)),
        "queue-position num-4"
    );
    assert_eq!(
        s(super::queue::announcement(
            &have,
            47,
            Some(Duration::from_secs(61))
        )),
        "queue-position num-40 num-7 queue-wait num-2 minutes"
    );
    assert_eq!(
        s(super::queue::announcement(
            &have,
            20,
            Some(Duration::from_secs(5))
        )),
        "queue-position num-20 queue-wait num-1 minute"
    );
    assert_eq!(
        s(super::queue::announcement(&have, 105, None)),
        "queue-position num-1 num-0 num-5"
    );
    // Only the position prompts: the wait part is left out.
    let mut partial = have.clone();
    partial.remove("queue-wait");
    assert_eq!(
        s(super::queue::announcement(
            &partial,
            3,
            Some(Duration::from_secs(120))
        )),
        "queue-position num-3"
    );
    // A number prompt missing: nothing is spoken.
    partial.remove("num-3");
    assert!(super::queue::announcement(&partial, 3, None).is_empty());
    assert!(super::queue::announcement(&BTreeMap::new(), 1, None).is_empty());
}

fn agent_calls(out: &[Output]) -> Vec<AgentCallEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::AgentCall(e) => Some(AgentCallEvent::clone(e)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_agent_gets_ringing_answered_and_ended_events_with_the_caller_and_queue() {
    let mut h = harness();
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let entered_ms = h.cc.settings.wall_clock_ms
        + i64::try_from(
            h.now
                .saturating_duration_since(h.cc.settings.epoch)
                .as_millis(),
        )
        .expect("ms");
    let ringing = agent_calls(&h.take());
    assert_eq!(ringing.len(), 1, "{ringing:?}");
    let r = &ringing[0];
    assert_eq!(r.kind, AgentCallKind::Ringing);
    assert_eq!(
        (r.agent.as_str(), r.queue.as_deref()),
        ("100", Some("sales"))
    );
    assert_eq!(
        (r.caller_number.as_str(), r.caller_name.as_str()),
        ("101", "Ext 101")
    );
    assert_eq!(r.extension.as_deref(), Some("102"));
    assert_eq!(r.since_ms, entered_ms);
    let call_id = r.call_id.clone();
    h.advance(Duration::from_secs(3));
    h.ev(2, Event::OffHook);
    let answered = agent_calls(&h.take());
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].kind, AgentCallKind::Answered);
    assert_eq!(answered[0].call_id, call_id);
    assert_eq!(answered[0].at_ms, entered_ms + 3_000);
    h.advance(Duration::from_secs(20));
    h.ev(1, Event::OnHook);
    let out = h.take();
    let ended = agent_calls(&out);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        ended[0].kind,
        AgentCallKind::Ended {
            end: AgentCallEnd::Call(Disposition::Answered),
            talk_ms: Some(20_000),
        }
    );
    assert_eq!(ended[0].call_id, cdrs(&out)[0].call_id);
    assert_eq!(ended[0].extension.as_deref(), Some("102"));
}

#[test]
fn a_ringing_agent_hears_of_an_abandoned_caller_and_of_an_offer_moving_on() {
    let mut h = harness();
    login(&mut h, 2, "100");
    login(&mut h, 3, "200");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let first = agent_calls(&h.take());
    assert_eq!(first.len(), 1);
    let first_agent = first[0].agent.clone();
    // The queue's 10 s ring timeout: the first agent's offer ends "not answered",
    // the other agent's phone rings.
    h.advance(Duration::from_secs(10));
    let moved = agent_calls(&h.take());
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!(moved[0].agent, first_agent);
    assert_eq!(
        moved[0].kind,
        AgentCallKind::Ended {
            end: AgentCallEnd::OfferStopped(crate::acd::StopReason::NoAnswer),
            talk_ms: None,
        }
    );
    assert_eq!(
        AgentCallEnd::OfferStopped(crate::acd::StopReason::NoAnswer).as_str(),
        "not_answered"
    );
    assert_eq!(moved[1].kind, AgentCallKind::Ringing);
    assert_ne!(moved[1].agent, first_agent);
    // The caller gives up: the ringing agent's call ends as the CDR says.
    h.advance(Duration::from_secs(2));
    h.ev(1, Event::OnHook);
    let out = h.take();
    let gone = agent_calls(&out);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0].agent, moved[1].agent);
    assert_eq!(
        gone[0].kind,
        AgentCallKind::Ended {
            end: AgentCallEnd::Call(cdrs(&out)[0].disposition),
            talk_ms: None,
        }
    );
}

#[test]
fn a_direct_call_to_the_phone_an_agent_is_logged_in_on_pops_up_too() {
    let mut h = harness();
    login(&mut h, 2, "100");
    login(&mut h, 3, "200");
    // 101 dials 102 (agent 100's phone) directly: no queue.
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let out = h.drain();
    let rang = agent_calls(&out);
    assert_eq!(rang.len(), 1, "{rang:?}");
    assert_eq!(
        (
            rang[0].agent.as_str(),
            rang[0].queue.as_deref(),
            rang[0].kind
        ),
        ("100", None, AgentCallKind::Ringing)
    );
    assert_eq!(
        (rang[0].caller_number.as_str(), rang[0].extension.as_deref()),
        ("101", Some("102"))
    );
    // A direct call changes no agent state (the ACD did not offer it).
    assert_eq!(agent_states(&out), vec![]);
    h.advance(Duration::from_secs(1));
    h.ev(2, Event::OffHook);
    let answered = agent_calls(&h.drain());
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].kind, AgentCallKind::Answered);
    h.advance(Duration::from_secs(5));
    h.ev(2, Event::OnHook);
    let ended = agent_calls(&h.drain());
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.agent.as_str(), e.extension.as_deref(), e.kind))
            .collect::<Vec<_>>(),
        vec![(
            "100",
            Some("102"),
            AgentCallKind::Ended {
                end: AgentCallEnd::Call(Disposition::Answered),
                talk_ms: Some(5_000),
            }
        )]
    );
    // A call to an extension no agent holds tells nobody.
    h.ev(1, Event::OnHook);
    h.drain();
    h.ev(3, Event::OffHook);
    h.dial(3, "101");
    assert_eq!(agent_calls(&h.drain()), vec![]);
}

// ----- Post-call survey -----

/// The queue of [`harness`] with the survey prompt "rate-us" (1.5 s long).
fn survey_harness(have_prompt: bool) -> Harness {
    Harness::with(|s| {
        let mut acd = center(Strategy::RoundRobin);
        let mut queues = acd.config.queues().to_vec();
        queues[0].survey = Some("rate-us".into());
        let agents = acd.config.agents().to_vec();
        acd.config = AcdConfig::new(queues, agents).expect("config");
        s.acd = Some(acd);
        s.fxo_lines[0].inbound = vec!["7001".into()];
        if have_prompt {
            s.prompts = [("rate-us".to_owned(), Duration::from_millis(1500))].into();
        }
    })
}

fn survey_play(end: MediaEnd) -> Output {
    Output::Play {
        end,
        playback: Playback {
            once: vec!["rate-us".into()],
            then: None,
        },
    }
}

/// 101 calls the queue, agent 100 answers on 102, talks 20 s and hangs up.
fn agent_hangs_up_on_101(h: &mut Harness) -> Vec<Output> {
    login(h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    h.take();
    h.ev(2, Event::OffHook);
    h.take();
    h.advance(Duration::from_secs(20));
    h.take();
    h.ev(2, Event::OnHook);
    h.take()
}

#[test]
fn the_agent_hanging_up_first_starts_the_survey_and_a_key_scores_it() {
    let mut h = survey_harness(true);
    let out = agent_hangs_up_on_101(&mut h);
    assert!(
        out.contains(&Output::Disconnect(port(1), port(2)))
            || out.contains(&Output::Disconnect(port(2), port(1))),
        "{out:?}"
    );
    assert!(out.contains(&survey_play(port(1))), "{out:?}");
    // The agent is free (wrap-up) at once; no CDR yet; the caller hears no busy tone.
    assert_eq!(agent_states(&out), vec![(agent("100"), AgentState::WrapUp)]);
    assert!(cdrs(&out).is_empty());
    assert!(!tone_is(&out, 1, Tone::Busy));
    // The agent's desktop hears of the end now, with the talk time.
    let ended = agent_calls(&out);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        ended[0].kind,
        AgentCallKind::Ended {
            end: AgentCallEnd::Call(Disposition::Answered),
            talk_ms: Some(20_000),
        }
    );
    // Keys that are not scores are ignored; 4 is the score.
    h.advance(Duration::from_secs(3));
    h.ev(1, Event::Digit(b'9'));
    h.ev(1, Event::Digit(b'0'));
    assert!(cdrs(&h.take()).is_empty());
    h.ev(1, Event::Digit(b'4'));
    let out = h.take();
    assert!(out.contains(&Output::StopPlay { end: port(1) }), "{out:?}");
    assert!(
        tone_is(&out, 1, Tone::Busy),
        "the caller is released: busy tone"
    );
    assert!(
        agent_calls(&out).is_empty(),
        "no second ended event: {out:?}"
    );
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.survey_score, Some(4));
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!((cdr.caller_port, cdr.callee_port), (Some(1), Some(2)));
    assert_eq!(cdr.hangup_side, crate::cdr::HangupSide::Callee);
    // Talk time ends at the agent's hang-up, not after the survey.
    assert_eq!(
        cdr.ended_at_ms - cdr.answered_at_ms.expect("answered"),
        20_000
    );
    // A second key after the end changes nothing.
    h.ev(1, Event::Digit(b'5'));
    assert!(cdrs(&h.take()).is_empty());
}

#[test]
fn a_survey_nobody_answers_ends_after_the_prompt_and_the_key_wait() {
    let mut h = survey_harness(true);
    agent_hangs_up_on_101(&mut h);
    h.advance(
        Duration::from_millis(1500) + super::survey::SURVEY_KEY_WAIT - Duration::from_millis(100),
    );
    assert!(cdrs(&h.take()).is_empty());
    h.advance(Duration::from_millis(200));
    let out = h.take();
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.survey_score, None);
    assert!(out.contains(&Output::StopPlay { end: port(1) }));
}

#[test]
fn a_caller_hanging_up_during_the_survey_ends_it_without_a_score() {
    let mut h = survey_harness(true);
    agent_hangs_up_on_101(&mut h);
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(cdrs(&out)[0].survey_score, None);
    assert!(out.contains(&Output::StopPlay { end: port(1) }));
}

#[test]
fn no_survey_when_the_caller_hangs_up_first_or_the_prompt_is_missing() {
    let mut h = survey_harness(true);
    login(&mut h, 2, "100");
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    h.ev(2, Event::OffHook);
    h.take();
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(plays(&out).is_empty(), "{out:?}");
    assert_eq!(cdrs(&out).len(), 1);

    let mut h = survey_harness(false);
    let out = agent_hangs_up_on_101(&mut h);
    assert!(plays(&out).is_empty(), "{out:?}");
    assert_eq!(cdrs(&out).len(), 1);
    assert!(tone_is(&out, 1, Tone::Busy));
}

#[test]
fn a_sip_caller_scores_with_rfc4733_or_info_and_gets_a_bye() {
    let mut h = survey_harness(true);
    login(&mut h, 3, "100");
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "7001");
    h.take();
    h.ev(3, Event::OffHook);
    assert!(h.take().contains(&Output::SipAnswer { leg: IN1 }));
    h.ev(3, Event::OnHook);
    let out = h.take();
    assert!(out.contains(&survey_play(leg(IN1))), "{out:?}");
    assert!(hangups(&out).is_empty(), "the caller stays: {out:?}");
    h.sip(SipInput::Digit {
        leg: IN1,
        digit: '2',
    });
    let out = h.take();
    assert_eq!(hangups(&out), vec![(IN1, EndReason::Normal)]);
    h.advance(QUALITY_WAIT);
    let out = [out, h.take()].concat();
    assert_eq!(cdrs(&out)[0].survey_score, Some(2));
}

#[test]
fn a_pstn_caller_scores_with_inband_dtmf_found_by_the_board_loop() {
    let mut h = survey_harness(true);
    login(&mut h, 2, "100");
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(line_proto::CallerId::new("5550100", "").expect("cid")),
        },
    );
    h.take();
    h.ev(2, Event::OffHook);
    h.take();
    h.ev(2, Event::OnHook);
    let out = h.take();
    assert!(
        out.contains(&Output::DetectDtmf { port: 5, on: true }),
        "{out:?}"
    );
    assert!(out.contains(&survey_play(port(5))));
    assert!(!has_cmd(&out, 5, |c| *c == Command::FxoRelease));
    h.ev(5, Event::Digit(b'5'));
    let out = h.take();
    assert!(out.contains(&Output::DetectDtmf { port: 5, on: false }));
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoRelease), "{out:?}");
    assert_eq!(cdrs(&out)[0].survey_score, Some(5));
}

#[test]
fn without_wrap_up_an_agent_hanging_up_is_offered_the_next_caller_at_once() {
    // Agent 100 alone on FXS 2, no wrap-up; two trunk callers wait.
    let mut h = Harness::with(|s| s.acd = Some(center_with(Strategy::RoundRobin, Duration::ZERO)));
    login(&mut h, 2, "100");
    h.incoming(IN1, SipOrigin::Trunk, "+4930111", "7001");
    h.incoming(IN2, SipOrigin::Trunk, "+4930222", "7001");
    assert!(rings(&h.take(), 2));
    h.ev(2, Event::OffHook);
    h.advance(Duration::from_secs(3));
    h.take();
    // The agent hangs up: the phone is idle when the ACD offers it the second caller,
    // so it rings again right away (not refused as busy and retried 5 s later).
    h.ev(2, Event::OnHook);
    let out = h.take();
    assert!(rings(&out, 2), "{out:?}");
    let states = agent_states(&out);
    assert!(
        states.ends_with(&[(agent("100"), AgentState::Ringing(crate::acd::CallId(2)))]),
        "{states:?}"
    );
}

#[test]
fn the_call_center_is_reconfigured_without_a_restart() {
    let mut h = harness();
    login(&mut h, 2, "100");
    // 7002 is no queue yet: a caller to it is unallocated.
    h.incoming(IN1, SipOrigin::Trunk, "+4930111", "7002");
    assert_eq!(hangups(&h.take()), vec![(IN1, EndReason::Unallocated)]);
    // Queue "support" on 7002 with agent 200 joins; "sales" keeps agent 100.
    let mut settings = center(Strategy::RoundRobin);
    let mut support = crate::acd::QueueConfig::new(
        "support".parse().expect("name"),
        "7002".parse().expect("number"),
        Strategy::RingAll,
    );
    support.members = vec![crate::acd::Member {
        agent: agent("200"),
        penalty: 0,
    }];
    let mut queues = settings.config.queues().to_vec();
    queues.push(support);
    settings.config = AcdConfig::new(queues, settings.config.agents().to_vec()).expect("config");
    h.cc.reconfigure_acd(h.now, settings);
    // Agent 100 is still logged in: a sales caller rings FXS 2 at once.
    h.incoming(IN2, SipOrigin::Trunk, "+4930222", "7001");
    assert!(rings(&h.take(), 2));
    // Agent 200 logs in on 103 and takes the support caller.
    login(&mut h, 3, "200");
    h.incoming(LegId(3), SipOrigin::Trunk, "+4930333", "7002");
    let out = h.take();
    assert!(rings(&out, 3), "{out:?}");
    assert!(!hangups(&out).iter().any(|(l, _)| *l == LegId(3)));
}

#[test]
fn an_attended_transfer_to_an_agent_tells_their_desktop_with_the_transfer() {
    let mut h = harness();
    login(&mut h, 3, "200");
    // A trunk caller talks to 101, which flashes, calls 103 (agent 200) and, once
    // 103 answered, hangs up.
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    h.ev(1, Event::OffHook);
    h.ev(1, Event::HookFlash);
    h.dial(1, "103");
    let consult = agent_calls(&h.drain());
    assert_eq!(consult.len(), 1, "{consult:?}");
    assert_eq!(consult[0].caller_number, "101");
    h.ev(3, Event::OffHook);
    h.drain();
    h.ev(1, Event::OnHook);
    let out = h.drain();
    let first = cdrs(&out)
        .into_iter()
        .find(|c| c.caller == "+4930123")
        .expect("the transferred call's CDR");
    let events = agent_calls(&out);
    // The consultation ended for agent 200, then the new call is theirs, answered.
    let answered: Vec<_> = events
        .iter()
        .filter(|e| e.kind == AgentCallKind::Answered)
        .collect();
    assert_eq!(answered.len(), 1, "{events:?}");
    let e = answered[0];
    assert_eq!(
        (
            e.agent.as_str(),
            e.caller_number.as_str(),
            e.extension.as_deref()
        ),
        ("200", "+4930123", Some("103"))
    );
    let hop = e.transferred_from.as_ref().expect("transfer context");
    assert_eq!(
        (hop.call_id.as_str(), hop.transferred_by.as_str()),
        (first.call_id.as_str(), "101")
    );
}
