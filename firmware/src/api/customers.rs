//! `/api/v1/customers`, `/api/v1/customer-fields`, `/api/v1/customer-types`: customer
//! records ([`crate::customers`]).
//!
//! - `GET /api/v1/customers` (`contacts.view`): one page of the customers the caller's
//!   scope reaches (site: all; group: owned by them, by a member of a group they
//!   administer, or by such a group; own: owned by them), filtered by `name`
//!   (substring), `number`, `type`, `owner`, `owner_group`, `source`, `field.<name>`;
//!   `limit` / `offset`.
//! - `GET /api/v1/customers/{id}` (`contacts.view` on the record).
//! - `POST /api/v1/customers` (`contacts.add` on the new record), `PUT
//!   /api/v1/customers/{id}` (`contacts.edit` on the record as it is and as it will
//!   be), `DELETE /api/v1/customers/{id}` (`contacts.delete`): local customers only;
//!   HQ's contacts are a 409.
//! - `POST /api/v1/customers/import` (`contacts.import`, site): CSV, all or nothing.
//! - `GET /api/v1/customers/export` (`contacts.export`, site): CSV.
//! - `/api/v1/customer-fields[/{name}]` and `/api/v1/customer-types[/{digit}]`: read
//!   with `contacts.view`, changed with `system_config.edit` (site).
//!
//! Numbers (a customer's and its phone-type fields) are masked unless the caller holds
//! `numbers.view` at a scope covering the record, exactly like `/api/v1/cdrs`. Every
//! change is audited (resource `contacts`); a refused change is audited `failed`. Bad
//! input is a 400 naming the field, and changes nothing.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState, Authed};
use crate::audit::{AuditEntry, AuditResult};
use crate::customers::store::{self, CustomerRow, Visibility};
use crate::customers::{self, CustomerInput, FieldDefInput, TypeInput};
use crate::error::{Error, FieldProblem, Result};
use crate::rbac::{Action, Authorizer, Resource, Target};

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

use super::body;

fn invalid(entity: &'static str, key: &str, problems: Vec<FieldProblem>) -> Error {
    Error::Invalid {
        entity,
        key: key.to_owned(),
        problems,
    }
}

/// [`super::audited_change`] for the customer directory (`contacts`).
async fn audited<T, F>(
    state: &ApiState,
    who: &Authed,
    action: &'static str,
    target_hint: String,
    job: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection, &std::path::Path) -> Result<(T, String, Value)>
        + Send
        + 'static,
{
    super::audited_change(
        state,
        who,
        (Resource::Contacts, "customer change"),
        action,
        target_hint,
        job,
    )
    .await
}

fn allowed(
    authz: &Authorizer,
    who: &Authed,
    resource: Resource,
    action: Action,
    t: &Target,
) -> bool {
    authz
        .authorize(who.subject(), resource, action, t)
        .is_allowed()
}

/// The widest reach of the caller's `contacts.view`.
fn visibility(authz: &Authorizer, who: &Authed) -> Option<Visibility> {
    let s = who.subject();
    let view = |t: &Target| allowed(authz, who, Resource::Contacts, Action::View, t);
    if view(&Target::Site) {
        return Some(Visibility::All);
    }
    let administered = Target::Owned {
        owner: None,
        groups: s.admin_of_groups.clone(),
    };
    if !s.admin_of_groups.is_empty() && view(&administered) {
        return Some(Visibility::Group {
            me: s.user_id.0,
            groups: s.admin_of_groups.iter().map(|g| g.0).collect(),
        });
    }
    view(&who.own_target()).then_some(Visibility::Own { me: s.user_id.0 })
}

