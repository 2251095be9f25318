//! The HQ store: one async trait, [`HqStore`], with two implementations.
//!
//! - [`sqlite::SqliteStore`]: the embedded default (rusqlite, WAL, `synchronous=FULL`).
//!   One writer connection behind a mutex, used on tokio's blocking pool, and a small
//!   pool of reader connections. One process only.
//! - [`postgres::PostgresStore`]: production (tokio-postgres with a deadpool pool).
//!   Several `branch-hq` instances may share one database; see that module for how
//!   revisions, acks and edits stay correct under concurrency.
//!
//! Both apply their numbered migrations (`sync/migrations/<store>/NNNN_*.sql`) at open,
//! each in a transaction, recorded in `schema_migrations`; applying them again is a
//! no-op.
//!
//! The decisions that do not depend on the database (whether an offline edit applies,
//! what the feed answers) are pure functions here, used by both stores.

pub mod crm;
pub mod postgres;
pub mod sqlite;

pub use self::crm::{
    CampaignProgressQuery, CampaignProgressRow, CampaignResultQuery, CampaignResultRow,
    CustomerQuery, CustomerRow, ServiceDisposition, ServiceRecordQuery, ServiceRecordRow,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hq::validate::ValidBatch;
use crate::hq::Result;
use crate::wire::{
    AgentStateName, AgentStateRecord, CdrBlocked, CdrBlockedAction, CdrBlockedMode, CdrLegQuality,
    CdrQueue, CdrQueueOverflow, CdrTransferHop, Change, Conflict, EditOp, Entity, EntityEdit,
    EntityKind, FilePolicy,
};

/// A site (a branch office).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Site id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Which recording files HQ wants from the site's boxes.
    pub file_policy: FilePolicy,
    /// Highest feed revision of this site that was pruned (0: none): a box whose
    /// cursor is below it gets a snapshot.
    pub feed_floor: i64,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A box and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxRecord {
    /// Box id (the CN of its device certificate).
    pub id: String,
    /// The site it belongs to.
    pub site: String,
    /// sha256 (hex) of the DER of the one certificate HQ accepts for it, if pinned.
    pub cert_fingerprint: Option<String>,
    /// Last request, ms since the Unix epoch.
    pub last_seen_ms: Option<i64>,
    /// Firmware version it last reported.
    pub firmware_version: Option<String>,
    /// Outbox rows it last reported pending.
    pub backlog: Option<i64>,
    /// Creation time of its oldest pending outbox row.
    pub oldest_pending_ms: Option<i64>,
    /// When it was registered.
    pub created_at_ms: i64,
    /// sha256 (hex) of the renewed certificate HQ issued last and the box has not
    /// used yet: accepted alongside `cert_fingerprint` until the box's first request
    /// with it, which makes it the current one ([`HqStore::promote_next_cert`]).
    pub next_cert_fingerprint: Option<String>,
    /// When the box last renewed its certificate (ms since the Unix epoch).
    pub cert_renewed_at_ms: Option<i64>,
    /// When an operator revoked the box (`None`: not revoked). A revoked box is
    /// refused on every mutual-TLS request until it re-enrolls with a fresh token.
    pub revoked_at_ms: Option<i64>,
    /// The operator's reason for the revocation.
    pub revoked_reason: Option<String>,
}

/// A renewed certificate HQ signed for a box, for [`HqStore::stage_renewal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalRecord {
    /// The box (the CN of the certificate it renewed with).
    pub box_id: String,
    /// sha256 (hex) of the certificate the renewal request came with.
    pub presented_fingerprint: String,
    /// sha256 (hex) of the new certificate.
    pub new_fingerprint: String,
    /// Now, ms since the Unix epoch.
    pub now_ms: i64,
}

/// One row of HQ's audit of identity changes (`admin_audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id (ascending).
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who: `admin` (the admin API's bearer token) or `box:<id>`.
    pub actor: String,
    /// `revoke`, `enroll`, `re-enroll`, `renew`.
    pub action: String,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// What, in words (the reason, the fingerprints).
    pub detail: String,
}

/// Most audit rows in one answer of [`HqStore::audit`].
pub const MAX_AUDIT_PAGE: usize = 1000;

