//! The WAN monitor task: probes HQ and the SIP trunk, feeds the sans-IO
//! `branchline_sync::wan::WanMonitor`, and publishes the states.
//!
//! - **HQ**: every exchange of the sync agent is a sample (any HTTP answer: reachable;
//!   a transport failure or timeout: not). When no exchange happened within
//!   `[hq] probe_interval_ms` (start-up, a long backoff) the task connects to HQ's
//!   host and port itself (a TCP connect, no TLS: cheap; HQ logs it as a refused
//!   handshake). Without `[hq]` the target is "not configured".
//! - **Trunk**: until the SIP stack exists there is no OPTIONS ping: `[wan] trunk`
//!   (`host:port`) is probed by a TCP connect, or over UDP by a CRLF CRLF keep-alive
//!   where an ICMP port-unreachable (seen as a refused `recv`) means down and an
//!   answer or silence means up. Without `[wan] trunk` the target is "not configured".
//! - **Outputs**: a [`tokio::sync::watch`] of [`WanSnapshot`] that call routing reads
//!   (the daemon turns the trunk's state into
//!   [`crate::call::TrunkStatus`], see [`trunk_status`]) and the sync status shows;
//!   the WAN LED, driven by the daemon's board loop from the same watch
//!   ([`wan_led`]); a log line per state change; the states stored in `sync_state`
//!   when they change, for `branchd sync-status`.
//!
//! Limit: the sans-IO `WanMonitor` core (online/degraded/offline with hysteresis) is
//! not in `branchline_sync::wan` yet; until it is, a target's state follows its last
//! probe ("online" or "offline", never "degraded") in `verdict`, the one place the
//! core will plug in.

use std::time::Duration;

use serde::Serialize;
use tokio::net::{TcpStream, UdpSocket};

use crate::call::TrunkStatus;
use crate::config::TrunkTransport;

/// How long one probe may take before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The state of one target as the monitor publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSnapshot {
    /// `"not configured"`, `"unknown"` (no verdict yet), `"online"`, `"degraded"` or
    /// `"offline"`.
    pub state: &'static str,
    /// What is probed (`host:port`), when configured.
    pub probe: Option<String>,
    /// When the state last changed, ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// The last probe's time and result.
    pub last_probe_ms: Option<i64>,
    /// Whether the last probe succeeded.
    pub last_probe_ok: Option<bool>,
    /// What the last failed probe reported.
    pub last_failure: Option<String>,
}

impl TargetSnapshot {
    /// A target with nothing to probe.
    pub fn not_configured() -> TargetSnapshot {
        TargetSnapshot {
            state: "not configured",
            probe: None,
            since_ms: None,
            last_probe_ms: None,
            last_probe_ok: None,
            last_failure: None,
        }
    }
}

impl Default for TargetSnapshot {
    fn default() -> Self {
        Self::not_configured()
    }
}

/// Both targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WanSnapshot {
    /// HQ (the sync server).
    pub hq: TargetSnapshot,
    /// The SIP trunk.
    pub trunk: TargetSnapshot,
}

/// What call routing makes of the trunk's state: online or degraded is usable,
/// offline (or not yet known) is not; no trunk is "not configured".
pub fn trunk_status(snapshot: &WanSnapshot) -> TrunkStatus {
    match snapshot.trunk.state {
        "online" | "degraded" => TrunkStatus::Usable,
        "not configured" => TrunkStatus::NotConfigured,
        _ => TrunkStatus::Unusable,
    }
}

