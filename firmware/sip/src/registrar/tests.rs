//! Registrar rules with REGISTERs written the way real phones send them, answered
//! with the crate's digest client, on a virtual clock.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};

use super::mwi::{message_summary_body, mwi_notify, MessageSummary};
use super::relay::RelayRejection;
use super::*;
use crate::digest::DigestClient;

const REALM: &str = "branch.example";

/// Yealink T46S, first REGISTER after boot (UDP, behind NAT).
const YEALINK: &str = "REGISTER sip:192.168.10.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.10.51:5062;branch=z9hG4bK1393415463;rport\r\n\
From: \"Anna\" <sip:201@192.168.10.1:5060>;tag=1626823318\r\n\
To: \"Anna\" <sip:201@192.168.10.1:5060>\r\n\
Call-ID: 0_2741457730@192.168.10.51\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:201@192.168.10.51:5062>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-805ec0a1b2c3>\";reg-id=1\r\n\
Max-Forwards: 70\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Expires: 3600\r\n\
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE\r\n\
Supported: outbound,path,replaces\r\n\
Allow-Events: talk,hold,conference,refer,check-sync\r\n\
Content-Length: 0\r\n\r\n";

/// Polycom VVX 411 (TCP, contact expires as a parameter).
const POLYCOM: &str = "REGISTER sip:branch.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.168.10.52:1033;branch=z9hG4bKf1d7a3c2e5a8b4d6\r\n\
From: \"Ben\" <sip:202@branch.example>;tag=8A33B1B2-9A8F43D1\r\n\
To: <sip:202@branch.example>\r\n\
CSeq: 1 REGISTER\r\n\
Call-ID: 3c6b2f8e-5bb1b8a2-54c1d3e0@192.168.10.52\r\n\
Contact: <sip:202@192.168.10.52:5060;transport=tcp>;methods=\"INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE, SUBSCRIBE, NOTIFY, PRACK, UPDATE, REFER\";expires=600\r\n\
User-Agent: PolycomVVX-VVX_411-UA/6.4.3.5018\r\n\
Accept-Language: en\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

/// baresip (two contacts in one header, q values).
const BARESIP: &str = "REGISTER sip:branch.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.10.60:35870;branch=z9hG4bK7b1d7e6f6c0a8f1e;rport\r\n\
Contact: <sip:203-0x55d1@192.168.10.60:35870>;q=0.7, <sip:203@192.168.10.61:5060>;q=1.0\r\n\
Max-Forwards: 70\r\n\
To: <sip:203@branch.example>\r\n\
From: <sip:203@branch.example>;tag=5c2f0a6e8b1b9d3f\r\n\
Call-ID: 8e0a5b2d6c4f7a91\r\n\
CSeq: 31256 REGISTER\r\n\
User-Agent: baresip v3.20.0 (x86_64/linux)\r\n\
Expires: 300\r\n\
Content-Length: 0\r\n\r\n";

/// Parses a fixture through the crate's hardened message layer, as the daemon does.
fn req(text: &str) -> Request {
    match crate::message::parse(text.as_bytes(), &crate::message::Limits::default()) {
        Ok(rsip::SipMessage::Request(r)) => r,
        other => panic!("fixture does not parse as a request: {other:?}"),
    }
}

fn flow(last: u8, port: u16) -> Flow {
    Flow {
        transport: rsip::Transport::Udp,
        peer: format!("203.0.113.{last}:{port}").parse().unwrap(),
        connection: None,
    }
}

fn account(ext: &str) -> Account {
    Account {
        extension: ext.into(),
        username: ext.into(),
        password: format!("pw-{ext}"),
        display_name: Some(format!("User {ext}")),
    }
}

fn registrar(t0: Instant) -> Registrar {
    let mut r = Registrar::new(
        RegistrarConfig::new(REALM, [9; 32], "192.168.10.1:5060"),
        t0,
    )
    .unwrap();
    r.set_accounts(vec![
        account("201"),
        account("202"),
        account("203"),
        account("204"),
    ])
    .unwrap();
    r
}

fn header<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    headers::header_values(&r.headers, name)
}

