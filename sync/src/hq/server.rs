//! The listeners: TLS (and mutual TLS) over tokio-rustls, HTTP/1.1 over hyper, with
//! axum routers, served by hand so that each connection's peer identity reaches the
//! handlers as a request extension ([`PeerIdentity`]).
//!
//! One task accepts; each connection gets its own task holding a permit of a
//! [`Semaphore`] (the connection limit). On shutdown the accept loop stops and every
//! connection is asked to finish its current request and close (graceful shutdown);
//! long-polls end early with an empty page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::hq::pki;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Subject CN of the client certificate: the box id.
    pub box_id: String,
    /// sha256 of the client certificate's DER.
    pub fingerprint: String,
    /// Set by a handler when this connection should end after the current answer
    /// (its certificate is being replaced by a renewal): the answer then carries
    /// `Connection: close`, and the box's next request opens a new connection with
    /// the certificate it holds by then.
    pub close_after: Arc<AtomicBool>,
}

impl PeerIdentity {
    /// Asks for the connection to end after the current answer.
    pub fn close_connection(&self) {
        self.close_after.store(true, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `shutdown`. With `tls`, connections are TLS;
/// with `require_peer`, a connection without a verified client certificate whose
/// subject has a CN gets `anonymous` instead of `router` (the enrollment route of
/// [`crate::hq::enroll`]), or is dropped when there is none; the others carry a
/// [`PeerIdentity`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    require_peer: bool,
    router: Router,
    anonymous: Option<Router>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer_addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (tls, router, anonymous, shutdown) = (
            tls.clone(),
            router.clone(),
            anonymous.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(TokioIo::new(tcp), router, shutdown).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer_addr, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(peer = %peer_addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|der| {
                            pki::subject_cn(der).map(|box_id| PeerIdentity {
                                box_id,
                                fingerprint: pki::fingerprint(der),
                                close_after: Arc::default(),
                            })
                        });
                    let router = match (identity, require_peer, anonymous) {
                        (Some(id), _, _) => {
                            let close = Arc::clone(&id.close_after);
                            router
                                .layer(axum::Extension(id))
                                .layer(axum::middleware::map_response(
                                    move |mut resp: axum::response::Response| {
                                        let close = close.load(Ordering::Relaxed);
                                        async move {
                                            if close {
                                                resp.headers_mut().insert(
                                                    axum::http::header::CONNECTION,
                                                    axum::http::HeaderValue::from_static("close"),
                                                );
                                            }
                                            resp
                                        }
                                    },
                                ))
                        }
                        (None, false, _) => router,
                        (None, true, Some(anonymous)) => anonymous,
                        (None, true, None) => {
                            tracing::info!(peer = %peer_addr, "client certificate without a CN");
                            return;
                        }
                    };
                    serve_conn(TokioIo::new(stream), router, shutdown).await;
                }
            }
        });
    }
}

async fn serve_conn<S>(io: TokioIo<S>, router: Router, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
