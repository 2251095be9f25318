//! What the boxes' small CRM and outbound campaigns send up (issue 10), kept the
//! same way by both stores: campaign attempt results and progress, customers'
//! service records with their call notes, and customers made on a box (HQ schema 10).
//!
//! Each table holds the record as the box sent it (the wire JSON of its kind, already
//! validated by [`crate::hq::validate`]) beside the columns the admin API filters on,
//! so the statements and queries here are written once, in PostgreSQL's dialect with
//! `$N` parameters; `sqlite_dialect` turns them into SQLite's. Parameters and result
//! cells are the store-neutral `Param` and `Cell`; each store binds and reads them
//! with its own driver.
//!
//! Kinds the box sends again after a change (an attempt's result and wrap-up, a
//! campaign's progress, a customer) keep the latest record per (box, epoch, the box's
//! id) by seq; service records and notes are written once. Projections are only run
//! for records new to the `up_records` ledger, so a batch sent twice changes nothing.

use serde::{Deserialize, Serialize};

use crate::hq::validate::{TypedPayload, ValidRecord};
use crate::hq::{Error, Result};
use crate::wire::{
    CallNoteRecord, CampaignProgressRecord, CampaignResultRecord, CustomerRecord, CustomerRef,
    ServiceRecordRecord,
};

use super::MAX_CDR_PAGE;

/// A statement parameter, bound by each store's driver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    /// TEXT.
    Text(String),
    /// TEXT or NULL.
    OptText(Option<String>),
    /// BIGINT.
    Int(i64),
    /// BIGINT or NULL.
    OptInt(Option<i64>),
    /// BOOLEAN (SQLite: 0 or 1).
    Bool(bool),
}

/// The type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    /// BIGINT, maybe NULL.
    Int,
    /// TEXT, maybe NULL.
    Text,
}

/// A result cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// From a [`Col::Int`] column.
    Int(Option<i64>),
    /// From a [`Col::Text`] column.
    Text(Option<String>),
}

impl Cell {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(v) => *v,
            Cell::Text(_) => None,
        }
    }

    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Cell::Text(v) => v.clone(),
            Cell::Int(_) => None,
        }
    }
}

/// A statement or query with its parameters and, for a query, its column types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    /// PostgreSQL's dialect (see [`sqlite_dialect`]).
    pub sql: &'static str,
    /// Parameters `$1`, `$2`, ...
    pub params: Vec<Param>,
    /// The result columns (empty for a statement).
    pub cols: &'static [Col],
}

/// `sql` in SQLite's dialect: `$N` becomes `?N` and the PostgreSQL casts that type
/// NULL parameters (`::text`, `::int8`) go.
pub(crate) fn sqlite_dialect(sql: &str) -> String {
    sql.replace("::text", "")
        .replace("::int8", "")
        .replace('$', "?")
}

// --- ingest ---------------------------------------------------------------------------

const UPSERT_RESULT: &str = "INSERT INTO campaign_results (site, box, epoch, seq, attempt_id, \
     campaign, agent, started_at_ms, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (box, epoch, attempt_id) DO UPDATE SET site = excluded.site, seq = excluded.seq,
         campaign = excluded.campaign, agent = excluded.agent,
         started_at_ms = excluded.started_at_ms, record = excluded.record
     WHERE excluded.seq > campaign_results.seq";

const UPSERT_PROGRESS: &str = "INSERT INTO campaign_progress (site, box, epoch, seq, \
     campaign_id, campaign, record) VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (box, epoch, campaign_id) DO UPDATE SET site = excluded.site,
         seq = excluded.seq, campaign = excluded.campaign, record = excluded.record
     WHERE excluded.seq > campaign_progress.seq";

const UPSERT_SERVICE: &str = "INSERT INTO service_records (site, box, epoch, seq, call_id, \
     customer_hq_id, customer_box_id, number, agent_id, started_at_ms, record)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (box, epoch, call_id) DO UPDATE SET site = excluded.site, seq = excluded.seq,
         customer_hq_id = excluded.customer_hq_id, customer_box_id = excluded.customer_box_id,
         number = excluded.number, agent_id = excluded.agent_id,
         started_at_ms = excluded.started_at_ms, record = excluded.record
     WHERE excluded.seq > service_records.seq";

