//! Store tests against real SQLite files in temp dirs, with the real migrations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::cdr::{Cdr, Direction, Disposition, HangupSide};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("branchline.db")
}

fn fixed_clock() -> i64 {
    1_700_000_000_000
}

fn cdr(call_id: &str, started_at_ms: i64) -> Cdr {
    Cdr {
        call_id: call_id.to_owned(),
        direction: Direction::Inbound,
        caller: "5551234".to_owned(),
        caller_port: Some(5),
        callee: "101".to_owned(),
        callee_port: Some(1),
        started_at_ms,
        answered_at_ms: Some(started_at_ms + 4_000),
        ended_at_ms: started_at_ms + 64_000,
        disposition: Disposition::Answered,
        hangup_side: HangupSide::Callee,
        // Round-trips the SIP columns of migration 0004.
        caller_sip_call_id: Some(format!("{call_id}@pc33.example.com")),
        callee_sip_call_id: None,
        caller_quality: None,
        callee_quality: None,
        transfer_chain: Vec::new(),
        queue: None,
        blocked: None,
        survey_score: None,
        hold_ms: None,
        queue_overflow: None,
        interrupted: false,
        hangup_cause: None,
    }
}

fn count(path: &Path, table: &str) -> i64 {
    let conn = Connection::open(path).expect("open");
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

fn ext(number: &str, name: &str, port: Option<u8>, call_waiting: bool) -> ExtensionRow {
    ExtensionRow {
        number: number.to_owned(),
        name: name.to_owned(),
        port,
        call_waiting,
    }
}

#[test]
fn migrations_apply_and_reopen_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Store::open(&path).expect("fresh open creates dir and schema");
    assert_eq!(
        user_version(&store.conn, &path).expect("version"),
        SCHEMA_VERSION
    );
    let tables: Vec<String> = store
        .conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    assert_eq!(
        tables,
        [
            "agent_skills",
            "agent_state_log",
            "audit_head",
            "audit_log",
            "blacklist",
            "blacklist_settings",
            "box_state",
            "call_notes",
            "campaign_settings",
            "campaigns",
            "cdr_dispositions",
            "cdrs",
            "customer_field_values",
            "customer_fields",
            "customer_numbers",
            "customer_types",
            "customers",
            "extensions",
            "group_members",
            "groups",
            "hq_rows",
            "lead_attempts",
            "lead_lists",
            "lead_numbers",
            "leads",
            "live_calls",
            "outbox",
            "ports",
            "provisioned_settings",
            "provisioning_bundles",
            "provisioning_used_tokens",
            "queue_members",
            "queue_overflow",
            "queue_vip",
            "queues",
            "recordings",
            "role_permissions",
            "roles",
            "service_records",
            "site_numbering",
            "site_time_zone",
            "sync_state",
            "user_roles",
            "users",
            "voicemail_boxes",
            "voicemail_messages"
        ]
    );
    drop(store);

    let store = Store::open(&path).expect("re-open");
    assert_eq!(
        user_version(&store.conn, &path).expect("version"),
        SCHEMA_VERSION
    );
    drop(store);
    Store::open(&path).expect("third open");
}

#[test]
fn wal_full_and_foreign_keys_are_in_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Store::open(&path).expect("open");
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    assert_eq!(store.pragma_synchronous().expect("synchronous"), 2, "FULL");
    let fk: i64 = store
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .expect("foreign_keys");
    assert_eq!(fk, 1);
    let busy: i64 = store
        .conn
        .pragma_query_value(None, "busy_timeout", |r| r.get(0))
        .expect("busy_timeout");
    assert_eq!(busy, 5000);
}

#[test]
fn schema_too_new_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(Store::open(&path).expect("open"));
    Connection::open(&path)
        .and_then(|c| c.pragma_update(None, "user_version", 999))
        .expect("set user_version");

    let e = Store::open(&path).expect_err("too new");
    assert!(
        matches!(
            e,
            Error::StoreSchemaTooNew {
                found: 999,
                known: SCHEMA_VERSION,
                ..
            }
        ),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(message.contains("branchline.db"), "{message}");
    assert!(
        message.contains(&format!(
            "999 is newer than this firmware knows ({SCHEMA_VERSION})"
        )),
        "{message}"
    );
    assert!(matches!(
        Store::reader(&path),
        Err(Error::StoreSchemaTooNew { found: 999, .. })
    ));
    // Nothing was touched.
    let v: i64 = Connection::open(&path)
        .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
        .expect("read");
    assert_eq!(v, 999);
}

