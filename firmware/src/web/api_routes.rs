//! The JSON routes behind the pages, registered in the API router
//! ([`crate::api`]): `GET /api/v1/status`, its SSE stream `GET /api/v1/events/status`,
//! `GET /api/v1/system` (the system page's [`SystemReport`]),
//! `POST /api/v1/ports/{port}/ring-test`, `GET /api/v1/sip` (trunk and phone
//! registrations) and `GET /api/v1/calls/active` (calls in progress with their RTP
//! statistics, numbers masked per role) and `POST /api/v1/system/reboot`. The ring
//! test's form on the ports page goes through the same [`run_ring_test`], the system
//! page's reboot form through [`run_reboot`], the calls page through [`active_calls`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::pages::SyncView;
use super::status::{
    BoxStatus, LineTestError, LoopbackError, RebootError, RingTestError, StatusHandle,
    RING_TEST_DURATION,
};
use super::system::{DiskReport, SystemReport};
use super::views::{active_call_views, ActiveCallView};
use crate::api::{ApiError, ApiState, Authed};
use crate::audit;
use crate::mask::{self, NumberDirectory};
use crate::rbac::{Action, Resource, Target};
use crate::tools::line_test::LineTestResult;
use crate::tools::loopback::LoopbackResult;

/// How often an idle SSE stream sends a comment, so proxies and the browser keep it.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

fn not_running() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "live status is not available: this API is not served by a running daemon",
    )
}

async fn require_view(state: &ApiState, who: &Authed) -> Result<(), ApiError> {
    require_view_of(state, who, "status").await
}

async fn require_view_of(state: &ApiState, who: &Authed, target: &str) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            who,
            Resource::Diagnostics,
            Action::View,
            &Target::Site,
            target,
        )
        .await?;
    Ok(())
}

/// `GET /api/v1/sip` (`diagnostics.view`): the SIP endpoint's trunk registration and
/// local phones' registrations, `{"configured": false}` without `[sip]`.
pub(crate) async fn sip_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    require_view_of(&state, &who, "sip").await?;
    let status = state.status().ok_or_else(not_running)?;
    let body = match status.sip() {
        None => json!({ "configured": false }),
        Some(sip) => {
            let mut v = serde_json::to_value(&*sip).map_err(|e| {
                tracing::error!(error = %e, "sip status not serialised");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            })?;
            v["configured"] = json!(true);
            v
        }
    };
    Ok(Json(body).into_response())
}

/// The calls in progress for `who` (`diagnostics.view`, checked here), numbers masked
/// unless `numbers.view` covers the call: the views, and why the RTP statistics are
/// missing when the media engine did not answer.
pub(crate) async fn active_calls(
    state: &ApiState,
    who: &Authed,
) -> Result<(Vec<ActiveCallView>, Option<String>), ApiError> {
    require_view_of(state, who, "calls").await?;
    let status = state.status().ok_or_else(not_running)?;
    let active = status.active_calls().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping; try again when it is back",
        )
    })?;
    let reader = state.reader()?;
    let authz = state.authorizer(&reader)?;
    let dir = NumberDirectory::load(&reader)?;
    let pattern = *state.mask_pattern();
    let views = active_call_views(&active, state.now(), |a, b| {
        mask::call_numbers(who.subject(), &authz, &pattern, &dir, a, b)
    });
    Ok((views, active.legs.err()))
}

/// `GET /api/v1/calls/active` (`diagnostics.view`): the calls in progress with their
/// SIP legs' codec and RTP loss, jitter and MOS.
pub(crate) async fn active_calls_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    let (calls, rtp_error) = active_calls(&state, &who).await?;
    Ok(Json(json!({
        "at_ms": state.now(),
        "calls": calls,
        "rtp_error": rtp_error,
    }))
    .into_response())
}

