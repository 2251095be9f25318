//! [`Uploader`]: the outbox, up to HQ.
//!
//! # What the driver does
//!
//! The driver (the firmware's sync task) owns the SQLite outbox and the HTTP client;
//! the core owns every decision. After each [`Uploader::handle`] or
//! [`Uploader::handle_timeout`] the driver drains [`Uploader::poll_event`] (in order)
//! and [`Uploader::poll_transmit`], and sleeps until [`Uploader::timeout`] or its next
//! input:
//!
//! - [`UpEvent::NeedRows`]: read up to `max` outbox rows with `seq > after_seq` in seq
//!   order, and answer [`UpInput::Rows`] with the same `read` id and the highest seq in
//!   the outbox (or [`UpInput::ReadFailed`]). Every `NeedRows` needs exactly one answer;
//!   the core sends nothing while it waits for it.
//! - [`UpTransmit`]: `POST` [`encode_batch`](super::encode_batch)`(&batch)` to
//!   [`UP_PATH`](crate::wire::UP_PATH), with a client timeout at `deadline`, and answer
//!   [`UpInput::Acked`] or [`UpInput::Failed`] with the transmit's `request` id.
//! - [`UpEvent::Conflict`]: take HQ's row and write the conflict to the audit log (see
//!   [the rule](super#offline-edits-and-conflicts)), durably, *before* executing a
//!   later [`UpEvent::Trim`].
//! - [`UpEvent::Trim`]: delete outbox rows with `seq <= up_to_seq`.
//! - [`UpEvent::Error`]: log it (the status keeps the last one). For
//!   [`AgentError::RowTooLarge`] move that row out of the outbox into a quarantine
//!   table and send [`UpInput::Rewind`].
//! - [`UpEvent::FilePolicy`]: hand HQ's recording-file policy to the file uploader.
//! - After writing outbox rows, send [`UpInput::Appended`] (otherwise the core looks
//!   again every [`UploaderConfig::poll_interval`]).
//!
//! # Rules
//!
//! - At most one batch is in flight. With [`UploaderConfig::read_ahead`] the rows of
//!   the next batch are read while it is (one read at a time, up to one more batch of
//!   rows), so the next batch is ready when the answer comes. A batch holds
//!   consecutive rows from the oldest
//!   row HQ has not acknowledged, at most [`UploaderConfig::max_records`] (while a
//!   backlog drains, up to [`UploaderConfig::backlog_max_records`]) and at most
//!   [`UploaderConfig::max_batch_bytes`] of JSON (envelope included). A single row
//!   above that budget goes alone, as long as it fits
//!   [`MAX_UP_BODY_INFLATED`] and its payload fits [`UploaderConfig::max_row_bytes`]
//!   (HQ's per-record limit); a row above either is reported
//!   ([`AgentError::RowTooLarge`]) and uploads stop at it (the rows before it still
//!   go): it is never skipped by the core and never retried in a loop.
//! - On [`UpAck`] the core trims up to `acked_seq`, never beyond the highest seq it
//!   sent and never backwards, and continues from `acked_seq + 1`: rows HQ does not
//!   hold contiguously are sent again. After a crash HQ may acknowledge rows that an
//!   earlier life of the core sent: such an ack trims only up to what this life sent
//!   (the rest follows with the next batch). An ack above every seq the outbox ever
//!   held is an [`AgentError::AckBeyondSent`] and trims nothing. An ack that leaves every row of
//!   its batch unacknowledged is [`AgentError::NoProgress`] and backs off like a
//!   failure, so a confused HQ cannot make the box spin.
//! - An acknowledgement that arrives after its request timed out is still true (HQ
//!   never un-holds a row), so it trims as far as it goes; a late failure is ignored.
//! - Transport failures, timeouts, 5xx/408/429 and `Unavailable` retry after
//!   exponential backoff with full jitter ([`Backoff`]); a success resets it.
//! - A 4xx refusal of a batch of several rows halves the batch size for the next
//!   attempts (after the normal backoff), which isolates a bad row while the good rows
//!   before it still go through; a refused single row, or a refusal that is not about
//!   the batch (unknown box, forbidden, unsupported version), waits
//!   [`Backoff::at_cap`] and is tried again. **The box never drops data on its own**:
//!   a refused row stays in the outbox, the error is in the status and the log, and an
//!   operator (or a fixed HQ) decides. The first success restores the full batch size.
//! - With nothing to send the core sends an empty batch every
//!   [`UploaderConfig::heartbeat_interval`], so HQ sees the box and the box learns
//!   HQ's file policy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffConfig};
use super::codec::json_len;
use super::error::{AgentError, ConfigError, Exchange, Failure};
use crate::wire::{
    Conflict, FilePolicy, UpAck, UpBatch, UpRecord, MAX_BATCH_RECORDS, MAX_UP_BODY_INFLATED,
    PROTOCOL_VERSION,
};

