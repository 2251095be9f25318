//! The site's time zone: local time for campaign calling hours (and whatever else is
//! judged by the branch's wall clock), with daylight saving time.
//!
//! Configured as `[telephony] time_zone`: an IANA zone name read from the system's
//! zoneinfo (`Europe/Berlin`, `America/New_York`; the directory is `$TZDIR` or
//! `/usr/share/zoneinfo`), or a POSIX TZ rule for images without zoneinfo
//! (`CET-1CEST,M3.5.0,M10.5.0/3`). Unset means UTC. A name that is neither a zone
//! file nor a valid rule is refused when the config is read, naming the field.
//!
//! The zone the daemon runs with is kept in the store ([`store`], migration 0024):
//! the spec and the TZif bytes it was read from, written at every start. Every reader
//! (the API checking a dial against the calling hours, the campaign driver, the store
//! writer) gets the same zone from the connection it already has, with no file access
//! and no config in reach; a tzdata upgrade or a changed setting applies at the next
//! start.
//!
//! Parsing TZif and POSIX rules is the `tz-rs` crate's (small, no dependencies, the
//! libc `localtime` algorithm). What is ours: the name check (a configured name never
//! leaves the zoneinfo directory), and [`SiteZone::first_change`], a binary search for
//! the instant the UTC offset changes, which is all the calling hours need to find
//! when a window opens across a DST transition (tz-rs does not expose transition times
//! for the years after a TZif file's table, where its POSIX rule applies).

pub mod store;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tz::{TimeZone, TimeZoneSettings};

/// Where zone files are read: `$TZDIR` when set, else `/usr/share/zoneinfo`.
pub fn zoneinfo_dir() -> PathBuf {
    std::env::var_os("TZDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/usr/share/zoneinfo"), PathBuf::from)
}

/// Why a time zone spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// Neither a zone file in the zoneinfo directory nor a POSIX TZ rule.
    #[error(
        "{spec:?} is not a time zone: no such zone in {dir} and not a POSIX TZ rule \
         (give an IANA name like Europe/Berlin, or a rule like CET-1CEST,M3.5.0,M10.5.0/3)"
    )]
    Unknown {
        /// What was given.
        spec: String,
        /// The zoneinfo directory looked in.
        dir: String,
    },
    /// A zone file that does not parse.
    #[error("the zone file {path} is not valid TZif: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// What tz-rs said.
        reason: String,
    },
    /// Stored TZif bytes or rule that no longer parse (a damaged store row).
    #[error("the stored time zone {spec:?} does not parse: {reason}")]
    BadStored {
        /// The stored spec.
        spec: String,
        /// What tz-rs said.
        reason: String,
    },
}

/// A configured time zone: the spec as written and, for a zone name, the TZif bytes read
/// from the zoneinfo directory (a POSIX rule has none: the spec is the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// `Europe/Berlin`, `UTC`, or a POSIX TZ rule.
    pub spec: String,
    /// The zone file's contents, for a name.
    pub tzif: Option<Vec<u8>>,
}

impl ZoneSpec {
    /// UTC (what an unset `time_zone` means).
    pub fn utc() -> ZoneSpec {
        ZoneSpec {
            spec: "UTC".to_owned(),
            tzif: None,
        }
    }

