//! Recording files: registering them (store row + outbox row in one transaction) and
//! the task that uploads them to HQ by driving [`FileUploader`].
//!
//! ```text
//!   recorder / `branchd recording-add` ── register_recording ──▶ recordings row + outbox row
//!   agent: ack committed ──wake──▶ file task: policy + acked seq + pending rows (store)
//!        └────────force────────▶        │ Pending/Policy
//!                                        ▼
//!                                  FileUploader ──Status──▶ check local file, GET {FILES_PATH}/{sha}
//!                                        │      ──Chunk───▶ read chunk, PUT ...?offset=N
//!                                        ◀── Answered / Failed / Unreadable ──┘
//!                                        └─Done──▶ recordings.uploaded_at_ms   └─Error──▶ recordings.last_error
//! ```
//!
//! # Rules
//!
//! - A recording is a file in the recordings directory (`paths.recordings`), a
//!   `recordings` row (migration 0005) and an outbox row of kind `recording` carrying
//!   its [`RecordingMeta`]; [`register_recording`] writes both rows in one
//!   transaction, so HQ learns of every recording the box keeps, exactly once.
//! - The file goes up only after HQ acknowledged its metadata (its outbox seq is at or
//!   below the acknowledged seq in `sync_state`), and only if HQ's file policy, as last
//!   acknowledged, wants it.
//! - Before the first byte of a file goes up in this daemon's life, the file on disk is
//!   checked against its row: present, of the registered size, of the registered
//!   sha256. Before every chunk its size and modification time are compared with that
//!   check (and a changed file hashed again). A file that vanished or changed is an
//!   error of that recording: it is shown in the sync status and stored on the row,
//!   the row is kept, and the upload is tried again later (or on a forced sync).
//! - When HQ confirms the whole file (it verified the sha256), the row gets
//!   `uploaded_at_ms`. The file itself stays: deleting recordings is retention, not
//!   sync.
//!
//! # Limits
//!
//! Recording files are read in chunks of at most [`MAX_FILE_CHUNK`] (one in memory at
//! a time). The bandwidth cap (`[hq] upload_bandwidth_kbps`) applies to recording files only,
//! not to outbox batches or the change feed. Nothing deletes uploaded files yet.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use branchline_sync::agent::{
    BackoffConfig, Failure, FileError, FileEvent, FileInput, FileTransmit, FileUploader,
    FileUploaderConfig, PendingFile, RequestId,
};
use branchline_sync::wire::{self, FileStatus, RecordKind, RecordingMeta, MAX_FILE_CHUNK};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::status::SyncHandle;
use super::store::SyncStore;
use crate::config::HqConfig;
use crate::error::{Error, FieldProblem, Result};
use crate::store::{system_clock_ms, Store, StoreWriter};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

// ---------------------------------------------------------------------------------
// The store side
// ---------------------------------------------------------------------------------

/// A row of the `recordings` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingRow {
    /// Row id (the upload core's file id).
    pub id: i64,
    /// The call leg recorded.
    pub call_id: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The file (absolute).
    pub path: PathBuf,
    /// The outbox row that carries its metadata.
    pub outbox_seq: i64,
    /// When HQ confirmed the whole file.
    pub uploaded_at_ms: Option<i64>,
    /// The last upload problem of this file.
    pub last_error: Option<String>,
}

/// What [`register_recording`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The `recordings` row.
    pub id: i64,
    /// The outbox row carrying the metadata.
    pub outbox_seq: i64,
}

/// Longest call id and format, as HQ accepts them.
const MAX_CALL_ID: usize = 256;
const MAX_FORMAT: usize = 64;

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn text_problem(field: &str, value: &str, max: usize) -> Option<FieldProblem> {
    let message = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > max {
        format!("is longer than {max} bytes")
    } else if value.chars().any(char::is_control) {
        "contains control characters".to_owned()
    } else {
        return None;
    };
    Some(FieldProblem {
        field: field.to_owned(),
        message,
    })
}

