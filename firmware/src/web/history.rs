//! What the charts draw: bounded in-memory histories of the running daemon, and the
//! calls per hour from the store's CDRs. The histories are sans-IO (every sample comes
//! with its time); [`ChartSampler`] is the task at the edge that feeds them.
//!
//! | chart | source | sampling | bound (memory at most) |
//! | --- | --- | --- | --- |
//! | calls per hour | the store's CDRs, read per request | hours of the site's clock (`[telephony] time_zone`, UTC when unset), the last 24 | none kept |
//! | line voltage, loop current | every line reading the board answers, kept by the status publisher in the main loop ([`super::status`] reads the lines every 30 s, or every `[web] chart_sample_seconds` when shorter); the web side asks for them ([`StatusHandle::line_history`]) | one reading per `chart_sample_seconds` (default 60 s) | [`LINE_SAMPLES`] per port: 24 h at the default, 16 B each, 23 KiB a port |
//! | RTP jitter and loss | the media engine's per-leg statistics of the calls in progress | every `[web] call_sample_seconds` (default 5 s) | [`CALL_SAMPLES`] per call (a longer call halves its resolution instead of losing its start), [`TRACKED_CALLS`] calls in progress and the last [`FINISHED_CALLS`] finished: 32 B a sample, 500 KiB in all |
//! | sync backlog | the outbox's depth and oldest row ([`crate::sync::state::backlog`]) | every `chart_sample_seconds` | [`SYNC_SAMPLES`]: 24 h at the default, 24 B each, 35 KiB |
//!
//! The histories live in memory only: a restart of `branchd` starts them empty (the
//! charts then say "no data yet"). Times are UTC, but for the calls per hour.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

use super::status::{ActiveCalls, LineReading, StatusHandle};
use crate::call::CallParty;
use crate::error::{Error, Result};
use crate::store::system_clock_ms;

/// How often a line reading is kept without `[web] chart_sample_seconds`.
pub const DEFAULT_LINE_SAMPLE: Duration = Duration::from_secs(60);
/// Line samples kept per port (24 h at one a minute).
pub const LINE_SAMPLES: usize = 1440;
/// Sync backlog samples kept (24 h at one a minute).
pub const SYNC_SAMPLES: usize = 1440;
/// RTP samples kept per call; a call that fills them keeps every other one and
/// samples half as often from then on.
pub const CALL_SAMPLES: usize = 360;
/// Calls in progress traced at once (more are not traced).
pub const TRACKED_CALLS: usize = 32;
/// Finished calls whose trace is kept.
pub const FINISHED_CALLS: usize = 10;
/// Hours in the calls-per-hour chart.
pub const CALL_HOURS: i64 = 24;

const HOUR_MS: i64 = 3_600_000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A sample is kept when at least 90 % of the interval passed since the last kept one
/// (readings arrive a little early or late).
fn due(last: Option<i64>, at_ms: i64, interval_ms: i64) -> bool {
    last.is_none_or(|last| at_ms - last >= interval_ms - interval_ms / 10)
}

/// One kept line reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineSample {
    /// When the board reported it, ms since the Unix epoch.
    pub at_ms: i64,
    /// Tip-to-ring voltage, mV.
    pub millivolts: i32,
    /// Loop current, µA.
    pub microamps: u32,
}

/// Line readings per port, one per interval, the last [`LINE_SAMPLES`].
#[derive(Debug, Clone)]
pub struct LineHistory {
    interval_ms: i64,
    ports: BTreeMap<u8, VecDeque<LineSample>>,
}

impl LineHistory {
    /// Keeping one reading per `interval`.
    pub fn new(interval: Duration) -> LineHistory {
        LineHistory {
            interval_ms: ms(interval),
            ports: BTreeMap::new(),
        }
    }

    /// A reading of `port`: kept when it is the first, or an interval after the last
    /// kept one (a reading seen again, or older, is not).
    pub fn record(&mut self, port: u8, reading: LineReading) -> bool {
        let samples = self.ports.entry(port).or_default();
        if !due(
            samples.back().map(|s| s.at_ms),
            reading.at_ms,
            self.interval_ms,
        ) {
            return false;
        }
        if samples.len() == LINE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(LineSample {
            at_ms: reading.at_ms,
            millivolts: reading.millivolts,
            microamps: reading.microamps,
        });
        true
    }

