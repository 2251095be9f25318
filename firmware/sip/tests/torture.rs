//! RFC 4475 torture messages and rsip regression fixtures through `message::parse`.
//!
//! Fixtures: `tests/data/rfc4475/{valid,invalid}/*.dat` (written by `generate.py` there)
//! and `tests/data/regressions/*.dat`, one per rsip defect found.

use std::path::PathBuf;

use branchline_sip::message::{self, Limits, ParseError};

fn data(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(dir);
    let mut names: Vec<String> = std::fs::read_dir(path)
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".dat").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn parse(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    message::parse(bytes, &Limits::default())
}

/// Valid messages (RFC 4475 3.1.1, 3.2, 3.3 and 3.4 where the RFC expects the message
/// to be processed): method, Call-ID and CSeq as the RFC shows them.
const VALID: &[(&str, &str, &str, u32)] = &[
    (
        "badbranch",
        "OPTIONS",
        "badbranch.sadonfo23i420jv0as0derf3j3n",
        8,
    ),
    (
        "bcast",
        "INVITE",
        "bcast.0384840201234ksdfak3j2erwedfsASdf",
        35,
    ),
    ("bext01", "OPTIONS", "bext01.0ha0isndaksdj", 8),
    (
        "cparam01",
        "REGISTER",
        "cparam01.70710@saturn.example.com",
        2,
    ),
    (
        "cparam02",
        "REGISTER",
        "cparam02.70710@saturn.example.com",
        3,
    ),
    (
        "dblreq",
        "REGISTER",
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        8,
    ),
    (
        "esc01",
        "INVITE",
        "esc01.239409asdfakjkn23onasd0-3234",
        234234,
    ),
    (
        "escnull",
        "REGISTER",
        "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        14398234,
    ),
    ("invut", "INVITE", "invut.0ha0isndaksdjadsfij34n23d", 235448),
    (
        "lwsdisp",
        "OPTIONS",
        "lwsdisp.1234abcd@funky.example.com",
        60,
    ),
    (
        "mpart01",
        "MESSAGE",
        "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        1,
    ),
    ("noreason", "INVITE", "noreason.asndj203insdf99223ndf", 35),
    ("regaut01", "REGISTER", "regaut01.0ha0isndaksdj", 9338),
    (
        "regescrt",
        "REGISTER",
        "regescrt.k345asrl3fdbv@192.0.2.1",
        14398234,
    ),
    ("sdp01", "INVITE", "sdp01.ndaksdj9342dasdd", 8),
    (
        "transports",
        "OPTIONS",
        "transports.kijh4akdnaqjkwendsasfdj",
        60,
    ),
    ("unksm2", "REGISTER", "unksch.3234233", 234902),
    (
        "unreason",
        "INVITE",
        "unreason.1234ksdfak3j2erwedfsASdf",
        35,
    ),
    ("wsinv", "INVITE", "wsinv.ndaksdj@192.0.2.1", 9),
    (
        "zeromf",
        "OPTIONS",
        "zeromf.jfasdlfnm2o2l43r5u0asdfas",
        39234321,
    ),
];

/// Valid per RFC 4475 but refused here, each for a documented reason:
/// - esc02, intmeth: extension methods; rsip's `Method` is a closed enum of 14 methods,
///   so the message cannot be represented (the RFC expects 501, which is what
///   `status_hint` gives).
/// - intmeth also: rsip cannot represent its Request-URI (see the regression tests),
///   but the method is reported first only if the URI were fine; the URI check runs
///   first, so it is `UriNotRepresentable`.
/// - semiuri: rsip mis-parses a `;` in the user part (regression
///   `rsip_uri_semicolon_user_misparsed`); refused rather than silently changed.
/// - unkscm, novelsc: non-SIP Request-URI schemes; rsip prints any other scheme as
///   `scheme://`, so they cannot round-trip (the RFC expects 416).
/// - longreq, inv2543: the top Via has no branch (RFC 2543 style); the transaction layer
///   matches on RFC 3261 branches only.
fn expected_refusal(name: &str, err: &ParseError) -> bool {
    match name {
        "esc02" => {
            *err == ParseError::UnknownMethod {
                method: "RE%47IST%45R".into(),
            }
        }
        "intmeth" | "semiuri" => matches!(err, ParseError::UriNotRepresentable { .. }),
        "unkscm" => {
            *err == ParseError::UnsupportedUriScheme {
                scheme: "nobodyKnowsThisScheme".into(),
            }
        }
        "novelsc" => {
            *err == ParseError::UnsupportedUriScheme {
                scheme: "soap.beep".into(),
            }
        }
        "longreq" | "inv2543" => *err == ParseError::MissingBranch,
        _ => false,
    }
}