/// Every problem of `meta` and `file` that can be seen without the database: the
/// fields HQ checks, and the file (absolute, UTF-8, a regular file of `meta.size`).
fn problems(meta: &RecordingMeta, file: &Path) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let mut problem = |field: &str, message: String| {
        out.push(FieldProblem {
            field: field.to_owned(),
            message,
        })
    };
    if let Some(p) = text_problem("call_id", &meta.call_id, MAX_CALL_ID) {
        problem(&p.field, p.message);
    }
    if let Some(p) = text_problem("format", &meta.format, MAX_FORMAT) {
        problem(&p.field, p.message);
    }
    if !is_sha256_hex(&meta.sha256) {
        problem(
            "sha256",
            format!("{:?} is not 64 lowercase hex digits", meta.sha256),
        );
    }
    if meta.duration_ms < 0 {
        problem("duration_ms", format!("{} is negative", meta.duration_ms));
    }
    if meta.started_at_ms < 0 {
        problem(
            "started_at_ms",
            format!("{} is negative", meta.started_at_ms),
        );
    }
    if i64::try_from(meta.size).is_err() {
        problem("size", format!("{} is too large", meta.size));
    }
    if !file.is_absolute() || file.to_str().is_none() {
        problem(
            "path",
            format!("{} must be an absolute UTF-8 path", file.display()),
        );
    } else {
        match std::fs::metadata(file) {
            Ok(m) if !m.is_file() => {
                problem("path", format!("{} is not a regular file", file.display()))
            }
            Ok(m) if m.len() != meta.size => problem(
                "size",
                format!(
                    "{} is {} bytes, not the {} registered",
                    file.display(),
                    m.len(),
                    meta.size
                ),
            ),
            Ok(_) => {}
            Err(e) => problem("path", format!("{}: {e}", file.display())),
        }
    }
    out
}

/// Writes a recording's row and its outbox row (kind `recording`, key = sha256,
/// payload = `meta`) in the caller's transaction. `file` must be absolute and hold
/// `meta.size` bytes; a sha256 already registered is refused. Any problem is
/// [`Error::Invalid`] naming every field, and writes nothing.
pub fn register_recording_tx(
    conn: &Connection,
    db: &Path,
    meta: &RecordingMeta,
    file: &Path,
    now_ms: i64,
) -> Result<Registered> {
    let mut found = problems(meta, file);
    if is_sha256_hex(&meta.sha256) {
        let existing: Option<i64> = conn
            .query_row(
                "SELECT id FROM recordings WHERE sha256 = ?1",
                [&meta.sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(db, "look up recording"))?;
        if let Some(id) = existing {
            found.push(FieldProblem {
                field: "sha256".to_owned(),
                message: format!("this file is already registered (recording {id})"),
            });
        }
    }
    if !found.is_empty() {
        return Err(Error::Invalid {
            entity: "recording",
            key: meta.call_id.clone(),
            problems: found,
        });
    }
    let payload = serde_json::to_string(meta).map_err(|source| Error::Json {
        kind: "recording",
        key: meta.sha256.clone(),
        source,
    })?;
    let outbox_seq = crate::accounts::outbox(
        conn,
        db,
        RecordKind::Recording.as_str(),
        &meta.sha256,
        &payload,
        now_ms,
    )?;
    // Checked above: absolute, UTF-8, size fits i64.
    let path = file.to_str().unwrap_or_default();
    conn.execute(
        "INSERT INTO recordings (call_id, sha256, size, started_at_ms, duration_ms, format,
                                 path, outbox_seq, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            meta.call_id,
            meta.sha256,
            i64::try_from(meta.size).unwrap_or(i64::MAX),
            meta.started_at_ms,
            meta.duration_ms,
            meta.format,
            path,
            outbox_seq,
            now_ms
        ],
    )
    .map_err(sql(db, "insert recording"))?;
    Ok(Registered {
        id: conn.last_insert_rowid(),
        outbox_seq,
    })
}

/// Registers a recording through the running daemon's writer (the call recorder's
/// entry point): [`register_recording_tx`] in one transaction. The sync agent sees the
/// new outbox row at once.
pub async fn register_recording(
    writer: &StoreWriter,
    meta: RecordingMeta,
    file: PathBuf,
) -> Result<Registered> {
    writer
        .transact("register recording", move |tx, db| {
            register_recording_tx(tx, db, &meta, &file, system_clock_ms())
        })
        .await
}

/// [`register_recording`] on a store opened without its writer thread (console
/// commands; the running daemon's uploader finds the row at its next outbox poll).
pub fn register_recording_in(
    store: &mut Store,
    meta: &RecordingMeta,
    file: &Path,
) -> Result<Registered> {
    let now = system_clock_ms();
    store.transact("register recording", |tx, db| {
        register_recording_tx(tx, db, meta, file, now)
    })
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: r.get(0)?,
        call_id: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get::<_, i64>(3)?.max(0).unsigned_abs(),
        path: PathBuf::from(r.get::<_, String>(4)?),
        outbox_seq: r.get(5)?,
        uploaded_at_ms: r.get(6)?,
        last_error: r.get(7)?,
    })
}

