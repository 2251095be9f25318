//! Unit tests of the [`Downloader`] on a virtual clock.

use std::time::{Duration, Instant};

use crate::agent::download::{check_response, Checked};
use crate::agent::{
    AgentError, BackoffConfig, DownEvent, DownInput, DownTransmit, Downloader, DownloaderConfig,
    Failure, FeedUpdate, RequestId, SyncStatus, Uploader, UploaderConfig,
};
use crate::wire::{
    Change, DownQuery, DownResponse, Entity, EntityKind, ErrorBody, ErrorCode, Group,
    PROTOCOL_VERSION,
};

fn config() -> DownloaderConfig {
    DownloaderConfig {
        wait_ms: 20_000,
        limit: 100,
        request_margin: Duration::from_secs(10),
        min_poll_interval: Duration::from_secs(1),
        backoff: BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        },
    }
}

fn group(revision: i64, name: &str) -> Change {
    Change {
        revision,
        entity: EntityKind::Group,
        key: name.into(),
        row: Some(Entity::Group(Group {
            name: name.into(),
            description: format!("team {name}"),
        })),
    }
}

fn deleted(revision: i64, name: &str) -> Change {
    Change {
        revision,
        entity: EntityKind::Group,
        key: name.into(),
        row: None,
    }
}

fn page(changes: Vec<Change>, cursor: i64, more: bool) -> DownResponse {
    DownResponse::Page {
        version: PROTOCOL_VERSION,
        changes,
        cursor,
        more,
    }
}

fn events(down: &mut Downloader) -> Vec<DownEvent> {
    std::iter::from_fn(|| down.poll_event()).collect()
}

fn errors(events: &[DownEvent]) -> Vec<AgentError> {
    events
        .iter()
        .filter_map(|e| match e {
            DownEvent::Error(e) => Some(e.clone()),
            DownEvent::Apply { .. } => None,
        })
        .collect()
}

fn query(down: &mut Downloader) -> DownTransmit {
    let tx = down.poll_transmit().expect("a query");
    assert!(down.poll_transmit().is_none(), "one query at a time");
    tx
}

#[test]
fn polls_applies_confirms_and_polls_again() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 7, 1, t0).unwrap();
    let tx = query(&mut down);
    assert_eq!(
        tx.query,
        DownQuery {
            since: 7,
            wait_ms: 20_000,
            limit: 100
        }
    );
    assert_eq!(tx.deadline, t0 + Duration::from_secs(30));
    assert_eq!(down.timeout(), Some(tx.deadline));

    let t1 = t0 + Duration::from_secs(3);
    let changes = vec![group(8, "a"), deleted(11, "b")];
    down.handle(
        t1,
        DownInput::Response {
            request: tx.request,
            response: page(changes.clone(), 11, false),
        },
    );
    assert_eq!(
        events(&mut down),
        [DownEvent::Apply {
            update: FeedUpdate::Page(changes),
            since: 7,
            new_cursor: 11
        }]
    );
    assert!(
        down.poll_transmit().is_none(),
        "nothing before the apply is confirmed"
    );
    assert_eq!(down.timeout(), None);
    assert!(down.status().applying);
    assert_eq!(down.cursor(), 7);

    down.handle(t1, DownInput::Applied { cursor: 11 });
    assert_eq!(down.cursor(), 11);
    assert_eq!(down.status().last_success, Some(t1));
    assert_eq!(
        query(&mut down).query.since,
        11,
        "at once after a page with changes"
    );
}

