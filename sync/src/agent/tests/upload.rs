//! Unit tests of the [`Uploader`] on a virtual clock.

use std::time::{Duration, Instant};

use super::codec::realistic_cdr_rows;
use crate::agent::codec::inflated_len;
use crate::agent::{
    AgentError, BackoffConfig, Failure, ReadId, RequestId, UpEvent, UpInput, UpTransmit, Uploader,
    UploaderConfig,
};
use crate::wire::{
    Conflict, EntityKind, ErrorBody, ErrorCode, FilePolicy, RecordKind, UpAck, UpRecord,
    MAX_UP_BODY_INFLATED, PROTOCOL_VERSION,
};

fn config() -> UploaderConfig {
    let mut config = UploaderConfig::new("br-0042", "epoch-1", "0.1.0");
    config.backoff = BackoffConfig {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
    };
    config
}

fn rows(first: i64, n: usize) -> Vec<UpRecord> {
    realistic_cdr_rows("br-0042", first, n, first as u64)
}

fn ack(acked_seq: i64) -> UpAck {
    UpAck {
        version: PROTOCOL_VERSION,
        acked_seq,
        conflicts: Vec::new(),
        file_policy: FilePolicy::All,
    }
}

fn events(up: &mut Uploader) -> Vec<UpEvent> {
    std::iter::from_fn(|| up.poll_event()).collect()
}

/// The one NeedRows among the events.
fn need_rows(events: &[UpEvent]) -> (ReadId, i64, usize) {
    let reads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            UpEvent::NeedRows {
                read,
                after_seq,
                max,
            } => Some((*read, *after_seq, *max)),
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 1, "{events:?}");
    reads[0]
}

fn errors(events: &[UpEvent]) -> Vec<AgentError> {
    events
        .iter()
        .filter_map(|e| match e {
            UpEvent::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn trims(events: &[UpEvent]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            UpEvent::Trim { up_to_seq } => Some(*up_to_seq),
            _ => None,
        })
        .collect()
}

fn seqs(t: &UpTransmit) -> Vec<i64> {
    t.batch.records.iter().map(|r| r.seq).collect()
}

/// Answers the pending read from `outbox`.
fn supply(up: &mut Uploader, now: Instant, outbox: &[UpRecord]) -> Vec<UpEvent> {
    let (read, after_seq, max) = need_rows(&events(up));
    let rows: Vec<UpRecord> = outbox
        .iter()
        .filter(|r| r.seq > after_seq)
        .take(max)
        .cloned()
        .collect();
    let last_seq = outbox.last().map_or(0, |r| r.seq);
    up.handle(
        now,
        UpInput::Rows {
            read,
            rows,
            last_seq,
        },
    );
    events(up)
}

/// A driver that answers reads from an outbox and applies trims, keeping every other
/// event for the test.
struct Driver {
    up: Uploader,
    outbox: Vec<UpRecord>,
    events: Vec<UpEvent>,
}

impl Driver {
    fn new(config: UploaderConfig, outbox: Vec<UpRecord>, now: Instant) -> Self {
        Self {
            up: Uploader::new(config, 1, now).unwrap(),
            outbox,
            events: Vec::new(),
        }
    }

    /// Handles events (answering reads) until the core wants nothing; returns the
    /// batch it sends, if any.
    fn pump(&mut self, now: Instant) -> Option<UpTransmit> {
        while let Some(event) = self.up.poll_event() {
            match event {
                UpEvent::NeedRows {
                    read,
                    after_seq,
                    max,
                } => {
                    let rows = self
                        .outbox
                        .iter()
                        .filter(|r| r.seq > after_seq)
                        .take(max)
                        .cloned()
                        .collect();
                    let last_seq = self.outbox.last().map_or(0, |r| r.seq);
                    self.up.handle(
                        now,
                        UpInput::Rows {
                            read,
                            rows,
                            last_seq,
                        },
                    );
                }
                UpEvent::Trim { up_to_seq } => {
                    self.outbox.retain(|r| r.seq > up_to_seq);
                    self.events.push(event);
                }
                other => self.events.push(other),
            }
        }
        self.up.poll_transmit()
    }

    /// Advances to the core's next timeout and pumps.
    fn wait(&mut self) -> (Instant, Option<UpTransmit>) {
        let at = self.up.timeout().expect("a timeout");
        self.up.handle_timeout(at);
        (at, self.pump(at))
    }

    fn input(&mut self, now: Instant, input: UpInput) -> Option<UpTransmit> {
        self.up.handle(now, input);
        self.pump(now)
    }

    fn take_events(&mut self) -> Vec<UpEvent> {
        std::mem::take(&mut self.events)
    }
}

#[test]
fn reads_sends_trims_and_reads_on() {
    let t0 = Instant::now();
    let outbox = rows(1, 5);
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    assert!(up.poll_transmit().is_none());
    let (_, after_seq, max) = need_rows(&events(&mut up));
    assert_eq!((after_seq, max), (0, 2000));
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &outbox);
    let tx = up.poll_transmit().expect("a batch");
    assert!(up.poll_transmit().is_none(), "one batch in flight");
    assert_eq!(seqs(&tx), [1, 2, 3, 4, 5]);
    assert_eq!(tx.batch.box_id, "br-0042");
    assert_eq!(tx.batch.epoch, "epoch-1");
    assert_eq!(tx.batch.backlog, 0);
    assert_eq!(tx.batch.oldest_pending_ms, Some(outbox[0].created_at_ms));
    assert_eq!(tx.deadline, t0 + Duration::from_secs(30));
    assert_eq!(up.status().backlog, 5);
    assert_eq!(up.timeout(), Some(tx.deadline));

    let t1 = t0 + Duration::from_millis(80);
    up.handle(
        t1,
        UpInput::Acked {
            request: tx.request,
            ack: ack(5),
        },
    );
    let ev = events(&mut up);
    assert_eq!(trims(&ev), [5]);
    assert!(ev.contains(&UpEvent::FilePolicy(FilePolicy::All)));
    assert!(ev.contains(&UpEvent::Delivered {
        request: tx.request,
        rows: 5,
        acked_seq: 5
    }));
    let status = up.status();
    assert_eq!(
        (status.acked_seq, status.backlog, status.last_success),
        (5, 0, Some(t1))
    );
    // The store said it had no more: the core waits for Appended or the poll interval.
    assert!(up.poll_transmit().is_none());
    assert_eq!(up.timeout(), Some(t0 + Duration::from_secs(5)));
    up.handle(t1, UpInput::Appended { last_seq: 7 });
    let (_, after_seq, _) = need_rows(&events(&mut up));
    assert_eq!(after_seq, 5);
}

