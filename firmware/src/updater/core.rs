//! The updater's sans-IO core: what to do next with an HQ update offer, decided from
//! inputs only (offer, chunk received, download/verify/install results, errors, clock
//! ticks, calls up, window open/closed), so every path runs on a virtual clock.
//!
//! Phases: idle -> downloading (offset) -> verifying -> staged (sha256 checked, waiting
//! for the window and for calls to end) -> installing -> installed (restart pending)
//! -> done (final report delivered); after the restart, the trial boot's outcome
//! (`committed` / `rolled_back`, [`Updater::trial_outcome`]) is reported from done. A failure (sha256 mismatch, a bundle refused by
//! verification, an install error) goes to done with a `failed` report and never
//! touches the running slot (the IO edge installs with `branchline_image`, which
//! verifies before its first write).
//!
//! The gate: a staged bundle is installed only while the maintenance window is open
//! and no call is up, unless HQ marked the offer `forced`.
//!
//! Transient errors (HQ unreachable, a chunk that fails) keep the phase and retry the
//! same step after a backoff (5 s doubling to 5 min) driven by [`Updater::tick`].
//! Reports are retried the same way until the IO edge confirms them.

use std::time::Duration;

use branchline_sync::wire::{Offer, OutcomeState};

/// First retry delay after a transient error.
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Where the updater stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No offer (or HQ withdrew it).
    Idle,
    /// Fetching the bundle; `offset` bytes are on disk.
    Downloading {
        /// The offer.
        offer: Offer,
        /// Bytes already on disk (the next `Range: bytes=offset-`).
        offset: u64,
    },
    /// All bytes are on disk; the IO edge checks the sha256.
    Verifying {
        /// The offer.
        offer: Offer,
    },
    /// sha256 checked; waiting for the window to open and calls to end.
    Staged {
        /// The offer.
        offer: Offer,
    },
    /// The IO edge installs into the inactive slot.
    Installing {
        /// The offer.
        offer: Offer,
    },
    /// Installed into the inactive slot; restart once the report is delivered.
    Installed {
        /// The offer.
        offer: Offer,
        /// The version now pending (the verified manifest's).
        version: String,
    },
    /// Finished with this rollout (failed); a new rollout id starts over.
    Done {
        /// The rollout id.
        rollout: String,
    },
}

/// What the IO edge must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Request `GET {UPDATE_PATH}/{rollout}/bundle` with `Range: bytes={offset}-` and
    /// append what arrives, then call [`Updater::chunk`].
    Fetch {
        /// The rollout id.
        rollout: String,
        /// The first byte wanted.
        offset: u64,
    },
    /// Check the downloaded file's sha256 against the offer, then call
    /// [`Updater::verified`].
    Verify {
        /// The rollout id.
        rollout: String,
        /// The expected sha256 (lowercase hex).
        sha256: String,
    },
    /// Delete the downloaded file of this rollout.
    Discard {
        /// The rollout id.
        rollout: String,
    },
    /// Install the downloaded bundle, then call [`Updater::install_result`].
    Install {
        /// The rollout id.
        rollout: String,
    },
    /// Send an outcome report, then call [`Updater::reported`].
    Report(Report),
    /// Restart into the new slot (the health check there commits or rolls back).
    Restart,
}

/// One outcome report for HQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The rollout id.
    pub rollout: String,
    /// The state reported.
    pub state: OutcomeState,
    /// The version concerned.
    pub version: Option<String>,
    /// Why (failed, rolled back).
    pub reason: Option<String>,
}

/// The updater's state machine.
#[derive(Debug, Clone)]
pub struct Updater {
    phase: Phase,
    calls_up: u32,
    window_open: bool,
    /// A report not yet confirmed by the IO edge.
    pending_report: Option<Report>,
    /// When a failed step (fetch, report) is tried again, and the current delay.
    retry_at: Option<Duration>,
    backoff: Duration,
    /// The step to redo at `retry_at` (a fetch), if any.
    retry_fetch: bool,
}

impl Default for Updater {
    fn default() -> Self {
        Self::new()
    }
}

impl Updater {
    /// Idle, window closed, no calls.
    pub fn new() -> Updater {
        Updater {
            phase: Phase::Idle,
            calls_up: 0,
            window_open: false,
            pending_report: None,
            retry_at: None,
            backoff: RETRY_MIN,
            retry_fetch: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The rollout in progress (any phase but idle).
    pub fn rollout(&self) -> Option<&str> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Done { rollout } => Some(rollout),
            Phase::Downloading { offer, .. }
            | Phase::Verifying { offer }
            | Phase::Staged { offer }
            | Phase::Installing { offer }
            | Phase::Installed { offer, .. } => Some(&offer.rollout),
        }
    }

