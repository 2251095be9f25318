//! Bulk user import and export as CSV.
//!
//! Columns ([`CSV_COLUMNS`]): `username, display_name, extension, agent_id, enabled,
//! roles, groups`; `roles` and `groups` are `;`-separated names; `enabled` is
//! `true`/`false` (also `1`/`0`, `yes`/`no`; empty = true). Exports never contain
//! hashes, PINs or the installer account. Group-admin flags are not part of the CSV:
//! imported users join groups as plain members.
//!
//! Import creates users only (a username that exists is an error for that row). It
//! validates **every** row first, against the rules of
//! [`super::Accounts::create_user`], the database and the other rows, and reports all
//! problems numbered by row (the header is row 1), e.g.
//! `row 4: username: duplicate of row 2`. Only a clean file is applied, all rows in one
//! transaction with one audit row and one outbox row per user. Each imported user gets
//! a random 16-character password that must be changed at first login; they are
//! returned once to the caller and stored nowhere in clear.

use std::collections::HashMap;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::{
    get_user, insert_user, password, user_field_problems, user_outbox, Accounts, UserFields,
};
use crate::audit::{Actor, AuditEntry, AuditResult};
use crate::error::{Error, Result, RowProblem};
use crate::rbac::Resource;
use crate::store::StoreReader;

/// The CSV header, in order.
pub const CSV_COLUMNS: [&str; 7] = [
    "username",
    "display_name",
    "extension",
    "agent_id",
    "enabled",
    "roles",
    "groups",
];

/// A generated initial password of an imported user, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialPassword {
    /// The user.
    pub username: String,
    /// The password (must be changed at first login).
    pub password: String,
}

