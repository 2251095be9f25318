//! The web page in-process: the whole router (pages, static files, the API) over a
//! real store in a temp dir, users made through [`Accounts`], and a stand-in for the
//! main loop that answers ring tests with a real [`StatusPublisher`] and the calls
//! page with a real [`CallControl`] (driven by board events, as the daemon's loop
//! does) and a real media engine's leg statistics. Requests go through `oneshot`
//! with a client address, like the API's tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use line_proto::{Cadence, Event};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::status::{
    ActiveCalls, ControlRequest, PortKind, StaticInfo, StatusHandle, StatusPublisher,
    RING_TEST_DURATION,
};
use super::*;
use crate::accounts::{Accounts, AuthSettings, HashParams, NewUser, RoleSpec};
use crate::audit::Actor;
use crate::call::{CallControl, CallSettings, Extension, FxoLine, Output, PortState};
use crate::mask::MaskPattern;
use crate::media_engine::{MediaEngine, MediaSettings};
use crate::rbac::{Permission, Scope};
use crate::store::{system_clock_ms, ExtensionRow, Store, StoreWriter};
use crate::sync::status::SyncHandle;
use crate::tones::Country;

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const PASSWORD: &str = "a-Good-passphrase-42";

struct Env {
    _dir: tempfile::TempDir,
    accounts: Accounts,
    router: Router,
    /// The API state the router serves.
    api: ApiState,
    publisher: Arc<Mutex<StatusPublisher>>,
    /// Call control as the main loop owns it; the test feeds it board events.
    calls: Arc<Mutex<CallControl>>,
    writer: StoreWriter,
    /// The agents' desktop events, as the main loop publishes them (shared with the
    /// control loop, which publishes the API's events).
    events: Arc<crate::screen_pop::EventHub>,
    /// Where the tools' OPTIONS probes arrive (no SIP endpoint runs here).
    probes: mpsc::UnboundedReceiver<crate::sip_endpoint::probe::OptionsProbe>,
    /// The tools' settings (config file with secrets, SIP port of the capture).
    tools: crate::tools::ToolsSettings,
    /// The reboots the main loop's stand-in accepted (the calls each cut).
    reboots: Arc<Mutex<Vec<usize>>>,
    /// The charts' histories (sampled every second when a test runs the sampler).
    charts: super::history::Charts,
    /// The status handle the router reads (for a test's own chart sampler).
    status: StatusHandle,
    /// The store's file.
    db_path: std::path::PathBuf,
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

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first `name=value` of the Set-Cookie headers for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|kv| kv.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

/// A logged-in browser: the session cookie and the CSRF token of its forms.
#[derive(Debug, Clone)]
struct Browser {
    cookie: String,
    csrf: String,
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    html[at..].split('"').next().expect("value").to_owned()
}

async fn env() -> Env {
    env_full(false, None).await
}

/// [`env`], with the break-glass installer account (password [`PASSWORD`]) when
/// `installer`, as `branchd` makes it before enrollment.
async fn env_with(installer: bool) -> Env {
    env_full(installer, None).await
}

/// [`env`] on a box whose `[update]` slots are `slots` (under the env's temp dir).
async fn env_with_slots(slots: &dyn Fn(&std::path::Path) -> crate::config::SlotBackend) -> Env {
    env_full(false, Some(slots)).await
}

async fn env_full(
    installer: bool,
    slots: Option<&dyn Fn(&std::path::Path) -> crate::config::SlotBackend>,
) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    let mut store = Store::open(&path).expect("open");
    if installer {
        let hash = crate::accounts::password::hash_secret(PASSWORD, FAST).expect("hash");
        crate::accounts::bootstrap_installer(
            &mut store,
            Some(&hash),
            dir.path(),
            FAST,
            system_clock_ms(),
        )
        .expect("installer");
    }
    let (writer, _thread) = store.spawn_writer();
    let settings = AuthSettings {
        hash: FAST,
        ..AuthSettings::default()
    };
    let accounts = Accounts::new(writer.clone(), path, settings);
    // The board's ports and extensions in the store, as the daemon writes them at
    // start (extensions are never masked).
    writer
        .replace_board(
            vec![(1, "fxs"), (2, "fxs"), (3, "fxo")],
            ["101", "102"]
                .iter()
                .zip(1u8..)
                .map(|(n, port)| ExtensionRow {
                    number: (*n).to_owned(),
                    name: format!("Ext {n}"),
                    port: Some(port),
                    call_waiting: true,
                })
                .collect(),
        )
        .await
        .expect("board");
    let (publisher, rx) = StatusPublisher::new(
        vec![
            (1, PortKind::Fxs, Some(("101".into(), "Reception".into()))),
            (2, PortKind::Fxs, Some(("102".into(), "Sales".into()))),
            (3, PortKind::Fxo, None),
        ],
        false,
        Cadence::continuous(),
        Instant::now(),
        system_clock_ms(),
    );
    let mut publisher = publisher;
    // The line chart keeps a reading a second (as `[web] chart_sample_seconds = 1`).
    publisher.sample_lines_every(std::time::Duration::from_secs(1));
    let publisher = Arc::new(Mutex::new(publisher));
    let calls = Arc::new(Mutex::new(call_control()));
    let (frames, _frames_rx) = mpsc::unbounded_channel();
    let (sip_inputs, _sip_rx) = mpsc::unbounded_channel();
    let (media, _media_task) = MediaEngine::start(
        MediaSettings {
            local_ip: "127.0.0.1".parse().expect("ip"),
            // No leg is opened here: the range is never bound.
            rtp_port_min: 40_000,
            rtp_port_max: 40_009,
            jitter: branchline_media::jitter::JitterConfig::adaptive(20, 200).expect("jitter"),
            board_law: line_proto::g711::Law::Ulaw,
            seed: 7,
            fxo_ports: 3..=3,
            rtcp_interval: branchline_media::rtcp::DEFAULT_REPORT_INTERVAL,
            inactivity: Default::default(),
        },
        Arc::new(frames),
        sip_inputs,
    )
    .expect("media engine");
    let (control, mut requests) = mpsc::unbounded_channel::<ControlRequest>();
    let events = Arc::new(crate::screen_pop::EventHub::default());
    let hub = Arc::clone(&events);
    // The main loop's part: ring tests against the publisher; the calls in progress
    // from call control and the media engine, as `daemon::BoardLoop::web_request`.
    let p = Arc::clone(&publisher);
    let c = Arc::clone(&calls);
    let reboots = Arc::new(Mutex::new(Vec::new()));
    let rebooted = Arc::clone(&reboots);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request {
                ControlRequest::Reboot { force, reply } => {
                    let up = c.lock().expect("calls").active_calls();
                    let decision = super::status::reboot_decision(up, force);
                    if let Ok(cut) = decision {
                        rebooted.lock().expect("reboots").push(cut);
                    }
                    let _ = reply.send(decision);
                }
                ControlRequest::RingTest { port, reply } => {
                    let mut p = p.lock().expect("publisher");
                    let r = p
                        .ring_test(Instant::now(), system_clock_ms(), port)
                        .map(|_| ());
                    p.publish(system_clock_ms());
                    let _ = reply.send(r);
                }
                ControlRequest::LineTest { port, reply } => {
                    // The board's answers as the simulator gives them: a healthy line
                    // on the FXS ports, no line voltage on FXO port 3 (unplugged).
                    let mut p = p.lock().expect("publisher");
                    let r = p.line_test(Instant::now(), system_clock_ms(), port);
                    if let Ok((_, commands)) = &r {
                        for (port, command) in commands {
                            let event = match command {
                                line_proto::Command::SelfTest => {
                                    line_proto::Event::SelfTestResult {
                                        passed: true,
                                        code: 0,
                                    }
                                }
                                _ => line_proto::Event::LineReading {
                                    millivolts: if *port == 3 { 0 } else { -48_000 },
                                    microamps: 0,
                                },
                            };
                            p.on_event(system_clock_ms(), *port, &event);
                        }
                    }
                    p.publish(system_clock_ms());
                    let _ = reply.send(r.map(|(id, _)| id));
                }
                ControlRequest::LoopbackTest { port, reply } => {
                    // The board's loop as the simulator runs it: the frames come back
                    // one frame late on the FXS ports; FXO port 3's codec is dead.
                    let mut p = p.lock().expect("publisher");
                    let t0 = Instant::now();
                    let r = p.loopback_test(t0, system_clock_ms(), port);
                    if r.is_ok() {
                        // The MCU's queue: each tick takes one frame and sends it back.
                        let mut queue = std::collections::VecDeque::new();
                        for tick in 0..70u64 {
                            let at = t0 + std::time::Duration::from_millis(20 * tick);
                            queue.extend(
                                p.loopback_frames(at)
                                    .into_iter()
                                    .filter(|(q, _)| *q == port)
                                    .map(|(_, f)| f),
                            );
                            let frame = queue
                                .pop_front()
                                .unwrap_or([0; line_proto::AUDIO_FRAME_LEN]);
                            let back = if port == 3 {
                                [0; line_proto::AUDIO_FRAME_LEN]
                            } else {
                                frame
                            };
                            p.loopback_audio(system_clock_ms(), port, &back);
                        }
                        assert_eq!(
                            p.take_commands(),
                            vec![(port, line_proto::Command::SetLoopback { on: false })],
                            "the loopback is turned off at the end"
                        );
                    }
                    p.publish(system_clock_ms());
                    let _ = reply.send(r.map(|(id, _)| id));
                }
                ControlRequest::ClickToCall { request, reply } => {
                    let r = request.resolve(None).and_then(|from| {
                        let mut calls = c.lock().expect("calls");
                        let call_id = calls.click_to_call(Instant::now(), &from, &request.to)?;
                        Ok(crate::screen_pop::ClickStarted { call_id, from })
                    });
                    let _ = reply.send(r);
                }
                ControlRequest::VoicemailDeleted { id } => {
                    c.lock().expect("calls").voicemail_message_removed(id);
                }
                ControlRequest::Publish { event } => hub.publish(event),
                ControlRequest::AgentDesk {
                    agent,
                    action,
                    reply,
                } => {
                    let mut calls = c.lock().expect("calls");
                    let _ = reply.send(crate::daemon::agent_desk(&mut calls, agent, action));
                }
                ControlRequest::CallCenter { reply } => {
                    let calls = c.lock().expect("calls");
                    let _ = reply.send(calls.acd().map(|acd| {
                        crate::web::status::CallCenterStatus::of(
                            acd,
                            Instant::now(),
                            system_clock_ms(),
                        )
                    }));
                }
                ControlRequest::LineHistory { reply } => {
                    let history = p.lock().expect("publisher").line_history().clone();
                    let _ = reply.send(history);
                }
                ControlRequest::Calls { reply } => {
                    let calls = c.lock().expect("calls").snapshot();
                    let legs = media.stats().await.map_err(|e| e.to_string());
                    let _ = reply.send(ActiveCalls { calls, legs });
                }
            }
        }
    });
    let info = StaticInfo {
        version: "test",
        board_model: "sim".into(),
        data_dir: dir.path().to_owned(),
        sip_configured: false,
        sip_accounts: 0,
    };
    let tools = tools::settings(dir.path());
    let (probe_tx, probes) = mpsc::unbounded_channel();
    let charts = super::history::Charts::new(super::history::ChartHistories::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(1),
        system_clock_ms(),
    ));
    let status = StatusHandle::new(rx, control, info)
        .with_events(events.feed())
        .with_tools(crate::tools::Tools::new(tools.clone(), probe_tx, None))
        .with_charts(charts.clone());
    let status = match slots {
        Some(backend) => status.with_slots(backend(dir.path())),
        None => status,
    };
    let state = ApiState::with_status(
        accounts.clone(),
        MaskPattern::default(),
        Arc::new(system_clock_ms),
        SyncHandle::not_configured(),
        Some(status.clone()),
    );
    for (name, role) in [
        ("tech", "technician"),
        ("agent1", "agent"),
        ("boss", "admin"),
        ("sup", "supervisor"),
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
    let db_path = dir.path().join("branchline.db");
    Env {
        _dir: dir,
        accounts,
        router: router(state.clone()),
        api: state,
        publisher,
        calls,
        writer,
        events,
        probes,
        tools,
        reboots,
        charts,
        status,
        db_path,
    }
}

