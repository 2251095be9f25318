//! Updates and the service manager, with the real `branchd`:
//!
//! - systemd's notify protocol: a real `branchd` started with `NOTIFY_SOCKET` and
//!   `WATCHDOG_USEC` (as systemd starts a `Type=notify` unit with `WatchdogSec=`) sends
//!   `READY=1` once its main loop runs, `WATCHDOG=1` periodically, `STOPPING=1` at
//!   SIGTERM; the socket here is a unix datagram socket the test binds, as systemd's is.

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
