//! Round trips and every refusal, on the example site description.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use crate::bundle;
use crate::check::{check, CheckContext, MemoryUsedTokens, UsedTokens};
use crate::envelope::{self, Kind};
use crate::error::{Artifact, Error};
use crate::keys::TrustedKeys;
use crate::payload::{BoxSerial, BundlePayload, CaPin, Enrollment, TokenId, PAYLOAD_FORMAT};
use crate::qr::{self, Qr};
use crate::revocation::RevocationList;
use crate::site::SiteDescription;
use crate::token;

const EXAMPLE: &str = include_str!("../examples/site.toml");
const NOW: u64 = 1_795_000_000;
const DAY: u64 = 86_400;

fn hq_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[0x24; 32])
}

fn trusted() -> TrustedKeys {
    TrustedKeys::new([hq_key().verifying_key()]).unwrap()
}

fn site() -> SiteDescription {
    SiteDescription::parse(EXAMPLE).unwrap()
}

fn serial() -> BoxSerial {
    "BL2418-00042".parse().unwrap()
}

fn enrollment() -> Enrollment {
    site()
        .enrollment(TokenId([1, 2, 3, 4, 5, 6, 7, 8]), NOW, 14 * DAY)
        .unwrap()
}

fn token_text() -> String {
    token::encode(&enrollment(), &hq_key()).unwrap()
}

fn bundle_bytes() -> Vec<u8> {
    let payload = BundlePayload {
        format: PAYLOAD_FORMAT,
        issued_at: NOW,
        token: token_text(),
        config: site().config(),
    };
    bundle::make(&payload, &hq_key()).unwrap()
}

fn accept(
    e: &Enrollment,
    serial: &BoxSerial,
    now: u64,
    used: &dyn UsedTokens,
) -> crate::Result<()> {
    let revoked = RevocationList::default();
    check(
        e,
        &CheckContext {
            serial,
            now,
            revoked: &revoked,
        },
        used,
    )
}

#[test]
fn token_round_trip_shortens_the_pin() {
    let text = token_text();
    assert!(text.starts_with(token::PREFIX));
    let decoded = token::decode(&text, &trusted()).unwrap();
    let mut want = enrollment();
    want.ca_pin = want.ca_pin.short();
    assert_eq!(decoded.enrollment, want);
    assert_eq!(decoded.text, text);
    accept(
        &decoded.enrollment,
        &serial(),
        NOW,
        &MemoryUsedTokens::default(),
    )
    .unwrap();
}

#[test]
fn bundle_round_trip() {
    let bytes = bundle_bytes();
    let opened = bundle::open(&bytes, &trusted()).unwrap();
    assert_eq!(opened.payload.config, site().config());
    assert_eq!(opened.payload.issued_at, NOW);
    assert_eq!(opened.token.enrollment.token_id, enrollment().token_id);
    assert_eq!(
        opened.key_id,
        crate::keys::KeyId::of(&hq_key().verifying_key())
    );
}

#[test]
fn example_token_fits_the_qr_target() {
    let qr = Qr::encode(&token_text()).unwrap();
    assert!(
        qr.version() <= qr::TARGET_VERSION,
        "version {} at ECC Q",
        qr.version()
    );
}

#[test]
fn every_tampered_bundle_byte_is_refused() {
    let good = bundle_bytes();
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            let err = bundle::open(&bad, &trusted()).expect_err(&format!("byte {i} ^ {flip:#x}"));
            let expected = match i {
                0..=5 => matches!(err, Error::BadMagic { .. }),
                6 => matches!(err, Error::UnsupportedVersion { .. }),
                7 => matches!(err, Error::Reserved { .. }),
                8..=11 => matches!(err, Error::UnknownKey { .. }),
                12..=15 => matches!(
                    err,
                    Error::Truncated { .. } | Error::TrailingBytes { .. } | Error::TooLarge { .. }
                ),
                _ => matches!(
                    err,
                    Error::BadSignature {
                        what: Artifact::Bundle,
                        ..
                    }
                ),
            };
            assert!(expected, "byte {i}: {err}");
        }
    }
}

#[test]
fn every_tampered_token_byte_is_refused() {
    let good = token::to_binary(&token_text()).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let err = token::decode(&token::to_text(&bad), &trusted()).expect_err(&format!("byte {i}"));
        let expected = match i {
            0 => matches!(err, Error::UnsupportedVersion { .. }),
            1..=4 => matches!(err, Error::UnknownKey { .. }),
            _ => matches!(
                err,
                Error::BadSignature {
                    what: Artifact::Token,
                    ..
                }
            ),
        };
        assert!(expected, "byte {i}: {err}");
    }
}