/// Replaces a header (by name) in `request`.
fn set(request: &mut Request, name: &str, value: &str) {
    let mut all: Vec<Header> = std::mem::take(&mut request.headers).into_iter().collect();
    all.retain(|h| headers::header_values(&rsip::Headers::from(vec![h.clone()]), name).is_empty());
    let h = match name {
        "CSeq" => Header::CSeq(rsip::headers::CSeq::new(value)),
        "Expires" => Header::Expires(rsip::headers::Expires::new(value)),
        "Contact" => Header::Contact(rsip::headers::Contact::new(value)),
        "Call-ID" => Header::CallId(rsip::headers::CallId::new(value)),
        "To" => Header::To(rsip::headers::To::new(value)),
        "Authorization" => Header::Authorization(rsip::headers::Authorization::new(value)),
        other => Header::Other(other.into(), value.into()),
    };
    all.push(h);
    request.headers = all.into();
}

fn cseq_of(request: &Request) -> u32 {
    headers::header_value(&request.headers, "CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `request` unauthenticated, answers the challenge like a phone (the strongest
/// algorithm, CSeq + 1), returns the final outcome and the authenticated request.
fn register(
    r: &mut Registrar,
    now: Instant,
    request: &Request,
    password: &str,
    f: Flow,
) -> (RegisterOutcome, Request) {
    let first = r.handle_register(now, request, f);
    assert_eq!(first.response.status_code.code(), 401);
    assert_eq!(first.auth, AuthOutcome::Challenged);
    let challenges = header(&first.response, "WWW-Authenticate");
    let user = request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::To(t) => Some(
                t.value()
                    .split("sip:")
                    .nth(1)
                    .unwrap()
                    .split('@')
                    .next()
                    .unwrap()
                    .to_owned(),
            ),
            _ => None,
        })
        .unwrap();
    let mut client = DigestClient::new(user, password, 1);
    let auth = client
        .authorize_best(&challenges, "REGISTER", &request.uri.to_string())
        .unwrap();
    let mut second = request.clone();
    set(
        &mut second,
        "CSeq",
        &format!("{} REGISTER", cseq_of(request) + 1),
    );
    set(&mut second, "Authorization", &auth);
    (r.handle_register(now, &second, f), second)
}

fn events(r: &mut Registrar) -> Vec<BindingEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

#[test]
fn challenge_offers_sha256_then_md5() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let out = r.handle_register(t0, &req(YEALINK), flow(1, 5062));
    assert_eq!(out.response.status_code.code(), 401);
    let ch = header(&out.response, "WWW-Authenticate");
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256") && ch[0].contains("realm=\"branch.example\""));
    assert!(ch[1].contains("algorithm=MD5"));
    assert!(ch.iter().all(|c| c.contains("qop=\"auth\"")));
    // Mandatory response headers copied, To tagged.
    assert_eq!(
        header(&out.response, "Call-ID"),
        vec!["0_2741457730@192.168.10.51"]
    );
    assert!(header(&out.response, "To")[0].contains(";tag="));
    assert_eq!(header(&out.response, "Via").len(), 1);
    assert_eq!(r.binding_count(), 0);
}

#[test]
fn yealink_registers_and_gets_its_binding_back() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let (out, _) = register(&mut r, t0, &req(YEALINK), "pw-201", flow(1, 40001));
    assert_eq!(
        out.auth,
        AuthOutcome::Succeeded {
            extension: "201".into()
        }
    );
    assert_eq!(out.response.status_code.code(), 200);
    let contacts = header(&out.response, "Contact");
    assert_eq!(contacts.len(), 1);
    assert!(
        contacts[0].starts_with("<sip:201@192.168.10.51:5062>"),
        "{}",
        contacts[0]
    );
    assert!(
        contacts[0].contains("+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-805ec0a1b2c3>\"")
    );
    assert!(contacts[0].ends_with(";expires=3600"));
    let found = r.lookup(t0, "201");
    assert_eq!(found.len(), 1);
    let b = found[0];
    assert_eq!(b.flow, flow(1, 40001));
    assert_eq!(
        b.instance.as_deref(),
        Some("<urn:uuid:00000000-0000-1000-8000-805ec0a1b2c3>")
    );
    assert_eq!(b.reg_id, Some(1));
    assert_eq!(b.user_agent.as_deref(), Some("Yealink SIP-T46S 66.86.0.15"));
    assert_eq!(b.expires_at, t0 + Duration::from_secs(3600));
    assert!(
        matches!(&events(&mut r)[..], [BindingEvent::Added { extension, .. }] if extension == "201")
    );
    assert_eq!(r.timeout(), Some(t0 + Duration::from_secs(3600)));
}