    fn report(&mut self, offer: &Offer, state: OutcomeState, reason: Option<String>) -> Action {
        let r = Report {
            rollout: offer.rollout.clone(),
            state,
            version: Some(offer.version.clone()),
            reason,
        };
        self.pending_report = Some(r.clone());
        Action::Report(r)
    }

    fn fail(&mut self, offer: Offer, reason: String) -> Vec<Action> {
        let report = self.report(&offer, OutcomeState::Failed, Some(reason));
        self.retry_fetch = false;
        self.phase = Phase::Done {
            rollout: offer.rollout.clone(),
        };
        vec![
            Action::Discard {
                rollout: offer.rollout,
            },
            report,
        ]
    }

    /// HQ's answer to the offer poll. `on_disk`: bytes of this rollout's download
    /// already on disk (resume after a restart or a WAN drop).
    pub fn offer(&mut self, offer: Option<Offer>, on_disk: u64) -> Vec<Action> {
        let Some(offer) = offer else {
            // Withdrawn (paused, cancelled, other wave): stop downloading or waiting,
            // keep the file for a resume. Installing/installed carry on.
            return match &self.phase {
                Phase::Downloading { .. } | Phase::Verifying { .. } | Phase::Staged { .. } => {
                    self.phase = Phase::Idle;
                    self.retry_fetch = false;
                    self.retry_at = None;
                    Vec::new()
                }
                _ => Vec::new(),
            };
        };
        if self.rollout() == Some(offer.rollout.as_str()) {
            // Same rollout: only `forced` may change (HQ re-staged nothing else).
            if let Phase::Staged { offer: o } = &mut self.phase {
                o.forced = offer.forced;
                return self.gate();
            }
            return Vec::new();
        }
        if matches!(
            self.phase,
            Phase::Installing { .. } | Phase::Installed { .. }
        ) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if let Some(old) = self.rollout() {
            if !matches!(self.phase, Phase::Done { .. }) {
                actions.push(Action::Discard {
                    rollout: old.to_owned(),
                });
            }
        }
        self.backoff = RETRY_MIN;
        self.retry_at = None;
        self.retry_fetch = false;
        if on_disk > offer.size {
            // Not this bundle's prefix: start over.
            actions.push(Action::Discard {
                rollout: offer.rollout.clone(),
            });
            return self.start(offer, 0, actions);
        }
        self.start(offer, on_disk, actions)
    }

    fn start(&mut self, offer: Offer, offset: u64, mut actions: Vec<Action>) -> Vec<Action> {
        actions.push(self.report(&offer, OutcomeState::Downloading, None));
        if offset == offer.size {
            actions.push(Action::Verify {
                rollout: offer.rollout.clone(),
                sha256: offer.sha256.clone(),
            });
            self.phase = Phase::Verifying { offer };
        } else {
            actions.push(Action::Fetch {
                rollout: offer.rollout.clone(),
                offset,
            });
            self.phase = Phase::Downloading { offer, offset };
        }
        actions
    }

    /// The outcome of a trial boot (`committed` or `rolled_back`, judged at start-up
    /// from the trial record and the slot state): this rollout is done, and `report`
    /// is sent (retried like any report) until HQ accepts it. Offers of the same
    /// rollout are ignored from now on.
    pub fn trial_outcome(&mut self, report: Report) -> Vec<Action> {
        self.phase = Phase::Done {
            rollout: report.rollout.clone(),
        };
        self.retry_fetch = false;
        self.retry_at = None;
        self.backoff = RETRY_MIN;
        self.pending_report = Some(report.clone());
        vec![Action::Report(report)]
    }

    /// `len` bytes starting at `offset` were appended to the file and synced.
    pub fn chunk(&mut self, offset: u64, len: u64) -> Vec<Action> {
        let Phase::Downloading { offer, offset: at } = &self.phase else {
            return Vec::new();
        };
        let offer = offer.clone();
        if offset != *at {
            return self.fail(offer, format!("chunk at byte {offset}, expected byte {at}"));
        }
        let end = offset.saturating_add(len);
        if end > offer.size {
            return self.fail(
                offer.clone(),
                format!("HQ sent {end} bytes of a {}-byte bundle", offer.size),
            );
        }
        if len == 0 {
            return self.fail(offer, format!("HQ sent an empty chunk at byte {offset}"));
        }
        self.backoff = RETRY_MIN;
        self.retry_fetch = false;
        if end == offer.size {
            let a = Action::Verify {
                rollout: offer.rollout.clone(),
                sha256: offer.sha256.clone(),
            };
            self.phase = Phase::Verifying { offer };
            return vec![a];
        }
        let a = Action::Fetch {
            rollout: offer.rollout.clone(),
            offset: end,
        };
        self.phase = Phase::Downloading { offer, offset: end };
        vec![a]
    }

