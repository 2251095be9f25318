//! [`HqStore`] on PostgreSQL: production, and several `branch-hq` instances on one
//! database.
//!
//! # Sharing one database
//!
//! Every instance is stateless apart from its in-process long-poll wake-ups; all
//! state is in the database, and each operation is one transaction:
//!
//! - **Idempotent bulk ingest.** A batch goes into the connection's staging table
//!   `ingest_stage` (a `TEMP ... ON COMMIT DELETE ROWS` table each pooled connection
//!   creates once, so it is unlogged, private and empty at every commit) with one
//!   binary `COPY`, then one statement moves it:
//!   `WITH new AS (INSERT INTO up_seqs ... ON CONFLICT DO NOTHING RETURNING seq)
//!   INSERT INTO cdrs ... JOIN new`. Only the rows that were new get their
//!   projections (`cdrs` in that statement; `audit_rows`, `recordings`,
//!   `agent_states`, dispositions, issue 10's tables ([`super::crm`]) and edits after
//!   it), so a batch sent twice, or to two instances at once, is stored once.
//! - **Stored once.** The idempotency ledger `up_seqs` is keyed by
//!   `(epoch_id, seq)`, `epoch_id` a numeric surrogate of `(box, epoch)` from
//!   `box_epochs` (cached in the process: it never changes). It keeps a payload's
//!   JSON only when no projection holds all of it
//!   ([`crate::hq::validate::ValidRecord::stored_payload`]).
//! - **The ack under concurrency.** After its inserts, a batch locks its
//!   `box_epochs` row (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`) and only then
//!   computes the highest contiguous seq in a new statement. Under READ COMMITTED
//!   that statement sees every batch committed by an earlier holder of the lock plus
//!   its own rows, so two instances that ingest 1..10 and 11..20 at once end with
//!   ack 20 stored, and neither ever answers a seq it does not hold. The stored ack
//!   only grows (`GREATEST`).
//! - **Revisions.** A global sequence `feed_revision`; a writer of a site's feed
//!   takes that site's row lock (`SELECT ... FROM sites FOR UPDATE`) before drawing
//!   a revision, so within one site revisions commit in the order they are drawn
//!   and a reader can never see revision N+1 of a site before N. (Across sites they
//!   may commit out of order; cursors are per site.)
//! - **Reads** of the feed run in one REPEATABLE READ READ ONLY transaction, so the
//!   floor check, the snapshot rows and its cursor are one consistent view even
//!   while another instance prunes.
//! - **Lock order** is always: `up_seqs` rows (ascending seq), the site row, the
//!   `box_epochs` row, the `boxes` row; nothing takes them in another order, so
//!   concurrent batches cannot deadlock.
//! - **Migrations** run under `pg_advisory_xact_lock`, so instances starting together
//!   apply each once.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls, Row};

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
    (
        1,
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_ingest_once.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_enrollment.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_cdr_quality.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/postgres/0005_call_center.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_call_center_results.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_hold_and_overflow.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_interrupted_calls.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/postgres/0009_box_certificates.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/postgres/0010_campaigns_customers.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/postgres/0011_edit_chains.sql"),
    ),
];

/// The staging table of bulk ingest, created once per pooled connection. Temporary:
/// private to the connection, not WAL-logged, emptied at every commit.
const CREATE_STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    seq BIGINT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, created_at_ms BIGINT NOT NULL,
    payload TEXT,
    call_id TEXT, direction TEXT, caller TEXT, caller_port BIGINT, callee TEXT,
    callee_port BIGINT, started_at_ms BIGINT, answered_at_ms BIGINT, ended_at_ms BIGINT,
    disposition TEXT, hangup_side TEXT, caller_sip_call_id TEXT, callee_sip_call_id TEXT,
    caller_loss_percent FLOAT8, caller_jitter_ms FLOAT8, caller_mos FLOAT8,
    callee_loss_percent FLOAT8, callee_jitter_ms FLOAT8, callee_mos FLOAT8,
    transfer_chain TEXT, queue TEXT, agent_id TEXT, queue_wait_ms BIGINT,
    blocked_mode TEXT, blocked_action TEXT, blocked_pattern TEXT, survey_score BIGINT,
    hold_ms BIGINT, queue_overflow TEXT, interrupted BOOLEAN
) ON COMMIT DELETE ROWS";

/// Column types of `ingest_stage`, in order, for the binary COPY.
const STAGE_TYPES: [Type; 35] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::BOOL,
];

/// Most `(box, epoch)` ids kept in the process cache before it is cleared (ids never
/// change, so clearing only costs a lookup).
const MAX_CACHED_EPOCHS: usize = 100_000;

/// Key of the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x6272_616e_6368; // "branch"

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// `box_epochs.id` by `(box, epoch)`: saves a round trip per batch.
    epoch_ids: Arc<Mutex<HashMap<(String, String), i64>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { op, source }
}

impl PostgresStore {
    /// Connects to `url` (a libpq-style string or `postgres://` URL) with a pool of
    /// at most `pool_size` connections and applies the migrations.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| Error::PoolConfig {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(CREATE_STAGE)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| Error::PoolConfig {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let store = PostgresStore {
            pool,
            epoch_ids: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|source| Error::Pool { source })
    }

    /// The numeric id of `(box, epoch)`, made on first use. Runs outside the ingest
    /// transaction (a new `box_epochs` row with ack 0 is harmless if the batch then
    /// fails), so ingest's lock order stays as documented above.
    async fn epoch_id(
        &self,
        client: &deadpool_postgres::Object,
        bx: &str,
        epoch: &str,
    ) -> Result<i64> {
        let cache_key = (bx.to_owned(), epoch.to_owned());
        if let Some(id) = self.cached_epoch(&cache_key) {
            return Ok(id);
        }
        let make = client
            .prepare_cached(
                "INSERT INTO box_epochs (box, epoch) VALUES ($1, $2) ON CONFLICT (box, epoch) DO NOTHING",
            )
            .await
            .map_err(pg("prepare make epoch"))?;
        client
            .execute(&make, &[&bx, &epoch])
            .await
            .map_err(pg("make epoch"))?;
        // A new statement: sees the row whether this call or a concurrent one made it.
        let read = client
            .prepare_cached("SELECT id FROM box_epochs WHERE box = $1 AND epoch = $2")
            .await
            .map_err(pg("prepare read epoch"))?;
        let id: i64 = client
            .query_one(&read, &[&bx, &epoch])
            .await
            .map_err(pg("read epoch"))?
            .get(0);
        let mut cache = self.epoch_ids.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_EPOCHS {
            cache.clear();
        }
        cache.insert(cache_key, id);
        Ok(id)
    }

    fn cached_epoch(&self, key: &(String, String)) -> Option<i64> {
        let cache = self.epoch_ids.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).copied()
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        for (version, script) in MIGRATIONS {
            let tx = client.transaction().await.map_err(pg("begin migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg("lock migrations"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
            )
            .await
            .map_err(pg("create schema_migrations"))?;
            let done: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                    &[version],
                )
                .await
                .map_err(pg("read schema_migrations"))?
                .get(0);
            if !done {
                tx.batch_execute(script)
                    .await
                    .map_err(pg("apply migration"))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
                    &[version, &crate::hq::now_ms()],
                )
                .await
                .map_err(pg("record migration"))?;
            }
            tx.commit().await.map_err(pg("commit migration"))?;
        }
        Ok(())
    }
}

