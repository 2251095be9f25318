//! Client transactions: timers A, B, D, E, F, K, M and the ACK for non-2xx.

use super::*;

fn offsets(transmits: &[(Duration, Transmit)]) -> Vec<u64> {
    transmits
        .iter()
        .map(|(d, _)| d.as_millis() as u64)
        .collect()
}

#[test]
fn timer_a_doubles_without_cap_and_timer_b_times_out() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let key = layer
        .send_request(now, request("INVITE", "z9hG4bKa", 1), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(40));
    // A: 0.5, 1, 2, 4, 8, 16 s intervals (no T2 cap for INVITE), B at 32 s.
    assert_eq!(offsets(&sent), vec![500, 1500, 3500, 7500, 15500, 31500]);
    let events = drain_events(&mut layer);
    assert!(
        matches!(&events[0], TransactionEvent::Timeout { key: TransactionKey::Client(k) } if *k == key)
    );
    assert!(is_terminated(&events[1]));
    assert!(layer.is_empty());
}

#[test]
fn reliable_invite_is_not_retransmitted_but_timer_b_runs() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    layer
        .send_request(
            now,
            request("INVITE", "z9hG4bKa", 1),
            peer(UAS_ADDR, TransportKind::Tcp),
        )
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(40));
    assert!(sent.is_empty());
    assert!(drain_events(&mut layer).iter().any(is_timeout));
    assert!(layer.is_empty());
}

#[test]
fn provisional_stops_timer_a_and_timer_b() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = layer
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut layer);
    now += ms(600);
    layer.handle_timeout(now); // one A retransmission at 500 ms
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    layer
        .handle_message(now, response(&invite, 180, Some("b")).into(), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Client(key.clone())),
        Some(TransactionState::Proceeding)
    );
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(120));
    assert!(sent.is_empty());
    assert!(!drain_events(&mut layer).iter().any(is_timeout));
    assert_eq!(
        layer.state(&TransactionKey::Client(key)),
        Some(TransactionState::Proceeding)
    );
}

#[test]
fn non_2xx_is_acked_by_the_layer_and_timer_d_absorbs_retransmissions() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let mut invite = request("INVITE", "z9hG4bKa", 7);
    invite
        .headers
        .push(rsip::Header::Route(rsip::headers::Route::new(
            "<sip:proxy.example;lr>",
        )));
    let key = layer
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut layer);
    let busy = response(&invite, 486, Some("uas-tag"));
    layer
        .handle_message(now, busy.clone().into(), udp(UAS_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    let ack = as_request(&sent[0]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, invite.uri);
    assert_eq!(to_tag(&ack.headers).unwrap().as_deref(), Some("uas-tag"));
    let via = top_via(&ack.headers).unwrap();
    assert_eq!(via_branch(&via).as_deref(), Some("z9hG4bKa"));
    let c = cseq(&ack.headers).unwrap();
    assert_eq!((c.seq, c.method), (7, Method::Ack));
    assert!(ack
        .headers
        .iter()
        .any(|h| matches!(h, rsip::Header::Route(_))));
    let events = drain_events(&mut layer);
    assert!(
        matches!(&events[0], TransactionEvent::Response { response, .. } if response.status_code.code() == 486)
    );
    // A retransmitted 486 gets the ACK again and does not reach the TU twice.
    now += Duration::from_secs(2);
    layer
        .handle_message(now, busy.clone().into(), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1);
    assert!(drain_events(&mut layer).is_empty());
    assert_eq!(
        layer.state(&TransactionKey::Client(key)),
        Some(TransactionState::Completed)
    );
    // D: 32 s after the final response.
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(33));
    assert!(drain_events(&mut layer).iter().any(is_terminated));
    assert!(layer.is_empty());
}

#[test]
fn non_2xx_over_tcp_terminates_at_once() {
    let now = start();
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let tcp = peer(UAS_ADDR, TransportKind::Tcp);
    layer.send_request(now, invite.clone(), tcp).unwrap();
    drain_transmits(&mut layer);
    layer
        .handle_message(now, response(&invite, 603, Some("x")).into(), tcp)
        .unwrap();
    assert_eq!(drain_transmits(&mut layer).len(), 1, "the ACK");
    assert!(layer.is_empty());
    assert!(layer.timeout().is_none());
}

#[test]
fn accepted_state_passes_2xx_retransmissions_until_timer_m() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let key = layer
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut layer);
    let ok = response(&invite, 200, Some("b"));
    layer
        .handle_message(now, ok.clone().into(), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Client(key.clone())),
        Some(TransactionState::Accepted)
    );
    assert!(drain_transmits(&mut layer).is_empty(), "the TU ACKs a 2xx");
    assert_eq!(drain_events(&mut layer).len(), 1);
    // A retransmitted 200 reaches the TU again (it must re-ACK); a late 180 does not.
    now += Duration::from_secs(1);
    layer
        .handle_message(now, ok.clone().into(), udp(UAS_ADDR))
        .unwrap();
    layer
        .handle_message(now, response(&invite, 180, Some("b")).into(), udp(UAS_ADDR))
        .unwrap();
    let events = drain_events(&mut layer);
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], TransactionEvent::Response { key: k, .. } if *k == key));
    // M: 64*T1 after the first 2xx.
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(32)));
    run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(32));
    assert!(layer.is_empty());
    // After M a 2xx is stray, but still reaches the TU (it may need ACK + BYE).
    layer.handle_message(now, ok.into(), udp(UAS_ADDR)).unwrap();
    assert!(drain_events(&mut layer)
        .iter()
        .any(|e| matches!(e, TransactionEvent::StrayResponse { .. })));
}