#[test]
fn more_asks_again_at_once_and_an_empty_page_waits_the_min_interval() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 0, 1, t0).unwrap();
    let tx = query(&mut down);
    down.handle(
        t0,
        DownInput::Response {
            request: tx.request,
            response: page(vec![group(1, "a")], 1, true),
        },
    );
    let _ = events(&mut down);
    down.handle(t0, DownInput::Applied { cursor: 1 });
    let tx = query(&mut down);
    // An empty page answered at once: the next query waits until 1 s after this one.
    let t1 = t0 + Duration::from_millis(200);
    down.handle(
        t1,
        DownInput::Response {
            request: tx.request,
            response: page(Vec::new(), 1, false),
        },
    );
    assert_eq!(
        events(&mut down),
        [DownEvent::Apply {
            update: FeedUpdate::Page(Vec::new()),
            since: 1,
            new_cursor: 1
        }]
    );
    down.handle(t1, DownInput::Applied { cursor: 1 });
    assert!(down.poll_transmit().is_none());
    assert_eq!(down.timeout(), Some(t0 + Duration::from_secs(1)));
    down.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(query(&mut down).query.since, 1);
    // An empty page after a long poll that took its time: again at once.
    let tx_sent = t0 + Duration::from_secs(1);
    let mut down2 = Downloader::new(config(), 1, 1, tx_sent).unwrap();
    let tx = query(&mut down2);
    let t2 = tx_sent + Duration::from_secs(20);
    down2.handle(
        t2,
        DownInput::Response {
            request: tx.request,
            response: page(Vec::new(), 1, false),
        },
    );
    down2.handle(t2, DownInput::Applied { cursor: 1 });
    assert!(down2.poll_transmit().is_some());
}

#[test]
fn snapshots_are_applied_whole() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 3, 1, t0).unwrap();
    let tx = query(&mut down);
    let rows = vec![group(90, "a"), group(120, "b")];
    let snapshot = DownResponse::Snapshot {
        version: PROTOCOL_VERSION,
        rows: rows.clone(),
        cursor: 500,
    };
    down.handle(
        t0,
        DownInput::Response {
            request: tx.request,
            response: snapshot,
        },
    );
    assert_eq!(
        events(&mut down),
        [DownEvent::Apply {
            update: FeedUpdate::Snapshot(rows),
            since: 3,
            new_cursor: 500
        }]
    );
    down.handle(t0, DownInput::Applied { cursor: 500 });
    assert_eq!(down.status().last_snapshot, Some(t0));
    assert_eq!(query(&mut down).query.since, 500);
}

/// Each bad response: refused with BadFeed (or VersionMismatch), nothing applied, the
/// cursor unchanged, the same query again after a backoff.
#[test]
fn bad_responses_apply_nothing_and_retry_after_a_backoff() {
    let mismatched = Change {
        entity: EntityKind::User,
        ..group(12, "a")
    };
    let wrong_key = Change {
        key: "b".into(),
        ..group(12, "a")
    };
    let cases: Vec<(&str, DownResponse)> = vec![
        ("cursor goes back", page(Vec::new(), 9, false)),
        ("change at since", page(vec![group(10, "a")], 10, false)),
        ("change below since", page(vec![group(4, "a")], 10, false)),
        (
            "not ascending",
            page(vec![group(12, "a"), group(11, "b")], 12, false),
        ),
        (
            "repeated revision",
            page(vec![group(12, "a"), group(12, "b")], 12, false),
        ),
        (
            "cursor below last change",
            page(vec![group(12, "a"), group(15, "b")], 14, false),
        ),
        ("kind mismatch", page(vec![mismatched], 12, false)),
        ("key mismatch", page(vec![wrong_key], 12, false)),
        ("more with nothing", page(Vec::new(), 10, true)),
        (
            "too many",
            page(
                (11..=111).map(|r| group(r, &format!("g{r}"))).collect(),
                111,
                false,
            ),
        ),
        (
            "snapshot backwards",
            DownResponse::Snapshot {
                version: PROTOCOL_VERSION,
                rows: Vec::new(),
                cursor: 5,
            },
        ),
        (
            "snapshot delete",
            DownResponse::Snapshot {
                version: PROTOCOL_VERSION,
                rows: vec![deleted(11, "a")],
                cursor: 20,
            },
        ),
        (
            "snapshot duplicate",
            DownResponse::Snapshot {
                version: PROTOCOL_VERSION,
                rows: vec![group(11, "a"), group(12, "a")],
                cursor: 20,
            },
        ),
        (
            "snapshot row after its cursor",
            DownResponse::Snapshot {
                version: PROTOCOL_VERSION,
                rows: vec![group(21, "a")],
                cursor: 20,
            },
        ),
    ];
    for (name, response) in cases {
        let t0 = Instant::now();
        let mut down = Downloader::new(config(), 10, 1, t0).unwrap();
        let tx = query(&mut down);
        down.handle(
            t0,
            DownInput::Response {
                request: tx.request,
                response,
            },
        );
        let ev = events(&mut down);
        assert!(
            matches!(
                errors(&ev).as_slice(),
                [AgentError::BadFeed { since: 10, .. }]
            ),
            "{name}: {ev:?}"
        );
        assert_eq!(ev.len(), 1, "{name}: nothing to apply");
        assert_eq!(down.cursor(), 10);
        assert!(down.poll_transmit().is_none());
        let at = down.timeout().expect("retry");
        assert!(at - t0 <= Duration::from_millis(100), "{name}");
        assert_eq!(down.status().next_attempt, Some(at));
        down.handle_timeout(at);
        assert_eq!(query(&mut down).query.since, 10, "{name}");
    }
    // Another protocol version waits at the cap.
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 10, 1, t0).unwrap();
    let tx = query(&mut down);
    let response = DownResponse::Page {
        version: 2,
        changes: Vec::new(),
        cursor: 10,
        more: false,
    };
    down.handle(
        t0,
        DownInput::Response {
            request: tx.request,
            response,
        },
    );
    assert!(matches!(
        errors(&events(&mut down)).as_slice(),
        [AgentError::VersionMismatch { got: 2, .. }]
    ));
    assert!(down.timeout().unwrap() - t0 >= Duration::from_secs(5));
}

