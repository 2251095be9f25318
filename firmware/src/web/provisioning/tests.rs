//! The provisioning page and `/api/v1/provisioning` in-process: the whole web router
//! over a real store in a temp dir (migrations, built-in roles, the break-glass
//! installer made as `branchd` makes it), tokens signed with a key made by the
//! provisioning crate, and the daemon's `applied` channel watched. Every refusal is
//! checked to leave the provisioning tables exactly as they were.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use branchline_provisioning::claim::ClaimCode;
use branchline_provisioning::keys::{self, TrustedKeys};
use branchline_provisioning::qr::Qr;
use branchline_provisioning::revocation::RevocationList;
use branchline_provisioning::site::SiteDescription;
use http_body_util::BodyExt;
use line_proto::Cadence;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::accounts::{self, Accounts, AuthSettings, HashParams, NewUser};
use crate::api::ApiState;
use crate::audit::Actor;
use crate::mask::MaskPattern;
use crate::provision::local::LocalProvisioning;
use crate::provision::Verifier;
use crate::store::{system_clock_ms, Store};
use crate::sync::status::SyncHandle;
use crate::web::status::{PortKind, StaticInfo, StatusHandle, StatusPublisher};

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const PASSWORD: &str = "a-Good-passphrase-42";
const SERIAL: &str = "BL2418-00042";
const DAY: u64 = 86_400;

struct Env {
    dir: tempfile::TempDir,
    db: PathBuf,
    router: Router,
    /// The daemon's main loop end of the `applied` channel.
    applied: mpsc::UnboundedReceiver<String>,
    /// HQ's provisioning key pair (files).
    key: PathBuf,
    public: PathBuf,
    claim: ClaimCode,
    _publisher: StatusPublisher,
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

/// A logged-in API client or browser.
#[derive(Debug, Clone)]
struct Client {
    cookie: String,
    csrf: String,
}

fn now_s() -> u64 {
    u64::try_from(system_clock_ms() / 1000).expect("clock")
}

fn site_text(serial: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../provisioning/examples/site.toml"
    ))
    .expect("example site")
    .replace(
        "serials = [\"BL2418-00042\"]",
        &format!("serials = [\"{serial}\"]"),
    )
}

/// `revoke`: token ids on the box's revocation list.
async fn env_with(revoke: &[String]) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("branchline.db");
    let mut store = Store::open(&db).expect("open");
    let hash = accounts::password::hash_secret(PASSWORD, FAST).expect("hash");
    accounts::bootstrap_installer(&mut store, Some(&hash), dir.path(), FAST, system_clock_ms())
        .expect("installer");
    let (writer, _thread) = store.spawn_writer();
    let settings = AuthSettings {
        hash: FAST,
        ..AuthSettings::default()
    };
    let accounts = Accounts::new(writer.clone(), db.clone(), settings);
    for (name, role) in [
        ("tech", "technician"),
        ("agent1", "agent"),
        ("boss", "admin"),
    ] {
        accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    enabled: true,
                    roles: vec![role.to_owned()],
                    ..NewUser::default()
                },
                system_clock_ms(),
            )
            .await
            .expect("user");
    }
    let files = keys::generate(&dir.path().join("hq-prov")).expect("key");
    let trusted = TrustedKeys::from_files(&[&files.public]).expect("trusted");
    let mut revoked = RevocationList::default();
    for id in revoke {
        let id = id.parse().expect("token id");
        revoked
            .revoke(id, None, "lost phone", now_s())
            .expect("revoke");
    }
    let verifier = Verifier {
        keys: trusted,
        serial: SERIAL.parse().expect("serial"),
        revoked,
    };
    let claim =
        crate::provision::claim::code(dir.path(), &SERIAL.parse().expect("serial")).expect("claim");
    let (applied_tx, applied) = mpsc::unbounded_channel();
    let local = LocalProvisioning::new(
        Some(SERIAL.parse().expect("serial")),
        Ok(verifier),
        Ok(claim),
        Some(dir.path().join("device.crt")),
        applied_tx,
    );
    let (publisher, rx) = StatusPublisher::new(
        vec![(1, PortKind::Fxs, Some(("101".into(), "Reception".into())))],
        false,
        Cadence::continuous(),
        Instant::now(),
        system_clock_ms(),
    );
    let (control, _requests) = mpsc::unbounded_channel();
    let info = StaticInfo {
        version: "test",
        board_model: "sim".into(),
        data_dir: dir.path().to_owned(),
        sip_configured: false,
        sip_accounts: 0,
    };
    let state = ApiState::with_status(
        accounts,
        MaskPattern::default(),
        Arc::new(system_clock_ms),
        SyncHandle::not_configured(),
        Some(StatusHandle::new(rx, control, info).with_provisioning(local)),
    );
    Env {
        dir,
        db,
        router: crate::web::router(state),
        applied,
        key: files.private,
        public: files.public,
        claim,
        _publisher: publisher,
    }
}

