//! Enrollment at HQ: the store's one-transaction enrollment (single-use token, retry
//! with the same key, wrong site, unknown site: refusals store nothing) on both
//! stores, and the sync listener's handling of a client without a certificate (only
//! the enrollment route). The token and CSR checks are unit tests in
//! `hq::enroll`; the whole flow with a real box is `tests/enroll_e2e.rs`.

use std::time::Duration;

use branchline_sync::hq::store::EnrollmentRecord;
use branchline_sync::hq::{self, pki, Error};
use branchline_sync::wire::{DOWN_PATH, ENROLL_PATH};
use serde_json::Value;

use crate::both_stores;
use crate::hq::harness::{Backend, Env};

fn record(token: &str, box_id: &str, site: &str, key: &str, fp: &str) -> EnrollmentRecord {
    EnrollmentRecord {
        token_id: token.to_owned(),
        box_id: box_id.to_owned(),
        site: site.to_owned(),
        key_sha256: key.repeat(64 / key.len()),
        cert_fingerprint: fp.repeat(64 / fp.len()),
        expires_at_s: 4_000_000_000,
        now_ms: hq::now_ms(),
    }
}

async fn store_enrollment_is_single_use_and_all_or_nothing(backend: Backend) {
    let env = Env::start(backend).await;
    let store = &env.hq.store;
    let t1 = "0102030405060708";

    // A new box enrolls: registered in the token's site, certificate pinned.
    let rec = store
        .enroll_box(&record(t1, "BOX-1", "s1", "a", "1"))
        .await
        .unwrap();
    assert_eq!(rec.site, "s1");
    assert_eq!(rec.cert_fingerprint, Some("1".repeat(64)));
    assert!(store.enrollment_token_used(t1).await.unwrap());

    // The same token and key again (the box lost the answer): a new certificate.
    let rec = store
        .enroll_box(&record(t1, "BOX-1", "s1", "a", "2"))
        .await
        .unwrap();
    assert_eq!(rec.cert_fingerprint, Some("2".repeat(64)));

    // The same token with another key, or for another box: refused, nothing changes.
    for other in [
        record(t1, "BOX-1", "s1", "b", "3"),
        record(t1, "BOX-2", "s1", "a", "3"),
    ] {
        let err = store.enroll_box(&other).await.unwrap_err();
        assert!(matches!(err, Error::TokenUsed { .. }), "{err}");
    }
    let b1 = store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b1.cert_fingerprint, Some("2".repeat(64)));
    assert!(store.box_record("BOX-2").await.unwrap().is_none());

    // A fresh token for a box registered in another site: refused, token unused.
    let t2 = "1112131415161718";
    let err = store
        .enroll_box(&record(t2, "BOX-1", "s2", "c", "4"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongSite { .. }), "{err}");
    assert!(!store.enrollment_token_used(t2).await.unwrap());
    let b1 = store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(
        (b1.site.as_str(), b1.cert_fingerprint),
        ("s1", Some("2".repeat(64)))
    );

    // A site HQ does not know: refused, no box, token unused.
    let t3 = "2122232425262728";
    let err = store
        .enroll_box(&record(t3, "BOX-3", "nowhere", "d", "5"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "site", .. }), "{err}");
    assert!(store.box_record("BOX-3").await.unwrap().is_none());
    assert!(!store.enrollment_token_used(t3).await.unwrap());

    // Re-enrollment of a registered box with a fresh token of its own site.
    let t4 = "3132333435363738";
    let rec = store
        .enroll_box(&record(t4, "BOX-1", "s1", "e", "6"))
        .await
        .unwrap();
    assert_eq!(rec.cert_fingerprint, Some("6".repeat(64)));
    env.hq.stop().await;
}
both_stores!(store_enrollment_is_single_use_and_all_or_nothing);

async fn a_client_without_certificate_gets_only_enrollment(backend: Backend) {
    let env = Env::start(backend).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::load_certs(&env.hq.tls_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(c).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}", env.hq.sync_addr.port());

    // The sync routes do not exist for it.
    let resp = http
        .get(format!("{base}{DOWN_PATH}?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // Enrollment answers; this HQ has no provisioning keys, so it refuses clearly.
    let resp = http
        .post(format!("{base}{ENROLL_PATH}"))
        .json(&serde_json::json!({"protocol": 1, "token": "BL1:X", "csr_pem": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_enabled", "{body}");

    // A body that is not an enrollment request: 4xx with a reason.
    let resp = http
        .post(format!("{base}{ENROLL_PATH}"))
        .header("content-type", "application/json")
        .body("{\"protocol\": 1}")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "malformed", "{body}");
    env.hq.stop().await;
}
both_stores!(a_client_without_certificate_gets_only_enrollment);