#[test]
fn batches_are_bounded_by_count() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_records = 3;
    let outbox = rows(1, 7);
    let mut up = Uploader::new(cfg, 1, t0).unwrap();
    let mut sent = Vec::new();
    for _ in 0..10 {
        if let Some(tx) = up.poll_transmit() {
            sent.push(seqs(&tx));
            let last = *seqs(&tx).last().unwrap();
            up.handle(
                t0,
                UpInput::Acked {
                    request: tx.request,
                    ack: ack(last),
                },
            );
            continue;
        }
        let ev = events(&mut up);
        if ev.iter().any(|e| matches!(e, UpEvent::NeedRows { .. })) {
            let (read, after_seq, max) = need_rows(&ev);
            assert!(max <= 3);
            let rows: Vec<_> = outbox
                .iter()
                .filter(|r| r.seq > after_seq)
                .take(max)
                .cloned()
                .collect();
            up.handle(
                t0,
                UpInput::Rows {
                    read,
                    rows,
                    last_seq: 7,
                },
            );
        }
    }
    assert_eq!(sent, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
}

#[test]
fn batches_are_bounded_by_bytes_and_a_big_row_goes_alone() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_batch_bytes = 4096;
    let mut outbox = rows(1, 40);
    // Row 20 alone is larger than the byte budget.
    outbox[19].payload = serde_json::json!({ "blob": "x".repeat(10_000) });
    let mut up = Uploader::new(cfg, 1, t0).unwrap();
    let mut batches = Vec::new();
    let mut acked = 0;
    while acked < 40 {
        let ev = events(&mut up);
        if let Some(tx) = up.poll_transmit() {
            let len = inflated_len(&tx.batch);
            batches.push((seqs(&tx), len));
            acked = *seqs(&tx).last().unwrap();
            up.handle(
                t0,
                UpInput::Acked {
                    request: tx.request,
                    ack: ack(acked),
                },
            );
        } else {
            let (read, after_seq, max) = need_rows(&ev);
            let rows: Vec<_> = outbox
                .iter()
                .filter(|r| r.seq > after_seq)
                .take(max)
                .cloned()
                .collect();
            up.handle(
                t0,
                UpInput::Rows {
                    read,
                    rows,
                    last_seq: 40,
                },
            );
        }
    }
    let all: Vec<i64> = batches.iter().flat_map(|(s, _)| s.clone()).collect();
    assert_eq!(
        all,
        (1..=40).collect::<Vec<_>>(),
        "every row once, in order"
    );
    for (s, len) in &batches {
        if s.contains(&20) {
            assert_eq!(s, &[20], "the big row goes alone");
            assert!(*len > 4096 && *len <= MAX_UP_BODY_INFLATED);
        } else {
            assert!(*len <= 4096, "batch {s:?} is {len} bytes");
        }
    }
    assert!(batches.len() > 4, "{batches:?}");
}

