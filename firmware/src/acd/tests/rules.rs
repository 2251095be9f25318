//! The queue rules: penalties, wrap-up, timeouts, overflow, VIPs, announcements,
//! agent states and refused inputs.

use super::*;

fn overflows(actions: &[Action]) -> Vec<(u64, OverflowTarget, OverflowReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Overflow {
                call,
                target,
                reason,
            } => Some((call.0, target.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<(u64, AgentId, StopReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StopRinging {
                call,
                agent,
                reason,
                ..
            } => Some((call.0, agent.clone(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn higher_penalty_rings_only_when_no_lower_penalty_agent_is_free() {
    let mut sim = Sim::new(
        vec![queue(
            "q",
            1,
            Strategy::LongestIdle,
            &[(0, 5), (1, 0), (2, 0)],
        )],
        agents(3),
    );
    sim.login(0);
    sim.advance(1);
    sim.login(1);
    sim.login(2);
    // Agent 0 is idle longest but in the higher tier.
    assert_eq!(rung(&sim.arrive(1, "q", "1")), agent(1));
    sim.answer(1, 1);
    assert_eq!(rung(&sim.arrive(2, "q", "1")), agent(2));
    sim.answer(2, 2);
    // Tier 0 busy: now tier 5.
    assert_eq!(rung(&sim.arrive(3, "q", "1")), agent(0));
}

#[test]
fn ring_all_rings_only_the_lowest_free_tier() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RingAll, &[(0, 1), (1, 1), (2, 2)])],
        agents(3),
    );
    for a in 0..3 {
        sim.login(a);
    }
    let mut r: Vec<_> = rings(&sim.arrive(1, "q", "1"))
        .into_iter()
        .map(|r| r.1)
        .collect();
    r.sort();
    assert_eq!(r, vec![agent(0), agent(1)]);
}

#[test]
fn wrap_up_blocks_offers_until_it_ends_or_the_agent_is_done() {
    let mut q = queue("q", 1, Strategy::LongestIdle, &[(0, 0)]);
    q.wrap_up = Duration::from_secs(20);
    let mut sim = Sim::new(vec![q], agents(1));
    sim.login(0);
    sim.arrive(1, "q", "1");
    sim.answer(1, 0);
    sim.advance(60_000);
    sim.end(1);
    assert_eq!(sim.state(0), AgentState::WrapUp);
    assert!(rings(&sim.arrive(2, "q", "1")).is_empty());
    assert!(rings(&sim.advance(19_999)).is_empty());
    assert_eq!(rung(&sim.advance(1)), agent(0));
    sim.answer(2, 0);
    sim.end(2);
    assert!(rings(&sim.arrive(3, "q", "1")).is_empty());
    assert_eq!(
        rung(&sim.input(Input::WrapUpDone { agent: agent(0) })),
        agent(0)
    );
}

#[test]
fn ring_timeout_moves_on_to_the_next_agent() {
    let mut q = queue("q", 1, Strategy::RoundRobin, &[(0, 0), (1, 0)]);
    q.ring_timeout = Duration::from_secs(10);
    let mut sim = Sim::new(vec![q], agents(2));
    sim.login(0);
    sim.login(1);
    assert_eq!(rung(&sim.arrive(1, "q", "1")), agent(0));
    assert!(sim.advance(9_999).is_empty());
    let actions = sim.advance(1);
    assert_eq!(stops(&actions), vec![(1, agent(0), StopReason::NoAnswer)]);
    assert_eq!(rung(&actions), agent(1));
    // Agent 1 rejects: everyone was tried, so a new round starts after the retry
    // delay, with agent 0 again.
    let actions = sim.input(Input::OfferRejected {
        call: CallId(1),
        agent: agent(1),
    });
    assert!(rings(&actions).is_empty());
    assert!(rings(&sim.advance(RETRY_DELAY.as_millis() as u64 - 1)).is_empty());
    assert_eq!(rung(&sim.advance(1)), agent(0));
}

#[test]
fn a_phone_that_refuses_every_offer_is_not_offered_in_a_loop() {
    let q = queue("q", 1, Strategy::RingAll, &[(0, 0)]);
    let mut sim = Sim::new(vec![q], agents(1));
    sim.login(0);
    assert_eq!(rung(&sim.arrive(1, "q", "1")), agent(0));
    for round in 0..3 {
        let actions = sim.input(Input::OfferRejected {
            call: CallId(1),
            agent: agent(0),
        });
        assert!(rings(&actions).is_empty(), "round {round}");
        assert_eq!(rung(&sim.advance(5_000)), agent(0), "round {round}");
    }
}

#[test]
fn a_single_agent_that_does_not_answer_is_rung_again() {
    let mut q = queue("q", 1, Strategy::LongestIdle, &[(0, 0)]);
    q.ring_timeout = Duration::from_secs(5);
    let mut sim = Sim::new(vec![q], agents(1));
    sim.login(0);
    sim.arrive(1, "q", "1");
    for _ in 0..3 {
        // 5 s ring timeout, then the retry delay.
        let actions = sim.advance(10_000);
        assert_eq!(stops(&actions).len(), 1);
        assert_eq!(rung(&actions), agent(0));
    }
}

#[test]
fn abandon_while_ringing_stops_the_ringing_and_frees_the_agent() {
    let members: Vec<(usize, u32)> = (0..2).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(vec![queue("q", 1, Strategy::RingAll, &members)], agents(2));
    sim.login(0);
    sim.login(1);
    sim.arrive(1, "q", "1");
    let actions = sim.input(Input::CallerAbandoned { call: CallId(1) });
    let mut s = stops(&actions);
    s.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        s,
        vec![
            (1, agent(0), StopReason::Abandoned),
            (1, agent(1), StopReason::Abandoned)
        ]
    );
    assert_eq!(sim.state(0), AgentState::Available);
    assert_eq!(sim.acd.call_status(CallId(1)), None);
    assert_eq!(sim.acd.timeout(sim.now), None, "no timer left for the call");
}

#[test]
fn max_wait_overflows_to_the_configured_target_and_stops_ringing() {
    let mut q = queue("q", 1, Strategy::LongestIdle, &[(0, 0)]);
    q.max_wait = Some(Duration::from_secs(60));
    q.ring_timeout = Duration::from_secs(60);
    q.on_max_wait = OverflowTarget::Voicemail("7001".parse().expect("ext"));
    let mut sim = Sim::new(vec![q], agents(1));
    sim.arrive(1, "q", "1");
    sim.advance(30_000);
    sim.login(0); // rings from 30 s, ring timeout would be at 90 s
    assert!(overflows(&sim.advance(29_999)).is_empty());
    let actions = sim.advance(1);
    assert_eq!(
        overflows(&actions),
        vec![(
            1,
            OverflowTarget::Voicemail("7001".parse().expect("ext")),
            OverflowReason::MaxWait
        )]
    );
    assert_eq!(stops(&actions), vec![(1, agent(0), StopReason::Overflowed)]);
    assert_eq!(sim.state(0), AgentState::Available);
    assert_eq!(sim.acd.call_status(CallId(1)), None);
}

#[test]
fn max_length_overflows_the_next_caller() {
    let mut q = queue("q", 1, Strategy::LongestIdle, &[(0, 0)]);
    q.max_len = Some(2);
    q.on_full = OverflowTarget::Number("+4930123456".parse().expect("number"));
    let mut sim = Sim::new(vec![q], agents(1));
    assert!(overflows(&sim.arrive(1, "q", "1")).is_empty());
    assert!(overflows(&sim.arrive(2, "q", "2")).is_empty());
    let actions = sim.arrive(3, "q", "3");
    assert_eq!(
        overflows(&actions),
        vec![(
            3,
            OverflowTarget::Number("+4930123456".parse().expect("number")),
            OverflowReason::QueueFull
        )]
    );
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::StartMusicOnHold { .. })));
    // One leaves: room again.
    sim.input(Input::CallerAbandoned { call: CallId(1) });
    assert!(overflows(&sim.arrive(4, "q", "4")).is_empty());
    assert_eq!(sim.acd.waiting(&qname("q")), vec![CallId(2), CallId(4)]);
}

