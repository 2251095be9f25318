//! `/api/v1/lead-lists`, `/api/v1/leads`, `/api/v1/campaigns`,
//! `/api/v1/campaign-settings`: outbound campaigns ([`crate::campaign`]).
//!
//! - Lead lists: `GET`/`POST /api/v1/lead-lists`, `GET`/`DELETE
//!   /api/v1/lead-lists/{id}` (`campaigns.view` / `add` / `delete`, site);
//!   `POST /api/v1/lead-lists/{id}/import` (`campaigns.import`, site): CSV, all or
//!   nothing, problems by row; `GET /api/v1/lead-lists/{id}/leads` (`campaigns.view`,
//!   site): one page, `assigned`, `limit`, `offset`.
//! - `GET /api/v1/leads/{id}`: a lead with its attempts (`campaigns.view` on the lead:
//!   own when it is assigned to the caller, site otherwise).
//! - Campaigns: `GET`/`POST /api/v1/campaigns`, `GET`/`PUT`/`DELETE
//!   /api/v1/campaigns/{id}` (`campaigns.view` / `add` / `edit` / `delete`; a member of
//!   the campaign's group sees it with `campaigns.view` at own scope);
//!   `POST /api/v1/campaigns/{id}/start|pause|close` and `/assign` (`campaigns.operate`,
//!   site); `POST /api/v1/campaigns/{id}/next` (`campaigns.operate`, own: an agent of
//!   the group takes their next leads, at most the site's `next_leads`);
//!   `GET /api/v1/campaigns/{id}/progress` (`campaigns.view`, like the campaign).
//! - `GET /api/v1/campaign-settings` (`campaigns.view`, own) and `PUT`
//!   (`system_config.edit`, site): the site's `next_leads`.
//!
//! Numbers are masked unless the caller holds `numbers.view` at a scope covering the
//! lead (its assigned agent and the campaign's group), like customers. Every change
//! is audited (resource `campaigns`); a refused change is audited `failed`. Bad input
//! is a 400 naming the field and changes nothing; a clash (a name in use, a running
//! campaign, a list in use) is a 409.
//!
//! - Dialling: `POST /api/v1/campaigns/{id}/leads/{lead}/dial` (`campaigns.operate`
//!   and `calls.operate`, own: preview's dial button), `PUT
//!   /api/v1/campaign-attempts/{id}` (`campaigns.operate` over the attempt's agent:
//!   disposition, notes), `POST /api/v1/customers/{id}/dial` (`contacts.view`
//!   on the customer and `calls.operate`, own): click-to-call with the outside-line
//!   prefix, the blacklist (deny mode) checked first as the do-not-call list.
//!
//! Progressive campaigns are dialled by the daemon (`crate::campaign::driver`).
//! Every attempt's outcome comes from its call (a preview attempt's from its CDR,
//! `crate::campaign::store::finish_from_cdr`; a progressive one's from call control),
//! so `PUT /api/v1/campaign-attempts/{id}` takes only the disposition digit and notes
//! (an outcome is a 409 saying so).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState, Authed};
use crate::accounts::PageRequest;
use crate::acd::AgentId;
use crate::audit::{AuditEntry, AuditResult};
use crate::campaign::store::{
    self, CampaignInput, CampaignRow, LeadListInput, LeadRow, Started, WrapUpInput,
};
use crate::campaign::{CampaignState, Outcome};
use crate::error::{Error, Result};
use crate::rbac::{Action, Authorizer, GroupId, Resource, Subject, Target, UserId};
use crate::screen_pop::{ClickPhone, ClickRequest, ClickStarted, DeskEvent};
use crate::store::StoreReader;

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

use super::body;

/// [`super::audited_change`] for campaigns.
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
        (Resource::Campaigns, "campaign change"),
        action,
        target_hint,
        job,
    )
    .await
}

