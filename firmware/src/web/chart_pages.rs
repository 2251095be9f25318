//! The charts as the pages show them: [`super::chart_api`]'s numbers drawn with
//! [`super::charts`]. Each chart says what it shows, its sampling and that times are
//! UTC; a chart without samples says why (no data yet, not sampled, denied).

use maud::{html, Markup};

use super::chart_api::{CallsPerHour, LineCharts, QualityCharts, SyncCharts};
use super::charts::{render, Chart, Kind, Series};
use super::history::SyncSample;
use super::history::{CallTrace, LegPoint};

/// How often the calls page's calls-per-hour chart fetches its page again.
pub(super) const CALLS_PER_HOUR_RELOAD_MS: i64 = 60_000;

/// How often a chart sampled every `interval_ms` fetches its page again (its
/// section's `data-reload`, `app.js`): at each new sample, between 2 s and 5 min.
pub(super) fn reload_ms(interval_ms: i64) -> i64 {
    interval_ms.clamp(2_000, 300_000)
}

/// Finished calls whose charts the calls page draws (the API has them all).
pub const FINISHED_CALLS_SHOWN: usize = 3;

/// A time series' span: from its first sample (at least ten samples' worth, at most
/// `capacity` samples' worth back) to now.
fn span(first_ms: Option<i64>, now_ms: i64, interval_ms: i64, capacity: usize) -> (i64, i64) {
    let cap = i64::try_from(capacity).unwrap_or(i64::MAX);
    let oldest = now_ms.saturating_sub(interval_ms.saturating_mul(cap));
    let from = first_ms
        .unwrap_or(now_ms)
        .min(now_ms.saturating_sub(interval_ms.saturating_mul(10)))
        .max(oldest);
    (from, now_ms)
}

fn minutes(ms: i64) -> String {
    let s = ms / 1000;
    if s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// The ports page's line voltage and loop current charts (one series per port).
pub(super) fn line_history(lines: &Result<LineCharts, String>) -> Markup {
    let l = match lines {
        Err(e) => return html! { p.muted { "Line history unavailable: " (e) } },
        Ok(l) => l,
    };
    let labels: Vec<String> = l
        .ports
        .iter()
        .map(|p| format!("port {} ({})", p.port, p.kind.label()))
        .collect();
    let first = l
        .ports
        .iter()
        .filter_map(|p| p.samples.first().map(|s| s.at_ms))
        .min();
    let span = span(first, l.at_ms, l.interval_ms, l.capacity);
    let kind = Kind::Line {
        gap_ms: l.interval_ms * 5 / 2,
    };
    let empty = "no data yet: the first reading is kept within a sampling interval";
    let series = |value: fn(&super::history::LineSample) -> f64| -> Vec<Series<'_>> {
        l.ports
            .iter()
            .zip(&labels)
            .map(|(p, label)| Series {
                label,
                points: p.samples.iter().map(|s| (s.at_ms, value(s))).collect(),
            })
            .collect()
    };
    html! {
        div.chart-pair {
            (render(&Chart {
                title: "Line voltage",
                unit: "V",
                kind,
                span,
                zone: "UTC",
                from_zero: false,
                series: series(|s| f64::from(s.millivolts) / 1000.0),
                empty,
            }))
            (render(&Chart {
                title: "Loop current",
                unit: "mA",
                kind,
                span,
                zone: "UTC",
                from_zero: true,
                series: series(|s| f64::from(s.microamps) / 1000.0),
                empty,
            }))
        }
        p.muted {
            "One reading per " (minutes(l.interval_ms)) " per port, the last " (l.capacity)
            " (kept in memory: a restart of branchd starts them anew). Times are UTC. "
            "Numbers: " code { "GET /api/v1/charts/line" } "."
        }
    }
}

