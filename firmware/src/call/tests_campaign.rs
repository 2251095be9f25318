//! Progressive campaign calls (see `campaign.rs`) on a virtual clock, with the dial
//! plan of `tests_sip.rs` (101 FXS 1, 102 FXS 2 + SIP, 103 FXS 3, 210/211 SIP only)
//! and the call center of `tests_queue.rs` (agents 100 and 200, queue 7001).

use std::time::Duration;

use line_proto::{Command, Event};

use super::tests_queue::{agent, agent_states, harness, login};
use super::tests_sip::*;
use super::*;
use crate::acd::AgentState;
use crate::campaign::Outcome;
use crate::cdr::Disposition;

impl Harness {
    /// A campaign dial now; its outputs are collected like an event's.
    fn campaign(
        &mut self,
        attempt: i64,
        who: &str,
        number: &str,
    ) -> Result<String, CampaignDialError> {
        let r = self.cc.campaign_dial(
            self.now,
            CampaignDial {
                attempt,
                agent: agent(who),
                number: number.into(),
                caller_id: "4930555000".into(),
                ring_timeout: Duration::from_secs(20),
            },
        );
        self.collect();
        r
    }
}

fn outcomes(out: &[Output]) -> Vec<(i64, String, Outcome)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CampaignOutcome {
                attempt,
                call_id,
                outcome,
            } => Some((*attempt, call_id.clone(), *outcome)),
            _ => None,
        })
        .collect()
}

fn rings(out: &[Output], port: u8) -> bool {
    has_cmd(out, port, |c| matches!(c, Command::Ring(_)))
}

/// Agents 100 on 102 (FXS 2) and 200 on 103 (FXS 3), the trunk usable.
fn two_agents() -> Harness {
    let mut h = harness();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    login(&mut h, 2, "100");
    login(&mut h, 3, "200");
    h
}

#[test]
fn an_answered_lead_rings_the_reserved_agent_and_is_bridged_when_the_agent_answers() {
    let mut h = two_agents();
    let id = h.campaign(7, "100", "0301234").expect("dialled");
    let out = h.take();
    // The agent is reserved (on this call for the ACD) and the lead is dialled on
    // the trunk with the campaign's caller ID; the agent's phone does not ring yet.
    assert_eq!(
        agent_states(&out),
        vec![(
            agent("100"),
            AgentState::OnCall(crate::acd::CallId(
                id.rsplit('-')
                    .next()
                    .and_then(|k| k.parse().ok())
                    .expect("key")
            ))
        )]
    );
    let (lead, target, _) = only_dial(&out);
    assert_eq!(target, SipTarget::Trunk("0301234".into()));
    assert!(out.iter().any(|o| matches!(o,
        Output::SipDial { caller_number, .. } if caller_number == "4930555000")));
    assert!(!rings(&out, 2));
    // A queue caller meanwhile goes to the other agent, never to the reserved one.
    h.ev(1, Event::OffHook);
    h.dial(1, "7001");
    let out = h.take();
    assert!(rings(&out, 3) && !rings(&out, 2), "{out:?}");
    h.ev(1, Event::OnHook);
    h.take();
    h.advance(Duration::from_secs(3));
    h.take();
    // The lead answers: the agent's phone rings with the lead's number, the lead
    // hears ringback; no outcome yet.
    h.sip(SipInput::Ringing { leg: lead });
    h.advance(Duration::from_secs(4));
    h.sip(SipInput::Answered { leg: lead });
    let out = h.take();
    assert!(rings(&out, 2), "{out:?}");
    assert!(out.iter().any(|o| matches!(o,
        Output::Command { port: 2, command: Command::SendCallerId { caller_id, .. } }
            if caller_id.number.as_str() == "0301234")));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Play { end, .. } if *end == leg(lead))));
    assert!(outcomes(&out).is_empty());
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::AgentCall(e) if e.agent == agent("100"))),
        "the agent's desktop hears of the call: {out:?}"
    );
    // The agent answers: ringback stops, both are bridged, the attempt is answered.
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(
        out.contains(&Output::StopPlay { end: leg(lead) }),
        "{out:?}"
    );
    assert!(
        out.contains(&Output::Connect(leg(lead), port(2))),
        "{out:?}"
    );
    assert_eq!(outcomes(&out), vec![(7, id.clone(), Outcome::Answered)]);
    // The agent hangs up: the lead's leg ends, the CDR shows the agent's extension,
    // the agent is available again (no wrap-up).
    h.advance(Duration::from_secs(30));
    h.ev(2, Event::OnHook);
    let out = h.take();
    assert!(
        hangups(&out).contains(&(lead, EndReason::Normal)),
        "{out:?}"
    );
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.call_id, id);
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("0301234", "102")
    );
    assert_eq!(cdr.direction, Direction::Outbound);
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    assert!(outcomes(&out).is_empty(), "one outcome per attempt");
}

