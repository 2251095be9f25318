//! Lead lists, leads, campaigns and attempts in the store (migration 0021).
//!
//! Every function runs in the caller's connection or transaction; writes go through
//! the store writer thread (`StoreWriter::transact`), so a check and the write it
//! guards happen in one transaction. The dialling decisions are the sans-IO ones of
//! the [parent module](super) ([`pick_number`], [`after_attempt`],
//! [`CallingHours::is_open`]): the store only keeps their results.
//!
//! A lead list feeds at most one campaign (the schema says so), so a lead's dialling
//! state (pending / dialing / done, attempts, due time, assigned agent) lives on the
//! lead itself. At most one attempt per lead is open at a time (a unique partial
//! index backs the check in [`start_attempt`]).
//!
//! # Sync to HQ
//!
//! Results and progress go to HQ through the outbox, in the same transaction as the
//! change (issue 10): [`finish_attempt`] and [`wrap_up`] queue the attempt whole as a
//! `campaign_result` record ([`CampaignResultRecord`], keyed by attempt id: HQ keeps
//! the latest), and [`finish_attempt`], [`set_state`] and a lead finished without a
//! call in [`start_attempt`] queue the campaign's [`progress`] as a
//! `campaign_progress` record. A refused change writes neither. Lead lists, leads and
//! campaign settings themselves stay on the box (HQ sees the campaign by name in
//! these records); nothing about campaigns syncs down.

use std::collections::BTreeMap;
use std::path::Path;

use branchline_sync::wire::{CampaignProgressRecord, CampaignResultRecord, RecordKind};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{
    after_attempt, pick_number, AfterAttempt, CallingHours, CampaignState, LeadResult, Mode,
    Outcome, RetryRules,
};
use crate::accounts::PageRequest;
use crate::error::{Error, FieldProblem, Result};
use crate::site_time::SiteZone;

/// Characters in a list's or campaign's name.
pub const MAX_NAME_CHARS: usize = 64;
/// Characters in an attempt's notes.
pub const MAX_NOTES_CHARS: usize = 2000;
/// Longest ring before an unanswered attempt counts as no answer, in seconds.
pub const MAX_RING_TIMEOUT_S: u32 = 120;

pub(crate) fn sql<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn invalid(entity: &'static str, key: impl Into<String>, problems: Vec<FieldProblem>) -> Error {
    Error::Invalid {
        entity,
        key: key.into(),
        problems,
    }
}

fn conflict(what: &'static str, key: impl ToString, why: impl Into<String>) -> Error {
    Error::CampaignConflict {
        what,
        key: key.to_string(),
        why: why.into(),
    }
}

fn not_found(entity: &'static str, key: impl ToString) -> Error {
    Error::NotFound {
        entity,
        key: key.to_string(),
    }
}

fn corrupt(path: &Path, table: &'static str, key: i64, column: &'static str, value: &str) -> Error {
    Error::StoreCorrupt {
        path: path.to_owned(),
        table,
        key: key.to_string(),
        column,
        value: value.to_owned(),
    }
}

fn check_name(field: &str, name: &str, problems: &mut Vec<FieldProblem>) -> String {
    let t = name.trim();
    if t.is_empty() {
        problems.push(problem(field, "must not be empty"));
    } else if t.chars().count() > MAX_NAME_CHARS {
        problems.push(problem(
            field,
            format!("at most {MAX_NAME_CHARS} characters"),
        ));
    } else if t.chars().any(char::is_control) {
        problems.push(problem(field, "must not hold control characters"));
    }
    t.to_owned()
}

// --- lead lists -------------------------------------------------------------------------

/// A lead list with its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeadListRow {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Leads in it.
    pub leads: i64,
    /// The campaign using it, if any.
    pub campaign_id: Option<i64>,
    /// Who made it.
    pub created_by: String,
    /// When (ms since the epoch).
    pub created_at_ms: i64,
}

/// The body of `POST /api/v1/lead-lists`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadListInput {
    /// Name, unique.
    pub name: String,
}

