//! Outbound campaigns (issue 10 item 4): lead lists, campaigns and the dialer that
//! decides whom to call next.
//!
//! This module is the sans-IO part: a campaign's rules ([`CallingHours`],
//! [`RetryRules`]), the pure decisions every dial goes through ([`pick_number`],
//! [`after_attempt`]) and the [`Dialer`] state machine that paces a progressive
//! campaign on an injected clock. [`store`] keeps lead lists, leads, campaigns and
//! attempts in SQLite (migration 0021) using the same decisions, and [`csv`] imports
//! lead lists (all or nothing, row-numbered errors, on the customers' CSV machinery).
//!
//! Rules every dial obeys, in the [`Dialer`] and in [`store`] alike:
//! - **Calling hours**: a window of minutes of the day on chosen weekdays, on the
//!   branch's clocks: the site's time zone (`[telephony] time_zone`,
//!   [`crate::site_time`]) with its daylight saving time, so 09:00-20:00 stays
//!   09:00-20:00 local all year. The window does not cross midnight (start < end; end
//!   may be 24:00).
//! - **Blacklist / do-not-call**: every number is checked right before it is dialled
//!   (a predicate the caller passes, in the daemon the site's blacklist); a blocked
//!   number is skipped, and a lead whose numbers are all blocked is finished as
//!   [`LeadResult::Blacklisted`] without a dial.
//! - **Retries**: after a busy, unanswered or failed attempt the lead is due again
//!   after that outcome's spacing, until it has had `max_attempts` attempts; an
//!   answered attempt finishes it. Several numbers are tried in turn (attempt `k`
//!   dials number `k mod n`, skipping blocked ones).
//! - **Pacing** (progressive): a dial is placed only together with a free agent of
//!   the group, reserved for it until its result; so there are never more dials in
//!   flight than agents, and never two at once for one lead or one agent.
//! - **Preview**: an agent asks for their next N leads (assigned to them); pressing
//!   dial on one goes through the same checks ([`Dialer::preview_dial`]).
//!
//! The API (`crate::api`'s `campaigns` module) runs preview campaigns on top of
//! [`store`]: an agent takes leads, presses dial (the attempt is opened with every
//! rule above checked, then click-to-call rings their phone and dials the lead with
//! the outside-line prefix; the attempt carries the call's id), and adds the
//! disposition digit and notes. The attempt's outcome is read from the call: when its
//! CDR is written (in the CDR's transaction, [`store::finish_from_cdr`]) the attempt
//! is closed with [`preview_outcome`] of it, as progressive attempts are closed with
//! the outcome call control reports.
//! Click-to-dial from a customer record goes the same way. Leads an agent takes or is
//! assigned pop on their desktop (a `leads` event on `/api/v1/events`).
//!
//! Progressive campaigns are dialled by the daemon ([`driver`]): rounds in the store
//! run each running progressive campaign's [`Dialer`] over the agents the ACD has
//! available, and call control (`crate::call`'s `campaign` module) dials each lead
//! for its reserved agent, connects the lead to the agent's phone when the lead
//! answers, and reports the attempt's outcome read from the call (answered only once
//! the agent took the call; busy, no answer, failed from the lead's leg). Attempts a
//! restart left open are closed as failed at start. The agent adds the disposition
//! digit and notes through the API as for preview attempts.
//!
//! Sync: each attempt's result and each campaign's progress go up to HQ through the
//! outbox (`campaign_result`, `campaign_progress` records, written in the transaction
//! that changes them); lead lists, leads and campaign settings stay on the box.

pub mod csv;
pub mod driver;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_driver;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::FieldProblem;
use crate::site_time::SiteZone;

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Most attempts a campaign may make per lead.
pub const MAX_ATTEMPTS: u32 = 20;
/// Shortest retry spacing, in seconds.
pub const MIN_RETRY_S: u32 = 60;
/// Longest retry spacing, in seconds (a week).
pub const MAX_RETRY_S: u32 = 604_800;
/// Numbers one lead may have.
pub const MAX_LEAD_NUMBERS: usize = 5;

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// How a campaign dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The agent sees the lead and presses dial.
    Preview,
    /// The box dials the next lead when an agent of the group is free.
    Progressive,
}

