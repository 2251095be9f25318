//! [`TrunkRegistration`]: keeping the box registered with its trunk.
//!
//! # Rules
//!
//! - **One request at a time.** At most one REGISTER or OPTIONS of this machine is in
//!   flight; refreshes, probes and un-REGISTERs due meanwhile wait for it to finish.
//!   A request with no response after [`TrunkConfig::request_timeout`] (longer than
//!   the transaction layer's 32 s) counts as a timeout even if the daemon never
//!   reports one, so the machine cannot hang.
//! - **REGISTER.** Request-URI `sip:<domain>`; From/To `sip:<username>@<domain>`; one
//!   Call-ID and From tag per server, stable across refreshes (RFC 3261 10.2);
//!   CSeq increasing over the machine's life; `Contact: <contact>`, `Expires`,
//!   `Allow`, `User-Agent`, `Max-Forwards: 70`, and a top Via with a fresh
//!   `z9hG4bK` branch and `rport`.
//! - **Digest.** A 401/407 is answered once with the strongest offered algorithm
//!   ([`crate::digest::DigestClient`]). A 401/407 to a request whose credentials were
//!   computed from the previous response's challenge means the credentials are wrong
//!   ([`FailureReason::AuthRejected`]) unless it says `stale=true`, which is answered
//!   once more. Refreshes carry credentials pre-emptively under the last challenge
//!   (next `nc`); a 401 to such a request is a new challenge, answered once.
//! - **Success.** The granted expiry is our Contact's `expires` in the 200, else the
//!   `Expires` header, else what we asked for; 0 (or our Contact missing with
//!   `expires=0`) is a failure. The refresh is sent at a uniformly random fraction in
//!   [`TrunkConfig::refresh_min`, `TrunkConfig::refresh_max`] of the granted time
//!   after the request was sent, and never sooner than [`MIN_REFRESH`] from now.
//! - **423 Interval Too Brief.** `Min-Expires` above the current expiry (and at most
//!   [`TrunkConfig::max_expires`]) becomes the new expiry and the REGISTER is re-sent,
//!   at most twice per attempt; otherwise the attempt fails.
//! - **Failure and failover.** A timeout, a transport error, a 5xx, 408 or 480 moves
//!   to the server's next resolved target, then to the next server in the configured
//!   order; other 3xx-6xx move to the next server. When every server failed in this
//!   round the machine backs off: `min(retry_max, retry_base * 2^(n-1))`, uniformly
//!   jittered down to half (seeded), but at least the largest `Retry-After` seen
//!   (capped at `retry_max`), and at least [`TrunkConfig::auth_failure_backoff`] when
//!   a server refused the credentials (401/407 after an answer, 403, 404, 6xx): bad
//!   passwords never cause a tight loop. Then a new round starts at the primary.
//! - **Back to the primary.** While registered with a server other than the first, the
//!   primary is probed with OPTIONS every [`TrunkConfig::probe_interval`]. Any final
//!   response below 500 means it is back: the machine registers there and, once that
//!   succeeded, un-REGISTERs the old binding. A failed switch keeps the old binding.
//! - **Keepalive.** With [`TrunkConfig::keepalive_interval`] set, the server of the
//!   current binding gets an OPTIONS that long after the last success (REGISTER or
//!   keepalive) when no refresh comes first. Any final response below 500 means it is
//!   alive. No final response within [`TrunkConfig::keepalive_timeout`] (shorter than
//!   the transaction's 32 s, so an outage is found in seconds), a transport error or
//!   a 5xx counts as a failure of that server exactly like a failed refresh: the
//!   binding is dropped (a registrar that restarted has lost it anyway), the trunk
//!   becomes unreachable, and the failover round and backoff above register again
//!   once a server answers. Without it an outage is only noticed at the next refresh.
//! - **Reachability.** Reachable from a successful REGISTER; unreachable when the
//!   server of the current binding fails (timeout, error response, failed keepalive)
//!   or the binding expires. A failed probe or switch to the primary does not change
//!   it.
//! - **Shutdown.** [`TrunkRegistration::shutdown`] sends `Expires: 0` for the current
//!   binding (after any request in flight), answers a challenge once, and then reports
//!   [`TrunkEvent::Unregistered`] whatever the outcome.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, Request, Response, Transport, Uri};

use super::resolve::{DnsAnswer, DnsQuery, Resolution, Target};
use super::rng::Rng;
use super::TrunkServer;
use crate::digest::DigestClient;
use crate::registrar::headers as hdr;

/// The earliest a refresh is scheduled after a registration succeeded (a server
/// granting a few seconds cannot make the box send REGISTERs back to back).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Methods the box accepts, sent in `Allow`.
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, MESSAGE, UPDATE, PRACK, INFO";

/// Configuration of a [`TrunkRegistration`].
#[derive(Clone, PartialEq)]
pub struct TrunkConfig {
    /// Servers in preference order (the first is the primary).
    pub servers: Vec<TrunkServer>,
    /// SIP domain of the account (Request-URI and From/To host; usually the realm).
    pub domain: String,
    /// User part of the address of record.
    pub username: String,
    /// Digest username when it differs from `username`.
    pub auth_username: Option<String>,
    /// Digest password.
    pub password: String,
    /// Requested registration time in seconds.
    pub expires: u32,
    /// Largest `Min-Expires` the box accepts from a 423.
    pub max_expires: u32,
    /// The box's Contact URI, e.g. `sip:branch@198.51.100.2:5060`.
    pub contact: String,
    /// Via sent-by (`host[:port]`) the box puts in its requests.
    pub sent_by: String,
    /// `User-Agent` value.
    pub user_agent: String,
    /// Earliest refresh, as a fraction of the granted time.
    pub refresh_min: f64,
    /// Latest refresh, as a fraction of the granted time.
    pub refresh_max: f64,
    /// First backoff after a failed round.
    pub retry_base: Duration,
    /// Largest backoff.
    pub retry_max: Duration,
    /// Backoff when a server refused the credentials.
    pub auth_failure_backoff: Duration,
    /// A request without final response after this long has failed.
    pub request_timeout: Duration,
    /// How often the primary is probed while registered elsewhere.
    pub probe_interval: Duration,
    /// How long resolved targets are reused.
    pub dns_cache: Duration,
    /// OPTIONS keepalive to the registered server this long after the last success;
    /// `None`: no keepalive (an outage shows at the next refresh).
    pub keepalive_interval: Option<Duration>,
    /// A keepalive without final response after this long has failed.
    pub keepalive_timeout: Duration,
}