#[test]
fn a_row_too_large_for_any_batch_stops_uploads_until_rewind() {
    let t0 = Instant::now();
    let mut outbox = rows(1, 3);
    outbox[1].payload = serde_json::json!({ "blob": "x".repeat(MAX_UP_BODY_INFLATED) });
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &outbox);
    let tx = up.poll_transmit().unwrap();
    assert_eq!(seqs(&tx), [1], "the rows before it still go");
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(1),
        },
    );
    let ev = events(&mut up);
    let errs = errors(&ev);
    assert!(
        matches!(errs.as_slice(), [AgentError::RowTooLarge { seq: 2, limit, .. }] if *limit == MAX_UP_BODY_INFLATED),
        "{ev:?}"
    );
    assert!(up.poll_transmit().is_none());
    assert_eq!(up.status().stalled_at, Some(2));
    assert_eq!(up.timeout(), None, "no retry loop");
    up.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(events(&mut up).is_empty() && up.poll_transmit().is_none());

    // The driver quarantines row 2 (puts a small row of the same seq in its place).
    outbox[1].payload = serde_json::json!({ "quarantined": true });
    up.handle(t0, UpInput::Rewind);
    let ev = supply(&mut up, t0, &outbox);
    assert!(errors(&ev).is_empty());
    assert_eq!(seqs(&up.poll_transmit().unwrap()), [2, 3]);
    assert_eq!(up.status().stalled_at, None);
}

#[test]
fn an_ack_above_what_was_sent_trims_nothing() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(1, 3));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(4),
        },
    );
    let ev = events(&mut up);
    assert!(trims(&ev).is_empty());
    assert_eq!(
        errors(&ev),
        [AgentError::AckBeyondSent {
            acked_seq: 4,
            sent_up_to: 3
        }]
    );
    assert_eq!(up.status().acked_seq, 0);
    // Backs off, then sends the same rows again.
    let retry = up.status().next_attempt.expect("backing off");
    assert!(retry <= t0 + Duration::from_millis(100));
    up.handle_timeout(retry);
    assert_eq!(seqs(&up.poll_transmit().unwrap()), [1, 2, 3]);
}

#[test]
fn a_lower_ack_trims_that_far_and_the_rest_goes_again_at_once() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(1, 6));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(4),
        },
    );
    assert_eq!(trims(&events(&mut up)), [4]);
    assert_eq!(seqs(&up.poll_transmit().expect("at once")), [5, 6]);
}

#[test]
fn an_ack_without_progress_backs_off_instead_of_spinning() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(1, 3));
    let mut now = t0;
    for round in 0..5u32 {
        let tx = up.poll_transmit().expect("retry");
        assert_eq!(seqs(&tx), [1, 2, 3]);
        up.handle(
            now,
            UpInput::Acked {
                request: tx.request,
                ack: ack(0),
            },
        );
        let ev = events(&mut up);
        assert_eq!(
            errors(&ev),
            [AgentError::NoProgress {
                acked_seq: 0,
                first_seq: 1,
                last_seq: 3
            }]
        );
        assert!(up.poll_transmit().is_none());
        assert_eq!(up.status().consecutive_failures, round + 1);
        now = up.timeout().unwrap();
        up.handle_timeout(now);
    }
}

#[test]
fn transport_failures_back_off_exponentially_and_success_resets() {
    let t0 = Instant::now();
    let mut d = Driver::new(config(), rows(1, 2), t0);
    let mut tx = d.pump(t0).expect("first attempt");
    let mut now = t0;
    let mut waits = Vec::new();
    for n in 0..8u32 {
        let failure = match n % 3 {
            0 => Failure::Transport {
                detail: "connection refused".into(),
            },
            1 => Failure::Status {
                status: 503,
                body: None,
            },
            _ => Failure::Status {
                status: 400,
                body: Some(ErrorBody {
                    code: ErrorCode::Unavailable,
                    message: "db down".into(),
                }),
            },
        };
        assert!(d
            .input(
                now,
                UpInput::Failed {
                    request: tx.request,
                    failure
                }
            )
            .is_none());
        assert_eq!(errors(&d.take_events()).len(), 1);
        let (at, next) = d.wait();
        let ceiling = (Duration::from_millis(100) * 2u32.pow(n)).min(Duration::from_secs(10));
        assert!(
            at - now <= ceiling,
            "wait {n}: {:?} > {ceiling:?}",
            at - now
        );
        assert_eq!(d.up.status().consecutive_failures, n + 1);
        waits.push(at - now);
        now = at;
        tx = next.expect("retry when the wait ends");
        assert_eq!(seqs(&tx), [1, 2]);
    }
    assert!(
        waits.iter().any(|w| *w > Duration::from_millis(400)),
        "{waits:?}"
    );
    d.input(
        now,
        UpInput::Acked {
            request: tx.request,
            ack: ack(2),
        },
    );
    assert_eq!(d.up.status().consecutive_failures, 0);
    assert_eq!(d.up.status().next_attempt, None);
}