/// Requires `campaigns.<action>` on the whole site (the reader is used before the
/// future, which does not hold it).
fn require_site<'a>(
    state: &'a ApiState,
    reader: &StoreReader,
    who: &'a Authed,
    action: Action,
    target: &'a str,
) -> impl std::future::Future<Output = ApiResult<std::sync::Arc<Authorizer>>> + Send + 'a {
    state.require(
        reader,
        who,
        Resource::Campaigns,
        action,
        &Target::Site,
        target,
    )
}

/// The record a campaign is for RBAC, as seen by `who`: their own when they are a
/// member of its group (so an agent's own-scope grant reaches it), else a site record.
fn campaign_target(who: &Authed, c: &CampaignRow) -> Target {
    if who.subject().groups.contains(&GroupId(c.group_id)) {
        who.own_target()
    } else {
        Target::Site
    }
}

/// A lead's record for RBAC and masking: owned by its agent, in the campaign's group.
fn lead_target(lead: &LeadRow, group: Option<i64>) -> Target {
    Target::Owned {
        owner: lead.assigned_user_id.map(UserId),
        groups: group.map(GroupId).into_iter().collect(),
    }
}

fn lead_view(
    state: &ApiState,
    authz: &Authorizer,
    who: &Authed,
    lead: &LeadRow,
    group: Option<i64>,
) -> Value {
    lead_json(state, authz, who.subject(), lead, group)
}

/// A lead for `subject`: numbers masked unless `numbers.view` covers it.
fn lead_json(
    state: &ApiState,
    authz: &Authorizer,
    subject: &Subject,
    lead: &LeadRow,
    group: Option<i64>,
) -> Value {
    let unmask = authz
        .authorize(
            subject,
            Resource::Numbers,
            Action::View,
            &lead_target(lead, group),
        )
        .is_allowed();
    let pattern = state.mask_pattern();
    let numbers: Vec<String> = lead
        .numbers
        .iter()
        .map(|n| pattern.present_number(n, unmask))
        .collect();
    json!({
        "id": lead.id,
        "list_id": lead.list_id,
        "name": lead.name,
        "numbers": numbers,
        "masked": !unmask && !lead.numbers.is_empty(),
        "customer_id": lead.customer_id,
        "data": lead.data,
        "assigned_user_id": lead.assigned_user_id,
        "state": lead.state,
        "attempts": lead.attempts,
        "next_at_ms": lead.next_at_ms,
        "result": lead.result,
    })
}

/// The group of the campaign using list `list_id`, if any.
fn list_group(reader: &StoreReader, list_id: i64) -> Result<Option<i64>> {
    let list = store::get_list(reader.connection(), reader.path(), list_id)?;
    match list.campaign_id {
        Some(c) => Ok(Some(
            store::get_campaign(reader.connection(), reader.path(), c)?.group_id,
        )),
        None => Ok(None),
    }
}

// --- lead lists -----------------------------------------------------------------------------

pub(super) async fn list_lists(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    require_site(&state, &reader, &who, Action::View, "lead lists").await?;
    let lists = store::lists(reader.connection(), reader.path())?;
    Ok(Json(json!({ "lists": lists })).into_response())
}

