//! Sync with HQ, end to end: the real `branch-hq` (SQLite) and the real `branchd` on
//! the simulator, over mutual TLS on loopback.
//!
//! - CDRs of real analog calls reach HQ exactly once (HQ's admin API lists each call id
//!   once, and only the box's).
//! - A user created at HQ through the admin API logs in on the box's `/api/v1` within
//!   seconds.
//! - `GET /api/v1/sync` and `branchd sync-status` report the running sync;
//!   `POST /api/v1/sync/force` is accepted.
//! - A dial route created through HQ's admin API reaches the box and sends a call to
//!   an FXO line instead of the registered SIP trunk; with HQ unreachable (the WAN
//!   offline) outside calls no route covers go to FXO too, though the trunk is still
//!   registered.
//! - Roles, extensions, queues and blacklist entries put through HQ's admin API land
//!   in their site's feed only, reach the box, follow an edit and go with a delete.
//! - `branch-hq serve --dir` alone starts an HQ a box syncs with.
//! - A campaign attempt's result and progress and a customer made on the box reach
//!   HQ's admin API (issue 10); the lead's `+` number is dialled in the site's
//!   international form.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{bin, command, wait, wait_tone, Gateway, DIAL_PLAN, SOON};

/// An argon2id hash of [`HQ_PASSWORD`] (made once with `branchd user-add` and read back
/// from its store): HQ distributes hashes, never passwords.
const HQ_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$MsRT4gpcLNalxQLGUkjIJQ$hzjThicVCnbkQdqrMntCn//+xTR6vftHqcFFpds1V0c";
const HQ_PASSWORD: &str = "Hq-created-passphrase-77";

/// A running `branch-hq` with its temp dir.
struct Hq {
    child: Option<Child>,
    dir: tempfile::TempDir,
    sync: SocketAddr,
    admin: SocketAddr,
    token: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Started as `branch-hq serve --dir` (the one command) rather than with
    /// `--db`, `--tls-dir` and `--files-dir`.
    one_dir: bool,
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text of a log line without ANSI colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

impl Hq {
    /// `ca init`, `site add`, `box add`, then `serve` on loopback ports picked by the OS.
    fn start(site: &str, box_id: &str) -> Hq {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = bin("branch-hq");
        let d = dir.path();
        run_ok(
            command(&exe)
                .args(["ca", "init", "--dir"])
                .arg(d.join("tls")),
            "branch-hq ca init",
        );
        run_ok(
            command(&exe)
                .args(["site", "add", "--db"])
                .arg(d.join("hq.db"))
                .args(["--site", site]),
            "branch-hq site add",
        );
        run_ok(
            command(&exe)
                .args(["box", "add", "--db"])
                .arg(d.join("hq.db"))
                .args(["--site", site, "--box", box_id, "--out"])
                .arg(d.join("box"))
                .arg("--tls-dir")
                .arg(d.join("tls")),
            "branch-hq box add",
        );
        let token = std::fs::read_to_string(d.join("tls").join("admin-token"))
            .expect("admin token")
            .trim()
            .to_owned();
        let mut hq = Hq {
            child: None,
            dir,
            sync: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            token,
            log: Arc::new(Mutex::new(Vec::new())),
            one_dir: false,
        };
        hq.serve("127.0.0.1:0", "127.0.0.1:0");
        hq
    }

    /// The one command: `branch-hq serve --dir` on an empty directory (it makes the
    /// database, CA, server certificate and admin token), then, with it running, the
    /// site and the box added with `--dir` too.
    fn start_one_command(site: &str, box_id: &str) -> Hq {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hq = Hq {
            child: None,
            dir,
            sync: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            one_dir: true,
        };
        hq.serve("127.0.0.1:0", "127.0.0.1:0");
        let d = hq.dir.path().to_owned();
        let token_file = d.join("tls").join("admin-token");
        let logged = hq.log.lock().expect("log lock").iter().any(|l| {
            l.contains("admin API token") && l.contains(&token_file.display().to_string())
        });
        assert!(
            logged,
            "serve does not say where the admin token is:\n{}",
            hq.log.lock().expect("log lock").join("\n")
        );
        hq.token = std::fs::read_to_string(&token_file)
            .expect("admin token")
            .trim()
            .to_owned();
        assert!(d.join("hq.sqlite").exists() && d.join("tls").join("ca.pem").exists());
        let exe = bin("branch-hq");
        run_ok(
            command(&exe)
                .args(["site", "add", "--dir"])
                .arg(&d)
                .args(["--site", site]),
            "branch-hq site add --dir",
        );
        run_ok(
            command(&exe)
                .args(["box", "add", "--dir"])
                .arg(&d)
                .args(["--site", site, "--box", box_id, "--out"])
                .arg(d.join("box")),
            "branch-hq box add --dir",
        );
        hq
    }

