//! The local web diagnostics page (issue 8): server-rendered HTML for field
//! technicians, served by `branchd` next to the JSON API on `[web] listen`.
//!
//! ```text
//! browser ──HTTP──▶ web::router ──▶ page handler ──▶ ApiState::authenticate (cookie)
//!                      │    │                         ApiState::require (the one RBAC path)
//!                      │    └─ /static/app.css, /static/app.js (include_str!, ETag)
//!                      └─ anything under /api/ ──▶ api::router (JSON, incl. /api/v1/status
//!                                                   and its SSE stream /api/v1/events/status)
//! every response ──▶ security headers (CSP default-src 'self', no inline script/style,
//!                    X-Frame-Options DENY, nosniff, Referrer-Policy no-referrer)
//! ```
//!
//! - **Pages**: `/login` (form; a double-submit CSRF cookie guards the form before
//!   there is a session; the login itself is [`ApiState`]'s, with its per-IP throttle
//!   and per-account lockout), `/logout` (POST), `/dashboard` (ports with hook state,
//!   active calls, SIP trunk and local accounts, WAN, sync backlog, disk, alarms),
//!   `/ports` (hook state, line voltage / loop current, recent events, ring test, line
//!   test and loopback test with their last results per port:
//!   [`crate::tools::line_test`], [`crate::tools::loopback`]),
//!   `/sip` (the trunk registration: state, server, expiry, per-server health and last
//!   error; every local SIP account's registered contacts with source address and
//!   expiry, from the SIP endpoint's own snapshot; "not configured" without `[sip]`),
//!   `/sip/trace?filter=` (the SIP message trace, [`crate::tools::sip_trace`]: the kept
//!   messages that match, server-rendered; `app.js` appends new ones from its SSE route),
//!   `/calls` (calls in progress from call control with, per SIP leg, the codec and the
//!   media engine's RTP loss, jitter and MOS; the last 20 CDRs of 7 days from the
//!   store, each with its recording: an `<audio controls preload="none">` player on
//!   `GET /api/v1/recordings/{id}/audio` for `recordings.listen`, a download link for
//!   `recordings.download`, "recorded" for `recordings.view` alone, nothing
//!   without it; see `crate::api::recordings`), `/sync` (agent state, outbox backlog and its oldest row's age, cursor,
//!   last success and last error, the force-sync form, and the WAN: overall state and
//!   since when, HQ and trunk reachability from the WAN monitor's snapshot), `/system`
//!   ([`system`]: version, the A/B slots through the updater's backend, uptime, CPU,
//!   memory, load, disk, temperatures, the same report as `GET /api/v1/system`; how
//!   the page is served, and the reboot form: a
//!   confirm step with the calls in progress, refused while calls are up unless the
//!   technician ticks "cut the calls"; the same code as
//!   `POST /api/v1/system/reboot`) and `/tools` (ping and traceroute to HQ or a typed
//!   host, a SIP OPTIONS probe to the trunk or a typed URI, a packet capture of the SIP
//!   and RTP ports downloaded as a pcap, the diagnostics bundle; see [`crate::tools`])
//!   and `/provisioning` (state, the claim QR, QR tokens by paste, link or photo; see
//!   `provisioning`: `provisioning.view`, its forms `provisioning.operate`).
//!   `/` redirects to the dashboard.
//! - **Authorization**: every page calls `ApiState::require` (audited denials) with
//!   `diagnostics.view` (dashboard, ports, SIP, calls; the calls page also opens for
//!   `recordings.view` alone, without the calls in progress, so supervisors and
//!   quality inspectors reach their calls' recordings), `diagnostics.operate` (ring,
//!   line and loopback test), `sync.view` (sync), `sync.operate` (force sync), `system_config.view`
//!   (system) or `system_config.operate` (reboot); the tools page needs `diagnostics.view`, its ping, traceroute and
//!   probe forms `diagnostics.operate`, the capture `diagnostics.download` and the
//!   bundle link `diagnostics.download` + `system_config.view` (each form says which
//!   permission it lacks); the dashboard's sync card needs `sync.view`, the calls page's CDRs
//!   `calls.view` (each record filtered by it, as `GET /api/v1/cdrs`), the force form
//!   `sync.operate`, and each otherwise says which permission is missing.
//! - **Masking**: customers' numbers on the calls page (calls in progress and CDRs)
//!   go through [`crate::mask`] (`call_numbers`, `list_cdrs`): masked unless
//!   `numbers.view` covers the call; extensions are never masked. Not logged in: a redirect to `/login`. Denied: a 403
//!   page naming the permission.
//! - **Tools forms** post to `/tools/ping`, `/tools/traceroute`, `/tools/sip-options`
//!   (the page again with the result, or the error with its status) and
//!   `/tools/capture` (the pcap download itself); they call the same `run_*`
//!   functions as `/api/v1/tools/...` (audited there). The bundle is a plain link to
//!   `GET /api/v1/tools/bundle` (the session cookie goes with it).
//! - **Forms** (logout, ring test, line test, loopback test, force sync) carry the session's CSRF
//!   token in a hidden field, checked like the API's `X-CSRF-Token` header; the ring
//!   test, line test and force sync answer with a redirect back to their page and a
//!   notice (POST-redirect-GET; the line test's checks are on the port's card), or an
//!   error page (409 when the port is busy, or sync is not configured or not running).
//!   They go through the same functions as their API routes (audited as `ring_test` /
//!   `line_test` / `loopback_test` / `force_sync`).
//! - **Live updates**: `app.js` opens an `EventSource` on `/api/v1/events/status` and
//!   updates the elements marked `data-live`; without JS the pages are complete and a
//!   reload shows the news (the SIP, calls and sync pages are not live: reload them;
//!   their charts are: a chart's section fetches the page again at its sampling
//!   interval, `data-reload`).
//! - **Charts** (issue 8): server-side SVG inline in the pages ([`charts`], drawn by
//!   `chart_pages`, fed by [`history`]): calls per hour of the site's clock
//!   (`[telephony] time_zone`) of the last 24 from the CDRs and the RTP jitter and loss of calls with a SIP leg (calls page), each
//!   port's line voltage and loop current (ports page), the outbox backlog and its
//!   oldest record's age (sync page). Their numbers are JSON under `/api/v1/charts`
//!   (`chart_api`), checked like the page they are on. Sampling: line readings and
//!   the outbox every `[web] chart_sample_seconds` (default 60, the last 1440), calls
//!   every `[web] call_sample_seconds` (default 5; bounds in [`history`]); in memory
//!   only, so a restart starts them empty.
//! - HTML is written with `maud` (compile-time templates, escaping of every
//!   interpolated value), not by hand: escaping is where hand-written HTML goes wrong.
//!
//! - **Transport**: plain HTTP until the box is enrolled, then HTTPS with the device
//!   certificate on the same address, plain HTTP only redirecting, `Secure` cookies,
//!   a renewed certificate picked up without a restart, and a certificate that does
//!   not load shown as an alarm while the page stays reachable: [`tls`].
//!
//! Limits: a session that must change its password gets the 403 page (there is no
//! password page yet: use `POST /api/v1/me/password`); an open SSE stream is not
//! ended by a logout elsewhere (it ends when the page closes); the calls page has no
//! CDR quality columns and shows recordings only for its 20 CDRs (older ones:
//! `GET /api/v1/recordings`); the charts follow by fetching their page again, not over
//! SSE; the tools page shows ping and traceroute output when they end (not line
//! by line).

