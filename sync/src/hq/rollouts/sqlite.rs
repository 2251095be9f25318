//! Rollouts in HQ's SQLite database: the tables of
//! `sync/migrations/sqlite/rollouts/`, applied by [`migrate`] (tracked in
//! `rollout_migrations`, so they never collide with the main schema's numbers).
//!
//! The functions take a [`Connection`] to the database the rest of HQ uses (`sites` and
//! `boxes` are referenced), each write in one transaction; [`SqliteRollouts`] runs them
//! on a connection of its own off the async runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{BoxOutcome, Command, Rollout, RolloutState, Waves};
use crate::hq::{Error, Result};
use crate::wire::{OutcomeState, UpdateReport};

/// The rollout migrations, applied in order.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../../migrations/sqlite/rollouts/0001_rollouts.sql"),
)];

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { op, source }
}

/// Applies the rollout migrations not applied yet (each in a transaction).
pub fn migrate(conn: &mut Connection, now_ms: i64) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rollout_migrations (
             version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    )
    .map_err(sql("create rollout_migrations"))?;
    for (version, script) in MIGRATIONS {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin rollout migration"))?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM rollout_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(sql("read rollout_migrations"))?;
        if !done {
            tx.execute_batch(script)
                .map_err(sql("apply rollout migration"))?;
            tx.execute(
                "INSERT INTO rollout_migrations (version, applied_at_ms) VALUES (?1, ?2)",
                params![version, now_ms],
            )
            .map_err(sql("record rollout migration"))?;
        }
        tx.commit().map_err(sql("commit rollout migration"))?;
    }
    Ok(())
}

/// Stores a new rollout. Refuses an existing id and sites HQ does not know.
pub fn create(conn: &mut Connection, r: &Rollout) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin create rollout"))?;
    let exists: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM rollouts WHERE id = ?1)",
            [&r.id],
            |row| row.get(0),
        )
        .map_err(sql("find rollout"))?;
    if exists {
        return Err(Error::AlreadyExists {
            what: "rollout",
            key: r.id.clone(),
        });
    }
    for site in &r.sites {
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sites WHERE id = ?1)",
                [site],
                |row| row.get(0),
            )
            .map_err(sql("find site"))?;
        if !known {
            return Err(Error::NotFound {
                what: "site",
                key: site.clone(),
            });
        }
    }
    tx.execute(
        "INSERT INTO rollouts (id, version, board, sha256, size, forced, waves, current_wave,
                               state, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            r.id,
            r.version,
            r.board,
            r.sha256,
            i64::try_from(r.size).unwrap_or(i64::MAX),
            r.forced,
            waves_json(&r.waves),
            i64::try_from(r.current_wave).unwrap_or(0),
            r.state.as_str(),
            r.created_at_ms,
        ],
    )
    .map_err(sql("insert rollout"))?;
    for site in &r.sites {
        tx.execute(
            "INSERT INTO rollout_sites (rollout, site) VALUES (?1, ?2)",
            params![r.id, site],
        )
        .map_err(sql("insert rollout site"))?;
    }
    tx.commit().map_err(sql("commit create rollout"))
}

pub(super) fn waves_json(w: &Waves) -> String {
    serde_json::to_string(w.percents()).unwrap_or_else(|_| "[]".into())
}

pub(super) fn parse_waves(json: &str) -> Result<Waves> {
    let percents: Vec<u8> = serde_json::from_str(json).map_err(|source| Error::StoredJson {
        what: "rollout waves",
        source,
    })?;
    Waves::new(percents).map_err(|_| Error::StoredValue {
        what: "rollout waves",
        value: json.to_owned(),
    })
}

pub(super) fn parse_state(name: &str) -> Result<RolloutState> {
    RolloutState::from_name(name).ok_or_else(|| Error::StoredValue {
        what: "rollout state",
        value: name.to_owned(),
    })
}

pub(super) fn parse_outcome(name: &str) -> Result<OutcomeState> {
    OutcomeState::from_name(name).ok_or_else(|| Error::StoredValue {
        what: "rollout outcome",
        value: name.to_owned(),
    })
}

