//! Call-center reports over a period: per queue from the CDRs of queued calls, per
//! agent from those CDRs and the agent state history (`agent_state_log`). Everything
//! is computed in SQL on a reader connection; reports write nothing.
//!
//! # The period
//!
//! `[from, to)` in ms since the Unix epoch (UTC), `from < to`, `from >= 0`, at most
//! [`MAX_PERIOD_MS`] (366 days) long. A call belongs to the period when it *started*
//! in it (`cdrs.started_at_ms`), even if it ended after `to`.
//!
//! # Queue figures ([`QueueFigures`])
//!
//! A queued call is a CDR whose `queue` is set (migration 0010); the queue is the last
//! one the call was in (after overflow from queue to queue).
//!
//! - **offered**: queued calls that started in the period.
//! - **answered**: those an agent took (`agent_id` set).
//! - **abandoned**: not answered, not overflowed, and the caller hung up
//!   (`hangup_side = 'caller'`): the caller gave up while waiting.
//! - **overflowed**: not answered; the queue's overflow rule (full, or waited too
//!   long) sent the call on to voicemail, a number or busy (`queue_overflow` set,
//!   migration 0019; the CDR keeps the queue it left). Also counted per target.
//! - **other**: not answered for another reason: the box ended the call (shutdown,
//!   fault) or the callee side did. `offered = answered + abandoned + overflowed +
//!   other`.
//! - **avg / max wait**: of answered calls, `queue_wait_ms` (queue entry until an agent
//!   was connected).
//! - **talk time** of an answered call: `ended_at_ms - answered_at_ms` (the agent was
//!   connected at `answered_at_ms`).
//! - **wrap-up** of an answered call: the answering agent's `wrap_up` interval in the
//!   state log that starts within [`WRAP_UP_MATCH_MS`] after the call's end (call
//!   control logs it at the same instant); it lasts until the agent's next state row,
//!   or until `to` when there is none before `to`. Calls whose agent had no wrap-up
//!   add 0.
//! - **avg handle time** = (total talk + total wrap-up) / answered.
//! - **service level** (threshold N seconds, default [`DEFAULT_SERVICE_LEVEL_S`]) =
//!   answered with wait ≤ N / (offered − abandoned with wait ≤ N). Callers who hang up
//!   within N seconds ("short abandons") count neither for nor against the queue; a
//!   caller who waited longer than N and then hung up counts against it, as do calls
//!   in *other*. `null` when the denominator is 0 (nothing to judge), never NaN.
//! - **calls per hour**: offered calls by the UTC hour of day (0-23) they started in,
//!   summed over all the period's days.
//! - **survey average**: the mean of the post-call survey scores (1-5) keyed on the
//!   queue's calls in the period (`cdrs.survey_score`); `null` when none was keyed.
//!   Calls without a score (no survey, or the caller keyed nothing) do not count.
//!
//! Averages are whole milliseconds, rounded half up, and 0 when there is nothing to
//! average (an empty period gives zeros, not NaN). Every configured queue appears,
//! plus any queue name found on a CDR in the period (e.g. a queue since deleted).
//!
//! # Agent figures ([`AgentFigures`])
//!
//! - **answered / talk time**: CDRs the agent took that started in the period, and
//!   their talk time as above (total and average).
//! - **time in each state**: each `agent_state_log` row starts a state that lasts
//!   until the agent's next row. Intervals are clipped to `[from, to)`: a state entered
//!   before `from` counts from `from`, one still open at `to` (no later row before
//!   `to`) counts until `to`. Before an agent's first row nothing is counted.
//! - **login time**: time in any state but `logged_out`.
//! - **pauses**: `paused` rows in the period, by reason (`null`: no reason given).
//!
//! Agents listed: those with a state interval overlapping the period or an answered
//! call in it.
//!
//! # Limits
//!
//! - Calls that overflowed *out* of the call center (to busy, voicemail or a number)
//!   or were refused because the queue was full carry no queue on their CDR (call
//!   control clears it), so they are not in any queue's figures: *other* only holds
//!   calls that ended in a queue without an agent for a reason other than the caller
//!   hanging up.
//! - A state still open at `to` counts until `to` even when `to` is in the future.
//! - No phone numbers appear in reports (queue names, agent IDs and figures only), so
//!   nothing is masked.

