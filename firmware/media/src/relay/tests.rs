use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(LO, port)
}

#[test]
fn latch_rules() {
    let t0 = Instant::now();
    let cfg = LatchConfig {
        guard: Duration::from_secs(1),
        relatch_on_ssrc_change: false,
    };
    let mut l = Latch::new(cfg, Some(addr(5000)), None);
    assert_eq!(l.target(), Some(addr(5000)));
    assert!(!l.is_latched());
    assert_eq!(
        l.on_packet(t0, addr(6000), Some(1)),
        LatchDecision::Latched(addr(6000))
    );
    assert_eq!(l.target(), Some(addr(6000)));
    assert_eq!(l.on_packet(t0, addr(6000), Some(1)), LatchDecision::Accept);
    // Foreign source while the latched one is alive: rejected, even with a new SSRC.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(l.on_packet(t1, addr(7000), Some(2)), LatchDecision::Reject);
    assert_eq!(l.target(), Some(addr(6000)));
    // Latched source keeps talking: still rejected a second later.
    assert_eq!(l.on_packet(t1, addr(6000), Some(1)), LatchDecision::Accept);
    assert_eq!(
        l.on_packet(t1 + Duration::from_millis(900), addr(7000), Some(2)),
        LatchDecision::Reject
    );
    // Latched source silent for the guard time: the new one takes over.
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(
        l.on_packet(t2, addr(7000), Some(2)),
        LatchDecision::Latched(addr(7000))
    );
    // Re-INVITE: back to the signalled address until media arrives.
    l.set_signalled(Some(addr(8000)));
    assert_eq!(l.target(), Some(addr(8000)));

    let mut s = Latch::new(
        LatchConfig {
            guard: Duration::from_secs(60),
            relatch_on_ssrc_change: true,
        },
        None,
        None,
    );
    assert_eq!(s.target(), None);
    s.on_packet(t0, addr(6000), Some(1));
    assert_eq!(
        s.on_packet(t0, addr(7000), Some(1)),
        LatchDecision::Reject,
        "same SSRC, new address"
    );
    assert_eq!(
        s.on_packet(t0, addr(7000), Some(9)),
        LatchDecision::Latched(addr(7000)),
        "new SSRC"
    );

    let mut e = Latch::new(cfg, None, Some(42));
    assert_eq!(e.on_packet(t0, addr(6000), Some(41)), LatchDecision::Reject);
    assert_eq!(
        e.on_packet(t0, addr(6000), Some(42)),
        LatchDecision::Latched(addr(6000))
    );
}