/// A customer as it leaves the box: numbers and phone fields masked unless `unmask`.
fn view(row: &CustomerRow, unmask: bool, state: &ApiState) -> Value {
    let pattern = state.mask_pattern();
    let show = |n: &str| pattern.present_number(n, unmask);
    let fields: serde_json::Map<String, Value> = row
        .fields
        .iter()
        .map(|(k, v)| {
            let j = match v.phone() {
                Some(p) => json!(show(p)),
                None => v.to_json(),
            };
            (k.clone(), j)
        })
        .collect();
    let numbers: Vec<String> = row.numbers.iter().map(|n| show(n)).collect();
    json!({
        "id": row.id,
        "name": row.name,
        "type": row.type_digit,
        "type_name": row.type_name,
        "owner": row.owner,
        "owner_user_id": row.owner_user_id,
        "owner_group": row.owner_group,
        "owner_group_id": row.owner_group_id,
        "source": row.source,
        "hq_id": row.hq_id,
        "revision": row.revision,
        "numbers": numbers,
        "fields": fields,
        "masked": !unmask && (!row.numbers.is_empty() || row.fields.values().any(|v| v.phone().is_some())),
        "created_by": row.created_by,
        "created_at_ms": row.created_at_ms,
        "updated_at_ms": row.updated_at_ms,
    })
}

fn unmask(authz: &Authorizer, who: &Authed, row: &CustomerRow) -> bool {
    allowed(authz, who, Resource::Numbers, Action::View, &row.target())
}

/// A short audit detail (no numbers: the audit log is not masked).
fn detail(row: &CustomerRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "numbers": row.numbers.len(),
        "type": row.type_digit,
        "owner": row.owner,
        "owner_group": row.owner_group,
        "fields": row.fields.keys().collect::<Vec<_>>(),
    })
}

pub(super) async fn list(
    State(state): State<ApiState>,
    who: Authed,
    q: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let Query(pairs) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let reader = state.reader()?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::View,
            &who.own_target(),
            "*",
        )
        .await?;
    let vis = visibility(&authz, &who)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "contacts.view reaches no customer"))?;
    let (conn, path) = (reader.connection(), reader.path());
    let stored = store::schema(conn, path)?;
    let (filter, page) = store::parse_filter(conn, path, &stored, &pairs)?;
    let (rows, total) = store::list(conn, path, &stored.schema, &filter, &vis, page)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| view(r, unmask(&authz, &who, r), &state))
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
    }))
    .into_response())
}

fn load(state: &ApiState, id: i64) -> ApiResult<(crate::store::StoreReader, CustomerRow)> {
    let reader = state.reader()?;
    let stored = store::schema(reader.connection(), reader.path())?;
    let row =
        store::get(reader.connection(), reader.path(), &stored.schema, id)?.ok_or_else(|| {
            Error::NotFound {
                entity: "customer",
                key: id.to_string(),
            }
        })?;
    Ok((reader, row))
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let (reader, row) = load(&state, id)?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::View,
            &row.target(),
            &id.to_string(),
        )
        .await?;
    Ok(Json(view(&row, unmask(&authz, &who, &row), &state)).into_response())
}

/// Checks a body against the current schema and owners: the customer and the RBAC
/// target it will have.
fn check_input(
    state: &ApiState,
    input: &CustomerInput,
    key: &str,
) -> ApiResult<(customers::ValidCustomer, Target)> {
    let draft = input.draft().map_err(|p| invalid("customer", key, p))?;
    let reader = state.reader()?;
    let (conn, path) = (reader.connection(), reader.path());
    let stored = store::schema(conn, path)?;
    let valid = stored
        .schema
        .check(&draft)
        .map_err(|p| invalid("customer", key, p))?;
    let (user, group) =
        store::resolve_owners(conn, path, &valid)?.map_err(|p| invalid("customer", key, p))?;
    let target = store::owner_target(conn, path, user, group)?;
    Ok((valid, target))
}

