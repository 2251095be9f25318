//! The progressive dialer's rounds ([`driver::plan_round`]) against the store on a
//! virtual clock: simulated callees (answer, busy, never answer) and agents, checking
//! after every step that no lead or agent has two attempts open, that open attempts
//! never outnumber the agents available, that blacklisted numbers are never dialled,
//! and that retries follow the rules.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;

use super::driver::{self, PlannedDial, Round};
use super::store::{self, LeadListInput};
use super::tests::{input, open, people, HOUR, MIN, MONDAY};
use super::*;
use crate::acd::AgentId;
use crate::store::Store;

fn agent(id: &str) -> AgentId {
    id.parse().expect("agent id")
}

/// ada (1001) is agent 100 and bob (1002) agent 200, both in group 50; eve (1003)
/// is agent 300 outside it. A progressive campaign (retries: busy 300 s, no answer
/// 600 s, failed 120 s; at most `max` attempts) over `leads` (name, numbers with
/// `;`), running. Returns the campaign id.
fn campaign(store: &mut Store, leads: &str, max: u32) -> i64 {
    let group = people(store);
    let csv = format!("name,numbers\n{leads}");
    let mut c = input(0, group);
    c.mode = Mode::Progressive;
    c.max_attempts = max;
    c.caller_id = String::new();
    store
        .transact("setup", move |tx, path| {
            for (user, id) in [(1001, "100"), (1002, "200"), (1003, "300")] {
                tx.execute(
                    "UPDATE users SET agent_id = ?2 WHERE id = ?1",
                    params![user, id],
                )
                .map_err(store::sql(path, "agent"))?;
            }
            let l = store::create_list(tx, path, &LeadListInput { name: "Nov".into() }, "ada", 1)?;
            csv::import(tx, path, l.id, &csv, 1)?;
            c.list_id = l.id;
            let v = c.check().map_err(|p| crate::error::Error::Invalid {
                entity: "campaign",
                key: String::new(),
                problems: p,
            })?;
            let row = store::create_campaign(tx, path, &v, "ada", 1)?;
            store::set_state(tx, path, row.id, CampaignState::Running, 1)?;
            Ok(row.id)
        })
        .expect("campaign")
}

fn round(store: &mut Store, now: i64, available: &[&str], blocked: &[&str]) -> Round {
    let available: Vec<AgentId> = available.iter().map(|a| agent(a)).collect();
    let blocked: BTreeSet<String> = blocked.iter().map(|s| s.to_string()).collect();
    store
        .transact("round", move |tx, path| {
            driver::plan_round(tx, path, now, &available, |n| blocked.contains(n))
        })
        .expect("round")
}

fn finish(store: &mut Store, attempt: i64, outcome: Outcome, now: i64) -> AfterAttempt {
    store
        .transact("finish", move |tx, path| {
            store::finish_attempt(tx, path, attempt, outcome, now)
        })
        .expect("finish")
}

fn leads(store: &mut Store) -> Vec<store::LeadRow> {
    store
        .transact("leads", |tx, path| {
            let list: i64 = tx
                .query_row("SELECT id FROM lead_lists", [], |r| r.get(0))
                .map_err(store::sql(path, "list"))?;
            Ok(store::leads(
                tx,
                path,
                list,
                None,
                crate::accounts::PageRequest::default(),
            )?
            .0)
        })
        .expect("leads")
}

/// (lead, agent user id, number, started, ended, outcome) of every attempt.
type AttemptFacts = (i64, Option<i64>, String, i64, Option<i64>, Option<Outcome>);

fn attempts(store: &mut Store) -> Vec<AttemptFacts> {
    store
        .transact("attempts", |tx, path| {
            let ids: Vec<i64> = {
                let mut s = tx
                    .prepare("SELECT DISTINCT lead_id FROM lead_attempts ORDER BY lead_id")
                    .map_err(store::sql(path, "ids"))?;
                let rows = s
                    .query_map([], |r| r.get(0))
                    .and_then(Iterator::collect)
                    .map_err(store::sql(path, "ids"))?;
                rows
            };
            let mut out = Vec::new();
            for id in ids {
                for a in store::attempts(tx, path, id)? {
                    out.push((
                        a.lead_id,
                        a.agent_user_id,
                        a.number,
                        a.started_at_ms,
                        a.ended_at_ms,
                        a.outcome,
                    ));
                }
            }
            Ok(out)
        })
        .expect("attempts")
}