#[test]
fn polycom_over_tcp_with_contact_expires() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let f = Flow {
        transport: rsip::Transport::Tcp,
        peer: "203.0.113.2:1033".parse().unwrap(),
        connection: Some(7),
    };
    let (out, _) = register(&mut r, t0, &req(POLYCOM), "pw-202", f);
    assert_eq!(out.response.status_code.code(), 200);
    let b = r.lookup(t0, "202")[0].clone();
    assert_eq!(b.expires_at, t0 + Duration::from_secs(600));
    assert_eq!(b.flow.connection, Some(7));
    assert_eq!(
        b.uri().to_string(),
        "sip:202@192.168.10.52:5060;transport=TCP"
    );
}

#[test]
fn baresip_two_contacts_ordered_by_q() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let (out, _) = register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 35870));
    assert_eq!(out.response.status_code.code(), 200);
    assert_eq!(header(&out.response, "Contact").len(), 2);
    let found = r.lookup(t0, "203");
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].q, found[1].q), (1000, 700));
    assert!(found[0].uri().to_string().contains("192.168.10.61"));
}

#[test]
fn refresh_same_call_id_and_out_of_order() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let (_, sent) = register(&mut r, t0, &req(POLYCOM), "pw-202", flow(2, 1));
    events(&mut r);
    // Refresh 300 s later with the next CSeq: the nonce may be reused with a new nc,
    // so go through a fresh challenge like a phone that restarted its digest state.
    let t1 = t0 + Duration::from_secs(300);
    let mut refresh = sent.clone();
    set(
        &mut refresh,
        "CSeq",
        &format!("{} REGISTER", cseq_of(&sent) + 1),
    );
    refresh
        .headers
        .retain(|h| !matches!(h, Header::Authorization(_)));
    let (out, sent2) = register(&mut r, t1, &refresh, "pw-202", flow(2, 2));
    assert_eq!(out.response.status_code.code(), 200);
    let b = r.lookup(t1, "202")[0].clone();
    assert_eq!(b.expires_at, t1 + Duration::from_secs(600));
    assert_eq!(b.flow, flow(2, 2));
    assert_eq!(b.registered_at, t0);
    assert!(matches!(
        &events(&mut r)[..],
        [BindingEvent::Refreshed { .. }]
    ));
    // A late copy of the first REGISTER (lower CSeq, same Call-ID) is out of order.
    let mut stale_copy = sent2.clone();
    set(
        &mut stale_copy,
        "CSeq",
        &format!("{} REGISTER", cseq_of(&sent)),
    );
    stale_copy
        .headers
        .retain(|h| !matches!(h, Header::Authorization(_)));
    set(
        &mut stale_copy,
        "Contact",
        "<sip:202@192.168.10.52:5060;transport=tcp>;expires=0",
    );
    let (out, _) = register(&mut r, t1, &stale_copy, "pw-202", flow(2, 2));
    // register() bumped the CSeq by one: still not above the stored one.
    assert_eq!(out.response.status_code.code(), 500);
    assert_eq!(r.lookup(t1, "202").len(), 1, "nothing changed");
    assert!(events(&mut r).is_empty());
}

#[test]
fn interval_too_brief_and_clamping() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let mut short = req(BARESIP);
    set(&mut short, "Expires", "30");
    let (out, _) = register(&mut r, t0, &short, "pw-203", flow(3, 1));
    assert_eq!(out.response.status_code.code(), 423);
    assert_eq!(header(&out.response, "Min-Expires"), vec!["60"]);
    assert_eq!(r.binding_count(), 0);
    let mut long = req(BARESIP);
    set(&mut long, "Expires", "999999999999");
    let (out, _) = register(&mut r, t0, &long, "pw-203", flow(3, 1));
    assert_eq!(out.response.status_code.code(), 200);
    assert!(header(&out.response, "Contact")
        .iter()
        .all(|c| c.ends_with(";expires=7200")));
}

