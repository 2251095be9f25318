//! Reports on a real migrated store (temp dir: the store needs WAL, which an
//! in-memory database cannot have), with hand-computed expectations.

use std::path::PathBuf;

use rusqlite::{params, Connection};

use super::*;
use crate::rbac::{GroupId, UserId};
use crate::store::Store;

/// A UTC midnight: the report day is `[D, D + DAY)`.
const D: i64 = 19_700 * DAY_MS;
const H: i64 = HOUR_MS;

fn store() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    drop(Store::open(&path).expect("open store"));
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "INSERT INTO users (id, username, display_name, password_hash, agent_id, enabled,
                            created_at_ms, updated_at_ms)
         VALUES (1, 'ana', 'Ana', 'x', '100', 1, 0, 0),
                (2, 'bo', 'Bo', 'x', '200', 1, 0, 0),
                (3, 'cy', 'Cy', 'x', '300', 1, 0, 0),
                (4, 'di', 'Di', 'x', '400', 1, 0, 0),
                (5, 'ed', 'Ed', 'x', NULL, 1, 0, 0);
         INSERT INTO groups (id, name) VALUES (7, 'team-a'), (8, 'team-b');
         INSERT INTO group_members (group_id, user_id, is_group_admin)
         VALUES (7, 1, 0), (8, 1, 0), (8, 2, 0), (7, 5, 1);
         INSERT INTO queues (id, name, number, strategy) VALUES
             (1, 'sales', '7001', 'round_robin'),
             (2, 'support', '7002', 'ring_all');",
    )
    .expect("rows");
    (dir, path, conn)
}

/// One CDR; `answered`/`agent` only for a call an agent took.
#[allow(clippy::too_many_arguments)]
fn cdr(
    conn: &Connection,
    id: &str,
    queue: Option<&str>,
    agent: Option<&str>,
    started: i64,
    answered: Option<i64>,
    ended: i64,
    wait: Option<i64>,
    side: &str,
) {
    let disposition = if answered.is_some() {
        "answered"
    } else {
        "no_answer"
    };
    conn.execute(
        "INSERT INTO cdrs (call_id, direction, caller, callee, started_at_ms, answered_at_ms,
                           ended_at_ms, duration_ms, billable_ms, disposition, hangup_side,
                           queue, agent_id, queue_wait_ms)
         VALUES (?1, 'internal', '101', '7001', ?2, ?3, ?4, ?4 - ?2,
                 COALESCE(?4 - ?3, 0), ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            started,
            answered,
            ended,
            disposition,
            side,
            queue,
            agent,
            wait
        ],
    )
    .expect("cdr");
}

fn state(conn: &Connection, agent: &str, state: &str, reason: Option<&str>, at: i64) {
    conn.execute(
        "INSERT INTO agent_state_log (agent_id, state, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![agent, state, reason, at],
    )
    .expect("state row");
}

// Call 1: sales, agent 100, started 01:00, waited 10 s (entered the queue at +2 s),
// talked 60 s, 5 s wrap-up. Call 2: sales, agent 200, started 01:30, waited exactly
// 20 s, talked 120 s, wrap-up logged 300 ms after the end and lasting 7 s.
const S1: i64 = D + H;
const E1: i64 = S1 + 72_000;
const S2: i64 = D + H + 1_800_000;
const E2: i64 = S2 + 140_000;

