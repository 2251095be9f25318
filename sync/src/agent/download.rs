//! [`Downloader`]: the site's change feed, down from HQ.
//!
//! # What the driver does
//!
//! At start the driver loads the cursor it stored last (0: never synced) and builds
//! the core with it. Then, after each input, it drains [`Downloader::poll_event`] and
//! [`Downloader::poll_transmit`] and sleeps until [`Downloader::timeout`] or its next
//! input:
//!
//! - [`DownTransmit`]: `GET` [`DOWN_PATH`](crate::wire::DOWN_PATH) with the query,
//!   client timeout at `deadline`; answer [`DownInput::Response`] or
//!   [`DownInput::Failed`] with the transmit's `request` id.
//! - [`DownEvent::Apply`]: in one SQLite transaction apply the changes (a page:
//!   upsert or delete each row in order; a snapshot: replace every row HQ masters
//!   with the snapshot's rows) and store `new_cursor`; then answer
//!   [`DownInput::Applied`] with the cursor, or [`DownInput::ApplyFailed`] if the
//!   transaction rolled back. Applying is idempotent (upserts and deletes by key), so
//!   a page fetched again after a crash between commit and `Applied` does no harm.
//! - [`DownEvent::Error`]: log it (the status keeps the last one).
//!
//! # Rules
//!
//! - One request at a time; the next query goes out as soon as the previous page is
//!   applied (a long poll: HQ holds it up to `wait_ms`). After an empty page the next
//!   query waits until [`DownloaderConfig::min_poll_interval`] after the previous one
//!   was sent, so an HQ that answers empty pages at once cannot make the box spin.
//! - A response is checked before anything is applied ([`check_response`]): the
//!   protocol version, a cursor that does not go backwards, changes strictly ascending
//!   and above `since`, no more than `limit`, every row's kind and key matching its
//!   change, snapshot rows unique and not deletes. A response that fails is
//!   [`AgentError::BadFeed`], applies nothing, and the query is retried after a
//!   backoff.
//! - Failures back off exponentially with full jitter; a refusal (4xx) waits
//!   [`Backoff::at_cap`]. An applied page resets the backoff.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffConfig};
use super::error::{AgentError, ConfigError, Exchange, Failure};
use super::upload::{range, RequestId};
use crate::wire::{
    Change, DownQuery, DownResponse, EntityKind, MAX_PAGE_CHANGES, MAX_WAIT_MS, PROTOCOL_VERSION,
};

/// Settings of a [`Downloader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloaderConfig {
    /// How long HQ may hold a query open, 0..=[`MAX_WAIT_MS`].
    pub wait_ms: u64,
    /// Most changes per page, 1..=[`MAX_PAGE_CHANGES`].
    pub limit: usize,
    /// How much longer than `wait_ms` a query may take before the core gives up.
    pub request_margin: Duration,
    /// Least time between two queries when the first brought nothing.
    pub min_poll_interval: Duration,
    /// Retry waits.
    pub backoff: BackoffConfig,
}

impl Default for DownloaderConfig {
    /// Long polls of 25 s, pages of up to 1000 changes, 15 s margin, at least 1 s
    /// between empty polls, backoff 1 s to 5 min.
    fn default() -> Self {
        Self {
            wait_ms: 25_000,
            limit: MAX_PAGE_CHANGES,
            request_margin: Duration::from_secs(15),
            min_poll_interval: Duration::from_secs(1),
            backoff: BackoffConfig::default(),
        }
    }
}

