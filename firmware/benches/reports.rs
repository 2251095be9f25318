//! Report cost over a busy month: 100,000 queued CDRs over 30 days in 4 queues, taken
//! by 20 agents (80% answered, 15% abandoned, 5% other), and the agent state history
//! those calls leave (ringing, on_call, wrap_up, available per answered call, plus a
//! login and a lunch pause per agent per day: about 330,000 rows). The store is a real
//! migrated SQLite file in a temp dir; each iteration runs the whole report for the
//! 30 days, all queues / all agents. Target (issue 6, item 9): well under a second.

use std::hint::black_box;

use branchline_firmware::reports::{self, Period, ServiceLevelThreshold};
use branchline_firmware::store::Store;
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};

const CALLS: i64 = 100_000;
const AGENTS: i64 = 20;
const DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200_000;

fn populate(conn: &mut Connection) {
    let tx = conn.transaction().expect("tx");
    for (i, q) in ["sales", "support", "billing", "vip"].iter().enumerate() {
        tx.execute(
            "INSERT INTO queues (name, number, strategy) VALUES (?1, ?2, 'round_robin')",
            params![q, format!("700{i}")],
        )
        .expect("queue");
    }
    {
        let mut cdr = tx
            .prepare(
                "INSERT INTO cdrs (call_id, direction, caller, callee, started_at_ms,
                                   answered_at_ms, ended_at_ms, duration_ms, billable_ms,
                                   disposition, hangup_side, queue, agent_id, queue_wait_ms)
                 VALUES (?1, 'inbound', '5550100', '7000', ?2, ?3, ?4, ?4 - ?2, 0, ?5, ?6,
                         ?7, ?8, ?9)",
            )
            .expect("prepare cdr");
        let mut state = tx
            .prepare("INSERT INTO agent_state_log (agent_id, state, reason, at_ms) VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare state");
        for day in 0..DAYS {
            for a in 0..AGENTS {
                let base = START + day * DAY_MS;
                let agent = format!("{}", 100 + a);
                state
                    .execute(params![
                        agent,
                        "available",
                        None::<String>,
                        base + 8 * 3_600_000
                    ])
                    .expect("login");
                state
                    .execute(params![
                        agent,
                        "paused",
                        Some("lunch"),
                        base + 12 * 3_600_000 + a
                    ])
                    .expect("pause");
                state
                    .execute(params![
                        agent,
                        "available",
                        None::<String>,
                        base + 13 * 3_600_000 + a
                    ])
                    .expect("back");
                state
                    .execute(params![
                        agent,
                        "logged_out",
                        None::<String>,
                        base + 18 * 3_600_000
                    ])
                    .expect("logout");
            }
        }
        let spacing = DAYS * DAY_MS / CALLS;
        for i in 0..CALLS {
            let started = START + i * spacing;
            let queue = ["sales", "support", "billing", "vip"][(i % 4) as usize];
            let wait = (i * 7_919) % 60_000;
            let kind = i % 20;
            let (answered, agent, side, disposition) = if kind < 16 {
                (
                    Some(started + wait),
                    Some(format!("{}", 100 + i % AGENTS)),
                    "caller",
                    "answered",
                )
            } else if kind < 19 {
                (None, None, "caller", "no_answer")
            } else {
                (None, None, "system", "no_answer")
            };
            let ended = answered.map_or(started + wait, |a| a + 60_000 + (i * 31) % 240_000);
            cdr.execute(params![
                format!("bench-{i}"),
                started,
                answered,
                ended,
                disposition,
                side,
                queue,
                agent,
                wait
            ])
            .expect("cdr");
            if let (Some(a), Some(agent)) = (answered, &agent) {
                state
                    .execute(params![agent, "ringing", None::<String>, a - 3_000])
                    .expect("ringing");
                state
                    .execute(params![agent, "on_call", None::<String>, a])
                    .expect("on_call");
                state
                    .execute(params![agent, "wrap_up", None::<String>, ended])
                    .expect("wrap_up");
                state
                    .execute(params![agent, "available", None::<String>, ended + 10_000])
                    .expect("available");
            }
        }
    }
    tx.commit().expect("commit");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    drop(Store::open(&path).expect("store"));
    let mut conn = Connection::open(&path).expect("open");
    populate(&mut conn);
    let period = Period::new(START, START + DAYS * DAY_MS).expect("period");
    let mut g = c.benchmark_group("reports_100k_cdrs_30_days");
    g.sample_size(10);
    g.bench_function("queue_report", |b| {
        b.iter(|| {
            let r =
                reports::queue_report(&conn, &path, period, None, ServiceLevelThreshold::default())
                    .expect("report");
            assert_eq!(r.iter().map(|q| q.offered).sum::<u64>(), CALLS as u64);
            black_box(r)
        })
    });
    g.bench_function("agent_report", |b| {
        b.iter(|| {
            let r = reports::agent_report(&conn, &path, period, None).expect("report");
            assert_eq!(r.len(), AGENTS as usize);
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