#[test]
fn busy_unanswered_and_failed_leads_end_the_attempt_with_that_outcome_and_free_the_agent() {
    for (reason, outcome, disposition) in [
        (Some(EndReason::Busy), Outcome::Busy, Disposition::Busy),
        (
            Some(EndReason::NoAnswer),
            Outcome::NoAnswer,
            Disposition::NoAnswer,
        ),
        (
            Some(EndReason::Unallocated),
            Outcome::Failed,
            Disposition::Unallocated,
        ),
        // The campaign's ring timeout (20 s) passes: the box cancels the leg.
        (None, Outcome::NoAnswer, Disposition::NoAnswer),
    ] {
        let mut h = two_agents();
        let id = h.campaign(3, "200", "0309999").expect("dialled");
        let (lead, _, _) = only_dial(&h.take());
        h.sip(SipInput::Ringing { leg: lead });
        match reason {
            Some(reason) => {
                h.advance(Duration::from_secs(5));
                h.sip(SipInput::Ended { leg: lead, reason });
            }
            None => {
                h.advance(Duration::from_secs(19));
                assert!(outcomes(&h.take()).is_empty());
                h.advance(Duration::from_secs(1));
            }
        }
        let out = h.take();
        assert_eq!(outcomes(&out), vec![(3, id.clone(), outcome)], "{reason:?}");
        if reason.is_none() {
            assert_eq!(hangups(&out), vec![(lead, EndReason::NoAnswer)]);
        }
        let cdr = &cdrs(&out)[0];
        assert_eq!(cdr.call_id, id);
        assert_eq!(cdr.disposition, disposition, "{reason:?}");
        assert_eq!(
            (cdr.caller.as_str(), cdr.callee.as_str()),
            ("4930555000", "0309999")
        );
        assert_eq!(
            agent_states(&out),
            vec![(agent("200"), AgentState::Available)]
        );
        assert!(!rings(&out, 3), "the agent's phone never rang");
    }
}

#[test]
fn a_lead_the_agent_does_not_take_is_hung_up_and_the_attempt_fails() {
    let mut h = two_agents();
    let id = h.campaign(9, "100", "0301234").expect("dialled");
    let (lead, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: lead });
    assert!(rings(&h.take(), 2));
    // The box's ring timeout (tests_sip: 30 s) passes without the agent answering.
    h.advance(Duration::from_secs(31));
    let out = h.take();
    assert_eq!(outcomes(&out), vec![(9, id.clone(), Outcome::Failed)]);
    assert!(out.contains(&Output::StopPlay { end: leg(lead) }));
    assert!(hangups(&out).iter().any(|(l, _)| *l == lead), "{out:?}");
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
}

#[test]
fn a_lead_hanging_up_while_the_agent_rings_fails_the_attempt() {
    let mut h = two_agents();
    let id = h.campaign(4, "100", "0301234").expect("dialled");
    let (lead, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: lead });
    h.take();
    h.advance(Duration::from_secs(2));
    h.sip(SipInput::Ended {
        leg: lead,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(outcomes(&out), vec![(4, id, Outcome::Failed)]);
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing), "{out:?}");
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
}

