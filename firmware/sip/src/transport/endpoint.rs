//! The [`Transport`] handle: configuration, listeners, sending, counters.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::rate::{RateConfig, RateLimiter};
use super::stats::{bump, Stats};
use super::table::{ConnectionInfo, ConnectionLimits, ConnectionTable, Direction, Refusal};
use super::{
    stream, udp, ConnectPolicy, ConnectionId, Error, Flow, Inbound, Outbound, Result, Sent,
    TransportKind, TransportStats,
};
use crate::message::Limits;

/// The largest UDP payload over IPv4 (65,535 minus IP and UDP headers).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;

/// Default receive buffer of a UDP listener ([`TransportLimits::udp_receive_buffer`]):
/// 1 MiB, about 700 loopback datagrams of a typical INVITE's size as the kernel
/// accounts them, i.e. some 100 ms of a 1,000 calls/s load (six messages in per call).
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 1 << 20;

/// Asks for `wanted` bytes of receive buffer on a UDP listener. The kernel caps the
/// request at `net.core.rmem_max`; a smaller result is logged (once per socket, at
/// bind) with the setting to raise, and the socket is used as it is.
fn size_receive_buffer(socket: &UdpSocket, local: SocketAddr, wanted: usize) {
    if wanted == 0 {
        return;
    }
    let sock = socket2::SockRef::from(socket);
    if let Err(error) = sock.set_recv_buffer_size(wanted) {
        tracing::warn!(%local, wanted, %error, "UDP receive buffer not set");
        return;
    }
    // Linux doubles the request (bookkeeping overhead) and reports the doubled value.
    match sock.recv_buffer_size() {
        Ok(got) if got / 2 < wanted => tracing::warn!(
            %local,
            wanted,
            got = got / 2,
            "UDP receive buffer smaller than asked for: raise net.core.rmem_max"
        ),
        Ok(got) => tracing::debug!(%local, bytes = got / 2, "UDP receive buffer"),
        Err(error) => tracing::debug!(%local, %error, "UDP receive buffer not read back"),
    }
}

/// One listener to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// UDP, TCP or TLS.
    pub kind: TransportKind,
    /// The address to bind (port 0 picks a free port; see [`Transport::local_addrs`]).
    pub addr: SocketAddr,
}

/// Client-side keepalive on connections this side opens (the trunk): a CRLFCRLF ping
/// every `interval`; no bytes back within `pong_timeout` closes the connection (RFC
/// 5626 4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for the pong.
    pub pong_timeout: Duration,
}

impl Default for KeepaliveConfig {
    /// A ping every 30 s (under common NAT TCP timeouts), 10 s for the pong (RFC 5626).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// Size, rate, connection and time limits (see the module docs for the defaults and
/// why).
#[derive(Debug, Clone, PartialEq)]
pub struct TransportLimits {
    /// The message layer's limits; `max_message_len` caps UDP datagrams (up to
    /// 65,507 bytes) and unfinished messages on streams.
    pub message: Limits,
    /// Connection table limits.
    pub connections: ConnectionLimits,
    /// Per-source message rate.
    pub rate: RateConfig,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A started message must be complete within this long.
    pub partial_message_timeout: Duration,
    /// TLS handshakes must finish within this long.
    pub tls_handshake_timeout: Duration,
    /// Outgoing TCP connects must finish within this long.
    pub connect_timeout: Duration,
    /// One message write must finish within this long.
    pub write_timeout: Duration,
    /// Capacity of the inbound channel.
    pub inbound_queue: usize,
    /// Receive buffer asked for on each UDP listener socket (`SO_RCVBUF`), in bytes;
    /// 0 leaves the kernel's default. See the module docs.
    pub udp_receive_buffer: usize,
    /// Outgoing messages queued per connection.
    pub connection_queue: usize,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            message: Limits::default(),
            connections: ConnectionLimits::default(),
            rate: RateConfig::default(),
            idle_timeout: Duration::from_secs(15 * 60),
            partial_message_timeout: Duration::from_secs(32),
            tls_handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            inbound_queue: 1024,
            udp_receive_buffer: DEFAULT_UDP_RECEIVE_BUFFER,
            connection_queue: 64,
        }
    }
}

