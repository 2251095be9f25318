//! Server transactions: the 100 Trying delay, timers G, H, I, J, L and retransmitted
//! requests.

use super::*;

fn new_server(
    layer: &mut TransactionLayer,
    now: Instant,
    req: &rsip::Request,
    source: Peer,
) -> ServerKey {
    layer
        .handle_message(now, req.clone().into(), source)
        .unwrap();
    match drain_events(layer).remove(0) {
        TransactionEvent::Request {
            key,
            request,
            source: s,
        } => {
            assert_eq!(&request, req);
            assert_eq!(s, source);
            key
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn trying_is_sent_after_200ms_without_a_tu_answer() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    assert!(drain_transmits(&mut layer).is_empty());
    let sent = run_until(&mut layer, t0, &mut now, t0 + ms(250));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, ms(200));
    assert_eq!(as_response(&sent[0].1).status_code.code(), 100);
    assert_eq!(sent[0].1.destination, udp(UAC_ADDR));
}

#[test]
fn no_trying_when_the_tu_answers_first() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    now += ms(50);
    layer
        .respond(now, &key, response(&invite, 180, Some("b")))
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    assert!(run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(60)).is_empty());
    // No timer runs while the TU rings; the transaction waits for the TU.
    assert_eq!(
        layer.state(&TransactionKey::Server(key)),
        Some(TransactionState::Proceeding)
    );
}

#[test]
fn retransmitted_invite_gets_the_last_provisional() {
    let now = start();
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    // Before any response: a 100 Trying at once, and not again at 200 ms.
    layer
        .handle_message(now, invite.clone().into(), udp(UAC_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut layer);
    assert_eq!(as_response(&sent[0]).status_code.code(), 100);
    layer.handle_timeout(now + ms(300));
    assert!(drain_transmits(&mut layer).is_empty());
    layer
        .respond(now, &key, response(&invite, 183, Some("b")))
        .unwrap();
    drain_transmits(&mut layer);
    layer
        .handle_message(now, invite.clone().into(), udp(UAC_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(as_response(&sent[0]).status_code.code(), 183);
    assert!(
        drain_events(&mut layer).is_empty(),
        "retransmissions are absorbed"
    );
}

#[test]
fn timer_g_retransmits_the_final_response_and_timer_h_gives_up() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    layer
        .respond(now, &key, response(&invite, 486, Some("b")))
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(40));
    let offsets: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
    assert_eq!(
        offsets,
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(sent
        .iter()
        .all(|(_, t)| as_response(t).status_code.code() == 486));
    let events = drain_events(&mut layer);
    assert!(
        matches!(&events[0], TransactionEvent::Timeout { key: TransactionKey::Server(k) } if *k == key)
    );
    assert!(layer.is_empty());
}

#[test]
fn ack_for_non_2xx_is_absorbed_and_timer_i_ends_confirmed() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    let busy = response(&invite, 486, Some("b"));
    layer.respond(now, &key, busy.clone()).unwrap();
    drain_transmits(&mut layer);
    // The first 486 is lost; G resends it at 500 ms; the ACK arrives at 700 ms.
    let sent = run_until(&mut layer, t0, &mut now, t0 + ms(700));
    assert_eq!(sent.len(), 1);
    let ack = ack_for_non_2xx(&invite, &busy).unwrap();
    layer
        .handle_message(now, ack.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Server(key.clone())),
        Some(TransactionState::Confirmed)
    );
    // Duplicate ACK and a late INVITE retransmission: absorbed, nothing sent or reported.
    layer
        .handle_message(now, ack.into(), udp(UAC_ADDR))
        .unwrap();
    layer
        .handle_message(now, invite.into(), udp(UAC_ADDR))
        .unwrap();
    assert!(drain_transmits(&mut layer).is_empty());
    assert!(drain_events(&mut layer).is_empty());
    // I: T4 after the ACK; no more G retransmissions.
    assert_eq!(layer.timeout(), Some(t0 + ms(5700)));
    assert!(run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(10)).is_empty());
    assert!(layer.is_empty());
}

#[test]
fn reliable_server_invite_has_no_timer_g_and_ends_on_ack() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let tcp = peer(UAC_ADDR, TransportKind::Tcp);
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, tcp);
    let busy = response(&invite, 486, Some("b"));
    layer.respond(now, &key, busy.clone()).unwrap();
    drain_transmits(&mut layer);
    // Only H is armed.
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    now += ms(100);
    layer
        .handle_message(now, ack_for_non_2xx(&invite, &busy).unwrap().into(), tcp)
        .unwrap();
    assert!(layer.is_empty(), "timer I is zero on TCP");
    assert!(run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(40)).is_empty());
}

