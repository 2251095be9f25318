//! The persisted sync state (`sync_state`, migration 0003): epoch, cursor, acknowledged
//! seq, last success and error, HQ's file policy, the WAN states; the outbox backlog;
//! and carrying out an acknowledgement (conflicts, trim) in one transaction.

use std::path::Path;

use branchline_sync::wire;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::OutboxRow;

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The `sync_state` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// This store incarnation's id on the wire (32 hex digits).
    pub epoch: String,
    /// The last change-feed revision applied.
    pub down_cursor: i64,
    /// The highest outbox seq HQ acknowledged.
    pub acked_seq: i64,
    /// When an upload last succeeded, ms since the Unix epoch.
    pub last_up_ok_ms: Option<i64>,
    /// When a download (page or snapshot) was last applied.
    pub last_down_ok_ms: Option<i64>,
    /// The last error, in words, until the next success clears it.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<i64>,
    /// HQ's recording-file policy from the last [`wire::UpAck`].
    pub file_policy: Option<wire::FilePolicy>,
    /// The WAN monitor's states when they last changed (see [`super::wan`]).
    pub wan: Option<serde_json::Value>,
}

/// Reads the `sync_state` row.
pub fn load(conn: &Connection, path: &Path) -> Result<SyncState> {
    let row = conn
        .query_row(
            "SELECT epoch, down_cursor, acked_seq, last_up_ok_ms, last_down_ok_ms, last_error,
                    last_error_ms, file_policy, wan
               FROM sync_state WHERE only = 1",
            [],
            |r| {
                Ok((
                    SyncState {
                        epoch: r.get(0)?,
                        down_cursor: r.get(1)?,
                        acked_seq: r.get(2)?,
                        last_up_ok_ms: r.get(3)?,
                        last_down_ok_ms: r.get(4)?,
                        last_error: r.get(5)?,
                        last_error_ms: r.get(6)?,
                        file_policy: None,
                        wan: None,
                    },
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )
        .map_err(sql(path, "read sync state"))?;
    let (mut state, policy, wan) = row;
    let corrupt = |column: &'static str, value: String| Error::StoreCorrupt {
        path: path.to_owned(),
        table: "sync_state",
        key: "1".to_owned(),
        column,
        value,
    };
    state.file_policy = policy
        .map(|p| serde_json::from_str(&p).map_err(|_| corrupt("file_policy", p)))
        .transpose()?;
    state.wan = wan
        .map(|w| serde_json::from_str(&w).map_err(|_| corrupt("wan", w)))
        .transpose()?;
    Ok(state)
}

/// The outbox backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Rows waiting to reach HQ.
    pub depth: i64,
    /// Creation time of the oldest, ms since the Unix epoch.
    pub oldest_created_at_ms: Option<i64>,
    /// The highest seq ever written (0: none).
    pub last_seq: i64,
}

/// The outbox's depth and oldest row, by three seeks on its rowid.
///
/// The outbox only ever loses a prefix (the trim, [`commit_ack`]'s
/// `DELETE ... WHERE seq <= n`), and its seqs come from `AUTOINCREMENT` in the one
/// writer's committed transactions (a rolled-back insert takes its seq back with it),
/// so its rows are exactly the seqs first..=last and the depth is `last - first + 1`.
/// `COUNT(*)` read the whole table instead, for every batch the uploader sent: 443 MB
/// at a backlog of a million CDRs, and most of the box's time during a catch-up.
pub fn backlog(conn: &Connection, path: &Path) -> Result<Backlog> {
    let (first, last, oldest): (Option<i64>, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT (SELECT seq FROM outbox ORDER BY seq LIMIT 1),
                    (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1),
                    (SELECT created_at_ms FROM outbox ORDER BY seq LIMIT 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql(path, "measure outbox"))?;
    let depth = match (first, last) {
        (Some(first), Some(last)) => last - first + 1,
        _ => 0,
    };
    let last_seq = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "read outbox seq"))?
        .unwrap_or(0);
    Ok(Backlog {
        depth,
        oldest_created_at_ms: oldest,
        last_seq,
    })
}

