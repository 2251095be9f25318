//! A preview campaign on the real `branchd` and the simulated board: an agent of the
//! campaign's group takes her next leads (they pop on her `/api/v1/events` stream,
//! numbers masked), presses dial on one: her phone rings, and when she lifts it an
//! outside line is seized and the lead's number dialled (with the outside-line
//! prefix, through the normal routing); she records the result. A lead whose number
//! is on the blacklist is finished without a call, and no line is seized for it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;

use serde_json::{json, Value};

use crate::api_client::{create_admin, Api};
use crate::harness::{wait, Gateway, SOON};

const ADMIN_PASSWORD: &str = "campaign-Admin-pass-2024";
const AGENT_PASSWORD: &str = "agent-Pass-2024-long";

/// The first `leads` event of an SSE stream, read on a thread.
fn leads_event(addr: std::net::SocketAddr, cookie: &str) -> mpsc::Receiver<Value> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /api/v1/events HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "events: {status}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                if name == "leads" {
                    let _ = tx.send(serde_json::from_str(v).unwrap_or(Value::Null));
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn a_preview_campaign_dials_a_lead_from_the_agents_phone_and_never_a_blacklisted_one() {
    let gw = Gateway::start();
    let addr = gw.latest_web_addr();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
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
                "utc_offset_min": 0, "max_attempts": 3, "busy_retry_s": 60,
                "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 30 }),
    );
    assert_eq!(status, 201, "{body}");
    let campaign = body["id"].as_i64().expect("campaign");
    let (status, body) = admin.post(&format!("/api/v1/campaigns/{campaign}/start"), json!({}));
    assert_eq!(status, 200, "{body}");

    // Alice takes her next leads: they pop on her desktop, numbers masked.
    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let pops = leads_event(addr, alice.cookie());
    let (status, body) = alice.post(&format!("/api/v1/campaigns/{campaign}/next"), json!({}));
    assert_eq!(status, 200, "{body}");
    let pop = pops.recv_timeout(SOON).expect("a leads event");
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
    phone.on_hook();

    let (status, body) = alice.put(
        &format!("/api/v1/campaign-attempts/{attempt}"),
        json!({ "outcome": "answered", "disposition": 1, "notes": "wants a quote" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next"], json!({ "done": "answered" }), "{body}");
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
}