    /// Starts `branch-hq serve` on these listen addresses (port 0: any) and waits for
    /// its `branch-hq listening` line.
    fn serve(&mut self, sync: &str, admin: &str) {
        assert!(self.child.is_none(), "already serving");
        let d = self.dir.path();
        let mut cmd = command(bin("branch-hq"));
        if self.one_dir {
            cmd.args(["serve", "--dir"]).arg(d);
        } else {
            cmd.args(["serve", "--db"])
                .arg(d.join("hq.db"))
                .arg("--tls-dir")
                .arg(d.join("tls"))
                .arg("--files-dir")
                .arg(d.join("files"));
        }
        let mut child = cmd
            .args(["--listen", sync, "--admin-listen", admin])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("branch-hq serve starts");
        self.log.lock().expect("log lock").clear();
        let sink = Arc::clone(&self.log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                    eprintln!("branch-hq: {line}");
                }
                sink.lock().expect("log lock").push(plain(&line));
            }
        });
        self.child = Some(child);
        let mut addrs = None;
        let found = wait(SOON, || {
            let log = self.log.lock().expect("log lock");
            addrs = log
                .iter()
                .find(|l| l.contains("branch-hq listening"))
                .and_then(|l| {
                    let field = |name: &str| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .and_then(|a| a.trim_matches('"').parse::<SocketAddr>().ok())
                    };
                    Some((field("sync=")?, field("admin=")?))
                });
            addrs.is_some()
        });
        assert!(
            found,
            "branch-hq never listened:\n{}",
            self.log.lock().expect("log lock").join("\n")
        );
        (self.sync, self.admin) = addrs.expect("addresses");
    }

    /// Stops the server (SIGKILL: HQ's SQLite store is transactional).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn box_file(&self, name: &str) -> String {
        self.dir.path().join("box").join(name).display().to_string()
    }

    /// The `[hq]` section pointing a box at this HQ.
    fn config_section(&self, box_id: &str) -> String {
        format!(
            "\n[hq]\nurl = \"https://{}\"\nca_cert = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n\
             box_id = {box_id:?}\nlong_poll_ms = 2000\nupload_interval_ms = 1000\n\
             probe_interval_ms = 1000\n",
            self.sync,
            self.box_file("ca.pem"),
            self.box_file("box.pem"),
            self.box_file("box.key"),
        )
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SOON))
            .build()
            .into();
        let url = format!("http://{}{path}", self.admin);
        let auth = format!("Bearer {}", self.token);
        let mut resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b),
            ("DELETE", None) => agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
            (m, _) => panic!("unsupported {m}"),
        }
        .expect("admin request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Every CDR HQ holds for `site`, following the pages.
    fn cdrs(&self, site: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (status, page) = self.admin(
                "GET",
                &format!("/admin/v1/cdrs?site={site}&limit=100{after}"),
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

    fn put_user(&self, site: &str, username: &str, roles: &[&str]) {
        self.put_user_named(site, username, &format!("{username} (HQ)"), roles);
    }

    fn put_user_named(&self, site: &str, username: &str, display_name: &str, roles: &[&str]) {
        let (status, body) = self.admin(
            "PUT",
            &format!("/admin/v1/sites/{site}/user/{username}"),
            Some(json!({
                "username": username,
                "display_name": display_name,
                "password_hash": HQ_HASH,
                "pin_hash": null,
                "agent_id": null,
                "extension": null,
                "enabled": true,
                "must_change_password": false,
                "roles": roles,
                "groups": [],
            })),
        );
        assert_eq!(status, 200, "PUT user {username}: {body}");
    }
}

impl Drop for Hq {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "branch-hq log:\n{}",
                self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
            );
        }
    }
}

/// A session on the box's API.
struct BoxApi {
    agent: ureq::Agent,
    base: String,
    cookie: String,
    csrf: String,
}

impl BoxApi {
    fn try_login(addr: SocketAddr, username: &str, password: &str) -> Option<BoxApi> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SOON))
            .build()
            .into();
        let base = format!("http://{addr}");
        let mut resp = agent
            .post(&format!("{base}/api/v1/session"))
            .send_json(json!({ "username": username, "password": password }))
            .expect("login request");
        if resp.status() != 200 {
            return None;
        }
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let text = resp.body_mut().read_to_string().expect("body");
        let body: Value = serde_json::from_str(&text).expect("login json");
        Some(BoxApi {
            agent,
            base,
            cookie,
            csrf: body["csrf_token"].as_str().expect("csrf").to_owned(),
        })
    }

    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        self.call_with(method, path, None)
    }

    fn call_with(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Cookie", &self.cookie).call(),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .send_empty(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .send_json(b),
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .call(),
            (m, _) => panic!("unsupported {m}"),
        }
        .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Extension 101 calls 102, 102 answers, they hang up.
pub(crate) fn answered_call(gw: &Gateway) {
    answered_call_to(gw, "102");
}

/// FXS 1 calls `number` (FXS 2's extension), FXS 2 answers, they hang up.
pub(crate) fn answered_call_to(gw: &Gateway, number: &str) {
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial(number);
    assert!(
        wait(SOON, || b.is_ringing()),
        "{number} rings:\n{}",
        gw.log_text()
    );
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "ringback stops");
    std::thread::sleep(Duration::from_millis(200));
    a.on_hook();
    wait_tone(&gw.sim, 2, 480, 620).expect("102 hears busy");
    b.on_hook();
}

/// Extension 101 calls 104, which does not answer; 101 gives up.
fn unanswered_call(gw: &Gateway) {
    let a = gw.sim.phone(1);
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("104");
    assert!(wait(SOON, || gw.sim.phone(4).is_ringing()), "104 rings");
    a.on_hook();
    assert!(wait(SOON, || !gw.sim.phone(4).is_ringing()), "104 stops");
}

