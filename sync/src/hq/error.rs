//! The errors of the HQ server's library: one enum, variants with their context.

use std::path::PathBuf;

/// Result of the HQ library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in `branch-hq`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A SQLite statement failed.
    #[error("sqlite: {op}: {source}")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL statement failed.
    #[error("postgres: {op}: {}", pg_detail(source))]
    Postgres {
        /// What the store was doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgres pool: {source}")]
    Pool {
        /// The pool's error.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// The PostgreSQL pool could not be built from the URL.
    #[error("postgres pool for {url:?}: {reason}")]
    PoolConfig {
        /// The connection string (as given).
        url: String,
        /// Why.
        reason: String,
    },
    /// A blocking store task did not finish (panicked or was cancelled).
    #[error("store task for {op} did not finish: {source}")]
    Join {
        /// What the task was doing.
        op: &'static str,
        /// Tokio's error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A named thing does not exist.
    #[error("{what} {key:?} does not exist")]
    NotFound {
        /// `"site"`, `"box"`, `"user"`, ...
        what: &'static str,
        /// Its id or key.
        key: String,
    },
    /// A named thing exists already.
    #[error("{what} {key:?} exists already")]
    AlreadyExists {
        /// `"site"`, `"box"`.
        what: &'static str,
        /// Its id.
        key: String,
    },
    /// An admin write named a base revision that is no longer the row's revision.
    #[error("{kind} {key:?} is at revision {current}, not {expected}")]
    RevisionMismatch {
        /// Entity kind.
        kind: &'static str,
        /// Entity key.
        key: String,
        /// The revision the caller expected.
        expected: i64,
        /// The row's revision now (0: no row).
        current: i64,
    },
    /// Input (admin request, CLI argument, entity row) is not valid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `"user.username"` or `"site"`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("tls: {what}: {source}")]
    Tls {
        /// What was being built.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("tls client verifier: {source}")]
    Verifier {
        /// rustls' error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// A certificate or key could not be generated or signed.
    #[error("certificate {what}: {source}")]
    Certificate {
        /// What was being made.
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A device certificate would carry a subjectAltName the policy refuses
    /// ([`crate::alt_names::check`]); nothing was signed.
    #[error("box {box_id}: {source}")]
    AltName {
        /// The box.
        box_id: String,
        /// Which name and why.
        #[source]
        source: crate::alt_names::AltNameRefusal,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file could not be parsed.
    #[error("{path}: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// toml's error (with line and column).
        #[source]
        source: toml::de::Error,
    },
    /// The config is not valid.
    #[error("{path}: field {field}: {reason}")]
    Config {
        /// The config file (or `"<flags>"`).
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored JSON row could not be read back.
    #[error("stored {what} is not valid JSON: {source}")]
    StoredJson {
        /// What it is (`"entity row"`, `"file policy"`).
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is not one the schema allows (a kind name HQ does not know).
    #[error("stored {what} {value:?} is not valid")]
    StoredValue {
        /// Which column.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// An enrollment token was used already, by another box or another key
    /// ([`crate::hq::enroll`]).
    #[error("enrollment token {token_id} was used already (by box {used_by:?})")]
    TokenUsed {
        /// The token id (hex).
        token_id: String,
        /// The box that used it.
        used_by: String,
    },
    /// A box asked to enroll into a site other than the one it is registered in.
    #[error("box {box_id:?} belongs to site {registered:?}, not {requested:?}")]
    WrongSite {
        /// The box.
        box_id: String,
        /// Its site at HQ.
        registered: String,
        /// The site of the token it presented.
        requested: String,
    },
    /// The box was revoked by an operator: refused until it re-enrolls with a fresh
    /// token.
    #[error("box {box_id:?} is revoked at HQ ({reason}); re-enroll it with a fresh token")]
    BoxRevoked {
        /// The box.
        box_id: String,
        /// The operator's reason.
        reason: String,
    },
    /// The request's certificate is no longer one HQ accepts for the box (a renewed
    /// or re-enrolled certificate replaced it).
    #[error("this certificate of box {box_id:?} was replaced by a newer one")]
    CertSuperseded {
        /// The box.
        box_id: String,
    },
    /// A provisioning key or revocation list named in the config could not be loaded.
    #[error("{path}: field {field}: {source}")]
    Provisioning {
        /// The config file (or `"<flags>"`).
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// The provisioning crate's error (names the key or list file).
        #[source]
        source: branchline_provisioning::Error,
    },
    /// The random number generator failed.
    #[error("random: {source}")]
    Random {
        /// getrandom's error.
        #[source]
        source: getrandom::Error,
    },
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A PostgreSQL error with the server's message when there is one.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}