/// Everything [`Transport::bind`] needs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Listeners to bind.
    pub listeners: Vec<ListenerConfig>,
    /// Server certificate for TLS listeners ([`super::tls::server_config`]).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Verification for TLS connections this side opens
    /// ([`super::tls::client_config`]); without it, sending over TLS to a peer
    /// without an open connection fails.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// Keepalive pings on connections this side opens; `None` sends none.
    pub client_keepalive: Option<KeepaliveConfig>,
    /// Limits.
    pub limits: TransportLimits,
}

impl TransportConfig {
    /// A configuration with these listeners, no TLS, no client keepalive and the
    /// default limits.
    pub fn new(listeners: Vec<ListenerConfig>) -> Self {
        Self {
            listeners,
            tls_server: None,
            tls_client: None,
            client_keepalive: None,
            limits: TransportLimits::default(),
        }
    }

    /// Checks the configuration without binding anything.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        let limits = &self.limits;
        if limits.message.max_message_len == 0 {
            return invalid("limits.message.max_message_len", "must be at least 1");
        }
        if limits.connections.max_inbound_per_ip == 0 && limits.connections.max_inbound > 0 {
            return invalid(
                "limits.connections.max_inbound_per_ip",
                "must be at least 1 when inbound connections are allowed",
            );
        }
        limits.rate.validate()?;
        for (field, value) in [
            ("limits.idle_timeout", limits.idle_timeout),
            (
                "limits.partial_message_timeout",
                limits.partial_message_timeout,
            ),
            ("limits.tls_handshake_timeout", limits.tls_handshake_timeout),
            ("limits.connect_timeout", limits.connect_timeout),
            ("limits.write_timeout", limits.write_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be longer than zero");
            }
        }
        if limits.inbound_queue == 0 {
            return invalid("limits.inbound_queue", "must be at least 1");
        }
        if limits.connection_queue == 0 {
            return invalid("limits.connection_queue", "must be at least 1");
        }
        if let Some(keepalive) = self.client_keepalive {
            if keepalive.interval.is_zero() {
                return invalid("client_keepalive.interval", "must be longer than zero");
            }
            if keepalive.pong_timeout.is_zero() || keepalive.pong_timeout >= keepalive.interval {
                return invalid(
                    "client_keepalive.pong_timeout",
                    "must be longer than zero and shorter than the interval",
                );
            }
        }
        for listener in &self.listeners {
            if listener.kind == TransportKind::Tls && self.tls_server.is_none() {
                return Err(Error::TlsServerMissing {
                    addr: listener.addr,
                });
            }
        }
        Ok(())
    }
}

/// The per-connection handle kept in the table.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Bytes>,
}

/// One async lock per (kind, destination) being dialled, so concurrent sends to a
/// peer without a connection open one connection, not one each.
type DialGates = HashMap<(TransportKind, SocketAddr), Arc<tokio::sync::Mutex<()>>>;

/// State shared by the handle and every task.
pub(crate) struct Shared {
    pub(crate) limits: TransportLimits,
    pub(crate) keepalive: Option<KeepaliveConfig>,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    listeners: Vec<(TransportKind, SocketAddr)>,
    table: Mutex<ConnectionTable<ConnHandle>>,
    dialing: Mutex<DialGates>,
    rate: Mutex<RateLimiter>,
    pub(crate) stats: Stats,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) tls_acceptor: Option<TlsAcceptor>,
    tls_connector: Option<TlsConnector>,
    next_id: AtomicU64,
    pub(crate) token: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// Locks a mutex, recovering the data if a holder panicked (every critical section
