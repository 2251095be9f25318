//! The technician's tools (issue 8, "tools" page): ping and traceroute to HQ, a SIP
//! OPTIONS probe to the trunk, a packet capture of the box's SIP and RTP ports, and
//! the diagnostics bundle. The JSON routes are `crate::api::tools` (`/api/v1/tools/...`),
//! the page is `/tools` (`crate::web`); both call [`Tools`].
//!
//! ```text
//! page / API ──▶ Tools::ping / traceroute ──▶ child process (ping -n -c N -W s, traceroute -n)
//!            ├─▶ Tools::sip_options ──▶ resolve host ──OptionsProbe──▶ SIP endpoint (its transport)
//!            ├─▶ Tools::capture ──▶ capture::run (AF_PACKET socket, blocking thread) ──▶ pcap bytes
//!            └─▶ bundle::build (redacted config, recent logs, store stats, versions, sync) ──▶ tar.gz
//! ```
//!
//! - **Input is checked before anything runs**: a host is a DNS name (RFC 1123
//!   labels) or an IP literal, nothing else, so no option (`-f`, `--...`) or shell
//!   text can reach a command line (and no shell is used: arguments go to `execve`
//!   one by one); a SIP URI is `sip:[user@]host[:port][;transport=udp|tcp]`; a capture
//!   lasts 1 to [`MAX_CAPTURE_SECONDS`] seconds. Bad input is a [`ToolError`] that the
//!   routes answer with 400, and nothing is run.
//! - **Bounded**: ping sends 1 to [`MAX_PING_COUNT`] echoes with a 2 s wait each and
//!   is killed after `count + 5` s; traceroute (`-n -q 1 -w 2 -m 20`) is killed after
//!   [`TRACEROUTE_LIMIT`]; their output is kept up to [`MAX_OUTPUT_BYTES`] and
//!   returned whole when they end (not streamed). A program that is not installed is
//!   [`ToolError::NotInstalled`], never made-up output.
//! - **One capture at a time** ([`ToolError::CaptureBusy`], 409), at most
//!   [`capture::MAX_CAPTURE_BYTES`] of packets.
//! - Defaults: ping and traceroute go to the host of `[hq] url` when the
//!   technician gives none; the probe goes to the first `[sip.trunk]` server.
//!
//! Limits: no IPv6 scoped addresses (`fe80::1%eth0`); the probe speaks UDP and TCP
//! (not TLS) and resolves the host with the system resolver (A/AAAA, no SRV); ping and
//! traceroute output arrives when they end.

pub mod bundle;
pub mod capture;
pub mod line_test;
pub mod logs;
pub mod loopback;
pub mod sip_trace;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::sip_endpoint::probe::{OptionsProbe, ProbeAnswer};

/// Most echo requests one ping may send.
pub const MAX_PING_COUNT: u32 = 10;
/// Echo requests when the technician gives no count.
pub const DEFAULT_PING_COUNT: u32 = 4;
/// How long traceroute may run before it is killed.
pub const TRACEROUTE_LIMIT: Duration = Duration::from_secs(60);
/// Output kept of a ping or traceroute (stdout and stderr each).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How long the OPTIONS probe waits for a final response.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest capture.
pub const MAX_CAPTURE_SECONDS: u32 = 60;

