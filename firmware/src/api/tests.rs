//! The API in-process: the router over a real store in a temp dir (real migrations,
//! built-in roles), users made through [`Accounts`], requests sent with `oneshot`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::accounts::{AuthSettings, HashParams, NewUser, PageRequest, User};
use crate::cdr::{Cdr, Direction, Disposition, HangupSide};
use crate::store::{ExtensionRow, Store};

mod agents;
mod blacklist;
mod campaigns;
mod customers;
mod queues;
mod recordings;
mod route_matrix;
mod voicemail;

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const T0: i64 = 1_700_000_000_000;
const PASSWORD: &str = "a-Good-passphrase-42";
const CUSTOMER_IN: &str = "13812345678";
const CUSTOMER_OUT: &str = "13999887766";

struct Env {
    _dir: tempfile::TempDir,
    accounts: Accounts,
    state: ApiState,
    clock: Arc<AtomicI64>,
}

/// A logged-in client: the cookie and the CSRF token.
#[derive(Debug, Clone)]
struct Client {
    cookie: String,
    csrf: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    let store = Store::open(&path).expect("open");
    let (writer, _thread) = store.spawn_writer();
    let ext = |n: &str, port| ExtensionRow {
        number: n.to_owned(),
        name: format!("ext {n}"),
        port: Some(port),
        call_waiting: true,
    };
    writer
        .replace_board(
            vec![(1, "fxs"), (2, "fxs"), (3, "fxs"), (4, "fxs")],
            vec![ext("101", 1), ext("102", 2), ext("103", 3), ext("104", 4)],
        )
        .await
        .expect("board");
    let settings = AuthSettings {
        hash: FAST,
        ..AuthSettings::default()
    };
    let accounts = Accounts::new(writer, path, settings);
    let clock = Arc::new(AtomicI64::new(T0 + 3_600_000));
    let c = Arc::clone(&clock);
    let state = ApiState::with_status(
        accounts.clone(),
        MaskPattern::default(),
        Arc::new(move || c.load(Ordering::SeqCst)),
        SyncHandle::not_configured(),
        Some(live_status()),
    );
    Env {
        _dir: dir,
        accounts,
        state,
        clock,
    }
}

