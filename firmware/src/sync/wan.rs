//! The WAN monitor task: drives the sans-IO [`WanMonitor`] of `branchline_sync::wan`
//! (HQ and SIP-trunk reachability, online/degraded/offline with hysteresis) with real
//! probes, and publishes its states.
//!
//! - **Probes** run when the core asks for them ([`WanMonitor::poll_probe`]):
//!   - HQ: an HTTPS `GET` of HQ's base URL with the sync agent's own mutual-TLS client
//!     (any HTTP answer means HQ is reachable: TLS and HTTP work; HQ has no health
//!     endpoint, and the answer's status does not matter). When the TLS setup failed,
//!     a TCP connect to HQ's host and port instead. Without `[hq]` HQ probes fail at
//!     once and HQ shows as "not configured".
//!   - Trunk: until the SIP stack can send OPTIONS, `[wan] trunk` (`host:port`) is
//!     probed by a TCP connect, or over UDP by a CRLF CRLF keep-alive where an ICMP
//!     port-unreachable (seen as a refused `recv`) means down and an answer or silence
//!     means up. Without `[wan] trunk` the core does not watch a trunk.
//!   - A failed exchange of the sync agent (a transport error or timeout) asks the core
//!     for a probe round at once ([`WanInput::ProbeNow`]), so an outage shows quickly.
//! - **Outputs**: a [`tokio::sync::watch`] of [`WanSnapshot`] that call routing reads
//!   ([`routing_trunk_status`]: with a `[sip]` trunk, usable while it is registered
//!   and the WAN monitor does not rule it out; without one, while
//!   [`WanMonitor::trunk_usable`]; else FXO) and the sync status shows; the WAN LED,
//!   set by the daemon's board loop from the same watch ([`wan_led`]: on online, slow
//!   blink degraded, off offline, over the watched targets); a log line per change; the snapshot stored in
//!   `sync_state` at each change, for `branchd sync-status`.
//!
//! One probe interval (`[hq] probe_interval_ms`, else `[wan] probe_interval_ms`)
//! serves both targets; the core probes faster while not online.

use std::time::{Duration, Instant};

use branchline_sync::wan::{
    ProbeOutcome, Target, WanConfig, WanEvent, WanInput, WanMonitor, WanState,
};
use serde::Serialize;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::call::TrunkStatus;
use crate::config::TrunkTransport;
use crate::store::system_clock_ms;

/// How long one probe may take before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The state of one target as the monitor publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSnapshot {
    /// `"not configured"`, `"unknown"` (no probe answered yet), `"online"`,
    /// `"degraded"` (reachable but slow or lossy) or `"offline"`.
    pub state: &'static str,
    /// What is probed (a URL or `host:port`), when configured.
    pub probe: Option<String>,
    /// When a probe last succeeded, ms since the Unix epoch.
    pub last_ok_ms: Option<i64>,
    /// When a probe last failed.
    pub last_fail_ms: Option<i64>,
    /// What the last failed probe reported.
    pub last_failure: Option<String>,
    /// Smoothed round-trip time, ms.
    pub srtt_ms: Option<u64>,
    /// Share of failed recent probes, percent.
    pub loss_pct: u8,
}

impl TargetSnapshot {
    /// A target with nothing to probe.
    pub fn not_configured() -> TargetSnapshot {
        TargetSnapshot {
            state: "not configured",
            probe: None,
            last_ok_ms: None,
            last_fail_ms: None,
            last_failure: None,
            srtt_ms: None,
            loss_pct: 0,
        }
    }

    fn unknown(probe: &str) -> TargetSnapshot {
        TargetSnapshot {
            state: "unknown",
            probe: Some(probe.to_owned()),
            ..TargetSnapshot::not_configured()
        }
    }
}

impl Default for TargetSnapshot {
    fn default() -> Self {
        Self::not_configured()
    }
}

/// The WAN as the monitor last judged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WanSnapshot {
    /// Overall: `"not configured"` (nothing to watch), `"online"`, `"degraded"` or
    /// `"offline"` (the core's [`WanState`]).
    pub state: &'static str,
    /// Since when, ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Whether outside calls may use the SIP trunk.
    pub trunk_usable: bool,
    /// HQ (the sync server).
    pub hq: TargetSnapshot,
    /// The SIP trunk.
    pub trunk: TargetSnapshot,
}