mod api_routes;
mod chart_api;
mod chart_pages;
pub mod charts;
pub mod history;
mod pages;
mod provisioning;
pub mod status;
pub mod system;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod views;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::api::{self, ApiError, ApiState, Authed};
use crate::rbac::{Action, Resource, Target};
use tls::Secure;

pub(crate) use api_routes::{
    active_calls_json, line_test_api, loopback_test_api, reboot_api, ring_test_api, sip_json,
    status_events, status_json, system_json,
};
pub(crate) use chart_api::{call_quality_json, calls_per_hour_json, line_json, sync_backlog_json};

/// The one stylesheet, compiled in.
pub const APP_CSS: &str = include_str!("app.css");
/// The one script, compiled in.
pub const APP_JS: &str = include_str!("app.js");

/// The `Content-Security-Policy` of every response: only this origin, no inline
/// script or style, no framing, forms post only here.
pub const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'; object-src 'none'";

/// Cookie holding the login form's CSRF token (double submit, before a session).
pub const LOGIN_CSRF_COOKIE: &str = "bl_login_csrf";

/// The web router's state: the API state and the API router for `/api/` requests.
#[derive(Clone, Debug)]
struct WebState {
    api: ApiState,
    api_router: Router,
}

/// The whole site: pages, static files and the JSON API, with security headers on
/// every response.
pub fn router(api: ApiState) -> Router {
    build(api).0
}

