//! The endpoint's own report for the web page's SIP page and `GET /api/v1/sip`: the
//! trunk registration's state and the local phones' registrations, as the endpoint's
//! cores hold them ([`SipStatus`]).
//!
//! The endpoint task publishes a new snapshot on the `watch` channel given to
//! [`super::SipEndpoint::start`] at start and after a turn in which the registrar reported a
//! binding change (added, refreshed, removed, expired) or the trunk registration
//! moved, so readers never touch the task's state and an idle endpoint publishes
//! nothing. Times are wall-clock ms (converted from the cores' `Instant`s when the
//! snapshot is made); no password or digest secret is ever in it.

use std::time::Instant;

use branchline_sip::registrar::Binding;
use branchline_sip::trunk::{FailureReason, ServerHealth, TrunkState};
use serde::Serialize;

use super::{SipEndpoint, TrunkSide};

/// The SIP endpoint's state for the web page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SipStatus {
    /// Bumped at every published change.
    pub version: u64,
    /// When this snapshot was made, ms since the Unix epoch.
    pub at_ms: i64,
    /// The bound listeners: `udp 0.0.0.0:5060`, ...
    pub listeners: Vec<String>,
    /// The trunk (`None`: no `[sip.trunk]`).
    pub trunk: Option<TrunkReport>,
    /// Every local SIP account (`[[sip_accounts]]`) with its registered contacts.
    pub phones: Vec<PhoneReport>,
    /// Phones with at least one registered contact.
    pub phones_registered: usize,
}

impl SipStatus {
    /// The value of the channel before the endpoint's first snapshot (version 0:
    /// the endpoint is starting).
    pub fn starting() -> SipStatus {
        SipStatus {
            version: 0,
            at_ms: 0,
            listeners: Vec::new(),
            trunk: None,
            phones: Vec::new(),
            phones_registered: 0,
        }
    }

    /// Whether this is [`SipStatus::starting`]'s placeholder.
    pub fn is_starting(&self) -> bool {
        self.version == 0
    }
}

/// The trunk registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrunkReport {
    /// `registered`, `registering`, `backoff`, `unregistered`, `unregistering`, or
    /// `not registering` (`register = false`: calls go to the servers unregistered).
    pub state: &'static str,
    /// Whether outside calls may use the trunk now (registered; with
    /// `register = false`, always).
    pub usable: bool,
    /// The username the trunk registers as.
    pub username: String,
    /// The server registered with, or being tried.
    pub server: Option<String>,
    /// Where the binding's REGISTER went (address and transport), when registered.
    pub target: Option<String>,
    /// When the granted registration ends, ms since the Unix epoch.
    pub expires_at_ms: Option<i64>,
    /// When the next round starts after every server failed, ms since the Unix epoch.
    pub next_attempt_ms: Option<i64>,
    /// Failed rounds in a row (backoff).
    pub failed_rounds: Option<u32>,
    /// Every configured server and what the endpoint last saw of it.
    pub servers: Vec<TrunkServerReport>,
}

/// One configured trunk server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrunkServerReport {
    /// `host[:port];transport=...`.
    pub server: String,
    /// `unknown` (not tried yet), `ok` or `failed`.
    pub health: &'static str,
    /// Since when, ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Why the last attempt failed, in words.
    pub error: Option<String>,
}

/// One local SIP account and its registrations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhoneReport {
    /// The extension (also the digest username).
    pub extension: String,
    /// Display name.
    pub name: String,
    /// Registered contacts, best first (empty: not registered).
    pub contacts: Vec<ContactReport>,
}

/// One registered contact (binding) of a phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactReport {
    /// The Contact URI requests for the phone go to.
    pub contact: String,
    /// Where the REGISTER came from: transport and source address (`udp
    /// 192.0.2.7:5062`): where requests really go (rport, NAT).
    pub source: String,
    /// When the binding expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// When it was first registered, ms since the Unix epoch.
    pub registered_at_ms: i64,
    /// The phone's User-Agent, if it sent one.
    pub user_agent: Option<String>,
}

/// `t` on the wall clock, given that `now` is `now_ms`.
fn wall(now: Instant, now_ms: i64, t: Instant) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if t >= now {
        now_ms.saturating_add(ms(t - now))
    } else {
        now_ms.saturating_sub(ms(now - t))
    }
}

/// A trunk failure in words.
pub fn failure_text(reason: &FailureReason) -> String {
    match reason {
        FailureReason::Timeout => "no answer in time".to_owned(),
        FailureReason::Transport => "could not send (connection refused or TLS failed)".to_owned(),
        FailureReason::Dns => "DNS gave no address".to_owned(),
        FailureReason::ServerError(code) => format!("server error {code}"),
        FailureReason::AuthRejected(code) => format!("credentials refused ({code})"),
        FailureReason::UnsupportedChallenge => "digest challenge the box cannot answer".to_owned(),
        FailureReason::Rejected(code) => format!("refused with {code}"),
    }
}

