//! The append-only, hash-chained audit log.
//!
//! Every privileged action and every denied attempt is one row of `audit_log`: who
//! (`actor`), from where (`source`: `"console"`, `"api:<ip>"`, `"phone:<port>"`), what
//! (`action`, `resource`, `target`), the `result` (`allowed`, `denied`, `ok`,
//! `failed`) and a JSON `detail`. Rows are written through the store writer thread, in
//! the same transaction as the action they audit where there is one (a user created,
//! its audit row and its outbox rows commit together), and each also gets an outbox
//! row of kind `"audit"` so HQ receives the log.
//!
//! # The chain
//!
//! Ids are 1, 2, 3, ... with no gaps. Each row stores `prev_hash` (the previous row's
//! `hash`, or [`GENESIS_HASH`] for row 1) and `hash = sha256(encoding)`, where the
//! encoding is the domain tag `branchline-audit-v1` followed by every field in column
//! order (`id`, `at_ms`, `actor`, `source`, `action`, `resource`, `target`, `result`,
//! `detail`, `prev_hash`), each as an 8-byte big-endian length and its bytes
//! (integers as 8-byte big-endian two's complement). `detail` is canonical JSON (object
//! keys sorted, no whitespace). `audit_head` holds the row count and the last hash,
//! updated in the same transaction, so deleting the newest rows is detected too.
//!
//! [`verify`] walks the chain: a recomputed hash that differs means the row was
//! edited; a gap in the ids, a broken link, or a head that disagrees with the rows
//! means rows were deleted. It names the first bad row. (Someone who can write the
//! database can also rewrite the whole chain consistently; the copy at HQ, reached
//! through the outbox, is what makes that detectable.)

use std::fmt;
use std::path::Path;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{StoreReader, StoreWriter};

/// `prev_hash` of the first row, and `audit_head.last_hash` of an empty log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Outbox kind of audit rows.
pub const OUTBOX_KIND: &str = "audit";

/// The `result` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// An authorization check passed (for reads worth recording).
    Allowed,
    /// An authorization check failed.
    Denied,
    /// A privileged action succeeded.
    Ok,
    /// A privileged action failed (validation, wrong password, ...).
    Failed,
}

impl AuditResult {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Allowed => "allowed",
            AuditResult::Denied => "denied",
            AuditResult::Ok => "ok",
            AuditResult::Failed => "failed",
        }
    }
}

/// Who did it and from where: the `actor` and `source` columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Username (or `"-"` when unknown, e.g. a login with an unknown name is audited
    /// under the name that was tried).
    pub username: String,
    /// `"console"`, `"api:<ip>"`, `"phone:<port>"`, `"sync"`, `"system"`.
    pub source: String,
}

impl Actor {
    /// An actor.
    pub fn new(username: impl Into<String>, source: impl Into<String>) -> Actor {
        Actor {
            username: username.into(),
            source: source.into(),
        }
    }

    /// The box itself (bootstrap, seeding), source `"system"`.
    pub fn system() -> Actor {
        Actor::new("system", "system")
    }
}

