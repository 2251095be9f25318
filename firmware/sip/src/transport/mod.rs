//! The IO edge of SIP: UDP, TCP and TLS listeners and connections, bytes in and out
//! with their peer addresses.
//!
//! # How it works
//!
//! [`Transport::bind`] opens one listener per configured [`ListenerConfig`] (port 0 is
//! allowed; [`Transport::local_addrs`] reports what was bound) and returns the handle
//! plus the receiving end of a bounded channel of [`Inbound`] messages, each one whole
//! SIP message with its peer, local address, [`TransportKind`] and, for TCP/TLS, the
//! [`ConnectionId`] it arrived on. Everything leaves through [`Transport::send`] with an
//! [`Outbound`]: a destination, a kind, and optional hints (the connection or local
//! socket to use, the TLS server name, whether a new connection may be opened).
//!
//! - **UDP**: one socket per listener. A datagram longer than the message limit
//!   ([`TransportLimits::message`]) is dropped and counted; a datagram of only
//!   CR/LF (a NAT keepalive some phones send) is absorbed. Sends go out of the listener
//!   socket the hint names (the one a request came in on, so NAT bindings match) or the
//!   first one of the destination's address family.
//! - **TCP / TLS**: each accepted or opened connection is a task that owns its stream,
//!   frames it with [`crate::message::frame_stream`] and writes what the rest of the
//!   stack queues for it. Inbound connections are registered in the connection table
//!   under (kind, peer address), so requests to a peer reuse the connection it opened
//!   (RFC 3261 18.2.2 responses, and requests back to a phone behind NAT). Outbound
//!   connections are opened on demand, keyed by (kind, destination), and reused.
//! - **Keepalive**: a double-CRLF ping from a peer is answered with one CRLF (RFC 5626
//!   3.5.1). On connections this side opened, [`TransportConfig::client_keepalive`]
//!   sends a ping every interval and closes the connection (counted) when nothing comes
//!   back within the pong timeout, so the trunk learns quickly that its flow is dead.
//! - **TLS** ([`tls`]): rustls with the ring provider. Server side (SIPS for local
//!   phones) from a configured certificate and key; client side verifies the peer
//!   against configured roots or the bundled webpki roots, with the trunk's host name
//!   as SNI. A failed handshake fails the send with [`Error::TlsHandshake`] (rustls'
//!   reason in the message) and is counted; it is never silently accepted.
//! - **rport / received** ([`via`]): pure functions that rewrite the top Via of an
//!   incoming request (RFC 3261 18.2.1, RFC 3581) and pick where a response goes
//!   (18.2.2, RFC 3581 section 4).
//! - **Flows** ([`Flow`]): the (kind, local, peer, connection) a request came from, for
//!   the registrar to keep with a contact so requests to a phone behind NAT go back the
//!   way the phone's REGISTER came (RFC 5626-lite, see [`Flow`]).
//!
//! # Limits (all in [`TransportLimits`], defaults in parentheses)
//!
//! - Message size (the message layer's limit, [`crate::message::Limits`]): UDP datagrams
//!   above it are dropped; a stream whose unfinished message grows past it is closed.
//!   Both counted as `dropped_oversize`.
//! - Per-source rate ([`RateConfig`], 200 messages/s, burst 400): a token bucket per
//!   source IP (IPv6 per /64) checked before any parsing, so a flood never reaches the
//!   parser; drops counted as `dropped_rate`. The bucket table is bounded; sources past
//!   the bound share one overflow bucket. The trunk's servers can be exempted at run
//!   time ([`Transport::set_rate_exempt`]). TCP/TLS accepts take a token too.
//! - Connections ([`ConnectionLimits`]): inbound connections in total (1024) and per
//!   source IP (16), outbound connections (64); beyond them an accept is closed at once
//!   and counted as `connections_refused`.
//! - Time: idle connections close after `idle_timeout` (15 min: longer than phones'
//!   keepalive or re-REGISTER interval); an unfinished message must complete within
//!   `partial_message_timeout` (32 s, against slow-drip senders); TLS handshakes within
//!   `tls_handshake_timeout` (10 s); connects within `connect_timeout` (5 s); one write
//!   within `write_timeout` (10 s), else the connection closes.
//! - Queues: each UDP listener asks the kernel for `udp_receive_buffer` bytes of
//!   receive buffer (1 MiB; capped by `net.core.rmem_max`, which the image raises, and
//!   a smaller grant is logged): with Linux's default of 208 KiB a stall of the
//!   endpoint task of some 25 ms at 1,000 calls/s overflowed it, and every datagram
//!   the kernel drops costs a retransmission 500 ms later. The inbound channel holds
//!   `inbound_queue` messages (UDP drops and counts when it is full, streams wait); each connection queues `connection_queue`
//!   outgoing messages, past which [`Transport::send`] fails with
//!   [`Error::Backpressure`] instead of blocking on a peer that stopped reading.
//!
//! Counters are read as a [`TransportStats`] snapshot with [`Transport::stats`].
//!
//! # Modules
//!
//! - [`via`]: top-Via parsing, received/rport rewriting, response routing (pure).
//! - [`rate`]: per-source token buckets (pure, clock injected).
//! - [`table`]: the connection table and its admission policy (pure).
//! - [`tls`]: rustls configurations and PEM loading.
//! - `endpoint`, `udp`, `stream`: the tokio side (sockets, tasks).
//!
//! # Current limits
//!
//! - No DNS: destinations are socket addresses; a response route that needs RFC 3263
//!   section 5 resolution is returned as [`via::ResponseRoute::Resolve`] for the caller.
//! - No SCTP, WebSocket or STUN keepalives over UDP (the trunk uses OPTIONS there), and
//!   no RFC 5626 `reg-id`/`+sip.instance` handling: a [`Flow`] is kept per binding.
//! - TLS client certificates (mutual TLS) are not offered or requested.
//! - UDP messages are not switched to TCP when larger than the path MTU (RFC 3261
//!   18.1.1); that choice is the caller's.
//! - [`Inbound::local`] for UDP is the listener's bound address: a listener bound to a
//!   wildcard address reports the wildcard, not the address the datagram was sent to
//!   (no `IP_PKTINFO`); bind to specific addresses where Via/Contact need them.

