//! The call center on the real `branchd` and the simulated board: agents made through
//! the accounts API, a queue in the store (as HQ sends it), agents logging in by
//! feature code from analog phones (PIN checked against the store), callers queued
//! with music on hold, offered round-robin, answered and talking, abandoned, the
//! agent state history in `agent_state_log`, and the reports API counting those calls.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use branchline_board::sim::Phone;
use serde_json::json;

use crate::api_client::{create_admin, Api};
use crate::harness::{hears, listen, strip_ansi, wait, wait_tone, Gateway, SOON};

pub(crate) const ADMIN_PASSWORD: &str = "queue-Admin-pass-2024";

/// An agent user with `agent_id` and `pin`, made by the admin.
pub(crate) fn add_agent(admin: &Api, username: &str, agent_id: &str, pin: &str) {
    let (status, body) = admin.post(
        "/api/v1/users",
        json!({
            "username": username,
            "display_name": username,
            "password": "agent-Pass-2024-long",
            "agent_id": agent_id,
            "pin": pin,
            "enabled": true,
            "roles": ["agent"],
        }),
    );
    assert_eq!(status, 201, "create {username}: {body}");
}

/// Agent `id` logs in on `phone` with `pin`: true when the box confirms (three short
/// beeps at dial-tone frequency), false when it refuses (number unobtainable).
pub(crate) fn login(gw: &Gateway, phone: &Phone, id: &str, pin: &str) -> bool {
    phone.off_hook();
    wait_tone(&gw.sim, phone.port(), 350, 440).expect("dial tone");
    phone.dial(&format!("*61{id}*{pin}#"));
    let outcome = wait(SOON, || match phone.tone() {
        Some(t) if (t.freq1_hz, t.freq2_hz) == (480, 620) => true,
        Some(t) => (t.freq1_hz, t.freq2_hz) == (350, 440) && !t.cadence.is_continuous(),
        None => false,
    });
    assert!(outcome, "no answer to the login on {}", phone.port());
    let ok = phone.tone().is_some_and(|t| t.freq1_hz == 350);
    phone.on_hook();
    assert!(wait(SOON, || phone.tone().is_none()));
    ok
}