fn to_site(r: &Row) -> Result<SiteRecord> {
    Ok(SiteRecord {
        id: r.get(0),
        name: r.get(1),
        file_policy: parse_policy(r.get(2))?,
        feed_floor: r.get(3),
        created_at_ms: r.get(4),
    })
}

const BOX_COLUMNS: &str = "id, site, cert_fingerprint, last_seen_ms, firmware_version, backlog,
                           oldest_pending_ms, created_at_ms, next_cert_fingerprint,
                           cert_renewed_at_ms, revoked_at_ms, revoked_reason";

fn to_box(r: &Row) -> BoxRecord {
    BoxRecord {
        id: r.get(0),
        site: r.get(1),
        cert_fingerprint: r.get(2),
        last_seen_ms: r.get(3),
        firmware_version: r.get(4),
        backlog: r.get(5),
        oldest_pending_ms: r.get(6),
        created_at_ms: r.get(7),
        next_cert_fingerprint: r.get(8),
        cert_renewed_at_ms: r.get(9),
        revoked_at_ms: r.get(10),
        revoked_reason: r.get(11),
    }
}

async fn read_box_for_update(tx: &Transaction<'_>, id: &str) -> Result<Option<BoxRecord>> {
    Ok(tx
        .query_opt(
            &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(pg("read box"))?
        .as_ref()
        .map(to_box))
}

async fn audit(
    tx: &Transaction<'_>,
    at_ms: i64,
    actor: &str,
    action: &str,
    box_id: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO admin_audit (at_ms, actor, action, box_id, detail)
         VALUES ($1, $2, $3, $4, $5)",
        &[&at_ms, &actor, &action, &box_id, &detail],
    )
    .await
    .map_err(pg("write audit row"))?;
    Ok(())
}

fn to_change(r: &Row) -> Result<Change> {
    let json: Option<&str> = r.get(3);
    Ok(Change {
        revision: r.get(0),
        entity: parse_kind(r.get(1))?,
        key: r.get(2),
        row: json.map(parse_entity).transpose()?,
    })
}

/// Takes the site's row lock; false when the site does not exist.
async fn lock_site(tx: &Transaction<'_>, site: &str) -> Result<bool> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM sites WHERE id = $1 FOR UPDATE")
        .await
        .map_err(pg("prepare lock site"))?;
    Ok(tx
        .query_opt(&stmt, &[&site])
        .await
        .map_err(pg("lock site"))?
        .is_some())
}

async fn current_row(
    tx: &impl GenericClient,
    site: &str,
    kind: EntityKind,
    key: &str,
) -> Result<Option<CurrentRow>> {
    let stmt = tx
        .prepare_cached(
            "SELECT revision, row_json, writer_box, chain_base FROM entities
              WHERE site = $1 AND kind = $2 AND key = $3",
        )
        .await
        .map_err(pg("prepare read entity"))?;
    let row = tx
        .query_opt(&stmt, &[&site, &entity_kind_name(kind), &key])
        .await
        .map_err(pg("read entity"))?;
    row.map(|r| {
        let json: Option<&str> = r.get(1);
        let writer: Option<String> = r.get(2);
        let chain_base: Option<i64> = r.get(3);
        Ok(CurrentRow {
            revision: r.get(0),
            row: json.map(parse_entity).transpose()?,
            writer: writer
                .zip(chain_base)
                .map(|(box_id, chain_base)| EditRun { box_id, chain_base }),
        })
    })
    .transpose()
}

