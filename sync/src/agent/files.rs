//! [`FileUploader`]: recording files, up to HQ in resumable chunks.
//!
//! # The protocol it drives
//!
//! A recording's metadata goes up first, in the outbox (a
//! [`RecordKind::Recording`](crate::wire::RecordKind::Recording) row). Once HQ has
//! acknowledged that row, the file may follow, if HQ's [`FilePolicy`] wants it:
//! `GET` [`FILES_PATH`](crate::wire::FILES_PATH)`/{sha256}` answers how many bytes HQ
//! holds ([`FileStatus::received`]); `PUT ...?offset=N` appends one chunk at exactly
//! that offset (409 when HQ holds another length); HQ hashes the file when its last
//! byte arrives and keeps it only if the sha256 matches (otherwise it discards what it
//! held and answers 422).
//!
//! # What the driver does
//!
//! The driver (the firmware's file task) owns the store, the files on disk and the
//! HTTP client; the core owns every decision. After each [`FileUploader::handle`] or
//! [`FileUploader::handle_timeout`] the driver drains [`FileUploader::poll_event`] and
//! [`FileUploader::poll_transmit`] and sleeps until [`FileUploader::timeout`] or its
//! next input:
//!
//! - Tell the core which files are waiting: [`FileInput::Pending`] with every
//!   recording not yet uploaded **whose metadata HQ has acknowledged** (outbox seq at or
//!   below the acknowledged seq: files go after their metadata), oldest first, whenever
//!   that list may have changed (after an acknowledgement, after a recording was
//!   registered). Tell it HQ's policy ([`FileInput::Policy`], from each acknowledgement).
//! - [`FileTransmit::Status`]: check the local file (present, of its size and sha256)
//!   and `GET` its status; answer [`FileInput::Answered`] or [`FileInput::Failed`] (or
//!   [`FileInput::Unreadable`] when the local file is not what was registered).
//! - [`FileTransmit::Chunk`]: read `len` bytes at `offset` of the file and `PUT` them;
//!   answer the same way. A file that vanished or changed is [`FileInput::Unreadable`].
//! - [`FileEvent::Done`]: mark the recording uploaded in the store.
//! - [`FileEvent::Error`]: log it and record it on the recording (when it names one).
//! - [`FileEvent::Resuming`]: for the log (where an upload starts: 0, or where an
//!   interrupted one stopped).
//!
//! # Rules
//!
//! - Nothing goes up before HQ's policy is known; [`FilePolicy::None`] sends nothing,
//!   [`FilePolicy::OnDemand`] only the listed files, [`FilePolicy::All`] every pending
//!   file, oldest first, one file at a time and one request in flight.
//! - Every upload starts (and every interruption resumes) with a status request, and
//!   continues from HQ's `received`, never from where the box thinks it was.
//! - Chunks are at most [`FileUploaderConfig::chunk_bytes`] (≤ [`MAX_FILE_CHUNK`]); with
//!   a bandwidth cap, also at most one second's worth of the cap (at least
//!   [`MIN_CAPPED_CHUNK`]), so the cap is smooth rather than one burst per chunk. A
//!   chunk that times out halves the chunk size (a slow link may not carry a whole
//!   chunk within the request timeout, and HQ keeps nothing of a cut-off chunk);
//!   [`GROW_AFTER`] accepted chunks in a row double it back.
//! - The cap is a token bucket over chunk bytes that holds no credit (a "virtual
//!   scheduling" bucket): a chunk of `n` bytes moves the earliest time of the next one
//!   `n / cap` seconds on. Over any window of `T` seconds at most `cap * T` plus one
//!   chunk go out. Status requests are not counted (a few hundred bytes).
//! - Transport failures, timeouts, 5xx/408/429 and `unavailable` back off
//!   exponentially with full jitter ([`Backoff`]) for every file, then resume with a
//!   status request. A refusal that is about the box (unknown box, forbidden,
//!   unsupported version) waits [`Backoff::at_cap`].
//! - A 409 (HQ holds another offset, or another upload of the file is running) asks
//!   for the status again: at once the first time, after a backoff when it repeats.
//! - A refusal of one file (422: its sha256 did not match at HQ, or a chunk past its
//!   size; 404: HQ has no metadata for it; any other 4xx), an answer that says HQ
//!   holds the whole file but it is not complete (the hash did not match), and a local
//!   file the driver cannot read are **errors of that file**: it is reported and set
//!   aside for [`FileUploaderConfig::file_retry`] (jittered between half and all of
//!   it), while the other files go on. It is never retried in a tight loop, never
//!   dropped: the recording stays pending until it is uploaded or an operator acts.
//! - [`FileInput::Force`] ends every wait (backoff and set-aside files).
//! - Answers to requests the core no longer waits for (after their deadline) are
//!   ignored; the next status request learns what they did.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::backoff::{Backoff, BackoffConfig};
use super::error::{ConfigError, Failure};
use super::upload::{range, RequestId};
use super::ErrorReport;
use crate::wire::{ErrorBody, ErrorCode, FilePolicy, FileStatus, MAX_FILE_CHUNK};

