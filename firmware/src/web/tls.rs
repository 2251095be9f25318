//! HTTPS for the web page with the device certificate, once the box is enrolled.
//!
//! ```text
//! [web] listen ──accept──▶ no certificate loaded ──▶ plain HTTP (the whole site)
//!                     └──▶ certificate loaded: peek the first byte
//!                              0x16 (TLS handshake) ──▶ rustls ──▶ the whole site (Secure cookies)
//!                              anything else ─────────▶ 307 to https://<host>:<port><path>
//! every CERT_POLL ──▶ CertWatch::check: [hq] client_cert / client_key changed? reload
//! ```
//!
//! - **When**: with `[web] https = "auto"` (the default) and an `[hq]` section, the
//!   listener serves HTTPS as soon as `[hq] client_cert` exists, i.e. once the box
//!   is enrolled ([`crate::enroll`]: the certificate's presence is what "enrolled"
//!   means). Before that, and with `https = "off"` or without `[hq]`, it is plain
//!   HTTP as before ([`crate::api::serve`]).
//! - **One address**: HTTPS is served on `[web] listen` itself; a plain HTTP request
//!   there gets a `307 Temporary Redirect` to the same host, port and path over
//!   HTTPS (temporary, so a browser does not remember it for a box that is factory
//!   reset back to plain HTTP). There is no HSTS header for the same reason.
//! - **The certificate** is the device certificate HQ signed, with its key, loaded as
//!   the sync client loads it ([`DeviceIdentity`]). [`CertWatch`] looks at both files'
//!   inode, size and mtime every [`CERT_POLL`] and reloads when they change: the
//!   certificate of an enrollment, a renewal ([`crate::renew`]) or a re-enrollment is
//!   served from the next connection on, without a restart.
//! - **Failures never take the page away**: a certificate or key that does not load
//!   (unreadable, not PEM, key not matching) is logged as an error once per change of
//!   the files and shown as an alarm on the dashboard and on the system page
//!   ([`HttpsStatus`]); meanwhile the previous certificate stays in use, or, when
//!   there is none, the page stays on plain HTTP. A removed certificate (factory
//!   reset) returns the page to plain HTTP.
//! - **Cookies**: a request that came over TLS carries [`OverTls`]; the login answers
//!   then set the session and login-form cookies with `Secure` ([`Secure`]).
//!
//! Limits: the device certificate names the box serial, not the LAN address the
//! technician types, and chains to HQ's private CA, so a browser warns until HQ's CA
//! is imported and the page is opened by a name the certificate holds. HTTP/1.1 only
//! on this path (as the browser tests use). The handshake and the first byte must
//! arrive within [`HANDSHAKE_TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HqConfig;
use crate::sync::client::DeviceIdentity;

/// How often the certificate files are looked at.
pub const CERT_POLL: Duration = Duration::from_secs(5);
/// How long a connection may take to send its first byte and finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// What the web listener serves, for the dashboard's alarms and the system page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpsStatus {
    /// `true` when TLS connections are served (plain HTTP then only redirects).
    pub https: bool,
    /// Why the page is on plain HTTP, or what it serves, in words.
    pub detail: String,
    /// The served certificate's subject CN and notAfter (ms since the Unix epoch).
    pub certificate: Option<ServedCertificate>,
    /// The last error loading the certificate files (an alarm while it stands).
    pub error: Option<String>,
}

/// The certificate the page is served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServedCertificate {
    /// Its subject's common name (the box serial).
    pub subject: String,
    /// Its notAfter, ms since the Unix epoch.
    pub not_after_ms: i64,
}

impl Default for HttpsStatus {
    fn default() -> Self {
        HttpsStatus::plain("plain HTTP")
    }
}

impl HttpsStatus {
    /// Plain HTTP for `why`.
    pub fn plain(why: &str) -> HttpsStatus {
        HttpsStatus {
            https: false,
            detail: why.to_owned(),
            certificate: None,
            error: None,
        }
    }

    /// The alarm line for the dashboard, if any.
    pub fn alarm(&self) -> Option<String> {
        let error = self.error.as_ref()?;
        Some(if self.https {
            format!("The device certificate does not load ({error}); HTTPS goes on with the previous one")
        } else {
            format!("HTTPS is off: the device certificate does not load ({error}); the page is served over plain HTTP")
        })
    }
}

/// The web listener's [`HttpsStatus`], shared with the pages. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HttpsHandle(Arc<RwLock<HttpsStatus>>);

impl HttpsHandle {
    /// The status now.
    pub fn get(&self) -> HttpsStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, status: HttpsStatus) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

/// Marks a request that came over TLS (an extension the HTTPS path inserts).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Whether the request came over TLS: cookies then get `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct Secure(pub bool);

impl Secure {
    /// `"; Secure"` over TLS, `""` otherwise (to append to a `Set-Cookie` value).
    pub fn attribute(self) -> &'static str {
        if self.0 {
            "; Secure"
        } else {
            ""
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Secure {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Secure(parts.extensions.get::<OverTls>().is_some()))
    }
}

/// Inode, size and mtime of a file: changes when the file is replaced or written.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &std::path::Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Watches `[hq] client_cert` and `client_key` and holds the TLS config built from
/// them (see the module doc for what happens on each change).
#[derive(Debug)]
pub struct CertWatch {
    hq: HqConfig,
    /// How often [`serve`] calls [`CertWatch::check`] ([`CERT_POLL`]).
    poll: Duration,
    /// The stamps of the files the last check looked at (`None`: no certificate).
    seen: Option<(Stamp, Option<Stamp>)>,
    /// The TLS config of the certificate in use, if any.
    config: Option<Arc<rustls::ServerConfig>>,
    status: HttpsStatus,
}

