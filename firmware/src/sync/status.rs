//! The sync status (`GET /api/v1/sync`, `branchd sync-status`) and the handle the API
//! uses to read it and to force a sync.
//!
//! The report joins what the store holds (epoch, cursor, acknowledged seq, backlog,
//! last success and error, the WAN states when they last changed) with what only the
//! running daemon knows (requests in flight, the next attempt after a failure, the
//! WAN monitor's live states). `branchd sync-status` reads the store alone, from a
//! read connection of its own, so it works while the daemon runs; its report has
//! `"source": "store"` and no live part.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use branchline_sync::agent::{FilesReport, FilesStatus, SyncReport, SyncStatus};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::files::FilesSummary;
use super::state::{self, Backlog, SyncState};
use super::wan::WanSnapshot;
use crate::config::HqConfig;
use crate::error::Result;
use crate::store::StoreReader;

/// What `[hq]` names, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HqTarget {
    /// HQ's base URL.
    pub url: String,
    /// The box's id at HQ.
    pub box_id: String,
}

impl From<&HqConfig> for HqTarget {
    fn from(hq: &HqConfig) -> Self {
        HqTarget {
            url: hq.url.clone(),
            box_id: hq.box_id.clone(),
        }
    }
}

/// The outbox backlog, with the age of its oldest row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacklogReport {
    /// Rows waiting to reach HQ.
    pub depth: i64,
    /// When the oldest was written, ms since the Unix epoch.
    pub oldest_created_at_ms: Option<i64>,
    /// How old it is, in ms.
    pub oldest_age_ms: Option<i64>,
    /// The highest seq ever written.
    pub last_seq: i64,
}

/// An error and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorAt {
    /// What, in words.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub at_ms: Option<i64>,
}

/// The sync status as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatusReport {
    /// `"not configured"` (no `[hq]`), `"stopped"` (configured but the agent is not
    /// running: see `setup_error`), `"running"`, or `"unknown"` (read from the store
    /// alone: whether the daemon runs is not known).
    pub state: &'static str,
    /// `"daemon"` (the API) or `"store"` (`branchd sync-status`).
    pub source: &'static str,
    /// When the report was made, ms since the Unix epoch.
    pub at_ms: i64,
    /// HQ and the box id, when configured.
    pub hq: Option<HqTarget>,
    /// Why the agent is not running (unreadable certificate, ...).
    pub setup_error: Option<String>,
    /// This store incarnation's id on the wire.
    pub epoch: String,
    /// The change-feed revision applied.
    pub cursor: i64,
    /// The highest outbox seq HQ acknowledged.
    pub acked_seq: i64,
    /// The outbox backlog.
    pub backlog: BacklogReport,
    /// The later of the last upload and download successes.
    pub last_success_ms: Option<i64>,
    /// The last acknowledged upload.
    pub last_up_ok_ms: Option<i64>,
    /// The last applied download.
    pub last_down_ok_ms: Option<i64>,
    /// The last error recorded (it stays after later successes: compare times).
    pub last_error: Option<ErrorAt>,
    /// HQ's recording-file policy, as last received.
    pub file_policy: Option<branchline_sync::wire::FilePolicy>,
    /// Upload and change-feed requests in flight, `null` from the store alone.
    pub in_flight: Option<InFlight>,
    /// When the next attempt after a failure is due (either side), ms since the Unix
    /// epoch; `null` when not backing off or from the store alone.
    pub next_attempt_ms: Option<i64>,
    /// The cores' own report (failures in a row, per-side errors), when running.
    pub live: Option<SyncReport>,
    /// The WAN monitor's states: live from the daemon, as last stored otherwise.
    pub wan: serde_json::Value,
    /// Recording files: what waits for upload (from the store) and the uploader's
    /// live state (when running).
    pub files: FilesStatusReport,
    /// The device certificate: validity, when the box renews it, the last renewal
    /// attempt ([`crate::renew`]); `null` before enrollment.
    pub certificate: Option<crate::renew::CertificateStatus>,
}

