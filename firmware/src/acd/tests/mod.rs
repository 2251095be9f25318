//! ACD tests on a virtual clock: one file per area, a small driver here.

mod codes;
mod model;
mod modes;
mod reconfigure;
mod rules;
mod store;
mod strategies;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

pub(super) fn agent(n: usize) -> AgentId {
    format!("{}", 100 + n).parse().expect("agent id")
}

pub(super) fn ext(n: usize) -> String {
    format!("{}", 200 + n)
}

pub(super) fn qname(s: &str) -> QueueName {
    s.parse().expect("queue name")
}

pub(super) fn agents(n: usize) -> Vec<AgentConfig> {
    (0..n)
        .map(|i| AgentConfig {
            id: agent(i),
            skills: BTreeMap::new(),
            recording: Default::default(),
            mode: ExtensionMode::Login,
        })
        .collect()
}

/// A queue named `name` with number 7000 + `k`, the strategy, and members (agent, penalty).
pub(super) fn queue(
    name: &str,
    k: u32,
    strategy: Strategy,
    members: &[(usize, u32)],
) -> QueueConfig {
    let mut q = QueueConfig::new(
        qname(name),
        format!("{}", 7000 + k).parse().expect("number"),
        strategy,
    );
    q.members = members
        .iter()
        .map(|&(a, penalty)| Member {
            agent: agent(a),
            penalty,
        })
        .collect();
    q
}

/// The core with a virtual clock.
pub(super) struct Sim {
    pub acd: Acd,
    pub t0: Instant,
    pub now: Instant,
}

impl Sim {
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Sim {
        let config = AcdConfig::new(queues, agents).expect("valid config");
        let t0 = Instant::now();
        Sim {
            acd: Acd::new(&config, t0),
            t0,
            now: t0,
        }
    }

    pub fn ms(&self) -> u64 {
        u64::try_from((self.now - self.t0).as_millis()).expect("ms")
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.acd.poll_action()).collect()
    }

    /// Feeds an input at the current time; panics if refused.
    pub fn input(&mut self, input: Input) -> Vec<Action> {
        let shown = format!("{input:?}");
        self.acd
            .handle(self.now, input)
            .unwrap_or_else(|e| panic!("{shown} refused: {e}"));
        self.drain()
    }

    /// Runs every timer up to `ms` after the start, in order, and returns the actions.
    pub fn advance_to(&mut self, ms: u64) -> Vec<Action> {
        let target = self.t0 + Duration::from_millis(ms);
        let mut out = Vec::new();
        while let Some(t) = self.acd.timeout(self.now).filter(|&t| t <= target) {
            self.now = self.now.max(t);
            self.acd.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = target;
        self.acd.handle_timeout(self.now);
        out.extend(self.drain());
        out
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        let to = self.ms() + ms;
        self.advance_to(to)
    }

    pub fn login(&mut self, n: usize) -> Vec<Action> {
        self.input(Input::AgentLogin {
            agent: agent(n),
            extension: ext(n),
            from: LoginFrom::Phone,
        })
    }

    pub fn arrive(&mut self, call: u64, queue: &str, caller: &str) -> Vec<Action> {
        self.input(Input::CallerArrived {
            call: CallId(call),
            queue: qname(queue),
            caller: caller.to_owned(),
            skill: None,
        })
    }

    pub fn answer(&mut self, call: u64, n: usize) -> Vec<Action> {
        self.input(Input::OfferAnswered {
            call: CallId(call),
            agent: agent(n),
        })
    }

    pub fn end(&mut self, call: u64) -> Vec<Action> {
        self.input(Input::CallEnded { call: CallId(call) })
    }

    pub fn state(&self, n: usize) -> AgentState {
        self.acd.agent(&agent(n)).expect("agent").0.clone()
    }
}

/// The (call, agent) pairs rung by these actions.
pub(super) fn rings(actions: &[Action]) -> Vec<(u64, AgentId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ring { call, agent, .. } => Some((call.0, agent.clone())),
            _ => None,
        })
        .collect()
}

/// The single agent rung by these actions.
pub(super) fn rung(actions: &[Action]) -> AgentId {
    let r = rings(actions);
    assert_eq!(r.len(), 1, "expected one ring in {actions:?}");
    r[0].1.clone()
}

pub(super) fn agent_index(id: &AgentId) -> usize {
    id.as_str().parse::<usize>().expect("digits") - 100
}

/// [`Acd::status`] (the queues page): waiting callers in service order with how long
/// they waited and who rings for them, members and agents with their states.
#[test]
fn status_shows_waiting_callers_in_order_and_agents_states() {
    let mut sim = Sim::new(
        vec![queue("sales", 1, Strategy::RingAll, &[(0, 0), (1, 0)])],
        agents(2),
    );
    sim.login(0);
    sim.advance(1000);
    sim.arrive(1, "sales", "5550001");
    sim.advance(2000);
    sim.arrive(2, "sales", "5550002");
    sim.advance(500);
    let status = sim.acd.status();
    let q = &status.queues[0];
    assert_eq!(
        (q.name.as_str(), q.number.as_str(), q.strategy),
        ("sales", "7001", "ring_all")
    );
    assert_eq!(q.members, vec![(agent(0), 0), (agent(1), 0)]);
    let callers: Vec<&str> = q.waiting.iter().map(|w| w.caller.as_str()).collect();
    assert_eq!(callers, ["5550001", "5550002"], "first to be served first");
    assert_eq!(q.waiting[0].ringing, vec![agent(0)], "the free agent rings");
    assert!(q.waiting[1].ringing.is_empty());
    assert_eq!(sim.now - q.waiting[0].arrived, Duration::from_millis(2500));
    assert_eq!(
        status
            .agents
            .iter()
            .map(|a| a.state.name())
            .collect::<Vec<_>>(),
        ["ringing", "logged_out"]
    );
    assert_eq!(status.agents[0].extension.as_deref(), Some("200"));
    // The web view of it: times as milliseconds waited and in state.
    let live = crate::web::status::CallCenterStatus::of(&sim.acd, sim.now, 1_000);
    assert_eq!(live.queues[0].waiting[0].waited_ms, 2500);
    assert_eq!(live.queues[0].waiting[1].position, 2);
    assert_eq!(
        (
            live.queues[0].agents_available,
            live.queues[0].agents_logged_in
        ),
        (0, 1)
    );
    // Answered: the caller leaves the waiting list; the member's count goes up.
    sim.answer(1, 0);
    let status = sim.acd.status();
    assert_eq!(status.queues[0].waiting.len(), 1);
    assert_eq!(status.queues[0].members[0].1, 1);
    assert_eq!(status.agents[0].state.name(), "on_call");
}
