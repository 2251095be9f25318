//! The charts in-process: `/api/v1/charts/...` and the charts on the ports, calls
//! and sync pages agree with the data fed into the histories and the store, follow
//! the roles (an agent sees none; sync's needs `sync.view`), and the sampler fills
//! the histories from the status, the main loop's stand-in and the store.

use std::time::Duration;

use super::*;
use crate::call::{CallParty, CallSnapshot, LegId};
use crate::cdr::Direction;
use crate::media_engine::LegSnapshot;
use crate::web::history::{ChartSampler, LINE_SAMPLES, SYNC_SAMPLES};
use branchline_media::rtcp::CallQuality;

fn leg(id: u64, jitter_ms: f64, loss: f64) -> LegSnapshot {
    LegSnapshot {
        leg: LegId(id),
        local: "192.0.2.1:10000".parse().expect("addr"),
        remote: None,
        bridged_to: None,
        media: None,
        packets_in: 100,
        packets_out: 100,
        invalid: 0,
        foreign: 0,
        dropped: 0,
        rtcp_in: 0,
        rtcp_out: 0,
        remote_report: None,
        quality: Some(CallQuality::estimate(
            loss,
            jitter_ms,
            None,
            Duration::from_millis(40),
            true,
        )),
        jitter_buffer: None,
        passthrough: false,
        fast_relay: false,
    }
}

fn trunk_call(id: &str, started_at_ms: i64) -> CallSnapshot {
    CallSnapshot {
        call_id: id.into(),
        direction: Direction::Inbound,
        caller_number: "13812345678".into(),
        callee_number: "101".into(),
        caller: CallParty::Sip {
            leg: LegId(7),
            phone: false,
        },
        callee: Some(CallParty::Fxs(1)),
        ringing: Vec::new(),
        phase: "connected",
        started_at_ms,
        answered_at_ms: Some(started_at_ms),
    }
}

