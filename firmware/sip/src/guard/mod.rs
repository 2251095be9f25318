//! Abuse protection for the SIP endpoint, sans-IO (issue 3, item 8).
//!
//! # Modules
//!
//! - this module: [`Guard`], the per-source-address gate every request passes before
//!   the transaction layer sees it: temporary bans after failed authentication,
//!   scanner user agents, and limits on concurrent transactions and dialogs.
//! - [`toll`]: outbound toll restrictions: classify a dialled number (emergency,
//!   toll-free, local, national, mobile, international, premium) with a per-country
//!   [`toll::NumberingPlan`] and check it against the classes a caller may dial.
//!
//! Every check answers a [`Verdict`]: [`Verdict::Allow`], [`Verdict::Reject`] (send
//! the given final response) or [`Verdict::Drop`] (send nothing: scanners and banned
//! sources get silence, which is cheaper and tells them nothing).
//!
//! # Rules
//!
//! - **Failed authentication.** The daemon reports every failed digest check with
//!   [`Guard::record_auth_failure`]. When a source reaches
//!   [`GuardConfig::auth_failures_before_ban`] failures within the sliding
//!   [`GuardConfig::auth_failure_window`] (default 5 in 60 s), it is banned for
//!   [`GuardConfig::ban_duration`] (default 10 min). A ban ends the window: the
//!   failure count starts at zero after it.
//! - **Escalation.** Each ban of a source that was already banned within
//!   [`GuardConfig::offence_memory`] (default 24 h, counted from the end of its last
//!   ban) multiplies the duration by [`GuardConfig::ban_escalation`] (default 2),
//!   capped at [`GuardConfig::max_ban_duration`] (default 24 h). After a quiet
//!   `offence_memory` the level starts again at one.
//! - **While banned** every request from the source is dropped silently.
//! - **Scanner user agents.** A request whose `User-Agent` contains, case-insensitively,
//!   any of [`DEFAULT_SCANNER_USER_AGENTS`] (unless
//!   [`GuardConfig::block_default_scanners`] is off) or of
//!   [`GuardConfig::extra_scanner_user_agents`] is dropped, and with
//!   [`GuardConfig::ban_scanners`] the source is banned as for failed authentication.
//! - **Concurrency limits.** [`Guard::transaction_started`] /
//!   [`Guard::dialog_started`] count live server transactions and dialogs per source
//!   and answer `503 Service Unavailable` past
//!   [`GuardConfig::max_transactions_per_source`] /
//!   [`GuardConfig::max_dialogs_per_source`]; the daemon must pair every allowed start
//!   with [`Guard::transaction_ended`] / [`Guard::dialog_ended`] (a sans-IO core
//!   cannot hold a drop guard across the daemon's tasks).
//! - **Exempt sources** ([`GuardConfig::exempt`], e.g. the trunk servers and HQ) are
//!   never banned, dropped or limited.
//! - **Memory bound.** At most [`GuardConfig::max_tracked_sources`] addresses are
//!   tracked. When full, the idle record seen longest ago is evicted; when every record
//!   is busy (banned, or with live transactions/dialogs) a new source's transactions
//!   are refused with 503 and its auth failures are not counted (a flood of spoofed
//!   UDP sources cannot grow memory).
//!
//! Time is only what callers pass in as `now`; [`Guard::timeout`] says when
//! [`Guard::handle_timeout`] has work (a ban ends), and [`Guard::poll_event`] reports
//! bans and unbans for the log, the audit trail and the web page.
//!
//! # Limits
//!
//! Sources are single IP addresses: no prefix aggregation (an attacker spread over a
//! /64 is banned address by address). Only the `User-Agent` header is matched for
//! scanners.

pub mod toll;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Request, StatusCode};

/// User-agent substrings of well-known SIP scanners and brute-forcers, matched
/// case-insensitively.
pub const DEFAULT_SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iwar",
    "sipptk",
    "sip auditor",
    "smap",
    "pplsip",
    "cpxsip",
    "voip scanner",
    "sipscan",
];