#[test]
fn a_round_dials_one_lead_per_free_group_agent_and_finishes_blacklisted_leads_undialled() {
    let (_d, mut store) = open();
    campaign(
        &mut store,
        "Cid,5550666\nAnn,5550101\nBen,5550102\nDan,5550104\n",
        2,
    );
    let at = MONDAY + 10 * HOUR;
    // eve (300) is not in the group; agent 400 is no user.
    let r = round(&mut store, at, &["100", "200", "300", "400"], &["5550666"]);
    let dialled: Vec<(i64, &str, &str)> = r
        .dials
        .iter()
        .map(|d| (d.user_id, d.agent.as_str(), d.number.as_str()))
        .collect();
    assert_eq!(
        dialled,
        vec![(1001, "100", "5550101"), (1002, "200", "5550102")]
    );
    assert_eq!(r.dials[0].ring_timeout, std::time::Duration::from_secs(30));
    let rows = leads(&mut store);
    let cid = rows.iter().find(|l| l.name == "Cid").expect("Cid");
    assert_eq!(
        (cid.state.as_str(), cid.result),
        ("done", Some(LeadResult::Blacklisted))
    );
    assert_eq!(r.finished, vec![cid.id]);
    // The same agents again (the main loop has not reserved them yet): nothing more,
    // each has an attempt open.
    let again = round(&mut store, at, &["100", "200"], &["5550666"]);
    assert!(again.dials.is_empty(), "{again:?}");
    // Dan is due now: the next round is now.
    assert_eq!(again.next_at_ms, Some(at));
    // Outside the calling hours nothing is dialled; the next round is at 09:00.
    let (_d2, mut closed) = open();
    campaign(&mut closed, "Ann,5550101\n", 1);
    let evening = MONDAY + 20 * HOUR;
    let r = round(&mut closed, evening, &["100"], &[]);
    assert!(r.dials.is_empty());
    assert_eq!(r.next_at_ms, Some(MONDAY + 24 * HOUR + 9 * HOUR));
}

#[test]
fn paused_and_preview_campaigns_are_not_dialled() {
    let (_d, mut store) = open();
    let id = campaign(&mut store, "Ann,5550101\n", 1);
    let at = MONDAY + 10 * HOUR;
    store
        .transact("pause", move |tx, path| {
            store::set_state(tx, path, id, CampaignState::Paused, at)
        })
        .expect("pause");
    assert_eq!(round(&mut store, at, &["100"], &[]), Round::default());
    store
        .transact("preview", move |tx, path| {
            store::set_state(tx, path, id, CampaignState::Running, at)?;
            tx.execute("UPDATE campaigns SET mode = 'preview'", [])
                .map_err(store::sql(path, "mode"))?;
            Ok(())
        })
        .expect("preview");
    assert_eq!(round(&mut store, at, &["100"], &[]), Round::default());
}

#[test]
fn attempts_left_open_by_a_crash_are_closed_as_failed_and_retried_by_the_rules() {
    let (_d, mut store) = open();
    campaign(&mut store, "Ann,5550101\nBen,5550102\n", 2);
    let at = MONDAY + 10 * HOUR;
    let r = round(&mut store, at, &["100", "200"], &[]);
    assert_eq!(r.dials.len(), 2);
    // ada's call ended before the crash; bob's was still up.
    finish(
        &mut store,
        r.dials[0].attempt_id,
        Outcome::Answered,
        at + MIN,
    );
    let restart = at + 2 * MIN;
    let closed = store
        .transact("close", move |tx, path| {
            store::close_open_attempts(tx, path, restart)
        })
        .expect("close");
    assert_eq!(closed, 1);
    let rows = leads(&mut store);
    let ben = rows.iter().find(|l| l.name == "Ben").expect("Ben");
    assert_eq!(
        (ben.state.as_str(), ben.attempts, ben.next_at_ms),
        ("pending", 1, restart + 120_000)
    );
    // Not dialled again before the failed-call spacing; then once.
    assert!(round(&mut store, restart, &["100", "200"], &[])
        .dials
        .is_empty());
    let r = round(&mut store, restart + 120_000, &["100", "200"], &[]);
    assert_eq!(r.dials.len(), 1);
    assert_eq!(r.dials[0].lead_id, ben.id);
    // Nothing is open any more after a second close: a no-op.
    finish(
        &mut store,
        r.dials[0].attempt_id,
        Outcome::Busy,
        restart + 200_000,
    );
    let closed = store
        .transact("close", move |tx, path| {
            store::close_open_attempts(tx, path, restart + 300_000)
        })
        .expect("close");
    assert_eq!(closed, 0);
}

/// How a simulated callee behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callee {
    Answers,
    Busy,
    Silent,
}