#[test]
fn tampered_token_text_is_refused() {
    let good = token_text();
    let alphabet = crate::base45::ALPHABET;
    for i in 0..good.len() {
        let mut bad = good.clone().into_bytes();
        let c = bad[i];
        bad[i] = if i < token::PREFIX.len() {
            b'X'
        } else {
            alphabet[(alphabet.iter().position(|&a| a == c).unwrap() + 1) % 45]
        };
        let bad = String::from_utf8(bad).unwrap();
        assert!(
            token::decode(&bad, &trusted()).is_err(),
            "character {i} changed and still accepted"
        );
    }
}

#[test]
fn wrong_key_is_refused() {
    let others = TrustedKeys::new([other_key().verifying_key()]).unwrap();
    assert!(matches!(
        bundle::open(&bundle_bytes(), &others),
        Err(Error::UnknownKey { .. })
    ));
    assert!(matches!(
        token::decode(&token_text(), &others),
        Err(Error::UnknownKey { .. })
    ));
    // Signed by another key that claims the trusted key's id: the signature fails.
    let mut forged = envelope::seal(Kind::Bundle, b"{}", &other_key()).unwrap();
    forged[8..12].copy_from_slice(&crate::keys::KeyId::of(&hq_key().verifying_key()).0);
    assert!(matches!(
        bundle::open(&forged, &trusted()),
        Err(Error::BadSignature { .. })
    ));
    let mut forged =
        token::to_binary(&token::encode(&enrollment(), &other_key()).unwrap()).unwrap();
    forged[1..5].copy_from_slice(&crate::keys::KeyId::of(&hq_key().verifying_key()).0);
    assert!(matches!(
        token::decode(&token::to_text(&forged), &trusted()),
        Err(Error::BadSignature { .. })
    ));
    // No trusted key at all.
    assert!(matches!(
        token::decode(&token_text(), &TrustedKeys::default()),
        Err(Error::UnknownKey { .. })
    ));
}

#[test]
fn expired_wrong_serial_replayed_revoked() {
    let e = token::decode(&token_text(), &trusted()).unwrap().enrollment;
    let used = MemoryUsedTokens::default();
    accept(&e, &serial(), e.expires_at - 1, &used).unwrap();
    assert!(matches!(
        accept(&e, &serial(), e.expires_at, &used),
        Err(Error::Expired { .. })
    ));
    let other: BoxSerial = "BL2418-00043".parse().unwrap();
    let err = accept(&e, &other, NOW, &used).unwrap_err();
    assert!(matches!(err, Error::WrongSerial { .. }), "{err}");
    assert!(err.to_string().contains("BL2418-00043"), "{err}");

    let mut used = MemoryUsedTokens::default();
    used.mark_used(&e.token_id, NOW).unwrap();
    assert!(matches!(
        accept(&e, &serial(), NOW, &used),
        Err(Error::Replayed(id)) if id == e.token_id
    ));

    let mut revoked = RevocationList::default();
    assert!(revoked
        .revoke(e.token_id, Some(e.expires_at), "stick lost", NOW)
        .unwrap());
    let err = check(
        &e,
        &CheckContext {
            serial: &serial(),
            now: NOW,
            revoked: &revoked,
        },
        &MemoryUsedTokens::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Revoked { .. }), "{err}");
    assert!(err.to_string().contains("stick lost"), "{err}");
}

#[derive(Debug)]
struct FailingStore;

impl UsedTokens for FailingStore {
    fn is_used(&self, _: &TokenId) -> Result<bool, crate::check::StoreError> {
        Err("database is locked".into())
    }
    fn mark_used(&mut self, _: &TokenId, _: u64) -> Result<(), crate::check::StoreError> {
        Err("database is locked".into())
    }
}

#[test]
fn store_failure_is_not_acceptance() {
    let e = enrollment();
    assert!(matches!(
        accept(&e, &serial(), NOW, &FailingStore),
        Err(Error::UsedTokens(_))
    ));
}

#[test]
fn truncated_inputs_are_refused() {
    let good = bundle_bytes();
    for len in 0..good.len() {
        let err = bundle::open(&good[..len], &trusted()).expect_err(&format!("len {len}"));
        assert!(
            matches!(err, Error::Truncated { .. } | Error::BadMagic { .. }),
            "len {len}: {err}"
        );
        if len >= 6 {
            assert!(matches!(err, Error::Truncated { .. }), "len {len}: {err}");
        }
    }
    let good = token::to_binary(&token_text()).unwrap();
    for len in 0..good.len() {
        let err = token::decode(&token::to_text(&good[..len]), &trusted())
            .expect_err(&format!("len {len}"));
        assert!(
            matches!(err, Error::Truncated { .. } | Error::BadSignature { .. }),
            "len {len}: {err}"
        );
    }
    // Text cut inside a base45 group.
    let text = token_text();
    let mut cut = text.len() - 1;
    while (cut - token::PREFIX.len()) % 3 != 1 {
        cut -= 1;
    }
    assert!(matches!(
        token::decode(&text[..cut], &trusted()),
        Err(Error::TokenText(_))
    ));
    assert!(matches!(
        token::decode("", &trusted()),
        Err(Error::TokenText(_))
    ));
}

