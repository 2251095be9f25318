use std::path::{Path, PathBuf};

use super::*;

/// 2026-03-29 01:00:00 UTC: Europe/Berlin goes from CET (+1) to CEST (+2).
const BERLIN_SPRING_2026: i64 = 1_774_746_000_000;
/// 2026-10-25 01:00:00 UTC: back from CEST to CET.
const BERLIN_AUTUMN_2026: i64 = 1_792_890_000_000;
const HOUR_MS: i64 = 3_600_000;

const BERLIN_RULE: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

fn zoneinfo() -> PathBuf {
    PathBuf::from("/usr/share/zoneinfo")
}

fn berlin_rule() -> SiteZone {
    ZoneSpec::resolve(BERLIN_RULE, Path::new("/nonexistent"))
        .expect("rule")
        .zone()
        .expect("zone")
}

#[test]
fn a_posix_rule_follows_dst_both_ways() {
    let z = berlin_rule();
    assert_eq!(z.name(), BERLIN_RULE);
    assert_eq!(z.offset_s(BERLIN_SPRING_2026 - 1), 3600);
    assert_eq!(z.offset_s(BERLIN_SPRING_2026), 7200);
    assert_eq!(z.offset_s(BERLIN_AUTUMN_2026 - 1), 7200);
    assert_eq!(z.offset_s(BERLIN_AUTUMN_2026), 3600);
}

#[test]
fn first_change_finds_the_transition_to_the_millisecond() {
    let z = berlin_rule();
    let from = BERLIN_SPRING_2026 - 3 * 24 * HOUR_MS - 12_345;
    let to = BERLIN_SPRING_2026 + 5 * HOUR_MS;
    assert_eq!(z.first_change(from, to), Some(BERLIN_SPRING_2026));
    assert_eq!(
        z.first_change(BERLIN_AUTUMN_2026 - HOUR_MS, BERLIN_AUTUMN_2026 + 1),
        Some(BERLIN_AUTUMN_2026)
    );
    // Same offset at both ends, and empty or reversed ranges.
    assert_eq!(z.first_change(from, BERLIN_SPRING_2026 - 1), None);
    assert_eq!(z.first_change(to, from), None);
    assert_eq!(z.first_change(to, to), None);
    assert_eq!(SiteZone::utc().first_change(0, 400 * 24 * HOUR_MS), None);
}

#[test]
fn local_day_and_minute_cross_midnight_with_the_offset() {
    let z = SiteZone::fixed(-5 * 3600).expect("fixed");
    assert_eq!(z.name(), "UTC-05:00");
    // 1970-01-02 03:00 UTC is 1970-01-01 22:00 at -05:00.
    let t = 24 * HOUR_MS + 3 * HOUR_MS;
    assert_eq!(z.local_day_minute(t), (0, 22 * 60));
    assert_eq!(SiteZone::utc().local_day_minute(t), (1, 180));
    // Before 1970.
    assert_eq!(SiteZone::utc().local_day_minute(-1), (-1, 1439));
    assert_eq!(SiteZone::fixed(90 * 60).expect("fixed").name(), "UTC+01:30");
    assert!(SiteZone::fixed(i32::MAX).is_none());
    assert!(SiteZone::fixed(-86_400).is_none());
    assert!(SiteZone::fixed(14 * 3600).is_some());
}

#[test]
fn a_zone_name_reads_the_zone_file_and_agrees_with_the_rule() {
    let dir = zoneinfo();
    if !dir.join("Europe/Berlin").exists() {
        panic!("tzdata is not installed: /usr/share/zoneinfo/Europe/Berlin is missing");
    }
    let spec = ZoneSpec::resolve("Europe/Berlin", &dir).expect("Berlin");
    assert_eq!(spec.spec, "Europe/Berlin");
    assert!(spec.tzif.as_ref().is_some_and(|b| b.starts_with(b"TZif")));
    let file = spec.zone().expect("zone");
    let rule = berlin_rule();
    // Hourly over two years, the file and the rule agree (2026-2027).
    let start = BERLIN_SPRING_2026 - 90 * 24 * HOUR_MS;
    for h in 0..(2 * 365 * 24) {
        let t = start + h * HOUR_MS;
        assert_eq!(file.offset_s(t), rule.offset_s(t), "at {t}");
    }
    let ny = ZoneSpec::resolve("America/New_York", &dir)
        .expect("New York")
        .zone()
        .expect("zone");
    // 2026-07-01 12:00 UTC is 08:00 EDT.
    assert_eq!(ny.offset_s(1_782_907_200_000), -4 * 3600);
}

#[test]
fn bad_specs_are_refused_naming_the_problem() {
    let dir = zoneinfo();
    for bad in [
        "Mars/Olympus_Mons",
        "",
        "   ",
        "../../etc/passwd",
        "/etc/passwd",
        ":Europe/Berlin",
        "Europe//Berlin",
        "CET-1CEST,M13.5.0,M10.5.0",
        "not a zone",
        "+02:00",
    ] {
        let e = ZoneSpec::resolve(bad, &dir).expect_err(bad);
        assert!(e.to_string().contains("is not a time zone"), "{bad:?}: {e}");
    }
    assert!(!is_zone_name("../x"));
    assert!(!is_zone_name("a/./b"));
    assert!(!is_zone_name("/abs"));
    assert!(is_zone_name("America/Argentina/Buenos_Aires"));
    assert!(is_zone_name("Etc/GMT+5"));
}

#[test]
fn a_damaged_zone_file_or_stored_row_is_an_error_not_utc() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("Europe")).expect("mkdir");
    std::fs::write(dir.path().join("Europe/Berlin"), b"TZif2 broken").expect("write");
    let e = ZoneSpec::resolve("Europe/Berlin", dir.path()).expect_err("broken file");
    assert!(matches!(e, ZoneError::BadFile { .. }), "{e}");
    let stored = ZoneSpec {
        spec: "Europe/Berlin".to_owned(),
        tzif: Some(b"TZif2 broken".to_vec()),
    };
    assert!(matches!(stored.zone(), Err(ZoneError::BadStored { .. })));
}

#[test]
fn utc_and_unset_mean_utc() {
    let spec = ZoneSpec::resolve("UTC", Path::new("/nonexistent")).expect("UTC");
    assert_eq!(spec, ZoneSpec::utc());
    let z = spec.zone().expect("zone");
    assert_eq!(z, SiteZone::utc());
    assert_eq!(z.offset_s(BERLIN_SPRING_2026), 0);
}

#[test]
fn the_store_keeps_the_adopted_zone() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = crate::store::Store::open(&dir.path().join("b.db")).expect("store");
    let rule = ZoneSpec::resolve(BERLIN_RULE, Path::new("/nonexistent")).expect("rule");
    store
        .transact("t", |tx, path| {
            assert_eq!(store::zone(tx, path)?, SiteZone::utc());
            assert!(store::adopt(tx, path, &rule, 1)?);
            assert!(!store::adopt(tx, path, &rule, 2)?);
            assert_eq!(store::zone(tx, path)?.name(), BERLIN_RULE);
            assert!(store::adopt(tx, path, &ZoneSpec::utc(), 3)?);
            assert_eq!(store::zone(tx, path)?, SiteZone::utc());
            // A damaged row is reported, not read as UTC.
            tx.execute(
                "UPDATE site_time_zone SET spec = 'Europe/Berlin', tzif = zeroblob(64)",
                [],
            )
            .expect("damage");
            let e = store::zone(tx, path).expect_err("damaged");
            assert!(e.to_string().contains("site_time_zone"), "{e}");
            Ok(())
        })
        .expect("transact");
}
