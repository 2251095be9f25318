//! Model test: random event sequences against a reference of what the actions said.
//!
//! Checked after every step: an agent is offered a call only from `available` (never
//! two calls, never while paused, in wrap-up or logged out); the states the actions
//! reported match the core's; every caller is in exactly one place (waiting, connected,
//! or gone because it was answered and ended, abandoned or overflowed out), and the
//! core agrees; a refused input changes nothing. At the end every queue's max wait has
//! passed, so every caller has been answered, abandoned or overflowed.

use std::collections::BTreeMap;

use proptest::prelude::{
    any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
};
use proptest::strategy::Strategy as Gen;

use super::*;

const AGENTS: usize = 6;
const MAX_WAIT_MS: u64 = 60_000;

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        queue: bool,
        vip: bool,
        skill: Option<(u8, u8)>,
    },
    Abandon(usize),
    Answer(usize),
    Reject(usize),
    NoAnswer(usize),
    End(usize),
    Login(usize),
    Logout(usize),
    Pause(usize),
    Unpause(usize),
    WrapDone(usize),
    Advance(u64),
}

fn op() -> impl Gen<Value = Op> {
    let a = 0..AGENTS;
    prop_oneof![
        4 => (any::<bool>(), any::<bool>(), proptest::option::of((0u8..2, 1u8..=10)))
            .prop_map(|(queue, vip, skill)| Op::Arrive { queue, vip, skill }),
        1 => any::<usize>().prop_map(Op::Abandon),
        3 => any::<usize>().prop_map(Op::Answer),
        1 => any::<usize>().prop_map(Op::Reject),
        1 => any::<usize>().prop_map(Op::NoAnswer),
        2 => any::<usize>().prop_map(Op::End),
        2 => a.clone().prop_map(Op::Login),
        1 => a.clone().prop_map(Op::Logout),
        1 => a.clone().prop_map(Op::Pause),
        1 => a.clone().prop_map(Op::Unpause),
        1 => a.prop_map(Op::WrapDone),
        3 => (0u64..20_000).prop_map(Op::Advance),
    ]
}

fn strategy() -> impl Gen<Value = super::super::Strategy> {
    prop_oneof![
        Just(super::super::Strategy::RingAll),
        Just(super::super::Strategy::RoundRobin),
        Just(super::super::Strategy::LongestIdle),
        Just(super::super::Strategy::FewestCalls),
        Just(super::super::Strategy::SkillBased),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Waiting,
    Connected(usize),
    Gone,
}

#[derive(Default)]
struct Model {
    agents: Vec<AgentState>,
    calls: BTreeMap<CallId, Where>,
}

impl Model {
    fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::AgentStateChanged { agent, state, .. } => {
                    let a = agent_index(agent);
                    if let AgentState::Ringing(call) = state {
                        assert_eq!(
                            self.agents[a],
                            AgentState::Available,
                            "agent {agent} offered {call} while {:?}",
                            self.agents[a]
                        );
                        assert_eq!(self.calls.get(call), Some(&Where::Waiting));
                    }
                    self.agents[a] = state.clone();
                }
                Action::Ring { call, agent, .. } => {
                    assert_eq!(self.agents[agent_index(agent)], AgentState::Ringing(*call));
                }
                Action::Connect { call, agent, .. } => {
                    assert_eq!(self.calls.get(call), Some(&Where::Waiting));
                    self.calls
                        .insert(*call, Where::Connected(agent_index(agent)));
                }
                Action::Overflow { call, target, .. } => {
                    assert_eq!(self.calls.get(call), Some(&Where::Waiting), "{action:?}");
                    if !matches!(target, OverflowTarget::Queue(_)) {
                        self.calls.insert(*call, Where::Gone);
                    }
                }
                Action::StopRinging { .. }
                | Action::StartMusicOnHold { .. }
                | Action::Announce { .. } => {}
            }
        }
    }

    fn check_against(&self, acd: &Acd) {
        for (a, state) in self.agents.iter().enumerate() {
            assert_eq!(acd.agent(&agent(a)).expect("agent").0, state, "agent {a}");
        }
        for (call, place) in &self.calls {
            match (place, acd.call_status(*call)) {
                (Where::Waiting, Some(CallStatus::Waiting { .. })) | (Where::Gone, None) => {}
                (Where::Connected(a), Some(CallStatus::Connected { agent: x, .. }))
                    if agent(*a) == x => {}
                (want, got) => panic!("call {call}: model {want:?}, core {got:?}"),
            }
        }
    }

    fn pick(&self, n: usize, want: impl Fn(&Where) -> bool) -> Option<CallId> {
        let matching: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, w)| want(w))
            .map(|(c, _)| *c)
            .collect();
        (!matching.is_empty()).then(|| matching[n % matching.len()])
    }

    fn ringing(&self, n: usize) -> Option<(CallId, usize)> {
        let offers: Vec<(CallId, usize)> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(a, s)| match s {
                AgentState::Ringing(c) => Some((*c, a)),
                _ => None,
            })
            .collect();
        (!offers.is_empty()).then(|| offers[n % offers.len()])
    }
}