/// Converts stored outbox rows to wire records. A row whose kind this protocol does
/// not know is an error naming it (the outbox is written only by this firmware).
pub fn to_records(path: &Path, rows: Vec<OutboxRow>) -> Result<Vec<wire::UpRecord>> {
    rows.into_iter()
        .map(|row| {
            let kind =
                wire::RecordKind::from_name(&row.kind).ok_or_else(|| Error::StoreCorrupt {
                    path: path.to_owned(),
                    table: "outbox",
                    key: row.seq.to_string(),
                    column: "kind",
                    value: row.kind.clone(),
                })?;
            Ok(wire::UpRecord {
                seq: row.seq,
                kind,
                key: row.record_key,
                created_at_ms: row.created_at_ms,
                payload: row.payload,
            })
        })
        .collect()
}

/// What [`commit_ack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AckApplied {
    /// Outbox rows deleted.
    pub trimmed: usize,
    /// Conflicts whose HQ row was applied.
    pub conflicts_applied: usize,
}

/// Carries out what the uploader core decided on an acknowledgement, in the caller's
/// transaction: resolves the conflicts first ([`super::apply::apply_conflicts`]), then
/// trims the outbox through `trim_through` (the core's [`UpEvent::Trim`]: never beyond
/// the highest seq sent, nor beyond HQ's [`wire::UpAck::acked_seq`]) and stores it as
/// the acknowledged seq, stores HQ's file policy when it changed, and marks the upload
/// a success. One transaction, so a conflict's resolution and the trim that removes
/// the rejected edit commit together.
///
/// [`UpEvent::Trim`]: branchline_sync::agent::UpEvent::Trim
pub fn commit_ack(
    conn: &Connection,
    path: &Path,
    conflicts: &[wire::Conflict],
    trim_through: Option<i64>,
    file_policy: Option<&wire::FilePolicy>,
    now_ms: i64,
) -> Result<AckApplied> {
    let conflicts_applied = super::apply::apply_conflicts(conn, path, conflicts, now_ms)?;
    let mut trimmed = 0;
    if let Some(through) = trim_through {
        trimmed = trim(conn, path, through)?;
        conn.execute(
            "UPDATE sync_state SET acked_seq = max(acked_seq, ?1) WHERE only = 1",
            [through.max(0)],
        )
        .map_err(sql(path, "store acked seq"))?;
    }
    if let Some(policy) = file_policy {
        let policy = serde_json::to_string(policy).map_err(|source| Error::Json {
            kind: "file_policy",
            key: String::new(),
            source,
        })?;
        conn.execute(
            "UPDATE sync_state SET file_policy = ?1 WHERE only = 1",
            [policy],
        )
        .map_err(sql(path, "store file policy"))?;
    }
    conn.execute(
        "UPDATE sync_state SET last_up_ok_ms = ?1 WHERE only = 1",
        [now_ms],
    )
    .map_err(sql(path, "store upload success"))?;
    Ok(AckApplied {
        trimmed,
        conflicts_applied,
    })
}

/// Deletes the outbox rows with `seq <= through` (in the caller's transaction).
pub fn trim(conn: &Connection, path: &Path, through: i64) -> Result<usize> {
    conn.execute("DELETE FROM outbox WHERE seq <= ?1", [through])
        .map_err(sql(path, "trim outbox"))
}

/// Records a failure for the status. It stays (with its time) after later successes, so
/// compare `last_error_ms` with the `last_*_ok_ms` times to see whether it is current.
pub fn record_error(conn: &Connection, path: &Path, message: &str, now_ms: i64) -> Result<()> {
    // Long messages (a whole HTML error page) are cut for the status.
    let message: String = message.chars().take(500).collect();
    conn.execute(
        "UPDATE sync_state SET last_error = ?1, last_error_ms = ?2 WHERE only = 1",
        params![message, now_ms],
    )
    .map_err(sql(path, "record sync error"))?;
    Ok(())
}

/// Stores the WAN monitor's states (written when they change).
pub fn record_wan(conn: &Connection, path: &Path, wan: &serde_json::Value) -> Result<()> {
    conn.execute(
        "UPDATE sync_state SET wan = ?1 WHERE only = 1",
        [wan.to_string()],
    )
    .map_err(sql(path, "record wan state"))?;
    Ok(())
}
