//! Voicemail on the real `branchd` and the simulated board: a caller's unanswered call
//! goes to extension 102's mailbox (a row in the store, as HQ would send it) and leaves
//! a message (a 1600 Hz tone injected on the caller's port); 102's phone then gets
//! stutter dial tone, opens its mailbox with `*97`, hears that tone played back, and
//! deletes the message: the row and the WAV file are gone.

use std::time::Duration;

use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};

/// The caller's voice in the message.
const VOICE_HZ: f64 = 1600.0;

fn messages(gw: &Gateway) -> Vec<(i64, String, String, i64, bool)> {
    let db = gw.db();
    let mut stmt = db
        .prepare(
            "SELECT m.id, m.file, m.caller_number, m.duration_ms, m.heard
             FROM voicemail_messages m ORDER BY m.id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

#[test]
fn a_message_is_left_signalled_by_stutter_dial_tone_played_back_and_deleted() {
    let mut gw = Gateway::start();
    // Mailbox 102: unanswered calls go there after 5 s.
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute(
            "INSERT INTO voicemail_boxes (number, no_answer_ms, max_message_ms)
             VALUES ('102', 5000, 30000)",
            [],
        )
        .expect("mailbox row");
    }
    gw.restart();
    assert!(gw.wait_log("voicemail loaded", SOON), "{}", gw.log_text());

    let (caller, owner) = (gw.sim.phone(1), gw.sim.phone(2));
    // No new message yet: steady dial tone.
    owner.off_hook();
    let dial = wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    assert!(dial.cadence.is_continuous(), "{dial:?}");
    owner.on_hook();

    // 101 calls 102, nobody answers: after 5 s the box answers with the beep.
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("102");
    assert!(wait(SOON, || owner.is_ringing()), "102 rings");
    assert!(
        wait(Duration::from_secs(10), || !owner.is_ringing()),
        "102 stops ringing"
    );
    // The beep (500 ms) right away; ringback stopped.
    let beep = listen(&gw.sim, 1, 300, false);
    assert!(hears(&beep, 1000.0), "the caller hears the beep");
    assert!(wait(SOON, || caller.tone().is_none()), "ringback stops");
    // The message: 3 s of the caller's voice, then `#`.
    assert!(
        gw.wait_log("voicemail: recording", SOON),
        "{}",
        gw.log_text()
    );
    caller.inject_tone(VOICE_HZ, 8000);
    std::thread::sleep(Duration::from_millis(3000));
    caller.inject_silence();
    caller.dial("#");
    assert!(
        gw.wait_log("voicemail message registered", SOON),
        "{}",
        gw.log_text()
    );
    caller.on_hook();
    let rows = messages(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_id, file, caller_number, duration_ms, heard) = rows[0].clone();
    assert_eq!(caller_number, "101");
    assert!((2500..=4500).contains(&duration_ms), "{duration_ms} ms");
    assert!(!heard);
    let path = gw.data_dir().join("voicemail").join(&file);
    let wav = hound::WavReader::open(&path).expect("the message plays");
    assert_eq!(wav.spec().channels, 1);
    let cdr = gw.wait_cdrs(1).pop().expect("CDR");
    assert_eq!(cdr.disposition, "no_answer");

    // 102 goes off-hook: stutter dial tone, then *97 plays the message.
    owner.off_hook();
    let stutter = wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    assert!(
        !stutter.cadence.is_continuous(),
        "stutter dial tone: {stutter:?}"
    );
    owner.dial("*97");
    assert!(
        gw.wait_log("voicemail: playing message", SOON),
        "{}",
        gw.log_text()
    );
    assert!(
        hears(&listen(&gw.sim, 2, 1500, false), VOICE_HZ),
        "the owner hears the message"
    );
    // 7 deletes it: the row and the file go.
    owner.dial("7");
    assert!(
        gw.wait_log("voicemail message deleted", SOON),
        "{}",
        gw.log_text()
    );
    assert!(messages(&gw).is_empty());
    assert!(!path.exists(), "{} still there", path.display());
    assert!(
        std::fs::read_dir(gw.data_dir().join("voicemail"))
            .expect("voicemail dir")
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().starts_with("msg-")),
        "no message file left"
    );
    owner.on_hook();
    // Nothing new any more: steady dial tone again.
    assert!(wait(SOON, || owner.tone().is_none()));
    owner.off_hook();
    let dial = wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    assert!(dial.cadence.is_continuous(), "{dial:?}");
    owner.on_hook();
}

/// A stand-in SIP phone on `socket` (where a SIPp REGISTER left its binding): answers
/// INVITEs `486 Busy Here` and NOTIFYs `200 OK`, and keeps every NOTIFY it got.
fn fake_phone(socket: std::net::UdpSocket) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let notifies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&notifies);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        // The test ends long before; the thread stops with the process.
        for _ in 0..600 {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status = if text.starts_with("INVITE ") {
                "486 Busy Here"
            } else if text.starts_with("NOTIFY ") {
                seen.lock().expect("lock").push(text.clone());
                "200 OK"
            } else {
                continue; // ACK, CANCEL, responses
            };
            let mut response = format!("SIP/2.0 {status}\r\n");
            for line in text.lines() {
                let lower = line.to_ascii_lowercase();
                if ["via:", "from:", "to:", "call-id:", "cseq:"]
                    .iter()
                    .any(|h| lower.starts_with(h))
                {
                    response.push_str(line);
                    if lower.starts_with("to:") && !lower.contains("tag=") {
                        response.push_str(";tag=fakephone");
                    }
                    response.push_str("\r\n");
                }
            }
            response.push_str("Content-Length: 0\r\n\r\n");
            let _ = socket.send_to(response.as_bytes(), from);
        }
    });
    notifies
}