#[test]
fn star_removes_everything_only_with_expires_zero() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 1));
    events(&mut r);
    let mut star = req(BARESIP);
    set(&mut star, "Contact", "*");
    set(&mut star, "CSeq", "40000 REGISTER");
    let (out, _) = register(&mut r, t0, &star, "pw-203", flow(3, 1));
    assert_eq!(out.response.status_code.code(), 400, "* needs Expires: 0");
    assert_eq!(r.lookup(t0, "203").len(), 2);
    set(&mut star, "Expires", "0");
    let (out, _) = register(&mut r, t0, &star, "pw-203", flow(3, 1));
    assert_eq!(out.response.status_code.code(), 200);
    assert!(header(&out.response, "Contact").is_empty());
    assert!(r.lookup(t0, "203").is_empty());
    let ev = events(&mut r);
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| matches!(
        e,
        BindingEvent::Removed {
            reason: RemovalReason::Unregistered,
            ..
        }
    )));
}

#[test]
fn wrong_user_and_unknown_user() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    // Authenticated as 201, registering 202: 403.
    let mut other = req(YEALINK);
    set(&mut other, "To", "<sip:202@192.168.10.1>");
    let first = r.handle_register(t0, &other, flow(1, 1));
    let ch = header(&first.response, "WWW-Authenticate");
    let auth = DigestClient::new("201", "pw-201", 1)
        .authorize_best(&ch, "REGISTER", &other.uri.to_string())
        .unwrap();
    set(&mut other, "Authorization", &auth);
    set(&mut other, "CSeq", "2 REGISTER");
    let out = r.handle_register(t0, &other, flow(1, 1));
    assert_eq!(out.response.status_code.code(), 403);
    assert_eq!(
        out.auth,
        AuthOutcome::Succeeded {
            extension: "201".into()
        }
    );
    // To an extension that does not exist: 404 (only after authentication).
    let mut unknown = req(YEALINK);
    set(&mut unknown, "To", "<sip:999@192.168.10.1>");
    let first = r.handle_register(t0, &unknown, flow(1, 1));
    assert_eq!(first.response.status_code.code(), 401);
    let ch = header(&first.response, "WWW-Authenticate");
    let auth = DigestClient::new("201", "pw-201", 2)
        .authorize_best(&ch, "REGISTER", &unknown.uri.to_string())
        .unwrap();
    set(&mut unknown, "Authorization", &auth);
    let out = r.handle_register(t0, &unknown, flow(1, 1));
    assert_eq!(out.response.status_code.code(), 404);
    assert_eq!(r.binding_count(), 0);
}

#[test]
fn wrong_password_and_unknown_username_fail_the_same_way() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    for (user, pw) in [("201", "guess"), ("nobody", "guess")] {
        let mut request = req(YEALINK);
        let first = r.handle_register(t0, &request, flow(1, 1));
        let ch = header(&first.response, "WWW-Authenticate");
        let auth = DigestClient::new(user, pw, 1)
            .authorize_best(&ch, "REGISTER", &request.uri.to_string())
            .unwrap();
        set(&mut request, "Authorization", &auth);
        let out = r.handle_register(t0, &request, flow(1, 1));
        assert_eq!(out.response.status_code.code(), 401, "{user}");
        assert!(matches!(out.auth, AuthOutcome::Failed { .. }), "{user}");
        assert!(!header(&out.response, "WWW-Authenticate")[0].contains("stale"));
    }
    assert_eq!(r.binding_count(), 0);
}

#[test]
fn expired_nonce_gets_stale_challenge() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let mut request = req(YEALINK);
    let first = r.handle_register(t0, &request, flow(1, 1));
    let ch = header(&first.response, "WWW-Authenticate");
    let auth = DigestClient::new("201", "pw-201", 1)
        .authorize_best(&ch, "REGISTER", &request.uri.to_string())
        .unwrap();
    set(&mut request, "Authorization", &auth);
    let late = t0 + Duration::from_secs(301);
    let out = r.handle_register(late, &request, flow(1, 1));
    assert_eq!(out.response.status_code.code(), 401);
    assert_eq!(out.auth, AuthOutcome::Stale);
    assert!(header(&out.response, "WWW-Authenticate")
        .iter()
        .all(|c| c.contains("stale=true")));
}

