//! The sync endpoints boxes call ([`UP_PATH`], [`DOWN_PATH`], [`FILES_PATH`], and
//! [`crate::wire::RENEW_PATH`] served by `hq::enroll::renew`), on the
//! mutual-TLS listener. Every request is authorized the same way (`authorize`):
//!
//! 1. the client certificate's CN must name a registered box, else 403 `unknown_box`;
//! 2. the box must not be revoked, else 403 `revoked` (with the operator's reason);
//! 3. when the box's certificate is pinned, the request's certificate must be the
//!    pinned one or the staged renewal (`next_cert_fingerprint`), else 403
//!    `unknown_box`; the first request with the staged one makes it the pinned one,
//!    so the old certificate is refused from then on.
//!
//! The box row is read from the database on every request (no cache), so a
//! revocation made through any `branch-hq` instance sharing the PostgreSQL database
//! holds on every instance from its commit on. Refusals of steps 2 and 3 carry
//! `Connection: close`: a box that switched to its renewed certificate gets a fresh
//! TLS connection (with the new certificate) for its retry instead of reusing one
//! made with the old. So do answers to the current certificate while a renewal is
//! staged: a box keeps its connections open, and would otherwise go on presenting
//! the old certificate on them after it switched. Every authorized request updates
//! the box's `last_seen`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::agent::{decode_batch, DecodeError};
use crate::hq::files::ChunkError;
use crate::hq::server::PeerIdentity;
use crate::hq::store::{BoxHealth, BoxRecord, FeedRead};
use crate::hq::validate::{is_sha256_hex, validate_batch, BatchError};
use crate::hq::{now_ms, AppState, Error};
use crate::wire::{
    DownQuery, DownResponse, ErrorBody, ErrorCode, FileStatus, UpAck, DOWN_PATH, FILES_PATH,
    MAX_FILE_CHUNK, MAX_PAGE_CHANGES, MAX_UP_BODY_INFLATED, MAX_WAIT_MS, PROTOCOL_VERSION, UP_PATH,
};

/// An error answer of the sync API: a status and an [`ErrorBody`].
#[derive(Debug)]
pub struct SyncError {
    status: StatusCode,
    body: ErrorBody,
    /// Answer with `Connection: close` (the connection's certificate is refused).
    close: bool,
}

impl SyncError {
    pub(crate) fn new(
        status: StatusCode,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> SyncError {
        SyncError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
            },
            close: false,
        }
    }

    /// The same answer, closing the connection after it.
    fn closing(mut self) -> SyncError {
        self.close = true;
        self
    }
}

impl IntoResponse for SyncError {
    fn into_response(self) -> Response {
        if self.close {
            (
                self.status,
                [(axum::http::header::CONNECTION, "close")],
                Json(self.body),
            )
                .into_response()
        } else {
            (self.status, Json(self.body)).into_response()
        }
    }
}

/// A box-identity refusal of the store ([`Error::BoxRevoked`], [`Error::CertSuperseded`],
/// an unknown box) as the sync API answers it; anything else is 503.
pub(crate) fn identity_error(e: Error) -> SyncError {
    match &e {
        Error::BoxRevoked { .. } => {
            SyncError::new(StatusCode::FORBIDDEN, ErrorCode::Revoked, e.to_string()).closing()
        }
        Error::CertSuperseded { .. } | Error::NotFound { what: "box", .. } => {
            SyncError::new(StatusCode::FORBIDDEN, ErrorCode::UnknownBox, e.to_string()).closing()
        }
        _ => e.into(),
    }
}

impl From<Error> for SyncError {
    fn from(e: Error) -> SyncError {
        tracing::error!(error = %e, "sync request failed");
        SyncError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "HQ cannot do this now; retry later",
        )
    }
}

/// The sync router (to be served with mutual TLS).
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            UP_PATH,
            post(up).layer(DefaultBodyLimit::max(MAX_UP_BODY_INFLATED)),
        )
        .route(DOWN_PATH, get(down))
        .route(
            &format!("{FILES_PATH}/{{sha256}}"),
            get(file_status)
                .put(file_chunk)
                .layer(DefaultBodyLimit::max(MAX_FILE_CHUNK)),
        )
        .route(
            crate::wire::RENEW_PATH,
            post(crate::hq::enroll::renew)
                .layer(DefaultBodyLimit::max(crate::wire::MAX_ENROLL_BODY)),
        )
        .merge(crate::hq::rollouts::api::sync_routes())
        .with_state(state)
}