/// Writes a row (or a tombstone) with the next revision and its feed row; `writer` is
/// the box whose edit it is and the start of its run of edits (`None`: an operator).
/// The caller holds the site lock.
async fn write_entity(
    tx: &Transaction<'_>,
    site: &str,
    kind: EntityKind,
    key: &str,
    row: Option<&Entity>,
    writer: Option<(&str, i64)>,
) -> Result<Change> {
    let revision: i64 = tx
        .query_one("SELECT nextval('feed_revision')", &[])
        .await
        .map_err(pg("next revision"))?
        .get(0);
    let json = row.map(entity_json);
    let kind_name = entity_kind_name(kind);
    let upsert = tx
        .prepare_cached(
            "INSERT INTO entities (site, kind, key, revision, row_json, deleted, writer_box, chain_base)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (site, kind, key) DO UPDATE
             SET revision = EXCLUDED.revision, row_json = EXCLUDED.row_json, deleted = EXCLUDED.deleted,
                 writer_box = EXCLUDED.writer_box, chain_base = EXCLUDED.chain_base",
        )
        .await
        .map_err(pg("prepare write entity"))?;
    tx.execute(
        &upsert,
        &[
            &site,
            &kind_name,
            &key,
            &revision,
            &json,
            &row.is_none(),
            &writer.map(|w| w.0),
            &writer.map(|w| w.1),
        ],
    )
    .await
    .map_err(pg("write entity"))?;
    let feed = tx
        .prepare_cached(
            "INSERT INTO feed (revision, site, kind, key, row_json) VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .map_err(pg("prepare write feed"))?;
    tx.execute(&feed, &[&revision, &site, &kind_name, &key, &json])
        .await
        .map_err(pg("write feed"))?;
    Ok(Change {
        revision,
        entity: kind,
        key: key.to_owned(),
        row: row.cloned(),
    })
}

async fn touch(client: &impl GenericClient, id: &str, h: &BoxHealth) -> Result<()> {
    let (has_backlog, backlog, oldest) = match h.backlog {
        Some((b, o)) => (true, Some(b), o),
        None => (false, None, None),
    };
    let stmt = client
        .prepare_cached(
            "UPDATE boxes SET last_seen_ms = GREATEST(COALESCE(last_seen_ms, 0), $2),
                    firmware_version = COALESCE($3, firmware_version),
                    backlog = CASE WHEN $4 THEN $5 ELSE backlog END,
                    oldest_pending_ms = CASE WHEN $4 THEN $6 ELSE oldest_pending_ms END
             WHERE id = $1",
        )
        .await
        .map_err(pg("prepare box health"))?;
    client
        .execute(
            &stmt,
            &[
                &id,
                &h.seen_at_ms,
                &h.firmware_version,
                &has_backlog,
                &backlog,
                &oldest,
            ],
        )
        .await
        .map_err(pg("update box health"))?;
    Ok(())
}

#[async_trait]
impl HqStore for PostgresStore {
    async fn rollout_db(&self) -> Result<Option<crate::hq::rollouts::api::RolloutDb>> {
        let db = crate::hq::rollouts::api::RolloutDb::open_postgres(self.pool.clone()).await?;
        Ok(Some(db))
    }

    async fn create_site(&self, id: &str, name: &str, now_ms: i64) -> Result<SiteRecord> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO sites (id, name, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &name, &now_ms],
            )
            .await
            .map_err(pg("insert site"))?;
        if n == 0 {
            return Err(Error::AlreadyExists {
                what: "site",
                key: id.to_owned(),
            });
        }
        Ok(SiteRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            file_policy: FilePolicy::None,
            feed_floor: 0,
            created_at_ms: now_ms,
        })
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, name, file_policy, feed_floor, created_at_ms FROM sites ORDER BY id",
                &[],
            )
            .await
            .map_err(pg("list sites"))?;
        rows.iter().map(to_site).collect()
    }

    async fn site(&self, id: &str) -> Result<Option<SiteRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, file_policy, feed_floor, created_at_ms FROM sites WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg("read site"))?;
        row.as_ref().map(to_site).transpose()
    }

    async fn set_file_policy(&self, site: &str, policy: &FilePolicy) -> Result<()> {
        let json =
            serde_json::to_string(policy).unwrap_or_else(|_| r#"{"mode":"none"}"#.to_owned());
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sites SET file_policy = $2 WHERE id = $1",
                &[&site, &json],
            )
            .await
            .map_err(pg("set file policy"))?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "site",
                key: site.to_owned(),
            });
        }
        Ok(())
    }

    async fn register_box(
        &self,
        id: &str,
        site: &str,
        cert_fingerprint: Option<&str>,
        now_ms: i64,
    ) -> Result<BoxRecord> {
        let client = self.client().await?;
        if client
            .query_opt("SELECT 1 FROM sites WHERE id = $1", &[&site])
            .await
            .map_err(pg("read site"))?
            .is_none()
        {
            return Err(Error::NotFound {
                what: "site",
                key: site.to_owned(),
            });
        }
        let n = client
            .execute(
                "INSERT INTO boxes (id, site, cert_fingerprint, created_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&id, &site, &cert_fingerprint, &now_ms],
            )
            .await
            .map_err(pg("insert box"))?;
        if n == 0 {
            return Err(Error::AlreadyExists {
                what: "box",
                key: id.to_owned(),
            });
        }
        Ok(BoxRecord {
            id: id.to_owned(),
            site: site.to_owned(),
            cert_fingerprint: cert_fingerprint.map(str::to_owned),
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
    }

    async fn set_box_fingerprint(&self, id: &str, fingerprint: Option<&str>) -> Result<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE boxes SET cert_fingerprint = $2, next_cert_fingerprint = NULL
                 WHERE id = $1",
                &[&id, &fingerprint],
            )
            .await
            .map_err(pg("set box fingerprint"))?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "box",
                key: id.to_owned(),
            });
        }
        Ok(())
    }

    async fn box_record(&self, id: &str) -> Result<Option<BoxRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = $1"))
            .await
            .map_err(pg("prepare read box"))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(pg("read box"))?;
        Ok(row.as_ref().map(to_box))
    }

    async fn enroll_box(&self, e: &EnrollmentRecord) -> Result<BoxRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin enroll"))?;
        // Lock the site row: it cannot go away underneath.
        if tx
            .query_opt("SELECT 1 FROM sites WHERE id = $1 FOR SHARE", &[&e.site])
            .await
            .map_err(pg("read site"))?
            .is_none()
        {
            return Err(Error::NotFound {
                what: "site",
                key: e.site.clone(),
            });
        }
        let used = tx
            .query_opt(
                "SELECT box_id, key_sha256 FROM enrollment_tokens WHERE token_id = $1 FOR UPDATE",
                &[&e.token_id],
            )
            .await
            .map_err(pg("read enrollment token"))?;
        if let Some(row) = &used {
            let (box_id, key): (String, String) = (row.get(0), row.get(1));
            if box_id != e.box_id || key != e.key_sha256 {
                return Err(Error::TokenUsed {
                    token_id: e.token_id.clone(),
                    used_by: box_id,
                });
            }
        }
        let existing = tx
            .query_opt(
                &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = $1 FOR UPDATE"),
                &[&e.box_id],
            )
            .await
            .map_err(pg("read box"))?
            .as_ref()
            .map(to_box);
        match existing {
            Some(b) if b.site != e.site => {
                return Err(Error::WrongSite {
                    box_id: e.box_id.clone(),
                    registered: b.site,
                    requested: e.site.clone(),
                })
            }
            Some(b) => {
                if b.revoked_at_ms.is_some() && used.is_some() {
                    return Err(Error::BoxRevoked {
                        box_id: e.box_id.clone(),
                        reason: b.revoked_reason.unwrap_or_default(),
                    });
                }
                tx.execute(
                    "UPDATE boxes SET cert_fingerprint = $2, next_cert_fingerprint = NULL,
                            revoked_at_ms = NULL, revoked_reason = NULL
                     WHERE id = $1",
                    &[&e.box_id, &e.cert_fingerprint],
                )
                .await
                .map_err(pg("pin box certificate"))?;
                if used.is_none() {
                    audit(
                        &tx,
                        e.now_ms,
                        &format!("box:{}", e.box_id),
                        "re-enroll",
                        &e.box_id,
                        &super::reenroll_detail(&b, e),
                    )
                    .await?;
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO boxes (id, site, cert_fingerprint, created_at_ms)
                     VALUES ($1, $2, $3, $4)",
                    &[&e.box_id, &e.site, &e.cert_fingerprint, &e.now_ms],
                )
                .await
                .map_err(pg("insert box"))?;
                audit(
                    &tx,
                    e.now_ms,
                    &format!("box:{}", e.box_id),
                    "enroll",
                    &e.box_id,
                    &format!(
                        "site {}, token {}, certificate sha256 {}",
                        e.site, e.token_id, e.cert_fingerprint
                    ),
                )
                .await?;
            }
        }
        if used.is_none() {
            // A concurrent enrollment with the same token blocks this insert until it
            // commits; then nothing is inserted and this one is refused (rolled back).
            let inserted = tx
                .execute(
                    "INSERT INTO enrollment_tokens
                         (token_id, box_id, site, key_sha256, expires_at_s, used_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (token_id) DO NOTHING",
                    &[
                        &e.token_id,
                        &e.box_id,
                        &e.site,
                        &e.key_sha256,
                        &e.expires_at_s,
                        &e.now_ms,
                    ],
                )
                .await
                .map_err(pg("record enrollment token"))?;
            if inserted == 0 {
                return Err(Error::TokenUsed {
                    token_id: e.token_id.clone(),
                    used_by: "another enrollment at the same time".to_owned(),
                });
            }
        }
        let row = tx
            .query_one(
                &format!("SELECT {BOX_COLUMNS} FROM boxes WHERE id = $1"),
                &[&e.box_id],
            )
            .await
            .map_err(pg("read box"))?;
        tx.commit().await.map_err(pg("commit enroll"))?;
        Ok(to_box(&row))
    }

    async fn enrollment_token_used(&self, token_id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM enrollment_tokens WHERE token_id = $1",
                &[&token_id],
            )
            .await
            .map_err(pg("read enrollment token"))?
            .is_some())
    }

    async fn revoke_box(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<BoxRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin revoke"))?;
        let Some(b) = read_box_for_update(&tx, id).await? else {
            return Err(Error::NotFound {
                what: "box",
                key: id.to_owned(),
            });
        };
        if b.revoked_at_ms.is_some() {
            return Err(Error::BoxRevoked {
                box_id: id.to_owned(),
                reason: b.revoked_reason.unwrap_or_default(),
            });
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE boxes SET revoked_at_ms = $2, revoked_reason = $3,
                            next_cert_fingerprint = NULL
                     WHERE id = $1 RETURNING {BOX_COLUMNS}"
                ),
                &[&id, &now_ms, &reason],
            )
            .await
            .map_err(pg("revoke box"))?;
        audit(&tx, now_ms, actor, "revoke", id, reason).await?;
        tx.commit().await.map_err(pg("commit revoke"))?;
        Ok(to_box(&row))
    }

    async fn stage_renewal(&self, r: &RenewalRecord) -> Result<BoxRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin renewal"))?;
        let Some(b) = read_box_for_update(&tx, &r.box_id).await? else {
            return Err(Error::NotFound {
                what: "box",
                key: r.box_id.clone(),
            });
        };
        let promote = renewal_decision(&b, &r.presented_fingerprint)?;
        let current = if promote {
            Some(r.presented_fingerprint.clone())
        } else {
            b.cert_fingerprint.clone()
        };
        let row = tx
            .query_one(
                &format!(
                    "UPDATE boxes SET cert_fingerprint = $2, next_cert_fingerprint = $3,
                            cert_renewed_at_ms = $4
                     WHERE id = $1 RETURNING {BOX_COLUMNS}"
                ),
                &[&r.box_id, &current, &r.new_fingerprint, &r.now_ms],
            )
            .await
            .map_err(pg("stage renewal"))?;
        audit(
            &tx,
            r.now_ms,
            &format!("box:{}", r.box_id),
            "renew",
            &r.box_id,
            &format!(
                "renewed with certificate sha256 {}; new certificate sha256 {}",
                r.presented_fingerprint, r.new_fingerprint
            ),
        )
        .await?;
        tx.commit().await.map_err(pg("commit renewal"))?;
        Ok(to_box(&row))
    }

    async fn promote_next_cert(&self, id: &str, fingerprint: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE boxes SET cert_fingerprint = next_cert_fingerprint,
                        next_cert_fingerprint = NULL
                 WHERE id = $1 AND next_cert_fingerprint = $2 AND revoked_at_ms IS NULL",
                &[&id, &fingerprint],
            )
            .await
            .map_err(pg("promote certificate"))?;
        Ok(n == 1)
    }

    async fn audit(&self, box_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit.clamp(1, MAX_AUDIT_PAGE)).unwrap_or(1);
        let rows = client
            .query(
                "SELECT id, at_ms, actor, action, box_id, detail FROM admin_audit
                 WHERE $1::TEXT IS NULL OR box_id = $1 ORDER BY id DESC LIMIT $2",
                &[&box_id, &limit],
            )
            .await
            .map_err(pg("read audit"))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                box_id: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }

    async fn boxes(&self) -> Result<Vec<BoxRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {BOX_COLUMNS} FROM boxes ORDER BY site, id"),
                &[],
            )
            .await
            .map_err(pg("list boxes"))?;
        Ok(rows.iter().map(to_box).collect())
    }

    async fn touch_box(&self, id: &str, health: &BoxHealth) -> Result<()> {
        let client = self.client().await?;
        touch(&client, id, health).await
    }

    async fn ingest(
        &self,
        box_rec: &BoxRecord,
        batch: &ValidBatch,
        health: &BoxHealth,
    ) -> Result<IngestOutcome> {
        let mut client = self.client().await?;
        let epoch_id = self.epoch_id(&client, &box_rec.id, &batch.epoch).await?;
        let tx = client.transaction().await.map_err(pg("begin ingest"))?;
        let outcome = ingest(&tx, epoch_id, box_rec, batch, health).await?;
        tx.commit().await.map_err(pg("commit ingest"))?;
        Ok(outcome)
    }

    async fn put_entity(
        &self,
        site: &str,
        entity: &Entity,
        base_revision: Option<i64>,
    ) -> Result<Change> {
        validate_entity(entity)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin put entity"))?;
        if !lock_site(&tx, site).await? {
            return Err(Error::NotFound {
                what: "site",
                key: site.to_owned(),
            });
        }
        let kind = entity.kind();
        if let Some(expected) = base_revision {
            let current = current_row(&tx, site, kind, entity.key())
                .await?
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
        let change = write_entity(&tx, site, kind, entity.key(), Some(entity), None).await?;
        tx.commit().await.map_err(pg("commit put entity"))?;
        Ok(change)
    }

    async fn delete_entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Change> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("begin delete entity"))?;
        let locked = lock_site(&tx, site).await?;
        let live = locked
            && current_row(&tx, site, kind, key)
                .await?
                .is_some_and(|c| c.row.is_some());
        if !live {
            return Err(Error::NotFound {
                what: entity_kind_name(kind),
                key: key.to_owned(),
            });
        }
        let change = write_entity(&tx, site, kind, key, None, None).await?;
        tx.commit().await.map_err(pg("commit delete entity"))?;
        Ok(change)
    }

    async fn entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Option<Change>> {
        let client = self.client().await?;
        Ok(current_row(&client, site, kind, key).await?.and_then(|c| {
            c.row.map(|row| Change {
                revision: c.revision,
                entity: kind,
                key: key.to_owned(),
                row: Some(row),
            })
        }))
    }

    async fn entities(&self, site: &str, kind: EntityKind) -> Result<Vec<Change>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT revision, kind, key, row_json FROM entities
                 WHERE site = $1 AND kind = $2 AND NOT deleted ORDER BY key",
                &[&site, &entity_kind_name(kind)],
            )
            .await
            .map_err(pg("list entities"))?;
        rows.iter().map(to_change).collect()
    }

    async fn read_feed(&self, site: &str, since: i64, limit: usize) -> Result<FeedRead> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg("begin feed read"))?;
        let floor_stmt = tx
            .prepare_cached(
                "SELECT s.feed_floor,
                        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM feed_revision),
                        (SELECT COALESCE(MAX(revision), 0) FROM entities WHERE site = s.id)
                 FROM sites s WHERE s.id = $1",
            )
            .await
            .map_err(pg("prepare feed state"))?;
        let state = tx
            .query_opt(&floor_stmt, &[&site])
            .await
            .map_err(pg("read feed state"))?
            .ok_or_else(|| Error::NotFound {
                what: "site",
                key: site.to_owned(),
            })?;
        let (floor, global, site_rev): (i64, i64, i64) = (state.get(0), state.get(1), state.get(2));
        let read = if feed_decision(since, floor, global, site_rev) {
            let rows = tx
                .query(
                    "SELECT revision, kind, key, row_json FROM entities
                     WHERE site = $1 AND NOT deleted ORDER BY kind, key",
                    &[&site],
                )
                .await
                .map_err(pg("read snapshot"))?;
            FeedRead::Snapshot {
                rows: rows.iter().map(to_change).collect::<Result<_>>()?,
                cursor: site_rev,
            }
        } else {
            let stmt = tx
                .prepare_cached(
                    "SELECT revision, kind, key, row_json FROM feed
                     WHERE site = $1 AND revision > $2 ORDER BY revision LIMIT $3",
                )
                .await
                .map_err(pg("prepare read feed"))?;
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            let rows = tx
                .query(&stmt, &[&site, &since, &fetch])
                .await
                .map_err(pg("read feed"))?;
            let more = rows.len() > limit;
            FeedRead::Page {
                changes: rows
                    .iter()
                    .take(limit)
                    .map(to_change)
                    .collect::<Result<_>>()?,
                more,
            }
        };
        tx.commit().await.map_err(pg("end feed read"))?;
        Ok(read)
    }

    async fn prune_feed(&self, keep_revisions: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin prune"))?;
        let row = tx
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM feed_revision",
                &[],
            )
            .await
            .map_err(pg("read revision"))?;
        let cutoff = row.get::<_, i64>(0).saturating_sub(keep_revisions.max(0));
        let pruned: i64 = tx
            .query_one(
                "WITH gone AS (DELETE FROM feed WHERE revision <= $1 RETURNING site, revision),
                      floors AS (SELECT site, MAX(revision) AS top, COUNT(*) AS n FROM gone GROUP BY site),
                      raised AS (UPDATE sites s SET feed_floor = GREATEST(s.feed_floor, f.top)
                                 FROM floors f WHERE s.id = f.site RETURNING 1)
                 SELECT COALESCE(SUM(n), 0)::int8 FROM floors",
                &[&cutoff],
            )
            .await
            .map_err(pg("prune feed"))?
            .get(0);
        tx.commit().await.map_err(pg("commit prune"))?;
        Ok(u64::try_from(pruned).unwrap_or(0))
    }

    async fn cdrs(&self, query: &CdrQuery) -> Result<Vec<CdrRow>> {
        let client = self.client().await?;
        let limit = i64::try_from(query.limit()).unwrap_or(100);
        let rows = client
            .query(
                "SELECT id, box, site, call_id, direction, caller, caller_port, callee, callee_port,
                        started_at_ms, answered_at_ms, ended_at_ms, disposition, hangup_side,
                        caller_sip_call_id, callee_sip_call_id,
                        caller_loss_percent, caller_jitter_ms, caller_mos,
                        callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain,
                        queue, agent_id, queue_wait_ms, blocked_mode, blocked_action,
                        blocked_pattern, survey_score, hold_ms, queue_overflow, interrupted
                 FROM cdrs
                 WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR box = $2)
                   AND ($3::int8 IS NULL OR started_at_ms >= $3) AND ($4::int8 IS NULL OR started_at_ms < $4)
                   AND id > $5 AND ($7::text IS NULL OR queue = $7)
                 ORDER BY id LIMIT $6",
                &[
                    &query.site,
                    &query.box_id,
                    &query.from_ms,
                    &query.to_ms,
                    &query.after.unwrap_or(0),
                    &limit,
                    &query.queue,
                ],
            )
            .await
            .map_err(pg("query cdrs"))?;
        Ok(rows
            .iter()
            .map(|r| CdrRow {
                id: r.get(0),
                box_id: r.get(1),
                site: r.get(2),
                call_id: r.get(3),
                direction: r.get(4),
                caller: r.get(5),
                caller_port: r.get(6),
                callee: r.get(7),
                callee_port: r.get(8),
                started_at_ms: r.get(9),
                answered_at_ms: r.get(10),
                ended_at_ms: r.get(11),
                disposition: r.get(12),
                hangup_side: r.get(13),
                caller_sip_call_id: r.get(14),
                callee_sip_call_id: r.get(15),
                caller_quality: super::quality_of([r.get(16), r.get(17), r.get(18)]),
                callee_quality: super::quality_of([r.get(19), r.get(20), r.get(21)]),
                transfer_chain: super::transfer_chain_of(r.get(22)),
                queue: super::queue_of(r.get(23), r.get(24), r.get(25)),
                blocked: super::blocked_of(r.get(26), r.get(27), r.get(28)),
                survey_score: super::score_of(r.get(29)),
                hold_ms: r.get(30),
                queue_overflow: super::overflow_of(r.get(31)),
                interrupted: r.get(32),
            })
            .collect())
    }

    async fn agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentStateRow>> {
        let client = self.client().await?;
        let limit = i64::try_from(query.limit()).unwrap_or(100);
        let rows = client
            .query(
                "SELECT id, box, site, agent_id, state, reason, extension, call_id, at_ms
                 FROM agent_states
                 WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR box = $2)
                   AND ($3::text IS NULL OR agent_id = $3)
                   AND ($4::int8 IS NULL OR at_ms >= $4) AND ($5::int8 IS NULL OR at_ms < $5)
                   AND id > $6
                 ORDER BY id LIMIT $7",
                &[
                    &query.site,
                    &query.box_id,
                    &query.agent,
                    &query.from_ms,
                    &query.to_ms,
                    &query.after.unwrap_or(0),
                    &limit,
                ],
            )
            .await
            .map_err(pg("query agent states"))?;
        rows.iter()
            .map(|r| {
                Ok(AgentStateRow {
                    id: r.get(0),
                    box_id: r.get(1),
                    site: r.get(2),
                    record: super::agent_state_record(
                        r.get(3),
                        r.get::<_, &str>(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                        r.get(8),
                    )?,
                })
            })
            .collect()
    }

    async fn campaign_results(
        &self,
        query: &CampaignResultQuery,
    ) -> Result<Vec<CampaignResultRow>> {
        let client = self.client().await?;
        let st = crm::campaign_results_query(query);
        crm::campaign_result_rows(crm_query(&client, &st, "query campaign results").await?)
    }

    async fn campaign_progress(
        &self,
        query: &CampaignProgressQuery,
    ) -> Result<Vec<CampaignProgressRow>> {
        let client = self.client().await?;
        let st = crm::campaign_progress_query(query);
        crm::campaign_progress_rows(crm_query(&client, &st, "query campaign progress").await?)
    }

    async fn service_records(&self, query: &ServiceRecordQuery) -> Result<Vec<ServiceRecordRow>> {
        let client = self.client().await?;
        let st = crm::service_records_query(query);
        let rows = crm_query(&client, &st, "query service records").await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let notes = crm_query(&client, &crm::call_notes_query(row), "query call notes").await?;
            out.push(crm::service_record_row(row, notes)?);
        }
        Ok(out)
    }

    async fn box_customers(&self, query: &CustomerQuery) -> Result<Vec<CustomerRow>> {
        let client = self.client().await?;
        let st = crm::customers_query(query);
        crm::customer_rows(crm_query(&client, &st, "query customers").await?)
    }

    async fn daily_report(&self, query: &ReportQuery) -> Result<Vec<DailyReportRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT site, FLOOR(started_at_ms::numeric / 86400000)::int8 AS day, COUNT(*),
                        COUNT(*) FILTER (WHERE disposition = 'answered'),
                        COUNT(*) FILTER (WHERE direction = 'inbound' AND disposition <> 'answered')
                 FROM cdrs
                 WHERE ($1::text IS NULL OR site = $1)
                   AND ($2::int8 IS NULL OR started_at_ms >= $2) AND ($3::int8 IS NULL OR started_at_ms < $3)
                 GROUP BY site, day ORDER BY site, day",
                &[&query.site, &query.from_ms, &query.to_ms],
            )
            .await
            .map_err(pg("daily report"))?;
        Ok(rows
            .iter()
            .map(|r| DailyReportRow {
                site: r.get(0),
                day: r.get(1),
                calls: r.get(2),
                answered: r.get(3),
                missed: r.get(4),
            })
            .collect())
    }

    async fn recording_size(&self, site: &str, sha256: &str) -> Result<Option<u64>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size FROM recordings WHERE site = $1 AND sha256 = $2 LIMIT 1",
                &[&site, &sha256],
            )
            .await
            .map_err(pg("read recording"))?;
        Ok(row.and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok()))
    }

    async fn counts(&self, box_id: &str) -> Result<RecordCounts> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM up_seqs u JOIN box_epochs e ON e.id = u.epoch_id
                         WHERE e.box = $1),
                        (SELECT COUNT(*) FROM cdrs WHERE box = $1),
                        (SELECT COUNT(*) FROM audit_rows WHERE box = $1),
                        (SELECT COUNT(*) FROM recordings WHERE box = $1),
                        (SELECT COUNT(*) FROM agent_states WHERE box = $1)",
                &[&box_id],
            )
            .await
            .map_err(pg("count records"))?;
        Ok(RecordCounts {
            up_records: r.get(0),
            cdrs: r.get(1),
            audit: r.get(2),
            recordings: r.get(3),
            agent_states: r.get(4),
        })
    }
}

