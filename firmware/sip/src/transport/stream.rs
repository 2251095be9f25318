//! TCP and TLS: the accept loop and the per-connection task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::endpoint::{Registration, Shared};
use super::stats::bump;
use super::table::{ConnectionInfo, Direction};
use super::{ConnectionId, Inbound, TransportKind};
use crate::message::{frame_stream, Frame, ParseError};

/// Accepts connections until shutdown. Each accept is charged to the source's rate
/// bucket and checked against the connection limits before any byte is read.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: TransportKind,
    local: SocketAddr,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a connection reset before accept: wait a
                // little rather than spin.
                tracing::warn!(%kind, %local, %error, "accept failed");
                tokio::select! {
                    () = shared.token.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if !shared.allow(peer.ip()) {
            continue;
        }
        // Our end as the peer sees it (the listener may be bound to a wildcard).
        let local = tcp.local_addr().unwrap_or(local);
        let info = ConnectionInfo {
            kind,
            peer,
            local,
            direction: Direction::Inbound,
        };
        let id = shared.next_id();
        let (tx, rx) = mpsc::channel(shared.limits.connection_queue);
        let registration = match shared.register(id, info, tx) {
            Ok(registration) => registration,
            Err(reason) => {
                bump(&shared.stats.connections_refused);
                tracing::debug!(%kind, %peer, %reason, "connection refused");
                continue;
            }
        };
        // Nagle would hold back the small messages SIP is made of.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let task_shared = Arc::clone(&shared);
        shared.tracker.spawn(async move {
            match kind {
                TransportKind::Tls => {
                    accept_tls(task_shared, registration, info, id, tcp, rx).await
                }
                _ => run(task_shared, registration, info, id, tcp, rx).await,
            }
        });
    }
}

async fn accept_tls(
    shared: Arc<Shared>,
    registration: Registration,
    info: ConnectionInfo,
    id: ConnectionId,
    tcp: TcpStream,
    rx: mpsc::Receiver<Bytes>,
) {
    let Some(acceptor) = shared.tls_acceptor.clone() else {
        // `TransportConfig::validate` refuses TLS listeners without a certificate.
        return;
    };
    let handshake = tokio::select! {
        () = shared.token.cancelled() => return,
        handshake = tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(tcp)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => {
            run(
                shared,
                registration,
                info,
                id,
                tokio_rustls::TlsStream::Server(stream),
                rx,
            )
            .await
        }
        Ok(Err(error)) => {
            bump(&shared.stats.tls_failures);
            tracing::info!(peer = %info.peer, %error, "TLS handshake from peer failed");
        }
        Err(_) => {
            bump(&shared.stats.tls_failures);
            tracing::info!(peer = %info.peer, "TLS handshake from peer timed out");
        }
    }
}

/// Why a connection task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Shutdown,
    PeerClosed,
    ReadError,
    WriteError,
    WriteTimeout,
    Oversize,
    Invalid,
    Idle,
    PartialTimeout,
    NoPong,
}

/// Serves one connection until it closes; the registration drops (and the table
/// forgets the connection) when this returns.
pub(crate) async fn run<S>(
    shared: Arc<Shared>,
    registration: Registration,
    info: ConnectionInfo,
    id: ConnectionId,
    stream: S,
    rx: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = Connection {
        shared: &shared,
        info,
        id,
        stream,
    }
    .serve(rx)
    .await;
    tracing::debug!(%id, kind = %info.kind, peer = %info.peer, ?reason, "connection closed");
    drop(registration);
}

struct Connection<'a, S> {
    shared: &'a Shared,
    info: ConnectionInfo,
    id: ConnectionId,
    stream: S,
}

