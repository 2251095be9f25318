//! The updater task: runs [`Updater`] against HQ with the sync client. It polls the
//! offer every `poll_interval`, carries out the core's actions (fetch, verify,
//! install, report, discard), feeds it the calls-up count from `calls_up` and the
//! window state from the wall clock every second, and ends with [`Ended::Restart`]
//! once `installed` is reported (the caller restarts into the new slot).
//!
//! After an install it writes the trial record ([`super::trial`]); at start it judges
//! a record left by the previous run against the slot state and reports the trial
//! boot's outcome (`committed` once the health check commits, or `rolled_back`) before
//! it polls offers again, then removes the record and the downloaded bundle.
//!
//! Shutdown: `stop` ends the task between actions and interrupts a chunk request or
//! a report in flight (both are redone from disk state at the next start); an install
//! in progress is finished first (it runs on a blocking thread and is short).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use branchline_image::policy::Identity;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use branchline_sync::wire::OutcomeState;

use super::core::{Action, Report, Updater};
use super::io::{self, Downloads};
use super::trial::{self, Judgement, TrialRecord};
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
    /// Turns true once the health check committed this boot's trial slot
    /// ([`crate::health::Reporter::trial_committed`]).
    pub trial_committed: watch::Receiver<bool>,
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
        // The previous run's install: its trial boot's outcome goes to HQ first; no
        // offer is polled while the record is open.
        let mut trial = self.resume_trial().await;
        let mut awaiting_commit = false;
        match trial.as_ref().map(|(_, j)| j.clone()) {
            Some(Judgement::NotBooted) => return Ended::Restart,
            Some(Judgement::OnTrial) => awaiting_commit = true,
            Some(Judgement::Committed) => {
                let rec = trial.as_ref().map(|(r, _)| r.clone());
                queue.extend(rec.map_or_else(Vec::new, |r| {
                    core.trial_outcome(outcome(&r, OutcomeState::Committed, None))
                }));
            }
            Some(Judgement::RolledBack { reason }) => {
                let rec = trial.as_ref().map(|(r, _)| r.clone());
                queue.extend(rec.map_or_else(Vec::new, |r| {
                    core.trial_outcome(outcome(&r, OutcomeState::RolledBack, Some(reason)))
                }));
            }
            Some(Judgement::Stale { .. }) | None => trial = None,
        }
        loop {
            while let Some(action) = queue.pop_front() {
                if stop.is_cancelled() {
                    return Ended::Stopped;
                }
                let result = if matches!(action, Action::Install { .. }) {
                    self.act(&mut core, action, start, &mut trial).await
                } else {
                    tokio::select! {
                        r = self.act(&mut core, action, start, &mut trial) => r,
                        () = stop.cancelled() => return Ended::Stopped,
                    }
                };
                match result {
                    Ok(next) => queue.extend(next),
                    Err(ended) => return ended,
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ended::Stopped,
                committed = async { self.trial_committed.wait_for(|c| *c).await.is_ok() }, if awaiting_commit => {
                    awaiting_commit = false;
                    // Otherwise the health check is gone without a commit: the daemon
                    // is stopping, and the next start judges the record again.
                    if let (true, Some((rec, _))) = (committed, trial.as_ref()) {
                        tracing::info!(rollout = %rec.rollout, version = %rec.version, slot = %rec.slot, "trial boot committed; reporting to HQ");
                        let report = outcome(rec, OutcomeState::Committed, None);
                        queue.extend(core.trial_outcome(report));
                    }
                }
                () = tokio::time::sleep_until(next_poll), if trial.is_none() => {
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

    /// Reads the trial record and judges it against the slot state (see
    /// [`super::trial`]); `None` when there is none, or it cannot be used (logged).
    async fn resume_trial(&self) -> Option<(TrialRecord, Judgement)> {
        let dir = self.downloads.dir().to_owned();
        let record = match trial::load(&dir) {
            Ok(r) => r?,
            Err(e) => {
                tracing::error!(error = %e, "update trial record unreadable: its outcome is not reported");
                return None;
            }
        };
        let slots = crate::health::Slots::new(&self.backend);
        let read = tokio::task::spawn_blocking(move || slots.read())
            .await
            .map_err(crate::health::SlotError::from)
            .and_then(|r| r);
        let (state, booted) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(rollout = %record.rollout, error = %e, "cannot read the A/B slot state: the trial outcome is not reported");
                return None;
            }
        };
        let judgement = trial::judge(&record, &state, booted);
        match &judgement {
            Judgement::OnTrial => {
                tracing::info!(rollout = %record.rollout, version = %record.version, slot = %record.slot, "trial boot of an update from HQ: its outcome is reported once the health check decides")
            }
            Judgement::Committed => {
                tracing::info!(rollout = %record.rollout, version = %record.version, slot = %record.slot, "the update from HQ is committed; reporting to HQ")
            }
            Judgement::RolledBack { reason } => {
                tracing::warn!(rollout = %record.rollout, version = %record.version, %reason, "the update from HQ was rolled back; reporting to HQ")
            }
            Judgement::NotBooted => {
                tracing::warn!(rollout = %record.rollout, version = %record.version, slot = %record.slot, "the update from HQ is installed but was not booted: restarting into it")
            }
            Judgement::Stale { reason } => {
                tracing::warn!(rollout = %record.rollout, %reason, "stale update trial record removed");
                if let Err(e) = trial::remove(&dir) {
                    tracing::warn!(error = %e, "stale update trial record not removed");
                }
            }
        }
        Some((record, judgement))
    }

    /// Carries out one action; `Err(Ended::Restart)` once the restart is due.
    /// `trial` is the open trial record; it is closed (file removed, the rollout's
    /// download discarded) once HQ accepted its final report.
    async fn act(
        &self,
        core: &mut Updater,
        action: Action,
        start: Instant,
        trial: &mut Option<(TrialRecord, Judgement)>,
    ) -> Result<Vec<Action>, Ended> {
        Ok(match action {
            Action::Fetch { rollout, offset } => {
                tracing::debug!(%rollout, offset, "update chunk requested");
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
                match result {
                    Ok(installed) => {
                        let version = installed.version.to_string();
                        tracing::info!(%rollout, %version, slot = %installed.slot, "update installed into the inactive slot (boot-once)");
                        // Before `installed` is reported: the next start needs it to
                        // report the trial boot's outcome.
                        let record = TrialRecord {
                            rollout: rollout.clone(),
                            version: version.clone(),
                            slot: installed.slot,
                            failed: None,
                        };
                        if let Err(e) = trial::save(self.downloads.dir(), &record) {
                            tracing::error!(%rollout, error = %e, "update trial record not written: HQ will not hear the trial boot's outcome");
                        }
                        core.install_result(Ok(version))
                    }
                    Err(e) => {
                        tracing::error!(%rollout, reason = %e, "update refused; the running slot is untouched");
                        core.install_result(Err(e))
                    }
                }
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
                if ok {
                    tracing::info!(rollout = %report.rollout, state = %report.state.as_str(), "update outcome reported to HQ");
                }
                let closes = trial
                    .as_ref()
                    .is_some_and(|(r, _)| r.rollout == report.rollout)
                    && matches!(
                        report.state,
                        OutcomeState::Committed | OutcomeState::RolledBack
                    );
                if ok && closes {
                    // HQ holds the final outcome: the bundle can go, then the record
                    // (last, so a crash in between only repeats this step).
                    if let Err(e) = self.downloads.discard(&report.rollout) {
                        tracing::warn!(rollout = %report.rollout, error = %e, "update download not removed");
                    }
                    match trial::remove(self.downloads.dir()) {
                        Ok(()) => *trial = None,
                        Err(e) => tracing::warn!(error = %e, "update trial record not removed"),
                    }
                }
                core.reported(&report, ok, start.elapsed())
            }
            Action::Restart => return Err(Ended::Restart),
        })
    }
}

/// A trial boot's report for HQ.
fn outcome(record: &TrialRecord, state: OutcomeState, reason: Option<String>) -> Report {
    Report {
        rollout: record.rollout.clone(),
        state,
        version: Some(record.version.clone()),
        reason,
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
