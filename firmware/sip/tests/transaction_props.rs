//! Property test: a UAC transaction layer and a UAS transaction layer, each with a
//! small scripted TU, exchange one call over a network that loses, duplicates, delays and
//! reorders UDP messages at random. Whatever happens, nothing panics, the two sides
//! never disagree on the outcome, and every transaction on both sides is gone within a
//! bound derived from the timers.
//!
//! The TUs behave like the B2BUA will: the UAS sends 180 at once, then after a random
//! delay 200, 486, or (when it never answers) 480 after its 20 s ring limit; it
//! retransmits its 2xx (T1 doubling, capped at T2) until the ACK arrives or the
//! transaction ends, answers a CANCEL'd INVITE with 487 and a BYE with 200. The UAC ACKs
//! every 2xx, sends BYE after the first one, and CANCELs at a random moment or at its
//! 40 s no-answer limit. Bound: 40 s (UAC limit) + 3 * 64*T1 + T4 + 1 s (the CANCEL guard,
//! a BYE sent as late as the last 2xx retransmission, its timer F and J).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use branchline_sip::transaction::{
    response_for, ClientKey, Peer, ServerKey, TransactionConfig, TransactionEvent,
    TransactionLayer, TransportKind,
};
use proptest::prelude::*;
use rsip::{Method, SipMessage};

const UAC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
const UAS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 5060);

/// SplitMix64: the network's and the TUs' dice, seeded by proptest.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent(&mut self, p: u8) -> bool {
        self.next() % 100 < u64::from(p)
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.next() % (max + 1))
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Accept,
    Reject,
    Never,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    loss: u8,
    duplicate: u8,
    max_delay_ms: u64,
    answer: Answer,
    answer_after_ms: u64,
    cancel_after_ms: Option<u64>,
    transport: TransportKind,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        0u8..60,
        0u8..30,
        0u64..400,
        prop_oneof![
            Just(Answer::Accept),
            Just(Answer::Reject),
            Just(Answer::Never)
        ],
        0u64..25_000,
        proptest::option::of(0u64..30_000),
        prop_oneof![3 => Just(TransportKind::Udp), 1 => Just(TransportKind::Tcp)],
    )
        .prop_map(
            |(
                seed,
                loss,
                duplicate,
                max_delay_ms,
                answer,
                answer_after_ms,
                cancel_after_ms,
                transport,
            )| {
                let reliable = transport.is_reliable();
                Case {
                    seed,
                    // TCP neither loses nor duplicates (the connection does that work).
                    loss: if reliable { 0 } else { loss },
                    duplicate: if reliable { 0 } else { duplicate },
                    max_delay_ms,
                    answer,
                    answer_after_ms,
                    cancel_after_ms,
                    transport,
                }
            },
        )
}

