//! Recording files, end to end: the real `branch-hq` (SQLite) and the real `branchd`
//! on the simulator, over mutual TLS on loopback.
//!
//! - A ~3 MB WAV registered on the box with `branchd recording-add` reaches HQ byte
//!   for byte under policy `all`, after its metadata; `branch-hq` is killed with
//!   SIGKILL in the middle of the upload and restarted, and the box resumes at the
//!   offset HQ holds instead of starting over.
//! - Under policy `none` nothing goes up (the recording stays pending on the box);
//!   under `on_demand` only the wanted file does.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    bin, command, strip_ansi, wait, BoxCredentials, Gateway, HqDb, HqServer, DIAL_PLAN, SOON,
};

const SITE: &str = "site-rec";
const BOX: &str = "box-rec";

/// A 16-bit stereo 8 kHz WAV of `seconds` of pseudo-random audio (incompressible, so
/// every byte really crosses the wire).
fn write_wav(path: &Path, seconds: u32) {
    let data = seconds * 8000 * 4;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&2u16.to_le_bytes()); // stereo
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&32000u32.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seconds);
    for _ in 0..data / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, out).expect("write wav");
}

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("command runs")
}

/// `branchd recording-add`: the JSON it prints.
fn recording_add(gw: &Gateway, call_id: &str, file: &Path) -> Value {
    let out = run(command(bin("branchd"))
        .arg("--config")
        .arg(gw.config_path())
        .args(["recording-add", "--call-id", call_id])
        .arg(file));
    assert!(
        out.status.success(),
        "recording-add: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("recording-add JSON")
}

/// `branchd sync-status` (from the store, while the daemon runs).
fn sync_status(gw: &Gateway) -> Value {
    let out = run(command(bin("branchd"))
        .arg("--config")
        .arg(gw.config_path())
        .arg("sync-status"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sync-status JSON")
}

/// `sha256sum FILE` (coreutils), as an independent check of the hash.
fn sha256sum(path: &Path) -> String {
    let out = run(std::process::Command::new("sha256sum").arg(path));
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_owned()
}

fn files_dir(hq: &HqServer) -> PathBuf {
    hq.dir.path().join("files")
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn set_policy(hq: &HqServer, policy: Value) {
    let (status, body) = hq.admin(
        "PUT",
        &format!("/admin/v1/sites/{SITE}/file-policy"),
        Some(policy),
    );
    assert_eq!(status, 200, "{body}");
}

fn start(extra: &str) -> (HqServer, BoxCredentials, Gateway) {
    let mut hq = HqServer::new(HqDb::Sqlite);
    hq.add_site(SITE);
    let creds = hq.add_box(SITE, BOX);
    hq.serve();
    let gw = Gateway::start_with(&format!(
        "{DIAL_PLAN}{}",
        hq.box_config(&creds, hq.sync, extra)
    ));
    assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());
    (hq, creds, gw)
}

/// The box's log without colour codes.
fn plain_log(gw: &Gateway) -> Vec<String> {
    gw.log_text().lines().map(strip_ansi).collect()
}

/// The `offset=` field of a log line.
fn offset_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("offset="))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_recording_reaches_hq_byte_identical_and_resumes_at_hqs_offset_after_hq_is_killed() {
    // 4000 kbit/s = 500 kB/s: the ~3 MB file takes about six seconds, in chunks of
    // 500 kB (one second of the cap), so HQ can be killed in the middle.
    let (mut hq, _creds, gw) = start("upload_bandwidth_kbps = 4000\nrequest_timeout_ms = 5000\n");
    set_policy(&hq, json!({ "mode": "all" }));

    let source = gw.dir.path().join("call-0001.wav");
    write_wav(&source, 96); // 3,072,044 bytes
    let added = recording_add(&gw, "call-0001", &source);
    let sha = added["meta"]["sha256"].as_str().expect("sha256").to_owned();
    let size = added["meta"]["size"].as_u64().expect("size");
    assert_eq!(size, 3_072_044);
    assert_eq!(sha, sha256sum(&source));
    assert_eq!(added["meta"]["format"], "wav/pcm16/stereo");
    assert_eq!(added["meta"]["duration_ms"], 96_000);
    assert_eq!(added["copied"], true);
    let kept = PathBuf::from(added["path"].as_str().expect("path"));
    assert!(kept.starts_with(gw.data_dir().canonicalize().expect("data dir")));

    // Midway: HQ holds part of the file. Kill it there.
    let part = files_dir(&hq).join(format!("{sha}.part"));
    let complete = files_dir(&hq).join(&sha);
    let midway = wait(Duration::from_secs(30), || {
        size_of(&part).is_some_and(|n| n > 0 && n < size)
    });
    assert!(midway, "no partial upload at HQ:\n{}", gw.log_text());
    hq.kill();
    let held = size_of(&part).expect("partial file survives the kill");
    assert!(held > 0 && held < size, "{held}");
    assert!(!complete.exists());
    eprintln!("killed branch-hq holding {held} of {size} bytes");

    // The box notices, keeps the recording pending, and resumes once HQ is back.
    let noticed = wait(SOON, || {
        plain_log(&gw)
            .iter()
            .any(|l| l.contains("recording upload") && l.contains("failed in transport"))
    });
    assert!(noticed, "{}", gw.log_text());
    hq.serve();
    let arrived = wait(Duration::from_secs(60), || complete.exists());
    assert!(arrived, "file never completed at HQ:\n{}", gw.log_text());

    // Byte for byte the box's file, under its own sha256.
    assert_eq!(
        std::fs::read(&complete).expect("HQ's file"),
        std::fs::read(&source).expect("source")
    );
    assert_eq!(sha256sum(&complete), sha);
    assert!(!part.exists());

    // Resumed where HQ stood, not from zero: the upload started at 0 once, and
    // resumed at the bytes HQ held when it was killed; no chunk went at offset 0
    // again.
    let log = plain_log(&gw);
    let resumes: Vec<u64> = log
        .iter()
        .filter(|l| l.contains("recording upload resumes at HQ's offset"))
        .filter_map(|l| offset_of(l))
        .collect();
    assert_eq!(resumes.first(), Some(&0), "{resumes:?}");
    assert!(
        resumes[1..].contains(&held),
        "resumes {resumes:?}, HQ held {held}"
    );
    assert!(resumes[1..].iter().all(|&o| o > 0), "{resumes:?}");
    let zero_chunks = log
        .iter()
        .filter(|l| l.contains("recording chunk sent") && offset_of(l) == Some(0))
        .count();
    assert_eq!(zero_chunks, 1, "the first chunk went once");
    assert!(gw.wait_log("recording uploaded", SOON), "{}", gw.log_text());

    // The box marked it uploaded; the status shows nothing pending.
    let uploaded: Option<i64> = gw
        .db()
        .query_row(
            "SELECT uploaded_at_ms FROM recordings WHERE sha256 = ?1",
            [&sha],
            |r| r.get(0),
        )
        .expect("row");
    assert!(uploaded.is_some());
    let status = sync_status(&gw);
    assert_eq!(status["files"]["pending"], 0, "{status}");
    assert_eq!(status["files"]["uploaded"], 1, "{status}");
    assert_eq!(status["file_policy"]["mode"], "all", "{status}");
}

#[test]
fn policy_none_uploads_nothing_and_on_demand_only_the_wanted_file() {
    let (hq, _creds, gw) = start("");
    // A new site's policy is `none`.
    let (status, site) = hq.admin("GET", &format!("/admin/v1/sites/{SITE}"), None);
    assert_eq!(status, 200, "{site}");

    let first = gw.dir.path().join("first.wav");
    write_wav(&first, 5);
    let a = recording_add(&gw, "call-a", &first);
    let sha_a = a["meta"]["sha256"].as_str().expect("sha").to_owned();

    // The metadata reaches HQ (the outbox drains) and HQ's answer says `none`.
    let mut status = Value::Null;
    let acked = wait(Duration::from_secs(20), || {
        status = sync_status(&gw);
        status["backlog"]["depth"] == 0
            && status["files"]["awaiting_metadata"] == 0
            && status["file_policy"]["mode"] == "none"
    });
    assert!(acked, "{status}\n{}", gw.log_text());
    // Give the uploader every chance: still nothing at HQ.
    std::thread::sleep(Duration::from_secs(3));
    let at_hq: Vec<_> = std::fs::read_dir(files_dir(&hq))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(at_hq.is_empty(), "{at_hq:?}");
    let status = sync_status(&gw);
    assert_eq!(status["files"]["pending"], 1, "{status}");
    assert_eq!(status["files"]["uploaded"], 0, "{status}");
    assert!(!gw.log_text().contains("recording chunk sent"));

    // On demand: an operator wants the first file only. The box learns the policy
    // with its next acknowledgement (a second recording's metadata).
    set_policy(&hq, json!({ "mode": "on_demand", "wanted": [sha_a] }));
    let second = gw.dir.path().join("second.wav");
    write_wav(&second, 4);
    let b = recording_add(&gw, "call-b", &second);
    let sha_b = b["meta"]["sha256"].as_str().expect("sha").to_owned();
    let complete_a = files_dir(&hq).join(&sha_a);
    assert!(
        wait(Duration::from_secs(30), || complete_a.exists()),
        "{}",
        gw.log_text()
    );
    assert_eq!(
        std::fs::read(&complete_a).expect("HQ's file"),
        std::fs::read(&first).expect("source")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!files_dir(&hq).join(&sha_b).exists());
    assert!(!files_dir(&hq).join(format!("{sha_b}.part")).exists());
    let status = sync_status(&gw);
    assert_eq!(status["files"]["pending"], 1, "{status}");
    assert_eq!(status["files"]["uploaded"], 1, "{status}");
    assert_eq!(status["file_policy"]["mode"], "on_demand", "{status}");

    // Registering the same file again is refused and changes nothing.
    let out = run(command(bin("branchd"))
        .arg("--config")
        .arg(gw.config_path())
        .args(["recording-add", "--call-id", "call-a-again"])
        .arg(&first));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already registered"), "{err}");
    let rows: i64 = gw
        .db()
        .query_row("SELECT COUNT(*) FROM recordings", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 2);
}