const INSERT_NOTE: &str = "INSERT INTO call_notes (site, box, epoch, seq, call_id, note_id, \
     at_ms, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (box, epoch, note_id) DO NOTHING";

const UPSERT_CUSTOMER: &str = "INSERT INTO box_customers (site, box, epoch, seq, customer_id, \
     name, deleted, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (box, epoch, customer_id) DO UPDATE SET site = excluded.site,
         seq = excluded.seq, name = excluded.name, deleted = excluded.deleted,
         record = excluded.record
     WHERE excluded.seq > box_customers.seq";

const CUSTOMER_ROW: &str =
    "SELECT id FROM box_customers WHERE box = $1 AND epoch = $2 AND customer_id = $3 AND seq = $4";
const CLEAR_CUSTOMER_NUMBERS: &str = "DELETE FROM box_customer_numbers WHERE customer_row = $1";
const INSERT_CUSTOMER_NUMBER: &str = "INSERT INTO box_customer_numbers (customer_row, number) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// What ingesting one new record takes: a first statement and, for a customer, the
/// numbers to index once the row id is known ([`customer_numbers`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projection {
    /// The upsert or insert.
    pub write: Statement,
    /// For a customer: the query of its row id (answering a row only when this record
    /// is the one stored), and its numbers (none when deleted).
    pub numbers: Option<(Statement, Vec<String>)>,
}

/// The projection of a new record of issue 10's kinds (`None` for other kinds).
pub(crate) fn projection(site: &str, bx: &str, epoch: &str, r: &ValidRecord) -> Option<Projection> {
    let head = || {
        vec![
            Param::Text(site.to_owned()),
            Param::Text(bx.to_owned()),
            Param::Text(epoch.to_owned()),
            Param::Int(r.seq),
        ]
    };
    let json = Param::Text(r.payload_json.clone());
    let statement = |sql, mut params: Vec<Param>, tail: Vec<Param>| {
        params.extend(tail);
        Statement {
            sql,
            params,
            cols: &[],
        }
    };
    let write = match &r.typed {
        TypedPayload::CampaignResult(c) => statement(
            UPSERT_RESULT,
            head(),
            vec![
                Param::Int(c.attempt_id),
                Param::Text(c.campaign.clone()),
                Param::OptText(c.agent.clone()),
                Param::Int(c.started_at_ms),
                json,
            ],
        ),
        TypedPayload::CampaignProgress(p) => statement(
            UPSERT_PROGRESS,
            head(),
            vec![
                Param::Int(p.campaign_id),
                Param::Text(p.campaign.clone()),
                json,
            ],
        ),
        TypedPayload::ServiceRecord(s) => {
            let (hq, local) = match &s.customer {
                CustomerRef::Hq(id) => (Some(id.clone()), None),
                CustomerRef::Local(id) => (None, Some(*id)),
            };
            statement(
                UPSERT_SERVICE,
                head(),
                vec![
                    Param::Text(s.call_id.clone()),
                    Param::OptText(hq),
                    Param::OptInt(local),
                    Param::Text(s.number.clone()),
                    Param::OptText(s.agent_id.clone()),
                    Param::Int(s.started_at_ms),
                    json,
                ],
            )
        }
        TypedPayload::CallNote(n) => statement(
            INSERT_NOTE,
            head(),
            vec![
                Param::Text(n.call_id.clone()),
                Param::Int(n.note_id),
                Param::Int(n.at_ms),
                json,
            ],
        ),
        TypedPayload::Customer(c) => {
            let write = statement(
                UPSERT_CUSTOMER,
                head(),
                vec![
                    Param::Int(c.id),
                    Param::Text(c.name.clone()),
                    Param::Bool(c.deleted),
                    json,
                ],
            );
            let row = Statement {
                sql: CUSTOMER_ROW,
                params: vec![
                    Param::Text(bx.to_owned()),
                    Param::Text(epoch.to_owned()),
                    Param::Int(c.id),
                    Param::Int(r.seq),
                ],
                cols: &[Col::Int],
            };
            let numbers = if c.deleted {
                Vec::new()
            } else {
                c.numbers.clone()
            };
            return Some(Projection {
                write,
                numbers: Some((row, numbers)),
            });
        }
        _ => return None,
    };
    Some(Projection {
        write,
        numbers: None,
    })
}

