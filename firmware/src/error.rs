//! The crate's error type.
//!
//! Every variant carries the context a person needs to act on it: the file, line and
//! field of a bad config value, the database path, the call id of a CDR. There is no
//! catch-all string variant; a new kind of failure gets a new variant.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a single value (an extension number, a port number, ...) is not valid.
///
/// This is the error of the config newtypes' `FromStr`/`TryFrom` impls; the config
/// loader wraps it into [`Error::ConfigInvalid`] with the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {reason}")]
pub struct InvalidValue {
    /// What kind of value it is ("extension number", "port number", ...).
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Everything that can go wrong in the firmware library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// The config file is not valid TOML.
    #[error("{}{}: {message}", path.display(), fmt_line(*line))]
    ConfigSyntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error, when the parser reported one.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },

    /// A config value is missing, unknown, of the wrong type or out of range.
    #[error("{}{}: {field}: {message}", path.display(), fmt_line(*line))]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending key or value, when known.
        line: Option<usize>,
        /// Dotted path of the field, e.g. `extensions[1].port`.
        field: String,
        /// What is wrong, in words an installer can act on.
        message: String,
    },

    /// A single value failed validation outside of a config file.
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),

    /// The store's directory could not be created.
    #[error("{}: cannot create the store directory: {source}", path.display())]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// The call center's store tables could not be read or written.
    #[error("call center store: {0}")]
    AcdStore(#[source] Box<crate::acd::StoreError>),

    /// An SQLite operation on the store failed.
    #[error("{}: {op}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What the store was doing ("open", "insert cdr", ...).
        op: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },

    /// The database could not be switched to WAL mode (e.g. the filesystem lacks shared memory).
    #[error("{}: cannot use write-ahead logging, journal mode is {mode:?}", path.display())]
    StoreNoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported instead.
        mode: String,
    },

    /// The store writer thread could not be started.
    #[error("{}: cannot start the store writer thread: {source}", path.display())]
    StoreThread {
        /// The database file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// Applying the schema migrations failed.
    #[error("{}: schema migration failed: {source}", path.display())]
    StoreMigration {
        /// The database file.
        path: PathBuf,
        /// The migration error.
        source: rusqlite_migration::Error,
    },

    /// The database was written by a newer firmware whose schema this binary does not know.
    #[error(
        "{}: database schema version {found} is newer than this firmware knows ({known}); \
         install the newer firmware again or restore a backup",
        path.display()
    )]
    StoreSchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file (`PRAGMA user_version`).
        found: i64,
        /// The newest schema version this binary knows.
        known: i64,
    },

    /// A reader was opened on a database whose migrations have not been applied yet.
    #[error(
        "{}: database schema version {found} is older than expected ({expected}); \
         open it with the writer first so migrations run",
        path.display()
    )]
    StoreNotMigrated {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The schema version this binary expects.
        expected: i64,
    },

    /// A CDR with this call id is already stored; nothing was written.
    #[error("cdr {call_id:?} is already stored")]
    DuplicateCdr {
        /// The call id.
        call_id: String,
    },

    /// An extension refers to a port the store does not know; nothing was written.
    #[error("extension {extension:?} is on port {port}, which is not a port of this box")]
    ExtensionOnUnknownPort {
        /// The extension number.
        extension: String,
        /// The port it names.
        port: u8,
    },

    /// A port kind other than `"fxs"` or `"fxo"` was given to the store; nothing was written.
    #[error("port {port}: kind {kind:?} is neither \"fxs\" nor \"fxo\"")]
    InvalidPortKind {
        /// The port number.
        port: u8,
        /// The kind given.
        kind: String,
    },

    /// A port number is not in the store.
    #[error("port {port} is not a port of this box")]
    UnknownPort {
        /// The port number.
        port: u8,
    },

    /// A stored row could not be decoded (a column holds a value this binary does not know).
    #[error("{}: {table} row {key:?}: column {column} holds {value:?}, which is not valid", path.display())]
    StoreCorrupt {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's key (call id, outbox seq, port number).
        key: String,
        /// The column.
        column: &'static str,
        /// The offending value.
        value: String,
    },

    /// A record could not be encoded to or decoded from its JSON payload.
    #[error("{kind} {key:?}: JSON payload: {source}")]
    Json {
        /// The record kind ("cdr", ...).
        kind: &'static str,
        /// The record key (call id, outbox seq).
        key: String,
        /// The serde_json error.
        source: serde_json::Error,
    },

    /// The board layer failed (profile, UART, GPIO, line-controller link).
    #[error(transparent)]
    Board(#[from] branchline_board::Error),

    /// The board profile names a country this firmware has no tone plan for.
    #[error("board profile {model}: unknown country {country:?}")]
    UnknownBoardCountry {
        /// The board model.
        model: String,
        /// The country code in the profile.
        country: String,
    },

    /// The line controller reports fewer ports than the board profile promises.
    #[error(
        "board {model}: line controller has {} FXS and {} FXO ports, the profile expects {} and {}",
        found.0, found.1, expected.0, expected.1
    )]
    BoardMismatch {
        /// The board model.
        model: String,
        /// (FXS, FXO) port counts from the profile.
        expected: (u8, u8),
        /// (FXS, FXO) port counts the line controller reported.
        found: (u8, u8),
    },

    /// The link to the line controller closed.
    #[error("line controller UART {}: link lost", path.display())]
    LinkLost {
        /// The UART device path.
        path: PathBuf,
    },

    /// The line controller did not answer the hello in time.
    #[error("line controller UART {}: no answer within {waited:?}", path.display())]
    LineControllerSilent {
        /// The UART device path.
        path: PathBuf,
        /// How long the daemon waited.
        waited: Duration,
    },

    /// The SIP endpoint (`[sip]`) could not start: a listener, the TLS files, or
    /// settings the SIP cores refused.
    #[error("sip endpoint: {0}")]
    Sip(#[from] crate::sip_endpoint::EndpointError),

    /// A listening socket could not be bound.
    #[error("{what}: cannot listen on {addr}: {source}")]
    Listen {
        /// What was to listen ("simulator console", ...).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// The web API server failed while serving.
    #[error("web api on {addr}: {source}")]
    WebServe {
        /// The address it listened on.
        addr: SocketAddr,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// A thread could not be started.
    #[error("{what}: cannot start thread: {source}")]
    Thread {
        /// What the thread was for.
        what: &'static str,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// The store writer thread has stopped (it panicked or its database failed for good).
    #[error("the store writer thread has stopped")]
    StoreWriterGone,

    /// SQLite rolled back the whole open transaction of a group commit (a full disk,
    /// an I/O error, a trigger's `RAISE(ROLLBACK)`): nothing of it was written.
    #[error("store {path}: the group commit's transaction was rolled back by SQLite")]
    StoreTransactionLost {
        /// The database file.
        path: std::path::PathBuf,
    },

    /// A factory reset failed part way, or the data directory is held by another
    /// `branchd`.
    #[error(transparent)]
    FactoryReset(#[from] crate::factory_reset::ResetError),

    /// `firmware/roles/builtin.toml` does not parse (caught by the unit tests before a release).
    #[error("built-in roles file: {message}")]
    BuiltinRoles {
        /// The TOML parser's message.
        message: String,
    },

    /// A custom role holds the name of a built-in role; the built-in roles were not seeded.
    #[error("role {name:?}: a custom role has the name of a built-in role; rename it")]
    RoleNameReserved {
        /// The name.
        name: String,
    },

    /// Input to an account, role or group operation failed validation; nothing was written.
    #[error("{entity} {key:?}: {}", join_problems(problems))]
    Invalid {
        /// What was being written ("user", "role", "group", "page", "password").
        entity: &'static str,
        /// Which one (username, role name, ...; "" when there is none yet).
        key: String,
        /// Every problem found, each naming its field.
        problems: Vec<FieldProblem>,
    },

    /// A user, role or group does not exist.
    #[error("{entity} {key:?} not found")]
    NotFound {
        /// "user", "role" or "group".
        entity: &'static str,
        /// The id or name asked for.
        key: String,
    },

    /// Built-in roles are data shipped with the firmware; they cannot be changed at runtime.
    #[error("role {name:?} is built in and cannot be {op}; create a custom role instead")]
    BuiltinRoleImmutable {
        /// The role.
        name: String,
        /// "edited" or "deleted".
        op: &'static str,
    },

    /// A role still assigned to users cannot be deleted; nothing was written.
    #[error("role {name:?} is assigned to {users} user(s); remove it from them first")]
    RoleInUse {
        /// The role.
        name: String,
        /// How many users hold it.
        users: i64,
    },

    /// A group that outbound campaigns still run for cannot be deleted; nothing was
    /// written.
    #[error(
        "group {name:?} has {campaigns} campaign(s); delete them or give them another group first"
    )]
    GroupInUse {
        /// The group.
        name: String,
        /// How many campaigns name it.
        campaigns: i64,
    },

    /// A blacklist change that clashes with what is stored (a pattern already listed,
    /// an entry HQ owns); nothing was written.
    #[error("blacklist entry {pattern:?}: {why}")]
    BlacklistConflict {
        /// The entry's pattern.
        pattern: String,
        /// What clashes, in words a person can act on.
        why: String,
    },

    /// A queue change that clashes with what is stored (HQ's queue, a number another
    /// queue has, a queue others overflow to); nothing was written.
    #[error("queue {name:?}: {why}")]
    QueueConflict {
        /// The queue.
        name: String,
        /// What clashes, in words a person can act on.
        why: String,
    },

    /// A customer-records change that clashes with what is stored (a number another
    /// customer holds, a contact HQ owns, the custom-field cap, a name in use);
    /// nothing was written.
    #[error("{what} {key:?}: {why}")]
    CustomerConflict {
        /// "customer", "customer field" or "customer type".
        what: &'static str,
        /// Which one (id, field name, digit, number).
        key: String,
        /// What clashes, in words a person can act on.
        why: String,
    },

    /// A campaign or lead-list change that clashes with what is stored (a name in
    /// use, a list another campaign uses, a state that does not allow it, a lead not
    /// due or being dialled); nothing was written.
    #[error("{what} {key:?}: {why}")]
    CampaignConflict {
        /// "campaign", "lead list" or "lead".
        what: &'static str,
        /// Which one (id or name).
        key: String,
        /// What clashes, in words a person can act on.
        why: String,
    },

    /// A CSV import failed validation; nothing was imported. Lists every bad row.
    #[error("CSV import refused, nothing imported: {}", join_rows(errors))]
    CsvImport {
        /// Every problem, by row (row 1 is the header, data starts at row 2).
        errors: Vec<RowProblem>,
    },

    /// Writing CSV failed.
    #[error("CSV {op}: {source}")]
    Csv {
        /// What was being done.
        op: &'static str,
        /// The csv error.
        source: csv::Error,
    },

    /// Hashing or parsing a password hash failed.
    #[error("password hash: {op}: {source}")]
    PasswordHash {
        /// What was being done ("hash password", "parse stored hash").
        op: &'static str,
        /// The argon2 / PHC error.
        source: argon2::password_hash::Error,
    },

    /// The OS random number generator failed.
    #[error("random numbers for {what}: {source}")]
    Random {
        /// What they were for ("salt", "initial password").
        what: &'static str,
        /// The getrandom error.
        source: getrandom::Error,
    },

    /// The old password given to a password change is wrong; nothing was written.
    #[error("user {username:?}: the current password is wrong")]
    WrongPassword {
        /// The user.
        username: String,
    },

    /// The audit log's hash chain is broken: a row was edited or deleted.
    #[error("audit log broken at row {id}: {problem}")]
    AuditBroken {
        /// The first bad row (or the missing row's id).
        id: i64,
        /// What is wrong with it.
        problem: crate::audit::AuditProblem,
    },

    /// An authorization check failed (already audited by the caller that returns it).
    #[error("denied: {reason}")]
    Denied {
        /// Why.
        reason: crate::rbac::DenyReason,
    },

    /// A blocking helper task (password hashing) panicked or was cancelled.
    #[error("{what}: the worker task failed")]
    TaskFailed {
        /// What it was doing.
        what: &'static str,
    },

    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    FileWrite {
        /// The file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },

    /// A change-feed page, a snapshot or a conflict from HQ was refused because one of
    /// its rows is invalid; nothing of it was applied and the cursor did not move.
    #[error(
        "sync: {what} refused, nothing applied: revision {revision}, {entity} {key:?}: {problem}"
    )]
    SyncRefused {
        /// `"page"`, `"snapshot"` or `"conflict"`.
        what: &'static str,
        /// The feed revision of the offending change.
        revision: i64,
        /// Its entity kind (`"user"`, `"role"`, ...).
        entity: &'static str,
        /// Its key (username, role name, ...).
        key: String,
        /// What is wrong with it (field and reason).
        problem: String,
    },

    /// A certificate or key file named in `[hq]` could not be read or used.
    #[error("{}: {what}: {problem}", path.display())]
    SyncTlsFile {
        /// The file.
        path: PathBuf,
        /// Which file (`"hq.ca_cert"`, `"hq.client_cert"`, `"hq.client_key"`).
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// The HTTPS client for HQ could not be built.
    #[error("sync: cannot build the HTTPS client for {url}: {source}")]
    SyncClient {
        /// HQ's base URL.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },

    /// This boot is an update's trial and it failed the post-boot health check
    /// ([`crate::health`]): the slot was not marked good, so the next boot returns to
    /// the previous slot. `branchd` exits with [`crate::health::EXIT_UNHEALTHY_TRIAL`].
    #[error("the update in slot {slot} failed its health check and is not committed (the next boot returns to the previous slot): {failed}")]
    UpdateUnhealthy {
        /// The trial slot.
        slot: branchline_image::slot::SlotId,
        /// The failed facts and why (`sip: ...; daemon: ...`).
        failed: String,
    },
}

/// Why a login was refused ([`crate::accounts::Accounts::verify_login`]).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown username or wrong password (deliberately not told apart).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Too many failed logins; try again after `until_ms`.
    #[error(
        "account locked after repeated failed logins until {until_ms} (ms since the Unix epoch)"
    )]
    Locked {
        /// When the lockout ends, ms since the Unix epoch.
        until_ms: i64,
    },
    /// The account is disabled.
    #[error("account disabled")]
    Disabled,
    /// The installer account exists only until the box is enrolled.
    #[error(
        "the installer account is retired: this box is enrolled with HQ; log in with an HQ user"
    )]
    InstallerRetired,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

/// One validation problem of an input: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldProblem {
    /// The field (`username`, `permissions[2]`, ...).
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One problem of a CSV import row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowProblem {
    /// 1-based row number in the file (row 1 is the header).
    pub row: usize,
    /// The column (or `"row"` for a problem of the whole row).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}: {}", self.row, self.field, self.message)
    }
}

fn join_problems(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_rows(rows: &[RowProblem]) -> String {
    rows.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn fmt_line(line: Option<usize>) -> String {
    line.map_or_else(String::new, |l| format!(", line {l}"))
}