    /// One reading is kept per this many ms.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// The kept samples of `port`, oldest first.
    pub fn samples(&self, port: u8) -> Vec<LineSample> {
        self.ports
            .get(&port)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Jitter and loss of the RTP one side of a call receives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LegPoint {
    /// Interarrival jitter, ms.
    pub jitter_ms: f32,
    /// Packets lost, percent.
    pub loss_percent: f32,
}

/// One RTP sample of a call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualitySample {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// What the caller's SIP leg receives (`None`: not a SIP leg, or no RTP yet).
    pub caller: Option<LegPoint>,
    /// What the callee's SIP leg receives.
    pub callee: Option<LegPoint>,
}

/// The RTP quality of one call over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallTrace {
    /// The call's id (its CDR carries it).
    pub call_id: String,
    /// Where the caller is (`SIP trunk`, `FXS port 1`, ...).
    pub caller_via: String,
    /// Where the answering party is, once answered.
    pub callee_via: Option<String>,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When the call was first seen gone (within a sampling interval of its end);
    /// `None` while it is up.
    pub ended_at_ms: Option<i64>,
    /// The time between kept samples now, ms (doubles each time the trace fills).
    pub resolution_ms: i64,
    /// The samples, oldest first.
    pub samples: VecDeque<QualitySample>,
}

impl CallTrace {
    fn push(&mut self, sample: QualitySample) {
        if !due(
            self.samples.back().map(|s| s.at_ms),
            sample.at_ms,
            self.resolution_ms,
        ) {
            return;
        }
        if self.samples.len() == CALL_SAMPLES {
            // Keep the whole call at half the resolution: every other sample.
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.resolution_ms = self.resolution_ms.saturating_mul(2);
        }
        self.samples.push_back(sample);
    }
}

fn point(party: Option<CallParty>, active: &ActiveCalls) -> Option<LegPoint> {
    let Some(CallParty::Sip { leg, .. }) = party else {
        return None;
    };
    let legs = active.legs.as_ref().ok()?;
    let q = legs.iter().find(|l| l.leg == leg)?.quality?;
    // f32 is plenty for a chart; the API's calls/active has the f64s.
    Some(LegPoint {
        jitter_ms: q.jitter_ms as f32,
        loss_percent: q.loss_percent as f32,
    })
}

fn has_sip_leg(c: &crate::call::CallSnapshot) -> bool {
    std::iter::once(c.caller)
        .chain(c.callee)
        .any(|p| matches!(p, CallParty::Sip { .. }))
}

/// RTP jitter and loss of the calls with a SIP leg, sampled while they are up, and
/// kept for the last [`FINISHED_CALLS`] finished ones.
#[derive(Debug, Clone)]
pub struct CallQualityHistory {
    interval_ms: i64,
    active: Vec<CallTrace>,
    finished: VecDeque<CallTrace>,
}

impl CallQualityHistory {
    /// Sampling every `interval`.
    pub fn new(interval: Duration) -> CallQualityHistory {
        CallQualityHistory {
            interval_ms: ms(interval),
            active: Vec::new(),
            finished: VecDeque::new(),
        }
    }