/// Waits for a message-summary NOTIFY whose body holds every one of `want`.
fn wait_notify(notifies: &std::sync::Mutex<Vec<String>>, want: &[&str]) -> Option<String> {
    let mut found = None;
    wait(Duration::from_secs(10), || {
        found = notifies
            .lock()
            .expect("lock")
            .iter()
            .find(|n| n.contains("Event: message-summary") && want.iter().all(|w| n.contains(w)))
            .cloned();
        found.is_some()
    });
    found
}

/// The analog dial plan with 102 also a SIP account, and mailbox 102 (5 s no-answer
/// time) in the store.
fn sip_mailbox_gateway() -> Gateway {
    // 102 is FXS 2 and a SIP phone.
    let plan = format!(
        "{}\n[media]\nlocal_ip = \"127.0.0.1\"\n\n[[sip_accounts]]\nextension = \"102\"\n\
         name = \"Sales Desk\"\npassword = \"sales-desk-pass-1\"\n\n[sip]\nudp = \"127.0.0.1:0\"\n\
         domain = \"branch.test\"\nmd5_first = true\n",
        crate::harness::DIAL_PLAN
    );
    let mut gw = Gateway::start_with(&plan);
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute(
            "INSERT INTO voicemail_boxes (number, no_answer_ms) VALUES ('102', 5000)",
            [],
        )
        .expect("mailbox row");
    }
    gw.restart();
    // The restarted daemon's listener (the first start's is logged too).
    assert!(
        gw.wait_log_count("sip endpoint listening", 2, SOON),
        "{}",
        gw.log_text()
    );
    gw
}

/// 101 leaves a 1.5 s message for 102 (unanswered).
fn leave_message(gw: &Gateway) {
    let caller = gw.sim.phone(1);
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("102");
    assert!(
        gw.wait_log("voicemail: recording", Duration::from_secs(15)),
        "{}",
        gw.log_text()
    );
    caller.inject_tone(VOICE_HZ, 8000);
    std::thread::sleep(Duration::from_millis(1500));
    caller.dial("#");
    caller.on_hook();
    assert!(
        gw.wait_log("voicemail message registered", SOON),
        "{}",
        gw.log_text()
    );
}

#[test]
fn a_sip_phone_subscribed_to_message_summary_is_notified_until_it_unsubscribes() {
    use crate::sip_calls::{free_port, sip_addr, sipp, wait_sipp_for};
    let gw = sip_mailbox_gateway();
    let target = sip_addr(&gw);
    let auth_uri = format!("102@{target}");
    // SIPp waits for the NOTIFY of the new message while the message is left (ring,
    // no answer, recording: about 10 s, much longer on a loaded machine), so its run
    // gets more than the harness's 30 s.
    let phone = sipp(
        "subscribe_mwi.xml",
        target,
        free_port(),
        &[
            "-s",
            "102",
            "-au",
            "102",
            "-ap",
            "sales-desk-pass-1",
            "-auth_uri",
            &auth_uri,
            "-m",
            "1",
            "-timeout",
            "90s",
        ],
    )
    .spawn()
    .expect("sipp starts");
    if !gw.wait_log("message-summary subscription", SOON) {
        let out = phone.wait_with_output().expect("sipp output");
        panic!(
            "no subscription: sipp {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.log_text()
        );
    }
    leave_message(&gw);
    // SIPp checks the NOTIFYs (none waiting, then 1/0) and unsubscribes.
    wait_sipp_for(
        phone,
        "message-summary subscription",
        &gw,
        Duration::from_secs(100),
    );
}

#[test]
fn a_sip_phone_gets_message_summary_notifies_at_registration_and_on_every_change() {
    use crate::sip_calls::{free_port, register};
    let gw = sip_mailbox_gateway();

    // The phone registers (SIPp), then listens where its binding points.
    let port = free_port();
    register(&gw, "102", "sales-desk-pass-1", port);
    let socket = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the phone's port");
    let notifies = fake_phone(socket);
    let first = wait_notify(&notifies, &["Messages-Waiting: no", "Voice-Message: 0/0"])
        .unwrap_or_else(|| panic!("no NOTIFY at registration:\n{}", gw.log_text()));
    assert!(first.contains("Message-Account: sip:102@"), "{first}");

    // A message for 102 (the SIP phone is busy, the analog one does not answer).
    let owner = gw.sim.phone(2);
    leave_message(&gw);
    wait_notify(
        &notifies,
        &["Messages-Waiting: yes", "Voice-Message: 1/0 (0/0)"],
    )
    .unwrap_or_else(|| panic!("no NOTIFY for the new message:\n{}", gw.log_text()));

    // Deleted from the analog phone: the SIP phone hears there is nothing waiting.
    notifies.lock().expect("lock").clear();
    owner.off_hook();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    owner.dial("*97");
    assert!(
        gw.wait_log("voicemail: playing message", SOON),
        "{}",
        gw.log_text()
    );
    owner.dial("7");
    wait_notify(&notifies, &["Messages-Waiting: no", "Voice-Message: 0/0"])
        .unwrap_or_else(|| panic!("no NOTIFY after the deletion:\n{}", gw.log_text()));
    owner.on_hook();
}