#[test]
fn no_agents_logged_in_overflows_when_configured() {
    let mut a = queue("a", 1, Strategy::RoundRobin, &[(0, 0)]);
    a.on_no_agents = Some(OverflowTarget::Queue(qname("b")));
    let b = queue("b", 2, Strategy::RoundRobin, &[(1, 0)]);
    let mut sim = Sim::new(vec![a, b], agents(2));
    // Nobody in a: the caller goes to b (and waits there).
    let actions = sim.arrive(1, "a", "1");
    assert_eq!(
        overflows(&actions),
        vec![(
            1,
            OverflowTarget::Queue(qname("b")),
            OverflowReason::NoAgents
        )]
    );
    assert_eq!(sim.acd.waiting(&qname("b")), vec![CallId(1)]);
    // With agent 0 logged in (paused counts as logged in) callers wait in a ...
    sim.login(0);
    sim.input(Input::AgentPause {
        agent: agent(0),
        reason: None,
    });
    assert!(overflows(&sim.arrive(2, "a", "2")).is_empty());
    // ... until the last agent logs out.
    let actions = sim.input(Input::AgentLogout { agent: agent(0) });
    assert_eq!(
        overflows(&actions),
        vec![(
            2,
            OverflowTarget::Queue(qname("b")),
            OverflowReason::NoAgents
        )]
    );
    // b's agent takes the first caller.
    assert_eq!(rings(&sim.login(1)), vec![(1, agent(1))]);
}

