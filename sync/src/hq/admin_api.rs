//! The admin API for HQ operators (JSON), on its own listener.
//!
//! Every request needs `Authorization: Bearer <admin token>` (compared in constant
//! time). The listener is plain HTTP bound to 127.0.0.1 by default (reach it over SSH
//! or a reverse proxy), or HTTPS with HQ's server certificate (`admin_tls = true`).
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /admin/v1/sites`, `POST /admin/v1/sites` `{id, name}` | list, create sites |
//! | `GET /admin/v1/sites/{site}` | one site |
//! | `PUT /admin/v1/sites/{site}/file-policy` [`FilePolicy`] | which recordings HQ wants |
//! | `GET /admin/v1/boxes`, `POST /admin/v1/boxes` `{id, site}` | box health list, register a box |
//! | `POST /admin/v1/boxes/{box}/certificate` `{days?}` | issue (and pin) a device certificate: key, cert, CA |
//! | `POST /admin/v1/boxes/{box}/revoke` `{reason}` | revoke a box: every mutual-TLS request of it is refused (403 `revoked`) until it re-enrolls with a fresh token; audited; 404 unknown box, 409 already revoked |
//! | `GET /admin/v1/audit?box=&limit=` | identity changes, newest first: revocations, enrollments, re-enrollments, renewals |
//! | `GET /admin/v1/sites/{site}/{kind}` | live rows of a kind (`user`, `role`, `group`, `extension`, `queue`, `contact`, `blacklist`, `dial_route`) |
//! | `GET/PUT/DELETE /admin/v1/sites/{site}/{kind}/{key}[?base_revision=N]` | one row; PUT takes the row's JSON, writes it with a new revision into the site's feed |
//! | `GET /admin/v1/cdrs?site=&box=&from_ms=&to_ms=&queue=&limit=&after=` | CDRs across branches (queued calls with queue, agent and wait), `{cdrs, next}` |
//! | `GET /admin/v1/agent-states?site=&box=&agent=&from_ms=&to_ms=&limit=&after=` | call-center agent state changes across branches, `{agent_states, next}` |
//! | `GET /admin/v1/campaign-results?site=&box=&campaign=&agent=&from_ms=&to_ms=&limit=&after=` | outbound campaign attempts across branches (number dialled, agent, outcome, disposition digit, notes, call id; the latest the box sent of each), `{campaign_results, next}` |
//! | `GET /admin/v1/campaign-progress?site=&box=&campaign=&limit=&after=` | each campaign's latest progress (leads pending, dialling, done by result; attempts by outcome), `{campaign_progress, next}` |
//! | `GET /admin/v1/service-records?site=&box=&customer=&number=&agent=&from_ms=&to_ms=&limit=&after=` | customers' service records across branches with the call's disposition, recording sha256 and notes, `{service_records, next}` |
//! | `GET /admin/v1/customers?site=&box=&number=&deleted=&limit=&after=` | customers made on the boxes (the latest of each; `deleted=true` includes the deleted), `{customers, next}` |
//! | `GET /admin/v1/reports/daily?site=&from_ms=&to_ms=` | calls, answered, missed per site per UTC day |
//! | `POST /admin/v1/feed/prune` `{keep_revisions}` | prune the feeds now |
//! | `/admin/v1/rollouts...` | update rollouts: stage, list, advance/pause/resume/cancel, outcomes ([`crate::hq::rollouts::api`]) |

use std::time::{Duration, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::hq::store::{
    AgentStateQuery, AgentStateRow, AuditEntry, BoxRecord, CampaignProgressQuery,
    CampaignProgressRow, CampaignResultQuery, CampaignResultRow, CdrQuery, CdrRow, CustomerQuery,
    CustomerRow, DailyReportRow, ReportQuery, ServiceRecordQuery, ServiceRecordRow, SiteRecord,
};
use crate::hq::validate::{entity_kind_from_name, entity_kind_name, validate_id};
use crate::hq::{now_ms, pki, AppState, Error};
use crate::wire::{Change, Entity, EntityKind, FilePolicy};

/// An admin error answer: `{"error": code, "message": ...}`.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct AdminErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(AdminErrorBody {
                error: self.code,
                message: &self.message,
            }),
        )
            .into_response()
    }
}

fn bad(message: impl Into<String>) -> AdminError {
    AdminError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid",
        message: message.into(),
    }
}

impl From<Error> for AdminError {
    fn from(e: Error) -> AdminError {
        let (status, code) = match &e {
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "exists"),
            Error::RevisionMismatch { .. } => (StatusCode::CONFLICT, "revision_mismatch"),
            Error::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
            Error::BoxRevoked { .. } => (StatusCode::CONFLICT, "revoked"),
            _ => {
                tracing::error!(error = %e, "admin request failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        AdminError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl From<JsonRejection> for AdminError {
    fn from(e: JsonRejection) -> AdminError {
        bad(format!("bad JSON body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for AdminError {
    fn from(e: QueryRejection) -> AdminError {
        bad(format!("bad query: {}", e.body_text()))
    }
}

type AResult<T> = Result<Json<T>, AdminError>;

/// The admin router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/sites", get(list_sites).post(create_site))
        .route("/admin/v1/sites/{site}", get(get_site))
        .route("/admin/v1/sites/{site}/file-policy", put(set_policy))
        .route("/admin/v1/sites/{site}/{kind}", get(list_entities))
        .route(
            "/admin/v1/sites/{site}/{kind}/{key}",
            get(get_entity).put(put_entity).delete(delete_entity),
        )
        .route("/admin/v1/boxes", get(list_boxes).post(register_box))
        .route("/admin/v1/boxes/{box}/certificate", post(issue_certificate))
        .route("/admin/v1/boxes/{box}/revoke", post(revoke_box))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/cdrs", get(cdrs))
        .route("/admin/v1/agent-states", get(agent_states))
        .route("/admin/v1/campaign-results", get(campaign_results))
        .route("/admin/v1/campaign-progress", get(campaign_progress))
        .route("/admin/v1/service-records", get(service_records))
        .route("/admin/v1/customers", get(customers))
        .route("/admin/v1/reports/daily", get(daily))
        .route("/admin/v1/feed/prune", post(prune))
        .merge(crate::hq::rollouts::api::admin_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = !state.config.admin_token.is_empty()
        && presented
            .is_some_and(|t| constant_time_eq(t.as_bytes(), state.config.admin_token.as_bytes()));
    if !ok {
        return AdminError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token".to_owned(),
        }
        .into_response();
    }
    next.run(req).await
}

async fn list_sites(State(s): State<AppState>) -> AResult<Vec<SiteRecord>> {
    Ok(Json(s.store.sites().await?))
}

/// Body of `POST /admin/v1/sites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSite {
    id: String,
    name: String,
}