/// Why a tool did not run (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The host is neither a DNS name nor an IP literal.
    #[error("{host:?} is not a host name or IP address (letters, digits, '-' and '.' only, or an IPv4/IPv6 literal)")]
    BadHost {
        /// What was given.
        host: String,
    },
    /// No host given and none configured.
    #[error("no host given and {what} is not configured")]
    NoTarget {
        /// What the default would have been (`[hq] url`, `[sip.trunk]`).
        what: &'static str,
    },
    /// The ping count is out of range.
    #[error("count must be 1 to {MAX_PING_COUNT}, not {count}")]
    BadCount {
        /// What was given.
        count: u32,
    },
    /// Not a SIP URI the probe can send to.
    #[error("{uri:?} is not a usable SIP URI: {why}")]
    BadUri {
        /// What was given.
        uri: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The capture duration is out of range.
    #[error("seconds must be 1 to {MAX_CAPTURE_SECONDS}, not {seconds}")]
    BadDuration {
        /// What was given.
        seconds: i64,
    },
    /// A capture is already running.
    #[error("a capture is already running; wait for it to finish")]
    CaptureBusy,
    /// The program is not installed on this box.
    #[error("{program} is not installed on this box")]
    NotInstalled {
        /// The program.
        program: &'static str,
    },
    /// The program could not be started.
    #[error("{program} could not be started: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The host name did not resolve.
    #[error("{host} did not resolve: {why}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        why: String,
    },
    /// No SIP endpoint runs (no `[sip]`), so there is nothing to probe with.
    #[error("SIP is not configured on this box (no [sip] section): nothing to send OPTIONS from")]
    NoSip,
    /// The capture socket could not be opened or read.
    #[error("capture failed: {0}")]
    Capture(#[from] capture::CaptureError),
    /// The bundle could not be built.
    #[error("diagnostics bundle not built: {0}")]
    Bundle(String),
}

impl ToolError {
    /// Whether the request itself was wrong (400) rather than the box (4xx/5xx).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ToolError::BadHost { .. }
                | ToolError::BadCount { .. }
                | ToolError::BadUri { .. }
                | ToolError::BadDuration { .. }
        )
    }
}

/// A checked host: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(String);

impl Host {
    /// Checks `text` (surrounding blanks ignored; `[v6]` brackets taken off).
    pub fn parse(text: &str) -> Result<Host, ToolError> {
        let t = text.trim();
        let bad = || ToolError::BadHost {
            host: text.to_owned(),
        };
        let unbracketed = t
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(t);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host(ip.to_string()));
        }
        let name = t.strip_suffix('.').unwrap_or(t);
        if name.is_empty() || name.len() > 253 {
            return Err(bad());
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
        // An all-numeric dotted name that is not an IP address (`1.2.3`) is refused.
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad());
        }
        Ok(Host(name.to_owned()))
    }

    /// The host as text (no brackets).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host of an `http(s)://host[:port]/...` URL.
fn url_host(url: &str) -> Option<Host> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    Host::parse(host).ok()
}

/// A checked SIP URI for the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUri {
    /// The URI as sent (`sip:host[:port][;transport=tcp]`).
    pub text: String,
    /// Its host.
    pub host: Host,
    /// Its port (5060 when absent).
    pub port: u16,
    /// UDP or TCP.
    pub transport: rsip::Transport,
}

impl ProbeUri {
    /// Checks `text`: `sip:[user@]host[:port][;transport=udp|tcp]`.
    pub fn parse(text: &str) -> Result<ProbeUri, ToolError> {
        let t = text.trim();
        let bad = |why| ToolError::BadUri {
            uri: text.to_owned(),
            why,
        };
        if t.len() > 256 {
            return Err(bad("longer than 256 characters"));
        }
        let rest = match t.get(..4) {
            Some(s) if s.eq_ignore_ascii_case("sip:") => &t[4..],
            _ if t.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("sips:")) => {
                return Err(bad(
                    "sips: (TLS) probes are not supported; use sip: with UDP or TCP",
                ))
            }
            _ => return Err(bad("it must start with sip:")),
        };
        let (rest, params) = rest.split_once(';').unwrap_or((rest, ""));
        let mut transport = rsip::Transport::Udp;
        for p in params.split(';').filter(|p| !p.is_empty()) {
            match p.to_ascii_lowercase().as_str() {
                "transport=udp" => transport = rsip::Transport::Udp,
                "transport=tcp" => transport = rsip::Transport::Tcp,
                _ => {
                    return Err(bad(
                        "the only parameter allowed is transport=udp or transport=tcp",
                    ))
                }
            }
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if let Some(u) = user {
            let ok = !u.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*+".contains(&b));
            if !ok {
                return Err(bad(
                    "the user part may hold letters, digits and -_.!~*+ only",
                ));
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let host =
            Host::parse(host).map_err(|_| bad("the host must be a host name or IP address"))?;
        let port = match port {
            None => 5060,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?,
        };
        let host_text = if host.as_str().contains(':') {
            format!("[{}]", host.as_str())
        } else {
            host.as_str().to_owned()
        };
        let user_text = user.map(|u| format!("{u}@")).unwrap_or_default();
        let transport_text = match transport {
            rsip::Transport::Tcp => ";transport=tcp",
            _ => "",
        };
        Ok(ProbeUri {
            text: format!("sip:{user_text}{host_text}:{port}{transport_text}"),
            host,
            port,
            transport,
        })
    }
}

/// What a ping or traceroute printed and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRun {
    /// The command line (program and arguments).
    pub command: Vec<String>,
    /// Exit code (`None`: killed or ended by a signal).
    pub exit_code: Option<i32>,
    /// Whether it was killed at its time limit.
    pub timed_out: bool,
    /// How long it ran, ms.
    pub elapsed_ms: u64,
    /// Its standard output (up to [`MAX_OUTPUT_BYTES`]).
    pub stdout: String,
    /// Its standard error (up to [`MAX_OUTPUT_BYTES`]).
    pub stderr: String,
}

/// The outcome of an OPTIONS probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The URI probed.
    pub uri: String,
    /// The address it went to.
    pub destination: String,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// `answered`, `timeout` or `failed`.
    pub outcome: &'static str,
    /// The final response's status code.
    pub status: Option<u16>,
    /// Its reason phrase.
    pub reason: Option<String>,
    /// Its `Server` / `User-Agent`.
    pub server: Option<String>,
    /// Round-trip time, ms (fractional).
    pub rtt_ms: Option<f64>,
    /// What went wrong, for `timeout` and `failed`.
    pub error: Option<String>,
}