/// True when `buf` holds only line ends (a pong, or stray CRLFs between messages).
fn only_line_ends(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == b'\r' || b == b'\n')
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    async fn serve(mut self, mut rx: mpsc::Receiver<Bytes>) -> CloseReason {
        let shared = self.shared;
        let limits = &shared.limits;
        // Pings only on connections this side opened (the trunk's).
        let keepalive = match self.info.direction {
            Direction::Outbound => shared.keepalive,
            Direction::Inbound => None,
        };
        let mut buf = BytesMut::with_capacity(4096);
        let mut last_activity = Instant::now();
        let mut partial_since: Option<Instant> = None;
        let mut next_ping = keepalive.map(|k| Instant::now() + k.interval);
        let mut pong_due: Option<Instant> = None;
        loop {
            let idle_at = last_activity + limits.idle_timeout;
            let partial_at = partial_since.map(|t| t + limits.partial_message_timeout);
            let deadline = [Some(idle_at), partial_at, pong_due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(idle_at);
            let ping_at = next_ping.unwrap_or(idle_at);
            // Leave room for one more read, within the message limit plus a chunk.
            buf.reserve(8192);
            tokio::select! {
                () = shared.token.cancelled() => return CloseReason::Shutdown,
                read = self.stream.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => return CloseReason::PeerClosed,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(id = %self.id, %error, "read failed");
                            return CloseReason::ReadError;
                        }
                    }
                    let now = Instant::now();
                    last_activity = now;
                    if pong_due.take().is_some() && buf.starts_with(b"\r\n") && !buf.starts_with(b"\r\n\r\n") {
                        // The pong to our ping; not the start of a ping from the peer.
                        buf.advance(2);
                    }
                    let framed = match self.drain_frames(&mut buf).await {
                        Ok(framed) => framed,
                        Err(closed) => return closed,
                    };
                    if buf.len() > limits.message.max_message_len {
                        bump(&shared.stats.dropped_oversize);
                        return CloseReason::Oversize;
                    }
                    partial_since = if only_line_ends(&buf) {
                        None
                    } else if framed {
                        Some(now)
                    } else {
                        partial_since.or(Some(now))
                    };
                }
                message = rx.recv() => {
                    // The sender lives in the table until this task ends.
                    let Some(message) = message else { return CloseReason::Shutdown };
                    if let Err(closed) = self.write(&message).await {
                        return closed;
                    }
                    bump(&shared.stats.sent);
                    last_activity = Instant::now();
                }
                () = tokio::time::sleep_until(ping_at), if next_ping.is_some() => {
                    if let Err(closed) = self.write(b"\r\n\r\n").await {
                        return closed;
                    }
                    let now = Instant::now();
                    if let Some(keepalive) = keepalive {
                        pong_due.get_or_insert(now + keepalive.pong_timeout);
                        next_ping = Some(now + keepalive.interval);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if pong_due.is_some_and(|due| due <= now) {
                        bump(&shared.stats.keepalive_failures);
                        tracing::warn!(id = %self.id, peer = %self.info.peer, "no keepalive pong; closing");
                        return CloseReason::NoPong;
                    }
                    if partial_at.is_some_and(|at| at <= now) {
                        bump(&shared.stats.connections_timed_out);
                        return CloseReason::PartialTimeout;
                    }
                    if idle_at <= now {
                        bump(&shared.stats.connections_timed_out);
                        return CloseReason::Idle;
                    }
                }
            }
        }
    }

    /// Hands every complete message at the front of `buf` up and answers pings.
    /// Returns whether a message or ping was taken.
    async fn drain_frames(&mut self, buf: &mut BytesMut) -> Result<bool, CloseReason> {
        let shared = self.shared;
        let mut framed = false;
        loop {
            match frame_stream(buf, &shared.limits.message) {
                Ok(Frame::Incomplete) => return Ok(framed),
                Ok(Frame::KeepAlive { consumed }) => {
                    buf.advance(consumed);
                    framed = true;
                    if shared.allow(self.info.peer.ip()) {
                        self.write(b"\r\n").await?;
                        bump(&shared.stats.keepalive_pongs_sent);
                    }
                }
                Ok(Frame::Message { start, len }) => {
                    buf.advance(start);
                    let bytes = buf.split_to(len).freeze();
                    framed = true;
                    if !shared.allow(self.info.peer.ip()) {
                        continue;
                    }
                    let inbound = Inbound {
                        bytes,
                        peer: self.info.peer,
                        kind: self.info.kind,
                        local: self.info.local,
                        connection: Some(self.id),
                    };
                    // Waiting here pushes back on the peer through TCP flow control.
                    tokio::select! {
                        () = shared.token.cancelled() => return Err(CloseReason::Shutdown),
                        sent = shared.inbound.send(inbound) => {
                            if sent.is_err() {
                                return Err(CloseReason::Shutdown);
                            }
                            bump(&shared.stats.received);
                        }
                    }
                }
                Err(ParseError::TooLarge { len, limit }) => {
                    bump(&shared.stats.dropped_oversize);
                    tracing::info!(id = %self.id, peer = %self.info.peer, len, limit, "message too large; closing");
                    return Err(CloseReason::Oversize);
                }
                Err(error) => {
                    bump(&shared.stats.invalid_frames);
                    tracing::info!(id = %self.id, peer = %self.info.peer, %error, "unframeable stream; closing");
                    return Err(CloseReason::Invalid);
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        let write = async {
            self.stream.write_all(bytes).await?;
            // TLS buffers records until flushed.
            self.stream.flush().await
        };
        match tokio::time::timeout(self.shared.limits.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(id = %self.id, %error, "write failed");
                Err(CloseReason::WriteError)
            }
            Err(_) => {
                tracing::info!(id = %self.id, peer = %self.info.peer, "write timed out; closing");
                Err(CloseReason::WriteTimeout)
            }
        }
    }
}