#[test]
fn a_campaign_runs_to_the_end_on_a_virtual_clock_within_every_rule() {
    let (_d, mut store) = open();
    // Numbers: 01 answers, 02 busy, 03 never answers, 04 busy then (second
    // number) answers, 66 and 67 blacklisted: Eve's first number, Fay's only one.
    campaign(
        &mut store,
        "Ann,5550101\nBob,5550102\nCal,5550103\nDee,5550104;5550105\nEve,5550666;5550106\nFay,5550667\n",
        3,
    );
    let callee = |n: &str| match n {
        "5550102" | "5550104" => Callee::Busy,
        "5550103" => Callee::Silent,
        _ => Callee::Answers,
    };
    let blocked = ["5550666", "5550667"];
    let agents = ["100", "200"];
    let mut now = MONDAY + 9 * HOUR;
    // In flight: attempt -> (dial, ends at, outcome).
    let mut in_flight: BTreeMap<i64, (PlannedDial, i64, Outcome)> = BTreeMap::new();
    for _step in 0..200 {
        // Calls that ended by now report their outcome.
        let ended: Vec<i64> = in_flight
            .iter()
            .filter(|(_, (_, end, _))| *end <= now)
            .map(|(&a, _)| a)
            .collect();
        for a in ended {
            let (_, end, outcome) = in_flight.remove(&a).expect("in flight");
            finish(&mut store, a, outcome, end);
        }
        // The ACD's available agents: those without a call.
        let busy: BTreeSet<&str> = in_flight
            .values()
            .map(|(d, _, _)| d.agent.as_str())
            .collect();
        let free: Vec<&str> = agents
            .iter()
            .copied()
            .filter(|a| !busy.contains(a))
            .collect();
        let r = round(&mut store, now, &free, &blocked);
        for d in &r.dials {
            assert!(!blocked.contains(&d.number.as_str()), "dialled {d:?}");
            assert!(
                free.contains(&d.agent.as_str()),
                "{d:?} without a free agent"
            );
            let (len, outcome) = match callee(&d.number) {
                Callee::Answers => (90_000, Outcome::Answered),
                Callee::Busy => (2_000, Outcome::Busy),
                Callee::Silent => (30_000, Outcome::NoAnswer),
            };
            in_flight.insert(d.attempt_id, (d.clone(), now + len, outcome));
        }
        // Never two at once for a lead or an agent, never more than the agents.
        let leads_in_flight: BTreeSet<i64> =
            in_flight.values().map(|(d, _, _)| d.lead_id).collect();
        let agents_in_flight: BTreeSet<i64> =
            in_flight.values().map(|(d, _, _)| d.user_id).collect();
        assert_eq!(leads_in_flight.len(), in_flight.len());
        assert_eq!(agents_in_flight.len(), in_flight.len());
        assert!(in_flight.len() <= agents.len());
        // The next thing to happen: a call ending, or the dialer's next due lead.
        let next_end = in_flight.values().map(|(_, end, _)| *end).min();
        let next_due = r
            .next_at_ms
            .filter(|&t| t > now && free.len() > r.dials.len());
        match next_end.into_iter().chain(next_due).min() {
            Some(t) => now = t.max(now),
            None => break,
        }
    }
    assert!(in_flight.is_empty(), "the campaign ran to its end");
    let rows = leads(&mut store);
    let result = |name: &str| {
        let l = rows.iter().find(|l| l.name == name).expect(name);
        (l.state.clone(), l.result, l.attempts)
    };
    assert_eq!(
        result("Ann"),
        ("done".into(), Some(LeadResult::Answered), 1)
    );
    assert_eq!(
        result("Bob"),
        ("done".into(), Some(LeadResult::MaxAttempts), 3)
    );
    assert_eq!(
        result("Cal"),
        ("done".into(), Some(LeadResult::MaxAttempts), 3)
    );
    assert_eq!(
        result("Dee"),
        ("done".into(), Some(LeadResult::Answered), 2)
    );
    assert_eq!(
        result("Eve"),
        ("done".into(), Some(LeadResult::Answered), 1)
    );
    assert_eq!(
        result("Fay"),
        ("done".into(), Some(LeadResult::Blacklisted), 0)
    );
    let all = attempts(&mut store);
    assert!(
        all.iter().all(|a| !blocked.contains(&a.2.as_str())),
        "blacklisted never dialled"
    );
    assert!(all.iter().all(|a| a.5.is_some()), "every attempt closed");
    // Retries keep their spacing after the outcome: busy 300 s, no answer 600 s.
    for name in ["Bob", "Cal", "Dee"] {
        let id = rows.iter().find(|l| l.name == name).expect(name).id;
        let mine: Vec<&AttemptFacts> = all.iter().filter(|a| a.0 == id).collect();
        for pair in mine.windows(2) {
            let spacing = match pair[0].5 {
                Some(Outcome::Busy) => 300_000,
                Some(Outcome::NoAnswer) => 600_000,
                other => panic!("{name}: retried after {other:?}"),
            };
            let ended = pair[0].4.expect("ended");
            assert!(pair[1].3 >= ended + spacing, "{name}: {pair:?}");
        }
    }
    // Dee's second attempt took her second number.
    let dee = rows.iter().find(|l| l.name == "Dee").expect("Dee").id;
    let numbers: Vec<&str> = all
        .iter()
        .filter(|a| a.0 == dee)
        .map(|a| a.2.as_str())
        .collect();
    assert_eq!(numbers, ["5550104", "5550105"]);
}
