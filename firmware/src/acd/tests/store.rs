//! Loading the ACD configuration from migration 0007's tables, on a real migrated store.

use std::path::PathBuf;

use rusqlite::Connection;

use super::super::store::{append_state_log, load_config, record_disposition};
use super::*;
use crate::store::Store;

fn store() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    drop(Store::open(&path).expect("open store"));
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    conn.execute_batch(
        "INSERT INTO users (id, username, display_name, password_hash, agent_id, enabled,
                            created_at_ms, updated_at_ms)
         VALUES (1, 'ana', 'Ana', 'x', '101', 1, 0, 0),
                (2, 'bo', 'Bo', 'x', '102', 1, 0, 0),
                (3, 'cy', 'Cy', 'x', '103', 0, 0, 0),
                (4, 'di', 'Di', 'x', NULL, 1, 0, 0);
         INSERT INTO agent_skills (user_id, skill, level) VALUES (1, 'french', 7), (2, 'french', 2);
         INSERT INTO queues (id, name, number, strategy, ring_timeout_ms, wrap_up_ms, max_wait_ms,
                             max_len, skill_fallback_ms, announce_every_ms, music_on_hold, moh_prompt)
         VALUES (10, 'sales', '7001', 'skill_based', 12000, 5000, 300000, 20, 30000, 45000,
                 'prompt', 'jazz'),
                (11, 'backup', '7002', 'ring_all', 15000, 0, NULL, NULL, NULL, NULL, 'tone', NULL);
         INSERT INTO queue_members (queue_id, user_id, penalty, position)
         VALUES (10, 2, 0, 1), (10, 1, 3, 0), (10, 3, 0, 2), (11, 2, 0, 0);
         INSERT INTO queue_overflow (queue_id, event, kind, target)
         VALUES (10, 'full', 'queue', 'backup'), (10, 'max_wait', 'voicemail', '7001'),
                (10, 'no_agents', 'number', '+4930123');
         INSERT INTO queue_vip (queue_id, pattern) VALUES (10, '+4930*');",
    )
    .expect("rows");
    (dir, path, conn)
}

#[test]
fn recording_policies_load_with_queues_and_agents_and_bad_ones_are_refused() {
    use crate::config::RecordingPolicy;
    let (_dir, path, conn) = store();
    let config = load_config(&conn, &path).expect("load");
    assert!(config
        .queues()
        .iter()
        .all(|q| q.recording == RecordingPolicy::Never));
    assert!(config
        .agents()
        .iter()
        .all(|a| a.recording == RecordingPolicy::Never));
    conn.execute_batch(
        "UPDATE queues SET recording = 'always' WHERE name = 'sales';
         UPDATE users SET recording = 'on_demand' WHERE id = 2;",
    )
    .expect("update");
    let config = load_config(&conn, &path).expect("load");
    assert_eq!(config.queues()[0].recording, RecordingPolicy::Always);
    assert_eq!(config.queues()[1].recording, RecordingPolicy::Never);
    assert_eq!(config.agents()[0].recording, RecordingPolicy::Never);
    assert_eq!(config.agents()[1].recording, RecordingPolicy::OnDemand);
    // The schema refuses a name that is no policy.
    for sql in [
        "UPDATE queues SET recording = 'sometimes' WHERE id = 10",
        "UPDATE users SET recording = '' WHERE id = 1",
    ] {
        assert!(conn.execute(sql, []).is_err(), "{sql}");
    }
}