/// Builds the site's router and the list of `(method, path)` of its own routes (pages,
/// forms, static files; the API's are listed by `api::build`), which the route matrix
/// test (`tests/route_matrix.rs`) holds to a written-out expectation each.
fn build(api: ApiState) -> (Router, Vec<(Method, &'static str)>) {
    let api_router = api::router(api.clone());
    let mut routes = Vec::new();
    let mut r: Router<WebState> = Router::new();
    macro_rules! route {
        ($method:ident, $m:expr, $path:literal, $handler:expr) => {{
            routes.push(($m, $path));
            r = r.route($path, $method($handler));
        }};
    }
    route!(get, Method::GET, "/", || async {
        Redirect::to("/dashboard")
    });
    route!(get, Method::GET, "/login", login_page);
    route!(post, Method::POST, "/login", login_submit);
    route!(post, Method::POST, "/logout", logout);
    route!(get, Method::GET, "/dashboard", dashboard);
    route!(get, Method::GET, "/ports", ports_page);
    route!(
        post,
        Method::POST,
        "/ports/{port}/ring-test",
        ring_test_form
    );
    route!(
        post,
        Method::POST,
        "/ports/{port}/line-test",
        line_test_form
    );
    route!(
        post,
        Method::POST,
        "/ports/{port}/loopback-test",
        loopback_test_form
    );
    route!(get, Method::GET, "/sip", sip_page);
    route!(get, Method::GET, "/sip/trace", sip_trace_page);
    route!(get, Method::GET, "/calls", calls_page);
    route!(get, Method::GET, "/queues", queues_page);
    route!(get, Method::GET, "/logs", logs_page);
    route!(get, Method::GET, "/sync", sync_page);
    route!(post, Method::POST, "/sync/force", sync_force_form);
    route!(get, Method::GET, "/system", system_page);
    route!(post, Method::POST, "/system/reboot", reboot_form);
    route!(get, Method::GET, "/tools", tools_page);
    route!(post, Method::POST, "/tools/ping", tools_ping_form);
    route!(
        post,
        Method::POST,
        "/tools/traceroute",
        tools_traceroute_form
    );
    route!(
        post,
        Method::POST,
        "/tools/sip-options",
        tools_sip_options_form
    );
    route!(post, Method::POST, "/tools/capture", tools_capture_form);
    route!(
        get,
        Method::GET,
        "/provisioning",
        provisioning::provisioning_page
    );
    route!(
        get,
        Method::GET,
        "/provisioning/token",
        provisioning::token_link
    );
    route!(
        post,
        Method::POST,
        "/provisioning/token",
        provisioning::token_form
    );
    // A phone photo is a few MB: above axum's 2 MB default body limit.
    routes.push((Method::POST, "/provisioning/photo"));
    r = r.route(
        "/provisioning/photo",
        post(provisioning::photo_form).layer(axum::extract::DefaultBodyLimit::max(
            crate::api::provisioning::PHOTO_BODY_LIMIT,
        )),
    );
    route!(
        post,
        Method::POST,
        "/provisioning/apply",
        provisioning::apply_form
    );
    route!(get, Method::GET, "/static/app.css", css);
    route!(get, Method::GET, "/static/app.js", js);
    let router = r
        .fallback(fallback)
        .with_state(WebState { api, api_router })
        .layer(axum::middleware::map_response(security_headers));
    (router, routes)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `/api/...` goes to the API router (its JSON 404 included); anything else is the
/// HTML 404 page.
async fn fallback(State(state): State<WebState>, request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        return match state.api_router.oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
    }
    pages::error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        &format!("There is no page at {}.", request.uri().path()),
        None,
    )
}

/// The client's IP address.
struct ClientIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientIp(api::client_ip(parts)))
    }
}

/// A static file with an ETag (of its content, computed once) and a one-hour cache.
fn asset(
    headers: &HeaderMap,
    body: &'static str,
    mime: &'static str,
    tag: &'static OnceLock<String>,
) -> Response {
    let etag = tag.get_or_init(|| {
        format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(body.as_bytes()))[..16]
        )
    });
    let cache = [
        (header::CACHE_CONTROL, "public, max-age=3600"),
        (header::ETAG, etag.as_str()),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, mime)], body).into_response()
}