#[test]
fn a_dial_is_refused_without_a_free_agent_or_with_a_bad_number_and_changes_nothing() {
    let mut h = two_agents();
    // Not logged in, unknown, bad numbers: refused, nothing dialled.
    let mut h2 = harness();
    h2.cc.set_trunk_status(TrunkStatus::Usable);
    assert!(matches!(
        h2.campaign(1, "100", "0301234"),
        Err(CampaignDialError::AgentNotFree { .. })
    ));
    assert!(h2.take().is_empty());
    for bad in ["", "+", "+1", "03012x4", "0123456789012345"] {
        assert_eq!(
            h.campaign(1, "100", bad),
            Err(CampaignDialError::BadNumber(bad.into()))
        );
    }
    assert!(matches!(
        h.campaign(1, "999", "0301234"),
        Err(CampaignDialError::AgentNotFree { .. })
    ));
    assert!(h.take().is_empty());
    // A reserved agent is not free for a second dial; nor is one whose phone is
    // off-hook.
    h.campaign(1, "100", "0301234").expect("dialled");
    h.take();
    assert!(matches!(
        h.campaign(2, "100", "0305678"),
        Err(CampaignDialError::AgentNotFree { .. })
    ));
    h.ev(3, Event::OffHook);
    h.take();
    assert!(matches!(
        h.campaign(2, "200", "0305678"),
        Err(CampaignDialError::AgentNotFree { .. })
    ));
    assert!(dials(&h.take()).is_empty());
    // Without a call center there is nobody to reserve.
    let mut plain = Harness::new();
    assert_eq!(
        plain.campaign(1, "100", "0301234"),
        Err(CampaignDialError::NoCallCenter)
    );
}

#[test]
fn without_a_usable_trunk_the_lead_is_dialled_on_an_fxo_line_and_connected_on_reversal() {
    let mut h = two_agents();
    h.cc.set_trunk_status(TrunkStatus::Unusable);
    let id = h.campaign(5, "100", "0301234").expect("an attempt");
    let out = h.take();
    assert!(dials(&out).is_empty());
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(has_cmd(
        &out,
        6,
        |c| matches!(c, Command::FxoDial(d) if d.as_str() == "0301234")
    ));
    assert!(!rings(&out, 2));
    // The far end answers (polarity reversal): the agent rings, the lead hears
    // ringback on the line; the agent answers and they talk.
    h.advance(Duration::from_secs(6));
    h.ev(6, Event::PolarityReversal);
    let out = h.take();
    assert!(rings(&out, 2), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Play { end, .. } if *end == port(6))));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::StopPlay { end: port(6) }), "{out:?}");
    assert!(
        out.contains(&Output::Connect(port(2), port(6)))
            || out.contains(&Output::Connect(port(6), port(2))),
        "{out:?}"
    );
    assert_eq!(outcomes(&out), vec![(5, id.clone(), Outcome::Answered)]);
    // The far end hangs up (reversal again): the line is released, the agent free.
    h.advance(Duration::from_secs(20));
    h.ev(6, Event::PolarityReversal);
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease), "{out:?}");
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.call_id.as_str(), cdr.disposition),
        (id.as_str(), Disposition::Answered)
    );
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
}

#[test]
fn a_busy_or_congestion_tone_on_the_lead_line_ends_the_attempt_at_once() {
    use branchline_media::progress::ProgressTone;
    let mut h = two_agents();
    h.cc.set_trunk_status(TrunkStatus::Unusable);
    let id = h.campaign(5, "100", "0301234").expect("an attempt");
    let out = h.take();
    assert!(
        out.contains(&Output::DetectProgress { port: 6, on: true }),
        "the line is listened to while the lead rings: {out:?}"
    );
    // The exchange plays busy tone after 3 s: busy, the line released, the agent free.
    h.advance(Duration::from_secs(3));
    h.cc.progress_tone(h.now, 6, ProgressTone::Busy);
    h.collect();
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease), "{out:?}");
    assert!(out.contains(&Output::DetectProgress { port: 6, on: false }));
    assert_eq!(outcomes(&out), vec![(5, id.clone(), Outcome::Busy)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        (cdr.call_id.as_str(), cdr.disposition),
        (id.as_str(), Disposition::Busy)
    );
    assert_eq!(cdr.hangup_side, crate::cdr::HangupSide::Callee);
    assert_eq!(
        agent_states(&out),
        vec![(agent("100"), AgentState::Available)]
    );
    // A late tone report for the released line changes nothing.
    h.cc.progress_tone(h.now, 6, ProgressTone::Busy);
    h.collect();
    assert!(h.take().is_empty());

    // Congestion: failed (retried after the failed-call spacing), CDR congestion.
    let id = h.campaign(6, "100", "0305678").expect("an attempt");
    h.take();
    h.cc.progress_tone(h.now, 6, ProgressTone::Congestion);
    h.collect();
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease), "{out:?}");
    assert_eq!(outcomes(&out), vec![(6, id, Outcome::Failed)]);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Congestion);

    // Answered lines stop listening: a tone in the conversation is just audio.
    h.campaign(7, "100", "0309999").expect("an attempt");
    h.take();
    h.ev(6, Event::PolarityReversal);
    let out = h.take();
    assert!(
        out.contains(&Output::DetectProgress { port: 6, on: false }),
        "{out:?}"
    );
    h.cc.progress_tone(h.now, 6, ProgressTone::Busy);
    h.collect();
    assert!(outcomes(&h.take()).is_empty());
}

