//! `[sip]`, `[sip.guard]` and `[sip.trunk]`: the SIP endpoint's settings (see
//! [`crate::sip_endpoint`]). Validated like the rest of the file: every error names
//! the file, the line and the field.
//!
//! ```toml
//! [sip]
//! udp = "0.0.0.0:5060"          # listeners; at least one of udp/tcp/tls (port 0: any)
//! tcp = "0.0.0.0:5060"
//! tls = "0.0.0.0:5061"          # needs tls_cert and tls_key (PEM files)
//! tls_cert = "/etc/branchline/sip.crt"
//! tls_key = "/etc/branchline/sip.key"
//! domain = "branch.example"     # digest realm and domain of local AORs
//! contact_host = "192.0.2.10"   # address for Contact/Via when listeners bind 0.0.0.0
//! max_message_bytes = 65535
//! md5_first = false             # true: MD5 challenge before SHA-256 (MD5-only phones)
//! digest_algorithms = ["SHA-256", "MD5"]  # challenges offered, in this order (or md5_first)
//! session_expires_s = 1800      # RFC 4028 session timers: longest interval, and the one
//!                               # our INVITEs propose; 0: off
//! min_se_s = 90                 # smallest interval accepted (422 below it); sent as
//!                               # Min-SE on our INVITEs when not 90
//!
//! [sip.guard]
//! auth_failures_before_ban = 5
//! auth_failure_window_s = 60
//! ban_s = 600
//! max_ban_s = 86400
//! ban_scanners = true
//! scanner_user_agents = ["evil-dialer"]
//! max_transactions_per_source = 64
//! max_dialogs_per_source = 32
//!
//! [sip.trunk]
//! servers = ["sip.carrier.example;transport=udp", "192.0.2.20:5060"]
//! domain = "carrier.example"
//! username = "branch17"
//! password = "..."
//! register = true
//! expires = 600
//! keepalive_s = 30              # OPTIONS to the registered server; 0: off
//! latch_rtp = false
//! nameservers = ["192.0.2.53"]  # DNS for SRV/A lookups (port 53 unless given); default /etc/resolv.conf
//! caller_id_default = "+49301234000"
//! caller_id = [{ extensions = "2XX", number = "+4930123420{last:1}" }]
//! did_default = "101"
//! did = [{ number = "+49301234200", extension = "101" }]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use branchline_sip::digest::Algorithm;
use branchline_sip::session_timer::{self, SessionTimerConfig};
use branchline_sip::trunk::did::{DidNormalization, DidRouting};
use branchline_sip::trunk::identity::CallerIdRules;
use branchline_sip::trunk::TrunkServer;
use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::error::Result;

/// Allowed range and default of `sip.max_message_bytes`.
pub const SIP_MAX_MESSAGE_BYTES: (i64, RangeInclusive<i64>) = (65_535, 1_500..=65_535);
/// Allowed range and default of `sip.trunk.expires` (seconds).
pub const TRUNK_EXPIRES_S: (i64, RangeInclusive<i64>) = (600, 60..=86_400);
/// Allowed range and default of `sip.trunk.keepalive_s` (seconds; 0 turns the
/// keepalive off, otherwise at least 5).
pub const TRUNK_KEEPALIVE_S: (i64, RangeInclusive<i64>) = (30, 0..=3_600);
/// Allowed range and default of `sip.session_expires_s` (RFC 4028 session timers;
/// 0 turns them off, otherwise at least `min_se_s`).
pub const SESSION_EXPIRES_S: (i64, RangeInclusive<i64>) =
    (1_800, 0..=session_timer::MAX_SESSION_EXPIRES as i64);
/// Allowed range and default of `sip.min_se_s` (RFC 4028 4: never below 90 s).
pub const MIN_SE_S: (i64, RangeInclusive<i64>) = (
    session_timer::MIN_SE_FLOOR as i64,
    session_timer::MIN_SE_FLOOR as i64..=session_timer::MAX_SESSION_EXPIRES as i64,
);

