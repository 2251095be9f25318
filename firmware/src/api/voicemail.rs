//! `/api/v1/voicemail`: voicemail messages ([`crate::voicemail`]).
//!
//! - `GET /api/v1/voicemail` (`voicemail.view`, scoped to each mailbox's owner and
//!   the owner's groups; a mailbox without an owner needs `site`): the mailboxes the
//!   caller may see, each with its messages (caller, time, duration, size, sha256,
//!   heard). Caller numbers are masked unless the caller holds `numbers.view` at site
//!   scope.
//! - `GET /api/v1/voicemail/{id}/audio` (`voicemail.listen`, scoped like the list):
//!   the message's WAV file (`audio/wav`, mono 16-bit PCM at 8 kHz).
//! - `DELETE /api/v1/voicemail/{id}` (`voicemail.delete`, scoped like the list): the
//!   row and the file (tombstone in the transaction, removed after the commit),
//!   audited (resource `voicemail`, action `delete`); call control is told, so the
//!   phone menu and message waiting follow at once. 404 for an unknown message.
//!
//! Messages are left and played from phones (see `call::voicemail`); the API
//! neither adds messages nor changes mailboxes.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState, Authed};

use crate::rbac::{Action, GroupId, Resource, Target, UserId};
use crate::store::StoreReader;
use crate::voicemail::store::{self as vm_store, MailboxRow, MessageRow};

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// The record a mailbox is: owned by its owner, in the owner's groups.
fn mailbox_target(reader: &StoreReader, owner: Option<i64>) -> ApiResult<Target> {
    let groups = match owner {
        Some(u) => reader
            .connection()
            .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
            .and_then(|mut s| {
                s.query_map([u], |r| r.get(0).map(GroupId))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| {
                tracing::error!(error = %e, "mailbox owner's groups not read");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            })?,
        None => Vec::new(),
    };
    Ok(Target::Owned {
        owner: owner.map(UserId),
        groups,
    })
}

/// Message `id` and its mailbox's record, or 404.
fn message_and_target(reader: &StoreReader, id: i64) -> ApiResult<(MessageRow, Target)> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such voicemail message");
    let m = vm_store::message(reader.connection(), reader.path(), id)?.ok_or_else(not_found)?;
    let owner = vm_store::mailboxes(reader.connection(), reader.path())?
        .into_iter()
        .find(|b| b.number == m.mailbox)
        .ok_or_else(not_found)?
        .owner_user_id;
    Ok((m, mailbox_target(reader, owner)?))
}

pub(super) async fn list(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    // At least the caller's own mailboxes; each mailbox is checked below.
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Voicemail,
            Action::View,
            &who.own_target(),
            "*",
        )
        .await?;
    let unmask = authz
        .authorize(&who.subject, Resource::Numbers, Action::View, &Target::Site)
        .is_allowed();
    let boxes: Vec<MailboxRow> = vm_store::mailboxes(reader.connection(), reader.path())?;
    let messages = vm_store::messages(reader.connection(), reader.path())?;
    let mut out = Vec::new();
    for b in boxes {
        let target = mailbox_target(&reader, b.owner_user_id)?;
        if !authz
            .authorize(&who.subject, Resource::Voicemail, Action::View, &target)
            .is_allowed()
        {
            continue;
        }
        let list: Vec<MessageRow> = messages
            .iter()
            .filter(|m| m.mailbox == b.number)
            .cloned()
            .map(|mut m| {
                m.caller_number = state
                    .mask_pattern()
                    .present_number(&m.caller_number, unmask);
                m
            })
            .collect();
        out.push(json!({
            "number": b.number,
            "owner_user_id": b.owner_user_id,
            "new": list.iter().filter(|m| !m.heard).count(),
            "messages": list,
        }));
    }
    Ok(Json(json!({ "masked": !unmask, "mailboxes": out })).into_response())
}

pub(super) async fn audio(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    let (m, target) = message_and_target(&reader, id)?;
    state
        .require(
            &reader,
            &who,
            Resource::Voicemail,
            Action::Listen,
            &target,
            &m.file,
        )
        .await?;
    let path = crate::voicemail::dir_of_store(reader.path()).join(&m.file);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        tracing::error!(file = %path.display(), error = %e, "voicemail message file not read");
        ApiError::new(StatusCode::NOT_FOUND, "the message's file is missing")
    })?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response())
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    let (m, target) = message_and_target(&reader, id)?;
    state
        .require(
            &reader,
            &who,
            Resource::Voicemail,
            Action::Delete,
            &target,
            &m.file,
        )
        .await?;
    let dir = crate::voicemail::dir_of_store(reader.path());
    drop(reader);
    let job_dir = dir.clone();
    let row = super::audited_change(
        &state,
        &who,
        (Resource::Voicemail, "voicemail delete"),
        "delete",
        m.file.clone(),
        move |tx, path| {
            let row = vm_store::delete_message(tx, path, &job_dir, id)?.ok_or_else(|| {
                crate::error::Error::NotFound {
                    entity: "voicemail message",
                    key: id.to_string(),
                }
            })?;
            let detail = json!({ "id": row.id, "mailbox": row.mailbox, "file": row.file });
            Ok((row.clone(), row.file, detail))
        },
    )
    .await?;
    vm_store::remove_tombstone(&dir, &row);
    if let Some(status) = state.status() {
        status.voicemail_deleted(id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