/// Settings of an [`Uploader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploaderConfig {
    /// This box's id (the CN of its certificate).
    pub box_id: String,
    /// The store incarnation ([`UpBatch::epoch`]).
    pub epoch: String,
    /// The firmware version reported to HQ.
    pub firmware_version: String,
    /// Most rows in one batch, 1..=[`MAX_BATCH_RECORDS`].
    pub max_records: usize,
    /// While a backlog drains, the batch may grow up to this many rows
    /// (`max_records..=`[`MAX_BATCH_RECORDS`]; `None`: never beyond `max_records`):
    /// after each batch that was full by count, accepted whole, with more rows
    /// waiting, the row limit doubles. The byte bound [`Self::max_batch_bytes`] still
    /// holds, so memory stays bounded; any failure, or an empty outbox, returns to
    /// `max_records`. Fewer, larger requests drain a backlog faster (each batch costs
    /// a round trip, a read and a trim on the box, a transaction at HQ).
    pub backlog_max_records: Option<usize>,
    /// Most bytes of one batch as JSON, 1 KiB..=[`MAX_UP_BODY_INFLATED`].
    pub max_batch_bytes: usize,
    /// Most bytes of one row's payload as JSON, 1 KiB..=[`MAX_UP_BODY_INFLATED`]:
    /// HQ refuses a larger payload (its `MAX_PAYLOAD_BYTES`, 256 KiB), so such a row
    /// is reported as [`AgentError::RowTooLarge`] instead of being refused forever.
    pub max_row_bytes: usize,
    /// How long a request may take before the core gives up on it.
    pub request_timeout: Duration,
    /// How often the core looks at the outbox again when it is empty and the driver
    /// said nothing (a safety net for a missed [`UpInput::Appended`]).
    pub poll_interval: Duration,
    /// How often an idle box sends an empty batch.
    pub heartbeat_interval: Duration,
    /// Retry waits.
    pub backoff: BackoffConfig,
    /// Read the next batch's rows while a batch is in flight (`false`: read only once
    /// the answer is in). The next batch is then ready to go the moment HQ answers,
    /// so the outbox read overlaps HQ's work instead of adding to every round trip;
    /// the core holds up to two batches of rows (each within the row and byte
    /// bounds). Still at most one batch in flight.
    pub read_ahead: bool,
}

impl UploaderConfig {
    /// Settings with the defaults: 2000 rows or 1 MiB per batch, payloads up to
    /// 256 KiB, 30 s request
    /// timeout, outbox poll every 5 s, heartbeat every 60 s, backoff 1 s to 5 min.
    pub fn new(
        box_id: impl Into<String>,
        epoch: impl Into<String>,
        firmware_version: impl Into<String>,
    ) -> Self {
        Self {
            box_id: box_id.into(),
            epoch: epoch.into(),
            firmware_version: firmware_version.into(),
            max_records: MAX_BATCH_RECORDS,
            backlog_max_records: None,
            max_batch_bytes: 1024 * 1024,
            max_row_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
            read_ahead: false,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("box_id", &self.box_id), ("epoch", &self.epoch)] {
            if value.is_empty() {
                return Err(ConfigError::Empty { field });
            }
        }
        range(
            "max_records",
            self.max_records as u64,
            1,
            MAX_BATCH_RECORDS as u64,
        )?;
        if let Some(n) = self.backlog_max_records {
            range(
                "backlog_max_records",
                n as u64,
                self.max_records as u64,
                MAX_BATCH_RECORDS as u64,
            )?;
        }
        range(
            "max_batch_bytes",
            self.max_batch_bytes as u64,
            1024,
            MAX_UP_BODY_INFLATED as u64,
        )?;
        range(
            "max_row_bytes",
            self.max_row_bytes as u64,
            1024,
            MAX_UP_BODY_INFLATED as u64,
        )?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        const DAY_MS: u64 = 86_400_000;
        range("request_timeout_ms", ms(self.request_timeout), 100, DAY_MS)?;
        range("poll_interval_ms", ms(self.poll_interval), 10, DAY_MS)?;
        range(
            "heartbeat_interval_ms",
            ms(self.heartbeat_interval),
            100,
            DAY_MS,
        )?;
        range("backoff_base_ms", ms(self.backoff.base), 1, DAY_MS)?;
        range(
            "backoff_cap_ms",
            ms(self.backoff.cap),
            ms(self.backoff.base),
            DAY_MS,
        )?;
        Ok(())
    }
}