/// [`authorize`] and the `last_seen` touch every sync request makes (for the update
/// endpoints of [`crate::hq::rollouts::api`]).
pub(crate) async fn authorize_box(
    state: &AppState,
    peer: Option<Extension<PeerIdentity>>,
) -> Result<BoxRecord, SyncError> {
    let rec = authorize(state, peer).await?;
    let (id, health) = seen(&rec);
    state.store.touch_box(&id, &health).await?;
    Ok(rec)
}

/// Steps 1 to 3 of the module doc.
pub(crate) async fn authorize(
    state: &AppState,
    peer: Option<Extension<PeerIdentity>>,
) -> Result<BoxRecord, SyncError> {
    let Some(Extension(peer)) = peer else {
        return Err(SyncError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::UnknownBox,
            "no client certificate",
        ));
    };
    let Some(rec) = state.store.box_record(&peer.box_id).await? else {
        return Err(SyncError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::UnknownBox,
            format!("box {:?} is not registered at HQ", peer.box_id),
        ));
    };
    if rec.revoked_at_ms.is_some() {
        return Err(identity_error(Error::BoxRevoked {
            box_id: rec.id,
            reason: rec.revoked_reason.unwrap_or_default(),
        }));
    }
    let mut rec = rec;
    if rec.next_cert_fingerprint.as_deref() == Some(peer.fingerprint.as_str()) {
        // The box uses its renewed certificate: from now on only that one is accepted.
        if state
            .store
            .promote_next_cert(&rec.id, &peer.fingerprint)
            .await?
        {
            tracing::info!(box_id = %rec.id, "box switched to its renewed certificate");
            rec.cert_fingerprint = rec.next_cert_fingerprint.take();
        } else {
            // Another instance promoted it (or revoked the box) meanwhile: decide on
            // the row as it is now.
            rec = state.store.box_record(&peer.box_id).await?.ok_or_else(|| {
                identity_error(Error::NotFound {
                    what: "box",
                    key: peer.box_id.clone(),
                })
            })?;
            if rec.revoked_at_ms.is_some() {
                return Err(identity_error(Error::BoxRevoked {
                    box_id: rec.id,
                    reason: rec.revoked_reason.unwrap_or_default(),
                }));
            }
        }
    }
    if rec.next_cert_fingerprint.is_some()
        && rec.cert_fingerprint.as_deref() == Some(peer.fingerprint.as_str())
    {
        // A renewal is staged and this connection still presents the old
        // certificate: end it after this answer so the box's next request presents
        // the certificate it holds by then (reqwest and the like keep connections).
        peer.close_connection();
    }
    if rec
        .cert_fingerprint
        .as_deref()
        .is_some_and(|fp| fp != peer.fingerprint)
    {
        return Err(SyncError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::UnknownBox,
            format!(
                "this is not the certificate HQ issued last for box {:?} (a renewed or \
                 re-enrolled certificate replaced it)",
                peer.box_id
            ),
        )
        .closing());
    }
    Ok(rec)
}

fn seen(rec: &BoxRecord) -> (String, BoxHealth) {
    (
        rec.id.clone(),
        BoxHealth {
            seen_at_ms: now_ms(),
            ..BoxHealth::default()
        },
    )
}

async fn up(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpAck>, SyncError> {
    let rec = authorize(&state, peer).await?;
    let body = body.map_err(|e| {
        SyncError::new(
            e.status(),
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorCode::TooLarge
            } else {
                ErrorCode::MalformedBatch
            },
            format!("cannot read the body: {e}"),
        )
    })?;
    let gzip = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let box_id = rec.id.clone();
    // Inflating and parsing up to 4 MiB is CPU work: keep it off the async workers.
    let valid = tokio::task::spawn_blocking(move || {
        let batch = if gzip {
            decode_batch(&body, MAX_UP_BODY_INFLATED)
        } else if body.len() > MAX_UP_BODY_INFLATED {
            Err(DecodeError::TooLarge {
                limit: MAX_UP_BODY_INFLATED,
            })
        } else {
            serde_json::from_slice(&body).map_err(|source| DecodeError::Json { source })
        };
        let batch = batch.map_err(|e| match e {
            DecodeError::TooLarge { .. } => SyncError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                e.to_string(),
            ),
            other => SyncError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedBatch,
                other.to_string(),
            ),
        })?;
        validate_batch(batch, &box_id).map_err(|e| match e {
            BatchError::UnsupportedVersion { .. } => SyncError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnsupportedVersion,
                e.to_string(),
            ),
            BatchError::WrongBox { .. } => {
                SyncError::new(StatusCode::FORBIDDEN, ErrorCode::UnknownBox, e.to_string())
            }
            BatchError::Malformed(_) => SyncError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedBatch,
                e.to_string(),
            ),
        })
    })
    .await
    .map_err(|source| Error::Join {
        op: "decode batch",
        source,
    })?;
    let valid = match valid {
        Ok(v) => v,
        Err(e) => {
            let (id, health) = seen(&rec);
            state.store.touch_box(&id, &health).await?;
            return Err(e);
        }
    };
    let health = BoxHealth {
        seen_at_ms: now_ms(),
        firmware_version: Some(valid.firmware_version.clone()),
        backlog: Some((
            i64::try_from(valid.backlog).unwrap_or(i64::MAX),
            valid.oldest_pending_ms,
        )),
    };
    let outcome = state.store.ingest(&rec, &valid, &health).await?;
    if outcome.feed_changed {
        state.feed.changed(&rec.site);
    }
    let site = state.store.site(&rec.site).await?;
    Ok(Json(UpAck {
        version: PROTOCOL_VERSION,
        acked_seq: outcome.acked_seq,
        conflicts: outcome.conflicts,
        file_policy: site.map_or(crate::wire::FilePolicy::None, |s| s.file_policy),
    }))
}

