//! Model-based test of the [`Downloader`] against a simulated HQ feed.
//!
//! HQ: a site's live rows and a feed of changes with increasing (gapped) revisions,
//! pruned from the front; a query answers a page after `since`, or a snapshot when
//! `since` is 0 or older than the oldest change kept (the real HQ's rule). The box:
//! a store of rows and the cursor, written together in one transaction by the driver.
//! Any interleaving of HQ edits and prunes, lost/duplicated/failed queries and
//! answers, failed applies and crashes before or after the commit runs; then the
//! network becomes reliable and the world drains. Checked: the stored cursor never
//! goes back, and at the end the box holds exactly HQ's live rows at HQ's head.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::agent::{
    BackoffConfig, DownEvent, DownInput, Downloader, DownloaderConfig, Failure, FeedUpdate,
    RequestId,
};
use crate::wire::{Change, DownQuery, DownResponse, Entity, EntityKind, Group, PROTOCOL_VERSION};

#[derive(Debug, Clone)]
enum Op {
    /// HQ upserts (or deletes) group `key`, skipping `gap - 1` revisions.
    Edit(u8, bool, u8),
    /// HQ forgets its `n` oldest feed entries.
    Prune(u8),
    DeliverQuery(usize),
    LoseQuery(usize),
    FailQuery(usize),
    DeliverResponse(usize),
    DuplicateResponse(usize),
    LoseResponse(usize),
    /// The driver commits the pending apply and confirms it.
    Commit,
    /// The driver's transaction rolls back.
    ApplyFails,
    /// Power loss before the pending apply commits.
    CrashBeforeCommit,
    /// Power loss after the pending apply committed, before the core heard of it.
    CrashAfterCommit,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, prop::bool::weighted(0.25), 1u8..4).prop_map(|(k, d, g)| Op::Edit(k, d, g)),
        1 => (1u8..6).prop_map(Op::Prune),
        4 => any::<usize>().prop_map(Op::DeliverQuery),
        1 => any::<usize>().prop_map(Op::LoseQuery),
        1 => any::<usize>().prop_map(Op::FailQuery),
        4 => any::<usize>().prop_map(Op::DeliverResponse),
        1 => any::<usize>().prop_map(Op::DuplicateResponse),
        1 => any::<usize>().prop_map(Op::LoseResponse),
        4 => Just(Op::Commit),
        1 => Just(Op::ApplyFails),
        1 => Just(Op::CrashBeforeCommit),
        1 => Just(Op::CrashAfterCommit),
        2 => (1u16..5000).prop_map(Op::Advance),
    ]
}

#[derive(Default)]
struct Hq {
    head: i64,
    /// The feed, ascending.
    log: Vec<Change>,
    /// Every revision at or below this was pruned.
    pruned_to: i64,
    /// Live rows with the revision of their last change.
    live: BTreeMap<String, (i64, Group)>,
}

impl Hq {
    fn edit(&mut self, key: u8, delete: bool, gap: u8) {
        self.head += i64::from(gap);
        let key = format!("g{key}");
        let row = (!delete).then(|| Group {
            name: key.clone(),
            description: format!("at {}", self.head),
        });
        match &row {
            Some(group) => self.live.insert(key.clone(), (self.head, group.clone())),
            None => self.live.remove(&key),
        };
        self.log.push(Change {
            revision: self.head,
            entity: EntityKind::Group,
            key,
            row: row.map(Entity::Group),
        });
    }

    fn prune(&mut self, n: usize) {
        let n = n.min(self.log.len());
        if let Some(last) = self.log.drain(..n).next_back() {
            self.pruned_to = last.revision;
        }
    }

    fn answer(&self, query: &DownQuery) -> DownResponse {
        if query.since == 0 || query.since < self.pruned_to {
            return DownResponse::Snapshot {
                version: PROTOCOL_VERSION,
                rows: self
                    .live
                    .iter()
                    .map(|(key, (revision, group))| Change {
                        revision: *revision,
                        entity: EntityKind::Group,
                        key: key.clone(),
                        row: Some(Entity::Group(group.clone())),
                    })
                    .collect(),
                cursor: self.head,
            };
        }
        let after: Vec<&Change> = self
            .log
            .iter()
            .filter(|c| c.revision > query.since)
            .collect();
        let changes: Vec<Change> = after
            .iter()
            .take(query.limit)
            .map(|c| (*c).clone())
            .collect();
        DownResponse::Page {
            version: PROTOCOL_VERSION,
            cursor: changes.last().map_or(query.since, |c| c.revision),
            more: after.len() > changes.len(),
            changes,
        }
    }
}

struct World {
    config: DownloaderConfig,
    now: Instant,
    core: Downloader,
    life: u64,
    hq: Hq,
    /// The box's store: rows and cursor, committed together.
    rows: BTreeMap<String, Group>,
    cursor: i64,
    /// An apply the driver has not committed yet.
    pending: Option<(FeedUpdate, i64)>,
    queries: Vec<(u64, RequestId, DownQuery)>,
    responses: Vec<(u64, RequestId, Result<DownResponse, Failure>)>,
}

impl World {
    fn new(config: DownloaderConfig) -> Self {
        let now = Instant::now();
        let mut world = Self {
            core: Downloader::new(config, 0, 0, now).unwrap(),
            config,
            now,
            life: 0,
            hq: Hq::default(),
            rows: BTreeMap::new(),
            cursor: 0,
            pending: None,
            queries: Vec::new(),
            responses: Vec::new(),
        };
        world.pump();
        world
    }