#[test]
fn stray_non_2xx_responses_are_dropped() {
    let now = start();
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    for code in [100u16, 180, 486, 500] {
        layer
            .handle_message(
                now,
                response(&invite, code, Some("x")).into(),
                udp(UAS_ADDR),
            )
            .unwrap();
    }
    let options = request("OPTIONS", "z9hG4bKo", 1);
    layer
        .handle_message(
            now,
            response(&options, 200, Some("x")).into(),
            udp(UAS_ADDR),
        )
        .unwrap();
    assert!(layer.poll_event().is_none());
    assert!(layer.poll_transmit().is_none());
    assert!(layer.is_empty());
}

#[test]
fn timer_e_doubles_up_to_t2_and_timer_f_times_out() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let key = layer
        .send_request(now, request("OPTIONS", "z9hG4bKa", 1), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut layer);
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(40));
    assert_eq!(
        offsets(&sent),
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let events = drain_events(&mut layer);
    assert!(
        matches!(&events[0], TransactionEvent::Timeout { key: TransactionKey::Client(k) } if *k == key)
    );
    assert!(layer.is_empty());
}

#[test]
fn timer_e_uses_t2_once_proceeding() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let req = request("REGISTER", "z9hG4bKa", 1);
    layer.send_request(now, req.clone(), udp(UAS_ADDR)).unwrap();
    drain_transmits(&mut layer);
    now += ms(100);
    layer
        .handle_message(now, response(&req, 100, None).into(), udp(UAS_ADDR))
        .unwrap();
    let sent = run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(13));
    // The 500 ms timer was armed in Trying; from then on every interval is T2.
    assert_eq!(offsets(&sent), vec![500, 4500, 8500, 12500]);
}

#[test]
fn timer_k_after_final_response_and_zero_on_tcp() {
    let mut now = start();
    let t0 = now;
    let mut layer = layer();
    let req = request("BYE", "z9hG4bKa", 2);
    let key = layer.send_request(now, req.clone(), udp(UAS_ADDR)).unwrap();
    drain_transmits(&mut layer);
    layer
        .handle_message(now, response(&req, 200, None).into(), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(
        layer.state(&TransactionKey::Client(key)),
        Some(TransactionState::Completed)
    );
    // Retransmitted finals are absorbed.
    layer
        .handle_message(now, response(&req, 200, None).into(), udp(UAS_ADDR))
        .unwrap();
    assert_eq!(drain_events(&mut layer).len(), 1);
    assert_eq!(layer.timeout(), Some(t0 + Duration::from_secs(5)));
    assert!(run_until(&mut layer, t0, &mut now, t0 + Duration::from_secs(6)).is_empty());
    assert!(layer.is_empty());

    let mut tcp_layer = super::layer();
    let tcp = peer(UAS_ADDR, TransportKind::Tls);
    tcp_layer.send_request(now, req.clone(), tcp).unwrap();
    tcp_layer
        .handle_message(now, response(&req, 200, None).into(), tcp)
        .unwrap();
    assert!(tcp_layer.is_empty());
}

#[test]
fn lost_request_is_recovered_by_retransmission() {
    // The first INVITE is lost; the retransmission at 500 ms gets through and the 180
    // stops the retransmissions.
    let mut now = start();
    let t0 = now;
    let mut uac = layer();
    let mut uas = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    uac.send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut uac); // lost
    let sent = run_until(&mut uac, t0, &mut now, t0 + ms(500));
    assert_eq!(sent.len(), 1);
    uas.handle_message(now, sent[0].1.message.clone(), udp(UAC_ADDR))
        .unwrap();
    let skey = match drain_events(&mut uas).remove(0) {
        TransactionEvent::Request { key, .. } => key,
        e => panic!("unexpected {e:?}"),
    };
    uas.respond(now, &skey, response(&invite, 180, Some("b")))
        .unwrap();
    for t in drain_transmits(&mut uas) {
        uac.handle_message(now, t.message, udp(UAS_ADDR)).unwrap();
    }
    assert!(run_until(&mut uac, t0, &mut now, t0 + Duration::from_secs(60)).is_empty());
}

#[test]
fn duplicated_and_reordered_responses() {
    // 200 arrives before the 180 and twice: the TU sees the 200 twice (Accepted) and
    // never the late 180.
    let now = start();
    let mut layer = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    layer
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    let ok = response(&invite, 200, Some("b"));
    layer
        .handle_message(now, ok.clone().into(), udp(UAS_ADDR))
        .unwrap();
    layer.handle_message(now, ok.into(), udp(UAS_ADDR)).unwrap();
    layer
        .handle_message(now, response(&invite, 180, Some("b")).into(), udp(UAS_ADDR))
        .unwrap();
    let codes: Vec<u16> = drain_events(&mut layer)
        .into_iter()
        .filter_map(|e| match e {
            TransactionEvent::Response { response, .. } => Some(response.status_code.code()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![200, 200]);
}