/// `[sip]` as serde reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSip {
    pub udp: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub tls: Option<Spanned<String>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub domain: Option<Spanned<String>>,
    pub contact_host: Option<Spanned<String>>,
    pub max_message_bytes: Option<Spanned<i64>>,
    pub md5_first: Option<bool>,
    pub digest_algorithms: Option<Spanned<Vec<String>>>,
    pub session_expires_s: Option<Spanned<i64>>,
    pub min_se_s: Option<Spanned<i64>>,
    #[serde(default)]
    pub guard: RawSipGuard,
    pub trunk: Option<RawSipTrunk>,
}

/// `[sip.guard]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSipGuard {
    pub auth_failures_before_ban: Option<Spanned<i64>>,
    pub auth_failure_window_s: Option<Spanned<i64>>,
    pub ban_s: Option<Spanned<i64>>,
    pub max_ban_s: Option<Spanned<i64>>,
    pub ban_scanners: Option<bool>,
    pub scanner_user_agents: Option<Vec<Spanned<String>>>,
    pub max_transactions_per_source: Option<Spanned<i64>>,
    pub max_dialogs_per_source: Option<Spanned<i64>>,
}

/// One `caller_id` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallerId {
    pub extensions: Spanned<String>,
    pub number: Spanned<String>,
}

/// One `did` route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDid {
    pub number: Spanned<String>,
    pub extension: Spanned<String>,
}

/// `[sip.trunk]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSipTrunk {
    pub servers: Spanned<Vec<Spanned<String>>>,
    pub domain: Spanned<String>,
    pub username: Spanned<String>,
    pub auth_username: Option<Spanned<String>>,
    pub password: Spanned<String>,
    pub register: Option<bool>,
    pub expires: Option<Spanned<i64>>,
    pub keepalive_s: Option<Spanned<i64>>,
    pub latch_rtp: Option<bool>,
    pub nameservers: Option<Vec<Spanned<String>>>,
    pub caller_id_default: Option<Spanned<String>>,
    #[serde(default)]
    pub caller_id: Vec<RawCallerId>,
    pub did_default: Option<Spanned<String>>,
    #[serde(default)]
    pub did: Vec<RawDid>,
}

/// `[sip]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// UDP listener.
    pub udp: Option<SocketAddr>,
    /// TCP listener.
    pub tcp: Option<SocketAddr>,
    /// TLS listener (with `tls_cert`/`tls_key`).
    pub tls: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// Digest realm and domain of local AORs.
    pub domain: String,
    /// Address written in Contact and Via when the listeners bind an unspecified
    /// address; `None`: the address the route to the peer leaves from.
    pub contact_host: Option<IpAddr>,
    /// Largest SIP message accepted (bytes).
    pub max_message_bytes: usize,
    /// The digest challenges a `401` offers, in this order: SHA-256 then MD5 by
    /// default (RFC 8760); `md5_first = true` puts MD5 first for phones that take the
    /// first challenge and speak only MD5 (SIPp 3.6, older desk phones);
    /// `digest_algorithms = ["MD5"]` offers MD5 alone, for phones that give up on a
    /// `401` carrying any algorithm they do not know (libre 1.x: baresip 1.0).
    pub digest_algorithms: Vec<Algorithm>,
    /// RFC 4028 session timers (`session_expires_s`, `min_se_s`); `None` when
    /// `session_expires_s = 0`: an INVITE that requires `timer` is then refused `420`
    /// and `Session-Expires` is ignored.
    pub session_timer: Option<SessionTimerConfig>,
    /// `[sip.guard]`
    pub guard: SipGuardConfig,
    /// `[sip.trunk]`
    pub trunk: Option<SipTrunkConfig>,
}