pub(super) async fn create(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<CustomerInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::Add,
            &who.own_target(),
            &input.name,
        )
        .await?;
    drop(reader);
    let (_, target) = check_input(&state, &input, &input.name)?;
    let authz = state
        .require(
            &state.reader()?,
            &who,
            Resource::Contacts,
            Action::Add,
            &target,
            &input.name,
        )
        .await?;
    let (by, now, hint) = (
        who.subject().username.clone(),
        state.now(),
        input.name.clone(),
    );
    let row = audited(&state, &who, "create", hint, move |tx, path| {
        // Again inside the transaction: the schema may have changed since.
        let stored = store::schema(tx, path)?;
        let draft = input
            .draft()
            .map_err(|p| invalid("customer", &input.name, p))?;
        let valid = stored
            .schema
            .check(&draft)
            .map_err(|p| invalid("customer", &input.name, p))?;
        let id = store::insert_local(tx, path, &stored, &valid, &by, now)?;
        let row = store::get(tx, path, &stored.schema, id)?.ok_or_else(|| Error::NotFound {
            entity: "customer",
            key: id.to_string(),
        })?;
        let d = detail(&row);
        Ok((row, format!("customer:{id}"), d))
    })
    .await?;
    let clear = unmask(&authz, &who, &row);
    Ok((StatusCode::CREATED, Json(view(&row, clear, &state))).into_response())
}

pub(super) async fn replace(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: std::result::Result<Json<CustomerInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    let (reader, before) = load(&state, id)?;
    state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::Edit,
            &before.target(),
            &id.to_string(),
        )
        .await?;
    drop(reader);
    if before.source == store::Source::Hq {
        return Err(Error::CustomerConflict {
            what: "customer",
            key: id.to_string(),
            why: "HQ owns this contact: it can only be changed at HQ".to_owned(),
        }
        .into());
    }
    let (_, target) = check_input(&state, &input, &id.to_string())?;
    let authz = state
        .require(
            &state.reader()?,
            &who,
            Resource::Contacts,
            Action::Edit,
            &target,
            &id.to_string(),
        )
        .await?;
    let now = state.now();
    let row = audited(
        &state,
        &who,
        "update",
        format!("customer:{id}"),
        move |tx, path| {
            let stored = store::schema(tx, path)?;
            let key = id.to_string();
            let draft = input.draft().map_err(|p| invalid("customer", &key, p))?;
            let valid = stored
                .schema
                .check(&draft)
                .map_err(|p| invalid("customer", &key, p))?;
            let old = store::editable(tx, path, &stored.schema, id)?;
            store::replace_local(tx, path, &stored, id, &valid, now)?;
            let row = store::get(tx, path, &stored.schema, id)?.ok_or_else(|| Error::NotFound {
                entity: "customer",
                key: key.clone(),
            })?;
            let d = json!({ "before": detail(&old), "after": detail(&row) });
            Ok((row, format!("customer:{id}"), d))
        },
    )
    .await?;
    let clear = unmask(&authz, &who, &row);
    Ok(Json(view(&row, clear, &state)).into_response())
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let (reader, row) = load(&state, id)?;
    state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::Delete,
            &row.target(),
            &id.to_string(),
        )
        .await?;
    drop(reader);
    let now = state.now();
    audited(
        &state,
        &who,
        "delete",
        format!("customer:{id}"),
        move |tx, path| {
            let stored = store::schema(tx, path)?;
            let row = store::delete_local(tx, path, &stored.schema, id, now)?;
            let d = detail(&row);
            Ok(((), format!("customer:{id}"), d))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn import(State(state): State<ApiState>, who: Authed, text: String) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Contacts,
            Action::Import,
            &Target::Site,
            "csv",
        )
        .await?;
    let (by, now) = (who.subject().username.clone(), state.now());
    let imported = audited(&state, &who, "import", "csv".to_owned(), move |tx, path| {
        let stored = store::schema(tx, path)?;
        let n = customers::csv::import(tx, path, &stored, &text, &by, now)?;
        Ok((n, "csv".to_owned(), json!({ "imported": n })))
    })
    .await?;
    Ok(Json(json!({ "imported": imported })).into_response())
}