/// The statements that index a stored customer row's numbers: clear, then one
/// insert per number.
pub(crate) fn customer_numbers(row_id: i64, numbers: &[String]) -> Vec<Statement> {
    let mut out = vec![Statement {
        sql: CLEAR_CUSTOMER_NUMBERS,
        params: vec![Param::Int(row_id)],
        cols: &[],
    }];
    out.extend(numbers.iter().map(|n| Statement {
        sql: INSERT_CUSTOMER_NUMBER,
        params: vec![Param::Int(row_id), Param::Text(n.clone())],
        cols: &[],
    }));
    out
}

// --- admin queries --------------------------------------------------------------------

fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_CDR_PAGE)
}

fn limit_param(limit: usize) -> Param {
    Param::Int(i64::try_from(limit).unwrap_or(100))
}

/// Filter of `GET /admin/v1/campaign-results`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignResultQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Only this campaign (by name).
    pub campaign: Option<String>,
    /// Only this agent (box username).
    pub agent: Option<String>,
    /// Attempts started at or after (ms).
    pub from_ms: Option<i64>,
    /// Attempts started before (ms).
    pub to_ms: Option<i64>,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id (the `next` of the previous page).
    pub after: Option<i64>,
}

impl CampaignResultQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        page_limit(self.limit)
    }
}

/// One campaign attempt as HQ holds it (the latest the box sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignResultRow {
    /// HQ's row id (pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// The attempt as the box last sent it.
    #[serde(flatten)]
    pub record: CampaignResultRecord,
}

const HEAD_COLS: &[Col] = &[Col::Int, Col::Text, Col::Text, Col::Text];

/// The query of [`CampaignResultQuery`].
pub(crate) fn campaign_results_query(q: &CampaignResultQuery) -> Statement {
    Statement {
        sql: "SELECT id, box, site, record FROM campaign_results
              WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR box = $2)
                AND ($3::text IS NULL OR campaign = $3) AND ($4::text IS NULL OR agent = $4)
                AND ($5::int8 IS NULL OR started_at_ms >= $5)
                AND ($6::int8 IS NULL OR started_at_ms < $6)
                AND id > $7
              ORDER BY id LIMIT $8",
        params: vec![
            Param::OptText(q.site.clone()),
            Param::OptText(q.box_id.clone()),
            Param::OptText(q.campaign.clone()),
            Param::OptText(q.agent.clone()),
            Param::OptInt(q.from_ms),
            Param::OptInt(q.to_ms),
            Param::Int(q.after.unwrap_or(0)),
            limit_param(q.limit()),
        ],
        cols: HEAD_COLS,
    }
}

/// `(id, box, site, record)` of a row read with [`HEAD_COLS`] first.
fn head<T: serde::de::DeserializeOwned>(
    what: &'static str,
    row: &[Cell],
) -> Result<(i64, String, String, T)> {
    let id = row.first().and_then(Cell::int).unwrap_or_default();
    let text = |i: usize| row.get(i).and_then(Cell::text).unwrap_or_default();
    let record =
        serde_json::from_str(&text(3)).map_err(|source| Error::StoredJson { what, source })?;
    Ok((id, text(1), text(2), record))
}

/// Rows of [`campaign_results_query`].
pub(crate) fn campaign_result_rows(rows: Vec<Vec<Cell>>) -> Result<Vec<CampaignResultRow>> {
    rows.iter()
        .map(|r| {
            let (id, box_id, site, record) = head("campaign result", r)?;
            Ok(CampaignResultRow {
                id,
                box_id,
                site,
                record,
            })
        })
        .collect()
}

/// Filter of `GET /admin/v1/campaign-progress`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignProgressQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Only this campaign (by name).
    pub campaign: Option<String>,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id.
    pub after: Option<i64>,
}

impl CampaignProgressQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        page_limit(self.limit)
    }
}

/// A campaign's latest progress as HQ holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignProgressRow {
    /// HQ's row id (pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// The progress as the box last sent it.
    #[serde(flatten)]
    pub record: CampaignProgressRecord,
}