async fn down(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    query: Result<Query<DownQuery>, QueryRejection>,
) -> Result<Json<DownResponse>, SyncError> {
    let rec = authorize(&state, peer).await?;
    let (id, health) = seen(&rec);
    state.store.touch_box(&id, &health).await?;
    let Query(q) = query.map_err(|e| {
        SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBatch,
            format!("bad query: {e}"),
        )
    })?;
    if q.since < 0 {
        return Err(SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBatch,
            "since must not be negative",
        ));
    }
    let wait = Duration::from_millis(q.wait_ms.min(MAX_WAIT_MS));
    let limit = q.limit.clamp(1, MAX_PAGE_CHANGES);
    let deadline = tokio::time::Instant::now() + wait;
    let notify = state.feed.notifier(&rec.site);
    loop {
        // Register for a wake-up before reading, so a change committed between the
        // read and the wait is not missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match state.store.read_feed(&rec.site, q.since, limit).await? {
            FeedRead::Snapshot { rows, cursor } => {
                return Ok(Json(DownResponse::Snapshot {
                    version: PROTOCOL_VERSION,
                    rows,
                    cursor,
                }))
            }
            FeedRead::Page { changes, more } if !changes.is_empty() => {
                let cursor = changes.last().map_or(q.since, |c| c.revision);
                return Ok(Json(DownResponse::Page {
                    version: PROTOCOL_VERSION,
                    changes,
                    cursor,
                    more,
                }));
            }
            FeedRead::Page { .. } => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let nap = state.config.poll_interval.min(deadline - now);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
            () = state.shutdown.cancelled() => break,
        }
    }
    Ok(Json(DownResponse::Page {
        version: PROTOCOL_VERSION,
        changes: Vec::new(),
        cursor: q.since,
        more: false,
    }))
}

fn check_sha(sha: &str) -> Result<(), SyncError> {
    if is_sha256_hex(sha) {
        Ok(())
    } else {
        Err(SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadChunk,
            "the file name must be a sha256 in lowercase hex",
        ))
    }
}

async fn file_status(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    Path(sha): Path<String>,
) -> Result<Json<FileStatus>, SyncError> {
    let rec = authorize(&state, peer).await?;
    let (id, health) = seen(&rec);
    state.store.touch_box(&id, &health).await?;
    check_sha(&sha)?;
    Ok(Json(state.files.status(&sha).await?))
}

/// Query of a chunk upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkQuery {
    offset: u64,
}

async fn file_chunk(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    Path(sha): Path<String>,
    query: Result<Query<ChunkQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FileStatus>, SyncError> {
    let rec = authorize(&state, peer).await?;
    let (id, health) = seen(&rec);
    state.store.touch_box(&id, &health).await?;
    check_sha(&sha)?;
    let Query(q) = query.map_err(|e| {
        SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadChunk,
            format!("bad query: {e}"),
        )
    })?;
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadChunk
        };
        SyncError::new(e.status(), code, format!("cannot read the chunk: {e}"))
    })?;
    let Some(size) = state.store.recording_size(&rec.site, &sha).await? else {
        return Err(SyncError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BadChunk,
            "no recording metadata for this file reached HQ yet: send the outbox first",
        ));
    };
    match state.files.put_chunk(&sha, q.offset, body, size).await? {
        Ok(status) => Ok(Json(status)),
        Err(e) => {
            let status = match e {
                ChunkError::WrongOffset { .. } | ChunkError::Busy => StatusCode::CONFLICT,
                ChunkError::PastEnd { .. } | ChunkError::HashMismatch { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            Err(SyncError::new(status, ErrorCode::BadChunk, e.to_string()))
        }
    }
}
