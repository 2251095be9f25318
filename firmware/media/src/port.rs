//! RTP/RTCP port pairs from a configured range (IO edge, tokio).
//!
//! Each call leg gets one pair: RTP on an even port, RTCP on the next odd port
//! (RFC 3550 11). [`PortAllocator::allocate`] hands pairs out round-robin, so a port
//! just released is not reused at once (late packets of the old call do not reach the
//! new one), binds both sockets, skips pairs that something else on the host holds,
//! and fails with [`Error::PortsExhausted`] when the range is used up. The pair goes
//! back to the pool when its [`PortLease`] (held by the [`PortPair`]) is dropped.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UdpSocket;

use crate::{Error, Result};

#[derive(Debug)]
struct Pool {
    leased: Vec<bool>,
    next: usize,
    count: usize,
}

/// Hands out RTP/RTCP port pairs from a range; cheap to clone (shared pool).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    first_even: u16,
    range: RangeInclusive<u16>,
    /// Shared with every lease so a dropped lease can return its pair.
    pool: Arc<Mutex<Pool>>,
}

fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // A panic while holding this lock cannot leave the pool inconsistent (each
    // critical section is a single field update), so a poisoned lock is still usable.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

impl PortAllocator {
    /// Pairs from `first..=last` on `ip`. An odd `first` starts at the next even port;
    /// the range must hold at least one pair.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Result<Self> {
        let err = |reason| Error::PortRange {
            first,
            last,
            reason,
        };
        if first == 0 {
            return Err(err("port 0 is not a real port"));
        }
        let first_even = if first % 2 == 0 {
            first
        } else {
            first.checked_add(1).ok_or(err("no even port in range"))?
        };
        if last < first_even.saturating_add(1) || first_even == u16::MAX {
            return Err(err("range holds no even/odd pair"));
        }
        let pairs = usize::from((last - first_even).div_ceil(2));
        Ok(PortAllocator {
            ip,
            first_even,
            range: first..=last,
            pool: Arc::new(Mutex::new(Pool {
                leased: vec![false; pairs],
                next: 0,
                count: 0,
            })),
        })
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        lock(&self.pool).leased.len()
    }

    /// Pairs leased now.
    pub fn leased(&self) -> usize {
        lock(&self.pool).count
    }

    /// Binds the next free pair.
    pub async fn allocate(&self) -> Result<PortPair> {
        let pairs = self.capacity();
        for _ in 0..pairs {
            let Some(index) = self.reserve() else {
                break;
            };
            let lease = PortLease {
                pool: Arc::clone(&self.pool),
                index,
            };
            let rtp_port = self.first_even + 2 * index as u16;
            let rtp_addr = SocketAddr::new(self.ip, rtp_port);
            let rtcp_addr = SocketAddr::new(self.ip, rtp_port + 1);
            let Ok(rtp) = UdpSocket::bind(rtp_addr).await else {
                // Held by another program: release and move on; round-robin means it
                // is not tried again until the range wraps.
                drop(lease);
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind(rtcp_addr).await else {
                drop(lease);
                continue;
            };
            return Ok(PortPair { rtp, rtcp, lease });
        }
        Err(Error::PortsExhausted {
            range: self.range.clone(),
            leased: self.leased(),
        })
    }

    /// Marks the next free pair (round-robin) as leased.
    fn reserve(&self) -> Option<usize> {
        let mut pool = lock(&self.pool);
        let n = pool.leased.len();
        for k in 0..n {
            let i = (pool.next + k) % n;
            if !pool.leased[i] {
                pool.leased[i] = true;
                pool.count += 1;
                pool.next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }
}

/// A leased pair; returns it to the pool on drop.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<Mutex<Pool>>,
    index: usize,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut pool = lock(&self.pool);
        if let Some(slot) = pool.leased.get_mut(self.index) {
            if *slot {
                *slot = false;
                pool.count -= 1;
            }
        }
    }
}

/// Bound RTP and RTCP sockets of one call leg.
#[derive(Debug)]
pub struct PortPair {
    /// RTP socket (even port).
    pub rtp: UdpSocket,
    /// RTCP socket (RTP port + 1).
    pub rtcp: UdpSocket,
    /// Keeps the pair out of the pool while the sockets live.
    pub lease: PortLease,
}

impl PortPair {
    /// Local RTP address.
    pub fn rtp_addr(&self) -> Result<SocketAddr> {
        self.rtp.local_addr().map_err(|e| Error::Io {
            op: "local_addr",
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            kind: e.kind(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn range_validation() {
        assert!(matches!(
            PortAllocator::new(LO, 0, 10),
            Err(Error::PortRange { .. })
        ));
        assert!(matches!(
            PortAllocator::new(LO, 20001, 20001),
            Err(Error::PortRange { .. })
        ));
        assert!(matches!(
            PortAllocator::new(LO, 20000, 20000),
            Err(Error::PortRange { .. })
        ));
        assert!(matches!(
            PortAllocator::new(LO, 65535, 65535),
            Err(Error::PortRange { .. })
        ));
        assert_eq!(PortAllocator::new(LO, 20001, 20005).unwrap().capacity(), 2);
        assert_eq!(PortAllocator::new(LO, 20000, 20009).unwrap().capacity(), 5);
    }

    #[tokio::test]
    async fn pairs_even_odd_exhaustion_and_release() {
        let alloc = PortAllocator::new(LO, 41000, 41005).unwrap();
        let a = alloc.allocate().await.unwrap();
        let b = alloc.allocate().await.unwrap();
        let c = alloc.allocate().await.unwrap();
        for p in [&a, &b, &c] {
            let rtp = p.rtp.local_addr().unwrap().port();
            assert_eq!(rtp % 2, 0);
            assert_eq!(p.rtcp.local_addr().unwrap().port(), rtp + 1);
        }
        assert_eq!(alloc.leased(), 3);
        match alloc.allocate().await {
            Err(Error::PortsExhausted { range, leased }) => {
                assert_eq!((range, leased), (41000..=41005, 3));
            }
            other => panic!("{other:?}"),
        }
        let b_port = b.rtp_addr().unwrap().port();
        drop(b);
        assert_eq!(alloc.leased(), 2);
        let again = alloc.allocate().await.unwrap();
        assert_eq!(again.rtp_addr().unwrap().port(), b_port);
    }

    #[tokio::test]
    async fn skips_ports_held_elsewhere() {
        let squatter = std::net::UdpSocket::bind((LO, 41100)).unwrap();
        let alloc = PortAllocator::new(LO, 41100, 41103).unwrap();
        let p = alloc.allocate().await.unwrap();
        assert_eq!(p.rtp_addr().unwrap().port(), 41102);
        assert!(alloc.allocate().await.is_err());
        assert_eq!(alloc.leased(), 1);
        drop(squatter);
    }
}