impl Mode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Preview => "preview",
            Mode::Progressive => "progressive",
        }
    }

    /// The mode of a stored name.
    pub fn from_db(s: &str) -> Option<Mode> {
        match s {
            "preview" => Some(Mode::Preview),
            "progressive" => Some(Mode::Progressive),
            _ => None,
        }
    }
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Being set up; nothing is dialled.
    Draft,
    /// Dialling.
    Running,
    /// Stopped for now; open attempts finish, no new ones start.
    Paused,
    /// Every lead is finished (or the supervisor closed it); nothing more is dialled.
    Done,
}

impl CampaignState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Done => "done",
        }
    }

    /// The state of a stored name.
    pub fn from_db(s: &str) -> Option<CampaignState> {
        match s {
            "draft" => Some(CampaignState::Draft),
            "running" => Some(CampaignState::Running),
            "paused" => Some(CampaignState::Paused),
            "done" => Some(CampaignState::Done),
            _ => None,
        }
    }

    /// Whether a supervisor may move a campaign from `self` to `to`: draft or paused
    /// to running, running to paused, anything but done to done.
    pub fn may_become(self, to: CampaignState) -> bool {
        use CampaignState::*;
        matches!(
            (self, to),
            (Draft | Paused, Running) | (Running, Paused) | (Draft | Running | Paused, Done)
        )
    }
}

/// When a campaign may dial: minutes `[start_min, end_min)` of the local day, on the
/// weekdays in `weekdays` (bit 0 = Monday ... bit 6 = Sunday), local time being the
/// site's time zone ([`SiteZone`], daylight saving time included: a window 09:00-17:00
/// stays 09:00-17:00 on the branch's clocks all year).
///
/// Across a DST change: a window start that falls in the hour skipped in spring opens
/// at the end of the gap (the first local time past the start); in the hour repeated
/// in autumn the window is open both times the local clock shows a minute inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallingHours {
    /// First minute of the window (0-1439).
    pub start_min: u16,
    /// End of the window, exclusive (1-1440, after `start_min`).
    pub end_min: u16,
    /// Weekday mask, bit 0 = Monday; not 0.
    pub weekdays: u8,
}

impl CallingHours {
    /// Checks the fields; every problem names its field.
    pub fn new(
        start_min: u16,
        end_min: u16,
        weekdays: u8,
    ) -> Result<CallingHours, Vec<FieldProblem>> {
        let mut p = Vec::new();
        if start_min > 1439 {
            p.push(problem("hours.start", "must be 00:00 to 23:59"));
        }
        if !(1..=1440).contains(&end_min) {
            p.push(problem("hours.end", "must be 00:01 to 24:00"));
        } else if end_min <= start_min {
            p.push(problem(
                "hours.end",
                "must be after the start (a window may not cross midnight)",
            ));
        }
        if weekdays == 0 || weekdays > 127 {
            p.push(problem(
                "hours.weekdays",
                "name at least one day, Monday to Sunday",
            ));
        }
        if p.is_empty() {
            Ok(CallingHours {
                start_min,
                end_min,
                weekdays,
            })
        } else {
            Err(p)
        }
    }

    fn day_allowed(&self, day: i64) -> bool {
        // 1970-01-01 was a Thursday: Monday-based weekday 3.
        let weekday = (day + 3).rem_euclid(7);
        self.weekdays & (1 << weekday) != 0
    }

    /// Whether `now_ms` (UTC) is inside the window, on the clocks of `zone`.
    pub fn is_open(&self, now_ms: i64, zone: &SiteZone) -> bool {
        let (day, minute) = zone.local_day_minute(now_ms);
        self.day_allowed(day)
            && minute >= i64::from(self.start_min)
            && minute < i64::from(self.end_min)
    }