pub(super) async fn export(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::Export,
            &Target::Site,
            "csv",
        )
        .await?;
    let (conn, path) = (reader.connection(), reader.path());
    let stored = store::schema(conn, path)?;
    let out = customers::csv::export(conn, path, &stored, state.mask_pattern(), |row| {
        unmask(&authz, &who, row)
    })?;
    drop(reader);
    let entry = AuditEntry {
        actor: who.actor(),
        action: "export".to_owned(),
        resource: Resource::Contacts.as_str().to_owned(),
        target: "csv".to_owned(),
        result: AuditResult::Ok,
        detail: json!({ "rows": out.rows, "masked": out.masked }),
    };
    state.accounts().audit(entry, state.now()).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"customers.csv\"",
            ),
        ],
        out.text,
    )
        .into_response())
}

// --- custom fields --------------------------------------------------------------------

pub(super) async fn list_fields(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::View,
            &who.own_target(),
            "fields",
        )
        .await?;
    let fields = store::fields(reader.connection(), reader.path())?;
    Ok(Json(json!({ "max_fields": customers::MAX_FIELDS, "fields": fields })).into_response())
}

async fn require_config(state: &ApiState, who: &Authed, target: &str) -> ApiResult<()> {
    state
        .require(
            &state.reader()?,
            who,
            Resource::SystemConfig,
            Action::Edit,
            &Target::Site,
            target,
        )
        .await
        .map(|_| ())
}