async fn ingest(
    tx: &Transaction<'_>,
    epoch_id: i64,
    box_rec: &BoxRecord,
    batch: &ValidBatch,
    health: &BoxHealth,
) -> Result<IngestOutcome> {
    let (bx, site, epoch) = (
        box_rec.id.as_str(),
        box_rec.site.as_str(),
        batch.epoch.as_str(),
    );
    let records = &batch.records;
    let mut inserted = HashSet::new();
    if !records.is_empty() {
        stage(tx, batch).await?;
        let stmt = tx
            .prepare_cached(
                // One statement: the new ledger rows, and the CDR projection of exactly
                // those (joined on what the insert returned). Ordered by seq so that
                // `cdrs.id`, the admin API's page cursor, ascends in the box's order.
                "WITH new AS (
                     INSERT INTO up_seqs (epoch_id, seq, kind, key, created_at_ms, received_at_ms, payload)
                     SELECT $1, seq, kind, key, created_at_ms, $2, payload FROM ingest_stage
                     ON CONFLICT DO NOTHING RETURNING seq
                 ), cdr AS (
                     INSERT INTO cdrs (box, site, epoch, seq, call_id, direction, caller, caller_port,
                         callee, callee_port, started_at_ms, answered_at_ms, ended_at_ms,
                         disposition, hangup_side, caller_sip_call_id, callee_sip_call_id,
                         caller_loss_percent, caller_jitter_ms, caller_mos,
                         callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain,
                         queue, agent_id, queue_wait_ms, blocked_mode, blocked_action,
                         blocked_pattern, survey_score, hold_ms, queue_overflow, interrupted)
                     SELECT $3, $4, $5, s.seq, s.call_id, s.direction, s.caller, s.caller_port,
                         s.callee, s.callee_port, s.started_at_ms, s.answered_at_ms, s.ended_at_ms,
                         s.disposition, s.hangup_side, s.caller_sip_call_id, s.callee_sip_call_id,
                         s.caller_loss_percent, s.caller_jitter_ms, s.caller_mos,
                         s.callee_loss_percent, s.callee_jitter_ms, s.callee_mos, s.transfer_chain,
                         s.queue, s.agent_id, s.queue_wait_ms, s.blocked_mode, s.blocked_action,
                         s.blocked_pattern, s.survey_score, s.hold_ms, s.queue_overflow,
                         COALESCE(s.interrupted, FALSE)
                     FROM ingest_stage s JOIN new n ON n.seq = s.seq
                     WHERE s.kind = 'cdr'
                     ORDER BY s.seq
                 )
                 SELECT seq FROM new",
            )
            .await
            .map_err(pg("prepare insert records"))?;
        let rows = tx
            .query(&stmt, &[&epoch_id, &health.seen_at_ms, &bx, &site, &epoch])
            .await
            .map_err(pg("insert records"))?;
        inserted.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    insert_projections(tx, bx, site, epoch, batch, &inserted).await?;

    let mut conflicts = Vec::new();
    let mut feed_changed = false;
    let mut site_locked = false;
    let mut resent_edits = Vec::new();
    for r in records {
        let TypedPayload::Edit(edit) = &r.typed else {
            continue;
        };
        if !inserted.contains(&r.seq) {
            resent_edits.push(r.seq);
            continue;
        }
        if !site_locked {
            lock_site(tx, site).await?;
            site_locked = true;
        }
        let kind = edit.row.kind();
        let current = current_row(tx, site, kind, edit.row.key()).await?;
        match decide_edit(r.seq, bx, edit, current.as_ref()) {
            EditDecision::Apply { row, chain_base } => {
                write_entity(
                    tx,
                    site,
                    kind,
                    edit.row.key(),
                    row.as_ref(),
                    Some((bx, chain_base)),
                )
                .await?;
                feed_changed = true;
            }
            EditDecision::Reject(conflict) => {
                tx.execute(
                    "INSERT INTO edit_conflicts (box, epoch, seq, conflict) VALUES ($1, $2, $3, $4)",
                    &[&bx, &epoch, &r.seq, &conflict_json(&conflict)],
                )
                .await
                .map_err(pg("insert conflict"))?;
                conflicts.push(conflict);
            }
        }
    }
    if !resent_edits.is_empty() {
        let rows = tx
            .query(
                "SELECT conflict FROM edit_conflicts WHERE box = $1 AND epoch = $2 AND seq = ANY($3)
                 ORDER BY seq",
                &[&bx, &epoch, &resent_edits],
            )
            .await
            .map_err(pg("read conflicts"))?;
        for row in rows {
            conflicts.push(parse_conflict(row.get(0))?);
        }
        conflicts.sort_by_key(|c| c.seq);
    }

    let lock = tx
        .prepare_cached(
            "INSERT INTO box_epochs (box, epoch) VALUES ($1, $2)
             ON CONFLICT (box, epoch) DO UPDATE SET acked_seq = box_epochs.acked_seq
             RETURNING acked_seq",
        )
        .await
        .map_err(pg("prepare lock ack"))?;
    let acked: i64 = tx
        .query_one(&lock, &[&bx, &epoch])
        .await
        .map_err(pg("lock ack"))?
        .get(0);
    let compute = tx
        .prepare_cached(
            // The contiguous run after the stored ack: numbered in seq order, the rows
            // $2+1, $2+2, ... have `seq - row_number() = $2`; rows after a gap have more.
            // Only rows above the ack are read (an index range scan on the unique
            // (epoch_id, seq) key), so the cost is the size of the batch, not of
            // everything the box ever sent (an anti-join on `seq + 1` made every
            // batch scan the box's whole history: quadratic over a catch-up).
            "SELECT COALESCE(MAX(seq), $2::int8) FROM (
                 SELECT seq, seq - ROW_NUMBER() OVER (ORDER BY seq) AS run
                 FROM up_seqs WHERE epoch_id = $1 AND seq > $2::int8
             ) after_ack WHERE run = $2::int8",
        )
        .await
        .map_err(pg("prepare compute ack"))?;
    let acked_seq: i64 = tx
        .query_one(&compute, &[&epoch_id, &acked])
        .await
        .map_err(pg("compute ack"))?
        .get(0);
    if acked_seq > acked {
        tx.execute(
            "UPDATE box_epochs SET acked_seq = GREATEST(acked_seq, $3) WHERE box = $1 AND epoch = $2",
            &[&bx, &epoch, &acked_seq],
        )
        .await
        .map_err(pg("store ack"))?;
    }
    touch(tx, bx, health).await?;
    Ok(IngestOutcome {
        acked_seq,
        conflicts,
        inserted: inserted.len(),
        feed_changed,
    })
}