#[test]
fn overflow_between_queues_cannot_loop() {
    let mut a = queue("a", 1, Strategy::RoundRobin, &[]);
    a.max_len = Some(1);
    a.on_full = OverflowTarget::Queue(qname("b"));
    let mut b = queue("b", 2, Strategy::RoundRobin, &[]);
    b.max_len = Some(1);
    b.on_full = OverflowTarget::Queue(qname("a"));
    let mut sim = Sim::new(vec![a, b], agents(0));
    sim.arrive(1, "a", "1");
    sim.arrive(2, "b", "2");
    let actions = sim.arrive(3, "a", "3");
    assert_eq!(
        overflows(&actions),
        vec![
            (
                3,
                OverflowTarget::Queue(qname("b")),
                OverflowReason::QueueFull
            ),
            (3, OverflowTarget::Busy, OverflowReason::QueueFull)
        ]
    );
    assert_eq!(sim.acd.call_status(CallId(3)), None);
}

#[test]
fn vip_callers_jump_ahead_and_stay_fifo_among_themselves() {
    let mut q = queue("q", 1, Strategy::RoundRobin, &[(0, 0)]);
    q.vip = vec![
        "+4930*".parse().expect("vip"),
        "5551234".parse().expect("vip"),
    ];
    let mut sim = Sim::new(vec![q], agents(1));
    sim.arrive(1, "q", "5550000");
    sim.advance(1);
    sim.arrive(2, "q", "+4930111");
    sim.advance(1);
    sim.arrive(3, "q", "5550001");
    sim.advance(1);
    sim.arrive(4, "q", "5551234");
    sim.advance(1);
    sim.arrive(5, "q", "55512345"); // not an exact match
    assert_eq!(
        sim.acd.waiting(&qname("q")),
        [2, 4, 1, 3, 5].map(CallId).to_vec()
    );
    let mut served = Vec::new();
    sim.login(0);
    for _ in 0..5 {
        let call = match sim.acd.agent(&agent(0)).expect("agent").0 {
            AgentState::Ringing(c) => *c,
            other => panic!("agent 0 is {other:?}"),
        };
        served.push(call.0);
        sim.answer(call.0, 0);
        sim.end(call.0);
    }
    assert_eq!(served, vec![2, 4, 1, 3, 5]);
}

