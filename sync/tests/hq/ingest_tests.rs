//! Bulk ingest stores what a box sends once: the payload JSON only where no
//! projection holds all of it, the CDR's SIP Call-IDs, quality and queue fields in
//! `cdrs`, agent state changes in `agent_states`, and rows stored
//! under schema version 1 stay readable and keep deduplicating after the migration.

use std::path::Path;

use branchline_sync::hq::store::postgres::PostgresStore;
use branchline_sync::hq::store::sqlite::SqliteStore;
use branchline_sync::hq::store::BoxHealth;
use branchline_sync::hq::validate::validate_batch;
use branchline_sync::hq::HqStore;
use branchline_sync::wire::{RecordKind, UpBatch, UpRecord, PROTOCOL_VERSION};
use reqwest::Method;
use serde_json::json;

use super::harness::{cdr_record, Backend, Env, PgDb};
use crate::both_stores;

/// `(seq, payload)` HQ keeps for `box_id`, ascending seq.
async fn stored_payloads(env: &Env, box_id: &str) -> Vec<(i64, Option<String>)> {
    match env.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(env.dir.path().join("hq.sqlite")).unwrap();
            let mut s = conn
                .prepare("SELECT seq, payload FROM up_records WHERE box = ?1 ORDER BY seq")
                .unwrap();
            let rows = s
                .query_map([box_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows
        }
        Backend::Postgres => {
            let url = env.pg.as_ref().unwrap().url();
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(
                    "SELECT u.seq, u.payload FROM up_seqs u JOIN box_epochs e ON e.id = u.epoch_id
                     WHERE e.box = $1 ORDER BY u.seq",
                    &[&box_id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        }
    }
}

async fn payload_is_stored_once_and_sip_call_ids_are_projected(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let mut with_sip = cdr_record("b1", 1);
    with_sip.payload["caller_sip_call_id"] = json!("a84b4c76e66710@pc33.example.com");
    with_sip.payload["callee_sip_call_id"] = json!("trunk-77@sbc.example.net");
    // A field a newer firmware might add: no column holds it, so the JSON is kept.
    let mut newer = cdr_record("b1", 2);
    newer.payload["park_ms"] = json!(4);
    let survey = UpRecord {
        seq: 3,
        kind: RecordKind::Survey,
        key: "b1-call-1".into(),
        created_at_ms: 1_700_000_000_000,
        payload: json!({ "call_id": "b1-call-1", "score": 5 }),
    };
    let batch = b1.batch(vec![with_sip, newer, survey, cdr_record("b1", 4)]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 4);

    let stored = stored_payloads(&env, "b1").await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[0], (1, None), "a whole CDR lives in cdrs only");
    let kept: serde_json::Value = serde_json::from_str(stored[1].1.as_deref().unwrap()).unwrap();
    assert_eq!(kept["park_ms"], 4, "unknown fields are not lost");
    let kept: serde_json::Value = serde_json::from_str(stored[2].1.as_deref().unwrap()).unwrap();
    assert_eq!(
        kept["score"], 5,
        "kinds without a projection keep their JSON"
    );
    assert_eq!(stored[3], (4, None));

    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?box=b1", None)
        .await;
    let cdrs = page["cdrs"].as_array().unwrap();
    let call_ids: Vec<&str> = cdrs
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        call_ids,
        ["b1-call-1", "b1-call-2", "b1-call-4"],
        "ids ascend in seq order"
    );
    assert_eq!(
        cdrs[0]["caller_sip_call_id"],
        "a84b4c76e66710@pc33.example.com"
    );
    assert_eq!(cdrs[0]["callee_sip_call_id"], "trunk-77@sbc.example.net");
    assert_eq!(cdrs[1]["caller_sip_call_id"], serde_json::Value::Null);
    assert_eq!(
        cdrs[0]["started_at_ms"],
        batch.records[0].payload["started_at_ms"]
    );

    // Sent again: nothing new anywhere.
    let (status, again) = b1.post(&env.hq, &batch).await;
    assert_eq!((status, &again), (200, &ack));
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (4, 3));
    env.hq.stop().await;
}
both_stores!(payload_is_stored_once_and_sip_call_ids_are_projected);

