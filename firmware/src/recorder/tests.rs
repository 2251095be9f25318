//! Recorder tests against real files in temp dirs and a real store (same migrations).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use branchline_board::dsp::{tone_ratio, SineGenerator};
use line_proto::g711::Law;

use super::*;
use crate::store::Store;

/// Free space a test sets.
#[derive(Debug, Clone)]
struct FixedSpace(Arc<AtomicU64>);

impl FreeSpace for FixedSpace {
    fn available(&self, _dir: &Path) -> std::io::Result<u64> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

const PLENTY: u64 = 1 << 40;
const RESERVE: u64 = 64 << 20;

struct Rig {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    space: Arc<AtomicU64>,
    writer: Writer,
    finished: mpsc::UnboundedReceiver<Finished>,
}

fn rig() -> Rig {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("recordings");
    std::fs::create_dir_all(&dir).expect("dir");
    let space = Arc::new(AtomicU64::new(PLENTY));
    let shared = Arc::new(Shared::new());
    let (tx, finished) = mpsc::unbounded_channel();
    let writer = Writer::new(
        dir.clone(),
        RESERVE,
        Box::new(FixedSpace(space.clone())),
        shared,
        tx,
    );
    Rig {
        db: tmp.path().join("store.db"),
        _tmp: tmp,
        dir,
        space,
        writer,
        finished,
    }
}

struct Tone(SineGenerator, Law);

impl Tone {
    fn new(hz: f64, law: Law) -> Self {
        Self(SineGenerator::new(hz, 8000), law)
    }

    fn frame(&mut self) -> Audio {
        let mut pcm = [0i16; FRAME_SAMPLES];
        self.0.fill(&mut pcm);
        let mut samples = [0u8; FRAME_SAMPLES];
        self.1.encode_block(&pcm, &mut samples);
        Audio {
            law: self.1,
            samples,
        }
    }
}

fn src(port: u8, side: Side) -> Source {
    Source::Port { port, side }
}

fn frame_msg(port: u8, side: Side, audio: Audio) -> Msg {
    Msg::Frame {
        source: src(port, side),
        audio,
    }
}

/// Feeds `frames` 20 ms frames: port 1 says 1 kHz, port 2 says 2 kHz.
fn talk(writer: &mut Writer, frames: usize, now: &mut Instant) {
    let mut a = Tone::new(1000.0, Law::Ulaw);
    let mut b = Tone::new(2000.0, Law::Alaw);
    for _ in 0..frames {
        writer.shared.in_flight.fetch_add(2, Ordering::Relaxed);
        writer.handle(frame_msg(1, Side::FromPort, a.frame()), *now);
        writer.handle(frame_msg(2, Side::FromPort, b.frame()), *now);
        *now += Duration::from_millis(20);
    }
}

/// The two channels of a recorder file, after checking its header against the file.
fn channels(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let bytes = std::fs::read(path).expect("read");
    let info = crate::sync::files::parse_wav(&bytes).expect("a WAV");
    assert_eq!(info.format(), wav::FORMAT);
    assert_eq!(info.sample_rate, 8000);
    assert_eq!(
        info.data_bytes,
        bytes.len() as u64 - HEADER_LEN,
        "header matches data"
    );
    let riff = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    assert_eq!(riff, bytes.len() - 8);
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for s in bytes[HEADER_LEN as usize..].chunks_exact(4) {
        l.push(i16::from_le_bytes([s[0], s[1]]));
        r.push(i16::from_le_bytes([s[2], s[3]]));
    }
    (l, r)
}

#[test]
fn a_call_is_recorded_caller_left_callee_right_and_registered() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(1),
            layout: Layout::ports(1, 2),
            started_at_ms: 1_700_000_000_000,
        },
        now,
    );
    talk(&mut rig.writer, 150, &mut now);
    rig.writer.handle(
        Msg::Stop {
            key: Key::Port(1),
            call_id: Some("c-1".into()),
        },
        now,
    );
    let rec = rig.finished.try_recv().expect("finished");
    assert_eq!(rec.call_id, "c-1");
    assert_eq!(rec.data_len, 150 * FRAME_BYTES);
    assert!(!rec.interrupted);
    assert!(rec
        .path
        .to_string_lossy()
        .ends_with("rec-1700000000000-p1.wav"));
    let (left, right) = channels(&rec.path);
    assert_eq!(left.len(), 150 * FRAME_SAMPLES);
    assert!(
        tone_ratio(&left, 1000.0) > 0.9,
        "left is the caller's 1 kHz"
    );
    assert!(tone_ratio(&left, 2000.0) < 0.01);
    assert!(
        tone_ratio(&right, 2000.0) > 0.9,
        "right is the callee's 2 kHz"
    );
    assert!(tone_ratio(&right, 1000.0) < 0.01);
    assert_eq!(rig.writer.shared.stats.snapshot().finished, 1);

    let mut store = Store::open(&rig.db).expect("store");
    let r = store
        .transact("t", |tx, db| index::register_tx(tx, db, &rec, 5))
        .expect("registered");
    let row: (String, i64, i64, String, i64, i64) = store
        .transact("t", |tx, db| {
            tx.query_row(
                "SELECT call_id, duration_ms, interrupted, channels, port, outbox_seq
                   FROM recordings WHERE id = ?1",
                [r.id],
                |x| {
                    Ok((
                        x.get(0)?,
                        x.get(1)?,
                        x.get(2)?,
                        x.get(3)?,
                        x.get(4)?,
                        x.get(5)?,
                    ))
                },
            )
            .map_err(|source| crate::error::Error::Sqlite {
                path: db.to_owned(),
                op: "t",
                source,
            })
        })
        .expect("row");
    assert_eq!(
        row,
        (
            "c-1".into(),
            3000,
            0,
            index::CHANNEL_LAYOUT.into(),
            1,
            r.outbox_seq
        )
    );
    // The same file again is refused and changes nothing.
    assert!(store
        .transact("t", |tx, db| index::register_tx(tx, db, &rec, 6))
        .is_err());
}