/// Call control over the test board: FXS 1 and 2 (extensions 101, 102), FXO 3 whose
/// PSTN calls ring 101.
fn call_control() -> CallControl {
    let ext = |n: &str, port| Extension {
        number: n.to_owned(),
        port,
        name: format!("Ext {n}"),
        call_waiting: true,
        permissions: Vec::new(),
    };
    let now = Instant::now();
    let settings = CallSettings {
        country: Country::Us,
        extensions: vec![ext("101", 1), ext("102", 2)],
        fxo_lines: vec![FxoLine {
            port: 3,
            inbound: vec!["101".into()],
            outbound: true,
        }],
        outside_line_prefix: Some("9".into()),
        first_digit_timeout: std::time::Duration::from_secs(10),
        inter_digit_timeout: std::time::Duration::from_secs(4),
        ring_timeout: std::time::Duration::from_secs(30),
        sip_extensions: Vec::new(),
        call_id_prefix: "web".into(),
        sip_host: "192.0.2.1".into(),
        wall_clock_ms: system_clock_ms(),
        epoch: now,
        acd: None,
        prompts: Default::default(),
        conference_rooms: Vec::new(),
        echo_test_code: Some(crate::config::DEFAULT_ECHO_TEST_CODE.to_owned()),
    };
    CallControl::new(settings, 1..=2, 3..=3)
}

impl Env {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        cookies: &[&str],
        headers: &[(&str, &str)],
        form: Option<String>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies.join("; "));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f)
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, uri: &str, b: Option<&Browser>) -> Reply {
        let cookies: Vec<&str> = b.map(|b| b.cookie.as_str()).into_iter().collect();
        self.send(Method::GET, uri, &cookies, &[], None).await
    }

    async fn post_form(&self, uri: &str, b: &Browser, form: &str) -> Reply {
        self.send(Method::POST, uri, &[&b.cookie], &[], Some(form.to_owned()))
            .await
    }

    /// Logs in through the login form, as a browser does.
    async fn login(&self, username: &str) -> Browser {
        let page = self.get("/login?next=/ports", None).await;
        assert_eq!(page.status, StatusCode::OK);
        let login_cookie = page.cookie(LOGIN_CSRF_COOKIE).expect("login csrf cookie");
        let token = hidden_csrf(&page.text);
        let r = self
            .send(
                Method::POST,
                "/login",
                &[&login_cookie],
                &[],
                Some(format!(
                    "username={username}&password={PASSWORD}&csrf={token}&next=%2Fports"
                )),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
        assert_eq!(r.location(), "/ports");
        let cookie = r.cookie(api::SESSION_COOKIE).expect("session cookie");
        let set = r.headers[header::SET_COOKIE].to_str().expect("ascii");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        // The CSRF token of the forms is on every page.
        let dash = self
            .get(
                "/dashboard",
                Some(&Browser {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                }),
            )
            .await;
        let csrf = hidden_csrf(&dash.text);
        Browser { cookie, csrf }
    }

    /// A board event to call control; the CDRs it finishes are stored (the daemon's
    /// store task), the rest of its output is dropped.
    async fn board_event(&self, port: u8, event: Event) {
        let cdrs: Vec<_> = {
            let mut cc = self.calls.lock().expect("calls");
            cc.handle_event(Instant::now(), port, &event);
            std::iter::from_fn(|| cc.poll_output())
                .filter_map(|o| match o {
                    Output::Cdr(cdr) => Some(*cdr),
                    _ => None,
                })
                .collect()
        };
        for cdr in cdrs {
            self.writer.insert_cdr(cdr).await.expect("cdr stored");
        }
    }

    /// A user with a custom role of these permissions (site scope).
    async fn custom_user(&self, name: &str, grants: &[(Resource, Action)]) {
        self.accounts
            .create_role(
                &Actor::system(),
                RoleSpec {
                    name: format!("{name}_role"),
                    description: "test role".into(),
                    permissions: grants
                        .iter()
                        .map(|&(r, a)| Permission::new(r, a, Scope::Site))
                        .collect(),
                },
                system_clock_ms(),
            )
            .await
            .expect("role");
        self.accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    enabled: true,
                    roles: vec![format!("{name}_role")],
                    ..NewUser::default()
                },
                system_clock_ms(),
            )
            .await
            .expect("user");
    }

    fn audit(&self) -> Vec<crate::audit::AuditRecord> {
        let reader = self.accounts.reader().expect("reader");
        crate::audit::list(&reader, 0, 1000).expect("audit")
    }
}

/// The next SSE event's JSON data (a generous bound only stops a hang).
async fn next_event(body: &mut Body) -> Value {
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
        if !text.contains("\n\n") {
            continue;
        }
        assert!(text.contains("event: status"), "{text}");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .expect("data line");
        return serde_json::from_str(line.trim()).expect("json");
    }
}

