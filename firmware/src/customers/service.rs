//! Service records: a customer's call history on the box (migration 0016).
//!
//! - [`record_call`] runs inside the CDR's transaction (the store writer's
//!   `insert_cdr`): a call whose outside party (the caller of an inbound call, the
//!   callee of an outbound one) is a customer's number (compared in the canonical
//!   form of [`crate::numbers`], so `030123456` on the CDR finds the customer stored
//!   as `+4930123456`) gets a `service_records` row (its `number` in canonical form):
//!   the customer, the agent who took it (queue calls), the box user who handled it
//!   (that agent's user, else the user of the local extension on the call), when, how
//!   long they talked and how the call ended. Internal calls and unknown numbers get
//!   none.
//! - Notes ([`add_note`]): any number of short texts on a call, by their author, added
//!   while the call goes on (its CDR, and so its service record, does not exist yet)
//!   or afterwards.
//! - [`for_customer`] lists a customer's records, newest first, each with its notes,
//!   the disposition the agent keyed in wrap-up (`cdr_dispositions`) and the
//!   recording's id, for the API and the agents' screen pop.
//! - Sync to HQ: a new service record queues a `service_record` outbox record
//!   ([`ServiceRecordRecord`], keyed by call id; the customer by HQ's id for HQ's
//!   contacts, by the box's id for local ones) and each note a `call_note` record
//!   ([`CallNoteRecord`]), in the same transaction as the row. The disposition and
//!   the recording reach HQ as records of their own (`disposition`, `recording`);
//!   HQ joins them by call id (`GET /admin/v1/service-records`). Up only.

use std::path::Path;