impl fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkConfig")
            .field("servers", &self.servers)
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("auth_username", &self.auth_username)
            .field("password", &"<redacted>")
            .field("expires", &self.expires)
            .field("contact", &self.contact)
            .field("sent_by", &self.sent_by)
            .field("keepalive_interval", &self.keepalive_interval)
            .finish_non_exhaustive()
    }
}

impl TrunkConfig {
    /// A configuration with defaults: 600 s registrations, refresh at 50-80%, backoff
    /// 5 s doubling to 5 min, 15 min after refused credentials, 40 s request timeout,
    /// 60 s primary probe, 5 min DNS cache, no keepalive (8 s keepalive timeout when
    /// one is set).
    pub fn new(
        servers: Vec<TrunkServer>,
        domain: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
        contact: impl Into<String>,
        sent_by: impl Into<String>,
    ) -> Self {
        Self {
            servers,
            domain: domain.into(),
            username: username.into(),
            auth_username: None,
            password: password.into(),
            expires: 600,
            max_expires: 86_400,
            contact: contact.into(),
            sent_by: sent_by.into(),
            user_agent: concat!("Branchline/", env!("CARGO_PKG_VERSION")).to_owned(),
            refresh_min: 0.5,
            refresh_max: 0.8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            auth_failure_backoff: Duration::from_secs(900),
            request_timeout: Duration::from_secs(40),
            probe_interval: Duration::from_secs(60),
            dns_cache: Duration::from_secs(300),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(8),
        }
    }
}

/// A [`TrunkConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrunkConfigError {
    /// No server configured.
    #[error("trunk config: no server")]
    NoServer,
    /// A text field is empty or has characters that cannot go into a header.
    #[error("trunk config: {field} {value:?} is empty or not allowed in a SIP header")]
    BadText {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The contact is not a SIP URI rsip can read.
    #[error("trunk config: contact {0:?} is not a SIP URI")]
    BadContact(String),
    /// `expires` is zero or above `max_expires`.
    #[error("trunk config: expires {expires} must be in 1..={max}")]
    BadExpires {
        /// `expires`.
        expires: u32,
        /// `max_expires`.
        max: u32,
    },
    /// The refresh fractions are not `0 < min <= max < 1`.
    #[error("trunk config: refresh fractions {min}..{max} must satisfy 0 < min <= max < 1")]
    BadRefresh {
        /// `refresh_min`.
        min: f64,
        /// `refresh_max`.
        max: f64,
    },
    /// A duration that must be positive is zero, or `retry_max < retry_base`.
    #[error("trunk config: {field} is zero or inconsistent")]
    BadDuration {
        /// The field.
        field: &'static str,
    },
}

fn header_safe(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>' || c == '"')
}

fn user_safe(s: &str) -> bool {
    header_safe(s)
        && !s
            .chars()
            .any(|c| c == '@' || c == ':' || c == ';' || c == ' ' || c == ',')
}

impl TrunkConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), TrunkConfigError> {
        if self.servers.is_empty() {
            return Err(TrunkConfigError::NoServer);
        }
        let text = |field, value: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(TrunkConfigError::BadText {
                    field,
                    value: value.to_owned(),
                })
            }
        };
        text("domain", &self.domain, user_safe(&self.domain))?;
        text("username", &self.username, user_safe(&self.username))?;
        if let Some(a) = &self.auth_username {
            text("auth_username", a, header_safe(a))?;
        }
        text("password", "<redacted>", !self.password.is_empty())?;
        text(
            "sent_by",
            &self.sent_by,
            !self.sent_by.is_empty()
                && self
                    .sent_by
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)),
        )?;
        text(
            "user_agent",
            &self.user_agent,
            header_safe(&self.user_agent),
        )?;
        let lower = self.contact.to_ascii_lowercase();
        let sip_scheme = lower.starts_with("sip:") || lower.starts_with("sips:");
        match Uri::try_from(self.contact.as_str()) {
            Ok(_) if sip_scheme && header_safe(&self.contact) && !self.contact.contains(' ') => {}
            _ => return Err(TrunkConfigError::BadContact(self.contact.clone())),
        }
        if self.expires == 0 || self.expires > self.max_expires {
            return Err(TrunkConfigError::BadExpires {
                expires: self.expires,
                max: self.max_expires,
            });
        }
        if !(self.refresh_min > 0.0
            && self.refresh_min <= self.refresh_max
            && self.refresh_max < 1.0)
        {
            return Err(TrunkConfigError::BadRefresh {
                min: self.refresh_min,
                max: self.refresh_max,
            });
        }
        for (field, d) in [
            ("retry_base", self.retry_base),
            ("auth_failure_backoff", self.auth_failure_backoff),
            ("request_timeout", self.request_timeout),
            ("probe_interval", self.probe_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            (
                "keepalive_interval",
                self.keepalive_interval.unwrap_or(Duration::MAX),
            ),
        ] {
            if d.is_zero() {
                return Err(TrunkConfigError::BadDuration { field });
            }
        }
        if self.retry_max < self.retry_base {
            return Err(TrunkConfigError::BadDuration { field: "retry_max" });
        }
        Ok(())
    }
}

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkState {
    /// Not started, or shut down.
    Unregistered,
    /// Resolving or registering with `server` (index into the configured list) with no
    /// valid binding.
    Registering {
        /// Server index.
        server: usize,
    },
    /// A binding with `server` is valid until `until` (refreshes, probes and switches
    /// to the primary happen in this state).
    Registered {
        /// Server index.
        server: usize,
        /// End of the granted registration.
        until: Instant,
    },
    /// Every server failed; the next round starts at `next`.
    Backoff {
        /// Failed rounds in a row.
        attempt: u32,
        /// When the next round starts.
        next: Instant,
    },
    /// Shutting down: un-REGISTER in progress.
    Unregistering,
}

