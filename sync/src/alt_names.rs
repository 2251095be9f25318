//! The subjectAltNames (SANs) of a device certificate: which addresses and names a box
//! may have its certificate made valid for, so that its web page validates at
//! `https://<lan-ip>/` once HQ's CA is trusted.
//!
//! The box asks for them in its CSR (`branchd`'s `enroll` and `renew` modules, with
//! [`lan_ip`] and [`own_names`] choosing what to ask for); HQ checks them with
//! [`check`] and copies them into the certificate (`hq::pki::Ca::sign_box_csr`), or
//! refuses the whole CSR with the name that is not acceptable. Both sides use this one
//! policy, so a box never asks for a name HQ refuses.
//!
//! # The policy
//!
//! Device certificates carry the serverAuth usage and chain to the CA every box and
//! HQ's clients trust, so a SAN is a name under which a box could pass for a server.
//! A box may therefore only get names that no server outside a LAN can have, and
//! that are its own:
//!
//! - IP addresses that are private or link-local ([`lan_ip`]: IPv4 10/8,
//!   172.16/12, 192.168/16, 169.254/16; IPv6 fc00::/7 and fe80::/10). Public,
//!   loopback, shared (100.64/10), multicast, documentation and unspecified
//!   addresses are refused.
//! - DNS names made of its own serial ([`own_names`]): `<serial>` and
//!   `<serial>.local` (mDNS), lowercase, when the serial is a valid DNS label and not
//!   `localhost`. Any other name is foreign.
//! - never one of HQ's own names or addresses (the SANs of HQ's server certificate,
//!   wildcards included), even a private one: a box must never be able to pass for
//!   HQ to another box.
//! - at most [`MAX_ALT_NAMES`] of them.
//!
//! # Limits
//!
//! A private address is not unique: two branches that both number their LAN
//! 192.168.1.0/24 may each hold a certificate valid for 192.168.1.1. A browser that
//! trusts HQ's CA therefore tells a technician "a Branchline box of this HQ", not
//! "this very box"; the subject CN (the serial) names the box.

use std::fmt;
use std::net::IpAddr;

/// Most SANs a device certificate may carry.
pub const MAX_ALT_NAMES: usize = 8;

/// One subjectAltName: an IP address or a DNS name (compared without case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AltName {
    /// An iPAddress SAN.
    Ip(IpAddr),
    /// A dNSName SAN.
    Dns(String),
}

impl fmt::Display for AltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltName::Ip(ip) => write!(f, "IP {ip}"),
            AltName::Dns(name) => write!(f, "DNS {name}"),
        }
    }
}

/// Why a set of SANs is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AltNameRefusal {
    /// An address that is not private or link-local.
    #[error("subjectAltName IP {0} is not a private or link-local address")]
    NotLanIp(IpAddr),
    /// A DNS name that is not the box's own.
    #[error("subjectAltName DNS {name:?} is not a name of box {box_id:?} (only {allowed:?})")]
    ForeignName {
        /// The name asked for.
        name: String,
        /// The box.
        box_id: String,
        /// The names the box may have.
        allowed: Vec<String>,
    },
    /// One of HQ's own names or addresses.
    #[error("subjectAltName {0} is HQ's own")]
    HqName(AltName),
    /// Too many.
    #[error("{0} subjectAltNames; at most {MAX_ALT_NAMES}")]
    TooMany(usize),
}

/// Whether a box may have its certificate valid for `ip`: a private or link-local
/// address (see the module doc).
pub fn lan_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// The DNS names box `box_id` may have: `<serial>` and `<serial>.local`, lowercase;
/// none when the serial is not a DNS label (an `_`, a leading or trailing `-`) or is
/// `localhost`.
pub fn own_names(box_id: &str) -> Vec<String> {
    let label = box_id.to_ascii_lowercase();
    let is_label = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if !is_label || label == "localhost" {
        return Vec::new();
    }
    let local = format!("{label}.local");
    vec![label, local]
}

/// Whether `name` is covered by HQ's `hq` name (equal, or `hq` is `*.rest` and `name`
/// is one label more than `rest`).
fn hq_covers(hq: &AltName, name: &AltName) -> bool {
    match (hq, name) {
        (AltName::Ip(a), AltName::Ip(b)) => a == b,
        (AltName::Dns(h), AltName::Dns(n)) => {
            let (h, n) = (h.to_ascii_lowercase(), n.to_ascii_lowercase());
            h == n
                || h.strip_prefix("*.").is_some_and(|rest| {
                    n.split_once('.')
                        .is_some_and(|(first, tail)| !first.is_empty() && tail == rest)
                })
        }
        _ => false,
    }
}

