//! Call recording end to end: the real `branchd` on the simulated board records a call
//! of an extension whose policy is `always` as a stereo WAV (caller left, callee
//! right), indexes it for sync, and repairs a recording cut by `kill -9` at the next
//! start, where the call's CDR is stored from the journal of live calls, marked
//! interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use branchline_board::dsp::tone_ratio;

use crate::harness::{wait, wait_tone, Gateway, DIAL_PLAN, SOON};

/// 101 records every call; a small reserve so any test machine has room.
fn plan() -> String {
    format!("{DIAL_PLAN}\n[recording]\npolicies = {{ \"101\" = \"always\" }}\nmin_free_mb = 16\n")
}

/// The two channels of a WAV written by the recorder, after checking that its header
/// describes exactly the bytes in the file (so any player reads all of it).
fn channels(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let bytes = std::fs::read(path).expect("read the recording");
    assert!(bytes.len() >= 44, "{} bytes", bytes.len());
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(
        (u16_at(20), u16_at(22), u32_at(24), u16_at(34)),
        (1, 2, 8000, 16),
        "PCM, stereo, 8 kHz, 16 bits"
    );
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(u32_at(40) as usize, bytes.len() - 44, "data size");
    assert_eq!((bytes.len() - 44) % 4, 0);
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for s in bytes[44..].chunks_exact(4) {
        l.push(i16::from_le_bytes([s[0], s[1]]));
        r.push(i16::from_le_bytes([s[2], s[3]]));
    }
    (l, r)
}

#[derive(Debug)]
struct Row {
    call_id: String,
    path: PathBuf,
    size: i64,
    duration_ms: i64,
    interrupted: i64,
    channels: Option<String>,
    port: Option<i64>,
    sha256: String,
}

fn recordings(gw: &Gateway) -> Vec<Row> {
    let db = gw.db();
    let mut stmt = db
        .prepare(
            "SELECT call_id, path, size, duration_ms, interrupted, channels, port, sha256
               FROM recordings ORDER BY id",
        )
        .expect("query");
    stmt.query_map([], |r| {
        Ok(Row {
            call_id: r.get(0)?,
            path: PathBuf::from(r.get::<_, String>(1)?),
            size: r.get(2)?,
            duration_ms: r.get(3)?,
            interrupted: r.get(4)?,
            channels: r.get(5)?,
            port: r.get(6)?,
            sha256: r.get(7)?,
        })
    })
    .and_then(|rows| rows.collect())
    .expect("rows")
}

/// The calls in the daemon's journal of live calls, with the end each would get if
/// the box stopped now (see `firmware/src/call/journal.rs`).
fn journaled_calls(gw: &Gateway) -> Vec<(String, i64)> {
    let db = gw.db();
    let mut stmt = db
        .prepare("SELECT call_id, cdr FROM live_calls WHERE ended = 0 ORDER BY call_id")
        .expect("query");
    stmt.query_map([], |r| {
        let cdr: serde_json::Value =
            serde_json::from_str(&r.get::<_, String>(1)?).expect("journal row is a CDR");
        Ok((r.get(0)?, cdr["ended_at_ms"].as_i64().expect("ended_at_ms")))
    })
    .and_then(|rows| rows.collect())
    .expect("rows")
}

/// Waits until the journal holds the one call up (it is written on answer) and
/// returns it.
fn wait_journaled(gw: &Gateway) -> (String, i64) {
    let mut calls = Vec::new();
    assert!(
        wait(SOON, || {
            calls = journaled_calls(gw);
            calls.len() == 1
        }),
        "the answered call is not journaled: {calls:?}\n{}",
        gw.log_text()
    );
    calls.remove(0)
}

