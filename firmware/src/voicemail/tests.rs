//! Mailboxes and messages against a real store in a temp dir (the same migrations),
//! the writer thread on real files, and start-up recovery of every kind of leftover.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::store::{self, NewMailbox, NewMessage};
use super::writer::{self, MessageWriter, Outcome, PART_SUFFIX};
use crate::accounts::password::{hash_secret, HashParams};
use crate::error::Error;
use crate::media_engine::FrameSink;
use crate::store::Store;

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

struct Rig {
    _tmp: tempfile::TempDir,
    db: PathBuf,
    dir: PathBuf,
}

fn rig() -> Rig {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("branchline.db");
    drop(Store::open(&db).expect("open store"));
    let dir = tmp.path().join("voicemail");
    std::fs::create_dir_all(&dir).expect("dir");
    Rig { _tmp: tmp, db, dir }
}

fn conn(rig: &Rig) -> Connection {
    let c = Connection::open(&rig.db).expect("open");
    c.pragma_update(None, "foreign_keys", "ON").expect("fk");
    c
}

fn message(mailbox: &str, file: &str) -> NewMessage {
    NewMessage {
        mailbox: mailbox.to_owned(),
        call_id: "c-1".to_owned(),
        caller_number: "0301234567".to_owned(),
        caller_name: "Ann".to_owned(),
        received_at_ms: 1_700_000_000_000,
        duration_ms: 4000,
        file: file.to_owned(),
        size_bytes: 64_044,
        sha256: "a".repeat(64),
        interrupted: false,
    }
}

fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_mailbox_is_added_listed_and_its_pin_checked() {
    let r = rig();
    let c = conn(&r);
    let mut m = NewMailbox::new("201");
    m.pin_hash = Some(hash_secret("4711", FAST).expect("hash"));
    m.greeting = Some("ann-greeting".to_owned());
    m.no_answer_ms = Some(12_000);
    let id = store::add_mailbox(&c, &r.db, &m).expect("added");
    let rows = store::mailboxes(&c, &r.db).expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].number, "201");
    assert!(rows[0].has_pin);
    assert_eq!(rows[0].greeting.as_deref(), Some("ann-greeting"));
    assert_eq!(rows[0].no_answer_ms, Some(12_000));
    assert_eq!(rows[0].max_message(), Duration::from_secs(120));
    assert!(store::check_pin(&c, &r.db, "201", "4711").expect("check"));
    assert!(!store::check_pin(&c, &r.db, "201", "4712").expect("check"));
    // Unknown mailbox, and a mailbox without a PIN: never opened by PIN.
    assert!(!store::check_pin(&c, &r.db, "299", "4711").expect("check"));
    store::add_mailbox(&c, &r.db, &NewMailbox::new("202")).expect("added");
    assert!(!store::check_pin(&c, &r.db, "202", "").expect("check"));
}

