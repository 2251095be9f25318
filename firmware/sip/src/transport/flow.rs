//! Flows: symmetric signalling for phones behind NAT (RFC 5626-lite).

use std::net::SocketAddr;

use super::{via, ConnectionId, TransportKind};

/// The way a message came in: transport, our local address, the peer's source address
/// and, for TCP/TLS, the connection.
///
/// # Symmetric signalling
///
/// A phone behind NAT registers from a private Contact address the box cannot reach.
/// What the box *can* reach is the NAT binding the REGISTER came through: the packet's
/// source address over UDP (from the same local socket, so the NAT sees the reverse of
/// its binding), or the very TCP/TLS connection the phone opened. The registrar keeps
/// the [`Inbound::flow`](super::Inbound::flow) of each successful REGISTER with the
/// binding, and requests to that contact go out with
/// [`Outbound::over_flow`](super::Outbound::over_flow) instead of to the Contact URI.
///
/// This is the core of RFC 5626 ("outbound") without its negotiation: no `reg-id` or
/// `+sip.instance` is required from the phone, and one flow is kept per binding (the
/// latest REGISTER's). For TCP/TLS a flow dies with its connection:
/// [`Transport::flow_alive`](super::Transport::flow_alive) says so, and sending over a
/// dead stream flow fails with [`Error::NoConnection`](super::Error::NoConnection)
/// rather than opening a new connection towards an unreachable address (RFC 5626 5.3);
/// the registrar then drops the binding or waits for the phone's next REGISTER. A UDP
/// flow cannot be observed dying: it lives until the binding expires, so phones
/// behind NAT should re-register (or send keepalives) more often than their NAT
/// forgets UDP bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The transport.
    pub kind: TransportKind,
    /// Our address the message arrived at (for UDP, the socket to send back from).
    pub local: SocketAddr,
    /// The peer's source address as seen by the box (after NAT).
    pub peer: SocketAddr,
    /// The connection, for TCP/TLS.
    pub connection: Option<ConnectionId>,
}

impl Flow {
    /// The route that sends back over this flow.
    pub fn route(&self) -> via::Route {
        via::Route {
            kind: self.kind,
            dest: self.peer,
            local: Some(self.local),
            connection: self.connection,
        }
    }
}
