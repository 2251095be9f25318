//! The route matrix of the web page (issue 8): every page, form and static file the
//! site's router serves ([`build`]), asked by nobody and by a user of each built-in
//! role, against an expectation WRITTEN OUT here from the documented policy
//! (`firmware/roles/builtin.toml`, the permissions the README and `web`'s module docs
//! give each page), not computed with the server's authorizer. A route served but
//! missing from [`ROWS`] fails. The JSON API's own matrix is `api::tests::route_matrix`.
//!
//! - **Allowed**: not 401/403, never 5xx, not sent to the login page.
//! - **Denied**: the 403 page ("Access denied") naming the permission, one audit row
//!   `denied` by that user, and nothing else in the store changed.
//! - **Nobody**: a redirect to `/login?next=<path>` (public routes answer).
//! - **CSRF**: every form but the login (which has its own double-submit token), by
//!   the admin without the form's token and with a wrong one: the 403 page, the store
//!   unchanged row for row, no ring test started and no reboot accepted.
//!
//! Each row runs on a fresh box, and a form gives each allowed role a box of its own.
//! The test main loop (`env`) plays the board; the tools get input they refuse
//! before running anything (count 0, a bad host or URI, 0 seconds), so no command or
//! capture runs.

use super::*;

const ADMIN: &str = "admin";
const SUP: &str = "supervisor";
const AGENT: &str = "agent";
const QI: &str = "quality_inspector";
const FIN: &str = "finance";
const TECH: &str = "technician";
const INST: &str = "installer";
/// Every role: routes that only need a session.
const ALL: &[&str] = &[ADMIN, SUP, AGENT, QI, FIN, TECH, INST];
/// The built-in roles and the user holding each (`env` makes tech, agent1, boss, sup
/// and the installer; the matrix adds quinn and fay).
const ROLES: [(&str, &str); 7] = [
    (ADMIN, "boss"),
    (SUP, "sup"),
    (AGENT, "agent1"),
    (QI, "quinn"),
    (FIN, "fay"),
    (TECH, "tech"),
    (INST, "installer"),
];
/// Tables a denial may write to: the audit row, its chain head and its outbox row.
const AUDIT_TABLES: &[&str] = &["audit_log", "audit_head", "outbox", "sqlite_sequence"];

/// Who may use a route.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Anyone, without a session.
    Public,
    /// These roles; everyone else gets the 403 page naming the permission.
    Roles(&'static [&'static str], &'static str),
}
use Who::{Public, Roles};

