//! Errors of the box-side sync cores.
//!
//! The cores never fail a call: bad input from HQ or from the driver becomes an
//! [`AgentError`] in an event (for the log and [`SyncStatus`](super::SyncStatus)) and
//! changes nothing except the retry schedule. [`ConfigError`] is the one error a
//! constructor returns.

use std::time::Duration;

use crate::wire::ErrorBody;

/// Something that went wrong in one exchange with HQ or the driver, as reported in
/// events and in the status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// The request did not reach HQ or its answer did not come back (connection
    /// refused or reset, TLS failure, DNS, a truncated body).
    #[error("{request} request failed in transport: {detail}")]
    Transport {
        /// Which exchange.
        request: Exchange,
        /// What the driver's HTTP client reported.
        detail: String,
    },
    /// No answer within the request's deadline.
    #[error("{request} request timed out after {after:?}")]
    Timeout {
        /// Which exchange.
        request: Exchange,
        /// How long the core waited.
        after: Duration,
    },
    /// HQ answered with an error status that retrying later can fix (5xx, 408, 429,
    /// or [`ErrorCode::Unavailable`](crate::wire::ErrorCode::Unavailable)).
    #[error("{request} request: HQ answered {status}{}", describe(body))]
    Server {
        /// Which exchange.
        request: Exchange,
        /// HTTP status.
        status: u16,
        /// HQ's error body, if it sent a valid one.
        body: Option<ErrorBody>,
    },
    /// HQ refused the request itself (a 4xx other than 408/429): retrying the same
    /// request soon will not help. For an upload, `seqs` names the refused batch.
    #[error(
        "{request} request refused by HQ with {status}{} (seqs {seqs:?})",
        describe(body)
    )]
    Refused {
        /// Which exchange.
        request: Exchange,
        /// HTTP status.
        status: u16,
        /// HQ's error body, if it sent a valid one.
        body: Option<ErrorBody>,
        /// First and last seq of the refused batch (uploads with records only).
        seqs: Option<(i64, i64)>,
    },
    /// HQ answered 2xx with a body the driver could not parse.
    #[error("{request} response from HQ is not valid: {detail}")]
    BadResponse {
        /// Which exchange.
        request: Exchange,
        /// What the parser reported.
        detail: String,
    },
    /// HQ answered with another protocol version.
    #[error("{request} response has protocol version {got}, this box speaks {want}")]
    VersionMismatch {
        /// Which exchange.
        request: Exchange,
        /// The version in the response.
        got: u16,
        /// [`PROTOCOL_VERSION`](crate::wire::PROTOCOL_VERSION).
        want: u16,
    },
    /// An acknowledgement above every seq this box sent, trimmed, or holds in its
    /// outbox: HQ claims rows the box never wrote; nothing is trimmed.
    #[error("HQ acknowledged seq {acked_seq}, but the box only wrote up to {sent_up_to}")]
    AckBeyondSent {
        /// The acknowledged seq.
        acked_seq: i64,
        /// The highest seq the box sent, trimmed or holds.
        sent_up_to: i64,
    },
    /// HQ acknowledged less than it acknowledged before: it lost rows the box already
    /// trimmed (HQ restored from an old backup?). The box cannot send them again.
    #[error("HQ acknowledged seq {acked_seq}, below the {previously} it acknowledged before")]
    AckRegressed {
        /// The acknowledged seq.
        acked_seq: i64,
        /// What HQ acknowledged before (the box trimmed up to it).
        previously: i64,
    },
    /// HQ accepted a batch but holds none of its rows contiguously, so the box would
    /// only send the same rows again; it backs off instead.
    #[error(
        "HQ acknowledged seq {acked_seq} for a batch of seqs {first_seq}..={last_seq}: no progress"
    )]
    NoProgress {
        /// The acknowledged seq.
        acked_seq: i64,
        /// First seq of the batch.
        first_seq: i64,
        /// Last seq of the batch.
        last_seq: i64,
    },
    /// A conflict for a seq that was not in the acknowledged batch: ignored.
    #[error(
        "HQ reported a conflict for seq {seq}, which was not in the batch {first_seq}..={last_seq}"
    )]
    ConflictOutsideBatch {
        /// The conflict's seq.
        seq: i64,
        /// First seq of the batch (0 for an empty batch).
        first_seq: i64,
        /// Last seq of the batch (0 for an empty batch).
        last_seq: i64,
    },
    /// One outbox row is larger than HQ accepts: it cannot be sent, and uploads stop
    /// at it until the driver quarantines it and sends
    /// [`UpInput::Rewind`](super::UpInput::Rewind).
    #[error("outbox row seq {seq} is {bytes} bytes as JSON, more than the {limit} bytes allowed")]
    RowTooLarge {
        /// The row's seq.
        seq: i64,
        /// Its size: of its payload, or of a batch holding only it.
        bytes: usize,
        /// The limit broken: [`UploaderConfig::max_row_bytes`](super::UploaderConfig::max_row_bytes)
        /// for the payload, or [`MAX_UP_BODY_INFLATED`](crate::wire::MAX_UP_BODY_INFLATED).
        limit: usize,
    },
    /// The driver answered a read with rows out of order, at or below `after_seq`, or
    /// more than asked: ignored.
    #[error("outbox read after seq {after_seq}: {problem}")]
    BadRows {
        /// The read's `after_seq`.
        after_seq: i64,
        /// What was wrong.
        problem: String,
    },
    /// The driver could not read the outbox.
    #[error("reading the outbox failed: {detail}")]
    ReadFailed {
        /// What the store reported.
        detail: String,
    },
    /// A change feed page or snapshot that breaks the protocol: not applied.
    #[error("change feed response for since={since} refused: {problem}")]
    BadFeed {
        /// The query's `since`.
        since: i64,
        /// What was wrong (which revision, which key).
        problem: String,
    },
    /// The driver could not apply a page or snapshot (its transaction rolled back).
    #[error("applying the change feed up to revision {cursor} failed: {detail}")]
    ApplyFailed {
        /// The cursor the page would have stored.
        cursor: i64,
        /// What the store reported.
        detail: String,
    },
}