/// `[sip.guard]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipGuardConfig {
    /// Failed authentications within the window that ban a source.
    pub auth_failures_before_ban: u32,
    /// The sliding window.
    pub auth_failure_window: Duration,
    /// First ban.
    pub ban: Duration,
    /// Longest escalated ban.
    pub max_ban: Duration,
    /// Ban sources whose User-Agent is a known scanner's.
    pub ban_scanners: bool,
    /// Further scanner User-Agent substrings.
    pub scanner_user_agents: Vec<String>,
    /// Live server transactions per source address.
    pub max_transactions_per_source: u32,
    /// Live dialogs per source address.
    pub max_dialogs_per_source: u32,
}

/// `[sip.trunk]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTrunkConfig {
    /// Servers in preference order.
    pub servers: Vec<TrunkServer>,
    /// The account's SIP domain.
    pub domain: String,
    /// User part of the account's AOR.
    pub username: String,
    /// Digest username, when it differs.
    pub auth_username: Option<String>,
    /// Digest password.
    pub password: String,
    /// Register to the trunk (off: calls only, the trunk authenticates by address).
    pub register: bool,
    /// Requested registration time.
    pub expires: u32,
    /// OPTIONS keepalive to the registered server (finds an outage, e.g. a registrar
    /// restart, in seconds instead of at the next refresh); `None`: off.
    pub keepalive: Option<Duration>,
    /// Symmetric RTP on trunk legs (carriers normally send from their SDP address).
    pub latch_rtp: bool,
    /// DNS servers for the trunk's RFC 3263 lookups (SRV, then A/AAAA); empty: the
    /// system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Outbound caller-ID rules.
    pub caller_id: CallerIdRules,
    /// Inbound DID routing as `(number pattern, extension template)` text pairs with
    /// the default; turned into a [`DidRouting`] with the site's numbering.
    pub did: Vec<(String, String)>,
    /// Extension rung for a DID no route matches.
    pub did_default: Option<String>,
}

impl SipTrunkConfig {
    /// The DID table with `normalization` (the site country's prefixes).
    pub fn did_routing(
        &self,
        normalization: DidNormalization,
    ) -> Result<DidRouting, branchline_sip::trunk::did::DidError> {
        let routes: Vec<(&str, &str)> = self
            .did
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        DidRouting::new(normalization, &routes, self.did_default.as_deref())
    }
}

fn header_safe(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>' | '"' | ' ' | '@' | ';' | ',' | ':'))
}