    /// The calls in progress at `now_ms`: a sample for each call with a SIP leg (its
    /// legs' jitter and loss, when the media engine answered and RTP arrived); a
    /// traced call no longer in progress is finished (kept when it has samples).
    pub fn record(&mut self, now_ms: i64, active: &ActiveCalls) {
        let (up, gone): (Vec<CallTrace>, Vec<CallTrace>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|t| active.calls.iter().any(|c| c.call_id == t.call_id));
        self.active = up;
        for mut trace in gone {
            if trace.samples.is_empty() {
                continue;
            }
            trace.ended_at_ms = Some(now_ms);
            if self.finished.len() == FINISHED_CALLS {
                self.finished.pop_front();
            }
            self.finished.push_back(trace);
        }
        for c in active.calls.iter().filter(|c| has_sip_leg(c)) {
            let at = match self.active.iter().position(|t| t.call_id == c.call_id) {
                Some(at) => at,
                None if self.active.len() < TRACKED_CALLS => {
                    self.active.push(CallTrace {
                        call_id: c.call_id.clone(),
                        caller_via: super::views::via(c.caller),
                        callee_via: c.callee.map(super::views::via),
                        started_at_ms: c.started_at_ms,
                        ended_at_ms: None,
                        resolution_ms: self.interval_ms,
                        samples: VecDeque::new(),
                    });
                    self.active.len() - 1
                }
                None => continue,
            };
            let trace = &mut self.active[at];
            if trace.callee_via.is_none() {
                trace.callee_via = c.callee.map(super::views::via);
            }
            let (caller, callee) = (point(Some(c.caller), active), point(c.callee, active));
            if caller.is_some() || callee.is_some() {
                trace.push(QualitySample {
                    at_ms: now_ms,
                    caller,
                    callee,
                });
            }
        }
    }

    /// The traces of the calls in progress (oldest first), then the finished ones
    /// (most recent first).
    pub fn traces(&self) -> Vec<CallTrace> {
        self.active
            .iter()
            .chain(self.finished.iter().rev())
            .cloned()
            .collect()
    }
}

/// One sample of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncSample {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Records waiting to reach HQ.
    pub depth: i64,
    /// Age of the oldest of them, ms (`None`: none waiting).
    pub oldest_age_ms: Option<i64>,
}

impl SyncSample {
    /// The outbox `backlog`, read at `at_ms`.
    pub fn of(at_ms: i64, backlog: &crate::sync::state::Backlog) -> SyncSample {
        SyncSample {
            at_ms,
            depth: backlog.depth,
            oldest_age_ms: backlog.oldest_created_at_ms.map(|t| (at_ms - t).max(0)),
        }
    }
}

/// The outbox's depth and age over time, the last [`SYNC_SAMPLES`].
#[derive(Debug, Clone, Default)]
pub struct SyncHistory {
    samples: VecDeque<SyncSample>,
}

impl SyncHistory {
    /// The outbox at `at_ms`.
    pub fn record(&mut self, at_ms: i64, backlog: &crate::sync::state::Backlog) {
        if self.samples.back().is_some_and(|s| s.at_ms >= at_ms) {
            return;
        }
        if self.samples.len() == SYNC_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(SyncSample::of(at_ms, backlog));
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<SyncSample> {
        self.samples.iter().copied().collect()
    }
}

/// The sampled histories (the line readings are the status publisher's: every
/// reading reaches it), and when each is sampled next.
#[derive(Debug, Clone)]
pub struct ChartHistories {
    /// RTP quality per call.
    pub calls: CallQualityHistory,
    /// The outbox.
    pub sync: SyncHistory,
    chart_interval_ms: i64,
    call_interval_ms: i64,
    next_chart_ms: i64,
    next_call_ms: i64,
}

/// Which samples are due ([`ChartHistories::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The outbox.
    pub chart: bool,
    /// The calls' RTP.
    pub calls: bool,
}

impl ChartHistories {
    /// Empty histories sampling the outbox every `chart`, the calls every `call`;
    /// the first samples are due at `now_ms`.
    pub fn new(chart: Duration, call: Duration, now_ms: i64) -> ChartHistories {
        ChartHistories {
            calls: CallQualityHistory::new(call),
            sync: SyncHistory::default(),
            chart_interval_ms: ms(chart).max(1),
            call_interval_ms: ms(call).max(1),
            next_chart_ms: now_ms,
            next_call_ms: now_ms,
        }
    }

    /// How often the outbox is sampled, ms.
    pub fn chart_interval_ms(&self) -> i64 {
        self.chart_interval_ms
    }

    /// How often the calls are sampled, ms.
    pub fn call_interval_ms(&self) -> i64 {
        self.call_interval_ms
    }

