//! Calls end to end: creation, 2xx retransmission and ACK, BYE (crossed too), CANCEL,
//! in-dialog validation, hold/resume re-INVITE, UPDATE, reliable transports.

use super::*;

#[test]
fn basic_call_creates_dialogs_on_both_sides_and_bye_ends_them() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    w.b_answers(180, false);
    assert!(matches!(
        w.a.seen.events.as_slice(),
        [DialogEvent::Early { .. }]
    ));
    assert!(matches!(
        w.b.seen.events.as_slice(),
        [DialogEvent::Early { .. }]
    ));
    w.b_answers(200, false);
    let a_id = confirmed(&w.a);
    let b_id = confirmed(&w.b);
    assert_eq!(a_id.call_id, b_id.call_id);
    assert_eq!(a_id.local_tag, b_id.remote_tag);
    assert_eq!(a_id.remote_tag, b_id.local_tag);
    let a = w.a.dl.dialog(&a_id).unwrap();
    assert_eq!(a.state(), DialogState::Confirmed);
    assert_eq!(a.role(), Role::Uac);
    assert_eq!(a.remote_target(), &w.b.contact);
    assert_eq!(a.local_seq(), 1);
    let b = w.b.dl.dialog(&b_id).unwrap();
    assert_eq!(b.remote_target(), &w.a.contact);
    assert_eq!(b.remote_seq(), Some(1));
    // The ACK for the 2xx reached B (CSeq number of the INVITE) and no 2xx retransmission
    // follows.
    assert_eq!(w.b.seen.acks.len(), 1);
    let ack_cseq = transaction::cseq(&w.b.seen.acks[0].headers).unwrap();
    assert_eq!((ack_cseq.seq, ack_cseq.method), (1, Method::Ack));
    w.advance(secs(10));
    assert_eq!(w.times(|x| x.is_response(200, Method::Invite)).len(), 1);

    let (bye, dest) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    assert_eq!(transaction::cseq(&bye.headers).unwrap().seq, 2);
    assert_eq!(bye.uri, w.b.contact);
    w.a.tl.send_request(w.now, bye, dest).unwrap();
    w.settle();
    assert_eq!(w.a.terminated(), vec![(a_id.clone(), EndReason::LocalBye)]);
    assert_eq!(w.b.terminated(), vec![(b_id.clone(), EndReason::RemoteBye)]);
    // The 200 to the BYE was absorbed by A's dialog layer.
    assert!(matches!(
        w.a.seen.responses.last(),
        Some((r, ResponseDisposition::Absorb)) if r.status_code.code() == 200
    ));
    assert!(matches!(
        w.a.dl
            .send_request(w.now, &a_id, Method::Info, Vec::new(), Vec::new()),
        Err(Error::DialogEnded { .. })
    ));
    // Everything is forgotten after the linger time.
    w.advance(secs(40));
    assert!(w.a.dl.is_empty() && w.b.dl.is_empty());
    assert!(w.a.tl.is_empty() && w.b.tl.is_empty());
}

#[test]
fn uas_retransmits_2xx_until_the_ack_and_uac_acks_each() {
    let mut w = World::new(TransportKind::Udp);
    // The first two ACKs are lost.
    let mut acks = 0;
    w.drop = Box::new(move |x| {
        if x.is_request(Method::Ack) {
            acks += 1;
            return acks <= 2;
        }
        false
    });
    w.call(Vec::new());
    w.b_answers(200, false);
    w.advance(secs(10));
    // 200 at 0, retransmitted at 0.5 and 1.5 s; the ACK to the second retransmission
    // got through.
    assert_eq!(
        w.times(|x| x.is_response(200, Method::Invite)),
        vec![0, 500, 1500]
    );
    assert_eq!(w.times(|x| x.is_request(Method::Ack)), vec![0, 500, 1500]);
    // All ACKs are the same message (same branch, CSeq).
    let acks: Vec<&Wire> = w
        .wire
        .iter()
        .filter(|x| x.is_request(Method::Ack))
        .collect();
    assert!(acks
        .windows(2)
        .all(|p| p[0].message.to_string() == p[1].message.to_string()));
    assert_eq!(w.b.seen.acks.len(), 1);
    assert!(w.b.terminated().is_empty());
}