#[test]
fn every_valid_torture_message_parses_with_the_right_key_fields() {
    let all = names("valid");
    assert_eq!(all.len(), 27, "fixture set changed: {all:?}");
    let mut checked = 0;
    for name in &all {
        let bytes = data(&format!("rfc4475/valid/{name}.dat"));
        match VALID.iter().find(|(n, ..)| n == name) {
            Some(&(_, method, call_id, seq)) => {
                let msg = parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                let f = message::transaction_fields(&msg).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(f.method.to_string(), method, "{name}");
                assert_eq!(f.call_id, call_id, "{name}");
                assert_eq!(f.cseq, seq, "{name}");
                // What we write must parse back to the same message.
                let again = parse(&message::serialize(&msg))
                    .unwrap_or_else(|e| panic!("{name} re-parse: {e}"));
                assert_eq!(again, msg, "{name}");
                checked += 1;
            }
            None => {
                let err = parse(&bytes).expect_err(name);
                assert!(expected_refusal(name, &err), "{name}: unexpected {err:?}");
            }
        }
    }
    assert_eq!(checked, VALID.len());
}

#[test]
fn wsinv_details_survive_folding_and_compact_forms() {
    let msg = parse(&data("rfc4475/valid/wsinv.dat")).unwrap();
    assert_eq!(message::top_via_branch(&msg).unwrap(), "390skdjuw");
    assert_eq!(message::to_tag(&msg).unwrap(), Some("1918181833n"));
    assert_eq!(message::from_tag(&msg).unwrap(), Some("98asjd8"));
    assert_eq!(msg.body().len(), 150);
    let text = String::from_utf8(message::serialize(&msg)).unwrap();
    assert!(text.contains("\r\nNewFangledHeader: newfangled value continued newfangled value\r\n"));
    assert!(text.contains("\r\nContact: \"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33\r\n"));
}

#[test]
fn dblreq_keeps_only_the_first_request() {
    let msg = parse(&data("rfc4475/valid/dblreq.dat")).unwrap();
    assert!(msg.body().is_empty());
}

#[test]
fn binary_multipart_body_is_kept_byte_for_byte() {
    let bytes = data("rfc4475/valid/mpart01.dat");
    let msg = parse(&bytes).unwrap();
    assert!(bytes.ends_with(msg.body()));
    assert!(std::str::from_utf8(msg.body()).is_err());
    assert!(message::serialize(&msg).ends_with(msg.body()));
}

/// Does an error match what a fixture expects?
type ErrorCheck = fn(&ParseError) -> bool;

#[test]
fn every_invalid_torture_message_is_refused_with_the_right_error() {
    let expected: &[(&str, ErrorCheck)] = &[
        ("badaspec", |e| {
            matches!(e, ParseError::InvalidHeader { name: "To", .. })
        }),
        ("baddate", |e| {
            matches!(e, ParseError::InvalidHeader { name: "Date", .. })
        }),
        ("baddn", |e| {
            matches!(e, ParseError::InvalidHeader { name: "From", .. })
        }),
        ("badinv01", |e| {
            matches!(e, ParseError::InvalidHeader { name: "Via", .. })
        }),
        ("badvers", |e| {
            *e == ParseError::UnsupportedVersion {
                version: "SIP/7.0".into(),
            }
        }),
        ("bigcode", |e| {
            matches!(e, ParseError::InvalidStatusCode { .. })
        }),
        ("clerr", |e| {
            matches!(
                e,
                ParseError::BodyTooShort {
                    content_length: 9999,
                    ..
                }
            )
        }),
        ("escruri", |e| {
            matches!(e, ParseError::InvalidRequestUri { .. })
        }),
        ("insuf", |e| matches!(e, ParseError::MissingHeader { .. })),
        ("ltgtruri", |e| {
            matches!(e, ParseError::InvalidRequestUri { .. })
        }),
        ("lwsruri", |e| {
            matches!(e, ParseError::InvalidStartLine { .. })
        }),
        ("lwsstart", |e| {
            matches!(e, ParseError::InvalidStartLine { .. })
        }),
        ("mcl01", |e| {
            *e == ParseError::DuplicateHeader {
                name: "Content-Length",
            }
        }),
        ("mismatch01", |e| {
            matches!(e, ParseError::CSeqMethodMismatch { .. })
        }),
        ("mismatch02", |e| {
            matches!(e, ParseError::CSeqMethodMismatch { .. })
        }),
        ("multi01", |e| {
            matches!(e, ParseError::DuplicateHeader { .. })
        }),
        ("ncl", |e| {
            matches!(
                e,
                ParseError::InvalidHeader {
                    name: "Content-Length",
                    ..
                }
            )
        }),
        ("quotbal", |e| {
            matches!(e, ParseError::InvalidHeader { name: "To", .. })
        }),
        ("regbadct", |e| {
            matches!(
                e,
                ParseError::InvalidHeader {
                    name: "Contact",
                    ..
                }
            )
        }),
        ("scalar02", |e| {
            matches!(e, ParseError::InvalidHeader { name: "CSeq", .. })
        }),
        ("scalarlg", |e| {
            matches!(e, ParseError::InvalidHeader { name: "CSeq", .. })
        }),
        ("trws", |e| matches!(e, ParseError::InvalidStartLine { .. })),
    ];
    let all = names("invalid");
    assert_eq!(all.len(), expected.len(), "fixture set changed: {all:?}");
    for name in &all {
        let bytes = data(&format!("rfc4475/invalid/{name}.dat"));
        let err = parse(&bytes).expect_err(name);
        let (_, check) = expected
            .iter()
            .find(|(n, _)| n == name)
            .expect("expectation");
        assert!(check(&err), "{name}: unexpected {err:?}");
        // Stream framing must not panic on them either.
        let _ = message::frame_stream(&bytes, &Limits::default());
    }
}

