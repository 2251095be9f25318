//! The route handlers. Each one authorizes through [`ApiState::authorize`] first.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{client_ip, lock, ApiError, ApiState, Authed};
use crate::accounts::{self, GroupSpec, NewUser, PageRequest, RoleSpec, UserPatch};
use crate::audit;
use crate::error::Error;
use crate::mask::{self, NumberDirectory};
use crate::rbac::{Action, Decision, GroupId, Resource, RoleId, Scope, Target, UserId};

type ApiResult<T = Response> = Result<T, ApiError>;

/// The client's IP address.
pub(super) struct ClientIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientIp(client_ip(parts)))
    }
}

use super::body;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

fn ok_json(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// `?limit&offset` of list routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

fn default_limit() -> u32 {
    PageRequest::default().limit
}

impl From<PageQuery> for PageRequest {
    fn from(q: PageQuery) -> Self {
        PageRequest {
            limit: q.limit,
            offset: q.offset,
        }
    }
}

// --- sessions ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    username: String,
    password: String,
}

pub(super) async fn login(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    secure: crate::web::tls::Secure,
    b: Result<Json<LoginBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let ok = state.log_in(ip, &b.username, &b.password).await?;
    Ok((
        [(
            header::SET_COOKIE,
            super::session_cookie_value(&ok.token, secure),
        )],
        Json(json!({
            "username": ok.username,
            "must_change_password": ok.must_change_password,
            "csrf_token": ok.csrf_token,
        })),
    )
        .into_response())
}