#[test]
fn reader_refuses_a_missing_or_unmigrated_db() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Store::reader(&dir.path().join("none.db")),
        Err(Error::Sqlite { .. })
    ));
    let path = dir.path().join("empty.db");
    Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .expect("create");
    assert!(matches!(
        Store::reader(&path),
        Err(Error::StoreNotMigrated { found: 0, .. })
    ));
}

#[tokio::test]
async fn insert_cdr_writes_cdr_and_outbox_in_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Store::open(&path).expect("open").with_clock(fixed_clock);
    let (writer, thread) = store.try_spawn_writer().expect("spawn");
    let reader = Store::reader(&path).expect("reader");

    let mut first = cdr("call-1", 1_000);
    // Round-trips the hold and overflow columns of migration 0019.
    first.hold_ms = Some(12_000);
    let mut second = cdr("call-2", 2_000);
    second.queue = Some(crate::cdr::CdrQueue {
        queue: "sales".to_owned(),
        agent: None,
        wait_ms: 60_000,
    });
    second.queue_overflow = Some(crate::cdr::CdrQueueOverflow::Voicemail);
    second.direction = Direction::Internal;
    second.answered_at_ms = None;
    second.disposition = Disposition::NoAnswer;
    second.hangup_side = HangupSide::Caller;
    second.caller_port = None;

    let seq1 = writer.insert_cdr(first.clone()).await.expect("insert 1");
    let seq2 = writer.insert_cdr(second.clone()).await.expect("insert 2");
    assert!(seq2 > seq1, "{seq1} then {seq2}");

    assert_eq!(reader.cdr("call-1").expect("read"), Some(first.clone()));
    assert_eq!(reader.cdr("nope").expect("read"), None);
    assert_eq!(
        reader.recent_cdrs(10).expect("recent"),
        [second.clone(), first.clone()],
        "newest first"
    );
    assert_eq!(reader.recent_cdrs(1).expect("recent").len(), 1);

    let outbox = reader.outbox(0, 10).expect("outbox");
    assert_eq!(outbox.len(), 2);
    for (row, (seq, cdr)) in outbox.iter().zip([(seq1, &first), (seq2, &second)]) {
        assert_eq!(row.seq, seq);
        assert_eq!(row.kind, "cdr");
        assert_eq!(row.record_key, cdr.call_id);
        assert_eq!(row.created_at_ms, fixed_clock());
        let payload: Cdr = serde_json::from_value(row.payload.clone()).expect("payload is a Cdr");
        assert_eq!(&payload, cdr);
    }
    assert_eq!(reader.outbox(seq1, 10).expect("after").len(), 1);

    let (duration, billable): (i64, i64) = Connection::open(&path)
        .and_then(|c| {
            c.query_row(
                "SELECT duration_ms, billable_ms FROM cdrs WHERE call_id = 'call-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .expect("row");
    assert_eq!(
        (duration, billable),
        (first.duration_ms(), first.billable_ms())
    );

    writer.close().await;
    thread.join().expect("writer thread");
}

#[tokio::test]
async fn cdr_quality_and_transfer_chain_round_trip() {
    use crate::cdr::{CdrLegQuality, CdrTransferHop};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    let mut full = cdr("q-1", 1_000);
    full.caller_quality = Some(CdrLegQuality {
        loss_percent: 3.125,
        jitter_ms: 18.5,
        mos: 3.9,
    });
    full.callee_quality = Some(CdrLegQuality {
        loss_percent: 0.0,
        jitter_ms: 0.25,
        mos: 4.41,
    });
    full.transfer_chain = vec![
        CdrTransferHop {
            call_id: "q-0".into(),
            transferred_by: "201".into(),
        },
        CdrTransferHop {
            call_id: "q-00".into(),
            transferred_by: "102".into(),
        },
    ];
    writer.insert_cdr(full.clone()).await.expect("insert");
    let reader = Store::reader(&path).expect("reader");
    assert_eq!(reader.cdr("q-1").expect("read"), Some(full.clone()));
    // The outbox payload (what HQ gets) carries the same values.
    let payload: String = Connection::open(&path)
        .and_then(|c| {
            c.query_row(
                "SELECT payload FROM outbox WHERE record_key = 'q-1'",
                [],
                |r| r.get(0),
            )
        })
        .expect("payload");
    let sent: Cdr = serde_json::from_str(&payload).expect("payload parses");
    assert_eq!(sent, full);

    // Without them: NULL columns, read back as absent.
    writer.insert_cdr(cdr("q-2", 2_000)).await.expect("insert");
    let plain = reader.cdr("q-2").expect("read").expect("stored");
    assert_eq!((plain.caller_quality, plain.callee_quality), (None, None));
    assert!(plain.transfer_chain.is_empty());

    // A NaN MOS would reach HQ as `null` and block the outbox: refused, naming the
    // field, and nothing is written.
    let (cdrs, outbox) = (count(&path, "cdrs"), count(&path, "outbox"));
    let mut bad = cdr("q-3", 3_000);
    bad.callee_quality = Some(CdrLegQuality {
        loss_percent: 0.0,
        jitter_ms: 1.0,
        mos: f64::NAN,
    });
    let e = writer.insert_cdr(bad).await.expect_err("refused");
    assert!(e.to_string().contains("callee_quality"), "{e}");
    assert_eq!(
        (count(&path, "cdrs"), count(&path, "outbox")),
        (cdrs, outbox)
    );
    assert_eq!(reader.cdr("q-3").expect("read"), None);
    drop(writer);
    thread.join().expect("writer thread");
}

#[tokio::test]
async fn duplicate_cdr_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    let original = cdr("dup", 1_000);
    writer.insert_cdr(original.clone()).await.expect("first");
    let (cdrs, outbox) = (count(&path, "cdrs"), count(&path, "outbox"));

    let mut again = cdr("dup", 5_000);
    again.caller = "999".to_owned();
    let e = writer.insert_cdr(again).await.expect_err("duplicate");
    assert!(
        matches!(&e, Error::DuplicateCdr { call_id } if call_id == "dup"),
        "{e:?}"
    );
    assert_eq!(
        (count(&path, "cdrs"), count(&path, "outbox")),
        (cdrs, outbox)
    );
    let reader = Store::reader(&path).expect("reader");
    assert_eq!(reader.cdr("dup").expect("read"), Some(original));

    // The writer is still usable and the next seq follows on.
    let seq = writer.insert_cdr(cdr("next", 2_000)).await.expect("next");
    assert_eq!(seq, 2);
    drop(writer);
    thread.join().expect("writer thread");
}

fn live(call_id: &str, ended: bool) -> crate::cdr::LiveCall {
    let mut cdr = cdr(call_id, 1_000);
    if !ended {
        cdr.interrupted = true;
        cdr.hangup_side = HangupSide::System;
    }
    crate::cdr::LiveCall {
        cdr,
        ended,
        recordings: Vec::new(),
    }
}

fn live_call_ids(path: &Path) -> Vec<(String, bool)> {
    let conn = Connection::open(path).expect("open");
    let mut s = conn
        .prepare("SELECT call_id, ended FROM live_calls ORDER BY call_id")
        .expect("prepare");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .expect("rows")
}

/// The journal of live calls: upserts add and refresh rows, a replace leaves exactly
/// its calls, and a call's CDR removes its row in the same commit.
#[tokio::test]
async fn the_live_call_journal_follows_upserts_replaces_and_cdrs() {
    use crate::cdr::JournalUpdate;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    writer
        .journal_live_calls(JournalUpdate::Upsert(vec![live("a", false)]))
        .await
        .expect("upsert a");
    writer
        .journal_live_calls(JournalUpdate::Upsert(vec![live("b", false)]))
        .await
        .expect("upsert b");
    // A refreshed row replaces its older self.
    writer
        .journal_live_calls(JournalUpdate::Upsert(vec![live("a", true)]))
        .await
        .expect("refresh a");
    assert_eq!(
        live_call_ids(&path),
        [("a".to_owned(), true), ("b".to_owned(), false)]
    );
    // The CDR of b takes its row with it.
    writer.insert_cdr(cdr("b", 1_000)).await.expect("cdr b");
    assert_eq!(live_call_ids(&path), [("a".to_owned(), true)]);
    // A replace keeps exactly what it lists.
    writer
        .journal_live_calls(JournalUpdate::Replace(vec![live("c", false)]))
        .await
        .expect("replace");
    assert_eq!(live_call_ids(&path), [("c".to_owned(), false)]);
    writer
        .journal_live_calls(JournalUpdate::Replace(Vec::new()))
        .await
        .expect("empty");
    assert!(live_call_ids(&path).is_empty());
    drop(writer);
    thread.join().expect("writer thread");
}

/// After a stop, each journal row becomes its call's CDR once: a live call's marked
/// interrupted (ended by the box), an ended call's as it stood; a row whose CDR is
/// stored already, or that is no CDR, is dropped without a second record.
#[tokio::test]
async fn journal_rows_left_by_a_crash_become_cdrs_once() {
    use crate::cdr::JournalUpdate;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    // A row claiming to be live but written without the mark (an older writer):
    // start-up still marks it.
    let mut up = live("up-1", false);
    up.recordings = vec!["p1".to_owned(), "l3".to_owned()];
    let mut unmarked = live("up-2", false);
    unmarked.cdr.interrupted = false;
    unmarked.cdr.hangup_side = HangupSide::Caller;
    writer
        .journal_live_calls(JournalUpdate::Upsert(vec![
            up,
            unmarked,
            live("done", true),
            live("stored", false),
        ]))
        .await
        .expect("journal");
    // A row whose CDR is stored already (the writer cannot leave one: a CDR's
    // commit deletes its row; put back by hand) is dropped, not stored twice.
    writer.insert_cdr(cdr("stored", 1_000)).await.expect("cdr");
    writer
        .journal_live_calls(JournalUpdate::Upsert(vec![live("stored", false)]))
        .await
        .expect("stale row");
    drop(writer);
    thread.join().expect("writer thread");
    {
        let conn = Connection::open(&path).expect("open");
        for (id, text) in [
            ("garbage", "{not json"),
            (
                "other",
                &serde_json::to_string(&cdr("someone-else", 1)).expect("json")[..],
            ),
        ] {
            conn.execute(
                "INSERT INTO live_calls (call_id, cdr, ended, updated_at_ms) VALUES (?1, ?2, 0, 1)",
                rusqlite::params![id, text],
            )
            .expect("corrupt row");
        }
    }
    let (cdrs, outbox) = (count(&path, "cdrs"), count(&path, "outbox"));

    let mut store = Store::open(&path).expect("re-open");
    let got = store.recover_live_calls().expect("recover");
    assert_eq!(got.interrupted, ["up-1", "up-2"]);
    assert_eq!(got.finished, ["done"]);
    assert_eq!(got.duplicates, ["stored"]);
    assert_eq!(got.unreadable, ["garbage", "other"]);
    assert_eq!(
        got.recordings,
        BTreeMap::from([
            ("l3".to_owned(), "up-1".to_owned()),
            ("p1".to_owned(), "up-1".to_owned())
        ])
    );
    assert!(live_call_ids(&path).is_empty());
    assert_eq!(
        (count(&path, "cdrs"), count(&path, "outbox")),
        (cdrs + 3, outbox + 3)
    );
    let reader = Store::reader(&path).expect("reader");
    for id in ["up-1", "up-2"] {
        let c = reader.cdr(id).expect("read").expect("stored");
        assert!(c.interrupted, "{id}");
        assert_eq!(c.hangup_side, HangupSide::System, "{id}");
        assert_eq!(c.disposition, Disposition::Answered, "{id}");
    }
    let done = reader.cdr("done").expect("read").expect("stored");
    assert_eq!(done, cdr("done", 1_000));
    // What goes to HQ carries the mark.
    let payload: String = Connection::open(&path)
        .expect("open")
        .query_row(
            "SELECT payload FROM outbox WHERE record_key = 'up-1'",
            [],
            |r| r.get(0),
        )
        .expect("outbox row");
    let sent: Cdr = serde_json::from_str(&payload).expect("payload");
    assert!(sent.interrupted);
    // Nothing is left for a second start.
    assert_eq!(
        store.recover_live_calls().expect("again"),
        RecoveredCalls::default()
    );
}

#[tokio::test]
async fn replace_board_upserts_deletes_and_rejects_unknown_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    let reader = Store::reader(&path).expect("reader");
    let ports = vec![(1, "fxs"), (2, PortKind::Fxs.as_str()), (5, "fxo")];
    writer
        .replace_board(
            ports.clone(),
            vec![
                ext("101", "Reception", Some(1), true),
                ext("102", "Sales", Some(2), true),
                ext("200", "SIP only", None, false),
            ],
        )
        .await
        .expect("first board");
    writer.set_port_state(1, "off_hook").await.expect("state");
    assert!(matches!(
        writer.set_port_state(9, "idle").await,
        Err(Error::UnknownPort { port: 9 })
    ));

    // Second map: 102 gone, 101 renamed and moved, 103 new; port states survive.
    let second = vec![
        ext("101", "Front desk", Some(2), false),
        ext("103", "Support", Some(1), true),
    ];
    writer
        .replace_board(ports.clone(), second.clone())
        .await
        .expect("second board");
    assert_eq!(reader.extensions().expect("extensions"), second);
    assert_eq!(
        reader.ports().expect("ports"),
        [
            PortRow {
                number: 1,
                kind: PortKind::Fxs,
                state: "off_hook".to_owned()
            },
            PortRow {
                number: 2,
                kind: PortKind::Fxs,
                state: "idle".to_owned()
            },
            PortRow {
                number: 5,
                kind: PortKind::Fxo,
                state: "idle".to_owned()
            },
        ]
    );

    // An extension on an unknown port: error, and neither the extension list nor the new
    // port 6 was written.
    let e = writer
        .replace_board(
            vec![(1, "fxs"), (6, "fxo")],
            vec![
                ext("101", "X", Some(1), true),
                ext("104", "Ghost", Some(7), true),
            ],
        )
        .await
        .expect_err("port 7 is unknown");
    assert!(
        matches!(&e, Error::ExtensionOnUnknownPort { extension, port: 7 } if extension == "104"),
        "{e:?}"
    );
    assert_eq!(reader.extensions().expect("extensions"), second);
    assert_eq!(reader.ports().expect("ports").len(), 3);

    // A bad port kind: error, nothing written.
    let e = writer
        .replace_board(vec![(1, "fxs"), (3, "pots")], vec![])
        .await
        .expect_err("bad kind");
    assert!(
        matches!(&e, Error::InvalidPortKind { port: 3, kind } if kind == "pots"),
        "{e:?}"
    );
    assert_eq!(reader.extensions().expect("extensions"), second);

    // The foreign key itself holds too (defence in depth below the explicit check).
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    assert!(conn
        .execute(
            "INSERT INTO extensions (number, name, port, call_waiting, updated_at_ms) VALUES ('105', '', 8, 1, 0)",
            [],
        )
        .is_err());

    writer.close().await;
    thread.join().expect("writer thread");
}

