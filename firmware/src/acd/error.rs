//! The ACD's errors: a bad configuration ([`ConfigError`]), an input the core refuses
//! ([`InputError`], which leaves the core unchanged), a bad feature code
//! ([`FeatureCodeError`]) and a failure to load the configuration from the store
//! ([`StoreError`]). They live here rather than in the crate's `error.rs` because
//! nothing outside the ACD produces them; a caller that needs the crate error wraps them.

use std::path::PathBuf;

use crate::error::InvalidValue;

use super::config::{AgentId, QueueName};
use super::CallId;

/// The ACD configuration is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A queue's field is wrong.
    #[error("queue {queue:?}: {field}: {message}")]
    Queue {
        /// The queue's name.
        queue: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An agent's field is wrong.
    #[error("agent {agent}: {field}: {message}")]
    Agent {
        /// The agent ID.
        agent: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The feature codes are wrong.
    #[error("feature code {field} {code:?}: {message}")]
    FeatureCode {
        /// Which code (`login`, `logout`, `pause`, `unpause`).
        field: &'static str,
        /// The code as given.
        code: String,
        /// What is wrong.
        message: String,
    },
}

/// An input the ACD refuses; the core is left exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A caller arrived with a call id the ACD already holds.
    #[error("call {0} is already in the ACD")]
    DuplicateCall(CallId),
    /// The call id is not (or no longer) in the ACD.
    #[error("call {0} is not in the ACD")]
    UnknownCall(CallId),
    /// No queue has this name.
    #[error("no queue named {0}")]
    UnknownQueue(QueueName),
    /// No agent has this ID.
    #[error("no agent with ID {0}")]
    UnknownAgent(AgentId),
    /// The agent is not logged in.
    #[error("agent {0} is not logged in")]
    NotLoggedIn(AgentId),
    /// The agent is already logged in.
    #[error("agent {agent} is already logged in on extension {extension}")]
    AlreadyLoggedIn {
        /// The agent.
        agent: AgentId,
        /// Where.
        extension: String,
    },
    /// The agent's extension is fixed and the log-in names another one.
    #[error("agent {agent} has the fixed extension {fixed}; log in on that phone")]
    FixedExtension {
        /// The agent.
        agent: AgentId,
        /// Their extension.
        fixed: String,
    },
    /// The agent's extension mode does not log in this way (the feature code for
    /// `automatic`, the desktop for `login`).
    #[error("agent {agent} has extension mode {mode}: {hint}")]
    WrongLoginPath {
        /// The agent.
        agent: AgentId,
        /// The mode's name.
        mode: &'static str,
        /// How they log in instead.
        hint: &'static str,
    },
    /// Another agent is logged in on the extension.
    #[error("extension {extension} is held by agent {holder}")]
    ExtensionTaken {
        /// The extension.
        extension: String,
        /// The agent logged in there.
        holder: AgentId,
    },
    /// The agent is on a call (log out after it ends).
    #[error("agent {agent} is on call {call}")]
    AgentOnCall {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
    },
    /// The agent is not ringing for this call.
    #[error("call {call} is not ringing agent {agent}")]
    NotOffered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The call has not been answered (a waiting caller abandons, it does not end).
    #[error("call {0} has not been answered")]
    NotConnected(CallId),
    /// The call has been answered (it ends, it does not abandon).
    #[error("call {0} is already answered")]
    AlreadyConnected(CallId),
    /// The agent is not paused (and no pause is pending).
    #[error("agent {0} is not paused")]
    NotPaused(AgentId),
    /// The agent is not in wrap-up.
    #[error("agent {0} is not in wrap-up")]
    NotInWrapUp(AgentId),
    /// The agent is not available (ringing, on a call, in wrap-up or paused), so no
    /// outbound call may reserve them.
    #[error("agent {0} is not available")]
    NotAvailable(AgentId),
    /// The agent is not on this outbound call.
    #[error("agent {agent} is not on outbound call {call}")]
    NotOnOutboundCall {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
}

/// A dialled string that starts like an ACD feature code but is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureCodeError {
    /// A part of the code is not valid (agent ID, PIN, reason).
    #[error("{code}: {source}")]
    BadPart {
        /// Which code (`login`, `pause`, ...).
        code: &'static str,
        /// The bad part.
        source: InvalidValue,
    },
    /// Something follows a complete code.
    #[error("{code}: unexpected {rest:?} after the code")]
    Trailing {
        /// Which code.
        code: &'static str,
        /// What followed.
        rest: String,
    },
    /// Login without the `*` between agent ID and PIN.
    #[error("login: expected <agent id>*<pin>#, got {0:?}")]
    LoginShape(String),
}

/// Loading the ACD configuration from the store failed; nothing was loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An SQLite query failed.
    #[error("{}: {op}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being read.
        op: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A row holds a value the ACD cannot use.
    #[error("{}: {table} row {key}: {column}: {message}", path.display())]
    BadRow {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's key (id, name or agent ID).
        key: String,
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The rows are individually fine but do not fit together.
    #[error("{}: {source}", path.display())]
    Inconsistent {
        /// The database file.
        path: PathBuf,
        /// What does not fit.
        source: ConfigError,
    },
}
