//! The box's side of the SIP trunk (HQ or a carrier), sans-IO (issue 3, item 5).
//!
//! # Modules
//!
//! - [`registration`]: [`TrunkRegistration`], the REGISTER state machine: digest
//!   answer, refresh, failover across servers with seeded backoff, probing the
//!   primary, 423 handling, un-REGISTER on shutdown, and the trunk's
//!   [`Reachability`] that call routing reads (outside calls go to FXO while the trunk
//!   is unreachable).
//! - [`resolve`]: RFC 3263 server location as queries and answers (SRV ordered per
//!   RFC 2782 with an injected seed, then A/AAAA); the daemon does the DNS.
//! - [`identity`]: outbound caller-ID rules (extension pattern -> presented number),
//!   anonymity (`Privacy: id`) and `P-Asserted-Identity` (RFC 3325) for outbound
//!   INVITEs.
//! - [`did`]: inbound DID routing: called number -> extension or queue number, with
//!   configurable prefix normalisation and a default.
//! - `rng` (private): the seeded SplitMix64 generator behind jitter, SRV choice,
//!   Call-IDs, tags and branches.
//!
//! # How the daemon drives [`TrunkRegistration`]
//!
//! ```text
//! new(config, seed) -> start(now)
//! loop:
//!   poll_dns_query()  -> resolve -> handle_dns_answer(now, id, answer)
//!   poll_transmit()   -> TransactionLayer::send_request(request, target)
//!   transaction response   -> handle_response(now, &response)
//!   transaction timeout / transport error -> handle_failure(now, branch, failure)
//!   timeout() reached -> handle_timeout(now)
//!   poll_event()      -> log, web page, routing (reachability)
//! shutdown(now) -> ... until poll_event() yields TrunkEvent::Unregistered
//! ```
//!
//! # Limits
//!
//! No NAPTR (the transport is configured per server), no RFC 5626 outbound flows,
//! no IP-authenticated trunks without registration, no live reconfiguration (build a
//! new [`TrunkRegistration`] and shut the old one down).

pub mod did;
pub mod identity;
pub mod registration;
pub mod resolve;
pub(crate) mod rng;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rsip::Transport;

pub use registration::{
    FailureReason, Reachability, ServerHealth, TransportFailure, TrunkConfig, TrunkConfigError,
    TrunkEvent, TrunkRegistration, TrunkState, TrunkTransmit,
};
pub use resolve::{DnsAnswer, DnsQuery, QueryKind, SrvRecord, Target};

/// One trunk server: `host[:port]` and the transport to reach it with. Parse
/// `host[:port][;transport=udp|tcp|tls]` with [`str::parse`]; IPv6 literals go in
/// brackets (`[2001:db8::1]:5060`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkServer {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Explicit port (no SRV lookup then).
    pub port: Option<u16>,
    /// Transport.
    pub transport: Transport,
}

impl TrunkServer {
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for TrunkServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(
            f,
            ";transport={}",
            self.transport.to_string().to_ascii_lowercase()
        )
    }
}

/// Why a trunk server string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerParseError {
    /// No host.
    #[error("trunk server {0:?}: host is empty")]
    EmptyHost(String),
    /// The host has characters no host name has.
    #[error("trunk server {0:?}: invalid host")]
    InvalidHost(String),
    /// The port is not a number in 1..=65535.
    #[error("trunk server {0:?}: invalid port")]
    InvalidPort(String),
    /// The transport is not udp, tcp or tls.
    #[error("trunk server {0:?}: transport must be udp, tcp or tls")]
    InvalidTransport(String),
}

impl FromStr for TrunkServer {
    type Err = ServerParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (hostport, params) = text.split_once(';').unwrap_or((text, ""));
        let mut transport = Transport::Udp;
        for param in params.split(';').filter(|p| !p.trim().is_empty()) {
            match param.trim().split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("transport") => {
                    transport = match value.trim().to_ascii_lowercase().as_str() {
                        "udp" => Transport::Udp,
                        "tcp" => Transport::Tcp,
                        "tls" => Transport::Tls,
                        _ => return Err(ServerParseError::InvalidTransport(s.to_owned())),
                    };
                }
                _ => return Err(ServerParseError::InvalidTransport(s.to_owned())),
            }
        }
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| ServerParseError::InvalidHost(s.to_owned()))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(ServerParseError::InvalidHost(s.to_owned()));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| ServerParseError::InvalidPort(s.to_owned()))?,
                ),
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(ServerParseError::EmptyHost(s.to_owned()));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        {
            return Err(ServerParseError::InvalidHost(s.to_owned()));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(ServerParseError::InvalidPort(s.to_owned())),
                Ok(n) => Some(n),
            },
        };
        Ok(TrunkServer {
            host: host.to_ascii_lowercase(),
            port,
            transport,
        })
    }
}

#[cfg(test)]
mod tests;