async fn env() -> Env {
    env_with(&[]).await
}

fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "XbranchlineBOUNDARY42";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if *name == "photo" {
            body.extend_from_slice(
                b"Content-Disposition: form-data; name=\"photo\"; filename=\"qr.png\"\r\nContent-Type: image/png\r\n\r\n",
            );
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Env {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        client: Option<&Client>,
        csrf: bool,
        body: Option<(String, Vec<u8>)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = client {
            req = req.header(header::COOKIE, &c.cookie);
            if csrf {
                req = req.header("x-csrf-token", &c.csrf);
            }
        }
        let body = match body {
            Some((ct, bytes)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn login(&self, username: &str) -> Client {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/session")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "username": username, "password": PASSWORD }).to_string(),
            ))
            .expect("request");
        let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK, "login {username}");
        let cookie = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|kv| kv.starts_with("bl_session="))
            .expect("session cookie")
            .to_owned();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();
        Client { cookie, csrf }
    }

    async fn get(&self, uri: &str, c: &Client) -> Reply {
        self.send(Method::GET, uri, Some(c), false, None).await
    }

    async fn post_token(&self, c: &Client, token: &str) -> Reply {
        self.send(
            Method::POST,
            "/api/v1/provisioning/token",
            Some(c),
            true,
            Some((
                "application/json".into(),
                json!({ "token": token }).to_string().into_bytes(),
            )),
        )
        .await
    }

    async fn post_photo(&self, c: &Client, photo: &[u8]) -> Reply {
        self.send(
            Method::POST,
            "/api/v1/provisioning/photo",
            Some(c),
            true,
            Some(multipart(&[("photo", photo)])),
        )
        .await
    }

    async fn post_form(&self, uri: &str, c: &Client, form: &str) -> Reply {
        self.send(
            Method::POST,
            uri,
            Some(c),
            false,
            Some((
                "application/x-www-form-urlencoded".into(),
                form.as_bytes().to_vec(),
            )),
        )
        .await
    }

    fn token(&self, serial: &str, issued: u64, valid_for: u64) -> String {
        SiteDescription::parse(&site_text(serial))
            .expect("site")
            .make_token(
                &keys::read_signing_key(&self.key).expect("key"),
                issued,
                valid_for,
            )
            .expect("token")
    }

    fn good_token(&self) -> String {
        self.token(SERIAL, now_s() - 60, 14 * DAY)
    }

    /// Everything applying may write, as text.
    fn snapshot(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.db).expect("conn");
        [
            "SELECT field || '=' || value || '@' || bundle_sha256 FROM provisioned_settings ORDER BY field",
            "SELECT token_id FROM provisioning_used_tokens ORDER BY token_id",
            "SELECT sha256 || '@' || site FROM provisioning_bundles ORDER BY sha256",
        ]
        .iter()
        .map(|sql| {
            let mut stmt = conn.prepare(sql).expect("prepare");
            stmt.query_map([], |r| r.get::<_, String>(0))
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows")
                .join("\n")
        })
        .collect()
    }

    /// `(action, result, target, detail)` of the audit rows about provisioning.
    fn audit(&self) -> Vec<(String, String, String, String)> {
        let conn = rusqlite::Connection::open(&self.db).expect("conn");
        let mut stmt = conn
            .prepare(
                "SELECT action, result, target, detail FROM audit_log WHERE resource = 'provisioning' ORDER BY id",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    }
}

fn percent(token: &str) -> String {
    crate::provision::local::token_link("", token)
        .split_once("t=")
        .expect("t=")
        .1
        .to_owned()
}