mod error;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{named_params, Connection, OptionalExtension};
use serde::Serialize;

pub use self::error::ReportError;

/// The longest period a report may cover: 366 days.
pub const MAX_PERIOD_MS: i64 = 366 * DAY_MS;
/// The service-level threshold when none is given, in seconds.
pub const DEFAULT_SERVICE_LEVEL_S: i64 = 20;
/// The largest service-level threshold accepted, in seconds (one hour).
pub const MAX_SERVICE_LEVEL_S: i64 = 3600;
/// How long after a call's end the agent's wrap-up may start and still be that call's.
pub const WRAP_UP_MATCH_MS: i64 = 1000;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// The agent states of migration 0007, in the order reports list them.
pub const STATES: [&str; 6] = [
    "logged_out",
    "available",
    "ringing",
    "on_call",
    "wrap_up",
    "paused",
];

/// A validated period `[from_ms, to_ms)`, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    from_ms: i64,
    to_ms: i64,
}

impl Period {
    /// Checks `from < to`, `from >= 0` and the length cap.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Period, ReportError> {
        if from_ms >= to_ms {
            return Err(ReportError::EmptyPeriod { from_ms, to_ms });
        }
        if from_ms < 0 {
            return Err(ReportError::BeforeEpoch { from_ms });
        }
        let length = to_ms - from_ms; // no overflow: both non-negative
        if length > MAX_PERIOD_MS {
            return Err(ReportError::PeriodTooLong {
                from_ms,
                to_ms,
                days: (length + DAY_MS - 1) / DAY_MS,
                max_days: MAX_PERIOD_MS / DAY_MS,
            });
        }
        Ok(Period { from_ms, to_ms })
    }

    /// The start, inclusive.
    pub fn from_ms(&self) -> i64 {
        self.from_ms
    }

    /// The end, exclusive.
    pub fn to_ms(&self) -> i64 {
        self.to_ms
    }
}

/// A service-level threshold in whole seconds, 1..=[`MAX_SERVICE_LEVEL_S`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLevelThreshold(i64);

impl ServiceLevelThreshold {
    /// Checks the range.
    pub fn new(seconds: i64) -> Result<Self, ReportError> {
        if (1..=MAX_SERVICE_LEVEL_S).contains(&seconds) {
            Ok(ServiceLevelThreshold(seconds))
        } else {
            Err(ReportError::ServiceLevel {
                given: seconds,
                max: MAX_SERVICE_LEVEL_S,
            })
        }
    }

    /// The threshold in seconds.
    pub fn seconds(self) -> i64 {
        self.0
    }
}

impl Default for ServiceLevelThreshold {
    fn default() -> Self {
        ServiceLevelThreshold(DEFAULT_SERVICE_LEVEL_S)
    }
}

/// One queue's figures over a period. See the module docs for the definitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueFigures {
    /// The queue's name.
    pub queue: String,
    /// Queued calls that started in the period.
    pub offered: u64,
    /// Of those, taken by an agent.
    pub answered: u64,
    /// Not answered: the caller hung up while waiting.
    pub abandoned: u64,
    /// Not answered: sent on by the queue's overflow rule.
    pub overflowed: u64,
    /// Of those, to voicemail.
    pub overflowed_to_voicemail: u64,
    /// Of those, out to a number.
    pub overflowed_to_number: u64,
    /// Of those, given busy.
    pub overflowed_to_busy: u64,
    /// Not answered for another reason (the box or the far side ended the call).
    pub other: u64,
    /// Answered with a wait of at most the service-level threshold.
    pub answered_within_threshold: u64,
    /// Abandoned with a wait of at most the threshold (short abandons).
    pub abandoned_within_threshold: u64,
    /// Average wait of answered calls, ms.
    pub avg_wait_ms: i64,
    /// Longest wait of an answered call, ms (0: none answered).
    pub max_wait_ms: i64,
    /// Total talk time of answered calls, ms.
    pub talk_ms: i64,
    /// Average talk time per answered call, ms.
    pub avg_talk_ms: i64,
    /// Total wrap-up after answered calls, ms.
    pub wrap_up_ms: i64,
    /// Average handle time (talk + wrap-up) per answered call, ms.
    pub avg_handle_ms: i64,
    /// The threshold the service level uses, seconds.
    pub service_level_threshold_s: i64,
    /// Answered within threshold / (offered − abandoned within threshold), 0..=1;
    /// `None` when that denominator is 0.
    pub service_level: Option<f64>,
    /// Offered calls by UTC hour of day of their start, `[0]` = 00:00-00:59.
    pub calls_per_hour: [u64; 24],
    /// Average post-call survey score of the calls that have one; `None` without any.
    pub survey_avg: Option<f64>,
}

