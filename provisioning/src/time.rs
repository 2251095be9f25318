//! Timestamps are Unix seconds (`u64`) everywhere in the formats; the box passes its
//! clock in (`now`), so checks are pure and tests choose the time. Helpers to print
//! them and to parse the CLI's validity periods.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-29T10:00:00Z`); out-of-range values
/// print as the raw number.
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Parses an RFC 3339 timestamp into Unix seconds (before 1970 is refused).
pub fn parse_rfc3339(field: &str, text: &str) -> Result<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| Error::invalid(field, format!("{text:?} is not an RFC 3339 time: {e}")))?;
    u64::try_from(t.unix_timestamp())
        .map_err(|_| Error::invalid(field, format!("{text:?} is before 1970")))
}

/// Parses a validity period: a whole number followed by `m`, `h` or `d`
/// (`90m`, `12h`, `14d`), at most 366 days. Returns seconds.
pub fn parse_period(field: &str, text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            field,
            format!("{text:?} is not a period like 90m, 12h or 14d (at most 366d)"),
        )
    };
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    if secs == 0 || secs > 366 * 86_400 {
        return Err(bad());
    }
    Ok(secs)
}

/// The system clock in Unix seconds (binaries only; library checks take `now`).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("p", "90m").unwrap(), 5400);
        assert_eq!(parse_period("p", "12h").unwrap(), 43_200);
        assert_eq!(parse_period("p", "14d").unwrap(), 14 * 86_400);
        for bad in [
            "",
            "d",
            "0d",
            "14",
            "14w",
            "-1d",
            "367d",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(parse_period("p", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = 1_795_000_000;
        assert_eq!(parse_rfc3339("t", &rfc3339(t)).unwrap(), t);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert!(parse_rfc3339("t", "yesterday").is_err());
    }
}