/// Configuration of a [`Guard`]. Check it with [`GuardConfig::validate`] (done by
/// [`Guard::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failed authentications within [`Self::auth_failure_window`] that ban a source.
    pub auth_failures_before_ban: u32,
    /// Length of the sliding window failures are counted in.
    pub auth_failure_window: Duration,
    /// Duration of a first ban.
    pub ban_duration: Duration,
    /// Factor each repeated ban multiplies the previous duration by (1 = no escalation).
    pub ban_escalation: u32,
    /// Upper bound of an escalated ban.
    pub max_ban_duration: Duration,
    /// How long after its last ban ended a source's ban level is remembered.
    pub offence_memory: Duration,
    /// Match [`DEFAULT_SCANNER_USER_AGENTS`].
    pub block_default_scanners: bool,
    /// Further user-agent substrings to drop (case-insensitive).
    pub extra_scanner_user_agents: Vec<String>,
    /// Ban a source whose user agent is a scanner's.
    pub ban_scanners: bool,
    /// Live server transactions allowed per source.
    pub max_transactions_per_source: u32,
    /// Live dialogs allowed per source.
    pub max_dialogs_per_source: u32,
    /// Addresses never banned, dropped or limited (trunk servers, HQ).
    pub exempt: Vec<IpAddr>,
    /// Most source addresses tracked at once.
    pub max_tracked_sources: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            auth_failures_before_ban: 5,
            auth_failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(600),
            ban_escalation: 2,
            max_ban_duration: Duration::from_secs(24 * 3600),
            offence_memory: Duration::from_secs(24 * 3600),
            block_default_scanners: true,
            extra_scanner_user_agents: Vec::new(),
            ban_scanners: true,
            max_transactions_per_source: 64,
            max_dialogs_per_source: 32,
            exempt: Vec::new(),
            max_tracked_sources: 10_000,
        }
    }
}

/// A [`GuardConfig`] field that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardConfigError {
    /// A count or duration that must be positive is zero.
    #[error("guard config: {field} must be greater than zero")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// The maximum ban is shorter than the first ban.
    #[error("guard config: max_ban_duration ({max:?}) is shorter than ban_duration ({base:?})")]
    MaxBanTooShort {
        /// `ban_duration`.
        base: Duration,
        /// `max_ban_duration`.
        max: Duration,
    },
    /// An extra scanner pattern is empty (it would match every user agent).
    #[error("guard config: extra_scanner_user_agents entry {index} is empty")]
    EmptyScannerPattern {
        /// Position in the list.
        index: usize,
    },
}

impl GuardConfig {
    /// Checks that every field can work.
    pub fn validate(&self) -> Result<(), GuardConfigError> {
        let zero = |field| Err(GuardConfigError::Zero { field });
        if self.auth_failures_before_ban == 0 {
            return zero("auth_failures_before_ban");
        }
        if self.auth_failure_window.is_zero() {
            return zero("auth_failure_window");
        }
        if self.ban_duration.is_zero() {
            return zero("ban_duration");
        }
        if self.ban_escalation == 0 {
            return zero("ban_escalation");
        }
        if self.max_transactions_per_source == 0 {
            return zero("max_transactions_per_source");
        }
        if self.max_dialogs_per_source == 0 {
            return zero("max_dialogs_per_source");
        }
        if self.max_tracked_sources == 0 {
            return zero("max_tracked_sources");
        }
        if self.max_ban_duration < self.ban_duration {
            return Err(GuardConfigError::MaxBanTooShort {
                base: self.ban_duration,
                max: self.max_ban_duration,
            });
        }
        if let Some(index) = self
            .extra_scanner_user_agents
            .iter()
            .position(|p| p.trim().is_empty())
        {
            return Err(GuardConfigError::EmptyScannerPattern { index });
        }
        Ok(())
    }
}

/// What to do with a request (or a dialled number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Answer with this final response and go no further.
    Reject(Rejection),
    /// Send nothing at all.
    Drop(DropReason),
}

impl Verdict {
    /// True for [`Verdict::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// A refusal answered with a final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The SIP status code (`403`, `404`, `484`, `503`).
    pub code: u16,
    /// Why, for the reason phrase and the log.
    pub reason: RejectReason,
}