#[test]
fn cdrs_reach_hq_once_and_an_hq_user_logs_in_on_the_box() {
    let hq = Hq::start("branch-1", "box-1");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-1")));
    assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());

    answered_call(&gw);
    unanswered_call(&gw);
    answered_call(&gw);
    let box_cdrs = gw.wait_cdrs(3);
    assert_eq!(box_cdrs.len(), 3);

    // Every CDR at HQ exactly once, with the box's content.
    let mut at_hq = Vec::new();
    let arrived = wait(Duration::from_secs(20), || {
        at_hq = hq.cdrs("branch-1");
        at_hq.len() >= 3
    });
    assert!(arrived, "HQ holds {} CDRs:\n{}", at_hq.len(), gw.log_text());
    // Wait a little longer: nothing more (no duplicates) may arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let at_hq = hq.cdrs("branch-1");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in &at_hq {
        *seen
            .entry(c["call_id"].as_str().expect("call_id").to_owned())
            .or_default() += 1;
        assert_eq!(c["box"], "box-1");
    }
    assert!(seen.values().all(|&n| n == 1), "duplicates at HQ: {seen:?}");
    let box_ids: Vec<&str> = box_cdrs.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut ids = box_ids.clone();
            ids.sort_unstable();
            ids
        },
        "HQ's CDRs are the box's, one for one"
    );
    for c in &box_cdrs {
        let h = at_hq
            .iter()
            .find(|h| h["call_id"] == c.call_id.as_str())
            .expect("at HQ");
        assert_eq!(h["caller"], c.caller.as_str());
        assert_eq!(h["callee"], c.callee.as_str());
        assert_eq!(h["direction"], c.direction.as_str());
        assert_eq!(h["disposition"], c.disposition.as_str());
    }

    // A user created at HQ logs in on the box within seconds.
    let addr = gw.web_addr();
    hq.put_user("branch-1", "tina", &["technician"]);
    let created = Instant::now();
    let mut api = None;
    let in_time = wait(Duration::from_secs(10), || {
        api = BoxApi::try_login(addr, "tina", HQ_PASSWORD);
        api.is_some()
    });
    assert!(
        in_time,
        "tina could not log in on the box:\n{}",
        gw.log_text()
    );
    let took = created.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let api = api.expect("session");

    // The status: running, nothing left to send, the cursor moved, HQ online.
    let mut status = Value::Null;
    let settled = wait(SOON, || {
        let (code, body) = api.call("GET", "/api/v1/sync");
        assert_eq!(code, 200, "{body}");
        status = body;
        status["backlog"]["depth"] == 0
    });
    assert!(settled, "backlog never drained: {status}");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["hq"]["box_id"], "box-1");
    assert!(
        status["cursor"].as_i64().is_some_and(|c| c >= 1),
        "{status}"
    );
    assert!(status["last_up_ok_ms"].is_i64(), "{status}");
    // HQ answers: online, or degraded when its round trip is slow (under qemu-user
    // the emulated TLS handshake alone can exceed the impairment threshold).
    assert!(
        matches!(
            status["wan"]["hq"]["state"].as_str(),
            Some("online" | "degraded")
        ),
        "{status}"
    );
    assert!(status["wan"]["hq"]["last_ok_ms"].is_i64(), "{status}");
    assert_eq!(status["wan"]["trunk"]["state"], "not configured");
    let epoch = status["epoch"].as_str().expect("epoch").to_owned();

    let (code, body) = api.call("POST", "/api/v1/sync/force");
    assert_eq!(code, 202, "{body}");

    // The same status from the store, by the CLI, while the daemon runs.
    let out = command(bin("branchd"))
        .arg("--config")
        .arg(gw.config_path())
        .arg("sync-status")
        .output()
        .expect("branchd sync-status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("sync-status JSON");
    assert_eq!(cli["source"], "store");
    assert_eq!(cli["epoch"], epoch.as_str());
    assert_eq!(cli["hq"]["url"], format!("https://{}", hq.sync));
    assert!(cli["cursor"].as_i64() >= status["cursor"].as_i64());
    assert!(
        matches!(
            cli["wan"]["hq"]["state"].as_str(),
            Some("online" | "degraded")
        ),
        "{cli}"
    );
    assert_no_sync_errors(&gw);
}

/// Nothing went wrong on the way: no refused page, no uncommitted acknowledgement.
fn assert_no_sync_errors(gw: &Gateway) {
    let log = gw.log_text();
    assert!(
        !log.contains("sync change feed not applied") && !log.contains("not committed"),
        "{log}"
    );
}

/// A loopback port free a moment ago (for a server that must come back on the same
/// port after a restart).
fn free_port() -> u16 {
    crate::harness::free_ports(1, true)
}

/// Logs `username` in on the box once HQ's row has arrived.
fn login_when_synced(gw: &Gateway, username: &str) -> BoxApi {
    let addr = gw.web_addr();
    let mut api = None;
    let ok = wait(SOON, || {
        api = BoxApi::try_login(addr, username, HQ_PASSWORD);
        api.is_some()
    });
    assert!(ok, "{username} never logged in:\n{}", gw.log_text());
    api.expect("session")
}

