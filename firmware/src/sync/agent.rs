//! The sync agent task: drives the sans-IO cores [`Uploader`] and [`Downloader`] of
//! `branchline_sync::agent` with the store and an HTTPS client.
//!
//! ```text
//!   outbox watch (writer thread) ──Appended──▶ Uploader ──NeedRows──▶ outbox page read (bounded)
//!   force (API) ───────────────────Force─────▶    │  └──UpTransmit──▶ POST /sync/v1/up (gzip) ─┐
//!                                                 ◀──Acked/Failed────────────────────────────────┘
//!                                                 └─Conflict/Trim/FilePolicy──▶ one transaction
//!   Downloader ──DownTransmit──▶ GET /sync/v1/down?since (long poll) ──Response──▶ Downloader
//!        └──Apply──▶ page/snapshot + cursor in one transaction ──Applied──▶ Downloader
//! ```
//!
//! One task runs both cores; HTTP requests run as tasks of their own and report back
//! over a channel, so an upload and a long poll are in flight at the same time.
//! Store reads (outbox pages) run on the blocking pool; store writes go through the
//! writer thread. Every HTTP exchange also tells the WAN monitor whether HQ answered
//! (any HTTP answer counts; a transport failure or timeout does not).
//!
//! Memory stays flat while a large backlog drains: the uploader holds at most two
//! batches of rows (the one in flight and the next, read ahead while HQ works on the
//! first; each within the row and byte bounds), and response bodies are read with a
//! size cap.
//!
//! A catch-up is a pipeline: while HQ ingests a batch, the next page of the outbox is
//! read (on the blocking pool, through one read connection kept for the drain), and
//! when HQ answers, the next batch is encoded (gzip on the blocking pool) and sent
//! before the acknowledged rows are trimmed, so the trim's transaction overlaps HQ's
//! work too. Still one batch in flight; the trim still follows HQ's answer.
//!
//! Limits: an outbox row larger than a batch may hold
//! ([`AgentError::RowTooLarge`]) stops uploads and shows in the status; the box's
//! payloads (CDRs, audit rows, account edits) are far below that size, so there is no
//! quarantine table yet.
//!
//! Recording files go up in a task of their own ([`super::files::FileTask`], started
//! and stopped by this one, sharing its HTTPS client): after each committed
//! acknowledgement this task wakes it to read the acknowledged seq and HQ's policy,
//! and a forced sync forces it too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use branchline_sync::agent::{
    encode_batch, AgentError, BackoffConfig, DownEvent, DownInput, DownTransmit, Downloader,
    DownloaderConfig, Failure, FeedUpdate, SyncStatus, UpEvent, UpInput, UpTransmit, Uploader,
    UploaderConfig,
};
use branchline_sync::wire::{self, DownResponse, ErrorBody, UpAck};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::files::{FileSignals, FileTask};
use super::status::SyncHandle;
use super::store::{OutboxPage, SyncStore};
use crate::config::HqConfig;
use crate::store::{system_clock_ms, StoreReader};

/// Largest response body the agent reads from HQ (a snapshot of a large site).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An outbox read or an HTTP exchange that finished.
#[derive(Debug)]
enum Done {
    Rows {
        read: branchline_sync::agent::ReadId,
        result: Result<OutboxPage, String>,
    },
    Up {
        request: branchline_sync::agent::RequestId,
        result: Result<UpAck, Failure>,
    },
    Down {
        request: branchline_sync::agent::RequestId,
        result: Result<DownResponse, Failure>,
    },
}