async fn css(headers: HeaderMap) -> Response {
    static TAG: OnceLock<String> = OnceLock::new();
    asset(&headers, APP_CSS, "text/css; charset=utf-8", &TAG)
}

async fn js(headers: HeaderMap) -> Response {
    static TAG: OnceLock<String> = OnceLock::new();
    asset(&headers, APP_JS, "text/javascript; charset=utf-8", &TAG)
}

/// Where a page's request goes when it is not allowed: a redirect to the login page
/// (401), the 403 page naming the permission, or another error page.
fn refusal(
    e: &ApiError,
    path: &str,
    needs: Option<(Resource, Action)>,
    who: Option<&Authed>,
) -> Response {
    match e.status() {
        StatusCode::UNAUTHORIZED => {
            Redirect::to(&format!("/login?next={}", pages::url_encode(path))).into_response()
        }
        StatusCode::FORBIDDEN => {
            let what = needs.map(|(r, a)| format!("{r}.{a}"));
            pages::forbidden_page(who, what.as_deref(), e.message())
        }
        status => pages::error_page(status, "Request failed", e.message(), None),
    }
}

/// The logged-in user of a page request, allowed `resource.action` on the site, or
/// the response to send instead.
async fn page_user(
    state: &WebState,
    headers: &HeaderMap,
    ip: IpAddr,
    csrf: Option<&str>,
    path: &str,
    needs: (Resource, Action),
) -> Result<Authed, Response> {
    let who = state
        .api
        .authenticate(headers, ip, csrf.map(str::as_bytes))
        .map_err(|e| refusal(&e, path, Some(needs), None))?;
    let reader = state
        .api
        .reader()
        .map_err(|e| refusal(&e, path, Some(needs), Some(&who)))?;
    state
        .api
        .require(&reader, &who, needs.0, needs.1, &Target::Site, path)
        .await
        .map_err(|e| refusal(&e, path, Some(needs), Some(&who)))?;
    Ok(who)
}

// --- login / logout ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
    bye: Option<String>,
}

/// A local path to go to after login (never another site).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/dashboard",
    }
}

fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|source| {
        ApiError::from(crate::error::Error::Random {
            what: "login form token",
            source,
        })
    })?;
    Ok(hex::encode(bytes))
}

/// The login form with a fresh CSRF token (and its cookie, `Secure` over HTTPS).
fn login_form(status: StatusCode, next: &str, message: Option<&str>, secure: Secure) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return pages::error_page(e.status(), "Error", e.message(), None),
    };
    let cookie = format!(
        "{LOGIN_CSRF_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login{}",
        secure.attribute()
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        axum::response::Html(pages::login_page(next, &token, message).into_string()),
    )
        .into_response()
}

