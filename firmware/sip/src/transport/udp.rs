//! The UDP receive loop: one task per listener socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;

use super::endpoint::{Shared, MAX_UDP_PAYLOAD};
use super::stats::bump;
use super::{Inbound, TransportKind};

/// Receives datagrams until shutdown: size limit, rate limit, CRLF keepalives
/// absorbed, then onto the inbound channel (dropped and counted when it is full:
/// over UDP the sender retransmits).
pub(crate) async fn recv_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, local: SocketAddr) {
    let max = shared.limits.message.max_message_len;
    // One byte more than any acceptable datagram, so a longer one shows as too long
    // instead of being silently truncated by the kernel.
    let mut buf = vec![0u8; max.min(MAX_UDP_PAYLOAD) + 1];
    loop {
        let received = tokio::select! {
            () = shared.token.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; other
                // errors are transient (buffers). Neither ends the listener.
                tracing::debug!(%local, %error, "UDP receive error");
                tokio::select! {
                    () = shared.token.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        if len > max {
            bump(&shared.stats.dropped_oversize);
            tracing::debug!(%peer, len, max, "oversized UDP datagram dropped");
            continue;
        }
        if !shared.allow(peer.ip()) {
            continue;
        }
        let datagram = &buf[..len];
        if datagram.iter().all(|&b| b == b'\r' || b == b'\n') {
            // Empty or CRLF-only: a NAT keepalive, not a message.
            continue;
        }
        let inbound = Inbound {
            bytes: Bytes::copy_from_slice(datagram),
            peer,
            kind: TransportKind::Udp,
            local,
            connection: None,
        };
        match shared.inbound.try_send(inbound) {
            Ok(()) => bump(&shared.stats.received),
            Err(TrySendError::Full(_)) => bump(&shared.stats.dropped_queue_full),
            Err(TrySendError::Closed(_)) => return,
        }
    }
}
