//! The HTTPS client to HQ: rustls (ring provider) with mutual TLS, HQ's CA as the only
//! root, the box's device certificate as the client certificate.
//!
//! reqwest carries HTTP/1.1 and timeouts; the TLS setup is ours
//! ([`reqwest::ClientBuilder::use_preconfigured_tls`]) so the box never trusts the
//! system's or webpki's roots for HQ, only the CA pinned in `[hq] ca_cert`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// The rustls client config: TLS 1.2/1.3 with the ring provider, HQ's CA as the only
/// root, the device certificate and key for client authentication.
pub fn tls_config(hq: &HqConfig) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&hq.ca_cert, "hq.ca_cert")? {
        roots
            .add(cert)
            .map_err(|e| tls_error(&hq.ca_cert, "hq.ca_cert", format!("not a usable CA: {e}")))?;
    }
    let chain = certs(&hq.client_cert, "hq.client_cert")?;
    let key = key(&hq.client_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&hq.ca_cert, "hq.ca_cert", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            tls_error(
                &hq.client_key,
                "hq.client_key",
                format!("does not go with hq.client_cert: {e}"),
            )
        })
}

/// The HTTP client for HQ. Per-request timeouts are set on each request (a long poll
/// waits longer than an upload); `connect_timeout` bounds the TCP and TLS setup.
pub fn http_client(hq: &HqConfig) -> Result<reqwest::Client> {
    let tls = tls_config(hq)?;
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
