//! Re-INVITE glare (491 and the 14.1 back-off) and 100rel/PRACK (RFC 3262).

use super::*;

/// `side` answers the last INVITE it received with `status`.
fn answer(side: &mut Side, now: Instant, status: u16, reliable: bool) -> Result<rsip::Response> {
    let (key, invite, source) = side.last_request(Method::Invite);
    let contact = side.contact.clone();
    let response = side.dl.answer_invite(
        now,
        &key,
        &invite,
        source,
        status,
        &contact,
        Vec::new(),
        Vec::new(),
        reliable,
    )?;
    side.tl
        .respond(now, &key, response.clone())
        .expect("server transaction takes the answer");
    Ok(response)
}

fn supported_100rel() -> Vec<Header> {
    vec![Header::Supported(rsip::headers::Supported::new("100rel"))]
}

#[test]
fn glare_gets_491_and_each_side_retries_after_its_back_off() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, b_id) = w.established();
    let start = w.now - w.t0;
    let (ra, da) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Invite, Vec::new(), b"hold-a".to_vec())
            .unwrap();
    let (rb, db) =
        w.b.dl
            .send_request(w.now, &b_id, Method::Invite, Vec::new(), b"hold-b".to_vec())
            .unwrap();
    w.a.tl.send_request(w.now, ra, da).unwrap();
    w.b.tl.send_request(w.now, rb, db).unwrap();
    w.settle();
    // Each side refused the other's re-INVITE with 491 (14.2).
    assert_eq!(w.times(|x| x.is_response(491, Method::Invite)).len(), 2);
    for side in [&w.a, &w.b] {
        assert!(side
            .seen
            .requests
            .iter()
            .any(|(_, r, _, d)| r.method == Method::Invite
                && *d
                    == RequestDisposition::Reject(Rejection {
                        status: 491,
                        retry_after: None
                    })));
    }
    // B (not the Call-ID owner) retries within 0-2 s; A answers it.
    w.advance(ms(2050));
    let invites_b: Vec<u64> = w.times(|x| x.is_request(Method::Invite) && !x.to_b);
    assert_eq!(invites_b.len(), 2, "B's first re-INVITE and its retry");
    let retry_b = invites_b[1] - start.as_millis() as u64;
    assert!(
        retry_b <= 2000 && retry_b % 10 == 0,
        "B retried after {retry_b} ms"
    );
    let (_, got, _) = w.a.last_request(Method::Invite);
    assert_eq!(got.body, b"hold-b");
    answer(&mut w.a, w.now, 200, false).unwrap();
    w.settle();
    // A (the owner) retries within 2.1-4 s; B answers it.
    w.advance(ms(2000));
    let invites_a: Vec<u64> = w.times(|x| x.is_request(Method::Invite) && x.to_b);
    assert_eq!(invites_a.len(), 3, "initial INVITE, first re-INVITE, retry");
    let retry_a = invites_a[2] - start.as_millis() as u64;
    assert!(
        (2100..=4000).contains(&retry_a) && retry_a % 10 == 0,
        "A retried after {retry_a} ms"
    );
    let (_, got, _) = w.b.last_request(Method::Invite);
    assert_eq!(got.body, b"hold-a");
    // The retry carries a new CSeq (A: INVITE 1, re-INVITE 2, retry 3).
    assert_eq!(transaction::cseq(&got.headers).unwrap().seq, 3);
    answer(&mut w.b, w.now, 200, false).unwrap();
    w.advance(secs(10));
    assert!(w.a.terminated().is_empty() && w.b.terminated().is_empty());
    // Every 2xx to a re-INVITE was ACKed.
    assert_eq!(w.a.seen.acks.len(), 1);
    assert_eq!(
        w.b.seen.acks.len(),
        2,
        "the initial INVITE's and the retry's"
    );
}

