//! Model-based test of the [`Uploader`] against a simulated HQ and an unreliable
//! network.
//!
//! The world: a box outbox that survives crashes (rows with a seq that never repeats,
//! and a trim queue that a crash can lose), HQ holding rows keyed by seq (one box,
//! one epoch) that answers with the highest contiguous seq it holds (the real HQ's
//! rule), and a network that loses, delays, reorders, duplicates and fails requests
//! and responses. Any interleaving of appends, deliveries, losses, partial applies at
//! HQ, timeouts, box crashes and HQ restarts runs, and then the network becomes
//! reliable and the world drains. Checked all along: no row is trimmed before HQ
//! holds it, trims never go backwards within one life of the core, HQ never sees two
//! different rows for one seq, and every batch keeps its bounds. Checked at the end:
//! HQ holds every appended row exactly once, unchanged, and the outbox is empty.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::agent::codec::inflated_len;
use crate::agent::{
    BackoffConfig, Failure, ReadId, RequestId, UpEvent, UpInput, Uploader, UploaderConfig,
};
use crate::wire::{
    FilePolicy, RecordKind, UpAck, UpBatch, UpRecord, MAX_UP_BODY_INFLATED, PROTOCOL_VERSION,
};

#[derive(Debug, Clone)]
enum Op {
    /// The box writes rows of these payload sizes to its outbox.
    Append(Vec<u16>),
    /// A request reaches HQ; HQ applies all of it, or only its first `n` rows.
    DeliverRequest(usize, Option<u8>),
    /// A request is lost without a trace (the core times it out).
    LoseRequest(usize),
    /// A request fails visibly before HQ sees it (refused, reset, 503).
    FailRequest(usize, bool),
    /// HQ applies a request but the answer is lost as a visible failure (reset).
    FailAfterApply(usize),
    /// A response reaches the box.
    DeliverResponse(usize),
    /// A copy of a response reaches the box; the original stays for later.
    DuplicateResponse(usize),
    /// A response is lost.
    LoseResponse(usize),
    /// Time passes.
    Advance(u16),
    /// The driver executes the trims it was told.
    PersistTrims,
    /// The box loses power: the core and unexecuted trims are gone.
    Crash,
    /// HQ restarts: requests in progress fail, its data stays.
    HqRestart,
    /// Someone presses "sync now".
    Force,
    /// The driver answers one of the outbox reads it holds (with deferred reads),
    /// from the outbox as it is now.
    AnswerRead(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u16..700, 1..5).prop_map(Op::Append),
        4 => (any::<usize>(), prop::option::weighted(0.2, 0u8..4)).prop_map(|(i, p)| Op::DeliverRequest(i, p)),
        1 => any::<usize>().prop_map(Op::LoseRequest),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::FailRequest(i, b)),
        1 => any::<usize>().prop_map(Op::FailAfterApply),
        4 => any::<usize>().prop_map(Op::DeliverResponse),
        1 => any::<usize>().prop_map(Op::DuplicateResponse),
        1 => any::<usize>().prop_map(Op::LoseResponse),
        3 => (1u16..3000).prop_map(Op::Advance),
        2 => Just(Op::PersistTrims),
        1 => Just(Op::Crash),
        1 => Just(Op::HqRestart),
        1 => Just(Op::Force),
        3 => any::<usize>().prop_map(Op::AnswerRead),
    ]
}

#[derive(Debug, Clone)]
enum Answer {
    Ack(UpAck),
    Fail(Failure),
}

struct World {
    config: UploaderConfig,
    now: Instant,
    core: Uploader,
    /// Which life of the core; answers to an earlier life go nowhere.
    life: u64,
    /// The box's outbox (persistent).
    outbox: Vec<UpRecord>,
    next_seq: i64,
    /// Trims the driver was told but has not executed (lost on a crash).
    trims: Vec<i64>,
    /// Highest trim of this life of the core.
    last_trim: i64,
    /// Every row ever appended.
    appended: BTreeMap<i64, UpRecord>,
    /// What HQ holds, by seq.
    hq: HashMap<i64, UpRecord>,
    requests: Vec<(u64, RequestId, UpBatch)>,
    responses: Vec<(u64, RequestId, Answer)>,
    /// Whether the driver answers outbox reads later ([`Op::AnswerRead`]) rather
    /// than at once, so reads overlap requests, answers and trims.
    defer_reads: bool,
    /// Reads asked and not answered yet: life, read, after_seq, max.
    reads: Vec<(u64, ReadId, i64, usize)>,
}

