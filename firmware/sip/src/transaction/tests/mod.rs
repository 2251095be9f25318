//! Transaction layer tests on a virtual clock: every timer path (A-K, L, M, the 100
//! Trying delay, the CANCEL guard), reliable-transport variants, loss, duplication,
//! CANCEL races and the refusal paths.

mod cancel;
mod client;
mod forms;
mod retained;
mod server;

use super::*;
use rsip::headers::UntypedHeader;
use std::net::{Ipv4Addr, SocketAddr};

pub(super) const UAC_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
pub(super) const UAS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 5060);

pub(super) fn peer(addr: SocketAddr, transport: TransportKind) -> Peer {
    Peer { addr, transport }
}

pub(super) fn udp(addr: SocketAddr) -> Peer {
    peer(addr, TransportKind::Udp)
}

pub(super) fn request(method: &str, branch: &str, seq: u32) -> rsip::Request {
    request_from(method, branch, seq, "192.0.2.1:5060")
}

pub(super) fn request_from(method: &str, branch: &str, seq: u32, sent_by: &str) -> rsip::Request {
    let text = format!(
        "{method} sip:bob@192.0.2.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {sent_by};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@192.0.2.1>;tag=alice1\r\n\
         To: <sip:bob@192.0.2.2>\r\n\
         Call-ID: call-1@192.0.2.1\r\n\
         CSeq: {seq} {method}\r\n\
         Contact: <sip:alice@192.0.2.1>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    rsip::Request::try_from(text.as_str()).expect("test request parses")
}

pub(super) fn response(req: &rsip::Request, code: u16, tag: Option<&str>) -> rsip::Response {
    response_for(req, code.into(), tag)
}

pub(super) fn start() -> Instant {
    Instant::now()
}

pub(super) fn layer() -> TransactionLayer {
    TransactionLayer::new(TransactionConfig::default())
}

pub(super) fn drain_transmits(layer: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

pub(super) fn drain_events(layer: &mut TransactionLayer) -> Vec<TransactionEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

/// Runs the layer's timers up to `until`, returning each transmit with the offset from
/// `t0` at which it was produced.
pub(super) fn run_until(
    layer: &mut TransactionLayer,
    t0: Instant,
    now: &mut Instant,
    until: Instant,
) -> Vec<(Duration, Transmit)> {
    let mut out = Vec::new();
    while let Some(at) = layer.timeout() {
        if at > until {
            break;
        }
        assert!(at >= *now, "timer in the past");
        *now = at;
        layer.handle_timeout(*now);
        for t in drain_transmits(layer) {
            out.push((*now - t0, t));
        }
    }
    *now = until.max(*now);
    out
}

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub(super) fn is_timeout(e: &TransactionEvent) -> bool {
    matches!(e, TransactionEvent::Timeout { .. })
}

pub(super) fn is_terminated(e: &TransactionEvent) -> bool {
    matches!(e, TransactionEvent::Terminated { .. })
}

pub(super) fn as_request(t: &Transmit) -> &rsip::Request {
    match &t.message {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("expected a request, got {}", t.message),
    }
}

pub(super) fn as_response(t: &Transmit) -> &rsip::Response {
    match &t.message {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("expected a response, got {}", t.message),
    }
}

#[test]
fn limits_refuse_new_requests_and_change_nothing() {
    let now = start();
    let mut layer = TransactionLayer::new(TransactionConfig {
        max_transactions: 3,
        max_server_transactions_per_source: 2,
        ..TransactionConfig::default()
    });
    let src = udp(UAC_ADDR);
    layer
        .handle_message(now, request("OPTIONS", "z9hG4bKa", 1).into(), src)
        .unwrap();
    layer
        .handle_message(now, request("OPTIONS", "z9hG4bKb", 2).into(), src)
        .unwrap();
    let err = layer
        .handle_message(now, request("OPTIONS", "z9hG4bKc", 3).into(), src)
        .unwrap_err();
    assert_eq!(
        err,
        Error::SourceOverloaded {
            peer: UAC_ADDR.ip(),
            limit: 2
        }
    );
    assert_eq!(layer.len(), 2);
    // A retransmission of an existing transaction is still absorbed, not refused.
    layer
        .handle_message(now, request("OPTIONS", "z9hG4bKa", 1).into(), src)
        .unwrap();
    // Another source still gets in, up to the total limit.
    let other = udp(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
        5060,
    ));
    layer
        .handle_message(
            now,
            request_from("OPTIONS", "z9hG4bKd", 4, "192.0.2.9").into(),
            other,
        )
        .unwrap();
    let err = layer
        .handle_message(
            now,
            request_from("OPTIONS", "z9hG4bKe", 5, "192.0.2.9").into(),
            other,
        )
        .unwrap_err();
    assert_eq!(err, Error::Overloaded { limit: 3 });
    let err = layer
        .send_request(now, request("OPTIONS", "z9hG4bKf", 6), udp(UAS_ADDR))
        .unwrap_err();
    assert_eq!(err, Error::Overloaded { limit: 3 });
    assert_eq!(layer.len(), 3);
    // Only the three accepted requests reached the TU.
    let requests = drain_events(&mut layer)
        .into_iter()
        .filter(|e| matches!(e, TransactionEvent::Request { .. }))
        .count();
    assert_eq!(requests, 3);
}

#[test]
fn per_source_override_raises_the_limit_for_one_address() {
    let now = start();
    let mut layer = TransactionLayer::new(TransactionConfig {
        max_server_transactions_per_source: 1,
        ..TransactionConfig::default()
    });
    let src = udp(UAC_ADDR);
    layer.set_source_limit(UAC_ADDR.ip(), Some(2));
    for (i, b) in ["z9hG4bKa", "z9hG4bKb"].iter().enumerate() {
        layer
            .handle_message(now, request("OPTIONS", b, i as u32).into(), src)
            .unwrap();
    }
    assert!(matches!(
        layer.handle_message(now, request("OPTIONS", "z9hG4bKc", 9).into(), src),
        Err(Error::SourceOverloaded { limit: 2, .. })
    ));
    layer.set_source_limit(UAC_ADDR.ip(), None);
    assert!(matches!(
        layer.handle_message(now, request("OPTIONS", "z9hG4bKc", 9).into(), src),
        Err(Error::SourceOverloaded { limit: 1, .. })
    ));
}

#[test]
fn per_source_count_is_released_when_transactions_end() {
    let mut now = start();
    let t0 = now;
    let mut layer = TransactionLayer::new(TransactionConfig {
        max_server_transactions_per_source: 1,
        ..TransactionConfig::default()
    });
    let src = peer(UAC_ADDR, TransportKind::Tcp);
    let req = request("OPTIONS", "z9hG4bKa", 1);
    layer.handle_message(now, req.clone().into(), src).unwrap();
    let key = match drain_events(&mut layer).remove(0) {
        TransactionEvent::Request { key, .. } => key,
        e => panic!("unexpected {e:?}"),
    };
    layer
        .respond(now, &key, response(&req, 200, Some("b")))
        .unwrap();
    // TCP: timer J is zero, the transaction is gone at once.
    assert!(layer.is_empty());
    run_until(&mut layer, t0, &mut now, t0 + ms(10));
    layer
        .handle_message(now, request("OPTIONS", "z9hG4bKb", 2).into(), src)
        .unwrap();
}

#[test]
fn malformed_messages_are_refused_without_state() {
    let now = start();
    let mut layer = layer();
    let mut no_via = request("INVITE", "z9hG4bKa", 1);
    no_via
        .headers
        .retain(|h| !matches!(h, rsip::Header::Via(_)));
    assert_eq!(
        layer
            .handle_message(now, no_via.clone().into(), udp(UAC_ADDR))
            .unwrap_err(),
        Error::MissingHeader { header: "Via" }
    );
    let mut no_cseq = request("INVITE", "z9hG4bKa", 1);
    no_cseq
        .headers
        .retain(|h| !matches!(h, rsip::Header::CSeq(_)));
    assert_eq!(
        layer
            .handle_message(now, no_cseq.into(), udp(UAC_ADDR))
            .unwrap_err(),
        Error::MissingHeader { header: "CSeq" }
    );
    let mut mismatch = request("INVITE", "z9hG4bKa", 1);
    mismatch.method = Method::Options;
    assert!(matches!(
        layer.handle_message(now, mismatch.into(), udp(UAC_ADDR)),
        Err(Error::CSeqMismatch { .. })
    ));
    let mut bad_via = request("INVITE", "z9hG4bKa", 1);
    bad_via
        .headers
        .retain(|h| !matches!(h, rsip::Header::Via(_)));
    bad_via
        .headers
        .push(rsip::Header::Via(rsip::headers::Via::new("garbage")));
    assert!(matches!(
        layer.handle_message(now, bad_via.into(), udp(UAC_ADDR)),
        Err(Error::InvalidHeader { header: "Via", .. })
    ));
    // A response without Via is refused too.
    let mut resp = response(&request("INVITE", "z9hG4bKa", 1), 200, Some("x"));
    resp.headers.retain(|h| !matches!(h, rsip::Header::Via(_)));
    assert!(layer
        .handle_message(now, resp.into(), udp(UAS_ADDR))
        .is_err());
    // The TU's own bad requests are refused as well.
    assert_eq!(
        layer.send_request(now, no_via, udp(UAS_ADDR)).unwrap_err(),
        Error::MissingHeader { header: "Via" }
    );
    assert!(matches!(
        layer.send_request(now, request("INVITE", "old-branch", 1), udp(UAS_ADDR)),
        Err(Error::InvalidHeader { header: "Via", .. })
    ));
    assert_eq!(
        layer
            .send_request(now, request("ACK", "z9hG4bKa", 1), udp(UAS_ADDR))
            .unwrap_err(),
        Error::AckNotTransactional
    );
    assert!(layer.is_empty());
    assert!(layer.poll_transmit().is_none());
    assert!(layer.poll_event().is_none());
    assert!(layer.timeout().is_none());
}

#[test]
fn unknown_keys_are_errors_not_panics() {
    let now = start();
    let mut layer = layer();
    let req = request("INVITE", "z9hG4bKa", 1);
    let key = TransactionLayer::server_key(&req).unwrap();
    assert!(matches!(
        layer.respond(now, &key, response(&req, 200, Some("t"))),
        Err(Error::UnknownTransaction { .. })
    ));
    let ckey = ClientKey {
        branch: "z9hG4bKnone".into(),
        method: Method::Invite,
    };
    assert!(matches!(
        layer.cancel(now, &ckey),
        Err(Error::UnknownTransaction { .. })
    ));
    layer.handle_transport_error(&TransactionKey::Client(ckey));
    assert!(layer.poll_event().is_none());
    assert!(layer.state(&TransactionKey::Server(key)).is_none());
}

#[test]
fn transport_error_ends_the_transaction() {
    let now = start();
    let mut layer = layer();
    let key = layer
        .send_request(now, request("INVITE", "z9hG4bKa", 1), udp(UAS_ADDR))
        .unwrap();
    let t = drain_transmits(&mut layer).remove(0);
    let tkey = t.transaction.clone().unwrap();
    assert_eq!(tkey, TransactionKey::Client(key.clone()));
    layer.handle_transport_error(&tkey);
    let events = drain_events(&mut layer);
    assert!(matches!(&events[0], TransactionEvent::TransportError { key: k } if *k == tkey));
    assert!(is_terminated(&events[1]));
    assert!(layer.is_empty());
    assert!(layer.timeout().is_none());
}

#[test]
fn duplicate_client_branch_is_refused() {
    let now = start();
    let mut layer = layer();
    layer
        .send_request(now, request("OPTIONS", "z9hG4bKa", 1), udp(UAS_ADDR))
        .unwrap();
    assert!(matches!(
        layer.send_request(now, request("OPTIONS", "z9hG4bKa", 2), udp(UAS_ADDR)),
        Err(Error::DuplicateTransaction { .. })
    ));
    assert_eq!(layer.len(), 1);
}

#[test]
fn rfc2543_peer_without_cookie_keeps_ack_on_its_invite() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "oldstyle1", 1);
    layer
        .handle_message(now, invite.clone().into(), udp(UAC_ADDR))
        .unwrap();
    let key = match drain_events(&mut layer).remove(0) {
        TransactionEvent::Request { key, .. } => key,
        e => panic!("unexpected {e:?}"),
    };
    assert!(key.branch().starts_with("rfc2543;"));
    let busy = response(&invite, 486, Some("uas"));
    layer.respond(now, &key, busy.clone()).unwrap();
    let ack = ack_for_non_2xx(&invite, &busy).unwrap();
    layer
        .handle_message(now, ack.into(), udp(UAC_ADDR))
        .unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Server(key)),
        Some(TransactionState::Confirmed)
    );
    assert!(drain_events(&mut layer).is_empty(), "the ACK was absorbed");
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(6));
    assert!(layer.is_empty());
}

