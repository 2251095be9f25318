//! Starting `branchd` against a simulator, and reading its store.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use branchline_board::dsp::tone_ratio;
use branchline_board::profile::BoardProfile;
use branchline_board::sim::{SimHandle, Simulator};
use line_proto::g711::Law;
use line_proto::ToneSpec;
use tempfile::TempDir;

/// Generous bound for anything the daemon must do "at once" (CI machines are slow).
pub const SOON: Duration = Duration::from_secs(10);

/// Path of a workspace binary, built by `cargo test --workspace` (the firmware and
/// board packages have integration tests of their own, so cargo builds their binaries).
///
/// `BRANCHD_BIN_DIR` overrides the directory (the benchmarks point it at a release build).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("BRANCHD_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/tests-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A [`Command`] running the workspace binary at `path`.
///
/// When the tests themselves run under an emulator (`scripts/cross-build.sh` runs the
/// aarch64 and armv7 test binaries under qemu-user), the binaries they start are
/// foreign too and, without binfmt_misc, need the same emulator: the environment
/// variable `BRANCHLINE_TEST_RUNNER` then holds its command line, words separated by
/// spaces (`qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=...`), and is put
/// in front of `path`. Unset or empty: `path` runs directly.
pub fn command(path: impl AsRef<OsStr>) -> Command {
    let runner = std::env::var("BRANCHLINE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut cmd = Command::new(emulator);
            cmd.args(words).arg(path);
            cmd
        }
        None => Command::new(path),
    }
}

/// The standard test dial plan: 101-104 on FXS 1-4, PSTN lines on FXO 5 and 6.
pub const DIAL_PLAN: &str = r#"
[telephony]
country = "US"
outside_line_prefix = "9"
first_digit_timeout_ms = 3000
inter_digit_timeout_ms = 1500
ring_timeout_ms = 20000

[[extensions]]
number = "101"
port = 1
name = "Reception"

[[extensions]]
number = "102"
port = 2
name = "Sales"

[[extensions]]
number = "103"
port = 3
name = "Stock"
call_waiting = false

[[extensions]]
number = "104"
port = 4
name = "Office"

[[fxo_lines]]
port = 5
inbound = ["101", "102"]

[[fxo_lines]]
port = 6
inbound = ["103"]
"#;

/// A running `branchd` with its simulator and data directory.
pub struct Gateway {
    pub sim: SimHandle,
    _simulator: Simulator,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub dir: TempDir,
}

impl Gateway {
    /// Starts the simulator and `branchd` with the standard dial plan; waits until ready.
    pub fn start() -> Gateway {
        Self::start_with(DIAL_PLAN)
    }

    /// Like [`Gateway::start`] with another `[telephony]`/extension section.
    pub fn start_with(plan: &str) -> Gateway {
        Self::start_on("sim", plan)
    }

    /// Like [`Gateway::start_with`] on another simulated board profile.
    pub fn start_on(profile_name: &str, plan: &str) -> Gateway {
        let profile = BoardProfile::builtin(profile_name).expect("simulated profile");
        let simulator = Simulator::start(&profile, Law::Ulaw).expect("simulator starts");
        let sim = simulator.handle();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "[paths]\ndata_dir = {data:?}\n\n[board]\nprofile = {profile_name:?}\nuart = {tty:?}\n\n[web]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"info,branchline_firmware=debug\"\n{plan}",
            data = dir.path().join("data"),
            tty = simulator.tty_path(),
        );
        let config_path = dir.path().join("branchd.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = command(bin("branchd"))
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branchd starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                    eprintln!("branchd: {line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let b = Gateway {
            sim,
            _simulator: simulator,
            child: Some(child),
            log,
            dir,
        };
        assert!(
            b.wait_log("branchd ready", SOON),
            "branchd never got ready:\n{}",
            b.log_text()
        );
        b
    }

