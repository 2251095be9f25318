//! The updater task: runs [`Updater`] against HQ with the sync client. It polls the
//! offer every `poll_interval`, carries out the core's actions (fetch, verify,
//! install, report, discard), feeds it the calls-up count from `calls_up` and the
//! window state from the wall clock every second, and ends with [`Ended::Restart`]
//! once `installed` is reported (the caller restarts into the new slot).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use branchline_image::policy::Identity;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::core::{Action, Updater};
use super::io::{self, Downloads};
use super::Window;
use crate::config::SlotBackend;

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A new slot is installed and HQ knows: restart into it.
    Restart,
    /// Shut down.
    Stopped,
}

/// Everything the task needs.
#[derive(Debug)]
pub struct UpdateTask {
    /// The sync client (mutual TLS to HQ).
    pub client: reqwest::Client,
    /// HQ's base URL (`[hq] url`).
    pub base: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often the offer is polled.
    pub poll_interval: Duration,
    /// The download files.
    pub downloads: Downloads,
    /// The pinned update keys.
    pub keys: Vec<PathBuf>,
    /// This box's board and target.
    pub me: Identity,
    /// The maintenance window (UTC).
    pub window: Window,
    /// Where the slots are.
    pub backend: SlotBackend,
    /// Calls up (alerting or connected), published by call control.
    pub calls_up: watch::Receiver<usize>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UpdateTask {
    /// Runs until a restart is due or `stop` fires.
    pub async fn run(mut self, stop: CancellationToken) -> Ended {
        let start = Instant::now();
        let mut core = Updater::new();
        let mut queue: VecDeque<Action> = VecDeque::new();
        let up = *self.calls_up.borrow_and_update();
        queue.extend(core.calls(u32::try_from(up).unwrap_or(u32::MAX)));
        let mut next_poll = tokio::time::Instant::now();
        let mut second = tokio::time::interval(Duration::from_secs(1));
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls_open = true;
        loop {
            while let Some(action) = queue.pop_front() {
                if stop.is_cancelled() {
                    return Ended::Stopped;
                }
                match self.act(&mut core, action, start).await {
                    Ok(next) => queue.extend(next),
                    Err(ended) => return ended,
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ended::Stopped,
                () = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + self.poll_interval;
                    match io::poll_offer(&self.client, &self.base, self.timeout).await {
                        Ok(offer) => {
                            let on_disk = match offer.as_ref().map(|o| self.downloads.on_disk(&o.rollout)) {
                                Some(Ok(n)) => n,
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "update download not readable");
                                    continue;
                                }
                                None => 0,
                            };
                            queue.extend(core.offer(offer, on_disk));
                        }
                        Err(e) => tracing::debug!(error = %e, "update offer poll failed"),
                    }
                }
                changed = self.calls_up.changed(), if calls_open => {
                    if changed.is_err() {
                        calls_open = false;
                        continue;
                    }
                    let up = *self.calls_up.borrow_and_update();
                    queue.extend(core.calls(u32::try_from(up).unwrap_or(u32::MAX)));
                }
                _ = second.tick() => {
                    queue.extend(core.window(self.window.contains(unix_secs())));
                    queue.extend(core.tick(start.elapsed()));
                }
            }
        }
    }

    /// Carries out one action; `Err(Ended::Restart)` once the restart is due.
    async fn act(
        &self,
        core: &mut Updater,
        action: Action,
        start: Instant,
    ) -> Result<Vec<Action>, Ended> {
        Ok(match action {
            Action::Fetch { rollout, offset } => {
                match io::fetch_chunk(&self.client, &self.base, &rollout, offset, self.timeout)
                    .await
                    .and_then(|bytes| {
                        self.downloads
                            .append(&rollout, offset, &bytes)
                            .map(|()| bytes.len())
                    }) {
                    Ok(len) => core.chunk(offset, len as u64),
                    Err(e) => {
                        tracing::info!(%rollout, offset, error = %e, "update chunk failed; retrying");
                        core.fetch_error(start.elapsed());
                        Vec::new()
                    }
                }
            }
            Action::Verify { rollout, sha256 } => match self.downloads.verify(&rollout, &sha256) {
                Ok(()) => core.verified(Ok(())),
                Err(Ok(actual)) => core.verified(Err(actual)),
                Err(Err(e)) => {
                    tracing::warn!(%rollout, error = %e, "update download unreadable");
                    core.verified(Err(format!("unreadable ({e})")))
                }
            },
            Action::Discard { rollout } => {
                if let Err(e) = self.downloads.discard(&rollout) {
                    tracing::warn!(%rollout, error = %e, "update download not removed");
                }
                Vec::new()
            }
            Action::Install { rollout } => {
                tracing::info!(%rollout, "installing the update into the inactive slot");
                let (downloads, keys, me, backend) = (
                    self.downloads.clone(),
                    self.keys.clone(),
                    self.me.clone(),
                    self.backend.clone(),
                );
                let r = rollout.clone();
                let result = tokio::task::spawn_blocking(move || {
                    io::install(&downloads, &r, &keys, &me, &backend)
                })
                .await
                .unwrap_or_else(|e| Err(format!("install task failed: {e}")));
                if let Err(e) = &result {
                    tracing::error!(%rollout, reason = %e, "update refused; the running slot is untouched");
                }
                core.install_result(result)
            }
            Action::Report(report) => {
                let ok =
                    match io::send_report(&self.client, &self.base, &report, self.timeout).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::info!(error = %e, "update report not delivered; retrying");
                            false
                        }
                    };
                core.reported(&report, ok, start.elapsed())
            }
            Action::Restart => return Err(Ended::Restart),
        })
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