impl World {
    fn new(config: UploaderConfig) -> Self {
        Self::with_reads(config, false)
    }

    fn with_reads(config: UploaderConfig, defer_reads: bool) -> Self {
        let now = Instant::now();
        let core = Uploader::new(config.clone(), 0, now).unwrap();
        let mut world = Self {
            config,
            now,
            core,
            life: 0,
            outbox: Vec::new(),
            next_seq: 1,
            trims: Vec::new(),
            last_trim: 0,
            appended: BTreeMap::new(),
            hq: HashMap::new(),
            requests: Vec::new(),
            responses: Vec::new(),
            defer_reads,
            reads: Vec::new(),
        };
        world.pump();
        world
    }

    /// HQ's highest seq such that it holds every seq from 1 to it.
    fn contiguous(&self) -> i64 {
        let mut n = 0;
        while self.hq.contains_key(&(n + 1)) {
            n += 1;
        }
        n
    }

    /// HQ handles a batch: checks it whole, upserts by seq (the first `prefix` rows
    /// only, if given) and answers its contiguous seq.
    fn hq_apply(&mut self, batch: &UpBatch, prefix: Option<usize>) -> UpAck {
        assert_eq!(batch.version, PROTOCOL_VERSION);
        assert!(
            batch.records.windows(2).all(|w| w[0].seq < w[1].seq),
            "batch out of order"
        );
        let take = prefix.unwrap_or(usize::MAX);
        for record in batch.records.iter().take(take) {
            if let Some(held) = self.hq.get(&record.seq) {
                assert_eq!(held, record, "two different rows for seq {}", record.seq);
            }
            self.hq.insert(record.seq, record.clone());
        }
        UpAck {
            version: PROTOCOL_VERSION,
            acked_seq: self.contiguous(),
            conflicts: Vec::new(),
            file_policy: FilePolicy::None,
        }
    }