    /// `now_ms` when the window is open, else the UTC time it next opens on the clocks
    /// of `zone`.
    pub fn next_open(&self, now_ms: i64, zone: &SiteZone) -> i64 {
        let mut t = now_ms;
        // Each step lands on the next window start at the current UTC offset, or on the
        // instant the offset changes before it; a window opens within 8 days and
        // offsets change at most a few times a year, so a handful of steps suffice.
        for _ in 0..16 {
            if self.is_open(t, zone) {
                return t;
            }
            let (day, minute) = zone.local_day_minute(t);
            let first = if minute < i64::from(self.start_min) {
                day
            } else {
                day + 1
            };
            // The weekday mask is not empty, so an allowed day comes within 7 days.
            let open_day = (first..first + 7)
                .find(|&d| self.day_allowed(d))
                .unwrap_or(first);
            let target_local = open_day * DAY_MS + i64::from(self.start_min) * MINUTE_MS;
            let candidate = t + (target_local - zone.local_ms(t));
            match zone.first_change(t, candidate) {
                None => return candidate,
                Some(change) => t = change,
            }
        }
        now_ms + 8 * DAY_MS
    }
}

/// How a campaign retries a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRules {
    /// Attempts per lead at most (1-[`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Spacing after a busy number, in seconds.
    pub busy_retry_s: u32,
    /// Spacing after nobody answered, in seconds.
    pub no_answer_retry_s: u32,
    /// Spacing after a failed call (route down, congestion), in seconds.
    pub failed_retry_s: u32,
}

impl RetryRules {
    /// Checks the fields; every problem names its field.
    pub fn new(
        max_attempts: u32,
        busy_retry_s: u32,
        no_answer_retry_s: u32,
        failed_retry_s: u32,
    ) -> Result<RetryRules, Vec<FieldProblem>> {
        let mut p = Vec::new();
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            p.push(problem(
                "retry.max_attempts",
                format!("must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
        for (field, s) in [
            ("retry.busy_s", busy_retry_s),
            ("retry.no_answer_s", no_answer_retry_s),
            ("retry.failed_s", failed_retry_s),
        ] {
            if !(MIN_RETRY_S..=MAX_RETRY_S).contains(&s) {
                p.push(problem(
                    field,
                    format!("must be {MIN_RETRY_S} to {MAX_RETRY_S} seconds"),
                ));
            }
        }
        if p.is_empty() {
            Ok(RetryRules {
                max_attempts,
                busy_retry_s,
                no_answer_retry_s,
                failed_retry_s,
            })
        } else {
            Err(p)
        }
    }

    /// The spacing after `outcome`, in milliseconds (0 for an answered call).
    pub fn spacing_ms(&self, outcome: Outcome) -> i64 {
        let s = match outcome {
            Outcome::Answered => 0,
            Outcome::Busy => self.busy_retry_s,
            Outcome::NoAnswer => self.no_answer_retry_s,
            Outcome::Failed => self.failed_retry_s,
        };
        i64::from(s) * 1000
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The callee answered.
    Answered,
    /// The number was busy.
    Busy,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// The call failed (no route, congestion, refused).
    Failed,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no_answer",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome of a stored name.
    pub fn from_db(s: &str) -> Option<Outcome> {
        match s {
            "answered" => Some(Outcome::Answered),
            "busy" => Some(Outcome::Busy),
            "no_answer" => Some(Outcome::NoAnswer),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// Why a lead is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadResult {
    /// An attempt was answered.
    Answered,
    /// Every attempt allowed was made, none answered.
    MaxAttempts,
    /// Every number of the lead is on the blacklist / do-not-call list.
    Blacklisted,
    /// The lead has no number.
    NoNumber,
}

impl LeadResult {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LeadResult::Answered => "answered",
            LeadResult::MaxAttempts => "max_attempts",
            LeadResult::Blacklisted => "blacklisted",
            LeadResult::NoNumber => "no_number",
        }
    }

    /// The result of a stored name.
    pub fn from_db(s: &str) -> Option<LeadResult> {
        match s {
            "answered" => Some(LeadResult::Answered),
            "max_attempts" => Some(LeadResult::MaxAttempts),
            "blacklisted" => Some(LeadResult::Blacklisted),
            "no_number" => Some(LeadResult::NoNumber),
            _ => None,
        }
    }
}

/// The number attempt `attempts` (0-based) of a lead dials: number `attempts mod n`,
/// or the next one after it that `blocked` does not refuse. `Err` when the lead cannot
/// be dialled at all (no number, or every number blocked).
pub fn pick_number(
    numbers: &[String],
    attempts: u32,
    blocked: impl Fn(&str) -> bool,
) -> Result<&str, LeadResult> {
    if numbers.is_empty() {
        return Err(LeadResult::NoNumber);
    }
    let n = numbers.len();
    let first = attempts as usize % n;
    (0..n)
        .map(|i| numbers[(first + i) % n].as_str())
        .find(|num| !blocked(num))
        .ok_or(LeadResult::Blacklisted)
}

/// What becomes of a lead after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterAttempt {
    /// Finished.
    Done(LeadResult),
    /// Due again at this time (ms since the epoch, UTC).
    RetryAt(i64),
}

/// The lead's fate after its attempt number `attempts` (1-based, counting this one)
/// ended with `outcome` at `now_ms`.
pub fn after_attempt(
    rules: &RetryRules,
    attempts: u32,
    outcome: Outcome,
    now_ms: i64,
) -> AfterAttempt {
    match outcome {
        Outcome::Answered => AfterAttempt::Done(LeadResult::Answered),
        _ if attempts >= rules.max_attempts => AfterAttempt::Done(LeadResult::MaxAttempts),
        other => AfterAttempt::RetryAt(now_ms + rules.spacing_ms(other)),
    }
}

/// A preview attempt's outcome read from its call (the click-to-call that rang the
/// agent's phone and then dialled the lead), the way the progressive path reads its
/// own (`crate::call`'s `campaign` module): `disposition` is the call's CDR
/// disposition (its stored name) and `lead_dialled` whether the call had a trunk leg
/// or an FXO line towards the lead. Answered, busy and no answer are the lead's;
/// anything else (unallocated, congestion, no route) is `failed`, and so is a call
/// that never reached the lead (the agent's own phone did not answer or was busy,
/// or nothing could be dialled): the lead is tried again after the failed-call
/// spacing, as when a progressive lead answered but the agent did not take it.
pub fn preview_outcome(disposition: &str, lead_dialled: bool) -> Outcome {
    if !lead_dialled {
        return Outcome::Failed;
    }
    match disposition {
        "answered" => Outcome::Answered,
        "busy" => Outcome::Busy,
        "no_answer" => Outcome::NoAnswer,
        _ => Outcome::Failed,
    }
}

/// A lead as the [`Dialer`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// The lead's id.
    pub id: i64,
    /// Its numbers, in the order to try.
    pub numbers: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Due at (ms since the epoch, UTC); 0 = now.
    pub next_at_ms: i64,
    /// The agent it is assigned to, if any: only that agent gets it.
    pub assigned: Option<i64>,
    /// Where it is.
    pub state: LeadState,
}

/// A lead's dialling state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is in flight, with this agent reserved for it.
    Dialing {
        /// The agent reserved.
        agent: i64,
        /// The number dialled.
        number: String,
    },
    /// Finished.
    Done(LeadResult),
}

/// A dial the [`Dialer`] decided on: call `number` for `lead` and connect it to `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The lead.
    pub lead: i64,
    /// The number to dial (checked against the blacklist just now).
    pub number: String,
    /// The agent reserved for it.
    pub agent: i64,
}