/// Whether calls can go out through the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Registered.
    Reachable {
        /// Since when.
        since: Instant,
    },
    /// Not registered (outside calls fall back to FXO).
    Unreachable {
        /// Since when.
        since: Instant,
    },
}

impl Reachability {
    /// True when reachable.
    pub fn is_reachable(&self) -> bool {
        matches!(self, Reachability::Reachable { .. })
    }
}

/// Why an attempt with a server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// No final response in time.
    Timeout,
    /// The transport could not send (connection refused, TLS failure, ...).
    Transport,
    /// DNS gave no target.
    Dns,
    /// 5xx, 408 or 480: try elsewhere.
    ServerError(u16),
    /// Credentials refused (401/407 after an answer, 403, 404, 6xx).
    AuthRejected(u16),
    /// A challenge the box cannot answer (unsupported algorithm or qop).
    UnsupportedChallenge,
    /// Any other final response (3xx, other 4xx, 423 that cannot be met, a 200
    /// without a binding).
    Rejected(u16),
}

impl FailureReason {
    fn tries_next_target(&self) -> bool {
        matches!(
            self,
            FailureReason::Timeout | FailureReason::Transport | FailureReason::ServerError(_)
        )
    }

    fn refused(&self) -> bool {
        matches!(
            self,
            FailureReason::AuthRejected(_) | FailureReason::UnsupportedChallenge
        )
    }
}

/// What the machine knows of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHealth {
    /// Not tried yet.
    Unknown,
    /// Last REGISTER (or probe) succeeded.
    Ok {
        /// Since when.
        since: Instant,
    },
    /// Last attempt failed.
    Failed {
        /// Since when.
        since: Instant,
        /// Why.
        reason: FailureReason,
    },
}

/// How a request failed below the SIP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// The transaction timed out (timer F).
    Timeout,
    /// The transport reported an error.
    Transport,
}

/// A request to hand to the transaction layer.
#[derive(Debug, Clone)]
pub struct TrunkTransmit {
    /// Where to send it.
    pub target: Target,
    /// The request (with its Via; the transaction layer keys it by the branch).
    pub request: Request,
    /// The Via branch, for [`TrunkRegistration::handle_failure`].
    pub branch: String,
}