/// Makes an empty lead list.
pub fn create_list(
    conn: &Connection,
    path: &Path,
    input: &LeadListInput,
    by: &str,
    now_ms: i64,
) -> Result<LeadListRow> {
    let mut p = Vec::new();
    let name = check_name("name", &input.name, &mut p);
    if !p.is_empty() {
        return Err(invalid("lead list", name, p));
    }
    let taken: Option<i64> = conn
        .query_row("SELECT id FROM lead_lists WHERE name = ?1", [&name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql(path, "look up lead list"))?;
    if let Some(id) = taken {
        return Err(conflict(
            "lead list",
            &name,
            format!("the name is list {id}'s"),
        ));
    }
    conn.execute(
        "INSERT INTO lead_lists (name, created_by, created_at_ms) VALUES (?1, ?2, ?3)",
        params![name, by, now_ms],
    )
    .map_err(sql(path, "insert lead list"))?;
    get_list(conn, path, conn.last_insert_rowid())
}

const LIST_COLUMNS: &str = "SELECT l.id, l.name, \
     (SELECT count(*) FROM leads WHERE list_id = l.id), \
     (SELECT id FROM campaigns WHERE list_id = l.id), l.created_by, l.created_at_ms \
     FROM lead_lists l";

fn list_row(r: &Row<'_>) -> rusqlite::Result<LeadListRow> {
    Ok(LeadListRow {
        id: r.get(0)?,
        name: r.get(1)?,
        leads: r.get(2)?,
        campaign_id: r.get(3)?,
        created_by: r.get(4)?,
        created_at_ms: r.get(5)?,
    })
}

/// One lead list.
pub fn get_list(conn: &Connection, path: &Path, id: i64) -> Result<LeadListRow> {
    conn.query_row(&format!("{LIST_COLUMNS} WHERE l.id = ?1"), [id], list_row)
        .optional()
        .map_err(sql(path, "read lead list"))?
        .ok_or_else(|| not_found("lead list", id))
}

/// Every lead list, by name.
pub fn lists(conn: &Connection, path: &Path) -> Result<Vec<LeadListRow>> {
    let mut stmt = conn
        .prepare(&format!("{LIST_COLUMNS} ORDER BY l.name"))
        .map_err(sql(path, "list lead lists"))?;
    let rows = stmt
        .query_map([], list_row)
        .and_then(Iterator::collect)
        .map_err(sql(path, "list lead lists"));
    rows
}

/// Deletes a lead list and its leads; refused while a campaign uses it.
pub fn delete_list(conn: &Connection, path: &Path, id: i64) -> Result<LeadListRow> {
    let row = get_list(conn, path, id)?;
    if let Some(c) = row.campaign_id {
        return Err(conflict(
            "lead list",
            id,
            format!("campaign {c} uses it; delete the campaign first"),
        ));
    }
    conn.execute("DELETE FROM lead_lists WHERE id = ?1", [id])
        .map_err(sql(path, "delete lead list"))?;
    Ok(row)
}

/// Every number of list `list_id`, for the import's duplicate check.
pub(crate) fn list_numbers(
    conn: &Connection,
    path: &Path,
    list_id: i64,
) -> Result<BTreeMap<String, i64>> {
    let mut stmt = conn
        .prepare("SELECT number, lead_id FROM lead_numbers WHERE list_id = ?1")
        .map_err(sql(path, "read lead numbers"))?;
    let rows = stmt
        .query_map([list_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(sql(path, "read lead numbers"));
    rows
}

/// A checked lead, ready to insert (see [`super::csv`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLead {
    /// Name (may be empty).
    pub name: String,
    /// Normalised numbers, distinct.
    pub numbers: Vec<String>,
    /// Linked customer.
    pub customer_id: Option<i64>,
    /// Custom data as a JSON object.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Inserts checked leads into list `list_id` (the caller checked them against the
/// list's numbers in the same transaction).
pub(crate) fn insert_leads_unchecked(
    conn: &Connection,
    path: &Path,
    list_id: i64,
    leads: &[ValidLead],
    now_ms: i64,
) -> Result<()> {
    let mut lead = conn
        .prepare_cached(
            "INSERT INTO leads (list_id, name, customer_id, data, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )
        .map_err(sql(path, "insert lead"))?;
    let mut number = conn
        .prepare_cached(
            "INSERT INTO lead_numbers (list_id, number, lead_id, position) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql(path, "insert lead number"))?;
    for l in leads {
        let data = serde_json::Value::Object(l.data.clone()).to_string();
        lead.execute(params![list_id, l.name, l.customer_id, data, now_ms])
            .map_err(sql(path, "insert lead"))?;
        let id = conn.last_insert_rowid();
        for (i, n) in l.numbers.iter().enumerate() {
            number
                .execute(params![list_id, n, id, i as i64])
                .map_err(sql(path, "insert lead number"))?;
        }
    }
    Ok(())
}

// --- leads --------------------------------------------------------------------------------

/// A lead as the API shows it (numbers unmasked: the caller masks).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadRow {
    /// Id.
    pub id: i64,
    /// Its list.
    pub list_id: i64,
    /// Name.
    pub name: String,
    /// Numbers in the order they are tried.
    pub numbers: Vec<String>,
    /// Linked customer.
    pub customer_id: Option<i64>,
    /// Custom data.
    pub data: serde_json::Value,
    /// The agent (user id) it is assigned to.
    pub assigned_user_id: Option<i64>,
    /// `pending`, `dialing` or `done`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Due at (ms since the epoch; 0 = now).
    pub next_at_ms: i64,
    /// Why it is done.
    pub result: Option<LeadResult>,
}

const LEAD_COLUMNS: &str = "SELECT l.id, l.list_id, l.name, l.customer_id, l.data, \
     l.assigned_user_id, l.state, l.attempts, l.next_at_ms, l.result, \
     (SELECT group_concat(number, ';') FROM \
        (SELECT number FROM lead_numbers WHERE lead_id = l.id ORDER BY position)) \
     FROM leads l";

fn lead_row(path: &Path, r: &Row<'_>) -> rusqlite::Result<Result<LeadRow>> {
    let id: i64 = r.get(0)?;
    let data: String = r.get(4)?;
    let result: Option<String> = r.get(9)?;
    let numbers: Option<String> = r.get(10)?;
    let attempts: i64 = r.get(7)?;
    let result = match result.as_deref().map(|s| (s, LeadResult::from_db(s))) {
        None => None,
        Some((_, Some(r))) => Some(r),
        Some((s, None)) => return Ok(Err(corrupt(path, "leads", id, "result", s))),
    };
    let Ok(data) = serde_json::from_str(&data) else {
        return Ok(Err(corrupt(path, "leads", id, "data", &data)));
    };
    Ok(Ok(LeadRow {
        id,
        list_id: r.get(1)?,
        name: r.get(2)?,
        customer_id: r.get(3)?,
        data,
        assigned_user_id: r.get(5)?,
        state: r.get(6)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_at_ms: r.get(8)?,
        result,
        numbers: numbers
            .map(|n| n.split(';').map(str::to_owned).collect())
            .unwrap_or_default(),
    }))
}

fn query_leads(
    conn: &Connection,
    path: &Path,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<LeadRow>> {
    let mut stmt = conn
        .prepare(&format!("{LEAD_COLUMNS} {tail}"))
        .map_err(sql(path, "read leads"))?;
    let rows: Vec<Result<LeadRow>> = stmt
        .query_map(params, |r| lead_row(path, r))
        .and_then(Iterator::collect)
        .map_err(sql(path, "read leads"))?;
    rows.into_iter().collect()
}

/// One lead.
pub fn get_lead(conn: &Connection, path: &Path, id: i64) -> Result<LeadRow> {
    query_leads(conn, path, "WHERE l.id = ?1", [id])?
        .pop()
        .ok_or_else(|| not_found("lead", id))
}

/// One page of list `list_id`'s leads, by id; `assigned` keeps only one agent's.
/// Returns the page and the total.
pub fn leads(
    conn: &Connection,
    path: &Path,
    list_id: i64,
    assigned: Option<i64>,
    page: PageRequest,
) -> Result<(Vec<LeadRow>, i64)> {
    page.validate()?;
    get_list(conn, path, list_id)?;
    let total: i64 = conn
        .query_row(
            "SELECT count(*) FROM leads WHERE list_id = ?1 \
             AND (?2 IS NULL OR assigned_user_id = ?2)",
            params![list_id, assigned],
            |r| r.get(0),
        )
        .map_err(sql(path, "count leads"))?;
    let rows = query_leads(
        conn,
        path,
        "WHERE l.list_id = ?1 AND (?2 IS NULL OR l.assigned_user_id = ?2) \
         ORDER BY l.id LIMIT ?3 OFFSET ?4",
        params![list_id, assigned, page.limit, page.offset],
    )?;
    Ok((rows, total))
}

/// An attempt of a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Id.
    pub id: i64,
    /// Campaign.
    pub campaign_id: i64,
    /// Lead.
    pub lead_id: i64,
    /// Number dialled (unmasked: the caller masks).
    pub number: String,
    /// Agent (user id).
    pub agent_user_id: Option<i64>,
    /// The call's id (its CDR).
    pub call_id: Option<String>,
    /// Started (ms since the epoch).
    pub started_at_ms: i64,
    /// Ended, when it has.
    pub ended_at_ms: Option<i64>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// The agent's disposition digit.
    pub disposition: Option<u8>,
    /// The agent's notes.
    pub notes: String,
}

const ATTEMPT_COLUMNS: &str = "SELECT id, campaign_id, lead_id, number, agent_user_id, call_id, \
     started_at_ms, ended_at_ms, outcome, disposition, notes FROM lead_attempts";

fn attempt_row(path: &Path, r: &Row<'_>) -> rusqlite::Result<Result<AttemptRow>> {
    let id: i64 = r.get(0)?;
    let outcome: Option<String> = r.get(8)?;
    let outcome = match outcome.as_deref().map(|s| (s, Outcome::from_db(s))) {
        None => None,
        Some((_, Some(o))) => Some(o),
        Some((s, None)) => return Ok(Err(corrupt(path, "lead_attempts", id, "outcome", s))),
    };
    let disposition: Option<i64> = r.get(9)?;
    Ok(Ok(AttemptRow {
        id,
        campaign_id: r.get(1)?,
        lead_id: r.get(2)?,
        number: r.get(3)?,
        agent_user_id: r.get(4)?,
        call_id: r.get(5)?,
        started_at_ms: r.get(6)?,
        ended_at_ms: r.get(7)?,
        outcome,
        disposition: disposition.and_then(|d| u8::try_from(d).ok()),
        notes: r.get(10)?,
    }))
}

/// Lead `lead_id`'s attempts, oldest first.
pub fn attempts(conn: &Connection, path: &Path, lead_id: i64) -> Result<Vec<AttemptRow>> {
    let mut stmt = conn
        .prepare(&format!("{ATTEMPT_COLUMNS} WHERE lead_id = ?1 ORDER BY id"))
        .map_err(sql(path, "read attempts"))?;
    let rows: Vec<Result<AttemptRow>> = stmt
        .query_map([lead_id], |r| attempt_row(path, r))
        .and_then(Iterator::collect)
        .map_err(sql(path, "read attempts"))?;
    rows.into_iter().collect()
}

/// One attempt.
pub fn get_attempt(conn: &Connection, path: &Path, id: i64) -> Result<AttemptRow> {
    let mut stmt = conn
        .prepare(&format!("{ATTEMPT_COLUMNS} WHERE id = ?1"))
        .map_err(sql(path, "read attempt"))?;
    let row = stmt
        .query_row([id], |r| attempt_row(path, r))
        .optional()
        .map_err(sql(path, "read attempt"))?;
    row.ok_or_else(|| not_found("attempt", id))?
}

// --- campaigns ------------------------------------------------------------------------------

/// The body of `POST /api/v1/campaigns` and `PUT /api/v1/campaigns/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// Name, unique.
    pub name: String,
    /// The lead list (not used by another campaign).
    pub list_id: i64,
    /// The agent group (by id).
    pub group_id: i64,
    /// `preview` or `progressive`.
    pub mode: Mode,
    /// Calling hours: `"HH:MM"` start.
    pub hours_start: String,
    /// Calling hours: `"HH:MM"` end (`"24:00"` allowed).
    pub hours_end: String,
    /// Weekdays, `["mon", ..., "sun"]`.
    pub weekdays: Vec<String>,
    /// Attempts per lead at most.
    pub max_attempts: u32,
    /// Retry spacing after busy, seconds.
    pub busy_retry_s: u32,
    /// Retry spacing after no answer, seconds.
    pub no_answer_retry_s: u32,
    /// Retry spacing after a failure, seconds.
    pub failed_retry_s: u32,
    /// Ring time before an attempt counts as no answer, seconds (5-120).
    pub ring_timeout_s: u32,
    /// The caller ID presented (digits, optional `+`); empty for the route's default.
    #[serde(default)]
    pub caller_id: String,
}

/// Weekday names as the API takes them, Monday first (bit 0).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_hhmm(field: &str, s: &str, p: &mut Vec<FieldProblem>) -> u16 {
    let parsed = s.split_once(':').and_then(|(h, m)| {
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    });
    parsed.unwrap_or_else(|| {
        p.push(problem(
            field,
            format!("{s:?} is not a time HH:MM (00:00 to 24:00)"),
        ));
        0
    })
}

fn hhmm(min: u16) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// A checked campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCampaign {
    /// Name.
    pub name: String,
    /// Lead list.
    pub list_id: i64,
    /// Agent group.
    pub group_id: i64,
    /// Mode.
    pub mode: Mode,
    /// Calling hours.
    pub hours: CallingHours,
    /// Retry rules.
    pub retry: RetryRules,
    /// Ring timeout, seconds.
    pub ring_timeout_s: u32,
    /// Caller ID ("" = the route's).
    pub caller_id: String,
}

impl CampaignInput {
    /// Checks the fields (not the references: [`create_campaign`] does); every
    /// problem names its field.
    pub fn check(&self) -> std::result::Result<ValidCampaign, Vec<FieldProblem>> {
        let mut p = Vec::new();
        let name = check_name("name", &self.name, &mut p);
        let start = parse_hhmm("hours_start", &self.hours_start, &mut p);
        let end = parse_hhmm("hours_end", &self.hours_end, &mut p);
        let mut weekdays = 0u8;
        for d in &self.weekdays {
            match WEEKDAYS
                .iter()
                .position(|w| w.eq_ignore_ascii_case(d.trim()))
            {
                Some(i) => weekdays |= 1 << i,
                None => p.push(problem(
                    "weekdays",
                    format!("{d:?} is not a day (one of {})", WEEKDAYS.join(", ")),
                )),
            }
        }
        let hours = if p.is_empty() {
            CallingHours::new(start, end, weekdays)
                .map_err(|ps| p.extend(ps))
                .ok()
        } else {
            None
        };
        let retry = RetryRules::new(
            self.max_attempts,
            self.busy_retry_s,
            self.no_answer_retry_s,
            self.failed_retry_s,
        )
        .map_err(|ps| p.extend(ps))
        .ok();
        if !(5..=MAX_RING_TIMEOUT_S).contains(&self.ring_timeout_s) {
            p.push(problem(
                "ring_timeout_s",
                format!("must be 5 to {MAX_RING_TIMEOUT_S} seconds"),
            ));
        }
        let caller_id = if self.caller_id.trim().is_empty() {
            String::new()
        } else {
            match crate::customers::normalize_number(&self.caller_id) {
                Ok(n) => n,
                Err(m) => {
                    p.push(problem("caller_id", m));
                    String::new()
                }
            }
        };
        match (hours, retry) {
            (Some(hours), Some(retry)) if p.is_empty() => Ok(ValidCampaign {
                name,
                list_id: self.list_id,
                group_id: self.group_id,
                mode: self.mode,
                hours,
                retry,
                ring_timeout_s: self.ring_timeout_s,
                caller_id,
            }),
            _ => Err(p),
        }
    }
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignRow {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Lead list.
    pub list_id: i64,
    /// Agent group.
    pub group_id: i64,
    /// Mode.
    pub mode: Mode,
    /// State.
    pub state: CampaignState,
    /// Calling hours.
    pub hours: CallingHours,
    /// The site's time zone the hours are on (`crate::site_time::store::zone`).
    pub zone: SiteZone,
    /// Retry rules.
    pub retry: RetryRules,
    /// Ring timeout, seconds.
    pub ring_timeout_s: u32,
    /// Caller ID ("" = the route's).
    pub caller_id: String,
    /// Who made it.
    pub created_by: String,
    /// Made at (ms).
    pub created_at_ms: i64,
    /// Changed at (ms).
    pub updated_at_ms: i64,
}

impl CampaignRow {
    /// The campaign as the API shows it (hours as `HH:MM` and day names).
    pub fn to_json(&self) -> serde_json::Value {
        let days: Vec<&str> = WEEKDAYS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.hours.weekdays & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect();
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "list_id": self.list_id,
            "group_id": self.group_id,
            "mode": self.mode,
            "state": self.state,
            "hours_start": hhmm(self.hours.start_min),
            "hours_end": hhmm(self.hours.end_min),
            "weekdays": days,
            "time_zone": self.zone.name(),
            "max_attempts": self.retry.max_attempts,
            "busy_retry_s": self.retry.busy_retry_s,
            "no_answer_retry_s": self.retry.no_answer_retry_s,
            "failed_retry_s": self.retry.failed_retry_s,
            "ring_timeout_s": self.ring_timeout_s,
            "caller_id": self.caller_id,
            "created_by": self.created_by,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        })
    }
}

