//! Matching with legal but unusual header forms (RFC 3261 7.3, 20, 25.1; RFC 4475
//! `wsinv`): a request and its retransmission written differently must reach the same
//! server transaction, and a response written differently its client transaction.
//! Messages come in as they do on the wire: through [`crate::message::parse`] (which
//! undoes folding and compact names) and, for requests, the transport's
//! `received`/`rport` rewrite of the top Via.

use super::*;
use crate::message::{self, Limits};
use crate::transport::via::apply_received_rport;

/// `lines` joined with CRLF, an empty line and no body: a datagram.
fn text(lines: &[&str]) -> Vec<u8> {
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    out.into_bytes()
}

/// A request as the endpoint hands it to the layer: parsed, top Via rewritten for
/// `source`.
fn wire_request(lines: &[&str], source: SocketAddr) -> SipMessage {
    wire_datagram(&text(lines), source)
}

/// [`wire_request`] for a whole datagram.
fn wire_datagram(bytes: &[u8], source: SocketAddr) -> SipMessage {
    let msg = message::parse(bytes, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)));
    let SipMessage::Request(mut r) = msg else {
        panic!("not a request");
    };
    apply_received_rport(&mut r.headers, source).expect("top Via rewritten");
    SipMessage::Request(r)
}

fn wire_response(lines: &[&str]) -> SipMessage {
    message::parse(&text(lines), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", lines.join(" | ")))
}

/// The canonical INVITE of the tests below (branch `z9hG4bKform1`, from UAC_ADDR).
const INVITE: &[&str] = &[
    "INVITE sip:bob@192.0.2.2 SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKform1;rport",
    "Max-Forwards: 70",
    "From: <sip:alice@192.0.2.1>;tag=alice1",
    "To: <sip:bob@192.0.2.2>",
    "Call-ID: call-1@192.0.2.1",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.1>",
    "Content-Length: 0",
];

/// The same INVITE in compact forms, with LWS around `/`, `:`, `;` and `=`, folded
/// lines and a CSeq padded with white space and a leading zero.
const INVITE_UNUSUAL: &[&str] = &[
    "INVITE sip:bob@192.0.2.2 SIP/2.0",
    "v: SIP / 2.0 / UDP 192.0.2.1 : 5060 ; branch = z9hG4bKform1 ; rport",
    "f: <sip:alice@192.0.2.1> ;",
    "  tag = alice1",
    "t:   <sip:bob@192.0.2.2>",
    "i: call-1@192.0.2.1",
    "cseq:   01",
    "\tINVITE  ",
    "m: <sip:alice@192.0.2.1>",
    "Max-Forwards: 70",
    "l: 0",
];

/// The layer took a new INVITE: its key, after the TU sent `180`.
fn new_invite_ringing(layer: &mut TransactionLayer, now: Instant, datagram: &[u8]) -> ServerKey {
    layer
        .handle_message(now, wire_datagram(datagram, UAC_ADDR), udp(UAC_ADDR))
        .expect("taken");
    let events = drain_events(layer);
    let [TransactionEvent::Request { key, request, .. }] = events.as_slice() else {
        panic!("one new request, got {events:?}");
    };
    layer
        .respond(now, key, response(request, 180, Some("bob1")))
        .expect("ringing");
    assert_eq!(drain_transmits(layer).len(), 1);
    key.clone()
}

/// `datagram` arrives again: the layer must treat them as a retransmission (the last
/// response again, nothing for the TU).
fn is_retransmission(layer: &mut TransactionLayer, now: Instant, datagram: &[u8], code: u16) {
    layer
        .handle_message(now, wire_datagram(datagram, UAC_ADDR), udp(UAC_ADDR))
        .expect("taken");
    let events = drain_events(layer);
    assert!(events.is_empty(), "a new transaction: {events:?}");
    let sent = drain_transmits(layer);
    assert_eq!(sent.len(), 1, "the last response again");
    assert_eq!(as_response(&sent[0]).status_code.code(), code);
}

#[test]
fn an_invite_retransmitted_in_compact_folded_lws_form_matches_its_server_transaction() {
    for (first, again) in [(INVITE, INVITE_UNUSUAL), (INVITE_UNUSUAL, INVITE)] {
        let now = start();
        let mut layer = layer();
        let key = new_invite_ringing(&mut layer, now, &text(first));
        assert_eq!(key.branch(), "z9hG4bKform1");
        assert_eq!(key.sent_by(), "192.0.2.1:5060");
        is_retransmission(&mut layer, now + ms(500), &text(again), 180);
        assert_eq!(layer.len(), 1);
    }
}

#[test]
fn the_ack_and_cancel_of_an_invite_match_it_whatever_their_form() {
    // CANCEL in compact LWS form while the INVITE rings: 200 to the CANCEL, and the TU
    // hears the INVITE was cancelled.
    let now = start();
    let mut layer = layer();
    let key = new_invite_ringing(&mut layer, now, &text(INVITE));
    let cancel = [
        "CANCEL sip:bob@192.0.2.2 SIP/2.0",
        "v: SIP /2.0/ UDP 192.0.2.1:5060 ;branch= z9hG4bKform1",
        "f: <sip:alice@192.0.2.1>;tag=alice1",
        "t: <sip:bob@192.0.2.2>",
        "i: call-1@192.0.2.1",
        "CSeq:  1  CANCEL",
        "Max-Forwards: 70",
        "l: 0",
    ];
    layer
        .handle_message(now, wire_request(&cancel, UAC_ADDR), udp(UAC_ADDR))
        .expect("taken");
    let sent = drain_transmits(&mut layer);
    assert_eq!(as_response(&sent[0]).status_code.code(), 200);
    let events = drain_events(&mut layer);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TransactionEvent::Cancelled { invite, .. } if *invite == key)),
        "{events:?}"
    );
    // The TU answers 487; the ACK for it, in yet another form, is absorbed (Completed
    // -> Confirmed): no retransmission of the 487 follows, nothing reaches the TU.
    let SipMessage::Request(invite) = wire_request(INVITE, UAC_ADDR) else {
        unreachable!("a request")
    };
    layer
        .respond(now, &key, response(&invite, 487, Some("bob1")))
        .expect("487");
    drain_transmits(&mut layer);
    let ack = [
        "ACK sip:bob@192.0.2.2 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKform1,",
        " SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKbelow",
        "From: <sip:alice@192.0.2.1>;tag=alice1",
        "To: <sip:bob@192.0.2.2>;tag=bob1",
        "Call-ID: call-1@192.0.2.1",
        "CSeq: 1 ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ];
    layer
        .handle_message(now + ms(10), wire_request(&ack, UAC_ADDR), udp(UAC_ADDR))
        .expect("taken");
    assert!(drain_events(&mut layer).is_empty(), "the ACK is absorbed");
    let mut t = now + ms(10);
    let later = run_until(&mut layer, now, &mut t, now + Duration::from_secs(10));
    assert!(later.is_empty(), "no 487 retransmission after the ACK");
}