async fn login_page(secure: Secure, Query(q): Query<NextQuery>) -> Response {
    let message = q.bye.is_some().then_some("You are logged out.");
    login_form(
        StatusCode::OK,
        safe_next(q.next.as_deref()),
        message,
        secure,
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login_submit(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    secure: Secure,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_form(
            StatusCode::BAD_REQUEST,
            "/dashboard",
            Some("The form was incomplete; fill in both fields."),
            secure,
        );
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    let cookie = api::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie.is_empty() || !api::same_secret(cookie.as_bytes(), form.csrf.as_bytes()) {
        return login_form(
            StatusCode::FORBIDDEN,
            &next,
            Some("The login form expired or came from another page; please log in again."),
            secure,
        );
    }
    match state.api.log_in(ip, &form.username, &form.password).await {
        Ok(ok) => {
            let mut response = Redirect::to(&next).into_response();
            let h = response.headers_mut();
            for c in [
                api::session_cookie_value(&ok.token, secure),
                format!("{LOGIN_CSRF_COOKIE}=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0"),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(e) => {
            let mut message = e.message().to_owned();
            if let Some(s) = e.retry_after_s() {
                message = format!("{message} (in {s} s)");
            }
            login_form(e.status(), &next, Some(&message), secure)
        }
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let who = match state
        .api
        .authenticate(&headers, ip, Some(form.csrf.as_bytes()))
    {
        Ok(who) => who,
        Err(e) => return refusal(&e, "/dashboard", None, None),
    };
    if let Err(e) = state.api.log_out(&who).await {
        return pages::error_page(e.status(), "Logout failed", e.message(), None);
    }
    (
        [(header::SET_COOKIE, api::CLEAR_SESSION_COOKIE)],
        Redirect::to("/login?bye=1"),
    )
        .into_response()
}

// --- pages -----------------------------------------------------------------------------

async fn dashboard(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/dashboard",
        (Resource::Diagnostics, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let facts = api_routes::dashboard_facts(&state.api, &who);
    pages::dashboard_page(&who, state.api.status(), &facts, state.api.now())
}

#[derive(Debug, Deserialize)]
struct PortsQuery {
    rang: Option<u8>,
    tested: Option<u8>,
    looped: Option<u8>,
}

async fn ports_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<PortsQuery>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/ports",
        (Resource::Diagnostics, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let may_operate = state.api.reader().is_ok_and(|reader| {
        state.api.authorizer(&reader).is_ok_and(|a| {
            a.authorize(
                who.subject(),
                Resource::Diagnostics,
                Action::Operate,
                &Target::Site,
            )
            .is_allowed()
        })
    });
    let lines = chart_api::line_charts(&state.api, &who)
        .await
        .map_err(|e| e.message().to_owned());
    pages::ports_page(
        &who,
        state.api.status(),
        may_operate,
        (q.rang, q.tested, q.looped),
        &lines,
    )
}

/// The session (`diagnostics.operate`, the form's CSRF token) and port number of a
/// port form, or the page that refuses it.
async fn port_form(
    state: &WebState,
    ip: IpAddr,
    headers: &HeaderMap,
    port: &str,
    csrf: &str,
) -> Result<(Authed, u8), Response> {
    let who = page_user(
        state,
        headers,
        ip,
        Some(csrf),
        "/ports",
        (Resource::Diagnostics, Action::Operate),
    )
    .await?;
    let Ok(port) = port.parse::<u8>() else {
        return Err(pages::error_page(
            StatusCode::BAD_REQUEST,
            "No such port",
            &format!("{port:?} is not a port number."),
            Some(("/ports", "Back to the ports")),
        ));
    };
    Ok((who, port))
}

async fn ring_test_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(port): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (who, port) = match port_form(&state, ip, &headers, &port, &form.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match api_routes::run_ring_test(&state.api, &who, port).await {
        Ok(()) => Redirect::to(&format!("/ports?rang={port}")).into_response(),
        Err(e) => pages::error_page(
            e.status(),
            "Ring test not started",
            e.message(),
            Some(("/ports", "Back to the ports")),
        ),
    }
}

async fn line_test_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(port): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (who, port) = match port_form(&state, ip, &headers, &port, &form.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match api_routes::run_line_test(&state.api, &who, port).await {
        // The result is in the port's status: the page shows it.
        Ok(_) => Redirect::to(&format!("/ports?tested={port}#port-{port}")).into_response(),
        Err(e) => pages::error_page(
            e.status(),
            "Line test not run",
            e.message(),
            Some(("/ports", "Back to the ports")),
        ),
    }
}

async fn loopback_test_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(port): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (who, port) = match port_form(&state, ip, &headers, &port, &form.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match api_routes::run_loopback_test(&state.api, &who, port).await {
        // The result is in the port's status: the page shows it.
        Ok(_) => Redirect::to(&format!("/ports?looped={port}#port-{port}")).into_response(),
        Err(e) => pages::error_page(
            e.status(),
            "Loopback test not run",
            e.message(),
            Some(("/ports", "Back to the ports")),
        ),
    }
}

async fn system_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/system",
        (Resource::SystemConfig, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let may_reboot = may(
        &state,
        &who,
        Resource::SystemConfig,
        Action::Operate,
        &Target::Site,
    );
    let report = match api_routes::system(&state.api).await {
        Ok(r) => r,
        Err(e) => return pages::error_page(e.status(), "System", e.message(), None),
    };
    pages::system_page(
        &who,
        &report,
        &state.api.https().get(),
        may_reboot,
        state.api.now(),
    )
}

#[derive(Debug, Deserialize)]
struct RebootForm {
    #[serde(default)]
    csrf: String,
    /// `yes` from the confirm page; anything else shows the confirm page.
    #[serde(default)]
    confirm: String,
    /// The confirm page's "cut the calls" box.
    #[serde(default)]
    force: Option<String>,
}

/// `POST /system/reboot`: the confirm page (with the calls in progress), then, from
/// it, the reboot ([`api_routes::run_reboot`], audited as `reboot`).
async fn reboot_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<RebootForm>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        Some(&form.csrf),
        "/system",
        (Resource::SystemConfig, Action::Operate),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let calls = state.api.status().map(|s| s.current().active_calls);
    if form.confirm != "yes" {
        return pages::reboot_confirm_page(&who, calls, None);
    }
    match api_routes::run_reboot(&state.api, &who, form.force.is_some()).await {
        Ok(ended) => pages::rebooting_page(&who, ended),
        Err(e) if e.status() == StatusCode::CONFLICT => {
            pages::reboot_confirm_page(&who, calls, Some(e.message()))
        }
        Err(e) => pages::error_page(
            e.status(),
            "Reboot not started",
            e.message(),
            Some(("/system", "Back to the system page")),
        ),
    }
}

/// Whether `who` holds `resource.action` at a scope covering `target` (no audit: for
/// the optional parts of a page, which then say which permission they need).
fn may(
    state: &WebState,
    who: &Authed,
    resource: Resource,
    action: Action,
    target: &Target,
) -> bool {
    state.api.reader().is_ok_and(|reader| {
        state.api.authorizer(&reader).is_ok_and(|a| {
            a.authorize(who.subject(), resource, action, target)
                .is_allowed()
        })
    })
}

async fn sip_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/sip",
        (Resource::Diagnostics, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    pages::sip_page(&who, state.api.status(), state.api.now())
}

/// How many recent CDRs the calls page lists.
const CALLS_PAGE_CDRS: u32 = 20;
/// How far back the calls page looks for CDRs.
const CALLS_PAGE_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

async fn sip_trace_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<crate::api::tools::TraceQuery>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/sip/trace",
        (Resource::Diagnostics, Action::Download),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let messages = crate::api::tools::sip_trace(&state.api, &who, &q)
        .await
        .map(|found| found.map(|(trace, filter, limit)| trace.recent(&filter, limit)))
        .map_err(|e| (e.status(), e.message().to_owned()));
    pages::sip_trace_page(&who, q.filter.as_deref().unwrap_or("").trim(), messages)
}

async fn logs_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<crate::api::tools::LogQuery>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/logs",
        (Resource::SystemConfig, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let lines =
        crate::api::tools::recent_logs(&state.api, &who, q.level.as_deref(), q.limit.as_deref())
            .await
            .map_err(|e| (e.status(), e.message().to_owned()));
    pages::logs_page(
        &who,
        q.level.as_deref().unwrap_or("info"),
        q.limit.as_deref().unwrap_or(""),
        lines,
    )
}

async fn queues_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/queues",
        (Resource::Queues, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let live = crate::api::queues::live(&state.api, &who)
        .await
        .map_err(|e| e.message().to_owned());
    pages::queues_page(&who, live)
}

async fn calls_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    // Technicians and admins (`diagnostics.view`) see the calls in progress too; the
    // roles that may see recordings (`recordings.view`: supervisors, quality
    // inspectors) open the page for the recent calls and their recordings without it.
    // Anyone else gets the audited 403 naming `diagnostics.view`.
    let diagnostics = (Resource::Diagnostics, Action::View);
    let who = match state.api.authenticate(&headers, ip, None) {
        Ok(w) => w,
        Err(e) => return refusal(&e, "/calls", Some(diagnostics), None),
    };
    let recordings_only = !may(&state, &who, diagnostics.0, diagnostics.1, &Target::Site)
        && may(
            &state,
            &who,
            Resource::Recordings,
            Action::View,
            &who.own_target(),
        );
    let (needs, target) = if recordings_only {
        ((Resource::Recordings, Action::View), who.own_target())
    } else {
        (diagnostics, Target::Site)
    };
    let allowed = match state.api.reader() {
        Ok(reader) => {
            state
                .api
                .require(&reader, &who, needs.0, needs.1, &target, "/calls")
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = allowed {
        return refusal(&e, "/calls", Some(needs), Some(&who));
    }
    let active = if recordings_only {
        Err("Calls in progress need the permission diagnostics.view.".to_owned())
    } else {
        match api_routes::active_calls(&state.api, &who).await {
            Ok(a) => Ok(a),
            Err(e) => Err(e.message().to_owned()),
        }
    };
    // Recent CDRs need `calls.view` (any scope; each record is filtered by it, as in
    // `GET /api/v1/cdrs`).
    let cdrs = if may(
        &state,
        &who,
        Resource::Calls,
        Action::View,
        &who.own_target(),
    ) {
        let now = state.api.now();
        let page = state.api.reader().and_then(|reader| {
            let authz = state.api.authorizer(&reader)?;
            let dir = crate::mask::NumberDirectory::load(&reader)?;
            let page = crate::mask::list_cdrs(
                &reader,
                who.subject(),
                &authz,
                state.api.mask_pattern(),
                &dir,
                now.saturating_sub(CALLS_PAGE_WINDOW_MS),
                i64::MAX,
                crate::accounts::PageRequest {
                    limit: CALLS_PAGE_CDRS,
                    offset: 0,
                },
            )?;
            // Each listed call's recording, with what this user may do with it
            // (`recordings.view` / `listen` / `download` on the call's records).
            let ids: Vec<&str> = page.items.iter().map(|c| c.call_id.as_str()).collect();
            let recordings =
                crate::api::recordings::for_calls(&reader, &authz, who.subject(), &dir, &ids)?;
            Ok((page, recordings))
        });
        pages::CdrList::Page(page.map_err(|e: ApiError| e.message().to_owned()))
    } else {
        pages::CdrList::Denied
    };
    let charts = pages::CallCharts {
        quality: chart_api::quality_charts(&state.api, &who)
            .await
            .map_err(|e| e.message().to_owned()),
        per_hour: chart_api::calls_per_hour(&state.api, &who)
            .await
            .map_err(|e| e.message().to_owned()),
    };
    pages::calls_page(&who, active, cdrs, &charts, state.api.now())
}

#[derive(Debug, Deserialize)]
struct SyncQuery {
    forced: Option<String>,
}

async fn sync_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/sync",
        (Resource::Sync, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let report = state
        .api
        .reader()
        .and_then(|reader| Ok(state.api.sync().report(&reader, state.api.now())?))
        .map_err(|e| e.message().to_owned());
    let may_force = may(&state, &who, Resource::Sync, Action::Operate, &Target::Site);
    // The chart ends with the outbox as the report read it: chart and figure agree.
    let current = report.as_ref().ok().map(|r| history::SyncSample {
        at_ms: r.at_ms,
        depth: r.backlog.depth,
        oldest_age_ms: r.backlog.oldest_age_ms,
    });
    let backlog = chart_api::sync_charts(&state.api, &who, current)
        .await
        .map_err(|e| e.message().to_owned());
    pages::sync_page(
        &who,
        report,
        &state.api.sync().wan(),
        (may_force, q.forced.is_some()),
        &backlog,
        state.api.now(),
    )
}

async fn sync_force_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        Some(&form.csrf),
        "/sync",
        (Resource::Sync, Action::Operate),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    match api::run_force_sync(&state.api, &who).await {
        Ok(()) => Redirect::to("/sync?forced=1").into_response(),
        Err(e) => pages::error_page(
            e.status(),
            "Sync not forced",
            e.message(),
            Some(("/sync", "Back to sync")),
        ),
    }
}

// --- tools --------------------------------------------------------------------------

/// The facts of the tools page for `who`.
fn tools_view<'a>(state: &'a WebState, who: &Authed) -> pages::ToolsView<'a> {
    let tools = state.api.status().and_then(|s| s.tools());
    let may_download = may(
        state,
        who,
        Resource::Diagnostics,
        Action::Download,
        &Target::Site,
    );
    pages::ToolsView {
        hq_host: tools.and_then(|t| t.settings().hq_host.as_ref().map(|h| h.as_str())),
        trunk_uri: tools.and_then(|t| t.settings().trunk_uri.as_deref()),
        available: tools.is_some(),
        may_operate: may(
            state,
            who,
            Resource::Diagnostics,
            Action::Operate,
            &Target::Site,
        ),
        may_download,
        may_bundle: may_download
            && may(
                state,
                who,
                Resource::SystemConfig,
                Action::View,
                &Target::Site,
            ),
        capturing: tools.is_some_and(crate::tools::Tools::capture_running),
    }
}

async fn tools_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let who = match page_user(
        &state,
        &headers,
        ip,
        None,
        "/tools",
        (Resource::Diagnostics, Action::View),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    pages::tools_page(&who, &tools_view(&state, &who), ("", "", ""), None)
}

#[derive(Debug, Deserialize)]
struct ToolForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    count: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    seconds: String,
}

/// The logged-in user of a tool form (session, CSRF, `needs`), or the response.
async fn tool_user(
    state: &WebState,
    headers: &HeaderMap,
    ip: IpAddr,
    form: &ToolForm,
    action: Action,
) -> Result<Authed, Response> {
    let needs = (Resource::Diagnostics, action);
    page_user(state, headers, ip, Some(&form.csrf), "/tools", needs).await
}

fn blank_none(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

async fn tools_ping_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ToolForm>,
) -> Response {
    let who = match tool_user(&state, &headers, ip, &form, Action::Operate).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let view = tools_view(&state, &who);
    let count = match blank_none(&form.count).map(str::parse::<u32>) {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(c)),
        Some(Err(_)) => Err(format!("{:?} is not a count (1 to 10)", form.count)),
    };
    let outcome = match count {
        Err(message) => (
            StatusCode::BAD_REQUEST,
            pages::ToolOutcome::Failed {
                title: "Ping",
                message,
            },
        ),
        Ok(count) => tool_outcome(
            "Ping",
            api::tools::run_ping(&state.api, &who, blank_none(&form.host), count).await,
            |run| pages::ToolOutcome::Run { title: "Ping", run },
        ),
    };
    pages::tools_page(
        &who,
        &view,
        (form.host.trim(), &form.count, ""),
        Some(outcome),
    )
}