fn build(strategies: (super::super::Strategy, super::super::Strategy)) -> Sim {
    let mut all = agents(AGENTS);
    for (i, a) in all.iter_mut().enumerate() {
        a.skills.insert(
            format!("s{}", i % 2).parse().expect("skill"),
            SkillLevel::try_from((i % 10 + 1) as i64 * 2 % 11 + 1)
                .unwrap_or_else(|_| SkillLevel::try_from(5).expect("level")),
        );
    }
    let mut a = queue("a", 1, strategies.0, &[(0, 0), (1, 0), (2, 1), (3, 2)]);
    a.max_wait = Some(Duration::from_millis(MAX_WAIT_MS));
    a.max_len = Some(4);
    a.on_full = OverflowTarget::Queue(qname("b"));
    a.on_max_wait = OverflowTarget::Queue(qname("b"));
    a.ring_timeout = Duration::from_secs(5);
    a.wrap_up = Duration::from_secs(3);
    a.skill_fallback = Some(Duration::from_secs(20));
    a.announce_every = Some(Duration::from_secs(15));
    a.vip = vec!["99*".parse().expect("vip")];
    let mut b = queue("b", 2, strategies.1, &[(2, 0), (3, 0), (4, 0), (5, 3)]);
    b.max_wait = Some(Duration::from_millis(MAX_WAIT_MS));
    b.max_len = Some(3);
    b.on_full = OverflowTarget::Queue(qname("a"));
    b.on_max_wait = OverflowTarget::Voicemail("7002".parse().expect("ext"));
    b.on_no_agents = Some(OverflowTarget::Number("+15550100".parse().expect("number")));
    b.ring_timeout = Duration::from_secs(7);
    b.skill_fallback = Some(Duration::from_secs(10));
    Sim::new(vec![a, b], all)
}