#[test]
fn unacknowledged_2xx_is_given_up_after_64_t1_with_a_bye() {
    let mut w = World::new(TransportKind::Udp);
    w.drop = Box::new(|x| x.is_request(Method::Ack));
    w.call(Vec::new());
    w.b_answers(200, false);
    w.advance(secs(40));
    assert_eq!(
        w.times(|x| x.is_response(200, Method::Invite) && !x.to_b),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    // At 64*T1 B sends BYE and the dialog ends with NoAck; A's dialog ends on the BYE.
    assert_eq!(w.times(|x| x.is_request(Method::Bye)), vec![32000]);
    assert!(matches!(
        w.b.terminated().as_slice(),
        [(_, EndReason::NoAck)]
    ));
    assert!(matches!(
        w.a.terminated().as_slice(),
        [(_, EndReason::RemoteBye)]
    ));
}

#[test]
fn crossed_byes_end_each_dialog_once_without_error() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, b_id) = w.established();
    let (bye_a, dest_a) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    let (bye_b, dest_b) =
        w.b.dl
            .send_request(w.now, &b_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    // Both BYEs are on the wire before either arrives.
    w.a.tl.send_request(w.now, bye_a, dest_a).unwrap();
    w.b.tl.send_request(w.now, bye_b, dest_b).unwrap();
    w.settle();
    for side in [&w.a, &w.b] {
        assert_eq!(side.terminated().len(), 1, "one Terminated per side");
        assert_eq!(side.terminated()[0].1, EndReason::LocalBye);
        // The peer's BYE was accepted (answered 200) ...
        let (_, _, _, d) = side
            .seen
            .requests
            .iter()
            .find(|(_, r, _, _)| r.method == Method::Bye)
            .unwrap();
        assert!(matches!(d, RequestDisposition::InDialog(_)));
        // ... and the answer to our own BYE was absorbed.
        assert!(side
            .seen
            .responses
            .iter()
            .any(|(r, d)| r.status_code.code() == 200 && *d == ResponseDisposition::Absorb));
        assert_eq!(side.seen.timeouts, 0);
    }
    assert_eq!(w.times(|x| x.is_response(200, Method::Bye)).len(), 2);
    w.advance(secs(40));
    assert!(w.a.dl.is_empty() && w.b.dl.is_empty());
}

#[test]
fn cancel_before_answer_ends_the_early_dialog_with_487() {
    let mut w = World::new(TransportKind::Udp);
    let call = w.call(Vec::new());
    w.b_answers(180, false);
    w.a.tl.cancel(w.now, &call.key).unwrap();
    w.settle();
    assert_eq!(w.b.seen.cancelled.len(), 1);
    w.b_answers(487, false);
    assert!(matches!(
        w.a.terminated().as_slice(),
        [(_, EndReason::Rejected(487))]
    ));
    assert!(matches!(
        w.b.terminated().as_slice(),
        [(_, EndReason::Rejected(487))]
    ));
    // The transaction layer ACKed the 487 itself: no 2xx ACK, no BYE.
    assert_eq!(w.times(|x| x.is_request(Method::Ack)).len(), 1);
    assert!(w.times(|x| x.is_request(Method::Bye)).is_empty());
    w.advance(secs(40));
    assert!(w.a.dl.is_empty() && w.b.dl.is_empty());
    assert!(w.a.tl.is_empty() && w.b.tl.is_empty());
}