pub(super) async fn add_field(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<FieldDefInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    require_config(&state, &who, &format!("field:{}", input.name)).await?;
    let def = input
        .validate()
        .map_err(|p| invalid("customer field", &input.name, p))?;
    let (now, target) = (state.now(), format!("field:{}", def.name));
    let row = audited(
        &state,
        &who,
        "field_create",
        target.clone(),
        move |tx, path| {
            let row = store::add_field(tx, path, &def, now)?;
            let d = json!({ "field": &row });
            Ok((row, target, d))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

pub(super) async fn update_field(
    State(state): State<ApiState>,
    who: Authed,
    Path(name): Path<String>,
    b: std::result::Result<Json<FieldDefInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    let target = format!("field:{name}");
    require_config(&state, &who, &target).await?;
    let def = input
        .validate()
        .map_err(|p| invalid("customer field", &name, p))?;
    let now = state.now();
    let row = audited(
        &state,
        &who,
        "field_update",
        target.clone(),
        move |tx, path| {
            let (before, after) = store::update_field(tx, path, &name, &def, now)?;
            let d = json!({ "before": before, "after": &after });
            Ok((after, target, d))
        },
    )
    .await?;
    Ok(Json(row).into_response())
}

pub(super) async fn delete_field(
    State(state): State<ApiState>,
    who: Authed,
    Path(name): Path<String>,
) -> ApiResult {
    let target = format!("field:{name}");
    require_config(&state, &who, &target).await?;
    audited(
        &state,
        &who,
        "field_delete",
        target.clone(),
        move |tx, path| {
            let row = store::delete_field(tx, path, &name)?;
            Ok(((), target, json!({ "field": row })))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- customer types -------------------------------------------------------------------

pub(super) async fn list_types(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::View,
            &who.own_target(),
            "types",
        )
        .await?;
    let types = store::types(reader.connection(), reader.path())?;
    Ok(Json(json!({ "types": types })).into_response())
}

pub(super) async fn set_type(
    State(state): State<ApiState>,
    who: Authed,
    Path(digit): Path<String>,
    b: std::result::Result<Json<TypeInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    let target = format!("type:{digit}");
    require_config(&state, &who, &target).await?;
    let (d, name) = customers::check_type(&digit, &input.name)
        .map_err(|p| invalid("customer type", &digit, p))?;
    let now = state.now();
    let row = audited(&state, &who, "type_set", target.clone(), move |tx, path| {
        let before = store::set_type(tx, path, d, &name, now)?;
        let row = store::TypeRow { digit: d, name };
        let detail = json!({ "before": before, "after": &row });
        Ok((row, target, detail))
    })
    .await?;
    Ok(Json(row).into_response())
}

pub(super) async fn delete_type(
    State(state): State<ApiState>,
    who: Authed,
    Path(digit): Path<String>,
) -> ApiResult {
    let target = format!("type:{digit}");
    require_config(&state, &who, &target).await?;
    let (d, _) =
        customers::check_type(&digit, "x").map_err(|p| invalid("customer type", &digit, p))?;
    audited(
        &state,
        &who,
        "type_delete",
        target.clone(),
        move |tx, path| {
            let row = store::delete_type(tx, path, d)?;
            Ok(((), target, json!({ "type": row })))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How many service records `GET /api/v1/customers/{id}/service-records` lists (the
/// newest first), unless `?limit=` asks for fewer.
const SERVICE_RECORDS_LIMIT: usize = 100;

/// `?limit=` of the service records.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/customers/{id}/service-records` (`contacts.view` on the customer):
/// the customer's calls, newest first, with notes, disposition and recording; the
/// numbers masked like the customer's.
pub(super) async fn service_records(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    query: std::result::Result<
        axum::extract::Query<HistoryQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> ApiResult {
    let query = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = match query.limit {
        None => SERVICE_RECORDS_LIMIT,
        Some(n @ 1..=SERVICE_RECORDS_LIMIT) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "limit",
                format!("{n}: must be 1 to {SERVICE_RECORDS_LIMIT}"),
            ))
        }
    };
    let (reader, row) = load(&state, id)?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Contacts,
            Action::View,
            &row.target(),
            &id.to_string(),
        )
        .await?;
    let unmasked = unmask(&authz, &who, &row);
    let records: Vec<_> =
        crate::customers::service::for_customer(reader.connection(), reader.path(), id, limit)?
            .into_iter()
            .map(|mut r| {
                r.number = state.mask_pattern().present_number(&r.number, unmasked);
                r
            })
            .collect();
    Ok(Json(json!({ "customer": id, "records": records })).into_response())
}

/// The body of `POST /api/v1/calls/{call_id}/notes`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoteBody {
    text: String,
}

/// `POST /api/v1/calls/{call_id}/notes` (`calls.operate`): adds a note to a call, while
/// it goes on or after. A call with a service record checks the record's owner (an
/// agent adds notes to their own calls); a call without one yet (still going on) needs
/// `calls.operate` at any scope. 201 with the note; audited.
pub(super) async fn add_note(
    State(state): State<ApiState>,
    who: Authed,
    Path(call_id): Path<String>,
    b: std::result::Result<Json<NoteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = b.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    let reader = state.reader()?;
    let owner =
        crate::customers::service::owner_of_call(reader.connection(), reader.path(), &call_id)?;
    let target = match owner {
        Some(owner) => {
            let owner = owner.map(crate::rbac::UserId);
            let groups = match owner {
                Some(u) => reader
                    .connection()
                    .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
                    .and_then(|mut s| {
                        s.query_map([u.0], |r| r.get(0).map(crate::rbac::GroupId))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(|source| crate::error::Error::Sqlite {
                        path: reader.path().to_owned(),
                        op: "read the call owner's groups",
                        source,
                    })?,
                None => Vec::new(),
            };
            Target::Owned { owner, groups }
        }
        // Not recorded yet (the call goes on): the caller's own call for all the box
        // can tell.
        None => Target::Owned {
            owner: Some(who.subject.user_id),
            groups: who.subject.groups.clone(),
        },
    };
    state
        .require(
            &reader,
            &who,
            Resource::Calls,
            Action::Operate,
            &target,
            &call_id,
        )
        .await?;
    let (author, now) = (who.subject.username.clone(), state.now());
    let note = super::audited_change(
        &state,
        &who,
        (Resource::Calls, "call note"),
        "update",
        call_id.clone(),
        move |tx, path| {
            let note =
                crate::customers::service::add_note(tx, path, &call_id, &author, &body.text, now)?;
            let detail = json!({ "call_id": &call_id, "note": &note });
            Ok((note, call_id, detail))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(note)).into_response())
}