/// What [`HqStore::stage_renewal`] does to a box's certificates, decided from its
/// row: `Ok(promote)` where `promote` says the presented certificate is the staged
/// next one (so it becomes current before the newer one is staged).
pub(crate) fn renewal_decision(rec: &BoxRecord, presented: &str) -> Result<bool> {
    if rec.revoked_at_ms.is_some() {
        return Err(crate::hq::Error::BoxRevoked {
            box_id: rec.id.clone(),
            reason: rec.revoked_reason.clone().unwrap_or_default(),
        });
    }
    match (&rec.cert_fingerprint, &rec.next_cert_fingerprint) {
        (_, Some(next)) if next == presented => Ok(true),
        (Some(current), _) if current == presented => Ok(false),
        (None, _) => Ok(false),
        _ => Err(crate::hq::Error::CertSuperseded {
            box_id: rec.id.clone(),
        }),
    }
}

/// What a request tells about a box's health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoxHealth {
    /// When the request arrived.
    pub seen_at_ms: i64,
    /// From an upload: firmware version.
    pub firmware_version: Option<String>,
    /// From an upload: backlog and oldest pending row (`None` inside: nothing pending).
    pub backlog: Option<(i64, Option<i64>)>,
}

/// The outcome of [`HqStore::ingest`].
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    /// Highest contiguous seq held for the box and epoch.
    pub acked_seq: i64,
    /// Offline edits of the batch that were rejected (also those rejected when the
    /// batch first arrived, for a batch sent again).
    pub conflicts: Vec<Conflict>,
    /// Records newly stored (0 for a batch sent again).
    pub inserted: usize,
    /// Whether an offline edit was applied (the site's feed changed).
    pub feed_changed: bool,
}

/// What the feed answers for a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedRead {
    /// Changes after the cursor (maybe none).
    Page {
        /// Ascending revisions.
        changes: Vec<Change>,
        /// More are waiting beyond `limit`.
        more: bool,
    },
    /// The cursor is too old (or 0, or from another database): the full state.
    Snapshot {
        /// Every live row.
        rows: Vec<Change>,
        /// The site's latest revision.
        cursor: i64,
    },
}

/// Filter of [`HqStore::cdrs`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Calls started at or after (ms).
    pub from_ms: Option<i64>,
    /// Calls started before (ms).
    pub to_ms: Option<i64>,
    /// Only calls that went through the call-center queue of this name.
    pub queue: Option<String>,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id (the `next` of the previous page).
    pub after: Option<i64>,
}

/// Most CDRs in one answer of [`HqStore::cdrs`].
pub const MAX_CDR_PAGE: usize = 1000;

impl CdrQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, MAX_CDR_PAGE)
    }
}

/// One stored CDR, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdrRow {
    /// HQ's row id (ascending in arrival order; pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// Call id on the box.
    pub call_id: String,
    /// `internal`, `inbound`, `outbound`.
    pub direction: String,
    /// Calling number.
    pub caller: String,
    /// Caller's analog port.
    pub caller_port: Option<i64>,
    /// Called number.
    pub callee: String,
    /// Callee's analog port.
    pub callee_port: Option<i64>,
    /// Start (ms).
    pub started_at_ms: i64,
    /// Answer (ms).
    pub answered_at_ms: Option<i64>,
    /// End (ms).
    pub ended_at_ms: i64,
    /// How it ended.
    pub disposition: String,
    /// Who ended it.
    pub hangup_side: String,
    /// SIP Call-ID of the caller's leg, when it was a SIP leg.
    pub caller_sip_call_id: Option<String>,
    /// SIP Call-ID of the callee's leg, when it was a SIP leg.
    pub callee_sip_call_id: Option<String>,
    /// Quality the box measured on the caller's SIP leg, when it sent one.
    pub caller_quality: Option<CdrLegQuality>,
    /// Quality the box measured on the callee's SIP leg, when it sent one.
    pub callee_quality: Option<CdrLegQuality>,
    /// The calls this one continues after transfers, oldest first.
    pub transfer_chain: Vec<CdrTransferHop>,
    /// The call-center queue, agent and wait, when the call was queued.
    pub queue: Option<CdrQueue>,
    /// Why caller screening blocked the call, for a blocked call.
    pub blocked: Option<CdrBlocked>,
    /// The caller's post-call survey score, 1-5.
    pub survey_score: Option<u8>,
    /// Milliseconds the call spent on hold, when it was held.
    pub hold_ms: Option<i64>,
    /// Where a queued call overflowed to, when it did.
    pub queue_overflow: Option<CdrQueueOverflow>,
    /// The box stopped while the call was up (the record was rebuilt from its journal
    /// of live calls at the next start).
    pub interrupted: bool,
}