const CAMPAIGN_COLUMNS: &str = "SELECT id, name, list_id, group_id, mode, state, \
     hours_start_min, hours_end_min, weekdays, max_attempts, busy_retry_s, \
     no_answer_retry_s, failed_retry_s, ring_timeout_s, caller_id, created_by, \
     created_at_ms, updated_at_ms FROM campaigns";

fn campaign_row(
    path: &Path,
    zone: &SiteZone,
    r: &Row<'_>,
) -> rusqlite::Result<Result<CampaignRow>> {
    let id: i64 = r.get(0)?;
    let mode: String = r.get(4)?;
    let state: String = r.get(5)?;
    let Some(mode) = Mode::from_db(&mode) else {
        return Ok(Err(corrupt(path, "campaigns", id, "mode", &mode)));
    };
    let Some(state) = CampaignState::from_db(&state) else {
        return Ok(Err(corrupt(path, "campaigns", id, "state", &state)));
    };
    let hours = CallingHours::new(r.get(6)?, r.get(7)?, r.get(8)?);
    let retry = RetryRules::new(r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?);
    let (Ok(hours), Ok(retry)) = (hours, retry) else {
        return Ok(Err(corrupt(
            path,
            "campaigns",
            id,
            "hours/retry",
            "out of range",
        )));
    };
    Ok(Ok(CampaignRow {
        id,
        name: r.get(1)?,
        list_id: r.get(2)?,
        group_id: r.get(3)?,
        mode,
        state,
        hours,
        zone: zone.clone(),
        retry,
        ring_timeout_s: r.get(13)?,
        caller_id: r.get(14)?,
        created_by: r.get(15)?,
        created_at_ms: r.get(16)?,
        updated_at_ms: r.get(17)?,
    }))
}

