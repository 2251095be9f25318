//! The JSON routes behind the pages, registered in the API router
//! ([`crate::api`]): `GET /api/v1/status`, its SSE stream `GET /api/v1/events/status`,
//! and `POST /api/v1/ports/{port}/ring-test`. The ring test's form on the ports page
//! goes through the same [`run_ring_test`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::status::{RingTestError, RING_TEST_DURATION};
use crate::api::{ApiError, ApiState, Authed};
use crate::audit;
use crate::rbac::{Action, Resource, Target};

/// How often an idle SSE stream sends a comment, so proxies and the browser keep it.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

fn not_running() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "live status is not available: this API is not served by a running daemon",
    )
}

async fn require_view(state: &ApiState, who: &Authed) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            who,
            Resource::Diagnostics,
            Action::View,
            &Target::Site,
            "status",
        )
        .await?;
    Ok(())
}

/// `GET /api/v1/status` (`diagnostics.view`): the live [`super::status::BoxStatus`].
pub(crate) async fn status_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    require_view(&state, &who).await?;
    let status = state.status().ok_or_else(not_running)?;
    Ok(Json(&*status.current()).into_response())
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
    let port: u8 = port.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{port:?} is not a port number"),
        )
    })?;
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

/// Authorizes (`diagnostics.operate`), asks the main loop to ring `port`, and audits
/// the outcome (`ring_test`, ok or failed with the reason).
pub(crate) async fn run_ring_test(
    state: &ApiState,
    who: &Authed,
    port: u8,
) -> Result<(), ApiError> {
    let target = format!("port {port}");
    {
        let reader = state.reader()?;
        state
            .require(
                &reader,
                who,
                Resource::Diagnostics,
                Action::Operate,
                &Target::Site,
                &target,
            )
            .await?;
    }
    let Some(status) = state.status() else {
        return Err(not_running());
    };
    let outcome = status.ring_test(port).await;
    let (result, detail) = match &outcome {
        Ok(()) => (
            audit::AuditResult::Ok,
            json!({ "port": port, "ms": RING_TEST_DURATION.as_millis() as u64 }),
        ),
        Err(e) => (
            audit::AuditResult::Failed,
            json!({ "port": port, "reason": e.to_string() }),
        ),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: "ring_test".to_owned(),
                resource: Resource::Diagnostics.as_str().to_owned(),
                target,
                result,
                detail,
            },
            state.now(),
        )
        .await?;
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