/// After the restart that follows a crash during `journaled`'s call: its CDR was
/// stored from the journal, ended by the box, marked interrupted (also in what goes
/// to HQ), no earlier than the journal's last refresh before the crash; the journal
/// is empty and the recording names the call.
fn check_interrupted_cdr(gw: &Gateway, journaled: &(String, i64), recording: &Row) {
    let (call_id, journaled_end) = journaled;
    let cdrs = gw.cdrs();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    let cdr = &cdrs[0];
    assert_eq!(&cdr.call_id, call_id);
    assert_eq!(
        (cdr.disposition.as_str(), cdr.hangup_side.as_str()),
        ("answered", "system")
    );
    assert!(cdr.answered);
    let db = gw.db();
    let (interrupted, ended_at, payload): (bool, i64, String) = db
        .query_row(
            "SELECT c.interrupted, c.ended_at_ms, o.payload
               FROM cdrs c JOIN outbox o ON o.kind = 'cdr' AND o.record_key = c.call_id
              WHERE c.call_id = ?1",
            [call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the CDR and its outbox row");
    assert!(interrupted, "marked interrupted");
    assert!(ended_at >= *journaled_end, "{ended_at} < {journaled_end}");
    let sent: serde_json::Value = serde_json::from_str(&payload).expect("payload");
    assert_eq!(sent["interrupted"], true, "{sent}");
    assert!(journaled_calls(gw).is_empty(), "the journal is empty again");
    assert_eq!(&recording.call_id, call_id, "the recording names the call");
}

/// 101 calls 102 and both talk: 101 a 1 kHz tone, 102 a 2 kHz tone.
fn call_and_talk(gw: &Gateway) {
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "102 rings");
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "answered");
    a.inject_tone(1000.0, 8000);
    b.inject_tone(2000.0, 8000);
    assert!(
        gw.wait_log("recording started", SOON),
        "no recording started:\n{}",
        gw.log_text()
    );
}

#[test]
fn a_recorded_call_has_the_caller_left_and_the_callee_right_and_is_indexed() {
    let gw = Gateway::start_with(&plan());
    call_and_talk(&gw);
    std::thread::sleep(Duration::from_millis(2500));
    gw.sim.phone(2).on_hook();
    gw.sim.phone(1).on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert!(
        gw.wait_log("recording registered", SOON),
        "recording not registered:\n{}",
        gw.log_text()
    );
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.call_id, cdrs[0].call_id, "tied to the call's CDR");
    assert_eq!(row.interrupted, 0);
    assert_eq!(row.channels.as_deref(), Some("caller-left/agent-right"));
    assert_eq!(row.port, Some(1));
    assert_eq!(
        row.size as u64,
        std::fs::metadata(&row.path).expect("file").len()
    );
    assert!(row.path.starts_with(gw.data_dir().join("recordings")));
    let (left, right) = channels(&row.path);
    assert_eq!(row.duration_ms, left.len() as i64 / 8);
    assert!(
        left.len() >= 8000 * 2,
        "at least 2 s recorded: {}",
        left.len()
    );
    let (l1, l2) = (tone_ratio(&left, 1000.0), tone_ratio(&left, 2000.0));
    let (r1, r2) = (tone_ratio(&right, 1000.0), tone_ratio(&right, 2000.0));
    assert!(l1 > 0.8 && l2 < 0.05, "left: 1 kHz {l1:.2}, 2 kHz {l2:.2}");
    assert!(r2 > 0.8 && r1 < 0.05, "right: 1 kHz {r1:.2}, 2 kHz {r2:.2}");
    // Its metadata is in the outbox for HQ (the row the recording points at), naming
    // the file's sha256.
    let (kind, payload): (String, String) = gw
        .db()
        .query_row(
            "SELECT o.kind, o.payload FROM outbox o JOIN recordings r ON r.outbox_seq = o.seq \
             WHERE r.sha256 = ?1",
            [&row.sha256],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("outbox row");
    assert_eq!(kind, "recording");
    assert!(payload.contains(&row.sha256), "{payload}");
}