#[tokio::test]
async fn the_state_and_the_claim_qr_for_installer_and_admin_only() {
    let mut e = env().await;
    let installer = e.login("installer").await;
    let r = e.get("/api/v1/provisioning", &installer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let st = r.json();
    assert_eq!(st["serial"], SERIAL);
    assert_eq!(st["accepts_tokens"], true);
    assert_eq!(st["provisioned"], Value::Null);
    assert_eq!(st["enrollment"]["status"], "not_provisioned");
    assert_eq!(st["enrollment"]["certificate"], false);
    assert_eq!(st["claim"]["code"], e.claim.text());
    let qr_text = st["claim"]["qr_text"].as_str().expect("qr text");
    assert_eq!(
        branchline_provisioning::claim::parse_qr_text(qr_text).expect("claim QR text"),
        (SERIAL.parse().expect("serial"), e.claim)
    );
    assert!(st["claim"]["svg"].as_str().expect("svg").contains("<svg"));

    // The page: the state, the claim code, the QR inline (no XML declaration, no
    // style attribute the CSP would block), the forms with the CSRF field.
    let page = e.get("/provisioning", &installer).await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        "not provisioned",
        SERIAL,
        &e.claim.text(),
        "<svg",
        "action=\"/provisioning/token\"",
        "action=\"/provisioning/photo\"",
        "enctype=\"multipart/form-data\"",
        "name=\"csrf\"",
        "href=\"/provisioning\"",
    ] {
        assert!(page.text.contains(needle), "{needle} missing");
    }
    assert!(!page.text.contains("<?xml"));
    assert!(!page.text.contains("style="));

    let boss = e.login("boss").await;
    assert_eq!(
        e.get("/api/v1/provisioning", &boss).await.status,
        StatusCode::OK
    );
    for who in ["tech", "agent1"] {
        let c = e.login(who).await;
        assert_eq!(
            e.get("/api/v1/provisioning", &c).await.status,
            StatusCode::FORBIDDEN,
            "{who}"
        );
        let p = e.get("/provisioning", &c).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{who}");
        assert!(p.text.contains("provisioning.view"), "{who}");
    }
    assert!(e.applied.try_recv().is_err());
}

#[tokio::test]
async fn a_token_is_applied_once_through_the_api_and_audited() {
    let mut e = env().await;
    let installer = e.login("installer").await;
    let token = e.good_token();
    let r = e.post_token(&installer, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let applied = r.json();
    assert_eq!(applied["status"], "applied");
    assert_eq!(applied["site"], "lyon-02");
    assert_eq!(
        applied["fields"],
        json!(["site", "hq_url", "ca_pin", "enrollment_token"])
    );
    // The daemon's main loop is told (it restarts with the settings).
    assert_eq!(e.applied.try_recv().expect("applied"), "lyon-02");

    let st = e.get("/api/v1/provisioning", &installer).await.json();
    assert_eq!(st["provisioned"]["site"], "lyon-02");
    assert_eq!(st["provisioned"]["source"], "token");
    assert_eq!(st["provisioned"]["hq_url"], "https://hq.example.com");
    assert_eq!(st["enrollment"]["status"], "pending");
    // The enrollment step finds what it needs (the USB path's fields).
    let conn = rusqlite::Connection::open(&e.db).expect("conn");
    let pending = crate::enroll::pending(&conn, &e.db)
        .expect("pending")
        .expect("enrollment pending");
    assert_eq!(pending.token, token);
    assert_eq!(pending.site, "lyon-02");
    assert_eq!(pending.ca_pin.as_bytes().len(), 16);
    // No secret in the state or the page.
    let page = e.get("/provisioning", &installer).await;
    assert!(page.text.contains("a QR token") && page.text.contains("lyon-02"));
    for text in [&page.text, &st.to_string()] {
        assert!(!text.contains(&token[4..40]), "token text shown");
    }

    // Replayed: 409, nothing changes, nobody is told.
    let before = e.snapshot();
    let r = e.post_token(&installer, &token).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json()["code"], "replayed");
    assert_eq!(e.snapshot(), before);
    assert!(e.applied.try_recv().is_err());

    let audit = e.audit();
    let id = st["provisioned"]["token_id"].as_str().expect("id");
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        (
            audit[0].0.as_str(),
            audit[0].1.as_str(),
            audit[0].2.as_str()
        ),
        ("apply_token", "ok", format!("token:{id}").as_str())
    );
    assert_eq!(audit[1].1, "failed");
    assert!(audit[1].3.contains("replayed"), "{}", audit[1].3);
    for row in &audit {
        assert!(!row.3.contains(&token[4..40]), "token text audited");
    }
}