    /// Runs the driver: answers reads, queues trims and batches, checks invariants.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.core.poll_event() {
                progressed = true;
                match event {
                    UpEvent::NeedRows {
                        read,
                        after_seq,
                        max,
                    } => {
                        assert!(
                            self.reads.iter().all(|r| r.0 != self.life),
                            "a second read while one is outstanding"
                        );
                        if self.defer_reads {
                            self.reads.push((self.life, read, after_seq, max));
                        } else {
                            self.answer_read(read, after_seq, max);
                        }
                    }
                    UpEvent::Trim { up_to_seq } => {
                        assert!(
                            up_to_seq > self.last_trim,
                            "trim to {up_to_seq} after {}",
                            self.last_trim
                        );
                        self.last_trim = up_to_seq;
                        for seq in 1..=up_to_seq {
                            assert!(
                                self.hq.contains_key(&seq) || !self.appended.contains_key(&seq),
                                "trim to {up_to_seq} before HQ holds seq {seq}"
                            );
                        }
                        self.trims.push(up_to_seq);
                    }
                    UpEvent::Error(_) | UpEvent::Delivered { .. } | UpEvent::FilePolicy(_) => {}
                    UpEvent::Conflict(c) => panic!("no offline edits in this model, got {c:?}"),
                }
            }
            while let Some(tx) = self.core.poll_transmit() {
                progressed = true;
                let batch = tx.batch;
                assert!(batch.records.len() <= self.config.max_records);
                let len = inflated_len(&batch);
                assert!(
                    len <= self.config.max_batch_bytes
                        || (batch.records.len() == 1 && len <= MAX_UP_BODY_INFLATED),
                    "batch of {} rows is {len} bytes",
                    batch.records.len()
                );
                for record in &batch.records {
                    assert_eq!(
                        self.appended.get(&record.seq),
                        Some(record),
                        "sent a row never appended"
                    );
                }
                self.requests.push((self.life, tx.request, batch));
            }
            if !progressed {
                break;
            }
        }
    }

    fn answer_read(&mut self, read: ReadId, after_seq: i64, max: usize) {
        let rows = self
            .outbox
            .iter()
            .filter(|r| r.seq > after_seq)
            .take(max)
            .cloned()
            .collect();
        let last_seq = self.outbox.last().map_or(0, |r| r.seq);
        self.core.handle(
            self.now,
            UpInput::Rows {
                read,
                rows,
                last_seq,
            },
        );
    }

    /// Answers the `i`th held read (one of an earlier life goes nowhere).
    fn answer_held_read(&mut self, i: usize) {
        if self.reads.is_empty() {
            return;
        }
        let (life, read, after_seq, max) = self.reads.remove(i % self.reads.len());
        if life == self.life {
            self.answer_read(read, after_seq, max);
        }
    }

    fn persist_trims(&mut self) {
        for up_to in std::mem::take(&mut self.trims) {
            self.outbox.retain(|r| r.seq > up_to);
        }
    }

    fn answer(&mut self, life: u64, request: RequestId, answer: Answer) {
        if life != self.life {
            return; // the process that asked is gone
        }
        let input = match answer {
            Answer::Ack(ack) => UpInput::Acked { request, ack },
            Answer::Fail(failure) => UpInput::Failed { request, failure },
        };
        self.core.handle(self.now, input);
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Append(sizes) => {
                for size in sizes {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let record = UpRecord {
                        seq,
                        kind: RecordKind::Cdr,
                        key: format!("c-br-1-{seq}"),
                        created_at_ms: 1_785_000_000_000 + seq * 1000,
                        payload: serde_json::json!({ "call_id": format!("c-br-1-{seq}"), "pad": "x".repeat(usize::from(size)) }),
                    };
                    self.appended.insert(seq, record.clone());
                    self.outbox.push(record);
                }
                let last_seq = self.next_seq - 1;
                self.core.handle(self.now, UpInput::Appended { last_seq });
            }
            Op::DeliverRequest(i, prefix) => {
                if !self.requests.is_empty() {
                    let (life, request, batch) = self.requests.remove(i % self.requests.len());
                    let ack = self.hq_apply(&batch, prefix.map(usize::from));
                    self.responses.push((life, request, Answer::Ack(ack)));
                }
            }
            Op::LoseRequest(i) => {
                if !self.requests.is_empty() {
                    self.requests.remove(i % self.requests.len());
                }
            }
            Op::FailRequest(i, reset) => {
                if !self.requests.is_empty() {
                    let (life, request, _) = self.requests.remove(i % self.requests.len());
                    let failure = if reset {
                        Failure::Transport {
                            detail: "connection reset".into(),
                        }
                    } else {
                        Failure::Status {
                            status: 503,
                            body: None,
                        }
                    };
                    self.answer(life, request, Answer::Fail(failure));
                }
            }
            Op::FailAfterApply(i) => {
                if !self.requests.is_empty() {
                    let (life, request, batch) = self.requests.remove(i % self.requests.len());
                    self.hq_apply(&batch, None);
                    let failure = Failure::Transport {
                        detail: "connection reset".into(),
                    };
                    self.answer(life, request, Answer::Fail(failure));
                }
            }
            Op::DeliverResponse(i) => {
                if !self.responses.is_empty() {
                    let (life, request, answer) = self.responses.remove(i % self.responses.len());
                    self.answer(life, request, answer);
                }
            }
            Op::DuplicateResponse(i) => {
                if !self.responses.is_empty() {
                    let (life, request, answer) = self.responses[i % self.responses.len()].clone();
                    self.answer(life, request, answer);
                }
            }
            Op::LoseResponse(i) => {
                if !self.responses.is_empty() {
                    self.responses.remove(i % self.responses.len());
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.core.handle_timeout(self.now);
            }
            Op::PersistTrims => self.persist_trims(),
            Op::Crash => {
                self.trims.clear();
                self.reads.clear();
                self.life += 1;
                self.last_trim = 0;
                self.core = Uploader::new(self.config.clone(), self.life, self.now).unwrap();
            }
            Op::HqRestart => {
                for (life, request, _) in std::mem::take(&mut self.requests) {
                    let failure = Failure::Transport {
                        detail: "connection reset by HQ restart".into(),
                    };
                    self.answer(life, request, Answer::Fail(failure));
                }
            }
            Op::Force => self.core.handle(self.now, UpInput::Force),
            Op::AnswerRead(i) => self.answer_held_read(i),
        }
        self.pump();
    }

    /// With a reliable network, runs until the outbox is empty; returns the steps.
    fn drain(&mut self) -> usize {
        for steps in 0..100_000 {
            self.persist_trims();
            let done =
                self.outbox.is_empty() && self.appended.keys().all(|seq| self.hq.contains_key(seq));
            if done {
                return steps;
            }
            if !self.reads.is_empty() {
                self.answer_held_read(0);
            } else if !self.requests.is_empty() {
                let (life, request, batch) = self.requests.remove(0);
                let ack = self.hq_apply(&batch, None);
                self.responses.push((life, request, Answer::Ack(ack)));
            } else if !self.responses.is_empty() {
                let (life, request, answer) = self.responses.remove(0);
                self.answer(life, request, answer);
            } else {
                let at = self
                    .core
                    .timeout()
                    .expect("the core must have something to wait for while rows are pending");
                assert!(at >= self.now, "timeout in the past");
                self.now = at;
                self.core.handle_timeout(at);
            }
            self.pump();
        }
        panic!(
            "did not drain: outbox {:?}, hq contiguous {}",
            self.outbox.iter().map(|r| r.seq).collect::<Vec<_>>(),
            self.contiguous()
        );
    }
}

