//! Screen pop and click-to-call on the real `branchd` and the simulated board: an
//! agent logs in by feature code, reads `GET /api/v1/events` (raw Server-Sent Events
//! over a TCP stream, as a desktop would), and sees a queued call ring, be answered
//! and end with the right caller, and a direct call to her phone ring and end; then `POST /api/v1/calls` rings the agent's phone,
//! and when it answers the callee's phone rings with the agent's extension as caller
//! ID. Refusals (bad number, another's phone without the grant, unknown extension,
//! busy phone) are checked too, and the audit log holds the click-to-call.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api_client::{create_admin, Api};
use crate::harness::{wait, wait_tone, Gateway, SOON};

const ADMIN_PASSWORD: &str = "screen-Admin-pass-2024";
const AGENT_PASSWORD: &str = "agent-Pass-2024-long";

/// An SSE stream read on a thread: `(event name, data)` per event; comments (the
/// keep-alives) are counted as `("", Null)`.
pub(crate) struct Events {
    rx: mpsc::Receiver<(String, Value)>,
}

impl Events {
    /// Opens `GET path` with the session `cookie`; panics unless the answer is 200.
    pub(crate) fn open(addr: SocketAddr, cookie: &str, path: &str) -> Events {
        let mut stream = TcpStream::connect(addr).expect("connect");
        // HTTP/1.0: the stream is close-delimited, so no chunked framing to undo.
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("request");
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "events: {status}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut name, mut data) = (String::new(), String::new());
            let mut in_body = false;
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if !in_body {
                    in_body = line.is_empty();
                    continue;
                }
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                } else if line.starts_with(':') {
                    let _ = tx.send((String::new(), Value::Null));
                } else if line.is_empty() && !name.is_empty() {
                    let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if tx.send((std::mem::take(&mut name), v)).is_err() {
                        return;
                    }
                    data.clear();
                }
            }
        });
        Events { rx }
    }

    /// Whether the stream ended (the reader thread saw the end of the body).
    fn closed(&self) -> bool {
        let deadline = std::time::Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// The next event named `name`, skipping others (agent states, keep-alives).
    pub(crate) fn next(&self, name: &str) -> Value {
        let deadline = std::time::Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((n, v)) if n == name => return v,
                Ok(_) => continue,
                Err(e) => panic!("no {name} event: {e}"),
            }
        }
    }
}

fn add_user(admin: &Api, username: &str, role: &str, agent_id: Option<&str>) {
    let mut user = json!({
        "username": username,
        "display_name": username,
        "password": AGENT_PASSWORD,
        "enabled": true,
        "roles": [role],
    });
    if let Some(id) = agent_id {
        user["agent_id"] = json!(id);
        user["pin"] = json!("4821");
    }
    let (status, body) = admin.post("/api/v1/users", user);
    assert_eq!(status, 201, "create {username}: {body}");
}