/// Checks the SANs box `box_id` asks for against the policy of the module doc;
/// `hq_names` are the SANs of HQ's server certificate. Pure.
pub fn check(box_id: &str, names: &[AltName], hq_names: &[AltName]) -> Result<(), AltNameRefusal> {
    if names.len() > MAX_ALT_NAMES {
        return Err(AltNameRefusal::TooMany(names.len()));
    }
    let allowed = own_names(box_id);
    for name in names {
        match name {
            AltName::Ip(ip) if !lan_ip(ip) => return Err(AltNameRefusal::NotLanIp(*ip)),
            AltName::Dns(dns) if !allowed.iter().any(|a| a.eq_ignore_ascii_case(dns)) => {
                return Err(AltNameRefusal::ForeignName {
                    name: dns.clone(),
                    box_id: box_id.to_owned(),
                    allowed,
                })
            }
            _ => {}
        }
        if hq_names.iter().any(|hq| hq_covers(hq, name)) {
            return Err(AltNameRefusal::HqName(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> AltName {
        AltName::Ip(s.parse().unwrap())
    }

    fn dns(s: &str) -> AltName {
        AltName::Dns(s.to_owned())
    }

    #[test]
    fn lan_addresses_are_private_or_link_local_only() {
        for good in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.7.7",
            "fd00::2",
            "fe80::1",
        ] {
            assert!(lan_ip(&good.parse().unwrap()), "{good}");
        }
        for bad in [
            "8.8.8.8",
            "172.32.0.1",
            "127.0.0.1",
            "100.64.0.1",
            "192.0.2.2",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(!lan_ip(&bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn own_names_come_from_a_serial_that_is_a_dns_label() {
        assert_eq!(own_names("BOX-1"), ["box-1", "box-1.local"]);
        assert!(own_names("BOX_1").is_empty());
        assert!(own_names("-BOX").is_empty());
        assert!(own_names("BOX-").is_empty());
        assert!(own_names("LocalHost").is_empty());
    }

    #[test]
    fn a_box_gets_its_lan_addresses_and_own_names() {
        let names = [
            ip("192.168.1.1"),
            ip("fe80::1"),
            dns("box-1"),
            dns("box-1.local"),
        ];
        assert_eq!(check("BOX-1", &names, &[]), Ok(()));
        assert_eq!(check("BOX-1", &[], &[]), Ok(()));
        assert_eq!(check("BOX-1", &[dns("Box-1.LOCAL")], &[]), Ok(()));
    }

    #[test]
    fn public_addresses_foreign_names_and_hq_names_are_refused() {
        assert_eq!(
            check("BOX-1", &[ip("192.168.1.1"), ip("203.0.113.9")], &[]),
            Err(AltNameRefusal::NotLanIp("203.0.113.9".parse().unwrap()))
        );
        assert_eq!(
            check("BOX-1", &[ip("127.0.0.1")], &[]),
            Err(AltNameRefusal::NotLanIp("127.0.0.1".parse().unwrap()))
        );
        for foreign in ["hq.example.com", "box-2", "box-1.example.com", "localhost"] {
            let e = check("BOX-1", &[dns(foreign)], &[]).unwrap_err();
            assert!(
                matches!(&e, AltNameRefusal::ForeignName { name, .. } if name == foreign),
                "{foreign}: {e}"
            );
            assert!(e.to_string().contains(foreign), "{e}");
        }
        // HQ on the same private network, or a box whose serial is HQ's host name.
        let hq = [ip("10.0.0.5"), dns("hq"), dns("*.local")];
        assert_eq!(
            check("BOX-1", &[ip("10.0.0.4"), ip("10.0.0.5")], &hq),
            Err(AltNameRefusal::HqName(ip("10.0.0.5")))
        );
        assert_eq!(
            check("HQ", &[dns("hq")], &hq),
            Err(AltNameRefusal::HqName(dns("hq")))
        );
        assert_eq!(
            check("BOX-1", &[dns("box-1.local")], &hq),
            Err(AltNameRefusal::HqName(dns("box-1.local")))
        );
        assert_eq!(check("BOX-1", &[dns("box-1")], &hq), Ok(()));
        let many = vec![ip("10.0.0.1"); MAX_ALT_NAMES + 1];
        assert_eq!(
            check("BOX-1", &many, &[]),
            Err(AltNameRefusal::TooMany(MAX_ALT_NAMES + 1))
        );
    }
}
