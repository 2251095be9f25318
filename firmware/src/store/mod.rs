//! The SQLite store: the box's one source of truth.
//!
//! - [`Store::open`] creates the file (and its directory), sets the connection up and
//!   applies the numbered migrations in `firmware/migrations/` (schema version in
//!   `PRAGMA user_version`). A file written by a newer firmware is refused with
//!   [`Error::StoreSchemaTooNew`] rather than touched.
//! - One writer: [`Store::spawn_writer`] moves the write connection to a dedicated
//!   thread; [`StoreWriter`] handles (cheap clones) send it requests over a channel and
//!   await the reply, which comes after the transaction committed. Nothing else writes,
//!   so there is no lock contention and no `SQLITE_BUSY` between our own writers.
//! - Readers ([`Store::reader`]) use their own connections; in WAL mode they never block
//!   the writer and see every transaction that committed before their query began.
//!
//! # Durability
//!
//! The write connection runs with `journal_mode=WAL` and `synchronous=FULL`: SQLite
//! fsyncs the WAL on every commit, so a transaction is on disk when `COMMIT` returns
//! and survives a power cut (with `NORMAL` the last commits could be lost, which the
//! "nothing acknowledged is lost" rule forbids). A CDR is acknowledged — logged as
//! `cdr stored` and reported upstream — only after its commit returned, and the CDR row
//! and its outbox row are written in the same transaction, so HQ gets every stored CDR
//! exactly once (it dedupes on the outbox `seq`).
//!
//! When the last [`StoreWriter`] is dropped the thread finishes the queued writes, runs
//! `PRAGMA wal_checkpoint(TRUNCATE)` so the WAL does not linger on flash, and exits.
//!
//! Limits: the request queue is unbounded (writes are small and the box's call rate is
//! low); outbox trimming and the HQ sync cursor are not here yet.

mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use self::reader::StoreReader;
pub use self::writer::{RecoveredCalls, StoreWriter};

/// The migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("../../migrations/0001_init.sql")),
    M::up(include_str!("../../migrations/0002_accounts.sql")),
    M::up(include_str!("../../migrations/0003_sync.sql")),
    M::up(include_str!("../../migrations/0004_cdr_sip.sql")),
    M::up(include_str!("../../migrations/0005_recordings.sql")),
    M::up(include_str!("../../migrations/0006_provisioning.sql")),
    M::up(include_str!("../../migrations/0007_call_center.sql")),
    M::up(include_str!("../../migrations/0008_recording_index.sql")),
    M::up(include_str!("../../migrations/0009_cdr_quality.sql")),
    M::up(include_str!("../../migrations/0010_cdr_queue.sql")),
    M::up(include_str!("../../migrations/0011_blacklist.sql")),
    M::up(include_str!("../../migrations/0012_customers.sql")),
    M::up(include_str!("../../migrations/0013_survey.sql")),
    M::up(include_str!("../../migrations/0014_dispositions.sql")),
    M::up(include_str!("../../migrations/0015_voicemail.sql")),
    M::up(include_str!("../../migrations/0016_service_records.sql")),
    M::up(include_str!("../../migrations/0017_recording_policy.sql")),
    M::up(include_str!(
        "../../migrations/0018_agent_extension_mode.sql"
    )),
    M::up(include_str!("../../migrations/0019_cdr_hold_overflow.sql")),
    M::up(include_str!("../../migrations/0020_live_calls.sql")),
    M::up(include_str!("../../migrations/0021_campaigns.sql")),
    M::up(include_str!(
        "../../migrations/0022_numbering_preview_calls.sql"
    )),
    M::up(include_str!("../../migrations/0023_outbox_edits_index.sql")),
    M::up(include_str!("../../migrations/0024_site_time_zone.sql")),
    M::up(include_str!(
        "../../migrations/0025_recordings_call_index.sql"
    )),
    M::up(include_str!("../../migrations/0026_cdr_hangup_cause.sql")),
    M::up(include_str!(
        "../../migrations/0027_cdr_hangup_cause_session_expired.sql"
    )),
    M::up(include_str!(
        "../../migrations/0028_cdr_hangup_cause_route_not_permitted.sql"
    )),
];