/// The query of [`CampaignProgressQuery`].
pub(crate) fn campaign_progress_query(q: &CampaignProgressQuery) -> Statement {
    Statement {
        sql: "SELECT id, box, site, record FROM campaign_progress
              WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR box = $2)
                AND ($3::text IS NULL OR campaign = $3) AND id > $4
              ORDER BY id LIMIT $5",
        params: vec![
            Param::OptText(q.site.clone()),
            Param::OptText(q.box_id.clone()),
            Param::OptText(q.campaign.clone()),
            Param::Int(q.after.unwrap_or(0)),
            limit_param(q.limit()),
        ],
        cols: HEAD_COLS,
    }
}

/// Rows of [`campaign_progress_query`].
pub(crate) fn campaign_progress_rows(rows: Vec<Vec<Cell>>) -> Result<Vec<CampaignProgressRow>> {
    rows.iter()
        .map(|r| {
            let (id, box_id, site, record) = head("campaign progress", r)?;
            Ok(CampaignProgressRow {
                id,
                box_id,
                site,
                record,
            })
        })
        .collect()
}

/// Filter of `GET /admin/v1/service-records`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecordQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Only this HQ contact (its id).
    pub customer: Option<String>,
    /// Only calls with this number (as the box stores it: digits, optional `+`).
    pub number: Option<String>,
    /// Only this agent ID.
    pub agent: Option<String>,
    /// Calls started at or after (ms).
    pub from_ms: Option<i64>,
    /// Calls started before (ms).
    pub to_ms: Option<i64>,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id.
    pub after: Option<i64>,
}

impl ServiceRecordQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        page_limit(self.limit)
    }
}

/// A disposition digit on a service record (from the call's disposition record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDisposition {
    /// The digit.
    pub digit: i64,
    /// The customer type's name then.
    pub type_name: String,
}

/// A service record as HQ lists it: the record, the call's disposition, its
/// recording's sha256 (the file's name at HQ, `GET /sync/v1/files/{sha256}` for the
/// box) and its notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecordRow {
    /// HQ's row id (pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// The record as the box sent it.
    #[serde(flatten)]
    pub record: ServiceRecordRecord,
    /// The disposition the agent keyed, if any reached HQ.
    pub disposition: Option<ServiceDisposition>,
    /// sha256 of the call's recording, if its metadata reached HQ.
    pub recording_sha256: Option<String>,
    /// The call's notes, oldest first.
    pub notes: Vec<CallNoteRecord>,
}

/// The query of [`ServiceRecordQuery`]; each row's notes come with
/// [`call_notes_query`].
pub(crate) fn service_records_query(q: &ServiceRecordQuery) -> Statement {
    Statement {
        sql: "SELECT s.id, s.box, s.site, s.record, s.epoch, s.call_id,
                     (SELECT CAST(d.digit AS BIGINT) FROM dispositions d
                       WHERE d.site = s.site AND d.call_id = s.call_id),
                     (SELECT d.type_name FROM dispositions d
                       WHERE d.site = s.site AND d.call_id = s.call_id),
                     (SELECT r.sha256 FROM recordings r
                       WHERE r.box = s.box AND r.epoch = s.epoch AND r.call_id = s.call_id
                       ORDER BY r.seq DESC LIMIT 1)
              FROM service_records s
              WHERE ($1::text IS NULL OR s.site = $1) AND ($2::text IS NULL OR s.box = $2)
                AND ($3::text IS NULL OR s.customer_hq_id = $3)
                AND ($4::text IS NULL OR s.number = $4)
                AND ($5::text IS NULL OR s.agent_id = $5)
                AND ($6::int8 IS NULL OR s.started_at_ms >= $6)
                AND ($7::int8 IS NULL OR s.started_at_ms < $7)
                AND s.id > $8
              ORDER BY s.id LIMIT $9",
        params: vec![
            Param::OptText(q.site.clone()),
            Param::OptText(q.box_id.clone()),
            Param::OptText(q.customer.clone()),
            Param::OptText(q.number.clone()),
            Param::OptText(q.agent.clone()),
            Param::OptInt(q.from_ms),
            Param::OptInt(q.to_ms),
            Param::Int(q.after.unwrap_or(0)),
            limit_param(q.limit()),
        ],
        cols: &[
            Col::Int,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Int,
            Col::Text,
            Col::Text,
        ],
    }
}

