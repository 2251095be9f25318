//! `/api/v1/tools/...`: the technician's tools ([`crate::tools`]) as JSON routes, and
//! the `run_*` functions the tools page's forms share with them.
//!
//! | route | permission | answer |
//! | --- | --- | --- |
//! | `POST /api/v1/tools/ping` `{"host"?, "count"?}` | `diagnostics.operate` | the run: command, exit code, output |
//! | `POST /api/v1/tools/traceroute` `{"host"?}` | `diagnostics.operate` | the same; 501 when not installed |
//! | `POST /api/v1/tools/sip-options` `{"uri"?}` | `diagnostics.operate` | status, reason, RTT, or `timeout` |
//! | `POST /api/v1/tools/capture` `{"seconds"}` | `diagnostics.download` | a pcap file; 409 while one runs |
//! | `GET /api/v1/tools/bundle` | `diagnostics.download` and `system_config.view` | a tar.gz |
//! | `GET /api/v1/sip/trace?filter=&limit=` | `diagnostics.download` | the kept SIP messages that match ([`crate::tools::sip_trace`]) |
//! | `GET /api/v1/events/sip-trace?filter=` | `diagnostics.download` | SSE: the kept ones, then each new one that matches |
//!
//! POSTs need the CSRF header like every state-changing route; bad input is a 400
//! naming the field, and nothing runs. Every run is audited (`tool_ping`,
//! `tool_traceroute`, `tool_sip_options`, `tool_capture`, `tool_bundle`) with its
//! target and outcome.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, Authed};
use crate::audit::{AuditEntry, AuditResult};
use crate::rbac::{Action, Resource, Target};
use crate::tools::bundle::{self, BundleFile};
use crate::tools::{capture::Capture, CommandRun, ProbeReport, ToolError, Tools};

fn tools(state: &ApiState) -> Result<&Tools, ApiError> {
    state.status().and_then(|s| s.tools()).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "the tools are not available: this API is not served by a running daemon",
        )
    })
}

