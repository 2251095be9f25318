//! The local accounts HTTP API under `/api/v1` (axum), served by `branchd` when
//! `[web] listen` is set.
//!
//! ```text
//! client ──HTTP──▶ router ──▶ Authed (cookie session, CSRF, subject) ──▶ handler
//!                                                       │ ApiState::authorize (audits denials)
//!                                                       ▼
//!                    accounts (writes, audited) / mask::list_cdrs / audit
//! ```
//!
//! - **Sessions**: `POST /api/v1/session` checks the password with
//!   [`Accounts::verify_login`] (per-account lockout) behind a per-source-IP throttle
//!   ([`session::LoginThrottle`]); it sets the cookie `bl_session` (HttpOnly,
//!   SameSite=Strict) and returns a CSRF token. Sessions are in memory
//!   ([`session::Sessions`]): idle expiry 30 min, absolute 12 h, and a restart of
//!   `branchd` logs everyone out.
//! - **CSRF**: every POST/PUT/PATCH/DELETE except the login must carry
//!   `X-CSRF-Token` equal to the session's token, else 403.
//! - **Authorization**: every handler (except `GET /api/v1/me`, which shows callers
//!   their own identity and permissions, and the OpenAPI document) calls
//!   `ApiState::authorize`, the one path to [`Authorizer::authorize`]; a denial is
//!   audited (result `denied`) and answered 403 with the reason. The subject is loaded
//!   from the store per request; the [`Authorizer`] is cached and reloaded when the
//!   store's `rbac_generation` moves.
//! - **Masking**: CDRs leave only through [`crate::mask::list_cdrs`].
//! - **Reports**: `GET /api/v1/reports/queues` and `/api/v1/reports/agents`
//!   (`reports.view`; queues need `site` scope, agents follow the caller's scope per
//!   agent), see [`crate::reports`] for the figures.
//! - **Sync**: `GET /api/v1/sync` (`sync.view`) reports the sync status
//!   ([`crate::sync::status::SyncStatusReport`]); `POST /api/v1/sync/force`
//!   (`sync.operate`, audited as `force_sync`) wakes the agent: 202, or 409 when sync
//!   is not configured or not running.
//! - **Agents' desktops**: `/api/v1/agents/{agent}` (`me` or an agent ID) shows an
//!   agent's state and logs them in (extension modes fixed and automatic: the SIP
//!   phone registered from the request's address), out, pauses and unpauses them,
//!   and sets the extension mode (see `agents`).
//! - **Screen pop and click-to-call**: `GET /api/v1/events` streams an agent's call
//!   and state events (SSE); `POST /api/v1/calls` rings the caller's phone, then
//!   dials (see `events`).
//! - **Queues**: `/api/v1/queues` lists the call center's queues and creates, replaces
//!   and deletes the box's own (see `queues`); the ACD takes a change without a
//!   restart.
//! - **Blacklist**: `/api/v1/blacklist` lists, adds and deletes caller-screening
//!   entries and sets the mode (see `blacklist`).
//! - **Voicemail**: `/api/v1/voicemail` lists the messages of the mailboxes the
//!   caller may see (numbers masked), serves a message's WAV and deletes one (see
//!   `voicemail`).
//! - **Recordings**: `/api/v1/recordings` lists the call recordings the caller may see
//!   (numbers masked like CDRs) and serves one's WAV with HTTP range requests, audited
//!   as a listen or a download (see `recordings`).
//! - **Customers**: `/api/v1/customers` (CRUD, filters, CSV import/export),
//!   `/api/v1/customer-fields` and `/api/v1/customer-types` (see `customers`);
//!   numbers masked per record like CDRs.
//! - **Campaigns**: `/api/v1/lead-lists` (CSV import), `/api/v1/leads`,
//!   `/api/v1/campaigns` (CRUD, start/pause/close, assign, next leads, preview dial,
//!   progress), `/api/v1/campaign-attempts`, `/api/v1/campaign-settings`, and
//!   `/api/v1/customers/{id}/dial` (see `campaigns`); numbers masked per lead.
//! - **Errors** are JSON `{"error": "...", "problems": [...]}`: 400 validation (every
//!   problem, with its field or CSV row), 401 not logged in, 403 denied or CSRF, 404,
//!   409 conflict, 423 account locked, 429 throttled, 503 when what the route needs of
//!   the running daemon (its main loop, the agents' events, the tools) is not there.
//!   The 401 and 403 come first: a caller the route refuses never learns what the
//!   box runs (`tests/route_matrix.rs` asks every route on a box with no main loop).
//! - **Provisioning**: `GET /api/v1/provisioning` (state, serial, claim QR),
//!   `POST /api/v1/provisioning/token` and `/api/v1/provisioning/photo` apply a QR
//!   token like a USB bundle (see `provisioning`).
//! - **Tools**: `/api/v1/tools/ping`, `traceroute`, `sip-options`, `capture` (a pcap)
//!   and `bundle` (a tar.gz), see `tools` and [`crate::tools`].
//! - The OpenAPI 3.0 description is [`openapi::document`], served at
//!   `GET /api/v1/openapi.json`.
//!
//! - The user list follows the caller's scope: site-wide roles page through every user,
//!   a supervisor sees the members of the groups they administer, anyone else
//!   themselves (each record passes the same authorization check).
//! - A session with `must_change_password` may only change its own password.
//!
//! Limits: plain HTTP (TLS with the device certificate arrives with enrollment); the
//! role and group lists need `site` scope; sessions live in memory (a restart logs
//! everyone out).