#[test]
fn announcements_give_position_and_expected_wait_from_recent_handle_times() {
    let mut q = queue("q", 1, Strategy::RoundRobin, &[(0, 0), (1, 0)]);
    q.announce_every = Some(Duration::from_secs(30));
    q.wrap_up = Duration::from_secs(10);
    q.music_on_hold = MusicOnHold::Prompt("jazz".to_owned());
    let mut sim = Sim::new(vec![q], agents(2));
    sim.login(0);
    sim.login(1);
    // Two calls of 110 s talk (+10 s wrap-up = 120 s handle time).
    for call in [1, 2] {
        sim.arrive(call, "q", "1");
    }
    sim.answer(1, 0);
    sim.answer(2, 1);
    sim.advance(110_000);
    sim.end(1);
    sim.end(2);
    // Three callers wait; agents pause so nobody is served.
    sim.input(Input::AgentPause {
        agent: agent(0),
        reason: None,
    });
    sim.input(Input::AgentPause {
        agent: agent(1),
        reason: None,
    });
    let actions = sim.arrive(3, "q", "1");
    assert!(actions.contains(&Action::StartMusicOnHold {
        call: CallId(3),
        music: MusicOnHold::Prompt("jazz".to_owned())
    }));
    sim.advance(5_000);
    sim.arrive(4, "q", "1");
    // Nobody staffed (both paused): expected wait counts one agent.
    let actions = sim.advance(25_000);
    assert_eq!(
        actions,
        vec![Action::Announce {
            call: CallId(3),
            position: 1,
            expected_wait: Some(Duration::from_secs(120))
        }]
    );
    let actions = sim.advance(5_000);
    assert_eq!(
        actions,
        vec![Action::Announce {
            call: CallId(4),
            position: 2,
            expected_wait: Some(Duration::from_secs(240))
        }]
    );
    // Agent 1 comes back and takes call 3; call 4 is now first.
    assert_eq!(
        rung(&sim.input(Input::AgentUnpause { agent: agent(1) })),
        agent(1)
    );
    sim.answer(3, 1);
    // No more announcements for the answered call (its next was due at 170 s).
    assert!(sim.advance(29_999).is_empty());
    assert_eq!(
        sim.advance(1),
        vec![Action::Announce {
            call: CallId(4),
            position: 1,
            expected_wait: Some(Duration::from_secs(120))
        }]
    );
}

#[test]
fn pause_during_a_call_takes_effect_after_wrap_up_and_unpause_cancels_it() {
    let mut q = queue("q", 1, Strategy::RoundRobin, &[(0, 0)]);
    q.wrap_up = Duration::from_secs(5);
    let mut sim = Sim::new(vec![q], agents(1));
    sim.login(0);
    sim.arrive(1, "q", "1");
    sim.answer(1, 0);
    let reason: PauseReason = "12".parse().expect("reason");
    sim.input(Input::AgentPause {
        agent: agent(0),
        reason: Some(reason.clone()),
    });
    assert_eq!(sim.state(0), AgentState::OnCall(CallId(1)));
    sim.end(1);
    assert_eq!(sim.state(0), AgentState::WrapUp);
    sim.advance(5000);
    assert_eq!(sim.state(0), AgentState::Paused(Some(reason)));
    assert!(rings(&sim.arrive(2, "q", "1")).is_empty());
    assert_eq!(
        rung(&sim.input(Input::AgentUnpause { agent: agent(0) })),
        agent(0)
    );
    // A pending pause cancelled by unpause.
    sim.answer(2, 0);
    sim.input(Input::AgentPause {
        agent: agent(0),
        reason: None,
    });
    sim.input(Input::AgentUnpause { agent: agent(0) });
    sim.end(2);
    sim.advance(5000);
    assert_eq!(sim.state(0), AgentState::Available);
}