/// What the dashboard shows besides the live status: the sync and WAN report (when
/// `who` holds `sync.view`), the disk, and the alarms drawn from them. The dashboard
/// page and `GET /api/v1/status` both use it, so they list the same alarms.
#[derive(Debug)]
pub(super) struct DashboardFacts {
    /// The live status (`None`: not served by a running daemon).
    pub snapshot: Option<std::sync::Arc<BoxStatus>>,
    /// The sync report, or why it is missing.
    pub sync: SyncView,
    /// The data directory's file system (`None`: not served by a running daemon).
    pub disk: Option<Result<DiskReport, String>>,
    /// The alarms (`None`: not served by a running daemon).
    pub alarms: Option<Vec<String>>,
}

/// The dashboard's facts for `who` (the caller checked `diagnostics.view`).
pub(super) fn dashboard_facts(state: &ApiState, who: &Authed) -> DashboardFacts {
    let sync = match state.reader() {
        Ok(reader) => {
            let allowed = state.authorizer(&reader).is_ok_and(|a| {
                a.authorize(who.subject(), Resource::Sync, Action::View, &Target::Site)
                    .is_allowed()
            });
            if allowed {
                SyncView::Report(
                    state
                        .sync()
                        .report(&reader, state.now())
                        .map(Box::new)
                        .map_err(|e| e.to_string()),
                )
            } else {
                SyncView::Denied
            }
        }
        Err(e) => SyncView::Report(Err(e.message().to_owned())),
    };
    let status = state.status();
    let snapshot = status.map(StatusHandle::current);
    let disk = status.map(|s| DiskReport::of(&s.info().data_dir));
    let report = match &sync {
        SyncView::Report(Ok(r)) => Some(&**r),
        _ => None,
    };
    let https = state.https().get();
    let alarms = snapshot.as_deref().map(|s| {
        super::pages::alarms(
            s,
            report,
            disk.as_ref().and_then(|d| d.as_ref().ok()),
            &https,
        )
    });
    DashboardFacts {
        snapshot,
        sync,
        disk,
        alarms,
    }
}

/// `GET /api/v1/status` (`diagnostics.view`): the live [`super::status::BoxStatus`]
/// with the dashboard's `alarms` (the same list as the page: port faults, trunk, WAN,
/// sync, disk, HTTPS; the sync and WAN ones only for `sync.view`) and `disk` (the data
/// directory's file system: `{path, total_bytes, free_bytes, used_percent}`, or
/// `{error}`).
pub(crate) async fn status_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    require_view(&state, &who).await?;
    state.status().ok_or_else(not_running)?;
    let facts = dashboard_facts(&state, &who);
    let mut body = serde_json::to_value(facts.snapshot.as_deref()).map_err(|e| {
        tracing::error!(error = %e, "live status not serialised");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    body["alarms"] = json!(facts.alarms.unwrap_or_default());
    body["disk"] = match facts.disk {
        Some(Ok(d)) => json!(d),
        Some(Err(e)) => json!({ "error": e }),
        None => serde_json::Value::Null,
    };
    Ok(Json(body).into_response())
}

/// The system report ([`super::system::system_report`], on a blocking thread: it may
/// run `fw_printenv`); the caller checked `system_config.view`.
pub(crate) async fn system(state: &ApiState) -> Result<SystemReport, ApiError> {
    let status = state.status().cloned();
    let now = state.now();
    tokio::task::spawn_blocking(move || {
        super::system::system_report(
            status.as_ref(),
            now,
            std::path::Path::new(super::system::THERMAL_ROOT),
        )
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "system report worker failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// `GET /api/v1/system` (`system_config.view`, like the system page): the
/// [`SystemReport`] the page shows (version, A/B slots, uptime, CPU and load, memory,
/// disk, temperatures).
pub(crate) async fn system_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    {
        let reader = state.reader()?;
        state
            .require(
                &reader,
                &who,
                Resource::SystemConfig,
                Action::View,
                &Target::Site,
                "system",
            )
            .await?;
    }
    Ok(Json(system(&state).await?).into_response())
}

/// `GET /api/v1/events/status` (`diagnostics.view`): Server-Sent Events, one
/// `status` event with the snapshot at once and one per change after.
pub(crate) async fn status_events(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require_view(&state, &who).await?;
    let rx = state.status().ok_or_else(not_running)?.subscribe();
    let events = stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None; // the daemon is stopping
        }
        let snapshot = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("status")
            .json_data(&*snapshot)
            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Some((Ok(event), (rx, false)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
}

/// `POST /api/v1/ports/{port}/ring-test` (`diagnostics.operate`, CSRF): 202, or 409
/// when the port is busy, 404 for no such port, 400 for an FXO port.
pub(crate) async fn ring_test_api(
    State(state): State<ApiState>,
    who: Authed,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port = port_number(&port)?;
    run_ring_test(&state, &who, port).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "port": port,
            "ringing_for_ms": RING_TEST_DURATION.as_millis() as u64,
        })),
    )
        .into_response())
}