fn request(method: Method, branch: &str, seq: u32, to_tag: Option<&str>) -> rsip::Request {
    let to = match to_tag {
        Some(t) => format!("<sip:bob@192.0.2.2>;tag={t}"),
        None => "<sip:bob@192.0.2.2>".to_string(),
    };
    let text = format!(
        "{method} sip:bob@192.0.2.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@192.0.2.1>;tag=alice\r\n\
         To: {to}\r\n\
         Call-ID: prop-call@192.0.2.1\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    rsip::Request::try_from(text.as_str()).expect("test request parses")
}

/// In-flight messages, delivered in (time, sequence) order.
struct Network {
    in_flight: BTreeMap<(Instant, u64), (SipMessage, bool)>, // bool: to the UAS
    seq: u64,
    last_tcp: [Instant; 2],
}

impl Network {
    fn send(&mut self, dice: &mut Dice, case: &Case, now: Instant, msg: SipMessage, to_uas: bool) {
        if dice.percent(case.loss) {
            return;
        }
        let copies = if dice.percent(case.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = now + dice.millis(case.max_delay_ms);
            if case.transport.is_reliable() {
                // A connection keeps order.
                let last = &mut self.last_tcp[usize::from(to_uas)];
                at = at.max(*last);
                *last = at;
            }
            self.seq += 1;
            self.in_flight.insert((at, self.seq), (msg.clone(), to_uas));
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }
}

#[derive(Default)]
struct UasTu {
    invite: Option<(ServerKey, rsip::Request)>,
    answered: Option<u16>,
    cancelled: bool,
    ok_retransmit: Option<(Instant, Duration)>,
    acked: bool,
    answer_at: Option<Instant>,
    sent_codes: Vec<u16>,
}

#[derive(Default)]
struct UacTu {
    invite: Option<ClientKey>,
    finals: Vec<u16>,
    bye_sent: bool,
    cancel_at: Option<Instant>,
    cancel_done: bool,
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut dice = Dice(case.seed);
    let config = TransactionConfig::default();
    let t = config.timers;
    let mut uac = TransactionLayer::new(config.clone());
    let mut uas = TransactionLayer::new(config);
    let mut net = Network {
        in_flight: BTreeMap::new(),
        seq: 0,
        last_tcp: [t0, t0],
    };
    let to_uas = Peer {
        addr: UAS,
        transport: case.transport,
    };
    let to_uac = Peer {
        addr: UAC,
        transport: case.transport,
    };
    let mut uas_tu = UasTu::default();
    let mut uac_tu = UacTu {
        cancel_at: Some(
            t0 + case
                .cancel_after_ms
                .map_or(Duration::from_secs(40), Duration::from_millis)
                .min(Duration::from_secs(40)),
        ),
        ..UacTu::default()
    };
    let invite = request(Method::Invite, "z9hG4bKinvite", 1, None);
    let ikey = uac
        .send_request(now, invite.clone(), to_uas)
        .expect("INVITE accepted");
    uac_tu.invite = Some(ikey.clone());

    let bound = t0 + Duration::from_secs(41) + t.t1x64() * 3 + t.t4;
    loop {
        // Move every transmit onto the network.
        while let Some(tx) = uac.poll_transmit() {
            net.send(&mut dice, &case, now, tx.message, true);
        }
        while let Some(tx) = uas.poll_transmit() {
            net.send(&mut dice, &case, now, tx.message, false);
        }
        // UAS TU.
        while let Some(ev) = uas.poll_event() {
            match ev {
                TransactionEvent::Request { key, request, .. } => {
                    let code = if request.method == Method::Invite && uas_tu.invite.is_some() {
                        Some(482) // a merged request: the original transaction ended
                    } else if request.method == Method::Invite {
                        uas_tu.invite = Some((key.clone(), request.clone()));
                        let after = match case.answer {
                            Answer::Never => Duration::from_secs(20),
                            _ => Duration::from_millis(case.answer_after_ms)
                                .min(Duration::from_secs(20)),
                        };
                        uas_tu.answer_at = Some(now + after);
                        Some(180)
                    } else {
                        Some(200)
                    };
                    if let Some(code) = code {
                        let tag = (request.method == Method::Invite).then_some("bob");
                        uas.respond(now, &key, response_for(&request, code.into(), tag))
                            .expect("fresh server transaction accepts a response");
                    }
                }
                TransactionEvent::Cancelled { invite, .. } => {
                    prop_assert!(
                        uas_tu.answered.is_none(),
                        "Cancelled after the final response"
                    );
                    if let Some((key, req)) = &uas_tu.invite {
                        prop_assert_eq!(key, &invite);
                        uas.respond(now, key, response_for(req, 487u16.into(), Some("bob")))
                            .expect("a proceeding INVITE takes 487");
                        uas_tu.cancelled = true;
                        uas_tu.answered = Some(487);
                        uas_tu.sent_codes.push(487);
                    }
                }
                TransactionEvent::Ack { .. } => uas_tu.acked = true,
                _ => {}
            }
        }
        if let (Some(at), None) = (uas_tu.answer_at, uas_tu.answered) {
            if now >= at {
                let code = match case.answer {
                    Answer::Accept => 200,
                    Answer::Reject => 486,
                    Answer::Never => 480,
                };
                if let Some((key, req)) = &uas_tu.invite {
                    uas.respond(now, key, response_for(req, code.into(), Some("bob")))
                        .expect("a proceeding INVITE takes its final response");
                    uas_tu.answered = Some(code);
                    uas_tu.sent_codes.push(code);
                    if code == 200 {
                        uas_tu.ok_retransmit = Some((now + t.t1, t.t1));
                    }
                }
            }
        }
        if let Some((at, interval)) = uas_tu.ok_retransmit {
            if uas_tu.acked {
                uas_tu.ok_retransmit = None;
            } else if now >= at {
                let (key, req) = uas_tu.invite.as_ref().expect("answered an INVITE");
                match uas.respond(now, key, response_for(req, 200u16.into(), Some("bob"))) {
                    Ok(()) => {
                        let next = (interval * 2).min(t.t2);
                        uas_tu.ok_retransmit = Some((at + next, next));
                    }
                    Err(_) => uas_tu.ok_retransmit = None, // timer L ended it: give up
                }
            }
        }
        // UAC TU.
        while let Some(ev) = uac.poll_event() {
            match ev {
                TransactionEvent::Response { key, response } if key == ikey => {
                    let code = response.status_code.code();
                    if code >= 200 {
                        uac_tu.finals.push(code);
                    }
                    if (200..300).contains(&code) {
                        let ack = request(
                            Method::Ack,
                            &format!("z9hG4bKack{}", uac_tu.finals.len()),
                            1,
                            Some("bob"),
                        );
                        uac.send_stateless(ack.into(), to_uas);
                        if !uac_tu.bye_sent {
                            uac_tu.bye_sent = true;
                            let bye = request(Method::Bye, "z9hG4bKbye", 2, Some("bob"));
                            uac.send_request(now, bye, to_uas).expect("BYE accepted");
                        }
                    }
                }
                TransactionEvent::StrayResponse { .. } => {}
                _ => {}
            }
        }
        if let Some(at) = uac_tu.cancel_at {
            if now >= at && !uac_tu.cancel_done {
                uac_tu.cancel_done = true;
                // Refused once a final response arrived: nothing to cancel then.
                let _ = uac.cancel(now, &ikey);
            }
        }

        // Next instant: a timer, a delivery, or a TU deadline.
        let mut next = [uac.timeout(), uas.timeout(), net.next_at()]
            .into_iter()
            .flatten()
            .min();
        for tu in [
            uas_tu.answer_at.filter(|_| uas_tu.answered.is_none()),
            uas_tu.ok_retransmit.map(|(at, _)| at),
            uac_tu.cancel_at.filter(|_| !uac_tu.cancel_done),
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(tu, |n| n.min(tu)));
        }
        let Some(next) = next else { break };
        prop_assert!(
            next <= bound + Duration::from_secs(1),
            "activity past the bound at {:?}",
            next - t0
        );
        now = now.max(next);
        uac.handle_timeout(now);
        uas.handle_timeout(now);
        while let Some(at) = net.next_at() {
            if at > now {
                break;
            }
            let Some((_, (msg, to_uas_side))) = net.in_flight.pop_first() else {
                break;
            };
            if to_uas_side {
                uas.handle_message(now, msg, to_uac)
                    .expect("well-formed message accepted");
            } else {
                uac.handle_message(now, msg, to_uas)
                    .expect("well-formed message accepted");
            }
        }
    }

    prop_assert!(uac.is_empty(), "UAC transactions left: {}", uac.len());
    prop_assert!(uas.is_empty(), "UAS transactions left: {}", uas.len());
    prop_assert!(now <= bound, "ended at {:?}", now - t0);
    // The UAC's INVITE outcome is one the UAS sent (or none: all lost / cancelled in time).
    let mut uac_finals = uac_tu.finals.clone();
    uac_finals.dedup();
    prop_assert!(
        uac_finals.len() <= 1,
        "UAC saw different finals: {:?}",
        uac_finals
    );
    if let Some(code) = uac_finals.first() {
        prop_assert!(
            uas_tu.sent_codes.contains(code),
            "UAC got {} the UAS never sent",
            code
        );
    }
    Ok(())
}

/// One step of the robustness property: a message from the wire or a TU call.
#[derive(Debug, Clone)]
enum Step {
    /// A request built from random parts, delivered to the layer.
    Request {
        method: Method,
        branch: u8,
        cseq: u8,
        to_tag: u8,
        drop_header: u8,
    },
    /// A response built from random parts, delivered to the layer.
    Response {
        status: u16,
        method: Method,
        branch: u8,
        to_tag: u8,
        rseq: Option<u32>,
    },
    /// The TU answers the n-th server transaction it saw with a status.
    Respond { nth: usize, status: u16 },
    /// The TU sends a request.
    Send { method: Method, branch: u8 },
    /// The TU cancels the n-th client transaction.
    Cancel { nth: usize },
    /// The driver reports a transport error for the n-th transmit's transaction.
    TransportError { nth: usize },
    /// Time passes.
    Advance { ms: u64 },
}

fn methods() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        Just(Method::PRack),
        Just(Method::Update),
        Just(Method::Info),
    ]
}