#[tokio::test]
async fn committed_cdr_is_visible_to_an_independent_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = Store::open(&path).expect("open");
    assert_eq!(store.pragma_synchronous().expect("synchronous"), 2, "FULL");
    let (writer, thread) = store.spawn_writer();

    writer
        .insert_cdr(cdr("durable", 1_000))
        .await
        .expect("insert");
    // The writer is still open: the row must already be committed to the WAL on disk.
    let reader = Store::reader(&path).expect("new connection after the commit");
    assert!(reader.cdr("durable").expect("read").is_some());
    assert_eq!(reader.outbox(0, 10).expect("outbox").len(), 1);
    assert_eq!(reader.pragma_synchronous().expect("synchronous"), 2);
    let raw = Connection::open(&path).expect("plain connection");
    let n: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM cdrs WHERE call_id = 'durable'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 1);
    drop((reader, raw));

    // Closing checkpoints the WAL into the main file.
    drop(writer);
    thread.join().expect("writer thread");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL truncated"
    );
    let reader = Store::reader(&path).expect("reader after close");
    assert!(reader.cdr("durable").expect("read").is_some());
}

#[tokio::test]
async fn close_waits_for_its_writes_and_clones_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    let clone = writer.clone();
    writer.close().await;
    // The clone keeps the thread alive and working.
    clone
        .insert_cdr(cdr("after-close", 1))
        .await
        .expect("clone still works");
    drop(clone);
    thread.join().expect("writer thread");
}