fn day_of_calls(conn: &Connection) {
    let sales = Some("sales");
    cdr(
        conn,
        "c1",
        sales,
        Some("100"),
        S1,
        Some(S1 + 12_000),
        E1,
        Some(10_000),
        "caller",
    );
    cdr(
        conn,
        "c2",
        sales,
        Some("200"),
        S2,
        Some(S2 + 20_000),
        E2,
        Some(20_000),
        "callee",
    );
    // 02:00 a short abandon (5 s), 02:01 a long one (40 s), 23:00 ended by the box.
    cdr(
        conn,
        "c3",
        sales,
        None,
        D + 2 * H,
        None,
        D + 2 * H + 5_500,
        Some(5_000),
        "caller",
    );
    let s4 = D + 2 * H + 60_000;
    cdr(
        conn,
        "c4",
        sales,
        None,
        s4,
        None,
        s4 + 41_000,
        Some(40_000),
        "caller",
    );
    cdr(
        conn,
        "c5",
        sales,
        None,
        D + 23 * H,
        None,
        D + 23 * H + 26_000,
        Some(25_000),
        "system",
    );
    // Outside the period: ended in it but started before; started exactly at `to`.
    cdr(
        conn,
        "c6",
        sales,
        Some("100"),
        D - 100_000,
        Some(D - 90_000),
        D + 10_000,
        Some(9_000),
        "caller",
    );
    cdr(
        conn,
        "c7",
        sales,
        None,
        D + DAY_MS,
        None,
        D + DAY_MS + 1_000,
        Some(1_000),
        "caller",
    );
    // Not a queued call.
    cdr(
        conn,
        "c8",
        None,
        None,
        D + 3 * H,
        Some(D + 3 * H + 1_000),
        D + 3 * H + 9_000,
        None,
        "caller",
    );
    // A queue since deleted from the configuration.
    cdr(
        conn,
        "c9",
        Some("old"),
        None,
        D + 5 * H,
        None,
        D + 5 * H + 3_000,
        Some(2_000),
        "caller",
    );

    // Agent 100: available since before the period.
    state(conn, "100", "available", None, D - H);
    state(conn, "100", "ringing", None, S1 + 8_000);
    state(conn, "100", "on_call", None, S1 + 12_000);
    state(conn, "100", "wrap_up", None, E1);
    state(conn, "100", "available", None, E1 + 5_000);
    state(conn, "100", "paused", Some("lunch"), D + 4 * H);
    state(conn, "100", "available", None, D + 5 * H);
    state(conn, "100", "paused", None, D + 6 * H);
    state(conn, "100", "available", None, D + 6 * H + 600_000);
    // A wrap-up that follows no call of the period: not any call's wrap-up.
    state(conn, "100", "wrap_up", None, D + 8 * H);
    state(conn, "100", "available", None, D + 8 * H + 50_000);
    state(conn, "100", "paused", Some("lunch"), D + 12 * H);
    state(conn, "100", "logged_out", None, D + 13 * H);
    state(conn, "100", "available", None, D + 23 * H);
    // After the period: the 23:00 login stays open until `to`.
    state(conn, "100", "logged_out", None, D + DAY_MS + 1_000);

    // Agent 200 logs in during the period and stays.
    state(conn, "200", "available", None, D + 3_000_000);
    state(conn, "200", "ringing", None, S2 + 15_000);
    state(conn, "200", "on_call", None, S2 + 20_000);
    state(conn, "200", "wrap_up", None, E2 + 300);
    state(conn, "200", "available", None, E2 + 7_300);

    // Agent 300 logged out before the period and never came back.
    state(conn, "300", "logged_out", None, D - 10_000);
}

fn day() -> Period {
    Period::new(D, D + DAY_MS).expect("period")
}

fn sl(s: i64) -> ServiceLevelThreshold {
    ServiceLevelThreshold::new(s).expect("threshold")
}

#[test]
fn queue_figures_of_a_day() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let report =
        queue_report(&conn, &path, day(), None, ServiceLevelThreshold::default()).expect("report");
    let names: Vec<&str> = report.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(names, ["old", "sales", "support"]);

    let sales = &report[1];
    let mut per_hour = [0u64; 24];
    per_hour[1] = 2;
    per_hour[2] = 2;
    per_hour[23] = 1;
    assert_eq!(
        *sales,
        QueueFigures {
            queue: "sales".into(),
            offered: 5,
            answered: 2,
            abandoned: 2,
            overflowed: 0,
            overflowed_to_voicemail: 0,
            overflowed_to_number: 0,
            overflowed_to_busy: 0,
            other: 1,
            // 10 s and exactly 20 s.
            answered_within_threshold: 2,
            abandoned_within_threshold: 1,
            avg_wait_ms: 15_000,
            max_wait_ms: 20_000,
            talk_ms: 180_000,
            avg_talk_ms: 90_000,
            // 5 s after call 1, 7 s after call 2; agent 100's 08:00 wrap-up is no call's.
            wrap_up_ms: 12_000,
            avg_handle_ms: 96_000,
            service_level_threshold_s: 20,
            // 2 / (5 - 1 short abandon)
            service_level: Some(0.5),
            calls_per_hour: per_hour,
            survey_avg: None,
        }
    );

    let old = &report[0];
    assert_eq!((old.offered, old.abandoned, old.answered), (1, 1, 0));
    assert_eq!(old.calls_per_hour[5], 1);
    // Every figure of a call-less queue is zero, the service level null.
    assert_eq!(
        report[2],
        QueueFigures::empty("support".into(), ServiceLevelThreshold::default())
    );
    assert_eq!(report[2].service_level, None);
}

