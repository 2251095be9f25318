//! Lead list import as CSV, on the customers' CSV machinery
//! ([`crate::customers::csv`]: the same table reader, row numbering and refusal).
//!
//! Columns: `numbers` (required; `;`-separated, 1 to [`MAX_LEAD_NUMBERS`] per lead),
//! `name`, `customer` (a customer's id, to link the lead to its record), and any other
//! column, whose non-empty cells go into the lead's custom data (a JSON object of
//! strings, keyed by the column's name).
//!
//! All or nothing: every row is checked first (numbers in the site's canonical form,
//! [`crate::numbers`], like customers' numbers; a number on an earlier row or already
//! in the list, in any of its forms, is an error naming the other row or lead; the
//! customer must exist), every problem is reported by row (the header is row 1), and
//! only a clean file is written, in the caller's transaction, into an existing list.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::store::{self, ValidLead};
use super::MAX_LEAD_NUMBERS;
use crate::customers::csv::{read_table, refuse_if_any, row_problem};
use crate::error::Result;

/// Rows one file may hold.
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Characters in a lead's name.
pub const MAX_NAME_CHARS: usize = 200;
/// Characters in one custom data cell.
pub const MAX_DATA_CHARS: usize = 500;
/// Characters in a custom data column's name.
pub const MAX_COLUMN_CHARS: usize = 64;

fn check_column(h: &str) -> Option<String> {
    if h.is_empty() {
        Some("a column has no name".to_owned())
    } else if h.chars().count() > MAX_COLUMN_CHARS {
        Some(format!(
            "a column name has at most {MAX_COLUMN_CHARS} characters"
        ))
    } else if h.chars().any(char::is_control) {
        Some("a column name must not hold control characters".to_owned())
    } else {
        None
    }
}

/// Imports leads into list `list_id` in the caller's transaction, all or nothing (see
/// the module docs); returns how many were added. A refused file is
/// [`crate::error::Error::CsvImport`] listing the problems by row; nothing is written.
pub fn import(
    conn: &Connection,
    path: &Path,
    list_id: i64,
    text: &str,
    now_ms: i64,
) -> Result<usize> {
    store::get_list(conn, path, list_id)?;
    let plan = crate::numbers::store::plan(conn, path)?;
    let mut problems = Vec::new();
    let Some((columns, records)) =
        read_table(text, MAX_IMPORT_ROWS, "leads", check_column, &mut problems)
    else {
        return refuse_if_any(problems).map(|()| 0);
    };
    if !columns.iter().any(|c| c == "numbers") {
        problems.push(row_problem(1, "numbers", "the numbers column is required"));
        return refuse_if_any(problems).map(|()| 0);
    }
    let existing = store::list_numbers(conn, path, list_id)?;
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(records.len());
    let mut customers: HashMap<i64, bool> = HashMap::new();
    let mut leads = Vec::with_capacity(records.len());
    for (row, record) in &records {
        let row = *row;
        let before = problems.len();
        let mut lead = ValidLead {
            name: String::new(),
            numbers: Vec::new(),
            customer_id: None,
            data: serde_json::Map::new(),
        };
        for (col, cell) in columns.iter().zip(record.iter()) {
            let t = cell.trim();
            match col.as_str() {
                "name" => {
                    if t.chars().count() > MAX_NAME_CHARS {
                        problems.push(row_problem(
                            row,
                            "name",
                            format!("at most {MAX_NAME_CHARS} characters"),
                        ));
                    } else if t.chars().any(char::is_control) {
                        problems.push(row_problem(row, "name", "must not hold control characters"));
                    }
                    lead.name = t.to_owned();
                }
                "numbers" => {
                    for raw in t.split(';').map(str::trim).filter(|n| !n.is_empty()) {
                        match crate::numbers::canonical(plan.as_ref(), raw) {
                            Ok(n) if lead.numbers.contains(&n) => {
                                problems.push(row_problem(
                                    row,
                                    "numbers",
                                    format!("{n} is given twice"),
                                ));
                            }
                            Ok(n) => lead.numbers.push(n),
                            Err(m) => problems.push(row_problem(row, "numbers", m)),
                        }
                    }
                }
                "customer" if !t.is_empty() => match t.parse::<i64>() {
                    Ok(id) => {
                        let exists = match customers.get(&id) {
                            Some(e) => *e,
                            None => {
                                let e = conn
                                    .prepare_cached("SELECT 1 FROM customers WHERE id = ?1")
                                    .and_then(|mut s| s.query_row([id], |_| Ok(())).optional())
                                    .map_err(store::sql(path, "look up customer"))?
                                    .is_some();
                                customers.insert(id, e);
                                e
                            }
                        };
                        if exists {
                            lead.customer_id = Some(id);
                        } else {
                            problems.push(row_problem(
                                row,
                                "customer",
                                format!("no customer {id}"),
                            ));
                        }
                    }
                    Err(_) => problems.push(row_problem(
                        row,
                        "customer",
                        format!("{t:?} is not a customer id"),
                    )),
                },
                "customer" => {}
                field => {
                    if t.chars().count() > MAX_DATA_CHARS {
                        problems.push(row_problem(
                            row,
                            field,
                            format!("at most {MAX_DATA_CHARS} characters"),
                        ));
                    } else if !t.is_empty() {
                        lead.data
                            .insert(field.to_owned(), serde_json::Value::String(t.to_owned()));
                    }
                }
            }
        }
        if lead.numbers.is_empty() && problems.len() == before {
            problems.push(row_problem(row, "numbers", "a lead needs a number"));
        }
        if lead.numbers.len() > MAX_LEAD_NUMBERS {
            problems.push(row_problem(
                row,
                "numbers",
                format!("{} numbers, at most {MAX_LEAD_NUMBERS}", lead.numbers.len()),
            ));
        }
        for n in &lead.numbers {
            if let Some(first) = seen.get(n) {
                problems.push(row_problem(
                    row,
                    "numbers",
                    format!("{n} is also on row {first}"),
                ));
            } else {
                seen.insert(n.clone(), row);
            }
            if let Some(other) = existing.get(n) {
                problems.push(row_problem(
                    row,
                    "numbers",
                    format!("{n} belongs to lead {other} of this list already"),
                ));
            }
        }
        if problems.len() == before {
            leads.push(lead);
        }
    }
    refuse_if_any(problems)?;
    store::insert_leads_unchecked(conn, path, list_id, &leads, now_ms)?;
    Ok(leads.len())
}