// ---------------------------------------------------------------------------------
// Model-based property test: insert_cdr against a BTreeMap.
// ---------------------------------------------------------------------------------

fn arb_cdr() -> impl Strategy<Value = Cdr> {
    (
        0..8u8,
        prop_oneof![
            Just(Direction::Internal),
            Just(Direction::Inbound),
            Just(Direction::Outbound)
        ],
        "[0-9]{0,10}",
        proptest::option::of(1..=12u8),
        "[0-9]{2,12}",
        proptest::option::of(1..=12u8),
        0..2_000_000_000_000i64,
        proptest::option::of(0..60_000i64),
        0..3_600_000i64,
        prop_oneof![
            Just(Disposition::Answered),
            Just(Disposition::NoAnswer),
            Just(Disposition::Busy),
            Just(Disposition::Unallocated),
            Just(Disposition::Congestion),
            Just(Disposition::Abandoned),
        ],
        prop_oneof![
            Just(HangupSide::Caller),
            Just(HangupSide::Callee),
            Just(HangupSide::System)
        ],
    )
        .prop_map(
            |(
                id,
                direction,
                caller,
                caller_port,
                callee,
                callee_port,
                start,
                answer,
                talk,
                disposition,
                hangup_side,
            )| {
                let answered_at_ms = answer.map(|a| start + a);
                Cdr {
                    call_id: format!("call-{id}"),
                    direction,
                    caller,
                    caller_port,
                    callee,
                    callee_port,
                    started_at_ms: start,
                    answered_at_ms,
                    ended_at_ms: answered_at_ms.unwrap_or(start) + talk,
                    disposition,
                    hangup_side,
                    caller_sip_call_id: None,
                    callee_sip_call_id: Some(format!("t-{id}-1@192.0.2.1")),
                    caller_quality: None,
                    callee_quality: None,
                    transfer_chain: Vec::new(),
                    queue: None,
                    blocked: None,
                    survey_score: None,
                    hold_ms: None,
                    queue_overflow: None,
                    interrupted: false,
                    hangup_cause: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn insert_cdr_matches_model(ops in proptest::collection::vec(arb_cdr(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
        let reader = Store::reader(&path).expect("reader");

        // The model: stored CDRs by call id, and the outbox as (seq, call id) in order.
        let mut cdrs: BTreeMap<String, Cdr> = BTreeMap::new();
        let mut outbox: Vec<(i64, String)> = Vec::new();

        for cdr in ops {
            let result = rt.block_on(writer.insert_cdr(cdr.clone()));
            if cdrs.contains_key(&cdr.call_id) {
                let is_duplicate = matches!(&result, Err(Error::DuplicateCdr { call_id }) if *call_id == cdr.call_id);
                prop_assert!(is_duplicate, "{:?}", result);
            } else {
                let seq = result.expect("insert");
                let expected = outbox.last().map_or(1, |(s, _)| s + 1);
                prop_assert_eq!(seq, expected, "seqs are contiguous");
                outbox.push((seq, cdr.call_id.clone()));
                cdrs.insert(cdr.call_id.clone(), cdr);
            }

            let mut stored = reader.recent_cdrs(usize::MAX).expect("recent");
            prop_assert!(stored.windows(2).all(|w| w[0].started_at_ms >= w[1].started_at_ms));
            stored.sort_by(|a, b| a.call_id.cmp(&b.call_id));
            let model: Vec<Cdr> = cdrs.values().cloned().collect();
            prop_assert_eq!(&stored, &model);

            let rows = reader.outbox(0, usize::MAX).expect("outbox");
            prop_assert_eq!(rows.len(), outbox.len());
            for (row, (seq, call_id)) in rows.iter().zip(&outbox) {
                prop_assert_eq!(row.seq, *seq);
                prop_assert_eq!(&row.kind, "cdr");
                prop_assert_eq!(&row.record_key, call_id);
                let payload: Cdr = serde_json::from_value(row.payload.clone()).expect("payload");
                prop_assert_eq!(Some(&payload), cdrs.get(call_id));
            }
        }
        drop(writer);
        thread.join().expect("writer thread");
    }
}

/// Migration 0027 rebuilds `cdrs` to allow `hangup_cause` `session_expired`: rows
/// written before survive unchanged (every column, in order), the indexes come back,
/// the new cause is stored and read, and an unknown cause is still refused.
#[tokio::test]
async fn migration_0027_keeps_every_cdr_and_allows_session_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("data dir");
    let dump = |conn: &Connection| -> Vec<String> {
        conn.prepare("SELECT * FROM cdrs ORDER BY id")
            .and_then(|mut s| {
                let n = s.column_count();
                s.query_map([], |r| {
                    (0..n)
                        .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| v.join("|"))
                })?
                .collect()
            })
            .expect("dump cdrs")
    };
    let before = {
        let mut conn = Connection::open(&path).expect("open");
        super::migrate_to(&mut conn, 26);
        conn.execute_batch(
            "INSERT INTO cdrs (call_id, direction, caller, caller_port, callee, started_at_ms,
                               answered_at_ms, ended_at_ms, duration_ms, billable_ms,
                               disposition, hangup_side, caller_mos, queue, hold_ms,
                               interrupted, hangup_cause)
             VALUES ('old-1', 'inbound', '5551234', 5, '101', 1000, 2000, 9000, 8000, 7000,
                     'answered', 'system', 4.2, 'sales', 300, 1, 'media_timeout'),
                    ('old-2', 'internal', '101', 1, '102', 3000, NULL, 4000, 1000, 0,
                     'no_answer', 'caller', NULL, NULL, NULL, 0, NULL);",
        )
        .expect("seed schema 26");
        dump(&conn)
    };
    let store = Store::open(&path).expect("migrate to 27");
    let (writer, _thread) = store.try_spawn_writer().expect("spawn");
    {
        let conn = Connection::open(&path).expect("open");
        assert_eq!(dump(&conn), before, "rows unchanged by the rebuild");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cdrs' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("indexes");
        assert_eq!(
            indexes,
            [
                "cdrs_queue",
                "cdrs_started_at_ms",
                "sqlite_autoindex_cdrs_1"
            ]
        );
        let bad = conn.execute(
            "UPDATE cdrs SET hangup_cause = 'gremlins' WHERE call_id = 'old-2'",
            [],
        );
        assert!(bad.is_err(), "an unknown cause is refused");
    }
    let mut expired = cdr("new-1", 10_000);
    expired.hangup_side = HangupSide::System;
    expired.hangup_cause = Some(crate::cdr::HangupCause::SessionExpired);
    writer.insert_cdr(expired.clone()).await.expect("insert");
    let reader = Store::reader(&path).expect("reader");
    assert_eq!(reader.cdr("new-1").expect("read"), Some(expired));
    assert_eq!(
        reader
            .cdr("old-1")
            .expect("read")
            .and_then(|c| c.hangup_cause),
        Some(crate::cdr::HangupCause::MediaTimeout)
    );
}

/// Migration 0028 rebuilds `cdrs` again to allow `hangup_cause`
/// `route_not_permitted`: rows written at schema 27 survive unchanged, the indexes
/// come back, the new cause is stored and read, and an unknown cause is still refused.
#[tokio::test]
async fn migration_0028_keeps_every_cdr_and_allows_route_not_permitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("data dir");
    let dump = |conn: &Connection| -> Vec<String> {
        conn.prepare("SELECT * FROM cdrs ORDER BY id")
            .and_then(|mut s| {
                let n = s.column_count();
                s.query_map([], |r| {
                    (0..n)
                        .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| v.join("|"))
                })?
                .collect()
            })
            .expect("dump cdrs")
    };
    let before = {
        let mut conn = Connection::open(&path).expect("open");
        super::migrate_to(&mut conn, 27);
        let refused = conn.execute(
            "INSERT INTO cdrs (call_id, direction, caller, callee, started_at_ms,
                               ended_at_ms, duration_ms, billable_ms, disposition,
                               hangup_side, hangup_cause)
             VALUES ('x', 'outbound', '101', '00491', 1, 2, 1, 0, 'congestion', 'system',
                     'route_not_permitted')",
            [],
        );
        assert!(refused.is_err(), "schema 27 does not know the new cause");
        conn.execute_batch(
            "INSERT INTO cdrs (call_id, direction, caller, caller_port, callee, started_at_ms,
                               answered_at_ms, ended_at_ms, duration_ms, billable_ms,
                               disposition, hangup_side, caller_mos, queue, hold_ms,
                               interrupted, hangup_cause)
             VALUES ('old-1', 'inbound', '5551234', 5, '101', 1000, 2000, 9000, 8000, 7000,
                     'answered', 'system', 4.2, 'sales', 300, 1, 'session_expired'),
                    ('old-2', 'internal', '101', 1, '102', 3000, NULL, 4000, 1000, 0,
                     'no_answer', 'caller', NULL, NULL, NULL, 0, NULL);",
        )
        .expect("seed schema 27");
        dump(&conn)
    };
    let store = Store::open(&path).expect("migrate to 28");
    let (writer, _thread) = store.try_spawn_writer().expect("spawn");
    {
        let conn = Connection::open(&path).expect("open");
        assert_eq!(dump(&conn), before, "rows unchanged by the rebuild");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cdrs' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("indexes");
        assert_eq!(
            indexes,
            [
                "cdrs_queue",
                "cdrs_started_at_ms",
                "sqlite_autoindex_cdrs_1"
            ]
        );
        let bad = conn.execute(
            "UPDATE cdrs SET hangup_cause = 'gremlins' WHERE call_id = 'old-2'",
            [],
        );
        assert!(bad.is_err(), "an unknown cause is refused");
    }
    let mut refused = cdr("new-1", 10_000);
    refused.hangup_side = HangupSide::System;
    refused.disposition = crate::cdr::Disposition::Congestion;
    refused.hangup_cause = Some(crate::cdr::HangupCause::RouteNotPermitted);
    writer.insert_cdr(refused.clone()).await.expect("insert");
    let reader = Store::reader(&path).expect("reader");
    assert_eq!(reader.cdr("new-1").expect("read"), Some(refused));
}

