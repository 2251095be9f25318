//! Read connections: queries for the web page, diagnostics, sync and tests.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Row};

use super::{
    enum_from_text, sql, user_version, ExtensionRow, OutboxRow, PortKind, PortRow, BUSY_TIMEOUT,
    SCHEMA_VERSION,
};
use crate::cdr::{
    Cdr, CdrBlocked, CdrLegQuality, CdrQueue, CdrQueueOverflow, HangupCause as CdrHangupCause,
};
use crate::error::{Error, Result};

/// A read-only connection to the store. Each task that reads opens its own.
#[derive(Debug)]
pub struct StoreReader {
    path: PathBuf,
    conn: Connection,
}

const CDR_COLUMNS: &str = "call_id, direction, caller, caller_port, callee, callee_port, \
                           started_at_ms, answered_at_ms, ended_at_ms, disposition, hangup_side, \
                           caller_sip_call_id, callee_sip_call_id, \
                           caller_loss_percent, caller_jitter_ms, caller_mos, \
                           callee_loss_percent, callee_jitter_ms, callee_mos, transfer_chain, \
                           queue, agent_id, queue_wait_ms, \
                           blocked_mode, blocked_action, blocked_pattern, survey_score, \
                           hold_ms, queue_overflow, interrupted, hangup_cause";

