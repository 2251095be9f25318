//! `GET /api/v1/reports/queues` and `GET /api/v1/reports/agents`: the call-center
//! reports of [`crate::reports`] as JSON.
//!
//! Parameters: `from` and `to` (required, ms since the Unix epoch, UTC, `[from, to)`),
//! `sl` (queues: the service-level threshold in seconds, default 20), `queue` (queues)
//! or `agent` (agents) to report on one only. A missing, malformed, out-of-range or
//! unknown parameter, a reversed or too long period and an unknown queue or agent are
//! a 400 whose `problems[0].field` names the parameter.
//!
//! Permission `reports.view`:
//! - queues need `site` scope: a queue belongs to no group in the RBAC model (its
//!   members do, but a queue shared by two teams would then be half someone's), so
//!   a supervisor's `group` grant does not reach the queue report;
//! - agents: each agent is checked as a record owned by the agent's user with the
//!   user's groups, so `site` sees every agent, a group admin with `group` scope the
//!   agents of the groups they administer, `own` the caller's own agent ID. An agent
//!   ID no user holds any more needs `site`. Without `agent=`, the rows the caller may
//!   not see are left out; asking for one such agent is a 403 (audited).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState, Authed};
use crate::rbac::{Action, Decision, Resource, Target};
use crate::reports::{self, Period, ReportError, ServiceLevelThreshold};

type Params = HashMap<String, String>;

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e.parameter() {
            Some(field) => ApiError::invalid(field, e.to_string()),
            None => {
                tracing::error!(error = %e, "report failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The query string as name -> value, refusing names not in `allowed`.
fn params(q: Result<Query<Params>, QueryRejection>, allowed: &[&str]) -> Result<Params, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut names: Vec<&String> = p.keys().collect();
    names.sort();
    if let Some(bad) = names.into_iter().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            bad,
            format!("unknown parameter; this route takes {}", allowed.join(", ")),
        ));
    }
    Ok(p)
}

fn integer(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid(name, format!("{v:?} is not an integer")))
        })
        .transpose()
}

fn period(p: &Params) -> Result<Period, ApiError> {
    let required = |name| {
        integer(p, name)?.ok_or_else(|| {
            ApiError::invalid(name, "required: ms since the Unix epoch (UTC)".to_owned())
        })
    };
    let (from, to) = (required("from")?, required("to")?);
    Ok(Period::new(from, to)?)
}

fn name<'a>(p: &'a Params, key: &str) -> Result<Option<&'a str>, ApiError> {
    match p.get(key).map(String::as_str) {
        Some("") => Err(ApiError::invalid(key, "empty; leave it out for all")),
        other => Ok(other),
    }
}

fn ok_json(v: serde_json::Value) -> Result<Response, ApiError> {
    Ok(Json(v).into_response())
}

pub(super) async fn queues(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(q, &["from", "to", "queue", "sl"])?;
    let period = period(&p)?;
    let threshold = match integer(&p, "sl")? {
        Some(s) => ServiceLevelThreshold::new(s)?,
        None => ServiceLevelThreshold::default(),
    };
    let queue = name(&p, "queue")?;
    let reader = state.reader()?;
    state
        .require(
            &reader,
            &who,
            Resource::Reports,
            Action::View,
            &Target::Site,
            queue.unwrap_or("queues"),
        )
        .await?;
    let figures =
        reports::queue_report(reader.connection(), reader.path(), period, queue, threshold)?;
    ok_json(json!({
        "from_ms": period.from_ms(),
        "to_ms": period.to_ms(),
        "service_level_threshold_s": threshold.seconds(),
        "queues": figures,
    }))
}

pub(super) async fn agents(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(q, &["from", "to", "agent"])?;
    let period = period(&p)?;
    let agent = name(&p, "agent")?;
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let owners = reports::agent_owners(reader.connection(), reader.path())?;
    let target_of = |id: &str| match owners.get(id) {
        Some((user, groups)) => Target::Owned {
            owner: Some(*user),
            groups: groups.clone(),
        },
        None => Target::Owned {
            owner: None,
            groups: Vec::new(),
        },
    };
    // One agent: that agent's record. All: any reports.view grant, then row by row.
    let (first_target, first_name) = match agent {
        Some(id) => (target_of(id), id),
        None => (who.own_target(), "agents"),
    };
    state
        .authorize(
            &who,
            &authz,
            Resource::Reports,
            Action::View,
            &first_target,
            first_name,
        )
        .await?;
    let figures = reports::agent_report(reader.connection(), reader.path(), period, agent)?;
    let visible: Vec<_> = figures
        .into_iter()
        .filter(|f| {
            matches!(
                authz.authorize(
                    who.subject(),
                    Resource::Reports,
                    Action::View,
                    &target_of(&f.agent)
                ),
                Decision::Allow { .. }
            )
        })
        .collect();
    ok_json(json!({
        "from_ms": period.from_ms(),
        "to_ms": period.to_ms(),
        "agents": visible,
    }))
}
