//! Server and client tests: a full exchange, and every way a credential can be wrong.

use super::*;

const KEY: [u8; 32] = [7; 32];
const URI: &str = "sip:branch.example.com";
const T0: u64 = 1_000_000;

fn server() -> DigestServer {
    let mut cfg = DigestServerConfig::new("branch.example.com", KEY);
    cfg.nonce_lifetime_ms = 60_000;
    cfg.max_tracked_nonces = 4;
    DigestServer::new(cfg)
}

fn pw(user: &str) -> Option<String> {
    (user == "201").then(|| "s3cret pass".to_owned())
}

fn login(server: &mut DigestServer, algorithm: Algorithm) -> (DigestClient, String) {
    let challenge = server.challenge(T0, algorithm);
    let mut client = DigestClient::new("201", "s3cret pass", 42);
    let auth = client.authorize(&challenge, "REGISTER", URI).unwrap();
    (client, auth)
}

#[test]
fn md5_and_sha256_exchanges_verify() {
    for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
        let mut s = server();
        let (mut client, auth) = login(&mut s, algorithm);
        assert!(auth.contains(&format!("algorithm={algorithm}")));
        let v = s.verify(T0 + 10, "REGISTER", URI, &auth, pw).unwrap();
        assert_eq!(
            v,
            Verified {
                username: "201".into(),
                algorithm,
                nc: 1
            }
        );
        // The next request in the same nonce uses nc=2.
        let again = client.reauthorize("REGISTER", URI).unwrap();
        assert!(again.contains("nc=00000002"));
        assert_eq!(
            s.verify(T0 + 20, "REGISTER", URI, &again, pw).unwrap().nc,
            2
        );
    }
}

#[test]
fn challenges_come_strongest_first_and_client_picks_sha256() {
    let mut s = server();
    let list = s.challenges(T0, false);
    assert_eq!(list.len(), 2);
    assert!(list[0].contains("algorithm=SHA-256") && list[1].contains("algorithm=MD5"));
    assert!(list
        .iter()
        .all(|c| c.contains("qop=\"auth\"") && !c.contains("stale")));
    assert_ne!(
        parse_challenge(&list[0]).unwrap().nonce,
        parse_challenge(&list[1]).unwrap().nonce
    );
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    let mut client = DigestClient::new("201", "s3cret pass", 1);
    let auth = client.authorize_best(&refs, "REGISTER", URI).unwrap();
    assert!(auth.contains("algorithm=SHA-256"));
    assert!(s.verify(T0, "REGISTER", URI, &auth, pw).is_ok());
    // A phone that only knows MD5 ignores the SHA-256 header and answers the MD5 one.
    let mut old = DigestClient::new("201", "s3cret pass", 2);
    let md5 = old.authorize(&list[1], "REGISTER", URI).unwrap();
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &md5, pw).unwrap().algorithm,
        Algorithm::Md5
    );
    assert!(s.stale_challenge(T0, Algorithm::Md5).contains("stale=true"));
}

#[test]
fn cnonces_follow_the_seed() {
    let mut s = server();
    let c = s.challenge(T0, Algorithm::Sha256);
    let a = DigestClient::new("201", "p", 9)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    let b = DigestClient::new("201", "p", 9)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    let d = DigestClient::new("201", "p", 10)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, d);
}

#[test]
fn wrong_password_is_refused() {
    let mut s = server();
    let c = s.challenge(T0, Algorithm::Sha256);
    let auth = DigestClient::new("201", "guess", 3)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &auth, pw),
        Err(AuthError::WrongResponse {
            username: "201".into()
        })
    );
    // A failed attempt does not burn the nonce for the real client.
    let good = DigestClient::new("201", "s3cret pass", 3)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    assert!(s.verify(T0, "REGISTER", URI, &good, pw).is_ok());
}

#[test]
fn tampered_fields_are_refused() {
    let mut s = server();
    let (_, auth) = login(&mut s, Algorithm::Sha256);
    // Signed for another URI, presented for ours.
    let other_uri = auth.replace(URI, "sip:evil.example.com");
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &other_uri, pw),
        Err(AuthError::UriMismatch {
            uri: "sip:evil.example.com".into()
        })
    );
    // Same URI text in both places but not what was signed: the response fails.
    assert!(matches!(
        s.verify(T0, "REGISTER", "sip:evil.example.com", &other_uri, pw),
        Err(AuthError::WrongResponse { .. })
    ));
    assert!(matches!(
        s.verify(T0, "INVITE", URI, &auth, pw),
        Err(AuthError::WrongResponse { .. })
    ));
    let realm = auth.replace("realm=\"branch.example.com\"", "realm=\"other\"");
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &realm, pw),
        Err(AuthError::WrongRealm {
            realm: "other".into()
        })
    );
    let user = auth.replace("username=\"201\"", "username=\"202\"");
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &user, pw),
        Err(AuthError::UnknownUser {
            username: "202".into()
        })
    );
    let no_qop = auth.replace(", qop=auth", "");
    assert!(matches!(
        s.verify(T0, "REGISTER", URI, &no_qop, pw),
        Err(AuthError::UnsupportedQop { .. })
    ));
    let sha1 = auth.replace("algorithm=SHA-256", "algorithm=SHA-1");
    assert!(matches!(
        s.verify(T0, "REGISTER", URI, &sha1, pw),
        Err(AuthError::UnsupportedAlgorithm { .. })
    ));
    let bad_nc = auth.replace("nc=00000001", "nc=1");
    assert!(matches!(
        s.verify(T0, "REGISTER", URI, &bad_nc, pw),
        Err(AuthError::Malformed { .. })
    ));
    // Untouched, it still verifies.
    assert!(s.verify(T0, "REGISTER", URI, &auth, pw).is_ok());
}