/// A port number from the path, or 400.
fn port_number(port: &str) -> Result<u8, ApiError> {
    port.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{port:?} is not a port number"),
        )
    })
}

/// A port action's check (`diagnostics.operate` on `port N`, audited when denied) and
/// the main loop's handle to ask it of.
async fn authorize_port_action(
    state: &ApiState,
    who: &Authed,
    port: u8,
) -> Result<StatusHandle, ApiError> {
    {
        let reader = state.reader()?;
        state
            .require(
                &reader,
                who,
                Resource::Diagnostics,
                Action::Operate,
                &Target::Site,
                &format!("port {port}"),
            )
            .await?;
    }
    state.status().cloned().ok_or_else(not_running)
}

/// The audit row of a port action: ok with `detail`, or failed with it.
async fn audit_port_action(
    state: &ApiState,
    who: &Authed,
    action: &str,
    port: u8,
    detail: Result<serde_json::Value, serde_json::Value>,
) -> Result<(), ApiError> {
    let (result, detail) = match detail {
        Ok(d) => (audit::AuditResult::Ok, d),
        Err(d) => (audit::AuditResult::Failed, d),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: action.to_owned(),
                resource: Resource::Diagnostics.as_str().to_owned(),
                target: format!("port {port}"),
                result,
                detail,
            },
            state.now(),
        )
        .await?;
    Ok(())
}

/// `POST /api/v1/ports/{port}/line-test` (`diagnostics.operate`, CSRF): 200 with the
/// result (passed or not), 409 when the port is busy, 404 for no such port.
pub(crate) async fn line_test_api(
    State(state): State<ApiState>,
    who: Authed,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port = port_number(&port)?;
    let result = run_line_test(&state, &who, port).await?;
    Ok(Json(json!({ "port": port, "result": result })).into_response())
}