fn outbox_cdr_seqs(path: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open(path).expect("open");
    let mut s = conn
        .prepare("SELECT seq, record_key FROM outbox WHERE kind = 'cdr' ORDER BY seq")
        .expect("prepare");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .expect("rows")
}

/// Group commit: a write that fails inside a group (a duplicate CDR, an unknown port,
/// a CDR with a NaN) is undone alone and gets its own error; the others commit once,
/// with their results, in order.
#[test]
fn a_failing_write_in_a_group_costs_the_others_nothing() {
    use crate::cdr::JournalUpdate;
    use writer::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = Store::open(&path).expect("open").with_clock(fixed_clock);
    let mut bad = cdr("nan", 1_000);
    bad.caller_quality = Some(crate::cdr::CdrLegQuality {
        loss_percent: f64::NAN,
        jitter_ms: 1.0,
        mos: 4.2,
    });
    let writes = [
        Write::Journal(JournalUpdate::Upsert(vec![
            live("a", false),
            live("z", false),
        ])),
        Write::Cdr(Box::new(cdr("a", 1_000))),
        Write::Cdr(Box::new(cdr("a", 2_000))),
        Write::PortState {
            port: 99,
            state: "off_hook",
        },
        Write::Cdr(Box::new(bad)),
        Write::Cdr(Box::new(cdr("b", 3_000))),
    ];
    let results = writer::apply_group(&mut store, &writes);
    assert_eq!(results.len(), writes.len());
    assert!(matches!(results[0], Ok(None)), "{:?}", results[0]);
    assert!(matches!(results[1], Ok(Some(1))), "{:?}", results[1]);
    assert!(
        matches!(&results[2], Err(Error::DuplicateCdr { call_id }) if call_id == "a"),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(Error::UnknownPort { port: 99 })),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Err(Error::Invalid { key, .. }) if key == "nan"),
        "{:?}",
        results[4]
    );
    assert!(matches!(results[5], Ok(Some(2))), "{:?}", results[5]);
    // Each good write once: the first CDR of a (not the duplicate), b; a's journal
    // row went with its CDR, z's stays.
    assert_eq!(
        outbox_cdr_seqs(&path),
        [(1, "a".to_owned()), (2, "b".to_owned())]
    );
    assert_eq!(count(&path, "cdrs"), 2);
    let reader = Store::reader(&path).expect("reader");
    assert_eq!(
        reader.cdr("a").expect("read").map(|c| c.started_at_ms),
        Some(1_000)
    );
    assert_eq!(live_call_ids(&path), [("z".to_owned(), false)]);
}

