//! Updates and the service manager, with the real `branchd`:
//!
//! - systemd's notify protocol: a real `branchd` started with `NOTIFY_SOCKET` and
//!   `WATCHDOG_USEC` (as systemd starts a `Type=notify` unit with `WatchdogSec=`) sends
//!   `READY=1` once its main loop runs, `WATCHDOG=1` periodically, `STOPPING=1` at
//!   SIGTERM; the socket here is a unix datagram socket the test binds, as systemd's is.
//! - rollouts at a real `branch-hq` (SQLite and PostgreSQL): a bundle built with the
//!   updater's API is staged only once its signer's key is pinned; another signer, a
//!   flipped byte, an unknown site, bad waves or a bad id are refused with nothing
//!   staged; advance / pause / cancel; the rollout survives a restart.
//!
//! Not here yet: a box downloading and installing the staged bundle (the box side of
//! updates through HQ is not written; see the README's "Updates through HQ").

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use branchline_board::profile::BoardProfile;
use branchline_board::sim::Simulator;
use line_proto::g711::Law;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{bin, command, wait, SOON};

/// Receives the next datagram within `timeout`.
fn recv(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[test]
fn branchd_speaks_sd_notify_ready_watchdog_stopping() {
    let profile = BoardProfile::builtin("sim").expect("profile");
    let simulator = Simulator::start(&profile, Law::Ulaw).expect("simulator");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("branchd.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {data:?}\n\n[board]\nprofile = \"sim\"\nuart = {tty:?}\n\n[telephony]\ncountry = \"US\"\n",
            data = dir.path().join("data"),
            tty = simulator.tty_path(),
        ),
    )
    .expect("config");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    // 600 ms: branchd must feed every 300 ms.
    let mut child = command(bin("branchd"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchd starts");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().expect("log");
            l.push_str(&line);
            l.push('\n');
        }
    });
    let log_text = || log.lock().expect("log").clone();

    // Start-up (argon2 of the installer password, the simulator's Hello) may be slow
    // under qemu-user: wait generously for the first datagram.
    let first = recv(&socket, SOON * 3)
        .unwrap_or_else(|| panic!("no notification from branchd:\n{}", log_text()));
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first notification is READY=1: {first:?}"
    );
    // READY is sent once the main loop runs, i.e. after the start-up log line (which
    // the reader thread may still be copying).
    assert!(
        wait(SOON, || log_text().contains("branchd ready")),
        "{}",
        log_text()
    );

    // Periodic WATCHDOG=1: several in a row, each well within the timeout (the bound
    // here is generous for slow CI; systemd would kill branchd at 600 ms).
    let started = Instant::now();
    let mut feeds = 0;
    while feeds < 4 {
        let msg = recv(&socket, SOON)
            .unwrap_or_else(|| panic!("watchdog not fed (after {feeds}):\n{}", log_text()));
        assert_eq!(msg, "WATCHDOG=1", "only watchdog feeds while running");
        feeds += 1;
    }
    // Four feeds at 300 ms intervals take at least ~900 ms: the feeds are paced by
    // the timer, not sent in a burst.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "feeds paced at half the timeout, got 4 in {:?}",
        started.elapsed()
    );

    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let mut stopping = false;
    let deadline = Instant::now() + SOON * 2;
    while Instant::now() < deadline {
        match recv(&socket, Duration::from_millis(500)) {
            Some(msg) if msg == "STOPPING=1" => {
                stopping = true;
                break;
            }
            Some(msg) => assert_eq!(msg, "WATCHDOG=1", "unexpected notification"),
            None => {}
        }
    }
    assert!(stopping, "no STOPPING=1 at SIGTERM:\n{}", log_text());
    let status = child.wait().expect("exit");
    assert!(status.success(), "clean exit: {status:?}\n{}", log_text());
}

#[test]
fn branchd_without_notify_socket_runs_and_a_bad_one_is_named() {
    let profile = BoardProfile::builtin("sim").expect("profile");
    let simulator = Simulator::start(&profile, Law::Ulaw).expect("simulator");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("branchd.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {data:?}\n\n[board]\nprofile = \"sim\"\nuart = {tty:?}\n\n[telephony]\ncountry = \"US\"\n",
            data = dir.path().join("data"),
            tty = simulator.tty_path(),
        ),
    )
    .expect("config");
    let mut child = command(bin("branchd"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", "relative/notify.sock")
        .env("WATCHDOG_USEC", "600000")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchd starts");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().expect("log");
            l.push_str(&line);
            l.push('\n');
        }
    });
    let log_text = || log.lock().expect("log").clone();
    assert!(
        wait(SOON * 3, || {
            let text = log_text();
            text.contains("bad systemd notify environment") && text.contains("relative/notify.sock")
        }),
        "the bad NOTIFY_SOCKET is named in the log:\n{}",
        log_text()
    );
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("exit");
    assert!(
        status.success(),
        "runs on without notifications: {status:?}\n{}",
        log_text()
    );
}

// --- Rollouts at a real branch-hq -------------------------------------------------

use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::keys;
use branchline_image::version::Version;

use crate::harness::{HqDb, HqServer};

/// A bundle for board `sim` at `version`, signed with the key in `key_dir`.
fn sim_bundle(key_dir: &std::path::Path, version: &str) -> Vec<u8> {
    let key = keys::read_signing_key(&key_dir.join(keys::PRIVATE_KEY_FILE)).expect("key");
    let mut files = branchline_image::overlay::generate("sim").expect("overlay");
    files.push(BundleFile {
        path: "usr/bin/branchd".into(),
        contents: format!("branchd {version}").repeat(40_000).into_bytes(),
        mode: 0o755,
    });
    let v: Version = version.parse().expect("version");
    bundle::build(
        &BuildSpec {
            board: "sim".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            version: v,
            min_version: v,
            build_time: 1_700_000_000,
            files,
        },
        &key,
    )
    .expect("build")
}

