//! The post-boot health check: an update's first boot is committed only once this
//! daemon has shown it works.
//!
//! ```text
//! daemon::run ──facts──▶ Reporter ──watch──▶ check task ──verdict()──▶ commit / fail
//!   store read back, line controller Ready,        (pure)       Slots (branchline_image)
//!   web and SIP listeners bound, main loop up
//! ```
//!
//! - **Facts** ([`Fact`]): the store opened, migrated and answered a read; the line
//!   controller answered `Hello` with `Ready` (and has the board's ports); the web API
//!   is bound (when `[web] listen` is set); the SIP listeners are bound (when `[sip]`
//!   is set); the daemon reached its main loop. [`crate::daemon`] reports each as it
//!   happens through a [`Reporter`].
//! - **Verdict** ([`verdict`]): a pure function of the facts: healthy when every
//!   configured fact passed, unhealthy as soon as one failed or, at the cutoff (the
//!   deadline `[update] health_deadline_s`, or the daemon stopping with an error), for
//!   every fact still missing.
//! - **Slots** ([`Slots`]): the `[update]` backend of `branchline_image` (a directory
//!   with `state.json`, or the U-Boot environment). [`classify`] tells a *trial* boot
//!   (the booted slot is `Pending`: installed, its one try spent by the bootloader)
//!   from a committed one.
//!
//! What happens with the verdict:
//!
//! | boot | healthy | unhealthy |
//! | --- | --- | --- |
//! | trial | the booted slot is marked good (the backend fsyncs it / `fw_setenv` writes it), `update committed slot=..` | error naming the failed facts; the slot is **not** marked good; the daemon stops gracefully and exits with [`EXIT_UNHEALTHY_TRIAL`] |
//! | committed slot | debug log | debug log |
//! | no `[update]` (development) | info log | warning |
//!
//! A committed trial also turns [`Reporter::trial_committed`] true: the updater
//! ([`crate::updater::task`]) then reports `committed` to HQ. An unhealthy one is
//! reported `rolled_back` by the next boot's updater, with the failed facts that
//! [`crate::daemon::run`] adds to the trial record.
//!
//! Why exit on an unhealthy trial: a rollback needs a reboot (the bootloader then
//! finds the trial slot spent and boots the old one), and `branchd` holds no right to
//! reboot the box. A distinct exit status lets systemd do it: with
//! `RestartPreventExitStatus=3` and `FailureAction=reboot` in `branchd.service` the box
//! reboots into the previous slot at once. Under a unit without those lines
//! (`Restart=on-failure` only) systemd restarts `branchd`, the trial is still pending
//! (tries are spent by the bootloader, not by restarts), and the check runs again: a
//! transient failure can still commit, a lasting one rolls back at the next reboot.
//! A SIGTERM before the verdict leaves the trial pending without a failure.
//!
//! Limits: the facts are start-up facts (bound, answered), not a call placed end to
//! end; on U-Boot boards the booted slot must be on the kernel command line
//! (`branchline.slot=A|B`), else nothing is committed (the safe side: a rollback).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use branchline_image::slot::{SlotId, SlotState, SlotStatus};
use branchline_image::store::{DirSlots, SlotStore, UbootEnv};
use branchline_image::version::Version;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::{Config, SlotBackend, HEALTH_DEADLINE_S};
use crate::error::{Error, Result};

/// Exit status of `branchd` when an update's trial boot failed its health check (see
/// the module doc for the systemd lines that turn it into a reboot and rollback).
pub const EXIT_UNHEALTHY_TRIAL: u8 = 3;

/// The kernel command-line parameter naming the booted slot on U-Boot boards.
pub const CMDLINE_SLOT_PARAM: &str = "branchline.slot";

/// One thing the health check waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    /// The store opened, migrated, and a read on a store reader succeeded.
    Store,
    /// The line controller answered `Hello` with `Ready` and has the board's ports.
    LineController,
    /// The web API's listener is bound (`[web] listen`).
    Web,
    /// The SIP endpoint's listeners are bound (`[sip]`).
    Sip,
    /// The daemon reached its main loop.
    Daemon,
}

impl Fact {
    /// Every fact, in the order the daemon reaches them.
    pub const ALL: [Fact; 5] = [
        Fact::Store,
        Fact::LineController,
        Fact::Web,
        Fact::Sip,
        Fact::Daemon,
    ];

    /// The name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Fact::Store => "store",
            Fact::LineController => "line_controller",
            Fact::Web => "web",
            Fact::Sip => "sip",
            Fact::Daemon => "daemon",
        }
    }

    fn index(self) -> usize {
        match self {
            Fact::Store => 0,
            Fact::LineController => 1,
            Fact::Web => 2,
            Fact::Sip => 3,
            Fact::Daemon => 4,
        }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one fact stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not part of this box's config (no `[web] listen`, no `[sip]`): not required.
    NotConfigured,
    /// Not reported yet.
    Waiting,
    /// Reported good, with a detail for the log (an address, a firmware version).
    Passed(String),
    /// Reported bad, with the reason.
    Failed(String),
}

/// Everything the check knows about this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    statuses: [Status; 5],
}