async fn create_site(
    State(s): State<AppState>,
    body: Result<Json<NewSite>, JsonRejection>,
) -> Result<(StatusCode, Json<SiteRecord>), AdminError> {
    let Json(site) = body?;
    validate_id("site.id", &site.id)?;
    if site.name.is_empty() || site.name.len() > 256 {
        return Err(bad("site.name must be 1 to 256 bytes"));
    }
    let rec = s.store.create_site(&site.id, &site.name, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

async fn get_site(State(s): State<AppState>, Path(site): Path<String>) -> AResult<SiteRecord> {
    Ok(Json(s.store.site(&site).await?.ok_or(Error::NotFound {
        what: "site",
        key: site,
    })?))
}

async fn set_policy(
    State(s): State<AppState>,
    Path(site): Path<String>,
    body: Result<Json<FilePolicy>, JsonRejection>,
) -> AResult<FilePolicy> {
    let Json(policy) = body?;
    if let FilePolicy::OnDemand { wanted } = &policy {
        if let Some(w) = wanted
            .iter()
            .find(|w| !crate::hq::validate::is_sha256_hex(w))
        {
            return Err(bad(format!("wanted file {w:?} is not a lowercase sha256")));
        }
    }
    s.store.set_file_policy(&site, &policy).await?;
    Ok(Json(policy))
}

/// A box in the health list.
#[derive(Debug, Serialize)]
struct BoxView {
    #[serde(flatten)]
    record: BoxRecord,
    /// ms since its last request.
    last_seen_age_ms: Option<i64>,
    /// Age of its oldest pending outbox row, ms.
    oldest_pending_age_ms: Option<i64>,
}

async fn list_boxes(State(s): State<AppState>) -> AResult<Vec<BoxView>> {
    let now = now_ms();
    let boxes = s.store.boxes().await?;
    Ok(Json(
        boxes
            .into_iter()
            .map(|record| BoxView {
                last_seen_age_ms: record.last_seen_ms.map(|t| (now - t).max(0)),
                oldest_pending_age_ms: record.oldest_pending_ms.map(|t| (now - t).max(0)),
                record,
            })
            .collect(),
    ))
}

/// Body of `POST /admin/v1/boxes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBox {
    id: String,
    site: String,
}

async fn register_box(
    State(s): State<AppState>,
    body: Result<Json<NewBox>, JsonRejection>,
) -> Result<(StatusCode, Json<BoxRecord>), AdminError> {
    let Json(b) = body?;
    validate_id("box.id", &b.id)?;
    let rec = s.store.register_box(&b.id, &b.site, None, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// Body of `POST /admin/v1/boxes/{box}/certificate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertRequest {
    days: Option<u64>,
}

/// A device certificate issued through the API.
#[derive(Debug, Serialize)]
struct IssuedView {
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
    fingerprint: String,
}

async fn issue_certificate(
    State(s): State<AppState>,
    Path(box_id): Path<String>,
    body: Option<Json<CertRequest>>,
) -> AResult<IssuedView> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    let days = req.days.unwrap_or(pki::BOX_CERT_DAYS);
    if !(1..=20 * 365).contains(&days) {
        return Err(bad("days must be 1 to 7300"));
    }
    if s.store.box_record(&box_id).await?.is_none() {
        return Err(Error::NotFound {
            what: "box",
            key: box_id,
        }
        .into());
    }
    let tls_dir = s.config.tls_dir.clone();
    let id = box_id.clone();
    let issued = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        pki::Ca::load(&tls_dir)?.issue_box(
            &id,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(days * 86_400),
        )
    })
    .await
    .map_err(|source| Error::Join {
        op: "issue certificate",
        source,
    })??;
    s.store
        .set_box_fingerprint(&box_id, Some(&issued.fingerprint))
        .await?;
    Ok(Json(IssuedView {
        key_pem: issued.key_pem,
        cert_pem: issued.cert_pem,
        ca_pem: issued.ca_pem,
        fingerprint: issued.fingerprint,
    }))
}

