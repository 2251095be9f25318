//! The daemon's progressive dialer: it runs the [`Dialer`] of every
//! running progressive campaign against the store and hands the dials to call
//! control (`crate::call`'s `campaign` module), which places them and reports each
//! attempt's outcome read from the call.
//!
//! ```text
//! main loop ──available agents (watch)──▶ driver task ──dials──▶ main loop: CallControl::campaign_dial
//!     │                                      ▲  │
//!     └──placed / refused / outcome (events)─┘  └──rounds, results──▶ store writer (one transaction each)
//! ```
//!
//! - A round ([`plan_round`]) is one store transaction: the agents available in the
//!   ACD (the main loop publishes them after every turn) who are users with no attempt
//!   open are the free agents; for each running progressive campaign, by id, the free
//!   members of its group go to the campaign's [`Dialer::plan`]
//!   over its due leads; each dial is opened with [`store::start_attempt`] (every rule
//!   checked again, the blacklist asked right now) and each lead the dialer finished
//!   without a dial (all numbers blacklisted, none) is finished. An agent taken by one
//!   campaign is not free for the next, so there are never more dials in flight than
//!   free agents, one per agent, one per lead (the lead is `dialing` until its result).
//! - The task runs a round when the available agents change, when an attempt ended,
//!   when a campaign's [`Dialer::timeout`] (next due lead,
//!   calling hours) comes, and at least every [`POLL`] (a campaign started, paused or
//!   given leads through the API is seen then; the API does not notify the daemon).
//! - Call control answers each dial: placed ([`DriverEvent::Placed`]: the attempt is
//!   linked to its call id, and the lead pops on the agent's desktop as a `leads`
//!   event), or refused ([`DriverEvent::Refused`]: the agent was no longer free; the
//!   attempt is undone with [`store::abort_attempt`], the lead is pending again and
//!   the agent is left out of rounds for [`REFUSED_BACKOFF`]). The outcome
//!   ([`DriverEvent::Outcome`]) closes the attempt with [`store::finish_attempt`]:
//!   the retry rules decide whether and when the lead is dialled again.
//! - A restart does not double-dial: at start the task closes every attempt left
//!   open ([`store::close_open_attempts`], as `failed`) before its first round, and a
//!   lead is only dialled again when the rules say so.
//! - Shutdown: call control ends the calls (their outcomes come as events), then the
//!   task records the events already sent and stops; it holds a store writer handle,
//!   so the daemon awaits it before joining the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::store::{self, Started};
use super::{CampaignState, Dialer, Lead, LeadState, Mode, Outcome};
use crate::acd::AgentId;
use crate::error::Result;
use crate::store::StoreWriter;

/// Longest wait between two rounds.
pub const POLL: Duration = Duration::from_secs(2);
/// How long an agent whose dial call control refused is left out of rounds.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(10);
/// Due leads of one campaign a round looks at, at most (by due time, then id).
pub const ROUND_LEADS: i64 = 200;

/// A dial a round decided and opened in the store: call control places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDial {
    /// The attempt (`lead_attempts.id`).
    pub attempt_id: i64,
    /// The campaign.
    pub campaign_id: i64,
    /// The lead.
    pub lead_id: i64,
    /// The agent's user id.
    pub user_id: i64,
    /// The agent, as the ACD knows them.
    pub agent: AgentId,
    /// The number to dial (checked against the blacklist in the round).
    pub number: String,
    /// The campaign's caller ID ("" = the agent's extension, mapped by the trunk).
    pub caller_id: String,
    /// The campaign's ring timeout.
    pub ring_timeout: Duration,
}

/// What one round decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The dials to place now.
    pub dials: Vec<PlannedDial>,
    /// Leads finished without a dial (blacklisted, no number).
    pub finished: Vec<i64>,
    /// When the next lead of a running progressive campaign is due (calling hours
    /// counted), ms since the epoch; `None` when none is pending.
    pub next_at_ms: Option<i64>,
}