/// Group commit: when SQLite rolls back the group's whole transaction (here a
/// trigger's `RAISE(ROLLBACK)` on one CDR; a full disk does the same), nothing of the
/// group is written and every write is applied again alone: the others are stored
/// exactly once, with seqs that follow on, and the bad one gets its error.
#[test]
fn a_group_rolled_back_by_sqlite_is_applied_again_write_by_write() {
    use writer::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = Store::open(&path).expect("open").with_clock(fixed_clock);
    store
        .conn
        .execute_batch(
            "CREATE TEMP TRIGGER poison BEFORE INSERT ON cdrs WHEN NEW.call_id = 'poison'
             BEGIN SELECT RAISE(ROLLBACK, 'poisoned CDR'); END;",
        )
        .expect("trigger");
    let writes = [
        Write::Cdr(Box::new(cdr("a", 1_000))),
        Write::Cdr(Box::new(cdr("poison", 1_500))),
        Write::Cdr(Box::new(cdr("b", 2_000))),
    ];
    let results = writer::apply_group(&mut store, &writes);
    assert!(matches!(results[0], Ok(Some(1))), "{:?}", results[0]);
    assert!(
        matches!(
            &results[1],
            Err(Error::Sqlite {
                op: "insert cdr",
                ..
            })
        ),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok(Some(2))), "{:?}", results[2]);
    assert_eq!(
        outbox_cdr_seqs(&path),
        [(1, "a".to_owned()), (2, "b".to_owned())]
    );
    assert_eq!(count(&path, "cdrs"), 2);
    // The connection is usable afterwards (no transaction left open).
    let results = writer::apply_group(&mut store, &[Write::Cdr(Box::new(cdr("c", 3_000)))]);
    assert!(matches!(results[0], Ok(Some(3))), "{:?}", results[0]);
}

