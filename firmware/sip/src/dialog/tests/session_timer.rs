//! RFC 4028 session timers proposed by the UAC (A, the box's side), on the virtual
//! clock: A's TU here does what the firmware's legs do with
//! [`crate::session_timer`]: propose, retry a `422` once, take the refresher from the
//! `2xx`, refresh at half the interval (retrying a `422` to a refresh once), or watch
//! the far end refresh.

use super::*;
use crate::session_timer::{
    self, min_se_of, negotiate, parse_min_se, session_expires_of, Negotiation, Proposal, Refresher,
    RetryRefused, SessionExpires, SessionTimer, SessionTimerConfig, TimerEvent, TimerRequest,
};

/// `side` answers the last INVITE it received with `status` and `extra` headers.
fn answer(side: &mut Side, now: Instant, status: u16, extra: Vec<Header>) {
    let (key, invite, source) = side.last_request(Method::Invite);
    let contact = side.contact.clone();
    let body = if status == 200 {
        b"v=0 answer".to_vec()
    } else {
        Vec::new()
    };
    let response = side
        .dl
        .answer_invite(
            now, &key, &invite, source, status, &contact, extra, body, false,
        )
        .expect("answer builds");
    side.tl
        .respond(now, &key, response)
        .expect("server transaction takes the answer");
}

/// B answers its last INVITE as an RFC 4028 UAS under `config`: `422` with its
/// `Min-SE` when the interval is too small, else `200` with `Session-Expires`.
fn b_negotiates(w: &mut World, config: SessionTimerConfig) -> Negotiation {
    let (_, invite, _) = w.b.last_request(Method::Invite);
    let asked = TimerRequest {
        supported: invite
            .headers
            .iter()
            .any(|h| matches!(h, Header::Supported(s) if s.value() == "timer")),
        session_expires: session_expires_of(&invite.headers)
            .map(|v| SessionExpires::parse(v).expect("A's Session-Expires reads")),
        min_se: min_se_of(&invite.headers).map(|v| parse_min_se(v).expect("A's Min-SE reads")),
    };
    let n = negotiate(config, asked);
    let now = w.now;
    match n {
        Negotiation::TooSmall { min_se } => answer(
            &mut w.b,
            now,
            422,
            vec![Header::Other("Min-SE".into(), min_se.to_string())],
        ),
        Negotiation::Timer {
            session_expires, ..
        } => answer(
            &mut w.b,
            now,
            200,
            vec![
                Header::Other("Session-Expires".into(), session_expires.to_header_value()),
                Header::Require(rsip::headers::Require::new("timer")),
            ],
        ),
        Negotiation::None => answer(&mut w.b, now, 200, Vec::new()),
    }
    w.settle();
    n
}

/// A's last final response to an INVITE.
fn a_final(w: &World) -> rsip::Response {
    w.a.seen
        .responses
        .iter()
        .rev()
        .map(|(r, _)| r)
        .find(|r| {
            r.status_code.code() >= 200
                && transaction::cseq(&r.headers).is_ok_and(|c| c.method == Method::Invite)
        })
        .cloned()
        .expect("a final response to the INVITE")
}

/// A's TU on a `422`: the retry of `invite` under `proposal`, sent; or why not.
fn a_retries(
    w: &mut World,
    invite: &rsip::Request,
    proposal: Proposal,
) -> Result<(rsip::Request, Proposal), RetryRefused> {
    let refused = a_final(w);
    assert_eq!(refused.status_code.code(), 422);
    let next = proposal.after_too_small(min_se_of(&refused.headers))?;
    let branch = w.a.dl.new_branch();
    let retry = session_timer::retry_invite(invite, &branch, next).expect("retry builds");
    let peer = w.a.peer_of(B_ADDR);
    let contact = w.a.contact.clone();
    w.a.dl
        .track_invite(w.now, &retry, contact, peer)
        .expect("retry tracked");
    w.a.tl
        .send_request(w.now, retry.clone(), peer)
        .expect("retry sent");
    w.settle();
    Ok((retry, next))
}

/// The CSeq numbers of the INVITEs A put on the wire (retransmissions once).
fn invite_seqs(w: &World) -> Vec<u32> {
    let mut seqs: Vec<u32> = w
        .wire
        .iter()
        .filter(|x| x.to_b && x.is_request(Method::Invite))
        .filter_map(|x| match &x.message {
            SipMessage::Request(r) => transaction::cseq(&r.headers).ok().map(|c| c.seq),
            SipMessage::Response(_) => None,
        })
        .collect();
    seqs.dedup();
    seqs
}