mod agents;
mod blacklist;
mod campaigns;
mod customers;
mod events;
mod handlers;
pub mod openapi;
pub(crate) mod provisioning;
pub mod queues;
pub(crate) mod recordings;
mod voicemail;
pub(crate) use handlers::run_force_sync;
mod reports;
pub mod session;
#[cfg(test)]
mod tests;
pub(crate) mod tools;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use serde_json::json;

use crate::accounts::{self, Accounts};
use crate::audit::{self, Actor};
use crate::error::{Error, FieldProblem, LoginError};
use crate::mask::MaskPattern;
use crate::rbac::{Action, Authorizer, Decision, Resource, Subject, Target};
use crate::store::StoreReader;
use crate::sync::status::SyncHandle;
use crate::web::status::StatusHandle;

use self::session::{LoginThrottle, Session, Sessions};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "bl_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Largest body `POST /api/v1/customers/import` takes (a CSV of 200,000 customers).
pub const CUSTOMER_IMPORT_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Milliseconds since the Unix epoch; injected so tests control expiry and lockout.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    accounts: Accounts,
    /// The sync agent's status and force signal.
    sync: SyncHandle,
    /// The daemon's live status and the ring-test channel (`/api/v1/status`, the web
    /// page); `None` in tests that serve the API alone.
    status: Option<StatusHandle>,
    mask_pattern: MaskPattern,
    clock: Clock,
    /// Logged-in sessions; a std Mutex because it is never held across an await.
    sessions: Mutex<Sessions>,
    /// Failed logins per source IP.
    throttle: Mutex<LoginThrottle>,
    /// The compiled roles, replaced when `rbac_generation` moves.
    authorizer: Mutex<Option<Arc<Authorizer>>>,
    /// Whether the web listener serves HTTPS (`crate::web::tls`), for the pages.
    https: crate::web::tls::HttpsHandle,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("accounts", &self.inner.accounts)
            .field("mask_pattern", &self.inner.mask_pattern)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ApiState {
    /// State over `accounts`, masking with `mask_pattern`, reading time from `clock`,
    /// with sync not configured.
    pub fn new(accounts: Accounts, mask_pattern: MaskPattern, clock: Clock) -> ApiState {
        Self::with_sync(accounts, mask_pattern, clock, SyncHandle::not_configured())
    }

    /// [`ApiState::new`] with the daemon's sync handle (`/api/v1/sync`).
    pub fn with_sync(
        accounts: Accounts,
        mask_pattern: MaskPattern,
        clock: Clock,
        sync: SyncHandle,
    ) -> ApiState {
        Self::with_status(accounts, mask_pattern, clock, sync, None)
    }

    /// [`ApiState::with_sync`] with the daemon's live status (`/api/v1/status`, its SSE
    /// stream, ring tests and the web page; see [`crate::web`]).
    pub fn with_status(
        accounts: Accounts,
        mask_pattern: MaskPattern,
        clock: Clock,
        sync: SyncHandle,
        status: Option<StatusHandle>,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                accounts,
                sync,
                status,
                mask_pattern,
                clock,
                sessions: Mutex::new(Sessions::default()),
                throttle: Mutex::new(LoginThrottle::default()),
                authorizer: Mutex::new(None),
                https: crate::web::tls::HttpsHandle::default(),
            }),
        }
    }

    pub(crate) fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    pub(crate) fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    pub(crate) fn sync(&self) -> &SyncHandle {
        &self.inner.sync
    }

    /// How numbers are masked for subjects without `numbers.view`.
    pub(crate) fn mask_pattern(&self) -> &MaskPattern {
        &self.inner.mask_pattern
    }

    /// The daemon's live status, when this API serves a running daemon.
    pub(crate) fn status(&self) -> Option<&StatusHandle> {
        self.inner.status.as_ref()
    }

    /// The web listener's HTTPS state; the HTTPS server ([`crate::web::tls::serve`])
    /// publishes into it.
    pub fn https(&self) -> &crate::web::tls::HttpsHandle {
        &self.inner.https
    }

    /// Checks a login behind the per-IP throttle and starts a session: the one login
    /// path of the JSON API (`POST /api/v1/session`) and the web page's login form.
    pub(crate) async fn log_in(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<LoggedIn, ApiError> {
        let now = self.now();
        if let Some(retry_ms) = lock(&self.inner.throttle).check(ip, now) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; try again later",
            );
            e.retry_after_s = Some((retry_ms + 999) / 1000);
            return Err(e);
        }
        let source = format!("api:{ip}");
        match self
            .accounts()
            .verify_login(username, password, &source, now)
            .await
        {
            Ok(ok) => {
                let session = Session {
                    user_id: ok.subject.user_id,
                    username: ok.subject.username.clone(),
                    csrf_token: String::new(),
                    must_change_password: ok.must_change_password,
                    created_ms: now,
                    last_seen_ms: now,
                };
                let mut sessions = lock(&self.inner.sessions);
                let token = sessions.create(session)?;
                let csrf_token = sessions
                    .touch(&token, now)
                    .map(|s| s.csrf_token)
                    .unwrap_or_default();
                Ok(LoggedIn {
                    token,
                    csrf_token,
                    username: ok.subject.username,
                    must_change_password: ok.must_change_password,
                })
            }
            Err(LoginError::InvalidCredentials) => {
                lock(&self.inner.throttle).record_failure(ip, now);
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid username or password",
                ))
            }
            Err(LoginError::Locked { until_ms }) => {
                lock(&self.inner.throttle).record_failure(ip, now);
                let mut e = ApiError::new(
                    StatusCode::LOCKED,
                    format!(
                        "account locked after repeated failed logins; try again in {} s",
                        (until_ms - now + 999) / 1000
                    ),
                );
                e.body["locked_until_ms"] = json!(until_ms);
                Err(e)
            }
            Err(e @ (LoginError::Disabled | LoginError::InstallerRetired)) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()))
            }
            Err(LoginError::Store(e)) => Err(e.into()),
        }
    }

    /// Ends `who`'s session and audits the logout.
    pub(crate) async fn log_out(&self, who: &Authed) -> Result<(), ApiError> {
        lock(&self.inner.sessions).remove(&who.token);
        let entry = audit::AuditEntry {
            actor: who.actor(),
            action: "logout".to_owned(),
            resource: Resource::Users.as_str().to_owned(),
            target: who.subject.username.clone(),
            result: audit::AuditResult::Ok,
            detail: json!({}),
        };
        self.accounts().audit(entry, self.now()).await?;
        Ok(())
    }

    /// The logged-in session of a request: its `bl_session` cookie, and, when `csrf`
    /// is `Some`, the token the request carried (header or form field), which must
    /// equal the session's. The subject is loaded from the store for this request.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
        csrf: Option<&[u8]>,
    ) -> Result<Authed, ApiError> {
        let now = self.now();
        let token = session_cookie(headers).ok_or_else(ApiError::not_logged_in)?;
        let session = lock(&self.inner.sessions)
            .touch(&token, now)
            .ok_or_else(ApiError::not_logged_in)?;
        if let Some(given) = csrf {
            if !same_secret(given, session.csrf_token.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token",
                ));
            }
        }
        let reader = self.reader()?;
        let subject = match accounts::load_subject(&reader, session.user_id, now) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => {
                lock(&self.inner.sessions).remove(&token);
                return Err(ApiError::not_logged_in());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Authed {
            token,
            session,
            subject,
            source: format!("api:{ip}"),
            ip,
        })
    }

    pub(crate) fn reader(&self) -> Result<StoreReader, ApiError> {
        Ok(self.inner.accounts.reader()?)
    }

    /// The authorizer, reloaded when the store's roles changed since it was loaded.
    pub(crate) fn authorizer(&self, reader: &StoreReader) -> Result<Arc<Authorizer>, ApiError> {
        let generation = reader.rbac_generation()?;
        let mut cached = lock(&self.inner.authorizer);
        match &*cached {
            Some(a) if a.generation() == generation => Ok(Arc::clone(a)),
            _ => {
                let a = Arc::new(Authorizer::load(reader)?);
                *cached = Some(Arc::clone(&a));
                Ok(a)
            }
        }
    }

    /// Loads the current authorizer and runs [`ApiState::authorize`] with it; returns
    /// the authorizer for handlers that filter records with it afterwards.
    pub(crate) fn require<'a>(
        &'a self,
        reader: &StoreReader,
        who: &'a Authed,
        resource: Resource,
        action: Action,
        record: &'a Target,
        target: &'a str,
    ) -> impl Future<Output = Result<Arc<Authorizer>, ApiError>> + Send + 'a {
        // Load before the future so it does not hold the (non-Sync) reader across awaits.
        let authz = self.authorizer(reader);
        async move {
            let authz = authz?;
            self.authorize(who, &authz, resource, action, record, target)
                .await?;
            Ok(authz)
        }
    }

    /// The one authorization check of every handler: allowed, or the denial audited
    /// (`target` names the record in the audit row) and returned as a 403.
    pub(crate) async fn authorize(
        &self,
        who: &Authed,
        authz: &Authorizer,
        resource: Resource,
        action: Action,
        record: &Target,
        target: &str,
    ) -> Result<(), ApiError> {
        // A user holding an initial or admin-reset password may only replace it.
        let changing_own_password = resource == Resource::Users
            && action == Action::Edit
            && matches!(record, Target::Owned { owner: Some(o), .. } if *o == who.subject.user_id);
        if who.session.must_change_password && !changing_own_password {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password change required: POST /api/v1/me/password first".to_owned(),
            ));
        }
        match authz.authorize(&who.subject, resource, action, record) {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { reason } => {
                if let Err(e) = audit::audit_denied(
                    self.accounts().writer(),
                    who.actor(),
                    action,
                    resource,
                    target,
                    &reason,
                    self.now(),
                )
                .await
                {
                    tracing::warn!(error = %e, "denial not audited");
                }
                Err(ApiError::new(StatusCode::FORBIDDEN, reason.to_string()))
            }
        }
    }
}