#[test]
fn bad_requests_get_400_and_change_nothing() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let cases: Vec<(&str, &str)> = vec![
        ("Contact", "<tel:+4930123>"),
        ("Contact", "<sip:201@192.168.10.51>;expires=soon"),
        ("Contact", "<sip:201@192.168.10.51>;q=1.5"),
        ("Contact", "<sip:201@192.168.10.51>;reg-id=x"),
        ("Contact", "*, <sip:201@192.168.10.51>"),
        // rsip 0.4 cannot hold IPv6 literals in URIs (module limit).
        ("Contact", "<sip:201@[2001:db8::51]:5060>"),
        ("Expires", "-5"),
    ];
    for (name, value) in cases {
        let mut bad = req(YEALINK);
        set(&mut bad, name, value);
        let (out, _) = register(&mut r, t0, &bad, "pw-201", flow(1, 1));
        assert_eq!(out.response.status_code.code(), 400, "{name}: {value}");
    }
    // Missing To user or Call-ID: 400 before any challenge.
    let mut no_user = req(YEALINK);
    set(&mut no_user, "To", "<sip:192.168.10.1>");
    assert_eq!(
        r.handle_register(t0, &no_user, flow(1, 1))
            .response
            .status_code
            .code(),
        400
    );
    let mut no_call_id = req(YEALINK);
    no_call_id
        .headers
        .retain(|h| !matches!(h, Header::CallId(_)));
    assert_eq!(
        r.handle_register(t0, &no_call_id, flow(1, 1))
            .response
            .status_code
            .code(),
        400
    );
    assert_eq!(r.binding_count(), 0);
    assert!(events(&mut r).is_empty());
}

#[test]
fn require_gets_420() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let mut request = req(YEALINK);
    set(&mut request, "Require", "path, gruu");
    let (out, _) = register(&mut r, t0, &request, "pw-201", flow(1, 1));
    assert_eq!(out.response.status_code.code(), 420);
    assert_eq!(header(&out.response, "Unsupported"), vec!["path, gruu"]);
}

#[test]
fn query_without_contact_lists_bindings() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 1));
    let mut query = req(BARESIP);
    query.headers.retain(|h| !matches!(h, Header::Contact(_)));
    set(&mut query, "CSeq", "50000 REGISTER");
    let t1 = t0 + Duration::from_secs(100);
    let (out, _) = register(&mut r, t1, &query, "pw-203", flow(3, 1));
    assert_eq!(out.response.status_code.code(), 200);
    let contacts = header(&out.response, "Contact");
    assert_eq!(contacts.len(), 2);
    assert!(contacts.iter().all(|c| c.ends_with(";expires=200")));
}

#[test]
fn instance_id_replaces_the_old_binding_when_the_phone_moves() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(YEALINK), "pw-201", flow(1, 1));
    events(&mut r);
    // Rebooted with a new IP and a new Call-ID, same instance.
    let moved_text = YEALINK
        .replace("192.168.10.51", "192.168.10.77")
        .replace("0_2741457730", "0_999");
    let (out, _) = register(&mut r, t0, &req(&moved_text), "pw-201", flow(9, 1));
    assert_eq!(out.response.status_code.code(), 200);
    let found = r.lookup(t0, "201");
    assert_eq!(found.len(), 1);
    assert!(found[0].uri().to_string().contains("192.168.10.77"));
    assert!(matches!(
        &events(&mut r)[..],
        [BindingEvent::Refreshed { .. }]
    ));
}