#[test]
fn an_offline_edit_that_conflicts_takes_hqs_row_and_is_audited() {
    let mut hq = Hq::start("branch-2", "box-2");
    // HQ must come back where the box expects it: a fixed sync port.
    let port = free_port();
    hq.stop();
    hq.serve(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    hq.put_user("branch-2", "ada", &["admin"]);
    hq.put_user("branch-2", "uma", &["agent"]);
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-2")));
    let api = login_when_synced(&gw, "ada");
    let (code, users) = api.call("GET", "/api/v1/users?limit=100");
    assert_eq!(code, 200, "{users}");
    let uma = users["items"]
        .as_array()
        .and_then(|items| items.iter().find(|u| u["username"] == "uma"))
        .cloned()
        .expect("uma on the box");
    let base_revision = uma["revision"].as_i64().expect("revision");
    assert!(base_revision > 0, "{uma}");

    // HQ goes away; the WAN monitor notices.
    hq.stop();
    let offline = wait(SOON, || {
        api.call("GET", "/api/v1/sync").1["wan"]["hq"]["state"] == "offline"
    });
    assert!(offline, "{}", api.call("GET", "/api/v1/sync").1);

    // An edit on the box while HQ is unreachable: applied locally, queued for HQ.
    let path = format!("/api/v1/users/{}", uma["id"]);
    let (code, body) = api.call_with(
        "PATCH",
        &path,
        Some(json!({ "display_name": "Uma (edited on the box)" })),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["display_name"], "Uma (edited on the box)");
    let status = api.call("GET", "/api/v1/sync").1;
    assert!(
        status["backlog"]["depth"].as_i64().is_some_and(|d| d >= 1),
        "{status}"
    );

    // Meanwhile an operator changes uma at HQ (an instance the box cannot reach).
    hq.serve("127.0.0.1:0", "127.0.0.1:0");
    hq.put_user_named("branch-2", "uma", "Uma (edited at HQ)", &["agent"]);
    hq.stop();

    // HQ comes back; a forced sync skips the backoff.
    hq.serve(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let (code, body) = api.call("POST", "/api/v1/sync/force");
    assert_eq!(code, 202, "{body}");

    // HQ wins: the box shows HQ's row and audited the conflict.
    let mut conflict = None;
    let resolved = wait(Duration::from_secs(20), || {
        let (_, audit) = api.call("GET", "/api/v1/audit?after_id=0&limit=500");
        conflict = audit["items"]
            .as_array()
            .or_else(|| audit.as_array())
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["action"] == "sync_conflict" && r["target"] == "uma")
                    .cloned()
            });
        conflict.is_some() && api.call("GET", &path).1["display_name"] == "Uma (edited at HQ)"
    });
    assert!(resolved, "conflict not resolved:\n{}", gw.log_text());
    let conflict = conflict.expect("audit row");
    let detail: Value = match &conflict["detail"] {
        Value::String(s) => serde_json::from_str(s).expect("detail json"),
        other => other.clone(),
    };
    assert_eq!(detail["base_revision"], base_revision, "{conflict}");
    assert_eq!(detail["key"], "uma");
    assert!(
        detail["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{conflict}"
    );
    // HQ kept its row, and the box has nothing left to send.
    let (_, at_hq) = hq.admin("GET", "/admin/v1/sites/branch-2/user/uma", None);
    assert_eq!(
        at_hq["row"]["display_name"], "Uma (edited at HQ)",
        "{at_hq}"
    );
    let drained = wait(SOON, || {
        api.call("GET", "/api/v1/sync").1["backlog"]["depth"] == 0
    });
    assert!(drained, "{}", api.call("GET", "/api/v1/sync").1);
    assert_no_sync_errors(&gw);
}

#[test]
fn consecutive_offline_edits_of_a_row_made_on_the_box_all_reach_hq() {
    let mut hq = Hq::start("branch-4", "box-4");
    let port = free_port();
    hq.stop();
    hq.serve(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    hq.put_user("branch-4", "ada", &["admin"]);
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-4/group/sales",
        Some(json!({ "name": "sales", "description": "outbound team" })),
    );
    assert_eq!(status, 200, "{body}");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-4")));
    let api = login_when_synced(&gw, "ada");
    let has_sales = wait(SOON, || {
        api.call("GET", "/api/v1/groups")
            .1
            .to_string()
            .contains("\"sales\"")
    });
    assert!(has_sales, "{}", api.call("GET", "/api/v1/groups").1);

    // HQ goes away; the WAN monitor notices.
    hq.stop();
    let offline = wait(SOON, || {
        api.call("GET", "/api/v1/sync").1["wan"]["hq"]["state"] == "offline"
    });
    assert!(offline, "{}", api.call("GET", "/api/v1/sync").1);

    // Offline: a user made on the box, then edited twice (renamed, put in a group).
    // All three edits go up with base revision 0: none has come back from HQ yet.
    let (code, otto) = api.call_with(
        "POST",
        "/api/v1/users",
        Some(json!({
            "username": "otto",
            "display_name": "Otto",
            "password": "otto-Offline-pass-2026",
            "enabled": true,
            "roles": ["agent"],
        })),
    );
    assert_eq!(code, 201, "{otto}");
    let path = format!("/api/v1/users/{}", otto["id"]);
    let (code, body) = api.call_with(
        "PATCH",
        &path,
        Some(json!({ "display_name": "Otto Offline" })),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = api.call_with("PATCH", &path, Some(json!({ "groups": ["sales"] })));
    assert_eq!(code, 200, "{body}");

    // HQ comes back; a forced sync skips the backoff.
    hq.serve(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let (code, body) = api.call("POST", "/api/v1/sync/force");
    assert_eq!(code, 202, "{body}");

    // HQ holds the last state the box made, and the box keeps it (its own edits came
    // back through the feed, not as conflicts).
    let mut at_hq = Value::Null;
    let arrived = wait(Duration::from_secs(20), || {
        at_hq = hq
            .admin("GET", "/admin/v1/sites/branch-4/user/otto", None)
            .1;
        at_hq["row"]["display_name"] == "Otto Offline"
            && at_hq["row"]["groups"].to_string().contains("\"sales\"")
    });
    assert!(arrived, "{at_hq}\n{}", gw.log_text());
    let drained = wait(SOON, || {
        let status = api.call("GET", "/api/v1/sync").1;
        status["backlog"]["depth"] == 0 && status["cursor"].as_i64() >= at_hq["revision"].as_i64()
    });
    assert!(drained, "{}", api.call("GET", "/api/v1/sync").1);
    let (_, on_box) = api.call("GET", &path);
    assert_eq!(on_box["display_name"], "Otto Offline", "{on_box}");
    assert!(
        on_box["groups"].to_string().contains("\"sales\""),
        "{on_box}"
    );
    let (_, audit) = api.call("GET", "/api/v1/audit?after_id=0&limit=500");
    let conflicts: Vec<&Value> = audit["items"]
        .as_array()
        .or_else(|| audit.as_array())
        .map(|rows| {
            rows.iter()
                .filter(|r| r["action"] == "sync_conflict")
                .collect()
        })
        .unwrap_or_default();
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_no_sync_errors(&gw);
}

#[test]
fn an_hq_contact_becomes_a_read_only_customer_on_the_box() {
    let hq = Hq::start("branch-1", "box-1");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-1")));
    assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());
    hq.put_user("branch-1", "hana", &["admin"]);
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-1/contact/crm-42",
        Some(json!({
            "id": "crm-42",
            "name": "Hanse Logistik",
            "numbers": ["+4940123456", "0401234567"],
        })),
    );
    assert_eq!(status, 200, "PUT contact: {body}");
    let api = login_when_synced(&gw, "hana");
    let mut list = Value::Null;
    let arrived = wait(SOON, || {
        let (code, body) = api.call("GET", "/api/v1/customers?number=040-123-4567");
        assert_eq!(code, 200, "{body}");
        list = body;
        list["total"] == 1
    });
    assert!(
        arrived,
        "the contact never arrived: {list}\n{}",
        gw.log_text()
    );
    let c = &list["items"][0];
    assert_eq!(c["source"], "hq", "{c}");
    assert_eq!(c["hq_id"], "crm-42", "{c}");
    assert_eq!(c["name"], "Hanse Logistik", "{c}");
    // An admin holds numbers.view: unmasked.
    assert_eq!(c["numbers"], json!(["+4940123456", "0401234567"]), "{c}");
    let id = c["id"].as_i64().expect("id");
    let (code, body) = api.call("DELETE", &format!("/api/v1/customers/{id}"));
    assert_eq!(code, 409, "HQ's contact is read-only on the box: {body}");
    assert_no_sync_errors(&gw);
}