#[test]
fn replayed_nc_is_refused() {
    let mut s = server();
    let (_, auth) = login(&mut s, Algorithm::Md5);
    assert!(s.verify(T0, "REGISTER", URI, &auth, pw).is_ok());
    assert_eq!(
        s.verify(T0 + 1, "REGISTER", URI, &auth, pw),
        Err(AuthError::Replay { nc: 1 })
    );
}

#[test]
fn expired_nonce_is_stale_not_invalid() {
    let mut s = server();
    let (_, auth) = login(&mut s, Algorithm::Sha256);
    assert_eq!(
        s.verify(T0 + 60_001, "REGISTER", URI, &auth, pw),
        Err(AuthError::StaleNonce)
    );
    assert!(s.verify(T0 + 60_000, "REGISTER", URI, &auth, pw).is_ok());
}

#[test]
fn forged_nonces_are_invalid() {
    let mut s = server();
    let (_, auth) = login(&mut s, Algorithm::Sha256);
    let nonce = parse_credentials(&auth).unwrap().nonce;
    // Change the timestamp (make it younger) without the key.
    let mut forged = nonce.clone().into_bytes();
    forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &auth.replace(&nonce, &forged), pw),
        Err(AuthError::InvalidNonce)
    );
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &auth.replace(&nonce, "abc"), pw),
        Err(AuthError::InvalidNonce)
    );
    // A nonce from a server with another key.
    let mut cfg = DigestServerConfig::new("branch.example.com", [8; 32]);
    cfg.nonce_lifetime_ms = 60_000;
    let mut other = DigestServer::new(cfg);
    let c = other.challenge(T0, Algorithm::Sha256);
    let a = DigestClient::new("201", "s3cret pass", 5)
        .authorize(&c, "REGISTER", URI)
        .unwrap();
    assert_eq!(
        s.verify(T0, "REGISTER", URI, &a, pw),
        Err(AuthError::InvalidNonce)
    );
}

#[test]
fn malformed_headers_are_refused() {
    let mut s = server();
    for bad in [
        "",
        "Digest",
        "Basic dXNlcjpwYXNz",
        "Digest username=\"201\"",
        "Digest username=\"201, realm=x",
    ] {
        assert!(s.verify(T0, "REGISTER", URI, bad, pw).is_err(), "{bad:?}");
    }
}

#[test]
fn replay_table_is_bounded_and_evicted_nonces_are_stale() {
    let mut s = server();
    let mut auths = Vec::new();
    for i in 0..6u64 {
        let c = s.challenge(T0 + i, Algorithm::Sha256);
        let mut client = DigestClient::new("201", "s3cret pass", i);
        let a = client.authorize(&c, "REGISTER", URI).unwrap();
        assert!(s.verify(T0 + i, "REGISTER", URI, &a, pw).is_ok());
        auths.push(client.reauthorize("REGISTER", URI).unwrap());
    }
    assert_eq!(s.tracked_nonces(), 4);
    // The two oldest were evicted: even a fresh nc is refused as stale, never replayable.
    assert_eq!(
        s.verify(T0 + 10, "REGISTER", URI, &auths[0], pw),
        Err(AuthError::StaleNonce)
    );
    assert!(s.verify(T0 + 10, "REGISTER", URI, &auths[5], pw).is_ok());
}

#[test]
fn client_refuses_auth_int_only_and_echoes_opaque() {
    let mut c = DigestClient::new("u", "p", 1);
    assert!(matches!(
        c.authorize(
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
            "INVITE",
            "sip:x"
        ),
        Err(AuthError::UnsupportedQop { .. })
    ));
    let v = c
        .authorize(
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int,auth\", opaque=\"op\"",
            "INVITE",
            "sip:x",
        )
        .unwrap();
    assert!(v.contains("qop=auth") && v.contains("opaque=\"op\""));
    // RFC 2069 server (no qop): no cnonce / nc.
    let v = c
        .authorize("Digest realm=\"r\", nonce=\"m\"", "INVITE", "sip:x")
        .unwrap();
    assert!(!v.contains("cnonce") && !v.contains("nc="));
}