// ---- rsip regressions: each shows rsip's own behaviour and ours on the same bytes ----

fn rsip_parse(bytes: &[u8]) -> Result<rsip::SipMessage, rsip::Error> {
    rsip::SipMessage::try_from(bytes)
}

#[test]
fn rsip_uri_semicolon_user_misparsed() {
    let bytes = data("regressions/rsip_uri_semicolon_user_misparsed.dat");
    // rsip reads `user;par=u%40example.net` as the host and drops `@example.com`.
    let uri = rsip::Uri::try_from("sip:user;par=u%40example.net@example.com").unwrap();
    assert_ne!(uri.to_string(), "sip:user;par=u%40example.net@example.com");
    assert!(matches!(
        parse(&bytes),
        Err(ParseError::UriNotRepresentable { .. })
    ));
}

#[test]
fn rsip_uri_headers_read_as_host() {
    let bytes = data("regressions/rsip_uri_headers_read_as_host.dat");
    // rsip takes `?subject=x` into the host name, and ignores anything after a space.
    let uri = rsip::Uri::try_from("sip:user@example.com?subject=x").unwrap();
    assert_eq!(uri.host().to_string(), "example.com?subject=x");
    let uri = rsip::Uri::try_from("sip:user@example.com junk").unwrap();
    assert_eq!(uri.to_string(), "sip:user@example.com");
    assert!(matches!(
        parse(&bytes),
        Err(ParseError::InvalidRequestUri { .. })
    ));
}

#[test]
fn rsip_lowercase_method_accepted() {
    let bytes = data("regressions/rsip_lowercase_method_accepted.dat");
    let rsip::SipMessage::Request(r) = rsip_parse(&bytes).expect("rsip accepts it") else {
        panic!("request")
    };
    assert_eq!(r.method, rsip::Method::Invite);
    assert_eq!(
        parse(&bytes),
        Err(ParseError::UnknownMethod {
            method: "invite".into()
        })
    );
}

#[test]
fn rsip_sip_1_0_accepted() {
    let bytes = data("regressions/rsip_sip_1_0_accepted.dat");
    assert_eq!(
        rsip_parse(&bytes).expect("rsip accepts it").version(),
        &rsip::Version::V1
    );
    assert_eq!(
        parse(&bytes),
        Err(ParseError::UnsupportedVersion {
            version: "SIP/1.0".into()
        })
    );
}

#[test]
fn rsip_compact_call_id_unknown() {
    use rsip::prelude::HeadersExt;
    let bytes = data("regressions/rsip_compact_call_id_unknown.dat");
    assert!(rsip_parse(&bytes)
        .expect("rsip accepts it")
        .call_id_header()
        .is_err());
    let ours = parse(&bytes).unwrap();
    assert_eq!(message::call_id(&ours).unwrap(), "reg1@192.0.2.1");
}

#[test]
fn rsip_folded_header_rejected() {
    let bytes = data("regressions/rsip_folded_header_rejected.dat");
    assert!(rsip_parse(&bytes).is_err());
    assert_eq!(
        message::cseq(&parse(&bytes).unwrap()).unwrap(),
        (1, rsip::Method::Options)
    );
}

#[test]
fn rsip_binary_body_lossy() {
    let bytes = data("regressions/rsip_binary_body_lossy.dat");
    let ours = parse(&bytes).unwrap();
    let body = [0xff, 0xfe, 0x00, 0x80, 0x0d, 0x0a];
    assert_eq!(ours.body(), &body);
    // rsip's Display replaces non-UTF-8 bytes; our serializer keeps them.
    assert!(!ours.to_string().into_bytes().ends_with(&body));
    assert!(message::serialize(&ours).ends_with(&body));
}