/// Every user but the installer as CSV, by username.
pub fn export_users_csv(reader: &StoreReader) -> Result<String> {
    let (conn, path) = (reader.connection(), reader.path());
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM users WHERE username != ?1 ORDER BY username")
        .and_then(|mut s| {
            s.query_map([super::INSTALLER_USERNAME], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(super::sql(path, "list users for export"))?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_err = |source| Error::Csv {
        op: "write export",
        source,
    };
    out.write_record(CSV_COLUMNS).map_err(csv_err)?;
    for id in ids {
        let u = get_user(conn, path, crate::rbac::UserId(id))?;
        let groups: Vec<&str> = u.groups.iter().map(|m| m.group.as_str()).collect();
        out.write_record([
            u.username.as_str(),
            u.display_name.as_str(),
            u.extension.as_deref().unwrap_or(""),
            u.agent_id.as_deref().unwrap_or(""),
            if u.enabled { "true" } else { "false" },
            u.roles.join(";").as_str(),
            groups.join(";").as_str(),
        ])
        .map_err(csv_err)?;
    }
    let bytes = out.into_inner().map_err(|e| Error::Csv {
        op: "finish export",
        source: e.into_error().into(),
    })?;
    // Every field written was a Rust string, so the output is UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Parses the file into (row number, fields); problems of the file's shape and of single
/// values go to `problems`.
fn parse(text: &str, problems: &mut Vec<RowProblem>) -> Vec<(usize, UserFields)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(RowProblem {
                row: 1,
                field: "header".to_owned(),
                message: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut index = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim();
        if !CSV_COLUMNS.contains(&h) {
            problems.push(RowProblem {
                row: 1,
                field: h.to_owned(),
                message: format!("unknown column (columns are {})", CSV_COLUMNS.join(", ")),
            });
        } else if index.insert(h.to_owned(), i).is_some() {
            problems.push(RowProblem {
                row: 1,
                field: h.to_owned(),
                message: "column appears twice".to_owned(),
            });
        }
    }
    if !index.contains_key("username") {
        problems.push(RowProblem {
            row: 1,
            field: "username".to_owned(),
            message: "the username column is required".to_owned(),
        });
    }
    if !problems.is_empty() {
        // Without a usable header the rows cannot be read.
        return Vec::new();
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(RowProblem {
                    row,
                    field: "row".to_owned(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if record.len() != headers.len() {
            problems.push(RowProblem {
                row,
                field: "row".to_owned(),
                message: format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        let get = |col: &str| {
            index
                .get(col)
                .and_then(|&i| record.get(i))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let enabled = match get("enabled").to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => {
                problems.push(RowProblem {
                    row,
                    field: "enabled".to_owned(),
                    message: format!("{other:?} is not true or false"),
                });
                true
            }
        };
        rows.push((
            row,
            UserFields {
                username: get("username"),
                display_name: get("display_name"),
                extension: opt(&get("extension")),
                agent_id: opt(&get("agent_id")),
                enabled,
                roles: split_list(&get("roles")),
                groups: split_list(&get("groups")),
            },
        ));
    }
    rows
}

/// Validates parsed rows against the rules, the database and each other.
fn validate(
    conn: &Connection,
    path: &std::path::Path,
    rows: &[(usize, UserFields)],
    problems: &mut Vec<RowProblem>,
) -> Result<()> {
    let mut usernames: HashMap<&str, usize> = HashMap::new();
    let mut agent_ids: HashMap<&str, usize> = HashMap::new();
    for (row, f) in rows {
        for p in user_field_problems(conn, path, f, None)? {
            problems.push(RowProblem {
                row: *row,
                field: p.field,
                message: p.message,
            });
        }
        if let Some(&first) = usernames.get(f.username.as_str()) {
            problems.push(RowProblem {
                row: *row,
                field: "username".to_owned(),
                message: format!("duplicate of row {first}"),
            });
        } else {
            usernames.insert(&f.username, *row);
        }
        if let Some(agent_id) = &f.agent_id {
            if let Some(&first) = agent_ids.get(agent_id.as_str()) {
                problems.push(RowProblem {
                    row: *row,
                    field: "agent_id".to_owned(),
                    message: format!("duplicate of row {first}"),
                });
            } else {
                agent_ids.insert(agent_id, *row);
            }
        }
    }
    problems.sort_by_key(|p| p.row);
    Ok(())
}

impl Accounts {
    /// Imports users from CSV, all or nothing (see the module docs); returns the
    /// generated initial passwords. A refused file is [`Error::CsvImport`] listing
    /// every problem by row, and is audited with result `failed`.
    pub async fn import_users_csv(
        &self,
        actor: &Actor,
        text: &str,
        now_ms: i64,
    ) -> Result<Vec<InitialPassword>> {
        let mut problems = Vec::new();
        let rows = parse(text, &mut problems);
        // Every row is checked, even when some already failed to parse.
        let reader = self.reader()?;
        validate(reader.connection(), reader.path(), &rows, &mut problems)?;
        drop(reader);
        let prepared = if problems.is_empty() {
            let params = self.settings.hash;
            let names: Vec<String> = rows.iter().map(|(_, f)| f.username.clone()).collect();
            Some(
                super::blocking("hash passwords", move || {
                    names
                        .into_iter()
                        .map(|username| {
                            let password = password::generate_password()?;
                            let hash = password::hash_secret(&password, params)?;
                            Ok((InitialPassword { username, password }, hash))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await?,
            )
        } else {
            None
        };
        self.audited(
            actor,
            "import",
            Resource::Users,
            "csv".to_owned(),
            now_ms,
            move |tx, path| {
                let Some(prepared) = prepared else {
                    return Err(Error::CsvImport { errors: problems });
                };
                // Again inside the transaction: the database may have changed since.
                validate(tx, path, &rows, &mut problems)?;
                if !problems.is_empty() {
                    return Err(Error::CsvImport { errors: problems });
                }
                let mut out = Vec::with_capacity(rows.len());
                for ((_, fields), (initial, hash)) in rows.iter().zip(prepared) {
                    let id = insert_user(tx, path, fields, &hash, None, true, now_ms)?;
                    let user = get_user(tx, path, id)?;
                    user_outbox(
                        tx,
                        path,
                        branchline_sync::wire::EditOp::Create,
                        &user,
                        now_ms,
                    )?;
                    out.push(initial);
                }
                let names: Vec<&str> = out.iter().map(|p| p.username.as_str()).collect();
                let detail = serde_json::json!({ "count": out.len(), "usernames": names });
                Ok(super::Audited {
                    value: out,
                    target: "csv".to_owned(),
                    detail,
                })
            },
        )
        .await
    }
}

/// An audit entry for an export (the caller writes it with [`Accounts::audit`]).
pub fn export_audit_entry(actor: Actor, rows: usize) -> AuditEntry {
    AuditEntry {
        actor,
        action: "export".to_owned(),
        resource: Resource::Users.as_str().to_owned(),
        target: "csv".to_owned(),
        result: AuditResult::Ok,
        detail: serde_json::json!({ "rows": rows }),
    }
}