#[test]
fn a_bad_mailbox_is_refused_naming_every_field_and_nothing_is_written() {
    let r = rig();
    let c = conn(&r);
    let bad = NewMailbox {
        number: "2a".to_owned(),
        owner_user_id: Some(99),
        pin_hash: Some("4711".to_owned()),
        greeting: Some("../etc/passwd".to_owned()),
        max_message_ms: 1000,
        max_messages: 0,
        on_busy: true,
        on_no_answer: true,
        no_answer_ms: Some(1),
    };
    let Err(Error::Invalid { problems, .. }) = store::add_mailbox(&c, &r.db, &bad) else {
        panic!("accepted");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "number",
        "pin_hash",
        "greeting",
        "max_message_ms",
        "max_messages",
        "no_answer_ms",
        "owner_user_id",
    ] {
        assert!(fields.contains(&f), "{f} not named: {fields:?}");
    }
    assert_eq!(count(&c, "voicemail_boxes"), 0);
    // A number in use.
    store::add_mailbox(&c, &r.db, &NewMailbox::new("201")).expect("added");
    assert!(matches!(
        store::add_mailbox(&c, &r.db, &NewMailbox::new("201")),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(count(&c, "voicemail_boxes"), 1);
}

#[test]
fn the_schema_refuses_rows_the_code_would_never_write() {
    let r = rig();
    let c = conn(&r);
    for sql in [
        "INSERT INTO voicemail_boxes (number) VALUES ('1')",
        "INSERT INTO voicemail_boxes (number, max_message_ms) VALUES ('201', 10)",
        "INSERT INTO voicemail_boxes (number, greeting) VALUES ('201', 'A B')",
    ] {
        assert!(c.execute(sql, []).is_err(), "{sql}");
    }
    store::add_mailbox(&c, &r.db, &NewMailbox::new("201")).expect("added");
    for sql in [
        "INSERT INTO voicemail_messages (mailbox_id, received_at_ms, duration_ms, file, size_bytes, sha256)
         VALUES (1, 0, 10, '../x.wav', 100, '0000000000000000000000000000000000000000000000000000000000000000')",
        "INSERT INTO voicemail_messages (mailbox_id, received_at_ms, duration_ms, file, size_bytes, sha256)
         VALUES (1, 0, 10, 'm.wav', 100, 'xyz')",
        "INSERT INTO voicemail_messages (mailbox_id, received_at_ms, duration_ms, file, size_bytes, sha256)
         VALUES (2, 0, 10, 'm.wav', 100, '0000000000000000000000000000000000000000000000000000000000000000')",
    ] {
        assert!(c.execute(sql, []).is_err(), "{sql}");
    }
}

#[test]
fn messages_are_registered_marked_heard_and_deleted_with_their_file() {
    let r = rig();
    let c = conn(&r);
    let mut m = NewMailbox::new("201");
    m.max_messages = 2;
    store::add_mailbox(&c, &r.db, &m).expect("added");
    let a = store::insert_message(&c, &r.db, &message("201", "msg-201-1.wav")).expect("a");
    assert!(!a.heard);
    assert_eq!(a.mailbox, "201");
    assert_eq!(a.caller_number, "0301234567");
    let b = store::insert_message(&c, &r.db, &message("201", "msg-201-2.wav")).expect("b");
    // Full: refused, nothing written.
    let full = store::insert_message(&c, &r.db, &message("201", "msg-201-3.wav"));
    assert!(matches!(full, Err(Error::Invalid { .. })), "{full:?}");
    assert_eq!(count(&c, "voicemail_messages"), 2);
    assert!(store::mark_heard(&c, &r.db, a.id).expect("heard"));
    assert!(!store::mark_heard(&c, &r.db, 999).expect("unknown"));
    let list = store::messages(&c, &r.db).expect("list");
    assert!(list[0].heard && !list[1].heard);
    // Delete: the file goes to a tombstone with the row; removed after the commit.
    std::fs::write(r.dir.join(&b.file), b"RIFF").expect("file");
    let gone = store::delete_message(&c, &r.db, &r.dir, b.id)
        .expect("delete")
        .expect("existed");
    assert!(!r.dir.join(&b.file).exists());
    assert!(r.dir.join(format!("{}.del", b.file)).exists());
    store::remove_tombstone(&r.dir, &gone);
    assert!(!r.dir.join(format!("{}.del", b.file)).exists());
    assert_eq!(count(&c, "voicemail_messages"), 1);
    assert!(store::delete_message(&c, &r.db, &r.dir, b.id)
        .expect("again")
        .is_none());
}

#[test]
fn a_bad_message_is_refused_and_nothing_changes() {
    let r = rig();
    let c = conn(&r);
    store::add_mailbox(&c, &r.db, &NewMailbox::new("201")).expect("added");
    let cases = [
        NewMessage {
            mailbox: "299".to_owned(),
            ..message("201", "msg-299-1.wav")
        },
        message("201", "../../etc/passwd"),
        NewMessage {
            sha256: "ABC".to_owned(),
            ..message("201", "msg-201-1.wav")
        },
        NewMessage {
            duration_ms: -1,
            size_bytes: 3,
            ..message("201", "msg-201-1.wav")
        },
    ];
    for m in cases {
        assert!(
            matches!(
                store::insert_message(&c, &r.db, &m),
                Err(Error::Invalid { .. })
            ),
            "{m:?}"
        );
    }
    assert_eq!(count(&c, "voicemail_messages"), 0);
}

fn tone(freq: f64, frames: usize) -> Vec<[i16; 160]> {
    let mut g = branchline_board::dsp::SineGenerator::new(freq, 8000);
    (0..frames)
        .map(|_| {
            let mut f = [0i16; 160];
            g.fill(&mut f);
            f
        })
        .collect()
}

fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    for _ in 0..500 {
        if let Ok(o) = rx.try_recv() {
            return o;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no outcome from the writer");
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let r = hound::WavReader::open(path).expect("a WAV that plays");
    let spec = r.spec();
    let s = r
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    (spec, s)
}

#[test]
fn the_writer_finishes_a_mono_wav_and_drops_a_message_too_short_or_not_kept() {
    let r = rig();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (w, thread) = MessageWriter::spawn(r.dir.clone(), tx).expect("writer");
    let mut sink = w.start(1, "msg-201-5.wav".to_owned());
    for f in tone(1000.0, 100) {
        sink.frame(&f);
    }
    w.stop(1, true);
    let Outcome::Written(done) = next(&mut rx) else {
        panic!("not written");
    };
    assert_eq!(done.capture, 1);
    assert_eq!(done.duration_ms, 2000);
    assert_eq!(done.size_bytes, 44 + 100 * 320);
    let path = r.dir.join(&done.file);
    let (spec, samples) = read_wav(&path);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 8000, 16)
    );
    assert_eq!(samples.len(), 16_000);
    assert!(branchline_board::dsp::tone_ratio(&samples, 1000.0) > 0.9);
    let (sha, _) = crate::sync::files::file_sha256(&path).expect("hash");
    assert_eq!(sha, done.sha256);
    // Half a second: dropped. Not kept: dropped. Neither leaves a file.
    let mut short = w.start(2, "msg-201-6.wav".to_owned());
    for f in tone(1000.0, 25) {
        short.frame(&f);
    }
    w.stop(2, true);
    assert!(matches!(
        next(&mut rx),
        Outcome::Dropped {
            capture: 2,
            duration_ms: 500
        }
    ));
    let mut unwanted = w.start(3, "msg-201-7.wav".to_owned());
    for f in tone(1000.0, 100) {
        unwanted.frame(&f);
    }
    w.stop(3, false);
    assert!(matches!(next(&mut rx), Outcome::Dropped { capture: 3, .. }));
    drop((w, sink, short, unwanted));
    thread.join().expect("writer thread");
    let mut left: Vec<String> = std::fs::read_dir(&r.dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    left.sort();
    assert_eq!(left, vec!["msg-201-5.wav".to_owned()]);
}

/// A `.part` file as a crash leaves it: header sizes of 1 s, audio of 3.5 frames
/// more, torn mid-frame.
fn crashed_part(dir: &Path, name: &str) {
    let mut bytes = crate::recorder::wav::header_for(1, 50 * 320).to_vec();
    for f in tone(700.0, 120) {
        for s in f {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
    }
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(dir.join(format!("{name}{PART_SUFFIX}")), bytes).expect("part");
}

#[test]
fn recovery_repairs_registers_quarantines_and_finishes_deletions() {
    let r = rig();
    {
        let c = conn(&r);
        store::add_mailbox(&c, &r.db, &NewMailbox::new("201")).expect("added");
        // A message whose deletion a crash cut after the commit (row gone, tombstone
        // left), and one cut before it (row still there).
        store::insert_message(&c, &r.db, &message("201", "msg-201-2.wav")).expect("row");
    }
    crashed_part(&r.dir, "msg-201-1700000000000.wav");
    std::fs::write(r.dir.join("msg-201-9.wav.del"), b"x").expect("tomb");
    std::fs::write(r.dir.join("msg-201-2.wav.del"), b"x").expect("tomb");
    // Not a message at all, and a message of an unknown mailbox.
    std::fs::write(r.dir.join("junk.wav.part"), b"hello, not a wav file at all").expect("junk");
    crashed_part(&r.dir, "msg-777-5.wav");
    // Too short to keep.
    std::fs::write(
        r.dir.join("msg-201-3.wav"),
        crate::recorder::wav::header_for(1, 320),
    )
    .expect("short");
    let mut st = Store::open(&r.db).expect("store");
    let done = writer::recover(&mut st, &r.dir).expect("recover");
    assert_eq!(
        done.registered,
        vec!["msg-201-1700000000000.wav".to_owned()]
    );
    assert_eq!(done.dropped, vec!["msg-201-3.wav".to_owned()]);
    assert_eq!(done.tombstones, 2);
    let mut q = done.quarantined.clone();
    q.sort();
    assert_eq!(
        q,
        vec!["junk.wav.part".to_owned(), "msg-777-5.wav".to_owned()]
    );
    assert!(
        r.dir.join("msg-201-2.wav").exists(),
        "a deletion not committed is undone"
    );
    assert!(!r.dir.join("msg-201-9.wav.del").exists());
    assert!(r.dir.join("quarantine/junk.wav.part").exists());
    let c = conn(&r);
    let rows = store::messages(&c, &r.db).expect("list");
    let rec = rows
        .iter()
        .find(|m| m.file == "msg-201-1700000000000.wav")
        .expect("registered");
    assert!(rec.interrupted && !rec.heard);
    assert_eq!(rec.received_at_ms, 1_700_000_000_000);
    assert_eq!(rec.duration_ms, 2400);
    let (spec, samples) = read_wav(&r.dir.join(&rec.file));
    assert_eq!(spec.channels, 1);
    assert_eq!(samples.len(), 120 * 160);
    // Run again: nothing left to do.
    let again = writer::recover(&mut st, &r.dir).expect("recover");
    assert_eq!(again, writer::Recovered::default());
}

#[test]
fn message_file_names_round_trip() {
    assert_eq!(super::message_file_name("201", 5, 0), "msg-201-5.wav");
    assert_eq!(
        super::parse_message_file_name(&super::message_file_name("201", 5, 2)),
        Some(("201".to_owned(), 5))
    );
    for bad in [
        "msg-2-5.wav",
        "msg-201-x.wav",
        "msg-201-5-1-2.wav",
        "rec-201-5.wav",
        "msg-201-5.wav.part",
    ] {
        assert_eq!(super::parse_message_file_name(bad), None, "{bad}");
    }
}