/// Copies a batch into the (empty) staging table with one binary COPY.
async fn stage(tx: &Transaction<'_>, batch: &ValidBatch) -> Result<()> {
    let copy = tx
        .prepare_cached(
            "COPY ingest_stage (seq, kind, key, created_at_ms, payload, call_id, direction, caller,
                 caller_port, callee, callee_port, started_at_ms, answered_at_ms, ended_at_ms,
                 disposition, hangup_side, caller_sip_call_id, callee_sip_call_id,
                 caller_loss_percent, caller_jitter_ms, caller_mos,
                 callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain,
                 queue, agent_id, queue_wait_ms, blocked_mode, blocked_action, blocked_pattern,
                 survey_score, hold_ms, queue_overflow, interrupted)
             FROM STDIN BINARY",
        )
        .await
        .map_err(pg("prepare stage batch"))?;
    let sink = tx.copy_in(&copy).await.map_err(pg("stage batch"))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &STAGE_TYPES));
    for r in &batch.records {
        let cdr = match &r.typed {
            TypedPayload::Cdr(c) => Some(c),
            _ => None,
        };
        let caller_port = cdr.and_then(|c| c.caller_port).map(i64::from);
        let callee_port = cdr.and_then(|c| c.callee_port).map(i64::from);
        let caller_q = cdr.and_then(|c| c.caller_quality);
        let callee_q = cdr.and_then(|c| c.callee_quality);
        let quality = [
            caller_q.map(|q| q.loss_percent),
            caller_q.map(|q| q.jitter_ms),
            caller_q.map(|q| q.mos),
            callee_q.map(|q| q.loss_percent),
            callee_q.map(|q| q.jitter_ms),
            callee_q.map(|q| q.mos),
        ];
        let chain = cdr.and_then(|c| super::transfer_chain_json(&c.transfer_chain));
        let queue = cdr.and_then(|c| c.queue.as_ref());
        let blocked = cdr.and_then(|c| c.blocked.as_ref());
        let score = cdr.and_then(|c| c.survey_score).map(i64::from);
        let hold = cdr.and_then(|c| c.hold_ms);
        let overflow = cdr.and_then(|c| c.queue_overflow).map(|o| o.as_str());
        let interrupted = cdr.map(|c| c.interrupted);
        let row: [&(dyn ToSql + Sync); 35] = [
            &r.seq,
            &r.kind.as_str(),
            &r.key,
            &r.created_at_ms,
            &r.stored_payload(),
            &cdr.map(|c| c.call_id.as_str()),
            &cdr.map(|c| c.direction.as_str()),
            &cdr.map(|c| c.caller.as_str()),
            &caller_port,
            &cdr.map(|c| c.callee.as_str()),
            &callee_port,
            &cdr.map(|c| c.started_at_ms),
            &cdr.and_then(|c| c.answered_at_ms),
            &cdr.map(|c| c.ended_at_ms),
            &cdr.map(|c| c.disposition.as_str()),
            &cdr.map(|c| c.hangup_side.as_str()),
            &cdr.and_then(|c| c.caller_sip_call_id.as_deref()),
            &cdr.and_then(|c| c.callee_sip_call_id.as_deref()),
            &quality[0],
            &quality[1],
            &quality[2],
            &quality[3],
            &quality[4],
            &quality[5],
            &chain,
            &queue.map(|q| q.queue.as_str()),
            &queue.and_then(|q| q.agent.as_deref()),
            &queue.map(|q| q.wait_ms),
            &blocked.map(|b| b.mode.as_str()),
            &blocked.map(|b| b.action.as_str()),
            &blocked.and_then(|b| b.pattern.as_deref()),
            &score,
            &hold,
            &overflow,
            &interrupted,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(pg("stage batch"))?;
    }
    writer.as_mut().finish().await.map_err(pg("stage batch"))?;
    Ok(())
}

