//! TLS configurations for SIP over TLS (rustls with the ring provider).
//!
//! - Server side ([`server_config`]): SIPS for local phones, from a certificate chain
//!   and key (PEM files via [`load_certs`] / [`load_private_key`]). Client
//!   certificates are not requested.
//! - Client side ([`client_config`]): to the trunk, verifying the server against
//!   [`TrustRoots`]: configured CA certificates (a PEM bundle, e.g. the carrier's CA or
//!   the system bundle at `/etc/ssl/certs/ca-certificates.crt`), the Mozilla roots
//!   compiled in from `webpki-roots` (the box's image need not ship a CA bundle), or
//!   both. The name verified and sent as SNI is
//!   [`Outbound::server_name`](super::Outbound::server_name), the trunk's host name;
//!   without one the certificate must carry the destination IP address. There is no
//!   switch to skip verification.
//!
//! Both sides allow TLS 1.2 and 1.3 (rustls' safe defaults): SIP phones still in the
//! field often lack TLS 1.3.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO or PEM error.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{path}: no certificate found")]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file holds no private key.
    #[error("{path}: no private key found")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A configured CA certificate is not a usable trust anchor.
    #[error("CA certificate {index} is not a usable trust anchor: {source}")]
    BadTrustAnchor {
        /// Its position in the configured list.
        index: usize,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// No trust anchors: every connection would fail verification.
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    /// rustls refused the certificate/key pair or the protocol versions.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which certificate authorities the client side trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The Mozilla root program, compiled in (`webpki-roots`).
    WebPki,
    /// Only these CA certificates.
    Certificates(Vec<CertificateDer<'static>>),
    /// The compiled-in roots and these.
    WebPkiAnd(Vec<CertificateDer<'static>>),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(read)?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
}

/// A server configuration presenting `chain` (leaf first) with `key`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A client configuration verifying servers against `roots`.
pub fn client_config(roots: &TrustRoots) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    let (webpki, extra) = match roots {
        TrustRoots::WebPki => (true, &[][..]),
        TrustRoots::Certificates(certs) => (false, &certs[..]),
        TrustRoots::WebPkiAnd(certs) => (true, &certs[..]),
    };
    if webpki {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (index, cert) in extra.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|source| TlsError::BadTrustAnchor { index, source })?;
    }
    if store.is_empty() {
        return Err(TlsError::NoTrustAnchors);
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_garbage_trust_anchors_are_refused() {
        assert!(matches!(
            client_config(&TrustRoots::Certificates(Vec::new())),
            Err(TlsError::NoTrustAnchors)
        ));
        assert!(matches!(
            client_config(&TrustRoots::Certificates(vec![CertificateDer::from(vec![
                1, 2, 3
            ])])),
            Err(TlsError::BadTrustAnchor { index: 0, .. })
        ));
        assert!(client_config(&TrustRoots::WebPki).is_ok());
    }

    #[test]
    fn pem_files_without_the_expected_items_are_refused() {
        let dir = std::env::temp_dir().join(format!("branchline-sip-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a pem file\n").unwrap();
        assert!(matches!(
            load_certs(&empty),
            Err(TlsError::NoCertificates { .. })
        ));
        assert!(matches!(
            load_private_key(&empty),
            Err(TlsError::NoPrivateKey { .. })
        ));
        let missing = dir.join("missing.pem");
        let err = load_certs(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