    /// The sha256 check of the complete file: `Err(actual)` on a mismatch.
    pub fn verified(&mut self, result: Result<(), String>) -> Vec<Action> {
        let Phase::Verifying { offer } = &self.phase else {
            return Vec::new();
        };
        let offer = offer.clone();
        match result {
            Ok(()) => {
                let mut actions = vec![self.report(&offer, OutcomeState::Staged, None)];
                self.phase = Phase::Staged { offer };
                actions.extend(self.gate());
                actions
            }
            Err(actual) => {
                let reason = format!(
                    "downloaded bundle has sha256 {actual}, the offer says {}",
                    offer.sha256
                );
                self.fail(offer, reason)
            }
        }
    }

    /// A transient failure of the current fetch at time `now` (monotonic): retried
    /// after the backoff.
    pub fn fetch_error(&mut self, now: Duration) {
        if matches!(self.phase, Phase::Downloading { .. }) {
            self.retry_fetch = true;
            self.schedule(now);
        }
    }

    fn schedule(&mut self, now: Duration) {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// The number of calls up changed.
    pub fn calls(&mut self, up: u32) -> Vec<Action> {
        self.calls_up = up;
        self.gate()
    }

    /// The maintenance window opened or closed.
    pub fn window(&mut self, open: bool) -> Vec<Action> {
        self.window_open = open;
        self.gate()
    }

    /// Installs a staged bundle if it may go now.
    fn gate(&mut self) -> Vec<Action> {
        let Phase::Staged { offer } = &self.phase else {
            return Vec::new();
        };
        if offer.forced || (self.window_open && self.calls_up == 0) {
            let offer = offer.clone();
            let a = Action::Install {
                rollout: offer.rollout.clone(),
            };
            self.phase = Phase::Installing { offer };
            return vec![a];
        }
        Vec::new()
    }

    /// The install's result: `Ok(version)` pending in the inactive slot, or why it was
    /// refused (the running slot is untouched).
    pub fn install_result(&mut self, result: Result<String, String>) -> Vec<Action> {
        let Phase::Installing { offer } = &self.phase else {
            return Vec::new();
        };
        let offer = offer.clone();
        match result {
            Ok(version) => {
                let r = Report {
                    rollout: offer.rollout.clone(),
                    state: OutcomeState::Installed,
                    version: Some(version.clone()),
                    reason: None,
                };
                self.pending_report = Some(r.clone());
                self.phase = Phase::Installed { offer, version };
                vec![Action::Report(r)]
            }
            Err(reason) => self.fail(offer, reason),
        }
    }

    /// The IO edge sent a report: `ok` whether HQ accepted it; on failure it is sent
    /// again after the backoff. Once `installed` is delivered, restart.
    pub fn reported(&mut self, report: &Report, ok: bool, now: Duration) -> Vec<Action> {
        if self.pending_report.as_ref() != Some(report) {
            return Vec::new();
        }
        if !ok {
            self.schedule(now);
            return Vec::new();
        }
        self.pending_report = None;
        if !self.retry_fetch {
            self.retry_at = None;
            self.backoff = RETRY_MIN;
        }
        if report.state == OutcomeState::Installed && matches!(self.phase, Phase::Installed { .. })
        {
            return vec![Action::Restart];
        }
        Vec::new()
    }

    /// Clock tick (monotonic time): retries a failed fetch or report once due.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        match self.retry_at {
            Some(at) if at <= now => {}
            _ => return Vec::new(),
        }
        self.retry_at = None;
        let mut actions = Vec::new();
        if let Some(r) = &self.pending_report {
            actions.push(Action::Report(r.clone()));
        }
        if self.retry_fetch {
            if let Phase::Downloading { offer, offset } = &self.phase {
                actions.push(Action::Fetch {
                    rollout: offer.rollout.clone(),
                    offset: *offset,
                });
            }
            self.retry_fetch = false;
        }
        actions
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