/// What the tools need of the box, taken from the config at start.
#[derive(Debug, Clone, Default)]
pub struct ToolsSettings {
    /// The host of `[hq] url`.
    pub hq_host: Option<Host>,
    /// The first `[sip.trunk]` server as a probe URI.
    pub trunk_uri: Option<String>,
    /// The SIP listeners' ports (UDP/TCP/TLS) as configured (0: chosen at bind time;
    /// the capture adds the bound ones).
    pub sip_ports: Vec<u16>,
    /// `[media]`'s RTP/RTCP port range.
    pub rtp_ports: Option<RangeInclusive<u16>>,
    /// The config file (its redacted copy goes in the bundle).
    pub config_file: Option<PathBuf>,
    /// Every secret value of the effective config (passwords, PINs, keys), scrubbed
    /// from every file of the bundle.
    pub secrets: Vec<String>,
    /// The store file (size and table counts in the bundle).
    pub db_path: Option<PathBuf>,
    /// The board model.
    pub board_model: String,
}

impl ToolsSettings {
    /// The settings of the running daemon's `config` (after provisioned settings).
    pub fn from_config(config: &Config, board_model: &str) -> ToolsSettings {
        let trunk_uri = config
            .sip
            .as_ref()
            .and_then(|s| s.trunk.as_ref())
            .and_then(|t| t.servers.first())
            .map(|s| {
                let host = if s.host.contains(':') {
                    format!("[{}]", s.host)
                } else {
                    s.host.clone()
                };
                let port = s.port.unwrap_or(5060);
                let tp = if s.transport == rsip::Transport::Tcp {
                    ";transport=tcp"
                } else {
                    ""
                };
                format!("sip:{host}:{port}{tp}")
            });
        let sip_ports = config
            .sip
            .as_ref()
            .map(|s| {
                [s.udp, s.tcp, s.tls]
                    .into_iter()
                    .flatten()
                    .map(|a| a.port())
                    .collect()
            })
            .unwrap_or_default();
        ToolsSettings {
            hq_host: config.hq.as_ref().and_then(|h| url_host(&h.url)),
            trunk_uri,
            sip_ports,
            rtp_ports: Some(config.media.rtp_port_min..=config.media.rtp_port_max),
            config_file: Some(config.source.clone()),
            secrets: bundle::config_secrets(config),
            db_path: Some(config.paths.db_path()),
            board_model: board_model.to_owned(),
        }
    }
}