/// A `queue_overflow` column as the wire's (`None` without one, or a name HQ cannot
/// read back).
pub(crate) fn overflow_of(name: Option<String>) -> Option<CdrQueueOverflow> {
    CdrQueueOverflow::from_name(name.as_deref()?)
}

/// A CDR's `blocked` part from its three columns (`None` for a call not blocked, or
/// columns HQ cannot read back).
pub(crate) fn blocked_of(
    mode: Option<String>,
    action: Option<String>,
    pattern: Option<String>,
) -> Option<CdrBlocked> {
    Some(CdrBlocked {
        mode: CdrBlockedMode::from_name(mode.as_deref()?)?,
        action: CdrBlockedAction::from_name(action.as_deref()?)?,
        pattern,
    })
}

/// A survey score column as the wire's (1-5; anything else is dropped).
pub(crate) fn score_of(score: Option<i64>) -> Option<u8> {
    score
        .and_then(|s| u8::try_from(s).ok())
        .filter(|s| (1..=5).contains(s))
}

/// A CDR's queue part from its three columns (`None` without a queue).
pub(crate) fn queue_of(
    queue: Option<String>,
    agent: Option<String>,
    wait_ms: Option<i64>,
) -> Option<CdrQueue> {
    queue.map(|queue| CdrQueue {
        queue,
        agent,
        wait_ms: wait_ms.unwrap_or(0),
    })
}

/// Filter of [`HqStore::agent_states`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStateQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Only this agent ID.
    pub agent: Option<String>,
    /// Changes at or after (ms).
    pub from_ms: Option<i64>,
    /// Changes before (ms).
    pub to_ms: Option<i64>,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id (the `next` of the previous page).
    pub after: Option<i64>,
}

impl AgentStateQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, MAX_CDR_PAGE)
    }
}

/// One stored agent state change, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStateRow {
    /// HQ's row id (ascending in arrival order; pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// The change as the box sent it.
    #[serde(flatten)]
    pub record: AgentStateRecord,
}

/// The record of an `agent_states` row from its columns; a state name HQ did not
/// write is a corrupt row.
pub(crate) fn agent_state_record(
    agent_id: String,
    state: &str,
    reason: Option<String>,
    extension: Option<String>,
    call_id: Option<String>,
    at_ms: i64,
) -> Result<AgentStateRecord> {
    let state = AgentStateName::from_name(state).ok_or_else(|| crate::hq::Error::StoredValue {
        what: "agent state",
        value: state.to_owned(),
    })?;
    Ok(AgentStateRecord {
        agent_id,
        state,
        reason,
        extension,
        call_id,
        at_ms,
    })
}

/// A leg's quality from its three columns (all set, or none).
pub(crate) fn quality_of(columns: [Option<f64>; 3]) -> Option<CdrLegQuality> {
    match columns {
        [Some(loss_percent), Some(jitter_ms), Some(mos)] => Some(CdrLegQuality {
            loss_percent,
            jitter_ms,
            mos,
        }),
        _ => None,
    }
}

/// The stored form of a CDR's transfer chain: JSON, `None` when empty.
pub(crate) fn transfer_chain_json(chain: &[CdrTransferHop]) -> Option<String> {
    (!chain.is_empty()).then(|| serde_json::to_string(chain).unwrap_or_else(|_| "[]".into()))
}

/// A CDR's transfer chain from its column (a value HQ wrote: unreadable JSON reads
/// as an empty chain rather than failing the whole query).
pub(crate) fn transfer_chain_of(column: Option<String>) -> Vec<CdrTransferHop> {
    column
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Filter of [`HqStore::daily_report`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Calls started at or after (ms).
    pub from_ms: Option<i64>,
    /// Calls started before (ms).
    pub to_ms: Option<i64>,
}

/// One line of the daily report: calls of a site on a UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyReportRow {
    /// Site id.
    pub site: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Call legs started that day.
    pub calls: i64,
    /// Of those, answered.
    pub answered: i64,
    /// Of those, inbound and not answered.
    pub missed: i64,
}

