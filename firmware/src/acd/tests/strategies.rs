//! One test (or more) per strategy, including fairness over 1,000 simulated calls.

use super::*;

/// A deterministic pseudo-random sequence (no clock, no OS randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn within_one(counts: &[u64]) {
    let min = counts.iter().min().expect("agents");
    let max = counts.iter().max().expect("agents");
    assert!(max - min <= 1, "counts {counts:?} differ by more than one");
}

#[test]
fn round_robin_is_fair_and_remembers_its_place_over_1000_calls() {
    let members: Vec<(usize, u32)> = (0..7).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(
        vec![queue("sales", 1, Strategy::RoundRobin, &members)],
        agents(7),
    );
    for a in 0..7 {
        sim.login(a);
    }
    let mut counts = [0u64; 7];
    for call in 0..1000u64 {
        sim.advance(1000);
        let who = rung(&sim.arrive(call, "sales", "5550100"));
        let a = agent_index(&who);
        // Strict rotation: the place is kept from one call to the next.
        assert_eq!(a, (call % 7) as usize, "call {call}");
        counts[a] += 1;
        sim.advance(500);
        sim.answer(call, a);
        sim.advance(30_000);
        sim.end(call);
    }
    within_one(&counts);
}

#[test]
fn round_robin_skips_busy_agents_and_continues_after_the_last_one_rung() {
    let members: Vec<(usize, u32)> = (0..4).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &members)],
        agents(4),
    );
    for a in 0..4 {
        sim.login(a);
    }
    assert_eq!(rung(&sim.arrive(1, "q", "1")), agent(0));
    sim.answer(1, 0);
    assert_eq!(rung(&sim.arrive(2, "q", "2")), agent(1));
    sim.answer(2, 1);
    sim.end(1); // agent 0 free again, but the rotation continues with 2
    assert_eq!(rung(&sim.arrive(3, "q", "3")), agent(2));
    sim.answer(3, 2);
    assert_eq!(rung(&sim.arrive(4, "q", "4")), agent(3));
    sim.answer(4, 3);
    assert_eq!(rung(&sim.arrive(5, "q", "5")), agent(0));
}

#[test]
fn longest_idle_offers_in_idle_order_over_1000_calls() {
    let n = 5;
    let members: Vec<(usize, u32)> = (0..n).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::LongestIdle, &members)],
        agents(n),
    );
    // Idle since: when the agent logged in or their last call ended (test's own record).
    let mut idle_since = vec![0u64; n];
    for (a, since) in idle_since.iter_mut().enumerate() {
        sim.advance(10);
        *since = sim.ms();
        sim.login(a);
    }
    let mut rng = Lcg(7);
    let mut on_call: Vec<(u64, usize, u64)> = Vec::new(); // (call, agent, ends at ms)
    let mut counts = vec![0u64; n];
    let mut next_call = 0u64;
    while next_call < 1000 {
        // End the calls due before the next arrival.
        let arrival = sim.ms() + 1 + rng.next(20_000);
        on_call.sort_by_key(|c| c.2);
        while on_call.first().is_some_and(|c| c.2 <= arrival) {
            let (call, a, at) = on_call.remove(0);
            sim.advance_to(at);
            sim.end(call);
            idle_since[a] = at;
        }
        sim.advance_to(arrival);
        let free: Vec<usize> = (0..n)
            .filter(|&a| sim.state(a) == AgentState::Available)
            .collect();
        let actions = sim.arrive(next_call, "q", "1");
        match rings(&actions).as_slice() {
            [] => {
                assert!(free.is_empty(), "free agents {free:?} but no offer");
                // Nobody free: wait for the first call to end; it then rings that agent.
                on_call.sort_by_key(|c| c.2);
                let (call, a, at) = on_call.remove(0);
                sim.advance_to(at);
                let actions = sim.end(call);
                idle_since[a] = at;
                assert_eq!(rung(&actions), agent(a));
                sim.answer(next_call, a);
                counts[a] += 1;
                on_call.push((next_call, a, sim.ms() + 1 + rng.next(60_000)));
            }
            [(_, who)] => {
                let a = agent_index(who);
                let oldest = free
                    .iter()
                    .copied()
                    .min_by_key(|&f| (idle_since[f], f))
                    .expect("someone free");
                assert_eq!(a, oldest, "call {next_call}: idle since {idle_since:?}");
                sim.answer(next_call, a);
                counts[a] += 1;
                on_call.push((next_call, a, sim.ms() + 1 + rng.next(60_000)));
            }
            more => panic!("more than one ring: {more:?}"),
        }
        next_call += 1;
    }
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
}