pub(crate) fn range(
    field: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Names one outbox read ([`UpEvent::NeedRows`]) so its answer can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadId(pub u64);

/// Names one request to HQ so its answer can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Inputs of the [`Uploader`].
#[derive(Debug, Clone, PartialEq)]
pub enum UpInput {
    /// The answer to [`UpEvent::NeedRows`].
    Rows {
        /// The read answered.
        read: ReadId,
        /// Up to `max` rows with `seq > after_seq`, ascending.
        rows: Vec<UpRecord>,
        /// The highest seq in the outbox now (0 when it is empty).
        last_seq: i64,
    },
    /// The outbox could not be read; the core retries after a backoff.
    ReadFailed {
        /// The read that failed.
        read: ReadId,
        /// What the store reported.
        detail: String,
    },
    /// Rows were written to the outbox; `last_seq` is the highest seq now.
    Appended {
        /// The highest seq in the outbox.
        last_seq: i64,
    },
    /// HQ answered a batch with 2xx and this acknowledgement.
    Acked {
        /// The request answered.
        request: RequestId,
        /// HQ's answer.
        ack: UpAck,
    },
    /// A batch failed.
    Failed {
        /// The request that failed.
        request: RequestId,
        /// How.
        failure: Failure,
    },
    /// The outbox changed under the core (a row was quarantined): forget the rows
    /// read so far and read again from the last acknowledged seq.
    Rewind,
    /// Sync now: cancel a pending backoff, look at the outbox again, and send (an
    /// empty batch if there is nothing else) as soon as no batch is in flight.
    Force,
}

/// A batch for the driver to `POST`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpTransmit {
    /// Quote this in [`UpInput::Acked`] / [`UpInput::Failed`].
    pub request: RequestId,
    /// The batch; the body is [`encode_batch`](super::encode_batch)`(&batch)`.
    pub batch: UpBatch,
    /// When the core gives up on the request (set the HTTP client's timeout to it).
    pub deadline: Instant,
}

/// Outputs of the [`Uploader`] other than batches, in the order the driver must act
/// on them.
#[derive(Debug, Clone, PartialEq)]
pub enum UpEvent {
    /// Read outbox rows (see the [module docs](self)).
    NeedRows {
        /// Quote this in [`UpInput::Rows`].
        read: ReadId,
        /// Rows with a seq above this.
        after_seq: i64,
        /// At most this many.
        max: usize,
    },
    /// HQ rejected an offline edit: take its row, audit the conflict.
    Conflict(Box<Conflict>),
    /// Delete outbox rows with `seq <= up_to_seq`: HQ holds them all.
    Trim {
        /// The highest seq to delete.
        up_to_seq: i64,
    },
    /// HQ's recording-file policy, when it first arrives and whenever it changes.
    FilePolicy(FilePolicy),
    /// A batch went through (for the log): `rows` rows, HQ now holds up to
    /// `acked_seq`.
    Delivered {
        /// The request.
        request: RequestId,
        /// Rows in the batch.
        rows: usize,
        /// HQ's contiguous seq after it.
        acked_seq: i64,
    },
    /// Something went wrong; the core has already scheduled what comes next.
    Error(AgentError),
}