#[test]
fn a_silent_direction_is_padded_with_silence() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(3),
            layout: Layout::port_and_leg(3, false),
            started_at_ms: 1,
        },
        now,
    );
    let mut tone = Tone::new(1000.0, Law::Ulaw);
    // Only the port's own voice (the callee: right); nothing comes from the leg.
    for _ in 0..40 {
        rig.writer.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        rig.writer
            .handle(frame_msg(3, Side::FromPort, tone.frame()), now);
        now += Duration::from_millis(20);
    }
    rig.writer.handle(
        Msg::Stop {
            key: Key::Port(3),
            call_id: None,
        },
        now,
    );
    let rec = rig.finished.try_recv().expect("finished");
    assert_eq!(rec.call_id, "rec-1-p3", "no CDR: the file's own name");
    let (left, right) = channels(&rec.path);
    assert_eq!(right.len(), 40 * FRAME_SAMPLES);
    assert!(left.iter().all(|&s| s == 0));
    assert!(tone_ratio(&right, 1000.0) > 0.9);
}

#[test]
fn a_crash_leaves_a_file_that_startup_repairs_and_registers_as_interrupted() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(1),
            layout: Layout::ports(1, 2),
            started_at_ms: 42,
        },
        now,
    );
    talk(&mut rig.writer, 130, &mut now);
    let part = rig.dir.join("rec-42-p1.wav.part");
    let data_size = || {
        let on_disk = std::fs::read(&part).expect("part file");
        let n = u32::from_le_bytes([on_disk[40], on_disk[41], on_disk[42], on_disk[43]]);
        (u64::from(n), on_disk.len() as u64)
    };
    // Written and the header brought up to date after each second of audio...
    assert_eq!(
        data_size(),
        (100 * FRAME_BYTES, HEADER_LEN + 100 * FRAME_BYTES)
    );
    // ...and by the 1 s timer for the rest.
    rig.writer.tick(now);
    assert_eq!(
        data_size(),
        (130 * FRAME_BYTES, HEADER_LEN + 130 * FRAME_BYTES)
    );
    // Power cut: the writer never finishes; a torn half frame lies at the end.
    drop(rig.writer);
    {
        use std::io::Write;
        let mut f = File::options().append(true).open(&part).expect("open");
        f.write_all(&[7u8; 301]).expect("torn frame");
    }
    let before = std::fs::metadata(&part).expect("meta").len();
    assert_eq!(before, HEADER_LEN + 130 * FRAME_BYTES + 301);

    let mut store = Store::open(&rig.db).expect("store");
    // The journal of live calls knew port 1's recording as call c-77's.
    let cut_calls = BTreeMap::from([
        ("p1".to_owned(), "c-77".to_owned()),
        ("l4".to_owned(), "c-78".to_owned()),
    ]);
    let got = recover(&mut store, &rig.dir, &cut_calls).expect("recover");
    let wav = rig.dir.join("rec-42-p1.wav");
    assert_eq!(got.repaired, vec![wav.clone()]);
    assert!(got.quarantined.is_empty());
    assert!(!part.exists());
    let (left, right) = channels(&wav);
    assert_eq!(
        left.len(),
        130 * FRAME_SAMPLES,
        "whole frames kept, torn bytes cut"
    );
    assert!(tone_ratio(&left, 1000.0) > 0.9);
    assert!(tone_ratio(&right, 2000.0) > 0.9);
    let (call_id, interrupted, port, duration): (String, i64, i64, i64) = store
        .transact("t", |tx, db| {
            tx.query_row(
                "SELECT call_id, interrupted, port, duration_ms FROM recordings",
                [],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)),
            )
            .map_err(|source| crate::error::Error::Sqlite {
                path: db.to_owned(),
                op: "t",
                source,
            })
        })
        .expect("row");
    assert_eq!(
        (call_id.as_str(), interrupted, port, duration),
        ("c-77", 1, 1, 2600)
    );
    // A second start-up finds nothing to do.
    assert_eq!(
        recover(&mut store, &rig.dir, &BTreeMap::new()).expect("again"),
        Recovered::default()
    );
}