/// Accepted chunks in a row after which a chunk size halved by a timeout doubles again.
pub const GROW_AFTER: u32 = 4;

/// The smallest chunk the bandwidth cap (or a timeout) shrinks chunks to (a smaller chunk would cost
/// more in request overhead than it saves in smoothness).
pub const MIN_CAPPED_CHUNK: usize = 4096;

/// Settings of a [`FileUploader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileUploaderConfig {
    /// Largest chunk, 1..=[`MAX_FILE_CHUNK`] bytes.
    pub chunk_bytes: usize,
    /// Bandwidth cap over chunk bytes, bytes per second; 0 = unlimited.
    pub bandwidth_bytes_per_sec: u64,
    /// How long a request may take before the core gives up on it.
    pub request_timeout: Duration,
    /// Retry waits after failures that are not about one file.
    pub backoff: BackoffConfig,
    /// How long a file that failed by itself is set aside (jittered between half and
    /// all of it).
    pub file_retry: Duration,
}

impl Default for FileUploaderConfig {
    /// 1 MiB chunks, no cap, 30 s request timeout, backoff 1 s to 5 min, a failed
    /// file set aside for 5 to 10 minutes.
    fn default() -> Self {
        Self {
            chunk_bytes: MAX_FILE_CHUNK,
            bandwidth_bytes_per_sec: 0,
            request_timeout: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            file_retry: Duration::from_secs(600),
        }
    }
}

impl FileUploaderConfig {
    /// Bytes per second of a cap of `kbps` kilobits (1000 bits) per second.
    pub fn bytes_per_sec_of_kbps(kbps: u64) -> u64 {
        kbps.saturating_mul(1000) / 8
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        const DAY_MS: u64 = 86_400_000;
        range(
            "chunk_bytes",
            self.chunk_bytes as u64,
            1,
            MAX_FILE_CHUNK as u64,
        )?;
        range(
            "bandwidth_bytes_per_sec",
            self.bandwidth_bytes_per_sec,
            0,
            u64::MAX / 2,
        )?;
        range("request_timeout_ms", ms(self.request_timeout), 100, DAY_MS)?;
        range("backoff_base_ms", ms(self.backoff.base), 1, DAY_MS)?;
        range(
            "backoff_cap_ms",
            ms(self.backoff.cap),
            ms(self.backoff.base),
            DAY_MS,
        )?;
        range("file_retry_ms", ms(self.file_retry), 1, DAY_MS)?;
        Ok(())
    }

    /// The largest chunk to send: [`FileUploaderConfig::chunk_bytes`], and with a cap
    /// at most one second of it (at least [`MIN_CAPPED_CHUNK`]).
    pub fn effective_chunk(&self) -> usize {
        if self.bandwidth_bytes_per_sec == 0 {
            return self.chunk_bytes;
        }
        let per_sec = usize::try_from(self.bandwidth_bytes_per_sec).unwrap_or(usize::MAX);
        self.chunk_bytes.min(per_sec.max(MIN_CAPPED_CHUNK))
    }
}

/// A recording waiting for upload, as the driver lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFile {
    /// The driver's id of the recording (its store row); the driver finds the file by it.
    pub id: i64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Inputs of the [`FileUploader`].
#[derive(Debug, Clone, PartialEq)]
pub enum FileInput {
    /// Every recording not yet uploaded whose metadata HQ acknowledged, oldest first.
    /// Replaces the previous list.
    Pending(Vec<PendingFile>),
    /// HQ's policy (from an acknowledgement, or as stored at start).
    Policy(FilePolicy),
    /// HQ answered a status or chunk request with 2xx and this status.
    Answered {
        /// The request answered.
        request: RequestId,
        /// HQ's answer.
        status: FileStatus,
    },
    /// A request failed.
    Failed {
        /// The request that failed.
        request: RequestId,
        /// How.
        failure: Failure,
    },
    /// The driver could not carry out a request because the local file is missing,
    /// unreadable, or not the size or sha256 registered.
    Unreadable {
        /// The request not sent.
        request: RequestId,
        /// What the driver found.
        detail: String,
    },
    /// Upload now: end every backoff and every set-aside file's wait.
    Force,
}