fn assert_security_headers(r: &Reply, what: &str) {
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    let csp = h("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_assets_are_cached() {
    let env = env().await;
    let tech = env.login("tech").await;
    for (uri, b) in [
        ("/login", None),
        ("/dashboard", None),
        ("/dashboard", Some(&tech)),
        ("/ports", Some(&tech)),
        ("/no-such-page", Some(&tech)),
        ("/api/v1/status", Some(&tech)),
        ("/api/v1/no-such-route", Some(&tech)),
        ("/static/app.css", None),
        ("/static/app.js", None),
    ] {
        let r = env.get(uri, b).await;
        assert_security_headers(&r, uri);
    }
    let css = env.get("/static/app.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(css.headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let etag = css.headers[header::ETAG].to_str().unwrap().to_owned();
    let again = env
        .send(
            Method::GET,
            "/static/app.css",
            &[],
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    let js = env.get("/static/app.js", None).await;
    assert!(js.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_ne!(js.headers[header::ETAG], css.headers[header::ETAG]);
    // Pages hold no inline script or style (the CSP would block them).
    let page = env.get("/dashboard", Some(&tech)).await;
    assert!(!page.text.contains("<script>"), "inline script");
    assert!(!page.text.contains("style="), "inline style");
    assert!(!page.text.contains("<style"), "inline style");
    // The 404s: HTML for pages, JSON for the API.
    let r = env.get("/no-such-page", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains("Page not found"), "{}", r.text);
    let r = env.get("/api/v1/no-such-route", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "no such route");
}

#[tokio::test]
async fn not_logged_in_redirects_to_the_login_page_and_bad_logins_are_refused() {
    let env = env().await;
    for uri in ["/dashboard", "/ports", "/system", "/sip", "/calls", "/sync"] {
        let r = env.get(uri, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(r.location(), format!("/login?next={uri}"));
    }
    let root = env.get("/", None).await;
    assert_eq!(root.location(), "/dashboard");

    let page = env.get("/login", None).await;
    let login_cookie = page.cookie(LOGIN_CSRF_COOKIE).expect("cookie");
    let token = hidden_csrf(&page.text);
    // Wrong form token: refused, no session.
    let r = env
        .send(
            Method::POST,
            "/login",
            &[&login_cookie],
            &[],
            Some(format!("username=tech&password={PASSWORD}&csrf=forged")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookie(api::SESSION_COOKIE).is_none());
    // No form cookie at all: refused.
    let r = env
        .send(
            Method::POST,
            "/login",
            &[],
            &[],
            Some(format!("username=tech&password={PASSWORD}&csrf={token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookie(api::SESSION_COOKIE).is_none());
    // Wrong password: the form again with the reason, no session.
    let r = env
        .send(
            Method::POST,
            "/login",
            &[&login_cookie],
            &[],
            Some(format!("username=tech&password=nope&csrf={token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.text.contains("invalid username or password"),
        "{}",
        r.text
    );
    assert!(r.cookie(api::SESSION_COOKIE).is_none());
    // An incomplete form.
    let r = env
        .send(
            Method::POST,
            "/login",
            &[&login_cookie],
            &[],
            Some(format!("username=tech&csrf={token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // `next` never leaves the site.
    let r = env
        .send(
            Method::POST,
            "/login",
            &[&login_cookie],
            &[],
            Some(format!(
                "username=tech&password={PASSWORD}&csrf={token}&next=%2F%2Fevil.example"
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/dashboard");
}

#[tokio::test]
async fn pages_follow_the_roles() {
    let env = env().await;
    let tech = env.login("tech").await;
    let boss = env.login("boss").await;
    let agent = env.login("agent1").await;
    let sup = env.login("sup").await;
    for uri in ["/dashboard", "/ports", "/system", "/sip", "/calls", "/sync"] {
        assert_eq!(
            env.get(uri, Some(&tech)).await.status,
            StatusCode::OK,
            "{uri}"
        );
        assert_eq!(
            env.get(uri, Some(&boss)).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    for (uri, permission) in [
        ("/dashboard", "diagnostics.view"),
        ("/ports", "diagnostics.view"),
        ("/system", "system_config.view"),
    ] {
        for who in [&agent, &sup] {
            let r = env.get(uri, Some(who)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
            assert!(r.text.contains("Access denied"), "{}", r.text);
            assert!(r.text.contains(permission), "{uri}: {}", r.text);
        }
    }
    // Denials are audited like the API's.
    assert!(env
        .audit()
        .iter()
        .any(|a| a.actor == "agent1" && a.result == "denied" && a.target == "/system"));
    // The dashboard shows the ports from the live status, and what is not there.
    let d = env.get("/dashboard", Some(&tech)).await.text;
    assert!(d.contains("101 Reception"), "{d}");
    assert!(
        d.contains("not reported yet"),
        "hook before any reading: {d}"
    );
    assert!(d.contains("not configured (no [sip] section)"), "{d}");
    assert!(d.contains("not configured"), "sync: {d}");
    assert!(d.contains("% used"), "disk: {d}");
    // The technician may ring; the ports page has the form.
    let p = env.get("/ports", Some(&tech)).await.text;
    assert!(p.contains("/ports/1/ring-test"), "{p}");
    assert!(
        !p.contains("/ports/3/ring-test"),
        "no ring test on FXO: {p}"
    );
}

#[tokio::test]
async fn the_live_status_follows_the_board_as_json_and_sse() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    {
        let mut p = env.publisher.lock().unwrap();
        p.on_event(system_clock_ms(), 1, &Event::OffHook);
        p.on_event(
            system_clock_ms(),
            2,
            &Event::LineReading {
                millivolts: 48_000,
                microamps: 0,
            },
        );
        p.publish(system_clock_ms());
    }
    let r = env.get("/api/v1/status", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = r.json();
    assert_eq!(s["ports"][0]["hook"], "off-hook");
    assert_eq!(s["ports"][1]["hook"], "on-hook");
    assert_eq!(s["ports"][1]["line"]["millivolts"], 48_000);
    assert_eq!(s["ports"][2]["kind"], "fxo");
    let page = env.get("/ports", Some(&tech)).await.text;
    assert!(page.contains("48.0 V, 0.0 mA"), "{page}");
    let r = env.get("/api/v1/status", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("diagnostics.view"));
    assert_eq!(
        env.get("/api/v1/status", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.get("/api/v1/events/status", Some(&agent)).await.status,
        StatusCode::FORBIDDEN
    );

    // SSE: the snapshot at once, then one event per change.
    let mut req = Request::builder()
        .uri("/api/v1/events/status")
        .header(header::COOKIE, &tech.cookie)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("192.0.2.7:1".parse::<SocketAddr>().unwrap()));
    let resp = env.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let first = next_event(&mut body).await;
    assert_eq!(first["ports"][0]["hook"], "off-hook");
    {
        let mut p = env.publisher.lock().unwrap();
        p.on_event(system_clock_ms(), 1, &Event::OnHook);
        p.publish(system_clock_ms());
    }
    let second = next_event(&mut body).await;
    assert_eq!(second["ports"][0]["hook"], "on-hook");
    assert!(second["version"].as_u64() > first["version"].as_u64());
}

#[tokio::test]
async fn line_test_needs_csrf_and_operate_refuses_a_busy_port_reports_and_is_audited() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    let result = |port: usize| {
        env.publisher.lock().unwrap().status().ports[port]
            .line_test
            .clone()
    };

    // No CSRF token, another session's token, an agent: refused, nothing runs.
    let r = env.post_form("/ports/1/line-test", &tech, "csrf=").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form("/ports/1/line-test", &tech, &format!("csrf={}", agent.csrf))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/1/line-test",
            &[&tech.cookie],
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form(
            "/ports/1/line-test",
            &agent,
            &format!("csrf={}", agent.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.operate"), "{}", r.text);
    assert_eq!(result(0), None);

    // The technician's form: the test runs, the page shows its checks.
    let r = env
        .post_form("/ports/1/line-test", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), "/ports?tested=1#port-1");
    assert!(result(0).is_some_and(|r| r.passed));
    let page = env.get("/ports?tested=1", Some(&tech)).await.text;
    assert!(page.contains("Line test of port 1 passed."), "{page}");
    assert!(page.contains("48.0 V"), "{page}");
    assert!(
        page.contains("action=\"/ports/3/line-test\""),
        "FXO ports too: {page}"
    );

    // The API: an FXO line with no voltage fails, still 200, with the cause.
    let csrf = [("x-csrf-token", tech.csrf.as_str())];
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/3/line-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["port"], 3);
    assert_eq!(body["result"]["passed"], false);
    assert_eq!(body["result"]["checks"][1]["name"], "line voltage");
    assert!(body["result"]["checks"][1]["detail"]
        .as_str()
        .unwrap()
        .contains("no line"));
    let page = env.get("/ports?tested=3", Some(&tech)).await.text;
    assert!(
        page.contains("Line test of port 3 failed: line voltage: 0.0 V"),
        "{page}"
    );
    // The status API carries the last result.
    let status = env.get("/api/v1/status", Some(&tech)).await.json();
    assert_eq!(status["ports"][2]["line_test"]["passed"], false, "{status}");

    // A port with a call up, an FXS phone off the hook, no such port, not a number.
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Talking);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/2/line-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("busy"));
    assert_eq!(result(1), None);
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Idle);
    env.publisher
        .lock()
        .unwrap()
        .on_event(system_clock_ms(), 1, &line_proto::Event::OffHook);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/1/line-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("off-hook"));
    for (path, status) in [
        ("/api/v1/ports/9/line-test", StatusCode::NOT_FOUND),
        ("/api/v1/ports/x/line-test", StatusCode::BAD_REQUEST),
    ] {
        let r = env
            .send(Method::POST, path, &[&tech.cookie], &csrf, None)
            .await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
    }
    let r = env
        .post_form("/ports/2/line-test", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);

    let rows: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|a| a.action == "line_test")
        .map(|a| (a.target, a.result))
        .collect();
    let row = |port: &str, result: &str| (port.to_owned(), result.to_owned());
    assert_eq!(
        rows,
        vec![
            row("port 1", "ok"),
            row("port 3", "ok"),
            row("port 2", "failed"),
            row("port 1", "failed"),
            row("port 9", "failed"),
            row("port 2", "ok"),
        ]
    );
}

#[tokio::test]
async fn loopback_test_needs_csrf_and_operate_refuses_a_busy_port_reports_and_is_audited() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    let result = |port: usize| {
        env.publisher.lock().unwrap().status().ports[port]
            .loopback_test
            .clone()
    };

    // No CSRF token, another session's token, an agent: refused, nothing runs.
    let r = env
        .post_form("/ports/1/loopback-test", &tech, "csrf=")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form(
            "/ports/1/loopback-test",
            &tech,
            &format!("csrf={}", agent.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/1/loopback-test",
            &[&tech.cookie],
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form(
            "/ports/1/loopback-test",
            &agent,
            &format!("csrf={}", agent.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.operate"), "{}", r.text);
    assert_eq!(result(0), None);

    // The technician's form: the loop comes back clean, the page shows the checks.
    let r = env
        .post_form(
            "/ports/1/loopback-test",
            &tech,
            &format!("csrf={}", tech.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), "/ports?looped=1#port-1");
    let done = result(0).expect("a result");
    assert!(done.passed, "{done:?}");
    // Frame for frame: the two sent ahead only fill the MCU's queue.
    assert_eq!(done.delay_ms, Some(0));
    let page = env.get("/ports?looped=1", Some(&tech)).await.text;
    assert!(page.contains("Loopback test of port 1 passed."), "{page}");
    assert!(page.contains("-10.0 dBm0 (sent -10.0 dBm0)"), "{page}");
    assert!(page.contains("action=\"/ports/3/loopback-test\""), "{page}");

    // The API: port 3's dead codec fails, still 200, with the reason.
    let csrf = [("x-csrf-token", tech.csrf.as_str())];
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/3/loopback-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["result"]["passed"], false);
    assert_eq!(body["result"]["checks"][0]["name"], "audio back");
    assert!(body["result"]["reason"]
        .as_str()
        .unwrap()
        .contains("no audio came back"));
    let status = env.get("/api/v1/status", Some(&tech)).await.json();
    assert_eq!(
        status["ports"][2]["loopback_test"]["passed"], false,
        "{status}"
    );
    assert_eq!(status["ports"][2]["loopback_testing"], false);

    // A call up, a phone off the hook, no such port, not a number.
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Talking);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/2/loopback-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("busy"));
    assert_eq!(result(1), None);
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Idle);
    env.publisher
        .lock()
        .unwrap()
        .on_event(system_clock_ms(), 1, &line_proto::Event::OffHook);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/1/loopback-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("off-hook"));
    for (path, status) in [
        ("/api/v1/ports/9/loopback-test", StatusCode::NOT_FOUND),
        ("/api/v1/ports/x/loopback-test", StatusCode::BAD_REQUEST),
    ] {
        let r = env
            .send(Method::POST, path, &[&tech.cookie], &csrf, None)
            .await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
    }
    let rows: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|a| a.action == "loopback_test")
        .map(|a| (a.target, a.result))
        .collect();
    let row = |port: &str, result: &str| (port.to_owned(), result.to_owned());
    assert_eq!(
        rows,
        vec![
            row("port 1", "ok"),
            row("port 3", "ok"),
            row("port 2", "failed"),
            row("port 1", "failed"),
            row("port 9", "failed"),
        ]
    );
}

#[tokio::test]
async fn ring_test_needs_csrf_and_operate_refuses_a_busy_port_and_is_audited() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    let ringing = |port: usize| env.publisher.lock().unwrap().status().ports[port].ring_test;

    // The form without the CSRF token, or with another session's: refused, no ring.
    let r = env.post_form("/ports/1/ring-test", &tech, "csrf=").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form("/ports/1/ring-test", &tech, &format!("csrf={}", agent.csrf))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The API without the header.
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/1/ring-test",
            &[&tech.cookie],
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!ringing(0));
    // An agent may not, even with their own token.
    let r = env
        .post_form(
            "/ports/1/ring-test",
            &agent,
            &format!("csrf={}", agent.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.operate"), "{}", r.text);
    assert!(!ringing(0));

    // The technician's form: rings, back to the ports page with a notice.
    let r = env
        .post_form("/ports/1/ring-test", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), "/ports?rang=1");
    assert!(ringing(0));
    let page = env.get("/ports?rang=1", Some(&tech)).await.text;
    assert!(page.contains("Ring test started on port 1"), "{page}");
    // Again while it rings: 409.
    let r = env
        .post_form("/ports/1/ring-test", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // The API: a port with a call up is refused with 409 and nothing rings.
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Talking);
    let csrf = [("x-csrf-token", tech.csrf.as_str())];
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/2/ring-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.json()["error"].as_str().unwrap().contains("busy"));
    assert!(!ringing(1));
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/3/ring-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "FXO: {}", r.text);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/9/ring-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/x/ring-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    env.publisher
        .lock()
        .unwrap()
        .on_port_state(system_clock_ms(), 2, PortState::Idle);
    let r = env
        .send(
            Method::POST,
            "/api/v1/ports/2/ring-test",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({ "port": 2, "ringing_for_ms": RING_TEST_DURATION.as_millis() as u64 })
    );
    assert!(ringing(1));

    let rows: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|a| a.action == "ring_test")
        .map(|a| (a.actor, a.target, a.result))
        .collect();
    let row =
        |who: &str, port: &str, result: &str| (who.to_owned(), port.to_owned(), result.to_owned());
    assert_eq!(
        rows,
        vec![
            row("tech", "port 1", "ok"),
            row("tech", "port 1", "failed"),
            row("tech", "port 2", "failed"),
            row("tech", "port 3", "failed"),
            row("tech", "port 9", "failed"),
            row("tech", "port 2", "ok"),
        ]
    );
}

#[tokio::test]
async fn logout_needs_the_form_token_and_ends_the_session() {
    let env = env().await;
    let tech = env.login("tech").await;
    let r = env.post_form("/logout", &tech, "csrf=wrong").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        env.get("/dashboard", Some(&tech)).await.status,
        StatusCode::OK
    );
    let r = env
        .post_form("/logout", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login?bye=1");
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = env.get("/dashboard", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/login"));
    let bye = env.get("/login?bye=1", None).await;
    assert!(bye.text.contains("You are logged out."));
}

/// The logs page and route: technicians may; this in-process API keeps no lines and
/// says so; a bad level is a 400 naming it; agents are refused.
#[tokio::test]
async fn logs_page_and_route_follow_the_roles_and_refuse_bad_filters() {
    let env = env().await;
    let r = env.get("/logs", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let tech = env.login("tech").await;
    let r = env.get("/logs?level=warn", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("keeps no log lines"), "{}", r.text);
    assert!(
        r.text.contains(r#"<option value="warn" selected>"#),
        "{}",
        r.text
    );
    let r = env.get("/api/v1/logs", Some(&tech)).await;
    assert_eq!(r.json(), json!({ "kept": false, "lines": [] }));
    let r = env.get("/api/v1/logs?level=loud", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("level"), "{}", r.text);
    let r = env.get("/logs?limit=99999", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let agent = env.login("agent1").await;
    assert_eq!(
        env.get("/logs", Some(&agent)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.get("/api/v1/logs", Some(&agent)).await.status,
        StatusCode::FORBIDDEN
    );
}

/// The queues page: for roles with `queues.view`; says so when no call center runs
/// (this board has none), and refuses a technician (no customer data).
#[tokio::test]
async fn queues_page_follows_the_roles_and_says_when_no_call_center_runs() {
    let env = env().await;
    let r = env.get("/queues", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login?next=/queues");
    let boss = env.login("boss").await;
    let r = env.get("/queues", Some(&boss)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains("No call center is configured"),
        "{}",
        r.text
    );
    assert!(r.text.contains("data-reload"), "the section stays live");
    let r = env.get("/api/v1/call-center", Some(&boss)).await;
    assert_eq!(r.json(), json!({ "configured": false }));
    let tech = env.login("tech").await;
    let r = env.get("/queues", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("queues.view"), "{}", r.text);
}

#[tokio::test]
async fn calls_page_and_api_show_live_calls_with_numbers_masked_per_role() {
    let env = env().await;
    let tech = env.login("tech").await;
    let boss = env.login("boss").await;
    let agent = env.login("agent1").await;
    env.custom_user(
        "night",
        &[
            (Resource::Diagnostics, Action::View),
            (Resource::Calls, Action::View),
        ],
    )
    .await;
    let night = env.login("night").await;

    // Nothing up yet.
    let r = env.get("/api/v1/calls/active", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["calls"], json!([]));
    assert!(r.json()["rtp_error"].is_null(), "{}", r.text);
    let page = env.get("/calls", Some(&tech)).await.text;
    assert!(page.contains("No call in progress."), "{page}");

    // A PSTN caller rings extension 101, which answers.
    let cid = line_proto::CallerId::new("13812345678", "ACME").expect("caller id");
    env.board_event(
        3,
        Event::RingDetected {
            caller_id: Some(cid),
        },
    )
    .await;
    let r = env.get("/api/v1/calls/active", Some(&tech)).await;
    let c = &r.json()["calls"][0];
    assert_eq!(c["phase"], "alerting", "{c}");
    assert_eq!(c["ringing"], json!(["FXS port 1"]));
    env.board_event(1, Event::OffHook).await;

    // The technician (no numbers.view): the customer's number masked, the
    // extension not.
    let r = env.get("/api/v1/calls/active", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c = &r.json()["calls"][0];
    assert_eq!(c["caller"], "138****5678", "{c}");
    assert_eq!(c["callee"], "101");
    assert_eq!(c["masked"], true);
    assert_eq!(c["phase"], "connected");
    assert_eq!(c["direction"], "inbound");
    assert_eq!(c["caller_via"], "FXO port 3 (PSTN)");
    assert_eq!(c["callee_via"], "FXS port 1");
    assert_eq!(c["legs"], json!([]), "analog only: no RTP legs");
    assert!(c["answered_at_ms"].is_i64());
    let page = env.get("/calls", Some(&tech)).await.text;
    assert!(page.contains("138****5678"), "{page}");
    assert!(
        !page.contains("13812345678"),
        "unmasked number leaked: {page}"
    );
    assert!(page.contains("FXO port 3 (PSTN)"), "{page}");
    assert!(page.contains("no RTP"), "{page}");
    // Without calls.view, no CDRs: the page says which permission.
    assert!(page.contains("Call records need the permission"), "{page}");
    // The admin holds numbers.view: unmasked.
    let r = env.get("/api/v1/calls/active", Some(&boss)).await;
    let c = &r.json()["calls"][0];
    assert_eq!(c["caller"], "13812345678", "{c}");
    assert_eq!(c["masked"], false);
    // An agent may not (diagnostics.view), on the API or the page, and it is audited.
    let r = env.get("/api/v1/calls/active", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("diagnostics.view"), "{}", r.text);
    let r = env.get("/calls", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.view"), "{}", r.text);
    assert_eq!(
        env.get("/api/v1/calls/active", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(env
        .audit()
        .iter()
        .any(|a| a.actor == "agent1" && a.result == "denied" && a.target == "calls"));

    // The call ends: its CDR is stored and listed, masked per role.
    env.board_event(1, Event::OnHook).await;
    let r = env.get("/api/v1/calls/active", Some(&tech)).await;
    assert_eq!(r.json()["calls"], json!([]));
    let page = env.get("/calls", Some(&night)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.text;
    assert!(page.contains("class=\"cdr\""), "{page}");
    assert!(page.contains("138****5678"), "{page}");
    assert!(!page.contains("13812345678"), "{page}");
    assert!(page.contains("answered"), "{page}");
    let page = env.get("/calls", Some(&boss)).await.text;
    assert!(page.contains("13812345678"), "{page}");
}

/// A CDR between two extensions, ended 30 s ago by the caller.
fn ended_cdr(call_id: &str) -> crate::cdr::Cdr {
    let now = system_clock_ms();
    crate::cdr::Cdr {
        call_id: call_id.to_owned(),
        direction: crate::cdr::Direction::Internal,
        caller: "101".to_owned(),
        caller_port: Some(1),
        callee: "102".to_owned(),
        callee_port: Some(2),
        started_at_ms: now - 60_000,
        answered_at_ms: Some(now - 58_000),
        ended_at_ms: now - 30_000,
        disposition: crate::cdr::Disposition::Answered,
        hangup_side: crate::cdr::HangupSide::Caller,
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

#[tokio::test]
async fn a_media_timeout_shows_on_the_calls_page_and_in_the_api() {
    let env = env().await;
    env.writer
        .insert_cdr(crate::cdr::Cdr {
            hangup_side: crate::cdr::HangupSide::System,
            hangup_cause: Some(crate::cdr::HangupCause::MediaTimeout),
            ..ended_cdr("call-silent-1")
        })
        .await
        .expect("cdr");
    env.writer
        .insert_cdr(ended_cdr("call-normal-1"))
        .await
        .expect("cdr");
    let boss = env.login("boss").await;
    let page = env.get("/calls", Some(&boss)).await.text;
    assert!(page.contains("system hung up: media timeout"), "{page}");
    assert!(page.contains("caller hung up)"), "{page}");
    let r = env.get("/api/v1/cdrs", Some(&boss)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json()["items"].as_array().cloned().expect("items");
    let by_id = |id: &str| {
        items
            .iter()
            .find(|c| c["call_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {items:?}"))
    };
    assert_eq!(by_id("call-silent-1")["hangup_cause"], "media_timeout");
    assert_eq!(by_id("call-silent-1")["hangup_side"], "system");
    assert!(by_id("call-normal-1").get("hangup_cause").is_none());
}

/// A recorded call in the store: a CDR between two extensions and its WAV registered
/// under the call id; the recording's row id.
async fn recorded_call(env: &Env, call_id: &str) -> i64 {
    let now = system_clock_ms();
    env.writer
        .insert_cdr(ended_cdr(call_id))
        .await
        .expect("cdr");
    let db = env._dir.path().join("branchline.db");
    let dir = env._dir.path().join("recordings");
    std::fs::create_dir_all(&dir).expect("dir");
    let data_len = 50 * crate::recorder::wav::FRAME_BYTES;
    let mut bytes = crate::recorder::wav::header(data_len).to_vec();
    bytes.resize(bytes.len() + data_len as usize, 0);
    let path = dir.join(format!("rec-{call_id}.wav"));
    std::fs::write(&path, &bytes).expect("file");
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let conn = rusqlite::Connection::open(&db).expect("open");
    crate::recorder::index::register_tx(
        &conn,
        &db,
        &crate::recorder::index::Finished {
            path,
            call_id: call_id.to_owned(),
            started_at_ms: now - 58_000,
            data_len,
            port: Some(1),
            interrupted: false,
            sha256,
            size: bytes.len() as u64,
        },
        now,
    )
    .expect("register")
    .id
}

#[tokio::test]
async fn the_calls_page_shows_a_recording_as_each_role_may_use_it() {
    let env = env().await;
    let id = recorded_call(&env, "call-rec-1").await;
    let src = format!("src=\"/api/v1/recordings/{id}/audio\"");
    let link = format!("/api/v1/recordings/{id}/audio?download=true");
    env.custom_user(
        "viewer",
        &[
            (Resource::Diagnostics, Action::View),
            (Resource::Calls, Action::View),
            (Resource::Recordings, Action::View),
        ],
    )
    .await;
    env.custom_user(
        "qa01",
        &[
            (Resource::Calls, Action::View),
            (Resource::Recordings, Action::View),
            (Resource::Recordings, Action::Listen),
        ],
    )
    .await;
    // The admin: player and download link.
    let boss = env.login("boss").await;
    let page = env.get("/calls", Some(&boss)).await.text;
    assert!(page.contains(&src), "{page}");
    assert!(page.contains("preload=\"none\""), "{page}");
    assert!(page.contains(&link), "{page}");
    // Listen without download, and without diagnostics.view: the page opens with the
    // player, no download link, no calls in progress.
    let qa = env.login("qa01").await;
    let r = env.get("/calls", Some(&qa)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains(&src), "{}", r.text);
    assert!(!r.text.contains(&link), "{}", r.text);
    assert!(
        r.text
            .contains("Calls in progress need the permission diagnostics.view."),
        "{}",
        r.text
    );
    // recordings.view alone: "recorded", nothing to play.
    let viewer = env.login("viewer").await;
    let page = env.get("/calls", Some(&viewer)).await.text;
    assert!(page.contains("recorded"), "{page}");
    assert!(!page.contains("<audio"), "{page}");
    assert!(!page.contains("/api/v1/recordings/"), "{page}");
    // The technician (no calls.view, no recordings): not a word of it.
    let tech = env.login("tech").await;
    let page = env.get("/calls", Some(&tech)).await.text;
    assert!(!page.contains("recorded"), "{page}");
    assert!(!page.contains("<audio"), "{page}");
    // The agent: 403 naming diagnostics.view, as before.
    let agent = env.login("agent1").await;
    let r = env.get("/calls", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.view"), "{}", r.text);
    // The player's source serves the file to the admin, with ranges.
    let r = env
        .get(&format!("/api/v1/recordings/{id}/audio"), Some(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(r.headers[header::ACCEPT_RANGES], "bytes");
}

#[tokio::test]
async fn sip_page_and_api_say_not_configured_without_a_sip_endpoint() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    let r = env.get("/api/v1/sip", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({ "configured": false }));
    let r = env.get("/sip", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Not configured"), "{}", r.text);
    assert!(r.text.contains("[sip]"), "{}", r.text);
    assert_security_headers(&r, "/sip");
    let r = env.get("/api/v1/sip", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env.get("/sip", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("diagnostics.view"), "{}", r.text);
    let r = env.get("/sip", None).await;
    assert_eq!(r.location(), "/login?next=/sip");
}

#[tokio::test]
async fn sync_page_shows_the_backlog_and_force_needs_csrf_and_operate() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    env.custom_user("viewer", &[(Resource::Sync, Action::View)])
        .await;
    let viewer = env.login("viewer").await;

    let r = env.get("/sync", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Users, audit rows and logins wait in the outbox: a real backlog.
    assert!(r.text.contains("Outbox backlog"), "{}", r.text);
    let depth = {
        let reader = env.accounts.reader().expect("reader");
        crate::sync::status::report_from_store(&reader, None, system_clock_ms())
            .expect("report")
            .backlog
            .depth
    };
    assert!(depth > 0);
    assert!(
        r.text.contains(&format!("{depth} records")),
        "{depth}: {}",
        r.text
    );
    assert!(r.text.contains("not configured"), "{}", r.text);
    // No [hq]: no form to force with, and the page says why.
    assert!(!r.text.contains("action=\"/sync/force\""), "{}", r.text);
    assert!(r.text.contains("nothing to force"), "{}", r.text);
    // sync.view without sync.operate: no form, the permission named.
    let r = env.get("/sync", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text.contains("action=\"/sync/force\""), "{}", r.text);
    assert!(r.text.contains("sync.operate"), "{}", r.text);
    // An agent: 403 on the page.
    let r = env.get("/sync", Some(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("sync.view"), "{}", r.text);

    let forced = |env: &Env| {
        env.audit()
            .into_iter()
            .filter(|a| a.action == "force_sync")
            .count()
    };
    // Without the form's token, or with another session's: refused, nothing forced.
    let r = env.post_form("/sync/force", &tech, "csrf=").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .post_form("/sync/force", &tech, &format!("csrf={}", agent.csrf))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(forced(&env), 0);
    // Without sync.operate: 403 naming it.
    let r = env
        .post_form("/sync/force", &viewer, &format!("csrf={}", viewer.csrf))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("sync.operate"), "{}", r.text);
    assert_eq!(forced(&env), 0);
    // The technician's form: sync is not configured on this box, so 409 with the
    // reason, audited as a failed force.
    let r = env
        .post_form("/sync/force", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("not configured"), "{}", r.text);
    assert!(r.text.contains("Back to sync"), "{}", r.text);
    let rows: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|a| a.action == "force_sync")
        .map(|a| (a.actor, a.result))
        .collect();
    assert_eq!(rows, vec![("tech".to_owned(), "failed".to_owned())]);
}

/// An open SSE response body, read event by event.
struct SseBody {
    body: Body,
    text: String,
}

impl SseBody {
    /// The next event (name, JSON data), skipping comments; a generous bound only
    /// stops a hang.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let name = block.lines().find_map(|l| l.strip_prefix("event:"));
                let data = block.lines().find_map(|l| l.strip_prefix("data:"));
                if let (Some(n), Some(d)) = (name, data) {
                    return (
                        n.trim().to_owned(),
                        serde_json::from_str(d.trim()).expect("json"),
                    );
                }
                continue;
            }
            let frame = tokio::time::timeout(std::time::Duration::from_secs(30), self.body.frame())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("frame");
            if let Some(data) = frame.data_ref() {
                self.text.push_str(&String::from_utf8_lossy(data));
            }
        }
    }
}

impl Env {
    /// Opens `GET uri` as `b`: the status, and the body when it is a stream.
    async fn stream(&self, uri: &str, b: &Browser) -> (StatusCode, SseBody) {
        let mut req = Request::builder()
            .uri(uri)
            .header(header::COOKIE, &b.cookie)
            .body(Body::empty())
            .expect("request");
        let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        (
            status,
            SseBody {
                body: resp.into_body(),
                text: String::new(),
            },
        )
    }

    async fn user_with(
        &self,
        name: &str,
        role: &str,
        agent: Option<&str>,
        ext: Option<&str>,
    ) -> crate::rbac::UserId {
        self.accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    enabled: true,
                    roles: vec![role.to_owned()],
                    agent_id: agent.map(str::to_owned),
                    pin: agent.map(|_| "4821".to_owned()),
                    extension: ext.map(str::to_owned),
                    ..NewUser::default()
                },
                system_clock_ms(),
            )
            .await
            .expect("user")
            .id
    }
}

fn ringing(agent: &str, queue: &str, n: i64) -> crate::screen_pop::DeskEvent {
    crate::screen_pop::DeskEvent::Call(crate::call::AgentCallEvent {
        agent: agent.parse().expect("agent"),
        call_id: format!("c-{n}"),
        queue: Some(queue.to_owned()),
        caller_number: "13812345678".to_owned(),
        caller_name: "ACME".to_owned(),
        extension: Some("101".to_owned()),
        since_ms: 1_000,
        at_ms: 1_000 + n,
        kind: crate::call::AgentCallKind::Ringing,
        transferred_from: None,
    })
}

#[tokio::test]
async fn the_event_stream_follows_the_agent_checks_scope_per_event_and_masks_per_role() {
    let env = env().await;
    let alice = env
        .user_with("alice", "agent", Some("100"), Some("101"))
        .await;
    env.user_with("carol", "agent", Some("300"), None).await;
    rusqlite::Connection::open(env._dir.path().join("branchline.db"))
        .and_then(|db| {
            db.execute(
                "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 15000, 500)",
                [],
            )
        })
        .expect("queue row");
    let sup_id = env
        .accounts
        .reader()
        .expect("reader")
        .connection()
        .query_row("SELECT id FROM users WHERE username = 'sup'", [], |r| {
            r.get(0)
        })
        .map(crate::rbac::UserId)
        .expect("sup");
    env.accounts
        .create_group(
            &Actor::system(),
            crate::accounts::GroupSpec {
                name: "floor".into(),
                description: String::new(),
                members: vec![
                    crate::accounts::GroupMember {
                        user_id: alice,
                        is_group_admin: false,
                    },
                    crate::accounts::GroupMember {
                        user_id: sup_id,
                        is_group_admin: true,
                    },
                ],
            },
            system_clock_ms(),
        )
        .await
        .expect("group");
    let (a, s, t, other) = (
        env.login("alice").await,
        env.login("sup").await,
        env.login("tech").await,
        env.login("agent1").await,
    );

    // Refusals: no agent ID, another's agent without the grant, bad parameters.
    let (status, _) = env.stream("/api/v1/events", &t).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env.stream("/api/v1/events?agent=100", &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let r = env
        .get("/api/v1/events?agent=100&queue=sales", Some(&s))
        .await;
    assert_eq!(r.json()["problems"][0]["field"], "queue", "{}", r.text);
    let r = env.get("/api/v1/events?agent=x", Some(&s)).await;
    assert_eq!(r.json()["problems"][0]["field"], "agent", "{}", r.text);
    let r = env.get("/api/v1/events?agent=999", Some(&s)).await;
    assert_eq!(r.json()["problems"][0]["field"], "agent", "{}", r.text);
    let r = env.get("/api/v1/events?since=1", Some(&s)).await;
    assert_eq!(r.json()["problems"][0]["field"], "since", "{}", r.text);

    let (status, mut alice_own) = env.stream("/api/v1/events", &a).await;
    assert_eq!(status, StatusCode::OK);
    let (status, mut sup_alice) = env.stream("/api/v1/events?agent=100", &s).await;
    assert_eq!(status, StatusCode::OK);

    // Carol's call is nobody's business here; Alice's pops on both streams: masked
    // for Alice (no numbers.view), unmasked for her supervisor.
    env.events.publish(ringing("300", "sales", 1));
    env.events.publish(ringing("100", "sales", 2));
    let (name, e) = alice_own.next().await;
    assert_eq!(name, "ringing");
    assert_eq!(e["call_id"], "c-2", "{e}");
    assert_eq!(
        e["caller"],
        json!({ "number": "138****5678", "name": "ACME", "masked": true })
    );
    assert_eq!(e["contact"], Value::Null);
    assert_eq!(
        (e["queue"].as_str(), e["since_ms"].as_i64()),
        (Some("sales"), Some(1_000))
    );
    let (_, e) = sup_alice.next().await;
    assert_eq!(e["caller"]["number"], "13812345678", "{e}");
    assert_eq!(e["caller"]["masked"], false);

    // A lagging stream is told how many events it missed, then goes on.
    for n in 0..(crate::screen_pop::EVENT_BUFFER as i64 + 10) {
        env.events.publish(ringing("100", "sales", 100 + n));
    }
    let (name, e) = alice_own.next().await;
    assert_eq!(
        (name.as_str(), e["missed"].as_u64()),
        ("lagged", Some(10)),
        "{e}"
    );
    let (_, e) = alice_own.next().await;
    assert_eq!(e["call_id"], "c-110", "{e}");

    // The queue stream (queues.view) shows only the agents the supervisor may see.
    let (status, mut sup_queue) = env.stream("/api/v1/events?queue=sales", &s).await;
    assert_eq!(status, StatusCode::OK);
    env.events.publish(ringing("300", "sales", 900));
    env.events.publish(ringing("100", "support", 901));
    env.events.publish(ringing("100", "sales", 902));
    let (_, e) = sup_queue.next().await;
    assert_eq!(e["call_id"], "c-902", "{e}");
}

#[tokio::test]
async fn click_to_call_rings_the_users_phone_needs_the_grant_and_is_audited() {
    let env = env().await;
    env.user_with("alice", "agent", Some("100"), Some("101"))
        .await;
    let (a, boss, nobody) = (
        env.login("alice").await,
        env.login("boss").await,
        env.login("agent1").await,
    );
    let post = |b: &Browser, body: Value| {
        let b = b.clone();
        let env = &env;
        async move {
            let mut req = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/calls")
                .header(header::COOKIE, &b.cookie)
                .header(header::CONTENT_TYPE, "application/json")
                .header(api::CSRF_HEADER, &b.csrf)
                .body(Body::from(body.to_string()))
                .expect("request");
            let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
            req.extensions_mut().insert(ConnectInfo(addr));
            let resp = env.router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    // Bad input names the field and rings nothing.
    for body in [
        json!({}),
        json!({ "to": "" }),
        json!({ "to": "10a" }),
        json!({ "to": "555" }),
    ] {
        let (status, r) = post(&a, body.clone()).await;
        assert_eq!(
            (status, r["problems"][0]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("to")),
            "{body}: {r}"
        );
    }
    let (status, r) = post(&a, json!({ "to": "102", "extra": 1 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    let (status, r) = post(&a, json!({ "to": "102", "from": "x" })).await;
    assert_eq!(r["problems"][0]["field"], "from", "{status} {r}");
    assert_eq!(
        env.calls.lock().expect("calls").timeout(),
        None,
        "nothing rings"
    );
    // Alice's own phone (her extension, 101) rings; a second click finds it busy.
    let (status, r) = post(&a, json!({ "to": "102" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["from"], "101");
    assert!(
        r["call_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("web-")),
        "{r}"
    );
    let (status, _) = post(&a, json!({ "to": "102" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Another's phone: not for an agent (own scope only), fine for the admin; an
    // unknown extension is a 404; no phone at all is a 409.
    let (status, _) = post(&a, json!({ "to": "101", "from": "102" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, r) = post(&boss, json!({ "to": "101", "from": "150" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{r}");
    let (status, r) = post(&boss, json!({ "to": "101", "from": "102" })).await;
    assert_eq!(
        (status, r["from"].as_str()),
        (StatusCode::ACCEPTED, Some("102")),
        "{r}"
    );
    let (status, r) = post(&nobody, json!({ "to": "101" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    // Without the CSRF token: refused before anything.
    let mut no_csrf = a.clone();
    no_csrf.csrf = "wrong".into();
    let (status, _) = post(&no_csrf, json!({ "to": "102" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let audit: Vec<(String, String, String)> = env
        .audit()
        .into_iter()
        .filter(|r| r.action == "click_to_call")
        .map(|r| (r.actor, r.target, r.result.to_string()))
        .collect();
    assert_eq!(
        audit,
        [
            ("alice".into(), "extension 101".into(), "failed".into()),
            ("alice".into(), "extension 101".into(), "ok".into()),
            ("alice".into(), "extension 101".into(), "failed".into()),
            ("boss".into(), "extension 150".into(), "failed".into()),
            ("boss".into(), "extension 102".into(), "ok".into()),
            ("agent1".into(), "own phone".into(), "failed".into()),
        ]
    );
}

#[tokio::test]
async fn a_click_to_a_route_the_phone_may_not_use_is_403_naming_route_and_permission() {
    let env = env().await;
    env.user_with("alice", "agent", Some("100"), Some("101"))
        .await;
    let a = env.login("alice").await;
    {
        // HQ's `00` needs `international`; Alice's phone (101) does not hold it.
        let via = vec!["fxo".to_owned()];
        let mut calls = env.calls.lock().expect("calls");
        calls.set_dial_routes(crate::call::DialRoutes::new(vec![
            crate::call::DialRoute::new("default", "", &via, None).expect("route"),
            crate::call::DialRoute::new("intl", "00", &via, Some("international".into()))
                .expect("route"),
        ]));
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/calls")
        .header(header::COOKIE, &a.cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .header(api::CSRF_HEADER, &a.csrf)
        .body(Body::from(json!({ "to": "90049301234" }).to_string()))
        .expect("request");
    let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    req.extensions_mut().insert(ConnectInfo(addr));
    let resp = env.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let r: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(
        (r["route"].as_str(), r["permission"].as_str()),
        (Some("intl"), Some("international")),
        "{r}"
    );
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("\"intl\"")),
        "{r}"
    );
    assert_eq!(
        env.calls.lock().expect("calls").timeout(),
        None,
        "nothing rings"
    );
    let audit: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|r| r.action == "click_to_call")
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].result, "failed");
    assert!(
        audit[0].detail.contains("intl") && audit[0].detail.contains("international"),
        "{:?}",
        audit[0].detail
    );
}

mod charts;
mod route_matrix;
mod tools;

#[tokio::test]
async fn leads_an_agent_takes_pop_on_their_desktop_masked_and_nowhere_else() {
    use crate::campaign::store as campaigns;
    let env = env().await;
    let alice = env
        .user_with("alice", "agent", Some("100"), Some("101"))
        .await;
    env.user_with("carol", "agent", Some("300"), None).await;
    let path = env._dir.path().join("branchline.db");
    let db = rusqlite::Connection::open(&path).expect("db");
    db.execute("INSERT INTO groups (id, name) VALUES (7, 'sales')", [])
        .expect("group");
    db.execute(
        "INSERT INTO group_members (group_id, user_id) VALUES (7, ?1)",
        [alice.0],
    )
    .expect("member");
    let list = campaigns::create_list(
        &db,
        &path,
        &campaigns::LeadListInput { name: "Nov".into() },
        "test",
        0,
    )
    .expect("list");
    crate::campaign::csv::import(&db, &path, list.id, "name,numbers\nAnn,13812345678\n", 0)
        .expect("import");
    let input: campaigns::CampaignInput = serde_json::from_value(json!({
        "name": "Winter", "list_id": list.id, "group_id": 7, "mode": "preview",
        "hours_start": "00:00", "hours_end": "24:00",
        "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "max_attempts": 2, "busy_retry_s": 60,
        "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 20,
    }))
    .expect("input");
    let c = campaigns::create_campaign(&db, &path, &input.check().expect("valid"), "test", 0)
        .expect("campaign");
    campaigns::set_state(&db, &path, c.id, crate::campaign::CampaignState::Running, 0)
        .expect("start");

    let (a, carol) = (env.login("alice").await, env.login("carol").await);
    let (status, mut alice_own) = env.stream("/api/v1/events", &a).await;
    assert_eq!(status, StatusCode::OK);
    let (status, mut carol_own) = env.stream("/api/v1/events", &carol).await;
    assert_eq!(status, StatusCode::OK);
    let r = env
        .send(
            Method::POST,
            &format!("/api/v1/campaigns/{}/next", c.id),
            &[a.cookie.as_str()],
            &[("x-csrf-token", a.csrf.as_str())],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (name, e) = alice_own.next().await;
    assert_eq!(name, "leads");
    assert_eq!(e["campaign"], c.id, "{e}");
    assert_eq!(e["agent"], "100");
    assert_eq!(e["leads"][0]["name"], "Ann", "{e}");
    assert_eq!(e["leads"][0]["numbers"], json!(["138****5678"]), "{e}");
    assert_eq!(e["leads"][0]["masked"], true);
    // Carol's stream never saw it: her next event is her own call.
    env.events.publish(ringing("300", "sales", 1));
    let (name, _) = carol_own.next().await;
    assert_eq!(name, "ringing");
}

#[tokio::test]
async fn reboot_needs_operate_csrf_and_a_confirm_refuses_calls_unless_forced_and_is_audited() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    env.custom_user("viewer", &[(Resource::SystemConfig, Action::View)])
        .await;
    let viewer = env.login("viewer").await;
    let reboots = || env.reboots.lock().unwrap().clone();

    // The system page offers the form to those who may, and says why to others.
    let page = env.get("/system", Some(&tech)).await.text;
    assert!(page.contains("action=\"/system/reboot\""), "{page}");
    // The temperature card: the board's sensors, or a plain "not reported".
    assert!(page.contains("id=\"temperature\""), "{page}");
    assert!(
        page.contains(" °C") || page.contains("Not reported by this board"),
        "{page}"
    );
    let page = env.get("/system", Some(&viewer)).await.text;
    assert!(!page.contains("action=\"/system/reboot\""), "{page}");
    assert!(page.contains("system_config.operate"), "{page}");

    // No CSRF token, another session's token, or no permission: refused, no reboot.
    for (who, csrf) in [(&tech, ""), (&tech, agent.csrf.as_str())] {
        let r = env
            .post_form("/system/reboot", who, &format!("csrf={csrf}&confirm=yes"))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    for who in [&agent, &viewer] {
        let r = env
            .post_form(
                "/system/reboot",
                who,
                &format!("csrf={}&confirm=yes", who.csrf),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert!(r.text.contains("system_config.operate"), "{}", r.text);
        let r = env
            .send(
                Method::POST,
                "/api/v1/system/reboot",
                &[&who.cookie],
                &[("x-csrf-token", who.csrf.as_str())],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    let r = env
        .send(
            Method::POST,
            "/api/v1/system/reboot",
            &[&tech.cookie],
            &[],
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "API without the CSRF header"
    );
    assert!(reboots().is_empty());

    // The button asks to confirm first: no reboot yet.
    let r = env
        .post_form("/system/reboot", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text.contains("Reboot the box?") && r.text.contains("No call is in progress."),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("name=\"confirm\" value=\"yes\""),
        "{}",
        r.text
    );
    assert!(reboots().is_empty());

    // A call up (101 dials 102): the confirmed form and the API are refused with 409
    // unless forced.
    env.board_event(1, Event::OffHook).await;
    for d in *b"102" {
        env.board_event(1, Event::Digit(d)).await;
    }
    let up = env.calls.lock().unwrap().active_calls();
    assert!(up > 0, "a call rings 102");
    // The main loop publishes the count the confirm page shows.
    {
        let mut p = env.publisher.lock().unwrap();
        p.set_calls(up, None);
        p.publish(system_clock_ms());
    }
    let r = env
        .post_form("/system/reboot", &tech, &format!("csrf={}", tech.csrf))
        .await;
    assert!(
        r.text.contains("call(s) in progress") && r.text.contains("name=\"force\""),
        "{}",
        r.text
    );
    let r = env
        .post_form(
            "/system/reboot",
            &tech,
            &format!("csrf={}&confirm=yes", tech.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("Not rebooted"), "{}", r.text);
    let csrf = [("x-csrf-token", tech.csrf.as_str())];
    let r = env
        .send(
            Method::POST,
            "/api/v1/system/reboot",
            &[&tech.cookie],
            &csrf,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.json()["error"].as_str().unwrap().contains("in progress"),
        "{}",
        r.text
    );
    assert!(reboots().is_empty());
    // A bad body: 400, nothing done.
    let json_headers = [
        ("x-csrf-token", tech.csrf.as_str()),
        ("content-type", "application/json"),
    ];
    let r = env
        .send(
            Method::POST,
            "/api/v1/system/reboot",
            &[&tech.cookie],
            &json_headers,
            Some(r#"{"force": "yes"}"#.to_owned()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(reboots().is_empty());

    // Forced from the confirm page: rebooting, the calls cut.
    let r = env
        .post_form(
            "/system/reboot",
            &tech,
            &format!("csrf={}&confirm=yes&force=1", tech.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(r.text.contains("The box is rebooting"), "{}", r.text);
    assert_eq!(reboots(), vec![up]);

    // The API with force, as JSON.
    let r = env
        .send(
            Method::POST,
            "/api/v1/system/reboot",
            &[&tech.cookie],
            &json_headers,
            Some(r#"{"force": true}"#.to_owned()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json(), json!({ "rebooting": true, "calls_ended": up }));

    let rows: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|a| a.action == "reboot")
        .map(|a| (a.actor, a.target, a.result))
        .collect();
    let row = |result: &str| ("tech".to_owned(), "box".to_owned(), result.to_owned());
    assert_eq!(
        rows,
        vec![row("failed"), row("failed"), row("ok"), row("ok")]
    );
}

#[test]
fn a_reboot_waits_for_calls_unless_forced() {
    use super::status::{reboot_decision, RebootError};
    assert_eq!(reboot_decision(0, false), Ok(0));
    assert_eq!(reboot_decision(0, true), Ok(0));
    assert_eq!(
        reboot_decision(2, false),
        Err(RebootError::CallsInProgress { calls: 2 })
    );
    assert_eq!(reboot_decision(2, true), Ok(2));
}

#[test]
fn thermal_zones_are_read_in_zone_order_and_broken_sensors_left_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let zone = |name: &str, kind: Option<&str>, temp: Option<&str>| {
        let z = dir.path().join(name);
        std::fs::create_dir(&z).expect("zone");
        if let Some(k) = kind {
            std::fs::write(z.join("type"), format!("{k}\n")).expect("type");
        }
        if let Some(t) = temp {
            std::fs::write(z.join("temp"), format!("{t}\n")).expect("temp");
        }
    };
    zone("thermal_zone10", Some("gpu-thermal"), Some("51000"));
    zone("thermal_zone2", None, Some("-5500"));
    zone("thermal_zone0", Some("cpu-thermal"), Some("47250"));
    zone("thermal_zone3", Some("broken"), Some("error"));
    zone("thermal_zone4", Some("absent"), None);
    zone("cooling_device0", Some("fan"), Some("1"));
    let got = super::system::thermal_zones(dir.path());
    let names: Vec<_> = got.iter().map(|t| (t.name.as_str(), t.celsius)).collect();
    assert_eq!(
        names,
        [
            ("cpu-thermal", 47.25),
            ("thermal_zone2", -5.5),
            ("gpu-thermal", 51.0)
        ]
    );
    // A board without the thermal framework: nothing, and the page says so.
    assert!(super::system::thermal_zones(&dir.path().join("missing")).is_empty());
}

#[tokio::test]
async fn the_status_json_carries_the_dashboards_alarms_and_disk() {
    let env = env().await;
    let tech = env.login("tech").await;
    {
        let mut p = env.publisher.lock().unwrap();
        p.on_event(
            system_clock_ms(),
            3,
            &Event::Fault(line_proto::FaultKind::NoLineVoltage),
        );
        p.publish(system_clock_ms());
    }
    let r = env.get("/api/v1/status", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = r.json();
    let alarms: Vec<&str> = s["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        alarms.iter().any(|a| a.starts_with("Port 3:")),
        "the fault is an alarm: {s}"
    );
    // The same list as the dashboard's.
    let page = env.get("/dashboard", Some(&tech)).await.text;
    for a in &alarms {
        assert!(
            page.contains(&maud::html! { (a) }.into_string()),
            "{a} on the dashboard"
        );
    }
    let disk = &s["disk"];
    assert!(disk["total_bytes"].as_u64().is_some_and(|t| t > 0), "{s}");
    assert!(
        disk["used_percent"].as_u64().is_some_and(|p| p <= 100),
        "{s}"
    );
    assert!(
        page.contains(&format!("{}% used", disk["used_percent"])),
        "{page}"
    );
    // The ports are still there, unchanged.
    assert_eq!(s["ports"][2]["kind"], "fxo");
}

#[tokio::test]
async fn system_json_and_page_without_slots_say_not_configured_and_follow_the_roles() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    env.custom_user("diag", &[(Resource::Diagnostics, Action::View)])
        .await;
    let diag = env.login("diag").await;
    let r = env.get("/api/v1/system", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = r.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["board"], "sim");
    assert_eq!(s["slots"]["configured"], false, "{s}");
    assert_eq!(s["slots"]["slots"], json!([]), "no made-up slots: {s}");
    assert!(s["uptime_ms"].as_i64().is_some_and(|u| u >= 0), "{s}");
    assert!(s["memory"]["total_bytes"].as_u64().is_some(), "{s}");
    assert!(s["cpu"]["cpus"].as_u64().is_some_and(|n| n > 0), "{s}");
    assert!(
        s["cpu"]["load"].as_array().is_some_and(|l| l.len() == 3),
        "{s}"
    );
    assert!(s["disk"]["total_bytes"].as_u64().is_some(), "{s}");
    assert!(s["temperatures"].is_array(), "{s}");
    let page = env.get("/system", Some(&tech)).await.text;
    assert!(page.contains("A/B slots"), "{page}");
    assert!(
        page.contains("Not configured: this box has no A/B slot layout"),
        "{page}"
    );
    // Denied like the page: 403 naming the permission, and audited.
    for who in [&agent, &diag] {
        let r = env.get("/api/v1/system", Some(who)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert!(r.text.contains("system_config.view"), "{}", r.text);
        assert_eq!(
            env.get("/system", Some(who)).await.status,
            StatusCode::FORBIDDEN
        );
    }
    assert!(env
        .audit()
        .iter()
        .any(|a| a.actor == "diag" && a.result == "denied" && a.target == "system"));
    assert_eq!(
        env.get("/api/v1/system", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_system_page_and_json_show_the_ab_slots_from_the_updaters_backend() {
    use branchline_image::slot::{SlotId, SlotInfo, SlotState, SlotStatus};
    use branchline_image::store::{DirSlots, SlotStore};
    let env = env_with_slots(&|dir: &std::path::Path| crate::config::SlotBackend::Dir {
        root: dir.join("slots"),
    })
    .await;
    let tech = env.login("tech").await;
    let root = env._dir.path().join("slots");
    // Before the first install: both slots empty, A the default active one.
    let s = env.get("/api/v1/system", Some(&tech)).await.json();
    assert_eq!(s["slots"]["configured"], true, "{s}");
    assert_eq!(s["slots"]["backend"], "dir");
    assert_eq!(s["slots"]["slots"][0]["state"], "empty", "{s}");
    assert_eq!(s["slots"]["slots"][1]["state"], "empty", "{s}");

    // 2.0.0 good in A (running), 2.1.0 in B rolled back (bad), an update record.
    let v = |t: &str| t.parse::<branchline_image::version::Version>().expect("v");
    let state = SlotState {
        active: SlotId::A,
        a: SlotInfo {
            status: SlotStatus::Good,
            version: Some(v("2.0.0")),
            min_version: Some(v("1.0.0")),
        },
        b: SlotInfo {
            status: SlotStatus::Bad,
            version: Some(v("2.1.0")),
            min_version: Some(v("1.0.0")),
        },
        floor: Some(v("1.0.0")),
    };
    DirSlots::new(&root).save(&state).expect("save");
    let update = env._dir.path().join(crate::updater::io::UPDATE_DIR);
    std::fs::create_dir_all(&update).expect("dir");
    crate::updater::trial::save(
        &update,
        &crate::updater::trial::TrialRecord {
            rollout: "spring-7".into(),
            version: "2.1.0".into(),
            slot: SlotId::B,
            failed: Some("sip: listener not bound".into()),
        },
    )
    .expect("record");

    let s = env.get("/api/v1/system", Some(&tech)).await.json();
    let slots = &s["slots"];
    assert_eq!(slots["booted"], "A", "{s}");
    assert_eq!(slots["floor"], "1.0.0");
    assert_eq!(slots["slots"][0]["version"], "2.0.0");
    assert_eq!(slots["slots"][0]["state"], "good");
    assert_eq!(slots["slots"][0]["booted"], true);
    assert_eq!(slots["slots"][1]["state"], "bad");
    assert_eq!(slots["slots"][1]["booted"], false);
    assert_eq!(slots["last_update"]["outcome"], "rolled back", "{s}");
    assert!(slots["last_update"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("sip: listener not bound")));

    let page = env.get("/system", Some(&tech)).await.text;
    for want in [
        "2.0.0",
        "2.1.0",
        "<span class=\"pill ok\">good</span>",
        "<span class=\"pill bad\">bad</span>",
        "<strong>booted</strong>",
        "spring-7",
        "rolled back",
        "sip: listener not bound",
    ] {
        assert!(page.contains(want), "{want}: {page}");
    }
    assert!(!page.contains("Not configured: this box"), "{page}");

    // A state file that does not parse is shown as an error, never as empty slots.
    std::fs::write(root.join("state.json"), "{ broken").expect("write");
    let s = env.get("/api/v1/system", Some(&tech)).await.json();
    assert!(
        s["slots"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("state.json")),
        "{s}"
    );
    assert_eq!(s["slots"]["slots"], json!([]));
    let page = env.get("/system", Some(&tech)).await.text;
    assert!(page.contains("Slot state not readable"), "{page}");
}

#[tokio::test]
async fn the_sync_page_says_the_wan_is_not_configured_without_sync() {
    let env = env().await;
    let tech = env.login("tech").await;
    let page = env.get("/sync", Some(&tech)).await.text;
    assert!(page.contains("id=\"wan\""), "{page}");
    assert!(page.contains("Not configured: nothing to watch"), "{page}");
}