#[test]
fn oversized_and_trailing_inputs_are_refused() {
    let mut big = bundle_bytes();
    big.push(0);
    assert!(matches!(
        bundle::open(&big, &trusted()),
        Err(Error::TrailingBytes { extra: 1, .. })
    ));
    big.resize(envelope::MAX_LEN + 1, 0);
    assert!(matches!(
        bundle::open(&big, &trusted()),
        Err(Error::TooLarge { .. })
    ));
    let mut header = bundle_bytes();
    header[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        bundle::open(&header, &trusted()),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        envelope::seal(
            Kind::Bundle,
            &vec![b' '; envelope::MAX_PAYLOAD + 1],
            &hq_key()
        ),
        Err(Error::TooLarge { .. })
    ));
    let long = format!("{}{}", token::PREFIX, "0".repeat(2000));
    assert!(matches!(
        token::decode(&long, &trusted()),
        Err(Error::TooLarge { .. })
    ));
    let mut e = enrollment();
    e.serials = (0..60)
        .map(|i| format!("BL2418-{i:05}").parse().unwrap())
        .collect();
    assert!(matches!(
        token::encode(&e, &hq_key()),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn signed_garbage_is_a_payload_error() {
    for payload in [&b"not json"[..], b"{}", b"{\"format\":1}"] {
        let sealed = envelope::seal(Kind::Bundle, payload, &hq_key()).unwrap();
        assert!(matches!(
            bundle::open(&sealed, &trusted()),
            Err(Error::Payload { .. })
        ));
    }
    let mut bin = vec![token::VERSION];
    bin.extend_from_slice(&crate::keys::KeyId::of(&hq_key().verifying_key()).0);
    bin.extend_from_slice(&[0xff; 10]);
    use ed25519_dalek::Signer;
    let sig = hq_key().sign(&bin);
    bin.extend_from_slice(&sig.to_bytes());
    assert!(matches!(
        token::decode(&token::to_text(&bin), &trusted()),
        Err(Error::Payload { .. })
    ));
}

#[test]
fn bundle_with_a_token_from_another_key_is_not_made() {
    let payload = BundlePayload {
        format: PAYLOAD_FORMAT,
        issued_at: NOW,
        token: token::encode(&enrollment(), &other_key()).unwrap(),
        config: site().config(),
    };
    assert!(matches!(
        bundle::make(&payload, &hq_key()),
        Err(Error::UnknownKey { .. })
    ));
}

#[test]
fn bad_site_descriptions_name_the_field() {
    let cases = [
        ("site = \"lyon-02\"", "site = \"lyon 02\"", "site"),
        ("country = \"FR\"", "country = \"France\"", "country"),
        (
            "hq_url = \"https://hq.example.com\"",
            "hq_url = \"http://hq.example.com\"",
            "hq_url",
        ),
        (
            "gateway = \"192.0.2.1\"",
            "gateway = \"198.51.100.1\"",
            "network.gateway",
        ),
        (
            "extension = \"202\"",
            "extension = \"201\"",
            "fxs[1].extension",
        ),
        ("ca_pin = \"5f1c", "ca_pin = \"5f", "ca_pin"),
        ("valid_for = \"14d\"", "valid_for = \"2y\"", "valid_for"),
        ("serials = [\"BL2418-00042\"]", "serials = []", "serials"),
        (
            "username = \"lyon02\"",
            "username = \"lyon02\"\nrealm = \"x\"",
            "realm",
        ),
    ];
    for (from, to, field) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let text = EXAMPLE.replacen(from, to, 1);
        let err = SiteDescription::parse(&text)
            .and_then(|s| s.enrollment(TokenId([0; 8]), NOW, DAY))
            .expect_err(to);
        assert!(err.to_string().contains(field), "{to}: {err}");
    }
    let plain = EXAMPLE.replacen(
        "password_hash = \"$argon2id$",
        "password_hash = \"hunter2\"\n# $argon2id$",
        1,
    );
    let err = SiteDescription::parse(&plain).unwrap_err();
    assert!(err.to_string().contains("installer.password_hash"), "{err}");
}

#[test]
fn revocation_list_round_trip_and_tamper() {
    let mut list = RevocationList::default();
    let id = TokenId([9; 8]);
    assert!(list.revoke(id, Some(NOW + DAY), "lost", NOW).unwrap());
    assert!(!list.revoke(id, None, "again", NOW + 1).unwrap());
    let sealed = list.seal(&hq_key()).unwrap();
    let (_, back) = RevocationList::open(&sealed, &trusted()).unwrap();
    assert_eq!(back, list);
    let mut bad = sealed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        RevocationList::open(&bad, &trusted()),
        Err(Error::BadSignature { .. })
    ));
    // A bundle is not a revocation list and vice versa.
    assert!(matches!(
        RevocationList::open(&bundle_bytes(), &trusted()),
        Err(Error::BadMagic { .. })
    ));
    assert!(matches!(
        bundle::open(&sealed, &trusted()),
        Err(Error::BadMagic { .. })
    ));
    // Expired entries are pruned on the next change.
    assert!(list
        .revoke(TokenId([8; 8]), None, "", NOW + 2 * DAY)
        .unwrap());
    assert!(list.find(&id).is_none());
    assert!(list.find(&TokenId([8; 8])).is_some());
    assert!(list
        .revoke(TokenId([7; 8]), None, "bad\nreason", NOW)
        .is_err());
}