#[test]
fn a_finished_file_whose_registration_was_cut_is_registered_at_startup() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(2),
            layout: Layout::ports(2, 1),
            started_at_ms: 7,
        },
        now,
    );
    talk(&mut rig.writer, 10, &mut now);
    rig.writer.handle(
        Msg::Stop {
            key: Key::Port(2),
            call_id: Some("c-9".into()),
        },
        now,
    );
    let rec = rig.finished.try_recv().expect("finished");
    // The registrar never ran (crash). A journaled call on the same port is another
    // call's (this one ended): the finished file keeps its own name as call id.
    let mut store = Store::open(&rig.db).expect("store");
    let cut_calls = BTreeMap::from([("p2".to_owned(), "c-10".to_owned())]);
    let got = recover(&mut store, &rig.dir, &cut_calls).expect("recover");
    assert_eq!(got.registered_late, vec![rec.path.clone()]);
    assert!(got.repaired.is_empty());
    let call_id: String = store
        .transact("t", |tx, db| {
            tx.query_row("SELECT call_id FROM recordings", [], |x| x.get(0))
                .map_err(|source| crate::error::Error::Sqlite {
                    path: db.to_owned(),
                    op: "t",
                    source,
                })
        })
        .expect("row");
    assert_eq!(call_id, "rec-7-p2");
}

#[test]
fn files_that_are_not_recorder_wavs_are_quarantined_and_nothing_is_registered() {
    let rig = rig();
    let junk = rig.dir.join("rec-5-p1.wav.part");
    std::fs::write(&junk, b"GIF89a not a wav at all, just bytes from somewhere").expect("write");
    let mono = rig.dir.join("rec-6-p1.wav");
    let mut h = wav::header(0);
    h[22] = 1; // one channel
    std::fs::write(&mono, h).expect("write");
    let other = rig.dir.join("notes.txt");
    std::fs::write(&other, b"left alone").expect("write");
    let mut store = Store::open(&rig.db).expect("store");
    let got = recover(&mut store, &rig.dir, &BTreeMap::new()).expect("recover");
    assert_eq!(got.quarantined.len(), 2, "{got:?}");
    assert!(got
        .quarantined
        .iter()
        .any(|(_, why)| why.contains("not a RIFF/WAVE")));
    assert!(got
        .quarantined
        .iter()
        .any(|(_, why)| why.contains("other than the recorder's")));
    assert!(!junk.exists() && !mono.exists());
    assert!(rig
        .dir
        .join(QUARANTINE_DIR)
        .join("rec-5-p1.wav.part")
        .exists());
    assert!(
        other.exists(),
        "files that are not recordings are not touched"
    );
    let rows: i64 = store
        .transact("t", |tx, db| {
            tx.query_row("SELECT count(*) FROM recordings", [], |x| x.get(0))
                .map_err(|source| crate::error::Error::Sqlite {
                    path: db.to_owned(),
                    op: "t",
                    source,
                })
        })
        .expect("count");
    assert_eq!(rows, 0);
}