/// One campaign.
pub fn get_campaign(conn: &Connection, path: &Path, id: i64) -> Result<CampaignRow> {
    let zone = crate::site_time::store::zone(conn, path)?;
    let mut stmt = conn
        .prepare_cached(&format!("{CAMPAIGN_COLUMNS} WHERE id = ?1"))
        .map_err(sql(path, "read campaign"))?;
    let row = stmt
        .query_row([id], |r| campaign_row(path, &zone, r))
        .optional()
        .map_err(sql(path, "read campaign"))?;
    row.ok_or_else(|| not_found("campaign", id))?
}

/// Every campaign, by name.
pub fn campaigns(conn: &Connection, path: &Path) -> Result<Vec<CampaignRow>> {
    let zone = crate::site_time::store::zone(conn, path)?;
    let mut stmt = conn
        .prepare(&format!("{CAMPAIGN_COLUMNS} ORDER BY name"))
        .map_err(sql(path, "list campaigns"))?;
    let rows: Vec<Result<CampaignRow>> = stmt
        .query_map([], |r| campaign_row(path, &zone, r))
        .and_then(Iterator::collect)
        .map_err(sql(path, "list campaigns"))?;
    rows.into_iter().collect()
}

/// The references of `v`: the list exists and no other campaign uses it, the group
/// exists, the name is free.
fn check_refs(conn: &Connection, path: &Path, v: &ValidCampaign, me: Option<i64>) -> Result<()> {
    let one = |q: &str, p: &dyn rusqlite::ToSql| -> Result<Option<i64>> {
        conn.query_row(q, [p], |r| r.get(0))
            .optional()
            .map_err(sql(path, "check campaign references"))
    };
    let mut p = Vec::new();
    if one("SELECT id FROM lead_lists WHERE id = ?1", &v.list_id)?.is_none() {
        p.push(problem("list_id", format!("no lead list {}", v.list_id)));
    }
    if one("SELECT id FROM groups WHERE id = ?1", &v.group_id)?.is_none() {
        p.push(problem("group_id", format!("no group {}", v.group_id)));
    }
    if !p.is_empty() {
        return Err(invalid("campaign", &v.name, p));
    }
    if let Some(other) = one("SELECT id FROM campaigns WHERE list_id = ?1", &v.list_id)? {
        if Some(other) != me {
            return Err(conflict(
                "campaign",
                &v.name,
                format!("lead list {} is campaign {other}'s", v.list_id),
            ));
        }
    }
    if let Some(other) = one("SELECT id FROM campaigns WHERE name = ?1", &v.name)? {
        if Some(other) != me {
            return Err(conflict(
                "campaign",
                &v.name,
                format!("the name is campaign {other}'s"),
            ));
        }
    }
    Ok(())
}

