//! `/api/v1/recordings`: call recordings ([`crate::recorder`]) for the roles that may
//! hear them.
//!
//! - `GET /api/v1/recordings?call_id&since&until&limit&offset` (`recordings.view`):
//!   the recordings started in `[since, until)` (default: the last 7 days), of one call
//!   when `call_id` is given, newest first, one page of them. A recording is the record
//!   of its call: it stands for the CDR's targets ([`crate::mask::NumberDirectory`]:
//!   the owners of its internal parties and their groups), so a supervisor sees their
//!   group's and a quality inspector (site scope) all; a recording without a CDR (cut
//!   by a crash) is ownerless and needs `site`. Each item carries its call's numbers
//!   masked exactly like `GET /api/v1/cdrs`, whether the file is still there, and
//!   whether the caller may listen to or download it.
//! - `GET /api/v1/recordings/{id}/audio[?download=true]` (`recordings.listen`, or
//!   `recordings.download` with `download=true`, scoped like the list): the WAV file
//!   (`audio/wav`, stereo 16-bit PCM at 8 kHz) with `Accept-Ranges: bytes`, so a
//!   browser's `<audio>` element can seek. One `Range: bytes=` range is answered 206
//!   with `Content-Range`; a range past the end 416; several ranges, or an `If-Range`
//!   that does not match the `ETag` (the file's sha256), get the whole file (200), as
//!   RFC 9110 allows. `download=true` adds `Content-Disposition: attachment`. 404 for
//!   an unknown id, 403 outside the caller's scope (audited as a denial), 410 when
//!   retention deleted the file (or it is gone otherwise). A request that starts at the
//!   first byte is audited (resource `recordings`, action `listen` or `download`,
//!   target the call id); the follow-up range requests a player makes while seeking
//!   are not, so one playback is one audit row.
//!
//! Why not tower-http's `ServeFile`: it does handle single ranges, but its `fs` feature
//! adds `mime_guess` and `http-range-header` to a binary with little room under its
//! size budget (BENCHMARKS.md), and the handler needs its own 403/410 answers and
//! audit rows before the file is opened anyway. The range rules are the few lines of
//! [`byte_range`], unit tested below; the body streams the file in 64 KiB chunks.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ApiError, ApiState, Authed};
use crate::accounts::PageRequest;
use crate::audit::{AuditEntry, AuditResult};
use crate::mask::{self, CdrView, NumberDirectory};
use crate::rbac::{Action, Authorizer, Resource, Subject, Target};
use crate::recorder::index::{self, IndexedRecording};
use crate::store::StoreReader;

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// The list's default window, like `GET /api/v1/cdrs`'s.
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

/// Bytes per chunk of an audio body.
const CHUNK: usize = 64 * 1024;

/// What one caller may do with one recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub(crate) struct Access {
    /// `recordings.view`: it shows in lists (the page's "recorded").
    pub(crate) view: bool,
    /// `recordings.listen`: the page's player.
    pub(crate) listen: bool,
    /// `recordings.download`: the download link.
    pub(crate) download: bool,
}

/// The records a recording stands for: its CDR's targets, or an ownerless record when
/// no CDR is known.
fn targets(reader: &StoreReader, dir: &NumberDirectory, call_id: &str) -> ApiResult<Targets> {
    let cdr = reader.cdr(call_id)?;
    let targets = match &cdr {
        Some(c) => dir.cdr_targets(c),
        None => vec![Target::Owned {
            owner: None,
            groups: Vec::new(),
        }],
    };
    Ok(Targets { cdr, targets })
}

struct Targets {
    cdr: Option<crate::cdr::Cdr>,
    targets: Vec<Target>,
}

impl Targets {
    fn allows(&self, authz: &Authorizer, subject: &Subject, action: Action) -> bool {
        self.targets.iter().any(|t| {
            authz
                .authorize(subject, Resource::Recordings, action, t)
                .is_allowed()
        })
    }

    fn access(&self, authz: &Authorizer, subject: &Subject) -> Access {
        Access {
            view: self.allows(authz, subject, Action::View),
            listen: self.allows(authz, subject, Action::Listen),
            download: self.allows(authz, subject, Action::Download),
        }
    }

    /// The target the audit row and the 403 check use: the first one the subject is
    /// allowed on, else the first (whose denial is then audited).
    fn for_action(&self, authz: &Authorizer, subject: &Subject, action: Action) -> Target {
        self.targets
            .iter()
            .find(|t| {
                authz
                    .authorize(subject, Resource::Recordings, action, t)
                    .is_allowed()
            })
            .or_else(|| self.targets.first())
            .cloned()
            .unwrap_or(Target::Site)
    }
}

