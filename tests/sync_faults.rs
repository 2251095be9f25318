//! Sync with HQ under real faults: the real `branchd` on the simulator and the real
//! `branch-hq`, on SQLite and on PostgreSQL (a fresh database `bl_sync_<random>` on
//! 127.0.0.1:5432, dropped by a guard also when the test fails; no PostgreSQL is a
//! failure, not a skip).
//!
//! - HQ killed (SIGKILL) while calls are made, then restarted: HQ's CDRs are the box's
//!   one for one, no duplicates.
//! - A fault proxy ([`crate::fault_proxy`]) between box and HQ drops, delays (slow
//!   and past the box's request timeout), truncates (mid-handshake and later),
//!   resets (early and later) and blackholes connections while calls are made; each
//!   fault is held until the proxy saw it strike; then faults off: the same check.
//! - `branchd` killed with SIGKILL twice while it uploads a backlog, restarted: HQ
//!   holds every CDR exactly once. The backlog (thousands of CDRs) is written into
//!   the stopped box's SQLite store with the daemon's own schema
//!   ([`crate::harness::fill_cdr_backlog`]): making that many analog calls on the
//!   simulator would take hours, and `branchd` has no command that makes CDRs.
//! - A role change at HQ reaches the box within seconds; an offline edit of the same
//!   user on the box and at HQ resolves as issue 5 says: HQ's row wins on both sides
//!   and the box's audit log holds a `sync_conflict` row. (Log-in of a user created at
//!   HQ is covered by `sync_hq`.)
//! - Bad input against the real server: self-signed, foreign-CA and expired client
//!   certificates are refused; a malformed batch is refused whole with a clear error;
//!   box A (site A) cannot write as box B nor touch site B's rows, and site B's admin
//!   changes never reach box A (neither its feed nor its store).
//!
//! The binaries come from the target dir: build them first
//! (`cargo build -p branchline-firmware -p branchline-sync --bins`), then
//! `cargo test -p branchline-tests sync_faults`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use branchline_sync::agent::encode_batch;
use branchline_sync::wire::{RecordKind, UpBatch, UpRecord, PROTOCOL_VERSION, UP_PATH};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::fault_proxy::{Fault, FaultProxy, ProxyStats};
use crate::harness::{
    fill_cdr_backlog, wait, wait_tone, BoxCredentials, Gateway, HqDb, HqServer, DIAL_PLAN, SOON,
};

/// An argon2id hash of [`HQ_PASSWORD`] (HQ distributes hashes, never passwords).
const HQ_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$MsRT4gpcLNalxQLGUkjIJQ$hzjThicVCnbkQdqrMntCn//+xTR6vftHqcFFpds1V0c";
const HQ_PASSWORD: &str = "Hq-created-passphrase-77";

const SITE: &str = "site-a";
const BOX: &str = "box-a";

/// How long a whole recovery may take on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(180);

// --- the box's API -------------------------------------------------------------------

/// A session on the box's `/api/v1`.
struct BoxApi {
    agent: ureq::Agent,
    base: String,
    cookie: String,
    csrf: String,
}

