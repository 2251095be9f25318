//! Provisioned settings and factory reset with the real `branchd` running its built-in
//! simulator (so its GPIO is the simulator's, pressed through the simulator console):
//!
//! 1. a bundle from the real `branch-prov` is applied from the "stick"; branchd
//!    restarts itself and runs with the provisioned country and port map;
//! 2. a short press of the reset button changes nothing;
//! 3. holding it 10 s wipes the store: the restarted box has no users but the
//!    installer, no provisioned settings, and runs on branchd.toml again;
//! 4. `branchd factory-reset` refuses without `--yes` and while branchd runs, and
//!    wipes once it is stopped.
//!
//! A restart is a re-exec of the same process; where that is impossible (exit status
//! 5) the test starts it again as systemd's `Restart=on-failure` would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{bin, command, strip_ansi, wait, SOON};

const SERIAL: &str = "BL2418-00042";
/// Bounds a 10 s hold plus the restart, generously (qemu-user is 5-20x slower).
const HOLD_BOUND: Duration = Duration::from_secs(180);

const PLAN: &str = r#"
[telephony]
country = "US"
outside_line_prefix = "9"

[[extensions]]
number = "101"
port = 1
name = "Reception"

[[extensions]]
number = "102"
port = 2
name = "Sales"

[[fxo_lines]]
port = 5
inbound = ["101"]
"#;