pub(super) async fn logout(State(state): State<ApiState>, who: Authed) -> ApiResult {
    state.log_out(&who).await?;
    Ok((
        [(header::SET_COOKIE, super::CLEAR_SESSION_COOKIE)],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

// --- own profile -----------------------------------------------------------------------

/// Callers' own identity and effective permissions (not gated: it tells them only
/// what they may do, which the web page needs to decide what to show).
pub(super) async fn me(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let user = accounts::user(&reader, who.subject.user_id)?;
    let mut permissions: Vec<String> = who
        .subject
        .roles
        .iter()
        .filter_map(|r| authz.role(*r))
        .flat_map(|set| set.permissions())
        .map(|p| p.to_string())
        .collect();
    permissions.sort();
    permissions.dedup();
    ok_json(json!({
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "roles": user.roles,
        "must_change_password": who.session.must_change_password,
        "permissions": permissions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePasswordBody {
    old_password: String,
    new_password: String,
}

pub(super) async fn change_own_password(
    State(state): State<ApiState>,
    who: Authed,
    b: Result<Json<ChangePasswordBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let authz = state.authorizer(&state.reader()?)?;
    let me = who.subject.user_id;
    state
        .authorize(
            &who,
            &authz,
            Resource::Users,
            Action::Edit,
            &who.own_target(),
            &who.subject.username,
        )
        .await?;
    state
        .accounts()
        .change_own_password(
            &who.actor(),
            me,
            &b.old_password,
            &b.new_password,
            state.now(),
        )
        .await?;
    let mut sessions = lock(&state.inner.sessions);
    sessions.remove_user(me, Some(&who.token));
    sessions.set_must_change(me, false);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- users ---------------------------------------------------------------------------

/// The record a user is, for authorization: owned by that user, in their groups.
fn user_target(reader: &crate::store::StoreReader, id: UserId, now: i64) -> ApiResult<Target> {
    let s = accounts::load_subject(reader, id, now)?;
    Ok(Target::Owned {
        owner: Some(id),
        groups: s.groups,
    })
}

pub(super) async fn list_users(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let page: accounts::PageRequest = q.into();
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    match authz.granted_scope(&who.subject, Resource::Users, Action::View) {
        Some(Scope::Site | Scope::All) => {
            state
                .authorize(
                    &who,
                    &authz,
                    Resource::Users,
                    Action::View,
                    &Target::Site,
                    "*",
                )
                .await?;
            ok_json(accounts::list_users(&reader, page)?)
        }
        Some(Scope::Own | Scope::Group) => {
            // A supervisor sees the users of the groups they administer, an agent
            // themselves: filter every user through the same authorization check.
            page.validate()?;
            let now = state.now();
            let me = user_target(&reader, who.subject.user_id, now)?;
            state
                .authorize(&who, &authz, Resource::Users, Action::View, &me, "*")
                .await?;
            let mut visible = Vec::new();
            let mut offset = 0;
            loop {
                let chunk = accounts::list_users(
                    &reader,
                    accounts::PageRequest {
                        limit: accounts::MAX_PAGE,
                        offset,
                    },
                )?;
                let n = u32::try_from(chunk.items.len()).unwrap_or(u32::MAX);
                for user in chunk.items {
                    let target = user_target(&reader, user.id, now)?;
                    let decision =
                        authz.authorize(&who.subject, Resource::Users, Action::View, &target);
                    if matches!(decision, Decision::Allow { .. }) {
                        visible.push(user);
                    }
                }
                if n < accounts::MAX_PAGE {
                    break;
                }
                offset += n;
            }
            let total = i64::try_from(visible.len()).unwrap_or(i64::MAX);
            let items = visible
                .into_iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .collect();
            ok_json(accounts::Page {
                items,
                total,
                limit: page.limit,
                offset: page.offset,
            })
        }
        // No grant at all: the check below denies and audits it.
        None => {
            state
                .authorize(
                    &who,
                    &authz,
                    Resource::Users,
                    Action::View,
                    &Target::Site,
                    "*",
                )
                .await?;
            ok_json(accounts::list_users(&reader, page)?)
        }
    }
}

pub(super) async fn get_user(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let target = user_target(&reader, UserId(id), state.now())?;
    state
        .authorize(
            &who,
            &authz,
            Resource::Users,
            Action::View,
            &target,
            &id.to_string(),
        )
        .await?;
    ok_json(accounts::user(&reader, UserId(id))?)
}

/// Body of `POST /api/v1/users` ([`NewUser`] with defaults).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct NewUserBody {
    username: String,
    display_name: String,
    password: String,
    extension: Option<String>,
    agent_id: Option<String>,
    pin: Option<String>,
    enabled: bool,
    must_change_password: bool,
    roles: Vec<String>,
    groups: Vec<String>,
}

impl Default for NewUserBody {
    fn default() -> Self {
        NewUserBody {
            username: String::new(),
            display_name: String::new(),
            password: String::new(),
            extension: None,
            agent_id: None,
            pin: None,
            enabled: true,
            must_change_password: false,
            roles: Vec::new(),
            groups: Vec::new(),
        }
    }
}

pub(super) async fn create_user(
    State(state): State<ApiState>,
    who: Authed,
    b: Result<Json<NewUserBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Users,
            Action::Add,
            &Target::Site,
            &b.username,
        )
        .await?;
    let new = NewUser {
        username: b.username,
        display_name: b.display_name,
        password: b.password,
        extension: b.extension,
        agent_id: b.agent_id,
        pin: b.pin,
        enabled: b.enabled,
        must_change_password: b.must_change_password,
        roles: b.roles,
        groups: b.groups,
    };
    let user = state
        .accounts()
        .create_user(&who.actor(), new, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

pub(super) async fn update_user(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Result<Json<UserPatch>, JsonRejection>,
) -> ApiResult {
    let patch = body(b)?;
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let target = user_target(&reader, UserId(id), state.now())?;
    drop(reader);
    // Roles, groups, enabled, extension and agent ID decide what a user may see: a
    // grant of `users.edit` for one's own record must not let anyone raise their own
    // rights or take over another extension's calls, so those need site scope; so does
    // the agent's recording policy (nobody turns off their own recording).
    let touches_rights = patch.roles.is_some()
        || patch.groups.is_some()
        || patch.enabled.is_some()
        || patch.extension.is_some()
        || patch.agent_id.is_some()
        || patch.recording.is_some();
    let touches_acd = patch.recording.is_some() || patch.agent_id.is_some();
    let record = if touches_rights {
        &Target::Site
    } else {
        &target
    };
    state
        .authorize(
            &who,
            &authz,
            Resource::Users,
            Action::Edit,
            record,
            &id.to_string(),
        )
        .await?;
    let user = state
        .accounts()
        .update_user(&who.actor(), UserId(id), patch, state.now())
        .await?;
    if !user.enabled {
        lock(&state.inner.sessions).remove_user(user.id, None);
    }
    if touches_acd {
        // The call center (agents and their recording policy) reloads.
        state.accounts().writer().notify_acd_changed();
    }
    ok_json(user)
}

pub(super) async fn delete_user(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let target = user_target(&reader, UserId(id), state.now())?;
    drop(reader);
    state
        .authorize(
            &who,
            &authz,
            Resource::Users,
            Action::Delete,
            &target,
            &id.to_string(),
        )
        .await?;
    if UserId(id) == who.subject.user_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "you cannot delete your own account",
        ));
    }
    state
        .accounts()
        .delete_user(&who.actor(), UserId(id), state.now())
        .await?;
    lock(&state.inner.sessions).remove_user(UserId(id), None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetPasswordBody {
    new_password: String,
}

pub(super) async fn reset_password(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Result<Json<ResetPasswordBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let target = user_target(&reader, UserId(id), state.now())?;
    drop(reader);
    state
        .authorize(
            &who,
            &authz,
            Resource::Users,
            Action::Edit,
            &target,
            &id.to_string(),
        )
        .await?;
    if UserId(id) == who.subject.user_id {
        return Err(ApiError::invalid(
            "id",
            "use POST /api/v1/me/password to change your own password",
        ));
    }
    state
        .accounts()
        .reset_password(&who.actor(), UserId(id), &b.new_password, state.now())
        .await?;
    lock(&state.inner.sessions).remove_user(UserId(id), None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn export_users(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Users,
            Action::Export,
            &Target::Site,
            "csv",
        )
        .await?;
    let csv = accounts::export_users_csv(&reader)?;
    let rows = csv.lines().count().saturating_sub(1);
    state
        .accounts()
        .audit(accounts::export_audit_entry(who.actor(), rows), state.now())
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"users.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

pub(super) async fn import_users(
    State(state): State<ApiState>,
    who: Authed,
    text: String,
) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Users,
            Action::Import,
            &Target::Site,
            "csv",
        )
        .await?;
    let passwords = state
        .accounts()
        .import_users_csv(&who.actor(), &text, state.now())
        .await?;
    ok_json(json!({ "imported": passwords.len(), "initial_passwords": passwords }))
}

// --- roles ---------------------------------------------------------------------------

pub(super) async fn list_roles(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Roles,
            Action::View,
            &Target::Site,
            "*",
        )
        .await?;
    ok_json(accounts::list_roles(&reader, q.into())?)
}

pub(super) async fn get_role(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Roles,
            Action::View,
            &Target::Site,
            &id.to_string(),
        )
        .await?;
    ok_json(accounts::role(&reader, RoleId(id))?)
}

pub(super) async fn create_role(
    State(state): State<ApiState>,
    who: Authed,
    b: Result<Json<RoleSpec>, JsonRejection>,
) -> ApiResult {
    let spec = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Roles,
            Action::Add,
            &Target::Site,
            &spec.name,
        )
        .await?;
    let role = state
        .accounts()
        .create_role(&who.actor(), spec, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(role)).into_response())
}

pub(super) async fn update_role(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Result<Json<RoleSpec>, JsonRejection>,
) -> ApiResult {
    let spec = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Roles,
            Action::Edit,
            &Target::Site,
            &id.to_string(),
        )
        .await?;
    ok_json(
        state
            .accounts()
            .update_role(&who.actor(), RoleId(id), spec, state.now())
            .await?,
    )
}

pub(super) async fn delete_role(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Roles,
            Action::Delete,
            &Target::Site,
            &id.to_string(),
        )
        .await?;
    state
        .accounts()
        .delete_role(&who.actor(), RoleId(id), state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- groups --------------------------------------------------------------------------

/// A group as a record: ownerless, in itself (a group admin reaches it at `group` scope).
fn group_target(id: i64) -> Target {
    Target::Owned {
        owner: None,
        groups: vec![GroupId(id)],
    }
}

pub(super) async fn list_groups(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Groups,
            Action::View,
            &Target::Site,
            "*",
        )
        .await?;
    ok_json(accounts::list_groups(&reader, q.into())?)
}

pub(super) async fn get_group(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Groups,
            Action::View,
            &group_target(id),
            &id.to_string(),
        )
        .await?;
    ok_json(accounts::group(&reader, GroupId(id))?)
}

pub(super) async fn create_group(
    State(state): State<ApiState>,
    who: Authed,
    b: Result<Json<GroupSpec>, JsonRejection>,
) -> ApiResult {
    let spec = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Groups,
            Action::Add,
            &Target::Site,
            &spec.name,
        )
        .await?;
    let group = state
        .accounts()
        .create_group(&who.actor(), spec, state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

pub(super) async fn update_group(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Result<Json<GroupSpec>, JsonRejection>,
) -> ApiResult {
    let spec = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Groups,
            Action::Edit,
            &group_target(id),
            &id.to_string(),
        )
        .await?;
    ok_json(
        state
            .accounts()
            .update_group(&who.actor(), GroupId(id), spec, state.now())
            .await?,
    )
}

pub(super) async fn delete_group(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Groups,
            Action::Delete,
            &group_target(id),
            &id.to_string(),
        )
        .await?;
    state
        .accounts()
        .delete_group(&who.actor(), GroupId(id), state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- CDRs ----------------------------------------------------------------------------

/// Default CDR window: the last 30 days.
const DEFAULT_CDR_WINDOW_MS: i64 = 30 * 24 * 60 * 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CdrQuery {
    since: Option<i64>,
    until: Option<i64>,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

pub(super) async fn list_cdrs(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<CdrQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let now = state.now();
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    // Any `calls.view` grant reaches the caller's own calls; list_cdrs then keeps only
    // the records the grant covers, each checked with the same authorizer.
    state
        .authorize(
            &who,
            &authz,
            Resource::Calls,
            Action::View,
            &who.own_target(),
            "*",
        )
        .await?;
    let dir = NumberDirectory::load(&reader)?;
    let page = mask::list_cdrs(
        &reader,
        &who.subject,
        &authz,
        &state.inner.mask_pattern,
        &dir,
        q.since.unwrap_or(now.saturating_sub(DEFAULT_CDR_WINDOW_MS)),
        q.until.unwrap_or(i64::MAX),
        PageRequest {
            limit: q.limit,
            offset: q.offset,
        },
    )?;
    ok_json(page)
}

// --- audit ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after_id: i64,
    #[serde(default = "default_limit")]
    limit: u32,
}

pub(super) async fn list_audit(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    PageRequest {
        limit: q.limit,
        offset: 0,
    }
    .validate()?;
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Audit,
            Action::View,
            &Target::Site,
            "*",
        )
        .await?;
    let rows = audit::list(&reader, q.after_id, q.limit as usize)?;
    ok_json(json!({ "items": rows }))
}

pub(super) async fn verify_audit(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Audit,
            Action::Audit,
            &Target::Site,
            "audit_log",
        )
        .await?;
    match audit::verify_store(&reader) {
        Ok(rows) => ok_json(json!({ "ok": true, "rows": rows })),
        Err(Error::AuditBroken { id, problem }) => ok_json(json!({
            "ok": false,
            "broken_row": id,
            "problem": problem.to_string(),
        })),
        Err(e) => Err(e.into()),
    }
}