#[test]
fn cancel_racing_200_leaves_a_confirmed_dialog_that_the_uac_can_bye() {
    let mut w = World::new(TransportKind::Udp);
    let call = w.call(Vec::new());
    w.b_answers(180, false);
    // The 200 is sent by B while A's CANCEL is in flight: deliver the CANCEL only after.
    w.a.tl.cancel(w.now, &call.key).unwrap();
    let cancel = w.a.tl.poll_transmit().unwrap();
    w.b_answers(200, false);
    let src = w.b.peer_of(A_ADDR);
    w.b.tl.handle_message(w.now, cancel.message, src).unwrap();
    w.settle();
    assert!(w.b.seen.cancelled.is_empty());
    let a_id = confirmed(&w.a);
    let (bye, dest) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    w.a.tl.send_request(w.now, bye, dest).unwrap();
    w.settle();
    assert!(matches!(
        w.b.terminated().as_slice(),
        [(_, EndReason::RemoteBye)]
    ));
}

#[test]
fn in_dialog_validation_rejects_unknown_dialogs_and_old_cseq() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, b_id) = w.established();
    // An INFO with an unknown To tag: 481.
    let (mut info, _) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Info, Vec::new(), Vec::new())
            .unwrap();
    let good = info.clone();
    info.headers.retain(|h| !matches!(h, Header::To(_)));
    info.headers.push(Header::To(rsip::headers::To::new(
        "<sip:bob@192.0.2.20>;tag=nope",
    )));
    assert_eq!(
        w.b.dl.on_request(w.now, &info),
        RequestDisposition::Reject(Rejection {
            status: 481,
            retry_after: None
        })
    );
    assert_eq!(
        w.b.dl.on_request(w.now, &good),
        RequestDisposition::InDialog(b_id.clone())
    );
    assert_eq!(w.b.dl.dialog(&b_id).unwrap().remote_seq(), Some(2));
    // A request with a CSeq below the remote CSeq: 500, and the remote CSeq stays.
    let mut old = good.clone();
    old.headers.retain(|h| !matches!(h, Header::CSeq(_)));
    old.headers.push(Header::CSeq(
        rsip::typed::CSeq {
            seq: 1,
            method: Method::Info,
        }
        .into(),
    ));
    assert_eq!(
        w.b.dl.on_request(w.now, &old),
        RequestDisposition::Reject(Rejection {
            status: 500,
            retry_after: None
        })
    );
    assert_eq!(w.b.dl.dialog(&b_id).unwrap().remote_seq(), Some(2));
    let response = rejection_response(
        &old,
        Rejection {
            status: 500,
            retry_after: Some(3),
        },
    );
    assert_eq!(response.status_code.code(), 500);
    assert!(response
        .headers
        .iter()
        .any(|h| matches!(h, Header::RetryAfter(_))));
    // A request without Call-ID: 400.
    let mut broken = good;
    broken.headers.retain(|h| !matches!(h, Header::CallId(_)));
    assert!(matches!(
        w.b.dl.on_request(w.now, &broken),
        RequestDisposition::Reject(Rejection { status: 400, .. })
    ));
    // No To tag: not in a dialog.
    assert_eq!(
        w.b.dl
            .on_request(w.now, &w.b.last_request(Method::Invite).1),
        RequestDisposition::OutOfDialog
    );
}