#[test]
fn longest_idle_with_calls_one_at_a_time_rotates_evenly() {
    let members: Vec<(usize, u32)> = (0..6).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::LongestIdle, &members)],
        agents(6),
    );
    for a in (0..6).rev() {
        sim.advance(1);
        sim.login(a);
    }
    let mut counts = [0u64; 6];
    for call in 0..1000u64 {
        let a = agent_index(&rung(&sim.arrive(call, "q", "1")));
        if call < 6 {
            assert_eq!(a, 5 - call as usize, "login order is idle order");
        }
        counts[a] += 1;
        sim.answer(call, a);
        sim.advance(5000);
        sim.end(call);
        sim.advance(10);
    }
    within_one(&counts);
}

#[test]
fn fewest_calls_goes_to_the_agent_with_fewest_answered() {
    let members: Vec<(usize, u32)> = (0..3).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::FewestCalls, &members)],
        agents(3),
    );
    sim.login(0);
    for call in 0..4 {
        assert_eq!(rung(&sim.arrive(call, "q", "1")), agent(0));
        sim.answer(call, 0);
        sim.end(call);
    }
    sim.login(1);
    sim.advance(1);
    sim.login(2);
    // Agents 1 and 2 have none: 1 is idle longer.
    assert_eq!(rung(&sim.arrive(10, "q", "1")), agent(1));
    sim.answer(10, 1);
    sim.end(10);
    assert_eq!(rung(&sim.arrive(11, "q", "1")), agent(2));
    sim.answer(11, 2);
    sim.end(11);
    // 1 and 2 have one each, 0 has four.
    let next = agent_index(&rung(&sim.arrive(12, "q", "1")));
    assert_ne!(next, 0);
}

#[test]
fn ring_all_rings_every_free_agent_and_the_first_answer_wins() {
    let members: Vec<(usize, u32)> = (0..3).map(|a| (a, 0)).collect();
    let mut sim = Sim::new(vec![queue("q", 1, Strategy::RingAll, &members)], agents(3));
    for a in 0..3 {
        sim.login(a);
    }
    let actions = sim.arrive(1, "q", "1");
    let mut rung: Vec<_> = rings(&actions).into_iter().map(|r| r.1).collect();
    rung.sort();
    assert_eq!(rung, vec![agent(0), agent(1), agent(2)]);
    let actions = sim.answer(1, 1);
    let stopped: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StopRinging { agent, reason, .. } => Some((agent.clone(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.len(), 2);
    assert!(stopped
        .iter()
        .all(|(a, r)| *a != agent(1) && *r == StopReason::AnsweredElsewhere));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Connect { agent: x, .. } if *x == agent(1))));
    assert_eq!(sim.state(0), AgentState::Available);
    assert_eq!(sim.state(1), AgentState::OnCall(CallId(1)));
}