const ROW_COLUMNS: &str = "id, call_id, sha256, size, path, outbox_seq, uploaded_at_ms, last_error";

/// Most pending recordings listed to the uploader at once (it works oldest first; the
/// next ones are listed after these are done).
pub const PENDING_PAGE: usize = 1000;

/// Recordings not yet uploaded whose metadata HQ acknowledged (outbox seq at or below
/// `acked_seq`), oldest first, at most [`PENDING_PAGE`].
pub fn pending_uploads(conn: &Connection, db: &Path, acked_seq: i64) -> Result<Vec<RecordingRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM recordings
              WHERE uploaded_at_ms IS NULL AND outbox_seq <= ?1
              ORDER BY outbox_seq LIMIT ?2"
        ))
        .map_err(sql(db, "read pending recordings"))?;
    let rows = stmt
        .query_map(params![acked_seq, PENDING_PAGE as i64], row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql(db, "read pending recordings"))?;
    Ok(rows)
}

/// The recording with this sha256, if any.
pub fn recording_by_sha(
    conn: &Connection,
    db: &Path,
    sha256: &str,
) -> Result<Option<RecordingRow>> {
    conn.query_row(
        &format!("SELECT {ROW_COLUMNS} FROM recordings WHERE sha256 = ?1"),
        [sha256],
        row,
    )
    .optional()
    .map_err(sql(db, "read recording"))
}

/// Marks recording `id` uploaded (and clears its error); false if it does not exist.
pub fn mark_uploaded(conn: &Connection, db: &Path, id: i64, now_ms: i64) -> Result<bool> {
    let n = conn
        .execute(
            "UPDATE recordings SET uploaded_at_ms = ?2, last_error = NULL, last_error_ms = NULL
              WHERE id = ?1",
            params![id, now_ms],
        )
        .map_err(sql(db, "mark recording uploaded"))?;
    Ok(n == 1)
}

/// Stores the last upload problem of recording `id` (cut to 500 characters).
pub fn record_upload_error(
    conn: &Connection,
    db: &Path,
    id: i64,
    message: &str,
    now_ms: i64,
) -> Result<()> {
    let message: String = message.chars().take(500).collect();
    conn.execute(
        "UPDATE recordings SET last_error = ?2, last_error_ms = ?3 WHERE id = ?1",
        params![id, message, now_ms],
    )
    .map_err(sql(db, "record recording error"))?;
    Ok(())
}

/// The recordings' part of the sync status, from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FilesSummary {
    /// Recordings not yet uploaded (whatever HQ's policy).
    pub pending: i64,
    /// Their bytes.
    pub pending_bytes: i64,
    /// Of them, those whose metadata HQ has not acknowledged yet.
    pub awaiting_metadata: i64,
    /// Of them, those with an upload problem stored.
    pub failed: i64,
    /// Recordings HQ holds.
    pub uploaded: i64,
    /// The most recent upload problem of a pending recording.
    pub last_error: Option<FileErrorAt>,
}

/// An upload problem of one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileErrorAt {
    /// The recording's sha256.
    pub sha256: String,
    /// The file.
    pub path: String,
    /// What, in words.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub at_ms: Option<i64>,
}

