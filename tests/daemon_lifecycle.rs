//! Start-up, shutdown and crash behaviour of the daemon process.

use nix::sys::signal::Signal;

use crate::harness::{wait, wait_tone, Gateway, SOON};

#[test]
fn sigterm_during_a_call_ends_it_cleanly_with_a_cdr() {
    let mut gw = Gateway::start();
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()));
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()));
    // A third phone is ringing too, so shutdown must stop the ringing.
    let (c, d) = (gw.sim.phone(3), gw.sim.phone(4));
    c.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    c.dial("104");
    assert!(wait(SOON, || d.is_ringing()));

    let status = gw.stop_with(Signal::SIGTERM);
    assert!(
        status.success(),
        "clean exit, got {status:?}:\n{}",
        gw.log_text()
    );
    assert!(!d.is_ringing(), "ringing stopped before exit");
    let cdrs = gw.cdrs();
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    assert!(cdrs.iter().all(|c| c.hangup_side == "system"));
    assert!(cdrs.iter().any(|c| c.disposition == "answered"));
    assert!(cdrs.iter().any(|c| c.disposition == "no_answer"));
    assert!(gw.log_text().contains("branchd stopped"));
}

#[test]
fn an_acknowledged_cdr_survives_kill_9() {
    let mut gw = Gateway::start();
    let a = gw.sim.phone(1);
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("19");
    // "cdr stored" is logged only after the commit returned (synchronous = FULL).
    gw.wait_cdrs(1);
    let status = gw.stop_with(Signal::SIGKILL);
    assert!(!status.success());
    let cdrs = gw.cdrs();
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0].disposition, "unallocated");
    assert!(gw.outbox_payload(&cdrs[0].call_id).is_some());
    let mode: String = gw
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal", "the store is in WAL mode");
}

/// The README's main command path: the `sim` profile with no UART override starts the
/// built-in simulator inside branchd; `--log-format json` gives one JSON object a line.
#[test]
fn builtin_simulator_with_json_logs_starts_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("branchd.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {:?}\n\n[board]\nprofile = \"sim\"\n\n[[extensions]]\nnumber = \"101\"\nport = 1\n",
            dir.path().join("data")
        ),
    )
    .expect("config");
    let mut child = crate::harness::command(crate::harness::bin("branchd"))
        .args(["--log-format", "json", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchd starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let ready = loop {
        let Some(Ok(line)) = lines.next() else {
            break false;
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        let msg = v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push(msg.clone());
        if msg == "branchd ready" {
            assert_eq!(v["fields"]["model"], "Simulator", "{line}");
            break true;
        }
    };
    assert!(ready, "never ready: {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains("started the simulated line controller")),
        "{seen:?}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("signal");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("branchd stopped")),
        "{rest:?}"
    );
}

/// The board's LEDs as the built-in simulator's console reports them (`leds`): the
/// SIP LED, sampled every 100 ms for `samples` samples.
fn sip_led_samples(console: std::net::SocketAddr, samples: usize) -> Vec<bool> {
    led_samples(console, samples, "sip=on")
}

/// Whether `lit` (e.g. `wan=on`) is in the console's `leds` line, every 100 ms for
/// `samples` samples.
fn led_samples(console: std::net::SocketAddr, samples: usize, lit: &str) -> Vec<bool> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(console).expect("simulator console");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    for _ in 0..samples {
        writer.write_all(b"leds\n").expect("console write");
        let line = loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).expect("console read") > 0,
                "console closed"
            );
            if line.contains("sip=") {
                break line;
            }
        };
        out.push(line.contains(lit));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    out
}

/// Starts `branchd` with the built-in simulator and its console on a free port, with
/// `extra` appended to the config; returns the child, the console address and the
/// temporary directory (kept alive by the caller).
fn start_builtin(extra: &str) -> (std::process::Child, std::net::SocketAddr, tempfile::TempDir) {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let console_port = crate::harness::free_ports(1, true);
    let console: std::net::SocketAddr = ([127, 0, 0, 1], console_port).into();
    let config = dir.path().join("branchd.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = {:?}\n\n[board]\nprofile = \"sim\"\nsim_console = \"{console}\"\n\n[[extensions]]\nnumber = \"101\"\nport = 1\n\n{extra}",
            dir.path().join("data")
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("branchd.log")).expect("log");
    let child = crate::harness::command(crate::harness::bin("branchd"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("branchd starts");
    let log_path = dir.path().join("branchd.log");
    assert!(
        wait(SOON, || std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("branchd ready"))),
        "never ready: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    (child, console, dir)
}

#[test]
fn the_sip_led_is_on_when_sip_is_ready_and_blinks_while_the_trunk_is_not_registered() {
    // SIP phones only: the LED is steadily on.
    let (mut child, console, _dir) =
        start_builtin("[sip]\nudp = \"127.0.0.1:0\"\ndomain = \"led.branch.test\"\n");
    let samples = sip_led_samples(console, 15);
    assert!(samples.iter().all(|&on| on), "steady on: {samples:?}");
    let _ = child.kill();
    let _ = child.wait();

    // A trunk that registers, at an address where nothing answers: the LED blinks
    // (0.5 s on, 0.5 s off) while the box keeps trying.
    let dead = crate::harness::free_ports(1, false);
    let (mut child, console, _dir) = start_builtin(&format!(
        "[sip]\nudp = \"127.0.0.1:0\"\ndomain = \"led.branch.test\"\n\n[sip.trunk]\nservers = [\"127.0.0.1:{dead}\"]\ndomain = \"carrier.test\"\nusername = \"branch-led\"\npassword = \"led-trunk-secret-1\"\n"
    ));
    let samples = sip_led_samples(console, 25);
    assert!(
        samples.iter().any(|&on| on) && samples.iter().any(|&on| !on),
        "blinking: {samples:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_wan_led_follows_the_trunk_probe_on_while_it_answers_and_off_when_it_goes() {
    // The WAN monitor probes the trunk over TCP every 500 ms; nothing else is watched.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let trunk = listener.local_addr().expect("addr");
    let (mut child, console, _dir) = start_builtin(&format!(
        "[wan]\ntrunk = \"{trunk}\"\ntrunk_transport = \"tcp\"\nprobe_interval_ms = 500\n"
    ));
    let accepting = std::thread::spawn(move || {
        // Accept (and drop) the probes' connections until the listener is closed.
        listener.set_nonblocking(true).expect("nonblocking");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(12);
        while std::time::Instant::now() < until {
            let _ = listener.accept();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    assert!(
        wait(std::time::Duration::from_secs(10), || led_samples(
            console, 1, "wan=on"
        )[0]),
        "the WAN LED never lit while the trunk answered"
    );
    // Steady on, not blinking.
    let on = led_samples(console, 12, "wan=on");
    assert!(on.iter().all(|&lit| lit), "steady on: {on:?}");
    // The trunk goes away: the LED goes out.
    accepting.join().expect("acceptor");
    assert!(
        wait(std::time::Duration::from_secs(20), || !led_samples(
            console, 1, "wan=on"
        )[0]),
        "the WAN LED stayed lit after the trunk went"
    );
    let _ = child.kill();
    let _ = child.wait();
}