impl Facts {
    /// All facts waiting, except the web API and SIP when they are not configured.
    pub fn new(web_configured: bool, sip_configured: bool) -> Facts {
        let mut facts = Facts {
            statuses: std::array::from_fn(|_| Status::Waiting),
        };
        if !web_configured {
            facts.set(Fact::Web, Status::NotConfigured);
        }
        if !sip_configured {
            facts.set(Fact::Sip, Status::NotConfigured);
        }
        facts
    }

    /// Where `fact` stands.
    pub fn status(&self, fact: Fact) -> &Status {
        &self.statuses[fact.index()]
    }

    /// Records where `fact` stands.
    pub fn set(&mut self, fact: Fact, status: Status) {
        self.statuses[fact.index()] = status;
    }

    /// `fact: detail` of every passed fact, for the log.
    pub fn passed_summary(&self) -> String {
        Fact::ALL
            .iter()
            .filter_map(|&f| match self.status(f) {
                Status::Passed(detail) => Some(format!("{f}: {detail}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why the facts are judged before all of them came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cutoff {
    /// The deadline passed: every missing fact failed.
    Deadline(Duration),
    /// The daemon stopped with this error: the first missing fact (the step it was
    /// on) failed with it, the later ones were never reached.
    Stopped(String),
}

/// One failed fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The fact.
    pub fact: Fact,
    /// Why it failed.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.fact, self.reason)
    }
}

/// The health check's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some required fact is still missing and nothing failed.
    Waiting,
    /// Every required fact passed.
    Healthy,
    /// These facts failed (in start order).
    Unhealthy(Vec<Failure>),
}

/// Decides from `facts` alone. Without a `cutoff`, missing facts mean
/// [`Verdict::Waiting`] unless one already failed; with one, missing facts fail.
pub fn verdict(facts: &Facts, cutoff: Option<&Cutoff>) -> Verdict {
    let mut failures = Vec::new();
    let mut waiting = false;
    for fact in Fact::ALL {
        match facts.status(fact) {
            Status::NotConfigured | Status::Passed(_) => {}
            Status::Failed(reason) => failures.push(Failure {
                fact,
                reason: reason.clone(),
            }),
            Status::Waiting => {
                let reason = match cutoff {
                    None => {
                        waiting = true;
                        continue;
                    }
                    Some(Cutoff::Deadline(d)) => {
                        format!("not reached within {d:?}")
                    }
                    Some(Cutoff::Stopped(error)) if !waiting => {
                        // Only the first missing step gets the error; mark it taken.
                        waiting = true;
                        format!("branchd stopped before it: {error}")
                    }
                    Some(Cutoff::Stopped(_)) => "not reached".to_owned(),
                };
                failures.push(Failure { fact, reason });
            }
        }
    }
    if !failures.is_empty() {
        Verdict::Unhealthy(failures)
    } else if waiting {
        Verdict::Waiting
    } else {
        Verdict::Healthy
    }
}

/// `fact: reason; ...` for logs and errors.
pub fn summarize(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------
// Slots
// ---------------------------------------------------------------------------------

/// What this boot is, as far as updates go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// No `[update]`: this box has no A/B slots; the check only logs.
    NoSlots,
    /// The slot state could not be read: nothing can be committed.
    Unreadable {
        /// Why.
        reason: String,
    },
    /// The first boot of a freshly installed slot: the check decides its fate.
    Trial {
        /// The booted, pending slot.
        slot: SlotId,
        /// Its image version.
        version: Option<Version>,
        /// The slot the next boot returns to unless this one is committed.
        fallback: SlotId,
    },
    /// A committed (good) slot: nothing to do.
    Committed {
        /// The booted slot.
        slot: SlotId,
    },
    /// The booted slot is empty or bad by the state: nothing to commit.
    Unexpected {
        /// The booted slot.
        slot: SlotId,
        /// Its status.
        status: SlotStatus,
    },
}

/// Classifies a boot of slot `booted` under `state`: a trial when that slot is
/// `Pending` (installed and booted once, not yet marked good).
pub fn classify(state: &SlotState, booted: SlotId) -> Boot {
    let info = state.slot(booted);
    match info.status {
        SlotStatus::Pending { .. } => Boot::Trial {
            slot: booted,
            version: info.version,
            fallback: booted.other(),
        },
        SlotStatus::Good => Boot::Committed { slot: booted },
        status => Boot::Unexpected {
            slot: booted,
            status,
        },
    }
}

/// Finds `branchline.slot=A|B` in a kernel command line: `None` when absent, the
/// value when it is not `A` or `B` (either case).
pub fn booted_slot_from_cmdline(cmdline: &str) -> Option<Result<SlotId, String>> {
    let prefix = format!("{CMDLINE_SLOT_PARAM}=");
    // The last occurrence wins, as for the kernel's own parameters.
    let value = cmdline
        .split_whitespace()
        .rev()
        .find_map(|word| word.strip_prefix(&prefix))?;
    Some(match value {
        "A" | "a" => Ok(SlotId::A),
        "B" | "b" => Ok(SlotId::B),
        other => Err(other.to_owned()),
    })
}

/// Why the slot state could not be read or committed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The backend failed (IO, `fw_printenv`/`fw_setenv`, a malformed state, a
    /// refused transition).
    #[error("slot state: {0}")]
    Image(#[from] branchline_image::Error),
    /// The kernel command line could not be read.
    #[error("{}: cannot read the kernel command line: {source}", path.display())]
    Cmdline {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The kernel command line does not name the booted slot.
    #[error("{}: no {CMDLINE_SLOT_PARAM}=A|B: the bootloader must name the booted slot", path.display())]
    NoBootedSlot {
        /// The file.
        path: PathBuf,
    },
    /// The kernel command line names something else than A or B.
    #[error("{}: {CMDLINE_SLOT_PARAM}={value:?} is not A or B", path.display())]
    BadBootedSlot {
        /// The file.
        path: PathBuf,
        /// The value found.
        value: String,
    },
    /// By the time of the commit the booted slot was no longer pending.
    #[error("slot {slot} is {status:?}, no longer on trial: nothing to commit")]
    NotOnTrial {
        /// The booted slot.
        slot: SlotId,
        /// Its status now.
        status: SlotStatus,
    },
    /// The blocking worker running the backend panicked or was cancelled.
    #[error("the slot state worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// The `[update]` slot backend and how the booted slot is found.
#[derive(Debug, Clone)]
pub struct Slots {
    store: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(DirSlots),
    Uboot { env: UbootEnv, cmdline: PathBuf },
}

impl Slots {
    /// The backend `[update] backend` names.
    pub fn new(backend: &SlotBackend) -> Slots {
        let store = match backend {
            SlotBackend::Dir { root } => Backend::Dir(DirSlots::new(root)),
            SlotBackend::Uboot {
                fw_printenv,
                fw_setenv,
                cmdline,
                ..
            } => Backend::Uboot {
                env: UbootEnv::new(fw_printenv, fw_setenv),
                cmdline: cmdline.clone(),
            },
        };
        Slots { store }
    }

    fn load(&self) -> Result<SlotState, SlotError> {
        Ok(match &self.store {
            Backend::Dir(d) => d.load()?,
            Backend::Uboot { env, .. } => env.load()?,
        })
    }

    fn save(&mut self, state: &SlotState) -> Result<(), SlotError> {
        match &mut self.store {
            Backend::Dir(d) => d.save(state)?,
            Backend::Uboot { env, .. } => env.save(state)?,
        }
        Ok(())
    }

    /// The booted slot: the state's active slot for the directory backend (the boot
    /// step sets it), `branchline.slot=` on the kernel command line for U-Boot.
    fn booted(&self, state: &SlotState) -> Result<SlotId, SlotError> {
        match &self.store {
            Backend::Dir(_) => Ok(state.active),
            Backend::Uboot { cmdline, .. } => read_cmdline_slot(cmdline),
        }
    }

    /// The slot state and the booted slot (blocking), for the updater's trial record
    /// ([`crate::updater::trial`]).
    pub fn read(&self) -> Result<(SlotState, SlotId), SlotError> {
        let state = self.load()?;
        let booted = self.booted(&state)?;
        Ok((state, booted))
    }

    /// Reads the state and classifies this boot (blocking: file IO or a program).
    pub fn inspect(&self) -> Result<Boot, SlotError> {
        let state = self.load()?;
        let booted = self.booted(&state)?;
        Ok(classify(&state, booted))
    }

    /// Marks the booted trial slot `slot` good (raising the anti-rollback floor) and
    /// persists that durably; returns the new state. Reads the state afresh and refuses
    /// when `slot` is no longer pending (blocking).
    pub fn commit(&mut self, slot: SlotId) -> Result<SlotState, SlotError> {
        let state = self.load()?;
        let status = state.slot(slot).status;
        if !matches!(status, SlotStatus::Pending { .. }) {
            return Err(SlotError::NotOnTrial { slot, status });
        }
        // On U-Boot the bootloader spent the try without touching BRANCHLINE_ACTIVE:
        // the booted slot becomes the active one as it is committed.
        let next = SlotState {
            active: slot,
            ..state
        }
        .mark_good()?;
        self.save(&next)?;
        Ok(next)
    }
}

fn read_cmdline_slot(path: &Path) -> Result<SlotId, SlotError> {
    let text = std::fs::read_to_string(path).map_err(|source| SlotError::Cmdline {
        path: path.to_owned(),
        source,
    })?;
    match booted_slot_from_cmdline(&text) {
        Some(Ok(slot)) => Ok(slot),
        Some(Err(value)) => Err(SlotError::BadBootedSlot {
            path: path.to_owned(),
            value,
        }),
        None => Err(SlotError::NoBootedSlot {
            path: path.to_owned(),
        }),
    }
}

// ---------------------------------------------------------------------------------
// The check task
// ---------------------------------------------------------------------------------

/// How the daemon ended, as told to the check by [`HealthCheck::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopped {
    /// A shutdown request (SIGTERM): not a failure.
    Shutdown,
    /// A fatal error.
    Failed(String),
}

/// What the check task shares with the daemon.
#[derive(Debug, Clone)]
struct Shared {
    facts: Facts,
    stopped: Option<Stopped>,
}

/// The daemon's side of the check: reports facts as they happen.
#[derive(Debug)]
pub struct Reporter {
    shared: watch::Sender<Shared>,
    /// Turns true once this boot's trial slot is committed (the updater then reports
    /// `committed` to HQ).
    committed: watch::Receiver<bool>,
}

impl Reporter {
    /// `fact` holds; `detail` goes to the log.
    pub fn passed(&self, fact: Fact, detail: impl Into<String>) {
        let detail = detail.into();
        self.shared
            .send_modify(|s| s.facts.set(fact, Status::Passed(detail)));
    }

    /// `fact` does not hold, for `reason`.
    pub fn failed(&self, fact: Fact, reason: impl Into<String>) {
        let reason = reason.into();
        self.shared
            .send_modify(|s| s.facts.set(fact, Status::Failed(reason)));
    }

    /// True once this boot's trial slot is committed (never on other boots).
    pub fn trial_committed(&self) -> watch::Receiver<bool> {
        self.committed.clone()
    }

    fn stopped(&self, stopped: Stopped) {
        self.shared.send_modify(|s| s.stopped = Some(stopped));
    }
}

/// How the check ended (what [`HealthCheck::finish`] needs to know).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A trial slot was committed.
    Committed,
    /// A trial was healthy but its commit failed (logged).
    CommitFailed,
    /// A trial failed the check.
    UnhealthyTrial { slot: SlotId, failed: String },
    /// Not a trial: the verdict was only logged.
    Logged,
    /// The daemon stopped (SIGTERM) before a verdict.
    Interrupted,
}

/// The running health check of one daemon start.
#[derive(Debug)]
pub struct HealthCheck {
    reporter: Reporter,
    /// Cancelled when a trial boot failed: the daemon then shuts down.
    unhealthy: CancellationToken,
    task: JoinHandle<Outcome>,
}

impl HealthCheck {
    /// Reads the `[update]` slot state (without `[update]`: no slots) and starts the
    /// check with `[update] health_deadline_s`. A slot state that cannot be read is
    /// logged and makes the check log-only: nothing is committed, so a trial rolls back.
    pub async fn start(config: &Config) -> HealthCheck {
        let deadline = config.update.as_ref().map_or(
            Duration::from_secs(HEALTH_DEADLINE_S.0.unsigned_abs()),
            |u| u.health_deadline,
        );
        let (boot, slots) = match &config.update {
            None => (Boot::NoSlots, None),
            Some(update) => {
                let slots = Slots::new(&update.backend);
                let probe = slots.clone();
                let boot = tokio::task::spawn_blocking(move || probe.inspect())
                    .await
                    .map_err(SlotError::from)
                    .and_then(|r| r);
                match boot {
                    Ok(boot) => (boot, Some(slots)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the A/B slot state: this boot cannot be committed");
                        (
                            Boot::Unreadable {
                                reason: e.to_string(),
                            },
                            None,
                        )
                    }
                }
            }
        };
        HealthCheck::spawn(
            boot,
            slots,
            deadline,
            config.web.listen.is_some(),
            config.sip.is_some(),
        )
    }

    /// Starts the check for a boot already classified (`slots` is where a trial is
    /// committed). Needs a tokio runtime.
    pub fn spawn(
        boot: Boot,
        slots: Option<Slots>,
        deadline: Duration,
        web_configured: bool,
        sip_configured: bool,
    ) -> HealthCheck {
        match &boot {
            Boot::Trial {
                slot,
                version,
                fallback,
            } => tracing::info!(
                slot = %slot,
                version = %version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
                deadline_s = deadline.as_secs(),
                "trial boot of an update: committed once healthy, else the next boot returns to slot {fallback}"
            ),
            Boot::Unexpected { slot, status } => tracing::warn!(
                slot = %slot,
                ?status,
                "booted a slot the slot state does not mark pending or good"
            ),
            Boot::NoSlots => {
                tracing::debug!("no [update] section: no A/B slots, the health check only logs")
            }
            Boot::Committed { slot } => tracing::debug!(slot = %slot, "booted a committed slot"),
            Boot::Unreadable { .. } => {}
        }
        let (tx, rx) = watch::channel(Shared {
            facts: Facts::new(web_configured, sip_configured),
            stopped: None,
        });
        let unhealthy = CancellationToken::new();
        let (committed_tx, committed) = watch::channel(false);
        let task = tokio::spawn(check(
            rx,
            deadline,
            boot,
            slots,
            unhealthy.clone(),
            committed_tx,
        ));
        HealthCheck {
            reporter: Reporter {
                shared: tx,
                committed,
            },
            unhealthy,
            task,
        }
    }

    /// Where the daemon reports its facts.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Completes when this boot is an update's trial and it failed the check: the
    /// daemon should then shut down (see [`EXIT_UNHEALTHY_TRIAL`]).
    pub fn unhealthy(&self) -> WaitForCancellationFutureOwned {
        self.unhealthy.clone().cancelled_owned()
    }

    /// Tells the check how the daemon ended (`result` of its run) and waits for the
    /// check's last word. Returns `result`, except after a failed trial:
    /// [`Error::UpdateUnhealthy`] naming the failed facts.
    pub async fn finish(self, result: Result<()>) -> Result<()> {
        self.reporter.stopped(match &result {
            Ok(()) => Stopped::Shutdown,
            Err(e) => Stopped::Failed(e.to_string()),
        });
        match self.task.await {
            Ok(Outcome::UnhealthyTrial { slot, failed }) => {
                if let Err(e) = &result {
                    // The error is part of `failed` when it cut the start short; log
                    // it whole in any case, since the returned error replaces it.
                    tracing::error!(error = %e, "branchd failed");
                }
                Err(Error::UpdateUnhealthy { slot, failed })
            }
            Ok(_) => result,
            Err(e) => {
                tracing::error!(error = %e, "health check task failed");
                result
            }
        }
    }
}

/// The check task: waits for a verdict, then acts on it.
async fn check(
    mut rx: watch::Receiver<Shared>,
    deadline: Duration,
    boot: Boot,
    slots: Option<Slots>,
    unhealthy: CancellationToken,
    committed: watch::Sender<bool>,
) -> Outcome {
    let until = tokio::time::Instant::now() + deadline;
    let (verdict, facts) = loop {
        let shared = rx.borrow_and_update().clone();
        match verdict(&shared.facts, None) {
            Verdict::Waiting => {}
            done => break (done, shared.facts),
        }
        match shared.stopped {
            Some(Stopped::Failed(error)) => {
                break (
                    verdict(&shared.facts, Some(&Cutoff::Stopped(error))),
                    shared.facts,
                )
            }
            Some(Stopped::Shutdown) => {
                if let Boot::Trial { slot, .. } = &boot {
                    tracing::warn!(
                        slot = %slot,
                        "branchd stopped before the update health check finished: the slot stays on trial and the next boot returns to the previous slot"
                    );
                }
                return Outcome::Interrupted;
            }
            None => {}
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The daemon dropped its side without a word: nothing more comes.
                    return Outcome::Interrupted;
                }
            }
            () = tokio::time::sleep_until(until) => {
                let facts = rx.borrow().facts.clone();
                break (verdict(&facts, Some(&Cutoff::Deadline(deadline))), facts);
            }
        }
    };
    act(verdict, &facts, boot, slots, &unhealthy, &committed).await
}