/// Everything the agent task needs.
#[derive(Debug)]
pub struct Agent {
    /// `[hq]`.
    pub hq: HqConfig,
    /// The HTTPS client (see [`super::client::http_client`]).
    pub client: reqwest::Client,
    /// The store.
    pub store: SyncStore,
    /// Where the status and the force signal live (shared with the API).
    pub handle: SyncHandle,
    /// HQ reachability samples for the WAN monitor (`true`: HQ answered).
    pub hq_reach: mpsc::UnboundedSender<bool>,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Agent {
    /// Runs until `shutdown` is cancelled or the store writer stops. Start-up failures
    /// (the store cannot be read, a setting the cores refuse) are recorded in the
    /// status and end the task; telephony goes on without sync.
    pub async fn run(self, shutdown: CancellationToken) {
        let Agent {
            hq,
            client,
            store,
            handle,
            hq_reach,
            seed,
        } = self;
        let state = match store.state() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "sync agent cannot read its state; sync is off");
                handle.set_setup_error(e.to_string());
                return;
            }
        };
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let up_config = UploaderConfig {
            max_records: hq.batch_records,
            // A backlog (after an outage) drains in batches of up to the protocol's
            // limit; still within the 1 MiB byte bound, so memory stays flat.
            backlog_max_records: Some(wire::MAX_BATCH_RECORDS.max(hq.batch_records)),
            request_timeout: hq.request_timeout,
            poll_interval: hq.upload_interval,
            backoff: BackoffConfig::default(),
            // The next page is read while HQ works on the batch in flight.
            read_ahead: true,
            ..UploaderConfig::new(&hq.box_id, &state.epoch, env!("CARGO_PKG_VERSION"))
        };
        let down_config = DownloaderConfig {
            wait_ms: ms(hq.long_poll),
            request_margin: hq.request_timeout,
            ..DownloaderConfig::default()
        };
        let cores = Uploader::new(up_config, seed, now).and_then(|up| {
            Downloader::new(
                down_config,
                state.down_cursor,
                seed.rotate_left(32) ^ 1,
                now,
            )
            .map(|down| (up, down))
        });
        let (mut up, mut down) = match cores {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "sync agent settings refused; sync is off");
                handle.set_setup_error(e.to_string());
                return;
            }
        };
        tracing::info!(
            url = %hq.url,
            box_id = %hq.box_id,
            epoch = %state.epoch,
            cursor = state.down_cursor,
            "sync agent started"
        );
        let files = Arc::new(FileSignals::default());
        let files_stop = shutdown.child_token();
        let file_task = tokio::spawn(
            FileTask {
                hq: hq.clone(),
                client: client.clone(),
                store: store.clone(),
                handle: handle.clone(),
                signals: Arc::clone(&files),
                hq_reach: hq_reach.clone(),
                seed: seed.rotate_left(16) ^ 2,
            }
            .run(files_stop.clone()),
        );
        let driver = Driver {
            base: Arc::from(hq.url.as_str()),
            client,
            store,
            reader: Arc::new(Mutex::new(None)),
            hq_reach,
            files,
        };
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(8);
        let mut outbox = driver.store.writer().outbox_watch();
        let force = handle.force_signal();
        loop {
            driver.drain_up(&mut up, &done_tx).await;
            driver.drain_down(&mut down, &done_tx).await;
            handle.set_live(SyncStatus::new(&up, &down));
            let deadline = match (up.timeout(), down.timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = done_rx.recv() => {
                    let now = Instant::now();
                    match done {
                        Done::Rows { read, result } => up.handle(now, match result {
                            Ok(page) => UpInput::Rows {
                                read,
                                rows: page.records,
                                last_seq: page.backlog.last_seq,
                            },
                            Err(detail) => UpInput::ReadFailed { read, detail },
                        }),
                        Done::Up { request, result } => up.handle(now, match result {
                            Ok(ack) => UpInput::Acked { request, ack },
                            Err(failure) => UpInput::Failed { request, failure },
                        }),
                        Done::Down { request, result } => down.handle(now, match result {
                            Ok(response) => DownInput::Response { request, response },
                            Err(failure) => DownInput::Failed { request, failure },
                        }),
                    }
                }
                changed = outbox.changed() => {
                    if changed.is_err() {
                        tracing::debug!("store writer gone; sync agent stops");
                        break;
                    }
                    let last_seq = *outbox.borrow_and_update();
                    up.handle(Instant::now(), UpInput::Appended { last_seq });
                }
                () = force.notified() => {
                    tracing::info!("sync forced");
                    let now = Instant::now();
                    up.handle(now, UpInput::Force);
                    down.handle(now, DownInput::Force);
                    driver.files.force();
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    up.handle_timeout(now);
                    down.handle_timeout(now);
                }
            }
        }
        files_stop.cancel();
        let _ = file_task.await;
        handle.clear_live();
        tracing::info!("sync agent stopped");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The IO side: store, HTTP, WAN samples.
