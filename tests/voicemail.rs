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
    assert!(caller.tone().is_none(), "ringback stops");
    assert!(
        hears(&listen(&gw.sim, 1, 300, false), 1000.0),
        "the caller hears the beep"
    );
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
