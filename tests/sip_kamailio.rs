//! Kamailio as the upstream registrar/proxy standing in for HQ (issue 3, "Tests
//! against real peers", and item 5: trunk registration, DID routing, caller ID).
//!
//! Each test runs its own Kamailio (`tests/data/kamailio/kamailio.cfg`: registrar
//! with usrloc in memory, digest auth of the trunk account through the `auth`
//! module, DID calls looked up in usrloc, outbound calls proxy-authenticated and
//! relayed to a SIPp UAS) on a free loopback port with its own runtime directory,
//! and its own `branchd` whose `[sip.trunk]` points at it. SIPp plays the outside
//! world on both sides of Kamailio. Kamailio logs one `KAM ...` line per request
//! on stderr, which the tests read to count what reached it.
//!
//! - the box registers with digest (proved by a DID call that Kamailio can only
//!   route through the box's binding); a wrong password is refused, the box reports
//!   the trunk unreachable, backs off for the auth-failure period and does not retry
//!   meanwhile, and Kamailio has no binding (the DID call gets 404);
//! - a DID call through Kamailio rings the analog phone the DID maps to, RTP from
//!   SIPp reaches the phone, the phone hangs up (BYE along the Record-Route), and the
//!   CDR carries the SIP Call-ID;
//! - an analog phone dials out: the box sends the INVITE to Kamailio, answers its
//!   proxy challenge, and SIPp behind Kamailio checks the dialled number and the
//!   caller ID in From and P-Asserted-Identity; SIPp echoes RTP so the phone hears
//!   its own tone back;
//! - Kamailio is stopped (the box's OPTIONS keepalive finds the outage and reports
//!   the trunk unreachable) and started again with an empty location table: the box
//!   registers again by itself and DID calls reach it again.
//!
//! Kamailio is a native program even when the tests run under qemu-user; only the
//! box is emulated there, so every wait is generous and waits for a condition.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{hears, listen, strip_ansi, wait, wait_tone, Gateway, DIAL_PLAN, SOON};
use crate::sip_calls::free_port;

const KAMAILIO: &str = "/usr/sbin/kamailio";
const SIPP: &str = "/usr/bin/sipp";
const DOMAIN: &str = "hq.test";
const TRUNK_USER: &str = "branch-kam";
const TRUNK_PASSWORD: &str = "trunk-secret-42";
/// The DID that routes to extension 102 (FXS 2) through the box's `did` rule.
const DID_102: &str = "+4930555202";
/// How long anything involving a retry, a keepalive or a timeout may take (qemu-user).
const LONG: Duration = Duration::from_secs(60);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/kamailio")
        .join(name)
}

/// One Kamailio process with its own runtime directory; killed (only this PID) on
/// drop.
struct Kamailio {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    uas_port: u16,
    /// Log files of earlier runs (restarts), oldest first.
    runs: usize,
}

