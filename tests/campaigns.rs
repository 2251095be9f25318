//! A preview campaign on the real `branchd` and the simulated board: an agent of the
//! campaign's group takes her next leads (they pop on her `/api/v1/events` stream,
//! numbers masked), presses dial on one: her phone rings, and when she lifts it an
//! outside line is seized and the lead's number dialled (with the outside-line
//! prefix, through the normal routing); the attempt's outcome is read from the call
//! (an outcome she sends is refused) and her disposition and notes are kept. A lead
//! whose number is on the blacklist is finished without a call, and no line is seized
//! for it.
//!
//! A progressive campaign on the same box with a SIP trunk (SIPp as the carrier's
//! registrar, then as the leads: two answer, one is busy, one never answers) and two
//! agents logged in on analog phones: the box dials only for free agents, never a
//! lead twice at once nor a blacklisted number, connects each answered lead to the
//! reserved agent's phone, and records every attempt's outcome from the call.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api_client::{create_admin, Api};
use crate::call_center::{add_agent, login};
use crate::harness::{wait, Gateway, DIAL_PLAN, SOON};
use crate::screen_pop::Events;
use crate::sip_calls::{free_port, uas, uas_calls, wait_child, wait_sipp};

const ADMIN_PASSWORD: &str = "campaign-Admin-pass-2024";
const AGENT_PASSWORD: &str = "agent-Pass-2024-long";

/// An admin, and agent alice (100, phone 102) alone in group "sales" (its id).
fn admin_and_sales_group(gw: &Gateway) -> (Api, i64) {
    let admin = create_admin(gw, "admin1", ADMIN_PASSWORD);
    let (status, body) = admin.post(
        "/api/v1/users",
        json!({ "username": "alice", "display_name": "alice", "password": AGENT_PASSWORD,
                "enabled": true, "roles": ["agent"], "agent_id": "100", "pin": "4821",
                "extension": "102" }),
    );
    assert_eq!(status, 201, "{body}");
    let alice_id = body["id"].as_i64().expect("id");
    let (status, body) = admin.post(
        "/api/v1/groups",
        json!({ "name": "sales", "description": "",
                "members": [{ "user_id": alice_id, "is_group_admin": false }] }),
    );
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_i64().expect("group");
    (admin, group)
}