/// CDR call quality (per SIP leg) and the transfer chain are projected into `cdrs`
/// (the payload JSON is not kept) and returned by the admin CDR query; a CDR without
/// them (older firmware) reads as null / empty; a CDR with an impossible MOS is
/// refused with the field named, and nothing of its batch is stored.
async fn cdr_quality_and_transfer_chain_are_projected(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let mut with_quality = cdr_record("b1", 1);
    with_quality.payload["caller_quality"] =
        json!({ "loss_percent": 2.5, "jitter_ms": 12.25, "mos": 4.1 });
    with_quality.payload["callee_quality"] =
        json!({ "loss_percent": 0.0, "jitter_ms": 0.5, "mos": 4.4 });
    with_quality.payload["transfer_chain"] = json!([
        { "call_id": "b1-call-0", "transferred_by": "201" },
        { "call_id": "b1-call-00", "transferred_by": "202" }
    ]);
    let batch = b1.batch(vec![with_quality, cdr_record("b1", 2)]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 2);
    let stored = stored_payloads(&env, "b1").await;
    assert_eq!(stored[0], (1, None), "the projection holds the whole CDR");

    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?box=b1", None)
        .await;
    let cdrs = page["cdrs"].as_array().unwrap();
    assert_eq!(cdrs.len(), 2, "{page}");
    assert_eq!(
        cdrs[0]["caller_quality"],
        json!({ "loss_percent": 2.5, "jitter_ms": 12.25, "mos": 4.1 })
    );
    assert_eq!(
        cdrs[0]["callee_quality"],
        json!({ "loss_percent": 0.0, "jitter_ms": 0.5, "mos": 4.4 })
    );
    assert_eq!(
        cdrs[0]["transfer_chain"],
        json!([
            { "call_id": "b1-call-0", "transferred_by": "201" },
            { "call_id": "b1-call-00", "transferred_by": "202" }
        ])
    );
    assert_eq!(cdrs[1]["caller_quality"], serde_json::Value::Null);
    assert_eq!(cdrs[1]["callee_quality"], serde_json::Value::Null);
    assert_eq!(cdrs[1]["transfer_chain"], json!([]));

    // Impossible values: refused, naming the field; nothing stored.
    let mut bad = cdr_record("b1", 3);
    bad.payload["callee_quality"] = json!({ "loss_percent": 1.0, "jitter_ms": 3.0, "mos": 9.0 });
    let (status, body) = b1.post(&env.hq, &b1.batch(vec![bad])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("callee_quality"), "{body}");
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (2, 2));
    env.hq.stop().await;
}
both_stores!(cdr_quality_and_transfer_chain_are_projected);