/// Why [`Dialer::preview_dial`] or [`Dialer::result`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such lead.
    #[error("lead {0} is not in this campaign")]
    UnknownLead(i64),
    /// The lead is assigned to another agent.
    #[error("lead {0} is assigned to another agent")]
    NotYours(i64),
    /// The lead has an attempt in flight already.
    #[error("lead {0} is being dialled already")]
    AlreadyDialing(i64),
    /// The agent has an attempt in flight already.
    #[error("agent {0} is on a campaign call already")]
    AgentBusy(i64),
    /// The lead is finished.
    #[error("lead {0} is finished")]
    Finished(i64),
    /// The lead is not due yet (retry spacing).
    #[error("lead {lead} is not due before {due_ms}")]
    NotDue {
        /// The lead.
        lead: i64,
        /// When it is due.
        due_ms: i64,
    },
    /// Outside the calling hours.
    #[error("outside the calling hours; they open at {opens_ms}")]
    Closed {
        /// When they open next.
        opens_ms: i64,
    },
    /// Every number of the lead is blocked (the lead is now finished).
    #[error("lead {0}: every number is on the blacklist")]
    Blacklisted(i64),
    /// The lead has no number (the lead is now finished).
    #[error("lead {0} has no number")]
    NoNumber(i64),
    /// No attempt of the lead is in flight.
    #[error("lead {0} has no attempt in flight")]
    NotDialing(i64),
}

