//! Tests of the campaign rules, the dialer (model-based, on a virtual clock), the
//! lead import and the campaign store.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rusqlite::params;

use super::store::{self, CampaignInput, LeadListInput, Started, WrapUpInput};
use super::*;
use crate::accounts::PageRequest;
use crate::error::Error;
use crate::store::Store;

pub(super) const MIN: i64 = 60_000;
pub(super) const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2026-11-30 00:00 UTC, a Monday.
pub(super) const MONDAY: i64 = 1_795_996_800_000;

fn weekdays_9_to_17() -> CallingHours {
    CallingHours::new(9 * 60, 17 * 60, 0b001_1111).expect("hours")
}

fn rules(max: u32) -> RetryRules {
    RetryRules::new(max, 300, 600, 120).expect("rules")
}

// --- rules ----------------------------------------------------------------------------------

#[test]
fn monday_constant_is_a_monday() {
    // 1970-01-01 was a Thursday; MONDAY is a whole number of days after it.
    assert_eq!(MONDAY % DAY, 0);
    assert_eq!((MONDAY / DAY + 3) % 7, 0);
}

fn utc() -> crate::site_time::SiteZone {
    crate::site_time::SiteZone::utc()
}

fn berlin() -> crate::site_time::SiteZone {
    crate::site_time::ZoneSpec::resolve("CET-1CEST,M3.5.0,M10.5.0/3", std::path::Path::new("/-"))
        .expect("rule")
        .zone()
        .expect("zone")
}

#[test]
fn calling_hours_open_on_the_chosen_days_and_minutes_only() {
    let h = weekdays_9_to_17();
    let z = utc();
    assert!(!h.is_open(MONDAY + 9 * HOUR - 1, &z));
    assert!(h.is_open(MONDAY + 9 * HOUR, &z));
    assert!(h.is_open(MONDAY + 17 * HOUR - 1, &z));
    assert!(!h.is_open(MONDAY + 17 * HOUR, &z));
    // Saturday.
    assert!(!h.is_open(MONDAY + 5 * DAY + 12 * HOUR, &z));
    assert_eq!(h.next_open(MONDAY + 8 * HOUR, &z), MONDAY + 9 * HOUR);
    assert_eq!(h.next_open(MONDAY + 10 * HOUR, &z), MONDAY + 10 * HOUR);
    assert_eq!(h.next_open(MONDAY + 17 * HOUR, &z), MONDAY + DAY + 9 * HOUR);
    // Friday evening -> Monday morning.
    assert_eq!(
        h.next_open(MONDAY + 4 * DAY + 18 * HOUR, &z),
        MONDAY + 7 * DAY + 9 * HOUR
    );
}

#[test]
fn calling_hours_follow_the_site_zone() {
    // 09:00-17:00 at UTC+2 is 07:00-15:00 UTC.
    let h = CallingHours::new(9 * 60, 17 * 60, 0b111_1111).expect("hours");
    let plus2 = crate::site_time::SiteZone::fixed(7200).expect("zone");
    assert!(h.is_open(MONDAY + 7 * HOUR, &plus2));
    assert!(!h.is_open(MONDAY + 15 * HOUR, &plus2));
    assert_eq!(h.next_open(MONDAY + 5 * HOUR, &plus2), MONDAY + 7 * HOUR);
    // UTC-5: Monday 09:00 local is 14:00 UTC; Sunday-only hours are Sunday local.
    let h = CallingHours::new(9 * 60, 10 * 60, 0b100_0000).expect("hours");
    let minus5 = crate::site_time::SiteZone::fixed(-5 * 3600).expect("zone");
    assert!(!h.is_open(MONDAY + 14 * HOUR, &minus5));
    assert!(h.is_open(MONDAY - DAY + 14 * HOUR, &minus5));
}

/// 2026-03-29 (Sunday) 01:00 UTC: Berlin springs from +1 to +2.
const SPRING: i64 = 1_774_746_000_000;
/// 2026-10-25 (Sunday) 01:00 UTC: Berlin falls back from +2 to +1.
const AUTUMN: i64 = 1_792_890_000_000;

#[test]
fn calling_hours_keep_local_time_across_daylight_saving() {
    let z = berlin();
    let h = weekdays_9_to_17();
    // Friday before the spring change: 09:00 CET = 08:00 UTC.
    let friday = SPRING - HOUR - 2 * DAY;
    assert!(h.is_open(friday + 8 * HOUR, &z));
    assert!(!h.is_open(friday + 8 * HOUR - 1, &z));
    // Monday after it: 09:00 CEST = 07:00 UTC, found from Friday evening.
    let monday = SPRING - HOUR + DAY;
    assert_eq!(h.next_open(friday + 17 * HOUR, &z), monday + 7 * HOUR);
    assert!(!h.is_open(monday + 15 * HOUR, &z));
    // Across the autumn change: Friday 17:00 CEST = 15:00 UTC closes, Monday 09:00 CET
    // = 08:00 UTC opens.
    let friday = AUTUMN - HOUR - 2 * DAY;
    assert!(h.is_open(friday + 15 * HOUR - 1, &z));
    assert!(!h.is_open(friday + 15 * HOUR, &z));
    let monday = AUTUMN - HOUR + DAY;
    assert_eq!(h.next_open(friday + 15 * HOUR, &z), monday + 8 * HOUR);
}

