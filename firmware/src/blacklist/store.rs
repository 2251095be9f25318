//! The blacklist in the store (migration 0011): HQ's entries (written by the change
//! feed, [`upsert_hq`] / [`delete_hq`]), the box's own (the local API, [`add_local`] /
//! [`delete_local`]), the mode ([`set_settings`]), the hit counters ([`record_hit`]),
//! and [`load`], which compiles it all into the [`Blacklist`] call control screens with.
//!
//! Rules: one row per pattern. HQ's row for a pattern the box listed locally takes the
//! row over (source `hq`, HQ's reason; the box's action and hit count stay). HQ's rows
//! cannot be deleted locally ([`Error::BlacklistConflict`]). A row whose pattern or
//! action no longer validates (written by an older firmware) is skipped by [`load`],
//! with a warning, and still listed.
//!
//! Every function runs in the caller's connection or transaction; the writes go
//! through the store writer thread (`StoreWriter::transact`), which callers follow
//! with `StoreWriter::notify_blacklist_changed` so the daemon reloads the list.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{
    Blacklist, BlockAction, EntryAction, Mode, Pattern, Settings, MAX_PATTERN_DIGITS,
    MAX_REASON_CHARS,
};
use crate::error::{Error, FieldProblem, Result};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// HQ's change feed (read-only on the box).
    Hq,
    /// Added on the box.
    Local,
}

impl Source {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hq => "hq",
            Source::Local => "local",
        }
    }
}

/// One stored entry, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryRow {
    /// Row id (the API's `/api/v1/blacklist/{id}`).
    pub id: i64,
    /// The pattern as written.
    pub pattern: String,
    /// Why it is listed.
    pub reason: String,
    /// Its action (`None`: what the mode implies).
    pub action: Option<String>,
    /// `hq` or `local`.
    pub source: Source,
    /// HQ's revision (0 for a local entry).
    pub revision: i64,
    /// Calls it blocked.
    pub hits: i64,
    /// When it last blocked one (ms since the Unix epoch).
    pub last_hit_ms: Option<i64>,
    /// Who added it (a username; `hq` for HQ's).
    pub created_by: String,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A local entry to add, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    /// Number, prefix ending in `*`, or `anonymous`.
    pub pattern: String,
    /// Why (may be empty).
    #[serde(default)]
    pub reason: String,
    /// `allow`, `busy`, `congestion`, `reject`, or absent for what the mode implies.
    #[serde(default)]
    pub action: Option<String>,
}

/// What a [`NewEntry`] means once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEntry {
    /// The pattern.
    pub pattern: Pattern,
    /// The reason.
    pub reason: String,
    /// The action.
    pub action: Option<EntryAction>,
}

fn reason_problem(reason: &str) -> Option<String> {
    if reason.chars().count() > MAX_REASON_CHARS {
        Some(format!("longer than {MAX_REASON_CHARS} characters"))
    } else if reason.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

/// Checks a pattern as HQ or the API gives it: the problem in words.
pub fn pattern_problem(pattern: &str) -> std::result::Result<Pattern, String> {
    pattern.parse::<Pattern>().map_err(|e| e.to_string())
}

impl NewEntry {
    /// Every problem, each naming its field (`pattern`, `reason`, `action`).
    pub fn validate(&self) -> std::result::Result<ValidEntry, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(FieldProblem {
                field: field.to_owned(),
                message,
            });
        };
        let pattern = pattern_problem(&self.pattern)
            .map_err(|m| problem("pattern", format!("{m}; up to {MAX_PATTERN_DIGITS} digits")))
            .ok();
        if let Some(m) = reason_problem(&self.reason) {
            problem("reason", m);
        }
        let action = match self.action.as_deref().map(str::parse::<EntryAction>) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(m)) => {
                problem("action", m);
                None
            }
        };
        match pattern {
            Some(pattern) if problems.is_empty() => Ok(ValidEntry {
                pattern,
                reason: self.reason.clone(),
                action,
            }),
            _ => Err(problems),
        }
    }
}