/// A request for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTransmit {
    /// `GET {FILES_PATH}/{sha256}`.
    Status {
        /// Quote this in the answer.
        request: RequestId,
        /// The recording.
        id: i64,
        /// Its sha256.
        sha256: String,
        /// Its size, for the driver's local check.
        size: u64,
        /// When the core gives up on the request.
        deadline: Instant,
    },
    /// `PUT {FILES_PATH}/{sha256}?offset={offset}` with bytes `offset..offset+len` of
    /// the file as the body.
    Chunk {
        /// Quote this in the answer.
        request: RequestId,
        /// The recording.
        id: i64,
        /// Its sha256.
        sha256: String,
        /// Its size, for the driver's local check.
        size: u64,
        /// Where the chunk starts.
        offset: u64,
        /// How many bytes (0 only for an empty file).
        len: usize,
        /// When the core gives up on the request.
        deadline: Instant,
    },
}

impl FileTransmit {
    /// The request id.
    pub fn request(&self) -> RequestId {
        match self {
            Self::Status { request, .. } | Self::Chunk { request, .. } => *request,
        }
    }
}

/// Outputs of the [`FileUploader`] other than requests, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum FileEvent {
    /// HQ holds the whole file, verified: mark the recording uploaded.
    Done {
        /// The recording.
        id: i64,
        /// Its sha256.
        sha256: String,
        /// Its size.
        size: u64,
    },
    /// An upload starts or resumes at `offset` (HQ's `received`).
    Resuming {
        /// The recording.
        id: i64,
        /// Its sha256.
        sha256: String,
        /// Where the next chunk starts.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// Something went wrong; the core has already scheduled what comes next.
    Error(FileError),
}

/// What went wrong with a file upload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    /// The request did not reach HQ or its answer did not come back.
    #[error("recording {sha256}: request failed in transport: {detail}")]
    Transport {
        /// The file.
        sha256: String,
        /// What the HTTP client reported.
        detail: String,
    },
    /// No answer within the request's deadline.
    #[error("recording {sha256}: request timed out after {after:?}")]
    Timeout {
        /// The file.
        sha256: String,
        /// How long the core waited.
        after: Duration,
    },
    /// HQ answered with an error that retrying later can fix (5xx, 408, 429,
    /// `unavailable`), or a 2xx body that did not parse.
    #[error("recording {sha256}: HQ answered {status}{}", describe(body))]
    Server {
        /// The file.
        sha256: String,
        /// HTTP status (0: a 2xx body that did not parse).
        status: u16,
        /// HQ's error body, if any.
        body: Option<ErrorBody>,
    },
    /// HQ holds a different length than the chunk's offset (409): the core asks again.
    #[error(
        "recording {sha256}: HQ refused the chunk at offset {offset}{}: asking where to resume",
        describe(body)
    )]
    OffsetConflict {
        /// The file.
        sha256: String,
        /// The chunk's offset.
        offset: u64,
        /// HQ's error body, if any.
        body: Option<ErrorBody>,
    },
    /// HQ refused the box itself (unknown box, forbidden, unsupported version).
    #[error(
        "recording {sha256}: HQ refused the box with {status}{}",
        describe(body)
    )]
    BoxRefused {
        /// The file.
        sha256: String,
        /// HTTP status.
        status: u16,
        /// HQ's error body.
        body: Option<ErrorBody>,
    },
    /// HQ refused this file (422: sha256 mismatch or a chunk past its size; 404: no
    /// metadata; another 4xx): it is set aside.
    #[error(
        "recording {sha256}: HQ refused it with {status}{}; retried later",
        describe(body)
    )]
    FileRefused {
        /// The file.
        sha256: String,
        /// HTTP status.
        status: u16,
        /// HQ's error body.
        body: Option<ErrorBody>,
    },
    /// HQ holds all of the file's bytes but did not accept it (its sha256 did not
    /// match): set aside.
    #[error("recording {sha256}: HQ received all {size} bytes but the sha256 did not match; retried later")]
    HashMismatch {
        /// The file.
        sha256: String,
        /// Its size.
        size: u64,
    },
    /// HQ's status names another file.
    #[error("recording {sha256}: HQ answered the status of {got}")]
    WrongFile {
        /// The file asked for.
        sha256: String,
        /// The file HQ answered for.
        got: String,
    },
    /// HQ says it holds more bytes than the file has: set aside.
    #[error("recording {sha256}: HQ holds {received} bytes of a {size}-byte file")]
    HqHoldsMore {
        /// The file.
        sha256: String,
        /// What HQ reports.
        received: u64,
        /// The file's size.
        size: u64,
    },
    /// A chunk was accepted but HQ's offset did not move on.
    #[error(
        "recording {sha256}: chunk at {offset} accepted but HQ holds {received} bytes: no progress"
    )]
    NoProgress {
        /// The file.
        sha256: String,
        /// The chunk's offset.
        offset: u64,
        /// What HQ reports.
        received: u64,
    },
    /// The local file is missing or not what was registered: set aside, row kept.
    #[error("recording {sha256}: local file problem: {detail}")]
    Local {
        /// The file.
        sha256: String,
        /// What the driver found.
        detail: String,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn sha256(&self) -> &str {
        match self {
            Self::Transport { sha256, .. }
            | Self::Timeout { sha256, .. }
            | Self::Server { sha256, .. }
            | Self::OffsetConflict { sha256, .. }
            | Self::BoxRefused { sha256, .. }
            | Self::FileRefused { sha256, .. }
            | Self::HashMismatch { sha256, .. }
            | Self::WrongFile { sha256, .. }
            | Self::HqHoldsMore { sha256, .. }
            | Self::NoProgress { sha256, .. }
            | Self::Local { sha256, .. } => sha256,
        }
    }

    /// Whether the error is about the file itself (it is set aside) rather than HQ or
    /// the network (every file waits).
    pub fn is_file_error(&self) -> bool {
        matches!(
            self,
            Self::FileRefused { .. }
                | Self::HashMismatch { .. }
                | Self::HqHoldsMore { .. }
                | Self::Local { .. }
        )
    }
}