/// A campaign's dialer: the leads, the rules, and the decisions. Sans-IO: every input
/// carries `now_ms`, dials are returned, [`Dialer::timeout`] says when to ask again.
#[derive(Debug, Clone)]
pub struct Dialer {
    hours: CallingHours,
    zone: SiteZone,
    retry: RetryRules,
    leads: BTreeMap<i64, Lead>,
    /// Agents reserved for a dial in flight (each holds at most one).
    busy_agents: BTreeMap<i64, i64>,
}

impl Dialer {
    /// A dialer over `leads` (a lead in [`LeadState::Dialing`] keeps its agent
    /// reserved), with the calling hours on the clocks of `zone`.
    pub fn new(
        hours: CallingHours,
        zone: SiteZone,
        retry: RetryRules,
        leads: impl IntoIterator<Item = Lead>,
    ) -> Dialer {
        let leads: BTreeMap<i64, Lead> = leads.into_iter().map(|l| (l.id, l)).collect();
        let busy_agents = leads
            .values()
            .filter_map(|l| match &l.state {
                LeadState::Dialing { agent, .. } => Some((*agent, l.id)),
                _ => None,
            })
            .collect();
        Dialer {
            hours,
            zone,
            retry,
            leads,
            busy_agents,
        }
    }

    /// A lead by id.
    pub fn lead(&self, id: i64) -> Option<&Lead> {
        self.leads.get(&id)
    }

    /// Every lead.
    pub fn leads(&self) -> impl Iterator<Item = &Lead> {
        self.leads.values()
    }

    /// Dials in flight.
    pub fn in_flight(&self) -> usize {
        self.busy_agents.len()
    }

    /// Whether every lead is finished.
    pub fn is_finished(&self) -> bool {
        self.leads
            .values()
            .all(|l| matches!(l.state, LeadState::Done(_)))
    }

    /// Progressive pacing: the dials to place now, each with one of `free_agents`
    /// (agents of the group that are available; ones already reserved are skipped).
    /// Leads are taken by due time, then id; a lead assigned to an agent waits for
    /// that agent. Nothing is dialled outside the calling hours. A lead whose numbers
    /// are all blocked is finished without a dial.
    pub fn plan(
        &mut self,
        now_ms: i64,
        free_agents: &[i64],
        blocked: impl Fn(&str) -> bool,
    ) -> Vec<Dial> {
        if !self.hours.is_open(now_ms, &self.zone) {
            return Vec::new();
        }
        let mut agents: BTreeSet<i64> = free_agents
            .iter()
            .copied()
            .filter(|a| !self.busy_agents.contains_key(a))
            .collect();
        let mut due: Vec<(i64, i64)> = self
            .leads
            .values()
            .filter(|l| l.state == LeadState::Pending && l.next_at_ms <= now_ms)
            .map(|l| (l.next_at_ms, l.id))
            .collect();
        due.sort_unstable();
        let mut dials = Vec::new();
        for (_, id) in due {
            if agents.is_empty() {
                break;
            }
            let agent = match self.leads[&id].assigned {
                Some(a) if agents.contains(&a) => a,
                Some(_) => continue,
                None => match agents.iter().next() {
                    Some(&a) => a,
                    None => break,
                },
            };
            if let Some(dial) = self.start(id, agent, &blocked) {
                agents.remove(&agent);
                dials.push(dial);
            }
        }
        dials
    }

    /// Starts an attempt of lead `id` with `agent`, or finishes the lead when it
    /// cannot be dialled (`None` then).
    fn start(&mut self, id: i64, agent: i64, blocked: &impl Fn(&str) -> bool) -> Option<Dial> {
        let lead = self.leads.get_mut(&id)?;
        match pick_number(&lead.numbers, lead.attempts, blocked) {
            Ok(number) => {
                let number = number.to_owned();
                lead.state = LeadState::Dialing {
                    agent,
                    number: number.clone(),
                };
                self.busy_agents.insert(agent, id);
                Some(Dial {
                    lead: id,
                    number,
                    agent,
                })
            }
            Err(result) => {
                lead.state = LeadState::Done(result);
                None
            }
        }
    }