pub(super) async fn create_list(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<LeadListInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    require_site(&state, &state.reader()?, &who, Action::Add, "lead list").await?;
    let (by, now) = (who.subject().username.clone(), state.now());
    let row = audited(
        &state,
        &who,
        "lead_list_add",
        input.name.clone(),
        move |tx, path| {
            let row = store::create_list(tx, path, &input, &by, now)?;
            let target = format!("lead list {}", row.id);
            let detail = json!({ "list": &row });
            Ok((row, target, detail))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

pub(super) async fn get_list(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    require_site(
        &state,
        &reader,
        &who,
        Action::View,
        &format!("lead list {id}"),
    )
    .await?;
    let row = store::get_list(reader.connection(), reader.path(), id)?;
    Ok(Json(row).into_response())
}

pub(super) async fn delete_list(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let target = format!("lead list {id}");
    require_site(&state, &state.reader()?, &who, Action::Delete, &target).await?;
    audited(
        &state,
        &who,
        "lead_list_delete",
        target.clone(),
        move |tx, path| {
            let row = store::delete_list(tx, path, id)?;
            Ok(((), target, json!({ "list": row })))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn import_leads(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    text: String,
) -> ApiResult {
    let target = format!("lead list {id}");
    require_site(&state, &state.reader()?, &who, Action::Import, &target).await?;
    let now = state.now();
    let imported = audited(
        &state,
        &who,
        "lead_import",
        target.clone(),
        move |tx, path| {
            let n = crate::campaign::csv::import(tx, path, id, &text, now)?;
            Ok((n, target, json!({ "imported": n })))
        },
    )
    .await?;
    Ok(Json(json!({ "imported": imported })).into_response())
}

/// The query of `GET /api/v1/lead-lists/{id}/leads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LeadsQuery {
    assigned: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

pub(super) async fn list_leads(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    q: std::result::Result<Query<LeadsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let reader = state.reader()?;
    let authz = require_site(
        &state,
        &reader,
        &who,
        Action::View,
        &format!("lead list {id}"),
    )
    .await?;
    let page = PageRequest {
        limit: q.limit.unwrap_or(PageRequest::default().limit),
        offset: q.offset.unwrap_or(0),
    };
    let (rows, total) = store::leads(reader.connection(), reader.path(), id, q.assigned, page)?;
    let group = list_group(&reader, id)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|l| lead_view(&state, &authz, &who, l, group))
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
    }))
    .into_response())
}

pub(super) async fn get_lead(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let reader = state.reader()?;
    let lead = store::get_lead(reader.connection(), reader.path(), id)?;
    let group = list_group(&reader, lead.list_id)?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Campaigns,
            Action::View,
            &lead_target(&lead, group),
            &format!("lead {id}"),
        )
        .await?;
    let unmask = authz
        .authorize(
            who.subject(),
            Resource::Numbers,
            Action::View,
            &lead_target(&lead, group),
        )
        .is_allowed();
    let attempts: Vec<Value> = store::attempts(reader.connection(), reader.path(), id)?
        .into_iter()
        .map(|mut a| {
            a.number = state.mask_pattern().present_number(&a.number, unmask);
            json!(a)
        })
        .collect();
    let mut view = lead_view(&state, &authz, &who, &lead, group);
    view["attempt_history"] = json!(attempts);
    Ok(Json(view).into_response())
}

// --- campaigns -------------------------------------------------------------------------------

pub(super) async fn list_campaigns(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Campaigns,
            Action::View,
            &who.own_target(),
            "campaigns",
        )
        .await?;
    let all = store::campaigns(reader.connection(), reader.path())?;
    let items: Vec<Value> = all
        .iter()
        .filter(|c| {
            authz
                .authorize(
                    who.subject(),
                    Resource::Campaigns,
                    Action::View,
                    &campaign_target(&who, c),
                )
                .is_allowed()
        })
        .map(CampaignRow::to_json)
        .collect();
    Ok(Json(json!({ "campaigns": items })).into_response())
}

/// Loads campaign `id` and requires `campaigns.<action>` on it.
async fn load(
    state: &ApiState,
    who: &Authed,
    id: i64,
    action: Action,
) -> ApiResult<(StoreReader, CampaignRow)> {
    let reader = state.reader()?;
    let c = store::get_campaign(reader.connection(), reader.path(), id)?;
    state
        .require(
            &reader,
            who,
            Resource::Campaigns,
            action,
            &campaign_target(who, &c),
            &format!("campaign {id}"),
        )
        .await?;
    Ok((reader, c))
}

pub(super) async fn get_campaign(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let (_, c) = load(&state, &who, id, Action::View).await?;
    Ok(Json(c.to_json()).into_response())
}

fn check(input: &CampaignInput, key: &str) -> Result<store::ValidCampaign> {
    input.check().map_err(|problems| Error::Invalid {
        entity: "campaign",
        key: key.to_owned(),
        problems,
    })
}

