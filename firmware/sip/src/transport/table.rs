//! The connection table: which TCP/TLS connections are open, which one serves a
//! (kind, peer address), and whether another may be admitted.
//!
//! Inbound connections (accepted from peers) count against a total and a per-source-IP
//! limit; outbound connections (opened by this side, e.g. to the trunk) against their
//! own limit, so peers filling the inbound slots can never keep the box from reaching
//! its trunk. Pure and generic over the per-connection handle, so the policy is tested
//! without sockets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::{ConnectionId, TransportKind};

/// Connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most inbound connections open at once.
    pub max_inbound: usize,
    /// Most inbound connections from one source IP.
    pub max_inbound_per_ip: usize,
    /// Most connections this side has opened.
    pub max_outbound: usize,
}

impl Default for ConnectionLimits {
    /// 1024 inbound, 16 per source IP (several phones behind one NAT each hold one),
    /// 64 outbound.
    fn default() -> Self {
        Self {
            max_inbound: 1024,
            max_inbound_per_ip: 16,
            max_outbound: 64,
        }
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A peer connected to one of our listeners.
    Inbound,
    /// This side connected to the peer.
    Outbound,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The inbound total is reached.
    #[error("{limit} inbound connections are open")]
    InboundTotal {
        /// The limit.
        limit: usize,
    },
    /// The source IP holds its share.
    #[error("{ip} already holds {limit} connections")]
    PerIp {
        /// The source.
        ip: IpAddr,
        /// The limit.
        limit: usize,
    },
    /// The outbound total is reached.
    #[error("{limit} outbound connections are open")]
    OutboundTotal {
        /// The limit.
        limit: usize,
    },
    /// The id is already in the table.
    #[error("connection id {0} is already registered")]
    DuplicateId(ConnectionId),
}

/// What the table knows about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// TCP or TLS.
    pub kind: TransportKind,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our end.
    pub local: SocketAddr,
    /// Who opened it.
    pub direction: Direction,
}

#[derive(Debug)]
struct Entry<H> {
    info: ConnectionInfo,
    handle: H,
}

/// Open connections and their admission policy.
#[derive(Debug)]
pub struct ConnectionTable<H> {
    limits: ConnectionLimits,
    entries: HashMap<ConnectionId, Entry<H>>,
    by_peer: HashMap<(TransportKind, SocketAddr), ConnectionId>,
    inbound_per_ip: HashMap<IpAddr, usize>,
    inbound: usize,
    outbound: usize,
}

