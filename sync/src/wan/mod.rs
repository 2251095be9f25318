//! The box's WAN monitor: a sans-IO state machine over probe results for HQ and the
//! SIP trunk, with hysteresis. Its state drives survivability routing (outside calls
//! fall back from the SIP trunk to FXO lines while [`WanMonitor::trunk_usable`] is
//! false), the WAN LED, and the diagnostics page ([`WanMonitor::snapshot`]).
//!
//! # What the driver does
//!
//! After each input it drains [`WanMonitor::poll_probe`] (run each probe: an HTTPS
//! `GET` of HQ's health endpoint, a SIP `OPTIONS` to the trunk; answer
//! [`WanInput::Probe`] with the probe's id and the outcome, ok with its round-trip
//! time or failed) and [`WanMonitor::poll_event`], and sleeps until
//! [`WanMonitor::timeout`] or its next input. A probe without an answer by its
//! deadline counts as failed.
//!
//! # Per target
//!
//! Each target is *reachable* or not, and a reachable target may be *impaired*:
//!
//! - Before its first result a target is unknown and counts as unreachable; the first
//!   result decides at once (there is nothing to flap from yet).
//! - A reachable target becomes unreachable after
//!   [`WanConfig::down_after_failures`] consecutive failed probes, or when no probe
//!   succeeded for [`WanConfig::down_after_silence`] (also when probes stop coming
//!   back at all).
//! - An unreachable target becomes reachable after
//!   [`WanConfig::up_after_successes`] consecutive successful probes.
//! - A reachable target is impaired while its smoothed round-trip time (EWMA with
//!   weight 1/8, as TCP's SRTT) is above [`WanConfig::rtt_degraded`] until it falls
//!   below [`WanConfig::rtt_recovered`], or while the share of failed probes among the
//!   last [`WanConfig::loss_window`] is at or above
//!   [`WanConfig::loss_degraded_pct`] until it is at or below
//!   [`WanConfig::loss_recovered_pct`] (the share is of the whole window, so a short
//!   history cannot read as heavy loss; the failures of a down period are forgotten
//!   when the target comes back). Two thresholds per measure keep a value that
//!   hovers around one of them from flapping the state.
//!
//! # Overall state
//!
//! - [`WanState::Offline`]: no monitored target is reachable.
//! - [`WanState::Online`]: every monitored target is reachable and none is impaired.
//! - [`WanState::Degraded`]: anything between (one target down, or one impaired).
//!
//! The overall state is judged when every probe of a round has its answer (or
//! failed at its deadline), so answers a moment apart do not show a passing state in
//! between; [`WanMonitor::trunk_usable`] follows the trunk's own answers at once.
//!
//! Probes go out every [`WanConfig::probe_interval`] while Online and every
//! [`WanConfig::fast_probe_interval`] otherwise, so recovery is noticed quickly.
//! A target that flaps (ok, failed, ok, failed) never collects enough consecutive
//! failures to go down, but its loss makes it impaired: the state goes Degraded once
//! and stays there until the window is clean again, instead of toggling with every
//! probe.
//!
//! The monitor watches HQ always and the trunk when the box has one
//! ([`WanMonitor::new`]'s `trunk` flag); a box without a SIP trunk routes outside
//! calls over FXO anyway.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::error::ConfigError;

/// What the monitor probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The HQ server (HTTPS health check).
    Hq,
    /// The SIP trunk (SIP OPTIONS).
    Trunk,
}

/// The WAN as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WanState {
    /// Every monitored target reachable and unimpaired.
    Online,
    /// Some target down or impaired, but not all down.
    Degraded,
    /// No monitored target reachable.
    Offline,
}

/// The outcome of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The target answered, after `rtt`.
    Ok {
        /// Round-trip time.
        rtt: Duration,
    },
    /// No answer, an error answer, or a connection failure.
    Failed,
}

/// Names one probe so its answer can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

/// A probe for the driver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Quote this in [`WanInput::Probe`].
    pub id: ProbeId,
    /// What to probe.
    pub target: Target,
    /// When the monitor counts the probe as failed.
    pub deadline: Instant,
}