/// Issue 10 end to end: a customer made on the box and a campaign lead with an E.164
/// number. The agent's click dials the lead through the outside line in the site's
/// international form (a US site: `011` for `+49...`); the result she records, the
/// campaign's progress and the customer reach the real `branch-hq` through the
/// outbox and show in its admin API.
#[test]
fn campaign_results_and_customers_reach_hq_and_plus_numbers_dial_out() {
    let hq = Hq::start("branch-3", "box-3");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-3")));
    hq.put_user("branch-3", "ada", &["admin"]);
    drop(login_when_synced(&gw, "ada"));
    let addr = gw.web_addr();
    let admin = crate::api_client::Api::login(addr, "ada", HQ_PASSWORD).0;
    let (status, body) = admin.post(
        "/api/v1/customers",
        json!({ "name": "Berlin Bakery", "numbers": ["+49 30 7654321"] }),
    );
    assert_eq!(status, 201, "{body}");
    let customer = body["id"].as_i64().expect("customer id");
    // The agent and her group are HQ's (users and groups are mastered there).
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-3/group/sales",
        Some(json!({ "name": "sales", "description": "outbound" })),
    );
    assert_eq!(status, 200, "PUT group: {body}");
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-3/user/alice",
        Some(json!({
            "username": "alice", "display_name": "Alice", "password_hash": HQ_HASH,
            "pin_hash": null, "agent_id": "100", "extension": "102", "enabled": true,
            "must_change_password": false, "roles": ["agent"],
            "groups": [{ "group": "sales", "admin": false }],
        })),
    );
    assert_eq!(status, 200, "PUT user: {body}");
    drop(login_when_synced(&gw, "alice"));
    let (status, groups) = admin.get("/api/v1/groups");
    assert_eq!(status, 200, "{groups}");
    let group = groups["items"]
        .as_array()
        .or_else(|| groups.as_array())
        .and_then(|g| g.iter().find(|g| g["name"] == "sales"))
        .and_then(|g| g["id"].as_i64())
        .unwrap_or_else(|| panic!("group sales on the box: {groups}"));
    let (status, body) = admin.post("/api/v1/lead-lists", json!({ "name": "Export" }));
    assert_eq!(status, 201, "{body}");
    let list = body["id"].as_i64().expect("list");
    let (status, body) = admin.post_csv(
        &format!("/api/v1/lead-lists/{list}/import"),
        "name,numbers\nAnn,+4930123456\n",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.post(
        "/api/v1/campaigns",
        json!({ "name": "Spring", "list_id": list, "group_id": group, "mode": "preview",
                "hours_start": "00:00", "hours_end": "24:00",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "max_attempts": 3, "busy_retry_s": 60,
                "no_answer_retry_s": 60, "failed_retry_s": 60, "ring_timeout_s": 30 }),
    );
    assert_eq!(status, 201, "{body}");
    let campaign = body["id"].as_i64().expect("campaign");
    let (status, body) = admin.post(&format!("/api/v1/campaigns/{campaign}/start"), json!({}));
    assert_eq!(status, 200, "{body}");

    let alice = crate::api_client::Api::login(addr, "alice", HQ_PASSWORD).0;
    let (status, body) = alice.post(&format!("/api/v1/campaigns/{campaign}/next"), json!({}));
    assert_eq!(status, 200, "{body}");
    let lead = body["leads"][0]["id"].as_i64().expect("lead");
    let (status, body) = alice.post(
        &format!("/api/v1/campaigns/{campaign}/leads/{lead}/dial"),
        json!({}),
    );
    assert_eq!(status, 202, "{body}");
    let attempt = body["attempt"].as_i64().expect("attempt");
    let phone = gw.sim.phone(2);
    assert!(wait(SOON, || phone.is_ringing()), "alice's phone rings");
    phone.off_hook();
    let (l5, l6) = (gw.sim.line(5), gw.sim.line(6));
    let want = "0114930123456";
    assert!(
        wait(SOON, || l5.dialed() == want || l6.dialed() == want),
        "+4930123456 is dialled internationally from a US site ({:?}, {:?})",
        l5.dialed(),
        l6.dialed()
    );
    let line = if l5.dialed() == want { l5 } else { l6 };
    line.answer();
    std::thread::sleep(Duration::from_millis(300));
    phone.on_hook();
    // The outcome is the call's (answered: its CDR closes the attempt); the agent
    // adds disposition and notes.
    let closed = || -> bool {
        gw.db()
            .query_row(
                "SELECT outcome FROM lead_attempts WHERE id = ?1",
                [attempt],
                |r| r.get::<_, Option<String>>(0),
            )
            .ok()
            .flatten()
            .as_deref()
            == Some("answered")
    };
    assert!(
        wait(SOON, closed),
        "the call's CDR closes the attempt as answered"
    );
    let (status, body) = alice.put(
        &format!("/api/v1/campaign-attempts/{attempt}"),
        json!({ "disposition": 2, "notes": "sends the order form" }),
    );
    assert_eq!(status, 200, "{body}");

    // HQ lists the attempt with its result, the campaign's progress and the customer.
    let mut result = Value::Null;
    let arrived = wait(Duration::from_secs(20), || {
        let (status, page) = hq.admin("GET", "/admin/v1/campaign-results?site=branch-3", None);
        assert_eq!(status, 200, "{page}");
        result = page["campaign_results"][0].clone();
        result["disposition"] == 2
    });
    assert!(
        arrived,
        "the result never reached HQ: {result}\n{}",
        gw.log_text()
    );
    assert_eq!(result["box"], "box-3", "{result}");
    assert_eq!(result["campaign"], "Spring", "{result}");
    assert_eq!(result["attempt_id"], attempt, "{result}");
    assert_eq!(result["number"], "+4930123456", "{result}");
    assert_eq!(result["agent"], "alice", "{result}");
    assert_eq!(result["outcome"], "answered", "{result}");
    assert_eq!(result["notes"], "sends the order form", "{result}");
    assert_eq!(result["lead_result"], "answered", "{result}");
    assert!(
        result["call_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{result}"
    );
    let (_, progress) = hq.admin("GET", "/admin/v1/campaign-progress?site=branch-3", None);
    let p = &progress["campaign_progress"][0];
    assert_eq!(
        (p["campaign"].as_str(), p["leads"].as_i64()),
        (Some("Spring"), Some(1)),
        "{progress}"
    );
    assert_eq!(p["done"], json!({ "answered": 1 }), "{progress}");
    let (_, customers) = hq.admin("GET", "/admin/v1/customers?number=%2B49307654321", None);
    let c = &customers["customers"][0];
    assert_eq!(c["name"], "Berlin Bakery", "{customers}");
    assert_eq!(c["id"], customer, "{customers}");
    assert_eq!(c["site"], "branch-3", "{customers}");
    assert_no_sync_errors(&gw);
}

/// Log lines of the daemon containing `needle` once their colour codes are gone
/// (structured fields are coloured).
fn plain_log_count(gw: &Gateway, needle: &str) -> usize {
    gw.log_text()
        .lines()
        .filter(|l| crate::harness::strip_ansi(l).contains(needle))
        .count()
}

/// Waits until `n` log lines contain `needle` (see [`plain_log_count`]).
fn wait_plain_log(gw: &Gateway, needle: &str, n: usize, timeout: Duration) -> bool {
    wait(timeout, || plain_log_count(gw, needle) >= n)
}

/// FXS 4 dials `digits`; an FXO line is seized and dials `number`, or the trunk's
/// far end (a SIPp UAS that answers) takes the call. Hangs up and returns the call's
/// CDR (the `n`th).
fn outside_call(gw: &Gateway, digits: &str, number: &str, n: usize) -> crate::harness::CdrRow {
    let trunk_answers = gw.log_count("outgoing sip call answered");
    let phone = gw.sim.phone(4);
    let line = gw.sim.line(5);
    phone.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    phone.dial(digits);
    let taken = wait(SOON, || {
        (line.is_seized() && line.dialed() == number)
            || gw.log_count("outgoing sip call answered") > trunk_answers
    });
    assert!(
        taken,
        "neither an FXO line nor the trunk took {digits}:\n{}",
        gw.log_text()
    );
    let on_line = line.is_seized();
    if on_line {
        line.answer();
    }
    std::thread::sleep(Duration::from_millis(200));
    phone.on_hook();
    if on_line {
        line.hang_up();
    }
    gw.wait_cdrs(n).into_iter().nth(n - 1).expect("cdr")
}

#[test]
fn hqs_dial_route_and_the_wan_monitor_decide_between_the_trunk_and_fxo() {
    use crate::sip_calls::{free_port, uas, wait_child, wait_sipp};
    let trunk_port = free_port();
    let mut registrar = uas("uas_register_ok.xml", trunk_port)
        .spawn()
        .expect("sipp registrar starts");
    std::thread::sleep(Duration::from_millis(300));
    let mut hq = Hq::start("branch-5", "box-5");
    let gw = Gateway::start_with(&format!(
        r#"{DIAL_PLAN}
[media]
local_ip = "127.0.0.1"

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"

[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
expires = 3600
keepalive_s = 0
{}"#,
        hq.config_section("box-5")
    ));
    assert!(
        gw.wait_log("trunk registered", SOON),
        "no registration:\n{}",
        gw.log_text()
    );
    assert!(wait_child(&mut registrar), "the registrar scenario failed");
    // Registered and HQ reachable: the trunk is usable.
    assert!(
        wait_plain_log(&gw, "trunk=Usable", 1, Duration::from_secs(20)),
        "the trunk never became usable:\n{}",
        gw.log_text()
    );

    // No dial route yet: the built-in rule, the trunk first.
    let far_end = uas("uas_answer.xml", trunk_port)
        .spawn()
        .expect("sipp far end");
    std::thread::sleep(Duration::from_millis(300));
    let cdr = outside_call(&gw, "90301234#", "0301234", 1);
    wait_sipp(far_end, "trunk far end", &gw);
    assert_eq!((cdr.callee.as_str(), cdr.callee_port), ("0301234", None));
    assert!(!gw.sim.line(5).is_seized() && !gw.sim.line(6).is_seized());

    // HQ's operator routes national numbers ("0...") over the PSTN.
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-5/dial_route/national-pstn",
        Some(json!({
            "name": "national-pstn", "prefix": "0", "via": ["fxo"], "needs_permission": null
        })),
    );
    assert_eq!(status, 200, "PUT dial_route: {body}");
    assert!(
        wait_plain_log(&gw, "dial routes reloaded routes=1", 1, SOON),
        "the route never reached call control:\n{}",
        gw.log_text()
    );
    // The same number now goes to an FXO line, with the trunk still usable (a far
    // end waits on the trunk: had the call gone there, it would have answered).
    let far_end = uas("uas_answer.xml", trunk_port)
        .spawn()
        .expect("sipp far end");
    std::thread::sleep(Duration::from_millis(300));
    let cdr = outside_call(&gw, "90301234#", "0301234", 2);
    assert_eq!((cdr.callee.as_str(), cdr.callee_port), ("0301234", Some(5)));
    // A number the route does not cover still takes the trunk.
    let cdr = outside_call(&gw, "95550100#", "5550100", 3);
    wait_sipp(far_end, "trunk far end", &gw);
    assert_eq!((cdr.callee.as_str(), cdr.callee_port), ("5550100", None));

    // HQ goes away: the WAN monitor says offline, and outside calls leave the trunk
    // although its registration still holds.
    let unusable = plain_log_count(&gw, "trunk=Unusable");
    hq.stop();
    assert!(
        wait_plain_log(&gw, "trunk=Unusable", unusable + 1, Duration::from_secs(30)),
        "the WAN going offline did not take the trunk out:\n{}",
        gw.log_text()
    );
    let mut far_end = uas("uas_answer.xml", trunk_port)
        .spawn()
        .expect("sipp far end");
    std::thread::sleep(Duration::from_millis(300));
    let cdr = outside_call(&gw, "95550100#", "5550100", 4);
    assert_eq!((cdr.callee.as_str(), cdr.callee_port), ("5550100", Some(5)));
    assert!(
        far_end.try_wait().expect("sipp state").is_none(),
        "the trunk's far end got a call"
    );
    let _ = far_end.kill();
    let _ = far_end.wait();
}

/// HQ's route `00` needs the calling permission `international`; FXS 4 holds it
/// (`permissions` in the box's config), FXS 3 does not. A default route open to all
/// sits under it: FXS 3's international call is refused (congestion, CDR
/// `route_not_permitted`), not passed on to the default route; FXS 4's goes out.
#[test]
fn hq_dial_route_permission_is_enforced() {
    let hq = Hq::start("branch-9", "box-9");
    let plan = DIAL_PLAN.replace(
        "name = \"Office\"\n",
        "name = \"Office\"\npermissions = [\"international\"]\n",
    );
    assert_ne!(plan, DIAL_PLAN, "FXS 4 got its permission");
    let gw = Gateway::start_with(&format!("{plan}{}", hq.config_section("box-9")));

    // HQ's admin API refuses a permission the box could never hold.
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-9/dial_route/international",
        Some(json!({
            "name": "international", "prefix": "00", "via": ["fxo"],
            "needs_permission": "International Calls"
        })),
    );
    assert_eq!(status, 400, "PUT a bad permission: {body}");
    assert!(body.to_string().contains("needs_permission"), "{body}");

    for (name, prefix, permission) in [
        ("default", "", Value::Null),
        ("international", "00", json!("international")),
    ] {
        let (status, body) = hq.admin(
            "PUT",
            &format!("/admin/v1/sites/branch-9/dial_route/{name}"),
            Some(json!({
                "name": name, "prefix": prefix, "via": ["fxo"], "needs_permission": permission
            })),
        );
        assert_eq!(status, 200, "PUT dial_route {name}: {body}");
    }
    assert!(
        wait_plain_log(&gw, "dial routes reloaded routes=2", 1, SOON),
        "the routes never reached call control:\n{}",
        gw.log_text()
    );

    // FXS 3 lacks the permission: reorder tone, no line seized, a distinct CDR.
    let phone = gw.sim.phone(3);
    phone.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    phone.dial("9004930123456#");
    wait_tone(&gw.sim, 3, 480, 620).expect("congestion on the refused call");
    let cdr = gw.wait_cdrs(1).pop().expect("cdr");
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str(), cdr.callee_port),
        ("103", "004930123456", None)
    );
    assert_eq!(
        (cdr.disposition.as_str(), cdr.hangup_side.as_str()),
        ("congestion", "system")
    );
    let cause: Option<String> = gw
        .db()
        .query_row(
            "SELECT hangup_cause FROM cdrs WHERE call_id = ?1",
            [&cdr.call_id],
            |r| r.get(0),
        )
        .expect("cdr row");
    assert_eq!(cause.as_deref(), Some("route_not_permitted"));
    let payload = gw.outbox_payload(&cdr.call_id);
    if let Some(payload) = payload {
        assert_eq!(payload["hangup_cause"], "route_not_permitted", "{payload}");
    }
    assert!(!gw.sim.line(5).is_seized() && !gw.sim.line(6).is_seized());
    assert!(
        wait_plain_log(&gw, "route=\"international\"", 1, SOON)
            || wait_plain_log(&gw, "route=international", 1, SOON),
        "no log line names the route:\n{}",
        gw.log_text()
    );
    phone.on_hook();

    // FXS 4 holds it: the call goes out on an FXO line with the number.
    let phone = gw.sim.phone(4);
    let line = gw.sim.line(5);
    phone.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    phone.dial("9004930123456#");
    assert!(
        wait(SOON, || line.is_seized() && line.dialed() == "004930123456"),
        "FXS 4's international call never went out:\n{}",
        gw.log_text()
    );
    line.answer();
    std::thread::sleep(Duration::from_millis(200));
    phone.on_hook();
    line.hang_up();
    let cdr = gw.wait_cdrs(2).into_iter().nth(1).expect("second cdr");
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str(), cdr.callee_port),
        ("104", "004930123456", Some(5))
    );
    // The same refused phone still reaches numbers only the default route covers.
    let phone = gw.sim.phone(3);
    phone.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    phone.dial("95550100#");
    assert!(
        wait(SOON, || line.is_seized() && line.dialed() == "5550100"),
        "FXS 3's local call never went out:\n{}",
        gw.log_text()
    );
    phone.on_hook();
    line.hang_up();
    assert_no_sync_errors(&gw);
}