/// An enrollment HQ checked and signed, for [`HqStore::enroll_box`] to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    /// The one-time token's id (16 hex digits).
    pub token_id: String,
    /// The box (its serial: the CN of the CSR and of the new certificate).
    pub box_id: String,
    /// The token's site.
    pub site: String,
    /// sha256 (hex) of the enrolling key's SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// sha256 (hex) of the new certificate's DER: pinned in `boxes`.
    pub cert_fingerprint: String,
    /// The token's expiry, Unix seconds.
    pub expires_at_s: i64,
    /// Now, ms since the Unix epoch.
    pub now_ms: i64,
}

/// How many rows HQ holds for a box (tests and operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordCounts {
    /// Outbox records.
    pub up_records: i64,
    /// CDR projections.
    pub cdrs: i64,
    /// Audit projections.
    pub audit: i64,
    /// Recording metadata.
    pub recordings: i64,
    /// Agent state changes.
    pub agent_states: i64,
}

/// Where HQ keeps sites, boxes, the records boxes send, the rows it masters and the
/// per-site change feed.
#[async_trait]
pub trait HqStore: Send + Sync + std::fmt::Debug + 'static {
    /// The update rollouts kept in this store's database (`crate::hq::rollouts`),
    /// their migrations applied; `None`: this store keeps none.
    async fn rollout_db(&self) -> Result<Option<crate::hq::rollouts::api::RolloutDb>> {
        Ok(None)
    }

    /// Creates a site (file policy `none`).
    async fn create_site(&self, id: &str, name: &str, now_ms: i64) -> Result<SiteRecord>;
    /// All sites.
    async fn sites(&self) -> Result<Vec<SiteRecord>>;
    /// One site.
    async fn site(&self, id: &str) -> Result<Option<SiteRecord>>;
    /// Sets a site's file policy.
    async fn set_file_policy(&self, site: &str, policy: &FilePolicy) -> Result<()>;
    /// Registers a box for a site, optionally pinning its certificate.
    async fn register_box(
        &self,
        id: &str,
        site: &str,
        cert_fingerprint: Option<&str>,
        now_ms: i64,
    ) -> Result<BoxRecord>;
    /// Pins (or unpins) the certificate HQ accepts for a box.
    async fn set_box_fingerprint(&self, id: &str, fingerprint: Option<&str>) -> Result<()>;
    /// One box.
    async fn box_record(&self, id: &str) -> Result<Option<BoxRecord>>;
    /// Records an enrollment in one transaction: the site must exist
    /// ([`crate::hq::Error::NotFound`]); the token must be unused, or used before by
    /// this box with this key (a retry; else [`crate::hq::Error::TokenUsed`]); a box
    /// already registered must be in the token's site
    /// ([`crate::hq::Error::WrongSite`]); a revoked box must present a token it has
    /// not used before ([`crate::hq::Error::BoxRevoked`]: only a fresh token
    /// re-enrolls it). Then the box is registered (or kept) with the new certificate
    /// pinned, any staged renewal dropped, the revocation cleared, the token recorded
    /// and the enrollment audited. Any refusal changes nothing.
    async fn enroll_box(&self, enrollment: &EnrollmentRecord) -> Result<BoxRecord>;
    /// Whether a token id was used for an enrollment (tests and operators).
    async fn enrollment_token_used(&self, token_id: &str) -> Result<bool>;
    /// Revokes a box (`actor` and `reason` audited): from now on every mutual-TLS
    /// request with any of its certificates is refused, and a staged renewal is
    /// dropped. Unknown box: [`crate::hq::Error::NotFound`]; already revoked:
    /// [`crate::hq::Error::BoxRevoked`]; either changes nothing.
    async fn revoke_box(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<BoxRecord>;
    /// Stages a renewed certificate in one transaction (audited): the box must exist
    /// ([`crate::hq::Error::NotFound`]), not be revoked
    /// ([`crate::hq::Error::BoxRevoked`]) and have made the request with its current
    /// or staged certificate ([`crate::hq::Error::CertSuperseded`]); a request made
    /// with the staged one promotes it first. The new certificate becomes the staged
    /// one. Any refusal changes nothing.
    async fn stage_renewal(&self, renewal: &RenewalRecord) -> Result<BoxRecord>;
    /// Makes the staged certificate `fingerprint` the box's current one (the box used
    /// it); `false` when it is not the staged one (any more) or the box is revoked.
    async fn promote_next_cert(&self, id: &str, fingerprint: &str) -> Result<bool>;
    /// The newest audit rows first, of one box or all, at most `limit`
    /// (clamped to 1..=[`MAX_AUDIT_PAGE`]).
    async fn audit(&self, box_id: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>>;

    /// All boxes with their health.
    async fn boxes(&self) -> Result<Vec<BoxRecord>>;
    /// Records a request from a box.
    async fn touch_box(&self, id: &str, health: &BoxHealth) -> Result<()>;
    /// Stores a validated batch from `box_rec` idempotently, applies its offline
    /// edits, records its health, and answers the ack.
    async fn ingest(
        &self,
        box_rec: &BoxRecord,
        batch: &ValidBatch,
        health: &BoxHealth,
    ) -> Result<IngestOutcome>;
    /// Writes a row HQ masters for a site (an operator's change), with a new revision
    /// and a feed row. With `base_revision`, refuses when the row's revision differs
    /// ([`crate::hq::Error::RevisionMismatch`]; 0 = must not exist).
    async fn put_entity(
        &self,
        site: &str,
        entity: &Entity,
        base_revision: Option<i64>,
    ) -> Result<Change>;
    /// Deletes a row (a tombstone with a new revision and a feed row).
    async fn delete_entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Change>;
    /// One live row.
    async fn entity(&self, site: &str, kind: EntityKind, key: &str) -> Result<Option<Change>>;
    /// All live rows of a kind.
    async fn entities(&self, site: &str, kind: EntityKind) -> Result<Vec<Change>>;
    /// The feed of a site after `since`, at most `limit` changes, or a snapshot.
    async fn read_feed(&self, site: &str, since: i64, limit: usize) -> Result<FeedRead>;
    /// Deletes feed rows older than the newest `keep_revisions` revisions; returns how
    /// many were deleted.
    async fn prune_feed(&self, keep_revisions: i64) -> Result<u64>;
    /// CDRs across boxes and sites, ascending row id.
    async fn cdrs(&self, query: &CdrQuery) -> Result<Vec<CdrRow>>;
    /// Agent state changes matching `query`, in arrival order.
    async fn agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentStateRow>>;
    /// Campaign attempts and their results across boxes (the latest of each), in
    /// arrival order of their first record.
    async fn campaign_results(&self, query: &CampaignResultQuery)
        -> Result<Vec<CampaignResultRow>>;
    /// Campaigns' latest progress across boxes.
    async fn campaign_progress(
        &self,
        query: &CampaignProgressQuery,
    ) -> Result<Vec<CampaignProgressRow>>;
    /// Customers' service records across boxes, with dispositions, recordings and
    /// notes.
    async fn service_records(&self, query: &ServiceRecordQuery) -> Result<Vec<ServiceRecordRow>>;
    /// Customers made on boxes (the latest of each).
    async fn box_customers(&self, query: &CustomerQuery) -> Result<Vec<CustomerRow>>;
    /// Calls per site per UTC day.
    async fn daily_report(&self, query: &ReportQuery) -> Result<Vec<DailyReportRow>>;
    /// Size of a recording a box (or another box of its site) announced, by sha256.
    async fn recording_size(&self, site: &str, sha256: &str) -> Result<Option<u64>>;
    /// Row counts for a box.
    async fn counts(&self, box_id: &str) -> Result<RecordCounts>;
}

/// A live entity row and its revision, as read from a store.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRow {
    /// Its revision.
    pub revision: i64,
    /// The row, `None` when deleted (a tombstone).
    pub row: Option<Entity>,
    /// The box whose edits wrote this revision and those before it back to its run's
    /// start; `None` when an HQ operator wrote it (or it predates schema 11).
    pub writer: Option<EditRun>,
}