#[test]
fn an_agent_desktop_sees_a_queued_call_and_clicks_to_call() {
    let mut gw = Gateway::start();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_user(&admin, "alice", "agent", Some("100"));
    add_user(&admin, "bob", "agent", Some("200"));
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 15000, 500);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    }
    gw.restart();
    let addr = gw.latest_web_addr();
    // 101 is Alice's customer in the directory: her screen pop shows the record.
    let admin = Api::login(addr, "admin1", ADMIN_PASSWORD).0;
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({"name": "Reception Desk Ltd", "numbers": ["101"], "owner": "alice"}),
    );
    assert_eq!(status, 201, "{body}");
    let (caller, alice_phone, stock, office) = (
        gw.sim.phone(1),
        gw.sim.phone(2),
        gw.sim.phone(3),
        gw.sim.phone(4),
    );

    // Alice logs in on 102 by feature code.
    alice_phone.off_hook();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    alice_phone.dial("*61100*4821#");
    assert!(
        wait(SOON, || alice_phone
            .tone()
            .is_some_and(
                |t| (t.freq1_hz, t.freq2_hz) == (350, 440) && !t.cadence.is_continuous()
            )),
        "login confirmed"
    );
    alice_phone.on_hook();
    assert!(wait(SOON, || alice_phone.tone().is_none()));

    // Her desktop: logged in to the API, reading her events.
    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let events = Events::open(addr, alice.cookie(), "/api/v1/events");
    // Bob may not follow Alice; a bad parameter is a 400 naming it.
    let bob = Api::login(addr, "bob", AGENT_PASSWORD).0;
    let (status, body) = bob.get("/api/v1/events?agent=100");
    assert_eq!(status, 403, "{body}");
    let (status, body) = bob.get("/api/v1/events?queue=Not%20a%20queue");
    assert_eq!(
        (status, body["problems"][0]["field"].as_str()),
        (400, Some("queue")),
        "{body}"
    );

    // 101 calls the queue: Alice's desktop pops the call.
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    let ringing = events.next("ringing");
    assert_eq!(ringing["queue"], "sales", "{ringing}");
    assert_eq!(ringing["agent"], "100", "{ringing}");
    assert_eq!(ringing["extension"], "102", "{ringing}");
    assert_eq!(ringing["caller"]["number"], "101", "{ringing}");
    assert_eq!(ringing["caller"]["name"], "Reception", "{ringing}");
    assert_eq!(
        ringing["contact"]["name"], "Reception Desk Ltd",
        "{ringing}"
    );
    assert_eq!(ringing["contact"]["owner"], "alice", "{ringing}");
    assert!(ringing["since_ms"].as_i64() > Some(0), "{ringing}");
    let call_id = ringing["call_id"].as_str().expect("call id").to_owned();
    assert!(wait(SOON, || alice_phone.is_ringing()));
    alice_phone.off_hook();
    let answered = events.next("answered");
    assert_eq!(answered["call_id"], call_id.as_str(), "{answered}");
    std::thread::sleep(Duration::from_millis(300));
    caller.on_hook();
    let ended = events.next("ended");
    assert_eq!(ended["call_id"], call_id.as_str(), "{ended}");
    assert_eq!(ended["disposition"], "answered", "{ended}");
    assert!(ended["talk_ms"].as_i64() >= Some(300), "{ended}");
    alice_phone.on_hook();
    assert_eq!(events.next("agent_state")["agent"], "100");

    // A direct call to the phone she is logged in on pops up too (no queue); the
    // caller gives up before she answers.
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("102");
    let direct = events.next("ringing");
    assert_eq!(direct["queue"], Value::Null, "{direct}");
    assert_eq!(direct["caller"]["number"], "101", "{direct}");
    assert!(wait(SOON, || alice_phone.is_ringing()));
    caller.on_hook();
    let gone = events.next("ended");
    assert_eq!(gone["call_id"], direct["call_id"], "{gone}");
    assert_eq!(gone["disposition"], "no_answer", "{gone}");
    assert_eq!(gone["extension"], "102", "{gone}");
    assert!(wait(SOON, || !alice_phone.is_ringing()));

    // Click-to-call: Alice's phone (where she is logged in) rings showing 103 ...
    let (status, body) = alice.post("/api/v1/calls", json!({ "to": "103" }));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["from"], "102", "{body}");
    let click_id = body["call_id"].as_str().expect("call id").to_owned();
    assert!(
        wait(SOON, || alice_phone.is_ringing()),
        "alice's phone rings"
    );
    assert_eq!(
        alice_phone.caller_id().expect("caller id").number.as_str(),
        "103"
    );
    assert!(!stock.is_ringing());
    // ... and when she answers, 103 rings with her extension as caller ID.
    alice_phone.off_hook();
    assert!(wait(SOON, || stock.is_ringing()), "103 rings");
    assert_eq!(stock.caller_id().expect("caller id").number.as_str(), "102");
    stock.off_hook();
    assert!(
        wait(SOON, || alice_phone.tone().is_none()),
        "ringback stops"
    );
    stock.on_hook();
    alice_phone.on_hook();

    // Refusals change nothing: a bad number, another's phone without the grant, an
    // unknown extension, a busy phone.
    let (status, body) = alice.post("/api/v1/calls", json!({ "to": "12x" }));
    assert_eq!(
        (status, body["problems"][0]["field"].as_str()),
        (400, Some("to")),
        "{body}"
    );
    let (status, body) = alice.post("/api/v1/calls", json!({ "to": "555" }));
    assert_eq!(
        (status, body["problems"][0]["field"].as_str()),
        (400, Some("to")),
        "{body}"
    );
    let (status, body) = alice.post("/api/v1/calls", json!({}));
    assert_eq!(
        (status, body["problems"][0]["field"].as_str()),
        (400, Some("to")),
        "{body}"
    );
    let (status, body) = bob.post("/api/v1/calls", json!({ "to": "103", "from": "101" }));
    assert_eq!(status, 403, "{body}");
    let admin = Api::login(addr, "admin1", ADMIN_PASSWORD).0;
    let (status, body) = admin.post("/api/v1/calls", json!({ "to": "103", "from": "150" }));
    assert_eq!(status, 404, "{body}");
    office.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    let (status, body) = admin.post("/api/v1/calls", json!({ "to": "103", "from": "104" }));
    assert_eq!(status, 409, "{body}");
    office.on_hook();
    assert!(!stock.is_ringing() && !caller.is_ringing());

    // The click-to-call's CDR carries the id the API gave, 102 to 103, answered.
    let cdrs = gw.wait_cdrs(3);
    let click = cdrs
        .iter()
        .find(|c| c.call_id == click_id)
        .unwrap_or_else(|| panic!("no CDR {click_id}"));
    assert_eq!(
        (
            click.caller.as_str(),
            click.callee.as_str(),
            click.disposition.as_str()
        ),
        ("102", "103", "answered")
    );
    let audited: Vec<(String, String)> = {
        let db = gw.db();
        let mut stmt = db
            .prepare(
                "SELECT actor, result FROM audit_log WHERE action = 'click_to_call' ORDER BY id",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert_eq!(
        audited,
        [
            ("alice".to_owned(), "ok".to_owned()),
            ("alice".to_owned(), "failed".to_owned()),
            ("admin1".to_owned(), "failed".to_owned()),
            ("admin1".to_owned(), "failed".to_owned()),
        ],
        "the click-to-calls that reached the phones are audited"
    );

    // The desktop's stream is still open, and so is a diagnostics page's status
    // stream: stopping the daemon ends both at once (the web server does not wait
    // out its grace time for them).
    let status = Events::open(addr, admin.cookie(), "/api/v1/events/status");
    assert!(status.next("status").is_object());
    let started = std::time::Instant::now();
    assert!(gw.stop_with(nix::sys::signal::Signal::SIGTERM).success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped in {:?}",
        started.elapsed()
    );
    assert!(events.closed(), "the stream ended");
    assert!(status.closed(), "the status stream ended");
    assert!(
        !gw.log_text().contains("did not finish in time"),
        "{}",
        gw.log_text()
    );
}

/// Click-to-call from a SIP-only extension: its phone (SIPp registered as 202, which
/// answers the INVITE) is rung first; once it answers, analog 101 rings with 202 as
/// caller ID; 101 answers and hangs up, and the phone gets its BYE.
#[test]
fn click_to_call_rings_a_sip_phone_then_the_target() {
    use crate::sip_calls::{free_port, gateway, register, sip_addr, sipp, wait_sipp};
    let gw = gateway();
    let port = free_port();
    register(&gw, "202", "soft-phone-pass-two", port);
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    let phone = sipp("uas_answer.xml", sip_addr(&gw), port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let target = gw.sim.phone(1);
    let (status, body) = admin.post("/api/v1/calls", json!({ "to": "101", "from": "202" }));
    assert_eq!(status, 202, "{body}");
    let id = body["call_id"].as_str().expect("call id").to_owned();
    assert!(
        wait(SOON, || target.is_ringing()),
        "101 rings once 202 answered:\n{}",
        gw.log_text()
    );
    assert_eq!(
        target.caller_id().expect("caller id").number.as_str(),
        "202"
    );
    target.off_hook();
    std::thread::sleep(Duration::from_millis(500));
    target.on_hook();
    wait_sipp(phone, "the SIP phone", &gw);
    let cdrs = gw.wait_cdrs(1);
    let c = cdrs
        .iter()
        .find(|c| c.call_id == id)
        .expect("the click's CDR");
    assert_eq!(
        (c.caller.as_str(), c.callee.as_str(), c.disposition.as_str()),
        ("202", "101", "answered")
    );
}

/// Agent logs in on `phone` (extension port `port`) by feature code.
fn agent_login(gw: &Gateway, port: u8, agent: &str) {
    let phone = gw.sim.phone(port);
    phone.off_hook();
    wait_tone(&gw.sim, port, 350, 440).expect("dial tone");
    phone.dial(&format!("*61{agent}*4821#"));
    assert!(
        wait(SOON, || phone
            .tone()
            .is_some_and(
                |t| (t.freq1_hz, t.freq2_hz) == (350, 440) && !t.cadence.is_continuous()
            )),
        "login of {agent} confirmed"
    );
    phone.on_hook();
    assert!(wait(SOON, || phone.tone().is_none()));
}

/// Alice (agent 100 on 102) takes a call from the customer on 101, writes a note,
/// flashes, dials Bob (agent 200 on 103) and hangs up while Bob's phone rings: Bob's
/// desktop pops the call again with the customer as the caller, the customer's record
/// and `transferred_from` (Alice's call, by 102, with her note); answering keeps it.
#[test]
fn a_call_transferred_to_another_agent_brings_the_customer_to_their_screen_pop() {
    let gw = Gateway::start();
    let addr = gw.web_addr();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_user(&admin, "alice", "agent", Some("100"));
    add_user(&admin, "bob", "agent", Some("200"));
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({"name": "Reception Desk Ltd", "numbers": ["101"], "owner": "bob"}),
    );
    assert_eq!(status, 201, "{body}");
    agent_login(&gw, 2, "100");
    agent_login(&gw, 3, "200");
    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let bob = Api::login(addr, "bob", AGENT_PASSWORD).0;
    let alice_events = Events::open(addr, alice.cookie(), "/api/v1/events");
    let bob_events = Events::open(addr, bob.cookie(), "/api/v1/events");
    let (customer, alice_phone, bob_phone) = (gw.sim.phone(1), gw.sim.phone(2), gw.sim.phone(3));

    customer.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    customer.dial("102");
    let ringing = alice_events.next("ringing");
    assert_eq!(ringing["transferred_from"], Value::Null, "{ringing}");
    let first_call = ringing["call_id"].as_str().expect("call id").to_owned();
    assert!(wait(SOON, || alice_phone.is_ringing()));
    alice_phone.off_hook();
    alice_events.next("answered");
    let (status, body) = alice.post(
        &format!("/api/v1/calls/{first_call}/notes"),
        json!({ "text": "wants the invoice resent" }),
    );
    assert_eq!(status, 201, "{body}");

    // Consultation: Bob's phone rings with Alice as the caller.
    alice_phone.flash();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone for the consultation");
    alice_phone.dial("103");
    let consult = bob_events.next("ringing");
    assert_eq!(consult["caller"]["number"], "102", "{consult}");
    assert_eq!(consult["transferred_from"], Value::Null, "{consult}");
    assert!(wait(SOON, || bob_phone.is_ringing()));

    // Alice hangs up: the customer takes her place; Bob's pop shows them.
    alice_phone.on_hook();
    let pop = bob_events.next("ringing");
    assert_eq!(pop["call_id"], consult["call_id"], "{pop}");
    assert_eq!(pop["caller"]["number"], "101", "{pop}");
    assert_eq!(pop["contact"]["name"], "Reception Desk Ltd", "{pop}");
    assert_eq!(
        pop["transferred_from"]["call_id"],
        first_call.as_str(),
        "{pop}"
    );
    assert_eq!(pop["transferred_from"]["by"], "102", "{pop}");
    assert_eq!(
        pop["transferred_from"]["notes"][0]["text"], "wants the invoice resent",
        "{pop}"
    );
    assert_eq!(
        pop["transferred_from"]["notes"][0]["author"], "alice",
        "{pop}"
    );
    assert!(bob_phone.is_ringing(), "Bob's phone rings on");
    bob_phone.off_hook();
    let answered = bob_events.next("answered");
    assert_eq!(answered["caller"]["number"], "101", "{answered}");
    assert_eq!(
        answered["transferred_from"]["call_id"],
        first_call.as_str(),
        "{answered}"
    );
    std::thread::sleep(Duration::from_millis(300));
    customer.on_hook();
    let ended = bob_events.next("ended");
    assert_eq!(ended["disposition"], "answered", "{ended}");
    bob_phone.on_hook();
}

/// One canonical number form (issue 10): at this US site a customer saved as
/// `+1 (212) 555-0100` is stored as `+12125550100`; a second customer with the number
/// in national form is refused as a duplicate, and the number filter finds the first
/// from the international-prefix form. The customer then calls the queue on a PSTN
/// line presenting the national form (`12125550100`): Alice's screen pop shows the
/// record and the call gets a service record; the next call presents the
/// international-prefix form (`01112125550100`) and pops the record with that first
/// call in its history.
#[test]
fn a_customer_saved_in_one_form_is_popped_and_recorded_when_calling_in_others() {
    let plan = crate::harness::DIAL_PLAN.replace(r#"inbound = ["103"]"#, r#"inbound = ["7001"]"#);
    let mut gw = Gateway::start_with(&plan);
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_user(&admin, "alice", "agent", Some("100"));
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 15000, 200);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    }
    gw.restart();
    let addr = gw.latest_web_addr();
    let admin = Api::login(addr, "admin1", ADMIN_PASSWORD).0;
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({"name": "Gotham Bakery", "numbers": ["+1 (212) 555-0100"], "owner": "alice"}),
    );
    assert_eq!(status, 201, "{body}");
    let stored: Vec<String> = gw
        .db()
        .prepare("SELECT number FROM customer_numbers")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("numbers");
    assert_eq!(stored, ["+12125550100"]);
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({"name": "Gotham Bakery again", "numbers": ["1-212-555-0100"]}),
    );
    assert_eq!(status, 409, "the same number in national form: {body}");
    let (status, body) = admin.get("/api/v1/customers?number=011%201%20212%20555%200100");
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["name"], "Gotham Bakery", "{body}");

    agent_login(&gw, 2, "100");
    let alice = Api::login(addr, "alice", AGENT_PASSWORD).0;
    let events = Events::open(addr, alice.cookie(), "/api/v1/events");
    let (alice_phone, line) = (gw.sim.phone(2), gw.sim.line(6));
    let records = || -> i64 {
        gw.db()
            .query_row(
                "SELECT count(*) FROM service_records r JOIN customers c ON c.id = r.customer_id
                  WHERE c.name = 'Gotham Bakery' AND r.number = '+12125550100'",
                [],
                |r| r.get(0),
            )
            .expect("service records")
    };
    for (calls_before, presented) in [(0, "12125550100"), (1, "01112125550100")] {
        assert!(wait(SOON, || !alice_phone.is_ringing() && !line.is_seized()));
        // Wrap-up (200 ms) over: Alice is available again.
        std::thread::sleep(Duration::from_millis(500));
        assert!(line.ring(Some(
            line_proto::CallerId::new(presented, "").expect("caller id")
        )));
        let ringing = events.next("ringing");
        assert_eq!(
            ringing["contact"]["name"], "Gotham Bakery",
            "{presented}: {ringing}"
        );
        let history = ringing["contact"]["history"].as_array().expect("history");
        assert_eq!(history.len(), calls_before, "{presented}: {ringing}");
        assert!(wait(SOON, || alice_phone.is_ringing()), "alice rings");
        alice_phone.off_hook();
        events.next("answered");
        std::thread::sleep(Duration::from_millis(300));
        alice_phone.on_hook();
        let ended = events.next("ended");
        assert_eq!(ended["disposition"], "answered", "{ended}");
        assert!(
            wait(SOON, || records() == calls_before as i64 + 1),
            "{presented}: a service record for the customer"
        );
    }
}
