//! Transport counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters (monotonic except `connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportStats {
    /// Messages handed to the inbound channel.
    pub received: u64,
    /// Messages written to a socket or connection.
    pub sent: u64,
    /// Datagrams over the size limit, and connections closed for an unfinished
    /// message over it.
    pub dropped_oversize: u64,
    /// Messages dropped by the per-source rate limit.
    pub dropped_rate: u64,
    /// UDP messages dropped because the inbound channel was full.
    pub dropped_queue_full: u64,
    /// Outgoing messages refused because a connection's queue was full.
    pub send_backpressure: u64,
    /// Streams closed because their bytes could not be framed.
    pub invalid_frames: u64,
    /// TLS handshakes that failed, either side (bad certificate, wrong name,
    /// protocol error, timeout).
    pub tls_failures: u64,
    /// TCP/TLS connections open now.
    pub connections: u64,
    /// Connections accepted or opened since start.
    pub connections_opened: u64,
    /// Connections refused by the connection limits.
    pub connections_refused: u64,
    /// Connections closed for being idle or for a message that did not complete in
    /// time.
    pub connections_timed_out: u64,
    /// Keepalive pings answered.
    pub keepalive_pongs_sent: u64,
    /// Connections closed because a keepalive ping got no answer.
    pub keepalive_failures: u64,
}

/// The live counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped_oversize: AtomicU64,
    pub(crate) dropped_rate: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) send_backpressure: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_timed_out: AtomicU64,
    pub(crate) keepalive_pongs_sent: AtomicU64,
    pub(crate) keepalive_failures: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            received: get(&self.received),
            sent: get(&self.sent),
            dropped_oversize: get(&self.dropped_oversize),
            dropped_rate: get(&self.dropped_rate),
            dropped_queue_full: get(&self.dropped_queue_full),
            send_backpressure: get(&self.send_backpressure),
            invalid_frames: get(&self.invalid_frames),
            tls_failures: get(&self.tls_failures),
            connections: get(&self.connections),
            connections_opened: get(&self.connections_opened),
            connections_refused: get(&self.connections_refused),
            connections_timed_out: get(&self.connections_timed_out),
            keepalive_pongs_sent: get(&self.keepalive_pongs_sent),
            keepalive_failures: get(&self.keepalive_failures),
        }
    }
}
