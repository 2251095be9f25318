//! [`HqStore`] on SQLite: the embedded default, for one `branch-hq` process.
//!
//! WAL mode with `synchronous=FULL` (an acknowledged batch survives a power cut),
//! foreign keys on, a 5 s busy timeout. Writes go through one connection behind a
//! mutex on tokio's blocking pool, so they are serialized: revisions come from the
//! `revision_counter` row, and the ack is computed inside the write transaction.
//! Reads use a small pool of their own connections, each read in one transaction so
//! that a feed page or snapshot is one consistent view.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{
    conflict_json, decide_edit, entity_json, feed_decision, parse_conflict, parse_entity,
    parse_kind, parse_policy, renewal_decision, AgentStateQuery, AgentStateRow, AuditEntry,
    BoxHealth, BoxRecord, CdrQuery, CdrRow, CurrentRow, DailyReportRow, EditDecision, EditRun,
    EnrollmentRecord, FeedRead, HqStore, IngestOutcome, RecordCounts, RenewalRecord, ReportQuery,
    SiteRecord, MAX_AUDIT_PAGE,
};
use super::{
    crm, CampaignProgressQuery, CampaignProgressRow, CampaignResultQuery, CampaignResultRow,
    CustomerQuery, CustomerRow, ServiceRecordQuery, ServiceRecordRow,
};
use crate::hq::validate::{entity_kind_name, validate_entity, TypedPayload, ValidBatch};
use crate::hq::{Error, Result};
use crate::wire::{Change, Entity, EntityKind, FilePolicy};

/// The numbered migrations, applied in order at open.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_ingest_once.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_enrollment.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_cdr_quality.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_call_center.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_call_center_results.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_hold_and_overflow.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_interrupted_calls.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/sqlite/0009_box_certificates.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_campaigns_customers.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_edit_chains.sql"),
    ),
];

/// Most idle reader connections kept.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// The one writer: SQLite allows one writer at a time anyway; holding it in a
    /// mutex turns "database is locked" into waiting.
    writer: Arc<Mutex<Connection>>,
    /// Idle reader connections (WAL lets them read while the writer writes).
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { op, source }
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql("open database"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(sql("set pragmas"))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, now_ms: i64) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    )
    .map_err(sql("create schema_migrations"))?;
    for (version, script) in MIGRATIONS {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin migration"))?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(sql("read schema_migrations"))?;
        if !done {
            tx.execute_batch(script).map_err(sql("apply migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
                params![version, now_ms],
            )
            .map_err(sql("record migration"))?;
        }
        tx.commit().map_err(sql("commit migration"))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the migrations.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteStore> {
        let path = path.into();
        let p = path.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut conn = open_conn(&p)?;
            migrate(&mut conn, crate::hq::now_ms())?;
            Ok(conn)
        })
        .await
        .map_err(|source| Error::Join {
            op: "open sqlite",
            source,
        })??;
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            // A poisoned mutex means a panic mid-transaction; the transaction was rolled
            // back when it was dropped, so the connection is still usable.
            let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql("begin write"))?;
            let value = f(&tx)?;
            tx.commit().map_err(sql("commit"))?;
            Ok(value)
        })
        .await
        .map_err(|source| Error::Join { op, source })?
    }

    async fn read<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_conn(&path)?,
            };
            let value = {
                let tx = conn.transaction().map_err(sql("begin read"))?;
                let value = f(&tx)?;
                tx.commit().map_err(sql("end read"))?;
                value
            };
            let mut idle = readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            Ok(value)
        })
        .await
        .map_err(|source| Error::Join { op, source })?
    }
}

fn site_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_site(t: (String, String, String, i64, i64)) -> Result<SiteRecord> {
    Ok(SiteRecord {
        id: t.0,
        name: t.1,
        file_policy: parse_policy(&t.2)?,
        feed_floor: t.3,
        created_at_ms: t.4,
    })
}

const BOX_COLUMNS: &str = "id, site, cert_fingerprint, last_seen_ms, firmware_version, backlog,
                           oldest_pending_ms, created_at_ms, next_cert_fingerprint,
                           cert_renewed_at_ms, revoked_at_ms, revoked_reason";

fn box_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BoxRecord> {
    Ok(BoxRecord {
        id: r.get(0)?,
        site: r.get(1)?,
        cert_fingerprint: r.get(2)?,
        last_seen_ms: r.get(3)?,
        firmware_version: r.get(4)?,
        backlog: r.get(5)?,
        oldest_pending_ms: r.get(6)?,
        created_at_ms: r.get(7)?,
        next_cert_fingerprint: r.get(8)?,
        cert_renewed_at_ms: r.get(9)?,
        revoked_at_ms: r.get(10)?,
        revoked_reason: r.get(11)?,
    })
}

fn read_box(tx: &Transaction<'_>, id: &str) -> Result<Option<BoxRecord>> {
    tx.query_row(
        &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = ?1"),
        [id],
        box_row,
    )
    .optional()
    .map_err(sql("read box"))
}

fn audit(
    tx: &Transaction<'_>,
    at_ms: i64,
    actor: &str,
    action: &str,
    box_id: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO admin_audit (at_ms, actor, action, box_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at_ms, actor, action, box_id, detail],
    )
    .map_err(sql("write audit row"))?;
    Ok(())
}

fn site_exists(tx: &Transaction<'_>, site: &str) -> Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sites WHERE id = ?1)",
        [site],
        |r| r.get(0),
    )
    .map_err(sql("read site"))
}