#[test]
fn a_queue_config_loads_from_the_store() {
    let (_dir, path, conn) = store();
    let config = load_config(&conn, &path).expect("load");
    let ids: Vec<&str> = config.agents().iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["101", "102"], "disabled user 3 is no agent");
    assert_eq!(
        config.agents()[0]
            .skills
            .get(&"french".parse::<Skill>().expect("skill")),
        Some(&SkillLevel::try_from(7).expect("level"))
    );
    let sales = &config.queues()[0];
    assert_eq!(sales.name.as_str(), "sales");
    assert_eq!(sales.number.as_str(), "7001");
    assert_eq!(sales.strategy, Strategy::SkillBased);
    assert_eq!(sales.ring_timeout, Duration::from_secs(12));
    assert_eq!(sales.wrap_up, Duration::from_secs(5));
    assert_eq!(sales.max_wait, Some(Duration::from_secs(300)));
    assert_eq!(sales.max_len, Some(20));
    assert_eq!(sales.skill_fallback, Some(Duration::from_secs(30)));
    assert_eq!(sales.announce_every, Some(Duration::from_secs(45)));
    assert_eq!(sales.music_on_hold, MusicOnHold::Prompt("jazz".to_owned()));
    assert_eq!(sales.on_full, OverflowTarget::Queue(qname("backup")));
    assert_eq!(
        sales.on_max_wait,
        OverflowTarget::Voicemail("7001".parse().expect("ext"))
    );
    assert_eq!(
        sales.on_no_agents,
        Some(OverflowTarget::Number("+4930123".parse().expect("number")))
    );
    assert!(sales.vip[0].matches("+4930555"));
    // No numbering plan adopted yet: numbers only as written.
    assert!(!sales.vip[0].matches("030555"));
    // With the site's plan (a German site), every form of the number.
    let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
    conn.execute(
        "INSERT INTO site_numbering VALUES (1, ?1, ?2, ?3, 0)",
        rusqlite::params![de.country_code, de.international_prefix, de.national_prefix],
    )
    .expect("plan");
    let config = load_config(&conn, &path).expect("load");
    let vip = &config.queues()[0].vip[0];
    assert!(vip.matches("030555123"), "national form");
    assert!(vip.matches("004930555123"), "international-prefix form");
    assert!(!vip.matches("040555123"), "another city");
    assert_eq!(vip.to_string(), "+4930*", "shown as written");
    // Position order; the disabled member is left out.
    assert_eq!(
        sales.members,
        vec![
            Member {
                agent: "101".parse().expect("id"),
                penalty: 3
            },
            Member {
                agent: "102".parse().expect("id"),
                penalty: 0
            }
        ]
    );
    let backup = &config.queues()[1];
    assert_eq!(backup.on_full, OverflowTarget::Busy);
    assert_eq!(backup.on_no_agents, None);
    assert_eq!(backup.music_on_hold, MusicOnHold::Tone);
    // And the core runs on it.
    let mut acd = Acd::new(&config, Instant::now());
    acd.handle(
        Instant::now(),
        Input::AgentLogin {
            agent: "101".parse().expect("id"),
            extension: "201".to_owned(),
            from: LoginFrom::Phone,
        },
    )
    .expect("login");
}

fn load_err(sql: &str) -> String {
    let (_dir, path, conn) = store();
    conn.execute_batch(sql).expect("bad row accepted by SQLite");
    let before = load_config(&conn, &path);
    before.expect_err("bad row refused").to_string()
}

#[test]
fn bad_rows_are_refused_with_table_row_and_column() {
    let err = load_err("INSERT INTO queue_overflow VALUES (11, 'full', 'queue', 'nowhere');");
    assert!(
        err.contains("queue \"backup\": on_full: no queue named nowhere"),
        "{err}"
    );
    let err = load_err("INSERT INTO queue_overflow VALUES (11, 'full', 'voicemail', '12a');");
    assert!(
        err.contains("queue_overflow row 11/full: target: extension number \"12a\""),
        "{err}"
    );
    let err = load_err("INSERT INTO queue_overflow VALUES (11, 'max_wait', 'number', '+');");
    assert!(
        err.contains("queue_overflow row 11/max_wait: target"),
        "{err}"
    );
    let err = load_err("INSERT INTO queue_vip VALUES (11, '12*3');");
    assert!(err.contains("queue_vip row 11/12*3: pattern"), "{err}");
    let err = load_err("INSERT INTO queue_members (queue_id, user_id) VALUES (11, 4);");
    assert!(
        err.contains("queue_members row 11/4: user_id: user 4 has no agent ID"),
        "{err}"
    );
    let err = load_err("UPDATE queues SET moh_prompt = '' WHERE id = 10;");
    assert!(
        err.contains("queues row 10 (sales): music_on_hold"),
        "{err}"
    );
    assert!(err.contains("branchline.db"), "names the database: {err}");
}

#[test]
fn constraints_keep_impossible_rows_out() {
    let (_dir, _path, conn) = store();
    for bad in [
        "INSERT INTO queues (name, number, strategy) VALUES ('x', '7009', 'random')",
        "INSERT INTO queues (name, number, strategy) VALUES ('Bad Name', '7009', 'ring_all')",
        "INSERT INTO queues (name, number, strategy, ring_timeout_ms) VALUES ('x', '7009', 'ring_all', 0)",
        "INSERT INTO queues (name, number, strategy, music_on_hold) VALUES ('x', '7009', 'ring_all', 'prompt')",
        "INSERT INTO agent_skills VALUES (1, 'german', 11)",
        "INSERT INTO queue_members (queue_id, user_id, penalty) VALUES (11, 1, 101)",
        "INSERT INTO queue_overflow VALUES (11, 'full', 'busy', 'x')",
        "INSERT INTO agent_state_log (agent_id, state, at_ms) VALUES ('101', 'lunch', 0)",
    ] {
        assert!(conn.execute(bad, []).is_err(), "{bad}");
    }
}

