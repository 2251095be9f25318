//! CANCEL on both sides: queued before a provisional, sent after one, racing a 200, the
//! 9.1 guard, and a CANCEL that matches nothing.

use super::*;

/// Delivers everything `from` wants to send to `to`, returning how many were delivered.
fn pump(
    from: &mut TransactionLayer,
    to: &mut TransactionLayer,
    now: Instant,
    source: Peer,
) -> usize {
    let sent = drain_transmits(from);
    let n = sent.len();
    for t in sent {
        to.handle_message(now, t.message, source).unwrap();
    }
    n
}

fn server_request_key(layer: &mut TransactionLayer) -> ServerKey {
    drain_events(layer)
        .into_iter()
        .find_map(|e| match e {
            TransactionEvent::Request { key, .. } => Some(key),
            _ => None,
        })
        .expect("a new server transaction")
}

#[test]
fn cancel_before_provisional_waits_for_it() {
    let now = start();
    let mut uac = layer();
    let mut uas = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let ikey = uac
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    let ckey = uac.cancel(now, &ikey).unwrap();
    assert_eq!(ckey, ikey.cancel_key());
    // Only the INVITE went out.
    let sent = drain_transmits(&mut uac);
    assert_eq!(sent.len(), 1);
    assert_eq!(as_request(&sent[0]).method, Method::Invite);
    for t in sent {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    let skey = server_request_key(&mut uas);
    uas.respond(now, &skey, response(&invite, 180, Some("b")))
        .unwrap();
    pump(&mut uas, &mut uac, now, udp(UAS_ADDR));
    // The 180 released the CANCEL, built per 9.1.
    let sent = drain_transmits(&mut uac);
    assert_eq!(sent.len(), 1);
    let cancel = as_request(&sent[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, invite.uri);
    let c = cseq(&cancel.headers).unwrap();
    assert_eq!((c.seq, c.method), (1, Method::Cancel));
    assert_eq!(
        via_branch(&top_via(&cancel.headers).unwrap()).as_deref(),
        Some("z9hG4bKa")
    );
    assert_eq!(to_tag(&cancel.headers).unwrap(), None, "the INVITE's To");
    assert_eq!(
        uac.state(&TransactionKey::Client(ckey.clone())),
        Some(TransactionState::Trying)
    );
    // The UAS answers the CANCEL itself and tells its TU, which sends 487.
    for t in sent {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    let cancelled = drain_events(&mut uas);
    assert!(
        matches!(cancelled.as_slice(), [TransactionEvent::Cancelled { invite, .. }] if *invite == skey)
    );
    uas.respond(now, &skey, response(&invite, 487, Some("b")))
        .unwrap();
    let sent = drain_transmits(&mut uas);
    let codes: Vec<(u16, Method)> = sent
        .iter()
        .map(|t| {
            let r = as_response(t);
            (r.status_code.code(), cseq(&r.headers).unwrap().method)
        })
        .collect();
    assert_eq!(codes, vec![(200, Method::Cancel), (487, Method::Invite)]);
    for t in sent {
        uac.handle_message(now, t.message, udp(UAS_ADDR)).unwrap();
    }
    // The UAC ACKs the 487 itself; the UAS absorbs the ACK.
    pump(&mut uac, &mut uas, now, udp(UAC_ADDR));
    assert_eq!(
        uas.state(&TransactionKey::Server(skey)),
        Some(TransactionState::Confirmed)
    );
    assert!(drain_events(&mut uas).is_empty());
    let events = drain_events(&mut uac);
    assert!(events.iter().any(|e| matches!(e, TransactionEvent::Response { key, response } if *key == ckey && response.status_code.code() == 200)));
    assert!(events.iter().any(|e| matches!(e, TransactionEvent::Response { key, response } if *key == ikey && response.status_code.code() == 487)));
}

#[test]
fn queued_cancel_is_dropped_when_the_invite_times_out() {
    let mut now = start();
    let t0 = now;
    let mut uac = layer();
    let ikey = uac
        .send_request(now, request("INVITE", "z9hG4bKa", 1), udp(UAS_ADDR))
        .unwrap();
    uac.cancel(now, &ikey).unwrap();
    let sent = run_until(&mut uac, t0, &mut now, t0 + Duration::from_secs(40));
    assert!(sent
        .iter()
        .all(|(_, t)| as_request(t).method == Method::Invite));
    assert!(uac.is_empty());
}

#[test]
fn cancel_guard_gives_the_invite_up_64_t1_after_the_cancel() {
    let mut now = start();
    let t0 = now;
    let mut uac = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let ikey = uac
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    uac.handle_message(now, response(&invite, 180, Some("b")).into(), udp(UAS_ADDR))
        .unwrap();
    now += Duration::from_secs(10);
    uac.cancel(now, &ikey).unwrap();
    // Cancelling again is harmless and sends nothing new.
    uac.cancel(now, &ikey).unwrap();
    drain_transmits(&mut uac);
    drain_events(&mut uac);
    // Nothing answers: the CANCEL times out by F, the INVITE by the 9.1 guard, both at
    // 10 s + 64*T1.
    run_until(&mut uac, t0, &mut now, t0 + Duration::from_secs(42));
    let timeouts: Vec<TransactionKey> = drain_events(&mut uac)
        .into_iter()
        .filter_map(|e| match e {
            TransactionEvent::Timeout { key } => Some(key),
            _ => None,
        })
        .collect();
    assert!(timeouts.contains(&TransactionKey::Client(ikey.clone())));
    assert!(timeouts.contains(&TransactionKey::Client(ikey.cancel_key())));
    assert!(uac.is_empty());
}

#[test]
fn cancel_after_final_is_refused() {
    let now = start();
    let mut uac = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let ikey = uac
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    uac.handle_message(now, response(&invite, 200, Some("b")).into(), udp(UAS_ADDR))
        .unwrap();
    drain_transmits(&mut uac);
    assert!(matches!(
        uac.cancel(now, &ikey),
        Err(Error::InvalidState {
            state: TransactionState::Accepted,
            ..
        })
    ));
    assert!(drain_transmits(&mut uac).is_empty());
    let okey = uac
        .send_request(now, request("OPTIONS", "z9hG4bKo", 2), udp(UAS_ADDR))
        .unwrap();
    assert!(matches!(
        uac.cancel(now, &okey),
        Err(Error::NotInvite { .. })
    ));
}

#[test]
fn cancel_racing_200_ok() {
    // The UAS answers 200 while the UAC's CANCEL is on the way: the UAS answers the
    // CANCEL with 200 but tells its TU nothing; the UAC gets 200 for the INVITE (the TU
    // then ACKs and sends BYE).
    let now = start();
    let mut uac = layer();
    let mut uas = layer();
    let invite = request("INVITE", "z9hG4bKa", 1);
    let ikey = uac
        .send_request(now, invite.clone(), udp(UAS_ADDR))
        .unwrap();
    pump(&mut uac, &mut uas, now, udp(UAC_ADDR));
    let skey = server_request_key(&mut uas);
    uas.respond(now, &skey, response(&invite, 180, Some("b")))
        .unwrap();
    pump(&mut uas, &mut uac, now, udp(UAS_ADDR));
    uac.cancel(now, &ikey).unwrap();
    let cancel = drain_transmits(&mut uac);
    uas.respond(now, &skey, response(&invite, 200, Some("b")))
        .unwrap();
    let ok = drain_transmits(&mut uas);
    for t in cancel {
        uas.handle_message(now, t.message, udp(UAC_ADDR)).unwrap();
    }
    assert!(
        drain_events(&mut uas).is_empty(),
        "no Cancelled after the 200"
    );
    let sent = drain_transmits(&mut uas);
    assert_eq!(as_response(&sent[0]).status_code.code(), 200);
    for t in ok.into_iter().chain(sent) {
        uac.handle_message(now, t.message, udp(UAS_ADDR)).unwrap();
    }
    let events = drain_events(&mut uac);
    assert!(events.iter().any(|e| matches!(e, TransactionEvent::Response { key, response } if *key == ikey && response.status_code.code() == 200)));
    assert_eq!(
        uac.state(&TransactionKey::Client(ikey)),
        Some(TransactionState::Accepted)
    );
}

#[test]
fn cancel_matching_nothing_gets_481_and_retransmissions_get_it_again() {
    let now = start();
    let mut uas = layer();
    let cancel = request("CANCEL", "z9hG4bKnothing", 1);
    uas.handle_message(now, cancel.clone().into(), udp(UAC_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut uas);
    assert_eq!(as_response(&sent[0]).status_code.code(), 481);
    uas.handle_message(now, cancel.into(), udp(UAC_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut uas);
    assert_eq!(as_response(&sent[0]).status_code.code(), 481);
    assert!(drain_events(&mut uas).is_empty());
}
