//! HQ's device CA and TLS material.
//!
//! `branch-hq ca init --dir D` writes into `D`:
//!
//! | file | what |
//! | --- | --- |
//! | [`CA_CERT`] / [`CA_KEY`] | the device CA (ECDSA P-256, path length 0, 20 years) |
//! | [`SERVER_CERT`] / [`SERVER_KEY`] | the sync listener's certificate, signed by the CA, SANs `127.0.0.1`, `localhost` and the names given |
//! | [`ADMIN_TOKEN`] | the admin API's bearer token (random, 0600) |
//!
//! [`Ca::issue_box`] signs a device certificate whose subject CN is the box id, with
//! the clientAuth and serverAuth extended key usages (the box serves its web page
//! with it); `branch-hq box add` writes it (no subjectAltName) with its key and
//! the CA certificate for the box. The sync listener trusts only this CA for client
//! certificates ([`server_tls_config`]): rustls' WebPKI verifier refuses certificates
//! from another CA, self-signed ones, and ones outside their validity period during
//! the handshake, before any request is read. Keys are written with mode 0600.
//!
//! A box gets its certificate by enrollment ([`crate::hq::enroll`]: its own key, a
//! CSR and a one-time provisioning token; [`Ca::sign_box_csr`]) or from an operator
//! (`branch-hq box add`, the admin API). Either way the certificate's sha256 is pinned
//! in the `boxes` table so that issuing a new one revokes the old. A box renews its
//! certificate before it expires over mutual TLS (a new key, a CSR, the same
//! [`Ca::sign_box_csr`]; see [`crate::hq::enroll`]): the new one is staged next to the
//! pinned one until the box uses it. A certificate signed from a CSR carries the
//! subjectAltNames the CSR asks for (the box's private LAN addresses and the names
//! made of its serial, so its web page validates at `https://<lan-ip>/`) once they
//! pass [`crate::alt_names::check`], which also refuses every name or address of HQ's
//! own server certificate (read from [`SERVER_CERT`] by [`Ca::load`]): a box never
//! gets a certificate valid for HQ. Enrolled and renewed certificates last
//! `box_cert_lifetime_s` ([`box_validity`]); an operator revokes a box in the store,
//! not with a CRL: the sync listener reads the revocation on every request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::alt_names::{self, AltName};
use crate::hq::{Error, Result};

/// The CA certificate (PEM).
pub const CA_CERT: &str = "ca.pem";
/// The CA key (PEM, PKCS#8).
pub const CA_KEY: &str = "ca.key";
/// The sync listener's certificate (PEM).
pub const SERVER_CERT: &str = "server.pem";
/// The sync listener's key (PEM).
pub const SERVER_KEY: &str = "server.key";
/// The admin API bearer token.
pub const ADMIN_TOKEN: &str = "admin-token";

/// Subject CN of the device CA.
pub const CA_NAME: &str = "Branchline HQ device CA";
/// Default lifetime of a device certificate.
pub const BOX_CERT_DAYS: u64 = 5 * 365;
/// The validity of a device certificate signed at `now` for `lifetime`: notBefore is
/// backdated by a tenth of the lifetime, at most an hour (clock skew between HQ and a
/// box), so that a box deciding when to renew (a fraction of notBefore..notAfter)
/// sees about the lifetime HQ configured.
pub fn box_validity(now: SystemTime, lifetime: Duration) -> (SystemTime, SystemTime) {
    let backdate = (lifetime / 10).min(Duration::from_secs(3600));
    (now - backdate, now + lifetime)
}

/// Lifetime of the server certificate.
pub const SERVER_CERT_DAYS: u64 = 825;

const DAY: Duration = Duration::from_secs(86_400);

fn cert_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
    let what = what.into();
    move |source| Error::Certificate { what, source }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|source| Error::Random { source })?;
    bytes[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&bytes))
}

/// Random hex string of `bytes` random bytes (tokens, epochs).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|source| Error::Random { source })?;
    Ok(hex::encode(buf))
}