/// Makes a campaign (state draft).
pub fn create_campaign(
    conn: &Connection,
    path: &Path,
    v: &ValidCampaign,
    by: &str,
    now_ms: i64,
) -> Result<CampaignRow> {
    check_refs(conn, path, v, None)?;
    conn.execute(
        "INSERT INTO campaigns (name, list_id, group_id, mode, hours_start_min, hours_end_min, \
         weekdays, utc_offset_min, max_attempts, busy_retry_s, no_answer_retry_s, \
         failed_retry_s, ring_timeout_s, caller_id, created_by, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)",
        params![
            v.name,
            v.list_id,
            v.group_id,
            v.mode.as_str(),
            v.hours.start_min,
            v.hours.end_min,
            v.hours.weekdays,
            v.retry.max_attempts,
            v.retry.busy_retry_s,
            v.retry.no_answer_retry_s,
            v.retry.failed_retry_s,
            v.ring_timeout_s,
            v.caller_id,
            by,
            now_ms
        ],
    )
    .map_err(sql(path, "insert campaign"))?;
    get_campaign(conn, path, conn.last_insert_rowid())
}

/// Replaces campaign `id`'s settings; only while it is a draft or paused. Returns the
/// campaign before and after.
pub fn update_campaign(
    conn: &Connection,
    path: &Path,
    id: i64,
    v: &ValidCampaign,
    now_ms: i64,
) -> Result<(CampaignRow, CampaignRow)> {
    let before = get_campaign(conn, path, id)?;
    if !matches!(before.state, CampaignState::Draft | CampaignState::Paused) {
        return Err(conflict(
            "campaign",
            id,
            format!("is {}; pause it before changing it", before.state.as_str()),
        ));
    }
    if before.state != CampaignState::Draft && v.list_id != before.list_id {
        return Err(conflict(
            "campaign",
            id,
            "the lead list of a campaign that has started cannot change",
        ));
    }
    check_refs(conn, path, v, Some(id))?;
    conn.execute(
        "UPDATE campaigns SET name = ?2, list_id = ?3, group_id = ?4, mode = ?5, \
         hours_start_min = ?6, hours_end_min = ?7, weekdays = ?8, utc_offset_min = 0, \
         max_attempts = ?9, busy_retry_s = ?10, no_answer_retry_s = ?11, failed_retry_s = ?12, \
         ring_timeout_s = ?13, caller_id = ?14, updated_at_ms = ?15 WHERE id = ?1",
        params![
            id,
            v.name,
            v.list_id,
            v.group_id,
            v.mode.as_str(),
            v.hours.start_min,
            v.hours.end_min,
            v.hours.weekdays,
            v.retry.max_attempts,
            v.retry.busy_retry_s,
            v.retry.no_answer_retry_s,
            v.retry.failed_retry_s,
            v.ring_timeout_s,
            v.caller_id,
            now_ms
        ],
    )
    .map_err(sql(path, "update campaign"))?;
    Ok((before, get_campaign(conn, path, id)?))
}

/// Deletes a campaign and its attempts (the lead list stays); refused while it runs.
pub fn delete_campaign(conn: &Connection, path: &Path, id: i64) -> Result<CampaignRow> {
    let row = get_campaign(conn, path, id)?;
    if row.state == CampaignState::Running {
        return Err(conflict("campaign", id, "is running; pause it first"));
    }
    conn.execute("DELETE FROM campaigns WHERE id = ?1", [id])
        .map_err(sql(path, "delete campaign"))?;
    Ok(row)
}

/// Moves campaign `id` to `to` (start, pause, close); see
/// [`CampaignState::may_become`]. Returns the state before.
pub fn set_state(
    conn: &Connection,
    path: &Path,
    id: i64,
    to: CampaignState,
    now_ms: i64,
) -> Result<CampaignState> {
    let row = get_campaign(conn, path, id)?;
    if !row.state.may_become(to) {
        return Err(conflict(
            "campaign",
            id,
            format!("cannot go from {} to {}", row.state.as_str(), to.as_str()),
        ));
    }
    conn.execute(
        "UPDATE campaigns SET state = ?2, updated_at_ms = ?3 WHERE id = ?1",
        params![id, to.as_str(), now_ms],
    )
    .map_err(sql(path, "set campaign state"))?;
    queue_progress(conn, path, id, now_ms)?;
    Ok(row.state)
}

/// Whether user `user_id` is a member of group `group_id`.
pub fn is_member(conn: &Connection, path: &Path, group_id: i64, user_id: i64) -> Result<bool> {
    conn.query_row(
        "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        [group_id, user_id],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(sql(path, "check group membership"))
}

fn require_member(conn: &Connection, path: &Path, c: &CampaignRow, user_id: i64) -> Result<()> {
    if is_member(conn, path, c.group_id, user_id)? {
        Ok(())
    } else {
        Err(conflict(
            "campaign",
            c.id,
            format!(
                "user {user_id} is not a member of the campaign's group {}",
                c.group_id
            ),
        ))
    }
}

/// A supervisor assigns leads of campaign `id` to user `user_id` (a member of the
/// campaign's group), or unassigns them (`None`). Every lead must be in the
/// campaign's list and not finished; otherwise nothing changes. Returns how many.
pub fn assign(
    conn: &Connection,
    path: &Path,
    id: i64,
    lead_ids: &[i64],
    user_id: Option<i64>,
    now_ms: i64,
) -> Result<usize> {
    let c = get_campaign(conn, path, id)?;
    if c.state == CampaignState::Done {
        return Err(conflict("campaign", id, "is done"));
    }
    if let Some(u) = user_id {
        require_member(conn, path, &c, u)?;
    }
    let mut p = Vec::new();
    for (i, lead) in lead_ids.iter().enumerate() {
        let found: Option<(i64, String)> = conn
            .query_row(
                "SELECT list_id, state FROM leads WHERE id = ?1",
                [lead],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(path, "read lead"))?;
        match found {
            Some((list, _)) if list != c.list_id => p.push(problem(
                &format!("leads[{i}]"),
                format!("lead {lead} is not in the campaign's list"),
            )),
            Some((_, state)) if state == "done" => p.push(problem(
                &format!("leads[{i}]"),
                format!("lead {lead} is finished"),
            )),
            Some(_) => {}
            None => p.push(problem(&format!("leads[{i}]"), format!("no lead {lead}"))),
        }
    }
    if lead_ids.is_empty() {
        p.push(problem("leads", "name at least one lead"));
    }
    if !p.is_empty() {
        return Err(invalid("assignment", id.to_string(), p));
    }
    let mut stmt = conn
        .prepare_cached("UPDATE leads SET assigned_user_id = ?2, updated_at_ms = ?3 WHERE id = ?1")
        .map_err(sql(path, "assign lead"))?;
    for lead in lead_ids {
        stmt.execute(params![lead, user_id, now_ms])
            .map_err(sql(path, "assign lead"))?;
    }
    Ok(lead_ids.len())
}

/// An agent asks for their next `n` leads of running campaign `id`: the pending ones
/// already assigned to them, then due unassigned ones (by due time, then id), which
/// become theirs. The same choice as [`super::Dialer::next_for`].
pub fn next_for(
    conn: &Connection,
    path: &Path,
    id: i64,
    user_id: i64,
    n: usize,
    now_ms: i64,
) -> Result<Vec<LeadRow>> {
    let c = get_campaign(conn, path, id)?;
    if c.state != CampaignState::Running {
        return Err(conflict(
            "campaign",
            id,
            format!("is {}, not running", c.state.as_str()),
        ));
    }
    require_member(conn, path, &c, user_id)?;
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mine: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM leads WHERE list_id = ?1 AND assigned_user_id = ?2 \
                 AND state = 'pending' ORDER BY id LIMIT ?3",
            )
            .map_err(sql(path, "pick leads"))?;
        let rows = stmt
            .query_map(params![c.list_id, user_id, limit], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sql(path, "pick leads"))?;
        rows
    };
    let more = limit - mine.len() as i64;
    let fresh: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM leads WHERE list_id = ?1 AND assigned_user_id IS NULL \
                 AND state = 'pending' AND next_at_ms <= ?2 ORDER BY next_at_ms, id LIMIT ?3",
            )
            .map_err(sql(path, "pick leads"))?;
        let rows = stmt
            .query_map(params![c.list_id, now_ms, more], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sql(path, "pick leads"))?;
        rows
    };
    let mut set = conn
        .prepare_cached("UPDATE leads SET assigned_user_id = ?2, updated_at_ms = ?3 WHERE id = ?1")
        .map_err(sql(path, "assign lead"))?;
    for lead in &fresh {
        set.execute(params![lead, user_id, now_ms])
            .map_err(sql(path, "assign lead"))?;
    }
    mine.iter()
        .chain(&fresh)
        .map(|&l| get_lead(conn, path, l))
        .collect()
}