pub(crate) fn agent_states(gw: &Gateway, agent: &str) -> Vec<String> {
    let db = gw.db();
    let mut stmt = db
        .prepare("SELECT state FROM agent_state_log WHERE agent_id = ?1 ORDER BY id")
        .expect("prepare");
    stmt.query_map([agent], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn agents_log_in_by_feature_code_and_take_queued_callers_in_turn() {
    let mut gw = Gateway::start();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    add_agent(&admin, "bob", "200", "5937");

    // Queue "sales" on 7001, round-robin over alice then bob, 8 s ring timeout, 1 s
    // wrap-up: rows in the store, read by branchd at start.
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'round_robin', 8000, 1000);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, CASE u.agent_id WHEN '100' THEN 0 ELSE 1 END
                 FROM queues q, users u WHERE u.agent_id IN ('100', '200');",
        )
        .expect("queue rows");
    }
    gw.restart();
    let loaded = gw
        .log_text()
        .lines()
        .rev()
        .map(strip_ansi)
        .find(|l| l.contains("call center loaded"))
        .expect("call center log line");
    assert!(loaded.contains("queues=1 agents=2"), "{loaded}");

    let (caller, alice, bob, late) = (
        gw.sim.phone(1),
        gw.sim.phone(2),
        gw.sim.phone(3),
        gw.sim.phone(4),
    );
    // A wrong PIN is refused and logs nobody in; then both log in.
    assert!(!login(&gw, &alice, "100", "0000"));
    assert!(agent_states(&gw, "100").is_empty());
    assert!(login(&gw, &alice, "100", "4821"));
    assert!(login(&gw, &bob, "200", "5937"));
    // Bob cannot take Alice's phone.
    assert!(!login(&gw, &alice, "200", "5937"));

    // 101 calls the queue: music on hold (the box's G4 + B4 chime), Alice rings with
    // 101's caller ID.
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    wait_tone(&gw.sim, 1, 392, 494).expect("music on hold");
    assert!(wait(SOON, || alice.is_ringing()), "alice rings");
    assert!(!bob.is_ringing());
    assert_eq!(alice.caller_id().expect("caller id").number.as_str(), "101");
    alice.off_hook();
    assert!(wait(SOON, || caller.tone().is_none()), "music stops");
    caller.inject_tone(1000.0, 8000);
    alice.inject_tone(1600.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        hears(&listen(&gw.sim, 2, 800, false), 1000.0),
        "alice hears the caller"
    );
    assert!(
        hears(&listen(&gw.sim, 1, 800, false), 1600.0),
        "the caller hears alice"
    );

    // A second caller waits while Alice talks: round-robin offers Bob; it hangs up
    // before he answers (abandoned) and Bob stops ringing.
    late.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    late.dial("7001");
    wait_tone(&gw.sim, 4, 392, 494).expect("music on hold");
    assert!(wait(SOON, || bob.is_ringing()), "bob rings");
    // The queues page's live view: 104 waits in sales while Bob rings for it, Alice
    // is on the first call (the admin sees numbers unmasked).
    let live = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD).0;
    let (status, body) = live.get("/api/v1/call-center");
    assert_eq!(status, 200, "{body}");
    let sales = &body["status"]["queues"][0];
    assert_eq!(sales["name"], "sales", "{body}");
    assert_eq!(sales["waiting"][0]["caller"], "104", "{body}");
    assert_eq!(sales["waiting"][0]["ringing"], json!(["200"]), "{body}");
    let states: Vec<(&str, &str)> = body["status"]["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap_or(""),
                a["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(states, [("100", "on_call"), ("200", "ringing")], "{body}");
    let (status, page) = live.get_text("/queues");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("on call") && page.contains("104"), "{page}");
    late.on_hook();
    assert!(wait(SOON, || !bob.is_ringing()), "bob stops ringing");

    caller.on_hook();
    alice.on_hook();
    let cdrs = gw.wait_cdrs(2);
    let answered = cdrs.iter().find(|c| c.caller == "101").expect("101's CDR");
    assert_eq!(
        (answered.callee.as_str(), answered.disposition.as_str()),
        ("7001", "answered")
    );
    let abandoned = cdrs.iter().find(|c| c.caller == "104").expect("104's CDR");
    assert_eq!(abandoned.disposition, "no_answer");
    assert!(!abandoned.answered);
    // The call-center fields, in the store and in the outbox row for HQ.
    let queue_of = |call_id: &str| -> (String, Option<String>, i64) {
        gw.db()
            .query_row(
                "SELECT queue, agent_id, queue_wait_ms FROM cdrs WHERE call_id = ?1",
                [call_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("cdr row")
    };
    let (queue, agent, waited) = queue_of(&answered.call_id);
    assert_eq!((queue.as_str(), agent.as_deref()), ("sales", Some("100")));
    assert!(waited > 0, "waited {waited} ms");
    assert_eq!(queue_of(&abandoned.call_id).1, None);
    let payload = gw.outbox_payload(&answered.call_id).expect("outbox row");
    assert_eq!(payload["queue"]["agent"], "100");

    // The history: Alice logged in, rang, talked, wrapped up and is available again;
    // Bob rang for the abandoned caller and went back to available.
    assert!(wait(SOON, || agent_states(&gw, "100").len() >= 5));
    assert_eq!(
        agent_states(&gw, "100"),
        ["available", "ringing", "on_call", "wrap_up", "available"]
    );
    assert_eq!(
        agent_states(&gw, "200"),
        ["available", "ringing", "available"]
    );

    // The reports API over the last hour counts the same calls. (The restart above
    // ended the admin's session: log in again.)
    let admin = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD).0;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let period = format!("from={}&to={}", now - 3_600_000, now + 60_000);
    let (status, body) = admin.get(&format!("/api/v1/reports/queues?{period}&queue=sales"));
    assert_eq!(status, 200, "{body}");
    let sales = &body["queues"][0];
    assert_eq!(sales["queue"], "sales", "{body}");
    let count = |key: &str| sales[key].as_i64().unwrap_or(-1);
    assert_eq!(
        [
            count("offered"),
            count("answered"),
            count("abandoned"),
            count("other")
        ],
        [2, 1, 1, 0],
        "{body}"
    );
    assert_eq!(count("avg_wait_ms"), waited, "{body}");
    assert_eq!(count("max_wait_ms"), waited, "{body}");
    assert!(count("talk_ms") > 0, "{body}");
    // Alice's 1 s wrap-up after the call is found in the state history.
    let wrap = count("wrap_up_ms");
    assert!((1_000..5_000).contains(&wrap), "wrap-up {wrap} ms: {body}");
    assert_eq!(sales["survey_avg"], serde_json::Value::Null);

    let (status, body) = admin.get(&format!("/api/v1/reports/agents?{period}"));
    assert_eq!(status, 200, "{body}");
    let agent = |id: &str| {
        body["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["agent"] == id)
            .unwrap_or_else(|| panic!("agent {id} in {body}"))
            .clone()
    };
    let (alice_r, bob_r) = (agent("100"), agent("200"));
    assert_eq!(alice_r["answered"], 1, "{body}");
    assert_eq!(alice_r["talk_ms"], sales["talk_ms"], "{body}");
    assert!(alice_r["state_ms"]["on_call"].as_i64() > Some(0), "{body}");
    assert_eq!(bob_r["answered"], 0, "{body}");
    assert!(bob_r["state_ms"]["ringing"].as_i64() > Some(0), "{body}");
    assert!(bob_r["login_ms"].as_i64() > Some(0), "{body}");

    // A bad period is refused naming the parameter.
    let (status, body) = admin.get(&format!("/api/v1/reports/queues?from={now}&to={now}"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"][0]["field"], "to", "{body}");
}

/// A prompt file: `ms` of a `freq` Hz sine, PCM mono 8 kHz 16-bit.
pub(crate) fn write_prompt(dir: &std::path::Path, name: &str, freq: f64, ms: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join(format!("{name}.wav")), spec).expect("wav");
    for i in 0..ms * 8 {
        let t = f64::from(i) / 8000.0;
        w.write_sample((8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16)
            .expect("sample");
    }
    w.finalize().expect("wav written");
}

#[test]
fn a_queue_plays_its_music_prompt_and_spoken_announcements() {
    let mut gw = Gateway::start();
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    // Queue "support" on 7002: music from the prompt "holdmusic", an announcement every
    // 3 s, no agents (the caller waits). The prompts: music at 700 Hz, the words at
    // 1100 Hz ("you are caller number") and 1300 Hz ("one"), and a broken file.
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms,
                                 announce_every_ms, music_on_hold, moh_prompt)
                 VALUES ('support', '7002', 'ring_all', 8000, 1000, 3000, 'prompt', 'holdmusic');",
        )
        .expect("queue row");
    }
    let dir = gw.data_dir().join("prompts");
    std::fs::create_dir_all(&dir).expect("prompts dir");
    write_prompt(&dir, "holdmusic", 700.0, 1000);
    write_prompt(&dir, "queue-position", 1100.0, 700);
    write_prompt(&dir, "num-1", 1300.0, 700);
    std::fs::write(dir.join("broken.wav"), b"RIFF-not-really").expect("broken file");
    gw.restart();
    let log = gw.log_text();
    // The last start's lines (the first start had no prompts).
    let line = |needle: &str| {
        log.lines()
            .rev()
            .map(strip_ansi)
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no '{needle}' in the log:\n{log}"))
    };
    assert!(line("voice prompts loaded").contains("prompts=3"));
    assert!(line("voice prompt not loaded").contains("broken.wav"));

    let caller = gw.sim.phone(1);
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7002");
    // The music is audio from the media engine, not the board's tone generator.
    assert!(
        wait(SOON, || hears(&listen(&gw.sim, 1, 400, false), 700.0)),
        "the caller hears the music prompt"
    );
    assert!(caller.tone().is_none(), "{:?}", caller.tone());
    // After 3 s: "you are caller number" "one", then the music again.
    assert!(
        wait(Duration::from_secs(6), || hears(
            &listen(&gw.sim, 1, 300, false),
            1100.0
        )),
        "the announcement starts"
    );
    assert!(
        wait(Duration::from_secs(3), || hears(
            &listen(&gw.sim, 1, 300, false),
            1300.0
        )),
        "the position is spoken"
    );
    assert!(
        wait(Duration::from_secs(3), || hears(
            &listen(&gw.sim, 1, 300, false),
            700.0
        )),
        "the music resumes"
    );
    // The caller hangs up: nothing more is sent to the port.
    caller.on_hook();
    std::thread::sleep(Duration::from_millis(300));
    let after = listen(&gw.sim, 1, 500, false);
    assert!(
        !hears(&after, 700.0) && !hears(&after, 1100.0),
        "music after hang-up"
    );
}

#[test]
fn a_trunk_caller_hears_the_queue_music_as_early_media_and_is_not_answered() {
    let mut gw = crate::sip_calls::trunk_gateway();
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms,
                                 music_on_hold, moh_prompt)
                 VALUES ('support', '7002', 'ring_all', 8000, 1000, 'prompt', 'holdmusic');",
        )
        .expect("queue row");
    }
    let dir = gw.data_dir().join("prompts");
    std::fs::create_dir_all(&dir).expect("prompts dir");
    write_prompt(&dir, "holdmusic", 700.0, 1000);
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let log = gw.log_text();
    let loaded = log
        .lines()
        .rev()
        .map(strip_ansi)
        .find(|l| l.contains("voice prompts loaded"))
        .expect("prompts log line");
    assert!(loaded.contains("prompts=1"), "{loaded}");

    // SIPp as the carrier: INVITE to the queue with its media on `rtp`, which this
    // test reads. The scenario fails on a 200 (the box must not answer) and on a 183
    // without SDP.
    let rtp_port = crate::sip_calls::free_port();
    let rtp = std::net::UdpSocket::bind(("127.0.0.1", rtp_port)).expect("rtp socket");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let child = crate::sip_calls::sipp(
        "uac_trunk_queue_music.xml",
        crate::sip_calls::sip_addr(&gw),
        crate::sip_calls::free_port(),
        &[
            "-s",
            "7002",
            "-set",
            "caller",
            "+4930777",
            "-set",
            "rtp",
            &rtp_port.to_string(),
            "-m",
            "1",
        ],
    )
    .spawn()
    .expect("sipp starts");
    let mut pcm = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while pcm.len() < 8000 && std::time::Instant::now() < deadline {
        let Ok(n) = rtp.recv(&mut buf) else { continue };
        // RTP: 12-byte header (no CSRCs, no extension from the box), PCMU payload.
        if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 {
            pcm.extend(
                buf[12..n]
                    .iter()
                    .map(|&b| line_proto::g711::Law::Ulaw.decode(b)),
            );
        }
    }
    assert!(pcm.len() >= 8000, "only {} samples of RTP", pcm.len());
    assert!(hears(&pcm, 700.0), "the RTP carries the music prompt");
    crate::sip_calls::wait_sipp(child, "queue caller with early-media music", &gw);
    // The caller gave up while waiting: abandoned in the queue's CDR, never answered
    // (written once the leg's quality report is in: wait for it).
    let cdr = || -> Option<(String, Option<String>)> {
        gw.db()
            .query_row(
                "SELECT disposition, queue FROM cdrs WHERE caller = '+4930777'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    };
    assert!(wait(SOON, || cdr().is_some()), "no CDR:\n{}", gw.log_text());
    let (disposition, queue) = cdr().expect("cdr");
    assert_eq!(queue.as_deref(), Some("support"));
    assert_ne!(disposition, "answered");
}

#[test]
fn a_pstn_caller_scores_the_call_with_inband_dtmf_after_the_agent_hangs_up() {
    // PSTN line 6 rings the queue.
    let plan = crate::harness::DIAL_PLAN.replace(r#"inbound = ["103"]"#, r#"inbound = ["7001"]"#);
    let mut gw = Gateway::start_with(&plan);
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms, survey_prompt)
                 VALUES ('sales', '7001', 'ring_all', 8000, 1000, 'rate-us');
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    }
    let dir = gw.data_dir().join("prompts");
    std::fs::create_dir_all(&dir).expect("prompts dir");
    write_prompt(&dir, "rate-us", 1000.0, 1500);
    gw.restart();

    // The caller is a customer: the phones show the directory's name.
    let admin = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD).0;
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({"name": "Bakery Ltd", "numbers": ["5550123"]}),
    );
    assert_eq!(status, 201, "{body}");
    let alice = gw.sim.phone(2);
    assert!(login(&gw, &alice, "100", "4821"));
    let line = gw.sim.line(6);
    assert!(line.ring(Some(
        line_proto::CallerId::new("5550123", "").expect("caller id")
    )));
    assert!(wait(SOON, || alice.is_ringing()), "alice rings");
    assert_eq!(
        alice.caller_id().map(|c| c.name.to_string()).as_deref(),
        Some("Bakery Ltd")
    );
    alice.off_hook();
    assert!(wait(SOON, || line.is_seized()), "the line is answered");
    std::thread::sleep(Duration::from_millis(500));
    // Alice hangs up first: the caller stays on the line and hears the survey prompt.
    alice.on_hook();
    assert!(
        wait(SOON, || hears(&listen(&gw.sim, 6, 400, true), 1000.0)),
        "the caller hears the survey prompt"
    );
    assert!(line.is_seized());
    // A non-score key is ignored; then the caller keys 4 (in-band DTMF on the line).
    assert!(line.inject_dtmf('9', 120));
    std::thread::sleep(Duration::from_millis(600));
    assert!(line.is_seized(), "9 is not a score");
    assert!(line.inject_dtmf('4', 120));
    assert!(wait(SOON, || !line.is_seized()), "the line is released");
    let score = || -> Option<i64> {
        gw.db()
            .query_row(
                "SELECT survey_score FROM cdrs WHERE caller = '5550123'",
                [],
                |r| r.get(0),
            )
            .ok()
            .flatten()
    };
    assert!(wait(SOON, || score().is_some()), "CDR written");
    assert_eq!(score(), Some(4));
    // The agent went to wrap-up at her hang-up, before the survey ended.
    let states = agent_states(&gw, "100");
    assert!(states.iter().any(|s| s == "wrap_up"), "{states:?}");
}