impl DownloaderConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        const DAY_MS: u64 = 86_400_000;
        range("wait_ms", self.wait_ms, 0, MAX_WAIT_MS)?;
        range("limit", self.limit as u64, 1, MAX_PAGE_CHANGES as u64)?;
        range("request_margin_ms", ms(self.request_margin), 100, DAY_MS)?;
        range(
            "min_poll_interval_ms",
            ms(self.min_poll_interval),
            0,
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

/// Inputs of the [`Downloader`].
#[derive(Debug, Clone, PartialEq)]
pub enum DownInput {
    /// HQ answered a query with 2xx and this body.
    Response {
        /// The request answered.
        request: RequestId,
        /// The body.
        response: DownResponse,
    },
    /// A query failed.
    Failed {
        /// The request that failed.
        request: RequestId,
        /// How.
        failure: Failure,
    },
    /// The driver committed the last [`DownEvent::Apply`] together with this cursor.
    Applied {
        /// The cursor stored (the `new_cursor` of the apply).
        cursor: i64,
    },
    /// The driver's transaction for the last [`DownEvent::Apply`] rolled back.
    ApplyFailed {
        /// What the store reported.
        detail: String,
    },
    /// Sync now: cancel a pending backoff and query at once (no effect while a query
    /// is open: it already answers as soon as something changes).
    Force,
}

/// A query for the driver to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownTransmit {
    /// Quote this in [`DownInput::Response`] / [`DownInput::Failed`].
    pub request: RequestId,
    /// The query string of the `GET`.
    pub query: DownQuery,
    /// When the core gives up on the request.
    pub deadline: Instant,
}

/// What one [`DownEvent::Apply`] replaces.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedUpdate {
    /// Apply these changes in order (upsert, or delete where `row` is `None`).
    Page(Vec<Change>),
    /// Replace every row HQ masters with these.
    Snapshot(Vec<Change>),
}

/// Outputs of the [`Downloader`].
#[derive(Debug, Clone, PartialEq)]
pub enum DownEvent {
    /// Apply `update` and store `new_cursor` in one transaction, then answer
    /// [`DownInput::Applied`].
    Apply {
        /// The changes.
        update: FeedUpdate,
        /// The cursor the query was based on.
        since: i64,
        /// The cursor to store with them.
        new_cursor: i64,
    },
    /// Something went wrong; the core has already scheduled what comes next.
    Error(AgentError),
}

/// The downloader's part of the sync status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DownStatus {
    /// The last revision applied.
    pub cursor: i64,
    /// A query is open (since when).
    pub in_flight: Option<Instant>,
    /// A page is being applied by the driver.
    pub applying: bool,
    /// When a page or snapshot was last applied.
    pub last_success: Option<Instant>,
    /// The last error and when it happened.
    pub last_error: Option<(Instant, AgentError)>,
    /// When the core will try again after a failure (None: not backing off).
    pub next_attempt: Option<Instant>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last snapshot was applied.
    pub last_snapshot: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting to send the next query, not before `ready_at` (None: at once).
    Idle { ready_at: Option<Instant> },
    /// A query is open.
    InFlight {
        request: RequestId,
        query: DownQuery,
        sent_at: Instant,
        deadline: Instant,
    },
    /// The driver is applying a page.
    Applying {
        new_cursor: i64,
        /// Ask again at once.
        more: bool,
        /// The page brought nothing.
        empty: bool,
        snapshot: bool,
        sent_at: Instant,
    },
}

/// The change-feed core. See the [module docs](self).
#[derive(Debug)]
pub struct Downloader {
    config: DownloaderConfig,
    backoff: Backoff,
    cursor: i64,
    state: State,
    next_request: u64,
    /// The next attempt is a retry after a failure.
    backing_off: bool,
    last_success: Option<Instant>,
    last_error: Option<(Instant, AgentError)>,
    last_snapshot: Option<Instant>,
    events: VecDeque<DownEvent>,
    transmits: VecDeque<DownTransmit>,
}

