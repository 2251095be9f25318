//! DNS for the trunk's RFC 3263 server location: the IO edge that answers the
//! [`DnsQuery`]s of [`branchline_sip::trunk::resolve`] (whose sans-IO core orders SRV
//! records by priority and weight, RFC 2782, and fails over target by target).
//!
//! - SRV (`_sip._udp.<host>`, `_sip._tcp.<host>`, `_sips._tcp.<host>`) through
//!   hickory-resolver: with `[sip.trunk] nameservers` when configured, else with the
//!   system's `/etc/resolv.conf`. No records or NXDOMAIN is [`DnsAnswer::NotFound`]
//!   (the core then uses the host's A/AAAA with the default port); a timeout, SERVFAIL,
//!   or no usable resolver configuration is [`DnsAnswer::Failed`] (the same fallback).
//! - A/AAAA: with configured nameservers through them too (an SRV target is a name
//!   only they may know); without, through the system resolver
//!   (`tokio::net::lookup_host`, which also reads `/etc/hosts`).
//!
//! Limits: hickory's cache honours TTLs, but the trunk keeps its resolved targets for
//! its own configured time (see the sans-IO core); no DNSSEC; no NAPTR; queries go over
//! UDP with TCP fallback for truncated answers, as hickory does by default.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use branchline_sip::trunk::resolve::{DnsAnswer, DnsQuery, QueryKind, SrvRecord};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

/// How long one lookup may take in total (each attempt gets a share).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per nameserver.
const ATTEMPTS: usize = 2;

/// The trunk's resolver. Cheap to share behind an `Arc`; lookups run concurrently.
#[derive(Debug, Clone)]
pub struct TrunkDns {
    /// `None` when no nameserver is configured and the system configuration could
    /// not be read: SRV lookups then fail (and the core falls back to A/AAAA).
    resolver: Option<TokioResolver>,
    /// Addresses through `resolver` (nameservers configured) rather than the system.
    addresses_via_resolver: bool,
}

fn options() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = LOOKUP_TIMEOUT / ATTEMPTS as u32;
    opts.attempts = ATTEMPTS;
    // RFC 3263 4.2: both families, IPv4 first (what most carriers answer on).
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts
}

impl TrunkDns {
    /// A resolver that asks `nameservers` (UDP, TCP for truncated answers), or the
    /// system's configuration when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Self {
        if nameservers.is_empty() {
            let resolver = match TokioResolver::builder_tokio() {
                Ok(b) => Some(b.with_options(options()).build()),
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration; trunk SRV lookups disabled");
                    None
                }
            };
            return TrunkDns {
                resolver,
                addresses_via_resolver: false,
            };
        }
        let mut config = ResolverConfig::new();
        for &ns in nameservers {
            config.add_name_server(NameServerConfig::new(ns, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(ns, Protocol::Tcp));
        }
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options())
                .build();
        TrunkDns {
            resolver: Some(resolver),
            addresses_via_resolver: true,
        }
    }

    /// Answers one query of the sans-IO core.
    pub async fn answer(&self, query: &DnsQuery) -> DnsAnswer {
        let answer = match (query.kind, &self.resolver) {
            (QueryKind::Srv, None) => DnsAnswer::Failed,
            (QueryKind::Srv, Some(r)) => match r.srv_lookup(fqdn(&query.name)).await {
                Ok(lookup) => DnsAnswer::Srv(
                    lookup
                        .iter()
                        .map(|srv| SrvRecord {
                            priority: srv.priority(),
                            weight: srv.weight(),
                            port: srv.port(),
                            target: target_name(&srv.target().to_utf8()),
                        })
                        .collect(),
                ),
                Err(e) => failure(&query.name, &e),
            },
            (QueryKind::Address, Some(r)) if self.addresses_via_resolver => {
                match r.lookup_ip(fqdn(&query.name)).await {
                    Ok(lookup) => addresses(lookup.iter()),
                    Err(e) => failure(&query.name, &e),
                }
            }
            (QueryKind::Address, _) => {
                match tokio::net::lookup_host((query.name.as_str(), 0)).await {
                    Ok(addrs) => addresses(addrs.map(|a| a.ip())),
                    Err(e) => {
                        tracing::info!(name = %query.name, error = %e, "trunk DNS lookup failed");
                        DnsAnswer::Failed
                    }
                }
            }
        };
        tracing::debug!(name = %query.name, kind = ?query.kind, ?answer, "trunk DNS answer");
        answer
    }
}

/// The trunk's names are absolute (`sip.carrier.example` is never looked up relative
/// to a search domain of the box).
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// An SRV target without the root dot (`pbx.example.` -> `pbx.example`, the form TLS
/// server names take); `.` (service not offered) stays.
fn target_name(name: &str) -> String {
    match name.strip_suffix('.') {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => name.to_owned(),
    }
}

fn addresses(ips: impl Iterator<Item = IpAddr>) -> DnsAnswer {
    let mut v: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !v.contains(&ip) {
            v.push(ip);
        }
    }
    if v.is_empty() {
        DnsAnswer::NotFound
    } else {
        DnsAnswer::Addresses(v)
    }
}

fn failure(name: &str, e: &ResolveError) -> DnsAnswer {
    // hickory reports an answer without records as "no records found" whatever the
    // response code; only NOERROR (no such records) and NXDOMAIN (no such name) are
    // answers, SERVFAIL or REFUSED are failures.
    let answered = e.proto().is_some_and(|p| {
        matches!(
            p.kind(),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError | ResponseCode::NXDomain,
                ..
            }
        )
    });
    if answered {
        DnsAnswer::NotFound
    } else {
        tracing::info!(%name, error = %e, "trunk DNS lookup failed");
        DnsAnswer::Failed
    }
}

#[cfg(test)]
mod tests;