pub(super) async fn create_campaign(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<CampaignInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    require_site(&state, &state.reader()?, &who, Action::Add, &input.name).await?;
    let v = check(&input, &input.name)?;
    let (by, now) = (who.subject().username.clone(), state.now());
    let row = audited(
        &state,
        &who,
        "campaign_add",
        v.name.clone(),
        move |tx, path| {
            let row = store::create_campaign(tx, path, &v, &by, now)?;
            let detail = row.to_json();
            Ok((row.clone(), format!("campaign {}", row.id), detail))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.to_json())).into_response())
}

pub(super) async fn update_campaign(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: std::result::Result<Json<CampaignInput>, JsonRejection>,
) -> ApiResult {
    let input = body(b)?;
    let target = format!("campaign {id}");
    require_site(&state, &state.reader()?, &who, Action::Edit, &target).await?;
    let v = check(&input, &id.to_string())?;
    let now = state.now();
    let row = audited(
        &state,
        &who,
        "campaign_edit",
        target.clone(),
        move |tx, path| {
            let (before, after) = store::update_campaign(tx, path, id, &v, now)?;
            let detail = json!({ "before": before.to_json(), "after": after.to_json() });
            Ok((after, target, detail))
        },
    )
    .await?;
    Ok(Json(row.to_json()).into_response())
}

pub(super) async fn delete_campaign(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let target = format!("campaign {id}");
    require_site(&state, &state.reader()?, &who, Action::Delete, &target).await?;
    audited(
        &state,
        &who,
        "campaign_delete",
        target.clone(),
        move |tx, path| {
            let row = store::delete_campaign(tx, path, id)?;
            Ok(((), target, row.to_json()))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn move_to(state: ApiState, who: Authed, id: i64, to: CampaignState) -> ApiResult {
    let target = format!("campaign {id}");
    require_site(&state, &state.reader()?, &who, Action::Operate, &target).await?;
    let now = state.now();
    let action = match to {
        CampaignState::Running => "campaign_start",
        CampaignState::Paused => "campaign_pause",
        _ => "campaign_close",
    };
    let before = audited(&state, &who, action, target.clone(), move |tx, path| {
        let before = store::set_state(tx, path, id, to, now)?;
        let detail = json!({ "before": before, "after": to });
        Ok((before, target, detail))
    })
    .await?;
    Ok(Json(json!({ "id": id, "before": before, "state": to })).into_response())
}

pub(super) async fn start(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    move_to(state, who, id, CampaignState::Running).await
}

pub(super) async fn pause(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    move_to(state, who, id, CampaignState::Paused).await
}

pub(super) async fn close(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    move_to(state, who, id, CampaignState::Done).await
}

/// The body of `POST /api/v1/campaigns/{id}/assign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    leads: Vec<i64>,
    /// The agent (a member of the campaign's group); `null` unassigns.
    user_id: Option<i64>,
}

pub(super) async fn assign(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: std::result::Result<Json<AssignBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let target = format!("campaign {id}");
    require_site(&state, &state.reader()?, &who, Action::Operate, &target).await?;
    let now = state.now();
    let (leads, user) = (b.leads.clone(), b.user_id);
    let n = audited(
        &state,
        &who,
        "lead_assign",
        target.clone(),
        move |tx, path| {
            let n = store::assign(tx, path, id, &b.leads, b.user_id, now)?;
            let detail = json!({ "leads": b.leads, "user_id": b.user_id });
            Ok((n, target, detail))
        },
    )
    .await?;
    if let Some(user) = user {
        announce(&state, &state.reader()?, user, id, leads);
    }
    Ok(Json(json!({ "assigned": n })).into_response())
}

/// The body of `POST /api/v1/campaigns/{id}/next` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NextBody {
    /// How many (1 to the site's `next_leads`; default: `next_leads`).
    count: Option<u32>,
}

pub(super) async fn next(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Option<Json<NextBody>>,
) -> ApiResult {
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let reader = state.reader()?;
    let authz = state
        .require(
            &reader,
            &who,
            Resource::Campaigns,
            Action::Operate,
            &who.own_target(),
            &format!("campaign {id}"),
        )
        .await?;
    let max = store::next_leads(reader.connection(), reader.path())?;
    let count = match b.count {
        None => max,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "count",
                format!("{n}: must be 1 to {max} (the site's next_leads)"),
            ))
        }
    };
    let (me, now) = (who.subject().user_id.0, state.now());
    let leads = audited(
        &state,
        &who,
        "lead_next",
        format!("campaign {id}"),
        move |tx, path| {
            let leads = store::next_for(tx, path, id, me, count as usize, now)?;
            let ids: Vec<i64> = leads.iter().map(|l| l.id).collect();
            Ok((leads, format!("campaign {id}"), json!({ "leads": ids })))
        },
    )
    .await?;
    let group = store::get_campaign(reader.connection(), reader.path(), id)?.group_id;
    announce(
        &state,
        &reader,
        me,
        id,
        leads.iter().map(|l| l.id).collect(),
    );
    let items: Vec<Value> = leads
        .iter()
        .map(|l| lead_view(&state, &authz, &who, l, Some(group)))
        .collect();
    Ok(Json(json!({ "leads": items })).into_response())
}