#[test]
fn the_service_level_threshold_moves_what_counts() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let at = |s| {
        let r = queue_report(&conn, &path, day(), Some("sales"), sl(s)).expect("report");
        assert_eq!(r.len(), 1);
        let q = &r[0];
        (
            q.answered_within_threshold,
            q.abandoned_within_threshold,
            q.service_level,
            q.service_level_threshold_s,
        )
    };
    // 5 s: nobody answered that fast; the 5 s abandon is short (inclusive).
    assert_eq!(at(5), (0, 1, Some(0.0), 5));
    // 19 s: call 1 only.
    assert_eq!(at(19), (1, 1, Some(0.25), 19));
    // 45 s: both answered; the 40 s abandon is short too: 2 / (5 - 2).
    assert_eq!(at(45), (2, 2, Some(2.0 / 3.0), 45));
}

#[test]
fn an_empty_period_gives_zeros_not_nan() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    // A day with no calls and no state changes (agent 100 is logged out then, 300 too).
    let period = Period::new(D + 2 * DAY_MS, D + 3 * DAY_MS).expect("period");
    let queues =
        queue_report(&conn, &path, period, None, ServiceLevelThreshold::default()).expect("report");
    assert_eq!(queues.len(), 2, "the configured queues: {queues:?}");
    for q in &queues {
        assert_eq!(
            *q,
            QueueFigures::empty(q.queue.clone(), ServiceLevelThreshold::default())
        );
        let json = serde_json::to_string(q).expect("json");
        assert!(!json.contains("NaN"), "{json}");
    }
    let agents = agent_report(&conn, &path, period, Some("400")).expect("report");
    assert_eq!(agents, vec![AgentFigures::empty("400".into())]);
    assert_eq!(agents[0].state_ms.len(), STATES.len());
}

#[test]
fn agent_figures_of_a_day() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let report = agent_report(&conn, &path, day(), None).expect("report");
    let ids: Vec<&str> = report.iter().map(|a| a.agent.as_str()).collect();
    // 400 has no history and took no call.
    assert_eq!(ids, ["100", "200", "300"]);

    let states = |pairs: [i64; 6]| -> BTreeMap<String, i64> {
        STATES.iter().map(|s| (*s).to_owned()).zip(pairs).collect()
    };
    // Agent 100, available from before the period: [00:00, S1+8 s) 3,608,000 +
    // [E1+5 s, 04:00) 10,723,000 + [05:00, 06:00) 3,600,000 + [06:10, 08:00) 6,600,000
    // + [08:00:50, 12:00) 14,350,000 + [23:00, 24:00) 3,600,000 (open at `to`).
    let a100 = AgentFigures {
        agent: "100".into(),
        answered: 1,
        talk_ms: 60_000,
        avg_talk_ms: 60_000,
        //            logged_out  available   ringing on_call wrap_up  paused
        state_ms: states([36_000_000, 42_481_000, 4_000, 60_000, 55_000, 7_800_000]),
        login_ms: 50_400_000,
        pauses: vec![
            PauseCount {
                reason: None,
                count: 1,
            },
            PauseCount {
                reason: Some("lunch".into()),
                count: 2,
            },
        ],
    };
    assert_eq!(report[0], a100);
    assert_eq!(a100.state_ms.values().sum::<i64>(), DAY_MS);

    // Agent 200 from its login at 00:50: nothing counted before its first row.
    let a200 = AgentFigures {
        agent: "200".into(),
        answered: 1,
        talk_ms: 120_000,
        avg_talk_ms: 120_000,
        state_ms: states([0, 83_267_700, 5_000, 120_300, 7_000, 0]),
        login_ms: 83_400_000,
        pauses: vec![],
    };
    assert_eq!(report[1], a200);

    let a300 = &report[2];
    assert_eq!((a300.answered, a300.login_ms), (0, 0));
    assert_eq!(a300.state_ms["logged_out"], DAY_MS);
}