#[test]
fn an_agent_logs_in_from_a_sip_phone_and_the_queue_rings_that_phone() {
    use crate::sip_calls::{free_port, register, run_sipp, sip_addr, sipp, wait_sipp};
    let mut gw = crate::sip_calls::gateway();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 8000, 60000);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    }
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let phone_port = free_port();
    register(&gw, "202", "soft-phone-pass-two", phone_port);
    let dial = |scenario: &str, code: &str| {
        let args = crate::sip_calls::call_args(code, "202", "soft-phone-pass-two", sip_addr(&gw));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(scenario, sip_addr(&gw), free_port(), &args)
    };
    // A wrong PIN: 403, nobody logged in. A log-in without the PIN: 404.
    let forbidden = crate::sip_calls::with_status(&gw, "uac_phone_refused.xml", 403);
    run_sipp(
        dial(forbidden.to_str().expect("path"), "*61100*1111%23"),
        "wrong PIN",
        &gw,
    );
    let not_found = crate::sip_calls::with_status(&gw, "uac_phone_refused.xml", 404);
    run_sipp(
        dial(not_found.to_str().expect("path"), "*61100%23"),
        "malformed code",
        &gw,
    );
    assert!(agent_states(&gw, "100").is_empty());
    // The right PIN (the phone sends `#` escaped): answered, confirmation, the box
    // hangs up (the scenario fails without its BYE).
    run_sipp(
        dial("uac_feature_code.xml", "*61100*4821%23"),
        "log-in",
        &gw,
    );
    assert_eq!(agent_states(&gw, "100"), vec!["available"]);
    let extension: Option<String> = gw
        .db()
        .query_row(
            "SELECT extension FROM agent_state_log WHERE agent_id = '100'",
            [],
            |r| r.get(0),
        )
        .expect("state row");
    assert_eq!(extension.as_deref(), Some("202"));

    // A caller to the queue now rings the SIP phone the agent is on.
    let uas = sipp("uas_answer.xml", sip_addr(&gw), phone_port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let caller = gw.sim.phone(1);
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    assert!(
        wait(SOON, || agent_states(&gw, "100").last().map(String::as_str)
            == Some("on_call")),
        "the agent's SIP phone did not take the call:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    caller.on_hook();
    wait_sipp(uas, "agent's phone", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(cdrs[0].callee, "7001");
    let agent: Option<String> = gw
        .db()
        .query_row(
            "SELECT agent_id FROM cdrs WHERE call_id = ?1",
            [&cdrs[0].call_id],
            |r| r.get(0),
        )
        .expect("cdr row");
    assert_eq!(agent.as_deref(), Some("100"));

    // In wrap-up the agent tags the call with customer type 3 from the phone: refused
    // (403) while the site has no type 3, stored once it has, with the caller's
    // customer record set to it and a record for HQ.
    let wrap_up = agent_states(&gw, "100");
    assert_eq!(
        wrap_up.last().map(String::as_str),
        Some("wrap_up"),
        "{wrap_up:?}"
    );
    run_sipp(
        dial(forbidden.to_str().expect("path"), "*603"),
        "no such type",
        &gw,
    );
    // The restart moved the web server: log in again.
    let (admin, _) = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD);
    let (status, body) = admin.put("/api/v1/customer-types/3", json!({ "name": "interested" }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({ "name": "Reception desk", "numbers": ["101"] }),
    );
    assert_eq!(status, 201, "{body}");
    run_sipp(dial("uac_feature_code.xml", "*603%23"), "disposition", &gw);
    let tagged: (i64, String, String) = gw
        .db()
        .query_row(
            "SELECT digit, type_name, agent_id FROM cdr_dispositions WHERE call_id = ?1",
            [&cdrs[0].call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("disposition row");
    assert_eq!(tagged, (3, "interested".to_owned(), "100".to_owned()));
    let customer_type: Option<i64> = gw
        .db()
        .query_row(
            "SELECT type_digit FROM customers WHERE name = 'Reception desk'",
            [],
            |r| r.get(0),
        )
        .expect("customer");
    assert_eq!(customer_type, Some(3));
    let queued: i64 = gw
        .db()
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'disposition' AND record_key = ?1",
            [&cdrs[0].call_id],
            |r| r.get(0),
        )
        .expect("outbox");
    assert_eq!(queued, 1);
}

#[test]
fn queues_and_agents_changed_in_the_store_take_effect_without_a_restart() {
    let mut gw = Gateway::start();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 8000, 0);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    }
    gw.restart();
    let admin = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD).0;
    // While branchd runs: agent bob is made through the API, then (as an HQ sync or
    // an installer would) a second queue "support" on 7009 with bob as its member.
    let (status, body) = admin.post(
        "/api/v1/users",
        json!({
            "username": "bob",
            "display_name": "Bob",
            "password": "agent-Pass-2024-long",
            "agent_id": "200",
            "pin": "5937",
            "enabled": true,
            "roles": ["agent"],
        }),
    );
    assert_eq!(status, 201, "{body}");
    let bob_id = body["id"].as_i64().expect("id");
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('support', '7009', 'ring_all', 8000, 0);",
        )
        .expect("queue row");
        db.execute(
            "INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT id, ?1, 0 FROM queues WHERE name = 'support'",
            [bob_id],
        )
        .expect("member row");
    }
    // Any edit of a user has branchd read the call center anew.
    let (status, body) = admin.patch(
        &format!("/api/v1/users/{bob_id}"),
        json!({ "display_name": "Bob B." }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait(SOON, || {
            gw.log_text()
                .lines()
                .map(strip_ansi)
                .any(|l| l.contains("call center reconfigured") && l.contains("queues=2 agents=2"))
        }),
        "no reconfiguration:\n{}",
        gw.log_text()
    );
    // Bob logs in (his agent ID is known now) and takes a caller to the new queue.
    let (caller, bob) = (gw.sim.phone(1), gw.sim.phone(3));
    assert!(login(&gw, &bob, "200", "5937"));
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7009");
    assert!(
        wait(SOON, || bob.is_ringing()),
        "bob rings:\n{}",
        gw.log_text()
    );
    bob.off_hook();
    std::thread::sleep(Duration::from_millis(300));
    caller.on_hook();
    bob.on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].callee, "7009");
    assert_eq!(cdrs[0].disposition, "answered");
}