#[test]
fn calls_of_extensions_without_the_policy_are_not_recorded() {
    let gw = Gateway::start_with(&plan());
    let (c, d) = (gw.sim.phone(3), gw.sim.phone(4));
    c.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    c.dial("104");
    assert!(wait(SOON, || d.is_ringing()), "104 rings");
    d.off_hook();
    std::thread::sleep(Duration::from_millis(500));
    d.on_hook();
    c.on_hook();
    gw.wait_cdrs(1);
    assert_eq!(gw.log_count("recording started"), 0);
    assert!(recordings(&gw).is_empty());
}

#[test]
fn kill_9_during_a_recorded_call_leaves_a_playable_file_and_an_interrupted_cdr_after_restart() {
    let mut gw = Gateway::start_with(&plan());
    call_and_talk(&gw);
    let journaled = wait_journaled(&gw);
    let dir = gw.data_dir().join("recordings");
    // Wait until the recorder has written (and brought the header up to date for)
    // some audio: the file is past its empty header.
    let part = || {
        std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".wav.part"))
    };
    assert!(
        wait(SOON * 3, || part()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 44 + 2 * 32_000)),
        "no audio written:\n{}",
        gw.log_text()
    );
    gw.stop_with(nix::sys::signal::Signal::SIGKILL);
    let cut = part().expect("the recording is still a .part file");
    assert!(gw.cdrs().is_empty(), "the call had not ended: no CDR yet");

    gw.restart();
    assert!(
        gw.wait_log("recordings recovered at start-up", SOON),
        "{}",
        gw.log_text()
    );
    assert!(!cut.exists(), "renamed after repair");
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.interrupted, 1);
    assert_eq!(row.port, Some(1));
    assert_eq!(
        row.path,
        PathBuf::from(cut.to_string_lossy().trim_end_matches(".part"))
    );
    let (left, right) = channels(&row.path);
    assert!(left.len() >= 8000 * 2, "{} samples kept", left.len());
    assert!(tone_ratio(&left, 1000.0) > 0.8, "left still the caller");
    assert!(tone_ratio(&right, 2000.0) > 0.8, "right still the callee");
    check_interrupted_cdr(&gw, &journaled, row);
    // A second restart has nothing left to repair or to store.
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    let before = gw.log_count("recordings recovered at start-up");
    gw.restart();
    assert_eq!(gw.log_count("recordings recovered at start-up"), before);
    assert_eq!(recordings(&gw).len(), 1);
    assert_eq!(gw.cdrs().len(), 1, "the interrupted call is stored once");
}

/// 103 may record on demand; 104 never.
fn on_demand_plan() -> String {
    format!(
        "{DIAL_PLAN}\n[recording]\npolicies = {{ \"103\" = \"on_demand\" }}\nmin_free_mb = 16\n"
    )
}

#[test]
fn the_toggle_code_records_an_on_demand_call_with_the_right_tone_per_channel() {
    let gw = Gateway::start_with(&on_demand_plan());
    let (c, d) = (gw.sim.phone(3), gw.sim.phone(4));
    c.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    c.dial("104");
    assert!(wait(SOON, || d.is_ringing()), "104 rings");
    d.off_hook();
    assert!(wait(SOON, || c.tone().is_none()), "answered");
    c.inject_tone(1000.0, 8000);
    d.inject_tone(2000.0, 8000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        gw.log_count("recording started"),
        0,
        "nothing before the code"
    );
    // The callee (policy never) keys it: the call's policy is the most demanding.
    d.dial("*1");
    assert!(
        gw.wait_log("recording started", SOON),
        "the code started no recording:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(2500));
    d.on_hook();
    c.on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert!(
        gw.wait_log("recording registered", SOON),
        "recording not registered:\n{}",
        gw.log_text()
    );
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].call_id, cdrs[0].call_id, "tied to the call's CDR");
    assert_eq!(rows[0].port, Some(3), "keyed on the caller");
    let (left, right) = channels(&rows[0].path);
    assert!(left.len() >= 8000 * 2, "{} samples", left.len());
    let (l1, l2) = (tone_ratio(&left, 1000.0), tone_ratio(&left, 2000.0));
    let (r1, r2) = (tone_ratio(&right, 1000.0), tone_ratio(&right, 2000.0));
    assert!(
        l1 > 0.8 && l2 < 0.05,
        "left (caller): 1 kHz {l1:.2}, 2 kHz {l2:.2}"
    );
    assert!(
        r2 > 0.8 && r1 < 0.05,
        "right (callee): 1 kHz {r1:.2}, 2 kHz {r2:.2}"
    );
}