#[test]
fn second_incoming_re_invite_gets_500_with_retry_after() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, b_id) = w.established();
    let (r1, d) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Invite, Vec::new(), Vec::new())
            .unwrap();
    w.a.tl.send_request(w.now, r1, d).unwrap();
    w.settle();
    // A's layer would refuse a second re-INVITE; a buggy peer sends one anyway.
    let mut second = w.b.last_request(Method::Invite).1;
    second.headers.retain(|h| !matches!(h, Header::CSeq(_)));
    second.headers.push(Header::CSeq(
        rsip::typed::CSeq {
            seq: 3,
            method: Method::Invite,
        }
        .into(),
    ));
    match w.b.dl.on_request(w.now, &second) {
        RequestDisposition::Reject(Rejection {
            status: 500,
            retry_after: Some(s),
        }) => assert!(s <= 10),
        other => panic!("unexpected {other:?}"),
    }
    assert!(w.b.dl.dialog(&b_id).is_some());
}

#[test]
fn reliable_provisional_is_pracked_and_stops_retransmitting() {
    let mut w = World::new(TransportKind::Udp);
    w.call(supported_100rel());
    let response = answer(&mut w.b, w.now, 180, true).unwrap();
    w.settle();
    let rseq = transaction::other_header(&response.headers, "RSeq")
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert!(response
        .headers
        .iter()
        .any(|h| matches!(h, Header::Require(r) if r.value() == "100rel")));
    let pracks: Vec<&Wire> = w
        .wire
        .iter()
        .filter(|x| x.is_request(Method::PRack))
        .collect();
    assert_eq!(pracks.len(), 1);
    let SipMessage::Request(prack) = &pracks[0].message else {
        unreachable!()
    };
    assert_eq!(
        transaction::other_header(&prack.headers, "RAck"),
        Some(format!("{rseq} 1 INVITE").as_str())
    );
    assert_eq!(transaction::cseq(&prack.headers).unwrap().seq, 2);
    assert!(matches!(
        w.b.seen.requests.last(),
        Some((_, r, _, RequestDisposition::InDialog(_))) if r.method == Method::PRack
    ));
    w.advance(secs(10));
    assert_eq!(w.times(|x| x.is_response(180, Method::Invite)), vec![0]);
    // Another reliable 1xx may follow now that the first was PRACKed; it gets RSeq + 1.
    let next = answer(&mut w.b, w.now, 183, true).unwrap();
    assert_eq!(
        transaction::other_header(&next.headers, "RSeq"),
        Some((rseq + 1).to_string().as_str())
    );
    w.settle();
    assert_eq!(w.times(|x| x.is_request(Method::PRack)).len(), 2);
    answer(&mut w.b, w.now, 200, false).unwrap();
    w.settle();
    assert!(w
        .a
        .seen
        .events
        .iter()
        .any(|e| matches!(e, DialogEvent::Confirmed { .. })));
}

#[test]
fn lost_reliable_provisional_is_retransmitted_until_prack() {
    let mut w = World::new(TransportKind::Udp);
    let mut first = true;
    w.drop = Box::new(move |x| {
        if x.is_response(180, Method::Invite) && first {
            first = false;
            return true;
        }
        false
    });
    w.call(supported_100rel());
    answer(&mut w.b, w.now, 180, true).unwrap();
    w.advance(secs(10));
    // At 500 ms the 180 goes out twice: the dialog layer's retransmission, and the
    // server transaction's answer to the INVITE retransmission (timer A) it triggered.
    assert_eq!(
        w.times(|x| x.is_response(180, Method::Invite)),
        vec![0, 500, 500]
    );
    // One PRACK only: the duplicate was dropped.
    assert_eq!(w.times(|x| x.is_request(Method::PRack)), vec![500]);
    assert_eq!(w.times(|x| x.is_request(Method::Invite)), vec![0, 500]);
}

#[test]
fn unpracked_reliable_provisional_times_out_after_64_t1() {
    let mut w = World::new(TransportKind::Udp);
    w.drop = Box::new(|x| x.is_response(180, Method::Invite));
    w.call(supported_100rel());
    answer(&mut w.b, w.now, 180, true).unwrap();
    w.advance(secs(40));
    // Each retransmission (T1 doubling) coincides with the server transaction's answer
    // to the INVITE retransmission of the same schedule (timer A), hence the pairs.
    let mut times = w.times(|x| x.is_response(180, Method::Invite));
    assert_eq!(times.len(), 13);
    times.dedup();
    assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert!(w
        .b
        .seen
        .events
        .iter()
        .any(|e| matches!(e, DialogEvent::PrackTimeout { .. })));
    assert!(w.times(|x| x.is_request(Method::PRack)).is_empty());
    // The TU rejects the INVITE with a 5xx; the early dialog ends.
    answer(&mut w.b, w.now, 504, false).unwrap();
    w.settle();
    assert!(matches!(
        w.b.terminated().as_slice(),
        [(_, EndReason::Rejected(504))]
    ));
}