#[test]
fn contact_limit_replaces_oldest_or_rejects() {
    let t0 = Instant::now();
    let mut cfg = RegistrarConfig::new(REALM, [9; 32], "192.168.10.1");
    cfg.max_contacts = 2;
    let mut r = Registrar::new(cfg.clone(), t0).unwrap();
    r.set_accounts(vec![account("204")]).unwrap();
    let phone = |i: u32| {
        format!(
            "REGISTER sip:branch.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bK{i}\r\nFrom: <sip:204@branch.example>;tag={i}\r\nTo: <sip:204@branch.example>\r\nCall-ID: call-{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:204@10.0.0.{i}:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for i in 1..=3u32 {
        let at = t0 + Duration::from_secs(u64::from(i));
        let (out, _) = register(&mut r, at, &req(&phone(i)), "pw-204", flow(i as u8, 5060));
        assert_eq!(out.response.status_code.code(), 200);
    }
    let now = t0 + Duration::from_secs(3);
    let uris: Vec<String> = r
        .lookup(now, "204")
        .iter()
        .map(|b| b.uri().to_string())
        .collect();
    assert_eq!(uris, vec!["sip:204@10.0.0.3:5060", "sip:204@10.0.0.2:5060"]);
    assert!(events(&mut r).iter().any(|e| matches!(e, BindingEvent::Removed { reason: RemovalReason::Replaced, binding, .. } if binding.uri().to_string() == "sip:204@10.0.0.1:5060")));

    cfg.overflow = ContactOverflow::Reject;
    let mut r = Registrar::new(cfg, t0).unwrap();
    r.set_accounts(vec![account("204")]).unwrap();
    for i in 1..=2u32 {
        register(&mut r, t0, &req(&phone(i)), "pw-204", flow(1, 1));
    }
    let (out, _) = register(&mut r, t0, &req(&phone(3)), "pw-204", flow(1, 1));
    assert_eq!(out.response.status_code.code(), 503);
    assert_eq!(r.lookup(t0, "204").len(), 2);
}

#[test]
fn bindings_expire_on_the_clock() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 1));
    events(&mut r);
    let end = t0 + Duration::from_secs(300);
    assert_eq!(r.timeout(), Some(end));
    assert_eq!(r.lookup(end - Duration::from_millis(1), "203").len(), 2);
    assert!(
        r.lookup(end, "203").is_empty(),
        "expired bindings are never returned"
    );
    r.handle_timeout(end);
    assert_eq!(r.binding_count(), 0);
    assert_eq!(r.timeout(), None);
    let ev = events(&mut r);
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| matches!(e, BindingEvent::Expired { .. })));
}

#[test]
fn accounts_are_validated_and_removal_drops_bindings() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(YEALINK), "pw-201", flow(1, 1));
    events(&mut r);
    let mut bad = account("2 01");
    assert!(matches!(
        r.set_accounts(vec![bad.clone()]),
        Err(RegistrarError::BadAccount {
            field: "extension",
            ..
        })
    ));
    bad = account("205");
    bad.password.clear();
    assert!(matches!(
        r.set_accounts(vec![bad]),
        Err(RegistrarError::BadAccount {
            field: "password",
            ..
        })
    ));
    assert_eq!(
        r.set_accounts(vec![account("205"), account("205")]),
        Err(RegistrarError::Duplicate("205".into()))
    );
    // Nothing changed by the failures.
    assert_eq!(r.lookup(t0, "201").len(), 1);
    assert!(format!("{:?}", account("201")).contains("<redacted>"));
    r.set_accounts(vec![account("202")]).unwrap();
    assert!(r.lookup(t0, "201").is_empty());
    assert!(matches!(
        &events(&mut r)[..],
        [BindingEvent::Removed {
            reason: RemovalReason::AccountRemoved,
            ..
        }]
    ));
    assert!(matches!(
        Registrar::new(
            RegistrarConfig {
                min_expires: 0,
                ..RegistrarConfig::new(REALM, [0; 32], "h")
            },
            t0
        ),
        Err(RegistrarError::BadConfig {
            field: "min_expires"
        })
    ));
}

#[test]
fn mwi_notify_for_a_binding() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(YEALINK), "pw-201", flow(1, 1));
    let b = r.lookup(t0, "201")[0].clone();
    let n = mwi_notify(
        &b,
        "201",
        REALM,
        &MessageSummary {
            new: 2,
            old: 8,
            urgent_new: 1,
            urgent_old: 0,
        },
    );
    assert_eq!(n.request_uri.to_string(), "sip:201@192.168.10.51:5062");
    assert_eq!(
        String::from_utf8(n.body).unwrap(),
        "Messages-Waiting: yes\r\nMessage-Account: sip:201@branch.example\r\nVoice-Message: 2/8 (1/0)\r\n"
    );
    let names: Vec<String> = n.headers.iter().map(|h| h.to_string()).collect();
    assert!(names.contains(&"Event: message-summary".to_string()));
    assert!(names.contains(&"Content-Type: application/simple-message-summary".to_string()));
    assert!(message_summary_body("sip:x@y", &MessageSummary::default())
        .starts_with("Messages-Waiting: no\r\n"));
}