#[test]
fn the_disk_guard_refuses_a_start_and_stops_a_running_recording() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.space.store(RESERVE + 1000, Ordering::Relaxed);
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(1),
            layout: Layout::ports(1, 2),
            started_at_ms: 1,
        },
        now,
    );
    assert!(rig.writer.active.is_empty());
    assert!(
        std::fs::read_dir(&rig.dir).expect("dir").next().is_none(),
        "no file made"
    );
    assert_eq!(rig.writer.shared.stats.snapshot().refused_low_disk, 1);

    rig.space.store(PLENTY, Ordering::Relaxed);
    rig.writer.handle(
        Msg::Start {
            key: Key::Port(1),
            layout: Layout::ports(1, 2),
            started_at_ms: 2,
        },
        now,
    );
    talk(&mut rig.writer, 60, &mut now);
    rig.space.store(RESERVE - 1, Ordering::Relaxed);
    talk(&mut rig.writer, 60, &mut now);
    assert!(rig.writer.active.is_empty(), "stopped");
    let s = rig.writer.shared.stats.snapshot();
    assert_eq!((s.started, s.stopped_low_disk, s.finished), (1, 1, 1));
    // What it held is kept and handed on for registration.
    let rec = rig.finished.try_recv().expect("finished");
    let (left, _) = channels(&rec.path);
    assert!(left.len() >= 60 * FRAME_SAMPLES);
}

#[test]
fn a_full_queue_drops_frames_and_counts_them_without_blocking() {
    let (tx, rx) = std_mpsc::channel();
    let shared = Arc::new(Shared::new());
    let tap = Tap {
        tx,
        shared: shared.clone(),
    };
    let mut tone = Tone::new(1000.0, Law::Ulaw);
    let audio = tone.frame();
    tap.frame(1, Side::FromPort, &audio);
    assert!(rx.try_recv().is_err(), "unwanted frames are not sent");
    shared.set_wanted(src(1, Side::FromPort), true);
    for _ in 0..FRAME_QUEUE + 7 {
        tap.frame(1, Side::FromPort, &audio);
    }
    assert_eq!(shared.stats.snapshot().dropped_frames, 7);
    assert_eq!(rx.try_iter().count(), FRAME_QUEUE);
}

#[test]
fn the_thread_records_through_taps_and_finishes_on_drop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tx, mut finished) = mpsc::unbounded_channel();
    let (mut recorder, thread) = Recorder::spawn(
        tmp.path().join("rec"),
        RESERVE,
        Box::new(FixedSpace(Arc::new(AtomicU64::new(PLENTY)))),
        tx,
    )
    .expect("spawn");
    let tap = recorder.tap();
    recorder.start(4, Layout::port_and_leg(4, true));
    assert!(recorder.is_recording(4) && recorder.records_port(4));
    let mut a = Tone::new(1000.0, Law::Ulaw);
    let mut b = Tone::new(2000.0, Law::Ulaw);
    for _ in 0..50 {
        tap.frame(4, Side::FromPort, &a.frame());
        tap.frame(4, Side::ToPort, &b.frame());
        tap.frame(5, Side::ToPort, &b.frame()); // not recorded
    }
    recorder.stop(4, Some("call-4".into()));
    assert!(!recorder.is_recording(4));
    drop((recorder, tap));
    thread.join().expect("writer thread");
    let rec = finished.try_recv().expect("finished");
    assert_eq!(rec.call_id, "call-4");
    let (left, right) = channels(&rec.path);
    assert_eq!(left.len(), 50 * FRAME_SAMPLES);
    assert!(tone_ratio(&left, 1000.0) > 0.9 && tone_ratio(&right, 2000.0) > 0.9);
}