/// The live status of a four-port board with nothing happening (`/api/v1/status`,
/// `/api/v1/calls/active`: no call up, no media engine; `web::tests` drives them).
fn live_status() -> crate::web::status::StatusHandle {
    use crate::web::status::{
        ActiveCalls, ControlRequest, PortKind, RingTestError, StaticInfo, StatusHandle,
        StatusPublisher,
    };
    let (_publisher, rx) = StatusPublisher::new(
        (1..=4).map(|p| (p, PortKind::Fxs, None)).collect(),
        false,
        line_proto::Cadence::continuous(),
        std::time::Instant::now(),
        T0,
    );
    let (control, mut requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request {
                ControlRequest::Calls { reply } => {
                    let _ = reply.send(ActiveCalls {
                        calls: Vec::new(),
                        legs: Err("no media engine in this test".to_owned()),
                    });
                }
                // A port this four-port board does not have, as the board's loop
                // answers it; the ports it has are web::tests'.
                ControlRequest::RingTest { port, reply } if port > 4 => {
                    let _ = reply.send(Err(RingTestError::NoSuchPort { port }));
                }
                ControlRequest::RingTest { reply, .. } => {
                    let _ = reply.send(Err(RingTestError::Stopping));
                }
                // Charts are web::tests'; an empty history here.
                ControlRequest::LineHistory { reply } => {
                    let _ = reply.send(crate::web::history::LineHistory::new(
                        crate::web::history::DEFAULT_LINE_SAMPLE,
                    ));
                }
                ControlRequest::LineTest { port, reply } if port > 4 => {
                    let _ = reply.send(Err(crate::web::status::LineTestError::NoSuchPort { port }));
                }
                ControlRequest::LineTest { reply, .. } => {
                    let _ = reply.send(Err(crate::web::status::LineTestError::Stopping));
                }
                ControlRequest::LoopbackTest { port, reply } if port > 4 => {
                    let _ = reply.send(Err(crate::web::status::LoopbackError::NoSuchPort { port }));
                }
                ControlRequest::LoopbackTest { reply, .. } => {
                    let _ = reply.send(Err(crate::web::status::LoopbackError::Stopping));
                }
                // One call is up: a reboot is refused unless forced (web::tests runs
                // them with call control); nothing stops here either way.
                ControlRequest::Reboot { force, reply } => {
                    let _ = reply.send(crate::web::status::reboot_decision(1, force));
                }
                ControlRequest::CallCenter { reply } => {
                    let _ = reply.send(Some(call_center_status()));
                }
                // An outside click-to-dial (a customer's or a lead's number) starts, on
                // the phone the request resolves to; the rest are refused.
                ControlRequest::ClickToCall { request, reply } if request.outside => {
                    let started = request.resolve(None).map(|from| {
                        let mut clicks = CLICKS.lock().expect("lock");
                        clicks.push(request.to.clone());
                        crate::screen_pop::ClickStarted {
                            call_id: format!("click-{}-{}", request.to, clicks.len()),
                            from,
                        }
                    });
                    let _ = reply.send(started);
                }
                ControlRequest::ClickToCall { reply, .. } => {
                    let _ = reply.send(Err(crate::screen_pop::ClickError::Stopping));
                }
                ControlRequest::VoicemailDeleted { id } => {
                    VOICEMAIL_DELETED.lock().expect("lock").push(id);
                }
                // No desktop streams in these tests (`web::tests` reads them).
                ControlRequest::Publish { .. } => {}
                ControlRequest::AgentDesk {
                    agent,
                    action,
                    reply,
                } => {
                    let _ = reply.send(agents::desk_answer(agent, action));
                }
            }
        }
    });
    let info = StaticInfo {
        version: "test",
        board_model: "sim".to_owned(),
        data_dir: std::env::temp_dir(),
        sip_configured: false,
        sip_accounts: 0,
    };
    StatusHandle::new(rx, control, info)
        .with_sip(agents::sip_status())
        .with_charts(crate::web::history::Charts::new(
            crate::web::history::ChartHistories::new(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(5),
                T0,
            ),
        ))
}

/// The call center the test main loop reports: queue `sales` (7001) with an outside
/// caller waiting while agent 100 rings, agent 200 paused for lunch.
pub(super) fn call_center_status() -> crate::web::status::CallCenterStatus {
    use crate::web::status::{AgentLive, CallCenterStatus, MemberLive, QueueLive, WaitingLive};
    CallCenterStatus {
        at_ms: T0,
        queues: vec![QueueLive {
            name: "sales".to_owned(),
            number: "7001".to_owned(),
            strategy: "round_robin",
            agents_available: 0,
            agents_logged_in: 2,
            members: vec![
                MemberLive {
                    agent_id: "100".to_owned(),
                    answered: 3,
                },
                MemberLive {
                    agent_id: "200".to_owned(),
                    answered: 0,
                },
            ],
            waiting: vec![WaitingLive {
                position: 1,
                caller: "+4930555123".to_owned(),
                vip: true,
                waited_ms: 42_000,
                ringing: vec!["100".to_owned()],
            }],
        }],
        agents: vec![
            AgentLive {
                agent_id: "100".to_owned(),
                state: "ringing",
                reason: None,
                extension: Some("101".to_owned()),
                in_state_ms: 4_000,
            },
            AgentLive {
                agent_id: "200".to_owned(),
                state: "paused",
                reason: Some("lunch".to_owned()),
                extension: Some("102".to_owned()),
                in_state_ms: 600_000,
            },
        ],
    }
}