fn input_for(op: &Op, model: &Model, next_call: &mut u64) -> Option<Input> {
    Some(match *op {
        Op::Arrive { queue, vip, skill } => {
            *next_call += 1;
            Input::CallerArrived {
                call: CallId(*next_call),
                queue: qname(if queue { "a" } else { "b" }),
                caller: if vip { "991234" } else { "5550100" }.to_owned(),
                skill: skill.map(|(s, l)| SkillRequirement {
                    skill: format!("s{s}").parse().expect("skill"),
                    min_level: SkillLevel::try_from(i64::from(l)).expect("level"),
                }),
            }
        }
        // Sometimes aim at the wrong call or agent on purpose: it must be refused.
        Op::Abandon(n) => Input::CallerAbandoned {
            call: model
                .pick(n, |w| *w == Where::Waiting || n % 5 == 0)
                .unwrap_or(CallId(9999)),
        },
        Op::Answer(n) | Op::Reject(n) | Op::NoAnswer(n) => {
            let (call, a) = model.ringing(n).unwrap_or((CallId(1), n % AGENTS));
            let agent = agent(a);
            match op {
                Op::Answer(_) => Input::OfferAnswered { call, agent },
                Op::Reject(_) => Input::OfferRejected { call, agent },
                _ => Input::OfferNoAnswer { call, agent },
            }
        }
        Op::End(n) => Input::CallEnded {
            call: model
                .pick(n, |w| matches!(w, Where::Connected(_)) || n % 7 == 0)
                .unwrap_or(CallId(9999)),
        },
        Op::Login(a) => Input::AgentLogin {
            agent: agent(a),
            // Agents 4 and 5 share a desk: one of them is refused while the other holds it.
            extension: ext(a.min(4)),
            from: LoginFrom::Phone,
        },
        Op::Logout(a) => Input::AgentLogout { agent: agent(a) },
        Op::Pause(a) => Input::AgentPause {
            agent: agent(a),
            reason: (a % 2 == 0).then(|| "7".parse().expect("reason")),
        },
        Op::Unpause(a) => Input::AgentUnpause { agent: agent(a) },
        Op::WrapDone(a) => Input::WrapUpDone { agent: agent(a) },
        Op::Advance(_) => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_the_invariants(
        strategies in (strategy(), strategy()),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut sim = build(strategies);
        let mut model = Model {
            agents: vec![AgentState::LoggedOut; AGENTS],
            ..Model::default()
        };
        let mut next_call = 0;
        for op in &ops {
            if let Op::Advance(ms) = op {
                let actions = sim.advance(*ms);
                model.apply(&actions);
                model.check_against(&sim.acd);
                continue;
            }
            // Timers due now first, so a refused input can be compared to a snapshot.
            sim.acd.handle_timeout(sim.now);
            let actions: Vec<Action> = std::iter::from_fn(|| sim.acd.poll_action()).collect();
            model.apply(&actions);
            let input = input_for(op, &model, &mut next_call).expect("not an advance");
            let before = sim.acd.clone();
            let arrived = match &input {
                Input::CallerArrived { call, .. } => Some(*call),
                _ => None,
            };
            let abandoned = match &input {
                Input::CallerAbandoned { call } => Some(*call),
                _ => None,
            };
            let ended = match &input {
                Input::CallEnded { call } => Some(*call),
                _ => None,
            };
            match sim.acd.handle(sim.now, input) {
                Ok(()) => {
                    if let Some(c) = arrived {
                        model.calls.insert(c, Where::Waiting);
                    }
                    let actions: Vec<Action> =
                        std::iter::from_fn(|| sim.acd.poll_action()).collect();
                    if let Some(c) = abandoned {
                        prop_assert_eq!(model.calls.get(&c), Some(&Where::Waiting));
                        model.calls.insert(c, Where::Gone);
                    }
                    if let Some(c) = ended {
                        prop_assert!(matches!(model.calls.get(&c), Some(Where::Connected(_))));
                        model.calls.insert(c, Where::Gone);
                    }
                    model.apply(&actions);
                }
                Err(e) => {
                    prop_assert!(sim.acd == before, "refused {} changed the core", e);
                    prop_assert_eq!(sim.acd.poll_action(), None);
                }
            }
            model.check_against(&sim.acd);
        }
        // Past every max wait (twice: a caller may overflow from a into b), every
        // caller has been answered, abandoned or overflowed.
        let actions = sim.advance(2 * MAX_WAIT_MS + 1);
        model.apply(&actions);
        model.check_against(&sim.acd);
        for (call, place) in &model.calls {
            prop_assert!(*place != Where::Waiting, "call {} still waiting", call);
        }
        // Ending the answered calls leaves nothing in the core.
        let connected: Vec<CallId> = model
            .calls
            .iter()
            .filter(|(_, w)| matches!(w, Where::Connected(_)))
            .map(|(c, _)| *c)
            .collect();
        for call in connected {
            sim.end(call.0);
            prop_assert_eq!(sim.acd.call_status(call), None);
        }
        prop_assert_eq!(sim.acd.timeout(sim.now).is_some(), (0..AGENTS).any(|a| sim.state(a) == AgentState::WrapUp));
    }
}