#[test]
fn a_page_may_advance_the_cursor_past_its_last_change() {
    let query = DownQuery {
        since: 10,
        wait_ms: 0,
        limit: 10,
    };
    assert_eq!(
        check_response(&query, page(vec![group(12, "a")], 20, false)).unwrap(),
        Checked::Page {
            changes: vec![group(12, "a")],
            cursor: 20,
            more: false
        }
    );
}

#[test]
fn failures_back_off_and_refusals_wait_at_the_cap() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 0, 5, t0).unwrap();
    let mut now = t0;
    for n in 0..6u32 {
        let tx = query(&mut down);
        down.handle(
            now,
            DownInput::Failed {
                request: tx.request,
                failure: Failure::Status {
                    status: 502,
                    body: None,
                },
            },
        );
        assert!(matches!(
            errors(&events(&mut down)).as_slice(),
            [AgentError::Server { status: 502, .. }]
        ));
        let at = down.timeout().unwrap();
        assert!(at - now <= Duration::from_millis(100) * 2u32.pow(n));
        assert_eq!(down.status().consecutive_failures, n + 1);
        now = at;
        down.handle_timeout(now);
    }
    let tx = query(&mut down);
    let forbidden = Failure::Status {
        status: 403,
        body: Some(ErrorBody {
            code: ErrorCode::Forbidden,
            message: "not your site".into(),
        }),
    };
    down.handle(
        now,
        DownInput::Failed {
            request: tx.request,
            failure: forbidden,
        },
    );
    assert!(matches!(
        errors(&events(&mut down)).as_slice(),
        [AgentError::Refused { status: 403, .. }]
    ));
    let wait = down.timeout().unwrap() - now;
    assert!(
        wait >= Duration::from_secs(5) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    // Force cancels the wait.
    down.handle(now, DownInput::Force);
    assert_eq!(query(&mut down).query.since, 0);
    assert_eq!(down.status().next_attempt, None);
}

#[test]
fn a_query_without_answer_times_out_and_its_late_answer_is_ignored() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 4, 1, t0).unwrap();
    let tx = query(&mut down);
    down.handle_timeout(tx.deadline);
    assert!(matches!(
        errors(&events(&mut down)).as_slice(),
        [AgentError::Timeout { after, .. }] if *after == Duration::from_secs(30)
    ));
    let at = down.timeout().unwrap();
    down.handle_timeout(at);
    let retry = query(&mut down);
    down.handle(
        at,
        DownInput::Response {
            request: tx.request,
            response: page(vec![group(5, "a")], 5, false),
        },
    );
    assert!(
        events(&mut down).is_empty(),
        "a late answer to the old query"
    );
    down.handle(
        at,
        DownInput::Response {
            request: RequestId(99),
            response: page(Vec::new(), 4, false),
        },
    );
    assert!(events(&mut down).is_empty());
    down.handle(
        at,
        DownInput::Response {
            request: retry.request,
            response: page(vec![group(5, "a")], 5, false),
        },
    );
    assert_eq!(events(&mut down).len(), 1);
}