/// The calls page's calls per hour.
pub(super) fn calls_per_hour(per_hour: &Result<CallsPerHour, String>) -> Markup {
    let c = match per_hour {
        Err(e) => return html! { p.bad { (e) } },
        Ok(c) => c,
    };
    let total: u32 = c.hours.iter().map(|h| h.answered + h.not_answered).sum();
    let series = vec![
        Series {
            label: "answered",
            points: c
                .hours
                .iter()
                .map(|h| (h.local_start_ms, f64::from(h.answered)))
                .collect(),
        },
        Series {
            label: "not answered",
            points: c
                .hours
                .iter()
                .map(|h| (h.local_start_ms, f64::from(h.not_answered)))
                .collect(),
        },
    ];
    // On the site's wall clock: the bars and labels at its full hours.
    let (from, end) = match (c.hours.first(), c.hours.last()) {
        (Some(f), Some(l)) => (f.local_start_ms, l.local_start_ms + 3_600_000),
        _ => (c.from_ms, c.to_ms),
    };
    let title = format!("Calls per hour ({}), last 24 hours", c.timezone);
    html! {
        (render(&Chart {
            title: &title,
            unit: "calls",
            kind: Kind::StackedBars { width_ms: 3_600_000 },
            span: (from, end),
            zone: &c.timezone,
            from_zero: true,
            // All zeros: the empty state says so rather than an empty axis.
            series: if total == 0 { Vec::new() } else { series },
            empty: "no call in the last 24 hours",
        }))
        p.muted {
            "Calls from the call records: " (total) ", by the hour of the site's clock ("
            (c.timezone) ", " code { "[telephony] time_zone" } ") they started. "
            "Numbers: " code { "GET /api/v1/charts/calls-per-hour" } "."
        }
    }
}

fn leg_series<'a>(
    t: &CallTrace,
    labels: &'a [String; 2],
    value: fn(&LegPoint) -> f64,
) -> Vec<Series<'a>> {
    let side = |pick: fn(&super::history::QualitySample) -> Option<LegPoint>| -> Vec<(i64, f64)> {
        t.samples
            .iter()
            .filter_map(|s| pick(s).map(|p| (s.at_ms, value(&p))))
            .collect()
    };
    [
        (&labels[0], side(|s| s.caller)),
        (&labels[1], side(|s| s.callee)),
    ]
    .into_iter()
    .filter(|(_, points)| !points.is_empty())
    .map(|(label, points)| Series { label, points })
    .collect()
}

fn trace_charts(t: &CallTrace, now_ms: i64) -> Markup {
    let labels = [
        format!("from the caller ({})", t.caller_via),
        format!(
            "from the callee ({})",
            t.callee_via.as_deref().unwrap_or("not answered")
        ),
    ];
    let end = t.ended_at_ms.unwrap_or(now_ms);
    let from = t
        .samples
        .front()
        .map_or(t.started_at_ms, |s| s.at_ms.min(t.started_at_ms));
    let span = (from, end.max(from + 10 * t.resolution_ms));
    let kind = Kind::Line {
        gap_ms: t.resolution_ms * 3,
    };
    let empty = "no RTP received yet";
    let jitter = format!("RTP jitter, call {}", t.call_id);
    let loss = format!("RTP loss, call {}", t.call_id);
    html! {
        h3 {
            (t.caller_via) " → " (t.callee_via.as_deref().unwrap_or("not answered")) " · "
            @match t.ended_at_ms {
                None => { span.pill.busy { "in progress" } }
                Some(at) => { span.pill { "ended " (super::pages::date_time(at)) " UTC" } }
            }
        }
        div.chart-pair {
            (render(&Chart {
                title: &jitter,
                unit: "ms",
                kind,
                span,
                zone: "UTC",
                from_zero: true,
                series: leg_series(t, &labels, |p| f64::from(p.jitter_ms)),
                empty,
            }))
            (render(&Chart {
                title: &loss,
                unit: "%",
                kind,
                span,
                zone: "UTC",
                from_zero: true,
                series: leg_series(t, &labels, |p| f64::from(p.loss_percent)),
                empty,
            }))
        }
    }
}