#[test]
fn ring_all_keeps_to_the_ringing_tier_until_that_ring_fails() {
    // Found by the model test: every later dispatch (any input, or a timer pass at
    // the same instant) used to widen the ring to the next worse penalty.
    let members = [(0, 0), (1, 1), (2, 2)];
    let mut sim = Sim::new(vec![queue("q", 1, Strategy::RingAll, &members)], agents(3));
    for a in 0..3 {
        sim.login(a);
    }
    let actions = sim.arrive(1, "q", "1");
    assert_eq!(
        rings(&actions).into_iter().map(|r| r.1).collect::<Vec<_>>(),
        [agent(0)]
    );
    // A refused input and a timer pass at the same instant ring nobody else.
    assert!(sim
        .acd
        .handle(sim.now, Input::WrapUpDone { agent: agent(1) })
        .is_err());
    sim.acd.handle_timeout(sim.now);
    assert_eq!(sim.acd.poll_action(), None);
    assert_eq!(sim.state(1), AgentState::Available);
    assert_eq!(sim.state(2), AgentState::Available);
    // The penalty-0 ring times out (15 s): the next tier rings, one tier at a time.
    let actions = sim.advance(15_000);
    assert_eq!(
        rings(&actions).into_iter().map(|r| r.1).collect::<Vec<_>>(),
        [agent(1)]
    );
    assert_eq!(sim.state(2), AgentState::Available);
}

fn skilled(n: usize, skills: &[(usize, &str, i64)]) -> Vec<AgentConfig> {
    let mut all = agents(n);
    for &(a, skill, level) in skills {
        all[a].skills.insert(
            skill.parse().expect("skill"),
            SkillLevel::try_from(level).expect("level"),
        );
    }
    all
}

fn arrive_skilled(sim: &mut Sim, call: u64, skill: &str, min: i64) -> Vec<Action> {
    sim.input(Input::CallerArrived {
        call: CallId(call),
        queue: qname("q"),
        caller: "1".to_owned(),
        skill: Some(SkillRequirement {
            skill: skill.parse().expect("skill"),
            min_level: SkillLevel::try_from(min).expect("level"),
        }),
    })
}

#[test]
fn skill_based_prefers_the_best_level_and_falls_back_exactly_at_the_configured_wait() {
    let members: Vec<(usize, u32)> = (0..3).map(|a| (a, 0)).collect();
    let mut q = queue("q", 1, Strategy::SkillBased, &members);
    q.skill_fallback = Some(Duration::from_secs(30));
    let mut sim = Sim::new(
        vec![q],
        skilled(3, &[(0, "french", 3), (1, "french", 8), (2, "german", 9)]),
    );
    for a in 0..3 {
        sim.login(a);
    }
    // Best level first.
    assert_eq!(rung(&arrive_skilled(&mut sim, 1, "french", 2)), agent(1));
    sim.answer(1, 1);
    assert_eq!(rung(&arrive_skilled(&mut sim, 2, "french", 2)), agent(0));
    sim.answer(2, 0);
    // Only agent 2 (no French) is free: the call waits ...
    sim.advance(1000);
    let arrived = sim.ms();
    assert!(rings(&arrive_skilled(&mut sim, 3, "french", 5)).is_empty());
    assert!(rings(&sim.advance_to(arrived + 29_999)).is_empty());
    // ... and at exactly 30 s goes to anyone.
    let actions = sim.advance_to(arrived + 30_000);
    assert_eq!(rung(&actions), agent(2));
}

#[test]
fn skill_below_the_minimum_level_waits_for_a_qualified_agent() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::SkillBased, &[(0, 0), (1, 0)])],
        skilled(2, &[(0, "billing", 2), (1, "billing", 6)]),
    );
    sim.login(0);
    // Agent 0 is below level 5 and there is no fallback: nothing rings.
    assert!(rings(&arrive_skilled(&mut sim, 1, "billing", 5)).is_empty());
    assert!(rings(&sim.advance(3_600_000)).is_empty());
    assert_eq!(rung(&sim.login(1)), agent(1));
}

#[test]
fn skill_based_lets_a_later_call_take_an_agent_the_first_cannot_use() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::SkillBased, &[(0, 0)])],
        skilled(1, &[(0, "german", 5)]),
    );
    assert!(rings(&arrive_skilled(&mut sim, 1, "french", 1)).is_empty());
    sim.advance(10);
    assert!(rings(&arrive_skilled(&mut sim, 2, "german", 1)).is_empty());
    let actions = sim.login(0);
    assert_eq!(rings(&actions), vec![(2, agent(0))]);
}