/// Writes `contents` to `path`; with `secret`, mode 0600. Refuses to overwrite when
/// `overwrite` is false.
pub fn write_file(path: &Path, contents: &[u8], secret: bool, overwrite: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(io("create", path))?;
    f.write_all(contents).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

/// sha256 (lowercase hex) of a certificate's DER: what `boxes.cert_fingerprint` holds.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The CA pin a provisioning token or bundle carries: sha256 (lowercase hex) of the
/// SubjectPublicKeyInfo of the CA certificate in `dir` (what `branch-prov` site files
/// call `ca_pin`).
pub fn ca_pin(dir: &Path) -> Result<String> {
    let path = dir.join(CA_CERT);
    let der = load_certs(&path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Pem {
        path: path.clone(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    Ok(hex::encode(Sha256::digest(
        cert.tbs_certificate.subject_pki.raw,
    )))
}

/// A certificate issued for a box.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The box's private key (PEM).
    pub key_pem: String,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// The CA certificate (PEM), for the box to trust HQ's server certificate.
    pub ca_pem: String,
    /// sha256 of the certificate's DER.
    pub fingerprint: String,
}

/// The device CA, loaded from its directory.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
    /// The SANs of HQ's server certificate, which no device certificate may carry;
    /// `None` when the directory has none (then [`Ca::sign_box_csr`] signs no SAN).
    hq_names: Option<Vec<AltName>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// The extended key usages of a device certificate: clientAuth for mutual TLS with
/// HQ, serverAuth because the box serves its local web page with it once enrolled
/// (browsers refuse a server certificate without serverAuth).
const DEVICE_EKUS: [ExtendedKeyUsagePurpose; 2] = [
    ExtendedKeyUsagePurpose::ClientAuth,
    ExtendedKeyUsagePurpose::ServerAuth,
];

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Branchline");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// Makes a new CA (not written anywhere).
    pub fn generate(now: SystemTime) -> Result<Ca> {
        let key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut params = ca_params();
        params.not_before = offset(now - DAY);
        params.not_after = offset(now + Duration::from_secs(20 * 365 * 86_400));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
            hq_names: None,
        })
    }

    /// Loads the CA of a TLS directory.
    pub fn load(dir: &Path) -> Result<Ca> {
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| Error::Pem {
            path: key_path,
            reason: format!("not a private key: {e}"),
        })?;
        let server = dir.join(SERVER_CERT);
        let hq_names = if server.exists() {
            Some(cert_alt_names(&server, &load_certs(&server)?[0])?)
        } else {
            None
        };
        Ok(Ca {
            cert_pem: read(&dir.join(CA_CERT))?,
            key,
            hq_names,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(&self, what: &str, mut params: CertificateParams) -> Result<IssuedCert> {
        let key = KeyPair::generate().map_err(cert_err(format!("{what} key")))?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(cert_err("CA as issuer"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(cert_err(what.to_owned()))?;
        Ok(IssuedCert {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            ca_pem: self.cert_pem.clone(),
            fingerprint: fingerprint(cert.der()),
        })
    }

    /// Issues a device certificate for `box_id`, valid from `not_before` to
    /// `not_after` (tests issue expired ones with both in the past).
    pub fn issue_box(
        &self,
        box_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, box_id);
        dn.push(DnType::OrganizationName, "Branchline");
        params.distinguished_name = dn;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = DEVICE_EKUS.to_vec();
        self.issue(&format!("box {box_id}"), params)
    }

    /// Signs the key of a verified CSR into a device certificate for `box_id`
    /// (enrollment, [`crate::hq::enroll`]): the subject, key usages and lifetime are
    /// HQ's, never the CSR's; of the CSR only its public key and `alt_names` (the
    /// SANs it asked for, see [`crate::hq::enroll::check_csr`]) are used. The SANs are
    /// checked again here ([`alt_names::check`], with HQ's own names): a refused one
    /// is [`Error::AltName`] and nothing is signed. Returns the certificate (PEM) and
    /// its fingerprint.
    pub fn sign_box_csr(
        &self,
        csr: &rcgen::CertificateSigningRequestParams,
        box_id: &str,
        alt_names: &[AltName],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String)> {
        let refused = |source| Error::AltName {
            box_id: box_id.to_owned(),
            source,
        };
        let hq_names = match (&self.hq_names, alt_names.is_empty()) {
            (_, true) => &[][..],
            (Some(names), false) => names.as_slice(),
            (None, false) => {
                return Err(Error::Pem {
                    path: PathBuf::from(SERVER_CERT),
                    reason: "HQ's server certificate is not in the CA's directory, so a \
                             device certificate cannot be checked against HQ's own names"
                        .to_owned(),
                })
            }
        };
        alt_names::check(box_id, alt_names, hq_names).map_err(refused)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = alt_names
            .iter()
            .map(|name| match name {
                AltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
                AltName::Dns(dns) => rcgen::string::Ia5String::try_from(dns.as_str())
                    .map(SanType::DnsName)
                    .map_err(cert_err(format!("box {box_id} name {dns:?}"))),
            })
            .collect::<Result<_>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, box_id);
        dn.push(DnType::OrganizationName, "Branchline");
        params.distinguished_name = dn;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = DEVICE_EKUS.to_vec();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let request = rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.public_key.clone(),
        };
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(cert_err("CA as issuer"))?;
        let cert = request
            .signed_by(&issuer)
            .map_err(cert_err(format!("box {box_id} from its CSR")))?;
        Ok((cert.pem(), fingerprint(cert.der())))
    }

    /// Issues the sync listener's certificate for `127.0.0.1`, `localhost` and `names`.
    pub fn issue_server(&self, names: &[String], now: SystemTime) -> Result<IssuedCert> {
        let mut sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        sans.extend(
            names
                .iter()
                .filter(|n| !sans.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut params = CertificateParams::new(sans).map_err(cert_err("server names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "branch-hq");
        params.distinguished_name = dn;
        params.not_before = offset(now - DAY);
        params.not_after = offset(now + Duration::from_secs(SERVER_CERT_DAYS * 86_400));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue("server", params)
    }
}

/// Creates a TLS directory: CA, server certificate, admin token. Refuses to
/// overwrite an existing CA.
pub fn init_ca(dir: &Path, server_names: &[String], now: SystemTime) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    if dir.join(CA_KEY).exists() {
        return Err(Error::AlreadyExists {
            what: "CA in",
            key: dir.display().to_string(),
        });
    }
    let ca = Ca::generate(now)?;
    let server = ca.issue_server(server_names, now)?;
    write_file(
        &dir.join(CA_KEY),
        ca.key.serialize_pem().as_bytes(),
        true,
        false,
    )?;
    write_file(&dir.join(CA_CERT), ca.cert_pem.as_bytes(), false, false)?;
    write_file(&dir.join(SERVER_KEY), server.key_pem.as_bytes(), true, true)?;
    write_file(
        &dir.join(SERVER_CERT),
        server.cert_pem.as_bytes(),
        false,
        true,
    )?;
    if !dir.join(ADMIN_TOKEN).exists() {
        write_file(
            &dir.join(ADMIN_TOKEN),
            random_hex(24)?.as_bytes(),
            true,
            false,
        )?;
    }
    Ok(())
}

/// Writes a box's files into `out`: `box.key` (0600), `box.pem`, `ca.pem`.
pub fn write_box_files(out: &Path, issued: &IssuedCert) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(io("create directory", out))?;
    let files = [
        (out.join("box.key"), issued.key_pem.as_bytes(), true),
        (out.join("box.pem"), issued.cert_pem.as_bytes(), false),
        (out.join("ca.pem"), issued.ca_pem.as_bytes(), false),
    ];
    for (path, contents, secret) in &files {
        write_file(path, contents, *secret, true)?;
    }
    Ok(files.into_iter().map(|(p, _, _)| p).collect())
}

/// Parses every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_owned(),
            reason: "no certificate in the file".to_owned(),
        });
    }
    Ok(certs)
}