const OURS: SessionTimerConfig = SessionTimerConfig {
    min_se: 120,
    session_expires: 600,
};
const STRICT: SessionTimerConfig = SessionTimerConfig {
    min_se: 1800,
    session_expires: 1800,
};

#[test]
fn a_422_is_retried_once_with_the_raised_interval_and_the_uac_then_refreshes() {
    let mut w = World::new(TransportKind::Udp);
    let proposal = Proposal::new(OURS);
    let first = w.call(proposal.headers()).invite;
    let (_, got, _) = w.b.last_request(Method::Invite);
    assert_eq!(session_expires_of(&got.headers), Some("600"));
    assert_eq!(min_se_of(&got.headers), Some("120"));
    assert_eq!(
        b_negotiates(&mut w, STRICT),
        Negotiation::TooSmall { min_se: 1800 }
    );
    let (retry, next) = a_retries(&mut w, &first, proposal).expect("one retry");
    // RFC 4028 7.4 / RFC 3261 8.1.3.5: same Call-ID and tag, next CSeq, new branch.
    assert_eq!(invite_seqs(&w), vec![1, 2]);
    let (_, got, _) = w.b.last_request(Method::Invite);
    assert_eq!(
        transaction::call_id(&got.headers).unwrap(),
        transaction::call_id(&first.headers).unwrap()
    );
    assert_eq!(
        transaction::from_tag(&got.headers).unwrap(),
        transaction::from_tag(&first.headers).unwrap()
    );
    let branch =
        |r: &rsip::Request| transaction::via_branch(&transaction::top_via(&r.headers).unwrap());
    assert_ne!(branch(&got), branch(&first));
    assert_eq!(session_expires_of(&got.headers), Some("1800"));
    assert_eq!(min_se_of(&got.headers), Some("1800"));
    // The 422 was ACKed by A's transaction layer.
    assert_eq!(
        w.times(|x| x.to_b && x.is_request(Method::Ack)).len(),
        1,
        "one ACK for the 422"
    );
    // B takes it and leaves the refreshing to A (A did not name a refresher).
    assert!(matches!(
        b_negotiates(&mut w, STRICT),
        Negotiation::Timer { .. }
    ));
    let ok = a_final(&w);
    assert_eq!(ok.status_code.code(), 200);
    let a_id = confirmed(&w.a);
    assert_eq!(w.a.dl.dialog(&a_id).unwrap().local_seq(), 2);
    let (interval, we_refresh) = next
        .answered(session_expires_of(&ok.headers))
        .expect("readable")
        .expect("a timer");
    assert_eq!((interval, we_refresh), (1800, true));
    let answered = w.now;
    let mut timer = SessionTimer::new(answered, interval, we_refresh);
    // Nothing before half the interval; then A refreshes with an UPDATE.
    w.run_until(timer.timeout() - w.t0 - secs(1));
    assert_eq!(timer.poll(w.now), None);
    w.run_until(timer.timeout() - w.t0);
    assert_eq!(w.now - answered, secs(900));
    assert_eq!(timer.poll(w.now), Some(TimerEvent::Refresh));
    let (update, dest) =
        w.a.dl
            .send_request(
                w.now,
                &a_id,
                Method::Update,
                session_timer::refresh_headers(interval, next.min_se),
                Vec::new(),
            )
            .expect("UPDATE builds");
    w.a.tl.send_request(w.now, update, dest).unwrap();
    w.settle();
    let (_, got, _) = w.b.last_request(Method::Update);
    assert_eq!(session_expires_of(&got.headers), Some("1800;refresher=uac"));
    assert_eq!(min_se_of(&got.headers), Some("1800"));
    assert!(w
        .a
        .seen
        .responses
        .iter()
        .any(|(r, _)| r.status_code.code() == 200
            && transaction::cseq(&r.headers).is_ok_and(|c| c.method == Method::Update)));
    // The retried INVITE is the only one of its kind: no third attempt anywhere.
    assert_eq!(invite_seqs(&w), vec![1, 2]);
    let _ = retry;
}