#[test]
fn hold_and_resume_by_re_invite() {
    let mut w = World::new(TransportKind::Udp);
    let (a_id, b_id) = w.established();
    for (n, direction) in [(2u32, "a=sendonly"), (3, "a=sendrecv")] {
        let (reinvite, dest) =
            w.a.dl
                .send_request(
                    w.now,
                    &a_id,
                    Method::Invite,
                    Vec::new(),
                    direction.as_bytes().to_vec(),
                )
                .unwrap();
        assert_eq!(transaction::cseq(&reinvite.headers).unwrap().seq, n);
        assert!(reinvite
            .headers
            .iter()
            .any(|h| matches!(h, Header::Contact(_))));
        // A second re-INVITE while this one is pending is refused.
        assert!(matches!(
            w.a.dl
                .send_request(w.now, &a_id, Method::Invite, Vec::new(), Vec::new()),
            Err(Error::InvitePending { .. })
        ));
        w.a.tl.send_request(w.now, reinvite, dest).unwrap();
        w.settle();
        let (_, got, _) = w.b.last_request(Method::Invite);
        assert_eq!(got.body, direction.as_bytes());
        assert!(matches!(
            w.b.seen.requests.last(),
            Some((_, _, _, RequestDisposition::InDialog(id))) if *id == b_id
        ));
        w.b_answers(200, false);
        w.advance(secs(5));
    }
    // Each re-INVITE's 2xx was ACKed once with its own CSeq; no retransmissions needed.
    let acked: Vec<u32> =
        w.b.seen
            .acks
            .iter()
            .map(|a| transaction::cseq(&a.headers).unwrap().seq)
            .collect();
    assert_eq!(acked, vec![1, 2, 3]);
    assert_eq!(w.times(|x| x.is_response(200, Method::Invite)).len(), 3);
    assert!(w.a.terminated().is_empty() && w.b.terminated().is_empty());
}

#[test]
fn update_in_early_and_confirmed_dialogs_refreshes_the_target() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    w.b_answers(183, false);
    let b_early = match &w.b.seen.events[0] {
        DialogEvent::Early { id } => id.clone(),
        e => panic!("unexpected {e:?}"),
    };
    let a_early = match &w.a.seen.events[0] {
        DialogEvent::Early { id } => id.clone(),
        e => panic!("unexpected {e:?}"),
    };
    let new_contact = uri("sip:alice@192.0.2.11:5070");
    let (mut update, dest) =
        w.a.dl
            .send_request(
                w.now,
                &a_early,
                Method::Update,
                Vec::new(),
                b"v=0 early".to_vec(),
            )
            .unwrap();
    update.headers.retain(|h| !matches!(h, Header::Contact(_)));
    update
        .headers
        .push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{new_contact}>"
        ))));
    w.a.tl.send_request(w.now, update, dest).unwrap();
    w.settle();
    assert!(matches!(
        w.b.seen.requests.last(),
        Some((_, r, _, RequestDisposition::InDialog(id))) if r.method == Method::Update && *id == b_early
    ));
    assert_eq!(
        w.b.dl.dialog(&b_early).unwrap().remote_target(),
        &new_contact
    );
    assert!(w
        .a
        .seen
        .responses
        .iter()
        .any(|(r, _)| r.status_code.code() == 200
            && transaction::cseq(&r.headers).unwrap().method == Method::Update));
    w.b_answers(200, false);
    let (update, dest) =
        w.b.dl
            .send_request(w.now, &b_early, Method::Update, Vec::new(), Vec::new())
            .unwrap();
    // B's requests go to the refreshed target.
    assert_eq!(update.uri, new_contact);
    w.b.tl.send_request(w.now, update, dest).unwrap();
    w.settle();
    assert!(w
        .a
        .seen
        .requests
        .iter()
        .any(|(_, r, _, d)| r.method == Method::Update
            && matches!(d, RequestDisposition::InDialog(_))));
}

