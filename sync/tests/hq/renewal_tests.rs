//! Certificate renewal and box revocation at HQ, on both stores: the store's
//! staging, promotion, revocation and re-enrollment rules (refusals change nothing),
//! and the same over the real mutual-TLS listener and admin API (renewal with a
//! fresh CSR, the overlap of old and new certificate, the old one refused once the
//! new one was used, a revoked box refused everywhere, on a second instance too
//! with PostgreSQL). The box side and the whole flow with `branchd` are
//! `tests/enroll_e2e.rs`.

use branchline_sync::hq::store::{EnrollmentRecord, RenewalRecord};
use branchline_sync::hq::{self, pki, Error};
use branchline_sync::wire::{DOWN_PATH, PROTOCOL_VERSION, RENEW_PATH};
use serde_json::{json, Value};

use crate::both_stores;
use crate::hq::harness::{Backend, BoxClient, Env, Hq};

fn fp(c: char) -> String {
    c.to_string().repeat(64)
}

fn enrollment(token: &str, box_id: &str, key: char, cert: char) -> EnrollmentRecord {
    EnrollmentRecord {
        token_id: token.to_owned(),
        box_id: box_id.to_owned(),
        site: "s1".to_owned(),
        key_sha256: fp(key),
        cert_fingerprint: fp(cert),
        expires_at_s: 4_000_000_000,
        now_ms: hq::now_ms(),
    }
}

fn renewal(box_id: &str, presented: char, new: char) -> RenewalRecord {
    RenewalRecord {
        box_id: box_id.to_owned(),
        presented_fingerprint: fp(presented),
        new_fingerprint: fp(new),
        now_ms: hq::now_ms(),
    }
}

async fn store_renewal_revocation_and_reenrollment(backend: Backend) {
    let env = Env::start(backend).await;
    let store = &env.hq.store;
    let t1 = "0102030405060708";
    store
        .enroll_box(&enrollment(t1, "BOX-1", 'a', '1'))
        .await
        .unwrap();

    // A renewal with the current certificate stages the new one next to it.
    let rec = store
        .stage_renewal(&renewal("BOX-1", '1', '2'))
        .await
        .unwrap();
    assert_eq!(
        (
            rec.cert_fingerprint.clone(),
            rec.next_cert_fingerprint.clone()
        ),
        (Some(fp('1')), Some(fp('2')))
    );
    assert!(rec.cert_renewed_at_ms.is_some());

    // With a certificate HQ does not accept, or for an unknown box: refused, unchanged.
    let err = store
        .stage_renewal(&renewal("BOX-1", '9', '3'))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CertSuperseded { .. }), "{err}");
    let err = store
        .stage_renewal(&renewal("BOX-9", '1', '3'))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "box", .. }), "{err}");
    let b = store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b.next_cert_fingerprint, Some(fp('2')));

    // Only the staged certificate is promoted.
    assert!(!store.promote_next_cert("BOX-1", &fp('3')).await.unwrap());
    assert!(store.promote_next_cert("BOX-1", &fp('2')).await.unwrap());
    let b = store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(
        (b.cert_fingerprint, b.next_cert_fingerprint),
        (Some(fp('2')), None)
    );
    // A renewal made with the staged certificate promotes it first.
    store
        .stage_renewal(&renewal("BOX-1", '2', '3'))
        .await
        .unwrap();
    let b = store
        .stage_renewal(&renewal("BOX-1", '3', '4'))
        .await
        .unwrap();
    assert_eq!(
        (b.cert_fingerprint, b.next_cert_fingerprint),
        (Some(fp('3')), Some(fp('4')))
    );

    // Revocation: unknown box refused; then revoked once, with the staged renewal dropped.
    let err = store
        .revoke_box("BOX-9", "lost", "admin", hq::now_ms())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "box", .. }), "{err}");
    let b = store
        .revoke_box("BOX-1", "stolen from the branch", "admin", hq::now_ms())
        .await
        .unwrap();
    assert!(b.revoked_at_ms.is_some());
    assert_eq!(b.revoked_reason.as_deref(), Some("stolen from the branch"));
    assert_eq!(b.next_cert_fingerprint, None);
    let err = store
        .revoke_box("BOX-1", "again", "admin", hq::now_ms())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BoxRevoked { .. }), "{err}");
    let b = store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b.revoked_reason.as_deref(), Some("stolen from the branch"));

    // A revoked box cannot renew, nor promote, nor replay its old token.
    let err = store
        .stage_renewal(&renewal("BOX-1", '3', '5'))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BoxRevoked { .. }), "{err}");
    assert!(!store.promote_next_cert("BOX-1", &fp('5')).await.unwrap());
    let err = store
        .enroll_box(&enrollment(t1, "BOX-1", 'a', '6'))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BoxRevoked { .. }), "{err}");
    let b = store.box_record("BOX-1").await.unwrap().unwrap();
    assert!(b.revoked_at_ms.is_some());
    assert_eq!(
        (b.cert_fingerprint, b.next_cert_fingerprint),
        (Some(fp('3')), None)
    );

    // A fresh token re-enrolls it: new certificate, revocation cleared.
    let t2 = "1112131415161718";
    let b = store
        .enroll_box(&enrollment(t2, "BOX-1", 'b', '7'))
        .await
        .unwrap();
    assert_eq!(b.revoked_at_ms, None);
    assert_eq!(b.revoked_reason, None);
    assert_eq!(b.cert_fingerprint, Some(fp('7')));

    // Everything above that changed something is audited, newest first.
    let audit = store.audit(Some("BOX-1"), 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        ["re-enroll", "revoke", "renew", "renew", "renew", "enroll"]
    );
    assert!(
        audit[0].detail.contains("revocation cleared"),
        "{:?}",
        audit[0]
    );
    assert_eq!(audit[1].actor, "admin");
    assert_eq!(audit[1].detail, "stolen from the branch");
    assert!(store.audit(Some("BOX-9"), 10).await.unwrap().is_empty());
    assert_eq!(store.audit(None, 2).await.unwrap().len(), 2);
    env.hq.stop().await;
}
both_stores!(store_renewal_revocation_and_reenrollment);

