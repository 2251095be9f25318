//! Enrollment with HQ: a provisioned box trades its one-time token and a CSR for its
//! device certificate, then syncs over mutual TLS with it.
//!
//! # When
//!
//! `branchd` runs [`EnrollTask`] instead of the sync agent when `[hq]` and
//! `[provisioning]` are set and either its `client_cert` file does not exist yet or
//! an applied bundle waits for its enrollment ([`pending_at`]: re-enrollment, below). The task waits
//! until a bundle (or a QR token from the web page, [`crate::provision::local`]) has
//! been applied (`provisioned_settings` holds `enrollment_token`, `hq_url`, `ca_pin`;
//! it looks every [`PENDING_POLL`], one indexed read: the USB
//! watcher runs in its own thread and has no channel to this task), enrolls, and
//! hands the `[hq]` config to the sync agent, which then starts as on an enrolled box.
//!
//! # Steps
//!
//! 1. The key: ECDSA P-256 (rcgen), PKCS#8 PEM written to `[hq] client_key` with mode
//!    0600 (temp file, fsync, rename, fsync of the directory) *before* the request,
//!    and reused by a retry: HQ answers the same token with the same key again with a
//!    fresh certificate, so a box that lost HQ's answer is not locked out.
//! 2. The CSR (PKCS#10, self-signed by the key, subject CN = the box serial).
//! 3. `POST` [`ENROLL_PATH`] to the provisioned HQ URL with the token, over TLS
//!    *without* a client certificate, trusting only a CA whose SubjectPublicKeyInfo
//!    sha256 matches the token's CA pin ([`pinned_tls_config`]: HQ sends its CA after
//!    its server certificate; the pinned CA then verifies the chain and the host name
//!    with webpki).
//! 4. The answer is checked ([`check_answer`]: the certificate is for our key and our
//!    serial, the CA matches the pin), then `[hq] ca_cert` and `[hq] client_cert` are
//!    written atomically (temp, fsync, rename, fsync of the directory); the
//!    certificate last, because its presence is what "enrolled" means at the next
//!    start.
//! 5. The box is marked enrolled ([`crate::accounts::Accounts::set_enrolled`], which
//!    retires the break-glass installer account, audited) and the outcome is stored in
//!    `provisioned_settings` as the `enrollment` field of the applied bundle (so a new
//!    bundle starts over).
//!
//! # Re-enrollment
//!
//! A new bundle (USB or QR) on a box that already has a certificate, after a
//! factory reset or because HQ revoked the box, is enrolled the same way with a new
//! key: the key is staged as `<client_key>.new` and the certificate committed with
//! [`crate::renew::commit`] (staged, then both renamed into place; a cut in between
//! is repaired by [`crate::renew::recover`] at the next start), so the identity in
//! use stays whole until HQ answered. At HQ a fresh token re-enrolls the box: its
//! certificate is replaced (the old one refused from then on) and a revocation is
//! cleared. That is the only way a revocation is cleared: the token the box used
//! before is refused for a revoked box (`revoked`), so a stolen box cannot replay it.
//!
//! # Failures
//!
//! HQ unreachable, TLS failures (including a CA that does not match the pin) and 5xx
//! answers are retried with seeded full-jitter backoff (1 s doubling to 5 min,
//! `branchline_sync::agent::Backoff`); the last error is shown in the sync status. A
//! refusal (4xx with an `EnrollError`: bad, expired, revoked or used token, wrong
//! site, bad CSR) is not retried: it is stored as `enrollment` = `refused` with HQ's
//! code and message (the provisioning state) and shown in the sync status, and the
//! task waits for a new bundle.
//!
//! # Limits
//!
//! The sync agent uses the provisioned HQ URL and the serial as box id (overriding
//! `[hq] url` and `box_id`), but the paths of the files come from `[hq]`, so a box
//! needs an `[hq]` section to enroll. Certificate renewal before expiry is
//! [`crate::renew`]; updates through HQ (`[update] from_hq`) start with the next
//! start of `branchd` after enrollment. Errors are this module's [`EnrollError`] rather than the crate's
//! `Error`: they end in the sync status and the provisioning state, never in `main`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchline_provisioning::payload::{BoxSerial, CaPin};
use branchline_sync::agent::{Backoff, BackoffConfig};
use branchline_sync::alt_names::{self, AltName};
use branchline_sync::wire::{
    EnrollError as EnrollRefusal, EnrollRequest, EnrollResponse, ENROLL_PATH, PROTOCOL_VERSION,
};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use rusqlite::{Connection, OptionalExtension};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::accounts::{Accounts, AuthSettings};
use crate::audit::Actor;
use crate::config::HqConfig;
use crate::store::StoreWriter;
use crate::sync::status::SyncHandle;