#[test]
fn a_timed_out_request_is_retried_and_its_late_ack_still_trims() {
    let t0 = Instant::now();
    let mut d = Driver::new(config(), rows(1, 4), t0);
    let first = d.pump(t0).unwrap();
    let (at, none) = d.wait();
    assert_eq!(at, first.deadline);
    assert!(none.is_none());
    assert!(matches!(
        errors(&d.take_events()).as_slice(),
        [AgentError::Timeout { after, .. }] if *after == Duration::from_secs(30)
    ));
    let (now, second) = d.wait();
    let second = second.expect("retried");
    assert_eq!(seqs(&second), [1, 2, 3, 4]);
    // The first request's answer arrives late: it is still true.
    d.input(
        now,
        UpInput::Acked {
            request: first.request,
            ack: ack(4),
        },
    );
    assert_eq!(trims(&d.take_events()), [4]);
    assert_eq!(d.up.status().acked_seq, 4);
    // A late failure of the old request changes nothing; the second's ack is a duplicate.
    d.input(
        now,
        UpInput::Failed {
            request: first.request,
            failure: Failure::Timeout,
        },
    );
    assert!(d.take_events().is_empty());
    d.input(
        now,
        UpInput::Acked {
            request: second.request,
            ack: ack(4),
        },
    );
    let ev = d.take_events();
    assert!(
        trims(&ev).is_empty(),
        "never trims twice or backwards: {ev:?}"
    );
    assert!(errors(&ev).is_empty());
}

#[test]
fn a_refused_batch_is_halved_down_to_the_bad_row_which_waits_at_the_cap() {
    let t0 = Instant::now();
    let mut d = Driver::new(config(), rows(1, 8), t0);
    let bad = 3;
    let malformed = || Failure::Status {
        status: 400,
        body: Some(ErrorBody {
            code: ErrorCode::MalformedBatch,
            message: "record 3: bad payload".into(),
        }),
    };
    let mut now = t0;
    let mut tx = d.pump(t0);
    let mut sent = Vec::new();
    let mut waits = Vec::new();
    while sent.len() < 9 {
        let Some(t) = tx else {
            let (at, next) = d.wait();
            waits.push((sent.len(), at - now));
            now = at;
            tx = next;
            continue;
        };
        let s = seqs(&t);
        sent.push(s.clone());
        tx = if s.contains(&bad) {
            let next = d.input(
                now,
                UpInput::Failed {
                    request: t.request,
                    failure: malformed(),
                },
            );
            let errs = errors(&d.take_events());
            assert!(
                matches!(
                    errs.as_slice(),
                    [AgentError::Refused {
                        status: 400,
                        seqs: Some(_),
                        ..
                    }]
                ),
                "{errs:?}"
            );
            next
        } else {
            d.input(
                now,
                UpInput::Acked {
                    request: t.request,
                    ack: ack(*s.last().unwrap()),
                },
            )
        };
    }
    let expected: Vec<Vec<i64>> = vec![
        (1..=8).collect(),
        (1..=4).collect(),
        vec![1, 2],
        (3..=8).collect(),
        vec![3, 4, 5],
        vec![3],
        vec![3],
        vec![3],
        vec![3],
    ];
    assert_eq!(sent, expected);
    // The good rows before the bad one went through; the bad row stays in the outbox:
    // the box never drops it on its own.
    assert_eq!(d.up.status().acked_seq, 2);
    assert_eq!(d.outbox.first().map(|r| r.seq), Some(3));
    // A refused single row waits at the cap.
    for (after, wait) in waits.iter().filter(|(after, _)| *after >= 6) {
        assert!(
            *wait >= Duration::from_secs(5) && *wait <= Duration::from_secs(10),
            "after {after}: {wait:?}"
        );
    }
    // The first success restores the full batch size.
    d.outbox[0].payload = serde_json::json!({ "fixed": true });
    let _ = d.input(now, UpInput::Rewind);
    let (at, t) = d.wait();
    let t = t.unwrap();
    assert_eq!(seqs(&t), [3]);
    let t = d
        .input(
            at,
            UpInput::Acked {
                request: t.request,
                ack: ack(3),
            },
        )
        .expect("the rest at once");
    assert_eq!(seqs(&t), [4, 5, 6, 7, 8]);
}