/// Body of `POST /admin/v1/boxes/{box}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    reason: String,
}

async fn revoke_box(
    State(s): State<AppState>,
    Path(box_id): Path<String>,
    body: Result<Json<RevokeRequest>, JsonRejection>,
) -> AResult<BoxRecord> {
    let Json(req) = body?;
    let reason = crate::hq::validate::revocation_reason(&req.reason)?;
    let rec = s
        .store
        .revoke_box(&box_id, reason, "admin", now_ms())
        .await?;
    tracing::warn!(box_id = %rec.id, reason, "box revoked");
    Ok(Json(rec))
}

/// Query of `GET /admin/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(rename = "box")]
    box_id: Option<String>,
    limit: Option<usize>,
}

async fn audit(
    State(s): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> AResult<Vec<AuditEntry>> {
    let Query(q) = query?;
    Ok(Json(
        s.store
            .audit(q.box_id.as_deref(), q.limit.unwrap_or(100))
            .await?,
    ))
}

fn kind(name: &str) -> Result<EntityKind, AdminError> {
    entity_kind_from_name(name).ok_or_else(|| AdminError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!(
            "no entity kind {name:?} (user, role, group, extension, queue, contact, blacklist, dial_route)"
        ),
    })
}

async fn list_entities(
    State(s): State<AppState>,
    Path((site, k)): Path<(String, String)>,
) -> AResult<Vec<Change>> {
    let k = kind(&k)?;
    if s.store.site(&site).await?.is_none() {
        return Err(Error::NotFound {
            what: "site",
            key: site,
        }
        .into());
    }
    Ok(Json(s.store.entities(&site, k).await?))
}

async fn get_entity(
    State(s): State<AppState>,
    Path((site, k, key)): Path<(String, String, String)>,
) -> AResult<Change> {
    let k = kind(&k)?;
    Ok(Json(s.store.entity(&site, k, &key).await?.ok_or(
        Error::NotFound {
            what: entity_kind_name(k),
            key,
        },
    )?))
}

/// Query of entity writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    base_revision: Option<i64>,
}