#[test]
fn a_line_without_answer_is_released_at_the_ring_timeout_and_trunk_congestion_falls_back() {
    // Trunk congestion: the lead is dialled on the FXO line instead.
    let mut h = two_agents();
    let id = h.campaign(8, "200", "0301234").expect("dialled");
    let (lead, _, _) = only_dial(&h.take());
    h.sip(SipInput::Ended {
        leg: lead,
        reason: EndReason::Congestion,
    });
    let out = h.take();
    assert!(outcomes(&out).is_empty(), "{out:?}");
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    // No reversal within the campaign's ring timeout (20 s from the fallback).
    h.advance(Duration::from_secs(19));
    assert!(outcomes(&h.take()).is_empty());
    h.advance(Duration::from_secs(1));
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease), "{out:?}");
    assert_eq!(outcomes(&out), vec![(8, id, Outcome::NoAnswer)]);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
    assert_eq!(
        agent_states(&out),
        vec![(agent("200"), AgentState::Available)]
    );
    // The line is free again for the next call.
    h.campaign(9, "200", "0305678").expect("dialled");
    let leg = only_dial(&h.take()).0;
    h.sip(SipInput::Ended {
        leg,
        reason: EndReason::Congestion,
    });
    assert!(has_cmd(&h.take(), 6, |c| *c == Command::FxoSeize));
}

#[test]
fn with_no_route_at_all_the_attempt_fails_at_once_and_the_agent_is_free() {
    let mut h = two_agents();
    h.cc.set_trunk_status(TrunkStatus::Unusable);
    // The only outside line is out of service.
    h.ev(6, Event::Fault(line_proto::FaultKind::OverCurrent));
    h.take();
    let id = h.campaign(5, "100", "0301234").expect("an attempt");
    let out = h.take();
    assert!(dials(&out).is_empty());
    assert!(!has_cmd(&out, 6, |c| *c == Command::FxoSeize));
    assert_eq!(outcomes(&out), vec![(5, id, Outcome::Failed)]);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Congestion);
    assert_eq!(
        agent_states(&out),
        vec![
            (agent("100"), AgentState::OnCall(agent_call(&out))),
            (agent("100"), AgentState::Available)
        ]
    );
}

fn agent_call(out: &[Output]) -> crate::acd::CallId {
    agent_states(out)
        .into_iter()
        .find_map(|(_, s)| match s {
            AgentState::OnCall(c) => Some(c),
            _ => None,
        })
        .expect("reserved")
}

#[test]
fn shutdown_cancels_a_ringing_lead_as_failed() {
    let mut h = two_agents();
    let id = h.campaign(6, "200", "0301234").expect("dialled");
    let (lead, _, _) = only_dial(&h.take());
    h.cc.shutdown(h.now);
    h.collect();
    let out = h.take();
    assert_eq!(outcomes(&out), vec![(6, id, Outcome::Failed)]);
    assert!(hangups(&out).iter().any(|(l, _)| *l == lead));
}

#[test]
fn a_plus_number_goes_out_in_the_sites_international_form() {
    let mut h = two_agents();
    h.campaign(2, "100", "+4930123456").expect("dialled");
    let (_, target, _) = only_dial(&h.take());
    // tests_sip's site is in the US: 011 and the number.
    assert_eq!(target, SipTarget::Trunk("0114930123456".into()));
}