#[test]
fn accepted_absorbs_invite_retransmissions_and_passes_ack_until_timer_l() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &invite, udp(UAC_ADDR));
    let ok = response(&invite, 200, Some("b"));
    layer.respond(now, &key, ok.clone()).unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    assert_eq!(
        layer.state(&TransactionKey::Server(key.clone())),
        Some(TransactionState::Accepted)
    );
    // RFC 6026: no 2xx retransmission by the transaction itself.
    layer
        .handle_message(now, invite.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert!(drain_transmits(&mut layer).is_empty());
    // The TU retransmits the 2xx through the transaction.
    now += ms(500);
    layer.respond(now, &key, ok).unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    // A non-2xx is refused in Accepted, changing nothing.
    assert!(matches!(
        layer.respond(now, &key, response(&invite, 500, Some("b"))),
        Err(Error::InvalidState {
            state: TransactionState::Accepted,
            ..
        })
    ));
    // An ACK reusing the INVITE's branch reaches the TU.
    let mut ack = request("ACK", "z9hG4bKa", 1);
    ack.headers.retain(|h| !matches!(h, rsip::Header::To(_)));
    ack.headers.push(rsip::Header::To(rsip::headers::To::new(
        "<sip:bob@192.0.2.2>;tag=b",
    )));
    layer
        .handle_message(now, ack.into(), udp(UAC_ADDR))
        .unwrap();
    assert!(matches!(
        drain_events(&mut layer).as_slice(),
        [TransactionEvent::Ack { .. }]
    ));
    // L: 64*T1 after the 2xx.
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(32));
    assert!(layer.is_empty());
}

#[test]
fn ack_with_its_own_branch_goes_to_the_tu() {
    let now = start();
    let mut layer = layer();
    let ack = request("ACK", "z9hG4bKack2xx", 1);
    layer
        .handle_message(now, ack.clone().into(), udp(UAC_ADDR))
        .unwrap();
    match drain_events(&mut layer).as_slice() {
        [TransactionEvent::Ack { request, source }] => {
            assert_eq!(request, &ack);
            assert_eq!(*source, udp(UAC_ADDR));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(layer.is_empty());
}

#[test]
fn non_invite_timer_j_resends_final_for_retransmissions() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let req = request("OPTIONS", "z9hG4bKa", 1);
    let key = new_server(&mut layer, now, &req, udp(UAC_ADDR));
    // Retransmission while Trying: absorbed, nothing sent.
    layer
        .handle_message(now, req.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert!(drain_transmits(&mut layer).is_empty());
    layer.respond(now, &key, response(&req, 100, None)).unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Server(key.clone())),
        Some(TransactionState::Proceeding)
    );
    drain_transmits(&mut layer);
    layer
        .handle_message(now, req.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert_eq!(
        as_response(&drain_transmits(&mut layer)[0])
            .status_code
            .code(),
        100
    );
    layer.respond(now, &key, response(&req, 200, None)).unwrap();
    drain_transmits(&mut layer);
    layer
        .handle_message(now, req.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert_eq!(
        as_response(&drain_transmits(&mut layer)[0])
            .status_code
            .code(),
        200
    );
    assert!(drain_events(&mut layer).is_empty());
    // A second final response is refused.
    assert!(matches!(
        layer.respond(now, &key, response(&req, 500, None)),
        Err(Error::InvalidState { .. })
    ));
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(32));
    assert!(layer.is_empty());
}

#[test]
fn unanswered_non_invite_ends_after_64_t1() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let req = request("INFO", "z9hG4bKa", 3);
    let key = new_server(&mut layer, now, &req, udp(UAC_ADDR));
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(32));
    let events = drain_events(&mut layer);
    assert!(
        matches!(&events[0], TransactionEvent::Timeout { key: TransactionKey::Server(k) } if *k == key)
    );
    assert!(layer.is_empty());
}

#[test]
fn same_branch_from_another_sent_by_is_another_transaction() {
    let now = start();
    let mut layer = layer();
    let a = request_from("OPTIONS", "z9hG4bKsame", 1, "192.0.2.1:5060");
    let b = request_from("OPTIONS", "z9hG4bKsame", 1, "192.0.2.7:5060");
    layer.handle_message(now, a.into(), udp(UAC_ADDR)).unwrap();
    layer.handle_message(now, b.into(), udp(UAC_ADDR)).unwrap();
    assert_eq!(layer.len(), 2);
    assert_eq!(drain_events(&mut layer).len(), 2);
}