/// branchd supervised like systemd does: restarted on exit status 5.
struct Supervised {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Supervised {
    fn start(extra: &str) -> Supervised {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "[paths]\ndata_dir = {data:?}\n\n[board]\nprofile = \"sim\"\nsim_console = \"127.0.0.1:0\"\n\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"info,branchline_firmware=debug\"\n{PLAN}\n{extra}",
            data = dir.path().join("data"),
        );
        std::fs::write(dir.path().join("branchd.toml"), config).expect("config");
        let mut s = Supervised {
            dir,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        s.spawn();
        assert!(
            s.wait_log_count("branchd ready", 1, SOON * 3),
            "{}",
            s.log_text()
        );
        s
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("branchd.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let mut child = command(bin("branchd"))
            .arg("--config")
            .arg(self.config())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branchd starts");
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                    eprintln!("branchd: {line}");
                }
                sink.lock().expect("log").push(strip_ansi(&line));
            }
        });
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for `n` lines with `needle`, starting branchd again whenever it exits
    /// asking for a restart (what `Restart=on-failure` does with status 5).
    fn wait_log_count(&mut self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait(timeout, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        crate::harness::exit_asks_for_restart(status),
                        "branchd exited: {status}\n{}",
                        self.log_text()
                    );
                    self.child = None;
                    self.spawn();
                }
            }
            self.log_count(needle) >= n
        })
    }

    /// The latest value of `key=` in the last line containing `needle`.
    fn latest_field(&self, needle: &str, key: &str) -> Option<String> {
        let log = self.log.lock().expect("log");
        let line = log.iter().rev().find(|l| l.contains(needle))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
    }

    /// Sends one console command to the simulator of the latest start.
    fn console(&self, cmd: &str) -> String {
        let addr = self
            .latest_field("simulator console listening", "addr")
            .expect("console address logged");
        let mut stream = TcpStream::connect(&addr).expect("console connects");
        stream.set_read_timeout(Some(SOON)).expect("read timeout");
        stream
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("send");
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .expect("console reply");
        reply.trim().to_owned()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data().join("branchline.db")).expect("store")
    }

    fn strings(&self, sql: &str) -> Vec<String> {
        let db = self.db();
        let mut stmt = db.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut status = None;
        assert!(
            wait(SOON * 3, || {
                status = child.try_wait().expect("wait");
                status.is_some()
            }),
            "branchd did not stop\n{}",
            self.log_text()
        );
        status.expect("status")
    }

    /// Runs a `branchd` subcommand on the same config: (exit code, stdout + stderr).
    fn cli(&self, args: &[&str], stdin: &str) -> (Option<i32>, String) {
        let mut child = command(bin("branchd"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branchd cli");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("output");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn branch_prov(args: &[&std::ffi::OsStr]) {
    let out = command(bin("branch-prov"))
        .args(args)
        .output()
        .expect("branch-prov runs");
    assert!(
        out.status.success(),
        "branch-prov {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signed bundle for SERIAL: country FR, 201/202 on FXS 1/2, FXO line 1 rings 201.
fn make_bundle(work: &Path) -> (PathBuf, Vec<u8>) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../provisioning/examples/site.toml");
    let site = std::fs::read_to_string(example)
        .expect("example site")
        .replace("inbound = \"200\"", "inbound = \"201\"");
    assert!(site.contains("inbound = \"201\""), "example site changed");
    let site_path = work.join("site.toml");
    std::fs::write(&site_path, site).expect("site");
    let prefix = work.join("hq-prov");
    branch_prov(&[
        "key".as_ref(),
        "new".as_ref(),
        "--out".as_ref(),
        prefix.as_os_str(),
    ]);
    let out = work.join("bundle.blp");
    branch_prov(&[
        "bundle".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        site_path.as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    (
        prefix.with_extension("pub"),
        std::fs::read(out).expect("bundle"),
    )
}

#[test]
fn provisioned_settings_apply_and_reset_button_returns_the_box_to_factory() {
    let work = tempfile::tempdir().expect("tempdir");
    let usb = work.path().join("usb");
    std::fs::create_dir(&usb).expect("usb");
    let (key, bundle) = make_bundle(work.path());
    let mut gw = Supervised::start(&format!(
        "[provisioning]\nwatch = [{usb:?}]\nkeys = [{key:?}]\nserial = \"{SERIAL}\"\n"
    ));
    assert!(
        gw.log_count("no provisioned settings") >= 1,
        "{}",
        gw.log_text()
    );
    let (code, out) = gw.cli(
        &["user-add", "--username", "branch-admin", "--role", "admin"],
        "a-Good-passphrase-42\n",
    );
    assert_eq!(code, Some(0), "{out}");

    // 1. The stick: applied, then branchd restarts and runs with the bundle's
    //    settings (country FR, extension 201 on port 1).
    let tmp = usb.join("copy.tmp");
    std::fs::write(&tmp, &bundle).expect("bundle");
    std::fs::rename(&tmp, usb.join("branchline-provision.blp")).expect("rename");
    assert!(
        gw.wait_log_count("branchd ready", 2, SOON * 6),
        "no restart after the bundle\n{}",
        gw.log_text()
    );
    assert!(gw.log_count("provisioning bundle applied: branchd restarts") >= 1);
    for setting in ["country", "port_map"] {
        let needle = format!("setting=\"{setting}\"");
        assert!(
            gw.log_text()
                .lines()
                .any(|l| l.contains("provisioned setting applied") && l.contains(&needle)),
            "{setting} not applied\n{}",
            gw.log_text()
        );
    }
    assert_eq!(
        gw.latest_field("branchd ready", "country").as_deref(),
        Some("FR")
    );
    assert_eq!(
        gw.strings("SELECT number FROM extensions WHERE port = 1"),
        ["201"]
    );
    assert_eq!(
        gw.strings("SELECT username FROM users ORDER BY username"),
        ["branch-admin", "installer"]
    );

    // 2. A short press: logged, nothing else.
    assert_eq!(gw.console("button press"), "reset button down");
    assert!(
        gw.wait_log_count("reset button pressed", 1, SOON),
        "{}",
        gw.log_text()
    );
    assert_eq!(gw.console("button release"), "reset button up");
    assert!(
        gw.wait_log_count("released before 10 s: nothing done", 1, SOON),
        "{}",
        gw.log_text()
    );
    assert_eq!(
        gw.strings("SELECT username FROM users ORDER BY username"),
        ["branch-admin", "installer"]
    );

    // 3. Held 10 s: journal line, wipe, restart unprovisioned.
    let ready_before = gw.log_count("branchd ready");
    assert_eq!(gw.console("button press"), "reset button down");
    assert!(
        gw.wait_log_count("FACTORY RESET", 1, HOLD_BOUND),
        "no factory reset\n{}",
        gw.log_text()
    );
    assert!(
        gw.wait_log_count("branchd ready", ready_before + 1, HOLD_BOUND),
        "no restart after the reset\n{}",
        gw.log_text()
    );
    assert!(gw.log_count("factory reset done") >= 1, "{}", gw.log_text());
    assert_eq!(gw.strings("SELECT username FROM users"), ["installer"]);
    assert!(gw
        .strings("SELECT field FROM provisioned_settings")
        .is_empty());
    assert!(gw
        .strings("SELECT sha256 FROM provisioning_bundles")
        .is_empty());
    assert_eq!(
        gw.latest_field("branchd ready", "country").as_deref(),
        Some("US")
    );
    assert_eq!(
        gw.strings("SELECT number FROM extensions WHERE port = 1"),
        ["101"]
    );
    assert!(
        gw.data().join("installer-label.txt").exists(),
        "a new installer label"
    );
    // The stick still holds its result for this bundle: not applied again.
    assert_eq!(
        gw.log_count("provisioning bundle applied"),
        2,
        "{}",
        gw.log_text()
    );
}

#[test]
fn factory_reset_command_asks_for_yes_and_refuses_while_branchd_runs() {
    let mut gw = Supervised::start("");
    let (code, out) = gw.cli(
        &["user-add", "--username", "branch-admin", "--role", "admin"],
        "a-Good-passphrase-42\n",
    );
    assert_eq!(code, Some(0), "{out}");
    let users = "SELECT username FROM users ORDER BY username";
    let before = gw.strings(users);
    assert_eq!(before, ["branch-admin", "installer"]);

    let (code, out) = gw.cli(&["factory-reset"], "y\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--yes") && out.contains("NOT done"), "{out}");
    let (code, out) = gw.cli(&["factory-reset", "--yes"], "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("branchd is running"), "{out}");
    assert_eq!(gw.strings(users), before, "nothing changed");

    let status = gw.stop();
    assert!(status.success(), "{status}");
    let (code, out) = gw.cli(&["factory-reset", "--yes"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("factory reset done"), "{out}");
    assert!(!gw.data().join("branchline.db").exists());

    let ready = gw.log_count("branchd ready");
    gw.spawn();
    assert!(
        gw.wait_log_count("branchd ready", ready + 1, SOON * 3),
        "{}",
        gw.log_text()
    );
    assert_eq!(gw.strings(users), ["installer"]);
}