fn message(to: &str, content_type: &str, body: &str) -> Request {
    req(&format!(
        "MESSAGE sip:{to}@branch.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.10.51:5062;branch=z9hG4bKm1;rport\r\nFrom: <sip:201@branch.example>;tag=m1\r\nTo: <sip:{to}@branch.example>\r\nCall-ID: msg-1@192.168.10.51\r\nCSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\nMax-Forwards: 70\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[test]
fn message_relay_to_every_binding_of_the_target() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 35870));
    let out = r
        .relay_message(
            t0,
            &message("203", "text/plain;charset=UTF-8", "Kaffee?"),
            "201",
            5,
        )
        .unwrap();
    assert_eq!(out.len(), 2);
    for m in &out {
        assert_eq!(m.flow, flow(3, 35870));
        assert_eq!(m.request.method, rsip::Method::Message);
        assert_eq!(m.request.body, b"Kaffee?");
        let v = |n| {
            headers::header_value(&m.request.headers, n)
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            v("From").split(";tag=").next().unwrap(),
            "\"User 201\" <sip:201@branch.example>"
        );
        assert_eq!(v("To"), "<sip:203@branch.example>");
        assert_eq!(v("CSeq"), "1 MESSAGE");
        assert_eq!(v("Content-Type"), "text/plain;charset=UTF-8");
        assert!(v("Via").contains(";branch=z9hG4bK"));
        // The wire form parses back.
        let bytes = m.request.to_string();
        assert!(Request::try_from(bytes.as_str()).is_ok());
    }
    assert_ne!(
        headers::header_value(&out[0].request.headers, "Call-ID"),
        headers::header_value(&out[1].request.headers, "Call-ID")
    );
    assert_eq!(out[0].request.uri.to_string(), "sip:203@192.168.10.61:5060");
}

#[test]
fn message_relay_refusals() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    register(&mut r, t0, &req(BARESIP), "pw-203", flow(3, 1));
    let e = r
        .relay_message(t0, &message("999", "text/plain", "hi"), "201", 1)
        .unwrap_err();
    assert_eq!(
        (e.code(), e.clone()),
        (404, RelayRejection::UnknownTarget("999".into()))
    );
    let e = r
        .relay_message(t0, &message("202", "text/plain", "hi"), "201", 1)
        .unwrap_err();
    assert_eq!(e.code(), 480);
    let e = r
        .relay_message(
            t0,
            &message("203", "application/im-iscomposing+xml", "<x/>"),
            "201",
            1,
        )
        .unwrap_err();
    assert_eq!(e.code(), 415);
    assert_eq!(e.extra_headers()[0].to_string(), "Accept: text/plain");
    let big = "x".repeat(1301);
    let e = r
        .relay_message(t0, &message("203", "text/plain", &big), "201", 1)
        .unwrap_err();
    assert_eq!(
        e,
        RelayRejection::TooLarge {
            size: 1301,
            max: 1300
        }
    );
    assert_eq!(e.code(), 413);
}

#[test]
fn message_sender_must_authenticate() {
    let t0 = Instant::now();
    let mut r = registrar(t0);
    let m = message("203", "text/plain", "hi");
    let Authentication::Rejected { response, auth } = r.authenticate(t0, &m) else {
        panic!()
    };
    assert_eq!(
        (response.status_code.code(), auth),
        (401, AuthOutcome::Challenged)
    );
    let ch = header(&response, "WWW-Authenticate");
    let value = DigestClient::new("201", "pw-201", 3)
        .authorize_best(&ch, "MESSAGE", &m.uri.to_string())
        .unwrap();
    let mut signed = m.clone();
    set(&mut signed, "Authorization", &value);
    assert!(
        matches!(r.authenticate(t0, &signed), Authentication::Authenticated { extension } if extension == "201")
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// Expiry 0 unregisters.
    Register {
        ext: u8,
        contact: u8,
        expires: u32,
    },
    Advance(u32),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..8, prop_oneof![Just(0u32), 30u32..100, 60u32..4000]).prop_map(|(ext, contact, expires)| Op::Register { ext, contact, expires }),
        2 => (1u32..3000).prop_map(Op::Advance),
        1 => Just(Op::Timeout),
    ]
}