mod endpoint;
mod error;
mod flow;
pub mod rate;
mod stats;
mod stream;
pub mod table;
pub mod tls;
mod udp;
pub mod via;

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

pub use endpoint::{
    KeepaliveConfig, ListenerConfig, Transport, TransportConfig, TransportLimits,
    DEFAULT_UDP_RECEIVE_BUFFER,
};
pub use error::{Error, Result};
pub use flow::Flow;
pub use rate::RateConfig;
pub use stats::TransportStats;
pub use table::ConnectionLimits;

/// The transport protocol a message travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// SIP over UDP: one message per datagram.
    Udp,
    /// SIP over TCP: a byte stream framed by Content-Length.
    Tcp,
    /// SIP over TLS over TCP (`sips:` and `;transport=tls`).
    Tls,
}

impl TransportKind {
    /// Whether messages travel over a connection (TCP, TLS) rather than datagrams.
    pub const fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }

    /// The default port when a URI or Via names none (RFC 3261 19.1.2, 18.2.2).
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }

    /// The transport token as written in a Via header (`SIP/2.0/UDP`).
    pub const fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The kind a Via transport token names (case-insensitive), if it is one of ours.
    pub fn from_via_token(token: &str) -> Option<Self> {
        [Self::Udp, Self::Tcp, Self::Tls]
            .into_iter()
            .find(|kind| token.eq_ignore_ascii_case(kind.via_token()))
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Identifies one TCP or TLS connection for its lifetime; never reused by a
/// [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// Wraps a raw number (the transport allocates them; tests and tables use this).
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One whole SIP message as it arrived, not yet parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The message bytes: one datagram, or one framed message from a stream.
    pub bytes: Bytes,
    /// Where it came from (the packet's source address, before any Via processing).
    pub peer: SocketAddr,
    /// What it came over.
    pub kind: TransportKind,
    /// The local address it arrived at (the listener for UDP and accepted
    /// connections, the local end for connections this side opened).
    pub local: SocketAddr,
    /// The connection it arrived on (TCP/TLS only).
    pub connection: Option<ConnectionId>,
}

impl Inbound {
    /// The flow this message came over, to send later requests or responses back the
    /// same way.
    pub fn flow(&self) -> Flow {
        Flow {
            kind: self.kind,
            local: self.local,
            peer: self.peer,
            connection: self.connection,
        }
    }
}