#[test]
fn a_preview_campaign_dials_a_lead_from_the_agents_phone_and_never_a_blacklisted_one() {
    let gw = Gateway::start();
    let addr = gw.latest_web_addr();
    let (admin, group) = admin_and_sales_group(&gw);
    let (status, body) = admin.post("/api/v1/lead-lists", json!({ "name": "November" }));
    assert_eq!(status, 201, "{body}");
    let list = body["id"].as_i64().expect("list");
    let (status, body) = admin.post_csv(
        &format!("/api/v1/lead-lists/{list}/import"),
        "name,numbers\nAnn,5550100\nBen,5550199\n",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.post(
        "/api/v1/blacklist",
        json!({ "pattern": "5550199", "reason": "do not call" }),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin.post(
        "/api/v1/campaigns",
        json!({ "name": "Winter", "list_id": list, "group_id": group, "mode": "preview",
                "hours_start": "00:00", "hours_end": "24:00",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "max_attempts": 3, "busy_retry_s": 60,
                "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 30 }),
    );
    assert_eq!(status, 201, "{body}");
    let campaign = body["id"].as_i64().expect("campaign");
    let (status, body) = admin.post(&format!("/api/v1/campaigns/{campaign}/start"), json!({}));
    assert_eq!(status, 200, "{body}");

    // Alice takes her next leads: they pop on her desktop, numbers masked.
    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let pops = Events::open(addr, alice.cookie(), "/api/v1/events");
    let (status, body) = alice.post(&format!("/api/v1/campaigns/{campaign}/next"), json!({}));
    assert_eq!(status, 200, "{body}");
    let pop = pops.next("leads");
    assert_eq!(pop["campaign"], campaign, "{pop}");
    let names: Vec<&str> = pop["leads"]
        .as_array()
        .expect("leads")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Ann", "Ben"], "{pop}");
    assert_eq!(pop["leads"][0]["masked"], true, "{pop}");
    let ann = pop["leads"][0]["id"].as_i64().expect("ann");
    let ben = pop["leads"][1]["id"].as_i64().expect("ben");

    // Ben's number is on the blacklist: finished, no call, no line seized.
    let (status, body) = alice.post(
        &format!("/api/v1/campaigns/{campaign}/leads/{ben}/dial"),
        json!({}),
    );
    assert_eq!(status, 409, "{body}");
    let phone = gw.sim.phone(2);
    assert!(!phone.is_ringing());

    // Ann: Alice's phone rings; she lifts it and the line dials Ann's number.
    let (status, body) = alice.post(
        &format!("/api/v1/campaigns/{campaign}/leads/{ann}/dial"),
        json!({}),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["from"], "102", "{body}");
    let attempt = body["attempt"].as_i64().expect("attempt");
    assert!(wait(SOON, || phone.is_ringing()), "alice's phone rings");
    phone.off_hook();
    let (l5, l6) = (gw.sim.line(5), gw.sim.line(6));
    assert!(
        wait(SOON, || l5.dialed() == "5550100"
            || l6.dialed() == "5550100"),
        "the lead's number is dialled on an outside line ({:?}, {:?})",
        l5.dialed(),
        l6.dialed()
    );
    assert!(!l5.dialed().contains("5550199") && !l6.dialed().contains("5550199"));
    let line = if l5.dialed() == "5550100" { l5 } else { l6 };
    line.answer();
    // The agent's word on how it went is refused: the outcome is the call's. Her
    // disposition and notes, given while the call goes on, are kept.
    let put = format!("/api/v1/campaign-attempts/{attempt}");
    let (status, body) = alice.put(&put, json!({ "outcome": "busy" }));
    assert_eq!(status, 409, "{body}");
    let (status, body) = alice.put(&put, json!({ "disposition": 1, "notes": "wants a quote" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], Value::Null, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    phone.on_hook();
    // The call's CDR closes the attempt: answered.
    let outcome = || -> Option<String> {
        gw.db()
            .query_row(
                "SELECT outcome FROM lead_attempts WHERE id = ?1",
                [attempt],
                |r| r.get(0),
            )
            .ok()
            .flatten()
    };
    assert!(
        wait(SOON, || outcome().is_some()),
        "the attempt is closed from its call"
    );
    assert_eq!(outcome().as_deref(), Some("answered"));
    let (status, body) = admin.get(&format!("/api/v1/campaigns/{campaign}/progress"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["progress"]["done"],
        json!({ "answered": 1, "blacklisted": 1 }),
        "{body}"
    );
    let (_, lead) = admin.get(&format!("/api/v1/leads/{ann}"));
    let history = &lead["attempt_history"][0];
    assert_eq!(history["number"], "5550100", "{lead}");
    assert!(
        history["call_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{lead}"
    );
    assert_eq!(history["notes"], "wants a quote");
    assert_eq!(history["disposition"], 1, "{lead}");
    assert_eq!(history["outcome"], "answered", "{lead}");
}

/// A box with the analog dial plan and a SIP trunk registered with SIPp at
/// 127.0.0.1:`trunk_port` (the registrar scenario is done when this returns).
fn registered_trunk_gateway(trunk_port: u16) -> Gateway {
    let mut registrar = uas("uas_register_ok.xml", trunk_port)
        .spawn()
        .expect("sipp registrar starts");
    std::thread::sleep(Duration::from_millis(300));
    let plan = format!(
        r#"{DIAL_PLAN}
[media]
local_ip = "127.0.0.1"

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"

[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
expires = 3600
keepalive_s = 0
"#
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("trunk registered", SOON),
        "no registration:\n{}",
        gw.log_text()
    );
    assert!(wait_child(&mut registrar), "the registrar scenario failed");
    gw
}

/// (lead name, agent user id, number, call id, started, ended, outcome) of every
/// attempt, from the store.
type Attempt = (
    String,
    Option<i64>,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
);

fn attempts(gw: &Gateway) -> Vec<Attempt> {
    let db = gw.db();
    let mut stmt = db
        .prepare(
            "SELECT l.name, a.agent_user_id, a.number, a.call_id, a.started_at_ms, \
             a.ended_at_ms, a.outcome FROM lead_attempts a JOIN leads l ON l.id = a.lead_id \
             ORDER BY a.id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

#[test]
fn a_progressive_campaign_dials_for_free_agents_only_and_connects_answered_leads() {
    let trunk_port = free_port();
    let gw = registered_trunk_gateway(trunk_port);
    let addr = gw.latest_web_addr();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    add_agent(&admin, "bob", "200", "4822");
    assert!(
        wait(SOON, || gw
            .log_text()
            .lines()
            .map(crate::harness::strip_ansi)
            .any(
                |l| l.contains("call center reconfigured") && l.contains("agents=2")
            )),
        "{}",
        gw.log_text()
    );
    let user = |name: &str| -> i64 {
        gw.db()
            .query_row("SELECT id FROM users WHERE username = ?1", [name], |r| {
                r.get(0)
            })
            .expect("user")
    };
    let (alice_id, bob_id) = (user("alice"), user("bob"));
    let (status, body) = admin.post(
        "/api/v1/groups",
        json!({ "name": "dialers", "description": "",
                "members": [{ "user_id": alice_id, "is_group_admin": false },
                            { "user_id": bob_id, "is_group_admin": false }] }),
    );
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_i64().expect("group");
    let (status, body) = admin.post("/api/v1/lead-lists", json!({ "name": "Spring" }));
    assert_eq!(status, 201, "{body}");
    let list = body["id"].as_i64().expect("list");
    let (status, body) = admin.post_csv(
        &format!("/api/v1/lead-lists/{list}/import"),
        "name,numbers\nAnn,5550101\nEve,5550666\nBen,5550102\nCal,5550103\nDee,5550104\n",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.post(
        "/api/v1/blacklist",
        json!({ "pattern": "5550666", "reason": "do not call" }),
    );
    assert_eq!(status, 201, "{body}");
    // Alice and Bob log in on 102 (FXS 2) and 103 (FXS 3); Alice's desktop listens.
    let (phone_a, phone_b) = (gw.sim.phone(2), gw.sim.phone(3));
    assert!(login(&gw, &phone_a, "100", "4821"), "{}", gw.log_text());
    assert!(login(&gw, &phone_b, "200", "4822"), "{}", gw.log_text());
    let alice = Api::login(addr, "alice", "agent-Pass-2024-long").0;
    let pops = Events::open(addr, alice.cookie(), "/api/v1/events");

    // The leads behind the trunk: four calls (Eve is never dialled).
    let far_end = uas_calls("uas_campaign_leads.xml", trunk_port, 4)
        .spawn()
        .expect("sipp leads start");
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = admin.post(
        "/api/v1/campaigns",
        json!({ "name": "Spring", "list_id": list, "group_id": group, "mode": "progressive",
                "hours_start": "00:00", "hours_end": "24:00",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "max_attempts": 1, "busy_retry_s": 60,
                "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 5,
                "caller_id": "4930555000" }),
    );
    assert_eq!(status, 201, "{body}");
    let campaign = body["id"].as_i64().expect("campaign");
    let (status, body) = admin.post(&format!("/api/v1/campaigns/{campaign}/start"), json!({}));
    assert_eq!(status, 200, "{body}");

    // The agents take every call that rings their phone, talk 1.5 s and hang up;
    // meanwhile no more attempts are open than agents, none twice for one agent.
    let mut answered_at: [Option<Instant>; 2] = [None, None];
    let mut rang = [0usize; 2];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, phone) in [&phone_a, &phone_b].into_iter().enumerate() {
            match answered_at[i] {
                None if phone.is_ringing() => {
                    phone.off_hook();
                    rang[i] += 1;
                    answered_at[i] = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_millis(1500) => {
                    phone.on_hook();
                    answered_at[i] = None;
                }
                _ => {}
            }
        }
        let open: Vec<Option<i64>> = gw
            .db()
            .prepare("SELECT agent_user_id FROM lead_attempts WHERE outcome IS NULL")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        assert!(open.len() <= 2, "more attempts than agents: {open:?}");
        let distinct: std::collections::BTreeSet<_> = open.iter().collect();
        assert_eq!(distinct.len(), open.len(), "an agent with two attempts");
        let (_, progress) = admin.get(&format!("/api/v1/campaigns/{campaign}/progress"));
        let p = &progress["progress"];
        if p["pending"] == 0 && p["dialing"] == 0 && answered_at == [None, None] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not finish: {progress}\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_sipp(far_end, "campaign leads", &gw);
    assert_eq!(
        rang.iter().sum::<usize>(),
        2,
        "one agent call per answered lead"
    );

    // Results: every lead finished, every attempt closed with the call's outcome.
    let (status, body) = admin.get(&format!("/api/v1/campaigns/{campaign}/progress"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["progress"]["done"],
        json!({ "answered": 2, "blacklisted": 1, "max_attempts": 2 }),
        "{body}"
    );
    let all = attempts(&gw);
    let outcome = |name: &str| -> Vec<Option<String>> {
        all.iter()
            .filter(|a| a.0 == name)
            .map(|a| a.6.clone())
            .collect()
    };
    assert_eq!(outcome("Ann"), [Some("answered".to_owned())], "{all:?}");
    assert_eq!(outcome("Ben"), [Some("answered".to_owned())], "{all:?}");
    assert_eq!(outcome("Cal"), [Some("busy".to_owned())], "{all:?}");
    assert_eq!(outcome("Dee"), [Some("no_answer".to_owned())], "{all:?}");
    assert!(
        outcome("Eve").is_empty(),
        "a blacklisted lead is never dialled"
    );
    assert!(all.iter().all(|a| a.2 != "5550666"));
    // Never more calls than agents, never two at once for one agent.
    for a in &all {
        let ended = a.5.expect("closed");
        let overlapping: Vec<&Attempt> = all
            .iter()
            .filter(|b| b.4 < ended && b.5.expect("closed") > a.4)
            .collect();
        assert!(overlapping.len() <= 2, "{overlapping:?}");
        assert_eq!(
            overlapping.iter().filter(|b| b.1 == a.1).count(),
            1,
            "an agent on two attempts at once: {overlapping:?}"
        );
        assert!(a.1 == Some(alice_id) || a.1 == Some(bob_id), "{a:?}");
    }
    // The CDRs read like the calls: answered leads connected to an agent's phone,
    // the busy and silent ones to the lead's number; none to the blacklisted one.
    let cdrs = gw.cdrs();
    let cdr_of = |name: &str| {
        let call = all
            .iter()
            .find(|a| a.0 == name)
            .and_then(|a| a.3.clone())
            .unwrap_or_else(|| panic!("{name}'s attempt has no call: {all:?}"));
        cdrs.iter()
            .find(|c| c.call_id == call)
            .unwrap_or_else(|| panic!("no CDR for {call}: {cdrs:?}"))
            .clone()
    };
    for (name, number) in [("Ann", "5550101"), ("Ben", "5550102")] {
        let c = cdr_of(name);
        assert_eq!(c.disposition, "answered", "{c:?}");
        assert_eq!(c.caller, number, "{c:?}");
        assert!(c.callee == "102" || c.callee == "103", "{c:?}");
    }
    let c = cdr_of("Cal");
    assert_eq!(
        (c.disposition.as_str(), c.callee.as_str()),
        ("busy", "5550103")
    );
    let c = cdr_of("Dee");
    assert_eq!(
        (c.disposition.as_str(), c.callee.as_str()),
        ("no_answer", "5550104")
    );
    assert!(cdrs
        .iter()
        .all(|c| c.callee != "5550666" && c.caller != "5550666"));
    // The agent who took Ann adds a disposition and notes; the outcome is the call's.
    let (attempt, agent_user): (i64, i64) = gw
        .db()
        .query_row(
            "SELECT a.id, a.agent_user_id FROM lead_attempts a JOIN leads l ON l.id = a.lead_id \
             WHERE l.name = 'Ann'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("Ann's attempt");
    let name = if agent_user == alice_id {
        "alice"
    } else {
        "bob"
    };
    let agent = Api::login(addr, name, "agent-Pass-2024-long").0;
    let uri = format!("/api/v1/campaign-attempts/{attempt}");
    let (status, body) = agent.put(&uri, json!({ "outcome": "busy", "disposition": 2 }));
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("read from its call"), "{body}");
    let (status, body) = agent.put(&uri, json!({ "disposition": 2, "notes": "call in May" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "answered", "{body}");
    assert_eq!(body["disposition"], 2, "{body}");
    // Alice's desktop got a lead she was dialled for.
    let pop = pops.next("leads");
    assert_eq!(pop["campaign"], campaign, "{pop}");
    let name = pop["leads"][0]["name"].as_str().expect("name");
    assert!(["Ann", "Ben", "Cal", "Dee"].contains(&name), "{pop}");
    // The agents were on the campaign calls for the ACD and are available again.
    for agent in ["100", "200"] {
        let states = crate::call_center::agent_states(&gw, agent);
        assert!(
            states.contains(&"on_call".to_owned()),
            "{agent}: {states:?}"
        );
        assert_eq!(
            states.last().map(String::as_str),
            Some("available"),
            "{agent}: {states:?}"
        );
    }
}

/// A running progressive campaign (one attempt per lead) over the leads of `csv`, for
/// agent alice (100) logged in on phone 2, on a box without a trunk.
fn pstn_campaign(gw: &Gateway, csv: &str) -> (Api, i64, branchline_board::sim::Phone) {
    let admin = create_admin(gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    assert!(
        wait(SOON, || gw
            .log_text()
            .lines()
            .map(crate::harness::strip_ansi)
            .any(
                |l| l.contains("call center reconfigured") && l.contains("agents=1")
            )),
        "{}",
        gw.log_text()
    );
    let alice_id: i64 = gw
        .db()
        .query_row("SELECT id FROM users WHERE username = 'alice'", [], |r| {
            r.get(0)
        })
        .expect("alice");
    let (status, body) = admin.post(
        "/api/v1/groups",
        json!({ "name": "dialers", "description": "",
                "members": [{ "user_id": alice_id, "is_group_admin": false }] }),
    );
    assert_eq!(status, 201, "{body}");
    let group = body["id"].as_i64().expect("group");
    let (_, body) = admin.post("/api/v1/lead-lists", json!({ "name": "Spring" }));
    let list = body["id"].as_i64().expect("list");
    let (status, body) = admin.post_csv(&format!("/api/v1/lead-lists/{list}/import"), csv);
    assert_eq!(status, 200, "{body}");
    let phone = gw.sim.phone(2);
    assert!(login(gw, &phone, "100", "4821"), "{}", gw.log_text());
    let (status, body) = admin.post(
        "/api/v1/campaigns",
        json!({ "name": "Spring", "list_id": list, "group_id": group, "mode": "progressive",
                "hours_start": "00:00", "hours_end": "24:00",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "max_attempts": 1, "busy_retry_s": 60,
                "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 30 }),
    );
    assert_eq!(status, 201, "{body}");
    let campaign = body["id"].as_i64().expect("campaign");
    let (status, body) = admin.post(&format!("/api/v1/campaigns/{campaign}/start"), json!({}));
    assert_eq!(status, 200, "{body}");
    (admin, campaign, phone)
}

/// The simulated PSTN line lead `number` was dialled on.
fn line_dialled(gw: &Gateway, number: &str) -> branchline_board::sim::PstnLine {
    let (l5, l6) = (gw.sim.line(5), gw.sim.line(6));
    assert!(
        wait(SOON, || l5.dialed() == number || l6.dialed() == number),
        "the lead is dialled on a line ({:?}, {:?})\n{}",
        l5.dialed(),
        l6.dialed(),
        gw.log_text()
    );
    if l5.dialed() == number {
        l5
    } else {
        l6
    }
}

#[test]
fn without_a_trunk_a_progressive_lead_is_dialled_on_a_pstn_line_and_connected_when_it_answers() {
    let gw = Gateway::start();
    let (admin, campaign, phone) = pstn_campaign(&gw, "name,numbers\nAnn,5550101\n");
    // The lead's number is dialled on an outside line; the agent's phone stays quiet
    // until the far end answers.
    let line = line_dialled(&gw, "5550101");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!phone.is_ringing(), "no agent call before the lead answers");
    assert!(line.answer());
    assert!(wait(SOON, || phone.is_ringing()), "{}", gw.log_text());
    phone.off_hook();
    assert!(
        gw.wait_log("campaign: attempt recorded", SOON),
        "{}",
        gw.log_text()
    );
    phone.on_hook();
    assert!(wait(SOON, || !line.is_seized()), "the line is released");
    let cdrs = gw.wait_cdrs(1);
    let (outcome, call_id): (String, String) = gw
        .db()
        .query_row("SELECT outcome, call_id FROM lead_attempts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the attempt");
    assert_eq!(outcome, "answered");
    let cdr = cdrs
        .iter()
        .find(|c| c.call_id == call_id)
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {cdrs:?}"));
    assert_eq!(
        (
            cdr.disposition.as_str(),
            cdr.caller.as_str(),
            cdr.callee.as_str()
        ),
        ("answered", "5550101", "102"),
        "{cdr:?}"
    );
    let (_, body) = admin.get(&format!("/api/v1/campaigns/{campaign}/progress"));
    assert_eq!(body["progress"]["done"], json!({ "answered": 1 }), "{body}");
}

/// A PSTN lead whose line answers with busy tone (no polarity reversal: the exchange
/// says "busy" only with tones) ends `busy` at once, the line released, the agent's
/// phone never rung; with one attempt per lead it is done as `max_attempts`.
#[test]
fn a_busy_tone_on_the_pstn_line_ends_the_attempt_busy_without_waiting_for_the_ring_timeout() {
    let gw = Gateway::start();
    let (admin, campaign, phone) = pstn_campaign(&gw, "name,numbers\nBea,5550177\n");
    let line = line_dialled(&gw, "5550177");
    // The exchange's busy tone (US: 480 + 620 Hz, 0.5 s on, 0.5 s off).
    let busy = line_proto::ToneSpec {
        freq1_hz: 480,
        freq2_hz: 620,
        level_dbm0: -24,
        cadence: line_proto::Cadence::from_pairs(&[(500, 500)]).expect("cadence"),
    };
    let started = Instant::now();
    line.play_tone(busy);
    assert!(
        wait(SOON, || !line.is_seized()),
        "the line is released on busy tone\n{}",
        gw.log_text()
    );
    // Well within the campaign's 30 s ring timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!phone.is_ringing());
    let cdrs = gw.wait_cdrs(1);
    let (outcome, call_id): (String, String) = gw
        .db()
        .query_row("SELECT outcome, call_id FROM lead_attempts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the attempt");
    assert_eq!(outcome, "busy");
    let cdr = cdrs
        .iter()
        .find(|c| c.call_id == call_id)
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {cdrs:?}"));
    assert_eq!(cdr.disposition.as_str(), "busy", "{cdr:?}");
    let (_, body) = admin.get(&format!("/api/v1/campaigns/{campaign}/progress"));
    assert_eq!(
        body["progress"]["done"],
        json!({ "max_attempts": 1 }),
        "{body}"
    );
}

/// `[telephony] time_zone` puts the calling hours on the branch's clocks: at UTC+05:30
/// (a POSIX rule, so the test needs no zone file), a window open now on UTC clocks is
/// closed for the box and one open now on the site's clocks lets the agent dial; every
/// campaign shows the zone, and the refusal names it.
#[test]
fn calling_hours_are_judged_on_the_site_time_zone_from_the_config() {
    const ZONE: &str = "<+0530>-5:30";
    let plan = DIAL_PLAN.replace(
        "[telephony]\n",
        &format!("[telephony]\ntime_zone = {ZONE:?}\n"),
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("site time zone adopted", SOON),
        "{}",
        gw.log_text()
    );
    let addr = gw.latest_web_addr();
    let (admin, group) = admin_and_sales_group(&gw);

    // A window of two whole hours around now, on UTC clocks and on the site's (a
    // window may not cross midnight: past 23:57 on either clock, wait for the new day).
    let minutes = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 60
    };
    while minutes() % 1440 >= 1437 || (minutes() + 330) % 1440 >= 1437 {
        std::thread::sleep(Duration::from_secs(10));
    }
    let now_min = minutes();
    let window = |minute_of_day: u64| {
        let start = minute_of_day / 60 * 60;
        let end = (start + 120).min(1440);
        (
            format!("{:02}:{:02}", start / 60, start % 60),
            format!("{:02}:{:02}", end / 60, end % 60),
        )
    };
    let utc_window = window(now_min % 1440);
    let site_window = window((now_min + 330) % 1440);
    let campaign = |name: &str, (start, end): &(String, String)| {
        let (status, body) = admin.post("/api/v1/lead-lists", json!({ "name": name }));
        assert_eq!(status, 201, "{body}");
        let list = body["id"].as_i64().expect("list");
        let (status, body) = admin.post_csv(
            &format!("/api/v1/lead-lists/{list}/import"),
            "name,numbers\nAnn,5550100\n",
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = admin.post(
            "/api/v1/campaigns",
            json!({ "name": name, "list_id": list, "group_id": group, "mode": "preview",
                    "hours_start": start, "hours_end": end,
                    "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "max_attempts": 3, "busy_retry_s": 60,
                    "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 30 }),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["time_zone"], ZONE, "{body}");
        let id = body["id"].as_i64().expect("campaign");
        let (status, body) = admin.post(&format!("/api/v1/campaigns/{id}/start"), json!({}));
        assert_eq!(status, 200, "{body}");
        let lead: i64 = rusqlite::Connection::open(gw.db_path())
            .expect("db")
            .query_row("SELECT id FROM leads WHERE list_id = ?1", [list], |r| {
                r.get(0)
            })
            .expect("lead");
        (id, lead)
    };
    let (utc_campaign, utc_lead) = campaign("UTC hours", &utc_window);
    let (site_campaign, site_lead) = campaign("Site hours", &site_window);

    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let (status, body) = alice.post(
        &format!("/api/v1/campaigns/{utc_campaign}/leads/{utc_lead}/dial"),
        json!({}),
    );
    assert_eq!(status, 409, "{body}");
    let message = body.to_string();
    assert!(message.contains("calling hours"), "{message}");
    assert!(message.contains(ZONE), "{message}");
    let phone = gw.sim.phone(2);
    assert!(!phone.is_ringing());

    let (status, body) = alice.post(
        &format!("/api/v1/campaigns/{site_campaign}/leads/{site_lead}/dial"),
        json!({}),
    );
    assert_eq!(status, 202, "{body}");
    assert!(wait(SOON, || phone.is_ringing()), "alice's phone rings");
}