/// A request from a logged-in session: CSRF checked for state-changing methods, the
/// subject loaded from the store for this request.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The session token (the cookie value).
    token: String,
    /// The session.
    session: Session,
    /// The user as of this request.
    subject: Subject,
    /// `api:<ip>`.
    source: String,
    /// The client's IP address (the agent desktop's, for automatic extension mode).
    ip: IpAddr,
}

impl Authed {
    /// The user as of this request.
    pub(crate) fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The session's CSRF token (the web page puts it in its forms).
    pub(crate) fn csrf_token(&self) -> &str {
        &self.session.csrf_token
    }

    /// The client's IP address.
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }

    pub(crate) fn actor(&self) -> Actor {
        Actor::new(self.subject.username.clone(), self.source.clone())
    }

    /// The caller's own records (`Target::Owned` with them as owner).
    pub(crate) fn own_target(&self) -> Target {
        Target::Owned {
            owner: Some(self.subject.user_id),
            groups: self.subject.groups.clone(),
        }
    }
}

/// The client's IP (from the connection; `0.0.0.0` when unknown, e.g. in-process tests
/// that do not set [`ConnectInfo`]).
pub(crate) fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Constant-time comparison, so the CSRF check does not leak the token by timing.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let changes_state = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let csrf = changes_state.then(|| {
            parts
                .headers
                .get(CSRF_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default()
        });
        state.authenticate(&parts.headers, client_ip(parts), csrf)
    }
}