#[test]
fn retention_deletes_old_recordings_hq_has_or_all_old_ones_without_hq() {
    let rig = rig();
    let mut store = Store::open(&rig.db).expect("store");
    let day = 86_400_000i64;
    let now = 100 * day;
    let mut ids = Vec::new();
    for (i, (age_days, uploaded)) in [(40, true), (40, false), (10, true)]
        .into_iter()
        .enumerate()
    {
        let path = rig.dir.join(format!("rec-{i}-p1.wav"));
        let mut bytes = wav::header(FRAME_BYTES).to_vec();
        bytes.extend(std::iter::repeat_n(i as u8, FRAME_BYTES as usize));
        std::fs::write(&path, &bytes).expect("write");
        let (sha256, size) = file_sha256(&path).expect("sha");
        let rec = Finished {
            path,
            call_id: format!("c-{i}"),
            started_at_ms: now - age_days * day,
            data_len: FRAME_BYTES,
            port: Some(1),
            interrupted: false,
            sha256,
            size,
        };
        let r = store
            .transact("t", |tx, db| {
                let r = index::register_tx(tx, db, &rec, now)?;
                if uploaded {
                    tx.execute(
                        "UPDATE recordings SET uploaded_at_ms = 1 WHERE id = ?1",
                        [r.id],
                    )
                    .map_err(|source| crate::error::Error::Sqlite {
                        path: db.to_owned(),
                        op: "t",
                        source,
                    })?;
                }
                Ok(r)
            })
            .expect("register");
        ids.push((r.id, rec.path));
    }
    let thirty = Duration::from_secs(30 * 86_400);
    let got = store
        .transact("t", |tx, db| {
            index::retention_pass(tx, db, &rig.dir, now, thirty, true)
        })
        .expect("pass");
    assert_eq!(
        got,
        index::Retained {
            deleted: 1,
            skipped: 0
        }
    );
    assert!(!ids[0].1.exists(), "old and at HQ: deleted");
    assert!(ids[1].1.exists(), "old but not at HQ: kept");
    assert!(ids[2].1.exists(), "young: kept");
    // Without HQ, age alone decides.
    let got = store
        .transact("t", |tx, db| {
            index::retention_pass(tx, db, &rig.dir, now, thirty, false)
        })
        .expect("pass");
    assert_eq!(got.deleted, 1);
    assert!(!ids[1].1.exists());
    assert!(ids[2].1.exists());
    let deleted: i64 = store
        .transact("t", |tx, db| {
            tx.query_row(
                "SELECT count(*) FROM recordings WHERE deleted_at_ms = ?1",
                [now],
                |x| x.get(0),
            )
            .map_err(|source| crate::error::Error::Sqlite {
                path: db.to_owned(),
                op: "t",
                source,
            })
        })
        .expect("count");
    assert_eq!(deleted, 2, "rows stay, marked");
}

fn rtp_msg(leg: u64, codec: rtp::LegCodec, ts: u32, payload_type: u8, payload: Vec<u8>) -> Msg {
    Msg::Rtp {
        leg: LegId(leg),
        packet: rtp::LegPacket {
            codec,
            ssrc: 0xC0DE + leg as u32,
            timestamp: ts,
            payload_type,
            payload,
        },
    }
}

const LEG_PCMA: rtp::LegCodec = rtp::LegCodec {
    audio_pt: 8,
    law: Law::Alaw,
    event_pt: None,
};
const LEG_PCMU: rtp::LegCodec = rtp::LegCodec {
    audio_pt: 0,
    law: Law::Ulaw,
    event_pt: Some(101),
};