/// A CDR row as the store task writes it (only the columns the chart reads matter).
fn insert_cdr(db: &std::path::Path, call_id: &str, started_at_ms: i64, answered: bool) {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
    conn.execute(
        "INSERT INTO cdrs (call_id, direction, caller, callee, started_at_ms, answered_at_ms,
                           ended_at_ms, duration_ms, billable_ms, disposition, hangup_side)
         VALUES (?1, 'inbound', '13812345678', '101', ?2, ?3, ?2 + 30000, 30000, 0, ?4, 'caller')",
        (
            call_id,
            started_at_ms,
            answered.then_some(started_at_ms + 5_000),
            if answered { "answered" } else { "no_answer" },
        ),
    )
    .expect("cdr row");
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn charts_follow_the_roles_and_show_the_data_fed_in_on_pages_and_api() {
    let env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    env.custom_user("viewer", &[(Resource::Diagnostics, Action::View)])
        .await;
    let viewer = env.login("viewer").await;
    let now = system_clock_ms();

    // Nothing sampled yet: every chart says so, on the pages and in the API.
    let r = env.get("/api/v1/charts/line", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["capacity"], json!(LINE_SAMPLES));
    assert_eq!(v["interval_ms"], json!(1000));
    assert_eq!(v["ports"][0]["samples"], json!([]));
    let page = env.get("/ports", Some(&tech)).await.text;
    assert!(page.contains("<svg class=\"chart\""), "{page}");
    assert!(page.contains("no data yet"), "{page}");
    // ... but the sync page's backlog chart: it ends with the outbox as read for the
    // page, the figure beside it.
    let page = env.get("/sync", Some(&tech)).await.text;
    assert!(page.contains("Outbox backlog"), "{page}");
    assert!(!page.contains("no data yet"), "{page}");
    assert!(page.contains("<circle class=\"dot s0\""), "{page}");
    let page = env.get("/calls", Some(&tech)).await.text;
    assert!(page.contains("no call in the last 24 hours"), "{page}");
    assert!(
        page.contains("No call with RTP since branchd started"),
        "{page}"
    );

    // Data: two readings of port 1, the outbox twice, a SIP call sampled three times
    // and then ended, two CDRs this hour (one answered) and one two hours ago.
    {
        // Two readings of port 1 as the board reports them.
        let mut p = env.publisher.lock().expect("publisher");
        for (at_ms, mv) in [(now - 2_000, -48_000), (now - 1_000, -47_500)] {
            p.on_event(
                at_ms,
                1,
                &Event::LineReading {
                    millivolts: mv,
                    microamps: 1_500,
                },
            );
        }
        p.publish(now);
    }
    env.charts.with(|h| {
        for (at, depth) in [(now - 2_000, 12), (now - 1_000, 5)] {
            h.sync.record(
                at,
                &crate::sync::state::Backlog {
                    depth,
                    oldest_created_at_ms: Some(now - 180_000),
                    last_seq: 20,
                },
            );
        }
        for (i, jitter) in [2.0, 9.5, 4.0].into_iter().enumerate() {
            h.calls.record(
                now - 10_000 + i64::try_from(i).unwrap_or(0) * 2_000,
                &ActiveCalls {
                    calls: vec![trunk_call("trunk-call-1", now - 12_000)],
                    legs: Ok(vec![leg(7, jitter, 0.5)]),
                },
            );
        }
        h.calls.record(
            now - 1_000,
            &ActiveCalls {
                calls: Vec::new(),
                legs: Ok(Vec::new()),
            },
        );
    });
    let this_hour = now.div_euclid(3_600_000) * 3_600_000;
    insert_cdr(&env.db_path, "c1", this_hour.max(now - 1_000), true);
    insert_cdr(&env.db_path, "c2", this_hour.max(now - 2_000), false);
    insert_cdr(&env.db_path, "c3", now - 2 * 3_600_000, true);

    // Line history: the API has the readings as fed; the page draws them.
    let v = env.get("/api/v1/charts/line", Some(&tech)).await.json();
    assert_eq!(
        v["ports"][0]["samples"],
        json!([
            {"at_ms": now - 2_000, "millivolts": -48_000, "microamps": 1_500},
            {"at_ms": now - 1_000, "millivolts": -47_500, "microamps": 1_500},
        ])
    );
    assert_eq!(v["ports"][2]["kind"], "fxo");
    assert_eq!(v["ports"][2]["samples"], json!([]));
    let page = env.get("/ports", Some(&viewer)).await;
    assert_eq!(page.status, StatusCode::OK);
    // One line per chart (voltage, loop current) for port 1; the others are empty.
    assert_eq!(
        count(&page.text, "<polyline class=\"series s0\""),
        2,
        "{}",
        page.text
    );
    assert!(
        page.text.contains(">-47.5<") || page.text.contains(">-48<"),
        "{}",
        page.text
    );
    assert!(page.text.contains("port 3 (FXO)"), "{}", page.text);

    // Sync backlog: needs sync.view.
    let r = env.get("/api/v1/charts/sync-backlog", Some(&tech)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["capacity"], json!(SYNC_SAMPLES));
    assert_eq!(
        v["samples"],
        json!([
            {"at_ms": now - 2_000, "depth": 12, "oldest_age_ms": 178_000},
            {"at_ms": now - 1_000, "depth": 5, "oldest_age_ms": 179_000},
        ])
    );
    let page = env.get("/sync", Some(&tech)).await.text;
    assert_eq!(count(&page, "<polyline class=\"series s0\""), 2, "{page}");
    let r = env.get("/api/v1/charts/sync-backlog", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("sync.view"), "{}", r.text);

    // Call quality: the finished call's jitter as sampled, and drawn.
    let v = env
        .get("/api/v1/charts/call-quality", Some(&tech))
        .await
        .json();
    let call = &v["calls"][0];
    assert_eq!(call["call_id"], "trunk-call-1", "{v}");
    assert_eq!(call["caller_via"], "SIP trunk");
    assert_eq!(call["ended_at_ms"], json!(now - 1_000));
    let jitters: Vec<f64> = call["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|s| s["caller"]["jitter_ms"].as_f64())
        .collect();
    assert_eq!(jitters, vec![2.0, 9.5, 4.0]);
    assert!(call["samples"][0]["callee"].is_null(), "FXS: no RTP");
    let page = env.get("/calls", Some(&tech)).await.text;
    assert!(page.contains("RTP jitter, call trunk-call-1"), "{page}");
    assert!(page.contains("from the caller (SIP trunk)"), "{page}");
    assert!(
        !page.contains("13812345678"),
        "no number in the charts: {page}"
    );

    // Calls per hour: the CDRs counted per UTC hour, as on the page.
    let v = env
        .get("/api/v1/charts/calls-per-hour", Some(&viewer))
        .await
        .json();
    assert_eq!(v["timezone"], "UTC");
    let hours = v["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[23]["hour_start_ms"], json!(this_hour));
    assert_eq!(
        (&hours[23]["answered"], &hours[23]["not_answered"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        (&hours[21]["answered"], &hours[21]["not_answered"]),
        (&json!(1), &json!(0))
    );
    let page = env.get("/calls", Some(&viewer)).await.text;
    // Three non-zero bars: answered and not this hour, answered two hours ago.
    assert_eq!(count(&page, "<rect class=\"bar "), 3, "{page}");
    assert!(page.contains("Calls from the call records: 3,"), "{page}");

    // An agent sees no chart, on the API or the pages; denials are audited.
    for uri in [
        "/api/v1/charts/line",
        "/api/v1/charts/call-quality",
        "/api/v1/charts/calls-per-hour",
        "/api/v1/charts/sync-backlog",
    ] {
        let r = env.get(uri, Some(&agent)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.text);
        assert_eq!(
            env.get(uri, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    for uri in ["/ports", "/calls", "/sync"] {
        let r = env.get(uri, Some(&agent)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
        assert!(!r.text.contains("<svg"), "{uri}: {}", r.text);
    }
    let audit = env.audit();
    for target in ["line history", "sync backlog history"] {
        assert!(
            audit
                .iter()
                .any(|a| a.actor == "agent1" && a.result == "denied" && a.target == target),
            "{target}"
        );
    }
    // The sync page itself needs sync.view: the viewer gets the 403 page.
    assert_eq!(
        env.get("/sync", Some(&viewer)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_sampler_fills_the_histories_from_the_main_loop_and_the_store() {
    let env = env().await;
    let tech = env.login("tech").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(
        ChartSampler {
            charts: env.charts.clone(),
            status: env.status.clone(),
            db_path: env.db_path.clone(),
        }
        .run(stop.clone()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The outbox and the calls (none up: the media engine's answer has no legs)
    // are sampled every second.
    let sync = loop {
        let sync = env
            .get("/api/v1/charts/sync-backlog", Some(&tech))
            .await
            .json();
        if sync["samples"].as_array().is_some_and(|s| s.len() >= 2) {
            break sync;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not sampled: {sync}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let quality = env
        .get("/api/v1/charts/call-quality", Some(&tech))
        .await
        .json();
    assert_eq!(quality["calls"], json!([]), "no SIP call, no trace");
    assert_eq!(quality["interval_ms"], json!(1000));
    // The outbox as the store has it (the users made above are queued for HQ).
    let backlog = {
        let reader = crate::store::Store::reader(&env.db_path).expect("reader");
        crate::sync::state::backlog(reader.connection(), &env.db_path).expect("backlog")
    };
    let last = sync["samples"].as_array().and_then(|s| s.last()).cloned();
    assert_eq!(last.map(|s| s["depth"].clone()), Some(json!(backlog.depth)));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .expect("the sampler stops when told")
        .expect("no panic");
}

/// The `data-reload` of section `id` in `page`, if it has one.
fn reload_of(page: &str, id: &str) -> Option<i64> {
    let at = page.find(&format!("id=\"{id}\""))?;
    let tag = &page[at..at + page[at..].find('>')?];
    let rest = &tag[tag.find("data-reload=\"")? + "data-reload=\"".len()..];
    rest[..rest.find('"')?].parse().ok()
}

#[tokio::test]
async fn the_charts_fetch_their_page_again_at_their_sampling_interval() {
    let env = env().await;
    let tech = env.login("tech").await;
    let interval = |v: Value| v["interval_ms"].as_i64().expect("interval_ms");
    let line = interval(env.get("/api/v1/charts/line", Some(&tech)).await.json());
    let quality = interval(
        env.get("/api/v1/charts/call-quality", Some(&tech))
            .await
            .json(),
    );
    let sync = interval(
        env.get("/api/v1/charts/sync-backlog", Some(&tech))
            .await
            .json(),
    );
    let ports = env.get("/ports", Some(&tech)).await.text;
    // Sampled every second: reloaded no faster than every 2 s.
    assert_eq!(line, 1_000);
    assert_eq!(reload_of(&ports, "line-history"), Some(2_000), "{ports}");
    let calls = env.get("/calls", Some(&tech)).await.text;
    assert_eq!(
        reload_of(&calls, "call-quality"),
        Some(quality.clamp(2_000, 300_000)),
        "{calls}"
    );
    assert_eq!(reload_of(&calls, "calls-per-hour"), Some(60_000), "{calls}");
    let page = env.get("/sync", Some(&tech)).await.text;
    assert_eq!(
        reload_of(&page, "backlog-history"),
        Some(sync.clamp(2_000, 300_000)),
        "{page}"
    );
}

/// The sync page's backlog chart and the figure beside it agree: the chart ends with
/// the outbox as the page read it, however old the last kept sample is (at start, the
/// first sample may predate rows written since, such as the login's audit row), and
/// `/api/v1/charts/sync-backlog` carries the outbox as it read it (`current`).
#[tokio::test]
async fn the_backlog_chart_ends_with_the_figure_the_sync_page_shows() {
    let env = env().await;
    let tech = env.login("tech").await;
    let store_backlog = || {
        let reader = crate::store::Store::reader(&env.db_path).expect("reader");
        crate::sync::state::backlog(reader.connection(), &env.db_path).expect("backlog")
    };
    let now = system_clock_ms();
    // A first sample taken before the rows written since (users, logins).
    let depth = store_backlog().depth;
    assert!(depth >= 2, "the fixture queues rows for HQ: {depth}");
    env.charts.with(|h| {
        h.sync.record(
            now - 1_000,
            &crate::sync::state::Backlog {
                depth: 0,
                oldest_created_at_ms: None,
                last_seq: 0,
            },
        );
    });
    let v = env
        .get("/api/v1/charts/sync-backlog", Some(&tech))
        .await
        .json();
    let figure = env.get("/api/v1/sync", Some(&tech)).await.json();
    let current = &v["current"];
    assert_eq!(current["depth"], json!(store_backlog().depth), "{v}");
    assert_eq!(current["depth"], figure["backlog"]["depth"], "{v} {figure}");
    assert_eq!(current["at_ms"], v["at_ms"], "{v}");
    assert_eq!(v["samples"].as_array().map(Vec::len), Some(1), "{v}");
    // The page: the figure, and the chart's line from the zero sample up to it.
    let page = env.get("/sync", Some(&tech)).await.text;
    let depth = store_backlog().depth;
    assert!(
        page.contains(&format!("<p class=\"big\">{depth} records</p>")),
        "{page}"
    );
    let chart = page
        .split("aria-label=\"Outbox backlog\"")
        .nth(1)
        .and_then(|c| c.split("</svg>").next())
        .expect("the backlog chart");
    let points: Vec<(f64, f64)> = chart
        .split("points=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("a line")
        .split(' ')
        .map(|xy| {
            let (x, y) = xy.split_once(',').expect("x,y");
            (x.parse().expect("x"), y.parse().expect("y"))
        })
        .collect();
    assert_eq!(points.len(), 2, "{chart}");
    // The value axis runs from zero up: the live point is above the zero sample, at
    // the tick of its value when the axis has one.
    assert!(points[1].1 < points[0].1, "{chart}");
    let tick_y = chart
        .split("<text class=\"tick\"")
        .find(|t| t.contains(&format!(">{depth}<")))
        .and_then(|t| t.split("y=\"").nth(1))
        .and_then(|y| y.split('"').next())
        .and_then(|y| y.parse::<f64>().ok());
    if let Some(tick_y) = tick_y {
        // A tick label sits 4 px below its grid line.
        assert!((tick_y - 4.0 - points[1].1).abs() < 0.6, "{chart}");
    }
}