/// Inputs of the [`WanMonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanInput {
    /// A probe finished.
    Probe {
        /// The probe.
        id: ProbeId,
        /// How it went.
        outcome: ProbeOutcome,
    },
    /// Probe every target now (the diagnostics page's "test WAN" button, or the
    /// network interface came up).
    ProbeNow,
}

/// Outputs of the [`WanMonitor`], each change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanEvent {
    /// The overall state changed.
    State {
        /// The state before.
        from: WanState,
        /// The state now.
        to: WanState,
    },
    /// A target became reachable or unreachable.
    Target {
        /// Which.
        target: Target,
        /// Whether it is reachable now.
        reachable: bool,
    },
}

/// Settings of the [`WanMonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WanConfig {
    /// Time between probes of a target while Online.
    pub probe_interval: Duration,
    /// Time between probes while Degraded or Offline.
    pub fast_probe_interval: Duration,
    /// How long a probe may take.
    pub probe_timeout: Duration,
    /// Consecutive failures that make a reachable target unreachable.
    pub down_after_failures: u32,
    /// Time without a success that makes a reachable target unreachable.
    pub down_after_silence: Duration,
    /// Consecutive successes that make an unreachable target reachable.
    pub up_after_successes: u32,
    /// Smoothed RTT above which a target is impaired.
    pub rtt_degraded: Duration,
    /// Smoothed RTT below which an impaired target is no longer slow.
    pub rtt_recovered: Duration,
    /// How many recent probes the loss share is measured over (1..=64).
    pub loss_window: usize,
    /// Loss share (percent) at or above which a target is impaired.
    pub loss_degraded_pct: u8,
    /// Loss share (percent) at or below which it is no longer lossy.
    pub loss_recovered_pct: u8,
}

impl Default for WanConfig {
    /// Probes every 10 s (2 s when not Online) with a 3 s timeout; down after 3
    /// failures or 30 s without success; up after 3 successes; impaired above 400 ms
    /// smoothed RTT (recovered below 250 ms) or at 30 % loss over the last 10 probes
    /// (recovered at 10 %).
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(10),
            fast_probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            down_after_failures: 3,
            down_after_silence: Duration::from_secs(30),
            up_after_successes: 3,
            rtt_degraded: Duration::from_millis(400),
            rtt_recovered: Duration::from_millis(250),
            loss_window: 10,
            loss_degraded_pct: 30,
            loss_recovered_pct: 10,
        }
    }
}

impl WanConfig {
    /// Checks every setting and that each pair of thresholds is ordered.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::agent::upload::range;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        const HOUR_MS: u64 = 3_600_000;
        range("probe_interval_ms", ms(self.probe_interval), 100, HOUR_MS)?;
        range(
            "fast_probe_interval_ms",
            ms(self.fast_probe_interval),
            100,
            ms(self.probe_interval),
        )?;
        range("probe_timeout_ms", ms(self.probe_timeout), 10, HOUR_MS)?;
        range(
            "down_after_failures",
            u64::from(self.down_after_failures),
            1,
            1000,
        )?;
        range(
            "down_after_silence_ms",
            ms(self.down_after_silence),
            100,
            24 * HOUR_MS,
        )?;
        range(
            "up_after_successes",
            u64::from(self.up_after_successes),
            1,
            1000,
        )?;
        range("rtt_degraded_ms", ms(self.rtt_degraded), 1, HOUR_MS)?;
        range(
            "rtt_recovered_ms",
            ms(self.rtt_recovered),
            0,
            ms(self.rtt_degraded),
        )?;
        range("loss_window", self.loss_window as u64, 1, 64)?;
        range(
            "loss_degraded_pct",
            u64::from(self.loss_degraded_pct),
            1,
            100,
        )?;
        range(
            "loss_recovered_pct",
            u64::from(self.loss_recovered_pct),
            0,
            u64::from(self.loss_degraded_pct).saturating_sub(1),
        )?;
        Ok(())
    }
}

/// One target's health, as the diagnostics page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSnapshot {
    /// Which target.
    pub target: Target,
    /// Whether it is reachable (false before the first result).
    pub reachable: bool,
    /// Whether it is reachable but slow or lossy.
    pub impaired: bool,
    /// When a probe last succeeded.
    pub last_ok: Option<Instant>,
    /// When a probe last failed.
    pub last_fail: Option<Instant>,
    /// Round-trip time of the last successful probe.
    pub rtt: Option<Duration>,
    /// Smoothed round-trip time.
    pub srtt: Option<Duration>,
    /// Share of failed probes among the recent ones, percent.
    pub loss_pct: u8,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Successful probes in a row.
    pub consecutive_successes: u32,
}