impl Kamailio {
    /// Starts Kamailio on a free port, relaying outbound calls to a SIPp UAS on
    /// `uas_port`; waits until it answers OPTIONS.
    fn start(uas_port: u16) -> Kamailio {
        let mut k = Kamailio {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            uas_port,
            runs: 0,
        };
        k.spawn();
        k
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("kamailio-{run}.log"))
    }

    /// Starts the process (again) on the same port; waits until it answers.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = File::create(self.log_path(self.runs)).expect("log file");
        let dir = self.dir.path();
        let child = Command::new(KAMAILIO)
            .args(["-DD", "-E", "-f"])
            .arg(data("kamailio.cfg"))
            .arg("-l")
            .arg(format!("udp:127.0.0.1:{}", self.port))
            .arg("-A")
            .arg(format!("DOMAIN=\"{DOMAIN}\""))
            .arg("-A")
            .arg(format!("TRUNK_USER=\"{TRUNK_USER}\""))
            .arg("-A")
            .arg(format!("TRUNK_PASS=\"{TRUNK_PASSWORD}\""))
            .arg("-A")
            .arg(format!("UAS_URI=\"sip:127.0.0.1:{}\"", self.uas_port))
            .arg("-Y")
            .arg(dir)
            .arg("-w")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .args(["-m", "64", "-M", "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kamailio starts");
        self.child = Some(child);
        let ready = wait(SOON, || {
            self.options_answered() || self.child.as_mut().is_some_and(exited)
        });
        assert!(
            ready && self.child.as_mut().is_some_and(|c| !exited(c)),
            "kamailio did not come up on {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// True when Kamailio answers a keepalive-style OPTIONS with 200.
    fn options_answered(&self) -> bool {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let local = s.local_addr().expect("addr");
        let msg = format!(
            "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready{p}\r\n\
             From: <sip:probe@{local}>;tag=r{p}\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: ready{p}@test\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p = local.port()
        );
        if s.send_to(msg.as_bytes(), self.addr()).is_err() {
            return false;
        }
        let mut buf = [0u8; 4096];
        s.recv_from(&mut buf)
            .is_ok_and(|(n, _)| buf[..n].starts_with(b"SIP/2.0 200"))
    }

    /// SIGTERM to this Kamailio and wait for it to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait(SOON, || exited(&mut child)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything every run of this Kamailio logged.
    fn log(&self) -> String {
        let mut all = String::new();
        for run in 1..=self.runs {
            let mut text = String::new();
            if let Ok(mut f) = File::open(self.log_path(run)) {
                let _ = f.read_to_string(&mut text);
            }
            all.push_str(&format!("--- kamailio run {run} ---\n{text}"));
        }
        all
    }

    /// Lines of the current run containing `needle`.
    fn count(&self, needle: &str) -> usize {
        self.count_all(&[needle])
    }

    /// Lines of the current run containing every one of `needles`.
    fn count_all(&self, needles: &[&str]) -> usize {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path(self.runs)) {
            let _ = f.read_to_string(&mut text);
        }
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

fn exited(child: &mut Child) -> bool {
    child.try_wait().ok().flatten().is_some()
}

/// The box: the standard analog dial plan, SIP on loopback and a trunk to
/// `kamailio` with `password`, a 5 s keepalive, a caller-ID rule giving extensions
/// 10X the direct-dial number +4930555<ext>, and DIDs +49305552XX to extensions 10X.
fn gateway(kamailio: &Kamailio, password: &str) -> Gateway {
    let plan = format!(
        r#"{DIAL_PLAN}
[media]
local_ip = "127.0.0.1"

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"

[sip.trunk]
servers = ["127.0.0.1:{port}"]
domain = "{DOMAIN}"
username = "{TRUNK_USER}"
password = "{password}"
expires = 300
keepalive_s = 5
caller_id = [{{ extensions = "10X", number = "+4930555{{ext}}" }}]
did = [{{ number = "+49305552XX", extension = "10{{last:1}}" }}]
"#,
        port = kamailio.port
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

/// The daemon's log lines containing `needle`, without colours.
fn log_lines(gw: &Gateway, needle: &str) -> Vec<String> {
    gw.log_text()
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(needle))
        .collect()
}

/// Number of "trunk reachability" lines saying `reachable=<value>`.
fn reachability_count(gw: &Gateway, reachable: bool) -> usize {
    log_lines(gw, "trunk reachability")
        .iter()
        .filter(|l| l.contains(&format!("reachable={reachable}")))
        .count()
}

fn both_logs(gw: &Gateway, k: &Kamailio) -> String {
    format!("branchd:\n{}\n{}", gw.log_text(), k.log())
}

/// A SIPp command from 127.0.0.1:`port` (to `target`, if any).
fn sipp(scenario: &str, port: u16, target: Option<SocketAddr>, extra: &[&str]) -> Command {
    let mut c = Command::new(SIPP);
    c.arg("-sf")
        .arg(data(scenario))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string()])
        .args(["-mp", &free_port().to_string()])
        .args(["-timeout", "60s", "-timeout_error"])
        .args(extra);
    if let Some(t) = target {
        c.arg(t.to_string());
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Waits for SIPp to end; panics with its stderr and both logs unless it succeeded.
fn wait_sipp(mut child: Child, what: &str, gw: &Gateway, k: &Kamailio) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            assert!(
                status.success(),
                "sipp {what} failed ({status:?}): {err}\n{}",
                both_logs(gw, k)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sipp {what} did not finish:\n{}", both_logs(gw, k));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A DID call from SIPp through Kamailio that must get 404 (no binding there).
fn did_call_unrouted(gw: &Gateway, k: &Kamailio) {
    let call = sipp(
        "uac_did_unrouted.xml",
        free_port(),
        Some(k.addr()),
        &["-s", DID_102, "-m", "1"],
    )
    .spawn()
    .expect("sipp starts");
    wait_sipp(call, "DID call while unregistered (404)", gw, k);
}

/// A DID call through Kamailio to FXS 2: it rings, is answered, SIPp's audio is
/// heard, the phone hangs up. Returns after SIPp ended successfully.
fn did_call_answered(gw: &Gateway, k: &Kamailio, cdrs_before: usize) {
    let call = sipp(
        "uac_did.xml",
        free_port(),
        Some(k.addr()),
        &["-s", DID_102, "-m", "1"],
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(2);
    assert!(
        wait(LONG, || phone.is_ringing()),
        "FXS 2 rings for the DID call:\n{}",
        both_logs(gw, k)
    );
    phone.off_hook();
    // SIPp plays G.711 A-law speech from its pcap straight to the box's RTP port.
    let heard_speech = wait(SOON, || {
        let heard = listen(&gw.sim, 2, 500, false);
        let rms = (heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
            / heard.len().max(1) as f64)
            .sqrt();
        rms > 100.0
    });
    assert!(
        heard_speech,
        "the analog phone hears the caller:\n{}",
        both_logs(gw, k)
    );
    phone.on_hook();
    wait_sipp(call, "DID call", gw, k);
    let cdrs = gw.wait_cdrs(cdrs_before + 1);
    let c = cdrs.last().expect("a CDR");
    assert_eq!(c.callee.as_str(), "102", "{c:?}");
    assert_eq!(c.callee_port, Some(2));
    assert_eq!(c.disposition, "answered");
    let (caller_sip, _): (Option<String>, Option<String>) = gw
        .db()
        .query_row(
            "SELECT caller_sip_call_id, callee_sip_call_id FROM cdrs WHERE call_id = ?1",
            [&c.call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("cdr row");
    // SIPp's Call-IDs look like "<n>-<pid>@127.0.0.1": the one Kamailio logged.
    let caller_sip = caller_sip.expect("the trunk leg's SIP Call-ID on the CDR");
    assert!(
        k.count(&format!("callid={caller_sip}")) >= 1,
        "CDR Call-ID {caller_sip} is the one that went through Kamailio:\n{}",
        k.log()
    );
}

/// Waits until the box has registered with the running Kamailio: the box logs it
/// and Kamailio saved the binding.
fn wait_registered(gw: &Gateway, k: &Kamailio, times: usize) {
    assert!(
        wait(LONG, || {
            gw.log_count("trunk registered") >= times && k.count("KAM REGISTER saved") >= 1
        }),
        "trunk registration {times}:\n{}",
        both_logs(gw, k)
    );
}

#[test]
fn trunk_registers_with_digest_and_a_did_call_through_kamailio_rings_an_analog_phone() {
    let k = Kamailio::start(free_port());
    let gw = gateway(&k, TRUNK_PASSWORD);
    wait_registered(&gw, &k, 1);
    // Kamailio challenged the first REGISTER and saved the answered one.
    assert!(k.count("KAM REGISTER challenged") >= 1, "{}", k.log());
    assert!(
        k.count(&format!("KAM REGISTER saved aor=sip:{TRUNK_USER}@{DOMAIN}")) >= 1,
        "{}",
        k.log()
    );
    assert!(wait(SOON, || reachability_count(&gw, true) >= 1));
    did_call_answered(&gw, &k, 0);
    // The keepalive runs meanwhile (OPTIONS every 5 s; the box's Call-IDs end in
    // "@branchline", the readiness probe's in "@test") and Kamailio answers it.
    assert!(
        wait(LONG, || k.count_all(&["KAM OPTIONS", "@branchline"]) >= 1),
        "no keepalive reached Kamailio:\n{}",
        k.log()
    );
    assert_eq!(reachability_count(&gw, false), 0, "{}", gw.log_text());
}

#[test]
fn wrong_trunk_password_is_refused_reported_and_backed_off() {
    let k = Kamailio::start(free_port());
    let gw = gateway(&k, "not-the-trunk-password");
    assert!(
        wait(LONG, || gw.log_count("trunk registration backing off") >= 1),
        "no backoff after the refused password:\n{}",
        both_logs(&gw, &k)
    );
    let failed = log_lines(&gw, "trunk registration failed");
    assert!(
        failed.iter().any(|l| l.contains("AuthRejected(401)")),
        "{failed:?}"
    );
    let backoff = log_lines(&gw, "trunk registration backing off");
    let secs: u64 = backoff[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("secs="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no secs= in {backoff:?}"));
    // The auth-failure backoff (15 min), not the 2 s retry of a network failure.
    assert!(secs >= 800, "backoff of {secs} s after a refused password");
    assert_eq!(reachability_count(&gw, true), 0, "{}", gw.log_text());
    assert_eq!(gw.log_count("trunk registered"), 0);
    // Kamailio saw the REGISTER and its answer (a slow box under qemu-user may
    // retransmit one), challenged every one, and saved nothing.
    let registers = k.count("KAM REGISTER ruri");
    assert!((2..=4).contains(&registers), "{}", k.log());
    assert_eq!(k.count("KAM REGISTER challenged"), registers, "{}", k.log());
    assert_eq!(k.count("KAM REGISTER saved"), 0);
    // No retry while backing off: a network failure would have retried within 2-4 s.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(k.count("KAM REGISTER ruri"), registers, "{}", k.log());
    assert_eq!(
        k.count_all(&["KAM OPTIONS", "@branchline"]),
        0,
        "no keepalive without a binding"
    );
    // The outside world cannot reach the branch: Kamailio has no binding.
    did_call_unrouted(&gw, &k);
}

#[test]
fn analog_phone_calls_out_through_kamailio_with_caller_id_and_pai() {
    let uas_port = free_port();
    let k = Kamailio::start(uas_port);
    let gw = gateway(&k, TRUNK_PASSWORD);
    wait_registered(&gw, &k, 1);
    assert!(wait(SOON, || reachability_count(&gw, true) >= 1));
    // SIPp plays the PSTN behind Kamailio and echoes the RTP it receives.
    let uas = sipp("uas_pstn.xml", uas_port, None, &["-m", "1", "-rtp_echo"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let phone = gw.sim.phone(1);
    phone.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    phone.dial("92125550199#");
    assert!(
        wait(LONG, || k.count("KAM INVITE outbound 2125550199") >= 1),
        "the outside call reached Kamailio with valid proxy credentials:\n{}",
        both_logs(&gw, &k)
    );
    // The phone's 1 kHz tone goes out through the trunk leg once the far end has
    // answered and comes back from SIPp's RTP echo (ringback is 440 + 480 Hz).
    phone.inject_tone(1000.0, 8000);
    let echoed = wait(LONG, || hears(&listen(&gw.sim, 1, 600, false), 1000.0));
    phone.inject_silence();
    assert!(
        echoed,
        "the phone hears its tone echoed over the trunk:\n{}",
        both_logs(&gw, &k)
    );
    phone.on_hook();
    wait_sipp(uas, "PSTN UAS (caller ID and PAI checked)", &gw, &k);
    // Kamailio challenged the INVITE: the box answered with the trunk credentials.
    assert!(
        k.count("KAM INVITE ruri=sip:2125550199@hq.test") >= 2,
        "{}",
        k.log()
    );
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!(c.caller.as_str(), "101");
    assert_eq!(c.caller_port, Some(1));
    assert_eq!(c.disposition, "answered");
}

#[test]
fn trunk_registers_again_after_kamailio_restarts_with_an_empty_location_table() {
    let mut k = Kamailio::start(free_port());
    let gw = gateway(&k, TRUNK_PASSWORD);
    wait_registered(&gw, &k, 1);
    assert!(wait(SOON, || reachability_count(&gw, true) >= 1));

    k.stop();
    // The keepalive (every 5 s, 8 s timeout) finds the outage long before the
    // 150-240 s refresh of the 300 s registration would.
    let stopped = Instant::now();
    assert!(
        wait(LONG, || reachability_count(&gw, false) >= 1),
        "the box did not notice Kamailio going away:\n{}",
        both_logs(&gw, &k)
    );
    let noticed = stopped.elapsed();
    assert!(
        log_lines(&gw, "trunk registration failed")
            .iter()
            .any(|l| l.contains("Timeout") || l.contains("Transport")),
        "{}",
        gw.log_text()
    );

    // Kamailio comes back on the same port with no bindings at all.
    k.spawn();
    assert_eq!(k.count("KAM REGISTER saved"), 0);
    let registered_before = gw.log_count("trunk registered");
    assert!(
        wait(LONG, || gw.log_count("trunk registered")
            > registered_before
            && k.count("KAM REGISTER saved") >= 1),
        "the box did not register again after the restart (outage noticed after {noticed:?}):\n{}",
        both_logs(&gw, &k)
    );
    assert!(wait(SOON, || reachability_count(&gw, true) >= 2));
    // And the outside world reaches the branch through the new Kamailio.
    did_call_answered(&gw, &k, 0);
}