/// A form body; `{csrf}` is the session's token.
#[derive(Debug, Clone, Copy)]
enum Payload {
    None,
    Form(&'static str),
    /// A multipart upload with the token and a `photo` field that is no photo.
    Photo,
}
use Payload::{Form as F, Photo};
const NO: Payload = Payload::None;

struct Row {
    method: Method,
    path: &'static str,
    uri: &'static str,
    payload: Payload,
    who: Who,
}

const fn row(
    method: Method,
    path: &'static str,
    uri: &'static str,
    payload: Payload,
    who: Who,
) -> Row {
    Row {
        method,
        path,
        uri,
        payload,
        who,
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;

/// The expectation, route by route. What the roles hold (`builtin.toml`):
/// diagnostics view: admin, technician, installer; diagnostics operate and download:
/// admin, technician; system_config view and operate, sync view and operate: admin,
/// technician; queues view: admin, supervisor; recordings view: admin, supervisor
/// (group), quality inspector; provisioning view and operate: admin, installer.
const ROWS: &[Row] = &[
    row(GET, "/", "/", NO, Public),
    row(GET, "/login", "/login", NO, Public),
    // The login's CSRF is its own double-submit cookie (`web::tests`); here the form
    // without it is refused, which is still an answer, not a denial.
    row(
        POST,
        "/login",
        "/login",
        F("username=boss&password=x&csrf=x"),
        Public,
    ),
    row(GET, "/static/app.css", "/static/app.css", NO, Public),
    row(GET, "/static/app.js", "/static/app.js", NO, Public),
    row(POST, "/logout", "/logout", F("csrf={csrf}"), Roles(ALL, "")),
    row(
        GET,
        "/dashboard",
        "/dashboard",
        NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view"),
    ),
    row(
        GET,
        "/ports",
        "/ports",
        NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view"),
    ),
    row(
        POST,
        "/ports/{port}/ring-test",
        "/ports/1/ring-test",
        F("csrf={csrf}"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        POST,
        "/ports/{port}/line-test",
        "/ports/1/line-test",
        F("csrf={csrf}"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        POST,
        "/ports/{port}/loopback-test",
        "/ports/1/loopback-test",
        F("csrf={csrf}"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        GET,
        "/sip",
        "/sip",
        NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view"),
    ),
    // The SIP trace is downloaded like the capture.
    row(
        GET,
        "/sip/trace",
        "/sip/trace",
        NO,
        Roles(&[ADMIN, TECH], "diagnostics.download"),
    ),
    // diagnostics.view, or recordings.view alone (supervisors, quality inspectors).
    row(
        GET,
        "/calls",
        "/calls",
        NO,
        Roles(&[ADMIN, SUP, QI, TECH, INST], "diagnostics.view"),
    ),
    row(
        GET,
        "/queues",
        "/queues",
        NO,
        Roles(&[ADMIN, SUP], "queues.view"),
    ),
    // system_config.view and diagnostics.view: the installer has only the second.
    row(
        GET,
        "/logs",
        "/logs",
        NO,
        Roles(&[ADMIN, TECH], "system_config.view"),
    ),
    row(
        GET,
        "/sync",
        "/sync",
        NO,
        Roles(&[ADMIN, TECH], "sync.view"),
    ),
    row(
        POST,
        "/sync/force",
        "/sync/force",
        F("csrf={csrf}"),
        Roles(&[ADMIN, TECH], "sync.operate"),
    ),
    row(
        GET,
        "/system",
        "/system",
        NO,
        Roles(&[ADMIN, TECH], "system_config.view"),
    ),
    // Without `confirm=yes`: the confirm page, no reboot.
    row(
        POST,
        "/system/reboot",
        "/system/reboot",
        F("csrf={csrf}"),
        Roles(&[ADMIN, TECH], "system_config.operate"),
    ),
    row(
        GET,
        "/tools",
        "/tools",
        NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view"),
    ),
    row(
        POST,
        "/tools/ping",
        "/tools/ping",
        F("csrf={csrf}&host=127.0.0.1&count=0"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        POST,
        "/tools/traceroute",
        "/tools/traceroute",
        F("csrf={csrf}&host=-bad"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        POST,
        "/tools/sip-options",
        "/tools/sip-options",
        F("csrf={csrf}&uri=not+a+uri"),
        Roles(&[ADMIN, TECH], "diagnostics.operate"),
    ),
    row(
        POST,
        "/tools/capture",
        "/tools/capture",
        F("csrf={csrf}&seconds=0"),
        Roles(&[ADMIN, TECH], "diagnostics.download"),
    ),
    row(
        GET,
        "/provisioning",
        "/provisioning",
        NO,
        Roles(&[ADMIN, INST], "provisioning.view"),
    ),
    row(
        GET,
        "/provisioning/token",
        "/provisioning/token?t=not-a-token",
        NO,
        Roles(&[ADMIN, INST], "provisioning.operate"),
    ),
    row(
        POST,
        "/provisioning/token",
        "/provisioning/token",
        F("csrf={csrf}&token=not-a-token"),
        Roles(&[ADMIN, INST], "provisioning.operate"),
    ),
    row(
        POST,
        "/provisioning/photo",
        "/provisioning/photo",
        Photo,
        Roles(&[ADMIN, INST], "provisioning.operate"),
    ),
    row(
        POST,
        "/provisioning/apply",
        "/provisioning/apply",
        F("csrf={csrf}&token=not-a-token"),
        Roles(&[ADMIN, INST], "provisioning.operate"),
    ),
];

/// A box with a user of every built-in role.
async fn matrix_env() -> Env {
    let env = env_with(true).await;
    for (name, role) in [("quinn", QI), ("fay", FIN)] {
        env.accounts
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
    env
}

impl Env {
    /// `row`'s request from `browser`, its forms carrying `csrf`.
    async fn ask(&self, row: &Row, browser: Option<&Browser>, csrf: &str) -> Reply {
        let mut req = Request::builder().method(row.method.clone()).uri(row.uri);
        if let Some(b) = browser {
            req = req.header(header::COOKIE, &b.cookie);
        }
        let body = match row.payload {
            Payload::None => Body::empty(),
            Payload::Form(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f.replace("{csrf}", csrf))
            }
            Payload::Photo => {
                req = req.header(
                    header::CONTENT_TYPE,
                    "multipart/form-data; boundary=matrixboundary",
                );
                Body::from(format!(
                    "--matrixboundary\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n\
                     {csrf}\r\n--matrixboundary\r\nContent-Disposition: form-data; \
                     name=\"photo\"; filename=\"qr.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\
                     not a photo\r\n--matrixboundary--\r\n"
                ))
            }
        };
        let mut req = req.body(body).expect("request");
        let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        // A generous bound only turns a hang into a failure naming the route.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.router.clone().oneshot(req),
        )
        .await;
        let Ok(resp) = answer else {
            return Reply {
                status: StatusCode::REQUEST_TIMEOUT,
                headers: HeaderMap::new(),
                text: format!("no answer to {} in 30 s", row.uri),
            };
        };
        let resp = resp.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn denials_of(&self, username: &str) -> usize {
        self.audit()
            .iter()
            .filter(|r| r.actor == username && r.result == "denied")
            .count()
    }
}

/// Every route the site serves has its row, and every row a route.
#[tokio::test]
async fn every_page_and_form_has_a_row_in_the_matrix() {
    let env = env().await;
    let (_, served) = build(env.api.clone());
    let rows: Vec<(Method, &str)> = ROWS.iter().map(|r| (r.method.clone(), r.path)).collect();
    let missing: Vec<_> = served.iter().filter(|s| !rows.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "pages or forms served without an expectation in ROWS: {missing:?}"
    );
    let stale: Vec<_> = rows.iter().filter(|r| !served.contains(r)).collect();
    assert!(stale.is_empty(), "rows for routes not served: {stale:?}");
}

/// The role matrix runs in this many tests, each over every `SHARDS`-th row (each row
/// logs in every role, argon2id: too slow for one test under qemu-user in CI's
/// aarch64 run, where a test is killed after 6 minutes).
const SHARDS: usize = 4;

#[tokio::test]
async fn every_page_and_form_answers_each_role_as_the_policy_says_shard_0() {
    every_page_and_form_answers_each_role_as_the_policy_says(0).await;
}

#[tokio::test]
async fn every_page_and_form_answers_each_role_as_the_policy_says_shard_1() {
    every_page_and_form_answers_each_role_as_the_policy_says(1).await;
}

#[tokio::test]
async fn every_page_and_form_answers_each_role_as_the_policy_says_shard_2() {
    every_page_and_form_answers_each_role_as_the_policy_says(2).await;
}

#[tokio::test]
async fn every_page_and_form_answers_each_role_as_the_policy_says_shard_3() {
    every_page_and_form_answers_each_role_as_the_policy_says(3).await;
}

/// Each page and form of shard `shard` (every `SHARDS`-th row from it), by nobody and
/// by each role, answers as [`ROWS`] says.
async fn every_page_and_form_answers_each_role_as_the_policy_says(shard: usize) {
    let mut failures = Vec::new();
    for row in ROWS.iter().skip(shard).step_by(SHARDS) {
        let what = format!("{} {}", row.method, row.path);
        let env = matrix_env().await;
        let got = env.ask(row, None, "").await;
        let Roles(allowed, needs) = row.who else {
            if got.status.is_server_error()
                || got.status == StatusCode::UNAUTHORIZED
                || got.location().starts_with("/login?next=")
            {
                failures.push(format!(
                    "{what} by nobody: {} {}",
                    got.status,
                    got.location()
                ));
            }
            continue;
        };
        let login = |p: &str| format!("/login?next={}", pages::url_encode(p));
        // A form sends nobody back to the page it belongs to, or to the dashboard.
        if got.status != StatusCode::SEE_OTHER || !got.location().starts_with("/login?next=") {
            failures.push(format!(
                "{what} by nobody: want a redirect to the login page, got {} {:?}",
                got.status,
                got.location()
            ));
        } else if row.method == GET && got.location() != login(row.uri) {
            failures.push(format!(
                "{what} by nobody: redirected to {}",
                got.location()
            ));
        }
        for (role, user) in ROLES.iter().filter(|(r, _)| !allowed.contains(r)) {
            let b = env.login(user).await;
            let before = crate::store::dump_tables(&env.db_path, AUDIT_TABLES);
            let denials = env.denials_of(user);
            let got = env.ask(row, Some(&b), &b.csrf).await;
            if got.status != StatusCode::FORBIDDEN
                || !got.text.contains("Access denied")
                || !got.text.contains(needs)
            {
                failures.push(format!(
                    "{what} by {role}: want the 403 page naming {needs}, got {} {}",
                    got.status,
                    got.location()
                ));
                continue;
            }
            if env.denials_of(user) != denials + 1 {
                failures.push(format!("{what} by {role}: the denial is not audited once"));
            }
            if crate::store::dump_tables(&env.db_path, AUDIT_TABLES) != before {
                failures.push(format!(
                    "{what} by {role}: a denied request changed the store"
                ));
            }
        }
        for (role, user) in ROLES.iter().filter(|(r, _)| allowed.contains(r)) {
            let own;
            let env = if row.method == POST {
                own = matrix_env().await;
                &own
            } else {
                &env
            };
            let b = env.login(user).await;
            let got = env.ask(row, Some(&b), &b.csrf).await;
            if matches!(got.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                || got.status.is_server_error()
                || got.location().starts_with("/login?next=")
            {
                failures.push(format!(
                    "{what} by {role}: want it allowed, got {} {:?}",
                    got.status,
                    got.location()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every form but the login refuses the admin without the session's token and with
/// a wrong one: the 403 page, and nothing changed.
#[tokio::test]
async fn every_form_needs_the_csrf_token_and_changes_nothing_without() {
    let env = matrix_env().await;
    let boss = env.login("boss").await;
    let wrong = "0".repeat(boss.csrf.len());
    let mut failures = Vec::new();
    let forms: Vec<&Row> = ROWS
        .iter()
        .filter(|r| r.method == POST && !matches!(r.who, Public))
        .collect();
    assert!(forms.len() >= 13, "{} forms", forms.len());
    for row in forms {
        for (how, token) in [("no token", ""), ("a wrong token", wrong.as_str())] {
            let before = crate::store::dump_tables(&env.db_path, &[]);
            let got = env.ask(row, Some(&boss), token).await;
            if got.status != StatusCode::FORBIDDEN
                || !got.text.contains("missing or wrong CSRF token")
            {
                failures.push(format!(
                    "{} {} with {how}: want the 403 page, got {} {:?}",
                    row.method,
                    row.path,
                    got.status,
                    got.location()
                ));
            }
            if crate::store::dump_tables(&env.db_path, &[]) != before {
                failures.push(format!(
                    "{} {} with {how} changed the store",
                    row.method, row.path
                ));
            }
        }
    }
    // No port test started, no reboot accepted, and the session is still good.
    let status = env.get("/api/v1/status", Some(&boss)).await.json();
    assert!(
        status["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .all(|p| p["ring_test"] == false
                && p["line_test"].is_null()
                && p["loopback_test"].is_null()),
        "{status}"
    );
    assert!(env.reboots.lock().expect("reboots").is_empty());
    assert_eq!(
        env.get("/dashboard", Some(&boss)).await.status,
        StatusCode::OK
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
