//! `/api/v1/agents/{agent}`: an agent's desktop (log in, log out, pause, unpause,
//! state) and the agent's extension mode. `{agent}` is `me` (the caller's own agent
//! ID) or an agent ID.
//!
//! - `GET /api/v1/agents/{agent}`: the agent's live state from the ACD
//!   ([`AgentDeskState`]); `agents.view` over the agent's user (an agent: themselves;
//!   a supervisor: the groups they administer).
//! - `POST /api/v1/agents/{agent}/login`: log in from the desktop. Only the agent
//!   themselves (403 for anyone else), with `agents.operate` (own). The extension
//!   comes from the agent's mode: `fixed`, their own extension; `automatic`, the local
//!   SIP phone registered from the same IP address as this HTTP request (exactly one
//!   such phone: none or several is 409 with the addresses' phones named, nothing
//!   changed); `login` agents log in with the feature code on a phone (409).
//! - `POST .../logout`, `.../pause` (`{"reason": "lunch"}`, optional), `.../unpause`:
//!   `agents.operate` over the agent's user (themselves, or a supervisor for their
//!   groups). A refusal of the ACD (not logged in, on a call, not paused) is 409.
//! - `PUT .../extension-mode` (`{"mode": "login" | "fixed" | "automatic"}`):
//!   `agents.edit` over the agent's user (admin); `fixed` needs the user's extension
//!   (400 otherwise). Stored in `users.extension_mode` (migration 0018), audited as
//!   `extension_mode`; the ACD takes it without a restart (an agent logged in on
//!   another extension than a new fixed one is logged out).
//!
//! Log-in, log-out, pause and unpause are audited (`agent_login`, ...), refused ones
//! with result `failed` and the reason. 404: no such agent (or the caller has no
//! agent ID, for `me`); 503: the daemon or its call center is not running.

use std::net::IpAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Authed};
use crate::acd::{AgentId, ExtensionMode, PauseReason};
use crate::audit;
use crate::call::DeskAction;
use crate::rbac::{Action, Resource, Target, UserId};
use crate::web::status::{AgentDeskError, AgentDeskState};

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// The agent a path names.
struct AgentUser {
    user: UserId,
    agent: AgentId,
    extension: Option<String>,
    mode: String,
    target: Target,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "agent API store read failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `me` or an agent ID -> the agent's user.
fn resolve(state: &ApiState, who: &Authed, agent: &str) -> ApiResult<AgentUser> {
    let reader = state.reader()?;
    let conn = reader.connection();
    let row: Option<(i64, Option<String>, Option<String>, String)> = if agent == "me" {
        conn.query_row(
            "SELECT id, agent_id, extension, extension_mode FROM users WHERE id = ?1",
            [who.subject().user_id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(internal)?
    } else {
        if agent.parse::<AgentId>().is_err() {
            return Err(ApiError::invalid("agent", "`me` or an agent ID (digits)"));
        }
        conn.query_row(
            "SELECT id, agent_id, extension, extension_mode FROM users WHERE agent_id = ?1",
            [agent],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(internal)?
    };
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            if agent == "me" {
                "your user has no agent ID".to_owned()
            } else {
                format!("no agent with ID {agent}")
            },
        )
    };
    let (user, agent_id, extension, mode) = row.ok_or_else(not_found)?;
    let agent = agent_id
        .and_then(|a| a.parse::<AgentId>().ok())
        .ok_or_else(not_found)?;
    let user = UserId(user);
    let subject = crate::accounts::load_subject(&reader, user, state.now())?;
    Ok(AgentUser {
        user,
        agent,
        extension,
        mode,
        target: Target::Owned {
            owner: Some(user),
            groups: subject.groups,
        },
    })
}

async fn require(state: &ApiState, who: &Authed, a: &AgentUser, action: Action) -> ApiResult<()> {
    let label = format!("agent {}", a.agent);
    state
        .require(
            &state.reader()?,
            who,
            Resource::Agents,
            action,
            &a.target,
            &label,
        )
        .await?;
    Ok(())
}

fn desk_error(e: AgentDeskError) -> ApiError {
    let message = e.to_string();
    match e {
        AgentDeskError::NoCallCenter | AgentDeskError::Stopping => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
        AgentDeskError::UnknownAgent(_) => ApiError::new(StatusCode::NOT_FOUND, message),
        AgentDeskError::Refused(_) => ApiError::new(StatusCode::CONFLICT, message),
    }
}

async fn desk(
    state: &ApiState,
    agent: &AgentId,
    action: Option<DeskAction>,
) -> ApiResult<AgentDeskState> {
    let status = state.status().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is not running")
    })?;
    status
        .agent_desk(agent.clone(), action)
        .await
        .map_err(desk_error)
}

/// Audits a desktop action on `a` and answers its outcome.
async fn act(
    state: &ApiState,
    who: &Authed,
    a: &AgentUser,
    name: &'static str,
    action: DeskAction,
    detail: serde_json::Value,
) -> ApiResult {
    let outcome = desk(state, &a.agent, Some(action)).await;
    let (result, detail) = match &outcome {
        Ok(s) => (
            audit::AuditResult::Ok,
            json!({ "request": detail, "state": s }),
        ),
        Err(e) => (
            audit::AuditResult::Failed,
            json!({ "request": detail, "reason": e.message() }),
        ),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: name.to_owned(),
                resource: Resource::Agents.as_str().to_owned(),
                target: format!("agent {}", a.agent),
                result,
                detail,
            },
            state.now(),
        )
        .await?;
    Ok(Json(outcome?).into_response())
}