fn crm_params(params: &[crm::Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                crm::Param::Text(t) => Box::new(t.clone()),
                crm::Param::OptText(t) => Box::new(t.clone()),
                crm::Param::Int(i) => Box::new(*i),
                crm::Param::OptInt(i) => Box::new(*i),
                crm::Param::Bool(b) => Box::new(*b),
            }
        })
        .collect()
}

/// Runs a [`crm::Statement`] that answers no rows.
async fn crm_execute<C: GenericClient + Sync>(
    client: &C,
    st: &crm::Statement,
    op: &'static str,
) -> Result<u64> {
    let params = crm_params(&st.params);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    client.execute(st.sql, &refs).await.map_err(pg(op))
}

/// Runs a [`crm::Statement`] query, reading its columns by their types.
async fn crm_query<C: GenericClient + Sync>(
    client: &C,
    st: &crm::Statement,
    op: &'static str,
) -> Result<Vec<Vec<crm::Cell>>> {
    let params = crm_params(&st.params);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    let rows = client.query(st.sql, &refs).await.map_err(pg(op))?;
    Ok(rows
        .iter()
        .map(|r| {
            st.cols
                .iter()
                .enumerate()
                .map(|(i, col)| match col {
                    crm::Col::Int => crm::Cell::Int(r.get(i)),
                    crm::Col::Text => crm::Cell::Text(r.get(i)),
                })
                .collect()
        })
        .collect())
}

