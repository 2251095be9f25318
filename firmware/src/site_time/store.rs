//! The site's time zone in the store (migration 0024's `site_time_zone`): written by
//! the daemon at every start ([`adopt`]), read by whoever judges the branch's wall
//! clock ([`zone`]) from the connection it already has.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::{SiteZone, ZoneSpec};
use crate::error::{Error, Result};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The stored spec; `None` before the daemon first adopted one.
pub fn stored(conn: &Connection, path: &Path) -> Result<Option<ZoneSpec>> {
    conn.prepare_cached("SELECT spec, tzif FROM site_time_zone WHERE only = 1")
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(ZoneSpec {
                    spec: r.get(0)?,
                    tzif: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(sql(path, "read the site's time zone"))
}

/// The site's zone: the stored one, UTC when none was adopted yet. A stored zone that
/// no longer parses is reported as a damaged row.
pub fn zone(conn: &Connection, path: &Path) -> Result<SiteZone> {
    match stored(conn, path)? {
        None => Ok(SiteZone::utc()),
        Some(spec) => spec.zone().map_err(|e| Error::StoreCorrupt {
            path: path.to_owned(),
            table: "site_time_zone",
            key: "1".to_owned(),
            column: "tzif",
            value: e.to_string(),
        }),
    }
}

/// Makes `spec` the site's zone, in the caller's transaction; true when it changed.
/// Run at every start.
pub fn adopt(conn: &Connection, path: &Path, spec: &ZoneSpec, now_ms: i64) -> Result<bool> {
    if stored(conn, path)?.as_ref() == Some(spec) {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO site_time_zone (only, spec, tzif, adopted_at_ms) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (only) DO UPDATE SET spec = excluded.spec, tzif = excluded.tzif,
                                          adopted_at_ms = excluded.adopted_at_ms",
        params![spec.spec, spec.tzif, now_ms],
    )
    .map_err(sql(path, "store the site's time zone"))?;
    Ok(true)
}
