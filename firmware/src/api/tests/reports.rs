//! The report routes: who may read them, and bad parameters named in a 400.

use rusqlite::params;

use super::*;

/// A day of the test clock: `[T0, T0 + DAY)`.
const DAY: i64 = 86_400_000;

/// Users: root (admin), fin (finance), sam (supervisor, group admin of a team with
/// anna), anna and bert (agents 100 and 200, role agent); a queue "sales" with one
/// answered call (anna, waited 12 s, talked 30 s) and one abandoned; state history.
async fn report_env() -> (Env, Client) {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    env.user("fin", &["finance"], None).await;
    let sam = env.user("sam", &["supervisor"], None).await;
    let mut agent_ids = Vec::new();
    for (name, id) in [("anna", "100"), ("bert", "200")] {
        let u = env
            .accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    agent_id: Some(id.to_owned()),
                    enabled: true,
                    roles: vec!["agent".to_owned()],
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("agent user");
        agent_ids.push(u.id);
    }
    let admin = env.login("root").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "team", "description": "",
                    "members": [{ "user_id": sam.id, "is_group_admin": true },
                                { "user_id": agent_ids[0], "is_group_admin": false }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let db = rusqlite::Connection::open(env._dir.path().join("branchline.db")).expect("db");
    db.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy");
    db.execute(
        "INSERT INTO queues (name, number, strategy) VALUES ('sales', '7001', 'ring_all')",
        [],
    )
    .expect("queue");
    let s = T0 + 600_000;
    for (id, agent, answered, wait, side) in [
        ("q1", Some("100"), Some(s + 12_000), 12_000, "caller"),
        ("q2", None, None, 40_000, "caller"),
    ] {
        let ended = answered.map_or(s + wait, |a| a + 30_000);
        db.execute(
            "INSERT INTO cdrs (call_id, direction, caller, callee, started_at_ms,
                               answered_at_ms, ended_at_ms, duration_ms, billable_ms,
                               disposition, hangup_side, queue, agent_id, queue_wait_ms)
             VALUES (?1, 'internal', '103', '7001', ?2, ?3, ?4, 0, 0, 'answered', ?5,
                     'sales', ?6, ?7)",
            params![id, s, answered, ended, side, agent, wait],
        )
        .expect("cdr");
    }
    for (agent, state, at) in [
        ("100", "available", T0),
        ("100", "on_call", s + 12_000),
        ("100", "available", s + 42_000),
        ("200", "available", T0 + 1_000),
    ] {
        db.execute(
            "INSERT INTO agent_state_log (agent_id, state, at_ms) VALUES (?1, ?2, ?3)",
            params![agent, state, at],
        )
        .expect("state");
    }
    (env, admin)
}

fn day(path: &str) -> String {
    format!("{path}?from={T0}&to={}", T0 + DAY)
}