#[test]
fn a_second_422_ends_the_attempt_without_a_third_invite() {
    let mut w = World::new(TransportKind::Udp);
    let proposal = Proposal::new(OURS);
    let first = w.call(proposal.headers()).invite;
    b_negotiates(&mut w, STRICT);
    let (retry, next) = a_retries(&mut w, &first, proposal).expect("one retry");
    // B wants still more (a broken peer): 422 again.
    b_negotiates(
        &mut w,
        SessionTimerConfig {
            min_se: 3600,
            session_expires: 3600,
        },
    );
    assert_eq!(
        a_retries(&mut w, &retry, next).unwrap_err(),
        RetryRefused::SecondRefusal { proposed: 1800 }
    );
    // A 422 whose Min-SE does not exceed the proposal is not retried either.
    let mut v = World::new(TransportKind::Udp);
    let first = v.call(proposal.headers()).invite;
    answer(
        &mut v.b,
        v.now,
        422,
        vec![Header::Other("Min-SE".into(), "600".into())],
    );
    v.settle();
    assert_eq!(
        a_retries(&mut v, &first, proposal).unwrap_err(),
        RetryRefused::NotLarger {
            min_se: 600,
            proposed: 600
        }
    );
    // Minutes later, still two INVITEs, each ACKed once; the early dialogs are gone.
    w.advance(secs(120));
    v.advance(secs(120));
    assert_eq!(invite_seqs(&w), vec![1, 2]);
    assert_eq!(invite_seqs(&v), vec![1]);
    assert_eq!(w.times(|x| x.to_b && x.is_request(Method::Ack)).len(), 2);
    assert!(w.a.dl.is_empty() && v.a.dl.is_empty());
}

#[test]
fn when_the_uas_refreshes_the_uac_only_watches_and_a_silent_uas_expires() {
    let mut w = World::new(TransportKind::Udp);
    let proposal = Proposal::new(SessionTimerConfig {
        min_se: 90,
        session_expires: 90,
    });
    w.call(proposal.headers());
    // B names itself the refresher.
    answer(
        &mut w.b,
        w.now,
        200,
        vec![Header::Other(
            "Session-Expires".into(),
            "90;refresher=uas".into(),
        )],
    );
    w.settle();
    let ok = a_final(&w);
    let (interval, we_refresh) = proposal
        .answered(session_expires_of(&ok.headers))
        .unwrap()
        .unwrap();
    assert_eq!((interval, we_refresh), (90, false));
    let answered = w.now;
    let mut timer = SessionTimer::new(answered, interval, we_refresh);
    // A never refreshes; B's silence ends the session at 90 - min(32, 30) = 60 s.
    w.run_until(timer.timeout() - w.t0);
    assert_eq!(w.now - answered, secs(60));
    assert_eq!(timer.poll(w.now), Some(TimerEvent::Expired));
    assert!(w
        .times(|x| x.to_b && x.is_request(Method::Update))
        .is_empty());
    // A 2xx without Session-Expires: no timer at all (RFC 4028 7.2).
    assert_eq!(proposal.answered(None), Ok(None));
}

/// A `Min-SE: value` header.
fn min_se(value: &str) -> Vec<Header> {
    vec![Header::Other("Min-SE".into(), value.into())]
}

/// A's TU refreshes dialog `id` as `proposal` says: `method` is UPDATE (no body) or a
/// re-INVITE (with its unchanged SDP), sent and settled.
fn a_refreshes(w: &mut World, id: &DialogId, method: Method, proposal: Proposal) {
    let body = if method == Method::Invite {
        b"v=0 unchanged".to_vec()
    } else {
        Vec::new()
    };
    let (request, dest) =
        w.a.dl
            .send_request(w.now, id, method, proposal.refresh_headers(), body)
            .expect("the refresh builds (no re-INVITE pending)");
    w.a.tl.send_request(w.now, request, dest).expect("sent");
    w.settle();
}

/// B answers the last UPDATE it received `status` with `extra` headers.
fn b_answers_update(w: &mut World, status: u16, extra: Vec<Header>) {
    let (key, update, _) = w.b.last_request(Method::Update);
    let mut response = transaction::response_for(&update, status.into(), None);
    for h in extra {
        response.headers.push(h);
    }
    w.b.tl.respond(w.now, &key, response).expect("answered");
    w.settle();
}

/// A's last final response to a request of `method`.
fn a_last_final(w: &World, method: Method) -> rsip::Response {
    w.a.seen
        .responses
        .iter()
        .rev()
        .map(|(r, _)| r)
        .find(|r| {
            r.status_code.code() >= 200
                && transaction::cseq(&r.headers).is_ok_and(|c| c.method == method)
        })
        .cloned()
        .unwrap_or_else(|| panic!("a final response to {method}"))
}

