//! Parse + dispatch, shared by `parse.rs` and `parse_cycles.rs`: distinct new INVITEs
//! (the fixture with another branch and Call-ID each) through the endpoint's inbound
//! path up to the transaction user's first decision, as `sip_endpoint::on_inbound`
//! and `on_request` do it: parse, guard, rport, a new server transaction, its event,
//! the dialog layer's verdict.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use branchline_sip::dialog::{DialogConfig, DialogLayer, RequestDisposition};
use branchline_sip::guard::{Guard, GuardConfig, Verdict};
use branchline_sip::message::{self, Limits};
use branchline_sip::transaction::{
    Peer, TransactionConfig, TransactionEvent, TransactionLayer, TransportKind,
};
use branchline_sip::transport::via::apply_received_rport;

use super::invite::INVITE;

/// The endpoint's state the inbound path goes through.
pub type Layers = (Guard, TransactionLayer, DialogLayer);

/// Fresh layers with the default configuration.
pub fn fresh_layers() -> Layers {
    (
        Guard::new(GuardConfig::default()).expect("default guard config"),
        TransactionLayer::new(TransactionConfig::default()),
        DialogLayer::new(DialogConfig::default(), 7),
    )
}

/// New INVITEs in one batch: 64 phones (source addresses) with 64 calls each, within
/// the transaction layer's default per-source limit.
pub const PHONES: u32 = 64;
pub const CALLS_PER_PHONE: u32 = 64;

/// `PHONES * CALLS_PER_PHONE` distinct INVITEs (branch and Call-ID differ, same length
/// as the fixture) with their source addresses.
pub fn distinct_invites() -> Vec<(Vec<u8>, SocketAddr)> {
    (0..PHONES * CALLS_PER_PHONE)
        .map(|i| {
            let text = INVITE
                .replace("4f1a2b3c4d5e6f70", &format!("{i:016x}"))
                .replace("7f3e9a1c-", &format!("{i:08x}-"));
            let phone = i % PHONES;
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + phone as u8));
            (text.into_bytes(), SocketAddr::new(ip, 5060))
        })
        .collect()
}

/// The endpoint's inbound path for one datagram, up to the transaction user's first
/// decision (`sip_endpoint::on_inbound` and `on_request`): parse, guard, rport,
/// transaction layer, its event, the dialog layer. Returns whether it reached the TU
/// as a new dialog-creating request.
pub fn dispatch(
    bytes: &[u8],
    source: SocketAddr,
    limits: &Limits,
    now: Instant,
    layers: &mut Layers,
) -> bool {
    let (guard, tx, dialogs) = layers;
    let Ok(rsip::SipMessage::Request(mut request)) = message::parse(bytes, limits) else {
        return false;
    };
    if guard.check_request(now, source.ip(), &request) != Verdict::Allow {
        return false;
    }
    if apply_received_rport(&mut request.headers, source).is_err() {
        return false;
    }
    let peer = Peer {
        addr: source,
        transport: TransportKind::Udp,
    };
    // The endpoint keeps a copy of each request to answer it 503/400 when the
    // transaction layer refuses it.
    let copy = black_box(request.clone());
    if tx.handle_message(now, request.into(), peer).is_err() {
        return false;
    }
    drop(copy);
    let mut new_dialog = false;
    while let Some(event) = tx.poll_event() {
        if let TransactionEvent::Request { request, .. } = event {
            new_dialog |= dialogs.on_request(now, &request) == RequestDisposition::OutOfDialog;
        }
    }
    new_dialog
}

/// Panics unless every INVITE of `invites` reaches the TU as a new request on fresh
/// layers: the fixture must measure what it claims.
pub fn check(invites: &[(Vec<u8>, SocketAddr)], limits: &Limits, now: Instant) {
    let mut layers = fresh_layers();
    for (bytes, source) in invites {
        assert!(dispatch(bytes, *source, limits, now, &mut layers));
    }
    assert_eq!(layers.1.len(), invites.len());
}