#[test]
fn state_intervals_are_clipped_to_the_period() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    // 100 s inside agent 100's first lunch pause (04:00-05:00).
    let period = Period::new(D + 4 * H + 100_000, D + 4 * H + 200_000).expect("period");
    let report = agent_report(&conn, &path, period, None).expect("report");
    let ids: Vec<&str> = report.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(ids, ["100", "200", "300"]);
    assert_eq!(report[0].state_ms["paused"], 100_000);
    assert_eq!(report[0].login_ms, 100_000);
    assert!(
        report[0].pauses.is_empty(),
        "the pause began before the period"
    );
    assert_eq!(report[1].state_ms["available"], 100_000);
    assert_eq!(report[2].state_ms["logged_out"], 100_000);
    for a in &report {
        assert_eq!(a.state_ms.values().sum::<i64>(), 100_000, "{a:?}");
    }

    // Ending the period on a state change: agent 100's 12:00 pause is counted from
    // 11:00 to 12:00 as available, the pause row at `to` itself is not in the period.
    let period = Period::new(D + 11 * H, D + 12 * H).expect("period");
    let a = agent_report(&conn, &path, period, Some("100")).expect("report");
    assert_eq!(a[0].state_ms["available"], H);
    assert_eq!(a[0].state_ms["paused"], 0);
    assert!(a[0].pauses.is_empty());
}

#[test]
fn one_agent_or_one_queue_only() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let a = agent_report(&conn, &path, day(), Some("200")).expect("report");
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].agent.as_str(), a[0].answered), ("200", 1));
    let q = queue_report(&conn, &path, day(), Some("old"), sl(20)).expect("report");
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].queue.as_str(), q[0].offered), ("old", 1));
}

#[test]
fn bad_periods_thresholds_and_names_are_refused_and_change_nothing() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let before = conn.total_changes();

    assert!(matches!(
        Period::new(D, D),
        Err(ReportError::EmptyPeriod {
            from_ms: D,
            to_ms: D
        })
    ));
    assert!(matches!(
        Period::new(D, D - 1),
        Err(ReportError::EmptyPeriod { .. })
    ));
    assert!(matches!(
        Period::new(-5, D),
        Err(ReportError::BeforeEpoch { from_ms: -5 })
    ));
    let long = Period::new(D, D + MAX_PERIOD_MS + 1).expect_err("too long");
    assert!(matches!(
        long,
        ReportError::PeriodTooLong {
            days: 367,
            max_days: 366,
            ..
        }
    ));
    assert!(long.to_string().contains("367 days"), "{long}");
    assert_eq!(long.parameter(), Some("to"));
    assert!(Period::new(D, D + MAX_PERIOD_MS).is_ok());
    assert!(Period::new(0, 1).is_ok());

    for bad in [0, -1, MAX_SERVICE_LEVEL_S + 1] {
        let e = ServiceLevelThreshold::new(bad).expect_err("threshold");
        assert_eq!(e.parameter(), Some("sl"));
        assert!(e.to_string().contains(&bad.to_string()), "{e}");
    }
    assert_eq!(sl(MAX_SERVICE_LEVEL_S).seconds(), MAX_SERVICE_LEVEL_S);

    let e = queue_report(&conn, &path, day(), Some("nope"), sl(20)).expect_err("queue");
    assert!(matches!(&e, ReportError::UnknownQueue { queue } if queue == "nope"));
    assert_eq!(e.parameter(), Some("queue"));
    let e = agent_report(&conn, &path, day(), Some("999")).expect_err("agent");
    assert!(matches!(&e, ReportError::UnknownAgent { agent } if agent == "999"));
    assert_eq!(e.parameter(), Some("agent"));

    assert_eq!(conn.total_changes(), before, "reports write nothing");
}

