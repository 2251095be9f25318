//! The recorder's side of the store: registering a finished or repaired recording (the
//! `recordings` row and its outbox row through
//! [`crate::sync::files::register_recording_tx`], plus the columns of migration 0008 in
//! the same transaction), finding files start-up must register, and retention.
//!
//! Retention ([`retention_pass`]): a recording whose start is older than
//! `[recording] retention_days` is deleted when HQ has it (`uploaded_at_ms` set) or,
//! when the box does not upload (no `[hq]`), by age alone. The file goes first, then the
//! row gets `deleted_at_ms` (the row stays: it is HQ's reference and the audit trail's);
//! a crash between the two leaves a row whose file is already gone, which the next pass
//! marks. Only files inside the recordings directory are ever deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use branchline_sync::wire::RecordingMeta;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::sync::files::{register_recording_tx, Registered};

use super::wav;

/// The channel layout of the recorder's files (`recordings.channels`).
pub const CHANNEL_LAYOUT: &str = "caller-left/agent-right";

/// Most rows one retention pass deletes (the next pass takes the rest).
pub const RETENTION_BATCH: i64 = 500;

fn sql<'a>(db: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: db.to_owned(),
        op,
        source,
    }
}

/// A recording file ready to be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The file (absolute, final name).
    pub path: PathBuf,
    /// The CDR's call id, or the file's own name when no CDR is known (crash).
    pub call_id: String,
    /// When the recording started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// Bytes of audio after the header.
    pub data_len: u64,
    /// The analog port it was keyed on (`None`: a call between two SIP legs).
    pub port: Option<u8>,
    /// Cut by a crash and repaired at start-up.
    pub interrupted: bool,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Size of the file.
    pub size: u64,
}

impl Finished {
    /// The metadata that goes to HQ.
    pub fn meta(&self) -> RecordingMeta {
        RecordingMeta {
            call_id: self.call_id.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            started_at_ms: self.started_at_ms,
            duration_ms: wav::duration_ms(self.data_len),
            format: wav::FORMAT.to_owned(),
        }
    }
}

/// Registers `rec` in the caller's transaction: the `recordings` row and its outbox row
/// (so it syncs), with the interrupted flag, layout and port. Refused (nothing written)
/// when the file does not match or is already registered.
pub fn register_tx(
    conn: &Connection,
    db: &Path,
    rec: &Finished,
    now_ms: i64,
) -> Result<Registered> {
    let registered = register_recording_tx(conn, db, &rec.meta(), &rec.path, now_ms)?;
    conn.execute(
        "UPDATE recordings SET interrupted = ?1, channels = ?2, port = ?3 WHERE id = ?4",
        params![
            i64::from(rec.interrupted),
            CHANNEL_LAYOUT,
            rec.port.map(i64::from),
            registered.id
        ],
    )
    .map_err(sql(db, "mark recording"))?;
    Ok(registered)
}

/// Whether a recording row names `path`.
pub fn is_registered(conn: &Connection, db: &Path, path: &Path) -> Result<bool> {
    let Some(p) = path.to_str() else {
        return Ok(false);
    };
    conn.query_row(
        "SELECT 1 FROM recordings WHERE path = ?1 LIMIT 1",
        [p],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(sql(db, "look up recording path"))
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// Files deleted (or found already gone) and rows marked.
    pub deleted: usize,
    /// Rows due whose file is outside the recordings directory: left alone.
    pub skipped: usize,
}

/// Deletes up to [`RETENTION_BATCH`] recordings started before `now_ms - retention`
/// (see the module docs); `needs_upload`: only those HQ has.
pub fn retention_pass(
    conn: &Connection,
    db: &Path,
    dir: &Path,
    now_ms: i64,
    retention: Duration,
    needs_upload: bool,
) -> Result<Retained> {
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut stmt = conn
        .prepare(
            "SELECT id, path FROM recordings
              WHERE deleted_at_ms IS NULL AND started_at_ms < ?1
                AND (?2 = 0 OR uploaded_at_ms IS NOT NULL)
              ORDER BY started_at_ms LIMIT ?3",
        )
        .map_err(sql(db, "read recordings due"))?;
    let due = stmt
        .query_map(
            params![cutoff, i64::from(needs_upload), RETENTION_BATCH],
            |r| Ok((r.get::<_, i64>(0)?, PathBuf::from(r.get::<_, String>(1)?))),
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql(db, "read recordings due"))?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mut out = Retained::default();
    for (id, path) in due {
        let inside = path
            .parent()
            .is_some_and(|p| std::fs::canonicalize(p).is_ok_and(|p| p == dir) || p == dir);
        if !inside {
            tracing::warn!(id, path = %path.display(), "retention: file outside the recordings directory left alone");
            out.skipped += 1;
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(id, path = %path.display(), error = %e, "retention: file not deleted");
                continue;
            }
        }
        conn.execute(
            "UPDATE recordings SET deleted_at_ms = ?1 WHERE id = ?2",
            params![now_ms, id],
        )
        .map_err(sql(db, "mark recording deleted"))?;
        out.deleted += 1;
    }
    Ok(out)
}