/// The call center's records: a queued call's queue, agent and wait are projected
/// into `cdrs` (the JSON is not kept) and filter the CDR query; agent state changes
/// land in `agent_states`, listed per agent and period; a batch sent again adds
/// nothing; an agent state HQ cannot use is refused naming the problem, and nothing
/// of its batch is stored.
async fn queue_cdrs_and_agent_states_are_projected(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let mut queued = cdr_record("b1", 1);
    queued.payload["queue"] = json!({ "queue": "sales", "agent": "101", "wait_ms": 4200 });
    queued.payload["survey_score"] = json!(4);
    queued.payload["hold_ms"] = json!(12_500);
    let mut abandoned = cdr_record("b1", 2);
    abandoned.payload["queue"] = json!({ "queue": "sales", "agent": null, "wait_ms": 30000 });
    abandoned.payload["blocked"] =
        json!({ "mode": "deny", "action": "reject", "pattern": "0900*" });
    abandoned.payload["queue_overflow"] = json!("voicemail");
    // A call the box's power cut interrupted (rebuilt from its live-call journal).
    let mut cut = cdr_record("b1", 3);
    cut.payload["interrupted"] = json!(true);
    cut.payload["hangup_side"] = json!("system");
    let state = |seq: i64, payload: serde_json::Value| UpRecord {
        seq,
        kind: RecordKind::AgentState,
        key: payload["agent_id"].as_str().unwrap().to_owned(),
        created_at_ms: payload["at_ms"].as_i64().unwrap(),
        payload,
    };
    let batch = b1.batch(vec![
        queued,
        abandoned,
        cut,
        state(
            4,
            json!({ "agent_id": "101", "state": "available", "extension": "201", "at_ms": 1000 }),
        ),
        state(
            5,
            json!({ "agent_id": "101", "state": "on_call", "extension": "201",
                    "call_id": "b1-call-1", "at_ms": 2000 }),
        ),
        state(
            6,
            json!({ "agent_id": "102", "state": "paused", "reason": "7", "at_ms": 2500 }),
        ),
        state(
            7,
            json!({ "agent_id": "101", "state": "wrap_up", "at_ms": 3000 }),
        ),
    ]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 7);
    let stored = stored_payloads(&env, "b1").await;
    assert!(
        stored.iter().all(|(_, payload)| payload.is_none()),
        "projections hold every record whole: {stored:?}"
    );

    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?box=b1&queue=sales", None)
        .await;
    let cdrs = page["cdrs"].as_array().unwrap();
    assert_eq!(cdrs.len(), 2, "{page}");
    assert_eq!(
        cdrs[0]["queue"],
        json!({ "queue": "sales", "agent": "101", "wait_ms": 4200 })
    );
    assert_eq!(
        cdrs[1]["queue"],
        json!({ "queue": "sales", "agent": null, "wait_ms": 30000 })
    );
    // The survey score and why caller screening blocked a call (HQ schema 6).
    assert_eq!(cdrs[0]["survey_score"], 4, "{page}");
    assert_eq!(cdrs[1]["survey_score"], serde_json::Value::Null, "{page}");
    assert_eq!(
        cdrs[1]["blocked"],
        json!({ "mode": "deny", "action": "reject", "pattern": "0900*" })
    );
    assert_eq!(cdrs[0]["blocked"], serde_json::Value::Null);
    // Hold time and where an overflowed call went (HQ schema 7).
    assert_eq!(cdrs[0]["hold_ms"], 12_500, "{page}");
    assert_eq!(cdrs[1]["hold_ms"], serde_json::Value::Null, "{page}");
    assert_eq!(cdrs[1]["queue_overflow"], "voicemail", "{page}");
    assert_eq!(cdrs[0]["queue_overflow"], serde_json::Value::Null, "{page}");
    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?box=b1", None)
        .await;
    assert_eq!(page["cdrs"][2]["queue"], serde_json::Value::Null, "{page}");
    // The interrupted call's mark (HQ schema 8); the others have none.
    assert_eq!(page["cdrs"][2]["interrupted"], true, "{page}");
    assert_eq!(page["cdrs"][0]["interrupted"], false, "{page}");

    let (status, page) = env
        .hq
        .admin(
            Method::GET,
            "/admin/v1/agent-states?site=s1&agent=101&from_ms=1500",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let states: Vec<(&str, &str, i64)> = page["agent_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(
                (s["box"].as_str(), s["site"].as_str()),
                (Some("b1"), Some("s1"))
            );
            (
                s["state"].as_str().unwrap(),
                s["call_id"].as_str().unwrap_or(""),
                s["at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("on_call", "b1-call-1", 2000), ("wrap_up", "", 3000)]
    );
    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/agent-states?agent=102", None)
        .await;
    assert_eq!(page["agent_states"][0]["reason"], "7", "{page}");
    // Paging: one row per page, `next` leads on, the last page has none.
    let (_, first) = env
        .hq
        .admin(Method::GET, "/admin/v1/agent-states?box=b1&limit=3", None)
        .await;
    assert_eq!(first["agent_states"].as_array().unwrap().len(), 3);
    let next = first["next"].as_i64().expect("next");
    let (_, rest) = env
        .hq
        .admin(
            Method::GET,
            &format!("/admin/v1/agent-states?box=b1&limit=3&after={next}"),
            None,
        )
        .await;
    assert_eq!(rest["agent_states"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["next"], serde_json::Value::Null);
    let (status, body) = env
        .hq
        .admin(Method::GET, "/admin/v1/agent-states?agent=101&mood=x", None)
        .await;
    assert_eq!(status, 400, "{body}");

    // Sent again: nothing new.
    let (status, again) = b1.post(&env.hq, &batch).await;
    assert_eq!((status, &again), (200, &ack));
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!(
        (counts.up_records, counts.cdrs, counts.agent_states),
        (7, 3, 4)
    );

    // A reason on a state that is not a pause: refused, naming it; nothing stored.
    let bad = state(
        8,
        json!({ "agent_id": "101", "state": "available", "reason": "7", "at_ms": 4000 }),
    );
    let (status, body) = b1
        .post(&env.hq, &b1.batch(vec![bad, cdr_record("b1", 9)]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("reason given with state available"),
        "{body}"
    );
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!(
        (counts.up_records, counts.cdrs, counts.agent_states),
        (7, 3, 4)
    );
    env.hq.stop().await;
}
both_stores!(queue_cdrs_and_agent_states_are_projected);

/// Rows as schema version 1 stored them: box `b1` of site `s1`, epoch `e1`, seqs
/// 1 and 2 (CDRs, payload in `up_records` and projected in `cdrs`), ack 2.
const V1_ROWS: &str = "
    INSERT INTO sites (id, name, created_at_ms) VALUES ('s1', 'Site one', 1);
    INSERT INTO boxes (id, site, created_at_ms) VALUES ('b1', 's1', 1);
    INSERT INTO box_epochs (box, epoch, acked_seq) VALUES ('b1', 'e1', 2);
    INSERT INTO cdrs (box, site, epoch, seq, call_id, direction, caller, caller_port, callee,
        callee_port, started_at_ms, answered_at_ms, ended_at_ms, disposition, hangup_side)
    VALUES ('b1', 's1', 'e1', 1, 'b1-call-1', 'inbound', '5551234', NULL, '201', 1,
            1700000060000, NULL, 1700000090000, 'no_answer', 'caller'),
           ('b1', 's1', 'e1', 2, 'b1-call-2', 'inbound', '5551234', NULL, '201', 1,
            1700000120000, 1700000125000, 1700000150000, 'answered', 'caller');";

fn v1_up_record_sql(seq: i64) -> String {
    let payload = cdr_record("b1", seq)
        .payload
        .to_string()
        .replace('\'', "''");
    format!(
        "INSERT INTO up_records (box, epoch, seq, kind, key, created_at_ms, received_at_ms, payload)
         VALUES ('b1', 'e1', {seq}, 'cdr', 'b1-call-{seq}', 1, 1, '{payload}');"
    )
}

async fn seed_v1_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql"))
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 1);",
    )
    .unwrap();
    conn.execute_batch(V1_ROWS).unwrap();
    conn.execute_batch(&(v1_up_record_sql(1) + &v1_up_record_sql(2)))
        .unwrap();
}

async fn seed_v1_postgres(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(include_str!("../../migrations/postgres/0001_init.sql"))
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 1);",
        )
        .await
        .unwrap();
    client.batch_execute(V1_ROWS).await.unwrap();
    client
        .batch_execute(&(v1_up_record_sql(1) + &v1_up_record_sql(2)))
        .await
        .unwrap();
}