/// A box's unbroken run of edits of one row: every revision after `chain_base` up to
/// the row's current one was written by `box_id`'s own edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRun {
    /// The writing box.
    pub box_id: String,
    /// The revision the run started from (0 for a row the box created).
    pub chain_base: i64,
}

/// What to do with an offline edit, given HQ's current row.
#[derive(Debug, Clone, PartialEq)]
pub enum EditDecision {
    /// Write `row` (`None`: delete) as the edit's box, whose run of edits of the row now
    /// starts at `chain_base` (store it with the row; see [`EditRun`]).
    Apply {
        /// The row to write.
        row: Option<Entity>,
        /// The start of the box's run of edits, kept with the row.
        chain_base: i64,
    },
    /// Reject with this conflict.
    Reject(Conflict),
}

/// Decides an offline edit from `box_id`: it applies when HQ's row is still at the
/// edit's base revision (or does not exist and the edit creates it with base 0), or
/// when everything written to the row since the edit's base was this box's own edits.
///
/// The second rule is what makes consecutive offline edits work: a box that edits a
/// row twice before HQ's revision of the first edit comes back down sends both with
/// the same base (a user created on the box, then added to a group: both base 0).
/// HQ writes the first at revision R; the second's base 0 is not R, but nothing but
/// this box wrote the row after 0, so the box saw everything it overwrites. An HQ
/// operator's write (or another box's) in between ends the run: the edit is then
/// rejected as before.
pub fn decide_edit(
    seq: i64,
    box_id: &str,
    edit: &EntityEdit,
    current: Option<&CurrentRow>,
) -> EditDecision {
    let kind = edit.row.kind();
    let key = edit.row.key().to_owned();
    let live = current.filter(|c| c.row.is_some());
    // This box's run of edits, when the edit's base lies inside it.
    let own_run = current
        .and_then(|c| {
            c.writer
                .as_ref()
                .filter(|w| w.box_id == box_id)
                .map(|w| (w, c.revision))
        })
        .filter(|(w, revision)| (w.chain_base..=*revision).contains(&edit.base_revision))
        .map(|(w, _)| w.chain_base);
    let apply = |row: Option<Entity>| EditDecision::Apply {
        row,
        chain_base: own_run.unwrap_or(edit.base_revision),
    };
    let reject = |reason: String| {
        EditDecision::Reject(Conflict {
            seq,
            entity: kind,
            key: key.clone(),
            base_revision: edit.base_revision,
            current: live.map(|c| Change {
                revision: c.revision,
                entity: kind,
                key: key.clone(),
                row: c.row.clone(),
            }),
            reason,
        })
    };
    match (edit.op, live) {
        (EditOp::Create, None) => apply(Some(edit.row.clone())),
        // Created, deleted and created again on the box, or sent again after the box
        // lost its memory of the first create: the row is still only this box's.
        (EditOp::Create, Some(_)) if own_run.is_some() => apply(Some(edit.row.clone())),
        (EditOp::Create, Some(c)) => reject(format!(
            "created on the box, but HQ already has this row at revision {}",
            c.revision
        )),
        (EditOp::Update | EditOp::Delete, None) => {
            reject("HQ deleted this row (or never had it)".to_owned())
        }
        (op, Some(c)) if c.revision == edit.base_revision || own_run.is_some() => match op {
            EditOp::Delete => apply(None),
            _ => apply(Some(edit.row.clone())),
        },
        (_, Some(c)) => reject(format!(
            "HQ changed this row (revision {}) since revision {}",
            c.revision, edit.base_revision
        )),
    }
}

