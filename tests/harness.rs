//! Starting `branchd` against a simulator, and reading its store.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
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

/// A [`std::process::Command`] running the workspace binary at `path`, under the cross test stage's
/// emulator when there is one ([`branchline_board::runner`]).
pub use branchline_board::runner::command;

/// The first of `count` consecutive ports on 127.0.0.1 that are free now, for UDP and,
/// with `tcp`, for TCP too (the lowest one even, for RTP/RTCP pairs).
///
/// The ports are free when this returns, and a peer (SIPp, Kamailio, baresip, HQ)
/// binds them a moment later: to keep other sockets out of that gap they come from
/// below the kernel's ephemeral range (where no `bind(0)` of a daemon or peer lands)
/// and above the RTP ranges of the daemons (10000-10999) and of baresip
/// (11000-19999, `data/baresip/config`), at a point that differs per test process
/// and per call, so tests running side by side do not pick the same ones.
pub fn free_ports(count: u16, tcp: bool) -> u16 {
    use std::net::{TcpListener, UdpSocket};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (20_000u32, ephemeral_low().clamp(20_100, 40_000));
    let span = (high - low) / 4;
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let count = count.clamp(1, 4);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + (seed.wrapping_add(n.wrapping_mul(7919)) % span) * 4;
        let port = u16::try_from(port).expect("below 40000");
        // Held together until all are checked, so none is counted twice.
        let udp: Vec<_> = (0..count)
            .map_while(|k| UdpSocket::bind(("127.0.0.1", port + k)).ok())
            .collect();
        let tcp_free =
            !tcp || (0..count).all(|k| TcpListener::bind(("127.0.0.1", port + k)).is_ok());
        if udp.len() == usize::from(count) && tcp_free {
            return port;
        }
    }
    panic!("no {count} free ports in {low}..{high}");
}

/// The first port of the kernel's ephemeral range (32768 unless configured).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
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