/// The uploader's part of the sync status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpStatus {
    /// Highest seq HQ has acknowledged (or below which the outbox held nothing when
    /// this core started).
    pub acked_seq: i64,
    /// Highest seq in the outbox, as last reported by the driver.
    pub last_seq: i64,
    /// Rows in the outbox not yet acknowledged.
    pub backlog: u64,
    /// Creation time of the oldest unacknowledged row the core has seen, ms since
    /// the Unix epoch.
    pub oldest_pending_ms: Option<i64>,
    /// The batch in flight: its request, first and last seq (0, 0 for a heartbeat),
    /// and when it was sent.
    pub in_flight: Option<(RequestId, i64, i64, Instant)>,
    /// When a batch last went through.
    pub last_success: Option<Instant>,
    /// The last error and when it happened.
    pub last_error: Option<(Instant, AgentError)>,
    /// When the core will try again after a failure (None: not backing off).
    pub next_attempt: Option<Instant>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The seq of a row too large to send, at which uploads stopped.
    pub stalled_at: Option<i64>,
}

#[derive(Debug, Clone)]
struct Pending {
    record: UpRecord,
    /// The row's JSON size inside a batch.
    bytes: usize,
    /// Why the row can never be sent: its size and the limit it breaks.
    too_large: Option<(usize, usize)>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    request: RequestId,
    /// First and last seq of the batch; None for a heartbeat.
    seqs: Option<(i64, i64)>,
    rows: usize,
    sent_at: Instant,
    deadline: Instant,
}

/// How many recent requests' seq ranges are kept to judge late acknowledgements.
const RECENT_REQUESTS: usize = 16;

/// The outbox uploader core. See the [module docs](self).
#[derive(Debug)]
pub struct Uploader {
    config: UploaderConfig,
    backoff: Backoff,
    /// JSON size of a batch with no records and the widest numbers.
    envelope_bytes: usize,
    /// Everything at or below this seq is acknowledged (or was gone from the outbox
    /// when this core first read it).
    floor: i64,
    /// Highest seq this core ever sent.
    max_sent: i64,
    /// Highest seq in the outbox, as the driver last said.
    last_seq: i64,
    /// Rows read with seq above `floor`, ascending.
    pending: VecDeque<Pending>,
    /// JSON bytes of `pending`.
    pending_bytes: usize,
    /// The outstanding read and its `after_seq`.
    read: Option<(ReadId, i64, usize)>,
    next_read: u64,
    /// The last read returned fewer rows than asked (since when).
    exhausted_at: Option<Instant>,
    in_flight: Option<InFlight>,
    next_request: u64,
    /// Seq ranges of recent requests (None: heartbeat), for late acknowledgements.
    recent: BTreeMap<RequestId, Option<(i64, i64)>>,
    /// Conflicts already handed out, by seq (above `floor`).
    conflicts_seen: BTreeSet<i64>,
    file_policy: Option<FilePolicy>,
    /// Retry not before this.
    retry_at: Option<Instant>,
    /// Batch size while isolating a refused row.
    shrunk_to: Option<usize>,
    /// Batch size while a backlog drains (see [`UploaderConfig::backlog_max_records`]).
    grown_to: Option<usize>,
    /// A row too large to send, at which uploads stopped.
    stalled_at: Option<i64>,
    /// When the last batch was sent.
    last_sent: Option<Instant>,
    heartbeat_now: bool,
    last_success: Option<Instant>,
    last_error: Option<(Instant, AgentError)>,
    events: VecDeque<UpEvent>,
    transmits: VecDeque<UpTransmit>,
}