impl Downloader {
    /// A core continuing from `cursor` (the revision the store holds; 0: never
    /// synced); `seed` drives the backoff jitter.
    pub fn new(
        config: DownloaderConfig,
        cursor: i64,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if cursor < 0 {
            return Err(ConfigError::NegativeCursor { cursor });
        }
        let mut downloader = Self {
            backoff: Backoff::new(config.backoff, seed),
            config,
            cursor,
            state: State::Idle { ready_at: None },
            next_request: 0,
            backing_off: false,
            last_success: None,
            last_error: None,
            last_snapshot: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        };
        downloader.drive(now);
        Ok(downloader)
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: DownInput) {
        match input {
            DownInput::Response { request, response } => self.on_response(now, request, response),
            DownInput::Failed { request, failure } => {
                if let State::InFlight {
                    request: current,
                    sent_at,
                    ..
                } = self.state
                {
                    if current == request {
                        let transient = failure.is_transient();
                        let error = failure.into_error(Exchange::Down, now - sent_at, None);
                        self.fail(now, error, !transient);
                    }
                }
            }
            DownInput::Applied { cursor } => {
                if let State::Applying {
                    new_cursor,
                    more,
                    empty,
                    snapshot,
                    sent_at,
                } = self.state
                {
                    if cursor == new_cursor {
                        self.cursor = new_cursor;
                        self.backoff.succeed();
                        self.backing_off = false;
                        self.last_success = Some(now);
                        if snapshot {
                            self.last_snapshot = Some(now);
                        }
                        let ready_at =
                            (empty && !more).then(|| sent_at + self.config.min_poll_interval);
                        self.state = State::Idle { ready_at };
                    } else {
                        let error = AgentError::ApplyFailed {
                            cursor: new_cursor,
                            detail: format!("the driver stored cursor {cursor}, not {new_cursor}"),
                        };
                        self.fail(now, error, false);
                    }
                }
            }
            DownInput::ApplyFailed { detail } => {
                if let State::Applying { new_cursor, .. } = self.state {
                    let error = AgentError::ApplyFailed {
                        cursor: new_cursor,
                        detail,
                    };
                    self.fail(now, error, false);
                }
            }
            DownInput::Force => {
                if let State::Idle { .. } = self.state {
                    self.state = State::Idle { ready_at: None };
                    self.backing_off = false;
                }
            }
        }
        self.drive(now);
    }

    /// Advances the clock to `now`: times out a query or ends a wait, as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::InFlight {
            deadline, sent_at, ..
        } = self.state
        {
            if now >= deadline {
                let error = Failure::Timeout.into_error(Exchange::Down, now - sent_at, None);
                self.fail(now, error, false);
            }
        }
        self.drive(now);
    }

    /// When [`Downloader::handle_timeout`] should run next (None: only an input can
    /// move the core).
    pub fn timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle { ready_at } => ready_at,
            State::InFlight { deadline, .. } => Some(deadline),
            State::Applying { .. } => None,
        }
    }

    /// The next query to send.
    pub fn poll_transmit(&mut self) -> Option<DownTransmit> {
        self.transmits.pop_front()
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<DownEvent> {
        self.events.pop_front()
    }

    /// The cursor: the last revision the driver confirmed applied.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// The downloader's status now.
    pub fn status(&self) -> DownStatus {
        DownStatus {
            cursor: self.cursor,
            in_flight: match self.state {
                State::InFlight { sent_at, .. } => Some(sent_at),
                _ => None,
            },
            applying: matches!(self.state, State::Applying { .. }),
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            next_attempt: match self.state {
                State::Idle { ready_at } if self.backing_off => ready_at,
                _ => None,
            },
            consecutive_failures: self.backoff.failures(),
            last_snapshot: self.last_snapshot,
        }
    }

    fn fail(&mut self, now: Instant, error: AgentError, at_cap: bool) {
        self.last_error = Some((now, error.clone()));
        self.events.push_back(DownEvent::Error(error));
        let ready_at = if at_cap {
            self.backoff.at_cap(now)
        } else {
            self.backoff.fail(now)
        };
        self.backing_off = true;
        self.state = State::Idle {
            ready_at: Some(ready_at),
        };
    }

    fn on_response(&mut self, now: Instant, request: RequestId, response: DownResponse) {
        let State::InFlight {
            request: current,
            query,
            sent_at,
            ..
        } = self.state
        else {
            return;
        };
        if current != request {
            return;
        }
        match check_response(&query, response) {
            Ok(checked) => {
                let (update, new_cursor, more, snapshot) = match checked {
                    Checked::Page {
                        changes,
                        cursor,
                        more,
                    } => (FeedUpdate::Page(changes), cursor, more, false),
                    Checked::Snapshot { rows, cursor } => {
                        (FeedUpdate::Snapshot(rows), cursor, false, true)
                    }
                };
                let empty = matches!(&update, FeedUpdate::Page(c) if c.is_empty());
                self.state = State::Applying {
                    new_cursor,
                    more,
                    empty,
                    snapshot,
                    sent_at,
                };
                self.events.push_back(DownEvent::Apply {
                    update,
                    since: query.since,
                    new_cursor,
                });
            }
            Err(error) => {
                let at_cap = matches!(error, AgentError::VersionMismatch { .. });
                self.fail(now, error, at_cap);
            }
        }
    }

    fn drive(&mut self, now: Instant) {
        let State::Idle { ready_at } = self.state else {
            return;
        };
        if ready_at.is_some_and(|at| now < at) {
            return;
        }
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let query = DownQuery {
            since: self.cursor,
            wait_ms: self.config.wait_ms,
            limit: self.config.limit,
        };
        let deadline =
            now + Duration::from_millis(self.config.wait_ms) + self.config.request_margin;
        self.state = State::InFlight {
            request,
            query,
            sent_at: now,
            deadline,
        };
        self.transmits.push_back(DownTransmit {
            request,
            query,
            deadline,
        });
    }
}