/// The API error of a tool's failure.
pub(crate) fn tool_error(e: &ToolError) -> ApiError {
    let field = match e {
        ToolError::BadHost { .. } => Some("host"),
        ToolError::BadCount { .. } => Some("count"),
        ToolError::BadUri { .. } => Some("uri"),
        ToolError::BadDuration { .. } => Some("seconds"),
        _ => None,
    };
    if let Some(field) = field {
        return ApiError::invalid(field, e.to_string());
    }
    let status = match e {
        ToolError::NoTarget { .. } => StatusCode::BAD_REQUEST,
        ToolError::CaptureBusy | ToolError::NoSip => StatusCode::CONFLICT,
        ToolError::NotInstalled { .. } => StatusCode::NOT_IMPLEMENTED,
        ToolError::Resolve { .. } => StatusCode::BAD_GATEWAY,
        ToolError::Capture(crate::tools::capture::CaptureError::Open(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// Checks `resource.action` at site scope for `what` (audited when denied).
async fn require(
    state: &ApiState,
    who: &Authed,
    resource: Resource,
    action: Action,
    what: &str,
) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(&reader, who, resource, action, &Target::Site, what)
        .await?;
    Ok(())
}

async fn audit(
    state: &ApiState,
    who: &Authed,
    action: &str,
    target: &str,
    ok: bool,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .accounts()
        .audit(
            AuditEntry {
                actor: who.actor(),
                action: action.to_owned(),
                resource: Resource::Diagnostics.as_str().to_owned(),
                target: target.to_owned(),
                result: if ok {
                    AuditResult::Ok
                } else {
                    AuditResult::Failed
                },
                detail,
            },
            state.now(),
        )
        .await?;
    Ok(())
}

/// Audits a tool's outcome and turns its error into the API's.
async fn finish<T>(
    state: &ApiState,
    who: &Authed,
    action: &str,
    target: &str,
    outcome: Result<T, ToolError>,
    detail: impl FnOnce(&T) -> serde_json::Value,
) -> Result<T, ApiError> {
    match outcome {
        Ok(v) => {
            audit(state, who, action, target, true, detail(&v)).await?;
            Ok(v)
        }
        Err(e) => {
            // Bad input changed nothing and ran nothing: not worth an audit row.
            if !e.is_bad_input() {
                audit(
                    state,
                    who,
                    action,
                    target,
                    false,
                    json!({ "error": e.to_string() }),
                )
                .await?;
            }
            Err(tool_error(&e))
        }
    }
}

/// A JSON body, `{}` when empty; 400 naming the problem otherwise.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostBody {
    host: Option<String>,
    count: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UriBody {
    uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    seconds: Option<i64>,
}

/// Ping (`diagnostics.operate`), audited.
pub(crate) async fn run_ping(
    state: &ApiState,
    who: &Authed,
    host: Option<&str>,
    count: Option<u32>,
) -> Result<CommandRun, ApiError> {
    require(state, who, Resource::Diagnostics, Action::Operate, "ping").await?;
    let tools = tools(state)?;
    let target = host.unwrap_or("HQ");
    let outcome = tools.ping(host, count).await;
    finish(
        state,
        who,
        "tool_ping",
        target,
        outcome,
        |r| json!({ "command": r.command, "exit_code": r.exit_code, "timed_out": r.timed_out }),
    )
    .await
}

/// Traceroute (`diagnostics.operate`), audited.
pub(crate) async fn run_traceroute(
    state: &ApiState,
    who: &Authed,
    host: Option<&str>,
) -> Result<CommandRun, ApiError> {
    require(
        state,
        who,
        Resource::Diagnostics,
        Action::Operate,
        "traceroute",
    )
    .await?;
    let tools = tools(state)?;
    let target = host.unwrap_or("HQ");
    let outcome = tools.traceroute(host).await;
    finish(
        state,
        who,
        "tool_traceroute",
        target,
        outcome,
        |r| json!({ "command": r.command, "exit_code": r.exit_code, "timed_out": r.timed_out }),
    )
    .await
}

/// OPTIONS probe (`diagnostics.operate`), audited.
pub(crate) async fn run_sip_options(
    state: &ApiState,
    who: &Authed,
    uri: Option<&str>,
) -> Result<ProbeReport, ApiError> {
    require(
        state,
        who,
        Resource::Diagnostics,
        Action::Operate,
        "sip-options",
    )
    .await?;
    let tools = tools(state)?;
    let target = uri.unwrap_or("trunk");
    let outcome = tools.sip_options(uri).await;
    finish(
        state,
        who,
        "tool_sip_options",
        target,
        outcome,
        |r| json!({ "uri": r.uri, "outcome": r.outcome, "status": r.status }),
    )
    .await
}

/// Packet capture (`diagnostics.download`), audited.
pub(crate) async fn run_capture(
    state: &ApiState,
    who: &Authed,
    seconds: i64,
) -> Result<Capture, ApiError> {
    require(
        state,
        who,
        Resource::Diagnostics,
        Action::Download,
        "capture",
    )
    .await?;
    let tools = tools(state)?;
    // The SIP endpoint's listeners as bound (`udp 127.0.0.1:5060`).
    let bound: Vec<u16> = state
        .status()
        .and_then(|s| s.sip())
        .map(|s| {
            s.listeners
                .iter()
                .filter_map(|l| l.rsplit(':').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let outcome = tools.capture(seconds, &bound).await;
    finish(
        state,
        who,
        "tool_capture",
        "sip+rtp",
        outcome,
        |c| json!({ "seconds": seconds, "packets": c.packets, "truncated": c.truncated }),
    )
    .await
}

/// The pcap download of a capture.
pub(crate) fn pcap_response(c: Capture) -> Response {
    let name = format!("branchline-capture-{}.pcap", c.started_ms);
    (
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.tcpdump.pcap".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                header::HeaderName::from_static("x-capture-packets"),
                c.packets.to_string(),
            ),
            (
                header::HeaderName::from_static("x-capture-truncated"),
                c.truncated.to_string(),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        c.pcap,
    )
        .into_response()
}

/// Most lines `GET /api/v1/logs` answers.
pub const MAX_LOG_LINES: usize = 2000;

/// The daemon's recent log lines (`diagnostics.view` and `system_config.view`, like
/// the bundle's logs), newest `limit` at `level` or above, every configured secret
/// scrubbed. `Ok(None)` when this process keeps no log lines (an API served alone).
pub(crate) async fn recent_logs(
    state: &ApiState,
    who: &Authed,
    level: Option<&str>,
    limit: Option<&str>,
) -> Result<Option<Vec<crate::tools::logs::LogLine>>, ApiError> {
    use crate::tools::logs::Level;
    require(state, who, Resource::Diagnostics, Action::View, "logs").await?;
    require(state, who, Resource::SystemConfig, Action::View, "logs").await?;
    let level = match level.map(str::trim).filter(|l| !l.is_empty()) {
        None => Level::Info,
        Some(name) => Level::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("level: {name:?} is not one of trace, debug, info, warn, error"),
            )
        })?,
    };
    let limit = match limit.map(str::trim).filter(|l| !l.is_empty()) {
        None => 200,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LINES).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit: {text:?} is not a number from 1 to {MAX_LOG_LINES}"),
                )
            })?,
    };
    let tools = state.status().and_then(|s| s.tools());
    let Some(logs) = tools.and_then(Tools::logs) else {
        return Ok(None);
    };
    let secrets = &tools
        .map(Tools::settings)
        .map(|s| s.secrets.clone())
        .unwrap_or_default();
    Ok(Some(
        logs.lines(level, limit)
            .into_iter()
            .map(|mut l| {
                l.text = bundle::scrub(&l.text, secrets);
                l
            })
            .collect(),
    ))
}