/// Three seconds of a SIP-to-SIP call as the media engine hands it over, in arrival
/// order: leg 5 (the caller) sends 1 kHz in PCMA with 30 ms packets, leg 6 2 kHz in
/// PCMU with 20 ms packets, of which those from 1000 to 1400 ms are lost (and one
/// telephone-event and one G.729 packet come in between).
fn relay_call(writer: &mut Writer, now: &mut Instant) {
    let mut a = SineGenerator::new(1000.0, 8000);
    let mut b = SineGenerator::new(2000.0, 8000);
    for t in (0..3000u32).step_by(10) {
        if t % 30 == 0 {
            let mut pcm = [0i16; 240];
            a.fill(&mut pcm);
            let payload = pcm.iter().map(|&s| Law::Alaw.encode(s)).collect();
            writer.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            writer.handle(rtp_msg(5, LEG_PCMA, 100 + t * 8, 8, payload), *now);
        }
        if t % 20 == 0 {
            let mut pcm = [0i16; 160];
            b.fill(&mut pcm);
            let ts = 7_000 + t * 8;
            let payload: Vec<u8> = pcm.iter().map(|&s| Law::Ulaw.encode(s)).collect();
            writer.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let msg = match t {
                1000..1400 if t == 1100 => rtp_msg(6, LEG_PCMU, ts, 101, vec![1, 10, 0, 160]),
                1000..1400 if t == 1200 => rtp_msg(6, LEG_PCMU, ts, 18, vec![0; 20]),
                1000..1400 => {
                    writer.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                _ => rtp_msg(6, LEG_PCMU, ts, 0, payload),
            };
            writer.handle(msg, *now);
        }
        *now += Duration::from_millis(10);
    }
}

#[test]
fn a_call_between_two_sip_legs_is_recorded_from_their_rtp_aligned_in_time() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Leg(LegId(5)),
            layout: Layout::legs(LegId(5), LegId(6)),
            started_at_ms: 77,
        },
        now,
    );
    relay_call(&mut rig.writer, &mut now);
    // Another leg's packets go nowhere.
    rig.writer.shared.in_flight.fetch_add(1, Ordering::Relaxed);
    rig.writer
        .handle(rtp_msg(9, LEG_PCMU, 0, 0, vec![0xFF; 160]), now);
    rig.writer.handle(
        Msg::Stop {
            key: Key::Leg(LegId(5)),
            call_id: Some("c-sip".into()),
        },
        now,
    );
    let rec = rig.finished.try_recv().expect("finished");
    assert_eq!(rec.call_id, "c-sip");
    assert_eq!(rec.port, None, "no analog port");
    assert!(
        rec.path.to_string_lossy().ends_with("rec-77-l5.wav"),
        "{}",
        rec.path.display()
    );
    assert_eq!(rig.writer.shared.in_flight.load(Ordering::Relaxed), 0);
    let stats = rig.writer.shared.stats.snapshot();
    assert_eq!(stats.rtp_bad_payload, 1, "the G.729 packet");
    assert_eq!((stats.rtp_late, stats.rtp_resync), (0, 0));
    let (left, right) = channels(&rec.path);
    assert_eq!(left.len(), 3 * 8000, "3 s, nothing lost or doubled");
    assert!(tone_ratio(&left, 1000.0) > 0.9, "left: the caller's 1 kHz");
    assert!(tone_ratio(&left, 2000.0) < 0.01);
    // (Per stretch: the gap below would pull the ratio of the whole channel down.)
    for part in [&right[..8000], &right[11200..]] {
        assert!(tone_ratio(part, 2000.0) > 0.9, "right: the callee's 2 kHz");
        assert!(tone_ratio(part, 1000.0) < 0.01);
    }
    // The lost 400 ms are silence exactly where they were, on the right only.
    let energy = |s: &[i16]| s.iter().map(|&v| i64::from(v).abs()).sum::<i64>();
    assert_eq!(energy(&right[8000..11200]), 0, "the gap");
    assert!(energy(&right[7840..8000]) > 0 && energy(&right[11200..11360]) > 0);
    assert!(energy(&left[8000..11200]) > 0);
}