#[tokio::test]
async fn only_installer_and_admin_may_apply_and_only_with_the_csrf_token() {
    let mut e = env().await;
    let token = e.good_token();
    let before = e.snapshot();
    for who in ["tech", "agent1"] {
        let c = e.login(who).await;
        let r = e.post_token(&c, &token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
        let r = e
            .post_form(
                "/provisioning/apply",
                &c,
                &format!("csrf={}&token={}", c.csrf, percent(&token)),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
    }
    let installer = e.login("installer").await;
    let no_csrf = e
        .send(
            Method::POST,
            "/api/v1/provisioning/token",
            Some(&installer),
            false,
            Some((
                "application/json".into(),
                json!({ "token": token }).to_string().into_bytes(),
            )),
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let r = e
        .post_form(
            "/provisioning/apply",
            &installer,
            &format!("csrf=wrong&token={}", percent(&token)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(e.snapshot(), before);
    assert!(e.applied.try_recv().is_err());

    let boss = e.login("boss").await;
    let r = e.post_token(&boss, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(e.applied.try_recv().expect("applied"), "lyon-02");
}

#[tokio::test]
async fn bad_tokens_and_photos_are_refused_and_change_nothing() {
    let mut e = env().await;
    let installer = e.login("installer").await;
    let good = e.good_token();
    let other = keys::generate(&e.dir.path().join("other")).expect("other key");
    let wrong_key = SiteDescription::parse(&site_text(SERIAL))
        .expect("site")
        .make_token(
            &keys::read_signing_key(&other.private).expect("key"),
            now_s() - 60,
            DAY,
        )
        .expect("token");
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 20;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let expired = e.token(SERIAL, now_s() - 3 * DAY, DAY);
    let other_box = e.token("BL2418-99999", now_s() - 60, DAY);

    let before = e.snapshot();
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "garbage",
            "hello world".into(),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            "truncated",
            good[..30].to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        ("tampered", tampered, StatusCode::BAD_REQUEST, "invalid"),
        ("wrong key", wrong_key, StatusCode::BAD_REQUEST, "invalid"),
        (
            "expired",
            expired,
            StatusCode::UNPROCESSABLE_ENTITY,
            "expired",
        ),
        (
            "other serial",
            other_box,
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_serial",
        ),
        (
            "too long",
            "BL1:".to_owned() + &"A".repeat(5000),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
    ];
    for (what, token, status, code) in &cases {
        let r = e.post_token(&installer, token).await;
        assert_eq!(r.status, *status, "{what}: {}", r.text);
        assert_eq!(r.json()["code"], *code, "{what}: {}", r.text);
        assert!(
            !r.json()["error"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
        // The page's confirm step refuses it the same way, with the reason shown.
        let page = e
            .post_form(
                "/provisioning/token",
                &installer,
                &format!("csrf={}&token={}", installer.csrf, percent(token)),
            )
            .await;
        assert_eq!(page.status, *status, "{what} (page)");
        assert!(page.text.contains("Nothing was applied"), "{what} (page)");
    }
    let bad_json = e
        .send(
            Method::POST,
            "/api/v1/provisioning/token",
            Some(&installer),
            true,
            Some(("application/json".into(), b"{\"tok\": 1}".to_vec())),
        )
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);

    // Photos: not an image, an image without a QR code, a QR code without a token,
    // too large.
    let blank = Qr::encode("https://example.com/")
        .expect("qr")
        .to_png(4)
        .expect("png");
    let photo_cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "not an image",
            b"GIF89a not really".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no QR",
            {
                let img = image::GrayImage::from_pixel(200, 200, image::Luma([255u8]));
                let mut out = std::io::Cursor::new(Vec::new());
                image::DynamicImage::ImageLuma8(img)
                    .write_to(&mut out, image::ImageFormat::Png)
                    .expect("png");
                out.into_inner()
            },
            StatusCode::BAD_REQUEST,
        ),
        ("QR without a token", blank, StatusCode::BAD_REQUEST),
        (
            "too large",
            vec![0u8; 9 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, photo, status) in &photo_cases {
        let r = e.post_photo(&installer, photo).await;
        assert_eq!(r.status, *status, "{what}: {}", r.text);
    }
    let empty = e
        .send(
            Method::POST,
            "/api/v1/provisioning/photo",
            Some(&installer),
            true,
            Some(multipart(&[("other", b"x")])),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.text);

    assert_eq!(e.snapshot(), before);
    assert!(e.applied.try_recv().is_err());
    // Each refusal of the token route is audited as failed.
    let audit = e.audit();
    assert!(audit.len() >= cases.len(), "{audit:?}");
    assert!(audit
        .iter()
        .all(|a| a.0 == "apply_token" && a.1 == "failed"));
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    // The box's revocation list names the token: make the token first with a known
    // key, then the box that trusts that key and revokes the id.
    let e0 = env().await;
    let token = e0.good_token();
    let e0_keys = TrustedKeys::from_files(&[&e0.public]).expect("keys");
    let enrollment = branchline_provisioning::token::decode(&token, &e0_keys)
        .expect("decode")
        .enrollment;
    let id = enrollment.token_id;
    let e = env_with(&[id.to_string()]).await;
    // The second env has its own key: sign the same enrollment with it.
    let revoked = branchline_provisioning::token::encode(
        &enrollment,
        &keys::read_signing_key(&e.key).expect("key"),
    )
    .expect("encode");
    let installer = e.login("installer").await;
    let before = e.snapshot();
    let r = e.post_token(&installer, &revoked).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json()["code"], "revoked");
    assert_eq!(e.snapshot(), before);
}

#[tokio::test]
async fn a_qr_png_from_the_renderer_is_decoded_and_applied_by_the_upload_route() {
    let mut e = env().await;
    let installer = e.login("installer").await;
    let token = e.good_token();
    let png = Qr::encode(&token).expect("qr").to_png(6).expect("png");
    let r = e.post_photo(&installer, &png).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["site"], "lyon-02");
    assert_eq!(e.applied.try_recv().expect("applied"), "lyon-02");
    let audit = e.audit();
    assert!(
        audit.last().expect("row").3.contains("\"photo\""),
        "{audit:?}"
    );
}

#[tokio::test]
async fn the_page_confirms_pasted_linked_and_photographed_tokens_before_applying() {
    let mut e = env().await;
    let installer = e.login("installer").await;
    let token = e.good_token();
    let before = e.snapshot();

    // Pasted.
    let r = e
        .post_form(
            "/provisioning/token",
            &installer,
            &format!("csrf={}&token={}", installer.csrf, percent(&token)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Apply this token?") && r.text.contains("lyon-02"));
    assert!(r.text.contains("action=\"/provisioning/apply\""));
    // The link a phone's camera opens (a GET never applies).
    let link = crate::provision::local::token_link("http://192.0.2.10", &token);
    let path = link.trim_start_matches("http://192.0.2.10");
    let r = e.get(path, &installer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Apply this token?"));
    // Not logged in: to the login page, and back here after.
    let anon = e.send(Method::GET, path, None, false, None).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    // A photo through the page's multipart form (the CSRF token is a field).
    let png = Qr::encode(&token).expect("qr").to_png(6).expect("png");
    let csrf = installer.csrf.clone();
    let r = e
        .send(
            Method::POST,
            "/provisioning/photo",
            Some(&installer),
            false,
            Some(multipart(&[("csrf", csrf.as_bytes()), ("photo", &png)])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Apply this token?"));
    let r = e
        .send(
            Method::POST,
            "/provisioning/photo",
            Some(&installer),
            false,
            Some(multipart(&[("csrf", b"wrong"), ("photo", &png)])),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Not logged in: sent to the login page before the upload is read.
    let anon = e
        .send(
            Method::POST,
            "/provisioning/photo",
            None,
            false,
            Some(multipart(&[("csrf", b"x"), ("photo", &png)])),
        )
        .await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    let tech = e.login("tech").await;
    let r = e
        .send(
            Method::POST,
            "/provisioning/photo",
            Some(&tech),
            false,
            Some(multipart(&[
                ("csrf", tech.csrf.as_bytes()),
                ("photo", &png),
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(e.snapshot(), before, "confirming applied something");
    assert!(e.applied.try_recv().is_err());

    // Apply.
    let r = e
        .post_form(
            "/provisioning/apply",
            &installer,
            &format!("csrf={}&token={}", installer.csrf, percent(&token)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("applied for site"), "{}", r.text);
    assert_eq!(e.applied.try_recv().expect("applied"), "lyon-02");
    // Again: the page says why not, with 409.
    let r = e
        .post_form(
            "/provisioning/apply",
            &installer,
            &format!("csrf={}&token={}", installer.csrf, percent(&token)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text.contains("already"), "{}", r.text);
    let _ = &e.dir;
}
