//! Route sets (loose and strict routing, 12.2.1.1), the secure flag, and forking
//! (13.2.2.4).

use super::*;

fn record_route(value: &str) -> Header {
    Header::RecordRoute(rsip::headers::RecordRoute::new(value))
}

#[test]
fn route_sets_follow_record_route_on_both_sides() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    // Two proxies on the path record-routed the INVITE (p1 nearest to B).
    {
        let (_, invite, _) = w.b.last_request(Method::Invite);
        let mut with_rr = invite.clone();
        with_rr.headers.push(record_route("<sip:p1.example;lr>"));
        with_rr.headers.push(record_route("<sip:p2.example;lr>"));
        let last = w.b.seen.requests.len() - 1;
        w.b.seen.requests[last].1 = with_rr;
    }
    w.b_answers(200, false);
    let a_id = confirmed(&w.a);
    let b_id = confirmed(&w.b);
    let routes =
        |d: &Dialog| -> Vec<String> { d.route_set().iter().map(|r| r.uri.to_string()).collect() };
    // B (UAS) keeps the order; A (UAC) reverses the 2xx's Record-Route.
    assert_eq!(
        routes(w.b.dl.dialog(&b_id).unwrap()),
        vec!["sip:p1.example;lr", "sip:p2.example;lr"]
    );
    assert_eq!(
        routes(w.a.dl.dialog(&a_id).unwrap()),
        vec!["sip:p2.example;lr", "sip:p1.example;lr"]
    );
    // Loose routing: Request-URI is the remote target, Route the set.
    let (bye, _) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    assert_eq!(bye.uri, w.b.contact);
    let route: Vec<String> = bye
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        route,
        vec!["<sip:p2.example;lr>,<sip:p1.example;lr>".to_string()]
    );
}

#[test]
fn strict_router_takes_the_request_uri() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, _) = w.established();
    let num = w.a.dl.by_id[&a_id];
    let entry = w.a.dl.entries.get_mut(&num).unwrap();
    entry.dialog.route_set = vec![
        UriWithParamsFrom::from_str("sip:strict.example;maddr=10.0.0.1"),
        UriWithParamsFrom::from_str("sip:loose.example;lr"),
    ];
    let (uri, routes) = entry.dialog.request_uri_and_routes();
    assert_eq!(uri.to_string(), "sip:strict.example");
    let routes: Vec<String> = routes.iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(
        routes,
        vec!["sip:loose.example;lr".to_string(), w.b.contact.to_string()]
    );
    // Without a route set the request goes straight to the remote target.
    entry.dialog.route_set.clear();
    let (uri, routes) = entry.dialog.request_uri_and_routes();
    assert_eq!(uri, w.b.contact);
    assert!(routes.is_empty());
}

struct UriWithParamsFrom;

impl UriWithParamsFrom {
    fn from_str(s: &str) -> rsip::UriWithParams {
        rsip::UriWithParams {
            uri: uri(s),
            params: Vec::new(),
        }
    }
}