struct Driver {
    base: Arc<str>,
    client: reqwest::Client,
    store: SyncStore,
    /// The read connection the outbox pages come from, opened at the first read and
    /// kept (dropped after a failed read, so the next one starts afresh). The lock is
    /// only ever taken on the blocking pool, by one read at a time.
    reader: Arc<Mutex<Option<StoreReader>>>,
    hq_reach: mpsc::UnboundedSender<bool>,
    /// Wakes the file task after an acknowledgement, forces it with a forced sync.
    files: Arc<FileSignals>,
}

impl Driver {
    async fn report(&self, error: &AgentError) {
        tracing::warn!(error = %error, "sync");
        self.store
            .record_error(&error.to_string(), system_clock_ms())
            .await;
    }

    /// Carries out the uploader's events and sends its batches, until it is quiet.
    async fn drain_up(&self, up: &mut Uploader, done: &mpsc::Sender<Done>) {
        loop {
            let mut conflicts = Vec::new();
            let mut trim = None;
            let mut policy = None;
            let mut moved = false;
            while let Some(event) = up.poll_event() {
                moved = true;
                match event {
                    UpEvent::NeedRows {
                        read,
                        after_seq,
                        max,
                    } => self.read_rows(read, after_seq, max, done),
                    UpEvent::Conflict(c) => conflicts.push(*c),
                    UpEvent::Trim { up_to_seq } => trim = Some(up_to_seq),
                    UpEvent::FilePolicy(p) => policy = Some(p),
                    UpEvent::Delivered {
                        rows, acked_seq, ..
                    } => {
                        if rows > 0 {
                            tracing::info!(rows, acked_seq, "sync batch delivered");
                        } else {
                            tracing::debug!(acked_seq, "sync heartbeat delivered");
                        }
                    }
                    UpEvent::Error(e) => self.report(&e).await,
                }
            }
            // The next batch goes out before this acknowledgement's transaction
            // commits: HQ keys rows by seq, so a batch sent before a trim that is then
            // lost (power cut) is only sent again; the trim overlaps HQ's work.
            let mut sent = false;
            while let Some(t) = up.poll_transmit() {
                sent = true;
                self.send_up(t, done);
            }
            if !conflicts.is_empty() || trim.is_some() || policy.is_some() {
                let n = conflicts.len();
                match self
                    .store
                    .commit_ack(conflicts, trim, policy, system_clock_ms())
                    .await
                {
                    Ok(done) => {
                        self.files.wake();
                        if n > 0 {
                            tracing::warn!(
                                conflicts = n,
                                applied = done.conflicts_applied,
                                "sync conflicts: HQ's rows taken, audited"
                            );
                        }
                        tracing::debug!(trimmed = done.trimmed, through = ?trim, "outbox trimmed");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sync acknowledgement not committed");
                        self.store
                            .record_error(&e.to_string(), system_clock_ms())
                            .await;
                    }
                }
            }
            if !moved && !sent {
                return;
            }
        }
    }