/// here leaves the data consistent at each step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Takes one message from `ip`'s rate bucket.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        let allowed = lock(&self.rate).check(ip, Instant::now());
        if !allowed {
            bump(&self.stats.dropped_rate);
        }
        allowed
    }

    pub(crate) fn next_id(&self) -> ConnectionId {
        ConnectionId::new(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a connection; on success the returned guard unregisters it when
    /// dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: ConnectionId,
        info: ConnectionInfo,
        tx: mpsc::Sender<Bytes>,
    ) -> std::result::Result<Registration, Refusal> {
        lock(&self.table).insert(id, info, ConnHandle { tx })?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        bump(&self.stats.connections_opened);
        Ok(Registration {
            shared: Arc::clone(self),
            id,
        })
    }

    /// Queues `bytes` on connection `id` if it is open and of `kind`.
    fn queue_on(
        &self,
        id: ConnectionId,
        kind: TransportKind,
        bytes: &Bytes,
    ) -> Result<Option<Sent>> {
        let table = lock(&self.table);
        let Some((info, handle)) = table.get(id) else {
            return Ok(None);
        };
        if info.kind != kind {
            return Ok(None);
        }
        match handle.tx.try_send(bytes.clone()) {
            Ok(()) => Ok(Some(Sent {
                kind,
                dest: info.peer,
                local: info.local,
                connection: Some(id),
            })),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.stats.send_backpressure);
                Err(Error::Backpressure {
                    connection: id,
                    dest: info.peer,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(None),
        }
    }
}

/// Unregisters a connection from the table when its task ends.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    id: ConnectionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if lock(&self.shared.table).remove(self.id).is_some() {
            self.shared
                .stats
                .connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The transport layer: listeners, connections and the send path.
///
/// Cheap to clone; all clones share the sockets. The background tasks stop when the
/// shutdown token given to [`Transport::bind`] is cancelled, when
/// [`Transport::shutdown`] is called, or when the last clone is dropped.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    /// Cancels the tasks when the last clone goes away (the tasks hold `shared`, so
    /// its own drop could never be the signal).
    _owner: Arc<DropGuard>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("listeners", &self.shared.listeners)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the configured listeners and starts their tasks. Returns the handle and
    /// the channel every received message arrives on.
    pub async fn bind(
        config: TransportConfig,
        shutdown: CancellationToken,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>)> {
        config.validate()?;
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let bind_err = |source| Error::Bind {
                kind: listener.kind,
                addr: listener.addr,
                source,
            };
            match listener.kind {
                TransportKind::Udp => {
                    let socket = UdpSocket::bind(listener.addr).await.map_err(bind_err)?;
                    let local = socket.local_addr().map_err(bind_err)?;
                    size_receive_buffer(&socket, local, config.limits.udp_receive_buffer);
                    listeners.push((TransportKind::Udp, local));
                    udp.push((local, Arc::new(socket)));
                }
                kind => {
                    let socket = TcpListener::bind(listener.addr).await.map_err(bind_err)?;
                    let local = socket.local_addr().map_err(bind_err)?;
                    listeners.push((kind, local));
                    tcp.push((kind, local, socket));
                }
            }
        }
        let (inbound, rx) = mpsc::channel(config.limits.inbound_queue);
        let token = shutdown.child_token();
        let shared = Arc::new(Shared {
            keepalive: config.client_keepalive,
            udp: udp.clone(),
            listeners,
            table: Mutex::new(ConnectionTable::new(config.limits.connections)),
            dialing: Mutex::new(HashMap::new()),
            rate: Mutex::new(RateLimiter::new(config.limits.rate)),
            stats: Stats::default(),
            inbound,
            tls_acceptor: config.tls_server.map(TlsAcceptor::from),
            tls_connector: config.tls_client.map(TlsConnector::from),
            next_id: AtomicU64::new(1),
            token: token.clone(),
            tracker: TaskTracker::new(),
            limits: config.limits,
        });
        for (local, socket) in udp {
            shared
                .tracker
                .spawn(udp::recv_loop(Arc::clone(&shared), socket, local));
        }
        for (kind, local, listener) in tcp {
            shared.tracker.spawn(stream::accept_loop(
                Arc::clone(&shared),
                listener,
                kind,
                local,
            ));
        }
        for (kind, local) in &shared.listeners {
            tracing::info!(%kind, %local, "SIP listener bound");
        }
        let transport = Transport {
            shared,
            _owner: Arc::new(token.drop_guard()),
        };
        Ok((transport, rx))
    }

    /// The receive buffer the kernel gave the UDP listener bound at `local` (what
    /// `SO_RCVBUF` reads back: Linux reports twice the usable size), if there is one.
    pub fn udp_receive_buffer(&self, local: SocketAddr) -> Option<usize> {
        let (_, socket) = self.shared.udp.iter().find(|(addr, _)| *addr == local)?;
        socket2::SockRef::from(socket.as_ref())
            .recv_buffer_size()
            .ok()
    }

    /// Every bound listener with its actual address.
    pub fn local_addrs(&self) -> Vec<(TransportKind, SocketAddr)> {
        self.shared.listeners.clone()
    }

    /// The first bound listener of `kind`.
    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.shared
            .listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, addr)| *addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.stats.snapshot()
    }

    /// Exempts these source addresses from the per-source rate limit (replacing any
    /// earlier set): the trunk's servers, whose traffic is many calls' worth. Call
    /// again when the trunk's addresses are re-resolved.
    pub fn set_rate_exempt(&self, addresses: impl IntoIterator<Item = IpAddr>) {
        lock(&self.shared.rate).set_exempt(addresses);
    }

    /// Whether `flow` can still carry messages: a TCP/TLS flow while its connection is
    /// open; a UDP flow always (its death cannot be observed).
    pub fn flow_alive(&self, flow: &Flow) -> bool {
        match flow.connection {
            Some(id) if flow.kind.is_stream() => lock(&self.shared.table)
                .get(id)
                .is_some_and(|(info, _)| info.kind == flow.kind),
            _ => !flow.kind.is_stream(),
        }
    }

    /// Stops every task and closes every socket and connection; returns when they are
    /// gone.
    pub async fn shutdown(&self) {
        self.shared.token.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    /// Sends one message (see [`Outbound`] for the hints).
    ///
    /// UDP sends directly. For TCP/TLS the message is queued on the hinted connection
    /// if it is open, else on the connection serving (kind, dest), else (under
    /// [`ConnectPolicy::ReuseOrOpen`]) on a new connection, connected (and TLS
    /// verified) before this returns. A full connection queue fails with
    /// [`Error::Backpressure`] rather than waiting.
    pub async fn send(&self, out: Outbound) -> Result<Sent> {
        if self.shared.token.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let limit = match out.kind {
            TransportKind::Udp => self
                .shared
                .limits
                .message
                .max_message_len
                .min(MAX_UDP_PAYLOAD),
            _ => self.shared.limits.message.max_message_len,
        };
        if out.bytes.len() > limit {
            return Err(Error::TooLarge {
                kind: out.kind,
                dest: out.dest,
                len: out.bytes.len(),
                limit,
            });
        }
        match out.kind {
            TransportKind::Udp => self.send_udp(out).await,
            _ => self.send_stream(out).await,
        }
    }

    async fn send_udp(&self, out: Outbound) -> Result<Sent> {
        let same_family = |local: &SocketAddr| local.is_ipv4() == out.dest.is_ipv4();
        let socket = out
            .local
            .and_then(|hint| self.shared.udp.iter().find(|(local, _)| *local == hint))
            .filter(|(local, _)| same_family(local))
            .or_else(|| self.shared.udp.iter().find(|(local, _)| same_family(local)))
            .ok_or(Error::NoUdpSocket { dest: out.dest })?;
        let (local, socket) = socket;
        socket
            .send_to(&out.bytes, out.dest)
            .await
            .map_err(|source| Error::UdpSend {
                dest: out.dest,
                source,
            })?;
        bump(&self.shared.stats.sent);
        Ok(Sent {
            kind: TransportKind::Udp,
            dest: out.dest,
            local: *local,
            connection: None,
        })
    }

    async fn send_stream(&self, out: Outbound) -> Result<Sent> {
        let kind = out.kind;
        if let Some(id) = out.connection {
            if let Some(sent) = self.shared.queue_on(id, kind, &out.bytes)? {
                return Ok(sent);
            }
        }
        let existing = lock(&self.shared.table).lookup(kind, out.dest);
        if let Some(id) = existing {
            if let Some(sent) = self.shared.queue_on(id, kind, &out.bytes)? {
                return Ok(sent);
            }
        }
        if out.policy == ConnectPolicy::ReuseOnly {
            return Err(Error::NoConnection {
                kind,
                dest: out.dest,
                hint: out.connection,
            });
        }
        let id = self
            .dial(kind, out.dest, out.server_name.as_deref())
            .await?;
        self.shared
            .queue_on(id, kind, &out.bytes)?
            .ok_or(Error::NoConnection {
                kind,
                dest: out.dest,
                hint: Some(id),
            })
    }

    /// Opens (or, when a concurrent send just did, finds) a connection to `dest`.
    async fn dial(
        &self,
        kind: TransportKind,
        dest: SocketAddr,
        server_name: Option<&str>,
    ) -> Result<ConnectionId> {
        let key = (kind, dest);
        let gate = Arc::clone(lock(&self.shared.dialing).entry(key).or_default());
        let result = {
            let _turn = gate.lock().await;
            let existing = lock(&self.shared.table).lookup(kind, dest);
            match existing {
                Some(id) => Ok(id),
                None => self.connect(kind, dest, server_name).await,
            }
        };
        let mut dialing = lock(&self.shared.dialing);
        if dialing.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            dialing.remove(&key);
        }
        result
    }

    async fn connect(
        &self,
        kind: TransportKind,
        dest: SocketAddr,
        server_name: Option<&str>,
    ) -> Result<ConnectionId> {
        let shared = &self.shared;
        let refused = |reason| {
            bump(&shared.stats.connections_refused);
            Error::Refused { kind, dest, reason }
        };
        lock(&shared.table)
            .admit(Direction::Outbound, dest.ip())
            .map_err(refused)?;
        // Everything that can fail without the network is checked before connecting.
        let tls = match kind {
            TransportKind::Tls => {
                let connector = shared
                    .tls_connector
                    .clone()
                    .ok_or(Error::TlsClientMissing { dest })?;
                let name = match server_name {
                    Some(name) => ServerName::try_from(name.to_owned()).map_err(|_| {
                        Error::InvalidServerName {
                            name: name.to_owned(),
                        }
                    })?,
                    None => ServerName::IpAddress(dest.ip().into()),
                };
                Some((connector, name))
            }
            _ => None,
        };
        let limits = &shared.limits;
        let tcp = tokio::time::timeout(limits.connect_timeout, TcpStream::connect(dest))
            .await
            .map_err(|_| Error::ConnectTimeout {
                kind,
                dest,
                after: limits.connect_timeout,
            })?
            .map_err(|source| Error::Connect { kind, dest, source })?;
        let io_err = |source| Error::Connect { kind, dest, source };
        tcp.set_nodelay(true).map_err(io_err)?;
        let local = tcp.local_addr().map_err(io_err)?;
        let info = ConnectionInfo {
            kind,
            peer: dest,
            local,
            direction: Direction::Outbound,
        };
        let id = shared.next_id();
        let (tx, rx) = mpsc::channel(limits.connection_queue);
        match tls {
            None => {
                let registration = shared.register(id, info, tx).map_err(refused)?;
                tracing::debug!(%id, %dest, "TCP connection opened");
                shared.tracker.spawn(stream::run(
                    Arc::clone(shared),
                    registration,
                    info,
                    id,
                    tcp,
                    rx,
                ));
            }
            Some((connector, name)) => {
                let shown = name.to_str().into_owned();
                let handshake = tokio::time::timeout(
                    limits.tls_handshake_timeout,
                    connector.connect(name, tcp),
                )
                .await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(source)) => {
                        bump(&shared.stats.tls_failures);
                        tracing::warn!(%dest, server_name = %shown, error = %source, "TLS handshake failed");
                        return Err(Error::TlsHandshake {
                            dest,
                            server_name: shown,
                            source,
                        });
                    }
                    Err(_) => {
                        bump(&shared.stats.tls_failures);
                        return Err(Error::ConnectTimeout {
                            kind,
                            dest,
                            after: limits.tls_handshake_timeout,
                        });
                    }
                };
                let registration = shared.register(id, info, tx).map_err(refused)?;
                tracing::debug!(%id, %dest, server_name = %shown, "TLS connection opened");
                shared.tracker.spawn(stream::run(
                    Arc::clone(shared),
                    registration,
                    info,
                    id,
                    tokio_rustls::TlsStream::Client(stream),
                    rx,
                ));
            }
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig::new(vec![ListenerConfig {
            kind: TransportKind::Udp,
            addr: "127.0.0.1:0".parse().unwrap(),
        }])
    }

    #[test]
    fn defaults_validate() {
        assert!(config().validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = config();
        c.limits.idle_timeout = Duration::ZERO;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("limits.idle_timeout"), "{err}");

        let mut c = config();
        c.client_keepalive = Some(KeepaliveConfig {
            interval: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(5),
        });
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("pong_timeout"), "{err}");

        let mut c = config();
        c.limits.rate.burst = 0;
        assert!(matches!(c.validate(), Err(Error::InvalidRate(_))));

        let mut c = config();
        c.limits.connection_queue = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("connection_queue"));

        let mut c = config();
        c.listeners.push(ListenerConfig {
            kind: TransportKind::Tls,
            addr: "127.0.0.1:0".parse().unwrap(),
        });
        assert!(matches!(c.validate(), Err(Error::TlsServerMissing { .. })));
    }
}