impl QueueFigures {
    fn empty(queue: String, threshold: ServiceLevelThreshold) -> QueueFigures {
        QueueFigures {
            queue,
            offered: 0,
            answered: 0,
            abandoned: 0,
            overflowed: 0,
            overflowed_to_voicemail: 0,
            overflowed_to_number: 0,
            overflowed_to_busy: 0,
            other: 0,
            answered_within_threshold: 0,
            abandoned_within_threshold: 0,
            avg_wait_ms: 0,
            max_wait_ms: 0,
            talk_ms: 0,
            avg_talk_ms: 0,
            wrap_up_ms: 0,
            avg_handle_ms: 0,
            service_level_threshold_s: threshold.seconds(),
            service_level: None,
            calls_per_hour: [0; 24],
            survey_avg: None,
        }
    }
}

/// How many pauses an agent took with one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseCount {
    /// The reason given (`None`: none).
    pub reason: Option<String>,
    /// How many times the agent paused with it in the period.
    pub count: u64,
}

/// One agent's figures over a period. See the module docs for the definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFigures {
    /// The agent ID.
    pub agent: String,
    /// Queued calls the agent took that started in the period.
    pub answered: u64,
    /// Their total talk time, ms.
    pub talk_ms: i64,
    /// Average talk time per answered call, ms.
    pub avg_talk_ms: i64,
    /// Time in each state of [`STATES`] within the period, ms (every state present).
    pub state_ms: BTreeMap<String, i64>,
    /// Time logged in (any state but `logged_out`), ms.
    pub login_ms: i64,
    /// Pauses started in the period, by reason.
    pub pauses: Vec<PauseCount>,
}

impl AgentFigures {
    fn empty(agent: String) -> AgentFigures {
        AgentFigures {
            agent,
            answered: 0,
            talk_ms: 0,
            avg_talk_ms: 0,
            state_ms: STATES.iter().map(|s| ((*s).to_owned(), 0)).collect(),
            login_ms: 0,
            pauses: Vec::new(),
        }
    }
}

/// `sum / n` in whole units, rounded half up; 0 when `n` is 0.
fn average(sum: i64, n: u64) -> i64 {
    match i64::try_from(n) {
        Ok(n) if n > 0 => (sum + n / 2).div_euclid(n),
        _ => 0,
    }
}