/// The calls page's jitter and loss over the calls in progress and the last finished
/// ones.
pub(super) fn call_quality(quality: &Result<QualityCharts, String>) -> Markup {
    let q = match quality {
        Err(e) => return html! { p.muted { "Call quality history unavailable: " (e) } },
        Ok(q) => q,
    };
    let active: Vec<&CallTrace> = q.calls.iter().filter(|t| t.ended_at_ms.is_none()).collect();
    let finished: Vec<&CallTrace> = q
        .calls
        .iter()
        .filter(|t| t.ended_at_ms.is_some())
        .take(FINISHED_CALLS_SHOWN)
        .collect();
    html! {
        @if active.is_empty() && finished.is_empty() {
            p.muted { "No call with RTP since branchd started (calls between analog ports have no RTP)." }
        }
        @for t in active.iter().chain(&finished) {
            (trace_charts(t, q.at_ms))
        }
        p.muted {
            "What each SIP leg receives, sampled every " (minutes(q.interval_ms))
            " while the call is up; the last " (super::history::FINISHED_CALLS)
            " finished calls are kept (in memory), the last " (FINISHED_CALLS_SHOWN)
            " drawn here. Times are UTC. Numbers: " code { "GET /api/v1/charts/call-quality" } "."
        }
    }
}

/// The sync page's backlog depth and age over time.
pub(super) fn sync_backlog(backlog: &Result<SyncCharts, String>) -> Markup {
    let b = match backlog {
        Err(e) => return html! { p.muted { "Backlog history unavailable: " (e) } },
        Ok(b) => b,
    };
    let kind = Kind::Line {
        gap_ms: b.interval_ms * 5 / 2,
    };
    let empty = "no data yet: the outbox could not be read";
    // The kept samples, then the outbox as read for this page (the figure beside).
    let points: Vec<SyncSample> = b
        .samples
        .iter()
        .copied()
        .chain(
            b.current
                .filter(|c| b.samples.last().is_none_or(|l| l.at_ms < c.at_ms)),
        )
        .collect();
    let span = span(
        points.first().map(|s| s.at_ms),
        b.at_ms,
        b.interval_ms,
        b.capacity,
    );
    html! {
        div.chart-pair {
            (render(&Chart {
                title: "Outbox backlog",
                unit: "records",
                kind,
                span,
                zone: "UTC",
                from_zero: true,
                series: vec![Series {
                    label: "records waiting for HQ",
                    points: points.iter().map(|s| (s.at_ms, s.depth as f64)).collect(),
                }],
                empty,
            }))
            (render(&Chart {
                title: "Oldest record waiting",
                unit: "min",
                kind,
                span,
                zone: "UTC",
                from_zero: true,
                series: vec![Series {
                    label: "age of the oldest record",
                    points: points
                        .iter()
                        .map(|s| (s.at_ms, s.oldest_age_ms.unwrap_or(0) as f64 / 60_000.0))
                        .collect(),
                }],
                empty,
            }))
        }
        p.muted {
            "Sampled every " (minutes(b.interval_ms)) ", the last " (b.capacity)
            " and the outbox now (the last point)"
            " (kept in memory: a restart of branchd starts anew). Times are UTC. "
            "Numbers: " code { "GET /api/v1/charts/sync-backlog" } "."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_at_least_ten_samples_and_at_most_the_capacity() {
        assert_eq!(span(None, 1_000_000, 60_000, 1440), (400_000, 1_000_000));
        assert_eq!(
            span(Some(990_000), 1_000_000, 1_000, 1440),
            (990_000, 1_000_000)
        );
        assert_eq!(span(Some(0), 1_000_000, 1_000, 100), (900_000, 1_000_000));
        assert_eq!(minutes(60_000), "1 min");
        assert_eq!(minutes(5_000), "5 s");
    }
}