impl Default for WanSnapshot {
    fn default() -> Self {
        WanSnapshot {
            state: "not configured",
            since_ms: None,
            trunk_usable: false,
            hq: TargetSnapshot::not_configured(),
            trunk: TargetSnapshot::not_configured(),
        }
    }
}

/// The first snapshot, before any probe: configured targets are "unknown".
pub fn initial_snapshot(hq: Option<&str>, trunk: Option<&str>) -> WanSnapshot {
    WanSnapshot {
        state: if hq.is_some() || trunk.is_some() {
            "offline"
        } else {
            "not configured"
        },
        hq: hq.map_or_else(TargetSnapshot::not_configured, TargetSnapshot::unknown),
        trunk: trunk.map_or_else(TargetSnapshot::not_configured, TargetSnapshot::unknown),
        ..WanSnapshot::default()
    }
}

/// What call routing makes of the snapshot alone (a box without a `[sip]` trunk): no
/// trunk probed is "not configured"; otherwise the trunk is usable while the core
/// says so.
pub fn trunk_status(snapshot: &WanSnapshot) -> TrunkStatus {
    if snapshot.trunk.state == "not configured" {
        TrunkStatus::NotConfigured
    } else if snapshot.trunk_usable {
        TrunkStatus::Usable
    } else {
        TrunkStatus::Unusable
    }
}

/// Whether the WAN monitor rules the SIP trunk out, whatever its registration says:
/// when it probes the trunk (`[wan] trunk`), while that probe says unreachable; when
/// it probes only HQ, while the WAN is offline (HQ unreachable: the link is down, and
/// a registration can look good for minutes after the link went, until its next
/// refresh or keepalive fails).
pub fn wan_rules_out_trunk(snapshot: &WanSnapshot) -> bool {
    if snapshot.trunk.state != "not configured" {
        !snapshot.trunk_usable
    } else {
        snapshot.state == "offline"
    }
}

/// Whether outside calls may use the SIP trunk: the combined rule.
///
/// - No `[sip]` trunk (`registration` is `None`): the WAN monitor's trunk probe
///   alone ([`trunk_status`]).
/// - A `[sip]` trunk: usable only while its registration says it answers **and** the
///   WAN monitor does not rule it out ([`wan_rules_out_trunk`]); otherwise outside
///   calls go to the FXO lines.
pub fn routing_trunk_status(
    registration: Option<TrunkStatus>,
    snapshot: &WanSnapshot,
) -> TrunkStatus {
    match registration {
        None => trunk_status(snapshot),
        Some(TrunkStatus::Usable) if !wan_rules_out_trunk(snapshot) => TrunkStatus::Usable,
        Some(TrunkStatus::NotConfigured) => TrunkStatus::NotConfigured,
        Some(_) => TrunkStatus::Unusable,
    }
}

/// What the WAN LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanLed {
    /// Off: the WAN is offline, or nothing is monitored.
    Off,
    /// Slow blink ([`WAN_LED_BLINK`] on, the same off): degraded (a target down or
    /// slow or lossy, the others up).
    SlowBlink,
    /// Steady on: online.
    On,
}

/// Half period of the WAN LED's slow blink.
pub const WAN_LED_BLINK: Duration = Duration::from_millis(500);

/// The SIP LED, in the WAN LED's patterns (and driven by a [`WanLedDriver`] of its
/// own): off without a `[sip]` section; with one, on while the box can place SIP
/// calls as configured: the endpoint listening and, with a `[sip.trunk]` that
/// registers, the trunk registered (`trunk_registration` as the endpoint last
/// reported it: [`TrunkStatus::Usable`]); a slow blink while that trunk is not
/// registered (registering, refused, or its servers unreachable: the box retries).
/// The caller passes `None` for a trunk with `register = false` (nothing to watch).
pub fn sip_led(sip_configured: bool, trunk_registration: Option<TrunkStatus>) -> WanLed {
    match (sip_configured, trunk_registration) {
        (false, _) => WanLed::Off,
        (true, None | Some(TrunkStatus::Usable | TrunkStatus::NotConfigured)) => WanLed::On,
        (true, Some(TrunkStatus::Unusable)) => WanLed::SlowBlink,
    }
}