/// One rollout by id.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Rollout>> {
    let row = conn
        .query_row(
            "SELECT id, version, board, sha256, size, forced, waves, current_wave, state,
                    created_at_ms
             FROM rollouts WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            },
        )
        .optional()
        .map_err(sql("read rollout"))?;
    let Some((id, version, board, sha256, size, forced, waves, wave, state, created)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT site FROM rollout_sites WHERE rollout = ?1 ORDER BY site")
        .map_err(sql("prepare rollout sites"))?;
    let sites = stmt
        .query_map([&id], |r| r.get::<_, String>(0))
        .map_err(sql("read rollout sites"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql("read rollout sites"))?;
    Ok(Some(Rollout {
        id,
        version,
        board,
        sha256,
        size: u64::try_from(size).unwrap_or(0),
        forced,
        sites,
        waves: parse_waves(&waves)?,
        current_wave: usize::try_from(wave).unwrap_or(0),
        state: parse_state(&state)?,
        created_at_ms: created,
    }))
}

/// Every rollout, newest first.
pub fn list(conn: &Connection) -> Result<Vec<Rollout>> {
    let mut stmt = conn
        .prepare("SELECT id FROM rollouts ORDER BY created_at_ms DESC, id")
        .map_err(sql("prepare rollouts"))?;
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sql("list rollouts"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql("list rollouts"))?;
    ids.iter()
        .filter_map(|id| get(conn, id).transpose())
        .collect()
}

/// Applies an operator's command (in one transaction: read, decide, write).
pub fn command(conn: &mut Connection, id: &str, cmd: Command) -> Result<Rollout> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin rollout command"))?;
    let current = get(&tx, id)?.ok_or_else(|| Error::NotFound {
        what: "rollout",
        key: id.to_owned(),
    })?;
    let next = current.transition(cmd)?;
    tx.execute(
        "UPDATE rollouts SET state = ?2, current_wave = ?3 WHERE id = ?1",
        params![
            id,
            next.state.as_str(),
            i64::try_from(next.current_wave).unwrap_or(0)
        ],
    )
    .map_err(sql("update rollout"))?;
    tx.commit().map_err(sql("commit rollout command"))?;
    Ok(next)
}

