//! The HTML of the pages (maud templates) and the facts only pages show (disk,
//! memory, load). Every value is escaped by maud; no inline script or style (the
//! CSP forbids both): looks live in `app.css`, behaviour in `app.js`, and elements the
//! script updates carry `data-live` with `data-field` (and `data-port`).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::status::{BoxStatus, Hook, PortKind, PortStatus, StatusHandle, RING_TEST_DURATION};
use super::system::{DiskReport, SlotsReport, SystemReport};
use super::tls::HttpsStatus;
use super::views::ActiveCallView;
use crate::accounts::Page;
use crate::api::Authed;
use crate::mask::CdrView;
use crate::sip_endpoint::status::SipStatus;
use crate::sync::status::SyncStatusReport;
use crate::sync::wan::WanSnapshot;

/// What the dashboard's sync and WAN cards show.
#[derive(Debug)]
pub(super) enum SyncView {
    /// The report, or why it could not be read.
    Report(Result<Box<SyncStatusReport>, String>),
    /// The user lacks `sync.view`.
    Denied,
}

/// `%`-encodes everything but unreserved characters and `/` (for `?next=`).
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `HH:MM:SS` UTC of a Unix time in ms (the script formats the same way).
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `3 d 4 h`, `5 h 2 min`, `4 min 10 s`, `12 s`.
fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {} s", s % 60)
    } else {
        format!("{s} s")
    }
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Disk usage at or above this is an alarm.
pub(super) const DISK_ALARM_PCT: u64 = 90;
/// An outbox row older than this is an alarm (HQ has not had it for an hour).
const BACKLOG_ALARM_MS: i64 = 60 * 60_000;

/// The pages in the navigation bar.
const NAV: [(&str, &str); 9] = [
    ("/dashboard", "Dashboard"),
    ("/ports", "Ports"),
    ("/sip", "SIP"),
    ("/calls", "Calls"),
    ("/queues", "Queues"),
    ("/sync", "Sync"),
    ("/system", "System"),
    ("/tools", "Tools"),
    ("/provisioning", "Provisioning"),
];

/// `YYYY-MM-DD HH:MM:SS` UTC of a Unix time in ms.
pub(super) fn date_time(ms: i64) -> String {
    // Days to a civil date (Howard Hinnant's `civil_from_days`).
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {}", clock(ms))
}

/// `in 3 min 5 s` / `5 s ago` for a time relative to `now_ms`.
fn relative(at_ms: i64, now_ms: i64) -> String {
    if at_ms >= now_ms {
        format!("in {}", duration(at_ms - now_ms))
    } else {
        format!("{} ago", duration(now_ms - at_ms))
    }
}