fn describe(body: &Option<ErrorBody>) -> String {
    match body {
        Some(body) => format!(" ({:?}: {})", body.code, body.message),
        None => String::new(),
    }
}

/// The upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentUpload {
    /// The recording.
    pub id: i64,
    /// Its sha256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Bytes HQ holds, as last reported (None: not asked yet).
    pub offset: Option<u64>,
}

/// The file uploader's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilesStatus {
    /// HQ's policy (None: not known yet, nothing is sent).
    pub policy: Option<FilePolicy>,
    /// Files the driver listed that are not done.
    pub pending: usize,
    /// Of them, those the policy wants.
    pub wanted: usize,
    /// Bytes of the wanted files HQ does not hold yet (as far as the core knows).
    pub wanted_bytes: u64,
    /// Wanted files set aside after an error of their own.
    pub set_aside: usize,
    /// The upload in progress.
    pub current: Option<CurrentUpload>,
    /// A request is in flight.
    pub in_flight: bool,
    /// Chunk bytes HQ accepted since the core started.
    pub bytes_sent: u64,
    /// Files completed since the core started.
    pub files_done: u64,
    /// When HQ last accepted a chunk or confirmed a file.
    pub last_success: Option<Instant>,
    /// The last error and when it happened.
    pub last_error: Option<(Instant, FileError)>,
    /// When the core tries again after a failure (None: not backing off).
    pub next_attempt: Option<Instant>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

impl FilesStatus {
    /// The status as JSON-ready wall-clock times: `now` is the core's clock and
    /// `wall_now_ms` the same moment in ms since the Unix epoch.
    pub fn report(&self, now: Instant, wall_now_ms: i64) -> FilesReport {
        let wall = |at: Instant| super::to_wall(now, wall_now_ms, at);
        FilesReport {
            policy: self.policy.clone(),
            pending: self.pending,
            wanted: self.wanted,
            wanted_bytes: self.wanted_bytes,
            set_aside: self.set_aside,
            current: self.current.clone(),
            in_flight: self.in_flight,
            bytes_sent: self.bytes_sent,
            files_done: self.files_done,
            last_success_ms: self.last_success.map(wall),
            last_error: self.last_error.as_ref().map(|(at, e)| ErrorReport {
                at_ms: wall(*at),
                message: e.to_string(),
            }),
            next_attempt_ms: self.next_attempt.map(wall),
            failures: self.consecutive_failures,
        }
    }
}