/// What [`start_attempt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// An attempt is open: dial `number`.
    Dial {
        /// The attempt's id.
        attempt_id: i64,
        /// The number to dial.
        number: String,
    },
    /// The lead cannot be dialled and is now finished with this result.
    Finished(LeadResult),
}

/// Opens an attempt of lead `lead_id` in campaign `id` for agent `user_id`: checks
/// the campaign runs, the calling hours are open, the agent is in the group, the lead
/// is in the list, pending, due, not someone else's, then picks the number with
/// [`pick_number`] (`blocked` = the blacklist, asked now). A lead that cannot be
/// dialled is finished instead ([`Started::Finished`]); that change is written.
pub fn start_attempt(
    conn: &Connection,
    path: &Path,
    id: i64,
    lead_id: i64,
    user_id: i64,
    blocked: impl Fn(&str) -> bool,
    now_ms: i64,
) -> Result<Started> {
    let c = get_campaign(conn, path, id)?;
    if c.state != CampaignState::Running {
        return Err(conflict(
            "campaign",
            id,
            format!("is {}, not running", c.state.as_str()),
        ));
    }
    if !c.hours.is_open(now_ms, &c.zone) {
        return Err(conflict(
            "campaign",
            id,
            format!(
                "outside its calling hours ({}-{} {}); they open at {} ms",
                hhmm(c.hours.start_min),
                hhmm(c.hours.end_min),
                c.zone.name(),
                c.hours.next_open(now_ms, &c.zone)
            ),
        ));
    }
    require_member(conn, path, &c, user_id)?;
    let lead = get_lead(conn, path, lead_id)?;
    if lead.list_id != c.list_id {
        return Err(not_found("lead", format!("{lead_id} in campaign {id}")));
    }
    match lead.state.as_str() {
        "pending" => {}
        "dialing" => return Err(conflict("lead", lead_id, "is being dialled already")),
        _ => return Err(conflict("lead", lead_id, "is finished")),
    }
    if lead.assigned_user_id.is_some_and(|a| a != user_id) {
        return Err(conflict("lead", lead_id, "is assigned to another agent"));
    }
    if lead.next_at_ms > now_ms {
        return Err(conflict(
            "lead",
            lead_id,
            format!("is not due before {} ms (retry spacing)", lead.next_at_ms),
        ));
    }
    let open: Option<i64> = conn
        .query_row(
            "SELECT lead_id FROM lead_attempts WHERE agent_user_id = ?1 AND outcome IS NULL",
            [user_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "check open attempts"))?;
    if let Some(other) = open {
        return Err(conflict(
            "lead",
            lead_id,
            format!("the agent is dialling lead {other} already"),
        ));
    }
    match pick_number(&lead.numbers, lead.attempts, blocked) {
        Err(result) => {
            conn.execute(
                "UPDATE leads SET state = 'done', result = ?2, updated_at_ms = ?3 WHERE id = ?1",
                params![lead_id, result.as_str(), now_ms],
            )
            .map_err(sql(path, "finish lead"))?;
            queue_progress(conn, path, id, now_ms)?;
            Ok(Started::Finished(result))
        }
        Ok(number) => {
            conn.execute(
                "INSERT INTO lead_attempts (campaign_id, lead_id, number, agent_user_id, \
                 started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, lead_id, number, user_id, now_ms],
            )
            .map_err(sql(path, "open attempt"))?;
            let attempt_id = conn.last_insert_rowid();
            conn.execute(
                "UPDATE leads SET state = 'dialing', assigned_user_id = ?2, updated_at_ms = ?3 \
                 WHERE id = ?1",
                params![lead_id, user_id, now_ms],
            )
            .map_err(sql(path, "mark lead dialling"))?;
            Ok(Started::Dial {
                attempt_id,
                number: number.to_owned(),
            })
        }
    }
}

/// Links an open attempt to its call (the CDR's call id). A preview attempt whose
/// call has its CDR already (a call that ended before the API linked it) is closed
/// from it at once ([`finish_from_cdr`]).
pub fn link_call(conn: &Connection, path: &Path, attempt_id: i64, call_id: &str) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE lead_attempts SET call_id = ?2 WHERE id = ?1",
            params![attempt_id, call_id],
        )
        .map_err(sql(path, "link attempt to call"))?;
    if n == 0 {
        return Err(not_found("attempt", attempt_id));
    }
    let ended: Option<(String, bool, i64)> = conn
        .query_row(
            "SELECT disposition, callee_port IS NOT NULL OR callee_sip_call_id IS NOT NULL,
                    ended_at_ms
               FROM cdrs WHERE call_id = ?1",
            [call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql(path, "read the attempt's CDR"))?;
    if let Some((disposition, lead_dialled, ended_at_ms)) = ended {
        finish_from_cdr(conn, path, call_id, &disposition, lead_dialled, ended_at_ms)?;
    }
    Ok(())
}