#[tokio::test]
async fn the_queue_report_needs_site_scope() {
    let (env, admin) = report_env().await;
    let r = env.get(&day("/api/v1/reports/queues"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (v["from_ms"].as_i64(), v["to_ms"].as_i64()),
        (Some(T0), Some(T0 + DAY))
    );
    assert_eq!(v["service_level_threshold_s"], 20);
    let sales = &v["queues"][0];
    assert_eq!(sales["queue"], "sales");
    assert_eq!(
        (
            &sales["offered"],
            &sales["answered"],
            &sales["abandoned"],
            &sales["other"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(sales["avg_wait_ms"], 12_000);
    assert_eq!(sales["avg_talk_ms"], 30_000);
    // 1 answered within 20 s / (2 offered - 0 abandoned within 20 s).
    assert_eq!(sales["service_level"], 0.5);
    assert_eq!(sales["survey_avg"], Value::Null, "no survey was keyed");
    assert_eq!(sales["calls_per_hour"].as_array().map(Vec::len), Some(24));
    // A 60 s threshold makes the 40 s abandon a short one: 1 / (2 - 1).
    let r = env
        .get(
            &format!("{}&sl=60&queue=sales", day("/api/v1/reports/queues")),
            &admin,
        )
        .await;
    assert_eq!(r.json()["queues"][0]["service_level"], 1.0, "{}", r.text);

    let fin = env.login("fin").await;
    assert_eq!(
        env.get(&day("/api/v1/reports/queues"), &fin).await.status,
        StatusCode::OK
    );
    // The supervisor's reports grant is group-scoped: not enough for queues.
    let sam = env.login("sam").await;
    let r = env.get(&day("/api/v1/reports/queues"), &sam).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let anna = env.login("anna").await;
    let r = env.get(&day("/api/v1/reports/queues"), &anna).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let denied: i64 = env
        .accounts
        .reader()
        .expect("reader")
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE result = 'denied' AND resource = 'reports'",
            [],
            |r| r.get(0),
        )
        .expect("audit");
    assert_eq!(denied, 2, "both denials audited");
    let r = env
        .send(
            Method::GET,
            &day("/api/v1/reports/queues"),
            None,
            false,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_agent_report_follows_the_callers_scope() {
    let (env, admin) = report_env().await;
    let agents = |v: &Value| -> Vec<String> {
        v["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| a["agent"].as_str().expect("agent").to_owned())
            .collect()
    };
    let r = env.get(&day("/api/v1/reports/agents"), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(agents(&v), ["100", "200"]);
    let anna = &v["agents"][0];
    assert_eq!(
        (&anna["answered"], &anna["talk_ms"]),
        (&json!(1), &json!(30_000))
    );
    assert_eq!(anna["state_ms"]["on_call"], 30_000);
    assert_eq!(anna["login_ms"], DAY);

    // The supervisor administers anna's group, not bert's.
    let sam = env.login("sam").await;
    let r = env.get(&day("/api/v1/reports/agents"), &sam).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(agents(&r.json()), ["100"]);
    let r = env
        .get(
            &format!("{}&agent=100", day("/api/v1/reports/agents")),
            &sam,
        )
        .await;
    assert_eq!(agents(&r.json()), ["100"], "{}", r.text);
    let r = env
        .get(
            &format!("{}&agent=200", day("/api/v1/reports/agents")),
            &sam,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Agents have no reports grant at all.
    let bert = env.login("bert").await;
    let r = env.get(&day("/api/v1/reports/agents"), &bert).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn bad_report_parameters_are_named() {
    let (env, admin) = report_env().await;
    let to = T0 + DAY;
    let long = T0 + 367 * DAY;
    for (uri, field) in [
        ("/api/v1/reports/queues".to_owned(), "from"),
        (format!("/api/v1/reports/queues?from={T0}"), "to"),
        (
            format!("/api/v1/reports/queues?from=yesterday&to={to}"),
            "from",
        ),
        (format!("/api/v1/reports/queues?from={T0}&to=1.5"), "to"),
        (format!("/api/v1/reports/queues?from={to}&to={T0}"), "to"),
        (format!("/api/v1/reports/queues?from=-1&to={T0}"), "from"),
        (format!("/api/v1/reports/queues?from={T0}&to={long}"), "to"),
        (
            format!("/api/v1/reports/queues?from={T0}&to={to}&sl=0"),
            "sl",
        ),
        (
            format!("/api/v1/reports/queues?from={T0}&to={to}&sl=3601"),
            "sl",
        ),
        (
            format!("/api/v1/reports/queues?from={T0}&to={to}&queue=nope"),
            "queue",
        ),
        (
            format!("/api/v1/reports/queues?from={T0}&to={to}&queue="),
            "queue",
        ),
        (
            format!("/api/v1/reports/queues?from={T0}&to={to}&agent=100"),
            "agent",
        ),
        (
            format!("/api/v1/reports/agents?from={T0}&to={to}&agent=999"),
            "agent",
        ),
        (
            format!("/api/v1/reports/agents?from={T0}&to={to}&sl=20"),
            "sl",
        ),
        (format!("/api/v1/reports/agents?to={to}"), "from"),
    ] {
        let r = env.get(&uri, &admin).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.json()["problems"][0]["field"], field, "{uri}: {}", r.text);
    }
    let r = env
        .get(
            &format!("/api/v1/reports/queues?from={T0}&to={long}"),
            &admin,
        )
        .await;
    assert!(r.text.contains("367 days"), "{}", r.text);
}