impl<H> ConnectionTable<H> {
    /// An empty table.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            by_peer: HashMap::new(),
            inbound_per_ip: HashMap::new(),
            inbound: 0,
            outbound: 0,
        }
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a connection from/to `peer` in `direction` would be admitted now.
    pub fn admit(&self, direction: Direction, peer: IpAddr) -> Result<(), Refusal> {
        match direction {
            Direction::Inbound => {
                if self.inbound >= self.limits.max_inbound {
                    return Err(Refusal::InboundTotal {
                        limit: self.limits.max_inbound,
                    });
                }
                let ip = peer.to_canonical();
                if self.inbound_per_ip.get(&ip).copied().unwrap_or(0)
                    >= self.limits.max_inbound_per_ip
                {
                    return Err(Refusal::PerIp {
                        ip,
                        limit: self.limits.max_inbound_per_ip,
                    });
                }
            }
            Direction::Outbound => {
                if self.outbound >= self.limits.max_outbound {
                    return Err(Refusal::OutboundTotal {
                        limit: self.limits.max_outbound,
                    });
                }
            }
        }
        Ok(())
    }

    /// Registers a connection if the limits allow it. It becomes the connection for
    /// its (kind, peer) address.
    pub fn insert(
        &mut self,
        id: ConnectionId,
        info: ConnectionInfo,
        handle: H,
    ) -> Result<(), Refusal> {
        if self.entries.contains_key(&id) {
            return Err(Refusal::DuplicateId(id));
        }
        self.admit(info.direction, info.peer.ip())?;
        match info.direction {
            Direction::Inbound => {
                self.inbound += 1;
                *self
                    .inbound_per_ip
                    .entry(info.peer.ip().to_canonical())
                    .or_insert(0) += 1;
            }
            Direction::Outbound => self.outbound += 1,
        }
        self.by_peer.insert((info.kind, info.peer), id);
        self.entries.insert(id, Entry { info, handle });
        Ok(())
    }

    /// Removes a connection, returning what it held.
    pub fn remove(&mut self, id: ConnectionId) -> Option<(ConnectionInfo, H)> {
        let entry = self.entries.remove(&id)?;
        let info = entry.info;
        match info.direction {
            Direction::Inbound => {
                self.inbound -= 1;
                let ip = info.peer.ip().to_canonical();
                if let Some(count) = self.inbound_per_ip.get_mut(&ip) {
                    *count -= 1;
                    if *count == 0 {
                        self.inbound_per_ip.remove(&ip);
                    }
                }
            }
            Direction::Outbound => self.outbound -= 1,
        }
        let key = (info.kind, info.peer);
        if self.by_peer.get(&key) == Some(&id) {
            self.by_peer.remove(&key);
            // Another open connection to the same peer, if any, takes over.
            if let Some((&other, _)) = self
                .entries
                .iter()
                .find(|(_, e)| e.info.kind == info.kind && e.info.peer == info.peer)
            {
                self.by_peer.insert(key, other);
            }
        }
        Some((info, entry.handle))
    }

    /// A connection by id.
    pub fn get(&self, id: ConnectionId) -> Option<(&ConnectionInfo, &H)> {
        self.entries.get(&id).map(|e| (&e.info, &e.handle))
    }

    /// The connection that serves `peer` over `kind`.
    pub fn lookup(&self, kind: TransportKind, peer: SocketAddr) -> Option<ConnectionId> {
        self.by_peer.get(&(kind, peer)).copied()
    }

    /// Inbound connections open.
    pub fn inbound(&self) -> usize {
        self.inbound
    }

    /// Outbound connections open.
    pub fn outbound(&self) -> usize {
        self.outbound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: TransportKind, peer: &str, direction: Direction) -> ConnectionInfo {
        ConnectionInfo {
            kind,
            peer: peer.parse().unwrap(),
            local: "192.0.2.100:5060".parse().unwrap(),
            direction,
        }
    }

    fn limits(total: usize, per_ip: usize, outbound: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_inbound: total,
            max_inbound_per_ip: per_ip,
            max_outbound: outbound,
        }
    }

    #[test]
    fn per_ip_and_total_limits_refuse_and_free_on_remove() {
        let mut table = ConnectionTable::new(limits(3, 2, 1));
        let a1 = info(TransportKind::Tcp, "192.0.2.1:40000", Direction::Inbound);
        let a2 = info(TransportKind::Tcp, "192.0.2.1:40001", Direction::Inbound);
        let a3 = info(TransportKind::Tls, "192.0.2.1:40002", Direction::Inbound);
        table.insert(ConnectionId::new(1), a1, ()).unwrap();
        table.insert(ConnectionId::new(2), a2, ()).unwrap();
        assert_eq!(
            table.insert(ConnectionId::new(3), a3, ()),
            Err(Refusal::PerIp {
                ip: "192.0.2.1".parse().unwrap(),
                limit: 2
            })
        );
        // IPv4-mapped IPv6 is the same source.
        assert!(table
            .admit(Direction::Inbound, "::ffff:192.0.2.1".parse().unwrap())
            .is_err());
        let b = info(TransportKind::Tcp, "192.0.2.2:40000", Direction::Inbound);
        table.insert(ConnectionId::new(4), b, ()).unwrap();
        let c = info(TransportKind::Tcp, "192.0.2.3:40000", Direction::Inbound);
        assert_eq!(
            table.insert(ConnectionId::new(5), c, ()),
            Err(Refusal::InboundTotal { limit: 3 })
        );
        // Outbound slots are separate from inbound ones.
        let trunk = info(TransportKind::Tls, "198.51.100.1:5061", Direction::Outbound);
        table.insert(ConnectionId::new(6), trunk, ()).unwrap();
        let other = info(TransportKind::Tcp, "198.51.100.2:5060", Direction::Outbound);
        assert_eq!(
            table.insert(ConnectionId::new(7), other, ()),
            Err(Refusal::OutboundTotal { limit: 1 })
        );
        assert_eq!(table.len(), 4);
        // Removing frees the slots again.
        assert!(table.remove(ConnectionId::new(1)).is_some());
        table.insert(ConnectionId::new(3), a3, ()).unwrap();
        assert!(table.remove(ConnectionId::new(6)).is_some());
        table.insert(ConnectionId::new(7), other, ()).unwrap();
        assert!(table.remove(ConnectionId::new(99)).is_none());
        assert_eq!((table.inbound(), table.outbound()), (3, 1));
    }

    #[test]
    fn lookup_by_kind_and_peer_and_takeover_on_remove() {
        let mut table = ConnectionTable::new(ConnectionLimits::default());
        let peer = "192.0.2.1:5060";
        table
            .insert(
                ConnectionId::new(1),
                info(TransportKind::Tcp, peer, Direction::Outbound),
                "first",
            )
            .unwrap();
        table
            .insert(
                ConnectionId::new(2),
                info(TransportKind::Tls, peer, Direction::Outbound),
                "tls",
            )
            .unwrap();
        let addr = peer.parse().unwrap();
        assert_eq!(
            table.lookup(TransportKind::Tcp, addr),
            Some(ConnectionId::new(1))
        );
        assert_eq!(
            table.lookup(TransportKind::Tls, addr),
            Some(ConnectionId::new(2))
        );
        assert_eq!(table.lookup(TransportKind::Udp, addr), None);
        // A second TCP connection to the same peer becomes the one used; when it
        // closes, the first takes over again.
        table
            .insert(
                ConnectionId::new(3),
                info(TransportKind::Tcp, peer, Direction::Inbound),
                "second",
            )
            .unwrap();
        assert_eq!(
            table.lookup(TransportKind::Tcp, addr),
            Some(ConnectionId::new(3))
        );
        assert_eq!(
            table.get(ConnectionId::new(3)).map(|(_, h)| *h),
            Some("second")
        );
        table.remove(ConnectionId::new(3));
        assert_eq!(
            table.lookup(TransportKind::Tcp, addr),
            Some(ConnectionId::new(1))
        );
        table.remove(ConnectionId::new(1));
        assert_eq!(table.lookup(TransportKind::Tcp, addr), None);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut table = ConnectionTable::new(ConnectionLimits::default());
        let i = info(TransportKind::Tcp, "192.0.2.1:1", Direction::Inbound);
        table.insert(ConnectionId::new(1), i, ()).unwrap();
        assert_eq!(
            table.insert(ConnectionId::new(1), i, ()),
            Err(Refusal::DuplicateId(ConnectionId::new(1)))
        );
        assert_eq!(table.inbound(), 1);
    }
}
