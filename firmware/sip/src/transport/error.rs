//! Transport errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::rate::RateConfigError;
use super::table::Refusal;
use super::{ConnectionId, TransportKind};

/// A transport result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong binding, configuring or sending.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding the {kind} listener on {addr}: {source}")]
    Bind {
        /// The listener's kind.
        kind: TransportKind,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A configuration value is unusable.
    #[error("transport configuration: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rate limit settings are unusable.
    #[error("transport configuration: {0}")]
    InvalidRate(#[from] RateConfigError),
    /// A TLS listener is configured without a server certificate.
    #[error("the TLS listener on {addr} needs a server certificate (tls_server)")]
    TlsServerMissing {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// A TLS connection is needed but no client configuration was given.
    #[error("opening TLS to {dest} needs a client TLS configuration (tls_client)")]
    TlsClientMissing {
        /// The destination.
        dest: SocketAddr,
    },
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("{name:?} is not a valid TLS server name")]
    InvalidServerName {
        /// The name given.
        name: String,
    },
    /// No UDP listener can reach the destination's address family.
    #[error("no UDP listener can send to {dest}")]
    NoUdpSocket {
        /// The destination.
        dest: SocketAddr,
    },
    /// The message is larger than the limit for its transport.
    #[error("message of {len} bytes to {dest} exceeds the {kind} limit of {limit} bytes")]
    TooLarge {
        /// The transport.
        kind: TransportKind,
        /// The destination.
        dest: SocketAddr,
        /// The message length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The UDP send failed.
    #[error("sending UDP to {dest}: {source}")]
    UdpSend {
        /// The destination.
        dest: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TCP connect failed.
    #[error("connecting {kind} to {dest}: {source}")]
    Connect {
        /// The transport.
        kind: TransportKind,
        /// The destination.
        dest: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TCP connect or TLS handshake took too long.
    #[error("connecting {kind} to {dest}: no answer within {after:?}")]
    ConnectTimeout {
        /// The transport.
        kind: TransportKind,
        /// The destination.
        dest: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The TLS handshake failed: the certificate did not verify (unknown issuer, wrong
    /// name, expired) or the peer spoke no acceptable TLS.
    #[error("TLS handshake with {dest} (server name {server_name}) failed: {source}")]
    TlsHandshake {
        /// The destination.
        dest: SocketAddr,
        /// The name the certificate was checked against.
        server_name: String,
        /// rustls' reason, wrapped in an IO error by tokio-rustls.
        source: std::io::Error,
    },
    /// The connection limits refuse another connection.
    #[error("not opening {kind} to {dest}: {reason}")]
    Refused {
        /// The transport.
        kind: TransportKind,
        /// The destination.
        dest: SocketAddr,
        /// The limit hit.
        reason: Refusal,
    },
    /// The flow's connection is gone and the policy forbids a new one.
    #[error("no open {kind} connection to {dest}{}", hint.map(|id| format!(" ({id} is closed)")).unwrap_or_default())]
    NoConnection {
        /// The transport.
        kind: TransportKind,
        /// The destination.
        dest: SocketAddr,
        /// The connection that was asked for.
        hint: Option<ConnectionId>,
    },
    /// The connection's outgoing queue is full (the peer stopped reading).
    #[error("{connection} to {dest} has a full send queue; message dropped")]
    Backpressure {
        /// The connection.
        connection: ConnectionId,
        /// The destination.
        dest: SocketAddr,
    },
    /// The transport has been shut down.
    #[error("the transport is shut down")]
    Shutdown,
}