/// How often the task looks for an applied bundle.
pub const PENDING_POLL: Duration = Duration::from_secs(2);
/// Timeout of one enrollment request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong while enrolling (shown in the sync status and logs).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The store could not be read or written.
    #[error("enrollment: store {path}: {source}")]
    Store {
        /// The database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A provisioned setting does not decode.
    #[error("enrollment: provisioned {field} is not valid: {reason}")]
    Provisioned {
        /// The `provisioned_settings` field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A key or certificate file could not be read or written.
    #[error("enrollment: {op} {path}: {source}")]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but holds no usable key.
    #[error("enrollment: {path}: not a usable private key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key pair or CSR could not be made.
    #[error("enrollment: making the {what}: {source}")]
    Crypto {
        /// `"key pair"`, `"CSR"`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The TLS client could not be built.
    #[error("enrollment: TLS client for {url}: {reason}")]
    Client {
        /// HQ's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// HQ's answer does not hold what it must.
    #[error("enrollment: HQ's answer refused: {reason}")]
    Answer {
        /// Why.
        reason: String,
    },
}

type Result<T, E = EnrollError> = std::result::Result<T, E>;

/// What a provisioned bundle says about enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The signed token text.
    pub token: String,
    /// HQ's base URL.
    pub hq_url: String,
    /// HQ's CA pin (16 or 32 bytes).
    pub ca_pin: CaPin,
    /// The site.
    pub site: String,
}

/// The outcome stored as the `enrollment` field of `provisioned_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Enrolled: HQ issued the certificate.
    Enrolled {
        /// The box id at HQ.
        box_id: String,
        /// The site.
        site: String,
        /// When, ms since the Unix epoch.
        at_ms: i64,
    },
    /// HQ refused the token or CSR; not retried.
    Refused {
        /// HQ's code (`token_used`, `expired`, ...).
        code: String,
        /// HQ's message.
        message: String,
        /// When, ms since the Unix epoch.
        at_ms: i64,
    },
}

fn store_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> EnrollError {
    let path = path.to_owned();
    move |source| EnrollError::Store { path, source }
}

/// Reads what the applied bundle says, if a bundle was applied and its enrollment has
/// no outcome yet (`None` otherwise).
pub fn pending(conn: &Connection, path: &Path) -> Result<Option<Pending>> {
    let field = |name: &str| -> Result<Option<String>> {
        conn.query_row(
            "SELECT value FROM provisioned_settings WHERE field = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(store_err(path))
    };
    if field("enrollment")?.is_some() {
        return Ok(None);
    }
    let (Some(token), Some(url), Some(pin), Some(site)) = (
        field("enrollment_token")?,
        field("hq_url")?,
        field("ca_pin")?,
        field("site")?,
    ) else {
        return Ok(None);
    };
    let decode = |field: &'static str, json: &str| -> Result<String> {
        serde_json::from_str::<String>(json).map_err(|e| EnrollError::Provisioned {
            field,
            reason: e.to_string(),
        })
    };
    let pin_hex = decode("ca_pin", &pin)?;
    let ca_pin = hex::decode(&pin_hex)
        .ok()
        .and_then(|b| CaPin::new(&b).ok())
        .ok_or_else(|| EnrollError::Provisioned {
            field: "ca_pin",
            reason: format!("{pin_hex:?} is not a 16- or 32-byte hex pin"),
        })?;
    Ok(Some(Pending {
        token: decode("enrollment_token", &token)?,
        hq_url: decode("hq_url", &url)?,
        ca_pin,
        site: decode("site", &site)?,
    }))
}

/// Stores `state` as the outcome of the bundle that carried `token`. Returns `false`
/// (and writes nothing) when another bundle was applied meanwhile.
pub fn record_state(
    conn: &Connection,
    path: &Path,
    token: &str,
    state: &EnrollmentState,
) -> Result<bool> {
    let value = serde_json::to_string(state).map_err(|e| EnrollError::Provisioned {
        field: "enrollment",
        reason: e.to_string(),
    })?;
    let token_json = serde_json::to_string(token).map_err(|e| EnrollError::Provisioned {
        field: "enrollment_token",
        reason: e.to_string(),
    })?;
    let n = conn
        .execute(
            "INSERT OR REPLACE INTO provisioned_settings (field, value, bundle_sha256)
             SELECT 'enrollment', ?1, bundle_sha256 FROM provisioned_settings
             WHERE field = 'enrollment_token' AND value = ?2",
            [&value, &token_json],
        )
        .map_err(store_err(path))?;
    Ok(n == 1)
}

/// The stored outcome, if any.
pub fn state(conn: &Connection, path: &Path) -> Result<Option<EnrollmentState>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT value FROM provisioned_settings WHERE field = 'enrollment'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(store_err(path))?;
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| EnrollError::Provisioned {
            field: "enrollment",
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// Whether the box still needs its device certificate (`[hq] client_cert` missing).
pub fn needed(hq: &HqConfig) -> bool {
    !hq.client_cert.exists()
}

/// Whether an applied bundle waits for its enrollment (see [`pending`]), read from
/// the database at `db_path`: on a box that has a certificate this is a
/// re-enrollment.
pub fn pending_at(db_path: &Path) -> Result<bool> {
    let conn = Connection::open(db_path).map_err(store_err(db_path))?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)
        .map_err(store_err(db_path))?;
    Ok(pending(&conn, db_path)?.is_some())
}

/// Writes `contents` to `path` atomically with `mode`: a temp file in the same
/// directory (created exclusively), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_err = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| EnrollError::File {
            op,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(file_err("create directory", dir))?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(file_err("create", &tmp))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(file_err("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(file_err("rename into", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err("sync directory", dir))
}

/// The device key at `path`, or a new ECDSA P-256 key written there (mode 0600).
pub fn load_or_make_key(path: &Path) -> Result<KeyPair> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let key = KeyPair::from_pem(&pem).map_err(|e| EnrollError::Key {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
                return Err(EnrollError::Key {
                    path: path.to_owned(),
                    reason: "not an ECDSA P-256 key".to_owned(),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
                EnrollError::Crypto {
                    what: "key pair",
                    source,
                }
            })?;
            write_atomic(path, key.serialize_pem().as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(source) => Err(EnrollError::File {
            op: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// A PKCS#10 request for `key`, subject CN = `serial`, asking for `alt_names`, as PEM.
pub fn make_csr(key: &KeyPair, serial: &BoxSerial, alt_names: &[AltName]) -> Result<String> {
    make_csr_for(key, serial.as_str(), alt_names)
}

/// A PKCS#10 request for `key`, subject CN = `cn` (renewal: the box id), asking for
/// the subjectAltNames `alt_names` ([`csr_alt_names`]), as PEM.
pub fn make_csr_for(key: &KeyPair, cn: &str, alt_names: &[AltName]) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = alt_names
        .iter()
        .map(|name| match name {
            AltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            AltName::Dns(dns) => rcgen::string::Ia5String::try_from(dns.as_str())
                .map(SanType::DnsName)
                .map_err(|source| EnrollError::Crypto {
                    what: "CSR name",
                    source,
                }),
        })
        .collect::<Result<_>>()?;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|source| EnrollError::Crypto {
            what: "CSR",
            source,
        })
}

/// The subjectAltNames the box asks for in its CSR so that its web page validates at
/// `https://<lan-ip>/` and `https://<serial>.local/`
/// ([`branchline_sync::alt_names`] is the policy HQ signs by):
///
/// - its own names ([`alt_names::own_names`]: `<serial>`, `<serial>.local`);
/// - the web page's addresses, when it is served (`web_listen`): the listen address
///   itself, or with an unspecified one (`0.0.0.0`: IPv4 only, `[::]`: both) the
///   addresses of `interfaces`; of those only private and link-local ones
///   ([`alt_names::lan_ip`]), never the host of `hq_url` (HQ refuses its own
///   address), private ones before link-local ones, at most
///   [`alt_names::MAX_ALT_NAMES`] names in all. Pure.
pub fn csr_alt_names(
    box_id: &str,
    web_listen: Option<SocketAddr>,
    hq_url: &str,
    interfaces: &[IpAddr],
) -> Vec<AltName> {
    let mut names: Vec<AltName> = alt_names::own_names(box_id)
        .into_iter()
        .map(AltName::Dns)
        .collect();
    let hq_ip = reqwest::Url::parse(hq_url).ok().and_then(|u| {
        u.host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
    });
    let mut ips: Vec<IpAddr> = match web_listen.map(|l| l.ip()) {
        None => Vec::new(),
        Some(IpAddr::V4(any)) if any.is_unspecified() => {
            interfaces.iter().copied().filter(IpAddr::is_ipv4).collect()
        }
        Some(IpAddr::V6(any)) if any.is_unspecified() => interfaces.to_vec(),
        Some(ip) => vec![ip],
    };
    ips.retain(|ip| alt_names::lan_ip(ip) && Some(*ip) != hq_ip);
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    ips.sort_by_key(|ip| (link_local(ip), *ip));
    ips.dedup();
    names.extend(ips.into_iter().map(AltName::Ip));
    names.truncate(alt_names::MAX_ALT_NAMES);
    names
}

/// The addresses of this host's interfaces (for [`csr_alt_names`] when the web page
/// listens on every address); none when the OS does not tell (logged).
pub fn interface_addresses() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|ifa| {
                let addr = ifa.address?;
                addr.as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the interfaces' addresses; the certificate request names no LAN address");
            Vec::new()
        }
    }
}

/// [`csr_alt_names`] with this host's interfaces (listed only when `web_listen` is an
/// unspecified address).
pub fn lan_alt_names(box_id: &str, web_listen: Option<SocketAddr>, hq_url: &str) -> Vec<AltName> {
    let interfaces = match web_listen {
        Some(l) if l.ip().is_unspecified() => interface_addresses(),
        _ => Vec::new(),
    };
    csr_alt_names(box_id, web_listen, hq_url, &interfaces)
}

fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

/// Accepts a server chain only if one of its certificates is a CA whose
/// SubjectPublicKeyInfo matches the pin, and that CA verifies the server certificate
/// and host name (webpki).
#[derive(Debug)]
struct PinnedCa {
    pin: CaPin,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| spki_sha256(c).is_some_and(|h| self.pin.matches(&h)))
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate in HQ's chain matches the provisioned CA pin".to_owned(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS client config for enrolling: no client certificate; HQ's chain must
/// contain a CA matching `pin`, which then verifies HQ's certificate and name.
pub fn pinned_tls_config(pin: &CaPin) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                pin: pin.clone(),
                provider,
            }))
            .with_no_client_auth(),
    )
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(std::result::Result::ok)
        .collect()
}