#[test]
fn a_window_starting_in_the_skipped_hour_opens_at_the_end_of_the_gap() {
    let z = berlin();
    // Sundays 02:30-04:00 local; 02:00-03:00 does not exist on 2026-03-29.
    let h = CallingHours::new(150, 240, 0b100_0000).expect("hours");
    let saturday_noon = SPRING - HOUR - 12 * HOUR;
    // 03:00 CEST is the change itself, 01:00 UTC: the first local time past 02:30.
    assert_eq!(h.next_open(saturday_noon, &z), SPRING);
    assert!(h.is_open(SPRING, &z));
    assert!(!h.is_open(SPRING - 1, &z));
    // Closes at 04:00 CEST = 02:00 UTC.
    assert!(!h.is_open(SPRING + HOUR, &z));
    // In autumn 02:30-03:00 happens twice: open both times.
    let first = AUTUMN - 30 * MIN;
    assert!(h.is_open(first, &z));
    assert!(h.is_open(AUTUMN + 30 * MIN, &z));
}

proptest! {
    /// `next_open` is open, not before `now`, and nothing between `now` and it is open
    /// (checked minute by minute), in a zone with DST, all year round.
    #[test]
    fn next_open_is_the_first_open_minute(
        start in 0u16..1439,
        len in 1u16..600,
        weekdays in 1u8..128,
        now in (SPRING - 200 * DAY)..(SPRING + 200 * DAY),
    ) {
        let z = berlin();
        let end = (start + len).min(1440);
        let h = CallingHours::new(start, end, weekdays).expect("hours");
        let now = now - now.rem_euclid(MIN);
        let open = h.next_open(now, &z);
        prop_assert!(open >= now);
        prop_assert!(h.is_open(open, &z));
        let mut t = now;
        while t < open {
            prop_assert!(!h.is_open(t, &z), "open at {} before {}", t, open);
            t += MIN;
        }
    }
}

#[test]
fn bad_hours_and_rules_name_their_fields() {
    let e = CallingHours::new(1440, 1441, 0).unwrap_err();
    let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["hours.start", "hours.end", "hours.weekdays"]);
    let e = CallingHours::new(600, 600, 1).unwrap_err();
    assert!(e[0].message.contains("after the start"), "{e:?}");
    let e = RetryRules::new(0, 59, 604_801, 60).unwrap_err();
    let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["retry.max_attempts", "retry.busy_s", "retry.no_answer_s"]
    );
}

#[test]
fn numbers_rotate_and_skip_blocked_ones() {
    let n: Vec<String> = vec!["1".into(), "2".into(), "3".into()];
    let none = |_: &str| false;
    assert_eq!(pick_number(&n, 0, none), Ok("1"));
    assert_eq!(pick_number(&n, 4, none), Ok("2"));
    assert_eq!(pick_number(&n, 0, |x: &str| x == "1"), Ok("2"));
    assert_eq!(pick_number(&n, 2, |x: &str| x == "3"), Ok("1"));
    assert_eq!(
        pick_number(&n, 0, |_: &str| true),
        Err(LeadResult::Blacklisted)
    );
    assert_eq!(pick_number(&[], 0, none), Err(LeadResult::NoNumber));
}

#[test]
fn attempts_retry_by_outcome_until_the_maximum() {
    let r = rules(3);
    assert_eq!(
        after_attempt(&r, 1, Outcome::Busy, 1000),
        AfterAttempt::RetryAt(1000 + 300_000)
    );
    assert_eq!(
        after_attempt(&r, 2, Outcome::NoAnswer, 1000),
        AfterAttempt::RetryAt(1000 + 600_000)
    );
    assert_eq!(
        after_attempt(&r, 1, Outcome::Failed, 0),
        AfterAttempt::RetryAt(120_000)
    );
    assert_eq!(
        after_attempt(&r, 3, Outcome::Busy, 0),
        AfterAttempt::Done(LeadResult::MaxAttempts)
    );
    assert_eq!(
        after_attempt(&r, 3, Outcome::Answered, 0),
        AfterAttempt::Done(LeadResult::Answered)
    );
}

#[test]
fn campaign_states_move_only_the_allowed_ways() {
    use CampaignState::*;
    let all = [Draft, Running, Paused, Done];
    let allowed: BTreeSet<(&str, &str)> = all
        .iter()
        .flat_map(|a| all.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a.may_become(*b))
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let want: BTreeSet<(&str, &str)> = [
        ("draft", "running"),
        ("paused", "running"),
        ("running", "paused"),
        ("draft", "done"),
        ("running", "done"),
        ("paused", "done"),
    ]
    .into_iter()
    .collect();
    assert_eq!(allowed, want);
}

// --- dialer -----------------------------------------------------------------------------

fn lead(id: i64, numbers: &[&str]) -> Lead {
    Lead {
        id,
        numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
        attempts: 0,
        next_at_ms: 0,
        assigned: None,
        state: LeadState::Pending,
    }
}