/// The recording of each of `call_ids` (the first one of a call) that `subject` may at
/// least view, with what they may do with it: the web page's calls list.
pub(crate) fn for_calls(
    reader: &StoreReader,
    authz: &Authorizer,
    subject: &Subject,
    dir: &NumberDirectory,
    call_ids: &[&str],
) -> ApiResult<HashMap<String, (IndexedRecording, Access)>> {
    let mut out = HashMap::new();
    for &call_id in call_ids {
        let Some(rec) = index::recordings_of_call(reader.connection(), reader.path(), call_id)?
            .into_iter()
            .next()
        else {
            continue;
        };
        let access = targets(reader, dir, call_id)?.access(authz, subject);
        if access.view {
            out.insert(call_id.to_owned(), (rec, access));
        }
    }
    Ok(out)
}

/// Whether the recording's file may still be served: not deleted by retention.
fn available(rec: &IndexedRecording) -> bool {
    rec.deleted_at_ms.is_none()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    call_id: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

fn default_limit() -> u32 {
    PageRequest::default().limit
}

/// One recording as the list shows it.
#[derive(Debug, Serialize)]
struct Item {
    id: i64,
    call_id: String,
    started_at_ms: i64,
    duration_ms: i64,
    size: u64,
    format: String,
    channels: Option<String>,
    port: Option<u8>,
    interrupted: bool,
    /// The file is still on the box (retention has not deleted it).
    available: bool,
    deleted_at_ms: Option<i64>,
    /// The call, masked for the caller; `None` when no CDR is known (cut by a crash).
    call: Option<CdrView>,
    may_listen: bool,
    may_download: bool,
    /// Where the audio is (when it is available and the caller may listen).
    audio_url: Option<String>,
}

pub(super) async fn list(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let page = PageRequest {
        limit: q.limit,
        offset: q.offset,
    };
    page.validate()?;
    if let Some(c) = &q.call_id {
        if c.is_empty() || c.len() > 256 {
            return Err(ApiError::invalid("call_id", "must be 1 to 256 characters"));
        }
    }
    let now = state.now();
    let (since, until) = (
        q.since.unwrap_or(now.saturating_sub(DEFAULT_WINDOW_MS)),
        q.until.unwrap_or(i64::MAX),
    );
    if since >= until {
        return Err(ApiError::invalid("until", "must be after since"));
    }
    let reader = state.reader()?;
    // Any `recordings.view` grant reaches the caller's own calls; each recording is
    // then checked against its call's records with the same authorizer.
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Recordings,
            Action::View,
            &who.own_target(),
            "*",
        )
        .await?;
    let dir = NumberDirectory::load(&reader)?;
    let rows = index::recordings_between(
        reader.connection(),
        reader.path(),
        since,
        until,
        q.call_id.as_deref(),
    )?;
    let mut visible = Vec::new();
    for rec in rows {
        let t = targets(&reader, &dir, &rec.call_id)?;
        let access = t.access(&authz, &who.subject);
        if access.view {
            visible.push((rec, t.cdr, access));
        }
    }
    let total = i64::try_from(visible.len()).unwrap_or(i64::MAX);
    let items: Vec<Item> = visible
        .into_iter()
        .skip(page.offset as usize)
        .take(page.limit as usize)
        .map(|(rec, cdr, access)| {
            let call =
                cdr.map(|c| mask::cdr_view(&c, &who.subject, &authz, state.mask_pattern(), &dir));
            let available = available(&rec);
            Item {
                audio_url: (available && access.listen)
                    .then(|| format!("/api/v1/recordings/{}/audio", rec.id)),
                id: rec.id,
                call_id: rec.call_id,
                started_at_ms: rec.started_at_ms,
                duration_ms: rec.duration_ms,
                size: rec.size,
                format: rec.format,
                channels: rec.channels,
                port: rec.port,
                interrupted: rec.interrupted,
                available,
                deleted_at_ms: rec.deleted_at_ms,
                call,
                may_listen: access.listen,
                may_download: access.download,
            }
        })
        .collect();
    Ok(Json(crate::accounts::Page {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AudioQuery {
    #[serde(default)]
    download: bool,
}

/// What a `Range` header asks of a body of `len` bytes ([RFC 9110 §14]).
///
/// [RFC 9110 §14]: https://www.rfc-editor.org/rfc/rfc9110#section-14
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// The whole body (no range, a malformed one, several, or another unit).
    Whole,
    /// Bytes `start..=end` (206).
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// Nothing of the body satisfies the range (416).
    Unsatisfiable,
}

/// The range `header` (a `Range` value) asks for in a body of `len` bytes: one
/// `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. A header this does not
/// understand is ignored (the whole body), as RFC 9110 requires of a server that does
/// not support it; several ranges are answered with the whole body too.
pub(crate) fn byte_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // bytes=-N: the last N bytes.
        return match num(last) {
            None => ByteRange::Whole,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = num(first) else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(l) if l >= start => Some(l),
            _ => return ByteRange::Whole,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part {
        start,
        end: end.map_or(len - 1, |l| l.min(len - 1)),
    }
}

fn gone(rec: &IndexedRecording) -> ApiError {
    let message = match rec.deleted_at_ms {
        Some(at) => format!(
            "recording {} was deleted by retention at {} (ms since the epoch); HQ may still hold it",
            rec.id, at
        ),
        None => format!(
            "recording {}'s file is gone from the box (the next retention pass marks it)",
            rec.id
        ),
    };
    ApiError::new(StatusCode::GONE, message)
}

pub(super) async fn audio(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    q: Result<Query<AudioQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let reader = state.reader()?;
    let rec = index::recording(reader.connection(), reader.path(), id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such recording"))?;
    let dir = NumberDirectory::load(&reader)?;
    let t = targets(&reader, &dir, &rec.call_id)?;
    let action = if q.download {
        Action::Download
    } else {
        Action::Listen
    };
    let authz = state.authorizer(&reader)?;
    let target = t.for_action(&authz, &who.subject, action);
    drop(reader);
    state
        .authorize(
            &who,
            &authz,
            Resource::Recordings,
            action,
            &target,
            &rec.call_id,
        )
        .await?;
    if !available(&rec) {
        return Err(gone(&rec));
    }
    let path: PathBuf = rec.path.clone();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone(&rec)),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "recording file not opened");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recording's file could not be read",
            ));
        }
    };
    let len = file.metadata().await.map(|m| m.len()).map_err(|e| {
        tracing::error!(file = %path.display(), error = %e, "recording file not read");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the recording's file could not be read",
        )
    })?;
    let etag = format!("\"{}\"", rec.sha256);
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // An If-Range naming another version of the file: the whole (current) file.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = if if_range_ok {
        byte_range(range_header, len)
    } else {
        ByteRange::Whole
    };
    let (status, start, end) = match range {
        ByteRange::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range is past the end of the {len}-byte file"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        ByteRange::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
    };
    if start == 0 {
        let entry = AuditEntry {
            actor: who.actor(),
            action: if q.download { "download" } else { "listen" }.to_owned(),
            resource: Resource::Recordings.as_str().to_owned(),
            target: rec.call_id.clone(),
            result: AuditResult::Ok,
            detail: serde_json::json!({ "id": rec.id, "sha256": rec.sha256 }),
        };
        state.accounts().audit(entry, state.now()).await?;
    }
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(|e| {
            tracing::error!(file = %path.display(), error = %e, "recording file not read");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recording's file could not be read",
            )
        })?;
    }
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let stream = futures_util::stream::unfold((file, body_len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            // The file shrank under us: end the body (the length promised is not met,
            // and the client sees a short read).
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if q.download {
        let name: String = rec
            .call_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if let Ok(v) =
            HeaderValue::from_str(&format!("attachment; filename=\"recording-{name}.wav\""))
        {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::{byte_range, ByteRange};

    #[test]
    fn ranges_follow_rfc_9110() {
        use ByteRange::{Part, Unsatisfiable, Whole};
        let r = |h: &str| byte_range(Some(h), 1000);
        assert_eq!(byte_range(None, 1000), Whole);
        assert_eq!(r("bytes=0-"), Part { start: 0, end: 999 });
        assert_eq!(r("bytes=0-99"), Part { start: 0, end: 99 });
        assert_eq!(
            r("bytes=500-"),
            Part {
                start: 500,
                end: 999
            }
        );
        // A last byte past the end is cut to the end.
        assert_eq!(
            r("bytes=900-5000"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Part { start: 0, end: 999 });
        assert_eq!(r(" bytes=10-19 "), Part { start: 10, end: 19 });
        // Past the end, or an empty suffix: 416.
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=2000-3000"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Not understood, several, or backwards: ignored (the whole body).
        for h in [
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=-",
            "bytes=1-x",
            "bytes=+1-2",
            "",
        ] {
            assert_eq!(r(h), Whole, "{h}");
        }
    }
}