/// Checks HQ's answer: one certificate, for `key` and subject CN `serial`; a CA
/// certificate matching `pin`.
pub fn check_answer(
    answer: &EnrollResponse,
    key: &KeyPair,
    serial: &BoxSerial,
    pin: &CaPin,
) -> Result<()> {
    let bad = |reason: String| EnrollError::Answer { reason };
    let certs = pem_certs(&answer.cert_pem);
    let [cert] = certs.as_slice() else {
        return Err(bad(format!(
            "{} certificates in cert_pem, expected 1",
            certs.len()
        )));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| bad(format!("cert_pem does not parse: {e}")))?;
    if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(bad("the certificate is not for this box's key".to_owned()));
    }
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(serial.as_str()) {
        return Err(bad(format!(
            "the certificate names {cn:?}, not this box ({serial})"
        )));
    }
    let cas = pem_certs(&answer.ca_pem);
    if !cas
        .iter()
        .any(|c| spki_sha256(c).is_some_and(|h| pin.matches(&h)))
    {
        return Err(bad(
            "ca_pem does not match the provisioned CA pin".to_owned()
        ));
    }
    Ok(())
}

/// What one enrollment request came to.
#[derive(Debug)]
pub enum Attempt {
    /// HQ issued the certificate.
    Enrolled(EnrollResponse),
    /// HQ refused; do not retry this token.
    Refused(EnrollRefusal),
    /// Try again later (why).
    Retry(String),
}