impl BoxApi {
    fn login(addr: SocketAddr, username: &str, password: &str) -> BoxApi {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SOON * 3))
            .build()
            .into();
        let base = format!("http://{addr}");
        let mut resp = agent
            .post(&format!("{base}/api/v1/session"))
            .send_json(json!({ "username": username, "password": password }))
            .expect("login request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "login {username}: {text}");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let body: Value = serde_json::from_str(&text).expect("login JSON");
        BoxApi {
            agent,
            base,
            cookie,
            csrf: body["csrf_token"].as_str().expect("csrf").to_owned(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Cookie", &self.cookie).call(),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .send_empty(),
            ("PATCH", Some(b)) => self
                .agent
                .patch(&url)
                .header("Cookie", &self.cookie)
                .header("X-CSRF-Token", &self.csrf)
                .send_json(b),
            (m, b) => panic!("unsupported {m} with {b:?}"),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /api/v1/sync/force`: retry now instead of after the backoff.
    fn force_sync(&self) {
        let (status, body) = self.call("POST", "/api/v1/sync/force", None);
        assert_eq!(status, 202, "force sync: {body}");
    }

    fn sync_status(&self) -> Value {
        let (status, body) = self.call("GET", "/api/v1/sync", None);
        assert_eq!(status, 200, "{body}");
        body
    }
}

// --- HQ-side helpers ---------------------------------------------------------------------

/// Creates or replaces user `username` of `site` at HQ; returns its new revision.
fn put_user(hq: &HqServer, site: &str, username: &str, display: &str, roles: &[&str]) -> i64 {
    let (status, body) = hq.admin(
        "PUT",
        &format!("/admin/v1/sites/{site}/user/{username}"),
        Some(json!({
            "username": username,
            "display_name": display,
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
    assert_eq!(status, 200, "PUT user {username} at {site}: {body}");
    body["revision"].as_i64().expect("revision")
}

/// HQ's row of user `username` of `site`: (revision, display name, roles).
fn hq_user(hq: &HqServer, site: &str, username: &str) -> Option<(i64, String, Vec<String>)> {
    let (status, body) = hq.admin(
        "GET",
        &format!("/admin/v1/sites/{site}/user/{username}"),
        None,
    );
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let row = &body["row"];
    Some((
        body["revision"].as_i64().expect("revision"),
        row["display_name"]
            .as_str()
            .expect("display_name")
            .to_owned(),
        row["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .map(|r| r.as_str().expect("role").to_owned())
            .collect(),
    ))
}

// --- the box's store -----------------------------------------------------------------------

/// A user on the box: (revision, display name, roles sorted).
fn box_user(gw: &Gateway, username: &str) -> Option<(i64, String, Vec<String>)> {
    let db = gw.db();
    let row = db.query_row(
        "SELECT id, revision, display_name FROM users WHERE username = ?1",
        [username],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    );
    let (id, revision, display) = match row {
        Ok(r) => r,
        Err(rusqlite::Error::QueryReturnedNoRows) => return None,
        Err(e) => panic!("read user {username}: {e}"),
    };
    let mut st = db
        .prepare(
            "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
             WHERE ur.user_id = ?1 ORDER BY r.name",
        )
        .expect("prepare");
    let roles = st
        .query_map([id], |r| r.get::<_, String>(0))
        .expect("roles")
        .collect::<Result<Vec<_>, _>>()
        .expect("roles");
    Some((revision, display, roles))
}

fn box_user_id(gw: &Gateway, username: &str) -> i64 {
    gw.db()
        .query_row(
            "SELECT id FROM users WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .expect("user id")
}

fn count(gw: &Gateway, sql: &str) -> i64 {
    gw.db()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A CDR's content as both sides store it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cdr {
    call_id: String,
    direction: String,
    caller: String,
    caller_port: Option<i64>,
    callee: String,
    callee_port: Option<i64>,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    ended_at_ms: i64,
    disposition: String,
    hangup_side: String,
}

fn box_cdrs(gw: &Gateway) -> Vec<Cdr> {
    let db = gw.db();
    let mut st = db
        .prepare(
            "SELECT call_id, direction, caller, caller_port, callee, callee_port, \
             started_at_ms, answered_at_ms, ended_at_ms, disposition, hangup_side \
             FROM cdrs ORDER BY id",
        )
        .expect("prepare");
    st.query_map([], |r| {
        Ok(Cdr {
            call_id: r.get(0)?,
            direction: r.get(1)?,
            caller: r.get(2)?,
            caller_port: r.get(3)?,
            callee: r.get(4)?,
            callee_port: r.get(5)?,
            started_at_ms: r.get(6)?,
            answered_at_ms: r.get(7)?,
            ended_at_ms: r.get(8)?,
            disposition: r.get(9)?,
            hangup_side: r.get(10)?,
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn hq_cdr(v: &Value) -> Cdr {
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_owned()
    };
    let n = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
    Cdr {
        call_id: s("call_id"),
        direction: s("direction"),
        caller: s("caller"),
        caller_port: v["caller_port"].as_i64(),
        callee: s("callee"),
        callee_port: v["callee_port"].as_i64(),
        started_at_ms: n("started_at_ms"),
        answered_at_ms: v["answered_at_ms"].as_i64(),
        ended_at_ms: n("ended_at_ms"),
        disposition: s("disposition"),
        hangup_side: s("hangup_side"),
    }
}

/// HQ's CDRs of `site` are the box's, one for one (count and content), each once,
/// each from `box_id`.
fn assert_one_for_one(gw: &Gateway, hq: &HqServer, site: &str, box_id: &str) -> usize {
    let on_box = box_cdrs(gw);
    let at_hq = hq.cdrs(site);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in &at_hq {
        assert_eq!(c["box"], box_id, "{c}");
        assert_eq!(c["site"], site, "{c}");
        *seen
            .entry(c["call_id"].as_str().expect("call_id").to_owned())
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "duplicates at HQ: {dups:?}");
    let mut box_sorted = on_box.clone();
    box_sorted.sort();
    let mut hq_sorted: Vec<Cdr> = at_hq.iter().map(hq_cdr).collect();
    hq_sorted.sort();
    assert_eq!(
        hq_sorted.len(),
        box_sorted.len(),
        "HQ holds {} CDRs, the box {}",
        hq_sorted.len(),
        box_sorted.len()
    );
    for (h, b) in hq_sorted.iter().zip(&box_sorted) {
        assert_eq!(h, b, "HQ's CDR differs from the box's");
    }
    on_box.len()
}

// --- calls on the simulator --------------------------------------------------------------

/// Extension 101 calls 102, 102 answers, they hang up.
fn answered_call(gw: &Gateway) {
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "102 rings");
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "ringback stops");
    std::thread::sleep(Duration::from_millis(100));
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

/// Makes call number `i` of a test (answered and unanswered in turn) and waits for
/// its CDR: the box then holds `total` CDRs.
fn call(gw: &Gateway, i: usize, total: usize) {
    if i % 2 == 0 {
        answered_call(gw);
    } else {
        unanswered_call(gw);
    }
    assert!(
        gw.wait_log_count("cdr stored", total, SOON),
        "expected {total} CDRs:\n{}",
        gw.log_text()
    );
}

// --- a box and its HQ --------------------------------------------------------------------

/// HQ, optionally a fault proxy in front of it, and one box whose HQ-made user `ops`
/// (role admin) is logged in on the box's API. Dropped box first, HQ (and its
/// database) last.
struct Rig {
    api: BoxApi,
    gw: Gateway,
    proxy: Option<FaultProxy>,
    creds: BoxCredentials,
    hq: HqServer,
}

impl Rig {
    /// HQ with site `site-a` and box `box-a`; `extra` goes into the box's `[hq]`.
    fn start(db: HqDb, with_proxy: bool, extra: &str) -> Rig {
        let mut hq = HqServer::new(db);
        hq.add_site(SITE);
        let creds = hq.add_box(SITE, BOX);
        hq.serve();
        Self::start_box(hq, creds, with_proxy, extra)
    }

    fn start_box(hq: HqServer, creds: BoxCredentials, with_proxy: bool, extra: &str) -> Rig {
        // The operator exists at HQ before the box first syncs.
        put_user(&hq, SITE, "ops", "Operator (HQ)", &["admin"]);
        let proxy = with_proxy.then(|| FaultProxy::start(hq.sync));
        let addr = proxy.as_ref().map_or(hq.sync, FaultProxy::addr);
        let extra = format!("request_timeout_ms = 5000\n{extra}");
        let gw = Gateway::start_with(&format!(
            "{DIAL_PLAN}{}",
            hq.box_config(&creds, addr, &extra)
        ));
        assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());
        let api = login_when_synced(&gw, "ops");
        Rig {
            api,
            gw,
            proxy,
            creds,
            hq,
        }
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("rig with a proxy")
    }

    /// Forces syncs until the box's outbox is empty (HQ acknowledged everything) and
    /// HQ's CDRs match the box's one for one; then waits a little and checks again
    /// (nothing late, no duplicates), and checks that HQ refused no request of the box.
    /// Returns the number of CDRs.
    fn converge(&self) -> usize {
        let deadline = Instant::now() + CONVERGE;
        let mut last_force = Instant::now() - Duration::from_secs(60);
        loop {
            if last_force.elapsed() > Duration::from_secs(3) {
                self.api.force_sync();
                last_force = Instant::now();
            }
            if count(&self.gw, "SELECT COUNT(*) FROM outbox") == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the outbox never drained: {}\n{}",
                self.api.sync_status(),
                self.gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let n = assert_one_for_one(&self.gw, &self.hq, SITE, BOX);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(assert_one_for_one(&self.gw, &self.hq, SITE, BOX), n);
        // Faults lose or cut requests, never corrupt them: HQ refused nothing the
        // box sent.
        let log = self.gw.log_text();
        assert!(
            !log.contains("refused by HQ"),
            "HQ refused a request:\n{log}"
        );
        n
    }
}

/// Waits (up to 60 s) until user `username` exists on the box, then logs in.
fn login_when_synced(gw: &Gateway, username: &str) -> BoxApi {
    assert!(
        wait(Duration::from_secs(60), || box_user(gw, username).is_some()),
        "{username} never reached the box:\n{}",
        gw.log_text()
    );
    BoxApi::login(gw.web_addr(), username, HQ_PASSWORD)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// --- 1. HQ stopped --------------------------------------------------------------------------

fn calls_while_hq_is_down(db: HqDb) {
    let mut rig = Rig::start(db, false, "");
    call(&rig.gw, 0, 1);
    assert!(
        wait(Duration::from_secs(60), || rig.hq.cdrs(SITE).len() == 1),
        "the first CDR never reached HQ:\n{}",
        rig.gw.log_text()
    );

    rig.hq.kill();
    let killed_at = now_ms();
    for i in 1..5 {
        call(&rig.gw, i, i + 1);
    }
    // The box noticed: an upload failed after HQ went away, and the calls wait.
    let mut status = Value::Null;
    let noticed = wait(Duration::from_secs(60), || {
        status = rig.api.sync_status();
        status["last_error"]["at_ms"]
            .as_i64()
            .is_some_and(|t| t >= killed_at)
            && status["backlog"]["depth"].as_i64() >= Some(4)
    });
    assert!(noticed, "no upload failure while HQ was down: {status}");

    rig.hq.serve();
    call(&rig.gw, 5, 6);
    assert_eq!(rig.converge(), 6);
}

#[test]
fn calls_while_hq_is_down_reach_it_once_sqlite() {
    calls_while_hq_is_down(HqDb::Sqlite);
}

#[test]
fn calls_while_hq_is_down_reach_it_once_postgres() {
    calls_while_hq_is_down(HqDb::postgres());
}

// --- 2. the fault proxy -------------------------------------------------------------------

/// Which counter of the proxy shows that a fault struck.
fn hits(fault: Fault, s: &ProxyStats) -> u64 {
    match fault {
        Fault::None => 0,
        Fault::Drop => s.dropped,
        Fault::Delay(_) => s.delayed,
        Fault::Truncate(_) => s.truncated,
        Fault::Reset(_) => s.reset,
        Fault::Blackhole => s.blackholed,
    }
}

fn calls_through_faults(db: HqDb) {
    let rig = Rig::start(db, true, "");
    let proxy = rig.proxy();
    let mut made = 0;
    call(&rig.gw, made, made + 1);
    made += 1;

    let faults = [
        Fault::Drop,
        // Slow but within the box's 5 s request timeout, then far beyond it.
        Fault::Delay(Duration::from_millis(150)),
        Fault::Delay(Duration::from_millis(2500)),
        // Mid-handshake, then (past the handshake) in the middle of answers.
        Fault::Truncate(200),
        Fault::Truncate(4_000),
        Fault::Truncate(9_000),
        Fault::Reset(300),
        Fault::Reset(5_000),
        Fault::Reset(12_000),
        Fault::Blackhole,
    ];
    for fault in faults {
        let before = hits(fault, &proxy.stats());
        proxy.set_fault(fault);
        // Connections opened before the fault would otherwise carry on untouched.
        proxy.reset_all();
        call(&rig.gw, made, made + 1);
        made += 1;
        let deadline = Instant::now() + Duration::from_secs(90);
        while hits(fault, &proxy.stats()) < before + 2 {
            assert!(
                Instant::now() < deadline,
                "{fault:?} never struck twice: {:?}\n{}",
                proxy.stats(),
                rig.gw.log_text()
            );
            rig.api.force_sync();
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    proxy.set_fault(Fault::None);
    proxy.reset_all();
    call(&rig.gw, made, made + 1);
    made += 1;
    assert_eq!(rig.converge(), made);
    let stats = proxy.stats();
    eprintln!("fault proxy: {stats:?}");
    assert!(stats.truncated >= 6 && stats.reset >= 6, "{stats:?}");
}

#[test]
fn calls_through_a_faulty_network_reach_hq_once_sqlite() {
    calls_through_faults(HqDb::Sqlite);
}

#[test]
fn calls_through_a_faulty_network_reach_hq_once_postgres() {
    calls_through_faults(HqDb::postgres());
}

// --- 3. branchd killed mid-batch ------------------------------------------------------------

fn box_killed_mid_batch(db: HqDb, backlog: usize) {
    // Small batches: many uploads, so a kill lands in the middle of one.
    let mut rig = Rig::start(db, false, "batch_records = 100\n");
    // The backlog of a long outage, written into the stopped box's store.
    assert!(rig.gw.stop_with(Signal::SIGTERM).success());
    fill_cdr_backlog(&rig.gw.db_path(), "backlog", backlog);
    let total = i64::try_from(backlog).expect("fits");
    let outbox = |gw: &Gateway| count(gw, "SELECT COUNT(*) FROM outbox WHERE kind = 'cdr'");
    for stop_below in [total * 3 / 4, total / 3] {
        rig.gw.restart();
        let mut left = total;
        let caught = wait(CONVERGE, || {
            left = outbox(&rig.gw);
            left <= stop_below
        });
        assert!(caught, "no progress: {left} left\n{}", rig.gw.log_text());
        assert!(left > 0, "drained before the kill; use a bigger backlog");
        let status = rig.gw.stop_with(Signal::SIGKILL);
        assert!(!status.success());
        eprintln!("killed branchd with {left} of {total} CDRs still in its outbox");
    }
    rig.gw.restart();
    rig.api = BoxApi::login(rig.gw.latest_web_addr(), "ops", HQ_PASSWORD);
    // A call while the rest drains.
    call(&rig.gw, 0, 1);
    let n = rig.converge();
    assert_eq!(n, backlog + 1);
}

#[test]
fn box_killed_mid_batch_uploads_each_cdr_once_sqlite() {
    box_killed_mid_batch(HqDb::Sqlite, 3_000);
}

#[test]
fn box_killed_mid_batch_uploads_each_cdr_once_postgres() {
    box_killed_mid_batch(HqDb::postgres(), 3_000);
}

// --- 4. roles and offline conflicts ---------------------------------------------------------

fn role_change_and_offline_conflict(db: HqDb) {
    let rig = Rig::start(db, true, "");
    let proxy = rig.proxy();

    // A role change at HQ reaches the box within seconds.
    put_user(&rig.hq, SITE, "olga", "Olga", &["technician"]);
    assert!(
        wait(Duration::from_secs(30), || box_user(&rig.gw, "olga")
            .is_some_and(|u| u.2 == ["technician"])),
        "olga never arrived"
    );
    let olga = BoxApi::login(rig.gw.web_addr(), "olga", HQ_PASSWORD);
    let (status, me) = olga.call("GET", "/api/v1/me", None);
    assert_eq!(
        (status, &me["roles"]),
        (200, &json!(["technician"])),
        "{me}"
    );
    let changed = Instant::now();
    let rev = put_user(&rig.hq, SITE, "olga", "Olga", &["supervisor"]);
    assert!(
        wait(Duration::from_secs(30), || box_user(&rig.gw, "olga")
            .is_some_and(|u| u.0 == rev && u.2 == ["supervisor"])),
        "the role change never reached the box: {:?}",
        box_user(&rig.gw, "olga")
    );
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the role change took {took:?}"
    );
    eprintln!("role change reached the box in {took:?}");
    let olga = BoxApi::login(rig.gw.web_addr(), "olga", HQ_PASSWORD);
    let (_, me) = olga.call("GET", "/api/v1/me", None);
    assert_eq!(me["roles"], json!(["supervisor"]), "{me}");

    // HQ unreachable; the same user is edited on the box and at HQ.
    let (base_revision, _, _) = box_user(&rig.gw, "olga").expect("olga");
    proxy.set_fault(Fault::Blackhole);
    proxy.reset_all();
    let id = box_user_id(&rig.gw, "olga");
    let (status, body) = rig.api.call(
        "PATCH",
        &format!("/api/v1/users/{id}"),
        Some(json!({ "display_name": "Olga (box, offline)" })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        count(
            &rig.gw,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'user_change' AND record_key = 'olga'"
        ),
        1,
        "the offline edit waits in the outbox"
    );
    let hq_revision = put_user(&rig.hq, SITE, "olga", "Olga (HQ)", &["agent"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hq_user(&rig.hq, SITE, "olga").map(|u| u.1),
        Some("Olga (HQ)".to_owned()),
        "the box's edit got through the blackhole"
    );
    assert!(hits(Fault::Blackhole, &proxy.stats()) > 0);

    // Back online: HQ wins on both sides, and the box audits the conflict.
    proxy.set_fault(Fault::None);
    proxy.reset_all();
    let audited = |gw: &Gateway| {
        count(
            gw,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'sync_conflict' AND target = 'olga'",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let settled = box_user(&rig.gw, "olga")
            == Some((
                hq_revision,
                "Olga (HQ)".to_owned(),
                vec!["agent".to_owned()],
            ))
            && audited(&rig.gw) == 1
            && count(
                &rig.gw,
                "SELECT COUNT(*) FROM outbox WHERE kind = 'user_change'",
            ) == 0;
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not resolved: box has {:?}, {} conflict rows:\n{}",
            box_user(&rig.gw, "olga"),
            audited(&rig.gw),
            rig.gw.log_text()
        );
        rig.api.force_sync();
        std::thread::sleep(Duration::from_millis(500));
    }
    let (detail, result): (String, String) = rig
        .gw
        .db()
        .query_row(
            "SELECT detail, result FROM audit_log WHERE action = 'sync_conflict' AND target = 'olga'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("conflict row");
    let detail: Value = serde_json::from_str(&detail).expect("detail JSON");
    assert_eq!(result, "failed", "{detail}");
    assert_eq!(detail["base_revision"], base_revision, "{detail}");
    assert_eq!(detail["hq_revision"], hq_revision, "{detail}");
    assert_eq!(
        hq_user(&rig.hq, SITE, "olga"),
        Some((
            hq_revision,
            "Olga (HQ)".to_owned(),
            vec!["agent".to_owned()]
        )),
        "HQ kept its row"
    );
    // Nothing flaps afterwards: the resolution sends nothing back up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hq_user(&rig.hq, SITE, "olga").map(|u| u.0),
        Some(hq_revision)
    );
    assert_eq!(audited(&rig.gw), 1);
}

#[test]
fn role_change_reaches_the_box_and_offline_conflict_goes_to_hq_sqlite() {
    role_change_and_offline_conflict(HqDb::Sqlite);
}

#[test]
fn role_change_reaches_the_box_and_offline_conflict_goes_to_hq_postgres() {
    role_change_and_offline_conflict(HqDb::postgres());
}

// --- 5. bad input ---------------------------------------------------------------------------

/// A TLS client identity for raw requests to the sync listener.
struct Identity {
    config: Arc<rustls::ClientConfig>,
}

impl Identity {
    /// Trusts `ca` (HQ's CA) and presents `cert_pem` / `key_pem`.
    fn new(ca: &Path, cert_pem: &str, key_pem: &str) -> Identity {
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = std::fs::read(ca).expect("CA file");
        for cert in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .expect("key PEM")
            .expect("a private key");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client certificate");
        Identity {
            config: Arc::new(config),
        }
    }

    fn of_box(creds: &BoxCredentials) -> Identity {
        let read = |p: &Path| std::fs::read_to_string(p).expect("credential file");
        Identity::new(&creds.ca, &read(&creds.cert), &read(&creds.key))
    }

    /// One HTTP/1.1 request over TLS (`Connection: close`): the status and body, or
    /// why there was none (handshake refused, connection closed).
    fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        gzip_body: Option<&[u8]>,
    ) -> Result<(u16, Value), String> {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .expect("server name")
            .to_owned();
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| format!("client: {e}"))?;
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(SOON * 3)).expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Accept: application/json\r\n"
        );
        if let Some(body) = gzip_body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Encoding: gzip\r\n\
                 Content-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .and_then(|()| tls.write_all(gzip_body.unwrap_or_default()))
            .and_then(|()| tls.flush())
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        let read = tls.read_to_end(&mut raw);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(format!("no HTTP answer ({read:?})"));
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head}"))?;
        let mut body = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    fn upload(&self, addr: SocketAddr, batch: &UpBatch) -> Result<(u16, Value), String> {
        self.request(addr, "POST", UP_PATH, Some(&encode_batch(batch)))
    }

    fn snapshot(&self, addr: SocketAddr) -> Result<(u16, Value), String> {
        self.request(addr, "GET", "/sync/v1/down?since=0&wait_ms=0", None)
    }
}

/// The payload of an HTTP/1.1 chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A CDR record for a raw upload.
fn cdr_record(seq: i64, call_id: &str, started: i64, ended: i64) -> UpRecord {
    UpRecord {
        seq,
        kind: RecordKind::Cdr,
        key: call_id.to_owned(),
        created_at_ms: ended,
        payload: json!({
            "call_id": call_id, "direction": "internal", "caller": "101", "caller_port": 1,
            "callee": "102", "callee_port": 2, "started_at_ms": started,
            "answered_at_ms": null, "ended_at_ms": ended, "disposition": "no_answer",
            "hangup_side": "caller",
        }),
    }
}

fn batch(box_id: &str, epoch: &str, records: Vec<UpRecord>) -> UpBatch {
    UpBatch {
        version: PROTOCOL_VERSION,
        box_id: box_id.to_owned(),
        epoch: epoch.to_owned(),
        firmware_version: "test".to_owned(),
        backlog: 0,
        oldest_pending_ms: None,
        records,
    }
}

/// A certificate for CN `cn`, issued by `issuer` (or self-signed), valid in
/// `[not_before, not_after]`: (certificate PEM, key PEM).
fn certificate(
    cn: &str,
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> (String, String) {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn refused(what: &str, answer: Result<(u16, Value), String>) {
    match answer {
        Err(why) => eprintln!("{what}: refused ({why})"),
        Ok((status, body)) => assert!(status >= 400, "{what} was accepted: {status} {body}"),
    }
}

fn bad_input(db: HqDb) {
    let mut hq = HqServer::new(db);
    hq.add_site(SITE);
    hq.add_site("site-b");
    let creds = hq.add_box(SITE, BOX);
    let creds_b = hq.add_box("site-b", "box-b");
    hq.serve();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();

    // Forged client certificates.
    let (cert, key) = certificate(BOX, None, now - day, now + day);
    refused(
        "a self-signed certificate",
        Identity::new(&creds.ca, &cert, &key).snapshot(hq.sync),
    );
    let rogue = HqServer::new(HqDb::Sqlite);
    rogue.add_site(SITE);
    let rogue_creds = rogue.add_box(SITE, BOX);
    let read = |p: &Path| std::fs::read_to_string(p).expect("credential file");
    refused(
        "a certificate from another CA",
        Identity::new(&creds.ca, &read(&rogue_creds.cert), &read(&rogue_creds.key))
            .snapshot(hq.sync),
    );
    // An expired certificate from HQ's own CA, for a box registered without a pinned
    // certificate: the same issuer's valid certificate gets in, the expired one not.
    let (status, body) = hq.admin(
        "POST",
        "/admin/v1/boxes",
        Some(json!({ "id": "box-x", "site": SITE })),
    );
    assert_eq!(status, 201, "{body}");
    let ca_key = rcgen::KeyPair::from_pem(&read(&hq.tls_dir().join("ca.key"))).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(&hq.tls_dir().join("ca.pem")), ca_key)
        .expect("CA certificate");
    let (cert, key) = certificate("box-x", Some(&issuer), now - day, now + day);
    let (status, body) = Identity::new(&creds.ca, &cert, &key)
        .snapshot(hq.sync)
        .expect("a valid certificate of HQ's CA");
    assert_eq!(status, 200, "{body}");
    let (cert, key) = certificate("box-x", Some(&issuer), now - day * 3, now - day);
    refused(
        "an expired certificate",
        Identity::new(&creds.ca, &cert, &key).snapshot(hq.sync),
    );

    // A malformed batch is refused whole, with the record named; nothing is applied.
    let box_b = Identity::of_box(&creds_b);
    let epoch_b = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    let t = now_ms() - 60_000;
    let bad = batch(
        "box-b",
        epoch_b,
        vec![
            cdr_record(1, "b-1", t, t + 1_000),
            cdr_record(2, "b-2", t, t - 1_000),
            cdr_record(3, "b-3", t, t + 1_000),
        ],
    );
    let (status, body) = box_b.upload(hq.sync, &bad).expect("an answer");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "malformed_batch", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("seq 2") && message.contains("ends before it starts"),
        "the bad record and field are named: {body}"
    );
    assert!(hq.cdrs("site-b").is_empty(), "a refused batch wrote rows");
    // The same batch, repaired, goes in; box B's rows land in site B.
    let mut good = bad.clone();
    good.records[1] = cdr_record(2, "b-2", t, t + 2_000);
    let (status, body) = box_b.upload(hq.sync, &good).expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acked_seq"], 3, "{body}");
    assert_eq!(hq.cdrs("site-b").len(), 3);

    // Site B's users; then box A's real daemon, whose operator is made after them.
    put_user(&hq, "site-b", "bea", "Bea (site B)", &["technician"]);
    let bea_b = hq_user(&hq, "site-b", "bea").expect("bea");
    let rig = Rig::start_box(hq, creds, false, "");
    call(&rig.gw, 0, 1);
    assert_eq!(rig.converge(), 1);
    // Site B's admin changes never reached box A: not in its store, not in its feed.
    put_user(
        &rig.hq,
        "site-b",
        "bea",
        "Bea (site B, again)",
        &["supervisor"],
    );
    put_user(&rig.hq, SITE, "ann", "Ann (site A)", &["technician"]);
    assert!(
        wait(Duration::from_secs(30), || box_user(&rig.gw, "ann")
            .is_some()),
        "ann never reached box A"
    );
    assert_eq!(
        box_user(&rig.gw, "bea"),
        None,
        "site B's user reached box A"
    );
    let box_a = Identity::of_box(&rig.creds);
    let (status, feed) = box_a.snapshot(rig.hq.sync).expect("box A's feed");
    assert_eq!(status, 200, "{feed}");
    let keys: Vec<&str> = feed["rows"]
        .as_array()
        .expect("a snapshot")
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(keys.contains(&"ann") && keys.contains(&"ops"), "{feed}");
    assert!(
        !keys.contains(&"bea"),
        "site B's row in box A's feed: {feed}"
    );

    // Box A writing as box B is refused, and nothing lands in site B.
    let forged = batch("box-b", epoch_b, vec![cdr_record(4, "a-as-b", t, t + 1)]);
    let (status, body) = box_a.upload(rig.hq.sync, &forged).expect("an answer");
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("unknown_box")),
        "{body}"
    );
    let site_b: Vec<String> = rig
        .hq
        .cdrs("site-b")
        .iter()
        .map(|c| c["call_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(site_b, ["b-1", "b-2", "b-3"]);
    // An edit of "bea" from box A lands in site A (its own site) at most: site B's
    // row stays as site B's operator left it.
    let bea_b = {
        let (rev, display, roles) = hq_user(&rig.hq, "site-b", "bea").expect("bea");
        assert!(rev > bea_b.0);
        (rev, display, roles)
    };
    let edit = UpRecord {
        seq: 1,
        kind: RecordKind::UserChange,
        key: "bea".to_owned(),
        created_at_ms: now_ms(),
        payload: json!({
            "op": "update",
            "base_revision": bea_b.0,
            "row": {
                "kind": "user", "username": "bea", "display_name": "hijacked by box A",
                "password_hash": HQ_HASH, "pin_hash": null, "agent_id": null,
                "extension": null, "enabled": true, "must_change_password": false,
                "roles": ["admin"], "groups": [],
            },
        }),
    };
    let epoch_a = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    match box_a.upload(rig.hq.sync, &batch(BOX, epoch_a, vec![edit])) {
        Ok((status, body)) => eprintln!("box A's edit of bea: {status} {body}"),
        Err(why) => panic!("no answer to box A's edit: {why}"),
    }
    assert_eq!(
        hq_user(&rig.hq, "site-b", "bea"),
        Some(bea_b),
        "site B's row changed"
    );
    // And box A's CDRs are all in site A, none in site B.
    assert_eq!(rig.hq.cdrs("site-b").len(), 3);
    assert_one_for_one(&rig.gw, &rig.hq, SITE, BOX);
}

#[test]
fn bad_certificates_malformed_batches_and_foreign_sites_are_refused_sqlite() {
    bad_input(HqDb::Sqlite);
}

#[test]
fn bad_certificates_malformed_batches_and_foreign_sites_are_refused_postgres() {
    bad_input(HqDb::postgres());
}
