//! The reports' errors. They live here rather than in the crate's `error.rs` because
//! only the reports produce them; the API maps them to HTTP answers.

use std::path::PathBuf;

/// Why a report was not computed. Nothing is written either way: reports only read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The period is empty or reversed (`from` must be before `to`).
    #[error("period: from ({from_ms}) must be before to ({to_ms})")]
    EmptyPeriod {
        /// The start given, ms since the Unix epoch.
        from_ms: i64,
        /// The end given.
        to_ms: i64,
    },
    /// The period starts before the Unix epoch.
    #[error("period: from ({from_ms}) is before the Unix epoch")]
    BeforeEpoch {
        /// The start given.
        from_ms: i64,
    },
    /// The period is longer than [`super::MAX_PERIOD_MS`].
    #[error("period: {days} days from {from_ms} to {to_ms} is longer than the {max_days} days a report may cover")]
    PeriodTooLong {
        /// The start given.
        from_ms: i64,
        /// The end given.
        to_ms: i64,
        /// The period's length in whole days (rounded up).
        days: i64,
        /// The cap, in days.
        max_days: i64,
    },
    /// The service-level threshold is outside 1..=[`super::MAX_SERVICE_LEVEL_S`] seconds.
    #[error("service level threshold: {given} s is outside 1..={max} s")]
    ServiceLevel {
        /// The threshold given, in seconds.
        given: i64,
        /// The largest accepted.
        max: i64,
    },
    /// No queue of this name is configured and no CDR ever went through one.
    #[error("no queue named {queue:?} (not configured, and no call went through it)")]
    UnknownQueue {
        /// The name asked for.
        queue: String,
    },
    /// No user has this agent ID and the agent state history never saw it.
    #[error("no agent with ID {agent:?} (no user has it, and no agent state history names it)")]
    UnknownAgent {
        /// The agent ID asked for.
        agent: String,
    },
    /// Reading the store failed.
    #[error("{}: report: {op}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What the report was reading.
        op: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

impl ReportError {
    /// The request parameter the error is about, for a 400 naming it; `None` for
    /// errors that are not the caller's input (store failures).
    pub fn parameter(&self) -> Option<&'static str> {
        match self {
            ReportError::EmptyPeriod { .. } | ReportError::PeriodTooLong { .. } => Some("to"),
            ReportError::BeforeEpoch { .. } => Some("from"),
            ReportError::ServiceLevel { .. } => Some("sl"),
            ReportError::UnknownQueue { .. } => Some("queue"),
            ReportError::UnknownAgent { .. } => Some("agent"),
            ReportError::Sqlite { .. } => None,
        }
    }
}
