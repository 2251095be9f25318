//! What a transaction keeps while its timers run: only what it may still send again or
//! answer from. A finished short call leaves four transactions behind for up to 32 s
//! (timers L, M, J, K), so a whole INVITE with SDP kept in each would multiply the
//! box's memory at high call rates (BENCHMARKS.md, "SIP signalling"); the heap a whole
//! call keeps is counted in `tests/retained_memory.rs`.

use super::*;

/// Whether the transaction `key` holds its request, a response to resend, an ACK.
fn held(layer: &TransactionLayer, key: &TransactionKey) -> (bool, bool, bool) {
    let id = layer.id_of(key).expect("transaction alive");
    let tx = &layer.transactions[&id];
    (
        tx.request.is_some(),
        tx.last_response.is_some(),
        tx.ack.is_some(),
    )
}

fn invite_with_sdp(branch: &str) -> rsip::Request {
    let mut invite = request("INVITE", branch, 1);
    invite.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n\
t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        .to_vec();
    invite
}

fn server(layer: &mut TransactionLayer, now: Instant, req: &rsip::Request) -> TransactionKey {
    layer
        .handle_message(now, req.clone().into(), udp(UAC_ADDR))
        .unwrap();
    let key = drain_events(layer)
        .into_iter()
        .find_map(|e| match e {
            TransactionEvent::Request { key, .. } => Some(key),
            _ => None,
        })
        .expect("a new server transaction");
    TransactionKey::Server(key)
}

fn server_key(key: &TransactionKey) -> &ServerKey {
    match key {
        TransactionKey::Server(k) => k,
        TransactionKey::Client(_) => panic!("a server key"),
    }
}

#[test]
fn answered_server_invite_keeps_neither_the_invite_nor_its_2xx() {
    let now = start();
    let mut layer = layer();
    let invite = invite_with_sdp("z9hG4bKsrv200");
    let key = server(&mut layer, now, &invite);
    // Proceeding: the INVITE stays for the 100 Trying it may still need.
    assert_eq!(held(&layer, &key), (true, false, false));
    layer
        .respond(now, server_key(&key), response(&invite, 180, Some("b")))
        .unwrap();
    assert_eq!(held(&layer, &key), (true, true, false));
    let mut ok = response(&invite, 200, Some("b"));
    ok.body = invite.body.clone();
    layer.respond(now, server_key(&key), ok).unwrap();
    assert_eq!(layer.state(&key), Some(TransactionState::Accepted));
    assert_eq!(held(&layer, &key), (false, false, false));
    // A retransmitted INVITE is still absorbed (nothing to send from Accepted).
    drain_transmits(&mut layer);
    layer
        .handle_message(now, invite.clone().into(), udp(UAC_ADDR))
        .unwrap();
    assert!(drain_transmits(&mut layer).is_empty());
    assert!(drain_events(&mut layer).is_empty());
}

#[test]
fn rejected_server_invite_keeps_only_its_final_response() {
    let now = start();
    let mut layer = layer();
    let invite = invite_with_sdp("z9hG4bKsrv486");
    let key = server(&mut layer, now, &invite);
    layer
        .respond(now, server_key(&key), response(&invite, 486, Some("b")))
        .unwrap();
    assert_eq!(layer.state(&key), Some(TransactionState::Completed));
    assert_eq!(held(&layer, &key), (false, true, false));
    // ... which a retransmitted INVITE still gets.
    drain_transmits(&mut layer);
    layer
        .handle_message(now, invite.into(), udp(UAC_ADDR))
        .unwrap();
    let sent = drain_transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(as_response(&sent[0]).status_code.code(), 486);
}

#[test]
fn server_non_invite_never_keeps_its_request() {
    let now = start();
    let mut layer = layer();
    let bye = request("BYE", "z9hG4bKsrvbye", 2);
    let key = server(&mut layer, now, &bye);
    assert_eq!(held(&layer, &key), (false, false, false));
    layer
        .respond(now, server_key(&key), response(&bye, 200, None))
        .unwrap();
    assert_eq!(layer.state(&key), Some(TransactionState::Completed));
    assert_eq!(held(&layer, &key), (false, true, false));
}

#[test]
fn client_transactions_drop_their_request_at_the_final_response() {
    let now = start();
    let mut layer = layer();
    let dest = udp(UAS_ADDR);
    // INVITE answered 200: Accepted holds nothing.
    let invite = invite_with_sdp("z9hG4bKcli200");
    let k = TransactionKey::Client(layer.send_request(now, invite.clone(), dest).unwrap());
    assert_eq!(held(&layer, &k), (true, false, false));
    layer
        .handle_message(now, response(&invite, 200, Some("b")).into(), dest)
        .unwrap();
    assert_eq!(layer.state(&k), Some(TransactionState::Accepted));
    assert_eq!(held(&layer, &k), (false, false, false));
    // INVITE answered 486: Completed holds only the ACK it resends.
    let invite = invite_with_sdp("z9hG4bKcli486");
    let k = TransactionKey::Client(layer.send_request(now, invite.clone(), dest).unwrap());
    layer
        .handle_message(now, response(&invite, 486, Some("b")).into(), dest)
        .unwrap();
    assert_eq!(layer.state(&k), Some(TransactionState::Completed));
    assert_eq!(held(&layer, &k), (false, false, true));
    drain_transmits(&mut layer);
    layer
        .handle_message(now, response(&invite, 486, Some("b")).into(), dest)
        .unwrap();
    let sent = drain_transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(as_request(&sent[0]).method, Method::Ack);
    // BYE answered 200: Completed (timer K) holds nothing.
    let bye = request("BYE", "z9hG4bKclibye", 2);
    let k = TransactionKey::Client(layer.send_request(now, bye.clone(), dest).unwrap());
    assert_eq!(held(&layer, &k), (true, false, false));
    layer
        .handle_message(now, response(&bye, 200, None).into(), dest)
        .unwrap();
    assert_eq!(layer.state(&k), Some(TransactionState::Completed));
    assert_eq!(held(&layer, &k), (false, false, false));
}

#[test]
fn a_transaction_is_small_once_its_messages_are_dropped() {
    // The messages are boxed, so a lingering transaction does not carry room for
    // them (it was 712 bytes on x86_64 with them inline).
    assert!(
        std::mem::size_of::<Transaction>() <= 256,
        "{} bytes",
        std::mem::size_of::<Transaction>()
    );
}