/// One round in the store (see the module docs): `available` are the agents the ACD
/// has available, `blocked` the blacklist. Run it in one transaction.
pub fn plan_round(
    conn: &Connection,
    path: &Path,
    now_ms: i64,
    available: &[AgentId],
    blocked: impl Fn(&str) -> bool,
) -> Result<Round> {
    let busy: BTreeSet<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT agent_user_id FROM lead_attempts \
                 WHERE outcome IS NULL AND agent_user_id IS NOT NULL",
            )
            .map_err(store::sql(path, "read open attempts"))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(store::sql(path, "read open attempts"))?;
        rows
    };
    // Free agents: available, users, no attempt open (a preview dial counts too).
    let mut free: BTreeMap<i64, AgentId> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, agent_id FROM users WHERE agent_id IS NOT NULL AND enabled = 1",
            )
            .map_err(store::sql(path, "read agents"))?;
        let rows: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(store::sql(path, "read agents"))?;
        rows.into_iter()
            .filter(|(user, _)| !busy.contains(user))
            .filter_map(|(user, agent)| {
                available
                    .iter()
                    .find(|a| a.as_str() == agent)
                    .map(|a| (user, a.clone()))
            })
            .collect()
    };
    let mut round = Round::default();
    let campaigns = store::campaigns(conn, path)?;
    let mut running: Vec<_> = campaigns
        .into_iter()
        .filter(|c| c.mode == Mode::Progressive && c.state == CampaignState::Running)
        .collect();
    running.sort_by_key(|c| c.id);
    for c in running {
        let members: Vec<i64> = {
            let mut v = Vec::new();
            for &user in free.keys() {
                if store::is_member(conn, path, c.group_id, user)? {
                    v.push(user);
                }
            }
            v
        };
        if !members.is_empty() {
            let leads = due_leads(conn, path, c.list_id, now_ms)?;
            let mut dialer = Dialer::new(c.hours, c.zone.clone(), c.retry, leads);
            let dials = dialer.plan(now_ms, &members, &blocked);
            for lead in dialer.leads() {
                if let LeadState::Done(result) = lead.state {
                    if store::finish_lead(conn, path, lead.id, result, now_ms)? {
                        round.finished.push(lead.id);
                    }
                }
            }
            for d in dials {
                match store::start_attempt(conn, path, c.id, d.lead, d.agent, &blocked, now_ms)? {
                    Started::Dial { attempt_id, number } => {
                        let Some(agent) = free.remove(&d.agent) else {
                            continue;
                        };
                        round.dials.push(PlannedDial {
                            attempt_id,
                            campaign_id: c.id,
                            lead_id: d.lead,
                            user_id: d.agent,
                            agent,
                            number,
                            caller_id: c.caller_id.clone(),
                            ring_timeout: Duration::from_secs(u64::from(c.ring_timeout_s)),
                        });
                    }
                    Started::Finished(_) => round.finished.push(d.lead),
                }
            }
        }
        let next_due: Option<i64> = conn
            .query_row(
                "SELECT min(next_at_ms) FROM leads WHERE list_id = ?1 AND state = 'pending'",
                [c.list_id],
                |r| r.get(0),
            )
            .map_err(store::sql(path, "read next due lead"))?;
        if let Some(due) = next_due {
            let at = c.hours.next_open(due.max(now_ms), &c.zone);
            round.next_at_ms = Some(round.next_at_ms.map_or(at, |n: i64| n.min(at)));
        }
    }
    Ok(round)
}

/// The pending leads of list `list_id` due at `now_ms`, at most [`ROUND_LEADS`], as
/// the [`Dialer`] sees them.
fn due_leads(conn: &Connection, path: &Path, list_id: i64, now_ms: i64) -> Result<Vec<Lead>> {
    let ids: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM leads WHERE list_id = ?1 AND state = 'pending' \
                 AND next_at_ms <= ?2 ORDER BY next_at_ms, id LIMIT ?3",
            )
            .map_err(store::sql(path, "read due leads"))?;
        let rows = stmt
            .query_map(params![list_id, now_ms, ROUND_LEADS], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(store::sql(path, "read due leads"))?;
        rows
    };
    ids.into_iter()
        .map(|id| {
            let row = store::get_lead(conn, path, id)?;
            Ok(Lead {
                id,
                numbers: row.numbers,
                attempts: row.attempts,
                next_at_ms: row.next_at_ms,
                assigned: row.assigned_user_id,
                state: LeadState::Pending,
            })
        })
        .collect()
}

/// What the main loop tells the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// Call control placed the dial: the attempt's call id.
    Placed {
        /// The attempt.
        attempt_id: i64,
        /// The call's id.
        call_id: String,
    },
    /// Call control refused the dial: the agent is no longer free (the attempt is
    /// undone), or the number cannot be dialled (`undialable`: the attempt counts as
    /// failed, so the retry rules finish the lead instead of trying it forever).
    Refused {
        /// The attempt.
        attempt_id: i64,
        /// The agent.
        agent: AgentId,
        /// Why (logged).
        why: String,
        /// The number, not the agent, was refused.
        undialable: bool,
    },
    /// The attempt's outcome, read from the call.
    Outcome {
        /// The attempt.
        attempt_id: i64,
        /// The call's id.
        call_id: String,
        /// How it ended.
        outcome: Outcome,
    },
}

/// The driver task's channels (see [`spawn`]).
#[derive(Debug)]
pub struct DriverChannels {
    /// The agents the ACD has available, published by the main loop.
    pub available: watch::Receiver<Vec<AgentId>>,
    /// Placed / refused / outcome from the main loop.
    pub events: mpsc::UnboundedReceiver<DriverEvent>,
    /// Dials for the main loop.
    pub dials: mpsc::UnboundedSender<PlannedDial>,
}

