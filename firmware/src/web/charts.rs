//! Charts of the pages as server-side SVG: a series (or a few) in, an inline `<svg>`
//! out, with a title, a legend, axes with tick labels and units, and a "no data yet"
//! state. Line charts (line voltage, jitter, sync backlog) and stacked bar charts
//! (calls per hour) over a UTC time axis.
//!
//! Why hand-written: the charting crates (plotters and its font and bitmap back ends,
//! charming, poloto) bring far more code than these four charts need into a binary
//! that must stay under 8 MiB; a chart here is a few dozen SVG elements, and the axis
//! arithmetic ("nice" ticks, time ticks) fits in this module with its tests.
//!
//! Why inline `<svg>` in the HTML rather than an `image/svg+xml` route behind
//! `<img src>`: the chart is part of the page's one response, so it needs no second
//! authorized request and is there without JS; the page's stylesheet colours it (the
//! CSP forbids inline `style`, so the SVG carries classes, styled in `app.css`); and
//! its text is real text in the page (searchable, and read by screen readers through
//! `role="img"` and its `<title>`). The same numbers are JSON under `/api/v1/charts`.
//!
//! Safety: the SVG is written with maud, which escapes every interpolated text
//! (titles, labels, units); no script, no event attribute, no `style`, no external
//! reference. Values that are not finite are left out; values beyond
//! ±[`MAX_ABS_VALUE`] are clamped to it so the axis arithmetic stays finite.

use maud::{html, Markup};

/// Width of a chart's drawing (SVG user units; the SVG scales to its box).
pub const WIDTH: f64 = 600.0;
/// Height of a chart's drawing.
pub const HEIGHT: f64 = 220.0;
/// Largest magnitude drawn; larger values are clamped (see the module docs).
pub const MAX_ABS_VALUE: f64 = 1e15;

const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 30.0;
const LEGEND_PER_ROW: usize = 3;
const LEGEND_ROW: f64 = 14.0;
/// Series told apart by colour (`s0`..`s7` in `app.css`); more repeat them.
const COLOURS: usize = 8;

/// How the series are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Lines through the samples; a gap longer than `gap_ms` breaks the line (the
    /// daemon was not sampling then), and a lone sample is a dot.
    Line {
        /// Longest step drawn as a line, ms.
        gap_ms: i64,
    },
    /// Stacked bars, one per sample, each `width_ms` wide from its time.
    StackedBars {
        /// A bar's width on the time axis, ms.
        width_ms: i64,
    },
}

/// One series: a label for the legend and its samples `(time ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    /// In the legend.
    pub label: &'a str,
    /// Samples in time order.
    pub points: Vec<(i64, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart<'a> {
    /// Above the drawing (and the SVG's accessible name).
    pub title: &'a str,
    /// The unit of the values (`V`, `ms`, `%`, `records`, `calls`).
    pub unit: &'a str,
    /// Lines or stacked bars.
    pub kind: Kind,
    /// The time axis: from, to (ms since the Unix epoch; or on a local wall clock,
    /// then `zone` names it).
    pub span: (i64, i64),
    /// The time zone of the axis, under its right end (`UTC`, `Europe/Berlin`).
    pub zone: &'a str,
    /// Whether the value axis starts at zero (counts, ages), else it fits the data.
    pub from_zero: bool,
    /// The series (eight are told apart by colour, three legend entries a row).
    pub series: Vec<Series<'a>>,
    /// What the empty chart says (e.g. "no data yet: the first sample comes a minute
    /// after the start").
    pub empty: &'a str,
}

/// `value` if finite, clamped to ±[`MAX_ABS_VALUE`].
fn clean(value: f64) -> Option<f64> {
    value
        .is_finite()
        .then(|| value.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE))
}

/// Ticks of a value axis over `lo..=hi`: a "nice" step (1, 2 or 5 times a power of
/// ten) giving about `target` ticks, and the axis bounds rounded out to it. A flat
/// range is widened so it has a height.
pub fn value_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut i = 0.0;
    // Bounded: the step gives about `target` ticks; the guard stops float surprises.
    while ticks.len() <= 2 * target + 2 {
        let t = first + i * step;
        if t > last + step * 1e-9 {
            break;
        }
        // -0.0 prints as "-0".
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        i += 1.0;
    }
    (first, last, ticks)
}