#[test]
fn several_via_values_on_one_line_match_the_same_vias_on_separate_lines() {
    // A request through a proxy: its Via first, the UAC's second. Retransmitted with
    // one Via per line (the proxy's folded), it is the same non-INVITE transaction.
    let one_line = [
        "OPTIONS sip:bob@192.0.2.2 SIP/2.0",
        "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy1, SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKuac1",
        "From: <sip:alice@192.0.2.1>;tag=alice1",
        "To: <sip:bob@192.0.2.2>",
        "Call-ID: options-1@192.0.2.1",
        "CSeq: 7 OPTIONS",
        "Max-Forwards: 69",
        "Content-Length: 0",
    ];
    let separate = [
        "OPTIONS sip:bob@192.0.2.2 SIP/2.0",
        "Via: SIP/2.0/UDP PROXY.example.com",
        "   ;branch=z9hG4bKproxy1",
        "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKuac1",
        "f: <sip:alice@192.0.2.1>;tag=alice1",
        "t: <sip:bob@192.0.2.2>",
        "i: options-1@192.0.2.1",
        "CSeq: 7\tOPTIONS",
        "Max-Forwards: 69",
        "l: 0",
    ];
    for (first, again) in [
        (&one_line[..], &separate[..]),
        (&separate[..], &one_line[..]),
    ] {
        let now = start();
        let mut layer = layer();
        layer
            .handle_message(now, wire_request(first, UAC_ADDR), udp(UAC_ADDR))
            .expect("taken");
        let events = drain_events(&mut layer);
        let [TransactionEvent::Request { key, request, .. }] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(
            (key.branch(), key.sent_by()),
            ("z9hG4bKproxy1", "proxy.example.com")
        );
        layer
            .respond(now, key, response(request, 200, Some("bob1")))
            .expect("200");
        drain_transmits(&mut layer);
        is_retransmission(&mut layer, now + ms(500), &text(again), 200);
    }
}

#[test]
fn the_magic_cookie_is_case_sensitive_and_branches_are_compared_exactly() {
    let now = start();
    let mut layer = layer();
    // `Z9HG4BK` is not the cookie (RFC 3261 8.1.1.7 names the exact characters): the
    // request is keyed RFC 2543 style, and its retransmission in another form still
    // finds it (same Call-ID, From tag, CSeq number and Request-URI).
    let old_style: Vec<String> = INVITE
        .iter()
        .map(|l| l.replace("z9hG4bKform1", "Z9HG4BKform1"))
        .collect();
    let old_style: Vec<&str> = old_style.iter().map(String::as_str).collect();
    let key = new_invite_ringing(&mut layer, now, &text(&old_style));
    assert!(key.branch().starts_with("rfc2543;"), "{key}");
    let unusual: Vec<String> = INVITE_UNUSUAL
        .iter()
        .map(|l| l.replace("z9hG4bKform1", "Z9HG4BKform1"))
        .collect();
    let unusual: Vec<&str> = unusual.iter().map(String::as_str).collect();
    is_retransmission(&mut layer, now + ms(500), &text(&unusual), 180);
    // With the cookie, the branch is an opaque identifier compared byte for byte
    // (RFC 3261 17.2.3 "equal"; a UAC never changes a retransmission's branch): one
    // differing only in case is another transaction.
    let mut layer = super::layer();
    new_invite_ringing(&mut layer, now, &text(INVITE));
    let other: Vec<String> = INVITE
        .iter()
        .map(|l| l.replace("z9hG4bKform1", "z9hG4bKFORM1"))
        .collect();
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    layer
        .handle_message(now, wire_request(&other, UAC_ADDR), udp(UAC_ADDR))
        .expect("taken");
    assert!(matches!(
        drain_events(&mut layer).as_slice(),
        [TransactionEvent::Request { .. }]
    ));
    assert_eq!(layer.len(), 2);
}