#[test]
fn state_changes_append_to_the_history() {
    let (_dir, path, conn) = store();
    let a: AgentId = "101".parse().expect("id");
    // A call id given with a state that has no call is not sent.
    append_state_log(
        &conn,
        &path,
        &a,
        &AgentState::Available,
        Some("201"),
        Some("x-1"),
        1000,
    )
    .expect("log");
    append_state_log(
        &conn,
        &path,
        &a,
        &AgentState::Paused(Some("3".parse().expect("reason"))),
        Some("201"),
        None,
        2000,
    )
    .expect("log");
    append_state_log(
        &conn,
        &path,
        &a,
        &AgentState::OnCall(CallId(77)),
        Some("201"),
        Some("1f-77"),
        3000,
    )
    .expect("log");
    let rows: Vec<(String, Option<String>, Option<i64>, i64)> = conn
        .prepare("SELECT state, reason, call_id, at_ms FROM agent_state_log ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        rows,
        vec![
            ("available".to_owned(), None, None, 1000),
            ("paused".to_owned(), Some("3".to_owned()), None, 2000),
            ("on_call".to_owned(), None, Some(77), 3000),
        ]
    );
    // Each change is in the outbox for HQ, as the wire record HQ validates.
    let outbox: Vec<(String, String, String, i64)> = conn
        .prepare("SELECT kind, record_key, payload, created_at_ms FROM outbox ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let payloads: Vec<serde_json::Value> = outbox
        .iter()
        .map(|(kind, key, payload, _)| {
            assert_eq!((kind.as_str(), key.as_str()), ("agent_state", "101"));
            serde_json::from_str(payload).expect("json")
        })
        .collect();
    assert_eq!(
        payloads,
        vec![
            serde_json::json!({"agent_id": "101", "state": "available", "extension": "201",
                               "at_ms": 1000}),
            serde_json::json!({"agent_id": "101", "state": "paused", "reason": "3",
                               "extension": "201", "at_ms": 2000}),
            serde_json::json!({"agent_id": "101", "state": "on_call", "extension": "201",
                               "call_id": "1f-77", "at_ms": 3000}),
        ]
    );
    assert_eq!(
        outbox.iter().map(|o| o.3).collect::<Vec<_>>(),
        [1000, 2000, 3000]
    );
}

/// A `cdr_dispositions` row: `(call_id, agent, digit, type, customer)`.
type DispositionRow = (String, String, i64, String, Option<i64>);

/// The `cdr_dispositions` rows and the disposition outbox payloads.
fn disposition_rows(conn: &Connection) -> (Vec<DispositionRow>, Vec<serde_json::Value>) {
    let mut s = conn
        .prepare("SELECT call_id, agent_id, digit, type_name, customer_id FROM cdr_dispositions ORDER BY call_id")
        .expect("prepare");
    let rows = s
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    let mut s = conn
        .prepare("SELECT payload FROM outbox WHERE kind = 'disposition' ORDER BY seq")
        .expect("prepare");
    let outbox = s
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|p| serde_json::from_str(&p.expect("row")).expect("json"))
        .collect();
    (rows, outbox)
}

#[test]
fn a_disposition_tags_the_call_and_the_callers_customer_and_goes_to_hq() {
    let (_dir, path, conn) = store();
    conn.execute_batch(
        "INSERT INTO customer_types (digit, name, updated_at_ms) VALUES (3, 'interested', 0),
                                                                       (5, 'not now', 0);
         INSERT INTO customers (id, name, source, hq_id, revision, created_at_ms, updated_at_ms)
         VALUES (7, 'ACME', 'hq', 'c-77', 4, 0, 0);
         INSERT INTO customer_numbers (number, customer_id, position) VALUES ('+4930777', 7, 0);",
    )
    .expect("rows");
    let a: AgentId = "101".parse().expect("id");
    // No type for 8: nothing changes.
    assert_eq!(
        record_disposition(&conn, &path, &a, "c-1", "+4930777", 8, 1000).expect("stored"),
        None
    );
    assert_eq!(disposition_rows(&conn), (vec![], vec![]));
    // The caller is customer 7: its type becomes 3, and HQ hears of it with its key.
    let stored = record_disposition(&conn, &path, &a, "c-1", "+49 30 777", 3, 2000)
        .expect("stored")
        .expect("a type");
    assert_eq!(
        (stored.type_name.as_str(), stored.customer_id),
        ("interested", Some(7))
    );
    let digit: i64 = conn
        .query_row("SELECT type_digit FROM customers WHERE id = 7", [], |r| {
            r.get(0)
        })
        .expect("customer");
    assert_eq!(digit, 3);
    // Keyed again: replaces the call's tag; an unknown caller tags only the call.
    record_disposition(&conn, &path, &a, "c-1", "+4930777", 5, 3000).expect("stored");
    record_disposition(&conn, &path, &a, "c-2", "5550100", 3, 4000).expect("stored");
    let (rows, outbox) = disposition_rows(&conn);
    assert_eq!(
        rows,
        vec![
            ("c-1".into(), "101".into(), 5, "not now".into(), Some(7)),
            ("c-2".into(), "101".into(), 3, "interested".into(), None),
        ]
    );
    assert_eq!(outbox.len(), 3);
    assert_eq!(
        outbox[0],
        serde_json::json!({ "call_id": "c-1", "agent_id": "101", "digit": 3,
                            "type_name": "interested", "customer_hq_id": "c-77",
                            "at_ms": 2000 })
    );
    assert_eq!(outbox[2]["customer_hq_id"], serde_json::Value::Null);
}