fn box_site(conn: &Connection, box_id: &str) -> Result<String> {
    conn.query_row("SELECT site FROM boxes WHERE id = ?1", [box_id], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map_err(sql("read box site"))?
    .ok_or_else(|| Error::NotFound {
        what: "box",
        key: box_id.to_owned(),
    })
}

fn outcome_state(conn: &Connection, rollout: &str, box_id: &str) -> Result<Option<OutcomeState>> {
    conn.query_row(
        "SELECT state FROM rollout_outcomes WHERE rollout = ?1 AND box = ?2",
        [rollout, box_id],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map_err(sql("read rollout outcome"))?
    .map(|s| parse_outcome(&s))
    .transpose()
}

/// The rollout offered to `box_id` now: the newest active rollout of its site that
/// [`Rollout::offer_for`] lets it have.
pub fn offer_for_box(conn: &Connection, box_id: &str) -> Result<Option<Rollout>> {
    let site = box_site(conn, box_id)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT r.id FROM rollouts r JOIN rollout_sites s ON s.rollout = r.id
             WHERE s.site = ?1 AND r.state = 'active'
             ORDER BY r.created_at_ms DESC, r.id",
        )
        .map_err(sql("prepare offers"))?;
    let ids = stmt
        .query_map([&site], |r| r.get::<_, String>(0))
        .map_err(sql("read offers"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql("read offers"))?;
    for id in ids {
        let Some(r) = get(conn, &id)? else { continue };
        let outcome = outcome_state(conn, &id, box_id)?;
        if r.offer_for(box_id, &site, outcome) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Records a box's report. Refuses a rollout that does not target the box's site.
/// The first final outcome (committed, rolled back, failed) stays: a box that sends
/// it again (its answer was lost, or it restarted before it saw it) changes nothing,
/// so HQ records each box's outcome exactly once.
pub fn record_outcome(
    conn: &mut Connection,
    rollout: &str,
    box_id: &str,
    report: &UpdateReport,
    now_ms: i64,
) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin outcome"))?;
    let site = box_site(&tx, box_id)?;
    let r = get(&tx, rollout)?.ok_or_else(|| Error::NotFound {
        what: "rollout",
        key: rollout.to_owned(),
    })?;
    if !r.sites.contains(&site) {
        return Err(Error::Invalid {
            field: "rollout".into(),
            reason: format!("{rollout} does not target site {site} of box {box_id}"),
        });
    }
    tx.execute(
        "INSERT INTO rollout_outcomes (rollout, box, state, version, reason, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (rollout, box) DO UPDATE SET state = excluded.state,
             version = excluded.version, reason = excluded.reason,
             updated_at_ms = excluded.updated_at_ms
         WHERE rollout_outcomes.state NOT IN ('committed', 'rolled_back', 'failed')",
        params![
            rollout,
            box_id,
            report.state.as_str(),
            report.version,
            report.reason,
            now_ms
        ],
    )
    .map_err(sql("write outcome"))?;
    tx.commit().map_err(sql("commit outcome"))
}

/// Every box's last outcome for `rollout`, by box id.
pub fn outcomes(conn: &Connection, rollout: &str) -> Result<Vec<BoxOutcome>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT box, state, version, reason, updated_at_ms FROM rollout_outcomes
             WHERE rollout = ?1 ORDER BY box",
        )
        .map_err(sql("prepare outcomes"))?;
    let rows = stmt
        .query_map([rollout], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(sql("read outcomes"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql("read outcomes"))?;
    rows.into_iter()
        .map(|(box_id, state, version, reason, at)| {
            Ok(BoxOutcome {
                box_id,
                state: parse_outcome(&state)?,
                version,
                reason,
                updated_at_ms: at,
            })
        })
        .collect()
}

/// The rollout tables of a SQLite HQ database, on a connection of their own (WAL lets
/// it work beside the main store's connections; `busy_timeout` waits out its writer).
#[derive(Debug, Clone)]
pub struct SqliteRollouts {
    /// One connection: rollout traffic is a few requests per box per sync interval.
    conn: Arc<Mutex<Connection>>,
}

impl SqliteRollouts {
    /// Opens `path` (the HQ database, already migrated by the main store) and applies
    /// the rollout migrations.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteRollouts> {
        let path = path.into();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut conn = Connection::open(&path).map_err(sql("open database"))?;
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            )
            .map_err(sql("set pragmas"))?;
            migrate(&mut conn, crate::hq::now_ms())?;
            Ok(conn)
        })
        .await
        .map_err(|source| Error::Join {
            op: "open rollouts",
            source,
        })??;
        Ok(SqliteRollouts {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the runtime.
    pub async fn with<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut c)
        })
        .await
        .map_err(|source| Error::Join { op, source })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hq::rollouts::bucket;
    use crate::wire::PROTOCOL_VERSION;

    /// A database with the main schema's `sites` and `boxes` (as HQ's migration 1
    /// creates them) and the rollout tables.
    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .expect("pragma");
        conn.execute_batch(include_str!("../../../migrations/sqlite/0001_init.sql"))
            .expect("main schema");
        migrate(&mut conn, 1).expect("migrate");
        migrate(&mut conn, 2).expect("migrating again is a no-op");
        for (site, boxes) in [("s1", 0..40), ("s2", 40..50)] {
            conn.execute(
                "INSERT INTO sites (id, name, created_at_ms) VALUES (?1, ?1, 0)",
                [site],
            )
            .expect("site");
            for i in boxes {
                conn.execute(
                    "INSERT INTO boxes (id, site, created_at_ms) VALUES (?1, ?2, 0)",
                    params![format!("box-{i}"), site],
                )
                .expect("box");
            }
        }
        conn
    }

    fn rollout(id: &str, waves: Vec<u8>, created: i64) -> Rollout {
        Rollout {
            id: id.into(),
            version: "1.2.0".into(),
            board: "sim".into(),
            sha256: "ab".repeat(32),
            size: 1234,
            forced: false,
            sites: vec!["s1".into()],
            waves: Waves::new(waves).expect("waves"),
            current_wave: 0,
            state: RolloutState::Active,
            created_at_ms: created,
        }
    }

    fn report(state: OutcomeState) -> UpdateReport {
        UpdateReport {
            protocol: PROTOCOL_VERSION,
            state,
            version: Some("1.2.0".into()),
            reason: None,
        }
    }

    #[test]
    fn create_read_list_and_refusals() {
        let mut conn = db();
        let r = rollout("r1", vec![25, 100], 10);
        create(&mut conn, &r).expect("create");
        assert_eq!(get(&conn, "r1").expect("get"), Some(r.clone()));
        assert_eq!(get(&conn, "nope").expect("get"), None);
        let e = create(&mut conn, &r).expect_err("duplicate");
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        let mut other = rollout("r2", vec![100], 20);
        other.sites = vec!["s1".into(), "ghost".into()];
        let e = create(&mut conn, &other).expect_err("unknown site");
        assert!(e.to_string().contains("ghost"), "{e}");
        assert_eq!(get(&conn, "r2").expect("get"), None, "nothing written");
        other.sites = vec!["s2".into()];
        create(&mut conn, &other).expect("create r2");
        let ids: Vec<_> = list(&conn)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["r2", "r1"], "newest first");
    }

    #[test]
    fn offers_open_wave_by_wave_and_stop_at_a_final_outcome() {
        let mut conn = db();
        create(&mut conn, &rollout("r1", vec![25, 100], 10)).expect("create");
        let boxes: Vec<String> = (0..40).map(|i| format!("box-{i}")).collect();
        let offered = |conn: &Connection| -> Vec<String> {
            boxes
                .iter()
                .filter(|b| offer_for_box(conn, b).expect("offer").is_some())
                .cloned()
                .collect()
        };
        let first: Vec<String> = boxes
            .iter()
            .filter(|b| bucket("r1", b) < 25)
            .cloned()
            .collect();
        assert!(!first.is_empty() && first.len() < boxes.len());
        assert_eq!(offered(&conn), first);
        // Another site's boxes are never offered it.
        assert_eq!(offer_for_box(&conn, "box-45").expect("offer"), None);
        assert!(matches!(
            offer_for_box(&conn, "ghost"),
            Err(Error::NotFound { what: "box", .. })
        ));

        command(&mut conn, "r1", Command::Advance).expect("advance");
        assert_eq!(offered(&conn), boxes);
        let e = command(&mut conn, "r1", Command::Advance).expect_err("last wave");
        assert!(e.to_string().contains("last wave"), "{e}");

        // Outcomes: in progress keeps the offer, a final one ends it.
        let b = &first[0];
        record_outcome(&mut conn, "r1", b, &report(OutcomeState::Downloading), 5)
            .expect("downloading");
        assert!(offer_for_box(&conn, b).expect("offer").is_some());
        let mut failed = report(OutcomeState::Failed);
        failed.reason = Some("bad signature".into());
        record_outcome(&mut conn, "r1", b, &failed, 6).expect("failed");
        assert_eq!(offer_for_box(&conn, b).expect("offer"), None);
        assert_eq!(
            outcomes(&conn, "r1").expect("outcomes"),
            vec![BoxOutcome {
                box_id: b.clone(),
                state: OutcomeState::Failed,
                version: Some("1.2.0".into()),
                reason: Some("bad signature".into()),
                updated_at_ms: 6,
            }]
        );
        // The first final outcome stays: a repeat (or a late report) changes nothing.
        for (state, at) in [(OutcomeState::Failed, 8), (OutcomeState::Downloading, 9)] {
            let mut again = report(state);
            again.reason = Some("other".into());
            record_outcome(&mut conn, "r1", b, &again, at).expect("accepted");
        }
        assert_eq!(outcomes(&conn, "r1").expect("outcomes")[0].updated_at_ms, 6);
        assert_eq!(
            outcomes(&conn, "r1").expect("outcomes")[0]
                .reason
                .as_deref(),
            Some("bad signature")
        );
        // A box of another site cannot report on this rollout.
        let e = record_outcome(
            &mut conn,
            "r1",
            "box-45",
            &report(OutcomeState::Committed),
            7,
        )
        .expect_err("foreign site");
        assert!(e.to_string().contains("does not target site s2"), "{e}");
        assert_eq!(outcomes(&conn, "r1").expect("outcomes").len(), 1);

        // Pause and cancel withdraw the offer.
        command(&mut conn, "r1", Command::Pause).expect("pause");
        assert_eq!(offered(&conn), Vec::<String>::new());
        command(&mut conn, "r1", Command::Cancel).expect("cancel");
        let e = command(&mut conn, "r1", Command::Resume).expect_err("cancelled");
        assert!(e.to_string().contains("cancelled"), "{e}");
        assert_eq!(
            get(&conn, "r1").expect("get").map(|r| r.state),
            Some(RolloutState::Cancelled)
        );
    }

    #[test]
    fn newest_active_rollout_wins() {
        let mut conn = db();
        create(&mut conn, &rollout("old", vec![100], 10)).expect("old");
        create(&mut conn, &rollout("new", vec![100], 20)).expect("new");
        assert_eq!(
            offer_for_box(&conn, "box-1").expect("offer").map(|r| r.id),
            Some("new".into())
        );
        command(&mut conn, "new", Command::Cancel).expect("cancel");
        assert_eq!(
            offer_for_box(&conn, "box-1").expect("offer").map(|r| r.id),
            Some("old".into())
        );
    }
}