/// [`FilesStatus`] in wall-clock ms, for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesReport {
    /// HQ's policy (`null`: not known yet).
    pub policy: Option<FilePolicy>,
    /// Files waiting (metadata acknowledged, not uploaded).
    pub pending: usize,
    /// Of them, those HQ's policy wants.
    pub wanted: usize,
    /// Bytes of the wanted files HQ does not hold yet.
    pub wanted_bytes: u64,
    /// Wanted files set aside after an error of their own.
    pub set_aside: usize,
    /// The upload in progress.
    pub current: Option<CurrentUpload>,
    /// A request is in flight.
    pub in_flight: bool,
    /// Chunk bytes HQ accepted since the daemon started.
    pub bytes_sent: u64,
    /// Files completed since the daemon started.
    pub files_done: u64,
    /// When HQ last accepted a chunk or confirmed a file.
    pub last_success_ms: Option<i64>,
    /// The last error.
    pub last_error: Option<ErrorReport>,
    /// When the next attempt is due after a failure.
    pub next_attempt_ms: Option<i64>,
    /// Failures since the last success.
    pub failures: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    sha256: String,
    size: u64,
    /// Set aside until then after an error of its own.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Ask HQ how much it holds.
    AskStatus,
    /// Send the chunk at this offset.
    Send(u64),
}

#[derive(Debug, Clone)]
struct Active {
    id: i64,
    sha256: String,
    size: u64,
    step: Step,
    /// HQ's last reported `received`.
    known: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Status,
    Chunk { offset: u64, len: usize },
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    request: RequestId,
    id: i64,
    kind: Kind,
    sent_at: Instant,
    deadline: Instant,
}

/// The recording-file uploader core. See the [module docs](self).
#[derive(Debug)]
pub struct FileUploader {
    config: FileUploaderConfig,
    backoff: Backoff,
    /// Jitter of set-aside waits: `at_cap` of a backoff whose cap is `file_retry`.
    file_backoff: Backoff,
    policy: Option<FilePolicy>,
    /// The wanted set of an on-demand policy.
    wanted: HashSet<String>,
    /// Pending files by id (oldest first).
    pending: BTreeMap<i64, Entry>,
    /// Ids completed in this life that the driver may still list (its list was read
    /// before it marked them): not uploaded again.
    done: BTreeSet<i64>,
    active: Option<Active>,
    in_flight: Option<InFlight>,
    next_request: u64,
    /// Every file waits until then after a failure.
    retry_at: Option<Instant>,
    /// The bandwidth cap: no chunk before this.
    rate_ready_at: Option<Instant>,
    /// The chunk size now: halved after a chunk timed out (a link slower than the
    /// request timeout allows for a full chunk), doubled back after
    /// [`GROW_AFTER`] accepted ones.
    chunk_limit: usize,
    /// Chunks accepted at `chunk_limit` since it last changed.
    chunk_streak: u32,
    /// 409s in a row.
    conflicts: u32,
    bytes_sent: u64,
    files_done: u64,
    last_success: Option<Instant>,
    last_error: Option<(Instant, FileError)>,
    events: VecDeque<FileEvent>,
    transmits: VecDeque<FileTransmit>,
}