pub(super) async fn progress(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
) -> ApiResult {
    let (reader, c) = load(&state, &who, id, Action::View).await?;
    let p = store::progress(reader.connection(), reader.path(), id)?;
    Ok(Json(json!({ "campaign": id, "state": c.state, "progress": p })).into_response())
}

// --- settings --------------------------------------------------------------------------------

pub(super) async fn get_settings(State(state): State<ApiState>, who: Authed) -> ApiResult {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Campaigns,
            Action::View,
            &who.own_target(),
            "settings",
        )
        .await?;
    let n = store::next_leads(reader.connection(), reader.path())?;
    Ok(Json(json!({ "next_leads": n })).into_response())
}

/// The body of `PUT /api/v1/campaign-settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SettingsBody {
    next_leads: u32,
}

pub(super) async fn put_settings(
    State(state): State<ApiState>,
    who: Authed,
    b: std::result::Result<Json<SettingsBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    state
        .require(
            &state.reader()?,
            &who,
            Resource::SystemConfig,
            Action::Edit,
            &Target::Site,
            "campaign settings",
        )
        .await?;
    let n = b.next_leads;
    let before = super::audited_change(
        &state,
        &who,
        (Resource::Campaigns, "campaign settings"),
        "settings",
        "settings".to_owned(),
        move |tx, path| {
            let before = store::set_next_leads(tx, path, n)?;
            Ok((
                before,
                "settings".to_owned(),
                json!({ "before": before, "after": n }),
            ))
        },
    )
    .await?;
    Ok(Json(json!({ "next_leads": n, "before": before })).into_response())
}

// --- click-to-dial -------------------------------------------------------------------------

/// The caller's own phone for a click-to-dial (their agent login, else their
/// extension), after `calls.operate` on their own phone.
async fn own_phone(state: &ApiState, who: &Authed) -> ApiResult<ClickPhone> {
    let reader = state.reader()?;
    let (agent, extension) = super::events::user_phone(&reader, who.subject().user_id)?;
    state
        .require(
            &reader,
            who,
            Resource::Calls,
            Action::Operate,
            &who.own_target(),
            "own phone",
        )
        .await?;
    Ok(ClickPhone::Own {
        agent: agent.and_then(|a| a.parse::<AgentId>().ok()),
        extension,
    })
}

async fn click(state: &ApiState, phone: ClickPhone, number: &str) -> ApiResult<ClickStarted> {
    let status = state.status().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is not running")
    })?;
    status
        .click_to_call(ClickRequest {
            phone,
            to: number.to_owned(),
            outside: true,
        })
        .await
        .map_err(super::events::click_error)
}

/// The body of `POST /api/v1/customers/{id}/dial` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DialBody {
    /// Which of the customer's numbers (default: the first).
    number: Option<String>,
}