#[test]
fn a_refusal_not_about_the_batch_waits_at_the_cap() {
    let t0 = Instant::now();
    let mut d = Driver::new(config(), rows(1, 8), t0);
    let tx = d.pump(t0).unwrap();
    let failure = Failure::Status {
        status: 403,
        body: Some(ErrorBody {
            code: ErrorCode::UnknownBox,
            message: "no box br-0042".into(),
        }),
    };
    d.input(
        t0,
        UpInput::Failed {
            request: tx.request,
            failure,
        },
    );
    let (at, tx) = d.wait();
    let wait = at - t0;
    assert!(
        wait >= Duration::from_secs(5) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    assert_eq!(tx.unwrap().batch.records.len(), 8, "not halved");
}

fn conflict(seq: i64) -> Conflict {
    Conflict {
        seq,
        entity: EntityKind::User,
        key: "alice".into(),
        base_revision: 3,
        current: None,
        reason: "deleted at HQ".into(),
    }
}

#[test]
fn conflicts_come_before_the_trim_once_each() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    let mut outbox = rows(1, 4);
    outbox[1].kind = RecordKind::UserChange;
    supply(&mut up, t0, &outbox);
    let tx = up.poll_transmit().unwrap();
    let mut a = ack(4);
    a.conflicts = vec![conflict(2), conflict(9)];
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: a.clone(),
        },
    );
    let ev = events(&mut up);
    let conflict_at = ev
        .iter()
        .position(|e| matches!(e, UpEvent::Conflict(c) if c.seq == 2))
        .expect("conflict");
    let trim_at = ev
        .iter()
        .position(|e| matches!(e, UpEvent::Trim { up_to_seq: 4 }))
        .expect("trim");
    assert!(conflict_at < trim_at);
    assert_eq!(
        errors(&ev),
        [AgentError::ConflictOutsideBatch {
            seq: 9,
            first_seq: 1,
            last_seq: 4
        }]
    );
    // The same ack again (duplicated on the network): no second conflict.
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: a,
        },
    );
    let ev = events(&mut up);
    assert!(
        !ev.iter().any(|e| matches!(e, UpEvent::Conflict(_))),
        "{ev:?}"
    );
}

#[test]
fn file_policy_is_reported_when_it_changes() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(1, 1));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(1),
        },
    );
    assert!(events(&mut up).contains(&UpEvent::FilePolicy(FilePolicy::All)));
    up.handle(t0, UpInput::Appended { last_seq: 2 });
    supply(&mut up, t0, &rows(1, 2));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(2),
        },
    );
    assert!(!events(&mut up)
        .iter()
        .any(|e| matches!(e, UpEvent::FilePolicy(_))));
    up.handle(t0, UpInput::Appended { last_seq: 3 });
    supply(&mut up, t0, &rows(1, 3));
    let tx = up.poll_transmit().unwrap();
    let mut a = ack(3);
    a.file_policy = FilePolicy::OnDemand {
        wanted: vec!["ab".repeat(32)],
    };
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: a.clone(),
        },
    );
    assert!(events(&mut up).contains(&UpEvent::FilePolicy(a.file_policy)));
}

#[test]
fn an_idle_box_sends_heartbeats_and_polls_the_outbox() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &[]);
    // Nothing to send: the first heartbeat goes at once, to be seen by HQ.
    let beat = up.poll_transmit().expect("heartbeat");
    assert!(beat.batch.records.is_empty());
    assert_eq!(
        (beat.batch.backlog, beat.batch.oldest_pending_ms),
        (0, None)
    );
    up.handle(
        t0,
        UpInput::Acked {
            request: beat.request,
            ack: ack(0),
        },
    );
    assert!(errors(&events(&mut up)).is_empty());
    // Next: an outbox poll after 5 s (nothing new), then the next heartbeat at 60 s.
    assert_eq!(up.timeout(), Some(t0 + Duration::from_secs(5)));
    let mut now = t0;
    let mut beats = 0;
    while now < t0 + Duration::from_secs(61) {
        now = up.timeout().unwrap();
        up.handle_timeout(now);
        let ev = events(&mut up);
        if ev.iter().any(|e| matches!(e, UpEvent::NeedRows { .. })) {
            let (read, ..) = need_rows(&ev);
            up.handle(
                now,
                UpInput::Rows {
                    read,
                    rows: Vec::new(),
                    last_seq: 0,
                },
            );
        }
        if let Some(tx) = up.poll_transmit() {
            assert!(tx.batch.records.is_empty());
            assert_eq!(now, t0 + Duration::from_secs(60));
            beats += 1;
            up.handle(
                now,
                UpInput::Acked {
                    request: tx.request,
                    ack: ack(0),
                },
            );
        }
    }
    assert_eq!(beats, 1);
}