/// The monitor's state for the diagnostics page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanSnapshot {
    /// The overall state.
    pub state: WanState,
    /// Since when.
    pub since: Instant,
    /// Whether outside calls may use the SIP trunk.
    pub trunk_usable: bool,
    /// Each monitored target.
    pub targets: Vec<TargetSnapshot>,
}

impl WanSnapshot {
    /// The snapshot in wall-clock ms for JSON: `now` is the monitor's clock and
    /// `wall_now_ms` the same moment in ms since the Unix epoch.
    pub fn report(&self, now: Instant, wall_now_ms: i64) -> WanReport {
        let wall = |at: Instant| {
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if at <= now {
                wall_now_ms.saturating_sub(ms(now - at))
            } else {
                wall_now_ms.saturating_add(ms(at - now))
            }
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        WanReport {
            state: self.state,
            since_ms: wall(self.since),
            trunk_usable: self.trunk_usable,
            targets: self
                .targets
                .iter()
                .map(|t| TargetReport {
                    target: t.target,
                    reachable: t.reachable,
                    impaired: t.impaired,
                    last_ok_ms: t.last_ok.map(wall),
                    last_fail_ms: t.last_fail.map(wall),
                    rtt_ms: t.rtt.map(ms),
                    srtt_ms: t.srtt.map(ms),
                    loss_pct: t.loss_pct,
                })
                .collect(),
        }
    }
}

/// [`WanSnapshot`] in wall-clock ms, for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WanReport {
    /// The overall state.
    pub state: WanState,
    /// Since when (ms since the Unix epoch).
    pub since_ms: i64,
    /// Whether outside calls may use the SIP trunk.
    pub trunk_usable: bool,
    /// Each monitored target.
    pub targets: Vec<TargetReport>,
}

/// [`TargetSnapshot`] in wall-clock ms, for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// Which target.
    pub target: Target,
    /// Whether it is reachable.
    pub reachable: bool,
    /// Whether it is slow or lossy.
    pub impaired: bool,
    /// When a probe last succeeded.
    pub last_ok_ms: Option<i64>,
    /// When a probe last failed.
    pub last_fail_ms: Option<i64>,
    /// Round-trip time of the last successful probe, ms.
    pub rtt_ms: Option<u64>,
    /// Smoothed round-trip time, ms.
    pub srtt_ms: Option<u64>,
    /// Share of failed recent probes, percent.
    pub loss_pct: u8,
}

#[derive(Debug, Clone)]
struct TargetState {
    target: Target,
    /// None until the first result.
    reachable: Option<bool>,
    slow: bool,
    lossy: bool,
    last_ok: Option<Instant>,
    last_fail: Option<Instant>,
    rtt: Option<Duration>,
    srtt: Option<Duration>,
    /// Recent outcomes, true = failed.
    recent: VecDeque<bool>,
    failures: u32,
    successes: u32,
    /// When it last became reachable (the silence clock starts there too).
    up_since: Option<Instant>,
    /// The probe out, if any.
    outstanding: Option<Probe>,
    /// When the last probe went out.
    last_probe_at: Option<Instant>,
    next_probe_at: Instant,
}

impl TargetState {
    /// Failed probes among the last `window`, percent of the whole window (so a
    /// young history of two probes cannot read as 50 % loss).
    fn loss_pct(&self, window: usize) -> u8 {
        let failed = self.recent.iter().filter(|f| **f).count();
        u8::try_from(failed * 100 / window.max(1)).unwrap_or(100)
    }

    fn reachable(&self) -> bool {
        self.reachable == Some(true)
    }

    fn impaired(&self) -> bool {
        self.reachable() && (self.slow || self.lossy)
    }

    /// When a reachable target goes down for silence.
    fn silence_deadline(&self, config: &WanConfig) -> Option<Instant> {
        if !self.reachable() {
            return None;
        }
        let since = match (self.last_ok, self.up_since) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(since + config.down_after_silence)
    }
}