    /// When the next sample is due, ms since the Unix epoch.
    pub fn timeout(&self) -> i64 {
        self.next_chart_ms.min(self.next_call_ms)
    }

    /// Which samples are due at `now_ms`; each due one's next time moves on by its
    /// interval (from `now_ms` when the sampler fell behind by more than one).
    pub fn due(&mut self, now_ms: i64) -> Due {
        let step = |next: &mut i64, interval: i64| {
            if *next > now_ms {
                return false;
            }
            *next += interval;
            if *next <= now_ms {
                *next = now_ms + interval;
            }
            true
        };
        Due {
            chart: step(&mut self.next_chart_ms, self.chart_interval_ms),
            calls: step(&mut self.next_call_ms, self.call_interval_ms),
        }
    }
}

/// The histories as the web side shares them: the sampler writes, the pages and the
/// API read (a std Mutex, held for a copy, never across an await).
#[derive(Debug, Clone)]
pub struct Charts(Arc<Mutex<ChartHistories>>);

impl Charts {
    /// Over `histories`.
    pub fn new(histories: ChartHistories) -> Charts {
        Charts(Arc::new(Mutex::new(histories)))
    }

    /// Runs `f` on the histories.
    pub fn with<T>(&self, f: impl FnOnce(&mut ChartHistories) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The task that samples the daemon into [`Charts`]: the calls in progress from the
/// main loop ([`StatusHandle::active_calls`]) and the outbox from the store, each
/// when due.
#[derive(Debug)]
pub struct ChartSampler {
    /// Where the samples go.
    pub charts: Charts,
    /// The daemon's status and the main loop.
    pub status: StatusHandle,
    /// The store, for the outbox.
    pub db_path: PathBuf,
}

impl ChartSampler {
    /// Samples until `stop` is cancelled or the main loop is gone.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let now = system_clock_ms();
            let wait = self.charts.with(|h| h.timeout()) - now;
            if wait > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())) => {}
                    () = stop.cancelled() => return,
                }
            }
            let now = system_clock_ms();
            let due = self.charts.with(|h| h.due(now));
            if due.calls {
                let Some(active) = self.status.active_calls().await else {
                    return; // the daemon is stopping
                };
                let now = system_clock_ms();
                self.charts.with(|h| h.calls.record(now, &active));
            }
            if due.chart {
                let path = self.db_path.clone();
                // Stamped when the outbox is read, not when the sample fell due (the
                // calls' sample may have waited on the main loop in between).
                let read = move || {
                    let at = system_clock_ms();
                    outbox_backlog(&path).map(|b| (at, b))
                };
                match tokio::task::spawn_blocking(read).await {
                    Ok(Ok((at, backlog))) => {
                        self.charts.with(|h| h.sync.record(at, &backlog));
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "sync backlog not sampled"),
                    Err(e) => tracing::warn!(error = %e, "sync backlog sampler failed"),
                }
            }
        }
    }
}

fn outbox_backlog(path: &Path) -> Result<crate::sync::state::Backlog> {
    let reader = crate::store::Store::reader(path)?;
    crate::sync::state::backlog(reader.connection(), path)
}

/// Calls started in one hour of the site's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// The hour's start, ms since the Unix epoch.
    pub hour_start_ms: i64,
    /// The same instant on the site's wall clock (ms since 1970-01-01 00:00 local),
    /// for labels.
    pub local_start_ms: i64,
    /// Calls answered.
    pub answered: u32,
    /// Calls not answered (no answer, busy, failed, refused).
    pub not_answered: u32,
}