/// Migrates a bare connection to schema `version` only (tests of later migrations'
/// data moves start from an older schema).
#[cfg(test)]
pub(crate) fn migrate_to(conn: &mut Connection, version: usize) {
    Migrations::from_slice(MIGRATIONS)
        .to_version(conn, version)
        .expect("migrate to an older version");
}

/// Every row of every table of the store at `path` except the tables in `skip`, as
/// text, rows sorted: tests compare two dumps to show that a refused request changed
/// nothing.
#[cfg(test)]
pub(crate) fn dump_tables(path: &Path, skip: &[&str]) -> String {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store read-only");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("table names");
    let mut out = String::new();
    for table in tables.iter().filter(|t| !skip.contains(&t.as_str())) {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("select");
        let width = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(|v| v.join("|"))
            })
            .and_then(|rows| rows.collect())
            .expect("rows");
        rows.sort();
        out.push_str(&format!("[{table}] {} rows\n", rows.len()));
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

/// Writes `payload` as an outbox row of `kind` keyed `key`, in the caller's
/// transaction (so it commits with the change it reports, or not at all); returns
/// its seq.
pub(crate) fn queue_for_hq(
    conn: &Connection,
    path: &Path,
    kind: branchline_sync::wire::RecordKind,
    key: &str,
    payload: &impl Serialize,
    now_ms: i64,
) -> Result<i64> {
    let json = serde_json::to_string(payload).map_err(|source| Error::Json {
        kind: kind.as_str(),
        key: key.to_owned(),
        source,
    })?;
    crate::accounts::outbox(conn, path, kind.as_str(), key, &json, now_ms)
}

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for a lock before failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// A wall clock in milliseconds since the Unix epoch (injected so tests can fix it).
pub type Clock = fn() -> i64;

/// The system clock in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn system_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The opened, migrated store with its write connection, before the writer thread starts.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Connection,
    clock: Clock,
}

/// Kind of an analog port as [`StoreWriter::replace_board`] takes it: `"fxs"` or `"fxo"`
/// ([`PortKind::as_str`]).
pub type PortKindStr = &'static str;

/// Kind of an analog port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A phone port.
    Fxs,
    /// A PSTN line port.
    Fxo,
}

impl PortKind {
    /// The name stored in the `ports.kind` column: `"fxs"` or `"fxo"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Fxs => "fxs",
            PortKind::Fxo => "fxo",
        }
    }

    fn from_db(s: &str) -> Option<PortKind> {
        match s {
            "fxs" => Some(PortKind::Fxs),
            "fxo" => Some(PortKind::Fxo),
            _ => None,
        }
    }
}

/// A row of the `extensions` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRow {
    /// Extension number.
    pub number: String,
    /// Caller-ID name.
    pub name: String,
    /// The FXS port that rings, if any.
    pub port: Option<u8>,
    /// Whether call waiting is on.
    pub call_waiting: bool,
}

/// A row of the `ports` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    /// Port number.
    pub number: u8,
    /// FXS or FXO.
    pub kind: PortKind,
    /// Last reported state (`"idle"` until one is set).
    pub state: String,
}

/// A row of the outbox: something that must reach HQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The per-box sequence number HQ dedupes on; strictly increasing, never reused.
    pub seq: i64,
    /// Record kind (`"cdr"`, ...).
    pub kind: String,
    /// Key of the record within its kind (the call id for a CDR).
    pub record_key: String,
    /// The record as JSON.
    pub payload: serde_json::Value,
    /// When the row was written, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// Maps a rusqlite error into [`Error::Sqlite`] for `path` and operation `op`.
fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql(path, "read schema version"))
}

impl Store {
    /// Opens (creating if needed) the store at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::StoreDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = Connection::open(path).map_err(sql(path, "open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql(path, "set busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql(path, "set journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::StoreNoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql(path, "set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql(path, "set foreign_keys=ON"))?;

        let found = user_version(&conn, path)?;
        if found > SCHEMA_VERSION {
            return Err(Error::StoreSchemaTooNew {
                path: path.to_owned(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|source| Error::StoreMigration {
                path: path.to_owned(),
                source,
            })?;
        if found < SCHEMA_VERSION {
            tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "store migrated");
        }
        // The built-in roles are data shipped with this binary: make the tables match.
        crate::rbac::builtin::seed(&mut conn, path, system_clock_ms())?;
        Ok(Store {
            path: path.to_owned(),
            conn,
            clock: system_clock_ms,
        })
    }

    /// Replaces the clock used for `updated_at_ms` / `created_at_ms` columns.
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `job` in one immediate transaction on the write connection, before the
    /// writer thread starts (bootstrap, CLI subcommands, tests); committed only on `Ok`.
    pub(crate) fn transact<T>(
        &mut self,
        op: &'static str,
        job: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T>,
    ) -> Result<T> {
        writer::run_transaction(&mut self.conn, &self.path, op, job)
    }

    /// Stores the CDRs of the calls the journal of live calls still holds: the box
    /// stopped (power cut, crash, kill -9) while they were up, or before their CDRs
    /// were written (see the `crate::call` journal). Run at start-up, before the
    /// writer thread starts; each row's CDR, outbox row and deletion commit together,
    /// so a crash here stores nothing twice. A database error leaves the remaining
    /// rows for the next start.
    pub fn recover_live_calls(&mut self) -> Result<RecoveredCalls> {
        writer::recover_live_calls(&mut self.conn, &self.path, self.clock)
    }

    /// The write connection's `PRAGMA synchronous` (2 = FULL).
    pub fn pragma_synchronous(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(sql(&self.path, "read synchronous"))
    }

    /// Moves the write connection to its own thread and returns the handle to it and the
    /// thread's join handle (the thread ends after the last [`StoreWriter`] is dropped).
    ///
    /// # Panics
    ///
    /// Like [`std::thread::spawn`], if the OS cannot create a thread; use
    /// [`Store::try_spawn_writer`] to get that as an error.
    pub fn spawn_writer(self) -> (StoreWriter, std::thread::JoinHandle<()>) {
        let (writer, job) = writer::prepare(self);
        (writer, std::thread::spawn(job))
    }

    /// [`Store::spawn_writer`], with a failure to create the thread returned as
    /// [`Error::StoreThread`] (and the thread named `store-writer`).
    pub fn try_spawn_writer(self) -> Result<(StoreWriter, std::thread::JoinHandle<()>)> {
        let path = self.path.clone();
        let (writer, job) = writer::prepare(self);
        std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(job)
            .map(|thread| (writer, thread))
            .map_err(|source| Error::StoreThread { path, source })
    }

    /// Opens a read connection to an existing, migrated store.
    pub fn reader(path: &Path) -> Result<StoreReader> {
        StoreReader::open(path)
    }
}

/// The serde name of a unit enum variant (`Direction::NoAnswer` -> `"no_answer"`), as
/// stored in the CDR columns and the JSON payload alike.
fn enum_text<T: Serialize>(value: &T, call_id: &str) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(Error::Json {
            kind: "cdr",
            key: call_id.to_owned(),
            source: serde::ser::Error::custom(format!("not a unit variant: {other}")),
        }),
        Err(source) => Err(Error::Json {
            kind: "cdr",
            key: call_id.to_owned(),
            source,
        }),
    }
}

/// The inverse of [`enum_text`]; `None` for a name this binary does not know.
fn enum_from_text<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}