/// Parses the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| Error::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| Error::Pem {
            path: path.to_owned(),
            reason: "no private key in the file".to_owned(),
        })
}

/// The crypto provider everything here uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The sync listener's TLS config: server certificate from `dir` followed by the CA
/// certificate (so that a box that knows only the CA's pin can check the chain while
/// enrolling), client certificates verified against the CA of `dir`.
///
/// A client that presents a certificate must present a valid one (rustls refuses the
/// handshake otherwise). A client without one is let through the handshake only so
/// that it can enroll: [`crate::hq::server::serve`] gives such a connection the
/// enrollment route and nothing else.
pub fn server_tls_config(dir: &Path) -> Result<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&dir.join(CA_CERT))? {
        roots.add(cert).map_err(|source| Error::Tls {
            what: "CA certificate",
            source,
        })?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|source| Error::Verifier { source })?;
    let mut chain = load_certs(&dir.join(SERVER_CERT))?;
    chain.extend(load_certs(&dir.join(CA_CERT))?);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, load_key(&dir.join(SERVER_KEY))?)
        .map_err(|source| Error::Tls {
            what: "server certificate",
            source,
        })?;
    Ok(config)
}

/// The admin listener's TLS config (server certificate only, no client auth).
pub fn admin_tls_config(dir: &Path) -> Result<rustls::ServerConfig> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "protocol versions",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(
            load_certs(&dir.join(SERVER_CERT))?,
            load_key(&dir.join(SERVER_KEY))?,
        )
        .map_err(|source| Error::Tls {
            what: "server certificate",
            source,
        })
}

