//! What a bundle or token says: the versioned payload types (serde) and their
//! validation.
//!
//! - [`Enrollment`] is what both the QR token and the USB bundle carry: the site, the
//!   box serial(s) it is bound to, HQ's URL and CA pin, and the one-time token id with
//!   its expiry. The box presents the whole signed token (or the bundle's enrollment
//!   part re-encoded as a token, see [`crate::token::Token`]) to HQ with its CSR; HQ
//!   checks its own signature, the id (once only), expiry, site and serial. There is
//!   no separate token secret: the signature is the authenticator and the id is the
//!   nonce.
//! - [`SiteConfig`] is the rest of a site's day-one settings, USB bundle only:
//!   network, SIP trunk, FXS port -> extension map, FXO line routing, country (tone
//!   plan) and the break-glass installer credential (an argon2id PHC hash, never a
//!   password).
//!
//! Secrecy: bundles and tokens are signed, not encrypted. Anyone holding the stick or
//! a photo of the QR code can read everything in them, including a trunk password if
//! one is included. So [`Trunk::password`] is optional: leave it out and HQ delivers it
//! at enrollment over mutual TLS; include it only where a stick is handled like a
//! password. A leaked token lets someone enroll one of the bound boxes for this
//! site, once, before the expiry - which is why tokens are serial-bound, short-lived
//! and revocable ([`crate::revocation`]).
//!
//! Every newtype validates on construction and on deserialisation, and
//! [`BundlePayload::validate`] checks what spans fields (unique ports, gateway inside
//! the subnet), so a payload that decodes is a payload the box can apply.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Payload format version written into bundles (`format` field) and tokens (header).
pub const PAYLOAD_FORMAT: u8 = 1;
/// Most serials one bundle or token may be bound to.
pub const MAX_SERIALS: usize = 64;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Error::invalid($what, format!("{s:?}: {}", $rule)))
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A site id as HQ knows it.
    SiteId,
    "site",
    |s| (1..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
    "must be 1 to 32 of A-Z, a-z, 0-9, '-', '_' and '.'"
);

string_newtype!(
    /// A box serial number (same rule as `branchd`'s `site.box_serial`).
    BoxSerial,
    "serial",
    |s| (1..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
    "must be 1 to 32 of A-Z, a-z, 0-9, '-' and '_'"
);

string_newtype!(
    /// An extension or queue number (same rule as `branchd`: 2 to 6 digits).
    Extension,
    "extension",
    |s| (2..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()),
    "must be 2 to 6 digits"
);

string_newtype!(
    /// A country code for the tone plan: two ASCII capital letters. Which countries
    /// the box has tone plans for is the daemon's business; it refuses others.
    Country,
    "country",
    |s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()),
    "must be two capital letters (ISO 3166 alpha-2, e.g. FR)"
);

string_newtype!(
    /// HQ's base URL: `https://` then a host (DNS name or IP, IPv6 in brackets),
    /// an optional port and path; no user info, query or fragment; at most 128 bytes.
    HqUrl,
    "hq_url",
    valid_hq_url,
    "must be https://host[:port][/path], at most 128 bytes, no user, query or fragment"
);

fn valid_hq_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("https://") else {
        return false;
    };
    if s.len() > 128 {
        return false;
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
    {
        return false;
    }
    let (host_ok, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, port)) => (addr.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        }
    } else {
        let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        (valid_host_name(host), port)
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0);
    host_ok && port_ok
}

/// A DNS name or dotted IPv4 address: labels of letters, digits and inner hyphens.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 100
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl HqUrl {
    /// The URL without its `https://` (what a token stores).
    pub fn without_scheme(&self) -> &str {
        &self.0["https://".len()..]
    }
}

/// Serialises fixed-size bytes as hex in JSON/TOML and as raw bytes in postcard.
fn ser_bytes<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    use serde::de::Error as _;
    if d.is_human_readable() {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map_err(|_| D::Error::custom(format!("{s:?} is not hex")))
    } else {
        Ok(serde_bytes_vec(d)?)
    }
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(
            self,
            v: Vec<u8>,
        ) -> std::result::Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    d.deserialize_bytes(V)
}

/// Length of a [`TokenId`].
pub const TOKEN_ID_LEN: usize = 8;

/// The one-time enrollment token's id: 8 random bytes (hex in text). It is the nonce
/// the box and HQ remember to refuse a replay, and what a revocation list names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; TOKEN_ID_LEN]);