#[test]
fn progressive_pacing_dials_one_lead_per_free_agent() {
    let mut d = Dialer::new(
        weekdays_9_to_17(),
        utc(),
        rules(3),
        (1..=5).map(|i| lead(i, &[&format!("55500{i}")])),
    );
    let now = MONDAY + 10 * HOUR;
    let dials = d.plan(now, &[100, 200], |_| false);
    assert_eq!(dials.len(), 2);
    assert_eq!(d.in_flight(), 2);
    // The same agents again: both are reserved, nothing more.
    assert!(d.plan(now, &[100, 200], |_| false).is_empty());
    d.result(now, dials[0].lead, Outcome::Answered)
        .expect("result");
    let more = d.plan(now, &[100, 200], |_| false);
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].agent, dials[0].agent);
    assert!(
        d.result(now, dials[0].lead, Outcome::Busy).is_err(),
        "twice"
    );
}

#[test]
fn nothing_is_dialled_outside_the_hours_and_the_timeout_says_when() {
    let mut d = Dialer::new(weekdays_9_to_17(), utc(), rules(3), [lead(1, &["1"])]);
    let evening = MONDAY + 18 * HOUR;
    assert!(d.plan(evening, &[7], |_| false).is_empty());
    assert_eq!(d.timeout(evening), Some(MONDAY + DAY + 9 * HOUR));
    assert!(matches!(
        d.preview_dial(evening, 7, 1, |_| false),
        Err(Refusal::Closed { .. })
    ));
}

#[test]
fn preview_gives_an_agent_their_leads_and_checks_every_dial() {
    let mut d = Dialer::new(
        weekdays_9_to_17(),
        utc(),
        rules(2),
        [lead(1, &["1"]), lead(2, &["2"]), lead(3, &["3"])],
    );
    let now = MONDAY + 10 * HOUR;
    assert_eq!(d.next_for(now, 7, 2), [1, 2]);
    assert_eq!(d.next_for(now, 8, 2), [3]);
    assert_eq!(d.next_for(now, 7, 2), [1, 2], "the same until dialled");
    assert_eq!(
        d.preview_dial(now, 8, 1, |_| false),
        Err(Refusal::NotYours(1))
    );
    let dial = d.preview_dial(now, 7, 1, |_| false).expect("dial");
    assert_eq!(dial.number, "1");
    assert_eq!(
        d.preview_dial(now, 7, 2, |_| false),
        Err(Refusal::AgentBusy(7))
    );
    assert_eq!(
        d.result(now, 1, Outcome::Busy),
        Ok(AfterAttempt::RetryAt(now + 300_000))
    );
    assert_eq!(
        d.preview_dial(now, 7, 1, |_| false),
        Err(Refusal::NotDue {
            lead: 1,
            due_ms: now + 300_000
        })
    );
    assert_eq!(
        d.preview_dial(now, 8, 3, |n: &str| n == "3"),
        Err(Refusal::Blacklisted(3))
    );
    assert_eq!(
        d.lead(3).map(|l| &l.state),
        Some(&LeadState::Done(LeadResult::Blacklisted))
    );
}