/// The IP and DNS subjectAltNames of certificate `der` (read from `path`, named in
/// errors).
pub fn cert_alt_names(path: &Path, der: &[u8]) -> Result<Vec<AltName>> {
    let bad = |reason: String| Error::Pem {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("subjectAltName: {e}")))?;
    let mut names = Vec::new();
    for name in san.iter().flat_map(|ext| &ext.value.general_names) {
        match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                names.push(AltName::Dns(dns.to_ascii_lowercase()));
            }
            x509_parser::extensions::GeneralName::IPAddress(octets) => {
                let ip = match octets.len() {
                    4 => <[u8; 4]>::try_from(*octets)
                        .map(std::net::IpAddr::from)
                        .ok(),
                    16 => <[u8; 16]>::try_from(*octets)
                        .map(std::net::IpAddr::from)
                        .ok(),
                    _ => None,
                };
                names.push(AltName::Ip(ip.ok_or_else(|| {
                    bad(format!("an IP subjectAltName of {} bytes", octets.len()))
                })?));
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The subject CN of a certificate (the box id of a device certificate).
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extended key usages of a certificate (PEM).
    fn ekus(pem: &str) -> (bool, bool) {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.client_auth, eku.server_auth)
    }

    #[test]
    fn device_certificates_serve_clients_and_the_web_page() {
        let now = SystemTime::now();
        let ca = Ca::generate(now).unwrap();
        let issued = ca.issue_box("BOX-1", now - DAY, now + DAY).unwrap();
        assert_eq!(ekus(&issued.cert_pem), (true, true));

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "BOX-2");
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&csr_pem).unwrap();
        let (cert, _) = ca
            .sign_box_csr(&csr, "BOX-2", &[], now - DAY, now + DAY)
            .unwrap();
        assert_eq!(ekus(&cert), (true, true));
        assert_eq!(
            subject_cn(
                &rustls_pemfile::certs(&mut cert.as_bytes())
                    .next()
                    .unwrap()
                    .unwrap()
            )
            .as_deref(),
            Some("BOX-2")
        );
    }

    /// A CSR for a fresh key, CN `cn`, asking for `sans`.
    fn csr_with_sans(cn: &str, sans: &[&str]) -> rcgen::CertificateSigningRequestParams {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap()
    }

    fn names(list: &[&str]) -> Vec<AltName> {
        list.iter()
            .map(|s| match s.parse() {
                Ok(ip) => AltName::Ip(ip),
                Err(_) => AltName::Dns((*s).to_owned()),
            })
            .collect()
    }

    /// A CA directory made by `init_ca` with HQ's server names `hq`, loaded back.
    fn ca_with_server(hq: &[&str]) -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let hq: Vec<String> = hq.iter().map(|s| (*s).to_owned()).collect();
        init_ca(dir.path(), &hq, SystemTime::now()).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        (dir, ca)
    }

    fn cert_names(pem: &str) -> Vec<AltName> {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        cert_alt_names(Path::new("box.pem"), &der).unwrap()
    }

    #[test]
    fn the_lan_addresses_and_own_names_of_a_csr_are_copied() {
        let now = SystemTime::now();
        let (_dir, ca) = ca_with_server(&["hq.example.com", "10.0.0.5"]);
        let asked = ["192.168.1.1", "fd00::2", "box-1", "box-1.local"];
        let csr = csr_with_sans("BOX-1", &asked);
        let (cert, _) = ca
            .sign_box_csr(&csr, "BOX-1", &names(&asked), now - DAY, now + DAY)
            .unwrap();
        assert_eq!(cert_names(&cert), names(&asked));
        assert_eq!(ekus(&cert), (true, true));
        // HQ's own names as the signer sees them.
        assert_eq!(
            ca.hq_names.as_deref(),
            Some(&names(&["127.0.0.1", "localhost", "hq.example.com", "10.0.0.5"])[..])
        );
    }

    #[test]
    fn a_public_address_a_foreign_name_or_hq_s_own_is_never_signed() {
        let now = SystemTime::now();
        let (_dir, ca) = ca_with_server(&["hq.example.com", "10.0.0.5"]);
        for (box_id, bad, refusal) in [
            ("BOX-1", "203.0.113.7", "203.0.113.7 is not a private"),
            ("BOX-1", "127.0.0.1", "127.0.0.1 is not a private"),
            ("BOX-1", "hq.example.com", "is not a name of box"),
            ("BOX-1", "box-2.local", "is not a name of box"),
            // HQ on a private address, and a box whose serial is HQ's host name.
            ("BOX-1", "10.0.0.5", "IP 10.0.0.5 is HQ's own"),
            ("LOCALHOST", "localhost", "is not a name of box"),
        ] {
            let asked = ["192.168.1.1", bad];
            let csr = csr_with_sans(box_id, &asked);
            let e = ca
                .sign_box_csr(&csr, box_id, &names(&asked), now - DAY, now + DAY)
                .unwrap_err();
            assert!(matches!(e, Error::AltName { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(refusal), "{bad}: {e}");
        }
        // A serial that is one of HQ's single-label names.
        let (_dir, ca) = ca_with_server(&["hq"]);
        let csr = csr_with_sans("HQ", &["hq"]);
        let e = ca
            .sign_box_csr(&csr, "HQ", &names(&["hq"]), now - DAY, now + DAY)
            .unwrap_err();
        assert!(e.to_string().contains("DNS hq is HQ's own"), "{e}");
    }

    #[test]
    fn without_hq_s_server_certificate_no_san_is_signed() {
        let now = SystemTime::now();
        let ca = Ca::generate(now).unwrap();
        let csr = csr_with_sans("BOX-1", &["192.168.1.1"]);
        let e = ca
            .sign_box_csr(
                &csr,
                "BOX-1",
                &names(&["192.168.1.1"]),
                now - DAY,
                now + DAY,
            )
            .unwrap_err();
        assert!(e.to_string().contains("server certificate"), "{e}");
        let (cert, _) = ca
            .sign_box_csr(&csr, "BOX-1", &[], now - DAY, now + DAY)
            .unwrap();
        assert!(cert_names(&cert).is_empty());
    }
}