/// Whether [`Transport::send`] may open a new connection for a stream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectPolicy {
    /// Use the hinted connection, else one to the destination, else open one.
    #[default]
    ReuseOrOpen,
    /// Use the hinted connection or an existing one to the destination; fail with
    /// [`Error::NoConnection`] otherwise. Requests to a phone behind NAT use this: a
    /// new connection towards its private address could not reach it (RFC 5626 5.3).
    ReuseOnly,
}

/// Where and how one message leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The whole message.
    pub bytes: Bytes,
    /// The destination address (the peer of the hinted connection, if any).
    pub dest: SocketAddr,
    /// The transport to use.
    pub kind: TransportKind,
    /// For TCP/TLS: the connection to try first (the one a request arrived on, or a
    /// registered flow's).
    pub connection: Option<ConnectionId>,
    /// For UDP: the local listener address to send from (the one a request arrived
    /// on); the first listener of the destination's address family when `None` or
    /// unknown.
    pub local: Option<SocketAddr>,
    /// For TLS connections this side opens: the name to send as SNI and to verify the
    /// server certificate against (the trunk's host name). When `None`, the
    /// certificate must be valid for the destination IP address.
    pub server_name: Option<String>,
    /// Whether a new connection may be opened.
    pub policy: ConnectPolicy,
}

impl Outbound {
    /// A message to `dest` over `kind`, opening a connection if needed.
    pub fn new(kind: TransportKind, dest: SocketAddr, bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            dest,
            kind,
            connection: None,
            local: None,
            server_name: None,
            policy: ConnectPolicy::ReuseOrOpen,
        }
    }

    /// A message back over `flow`: from the same local socket over UDP, over the same
    /// connection for TCP/TLS and never over a new one ([`ConnectPolicy::ReuseOnly`]).
    pub fn over_flow(flow: &Flow, bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            dest: flow.peer,
            kind: flow.kind,
            connection: flow.connection,
            local: Some(flow.local),
            server_name: None,
            policy: ConnectPolicy::ReuseOnly,
        }
    }

    /// A message along a computed [`via::Route`] (for example a response's).
    pub fn along(route: &via::Route, bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            dest: route.dest,
            kind: route.kind,
            connection: route.connection,
            local: route.local,
            server_name: None,
            policy: ConnectPolicy::ReuseOrOpen,
        }
    }

    /// Sets the TLS server name (SNI and certificate check).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets the connection to try first.
    pub fn with_connection(mut self, connection: ConnectionId) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Sets the connect policy.
    pub fn with_policy(mut self, policy: ConnectPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// How a message actually left, as [`Transport::send`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The transport used.
    pub kind: TransportKind,
    /// The address it was sent (or queued) to.
    pub dest: SocketAddr,
    /// The local address it left from.
    pub local: SocketAddr,
    /// The connection it was queued on (TCP/TLS).
    pub connection: Option<ConnectionId>,
}

impl Sent {
    /// The flow the message left over, e.g. to keep for the trunk.
    pub fn flow(&self) -> Flow {
        Flow {
            kind: self.kind,
            local: self.local,
            peer: self.dest,
            connection: self.connection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_via_tokens_and_ports() {
        assert_eq!(
            TransportKind::from_via_token("udp"),
            Some(TransportKind::Udp)
        );
        assert_eq!(
            TransportKind::from_via_token("TLS"),
            Some(TransportKind::Tls)
        );
        assert_eq!(TransportKind::from_via_token("SCTP"), None);
        assert_eq!(TransportKind::Tls.default_port(), 5061);
        assert_eq!(TransportKind::Tcp.default_port(), 5060);
        assert!(TransportKind::Tcp.is_stream());
        assert!(!TransportKind::Udp.is_stream());
        assert_eq!(TransportKind::Tcp.to_string(), "TCP");
    }

    #[test]
    fn outbound_over_a_flow_never_opens_a_connection() {
        let flow = Flow {
            kind: TransportKind::Tcp,
            local: "127.0.0.1:5060".parse().unwrap(),
            peer: "192.0.2.7:40000".parse().unwrap(),
            connection: Some(ConnectionId::new(9)),
        };
        let out = Outbound::over_flow(&flow, &b"x"[..]);
        assert_eq!(out.policy, ConnectPolicy::ReuseOnly);
        assert_eq!(out.connection, Some(ConnectionId::new(9)));
        assert_eq!(out.dest, flow.peer);
        assert_eq!(out.local, Some(flow.local));
    }
}