/// What the simulated callee at a number does (by the number's last digit).
fn callee(number: &str, attempt: u32) -> Outcome {
    match number.as_bytes().last().map(|b| b - b'0') {
        Some(0..=3) => Outcome::Answered,
        Some(4 | 5) => Outcome::Busy,
        Some(6) if attempt >= 1 => Outcome::Answered,
        Some(6..=8) => Outcome::NoAnswer,
        _ => Outcome::Failed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A whole progressive campaign on a virtual clock against a reference check of
    /// every rule: agents come and go, callees answer / are busy / never answer /
    /// fail, some numbers are blacklisted (and the list changes mid-campaign).
    /// Checked at every step: never more dials in flight than free agents, no agent
    /// or lead twice at once, every dial inside the hours, due, to an unblocked
    /// number, the retry spacing kept, at most max_attempts per lead; at the end
    /// every lead is finished with a result that matches its attempts.
    #[test]
    fn progressive_campaign_keeps_every_rule(
        numbers in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..3), 1..25),
        agents in 1usize..5,
        max in 1u32..5,
        blocked in proptest::collection::btree_set(0u32..1000, 0..50),
        later_blocked in proptest::collection::btree_set(0u32..1000, 0..50),
        ring_ms in prop::sample::select(vec![5_000i64, 30_000, 120_000]),
        seed in any::<u64>(),
    ) {
        let hours = weekdays_9_to_17();
        let retry = rules(max);
        let leads: Vec<Lead> = numbers
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let mut ns: Vec<String> = ns.iter().map(|n| format!("555{n:04}")).collect();
                ns.dedup();
                Lead { numbers: ns, ..lead(i as i64 + 1, &[]) }
            })
            .collect();
        let mut d = Dialer::new(hours, utc(), retry, leads.clone());
        let mut now = MONDAY + 8 * HOUR;
        let end = now + 60 * DAY;
        let mut rng = seed | 1;
        let mut in_flight: BTreeMap<i64, (i64, String, i64)> = BTreeMap::new(); // lead -> (agent, number, ends at)
        let mut last_end: BTreeMap<i64, (i64, Outcome)> = BTreeMap::new();
        let mut tries: BTreeMap<i64, u32> = BTreeMap::new();
        let mut outcomes: BTreeMap<i64, Vec<Outcome>> = BTreeMap::new();
        let mut switched = false;
        while now < end && !d.is_finished() {
            // The blacklist grows half way through.
            let list: BTreeSet<String> = blocked
                .iter()
                .chain(later_blocked.iter().filter(|_| switched))
                .map(|n| format!("555{n:04}"))
                .collect();
            if !switched && now > MONDAY + 10 * DAY {
                switched = true;
            }
            // Agents: a random subset of the group is available.
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            let free: Vec<i64> = (0..agents as i64)
                .filter(|a| rng >> a & 1 == 1 || rng % 3 == 0)
                .filter(|a| !in_flight.values().any(|(b, _, _)| b == a))
                .collect();
            let dials = d.plan(now, &free, |n| list.contains(n));
            prop_assert!(dials.len() <= free.len(), "more dials than free agents");
            let mut used = BTreeSet::new();
            for dial in &dials {
                prop_assert!(hours.is_open(now, &utc()), "dialled outside the hours");
                prop_assert!(free.contains(&dial.agent), "agent not free");
                prop_assert!(used.insert(dial.agent), "agent twice at once");
                prop_assert!(!in_flight.contains_key(&dial.lead), "lead twice at once");
                prop_assert!(!list.contains(&dial.number), "blacklisted number dialled");
                let l = &leads[(dial.lead - 1) as usize];
                prop_assert!(l.numbers.contains(&dial.number));
                if let Some((t, o)) = last_end.get(&dial.lead) {
                    prop_assert!(now >= t + retry.spacing_ms(*o), "retry spacing broken");
                }
                let n = tries.entry(dial.lead).or_default();
                prop_assert!(*n < max, "more than max attempts");
                *n += 1;
                in_flight.insert(dial.lead, (dial.agent, dial.number.clone(), now + ring_ms));
            }
            prop_assert_eq!(d.in_flight(), in_flight.len());
            // Next event: a call ending, or the dialer's timeout, or a minute (agents
            // change their minds).
            let next_end = in_flight.values().map(|(_, _, t)| *t).min();
            let step = [next_end, d.timeout(now).filter(|t| *t > now), Some(now + MIN)]
                .into_iter()
                .flatten()
                .min()
                .expect("a minute at least");
            now = step.max(now + 1);
            let ended: Vec<i64> = in_flight
                .iter()
                .filter(|(_, (_, _, t))| *t <= now)
                .map(|(l, _)| *l)
                .collect();
            for l in ended {
                let (_, number, _) = in_flight.remove(&l).expect("in flight");
                let o = callee(&number, tries[&l] - 1);
                d.result(now, l, o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                last_end.insert(l, (now, o));
                outcomes.entry(l).or_default().push(o);
            }
        }
        prop_assert!(d.is_finished(), "unfinished after 60 days");
        for l in d.leads() {
            let os = outcomes.get(&l.id).cloned().unwrap_or_default();
            let LeadState::Done(result) = l.state else { unreachable!() };
            prop_assert_eq!(l.attempts as usize, os.len());
            match result {
                LeadResult::Answered => prop_assert_eq!(os.last(), Some(&Outcome::Answered)),
                LeadResult::MaxAttempts => {
                    prop_assert_eq!(os.len() as u32, max);
                    prop_assert!(!os.contains(&Outcome::Answered));
                }
                LeadResult::Blacklisted => prop_assert!(!l.numbers.is_empty()),
                LeadResult::NoNumber => prop_assert!(l.numbers.is_empty() && os.is_empty()),
            }
        }
    }
}

// --- store ----------------------------------------------------------------------------------

pub(super) fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("c.db")).expect("open");
    (dir, store)
}

/// A group "sales" with users ada (id 1) and bob (2) in it, and eve (3) outside.
pub(super) fn people(store: &mut Store) -> i64 {
    store
        .transact("people", |tx, path| {
            for (id, name) in [(1001, "ada"), (1002, "bob"), (1003, "eve")] {
                tx.execute(
                    "INSERT INTO users (id, username, display_name, password_hash, enabled, \
                     created_at_ms, updated_at_ms) VALUES (?1, ?2, ?2, 'x', 1, 0, 0)",
                    params![id, name],
                )
                .map_err(store::sql(path, "user"))?;
            }
            tx.execute("INSERT INTO groups (id, name) VALUES (50, 'sales')", [])
                .map_err(store::sql(path, "group"))?;
            tx.execute(
                "INSERT INTO group_members (group_id, user_id) VALUES (50, 1001), (50, 1002)",
                [],
            )
            .map_err(store::sql(path, "members"))?;
            Ok(50)
        })
        .expect("people")
}

pub(super) fn input(list_id: i64, group_id: i64) -> CampaignInput {
    CampaignInput {
        name: "Winter offer".into(),
        list_id,
        group_id,
        mode: Mode::Preview,
        hours_start: "09:00".into(),
        hours_end: "17:00".into(),
        weekdays: ["mon", "tue", "wed", "thu", "fri"]
            .map(String::from)
            .to_vec(),
        max_attempts: 2,
        busy_retry_s: 300,
        no_answer_retry_s: 600,
        failed_retry_s: 120,
        ring_timeout_s: 30,
        caller_id: "+49 30 1234".into(),
    }
}