/// Two layers joined by a lossless network, each message delivered once and in order:
/// INVITE, 180, 200, ACK (stateless), BYE, 200, and both sides empty after the timers.
#[test]
fn full_call_between_two_layers_ends_clean() {
    let mut now = start();
    let t0 = now;
    let mut uac = layer();
    let mut uas = layer();
    let invite = request("INVITE", "z9hG4bKinv", 1);
    let ikey = uac
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    for t in drain_transmits(&mut uac) {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    let skey = match drain_events(&mut uas).remove(0) {
        TransactionEvent::Request { key, .. } => key,
        e => panic!("unexpected {e:?}"),
    };
    uas.respond(now, &skey, response(&invite, 180, Some("bob")))
        .unwrap();
    uas.respond(now, &skey, response(&invite, 200, Some("bob")))
        .unwrap();
    for t in drain_transmits(&mut uas) {
        uac.handle_message(now, t.message, udp(UAS_ADDR)).unwrap();
    }
    let codes: Vec<u16> = drain_events(&mut uac)
        .into_iter()
        .filter_map(|e| match e {
            TransactionEvent::Response { key, response } if key == ikey => {
                Some(response.status_code.code())
            }
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![180, 200]);
    let mut ack = request("ACK", "z9hG4bKack", 1);
    ack.headers.retain(|h| !matches!(h, rsip::Header::To(_)));
    ack.headers.push(rsip::Header::To(rsip::headers::To::new(
        "<sip:bob@192.0.2.2>;tag=bob",
    )));
    uac.send_stateless(ack.into(), udp(UAS_ADDR));
    for t in drain_transmits(&mut uac) {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    assert!(matches!(
        drain_events(&mut uas).as_slice(),
        [TransactionEvent::Ack { .. }]
    ));
    let bye = request("BYE", "z9hG4bKbye", 2);
    uac.send_request(now, bye.clone(), udp(UAS_ADDR)).unwrap();
    for t in drain_transmits(&mut uac) {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    let bkey = match drain_events(&mut uas).remove(0) {
        TransactionEvent::Request { key, .. } => key,
        e => panic!("unexpected {e:?}"),
    };
    uas.respond(now, &bkey, response(&bye, 200, None)).unwrap();
    for t in drain_transmits(&mut uas) {
        uac.handle_message(now, t.message, udp(UAS_ADDR)).unwrap();
    }
    let end = t0 + Duration::from_secs(33);
    assert!(run_until(&mut uac, t0, &mut now.clone(), end).is_empty());
    assert!(run_until(&mut uas, t0, &mut now, end).is_empty());
    assert!(uac.is_empty() && uas.is_empty());
}