/// Agent `agent`, once `who` is found allowed to operate it (log in, out, pause).
async fn operated(state: &ApiState, who: &Authed, agent: &str) -> ApiResult<AgentUser> {
    let a = resolve(state, who, agent)?;
    require(state, who, &a, Action::Operate).await?;
    Ok(a)
}

/// `GET /api/v1/agents/{agent}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult {
    let a = resolve(&state, &who, &agent)?;
    require(&state, &who, &a, Action::View).await?;
    Ok(Json(desk(&state, &a.agent, None).await?).into_response())
}

/// The local SIP phone registered from `ip`: exactly one, else why not.
fn phone_at(state: &ApiState, ip: IpAddr) -> ApiResult<String> {
    let sip = state.status().and_then(|s| s.sip()).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no SIP endpoint runs on this box: automatic mode needs a registered SIP phone",
        )
    })?;
    let phones: Vec<String> = sip
        .phones
        .iter()
        .filter(|p| {
            // `udp 192.0.2.7:5062`: the REGISTER's transport and source address.
            p.contacts.iter().any(|c| {
                c.source
                    .split_whitespace()
                    .last()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .is_some_and(|source| source.ip() == ip)
            })
        })
        .map(|p| p.extension.clone())
        .collect();
    match phones.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("no SIP phone is registered from {ip}, the address of this desktop"),
        )),
        several => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "several SIP phones are registered from {ip} ({}): automatic mode cannot choose",
                several.join(", ")
            ),
        )),
    }
}

/// `POST /api/v1/agents/{agent}/login`.
pub(super) async fn login(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult {
    let a = operated(&state, &who, &agent).await?;
    if a.user != who.subject().user_id {
        // `agents.operate` over another agent covers log-out and pause, not a log-in
        // on their behalf: refused, and audited like the authorizer's denials.
        let reason = "agents log in only themselves, from their own desktop";
        let entry = audit::AuditEntry {
            actor: who.actor(),
            action: Action::Operate.as_str().to_owned(),
            resource: Resource::Agents.as_str().to_owned(),
            target: format!("agent {}", a.agent),
            result: audit::AuditResult::Denied,
            detail: json!({ "reason": reason }),
        };
        if let Err(e) = audit::audit(state.accounts().writer(), entry, state.now()).await {
            tracing::warn!(error = %e, "denial not audited");
        }
        return Err(ApiError::new(StatusCode::FORBIDDEN, reason));
    }
    let extension = match ExtensionMode::parse(&a.mode, a.extension.as_deref()) {
        Ok(ExtensionMode::Fixed(ext)) => ext,
        Ok(ExtensionMode::Automatic) => phone_at(&state, who.ip())?,
        Ok(ExtensionMode::Login) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "extension mode login: log in with the feature code on the phone to use",
            ))
        }
        Err(e) => return Err(ApiError::new(StatusCode::CONFLICT, e)),
    };
    let detail = json!({ "extension": &extension, "mode": &a.mode });
    act(
        &state,
        &who,
        &a,
        "agent_login",
        DeskAction::Login { extension },
        detail,
    )
    .await
}

/// `POST /api/v1/agents/{agent}/logout`.
pub(super) async fn logout(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult {
    let a = operated(&state, &who, &agent).await?;
    act(
        &state,
        &who,
        &a,
        "agent_logout",
        DeskAction::Logout,
        json!({}),
    )
    .await
}

/// The body of `POST .../pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    reason: Option<String>,
}

/// `POST /api/v1/agents/{agent}/pause`.
pub(super) async fn pause(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    // The body is optional: none (or empty) pauses without a reason.
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e.to_string()))?
    };
    let reason = match &body.reason {
        None => None,
        Some(r) => Some(
            r.parse::<PauseReason>()
                .map_err(|e| ApiError::invalid("reason", e.to_string()))?,
        ),
    };
    let a = operated(&state, &who, &agent).await?;
    act(
        &state,
        &who,
        &a,
        "agent_pause",
        DeskAction::Pause { reason },
        json!({ "reason": body.reason }),
    )
    .await
}

/// `POST /api/v1/agents/{agent}/unpause`.
pub(super) async fn unpause(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
) -> ApiResult {
    let a = operated(&state, &who, &agent).await?;
    act(
        &state,
        &who,
        &a,
        "agent_unpause",
        DeskAction::Unpause,
        json!({}),
    )
    .await
}

/// The body of `PUT .../extension-mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModeBody {
    mode: String,
}

/// `PUT /api/v1/agents/{agent}/extension-mode`.
pub(super) async fn put_mode(
    State(state): State<ApiState>,
    who: Authed,
    Path(agent): Path<String>,
    body: Result<Json<ModeBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    let a = resolve(&state, &who, &agent)?;
    require(&state, &who, &a, Action::Edit).await?;
    let mode = ExtensionMode::parse(&body.mode, a.extension.as_deref())
        .map_err(|e| ApiError::invalid("mode", e))?;
    let name = mode.as_str();
    let (user, label) = (a.user, format!("agent {}", a.agent));
    super::audited_change(
        &state,
        &who,
        (Resource::Agents, "extension mode change"),
        "extension_mode",
        label.clone(),
        move |tx, path| {
            tx.execute(
                "UPDATE users SET extension_mode = ?1 WHERE id = ?2",
                rusqlite::params![name, user.0],
            )
            .map_err(|source| crate::error::Error::Sqlite {
                path: path.to_owned(),
                op: "update extension mode",
                source,
            })?;
            Ok(((), label, json!({ "mode": name })))
        },
    )
    .await?;
    state.accounts().writer().notify_acd_changed();
    Ok(Json(json!({ "agent_id": a.agent.to_string(), "extension_mode": name })).into_response())
}