fn steps() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (methods(), 0u8..4, 0u8..4, 0u8..3, 0u8..8).prop_map(|(method, branch, cseq, to_tag, drop_header)| Step::Request { method, branch, cseq, to_tag, drop_header }),
        4 => (prop_oneof![Just(100u16), Just(180), Just(183), Just(200), Just(202), Just(302), Just(481), Just(486), Just(487), Just(491), Just(500), Just(603)], methods(), 0u8..4, 0u8..3, proptest::option::of(0u32..4))
            .prop_map(|(status, method, branch, to_tag, rseq)| Step::Response { status, method, branch, to_tag, rseq }),
        3 => (0usize..8, prop_oneof![Just(100u16), Just(180), Just(200), Just(486), Just(487)]).prop_map(|(nth, status)| Step::Respond { nth, status }),
        2 => (methods(), 0u8..4).prop_map(|(method, branch)| Step::Send { method, branch }),
        1 => (0usize..8).prop_map(|nth| Step::Cancel { nth }),
        1 => (0usize..16).prop_map(|nth| Step::TransportError { nth }),
        3 => (0u64..40_000).prop_map(|ms| Step::Advance { ms }),
    ]
}

fn random_message_text(
    first_line: &str,
    method: Method,
    branch: u8,
    cseq: u8,
    to_tag: u8,
    drop_header: u8,
    extra: &str,
) -> String {
    let via = match branch {
        0 => "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfixed\r\n".to_string(),
        1 => "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKother\r\n".to_string(),
        2 => "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=2543style\r\n".to_string(),
        _ => "Via: SIP/2.0/UDP 192.0.2.1:5060\r\n".to_string(),
    };
    let cseq = match cseq {
        0 => format!("CSeq: 1 {method}\r\n"),
        1 => format!("CSeq: 2 {method}\r\n"),
        2 => "CSeq: 1 INVITE\r\n".to_string(),
        _ => format!("CSeq: 0 {method}\r\n"),
    };
    let to = match to_tag {
        0 => "To: <sip:bob@192.0.2.2>\r\n",
        1 => "To: <sip:bob@192.0.2.2>;tag=bob\r\n",
        _ => "To: <sip:bob@192.0.2.2>;tag=other\r\n",
    };
    let mut lines = vec![
        via,
        "From: <sip:alice@192.0.2.1>;tag=alice\r\n".to_string(),
        to.to_string(),
        "Call-ID: robust@192.0.2.1\r\n".to_string(),
        cseq,
        "Contact: <sip:alice@192.0.2.1>\r\n".to_string(),
        "Max-Forwards: 70\r\n".to_string(),
    ];
    if let Some(i) = usize::from(drop_header).checked_sub(1) {
        if i < lines.len() {
            lines.remove(i);
        }
    }
    format!(
        "{first_line}\r\n{}{extra}Content-Length: 0\r\n\r\n",
        lines.concat()
    )
}

