//! Unit and property tests of the message layer. RFC 4475 fixtures and rsip regression
//! fixtures are exercised by `tests/torture.rs`.

use proptest::prelude::*;
use rsip::prelude::*;

use super::*;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn p(s: &str) -> Result<SipMessage, ParseError> {
    parse(s.as_bytes(), &Limits::default())
}

#[test]
fn typical_invite_parses_with_key_fields() {
    let msg = p(INVITE).unwrap();
    let f = transaction_fields(&msg).unwrap();
    assert_eq!(f.branch, "z9hG4bK776asdhds");
    assert_eq!(f.method, rsip::Method::Invite);
    assert_eq!(f.call_id, "a84b4c76e66710@pc33.atlanta.example.com");
    assert_eq!(f.cseq, 314159);
    assert_eq!(from_tag(&msg).unwrap(), Some("1928301774"));
    assert_eq!(to_tag(&msg).unwrap(), None);
    assert_eq!(msg.body(), b"v=0\n");
}

#[test]
fn serialize_round_trips_and_keeps_binary_body() {
    let mut msg = p(INVITE).unwrap();
    *msg.body_mut() = vec![0xff, 0x00, 0xfe, 0x0a];
    let bytes = serialize(&msg);
    assert!(bytes.ends_with(&[0xff, 0x00, 0xfe, 0x0a]));
    let again = parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(again, msg);
}

#[test]
fn serialize_cannot_inject_headers() {
    let mut msg = p(INVITE).unwrap();
    msg.headers_mut().push(rsip::Header::Other(
        "X-Evil".into(),
        "a\r\nVia: injected".into(),
    ));
    let text = String::from_utf8(serialize(&msg)).unwrap();
    assert!(text.contains("X-Evil: a  Via: injected\r\n"));
}