/// `[web] https` of the gateways the tests start: the tests of the API and the pages
/// speak plain HTTP, also to boxes that hold a device certificate; HTTPS after
/// enrollment is web_https.rs's, with [`Gateway::start_https`].
pub const WEB_PLAIN: &str = "off";

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
        Self::start_web(profile_name, plan, Some(WEB_PLAIN), "")
    }

    /// Like [`Gateway::start_with`] with no `[web]` section: the web page and API are
    /// not served (the web benchmark's baseline).
    #[allow(dead_code)]
    pub fn start_without_web(plan: &str) -> Gateway {
        Self::start_web("sim", plan, None, "")
    }

    /// Like [`Gateway::start_with`] with the charts sampled every second (`[web]
    /// chart_sample_seconds` and `call_sample_seconds`), so a test sees them fill.
    #[allow(dead_code)]
    pub fn start_charts(plan: &str) -> Gateway {
        Self::start_web(
            "sim",
            plan,
            Some(WEB_PLAIN),
            "chart_sample_seconds = 1\ncall_sample_seconds = 1\n",
        )
    }

    /// Like [`Gateway::start_with`] with the web page's default `[web] https = "auto"`:
    /// HTTPS once the box holds its device certificate (web_https.rs).
    pub fn start_https(plan: &str) -> Gateway {
        Self::start_web("sim", plan, Some("auto"), "")
    }

    /// `https`: `[web] https` (`None`: no `[web]` section); `web_extra`: more `[web]`
    /// lines.
    fn start_web(profile_name: &str, plan: &str, https: Option<&str>, web_extra: &str) -> Gateway {
        let profile = BoardProfile::builtin(profile_name).expect("simulated profile");
        let simulator = Simulator::start(&profile, Law::Ulaw).expect("simulator starts");
        let sim = simulator.handle();
        let dir = tempfile::tempdir().expect("temp dir");
        let web = https.map_or_else(String::new, |https| {
            format!("[web]\nlisten = \"127.0.0.1:0\"\nhttps = {https:?}\n{web_extra}\n")
        });
        let config = format!(
            "[paths]\ndata_dir = {data:?}\n\n[board]\nprofile = {profile_name:?}\nuart = {tty:?}\n\n{web}[log]\nlevel = \"info,branchline_firmware=debug\"\n{plan}",
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
    /// Waits up to `timeout` for the daemon to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let deadline = Instant::now() + timeout;
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

    /// Whether the daemon process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

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

// --- Sync with HQ: restarting the daemon, a real `branch-hq`, PostgreSQL, backlogs ---

/// Whether branchd's exit asks its supervisor for a restart, as systemd's
/// `Restart=on-failure` would give it: status 5 (it could not re-execute itself), or,
/// when the tests run under an emulator ([`branchline_board::runner`]), any exit of
/// the re-executed process: qemu-user does not pass its `-L`/`-E` options on to a
/// re-executed foreign binary, which then cannot start.
pub fn exit_asks_for_restart(status: ExitStatus) -> bool {
    let emulated =
        std::env::var(branchline_board::runner::RUNNER_VAR).is_ok_and(|r| !r.trim().is_empty());
    status.code() == Some(5) || (emulated && !status.success())
}

impl Gateway {
    /// After branchd announced a restart of itself (an applied provisioning bundle):
    /// waits until it is ready again, `ready_before` being the count of "branchd ready"
    /// lines before. Where it cannot re-execute itself (under qemu-user without
    /// binfmt_misc) it exits with status 5 for systemd's `Restart=on-failure`; this
    /// then starts it again the same way.
    pub fn follow_self_restart(&mut self, ready_before: usize) {
        let deadline = Instant::now() + SOON * 2;
        loop {
            if self.log_count("branchd ready") > ready_before {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"));
            if let Some(status) = exited {
                assert!(
                    exit_asks_for_restart(status),
                    "branchd exited instead of restarting: {status}\n{}",
                    self.log_text()
                );
                self.child = None;
                self.restart();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "branchd did not restart:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `branchd` again after [`Gateway::stop_with`], on the same simulator,
    /// config and data directory; its log goes on in the same [`Gateway::log_text`].
    /// Waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        let ready_before = self.log_count("branchd ready");
        let web_before = self.log_count("web api listening");
        let mut child = command(bin("branchd"))
            .arg("--config")
            .arg(self.dir.path().join("branchd.toml"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branchd starts again");
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                    eprintln!("branchd: {line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        self.child = Some(child);
        assert!(
            self.wait_log_count("branchd ready", ready_before + 1, SOON),
            "branchd never got ready again:\n{}",
            self.log_text()
        );
        assert!(
            web_before == 0 || self.wait_log_count("web api listening", web_before + 1, SOON),
            "the web api never listened again:\n{}",
            self.log_text()
        );
    }

    /// Address of the web API of the daemon's latest start (after [`Gateway::restart`]
    /// the port differs from the first start's, which [`Gateway::web_addr`] reads).
    pub fn latest_web_addr(&self) -> std::net::SocketAddr {
        assert!(
            self.wait_log("web api listening", SOON),
            "web api never listened:\n{}",
            self.log_text()
        );
        let log = self.log.lock().expect("log lock");
        let line = strip_ansi(
            log.iter()
                .rev()
                .find(|l| l.contains("web api listening"))
                .expect("log line"),
        );
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
    }
}

/// Writes `n` CDRs and their outbox rows (kind `cdr`, key = call id, payload = the CDR
/// as JSON) straight into a stopped box's store, the way the daemon's store writer
/// does (`firmware/src/store/writer.rs`, schema `firmware/migrations/0001_init.sql`),
/// in one transaction: a backlog of calls made while HQ was unreachable, without
/// making each call on the simulator. Call ids are `{prefix}-{i}`; times, numbers and
/// dispositions vary with `i`.
pub fn fill_cdr_backlog(db_path: &Path, prefix: &str, n: usize) {
    let mut db = rusqlite::Connection::open(db_path).expect("open store for the backlog");
    db.busy_timeout(SOON).expect("busy timeout");
    let tx = db.transaction().expect("begin");
    {
        let mut cdr = tx
            .prepare(
                "INSERT INTO cdrs (call_id, direction, caller, caller_port, callee, callee_port,
                                   started_at_ms, answered_at_ms, ended_at_ms, duration_ms,
                                   billable_ms, disposition, hangup_side)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .expect("prepare cdr insert");
        let mut outbox = tx
            .prepare(
                "INSERT INTO outbox (kind, record_key, payload, created_at_ms)
                 VALUES ('cdr', ?1, ?2, ?3)",
            )
            .expect("prepare outbox insert");
        let base = 1_790_000_000_000_i64;
        for i in 0..n {
            let k = i64::try_from(i).expect("count fits");
            let call_id = format!("{prefix}-{i}");
            let (direction, caller, caller_port, callee, callee_port) = match i % 3 {
                0 => (
                    "internal",
                    "101".to_owned(),
                    Some(1u8),
                    "102".to_owned(),
                    Some(2u8),
                ),
                1 => (
                    "inbound",
                    format!("55501{:05}", k % 100_000),
                    None,
                    "101".to_owned(),
                    Some(1),
                ),
                _ => (
                    "outbound",
                    "103".to_owned(),
                    Some(3),
                    format!("9555{:07}", k % 10_000_000),
                    Some(5),
                ),
            };
            let started = base + k * 1_000;
            let answered = (i % 4 != 3).then_some(started + 3_000 + k % 7_000);
            let ended = started + 20_000 + k % 50_000;
            let (disposition, hangup_side) = match (answered, i % 2) {
                (Some(_), 0) => ("answered", "caller"),
                (Some(_), _) => ("answered", "callee"),
                (None, _) => ("no_answer", "caller"),
            };
            let payload = serde_json::json!({
                "call_id": call_id,
                "direction": direction,
                "caller": caller,
                "caller_port": caller_port,
                "callee": callee,
                "callee_port": callee_port,
                "started_at_ms": started,
                "answered_at_ms": answered,
                "ended_at_ms": ended,
                "disposition": disposition,
                "hangup_side": hangup_side,
            });
            cdr.execute(rusqlite::params![
                call_id,
                direction,
                caller,
                caller_port,
                callee,
                callee_port,
                started,
                answered,
                ended,
                ended - started,
                answered.map_or(0, |a| ended - a),
                disposition,
                hangup_side,
            ])
            .expect("insert cdr");
            outbox
                .execute(rusqlite::params![call_id, payload.to_string(), ended])
                .expect("insert outbox row");
        }
    }
    tx.commit().expect("commit the backlog");
}

/// Connection string of the PostgreSQL server the sync tests use (trust auth).
pub const PG_SERVER: &str = "host=127.0.0.1 port=5432 user=postgres";

/// Runs `f` with a client connected to database `dbname` of [`PG_SERVER`], on a
/// throwaway runtime. Panics (the test fails, it does not skip) when PostgreSQL is
/// unreachable.
pub fn with_pg<T>(
    dbname: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!("{PG_SERVER} dbname={dbname}"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at 127.0.0.1:5432 (database {dbname}) is required: {e}")
        });
        tokio::spawn(conn);
        f(&client)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL ({dbname}): {e}"))
    })
}

/// A fresh PostgreSQL database `{prefix}_<random>`, dropped (with its connections) when
/// this guard drops, also when the test fails.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    /// Creates the database (connecting to the `postgres` database).
    pub fn create(prefix: &str) -> PgDatabase {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let name = format!("{prefix}_{:016x}", h.finish());
        let sql = format!("CREATE DATABASE {name}");
        with_pg("postgres", async |c| c.batch_execute(&sql).await);
        PgDatabase { name }
    }

    /// The database's name.
    #[allow(dead_code)] // the sync benchmark
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection string (for `branch-hq --postgres`).
    pub fn url(&self) -> String {
        format!("{PG_SERVER} dbname={}", self.name)
    }

    /// One `bigint` from a query (e.g. `SELECT count(*) FROM cdrs`).
    #[allow(dead_code)] // the sync benchmark
    pub fn query_i64(&self, sql: &str) -> i64 {
        with_pg(&self.name, async |c| {
            c.query_one(sql, &[]).await?.try_get(0)
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::panic::catch_unwind(|| {
            with_pg("postgres", async |c| c.batch_execute(&sql).await);
        });
        if dropped.is_err() {
            eprintln!("could not drop PostgreSQL database {}", self.name);
        }
    }
}

/// The store of a `branch-hq` under test.
#[derive(Debug)]
pub enum HqDb {
    /// A SQLite file in the server's temp dir.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres(PgDatabase),
}

impl HqDb {
    /// A fresh PostgreSQL database `bl_sync_<random>`.
    pub fn postgres() -> HqDb {
        HqDb::Postgres(PgDatabase::create("bl_sync"))
    }
}

/// A box's credentials as `branch-hq box add` wrote them.
#[derive(Debug, Clone)]
pub struct BoxCredentials {
    /// The box id (its certificate's CN).
    pub box_id: String,
    /// HQ's CA certificate.
    pub ca: PathBuf,
    /// The box's certificate.
    pub cert: PathBuf,
    /// The box's private key.
    pub key: PathBuf,
}

/// A real `branch-hq` process: `ca init` at creation, `site add` and `box add` on
/// demand, `serve` started, killed and restarted by the test. A restart listens on
/// the same sync port, so boxes keep their URL.
#[derive(Debug)]
pub struct HqServer {
    child: Option<Child>,
    /// Its directory: `tls/`, `hq.db` (SQLite), `files/`, `boxes/<box>/`.
    pub dir: TempDir,
    db: HqDb,
    /// The sync listener (mutual TLS) of the running (or last) server.
    pub sync: std::net::SocketAddr,
    /// The admin listener of the running (or last) server.
    pub admin: std::net::SocketAddr,
    token: String,
    log: Arc<Mutex<Vec<String>>>,
    /// An `hq.toml` passed as `--config` to `serve` (e.g. `provisioning_keys`).
    pub serve_config: Option<PathBuf>,
}

impl HqServer {
    /// A new HQ with its device CA (`branch-hq ca init`); not serving yet.
    pub fn new(db: HqDb) -> HqServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let hq = HqServer {
            child: None,
            db,
            sync: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            serve_config: None,
            dir,
        };
        hq.run_cli(&["ca", "init", "--dir"], &[hq.tls_dir().as_os_str()]);
        hq
    }

    /// The TLS directory (CA, server certificate, admin token).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// `--db FILE` or `--postgres URL`.
    fn store_args(&self) -> Vec<std::ffi::OsString> {
        match &self.db {
            HqDb::Sqlite => vec!["--db".into(), self.dir.path().join("hq.db").into()],
            HqDb::Postgres(pg) => vec!["--postgres".into(), pg.url().into()],
        }
    }

    /// The PostgreSQL database, if that is the store.
    #[allow(dead_code)] // the sync benchmark
    pub fn postgres(&self) -> Option<&PgDatabase> {
        match &self.db {
            HqDb::Postgres(pg) => Some(pg),
            HqDb::Sqlite => None,
        }
    }

    fn run_cli(&self, args: &[&str], more: &[&OsStr]) {
        let out = command(bin("branch-hq"))
            .args(args)
            .args(more)
            .env("NO_COLOR", "1")
            .output()
            .expect("branch-hq runs");
        assert!(
            out.status.success(),
            "branch-hq {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `branch-hq <args> <more> <store args>`, however it ends.
    pub fn cli(&self, args: &[&str], more: &[&str]) -> std::process::Output {
        command(bin("branch-hq"))
            .args(args)
            .args(more)
            .args(self.store_args())
            .env("NO_COLOR", "1")
            .output()
            .expect("branch-hq runs")
    }

    /// `branch-hq site add`.
    pub fn add_site(&self, site: &str) {
        let store = self.store_args();
        let mut more: Vec<&OsStr> = store.iter().map(|s| s.as_os_str()).collect();
        more.extend([OsStr::new("--site"), OsStr::new(site)]);
        self.run_cli(&["site", "add"], &more);
    }

    /// `branch-hq box add`: registers `box_id` for `site` and writes its credentials.
    pub fn add_box(&self, site: &str, box_id: &str) -> BoxCredentials {
        let out = self.dir.path().join("boxes").join(box_id);
        let store = self.store_args();
        let tls = self.tls_dir();
        let mut more: Vec<&OsStr> = store.iter().map(|s| s.as_os_str()).collect();
        more.extend([
            OsStr::new("--site"),
            OsStr::new(site),
            OsStr::new("--box"),
            OsStr::new(box_id),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--tls-dir"),
            tls.as_os_str(),
        ]);
        self.run_cli(&["box", "add"], &more);
        BoxCredentials {
            box_id: box_id.to_owned(),
            ca: out.join("ca.pem"),
            cert: out.join("box.pem"),
            key: out.join("box.key"),
        }
    }

    /// Starts `branch-hq serve` (again, on the same sync port after the first time)
    /// and waits until it listens.
    pub fn serve(&mut self) {
        assert!(self.child.is_none(), "branch-hq is already running");
        let listen = format!("127.0.0.1:{}", self.sync.port());
        let deadline = Instant::now() + SOON * 3;
        loop {
            match self.try_serve(&listen) {
                Ok(()) => return,
                // The old socket may linger a moment after a kill: try again.
                Err(why) if Instant::now() < deadline => {
                    eprintln!("branch-hq did not start ({why}); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("branch-hq never listened: {why}\n{}", self.log_text()),
            }
        }
    }

    fn try_serve(&mut self, listen: &str) -> Result<(), String> {
        let listening_before = self.log_count("branch-hq listening");
        let config: Vec<&OsStr> = match &self.serve_config {
            Some(path) => vec![OsStr::new("--config"), path.as_os_str()],
            None => Vec::new(),
        };
        let mut child = command(bin("branch-hq"))
            .arg("serve")
            .args(config)
            .args(self.store_args())
            .args([
                "--listen",
                listen,
                "--admin-listen",
                "127.0.0.1:0",
                "--tls-dir",
            ])
            .arg(self.tls_dir())
            .arg("--files-dir")
            .arg(self.dir.path().join("files"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branch-hq serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                    eprintln!("branch-hq: {line}");
                }
                sink.lock().expect("log lock").push(strip_ansi(&line));
            }
        });
        let mut exited = None;
        let up = wait(SOON * 3, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            self.log_count("branch-hq listening") > listening_before
        });
        if let Some(status) = exited {
            return Err(format!("exited with {status}"));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no `branch-hq listening` line".to_owned());
        }
        let line = {
            let log = self.log.lock().expect("log lock");
            log.iter()
                .rev()
                .find(|l| l.contains("branch-hq listening"))
                .cloned()
                .expect("listening line")
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|a| a.trim_matches('"').parse::<std::net::SocketAddr>().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        self.sync = field("sync=");
        self.admin = field("admin=");
        self.token = std::fs::read_to_string(self.tls_dir().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("branch-hq running");
        child.kill().expect("SIGKILL branch-hq");
        child.wait().expect("reap branch-hq");
    }

    /// Process id of the running server.
    #[allow(dead_code)] // the sync benchmark
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the server logged so far (every run), without colour codes.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The `[hq]` section of a box's `branchd.toml` for `creds`, reaching HQ at
    /// `https://{addr}` (the sync listener, or a proxy in front of it), with short
    /// intervals for tests and `extra` lines appended (e.g. `batch_records = 2000`).
    pub fn box_config(
        &self,
        creds: &BoxCredentials,
        addr: std::net::SocketAddr,
        extra: &str,
    ) -> String {
        format!(
            "\n[hq]\nurl = \"https://{addr}\"\nca_cert = {:?}\nclient_cert = {:?}\n\
             client_key = {:?}\nbox_id = {:?}\nlong_poll_ms = 2000\n\
             upload_interval_ms = 1000\nprobe_interval_ms = 1000\n{extra}\n",
            creds.ca, creds.cert, creds.key, creds.box_id,
        )
    }

    /// One admin API request (`GET`, `PUT`, `POST`, `DELETE`); answers status and body
    /// (JSON, or the text as a JSON string).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SOON * 3))
            .build()
            .into();
        let url = format!("http://{}{path}", self.admin);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b),
            ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
            (m, b) => panic!("unsupported admin request {m} with body {b:?}"),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("admin body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Every CDR HQ holds for `site` (admin API, all pages, in arrival order).
    pub fn cdrs(&self, site: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (status, page) = self.admin(
                "GET",
                &format!("/admin/v1/cdrs?site={site}&limit=1000{after}"),
                None,
            );
            assert_eq!(status, 200, "{page}");
            out.extend(page["cdrs"].as_array().cloned().unwrap_or_default());
            match page["next"].as_i64() {
                Some(next) => after = format!("&after={next}"),
                None => return out,
            }
        }
    }
}

impl Drop for HqServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("branch-hq log:\n{}", self.log_text());
        }
    }
}

/// `line` without ANSI colour codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
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
}