/// Closes the open preview attempt linked to call `call_id` with the outcome the
/// call's CDR tells ([`super::preview_outcome`] of its `disposition` and whether a leg
/// or line went towards the lead), in the CDR's transaction. `None`, with nothing
/// changed, for a call no open preview attempt holds (any other call; a progressive
/// attempt, whose outcome call control reports; an attempt not linked yet, which
/// [`link_call`] closes).
pub fn finish_from_cdr(
    conn: &Connection,
    path: &Path,
    call_id: &str,
    disposition: &str,
    lead_dialled: bool,
    now_ms: i64,
) -> Result<Option<(i64, Outcome, AfterAttempt)>> {
    let attempt: Option<i64> = conn
        .prepare_cached(
            "SELECT a.id FROM lead_attempts a JOIN campaigns c ON c.id = a.campaign_id
              WHERE a.call_id = ?1 AND a.outcome IS NULL AND c.mode = 'preview'",
        )
        .and_then(|mut s| s.query_row([call_id], |r| r.get(0)).optional())
        .map_err(sql(path, "find the call's attempt"))?;
    let Some(attempt) = attempt else {
        return Ok(None);
    };
    let outcome = super::preview_outcome(disposition, lead_dialled);
    let next = finish_attempt(conn, path, attempt, outcome, now_ms)?;
    Ok(Some((attempt, outcome, next)))
}

/// Closes open attempt `attempt_id` with `outcome`: the lead counts the attempt and
/// is finished or due again per [`after_attempt`].
pub fn finish_attempt(
    conn: &Connection,
    path: &Path,
    attempt_id: i64,
    outcome: Outcome,
    now_ms: i64,
) -> Result<AfterAttempt> {
    let a = get_attempt(conn, path, attempt_id)?;
    if a.outcome.is_some() {
        return Err(conflict("attempt", attempt_id, "has ended already"));
    }
    let c = get_campaign(conn, path, a.campaign_id)?;
    let lead = get_lead(conn, path, a.lead_id)?;
    let attempts = lead.attempts + 1;
    let next = after_attempt(&c.retry, attempts, outcome, now_ms);
    conn.execute(
        "UPDATE lead_attempts SET outcome = ?2, ended_at_ms = ?3 WHERE id = ?1",
        params![attempt_id, outcome.as_str(), now_ms],
    )
    .map_err(sql(path, "close attempt"))?;
    let (state, result, next_at) = match next {
        AfterAttempt::Done(r) => ("done", Some(r.as_str()), lead.next_at_ms),
        AfterAttempt::RetryAt(at) => ("pending", None, at),
    };
    conn.execute(
        "UPDATE leads SET state = ?2, result = ?3, attempts = ?4, next_at_ms = ?5, \
         updated_at_ms = ?6 WHERE id = ?1",
        params![a.lead_id, state, result, attempts, next_at, now_ms],
    )
    .map_err(sql(path, "update lead"))?;
    let lead_result = match next {
        AfterAttempt::Done(r) => Some(r),
        AfterAttempt::RetryAt(_) => None,
    };
    queue_result(conn, path, attempt_id, lead_result, now_ms)?;
    queue_progress(conn, path, a.campaign_id, now_ms)?;
    Ok(next)
}

/// The body of `PUT /api/v1/campaign-attempts/{id}/result`: the agent's wrap-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapUpInput {
    /// Disposition digit 0-9.
    pub disposition: Option<u8>,
    /// Notes.
    #[serde(default)]
    pub notes: String,
}

/// Sets an attempt's disposition digit and notes (during or after the call); the
/// attempt goes to HQ again with them.
pub fn wrap_up(
    conn: &Connection,
    path: &Path,
    attempt_id: i64,
    w: &WrapUpInput,
    now_ms: i64,
) -> Result<AttemptRow> {
    let mut p = Vec::new();
    if w.disposition.is_some_and(|d| d > 9) {
        p.push(problem("disposition", "must be a digit 0-9"));
    }
    if w.notes.chars().count() > MAX_NOTES_CHARS {
        p.push(problem(
            "notes",
            format!("at most {MAX_NOTES_CHARS} characters"),
        ));
    }
    if !p.is_empty() {
        return Err(invalid("attempt", attempt_id.to_string(), p));
    }
    get_attempt(conn, path, attempt_id)?;
    conn.execute(
        "UPDATE lead_attempts SET disposition = ?2, notes = ?3 WHERE id = ?1",
        params![attempt_id, w.disposition, w.notes],
    )
    .map_err(sql(path, "wrap up attempt"))?;
    let lead_result: Option<String> = conn
        .query_row(
            "SELECT l.result FROM leads l JOIN lead_attempts a ON a.lead_id = l.id
              WHERE a.id = ?1 AND a.outcome IS NOT NULL
                AND a.id = (SELECT max(id) FROM lead_attempts WHERE lead_id = l.id)",
            [attempt_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "read lead result"))?
        .flatten();
    queue_result(
        conn,
        path,
        attempt_id,
        lead_result.as_deref().and_then(LeadResult::from_db),
        now_ms,
    )?;
    get_attempt(conn, path, attempt_id)
}

fn queue_record(
    conn: &Connection,
    path: &Path,
    kind: RecordKind,
    key: i64,
    payload: &impl Serialize,
    now_ms: i64,
) -> Result<()> {
    crate::store::queue_for_hq(conn, path, kind, &key.to_string(), payload, now_ms)?;
    Ok(())
}

/// The attempt's [`CampaignResultRecord`] (`lead_result`: how the lead finished, when
/// this attempt finished it).
pub fn result_record(
    conn: &Connection,
    path: &Path,
    attempt_id: i64,
    lead_result: Option<LeadResult>,
) -> Result<CampaignResultRecord> {
    let a = get_attempt(conn, path, attempt_id)?;
    let (campaign, lead_name, agent): (String, String, Option<String>) = conn
        .query_row(
            "SELECT c.name, l.name, u.username FROM lead_attempts a
               JOIN campaigns c ON c.id = a.campaign_id
               JOIN leads l ON l.id = a.lead_id
               LEFT JOIN users u ON u.id = a.agent_user_id
              WHERE a.id = ?1",
            [attempt_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql(path, "read attempt for hq"))?;
    Ok(CampaignResultRecord {
        attempt_id,
        campaign_id: a.campaign_id,
        campaign,
        lead_id: a.lead_id,
        lead_name,
        number: a.number,
        agent,
        call_id: a.call_id,
        started_at_ms: a.started_at_ms,
        ended_at_ms: a.ended_at_ms,
        outcome: a.outcome.map(|o| o.as_str().to_owned()),
        disposition: a.disposition,
        notes: a.notes,
        lead_result: lead_result.map(|r| r.as_str().to_owned()),
    })
}

/// Queues attempt `attempt_id` for HQ (see the module docs).
fn queue_result(
    conn: &Connection,
    path: &Path,
    attempt_id: i64,
    lead_result: Option<LeadResult>,
    now_ms: i64,
) -> Result<()> {
    let record = result_record(conn, path, attempt_id, lead_result)?;
    queue_record(
        conn,
        path,
        RecordKind::CampaignResult,
        attempt_id,
        &record,
        now_ms,
    )
}

/// Queues campaign `id`'s progress for HQ (see the module docs).
fn queue_progress(conn: &Connection, path: &Path, id: i64, now_ms: i64) -> Result<()> {
    let c = get_campaign(conn, path, id)?;
    let p = progress(conn, path, id)?;
    let record = CampaignProgressRecord {
        campaign_id: id,
        campaign: c.name,
        state: c.state.as_str().to_owned(),
        leads: p.leads,
        pending: p.pending,
        dialing: p.dialing,
        done: p.done,
        attempts: p.attempts,
        at_ms: now_ms,
    };
    queue_record(
        conn,
        path,
        RecordKind::CampaignProgress,
        id,
        &record,
        now_ms,
    )
}

/// A campaign's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Leads in the list.
    pub leads: i64,
    /// Waiting for an attempt.
    pub pending: i64,
    /// Being dialled.
    pub dialing: i64,
    /// Finished, by result.
    pub done: BTreeMap<String, i64>,
    /// Attempts made, by outcome (`open` for those in flight).
    pub attempts: BTreeMap<String, i64>,
}