/// Authorizes (`diagnostics.operate`), has the main loop line-test `port`, waits for
/// the result and audits it (`line_test`: ok when it ran, with passed and the first
/// failed check; failed with the reason when it could not run).
pub(crate) async fn run_line_test(
    state: &ApiState,
    who: &Authed,
    port: u8,
) -> Result<LineTestResult, ApiError> {
    let status = authorize_port_action(state, who, port).await?;
    let outcome = status.line_test(port).await;
    let detail = match &outcome {
        Ok(r) => Ok(json!({ "port": port, "passed": r.passed, "summary": r.summary() })),
        Err(e) => Err(json!({ "port": port, "reason": e.to_string() })),
    };
    audit_port_action(state, who, "line_test", port, detail).await?;
    outcome.map_err(|e| {
        let status = match e {
            LineTestError::NoSuchPort { .. } => StatusCode::NOT_FOUND,
            LineTestError::Busy { .. } | LineTestError::AlreadyTesting { .. } => {
                StatusCode::CONFLICT
            }
            LineTestError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })
}

/// `POST /api/v1/ports/{port}/loopback-test` (`diagnostics.operate`, CSRF): 200 with
/// the result (passed or not), 409 when the port is busy or under another test, 404
/// for no such port.
pub(crate) async fn loopback_test_api(
    State(state): State<ApiState>,
    who: Authed,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port = port_number(&port)?;
    let result = run_loopback_test(&state, &who, port).await?;
    Ok(Json(json!({ "port": port, "result": result })).into_response())
}

/// Authorizes (`diagnostics.operate`), has the main loop loopback-test `port`, waits
/// for the result and audits it (`loopback_test`: ok when it ran, with passed and the
/// reason; failed with the reason when it could not run).
pub(crate) async fn run_loopback_test(
    state: &ApiState,
    who: &Authed,
    port: u8,
) -> Result<LoopbackResult, ApiError> {
    let status = authorize_port_action(state, who, port).await?;
    let outcome = status.loopback_test(port).await;
    let detail = match &outcome {
        Ok(r) => Ok(
            json!({ "port": port, "passed": r.passed, "summary": r.reason,
                            "level_tenth_dbm0": r.level_tenth_dbm0, "delay_ms": r.delay_ms }),
        ),
        Err(e) => Err(json!({ "port": port, "reason": e.to_string() })),
    };
    audit_port_action(state, who, "loopback_test", port, detail).await?;
    outcome.map_err(|e| {
        let status = match e {
            LoopbackError::NoSuchPort { .. } => StatusCode::NOT_FOUND,
            LoopbackError::Busy { .. } => StatusCode::CONFLICT,
            LoopbackError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })
}

/// Authorizes (`diagnostics.operate`), asks the main loop to ring `port`, and audits
/// the outcome (`ring_test`, ok or failed with the reason).
pub(crate) async fn run_ring_test(
    state: &ApiState,
    who: &Authed,
    port: u8,
) -> Result<(), ApiError> {
    let status = authorize_port_action(state, who, port).await?;
    let outcome = status.ring_test(port).await;
    let detail = match &outcome {
        Ok(()) => Ok(json!({ "port": port, "ms": RING_TEST_DURATION.as_millis() as u64 })),
        Err(e) => Err(json!({ "port": port, "reason": e.to_string() })),
    };
    audit_port_action(state, who, "ring_test", port, detail).await?;
    outcome.map_err(|e| {
        let status = match e {
            RingTestError::NoSuchPort { .. } => StatusCode::NOT_FOUND,
            RingTestError::NotFxs { .. } => StatusCode::BAD_REQUEST,
            RingTestError::Busy { .. } | RingTestError::AlreadyRinging { .. } => {
                StatusCode::CONFLICT
            }
            RingTestError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })
}

/// The body of `POST /api/v1/system/reboot` (optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootBody {
    /// Reboot even with calls in progress (they are cut).
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/system/reboot` (body optional: `{"force": true}`): 202
/// `{calls_ended}` and the box reboots; 409 while calls are up and not forced.
pub(crate) async fn reboot_api(
    State(state): State<ApiState>,
    who: Authed,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        RebootBody::default()
    } else {
        serde_json::from_slice::<RebootBody>(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"force\": true|false}}: {e}"),
            )
        })?
    };
    let calls_ended = run_reboot(&state, &who, body.force).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "rebooting": true, "calls_ended": calls_ended })),
    )
        .into_response())
}

/// Authorizes (`system_config.operate`), asks the main loop to reboot (refused with
/// calls up unless `force`), and audits the outcome (`reboot`, ok with the calls cut,
/// or failed with the reason). Answers the calls cut.
pub(crate) async fn run_reboot(
    state: &ApiState,
    who: &Authed,
    force: bool,
) -> Result<usize, ApiError> {
    let target = "box".to_owned();
    {
        let reader = state.reader()?;
        state
            .require(
                &reader,
                who,
                Resource::SystemConfig,
                Action::Operate,
                &Target::Site,
                &target,
            )
            .await?;
    }
    let Some(status) = state.status() else {
        return Err(not_running());
    };
    let outcome = status.reboot(force).await;
    let (result, detail) = match &outcome {
        Ok(calls) => (
            audit::AuditResult::Ok,
            json!({ "force": force, "calls_ended": calls }),
        ),
        Err(e) => (
            audit::AuditResult::Failed,
            json!({ "force": force, "reason": e.to_string() }),
        ),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: "reboot".to_owned(),
                resource: Resource::SystemConfig.as_str().to_owned(),
                target,
                result,
                detail,
            },
            state.now(),
        )
        .await?;
    outcome.map_err(|e| {
        let status = match e {
            RebootError::CallsInProgress { .. } => StatusCode::CONFLICT,
            RebootError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })
}