/// The CDRs of the last [`CALL_HOURS`] hours of the site's clock (`zone`) up to
/// `now_ms` (the current hour last), per hour of their start, answered or not; every
/// hour is listed, zeros included. The hours are whole hours of real time that start
/// where the site's clock shows a full hour now (so a zone 30 minutes off UTC gets its
/// own hours); across a DST change the labels skip or repeat an hour, as the clock did.
pub fn calls_per_hour(
    conn: &Connection,
    path: &Path,
    zone: &crate::site_time::SiteZone,
    now_ms: i64,
) -> Result<Vec<HourCount>> {
    let this_hour = now_ms - zone.local_ms(now_ms).rem_euclid(HOUR_MS);
    let first = this_hour - (CALL_HOURS - 1) * HOUR_MS;
    let sqlite = |source| Error::Sqlite {
        path: path.to_owned(),
        op: "count calls per hour",
        source,
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT (started_at_ms - ?1) / 3600000,
                    SUM(answered_at_ms IS NOT NULL), SUM(answered_at_ms IS NULL)
             FROM cdrs WHERE started_at_ms >= ?1 AND started_at_ms <= ?2
             GROUP BY (started_at_ms - ?1) / 3600000",
        )
        .map_err(sqlite)?;
    let mut hours: Vec<HourCount> = (0..CALL_HOURS)
        .map(|i| HourCount {
            hour_start_ms: first + i * HOUR_MS,
            local_start_ms: zone.local_ms(first + i * HOUR_MS),
            answered: 0,
            not_answered: 0,
        })
        .collect();
    let rows = stmt
        .query_map([first, now_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (index, answered, not_answered) = row.map_err(sqlite)?;
        if let Some(h) = usize::try_from(index).ok().and_then(|i| hours.get_mut(i)) {
            h.answered = u32::try_from(answered).unwrap_or(u32::MAX);
            h.not_answered = u32::try_from(not_answered).unwrap_or(u32::MAX);
        }
    }
    Ok(hours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallSnapshot, LegId};
    use crate::cdr::Direction;
    use crate::media_engine::LegSnapshot;
    use branchline_media::rtcp::CallQuality;

    fn reading(at_ms: i64, millivolts: i32) -> LineReading {
        LineReading {
            millivolts,
            microamps: 0,
            at_ms,
        }
    }

    #[test]
    fn line_history_keeps_one_reading_per_interval_and_is_bounded() {
        let mut h = LineHistory::new(Duration::from_secs(60));
        // Readings every 30 s on a virtual clock: every other one is kept; one a bit
        // early (59 s) still counts, a repeat of the same reading does not.
        let mut kept = 0;
        for i in 0..10 {
            if h.record(
                1,
                reading(i * 30_000, -48_000 + i32::try_from(i).unwrap_or(0)),
            ) {
                kept += 1;
            }
        }
        assert_eq!(kept, 5);
        assert!(
            h.record(1, reading(295_000, -47_000)),
            "90 % of the interval"
        );
        assert!(!h.record(1, reading(295_000, -47_000)), "the same reading");
        assert!(!h.record(1, reading(100_000, -47_000)), "an older one");
        assert_eq!(h.samples(1).len(), 6);
        assert!(h.samples(2).is_empty());
        // Bounded: a day and more of readings keeps the last LINE_SAMPLES.
        for i in 0..(LINE_SAMPLES as i64 + 100) {
            h.record(2, reading(1_000_000 + i * 60_000, -48_000));
        }
        let s = h.samples(2);
        assert_eq!(s.len(), LINE_SAMPLES);
        assert_eq!(
            s.last().map(|s| s.at_ms),
            Some(1_000_000 + (LINE_SAMPLES as i64 + 99) * 60_000)
        );
        assert_eq!(s[0].at_ms, 1_000_000 + 100 * 60_000);
    }

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

    fn call(id: &str, caller: CallParty, callee: Option<CallParty>) -> CallSnapshot {
        CallSnapshot {
            call_id: id.into(),
            direction: Direction::Inbound,
            caller_number: "5550100".into(),
            callee_number: "101".into(),
            caller,
            callee,
            ringing: Vec::new(),
            phase: "connected",
            started_at_ms: 0,
            answered_at_ms: Some(0),
        }
    }

    const TRUNK: CallParty = CallParty::Sip {
        leg: LegId(7),
        phone: false,
    };

    #[test]
    fn call_quality_is_sampled_while_up_then_kept_for_the_last_finished_calls() {
        let mut h = CallQualityHistory::new(Duration::from_secs(5));
        let up = |jitter| ActiveCalls {
            calls: vec![
                call("sip-1", TRUNK, Some(CallParty::Fxs(1))),
                call("analog", CallParty::Fxs(1), Some(CallParty::Fxs(2))),
            ],
            legs: Ok(vec![leg(7, jitter, 1.0)]),
        };
        for i in 0..4 {
            h.record(i * 5_000, &up(2.0 + i as f64));
        }
        let t = h.traces();
        assert_eq!(t.len(), 1, "analog calls have no RTP to trace");
        assert_eq!(t[0].call_id, "sip-1");
        assert_eq!(t[0].caller_via, "SIP trunk");
        assert_eq!(t[0].callee_via.as_deref(), Some("FXS port 1"));
        assert_eq!(t[0].samples.len(), 4);
        assert_eq!(t[0].samples[3].caller.map(|p| p.jitter_ms), Some(5.0));
        assert_eq!(t[0].samples[3].callee, None);
        assert_eq!(t[0].ended_at_ms, None);
        // The media engine did not answer: the call stays, no sample is made up.
        h.record(
            20_000,
            &ActiveCalls {
                calls: up(1.0).calls,
                legs: Err("stopped".into()),
            },
        );
        assert_eq!(h.traces()[0].samples.len(), 4);
        // The call ends: finished at the next sample.
        h.record(
            25_000,
            &ActiveCalls {
                calls: Vec::new(),
                legs: Ok(Vec::new()),
            },
        );
        let t = h.traces();
        assert_eq!(t[0].ended_at_ms, Some(25_000));
        // Only the last FINISHED_CALLS are kept, the newest first.
        for n in 0..(FINISHED_CALLS + 3) {
            let id = format!("c{n}");
            let at = 100_000 + n as i64 * 10_000;
            h.record(
                at,
                &ActiveCalls {
                    calls: vec![call(&id, TRUNK, None)],
                    legs: Ok(vec![leg(7, 1.0, 0.0)]),
                },
            );
            h.record(
                at + 5_000,
                &ActiveCalls {
                    calls: Vec::new(),
                    legs: Ok(Vec::new()),
                },
            );
        }
        let t = h.traces();
        assert_eq!(t.len(), FINISHED_CALLS);
        assert_eq!(t[0].call_id, format!("c{}", FINISHED_CALLS + 2));
        assert!(t.iter().all(|t| t.ended_at_ms.is_some()));
    }

    #[test]
    fn a_long_call_keeps_its_start_at_a_lower_resolution_and_calls_are_bounded() {
        let mut h = CallQualityHistory::new(Duration::from_secs(1));
        let active = ActiveCalls {
            calls: vec![call("long", TRUNK, None)],
            legs: Ok(vec![leg(7, 3.0, 0.5)]),
        };
        for i in 0..(CALL_SAMPLES as i64 * 3) {
            h.record(i * 1_000, &active);
        }
        let t = &h.traces()[0];
        assert!(t.samples.len() <= CALL_SAMPLES, "{}", t.samples.len());
        assert_eq!(t.samples[0].at_ms, 0, "the start is kept");
        assert!(t.resolution_ms >= 2_000);
        assert!(t
            .samples
            .iter()
            .zip(t.samples.iter().skip(1))
            .all(|(a, b)| a.at_ms < b.at_ms));
        // Calls beyond TRACKED_CALLS are not traced.
        let many = ActiveCalls {
            calls: (0..TRACKED_CALLS + 5)
                .map(|i| call(&format!("m{i}"), TRUNK, None))
                .collect(),
            legs: Ok(vec![leg(7, 1.0, 0.0)]),
        };
        let mut h = CallQualityHistory::new(Duration::from_secs(1));
        h.record(0, &many);
        assert_eq!(h.traces().len(), TRACKED_CALLS);
    }

    #[test]
    fn sync_history_is_bounded_and_ages_the_oldest_row() {
        let mut h = SyncHistory::default();
        let backlog = |depth, oldest| crate::sync::state::Backlog {
            depth,
            oldest_created_at_ms: oldest,
            last_seq: 0,
        };
        h.record(10_000, &backlog(3, Some(4_000)));
        h.record(10_000, &backlog(9, Some(4_000)));
        h.record(70_000, &backlog(0, None));
        let s = h.samples();
        assert_eq!(s.len(), 2, "one sample per time");
        assert_eq!((s[0].depth, s[0].oldest_age_ms), (3, Some(6_000)));
        assert_eq!((s[1].depth, s[1].oldest_age_ms), (0, None));
        for i in 0..(SYNC_SAMPLES as i64 + 5) {
            h.record(100_000 + i, &backlog(i, None));
        }
        assert_eq!(h.samples().len(), SYNC_SAMPLES);
    }

    #[test]
    fn samples_fall_due_on_a_virtual_clock() {
        let mut h = ChartHistories::new(Duration::from_secs(60), Duration::from_secs(5), 0);
        assert_eq!(h.timeout(), 0);
        assert_eq!(
            h.due(0),
            Due {
                chart: true,
                calls: true
            }
        );
        assert_eq!(h.timeout(), 5_000);
        let mut now = 0;
        let (mut charts, mut calls) = (0, 0);
        while now < 120_000 {
            now = h.timeout();
            let d = h.due(now);
            charts += u32::from(d.chart);
            calls += u32::from(d.calls);
        }
        assert_eq!((charts, calls), (2, 24));
        // A sampler that fell far behind takes one sample, not a burst.
        assert_eq!(
            h.due(1_000_000),
            Due {
                chart: true,
                calls: true
            }
        );
        assert_eq!(h.timeout(), 1_005_000);
        assert!(!h.due(1_001_000).calls);
    }

    #[test]
    fn calls_per_hour_counts_answered_and_not_per_hour_of_the_site_clock() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE TABLE cdrs (started_at_ms INTEGER NOT NULL, answered_at_ms INTEGER);",
        )
        .expect("table");
        let now = 100 * HOUR_MS + 30 * 60_000;
        for (start, answered) in [
            (now - 60_000, true),
            (now - 120_000, false),
            (now - 2 * HOUR_MS, true),
            (now - 2 * HOUR_MS + 1, true),
            // 24 hours ago and more: outside the chart.
            (now - 24 * HOUR_MS, true),
            // The future (a clock step): left out.
            (now + HOUR_MS, true),
        ] {
            conn.execute(
                "INSERT INTO cdrs VALUES (?1, ?2)",
                (start, answered.then_some(start + 1_000)),
            )
            .expect("row");
        }
        let utc = crate::site_time::SiteZone::utc();
        let h = calls_per_hour(&conn, Path::new("mem"), &utc, now).expect("counts");
        assert_eq!(h.len(), 24);
        assert_eq!(h[23].hour_start_ms, 100 * HOUR_MS);
        assert_eq!(h[23].local_start_ms, 100 * HOUR_MS);
        assert_eq!((h[23].answered, h[23].not_answered), (1, 1));
        assert_eq!((h[21].answered, h[21].not_answered), (2, 0));
        let total: u32 = h.iter().map(|h| h.answered + h.not_answered).sum();
        assert_eq!(total, 4);
        // A site 5:30 ahead of UTC: its clock shows 10:00 now (04:30 UTC), so this hour starts
        // now and the calls of the last minutes were in the hour before.
        let india = crate::site_time::SiteZone::fixed(19_800).expect("zone");
        let h = calls_per_hour(&conn, Path::new("mem"), &india, now).expect("counts");
        assert_eq!(h[23].hour_start_ms, now);
        assert_eq!(h[23].local_start_ms.rem_euclid(24 * HOUR_MS), 10 * HOUR_MS);
        assert_eq!((h[23].answered, h[23].not_answered), (0, 0));
        assert_eq!((h[22].answered, h[22].not_answered), (1, 1));
        assert_eq!((h[21].answered, h[21].not_answered), (2, 0));
        let total: u32 = h.iter().map(|h| h.answered + h.not_answered).sum();
        assert_eq!(total, 4);
    }
}