#[test]
fn force_cancels_the_backoff() {
    let t0 = Instant::now();
    let mut d = Driver::new(config(), rows(1, 2), t0);
    let mut tx = d.pump(t0).unwrap();
    let mut now = t0;
    for _ in 0..6 {
        d.input(
            now,
            UpInput::Failed {
                request: tx.request,
                failure: Failure::Timeout,
            },
        );
        let (at, next) = d.wait();
        now = at;
        tx = next.unwrap();
    }
    assert!(d
        .input(
            now,
            UpInput::Failed {
                request: tx.request,
                failure: Failure::Timeout
            }
        )
        .is_none());
    assert!(d.up.status().next_attempt.is_some());
    let forced = d.input(now, UpInput::Force).expect("forced");
    assert_eq!(seqs(&forced), [1, 2]);
    assert_eq!(d.up.status().next_attempt, None);
}

#[test]
fn bad_rows_from_the_driver_are_refused() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    let (read, ..) = need_rows(&events(&mut up));
    let mut bad = rows(1, 3);
    bad.swap(0, 1);
    up.handle(
        t0,
        UpInput::Rows {
            read,
            rows: bad,
            last_seq: 3,
        },
    );
    let errs = errors(&events(&mut up));
    assert!(
        matches!(errs.as_slice(), [AgentError::BadRows { after_seq: 0, .. }]),
        "{errs:?}"
    );
    assert!(up.poll_transmit().is_none());
    assert_eq!(up.status().backlog, 0);
    // A stale read id is ignored.
    up.handle(
        t0,
        UpInput::Rows {
            read: ReadId(77),
            rows: rows(1, 3),
            last_seq: 3,
        },
    );
    assert!(events(&mut up).is_empty());
    up.handle_timeout(up.timeout().unwrap());
    let ev = supply(&mut up, t0, &rows(1, 3));
    assert!(errors(&ev).is_empty());
    assert_eq!(seqs(&up.poll_transmit().unwrap()), [1, 2, 3]);
}

#[test]
fn a_restarted_core_starts_from_the_first_row_in_the_outbox() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    // Rows 1..=100 were trimmed in an earlier life.
    supply(&mut up, t0, &rows(101, 5));
    let status = up.status();
    assert_eq!(
        (status.acked_seq, status.last_seq, status.backlog),
        (100, 105, 5)
    );
    let tx = up.poll_transmit().unwrap();
    assert_eq!(seqs(&tx), [101, 102, 103, 104, 105]);
    // HQ already held up to 103 (the crash came after HQ stored them, before the trim).
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(105),
        },
    );
    assert_eq!(trims(&events(&mut up)), [105]);
}

#[test]
fn an_ack_below_what_hq_acknowledged_before_is_reported() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(101, 2));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: ack(50),
        },
    );
    let ev = events(&mut up);
    assert!(trims(&ev).is_empty());
    assert_eq!(
        errors(&ev),
        [AgentError::AckRegressed {
            acked_seq: 50,
            previously: 100
        }]
    );
}

#[test]
fn unknown_and_version_mismatched_answers_change_nothing() {
    let t0 = Instant::now();
    let mut up = Uploader::new(config(), 1, t0).unwrap();
    supply(&mut up, t0, &rows(1, 2));
    let tx = up.poll_transmit().unwrap();
    up.handle(
        t0,
        UpInput::Acked {
            request: RequestId(999),
            ack: ack(2),
        },
    );
    assert!(events(&mut up).is_empty());
    let mut a = ack(2);
    a.version = 2;
    up.handle(
        t0,
        UpInput::Acked {
            request: tx.request,
            ack: a,
        },
    );
    let ev = events(&mut up);
    assert!(trims(&ev).is_empty());
    assert!(matches!(
        errors(&ev).as_slice(),
        [AgentError::VersionMismatch {
            got: 2,
            want: 1,
            ..
        }]
    ));
}