fn config(max_records: usize, max_batch_bytes: usize) -> UploaderConfig {
    let mut config = UploaderConfig::new("br-1", "epoch-1", "0.1.0");
    config.max_records = max_records;
    config.max_batch_bytes = max_batch_bytes;
    config.request_timeout = Duration::from_secs(2);
    config.poll_interval = Duration::from_millis(300);
    config.heartbeat_interval = Duration::from_secs(5);
    config.backoff = BackoffConfig {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(800),
    };
    config
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hq_ends_with_every_row_exactly_once(
        max_records in 1usize..6,
        max_batch_bytes in 1024usize..4096,
        read_ahead in any::<bool>(),
        defer_reads in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut cfg = config(max_records, max_batch_bytes);
        cfg.read_ahead = read_ahead;
        let mut world = World::with_reads(cfg, defer_reads);
        for op in ops {
            world.step(op);
        }
        world.drain();
        prop_assert!(world.outbox.is_empty());
        prop_assert_eq!(world.hq.len(), world.appended.len());
        for (seq, record) in &world.appended {
            prop_assert_eq!(world.hq.get(seq), Some(record));
        }
    }
}

/// One interleaving spelled out: a batch reaches HQ but its answer is delayed, the
/// core times it out and sends it again, HQ applies the retry only partly, and the
/// answers arrive newest first and then duplicated.
#[test]
fn reordered_acks_never_trim_early() {
    let mut world = World::new(config(2, 4096));
    world.step(Op::Append(vec![10; 6]));
    // Batch 1..=2 reaches HQ; its ack is held back.
    world.step(Op::DeliverRequest(0, None));
    // Batch 1..=2 times out and is sent again, reaches HQ only partly.
    world.step(Op::Advance(2500));
    world.step(Op::Advance(1000));
    world.step(Op::DeliverRequest(0, Some(1)));
    // Both answers arrive, newest first, then duplicated.
    world.step(Op::DeliverResponse(1));
    world.step(Op::DuplicateResponse(0));
    world.step(Op::DeliverResponse(0));
    world.step(Op::PersistTrims);
    world.drain();
    assert!(world.outbox.is_empty());
    assert_eq!(world.hq.len(), 6);
}

/// The first case the model found (kept as a plain test): a batch is acknowledged,
/// the box crashes before executing the trim, and the next batch of the old life
/// still reaches HQ. The restarted core sends row 1 again and HQ acknowledges 2, a
/// row this life never sent: that must trim row 1 only, not stall as an error.
#[test]
fn crash_with_a_lost_trim_and_an_orphaned_request() {
    let mut world = World::new(config(1, 1024));
    for op in [
        Op::HqRestart,
        Op::Append(vec![0, 0]),
        Op::Advance(4),
        Op::DeliverRequest(0, None),
        Op::DeliverResponse(0),
        Op::Crash,
        Op::Append(vec![0]),
    ] {
        world.step(op);
    }
    world.drain();
    assert!(world.outbox.is_empty());
    assert_eq!(world.hq.len(), 3);
}