#[test]
fn response_parses_and_keeps_unknown_reason() {
    let msg = p("SIP/2.0 299 Very Odd\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap();
    let SipMessage::Response(r) = &msg else {
        panic!("not a response")
    };
    assert_eq!(
        r.status_code,
        rsip::StatusCode::Other(299, "Very Odd".into())
    );
    assert_eq!(
        transaction_fields(&msg).unwrap().method,
        rsip::Method::Options
    );
    assert_eq!(to_tag(&msg).unwrap(), Some("2"));
}

#[test]
fn size_limits_are_enforced() {
    let limits = Limits {
        max_message_len: 100,
        ..Limits::default()
    };
    assert!(matches!(
        parse(INVITE.as_bytes(), &limits),
        Err(ParseError::TooLarge { limit: 100, .. })
    ));
    let many = format!(
        "{}{}",
        INVITE.split("Content-Type").next().unwrap(),
        "X-A: 1\r\n".repeat(200)
    ) + "\r\n";
    assert!(matches!(
        p(&many),
        Err(ParseError::TooManyHeaders { limit: 128 })
    ));
    let long = INVITE.replace("Max-Forwards: 70", &format!("X-Long: {}", "a".repeat(9000)));
    assert!(matches!(
        p(&long),
        Err(ParseError::LineTooLong { line: 3, .. })
    ));
}

#[test]
fn content_length_rules() {
    let short = INVITE.replace("Content-Length: 4", "Content-Length: 40");
    assert_eq!(
        p(&short),
        Err(ParseError::BodyTooShort {
            content_length: 40,
            actual: 4
        })
    );
    let trunc = INVITE.replace("Content-Length: 4", "Content-Length: 2");
    assert_eq!(p(&trunc).unwrap().body(), b"v=");
    let none = INVITE.replace("Content-Length: 4\r\n", "");
    assert_eq!(p(&none).unwrap().body(), b"v=0\n");
    let neg = INVITE.replace("Content-Length: 4", "Content-Length: -4");
    assert!(matches!(
        p(&neg),
        Err(ParseError::InvalidHeader {
            name: "Content-Length",
            ..
        })
    ));
    let two = INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 4");
    assert_eq!(
        p(&two),
        Err(ParseError::DuplicateHeader {
            name: "Content-Length"
        })
    );
}

#[test]
fn mandatory_headers_and_cseq_agreement() {
    for (header, name) in [
        (
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n",
            "Via",
        ),
        ("To: Bob <sip:bob@biloxi.example.com>\r\n", "To"),
        (
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n",
            "From",
        ),
        (
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n",
            "Call-ID",
        ),
        ("CSeq: 314159 INVITE\r\n", "CSeq"),
    ] {
        assert_eq!(
            p(&INVITE.replace(header, "")),
            Err(ParseError::MissingHeader { name }),
            "{name}"
        );
    }
    // Max-Forwards may be absent (RFC 3261 16.3).
    assert!(p(&INVITE.replace("Max-Forwards: 70\r\n", "")).is_ok());
    assert_eq!(
        p(&INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE")),
        Err(ParseError::CSeqMethodMismatch {
            method: "INVITE".into(),
            cseq_method: "BYE".into()
        })
    );
    assert_eq!(
        p(&INVITE.replace(";branch=z9hG4bK776asdhds", "")),
        Err(ParseError::MissingBranch)
    );
}

#[test]
fn version_and_method_errors_are_distinct() {
    let v = p(&INVITE.replacen("SIP/2.0", "SIP/3.0", 1));
    assert_eq!(
        v,
        Err(ParseError::UnsupportedVersion {
            version: "SIP/3.0".into()
        })
    );
    assert_eq!(v.unwrap_err().status_hint(), Some(505));
    let m = p(&INVITE.replace("INVITE", "invite"));
    assert!(matches!(m, Err(ParseError::UnknownMethod { .. })));
    let tel = p(&INVITE.replacen("sip:bob@biloxi.example.com", "tel:+15551234", 1));
    assert_eq!(
        tel,
        Err(ParseError::UnsupportedUriScheme {
            scheme: "tel".into()
        })
    );
}

#[test]
fn line_end_handling() {
    let lf = INVITE.replace("\r\n", "\n");
    assert_eq!(p(&lf).unwrap(), p(INVITE).unwrap());
    let cr = INVITE.replacen("\r\n", "\r", 2);
    assert!(matches!(p(&cr), Err(ParseError::BareCr { .. })));
    let lead = format!("\r\n\r\n{INVITE}");
    assert!(p(&lead).is_ok());
    assert_eq!(p("\r\n\r\n"), Err(ParseError::Empty));
    assert_eq!(p(""), Err(ParseError::Empty));
    let cut = &INVITE[..60];
    assert_eq!(p(cut), Err(ParseError::MissingHeaderTerminator));
}

#[test]
fn non_utf8_and_control_characters_in_head_are_refused() {
    let mut bytes = INVITE.as_bytes().to_vec();
    let pos = INVITE.find("Bob").unwrap();
    bytes[pos] = 0xff;
    assert!(matches!(
        parse(&bytes, &Limits::default()),
        Err(ParseError::InvalidUtf8 { line: 4 })
    ));
    bytes[pos] = 0x01;
    assert!(matches!(
        parse(&bytes, &Limits::default()),
        Err(ParseError::ControlCharacter { line: 4, byte: 1 })
    ));
}

#[test]
fn accessors_report_missing_and_malformed_without_panicking() {
    let mut msg = p(INVITE).unwrap();
    msg.headers_mut()
        .retain(|h| !matches!(h, rsip::Header::Via(_) | rsip::Header::CSeq(_)));
    assert_eq!(
        top_via_branch(&msg),
        Err(FieldError::Missing { header: "Via" })
    );
    assert_eq!(cseq(&msg), Err(FieldError::Missing { header: "CSeq" }));
    msg.headers_mut()
        .push(rsip::headers::Via::new("garbage").into());
    msg.headers_mut()
        .push(rsip::headers::CSeq::new("99999999999 INVITE").into());
    assert!(matches!(
        top_via_branch(&msg),
        Err(FieldError::Malformed { .. })
    ));
    assert!(matches!(cseq(&msg), Err(FieldError::Malformed { .. })));
    msg.headers_mut()
        .retain(|h| !matches!(h, rsip::Header::From(_)));
    msg.headers_mut()
        .push(rsip::headers::From::new("\"open <sip:a@b>").into());
    assert!(matches!(
        from_tag(&msg),
        Err(FieldError::Malformed { header: "From", .. })
    ));
}

#[test]
fn stream_framing() {
    let l = Limits::default();
    assert_eq!(frame_stream(b"", &l), Ok(Frame::Incomplete));
    assert_eq!(frame_stream(b"\r\n", &l), Ok(Frame::Incomplete));
    assert_eq!(
        frame_stream(b"\r\n\r\nINVITE", &l),
        Ok(Frame::KeepAlive { consumed: 4 })
    );
    let msg = INVITE.as_bytes();
    for cut in 0..msg.len() {
        assert_eq!(
            frame_stream(&msg[..cut], &l),
            Ok(Frame::Incomplete),
            "cut at {cut}"
        );
    }
    let mut two = b"\r\n".to_vec();
    two.extend_from_slice(msg);
    two.extend_from_slice(msg);
    let Ok(Frame::Message { start, len }) = frame_stream(&two, &l) else {
        panic!("no frame")
    };
    assert_eq!((start, len), (2, msg.len()));
    assert!(parse(&two[start..start + len], &l).is_ok());
    let no_cl = INVITE.replace("Content-Length: 4\r\n", "");
    assert_eq!(
        frame_stream(no_cl.as_bytes(), &l),
        Err(ParseError::MissingContentLength)
    );
    let huge = INVITE.replace("Content-Length: 4", "Content-Length: 4000000");
    assert!(matches!(
        frame_stream(huge.as_bytes(), &l),
        Err(ParseError::TooLarge { .. })
    ));
    let endless = vec![b'a'; l.max_message_len + 1];
    assert!(matches!(
        frame_stream(&endless, &l),
        Err(ParseError::TooLarge { .. })
    ));
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,3}"
}

proptest! {
    #[test]
    fn generated_messages_round_trip(
        method in prop::sample::select(vec!["INVITE", "OPTIONS", "BYE", "REGISTER", "MESSAGE", "INFO", "UPDATE"]),
        user in "[a-z0-9]{1,12}",
        host in host(),
        port in prop::option::of(1u16..65535),
        branch in token(),
        call_id in "[a-zA-Z0-9.@-]{1,40}",
        seq in 0u32..=0x7fff_ffff,
        ftag in token(),
        ttag in prop::option::of(token()),
        display in prop::option::of("[a-zA-Z ]{0,20}"),
        body in prop::collection::vec(any::<u8>(), 0..200),
        extra in prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,40}"), 0..5),
        response in prop::option::of(100u16..700),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let start = match response {
            Some(code) => format!("SIP/2.0 {code} Reason\r\n"),
            None => format!("{method} sip:{user}@{host}{port} SIP/2.0\r\n"),
        };
        let display = display.map(|d| format!("\"{d}\" ")).unwrap_or_default();
        let to_tag_param = ttag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        let mut text = format!(
            "{start}Via: SIP/2.0/UDP {host}{port};branch={branch}\r\nFrom: {display}<sip:{user}@{host}>;tag={ftag}\r\nTo: <sip:{user}@{host}>{to_tag_param}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\n"
        );
        for (name, value) in &extra {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&body);

        let msg = parse(&bytes, &Limits::default()).unwrap();
        let again = parse(&serialize(&msg), &Limits::default()).unwrap();
        prop_assert_eq!(&again, &msg);
        let f = transaction_fields(&again).unwrap();
        prop_assert_eq!(f.branch, branch.as_str());
        prop_assert_eq!(f.call_id, call_id.as_str());
        prop_assert_eq!(f.cseq, seq);
        prop_assert_eq!(f.cseq_method.to_string(), method);
        prop_assert_eq!(from_tag(&again).unwrap(), Some(ftag.as_str()));
        prop_assert_eq!(to_tag(&again).unwrap(), ttag.as_deref());
        prop_assert_eq!(again.body(), &body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits::default();
        if let Ok(msg) = parse(&bytes, &limits) {
            let _ = transaction_fields(&msg);
            prop_assert!(parse(&serialize(&msg), &limits).is_ok());
        }
        let _ = frame_stream(&bytes, &limits);
    }

    #[test]
    fn mutated_invites_never_panic(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..420) {
        let mut bytes = INVITE.as_bytes().to_vec();
        if pos < bytes.len() {
            bytes[pos] = byte;
        }
        bytes.truncate(cut.max(1));
        let limits = Limits::default();
        if let Ok(msg) = parse(&bytes, &limits) {
            let _ = transaction_fields(&msg);
            prop_assert!(parse(&serialize(&msg), &limits).is_ok());
        }
        let _ = frame_stream(&bytes, &limits);
    }
}
