//! `/api/v1/blacklist`: the caller-screening list ([`crate::blacklist`]).
//!
//! - `GET /api/v1/blacklist` (`blacklist.view`): the mode, the default action and
//!   every entry with its source, action and hit counter. Patterns are phone numbers:
//!   masked unless the caller holds `numbers.view` at site scope.
//! - `POST /api/v1/blacklist` (`blacklist.add`): adds a local entry
//!   `{pattern, reason?, action?}`; 201 with the entry; 409 when the pattern is listed
//!   already.
//! - `DELETE /api/v1/blacklist/{id}` (`blacklist.delete`): removes a local entry;
//!   409 for one of HQ's (it is removed at HQ).
//! - `GET` / `PUT /api/v1/blacklist/mode` (`blacklist.view` / `blacklist.edit`):
//!   `{mode: "deny"|"allow", default_action?: "busy"|"congestion"|"reject"}`.
//!
//! Every change is audited (resource `blacklist`; actions `create`, `delete`,
//! `update`; a refused change is audited `failed` with the error) and, once
//! committed, wakes the daemon's reload (`StoreWriter::notify_blacklist_changed`):
//! the next call is screened with the new list. Bad input is a 400 naming the field,
//! and changes nothing.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState, Authed};

use crate::blacklist::store::{self, EntryRow, NewEntry, SettingsBody};
use crate::error::{Error, Result};
use crate::rbac::{Action, Resource, Target};

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

use super::body;

/// [`super::audited_change`] for the blacklist, then wakes the reload.
async fn audited<T, F>(
    state: &ApiState,
    who: &Authed,
    action: &'static str,
    target_hint: String,
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
        (Resource::Blacklist, "blacklist change"),
        action,
        target_hint,
        job,
    )
    .await;
    if result.is_ok() {
        state.accounts().writer().notify_blacklist_changed();
    }
    result
}

fn invalid(key: &str, problems: Vec<crate::error::FieldProblem>) -> Error {
    Error::Invalid {
        entity: "blacklist entry",
        key: key.to_owned(),
        problems,
    }
}

pub(super) async fn list(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Blacklist,
            Action::View,
            &Target::Site,
            "*",
        )
        .await?;
    let unmask = authz
        .authorize(&who.subject, Resource::Numbers, Action::View, &Target::Site)
        .is_allowed();
    let settings = store::settings(reader.connection(), reader.path())?;
    let entries: Vec<EntryRow> = store::list(reader.connection(), reader.path())?
        .into_iter()
        .map(|mut e| {
            if e.pattern != crate::blacklist::ANONYMOUS {
                e.pattern = state.mask_pattern().present_number(&e.pattern, unmask);
            }
            e
        })
        .collect();
    Ok(Json(json!({
        "mode": settings.mode,
        "default_action": settings.default_action,
        "masked": !unmask,
        "entries": entries,
    }))
    .into_response())
}

pub(super) async fn add(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<NewEntry>, JsonRejection>,
) -> ApiResult {
    let new = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Blacklist,
            Action::Add,
            &Target::Site,
            &new.pattern,
        )
        .await?;
    let by = who.subject.username.clone();
    let hint = new.pattern.clone();
    let now = state.now();
    let row = audited(&state, &who, "create", hint, move |tx, path| {
        let valid = new
            .validate()
            .map_err(|problems| invalid(&new.pattern, problems))?;
        let row = store::add_local(tx, path, &valid, &by, now)?;
        let detail = json!({ "entry": &row });
        Ok((row.clone(), row.pattern, detail))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Blacklist,
            Action::Delete,
            &Target::Site,
            &id.to_string(),
        )
        .await?;
    audited(&state, &who, "delete", id.to_string(), move |tx, path| {
        let row = store::delete_local(tx, path, id)?;
        let detail = json!({ "entry": &row });
        Ok(((), row.pattern, detail))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn get_mode(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Blacklist,
            Action::View,
            &Target::Site,
            "mode",
        )
        .await?;
    Ok(Json(store::settings(reader.connection(), reader.path())?).into_response())
}

pub(super) async fn set_mode(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<SettingsBody>, JsonRejection>,
) -> ApiResult {
    let new = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Blacklist,
            Action::Edit,
            &Target::Site,
            "mode",
        )
        .await?;
    let now = state.now();
    let settings = audited(
        &state,
        &who,
        "update",
        "mode".to_owned(),
        move |tx, path| {
            let current = store::settings(tx, path)?;
            let settings = new
                .validate(current)
                .map_err(|problems| invalid("mode", problems))?;
            let before = store::set_settings(tx, path, settings, now)?;
            let detail = json!({ "before": before, "after": settings });
            Ok((settings, "mode".to_owned(), detail))
        },
    )
    .await?;
    Ok(Json(settings).into_response())
}