/// The recording-file part of [`SyncStatusReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesStatusReport {
    /// Counts from the store: pending files and bytes, awaiting metadata, failed,
    /// uploaded, the last error of a pending file.
    #[serde(flatten)]
    pub store: FilesSummary,
    /// The uploader core's report (policy, current upload, bytes sent, backoff),
    /// `null` from the store alone.
    pub live: Option<FilesReport>,
}

/// Requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// An outbox batch.
    pub upload: bool,
    /// A change-feed long poll.
    pub feed: bool,
}

fn backlog_report(b: Backlog, now_ms: i64) -> BacklogReport {
    BacklogReport {
        depth: b.depth,
        oldest_created_at_ms: b.oldest_created_at_ms,
        oldest_age_ms: b
            .oldest_created_at_ms
            .map(|t| now_ms.saturating_sub(t).max(0)),
        last_seq: b.last_seq,
    }
}

/// The report from the store alone (`branchd sync-status`).
pub fn report_from_store(
    reader: &StoreReader,
    hq: Option<&HqConfig>,
    now_ms: i64,
) -> Result<SyncStatusReport> {
    let (conn, path) = (reader.connection(), reader.path());
    let tx = conn
        .unchecked_transaction()
        .map_err(|source| crate::error::Error::Sqlite {
            path: path.to_owned(),
            op: "begin status read",
            source,
        })?;
    let persisted = state::load(&tx, path)?;
    let backlog = state::backlog(&tx, path)?;
    let files = super::files::summary(&tx, path, persisted.acked_seq)?;
    drop(tx);
    let mut report = base_report(persisted, backlog, files, hq.map(HqTarget::from), now_ms);
    // The certificate in use and the last renewal attempt, from their files.
    report.certificate = hq.and_then(|hq| {
        let validity = crate::renew::validity(&hq.client_cert).ok()?;
        Some(crate::renew::CertificateStatus {
            validity,
            renew_at_ms: crate::renew::renew_at_ms(validity, hq.renew_at_percent),
            last_renewal: crate::renew::last_outcome(hq),
            next_attempt_ms: None,
        })
    });
    Ok(report)
}

fn base_report(
    s: SyncState,
    backlog: Backlog,
    files: FilesSummary,
    hq: Option<HqTarget>,
    now_ms: i64,
) -> SyncStatusReport {
    SyncStatusReport {
        state: if hq.is_some() {
            "unknown"
        } else {
            "not configured"
        },
        source: "store",
        at_ms: now_ms,
        hq,
        setup_error: None,
        epoch: s.epoch,
        cursor: s.down_cursor,
        acked_seq: s.acked_seq,
        backlog: backlog_report(backlog, now_ms),
        last_success_ms: s.last_up_ok_ms.max(s.last_down_ok_ms),
        last_up_ok_ms: s.last_up_ok_ms,
        last_down_ok_ms: s.last_down_ok_ms,
        last_error: s.last_error.map(|message| ErrorAt {
            message,
            at_ms: s.last_error_ms,
        }),
        file_policy: s.file_policy,
        in_flight: None,
        next_attempt_ms: None,
        live: None,
        wan: s.wan.unwrap_or(serde_json::Value::Null),
        files: FilesStatusReport {
            store: files,
            live: None,
        },
        certificate: None,
    }
}