/// The rows for a snapshot, or a page, from what a store read in one consistent view.
pub(crate) fn feed_decision(
    since: i64,
    feed_floor: i64,
    global_revision: i64,
    site_revision: i64,
) -> bool {
    // true: answer a snapshot.
    (since == 0 && site_revision > 0) || since < feed_floor || since > global_revision
}

/// Serializes an entity row for storage.
pub(crate) fn entity_json(entity: &Entity) -> String {
    // An Entity holds only strings, numbers, bools and vectors: serializing cannot fail.
    serde_json::to_string(entity).unwrap_or_else(|_| "null".to_owned())
}

/// Parses a stored entity row.
pub(crate) fn parse_entity(json: &str) -> Result<Entity> {
    serde_json::from_str(json).map_err(|source| crate::hq::Error::StoredJson {
        what: "entity row",
        source,
    })
}

/// Parses a stored file policy.
pub(crate) fn parse_policy(json: &str) -> Result<FilePolicy> {
    serde_json::from_str(json).map_err(|source| crate::hq::Error::StoredJson {
        what: "file policy",
        source,
    })
}

/// Parses a stored kind name.
pub(crate) fn parse_kind(name: &str) -> Result<EntityKind> {
    crate::hq::validate::entity_kind_from_name(name).ok_or_else(|| crate::hq::Error::StoredValue {
        what: "entity kind",
        value: name.to_owned(),
    })
}