    /// Preview: up to `n` leads for `agent`: those assigned to them already and
    /// pending, then unassigned ones that are due, which become theirs.
    pub fn next_for(&mut self, now_ms: i64, agent: i64, n: usize) -> Vec<i64> {
        let mut mine: Vec<i64> = self
            .leads
            .values()
            .filter(|l| l.assigned == Some(agent) && l.state == LeadState::Pending)
            .map(|l| l.id)
            .take(n)
            .collect();
        let mut free: Vec<(i64, i64)> = self
            .leads
            .values()
            .filter(|l| {
                l.assigned.is_none() && l.state == LeadState::Pending && l.next_at_ms <= now_ms
            })
            .map(|l| (l.next_at_ms, l.id))
            .collect();
        free.sort_unstable();
        for (_, id) in free.into_iter().take(n - mine.len()) {
            if let Some(l) = self.leads.get_mut(&id) {
                l.assigned = Some(agent);
            }
            mine.push(id);
        }
        mine
    }

    /// Preview: `agent` pressed dial on lead `id`. Every rule is checked again: the
    /// lead is theirs or unassigned, pending and due, the agent has no dial in flight,
    /// the hours are open, and the number is not blocked.
    pub fn preview_dial(
        &mut self,
        now_ms: i64,
        agent: i64,
        id: i64,
        blocked: impl Fn(&str) -> bool,
    ) -> Result<Dial, Refusal> {
        let lead = self.leads.get(&id).ok_or(Refusal::UnknownLead(id))?;
        match &lead.state {
            LeadState::Done(_) => return Err(Refusal::Finished(id)),
            LeadState::Dialing { .. } => return Err(Refusal::AlreadyDialing(id)),
            LeadState::Pending => {}
        }
        if lead.assigned.is_some_and(|a| a != agent) {
            return Err(Refusal::NotYours(id));
        }
        if self.busy_agents.contains_key(&agent) {
            return Err(Refusal::AgentBusy(agent));
        }
        if lead.next_at_ms > now_ms {
            return Err(Refusal::NotDue {
                lead: id,
                due_ms: lead.next_at_ms,
            });
        }
        if !self.hours.is_open(now_ms, &self.zone) {
            return Err(Refusal::Closed {
                opens_ms: self.hours.next_open(now_ms, &self.zone),
            });
        }
        match self.start(id, agent, &blocked) {
            Some(dial) => Ok(dial),
            None => Err(match self.leads[&id].state {
                LeadState::Done(LeadResult::NoNumber) => Refusal::NoNumber(id),
                _ => Refusal::Blacklisted(id),
            }),
        }
    }

    /// The attempt in flight for lead `id` ended with `outcome`: the agent is free
    /// again, and the lead is finished or due again after the retry spacing.
    pub fn result(
        &mut self,
        now_ms: i64,
        id: i64,
        outcome: Outcome,
    ) -> Result<AfterAttempt, Refusal> {
        let lead = self.leads.get_mut(&id).ok_or(Refusal::UnknownLead(id))?;
        let LeadState::Dialing { agent, .. } = lead.state else {
            return Err(Refusal::NotDialing(id));
        };
        self.busy_agents.remove(&agent);
        lead.attempts += 1;
        let next = after_attempt(&self.retry, lead.attempts, outcome, now_ms);
        match next {
            AfterAttempt::Done(r) => lead.state = LeadState::Done(r),
            AfterAttempt::RetryAt(at) => {
                lead.state = LeadState::Pending;
                lead.next_at_ms = at;
            }
        }
        Ok(next)
    }

    /// When [`Dialer::plan`] may next have something new to dial, if ever without a
    /// result coming in: the earliest due time of a pending lead, moved to the
    /// opening of the calling hours. `None` when no lead is pending.
    pub fn timeout(&self, now_ms: i64) -> Option<i64> {
        let due = self
            .leads
            .values()
            .filter(|l| l.state == LeadState::Pending)
            .map(|l| l.next_at_ms.max(now_ms))
            .min()?;
        Some(self.hours.next_open(due, &self.zone))
    }
}