/// The outbox rows of `kind` as (key, payload), oldest first.
fn outbox(store: &mut Store, kind: &'static str) -> Vec<(String, serde_json::Value)> {
    store
        .transact("outbox", move |tx, path| {
            let mut s = tx
                .prepare("SELECT record_key, payload FROM outbox WHERE kind = ?1 ORDER BY seq")
                .map_err(store::sql(path, "outbox"))?;
            let rows = s
                .query_map([kind], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(store::sql(path, "outbox"))?;
            Ok(rows
                .into_iter()
                .map(|(k, p)| (k, serde_json::from_str(&p).expect("payload json")))
                .collect())
        })
        .expect("outbox")
}

fn count(store: &mut Store, table: &str) -> i64 {
    let q = format!("SELECT count(*) FROM {table}");
    store
        .transact("count", move |tx, path| {
            tx.query_row(&q, [], |r| r.get(0))
                .map_err(store::sql(path, "count"))
        })
        .expect("count")
}

#[test]
fn lead_import_checks_every_row_first_and_a_bad_row_changes_nothing() {
    let (_d, mut store) = open();
    let list = store
        .transact("list", |tx, path| {
            store::create_list(tx, path, &LeadListInput { name: "Nov".into() }, "ada", 1)
        })
        .expect("list");
    let bad = "name,numbers,customer,city\n\
               Ann,030 1111;0171 2222,,Berlin\n\
               Ben,,,\n\
               Cy,abc,,\n\
               Di,0301111,999,\n\
               Ed,555;555,,\n";
    let e = store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, bad, 2)
        })
        .unwrap_err();
    let Error::CsvImport { errors } = e else {
        panic!("{e}")
    };
    let got: Vec<(usize, &str)> = errors.iter().map(|p| (p.row, p.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (3, "numbers"),
            (4, "numbers"),
            (5, "customer"),
            (5, "numbers"),
            (6, "numbers")
        ],
        "{errors:?}"
    );
    assert!(errors[3].message.contains("also on row 2"), "{errors:?}");
    assert!(errors[4].message.contains("given twice"), "{errors:?}");
    assert_eq!(count(&mut store, "leads"), 0);
    assert_eq!(count(&mut store, "lead_numbers"), 0);

    let good = "name,numbers,city\nAnn,030 1111;0171 2222,Berlin\nBen,555 0100,\n";
    let n = store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, good, 2)
        })
        .expect("import");
    assert_eq!(n, 2);
    // The same number again, in a second file: refused, naming the lead.
    let again = "numbers\n5550100\n";
    let e = store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, again, 3)
        })
        .unwrap_err();
    assert!(e.to_string().contains("belongs to lead"), "{e}");
    let (rows, total) = store
        .transact("leads", move |tx, path| {
            store::leads(tx, path, list.id, None, PageRequest::default())
        })
        .expect("leads");
    assert_eq!(total, 2);
    assert_eq!(rows[0].name, "Ann");
    assert_eq!(rows[0].numbers, ["0301111", "01712222"]);
    assert_eq!(rows[0].data, serde_json::json!({ "city": "Berlin" }));
    assert_eq!(rows[1].data, serde_json::json!({}));
    // No numbers column at all.
    let e = store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, "name\nX\n", 3)
        })
        .unwrap_err();
    assert!(e.to_string().contains("numbers column is required"), "{e}");
}

/// At a German site lead numbers are stored in canonical form, a number on two rows
/// in two forms is a duplicate, and the do-not-call check meets a number in every
/// form: an entry written nationally blocks the `+` form and the reverse.
#[test]
fn lead_numbers_are_canonical_and_do_not_call_matches_every_form() {
    let (_d, mut store) = open();
    let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
    let list = store
        .transact("list", |tx, path| {
            crate::numbers::store::adopt(tx, path, &de, 1)?;
            store::create_list(tx, path, &LeadListInput { name: "Nov".into() }, "ada", 1)
        })
        .expect("list");
    let dup = "name,numbers\nAnn,030 1234567\nBen,+49 30 1234567\n";
    let e = store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, dup, 2)
        })
        .unwrap_err();
    assert!(e.to_string().contains("also on row 2"), "{e}");
    let good = "name,numbers\nAnn,030 1234567;0049 40 7654321\nBen,201\n";
    store
        .transact("import", move |tx, path| {
            super::csv::import(tx, path, list.id, good, 2)
        })
        .expect("import");
    let (rows, _) = store
        .transact("leads", move |tx, path| {
            store::leads(tx, path, list.id, None, PageRequest::default())
        })
        .expect("leads");
    assert_eq!(rows[0].numbers, ["+49301234567", "+49407654321"]);
    assert_eq!(rows[1].numbers, ["201"]);
    store
        .transact("dnc", |tx, path| {
            tx.execute_batch(
                "INSERT INTO blacklist (pattern, reason, source, updated_at_ms)
                      VALUES ('0301234567', 'national form', 'local', 1),
                             ('+4940*', 'plus form prefix', 'local', 1);",
            )
            .map_err(|source| Error::Sqlite {
                path: path.to_owned(),
                op: "seed",
                source,
            })?;
            let dnc = store::do_not_call(tx, path)?;
            for n in ["+49301234567", "0301234567", "0049301234567"] {
                assert!(dnc(n), "{n}");
            }
            for n in ["+49407654321", "0407654321", "004940111111"] {
                assert!(dnc(n), "{n}");
            }
            for n in ["+49301234568", "0501234567", "201"] {
                assert!(!dnc(n), "{n}");
            }
            Ok(())
        })
        .expect("dnc");
}