#[test]
fn reliable_transport_call_ends_clean() {
    let mut w = World::new(TransportKind::Tcp);
    let (a_id, _) = w.established();
    let (bye, dest) =
        w.a.dl
            .send_request(w.now, &a_id, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    assert!(bye
        .headers
        .iter()
        .any(|h| matches!(h, Header::Via(v) if v.value().contains("SIP/2.0/TCP"))));
    w.a.tl.send_request(w.now, bye, dest).unwrap();
    w.settle();
    w.advance(secs(40));
    // Over TCP nothing was retransmitted at the transaction level.
    assert_eq!(w.times(|x| x.is_request(Method::Invite)).len(), 1);
    assert_eq!(w.times(|x| x.is_request(Method::Bye)).len(), 1);
    assert!(w.a.tl.is_empty() && w.b.tl.is_empty());
    assert!(w.a.dl.is_empty() && w.b.dl.is_empty());
}

#[test]
fn dialog_limit_refuses_new_dialogs() {
    let now = Instant::now();
    let mut dl = DialogLayer::new(
        DialogConfig {
            max_dialogs: 0,
            ..DialogConfig::default()
        },
        7,
    );
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    let (key, invite, source) = w.b.last_request(Method::Invite);
    let contact = w.b.contact.clone();
    assert_eq!(
        dl.answer_invite(
            now,
            &key,
            &invite,
            source,
            180,
            &contact,
            Vec::new(),
            Vec::new(),
            false
        )
        .unwrap_err(),
        Error::TooManyDialogs { limit: 0 }
    );
    assert!(dl.is_empty());
    assert!(dl.poll_event().is_none());
}

#[test]
fn a_tracked_invite_keeps_only_what_its_responses_need() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    // The INVITE set lingers 64*T1 after the final response (late forks): it keeps the
    // Request-URI, From and CSeq, not the SDP or the other headers.
    let set = w.a.dl.sets.values().next().expect("the INVITE is tracked");
    assert!(set.invite.body.is_empty());
    assert!(
        set.invite
            .headers
            .iter()
            .all(|h| matches!(h, Header::From(_) | Header::CSeq(_))),
        "{:?}",
        set.invite.headers
    );
    assert_eq!(set.invite.headers.iter().count(), 2);
    // Which is enough to build the dialog from the 2xx.
    w.b_answers(200, false);
    let a_id = confirmed(&w.a);
    let a = w.a.dl.dialog(&a_id).unwrap();
    assert_eq!(a.remote_target(), &w.b.contact);
    assert_eq!(a.local_seq(), 1);
}

#[test]
fn a_dialog_entry_is_small_once_it_has_ended() {
    // What an ended dialog does not use (2xx and reliable 1xx retransmission, the
    // ACK, the 491 retry) is boxed: it was 1,248 bytes on x86_64 with them inline.
    assert!(
        std::mem::size_of::<Entry>() <= std::mem::size_of::<Dialog>() + 160,
        "{} bytes",
        std::mem::size_of::<Entry>()
    );
}

#[test]
fn bye_in_the_early_dialog_ends_it_and_the_invite_still_gets_487() {
    let mut w = World::new(TransportKind::Udp);
    w.call(Vec::new());
    w.b_answers(183, false);
    let early =
        w.a.seen
            .events
            .iter()
            .find_map(|e| match e {
                DialogEvent::Early { id } => Some(id.clone()),
                _ => None,
            })
            .expect("A's early dialog");
    // The caller hangs up before the answer (RFC 3261 15: a UAC may BYE an early dialog).
    let (bye, dest) =
        w.a.dl
            .send_request(w.now, &early, Method::Bye, Vec::new(), Vec::new())
            .unwrap();
    w.a.tl.send_request(w.now, bye, dest).unwrap();
    w.settle();
    assert!(matches!(
        w.b.terminated().as_slice(),
        [(_, EndReason::RemoteBye)]
    ));
    // B's INVITE is answered 487 (15.1.2), nothing else: no 2xx in an ended dialog.
    let (key, invite, source) = w.b.last_request(Method::Invite);
    let contact = w.b.contact.clone();
    assert_eq!(
        w.b.dl.answer_invite(
            w.now,
            &key,
            &invite,
            source,
            200,
            &contact,
            Vec::new(),
            b"v=0".to_vec(),
            false
        ),
        Err(Error::DialogEnded {
            id: w.b.terminated()[0].0.clone()
        })
    );
    w.b_answers(487, false);
    assert_eq!(w.times(|x| x.is_response(487, Method::Invite)).len(), 1);
    assert_eq!(w.b.terminated().len(), 1, "the dialog ended once");
    w.advance(secs(40));
    assert!(w.a.dl.is_empty() && w.b.dl.is_empty());
}