impl Ctx<'_> {
    fn socket(&self, v: Option<Spanned<String>>, field: &str) -> Result<Option<SocketAddr>> {
        v.map(|s| {
            s.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    s.span(),
                    field,
                    format!("{:?} is not an address like 0.0.0.0:5060", s.get_ref()),
                )
            })
        })
        .transpose()
    }

    fn positive(
        &self,
        v: Option<Spanned<i64>>,
        field: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Result<u64> {
        let n = self.ranged(v, field, (default, range))?;
        Ok(n.unsigned_abs())
    }

    pub(super) fn sip(&self, raw: RawSip) -> Result<SipConfig> {
        let udp = self.socket(raw.udp, "sip.udp")?;
        let tcp = self.socket(raw.tcp, "sip.tcp")?;
        let tls_span = raw.tls.as_ref().map(Spanned::span);
        let tls = self.socket(raw.tls, "sip.tls")?;
        let tls_cert = raw
            .tls_cert
            .map(|p| self.path(p, "sip.tls_cert"))
            .transpose()?;
        let tls_key = raw
            .tls_key
            .map(|p| self.path(p, "sip.tls_key"))
            .transpose()?;
        if let Some(span) = tls_span {
            if tls_cert.is_none() || tls_key.is_none() {
                return Err(self.invalid(
                    span,
                    "sip.tls",
                    "a TLS listener needs sip.tls_cert and sip.tls_key (PEM files)",
                ));
            }
        }
        let udp = if udp.is_none() && tcp.is_none() && tls.is_none() {
            Some(SocketAddr::from(([0, 0, 0, 0], 5060)))
        } else {
            udp
        };
        let domain = match raw.domain {
            Some(d) if !header_safe(d.get_ref()) => {
                return Err(self.invalid(
                    d.span(),
                    "sip.domain",
                    format!(
                        "{:?} is empty or has characters a SIP domain cannot",
                        d.get_ref()
                    ),
                ))
            }
            Some(d) => d.into_inner(),
            None => "branchline".to_owned(),
        };
        let contact_host = raw
            .contact_host
            .map(|h| {
                h.get_ref()
                    .parse::<IpAddr>()
                    .ok()
                    .filter(|ip| !ip.is_unspecified())
                    .ok_or_else(|| {
                        self.invalid(
                            h.span(),
                            "sip.contact_host",
                            format!("{:?} is not a specific IP address", h.get_ref()),
                        )
                    })
            })
            .transpose()?;
        let max_message_bytes = self.ranged(
            raw.max_message_bytes,
            "sip.max_message_bytes",
            SIP_MAX_MESSAGE_BYTES,
        )?;
        let digest_algorithms = self.digest_algorithms(raw.md5_first, raw.digest_algorithms)?;
        let session_timer = self.session_timer(raw.session_expires_s, raw.min_se_s)?;
        let guard = self.sip_guard(raw.guard)?;
        let trunk = raw.trunk.map(|t| self.sip_trunk(t)).transpose()?;
        Ok(SipConfig {
            udp,
            tcp,
            tls,
            tls_cert,
            tls_key,
            domain,
            contact_host,
            max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(65_535),
            digest_algorithms,
            session_timer,
            guard,
            trunk,
        })
    }

    /// `sip.session_expires_s` and `sip.min_se_s`: off at 0; otherwise the interval
    /// may not be below the minimum (the box would refuse its own proposal).
    fn session_timer(
        &self,
        expires: Option<Spanned<i64>>,
        min_se: Option<Spanned<i64>>,
    ) -> Result<Option<SessionTimerConfig>> {
        // The field to blame when the two disagree: the interval when it was given,
        // else the minimum (above the default interval).
        let blame = match (&expires, &min_se) {
            (Some(e), _) => Some((e.span(), "sip.session_expires_s")),
            (None, Some(m)) => Some((m.span(), "sip.min_se_s")),
            (None, None) => None,
        };
        let expires = self.ranged(expires, "sip.session_expires_s", SESSION_EXPIRES_S)?;
        let min_se = self.ranged(min_se, "sip.min_se_s", MIN_SE_S)?;
        if expires == 0 {
            return Ok(None);
        }
        if let (true, Some((span, field))) = (expires < min_se, blame) {
            return Err(self.invalid(
                span,
                field,
                format!(
                    "session_expires_s ({expires}) is below min_se_s ({min_se}); \
                     session_expires_s = 0 turns session timers off"
                ),
            ));
        }
        Ok(Some(SessionTimerConfig {
            min_se: u32::try_from(min_se).unwrap_or(u32::MAX),
            session_expires: u32::try_from(expires).unwrap_or(u32::MAX),
        }))
    }

    /// `sip.digest_algorithms` (or the older `md5_first`): the registrar's challenges,
    /// SHA-256 and MD5 (the two it issues), each at most once, in offer order.
    fn digest_algorithms(
        &self,
        md5_first: Option<bool>,
        raw: Option<Spanned<Vec<String>>>,
    ) -> Result<Vec<Algorithm>> {
        const FIELD: &str = "sip.digest_algorithms";
        let Some(raw) = raw else {
            return Ok(if md5_first == Some(true) {
                vec![Algorithm::Md5, Algorithm::Sha256]
            } else {
                vec![Algorithm::Sha256, Algorithm::Md5]
            });
        };
        let span = raw.span();
        if md5_first.is_some() {
            return Err(self.invalid(
                span,
                FIELD,
                "set either digest_algorithms or md5_first, not both",
            ));
        }
        let names = raw.into_inner();
        if names.is_empty() {
            return Err(self.invalid(span, FIELD, "is empty: list \"SHA-256\", \"MD5\" or both"));
        }
        let mut algorithms = Vec::with_capacity(names.len());
        for name in &names {
            let algorithm = Algorithm::from_token(name)
                .filter(|a| matches!(a, Algorithm::Sha256 | Algorithm::Md5))
                .ok_or_else(|| {
                    self.invalid(
                        span.clone(),
                        FIELD,
                        format!("{name:?} is not offered by the registrar: \"SHA-256\" or \"MD5\""),
                    )
                })?;
            if algorithms.contains(&algorithm) {
                return Err(self.invalid(span, FIELD, format!("{name:?} is listed twice")));
            }
            algorithms.push(algorithm);
        }
        Ok(algorithms)
    }

    fn sip_guard(&self, raw: RawSipGuard) -> Result<SipGuardConfig> {
        let failures = self.positive(
            raw.auth_failures_before_ban,
            "sip.guard.auth_failures_before_ban",
            1..=1000,
            5,
        )?;
        let window = self.positive(
            raw.auth_failure_window_s,
            "sip.guard.auth_failure_window_s",
            1..=86_400,
            60,
        )?;
        let ban_span = raw.max_ban_s.as_ref().map(Spanned::span);
        let ban = self.positive(raw.ban_s, "sip.guard.ban_s", 1..=604_800, 600)?;
        let max_ban = self.positive(raw.max_ban_s, "sip.guard.max_ban_s", 1..=604_800, 86_400)?;
        if max_ban < ban {
            let span = ban_span.unwrap_or(0..0);
            return Err(self.invalid(
                span,
                "sip.guard.max_ban_s",
                format!("{max_ban} s is shorter than sip.guard.ban_s ({ban} s)"),
            ));
        }
        let mut scanner_user_agents = Vec::new();
        for (i, ua) in raw
            .scanner_user_agents
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if ua.get_ref().trim().is_empty() {
                return Err(self.invalid(
                    ua.span(),
                    format!("sip.guard.scanner_user_agents[{i}]"),
                    "must not be empty (it would match every phone)",
                ));
            }
            scanner_user_agents.push(ua.into_inner());
        }
        Ok(SipGuardConfig {
            auth_failures_before_ban: u32::try_from(failures).unwrap_or(5),
            auth_failure_window: Duration::from_secs(window),
            ban: Duration::from_secs(ban),
            max_ban: Duration::from_secs(max_ban),
            ban_scanners: raw.ban_scanners.unwrap_or(true),
            scanner_user_agents,
            max_transactions_per_source: u32::try_from(self.positive(
                raw.max_transactions_per_source,
                "sip.guard.max_transactions_per_source",
                1..=100_000,
                64,
            )?)
            .unwrap_or(64),
            max_dialogs_per_source: u32::try_from(self.positive(
                raw.max_dialogs_per_source,
                "sip.guard.max_dialogs_per_source",
                1..=100_000,
                32,
            )?)
            .unwrap_or(32),
        })
    }

    fn sip_trunk(&self, raw: RawSipTrunk) -> Result<SipTrunkConfig> {
        let servers_span = raw.servers.span();
        let mut servers = Vec::new();
        for (i, s) in raw.servers.into_inner().into_iter().enumerate() {
            let server: TrunkServer =
                s.get_ref()
                    .parse()
                    .map_err(|e: branchline_sip::trunk::ServerParseError| {
                        self.invalid(s.span(), format!("sip.trunk.servers[{i}]"), e.to_string())
                    })?;
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(self.invalid(
                servers_span,
                "sip.trunk.servers",
                "must list at least one server",
            ));
        }
        let text = |v: Spanned<String>, field: &str| -> Result<String> {
            if header_safe(v.get_ref()) {
                Ok(v.into_inner())
            } else {
                Err(self.invalid(
                    v.span(),
                    field,
                    format!(
                        "{:?} is empty or has characters SIP does not allow here",
                        v.get_ref()
                    ),
                ))
            }
        };
        let domain = text(raw.domain, "sip.trunk.domain")?;
        let username = text(raw.username, "sip.trunk.username")?;
        let auth_username = raw
            .auth_username
            .map(|a| text(a, "sip.trunk.auth_username"))
            .transpose()?;
        if raw.password.get_ref().is_empty() || raw.password.get_ref().chars().any(char::is_control)
        {
            return Err(self.invalid(
                raw.password.span(),
                "sip.trunk.password",
                "must not be empty or contain control characters",
            ));
        }
        let expires = self.ranged(raw.expires, "sip.trunk.expires", TRUNK_EXPIRES_S)?;
        let keepalive_span = raw.keepalive_s.as_ref().map(Spanned::span);
        let keepalive = self.ranged(raw.keepalive_s, "sip.trunk.keepalive_s", TRUNK_KEEPALIVE_S)?;
        if let (1..=4, Some(span)) = (keepalive, keepalive_span) {
            return Err(self.invalid(
                span,
                "sip.trunk.keepalive_s",
                format!("{keepalive} is too short: 0 (off) or at least 5"),
            ));
        }
        let mut nameservers = Vec::new();
        for (i, ns) in raw.nameservers.iter().flatten().enumerate() {
            let text = ns.get_ref();
            let addr = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
            match addr {
                Ok(a) if a.port() != 0 => nameservers.push(a),
                _ => {
                    return Err(self.invalid(
                        ns.span(),
                        format!("sip.trunk.nameservers[{i}]"),
                        format!(
                            "{text:?} is not an IP address or IP:port (e.g. \"192.0.2.53\", \"[2001:db8::53]:5353\")"
                        ),
                    ))
                }
            }
        }
        // Caller-ID rules: each checked on its own for a precise error.
        let mut rules: Vec<(String, String)> = Vec::new();
        for (i, r) in raw.caller_id.iter().enumerate() {
            let one = [(r.extensions.get_ref().as_str(), r.number.get_ref().as_str())];
            if let Err(e) = CallerIdRules::parse(&one, None) {
                return Err(self.invalid(
                    r.extensions.span(),
                    format!("sip.trunk.caller_id[{i}]"),
                    e.to_string(),
                ));
            }
            rules.push((r.extensions.get_ref().clone(), r.number.get_ref().clone()));
        }
        let default = raw.caller_id_default.as_ref();
        if let Some(d) = default {
            if let Err(e) = CallerIdRules::parse(&[], Some(d.get_ref())) {
                return Err(self.invalid(d.span(), "sip.trunk.caller_id_default", e.to_string()));
            }
        }
        let pairs: Vec<(&str, &str)> = rules
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let caller_id = CallerIdRules::parse(&pairs, default.map(|d| d.get_ref().as_str()))
            .map_err(|e| {
                self.invalid(servers_span.clone(), "sip.trunk.caller_id", e.to_string())
            })?;
        let mut did = Vec::new();
        for (i, r) in raw.did.iter().enumerate() {
            let one = [(r.number.get_ref().as_str(), r.extension.get_ref().as_str())];
            if let Err(e) = DidRouting::new(DidNormalization::germany(), &one, None) {
                return Err(self.invalid(
                    r.number.span(),
                    format!("sip.trunk.did[{i}]"),
                    e.to_string(),
                ));
            }
            did.push((r.number.get_ref().clone(), r.extension.get_ref().clone()));
        }
        let did_default = match raw.did_default {
            Some(d)
                if d.get_ref().is_empty() || !d.get_ref().bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err(self.invalid(
                    d.span(),
                    "sip.trunk.did_default",
                    format!("{:?} must be an extension number (digits)", d.get_ref()),
                ))
            }
            other => other.map(Spanned::into_inner),
        };
        Ok(SipTrunkConfig {
            servers,
            domain,
            username,
            auth_username,
            password: raw.password.into_inner(),
            register: raw.register.unwrap_or(true),
            expires: u32::try_from(expires).unwrap_or(600),
            keepalive: u64::try_from(keepalive)
                .ok()
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            latch_rtp: raw.latch_rtp.unwrap_or(false),
            nameservers,
            caller_id,
            did,
            did_default,
        })
    }
}