#[test]
fn qr_png_decodes_back_to_the_token() {
    let text = token_text();
    let png = Qr::encode(&text).unwrap().to_png(4).unwrap();
    assert_eq!(qr::decode_image(&png).unwrap(), vec![text]);
    assert!(matches!(
        qr::decode_image(b"\x89PNG\r\n\x1a\nnot really"),
        Err(Error::Image(_))
    ));
    let blank = {
        let img = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    assert!(matches!(
        qr::decode_image(&blank),
        Err(Error::QrNotFound { .. })
    ));
}

fn arb_enrollment() -> impl Strategy<Value = Enrollment> {
    (
        any::<[u8; 8]>(),
        "[a-z0-9][a-z0-9._-]{0,31}",
        proptest::collection::btree_set("[A-Za-z0-9_-]{1,32}", 1..4),
        "[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,10}){0,3}(:[1-9][0-9]{0,3})?(/[a-z0-9._~-]{0,10})?",
        any::<[u8; 32]>(),
        1u64..u64::MAX,
    )
        .prop_map(|(id, site, serials, host, pin, expires_at)| Enrollment {
            token_id: TokenId(id),
            site: site.parse().unwrap(),
            serials: serials.into_iter().map(|s| s.parse().unwrap()).collect(),
            hq_url: format!("https://{host}").parse().unwrap(),
            ca_pin: CaPin::new(&pin).unwrap(),
            expires_at,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn token_round_trips(e in arb_enrollment()) {
        let text = token::encode(&e, &hq_key()).unwrap();
        let back = token::decode(&text, &trusted()).unwrap().enrollment;
        let mut want = e.clone();
        want.ca_pin = e.ca_pin.short();
        prop_assert_eq!(back, want);
    }

    #[test]
    fn random_bytes_never_verify(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(bundle::open(&data, &trusted()).is_err());
        prop_assert!(token::decode(&token::to_text(&data), &trusted()).is_err());
    }
}

/// A camera-like picture of the code: small modules on a larger grey page, blurred,
/// with uneven lighting, saved as a lossy JPEG - what an installer's phone uploads.
#[test]
fn qr_photo_like_jpeg_decodes_back() {
    // Blur sigma in pixels (modules are 5 px) and the light fall-off across the page
    // in percent.
    const BLUR: f32 = 0.8;
    const LIGHT: u32 = 25;
    let text = token_text();
    let png = Qr::encode(&text).unwrap().to_png(5).unwrap();
    let code = image::load_from_memory(&png).unwrap().to_luma8();
    let (w, h) = (code.width() + 300, code.height() + 200);
    let mut page = image::GrayImage::from_fn(w, h, |x, y| {
        // Light falls off from left to right (paper under a lamp).
        image::Luma([(235 - (x * 40 / w)) as u8 + (y % 3) as u8])
    });
    image::imageops::overlay(&mut page, &code, 170, 90);
    let lit = image::GrayImage::from_fn(w, h, |x, y| {
        let v = page.get_pixel(x, y).0[0] as u32;
        image::Luma([(v * (100 - x * LIGHT / w) / 100 + 10).min(255) as u8])
    });
    let blurred = image::imageops::blur(&lit, BLUR);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 60)
        .encode_image(&blurred)
        .unwrap();
    assert_eq!(qr::decode_image(&jpeg.into_inner()).unwrap(), vec![text]);
}