    fn pump(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                DownEvent::Apply {
                    update,
                    since,
                    new_cursor,
                } => {
                    assert_eq!(
                        since, self.cursor,
                        "a query from a cursor the store does not hold"
                    );
                    assert!(self.pending.is_none(), "two applies at once");
                    self.pending = Some((update, new_cursor));
                }
                DownEvent::Error(_) => {}
            }
        }
        while let Some(tx) = self.core.poll_transmit() {
            self.queries.push((self.life, tx.request, tx.query));
        }
    }

    /// The driver's transaction: rows and cursor together.
    fn commit(&mut self) -> Option<i64> {
        let (update, new_cursor) = self.pending.take()?;
        assert!(new_cursor >= self.cursor, "the stored cursor would go back");
        match update {
            FeedUpdate::Page(changes) => {
                for change in changes {
                    match change.row {
                        Some(Entity::Group(group)) => {
                            self.rows.insert(change.key, group);
                        }
                        Some(other) => panic!("unexpected entity {other:?}"),
                        None => {
                            self.rows.remove(&change.key);
                        }
                    }
                }
            }
            FeedUpdate::Snapshot(rows) => {
                self.rows = rows
                    .into_iter()
                    .map(|c| match c.row {
                        Some(Entity::Group(group)) => (c.key, group),
                        other => panic!("unexpected snapshot row {other:?}"),
                    })
                    .collect();
            }
        }
        self.cursor = new_cursor;
        Some(new_cursor)
    }

    fn crash(&mut self) {
        self.pending = None;
        self.life += 1;
        self.core = Downloader::new(self.config, self.cursor, self.life, self.now).unwrap();
    }

    fn answer(&mut self, life: u64, request: RequestId, answer: Result<DownResponse, Failure>) {
        if life != self.life {
            return;
        }
        let input = match answer {
            Ok(response) => DownInput::Response { request, response },
            Err(failure) => DownInput::Failed { request, failure },
        };
        self.core.handle(self.now, input);
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Edit(key, delete, gap) => self.hq.edit(key, delete, gap),
            Op::Prune(n) => self.hq.prune(usize::from(n)),
            Op::DeliverQuery(i) if !self.queries.is_empty() => {
                let (life, request, query) = self.queries.remove(i % self.queries.len());
                let response = self.hq.answer(&query);
                self.responses.push((life, request, Ok(response)));
            }
            Op::LoseQuery(i) if !self.queries.is_empty() => {
                self.queries.remove(i % self.queries.len());
            }
            Op::FailQuery(i) if !self.queries.is_empty() => {
                let (life, request, _) = self.queries.remove(i % self.queries.len());
                self.answer(
                    life,
                    request,
                    Err(Failure::Status {
                        status: 503,
                        body: None,
                    }),
                );
            }
            Op::DeliverResponse(i) if !self.responses.is_empty() => {
                let (life, request, answer) = self.responses.remove(i % self.responses.len());
                self.answer(life, request, answer);
            }
            Op::DuplicateResponse(i) if !self.responses.is_empty() => {
                let (life, request, answer) = self.responses[i % self.responses.len()].clone();
                self.answer(life, request, answer);
            }
            Op::LoseResponse(i) if !self.responses.is_empty() => {
                let _lost = self.responses.remove(i % self.responses.len());
            }
            Op::Commit => {
                if let Some(cursor) = self.commit() {
                    self.core.handle(self.now, DownInput::Applied { cursor });
                }
            }
            Op::ApplyFails if self.pending.is_some() => {
                self.pending = None;
                let detail = "disk I/O error".to_string();
                self.core
                    .handle(self.now, DownInput::ApplyFailed { detail });
            }
            Op::CrashBeforeCommit => self.crash(),
            Op::CrashAfterCommit => {
                self.commit();
                self.crash();
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.core.handle_timeout(self.now);
            }
            _ => {}
        }
        self.pump();
    }

    fn in_sync(&self) -> bool {
        let live: BTreeMap<String, Group> = self
            .hq
            .live
            .iter()
            .map(|(k, (_, g))| (k.clone(), g.clone()))
            .collect();
        self.rows == live && self.cursor == self.hq.head
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            if self.in_sync() && self.pending.is_none() {
                return;
            }
            if let Some(cursor) = self.commit() {
                self.core.handle(self.now, DownInput::Applied { cursor });
            } else if !self.queries.is_empty() {
                let (life, request, query) = self.queries.remove(0);
                let response = self.hq.answer(&query);
                self.responses.push((life, request, Ok(response)));
            } else if !self.responses.is_empty() {
                let (life, request, answer) = self.responses.remove(0);
                self.answer(life, request, answer);
            } else {
                let at = self
                    .core
                    .timeout()
                    .expect("the downloader must be waiting for something");
                self.now = self.now.max(at);
                self.core.handle_timeout(self.now);
            }
            self.pump();
        }
        panic!(
            "did not converge: box cursor {} rows {:?}, HQ head {}",
            self.cursor,
            self.rows.keys(),
            self.hq.head
        );
    }
}

fn config(limit: usize) -> DownloaderConfig {
    DownloaderConfig {
        wait_ms: 1000,
        limit,
        request_margin: Duration::from_millis(500),
        min_poll_interval: Duration::from_millis(100),
        backoff: BackoffConfig {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(500),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_box_ends_with_hqs_rows_at_hqs_head(
        limit in 1usize..5,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut world = World::new(config(limit));
        for op in ops {
            world.step(op);
        }
        world.drain();
        prop_assert!(world.in_sync());
    }
}
