//! The numbers behind the charts, for the pages and as JSON under `/api/v1/charts`
//! (registered in the API router, [`crate::api`]), so a page and the API always agree:
//!
//! - `GET /api/v1/charts/calls-per-hour` (`diagnostics.view`): the last 24 hours of
//!   the site's clock of CDRs, answered and not ([`history::calls_per_hour`]); the
//!   calls page.
//! - `GET /api/v1/charts/line` (`diagnostics.view`): each port's line voltage and
//!   loop current history; the ports page.
//! - `GET /api/v1/charts/call-quality` (`diagnostics.view`): RTP jitter and loss of
//!   the calls in progress and the last finished ones; the calls page.
//! - `GET /api/v1/charts/sync-backlog` (`sync.view`): the outbox's depth and oldest
//!   row's age over time; the sync page.
//!
//! The histories are [`super::history`]'s (the line readings the status publisher's);
//! without a running daemon the three live ones answer 409.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::history::{self, CallTrace, HourCount, LineSample, LINE_SAMPLES, SYNC_SAMPLES};
use super::status::PortKind;
use crate::api::{ApiError, ApiState, Authed};
use crate::rbac::{Action, Resource, Target};

/// Calls per hour of the site's clock, the last [`history::CALL_HOURS`].
#[derive(Debug, Clone, Serialize)]
pub struct CallsPerHour {
    /// The site's time zone (`[telephony] time_zone`; `UTC` when unset).
    pub timezone: String,
    /// Start of the first hour, ms since the Unix epoch.
    pub from_ms: i64,
    /// Now, ms since the Unix epoch.
    pub to_ms: i64,
    /// Every hour, oldest first, zeros included.
    pub hours: Vec<HourCount>,
}

/// One port's line history.
#[derive(Debug, Clone, Serialize)]
pub struct PortLine {
    /// The port.
    pub port: u8,
    /// FXS or FXO.
    pub kind: PortKind,
    /// The kept readings, oldest first.
    pub samples: Vec<LineSample>,
}

/// Every port's line history.
#[derive(Debug, Clone, Serialize)]
pub struct LineCharts {
    /// Now, ms since the Unix epoch.
    pub at_ms: i64,
    /// One reading kept per this many ms.
    pub interval_ms: i64,
    /// Readings kept per port at most.
    pub capacity: usize,
    /// Every port, in board order.
    pub ports: Vec<PortLine>,
}

/// RTP quality traces of calls.
#[derive(Debug, Clone, Serialize)]
pub struct QualityCharts {
    /// Now, ms since the Unix epoch.
    pub at_ms: i64,
    /// Calls are sampled every this many ms (a long call's own `resolution_ms` may
    /// be coarser).
    pub interval_ms: i64,
    /// The calls in progress with a SIP leg (oldest first), then the finished ones
    /// (most recent first).
    pub calls: Vec<CallTrace>,
}

/// The outbox over time.
#[derive(Debug, Clone, Serialize)]
pub struct SyncCharts {
    /// Now, ms since the Unix epoch.
    pub at_ms: i64,
    /// Sampled every this many ms.
    pub interval_ms: i64,
    /// Samples kept at most.
    pub capacity: usize,
    /// The samples, oldest first.
    pub samples: Vec<history::SyncSample>,
    /// The outbox as read for this answer (`at_ms`): the chart ends with it, so its
    /// last point is the figure the sync page shows beside it, not a sample up to an
    /// interval old. `None` when the store could not be read.
    pub current: Option<history::SyncSample>,
}

fn not_sampled() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "charts are not sampled: this API is not served by a running daemon",
    )
}

async fn require(
    state: &ApiState,
    who: &Authed,
    resource: Resource,
    target: &str,
) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(&reader, who, resource, Action::View, &Target::Site, target)
        .await?;
    Ok(())
}

