//! The HTTPS client to HQ: rustls (ring provider) with mutual TLS, HQ's CA as the only
//! root, the box's device certificate as the client certificate.
//!
//! reqwest carries HTTP/1.1 and timeouts; the TLS setup is ours
//! ([`reqwest::ClientBuilder::use_preconfigured_tls`]) so the box never trusts the
//! system's or webpki's roots for HQ, only the CA pinned in `[hq] ca_cert`.
//!
//! The client certificate comes from a [`DeviceIdentity`], which every client of the
//! daemon (sync agent, file uploader, updater, WAN probe) shares: when the box renews
//! its certificate ([`crate::renew`]) the identity is reloaded from the new files and
//! every new TLS connection presents the new certificate, without rebuilding the
//! clients. TLS session resumption is off, so a resumed session cannot carry the old
//! identity; a pooled connection made with the old certificate is closed by HQ once it
//! refuses that certificate (`Connection: close`), and the retry connects anew.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::HqConfig;
use crate::error::{Error, Result};

fn tls_error(path: &Path, what: &'static str, problem: impl Into<String>) -> Error {
    Error::SyncTlsFile {
        path: path.to_owned(),
        what,
        problem: problem.into(),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(path, what, format!("cannot read: {e}")))
}

/// The PEM certificates in `path` (at least one).
fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, what, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, what, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The PEM private key in `path`.
fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let what = "hq.client_key";
    let pem = read(path, what)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_error(path, what, format!("not valid PEM: {e}")))?
        .ok_or_else(|| tls_error(path, what, "holds no PEM private key"))
}

/// The box's device certificate and key as rustls presents them, reloadable.
#[derive(Debug)]
pub struct DeviceIdentity {
    current: RwLock<Arc<CertifiedKey>>,
}

fn certified_key(
    cert: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = certs(cert, "hq.client_cert")?;
    CertifiedKey::from_der(chain, key(key_path)?, provider).map_err(|e| {
        tls_error(
            key_path,
            "hq.client_key",
            format!("does not go with hq.client_cert: {e}"),
        )
    })
}

impl DeviceIdentity {
    /// Loads `[hq] client_cert` and `client_key` (they must go together).
    pub fn load(hq: &HqConfig) -> Result<Arc<DeviceIdentity>> {
        let provider = rustls::crypto::ring::default_provider();
        Ok(Arc::new(DeviceIdentity {
            current: RwLock::new(Arc::new(certified_key(
                &hq.client_cert,
                &hq.client_key,
                &provider,
            )?)),
        }))
    }

    /// Reloads the files (after a renewal or re-enrollment stored new ones); on an
    /// error the identity in use stays.
    pub fn reload(&self, hq: &HqConfig) -> Result<()> {
        let provider = rustls::crypto::ring::default_provider();
        let fresh = certified_key(&hq.client_cert, &hq.client_key, &provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate presented now (DER).
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .cert[0]
            .clone()
    }
}

impl rustls::client::ResolvesClientCert for DeviceIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The web page serves HTTPS with the same certificate once the box is enrolled
/// ([`crate::web::tls`]); it loads its own [`DeviceIdentity`] and reloads it when the
/// files change.
impl rustls::server::ResolvesServerCert for DeviceIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The rustls client config: TLS 1.2/1.3 with the ring provider, HQ's CA as the only
/// root, the device certificate and key for client authentication.
pub fn tls_config(hq: &HqConfig) -> Result<rustls::ClientConfig> {
    tls_config_with(hq, DeviceIdentity::load(hq)?)
}

/// [`tls_config`] presenting `identity` (shared, reloadable), without session
/// resumption.
pub fn tls_config_with(
    hq: &HqConfig,
    identity: Arc<DeviceIdentity>,
) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&hq.ca_cert, "hq.ca_cert")? {
        roots
            .add(cert)
            .map_err(|e| tls_error(&hq.ca_cert, "hq.ca_cert", format!("not a usable CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&hq.ca_cert, "hq.ca_cert", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The HTTP client for HQ. Per-request timeouts are set on each request (a long poll
/// waits longer than an upload); `connect_timeout` bounds the TCP and TLS setup.
pub fn http_client(hq: &HqConfig) -> Result<reqwest::Client> {
    http_client_with(hq, DeviceIdentity::load(hq)?)
}

/// [`http_client`] presenting `identity`.
pub fn http_client_with(hq: &HqConfig, identity: Arc<DeviceIdentity>) -> Result<reqwest::Client> {
    let tls = tls_config_with(hq, identity)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(hq.request_timeout.min(std::time::Duration::from_secs(10)))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .user_agent(concat!("branchd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| Error::SyncClient {
            url: hq.url.clone(),
            source,
        })
}
