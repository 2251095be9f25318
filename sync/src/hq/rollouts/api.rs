//! The rollout endpoints of `branch-hq` and where their data lives.
//!
//! Admin (bearer token, admin listener):
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /admin/v1/rollouts?id=&sites=a,b&waves=10,50,100&forced=false`, body: the bundle | verify the bundle against the pinned update keys (`tls_dir/update-keys/*.pub`), store it by sha256, stage the rollout (wave 0 open) |
//! | `GET /admin/v1/rollouts` | every rollout, newest first |
//! | `GET /admin/v1/rollouts/{id}` | one rollout and every box's outcome |
//! | `POST /admin/v1/rollouts/{id}/{advance,pause,resume,cancel}` | operator commands |
//!
//! Sync (mutual TLS, the box from its certificate): `GET` [`UPDATE_PATH`] (the offer),
//! `GET {UPDATE_PATH}/{id}/bundle` with `Range: bytes=N-` (206, at most
//! [`MAX_BUNDLE_CHUNK`] bytes; only while the rollout is offered to that box),
//! `POST {UPDATE_PATH}/{id}/outcome` with an [`UpdateReport`].
//!
//! Bundles are kept in `files_dir/bundles/<sha256>.bundle`, written to a temporary file,
//! fsynced and renamed, so a reader never sees half a bundle.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use branchline_image::bundle::{self, MAX_BUNDLE_LEN};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sqlite::SqliteRollouts;
use super::{BoxOutcome, Command, Rollout, RolloutState, Waves};
use crate::hq::server::PeerIdentity;
use crate::hq::{now_ms, Error, Result};
use crate::wire::{
    ErrorCode, Offer, UpdateOffer, UpdateReport, MAX_BUNDLE_CHUNK, PROTOCOL_VERSION, UPDATE_PATH,
};

/// Directory under `tls_dir` holding the pinned public keys bundles must be signed
/// with (`*.pub`, as `branch-image keygen` writes them).
pub const UPDATE_KEYS_DIR: &str = "update-keys";

/// Where rollouts are stored: the same database as the rest of HQ.
#[derive(Debug, Clone)]
pub enum RolloutDb {
    /// SQLite: a connection of its own to HQ's file.
    Sqlite(SqliteRollouts),
    /// PostgreSQL: HQ's pool.
    Postgres(deadpool_postgres::Pool),
}

fn pool_err(source: deadpool_postgres::PoolError) -> Error {
    Error::Pool { source }
}

impl RolloutDb {
    /// Applies the rollout migrations.
    pub async fn open_postgres(pool: deadpool_postgres::Pool) -> Result<RolloutDb> {
        let mut c = pool.get().await.map_err(pool_err)?;
        super::postgres::migrate(&mut c, now_ms()).await?;
        Ok(RolloutDb::Postgres(pool))
    }

    /// Stores a new rollout.
    pub async fn create(&self, r: Rollout) -> Result<()> {
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("create rollout", move |c| super::sqlite::create(c, &r))
                    .await
            }
            RolloutDb::Postgres(p) => {
                let mut c = p.get().await.map_err(pool_err)?;
                super::postgres::create(&mut c, &r).await
            }
        }
    }

    /// One rollout.
    pub async fn get(&self, id: &str) -> Result<Option<Rollout>> {
        let id = id.to_owned();
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("read rollout", move |c| super::sqlite::get(c, &id))
                    .await
            }
            RolloutDb::Postgres(p) => {
                let c = p.get().await.map_err(pool_err)?;
                super::postgres::get(&**c, &id, false).await
            }
        }
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<Rollout>> {
        match self {
            RolloutDb::Sqlite(s) => s.with("list rollouts", |c| super::sqlite::list(c)).await,
            RolloutDb::Postgres(p) => {
                let c = p.get().await.map_err(pool_err)?;
                super::postgres::list(&**c).await
            }
        }
    }

    /// An operator command.
    pub async fn command(&self, id: &str, cmd: Command) -> Result<Rollout> {
        let id = id.to_owned();
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("rollout command", move |c| {
                    super::sqlite::command(c, &id, cmd)
                })
                .await
            }
            RolloutDb::Postgres(p) => {
                let mut c = p.get().await.map_err(pool_err)?;
                super::postgres::command(&mut c, &id, cmd).await
            }
        }
    }

    /// The rollout offered to `box_id` now.
    pub async fn offer_for_box(&self, box_id: &str) -> Result<Option<Rollout>> {
        let b = box_id.to_owned();
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("read offer", move |c| super::sqlite::offer_for_box(c, &b))
                    .await
            }
            RolloutDb::Postgres(p) => {
                let c = p.get().await.map_err(pool_err)?;
                super::postgres::offer_for_box(&**c, &b).await
            }
        }
    }

    /// Records a box's report.
    pub async fn record_outcome(
        &self,
        rollout: &str,
        box_id: &str,
        report: UpdateReport,
    ) -> Result<()> {
        let (r, b) = (rollout.to_owned(), box_id.to_owned());
        let now = now_ms();
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("record outcome", move |c| {
                    super::sqlite::record_outcome(c, &r, &b, &report, now)
                })
                .await
            }
            RolloutDb::Postgres(p) => {
                let mut c = p.get().await.map_err(pool_err)?;
                super::postgres::record_outcome(&mut c, &r, &b, &report, now).await
            }
        }
    }

    /// Every box's outcome for `rollout`.
    pub async fn outcomes(&self, rollout: &str) -> Result<Vec<BoxOutcome>> {
        let r = rollout.to_owned();
        match self {
            RolloutDb::Sqlite(s) => {
                s.with("read outcomes", move |c| super::sqlite::outcomes(c, &r))
                    .await
            }
            RolloutDb::Postgres(p) => {
                let c = p.get().await.map_err(pool_err)?;
                super::postgres::outcomes(&**c, &r).await
            }
        }
    }
}

/// Bundles on disk, by sha256.
#[derive(Debug, Clone)]
pub struct BundleStore {
    dir: PathBuf,
}

impl BundleStore {
    /// `files_dir/bundles`.
    pub fn new(files_dir: &Path) -> BundleStore {
        BundleStore {
            dir: files_dir.join("bundles"),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.bundle"))
    }

    /// Writes `bytes` as `<sha256>.bundle` (temp file, fsync, rename, fsync dir).
    pub fn put(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { op, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let final_path = self.path(sha256);
        let tmp = self.dir.join(format!("{sha256}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &final_path).map_err(io("rename", &final_path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }

    /// Up to `max` bytes of the bundle from `offset`.
    pub fn read_chunk(&self, sha256: &str, offset: u64, max: usize) -> Result<Vec<u8>> {
        let path = self.path(sha256);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| Error::Io { op, path, source }
        };
        let mut f = std::fs::File::open(&path).map_err(io("open"))?;
        f.seek(SeekFrom::Start(offset)).map_err(io("seek"))?;
        let mut buf = Vec::with_capacity(max);
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(io("read"))?;
        Ok(buf)
    }
}

/// Reads every `*.pub` key in `dir`.
pub fn update_keys(dir: &Path) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    let io = |source| Error::Io {
        op: "read update keys",
        path: dir.to_owned(),
        source,
    };
    let mut keys = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(io(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    for p in paths {
        keys.push(
            branchline_image::keys::read_verifying_key(&p).map_err(|e| Error::Invalid {
                field: "update key".into(),
                reason: format!("{}: {e}", p.display()),
            })?,
        );
    }
    Ok(keys)
}

/// Query of `POST /admin/v1/rollouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageQuery {
    /// Rollout id.
    pub id: String,
    /// Comma-separated site ids.
    pub sites: String,
    /// Comma-separated cumulative percentages (default `100`: one wave).
    pub waves: Option<String>,
    /// Install at once, calls or not, window or not.
    #[serde(default)]
    pub forced: bool,
}

/// Validates a stage request and the bundle; returns the rollout to store.
pub fn stage(
    q: &StageQuery,
    bundle_bytes: &[u8],
    keys: &[ed25519_dalek::VerifyingKey],
    now_ms: i64,
) -> Result<Rollout> {
    let invalid = |field: &str, reason: String| Error::Invalid {
        field: field.into(),
        reason,
    };
    crate::hq::validate::validate_id("rollout id", &q.id)?;
    let sites: Vec<String> = q
        .sites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if sites.is_empty() {
        return Err(invalid("sites", "name at least one site".into()));
    }
    let waves = match &q.waves {
        None => Waves::new(vec![100])?,
        Some(w) => Waves::new(
            w.split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u8>()
                        .map_err(|_| invalid("waves", format!("{p:?} is not a percentage")))
                })
                .collect::<Result<Vec<u8>>>()?,
        )?,
    };
    if keys.is_empty() {
        return Err(invalid(
            "bundle",
            format!(
                "no pinned update keys (put the signer's .pub file in tls_dir/{UPDATE_KEYS_DIR}/)"
            ),
        ));
    }
    let signed = bundle::open(bundle_bytes, keys).map_err(|e| invalid("bundle", e.to_string()))?;
    let manifest = signed.manifest.clone();
    signed
        .verify_files()
        .map_err(|e| invalid("bundle", e.to_string()))?;
    Ok(Rollout {
        id: q.id.clone(),
        version: manifest.version.to_string(),
        board: manifest.board.clone(),
        sha256: hex::encode(Sha256::digest(bundle_bytes)),
        size: bundle_bytes.len() as u64,
        forced: q.forced,
        sites,
        waves,
        current_wave: 0,
        state: RolloutState::Active,
        created_at_ms: now_ms,
    })
}

/// A rollout with its outcomes (`GET /admin/v1/rollouts/{id}`).
#[derive(Debug, Serialize)]
pub struct RolloutView {
    /// The rollout.
    pub rollout: Rollout,
    /// Each box's outcome.
    pub outcomes: Vec<BoxOutcome>,
}

/// Parses `Range: bytes=N-` (the only form the box sends); `None` without the header.
pub fn range_start(headers: &HeaderMap) -> std::result::Result<Option<u64>, String> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| "Range is not text".to_owned())?;
    let start = v
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("Range {v:?}: only bytes=N- is supported"))?;
    Ok(Some(start))
}

// ---- handlers -------------------------------------------------------------------

use crate::hq::admin_api::AdminError;
use crate::hq::sync_api::SyncError;
use crate::hq::AppState;

fn rollouts(state: &AppState) -> std::result::Result<&RolloutDb, Error> {
    state.rollouts.as_deref().ok_or_else(|| Error::Invalid {
        field: "store".into(),
        reason: "this HQ store keeps no rollouts".into(),
    })
}

/// The admin routes (the caller adds the token layer).
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/rollouts",
            get(admin_list)
                .post(admin_stage)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_LEN as usize)),
        )
        .route("/admin/v1/rollouts/{id}", get(admin_get))
        .route("/admin/v1/rollouts/{id}/{command}", post(admin_command))
}

async fn admin_stage(
    State(state): State<AppState>,
    Query(q): Query<StageQuery>,
    body: Bytes,
) -> std::result::Result<(StatusCode, Json<Rollout>), AdminError> {
    let db = rollouts(&state)?;
    let keys_dir = state.config.tls_dir.join(UPDATE_KEYS_DIR);
    let files_dir = state.config.files_dir.clone();
    let now = now_ms();
    let (rollout, body) = tokio::task::spawn_blocking(move || -> Result<(Rollout, Bytes)> {
        let keys = update_keys(&keys_dir)?;
        let r = stage(&q, &body, &keys, now)?;
        BundleStore::new(&files_dir).put(&r.sha256, &body)?;
        Ok((r, body))
    })
    .await
    .map_err(|source| Error::Join {
        op: "stage rollout",
        source,
    })??;
    drop(body);
    db.create(rollout.clone()).await?;
    tracing::info!(rollout = %rollout.id, version = %rollout.version, sites = ?rollout.sites, waves = ?rollout.waves.percents(), forced = rollout.forced, "rollout staged");
    Ok((StatusCode::CREATED, Json(rollout)))
}

async fn admin_list(
    State(state): State<AppState>,
) -> std::result::Result<Json<Vec<Rollout>>, AdminError> {
    Ok(Json(rollouts(&state)?.list().await?))
}

async fn admin_get(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> std::result::Result<Json<RolloutView>, AdminError> {
    let db = rollouts(&state)?;
    let rollout = db.get(&id).await?.ok_or(Error::NotFound {
        what: "rollout",
        key: id.clone(),
    })?;
    let outcomes = db.outcomes(&id).await?;
    Ok(Json(RolloutView { rollout, outcomes }))
}

async fn admin_command(
    State(state): State<AppState>,
    UrlPath((id, command)): UrlPath<(String, String)>,
) -> std::result::Result<Json<Rollout>, AdminError> {
    let cmd = match command.as_str() {
        "advance" => Command::Advance,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "cancel" => Command::Cancel,
        other => {
            return Err(Error::Invalid {
                field: "command".into(),
                reason: format!("{other:?}: advance, pause, resume or cancel"),
            }
            .into())
        }
    };
    let r = rollouts(&state)?.command(&id, cmd).await?;
    tracing::info!(rollout = %id, ?cmd, wave = r.current_wave, state = r.state.as_str(), "rollout command");
    Ok(Json(r))
}

/// The sync routes.
pub(crate) fn sync_routes() -> Router<AppState> {
    Router::new()
        .route(UPDATE_PATH, get(sync_offer))
        .route(&format!("{UPDATE_PATH}/{{id}}/bundle"), get(sync_bundle))
        .route(&format!("{UPDATE_PATH}/{{id}}/outcome"), post(sync_outcome))
}

fn sync_err(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> SyncError {
    SyncError::new(status, code, message)
}

async fn sync_offer(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
) -> std::result::Result<Json<UpdateOffer>, SyncError> {
    let rec = crate::hq::sync_api::authorize_box(&state, peer).await?;
    let offer = match &state.rollouts {
        Some(db) => db.offer_for_box(&rec.id).await?,
        None => None,
    };
    Ok(Json(UpdateOffer {
        protocol: PROTOCOL_VERSION,
        offer: offer.map(|r| Offer {
            rollout: r.id,
            version: r.version,
            sha256: r.sha256,
            size: r.size,
            forced: r.forced,
        }),
    }))
}

async fn sync_bundle(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> std::result::Result<Response, SyncError> {
    let rec = crate::hq::sync_api::authorize_box(&state, peer).await?;
    let db = rollouts(&state)?;
    let Some(r) = db.offer_for_box(&rec.id).await?.filter(|r| r.id == id) else {
        return Err(sync_err(
            StatusCode::NOT_FOUND,
            ErrorCode::Forbidden,
            format!("rollout {id:?} is not offered to box {}", rec.id),
        ));
    };
    let start = range_start(&headers)
        .map_err(|m| sync_err(StatusCode::BAD_REQUEST, ErrorCode::BadChunk, m))?
        .unwrap_or(0);
    if start >= r.size {
        return Err(sync_err(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BadChunk,
            format!("offset {start} is at or past the bundle's {} bytes", r.size),
        ));
    }
    let store = BundleStore::new(&state.config.files_dir);
    let sha = r.sha256.clone();
    let chunk =
        tokio::task::spawn_blocking(move || store.read_chunk(&sha, start, MAX_BUNDLE_CHUNK))
            .await
            .map_err(|source| Error::Join {
                op: "read bundle",
                source,
            })??;
    let end = start + chunk.len() as u64 - 1;
    Ok((
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", r.size),
            ),
        ],
        chunk,
    )
        .into_response())
}

async fn sync_outcome(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    UrlPath(id): UrlPath<String>,
    body: std::result::Result<Json<UpdateReport>, axum::extract::rejection::JsonRejection>,
) -> std::result::Result<StatusCode, SyncError> {
    let rec = crate::hq::sync_api::authorize_box(&state, peer).await?;
    let Json(report) = body.map_err(|e| {
        sync_err(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBatch,
            format!("bad outcome: {}", e.body_text()),
        )
    })?;
    if report.protocol != PROTOCOL_VERSION {
        return Err(sync_err(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol {} (HQ speaks {PROTOCOL_VERSION})",
                report.protocol
            ),
        ));
    }
    let db = rollouts(&state)?;
    match db.record_outcome(&id, &rec.id, report.clone()).await {
        Ok(()) => {}
        Err(e @ (Error::NotFound { .. } | Error::Invalid { .. })) => {
            return Err(sync_err(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                e.to_string(),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(rollout = %id, r#box = %rec.id, state = report.state.as_str(), version = ?report.version, reason = ?report.reason, "update outcome");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(range_start(&h), Ok(None));
        h.insert(header::RANGE, "bytes=1024-".parse().expect("value"));
        assert_eq!(range_start(&h), Ok(Some(1024)));
        for bad in ["bytes=0-99", "items=0-", "bytes=-5", "bytes=x-"] {
            h.insert(header::RANGE, bad.parse().expect("value"));
            assert!(range_start(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_store_writes_whole_files_and_reads_chunks() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = BundleStore::new(dir.path());
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        s.put("ab", &bytes).expect("put");
        assert_eq!(s.read_chunk("ab", 0, 100).expect("read"), bytes[..100]);
        assert_eq!(s.read_chunk("ab", 4990, 100).expect("read"), bytes[4990..]);
        assert!(s.read_chunk("missing", 0, 1).is_err());
        assert!(!dir.path().join("bundles/ab.tmp").exists());
    }
}