/// Whether the WAN LED is lit: HQ online or degraded. (Blinking for degraded needs a
/// timer in the board loop; the LED is on/off today.)
pub fn wan_led(snapshot: &WanSnapshot) -> bool {
    matches!(snapshot.hq.state, "online" | "degraded")
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

/// What the WAN task needs.
#[derive(Debug)]
pub struct WanTask {
    /// HQ's `host:port`, when `[hq]` is set.
    pub hq: Option<String>,
    /// How often HQ is probed.
    pub hq_interval: Duration,
    /// The trunk's `host:port` and how to probe it, when `[wan] trunk` is set.
    pub trunk: Option<(String, TrunkTransport)>,
    /// How often the trunk is probed.
    pub trunk_interval: Duration,
    /// Samples from the sync agent's own exchanges with HQ.
    pub hq_samples: tokio::sync::mpsc::UnboundedReceiver<bool>,
    /// Where the states go.
    pub publish: tokio::sync::watch::Sender<WanSnapshot>,
    /// Where state changes are stored (for `branchd sync-status`).
    pub store: super::store::SyncStore,
}

/// The first snapshot: "unknown" for configured targets.
pub fn initial_snapshot(hq: Option<&str>, trunk: Option<&str>) -> WanSnapshot {
    let target = |probe: Option<&str>| match probe {
        Some(p) => TargetSnapshot {
            state: "unknown",
            probe: Some(p.to_owned()),
            ..TargetSnapshot::not_configured()
        },
        None => TargetSnapshot::not_configured(),
    };
    WanSnapshot {
        hq: target(hq),
        trunk: target(trunk),
    }
}

/// Which target a probe result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Hq,
    Trunk,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Hq => "hq",
            Target::Trunk => "trunk",
        }
    }
}

impl WanTask {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let WanTask {
            hq,
            hq_interval,
            trunk,
            trunk_interval,
            mut hq_samples,
            publish,
            store,
        } = self;
        let mut hq_tick = tokio::time::interval(hq_interval);
        let mut trunk_tick = tokio::time::interval(trunk_interval);
        hq_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        trunk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples_open = true;
        // When the agent's last exchange with HQ, if it is recent, makes an own
        // probe unnecessary (it would only add a refused TLS handshake to HQ's log).
        let mut last_sample: Option<tokio::time::Instant> = None;
        loop {
            let (target, result) = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = hq_tick.tick(), if hq.is_some() => {
                    if last_sample.is_some_and(|at| at.elapsed() < hq_interval) {
                        continue;
                    }
                    let target = hq.as_deref().unwrap_or_default();
                    (Target::Hq, probe(target, TrunkTransport::Tcp).await)
                }
                _ = trunk_tick.tick(), if trunk.is_some() => {
                    let Some((target, transport)) = &trunk else { continue };
                    (Target::Trunk, probe(target, *transport).await)
                }
                sample = hq_samples.recv(), if samples_open => match sample {
                    Some(ok) => {
                        last_sample = Some(tokio::time::Instant::now());
                        (
                            Target::Hq,
                            if ok { Ok(()) } else { Err("sync request failed in transport".to_owned()) },
                        )
                    }
                    None => {
                        samples_open = false;
                        continue;
                    }
                },
            };
            let now_ms = crate::store::system_clock_ms();
            let mut changed = None;
            publish.send_modify(|snap| {
                let t = match target {
                    Target::Hq => &mut snap.hq,
                    Target::Trunk => &mut snap.trunk,
                };
                let state = verdict(&result);
                t.last_probe_ms = Some(now_ms);
                t.last_probe_ok = Some(result.is_ok());
                if let Err(e) = &result {
                    t.last_failure = Some(e.clone());
                }
                if t.state != state {
                    changed = Some((t.state, state));
                    t.state = state;
                    t.since_ms = Some(now_ms);
                }
            });
            if let Some((from, to)) = changed {
                match &result {
                    Ok(()) => tracing::info!(target = target.name(), from, to, "wan state"),
                    Err(e) => {
                        tracing::warn!(target = target.name(), from, to, error = %e, "wan state")
                    }
                }
                let snapshot = publish.borrow().clone();
                match serde_json::to_value(&snapshot) {
                    Ok(v) => store.record_wan(v).await,
                    Err(e) => tracing::warn!(error = %e, "wan state not serialised"),
                }
            }
        }
    }
}

/// A target's state from one probe.
fn verdict(result: &Result<(), String>) -> &'static str {
    if result.is_ok() {
        "online"
    } else {
        "offline"
    }
}