    /// Process id of the daemon (the benchmarks read its /proc entries).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Path of the daemon's SQLite store.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("branchline.db")
    }

    /// Path of the daemon's config file (for maintenance commands such as `user-add`).
    #[allow(dead_code)]
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("branchd.toml")
    }

    /// Path of the daemon's data directory.
    #[allow(dead_code)]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Address of the web API, from the daemon's `web api listening addr=...` log line.
    #[allow(dead_code)]
    pub fn web_addr(&self) -> std::net::SocketAddr {
        assert!(
            self.wait_log("web api listening", SOON),
            "web api never listened:\n{}",
            self.log_text()
        );
        let log = self.log.lock().expect("log lock");
        let line = log
            .iter()
            .find(|l| l.contains("web api listening"))
            .expect("log line");
        // Strip ANSI colour codes (`ESC [ ... m`) the human log format may carry.
        let mut plain = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|&c| c == 'm');
            } else {
                plain.push(c);
            }
        }
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {plain:?}"))
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Number of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until some log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log_count(needle, 1, timeout)
    }

    /// Waits until `n` log lines contain `needle`.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait(timeout, || self.log_count(needle) >= n)
    }

    /// Sends a signal and waits for the daemon to exit.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, signal).expect("signal delivered");
        let deadline = Instant::now() + SOON;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "branchd did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A read-only connection to the daemon's store.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open store")
    }

    /// The CDRs in the store, oldest first.
    pub fn cdrs(&self) -> Vec<CdrRow> {
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT call_id, direction, caller, caller_port, callee, callee_port, \
                 answered_at_ms IS NOT NULL, duration_ms, billable_ms, disposition, hangup_side \
                 FROM cdrs ORDER BY id",
            )
            .expect("prepare");
        st.query_map([], |r| {
            Ok(CdrRow {
                call_id: r.get(0)?,
                direction: r.get(1)?,
                caller: r.get(2)?,
                caller_port: r.get(3)?,
                callee: r.get(4)?,
                callee_port: r.get(5)?,
                answered: r.get(6)?,
                duration_ms: r.get(7)?,
                billable_ms: r.get(8)?,
                disposition: r.get(9)?,
                hangup_side: r.get(10)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// Waits for `n` stored CDRs and returns them.
    pub fn wait_cdrs(&self, n: usize) -> Vec<CdrRow> {
        assert!(
            self.wait_log_count("cdr stored", n, SOON),
            "expected {n} CDRs:\n{}",
            self.log_text()
        );
        self.cdrs()
    }

    /// The outbox payload of one record.
    pub fn outbox_payload(&self, call_id: &str) -> Option<serde_json::Value> {
        let db = self.db();
        db.query_row(
            "SELECT payload FROM outbox WHERE kind = 'cdr' AND record_key = ?1",
            [call_id],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .map(|s| serde_json::from_str(&s).expect("outbox payload is JSON"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One row of the `cdrs` table.
#[derive(Debug, Clone)]
pub struct CdrRow {
    pub call_id: String,
    pub direction: String,
    pub caller: String,
    pub caller_port: Option<u8>,
    pub callee: String,
    pub callee_port: Option<u8>,
    pub answered: bool,
    pub duration_ms: i64,
    pub billable_ms: i64,
    pub disposition: String,
    pub hangup_side: String,
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until port `port` plays a tone with these frequencies (0 = none).
pub fn wait_tone(sim: &SimHandle, port: u8, f1: u16, f2: u16) -> Option<ToneSpec> {
    let mut found = None;
    wait(SOON, || {
        found = sim
            .phone(port)
            .tone()
            .filter(|t| t.freq1_hz == f1 && t.freq2_hz == f2);
        found.is_some()
    });
    found
}

/// Collects `ms` of what `port` hears (FXS phone or PSTN far end) and returns it.
pub fn listen(sim: &SimHandle, port: u8, ms: u64, fxo: bool) -> Vec<i16> {
    let take = |sim: &SimHandle| {
        if fxo {
            sim.line(port).take_heard()
        } else {
            sim.phone(port).take_heard()
        }
    };
    take(sim);
    std::thread::sleep(Duration::from_millis(ms));
    take(sim)
}

/// True when `samples` (after the first 100 ms, to skip the bridge settling) carry
/// mostly `freq` Hz.
pub fn hears(samples: &[i16], freq: f64) -> bool {
    let skip = samples.len().min(800);
    let s = &samples[skip..];
    !s.is_empty() && tone_ratio(s, freq) > 0.6
}