/// The settings as the API takes them (`PUT /api/v1/blacklist/mode`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// `deny` or `allow`.
    pub mode: String,
    /// `busy`, `congestion` or `reject`; absent: unchanged.
    #[serde(default)]
    pub default_action: Option<String>,
}

impl SettingsBody {
    /// The new settings over `current`, or every problem naming its field.
    pub fn validate(&self, current: Settings) -> std::result::Result<Settings, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mode = self.mode.parse::<Mode>().map_err(|m| {
            problems.push(FieldProblem {
                field: "mode".to_owned(),
                message: m,
            });
        });
        let default_action = match self.default_action.as_deref() {
            None => Ok(current.default_action),
            Some(a) => a.parse::<BlockAction>().map_err(|m| {
                problems.push(FieldProblem {
                    field: "default_action".to_owned(),
                    message: m,
                });
            }),
        };
        match (mode, default_action) {
            (Ok(mode), Ok(default_action)) => Ok(Settings {
                mode,
                default_action,
            }),
            _ => Err(problems),
        }
    }
}

/// The stored settings.
pub fn settings(conn: &Connection, path: &Path) -> Result<Settings> {
    let (mode, action): (String, String) = conn
        .query_row(
            "SELECT mode, default_action FROM blacklist_settings WHERE only = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql(path, "read blacklist settings"))?;
    // The CHECK constraints hold exactly these names.
    Ok(Settings {
        mode: mode.parse().unwrap_or_default(),
        default_action: action.parse().unwrap_or(BlockAction::Busy),
    })
}

/// Stores new settings; returns the previous ones.
pub fn set_settings(
    conn: &Connection,
    path: &Path,
    new: Settings,
    now_ms: i64,
) -> Result<Settings> {
    let before = settings(conn, path)?;
    conn.execute(
        "UPDATE blacklist_settings SET mode = ?1, default_action = ?2, updated_at_ms = ?3
          WHERE only = 1",
        params![new.mode.as_str(), new.default_action.as_str(), now_ms],
    )
    .map_err(sql(path, "store blacklist settings"))?;
    Ok(before)
}

const COLUMNS: &str = "id, pattern, reason, action, source, revision, hits, last_hit_ms,
                       created_by, updated_at_ms";

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    let source: String = r.get(4)?;
    Ok(EntryRow {
        id: r.get(0)?,
        pattern: r.get(1)?,
        reason: r.get(2)?,
        action: r.get(3)?,
        source: if source == "hq" {
            Source::Hq
        } else {
            Source::Local
        },
        revision: r.get(5)?,
        hits: r.get(6)?,
        last_hit_ms: r.get(7)?,
        created_by: r.get(8)?,
        updated_at_ms: r.get(9)?,
    })
}

/// Every entry, by pattern.
pub fn list(conn: &Connection, path: &Path) -> Result<Vec<EntryRow>> {
    conn.prepare(&format!("SELECT {COLUMNS} FROM blacklist ORDER BY pattern"))
        .and_then(|mut s| {
            s.query_map([], entry_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "list blacklist"))
}

fn entry_by(conn: &Connection, path: &Path, id: i64) -> Result<Option<EntryRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM blacklist WHERE id = ?1"),
        [id],
        entry_row,
    )
    .optional()
    .map_err(sql(path, "read blacklist entry"))
}

fn entry_by_pattern(conn: &Connection, path: &Path, pattern: &str) -> Result<Option<EntryRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM blacklist WHERE pattern = ?1"),
        [pattern],
        entry_row,
    )
    .optional()
    .map_err(sql(path, "read blacklist entry"))
}