fn current_row(
    tx: &Transaction<'_>,
    site: &str,
    kind: EntityKind,
    key: &str,
) -> Result<Option<CurrentRow>> {
    type Found = (i64, Option<String>, Option<String>, Option<i64>);
    let found: Option<Found> = tx
        .prepare_cached(
            "SELECT revision, row_json, writer_box, chain_base FROM entities
              WHERE site = ?1 AND kind = ?2 AND key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![site, entity_kind_name(kind), key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(sql("read entity"))?;
    found
        .map(|(revision, json, writer, chain_base)| {
            Ok(CurrentRow {
                revision,
                row: json.as_deref().map(parse_entity).transpose()?,
                writer: writer
                    .zip(chain_base)
                    .map(|(box_id, chain_base)| EditRun { box_id, chain_base }),
            })
        })
        .transpose()
}

/// Writes a row (or a tombstone) with the next revision and its feed row; `writer` is
/// the box whose edit it is and the start of its run of edits (`None`: an operator).
fn write_entity(
    tx: &Transaction<'_>,
    site: &str,
    kind: EntityKind,
    key: &str,
    row: Option<&Entity>,
    writer: Option<(&str, i64)>,
) -> Result<Change> {
    let revision: i64 = tx
        .query_row(
            "UPDATE revision_counter SET value = value + 1 WHERE only = 1 RETURNING value",
            [],
            |r| r.get(0),
        )
        .map_err(sql("next revision"))?;
    let json = row.map(entity_json);
    let kind_name = entity_kind_name(kind);
    tx.prepare_cached(
        "INSERT INTO entities (site, kind, key, revision, row_json, deleted, writer_box, chain_base)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (site, kind, key) DO UPDATE
         SET revision = excluded.revision, row_json = excluded.row_json, deleted = excluded.deleted,
             writer_box = excluded.writer_box, chain_base = excluded.chain_base",
    )
    .and_then(|mut s| {
        s.execute(params![
            site,
            kind_name,
            key,
            revision,
            json,
            row.is_none(),
            writer.map(|w| w.0),
            writer.map(|w| w.1)
        ])
    })
    .map_err(sql("write entity"))?;
    tx.prepare_cached(
        "INSERT INTO feed (revision, site, kind, key, row_json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![revision, site, kind_name, key, json]))
    .map_err(sql("write feed"))?;
    Ok(Change {
        revision,
        entity: kind,
        key: key.to_owned(),
        row: row.cloned(),
    })
}

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_change(t: (i64, String, String, Option<String>)) -> Result<Change> {
    Ok(Change {
        revision: t.0,
        entity: parse_kind(&t.1)?,
        key: t.2,
        row: t.3.as_deref().map(parse_entity).transpose()?,
    })
}

fn touch(tx: &Transaction<'_>, id: &str, h: &BoxHealth) -> Result<()> {
    let (has_backlog, backlog, oldest) = match h.backlog {
        Some((b, o)) => (true, Some(b), o),
        None => (false, None, None),
    };
    tx.prepare_cached(
        "UPDATE boxes SET last_seen_ms = MAX(COALESCE(last_seen_ms, 0), ?2),
                firmware_version = COALESCE(?3, firmware_version),
                backlog = CASE WHEN ?4 THEN ?5 ELSE backlog END,
                oldest_pending_ms = CASE WHEN ?4 THEN ?6 ELSE oldest_pending_ms END
         WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            h.seen_at_ms,
            h.firmware_version,
            has_backlog,
            backlog,
            oldest
        ])
    })
    .map_err(sql("update box health"))?;
    Ok(())
}

#[async_trait]
impl HqStore for SqliteStore {
    async fn rollout_db(&self) -> Result<Option<crate::hq::rollouts::api::RolloutDb>> {
        let db = crate::hq::rollouts::sqlite::SqliteRollouts::open(self.path.clone()).await?;
        Ok(Some(crate::hq::rollouts::api::RolloutDb::Sqlite(db)))
    }

    async fn create_site(&self, id: &str, name: &str, now_ms: i64) -> Result<SiteRecord> {
        let (id, name) = (id.to_owned(), name.to_owned());
        self.write("create site", move |tx| {
            if site_exists(tx, &id)? {
                return Err(Error::AlreadyExists {
                    what: "site",
                    key: id,
                });
            }
            tx.execute(
                "INSERT INTO sites (id, name, created_at_ms) VALUES (?1, ?2, ?3)",
                params![id, name, now_ms],
            )
            .map_err(sql("insert site"))?;
            Ok(SiteRecord {
                id,
                name,
                file_policy: FilePolicy::None,
                feed_floor: 0,
                created_at_ms: now_ms,
            })
        })
        .await
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>> {
        self.read("list sites", |tx| {
            let mut s = tx
                .prepare("SELECT id, name, file_policy, feed_floor, created_at_ms FROM sites ORDER BY id")
                .map_err(sql("list sites"))?;
            let rows = s
                .query_map([], site_row)
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("list sites"))?;
            rows.into_iter().map(to_site).collect()
        })
        .await
    }

    async fn site(&self, id: &str) -> Result<Option<SiteRecord>> {
        let id = id.to_owned();
        self.read("read site", move |tx| {
            tx.query_row(
                "SELECT id, name, file_policy, feed_floor, created_at_ms FROM sites WHERE id = ?1",
                [&id],
                site_row,
            )
            .optional()
            .map_err(sql("read site"))?
            .map(to_site)
            .transpose()
        })
        .await
    }