#[test]
fn a_preview_outcome_is_the_calls() {
    assert_eq!(preview_outcome("answered", true), Outcome::Answered);
    assert_eq!(preview_outcome("busy", true), Outcome::Busy);
    assert_eq!(preview_outcome("no_answer", true), Outcome::NoAnswer);
    for other in ["congestion", "unallocated", "abandoned", "nonsense"] {
        assert_eq!(preview_outcome(other, true), Outcome::Failed, "{other}");
    }
    // The agent's own phone never answered (or nothing was dialled): the lead was
    // not reached, whatever the disposition.
    for d in ["answered", "busy", "no_answer"] {
        assert_eq!(preview_outcome(d, false), Outcome::Failed, "{d}");
    }
}

/// A preview attempt is closed from its call's CDR, in either order: the CDR after the
/// link (the writer's hook) or before it (a call that ended before the API linked
/// it); other calls close nothing, and the agent's disposition stays.
#[test]
fn preview_attempts_are_closed_from_their_calls_cdr() {
    let (_d, mut store) = open();
    let group = people(&mut store);
    let open_at = MONDAY + 10 * HOUR;
    let id = store
        .transact("setup", move |tx, path| {
            let l = store::create_list(tx, path, &LeadListInput { name: "Nov".into() }, "ada", 1)?;
            super::csv::import(
                tx,
                path,
                l.id,
                "name,numbers\nAnn,5550101\nBen,5550102\n",
                1,
            )?;
            let v = input(l.id, group).check().expect("valid");
            let c = store::create_campaign(tx, path, &v, "ada", 1)?;
            store::set_state(tx, path, c.id, CampaignState::Running, open_at)?;
            Ok(c.id)
        })
        .expect("setup");
    let leads = store
        .transact("n", move |tx, path| {
            store::next_for(tx, path, id, 1001, 2, open_at)
        })
        .expect("next");
    let (ann, ben) = (leads[0].id, leads[1].id);
    let dial = |store: &mut Store, lead: i64| -> i64 {
        let started = store
            .transact("d", move |tx, path| {
                store::start_attempt(tx, path, id, lead, 1001, |_| false, open_at)
            })
            .expect("dial");
        let Started::Dial { attempt_id, .. } = started else {
            panic!("{started:?}")
        };
        attempt_id
    };
    let cdr_row = |call_id: &'static str, disposition: &'static str, line: Option<i64>| {
        move |tx: &rusqlite::Transaction<'_>, path: &std::path::Path| {
            tx.execute(
                "INSERT INTO cdrs (call_id, direction, caller, callee, callee_port,
                                   started_at_ms, ended_at_ms, duration_ms, billable_ms,
                                   disposition, hangup_side)
                 VALUES (?1, 'outbound', '101', '5550101', ?2, ?3, ?4, 0, 0, ?5, 'caller')",
                params![call_id, line, open_at, open_at + 30_000, disposition],
            )
            .map_err(store::sql(path, "cdr"))
        }
    };

    // Ann: linked first, then the call ends unanswered and its CDR is written.
    let first = dial(&mut store, ann);
    store
        .transact("link", move |tx, path| {
            store::link_call(tx, path, first, "call-1")?;
            store::wrap_up(
                tx,
                path,
                first,
                &WrapUpInput {
                    disposition: Some(4),
                    notes: "no one there".into(),
                },
                open_at + 1_000,
            )
            .map(|_| ())
        })
        .expect("link");
    let closed = store
        .transact("cdr", move |tx, path| {
            // Another call's CDR closes nothing.
            assert_eq!(
                store::finish_from_cdr(tx, path, "call-x", "busy", true, open_at)?,
                None
            );
            cdr_row("call-1", "no_answer", Some(5))(tx, path)?;
            store::finish_from_cdr(tx, path, "call-1", "no_answer", true, open_at + 30_000)
        })
        .expect("cdr");
    assert_eq!(
        closed,
        Some((
            first,
            Outcome::NoAnswer,
            AfterAttempt::RetryAt(open_at + 30_000 + 600_000)
        ))
    );
    let a = store
        .transact("a", move |tx, path| store::get_attempt(tx, path, first))
        .expect("attempt");
    assert_eq!(
        (a.outcome, a.disposition, a.notes.as_str()),
        (Some(Outcome::NoAnswer), Some(4), "no one there")
    );
    // Closed once: the same CDR again changes nothing.
    let again = store
        .transact("cdr", move |tx, path| {
            store::finish_from_cdr(tx, path, "call-1", "answered", true, open_at + 40_000)
        })
        .expect("again");
    assert_eq!(again, None);

    // Ben: the call ended (answered) before the API linked it.
    let second = dial(&mut store, ben);
    store
        .transact("cdr", move |tx, path| {
            cdr_row("call-2", "answered", Some(6))(tx, path).map(|_| ())
        })
        .expect("cdr");
    store
        .transact("link", move |tx, path| {
            store::link_call(tx, path, second, "call-2")
        })
        .expect("link");
    let lead = store
        .transact("l", move |tx, path| store::get_lead(tx, path, ben))
        .expect("lead");
    assert_eq!(lead.result, Some(LeadResult::Answered), "{lead:?}");
}

