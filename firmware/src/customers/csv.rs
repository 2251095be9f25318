//! Customer import and export as CSV.
//!
//! Columns: `name` (required), `numbers` (`;`-separated), `type` (a digit or a type's
//! name), `owner` (an agent's username), `owner_group` (a group's name), then any of
//! the site's custom fields by name (a multiple choice `;`-separated). Every column but
//! `name` may be left out; an empty cell is a missing value (the field's default
//! applies). The export writes the same columns, so an export (by a role that may
//! unmask numbers) imports again into an empty box.
//!
//! Import is all or nothing, in the style of the user import (`accounts::csv`):
//! every row is checked first, against the schema, the owners, the other rows and the
//! store (a number already held by a customer, or by an earlier row, is an error naming
//! both), and every problem is reported by row (the header is row 1; at most
//! [`MAX_REPORTED_PROBLEMS`] are listed). Only a clean file is written, in the caller's
//! transaction. Import creates customers only; it never updates one.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::store::{self, CustomerRow, StoredSchema};
use super::{Draft, RawValue};
use crate::error::{Error, Result, RowProblem};
use crate::mask::MaskPattern;

/// The built-in columns, in export order.
pub const BUILTIN_COLUMNS: [&str; 5] = ["name", "numbers", "type", "owner", "owner_group"];
/// Rows one file may hold.
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Problems listed in a refusal (the rest are counted).
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

pub(crate) fn row_problem(row: usize, field: &str, message: impl Into<String>) -> RowProblem {
    RowProblem {
        row,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A CSV file read by [`read_table`]: the header's columns and the data rows with
/// their row numbers.
pub(crate) type Table = (Vec<String>, Vec<(usize, ::csv::StringRecord)>);

/// The shape of a CSV file, shared by every import (customers, lead lists): the
/// trimmed header and the data rows with their row numbers (the header is row 1).
/// `check_column` names what is wrong with a header cell (`None`: fine); a column
/// given twice, a row whose field count differs from the header's, an unreadable row
/// and more than `max_rows` rows of `what` are problems too. `None` when the header
/// itself is unusable (the problems say why); data rows are only read after a clean
/// header.
pub(crate) fn read_table(
    text: &str,
    max_rows: usize,
    what: &str,
    check_column: impl Fn(&str) -> Option<String>,
    problems: &mut Vec<RowProblem>,
) -> Option<Table> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(row_problem(1, "header", e.to_string()));
            return None;
        }
    };
    let before = problems.len();
    let mut columns: Vec<String> = Vec::with_capacity(headers.len());
    for h in headers.iter() {
        let h = h.trim().to_owned();
        if let Some(why) = check_column(&h) {
            problems.push(row_problem(1, &h, why));
        } else if columns.contains(&h) {
            problems.push(row_problem(1, &h, "column appears twice"));
        }
        columns.push(h);
    }
    if problems.len() > before {
        return None;
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 2;
        if i >= max_rows {
            problems.push(row_problem(
                row,
                "row",
                format!("a file holds at most {max_rows} {what}"),
            ));
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(row_problem(row, "row", e.to_string()));
                continue;
            }
        };
        if record.len() != columns.len() {
            problems.push(row_problem(
                row,
                "row",
                format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    columns.len()
                ),
            ));
            continue;
        }
        rows.push((row, record));
    }
    Some((columns, rows))
}

/// `Ok` when `problems` is empty, else the refusal listing them by row (at most
/// [`MAX_REPORTED_PROBLEMS`], then a count of the rest).
pub(crate) fn refuse_if_any(mut problems: Vec<RowProblem>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by_key(|p| p.row);
    let total = problems.len();
    if total > MAX_REPORTED_PROBLEMS {
        problems.truncate(MAX_REPORTED_PROBLEMS);
        let last = problems.last().map_or(1, |p| p.row);
        problems.push(row_problem(
            last,
            "file",
            format!("{} more problems not listed", total - MAX_REPORTED_PROBLEMS),
        ));
    }
    Err(Error::CsvImport { errors: problems })
}