pub(super) fn layout(title: &str, who: Option<&Authed>, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Branchline" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/dashboard" { "Branchline" }
                    @if let Some(who) = who {
                        nav {
                            @for (href, label) in NAV {
                                @if href == current {
                                    a.current href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(who.csrf_token());
                            span.user { (who.subject().username) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// The login form.
pub(super) fn login_page(next: &str, csrf: &str, message: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        "",
        html! {
            section.card.narrow {
                h1 { "Log in" }
                p.muted { "Gateway diagnostics for technicians." }
                @if let Some(m) = message {
                    p.notice role="alert" { (m) }
                }
                form.stack method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="username" { "Username" }
                    input #username type="text" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// An error page with a way back.
pub(super) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<(&str, &str)>,
) -> Response {
    let (href, label) = back.unwrap_or(("/dashboard", "Go to the dashboard"));
    page(
        status,
        layout(
            title,
            None,
            "",
            html! {
                section.card.narrow.error {
                    h1 { (title) }
                    p.code { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p { (message) }
                    p { a.button href=(href) { (label) } }
                }
            },
        ),
    )
}

/// The 403 page: which permission the page needs, and the reason in words.
pub(super) fn forbidden_page(
    who: Option<&Authed>,
    permission: Option<&str>,
    reason: &str,
) -> Response {
    page(
        StatusCode::FORBIDDEN,
        layout(
            "Access denied",
            who,
            "",
            html! {
                section.card.narrow.error {
                    h1 { "Access denied" }
                    p.code { "403 Forbidden" }
                    @if let Some(p) = permission {
                        p { "This page needs the permission " code { (p) } ", which your role does not grant." }
                    }
                    p.muted { (reason) }
                    p { "Ask an administrator for a technician account, or log in as another user." }
                    p { a.button href="/login" { "Log in as another user" } }
                }
            },
        ),
    )
}

fn hook_pill(port: &PortStatus) -> Markup {
    let class = match port.hook {
        Hook::OffHook => "pill warn",
        Hook::OnHook => "pill ok",
        Hook::Unknown => "pill",
    };
    html! {
        span class=(class) data-live="" data-port=(port.port) data-field="hook" { (port.hook.label()) }
    }
}

fn state_pill(port: &PortStatus) -> Markup {
    let class = match port.state {
        "idle" => "pill",
        "fault" | "lockout" => "pill bad",
        _ => "pill busy",
    };
    html! {
        span class=(class) data-live="" data-port=(port.port) data-field="state" { (port.state) }
    }
}

fn line_text(port: &PortStatus) -> String {
    match port.line {
        Some(l) => format!(
            "{:.1} V, {:.1} mA at {}",
            f64::from(l.millivolts) / 1000.0,
            f64::from(l.microamps) / 1000.0,
            clock(l.at_ms)
        ),
        None => "not reported yet".to_owned(),
    }
}

fn extension(port: &PortStatus) -> String {
    match (&port.extension, &port.name) {
        (Some(n), Some(name)) => format!("{n} {name}"),
        (Some(n), None) => n.clone(),
        _ if port.kind == PortKind::Fxo => "PSTN line".to_owned(),
        _ => "no extension".to_owned(),
    }
}

fn not_running() -> Markup {
    html! { p.muted { "Live status is not available (the API is not served by a running daemon)." } }
}

/// Alarms from the live status, the sync report, the disk and the web page's HTTPS:
/// the dashboard's list and `alarms` of `GET /api/v1/status`.
pub(super) fn alarms(
    status: &BoxStatus,
    sync: Option<&SyncStatusReport>,
    disk: Option<&DiskReport>,
    https: &HttpsStatus,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = https.alarm() {
        out.push(a);
    }
    for p in &status.ports {
        if let Some(f) = &p.fault {
            out.push(format!("Port {}: {f}", p.port));
        }
    }
    if status.trunk == "unusable" {
        out.push("SIP trunk unusable: registration failed or the trunk stopped answering".into());
    }
    if let Some(s) = sync {
        let wan = s.wan["state"].as_str().unwrap_or("unknown");
        if wan == "offline" || wan == "degraded" {
            out.push(format!("WAN {wan}"));
        }
        if let Some(e) = &s.setup_error {
            out.push(format!("Sync is not running: {e}"));
        }
        if s.backlog
            .oldest_age_ms
            .is_some_and(|a| a >= BACKLOG_ALARM_MS)
        {
            out.push(format!(
                "Sync backlog: {} records, the oldest waiting {}",
                s.backlog.depth,
                duration(s.backlog.oldest_age_ms.unwrap_or(0))
            ));
        }
    }
    if let Some(d) = disk {
        if d.used_percent >= DISK_ALARM_PCT {
            out.push(format!(
                "Disk {}% full ({} free)",
                d.used_percent,
                bytes(d.free_bytes)
            ));
        }
    }
    out
}

fn disk_card(disk: &Result<DiskReport, String>) -> Markup {
    html! {
        section.card {
            h2 { "Disk" }
            @match disk {
                Ok(d) => {
                    p.big { (d.used_percent) "% used" }
                    meter min="0" max="100" low="75" high=(DISK_ALARM_PCT) optimum="10" value=(d.used_percent) { (d.used_percent) "%" }
                    p.muted { (bytes(d.free_bytes)) " free of " (bytes(d.total_bytes)) }
                }
                Err(e) => { p.bad { "Unknown: " (e) } }
            }
        }
    }
}

/// The dashboard.
pub(super) fn dashboard_page(
    who: &Authed,
    status: Option<&StatusHandle>,
    facts: &super::api_routes::DashboardFacts,
    now_ms: i64,
) -> Response {
    let snapshot = &facts.snapshot;
    let sync = &facts.sync;
    let disk = &facts.disk;
    let alarm_list = &facts.alarms;
    let body = html! {
        h1 { "Dashboard" }
        @if let Some(s) = &snapshot {
            p.muted { "Up " (duration(now_ms - s.started_at_ms)) " · updated " span data-live="" data-field="at" { (clock(s.at_ms)) } " UTC" }
        }
        section.card.wide.alarms {
            h2 { "Alarms" }
            @match &alarm_list {
                Some(list) if list.is_empty() => { p.ok { "No alarms." } }
                Some(list) => { ul { @for a in list { li.bad { (a) } } } }
                None => { (not_running()) }
            }
        }
        div.cards {
            section.card {
                h2 { "Ports" }
                @if let Some(s) = &snapshot {
                    table {
                        thead { tr { th { "Port" } th { "Line" } th { "Hook" } th { "Call" } } }
                        tbody {
                            @for p in &s.ports {
                                tr {
                                    td { (p.port) " " span.muted { (p.kind.label()) } }
                                    td { (extension(p)) }
                                    td { (hook_pill(p)) }
                                    td { (state_pill(p)) }
                                }
                            }
                        }
                    }
                    p { a href="/ports" { "Port details and tests" } }
                } @else { (not_running()) }
            }
            section.card {
                h2 { "Calls" }
                @if let Some(s) = &snapshot {
                    p.big { span data-live="" data-field="active_calls" { (s.active_calls) } " active" }
                    p { a href="/calls" { "Calls and recent records" } }
                } @else { (not_running()) }
            }
            section.card {
                h2 { "SIP" }
                @if let (Some(s), Some(h)) = (&snapshot, status) {
                    dl {
                        dt { "Trunk" }
                        dd { span data-live="" data-field="trunk" { (s.trunk) } }
                        dt { "Local phones" }
                        @match h.sip() {
                            Some(sip) if sip.is_starting() => { dd.muted { "SIP endpoint starting" } }
                            Some(sip) => {
                                dd { (sip.phones_registered) " of " (sip.phones.len()) " registered" }
                            }
                            None if h.info().sip_configured => {
                                dd { (h.info().sip_accounts) " accounts configured" }
                            }
                            None => { dd { "not configured (no [sip] section)" } }
                        }
                    }
                    p { a href="/sip" { "Registrations" } }
                } @else { (not_running()) }
            }
            section.card {
                h2 { "WAN" }
                @match sync {
                    SyncView::Denied => { p.muted { "Needs the permission " code { "sync.view" } "." } }
                    SyncView::Report(Err(e)) => { p.bad { (e) } }
                    SyncView::Report(Ok(r)) => {
                        dl {
                            dt { "State" }
                            dd { (r.wan["state"].as_str().unwrap_or("unknown")) }
                            dt { "HQ" }
                            dd { (r.wan["hq"]["state"].as_str().unwrap_or("unknown")) }
                            dt { "Trunk probe" }
                            dd { (r.wan["trunk"]["state"].as_str().unwrap_or("unknown")) }
                        }
                    }
                }
            }
            section.card {
                h2 { "Sync with HQ" }
                @match sync {
                    SyncView::Denied => { p.muted { "Needs the permission " code { "sync.view" } "." } }
                    SyncView::Report(Err(e)) => { p.bad { (e) } }
                    SyncView::Report(Ok(r)) => {
                        dl {
                            dt { "State" }
                            dd { (r.state) }
                            dt { "Backlog" }
                            dd {
                                (r.backlog.depth) " records"
                                @if let Some(age) = r.backlog.oldest_age_ms { ", oldest " (duration(age)) }
                            }
                            dt { "Last success" }
                            dd { @match r.last_success_ms { Some(t) => { (duration(now_ms - t)) " ago" } None => { "never" } } }
                            @if let Some(e) = &r.last_error {
                                dt { "Last error" }
                                dd.bad { (e.message) }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = disk { (disk_card(d)) }
        }
    };
    page(
        StatusCode::OK,
        layout("Dashboard", Some(who), "/dashboard", body),
    )
}

/// The ports page.
pub(super) fn ports_page(
    who: &Authed,
    status: Option<&StatusHandle>,
    may_operate: bool,
    (rang, tested, looped): (Option<u8>, Option<u8>, Option<u8>),
    lines: &Result<super::chart_api::LineCharts, String>,
) -> Response {
    let snapshot = status.map(StatusHandle::current);
    let looped = looped.and_then(|port| {
        let result = snapshot
            .as_ref()?
            .ports
            .iter()
            .find(|p| p.port == port)?
            .loopback_test
            .clone()?;
        Some((port, result))
    });
    let tested = tested.and_then(|port| {
        let result = snapshot
            .as_ref()?
            .ports
            .iter()
            .find(|p| p.port == port)?
            .line_test
            .clone()?;
        Some((port, result))
    });
    let body = html! {
        h1 { "Ports" }
        @if let Some((port, r)) = &tested {
            @if r.passed {
                p.notice.ok role="status" { "Line test of port " (port) " passed." }
            } @else {
                p.notice.bad role="alert" { "Line test of port " (port) " failed: " (r.summary()) }
            }
        }
        @if let Some((port, r)) = &looped {
            @if r.passed {
                p.notice.ok role="status" { "Loopback test of port " (port) " passed." }
            } @else {
                p.notice.bad role="alert" { "Loopback test of port " (port) " failed: " (r.reason) }
            }
        }
        @if let Some(port) = rang {
            p.notice.ok role="status" {
                "Ring test started on port " (port) ": the phone rings for "
                (RING_TEST_DURATION.as_secs()) " s."
            }
        }
        @if let Some(s) = &snapshot {
            div.cards {
                @for p in &s.ports {
                    section.card.port id=(format!("port-{}", p.port)) {
                        h2 { "Port " (p.port) " " span.muted { (p.kind.label()) " · " (extension(p)) } }
                        dl {
                            dt { "Hook" } dd { (hook_pill(p)) }
                            dt { "Call" } dd { (state_pill(p)) }
                            dt { "Line" } dd data-live="" data-port=(p.port) data-field="line" { (line_text(p)) }
                            dt { "Fault" } dd data-live="" data-port=(p.port) data-field="fault" { (p.fault.as_deref().unwrap_or("none")) }
                            dt { "Ring test" } dd data-live="" data-port=(p.port) data-field="ring_test" { (if p.ring_test { "ringing" } else { "off" }) }
                        }
                        h3 { "Recent events" }
                        ol.events data-live="" data-port=(p.port) data-field="events" {
                            @for e in p.events.iter().rev() {
                                li { time { (clock(e.at_ms)) } " " (e.what) }
                            }
                            @if p.events.is_empty() { li.muted { "none yet" } }
                        }
                        h3 { "Line test" }
                        @match &p.line_test {
                            Some(r) => {
                                p { (if r.passed { html! { span.pill.ok { "passed" } } } else { html! { span.pill.bad { "failed" } } }) " " time { (clock(r.at_ms)) } }
                                table.checks {
                                    @for c in &r.checks {
                                        tr {
                                            th scope="row" { (c.name) }
                                            td class=(if c.passed { "ok" } else { "bad" }) { (if c.passed { "ok" } else { "failed" }) }
                                            td { (c.detail) }
                                        }
                                    }
                                }
                            }
                            None => { p.muted { "not run since the daemon started" } }
                        }
                        h3 { "Loopback test" }
                        @if p.loopback_testing {
                            p { span.pill.busy { "running" } }
                        }
                        @match &p.loopback_test {
                            Some(r) => {
                                p.loopback { (if r.passed { html! { span.pill.ok { "passed" } } } else { html! { span.pill.bad { "failed" } } }) " " time { (clock(r.at_ms)) } }
                                @if !r.passed { p.bad { (r.reason) } }
                                table.checks {
                                    @for c in &r.checks {
                                        tr {
                                            th scope="row" { (c.name) }
                                            td class=(if c.passed { "ok" } else { "bad" }) { (if c.passed { "ok" } else { "failed" }) }
                                            td { (c.detail) }
                                        }
                                    }
                                }
                            }
                            None => { p.muted { "not run since the daemon started" } }
                        }
                        @if may_operate {
                            @if p.kind == PortKind::Fxs {
                                form.inline method="post" action=(format!("/ports/{}/ring-test", p.port)) {
                                    input type="hidden" name="csrf" value=(who.csrf_token());
                                    button type="submit" { "Ring test (" (RING_TEST_DURATION.as_secs()) " s)" }
                                }
                            }
                            form.inline method="post" action=(format!("/ports/{}/line-test", p.port)) {
                                input type="hidden" name="csrf" value=(who.csrf_token());
                                button type="submit" { "Line test" }
                            }
                            form.inline method="post" action=(format!("/ports/{}/loopback-test", p.port)) {
                                input type="hidden" name="csrf" value=(who.csrf_token());
                                button type="submit" { "Loopback test" }
                            }
                        }
                    }
                }
            }
            @if !may_operate {
                p.muted { "Tests need the permission " code { "diagnostics.operate" } "." }
            }
            section.card.wide #line-history
                data-reload=[lines.as_ref().ok().map(|l| super::chart_pages::reload_ms(l.interval_ms))] {
                h2 { "Line history" }
                (super::chart_pages::line_history(lines))
            }
        } @else { (not_running()) }
    };
    page(StatusCode::OK, layout("Ports", Some(who), "/ports", body))
}

fn slot_pill(state: &str) -> Markup {
    let class = match state {
        "good" => "pill ok",
        "pending" => "pill warn",
        "bad" => "pill bad",
        _ => "pill",
    };
    html! { span class=(class) { (state) } }
}

/// The A/B slots card of the system page.
fn slots_card(r: &SlotsReport) -> Markup {
    html! {
        section.card #slots {
            h2 { "A/B slots" }
            @if !r.configured {
                p.muted { "Not configured: this box has no A/B slot layout (no " code { "[update]" } " section; a development or simulator run)." }
            } @else if let Some(e) = &r.error {
                p.bad role="alert" { "Slot state not readable: " (e) }
            } @else {
                table {
                    thead { tr { th { "Slot" } th { "State" } th { "Version" } th { "Running" } } }
                    tbody {
                        @for s in &r.slots {
                            tr {
                                td { (s.slot) }
                                td {
                                    (slot_pill(s.state))
                                    @if let Some(t) = s.tries_left { span.muted { " " (t) (if t == 1 { " try left" } else { " tries left" }) } }
                                }
                                td { (s.version.as_deref().unwrap_or("—")) }
                                td {
                                    @if s.booted { strong { "booted" } }
                                    @if s.active && !s.booted { "active (not booted)" }
                                }
                            }
                        }
                    }
                }
                dl {
                    dt { "Backend" } dd { (r.backend.unwrap_or("")) }
                    dt { "Anti-rollback floor" } dd { (r.floor.as_deref().unwrap_or("none")) }
                    dt { "Last update" }
                    @match (&r.last_update, &r.last_update_error) {
                        (Some(u), _) => {
                            dd {
                                (u.version) " into slot " (u.slot) " (rollout " code { (u.rollout) } "): "
                                span class=(match u.outcome { "committed" => "ok", "rolled back" | "stale" => "bad", _ => "" }) { (u.outcome) }
                                @if let Some(d) = &u.detail { br; span.muted { (d) } }
                            }
                        }
                        (None, Some(e)) => { dd.bad { (e) } }
                        (None, None) => { dd.muted { "none recorded (an update's outcome is kept until HQ has it)" } }
                    }
                }
            }
        }
    }
}

/// The system page, from the same [`SystemReport`] as `GET /api/v1/system`.
pub(super) fn system_page(
    who: &Authed,
    report: &SystemReport,
    https: &HttpsStatus,
    may_reboot: bool,
    now_ms: i64,
) -> Response {
    let or_unknown = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), bytes);
    let m = &report.memory;
    let body = html! {
        h1 { "System" }
        p { a href="/logs?level=warn" { "Recent logs" } " (warnings and errors; any level on that page) · " a href="/api/v1/system" { "as JSON" } }
        div.cards {
            section.card #firmware {
                h2 { "Firmware" }
                dl {
                    dt { "branchd" } dd { (report.version) }
                    @if let Some(b) = &report.board { dt { "Board" } dd { (b) } }
                    @if let Some(up) = report.uptime_ms { dt { "Up" } dd { (duration(up)) } }
                    @if let Some(s) = report.slots.booted.as_deref() { dt { "Booted slot" } dd { (s) } }
                }
            }
            (slots_card(&report.slots))
            section.card #cpu {
                h2 { "CPU and memory" }
                dl {
                    dt { "Load (1, 5, 15 min)" }
                    dd {
                        @match report.cpu.load {
                            Some([a, b, c]) => { (format!("{a:.2} {b:.2} {c:.2}")) }
                            None => { "unknown" }
                        }
                        @if let Some(n) = report.cpu.cpus { span.muted { " on " (n) " CPU" @if n != 1 { "s" } } }
                    }
                    dt { "branchd CPU time" }
                    dd { @match report.cpu.branchd_cpu_s { Some(s) => { (format!("{s:.1} s")) } None => { "unknown" } } }
                    dt { "branchd RSS" } dd { (or_unknown(m.branchd_rss_bytes)) }
                    dt { "Available" } dd { (or_unknown(m.available_bytes)) " of " (or_unknown(m.total_bytes)) }
                }
            }
            @match (&report.disk, &report.disk_error) {
                (Some(d), _) => { (disk_card(&Ok(d.clone()))) }
                (None, Some(e)) => { (disk_card(&Err(e.clone()))) }
                (None, None) => {}
            }
            section.card #temperature {
                h2 { "Temperature" }
                @if report.temperatures.is_empty() {
                    p.muted { "Not reported by this board (no sensor under /sys/class/thermal)." }
                } @else {
                    dl {
                        @for t in &report.temperatures {
                            dt { (t.name) } dd { (format!("{:.1} °C", t.celsius)) }
                        }
                    }
                }
            }
            (https_card(https, now_ms))
            section.card #reboot {
                h2 { "Reboot" }
                p.muted { "Restarts the box; calls in progress are refused unless you confirm cutting them." }
                @if may_reboot {
                    form method="post" action="/system/reboot" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        button type="submit" { "Reboot…" }
                    }
                } @else {
                    p.muted { "Rebooting needs the permission " code { "system_config.operate" } "." }
                }
            }
        }
    };
    page(StatusCode::OK, layout("System", Some(who), "/system", body))
}

/// The reboot's confirm step: the calls in progress (`None`: unknown), the refusal
/// of a first try (`refused`), the form that reboots.
pub(super) fn reboot_confirm_page(
    who: &Authed,
    calls: Option<usize>,
    refused: Option<&str>,
) -> Response {
    let status = if refused.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let body = html! {
        h1 { "Reboot the box?" }
        @if let Some(r) = refused { p.notice.bad role="alert" { "Not rebooted: " (r) } }
        section.card.wide #confirm {
            @match calls {
                Some(0) => p { "No call is in progress." }
                Some(n) => p.bad { (n) " call(s) in progress: a reboot cuts them." }
                None => p.muted { "The calls in progress are not known." }
            }
            p { "Phones, queues and sync stop until branchd is back (about a minute)." }
            form method="post" action="/system/reboot" {
                input type="hidden" name="csrf" value=(who.csrf_token());
                input type="hidden" name="confirm" value="yes";
                @if calls != Some(0) {
                    label { input type="checkbox" name="force" value="1"; " Cut the calls in progress" }
                }
                button type="submit" { "Reboot now" }
                " "
                a.button href="/system" { "Cancel" }
            }
        }
    };
    page(status, layout("Reboot", Some(who), "/system", body))
}

/// The answer to a reboot that started.
pub(super) fn rebooting_page(who: &Authed, calls_ended: usize) -> Response {
    let body = html! {
        h1 { "Rebooting" }
        p.notice role="status" {
            "The box is rebooting"
            @if calls_ended > 0 { " (" (calls_ended) " call(s) cut)" }
            ". Reload this page in about a minute."
        }
    };
    page(
        StatusCode::ACCEPTED,
        layout("Rebooting", Some(who), "/system", body),
    )
}

/// How the page itself is served: HTTPS with the device certificate or plain HTTP.
fn https_card(https: &HttpsStatus, now_ms: i64) -> Markup {
    html! {
        section.card #https {
            h2 { "Web page" }
            p { span class=(if https.https { "pill ok" } else { "pill warn" }) { (if https.https { "HTTPS" } else { "plain HTTP" }) } }
            dl {
                dt { "Served" } dd { (https.detail) }
                @if let Some(c) = &https.certificate {
                    dt { "Certificate" } dd { (c.subject) }
                    dt { "Valid until" } dd { (date_time(c.not_after_ms)) " UTC (" (relative(c.not_after_ms, now_ms)) ")" }
                }
                @if let Some(e) = &https.error {
                    dt { "Error" } dd.bad { (e) }
                }
            }
        }
    }
}

/// The SIP page: the trunk registration and the local phones' registrations, from
/// the SIP endpoint's snapshot.
pub(super) fn sip_page(who: &Authed, status: Option<&StatusHandle>, now_ms: i64) -> Response {
    let sip = status.and_then(StatusHandle::sip);
    let body = html! {
        h1 { "SIP" }
        p { a href="/sip/trace" { "Message trace" } " — the SIP messages the box sends and receives, live, filtered by number or Call-ID." }
        @match (status, &sip) {
            (None, _) => { (not_running()) }
            (Some(_), None) => {
                section.card.wide {
                    h2 { "Not configured" }
                    p { "This box has no " code { "[sip]" } " section: no SIP trunk and no local SIP phones." }
                }
            }
            (Some(_), Some(s)) if s.is_starting() => {
                p.notice role="status" { "The SIP endpoint is starting; reload in a moment." }
            }
            (Some(_), Some(s)) => { (sip_body(s, now_ms)) }
        }
    };
    page(StatusCode::OK, layout("SIP", Some(who), "/sip", body))
}

fn sip_body(s: &SipStatus, now_ms: i64) -> Markup {
    html! {
        p.muted { "As the SIP endpoint held it at " (clock(s.at_ms)) " UTC · listening on " (s.listeners.join(", ")) }
        div.cards {
            section.card #trunk {
                h2 { "Trunk" }
                @match &s.trunk {
                    None => { p { "not configured (no " code { "[sip.trunk]" } ")" } }
                    Some(t) => {
                        @let class = match t.state { "registered" | "not registering" => "pill ok", "backoff" | "unregistered" => "pill bad", _ => "pill warn" };
                        p { span class=(class) { (t.state) } }
                        dl {
                            dt { "Username" } dd { (t.username) }
                            @if let Some(server) = &t.server { dt { "Server" } dd { (server) } }
                            @if let Some(target) = &t.target { dt { "Registered at" } dd { (target) } }
                            @if let Some(exp) = t.expires_at_ms { dt { "Expires" } dd { (relative(exp, now_ms)) } }
                            @if let Some(next) = t.next_attempt_ms {
                                dt { "Next attempt" } dd { (relative(next, now_ms)) " (after " (t.failed_rounds.unwrap_or(0)) " failed rounds)" }
                            }
                            dt { "Outside calls" } dd { (if t.usable { "may use the trunk" } else { "go to FXO lines (trunk unusable)" }) }
                        }
                        h3 { "Servers" }
                        table {
                            thead { tr { th { "Server" } th { "Health" } th { "Last error" } } }
                            tbody {
                                @for srv in &t.servers {
                                    tr {
                                        td { (srv.server) }
                                        td {
                                            (srv.health)
                                            @if let Some(since) = srv.since_ms { span.muted { " since " (clock(since)) } }
                                        }
                                        td { @if let Some(e) = &srv.error { span.bad { (e) } } @else { span.muted { "none" } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card #phones {
                h2 { "Local phones" }
                p.big { (s.phones_registered) " of " (s.phones.len()) " registered" }
                @if s.phones.is_empty() {
                    p.muted { "No SIP accounts are configured (" code { "[[sip_accounts]]" } ")." }
                } @else {
                    table {
                        thead { tr { th { "Extension" } th { "Contact" } th { "Source" } th { "Expires" } } }
                        tbody {
                            @for p in &s.phones {
                                @if p.contacts.is_empty() {
                                    tr {
                                        td { (p.extension) " " span.muted { (p.name) } }
                                        td colspan="3" { span.pill { "not registered" } }
                                    }
                                }
                                @for c in &p.contacts {
                                    tr.registered {
                                        td { (p.extension) " " span.muted { (p.name) } }
                                        td {
                                            code { (c.contact) }
                                            @if let Some(ua) = &c.user_agent { br; span.muted { (ua) } }
                                        }
                                        td { (c.source) }
                                        td { (relative(c.expires_at_ms, now_ms)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The recording of each listed call the user may see, by call id.
pub(super) type CallRecordings = std::collections::HashMap<
    String,
    (
        crate::recorder::index::IndexedRecording,
        crate::api::recordings::Access,
    ),
>;

/// The recent CDRs the calls page lists.
#[derive(Debug)]
pub(super) enum CdrList {
    /// The page of records with the recordings of those calls the user may see (and
    /// what they may do with each), or why they could not be read.
    Page(Result<(Page<CdrView>, CallRecordings), String>),
    /// The user lacks `calls.view`.
    Denied,
}

fn one_decimal(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

/// A listed call's recording cell: a player (`recordings.listen`) and a download link
/// (`recordings.download`) while the file is there, else just "recorded" (with why
/// it cannot be played when retention deleted it).
fn recording_cell(
    rec: &crate::recorder::index::IndexedRecording,
    access: crate::api::recordings::Access,
) -> Markup {
    let url = format!("/api/v1/recordings/{}/audio", rec.id);
    html! {
        @if rec.deleted_at_ms.is_some() {
            span.muted { "recorded (deleted by retention)" }
        } @else if access.listen || access.download {
            @if access.listen {
                audio controls preload="none" src=(url) title={ "recording of call " (rec.call_id) } {}
                br;
            }
            span.muted { "recorded, " (duration(rec.duration_ms)) }
            @if access.download {
                " · " a href={ (url) "?download=true" } download { "download" }
            }
        } @else {
            span.muted { "recorded" }
        }
    }
}

/// The calls page: calls in progress with their RTP statistics, and recent CDRs.
/// The recent logs page: a level filter (GET form, works without JS) and the lines.
pub(super) fn logs_page(
    who: &Authed,
    level: &str,
    limit: &str,
    lines: Result<Option<Vec<crate::tools::logs::LogLine>>, (StatusCode, String)>,
) -> Response {
    use crate::tools::logs::Level;
    let chosen = Level::parse(level).unwrap_or(Level::Info);
    let class = |l: Option<Level>| match l {
        Some(Level::Error) => "log bad",
        Some(Level::Warn) => "log warn",
        Some(Level::Debug | Level::Trace) => "log muted",
        _ => "log",
    };
    let status = lines.as_ref().err().map_or(StatusCode::OK, |(s, _)| *s);
    let body = html! {
        h1 { "Recent logs" }
        form.card method="get" action="/logs" {
            label { "Level at least "
                select name="level" {
                    @for l in Level::ALL {
                        option value=(l.as_str()) selected[l == chosen] { (l.as_str()) }
                    }
                }
            }
            " "
            label { "Lines " input type="number" name="limit" min="1" max=(crate::api::tools::MAX_LOG_LINES) value=(if limit.trim().is_empty() { "200" } else { limit.trim() }); }
            " "
            button type="submit" { "Show" }
        }
        section.card.wide #logs {
            @match &lines {
                Err((_, e)) => { p.bad role="alert" { (e) } }
                Ok(None) => { p.muted { "This branchd keeps no log lines in memory: they are in journald (journalctl -u branchd)." } }
                Ok(Some(lines)) if lines.is_empty() => { p.muted { "No line at " (chosen.as_str()) " or above since the start (the last 256 KiB are kept)." } }
                Ok(Some(lines)) => {
                    p.muted { (lines.len()) " lines, newest last; secrets removed." }
                    pre.output {
                        @for l in lines {
                            span class=(class(l.level)) { (l.text) } "\n"
                        }
                    }
                }
            }
        }
    };
    page(status, layout("Logs", Some(who), "/system", body))
}

/// The SIP trace page: a filter (GET form, works without JS) and the kept messages
/// that match, oldest first; `app.js` then appends new ones live from
/// `/api/v1/events/sip-trace` (the `data-sip-trace` list carries the filter).
pub(super) fn sip_trace_page(
    who: &Authed,
    filter: &str,
    messages: Result<Option<Vec<crate::tools::sip_trace::TraceEntry>>, (StatusCode, String)>,
) -> Response {
    let status = messages.as_ref().err().map_or(StatusCode::OK, |(s, _)| *s);
    let body = html! {
        h1 { "SIP message trace" }
        form.card method="get" action="/sip/trace" {
            label { "Call-ID or number "
                input type="search" name="filter" value=(filter) maxlength=(crate::tools::sip_trace::MAX_FILTER) placeholder="e.g. 2001 or a Call-ID";
            }
            " "
            button type="submit" { "Filter" }
            p.muted { "The last " (crate::tools::sip_trace::TRACE_KEEP) " messages the box received and sent are kept in memory; new ones appear below as they pass. Digest responses are hidden; phone numbers are shown in full." }
        }
        section.card.wide {
            @match &messages {
                Err((_, e)) => { p.bad role="alert" { (e) } }
                Ok(None) => { p.muted { "This branchd has no SIP endpoint running here." } }
                Ok(Some(list)) => {
                    @if list.is_empty() {
                        p.muted #trace-empty { "No message matches yet." }
                    }
                    ol.trace data-sip-trace=(filter) aria-live="polite" {
                        @for m in list {
                            (trace_item(m))
                        }
                    }
                }
            }
        }
    };
    page(status, layout("SIP trace", Some(who), "/sip", body))
}

/// One message of the SIP trace, as `app.js` adds them live.
fn trace_item(m: &crate::tools::sip_trace::TraceEntry) -> Markup {
    use crate::tools::sip_trace::Direction;
    html! {
        li data-seq=(m.seq) class=(if m.direction == Direction::In { "in" } else { "out" }) {
            details {
                summary {
                    (clock(m.at_ms)) " "
                    (if m.direction == Direction::In { "← " } else { "→ " })
                    (m.peer) " " (m.transport) " · " strong { (m.first_line) }
                }
                pre.output { (trace_text(&m.text)) }
            }
        }
    }
}

/// A traced message as shown: its line ends as `\n` and without the line breaks
/// that end it (the blank line closing the headers of a message without a body, the
/// last line's CRLF), which a `<pre>` would draw as blank lines under the message.
/// Everything else is kept (the blank line before a body, spaces, a bare CR); the
/// JSON API (`/api/v1/sip/trace`) has the message as sent. `app.js` does the
/// same for the messages it adds live.
pub(super) fn trace_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .trim_end_matches(['\r', '\n'])
        .to_owned()
}

/// How often the queues page fetches itself again (its `data-reload` section).
const QUEUES_RELOAD_MS: u32 = 2000;

/// The queues and agents page: each queue's waiting callers and members, every
/// agent's state; the section fetches itself again every [`QUEUES_RELOAD_MS`] (no
/// JS: a static view with the time it was taken).
pub(super) fn queues_page(
    who: &Authed,
    live: Result<Option<crate::web::status::CallCenterStatus>, String>,
) -> Response {
    let pill = |state: &str| match state {
        "available" => "pill ok",
        "ringing" | "on_call" => "pill busy",
        "wrap_up" | "paused" => "pill warn",
        _ => "pill",
    };
    let body = html! {
        h1 { "Queues and agents" }
        section #call-center data-reload=(QUEUES_RELOAD_MS) aria-live="polite" {
            @match &live {
                Err(e) => { p.bad role="alert" { (e) } }
                Ok(None) => {
                    section.card { p.muted { "No call center is configured: no queues or agents." } }
                }
                Ok(Some(cc)) => {
                    p.muted { "As of " span #cc-at { (clock(cc.at_ms)) } " UTC; updates every " (QUEUES_RELOAD_MS / 1000) " s." }
                    @if cc.queues.is_empty() {
                        section.card.wide { h2 { "Queues" } p.muted { "No queue is configured." } }
                    }
                    @for q in &cc.queues {
                        section.card.wide.queue data-queue=(q.name) {
                            h2 { (q.name) " " span.muted { "· " (q.number) " · " (q.strategy) } }
                            p {
                                span.big data-field="waiting" { (q.waiting.len()) } " waiting · "
                                (q.agents_available) " of " (q.agents_logged_in) " logged-in agents free · "
                                (q.members.len()) " members"
                            }
                            @if q.waiting.is_empty() {
                                p.muted { "Nobody waiting." }
                            } @else {
                                table {
                                    thead { tr { th { "#" } th { "Caller" } th { "Waited" } th { "Ringing" } } }
                                    tbody {
                                        @for w in &q.waiting {
                                            tr.waiting {
                                                td { (w.position) }
                                                td {
                                                    @if w.caller.is_empty() { span.muted { "withheld" } } @else { (w.caller) }
                                                    @if w.vip { " " span.pill.ok { "VIP" } }
                                                }
                                                td { (duration(w.waited_ms)) }
                                                td { @if w.ringing.is_empty() { span.muted { "-" } } @else { (w.ringing.join(", ")) } }
                                            }
                                        }
                                    }
                                }
                            }
                            p.muted {
                                "Members: "
                                @for (i, m) in q.members.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (m.agent_id) " (" (m.answered) " answered)"
                                }
                            }
                        }
                    }
                    section.card.wide {
                        h2 { "Agents" }
                        @if cc.agents.is_empty() {
                            p.muted { "No agents." }
                        } @else {
                            table {
                                thead { tr { th { "Agent" } th { "State" } th { "For" } th { "Extension" } } }
                                tbody {
                                    @for a in &cc.agents {
                                        tr.agent data-agent=(a.agent_id) {
                                            td { (a.agent_id) }
                                            td {
                                                span class=(pill(a.state)) data-field="state" { (a.state.replace('_', " ")) }
                                                @if let Some(r) = &a.reason { " " span.muted { "(" (r) ")" } }
                                            }
                                            td { (duration(a.in_state_ms)) }
                                            td { (a.extension.as_deref().unwrap_or("-")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let status = if live.is_err() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    page(status, layout("Queues", Some(who), "/queues", body))
}

pub(super) fn calls_page(
    who: &Authed,
    active: Result<(Vec<ActiveCallView>, Option<String>), String>,
    cdrs: CdrList,
    charts: &CallCharts,
    now_ms: i64,
) -> Response {
    let body = html! {
        h1 { "Calls" }
        section.card.wide #active {
            h2 { "In progress" }
            @match &active {
                Err(e) => { p.bad { (e) } }
                Ok((calls, rtp_error)) => {
                    @if let Some(e) = rtp_error { p.bad { "RTP statistics unavailable: " (e) } }
                    @if calls.is_empty() {
                        p.muted { "No call in progress." }
                    } @else {
                        table {
                            thead { tr { th { "Caller" } th { "Callee" } th { "State" } th { "Duration" } th { "Media" } } }
                            tbody {
                                @for c in calls {
                                    tr {
                                        td { (c.caller) br; span.muted { (c.caller_via) } }
                                        td {
                                            (c.callee) br;
                                            span.muted {
                                                @match &c.callee_via {
                                                    Some(v) => { (v) }
                                                    None if !c.ringing.is_empty() => { "ringing " (c.ringing.join(", ")) }
                                                    None => { "not answered" }
                                                }
                                            }
                                        }
                                        td { span.pill.busy { (c.phase) } }
                                        td {
                                            (duration(c.duration_ms))
                                            @if let Some(t) = c.talk_ms { br; span.muted { "talking " (duration(t)) } }
                                        }
                                        td {
                                            @if c.legs.is_empty() {
                                                span.muted { "G.711 on the board (analog ports, no RTP)" }
                                            }
                                            @for l in &c.legs {
                                                div {
                                                    (l.via) " (" (l.side) "): "
                                                    @match l.codec {
                                                        Some(codec) => { (codec) "/" (l.ptime_ms.unwrap_or(20)) " ms" }
                                                        None => { span.muted { "no media yet" } }
                                                    }
                                                    @if l.mos.is_some() {
                                                        " · loss " (one_decimal(l.loss_percent)) " % · jitter "
                                                        (one_decimal(l.jitter_ms)) " ms · MOS " (one_decimal(l.mos))
                                                    } @else if l.codec.is_some() {
                                                        span.muted { " · no RTP received yet" }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if calls.iter().any(|c| c.masked) {
                        p.muted { "Customer numbers are masked: showing them needs the permission " code { "numbers.view" } "." }
                    }
                }
            }
        }
        section.card.wide #call-quality
            data-reload=[charts.quality.as_ref().ok().map(|q| super::chart_pages::reload_ms(q.interval_ms))] {
            h2 { "Call quality over time" }
            (super::chart_pages::call_quality(&charts.quality))
        }
        section.card.wide #calls-per-hour
            data-reload=[charts.per_hour.as_ref().ok().map(|_| super::chart_pages::CALLS_PER_HOUR_RELOAD_MS)] {
            h2 { "Calls per hour" }
            (super::chart_pages::calls_per_hour(&charts.per_hour))
        }
        section.card.wide #cdrs {
            h2 { "Recent calls" }
            @match &cdrs {
                CdrList::Denied => { p.muted { "Call records need the permission " code { "calls.view" } "." } }
                CdrList::Page(Err(e)) => { p.bad { (e) } }
                CdrList::Page(Ok((page, _))) if page.items.is_empty() => { p.muted { "No call in the last 7 days." } }
                CdrList::Page(Ok((page, recordings))) => {
                    table {
                        thead { tr { th { "Start (UTC)" } th { "Caller" } th { "Callee" } th { "Direction" } th { "Outcome" } th { "Talk" } th { "Recording" } } }
                        tbody {
                            @for c in &page.items {
                                tr.cdr {
                                    td { (date_time(c.started_at_ms)) }
                                    td { (c.caller) }
                                    td { (c.callee) }
                                    td { (serde_plain(&c.direction)) }
                                    td { (serde_plain(&c.disposition)) span.muted { " (" (serde_plain(&c.hangup_side)) " hung up" @if let Some(cause) = c.hangup_cause { ": " (cause.as_str().replace('_', " ")) } ")" } }
                                    td { (duration(c.billable_ms)) }
                                    td.recording {
                                        @if let Some((rec, access)) = recordings.get(&c.call_id) {
                                            (recording_cell(rec, *access))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.muted {
                        "Showing " (page.items.len()) " of " (page.total) " in the last 7 days, newest first; "
                        "all of them: " code { "GET /api/v1/cdrs" } "."
                        @if page.items.iter().any(|c| c.masked) {
                            " Customer numbers are masked (" code { "numbers.view" } ")."
                        }
                    }
                }
            }
        }
        p.muted { "Updated " (clock(now_ms)) " UTC; reload for the news." }
    };
    page(StatusCode::OK, layout("Calls", Some(who), "/calls", body))
}

/// The calls page's charts' numbers, or why they are missing.
#[derive(Debug)]
pub(super) struct CallCharts {
    /// RTP jitter and loss over the calls.
    pub quality: Result<super::chart_api::QualityCharts, String>,
    /// Calls per UTC hour.
    pub per_hour: Result<super::chart_api::CallsPerHour, String>,
}

/// A unit enum's serde name (`"no_answer"` -> `no answer`).
fn serde_plain(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

/// The sync page: backlog, cursor, last success and error, and the force form.
fn wan_pill(state: &str) -> Markup {
    let class = match state {
        "online" => "pill ok",
        "degraded" => "pill warn",
        "offline" => "pill bad",
        _ => "pill",
    };
    html! { span class=(class) { (state) } }
}

/// The sync page's WAN section: the WAN monitor's snapshot (the one the sync report
/// and the dashboard carry), overall and per target.
fn wan_card(wan: &WanSnapshot, now_ms: i64) -> Markup {
    let when = |t: Option<i64>| match t {
        Some(t) => html! { (relative(t, now_ms)) br; span.muted { (date_time(t)) " UTC" } },
        None => html! { span.muted { "never" } },
    };
    html! {
        section.card.wide #wan {
            h2 { "WAN" }
            @if wan.state == "not configured" {
                p.muted { "Not configured: nothing to watch (no " code { "[hq]" } " to sync with and no " code { "[wan] trunk" } ")." }
            } @else {
                p {
                    (wan_pill(wan.state))
                    @if let Some(since) = wan.since_ms {
                        " since " (date_time(since)) " UTC (" (relative(since, now_ms)) ", the last change)"
                    }
                }
                p { "Outside calls " @if wan.trunk_usable { "may use the SIP trunk." } @else { "do not use the SIP trunk now (FXO lines instead)." } }
                table {
                    thead { tr { th { "Target" } th { "State" } th { "Probed" } th { "Last answer" } th { "Last failure" } th { "RTT / loss" } } }
                    tbody {
                        @for (name, t) in [("HQ", &wan.hq), ("SIP trunk", &wan.trunk)] {
                            tr {
                                td { (name) }
                                td { (wan_pill(t.state)) }
                                @if t.state == "not configured" {
                                    td.muted colspan="4" { "not watched" }
                                } @else {
                                td { @match &t.probe { Some(p) => { code { (p) } } None => { span.muted { "—" } } } }
                                td { (when(t.last_ok_ms)) }
                                td {
                                    (when(t.last_fail_ms))
                                    @if let Some(f) = &t.last_failure { br; span.bad { (f) } }
                                }
                                td {
                                    @match t.srtt_ms { Some(ms) => { (ms) " ms" } None => { "—" } }
                                    " / " (t.loss_pct) " %"
                                }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn sync_page(
    who: &Authed,
    report: Result<SyncStatusReport, String>,
    wan: &WanSnapshot,
    (may_force, forced): (bool, bool),
    backlog: &Result<super::chart_api::SyncCharts, String>,
    now_ms: i64,
) -> Response {
    let body = html! {
        h1 { "Sync with HQ" }
        @if forced {
            p.notice.ok role="status" { "Sync requested: the agent sends and fetches now (it skips any backoff)." }
        }
        (wan_card(wan, now_ms))
        @match &report {
            Err(e) => { p.bad { (e) } }
            Ok(r) => {
                div.cards {
                    section.card #sync-state {
                        h2 { "Agent" }
                        dl {
                            dt { "State" } dd { (r.state) }
                            @if let Some(hq) = &r.hq {
                                dt { "HQ" } dd { (hq.url) }
                                dt { "Box id" } dd { (hq.box_id) }
                            }
                            @if let Some(e) = &r.setup_error { dt { "Not running" } dd.bad { (e) } }
                            dt { "Last success" }
                            dd { @match r.last_success_ms { Some(t) => { (relative(t, now_ms)) " (" (date_time(t)) ")" } None => { "never" } } }
                            dt { "Last error" }
                            dd {
                                @match &r.last_error {
                                    Some(e) => {
                                        span.bad { (e.message) }
                                        @if let Some(at) = e.at_ms { span.muted { " · " (relative(at, now_ms)) } }
                                    }
                                    None => { "none" }
                                }
                            }
                            @if let Some(next) = r.next_attempt_ms { dt { "Next attempt" } dd { (relative(next, now_ms)) } }
                            @if let Some(c) = &r.certificate {
                                dt { "Certificate expires" } dd { (date_time(c.validity.not_after_ms)) }
                                dt { "Renewal due" } dd { (relative(c.renew_at_ms, now_ms)) }
                                @if let Some(l) = &c.last_renewal {
                                    dt { "Last renewal" }
                                    dd {
                                        @if l.result == "renewed" { (l.result) } @else { span.bad { (l.result) @if let Some(e) = &l.error { ": " (e) } } }
                                        span.muted { " · " (relative(l.at_ms, now_ms)) }
                                    }
                                }
                            }
                        }
                        @if !may_force {
                            p.muted { "Forcing a sync needs the permission " code { "sync.operate" } "." }
                        } @else if r.hq.is_none() {
                            p.muted { "Sync with HQ is not configured (no " code { "[hq]" } " section): nothing to force." }
                        } @else {
                            form.inline method="post" action="/sync/force" {
                                input type="hidden" name="csrf" value=(who.csrf_token());
                                button type="submit" { "Force sync now" }
                            }
                        }
                    }
                    section.card #backlog {
                        h2 { "Outbox backlog" }
                        p.big { (r.backlog.depth) " records" }
                        dl {
                            dt { "Oldest waiting" }
                            dd { @match r.backlog.oldest_age_ms { Some(age) => { (duration(age)) } None => { "none waiting" } } }
                            dt { "Last seq written" } dd { (r.backlog.last_seq) }
                            dt { "Acknowledged by HQ" } dd { (r.acked_seq) }
                        }
                    }
                    section.card #cursor {
                        h2 { "Change feed" }
                        dl {
                            dt { "Cursor (revision)" } dd { (r.cursor) }
                            dt { "Last download" } dd { @match r.last_down_ok_ms { Some(t) => { (relative(t, now_ms)) } None => { "never" } } }
                            dt { "Last upload" } dd { @match r.last_up_ok_ms { Some(t) => { (relative(t, now_ms)) } None => { "never" } } }
                            dt { "Store epoch" } dd { code { (r.epoch) } }
                        }
                    }
                }
            }
        }
        section.card.wide #backlog-history
            data-reload=[backlog.as_ref().ok().map(|b| super::chart_pages::reload_ms(b.interval_ms))] {
            h2 { "Backlog over time" }
            (super::chart_pages::sync_backlog(backlog))
        }
    };
    page(StatusCode::OK, layout("Sync", Some(who), "/sync", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traced_message_ends_at_its_last_line_with_nothing_else_lost() {
        use crate::tools::sip_trace::{Direction, TraceEntry};
        let entry = |text: &str| TraceEntry {
            seq: 7,
            at_ms: 1_000,
            direction: Direction::In,
            transport: "udp",
            peer: "192.0.2.9:5060".into(),
            first_line: "OPTIONS sip:2001@192.0.2.1 SIP/2.0".into(),
            call_id: Some("abc".into()),
            text: text.into(),
        };
        // No body: the headers' closing blank line is not drawn under the message.
        let html = trace_item(&entry(
            "OPTIONS sip:2001@192.0.2.1 SIP/2.0\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n",
        ))
        .into_string();
        assert!(
            html.contains("<pre class=\"output\">OPTIONS sip:2001@192.0.2.1 SIP/2.0\nCall-ID: abc\nContent-Length: 0</pre>"),
            "{html}"
        );
        // A body: the blank line before it, its spaces and a bare CR are kept.
        let html = trace_item(&entry(
            "INVITE sip:2001@h SIP/2.0\r\nContent-Length: 24\r\n\r\nv=0\r\ns=  two spaces\ra\r\n\r\n\r\n",
        ))
        .into_string();
        assert!(
            html.contains("<pre class=\"output\">INVITE sip:2001@h SIP/2.0\nContent-Length: 24\n\nv=0\ns=  two spaces\ra</pre>"),
            "{html}"
        );
        assert_eq!(trace_text(""), "");
        assert_eq!(trace_text("\r\n\r\n"), "");
        assert_eq!(trace_text("  x  \r\n"), "  x  ");
    }

    #[test]
    fn helpers_format_for_people() {
        assert_eq!(clock(3_723_000), "01:02:03");
        assert_eq!(duration(12_000), "12 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(90_000_000), "1 d 1 h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(url_encode("/ports?x=<a>"), "/ports%3Fx%3D%3Ca%3E");
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(date_time(1_796_000_000_000), "2026-11-30 00:53:20");
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(relative(5_000, 2_000), "in 3 s");
        assert_eq!(relative(2_000, 5_000), "3 s ago");
    }

    #[test]
    fn values_are_escaped() {
        let m = login_page("/x\"><script>", "t", Some("<b>hi</b>")).into_string();
        assert!(!m.contains("<script>"), "{m}");
        assert!(!m.contains("<b>hi"), "{m}");
        assert!(!m.contains("style="), "no inline style: {m}");
    }

    #[test]
    fn the_wan_card_shows_each_target_with_its_state_and_times() {
        use crate::sync::wan::TargetSnapshot;
        let now = 1_800_000_000_000;
        let wan = WanSnapshot {
            state: "degraded",
            since_ms: Some(now - 90_000),
            trunk_usable: false,
            hq: TargetSnapshot {
                state: "online",
                probe: Some("https://hq.example:8443/".into()),
                last_ok_ms: Some(now - 5_000),
                last_fail_ms: None,
                last_failure: None,
                srtt_ms: Some(42),
                loss_pct: 0,
            },
            trunk: TargetSnapshot {
                state: "offline",
                probe: Some("198.51.100.7:5060".into()),
                last_ok_ms: Some(now - 600_000),
                last_fail_ms: Some(now - 3_000),
                last_failure: Some("tcp connect: Connection refused".into()),
                srtt_ms: None,
                loss_pct: 100,
            },
        };
        let m = wan_card(&wan, now).into_string();
        for want in [
            "<span class=\"pill warn\">degraded</span>",
            "1 min 30 s ago",
            "do not use the SIP trunk",
            "<span class=\"pill ok\">online</span>",
            "hq.example:8443",
            "42 ms",
            "<span class=\"pill bad\">offline</span>",
            "198.51.100.7:5060",
            "tcp connect: Connection refused",
            "10 min 0 s ago",
            "100 %",
        ] {
            assert!(m.contains(want), "{want}: {m}");
        }
        let none = wan_card(&WanSnapshot::default(), now).into_string();
        assert!(none.contains("Not configured"), "{none}");
        assert!(!none.contains("<table"), "{none}");
        let hq_off = wan_card(
            &WanSnapshot {
                hq: TargetSnapshot::not_configured(),
                ..wan.clone()
            },
            now,
        )
        .into_string();
        assert!(hq_off.contains("not watched"), "{hq_off}");
    }
}

/// What the tools page shows under its forms after a run.
#[derive(Debug)]
pub(super) enum ToolOutcome {
    /// A ping or traceroute ran.
    Run {
        /// `Ping` / `Traceroute`.
        title: &'static str,
        /// What it printed.
        run: crate::tools::CommandRun,
    },
    /// An OPTIONS probe ran.
    Probe(crate::tools::ProbeReport),
    /// The tool refused or failed.
    Failed {
        /// Which tool.
        title: &'static str,
        /// Why.
        message: String,
    },
}

/// What the tools page knows before any run.
#[derive(Debug)]
pub(super) struct ToolsView<'a> {
    /// The default ping/traceroute target (HQ's host).
    pub hq_host: Option<&'a str>,
    /// The default probe URI (the trunk).
    pub trunk_uri: Option<&'a str>,
    /// Whether the tools are offered (a running daemon).
    pub available: bool,
    /// `diagnostics.operate`.
    pub may_operate: bool,
    /// `diagnostics.download`.
    pub may_download: bool,
    /// `system_config.view` too (the bundle holds the config).
    pub may_bundle: bool,
    /// Whether a capture runs now.
    pub capturing: bool,
}

/// The tools page: ping / traceroute, SIP OPTIONS probe, capture and bundle forms, and
/// the outcome of the last run.
pub(super) fn tools_page(
    who: &Authed,
    view: &ToolsView<'_>,
    (host, count, uri): (&str, &str, &str),
    outcome: Option<(StatusCode, ToolOutcome)>,
) -> Response {
    let count = if count.trim().is_empty() {
        "4"
    } else {
        count.trim()
    };
    let status = outcome.as_ref().map_or(StatusCode::OK, |(s, _)| *s);
    let needs = |perm: &str| html! { p.muted { "This needs the permission " code { (perm) } "." } };
    let body = html! {
        h1 { "Tools" }
        @if !view.available {
            p.bad { "The tools are not available: this page is not served by a running daemon." }
        }
        @if let Some((_, o)) = &outcome {
            section.card #tool-result aria-live="polite" {
                @match o {
                    ToolOutcome::Run { title, run } => {
                        h2 { (title) " result" }
                        p {
                            code { (run.command.join(" ")) }
                            " · "
                            @if run.timed_out { span.bad { "killed at its time limit" } }
                            @else { @match run.exit_code {
                                Some(0) => { span.ok { "exit 0" } }
                                Some(c) => { span.bad { "exit " (c) } }
                                None => { span.bad { "ended by a signal" } }
                            } }
                            " · " (run.elapsed_ms) " ms"
                        }
                        pre.output #tool-output { (run.stdout) (run.stderr) }
                    }
                    ToolOutcome::Probe(r) => {
                        h2 { "SIP OPTIONS result" }
                        dl #probe-result {
                            dt { "URI" } dd { code { (r.uri) } }
                            dt { "Sent to" } dd { (r.destination) " (" (r.transport) ")" }
                            dt { "Outcome" }
                            dd {
                                @match (r.status, r.outcome) {
                                    (Some(code), _) => {
                                        span class=(if code < 300 { "pill ok" } else { "pill warn" }) { (code) " " (r.reason.as_deref().unwrap_or("")) }
                                    }
                                    (None, outcome) => { span.pill.bad { (outcome) } }
                                }
                            }
                            @if let Some(rtt) = r.rtt_ms { dt { "Round trip" } dd { (format!("{rtt:.2}")) " ms" } }
                            @if let Some(s) = &r.server { dt { "Server" } dd { (s) } }
                            @if let Some(e) = &r.error { dt { "Error" } dd.bad { (e) } }
                        }
                    }
                    ToolOutcome::Failed { title, message } => {
                        h2 { (title) " not run" }
                        p.bad role="alert" #tool-error { (message) }
                    }
                }
            }
        }
        div.cards {
            section.card #ping {
                h2 { "Ping and traceroute" }
                p.muted {
                    "Host name or IP address; empty: HQ ("
                    (view.hq_host.unwrap_or("not configured")) ")."
                }
                @if view.may_operate {
                    form method="post" action="/tools/ping" data-busy="Running…" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        label { "Host " input type="text" name="host" value=(host) maxlength="253" autocomplete="off" spellcheck="false"; }
                        label { "Count " input type="number" name="count" value=(count) min="1" max="10"; }
                        button type="submit" { "Ping" }
                        " "
                        button type="submit" formaction="/tools/traceroute" { "Traceroute" }
                    }
                } @else { (needs("diagnostics.operate")) }
            }
            section.card #sip-options {
                h2 { "SIP OPTIONS probe" }
                p.muted {
                    "Sends one OPTIONS from the box's SIP port; empty: the trunk ("
                    (view.trunk_uri.unwrap_or("not configured")) ")."
                }
                @if view.may_operate {
                    form method="post" action="/tools/sip-options" data-busy="Waiting for the answer (up to 5 s)…" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        label { "SIP URI " input type="text" name="uri" value=(uri) placeholder="sip:host[:port][;transport=tcp]" maxlength="256" autocomplete="off" spellcheck="false"; }
                        button type="submit" { "Send OPTIONS" }
                    }
                } @else { (needs("diagnostics.operate")) }
            }
            section.card #capture {
                h2 { "Packet capture" }
                p.muted { "SIP and RTP packets of this box, downloaded as a .pcap file (Wireshark) when the time is up." }
                @if view.capturing { p.notice.warn { "A capture is running now; a second one is refused until it ends." } }
                @if view.may_download {
                    form method="post" action="/tools/capture" data-busy="Capturing; the download starts when the time is up…" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        label { "Seconds " input type="number" name="seconds" value="10" min="1" max="60" required; }
                        button type="submit" { "Capture and download" }
                    }
                } @else { (needs("diagnostics.download")) }
            }
            section.card #bundle {
                h2 { "Diagnostics bundle" }
                p.muted { "A tar.gz for support: the config with every secret removed, recent logs, store statistics, versions, SIP, sync and WAN status." }
                @if view.may_bundle {
                    p { a.button href="/api/v1/tools/bundle" download { "Download the bundle" } }
                } @else { (needs("diagnostics.download and system_config.view")) }
            }
        }
        p.muted #tool-busy role="status" {}
    };
    page(status, layout("Tools", Some(who), "/tools", body))
}