fn charts(state: &ApiState) -> Result<history::Charts, ApiError> {
    state
        .status()
        .and_then(|s| s.charts().cloned())
        .ok_or_else(not_sampled)
}

/// Calls per hour for `who` (`diagnostics.view`).
pub(crate) async fn calls_per_hour(
    state: &ApiState,
    who: &Authed,
) -> Result<CallsPerHour, ApiError> {
    require(state, who, Resource::Diagnostics, "calls per hour").await?;
    let reader = state.reader()?;
    let now = state.now();
    let zone = crate::site_time::store::zone(reader.connection(), reader.path())?;
    let hours = history::calls_per_hour(reader.connection(), reader.path(), &zone, now)?;
    Ok(CallsPerHour {
        timezone: zone.name().to_owned(),
        from_ms: hours.first().map_or(now, |h| h.hour_start_ms),
        to_ms: now,
        hours,
    })
}

/// The line histories for `who` (`diagnostics.view`).
pub(crate) async fn line_charts(state: &ApiState, who: &Authed) -> Result<LineCharts, ApiError> {
    require(state, who, Resource::Diagnostics, "line history").await?;
    let status = state.status().ok_or_else(not_sampled)?;
    let history = status.line_history().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping; try again when it is back",
        )
    })?;
    let ports = status
        .current()
        .ports
        .iter()
        .map(|p| PortLine {
            port: p.port,
            kind: p.kind,
            samples: history.samples(p.port),
        })
        .collect();
    Ok(LineCharts {
        at_ms: state.now(),
        interval_ms: history.interval_ms(),
        capacity: LINE_SAMPLES,
        ports,
    })
}

/// The calls' RTP traces for `who` (`diagnostics.view`).
pub(crate) async fn quality_charts(
    state: &ApiState,
    who: &Authed,
) -> Result<QualityCharts, ApiError> {
    require(state, who, Resource::Diagnostics, "call quality history").await?;
    let (interval_ms, calls) = charts(state)?.with(|h| (h.call_interval_ms(), h.calls.traces()));
    Ok(QualityCharts {
        at_ms: state.now(),
        interval_ms,
        calls,
    })
}

/// The outbox history for `who` (`sync.view`), ending with `current`: the outbox as
/// the caller read it for the figure it shows (the sync page's report), or as read
/// here when `None`.
pub(crate) async fn sync_charts(
    state: &ApiState,
    who: &Authed,
    current: Option<history::SyncSample>,
) -> Result<SyncCharts, ApiError> {
    require(state, who, Resource::Sync, "sync backlog history").await?;
    let (interval_ms, samples) = charts(state)?.with(|h| (h.chart_interval_ms(), h.sync.samples()));
    let current = match current {
        Some(c) => Some(c),
        None => {
            let now = state.now();
            let reader = state.reader()?;
            crate::sync::state::backlog(reader.connection(), reader.path())
                .map(|b| history::SyncSample::of(now, &b))
                .map_err(|e| tracing::warn!(error = %e, "sync backlog not read"))
                .ok()
        }
    };
    Ok(SyncCharts {
        at_ms: current.map_or_else(|| state.now(), |c| c.at_ms),
        interval_ms,
        capacity: SYNC_SAMPLES,
        samples,
        current,
    })
}

/// `GET /api/v1/charts/calls-per-hour`.
pub(crate) async fn calls_per_hour_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    Ok(Json(calls_per_hour(&state, &who).await?).into_response())
}

/// `GET /api/v1/charts/line`.
pub(crate) async fn line_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    Ok(Json(line_charts(&state, &who).await?).into_response())
}

/// `GET /api/v1/charts/call-quality`.
pub(crate) async fn call_quality_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    Ok(Json(quality_charts(&state, &who).await?).into_response())
}

/// `GET /api/v1/charts/sync-backlog`.
pub(crate) async fn sync_backlog_json(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    Ok(Json(sync_charts(&state, &who, None).await?).into_response())
}