    /// Resolves `spec` against the zoneinfo directory `dir`: a zone name whose file
    /// exists there, else a POSIX TZ rule; anything else is refused.
    pub fn resolve(spec: &str, dir: &Path) -> Result<ZoneSpec, ZoneError> {
        let spec = spec.trim();
        if is_zone_name(spec) {
            let path = dir.join(spec);
            if let Ok(bytes) = std::fs::read(&path) {
                TimeZone::from_tz_data(&bytes).map_err(|e| ZoneError::BadFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                return Ok(ZoneSpec {
                    spec: spec.to_owned(),
                    tzif: Some(bytes),
                });
            }
        }
        if spec == "UTC" {
            return Ok(ZoneSpec::utc());
        }
        match parse_rule(spec) {
            Ok(_) => Ok(ZoneSpec {
                spec: spec.to_owned(),
                tzif: None,
            }),
            Err(_) => Err(ZoneError::Unknown {
                spec: spec.to_owned(),
                dir: dir.display().to_string(),
            }),
        }
    }

    /// The zone to compute with.
    pub fn zone(&self) -> Result<SiteZone, ZoneError> {
        let tz = match &self.tzif {
            Some(bytes) => TimeZone::from_tz_data(bytes).map_err(|e| e.to_string()),
            None if self.spec == "UTC" => Ok(TimeZone::utc()),
            None => parse_rule(&self.spec),
        }
        .map_err(|reason| ZoneError::BadStored {
            spec: self.spec.clone(),
            reason,
        })?;
        Ok(SiteZone {
            name: Arc::from(self.spec.as_str()),
            tz: Arc::new(tz),
        })
    }
}

/// A POSIX TZ rule only: the settings have no directories and a read function that
/// always fails, so a rule-looking spec never opens a file.
fn parse_rule(spec: &str) -> Result<TimeZone, String> {
    const NO_DIRS: &[&str] = &[];
    let settings = TimeZoneSettings::new(NO_DIRS, |_| Err("zone files are not read here".into()));
    if spec.is_empty() || spec.starts_with(':') || spec.starts_with('/') {
        return Err("not a rule".to_owned());
    }
    settings.parse_posix_tz(spec).map_err(|e| e.to_string())
}

/// Whether `s` may name a file under the zoneinfo directory: `Area/Location` made of
/// letters, digits, `_`, `-`, `+`, no empty, `.` or `..` component, not absolute.
pub fn is_zone_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// The site's time zone, ready to compute with (cheap to clone).
#[derive(Clone)]
pub struct SiteZone {
    name: Arc<str>,
    tz: Arc<TimeZone>,
}

impl fmt::Debug for SiteZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SiteZone").field(&self.name).finish()
    }
}

impl PartialEq for SiteZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.tz == other.tz
    }
}

impl Eq for SiteZone {}

/// Serialised as its name (`"Europe/Berlin"`), as the API shows it.
impl serde::Serialize for SiteZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

impl SiteZone {
    /// UTC.
    pub fn utc() -> SiteZone {
        SiteZone {
            name: Arc::from("UTC"),
            tz: Arc::new(TimeZone::utc()),
        }
    }

    /// A fixed offset from UTC in seconds (tests, and zones without DST); `None` for a
    /// day or more either way.
    pub fn fixed(offset_s: i32) -> Option<SiteZone> {
        if offset_s.unsigned_abs() >= 86_400 {
            return None;
        }
        let tz = TimeZone::fixed(offset_s).ok()?;
        let sign = if offset_s < 0 { '-' } else { '+' };
        let a = offset_s.unsigned_abs();
        Some(SiteZone {
            name: Arc::from(format!("UTC{sign}{:02}:{:02}", a / 3600, a / 60 % 60)),
            tz: Arc::new(tz),
        })
    }

    /// The spec it was made from (`Europe/Berlin`, a rule, `UTC`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Local time minus UTC at `utc_ms`, in seconds. Times outside what the zone
    /// describes (beyond year ±292 billion) count as UTC.
    pub fn offset_s(&self, utc_ms: i64) -> i32 {
        self.tz
            .find_local_time_type(utc_ms.div_euclid(1000))
            .map_or(0, |t| t.ut_offset())
    }

    /// The local wall-clock time at `utc_ms` as milliseconds since 1970-01-01 00:00
    /// local.
    pub fn local_ms(&self, utc_ms: i64) -> i64 {
        utc_ms.saturating_add(i64::from(self.offset_s(utc_ms)) * 1000)
    }

    /// Local day number (days since 1970-01-01 local) and minute of that day.
    pub fn local_day_minute(&self, utc_ms: i64) -> (i64, i64) {
        let local = self.local_ms(utc_ms);
        (
            local.div_euclid(DAY_MS),
            local.rem_euclid(DAY_MS) / MINUTE_MS,
        )
    }

    /// The first instant in `(from_ms, to_ms]` at which the UTC offset differs from the
    /// one at `from_ms`, to the millisecond; `None` when the offset at `to_ms` is the
    /// same (the zone is then taken to have no transition in between: real zones do not
    /// change and change back within the few days this is asked about).
    pub fn first_change(&self, from_ms: i64, to_ms: i64) -> Option<i64> {
        let base = self.offset_s(from_ms);
        if to_ms <= from_ms || self.offset_s(to_ms) == base {
            return None;
        }
        // offset(lo) == base, offset(hi) != base.
        let (mut lo, mut hi) = (from_ms, to_ms);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_s(mid) == base {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }
}