use branchline_sync::wire::{CallNoteRecord, CustomerRef, RecordKind, ServiceRecordRecord};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::cdr::{Cdr, Direction};
use crate::error::{Error, FieldProblem, Result};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Writes `cdr`'s service record when its outside party is a customer; returns the
/// record's id (`None`: no customer, or an internal call). Runs in the CDR's
/// transaction.
pub fn record_call(conn: &Connection, path: &Path, cdr: &Cdr) -> Result<Option<i64>> {
    let (number, local) = match cdr.direction {
        Direction::Inbound => (&cdr.caller, &cdr.callee),
        Direction::Outbound => (&cdr.callee, &cdr.caller),
        Direction::Internal => return Ok(None),
    };
    // The customer holds the number in canonical form; the CDR has it as the call
    // did (a caller ID in national form, a dialled number with the trunk prefix).
    let plan = crate::numbers::store::plan(conn, path)?;
    let Ok(normalized) = crate::numbers::canonical(plan.as_ref(), number) else {
        return Ok(None);
    };
    // Prepared once per connection: this runs for every CDR the writer stores.
    let customer: Option<(i64, Option<String>)> = conn
        .prepare_cached(
            "SELECT c.id, c.hq_id FROM customer_numbers n JOIN customers c ON c.id = n.customer_id
              WHERE n.number = ?1 ORDER BY c.source = 'hq', c.id LIMIT 1",
        )
        .and_then(|mut s| s.query_row([&normalized], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(sql(path, "find the call's customer"))?;
    let Some((customer, hq_id)) = customer else {
        return Ok(None);
    };
    let agent = cdr.queue.as_ref().and_then(|q| q.agent.clone());
    let user: Option<i64> = match &agent {
        Some(agent) => conn
            .query_row("SELECT id FROM users WHERE agent_id = ?1", [agent], |r| {
                r.get(0)
            })
            .optional(),
        None => conn
            .query_row("SELECT id FROM users WHERE extension = ?1", [local], |r| {
                r.get(0)
            })
            .optional(),
    }
    .map_err(sql(path, "find the call's user"))?;
    let direction = match cdr.direction {
        Direction::Inbound => "inbound",
        _ => "outbound",
    };
    let talk_ms = cdr
        .answered_at_ms
        .map_or(0, |a| cdr.ended_at_ms.saturating_sub(a).max(0));
    let outcome = serde_json::to_value(cdr.disposition)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let extension = Some(local.as_str()).filter(|e| !e.is_empty());
    let written = conn
        .execute(
            "INSERT INTO service_records (call_id, customer_id, number, direction, agent_id,
             user_id, extension, started_at_ms, talk_ms, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (call_id) DO NOTHING",
            params![
                cdr.call_id,
                customer,
                normalized,
                direction,
                agent,
                user,
                extension,
                cdr.started_at_ms,
                talk_ms,
                outcome
            ],
        )
        .map_err(sql(path, "write the service record"))?;
    if written == 0 {
        // The call has its record already (and HQ has it queued).
        return Ok(None);
    }
    let id = conn.last_insert_rowid();
    let username: Option<String> = match user {
        Some(u) => conn
            .query_row("SELECT username FROM users WHERE id = ?1", [u], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql(path, "read the call's user"))?,
        None => None,
    };
    let record = ServiceRecordRecord {
        call_id: cdr.call_id.clone(),
        customer: match hq_id {
            Some(hq) => CustomerRef::Hq(hq),
            None => CustomerRef::Local(customer),
        },
        number: normalized,
        direction: cdr.direction,
        agent_id: agent,
        user: username,
        extension: extension.map(str::to_owned),
        started_at_ms: cdr.started_at_ms,
        talk_ms,
        outcome: cdr.disposition,
    };
    crate::store::queue_for_hq(
        conn,
        path,
        RecordKind::ServiceRecord,
        &cdr.call_id,
        &record,
        cdr.ended_at_ms,
    )?;
    Ok(Some(id))
}

/// A note as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Who wrote it.
    pub author: String,
    /// The text.
    pub text: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Adds `author`'s note `text` to call `call_id` (which may still be going on).
/// Refused when the text is empty, too long or has control characters other than
/// line breaks and tabs.
pub fn add_note(
    conn: &Connection,
    path: &Path,
    call_id: &str,
    author: &str,
    text: &str,
    now_ms: i64,
) -> Result<Note> {
    let text = text.trim();
    let problem = if text.is_empty() {
        Some("must not be empty".to_owned())
    } else if text.chars().count() > MAX_NOTE_CHARS {
        Some(format!("longer than {MAX_NOTE_CHARS} characters"))
    } else if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    if let Some(message) = problem {
        return Err(Error::Invalid {
            entity: "call note",
            key: call_id.to_owned(),
            problems: vec![FieldProblem {
                field: "text".to_owned(),
                message,
            }],
        });
    }
    if call_id.is_empty() || call_id.len() > 64 {
        return Err(Error::NotFound {
            entity: "call",
            key: call_id.to_owned(),
        });
    }
    conn.execute(
        "INSERT INTO call_notes (call_id, author, text, at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![call_id, author, text, now_ms],
    )
    .map_err(sql(path, "add a call note"))?;
    let record = CallNoteRecord {
        call_id: call_id.to_owned(),
        note_id: conn.last_insert_rowid(),
        author: author.to_owned(),
        text: text.to_owned(),
        at_ms: now_ms,
    };
    crate::store::queue_for_hq(conn, path, RecordKind::CallNote, call_id, &record, now_ms)?;
    Ok(Note {
        author: author.to_owned(),
        text: text.to_owned(),
        at_ms: now_ms,
    })
}

/// A service record as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRecord {
    /// The call's id (as on its CDR).
    pub call_id: String,
    /// The customer's number on the call.
    pub number: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The agent who took it (queue calls).
    pub agent_id: Option<String>,
    /// The box user who handled it.
    pub user: Option<String>,
    /// The local extension on the call.
    pub extension: Option<String>,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Talk time, ms (0 when not answered).
    pub talk_ms: i64,
    /// How the call ended (the CDR's disposition).
    pub outcome: String,
    /// The customer-type digit the agent keyed in wrap-up, and its name then.
    pub disposition: Option<(u8, String)>,
    /// The recording's id, when the call was recorded.
    pub recording: Option<i64>,
    /// The call's notes, oldest first.
    pub notes: Vec<Note>,
    /// The user id that owns the record (for the authorization; not listed).
    #[serde(skip)]
    pub user_id: Option<i64>,
}

/// Customer `customer`'s newest `limit` service records, newest first.
pub fn for_customer(
    conn: &Connection,
    path: &Path,
    customer: i64,
    limit: usize,
) -> Result<Vec<ServiceRecord>> {
    let mut s = conn
        .prepare_cached(
            "SELECT s.call_id, s.number, s.direction, s.agent_id, u.username, s.extension,
                    s.started_at_ms, s.talk_ms, s.outcome, d.digit, d.type_name,
                    (SELECT max(r.id) FROM recordings r WHERE r.call_id = s.call_id),
                    s.user_id
               FROM service_records s
               LEFT JOIN users u ON u.id = s.user_id
               LEFT JOIN cdr_dispositions d ON d.call_id = s.call_id
              WHERE s.customer_id = ?1
              ORDER BY s.started_at_ms DESC, s.id DESC
              LIMIT ?2",
        )
        .map_err(sql(path, "read service records"))?;
    let mut records = s
        .query_map(params![customer, limit as i64], |r| {
            let digit: Option<i64> = r.get(9)?;
            let type_name: Option<String> = r.get(10)?;
            Ok(ServiceRecord {
                call_id: r.get(0)?,
                number: r.get(1)?,
                direction: r.get(2)?,
                agent_id: r.get(3)?,
                user: r.get(4)?,
                extension: r.get(5)?,
                started_at_ms: r.get(6)?,
                talk_ms: r.get(7)?,
                outcome: r.get(8)?,
                disposition: digit.and_then(|d| u8::try_from(d).ok()).zip(type_name),
                recording: r.get(11)?,
                notes: Vec::new(),
                user_id: r.get(12)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql(path, "read service records"))?;
    for rec in &mut records {
        rec.notes = notes_of_call(conn, path, &rec.call_id)?;
    }
    Ok(records)
}

/// Call `call_id`'s notes, oldest first (none for an unknown call).
pub fn notes_of_call(conn: &Connection, path: &Path, call_id: &str) -> Result<Vec<Note>> {
    conn.prepare_cached(
        "SELECT author, text, at_ms FROM call_notes WHERE call_id = ?1 ORDER BY at_ms, id",
    )
    .and_then(|mut s| {
        s.query_map([call_id], |r| {
            Ok(Note {
                author: r.get(0)?,
                text: r.get(1)?,
                at_ms: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql(path, "read call notes"))
}

/// The user id that owns call `call_id`'s service record: `Some(None)` for a record
/// nobody owns, `None` when the call has no record (yet).
pub fn owner_of_call(conn: &Connection, path: &Path, call_id: &str) -> Result<Option<Option<i64>>> {
    conn.query_row(
        "SELECT user_id FROM service_records WHERE call_id = ?1",
        [call_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql(path, "read the call's owner"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{CdrQueue, Disposition, HangupSide};
    use crate::store::Store;

    fn cdr(call_id: &str, direction: Direction, caller: &str, callee: &str, at: i64) -> Cdr {
        Cdr {
            call_id: call_id.to_owned(),
            direction,
            caller: caller.to_owned(),
            caller_port: None,
            callee: callee.to_owned(),
            callee_port: None,
            started_at_ms: at,
            answered_at_ms: Some(at + 5_000),
            ended_at_ms: at + 65_000,
            disposition: Disposition::Answered,
            hangup_side: HangupSide::Caller,
            caller_sip_call_id: None,
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

    /// A migrated store with customer 7 (numbers +4930777 and 5550100), agent user
    /// 2 (agent 100) and user 3 on extension 102.
    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("branchline.db");
        drop(Store::open(&path).expect("open"));
        Connection::open(&path)
            .expect("open")
            .execute_batch(
                "INSERT INTO users (id, username, display_name, password_hash, agent_id, enabled,
                                    created_at_ms, updated_at_ms)
                 VALUES (2, 'ana', 'Ana', 'x', '100', 1, 0, 0);
                 INSERT INTO users (id, username, display_name, password_hash, extension, enabled,
                                    created_at_ms, updated_at_ms)
                 VALUES (3, 'ben', 'Ben', 'x', '102', 1, 0, 0);
                 INSERT INTO customers (id, name, source, created_at_ms, updated_at_ms)
                 VALUES (7, 'ACME', 'local', 0, 0);
                 INSERT INTO customer_numbers (number, customer_id, position)
                 VALUES ('+4930777', 7, 0), ('5550100', 7, 1);",
            )
            .expect("rows");
        (dir, path)
    }

    #[tokio::test]
    async fn calls_with_customers_get_service_records_with_notes_disposition_and_recording() {
        let (_dir, path) = store();
        let (writer, thread) = Store::open(&path)
            .expect("open")
            .try_spawn_writer()
            .expect("writer");
        // A note while the first call goes on (no CDR yet).
        writer
            .transact("note", |tx, p| {
                add_note(tx, p, "c-1", "ana", "asked for a quote", 1_500)
            })
            .await
            .expect("note");
        let mut queued = cdr("c-1", Direction::Inbound, "+49 30 777", "7001", 1_000);
        queued.queue = Some(CdrQueue {
            queue: "sales".into(),
            agent: Some("100".into()),
            wait_ms: 3_000,
        });
        writer.insert_cdr(queued).await.expect("cdr");
        // An outbound call from extension 102 to the customer's other number.
        writer
            .insert_cdr(cdr("c-2", Direction::Outbound, "102", "5550100", 9_000))
            .await
            .expect("cdr");
        // No record: an internal call, an unknown number.
        writer
            .insert_cdr(cdr("c-3", Direction::Internal, "101", "102", 10_000))
            .await
            .expect("cdr");
        writer
            .insert_cdr(cdr("c-4", Direction::Inbound, "5559999", "101", 11_000))
            .await
            .expect("cdr");
        writer
            .transact("tag", |tx, p| {
                tx.execute_batch(
                    "INSERT INTO customer_types (digit, name, updated_at_ms) VALUES (3, 'interested', 0);
                     INSERT INTO cdr_dispositions (call_id, agent_id, digit, type_name, at_ms)
                     VALUES ('c-1', '100', 3, 'interested', 70000);",
                )
                .map_err(|source| Error::Sqlite { path: p.to_owned(), op: "tag", source })?;
                add_note(tx, p, "c-1", "ana", "quote sent", 80_000)
            })
            .await
            .expect("tag");
        writer.close().await;
        thread.join().expect("writer thread");

        let conn = Connection::open(&path).expect("open");
        let records = for_customer(&conn, &path, 7, 10).expect("records");
        assert_eq!(
            records
                .iter()
                .map(|r| r.call_id.as_str())
                .collect::<Vec<_>>(),
            ["c-2", "c-1"],
            "newest first"
        );
        let (outbound, queued) = (&records[0], &records[1]);
        assert_eq!(
            (
                outbound.direction.as_str(),
                outbound.number.as_str(),
                outbound.user.as_deref()
            ),
            ("outbound", "5550100", Some("ben"))
        );
        assert_eq!(outbound.extension.as_deref(), Some("102"));
        assert_eq!(
            (
                queued.agent_id.as_deref(),
                queued.user.as_deref(),
                queued.number.as_str()
            ),
            (Some("100"), Some("ana"), "+4930777")
        );
        assert_eq!(
            (queued.talk_ms, queued.outcome.as_str()),
            (60_000, "answered")
        );
        assert_eq!(queued.disposition, Some((3, "interested".to_owned())));
        assert_eq!(
            queued
                .notes
                .iter()
                .map(|n| n.text.as_str())
                .collect::<Vec<_>>(),
            ["asked for a quote", "quote sent"]
        );
        assert_eq!(
            owner_of_call(&conn, &path, "c-1").expect("owner"),
            Some(Some(2))
        );
        assert_eq!(owner_of_call(&conn, &path, "c-3").expect("owner"), None);
        let total: i64 = conn
            .query_row("SELECT COUNT(*) FROM service_records", [], |r| r.get(0))
            .expect("count");
        assert_eq!(total, 2);
        assert_eq!(for_customer(&conn, &path, 7, 1).expect("records").len(), 1);

        // HQ gets each record and note through the outbox, committed with them.
        let outbox = |kind: &str| -> Vec<(String, String)> {
            let mut s = conn
                .prepare("SELECT record_key, payload FROM outbox WHERE kind = ?1 ORDER BY seq")
                .expect("prepare");
            s.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<rusqlite::Result<Vec<_>>>()
                .expect("rows")
        };
        let services = outbox("service_record");
        let keys: Vec<&str> = services.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["c-1", "c-2"], "one per call with a customer");
        let first: ServiceRecordRecord = serde_json::from_str(&services[0].1).expect("wire");
        assert_eq!(first.customer, CustomerRef::Local(7));
        assert_eq!(
            (
                first.number.as_str(),
                first.agent_id.as_deref(),
                first.user.as_deref()
            ),
            ("+4930777", Some("100"), Some("ana"))
        );
        assert_eq!(
            (first.talk_ms, first.direction),
            (60_000, Direction::Inbound)
        );
        let second: ServiceRecordRecord = serde_json::from_str(&services[1].1).expect("wire");
        assert_eq!(
            (second.extension.as_deref(), second.user.as_deref()),
            (Some("102"), Some("ben"))
        );
        let notes: Vec<CallNoteRecord> = outbox("call_note")
            .iter()
            .map(|(k, p)| {
                assert_eq!(k, "c-1");
                serde_json::from_str(p).expect("wire")
            })
            .collect();
        assert_eq!(
            notes.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(),
            ["asked for a quote", "quote sent"]
        );
        assert!(notes[0].note_id > 0 && notes[1].note_id > notes[0].note_id);
    }

    #[test]
    fn bad_notes_are_refused_and_change_nothing() {
        let (_dir, path) = store();
        let conn = Connection::open(&path).expect("open");
        for (text, want) in [
            ("   ", "empty"),
            ("a\u{7}b", "control"),
            (&"x".repeat(MAX_NOTE_CHARS + 1) as &str, "longer"),
        ] {
            let err = add_note(&conn, &path, "c-1", "ana", text, 1).expect_err("refused");
            assert!(
                err.to_string().contains("text") || format!("{err:?}").contains(want),
                "{err:?}"
            );
            assert!(format!("{err:?}").contains(want), "{err:?}");
        }
        assert!(add_note(&conn, &path, "", "ana", "x", 1).is_err());
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM call_notes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0);
        let queued: i64 = conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .expect("count");
        assert_eq!(queued, 0, "a refused note queues nothing for HQ");
        // Line breaks and tabs are fine; the text is trimmed.
        let note = add_note(&conn, &path, "c-1", "ana", " line 1\n\tline 2 ", 5).expect("note");
        assert_eq!(note.text, "line 1\n\tline 2");
    }

    /// With the site's plan adopted, a customer stored in `+` form gets the service
    /// records of calls whose CDR has the number in national or international-prefix
    /// form, filed under the canonical number.
    #[test]
    fn a_cdr_number_in_any_form_finds_the_customer() {
        let (_dir, path) = store();
        let mut store = Store::open(&path).expect("open");
        let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
        store
            .transact("t", |tx, p| {
                crate::numbers::store::adopt(tx, p, &de, 1)?;
                tx.execute(
                    "INSERT INTO customer_numbers (number, customer_id, position)
                     VALUES ('+49301234567', 7, 2)",
                    [],
                )
                .map_err(sql(p, "seed"))?;
                let inbound = cdr("c-1", Direction::Inbound, "0301234567", "102", 1_000);
                let outbound = cdr("c-2", Direction::Outbound, "102", "0049 30 1234567", 2_000);
                let stranger = cdr("c-3", Direction::Inbound, "0301234568", "102", 3_000);
                assert!(record_call(tx, p, &inbound)?.is_some());
                assert!(record_call(tx, p, &outbound)?.is_some());
                assert_eq!(record_call(tx, p, &stranger)?, None);
                let rows: Vec<(String, i64, String)> = tx
                    .prepare(
                        "SELECT call_id, customer_id, number FROM service_records ORDER BY call_id",
                    )
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect()
                    })
                    .map_err(sql(p, "read"))?;
                assert_eq!(
                    rows,
                    [
                        ("c-1".to_owned(), 7, "+49301234567".to_owned()),
                        ("c-2".to_owned(), 7, "+49301234567".to_owned())
                    ]
                );
                Ok(())
            })
            .expect("transaction");
    }
}
