//! A new configuration taken while calls go on ([`Acd::reconfigure`]).

use super::*;

impl Sim {
    fn reconfigure(&mut self, queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Vec<Action> {
        let config = AcdConfig::new(queues, agents).expect("valid config");
        self.acd.reconfigure(&config, self.now);
        self.drain_all()
    }

    fn drain_all(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.acd.poll_action()).collect()
    }
}

fn states(actions: &[Action]) -> Vec<(AgentId, AgentState)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AgentStateChanged { agent, state, .. } => Some((agent.clone(), state.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn agents_keep_their_state_new_ones_start_logged_out_gone_ones_are_logged_out() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0), (1, 0)])],
        agents(2),
    );
    sim.login(0);
    sim.login(1);
    sim.arrive(1, "q", "555");
    sim.answer(1, 0);
    // Agent 1 leaves the configuration, agent 2 joins; agent 0 is on a call.
    let mut cfg = agents(3);
    cfg.remove(1);
    cfg[0].skills.insert(
        "french".parse().expect("skill"),
        SkillLevel::try_from(7).expect("level"),
    );
    let actions = sim.reconfigure(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0), (2, 0)])],
        cfg,
    );
    assert_eq!(states(&actions), vec![(agent(1), AgentState::LoggedOut)]);
    assert_eq!(sim.state(0), AgentState::OnCall(CallId(1)));
    assert_eq!(sim.state(2), AgentState::LoggedOut);
    assert!(sim.acd.agent(&agent(1)).is_none());
    assert_eq!(
        sim.acd.handle(
            sim.now,
            Input::AgentLogin {
                agent: agent(1),
                extension: ext(1),
                from: LoginFrom::Phone,
            }
        ),
        Err(InputError::UnknownAgent(agent(1)))
    );
    // The call goes on and ends with its wrap-up as before; agent 2 can log in.
    sim.end(1);
    assert_eq!(sim.state(0), AgentState::Available);
    sim.login(2);
    assert_eq!(rung(&sim.arrive(2, "q", "555")), agent(2));
    // Configured again, agent 1 comes back logged out.
    sim.reconfigure(
        vec![queue(
            "q",
            1,
            Strategy::RoundRobin,
            &[(0, 0), (1, 0), (2, 0)],
        )],
        agents(3),
    );
    assert_eq!(sim.state(1), AgentState::LoggedOut);
    sim.login(1);
    assert_eq!(sim.state(1), AgentState::Available);
}

#[test]
fn waiting_callers_stay_and_are_offered_by_the_new_rules_and_members() {
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &[(0, 0)])],
        agents(3),
    );
    sim.login(0);
    sim.login(1);
    sim.arrive(1, "q", "555");
    sim.answer(1, 0);
    // A second caller waits: agent 1 is logged in but not a member.
    assert!(rings(&sim.arrive(2, "q", "666")).is_empty());
    // Agent 1 becomes a member: the waiting caller rings it at once.
    let actions = sim.reconfigure(
        vec![queue("q", 1, Strategy::RingAll, &[(0, 0), (1, 0)])],
        agents(3),
    );
    assert_eq!(rings(&actions), vec![(2, agent(1))]);
    sim.answer(2, 1);
    // The new strategy: ring-all rings both free members.
    sim.end(1);
    sim.end(2);
    let mut rung_now: Vec<AgentId> = rings(&sim.arrive(3, "q", "777"))
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    rung_now.sort();
    assert_eq!(rung_now, vec![agent(0), agent(1)]);
}

#[test]
fn a_removed_queue_takes_no_new_callers_and_serves_the_waiting_ones() {
    let mut sim = Sim::new(
        vec![
            queue("a", 1, Strategy::RoundRobin, &[(0, 0)]),
            queue("b", 2, Strategy::RoundRobin, &[(0, 0)]),
        ],
        agents(1),
    );
    sim.login(0);
    sim.arrive(1, "a", "555");
    sim.answer(1, 0);
    sim.arrive(2, "a", "666");
    sim.reconfigure(
        vec![queue("b", 2, Strategy::RoundRobin, &[(0, 0)])],
        agents(1),
    );
    assert_eq!(
        sim.acd.handle(
            sim.now,
            Input::CallerArrived {
                call: CallId(3),
                queue: qname("a"),
                caller: "777".into(),
                skill: None,
            }
        ),
        Err(InputError::UnknownQueue(qname("a")))
    );
    // The caller already waiting in "a" is still served when the agent is free.
    assert_eq!(rung(&sim.end(1)), agent(0));
    sim.answer(2, 0);
    sim.end(2);
    // Configured again, "a" takes callers once more.
    sim.reconfigure(
        vec![
            queue("a", 1, Strategy::RoundRobin, &[(0, 0)]),
            queue("b", 2, Strategy::RoundRobin, &[(0, 0)]),
        ],
        agents(1),
    );
    assert_eq!(rung(&sim.arrive(4, "a", "888")), agent(0));
}

#[test]
fn round_robin_keeps_its_place_and_answered_counts_survive() {
    let members = [(0, 0), (1, 0), (2, 0)];
    let mut sim = Sim::new(
        vec![queue("q", 1, Strategy::RoundRobin, &members)],
        agents(3),
    );
    for n in 0..3 {
        sim.login(n);
    }
    assert_eq!(rung(&sim.arrive(1, "q", "5")), agent(0));
    sim.answer(1, 0);
    sim.end(1);
    // Same members, a new ring timeout: the next caller goes to agent 1, as it would
    // have without the reconfiguration.
    let mut q = queue("q", 1, Strategy::RoundRobin, &members);
    q.ring_timeout = Duration::from_secs(3);
    sim.reconfigure(vec![q], agents(3));
    assert_eq!(rung(&sim.arrive(2, "q", "5")), agent(1));
    // The new ring timeout applies: after 3 s the offer moves on.
    assert_eq!(rung(&sim.advance(3_000)), agent(2));
    // Fewest-calls after a reconfiguration still counts agent 0's answered call.
    sim.answer(2, 2);
    sim.end(2);
    sim.reconfigure(
        vec![queue("q", 1, Strategy::FewestCalls, &members)],
        agents(3),
    );
    assert_eq!(rung(&sim.arrive(3, "q", "5")), agent(1));
}