/// The WAN LED, judged over the targets the box watches (HQ with `[hq]`, the trunk
/// with `[wan] trunk`) as the overall state is: on when every one is online, off when
/// none is reachable (or none is watched), a slow blink in between (one down, or one
/// slow or lossy). A target the box does not watch does not count (the core always
/// keeps an HQ target, which without `[hq]` never answers).
pub fn wan_led(snapshot: &WanSnapshot) -> WanLed {
    let watched: Vec<&str> = [&snapshot.hq, &snapshot.trunk]
        .into_iter()
        .map(|t| t.state)
        .filter(|&s| s != "not configured")
        .collect();
    let reachable = |s: &&str| matches!(*s, "online" | "degraded");
    if !watched.iter().any(reachable) {
        WanLed::Off
    } else if watched.iter().all(|&s| s == "online") {
        WanLed::On
    } else {
        WanLed::SlowBlink
    }
}

impl WanLed {
    /// Whether the LED is lit `since_start` after the pattern began (a blink starts
    /// lit, so a change shows at once).
    pub fn lit(self, since_start: Duration) -> bool {
        match self {
            WanLed::Off => false,
            WanLed::On => true,
            WanLed::SlowBlink => (since_start.as_millis() / WAN_LED_BLINK.as_millis()) % 2 == 0,
        }
    }
}

/// The WAN LED over time: the pattern in force and the level last set, so the board
/// loop (which polls it every 100 ms with the reset button) writes the GPIO line only
/// when the level changes. Sans-IO: the caller passes `now`.
#[derive(Debug, Clone)]
pub struct WanLedDriver {
    pattern: WanLed,
    since: Instant,
    level: Option<bool>,
}

impl WanLedDriver {
    /// Off, nothing written yet.
    pub fn new(now: Instant) -> WanLedDriver {
        WanLedDriver {
            pattern: WanLed::Off,
            since: now,
            level: None,
        }
    }

    /// Shows `pattern` from `now` (a pattern already in force keeps its phase).
    pub fn set(&mut self, pattern: WanLed, now: Instant) {
        if pattern != self.pattern {
            self.pattern = pattern;
            self.since = now;
        }
    }

    /// The pattern in force.
    pub fn pattern(&self) -> WanLed {
        self.pattern
    }

    /// The level to write at `now`, when it differs from the one last returned.
    pub fn poll(&mut self, now: Instant) -> Option<bool> {
        let lit = self.pattern.lit(now.saturating_duration_since(self.since));
        (self.level != Some(lit)).then(|| {
            self.level = Some(lit);
            lit
        })
    }
}

fn state_name(state: WanState) -> &'static str {
    match state {
        WanState::Online => "online",
        WanState::Degraded => "degraded",
        WanState::Offline => "offline",
    }
}

/// `host:port` of an `https://` URL (port 443 when not given).
pub fn hq_probe_target(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let port = parsed.port_or_known_default()?;
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// One reachability probe of `target` (`host:port`): `Ok(())` when it answers.
pub async fn probe(target: &str, transport: TrunkTransport) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(target, transport)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

async fn probe_inner(target: &str, transport: TrunkTransport) -> Result<(), String> {
    match transport {
        TrunkTransport::Tcp => TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| format!("tcp connect: {e}")),
        TrunkTransport::Udp => {
            let addr = tokio::net::lookup_host(target)
                .await
                .map_err(|e| format!("resolve: {e}"))?
                .next()
                .ok_or_else(|| "resolve: no address".to_owned())?;
            let local = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(local)
                .await
                .map_err(|e| format!("udp bind: {e}"))?;
            socket
                .connect(addr)
                .await
                .map_err(|e| format!("udp connect: {e}"))?;
            socket
                .send(b"\r\n\r\n")
                .await
                .map_err(|e| format!("udp send: {e}"))?;
            let mut buf = [0u8; 64];
            // An ICMP port-unreachable arrives as a refused recv; silence is not proof
            // of anything, so it counts as reachable.
            match tokio::time::timeout(PROBE_TIMEOUT / 2, socket.recv(&mut buf)).await {
                Ok(Ok(_)) | Err(_) => Ok(()),
                Ok(Err(e)) => Err(format!("udp: {e}")),
            }
        }
    }
}

