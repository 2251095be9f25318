//! The site's numbering plan in the store (migration 0022's `site_numbering`), so the
//! stored numbers and every lookup agree on one canonical form.
//!
//! Why in the store and not only in the config: the numbers in `customer_numbers` and
//! `lead_numbers` are stored in canonical form, which depends on the plan. Keeping the
//! plan they were written with next to them lets [`adopt`] see at start that it
//! changed (the first start after the upgrade that brought migration 0022, or a
//! provisioning bundle that changed the site's country) and rewrite the stored numbers
//! in the same transaction as the plan row, and it lets every reader (the API, the
//! store writer's service records, call control's caller-ID directory, the blacklist
//! loader) canonicalise with [`site_plan`] from the connection it already has.
//!
//! Re-normalisation at start rather than in the migration: a SQL migration does not
//! know the site's country (it lives in the config file and provisioning overrides).
//!
//! What [`adopt`] rewrites: customers' numbers (a customer who held one number in two
//! forms keeps it once) and leads' numbers (when a list holds a number in two forms on
//! two leads, the second stays as written, so no lead loses its number; the import
//! check refuses such duplicates from now on), and phone-type custom field values (a
//! value a customer held in two forms is kept once). Service records keep the number as the
//! call had it; blacklist patterns stay as written (they are canonicalised when the
//! list is loaded, `crate::blacklist`).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::SitePlan;
use crate::error::{Error, Result};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The plan the stored numbers follow; `None` before the daemon first adopted one.
pub fn site_plan(conn: &Connection) -> rusqlite::Result<Option<SitePlan>> {
    conn.prepare_cached(
        "SELECT country_code, international_prefix, national_prefix
           FROM site_numbering WHERE only = 1",
    )?
    .query_row([], |r| {
        Ok(SitePlan {
            country_code: r.get(0)?,
            international_prefix: r.get(1)?,
            national_prefix: r.get(2)?,
        })
    })
    .optional()
}

/// [`site_plan`] with the error in the crate's terms.
pub fn plan(conn: &Connection, path: &Path) -> Result<Option<SitePlan>> {
    site_plan(conn).map_err(sql(path, "read the site's numbering plan"))
}

/// What [`adopt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adopted {
    /// The plan was new or changed (false: nothing was touched).
    pub changed: bool,
    /// Customer numbers rewritten.
    pub customer_numbers: usize,
    /// Customer numbers dropped because the customer held them in another form too.
    pub customer_duplicates: usize,
    /// Lead numbers rewritten.
    pub lead_numbers: usize,
    /// Lead numbers left as written because another lead of the list holds the
    /// canonical form.
    pub lead_conflicts: usize,
    /// Phone-type custom field values rewritten.
    pub field_values: usize,
}