fn clamp_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl StoreReader {
    pub(super) fn open(path: &Path) -> Result<StoreReader> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(path, "open for reading"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(path, "set busy_timeout"))?;
        let found = user_version(&conn, path)?;
        if found > SCHEMA_VERSION {
            return Err(Error::StoreSchemaTooNew {
                path: path.to_owned(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(Error::StoreNotMigrated {
                path: path.to_owned(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(StoreReader {
            path: path.to_owned(),
            conn,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The read connection, for the query modules of this crate (accounts, rbac, audit).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// `box_state.rbac_generation`: compare with [`crate::rbac::Authorizer::generation`]
    /// and reload the authorizer when it moved.
    pub fn rbac_generation(&self) -> Result<i64> {
        crate::rbac::rbac_generation(&self.conn, &self.path)
    }

    /// CDRs started in `[since_ms, until_ms)`, newest first (for scope-filtered,
    /// masked listing through [`crate::mask::list_cdrs`]).
    pub fn cdrs_between(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Cdr>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CDR_COLUMNS} FROM cdrs WHERE started_at_ms >= ?1 AND started_at_ms < ?2
                  ORDER BY started_at_ms DESC, id DESC"
            ))
            .map_err(sql(&self.path, "prepare cdrs between"))?;
        let rows = stmt
            .query_map((since_ms, until_ms), RawCdr::from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql(&self.path, "read cdrs between"))?;
        rows.into_iter()
            .map(|raw| raw.into_cdr(&self.path))
            .collect()
    }

    /// Up to `limit` CDRs, newest (by start time) first.
    pub fn recent_cdrs(&self, limit: usize) -> Result<Vec<Cdr>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CDR_COLUMNS} FROM cdrs ORDER BY started_at_ms DESC, id DESC LIMIT ?1"
            ))
            .map_err(sql(&self.path, "prepare recent cdrs"))?;
        let rows = stmt
            .query_map([clamp_limit(limit)], RawCdr::from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql(&self.path, "read recent cdrs"))?;
        rows.into_iter()
            .map(|raw| raw.into_cdr(&self.path))
            .collect()
    }

    /// The CDR of `call_id`, if stored.
    pub fn cdr(&self, call_id: &str) -> Result<Option<Cdr>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CDR_COLUMNS} FROM cdrs WHERE call_id = ?1"
            ))
            .map_err(sql(&self.path, "prepare cdr"))?;
        let mut rows = stmt
            .query_map([call_id], RawCdr::from_row)
            .map_err(sql(&self.path, "read cdr"))?;
        match rows.next() {
            None => Ok(None),
            Some(raw) => raw
                .map_err(sql(&self.path, "read cdr"))?
                .into_cdr(&self.path)
                .map(Some),
        }
    }

    /// Up to `limit` outbox rows with `seq > after_seq`, in seq order.
    pub fn outbox(&self, after_seq: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, kind, record_key, payload, created_at_ms FROM outbox
                  WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql(&self.path, "prepare outbox"))?;
        let rows = stmt
            .query_map((after_seq, clamp_limit(limit)), |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql(&self.path, "read outbox"))?;
        rows.into_iter()
            .map(|(seq, kind, record_key, payload, created_at_ms)| {
                let payload = serde_json::from_str(&payload).map_err(|source| Error::Json {
                    kind: "outbox",
                    key: seq.to_string(),
                    source,
                })?;
                Ok(OutboxRow {
                    seq,
                    kind,
                    record_key,
                    payload,
                    created_at_ms,
                })
            })
            .collect()
    }

    /// Every extension, by number.
    pub fn extensions(&self) -> Result<Vec<ExtensionRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT number, name, port, call_waiting FROM extensions ORDER BY number",
            )
            .map_err(sql(&self.path, "prepare extensions"))?;
        stmt.query_map([], |row| {
            Ok(ExtensionRow {
                number: row.get(0)?,
                name: row.get(1)?,
                port: row.get(2)?,
                call_waiting: row.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(&self.path, "read extensions"))
    }

    /// Every port, by number.
    pub fn ports(&self) -> Result<Vec<PortRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT number, kind, state FROM ports ORDER BY number")
            .map_err(sql(&self.path, "prepare ports"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, u8>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql(&self.path, "read ports"))?;
        rows.into_iter()
            .map(|(number, kind, state)| {
                let kind = PortKind::from_db(&kind).ok_or_else(|| Error::StoreCorrupt {
                    path: self.path.clone(),
                    table: "ports",
                    key: number.to_string(),
                    column: "kind",
                    value: kind.clone(),
                })?;
                Ok(PortRow {
                    number,
                    kind,
                    state,
                })
            })
            .collect()
    }

    /// This connection's `PRAGMA synchronous` (2 = FULL).
    pub fn pragma_synchronous(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(sql(&self.path, "read synchronous"))
    }
}

/// A `cdrs` row before its enum columns are decoded.
struct RawCdr {
    call_id: String,
    direction: String,
    caller: String,
    caller_port: Option<u8>,
    callee: String,
    callee_port: Option<u8>,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    ended_at_ms: i64,
    disposition: String,
    hangup_side: String,
    caller_sip_call_id: Option<String>,
    callee_sip_call_id: Option<String>,
    caller_quality: [Option<f64>; 3],
    callee_quality: [Option<f64>; 3],
    transfer_chain: Option<String>,
    queue: Option<String>,
    agent_id: Option<String>,
    queue_wait_ms: Option<i64>,
    blocked: [Option<String>; 3],
    survey_score: Option<u8>,
    hold_ms: Option<i64>,
    queue_overflow: Option<String>,
    interrupted: bool,
    hangup_cause: Option<String>,
}

/// A leg's quality from its three columns (all set, or none).
fn quality_of(columns: [Option<f64>; 3]) -> Option<CdrLegQuality> {
    match columns {
        [Some(loss_percent), Some(jitter_ms), Some(mos)] => Some(CdrLegQuality {
            loss_percent,
            jitter_ms,
            mos,
        }),
        _ => None,
    }
}

impl RawCdr {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawCdr> {
        Ok(RawCdr {
            call_id: row.get(0)?,
            direction: row.get(1)?,
            caller: row.get(2)?,
            caller_port: row.get(3)?,
            callee: row.get(4)?,
            callee_port: row.get(5)?,
            started_at_ms: row.get(6)?,
            answered_at_ms: row.get(7)?,
            ended_at_ms: row.get(8)?,
            disposition: row.get(9)?,
            hangup_side: row.get(10)?,
            caller_sip_call_id: row.get(11)?,
            callee_sip_call_id: row.get(12)?,
            caller_quality: [row.get(13)?, row.get(14)?, row.get(15)?],
            callee_quality: [row.get(16)?, row.get(17)?, row.get(18)?],
            transfer_chain: row.get(19)?,
            queue: row.get(20)?,
            agent_id: row.get(21)?,
            queue_wait_ms: row.get(22)?,
            blocked: [row.get(23)?, row.get(24)?, row.get(25)?],
            survey_score: row.get(26)?,
            hold_ms: row.get(27)?,
            queue_overflow: row.get(28)?,
            interrupted: row.get(29)?,
            hangup_cause: row.get(30)?,
        })
    }

    fn into_cdr(self, path: &Path) -> Result<Cdr> {
        let corrupt = |column: &'static str, value: &str| Error::StoreCorrupt {
            path: path.to_owned(),
            table: "cdrs",
            key: self.call_id.clone(),
            column,
            value: value.to_owned(),
        };
        let direction =
            enum_from_text(&self.direction).ok_or_else(|| corrupt("direction", &self.direction))?;
        let disposition = enum_from_text(&self.disposition)
            .ok_or_else(|| corrupt("disposition", &self.disposition))?;
        let hangup_side = enum_from_text(&self.hangup_side)
            .ok_or_else(|| corrupt("hangup_side", &self.hangup_side))?;
        let blocked = match &self.blocked {
            [None, None, _] => None,
            [Some(mode), Some(action), pattern] => Some(CdrBlocked {
                mode: enum_from_text(mode).ok_or_else(|| corrupt("blocked_mode", mode))?,
                action: enum_from_text(action).ok_or_else(|| corrupt("blocked_action", action))?,
                pattern: pattern.clone(),
            }),
            [mode, _, _] => {
                return Err(corrupt(
                    if mode.is_some() {
                        "blocked_action"
                    } else {
                        "blocked_mode"
                    },
                    "",
                ))
            }
        };
        let queue_overflow = match &self.queue_overflow {
            None => None,
            Some(name) => Some(
                CdrQueueOverflow::from_name(name).ok_or_else(|| corrupt("queue_overflow", name))?,
            ),
        };
        let hangup_cause = match &self.hangup_cause {
            None => None,
            Some(name) => {
                Some(CdrHangupCause::from_name(name).ok_or_else(|| corrupt("hangup_cause", name))?)
            }
        };
        let transfer_chain = match &self.transfer_chain {
            None => Vec::new(),
            Some(text) => {
                serde_json::from_str(text).map_err(|_| corrupt("transfer_chain", text))?
            }
        };
        Ok(Cdr {
            call_id: self.call_id,
            direction,
            caller: self.caller,
            caller_port: self.caller_port,
            callee: self.callee,
            callee_port: self.callee_port,
            started_at_ms: self.started_at_ms,
            answered_at_ms: self.answered_at_ms,
            ended_at_ms: self.ended_at_ms,
            disposition,
            hangup_side,
            caller_sip_call_id: self.caller_sip_call_id,
            callee_sip_call_id: self.callee_sip_call_id,
            caller_quality: quality_of(self.caller_quality),
            callee_quality: quality_of(self.callee_quality),
            transfer_chain,
            queue: self.queue.map(|queue| CdrQueue {
                queue,
                agent: self.agent_id,
                wait_ms: self.queue_wait_ms.unwrap_or(0),
            }),
            blocked,
            survey_score: self.survey_score,
            hold_ms: self.hold_ms,
            queue_overflow,
            interrupted: self.interrupted,
            hangup_cause,
        })
    }
}