#[test]
fn bad_settings_are_refused() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_records = 0;
    assert!(Uploader::new(cfg, 1, t0).is_err());
    let mut cfg = config();
    cfg.max_records = 2001;
    assert!(Uploader::new(cfg, 1, t0).is_err());
    let mut cfg = config();
    cfg.max_batch_bytes = MAX_UP_BODY_INFLATED + 1;
    assert!(Uploader::new(cfg, 1, t0).is_err());
    let mut cfg = config();
    cfg.box_id.clear();
    assert!(Uploader::new(cfg, 1, t0).is_err());
    let mut cfg = config();
    cfg.backoff.cap = Duration::from_millis(50);
    assert!(Uploader::new(cfg, 1, t0).is_err());
}

#[test]
fn after_a_crash_an_ack_for_rows_an_earlier_life_sent_trims_only_what_this_life_sent() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_records = 2;
    let mut d = Driver::new(cfg, rows(1, 5), t0);
    let tx = d.pump(t0).unwrap();
    assert_eq!(seqs(&tx), [1, 2]);
    // An earlier life had sent 1..=4 before the crash: HQ holds them.
    let next = d
        .input(
            t0,
            UpInput::Acked {
                request: tx.request,
                ack: ack(4),
            },
        )
        .expect("next batch");
    let ev = d.take_events();
    assert!(errors(&ev).is_empty(), "{ev:?}");
    assert_eq!(trims(&ev), [2]);
    assert_eq!(seqs(&next), [3, 4]);
}

#[test]
fn a_payload_above_hqs_per_record_limit_is_reported_not_sent() {
    let t0 = Instant::now();
    let mut outbox = rows(1, 4);
    outbox[2].payload = serde_json::json!({ "blob": "x".repeat(300 * 1024) });
    let mut d = Driver::new(config(), outbox, t0);
    let tx = d.pump(t0).unwrap();
    assert_eq!(seqs(&tx), [1, 2], "the rows before it go");
    assert!(d
        .input(
            t0,
            UpInput::Acked {
                request: tx.request,
                ack: ack(2)
            }
        )
        .is_none());
    let errs = errors(&d.take_events());
    assert!(
        matches!(errs.as_slice(), [AgentError::RowTooLarge { seq: 3, bytes, limit: 262_144 }] if *bytes > 300 * 1024),
        "{errs:?}"
    );
    assert_eq!(d.up.timeout(), None);
}

/// Sends batches through a [`Driver`], acknowledging each whole, and returns their
/// sizes; `fail_at` makes that batch (0-based) fail once in transport first.
fn drain_sizes(cfg: UploaderConfig, outbox: Vec<UpRecord>, fail_at: Option<usize>) -> Vec<usize> {
    let t0 = Instant::now();
    let mut d = Driver::new(cfg, outbox, t0);
    let mut now = t0;
    let mut tx = d.pump(now);
    let mut sizes = Vec::new();
    let mut failed = false;
    while let Some(t) = tx {
        if !failed && fail_at == Some(sizes.len()) {
            failed = true;
            d.input(
                now,
                UpInput::Failed {
                    request: t.request,
                    failure: Failure::Transport {
                        detail: "connection reset".into(),
                    },
                },
            );
            let (at, retry) = d.wait();
            now = at;
            tx = retry;
            continue;
        }
        sizes.push(t.batch.records.len());
        let last = *seqs(&t).last().unwrap();
        tx = d.input(
            now,
            UpInput::Acked {
                request: t.request,
                ack: ack(last),
            },
        );
    }
    assert!(d.outbox.is_empty(), "everything acknowledged and trimmed");
    sizes
}

#[test]
fn a_backlog_grows_the_batch_up_to_its_ceiling_and_a_failure_shrinks_it_back() {
    let mut cfg = config();
    cfg.max_records = 3;
    let mut steady = vec![3; 13];
    steady.push(1);
    assert_eq!(
        drain_sizes(cfg.clone(), rows(1, 40), None),
        steady,
        "without a ceiling the batch never grows"
    );
    cfg.backlog_max_records = Some(10);
    assert_eq!(
        drain_sizes(cfg.clone(), rows(1, 40), None),
        [3, 6, 10, 10, 10, 1]
    );
    // A failed batch returns to max_records, which grows again.
    assert_eq!(
        drain_sizes(cfg.clone(), rows(1, 40), Some(2)),
        [3, 6, 3, 6, 10, 10, 2]
    );
    // The byte bound still holds: rows of ~300 bytes, 1 KiB per batch.
    cfg.max_batch_bytes = 1024;
    let sizes = drain_sizes(cfg.clone(), rows(1, 40), None);
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 40);
}