/// Pipelined writes through the writer thread: queued without waiting (as the
/// daemon's store task does), they commit in queue order, so a call's journal row
/// written before its CDR is gone afterwards, and the CDRs' seqs follow the queue.
#[tokio::test]
async fn queued_writes_commit_in_queue_order() {
    use crate::cdr::JournalUpdate;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let (writer, thread) = Store::open(&path).expect("open").spawn_writer();
    let mut journals = Vec::new();
    let mut cdrs = Vec::new();
    for i in 0..300 {
        let id = format!("call-{i:03}");
        journals.push(writer.queue_journal(JournalUpdate::Upsert(vec![live(&id, true)])));
        cdrs.push(writer.queue_cdr(cdr(&id, 1_000 + i)));
    }
    for j in journals {
        j.await.expect("journal");
    }
    let mut seqs = Vec::new();
    for c in cdrs {
        seqs.push(c.await.expect("cdr"));
    }
    assert_eq!(seqs, (1..=300).collect::<Vec<i64>>());
    let stored = outbox_cdr_seqs(&path);
    assert_eq!(stored.len(), 300);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, (seq, key))| *seq == i as i64 + 1 && *key == format!("call-{i:03}")));
    assert!(live_call_ids(&path).is_empty());
    drop(writer);
    thread.join().expect("writer thread");
}