/// What a successful [`ApiState::log_in`] gives.
#[derive(Debug)]
pub(crate) struct LoggedIn {
    /// The session token (the cookie value).
    pub(crate) token: String,
    /// The session's CSRF token.
    pub(crate) csrf_token: String,
    /// The user.
    pub(crate) username: String,
    /// Whether the password must be changed first.
    pub(crate) must_change_password: bool,
}

/// The `Set-Cookie` value of a new session: HttpOnly, SameSite=Strict, whole site,
/// and `Secure` when the login came over HTTPS.
pub(crate) fn session_cookie_value(token: &str, secure: crate::web::tls::Secure) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{}",
        secure.attribute()
    )
}

/// The `Set-Cookie` value that ends the session cookie.
pub(crate) const CLEAR_SESSION_COOKIE: &str =
    "bl_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0";

/// An error response: status and `{"error": ..., "problems": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    retry_after_s: Option<i64>,
}

/// A JSON request body, or a 400 naming `body` with what axum found wrong in it
/// (every route that takes JSON).
fn body<T>(
    b: std::result::Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> std::result::Result<T, ApiError> {
    b.map(|axum::Json(t)| t)
        .map_err(|e| ApiError::invalid("body", e.body_text()))
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            retry_after_s: None,
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The error message in words.
    pub(crate) fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or("error")
    }

    /// Seconds to wait before retrying (throttled logins).
    pub(crate) fn retry_after_s(&self) -> Option<i64> {
        self.retry_after_s
    }

    /// The messages of the field problems (400s), `field: message`.
    pub(crate) fn problems(&self) -> Vec<String> {
        self.body["problems"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn not_logged_in() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let problems = vec![FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        }];
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": "invalid request", "problems": problems }),
            retry_after_s: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        let with = |status, problems: serde_json::Value| ApiError {
            status,
            body: json!({ "error": message, "problems": problems }),
            retry_after_s: None,
        };
        match e {
            Error::Invalid { problems, .. } => with(StatusCode::BAD_REQUEST, json!(problems)),
            Error::CsvImport { errors } => with(StatusCode::BAD_REQUEST, json!(errors)),
            Error::WrongPassword { .. } => ApiError::invalid("old_password", "wrong password"),
            Error::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, message),
            Error::BuiltinRoleImmutable { .. }
            | Error::RoleInUse { .. }
            | Error::GroupInUse { .. }
            | Error::RoleNameReserved { .. }
            | Error::BlacklistConflict { .. }
            | Error::CustomerConflict { .. }
            | Error::CampaignConflict { .. }
            | Error::QueueConflict { .. } => ApiError::new(StatusCode::CONFLICT, message),
            Error::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, message),
            other => {
                tracing::error!(error = %other, "api request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Builds the router and the list of `(method, path)` it serves (which the OpenAPI
/// document must describe; a test holds the two together).
fn build(state: ApiState) -> (Router, Vec<(Method, &'static str)>) {
    use handlers as h;
    let mut routes = Vec::new();
    let mut r = Router::new();
    macro_rules! route {
        ($method:ident, $m:expr, $path:literal, $handler:expr) => {{
            routes.push(($m, $path));
            r = r.route($path, $method($handler));
        }};
    }
    route!(post, Method::POST, "/api/v1/session", h::login);
    route!(delete, Method::DELETE, "/api/v1/session", h::logout);
    route!(get, Method::GET, "/api/v1/me", h::me);
    route!(
        post,
        Method::POST,
        "/api/v1/me/password",
        h::change_own_password
    );
    route!(get, Method::GET, "/api/v1/users", h::list_users);
    route!(post, Method::POST, "/api/v1/users", h::create_user);
    route!(get, Method::GET, "/api/v1/users/export", h::export_users);
    route!(post, Method::POST, "/api/v1/users/import", h::import_users);
    route!(get, Method::GET, "/api/v1/users/{id}", h::get_user);
    route!(patch, Method::PATCH, "/api/v1/users/{id}", h::update_user);
    route!(delete, Method::DELETE, "/api/v1/users/{id}", h::delete_user);
    route!(
        post,
        Method::POST,
        "/api/v1/users/{id}/password",
        h::reset_password
    );
    route!(get, Method::GET, "/api/v1/roles", h::list_roles);
    route!(post, Method::POST, "/api/v1/roles", h::create_role);
    route!(get, Method::GET, "/api/v1/roles/{id}", h::get_role);
    route!(put, Method::PUT, "/api/v1/roles/{id}", h::update_role);
    route!(delete, Method::DELETE, "/api/v1/roles/{id}", h::delete_role);
    route!(get, Method::GET, "/api/v1/groups", h::list_groups);
    route!(post, Method::POST, "/api/v1/groups", h::create_group);
    route!(get, Method::GET, "/api/v1/groups/{id}", h::get_group);
    route!(put, Method::PUT, "/api/v1/groups/{id}", h::update_group);
    route!(
        delete,
        Method::DELETE,
        "/api/v1/groups/{id}",
        h::delete_group
    );
    route!(get, Method::GET, "/api/v1/cdrs", h::list_cdrs);
    route!(get, Method::GET, "/api/v1/events", events::events);
    route!(get, Method::GET, "/api/v1/agents/{agent}", agents::get);
    route!(
        post,
        Method::POST,
        "/api/v1/agents/{agent}/login",
        agents::login
    );
    route!(
        post,
        Method::POST,
        "/api/v1/agents/{agent}/logout",
        agents::logout
    );
    route!(
        post,
        Method::POST,
        "/api/v1/agents/{agent}/pause",
        agents::pause
    );
    route!(
        post,
        Method::POST,
        "/api/v1/agents/{agent}/unpause",
        agents::unpause
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/agents/{agent}/extension-mode",
        agents::put_mode
    );
    route!(post, Method::POST, "/api/v1/calls", events::click_to_call);
    route!(get, Method::GET, "/api/v1/reports/queues", reports::queues);
    route!(get, Method::GET, "/api/v1/reports/agents", reports::agents);
    route!(get, Method::GET, "/api/v1/audit", h::list_audit);
    route!(post, Method::POST, "/api/v1/audit/verify", h::verify_audit);
    route!(get, Method::GET, "/api/v1/sync", h::sync_status);
    route!(post, Method::POST, "/api/v1/sync/force", h::force_sync);
    route!(get, Method::GET, "/api/v1/status", crate::web::status_json);
    route!(get, Method::GET, "/api/v1/system", crate::web::system_json);
    route!(
        get,
        Method::GET,
        "/api/v1/charts/calls-per-hour",
        crate::web::calls_per_hour_json
    );
    route!(
        get,
        Method::GET,
        "/api/v1/charts/line",
        crate::web::line_json
    );
    route!(
        get,
        Method::GET,
        "/api/v1/charts/call-quality",
        crate::web::call_quality_json
    );
    route!(
        get,
        Method::GET,
        "/api/v1/charts/sync-backlog",
        crate::web::sync_backlog_json
    );
    route!(
        get,
        Method::GET,
        "/api/v1/events/status",
        crate::web::status_events
    );
    route!(
        post,
        Method::POST,
        "/api/v1/ports/{port}/ring-test",
        crate::web::ring_test_api
    );
    route!(
        post,
        Method::POST,
        "/api/v1/ports/{port}/line-test",
        crate::web::line_test_api
    );
    route!(
        post,
        Method::POST,
        "/api/v1/ports/{port}/loopback-test",
        crate::web::loopback_test_api
    );
    route!(
        post,
        Method::POST,
        "/api/v1/system/reboot",
        crate::web::reboot_api
    );
    route!(get, Method::GET, "/api/v1/sip", crate::web::sip_json);
    route!(
        get,
        Method::GET,
        "/api/v1/calls/active",
        crate::web::active_calls_json
    );
    route!(get, Method::GET, "/api/v1/queues", queues::list);
    route!(get, Method::GET, "/api/v1/call-center", queues::live_json);
    route!(put, Method::PUT, "/api/v1/queues/{name}", queues::put);
    route!(
        delete,
        Method::DELETE,
        "/api/v1/queues/{name}",
        queues::delete
    );
    route!(get, Method::GET, "/api/v1/blacklist", blacklist::list);
    route!(post, Method::POST, "/api/v1/blacklist", blacklist::add);
    route!(
        get,
        Method::GET,
        "/api/v1/blacklist/mode",
        blacklist::get_mode
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/blacklist/mode",
        blacklist::set_mode
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/blacklist/{id}",
        blacklist::delete
    );
    route!(get, Method::GET, "/api/v1/voicemail", voicemail::list);
    route!(
        get,
        Method::GET,
        "/api/v1/voicemail/{id}/audio",
        voicemail::audio
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/voicemail/{id}",
        voicemail::delete
    );
    route!(get, Method::GET, "/api/v1/recordings", recordings::list);
    route!(
        get,
        Method::GET,
        "/api/v1/recordings/{id}/audio",
        recordings::audio
    );
    route!(get, Method::GET, "/api/v1/customers", customers::list);
    route!(post, Method::POST, "/api/v1/customers", customers::create);
    route!(
        get,
        Method::GET,
        "/api/v1/customers/export",
        customers::export
    );
    // A CSV of 100,000 customers is ~5 MB: above axum's 2 MB default body limit.
    routes.push((Method::POST, "/api/v1/customers/import"));
    r = r.route(
        "/api/v1/customers/import",
        post(customers::import).layer(DefaultBodyLimit::max(CUSTOMER_IMPORT_MAX_BYTES)),
    );
    route!(
        get,
        Method::GET,
        "/api/v1/customers/{id}",
        customers::get_one
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/customers/{id}",
        customers::replace
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/customers/{id}",
        customers::delete
    );
    route!(
        get,
        Method::GET,
        "/api/v1/customer-fields",
        customers::list_fields
    );
    route!(
        post,
        Method::POST,
        "/api/v1/customer-fields",
        customers::add_field
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/customer-fields/{name}",
        customers::update_field
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/customer-fields/{name}",
        customers::delete_field
    );
    route!(
        get,
        Method::GET,
        "/api/v1/customers/{id}/service-records",
        customers::service_records
    );
    route!(
        post,
        Method::POST,
        "/api/v1/calls/{call_id}/notes",
        customers::add_note
    );
    route!(
        get,
        Method::GET,
        "/api/v1/lead-lists",
        campaigns::list_lists
    );
    route!(
        post,
        Method::POST,
        "/api/v1/lead-lists",
        campaigns::create_list
    );
    route!(
        get,
        Method::GET,
        "/api/v1/lead-lists/{id}",
        campaigns::get_list
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/lead-lists/{id}",
        campaigns::delete_list
    );
    route!(
        post,
        Method::POST,
        "/api/v1/lead-lists/{id}/import",
        campaigns::import_leads
    );
    route!(
        get,
        Method::GET,
        "/api/v1/lead-lists/{id}/leads",
        campaigns::list_leads
    );
    route!(get, Method::GET, "/api/v1/leads/{id}", campaigns::get_lead);
    route!(
        get,
        Method::GET,
        "/api/v1/campaigns",
        campaigns::list_campaigns
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns",
        campaigns::create_campaign
    );
    route!(
        get,
        Method::GET,
        "/api/v1/campaigns/{id}",
        campaigns::get_campaign
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/campaigns/{id}",
        campaigns::update_campaign
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/campaigns/{id}",
        campaigns::delete_campaign
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/start",
        campaigns::start
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/pause",
        campaigns::pause
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/close",
        campaigns::close
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/assign",
        campaigns::assign
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/next",
        campaigns::next
    );
    route!(
        get,
        Method::GET,
        "/api/v1/campaigns/{id}/progress",
        campaigns::progress
    );
    route!(
        post,
        Method::POST,
        "/api/v1/campaigns/{id}/leads/{lead}/dial",
        campaigns::dial_lead
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/campaign-attempts/{id}",
        campaigns::put_attempt
    );
    route!(
        post,
        Method::POST,
        "/api/v1/customers/{id}/dial",
        campaigns::dial_customer
    );
    route!(
        get,
        Method::GET,
        "/api/v1/campaign-settings",
        campaigns::get_settings
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/campaign-settings",
        campaigns::put_settings
    );
    route!(
        get,
        Method::GET,
        "/api/v1/customer-types",
        customers::list_types
    );
    route!(
        put,
        Method::PUT,
        "/api/v1/customer-types/{digit}",
        customers::set_type
    );
    route!(
        delete,
        Method::DELETE,
        "/api/v1/customer-types/{digit}",
        customers::delete_type
    );
    route!(post, Method::POST, "/api/v1/tools/ping", tools::ping);
    route!(
        post,
        Method::POST,
        "/api/v1/tools/traceroute",
        tools::traceroute
    );
    route!(
        post,
        Method::POST,
        "/api/v1/tools/sip-options",
        tools::sip_options
    );
    route!(post, Method::POST, "/api/v1/tools/capture", tools::capture);
    route!(
        get,
        Method::GET,
        "/api/v1/tools/bundle",
        tools::download_bundle
    );
    route!(get, Method::GET, "/api/v1/logs", tools::logs_json);
    route!(get, Method::GET, "/api/v1/sip/trace", tools::sip_trace_json);
    route!(
        get,
        Method::GET,
        "/api/v1/events/sip-trace",
        tools::sip_trace_events
    );
    route!(
        get,
        Method::GET,
        "/api/v1/provisioning",
        provisioning::get_state
    );
    route!(
        post,
        Method::POST,
        "/api/v1/provisioning/token",
        provisioning::post_token
    );
    // A phone photo is a few MB: above axum's 2 MB default body limit.
    routes.push((Method::POST, "/api/v1/provisioning/photo"));
    r = r.route(
        "/api/v1/provisioning/photo",
        post(provisioning::post_photo).layer(DefaultBodyLimit::max(provisioning::PHOTO_BODY_LIMIT)),
    );
    route!(get, Method::GET, "/api/v1/openapi.json", h::openapi);
    let router = r
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state);
    (router, routes)
}

/// The `/api/v1` router over `state`.
pub fn router(state: ApiState) -> Router {
    build(state).0
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| Error::WebServe { addr, source })
}

/// Runs `job` in one store transaction (named `label` in errors) together with its
/// audit row (`resource`, `action`, the target and detail `job` returns); a failure is audited `failed` with
/// the error (target `target_hint`) in a transaction of its own. The one path the
/// list-like resources' API changes (blacklist, customers) are written by.
pub(crate) async fn audited_change<T, F>(
    state: &ApiState,
    who: &Authed,
    (resource, label): (Resource, &'static str),
    action: &'static str,
    target_hint: String,
    job: F,
) -> crate::error::Result<T>
where
    T: Send + 'static,
    F: FnOnce(
            &rusqlite::Connection,
            &std::path::Path,
        ) -> crate::error::Result<(T, String, serde_json::Value)>
        + Send
        + 'static,
{
    use crate::audit::{AuditEntry, AuditResult};
    let (now, actor) = (state.now(), who.actor());
    let writer = state.accounts().writer().clone();
    let ok_actor = actor.clone();
    let result = writer
        .transact(label, move |tx, path| {
            let (value, target, detail) = job(tx, path)?;
            audit::append(
                tx,
                path,
                &AuditEntry {
                    actor: ok_actor,
                    action: action.to_owned(),
                    resource: resource.as_str().to_owned(),
                    target,
                    result: AuditResult::Ok,
                    detail,
                },
                now,
            )?;
            Ok(value)
        })
        .await;
    if let Err(e) = &result {
        if !matches!(e, Error::StoreWriterGone) {
            let entry = AuditEntry {
                actor,
                action: action.to_owned(),
                resource: resource.as_str().to_owned(),
                target: target_hint,
                result: AuditResult::Failed,
                detail: json!({ "error": e.to_string() }),
            };
            if let Err(audit_error) = audit::audit(&writer, entry, now).await {
                tracing::warn!(error = %audit_error, %label, "failed change not audited");
            }
        }
    }
    result
}