async fn act(
    verdict: Verdict,
    facts: &Facts,
    boot: Boot,
    slots: Option<Slots>,
    unhealthy: &CancellationToken,
    committed_tx: &watch::Sender<bool>,
) -> Outcome {
    let passed = facts.passed_summary();
    match (verdict, boot, slots) {
        (Verdict::Healthy, Boot::Trial { slot, fallback, .. }, Some(mut slots)) => {
            let committed = tokio::task::spawn_blocking(move || slots.commit(slot))
                .await
                .map_err(SlotError::from)
                .and_then(|r| r);
            match committed {
                Ok(state) => {
                    let info = state.slot(slot);
                    tracing::info!(
                        slot = %slot,
                        version = %info.version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
                        floor = %state.floor.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                        facts = %passed,
                        "update committed"
                    );
                    committed_tx.send_replace(true);
                    Outcome::Committed
                }
                Err(e) => {
                    tracing::error!(
                        slot = %slot,
                        error = %e,
                        "healthy, but the update could not be committed: the next boot returns to slot {fallback}"
                    );
                    Outcome::CommitFailed
                }
            }
        }
        (
            Verdict::Unhealthy(failures),
            Boot::Trial {
                slot,
                version,
                fallback,
            },
            _,
        ) => {
            let failed = summarize(&failures);
            tracing::error!(
                slot = %slot,
                version = %version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
                failed = %failed,
                "update health check failed: slot not marked good, the next boot returns to slot {fallback}; stopping branchd (exit status {EXIT_UNHEALTHY_TRIAL})"
            );
            unhealthy.cancel();
            Outcome::UnhealthyTrial { slot, failed }
        }
        (Verdict::Unhealthy(failures), Boot::NoSlots, _) => {
            tracing::warn!(failed = %summarize(&failures), "health check failed (no A/B slots: nothing to roll back)");
            Outcome::Logged
        }
        (Verdict::Unhealthy(failures), Boot::Unreadable { reason }, _) => {
            tracing::warn!(failed = %summarize(&failures), slot_state = %reason, "health check failed (slot state unreadable: nothing committed)");
            Outcome::Logged
        }
        (Verdict::Unhealthy(failures), boot, _) => {
            tracing::debug!(failed = %summarize(&failures), ?boot, "health check failed on a boot that is not a trial");
            Outcome::Logged
        }
        (Verdict::Healthy, Boot::NoSlots, _) => {
            tracing::info!(facts = %passed, "health check passed (no A/B slots)");
            Outcome::Logged
        }
        (Verdict::Healthy, Boot::Unreadable { reason }, _) => {
            tracing::warn!(facts = %passed, slot_state = %reason, "health check passed, but the slot state is unreadable: nothing committed");
            Outcome::Logged
        }
        (Verdict::Healthy | Verdict::Waiting, boot, _) => {
            tracing::debug!(facts = %passed, ?boot, "health check passed; not a trial boot");
            Outcome::Logged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_passed(web: bool, sip: bool) -> Facts {
        let mut f = Facts::new(web, sip);
        for fact in Fact::ALL {
            if f.status(fact) == &Status::Waiting {
                f.set(fact, Status::Passed("ok".into()));
            }
        }
        f
    }

    #[test]
    fn healthy_when_every_configured_fact_passed() {
        assert_eq!(verdict(&all_passed(true, true), None), Verdict::Healthy);
        // Web and SIP not configured: not required.
        let f = all_passed(false, false);
        assert_eq!(f.status(Fact::Sip), &Status::NotConfigured);
        assert_eq!(verdict(&f, None), Verdict::Healthy);
        assert_eq!(
            verdict(&f, Some(&Cutoff::Deadline(Duration::from_secs(1)))),
            Verdict::Healthy
        );
    }

    #[test]
    fn each_missing_fact_waits_then_fails_at_the_deadline() {
        let deadline = Cutoff::Deadline(Duration::from_secs(120));
        for missing in Fact::ALL {
            let mut f = all_passed(true, true);
            f.set(missing, Status::Waiting);
            assert_eq!(verdict(&f, None), Verdict::Waiting, "{missing}");
            assert_eq!(
                verdict(&f, Some(&deadline)),
                Verdict::Unhealthy(vec![Failure {
                    fact: missing,
                    reason: "not reached within 120s".into()
                }]),
                "{missing}"
            );
        }
    }

    #[test]
    fn each_failed_fact_is_unhealthy_at_once() {
        for failed in Fact::ALL {
            let mut f = Facts::new(true, true);
            f.set(failed, Status::Failed("broken".into()));
            // The others are still waiting: no need to wait for them.
            let v = verdict(&f, None);
            assert_eq!(
                v,
                Verdict::Unhealthy(vec![Failure {
                    fact: failed,
                    reason: "broken".into()
                }]),
                "{failed}"
            );
        }
    }

    #[test]
    fn a_stop_names_the_step_it_cut_short() {
        let mut f = Facts::new(true, true);
        f.set(Fact::Store, Status::Passed("read".into()));
        f.set(Fact::LineController, Status::Passed("ready".into()));
        f.set(Fact::Web, Status::Passed("127.0.0.1:8080".into()));
        let v = verdict(&f, Some(&Cutoff::Stopped("cannot bind 5060".into())));
        let Verdict::Unhealthy(failures) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            summarize(&failures),
            "sip: branchd stopped before it: cannot bind 5060; daemon: not reached"
        );
    }

    #[test]
    fn trial_committed_and_unexpected_boots() {
        let v1 = Version::new(1, 0, 0);
        let v2 = Version::new(1, 1, 0);
        let state = SlotState {
            active: SlotId::B,
            a: branchline_image::slot::SlotInfo {
                status: SlotStatus::Good,
                version: Some(v1),
                min_version: Some(v1),
            },
            b: branchline_image::slot::SlotInfo {
                status: SlotStatus::Pending { tries_left: 0 },
                version: Some(v2),
                min_version: Some(v1),
            },
            floor: Some(v1),
        };
        assert_eq!(
            classify(&state, SlotId::B),
            Boot::Trial {
                slot: SlotId::B,
                version: Some(v2),
                fallback: SlotId::A
            }
        );
        assert_eq!(
            classify(&state, SlotId::A),
            Boot::Committed { slot: SlotId::A }
        );
        let fresh = SlotState::default();
        assert_eq!(
            classify(&fresh, SlotId::A),
            Boot::Unexpected {
                slot: SlotId::A,
                status: SlotStatus::Empty
            }
        );
    }

    #[test]
    fn booted_slot_on_the_kernel_command_line() {
        assert_eq!(
            booted_slot_from_cmdline("console=ttyS0 root=/dev/mmcblk0p2 branchline.slot=B rw\n"),
            Some(Ok(SlotId::B))
        );
        assert_eq!(
            booted_slot_from_cmdline("branchline.slot=B branchline.slot=a"),
            Some(Ok(SlotId::A)),
            "last one wins"
        );
        assert_eq!(booted_slot_from_cmdline("console=ttyS0 rw"), None);
        assert_eq!(
            booted_slot_from_cmdline("xbranchline.slot=A"),
            None,
            "whole words only"
        );
        assert_eq!(
            booted_slot_from_cmdline("branchline.slot=C"),
            Some(Err("C".into()))
        );
    }

    // --- slot backends ------------------------------------------------------------

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    /// A committed A (1.0.0) and B just installed (1.1.0) and booted once.
    fn trial_of_b() -> SlotState {
        SlotState {
            active: SlotId::A,
            a: branchline_image::slot::SlotInfo {
                status: SlotStatus::Good,
                version: Some(v("1.0.0")),
                min_version: Some(v("1.0.0")),
            },
            b: branchline_image::slot::SlotInfo::EMPTY,
            floor: Some(v("1.0.0")),
        }
        .begin_install(SlotId::B)
        .and_then(|s| s.finish_install(SlotId::B, v("1.1.0"), v("1.1.0")))
        .and_then(|s| s.on_boot())
        .map(|(slot, s)| {
            assert_eq!(slot, SlotId::B);
            s
        })
        .expect("trial state")
    }

    #[test]
    fn dir_commit_marks_the_trial_good_and_refuses_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = DirSlots::new(dir.path());
        store.save(&trial_of_b()).expect("save");
        let mut slots = Slots::new(&SlotBackend::Dir {
            root: dir.path().to_owned(),
        });
        let Boot::Trial { slot, .. } = slots.inspect().expect("inspect") else {
            panic!("not a trial")
        };
        assert_eq!(slot, SlotId::B);
        let state = slots.commit(slot).expect("commit");
        assert_eq!(state.b.status, SlotStatus::Good);
        assert_eq!(state.floor, Some(v("1.1.0")));
        assert_eq!(store.load().expect("load"), state, "persisted");
        assert_eq!(
            slots.inspect().expect("inspect"),
            Boot::Committed { slot: SlotId::B }
        );
        // Committing again is refused and changes nothing.
        let before = std::fs::read(dir.path().join("state.json")).expect("state");
        assert!(matches!(
            slots.commit(SlotId::B),
            Err(SlotError::NotOnTrial { .. })
        ));
        assert_eq!(
            std::fs::read(dir.path().join("state.json")).expect("state"),
            before
        );
    }

    /// `fw_printenv` / `fw_setenv` stand-ins over a `NAME=VALUE` file.
    fn fake_uboot(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let env = dir.join("uboot.env");
        let print = dir.join("fw_printenv");
        let set = dir.join("fw_setenv");
        std::fs::write(
            &print,
            format!(
                "#!/bin/sh\n[ -f '{e}' ] && cat '{e}'\nexit 0\n",
                e = env.display()
            ),
        )
        .expect("write");
        std::fs::write(
            &set,
            format!(
                "#!/bin/sh\n[ \"$1\" = -s ] || exit 2\nE='{e}'\ntouch \"$E\"\n\
                 while read -r name value; do\n  grep -v \"^$name=\" \"$E\" > \"$E.new\" || true\n\
                 [ -n \"$value\" ] && echo \"$name=$value\" >> \"$E.new\"\n  mv \"$E.new\" \"$E\"\ndone < \"$2\"\n",
                e = env.display()
            ),
        )
        .expect("write");
        for p in [&print, &set] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        (print, set, env)
    }

    #[test]
    fn uboot_commit_uses_the_slot_on_the_kernel_command_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let (print, set, env) = fake_uboot(dir.path());
        let cmdline = dir.path().join("cmdline");
        let backend = SlotBackend::Uboot {
            fw_printenv: print.clone(),
            fw_setenv: set.clone(),
            cmdline: cmdline.clone(),
            slots: None,
        };
        // What the installer leaves, then what U-Boot does: BOOT_B_LEFT 1 -> 0 and
        // `branchline.slot=B` in bootargs; BRANCHLINE_ACTIVE still says A.
        let installed = {
            let s = trial_of_b();
            SlotState {
                active: SlotId::A,
                b: branchline_image::slot::SlotInfo {
                    status: SlotStatus::Pending { tries_left: 1 },
                    ..s.b
                },
                ..s
            }
        };
        UbootEnv::new(&print, &set).save(&installed).expect("save");
        let text = std::fs::read_to_string(&env).expect("env");
        std::fs::write(&env, text.replace("BOOT_B_LEFT=1", "BOOT_B_LEFT=0")).expect("env");

        let mut slots = Slots::new(&backend);
        assert!(
            matches!(slots.inspect(), Err(SlotError::Cmdline { .. })),
            "no command line file"
        );
        std::fs::write(&cmdline, "console=ttyS0 rw\n").expect("cmdline");
        assert!(matches!(
            slots.inspect(),
            Err(SlotError::NoBootedSlot { .. })
        ));
        std::fs::write(&cmdline, "console=ttyS0 branchline.slot=B rw\n").expect("cmdline");
        assert_eq!(
            slots.inspect().expect("inspect"),
            Boot::Trial {
                slot: SlotId::B,
                version: Some(v("1.1.0")),
                fallback: SlotId::A
            }
        );
        slots.commit(SlotId::B).expect("commit");
        let vars = std::fs::read_to_string(&env).expect("env");
        for line in [
            "BOOT_ORDER=B A",
            "BOOT_B_LEFT=3",
            "BRANCHLINE_ACTIVE=B",
            "BRANCHLINE_SLOT_B=good 1.1.0 1.1.0",
            "BRANCHLINE_FLOOR=1.1.0",
        ] {
            assert!(vars.lines().any(|l| l == line), "{line} not in\n{vars}");
        }

        // A fallback boot of A after B's try was spent elsewhere: not a trial.
        std::fs::write(&cmdline, "branchline.slot=A").expect("cmdline");
        assert_eq!(
            slots.inspect().expect("inspect"),
            Boot::Committed { slot: SlotId::A }
        );
    }

    // --- the task -----------------------------------------------------------------

    fn trial_check(dir: &Path, deadline: Duration, sip: bool) -> HealthCheck {
        DirSlots::new(dir).save(&trial_of_b()).expect("save");
        let slots = Slots::new(&SlotBackend::Dir {
            root: dir.to_owned(),
        });
        let boot = slots.inspect().expect("inspect");
        HealthCheck::spawn(boot, Some(slots), deadline, false, sip)
    }

    fn report_all_but(h: &HealthCheck, skip: Option<Fact>) {
        for fact in [Fact::Store, Fact::LineController, Fact::Sip, Fact::Daemon] {
            if Some(fact) != skip {
                h.reporter().passed(fact, "ok");
            }
        }
    }

    fn status_of_b(dir: &Path) -> SlotStatus {
        DirSlots::new(dir).load().expect("load").b.status
    }

    #[tokio::test]
    async fn healthy_trial_is_committed() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = trial_check(dir.path(), Duration::from_secs(60), true);
        report_all_but(&h, None);
        let committed = async {
            while status_of_b(dir.path()) != SlotStatus::Good {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), committed)
            .await
            .expect("committed in time");
        // The updater hears of it (to report `committed` to HQ).
        let mut heard = h.reporter().trial_committed();
        tokio::time::timeout(Duration::from_secs(10), heard.wait_for(|c| *c))
            .await
            .expect("signalled in time")
            .expect("sender alive");
        h.finish(Ok(())).await.expect("clean stop");
        assert_eq!(status_of_b(dir.path()), SlotStatus::Good);
    }

    #[tokio::test]
    async fn missing_fact_at_the_deadline_stops_the_daemon_and_keeps_the_trial() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = trial_check(dir.path(), Duration::from_millis(200), true);
        report_all_but(&h, Some(Fact::Sip));
        tokio::time::timeout(Duration::from_secs(10), h.unhealthy())
            .await
            .expect("unhealthy signalled");
        let err = h.finish(Ok(())).await.expect_err("unhealthy trial");
        assert!(
            matches!(&err, Error::UpdateUnhealthy { slot: SlotId::B, failed } if failed == "sip: not reached within 200ms"),
            "{err}"
        );
        assert_eq!(
            status_of_b(dir.path()),
            SlotStatus::Pending { tries_left: 0 }
        );
    }

    #[tokio::test]
    async fn a_start_error_fails_the_trial_naming_the_step() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = trial_check(dir.path(), Duration::from_secs(60), false);
        h.reporter().passed(Fact::Store, "ok");
        let start_error = Error::LineControllerSilent {
            path: PathBuf::from("/dev/ttyS1"),
            waited: Duration::from_secs(5),
        };
        let err = h.finish(Err(start_error)).await.expect_err("unhealthy");
        let Error::UpdateUnhealthy { slot, failed } = &err else {
            panic!("{err}")
        };
        assert_eq!(*slot, SlotId::B);
        assert!(
            failed.starts_with("line_controller: branchd stopped before it: ")
                && failed.contains("/dev/ttyS1")
                && failed.ends_with("; daemon: not reached"),
            "{failed}"
        );
        assert_eq!(
            status_of_b(dir.path()),
            SlotStatus::Pending { tries_left: 0 }
        );
    }

    #[tokio::test]
    async fn shutdown_before_the_verdict_keeps_the_trial_without_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let h = trial_check(dir.path(), Duration::from_secs(60), true);
        report_all_but(&h, Some(Fact::Daemon));
        h.finish(Ok(())).await.expect("a shutdown is not a failure");
        assert_eq!(
            status_of_b(dir.path()),
            SlotStatus::Pending { tries_left: 0 }
        );
    }

    #[tokio::test]
    async fn without_slots_an_unhealthy_boot_only_logs() {
        let h = HealthCheck::spawn(Boot::NoSlots, None, Duration::from_millis(50), true, true);
        h.reporter().passed(Fact::Store, "ok");
        let unhealthy = h.unhealthy();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), unhealthy)
                .await
                .is_err(),
            "no slots: never stops the daemon"
        );
        h.finish(Ok(())).await.expect("logged only");
        // A start error stays the daemon's own error.
        let h = HealthCheck::spawn(Boot::NoSlots, None, Duration::from_secs(60), true, true);
        let err = h
            .finish(Err(Error::LinkLost {
                path: PathBuf::from("/dev/ttyS1"),
            }))
            .await
            .expect_err("error kept");
        assert!(matches!(err, Error::LinkLost { .. }), "{err}");
    }

    #[tokio::test]
    async fn committed_boot_is_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut state = trial_of_b().mark_good().expect("good");
        state.floor = Some(v("1.1.0"));
        DirSlots::new(dir.path()).save(&state).expect("save");
        let before = std::fs::read(dir.path().join("state.json")).expect("state");
        let slots = Slots::new(&SlotBackend::Dir {
            root: dir.path().to_owned(),
        });
        let boot = slots.inspect().expect("inspect");
        assert_eq!(boot, Boot::Committed { slot: SlotId::B });
        let h = HealthCheck::spawn(boot, Some(slots), Duration::from_millis(50), false, false);
        // Nothing reported: unhealthy at the deadline, but not a trial.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), h.unhealthy())
                .await
                .is_err()
        );
        h.finish(Ok(())).await.expect("not a trial");
        assert_eq!(
            std::fs::read(dir.path().join("state.json")).expect("state"),
            before
        );
    }
}