async fn put_entity(
    State(s): State<AppState>,
    Path((site, k, key)): Path<(String, String, String)>,
    query: Result<Query<WriteQuery>, QueryRejection>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> AResult<Change> {
    let k = kind(&k)?;
    let Query(q) = query?;
    let Json(mut value) = body?;
    let Some(obj) = value.as_object_mut() else {
        return Err(bad("the body must be a JSON object"));
    };
    obj.insert(
        "kind".to_owned(),
        serde_json::Value::String(entity_kind_name(k).to_owned()),
    );
    let entity: Entity = serde_json::from_value(value)
        .map_err(|e| bad(format!("not a valid {}: {e}", entity_kind_name(k))))?;
    if entity.key() != key {
        return Err(bad(format!(
            "the row's key {:?} differs from the path's {key:?}",
            entity.key()
        )));
    }
    let change = s.store.put_entity(&site, &entity, q.base_revision).await?;
    s.feed.changed(&site);
    Ok(Json(change))
}

async fn delete_entity(
    State(s): State<AppState>,
    Path((site, k, key)): Path<(String, String, String)>,
) -> AResult<Change> {
    let k = kind(&k)?;
    let change = s.store.delete_entity(&site, k, &key).await?;
    s.feed.changed(&site);
    Ok(Json(change))
}

/// A page of CDRs.
#[derive(Debug, Serialize)]
struct CdrPage {
    cdrs: Vec<CdrRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

async fn cdrs(
    State(s): State<AppState>,
    query: Result<Query<CdrQuery>, QueryRejection>,
) -> AResult<CdrPage> {
    let Query(q) = query?;
    let rows = s.store.cdrs(&q).await?;
    let next = (rows.len() == q.limit())
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(CdrPage { cdrs: rows, next }))
}

/// A page of agent state changes.
#[derive(Debug, Serialize)]
struct AgentStatePage {
    agent_states: Vec<AgentStateRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

async fn agent_states(
    State(s): State<AppState>,
    query: Result<Query<AgentStateQuery>, QueryRejection>,
) -> AResult<AgentStatePage> {
    let Query(q) = query?;
    let rows = s.store.agent_states(&q).await?;
    let next = (rows.len() == q.limit())
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(AgentStatePage {
        agent_states: rows,
        next,
    }))
}

/// A page of campaign results.
#[derive(Debug, Serialize)]
struct CampaignResultPage {
    campaign_results: Vec<CampaignResultRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

/// The `next` cursor of a page of `limit` rows whose last row id is `last`.
fn next_after(len: usize, limit: usize, last: Option<i64>) -> Option<i64> {
    (len == limit).then_some(last).flatten()
}

async fn campaign_results(
    State(s): State<AppState>,
    query: Result<Query<CampaignResultQuery>, QueryRejection>,
) -> AResult<CampaignResultPage> {
    let Query(q) = query?;
    let rows = s.store.campaign_results(&q).await?;
    let next = next_after(rows.len(), q.limit(), rows.last().map(|r| r.id));
    Ok(Json(CampaignResultPage {
        campaign_results: rows,
        next,
    }))
}

/// A page of campaign progress rows.
#[derive(Debug, Serialize)]
struct CampaignProgressPage {
    campaign_progress: Vec<CampaignProgressRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

async fn campaign_progress(
    State(s): State<AppState>,
    query: Result<Query<CampaignProgressQuery>, QueryRejection>,
) -> AResult<CampaignProgressPage> {
    let Query(q) = query?;
    let rows = s.store.campaign_progress(&q).await?;
    let next = next_after(rows.len(), q.limit(), rows.last().map(|r| r.id));
    Ok(Json(CampaignProgressPage {
        campaign_progress: rows,
        next,
    }))
}

/// A page of service records.
#[derive(Debug, Serialize)]
struct ServiceRecordPage {
    service_records: Vec<ServiceRecordRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

async fn service_records(
    State(s): State<AppState>,
    query: Result<Query<ServiceRecordQuery>, QueryRejection>,
) -> AResult<ServiceRecordPage> {
    let Query(q) = query?;
    let rows = s.store.service_records(&q).await?;
    let next = next_after(rows.len(), q.limit(), rows.last().map(|r| r.id));
    Ok(Json(ServiceRecordPage {
        service_records: rows,
        next,
    }))
}

/// A page of customers made on the boxes.
#[derive(Debug, Serialize)]
struct CustomerPage {
    customers: Vec<CustomerRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

async fn customers(
    State(s): State<AppState>,
    query: Result<Query<CustomerQuery>, QueryRejection>,
) -> AResult<CustomerPage> {
    let Query(q) = query?;
    let rows = s.store.box_customers(&q).await?;
    let next = next_after(rows.len(), q.limit(), rows.last().map(|r| r.id));
    Ok(Json(CustomerPage {
        customers: rows,
        next,
    }))
}

async fn daily(
    State(s): State<AppState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> AResult<Vec<DailyReportRow>> {
    let Query(q) = query?;
    Ok(Json(s.store.daily_report(&q).await?))
}

/// Body of `POST /admin/v1/feed/prune`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneRequest {
    keep_revisions: i64,
}

/// Answer of a prune.
#[derive(Debug, Serialize)]
struct PruneResult {
    pruned: u64,
}

async fn prune(
    State(s): State<AppState>,
    body: Result<Json<PruneRequest>, JsonRejection>,
) -> AResult<PruneResult> {
    let Json(req) = body?;
    if req.keep_revisions < 0 {
        return Err(bad("keep_revisions must not be negative"));
    }
    Ok(Json(PruneResult {
        pruned: s.store.prune_feed(req.keep_revisions).await?,
    }))
}