#[test]
fn a_422_to_the_uacs_refresh_is_retried_once_and_the_session_runs_at_the_raised_interval() {
    let mut w = World::new(TransportKind::Udp);
    let proposal = Proposal::new(SessionTimerConfig {
        min_se: 90,
        session_expires: 90,
    });
    w.call(proposal.headers());
    // B leaves the refreshing to A.
    answer(
        &mut w.b,
        w.now,
        200,
        vec![Header::Other("Session-Expires".into(), "90".into())],
    );
    w.settle();
    let (interval, we_refresh) = proposal
        .answered(session_expires_of(&a_final(&w).headers))
        .unwrap()
        .unwrap();
    assert_eq!((interval, we_refresh), (90, true));
    let a_id = confirmed(&w.a);
    w.b.auto_answer = false;
    let answered = w.now;
    let mut timer = SessionTimer::new(answered, interval, we_refresh);

    // 1: the UPDATE at 45 s is refused 422 Min-SE: 120; the retry says 120 and is taken.
    w.run_until(timer.timeout() - w.t0);
    assert_eq!(w.now - answered, secs(45));
    assert_eq!(timer.poll(w.now), Some(TimerEvent::Refresh));
    let refresh = timer.refresh_proposal(proposal.min_se);
    a_refreshes(&mut w, &a_id, Method::Update, refresh);
    b_answers_update(&mut w, 422, min_se("120"));
    let refused = a_last_final(&w, Method::Update);
    assert_eq!(refused.status_code.code(), 422);
    let retry = refresh
        .after_too_small(min_se_of(&refused.headers))
        .expect("one retry");
    a_refreshes(&mut w, &a_id, Method::Update, retry);
    let (_, got, _) = w.b.last_request(Method::Update);
    assert_eq!(session_expires_of(&got.headers), Some("120;refresher=uac"));
    assert_eq!(min_se_of(&got.headers), Some("120"));
    b_answers_update(
        &mut w,
        200,
        vec![Header::Other(
            "Session-Expires".into(),
            "120;refresher=uac".into(),
        )],
    );
    let ok = a_last_final(&w, Method::Update);
    assert_eq!(ok.status_code.code(), 200);
    let se = SessionExpires::parse(session_expires_of(&ok.headers).unwrap()).unwrap();
    timer.refreshed(w.now, se.delta, se.refresher != Some(Refresher::Uas));
    let refreshed = w.now;

    // 2: the next refresh at 120/2 s, a re-INVITE this time (the dialog layer must
    // let the retry go at once: the 422 ended the first re-INVITE), refused twice.
    w.run_until(timer.timeout() - w.t0);
    assert_eq!(w.now - refreshed, secs(60));
    assert_eq!(timer.poll(w.now), Some(TimerEvent::Refresh));
    let refresh = timer.refresh_proposal(retry.min_se);
    assert_eq!((refresh.session_expires, refresh.min_se), (120, 120));
    a_refreshes(&mut w, &a_id, Method::Invite, refresh);
    let (_, got, _) = w.b.last_request(Method::Invite);
    assert_eq!(min_se_of(&got.headers), Some("120"));
    answer(&mut w.b, w.now, 422, min_se("180"));
    w.settle();
    let again = refresh
        .after_too_small(min_se_of(&a_final(&w).headers))
        .expect("each refresh gets its own retry");
    a_refreshes(&mut w, &a_id, Method::Invite, again);
    let (_, got, _) = w.b.last_request(Method::Invite);
    assert_eq!(session_expires_of(&got.headers), Some("180;refresher=uac"));
    assert_eq!(min_se_of(&got.headers), Some("180"));
    answer(&mut w.b, w.now, 422, min_se("240"));
    w.settle();
    assert_eq!(
        again.after_too_small(min_se_of(&a_final(&w).headers)),
        Err(RetryRefused::SecondRefusal { proposed: 180 })
    );
    // INVITE 1, UPDATEs 2 and 3, re-INVITEs 4 and 5, each 422 to a re-INVITE ACKed
    // by A's transaction layer (and the first 200 by its dialog layer).
    assert_eq!(invite_seqs(&w), vec![1, 4, 5]);
    assert_eq!(w.times(|x| x.to_b && x.is_request(Method::Ack)).len(), 3);
    assert_eq!(w.a.dl.dialog(&a_id).unwrap().local_seq(), 5);
    // The session was never refreshed after the second 422: it expires 120 - 32 s
    // after the last 2xx, and A's TU then ends it.
    w.run_until(timer.timeout() - w.t0);
    assert_eq!(w.now - refreshed, secs(88));
    assert_eq!(timer.poll(w.now), Some(TimerEvent::Expired));
}