#[test]
fn the_toggle_code_on_a_call_whose_policy_is_never_records_nothing() {
    let gw = Gateway::start_with(&on_demand_plan());
    let (a, d) = (gw.sim.phone(2), gw.sim.phone(4));
    a.off_hook();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    a.dial("104");
    assert!(wait(SOON, || d.is_ringing()), "104 rings");
    d.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "answered");
    a.dial("*1");
    assert!(
        gw.wait_log("recording toggle code", SOON),
        "{}",
        gw.log_text()
    );
    d.on_hook();
    a.on_hook();
    gw.wait_cdrs(1);
    assert_eq!(gw.log_count("recording started"), 0);
    assert!(recordings(&gw).is_empty());
}

#[test]
fn a_queue_whose_policy_is_always_records_the_agents_call() {
    use crate::api_client::create_admin;
    use crate::call_center::{add_agent, login, ADMIN_PASSWORD};
    use serde_json::json;

    // No extension records anything: only the queue asks.
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}\n[recording]\nmin_free_mb = 16\n"));
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    // An unknown policy is refused and makes no queue.
    let (status, body) = admin.put(
        "/api/v1/queues/sales",
        json!({ "number": "7001", "strategy": "ring_all", "recording": "loud",
                "members": [{ "agent_id": "100" }] }),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin.put(
        "/api/v1/queues/sales",
        json!({ "number": "7001", "strategy": "ring_all", "recording": "always",
                "members": [{ "agent_id": "100" }] }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        gw.wait_log("call center reconfigured", SOON),
        "{}",
        gw.log_text()
    );
    let (caller, alice) = (gw.sim.phone(1), gw.sim.phone(2));
    assert!(login(&gw, &alice, "100", "4821"));
    caller.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    caller.dial("7001");
    assert!(wait(SOON, || alice.is_ringing()), "alice rings");
    alice.off_hook();
    assert!(wait(SOON, || caller.tone().is_none()), "music stops");
    caller.inject_tone(1000.0, 8000);
    alice.inject_tone(2000.0, 8000);
    assert!(
        gw.wait_log("recording started", SOON),
        "the queue's policy started no recording:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(2500));
    caller.on_hook();
    alice.on_hook();
    assert!(
        gw.wait_log("recording registered", SOON),
        "recording not registered:\n{}",
        gw.log_text()
    );
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The CDR is written once the legs' quality is in, which on a loaded machine can
    // come a moment after the recording is registered.
    let mut cdrs = Vec::new();
    wait(SOON, || {
        cdrs = gw.cdrs();
        cdrs.iter().any(|c| c.callee == "7001")
    });
    let cdr = cdrs
        .iter()
        .find(|c| c.callee == "7001")
        .unwrap_or_else(|| panic!("the queue call's CDR: {cdrs:?}"));
    assert_eq!(rows[0].call_id, cdr.call_id, "tied to the queue call's CDR");
    assert_eq!(rows[0].port, Some(1), "keyed on the caller");
    let (left, right) = channels(&rows[0].path);
    assert!(left.len() >= 8000 * 2, "{} samples", left.len());
    assert!(tone_ratio(&left, 1000.0) > 0.8, "caller left");
    assert!(tone_ratio(&right, 2000.0) > 0.8, "agent right");
}

#[test]
fn a_sip_phones_always_policy_records_its_call_to_an_analog_phone_per_channel() {
    use crate::sip_calls::{call_args, free_port, register, sip_addr, sipp, wait_sipp, SIP_PLAN};

    // Only the SIP phone 201 asks for recording; analog 101 is `never`.
    let gw = Gateway::start_with(&format!(
        "{DIAL_PLAN}\n{SIP_PLAN}\n[recording]\npolicies = {{ \"201\" = \"always\" }}\nmin_free_mb = 16\n"
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let args = call_args("101", "201", "desk-phone-pass-one", target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // SIPp plays G.711 speech from its pcap, then hangs up after 4 s.
    let call = sipp("uac_call.xml", target, port, &args)
        .spawn()
        .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    phone.inject_tone(2000.0, 8000);
    phone.off_hook();
    assert!(
        gw.wait_log("recording started", SOON),
        "the SIP phone's policy started no recording:\n{}",
        gw.log_text()
    );
    wait_sipp(call, "call (SIPp hangs up)", &gw);
    phone.on_hook();
    assert!(
        gw.wait_log("recording registered", SOON),
        "recording not registered:\n{}",
        gw.log_text()
    );
    let cdrs = gw.wait_cdrs(1);
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].call_id, cdrs[0].call_id, "tied to the call's CDR");
    assert_eq!(rows[0].port, Some(1), "keyed on the analog port");
    let (left, right) = channels(&rows[0].path);
    assert!(left.len() >= 8000 * 2, "{} samples", left.len());
    let rms = |s: &[i16]| {
        (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    };
    // Left: the caller (the SIP phone's speech as the port hears it), not the tone.
    assert!(
        rms(&left) > 100.0,
        "left carries the SIP phone (rms {:.0})",
        rms(&left)
    );
    let l2 = tone_ratio(&left, 2000.0);
    assert!(l2 < 0.1, "left is not the analog phone's tone: {l2:.2}");
    // Right: the analog callee's 2 kHz tone.
    let r2 = tone_ratio(&right, 2000.0);
    assert!(r2 > 0.8, "right is the analog phone's tone: {r2:.2}");
}

/// Writes a libpcap file (Ethernet, IPv4, UDP from 127.0.0.1:40000 to :40002) of
/// `seconds` of an `hz` tone as G.711 µ-law RTP, 20 ms per packet, the way SIPp's
/// `play_pcap_audio` replays captured calls (it sends the RTP with the capture's timing
/// to the peer's media address).
fn write_tone_pcap(path: &Path, hz: f64, seconds: u32) {
    use line_proto::g711::Law;
    let mut gen = branchline_board::dsp::SineGenerator::new(hz, 8000);
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset 0, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..seconds * 50 {
        let mut pcm = [0i16; 160];
        gen.fill(&mut pcm);
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
        rtp.extend(pcm.iter().map(|&s| Law::Ulaw.encode(s)));
        let udp_len = 8 + rtp.len() as u16;
        let ip_len = 20 + udp_len;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&40002u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let usec = i * 20_000;
        out.extend_from_slice(&(1_700_000_000 + usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write the pcap");
}

/// `uas_answer_pcap.xml` talking a generated 1 kHz tone (PCMU), written into the
/// gateway's directory; its path.
fn tone_answer_scenario(gw: &Gateway) -> PathBuf {
    let pcap = gw.dir.path().join("answer-1khz.pcap");
    write_tone_pcap(&pcap, 1000.0, 6);
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sip/uas_answer_pcap.xml"),
    )
    .expect("scenario");
    let scenario = gw.dir.path().join("uas_answer_1khz.xml");
    std::fs::write(
        &scenario,
        template.replace("PCAP", pcap.to_str().expect("utf-8 path")),
    )
    .expect("write the scenario");
    scenario
}

/// The WAV of a call between two SIP legs: the caller's speech (SIPp's A-law pcap)
/// left, the callee's 1 kHz right; checks the row is the CDR's and has no port.
fn check_speech_left_tone_right(gw: &Gateway) {
    let cdrs = gw.wait_cdrs(1);
    assert!(
        gw.wait_log("recording registered", SOON),
        "recording not registered:\n{}",
        gw.log_text()
    );
    let rows = recordings(gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.call_id, cdrs[0].call_id, "tied to the call's CDR");
    assert_eq!(row.port, None, "no analog port in the call");
    assert_eq!(row.interrupted, 0);
    assert_eq!(row.channels.as_deref(), Some("caller-left/agent-right"));
    let name = row
        .path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("rec-") && name.contains("-l"), "{name}");
    let (left, right) = channels(&row.path);
    assert_eq!(row.duration_ms, left.len() as i64 / 8);
    assert!(left.len() >= 8000 * 2, "{} samples", left.len());
    let rms = branchline_board::dsp::rms;
    // Left: the caller (speech), not the callee's tone.
    let l1 = tone_ratio(&left, 1000.0);
    assert!(
        rms(&left) > 100.0,
        "left carries the caller (rms {:.0})",
        rms(&left)
    );
    assert!(l1 < 0.1, "left is not the callee's tone: {l1:.2}");
    // Right: the callee's 1 kHz, wherever it has sound.
    let r1 = tone_ratio(&right, 1000.0);
    assert!(r1 > 0.8, "right is the callee's tone: {r1:.2}");
    for (i, second) in right.chunks(8000).enumerate() {
        if rms(second) > 100.0 {
            let r = tone_ratio(second, 1000.0);
            assert!(r > 0.8, "second {i} of the right channel: {r:.2}");
        }
    }
}

/// A gateway whose trunk is at 127.0.0.1 (trusted by address, nothing registers:
/// SIPp's INVITE from there is a carrier's call) and where only SIP phone 201 asks for
/// recording (always); 201 registered and answering (PCMU, 1 kHz), the carrier calling
/// it (SIPp's A-law speech, 30 ms packets; hangs up after 4 s), the recording started.
/// The box relays and transcodes between the two legs.
fn trunk_caller_talking_to_phone_201() -> (Gateway, std::process::Child, std::process::Child) {
    use crate::sip_calls::{free_port, register, sip_addr, sipp, SIP_PLAN};
    let trunk_port = free_port();
    let gw = Gateway::start_with(&format!(
        r#"{DIAL_PLAN}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
register = false
keepalive_s = 0

[recording]
policies = {{ "201" = "always" }}
min_free_mb = 16
"#
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    let target = sip_addr(&gw);
    let phone_port = free_port();
    register(&gw, "201", "desk-phone-pass-one", phone_port);
    let scenario = tone_answer_scenario(&gw);
    let phone = sipp(
        scenario.to_str().expect("utf-8 path"),
        target,
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let carrier = sipp(
        "uac_trunk_call_pcap.xml",
        target,
        free_port(),
        &["-s", "201", "-set", "caller", "5550100", "-m", "1"],
    )
    .spawn()
    .expect("sipp carrier starts");
    assert!(
        gw.wait_log("recording started", SOON),
        "the SIP phone's policy started no recording:\n{}",
        gw.log_text()
    );
    (gw, phone, carrier)
}

#[test]
fn a_sip_phones_always_policy_records_its_call_with_a_trunk_caller_from_the_relayed_rtp() {
    let (gw, phone, carrier) = trunk_caller_talking_to_phone_201();
    crate::sip_calls::wait_sipp(carrier, "carrier's call (hangs up after 4 s)", &gw);
    crate::sip_calls::wait_sipp(phone, "SIP phone 201", &gw);
    check_speech_left_tone_right(&gw);
}

#[test]
fn kill_9_during_a_recorded_sip_to_sip_call_leaves_a_file_and_an_interrupted_cdr_after_restart() {
    let (mut gw, mut phone, mut carrier) = trunk_caller_talking_to_phone_201();
    let journaled = wait_journaled(&gw);
    let dir = gw.data_dir().join("recordings");
    let part = || {
        std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".wav.part"))
    };
    assert!(
        wait(SOON * 3, || part()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 44 + 2 * 32_000)),
        "no audio written:\n{}",
        gw.log_text()
    );
    gw.stop_with(nix::sys::signal::Signal::SIGKILL);
    // The SIP peers are left talking to nobody.
    let _ = (phone.kill(), carrier.kill(), phone.wait(), carrier.wait());
    let cut = part().expect("the recording is still a .part file");
    let name = cut
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.contains("-l"), "keyed on the caller's leg: {name}");
    gw.restart();
    assert!(
        gw.wait_log("recordings recovered at start-up", SOON),
        "{}",
        gw.log_text()
    );
    assert!(!cut.exists(), "renamed after repair");
    let rows = recordings(&gw);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.interrupted, 1);
    assert_eq!(row.port, None, "no port: a call between two SIP legs");
    assert_eq!(
        row.path,
        PathBuf::from(cut.to_string_lossy().trim_end_matches(".part"))
    );
    let (left, right) = channels(&row.path);
    assert!(left.len() >= 8000 * 2, "{} samples kept", left.len());
    assert!(
        branchline_board::dsp::rms(&left) > 100.0,
        "left still the caller"
    );
    assert!(tone_ratio(&left, 1000.0) < 0.1);
    assert!(tone_ratio(&right, 1000.0) > 0.8, "right still the phone");
    check_interrupted_cdr(&gw, &journaled, row);
}

#[test]
fn a_sip_phone_keys_the_toggle_code_by_info_on_its_call_through_the_trunk() {
    use crate::sip_calls::{call_args, free_port, sip_addr, sipp, wait_sipp, SIP_PLAN};

    // The carrier at 127.0.0.2 (so the phone's INVITE from 127.0.0.1 is a phone's),
    // registered to (outside calls take the trunk once it is); SIP phone 202 may
    // record on demand.
    let trunk_port = free_port();
    let carrier = |scenario: &Path| {
        std::process::Command::new("/usr/bin/sipp")
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.2", "-mi", "127.0.0.2", "-nostdin"])
            .args(["-p", &trunk_port.to_string()])
            .args(["-mp", &free_port().to_string()])
            .args(["-timeout", "30s", "-timeout_error", "-m", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sipp carrier starts")
    };
    let registrar =
        carrier(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sip/uas_register_ok.xml"));
    std::thread::sleep(Duration::from_millis(300));
    let gw = Gateway::start_with(&format!(
        r#"{DIAL_PLAN}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.2:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
expires = 3600
keepalive_s = 0

[recording]
policies = {{ "202" = "on_demand" }}
min_free_mb = 16
"#
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    assert!(
        gw.wait_log("trunk registered", SOON),
        "no registration:\n{}",
        gw.log_text()
    );
    wait_sipp(registrar, "carrier's registrar", &gw);
    let target = sip_addr(&gw);
    // The carrier's callee answers in PCMU and says 1 kHz.
    let callee = carrier(&tone_answer_scenario(&gw));
    std::thread::sleep(Duration::from_millis(300));
    // 202 dials out (prefix 9), speaks SIPp's A-law speech, keys *1 by INFO after 1 s.
    let args = call_args("90301234", "202", "soft-phone-pass-two", target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let phone = sipp("uac_call_toggle.xml", target, free_port(), &args)
        .spawn()
        .expect("sipp phone starts");
    assert!(
        gw.wait_log("recording started", SOON),
        "the toggle code started no recording:\n{}",
        gw.log_text()
    );
    // The writer thread logs the start; call control logs the code's outcome on its
    // own thread, possibly a moment later.
    assert!(
        gw.wait_log("recording toggle code", SOON),
        "{}",
        gw.log_text()
    );
    let toggled = gw
        .log_text()
        .lines()
        .map(crate::harness::strip_ansi)
        .find(|l| l.contains("recording toggle code"))
        .unwrap_or_default();
    assert!(toggled.contains("Started"), "{toggled}");
    wait_sipp(phone, "SIP phone 202 (hangs up 3 s after the code)", &gw);
    wait_sipp(callee, "carrier's callee", &gw);
    check_speech_left_tone_right(&gw);
}

#[test]
fn a_queues_always_policy_records_a_trunk_caller_answered_on_an_agents_sip_phone() {
    use crate::api_client::create_admin;
    use crate::call_center::{add_agent, agent_states, ADMIN_PASSWORD};
    use crate::sip_calls::{
        call_args, free_port, register, run_sipp, sip_addr, sipp, wait_sipp, SIP_PLAN,
    };
    use serde_json::json;

    // No extension records anything: only the queue asks. The carrier is at 127.0.0.2
    // (trusted by address), so the agent's phone at 127.0.0.1 is a phone.
    let trunk_port = free_port();
    let gw = Gateway::start_with(&format!(
        r#"{DIAL_PLAN}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.2:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
register = false
keepalive_s = 0

[recording]
min_free_mb = 16
"#
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    let target = sip_addr(&gw);
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    add_agent(&admin, "alice", "100", "4821");
    let (status, body) = admin.put(
        "/api/v1/queues/sales",
        json!({ "number": "7001", "strategy": "ring_all", "recording": "always",
                "members": [{ "agent_id": "100" }] }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        gw.wait_log("call center reconfigured", SOON),
        "{}",
        gw.log_text()
    );
    // Alice logs in from SIP phone 202, which then answers queue calls with 1 kHz.
    let phone_port = free_port();
    register(&gw, "202", "soft-phone-pass-two", phone_port);
    let args = call_args("*61100*4821%23", "202", "soft-phone-pass-two", target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_sipp(
        sipp("uac_feature_code.xml", target, free_port(), &args),
        "log-in",
        &gw,
    );
    assert_eq!(agent_states(&gw, "100"), vec!["available"]);
    let scenario = tone_answer_scenario(&gw);
    let phone = sipp(
        scenario.to_str().expect("utf-8 path"),
        target,
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp agent phone starts");
    std::thread::sleep(Duration::from_millis(300));
    // The carrier's caller (speech) calls the queue from 127.0.0.2.
    let carrier = std::process::Command::new("/usr/bin/sipp")
        .arg("-sf")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sip/uac_trunk_call_pcap.xml"))
        .args(["-i", "127.0.0.2", "-mi", "127.0.0.2", "-nostdin"])
        .args(["-p", &free_port().to_string()])
        .args(["-mp", &free_port().to_string()])
        .args(["-timeout", "30s", "-timeout_error"])
        .args(["-s", "7001", "-set", "caller", "5550100", "-m", "1"])
        .arg(target.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp carrier starts");
    assert!(
        gw.wait_log("recording started", SOON),
        "the queue's policy started no recording:\n{}",
        gw.log_text()
    );
    wait_sipp(carrier, "carrier's caller (hangs up after 4 s)", &gw);
    wait_sipp(phone, "agent's SIP phone", &gw);
    let cdrs = gw.wait_cdrs(1);
    let (queue, agent): (Option<String>, Option<String>) = gw
        .db()
        .query_row(
            "SELECT queue, agent_id FROM cdrs WHERE call_id = ?1",
            [&cdrs[0].call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("cdr row");
    assert_eq!(
        (queue.as_deref(), agent.as_deref()),
        (Some("sales"), Some("100")),
        "a queue call answered by alice: {cdrs:?}"
    );
    check_speech_left_tone_right(&gw);
}