/// A response that passed [`check_response`].
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// A page to apply in order.
    Page {
        /// The changes, ascending, all above `since`.
        changes: Vec<Change>,
        /// The cursor to store.
        cursor: i64,
        /// Ask again at once.
        more: bool,
    },
    /// A snapshot to apply whole.
    Snapshot {
        /// The rows, unique by (kind, key).
        rows: Vec<Change>,
        /// The cursor to store.
        cursor: i64,
    },
}

/// Checks `response` to `query` against the protocol before anything is applied.
pub fn check_response(query: &DownQuery, response: DownResponse) -> Result<Checked, AgentError> {
    let since = query.since;
    let bad = |problem: String| AgentError::BadFeed { since, problem };
    let version = match &response {
        DownResponse::Page { version, .. } | DownResponse::Snapshot { version, .. } => *version,
    };
    if version != PROTOCOL_VERSION {
        return Err(AgentError::VersionMismatch {
            request: Exchange::Down,
            got: version,
            want: PROTOCOL_VERSION,
        });
    }
    match response {
        DownResponse::Page {
            changes,
            cursor,
            more,
            ..
        } => {
            if cursor < since {
                return Err(bad(format!(
                    "page cursor {cursor} goes back from since {since}"
                )));
            }
            if changes.len() > query.limit {
                return Err(bad(format!(
                    "{} changes, limit {}",
                    changes.len(),
                    query.limit
                )));
            }
            let mut previous = since;
            for change in &changes {
                if change.revision <= previous {
                    return Err(bad(format!(
                        "change {} {:?} at revision {} does not follow revision {previous}",
                        change.key, change.entity, change.revision
                    )));
                }
                previous = change.revision;
                check_row(change).map_err(&bad)?;
            }
            if cursor < previous {
                return Err(bad(format!(
                    "page cursor {cursor} is below its last change at revision {previous}"
                )));
            }
            if more && changes.is_empty() && cursor == since {
                return Err(bad("an empty page that says more are waiting".into()));
            }
            Ok(Checked::Page {
                changes,
                cursor,
                more,
            })
        }
        DownResponse::Snapshot { rows, cursor, .. } => {
            if cursor < since {
                return Err(bad(format!(
                    "snapshot cursor {cursor} goes back from since {since}"
                )));
            }
            let mut seen: HashSet<(EntityKind, &str)> = HashSet::with_capacity(rows.len());
            for change in &rows {
                if change.row.is_none() {
                    return Err(bad(format!(
                        "snapshot deletes {:?} {}",
                        change.entity, change.key
                    )));
                }
                if change.revision > cursor || change.revision < 0 {
                    return Err(bad(format!(
                        "snapshot row {:?} {} at revision {} outside 0..={cursor}",
                        change.entity, change.key, change.revision
                    )));
                }
                check_row(change).map_err(&bad)?;
                if !seen.insert((change.entity, change.key.as_str())) {
                    return Err(bad(format!(
                        "snapshot holds {:?} {} twice",
                        change.entity, change.key
                    )));
                }
            }
            drop(seen);
            Ok(Checked::Snapshot { rows, cursor })
        }
    }
}

/// A change's row must be of the change's kind and carry the change's key.
fn check_row(change: &Change) -> Result<(), String> {
    match &change.row {
        Some(row) if row.kind() != change.entity || row.key() != change.key => Err(format!(
            "change at revision {} names {:?} {} but carries {:?} {}",
            change.revision,
            change.entity,
            change.key,
            row.kind(),
            row.key()
        )),
        _ => Ok(()),
    }
}