/// Steps of the time axis, ms: the smallest giving at most `max_ticks` ticks is used.
const TIME_STEPS_MS: [i64; 17] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    2 * 60_000,
    5 * 60_000,
    10 * 60_000,
    15 * 60_000,
    30 * 60_000,
    3_600_000,
    2 * 3_600_000,
    3 * 3_600_000,
    6 * 3_600_000,
    12 * 3_600_000,
];

/// Ticks of the time axis over `from..=to` (ms), on whole steps of UTC time.
pub fn time_ticks(from: i64, to: i64, max_ticks: usize) -> (i64, Vec<i64>) {
    let span = (to - from).max(1);
    let step = TIME_STEPS_MS
        .into_iter()
        .find(|s| span / s < max_ticks.max(1) as i64)
        .unwrap_or(86_400_000);
    let first = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    let ticks = (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= to)
        .take(max_ticks + 1)
        .collect();
    (step, ticks)
}

/// `HH:MM` (or `HH:MM:SS` when the step is under a minute) UTC.
fn time_label(ms: i64, step_ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    if step_ms < 60_000 {
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 3600, s / 60 % 60)
    }
}

/// A tick value for people: no trailing zeros, thousands as `k`/`M`/`G`, the rest in
/// exponent form.
pub fn value_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e12 {
        format!("{v:.1e}")
    } else if a >= 1e9 {
        trim(format!("{:.2}", v / 1e9)) + "G"
    } else if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a == 0.0 {
        "0".to_owned()
    } else if a < 1e-4 {
        format!("{v:.1e}")
    } else {
        // Three significant digits below 1 (0.0015 stays apart from 0.002).
        let decimals = (2 - a.log10().floor() as i32).clamp(3, 6) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Numbers in SVG attributes: two decimals are plenty on a 600-unit drawing.
fn n(v: f64) -> String {
    trim(format!("{v:.2}"))
}

/// The chart as an inline `<svg>` (see the module docs).
pub fn render(chart: &Chart<'_>) -> Markup {
    let series: Vec<Vec<(i64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(t, v)| clean(v).map(|v| (t, v)))
                .collect()
        })
        .collect();
    let (from, to) = (chart.span.0, chart.span.1.max(chart.span.0 + 1));
    let plot_w = WIDTH - LEFT - RIGHT;
    // Three legend entries a row; more rows push the plot down.
    let legend_rows = chart.series.len().div_ceil(LEGEND_PER_ROW).max(1);
    let top = TOP + LEGEND_ROW * (legend_rows - 1) as f64;
    let plot_h = HEIGHT - top - BOTTOM;
    let x = |t: i64| LEFT + (t - from) as f64 / (to - from) as f64 * plot_w;
    let empty = series.iter().all(Vec::is_empty);
    // The values the axis must hold: every sample, or the stacks' tops for bars.
    let values: Vec<f64> = match chart.kind {
        Kind::Line { .. } => series.iter().flatten().map(|p| p.1).collect(),
        Kind::StackedBars { .. } => stacks(&series).into_iter().map(|(_, top)| top).collect(),
    };
    let mut lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if empty {
        (lo, hi) = (0.0, 1.0);
    }
    if chart.from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
        if hi <= lo && lo == 0.0 {
            // All zeros on an axis from zero (no loss, an empty outbox): 0..1, not
            // a range around zero with negative ticks.
            hi = 1.0;
        }
    }
    let (y_lo, y_hi, y_ticks) = value_ticks(lo, hi, 5);
    let y = |v: f64| top + plot_h - (v - y_lo) / (y_hi - y_lo) * plot_h;
    let (t_step, t_ticks) = time_ticks(from, to, 6);
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(view_box) role="img"
            aria-label=(chart.title) preserveAspectRatio="xMidYMid meet" {
            title { (chart.title) }
            text.chart-title x=(n(LEFT)) y="16" { (chart.title) }
            @for (i, s) in chart.series.iter().enumerate() {
                @let lx = LEFT + 170.0 * (i % LEGEND_PER_ROW) as f64;
                @let ly = 24.0 + LEGEND_ROW * (i / LEGEND_PER_ROW) as f64;
                rect class=(format!("swatch s{}", i % COLOURS)) x=(n(lx)) y=(n(ly)) width="10" height="10" {}
                text.legend x=(n(lx + 14.0)) y=(n(ly + 9.0)) { (s.label) }
            }
            // Value axis: grid lines and labels, the unit on top of the labels.
            text.unit x=(n(LEFT - 6.0)) y=(n(top - 6.0)) text-anchor="end" { (chart.unit) }
            @for t in &y_ticks {
                line.grid x1=(n(LEFT)) x2=(n(WIDTH - RIGHT)) y1=(n(y(*t))) y2=(n(y(*t))) {}
                text.tick x=(n(LEFT - 6.0)) y=(n(y(*t) + 4.0)) text-anchor="end" { (value_label(*t)) }
            }
            // Time axis.
            line.axis x1=(n(LEFT)) x2=(n(WIDTH - RIGHT)) y1=(n(top + plot_h)) y2=(n(top + plot_h)) {}
            @for t in &t_ticks {
                line.axis x1=(n(x(*t))) x2=(n(x(*t))) y1=(n(top + plot_h)) y2=(n(top + plot_h + 4.0)) {}
                // A label that would run off the right edge is left out (its tick stays).
                @if x(*t) <= WIDTH - 28.0 {
                    text.tick x=(n(x(*t))) y=(n(HEIGHT - 12.0)) text-anchor="middle" { (time_label(*t, t_step)) }
                }
            }
            text.tick x=(n(WIDTH - RIGHT)) y=(n(HEIGHT - 1.0)) text-anchor="end" { (chart.zone) }
            @if empty {
                text.empty x=(n(LEFT + plot_w / 2.0)) y=(n(top + plot_h / 2.0)) text-anchor="middle" { (chart.empty) }
            } @else {
                @match chart.kind {
                    Kind::Line { gap_ms } => {
                        @for (i, points) in series.iter().enumerate() {
                            @for run in runs(points, gap_ms) {
                                @if run.len() == 1 {
                                    circle class=(format!("dot s{}", i % COLOURS)) cx=(n(x(run[0].0))) cy=(n(y(run[0].1))) r="2.5" {}
                                } @else {
                                    polyline class=(format!("series s{}", i % COLOURS))
                                        points=(run.iter().map(|&(t, v)| format!("{},{}", n(x(t)), n(y(v)))).collect::<Vec<_>>().join(" ")) {}
                                }
                            }
                        }
                    }
                    Kind::StackedBars { width_ms } => {
                        @let bar_w = (width_ms as f64 / (to - from) as f64 * plot_w * 0.8).max(1.0);
                        @for (i, points) in series.iter().enumerate() {
                            @for (t, base, v) in stacked(&series, i, points) {
                                @if v > 0.0 {
                                    rect class=(format!("bar s{}", i % COLOURS))
                                        x=(n(x(t) + bar_w * 0.125)) y=(n(y(base + v)))
                                        width=(n(bar_w)) height=(n((y(base) - y(base + v)).max(0.5))) {
                                        title { (time_label(t, 60_000)) " " (chart.zone) ": " (value_label(v)) " " (chart.unit) " " (chart.series[i].label) }
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

/// Samples split where the step between two is longer than `gap_ms`.
fn runs(points: &[(i64, f64)], gap_ms: i64) -> Vec<&[(i64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i].0 - points[i - 1].0 > gap_ms {
            out.push(&points[start..i]);
            start = i;
        }
    }
    if start < points.len() {
        out.push(&points[start..]);
    }
    out
}

/// The top of each stack (time, sum of the non-negative values at it).
fn stacks(series: &[Vec<(i64, f64)>]) -> Vec<(i64, f64)> {
    let mut tops: Vec<(i64, f64)> = Vec::new();
    for (t, v) in series.iter().flatten() {
        match tops.iter_mut().find(|(at, _)| at == t) {
            Some((_, top)) => *top += v.max(0.0),
            None => tops.push((*t, v.max(0.0))),
        }
    }
    tops
}

/// Series `i`'s bars: (time, base = the earlier series' values at that time, value).
fn stacked(series: &[Vec<(i64, f64)>], i: usize, points: &[(i64, f64)]) -> Vec<(i64, f64, f64)> {
    points
        .iter()
        .map(|&(t, v)| {
            let base = series[..i]
                .iter()
                .flatten()
                .filter(|(at, _)| *at == t)
                .map(|(_, v)| v.max(0.0))
                .sum();
            (t, base, v.max(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(points: Vec<(i64, f64)>) -> String {
        render(&Chart {
            title: "Line voltage",
            unit: "V",
            kind: Kind::Line { gap_ms: 150_000 },
            span: (0, 3_600_000),
            zone: "UTC",
            from_zero: false,
            series: vec![Series {
                label: "voltage",
                points,
            }],
            empty: "no data yet",
        })
        .into_string()
    }

    #[test]
    fn value_ticks_are_nice_and_cover_the_data() {
        let (lo, hi, t) = value_ticks(0.0, 97.0, 5);
        assert_eq!((lo, hi), (0.0, 100.0));
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let (lo, hi, t) = value_ticks(-48.3, -47.1, 4);
        assert!(lo <= -48.3 && hi >= -47.1, "{lo} {hi}");
        assert!(t.len() >= 3 && t.len() <= 10, "{t:?}");
        // Flat series: widened around the value.
        let (lo, hi, _) = value_ticks(-48.0, -48.0, 4);
        assert!(lo < -48.0 && hi > -48.0, "{lo} {hi}");
        let (lo, hi, _) = value_ticks(0.0, 0.0, 4);
        assert!(lo < 0.0 && hi > 0.0);
        // Extremes stay finite and bounded in tick count.
        let (lo, hi, t) = value_ticks(-MAX_ABS_VALUE, MAX_ABS_VALUE, 4);
        assert!(lo.is_finite() && hi.is_finite());
        assert!(t.len() <= 10, "{t:?}");
        let (_, _, t) = value_ticks(1e-9, 3e-9, 4);
        assert!(!t.is_empty() && t.len() <= 10, "{t:?}");
    }

    #[test]
    fn time_ticks_fall_on_whole_utc_steps() {
        let (step, t) = time_ticks(90_000, 24 * 3_600_000 + 90_000, 6);
        assert_eq!(step, 6 * 3_600_000);
        assert_eq!(t[0], 6 * 3_600_000);
        assert!(t.len() <= 7);
        let (step, t) = time_ticks(1_000, 61_000, 6);
        assert_eq!(step, 15_000);
        assert_eq!(t, vec![15_000, 30_000, 45_000, 60_000]);
        assert_eq!(time_label(3_723_000, 1_000), "01:02:03");
        assert_eq!(time_label(3_723_000, 60_000), "01:02");
    }

    #[test]
    fn labels_read_well() {
        assert_eq!(value_label(20.0), "20");
        assert_eq!(value_label(-47.5), "-47.5");
        assert_eq!(value_label(0.25), "0.25");
        assert_eq!(value_label(25_000.0), "25k");
        assert_eq!(value_label(3_500_000.0), "3.5M");
        assert_eq!(value_label(0.0), "0");
        assert_eq!(value_label(2e13), "2.0e13");
        // Small ticks keep apart: 0.0015 and 0.002 were both "0.002".
        assert_eq!(value_label(0.0015), "0.0015");
        assert_eq!(value_label(0.0005), "0.0005");
        assert_eq!(value_label(0.002), "0.002");
        assert_eq!(value_label(0.00005), "5.0e-5");
    }

    #[test]
    fn an_empty_chart_says_so_and_draws_no_series() {
        let svg = line(Vec::new());
        assert!(svg.contains("no data yet"), "{svg}");
        assert!(!svg.contains("<polyline"), "{svg}");
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert!(svg.contains("<title>Line voltage</title>"));
    }

    #[test]
    fn one_sample_is_a_dot_and_a_gap_breaks_the_line() {
        let svg = line(vec![(60_000, -48.0)]);
        assert!(svg.contains("<circle class=\"dot s0\""), "{svg}");
        assert!(!svg.contains("<polyline"));
        let svg = line(vec![
            (0, -48.0),
            (60_000, -47.0),
            (120_000, -46.0),
            // The daemon was down for ten minutes.
            (720_000, -48.0),
            (780_000, -48.0),
        ]);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    }

    #[test]
    fn points_map_onto_the_plot_area() {
        let svg = render(&Chart {
            title: "t",
            unit: "V",
            kind: Kind::Line { gap_ms: 3_600_000 },
            span: (0, 3_600_000),
            zone: "UTC",
            from_zero: false,
            series: vec![Series {
                label: "v",
                points: vec![(0, -50.0), (3_600_000, -40.0)],
            }],
            empty: "",
        })
        .into_string();
        let at = svg.find("points=\"").expect("points") + 8;
        let pts: Vec<(f64, f64)> = svg[at..]
            .split('"')
            .next()
            .expect("value")
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].0, LEFT);
        assert_eq!(pts[1].0, WIDTH - RIGHT);
        // -50 is the bottom of the axis, -40 the top (the ticks are -50..-40 by 2).
        assert_eq!(pts[0].1, HEIGHT - BOTTOM);
        assert_eq!(pts[1].1, TOP);
    }

    #[test]
    fn text_is_escaped_and_nothing_runs() {
        let svg = render(&Chart {
            title: "<script>alert(1)</script>",
            unit: "\"><img src=x onerror=alert(1)>",
            kind: Kind::Line { gap_ms: 1 },
            span: (0, 10),
            zone: "UTC",
            from_zero: true,
            series: vec![Series {
                label: "a&b</text><script>",
                points: vec![(1, 1.0)],
            }],
            empty: "",
        })
        .into_string();
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(svg.contains("a&amp;b"), "{svg}");
        assert!(svg.contains("&quot;&gt;&lt;img"), "{svg}");
        assert!(!svg.contains("style"), "no inline style (CSP): {svg}");
    }

    #[test]
    fn extreme_and_broken_values_stay_drawable() {
        let svg = line(vec![
            (0, f64::NAN),
            (60_000, f64::INFINITY),
            (120_000, 1e300),
            (180_000, -1e300),
        ]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        // Only NaN and infinities: nothing to draw.
        let svg = line(vec![(0, f64::NAN), (1, f64::NEG_INFINITY)]);
        assert!(svg.contains("no data yet"), "{svg}");
    }

    #[test]
    fn bars_stack_per_hour_from_zero() {
        let svg = render(&Chart {
            title: "Calls per hour",
            unit: "calls",
            kind: Kind::StackedBars {
                width_ms: 3_600_000,
            },
            span: (0, 24 * 3_600_000),
            zone: "UTC",
            from_zero: true,
            series: vec![
                Series {
                    label: "answered",
                    points: vec![(0, 3.0), (3_600_000, 0.0)],
                },
                Series {
                    label: "not answered",
                    points: vec![(0, 2.0), (3_600_000, 1.0)],
                },
            ],
            empty: "no calls",
        })
        .into_string();
        // Three bars (a zero is not drawn); the stack of 5 sets the axis to 0..5.
        assert_eq!(svg.matches("<rect class=\"bar").count(), 3, "{svg}");
        assert!(svg.contains(">5</text>"), "{svg}");
        assert!(svg.contains("00:00 UTC: 2 calls not answered"), "{svg}");
    }

    #[test]
    fn a_flat_zero_series_from_zero_has_no_negative_ticks() {
        let svg = render(&Chart {
            title: "RTP loss",
            unit: "%",
            kind: Kind::Line { gap_ms: 10_000 },
            span: (0, 10_000),
            zone: "UTC",
            from_zero: true,
            series: vec![Series {
                label: "loss",
                points: vec![(0, 0.0), (5_000, 0.0)],
            }],
            empty: "",
        })
        .into_string();
        assert!(!svg.contains(">-"), "{svg}");
        assert!(svg.contains(">1</text>"), "{svg}");
    }
}