/// The tools of one running daemon. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tools {
    settings: Arc<ToolsSettings>,
    /// Where OPTIONS probes go (the SIP endpoint's receiver; closed without `[sip]`).
    probes: mpsc::UnboundedSender<OptionsProbe>,
    /// Set while a capture runs (one at a time).
    capturing: Arc<AtomicBool>,
    /// The daemon's recent log lines, when it keeps them.
    logs: Option<logs::RecentLogs>,
    /// The SIP endpoint's message trace (empty without `[sip]`).
    sip_trace: sip_trace::SipTrace,
}

/// Clears the capture flag when the capture ends, however it ends.
struct CaptureGuard(Arc<AtomicBool>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Tools {
    /// Tools over `settings`, probing through `probes`.
    pub fn new(
        settings: ToolsSettings,
        probes: mpsc::UnboundedSender<OptionsProbe>,
        logs: Option<logs::RecentLogs>,
    ) -> Tools {
        Tools {
            settings: Arc::new(settings),
            probes,
            capturing: Arc::new(AtomicBool::new(false)),
            logs,
            sip_trace: sip_trace::SipTrace::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ToolsSettings {
        &self.settings
    }

    /// The SIP message trace (the SIP endpoint records into it).
    pub fn sip_trace(&self) -> &sip_trace::SipTrace {
        &self.sip_trace
    }

    /// The daemon's recent log lines, when it keeps them.
    pub fn logs(&self) -> Option<&logs::RecentLogs> {
        self.logs.as_ref()
    }

    /// Whether a capture runs now.
    pub fn capture_running(&self) -> bool {
        self.capturing.load(Ordering::SeqCst)
    }

    /// `host`, or the HQ host when `None`/blank.
    pub fn target_host(&self, host: Option<&str>) -> Result<Host, ToolError> {
        match host.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => Host::parse(h),
            None => self.settings.hq_host.clone().ok_or(ToolError::NoTarget {
                what: "HQ ([hq] url)",
            }),
        }
    }

    /// Pings `host` (default HQ) `count` times (default [`DEFAULT_PING_COUNT`]).
    pub async fn ping(
        &self,
        host: Option<&str>,
        count: Option<u32>,
    ) -> Result<CommandRun, ToolError> {
        let count = count.unwrap_or(DEFAULT_PING_COUNT);
        if !(1..=MAX_PING_COUNT).contains(&count) {
            return Err(ToolError::BadCount { count });
        }
        let host = self.target_host(host)?;
        let args = vec![
            "-n".to_owned(),
            "-c".to_owned(),
            count.to_string(),
            "-W".to_owned(),
            "2".to_owned(),
            host.as_str().to_owned(),
        ];
        let limit = Duration::from_secs(u64::from(count) + 5);
        run_bounded("ping", &args, limit).await
    }

    /// Traceroute to `host` (default HQ).
    pub async fn traceroute(&self, host: Option<&str>) -> Result<CommandRun, ToolError> {
        let host = self.target_host(host)?;
        let args = ["-n", "-q", "1", "-w", "2", "-m", "20"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([host.as_str().to_owned()])
            .collect::<Vec<_>>();
        run_bounded("traceroute", &args, TRACEROUTE_LIMIT).await
    }

    /// Sends one OPTIONS to `uri` (default: the trunk) through the SIP endpoint.
    pub async fn sip_options(&self, uri: Option<&str>) -> Result<ProbeReport, ToolError> {
        let uri = match uri.map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => ProbeUri::parse(u)?,
            None => ProbeUri::parse(self.settings.trunk_uri.as_deref().ok_or(
                ToolError::NoTarget {
                    what: "the SIP trunk ([sip.trunk])",
                },
            )?)?,
        };
        if self.probes.is_closed() {
            return Err(ToolError::NoSip);
        }
        let ip = match uri.host.as_str().parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let name = uri.host.as_str().to_owned();
                let lookup = tokio::net::lookup_host((name.clone(), uri.port));
                let mut addrs = tokio::time::timeout(PROBE_TIMEOUT, lookup)
                    .await
                    .map_err(|_| ToolError::Resolve {
                        host: name.clone(),
                        why: "the lookup timed out".to_owned(),
                    })?
                    .map_err(|e| ToolError::Resolve {
                        host: name.clone(),
                        why: e.to_string(),
                    })?;
                addrs
                    .next()
                    .ok_or_else(|| ToolError::Resolve {
                        host: name,
                        why: "no address".to_owned(),
                    })?
                    .ip()
            }
        };
        let destination = SocketAddr::new(ip, uri.port);
        let (reply, answer) = oneshot::channel();
        self.probes
            .send(OptionsProbe {
                uri: uri.text.clone(),
                destination,
                transport: uri.transport,
                reply,
            })
            .map_err(|_| ToolError::NoSip)?;
        let mut report = ProbeReport {
            uri: uri.text,
            destination: destination.to_string(),
            transport: if uri.transport == rsip::Transport::Tcp {
                "tcp"
            } else {
                "udp"
            },
            outcome: "timeout",
            status: None,
            reason: None,
            server: None,
            rtt_ms: None,
            error: None,
        };
        match tokio::time::timeout(PROBE_TIMEOUT, answer).await {
            Err(_) => {
                report.error = Some(format!(
                    "no final response within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(_)) => return Err(ToolError::NoSip),
            Ok(Ok(ProbeAnswer::Response {
                code,
                reason,
                server,
                rtt,
                ..
            })) => {
                report.outcome = "answered";
                report.status = Some(code);
                report.reason = Some(reason);
                report.server = server;
                report.rtt_ms = Some((rtt.as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
            }
            Ok(Ok(ProbeAnswer::Failed { reason })) => {
                report.outcome = "failed";
                report.error = Some(reason);
            }
        }
        Ok(report)
    }

    /// Captures the box's SIP and RTP packets for `seconds` (1 to
    /// [`MAX_CAPTURE_SECONDS`]) and answers them as a pcap file; refuses a second
    /// capture while one runs. `bound_sip_ports` are the SIP endpoint's listeners as
    /// bound (a configured port 0 becomes a real one only then).
    pub async fn capture(
        &self,
        seconds: i64,
        bound_sip_ports: &[u16],
    ) -> Result<capture::Capture, ToolError> {
        let secs = u32::try_from(seconds)
            .ok()
            .filter(|s| (1..=MAX_CAPTURE_SECONDS).contains(s))
            .ok_or(ToolError::BadDuration { seconds })?;
        if self
            .capturing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(ToolError::CaptureBusy);
        }
        let guard = CaptureGuard(Arc::clone(&self.capturing));
        let mut sip_ports: Vec<u16> = self
            .settings
            .sip_ports
            .iter()
            .chain(bound_sip_ports)
            .copied()
            .filter(|p| *p != 0)
            .collect();
        sip_ports.sort_unstable();
        sip_ports.dedup();
        let filter = capture::PortFilter::new(sip_ports, self.settings.rtp_ports.clone());
        let duration = Duration::from_secs(u64::from(secs));
        let result = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            capture::run(&filter, duration, capture::MAX_CAPTURE_BYTES)
        })
        .await
        .map_err(|e| capture::CaptureError::Thread(e.to_string()))?;
        Ok(result?)
    }
}

/// Runs `program args` without a shell, killed after `limit`; keeps its output.
async fn run_bounded(
    program: &'static str,
    args: &[String],
    limit: Duration,
) -> Result<CommandRun, ToolError> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ToolError::NotInstalled { program },
            _ => ToolError::Spawn { program, source },
        })?;
    let out = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));
    let (exit_code, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(source)) => return Err(ToolError::Spawn { program, source }),
        Err(_) => {
            if let Err(e) = child.kill().await {
                tracing::warn!(error = %e, program, "tool not killed at its time limit");
            }
            (None, true)
        }
    };
    let text = |h: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
        match h {
            Some(h) => String::from_utf8_lossy(&h.await.unwrap_or_default()).into_owned(),
            None => String::new(),
        }
    };
    Ok(CommandRun {
        command: std::iter::once(program.to_owned())
            .chain(args.iter().cloned())
            .collect(),
        exit_code,
        timed_out,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        stdout: text(out).await,
        stderr: text(err).await,
    })
}

/// Reads `r` to its end, keeping the first [`MAX_OUTPUT_BYTES`].
async fn read_bounded(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests;