impl Uploader {
    /// A core that starts from the outbox's first row; `seed` drives the backoff
    /// jitter (give each box a different one).
    pub fn new(config: UploaderConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let envelope_bytes = json_len(&UpBatch {
            version: PROTOCOL_VERSION,
            box_id: config.box_id.clone(),
            epoch: config.epoch.clone(),
            firmware_version: config.firmware_version.clone(),
            backlog: u64::MAX,
            oldest_pending_ms: Some(i64::MIN),
            records: Vec::new(),
        });
        let mut uploader = Self {
            backoff: Backoff::new(config.backoff, seed),
            config,
            envelope_bytes,
            floor: 0,
            max_sent: 0,
            last_seq: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            read: None,
            next_read: 0,
            exhausted_at: None,
            in_flight: None,
            next_request: 0,
            recent: BTreeMap::new(),
            conflicts_seen: BTreeSet::new(),
            file_policy: None,
            retry_at: None,
            shrunk_to: None,
            grown_to: None,
            stalled_at: None,
            last_sent: None,
            heartbeat_now: false,
            last_success: None,
            last_error: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        };
        uploader.drive(now);
        Ok(uploader)
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: UpInput) {
        match input {
            UpInput::Rows {
                read,
                rows,
                last_seq,
            } => self.on_rows(now, read, rows, last_seq),
            UpInput::ReadFailed { read, detail } => {
                if self.read.is_some_and(|(id, ..)| id == read) {
                    self.read = None;
                    self.fail(now, AgentError::ReadFailed { detail }, false);
                }
            }
            UpInput::Appended { last_seq } => {
                if last_seq > self.last_seq {
                    self.last_seq = last_seq;
                    self.exhausted_at = None;
                }
            }
            UpInput::Acked { request, ack } => self.on_ack(now, request, ack),
            UpInput::Failed { request, failure } => self.on_failure(now, request, failure),
            UpInput::Rewind => self.rewind(),
            UpInput::Force => {
                self.retry_at = None;
                self.exhausted_at = None;
                self.heartbeat_now = true;
                if self.stalled_at.is_some() {
                    self.rewind();
                }
            }
        }
        self.drive(now);
    }