/// An API error in words for the page (the field problem when there is one).
fn tool_message(e: &ApiError) -> String {
    e.problems()
        .first()
        .map_or_else(|| e.message().to_owned(), |p| p.to_owned())
}

/// What tool `title` gave, for the page: `shown` of its result, or its error in words
/// with the error's status.
fn tool_outcome<T>(
    title: &'static str,
    result: Result<T, ApiError>,
    shown: impl FnOnce(T) -> pages::ToolOutcome,
) -> (StatusCode, pages::ToolOutcome) {
    match result {
        Ok(v) => (StatusCode::OK, shown(v)),
        Err(e) => (
            e.status(),
            pages::ToolOutcome::Failed {
                title,
                message: tool_message(&e),
            },
        ),
    }
}

async fn tools_traceroute_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ToolForm>,
) -> Response {
    let who = match tool_user(&state, &headers, ip, &form, Action::Operate).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let view = tools_view(&state, &who);
    let title = "Traceroute";
    let outcome = tool_outcome(
        title,
        api::tools::run_traceroute(&state.api, &who, blank_none(&form.host)).await,
        |run| pages::ToolOutcome::Run { title, run },
    );
    pages::tools_page(
        &who,
        &view,
        (form.host.trim(), &form.count, ""),
        Some(outcome),
    )
}

async fn tools_sip_options_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ToolForm>,
) -> Response {
    let who = match tool_user(&state, &headers, ip, &form, Action::Operate).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let view = tools_view(&state, &who);
    let outcome = tool_outcome(
        "SIP OPTIONS",
        api::tools::run_sip_options(&state.api, &who, blank_none(&form.uri)).await,
        pages::ToolOutcome::Probe,
    );
    pages::tools_page(&who, &view, ("", "", form.uri.trim()), Some(outcome))
}

async fn tools_capture_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ToolForm>,
) -> Response {
    let who = match tool_user(&state, &headers, ip, &form, Action::Download).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let failed = |status, message: String| {
        let view = tools_view(&state, &who);
        pages::tools_page(
            &who,
            &view,
            ("", "", ""),
            Some((
                status,
                pages::ToolOutcome::Failed {
                    title: "Capture",
                    message,
                },
            )),
        )
    };
    let Ok(seconds) = form.seconds.trim().parse::<i64>() else {
        return failed(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a number of seconds (1 to 60)", form.seconds),
        );
    };
    match api::tools::run_capture(&state.api, &who, seconds).await {
        Ok(c) => api::tools::pcap_response(c),
        Err(e) => failed(e.status(), tool_message(&e)),
    }
}
