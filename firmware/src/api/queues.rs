//! `/api/v1/queues`: the call center's queues ([`crate::acd`]) on the box.
//!
//! - `GET /api/v1/queues` (`queues.view`, site): every queue with its settings,
//!   members (agent ID, username, penalty, in offer order), overflow rules, VIP
//!   patterns and whether HQ or the box owns it (`source`).
//! - `PUT /api/v1/queues/{name}` (`queues.edit`, site): creates (201) or replaces
//!   (200) a queue made on the box: `{number, strategy, ring_timeout_ms?,
//!   wrap_up_ms?, max_wait_ms?, max_len?, skill_fallback_ms?, announce_every_ms?,
//!   music_on_hold?, moh_prompt?, survey_prompt?, recording?: always|never|on_demand
//!   (default never; see [`crate::recorder::calls`]), members?: [{agent_id, penalty?}],
//!   overflow?: {full|max_wait|no_agents: {kind: busy|queue|number|voicemail,
//!   target?}}, vip?: [pattern]}`. A queue HQ syncs down is HQ's to change: 409.
//! - `DELETE /api/v1/queues/{name}` (`queues.delete`, site): removes a queue made on
//!   the box (409 for HQ's, 404 for none). Callers already waiting in it stay until
//!   served or gone (see [`crate::acd::Acd::reconfigure`]).
//!
//! A change is checked whole before it is kept: the fields one by one (a 400 naming
//! each bad field), then the call center as it would be with the change
//! ([`crate::acd::store::load_config`] in the same transaction: an unknown agent ID, an
//! overflow to a queue that does not exist, a number another queue has), so a refused
//! change writes nothing. Every change is audited (resource `queues`) and, once
//! committed, has the daemon reconfigure the ACD while calls go on
//! (`StoreWriter::notify_acd_changed`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState, Authed};

use crate::acd::store::{self, LocalQueue, QueueBody};
use crate::error::Result;
use crate::rbac::{Action, Resource, Target};

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

use super::body;

async fn require(state: &ApiState, who: &Authed, action: Action, name: &str) -> ApiResult<()> {
    state
        .require(
            &state.reader()?,
            who,
            Resource::Queues,
            action,
            &Target::Site,
            name,
        )
        .await?;
    Ok(())
}

/// [`super::audited_change`] for queues, then the ACD's reconfiguration.
async fn audited<T, F>(
    state: &ApiState,
    who: &Authed,
    action: &'static str,
    name: String,
    job: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection, &std::path::Path) -> Result<(T, String, serde_json::Value)>
        + Send
        + 'static,
{
    let result = super::audited_change(
        state,
        who,
        (Resource::Queues, "queue change"),
        action,
        name,
        job,
    )
    .await;
    if result.is_ok() {
        state.accounts().writer().notify_acd_changed();
    }
    result
}

/// The call center live (`queues.view`): queues with their waiting callers (numbers
/// masked unless `who` may see the call's numbers, like the calls in progress) and the
/// agents' states. `Ok(None)` when no call center runs; 503 when no daemon answers.
pub(crate) async fn live(
    state: &ApiState,
    who: &Authed,
) -> ApiResult<Option<crate::web::status::CallCenterStatus>> {
    require(state, who, Action::View, "*").await?;
    let status = state.status().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the call center status needs the running daemon",
        )
    })?;
    let Some(mut live) = status
        .call_center()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
    else {
        return Ok(None);
    };
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let dir = crate::mask::NumberDirectory::load(&reader)?;
    let pattern = *state.mask_pattern();
    for q in &mut live.queues {
        for w in &mut q.waiting {
            let (caller, _, _) = crate::mask::call_numbers(
                who.subject(),
                &authz,
                &pattern,
                &dir,
                &w.caller,
                &q.number,
            );
            w.caller = caller;
        }
    }
    Ok(Some(live))
}

/// `GET /api/v1/call-center`: [`live`] as JSON, `{"configured": false}` without a
/// call center.
pub(super) async fn live_json(State(state): State<ApiState>, who: Authed) -> ApiResult {
    Ok(match live(&state, &who).await? {
        Some(live) => Json(json!({ "configured": true, "status": live })).into_response(),
        None => Json(json!({ "configured": false })).into_response(),
    })
}

pub(super) async fn list(State(state): State<ApiState>, who: Authed) -> ApiResult {
    require(&state, &who, Action::View, "*").await?;
    let reader = state.reader()?;
    let queues = store::list_queues(reader.connection(), reader.path())
        .map_err(|e| crate::error::Error::AcdStore(Box::new(e)))?;
    Ok(Json(json!({ "queues": queues })).into_response())
}

pub(super) async fn put(
    State(state): State<ApiState>,
    who: Authed,
    Path(name): Path<String>,
    b: std::result::Result<Json<QueueBody>, JsonRejection>,
) -> ApiResult {
    let new = body(b)?;
    require(&state, &who, Action::Edit, &name).await?;
    let now = state.now();
    let hint = name.clone();
    let (row, created) = audited(&state, &who, "update", hint, move |tx, path| {
        let local = LocalQueue::check(&name, &new)?;
        let (row, created) = store::put_local_queue(tx, path, &local, now)?;
        let detail = json!({ "queue": &row, "created": created });
        Ok(((row, created), name, detail))
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)).into_response())
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    who: Authed,
    Path(name): Path<String>,
) -> ApiResult {
    require(&state, &who, Action::Delete, &name).await?;
    let hint = name.clone();
    audited(&state, &who, "delete", hint, move |tx, path| {
        store::delete_local_queue(tx, path, &name)?;
        let detail = json!({ "queue": &name });
        Ok(((), name, detail))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