/// Starts the driver task (see the module docs); `clock` gives ms since the epoch.
/// It stops when `stop` is cancelled (after recording the events already sent) or
/// when the main loop's channels are gone.
pub fn spawn(
    writer: StoreWriter,
    channels: DriverChannels,
    stop: CancellationToken,
    clock: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(writer, channels, stop, clock))
}

async fn run(
    writer: StoreWriter,
    mut ch: DriverChannels,
    stop: CancellationToken,
    clock: fn() -> i64,
) {
    let now = clock();
    match writer
        .transact("close open campaign attempts", move |tx, path| {
            store::close_open_attempts(tx, path, now)
        })
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            attempts = n,
            "campaign attempts left open by the last run closed as failed"
        ),
        Err(e) => tracing::error!(error = %e, "open campaign attempts not closed"),
    }
    let mut next_at: Option<i64> = Some(now);
    let mut refused: BTreeMap<AgentId, i64> = BTreeMap::new();
    loop {
        let now = clock();
        let wait = next_at
            .map_or(POLL, |at| {
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
            })
            .min(POLL);
        tokio::select! {
            () = stop.cancelled() => {
                while let Ok(event) = ch.events.try_recv() {
                    record(&writer, event, clock(), &mut refused).await;
                }
                return;
            }
            changed = ch.available.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = ch.events.recv() => {
                let Some(event) = event else { return };
                record(&writer, event, clock(), &mut refused).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
        while let Ok(event) = ch.events.try_recv() {
            record(&writer, event, clock(), &mut refused).await;
        }
        let now = clock();
        refused.retain(|_, until| *until > now);
        let available: Vec<AgentId> = ch
            .available
            .borrow_and_update()
            .iter()
            .filter(|a| !refused.contains_key(*a))
            .cloned()
            .collect();
        if available.is_empty() {
            next_at = None;
            continue;
        }
        let round = writer
            .transact("campaign round", move |tx, path| {
                let dnc = store::do_not_call(tx, path)?;
                plan_round(tx, path, now, &available, dnc)
            })
            .await;
        match round {
            Ok(round) => {
                for lead in &round.finished {
                    tracing::info!(lead, "campaign: lead finished without a dial");
                }
                next_at = round.next_at_ms;
                for dial in round.dials {
                    tracing::info!(
                        campaign = dial.campaign_id,
                        lead = dial.lead_id,
                        attempt = dial.attempt_id,
                        agent = %dial.agent,
                        "campaign: dial planned"
                    );
                    if ch.dials.send(dial).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "campaign round failed; nothing dialled");
                next_at = None;
            }
        }
    }
}

/// Writes what the main loop reported.
async fn record(
    writer: &StoreWriter,
    event: DriverEvent,
    now_ms: i64,
    refused: &mut BTreeMap<AgentId, i64>,
) {
    let (op, outcome) = match event {
        DriverEvent::Placed {
            attempt_id,
            call_id,
        } => (
            "link attempt",
            writer
                .transact("link campaign attempt", move |tx, path| {
                    store::link_call(tx, path, attempt_id, &call_id)
                })
                .await,
        ),
        DriverEvent::Refused {
            attempt_id,
            why,
            undialable: true,
            ..
        } => {
            tracing::warn!(
                attempt = attempt_id,
                why,
                "campaign: the number cannot be dialled; the attempt failed"
            );
            (
                "fail attempt",
                writer
                    .transact("fail campaign attempt", move |tx, path| {
                        store::finish_attempt(tx, path, attempt_id, Outcome::Failed, now_ms)
                            .map(|_| ())
                    })
                    .await,
            )
        }
        DriverEvent::Refused {
            attempt_id,
            agent,
            why,
            undialable: false,
        } => {
            tracing::info!(attempt = attempt_id, %agent, why, "campaign: dial refused; the lead waits");
            let backoff = i64::try_from(REFUSED_BACKOFF.as_millis()).unwrap_or(i64::MAX);
            refused.insert(agent, now_ms + backoff);
            (
                "abort attempt",
                writer
                    .transact("abort campaign attempt", move |tx, path| {
                        store::abort_attempt(tx, path, attempt_id, now_ms)
                    })
                    .await,
            )
        }
        DriverEvent::Outcome {
            attempt_id,
            call_id,
            outcome,
        } => {
            let result = writer
                .transact("finish campaign attempt", move |tx, path| {
                    // A call that failed at once may report before its link.
                    let a = store::get_attempt(tx, path, attempt_id)?;
                    if a.call_id.is_none() {
                        store::link_call(tx, path, attempt_id, &call_id)?;
                    }
                    store::finish_attempt(tx, path, attempt_id, outcome, now_ms)
                })
                .await;
            if let Ok(next) = &result {
                tracing::info!(
                    attempt = attempt_id,
                    outcome = outcome.as_str(),
                    ?next,
                    "campaign: attempt recorded"
                );
            }
            ("finish attempt", result.map(|_| ()))
        }
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, op, "campaign attempt not recorded");
    }
}