/// Campaign `id`'s progress.
pub fn progress(conn: &Connection, path: &Path, id: i64) -> Result<Progress> {
    let c = get_campaign(conn, path, id)?;
    let mut p = Progress::default();
    let mut stmt = conn
        .prepare(
            "SELECT state, coalesce(result, ''), count(*) FROM leads WHERE list_id = ?1 \
             GROUP BY 1, 2",
        )
        .map_err(sql(path, "campaign progress"))?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([c.list_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(Iterator::collect)
        .map_err(sql(path, "campaign progress"))?;
    for (state, result, n) in rows {
        p.leads += n;
        match state.as_str() {
            "pending" => p.pending += n,
            "dialing" => p.dialing += n,
            _ => *p.done.entry(result).or_default() += n,
        }
    }
    let mut stmt = conn
        .prepare(
            "SELECT coalesce(outcome, 'open'), count(*) FROM lead_attempts \
             WHERE campaign_id = ?1 GROUP BY 1",
        )
        .map_err(sql(path, "campaign progress"))?;
    let rows: Vec<(String, i64)> = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(sql(path, "campaign progress"))?;
    p.attempts = rows.into_iter().collect();
    Ok(p)
}

/// Most leads an agent may take at once (the top of `next_leads`).
pub const MAX_NEXT_LEADS: u32 = 100;

/// The site's `next_leads`: how many leads an agent takes at most with one "next".
pub fn next_leads(conn: &Connection, path: &Path) -> Result<u32> {
    conn.query_row(
        "SELECT next_leads FROM campaign_settings WHERE only = 1",
        [],
        |r| r.get(0),
    )
    .map_err(sql(path, "read campaign settings"))
}

/// Sets the site's `next_leads` (1-[`MAX_NEXT_LEADS`]); returns the value before.
pub fn set_next_leads(conn: &Connection, path: &Path, n: u32) -> Result<u32> {
    if !(1..=MAX_NEXT_LEADS).contains(&n) {
        return Err(invalid(
            "campaign settings",
            "",
            vec![problem(
                "next_leads",
                format!("must be 1 to {MAX_NEXT_LEADS}"),
            )],
        ));
    }
    let before = next_leads(conn, path)?;
    conn.execute(
        "UPDATE campaign_settings SET next_leads = ?1 WHERE only = 1",
        [n],
    )
    .map_err(sql(path, "write campaign settings"))?;
    Ok(before)
}

/// Undoes open attempt `attempt_id` that never became a call (the agent's phone
/// could not be rung): the row goes, and the lead is pending again with its attempts
/// and due time as before.
pub fn abort_attempt(conn: &Connection, path: &Path, attempt_id: i64, now_ms: i64) -> Result<()> {
    let a = get_attempt(conn, path, attempt_id)?;
    if a.outcome.is_some() || a.call_id.is_some() {
        return Err(conflict(
            "attempt",
            attempt_id,
            "is a call already; record its result instead",
        ));
    }
    conn.execute("DELETE FROM lead_attempts WHERE id = ?1", [attempt_id])
        .map_err(sql(path, "abort attempt"))?;
    conn.execute(
        "UPDATE leads SET state = 'pending', updated_at_ms = ?2 WHERE id = ?1",
        params![a.lead_id, now_ms],
    )
    .map_err(sql(path, "abort attempt"))?;
    Ok(())
}

/// The blacklist as the do-not-call list: in deny mode every listed number or
/// prefix is blocked for outbound campaign and click-to-dial calls too; in allow mode
/// the list is an inbound allowlist and blocks nothing outbound.
pub fn do_not_call(conn: &Connection, path: &Path) -> Result<impl Fn(&str) -> bool> {
    let (list, _) = crate::blacklist::store::load(conn, path)?;
    Ok(move |n: &str| {
        list.settings().mode == crate::blacklist::Mode::Deny
            && list.lookup(crate::blacklist::Caller::Number(n)).is_some()
    })
}

/// Closes every attempt still open (the daemon's start: a restart or crash ended
/// their calls, so none of them is in flight any more) as [`Outcome::Failed`]: each
/// lead counts the attempt and is due again after the failed-call spacing (or is
/// finished when it had its last attempt), exactly as a failed call would leave it.
/// Returns how many were closed.
pub fn close_open_attempts(conn: &Connection, path: &Path, now_ms: i64) -> Result<usize> {
    let open: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT id FROM lead_attempts WHERE outcome IS NULL ORDER BY id")
            .map_err(sql(path, "read open attempts"))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sql(path, "read open attempts"))?;
        rows
    };
    for &id in &open {
        finish_attempt(conn, path, id, Outcome::Failed, now_ms)?;
    }
    Ok(open.len())
}

/// Finishes pending lead `lead_id` without a dial (`result`: every number
/// blacklisted, or none), as [`super::Dialer::plan`] decided. A lead no longer
/// pending is left as it is; returns whether it was finished.
pub fn finish_lead(
    conn: &Connection,
    path: &Path,
    lead_id: i64,
    result: LeadResult,
    now_ms: i64,
) -> Result<bool> {
    let n = conn
        .execute(
            "UPDATE leads SET state = 'done', result = ?2, updated_at_ms = ?3 \
             WHERE id = ?1 AND state = 'pending'",
            params![lead_id, result.as_str(), now_ms],
        )
        .map_err(sql(path, "finish lead"))?;
    Ok(n == 1)
}