impl CertWatch {
    /// A watch over `hq`'s certificate files; nothing loaded until [`CertWatch::check`].
    pub fn new(hq: HqConfig) -> CertWatch {
        CertWatch {
            hq,
            poll: CERT_POLL,
            seen: None,
            config: None,
            status: HttpsStatus::plain("not enrolled: no device certificate yet"),
        }
    }

    /// The same watch looking every `poll` instead of [`CERT_POLL`] (tests).
    pub fn with_poll(mut self, poll: Duration) -> CertWatch {
        self.poll = poll;
        self
    }

    /// The TLS config to serve new connections with (`None`: plain HTTP).
    pub fn config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.config.clone()
    }

    /// The status after the last check.
    pub fn status(&self) -> &HttpsStatus {
        &self.status
    }

    /// Looks at the files; reloads when they changed. Answers whether the status
    /// changed.
    pub fn check(&mut self) -> bool {
        let before = self.status.clone();
        match stamp(&self.hq.client_cert) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.config.is_some() {
                    tracing::warn!(path = %self.hq.client_cert.display(), "the device certificate is gone; the web page is back on plain HTTP");
                }
                self.seen = None;
                self.config = None;
                self.status = HttpsStatus::plain("not enrolled: no device certificate yet");
            }
            cert => {
                let seen = (cert.unwrap_or_default(), stamp(&self.hq.client_key).ok());
                if self.seen != Some(seen) {
                    self.seen = Some(seen);
                    self.load();
                }
            }
        }
        self.status != before
    }

    fn load(&mut self) {
        match server_config(&self.hq) {
            Ok((config, certificate)) => {
                tracing::info!(
                    subject = %certificate.subject,
                    path = %self.hq.client_cert.display(),
                    "web page served over HTTPS with the device certificate"
                );
                self.config = Some(config);
                self.status = HttpsStatus {
                    https: true,
                    detail: "HTTPS with the device certificate".to_owned(),
                    certificate: Some(certificate),
                    error: None,
                };
            }
            Err(error) => {
                let https = self.config.is_some();
                tracing::error!(
                    %error,
                    "the device certificate does not load; the web page stays on {}",
                    if https { "the previous certificate" } else { "plain HTTP" }
                );
                self.status.error = Some(error);
                if !https {
                    self.status.detail =
                        "plain HTTP: the device certificate does not load".to_owned();
                }
            }
        }
    }
}

/// The rustls server config for the device certificate, and what it names.
fn server_config(hq: &HqConfig) -> Result<(Arc<rustls::ServerConfig>, ServedCertificate), String> {
    let identity = DeviceIdentity::load(hq).map_err(|e| e.to_string())?;
    let der = identity.certificate_der();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
        format!(
            "{}: hq.client_cert: not X.509: {e}",
            hq.client_cert.display()
        )
    })?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let not_after_ms = cert.validity().not_after.timestamp().saturating_mul(1000);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_no_client_auth()
    .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        Arc::new(config),
        ServedCertificate {
            subject,
            not_after_ms,
        },
    ))
}

/// Serves `router` on `listener` with HTTPS once `watch` has a certificate (plain
/// HTTP before, and redirects then), publishing the state to `https`, until
/// `shutdown`; open connections then finish their requests before it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut watch: CertWatch,
    https: HttpsHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    watch.check();
    https.set(watch.status().clone());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + watch.poll, watch.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tells every open connection to finish its request and close.
    let closing = CancellationToken::new();
    // The open connections: awaited at shutdown (their requests finish, as with
    // `axum::serve`), aborted with this task when the daemon's grace time is over.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = tick.tick() => {
                if watch.check() {
                    https.set(watch.status().clone());
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    connections.spawn(connection(
                        stream,
                        remote,
                        watch.config(),
                        router.clone(),
                        closing.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "web api accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    closing.cancel();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One accepted connection: plain HTTP, TLS, or (TLS on, plain bytes) the redirect.
async fn connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    closing: CancellationToken,
) {
    let Some(tls) = tls else {
        return serve_connection(stream, router.map_request(tag(remote, false)), closing).await;
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] != TLS_HANDSHAKE {
        let port = stream.local_addr().map_or(0, |a| a.port());
        let redirect = tower::service_fn(move |request: Request<Incoming>| async move {
            Ok::<_, Infallible>(redirect_to_https(&request, port))
        });
        return serve_connection(stream, redirect, closing).await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            serve_connection(stream, router.map_request(tag(remote, true)), closing).await;
        }
        // Browsers that do not trust HQ's CA close the handshake: not an error here.
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "web TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "web TLS handshake timed out"),
    }
}

/// Tags each request of one connection with its peer address (for the login
/// throttle) and, over TLS, [`OverTls`].
fn tag(
    remote: SocketAddr,
    over_tls: bool,
) -> impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone + Send + 'static {
    move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        if over_tls {
            request.extensions_mut().insert(OverTls);
        }
        request
    }
}

async fn serve_connection<I, S>(io: I, service: S, closing: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "web connection ended with an error");
            }
        }
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// `307` to the same host, this listener's port and the same path over HTTPS.
pub fn redirect_to_https<B>(request: &Request<B>, port: u16) -> axum::response::Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().to_owned());
    let Some(host) = host else {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "This page is served over HTTPS; open it with https://.\n",
            None,
        );
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    plain_response(
        StatusCode::TEMPORARY_REDIRECT,
        &format!("This page is served over HTTPS: {location}\n"),
        Some(&location),
    )
}

fn plain_response(
    status: StatusCode,
    text: &str,
    location: Option<&str>,
) -> axum::response::Response {
    let mut response = Response::new(axum::body::Body::from(text.to_owned()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, l);
    }
    response
}

#[cfg(test)]
mod tests;