impl Rejection {
    /// The status code with the reason phrase to send.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::Other(self.code, self.reason.phrase().to_owned())
    }
}

/// Why a request or number was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Too many live server transactions from the source.
    TooManyTransactions,
    /// Too many live dialogs from the source.
    TooManyDialogs,
    /// The guard tracks too many sources to take another one.
    TooManySources,
    /// The dialled number's class is not among the caller's permissions.
    TollRestricted(toll::NumberClass),
    /// The dialled number is empty or too short.
    NumberIncomplete,
    /// The dialled number has characters or a length no number has.
    InvalidNumber,
}

impl RejectReason {
    /// The reason phrase for the response line.
    pub fn phrase(&self) -> &'static str {
        match self {
            RejectReason::TooManyTransactions => "Service Unavailable (too many transactions)",
            RejectReason::TooManyDialogs => "Service Unavailable (too many dialogs)",
            RejectReason::TooManySources => "Service Unavailable",
            RejectReason::TollRestricted(_) => "Forbidden (toll restriction)",
            RejectReason::NumberIncomplete => "Address Incomplete",
            RejectReason::InvalidNumber => "Not Found",
        }
    }
}

/// Why a request was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The source is banned until the given instant.
    Banned {
        /// When the ban ends.
        until: Instant,
    },
    /// The user agent is a known scanner.
    Scanner,
}

/// What made the guard ban a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanCause {
    /// Too many failed authentications in the window.
    AuthFailures,
    /// A scanner user agent.
    Scanner,
}

/// Something the daemon logs, audits or shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    /// A source was banned.
    Banned {
        /// The address.
        source: IpAddr,
        /// When the ban ends.
        until: Instant,
        /// 1 for a first ban, higher for repeats within the offence memory.
        level: u32,
        /// Why.
        cause: BanCause,
    },
    /// A ban ended.
    Unbanned {
        /// The address.
        source: IpAddr,
    },
}

/// What the guard knows of one source address.
#[derive(Debug, Default)]
struct SourceState {
    /// Times of the failures still inside the window (at most the ban threshold).
    failures: VecDeque<Instant>,
    /// The current ban, if any.
    ban: Option<Instant>,
    /// Level of the last ban (0 = never banned or forgotten).
    level: u32,
    /// When the last ban ended (or will end), for the offence memory.
    last_ban_end: Option<Instant>,
    /// Live server transactions.
    transactions: u32,
    /// Live dialogs.
    dialogs: u32,
    /// Last time anything happened, for eviction.
    last_seen: Option<Instant>,
}

impl SourceState {
    fn busy(&self, now: Instant) -> bool {
        self.transactions > 0 || self.dialogs > 0 || self.ban.is_some_and(|u| u > now)
    }
}

/// The per-source gate. See the module doc for the rules.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    /// Lowercased scanner patterns (defaults + extra).
    scanners: Vec<String>,
    sources: HashMap<IpAddr, SourceState>,
    events: VecDeque<GuardEvent>,
}