    /// Advances the clock to `now`: times out a request, ends a backoff, polls the
    /// outbox, sends a heartbeat, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(flight) = self.in_flight {
            if now >= flight.deadline {
                self.in_flight = None;
                self.remember(flight.request, flight.seqs);
                let error =
                    Failure::Timeout.into_error(Exchange::Up, now - flight.sent_at, flight.seqs);
                self.fail(now, error, false);
            }
        }
        self.drive(now);
    }

    /// When [`Uploader::handle_timeout`] should run next (None: only an input can
    /// move the core).
    pub fn timeout(&self) -> Option<Instant> {
        let mut next = self.in_flight.map(|f| f.deadline);
        if self.in_flight.is_none() && self.read.is_none() && self.stalled_at.is_none() {
            let idle_at = if let Some(at) = self.retry_at {
                Some(at)
            } else if let Some(since) = self.exhausted_at {
                let poll = since + self.config.poll_interval;
                let beat = self.heartbeat_due();
                Some(if self.pending.is_empty() {
                    beat.map_or(poll, |b| b.min(poll))
                } else {
                    poll
                })
            } else {
                None
            };
            next = match (next, idle_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    /// The next batch to send.
    pub fn poll_transmit(&mut self) -> Option<UpTransmit> {
        self.transmits.pop_front()
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<UpEvent> {
        self.events.pop_front()
    }

    /// The uploader's status now.
    pub fn status(&self) -> UpStatus {
        UpStatus {
            acked_seq: self.floor,
            last_seq: self.last_seq,
            backlog: u64::try_from(self.last_seq.saturating_sub(self.floor)).unwrap_or(0),
            oldest_pending_ms: self.pending.front().map(|p| p.record.created_at_ms),
            in_flight: self.in_flight.map(|f| {
                let (first, last) = f.seqs.unwrap_or((0, 0));
                (f.request, first, last, f.sent_at)
            }),
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            next_attempt: self.retry_at,
            consecutive_failures: self.backoff.failures(),
            stalled_at: self.stalled_at,
        }
    }

    /// The settings.
    pub fn config(&self) -> &UploaderConfig {
        &self.config
    }

    fn heartbeat_due(&self) -> Option<Instant> {
        Some(self.last_sent? + self.config.heartbeat_interval)
    }

    fn rewind(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.read = None;
        self.exhausted_at = None;
        self.stalled_at = None;
    }

    fn report(&mut self, now: Instant, error: AgentError) {
        self.last_error = Some((now, error.clone()));
        self.events.push_back(UpEvent::Error(error));
    }

    /// Records a failure and schedules the retry.
    fn fail(&mut self, now: Instant, error: AgentError, at_cap: bool) {
        self.grown_to = None;
        self.report(now, error);
        self.retry_at = Some(if at_cap {
            self.backoff.at_cap(now)
        } else {
            self.backoff.fail(now)
        });
    }

    fn remember(&mut self, request: RequestId, seqs: Option<(i64, i64)>) {
        self.recent.insert(request, seqs);
        while self.recent.len() > RECENT_REQUESTS {
            self.recent.pop_first();
        }
    }

    fn on_rows(&mut self, now: Instant, read: ReadId, mut rows: Vec<UpRecord>, last_seq: i64) {
        let Some((id, after_seq, max)) = self.read else {
            return;
        };
        if id != read {
            return;
        }
        self.read = None;
        if let Some(problem) = check_rows(after_seq, max, &rows) {
            self.fail(now, AgentError::BadRows { after_seq, problem }, false);
            return;
        }
        let highest = rows.last().map_or(after_seq, |r| r.seq);
        self.last_seq = self.last_seq.max(last_seq).max(highest);
        if rows.len() < max {
            self.exhausted_at = Some(now);
        }
        // Rows HQ acknowledged while they were being read are not kept.
        let floor = self.floor;
        rows.retain(|r| r.seq > floor);
        if self.pending.is_empty() {
            // The outbox holds nothing between the floor and the first row read:
            // those rows were trimmed before (by an earlier life of this core).
            if let Some(first) = rows.first() {
                self.floor = self.floor.max(first.seq - 1);
            }
        }
        for record in rows {
            let bytes = json_len(&record);
            let too_large = if self.envelope_bytes + bytes > MAX_UP_BODY_INFLATED {
                Some((self.envelope_bytes + bytes, MAX_UP_BODY_INFLATED))
            } else if bytes > self.config.max_row_bytes {
                // The payload is the bulk of the row; measure it only when it matters.
                let payload = json_len(&record.payload);
                (payload > self.config.max_row_bytes)
                    .then_some((payload, self.config.max_row_bytes))
            } else {
                None
            };
            self.pending_bytes += bytes;
            self.pending.push_back(Pending {
                record,
                bytes,
                too_large,
            });
        }
    }

    fn on_ack(&mut self, now: Instant, request: RequestId, ack: UpAck) {
        let current = self.in_flight.filter(|f| f.request == request);
        let seqs = match current {
            Some(flight) => flight.seqs,
            None => match self.recent.get(&request) {
                Some(seqs) => *seqs,
                None => return,
            },
        };
        if let Some(flight) = current {
            self.in_flight = None;
            self.remember(flight.request, flight.seqs);
        }
        let is_current = current.is_some();
        if ack.version != PROTOCOL_VERSION {
            let error = AgentError::VersionMismatch {
                request: Exchange::Up,
                got: ack.version,
                want: PROTOCOL_VERSION,
            };
            if is_current {
                self.fail(now, error, true);
            }
            return;
        }
        // HQ may hold more than this life of the core sent (an earlier life sent it
        // before a crash), but never a seq the outbox did not hold.
        let sent_up_to = self.max_sent.max(self.floor);
        let written_up_to = sent_up_to.max(self.last_seq);
        if ack.acked_seq > written_up_to || ack.acked_seq < 0 {
            let error = AgentError::AckBeyondSent {
                acked_seq: ack.acked_seq,
                sent_up_to: written_up_to,
            };
            if is_current {
                self.fail(now, error, false);
            } else {
                self.report(now, error);
            }
            return;
        }
        // Trim only what this core sent (or found trimmed already).
        let acked_seq = ack.acked_seq.min(sent_up_to);
        let previous_floor = self.floor;
        // Conflicts first: the driver applies them before it trims.
        let (first_seq, last_seq) = seqs.unwrap_or((0, 0));
        for conflict in ack.conflicts {
            if seqs.is_none() || conflict.seq < first_seq || conflict.seq > last_seq {
                self.report(
                    now,
                    AgentError::ConflictOutsideBatch {
                        seq: conflict.seq,
                        first_seq,
                        last_seq,
                    },
                );
            } else if conflict.seq > previous_floor && self.conflicts_seen.insert(conflict.seq) {
                self.events.push_back(UpEvent::Conflict(Box::new(conflict)));
            }
        }
        if acked_seq > self.floor {
            self.floor = acked_seq;
            while self
                .pending
                .front()
                .is_some_and(|p| p.record.seq <= acked_seq)
            {
                if let Some(p) = self.pending.pop_front() {
                    self.pending_bytes -= p.bytes;
                }
            }
            self.conflicts_seen = self.conflicts_seen.split_off(&(acked_seq + 1));
            self.events.push_back(UpEvent::Trim {
                up_to_seq: acked_seq,
            });
        }
        if self.file_policy.as_ref() != Some(&ack.file_policy) {
            self.file_policy = Some(ack.file_policy.clone());
            self.events.push_back(UpEvent::FilePolicy(ack.file_policy));
        }
        if !is_current {
            return;
        }
        let progressed = acked_seq > previous_floor;
        let complete = seqs.is_none_or(|(_, last)| acked_seq >= last);
        if complete || progressed {
            self.backoff.succeed();
            self.shrunk_to = None;
            self.last_success = Some(now);
            self.retry_at = None;
            let rows = current.map_or(0, |f| f.rows);
            self.grow_or_settle(complete, rows);
            self.events.push_back(UpEvent::Delivered {
                request,
                rows,
                acked_seq: ack.acked_seq,
            });
        } else if ack.acked_seq < previous_floor {
            self.fail(
                now,
                AgentError::AckRegressed {
                    acked_seq: ack.acked_seq,
                    previously: previous_floor,
                },
                false,
            );
        } else {
            self.fail(
                now,
                AgentError::NoProgress {
                    acked_seq: ack.acked_seq,
                    first_seq,
                    last_seq,
                },
                false,
            );
        }
    }

    fn on_failure(&mut self, now: Instant, request: RequestId, failure: Failure) {
        let Some(flight) = self.in_flight.filter(|f| f.request == request) else {
            return;
        };
        self.in_flight = None;
        self.remember(flight.request, flight.seqs);
        let transient = failure.is_transient();
        let about_batch = matches!(
            &failure,
            Failure::Status { status, body }
                if *status == 413
                    || body.as_ref().is_some_and(|b| matches!(
                        b.code,
                        crate::wire::ErrorCode::MalformedBatch | crate::wire::ErrorCode::TooLarge
                    ))
        );
        let error = failure.into_error(Exchange::Up, now - flight.sent_at, flight.seqs);
        if transient {
            self.fail(now, error, false);
        } else if about_batch && flight.rows > 1 {
            self.shrunk_to = Some((flight.rows / 2).max(1));
            self.fail(now, error, false);
        } else {
            self.fail(now, error, true);
        }
    }

    /// Decides what to do next: read, send, or wait.
    fn drive(&mut self, now: Instant) {
        if self.read.is_some() || self.stalled_at.is_some() {
            return;
        }
        if let Some(flight) = self.in_flight {
            if self.config.read_ahead {
                self.read_ahead(flight);
            }
            return;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return;
            }
            self.retry_at = None;
        }
        if self
            .exhausted_at
            .is_some_and(|since| now >= since + self.config.poll_interval)
        {
            self.exhausted_at = None;
        }
        let limit = self.batch_limit();
        let budget = self.config.max_batch_bytes;
        let full =
            self.pending.len() >= limit || self.pending_bytes + self.envelope_bytes >= budget;
        if !full && self.exhausted_at.is_none() {
            return self.need_rows(limit - self.pending.len());
        }
        if !self.pending.is_empty() {
            self.send_batch(now, limit);
        } else if self.heartbeat_now || self.heartbeat_due().is_none_or(|at| now >= at) {
            self.send(now, Vec::new(), None);
        }
        if let Some(flight) = self.in_flight.filter(|_| self.config.read_ahead) {
            self.read_ahead(flight);
        }
    }

    /// While `flight` is out: asks for the rows of the next batch, unless the rows
    /// read beyond it already fill one (or the outbox had no more).
    fn read_ahead(&mut self, flight: InFlight) {
        if self.exhausted_at.is_some() || self.retry_at.is_some() {
            return;
        }
        let sent_through = flight.seqs.map_or(self.floor, |(_, last)| last);
        let start = self
            .pending
            .partition_point(|p| p.record.seq <= sent_through);
        let ahead = self.pending.len() - start;
        let ahead_bytes: usize = self.pending.range(start..).map(|p| p.bytes).sum();
        let limit = self.batch_limit();
        if ahead >= limit || ahead_bytes + self.envelope_bytes >= self.config.max_batch_bytes {
            return;
        }
        self.need_rows(limit - ahead);
    }

    /// Asks for up to `max` rows after the last one held (or the floor).
    fn need_rows(&mut self, max: usize) {
        let after_seq = self.pending.back().map_or(self.floor, |p| p.record.seq);
        let read = ReadId(self.next_read);
        self.next_read += 1;
        self.read = Some((read, after_seq, max));
        self.events.push_back(UpEvent::NeedRows {
            read,
            after_seq,
            max,
        });
    }

    fn batch_limit(&self) -> usize {
        match self.shrunk_to {
            Some(n) => n.min(self.config.max_records),
            None => self.grown_to.unwrap_or(self.config.max_records),
        }
    }

    /// After an accepted batch of `rows`: doubles the row limit while a backlog
    /// drains and the last batch was full by count; back to `max_records` once the
    /// outbox is drained.
    fn grow_or_settle(&mut self, complete: bool, rows: usize) {
        let Some(ceiling) = self.config.backlog_max_records else {
            return;
        };
        let limit = self.batch_limit();
        if self.last_seq <= self.floor {
            self.grown_to = None;
        } else if complete && rows >= limit {
            self.grown_to = Some(limit.saturating_mul(2).min(ceiling));
        }
    }

    fn send_batch(&mut self, now: Instant, limit: usize) {
        let budget = self.config.max_batch_bytes;
        let mut size = self.envelope_bytes;
        let mut count = 0;
        for p in self.pending.iter().take(limit) {
            let with = size + p.bytes + usize::from(count > 0);
            if with > budget || p.too_large.is_some() {
                break;
            }
            size = with;
            count += 1;
        }
        if count == 0 {
            let Some(first) = self.pending.front() else {
                return;
            };
            if let Some((bytes, limit)) = first.too_large {
                let seq = first.record.seq;
                self.stalled_at = Some(seq);
                self.report(now, AgentError::RowTooLarge { seq, bytes, limit });
                return;
            }
            // Larger than the budget but sendable: it goes alone.
            count = 1;
        }
        let records: Vec<UpRecord> = self
            .pending
            .iter()
            .take(count)
            .map(|p| p.record.clone())
            .collect();
        let seqs = match (records.first(), records.last()) {
            (Some(first), Some(last)) => Some((first.seq, last.seq)),
            _ => None,
        };
        self.send(now, records, seqs);
    }

    fn send(&mut self, now: Instant, records: Vec<UpRecord>, seqs: Option<(i64, i64)>) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let batch_last = seqs.map_or(self.floor, |(_, last)| last);
        if let Some((_, last)) = seqs {
            self.max_sent = self.max_sent.max(last);
        }
        let deadline = now + self.config.request_timeout;
        let rows = records.len();
        let batch = UpBatch {
            version: PROTOCOL_VERSION,
            box_id: self.config.box_id.clone(),
            epoch: self.config.epoch.clone(),
            firmware_version: self.config.firmware_version.clone(),
            backlog: u64::try_from(self.last_seq.saturating_sub(batch_last)).unwrap_or(0),
            oldest_pending_ms: self.pending.front().map(|p| p.record.created_at_ms),
            records,
        };
        self.in_flight = Some(InFlight {
            request,
            seqs,
            rows,
            sent_at: now,
            deadline,
        });
        self.last_sent = Some(now);
        self.heartbeat_now = false;
        self.transmits.push_back(UpTransmit {
            request,
            batch,
            deadline,
        });
    }
}

/// What is wrong with the rows of a read, if anything.
fn check_rows(after_seq: i64, max: usize, rows: &[UpRecord]) -> Option<String> {
    if rows.len() > max {
        return Some(format!("{} rows, {max} asked", rows.len()));
    }
    let mut previous = after_seq;
    for row in rows {
        if row.seq <= previous {
            return Some(format!("seq {} follows seq {previous}", row.seq));
        }
        previous = row.seq;
    }
    None
}