/// A row to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who and from where.
    pub actor: Actor,
    /// What was done (`"create"`, `"login"`, `"view"`, ...).
    pub action: String,
    /// On what kind of thing (`"users"`, `"calls"`, ...: usually a [`crate::rbac::Resource`]).
    pub resource: String,
    /// Which one (a username, a call id; `""` for none).
    pub target: String,
    /// How it went.
    pub result: AuditResult,
    /// Anything else (changed fields, the deny reason), as JSON.
    pub detail: serde_json::Value,
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ...
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: String,
    /// What.
    pub action: String,
    /// On what kind of thing.
    pub resource: String,
    /// Which one.
    pub target: String,
    /// `allowed`, `denied`, `ok` or `failed`.
    pub result: String,
    /// Canonical JSON.
    pub detail: String,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl AuditRecord {
    /// Recomputes this row's hash from its fields (see the module docs).
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"branchline-audit-v1");
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(&self.id.to_be_bytes());
        field(&self.at_ms.to_be_bytes());
        field(self.actor.as_bytes());
        field(self.source.as_bytes());
        field(self.action.as_bytes());
        field(self.resource.as_bytes());
        field(self.target.as_bytes());
        field(self.result.as_bytes());
        field(self.detail.as_bytes());
        field(self.prev_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// What [`verify`] found wrong (carried by [`Error::AuditBroken`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditProblem {
    /// The stored hash does not match the row's fields: the row was edited.
    HashMismatch,
    /// `prev_hash` is not the previous row's hash: a row before it was removed or
    /// replaced.
    BrokenLink,
    /// The id is not the next one: the rows from the expected id up to this one were
    /// deleted.
    Gap {
        /// The id found instead.
        found: i64,
    },
    /// `audit_head` says there are more rows (or a different last hash) than found:
    /// the newest rows were deleted.
    HeadMismatch {
        /// Rows the head records.
        head_count: i64,
        /// Rows found.
        rows: i64,
    },
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditProblem::HashMismatch => f.write_str("hash mismatch: the row was edited"),
            AuditProblem::BrokenLink => f.write_str(
                "prev_hash does not match the previous row: a row before it was deleted or replaced",
            ),
            AuditProblem::Gap { found } => {
                write!(f, "row is missing (next row found is {found}): rows were deleted")
            }
            AuditProblem::HeadMismatch { head_count, rows } => write!(
                f,
                "the chain head records {head_count} rows ending in another hash, {rows} \
                 found: the newest rows were deleted or edited"
            ),
        }
    }
}

/// `value` as canonical JSON: object keys sorted, no insignificant whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    // Serializing a Value cannot fail (its keys are strings).
    serde_json::to_string(&sorted(value)).unwrap_or_else(|_| "null".to_owned())
}

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Appends `entry` inside the caller's transaction: the row, `audit_head` and the
/// outbox row. Use this from a transaction that also writes the audited fact.
pub(crate) fn append(
    conn: &Connection,
    path: &Path,
    entry: &AuditEntry,
    now_ms: i64,
) -> Result<AuditRecord> {
    let (count, last_hash): (i64, String) = conn
        .query_row(
            "SELECT count, last_hash FROM audit_head WHERE only = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql(path, "read audit head"))?;
    let mut record = AuditRecord {
        id: count + 1,
        at_ms: now_ms,
        actor: entry.actor.username.clone(),
        source: entry.actor.source.clone(),
        action: entry.action.clone(),
        resource: entry.resource.clone(),
        target: entry.target.clone(),
        result: entry.result.as_str().to_owned(),
        detail: canonical_json(&entry.detail),
        prev_hash: last_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at_ms, actor, source, action, resource, target, result,
                                detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record.id,
            record.at_ms,
            record.actor,
            record.source,
            record.action,
            record.resource,
            record.target,
            record.result,
            record.detail,
            record.prev_hash,
            record.hash
        ])
    })
    .map_err(sql(path, "insert audit row"))?;
    conn.execute(
        "UPDATE audit_head SET count = ?1, last_hash = ?2 WHERE only = 1",
        params![record.id, record.hash],
    )
    .map_err(sql(path, "update audit head"))?;
    let payload = serde_json::to_string(&record).map_err(|source| Error::Json {
        kind: "audit",
        key: record.id.to_string(),
        source,
    })?;
    crate::accounts::outbox(
        conn,
        path,
        OUTBOX_KIND,
        &record.id.to_string(),
        &payload,
        now_ms,
    )?;
    Ok(record)
}

/// Appends one audit row in its own transaction (for actions with no transaction of
/// their own: a denied attempt, a read worth recording, a failed operation).
pub async fn audit(writer: &StoreWriter, entry: AuditEntry, now_ms: i64) -> Result<AuditRecord> {
    writer
        .transact("audit", move |tx, path| append(tx, path, &entry, now_ms))
        .await
}

/// Audits a denial: result `denied`, detail `{"reason": <the reason's text>}`.
pub async fn audit_denied(
    writer: &StoreWriter,
    actor: Actor,
    action: crate::rbac::Action,
    resource: crate::rbac::Resource,
    target: &str,
    reason: &crate::rbac::DenyReason,
    now_ms: i64,
) -> Result<AuditRecord> {
    let entry = AuditEntry {
        actor,
        action: action.as_str().to_owned(),
        resource: resource.as_str().to_owned(),
        target: target.to_owned(),
        result: AuditResult::Denied,
        detail: serde_json::json!({ "reason": reason.to_string() }),
    };
    audit(writer, entry, now_ms).await
}