proptest! {
    /// Against a model: bindings per account never exceed the limit, lookup never
    /// returns an expired binding, and every returned binding was registered with a
    /// non-zero expiry that has not run out.
    #[test]
    fn bindings_respect_limits_and_expiry(ops in proptest::collection::vec(op(), 1..60)) {
        let t0 = Instant::now();
        let mut cfg = RegistrarConfig::new(REALM, [1; 32], "192.168.10.1");
        cfg.max_contacts = 3;
        let mut r = Registrar::new(cfg, t0).unwrap();
        r.set_accounts((0..3).map(|i| account(&format!("30{i}"))).collect()).unwrap();
        let mut now = t0;
        let mut cseq = 1u32;
        for op in ops {
            match op {
                Op::Register { ext, contact, expires } => {
                    cseq += 2;
                    let text = format!(
                        "REGISTER sip:branch.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.{contact}:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:30{ext}@branch.example>;tag=p\r\nTo: <sip:30{ext}@branch.example>\r\nCall-ID: prop-{ext}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:30{ext}@10.1.0.{contact}:5060>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
                    );
                    let (out, _) = register(&mut r, now, &req(&text), &format!("pw-30{ext}"), flow(contact, 5060));
                    let code = out.response.status_code.code();
                    if expires != 0 && expires < 60 {
                        prop_assert_eq!(code, 423);
                    } else {
                        prop_assert_eq!(code, 200);
                    }
                }
                Op::Advance(s) => now += Duration::from_secs(u64::from(s)),
                Op::Timeout => r.handle_timeout(now),
            }
            for ext in 0..3 {
                let found = r.lookup(now, &format!("30{ext}"));
                prop_assert!(found.len() <= 3);
                for b in found {
                    prop_assert!(b.expires_at > now);
                    prop_assert!(b.remaining(now) > 0);
                }
            }
        }
        r.handle_timeout(now);
        prop_assert!(r.timeout().is_none_or(|t| t > now));
    }
}

#[test]
fn an_algorithm_the_registrar_does_not_offer_is_refused() {
    // A site that turned MD5 off: the challenge offers SHA-256 alone, and an answer
    // computed with MD5 over that challenge's nonce (a downgrade) is refused; the same
    // answer to a registrar that offers MD5 registers, so the refusal is the setting's.
    let t0 = Instant::now();
    for (algorithms, accepted) in [
        (vec![Algorithm::Sha256], false),
        (vec![Algorithm::Sha256, Algorithm::Md5], true),
    ] {
        let mut config = RegistrarConfig::new(REALM, [9; 32], "192.168.10.1:5060");
        config.digest_algorithms = algorithms.clone();
        let mut r = Registrar::new(config, t0).unwrap();
        r.set_accounts(vec![account("201")]).unwrap();
        let mut request = req(YEALINK);
        let first = r.handle_register(t0, &request, flow(1, 1));
        let ch = header(&first.response, "WWW-Authenticate");
        assert_eq!(ch.len(), algorithms.len(), "{ch:?}");
        let downgraded = ch[0].replace("algorithm=SHA-256", "algorithm=MD5");
        let auth = DigestClient::new("201", "pw-201", 1)
            .authorize_best(&[downgraded.as_str()], "REGISTER", &request.uri.to_string())
            .unwrap();
        assert!(auth.contains("algorithm=MD5"), "{auth}");
        set(&mut request, "Authorization", &auth);
        set(&mut request, "CSeq", "2 REGISTER");
        let out = r.handle_register(t0, &request, flow(1, 1));
        if accepted {
            assert_eq!(out.response.status_code.code(), 200, "{algorithms:?}");
            assert_eq!(r.binding_count(), 1);
        } else {
            assert_eq!(out.response.status_code.code(), 401, "{algorithms:?}");
            assert!(matches!(out.auth, AuthOutcome::Failed { .. }));
            assert_eq!(r.binding_count(), 0);
        }
    }
    // An empty list is a configuration error, not a registrar that refuses everyone.
    let mut config = RegistrarConfig::new(REALM, [9; 32], "h");
    config.digest_algorithms.clear();
    assert!(matches!(
        Registrar::new(config, t0),
        Err(RegistrarError::BadConfig {
            field: "digest_algorithms"
        })
    ));
}