/// The notes query of one row of [`service_records_query`].
pub(crate) fn call_notes_query(row: &[Cell]) -> Statement {
    let text = |i: usize| row.get(i).and_then(Cell::text).unwrap_or_default();
    Statement {
        sql: "SELECT record FROM call_notes WHERE box = $1 AND epoch = $2 AND call_id = $3
              ORDER BY at_ms, id",
        params: vec![
            Param::Text(text(1)),
            Param::Text(text(4)),
            Param::Text(text(5)),
        ],
        cols: &[Col::Text],
    }
}

/// One row of [`service_records_query`] with the rows of its [`call_notes_query`].
pub(crate) fn service_record_row(row: &[Cell], notes: Vec<Vec<Cell>>) -> Result<ServiceRecordRow> {
    let (id, box_id, site, record) = head("service record", row)?;
    let disposition = row
        .get(6)
        .and_then(Cell::int)
        .zip(row.get(7).and_then(Cell::text))
        .map(|(digit, type_name)| ServiceDisposition { digit, type_name });
    let notes = notes
        .iter()
        .map(|n| {
            let json = n.first().and_then(Cell::text).unwrap_or_default();
            serde_json::from_str(&json).map_err(|source| Error::StoredJson {
                what: "call note",
                source,
            })
        })
        .collect::<Result<Vec<CallNoteRecord>>>()?;
    Ok(ServiceRecordRow {
        id,
        box_id,
        site,
        record,
        disposition,
        recording_sha256: row.get(8).and_then(Cell::text),
        notes,
    })
}

/// Filter of `GET /admin/v1/customers`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    /// Only this site.
    pub site: Option<String>,
    /// Only this box.
    #[serde(rename = "box")]
    pub box_id: Option<String>,
    /// Only customers with this number (as stored: digits, optional `+`).
    pub number: Option<String>,
    /// Also customers deleted on their box (default: not).
    #[serde(default)]
    pub deleted: bool,
    /// Most rows (clamped to 1..=[`MAX_CDR_PAGE`], default 100).
    pub limit: Option<usize>,
    /// Resume after this row id.
    pub after: Option<i64>,
}

impl CustomerQuery {
    /// The effective limit.
    pub fn limit(&self) -> usize {
        page_limit(self.limit)
    }
}

/// A customer made on a box, as HQ holds it (the latest the box sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRow {
    /// HQ's row id (pagination cursor).
    pub id: i64,
    /// The box.
    #[serde(rename = "box")]
    pub box_id: String,
    /// The box's site.
    pub site: String,
    /// The customer as the box last sent it (`id` there is the box's).
    #[serde(flatten)]
    pub record: CustomerRecord,
}

/// The query of [`CustomerQuery`].
pub(crate) fn customers_query(q: &CustomerQuery) -> Statement {
    Statement {
        sql: "SELECT c.id, c.box, c.site, c.record FROM box_customers c
              WHERE ($1::text IS NULL OR c.site = $1) AND ($2::text IS NULL OR c.box = $2)
                AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM box_customer_numbers n
                                                   WHERE n.customer_row = c.id
                                                     AND n.number = $3))
                AND ($4 OR NOT c.deleted)
                AND c.id > $5
              ORDER BY c.id LIMIT $6",
        params: vec![
            Param::OptText(q.site.clone()),
            Param::OptText(q.box_id.clone()),
            Param::OptText(q.number.clone()),
            Param::Bool(q.deleted),
            Param::Int(q.after.unwrap_or(0)),
            limit_param(q.limit()),
        ],
        cols: HEAD_COLS,
    }
}

/// Rows of [`customers_query`].
pub(crate) fn customer_rows(rows: Vec<Vec<Cell>>) -> Result<Vec<CustomerRow>> {
    rows.iter()
        .map(|r| {
            let (id, box_id, site, record) = head("customer", r)?;
            Ok(CustomerRow {
                id,
                box_id,
                site,
                record,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_dialect_numbers_parameters_and_drops_casts() {
        assert_eq!(
            sqlite_dialect("WHERE ($1::text IS NULL OR a = $1) AND ($2::int8 IS NULL) LIMIT $10"),
            "WHERE (?1 IS NULL OR a = ?1) AND (?2 IS NULL) LIMIT ?10"
        );
    }
}
