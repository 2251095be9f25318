//! ACD decision cost: one queue with 200 logged-in agents (all on calls) and 50 callers
//! waiting; an agent finishes wrap-up and the core picks the call to offer them
//! (`handle(WrapUpDone)` plus draining the actions). Per strategy, plus the skill-based
//! worst case where the freed agent only qualifies for the last waiting caller (every
//! waiting call is scanned against all 200 members). Target (issue 6): under 50 µs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use branchline_firmware::acd::{
    Acd, AcdConfig, Action, AgentConfig, AgentId, CallId, ExtensionMode, Input, LoginFrom, Member,
    QueueConfig, QueueName, SkillLevel, SkillRequirement, Strategy,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const AGENTS: usize = 200;
const WAITING: u64 = 50;

fn agent(i: usize) -> AgentId {
    format!("{}", 1000 + i).parse().expect("agent id")
}

fn drain(acd: &mut Acd) -> Vec<Action> {
    std::iter::from_fn(|| acd.poll_action()).collect()
}

/// The core with every agent on a call and `WAITING` callers queued; agent 0 is in
/// wrap-up. `worst_skill`: waiting callers need a skill agent 0 lacks, except the last.
fn setup(strategy: Strategy, worst_skill: bool) -> (Acd, Instant) {
    let queue: QueueName = "support".parse().expect("name");
    let mut q = QueueConfig::new(queue.clone(), "7000".parse().expect("number"), strategy);
    q.wrap_up = Duration::from_secs(30);
    q.ring_timeout = Duration::from_secs(3600);
    q.members = (0..AGENTS)
        .map(|i| Member {
            agent: agent(i),
            penalty: (i % 4) as u32,
        })
        .collect();
    let agents: Vec<AgentConfig> = (0..AGENTS)
        .map(|i| {
            let mut skills = BTreeMap::new();
            let level = SkillLevel::try_from((i % 10 + 1) as i64).expect("level");
            let name = if i == 0 { "billing" } else { "sales" };
            skills.insert(name.parse().expect("skill"), level);
            AgentConfig {
                id: agent(i),
                skills,
                recording: Default::default(),
                mode: ExtensionMode::Login,
            }
        })
        .collect();
    let config = AcdConfig::new(vec![q], agents).expect("config");
    let t0 = Instant::now();
    let mut acd = Acd::new(&config, t0);
    let mut now = t0;
    for i in 0..AGENTS {
        acd.handle(
            now,
            Input::AgentLogin {
                agent: agent(i),
                extension: format!("{}", 2000 + i),
                from: LoginFrom::Phone,
            },
        )
        .expect("login");
    }
    drain(&mut acd);
    // Fill every agent with a call.
    for call in 0..AGENTS as u64 {
        now += Duration::from_millis(10);
        acd.handle(
            now,
            Input::CallerArrived {
                call: CallId(call),
                queue: queue.clone(),
                caller: "5550100".to_owned(),
                skill: None,
            },
        )
        .expect("arrive");
        let ring = drain(&mut acd).into_iter().find_map(|a| match a {
            Action::Ring { call, agent, .. } => Some((call, agent)),
            _ => None,
        });
        let (call, agent) = ring.expect("a free agent rings");
        acd.handle(now, Input::OfferAnswered { call, agent })
            .expect("answer");
        drain(&mut acd);
    }
    // Callers waiting.
    for k in 0..WAITING {
        now += Duration::from_millis(10);
        let skill = if worst_skill && k + 1 < WAITING {
            ("sales", 10)
        } else {
            ("billing", 1)
        };
        acd.handle(
            now,
            Input::CallerArrived {
                call: CallId(10_000 + k),
                queue: queue.clone(),
                caller: format!("555{k:04}"),
                skill: Some(SkillRequirement {
                    skill: skill.0.parse().expect("skill"),
                    min_level: SkillLevel::try_from(skill.1).expect("level"),
                }),
            },
        )
        .expect("arrive");
    }
    drain(&mut acd);
    // Agent 0's call ends: wrap-up.
    let zero_call = (0..AGENTS as u64)
        .find(|&c| {
            matches!(acd.call_status(CallId(c)),
                Some(branchline_firmware::acd::CallStatus::Connected { agent: a, .. }) if a == agent(0))
        })
        .expect("agent 0 has a call");
    now += Duration::from_secs(1);
    acd.handle(
        now,
        Input::CallEnded {
            call: CallId(zero_call),
        },
    )
    .expect("end");
    drain(&mut acd);
    (acd, now)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("acd_200_agents_50_waiting");
    let cases = [
        ("round_robin", Strategy::RoundRobin, false),
        ("longest_idle", Strategy::LongestIdle, false),
        ("fewest_calls", Strategy::FewestCalls, false),
        ("ring_all", Strategy::RingAll, false),
        ("skill_based", Strategy::SkillBased, false),
        ("skill_based_worst_case", Strategy::SkillBased, true),
    ];
    for (name, strategy, worst) in cases {
        let (acd, now) = setup(strategy, worst);
        // Sanity: the decision rings agent 0 for a waiting call.
        let mut check = acd.clone();
        check
            .handle(now, Input::WrapUpDone { agent: agent(0) })
            .expect("wrap-up done");
        let rung = drain(&mut check)
            .into_iter()
            .filter(|a| matches!(a, Action::Ring { .. }))
            .count();
        assert_eq!(rung, 1, "{name}: one offer");
        group.bench_function(name, |b| {
            b.iter_batched(
                || acd.clone(),
                |mut acd| {
                    acd.handle(now, Input::WrapUpDone { agent: agent(0) })
                        .expect("wrap-up done");
                    black_box(drain(&mut acd));
                    acd
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