/// `?level=&limit=` of the logs route and page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    /// Lowest level shown (default `info`).
    pub level: Option<String>,
    /// Most lines (default 200, at most [`MAX_LOG_LINES`]).
    pub limit: Option<String>,
}

/// `GET /api/v1/logs?level=&limit=`: [`recent_logs`] as JSON.
pub(super) async fn logs_json(
    State(state): State<ApiState>,
    who: Authed,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Result<Response, ApiError> {
    let lines = recent_logs(&state, &who, q.level.as_deref(), q.limit.as_deref()).await?;
    Ok(Json(match lines {
        Some(lines) => json!({ "kept": true, "lines": lines }),
        None => json!({ "kept": false, "lines": [] }),
    })
    .into_response())
}

/// The diagnostics bundle (`diagnostics.download` and `system_config.view`), audited.
pub(crate) async fn run_bundle(state: &ApiState, who: &Authed) -> Result<Response, ApiError> {
    require(
        state,
        who,
        Resource::Diagnostics,
        Action::Download,
        "bundle",
    )
    .await?;
    require(state, who, Resource::SystemConfig, Action::View, "bundle").await?;
    // Without a running daemon's tools (an API served alone) the bundle still has the
    // store, status and versions; the config and logs then say they are unknown.
    let tools = state.status().and_then(|s| s.tools());
    let default_settings = crate::tools::ToolsSettings::default();
    let settings = tools.map_or(&default_settings, |t| t.settings());
    let now = state.now();
    let config = match &settings.config_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match bundle::redacted_config(&text) {
                Ok(t) => format!(
                    "# {} with every secret replaced by {}\n{t}",
                    path.display(),
                    bundle::REDACTED
                ),
                Err(e) => format!("# {} did not parse ({e}); not included\n", path.display()),
            },
            Err(e) => format!("# {} not readable: {e}\n", path.display()),
        },
        None => {
            "# no config file is known to this API (not served by a running daemon)\n".to_owned()
        }
    };
    let logs = match tools.and_then(Tools::logs) {
        Some(l) => String::from_utf8_lossy(&l.snapshot()).into_owned(),
        None => "this branchd keeps no log lines in memory (logs are in journald)\n".to_owned(),
    };
    let reader = state.reader()?;
    let store = match &settings.db_path {
        Some(p) => bundle::store_stats(reader.connection(), p),
        None => bundle::store_stats(reader.connection(), reader.path()),
    };
    let status = state.status();
    let sync = state
        .sync()
        .report(&reader, now)
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    let live = json!({
        "box": status.map(|s| serde_json::to_value(&*s.current()).unwrap_or_default()),
        "sip": status.and_then(|s| s.sip()).map(|s| serde_json::to_value(&*s).unwrap_or_default()),
        "sync_and_wan": sync,
    });
    let versions = json!({
        "branchd": env!("CARGO_PKG_VERSION"),
        "board_model": settings.board_model,
        "store_schema": crate::store::SCHEMA_VERSION,
        "kernel": std::fs::read_to_string("/proc/version").ok().map(|v| v.trim().to_owned()),
        "made_at_ms": now,
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let files = [
        BundleFile {
            name: "config.toml",
            text: config,
        },
        BundleFile {
            name: "logs/recent.log",
            text: logs,
        },
        BundleFile {
            name: "store.json",
            text: pretty(&store),
        },
        BundleFile {
            name: "versions.json",
            text: pretty(&versions),
        },
        BundleFile {
            name: "status.json",
            text: pretty(&live),
        },
    ];
    let top = format!("branchline-diagnostics-{now}");
    let mtime = u64::try_from(now / 1000).unwrap_or(0);
    let outcome = bundle::pack(&top, &files, &settings.secrets, mtime)
        .map_err(|e| ToolError::Bundle(e.to_string()));
    let bytes = finish(
        state,
        who,
        "tool_bundle",
        "bundle",
        outcome,
        |b| json!({ "bytes": b.len() }),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{top}.tar.gz\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /api/v1/tools/ping`.
pub(crate) async fn ping(
    State(state): State<ApiState>,
    who: Authed,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: HostBody = body(&bytes)?;
    let run = run_ping(&state, &who, b.host.as_deref(), b.count).await?;
    Ok(Json(run).into_response())
}

/// `POST /api/v1/tools/traceroute`.
pub(crate) async fn traceroute(
    State(state): State<ApiState>,
    who: Authed,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: HostBody = body(&bytes)?;
    if b.count.is_some() {
        return Err(ApiError::invalid("count", "traceroute takes no count"));
    }
    let run = run_traceroute(&state, &who, b.host.as_deref()).await?;
    Ok(Json(run).into_response())
}

/// `POST /api/v1/tools/sip-options`.
pub(crate) async fn sip_options(
    State(state): State<ApiState>,
    who: Authed,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: UriBody = body(&bytes)?;
    let report = run_sip_options(&state, &who, b.uri.as_deref()).await?;
    Ok(Json(report).into_response())
}

/// `POST /api/v1/tools/capture`.
pub(crate) async fn capture(
    State(state): State<ApiState>,
    who: Authed,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: CaptureBody = body(&bytes)?;
    let seconds = b
        .seconds
        .ok_or_else(|| ApiError::invalid("seconds", "how long to capture: 1 to 60 seconds"))?;
    let c = run_capture(&state, &who, seconds).await?;
    Ok(pcap_response(c))
}

/// `GET /api/v1/tools/bundle`.
pub(crate) async fn download_bundle(
    State(state): State<ApiState>,
    who: Authed,
) -> Result<Response, ApiError> {
    run_bundle(&state, &who).await
}

/// Most messages `GET /api/v1/sip/trace` answers (all the trace keeps).
pub const MAX_TRACE_LIMIT: usize = crate::tools::sip_trace::TRACE_KEEP;

/// `?filter=&limit=` of the SIP trace routes and page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TraceQuery {
    /// A Call-ID or (part of) a number; empty or absent: every message.
    pub filter: Option<String>,
    /// Most messages (default and most: [`MAX_TRACE_LIMIT`]).
    pub limit: Option<String>,
}

/// The SIP trace (`diagnostics.download`: whole messages, numbers unmasked, like a
/// packet capture) and the parsed filter; `Ok(None)` when this process has no tools
/// (an API served alone).
pub(crate) async fn sip_trace(
    state: &ApiState,
    who: &Authed,
    q: &TraceQuery,
) -> Result<
    Option<(
        crate::tools::sip_trace::SipTrace,
        crate::tools::sip_trace::TraceFilter,
        usize,
    )>,
    ApiError,
> {
    require(
        state,
        who,
        Resource::Diagnostics,
        Action::Download,
        "sip trace",
    )
    .await?;
    let filter = crate::tools::sip_trace::TraceFilter::parse(q.filter.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("filter: {e}")))?;
    let limit = match q.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => MAX_TRACE_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_TRACE_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit: {text:?} is not a number from 1 to {MAX_TRACE_LIMIT}"),
                )
            })?,
    };
    let tools = state.status().and_then(|s| s.tools());
    Ok(tools.map(|t| (t.sip_trace().clone(), filter, limit)))
}

/// `GET /api/v1/sip/trace?filter=&limit=`: the kept messages that match, oldest first.
pub(super) async fn sip_trace_json(
    State(state): State<ApiState>,
    who: Authed,
    axum::extract::Query(q): axum::extract::Query<TraceQuery>,
) -> Result<Response, ApiError> {
    let found = sip_trace(&state, &who, &q).await?;
    Ok(Json(match found {
        Some((trace, filter, limit)) => json!({
            "filter": filter.as_str(),
            "messages": trace.recent(&filter, limit),
        }),
        None => json!({ "filter": "", "messages": [] }),
    })
    .into_response())
}

/// `GET /api/v1/events/sip-trace?filter=`: Server-Sent Events, a `message` event for
/// each kept message that matches (oldest first), then one per new one; a `lagged`
/// event `{missed}` when this client fell behind.
pub(super) async fn sip_trace_events(
    State(state): State<ApiState>,
    who: Authed,
    axum::extract::Query(q): axum::extract::Query<TraceQuery>,
) -> Result<Response, ApiError> {
    use crate::tools::sip_trace::Live;
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some((trace, filter, limit)) = sip_trace(&state, &who, &q).await? else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is not running here",
        ));
    };
    // Subscribe first, then read the kept ones: a message recorded in between shows
    // twice rather than not at all; the client drops repeats by `seq`.
    let watcher = trace.subscribe();
    let kept = trace.recent(&filter, limit);
    let first = futures_util::stream::iter(kept.into_iter().map(|e| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("message")
                .json_data(e)
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
        )
    }));
    let live = futures_util::stream::unfold((watcher, filter), |(mut w, f)| async move {
        let event = match w.next(&f).await? {
            Live::Entry(e) => Event::default()
                .event("message")
                .json_data(e)
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
            Live::Missed(n) => Event::default()
                .event("lagged")
                .json_data(json!({ "missed": n }))
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
        };
        Some((Ok(event), (w, f)))
    });
    use futures_util::StreamExt;
    Ok(Sse::new(first.chain(live))
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}