#[test]
fn pausing_or_logging_out_while_ringing_sends_the_call_on() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0), (1, 0)])],
        agents(2),
    );
    sim.login(0);
    sim.login(1);
    assert_eq!(rung(&sim.arrive(1, "q", "1")), agent(0));
    let actions = sim.input(Input::AgentPause {
        agent: agent(0),
        reason: None,
    });
    assert_eq!(stops(&actions), vec![(1, agent(0), StopReason::AgentLeft)]);
    assert_eq!(rung(&actions), agent(1));
    let actions = sim.input(Input::AgentLogout { agent: agent(1) });
    assert_eq!(stops(&actions), vec![(1, agent(1), StopReason::AgentLeft)]);
    assert!(rings(&actions).is_empty());
    assert_eq!(sim.acd.agent(&agent(1)).expect("agent").2, None);
}

#[test]
fn agent_state_changes_carry_time_and_extension_for_the_history() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0)])],
        agents(1),
    );
    sim.advance(1234);
    let actions = sim.login(0);
    assert_eq!(
        actions,
        vec![Action::AgentStateChanged {
            agent: agent(0),
            state: AgentState::Available,
            extension: Some(ext(0)),
            at: sim.t0 + Duration::from_millis(1234),
        }]
    );
    let actions = sim.input(Input::AgentLogout { agent: agent(0) });
    assert_eq!(
        actions,
        vec![Action::AgentStateChanged {
            agent: agent(0),
            state: AgentState::LoggedOut,
            extension: Some(ext(0)),
            at: sim.now,
        }]
    );
}

#[test]
fn refused_inputs_say_why_and_change_nothing() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0), (1, 0)])],
        agents(3),
    );
    sim.login(0);
    sim.arrive(1, "q", "1");
    let before = sim.acd.clone();
    let cases = [
        (
            Input::AgentLogin {
                agent: agent(1),
                extension: ext(0),
                from: LoginFrom::Phone,
            },
            InputError::ExtensionTaken {
                extension: ext(0),
                holder: agent(0),
            },
        ),
        (
            Input::AgentLogin {
                agent: agent(0),
                extension: ext(5),
                from: LoginFrom::Phone,
            },
            InputError::AlreadyLoggedIn {
                agent: agent(0),
                extension: ext(0),
            },
        ),
        (
            Input::CallerArrived {
                call: CallId(1),
                queue: qname("q"),
                caller: "1".to_owned(),
                skill: None,
            },
            InputError::DuplicateCall(CallId(1)),
        ),
        (
            Input::CallerArrived {
                call: CallId(2),
                queue: qname("nope"),
                caller: "1".to_owned(),
                skill: None,
            },
            InputError::UnknownQueue(qname("nope")),
        ),
        (
            Input::OfferAnswered {
                call: CallId(1),
                agent: agent(1),
            },
            InputError::NotOffered {
                call: CallId(1),
                agent: agent(1),
            },
        ),
        (
            Input::CallEnded { call: CallId(1) },
            InputError::NotConnected(CallId(1)),
        ),
        (
            Input::CallerAbandoned { call: CallId(9) },
            InputError::UnknownCall(CallId(9)),
        ),
        (
            Input::AgentLogout {
                agent: "999".parse().expect("id"),
            },
            InputError::UnknownAgent("999".parse().expect("id")),
        ),
        (
            Input::AgentPause {
                agent: agent(2),
                reason: None,
            },
            InputError::NotLoggedIn(agent(2)),
        ),
        (
            Input::AgentUnpause { agent: agent(0) },
            InputError::NotPaused(agent(0)),
        ),
        (
            Input::WrapUpDone { agent: agent(0) },
            InputError::NotInWrapUp(agent(0)),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(sim.acd.handle(sim.now, input), Err(want.clone()));
        assert!(!want.to_string().is_empty());
        assert_eq!(sim.acd, before, "{want} changed the core");
        assert_eq!(sim.acd.poll_action(), None);
    }
    sim.answer(1, 0);
    assert_eq!(
        sim.acd
            .handle(sim.now, Input::AgentLogout { agent: agent(0) }),
        Err(InputError::AgentOnCall {
            agent: agent(0),
            call: CallId(1)
        })
    );
    assert_eq!(
        sim.acd
            .handle(sim.now, Input::CallerAbandoned { call: CallId(1) }),
        Err(InputError::AlreadyConnected(CallId(1)))
    );
}