#[test]
fn campaigns_are_checked_and_run_attempts_through_the_rules() {
    let (_d, mut store) = open();
    let group = people(&mut store);
    let list = store
        .transact("list", |tx, path| {
            let l = store::create_list(tx, path, &LeadListInput { name: "Nov".into() }, "ada", 1)?;
            super::csv::import(
                tx,
                path,
                l.id,
                "name,numbers\nAnn,5550101\nBen,5550102;5550103\n",
                1,
            )?;
            Ok(l)
        })
        .expect("list");
    // Bad input names its fields and writes nothing.
    let mut bad = input(list.id, group);
    bad.hours_start = "25:00".into();
    bad.weekdays.push("someday".into());
    bad.max_attempts = 0;
    bad.caller_id = "x".into();
    let problems = bad.check().unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["hours_start", "weekdays", "retry.max_attempts", "caller_id"]
    );
    let dangling = input(999, 999).check().expect("fields fine");
    let e = store
        .transact("c", move |tx, path| {
            store::create_campaign(tx, path, &dangling, "ada", 1)
        })
        .unwrap_err();
    assert!(e.to_string().contains("no lead list 999"), "{e}");
    assert_eq!(count(&mut store, "campaigns"), 0);

    let v = input(list.id, group).check().expect("valid");
    let c = store
        .transact("c", move |tx, path| {
            store::create_campaign(tx, path, &v, "ada", 1)
        })
        .expect("create");
    assert_eq!(c.state, CampaignState::Draft);
    assert_eq!(c.caller_id, "+49301234");
    // A second campaign on the same list is a conflict.
    let mut other = input(list.id, group);
    other.name = "Other".into();
    let other = other.check().expect("valid");
    let e = store
        .transact("c", move |tx, path| {
            store::create_campaign(tx, path, &other, "ada", 1)
        })
        .unwrap_err();
    assert!(matches!(e, Error::CampaignConflict { .. }), "{e}");

    let open_at = MONDAY + 10 * HOUR;
    let id = c.id;
    // Not running yet: no leads for anyone.
    let e = store
        .transact("n", move |tx, path| {
            store::next_for(tx, path, id, 1001, 5, open_at)
        })
        .unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
    store
        .transact("s", move |tx, path| {
            store::set_state(tx, path, id, CampaignState::Running, open_at)
        })
        .expect("start");
    // eve is not in the group.
    let e = store
        .transact("n", move |tx, path| {
            store::next_for(tx, path, id, 1003, 5, open_at)
        })
        .unwrap_err();
    assert!(e.to_string().contains("not a member"), "{e}");
    let mine = store
        .transact("n", move |tx, path| {
            store::next_for(tx, path, id, 1001, 1, open_at)
        })
        .expect("next");
    assert_eq!(mine.len(), 1);
    let ann = mine[0].id;
    assert_eq!(mine[0].assigned_user_id, Some(1001));
    // bob may not dial ada's lead; outside the hours nobody dials.
    let e = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1002, |_| false, open_at)
        })
        .unwrap_err();
    assert!(e.to_string().contains("another agent"), "{e}");
    let e = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1001, |_| false, MONDAY + 20 * HOUR)
        })
        .unwrap_err();
    assert!(e.to_string().contains("calling hours"), "{e}");
    assert_eq!(count(&mut store, "lead_attempts"), 0);

    let started = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1001, |_| false, open_at)
        })
        .expect("dial");
    let Started::Dial { attempt_id, number } = started else {
        panic!("{started:?}")
    };
    assert_eq!(number, "5550101");
    // Not twice at once.
    let e = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1001, |_| false, open_at)
        })
        .unwrap_err();
    assert!(e.to_string().contains("being dialled"), "{e}");
    let next = store
        .transact("r", move |tx, path| {
            store::link_call(tx, path, attempt_id, "call-1")?;
            store::finish_attempt(tx, path, attempt_id, Outcome::Busy, open_at + 20_000)
        })
        .expect("result");
    assert_eq!(next, AfterAttempt::RetryAt(open_at + 20_000 + 300_000));
    // Too early for the retry.
    let e = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1001, |_| false, open_at + 60_000)
        })
        .unwrap_err();
    assert!(e.to_string().contains("not due"), "{e}");
    let later = open_at + 400_000;
    let Started::Dial { attempt_id: a2, .. } = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ann, 1001, |_| false, later)
        })
        .expect("dial again")
    else {
        panic!("not dialled")
    };
    let done = store
        .transact("r", move |tx, path| {
            store::finish_attempt(tx, path, a2, Outcome::NoAnswer, later + 30_000)
        })
        .expect("result");
    assert_eq!(done, AfterAttempt::Done(LeadResult::MaxAttempts));
    let wrapped = store
        .transact("w", move |tx, path| {
            store::wrap_up(
                tx,
                path,
                a2,
                &WrapUpInput {
                    disposition: Some(3),
                    notes: "call back in spring".into(),
                },
                later + 40_000,
            )
        })
        .expect("wrap up");
    assert_eq!(wrapped.disposition, Some(3));
    // Every result went to the outbox with its change: busy, no answer (finishing the
    // lead), then the wrap-up with the digit and notes; the refused wrap-up below and
    // the refused dials above wrote nothing.
    let results = outbox(&mut store, "campaign_result");
    let keys: Vec<&str> = results.iter().map(|(k, _)| k.as_str()).collect();
    let (a1, a2s) = (attempt_id.to_string(), a2.to_string());
    assert_eq!(keys, [a1.as_str(), a2s.as_str(), a2s.as_str()]);
    let first: branchline_sync::wire::CampaignResultRecord =
        serde_json::from_value(results[0].1.clone()).expect("wire record");
    assert_eq!(first.outcome.as_deref(), Some("busy"));
    assert_eq!(first.call_id.as_deref(), Some("call-1"));
    assert_eq!(first.number, "5550101");
    assert_eq!(first.agent.as_deref(), Some("ada"));
    assert_eq!(first.lead_result, None);
    let last: branchline_sync::wire::CampaignResultRecord =
        serde_json::from_value(results[2].1.clone()).expect("wire record");
    assert_eq!(last.outcome.as_deref(), Some("no_answer"));
    assert_eq!(last.disposition, Some(3));
    assert_eq!(last.notes, "call back in spring");
    assert_eq!(last.lead_result.as_deref(), Some("max_attempts"));
    let progress_rows = outbox(&mut store, "campaign_progress").len();
    let e = store
        .transact("w", move |tx, path| {
            store::wrap_up(
                tx,
                path,
                a2,
                &WrapUpInput {
                    disposition: Some(12),
                    notes: String::new(),
                },
                later + 50_000,
            )
        })
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");

    // Ben's numbers are all blacklisted: finished without a dial.
    let ben = store
        .transact("n", move |tx, path| {
            store::next_for(tx, path, id, 1002, 5, later)
        })
        .expect("next")[0]
        .id;
    let s = store
        .transact("d", move |tx, path| {
            store::start_attempt(tx, path, id, ben, 1002, |n| n.starts_with("555"), later)
        })
        .expect("blocked");
    assert_eq!(s, Started::Finished(LeadResult::Blacklisted));
    assert_eq!(
        outbox(&mut store, "campaign_result").len(),
        3,
        "refused wrap-up"
    );
    let progress = outbox(&mut store, "campaign_progress");
    assert_eq!(progress.len(), progress_rows + 1, "the blacklisted lead");
    let (key, last) = progress.last().expect("progress");
    assert_eq!(key, &id.to_string());
    let last: branchline_sync::wire::CampaignProgressRecord =
        serde_json::from_value(last.clone()).expect("wire record");
    assert_eq!((last.leads, last.pending, last.dialing), (2, 0, 0));
    assert_eq!(last.done.get("blacklisted"), Some(&1));
    assert_eq!(last.state, "running");

    let p = store
        .transact("p", move |tx, path| store::progress(tx, path, id))
        .expect("progress");
    assert_eq!(p.leads, 2);
    assert_eq!(p.pending + p.dialing, 0);
    assert_eq!(p.done.get("max_attempts"), Some(&1));
    assert_eq!(p.done.get("blacklisted"), Some(&1));
    assert_eq!(p.attempts.get("busy"), Some(&1));
    assert_eq!(p.attempts.get("no_answer"), Some(&1));
    let history = store
        .transact("h", move |tx, path| store::attempts(tx, path, ann))
        .expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].call_id.as_deref(), Some("call-1"));
    assert_eq!(history[1].notes, "call back in spring");

    // A running campaign cannot be edited or deleted; a paused one can be edited.
    let v = input(list.id, group).check().expect("valid");
    let e = store
        .transact("u", move |tx, path| {
            store::update_campaign(tx, path, id, &v, later)
        })
        .unwrap_err();
    assert!(e.to_string().contains("pause it"), "{e}");
    let e = store
        .transact("x", move |tx, path| store::delete_campaign(tx, path, id))
        .unwrap_err();
    assert!(e.to_string().contains("running"), "{e}");
    let e = store
        .transact("x", move |tx, path| {
            store::set_state(tx, path, id, CampaignState::Draft, later)
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot go from running to draft"),
        "{e}"
    );
    assert_eq!(
        outbox(&mut store, "campaign_progress").len(),
        progress_rows + 1,
        "refused state changes queue nothing"
    );
}