/// Counts the recordings for the status (`acked_seq`: HQ's acknowledged outbox seq).
pub fn summary(conn: &Connection, db: &Path, acked_seq: i64) -> Result<FilesSummary> {
    let (pending, pending_bytes, awaiting, failed, uploaded) = conn
        .query_row(
            "SELECT COALESCE(SUM(uploaded_at_ms IS NULL), 0),
                    COALESCE(SUM(CASE WHEN uploaded_at_ms IS NULL THEN size END), 0),
                    COALESCE(SUM(uploaded_at_ms IS NULL AND outbox_seq > ?1), 0),
                    COALESCE(SUM(uploaded_at_ms IS NULL AND last_error IS NOT NULL), 0),
                    COALESCE(SUM(uploaded_at_ms IS NOT NULL), 0)
               FROM recordings",
            [acked_seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map_err(sql(db, "count recordings"))?;
    let last_error = conn
        .query_row(
            "SELECT sha256, path, last_error, last_error_ms FROM recordings
              WHERE uploaded_at_ms IS NULL AND last_error IS NOT NULL
              ORDER BY last_error_ms DESC LIMIT 1",
            [],
            |r| {
                Ok(FileErrorAt {
                    sha256: r.get(0)?,
                    path: r.get(1)?,
                    message: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(sql(db, "read recording error"))?;
    Ok(FilesSummary {
        pending,
        pending_bytes,
        awaiting_metadata: awaiting,
        failed,
        uploaded,
        last_error,
    })
}

// ---------------------------------------------------------------------------------
// Local files
// ---------------------------------------------------------------------------------

/// Why a local recording file cannot be uploaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    /// The file is gone.
    #[error("{}: the recording file is missing", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file cannot be opened or read.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Its size is not the registered one.
    #[error("{}: is {actual} bytes, but {expected} were registered", path.display())]
    SizeChanged {
        /// The file.
        path: PathBuf,
        /// Registered size.
        expected: u64,
        /// Size now.
        actual: u64,
    },
    /// Its content is not the registered one.
    #[error("{}: sha256 is {actual}, but {expected} was registered", path.display())]
    HashChanged {
        /// The file.
        path: PathBuf,
        /// Registered sha256.
        expected: String,
        /// sha256 now.
        actual: String,
    },
}

/// A file checked against its row: its length and modification time at the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    len: u64,
    modified: Option<SystemTime>,
}

fn io_error<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> LocalFileError + 'a {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LocalFileError::Missing {
                path: path.to_owned(),
            }
        } else {
            LocalFileError::Io {
                path: path.to_owned(),
                op,
                source,
            }
        }
    }
}

/// sha256 (lowercase hex) and length of the file at `path`, read in 64 KiB blocks.
pub fn file_sha256(path: &Path) -> std::result::Result<(String, u64), LocalFileError> {
    let mut f = std::fs::File::open(path).map_err(io_error(path, "open"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_error(path, "read"))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), len))
}

fn stat(path: &Path, size: u64) -> std::result::Result<Checked, LocalFileError> {
    let meta = std::fs::metadata(path).map_err(io_error(path, "stat"))?;
    if meta.len() != size {
        return Err(LocalFileError::SizeChanged {
            path: path.to_owned(),
            expected: size,
            actual: meta.len(),
        });
    }
    Ok(Checked {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Checks the file at `path` against its registration: `size` bytes hashing to
/// `sha256`.
pub fn check_file(
    path: &Path,
    size: u64,
    sha256: &str,
) -> std::result::Result<Checked, LocalFileError> {
    let before = stat(path, size)?;
    let (actual, len) = file_sha256(path)?;
    if len != size {
        return Err(LocalFileError::SizeChanged {
            path: path.to_owned(),
            expected: size,
            actual: len,
        });
    }
    if actual != sha256 {
        return Err(LocalFileError::HashChanged {
            path: path.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    Ok(before)
}

/// Reads `len` bytes at `offset` of a checked file; a file whose size or modification
/// time moved since `checked` is checked again first (and refused if it changed).
/// Returns the bytes and the (possibly renewed) check.
pub fn read_chunk(
    path: &Path,
    size: u64,
    sha256: &str,
    checked: Option<Checked>,
    offset: u64,
    len: usize,
) -> std::result::Result<(Vec<u8>, Checked), LocalFileError> {
    let now = stat(path, size)?;
    let checked = match checked {
        Some(c) if c == now => c,
        _ => check_file(path, size, sha256)?,
    };
    let mut f = std::fs::File::open(path).map_err(io_error(path, "open"))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(io_error(path, "seek"))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            LocalFileError::SizeChanged {
                path: path.to_owned(),
                expected: size,
                actual: offset + len as u64,
            }
        } else {
            io_error(path, "read")(source)
        }
    })?;
    Ok((buf, checked))
}

// ---------------------------------------------------------------------------------
// `branchd recording-add`
// ---------------------------------------------------------------------------------

/// What the header of a WAV file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// WAVE format tag (1 PCM, 6 A-law, 7 µ-law, 0xFFFE extensible).
    pub format_tag: u16,
    /// Channels.
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits: u16,
    /// Bytes of audio in the `data` chunk.
    pub data_bytes: u64,
}

impl WavInfo {
    /// The recording format name, e.g. `wav/pcm16/stereo`.
    pub fn format(&self) -> String {
        let codec = match self.format_tag {
            1 | 0xFFFE => format!("pcm{}", self.bits),
            6 => "alaw".to_owned(),
            7 => "ulaw".to_owned(),
            other => format!("tag{other}"),
        };
        let layout = match self.channels {
            1 => "mono".to_owned(),
            2 => "stereo".to_owned(),
            n => format!("{n}ch"),
        };
        format!("wav/{codec}/{layout}")
    }

    /// Length of the audio in ms.
    pub fn duration_ms(&self) -> i64 {
        let frame = u64::from(self.channels) * u64::from(self.bits).div_ceil(8);
        let per_sec = frame * u64::from(self.sample_rate);
        if per_sec == 0 {
            return 0;
        }
        i64::try_from(self.data_bytes.saturating_mul(1000) / per_sec).unwrap_or(i64::MAX)
    }
}

/// Why a file is not a WAV file this code understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable WAV file: {problem}")]
pub struct WavError {
    /// What is wrong.
    pub problem: &'static str,
}

/// Parses the RIFF/WAVE header at the start of `bytes` (the `fmt ` and `data` chunks).
/// A WAV header is a few dozen bytes; this is hand-written rather than a crate
/// dependency because the box only needs the format and the length.
pub fn parse_wav(bytes: &[u8]) -> std::result::Result<WavInfo, WavError> {
    let bad = |problem| WavError { problem };
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("no RIFF/WAVE header"));
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut fmt = None;
    let mut at = 12usize;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4) as usize;
        let body = at + 8;
        if id == b"fmt " {
            if len < 16 || body + 16 > bytes.len() {
                return Err(bad("fmt chunk too short"));
            }
            fmt = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (format_tag, channels, sample_rate, bits) =
                fmt.ok_or(bad("data chunk before the fmt chunk"))?;
            if channels == 0 || sample_rate == 0 || bits == 0 {
                return Err(bad("fmt chunk with zero channels, rate or sample size"));
            }
            // A recorder that crashed may leave the length unset (0 or 0xFFFFFFFF):
            // the audio is then the rest of the file.
            let rest = (bytes.len() - body) as u64;
            let data_bytes = match len as u64 {
                0 | 0xFFFF_FFFF => rest,
                n => n,
            };
            return Ok(WavInfo {
                format_tag,
                channels,
                sample_rate,
                bits,
                data_bytes,
            });
        }
        at = body.saturating_add(len).saturating_add(len & 1);
    }
    Err(bad("no data chunk in the header"))
}