fn csr(cn: &str, key: &rcgen::KeyPair) -> String {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(key).unwrap().pem().unwrap()
}

async fn renew(b: &BoxClient, hq: &Hq, csr_pem: &str) -> (u16, Value) {
    let resp = b
        .http
        .post(format!(
            "https://127.0.0.1:{}{RENEW_PATH}",
            hq.sync_addr.port()
        ))
        .json(&json!({"protocol": PROTOCOL_VERSION, "csr_pem": csr_pem}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn down_status(b: &BoxClient, hq: &Hq) -> (u16, Value) {
    b.get(hq, &format!("{DOWN_PATH}?since=0&wait_ms=0"))
        .await
        .unwrap()
}

async fn renewal_and_revocation_over_mutual_tls(backend: Backend) {
    let env = Env::start(backend).await;
    let hq = &env.hq;
    let old = env.new_box("BOX-1", "s1").await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();

    // Bad renewals are refused with a reason, and stage nothing.
    let (status, body) = renew(&old, hq, "not a CSR").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_csr")),
        "{body}"
    );
    let (status, body) = renew(&old, hq, &csr("BOX-2", &key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_csr")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("BOX-2"),
        "{body}"
    );
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let (status, body) = renew(&old, hq, &csr("BOX-1", &ed25519)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_csr")),
        "{body}"
    );
    let b = hq.store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b.next_cert_fingerprint, None);

    // A good renewal: a certificate for the new key; the old one still works.
    let (status, body) = renew(&old, hq, &csr("BOX-1", &key)).await;
    assert_eq!(status, 200, "{body}");
    let cert_pem = body["cert_pem"].as_str().unwrap();
    assert!(body["not_after_ms"].as_i64().unwrap() > hq::now_ms());
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let new_fp = pki::fingerprint(&der);
    let b = hq.store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b.next_cert_fingerprint.as_deref(), Some(new_fp.as_str()));
    assert_eq!(down_status(&old, hq).await.0, 200);

    // The first request with the new certificate makes it the only one accepted.
    let new = BoxClient::new("BOX-1", cert_pem, &key.serialize_pem(), &hq.tls_dir);
    assert_eq!(down_status(&new, hq).await.0, 200);
    let b = hq.store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(
        (b.cert_fingerprint.as_deref(), b.next_cert_fingerprint),
        (Some(new_fp.as_str()), None)
    );
    let (status, body) = down_status(&old, hq).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("unknown_box")),
        "{body}"
    );
    let (status, _) = renew(&old, hq, &csr("BOX-1", &key)).await;
    assert_eq!(status, 403);

    // Revocation through the admin API: bad requests first, changing nothing.
    let (status, body) = hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes/BOX-9/revoke",
            Some(json!({"reason": "lost"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes/BOX-1/revoke",
            Some(json!({"reason": "  "})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(down_status(&new, hq).await.0, 200);
    let (status, body) = hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes/BOX-1/revoke",
            Some(json!({"reason": "stolen"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_reason"], "stolen");
    let (status, body) = hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes/BOX-1/revoke",
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("revoked")),
        "{body}"
    );

    // Every request of the revoked box is refused: sync, files, renewal.
    let (status, body) = down_status(&new, hq).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("stolen"),
        "{body}"
    );
    let sha = "0".repeat(64);
    let (status, body) = new.get(hq, &format!("/sync/v1/files/{sha}")).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    let key2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (status, body) = renew(&new, hq, &csr("BOX-1", &key2)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    let b = hq.store.box_record("BOX-1").await.unwrap().unwrap();
    assert_eq!(b.next_cert_fingerprint, None);

    // Another instance on the same database refuses it too (it reads the database).
    if backend == Backend::Postgres {
        let second = env.second_instance().await;
        let (status, body) = down_status(&new, &second).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("revoked")),
            "{body}"
        );
        second.stop().await;
    }

    let (status, audit) = hq
        .admin(reqwest::Method::GET, "/admin/v1/audit?box=BOX-1", None)
        .await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "renew"]);

    // An explicit re-enrollment with a fresh token clears the revocation: the new
    // certificate syncs, every earlier one stays refused.
    let ca = pki::Ca::load(&hq.tls_dir).unwrap();
    let now = std::time::SystemTime::now();
    let issued = ca
        .issue_box(
            "BOX-1",
            now - std::time::Duration::from_secs(60),
            now + std::time::Duration::from_secs(3600),
        )
        .unwrap();
    hq.store
        .enroll_box(&EnrollmentRecord {
            cert_fingerprint: issued.fingerprint.clone(),
            ..enrollment("2122232425262728", "BOX-1", 'c', '0')
        })
        .await
        .unwrap();
    let again = BoxClient::new("BOX-1", &issued.cert_pem, &issued.key_pem, &hq.tls_dir);
    assert_eq!(down_status(&again, hq).await.0, 200);
    for stale in [&new, &old] {
        let (status, body) = down_status(stale, hq).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("unknown_box")),
            "{body}"
        );
    }
    env.hq.stop().await;
}
both_stores!(renewal_and_revocation_over_mutual_tls);