/// Random messages and TU calls in random order never panic either layer, every error
/// leaves the layers usable, and once the TU has answered everything and time has run
/// out, no transaction is left.
fn robustness(steps: Vec<Step>) -> Result<(), TestCaseError> {
    use branchline_sip::dialog::{DialogConfig, DialogLayer};
    let t0 = Instant::now();
    let mut now = t0;
    let mut layer = TransactionLayer::new(TransactionConfig::default());
    let mut dialogs = DialogLayer::new(DialogConfig::default(), 9);
    let src = Peer {
        addr: UAC,
        transport: TransportKind::Udp,
    };
    let dst = Peer {
        addr: UAS,
        transport: TransportKind::Udp,
    };
    let mut servers: Vec<(ServerKey, rsip::Request)> = Vec::new();
    let mut clients: Vec<ClientKey> = Vec::new();
    let mut transmitted = Vec::new();
    let mut sent = 0u32;
    for step in steps {
        match step {
            Step::Request {
                method,
                branch,
                cseq,
                to_tag,
                drop_header,
            } => {
                let text = random_message_text(
                    &format!("{method} sip:bob@192.0.2.2 SIP/2.0"),
                    method,
                    branch,
                    cseq,
                    to_tag,
                    drop_header,
                    "",
                );
                if let Ok(msg) = SipMessage::try_from(text.as_str()) {
                    if let SipMessage::Request(r) = &msg {
                        let _ = dialogs.on_request(now, r);
                        let _ = dialogs.on_ack(now, r);
                    }
                    let _ = layer.handle_message(now, msg, src);
                }
            }
            Step::Response {
                status,
                method,
                branch,
                to_tag,
                rseq,
            } => {
                let extra = rseq
                    .map(|r| format!("Require: 100rel\r\nRSeq: {r}\r\n"))
                    .unwrap_or_default();
                let text = random_message_text(
                    &format!("SIP/2.0 {status} Whatever"),
                    method,
                    branch,
                    0,
                    to_tag,
                    0,
                    &extra,
                );
                if let Ok(msg) = SipMessage::try_from(text.as_str()) {
                    if let SipMessage::Response(r) = &msg {
                        let _ = dialogs.on_response(now, r);
                    }
                    let _ = layer.handle_message(now, msg, dst);
                }
            }
            Step::Respond { nth, status } => {
                if let Some((key, req)) = servers.get(nth) {
                    let _ = layer.respond(now, key, response_for(req, status.into(), Some("uas")));
                    let contact = rsip::Uri::try_from("sip:uas@192.0.2.2").expect("uri");
                    let _ = dialogs.answer_invite(
                        now,
                        key,
                        req,
                        src,
                        status,
                        &contact,
                        Vec::new(),
                        Vec::new(),
                        status == 180,
                    );
                }
            }
            Step::Send { method, branch } => {
                sent += 1;
                let b = match branch {
                    0 => "z9hG4bKfixed".to_string(),
                    1 => format!("z9hG4bKsent{sent}"),
                    2 => "nocookie".to_string(),
                    _ => "z9hG4bKother".to_string(),
                };
                let req = request(method, &b, sent, None);
                if let Ok(k) = layer.send_request(now, req, dst) {
                    clients.push(k);
                }
            }
            Step::Cancel { nth } => {
                if let Some(k) = clients.get(nth) {
                    let _ = layer.cancel(now, k);
                }
            }
            Step::TransportError { nth } => {
                let key = transmitted.get(nth).cloned().flatten();
                if let Some(key) = key {
                    layer.handle_transport_error(&key);
                }
            }
            Step::Advance { ms } => {
                let until = now + Duration::from_millis(ms);
                while let Some(at) = [layer.timeout(), dialogs.timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                {
                    if at > until {
                        break;
                    }
                    prop_assert!(at >= now, "a timer in the past");
                    now = at;
                    layer.handle_timeout(now);
                    dialogs.handle_timeout(now);
                }
                now = until;
            }
        }
        while let Some(t) = layer.poll_transmit() {
            transmitted.push(t.transaction);
        }
        while let Some(ev) = layer.poll_event() {
            if let TransactionEvent::Request { key, request, .. } = ev {
                servers.push((key, request));
            }
        }
        while dialogs.poll_action().is_some() {}
        while dialogs.poll_event().is_some() {}
    }
    // The TU answers everything still open with a final response; then all ends.
    for (key, req) in &servers {
        let _ = layer.respond(now, key, response_for(req, 500u16.into(), Some("uas")));
    }
    let end = now + Duration::from_secs(300);
    while let Some(at) = layer.timeout() {
        if at > end {
            break;
        }
        now = at;
        layer.handle_timeout(now);
    }
    for (key, _) in &servers {
        let state = layer.state(&branchline_sip::transaction::TransactionKey::Server(
            key.clone(),
        ));
        prop_assert!(state.is_none(), "server {} left in {:?}", key, state);
    }
    // INVITE client transactions in Proceeding wait for the TU to CANCEL; everything else
    // must be gone.
    for key in &clients {
        let state = layer.state(&branchline_sip::transaction::TransactionKey::Client(
            key.clone(),
        ));
        prop_assert!(
            state.is_none()
                || state == Some(branchline_sip::transaction::TransactionState::Proceeding),
            "client {} left in {:?}",
            key,
            state
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_and_calls_never_panic_and_leave_nothing_behind(steps in proptest::collection::vec(steps(), 1..40)) {
        robustness(steps)?;
    }

    #[test]
    fn lossy_calls_always_end_with_every_transaction_terminated(case in cases()) {
        run(case)?;
    }
}

#[test]
fn lossless_call_ends_within_bound() {
    run(Case {
        seed: 1,
        loss: 0,
        duplicate: 0,
        max_delay_ms: 20,
        answer: Answer::Accept,
        answer_after_ms: 2_000,
        cancel_after_ms: None,
        transport: TransportKind::Udp,
    })
    .expect("clean call");
}