/// `POST /api/v1/customers/{id}/dial`: click-to-dial from a customer record.
pub(super) async fn dial_customer(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: Option<Json<DialBody>>,
) -> ApiResult {
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let (row, blocked, plan) = {
        let reader = state.reader()?;
        let (conn, path) = (reader.connection(), reader.path());
        let schema = crate::customers::store::schema(conn, path)?;
        let plan = schema.schema.plan.clone();
        let row = crate::customers::store::get(conn, path, &schema.schema, id)?.ok_or(
            Error::NotFound {
                entity: "customer",
                key: id.to_string(),
            },
        )?;
        let dnc = store::do_not_call(conn, path)?;
        let blocked: Vec<bool> = row.numbers.iter().map(|n| dnc(n)).collect();
        (row, blocked, plan)
    };
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Contacts,
            Action::View,
            &row.target(),
            &format!("customer:{id}"),
        )
        .await?;
    let phone = own_phone(&state, &who).await?;
    let index = match &b.number {
        None if row.numbers.is_empty() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the customer has no number",
            ))
        }
        None => 0,
        Some(n) => {
            // The customer's numbers are stored in canonical form: any form of one
            // picks it.
            let n = crate::numbers::canonical(plan.as_ref(), n)
                .map_err(|m| ApiError::invalid("number", m))?;
            row.numbers
                .iter()
                .position(|x| *x == n)
                .ok_or_else(|| ApiError::invalid("number", "not one of the customer's numbers"))?
        }
    };
    if blocked[index] {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the number is on the do-not-call list (the blacklist)",
        ));
    }
    let number = row.numbers[index].clone();
    let outcome = click(&state, phone, &number).await;
    audit_click(&state, &who, format!("customer:{id}"), &outcome).await;
    let s = outcome?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "call_id": s.call_id, "from": s.from, "customer": id })),
    )
        .into_response())
}

async fn audit_click(
    state: &ApiState,
    who: &Authed,
    target: String,
    outcome: &ApiResult<ClickStarted>,
) {
    let (result, detail) = match outcome {
        Ok(s) => (
            AuditResult::Ok,
            json!({ "call_id": s.call_id, "from": s.from }),
        ),
        Err(_) => (AuditResult::Failed, json!({ "refused": true })),
    };
    let entry = AuditEntry {
        actor: who.actor(),
        action: "click_to_dial".to_owned(),
        resource: Resource::Calls.as_str().to_owned(),
        target,
        result,
        detail,
    };
    if let Err(e) = state.accounts().audit(entry, state.now()).await {
        tracing::warn!(error = %e, "click-to-dial not audited");
    }
}

/// `POST /api/v1/campaigns/{id}/leads/{lead}/dial`: preview mode's dial button. The
/// attempt is opened with every rule checked (running, hours, member, the lead theirs
/// or free, due, not being dialled, the agent has no other attempt open, the
/// do-not-call list), then the agent's phone rings and dials the lead; the attempt
/// carries the call's id (its CDR). When the phone cannot be rung the attempt is
/// undone.
pub(super) async fn dial_lead(
    State(state): State<ApiState>,
    who: Authed,
    Path((id, lead)): Path<(i64, i64)>,
) -> ApiResult {
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Campaigns,
            Action::Operate,
            &who.own_target(),
            &format!("campaign {id}"),
        )
        .await?;
    let phone = own_phone(&state, &who).await?;
    let (me, now) = (who.subject().user_id.0, state.now());
    let target = format!("lead {lead}");
    let started = audited(
        &state,
        &who,
        "lead_dial",
        target.clone(),
        move |tx, path| {
            let dnc = store::do_not_call(tx, path)?;
            let s = store::start_attempt(tx, path, id, lead, me, dnc, now)?;
            let detail = match &s {
                Started::Dial { attempt_id, .. } => json!({ "attempt": attempt_id }),
                Started::Finished(r) => json!({ "finished": r }),
            };
            Ok((s, target, detail))
        },
    )
    .await?;
    let (attempt_id, number) = match started {
        Started::Dial { attempt_id, number } => (attempt_id, number),
        Started::Finished(result) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "lead {lead} cannot be dialled and is finished: {}",
                    result.as_str()
                ),
            ))
        }
    };
    let outcome = click(&state, phone, &number).await;
    audit_click(&state, &who, format!("lead {lead}"), &outcome).await;
    let writer = state.accounts().writer().clone();
    match outcome {
        Ok(s) => {
            let call_id = s.call_id.clone();
            writer
                .transact("link attempt", move |tx, path| {
                    store::link_call(tx, path, attempt_id, &call_id)
                })
                .await?;
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "attempt": attempt_id, "call_id": s.call_id, "from": s.from, "lead": lead })),
            )
                .into_response())
        }
        Err(e) => {
            writer
                .transact("abort attempt", move |tx, path| {
                    store::abort_attempt(tx, path, attempt_id, now)
                })
                .await?;
            Err(e)
        }
    }
}