/// How HQ is probed.
#[derive(Debug, Clone)]
pub enum HqProbe {
    /// An HTTPS `GET` of this URL with the agent's mutual-TLS client.
    Https {
        /// The client.
        client: reqwest::Client,
        /// HQ's base URL.
        url: String,
    },
    /// A TCP connect to `host:port` (the TLS setup failed).
    Tcp(String),
}

impl HqProbe {
    /// What is probed: the URL or `host:port`.
    pub fn describe(&self) -> String {
        match self {
            HqProbe::Https { url, .. } => url.clone(),
            HqProbe::Tcp(target) => target.clone(),
        }
    }

    async fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            HqProbe::Https { client, url } => {
                match client.get(url.as_str()).timeout(timeout).send().await {
                    // Any HTTP answer: TLS (both ways) and HTTP work.
                    Ok(_) => Ok(()),
                    Err(e) if e.is_timeout() => Err(format!("no answer within {timeout:?}")),
                    Err(e) => Err(super::agent::error_chain(&e)),
                }
            }
            HqProbe::Tcp(target) => probe(target, TrunkTransport::Tcp).await,
        }
    }
}

/// What the WAN task needs.
#[derive(Debug)]
pub struct WanTask {
    /// How HQ is probed, when `[hq]` is set.
    pub hq: Option<HqProbe>,
    /// The trunk's `host:port` and how to probe it, when `[wan] trunk` is set.
    pub trunk: Option<(String, TrunkTransport)>,
    /// Time between probes while online.
    pub probe_interval: Duration,
    /// Failed exchanges of the sync agent (`false`), which trigger a probe round.
    pub hq_samples: mpsc::UnboundedReceiver<bool>,
    /// Where the states go.
    pub publish: watch::Sender<WanSnapshot>,
    /// Where changes are stored (for `branchd sync-status`).
    pub store: super::store::SyncStore,
}

/// The core's settings for a probe interval: the defaults, with the fast interval
/// at most the normal one and the probe timeout [`PROBE_TIMEOUT`].
pub fn monitor_config(probe_interval: Duration) -> WanConfig {
    let defaults = WanConfig::default();
    WanConfig {
        probe_interval,
        fast_probe_interval: defaults.fast_probe_interval.min(probe_interval),
        probe_timeout: PROBE_TIMEOUT,
        ..defaults
    }
}