#[test]
fn branch_hq_starts_with_one_command_and_a_box_syncs_with_it() {
    let hq = Hq::start_one_command("branch-6", "box-6");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-6")));
    answered_call(&gw);
    let call_id = gw.wait_cdrs(1)[0].call_id.clone();
    let arrived = wait(Duration::from_secs(20), || {
        hq.cdrs("branch-6")
            .iter()
            .any(|c| c["call_id"] == call_id.as_str())
    });
    assert!(arrived, "the CDR never reached HQ:\n{}", gw.log_text());
    // Down too: a user created at HQ logs in on the box.
    hq.put_user("branch-6", "ada", &["admin"]);
    drop(login_when_synced(&gw, "ada"));
    assert_no_sync_errors(&gw);
}

#[test]
fn roles_extensions_queues_and_blacklist_made_at_hq_reach_only_their_sites_box() {
    let hq = Hq::start("branch-7", "box-7");
    let (status, body) = hq.admin(
        "POST",
        "/admin/v1/sites",
        Some(json!({ "id": "branch-8", "name": "Other branch" })),
    );
    assert!((200..300).contains(&status), "POST site: {body}");
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}{}", hq.config_section("box-7")));
    let rows: [(&str, &str, Value); 4] = [
        (
            "role",
            "night_shift",
            json!({ "name": "night_shift", "description": "late calls",
                    "permissions": [{ "resource": "calls", "action": "view", "scope": "group" }] }),
        ),
        (
            "extension",
            "150",
            json!({ "number": "150", "name": "Lobby", "port": null, "call_waiting": true }),
        ),
        (
            "queue",
            "650",
            json!({ "number": "650", "name": "support", "strategy": "ring_all",
                    "max_wait_s": 60, "overflow": null, "agents": [] }),
        ),
        (
            "blacklist",
            "0900*",
            json!({ "pattern": "0900*", "reason": "premium rate" }),
        ),
    ];
    for (kind, key, row) in &rows {
        let (status, body) = hq.admin(
            "PUT",
            &format!("/admin/v1/sites/branch-7/{kind}/{key}"),
            Some(row.clone()),
        );
        assert_eq!(status, 200, "PUT {kind} {key}: {body}");
        // In branch-7's feed only.
        let (status, other) = hq.admin("GET", &format!("/admin/v1/sites/branch-8/{kind}"), None);
        assert_eq!(status, 200, "{other}");
        assert!(
            !other.to_string().contains(key.trim_end_matches('*')),
            "{kind} {key} landed in another site: {other}"
        );
    }
    let count = |sql: &str| -> i64 { gw.db().query_row(sql, [], |r| r.get(0)).unwrap_or(-1) };
    let checks = [
        "SELECT COUNT(*) FROM roles WHERE name = 'night_shift' AND revision > 0",
        "SELECT COUNT(*) FROM extensions WHERE number = '150' AND name = 'Lobby'",
        "SELECT COUNT(*) FROM queues WHERE number = '650' AND strategy = 'ring_all'",
        "SELECT COUNT(*) FROM blacklist WHERE pattern = '0900*' AND source = 'hq'",
    ];
    let arrived = wait(Duration::from_secs(20), || {
        checks.iter().all(|q| count(q) == 1)
    });
    assert!(
        arrived,
        "not on the box: {:?}\n{}",
        checks.map(count),
        gw.log_text()
    );
    // An edit follows.
    let (status, body) = hq.admin(
        "PUT",
        "/admin/v1/sites/branch-7/extension/150",
        Some(json!({ "number": "150", "name": "Lobby desk", "port": null, "call_waiting": false })),
    );
    assert_eq!(status, 200, "{body}");
    assert!(wait(SOON, || {
        count(
        "SELECT COUNT(*) FROM extensions WHERE number = '150' AND name = 'Lobby desk' AND call_waiting = 0"
    ) == 1
    }));
    // Deletes at HQ remove them from the box.
    for (kind, key, _) in &rows {
        let (status, body) = hq.admin(
            "DELETE",
            &format!(
                "/admin/v1/sites/branch-7/{kind}/{}",
                key.replace('*', "%2A")
            ),
            None,
        );
        assert!((200..300).contains(&status), "DELETE {kind} {key}: {body}");
    }
    let gone = wait(Duration::from_secs(20), || {
        checks.iter().all(|q| count(q) == 0)
    });
    assert!(gone, "still on the box: {:?}", checks.map(count));
    assert_eq!(
        count("SELECT COUNT(*) FROM extensions WHERE number = '150'"),
        0
    );
    assert_no_sync_errors(&gw);
}