#[test]
fn sips_request_uri_makes_a_secure_dialog() {
    let now = Instant::now();
    let mut dl = DialogLayer::new(DialogConfig::default(), 3);
    let peer = Peer {
        addr: B_ADDR,
        transport: TransportKind::Tls,
    };
    let invite = dl
        .invite(
            now,
            "<sips:alice@example.com>",
            "<sips:bob@example.com>",
            uri("sips:bob@example.com"),
            uri("sips:alice@192.0.2.10:5061"),
            Vec::new(),
            Vec::new(),
            peer,
        )
        .unwrap();
    let mut ok = response_for(&invite, 200u16.into(), Some("bobtag"));
    ok.headers.push(Header::Contact(rsip::headers::Contact::new(
        "<sips:bob@192.0.2.20:5061>",
    )));
    assert!(matches!(
        dl.on_response(now, &ok).unwrap(),
        ResponseDisposition::Pass(Some(_))
    ));
    let id = match dl.poll_event() {
        Some(DialogEvent::Confirmed { id }) => id,
        other => panic!("unexpected {other:?}"),
    };
    let dialog = dl.dialog(&id).unwrap();
    assert!(dialog.secure());
    assert_eq!(dialog.peer(), peer);
    // The ACK went out over TLS to the peer.
    match dl.poll_action() {
        Some(DialogAction::SendStateless {
            message: SipMessage::Request(ack),
            destination,
        }) => {
            assert_eq!(destination, peer);
            assert_eq!(ack.method, Method::Ack);
            assert_eq!(ack.uri, uri("sips:bob@192.0.2.20:5061"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn forked_invite_first_2xx_wins_and_late_2xx_is_acked_and_byed() {
    let mut now = Instant::now();
    let t0 = now;
    let mut dl = DialogLayer::new(DialogConfig::default(), 4);
    let peer = Peer {
        addr: B_ADDR,
        transport: TransportKind::Udp,
    };
    let invite = dl
        .invite(
            now,
            "<sip:alice@192.0.2.10>",
            "<sip:bob@example.com>",
            uri("sip:bob@example.com"),
            uri("sip:alice@192.0.2.10"),
            Vec::new(),
            Vec::new(),
            peer,
        )
        .unwrap();
    let fork = |code: u16, tag: &str, host: &str| {
        let mut r = response_for(&invite, code.into(), Some(tag));
        r.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:bob@{host}>"
            ))));
        r
    };
    let x180 = fork(180, "x", "192.0.2.31");
    let y180 = fork(180, "y", "192.0.2.32");
    let x200 = fork(200, "x", "192.0.2.31");
    let y200 = fork(200, "y", "192.0.2.32");
    assert!(matches!(
        dl.on_response(now, &x180).unwrap(),
        ResponseDisposition::Pass(Some(_))
    ));
    assert!(matches!(
        dl.on_response(now, &y180).unwrap(),
        ResponseDisposition::Pass(Some(_))
    ));
    let early: Vec<DialogEvent> = std::iter::from_fn(|| dl.poll_event()).collect();
    assert_eq!(early.len(), 2);
    assert!(early.iter().all(|e| matches!(e, DialogEvent::Early { .. })));
    // x answers first: confirmed, ACKed; y's early dialog ends.
    let x_id = match dl.on_response(now, &x200).unwrap() {
        ResponseDisposition::Pass(Some(id)) => id,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(x_id.remote_tag, "x");
    let events: Vec<DialogEvent> = std::iter::from_fn(|| dl.poll_event()).collect();
    assert!(events.contains(&DialogEvent::Confirmed { id: x_id.clone() }));
    assert!(events.iter().any(|e| matches!(e, DialogEvent::Terminated { id, reason: EndReason::ForkLost } if id.remote_tag == "y")));
    let actions: Vec<DialogAction> = std::iter::from_fn(|| dl.poll_action()).collect();
    assert!(matches!(
        actions.as_slice(),
        [DialogAction::SendStateless { .. }]
    ));
    // y answers too, later: ACK and BYE it; the TU never sees it.
    now += Duration::from_secs(1);
    assert_eq!(
        dl.on_response(now, &y200).unwrap(),
        ResponseDisposition::Absorb
    );
    let actions: Vec<DialogAction> = std::iter::from_fn(|| dl.poll_action()).collect();
    match actions.as_slice() {
        [DialogAction::SendStateless {
            message: SipMessage::Request(ack),
            ..
        }, DialogAction::SendRequest {
            request: bye,
            dialog,
            ..
        }] => {
            assert_eq!(ack.method, Method::Ack);
            assert_eq!(ack.uri, uri("sip:bob@192.0.2.32"));
            assert_eq!(bye.method, Method::Bye);
            assert_eq!(bye.uri, uri("sip:bob@192.0.2.32"));
            assert_eq!(
                transaction::to_tag(&bye.headers).unwrap().as_deref(),
                Some("y")
            );
            assert_eq!(dialog.remote_tag, "y");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        dl.poll_event().is_none(),
        "y was reported ended once already"
    );
    // Retransmissions of either 2xx only repeat the ACK.
    assert_eq!(
        dl.on_response(now, &x200).unwrap(),
        ResponseDisposition::Absorb
    );
    assert_eq!(
        dl.on_response(now, &y200).unwrap(),
        ResponseDisposition::Absorb
    );
    let actions: Vec<DialogAction> = std::iter::from_fn(|| dl.poll_action()).collect();
    assert_eq!(actions.len(), 2);
    assert!(actions
        .iter()
        .all(|a| matches!(a, DialogAction::SendStateless { .. })));
    assert_eq!(dl.dialog(&x_id).unwrap().state(), DialogState::Confirmed);
    // 64*T1 later the forking window closes and y is forgotten; x stays.
    while let Some(at) = dl.timeout() {
        if at > t0 + Duration::from_secs(40) {
            break;
        }
        now = at;
        dl.handle_timeout(now);
    }
    assert!(dl.sets.is_empty());
    assert_eq!(dl.len(), 1);
    assert!(dl.dialog(&x_id).is_some());
}

#[test]
fn rejected_invite_ends_every_early_fork() {
    let now = Instant::now();
    let mut dl = DialogLayer::new(DialogConfig::default(), 5);
    let peer = Peer {
        addr: B_ADDR,
        transport: TransportKind::Udp,
    };
    let invite = dl
        .invite(
            now,
            "<sip:alice@192.0.2.10>",
            "<sip:bob@example.com>",
            uri("sip:bob@example.com"),
            uri("sip:alice@192.0.2.10"),
            Vec::new(),
            Vec::new(),
            peer,
        )
        .unwrap();
    for tag in ["x", "y"] {
        let mut r = response_for(&invite, 183u16.into(), Some(tag));
        r.headers.push(Header::Contact(rsip::headers::Contact::new(
            "<sip:bob@192.0.2.30>",
        )));
        dl.on_response(now, &r).unwrap();
    }
    let busy = response_for(&invite, 486u16.into(), Some("x"));
    dl.on_response(now, &busy).unwrap();
    let ended: Vec<DialogEvent> = std::iter::from_fn(|| dl.poll_event())
        .filter(|e| {
            matches!(
                e,
                DialogEvent::Terminated {
                    reason: EndReason::Rejected(486),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(ended.len(), 2);
}

#[test]
fn bad_inputs_are_errors_and_change_nothing() {
    let now = Instant::now();
    let mut dl = DialogLayer::new(DialogConfig::default(), 6);
    // A response without From tag.
    let mut w = World::new(TransportKind::Udp);
    let call = w.call(Vec::new());
    let mut r = response_for(&call.invite, 200u16.into(), Some("t"));
    r.headers.retain(|h| !matches!(h, Header::From(_)));
    r.headers.push(Header::From(rsip::headers::From::new(
        "<sip:alice@192.0.2.10>",
    )));
    assert_eq!(
        dl.on_response(now, &r).unwrap_err(),
        Error::MissingHeader { header: "From tag" }
    );
    // A 2xx for an INVITE we never sent: absorbed.
    let ok = response_for(&call.invite, 200u16.into(), Some("t"));
    assert_eq!(
        dl.on_response(now, &ok).unwrap(),
        ResponseDisposition::Absorb
    );
    // Unknown dialog.
    let id = DialogId {
        call_id: "c".into(),
        local_tag: "l".into(),
        remote_tag: "r".into(),
    };
    assert!(matches!(
        dl.send_request(now, &id, Method::Bye, Vec::new(), Vec::new()),
        Err(Error::UnknownDialog { .. })
    ));
    assert!(matches!(
        dl.send_request(now, &id, Method::Ack, Vec::new(), Vec::new()),
        Err(Error::MethodNotAllowed {
            method: Method::Ack
        })
    ));
    // ACK for nothing.
    assert_eq!(dl.on_ack(now, &call.invite), None);
    // Tracking a non-INVITE.
    let mut options = call.invite.clone();
    options.method = Method::Options;
    assert!(matches!(
        dl.track_invite(now, &options, uri("sip:a@b"), w.a.peer_of(B_ADDR)),
        Err(Error::NotInvite { .. })
    ));
    assert!(dl.is_empty());
    assert!(dl.poll_action().is_none() && dl.poll_event().is_none());
    assert!(dl.timeout().is_none());
}

#[test]
fn failed_invite_ends_its_early_dialogs_and_is_forgotten() {
    let mut now = Instant::now();
    let t0 = now;
    let mut dl = DialogLayer::new(DialogConfig::default(), 8);
    let peer = Peer {
        addr: B_ADDR,
        transport: TransportKind::Udp,
    };
    let invite = dl
        .invite(
            now,
            "<sip:alice@192.0.2.10>",
            "<sip:bob@example.com>",
            uri("sip:bob@example.com"),
            uri("sip:alice@192.0.2.10"),
            Vec::new(),
            Vec::new(),
            peer,
        )
        .unwrap();
    let mut ringing = response_for(&invite, 180u16.into(), Some("x"));
    ringing
        .headers
        .push(Header::Contact(rsip::headers::Contact::new(
            "<sip:bob@192.0.2.30>",
        )));
    dl.on_response(now, &ringing).unwrap();
    dl.on_invite_failed(now, &invite);
    let events: Vec<DialogEvent> = std::iter::from_fn(|| dl.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        DialogEvent::Terminated {
            reason: EndReason::Rejected(408),
            ..
        }
    )));
    while let Some(at) = dl.timeout() {
        now = at;
        dl.handle_timeout(now);
    }
    assert_eq!(now, t0 + Duration::from_secs(32));
    assert!(dl.is_empty());
}