/// Parses the file into (row number, draft); problems of the file's shape go to
/// `problems`.
fn parse(stored: &StoredSchema, text: &str, problems: &mut Vec<RowProblem>) -> Vec<(usize, Draft)> {
    let unknown = |h: &str| {
        if BUILTIN_COLUMNS.contains(&h) || stored.schema.field(h).is_some() {
            return None;
        }
        let fields: Vec<&str> = stored
            .schema
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        Some(format!(
            "unknown column (columns are {}{}{})",
            BUILTIN_COLUMNS.join(", "),
            if fields.is_empty() {
                ""
            } else {
                ", and the custom fields "
            },
            fields.join(", ")
        ))
    };
    let Some((columns, records)) =
        read_table(text, MAX_IMPORT_ROWS, "customers", unknown, problems)
    else {
        return Vec::new();
    };
    if !columns.iter().any(|c| c == "name") {
        problems.push(row_problem(1, "name", "the name column is required"));
        return Vec::new();
    }
    let mut rows = Vec::new();
    for (row, record) in records {
        let mut d = Draft::default();
        for (col, cell) in columns.iter().zip(record.iter()) {
            let t = cell.trim();
            let opt = || (!t.is_empty()).then(|| t.to_owned());
            match col.as_str() {
                "name" => d.name = t.to_owned(),
                "numbers" => {
                    d.numbers = t
                        .split(';')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "type" => d.customer_type = opt(),
                "owner" => d.owner = opt(),
                "owner_group" => d.owner_group = opt(),
                field => d.fields.push((field.to_owned(), RawValue::from_cell(cell))),
            }
        }
        rows.push((row, d));
    }
    rows
}

/// Imports customers from CSV in the caller's transaction, all or nothing (see the
/// module docs); returns how many were added. A refused file is
/// [`Error::CsvImport`] listing the problems by row; nothing is written then.
pub fn import(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    text: &str,
    created_by: &str,
    now_ms: i64,
) -> Result<usize> {
    let mut problems = Vec::new();
    let drafts = parse(stored, text, &mut problems);
    let mut users: HashMap<String, Option<i64>> = HashMap::new();
    let mut groups: HashMap<String, Option<i64>> = HashMap::new();
    let mut numbers: HashMap<String, usize> = HashMap::new();
    let mut valid = Vec::with_capacity(drafts.len());
    for (row, draft) in &drafts {
        let v = match stored.schema.check(draft) {
            Ok(v) => v,
            Err(ps) => {
                problems.extend(
                    ps.into_iter()
                        .map(|p| row_problem(*row, &p.field, p.message)),
                );
                continue;
            }
        };
        let mut ok = true;
        let mut owner = |cache: &mut HashMap<String, Option<i64>>,
                         query: &str,
                         name: &Option<String>,
                         field: &str,
                         what: &str|
         -> Result<Option<i64>> {
            let Some(name) = name else {
                return Ok(None);
            };
            let id = match cache.get(name) {
                Some(id) => *id,
                None => {
                    let id: Option<i64> = conn
                        .prepare_cached(query)
                        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
                        .map_err(sql(path, "look up owner"))?;
                    cache.insert(name.clone(), id);
                    id
                }
            };
            if id.is_none() {
                ok = false;
                problems.push(row_problem(*row, field, format!("no {what} {name:?}")));
            }
            Ok(id)
        };
        let user = owner(
            &mut users,
            "SELECT id FROM users WHERE username = ?1",
            &v.owner,
            "owner",
            "user",
        )?;
        let group = owner(
            &mut groups,
            "SELECT id FROM groups WHERE name = ?1",
            &v.owner_group,
            "owner_group",
            "group",
        )?;
        for n in &v.numbers {
            if let Some(first) = numbers.get(n) {
                ok = false;
                problems.push(row_problem(
                    *row,
                    "numbers",
                    format!("{n} is also on row {first}"),
                ));
                continue;
            }
            numbers.insert(n.clone(), *row);
            if let Some(other) = store::number_holder(conn, path, n, None)? {
                ok = false;
                problems.push(row_problem(
                    *row,
                    "numbers",
                    format!("{n} belongs to customer {other} already"),
                ));
            }
        }
        if ok {
            valid.push((v, (user, group)));
        }
    }
    refuse_if_any(problems)?;
    for (v, owners) in &valid {
        store::insert_unchecked(conn, path, stored, v, *owners, created_by, now_ms)?;
    }
    Ok(valid.len())
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The CSV text.
    pub text: String,
    /// Customers written.
    pub rows: usize,
    /// Customers whose numbers were masked.
    pub masked: usize,
}

/// Every customer as CSV in the import format; numbers (and phone fields) masked with
/// `pattern` unless `unmask(row)` says the caller may see them.
pub fn export(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    pattern: &MaskPattern,
    unmask: impl Fn(&CustomerRow) -> bool,
) -> Result<Exported> {
    let mut out = ::csv::Writer::from_writer(Vec::new());
    let csv_err = |source| Error::Csv {
        op: "write customer export",
        source,
    };
    let mut header: Vec<&str> = BUILTIN_COLUMNS.to_vec();
    header.extend(stored.schema.fields.iter().map(|f| f.name.as_str()));
    out.write_record(&header).map_err(csv_err)?;
    let (mut rows, mut masked) = (0, 0);
    store::for_each(conn, path, &stored.schema, |row| {
        let clear = unmask(&row);
        if !clear {
            masked += 1;
        }
        let show = |n: &str| pattern.present_number(n, clear);
        let numbers: Vec<String> = row.numbers.iter().map(|n| show(n)).collect();
        let mut record = vec![
            row.name.clone(),
            numbers.join(";"),
            row.type_digit.map(|d| d.to_string()).unwrap_or_default(),
            row.owner.clone().unwrap_or_default(),
            row.owner_group.clone().unwrap_or_default(),
        ];
        for def in &stored.schema.fields {
            record.push(match row.fields.get(&def.name) {
                Some(v) => match v.phone() {
                    Some(p) => show(p),
                    None => v.to_cell(),
                },
                None => String::new(),
            });
        }
        rows += 1;
        out.write_record(&record).map_err(csv_err)
    })?;
    let bytes = out.into_inner().map_err(|e| Error::Csv {
        op: "finish customer export",
        source: e.into_error().into(),
    })?;
    Ok(Exported {
        // Every field written was a Rust string, so the output is UTF-8.
        text: String::from_utf8_lossy(&bytes).into_owned(),
        rows,
        masked,
    })
}