#[test]
fn config_errors_name_the_queue_and_field() {
    let bad_member = queue("q", 1, Strategy::RoundRobin, &[(5, 0)]);
    assert_eq!(
        AcdConfig::new(vec![bad_member], agents(1))
            .unwrap_err()
            .to_string(),
        "queue \"q\": members: agent 105 is not a configured agent"
    );
    let mut self_overflow = queue("q", 1, Strategy::RoundRobin, &[]);
    self_overflow.on_full = OverflowTarget::Queue(qname("q"));
    assert!(AcdConfig::new(vec![self_overflow], agents(0))
        .unwrap_err()
        .to_string()
        .contains("on_full: overflow to the queue itself"));
    let mut missing = queue("q", 1, Strategy::RoundRobin, &[]);
    missing.on_max_wait = OverflowTarget::Queue(qname("gone"));
    assert!(AcdConfig::new(vec![missing], agents(0))
        .unwrap_err()
        .to_string()
        .contains("no queue named gone"));
    let mut zero = queue("q", 1, Strategy::RoundRobin, &[]);
    zero.ring_timeout = Duration::ZERO;
    assert!(AcdConfig::new(vec![zero], agents(0)).is_err());
    let same_number = vec![
        queue("a", 1, Strategy::RoundRobin, &[]),
        queue("b", 1, Strategy::RoundRobin, &[]),
    ];
    assert!(AcdConfig::new(same_number, agents(0))
        .unwrap_err()
        .to_string()
        .contains("number 7001 is used by another queue"));
    let twice = queue("q", 1, Strategy::RoundRobin, &[(0, 0), (0, 1)]);
    assert!(AcdConfig::new(vec![twice], agents(1)).is_err());
    let penalty = queue("q", 1, Strategy::RoundRobin, &[(0, 101)]);
    assert!(AcdConfig::new(vec![penalty], agents(1)).is_err());
    for bad in ["", "Sales", "a b", &"x".repeat(33)] {
        assert!(bad.parse::<QueueName>().is_err(), "{bad:?}");
    }
    for bad in ["1", "12345678901", "12a"] {
        assert!(bad.parse::<AgentId>().is_err(), "{bad:?}");
    }
    for bad in ["", "*", "+", "12*3", "abc"] {
        assert!(bad.parse::<VipPattern>().is_err(), "{bad:?}");
    }
}

#[test]
fn vip_rules_match_a_number_in_all_its_forms_with_the_sites_plan() {
    let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
    let vip = |s: &str| s.parse::<VipPattern>().expect("vip").with_plan(&de);
    let exact = vip("+4930123456");
    for form in ["+4930123456", "030123456", "004930123456", "030 123 456"] {
        assert!(exact.matches(form), "{form}");
    }
    assert!(!exact.matches("030123457"));
    let national = vip("0170*");
    assert!(national.matches("+491701234567"));
    assert!(national.matches("01701234567"));
    assert!(!national.matches("+441701234567"), "another country");
    // A bare international prefix cannot be placed: as written only.
    let any_abroad = vip("00*");
    assert!(any_abroad.matches("0044201234"));
    assert!(!any_abroad.matches("+44201234"));
    // Without a plan: as written.
    let plain: VipPattern = "030*".parse().expect("vip");
    assert!(plain.matches("030123"));
    assert!(!plain.matches("+4930123"));
    assert!(SkillLevel::try_from(0).is_err());
    assert!(SkillLevel::try_from(11).is_err());
}