async fn version_1_rows_survive_the_migration(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDb::create().await),
    };
    let store: Box<dyn HqStore> = match &pg {
        None => {
            let path = dir.path().join("hq.sqlite");
            seed_v1_sqlite(&path).await;
            Box::new(SqliteStore::open(path).await.unwrap())
        }
        Some(db) => {
            seed_v1_postgres(&db.url()).await;
            Box::new(PostgresStore::connect(&db.url(), 4).await.unwrap())
        }
    };
    let counts = store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (2, 2), "v1 rows kept");
    let box_rec = store.box_record("b1").await.unwrap().unwrap();
    // The box sends 1..=3 again (it never saw the ack of 1..=2): only 3 is new.
    let batch = UpBatch {
        version: PROTOCOL_VERSION,
        box_id: "b1".into(),
        epoch: "e1".into(),
        firmware_version: "1.2.3".into(),
        backlog: 0,
        oldest_pending_ms: None,
        records: (1..=3).map(|s| cdr_record("b1", s)).collect(),
    };
    let valid = validate_batch(batch, "b1").unwrap();
    let health = BoxHealth {
        seen_at_ms: 2,
        ..BoxHealth::default()
    };
    let outcome = store.ingest(&box_rec, &valid, &health).await.unwrap();
    assert_eq!((outcome.acked_seq, outcome.inserted), (3, 1));
    let counts = store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (3, 3), "no duplicates");
    let rows = store.cdrs(&Default::default()).await.unwrap();
    let call_ids: Vec<&str> = rows.iter().map(|r| r.call_id.as_str()).collect();
    assert_eq!(call_ids, ["b1-call-1", "b1-call-2", "b1-call-3"]);
    drop(store);
    drop(pg);
}
both_stores!(version_1_rows_survive_the_migration);