/// Sends one enrollment request.
pub async fn attempt(client: &reqwest::Client, hq_url: &str, req: &EnrollRequest) -> Attempt {
    let url = format!("{}{ENROLL_PATH}", hq_url.trim_end_matches('/'));
    let resp = match client
        .post(&url)
        .timeout(REQUEST_TIMEOUT)
        .json(req)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            return Attempt::Retry(format!("{url}: {msg}"));
        }
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Attempt::Retry(format!("{url}: reading the answer: {e}")),
    };
    if status.is_success() {
        return match serde_json::from_slice::<EnrollResponse>(&body) {
            Ok(a) => Attempt::Enrolled(a),
            Err(e) => Attempt::Retry(format!("{url}: answer is not an EnrollResponse: {e}")),
        };
    }
    match serde_json::from_slice::<EnrollRefusal>(&body) {
        Ok(r) if status.is_client_error() && !r.code.is_retryable() => Attempt::Refused(r),
        Ok(r) => Attempt::Retry(format!("{url}: HQ answered {status}: {}", r.message)),
        Err(_) => Attempt::Retry(format!(
            "{url}: HQ answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// Runs the enrollment (see the module doc) and returns the `[hq]` config for the
/// sync agent once enrolled (`None` when stopped first).
#[derive(Debug)]
pub struct EnrollTask {
    /// `[hq]`: the file paths (url and box id are replaced by the provisioned ones).
    pub hq: HqConfig,
    /// This box's serial (the CSR's CN).
    pub serial: BoxSerial,
    /// The daemon's database.
    pub db_path: PathBuf,
    /// The store writer (to mark the box enrolled).
    pub writer: StoreWriter,
    /// `[auth]` settings for the accounts handle.
    pub auth: AuthSettings,
    /// Sync status: shows the enrollment's last error.
    pub handle: SyncHandle,
    /// Jitter seed of the backoff.
    pub seed: u64,
    /// `[web] listen`: the addresses the CSR asks for ([`lan_alt_names`]).
    pub web_listen: Option<SocketAddr>,
}

fn now_ms() -> i64 {
    crate::store::system_clock_ms()
}

impl EnrollTask {
    /// Waits for a bundle, enrolls, retries while HQ is unreachable; returns the
    /// config for the agent.
    pub async fn run(self, stop: CancellationToken) -> Option<HqConfig> {
        let mut backoff = Backoff::new(BackoffConfig::default(), self.seed);
        let mut reported_wait = false;
        loop {
            let wait = match self.step().await {
                Ok(Step::Enrolled(hq)) => return Some(*hq),
                Ok(Step::NotProvisioned) => {
                    if !reported_wait {
                        reported_wait = true;
                        self.handle.set_setup_error(
                            "not enrolled: waiting for a provisioning bundle with an enrollment token"
                                .to_owned(),
                        );
                    }
                    PENDING_POLL
                }
                Ok(Step::Refused) if self.hq.client_cert.exists() => {
                    // A refused re-enrollment: the box syncs on with the identity it
                    // has (the refusal stays in the provisioning state and the log).
                    return Some(self.hq.clone());
                }
                Ok(Step::Refused) => {
                    reported_wait = true;
                    PENDING_POLL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "enrollment failed; retrying");
                    self.handle.set_setup_error(format!("{e}; retrying"));
                    let now = Instant::now();
                    backoff.fail(now).saturating_duration_since(now)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.db_path).map_err(store_err(&self.db_path))?;
        conn.busy_timeout(crate::store::BUSY_TIMEOUT)
            .map_err(store_err(&self.db_path))?;
        Ok(conn)
    }

    async fn step(&self) -> Result<Step> {
        let pending = {
            let conn = self.open()?;
            pending(&conn, &self.db_path)?
        };
        let Some(p) = pending else {
            return Ok(Step::NotProvisioned);
        };
        // Re-enrollment (a new bundle on a box that has a certificate, e.g. a revoked
        // one): a new key, staged next to the identity in use until HQ answers.
        let reenroll = self.hq.client_cert.exists();
        let key_path = if reenroll {
            crate::renew::staged(&self.hq.client_key)
        } else {
            self.hq.client_key.clone()
        };
        let key = load_or_make_key(&key_path)?;
        let req = EnrollRequest {
            protocol: PROTOCOL_VERSION,
            token: p.token.clone(),
            csr_pem: make_csr(
                &key,
                &self.serial,
                &lan_alt_names(self.serial.as_str(), self.web_listen, p.hq_url.as_str()),
            )?,
        };
        let client_err = |reason: String| EnrollError::Client {
            url: p.hq_url.clone(),
            reason,
        };
        let tls = pinned_tls_config(&p.ca_pin).map_err(|e| client_err(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("branchd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| client_err(e.to_string()))?;
        tracing::info!(hq = %p.hq_url, site = %p.site, serial = %self.serial, "enrolling with HQ");
        match attempt(&client, &p.hq_url, &req).await {
            Attempt::Retry(why) => Err(EnrollError::Client {
                url: p.hq_url,
                reason: why,
            }),
            Attempt::Refused(r) => {
                let code = serde_json::to_value(r.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                tracing::error!(code = %code, message = %r.message, "HQ refused the enrollment; not retrying this token");
                self.handle.set_setup_error(format!(
                    "enrollment refused by HQ ({code}): {}; provision the box with a new bundle",
                    r.message
                ));
                let conn = self.open()?;
                record_state(
                    &conn,
                    &self.db_path,
                    &p.token,
                    &EnrollmentState::Refused {
                        code,
                        message: r.message,
                        at_ms: now_ms(),
                    },
                )?;
                Ok(Step::Refused)
            }
            Attempt::Enrolled(answer) => {
                check_answer(&answer, &key, &self.serial, &p.ca_pin)?;
                write_atomic(&self.hq.ca_cert, answer.ca_pem.as_bytes(), 0o644)?;
                if reenroll {
                    crate::renew::commit(&self.hq, &answer.cert_pem)?;
                } else {
                    write_atomic(&self.hq.client_cert, answer.cert_pem.as_bytes(), 0o644)?;
                }
                let accounts = Accounts::new(self.writer.clone(), self.db_path.clone(), self.auth);
                if let Err(e) = accounts
                    .set_enrolled(&Actor::new("branchd", "system"), now_ms())
                    .await
                {
                    tracing::error!(error = %e, "enrolled, but retiring the installer account failed");
                }
                let conn = self.open()?;
                record_state(
                    &conn,
                    &self.db_path,
                    &p.token,
                    &EnrollmentState::Enrolled {
                        box_id: answer.box_id.clone(),
                        site: answer.site.clone(),
                        at_ms: now_ms(),
                    },
                )?;
                tracing::info!(box_id = %answer.box_id, site = %answer.site, "enrolled with HQ; sync starts with the device certificate");
                let mut hq = self.hq.clone();
                hq.url = p.hq_url.trim_end_matches('/').to_owned();
                hq.box_id = answer.box_id;
                Ok(Step::Enrolled(Box::new(hq)))
            }
        }
    }
}

enum Step {
    Enrolled(Box<HqConfig>),
    NotProvisioned,
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn serial() -> BoxSerial {
        "BOX-1".parse().unwrap()
    }

    #[test]
    fn key_is_p256_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/box.key");
        let key = load_or_make_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_make_key(&path).unwrap();
        assert_eq!(
            key.subject_public_key_info(),
            again.subject_public_key_info()
        );
        // A file that is no key is refused by name, and left alone.
        std::fs::write(&path, "junk").unwrap();
        let err = load_or_make_key(&path).unwrap_err().to_string();
        assert!(err.contains("box.key"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "junk");
    }

    #[test]
    fn answer_must_be_for_this_key_serial_and_pinned_ca() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.clone().self_signed(&ca_key).unwrap();
        let pin = CaPin::new(&spki_sha256(ca.der()).unwrap()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let issue = |cn: &str, k: &KeyPair| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.signed_by(k, &issuer).unwrap().pem()
        };
        let answer = |cert_pem: String, ca_pem: String| EnrollResponse {
            protocol: PROTOCOL_VERSION,
            box_id: "BOX-1".into(),
            site: "s1".into(),
            cert_pem,
            ca_pem,
        };
        let good = answer(issue("BOX-1", &key), ca.pem());
        check_answer(&good, &key, &serial(), &pin).unwrap();
        check_answer(&good, &key, &serial(), &pin.short()).unwrap();
        let other_key = KeyPair::generate().unwrap();
        for (bad, why) in [
            (answer(issue("BOX-1", &other_key), ca.pem()), "key"),
            (answer(issue("BOX-2", &key), ca.pem()), "names"),
            (answer(issue("BOX-1", &key), issue("X", &other_key)), "pin"),
            (answer(String::new(), ca.pem()), "0 certificates"),
        ] {
            let err = check_answer(&bad, &key, &serial(), &pin)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn csr_names_the_serial_and_asks_for_the_alt_names() {
        let key = KeyPair::generate().unwrap();
        let names = [
            AltName::Dns("box-1".into()),
            AltName::Ip("192.168.1.1".parse().unwrap()),
        ];
        let pem = make_csr(&key, &serial(), &names).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        // HQ's own check reads back the serial and the names.
        use x509_parser::prelude::FromDer;
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .unwrap();
        let info = &csr.certification_request_info;
        let cn = info.subject.iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "BOX-1");
        let mut got = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                got.extend(san.general_names.iter().map(|n| n.to_string()));
            }
        }
        // x509-parser prints an IP SAN as its octets in hex.
        assert_eq!(got, ["DNSName(box-1)", "IPAddress(c0:a8:01:01)"]);
    }

    #[test]
    fn the_csr_asks_for_the_web_page_s_lan_addresses_and_the_box_s_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let own = [
            AltName::Dns("box-1".into()),
            AltName::Dns("box-1.local".into()),
        ];
        let with = |ips: &[&str]| {
            own.iter()
                .cloned()
                .chain(ips.iter().map(|s| AltName::Ip(ip(s))))
                .collect::<Vec<_>>()
        };
        let hq = "https://10.9.9.9:8443";
        let interfaces: Vec<IpAddr> = [
            "127.0.0.1",
            "203.0.113.4",
            "169.254.3.3",
            "192.168.1.1",
            "10.9.9.9",
            "::1",
            "fe80::1",
            "fd00::2",
            "2001:db8::7",
            "192.168.1.1",
        ]
        .iter()
        .map(|s| ip(s))
        .collect();
        // No web page: only the names.
        assert_eq!(csr_alt_names("BOX-1", None, hq, &interfaces), with(&[]));
        // A specific listen address: that one if it is a LAN one.
        assert_eq!(
            csr_alt_names("BOX-1", at("192.168.7.1:443"), hq, &interfaces),
            with(&["192.168.7.1"])
        );
        assert_eq!(
            csr_alt_names("BOX-1", at("127.0.0.1:443"), hq, &interfaces),
            with(&[])
        );
        assert_eq!(
            csr_alt_names("BOX-1", at("203.0.113.4:443"), hq, &interfaces),
            with(&[])
        );
        // Every IPv4 address: the private ones, not HQ's, link-local last.
        assert_eq!(
            csr_alt_names("BOX-1", at("0.0.0.0:443"), hq, &interfaces),
            with(&["192.168.1.1", "169.254.3.3"])
        );
        // Every address: IPv6 too.
        assert_eq!(
            csr_alt_names("BOX-1", at("[::]:443"), hq, &interfaces),
            with(&["192.168.1.1", "fd00::2", "169.254.3.3", "fe80::1"])
        );
        // A serial that is no DNS label gets addresses only; at most MAX_ALT_NAMES.
        let many: Vec<IpAddr> = (1..=20).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        let got = csr_alt_names("BOX_1", at("0.0.0.0:443"), hq, &many);
        assert_eq!(got.len(), alt_names::MAX_ALT_NAMES);
        assert_eq!(got[0], AltName::Ip(ip("10.0.0.1")));
        // What the box asks for is what HQ accepts.
        for listen in ["0.0.0.0:443", "[::]:443", "192.168.7.1:443"] {
            let names = csr_alt_names("BOX-1", at(listen), hq, &interfaces);
            alt_names::check("BOX-1", &names, &[AltName::Ip(ip("10.9.9.9"))]).unwrap();
        }
    }

    fn store_with_bundle(dir: &Path) -> (Connection, PathBuf) {
        let path = dir.join("b.db");
        let store = crate::store::Store::open(&path).unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"INSERT INTO provisioning_used_tokens VALUES ('0102030405060708', 1);
               INSERT INTO provisioning_bundles VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '0102030405060708', 's1', 1);
               INSERT INTO provisioned_settings VALUES
                 ('enrollment_token', '"BL1:TOKEN"', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
                 ('hq_url', '"https://127.0.0.1:9"', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
                 ('ca_pin', '"000102030405060708090a0b0c0d0e0f"', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'),
                 ('site', '"s1"', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');"#,
        )
        .unwrap();
        (conn, path)
    }

    #[test]
    fn pending_until_an_outcome_is_recorded_for_that_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = store_with_bundle(dir.path());
        let p = pending(&conn, &path).unwrap().expect("pending");
        assert_eq!(p.token, "BL1:TOKEN");
        assert_eq!(p.hq_url, "https://127.0.0.1:9");
        assert_eq!(p.ca_pin.as_bytes().len(), 16);
        // An outcome for another token (a bundle replaced meanwhile) writes nothing.
        let refused = EnrollmentState::Refused {
            code: "token_used".into(),
            message: "used".into(),
            at_ms: 5,
        };
        assert!(!record_state(&conn, &path, "BL1:OTHER", &refused).unwrap());
        assert!(pending(&conn, &path).unwrap().is_some());
        assert!(record_state(&conn, &path, "BL1:TOKEN", &refused).unwrap());
        assert!(pending(&conn, &path).unwrap().is_none());
        assert_eq!(state(&conn, &path).unwrap(), Some(refused));
    }

    #[test]
    fn nothing_pending_without_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(pending(&conn, &path).unwrap(), None);
        assert_eq!(state(&conn, &path).unwrap(), None);
    }
}