#[test]
fn a_backlog_ceiling_below_max_records_or_above_the_protocol_is_refused() {
    let mut cfg = config();
    cfg.max_records = 100;
    cfg.backlog_max_records = Some(99);
    assert!(Uploader::new(cfg.clone(), 1, Instant::now()).is_err());
    cfg.backlog_max_records = Some(crate::wire::MAX_BATCH_RECORDS + 1);
    assert!(Uploader::new(cfg.clone(), 1, Instant::now()).is_err());
    cfg.backlog_max_records = Some(100);
    assert!(Uploader::new(cfg, 1, Instant::now()).is_ok());
}

/// With read-ahead, the next batch's rows are read while a batch is in flight, so the
/// next batch goes out the moment HQ answers; still one batch in flight, and the
/// core never holds more than two batches of rows.
#[test]
fn read_ahead_reads_the_next_batch_while_one_is_in_flight() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_records = 3;
    cfg.read_ahead = true;
    let outbox = rows(1, 8);
    let mut up = Uploader::new(cfg, 1, t0).unwrap();
    let ev = supply(&mut up, t0, &outbox);
    let first = up.poll_transmit().expect("a batch");
    assert_eq!(seqs(&first), [1, 2, 3]);
    // In flight: the next three rows are asked for, and nothing else is sent.
    let (read, after_seq, max) = need_rows(&ev);
    assert_eq!((after_seq, max), (3, 3));
    up.handle(
        t0,
        UpInput::Rows {
            read,
            rows: outbox[3..6].to_vec(),
            last_seq: 8,
        },
    );
    let ev = events(&mut up);
    assert!(up.poll_transmit().is_none(), "one batch in flight");
    // Two batches of rows held: no further read until HQ answers.
    assert!(
        !ev.iter().any(|e| matches!(e, UpEvent::NeedRows { .. })),
        "{ev:?}"
    );
    up.handle(
        t0,
        UpInput::Acked {
            request: first.request,
            ack: ack(3),
        },
    );
    // The next batch goes out at once, with no read in between, and the read of the
    // one after it starts.
    let second = up.poll_transmit().expect("the next batch at once");
    assert_eq!(seqs(&second), [4, 5, 6]);
    let ev = events(&mut up);
    assert_eq!(trims(&ev), [3]);
    let (_, after_seq, max) = need_rows(&ev);
    assert_eq!((after_seq, max), (6, 3));
    // The outbox has only two more: the read comes back short, and after the second
    // answer the last batch goes without another read.
    let tail: Vec<UpRecord> = outbox.iter().filter(|r| r.seq > 6).cloned().collect();
    up.handle(
        t0,
        UpInput::Rows {
            read: need_rows(&ev).0,
            rows: tail,
            last_seq: 8,
        },
    );
    assert!(up.poll_transmit().is_none());
    assert!(events(&mut up).is_empty());
    up.handle(
        t0,
        UpInput::Acked {
            request: second.request,
            ack: ack(6),
        },
    );
    let third = up.poll_transmit().expect("the last batch");
    assert_eq!(seqs(&third), [7, 8]);
    let ev = events(&mut up);
    assert_eq!(trims(&ev), [6]);
    assert!(!ev.iter().any(|e| matches!(e, UpEvent::NeedRows { .. })));
}

/// A batch that fails while its successor's rows are being read: the read's rows
/// are kept, the failed batch is sent again from its first row after the backoff.
#[test]
fn read_ahead_survives_a_failure_in_flight() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_records = 2;
    cfg.read_ahead = true;
    let outbox = rows(1, 4);
    let mut up = Uploader::new(cfg, 1, t0).unwrap();
    let ev = supply(&mut up, t0, &outbox);
    let first = up.poll_transmit().expect("a batch");
    let (read, after_seq, max) = need_rows(&ev);
    assert_eq!((after_seq, max), (2, 2));
    up.handle(
        t0,
        UpInput::Failed {
            request: first.request,
            failure: Failure::Timeout,
        },
    );
    assert!(!errors(&events(&mut up)).is_empty());
    up.handle(
        t0,
        UpInput::Rows {
            read,
            rows: outbox[2..].to_vec(),
            last_seq: 4,
        },
    );
    assert!(up.poll_transmit().is_none(), "backing off");
    let at = up.timeout().expect("a retry");
    up.handle_timeout(at);
    let again = up.poll_transmit().expect("the retry");
    assert_eq!(seqs(&again), [1, 2]);
    up.handle(
        at,
        UpInput::Acked {
            request: again.request,
            ack: ack(2),
        },
    );
    let next = up.poll_transmit().expect("the read-ahead rows go next");
    assert_eq!(seqs(&next), [3, 4]);
}