/// `(call_id, agent_id, digit, type_name, customer_hq_id, seq)` of site `s1`.
async fn dispositions(env: &Env) -> Vec<(String, String, i64, String, Option<String>, i64)> {
    let sql = "SELECT call_id, agent_id, digit, type_name, customer_hq_id, seq
               FROM dispositions WHERE site = 's1' ORDER BY call_id";
    match env.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(env.dir.path().join("hq.sqlite")).unwrap();
            let mut s = conn.prepare(sql).unwrap();
            let rows = s
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows
        }
        Backend::Postgres => {
            let url = env.pg.as_ref().unwrap().url();
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    let digit: i32 = r.get(2);
                    (
                        r.get(0),
                        r.get(1),
                        i64::from(digit),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                    )
                })
                .collect()
        }
    }
}

/// Dispositions keyed by agents land in `dispositions`, one row per call: keying
/// again (a later record) replaces it, a batch sent again changes nothing, and a
/// record HQ cannot use (digit 12) is refused naming it, with nothing of its batch
/// stored.
async fn dispositions_are_projected_latest_wins(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let disposition = |seq: i64, call: &str, digit: u8, at_ms: i64| UpRecord {
        seq,
        kind: RecordKind::Disposition,
        key: call.to_owned(),
        created_at_ms: at_ms,
        payload: json!({ "call_id": call, "agent_id": "100", "digit": digit,
                         "type_name": format!("type {digit}"), "at_ms": at_ms }),
    };
    let mut with_contact = disposition(3, "b1-call-2", 4, 3000);
    with_contact.payload["customer_hq_id"] = json!("c-77");
    let batch = b1.batch(vec![
        cdr_record("b1", 1),
        disposition(2, "b1-call-1", 3, 2000),
        with_contact,
        disposition(4, "b1-call-1", 5, 4000),
    ]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 4);
    let want = vec![
        (
            "b1-call-1".to_owned(),
            "100".to_owned(),
            5,
            "type 5".to_owned(),
            None,
            4,
        ),
        (
            "b1-call-2".to_owned(),
            "100".to_owned(),
            4,
            "type 4".to_owned(),
            Some("c-77".to_owned()),
            3,
        ),
    ];
    assert_eq!(dispositions(&env).await, want);
    let stored = stored_payloads(&env, "b1").await;
    assert!(stored.iter().all(|(_, p)| p.is_none()), "{stored:?}");
    // Sent again: nothing changes.
    let (status, again) = b1.post(&env.hq, &batch).await;
    assert_eq!((status, &again), (200, &ack));
    assert_eq!(dispositions(&env).await, want);
    // An older record arriving later (a second box of the site, clock behind) loses.
    let b2 = env.new_box("b2", "s1").await;
    let (status, _) = b2
        .post(
            &env.hq,
            &b2.batch(vec![disposition(1, "b1-call-1", 1, 1000)]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(dispositions(&env).await, want);
    // A digit that is not one: refused, nothing of the batch stored.
    let (status, body) = b1
        .post(
            &env.hq,
            &b1.batch(vec![
                disposition(5, "b1-call-3", 12, 5000),
                cdr_record("b1", 6),
            ]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("digit 12 is not 0-9"), "{body}");
    assert_eq!(dispositions(&env).await, want);
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (4, 1));
    env.hq.stop().await;
}
both_stores!(dispositions_are_projected_latest_wins);