/// Something for the log, the web page or call routing.
#[derive(Debug, Clone, PartialEq)]
pub enum TrunkEvent {
    /// A registration (or refresh) succeeded.
    Registered {
        /// Server index.
        server: usize,
        /// Target used.
        target: Target,
        /// End of the granted time.
        until: Instant,
    },
    /// An attempt with a server failed.
    Failed {
        /// Server index.
        server: usize,
        /// Why.
        reason: FailureReason,
    },
    /// Every server failed; waiting.
    Backoff {
        /// Failed rounds in a row.
        attempt: u32,
        /// Next round.
        until: Instant,
    },
    /// Reachability changed.
    Reachability(Reachability),
    /// Shutdown finished.
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Binding {
    server: usize,
    target: Target,
    until: Instant,
    refresh_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Purpose {
    /// An attempt of the failover round, no binding with this server.
    Register,
    /// Refresh of the current binding.
    Refresh,
    /// Register with the primary after a probe, keeping the old binding meanwhile.
    Switch,
    /// OPTIONS to the primary.
    Probe,
    /// OPTIONS to the server of the current binding.
    Keepalive,
    /// Expires: 0 for an old binding (after a switch, or at shutdown).
    Unregister(Binding),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Credentials {
    None,
    Preemptive,
    Answered { stale_retry_used: bool },
}

#[derive(Debug)]
struct InFlight {
    branch: String,
    target: Target,
    sent_at: Instant,
    deadline: Instant,
    credentials: Credentials,
    interval_retries: u8,
}

#[derive(Debug)]
enum Phase {
    /// Targets known; the request is being built (never seen between inputs).
    Starting,
    Resolving {
        resolution: Resolution,
        deadline: Instant,
    },
    Sent(InFlight),
}

#[derive(Debug)]
struct Op {
    purpose: Purpose,
    server: usize,
    /// Index into the server's targets (Register).
    target_index: usize,
    phase: Phase,
}

#[derive(Debug, Default)]
struct ServerSlot {
    targets: Vec<Target>,
    targets_valid_until: Option<Instant>,
    call_id: String,
    from_tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Idle,
    Running,
    ShuttingDown,
    Down,
}

/// The trunk registration state machine (see the module doc for the rules).
#[derive(Debug)]
pub struct TrunkRegistration {
    config: TrunkConfig,
    contact_uri: Uri,
    rng: Rng,
    digest: DigestClient,
    /// Server whose challenge the digest client holds, and whether it was a 407.
    challenge_of: Option<(usize, bool)>,
    slots: Vec<ServerSlot>,
    health: Vec<ServerHealth>,
    cseq: u32,
    expires: u32,
    lifecycle: Lifecycle,
    binding: Option<Binding>,
    op: Option<Op>,
    /// Failover round: next server and target to try.
    round_server: usize,
    round_target: usize,
    round_refused: bool,
    round_retry_after: Option<Duration>,
    /// Failed rounds in a row.
    attempt: u32,
    backoff_until: Option<Instant>,
    probe_at: Option<Instant>,
    /// Next keepalive of the current binding's server.
    keepalive_at: Option<Instant>,
    unregister_queue: VecDeque<Binding>,
    reachability: Reachability,
    next_query_id: u64,
    transmits: VecDeque<TrunkTransmit>,
    queries: VecDeque<DnsQuery>,
    events: VecDeque<TrunkEvent>,
}

impl TrunkRegistration {
    /// A machine for `config` (validated); `seed` drives every random choice. `now` is
    /// the start of its unreachable period.
    pub fn new(config: TrunkConfig, seed: u64, now: Instant) -> Result<Self, TrunkConfigError> {
        config.validate()?;
        let contact_uri = Uri::try_from(config.contact.as_str())
            .map_err(|_| TrunkConfigError::BadContact(config.contact.clone()))?;
        let mut rng = Rng::new(seed);
        let digest = DigestClient::new(
            config
                .auth_username
                .clone()
                .unwrap_or_else(|| config.username.clone()),
            config.password.clone(),
            rng.next_u64(),
        );
        let slots = (0..config.servers.len())
            .map(|_| ServerSlot {
                call_id: format!("{}{}@branchline", rng.hex(), rng.hex()),
                from_tag: rng.hex(),
                ..ServerSlot::default()
            })
            .collect();
        Ok(Self {
            health: vec![ServerHealth::Unknown; config.servers.len()],
            expires: config.expires,
            config,
            contact_uri,
            rng,
            digest,
            challenge_of: None,
            slots,
            cseq: 0,
            lifecycle: Lifecycle::Idle,
            binding: None,
            op: None,
            round_server: 0,
            round_target: 0,
            round_refused: false,
            round_retry_after: None,
            attempt: 0,
            backoff_until: None,
            probe_at: None,
            keepalive_at: None,
            unregister_queue: VecDeque::new(),
            reachability: Reachability::Unreachable { since: now },
            next_query_id: 1,
            transmits: VecDeque::new(),
            queries: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrunkConfig {
        &self.config
    }

    /// Starts registering (idempotent).
    pub fn start(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Idle {
            self.lifecycle = Lifecycle::Running;
            self.drive(now);
        }
    }

    /// The state for the web page and logs.
    pub fn state(&self) -> TrunkState {
        match self.lifecycle {
            Lifecycle::Idle | Lifecycle::Down => return TrunkState::Unregistered,
            Lifecycle::ShuttingDown => return TrunkState::Unregistering,
            Lifecycle::Running => {}
        }
        if let Some(b) = &self.binding {
            return TrunkState::Registered {
                server: b.server,
                until: b.until,
            };
        }
        if let Some(next) = self.backoff_until {
            return TrunkState::Backoff {
                attempt: self.attempt,
                next,
            };
        }
        match &self.op {
            Some(op) => TrunkState::Registering { server: op.server },
            None => TrunkState::Registering {
                server: self.round_server,
            },
        }
    }

    /// Whether outside calls can use the trunk, and since when.
    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Health of each configured server, in configured order.
    pub fn servers(&self) -> impl Iterator<Item = (&TrunkServer, &ServerHealth)> {
        self.config.servers.iter().zip(self.health.iter())
    }

    /// The target of the current binding (where outbound INVITEs go).
    pub fn active_target(&self) -> Option<Target> {
        self.binding.map(|b| b.target)
    }

    /// The expiry currently requested (grows after a 423).
    pub fn requested_expires(&self) -> u32 {
        self.expires
    }

    /// Next request to send.
    pub fn poll_transmit(&mut self) -> Option<TrunkTransmit> {
        self.transmits.pop_front()
    }

    /// Next DNS lookup to do.
    pub fn poll_dns_query(&mut self) -> Option<DnsQuery> {
        self.queries.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<TrunkEvent> {
        self.events.pop_front()
    }

    /// Is a request of this machine awaiting its final response?
    pub fn in_flight(&self) -> bool {
        matches!(
            self.op,
            Some(Op {
                phase: Phase::Sent(_),
                ..
            })
        )
    }

    /// When [`Self::handle_timeout`] has work next.
    pub fn timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |i: Option<Instant>| {
            if let Some(i) = i {
                t = Some(t.map_or(i, |t| t.min(i)));
            }
        };
        if let Some(b) = &self.binding {
            consider(Some(b.until));
        }
        match &self.op {
            Some(Op {
                phase: Phase::Sent(f),
                ..
            }) => consider(Some(f.deadline)),
            Some(Op {
                phase: Phase::Resolving { deadline, .. },
                ..
            }) => consider(Some(*deadline)),
            Some(_) => {}
            None if self.lifecycle == Lifecycle::Running => {
                consider(self.binding.map(|b| b.refresh_at));
                consider(self.probe_at.filter(|_| self.binding.is_some()));
                consider(self.keepalive_at.filter(|_| self.binding.is_some()));
                if self.binding.is_none() {
                    consider(self.backoff_until);
                }
            }
            None => {}
        }
        t
    }

    /// Handles timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = match &self.op {
            Some(Op {
                phase: Phase::Sent(f),
                ..
            }) => f.deadline <= now,
            Some(Op {
                phase: Phase::Resolving { deadline, .. },
                ..
            }) => *deadline <= now,
            _ => false,
        };
        if expired {
            let reason = match &self.op {
                Some(Op {
                    phase: Phase::Resolving { .. },
                    ..
                }) => FailureReason::Dns,
                _ => FailureReason::Timeout,
            };
            self.fail(now, reason, None);
        }
        self.drive(now);
    }

    /// Takes the answer to a [`DnsQuery`]; answers nobody waits for are ignored.
    pub fn handle_dns_answer(&mut self, now: Instant, id: u64, answer: DnsAnswer) {
        let Some(Op {
            phase: Phase::Resolving { resolution, .. },
            server,
            ..
        }) = &mut self.op
        else {
            return;
        };
        if !resolution.handle_answer(id, answer, &mut self.rng) {
            return;
        }
        let server = *server;
        self.next_query_id = self.next_query_id.max(resolution.next_free_id());
        if let Some(q) = resolution.poll_query() {
            self.queries.push_back(q);
            return;
        }
        let outcome = resolution
            .outcome()
            .map(|o| o.map(|t| t.to_vec()).map_err(|_| ()));
        match outcome {
            Some(Ok(targets)) => {
                let slot = &mut self.slots[server];
                slot.targets = targets;
                slot.targets_valid_until = Some(now + self.config.dns_cache);
                self.send_op_request(now);
            }
            Some(Err(())) => self.fail(now, FailureReason::Dns, None),
            None => {}
        }
        self.drive(now);
    }

    /// The request with Via `branch` failed below SIP. Unknown branches are ignored.
    pub fn handle_failure(&mut self, now: Instant, branch: &str, failure: TransportFailure) {
        if !self.is_current(branch) {
            return;
        }
        let reason = match failure {
            TransportFailure::Timeout => FailureReason::Timeout,
            TransportFailure::Transport => FailureReason::Transport,
        };
        self.fail(now, reason, None);
        self.drive(now);
    }

    fn is_current(&self, branch: &str) -> bool {
        matches!(&self.op, Some(Op { phase: Phase::Sent(f), .. }) if f.branch == branch)
    }

    /// Takes a response; returns false when it belongs to no request of this machine
    /// (matched by the top Via branch).
    pub fn handle_response(&mut self, now: Instant, response: &Response) -> bool {
        let Some(branch) = top_branch(&response.headers) else {
            return false;
        };
        if !self.is_current(&branch) {
            return false;
        }
        let code = response.status_code.code();
        if code < 200 {
            return true;
        }
        let Some(purpose) = self.op.as_ref().map(|op| op.purpose) else {
            return false;
        };
        if purpose == Purpose::Keepalive {
            if code < 500 {
                self.keepalive_succeeded(now);
            } else {
                self.fail(now, FailureReason::ServerError(code), None);
            }
            self.drive(now);
            return true;
        }
        if purpose == Purpose::Probe {
            if code < 500 {
                self.probe_succeeded(now);
            } else {
                self.fail(now, FailureReason::ServerError(code), None);
            }
            self.drive(now);
            return true;
        }
        match code {
            200..=299 => self.register_succeeded(now, response),
            401 | 407 => self.challenged(now, response, code == 407),
            423 => self.interval_too_brief(now, response),
            _ => {
                let retry_after = hdr::header_value(&response.headers, "Retry-After")
                    .and_then(hdr::leading_u32)
                    .map(|s| Duration::from_secs(u64::from(s)));
                let reason = match code {
                    408 | 480 | 500..=599 => FailureReason::ServerError(code),
                    403 | 404 | 600..=699 => FailureReason::AuthRejected(code),
                    _ => FailureReason::Rejected(code),
                };
                self.fail(now, reason, retry_after);
            }
        }
        self.drive(now);
        true
    }

    /// Un-REGISTERs and stops; [`TrunkEvent::Unregistered`] follows when done.
    pub fn shutdown(&mut self, now: Instant) {
        match self.lifecycle {
            Lifecycle::ShuttingDown | Lifecycle::Down => return,
            Lifecycle::Idle => {
                self.lifecycle = Lifecycle::Down;
                self.events.push_back(TrunkEvent::Unregistered);
                return;
            }
            Lifecycle::Running => {}
        }
        self.lifecycle = Lifecycle::ShuttingDown;
        self.backoff_until = None;
        self.probe_at = None;
        self.keepalive_at = None;
        if let Some(b) = self.binding.take() {
            self.unregister_queue.push_back(b);
        }
        self.set_unreachable(now);
        self.drive(now);
    }

    // ----- internals -----

    fn set_reachable(&mut self, now: Instant) {
        if !self.reachability.is_reachable() {
            self.reachability = Reachability::Reachable { since: now };
            self.events
                .push_back(TrunkEvent::Reachability(self.reachability));
        }
    }

    fn set_unreachable(&mut self, now: Instant) {
        if self.reachability.is_reachable() {
            self.reachability = Reachability::Unreachable { since: now };
            self.events
                .push_back(TrunkEvent::Reachability(self.reachability));
        }
    }

    /// Starts whatever is due when nothing is in flight.
    fn drive(&mut self, now: Instant) {
        if let Some(b) = self.binding {
            if b.until <= now {
                self.binding = None;
                self.probe_at = None;
                self.health[b.server] = ServerHealth::Failed {
                    since: now,
                    reason: FailureReason::Timeout,
                };
                self.set_unreachable(now);
                self.round_server = b.server;
                self.round_target = 0;
            }
        }
        if self.op.is_some() {
            return;
        }
        match self.lifecycle {
            Lifecycle::Idle | Lifecycle::Down => {}
            Lifecycle::ShuttingDown => {
                if let Some(old) = self.unregister_queue.pop_front() {
                    self.start_op(
                        now,
                        Purpose::Unregister(old),
                        old.server,
                        0,
                        Some(old.target),
                    );
                } else {
                    self.lifecycle = Lifecycle::Down;
                    self.events.push_back(TrunkEvent::Unregistered);
                }
            }
            Lifecycle::Running => {
                if let Some(old) = self.unregister_queue.pop_front() {
                    self.start_op(
                        now,
                        Purpose::Unregister(old),
                        old.server,
                        0,
                        Some(old.target),
                    );
                } else if let Some(b) = self.binding {
                    if b.refresh_at <= now {
                        self.start_op(now, Purpose::Refresh, b.server, 0, Some(b.target));
                    } else if b.server > 0 && self.probe_at.is_some_and(|p| p <= now) {
                        self.probe_at = None;
                        self.start_op(now, Purpose::Probe, 0, 0, None);
                    } else if self.keepalive_at.is_some_and(|k| k <= now) {
                        self.keepalive_at = None;
                        self.start_op(now, Purpose::Keepalive, b.server, 0, Some(b.target));
                    }
                } else if self.backoff_until.is_none_or(|t| t <= now) {
                    self.backoff_until = None;
                    let (server, target) = (self.round_server, self.round_target);
                    self.start_op(now, Purpose::Register, server, target, None);
                }
            }
        }
    }

    fn start_op(
        &mut self,
        now: Instant,
        purpose: Purpose,
        server: usize,
        target_index: usize,
        fixed_target: Option<Target>,
    ) {
        let slot = &self.slots[server];
        let cached = slot.targets_valid_until.is_some_and(|t| t > now) && !slot.targets.is_empty();
        if fixed_target.is_some() || cached {
            self.op = Some(Op {
                purpose,
                server,
                target_index,
                phase: Phase::Starting,
            });
            self.send_to(now, fixed_target);
            return;
        }
        let mut resolution = Resolution::new(&self.config.servers[server], self.next_query_id);
        if let Some(q) = resolution.poll_query() {
            self.next_query_id = q.id + 1;
            self.queries.push_back(q);
            self.op = Some(Op {
                purpose,
                server,
                target_index,
                phase: Phase::Resolving {
                    resolution,
                    deadline: now + self.config.request_timeout,
                },
            });
        } else {
            // Numeric host: resolved on the spot.
            let targets = resolution
                .outcome()
                .and_then(|o| o.ok())
                .map(|t| t.to_vec())
                .unwrap_or_default();
            let slot = &mut self.slots[server];
            slot.targets = targets;
            slot.targets_valid_until = Some(now + self.config.dns_cache);
            self.op = Some(Op {
                purpose,
                server,
                target_index,
                phase: Phase::Starting,
            });
            self.send_to(now, None);
        }
    }

    /// After resolution: send to the op's target.
    fn send_op_request(&mut self, now: Instant) {
        self.send_to(now, None);
    }

    fn send_to(&mut self, now: Instant, fixed_target: Option<Target>) {
        let Some(op) = &self.op else { return };
        let target =
            fixed_target.or_else(|| self.slots[op.server].targets.get(op.target_index).copied());
        match target {
            Some(target) => self.send_request(now, target, Credentials::None, 0),
            None => self.fail(now, FailureReason::Dns, None),
        }
    }

    /// Builds and queues the op's request to `target` (with pre-emptive credentials
    /// when the digest client holds this server's challenge).
    fn send_request(
        &mut self,
        now: Instant,
        target: Target,
        credentials: Credentials,
        interval_retries: u8,
    ) {
        self.send_request_with(now, target, credentials, interval_retries, None);
    }

    /// Like [`Self::send_request`]; `explicit` credentials replace pre-emptive ones.
    fn send_request_with(
        &mut self,
        now: Instant,
        target: Target,
        credentials: Credentials,
        interval_retries: u8,
        explicit: Option<(String, bool)>,
    ) {
        let Some(op) = &self.op else { return };
        let purpose = op.purpose;
        let server = op.server;
        self.cseq = self.cseq.wrapping_add(1).max(1);
        let branch = format!("z9hG4bK{}", self.rng.hex());
        let request_uri = format!("sip:{}", self.config.domain);
        let (method, expires) = match purpose {
            Purpose::Probe | Purpose::Keepalive => (Method::Options, None),
            Purpose::Unregister(_) => (Method::Register, Some(0)),
            _ => (Method::Register, Some(self.expires)),
        };
        let aor = format!("<sip:{}@{}>", self.config.username, self.config.domain);
        let (call_id, from_tag) = if method == Method::Options {
            (format!("{}@branchline", self.rng.hex()), self.rng.hex())
        } else {
            let slot = &self.slots[server];
            (slot.call_id.clone(), slot.from_tag.clone())
        };
        let mut headers = Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport_token(target.transport),
            self.config.sent_by
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{aor};tag={from_tag}"
        ))));
        headers.push(Header::To(rsip::headers::To::new(aor)));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{} {}",
            self.cseq, method
        ))));
        if let Some(expires) = expires {
            let contact = if expires == 0 {
                format!("<{}>;expires=0", self.config.contact)
            } else {
                format!("<{}>", self.config.contact)
            };
            headers.push(Header::Contact(rsip::headers::Contact::new(contact)));
            headers.push(Header::Expires(rsip::headers::Expires::new(
                expires.to_string(),
            )));
        }
        headers.push(Header::Allow(rsip::headers::Allow::new(ALLOW)));
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
            self.config.user_agent.clone(),
        )));
        let mut credentials = credentials;
        if method == Method::Register {
            let authorization = match (explicit, credentials) {
                (Some(e), _) => Some(e),
                (None, Credentials::Answered { .. }) => None,
                (None, _) => match self.challenge_of {
                    Some((s, proxy)) if s == server => self
                        .digest
                        .reauthorize("REGISTER", &request_uri)
                        .map(|v| (v, proxy)),
                    _ => None,
                },
            };
            if let Some((value, proxy)) = authorization {
                if credentials == Credentials::None {
                    credentials = Credentials::Preemptive;
                }
                headers.push(auth_header(value, proxy));
            }
        }
        headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
            "0",
        )));
        let request = Request {
            method,
            uri: Uri::try_from(request_uri.as_str()).unwrap_or_default(),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        self.push_sent(now, target, branch, request, credentials, interval_retries);
    }

    fn push_sent(
        &mut self,
        now: Instant,
        target: Target,
        branch: String,
        request: Request,
        credentials: Credentials,
        interval_retries: u8,
    ) {
        let Some(op) = &mut self.op else { return };
        let timeout = if op.purpose == Purpose::Keepalive {
            self.config.keepalive_timeout
        } else {
            self.config.request_timeout
        };
        op.phase = Phase::Sent(InFlight {
            branch: branch.clone(),
            target,
            sent_at: now,
            deadline: now + timeout,
            credentials,
            interval_retries,
        });
        self.transmits.push_back(TrunkTransmit {
            target,
            request,
            branch,
        });
    }

    /// Re-sends the op's request with an `Authorization` computed from `response`'s
    /// challenge.
    fn challenged(&mut self, now: Instant, response: &Response, proxy: bool) {
        let Some(Op {
            server,
            phase: Phase::Sent(f),
            ..
        }) = &self.op
        else {
            return;
        };
        let server = *server;
        let name = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenges = hdr::header_values(&response.headers, name);
        let stale = challenges
            .iter()
            .any(|c| crate::digest::parse_challenge(c).is_ok_and(|c| c.stale));
        let stale_retry_used = match f.credentials {
            Credentials::Answered { stale_retry_used } => {
                if !stale || stale_retry_used {
                    self.fail(
                        now,
                        FailureReason::AuthRejected(response.status_code.code()),
                        None,
                    );
                    return;
                }
                true
            }
            _ => false,
        };
        let (target, retries) = (f.target, f.interval_retries);
        let request_uri = format!("sip:{}", self.config.domain);
        match self
            .digest
            .authorize_best(&challenges, "REGISTER", &request_uri)
        {
            Ok(value) => {
                self.challenge_of = Some((server, proxy));
                self.resend_with(now, target, Some((value, proxy)), stale_retry_used, retries);
            }
            Err(_) => self.fail(now, FailureReason::UnsupportedChallenge, None),
        }
    }

    /// Re-sends the current REGISTER with a new CSeq and branch and fresh credentials.
    fn resend_with(
        &mut self,
        now: Instant,
        target: Target,
        authorization: Option<(String, bool)>,
        stale_retry_used: bool,
        interval_retries: u8,
    ) {
        self.send_request_with(
            now,
            target,
            Credentials::Answered { stale_retry_used },
            interval_retries,
            authorization,
        );
    }

    fn interval_too_brief(&mut self, now: Instant, response: &Response) {
        let Some(Op {
            phase: Phase::Sent(f),
            purpose,
            ..
        }) = &self.op
        else {
            return;
        };
        let min = hdr::header_value(&response.headers, "Min-Expires").and_then(hdr::delta_seconds);
        match min {
            Some(m)
                if m > self.expires
                    && m <= self.config.max_expires
                    && f.interval_retries < 2
                    && !matches!(purpose, Purpose::Unregister(_)) =>
            {
                self.expires = m;
                let (target, retries) = (f.target, f.interval_retries + 1);
                self.send_request(now, target, Credentials::None, retries);
            }
            _ => self.fail(now, FailureReason::Rejected(423), None),
        }
    }

    fn register_succeeded(&mut self, now: Instant, response: &Response) {
        let Some(op) = self.op.take() else { return };
        let Phase::Sent(f) = op.phase else { return };
        if let Purpose::Unregister(_) = op.purpose {
            return;
        }
        let granted = self.granted_expiry(response);
        if granted == 0 {
            self.op = Some(Op {
                phase: Phase::Sent(f),
                ..op
            });
            self.fail(
                now,
                FailureReason::Rejected(response.status_code.code()),
                None,
            );
            return;
        }
        let granted = Duration::from_secs(u64::from(granted));
        let fraction = self.config.refresh_min
            + (self.config.refresh_max - self.config.refresh_min) * self.rng.unit();
        let refresh_at = (f.sent_at + granted.mul_f64(fraction)).max(now + MIN_REFRESH);
        let binding = Binding {
            server: op.server,
            target: f.target,
            until: f.sent_at + granted,
            refresh_at,
        };
        if self.lifecycle == Lifecycle::ShuttingDown {
            self.unregister_queue.push_back(binding);
            return;
        }
        if op.purpose == Purpose::Switch {
            if let Some(old) = self.binding {
                if old.server != binding.server {
                    self.unregister_queue.push_back(old);
                }
            }
        }
        self.binding = Some(binding);
        self.health[op.server] = ServerHealth::Ok { since: now };
        self.attempt = 0;
        self.backoff_until = None;
        self.round_server = 0;
        self.round_target = 0;
        self.round_refused = false;
        self.round_retry_after = None;
        self.probe_at = (op.server > 0).then(|| now + self.jittered_probe());
        self.keepalive_at = self.config.keepalive_interval.map(|i| now + i);
        self.events.push_back(TrunkEvent::Registered {
            server: op.server,
            target: f.target,
            until: binding.until,
        });
        self.set_reachable(now);
    }

    fn jittered_probe(&mut self) -> Duration {
        // 75-100% of the interval, so many boxes do not probe HQ in step.
        self.config
            .probe_interval
            .mul_f64(0.75 + 0.25 * self.rng.unit())
    }

    fn granted_expiry(&self, response: &Response) -> u32 {
        for value in hdr::contact_values(&response.headers) {
            let Some(contact) = hdr::parse_contact(&value) else {
                continue;
            };
            if hdr::same_contact_uri(&contact.uri, &self.contact_uri) {
                if let Some(e) = hdr::param_value(&contact.params, "expires")
                    .as_deref()
                    .and_then(hdr::delta_seconds)
                {
                    return e;
                }
            }
        }
        // A server that rewrote our Contact (NAT) may list it under another address:
        // then the Expires header, or what we asked for, is what we have.
        hdr::header_value(&response.headers, "Expires")
            .and_then(hdr::delta_seconds)
            .unwrap_or(self.expires)
    }

    fn keepalive_succeeded(&mut self, now: Instant) {
        let Some(op) = self.op.take() else { return };
        self.health[op.server] = ServerHealth::Ok { since: now };
        if self.binding.is_some_and(|b| b.server == op.server) {
            self.keepalive_at = self.config.keepalive_interval.map(|i| now + i);
        }
    }

    fn probe_succeeded(&mut self, now: Instant) {
        let Some(op) = self.op.take() else { return };
        let Phase::Sent(f) = op.phase else { return };
        self.health[0] = ServerHealth::Ok { since: now };
        if self.lifecycle == Lifecycle::Running && self.binding.is_some() {
            self.start_op(now, Purpose::Switch, 0, 0, Some(f.target));
        }
    }

    /// The op failed with `reason`: decide what comes next.
    fn fail(&mut self, now: Instant, reason: FailureReason, retry_after: Option<Duration>) {
        let Some(op) = self.op.take() else { return };
        let server = op.server;
        match op.purpose {
            Purpose::Unregister(_) => return,
            Purpose::Probe | Purpose::Switch => {
                self.health[0] = ServerHealth::Failed {
                    since: now,
                    reason: reason.clone(),
                };
                self.events
                    .push_back(TrunkEvent::Failed { server: 0, reason });
                if self.binding.is_some() {
                    self.probe_at = Some(now + self.jittered_probe());
                }
                return;
            }
            Purpose::Register | Purpose::Refresh | Purpose::Keepalive => {}
        }
        self.health[server] = ServerHealth::Failed {
            since: now,
            reason: reason.clone(),
        };
        self.events.push_back(TrunkEvent::Failed {
            server,
            reason: reason.clone(),
        });
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        let target_index = match (op.purpose, &op.phase) {
            (Purpose::Refresh | Purpose::Keepalive, Phase::Sent(f)) => self.slots[server]
                .targets
                .iter()
                .position(|t| *t == f.target)
                .unwrap_or(0),
            _ => op.target_index,
        };
        if let Some(b) = self.binding {
            if b.server == server {
                self.binding = None;
                self.probe_at = None;
                self.keepalive_at = None;
                self.set_unreachable(now);
            }
        }
        if reason.refused() {
            self.round_refused = true;
        }
        if let Some(r) = retry_after {
            let r = r.min(self.config.retry_max);
            self.round_retry_after = Some(self.round_retry_after.map_or(r, |o| o.max(r)));
        }
        let more_targets = target_index + 1 < self.slots[server].targets.len();
        if reason.tries_next_target() && more_targets {
            self.round_server = server;
            self.round_target = target_index + 1;
            return;
        }
        // This server is done for the round: forget its targets so the next round
        // resolves afresh.
        self.slots[server].targets_valid_until = None;
        if server + 1 < self.config.servers.len() {
            self.round_server = server + 1;
            self.round_target = 0;
            return;
        }
        self.attempt = self.attempt.saturating_add(1);
        let exp = self
            .config
            .retry_base
            .saturating_mul(1u32 << (self.attempt - 1).min(20))
            .min(self.config.retry_max);
        let mut delay = exp.mul_f64(0.5 + 0.5 * self.rng.unit());
        if let Some(r) = self.round_retry_after {
            delay = delay.max(r);
        }
        if self.round_refused {
            delay = delay.max(self.config.auth_failure_backoff);
        }
        let until = now + delay;
        self.backoff_until = Some(until);
        self.round_server = 0;
        self.round_target = 0;
        self.round_refused = false;
        self.round_retry_after = None;
        self.set_unreachable(now);
        self.events.push_back(TrunkEvent::Backoff {
            attempt: self.attempt,
            until,
        });
    }
}

fn auth_header(value: String, proxy: bool) -> Header {
    if proxy {
        Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(value))
    } else {
        Header::Authorization(rsip::headers::Authorization::new(value))
    }
}

fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Sctp => "SCTP",
        Transport::TlsSctp => "TLS-SCTP",
        Transport::Ws => "WS",
        Transport::Wss => "WSS",
    }
}

/// The branch of the top Via (first value of the first Via header).
pub(crate) fn top_branch(headers: &Headers) -> Option<String> {
    let via = headers.iter().find_map(|h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })?;
    let first = hdr::split_list(via).into_iter().next()?;
    first.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| v.trim().to_owned())
    })
}