const COLUMNS: &str =
    "id, at_ms, actor, source, action, resource, target, result, detail, prev_hash, hash";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        source: r.get(3)?,
        action: r.get(4)?,
        resource: r.get(5)?,
        target: r.get(6)?,
        result: r.get(7)?,
        detail: r.get(8)?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

/// Walks the whole chain; `Ok(rows)` when intact, else [`Error::AuditBroken`] naming the
/// first bad row (see the module docs).
pub fn verify(conn: &Connection, path: &Path) -> Result<i64> {
    let (head_count, head_hash): (i64, String) = conn
        .query_row(
            "SELECT count, last_hash FROM audit_head WHERE only = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql(path, "read audit head"))?;
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id"))
        .map_err(sql(path, "prepare audit walk"))?;
    let mut rows = stmt.query([]).map_err(sql(path, "walk audit log"))?;
    let mut expected_id = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    while let Some(row) = rows.next().map_err(sql(path, "walk audit log"))? {
        let record = record_from_row(row).map_err(sql(path, "read audit row"))?;
        let broken = |id, problem| Error::AuditBroken { id, problem };
        if record.id != expected_id {
            return Err(broken(expected_id, AuditProblem::Gap { found: record.id }));
        }
        if record.compute_hash() != record.hash {
            return Err(broken(record.id, AuditProblem::HashMismatch));
        }
        if record.prev_hash != prev_hash {
            return Err(broken(record.id, AuditProblem::BrokenLink));
        }
        prev_hash = record.hash;
        expected_id += 1;
    }
    let rows = expected_id - 1;
    if rows != head_count || prev_hash != head_hash {
        return Err(Error::AuditBroken {
            id: rows + 1,
            problem: AuditProblem::HeadMismatch { head_count, rows },
        });
    }
    Ok(rows)
}

/// [`verify`] over a reader.
pub fn verify_store(reader: &StoreReader) -> Result<i64> {
    verify(reader.connection(), reader.path())
}

/// Up to `limit` audit rows with `id > after_id`, oldest first (for the audit page).
pub fn list(reader: &StoreReader, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>> {
    let path = reader.path();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    reader
        .connection()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![after_id, limit], record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read audit log"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::Store;

    const COLUMNS: [&str; 8] = [
        "actor",
        "source",
        "action",
        "resource",
        "target",
        "detail",
        "prev_hash",
        "hash",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// Model: any sequence of appends verifies with its length; any single-row edit
        /// of any column is reported at exactly that row.
        #[test]
        fn appends_verify_and_any_tamper_is_found(
            entries in prop::collection::vec(("[a-z]{0,8}", "[ -~]{0,12}", 0i64..1_000_000), 1..12),
            pick in any::<prop::sample::Index>(),
            column in 0usize..COLUMNS.len(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("branchline.db");
            let mut store = Store::open(&path).expect("open");
            for (actor, target, at) in &entries {
                let entry = AuditEntry {
                    actor: Actor::new(actor.clone(), "console"),
                    action: "edit".to_owned(),
                    resource: "users".to_owned(),
                    target: target.clone(),
                    result: AuditResult::Ok,
                    detail: serde_json::json!({ "b": target, "a": at }),
                };
                store.transact("append", |tx, path| append(tx, path, &entry, *at)).expect("append");
            }
            drop(store);
            let conn = Connection::open(&path).expect("raw");
            let n = entries.len() as i64;
            prop_assert_eq!(verify(&conn, &path).expect("intact"), n);
            let id = pick.index(entries.len()) as i64 + 1;
            let col = COLUMNS[column];
            let value = if col == "detail" { "'{\"tampered\":true}'".to_owned() } else { format!("{col} || 'x'") };
            conn.execute(&format!("UPDATE audit_log SET {col} = {value} WHERE id = ?1"), [id]).expect("tamper");
            match verify(&conn, &path) {
                Err(Error::AuditBroken { id: bad, problem: AuditProblem::HashMismatch }) => prop_assert_eq!(bad, id),
                other => prop_assert!(false, "{col} of row {id}: {other:?}"),
            }
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = serde_json::json!({ "b": 1, "a": { "d": [ { "z": 0, "y": 1 } ], "c": null } });
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[{"y":1,"z":0}]},"b":1}"#
        );
    }
}
