//! Rollouts in HQ's PostgreSQL database: the tables of
//! `sync/migrations/postgres/rollouts/`, the same functions as [`super::sqlite`].
//!
//! Writes run in one transaction each; an operator command locks its rollout row
//! (`SELECT ... FOR UPDATE`) so two HQ instances cannot both advance the same wave.
//! Migrations run under an advisory lock of their own, like the main schema's.

use tokio_postgres::{Client, GenericClient};

use super::sqlite::{parse_outcome, parse_state, parse_waves, waves_json};
use super::{BoxOutcome, Command, Rollout};
use crate::hq::{Error, Result};
use crate::wire::UpdateReport;

/// The rollout migrations, applied in order.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    include_str!("../../../migrations/postgres/rollouts/0001_rollouts.sql"),
)];

/// Key of the advisory lock rollout migrations run under ("rollout").
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6f75;

fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { op, source }
}

/// Applies the rollout migrations not applied yet.
pub async fn migrate(client: &mut Client, now_ms: i64) -> Result<()> {
    for (version, script) in MIGRATIONS {
        let tx = client.transaction().await.map_err(pg("begin migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("lock rollout migrations"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS rollout_migrations (
                 version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
        )
        .await
        .map_err(pg("create rollout_migrations"))?;
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM rollout_migrations WHERE version = $1)",
                &[version],
            )
            .await
            .map_err(pg("read rollout_migrations"))?
            .get(0);
        if !done {
            tx.batch_execute(script)
                .await
                .map_err(pg("apply rollout migration"))?;
            tx.execute(
                "INSERT INTO rollout_migrations (version, applied_at_ms) VALUES ($1, $2)",
                &[version, &now_ms],
            )
            .await
            .map_err(pg("record rollout migration"))?;
        }
        tx.commit().await.map_err(pg("commit rollout migration"))?;
    }
    Ok(())
}

/// Stores a new rollout; refuses an existing id and unknown sites.
pub async fn create(client: &mut Client, r: &Rollout) -> Result<()> {
    let tx = client.transaction().await.map_err(pg("begin create"))?;
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM rollouts WHERE id = $1)",
            &[&r.id],
        )
        .await
        .map_err(pg("find rollout"))?
        .get(0);
    if exists {
        return Err(Error::AlreadyExists {
            what: "rollout",
            key: r.id.clone(),
        });
    }
    for site in &r.sites {
        let known: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)", &[site])
            .await
            .map_err(pg("find site"))?
            .get(0);
        if !known {
            return Err(Error::NotFound {
                what: "site",
                key: site.clone(),
            });
        }
    }
    let size = i64::try_from(r.size).unwrap_or(i64::MAX);
    let wave = i64::try_from(r.current_wave).unwrap_or(0);
    // ON CONFLICT DO NOTHING: a concurrent create of the same id loses cleanly.
    let inserted = tx
        .execute(
            "INSERT INTO rollouts (id, version, board, sha256, size, forced, waves,
                                   current_wave, state, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            &[
                &r.id,
                &r.version,
                &r.board,
                &r.sha256,
                &size,
                &r.forced,
                &waves_json(&r.waves),
                &wave,
                &r.state.as_str(),
                &r.created_at_ms,
            ],
        )
        .await
        .map_err(pg("insert rollout"))?;
    if inserted == 0 {
        return Err(Error::AlreadyExists {
            what: "rollout",
            key: r.id.clone(),
        });
    }
    for site in &r.sites {
        tx.execute(
            "INSERT INTO rollout_sites (rollout, site) VALUES ($1, $2)",
            &[&r.id, site],
        )
        .await
        .map_err(pg("insert rollout site"))?;
    }
    tx.commit().await.map_err(pg("commit create"))
}

/// One rollout by id (`lock`: `FOR UPDATE`, inside a transaction).
pub async fn get(client: &impl GenericClient, id: &str, lock: bool) -> Result<Option<Rollout>> {
    let sql = if lock {
        "SELECT id, version, board, sha256, size, forced, waves, current_wave, state,
                created_at_ms FROM rollouts WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT id, version, board, sha256, size, forced, waves, current_wave, state,
                created_at_ms FROM rollouts WHERE id = $1"
    };
    let Some(row) = client
        .query_opt(sql, &[&id])
        .await
        .map_err(pg("read rollout"))?
    else {
        return Ok(None);
    };
    let sites = client
        .query(
            "SELECT site FROM rollout_sites WHERE rollout = $1 ORDER BY site",
            &[&id],
        )
        .await
        .map_err(pg("read rollout sites"))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(Some(Rollout {
        id: row.get(0),
        version: row.get(1),
        board: row.get(2),
        sha256: row.get(3),
        size: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
        forced: row.get(5),
        sites,
        waves: parse_waves(row.get(6))?,
        current_wave: usize::try_from(row.get::<_, i64>(7)).unwrap_or(0),
        state: parse_state(row.get(8))?,
        created_at_ms: row.get(9),
    }))
}