impl Guard {
    /// A guard with the given (validated) configuration.
    pub fn new(config: GuardConfig) -> Result<Self, GuardConfigError> {
        config.validate()?;
        let mut scanners: Vec<String> = Vec::new();
        if config.block_default_scanners {
            scanners.extend(DEFAULT_SCANNER_USER_AGENTS.iter().map(|s| s.to_string()));
        }
        scanners.extend(
            config
                .extra_scanner_user_agents
                .iter()
                .map(|s| s.trim().to_ascii_lowercase()),
        );
        Ok(Self {
            config,
            scanners,
            sources: HashMap::new(),
            events: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    fn exempt(&self, source: IpAddr) -> bool {
        self.config.exempt.contains(&source)
    }

    /// First check for every request from `source`: drops banned sources and scanner
    /// user agents (banning the latter when configured).
    pub fn check_request(&mut self, now: Instant, source: IpAddr, request: &Request) -> Verdict {
        if self.exempt(source) {
            return Verdict::Allow;
        }
        if let Some(until) = self.banned_until(now, source) {
            return Verdict::Drop(DropReason::Banned { until });
        }
        let user_agent = request.headers.iter().find_map(|h| match h {
            Header::UserAgent(ua) => Some(ua.value()),
            _ => None,
        });
        if let Some(ua) = user_agent {
            if self.is_scanner(ua) {
                if self.config.ban_scanners {
                    self.ban(now, source, BanCause::Scanner);
                }
                return Verdict::Drop(DropReason::Scanner);
            }
        }
        Verdict::Allow
    }

    /// Does `user_agent` contain a scanner pattern (case-insensitive)?
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        let ua = user_agent.to_ascii_lowercase();
        self.scanners.iter().any(|p| ua.contains(p.as_str()))
    }

    /// The end of the source's ban, if it is banned at `now`.
    pub fn banned_until(&self, now: Instant, source: IpAddr) -> Option<Instant> {
        self.sources
            .get(&source)
            .and_then(|s| s.ban)
            .filter(|&until| until > now)
    }

    /// Records a failed authentication from `source`; returns the ban end when this
    /// failure banned it. Failures reported while the source is banned are ignored.
    pub fn record_auth_failure(&mut self, now: Instant, source: IpAddr) -> Option<Instant> {
        if self.exempt(source) {
            return None;
        }
        let threshold = self.config.auth_failures_before_ban as usize;
        let window = self.config.auth_failure_window;
        let state = self.state_mut(now, source)?;
        if state.ban.is_some_and(|u| u > now) {
            // A banned source's requests are dropped before authentication; a late
            // report for one counts towards nothing.
            return None;
        }
        while state
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            state.failures.pop_front();
        }
        state.failures.push_back(now);
        while state.failures.len() > threshold {
            state.failures.pop_front();
        }
        if state.failures.len() >= threshold {
            state.failures.clear();
            return self.ban(now, source, BanCause::AuthFailures);
        }
        None
    }

    /// Failed authentications from `source` still inside the window at `now`.
    pub fn auth_failures(&self, now: Instant, source: IpAddr) -> usize {
        self.sources.get(&source).map_or(0, |s| {
            s.failures
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) < self.config.auth_failure_window)
                .count()
        })
    }

    /// Bans `source` now (also for the daemon: e.g. a malformed-message flood), with the
    /// escalation rules; returns the ban end, `None` for an exempt or untrackable
    /// source.
    pub fn ban(&mut self, now: Instant, source: IpAddr, cause: BanCause) -> Option<Instant> {
        if self.exempt(source) {
            return None;
        }
        let base = self.config.ban_duration;
        let factor = self.config.ban_escalation;
        let max = self.config.max_ban_duration;
        let memory = self.config.offence_memory;
        let state = self.state_mut(now, source)?;
        if let Some(until) = state.ban.filter(|&u| u > now) {
            // Already banned: a scanner retrying does not extend or escalate it.
            return Some(until);
        }
        let remembered = state
            .last_ban_end
            .is_some_and(|end| now.saturating_duration_since(end) < memory);
        let level = if remembered {
            state.level.saturating_add(1)
        } else {
            1
        };
        let mut duration = base;
        for _ in 1..level {
            duration = duration.saturating_mul(factor);
            if duration >= max {
                break;
            }
        }
        let duration = duration.min(max);
        let until = now + duration;
        state.ban = Some(until);
        state.level = level;
        state.last_ban_end = Some(until);
        state.failures.clear();
        self.events.push_back(GuardEvent::Banned {
            source,
            until,
            level,
            cause,
        });
        Some(until)
    }

    /// Lifts a ban by hand (technician on the web page); the level is kept.
    pub fn unban(&mut self, now: Instant, source: IpAddr) -> bool {
        match self.sources.get_mut(&source) {
            Some(state) if state.ban.is_some_and(|u| u > now) => {
                state.ban = None;
                state.last_ban_end = Some(now);
                self.events.push_back(GuardEvent::Unbanned { source });
                true
            }
            _ => false,
        }
    }

    /// Counts a new server transaction from `source`, or refuses it with 503.
    pub fn transaction_started(&mut self, now: Instant, source: IpAddr) -> Verdict {
        if self.exempt(source) {
            return Verdict::Allow;
        }
        let max = self.config.max_transactions_per_source;
        match self.state_mut(now, source) {
            None => Verdict::Reject(Rejection {
                code: 503,
                reason: RejectReason::TooManySources,
            }),
            Some(state) if state.transactions >= max => Verdict::Reject(Rejection {
                code: 503,
                reason: RejectReason::TooManyTransactions,
            }),
            Some(state) => {
                state.transactions += 1;
                Verdict::Allow
            }
        }
    }

    /// A server transaction from `source` that [`Self::transaction_started`] allowed
    /// has terminated.
    pub fn transaction_ended(&mut self, source: IpAddr) {
        if let Some(state) = self.sources.get_mut(&source) {
            state.transactions = state.transactions.saturating_sub(1);
        }
    }

    /// Counts a new dialog with `source`, or refuses it with 503.
    pub fn dialog_started(&mut self, now: Instant, source: IpAddr) -> Verdict {
        if self.exempt(source) {
            return Verdict::Allow;
        }
        let max = self.config.max_dialogs_per_source;
        match self.state_mut(now, source) {
            None => Verdict::Reject(Rejection {
                code: 503,
                reason: RejectReason::TooManySources,
            }),
            Some(state) if state.dialogs >= max => Verdict::Reject(Rejection {
                code: 503,
                reason: RejectReason::TooManyDialogs,
            }),
            Some(state) => {
                state.dialogs += 1;
                Verdict::Allow
            }
        }
    }

    /// A dialog that [`Self::dialog_started`] allowed has ended.
    pub fn dialog_ended(&mut self, source: IpAddr) {
        if let Some(state) = self.sources.get_mut(&source) {
            state.dialogs = state.dialogs.saturating_sub(1);
        }
    }

    /// Live server transactions and dialogs counted for `source`.
    pub fn live(&self, source: IpAddr) -> (u32, u32) {
        self.sources
            .get(&source)
            .map_or((0, 0), |s| (s.transactions, s.dialogs))
    }

    /// Number of source records held.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// The earliest instant [`Self::handle_timeout`] has work: the end of a ban.
    pub fn timeout(&self) -> Option<Instant> {
        self.sources.values().filter_map(|s| s.ban).min()
    }

    /// Ends the bans due at `now` (emitting [`GuardEvent::Unbanned`]) and forgets idle
    /// sources whose failures and ban level have aged out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let window = self.config.auth_failure_window;
        let memory = self.config.offence_memory;
        let mut ended = Vec::new();
        self.sources.retain(|&source, state| {
            if state.ban.is_some_and(|until| until <= now) {
                state.ban = None;
                ended.push(source);
            }
            while state
                .failures
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                state.failures.pop_front();
            }
            let level_remembered = state
                .last_ban_end
                .is_some_and(|end| now.saturating_duration_since(end) < memory);
            state.busy(now) || !state.failures.is_empty() || level_remembered
        });
        ended.sort();
        self.events.extend(
            ended
                .into_iter()
                .map(|source| GuardEvent::Unbanned { source }),
        );
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<GuardEvent> {
        self.events.pop_front()
    }

    /// The record of `source`, created when there is room (evicting the idle record
    /// seen longest ago when full). `None` when every record is busy.
    fn state_mut(&mut self, now: Instant, source: IpAddr) -> Option<&mut SourceState> {
        if !self.sources.contains_key(&source)
            && self.sources.len() >= self.config.max_tracked_sources
        {
            let victim = self
                .sources
                .iter()
                .filter(|(_, s)| !s.busy(now))
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(&ip, _)| ip);
            match victim {
                Some(ip) => {
                    self.sources.remove(&ip);
                }
                None => return None,
            }
        }
        let state = self.sources.entry(source).or_default();
        state.last_seen = Some(now);
        Some(state)
    }
}

#[cfg(test)]
mod tests;