#[test]
fn duplicate_and_out_of_order_reliable_provisionals_are_dropped() {
    let mut w = World::new(TransportKind::Udp);
    w.call(supported_100rel());
    let response = answer(&mut w.b, w.now, 180, true).unwrap();
    w.settle();
    assert_eq!(w.times(|x| x.is_request(Method::PRack)).len(), 1);
    // The same reliable 180 again (a network duplicate): absorbed, no second PRACK.
    assert_eq!(
        w.a.dl.on_response(w.now, &response).unwrap(),
        ResponseDisposition::Absorb
    );
    // RSeq jumping ahead by two: out of order, dropped.
    let rseq: u32 = transaction::other_header(&response.headers, "RSeq")
        .unwrap()
        .parse()
        .unwrap();
    let mut skipped = response.clone();
    skipped
        .headers
        .retain(|h| !matches!(h, Header::Other(n, _) if n == "RSeq"));
    skipped
        .headers
        .push(Header::Other("RSeq".into(), (rseq + 2).to_string()));
    assert_eq!(
        w.a.dl.on_response(w.now, &skipped).unwrap(),
        ResponseDisposition::Absorb
    );
    assert!(w.a.dl.poll_action().is_none());
}

#[test]
fn prack_refusals() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    // The INVITE did not offer 100rel.
    assert_eq!(
        answer(&mut w.b, w.now, 180, true).unwrap_err(),
        Error::No100rel
    );
    let mut w = World::new(TransportKind::Udp);
    w.drop = Box::new(|x| x.is_response(180, Method::Invite));
    w.call(supported_100rel());
    answer(&mut w.b, w.now, 180, true).unwrap();
    w.settle();
    // A second reliable provisional before the first is PRACKed.
    assert!(matches!(
        answer(&mut w.b, w.now, 183, true),
        Err(Error::PrackPending { .. })
    ));
    // A PRACK whose RAck matches nothing: 481.
    let b_id = match &w.b.seen.events[0] {
        DialogEvent::Early { id } => id.clone(),
        e => panic!("unexpected {e:?}"),
    };
    let (mut prack, _) =
        w.b.dl
            .send_request(w.now, &b_id, Method::Info, Vec::new(), Vec::new())
            .unwrap();
    // Turn B's own request into one "from A" with a wrong RAck.
    prack.method = Method::PRack;
    let from = prack
        .headers
        .iter()
        .find(|h| matches!(h, Header::From(_)))
        .cloned()
        .unwrap();
    let to = prack
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap();
    prack
        .headers
        .retain(|h| !matches!(h, Header::From(_) | Header::To(_) | Header::CSeq(_)));
    let (Header::From(f), Header::To(t)) = (from, to) else {
        unreachable!()
    };
    prack.headers.push(Header::From(rsip::headers::From::new(
        t.value().to_string(),
    )));
    prack
        .headers
        .push(Header::To(rsip::headers::To::new(f.value().to_string())));
    prack.headers.push(Header::CSeq(
        rsip::typed::CSeq {
            seq: 5,
            method: Method::PRack,
        }
        .into(),
    ));
    prack
        .headers
        .push(Header::Other("RAck".into(), "999999 1 INVITE".into()));
    assert_eq!(
        w.b.dl.on_request(w.now, &prack),
        RequestDisposition::Reject(Rejection {
            status: 481,
            retry_after: None
        })
    );
}

#[test]
fn rack_parsing() {
    assert_eq!(
        parse_rack("776656 1 INVITE"),
        Some((776656, 1, Method::Invite))
    );
    assert_eq!(parse_rack(" 1  2 INVITE "), Some((1, 2, Method::Invite)));
    assert_eq!(parse_rack("1 INVITE"), None);
    assert_eq!(parse_rack("x 1 INVITE"), None);
    assert_eq!(parse_rack("1 2 INVITE extra"), None);
    assert_eq!(parse_rack(""), None);
}