async fn insert_projections(
    tx: &Transaction<'_>,
    bx: &str,
    site: &str,
    epoch: &str,
    batch: &ValidBatch,
    inserted: &HashSet<i64>,
) -> Result<()> {
    // CDRs were projected with the ledger insert; the rarer kinds follow, row by row.
    let new = || batch.records.iter().filter(|r| inserted.contains(&r.seq));
    for r in new() {
        match &r.typed {
            TypedPayload::Audit(a) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO audit_rows (box, site, epoch, seq, audit_id, at_ms, actor, source,
                             action, resource, target, result, detail, prev_hash, hash)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    )
                    .await
                    .map_err(pg("prepare insert audit row"))?;
                tx.execute(
                    &stmt,
                    &[
                        &bx,
                        &site,
                        &epoch,
                        &r.seq,
                        &a.id,
                        &a.at_ms,
                        &a.actor,
                        &a.source,
                        &a.action,
                        &a.resource,
                        &a.target,
                        &a.result,
                        &a.detail,
                        &a.prev_hash,
                        &a.hash,
                    ],
                )
                .await
                .map_err(pg("insert audit row"))?;
            }
            TypedPayload::Recording(m) => {
                let size = i64::try_from(m.size).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO recordings (box, site, epoch, seq, call_id, sha256, size, started_at_ms,
                         duration_ms, format)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &bx, &site, &epoch, &r.seq, &m.call_id, &m.sha256, &size, &m.started_at_ms,
                        &m.duration_ms, &m.format,
                    ],
                )
                .await
                .map_err(pg("insert recording"))?;
            }
            TypedPayload::Disposition(d) => {
                let digit = i32::from(d.digit);
                tx.execute(
                    "INSERT INTO dispositions (site, call_id, box, epoch, seq, agent_id, digit,
                         type_name, customer_hq_id, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (site, call_id) DO UPDATE SET
                         box = excluded.box, epoch = excluded.epoch, seq = excluded.seq,
                         agent_id = excluded.agent_id, digit = excluded.digit,
                         type_name = excluded.type_name,
                         customer_hq_id = excluded.customer_hq_id, at_ms = excluded.at_ms
                     WHERE excluded.at_ms >= dispositions.at_ms",
                    &[
                        &site,
                        &d.call_id,
                        &bx,
                        &epoch,
                        &r.seq,
                        &d.agent_id,
                        &digit,
                        &d.type_name,
                        &d.customer_hq_id,
                        &d.at_ms,
                    ],
                )
                .await
                .map_err(pg("upsert disposition"))?;
            }
            TypedPayload::CampaignResult(_)
            | TypedPayload::CampaignProgress(_)
            | TypedPayload::ServiceRecord(_)
            | TypedPayload::CallNote(_)
            | TypedPayload::Customer(_) => {
                let Some(p) = crm::projection(site, bx, epoch, r) else {
                    continue;
                };
                crm_execute(tx, &p.write, "project crm record").await?;
                if let Some((row, numbers)) = p.numbers {
                    let stored = crm_query(tx, &row, "find customer row").await?;
                    if let Some(id) = stored
                        .first()
                        .and_then(|r| r.first())
                        .and_then(crm::Cell::int)
                    {
                        for st in crm::customer_numbers(id, &numbers) {
                            crm_execute(tx, &st, "index customer numbers").await?;
                        }
                    }
                }
            }
            TypedPayload::AgentState(a) => {
                tx.execute(
                    "INSERT INTO agent_states (box, site, epoch, seq, agent_id, state, reason,
                         extension, call_id, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &bx,
                        &site,
                        &epoch,
                        &r.seq,
                        &a.agent_id,
                        &a.state.as_str(),
                        &a.reason,
                        &a.extension,
                        &a.call_id,
                        &a.at_ms,
                    ],
                )
                .await
                .map_err(pg("insert agent state"))?;
            }
            _ => {}
        }
    }
    Ok(())
}
