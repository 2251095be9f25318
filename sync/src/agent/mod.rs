//! The box side of sync, as sans-IO cores the firmware's sync task drives.
//!
//! # Modules
//!
//! - [`upload`]: [`Uploader`], the outbox going up: batches bounded by count and
//!   bytes, one in flight, trim on acknowledgement, retries, conflicts.
//! - [`download`]: [`Downloader`], the change feed coming down: the cursor, long-poll
//!   queries, response checks, apply-then-confirm.
//! - [`files`]: [`FileUploader`], recording files after their metadata: HQ's policy,
//!   status then chunks from HQ's offset, one in flight, a bandwidth cap, files that
//!   fail by themselves set aside.
//! - [`backoff`]: [`Backoff`], exponential with full jitter from a seed, used by all.
//! - [`codec`]: the gzip JSON body of an upload ([`encode_batch`], and
//!   [`decode_batch`] with an inflation limit, which HQ uses too).
//! - [`error`]: [`AgentError`] (what events and the status report), [`Failure`] (how
//!   the driver reports a failed request), [`ConfigError`].
//! - this module: [`SyncStatus`] and its JSON form [`SyncReport`] for the diagnostics
//!   API.
//!
//! The cores follow the same shape: `handle(now, input)`, `handle_timeout(now)`,
//! `timeout()`, `poll_transmit()` (a request for the driver to send) and
//! `poll_event()` (everything else the driver must do, in order). Time is
//! [`std::time::Instant`], passed in; randomness is a seed, passed in. The cores hold
//! no sockets, no SQLite and no tokio: the driver reads the outbox, runs the HTTP
//! client and the SQLite transactions, and tells the core what happened.
//!
//! # Offline edits and conflicts
//!
//! An edit made on the box goes up as an outbox row (`user_change`, `role_change`,
//! `group_change`) with the HQ revision it was based on. When HQ rejects it because
//! its row changed since, the acknowledgement lists a [`Conflict`](crate::wire::Conflict)
//! and the uploader hands it out as [`UpEvent::Conflict`], **before** the
//! [`UpEvent::Trim`] that removes the edit from the outbox. The rule: **HQ wins**. The
//! driver, in one transaction, replaces the box's row with `conflict.current` (deletes
//! it when `None`) and writes an audit entry naming the entity, key, base revision,
//! the box's rejected edit (by outbox seq) and HQ's `reason`. The edit itself is not
//! retried: the acknowledgement counts it as received. Each conflict is handed out
//! once per life of the core (a duplicate acknowledgement does not repeat it); after a
//! crash between the conflict and the trim the same conflict can come again, so the
//! driver makes it idempotent (the row replacement is; the audit entry is skipped when
//! one for that seq exists).
//!
//! # Current limits
//!
//! - Rows are read from the store only between batches (no read-ahead while a batch
//!   is in flight); a read is one indexed SQLite range scan, small next to the round
//!   trip.
//! - Recording files are a third core, [`FileUploader`] (chunked, resumable, by HQ's
//!   [`FilePolicy`](crate::wire::FilePolicy), with a bandwidth cap); the outbox
//!   uploader only hands out the policy. The file core does not read files or know
//!   the outbox: its driver lists the recordings whose metadata HQ acknowledged.
//! - A row too large for any batch stops uploads until the driver quarantines it; the
//!   wire protocol has no way to tell HQ a seq is skipped, so HQ's contiguous
//!   acknowledgement cannot pass a quarantined seq unless the driver puts a small row
//!   of the same seq in its place.

pub mod backoff;
pub mod codec;
pub mod download;
pub mod error;
pub mod files;
pub mod upload;

use std::time::Instant;

use serde::Serialize;

pub use backoff::{Backoff, BackoffConfig};
pub use codec::{decode_batch, encode_batch, DecodeError};
pub use download::{
    DownEvent, DownInput, DownStatus, DownTransmit, Downloader, DownloaderConfig, FeedUpdate,
};
pub use error::{AgentError, ConfigError, Exchange, Failure};
pub use files::{
    FileError, FileEvent, FileInput, FileTransmit, FileUploader, FileUploaderConfig, FilesReport,
    FilesStatus, PendingFile,
};
pub use upload::{
    ReadId, RequestId, UpEvent, UpInput, UpStatus, UpTransmit, Uploader, UploaderConfig,
};