/// The WAN monitor core. See the [module docs](self).
#[derive(Debug)]
pub struct WanMonitor {
    config: WanConfig,
    targets: Vec<TargetState>,
    state: WanState,
    since: Instant,
    next_probe: u64,
    probes: VecDeque<Probe>,
    events: VecDeque<WanEvent>,
}

impl WanMonitor {
    /// A monitor of HQ, and of the SIP trunk when `trunk` is true, starting Offline
    /// at `now` with the first probes due at once.
    pub fn new(config: WanConfig, trunk: bool, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let target = |target| TargetState {
            target,
            reachable: None,
            slow: false,
            lossy: false,
            last_ok: None,
            last_fail: None,
            rtt: None,
            srtt: None,
            recent: VecDeque::with_capacity(config.loss_window),
            failures: 0,
            successes: 0,
            up_since: None,
            outstanding: None,
            last_probe_at: None,
            next_probe_at: now,
        };
        let mut targets = vec![target(Target::Hq)];
        if trunk {
            targets.push(target(Target::Trunk));
        }
        let mut monitor = Self {
            config,
            targets,
            state: WanState::Offline,
            since: now,
            next_probe: 0,
            probes: VecDeque::new(),
            events: VecDeque::new(),
        };
        monitor.schedule(now);
        Ok(monitor)
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: WanInput) {
        match input {
            WanInput::Probe { id, outcome } => {
                let Some(index) = self
                    .targets
                    .iter()
                    .position(|t| t.outstanding.is_some_and(|p| p.id == id))
                else {
                    return; // late (already counted as failed) or unknown
                };
                self.targets[index].outstanding = None;
                self.record(index, now, outcome);
            }
            WanInput::ProbeNow => {
                for t in &mut self.targets {
                    t.next_probe_at = now;
                }
            }
        }
        self.update(now);
        self.schedule(now);
    }