impl TokenId {
    /// A fresh id from the OS random source.
    pub fn random() -> Result<TokenId> {
        let mut id = [0u8; TOKEN_ID_LEN];
        getrandom::fill(&mut id).map_err(|e| Error::Random(e.to_string()))?;
        Ok(TokenId(id))
    }
}

impl FromStr for TokenId {
    type Err = Error;
    fn from_str(s: &str) -> Result<TokenId> {
        hex::decode(s.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .map(TokenId)
            .ok_or_else(|| Error::invalid("token_id", format!("{s:?} is not 16 hex digits")))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

impl Serialize for TokenId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ser_bytes(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = de_bytes(d)?;
        v.try_into()
            .map(TokenId)
            .map_err(|_| D::Error::custom("token id must be 8 bytes"))
    }
}

/// Pin of HQ's CA: sha256 of the CA certificate's SubjectPublicKeyInfo (DER). Bundles
/// carry all 32 bytes; QR tokens carry the first 16 ([`CaPin::SHORT_LEN`]) to fit a
/// small QR code - finding another key whose SPKI hash matches 128 given bits is a
/// 2^128 second-preimage search, so the short pin still pins.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPin(Vec<u8>);

impl CaPin {
    /// Full pin length.
    pub const LEN: usize = 32;
    /// Length of the pin a QR token carries.
    pub const SHORT_LEN: usize = 16;

    /// A pin of 32 (full) or 16 (short) bytes.
    pub fn new(bytes: &[u8]) -> Result<CaPin> {
        if bytes.len() == Self::LEN || bytes.len() == Self::SHORT_LEN {
            Ok(CaPin(bytes.to_vec()))
        } else {
            Err(Error::invalid(
                "ca_pin",
                format!(
                    "{} bytes; must be the 32-byte sha256 of HQ's CA SubjectPublicKeyInfo (64 hex digits)",
                    bytes.len()
                ),
            ))
        }
    }

    /// The pin's bytes (32 or 16).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The short (16-byte) form.
    pub fn short(&self) -> CaPin {
        CaPin(self.0[..Self::SHORT_LEN].to_vec())
    }

    /// Whether `spki_sha256` (the sha256 of a presented CA's SPKI) matches, in
    /// constant time; a short pin compares its 16 bytes.
    pub fn matches(&self, spki_sha256: &[u8; 32]) -> bool {
        spki_sha256[..self.0.len()].ct_eq(&self.0).into()
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

impl Serialize for CaPin {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ser_bytes(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for CaPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        CaPin::new(&de_bytes(d)?).map_err(D::Error::custom)
    }
}

/// The enrollment data: in the QR token and in the USB bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// One-time token id.
    pub token_id: TokenId,
    /// Site the box joins.
    pub site: SiteId,
    /// Boxes allowed to use it (1 to [`MAX_SERIALS`]).
    pub serials: Vec<BoxSerial>,
    /// HQ's base URL.
    pub hq_url: HqUrl,
    /// HQ's CA pin.
    pub ca_pin: CaPin,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
}

impl Enrollment {
    /// Checks what spans fields: 1 to [`MAX_SERIALS`] distinct serials.
    pub fn validate(&self) -> Result<()> {
        if self.serials.is_empty() || self.serials.len() > MAX_SERIALS {
            return Err(Error::invalid(
                "serials",
                format!(
                    "{} serial(s); must name 1 to {MAX_SERIALS} boxes",
                    self.serials.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, s) in self.serials.iter().enumerate() {
            if !seen.insert(s) {
                return Err(Error::invalid(
                    format!("serials[{i}]"),
                    format!("{s} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `serial` may use this enrollment.
    pub fn allows(&self, serial: &BoxSerial) -> bool {
        self.serials.contains(serial)
    }
}

/// An address with its prefix length, `192.0.2.10/24` or `2001:db8::10/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpCidr {
    /// Whether `ip` is in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpCidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<IpCidr> {
        let bad = || {
            Error::invalid(
                "address",
                format!("{s:?} is not an address/prefix like 192.0.2.10/24"),
            )
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > max {
            return Err(bad());
        }
        Ok(IpCidr { addr, prefix })
    }
}

impl TryFrom<String> for IpCidr {
    type Error = Error;
    fn try_from(s: String) -> Result<IpCidr> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        format!("{}/{}", c.addr, c.prefix)
    }
}

/// WAN settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    /// Address, gateway and DNS from DHCP.
    Dhcp,
    /// Fixed settings.
    Static {
        /// The box's address and prefix.
        address: IpCidr,
        /// Default gateway (inside `address`'s subnet).
        gateway: IpAddr,
        /// DNS servers, 1 to 4.
        dns: Vec<IpAddr>,
    },
}

/// SIP transport towards the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (default).
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

/// A password carried in the (signed, not encrypted) bundle. Its `Debug` does not
/// print it; [`Secret::expose`] does.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} chars)", self.0.chars().count())
    }
}

/// The SIP trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// Registrar/proxy servers in order of preference: `host` or `host:port`.
    pub servers: Vec<String>,
    /// Transport.
    #[serde(default)]
    pub transport: Transport,
    /// SIP domain.
    pub domain: String,
    /// Authentication user.
    pub username: String,
    /// Password; absent: HQ delivers it at enrollment over mutual TLS (see the module
    /// doc on secrecy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// One FXS port and the extension that rings it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxsPort {
    /// Port number, from 1.
    pub port: u8,
    /// Extension.
    pub extension: Extension,
    /// Label (e.g. "reception"), at most 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One FXO line: where its incoming calls go and whether outside calls may use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxoLine {
    /// Port number, from 1.
    pub port: u8,
    /// Extension or queue that incoming calls on the line ring.
    pub inbound: Extension,
    /// Whether outgoing outside calls may use the line (as fallback after the trunk).
    #[serde(default = "yes")]
    pub outbound: bool,
}

fn yes() -> bool {
    true
}

/// The break-glass installer account, valid until the box is enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallerCredential {
    /// Login name.
    pub username: String,
    /// argon2id PHC string (`$argon2id$v=19$m=...`); `branch-prov hash-password`
    /// makes one.
    pub password_hash: String,
}

impl InstallerCredential {
    /// Checks the username and that the hash is an argon2id PHC string.
    pub fn validate(&self) -> Result<()> {
        check_text("installer.username", &self.username, 32)?;
        let hash = argon2::PasswordHash::new(&self.password_hash).map_err(|e| {
            Error::invalid(
                "installer.password_hash",
                format!("not a PHC hash string ({e}); make one with `branch-prov hash-password`"),
            )
        })?;
        if hash.algorithm.as_str() != "argon2id" || hash.hash.is_none() {
            return Err(Error::invalid(
                "installer.password_hash",
                format!(
                    "algorithm {}; must be an argon2id hash, never a plain password",
                    hash.algorithm
                ),
            ));
        }
        Ok(())
    }
}

/// The site's day-one settings (USB bundle only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Tone plan and caller-ID country.
    pub country: Country,
    /// WAN settings.
    pub network: Network,
    /// SIP trunk, if the site has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Trunk>,
    /// FXS ports.
    #[serde(default)]
    pub fxs: Vec<FxsPort>,
    /// FXO lines.
    #[serde(default)]
    pub fxo: Vec<FxoLine>,
    /// Break-glass installer account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<InstallerCredential>,
}

/// What a USB bundle carries (JSON, signed). The enrollment data is the signed QR
/// token itself, so the box has one enrollment path (and one thing to present to HQ)
/// whichever way it was provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// [`PAYLOAD_FORMAT`].
    pub format: u8,
    /// When HQ made it, Unix seconds.
    pub issued_at: u64,
    /// The enrollment token's text ([`crate::token`]), signed on its own.
    pub token: String,
    /// Day-one settings.
    pub config: SiteConfig,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{value:?}: must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_host_port(field: &str, value: &str) -> Result<()> {
    let bad = || Error::invalid(field, format!("{value:?} is not host or host:port"));
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (value, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = host.parse::<IpAddr>().is_ok() || valid_host_name(host);
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

impl SiteConfig {
    /// Checks what the types alone do not: ports from 1 and unique, extensions
    /// unique, gateway inside the subnet, 1 to 4 DNS servers, trunk fields.
    pub fn validate(&self) -> Result<()> {
        if let Network::Static {
            address,
            gateway,
            dns,
        } = &self.network
        {
            if !address.contains(*gateway) || *gateway == address.addr {
                return Err(Error::invalid(
                    "network.gateway",
                    format!(
                        "{gateway} is not another address in {}",
                        String::from(*address)
                    ),
                ));
            }
            if dns.is_empty() || dns.len() > 4 {
                return Err(Error::invalid(
                    "network.dns",
                    format!("{} server(s); a static setup needs 1 to 4", dns.len()),
                ));
            }
        }
        if let Some(trunk) = &self.trunk {
            if trunk.servers.is_empty() || trunk.servers.len() > 4 {
                return Err(Error::invalid(
                    "trunk.servers",
                    format!("{} server(s); must be 1 to 4", trunk.servers.len()),
                ));
            }
            for (i, s) in trunk.servers.iter().enumerate() {
                check_host_port(&format!("trunk.servers[{i}]"), s)?;
            }
            check_host_port("trunk.domain", &trunk.domain)?;
            check_text("trunk.username", &trunk.username, 64)?;
            if let Some(p) = &trunk.password {
                check_text("trunk.password", p.expose(), 128)?;
            }
        }
        let mut ports = HashSet::new();
        let mut extensions = HashSet::new();
        for (i, p) in self.fxs.iter().enumerate() {
            if p.port == 0 || !ports.insert(p.port) {
                return Err(Error::invalid(
                    format!("fxs[{i}].port"),
                    format!("port {} is 0 or listed twice", p.port),
                ));
            }
            if !extensions.insert(&p.extension) {
                return Err(Error::invalid(
                    format!("fxs[{i}].extension"),
                    format!("extension {} is on two ports", p.extension),
                ));
            }
            if let Some(n) = &p.name {
                check_text(&format!("fxs[{i}].name"), n, 64)?;
            }
        }
        let mut lines = HashSet::new();
        for (i, l) in self.fxo.iter().enumerate() {
            if l.port == 0 || !lines.insert(l.port) {
                return Err(Error::invalid(
                    format!("fxo[{i}].port"),
                    format!("port {} is 0 or listed twice", l.port),
                ));
            }
        }
        if let Some(installer) = &self.installer {
            installer.validate()?;
        }
        Ok(())
    }
}

impl BundlePayload {
    /// Checks the format and the config (the token is checked when it is decoded).
    pub fn validate(&self) -> Result<()> {
        if self.format != PAYLOAD_FORMAT {
            return Err(Error::invalid(
                "format",
                format!("{}; this build reads format {PAYLOAD_FORMAT}", self.format),
            ));
        }
        self.config.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hq_urls() {
        for ok in [
            "https://hq.example.com",
            "https://hq.example.com:8443",
            "https://hq.example.com/branchline",
            "https://192.0.2.1:8443/x",
            "https://[2001:db8::1]:8443",
            "https://hq",
        ] {
            assert!(ok.parse::<HqUrl>().is_ok(), "{ok} refused");
        }
        for bad in [
            "http://hq.example.com",
            "https://",
            "https://user@hq",
            "https://hq:0",
            "https://hq:99999",
            "https://hq/?q=1",
            "https://hq#x",
            "https://-hq",
            "https://hq..x",
            "https://[zz]:1",
            " https://hq",
            "https://hq:",
        ] {
            assert!(bad.parse::<HqUrl>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cidr_contains() {
        let c: IpCidr = "192.0.2.10/24".parse().unwrap();
        assert!(c.contains("192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        let c: IpCidr = "2001:db8::10/64".parse().unwrap();
        assert!(c.contains("2001:db8::1".parse().unwrap()));
        assert!("192.0.2.1/33".parse::<IpCidr>().is_err());
        assert!("192.0.2.1".parse::<IpCidr>().is_err());
    }

    #[test]
    fn short_pin_matches_prefix_only() {
        let full = [9u8; 32];
        let pin = CaPin::new(&full).unwrap();
        assert!(pin.matches(&full));
        assert!(pin.short().matches(&full));
        let mut other = full;
        other[31] = 0;
        assert!(!pin.matches(&other));
        assert!(pin.short().matches(&other));
        other[0] = 0;
        assert!(!pin.short().matches(&other));
        assert!(CaPin::new(&[0; 20]).is_err());
    }

    #[test]
    fn installer_hash_must_be_argon2id() {
        let mut c = InstallerCredential {
            username: "installer".into(),
            password_hash: "hunter2".into(),
        };
        assert!(c.validate().is_err());
        c.password_hash = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA".into();
        assert!(c.validate().is_err());
        c.password_hash = "$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA".into();
        c.validate().unwrap();
    }
}