/// The daemon's handle on sync: the live status and the force signal. Cheap to clone;
/// a handle for a box without `[hq]` reports "not configured" and cannot force.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    hq: Option<HqTarget>,
    /// The cores' status after the agent's last step; a std Mutex because it is held
    /// only to copy in or out, never across an await.
    live: Mutex<Option<SyncStatus>>,
    /// Why the agent is not running, if it failed to start.
    setup_error: Mutex<Option<String>>,
    /// Wakes the agent for a forced sync.
    force: Arc<Notify>,
    /// The WAN monitor's live states.
    wan: watch::Receiver<WanSnapshot>,
    /// The file uploader's status after its last step (same locking rule as `live`).
    files: Mutex<Option<FilesStatus>>,
    /// The device certificate and its renewal (same locking rule).
    certificate: Mutex<Option<crate::renew::CertificateStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SyncHandle {
    /// A handle for `hq` (`None`: sync not configured) reading WAN states from `wan`.
    pub fn new(hq: Option<&HqConfig>, wan: watch::Receiver<WanSnapshot>) -> SyncHandle {
        SyncHandle {
            inner: Arc::new(Shared {
                hq: hq.map(HqTarget::from),
                live: Mutex::new(None),
                setup_error: Mutex::new(None),
                force: Arc::new(Notify::new()),
                wan,
                files: Mutex::new(None),
                certificate: Mutex::new(None),
            }),
        }
    }

    /// A handle for a box without `[hq]` and without a WAN monitor (tests, tools).
    pub fn not_configured() -> SyncHandle {
        let (_, wan) = watch::channel(WanSnapshot::default());
        SyncHandle::new(None, wan)
    }

    /// The WAN monitor's latest snapshot (the one [`SyncHandle::report`] carries as
    /// `wan`), typed, for the sync page.
    pub fn wan(&self) -> WanSnapshot {
        self.inner.wan.borrow().clone()
    }

    /// Whether `[hq]` is set.
    pub fn is_configured(&self) -> bool {
        self.inner.hq.is_some()
    }

    /// Asks the agent to sync now (cancelling a backoff). `false` when sync is not
    /// configured or the agent is not running.
    pub fn force(&self) -> bool {
        let running = self.is_configured() && lock(&self.inner.live).is_some();
        if running {
            self.inner.force.notify_one();
        }
        running
    }

    pub(super) fn force_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.force)
    }

    pub(super) fn set_live(&self, status: SyncStatus) {
        *lock(&self.inner.live) = Some(status);
    }

    pub(super) fn clear_live(&self) {
        *lock(&self.inner.live) = None;
    }

    pub(super) fn set_files_live(&self, status: FilesStatus) {
        *lock(&self.inner.files) = Some(status);
    }

    pub(super) fn clear_files_live(&self) {
        *lock(&self.inner.files) = None;
    }

    /// Records the device certificate's state (the renewal task).
    pub fn set_certificate(&self, status: crate::renew::CertificateStatus) {
        *lock(&self.inner.certificate) = Some(status);
    }

    /// The device certificate's state as the renewal task last recorded it.
    pub fn certificate(&self) -> Option<crate::renew::CertificateStatus> {
        lock(&self.inner.certificate).clone()
    }

    /// Records why the agent could not start (shown in the report).
    pub fn set_setup_error(&self, error: String) {
        *lock(&self.inner.setup_error) = Some(error);
    }

    /// Forgets the setup error (enrollment finished and the agent starts).
    pub fn clear_setup_error(&self) {
        *lock(&self.inner.setup_error) = None;
    }

    /// The full report: the store's part read through `reader`, the live part from
    /// the running agent and WAN monitor.
    pub fn report(&self, reader: &StoreReader, now_ms: i64) -> Result<SyncStatusReport> {
        let mut report = report_from_store(reader, None, now_ms)?;
        report.source = "daemon";
        report.hq = self.inner.hq.clone();
        report.setup_error = lock(&self.inner.setup_error).clone();
        let live = lock(&self.inner.live).clone();
        report.state = match (&report.hq, &live) {
            (None, _) => "not configured",
            (Some(_), Some(_)) => "running",
            (Some(_), None) => "stopped",
        };
        if let Some(status) = live {
            let core = status.report(Instant::now(), now_ms);
            report.in_flight = Some(InFlight {
                upload: core.upload_in_flight,
                feed: core.feed_in_flight,
            });
            report.next_attempt_ms = match (core.upload_next_attempt_ms, core.feed_next_attempt_ms)
            {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            report.live = Some(core);
        }
        report.wan =
            serde_json::to_value(&*self.inner.wan.borrow()).unwrap_or(serde_json::Value::Null);
        report.certificate = lock(&self.inner.certificate).clone();
        report.files.live = lock(&self.inner.files)
            .as_ref()
            .map(|f| f.report(Instant::now(), now_ms));
        Ok(report)
    }
}