impl FileUploader {
    /// A core with no files and no policy yet; `seed` drives the jitter (give each box
    /// a different one).
    pub fn new(config: FileUploaderConfig, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let chunk_limit = config.effective_chunk();
        Ok(Self {
            backoff: Backoff::new(config.backoff, seed),
            file_backoff: Backoff::new(
                BackoffConfig {
                    base: config.file_retry,
                    cap: config.file_retry,
                },
                seed.rotate_left(17) ^ 0x5eed,
            ),
            config,
            policy: None,
            wanted: HashSet::new(),
            pending: BTreeMap::new(),
            done: BTreeSet::new(),
            active: None,
            in_flight: None,
            next_request: 0,
            retry_at: None,
            rate_ready_at: None,
            chunk_limit,
            chunk_streak: 0,
            conflicts: 0,
            bytes_sent: 0,
            files_done: 0,
            last_success: None,
            last_error: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FileUploaderConfig {
        &self.config
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: FileInput) {
        match input {
            FileInput::Pending(files) => self.on_pending(files),
            FileInput::Policy(policy) => {
                self.wanted = match &policy {
                    FilePolicy::OnDemand { wanted } => wanted.iter().cloned().collect(),
                    FilePolicy::All | FilePolicy::None => HashSet::new(),
                };
                self.policy = Some(policy);
            }
            FileInput::Answered { request, status } => self.on_answer(now, request, status),
            FileInput::Failed { request, failure } => self.on_failure(now, request, failure),
            FileInput::Unreadable { request, detail } => {
                if let Some(flight) = self.take_flight(request) {
                    let sha256 = self.sha_of(flight.id);
                    self.set_aside(now, flight.id, FileError::Local { sha256, detail });
                }
            }
            FileInput::Force => {
                self.retry_at = None;
                for entry in self.pending.values_mut() {
                    entry.retry_at = None;
                }
            }
        }
        self.drive(now);
    }

    /// Advances the clock to `now`: times out a request, ends a wait, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(flight) = self.in_flight {
            if now >= flight.deadline {
                self.in_flight = None;
                self.chunk_timed_out(flight.kind);
                let sha256 = self.sha_of(flight.id);
                let after = now - flight.sent_at;
                self.fail(now, FileError::Timeout { sha256, after }, false);
            }
        }
        self.drive(now);
    }

    /// When [`FileUploader::handle_timeout`] should run next (None: only an input can
    /// move the core).
    pub fn timeout(&self) -> Option<Instant> {
        if let Some(flight) = self.in_flight {
            return Some(flight.deadline);
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        if let Some(active) = &self.active {
            return match active.step {
                Step::Send(_) => self.rate_ready_at,
                Step::AskStatus => None,
            };
        }
        // The earliest set-aside file the policy wants.
        self.pending
            .iter()
            .filter(|(id, e)| self.wants(**id, &e.sha256))
            .filter_map(|(_, e)| e.retry_at)
            .min()
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self) -> Option<FileTransmit> {
        self.transmits.pop_front()
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<FileEvent> {
        self.events.pop_front()
    }

    /// The status now.
    pub fn status(&self) -> FilesStatus {
        let wanted: Vec<(&i64, &Entry)> = self
            .pending
            .iter()
            .filter(|(id, e)| self.wants(**id, &e.sha256))
            .collect();
        let wanted_bytes = wanted
            .iter()
            .map(|(id, e)| match &self.active {
                Some(a) if a.id == **id => e.size.saturating_sub(a.known.unwrap_or(0)),
                _ => e.size,
            })
            .sum();
        FilesStatus {
            policy: self.policy.clone(),
            pending: self.pending.len(),
            wanted: wanted.len(),
            wanted_bytes,
            set_aside: wanted.iter().filter(|(_, e)| e.retry_at.is_some()).count(),
            current: self.active.as_ref().map(|a| CurrentUpload {
                id: a.id,
                sha256: a.sha256.clone(),
                size: a.size,
                offset: a.known,
            }),
            in_flight: self.in_flight.is_some(),
            bytes_sent: self.bytes_sent,
            files_done: self.files_done,
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            next_attempt: self.retry_at,
            consecutive_failures: self.backoff.failures(),
        }
    }

    fn wants(&self, id: i64, sha256: &str) -> bool {
        if self.done.contains(&id) {
            return false;
        }
        match &self.policy {
            None | Some(FilePolicy::None) => false,
            Some(FilePolicy::All) => true,
            Some(FilePolicy::OnDemand { .. }) => self.wanted.contains(sha256),
        }
    }

    fn sha_of(&self, id: i64) -> String {
        match (&self.active, self.pending.get(&id)) {
            (Some(a), _) if a.id == id => a.sha256.clone(),
            (_, Some(e)) => e.sha256.clone(),
            _ => String::new(),
        }
    }

    fn on_pending(&mut self, files: Vec<PendingFile>) {
        let listed: BTreeSet<i64> = files.iter().map(|f| f.id).collect();
        // Ids done in this life stay filtered only while the driver still lists them.
        self.done.retain(|id| listed.contains(id));
        let mut next = BTreeMap::new();
        for f in files {
            if self.done.contains(&f.id) {
                continue;
            }
            let retry_at = self
                .pending
                .get(&f.id)
                .filter(|e| e.sha256 == f.sha256 && e.size == f.size)
                .and_then(|e| e.retry_at);
            next.insert(
                f.id,
                Entry {
                    sha256: f.sha256,
                    size: f.size,
                    retry_at,
                },
            );
        }
        self.pending = next;
    }

    fn take_flight(&mut self, request: RequestId) -> Option<InFlight> {
        match self.in_flight {
            Some(f) if f.request == request => self.in_flight.take(),
            _ => None,
        }
    }

    fn on_answer(&mut self, now: Instant, request: RequestId, status: FileStatus) {
        let Some(flight) = self.take_flight(request) else {
            return;
        };
        let Some(active) = self.active.clone().filter(|a| a.id == flight.id) else {
            // The file left the list while the request was out: forget the answer.
            return;
        };
        let sha256 = active.sha256.clone();
        if status.sha256 != sha256 {
            let got = status.sha256;
            self.fail(now, FileError::WrongFile { sha256, got }, false);
            return;
        }
        if status.complete {
            if let Kind::Chunk { len, .. } = flight.kind {
                self.bytes_sent += len as u64;
            }
            self.succeed(now);
            self.active = None;
            self.pending.remove(&active.id);
            self.done.insert(active.id);
            self.files_done += 1;
            self.events.push_back(FileEvent::Done {
                id: active.id,
                sha256,
                size: active.size,
            });
            return;
        }
        let received = status.received;
        if received > active.size {
            let size = active.size;
            self.set_aside(
                now,
                active.id,
                FileError::HqHoldsMore {
                    sha256,
                    received,
                    size,
                },
            );
            return;
        }
        match flight.kind {
            Kind::Status => {
                // HQ may hold every byte without having verified them (it stopped
                // between the last write and the hash): the empty chunk at the end
                // makes it verify.
                self.succeed(now);
                self.events.push_back(FileEvent::Resuming {
                    id: active.id,
                    sha256,
                    offset: received,
                    size: active.size,
                });
                self.set_step(Step::Send(received), Some(received));
            }
            Kind::Chunk { offset, len } => {
                if received == active.size {
                    let size = active.size;
                    self.set_aside(now, active.id, FileError::HashMismatch { sha256, size });
                    return;
                }
                if received <= offset {
                    self.set_step(Step::AskStatus, Some(received));
                    self.fail(
                        now,
                        FileError::NoProgress {
                            sha256,
                            offset,
                            received,
                        },
                        false,
                    );
                    return;
                }
                self.bytes_sent += (received - offset).min(len as u64);
                self.conflicts = 0;
                self.chunk_streak = self.chunk_streak.saturating_add(1);
                if self.chunk_streak >= GROW_AFTER {
                    self.chunk_streak = 0;
                    self.chunk_limit = self
                        .chunk_limit
                        .saturating_mul(2)
                        .min(self.config.effective_chunk());
                }
                self.succeed(now);
                self.set_step(Step::Send(received), Some(received));
            }
        }
    }

    fn on_failure(&mut self, now: Instant, request: RequestId, failure: Failure) {
        let Some(flight) = self.take_flight(request) else {
            return;
        };
        let sha256 = self.sha_of(flight.id);
        if self.active.as_ref().is_some_and(|a| a.id == flight.id) {
            self.set_step(Step::AskStatus, None);
        }
        let transient = failure.is_transient();
        match failure {
            Failure::Transport { detail } => {
                self.fail(now, FileError::Transport { sha256, detail }, false)
            }
            Failure::Timeout => {
                self.chunk_timed_out(flight.kind);
                let after = now - flight.sent_at;
                self.fail(now, FileError::Timeout { sha256, after }, false)
            }
            Failure::BadResponse { detail } => self.fail(
                now,
                FileError::Server {
                    sha256,
                    status: 0,
                    body: Some(ErrorBody {
                        code: ErrorCode::Unavailable,
                        message: format!("unparseable answer: {detail}"),
                    }),
                },
                false,
            ),
            Failure::Status { status, body } if transient => self.fail(
                now,
                FileError::Server {
                    sha256,
                    status,
                    body,
                },
                false,
            ),
            Failure::Status { status: 409, body } => {
                let offset = match flight.kind {
                    Kind::Chunk { offset, .. } => offset,
                    Kind::Status => 0,
                };
                self.conflicts = self.conflicts.saturating_add(1);
                let error = FileError::OffsetConflict {
                    sha256,
                    offset,
                    body,
                };
                if self.conflicts > 1 {
                    self.fail(now, error, false);
                } else {
                    self.report(now, error);
                }
            }
            Failure::Status { status, body }
                if body.as_ref().is_some_and(|b| {
                    matches!(
                        b.code,
                        ErrorCode::UnknownBox
                            | ErrorCode::Forbidden
                            | ErrorCode::UnsupportedVersion
                    )
                }) =>
            {
                self.fail(
                    now,
                    FileError::BoxRefused {
                        sha256,
                        status,
                        body,
                    },
                    true,
                )
            }
            Failure::Status { status, body } => self.set_aside(
                now,
                flight.id,
                FileError::FileRefused {
                    sha256,
                    status,
                    body,
                },
            ),
        }
    }

    fn set_step(&mut self, step: Step, known: Option<u64>) {
        if let Some(active) = &mut self.active {
            active.step = step;
            if known.is_some() {
                active.known = known;
            }
        }
    }

    fn succeed(&mut self, now: Instant) {
        self.backoff.succeed();
        self.retry_at = None;
        self.last_success = Some(now);
    }

    fn report(&mut self, now: Instant, error: FileError) {
        self.last_error = Some((now, error.clone()));
        self.events.push_back(FileEvent::Error(error));
    }

    /// A failure every file waits for.
    fn fail(&mut self, now: Instant, error: FileError, at_cap: bool) {
        self.report(now, error);
        self.set_step(Step::AskStatus, None);
        self.retry_at = Some(if at_cap {
            self.backoff.at_cap(now)
        } else {
            self.backoff.fail(now)
        });
    }

    /// A failure of one file: it waits, the others go on.
    fn set_aside(&mut self, now: Instant, id: i64, error: FileError) {
        self.report(now, error);
        let until = self.file_backoff.at_cap(now);
        if let Some(entry) = self.pending.get_mut(&id) {
            entry.retry_at = Some(until);
        }
        if self.active.as_ref().is_some_and(|a| a.id == id) {
            self.active = None;
        }
    }

    fn next_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Starts whatever is due.
    fn drive(&mut self, now: Instant) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return;
            }
            self.retry_at = None;
        }
        for entry in self.pending.values_mut() {
            if entry.retry_at.is_some_and(|at| at <= now) {
                entry.retry_at = None;
            }
        }
        // The current file must still be listed, wanted and not set aside.
        if let Some(active) = &self.active {
            let keep = self.pending.get(&active.id).is_some_and(|e| {
                e.sha256 == active.sha256 && e.size == active.size && e.retry_at.is_none()
            }) && self.wants(active.id, &active.sha256);
            if !keep {
                self.active = None;
            }
        }
        if self.active.is_none() {
            let next = self
                .pending
                .iter()
                .find(|(id, e)| e.retry_at.is_none() && self.wants(**id, &e.sha256))
                .map(|(id, e)| Active {
                    id: *id,
                    sha256: e.sha256.clone(),
                    size: e.size,
                    step: Step::AskStatus,
                    known: None,
                });
            self.active = next;
        }
        let Some(active) = self.active.clone() else {
            return;
        };
        let deadline = now + self.config.request_timeout;
        match active.step {
            Step::AskStatus => {
                let request = self.next_request();
                self.in_flight = Some(InFlight {
                    request,
                    id: active.id,
                    kind: Kind::Status,
                    sent_at: now,
                    deadline,
                });
                self.transmits.push_back(FileTransmit::Status {
                    request,
                    id: active.id,
                    sha256: active.sha256,
                    size: active.size,
                    deadline,
                });
            }
            Step::Send(offset) => {
                if self.rate_ready_at.is_some_and(|at| now < at) {
                    return;
                }
                let request = self.next_request();
                let remaining = active.size.saturating_sub(offset);
                let len = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.chunk_limit);
                self.charge(now, len);
                self.in_flight = Some(InFlight {
                    request,
                    id: active.id,
                    kind: Kind::Chunk { offset, len },
                    sent_at: now,
                    deadline,
                });
                self.transmits.push_back(FileTransmit::Chunk {
                    request,
                    id: active.id,
                    sha256: active.sha256,
                    size: active.size,
                    offset,
                    len,
                    deadline,
                });
            }
        }
    }

    /// A chunk that timed out halves the chunk size (down to [`MIN_CAPPED_CHUNK`], or
    /// the configured size if smaller): a full chunk may not fit the request timeout
    /// on a slow link, and HQ keeps nothing of a chunk cut off.
    fn chunk_timed_out(&mut self, kind: Kind) {
        if let Kind::Chunk { len, .. } = kind {
            let floor = MIN_CAPPED_CHUNK.min(self.config.chunk_bytes);
            self.chunk_limit = (len / 2).max(floor);
            self.chunk_streak = 0;
        }
    }

    /// Takes `len` bytes from the bandwidth bucket.
    fn charge(&mut self, now: Instant, len: usize) {
        let rate = self.config.bandwidth_bytes_per_sec;
        if rate == 0 {
            return;
        }
        let nanos = (len as u128 * 1_000_000_000).div_ceil(u128::from(rate));
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let from = self.rate_ready_at.map_or(now, |at| at.max(now));
        self.rate_ready_at = Some(from + cost);
    }
}

#[cfg(test)]
#[path = "tests/files.rs"]
mod tests;