/// Serializes a conflict for the `edit_conflicts` table.
pub(crate) fn conflict_json(conflict: &Conflict) -> String {
    serde_json::to_string(conflict).unwrap_or_else(|_| "null".to_owned())
}

/// Parses a stored conflict.
pub(crate) fn parse_conflict(json: &str) -> Result<Conflict> {
    serde_json::from_str(json).map_err(|source| crate::hq::Error::StoredJson {
        what: "conflict",
        source,
    })
}

/// The audit detail of a re-enrollment of `before` by `e`.
pub(crate) fn reenroll_detail(before: &BoxRecord, e: &EnrollmentRecord) -> String {
    let mut detail = format!(
        "token {}, certificate sha256 {} replaces {}",
        e.token_id,
        e.cert_fingerprint,
        before.cert_fingerprint.as_deref().unwrap_or("none")
    );
    if before.revoked_at_ms.is_some() {
        detail.push_str(&format!(
            "; revocation cleared ({})",
            before.revoked_reason.as_deref().unwrap_or("")
        ));
    }
    detail
}

/// Days since the Unix epoch of a time in ms (UTC, floor).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Group;

    fn edit(op: EditOp, base: i64) -> EntityEdit {
        EntityEdit {
            op,
            base_revision: base,
            row: Entity::Group(Group {
                name: "team".into(),
                description: "d".into(),
            }),
        }
    }

    fn row(revision: i64, live: bool) -> CurrentRow {
        CurrentRow {
            revision,
            row: live.then(|| {
                Entity::Group(Group {
                    name: "team".into(),
                    description: "hq".into(),
                })
            }),
            writer: None,
        }
    }

    /// A row whose revisions after `chain_base` were written by `box_id`.
    fn by_box(revision: i64, live: bool, box_id: &str, chain_base: i64) -> CurrentRow {
        CurrentRow {
            writer: Some(EditRun {
                box_id: box_id.into(),
                chain_base,
            }),
            ..row(revision, live)
        }
    }

    fn applied(d: EditDecision) -> (bool, i64) {
        match d {
            EditDecision::Apply { row, chain_base } => (row.is_some(), chain_base),
            EditDecision::Reject(c) => panic!("rejected: {}", c.reason),
        }
    }

    #[test]
    fn edits_apply_only_on_their_base_revision() {
        assert!(matches!(
            decide_edit(1, "b1", &edit(EditOp::Create, 0), None),
            EditDecision::Apply {
                row: Some(_),
                chain_base: 0
            }
        ));
        assert!(matches!(
            decide_edit(1, "b1", &edit(EditOp::Create, 0), Some(&row(4, false))),
            EditDecision::Apply { row: Some(_), .. }
        ));
        assert!(matches!(
            decide_edit(1, "b1", &edit(EditOp::Create, 0), Some(&row(4, true))),
            EditDecision::Reject(_)
        ));
        assert!(matches!(
            decide_edit(1, "b1", &edit(EditOp::Update, 4), Some(&row(4, true))),
            EditDecision::Apply {
                row: Some(_),
                chain_base: 4
            }
        ));
        assert!(matches!(
            decide_edit(1, "b1", &edit(EditOp::Delete, 4), Some(&row(4, true))),
            EditDecision::Apply {
                row: None,
                chain_base: 4
            }
        ));
        let EditDecision::Reject(c) =
            decide_edit(9, "b1", &edit(EditOp::Update, 3), Some(&row(4, true)))
        else {
            panic!("stale update applied");
        };
        assert_eq!((c.seq, c.base_revision), (9, 3));
        assert_eq!(c.current.map(|c| c.revision), Some(4));
        let EditDecision::Reject(c) =
            decide_edit(9, "b1", &edit(EditOp::Update, 3), Some(&row(5, false)))
        else {
            panic!("update of a deleted row applied");
        };
        assert_eq!(c.current, None);
    }

    #[test]
    fn a_boxs_consecutive_offline_edits_apply_until_someone_else_writes() {
        // Created on the box (base 0) and written at revision 5; the box's next edit
        // still carries base 0: its own run, applied, the run still starts at 0.
        let created = by_box(5, true, "b1", 0);
        assert_eq!(
            applied(decide_edit(
                2,
                "b1",
                &edit(EditOp::Update, 0),
                Some(&created)
            )),
            (true, 0)
        );
        // Based on the revision of its own first edit (the feed brought it back) or on
        // the current one: applied too.
        let run = by_box(9, true, "b1", 0);
        for base in [0, 5, 9] {
            assert_eq!(
                applied(decide_edit(
                    3,
                    "b1",
                    &edit(EditOp::Update, base),
                    Some(&run)
                )),
                (true, 0),
                "base {base}"
            );
        }
        assert_eq!(
            applied(decide_edit(3, "b1", &edit(EditOp::Delete, 0), Some(&run))),
            (false, 0)
        );
        // Created, deleted and created again before any echo came back.
        assert_eq!(
            applied(decide_edit(
                4,
                "b1",
                &edit(EditOp::Create, 0),
                Some(&by_box(10, false, "b1", 0))
            )),
            (true, 0)
        );
        assert_eq!(
            applied(decide_edit(4, "b1", &edit(EditOp::Create, 0), Some(&run))),
            (true, 0)
        );
        // A run that started from an operator's revision 7: edits based on 7 or later
        // apply, one based on an older revision did not see revision 7.
        let after_hq = by_box(12, true, "b1", 7);
        assert_eq!(
            applied(decide_edit(
                5,
                "b1",
                &edit(EditOp::Update, 7),
                Some(&after_hq)
            )),
            (true, 7)
        );
        let EditDecision::Reject(c) =
            decide_edit(5, "b1", &edit(EditOp::Update, 6), Some(&after_hq))
        else {
            panic!("an edit older than HQ's write applied");
        };
        assert_eq!(c.current.map(|c| c.revision), Some(12));
        // A base beyond the row's revision is not inside the run.
        assert!(matches!(
            decide_edit(5, "b1", &edit(EditOp::Update, 13), Some(&after_hq)),
            EditDecision::Reject(_)
        ));
        // Another box's run, or an operator's write, is a conflict as before.
        for current in [by_box(9, true, "b2", 0), row(9, true)] {
            assert!(matches!(
                decide_edit(6, "b1", &edit(EditOp::Update, 0), Some(&current)),
                EditDecision::Reject(_)
            ));
            assert!(matches!(
                decide_edit(6, "b1", &edit(EditOp::Create, 0), Some(&current)),
                EditDecision::Reject(_)
            ));
        }
        // An operator's revision taken as the base starts a new run from it.
        assert_eq!(
            applied(decide_edit(
                7,
                "b1",
                &edit(EditOp::Update, 9),
                Some(&by_box(9, true, "b2", 0))
            )),
            (true, 9)
        );
        // A row this box deleted is still deleted for an update.
        assert!(matches!(
            decide_edit(
                8,
                "b1",
                &edit(EditOp::Update, 0),
                Some(&by_box(10, false, "b1", 0))
            ),
            EditDecision::Reject(_)
        ));
    }

    #[test]
    fn snapshot_when_cursor_is_zero_pruned_or_foreign() {
        assert!(
            !feed_decision(0, 0, 0, 0),
            "empty site: a page, not a snapshot loop"
        );
        assert!(feed_decision(0, 0, 5, 5));
        assert!(feed_decision(3, 4, 10, 10));
        assert!(!feed_decision(4, 4, 10, 10));
        assert!(feed_decision(11, 0, 10, 10));
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(86_400_000), 1);
    }
}