#[test]
fn a_failed_apply_fetches_the_same_page_again() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 4, 1, t0).unwrap();
    let tx = query(&mut down);
    down.handle(
        t0,
        DownInput::Response {
            request: tx.request,
            response: page(vec![group(5, "a")], 5, false),
        },
    );
    let _ = events(&mut down);
    down.handle(
        t0,
        DownInput::ApplyFailed {
            detail: "database is locked".into(),
        },
    );
    let ev = events(&mut down);
    assert!(matches!(
        errors(&ev).as_slice(),
        [AgentError::ApplyFailed { cursor: 5, .. }]
    ));
    assert_eq!(down.cursor(), 4);
    down.handle_timeout(down.timeout().unwrap());
    assert_eq!(query(&mut down).query.since, 4);
    assert!(down.status().in_flight.is_some());
}

#[test]
fn a_confirmation_of_another_cursor_is_refused() {
    let t0 = Instant::now();
    let mut down = Downloader::new(config(), 4, 1, t0).unwrap();
    let tx = query(&mut down);
    down.handle(
        t0,
        DownInput::Response {
            request: tx.request,
            response: page(vec![group(5, "a")], 5, false),
        },
    );
    let _ = events(&mut down);
    down.handle(t0, DownInput::Applied { cursor: 6 });
    assert!(matches!(
        errors(&events(&mut down)).as_slice(),
        [AgentError::ApplyFailed { cursor: 5, .. }]
    ));
    assert_eq!(down.cursor(), 4);
    // A stray confirmation while idle changes nothing.
    down.handle(t0, DownInput::Applied { cursor: 5 });
    assert_eq!(down.cursor(), 4);
}

#[test]
fn bad_settings_and_cursors_are_refused() {
    let t0 = Instant::now();
    assert!(Downloader::new(config(), -1, 1, t0).is_err());
    assert!(Downloader::new(
        DownloaderConfig {
            wait_ms: 60_001,
            ..config()
        },
        0,
        1,
        t0
    )
    .is_err());
    assert!(Downloader::new(
        DownloaderConfig {
            limit: 0,
            ..config()
        },
        0,
        1,
        t0
    )
    .is_err());
    assert!(Downloader::new(
        DownloaderConfig {
            limit: 1001,
            ..config()
        },
        0,
        1,
        t0
    )
    .is_err());
    assert!(Downloader::new(DownloaderConfig::default(), 0, 1, t0).is_ok());
}

#[test]
fn the_status_report_names_backlog_cursor_and_errors_in_wall_time() {
    let t0 = Instant::now();
    let mut up = Uploader::new(UploaderConfig::new("br-1", "e", "0.1.0"), 1, t0).unwrap();
    let read = match up.poll_event() {
        Some(crate::agent::UpEvent::NeedRows { read, .. }) => read,
        other => panic!("{other:?}"),
    };
    let rows = super::codec::realistic_cdr_rows("br-1", 1, 3, 1);
    let oldest = rows[0].created_at_ms;
    up.handle(
        t0,
        crate::agent::UpInput::Rows {
            read,
            rows,
            last_seq: 3,
        },
    );
    let mut down = Downloader::new(config(), 42, 1, t0).unwrap();
    let tx = query(&mut down);
    let t1 = t0 + Duration::from_secs(2);
    down.handle(
        t1,
        DownInput::Failed {
            request: tx.request,
            failure: Failure::Transport {
                detail: "connection refused".into(),
            },
        },
    );
    let status = SyncStatus::new(&up, &down);
    let wall_now = oldest + 60_000;
    let report = status.report(t1, wall_now);
    assert_eq!(report.backlog, 3);
    assert_eq!(report.oldest_pending_age_ms, Some(60_000));
    assert!(report.upload_in_flight);
    assert_eq!(report.cursor, 42);
    let error = report.feed_last_error.clone().expect("feed error");
    assert_eq!(error.at_ms, wall_now);
    assert!(
        error.message.contains("connection refused"),
        "{}",
        error.message
    );
    assert!(report.feed_next_attempt_ms.unwrap() >= wall_now);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["backlog"], 3);
    assert_eq!(json["cursor"], 42);
}