/// The compiled list: settings, the site's numbering plan (numbers are matched in all
/// their forms) and every valid entry. Rows that do not validate are
/// skipped (and logged); the count of those is returned with it.
pub fn load(conn: &Connection, path: &Path) -> Result<(Blacklist, usize)> {
    let mut list_ = Blacklist::with_plan(
        settings(conn, path)?,
        crate::numbers::store::plan(conn, path)?,
    );
    let mut skipped = 0;
    for row in list(conn, path)? {
        let pattern = row.pattern.parse::<Pattern>();
        let action = row
            .action
            .as_deref()
            .map(str::parse::<EntryAction>)
            .transpose();
        match (pattern, action) {
            (Ok(p), Ok(a)) => list_.insert(p, a),
            (p, a) => {
                skipped += 1;
                tracing::warn!(
                    pattern = row.pattern,
                    pattern_error = p.err().map(|e| e.to_string()),
                    action_error = a.err(),
                    "blacklist entry skipped: it does not validate"
                );
            }
        }
    }
    Ok((list_, skipped))
}

/// Adds a local entry (validated by the caller). A pattern already listed is
/// [`Error::BlacklistConflict`]; nothing is written then.
pub fn add_local(
    conn: &Connection,
    path: &Path,
    entry: &ValidEntry,
    created_by: &str,
    now_ms: i64,
) -> Result<EntryRow> {
    let pattern = entry.pattern.to_string();
    if let Some(existing) = entry_by_pattern(conn, path, &pattern)? {
        return Err(Error::BlacklistConflict {
            pattern,
            why: match existing.source {
                Source::Hq => format!("already listed by HQ (entry {})", existing.id),
                Source::Local => format!("already listed (entry {})", existing.id),
            },
        });
    }
    conn.execute(
        "INSERT INTO blacklist (pattern, reason, action, source, revision, created_by,
                                updated_at_ms)
         VALUES (?1, ?2, ?3, 'local', 0, ?4, ?5)",
        params![
            pattern,
            entry.reason,
            entry.action.map(EntryAction::as_str),
            created_by,
            now_ms
        ],
    )
    .map_err(sql(path, "insert blacklist entry"))?;
    entry_by(conn, path, conn.last_insert_rowid())?.ok_or_else(|| Error::NotFound {
        entity: "blacklist entry",
        key: pattern,
    })
}

/// Deletes local entry `id` and returns it. A missing one is [`Error::NotFound`],
/// one of HQ's [`Error::BlacklistConflict`]; nothing is written then.
pub fn delete_local(conn: &Connection, path: &Path, id: i64) -> Result<EntryRow> {
    let row = entry_by(conn, path, id)?.ok_or_else(|| Error::NotFound {
        entity: "blacklist entry",
        key: id.to_string(),
    })?;
    if row.source == Source::Hq {
        return Err(Error::BlacklistConflict {
            pattern: row.pattern,
            why: "HQ owns this entry: it can only be removed at HQ".to_owned(),
        });
    }
    conn.execute("DELETE FROM blacklist WHERE id = ?1", [id])
        .map_err(sql(path, "delete blacklist entry"))?;
    Ok(row)
}

/// Writes HQ's entry (pattern and reason checked by the caller). A local entry with
/// the same pattern becomes HQ's (its action and hits stay).
pub fn upsert_hq(
    conn: &Connection,
    path: &Path,
    pattern: &Pattern,
    reason: &str,
    revision: i64,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO blacklist (pattern, reason, action, source, revision, created_by,
                                updated_at_ms)
         VALUES (?1, ?2, NULL, 'hq', ?3, 'hq', ?4)
         ON CONFLICT (pattern) DO UPDATE
            SET reason = excluded.reason, source = 'hq', revision = excluded.revision,
                updated_at_ms = excluded.updated_at_ms",
        params![pattern.to_string(), reason, revision, now_ms],
    )
    .map_err(sql(path, "upsert blacklist entry from hq"))?;
    Ok(())
}

/// Checks HQ's entry: the problem in words, naming the field.
pub fn check_hq(
    entry: &branchline_sync::wire::BlacklistEntry,
) -> std::result::Result<Pattern, String> {
    let pattern = pattern_problem(&entry.pattern).map_err(|m| format!("pattern: {m}"))?;
    if let Some(m) = reason_problem(&entry.reason) {
        return Err(format!("reason: {m}"));
    }
    Ok(pattern)
}