/// The sync status for the diagnostics page and the sync API, from both cores.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncStatus {
    /// The outbox side.
    pub up: UpStatus,
    /// The change-feed side.
    pub down: DownStatus,
}

impl SyncStatus {
    /// The status of both cores now.
    pub fn new(uploader: &Uploader, downloader: &Downloader) -> Self {
        Self {
            up: uploader.status(),
            down: downloader.status(),
        }
    }

    /// The status as JSON-ready wall-clock times: `now` is the cores' clock and
    /// `wall_now_ms` the same moment in ms since the Unix epoch.
    pub fn report(&self, now: Instant, wall_now_ms: i64) -> SyncReport {
        let wall = |at: Instant| to_wall(now, wall_now_ms, at);
        let error = |e: &Option<(Instant, AgentError)>| {
            e.as_ref().map(|(at, error)| ErrorReport {
                at_ms: wall(*at),
                message: error.to_string(),
            })
        };
        SyncReport {
            backlog: self.up.backlog,
            oldest_pending_ms: self.up.oldest_pending_ms,
            oldest_pending_age_ms: self
                .up
                .oldest_pending_ms
                .map(|created| wall_now_ms.saturating_sub(created).max(0)),
            acked_seq: self.up.acked_seq,
            upload_in_flight: self.up.in_flight.is_some(),
            upload_last_success_ms: self.up.last_success.map(wall),
            upload_last_error: error(&self.up.last_error),
            upload_next_attempt_ms: self.up.next_attempt.map(wall),
            upload_failures: self.up.consecutive_failures,
            upload_stalled_at_seq: self.up.stalled_at,
            cursor: self.down.cursor,
            feed_in_flight: self.down.in_flight.is_some(),
            feed_last_success_ms: self.down.last_success.map(wall),
            feed_last_error: error(&self.down.last_error),
            feed_next_attempt_ms: self.down.next_attempt.map(wall),
            feed_failures: self.down.consecutive_failures,
            last_success_ms: match (self.up.last_success, self.down.last_success) {
                (Some(a), Some(b)) => Some(wall(a.max(b))),
                (a, b) => a.or(b).map(wall),
            },
        }
    }
}

/// `at` on the cores' clock as ms since the Unix epoch, given that `now` is
/// `wall_now_ms`.
fn to_wall(now: Instant, wall_now_ms: i64, at: Instant) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if at <= now {
        wall_now_ms.saturating_sub(ms(now - at))
    } else {
        wall_now_ms.saturating_add(ms(at - now))
    }
}

/// [`SyncStatus`] in wall-clock ms, for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Outbox rows not yet acknowledged by HQ.
    pub backlog: u64,
    /// Creation time of the oldest of them (ms since the Unix epoch).
    pub oldest_pending_ms: Option<i64>,
    /// How old it is, in ms.
    pub oldest_pending_age_ms: Option<i64>,
    /// Highest seq HQ acknowledged.
    pub acked_seq: i64,
    /// A batch is in flight.
    pub upload_in_flight: bool,
    /// When a batch last went through.
    pub upload_last_success_ms: Option<i64>,
    /// The last upload error.
    pub upload_last_error: Option<ErrorReport>,
    /// When the next upload attempt is due after a failure.
    pub upload_next_attempt_ms: Option<i64>,
    /// Upload failures since the last success.
    pub upload_failures: u32,
    /// The seq of a row too large to send, at which uploads stopped.
    pub upload_stalled_at_seq: Option<i64>,
    /// The change feed revision applied.
    pub cursor: i64,
    /// A change-feed query is open.
    pub feed_in_flight: bool,
    /// When a page was last applied.
    pub feed_last_success_ms: Option<i64>,
    /// The last change-feed error.
    pub feed_last_error: Option<ErrorReport>,
    /// When the next query is due after a failure.
    pub feed_next_attempt_ms: Option<i64>,
    /// Change-feed failures since the last success.
    pub feed_failures: u32,
    /// The later of the two last successes.
    pub last_success_ms: Option<i64>,
}

/// An error with its time, for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// What, in words.
    pub message: String,
}

#[cfg(test)]
mod tests;