#[test]
fn a_broken_store_is_a_store_error_naming_the_file() {
    let (_dir, path, conn) = store();
    conn.execute_batch("DROP TABLE agent_state_log")
        .expect("drop");
    let e = agent_report(&conn, &path, day(), None).expect_err("no table");
    assert!(
        matches!(
            &e,
            ReportError::Sqlite {
                op: "sum agent state times",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.parameter(), None);
    assert!(e.to_string().contains("branchline.db"), "{e}");
}

#[test]
fn agent_owners_give_user_and_groups() {
    let (_dir, path, conn) = store();
    let owners = agent_owners(&conn, &path).expect("owners");
    assert_eq!(owners.len(), 4, "users with an agent ID");
    assert_eq!(owners["100"], (UserId(1), vec![GroupId(7), GroupId(8)]));
    assert_eq!(owners["200"], (UserId(2), vec![GroupId(8)]));
    assert_eq!(owners["400"], (UserId(4), vec![]));
}

#[test]
fn the_survey_average_counts_scored_calls_only() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    let answered: Vec<String> = conn
        .prepare(
            "SELECT call_id FROM cdrs WHERE queue = 'sales' AND agent_id IS NOT NULL
               AND started_at_ms >= ?1 AND started_at_ms < ?2
             ORDER BY call_id",
        )
        .expect("prepare")
        .query_map(params![day().from_ms, day().to_ms], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(answered.len(), 2);
    for (id, score) in answered.iter().zip([5, 2]) {
        conn.execute(
            "UPDATE cdrs SET survey_score = ?2 WHERE call_id = ?1",
            params![id, score],
        )
        .expect("score");
    }
    // The store refuses a score outside 1-5.
    assert!(conn
        .execute(
            "UPDATE cdrs SET survey_score = 6 WHERE call_id = ?1",
            [&answered[0]]
        )
        .is_err());
    let report =
        queue_report(&conn, &path, day(), None, ServiceLevelThreshold::default()).expect("report");
    assert_eq!(report[1].queue, "sales");
    assert_eq!(report[1].survey_avg, Some(3.5));
    assert_eq!(report[0].survey_avg, None, "no scores in 'old'");
}

#[test]
fn overflowed_calls_count_for_the_queue_they_left_and_not_as_abandoned() {
    let (_dir, path, conn) = store();
    day_of_calls(&conn);
    // c4 (a long abandon: the caller hung up) was really sent to voicemail after 40 s
    // and the caller hung up after the message; c5 (ended by the box) went out to a
    // number. A third call found the queue full: busy at once.
    for (id, target) in [("c4", "voicemail"), ("c5", "number")] {
        conn.execute(
            "UPDATE cdrs SET queue_overflow = ?2 WHERE call_id = ?1",
            params![id, target],
        )
        .expect("overflow");
    }
    let s = D + 9 * H;
    cdr(
        &conn,
        "c10",
        Some("sales"),
        None,
        s,
        None,
        s + 500,
        Some(0),
        "system",
    );
    conn.execute(
        "UPDATE cdrs SET queue_overflow = 'busy' WHERE call_id = 'c10'",
        [],
    )
    .expect("overflow");
    // The store refuses a target it does not know.
    assert!(conn
        .execute(
            "UPDATE cdrs SET queue_overflow = 'fax' WHERE call_id = 'c10'",
            []
        )
        .is_err());
    let report = queue_report(
        &conn,
        &path,
        day(),
        Some("sales"),
        ServiceLevelThreshold::default(),
    )
    .expect("report");
    let q = &report[0];
    assert_eq!(
        (q.offered, q.answered, q.abandoned, q.overflowed, q.other),
        (6, 2, 1, 3, 0),
        "{q:?}"
    );
    assert_eq!(
        (
            q.overflowed_to_voicemail,
            q.overflowed_to_number,
            q.overflowed_to_busy
        ),
        (1, 1, 1)
    );
    assert_eq!(q.offered, q.answered + q.abandoned + q.overflowed + q.other);
    // Overflowed calls count against the service level like the other unanswered
    // ones: 2 answered within 20 s / (6 offered - 1 short abandon).
    assert_eq!(q.service_level, Some(2.0 / 5.0));
    assert_eq!(q.abandoned_within_threshold, 1);
}