    async fn set_file_policy(&self, site: &str, policy: &FilePolicy) -> Result<()> {
        let site = site.to_owned();
        let json =
            serde_json::to_string(policy).unwrap_or_else(|_| r#"{"mode":"none"}"#.to_owned());
        self.write("set file policy", move |tx| {
            let n = tx
                .execute(
                    "UPDATE sites SET file_policy = ?2 WHERE id = ?1",
                    params![site, json],
                )
                .map_err(sql("set file policy"))?;
            if n == 0 {
                return Err(Error::NotFound {
                    what: "site",
                    key: site,
                });
            }
            Ok(())
        })
        .await
    }

    async fn register_box(
        &self,
        id: &str,
        site: &str,
        cert_fingerprint: Option<&str>,
        now_ms: i64,
    ) -> Result<BoxRecord> {
        let (id, site, fp) = (
            id.to_owned(),
            site.to_owned(),
            cert_fingerprint.map(str::to_owned),
        );
        self.write("register box", move |tx| {
            if !site_exists(tx, &site)? {
                return Err(Error::NotFound { what: "site", key: site });
            }
            let exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM boxes WHERE id = ?1)", [&id], |r| r.get(0))
                .map_err(sql("read box"))?;
            if exists {
                return Err(Error::AlreadyExists { what: "box", key: id });
            }
            tx.execute(
                "INSERT INTO boxes (id, site, cert_fingerprint, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, site, fp, now_ms],
            )
            .map_err(sql("insert box"))?;
            Ok(BoxRecord {
                id,
                site,
                cert_fingerprint: fp,
                last_seen_ms: None,
                firmware_version: None,
                backlog: None,
                oldest_pending_ms: None,
                created_at_ms: now_ms,
                next_cert_fingerprint: None,
                cert_renewed_at_ms: None,
                revoked_at_ms: None,
                revoked_reason: None,
            })
        })
        .await
    }

    async fn set_box_fingerprint(&self, id: &str, fingerprint: Option<&str>) -> Result<()> {
        let (id, fp) = (id.to_owned(), fingerprint.map(str::to_owned));
        self.write("set box fingerprint", move |tx| {
            let n = tx
                .execute(
                    "UPDATE boxes SET cert_fingerprint = ?2, next_cert_fingerprint = NULL
                     WHERE id = ?1",
                    params![id, fp],
                )
                .map_err(sql("set box fingerprint"))?;
            if n == 0 {
                return Err(Error::NotFound {
                    what: "box",
                    key: id,
                });
            }
            Ok(())
        })
        .await
    }

    async fn box_record(&self, id: &str) -> Result<Option<BoxRecord>> {
        let id = id.to_owned();
        self.read("read box", move |tx| {
            tx.query_row(
                &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = ?1"),
                [&id],
                box_row,
            )
            .optional()
            .map_err(sql("read box"))
        })
        .await
    }

    async fn enroll_box(&self, e: &EnrollmentRecord) -> Result<BoxRecord> {
        let e = e.clone();
        self.write("enroll box", move |tx| {
            if !site_exists(tx, &e.site)? {
                return Err(Error::NotFound {
                    what: "site",
                    key: e.site,
                });
            }
            let used: Option<(String, String)> = tx
                .query_row(
                    "SELECT box_id, key_sha256 FROM enrollment_tokens WHERE token_id = ?1",
                    [&e.token_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql("read enrollment token"))?;
            if let Some((box_id, key)) = &used {
                if *box_id != e.box_id || *key != e.key_sha256 {
                    return Err(Error::TokenUsed {
                        token_id: e.token_id,
                        used_by: box_id.clone(),
                    });
                }
            }
            let existing = tx
                .query_row(
                    &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = ?1"),
                    [&e.box_id],
                    box_row,
                )
                .optional()
                .map_err(sql("read box"))?;
            match existing {
                Some(b) if b.site != e.site => {
                    return Err(Error::WrongSite {
                        box_id: e.box_id,
                        registered: b.site,
                        requested: e.site,
                    })
                }
                Some(b) => {
                    if b.revoked_at_ms.is_some() && used.is_some() {
                        return Err(Error::BoxRevoked {
                            box_id: e.box_id,
                            reason: b.revoked_reason.unwrap_or_default(),
                        });
                    }
                    tx.execute(
                        "UPDATE boxes SET cert_fingerprint = ?2, next_cert_fingerprint = NULL,
                                revoked_at_ms = NULL, revoked_reason = NULL
                         WHERE id = ?1",
                        params![e.box_id, e.cert_fingerprint],
                    )
                    .map_err(sql("pin box certificate"))?;
                    if used.is_none() {
                        audit(
                            tx,
                            e.now_ms,
                            &format!("box:{}", e.box_id),
                            "re-enroll",
                            &e.box_id,
                            &super::reenroll_detail(&b, &e),
                        )?;
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO boxes (id, site, cert_fingerprint, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![e.box_id, e.site, e.cert_fingerprint, e.now_ms],
                    )
                    .map_err(sql("insert box"))?;
                    audit(
                        tx,
                        e.now_ms,
                        &format!("box:{}", e.box_id),
                        "enroll",
                        &e.box_id,
                        &format!(
                            "site {}, token {}, certificate sha256 {}",
                            e.site, e.token_id, e.cert_fingerprint
                        ),
                    )?;
                }
            }
            if used.is_none() {
                tx.execute(
                    "INSERT INTO enrollment_tokens
                         (token_id, box_id, site, key_sha256, expires_at_s, used_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        e.token_id,
                        e.box_id,
                        e.site,
                        e.key_sha256,
                        e.expires_at_s,
                        e.now_ms
                    ],
                )
                .map_err(sql("record enrollment token"))?;
            }
            tx.query_row(
                &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = ?1"),
                [&e.box_id],
                box_row,
            )
            .map_err(sql("read box"))
        })
        .await
    }

    async fn enrollment_token_used(&self, token_id: &str) -> Result<bool> {
        let id = token_id.to_owned();
        self.read("read enrollment token", move |tx| {
            tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM enrollment_tokens WHERE token_id = ?1)",
                [&id],
                |r| r.get(0),
            )
            .map_err(sql("read enrollment token"))
        })
        .await
    }