impl WanTask {
    /// Runs until `shutdown` is cancelled. With nothing to watch (no `[hq]`, no trunk)
    /// it only waits for shutdown.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let WanTask {
            hq,
            trunk,
            probe_interval,
            mut hq_samples,
            publish,
            store,
        } = self;
        if hq.is_none() && trunk.is_none() {
            shutdown.cancelled().await;
            return;
        }
        let mut monitor = match WanMonitor::new(
            monitor_config(probe_interval),
            trunk.is_some(),
            Instant::now(),
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "WAN monitor settings refused; WAN state unknown");
                shutdown.cancelled().await;
                return;
            }
        };
        let (done_tx, mut done_rx) = mpsc::channel::<(
            branchline_sync::wan::ProbeId,
            Target,
            Result<Duration, String>,
        )>(8);
        let mut failures: [Option<String>; 2] = [None, None];
        let mut samples_open = true;
        loop {
            while let Some(p) = monitor.poll_probe() {
                let done = done_tx.clone();
                let timeout = p.deadline.saturating_duration_since(Instant::now());
                let (hq, trunk) = (hq.clone(), trunk.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = match (p.target, hq, trunk) {
                        (Target::Hq, Some(hq), _) => hq.run(timeout).await,
                        (Target::Hq, None, _) => Err("sync with HQ is not configured".to_owned()),
                        (Target::Trunk, _, Some((target, transport))) => {
                            probe(&target, transport).await
                        }
                        (Target::Trunk, _, None) => Err("no trunk configured".to_owned()),
                    };
                    let _ = done
                        .send((p.id, p.target, result.map(|()| started.elapsed())))
                        .await;
                });
            }
            let mut changed = false;
            while let Some(event) = monitor.poll_event() {
                changed = true;
                match event {
                    WanEvent::State { from, to } => {
                        tracing::info!(from = state_name(from), to = state_name(to), "wan state")
                    }
                    WanEvent::Target { target, reachable } => {
                        let error = failures[target_index(target)].clone().unwrap_or_default();
                        if reachable {
                            tracing::info!(target = target_name(target), "wan target reachable");
                        } else {
                            tracing::warn!(target = target_name(target), %error, "wan target unreachable");
                        }
                    }
                }
            }
            let snapshot = publishable(
                &monitor,
                hq.as_ref(),
                trunk.as_ref().map(|(t, _)| t.as_str()),
                &failures,
            );
            let moved = publish.send_if_modified(|current| {
                let differs = *current != snapshot;
                if differs {
                    *current = snapshot.clone();
                }
                differs
            });
            if changed && moved {
                match serde_json::to_value(&snapshot) {
                    Ok(v) => store.record_wan(v).await,
                    Err(e) => tracing::warn!(error = %e, "wan state not serialised"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some((id, target, result)) = done_rx.recv() => {
                    let outcome = match result {
                        Ok(rtt) => ProbeOutcome::Ok { rtt },
                        Err(e) => {
                            failures[target_index(target)] = Some(e);
                            ProbeOutcome::Failed
                        }
                    };
                    monitor.handle(Instant::now(), WanInput::Probe { id, outcome });
                }
                sample = hq_samples.recv(), if samples_open => match sample {
                    Some(false) => monitor.handle(Instant::now(), WanInput::ProbeNow),
                    Some(true) => {}
                    None => samples_open = false,
                },
                () = sleep_until(monitor.timeout()) => monitor.handle_timeout(Instant::now()),
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn target_index(target: Target) -> usize {
    match target {
        Target::Hq => 0,
        Target::Trunk => 1,
    }
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Hq => "hq",
        Target::Trunk => "trunk",
    }
}

/// The core's snapshot as the box publishes it.
fn publishable(
    monitor: &WanMonitor,
    hq: Option<&HqProbe>,
    trunk: Option<&str>,
    failures: &[Option<String>; 2],
) -> WanSnapshot {
    let now = Instant::now();
    let report = monitor.snapshot().report(now, system_clock_ms());
    let target = |which: Target, probe: Option<String>| -> TargetSnapshot {
        let Some(probe) = probe else {
            return TargetSnapshot::not_configured();
        };
        let Some(t) = report.targets.iter().find(|t| t.target == which) else {
            return TargetSnapshot::unknown(&probe);
        };
        let state = match (t.last_ok_ms, t.last_fail_ms, t.reachable, t.impaired) {
            (None, None, _, _) => "unknown",
            (_, _, true, true) => "degraded",
            (_, _, true, false) => "online",
            (_, _, false, _) => "offline",
        };
        TargetSnapshot {
            state,
            probe: Some(probe),
            last_ok_ms: t.last_ok_ms,
            last_fail_ms: t.last_fail_ms,
            last_failure: failures[target_index(which)].clone(),
            srtt_ms: t.srtt_ms,
            loss_pct: t.loss_pct,
        }
    };
    WanSnapshot {
        state: state_name(report.state),
        since_ms: Some(report.since_ms),
        trunk_usable: report.trunk_usable,
        hq: target(Target::Hq, hq.map(HqProbe::describe)),
        trunk: target(Target::Trunk, trunk.map(str::to_owned)),
    }
}

#[cfg(test)]
mod sip_led_tests {
    use super::*;

    #[test]
    fn the_sip_led_is_off_without_sip_on_when_calls_can_go_and_blinks_while_the_trunk_is_down() {
        assert_eq!(sip_led(false, None), WanLed::Off);
        assert_eq!(sip_led(false, Some(TrunkStatus::Usable)), WanLed::Off);
        assert_eq!(sip_led(true, None), WanLed::On);
        assert_eq!(sip_led(true, Some(TrunkStatus::Usable)), WanLed::On);
        assert_eq!(
            sip_led(true, Some(TrunkStatus::Unusable)),
            WanLed::SlowBlink
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: &'static str, hq: &'static str, trunk: &'static str) -> WanSnapshot {
        let target = |state: &'static str| TargetSnapshot {
            state,
            ..TargetSnapshot::not_configured()
        };
        WanSnapshot {
            state,
            trunk_usable: trunk == "online" || trunk == "degraded",
            hq: target(hq),
            trunk: target(trunk),
            ..WanSnapshot::default()
        }
    }

    #[test]
    fn a_registered_trunk_is_used_only_while_the_wan_monitor_does_not_rule_it_out() {
        use TrunkStatus::{NotConfigured, Unusable, Usable};
        let nc = "not configured";
        let hq_online = snapshot("online", "online", nc);
        let hq_degraded = snapshot("degraded", "degraded", nc);
        let hq_offline = snapshot("offline", "offline", nc);
        let nothing = WanSnapshot::default();
        // HQ only watched: its verdict on the link vetoes a registered trunk.
        assert_eq!(routing_trunk_status(Some(Usable), &hq_online), Usable);
        assert_eq!(routing_trunk_status(Some(Usable), &hq_degraded), Usable);
        assert_eq!(routing_trunk_status(Some(Usable), &hq_offline), Unusable);
        assert_eq!(routing_trunk_status(Some(Usable), &nothing), Usable);
        // Not registered: unusable whatever the WAN says.
        assert_eq!(routing_trunk_status(Some(Unusable), &hq_online), Unusable);
        assert_eq!(routing_trunk_status(Some(Unusable), &nothing), Unusable);
        // The trunk probed too: its own probe decides, not HQ's.
        let trunk_up_hq_down = snapshot("degraded", "offline", "online");
        let trunk_down_hq_up = snapshot("degraded", "online", "offline");
        let trunk_unknown = snapshot("offline", "unknown", "unknown");
        assert_eq!(
            routing_trunk_status(Some(Usable), &trunk_up_hq_down),
            Usable
        );
        assert_eq!(
            routing_trunk_status(Some(Usable), &trunk_down_hq_up),
            Unusable
        );
        assert_eq!(routing_trunk_status(Some(Usable), &trunk_unknown), Unusable);
        // No [sip] trunk: the WAN monitor's trunk probe alone, as before.
        assert_eq!(routing_trunk_status(None, &hq_online), NotConfigured);
        assert_eq!(routing_trunk_status(None, &trunk_up_hq_down), Usable);
        assert_eq!(routing_trunk_status(None, &trunk_down_hq_up), Unusable);
    }

    #[test]
    fn the_wan_led_is_on_online_blinks_slowly_degraded_and_is_off_offline() {
        let nc = "not configured";
        assert_eq!(wan_led(&snapshot("online", "online", "online")), WanLed::On);
        assert_eq!(wan_led(&snapshot("online", "online", nc)), WanLed::On);
        assert_eq!(
            wan_led(&snapshot("degraded", "online", "offline")),
            WanLed::SlowBlink
        );
        assert_eq!(
            wan_led(&snapshot("degraded", "degraded", nc)),
            WanLed::SlowBlink
        );
        assert_eq!(
            wan_led(&snapshot("offline", "offline", "offline")),
            WanLed::Off
        );
        assert_eq!(wan_led(&snapshot("offline", "unknown", nc)), WanLed::Off);
        assert_eq!(wan_led(&WanSnapshot::default()), WanLed::Off);
        // Without [hq] the core's HQ target never answers: the trunk alone decides.
        assert_eq!(wan_led(&snapshot("degraded", nc, "online")), WanLed::On);

        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut led = WanLedDriver::new(t0);
        assert_eq!(led.poll(t0), Some(false), "the first poll writes the level");
        assert_eq!(led.poll(ms(100)), None, "off stays off: nothing written");
        led.set(WanLed::SlowBlink, ms(1000));
        // Lit at once, dark after one half period, lit again after two.
        let mut levels = Vec::new();
        for t in (1000..=3000).step_by(100) {
            if let Some(on) = led.poll(ms(t)) {
                levels.push((t, on));
            }
        }
        assert_eq!(
            levels,
            [
                (1000, true),
                (1500, false),
                (2000, true),
                (2500, false),
                (3000, true)
            ]
        );
        // Setting the same pattern again keeps the phase.
        led.set(WanLed::SlowBlink, ms(3100));
        assert_eq!(led.poll(ms(3500)), Some(false));
        led.set(WanLed::On, ms(3600));
        assert_eq!(led.poll(ms(3600)), Some(true));
        assert_eq!(led.poll(ms(9000)), None, "steady: nothing more written");
        led.set(WanLed::Off, ms(9100));
        assert_eq!(led.poll(ms(9100)), Some(false));
        assert_eq!(led.pattern(), WanLed::Off);
    }
}
