use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::*;
use crate::port::PortAllocator;
use crate::rtp::{RtpHeader, PT_PCMU};

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

fn rtp(seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_PACKET];
    let n = RtpHeader {
        payload_type: PT_PCMU,
        marker: false,
        seq,
        timestamp: u32::from(seq) * 160,
        ssrc,
    }
    .write(&[fill; 160], &mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

async fn recv_timeout(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn session_latches_to_real_source() {
    let alloc = PortAllocator::new(LO, 42000, 42009).unwrap();
    let pair = alloc.allocate().await.unwrap();
    // SDP says 127.0.0.1:9 (nothing there, like a private address behind NAT).
    let mut session = RtpSession::new(
        pair,
        Some(addr(9)),
        PayloadMap::default(),
        LatchConfig::default(),
    );
    let local = session.local_rtp_addr().unwrap();
    let phone = UdpSocket::bind((LO, 0)).await.unwrap();
    // Garbage first: dropped, not latched.
    phone.send_to(b"not rtp at all", local).await.unwrap();
    phone.send_to(&rtp(1, 77, 0x55), local).await.unwrap();
    let mut buf = [0u8; MAX_PACKET];
    let got = session.recv_rtp(&mut buf).await.unwrap();
    assert_eq!(got.from, phone.local_addr().unwrap());
    assert_eq!(session.rtp_target(), Some(phone.local_addr().unwrap()));
    session.send_rtp(&rtp(5, 1, 0x11)).await.unwrap();
    assert_eq!(recv_timeout(&phone).await, Some(rtp(5, 1, 0x11)));
    let stats = session.stats();
    let s = lock(&stats).clone();
    assert_eq!(
        (s.rtp_in, s.rtp_invalid, s.rtp_out, s.relatches),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn relay_forwards_both_ways_and_rejects_intruders() {
    let alloc = PortAllocator::new(LO, 42100, 42119).unwrap();
    let leg_a = RtpSession::new(
        alloc.allocate().await.unwrap(),
        None,
        PayloadMap::default(),
        LatchConfig::default(),
    );
    let leg_b = RtpSession::new(
        alloc.allocate().await.unwrap(),
        None,
        PayloadMap::default(),
        LatchConfig::default(),
    );
    let (a_addr, b_addr) = (
        leg_a.local_rtp_addr().unwrap(),
        leg_b.local_rtp_addr().unwrap(),
    );
    let x = UdpSocket::bind((LO, 0)).await.unwrap();
    let y = UdpSocket::bind((LO, 0)).await.unwrap();
    let intruder = UdpSocket::bind((LO, 0)).await.unwrap();
    let relay = spawn_relay(leg_a, leg_b);

    // Y speaks first so leg B is latched; then X's packets reach Y unchanged.
    y.send_to(&rtp(100, 2, 0x22), b_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for seq in 1..=5 {
        x.send_to(&rtp(seq, 1, 0x11), a_addr).await.unwrap();
        assert_eq!(
            recv_timeout(&y).await,
            Some(rtp(seq, 1, 0x11)),
            "x->y {seq}"
        );
    }
    // Leg A latched to X: Y's packets reach X.
    y.send_to(&rtp(101, 2, 0x22), b_addr).await.unwrap();
    assert_eq!(recv_timeout(&x).await, Some(rtp(101, 2, 0x22)));
    // An intruder sending to leg A is dropped; Y hears nothing from it.
    intruder.send_to(&rtp(999, 66, 0x66), a_addr).await.unwrap();
    assert_eq!(recv_timeout(&y).await, None);
    // Malformed and unnegotiated payload types are dropped.
    x.send_to(&[0x80, 0], a_addr).await.unwrap();
    let mut odd = rtp(6, 1, 0x11);
    odd[1] = 99;
    x.send_to(&odd, a_addr).await.unwrap();
    assert_eq!(recv_timeout(&y).await, None);
    // RTCP is relayed too. Leg B has no SDP address, so its RTCP latch needs a packet
    // from Y's RTCP socket first.
    let y_rtcp = UdpSocket::bind((LO, 0)).await.unwrap();
    let b_rtcp = SocketAddr::new(LO, b_addr.port() + 1);
    let a_rtcp = SocketAddr::new(LO, a_addr.port() + 1);
    let rr = crate::rtcp::build_report(2, None, &[], "y");
    y_rtcp.send_to(&rr, b_rtcp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rr_x = crate::rtcp::build_report(1, None, &[], "x");
    x.send_to(&rr_x, a_rtcp).await.unwrap();
    assert_eq!(recv_timeout(&y_rtcp).await, Some(rr_x));

    let [a, b] = relay.snapshot();
    assert_eq!(
        (a.rtp_in, a.rtp_foreign, a.rtp_invalid, a.rtcp_in),
        (5, 1, 2, 1)
    );
    assert_eq!((b.rtp_in, b.rtp_out), (2, 5));
    assert_eq!(a.rtp_out, 1);
    let q = a.quality(None, Duration::from_millis(40)).unwrap();
    assert_eq!(q.loss_percent, 0.0);
    assert_eq!(
        a.receiver.as_ref().unwrap().received(),
        4,
        "first packet is probation"
    );
    assert!(!relay.is_finished());

    // Dropping the handle ends the relay and frees both pairs.
    drop(relay);
    for _ in 0..50 {
        if alloc.leased() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(alloc.leased(), 0);
}