#[test]
fn a_relayed_call_cut_by_a_crash_is_repaired_without_a_port() {
    let mut rig = rig();
    let mut now = Instant::now();
    rig.writer.handle(
        Msg::Start {
            key: Key::Leg(LegId(5)),
            layout: Layout::legs(LegId(5), LegId(6)),
            started_at_ms: 78,
        },
        now,
    );
    relay_call(&mut rig.writer, &mut now);
    rig.writer.tick(now);
    drop(rig.writer);
    let part = rig.dir.join("rec-78-l5.wav.part");
    assert!(part.exists());
    let mut store = Store::open(&rig.db).expect("store");
    let got = recover(&mut store, &rig.dir, &BTreeMap::new()).expect("recover");
    assert_eq!(got.repaired, vec![rig.dir.join("rec-78-l5.wav")]);
    let (call_id, started, port): (String, i64, Option<i64>) = store
        .transact("t", |tx, db| {
            tx.query_row(
                "SELECT call_id, started_at_ms, port FROM recordings",
                [],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
            )
            .map_err(|source| crate::error::Error::Sqlite {
                path: db.to_owned(),
                op: "t",
                source,
            })
        })
        .expect("row");
    assert_eq!((call_id.as_str(), started, port), ("rec-78-l5", 78, None));
}

#[test]
fn file_names_old_and_new_give_start_and_port() {
    assert_eq!(parse_name("rec-42-p1"), (42, Some(1)));
    assert_eq!(parse_name("rec-42-p12-3"), (42, Some(12)));
    assert_eq!(parse_name("rec-42-l9223372036854775809"), (42, None));
    assert_eq!(parse_name("rec-42-l5-1"), (42, None));
    assert_eq!(parse_name("rec-x"), (0, None));
    assert_eq!(Key::Leg(LegId(5)).to_string(), "l5");
    assert_eq!(Key::Port(3).to_string(), "p3");
}

#[test]
fn leg_flags_follow_the_recordings_and_the_engine_s_legs() {
    use crate::media_engine::{RtpTap, TappedRtp};
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tx, mut finished) = mpsc::unbounded_channel();
    let (mut recorder, thread) = Recorder::spawn(
        tmp.path().join("rec"),
        RESERVE,
        Box::new(FixedSpace(Arc::new(AtomicU64::new(PLENTY)))),
        tx,
    )
    .expect("spawn");
    let tap = recorder.tap();
    // The engine opens leg 1 before any recording, leg 2 only after it started.
    let flag1 = tap.leg_flag(LegId(1));
    assert!(!flag1.load(Ordering::Relaxed));
    recorder.start(Key::Leg(LegId(1)), Layout::legs(LegId(1), LegId(2)));
    assert!(recorder.is_recording(Key::Leg(LegId(1))));
    assert!(recorder.records_leg(LegId(2)) && !recorder.records_port(1));
    let flag2 = tap.leg_flag(LegId(2));
    assert!(flag1.load(Ordering::Relaxed) && flag2.load(Ordering::Relaxed));
    recorder.pause(Key::Leg(LegId(1)));
    assert!(!flag1.load(Ordering::Relaxed) && !flag2.load(Ordering::Relaxed));
    recorder.resume(Key::Leg(LegId(1)));
    assert!(flag1.load(Ordering::Relaxed));
    let pcm = [0xD5u8; 160];
    let packet = TappedRtp {
        audio_pt: 8,
        law: Law::Alaw,
        event_pt: None,
        ssrc: 1,
        timestamp: 0,
        payload_type: 8,
        payload: &pcm,
    };
    tap.rtp(LegId(1), &packet);
    // The engine closes leg 2 while recorded: the flag stays for the recording...
    drop(flag2);
    tap.leg_closed(LegId(2));
    assert!(tap.shared.legs().contains_key(&LegId(2)));
    recorder.stop(Key::Leg(LegId(1)), Some("c".into()));
    assert!(!flag1.load(Ordering::Relaxed));
    // ...and goes with it; leg 1 is still open, so its flag stays until it closes.
    assert!(!tap.shared.legs().contains_key(&LegId(2)));
    drop(flag1);
    tap.leg_closed(LegId(1));
    assert!(tap.shared.legs().is_empty());
    drop((recorder, tap));
    thread.join().expect("writer");
    let rec = finished.try_recv().expect("finished");
    assert_eq!(rec.port, None);
}