// --- sync ----------------------------------------------------------------------------

pub(super) async fn sync_status(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Sync,
            Action::View,
            &Target::Site,
            "sync",
        )
        .await?;
    ok_json(state.sync().report(&reader, state.now())?)
}

pub(super) async fn force_sync(State(state): State<ApiState>, who: Authed) -> ApiResult {
    run_force_sync(&state, &who).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "forced": true }))).into_response())
}

/// Authorizes (`sync.operate`), wakes the sync agent and audits the outcome
/// (`force_sync`, ok or failed with the reason): the API's route and the web page's
/// sync form. 409 when sync is not configured or not running.
pub(crate) async fn run_force_sync(state: &ApiState, who: &Authed) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            who,
            Resource::Sync,
            Action::Operate,
            &Target::Site,
            "sync",
        )
        .await?;
    drop(reader);
    let sync = state.sync();
    let refused = if !sync.is_configured() {
        Some("sync with HQ is not configured on this box (no [hq] section)")
    } else if !sync.force() {
        Some("the sync agent is not running; see GET /api/v1/sync for why")
    } else {
        None
    };
    let (result, detail) = match refused {
        None => (audit::AuditResult::Ok, json!({ "forced": true })),
        Some(reason) => (
            audit::AuditResult::Failed,
            json!({ "forced": false, "reason": reason }),
        ),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: "force_sync".to_owned(),
                resource: Resource::Sync.as_str().to_owned(),
                target: "sync".to_owned(),
                result,
                detail,
            },
            state.now(),
        )
        .await?;
    match refused {
        None => Ok(()),
        Some(reason) => Err(ApiError::new(StatusCode::CONFLICT, reason)),
    }
}

pub(super) async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}