/// `POST /admin/v1/rollouts?{query}` with the bundle as the body.
pub(crate) fn stage(hq: &HqServer, query: &str, bundle: &[u8]) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(hq.tls_dir().join("admin-token")).expect("token");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(SOON * 3))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{}/admin/v1/rollouts?{query}", hq.admin))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .header("Content-Type", "application/octet-stream")
        .send(bundle)
        .expect("stage request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn rollouts_at_branch_hq(db: HqDb) {
    let mut hq = HqServer::new(db);
    hq.add_site("north");
    hq.add_box("north", "box-n1");
    hq.serve();
    let dir = tempfile::tempdir().expect("tmp");
    let signer = dir.path().join("signer");
    let stranger = dir.path().join("stranger");
    let public = keys::keygen(&signer).expect("keygen");
    keys::keygen(&stranger).expect("keygen");
    let good = sim_bundle(&signer, "1.3.0");

    // No pinned key yet: refused, nothing staged.
    let (status, body) = stage(&hq, "id=r1&sites=north", &good);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("no pinned update keys"),
        "{body}"
    );
    let keys_dir = hq.tls_dir().join("update-keys");
    std::fs::create_dir_all(&keys_dir).expect("keys dir");
    std::fs::copy(
        signer.join(keys::PUBLIC_KEY_FILE),
        keys_dir.join("release.pub"),
    )
    .expect("pin key");
    assert!(!public.as_bytes().is_empty());

    // Signed by another key, or one flipped byte in a file: refused, nothing staged.
    let (status, body) = stage(&hq, "id=r-bad&sites=north", &sim_bundle(&stranger, "1.3.0"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("signature"),
        "{body}"
    );
    let mut flipped = good.clone();
    let at = flipped.len() - 2048;
    flipped[at] ^= 0x20;
    let (status, body) = stage(&hq, "id=r-bad&sites=north", &flipped);
    assert_eq!(status, 400, "{body}");
    // Bad requests: unknown site, bad waves, bad id.
    for (query, words) in [
        ("id=r2&sites=south", "south"),
        ("id=r2&sites=north&waves=50,40,100", "rise strictly"),
        ("id=r2&sites=north&waves=10,50", "reach 100"),
        ("id=r%202&sites=north", "rollout id"),
    ] {
        let (status, body) = stage(&hq, query, &good);
        assert!(status == 400 || status == 404, "{query}: {status} {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(words),
            "{query}: {body}"
        );
    }
    let (status, list) = hq.admin("GET", "/admin/v1/rollouts", None);
    assert_eq!(
        (status, list.clone()),
        (200, serde_json::json!([])),
        "nothing staged"
    );

    // The good bundle: staged with the manifest's version and the bundle's sha256.
    let (status, r) = stage(&hq, "id=r1&sites=north&waves=50,100", &good);
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["version"], "1.3.0");
    assert_eq!(r["board"], "sim");
    assert_eq!(r["sha256"], bundle::sha256_hex(&good));
    assert_eq!(r["size"], good.len() as u64);
    assert_eq!(
        (r["current_wave"].as_u64(), r["state"].as_str()),
        (Some(0), Some("active"))
    );
    let stored = hq
        .dir
        .path()
        .join("files/bundles")
        .join(format!("{}.bundle", bundle::sha256_hex(&good)));
    assert_eq!(std::fs::read(&stored).expect("stored bundle"), good);
    let (status, body) = stage(&hq, "id=r1&sites=north", &good);
    assert_eq!(status, 409, "same id twice: {body}");

    // Operator commands.
    let (status, r) = hq.admin(
        "POST",
        "/admin/v1/rollouts/r1/advance",
        Some(serde_json::json!({})),
    );
    assert_eq!((status, r["current_wave"].as_u64()), (200, Some(1)), "{r}");
    let (status, r) = hq.admin(
        "POST",
        "/admin/v1/rollouts/r1/advance",
        Some(serde_json::json!({})),
    );
    assert_eq!(status, 400, "past the last wave: {r}");
    let (status, r) = hq.admin(
        "POST",
        "/admin/v1/rollouts/r1/pause",
        Some(serde_json::json!({})),
    );
    assert_eq!((status, r["state"].as_str()), (200, Some("paused")), "{r}");
    let (status, r) = hq.admin(
        "POST",
        "/admin/v1/rollouts/r1/jump",
        Some(serde_json::json!({})),
    );
    assert_eq!(status, 400, "{r}");
    let (status, r) = hq.admin(
        "POST",
        "/admin/v1/rollouts/r1/cancel",
        Some(serde_json::json!({})),
    );
    assert_eq!(
        (status, r["state"].as_str()),
        (200, Some("cancelled")),
        "{r}"
    );
    let (status, view) = hq.admin("GET", "/admin/v1/rollouts/r1", None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["rollout"]["state"], "cancelled");
    assert_eq!(view["outcomes"], serde_json::json!([]));
    let (status, _) = hq.admin("GET", "/admin/v1/rollouts/nope", None);
    assert_eq!(status, 404);

    // A restart keeps it (the tables are in HQ's database).
    hq.kill();
    hq.serve();
    let (status, list) = hq.admin("GET", "/admin/v1/rollouts", None);
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], "r1", "{list}");
}

#[test]
fn rollouts_staged_verified_and_commanded_at_branch_hq_sqlite() {
    rollouts_at_branch_hq(HqDb::Sqlite);
}

#[test]
fn rollouts_staged_verified_and_commanded_at_branch_hq_postgres() {
    rollouts_at_branch_hq(HqDb::postgres());
}