/// How `branchd recording-add` registers an existing file.
#[derive(Debug, Clone)]
pub struct AddRecording {
    /// The file to register.
    pub file: PathBuf,
    /// The call leg it recorded.
    pub call_id: String,
    /// Recording start (default: the file's modification time minus its duration).
    pub started_at_ms: Option<i64>,
    /// Length (default: from the WAV header).
    pub duration_ms: Option<i64>,
    /// Format name (default: from the WAV header, e.g. `wav/pcm16/stereo`).
    pub format: Option<String>,
}

/// What `branchd recording-add` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Added {
    /// The rows written.
    pub registered: Registered,
    /// The metadata sent to HQ.
    pub meta: RecordingMeta,
    /// Where the file is kept.
    pub path: PathBuf,
    /// Whether it was copied into the recordings directory.
    pub copied: bool,
}

/// Why `branchd recording-add` failed (before or while registering).
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The file could not be read.
    #[error(transparent)]
    Local(#[from] LocalFileError),
    /// Neither `--duration-ms`/`--format` nor a WAV header gave the metadata.
    #[error("{}: {source}; give --duration-ms and --format", path.display())]
    NotWav {
        /// The file.
        path: PathBuf,
        /// What the WAV parser found.
        source: WavError,
    },
    /// The recordings directory or the copy could not be written.
    #[error("{}: cannot {op}: {source}", path.display())]
    Copy {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store refused it (bad field, already registered) or failed.
    #[error(transparent)]
    Store(#[from] Error),
}

fn copy_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> AddError + 'a {
    move |source| AddError::Copy {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Registers an existing file as a recording (`branchd recording-add`): computes its
/// sha256 and size, takes duration and format from its WAV header unless given, copies
/// it into `recordings_dir` as `<sha256>.wav` unless it is already inside (write to a
/// temporary name, fsync, rename), and writes the rows. A refused registration removes
/// a copy it made and changes nothing else.
pub fn add_recording(
    store: &mut Store,
    recordings_dir: &Path,
    add: &AddRecording,
) -> std::result::Result<Added, AddError> {
    let (sha256, size) = file_sha256(&add.file)?;
    let (duration_ms, format) = match (add.duration_ms, &add.format) {
        (Some(d), Some(f)) => (d, f.clone()),
        (d, f) => {
            let mut head = Vec::with_capacity(4096);
            std::fs::File::open(&add.file)
                .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
                .map_err(io_error(&add.file, "read"))?;
            let wav = parse_wav(&head).map_err(|source| AddError::NotWav {
                path: add.file.clone(),
                source,
            })?;
            // The header's length may be a lie for a crashed recorder: bound it by
            // the file.
            let wav = WavInfo {
                data_bytes: wav.data_bytes.min(size),
                ..wav
            };
            (
                d.unwrap_or(wav.duration_ms()),
                f.clone().unwrap_or(wav.format()),
            )
        }
    };
    let started_at_ms = match add.started_at_ms {
        Some(s) => s,
        None => {
            let modified = std::fs::metadata(&add.file)
                .and_then(|m| m.modified())
                .map_err(io_error(&add.file, "stat"))?;
            let ms = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            ms.saturating_sub(duration_ms).max(0)
        }
    };
    let meta = RecordingMeta {
        call_id: add.call_id.clone(),
        sha256: sha256.clone(),
        size,
        started_at_ms,
        duration_ms,
        format,
    };
    std::fs::create_dir_all(recordings_dir).map_err(copy_err(recordings_dir, "create"))?;
    let dir = std::fs::canonicalize(recordings_dir).map_err(copy_err(recordings_dir, "resolve"))?;
    let source = std::fs::canonicalize(&add.file).map_err(io_error(&add.file, "resolve"))?;
    let (path, copied) = if source.starts_with(&dir) {
        (source, false)
    } else {
        let dest = dir.join(format!("{sha256}.wav"));
        if dest.exists() {
            // Same name, same content (the name is the hash): keep it, check it.
            check_file(&dest, size, &sha256)?;
            (dest, false)
        } else {
            let tmp = dir.join(format!(".{sha256}.wav.tmp"));
            let copy = || -> std::io::Result<()> {
                let mut from = std::fs::File::open(&source)?;
                let mut to = std::fs::File::create(&tmp)?;
                std::io::copy(&mut from, &mut to)?;
                to.flush()?;
                to.sync_all()
            };
            if let Err(e) = copy() {
                let _ = std::fs::remove_file(&tmp);
                return Err(copy_err(&tmp, "copy into the recordings directory")(e));
            }
            std::fs::rename(&tmp, &dest).map_err(copy_err(&dest, "rename"))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                // Make the rename durable; if this fails the row still names the file.
                let _ = d.sync_all();
            }
            check_file(&dest, size, &sha256)?;
            (dest, true)
        }
    };
    match register_recording_in(store, &meta, &path) {
        Ok(registered) => Ok(Added {
            registered,
            meta,
            path,
            copied,
        }),
        Err(e) => {
            if copied {
                let _ = std::fs::remove_file(&path);
            }
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------------------------
// The upload task
// ---------------------------------------------------------------------------------

/// How the sync agent talks to the file task: `wake` after it committed an
/// acknowledgement (the acknowledged seq or the policy may have moved), `force` for a
/// forced sync. Two [`Notify`]s, because the agent and this task each need their own
/// wake-up.
#[derive(Debug, Default)]
pub struct FileSignals {
    wake: Notify,
    force: Notify,
}

impl FileSignals {
    /// The acknowledged seq or the policy may have changed: read the store again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sync now: end every wait.
    pub fn force(&self) {
        self.force.notify_one();
    }
}

/// What a finished request reports back to the task.
#[derive(Debug)]
struct Answer {
    request: RequestId,
    id: i64,
    /// The renewed check of the local file, if the request made one.
    checked: Option<Checked>,
    result: AnswerResult,
}

#[derive(Debug)]
enum AnswerResult {
    Http(std::result::Result<FileStatus, Failure>),
    Unreadable(String),
}

/// Everything the file task needs.
#[derive(Debug)]
pub struct FileTask {
    /// `[hq]` (URL, timeouts, bandwidth cap).
    pub hq: HqConfig,
    /// The agent's HTTPS client (mutual TLS).
    pub client: reqwest::Client,
    /// The store.
    pub store: SyncStore,
    /// Where the live status goes.
    pub handle: SyncHandle,
    /// Wake-ups from the agent.
    pub signals: Arc<FileSignals>,
    /// HQ reachability samples for the WAN monitor.
    pub hq_reach: mpsc::UnboundedSender<bool>,
    /// Seed of the jitter.
    pub seed: u64,
}

/// The uploader's settings for `[hq]`.
pub fn uploader_config(hq: &HqConfig) -> FileUploaderConfig {
    FileUploaderConfig {
        chunk_bytes: MAX_FILE_CHUNK,
        bandwidth_bytes_per_sec: FileUploaderConfig::bytes_per_sec_of_kbps(
            hq.upload_bandwidth_kbps,
        ),
        request_timeout: hq.request_timeout,
        backoff: BackoffConfig::default(),
        file_retry: Duration::from_secs(600),
    }
}

impl FileTask {
    /// Runs until `shutdown` is cancelled. A setting the core refuses is logged and
    /// ends the task (telephony and the outbox go on).
    pub async fn run(self, shutdown: CancellationToken) {
        let FileTask {
            hq,
            client,
            store,
            handle,
            signals,
            hq_reach,
            seed,
        } = self;
        let mut core = match FileUploader::new(uploader_config(&hq), seed) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "recording upload settings refused; files stay on the box");
                return;
            }
        };
        let mut driver = FileDriver {
            base: Arc::from(hq.url.as_str()),
            client,
            store,
            hq_reach,
            paths: HashMap::new(),
            checked: HashMap::new(),
        };
        let (done_tx, mut done_rx) = mpsc::channel::<Answer>(4);
        // A safety net for rows written by another process (`branchd recording-add`)
        // and for a missed wake-up.
        let reread = hq.upload_interval.max(Duration::from_secs(1));
        let mut next_reread = Instant::now();
        loop {
            if Instant::now() >= next_reread {
                driver.reload(&mut core).await;
                next_reread = Instant::now() + reread;
            }
            driver.drain(&mut core, &done_tx).await;
            handle.set_files_live(core.status());
            let deadline = core.timeout().map_or(next_reread, |t| t.min(next_reread));
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(answer) = done_rx.recv() => driver.answer(&mut core, answer),
                () = signals.wake.notified() => next_reread = Instant::now(),
                () = signals.force.notified() => {
                    core.handle(Instant::now(), FileInput::Force);
                    next_reread = Instant::now();
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    core.handle_timeout(Instant::now());
                }
            }
        }
        handle.clear_files_live();
    }
}

/// The file task's IO side.
struct FileDriver {
    base: Arc<str>,
    client: reqwest::Client,
    store: SyncStore,
    hq_reach: mpsc::UnboundedSender<bool>,
    /// Files of the pending recordings, by id.
    paths: HashMap<i64, PathBuf>,
    /// Files checked against their rows in this life, by id.
    checked: HashMap<i64, Checked>,
}

impl FileDriver {
    /// Reads HQ's policy, the acknowledged seq and the pending recordings, and tells
    /// the core.
    async fn reload(&mut self, core: &mut FileUploader) {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<_> {
            let reader = store.reader()?;
            let state = super::state::load(reader.connection(), reader.path())?;
            let rows = pending_uploads(reader.connection(), reader.path(), state.acked_seq)?;
            Ok((state.file_policy, rows))
        })
        .await;
        let (policy, rows) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the pending recordings");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pending recordings read task failed");
                return;
            }
        };
        let now = Instant::now();
        if let Some(policy) = policy {
            core.handle(now, FileInput::Policy(policy));
        }
        self.paths = rows.iter().map(|r| (r.id, r.path.clone())).collect();
        self.checked.retain(|id, _| self.paths.contains_key(id));
        let files = rows
            .into_iter()
            .map(|r| PendingFile {
                id: r.id,
                sha256: r.sha256,
                size: r.size,
            })
            .collect();
        core.handle(now, FileInput::Pending(files));
    }

    fn answer(&mut self, core: &mut FileUploader, answer: Answer) {
        if let Some(c) = answer.checked {
            self.checked.insert(answer.id, c);
        }
        let input = match answer.result {
            AnswerResult::Http(Ok(status)) => FileInput::Answered {
                request: answer.request,
                status,
            },
            AnswerResult::Http(Err(failure)) => FileInput::Failed {
                request: answer.request,
                failure,
            },
            AnswerResult::Unreadable(detail) => {
                self.checked.remove(&answer.id);
                FileInput::Unreadable {
                    request: answer.request,
                    detail,
                }
            }
        };
        core.handle(Instant::now(), input);
    }

    /// Carries out the core's events and sends its requests, until it is quiet.
    async fn drain(&mut self, core: &mut FileUploader, done: &mpsc::Sender<Answer>) {
        loop {
            let mut moved = false;
            while let Some(event) = core.poll_event() {
                moved = true;
                self.event(event).await;
            }
            while let Some(t) = core.poll_transmit() {
                moved = true;
                self.send(t, done);
            }
            if !moved {
                return;
            }
        }
    }

    async fn event(&mut self, event: FileEvent) {
        match event {
            FileEvent::Done { id, sha256, size } => {
                self.checked.remove(&id);
                let result = self
                    .store
                    .writer()
                    .transact("mark recording uploaded", move |tx, db| {
                        mark_uploaded(tx, db, id, system_clock_ms())
                    })
                    .await;
                match result {
                    Ok(_) => tracing::info!(id, sha256, size, "recording uploaded"),
                    Err(e) => tracing::error!(id, error = %e, "recording uploaded but not marked"),
                }
            }
            FileEvent::Resuming {
                id,
                sha256,
                offset,
                size,
            } => {
                tracing::info!(
                    id,
                    sha256,
                    offset,
                    size,
                    "recording upload resumes at HQ's offset"
                );
            }
            FileEvent::Error(error) => self.error(error).await,
        }
    }

    async fn error(&mut self, error: FileError) {
        tracing::warn!(error = %error, "recording upload");
        if !error.is_file_error() {
            return;
        }
        let sha256 = error.sha256().to_owned();
        let message = error.to_string();
        let result = self
            .store
            .writer()
            .transact(
                "record recording error",
                move |tx, db| match recording_by_sha(tx, db, &sha256)? {
                    Some(row) => record_upload_error(tx, db, row.id, &message, system_clock_ms()),
                    None => Ok(()),
                },
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording error not recorded");
        }
    }

    fn send(&self, t: FileTransmit, done: &mpsc::Sender<Answer>) {
        let request = t.request();
        let (id, sha256, size, deadline) = match &t {
            FileTransmit::Status {
                id,
                sha256,
                size,
                deadline,
                ..
            }
            | FileTransmit::Chunk {
                id,
                sha256,
                size,
                deadline,
                ..
            } => (*id, sha256.clone(), *size, *deadline),
        };
        let url = format!("{}{}/{sha256}", self.base, wire::FILES_PATH);
        let path = self.paths.get(&id).cloned();
        let checked = self.checked.get(&id).copied();
        let (client, reach, done) = (self.client.clone(), self.hq_reach.clone(), done.clone());
        tokio::spawn(async move {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let answer = |checked, result| Answer {
                request,
                id,
                checked,
                result,
            };
            let Some(path) = path else {
                let _ = done
                    .send(answer(
                        None,
                        AnswerResult::Unreadable(format!("recording {id} is no longer listed")),
                    ))
                    .await;
                return;
            };
            let local = match t {
                FileTransmit::Status { .. } => {
                    let sha = sha256.clone();
                    tokio::task::spawn_blocking(move || match checked {
                        Some(c) => stat(&path, size).and_then(|now| {
                            if now == c {
                                Ok(c)
                            } else {
                                check_file(&path, size, &sha)
                            }
                        }),
                        None => check_file(&path, size, &sha),
                    })
                    .await
                    .map(|r| r.map(|c| (None, c)))
                }
                FileTransmit::Chunk { offset, len, .. } => {
                    let sha = sha256.clone();
                    tokio::task::spawn_blocking(move || {
                        read_chunk(&path, size, &sha, checked, offset, len)
                    })
                    .await
                    .map(|r| r.map(|(bytes, c)| (Some((offset, bytes)), c)))
                }
            };
            let (body, checked) = match local {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    let _ = done
                        .send(answer(None, AnswerResult::Unreadable(e.to_string())))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = done
                        .send(answer(
                            None,
                            AnswerResult::Unreadable(format!("file read task failed: {e}")),
                        ))
                        .await;
                    return;
                }
            };
            let request_builder = match body {
                None => client.get(url),
                Some((offset, bytes)) => {
                    tracing::debug!(sha256, offset, len = bytes.len(), "recording chunk sent");
                    client
                        .put(format!("{url}?offset={offset}"))
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(bytes)
                }
            }
            .timeout(timeout);
            let result = super::agent::exchange::<FileStatus>(request_builder, &reach).await;
            let _ = done
                .send(answer(Some(checked), AnswerResult::Http(result)))
                .await;
        });
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