/// A recording as the web page and `GET /api/v1/recordings` show it (one `recordings`
/// row with the recorder's columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRecording {
    /// Row id.
    pub id: i64,
    /// The CDR's call id (the file's own name for a recording cut by a crash).
    pub call_id: String,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// Length of the audio.
    pub duration_ms: i64,
    /// Size of the file in bytes.
    pub size: u64,
    /// The wire format name ([`wav::FORMAT`]).
    pub format: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// The file (absolute).
    pub path: PathBuf,
    /// The analog port it was keyed on.
    pub port: Option<u8>,
    /// Cut by a crash and repaired at start-up.
    pub interrupted: bool,
    /// The channel layout ([`CHANNEL_LAYOUT`]); `None` for rows registered before it.
    pub channels: Option<String>,
    /// When retention deleted the file.
    pub deleted_at_ms: Option<i64>,
}

const INDEXED_COLUMNS: &str = "id, call_id, started_at_ms, duration_ms, size, format, sha256, \
                               path, port, interrupted, channels, deleted_at_ms";

fn indexed(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndexedRecording> {
    Ok(IndexedRecording {
        id: r.get(0)?,
        call_id: r.get(1)?,
        started_at_ms: r.get(2)?,
        duration_ms: r.get(3)?,
        size: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        format: r.get(5)?,
        sha256: r.get(6)?,
        path: PathBuf::from(r.get::<_, String>(7)?),
        port: r
            .get::<_, Option<i64>>(8)?
            .and_then(|p| u8::try_from(p).ok()),
        interrupted: r.get::<_, i64>(9)? != 0,
        channels: r.get(10)?,
        deleted_at_ms: r.get(11)?,
    })
}

/// Recording `id`, deleted by retention or not.
pub fn recording(conn: &Connection, db: &Path, id: i64) -> Result<Option<IndexedRecording>> {
    conn.prepare_cached(&format!(
        "SELECT {INDEXED_COLUMNS} FROM recordings WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], indexed).optional())
    .map_err(sql(db, "read recording"))
}

/// The recordings started in `[since_ms, until_ms)`, of call `call_id` when given,
/// newest first (those retention deleted included: their rows stay).
pub fn recordings_between(
    conn: &Connection,
    db: &Path,
    since_ms: i64,
    until_ms: i64,
    call_id: Option<&str>,
) -> Result<Vec<IndexedRecording>> {
    conn.prepare_cached(&format!(
        "SELECT {INDEXED_COLUMNS} FROM recordings
          WHERE started_at_ms >= ?1 AND started_at_ms < ?2 AND (?3 IS NULL OR call_id = ?3)
          ORDER BY started_at_ms DESC, id DESC"
    ))
    .and_then(|mut s| {
        s.query_map(params![since_ms, until_ms, call_id], indexed)?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql(db, "read recordings"))
}

/// The recordings of call `call_id`, oldest first.
pub fn recordings_of_call(
    conn: &Connection,
    db: &Path,
    call_id: &str,
) -> Result<Vec<IndexedRecording>> {
    let mut out = recordings_between(conn, db, i64::MIN, i64::MAX, Some(call_id))?;
    out.reverse();
    Ok(out)
}