/// Outside numbers the API asked the main loop to click-to-dial (every test's).
pub(super) static CLICKS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Voicemail messages the API told the main loop were deleted (every test's).
pub(super) static VOICEMAIL_DELETED: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

impl Env {
    async fn user(&self, name: &str, roles: &[&str], extension: Option<&str>) -> User {
        self.accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    extension: extension.map(str::to_owned),
                    enabled: true,
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("user")
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn user_count(&self) -> i64 {
        let reader = self.accounts.reader().expect("reader");
        accounts::list_users(&reader, PageRequest::default())
            .expect("list")
            .total
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        client: Option<&Client>,
        csrf: bool,
        body: Option<(&str, String)>,
        ip: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = client {
            req = req.header(header::COOKIE, format!("other=1; {}", c.cookie));
            if csrf {
                req = req.header(CSRF_HEADER, &c.csrf);
            }
        }
        let body = match body {
            Some((ctype, text)) => {
                req = req.header(header::CONTENT_TYPE, ctype);
                Body::from(text)
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        let addr: SocketAddr = format!("{ip}:40000").parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str, c: &Client) -> Reply {
        self.send(Method::GET, uri, Some(c), false, None, "127.0.0.1")
            .await
    }

    async fn write(&self, method: Method, uri: &str, c: &Client, body: Value) -> Reply {
        self.send(
            method,
            uri,
            Some(c),
            true,
            Some(("application/json", body.to_string())),
            "127.0.0.1",
        )
        .await
    }

    async fn try_login(&self, username: &str, password: &str, ip: &str) -> Reply {
        let body = json!({ "username": username, "password": password }).to_string();
        self.send(
            Method::POST,
            "/api/v1/session",
            None,
            false,
            Some(("application/json", body)),
            ip,
        )
        .await
    }

    async fn login(&self, username: &str) -> Client {
        self.login_with(username, PASSWORD).await
    }

    async fn login_with(&self, username: &str, password: &str) -> Client {
        let r = self.try_login(username, password, "127.0.0.1").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let cookie = r.headers[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("cookie")
            .to_owned();
        Client {
            cookie,
            csrf: r.json()["csrf_token"].as_str().expect("csrf").to_owned(),
        }
    }
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_refuses_bad_passwords_alike() {
    let env = env().await;
    env.user("alice", &["admin"], None).await;
    let r = env.try_login("alice", PASSWORD, "10.0.0.1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = r.headers[header::SET_COOKIE].to_str().expect("ascii");
    let token = cookie
        .strip_prefix("bl_session=")
        .and_then(|c| c.split(';').next())
        .expect("bl_session cookie");
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let body = r.json();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["must_change_password"], false);
    assert_eq!(body["csrf_token"].as_str().map(str::len), Some(64));

    let wrong = env
        .try_login("alice", "not-the-password-1", "10.0.0.1")
        .await;
    let unknown = env.try_login("nobody", PASSWORD, "10.0.0.1").await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"], "invalid username or password");
    }
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let no_session = env.send(Method::GET, "/api/v1/me", None, false, None, "10.0.0.1");
    assert_eq!(no_session.await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn five_failures_lock_the_account_with_423() {
    let env = env().await;
    env.user("bob", &["agent"], None).await;
    for i in 1..=4 {
        let r = env.try_login("bob", "wrong-password-xx", "10.0.0.2").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = env.try_login("bob", "wrong-password-xx", "10.0.0.2").await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text);
    let until = r.json()["locked_until_ms"].as_i64().expect("until");
    assert!(until > env.clock.load(Ordering::SeqCst));
    // The right password does not help while locked, from anywhere.
    let r = env.try_login("bob", PASSWORD, "10.0.0.3").await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.text);
    assert!(r.json()["error"].as_str().expect("msg").contains("locked"));
    env.advance(16 * 60_000);
    assert_eq!(
        env.try_login("bob", PASSWORD, "10.0.0.3").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_ip_is_throttled_after_ten_failures_in_five_minutes() {
    let env = env().await;
    env.user("carol", &["agent"], None).await;
    for i in 0..10 {
        let r = env
            .try_login(&format!("guess{i}"), PASSWORD, "10.9.9.9")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = env.try_login("carol", PASSWORD, "10.9.9.9").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Another address is not affected; the throttled one recovers after the window.
    assert_eq!(
        env.try_login("carol", PASSWORD, "10.9.9.10").await.status,
        StatusCode::OK
    );
    env.advance(5 * 60_000);
    assert_eq!(
        env.try_login("carol", PASSWORD, "10.9.9.9").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn sessions_expire_and_logout_ends_them() {
    let env = env().await;
    env.user("dave", &["agent"], None).await;
    let c = env.login("dave").await;
    assert_eq!(env.get("/api/v1/me", &c).await.status, StatusCode::OK);
    env.advance(31 * 60_000);
    assert_eq!(
        env.get("/api/v1/me", &c).await.status,
        StatusCode::UNAUTHORIZED
    );
    let c = env.login("dave").await;
    let no_csrf = env
        .send(
            Method::DELETE,
            "/api/v1/session",
            Some(&c),
            false,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let r = env
        .send(
            Method::DELETE,
            "/api/v1/session",
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        env.get("/api/v1/me", &c).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_write_without_the_csrf_token_is_refused_and_changes_nothing() {
    let env = env().await;
    env.user("erin", &["admin"], None).await;
    let c = env.login("erin").await;
    let before = env.user_count();
    let new = json!({ "username": "frank", "password": PASSWORD, "roles": ["agent"] });
    let missing = env
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&c),
            false,
            Some(("application/json", new.to_string())),
            "127.0.0.1",
        )
        .await;
    let wrong = env
        .write(
            Method::POST,
            "/api/v1/users",
            &Client {
                csrf: "0".repeat(64),
                ..c.clone()
            },
            new.clone(),
        )
        .await;
    for r in [&missing, &wrong] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.json()["error"], "missing or wrong CSRF token");
    }
    assert_eq!(env.user_count(), before);
    let ok = env.write(Method::POST, "/api/v1/users", &c, new).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    assert_eq!(env.user_count(), before + 1);
}

#[tokio::test]
async fn an_agent_is_denied_a_colleagues_record_with_the_reason_and_it_is_audited() {
    let env = env().await;
    let agent = env.user("gina", &["agent"], Some("101")).await;
    let colleague = env.user("hugo", &["agent"], Some("102")).await;
    let c = env.login("gina").await;
    let r = env
        .get(&format!("/api/v1/users/{}", colleague.id), &c)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let reason = r.json()["error"].as_str().expect("reason").to_owned();
    assert!(reason.contains("users.view"), "{reason}");
    assert!(reason.contains("gina"), "{reason}");
    // Nor may an agent give themselves the admin role through their own record.
    let r = env
        .write(
            Method::PATCH,
            &format!("/api/v1/users/{}", agent.id),
            &c,
            json!({ "roles": ["admin"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    let denied: Vec<_> = rows
        .iter()
        .filter(|r| r.result == "denied" && r.actor == "gina")
        .collect();
    assert_eq!(denied.len(), 2, "{rows:#?}");
    assert_eq!(
        (denied[0].resource.as_str(), denied[0].action.as_str()),
        ("users", "view")
    );
    assert!(denied[0].detail.contains(&reason), "{}", denied[0].detail);
    assert_eq!(denied[0].source, "api:127.0.0.1");
    let me = accounts::user(&reader, agent.id).expect("user");
    assert_eq!(me.roles, vec!["agent".to_owned()]);
}

#[tokio::test]
async fn admin_crud_round_trip() {
    let env = env().await;
    env.user("hank", &["admin"], None).await;
    let c = env.login("hank").await;

    // Validation reports every problem at once.
    let r = env
        .write(
            Method::POST,
            "/api/v1/users",
            &c,
            json!({ "username": "X", "password": "short", "roles": ["no_such_role"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let fields: Vec<String> = r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    for f in ["username", "password", "roles"] {
        assert!(fields.iter().any(|x| x.starts_with(f)), "{f} in {fields:?}");
    }

    let r = env
        .write(
            Method::POST,
            "/api/v1/users",
            &c,
            json!({ "username": "ivy", "display_name": "Ivy", "password": PASSWORD,
                    "extension": "102", "roles": ["agent"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_i64().expect("id");
    assert!(!r.text.contains("argon2"), "{}", r.text);
    let r = env.get(&format!("/api/v1/users/{id}"), &c).await;
    assert_eq!(r.json()["username"], "ivy");
    let r = env
        .write(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            &c,
            json!({ "display_name": "Ivy L." }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["display_name"], "Ivy L.");
    let r = env.get("/api/v1/users?limit=1&offset=0", &c).await;
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.json()["total"], 2); // hank and ivy
    let r = env.get("/api/v1/users?limit=1000", &c).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/users/{id}/password"),
            &c,
            json!({ "new_password": "another-Good-pass-77" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env
        .try_login("ivy", "another-Good-pass-77", "127.0.0.1")
        .await;
    assert_eq!(r.json()["must_change_password"], true);
    // Until ivy replaces the reset password, nothing else is allowed.
    let ivy = env.login_with("ivy", "another-Good-pass-77").await;
    let r = env.get("/api/v1/cdrs", &ivy).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("password change required"), "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/me/password",
            &ivy,
            json!({ "old_password": "another-Good-pass-77", "new_password": "ivy-Own-pass-2026" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(env.get("/api/v1/cdrs", &ivy).await.status, StatusCode::OK);

    // Roles.
    let spec = json!({ "name": "night_desk", "description": "Night desk",
                       "permissions": [{ "resource": "calls", "action": "view", "scope": "site" }] });
    let r = env.write(Method::POST, "/api/v1/roles", &c, spec).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let role_id = r.json()["id"].as_i64().expect("id");
    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/roles/{role_id}"),
            &c,
            json!({ "name": "night_desk", "description": "Night desk v2", "permissions": [] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        env.get(&format!("/api/v1/roles/{role_id}"), &c)
            .await
            .json()["description"],
        "Night desk v2"
    );
    let builtin = env.get("/api/v1/roles?limit=100", &c).await.json()["items"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == "agent")
        .map(|r| r["id"].as_i64().expect("id"))
        .expect("agent role");
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/roles/{builtin}"),
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/roles/{role_id}"),
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    // Groups.
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &c,
            json!({ "name": "day", "description": "Day team",
                    "members": [{ "user_id": id, "is_group_admin": false }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let gid = r.json()["id"].as_i64().expect("id");
    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/groups/{gid}"),
            &c,
            json!({ "name": "day", "description": "Day team", "members": [] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        env.get(&format!("/api/v1/groups/{gid}"), &c).await.json()["members"],
        json!([])
    );
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/groups/{gid}"),
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env.get(&format!("/api/v1/users/{id}"), &c).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // The audit chain is intact and the admin may check it.
    let r = env
        .send(
            Method::POST,
            "/api/v1/audit/verify",
            Some(&c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["ok"], true);
    let rows = env.get("/api/v1/audit?limit=500", &c).await.json()["items"]
        .as_array()
        .expect("rows")
        .len();
    assert!(rows > 10, "{rows}");
}

#[tokio::test]
async fn csv_import_with_a_bad_row_changes_nothing_and_export_has_no_hashes() {
    let env = env().await;
    env.user("jill", &["admin"], None).await;
    let c = env.login("jill").await;
    let before = env.user_count();
    let bad = "username,display_name,extension,agent_id,enabled,roles,groups\n\
               kim,Kim,,,true,agent,\n\
               lee,Lee,,,true,no_such_role,\n";
    let csv = |text: &str| Some(("text/csv", text.to_owned()));
    let r = env
        .send(
            Method::POST,
            "/api/v1/users/import",
            Some(&c),
            true,
            csv(bad),
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let problems = r.json()["problems"].as_array().expect("problems").clone();
    assert!(
        problems
            .iter()
            .any(|p| p["row"] == 3 && p["field"] == "roles"),
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p["row"] == 3), "{problems:?}");
    assert_eq!(env.user_count(), before);

    let good = bad.replace("no_such_role", "finance");
    let r = env
        .send(
            Method::POST,
            "/api/v1/users/import",
            Some(&c),
            true,
            csv(&good),
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["imported"], 2);
    assert_eq!(
        r.json()["initial_passwords"][0]["password"]
            .as_str()
            .map(str::len),
        Some(16)
    );
    assert_eq!(env.user_count(), before + 2);

    let r = env.get("/api/v1/users/export", &c).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/csv"));
    assert!(r.text.starts_with("username,display_name,"), "{}", r.text);
    assert!(r.text.contains("\nlee,Lee,"), "{}", r.text);
    assert!(!r.text.contains("argon2"), "{}", r.text);
}

#[tokio::test]
async fn change_own_password() {
    let env = env().await;
    env.user("mona", &["agent"], None).await;
    let c = env.login("mona").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/me/password",
            &c,
            json!({ "old_password": "wrong-password-1", "new_password": "new-Good-pass-99" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json()["problems"][0]["field"], "old_password");
    let r = env
        .write(
            Method::POST,
            "/api/v1/me/password",
            &c,
            json!({ "old_password": PASSWORD, "new_password": "password" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "policy: {}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/me/password",
            &c,
            json!({ "old_password": PASSWORD, "new_password": "new-Good-pass-99" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(env.get("/api/v1/me", &c).await.status, StatusCode::OK);
    assert_eq!(
        env.try_login("mona", PASSWORD, "127.0.0.2").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.try_login("mona", "new-Good-pass-99", "127.0.0.2")
            .await
            .status,
        StatusCode::OK
    );
}

fn cdr(call_id: &str, caller: &str, callee: &str, direction: Direction) -> Cdr {
    Cdr {
        call_id: call_id.to_owned(),
        direction,
        caller: caller.to_owned(),
        caller_port: None,
        callee: callee.to_owned(),
        callee_port: None,
        started_at_ms: T0,
        answered_at_ms: Some(T0 + 1000),
        ended_at_ms: T0 + 61_000,
        disposition: Disposition::Answered,
        hangup_side: HangupSide::Caller,
        caller_sip_call_id: None,
        callee_sip_call_id: None,
        caller_quality: None,
        callee_quality: None,
        transfer_chain: Vec::new(),
        queue: None,
        blocked: None,
        survey_score: None,
        hold_ms: None,
        queue_overflow: None,
        interrupted: false,
        hangup_cause: None,
    }
}

/// Walks every GET route of the OpenAPI document as each role that can reach CDRs
/// and fails if a customer's number reaches a role without `numbers.view` unmasked.
#[tokio::test]
async fn masking_walk_over_every_documented_route() {
    let env = env().await;
    let admin = env.user("ada", &["admin"], None).await;
    let agent = env.user("olga", &["agent"], Some("101")).await;
    env.user("pete", &["agent"], Some("102")).await;
    env.user("rita", &["supervisor"], Some("104")).await;
    env.user("sam", &["quality_inspector"], None).await;
    env.user("fay", &["finance"], None).await;
    let writer = env.accounts.writer();
    for c in [
        cdr("c1", CUSTOMER_IN, "101", Direction::Inbound),
        cdr("c2", "102", CUSTOMER_OUT, Direction::Outbound),
        cdr("c3", "101", "103", Direction::Internal),
    ] {
        writer.insert_cdr(c).await.expect("cdr");
    }
    let ac = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &ac,
            json!({ "name": "floor", "description": "",
                    "members": [{ "user_id": agent.id, "is_group_admin": false }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let gid = r.json()["id"].as_i64().expect("gid");
    // Customer 1 (the walk's `{id}`): olga's, with a customer's number.
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &ac,
            json!({ "name": "Walk Customer", "numbers": [CUSTOMER_IN], "owner": "olga" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["id"], 1);
    // Lead list 1 with lead 1 (the walk's `{id}`), a customer's number, no campaign.
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &ac,
            json!({ "name": "Walk" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = env
        .send(
            Method::POST,
            "/api/v1/lead-lists/1/import",
            Some(&ac),
            true,
            Some((
                "text/csv",
                format!("name,numbers\nWalk Lead,{CUSTOMER_IN}\n"),
            )),
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Campaign 1 over that list, for the floor group.
    let r = env
        .write(
            Method::POST,
            "/api/v1/campaigns",
            &ac,
            json!({ "name": "Walk", "list_id": 1, "group_id": gid, "mode": "progressive",
                    "hours_start": "08:00", "hours_end": "20:00", "weekdays": ["mon"],
                    "max_attempts": 2, "busy_retry_s": 60,
                    "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 20 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Voicemail message 1 (the walk's `{id}`): in olga's mailbox, from a customer.
    voicemail::walk_message(&env, agent.id.0);
    // Recording 1 (the walk's `{id}`): of call c1, a customer's call to olga.
    assert_eq!(recordings::add_recording(&env, "c1", 5).0, 1);
    let doc = openapi::document();
    let paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(_, ops)| ops.get("get").is_some())
        // SSE streams never end; web::tests reads them event by event.
        .filter(|(p, _)| !p.starts_with("/api/v1/events"))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(paths.len() >= 9, "{paths:?}");

    let walk = |who: &'static str, user_id: i64| {
        let env = &env;
        let paths = paths.clone();
        async move {
            let c = env.login(who).await;
            let mut bodies = Vec::new();
            for p in &paths {
                let id = if p.starts_with("/api/v1/users/") {
                    user_id
                } else if p.starts_with("/api/v1/groups/") {
                    gid
                } else {
                    1
                };
                // `{agent}`: the caller's own agent (`me`).
                let uri = p.replace("{id}", &id.to_string()).replace("{agent}", "me");
                let uri = if uri == "/api/v1/cdrs" {
                    "/api/v1/cdrs?since=0".to_owned()
                } else if uri.starts_with("/api/v1/reports/") {
                    format!("{uri}?from=0&to=86400000")
                } else {
                    uri
                };
                let r = env.get(&uri, &c).await;
                assert!(!r.status.is_server_error(), "{who} {uri}: {}", r.text);
                bodies.push((uri, r.status, r.text));
            }
            bodies
        }
    };

    for (who, role) in [
        ("olga", "agent"),
        ("sam", "quality_inspector"),
        ("fay", "finance"),
        ("rita", "supervisor"),
    ] {
        let bodies = walk(who, agent.id.0).await;
        for (uri, status, text) in &bodies {
            for number in [
                CUSTOMER_IN,
                CUSTOMER_OUT,
                &CUSTOMER_IN[3..7],
                &CUSTOMER_OUT[3..7],
            ] {
                assert!(
                    !text.contains(number),
                    "{who} ({role}) got {number} unmasked from {uri} ({status}): {text}"
                );
            }
        }
        let cdrs = &bodies
            .iter()
            .find(|(u, _, _)| u.starts_with("/api/v1/cdrs"))
            .expect("cdrs walked")
            .2;
        let customers = &bodies
            .iter()
            .find(|(u, _, _)| u == "/api/v1/customers")
            .expect("customers walked")
            .2;
        match role {
            // The agent sees only their own call, masked, and their own customer, masked.
            "agent" => {
                assert!(customers.contains("138****5678"), "{customers}");
                let voicemail = &bodies
                    .iter()
                    .find(|(u, _, _)| u == "/api/v1/voicemail")
                    .expect("voicemail walked")
                    .2;
                assert!(voicemail.contains("138****5678"), "{voicemail}");
                assert!(cdrs.contains("138****5678"), "{cdrs}");
                assert!(!cdrs.contains("139****7766"), "{cdrs}");
            }
            "quality_inspector" | "finance" => {
                assert!(cdrs.contains("138****5678"), "{cdrs}");
                assert!(cdrs.contains("139****7766"), "{cdrs}");
                if role == "quality_inspector" {
                    let recordings = &bodies
                        .iter()
                        .find(|(u, _, _)| u == "/api/v1/recordings")
                        .expect("recordings walked")
                        .2;
                    assert!(recordings.contains("138****5678"), "{recordings}");
                }
            }
            // Group admin of no group: none of these calls.
            _ => assert!(!cdrs.contains("c1"), "{cdrs}"),
        }
    }
    let bodies = walk("ada", admin.id.0).await;
    let cdrs = &bodies
        .iter()
        .find(|(u, _, _)| u.starts_with("/api/v1/cdrs"))
        .expect("cdrs walked")
        .2;
    assert!(
        cdrs.contains(CUSTOMER_IN) && cdrs.contains(CUSTOMER_OUT),
        "admin sees numbers unmasked: {cdrs}"
    );
    // Every route answers the admin, except their own agent state: ada is no agent.
    assert!(
        bodies
            .iter()
            .all(|(u, s, _)| s.is_success()
                || (u == "/api/v1/agents/me" && *s == StatusCode::NOT_FOUND)),
        "{bodies:?}"
    );
}

#[tokio::test]
async fn the_openapi_document_names_exactly_the_routes_served() {
    let env = env().await;
    let (_, served) = build(env.state.clone());
    let doc = openapi::document();
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in &served {
        let m = method.as_str().to_ascii_lowercase();
        assert!(
            paths.get(*path).and_then(|p| p.get(&m)).is_some(),
            "{method} {path} is served but not documented"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, serde_json::Map::len))
        .sum();
    assert_eq!(
        documented,
        served.len(),
        "documented routes that are not served"
    );
    // And it is served, without a session.
    let r = env
        .send(
            Method::GET,
            "/api/v1/openapi.json",
            None,
            false,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["openapi"], "3.0.3");
}

#[tokio::test]
async fn user_lists_follow_the_scope_of_the_role() {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    let sup = env.user("sam", &["supervisor"], None).await;
    let a1 = env.user("anna", &["agent"], None).await;
    env.user("bert", &["agent"], None).await;
    let admin = env.login("root").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "team", "description": "",
                    "members": [{ "user_id": sup.id, "is_group_admin": true },
                                { "user_id": a1.id, "is_group_admin": false }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|u| u["username"].as_str().expect("username").to_owned())
            .collect()
    };
    let r = env.get("/api/v1/users", &admin).await;
    assert_eq!(r.json()["total"], 4, "{}", r.text);
    // The supervisor sees their team (themselves and anna), not bert or root.
    let s = env.login("sam").await;
    let r = env.get("/api/v1/users", &s).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut got = names(&r.json());
    got.sort();
    assert_eq!(got, ["anna", "sam"]);
    assert_eq!(r.json()["total"], 2);
    // An agent sees only themselves.
    let b = env.login("bert").await;
    let r = env.get("/api/v1/users", &b).await;
    assert_eq!(names(&r.json()), ["bert"]);
    let r = env.get("/api/v1/users?limit=1&offset=1", &s).await;
    assert_eq!(names(&r.json()).len(), 1);
    assert_eq!(r.json()["total"], 2);
}

#[tokio::test]
async fn sync_status_and_force_need_their_permissions_and_force_is_audited() {
    let env = env().await;
    env.user("tess", &["technician"], None).await;
    env.user("olga", &["agent"], Some("101")).await;
    let tech = env.login("tess").await;
    let agent = env.login("olga").await;

    let r = env.get("/api/v1/sync", &tech).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let status = r.json();
    assert_eq!(status["state"], "not configured");
    assert_eq!(status["source"], "daemon");
    assert_eq!(status["epoch"].as_str().map(str::len), Some(32));
    assert_eq!(status["cursor"], 0);
    // Two users created, their audit rows, two logins: all waiting in the outbox.
    assert!(
        status["backlog"]["depth"].as_i64().is_some_and(|d| d >= 4),
        "{status}"
    );
    assert!(status["backlog"]["oldest_age_ms"].is_i64(), "{status}");
    assert!(status["in_flight"].is_null());
    assert_eq!(status["wan"]["hq"]["state"], "not configured");

    let r = env.get("/api/v1/sync", &agent).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // Force: CSRF like every POST, the permission, then 409 because sync is off.
    let r = env
        .send(
            Method::POST,
            "/api/v1/sync/force",
            Some(&tech),
            false,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .send(
            Method::POST,
            "/api/v1/sync/force",
            Some(&agent),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .send(
            Method::POST,
            "/api/v1/sync/force",
            Some(&tech),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("not configured"), "{}", r.text);
    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    let forced: Vec<_> = rows.iter().filter(|r| r.action == "force_sync").collect();
    assert_eq!(forced.len(), 1);
    assert_eq!(forced[0].actor, "tess");
    assert_eq!(forced[0].result, "failed");
    // The agent's attempts were denied, and audited as such.
    assert!(rows
        .iter()
        .any(|r| r.actor == "olga" && r.resource == "sync" && r.result == "denied"));
}

mod reports;