/// Makes `plan` the site's, in the caller's transaction: when it differs from the
/// stored one, rewrites the stored numbers to its canonical form (see the module docs)
/// and stores it. Run at every start, before the writer thread.
pub fn adopt(conn: &Connection, path: &Path, plan: &SitePlan, now_ms: i64) -> Result<Adopted> {
    if self::plan(conn, path)?.as_ref() == Some(plan) {
        return Ok(Adopted::default());
    }
    let mut done = Adopted {
        changed: true,
        ..Adopted::default()
    };
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT number, customer_id FROM customer_numbers")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql(path, "read customer numbers"))?;
    for (number, customer) in rows {
        let Ok(canonical) = plan.canonical(&number) else {
            continue;
        };
        if canonical == number {
            continue;
        }
        let moved = conn
            .execute(
                "UPDATE OR IGNORE customer_numbers SET number = ?1
                  WHERE number = ?2 AND customer_id = ?3",
                params![canonical, number, customer],
            )
            .map_err(sql(path, "rewrite a customer number"))?;
        if moved == 1 {
            done.customer_numbers += 1;
        } else {
            // The customer holds the canonical form already.
            conn.execute(
                "DELETE FROM customer_numbers WHERE number = ?1 AND customer_id = ?2",
                params![number, customer],
            )
            .map_err(sql(path, "drop a duplicate customer number"))?;
            done.customer_duplicates += 1;
        }
    }
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT list_id, number FROM lead_numbers")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql(path, "read lead numbers"))?;
    for (list, number) in rows {
        let Ok(canonical) = plan.canonical(&number) else {
            continue;
        };
        if canonical == number {
            continue;
        }
        let moved = conn
            .execute(
                "UPDATE OR IGNORE lead_numbers SET number = ?1 WHERE list_id = ?2 AND number = ?3",
                params![canonical, list, number],
            )
            .map_err(sql(path, "rewrite a lead number"))?;
        if moved == 1 {
            done.lead_numbers += 1;
        } else {
            done.lead_conflicts += 1;
        }
    }
    // Phone-type custom field values (crate::customers::Schema::canonical_value).
    let rows: Vec<(i64, i64, String)> = conn
        .prepare(
            "SELECT v.customer_id, v.field_id, v.value FROM customer_field_values v
               JOIN customer_fields f ON f.id = v.field_id WHERE f.type = 'phone'",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql(path, "read phone field values"))?;
    for (customer, field, value) in rows {
        let Ok(canonical) = plan.canonical(&value) else {
            continue;
        };
        if canonical == value {
            continue;
        }
        // The key is (customer, field, value): a value held twice becomes one.
        conn.execute(
            "UPDATE OR REPLACE customer_field_values SET value = ?1
              WHERE customer_id = ?2 AND field_id = ?3 AND value = ?4",
            params![canonical, customer, field, value],
        )
        .map_err(sql(path, "rewrite a phone field value"))?;
        done.field_values += 1;
    }
    conn.execute(
        "INSERT INTO site_numbering (only, country_code, international_prefix, national_prefix,
                                     adopted_at_ms)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (only) DO UPDATE SET country_code = excluded.country_code,
             international_prefix = excluded.international_prefix,
             national_prefix = excluded.national_prefix, adopted_at_ms = excluded.adopted_at_ms",
        params![
            plan.country_code,
            plan.international_prefix,
            plan.national_prefix,
            now_ms
        ],
    )
    .map_err(sql(path, "store the site's numbering plan"))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tones::Country;

    fn db() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("b.db")).expect("open");
        (dir, store)
    }

    fn numbers(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(&format!("SELECT number FROM {table} ORDER BY number"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("numbers")
    }

    #[test]
    fn adopting_a_plan_rewrites_stored_numbers_once_and_again_on_a_change() {
        let (_dir, mut store) = db();
        store
            .transact("seed", |tx, path| {
                tx.execute_batch(
                    "INSERT INTO customers (id, name, source, created_at_ms, updated_at_ms)
                          VALUES (1, 'Ann', 'local', 0, 0), (2, 'Bob', 'local', 0, 0);
                     INSERT INTO customer_numbers (number, customer_id, position)
                          VALUES ('030123456', 1, 0), ('+4930123456', 2, 0),
                                 ('004930999999', 2, 1), ('+4930999999', 2, 2),
                                 ('201', 1, 1);
                     INSERT INTO lead_lists (id, name, created_at_ms) VALUES (1, 'l', 0);
                     INSERT INTO leads (id, list_id, name, state, created_at_ms, updated_at_ms)
                          VALUES (1, 1, 'a', 'pending', 0, 0), (2, 1, 'b', 'pending', 0, 0);
                     INSERT INTO lead_numbers (list_id, number, lead_id, position)
                          VALUES (1, '0301111111', 1, 0), (1, '+49301111111', 2, 0),
                                 (1, '0302222222', 2, 1);",
                )
                .map_err(sql(path, "seed"))
            })
            .expect("seed");
        assert_eq!(
            store
                .transact("read", |tx, path| plan(tx, path))
                .expect("plan"),
            None
        );
        let de = SitePlan::of_country(Country::De);
        let done = store
            .transact("adopt", |tx, path| adopt(tx, path, &de, 5))
            .expect("adopt");
        assert_eq!(
            done,
            Adopted {
                changed: true,
                customer_numbers: 1,
                customer_duplicates: 1,
                lead_numbers: 1,
                lead_conflicts: 1,
                field_values: 0,
            }
        );
        let stored = store
            .transact("read", |tx, _| {
                Ok((numbers(tx, "customer_numbers"), numbers(tx, "lead_numbers")))
            })
            .expect("read");
        assert_eq!(
            stored.0,
            ["+4930123456", "+4930123456", "+4930999999", "201"]
        );
        assert_eq!(stored.1, ["+49301111111", "+49302222222", "0301111111"]);
        // Same plan again: nothing touched.
        let again = store
            .transact("adopt", |tx, path| adopt(tx, path, &de, 6))
            .expect("adopt");
        assert_eq!(again, Adopted::default());
        // The country changed: the plan row follows (numbers already in + form stay).
        let uk = SitePlan::of_country(Country::Uk);
        let changed = store
            .transact("adopt", |tx, path| adopt(tx, path, &uk, 7))
            .expect("adopt");
        assert!(changed.changed);
        assert_eq!(
            store
                .transact("read", |tx, path| plan(tx, path))
                .expect("plan"),
            Some(uk)
        );
    }
}