    /// Reads an outbox page on the blocking pool; the answer comes back as
    /// [`Done::Rows`], so the agent goes on (receiving HQ's answer to the batch in
    /// flight) while it reads.
    fn read_rows(
        &self,
        read: branchline_sync::agent::ReadId,
        after_seq: i64,
        max: usize,
        done: &mpsc::Sender<Done>,
    ) {
        let (store, reader, done) = (self.store.clone(), Arc::clone(&self.reader), done.clone());
        tokio::spawn(async move {
            let page = tokio::task::spawn_blocking(move || {
                let mut slot = reader.lock().unwrap_or_else(PoisonError::into_inner);
                let open = match slot.take() {
                    Some(open) => open,
                    None => store.reader()?,
                };
                let page = store.outbox_page_with(&open, after_seq, max)?;
                *slot = Some(open);
                Ok::<_, crate::error::Error>(page)
            })
            .await;
            let result = match page {
                Ok(Ok(page)) => Ok(page),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("outbox read task: {e}")),
            };
            let _ = done.send(Done::Rows { read, result }).await;
        });
    }

    /// Carries out the downloader's events and sends its queries, until it is quiet.
    async fn drain_down(&self, down: &mut Downloader, done: &mpsc::Sender<Done>) {
        loop {
            let mut moved = false;
            while let Some(event) = down.poll_event() {
                moved = true;
                match event {
                    DownEvent::Apply {
                        update, new_cursor, ..
                    } => {
                        let (what, n) = match &update {
                            FeedUpdate::Page(c) => ("page", c.len()),
                            FeedUpdate::Snapshot(r) => ("snapshot", r.len()),
                        };
                        let response = match update {
                            FeedUpdate::Page(changes) => DownResponse::Page {
                                version: wire::PROTOCOL_VERSION,
                                changes,
                                cursor: new_cursor,
                                more: false,
                            },
                            FeedUpdate::Snapshot(rows) => DownResponse::Snapshot {
                                version: wire::PROTOCOL_VERSION,
                                rows,
                                cursor: new_cursor,
                            },
                        };
                        let input = match self.store.apply_down(response, system_clock_ms()).await {
                            Ok(applied) => {
                                if n > 0 || what == "snapshot" {
                                    tracing::info!(
                                        what,
                                        changes = n,
                                        upserted = applied.upserted,
                                        deleted = applied.deleted,
                                        cursor = new_cursor,
                                        "sync change feed applied"
                                    );
                                }
                                DownInput::Applied { cursor: new_cursor }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "sync change feed not applied");
                                DownInput::ApplyFailed {
                                    detail: e.to_string(),
                                }
                            }
                        };
                        down.handle(Instant::now(), input);
                    }
                    DownEvent::Error(e) => self.report(&e).await,
                }
            }
            let mut sent = false;
            while let Some(t) = down.poll_transmit() {
                sent = true;
                self.send_down(t, done);
            }
            if !moved && !sent {
                return;
            }
        }
    }

    /// Encodes the batch on the blocking pool (JSON and gzip of up to a MiB is
    /// the box's largest piece of work per batch; the agent goes on meanwhile) and
    /// posts it.
    fn send_up(&self, t: UpTransmit, done: &mpsc::Sender<Done>) {
        let records = t.batch.records.len();
        let url = format!("{}{}", self.base, wire::UP_PATH);
        let client = self.client.clone();
        let (done, reach) = (done.clone(), self.hq_reach.clone());
        tracing::debug!(records, request = t.request.0, "sync batch sent");
        tokio::spawn(async move {
            let UpTransmit {
                request: id,
                batch,
                deadline,
            } = t;
            let result = match tokio::task::spawn_blocking(move || encode_batch(&batch)).await {
                Ok(body) => {
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    let request = client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(reqwest::header::CONTENT_ENCODING, "gzip")
                        .timeout(timeout)
                        .body(body);
                    exchange::<UpAck>(request, &reach).await
                }
                Err(e) => Err(Failure::Transport {
                    detail: format!("batch encoding task: {e}"),
                }),
            };
            let _ = done
                .send(Done::Up {
                    request: id,
                    result,
                })
                .await;
        });
    }

    fn send_down(&self, t: DownTransmit, done: &mpsc::Sender<Done>) {
        let url = format!(
            "{}{}?since={}&wait_ms={}&limit={}",
            self.base,
            wire::DOWN_PATH,
            t.query.since,
            t.query.wait_ms,
            t.query.limit
        );
        let timeout = t.deadline.saturating_duration_since(Instant::now());
        let request = self.client.get(url).timeout(timeout);
        let (done, reach) = (done.clone(), self.hq_reach.clone());
        tokio::spawn(async move {
            let result = exchange::<DownResponse>(request, &reach).await;
            let _ = done
                .send(Done::Down {
                    request: t.request,
                    result,
                })
                .await;
        });
    }
}

/// Sends `request` and parses a 2xx body as `T`; tells the WAN monitor whether HQ
/// answered at all.
pub(super) async fn exchange<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    reach: &mpsc::UnboundedSender<bool>,
) -> Result<T, Failure> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = reach.send(false);
            return Err(if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Transport {
                    detail: error_chain(&e),
                }
            });
        }
    };
    let _ = reach.send(true);
    let status = response.status();
    let body = match read_capped(response).await {
        Ok(b) => b,
        Err(failure) => return Err(failure),
    };
    if status.is_success() {
        serde_json::from_slice(&body).map_err(|e| Failure::BadResponse {
            detail: format!("{e}"),
        })
    } else {
        Err(Failure::Status {
            status: status.as_u16(),
            body: serde_json::from_slice::<ErrorBody>(&body).ok(),
        })
    }
}

/// Reads a response body, refusing one above [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::BadResponse {
        detail: format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(Failure::Timeout),
            Err(e) => {
                return Err(Failure::Transport {
                    detail: error_chain(&e),
                })
            }
        }
    }
}

/// An error with its sources, one line (reqwest's own message hides the TLS reason).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