    async fn revoke_box(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<BoxRecord> {
        let (id, reason, actor) = (id.to_owned(), reason.to_owned(), actor.to_owned());
        self.write("revoke box", move |tx| {
            let Some(b) = read_box(tx, &id)? else {
                return Err(Error::NotFound {
                    what: "box",
                    key: id,
                });
            };
            if b.revoked_at_ms.is_some() {
                return Err(Error::BoxRevoked {
                    box_id: id,
                    reason: b.revoked_reason.unwrap_or_default(),
                });
            }
            tx.execute(
                "UPDATE boxes SET revoked_at_ms = ?2, revoked_reason = ?3,
                        next_cert_fingerprint = NULL
                 WHERE id = ?1",
                params![id, now_ms, reason],
            )
            .map_err(sql("revoke box"))?;
            audit(tx, now_ms, &actor, "revoke", &id, &reason)?;
            read_box(tx, &id)?.ok_or(Error::NotFound {
                what: "box",
                key: id,
            })
        })
        .await
    }

    async fn stage_renewal(&self, r: &RenewalRecord) -> Result<BoxRecord> {
        let r = r.clone();
        self.write("stage renewal", move |tx| {
            let Some(b) = read_box(tx, &r.box_id)? else {
                return Err(Error::NotFound {
                    what: "box",
                    key: r.box_id,
                });
            };
            let promote = renewal_decision(&b, &r.presented_fingerprint)?;
            let current = if promote {
                Some(r.presented_fingerprint.clone())
            } else {
                b.cert_fingerprint.clone()
            };
            tx.execute(
                "UPDATE boxes SET cert_fingerprint = ?2, next_cert_fingerprint = ?3,
                        cert_renewed_at_ms = ?4
                 WHERE id = ?1",
                params![r.box_id, current, r.new_fingerprint, r.now_ms],
            )
            .map_err(sql("stage renewal"))?;
            audit(
                tx,
                r.now_ms,
                &format!("box:{}", r.box_id),
                "renew",
                &r.box_id,
                &format!(
                    "renewed with certificate sha256 {}; new certificate sha256 {}",
                    r.presented_fingerprint, r.new_fingerprint
                ),
            )?;
            read_box(tx, &r.box_id)?.ok_or(Error::NotFound {
                what: "box",
                key: r.box_id,
            })
        })
        .await
    }

    async fn promote_next_cert(&self, id: &str, fingerprint: &str) -> Result<bool> {
        let (id, fp) = (id.to_owned(), fingerprint.to_owned());
        self.write("promote certificate", move |tx| {
            let n = tx
                .execute(
                    "UPDATE boxes SET cert_fingerprint = next_cert_fingerprint,
                            next_cert_fingerprint = NULL
                     WHERE id = ?1 AND next_cert_fingerprint = ?2 AND revoked_at_ms IS NULL",
                    params![id, fp],
                )
                .map_err(sql("promote certificate"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn audit(&self, box_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let box_id = box_id.map(str::to_owned);
        let limit = i64::try_from(limit.clamp(1, MAX_AUDIT_PAGE)).unwrap_or(1);
        self.read("read audit", move |tx| {
            let mut s = tx
                .prepare(
                    "SELECT id, at_ms, actor, action, box_id, detail FROM admin_audit
                     WHERE ?1 IS NULL OR box_id = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(sql("read audit"))?;
            let rows = s
                .query_map(params![box_id, limit], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        box_id: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("read audit"))?;
            Ok(rows)
        })
        .await
    }

    async fn boxes(&self) -> Result<Vec<BoxRecord>> {
        self.read("list boxes", |tx| {
            let mut s = tx
                .prepare(&format!(
                    "SELECT {BOX_COLUMNS} FROM boxes ORDER BY site, id"
                ))
                .map_err(sql("list boxes"))?;
            let rows = s
                .query_map([], box_row)
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("list boxes"))?;
            Ok(rows)
        })
        .await
    }

    async fn touch_box(&self, id: &str, health: &BoxHealth) -> Result<()> {
        let (id, health) = (id.to_owned(), health.clone());
        self.write("touch box", move |tx| touch(tx, &id, &health))
            .await
    }

    async fn ingest(
        &self,
        box_rec: &BoxRecord,
        batch: &ValidBatch,
        health: &BoxHealth,
    ) -> Result<IngestOutcome> {
        let (box_rec, batch, health) = (box_rec.clone(), batch.clone(), health.clone());
        self.write("ingest", move |tx| ingest(tx, &box_rec, &batch, &health))
            .await
    }

    async fn put_entity(
        &self,
        site: &str,
        entity: &Entity,
        base_revision: Option<i64>,
    ) -> Result<Change> {
        validate_entity(entity)?;
        let (site, entity) = (site.to_owned(), entity.clone());
        self.write("put entity", move |tx| {
            if !site_exists(tx, &site)? {
                return Err(Error::NotFound {
                    what: "site",
                    key: site,
                });
            }
            let kind = entity.kind();
            if let Some(expected) = base_revision {
                let current = current_row(tx, &site, kind, entity.key())?
                    .filter(|c| c.row.is_some())
                    .map_or(0, |c| c.revision);
                if current != expected {
                    return Err(Error::RevisionMismatch {
                        kind: entity_kind_name(kind),
                        key: entity.key().to_owned(),
                        expected,
                        current,
                    });
                }
            }
            write_entity(tx, &site, kind, entity.key(), Some(&entity), None)
        })
        .await
    }

    async fn delete_entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Change> {
        let (site, key) = (site.to_owned(), key.to_owned());
        self.write("delete entity", move |tx| {
            let live = current_row(tx, &site, kind, &key)?.is_some_and(|c| c.row.is_some());
            if !live {
                return Err(Error::NotFound {
                    what: entity_kind_name(kind),
                    key,
                });
            }
            write_entity(tx, &site, kind, &key, None, None)
        })
        .await
    }

    async fn entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Option<Change>> {
        let (site, key) = (site.to_owned(), key.to_owned());
        self.read("read entity", move |tx| {
            Ok(current_row(tx, &site, kind, &key)?.and_then(|c| {
                c.row.map(|row| Change {
                    revision: c.revision,
                    entity: kind,
                    key: key.clone(),
                    row: Some(row),
                })
            }))
        })
        .await
    }

    async fn entities(&self, site: &str, kind: EntityKind) -> Result<Vec<Change>> {
        let site = site.to_owned();
        self.read("list entities", move |tx| {
            let mut s = tx
                .prepare(
                    "SELECT revision, kind, key, row_json FROM entities
                     WHERE site = ?1 AND kind = ?2 AND NOT deleted ORDER BY key",
                )
                .map_err(sql("list entities"))?;
            let rows = s
                .query_map(params![site, entity_kind_name(kind)], change_row)
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("list entities"))?;
            rows.into_iter().map(to_change).collect()
        })
        .await
    }

    async fn read_feed(&self, site: &str, since: i64, limit: usize) -> Result<FeedRead> {
        let site = site.to_owned();
        self.read("read feed", move |tx| {
            let floor: i64 = tx
                .query_row("SELECT feed_floor FROM sites WHERE id = ?1", [&site], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql("read feed floor"))?
                .ok_or_else(|| Error::NotFound {
                    what: "site",
                    key: site.clone(),
                })?;
            let global: i64 = tx
                .query_row(
                    "SELECT value FROM revision_counter WHERE only = 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(sql("read revision"))?;
            let site_rev: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(revision), 0) FROM entities WHERE site = ?1",
                    [&site],
                    |r| r.get(0),
                )
                .map_err(sql("read site revision"))?;
            if feed_decision(since, floor, global, site_rev) {
                let mut s = tx
                    .prepare(
                        "SELECT revision, kind, key, row_json FROM entities
                         WHERE site = ?1 AND NOT deleted ORDER BY kind, key",
                    )
                    .map_err(sql("read snapshot"))?;
                let rows = s
                    .query_map([&site], change_row)
                    .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(sql("read snapshot"))?;
                let rows = rows
                    .into_iter()
                    .map(to_change)
                    .collect::<Result<Vec<_>>>()?;
                return Ok(FeedRead::Snapshot {
                    rows,
                    cursor: site_rev,
                });
            }
            let mut s = tx
                .prepare_cached(
                    "SELECT revision, kind, key, row_json FROM feed
                     WHERE site = ?1 AND revision > ?2 ORDER BY revision LIMIT ?3",
                )
                .map_err(sql("read feed"))?;
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            let rows = s
                .query_map(params![site, since, fetch], change_row)
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("read feed"))?;
            let more = rows.len() > limit;
            let changes = rows
                .into_iter()
                .take(limit)
                .map(to_change)
                .collect::<Result<Vec<_>>>()?;
            Ok(FeedRead::Page { changes, more })
        })
        .await
    }

    async fn prune_feed(&self, keep_revisions: i64) -> Result<u64> {
        self.write("prune feed", move |tx| {
            let global: i64 = tx
                .query_row(
                    "SELECT value FROM revision_counter WHERE only = 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(sql("read revision"))?;
            let cutoff = global.saturating_sub(keep_revisions.max(0));
            tx.execute(
                "UPDATE sites SET feed_floor = MAX(feed_floor,
                     (SELECT MAX(revision) FROM feed WHERE feed.site = sites.id AND revision <= ?1))
                 WHERE EXISTS (SELECT 1 FROM feed WHERE feed.site = sites.id AND revision <= ?1)",
                [cutoff],
            )
            .map_err(sql("raise feed floor"))?;
            let n = tx
                .execute("DELETE FROM feed WHERE revision <= ?1", [cutoff])
                .map_err(sql("prune feed"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn cdrs(&self, query: &CdrQuery) -> Result<Vec<CdrRow>> {
        let q = query.clone();
        self.read("query cdrs", move |tx| {
            let limit = i64::try_from(q.limit()).unwrap_or(100);
            let mut s = tx
                .prepare_cached(
                    "SELECT id, box, site, call_id, direction, caller, caller_port, callee,
                            callee_port, started_at_ms, answered_at_ms, ended_at_ms, disposition,
                            hangup_side, caller_sip_call_id, callee_sip_call_id,
                            caller_loss_percent, caller_jitter_ms, caller_mos,
                            callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain,
                            queue, agent_id, queue_wait_ms, blocked_mode, blocked_action,
                            blocked_pattern, survey_score, hold_ms, queue_overflow,
                            interrupted
                     FROM cdrs
                     WHERE (?1 IS NULL OR site = ?1) AND (?2 IS NULL OR box = ?2)
                       AND (?3 IS NULL OR started_at_ms >= ?3) AND (?4 IS NULL OR started_at_ms < ?4)
                       AND id > ?5 AND (?7 IS NULL OR queue = ?7)
                     ORDER BY id LIMIT ?6",
                )
                .map_err(sql("query cdrs"))?;
            let rows = s
                .query_map(
                    params![
                        q.site,
                        q.box_id,
                        q.from_ms,
                        q.to_ms,
                        q.after.unwrap_or(0),
                        limit,
                        q.queue
                    ],
                    |r| {
                        Ok(CdrRow {
                            id: r.get(0)?,
                            box_id: r.get(1)?,
                            site: r.get(2)?,
                            call_id: r.get(3)?,
                            direction: r.get(4)?,
                            caller: r.get(5)?,
                            caller_port: r.get(6)?,
                            callee: r.get(7)?,
                            callee_port: r.get(8)?,
                            started_at_ms: r.get(9)?,
                            answered_at_ms: r.get(10)?,
                            ended_at_ms: r.get(11)?,
                            disposition: r.get(12)?,
                            hangup_side: r.get(13)?,
                            caller_sip_call_id: r.get(14)?,
                            callee_sip_call_id: r.get(15)?,
                            caller_quality: super::quality_of([r.get(16)?, r.get(17)?, r.get(18)?]),
                            callee_quality: super::quality_of([r.get(19)?, r.get(20)?, r.get(21)?]),
                            transfer_chain: super::transfer_chain_of(r.get(22)?),
                            queue: super::queue_of(r.get(23)?, r.get(24)?, r.get(25)?),
                            blocked: super::blocked_of(r.get(26)?, r.get(27)?, r.get(28)?),
                            survey_score: super::score_of(r.get(29)?),
                            hold_ms: r.get(30)?,
                            queue_overflow: super::overflow_of(r.get(31)?),
                            interrupted: r.get(32)?,
                        })
                    },
                )
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("query cdrs"))?;
            Ok(rows)
        })
        .await
    }

    async fn agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentStateRow>> {
        let q = query.clone();
        self.read("query agent states", move |tx| {
            let limit = i64::try_from(q.limit()).unwrap_or(100);
            let mut s = tx
                .prepare_cached(
                    "SELECT id, box, site, agent_id, state, reason, extension, call_id, at_ms
                     FROM agent_states
                     WHERE (?1 IS NULL OR site = ?1) AND (?2 IS NULL OR box = ?2)
                       AND (?3 IS NULL OR agent_id = ?3)
                       AND (?4 IS NULL OR at_ms >= ?4) AND (?5 IS NULL OR at_ms < ?5)
                       AND id > ?6
                     ORDER BY id LIMIT ?7",
                )
                .map_err(sql("query agent states"))?;
            let rows = s
                .query_map(
                    params![
                        q.site,
                        q.box_id,
                        q.agent,
                        q.from_ms,
                        q.to_ms,
                        q.after.unwrap_or(0),
                        limit
                    ],
                    |r| {
                        Ok((
                            (r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?),
                            (r.get(3)?, r.get::<_, String>(4)?, r.get(5)?, r.get(6)?),
                            (r.get(7)?, r.get(8)?),
                        ))
                    },
                )
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("query agent states"))?;
            rows.into_iter()
                .map(
                    |((id, box_id, site), (agent, state, reason, ext), (call, at))| {
                        Ok(AgentStateRow {
                            id,
                            box_id,
                            site,
                            record: super::agent_state_record(
                                agent, &state, reason, ext, call, at,
                            )?,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    async fn campaign_results(
        &self,
        query: &CampaignResultQuery,
    ) -> Result<Vec<CampaignResultRow>> {
        let st = crm::campaign_results_query(query);
        self.read("query campaign results", move |tx| {
            crm::campaign_result_rows(crm_query(tx, &st, "query campaign results")?)
        })
        .await
    }

    async fn campaign_progress(
        &self,
        query: &CampaignProgressQuery,
    ) -> Result<Vec<CampaignProgressRow>> {
        let st = crm::campaign_progress_query(query);
        self.read("query campaign progress", move |tx| {
            crm::campaign_progress_rows(crm_query(tx, &st, "query campaign progress")?)
        })
        .await
    }

    async fn service_records(&self, query: &ServiceRecordQuery) -> Result<Vec<ServiceRecordRow>> {
        let st = crm::service_records_query(query);
        self.read("query service records", move |tx| {
            crm_query(tx, &st, "query service records")?
                .iter()
                .map(|row| {
                    let notes = crm_query(tx, &crm::call_notes_query(row), "query call notes")?;
                    crm::service_record_row(row, notes)
                })
                .collect()
        })
        .await
    }

    async fn box_customers(&self, query: &CustomerQuery) -> Result<Vec<CustomerRow>> {
        let st = crm::customers_query(query);
        self.read("query customers", move |tx| {
            crm::customer_rows(crm_query(tx, &st, "query customers")?)
        })
        .await
    }

    async fn daily_report(&self, query: &ReportQuery) -> Result<Vec<DailyReportRow>> {
        let q = query.clone();
        self.read("daily report", move |tx| {
            let mut s = tx
                .prepare_cached(
                    "SELECT site, started_at_ms / 86400000 - (started_at_ms % 86400000 < 0) AS day,
                            COUNT(*),
                            SUM(disposition = 'answered'),
                            SUM(direction = 'inbound' AND disposition <> 'answered')
                     FROM cdrs
                     WHERE (?1 IS NULL OR site = ?1)
                       AND (?2 IS NULL OR started_at_ms >= ?2) AND (?3 IS NULL OR started_at_ms < ?3)
                     GROUP BY site, day ORDER BY site, day",
                )
                .map_err(sql("daily report"))?;
            let rows = s
                .query_map(params![q.site, q.from_ms, q.to_ms], |r| {
                    Ok(DailyReportRow {
                        site: r.get(0)?,
                        day: r.get(1)?,
                        calls: r.get(2)?,
                        answered: r.get(3)?,
                        missed: r.get(4)?,
                    })
                })
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("daily report"))?;
            Ok(rows)
        })
        .await
    }

    async fn recording_size(&self, site: &str, sha256: &str) -> Result<Option<u64>> {
        let (site, sha) = (site.to_owned(), sha256.to_owned());
        self.read("read recording", move |tx| {
            let size: Option<i64> = tx
                .query_row(
                    "SELECT size FROM recordings WHERE site = ?1 AND sha256 = ?2 LIMIT 1",
                    params![site, sha],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("read recording"))?;
            Ok(size.and_then(|s| u64::try_from(s).ok()))
        })
        .await
    }

    async fn counts(&self, box_id: &str) -> Result<RecordCounts> {
        let id = box_id.to_owned();
        self.read("count records", move |tx| {
            let count = |table: &str| -> Result<i64> {
                tx.query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE box = ?1"),
                    [&id],
                    |r| r.get(0),
                )
                .map_err(sql("count records"))
            };
            Ok(RecordCounts {
                up_records: count("up_records")?,
                cdrs: count("cdrs")?,
                audit: count("audit_rows")?,
                recordings: count("recordings")?,
                agent_states: count("agent_states")?,
            })
        })
        .await
    }
}

fn crm_value(p: &crm::Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        crm::Param::Text(t) => Value::Text(t.clone()),
        crm::Param::OptText(t) => t.clone().map_or(Value::Null, Value::Text),
        crm::Param::Int(i) => Value::Integer(*i),
        crm::Param::OptInt(i) => i.map_or(Value::Null, Value::Integer),
        crm::Param::Bool(b) => Value::Integer(i64::from(*b)),
    }
}

/// Runs a [`crm::Statement`] that answers no rows.
fn crm_execute(tx: &Connection, st: &crm::Statement, op: &'static str) -> Result<usize> {
    tx.prepare_cached(&crm::sqlite_dialect(st.sql))
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(st.params.iter().map(crm_value))))
        .map_err(sql(op))
}

/// Runs a [`crm::Statement`] query, reading its columns by their types.
fn crm_query(
    tx: &Connection,
    st: &crm::Statement,
    op: &'static str,
) -> Result<Vec<Vec<crm::Cell>>> {
    let mut s = tx
        .prepare_cached(&crm::sqlite_dialect(st.sql))
        .map_err(sql(op))?;
    let rows = s
        .query_map(
            rusqlite::params_from_iter(st.params.iter().map(crm_value)),
            |r| {
                st.cols
                    .iter()
                    .enumerate()
                    .map(|(i, col)| match col {
                        crm::Col::Int => r.get(i).map(crm::Cell::Int),
                        crm::Col::Text => r.get(i).map(crm::Cell::Text),
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            },
        )
        .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql(op))?;
    Ok(rows)
}

/// Projects a new record of issue 10's kinds (see [`crm`]); other kinds: nothing.
fn crm_project(
    tx: &Connection,
    site: &str,
    bx: &str,
    epoch: &str,
    r: &crate::hq::validate::ValidRecord,
) -> Result<()> {
    let Some(p) = crm::projection(site, bx, epoch, r) else {
        return Ok(());
    };
    crm_execute(tx, &p.write, "project crm record")?;
    if let Some((row, numbers)) = p.numbers {
        let stored = crm_query(tx, &row, "find customer row")?;
        if let Some(id) = stored
            .first()
            .and_then(|r| r.first())
            .and_then(crm::Cell::int)
        {
            for st in crm::customer_numbers(id, &numbers) {
                crm_execute(tx, &st, "index customer numbers")?;
            }
        }
    }
    Ok(())
}

fn ingest(
    tx: &Transaction<'_>,
    box_rec: &BoxRecord,
    batch: &ValidBatch,
    health: &BoxHealth,
) -> Result<IngestOutcome> {
    let (bx, site, epoch) = (
        box_rec.id.as_str(),
        box_rec.site.as_str(),
        batch.epoch.as_str(),
    );
    let mut inserted = HashSet::new();
    {
        let mut up = tx
            .prepare_cached(
                "INSERT INTO up_records (box, epoch, seq, kind, key, created_at_ms, received_at_ms, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )
            .map_err(sql("prepare insert record"))?;
        for r in &batch.records {
            let n = up
                .execute(params![
                    bx,
                    epoch,
                    r.seq,
                    r.kind.as_str(),
                    r.key,
                    r.created_at_ms,
                    health.seen_at_ms,
                    r.stored_payload()
                ])
                .map_err(sql("insert record"))?;
            if n == 1 {
                inserted.insert(r.seq);
            }
        }
    }
    let mut conflicts = Vec::new();
    let mut feed_changed = false;
    for r in &batch.records {
        let new = inserted.contains(&r.seq);
        match &r.typed {
            TypedPayload::Cdr(c) if new => {
                tx.prepare_cached(
                    "INSERT INTO cdrs (box, site, epoch, seq, call_id, direction, caller, caller_port,
                         callee, callee_port, started_at_ms, answered_at_ms, ended_at_ms,
                         disposition, hangup_side, caller_sip_call_id, callee_sip_call_id,
                         caller_loss_percent, caller_jitter_ms, caller_mos,
                         callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain,
                         queue, agent_id, queue_wait_ms, blocked_mode, blocked_action,
                         blocked_pattern, survey_score, hold_ms, queue_overflow, interrupted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29,
                         ?30, ?31, ?32, ?33, ?34)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        bx,
                        site,
                        epoch,
                        r.seq,
                        c.call_id,
                        c.direction.as_str(),
                        c.caller,
                        c.caller_port,
                        c.callee,
                        c.callee_port,
                        c.started_at_ms,
                        c.answered_at_ms,
                        c.ended_at_ms,
                        c.disposition.as_str(),
                        c.hangup_side.as_str(),
                        c.caller_sip_call_id,
                        c.callee_sip_call_id,
                        c.caller_quality.map(|q| q.loss_percent),
                        c.caller_quality.map(|q| q.jitter_ms),
                        c.caller_quality.map(|q| q.mos),
                        c.callee_quality.map(|q| q.loss_percent),
                        c.callee_quality.map(|q| q.jitter_ms),
                        c.callee_quality.map(|q| q.mos),
                        super::transfer_chain_json(&c.transfer_chain),
                        c.queue.as_ref().map(|q| q.queue.as_str()),
                        c.queue.as_ref().and_then(|q| q.agent.as_deref()),
                        c.queue.as_ref().map(|q| q.wait_ms),
                        c.blocked.as_ref().map(|b| b.mode.as_str()),
                        c.blocked.as_ref().map(|b| b.action.as_str()),
                        c.blocked.as_ref().and_then(|b| b.pattern.as_deref()),
                        c.survey_score,
                        c.hold_ms,
                        c.queue_overflow.map(|o| o.as_str()),
                        c.interrupted
                    ])
                })
                .map_err(sql("insert cdr"))?;
            }
            TypedPayload::CampaignResult(_)
            | TypedPayload::CampaignProgress(_)
            | TypedPayload::ServiceRecord(_)
            | TypedPayload::CallNote(_)
            | TypedPayload::Customer(_)
                if new =>
            {
                crm_project(tx, site, bx, epoch, r)?;
            }
            TypedPayload::AgentState(a) if new => {
                tx.prepare_cached(
                    "INSERT INTO agent_states (box, site, epoch, seq, agent_id, state, reason,
                         extension, call_id, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        bx,
                        site,
                        epoch,
                        r.seq,
                        a.agent_id,
                        a.state.as_str(),
                        a.reason,
                        a.extension,
                        a.call_id,
                        a.at_ms
                    ])
                })
                .map_err(sql("insert agent state"))?;
            }
            TypedPayload::Disposition(d) if new => {
                tx.prepare_cached(
                    "INSERT INTO dispositions (site, call_id, box, epoch, seq, agent_id, digit,
                         type_name, customer_hq_id, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (site, call_id) DO UPDATE SET
                         box = excluded.box, epoch = excluded.epoch, seq = excluded.seq,
                         agent_id = excluded.agent_id, digit = excluded.digit,
                         type_name = excluded.type_name,
                         customer_hq_id = excluded.customer_hq_id, at_ms = excluded.at_ms
                     WHERE excluded.at_ms >= dispositions.at_ms",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        site,
                        d.call_id,
                        bx,
                        epoch,
                        r.seq,
                        d.agent_id,
                        d.digit,
                        d.type_name,
                        d.customer_hq_id,
                        d.at_ms
                    ])
                })
                .map_err(sql("upsert disposition"))?;
            }
            TypedPayload::Audit(a) if new => {
                tx.prepare_cached(
                    "INSERT INTO audit_rows (box, site, epoch, seq, audit_id, at_ms, actor, source,
                         action, resource, target, result, detail, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        bx,
                        site,
                        epoch,
                        r.seq,
                        a.id,
                        a.at_ms,
                        a.actor,
                        a.source,
                        a.action,
                        a.resource,
                        a.target,
                        a.result,
                        a.detail,
                        a.prev_hash,
                        a.hash
                    ])
                })
                .map_err(sql("insert audit row"))?;
            }
            TypedPayload::Recording(m) if new => {
                tx.prepare_cached(
                    "INSERT INTO recordings (box, site, epoch, seq, call_id, sha256, size,
                         started_at_ms, duration_ms, format)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        bx,
                        site,
                        epoch,
                        r.seq,
                        m.call_id,
                        m.sha256,
                        i64::try_from(m.size).unwrap_or(i64::MAX),
                        m.started_at_ms,
                        m.duration_ms,
                        m.format
                    ])
                })
                .map_err(sql("insert recording"))?;
            }
            TypedPayload::Edit(edit) if new => {
                let kind = edit.row.kind();
                let current = current_row(tx, site, kind, edit.row.key())?;
                match decide_edit(r.seq, bx, edit, current.as_ref()) {
                    EditDecision::Apply { row, chain_base } => {
                        write_entity(
                            tx,
                            site,
                            kind,
                            edit.row.key(),
                            row.as_ref(),
                            Some((bx, chain_base)),
                        )?;
                        feed_changed = true;
                    }
                    EditDecision::Reject(conflict) => {
                        tx.prepare_cached(
                            "INSERT INTO edit_conflicts (box, epoch, seq, conflict) VALUES (?1, ?2, ?3, ?4)",
                        )
                        .and_then(|mut s| s.execute(params![bx, epoch, r.seq, conflict_json(&conflict)]))
                        .map_err(sql("insert conflict"))?;
                        conflicts.push(conflict);
                    }
                }
            }
            TypedPayload::Edit(_) => {
                // Sent again: answer the conflict recorded the first time, if any.
                let stored: Option<String> = tx
                    .prepare_cached("SELECT conflict FROM edit_conflicts WHERE box = ?1 AND epoch = ?2 AND seq = ?3")
                    .and_then(|mut s| s.query_row(params![bx, epoch, r.seq], |row| row.get(0)).optional())
                    .map_err(sql("read conflict"))?;
                if let Some(json) = stored {
                    conflicts.push(parse_conflict(&json)?);
                }
            }
            _ => {}
        }
    }
    tx.prepare_cached("INSERT INTO box_epochs (box, epoch) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .and_then(|mut s| s.execute(params![bx, epoch]))
        .map_err(sql("insert box epoch"))?;
    let acked: i64 = tx
        .prepare_cached("SELECT acked_seq FROM box_epochs WHERE box = ?1 AND epoch = ?2")
        .and_then(|mut s| s.query_row(params![bx, epoch], |r| r.get(0)))
        .map_err(sql("read ack"))?;
    let next_exists: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM up_records WHERE box = ?1 AND epoch = ?2 AND seq = ?3)",
        )
        .and_then(|mut s| s.query_row(params![bx, epoch, acked + 1], |r| r.get(0)))
        .map_err(sql("read ack"))?;
    let acked_seq = if next_exists {
        tx.prepare_cached(
            "SELECT MIN(u.seq) FROM up_records u
             WHERE u.box = ?1 AND u.epoch = ?2 AND u.seq > ?3
               AND NOT EXISTS (SELECT 1 FROM up_records v
                               WHERE v.box = ?1 AND v.epoch = ?2 AND v.seq = u.seq + 1)",
        )
        .and_then(|mut s| s.query_row(params![bx, epoch, acked], |r| r.get::<_, i64>(0)))
        .map_err(sql("compute ack"))?
    } else {
        acked
    };
    if acked_seq != acked {
        tx.prepare_cached("UPDATE box_epochs SET acked_seq = ?3 WHERE box = ?1 AND epoch = ?2")
            .and_then(|mut s| s.execute(params![bx, epoch, acked_seq]))
            .map_err(sql("store ack"))?;
    }
    touch(tx, bx, health)?;
    Ok(IngestOutcome {
        acked_seq,
        conflicts,
        inserted: inserted.len(),
        feed_changed,
    })
}