#[test]
fn supervisors_assign_leads_to_group_members_only() {
    let (_d, mut store) = open();
    let group = people(&mut store);
    let (id, leads) = store
        .transact("setup", move |tx, path| {
            let l = store::create_list(tx, path, &LeadListInput { name: "A".into() }, "ada", 1)?;
            super::csv::import(tx, path, l.id, "numbers\n1\n2\n", 1)?;
            let c = store::create_campaign(
                tx,
                path,
                &input(l.id, group).check().expect("v"),
                "ada",
                1,
            )?;
            let (rows, _) = store::leads(tx, path, l.id, None, PageRequest::default())?;
            Ok((c.id, rows.iter().map(|r| r.id).collect::<Vec<_>>()))
        })
        .expect("setup");
    let all = leads.clone();
    let e = store
        .transact("a", move |tx, path| {
            store::assign(tx, path, id, &all, Some(1003), 1)
        })
        .unwrap_err();
    assert!(e.to_string().contains("not a member"), "{e}");
    let first = leads[0];
    let e = store
        .transact("a", move |tx, path| {
            store::assign(tx, path, id, &[first, 77], Some(1002), 1)
        })
        .unwrap_err();
    assert!(e.to_string().contains("no lead 77"), "{e}");
    let n: i64 = store
        .transact("c", |tx, path| {
            tx.query_row(
                "SELECT count(*) FROM leads WHERE assigned_user_id IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(store::sql(path, "count"))
        })
        .expect("count");
    assert_eq!(n, 0, "a refused assignment changes nothing");
    let all = leads.clone();
    assert_eq!(
        store
            .transact("a", move |tx, path| store::assign(
                tx,
                path,
                id,
                &all,
                Some(1002),
                1
            ))
            .expect("assign"),
        2
    );
}