/// Deletes HQ's entry for `pattern` (never a local one); returns how many rows went.
pub fn delete_hq(conn: &Connection, path: &Path, pattern: &str) -> Result<usize> {
    conn.execute(
        "DELETE FROM blacklist WHERE pattern = ?1 AND source = 'hq'",
        [pattern],
    )
    .map_err(sql(path, "delete blacklist entry from hq"))
}

/// HQ's patterns on the box (for a snapshot to find the ones it lacks).
pub fn hq_patterns(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    conn.prepare("SELECT pattern FROM blacklist WHERE source = 'hq'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql(path, "list hq blacklist"))
}

/// Counts a blocked call on the entry `pattern` (gone already: nothing happens).
pub fn record_hit(conn: &Connection, path: &Path, pattern: &str, at_ms: i64) -> Result<bool> {
    conn.execute(
        "UPDATE blacklist SET hits = hits + 1, last_hit_ms = max(coalesce(last_hit_ms, 0), ?2)
          WHERE pattern = ?1",
        params![pattern, at_ms],
    )
    .map(|n| n > 0)
    .map_err(sql(path, "count blacklist hit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blacklist::{Caller, Verdict};
    use crate::store::Store;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("b.db")).expect("open");
        (dir, store)
    }

    fn valid(pattern: &str, action: Option<&str>) -> ValidEntry {
        NewEntry {
            pattern: pattern.into(),
            reason: "spam".into(),
            action: action.map(Into::into),
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn local_entries_are_added_listed_loaded_and_deleted() {
        let (_d, mut store) = store();
        store
            .transact("t", |tx, path| {
                let a = add_local(tx, path, &valid("0900*", None), "alice", 5)?;
                assert_eq!(a.source, Source::Local);
                assert_eq!(a.created_by, "alice");
                add_local(tx, path, &valid("5551234", Some("reject")), "alice", 6)?;
                let err = add_local(tx, path, &valid("0900*", Some("busy")), "bob", 7)
                    .expect_err("duplicate");
                assert!(err.to_string().contains("already listed"), "{err}");
                let (b, skipped) = load(tx, path)?;
                assert_eq!((b.len(), skipped), (2, 0));
                assert!(matches!(
                    b.screen(Caller::Number("5551234")),
                    Verdict::Block {
                        action: BlockAction::Reject,
                        ..
                    }
                ));
                assert!(record_hit(tx, path, "5551234", 100)?);
                assert!(record_hit(tx, path, "5551234", 90)?);
                assert!(!record_hit(tx, path, "404", 90)?);
                let rows = list(tx, path)?;
                let hit = rows.iter().find(|r| r.pattern == "5551234").expect("row");
                assert_eq!((hit.hits, hit.last_hit_ms), (2, Some(100)));
                let gone = delete_local(tx, path, a.id)?;
                assert_eq!(gone.pattern, "0900*");
                assert!(matches!(
                    delete_local(tx, path, a.id),
                    Err(Error::NotFound { .. })
                ));
                assert_eq!(list(tx, path)?.len(), 1);
                Ok(())
            })
            .expect("transaction");
    }

    #[test]
    fn hq_entries_cannot_be_deleted_locally_and_take_over_local_ones() {
        let (_d, mut store) = store();
        store
            .transact("t", |tx, path| {
                let local = add_local(tx, path, &valid("0800*", Some("congestion")), "a", 1)?;
                record_hit(tx, path, "0800*", 3)?;
                upsert_hq(tx, path, &"0800*".parse().expect("p"), "hq says", 7, 9)?;
                upsert_hq(tx, path, &"0900*".parse().expect("p"), "", 8, 9)?;
                let rows = list(tx, path)?;
                let taken = rows.iter().find(|r| r.id == local.id).expect("row");
                assert_eq!(taken.source, Source::Hq);
                assert_eq!(taken.reason, "hq says");
                assert_eq!(taken.action.as_deref(), Some("congestion"));
                assert_eq!(taken.hits, 1);
                let err = delete_local(tx, path, local.id).expect_err("hq owned");
                assert!(err.to_string().contains("HQ owns"), "{err}");
                let err = add_local(tx, path, &valid("0900*", None), "a", 1).expect_err("dup");
                assert!(err.to_string().contains("by HQ"), "{err}");
                assert_eq!(delete_hq(tx, path, "0900*")?, 1);
                assert_eq!(hq_patterns(tx, path)?, vec!["0800*".to_owned()]);
                Ok(())
            })
            .expect("transaction");
    }

    #[test]
    fn bad_input_names_every_field() {
        let problems = NewEntry {
            pattern: "09*00".into(),
            reason: "x".repeat(MAX_REASON_CHARS + 1),
            action: Some("drop".into()),
        }
        .validate()
        .expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["pattern", "reason", "action"]);
        assert!(problems[0].message.contains("position 3"), "{problems:?}");
        let s = SettingsBody {
            mode: "block".into(),
            default_action: Some("allow".into()),
        }
        .validate(Settings::default())
        .expect_err("invalid");
        let fields: Vec<&str> = s.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["mode", "default_action"]);
    }

    #[test]
    fn settings_default_to_deny_busy_and_are_stored() {
        let (_d, mut store) = store();
        store
            .transact("t", |tx, path| {
                assert_eq!(settings(tx, path)?, Settings::default());
                let new = Settings {
                    mode: Mode::Allow,
                    default_action: BlockAction::Reject,
                };
                assert_eq!(set_settings(tx, path, new, 5)?, Settings::default());
                assert_eq!(settings(tx, path)?, new);
                assert_eq!(load(tx, path)?.0.settings(), new);
                Ok(())
            })
            .expect("transaction");
    }

    #[test]
    fn migration_0011_moves_hqs_entries_out_of_hq_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).expect("open");
            crate::store::migrate_to(&mut conn, 10);
            conn.execute_batch(
                r#"INSERT INTO hq_rows (kind, key, revision, row, updated_at_ms) VALUES
                   ('blacklist', '0900*', 4, '{"kind":"blacklist","pattern":"0900*","reason":"premium"}', 9),
                   ('blacklist', '', 5, '{"kind":"blacklist","pattern":"","reason":""}', 9),
                   ('queue', '600', 6, '{"kind":"queue"}', 9);"#,
            )
            .expect("seed schema 10");
        }
        let mut store = Store::open(&path).expect("migrate to 11");
        store
            .transact("t", |tx, path| {
                let rows = list(tx, path)?;
                assert_eq!(rows.len(), 1);
                assert_eq!(
                    (
                        rows[0].pattern.as_str(),
                        rows[0].reason.as_str(),
                        rows[0].source,
                        rows[0].revision
                    ),
                    ("0900*", "premium", Source::Hq, 4)
                );
                let left: Vec<String> = tx
                    .prepare("SELECT kind || ':' || key FROM hq_rows ORDER BY kind")
                    .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                    .map_err(sql(path, "hq rows"))?;
                // The entry that never fitted stays for the next snapshot to sweep.
                assert_eq!(left, ["blacklist:", "queue:600"]);
                assert_eq!(settings(tx, path)?, Settings::default());
                Ok(())
            })
            .expect("transaction");
    }

    #[test]
    fn rows_that_do_not_validate_are_skipped_by_load() {
        let (_d, mut store) = store();
        store
            .transact("t", |tx, path| {
                tx.execute(
                    "INSERT INTO blacklist (pattern, source, revision, updated_at_ms)
                     VALUES ('12-34', 'hq', 3, 0), ('555', 'hq', 4, 0)",
                    [],
                )
                .map_err(sql(path, "seed"))?;
                let (b, skipped) = load(tx, path)?;
                assert_eq!((b.len(), skipped), (1, 1));
                Ok(())
            })
            .expect("transaction");
    }
}