fn sql(path: &Path, op: &'static str) -> impl Fn(rusqlite::Error) -> ReportError {
    let path: PathBuf = path.to_owned();
    move |source| ReportError::Sqlite {
        path: path.clone(),
        op,
        source,
    }
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The queue report over `period`: every configured queue and every queue found on a
/// CDR of the period, by name; only `queue` when given. `path` names the store in
/// errors.
pub fn queue_report(
    conn: &Connection,
    path: &Path,
    period: Period,
    queue: Option<&str>,
    threshold: ServiceLevelThreshold,
) -> Result<Vec<QueueFigures>, ReportError> {
    if let Some(name) = queue {
        let known: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)
                     OR EXISTS (SELECT 1 FROM cdrs WHERE queue = ?1)",
                [name],
                |r| r.get(0),
            )
            .map_err(sql(path, "look up the queue"))?;
        if !known {
            return Err(ReportError::UnknownQueue {
                queue: name.to_owned(),
            });
        }
    }
    let mut out: BTreeMap<String, QueueFigures> = BTreeMap::new();
    match queue {
        Some(name) => {
            out.insert(
                name.to_owned(),
                QueueFigures::empty(name.to_owned(), threshold),
            );
        }
        None => {
            let mut stmt = conn
                .prepare("SELECT name FROM queues")
                .map_err(sql(path, "read queues"))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql(path, "read queues"))?;
            for name in names {
                let name = name.map_err(sql(path, "read queues"))?;
                out.insert(name.clone(), QueueFigures::empty(name, threshold));
            }
        }
    }
    let threshold_ms = threshold.seconds() * 1000;

    // Counts, waits and talk time.
    let mut stmt = conn
        .prepare(
            "SELECT queue,
                    COUNT(*),
                    COALESCE(SUM(agent_id IS NOT NULL), 0),
                    COALESCE(SUM(agent_id IS NULL AND queue_overflow IS NULL
                                 AND hangup_side = 'caller'), 0),
                    COALESCE(SUM(agent_id IS NOT NULL AND queue_wait_ms <= :sl), 0),
                    COALESCE(SUM(agent_id IS NULL AND queue_overflow IS NULL
                                 AND hangup_side = 'caller' AND queue_wait_ms <= :sl), 0),
                    COALESCE(SUM(CASE WHEN agent_id IS NOT NULL THEN queue_wait_ms END), 0),
                    COALESCE(MAX(CASE WHEN agent_id IS NOT NULL THEN queue_wait_ms END), 0),
                    COALESCE(SUM(CASE WHEN agent_id IS NOT NULL AND answered_at_ms IS NOT NULL
                                      THEN ended_at_ms - answered_at_ms END), 0),
                    AVG(survey_score),
                    COALESCE(SUM(agent_id IS NULL AND queue_overflow = 'voicemail'), 0),
                    COALESCE(SUM(agent_id IS NULL AND queue_overflow = 'number'), 0),
                    COALESCE(SUM(agent_id IS NULL AND queue_overflow = 'busy'), 0)
             FROM cdrs
             WHERE queue IS NOT NULL AND started_at_ms >= :from AND started_at_ms < :to
               AND (:queue IS NULL OR queue = :queue)
             GROUP BY queue",
        )
        .map_err(sql(path, "count queued calls"))?;
    let mut rows = stmt
        .query(named_params! {
            ":from": period.from_ms,
            ":to": period.to_ms,
            ":queue": queue,
            ":sl": threshold_ms,
        })
        .map_err(sql(path, "count queued calls"))?;
    // Name, the eight counts and sums, the survey average, the overflows by target.
    type QueueRow = (String, [i64; 8], Option<f64>, [i64; 3]);
    while let Some(r) = rows.next().map_err(sql(path, "count queued calls"))? {
        let get = |i| r.get::<_, i64>(i);
        let read = || -> rusqlite::Result<QueueRow> {
            Ok((
                r.get(0)?,
                [
                    get(1)?,
                    get(2)?,
                    get(3)?,
                    get(4)?,
                    get(5)?,
                    get(6)?,
                    get(7)?,
                    get(8)?,
                ],
                r.get(9)?,
                [get(10)?, get(11)?, get(12)?],
            ))
        };
        let (
            name,
            [offered, answered, abandoned, ans_sl, ab_sl, wait, max_wait, talk],
            survey,
            [to_voicemail, to_number, to_busy],
        ) = read().map_err(sql(path, "count queued calls"))?;
        let overflowed = to_voicemail + to_number + to_busy;
        let f = out
            .entry(name.clone())
            .or_insert_with(|| QueueFigures::empty(name, threshold));
        f.offered = count(offered);
        f.answered = count(answered);
        f.abandoned = count(abandoned);
        f.overflowed = count(overflowed);
        f.overflowed_to_voicemail = count(to_voicemail);
        f.overflowed_to_number = count(to_number);
        f.overflowed_to_busy = count(to_busy);
        f.other = count(offered - answered - abandoned - overflowed);
        f.answered_within_threshold = count(ans_sl);
        f.abandoned_within_threshold = count(ab_sl);
        f.avg_wait_ms = average(wait, f.answered);
        f.max_wait_ms = max_wait;
        f.talk_ms = talk;
        f.avg_talk_ms = average(talk, f.answered);
        let judged = offered - ab_sl;
        f.service_level = (judged > 0).then(|| ans_sl as f64 / judged as f64);
        f.survey_avg = survey;
    }
    drop(rows);
    drop(stmt);

    // Calls per hour of day.
    let mut stmt = conn
        .prepare(
            "SELECT queue, (started_at_ms / :hour) % 24, COUNT(*)
             FROM cdrs
             WHERE queue IS NOT NULL AND started_at_ms >= :from AND started_at_ms < :to
               AND (:queue IS NULL OR queue = :queue)
             GROUP BY 1, 2",
        )
        .map_err(sql(path, "count calls per hour"))?;
    let rows = stmt
        .query_map(
            named_params! {
                ":from": period.from_ms,
                ":to": period.to_ms,
                ":queue": queue,
                ":hour": HOUR_MS,
            },
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .map_err(sql(path, "count calls per hour"))?;
    for row in rows {
        let (name, hour, n) = row.map_err(sql(path, "count calls per hour"))?;
        if let (Some(f), Ok(h)) = (out.get_mut(&name), usize::try_from(hour)) {
            if let Some(slot) = f.calls_per_hour.get_mut(h) {
                *slot = count(n);
            }
        }
    }
    drop(stmt);

    // Wrap-up after answered calls: the agent's wrap_up interval starting just after
    // the call ended (same instant in call control), until the agent's next row.
    let mut stmt = conn
        .prepare(
            // Per answered call, two lookups on agent_state_log's (agent_id, at_ms)
            // index (its rowid `id` breaks ties): the wrap_up rows just after the end,
            // and each one's next row. Linear in the calls of the period.
            "SELECT queue, COALESCE(SUM(wrap_ms), 0)
             FROM (
                 SELECT c.queue AS queue,
                        (SELECT SUM(MAX(COALESCE(
                                    (SELECT n.at_ms FROM agent_state_log n
                                      WHERE n.agent_id = w.agent_id
                                        AND (n.at_ms > w.at_ms
                                             OR (n.at_ms = w.at_ms AND n.id > w.id))
                                      ORDER BY n.at_ms, n.id LIMIT 1),
                                    :to), w.at_ms) - w.at_ms)
                           FROM agent_state_log w
                          WHERE w.agent_id = c.agent_id AND w.state = 'wrap_up'
                            AND w.at_ms BETWEEN c.ended_at_ms AND c.ended_at_ms + :match
                        ) AS wrap_ms
                 FROM cdrs c
                 WHERE c.queue IS NOT NULL AND c.agent_id IS NOT NULL
                   AND c.started_at_ms >= :from AND c.started_at_ms < :to
                   AND (:queue IS NULL OR c.queue = :queue)
             )
             GROUP BY queue",
        )
        .map_err(sql(path, "sum wrap-up"))?;
    let rows = stmt
        .query_map(
            named_params! {
                ":from": period.from_ms,
                ":to": period.to_ms,
                ":queue": queue,
                ":match": WRAP_UP_MATCH_MS,
            },
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .map_err(sql(path, "sum wrap-up"))?;
    for row in rows {
        let (name, wrap) = row.map_err(sql(path, "sum wrap-up"))?;
        if let Some(f) = out.get_mut(&name) {
            f.wrap_up_ms = wrap;
        }
    }
    for f in out.values_mut() {
        f.avg_handle_ms = average(f.talk_ms + f.wrap_up_ms, f.answered);
    }
    Ok(out.into_values().collect())
}

/// The agent report over `period`: every agent with a state interval overlapping it
/// or an answered call in it, by agent ID; only `agent` when given (listed even when
/// idle in the period). `path` names the store in errors.
pub fn agent_report(
    conn: &Connection,
    path: &Path,
    period: Period,
    agent: Option<&str>,
) -> Result<Vec<AgentFigures>, ReportError> {
    let mut out: BTreeMap<String, AgentFigures> = BTreeMap::new();
    if let Some(id) = agent {
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM users WHERE agent_id = ?1)
                     OR EXISTS (SELECT 1 FROM agent_state_log WHERE agent_id = ?1)",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, "look up the agent"))?;
        if known.is_none() {
            return Err(ReportError::UnknownAgent {
                agent: id.to_owned(),
            });
        }
        out.insert(id.to_owned(), AgentFigures::empty(id.to_owned()));
    }
    let params = named_params! {
        ":from": period.from_ms,
        ":to": period.to_ms,
        ":agent": agent,
    };
    // Answered calls and talk time.
    let mut stmt = conn
        .prepare(
            "SELECT agent_id, COUNT(*),
                    COALESCE(SUM(CASE WHEN answered_at_ms IS NOT NULL
                                      THEN ended_at_ms - answered_at_ms END), 0)
             FROM cdrs
             WHERE agent_id IS NOT NULL AND started_at_ms >= :from AND started_at_ms < :to
               AND (:agent IS NULL OR agent_id = :agent)
             GROUP BY agent_id",
        )
        .map_err(sql(path, "count answered calls"))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(path, "count answered calls"))?;
    for row in rows {
        let (id, n, talk) = row.map_err(sql(path, "count answered calls"))?;
        let f = out
            .entry(id.clone())
            .or_insert_with(|| AgentFigures::empty(id));
        f.answered = count(n);
        f.talk_ms = talk;
        f.avg_talk_ms = average(talk, f.answered);
    }
    drop(stmt);

    // Time in each state, intervals clipped to the period. Rows at or after `to` are
    // left out, so the last interval before `to` stays open and ends at `to`.
    let mut stmt = conn
        .prepare(
            "WITH iv AS (
                 SELECT agent_id, state, at_ms AS start_ms,
                        COALESCE(LEAD(at_ms) OVER (PARTITION BY agent_id ORDER BY at_ms, id),
                                 :to) AS end_ms
                 FROM agent_state_log
                 WHERE at_ms < :to AND (:agent IS NULL OR agent_id = :agent)
             )
             SELECT agent_id, state, SUM(MIN(end_ms, :to) - MAX(start_ms, :from))
             FROM iv
             WHERE end_ms > :from
             GROUP BY agent_id, state",
        )
        .map_err(sql(path, "sum agent state times"))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(path, "sum agent state times"))?;
    for row in rows {
        let (id, state, ms) = row.map_err(sql(path, "sum agent state times"))?;
        let f = out
            .entry(id.clone())
            .or_insert_with(|| AgentFigures::empty(id));
        // Zero-length intervals (two rows in the same ms) add nothing.
        *f.state_ms.entry(state.clone()).or_insert(0) += ms.max(0);
        if state != "logged_out" {
            f.login_ms += ms.max(0);
        }
    }
    drop(stmt);

    // Pauses by reason.
    let mut stmt = conn
        .prepare(
            "SELECT agent_id, reason, COUNT(*)
             FROM agent_state_log
             WHERE state = 'paused' AND at_ms >= :from AND at_ms < :to
               AND (:agent IS NULL OR agent_id = :agent)
             GROUP BY agent_id, reason
             ORDER BY agent_id, reason",
        )
        .map_err(sql(path, "count pauses"))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(path, "count pauses"))?;
    for row in rows {
        let (id, reason, n) = row.map_err(sql(path, "count pauses"))?;
        let f = out
            .entry(id.clone())
            .or_insert_with(|| AgentFigures::empty(id));
        f.pauses.push(PauseCount {
            reason,
            count: count(n),
        });
    }
    Ok(out.into_values().collect())
}

/// The user ID and groups of each user with an agent ID, for scoping the agent report
/// by the caller's RBAC scope (agents without a user - deleted since - are absent).
pub fn agent_owners(
    conn: &Connection,
    path: &Path,
) -> Result<BTreeMap<String, (crate::rbac::UserId, Vec<crate::rbac::GroupId>)>, ReportError> {
    let mut stmt = conn
        .prepare(
            "SELECT u.agent_id, u.id, m.group_id
             FROM users u LEFT JOIN group_members m ON m.user_id = u.id
             WHERE u.agent_id IS NOT NULL
             ORDER BY u.agent_id, m.group_id",
        )
        .map_err(sql(path, "read agent owners"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(sql(path, "read agent owners"))?;
    let mut out: BTreeMap<String, (crate::rbac::UserId, Vec<crate::rbac::GroupId>)> =
        BTreeMap::new();
    for row in rows {
        let (agent, user, group) = row.map_err(sql(path, "read agent owners"))?;
        let e = out
            .entry(agent)
            .or_insert_with(|| (crate::rbac::UserId(user), Vec::new()));
        if let Some(g) = group {
            e.1.push(crate::rbac::GroupId(g));
        }
    }
    Ok(out)
}