/// The body of `PUT /api/v1/campaign-attempts/{id}`: the agent's wrap-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResultBody {
    /// How the call ended: refused with a 409 naming the rule (the outcome is read
    /// from the call), so an older desktop learns why.
    outcome: Option<Outcome>,
    /// Disposition digit and notes.
    #[serde(flatten)]
    wrap_up: WrapUpInput,
}

/// `PUT /api/v1/campaign-attempts/{id}`: the agent records their attempt's
/// disposition digit and notes (during or after the call). How it ended comes from
/// the call (its CDR for preview attempts, call control for progressive ones).
pub(super) async fn put_attempt(
    State(state): State<ApiState>,
    who: Authed,
    Path(id): Path<i64>,
    b: std::result::Result<Json<ResultBody>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let a = {
        let reader = state.reader()?;
        store::get_attempt(reader.connection(), reader.path(), id)?
    };
    let owner = Target::Owned {
        owner: a.agent_user_id.map(UserId),
        groups: Vec::new(),
    };
    state
        .require(
            &state.reader()?,
            &who,
            Resource::Campaigns,
            Action::Operate,
            &owner,
            &format!("attempt {id}"),
        )
        .await?;
    let now = state.now();
    let target = format!("attempt {id}");
    let row = audited(
        &state,
        &who,
        "lead_result",
        target.clone(),
        move |tx, path| {
            if b.outcome.is_some() {
                return Err(Error::CampaignConflict {
                    what: "attempt",
                    key: id.to_string(),
                    why: "an attempt's outcome is read from its call; \
                          send only the disposition and notes"
                        .into(),
                });
            }
            let row = store::wrap_up(tx, path, id, &b.wrap_up, now)?;
            let detail = json!({ "disposition": row.disposition });
            Ok((row, target, detail))
        },
    )
    .await?;
    Ok(Json(json!({ "attempt": row.id, "outcome": row.outcome, "disposition": row.disposition, "notes": row.notes }))
        .into_response())
}

// --- desktop events ---------------------------------------------------------------------------

/// Lead `id` for a `/api/v1/events` stream of `subject`, if they may view it
/// (`campaigns.view` over the lead, as `GET /api/v1/leads/{id}`).
pub(super) fn lead_for_stream(
    state: &ApiState,
    reader: &StoreReader,
    authz: &Authorizer,
    subject: &Subject,
    id: i64,
) -> Option<Value> {
    let lead = store::get_lead(reader.connection(), reader.path(), id).ok()?;
    let group = list_group(reader, lead.list_id).ok()?;
    authz
        .authorize(
            subject,
            Resource::Campaigns,
            Action::View,
            &lead_target(&lead, group),
        )
        .is_allowed()
        .then(|| lead_json(state, authz, subject, &lead, group))
}

/// Tells user `user_id`'s desktop (when they are an agent) that leads of campaign
/// `campaign` are theirs now: a `leads` event on `/api/v1/events`.
fn announce(state: &ApiState, reader: &StoreReader, user_id: i64, campaign: i64, leads: Vec<i64>) {
    let Some(status) = state.status() else {
        return;
    };
    let agent = match super::events::user_phone(reader, UserId(user_id)) {
        Ok((Some(agent), _)) => agent.parse::<AgentId>().ok(),
        _ => None,
    };
    if let (Some(agent), false) = (agent, leads.is_empty()) {
        status.publish_desk_event(DeskEvent::Leads {
            agent,
            campaign,
            leads,
            at_ms: state.now(),
        });
    }
}