/// The exchanges with HQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `POST` of an outbox batch.
    Up,
    /// `GET` of the change feed.
    Down,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Up => "upload",
            Self::Down => "change feed",
        })
    }
}

fn describe(body: &Option<ErrorBody>) -> String {
    match body {
        Some(body) => format!(" ({:?}: {})", body.code, body.message),
        None => String::new(),
    }
}

/// A setting that the cores refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("sync setting {field} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The setting's name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A setting that must not be empty.
    #[error("sync setting {field} is empty")]
    Empty {
        /// The setting's name.
        field: &'static str,
    },
    /// A cursor below zero.
    #[error("change feed cursor {cursor} is negative")]
    NegativeCursor {
        /// The cursor.
        cursor: i64,
    },
}

/// What a failed request was, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The request did not reach HQ or the answer did not come back.
    Transport {
        /// What the HTTP client reported.
        detail: String,
    },
    /// The driver's HTTP client gave up waiting (the core also times requests out by
    /// itself, at the transmit's deadline).
    Timeout,
    /// HQ answered with a non-2xx status.
    Status {
        /// HTTP status.
        status: u16,
        /// The [`ErrorBody`], if the body parsed as one.
        body: Option<ErrorBody>,
    },
    /// HQ answered 2xx but the body did not parse.
    BadResponse {
        /// What the parser reported.
        detail: String,
    },
}

impl Failure {
    /// Whether retrying the same request later may succeed without anything changing
    /// on the box: transport errors, timeouts, unparseable answers, 5xx, 408, 429 and
    /// [`ErrorCode::Unavailable`](crate::wire::ErrorCode::Unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout | Self::BadResponse { .. } => true,
            Self::Status { status, body } => {
                *status >= 500
                    || *status == 408
                    || *status == 429
                    || !(400..500).contains(status)
                    || body
                        .as_ref()
                        .is_some_and(|b| b.code == crate::wire::ErrorCode::Unavailable)
            }
        }
    }

    /// This failure as an [`AgentError`] of `request` (`seqs`: the batch, for uploads).
    pub(crate) fn into_error(
        self,
        request: Exchange,
        waited: Duration,
        seqs: Option<(i64, i64)>,
    ) -> AgentError {
        let transient = self.is_transient();
        match self {
            Self::Transport { detail } => AgentError::Transport { request, detail },
            Self::Timeout => AgentError::Timeout {
                request,
                after: waited,
            },
            Self::BadResponse { detail } => AgentError::BadResponse { request, detail },
            Self::Status { status, body } if transient => AgentError::Server {
                request,
                status,
                body,
            },
            Self::Status { status, body } => AgentError::Refused {
                request,
                status,
                body,
                seqs,
            },
        }
    }
}