fn trunk_report(trunk: &TrunkSide, now: Instant, now_ms: i64) -> TrunkReport {
    let servers_config = &trunk.config.servers;
    let server_name = |i: usize| servers_config.get(i).map(ToString::to_string);
    let Some(r) = &trunk.registration else {
        return TrunkReport {
            state: "not registering",
            usable: true,
            username: trunk.config.username.clone(),
            server: None,
            target: None,
            expires_at_ms: None,
            next_attempt_ms: None,
            failed_rounds: None,
            servers: servers_config
                .iter()
                .map(|s| TrunkServerReport {
                    server: s.to_string(),
                    health: "unknown",
                    since_ms: None,
                    error: None,
                })
                .collect(),
        };
    };
    let mut report = TrunkReport {
        state: "unregistered",
        usable: r.reachability().is_reachable(),
        username: trunk.config.username.clone(),
        server: None,
        target: r.active_target().map(|t| {
            format!(
                "{} {}",
                t.transport.to_string().to_ascii_lowercase(),
                t.addr
            )
        }),
        expires_at_ms: None,
        next_attempt_ms: None,
        failed_rounds: None,
        servers: r
            .servers()
            .map(|(server, health)| {
                let (health, since, error) = match health {
                    ServerHealth::Unknown => ("unknown", None, None),
                    ServerHealth::Ok { since } => ("ok", Some(*since), None),
                    ServerHealth::Failed { since, reason } => {
                        ("failed", Some(*since), Some(failure_text(reason)))
                    }
                };
                TrunkServerReport {
                    server: server.to_string(),
                    health,
                    since_ms: since.map(|t| wall(now, now_ms, t)),
                    error,
                }
            })
            .collect(),
    };
    match r.state() {
        TrunkState::Unregistered => {}
        TrunkState::Unregistering => report.state = "unregistering",
        TrunkState::Registering { server } => {
            report.state = "registering";
            report.server = server_name(server);
        }
        TrunkState::Registered { server, until } => {
            report.state = "registered";
            report.server = server_name(server);
            report.expires_at_ms = Some(wall(now, now_ms, until));
        }
        TrunkState::Backoff { attempt, next } => {
            report.state = "backoff";
            report.failed_rounds = Some(attempt);
            report.next_attempt_ms = Some(wall(now, now_ms, next));
        }
    }
    report
}

fn contact_report(b: &Binding, now: Instant, now_ms: i64) -> ContactReport {
    ContactReport {
        contact: b.uri().to_string(),
        source: format!(
            "{} {}",
            b.flow.transport.to_string().to_ascii_lowercase(),
            b.flow.peer
        ),
        expires_at_ms: wall(now, now_ms, b.expires_at),
        registered_at_ms: wall(now, now_ms, b.registered_at),
        user_agent: b.user_agent.clone(),
    }
}

impl SipEndpoint {
    /// The snapshot of the endpoint's state at `now` (`now_ms` on the wall clock).
    pub(super) fn status_report(&self, version: u64, now: Instant, now_ms: i64) -> SipStatus {
        let phones: Vec<PhoneReport> = self
            .settings
            .accounts
            .iter()
            .map(|a| PhoneReport {
                extension: a.extension.clone(),
                name: a.name.clone(),
                contacts: self
                    .registrar
                    .lookup(now, &a.extension)
                    .into_iter()
                    .map(|b| contact_report(b, now, now_ms))
                    .collect(),
            })
            .collect();
        SipStatus {
            version,
            at_ms: now_ms,
            listeners: self
                .transport
                .local_addrs()
                .iter()
                .map(|(kind, addr)| format!("{} {addr}", kind.to_string().to_ascii_lowercase()))
                .collect(),
            trunk: self.trunk.as_ref().map(|t| trunk_report(t, now, now_ms)),
            phones_registered: phones.iter().filter(|p| !p.contacts.is_empty()).count(),
            phones,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn instants_map_to_the_wall_clock_both_ways() {
        let now = Instant::now();
        assert_eq!(wall(now, 10_000, now), 10_000);
        assert_eq!(
            wall(now, 10_000, now + Duration::from_millis(1_500)),
            11_500
        );
        let earlier = now.checked_sub(Duration::from_secs(2)).unwrap_or(now);
        assert_eq!(
            wall(now, 10_000, earlier),
            10_000 - i64::try_from((now - earlier).as_millis()).unwrap()
        );
    }

    #[test]
    fn failures_read_as_words() {
        assert_eq!(
            failure_text(&FailureReason::AuthRejected(403)),
            "credentials refused (403)"
        );
        assert_eq!(failure_text(&FailureReason::Timeout), "no answer in time");
    }
}