/// Extension mode `automatic`: the admin sets it through the API; the agent's
/// desktop logs in through `POST /api/v1/agents/me/login` and the ACD uses the SIP
/// phone registered from the desktop's address (SIPp on 202, from 127.0.0.1, like the
/// API client); a queue call then rings that phone. The feature code from the phone
/// is refused (403) in this mode.
#[test]
fn an_automatic_agent_logs_in_from_the_desktop_and_the_queue_rings_the_phone_at_that_address() {
    use crate::sip_calls::{free_port, register, run_sipp, sip_addr, sipp, wait_sipp};
    let mut gw = crate::sip_calls::gateway();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    rusqlite::Connection::open(gw.db_path())
        .expect("open the store")
        .execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms)
                 VALUES ('sales', '7001', 'ring_all', 8000, 60000);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, 0 FROM queues q, users u WHERE u.agent_id = '100';",
        )
        .expect("queue rows");
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let web = gw.latest_web_addr();
    let (admin, _) = Api::login(web, "admin1", ADMIN_PASSWORD);
    let (alice, _) = Api::login(web, "alice", "agent-Pass-2024-long");

    // Not registered yet / login mode: refused, nobody logged in.
    let (status, body) = alice.post("/api/v1/agents/me/login", json!({}));
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin.put(
        "/api/v1/agents/100/extension-mode",
        json!({ "mode": "automatic" }),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice.post("/api/v1/agents/me/login", json!({}));
    assert_eq!(status, 409, "no phone at 127.0.0.1 yet: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no SIP phone"),
        "{body}"
    );
    assert!(agent_states(&gw, "100").is_empty());

    let phone_port = free_port();
    register(&gw, "202", "soft-phone-pass-two", phone_port);
    // The feature code from the phone: refused in automatic mode.
    let dial = |scenario: &str, code: &str| {
        let args = crate::sip_calls::call_args(code, "202", "soft-phone-pass-two", sip_addr(&gw));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(scenario, sip_addr(&gw), free_port(), &args)
    };
    let forbidden = crate::sip_calls::with_status(&gw, "uac_phone_refused.xml", 403);
    run_sipp(
        dial(forbidden.to_str().expect("path"), "*61100*4821%23"),
        "feature code in automatic mode",
        &gw,
    );
    // The desktop log-in binds phone 202 (the ACD took the mode change without a
    // restart; the registrar's snapshot may lag a moment behind the REGISTER).
    let mut last = json!(null);
    assert!(
        wait(SOON, || {
            let (status, body) = alice.post("/api/v1/agents/me/login", json!({}));
            last = body;
            status == 200
        }),
        "desktop log-in: {last}\n{}",
        gw.log_text()
    );
    assert_eq!(last["extension"], "202", "{last}");
    assert_eq!(last["state"], "available", "{last}");
    let (status, state) = alice.get("/api/v1/agents/me");
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["extension_mode"], "automatic");

    // A queue call rings the SIP phone at the desktop's address.
    let uas = sipp("uas_answer.xml", sip_addr(&gw), phone_port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let caller = gw.sim.phone(1);
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    assert!(
        wait(SOON, || agent_states(&gw, "100").last().map(String::as_str)
            == Some("on_call")),
        "the agent's SIP phone did not take the call:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    caller.on_hook();
    wait_sipp(uas, "agent's phone", &gw);
    let extension: Option<String> = gw
        .db()
        .query_row(
            "SELECT extension FROM agent_state_log WHERE agent_id = '100' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("state row");
    assert_eq!(extension.as_deref(), Some("202"));
    // Logged out from the desktop.
    let (status, body) = alice.post("/api/v1/agents/me/logout", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "logged_out");
}

/// A fixed agent at a SIP-only phone: the admin gives the user the SIP account's
/// extension (202, no analog port) through `/api/v1/users`, an unknown number is a
/// 400 that changes nothing; the agent logs in from the desktop in `fixed` mode and a
/// queue call rings that SIP phone.
#[test]
fn a_fixed_agent_at_a_sip_only_phone_gets_its_extension_through_the_users_api() {
    use crate::sip_calls::{free_port, register, sip_addr, sipp, wait_sipp};
    let gw = crate::sip_calls::gateway();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    let (status, users) = admin.get("/api/v1/users");
    assert_eq!(status, 200, "{users}");
    let id = users["items"]
        .as_array()
        .and_then(|items| items.iter().find(|u| u["username"] == "alice"))
        .and_then(|u| u["id"].as_i64())
        .unwrap_or_else(|| panic!("alice in {users}"));
    let path = format!("/api/v1/users/{id}");
    // Not an extension of this box: refused, the user keeps no extension.
    let (status, body) = admin.patch(&path, json!({ "extension": "299" }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("299"),
        "{body}"
    );
    let (_, user) = admin.get(&path);
    assert!(user["extension"].is_null(), "{user}");
    // The SIP-only phone's extension is one.
    let (status, body) = admin.patch(&path, json!({ "extension": "202" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["extension"], "202", "{body}");
    let (status, body) = admin.put(
        "/api/v1/agents/100/extension-mode",
        json!({ "mode": "fixed" }),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.put(
        "/api/v1/queues/sales",
        json!({ "number": "7001", "strategy": "ring_all",
                "members": [{ "agent_id": "100" }] }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        gw.wait_log("call center reconfigured", SOON),
        "{}",
        gw.log_text()
    );

    let phone_port = free_port();
    register(&gw, "202", "soft-phone-pass-two", phone_port);
    let (alice, _) = Api::login(gw.web_addr(), "alice", "agent-Pass-2024-long");
    let (status, body) = alice.post("/api/v1/agents/me/login", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["extension"], "202", "{body}");

    let uas = sipp("uas_answer.xml", sip_addr(&gw), phone_port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let caller = gw.sim.phone(1);
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    assert!(
        wait(SOON, || agent_states(&gw, "100").last().map(String::as_str)
            == Some("on_call")),
        "the fixed agent's SIP phone did not take the call:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    caller.on_hook();
    wait_sipp(uas, "agent's phone", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].callee, "7001");
    assert_eq!(cdrs[0].disposition, "answered");
}