    /// Advances the clock to `now`: fails probes past their deadline, applies the
    /// silence rule, sends due probes.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.targets.len() {
            if let Some(probe) = self.targets[index].outstanding {
                if now >= probe.deadline {
                    self.targets[index].outstanding = None;
                    self.record(index, now, ProbeOutcome::Failed);
                }
            }
        }
        self.update(now);
        self.schedule(now);
    }

    /// When [`WanMonitor::handle_timeout`] should run next.
    pub fn timeout(&self) -> Option<Instant> {
        self.targets
            .iter()
            .flat_map(|t| {
                let probe = match t.outstanding {
                    Some(p) => p.deadline,
                    None => t.next_probe_at,
                };
                [Some(probe), t.silence_deadline(&self.config)]
            })
            .flatten()
            .min()
    }

    /// The next probe to run.
    pub fn poll_probe(&mut self) -> Option<Probe> {
        self.probes.pop_front()
    }

    /// The next state change.
    pub fn poll_event(&mut self) -> Option<WanEvent> {
        self.events.pop_front()
    }

    /// The overall state.
    pub fn state(&self) -> WanState {
        self.state
    }

    /// Whether outside calls may go over the SIP trunk (false: use FXO lines). False
    /// when the box has no trunk.
    pub fn trunk_usable(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.target == Target::Trunk && t.reachable())
    }

    /// The state for the diagnostics page.
    pub fn snapshot(&self) -> WanSnapshot {
        WanSnapshot {
            state: self.state,
            since: self.since,
            trunk_usable: self.trunk_usable(),
            targets: self
                .targets
                .iter()
                .map(|t| TargetSnapshot {
                    target: t.target,
                    reachable: t.reachable(),
                    impaired: t.impaired(),
                    last_ok: t.last_ok,
                    last_fail: t.last_fail,
                    rtt: t.rtt,
                    srtt: t.srtt,
                    loss_pct: t.loss_pct(self.config.loss_window),
                    consecutive_failures: t.failures,
                    consecutive_successes: t.successes,
                })
                .collect(),
        }
    }

    /// Counts one outcome for target `index`.
    fn record(&mut self, index: usize, now: Instant, outcome: ProbeOutcome) {
        let config = self.config;
        let t = &mut self.targets[index];
        let failed = matches!(outcome, ProbeOutcome::Failed);
        if t.recent.len() == config.loss_window {
            t.recent.pop_front();
        }
        t.recent.push_back(failed);
        let was = t.reachable;
        match outcome {
            ProbeOutcome::Ok { rtt } => {
                t.successes = t.successes.saturating_add(1);
                t.failures = 0;
                t.last_ok = Some(now);
                t.rtt = Some(rtt);
                // SRTT = 7/8 SRTT + 1/8 RTT (RFC 6298), first sample taken as is.
                t.srtt = Some(match t.srtt {
                    Some(srtt) => (srtt * 7 + rtt) / 8,
                    None => rtt,
                });
                if was.is_none() || (was == Some(false) && t.successes >= config.up_after_successes)
                {
                    t.reachable = Some(true);
                    t.up_since = Some(now);
                    // Failures while it was down are not loss of a working link.
                    t.recent.clear();
                    let ups = usize::try_from(t.successes).unwrap_or(usize::MAX);
                    t.recent
                        .extend(std::iter::repeat_n(false, ups.min(config.loss_window)));
                }
            }
            ProbeOutcome::Failed => {
                t.failures = t.failures.saturating_add(1);
                t.successes = 0;
                t.last_fail = Some(now);
                if was.is_none() || (was == Some(true) && t.failures >= config.down_after_failures)
                {
                    t.reachable = Some(false);
                }
            }
        }
        // Impairment, each measure with its own pair of thresholds.
        if let Some(srtt) = t.srtt {
            if srtt > config.rtt_degraded {
                t.slow = true;
            } else if srtt < config.rtt_recovered {
                t.slow = false;
            }
        }
        let loss = t.loss_pct(config.loss_window);
        if loss >= config.loss_degraded_pct {
            t.lossy = true;
        } else if loss <= config.loss_recovered_pct {
            t.lossy = false;
        }
        if t.reachable != was && t.reachable.is_some() {
            let target = t.target;
            let reachable = t.reachable();
            self.events
                .push_back(WanEvent::Target { target, reachable });
        }
    }

    /// Applies the silence rule and recomputes the overall state.
    fn update(&mut self, now: Instant) {
        let config = self.config;
        for t in &mut self.targets {
            if t.silence_deadline(&config).is_some_and(|at| now >= at) {
                t.reachable = Some(false);
                t.successes = 0;
                self.events.push_back(WanEvent::Target {
                    target: t.target,
                    reachable: false,
                });
            }
        }
        // Probes of all targets go out together; the overall state is judged once
        // every answer of the round is in (or failed at its deadline), so two answers
        // a moment apart do not show a passing state in between.
        if self.targets.iter().any(|t| t.outstanding.is_some()) {
            return;
        }
        let up = self.targets.iter().filter(|t| t.reachable()).count();
        let state = if up == 0 {
            WanState::Offline
        } else if up == self.targets.len() && !self.targets.iter().any(TargetState::impaired) {
            WanState::Online
        } else {
            WanState::Degraded
        };
        if state != self.state {
            self.events.push_back(WanEvent::State {
                from: self.state,
                to: state,
            });
            self.state = state;
            self.since = now;
            // The new pace counts from each target's last probe.
            let interval = self.interval();
            for t in &mut self.targets {
                if let (None, Some(last)) = (t.outstanding, t.last_probe_at) {
                    t.next_probe_at = (last + interval).max(now);
                }
            }
        }
    }

    fn interval(&self) -> Duration {
        if self.state == WanState::Online {
            self.config.probe_interval
        } else {
            self.config.fast_probe_interval
        }
    }

    /// Sends the probes that are due.
    fn schedule(&mut self, now: Instant) {
        let interval = self.interval();
        let timeout = self.config.probe_timeout;
        for t in &mut self.targets {
            if t.outstanding.is_none() && now >= t.next_probe_at {
                let probe = Probe {
                    id: ProbeId(self.next_probe),
                    target: t.target,
                    deadline: now + timeout,
                };
                self.next_probe += 1;
                t.outstanding = Some(probe);
                t.last_probe_at = Some(now);
                t.next_probe_at = now + interval;
                self.probes.push_back(probe);
            }
        }
    }
}

#[cfg(test)]
mod tests;