#[test]
fn responses_with_unusual_via_forms_match_their_client_transaction() {
    let now = start();
    let mut layer = layer();
    let sent = request_from("INVITE", "z9hG4bKclient1", 1, "192.0.2.2:5060");
    let key = layer.send_request(now, sent, udp(UAC_ADDR)).expect("sent");
    drain_transmits(&mut layer);
    let ringing = [
        "SIP/2.0 180 Ringing",
        "v: SIP / 2.0 / UDP 192.0.2.2 : 5060 ; branch = z9hG4bKclient1 ; received = 192.0.2.2 , SIP/2.0/UDP 198.51.100.9;branch=z9hG4bKnext",
        "f: <sip:alice@192.0.2.1>;tag=alice1",
        "t: <sip:bob@192.0.2.2> ; tag = bob1",
        "i: call-1@192.0.2.1",
        "CSeq:   1   INVITE",
        "l: 0",
    ];
    layer
        .handle_message(now, wire_response(&ringing), udp(UAC_ADDR))
        .expect("taken");
    let ok = [
        "SIP/2.0 486 Busy Here",
        "Via: SIP/2.0/UDP 192.0.2.2:5060",
        "  ;branch=z9hG4bKclient1",
        "From: <sip:alice@192.0.2.1>;tag=alice1",
        "To: <sip:bob@192.0.2.2>;tag=bob1",
        "Call-ID: call-1@192.0.2.1",
        "cseq: 1 INVITE",
        "Content-Length: 0",
    ];
    layer
        .handle_message(now + ms(20), wire_response(&ok), udp(UAC_ADDR))
        .expect("taken");
    let codes: Vec<u16> = drain_events(&mut layer)
        .iter()
        .filter_map(|e| match e {
            TransactionEvent::Response { key: k, response } if *k == key => {
                Some(response.status_code.code())
            }
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![180, 486]);
    // The layer ACKed the 486 itself (17.1.1.3), on the INVITE's branch.
    let acks = drain_transmits(&mut layer);
    assert_eq!(acks.len(), 1);
    assert_eq!(as_request(&acks[0]).method, Method::Ack);
    // A response whose branch differs only in case is not ours: dropped.
    let stray: Vec<String> = ok
        .iter()
        .map(|l| l.replace("z9hG4bKclient1", "z9hG4bKCLIENT1"))
        .collect();
    let stray: Vec<&str> = stray.iter().map(String::as_str).collect();
    layer
        .handle_message(now + ms(30), wire_response(&stray), udp(UAC_ADDR))
        .expect("taken");
    assert!(drain_events(&mut layer).is_empty());
    assert!(drain_transmits(&mut layer).is_empty());
}

/// RFC 4475 3.1.1.1 `wsinv` (LWS and folding everywhere, compact forms, several Via
/// values on one line) and the same request written plainly: one server transaction.
#[test]
fn rfc4475_wsinv_and_its_plain_retransmission_match_the_same_server_transaction() {
    let fixture = include_str!("../../../tests/data/rfc4475/valid/wsinv.dat");
    // As published its top branch has no cookie (keyed RFC 2543 style); with one it is
    // keyed by the branch read through the folded, spaced Via.
    for branch in ["390skdjuw", "z9hG4bKwsinv1"] {
        let wsinv = fixture.replace("branch=390skdjuw", &format!("branch={branch}"));
        let plain = format!(
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.2;branch={branch}\r\n\
             Via: SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8\r\n\
             Via: SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239\r\n\
             To: <sip:vivekg@chair-dnrc.example.com>;tag=1918181833n\r\n\
             From: <sip:jdrosen@example.com>;tag=98asjd8\r\n\
             Max-Forwards: 68\r\n\
             Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
             CSeq: 9 INVITE\r\n\
             Content-Length: 0"
        );
        let now = start();
        let mut layer = layer();
        let key = new_invite_ringing(&mut layer, now, wsinv.as_bytes());
        assert_eq!(key.sent_by(), "192.0.2.2");
        assert_eq!(key.branch().starts_with("rfc2543;"), branch == "390skdjuw");
        is_retransmission(&mut layer, now + ms(500), &text(&[&plain]), 180);
    }
}