/// Every rollout, newest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Rollout>> {
    let ids: Vec<String> = client
        .query(
            "SELECT id FROM rollouts ORDER BY created_at_ms DESC, id",
            &[],
        )
        .await
        .map_err(pg("list rollouts"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = get(client, &id, false).await? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Applies an operator's command, the rollout row locked.
pub async fn command(client: &mut Client, id: &str, cmd: Command) -> Result<Rollout> {
    let tx = client.transaction().await.map_err(pg("begin command"))?;
    let current = get(&tx, id, true).await?.ok_or_else(|| Error::NotFound {
        what: "rollout",
        key: id.to_owned(),
    })?;
    let next = current.transition(cmd)?;
    let wave = i64::try_from(next.current_wave).unwrap_or(0);
    tx.execute(
        "UPDATE rollouts SET state = $2, current_wave = $3 WHERE id = $1",
        &[&id, &next.state.as_str(), &wave],
    )
    .await
    .map_err(pg("update rollout"))?;
    tx.commit().await.map_err(pg("commit command"))?;
    Ok(next)
}

async fn box_site(client: &impl GenericClient, box_id: &str) -> Result<String> {
    client
        .query_opt("SELECT site FROM boxes WHERE id = $1", &[&box_id])
        .await
        .map_err(pg("read box site"))?
        .map(|r| r.get::<_, String>(0))
        .ok_or_else(|| Error::NotFound {
            what: "box",
            key: box_id.to_owned(),
        })
}

/// The rollout offered to `box_id` now (see [`super::sqlite::offer_for_box`]).
pub async fn offer_for_box(client: &impl GenericClient, box_id: &str) -> Result<Option<Rollout>> {
    let site = box_site(client, box_id).await?;
    let rows = client
        .query(
            "SELECT r.id, o.state FROM rollouts r
             JOIN rollout_sites s ON s.rollout = r.id
             LEFT JOIN rollout_outcomes o ON o.rollout = r.id AND o.box = $2
             WHERE s.site = $1 AND r.state = 'active'
             ORDER BY r.created_at_ms DESC, r.id",
            &[&site, &box_id],
        )
        .await
        .map_err(pg("read offers"))?;
    for row in rows {
        let id: String = row.get(0);
        let outcome = row
            .get::<_, Option<String>>(1)
            .map(|s| parse_outcome(&s))
            .transpose()?;
        if let Some(r) = get(client, &id, false).await? {
            if r.offer_for(box_id, &site, outcome) {
                return Ok(Some(r));
            }
        }
    }
    Ok(None)
}

/// Records a box's report; refuses a rollout that does not target the box's site.
/// The first final outcome stays (see `sqlite::record_outcome`): a repeated report
/// changes nothing.
pub async fn record_outcome(
    client: &mut Client,
    rollout: &str,
    box_id: &str,
    report: &UpdateReport,
    now_ms: i64,
) -> Result<()> {
    let tx = client.transaction().await.map_err(pg("begin outcome"))?;
    let site = box_site(&tx, box_id).await?;
    let r = get(&tx, rollout, false)
        .await?
        .ok_or_else(|| Error::NotFound {
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
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (rollout, box) DO UPDATE SET state = excluded.state,
             version = excluded.version, reason = excluded.reason,
             updated_at_ms = excluded.updated_at_ms
         WHERE rollout_outcomes.state NOT IN ('committed', 'rolled_back', 'failed')",
        &[
            &rollout,
            &box_id,
            &report.state.as_str(),
            &report.version,
            &report.reason,
            &now_ms,
        ],
    )
    .await
    .map_err(pg("write outcome"))?;
    tx.commit().await.map_err(pg("commit outcome"))
}

/// Every box's last outcome for `rollout`, by box id.
pub async fn outcomes(client: &impl GenericClient, rollout: &str) -> Result<Vec<BoxOutcome>> {
    client
        .query(
            "SELECT box, state, version, reason, updated_at_ms FROM rollout_outcomes
             WHERE rollout = $1 ORDER BY box",
            &[&rollout],
        )
        .await
        .map_err(pg("read outcomes"))?
        .iter()
        .map(|r| {
            Ok(BoxOutcome {
                box_id: r.get(0),
                state: parse_outcome(r.get(1))?,
                version: r.get(2),
                reason: r.get(3),
                updated_at_ms: r.get(4),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Against the PostgreSQL server the workspace's tests use (127.0.0.1:5432, trust
    //! auth), in a throwaway database. Fails, never skips, when it is unreachable.

    use tokio_postgres::NoTls;

    use super::*;
    use crate::hq::rollouts::{bucket, RolloutState, Waves};
    use crate::wire::{OutcomeState, PROTOCOL_VERSION};

    const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres";

    async fn connect(db: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(&format!("{SERVER} dbname={db}"), NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at 127.0.0.1:5432 is required: {e}"));
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn rollouts_offers_and_outcomes_on_postgres() {
        let name = format!(
            "rollouts_{}_{}",
            std::process::id(),
            crate::hq::now_ms() % 1_000_000_000
        );
        let admin = connect("postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create db");
        let result = tokio::spawn({
            let name = name.clone();
            async move {
                let mut c = connect(&name).await;
                c.batch_execute(include_str!("../../../migrations/postgres/0001_init.sql"))
                    .await
                    .expect("main schema");
                migrate(&mut c, 1).await.expect("migrate");
                migrate(&mut c, 2).await.expect("again: no-op");
                c.batch_execute(
                    "INSERT INTO sites (id, name, created_at_ms) VALUES ('s1', 's1', 0), ('s2', 's2', 0)",
                )
                .await
                .expect("sites");
                for i in 0..20 {
                    let site = if i < 16 { "s1" } else { "s2" };
                    c.execute(
                        "INSERT INTO boxes (id, site, created_at_ms) VALUES ($1, $2, 0)",
                        &[&format!("box-{i}"), &site],
                    )
                    .await
                    .expect("box");
                }
                let r = Rollout {
                    id: "r1".into(),
                    version: "1.2.0".into(),
                    board: "sim".into(),
                    sha256: "cd".repeat(32),
                    size: 99,
                    forced: true,
                    sites: vec!["s1".into()],
                    waves: Waves::new(vec![30, 100]).expect("waves"),
                    current_wave: 0,
                    state: RolloutState::Active,
                    created_at_ms: 5,
                };
                create(&mut c, &r).await.expect("create");
                assert!(matches!(
                    create(&mut c, &r).await,
                    Err(Error::AlreadyExists { .. })
                ));
                assert_eq!(get(&c, "r1", false).await.expect("get"), Some(r.clone()));
                assert_eq!(list(&c).await.expect("list"), vec![r.clone()]);
                let mut offered = Vec::new();
                for i in 0..16 {
                    let b = format!("box-{i}");
                    if offer_for_box(&c, &b).await.expect("offer").is_some() {
                        offered.push(b);
                    }
                }
                let first: Vec<String> = (0..16)
                    .map(|i| format!("box-{i}"))
                    .filter(|b| bucket("r1", b) < 30)
                    .collect();
                assert_eq!(offered, first);
                assert_eq!(offer_for_box(&c, "box-17").await.expect("offer"), None);
                command(&mut c, "r1", Command::Advance).await.expect("advance");
                assert!(command(&mut c, "r1", Command::Advance).await.is_err());
                let report = UpdateReport {
                    protocol: PROTOCOL_VERSION,
                    state: OutcomeState::Committed,
                    version: Some("1.2.0".into()),
                    reason: None,
                };
                record_outcome(&mut c, "r1", "box-3", &report, 7)
                    .await
                    .expect("outcome");
                assert_eq!(offer_for_box(&c, "box-3").await.expect("offer"), None);
                assert!(offer_for_box(&c, "box-4").await.expect("offer").is_some());
                let e = record_outcome(&mut c, "r1", "box-17", &report, 8)
                    .await
                    .expect_err("other site");
                assert!(e.to_string().contains("does not target"), "{e}");
                let got = outcomes(&c, "r1").await.expect("outcomes");
                assert_eq!(got.len(), 1);
                assert_eq!(
                    (got[0].box_id.as_str(), got[0].state),
                    ("box-3", OutcomeState::Committed)
                );
                command(&mut c, "r1", Command::Cancel).await.expect("cancel");
                assert_eq!(offer_for_box(&c, "box-4").await.expect("offer"), None);
            }
        })
        .await;
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .expect("drop db");
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
