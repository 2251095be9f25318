//! Mutual TLS: only current certificates from HQ's device CA for registered boxes.

use std::time::{Duration, SystemTime};

use branchline_sync::hq::pki;
use branchline_sync::wire::DOWN_PATH;

use super::harness::{Backend, BoxClient, Env};
use crate::both_stores;

const DAY: Duration = Duration::from_secs(86_400);

/// Sends one upload with `client`; Err when the connection was refused.
async fn try_upload(
    env: &Env,
    client: &BoxClient,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    client
        .post_raw(
            &env.hq,
            branchline_sync::agent::encode_batch(&client.cdr_batch(1..=3)),
        )
        .await
}

async fn forged_and_expired_certificates_are_refused(backend: Backend) {
    let env = Env::start(backend).await;
    let good = env.new_box("b1", "s1").await;
    let (status, _) = try_upload(&env, &good)
        .await
        .expect("the real certificate works");
    assert_eq!(status, 200);

    // Self-signed, CN b1.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "b1");
    let selfsigned = params.self_signed(&key).unwrap();
    let forged = BoxClient::new(
        "b1",
        &selfsigned.pem(),
        &key.serialize_pem(),
        &env.hq.tls_dir,
    );
    assert!(
        try_upload(&env, &forged).await.is_err(),
        "self-signed certificate accepted"
    );

    // Signed by another CA, CN b1.
    let other = pki::Ca::generate(SystemTime::now()).unwrap();
    let now = SystemTime::now();
    let foreign = other.issue_box("b1", now - DAY, now + DAY).unwrap();
    let forged = BoxClient::new("b1", &foreign.cert_pem, &foreign.key_pem, &env.hq.tls_dir);
    assert!(
        try_upload(&env, &forged).await.is_err(),
        "foreign CA accepted"
    );

    // HQ's CA, but expired, and not yet valid.
    let ca = pki::Ca::load(&env.hq.tls_dir).unwrap();
    for (from, to) in [(now - 10 * DAY, now - DAY), (now + DAY, now + 10 * DAY)] {
        let cert = ca.issue_box("b1", from, to).unwrap();
        env.hq
            .store
            .set_box_fingerprint("b1", Some(&cert.fingerprint))
            .await
            .unwrap();
        let client = BoxClient::new("b1", &cert.cert_pem, &cert.key_pem, &env.hq.tls_dir);
        assert!(
            try_upload(&env, &client).await.is_err(),
            "certificate outside its validity accepted"
        );
        assert!(client
            .get(&env.hq, &format!("{DOWN_PATH}?since=0"))
            .await
            .is_err());
    }

    // HQ's CA, valid, but not the certificate pinned for b1 (superseded): 403.
    let pinned = ca.issue_box("b1", now - DAY, now + DAY).unwrap();
    let superseded = ca.issue_box("b1", now - DAY, now + DAY).unwrap();
    env.hq
        .store
        .set_box_fingerprint("b1", Some(&pinned.fingerprint))
        .await
        .unwrap();
    let client = BoxClient::new(
        "b1",
        &superseded.cert_pem,
        &superseded.key_pem,
        &env.hq.tls_dir,
    );
    let (status, body) = try_upload(&env, &client).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("unknown_box")),
        "{body}"
    );

    // HQ's CA, valid, but a box HQ does not know: 403 unknown_box.
    let stranger = ca.issue_box("b9", now - DAY, now + DAY).unwrap();
    let client = BoxClient::new("b9", &stranger.cert_pem, &stranger.key_pem, &env.hq.tls_dir);
    let (status, body) = try_upload(&env, &client).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("unknown_box")),
        "{body}"
    );
    let (status, _) = client
        .get(&env.hq, &format!("{DOWN_PATH}?since=0"))
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Only the first, good upload is stored.
    assert_eq!(env.hq.store.counts("b1").await.unwrap().up_records, 3);
    assert_eq!(env.hq.store.counts("b9").await.unwrap().up_records, 0);
    env.hq.stop().await;
}
both_stores!(forged_and_expired_certificates_are_refused);

async fn admin_api_issues_certificates_that_work(backend: Backend) {
    let env = Env::start(backend).await;
    let (s, _) = env
        .hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes",
            Some(serde_json::json!({"id": "b7", "site": "s1"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = env
        .hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes",
            Some(serde_json::json!({"id": "b8", "site": "nowhere"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, issued) = env
        .hq
        .admin(
            reqwest::Method::POST,
            "/admin/v1/boxes/b7/certificate",
            None,
        )
        .await;
    assert_eq!(s, 200, "{issued}");
    let client = BoxClient::new(
        "b7",
        issued["cert_pem"].as_str().unwrap(),
        issued["key_pem"].as_str().unwrap(),
        &env.hq.tls_dir,
    );
    let (status, ack) = try_upload(&env, &client).await.unwrap();
    assert_eq!((status, ack["acked_seq"].as_i64()), (200, Some(3)), "{ack}");
    env.hq.stop().await;
}
both_stores!(admin_api_issues_certificates_that_work);
