//! SIP against real peers: SIPp as local phones registering, calling analog phones
//! and being called, CANCEL, a wrong password leading to a ban, and raw malformed
//! messages. Every test runs its own `branchd` with its SIP listener on 127.0.0.1:0
//! (the bound port is read from the log) and picks free ports for SIPp.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_ports, wait, wait_tone, Gateway, DIAL_PLAN, SOON};

/// SIP accounts 201 and 202 (202 may dial international numbers).
pub(crate) const SIP_PLAN: &str = r#"
[media]
local_ip = "127.0.0.1"

[[sip_accounts]]
extension = "201"
name = "Desk Phone"
password = "desk-phone-pass-one"

[[sip_accounts]]
extension = "202"
name = "Soft Phone"
password = "soft-phone-pass-two"
international = true

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"
md5_first = true

[sip.guard]
auth_failures_before_ban = 3
ban_s = 60
"#;

const SIPP: &str = "/usr/bin/sipp";

/// A trunk at 127.0.0.1 (nothing listens there: `register = false`, the carrier is
/// known by its address), so SIPp's INVITEs from 127.0.0.1 are trunk calls.
pub fn trunk_gateway() -> Gateway {
    let trunk_port = free_port();
    let plan = format!(
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
register = false
keepalive_s = 0
"#
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sip")
        .join(name)
}

/// A gateway with the analog dial plan and the SIP accounts.
pub(crate) fn gateway() -> Gateway {
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}\n{SIP_PLAN}"));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

/// The daemon's UDP SIP address, from `sip endpoint listening kind=UDP addr=...`.
pub(crate) fn sip_addr(gw: &Gateway) -> SocketAddr {
    let log = gw.log_text();
    // The latest start's listener (a restarted gateway binds a new port).
    let line = log
        .lines()
        .rev()
        .map(crate::harness::strip_ansi)
        .find(|l| l.contains("sip endpoint listening") && l.contains("UDP"))
        .expect("listener log line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// A free even UDP port on 127.0.0.1 with the next three free too (RTP/RTCP, and
/// SIPp binds video RTP/RTCP above its media port); see [`free_ports`].
pub(crate) fn free_port() -> u16 {
    free_ports(4, false)
}

/// A SIPp command against `target` from 127.0.0.1:`port`.
pub(crate) fn sipp(scenario: &str, target: SocketAddr, port: u16, extra: &[&str]) -> Command {
    let mut c = Command::new(SIPP);
    c.arg("-sf")
        .arg(data(scenario))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string()])
        .args(["-mp", &free_port().to_string()])
        .args(["-timeout", "30s", "-timeout_error"])
        .args(extra)
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// SIPp arguments of a call from `caller` to `number` (SIPp computes the digest uri
/// from `-auth_uri`, by default the bare host, which the registrar rightly refuses
/// when it differs from the Request-URI).
pub(crate) fn call_args(
    number: &str,
    caller: &str,
    password: &str,
    target: SocketAddr,
) -> Vec<String> {
    [
        "-s",
        number,
        "-au",
        caller,
        "-ap",
        password,
        "-set",
        "caller",
        caller,
        "-m",
        "1",
        "-auth_uri",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{number}@{target}")])
    .collect()
}

/// A copy of scenario `template` (in `data/sip`) with `status` written in for its
/// `STATUS` placeholder (the final response it expects; SIPp fails on any other).
pub(crate) fn with_status(gw: &Gateway, template: &str, status: u16) -> PathBuf {
    let text = std::fs::read_to_string(data(template)).expect("scenario template");
    let name = template.trim_end_matches(".xml");
    let path = gw.dir.path().join(format!("{name}_{status}.xml"));
    std::fs::write(&path, text.replace("STATUS", &status.to_string())).expect("write");
    path
}

/// Runs SIPp to the end; panics with its stderr when it fails.
pub(crate) fn run_sipp(mut cmd: Command, what: &str, gw: &Gateway) {
    let out = cmd.output().expect("sipp runs");
    assert!(
        out.status.success(),
        "sipp {what} failed ({:?}): {}\nbranchd:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
}

/// What a SIPp process is doing, for a failure message: still running, or how it
/// ended and what it printed.
pub(crate) fn sipp_state(child: &mut Child) -> String {
    match child.try_wait() {
        Ok(None) => "still running".to_owned(),
        Ok(Some(status)) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            format!("ended {status:?}: {err}")
        }
        Err(e) => format!("unknown: {e}"),
    }
}

/// How long [`wait_sipp`] waits for a SIPp run (SIPp's own `-timeout` is 30 s).
pub(crate) const SIPP_LIMIT: Duration = Duration::from_secs(40);

/// Waits up to [`SIPP_LIMIT`] for SIPp to end; it must succeed.
pub(crate) fn wait_sipp(child: Child, what: &str, gw: &Gateway) {
    wait_sipp_for(child, what, gw, SIPP_LIMIT);
}

/// Waits up to `limit` for SIPp to end; it must succeed (else its stderr and the
/// daemon's log say why). Killed and failed when still running after `limit`.
pub(crate) fn wait_sipp_for(mut child: Child, what: &str, gw: &Gateway, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(
                status.success(),
                "sipp {what} failed ({status:?}): {err}\nbranchd:\n{}",
                gw.log_text()
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "sipp {what} still running after {limit:?}:\n{}",
                gw.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn register(gw: &Gateway, ext: &str, password: &str, port: u16) {
    let cmd = sipp(
        "register_auth.xml",
        sip_addr(gw),
        port,
        &["-s", ext, "-au", ext, "-ap", password, "-m", "1"],
    );
    run_sipp(cmd, "register", gw);
}

/// Sends raw bytes from a fresh socket and returns the first answer within `wait`.
fn raw(target: SocketAddr, bytes: &[u8], wait: Duration) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(wait)).expect("timeout");
    // A datagram the kernel refuses as too long never reached the daemon: silence.
    if s.send_to(bytes, target).is_err() {
        return None;
    }
    let mut buf = vec![0u8; 65536];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:branch.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n\
         From: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:branch.test>\r\nCall-ID: {branch}@probe\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The SIP Call-IDs stored on the CDR of `call_id`.
pub(crate) fn cdr_sip_ids(gw: &Gateway, call_id: &str) -> (Option<String>, Option<String>) {
    gw.db()
        .query_row(
            "SELECT caller_sip_call_id, callee_sip_call_id FROM cdrs WHERE call_id = ?1",
            [call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("cdr row")
}

#[test]
fn phone_registers_with_digest_and_a_wrong_password_gets_banned() {
    let gw = gateway();
    let target = sip_addr(&gw);
    register(&gw, "201", "desk-phone-pass-one", free_port());
    assert!(gw.wait_log("added 201", SOON), "binding logged");
    let answer = raw(target, options("alive1").as_bytes(), Duration::from_secs(2))
        .expect("OPTIONS answered before the ban");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    // Three wrong passwords (each REGISTER gets 401 twice) ban 127.0.0.1.
    let cmd = sipp(
        "register_wrong.xml",
        target,
        free_port(),
        &[
            "-s",
            "201",
            "-au",
            "201",
            "-ap",
            "not-the-password",
            "-m",
            "3",
            "-l",
            "1",
        ],
    );
    run_sipp(cmd, "wrong password", &gw);
    assert!(
        gw.wait_log("sip source banned", SOON),
        "no ban:\n{}",
        gw.log_text()
    );
    assert_eq!(gw.log_count("sip registration refused"), 3);
    // Banned: silence, even for a harmless OPTIONS.
    assert_eq!(
        raw(
            target,
            options("alive2").as_bytes(),
            Duration::from_millis(1500)
        ),
        None
    );
}

#[test]
fn sip_phone_calls_an_analog_phone_rtp_flows_and_the_analog_side_hangs_up() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let call = sipp(
        "uac_call.xml",
        target,
        port,
        &call_args("101", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    let cid = phone.caller_id().expect("caller ID");
    assert_eq!(cid.number.as_str(), "201");
    phone.off_hook();
    // SIPp plays G.711 A-law speech from its pcap: the analog phone hears it.
    std::thread::sleep(Duration::from_millis(600));
    phone.take_heard();
    std::thread::sleep(Duration::from_millis(1500));
    let heard = phone.take_heard();
    let rms = (heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
        / heard.len().max(1) as f64)
        .sqrt();
    assert!(
        rms > 100.0,
        "the analog phone hears the SIP phone (rms {rms:.0})"
    );
    phone.on_hook();
    wait_sipp(call, "call (far end hangs up)", &gw);

    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("201", "101"));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.callee_port, Some(1));
    let (caller_sip, callee_sip) = cdr_sip_ids(&gw, &c.call_id);
    assert!(
        caller_sip.is_some_and(|id| !id.is_empty()),
        "caller's SIP Call-ID on the CDR"
    );
    assert_eq!(callee_sip, None);
    assert!(gw.wait_log("sip leg ended", SOON));
}

#[test]
fn sip_phone_hangs_up_first() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let call = sipp(
        "uac_call.xml",
        target,
        port,
        &call_args("102", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(2);
    assert!(wait(SOON, || phone.is_ringing()), "FXS 2 rings");
    phone.off_hook();
    // SIPp sends BYE 4 s after its ACK; the analog phone is left with busy tone.
    wait_sipp(call, "call (SIP phone hangs up)", &gw);
    wait_tone(&gw.sim, 2, 480, 620).expect("busy tone after the SIP phone hung up");
    phone.on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(cdrs[0].hangup_side, "caller");
}

#[test]
fn sip_phone_cancels_before_answer() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    let call = sipp(
        "uac_cancel.xml",
        target,
        port,
        &call_args("103", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(3);
    assert!(wait(SOON, || phone.is_ringing()), "FXS 3 rings");
    wait_sipp(call, "cancel", &gw);
    assert!(
        wait(SOON, || !phone.is_ringing()),
        "ringing stops on CANCEL"
    );
    let cdrs = gw.wait_cdrs(1);
    assert!(!cdrs[0].answered);
    assert_eq!(cdrs[0].callee, "103");
    assert!(gw.log_text().contains("caller cancelled"));
}

#[test]
fn analog_phone_calls_a_registered_sip_phone() {
    let gw = gateway();
    let port = free_port();
    register(&gw, "202", "soft-phone-pass-two", port);
    let uas = sipp("uas_answer.xml", sip_addr(&gw), port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let phone = gw.sim.phone(4);
    phone.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    phone.dial("202");
    wait_tone(&gw.sim, 4, 440, 480).expect("ringback while the SIP phone rings");
    assert!(
        wait(SOON, || phone.tone().is_none()),
        "answered:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(1000));
    phone.on_hook();
    wait_sipp(uas, "uas", &gw);
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("104", "202"));
    assert_eq!(c.disposition, "answered");
    let (_, callee_sip) = cdr_sip_ids(&gw, &c.call_id);
    assert!(callee_sip.is_some(), "callee's SIP Call-ID on the CDR");
}

#[test]
fn malformed_messages_get_400_501_or_silence_and_calls_still_work() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let head = |method: &str, extra: &str, cl: &str| {
        format!(
            "{method} sip:101@branch.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm{method}\r\n\
             From: <sip:x@127.0.0.1>;tag=m1\r\nTo: <sip:101@branch.test>\r\nCall-ID: m-{method}@t\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {cl}\r\n\r\n"
        )
    };
    let mut huge = head("OPTIONS", "", "0").into_bytes();
    let pos = huge.len() - 4;
    // A 64 KB message (one header line of almost all of it) that still fits a datagram.
    let big_header = format!("\r\nX-Big: {}", "a".repeat(65_000 - huge.len()));
    huge.splice(pos..pos, big_header.bytes());
    let mut bad_utf8 = head("OPTIONS", "Subject: \u{1}\r\n", "0").into_bytes();
    let at = bad_utf8
        .windows(8)
        .position(|w| w == b"Subject:")
        .expect("subject");
    bad_utf8[at + 9] = 0xff;
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "Content-Length beyond the body",
            head("OPTIONS", "", "500").into_bytes(),
            &["SIP/2.0 400"],
        ),
        (
            "missing Via",
            head("OPTIONS", "", "0")
                .replace(
                    "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKmOPTIONS\r\n",
                    "",
                )
                .into_bytes(),
            &[],
        ),
        (
            "missing CSeq",
            head("OPTIONS", "", "0")
                .replace("CSeq: 1 OPTIONS\r\n", "")
                .into_bytes(),
            &[],
        ),
        ("64 KB header", huge, &["SIP/2.0 400", "SIP/2.0 513"]),
        ("invalid UTF-8", bad_utf8, &["SIP/2.0 400"]),
        (
            "unknown method",
            head("FROBNICATE", "", "0").into_bytes(),
            &["SIP/2.0 501"],
        ),
        (
            "garbage",
            b"\x00\x01\x02 not sip at all\r\n\r\n".to_vec(),
            &[],
        ),
    ];
    for (what, bytes, allowed) in &cases {
        match raw(target, bytes, Duration::from_millis(700)) {
            None => {}
            Some(answer) => assert!(
                allowed.iter().any(|a| answer.starts_with(a)),
                "{what}: unexpected answer {answer:?}"
            ),
        }
    }
    assert!(
        gw.log_count("malformed sip message") >= 5,
        "{}",
        gw.log_text()
    );
    // The daemon still serves: a full call from a SIP phone to an analog phone.
    let port = free_port();
    let call = sipp(
        "uac_call.xml",
        target,
        port,
        &call_args("101", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings after the malformed suite"
    );
    phone.off_hook();
    std::thread::sleep(Duration::from_millis(800));
    phone.on_hook();
    wait_sipp(call, "call after malformed messages", &gw);
    assert_eq!(gw.wait_cdrs(1)[0].disposition, "answered");
}

/// RMS level of what the simulated phone `phone` hears over the next `ms`.
fn heard_rms(phone: &branchline_board::sim::Phone, ms: u64) -> f64 {
    phone.take_heard();
    std::thread::sleep(Duration::from_millis(ms));
    let heard = phone.take_heard();
    (heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / heard.len().max(1) as f64).sqrt()
}

/// The per-leg quality columns of the CDR of `call_id` (loss %, jitter ms, MOS of the
/// caller's leg, then of the callee's leg).
fn cdr_quality(gw: &Gateway, call_id: &str) -> [Option<f64>; 6] {
    gw.db()
        .query_row(
            "SELECT caller_loss_percent, caller_jitter_ms, caller_mos,
                    callee_loss_percent, callee_jitter_ms, callee_mos
             FROM cdrs WHERE call_id = ?1",
            [call_id],
            |r| {
                Ok([
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ])
            },
        )
        .expect("cdr row")
}

/// A SIPp UAS on 127.0.0.1:`port` running `scenario` once (no target: it waits).
pub(crate) fn uas(scenario: &str, port: u16) -> Command {
    uas_calls(scenario, port, 1)
}

/// A SIPp UAS on 127.0.0.1:`port` that ends after `calls` calls (60 s at most).
pub(crate) fn uas_calls(scenario: &str, port: u16, calls: usize) -> Command {
    let mut c = Command::new(SIPP);
    let timeout = if calls > 1 { "60s" } else { "30s" };
    c.arg("-sf")
        .arg(data(scenario))
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string()])
        .args(["-mp", &free_port().to_string()])
        .args([
            "-timeout",
            timeout,
            "-timeout_error",
            "-m",
            &calls.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn late_offer_invite_is_answered_with_our_offer_and_the_ack_answer_starts_rtp() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    // INVITE without SDP; the scenario checks the 200 carries an offer and answers
    // it in the ACK, then plays RTP from its pcap.
    let call = sipp(
        "uac_late_offer.xml",
        target,
        port,
        &call_args("101", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings for a late-offer INVITE (not 488):\n{}",
        gw.log_text()
    );
    phone.off_hook();
    assert!(
        gw.wait_log("SDP answer in the ACK", SOON),
        "no answer taken from the ACK:\n{}",
        gw.log_text()
    );
    // The media started from the ACK's answer: the phone hears the pcap's speech.
    std::thread::sleep(Duration::from_millis(500));
    let rms = heard_rms(&phone, 1500);
    assert!(
        rms > 100.0,
        "the analog phone hears the late-offer phone (rms {rms:.0})"
    );
    phone.on_hook();
    wait_sipp(call, "late offer call", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "answered");
    // The SIP leg's quality is on the CDR (RTP arrived on it).
    let q = cdr_quality(&gw, &cdrs[0].call_id);
    assert!(
        q[..3].iter().all(Option::is_some),
        "caller leg quality: {q:?}"
    );
    assert!(q[2].is_some_and(|mos| (1.0..=5.0).contains(&mos)), "{q:?}");
    assert_eq!(q[3..], [None, None, None], "the callee is an analog port");
    let payload = gw.outbox_payload(&cdrs[0].call_id).expect("outbox row");
    assert!(payload["caller_quality"]["mos"].is_number(), "{payload}");
}

#[test]
fn early_media_from_the_trunk_is_heard_by_an_analog_caller_and_goes_on_after_200() {
    let trunk_port = free_port();
    let mut registrar = uas("uas_register_ok.xml", trunk_port)
        .spawn()
        .expect("sipp registrar starts");
    std::thread::sleep(Duration::from_millis(300));
    let plan = format!(
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
caller_id = [{{ extensions = "10X", number = "+4930555{{ext}}" }}]
"#
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("trunk registered", SOON),
        "no registration:\n{}",
        gw.log_text()
    );
    assert!(
        wait_child(&mut registrar),
        "the registrar scenario failed:\n{}",
        gw.log_text()
    );
    let far_end = uas("uas_trunk_early_media.xml", trunk_port)
        .spawn()
        .expect("sipp far end starts");
    std::thread::sleep(Duration::from_millis(300));
    let phone = gw.sim.phone(4);
    phone.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    phone.dial("90301234#");
    assert!(
        gw.wait_log("early media from the far end", SOON),
        "no early media:\n{}",
        gw.log_text()
    );
    // The far end's announcement replaces the local ringback tone.
    std::thread::sleep(Duration::from_millis(300));
    let early = heard_rms(&phone, 1000);
    assert!(
        early > 100.0,
        "early media heard before the answer (rms {early:.0})"
    );
    assert_eq!(phone.tone(), None, "no local ringback over the early media");
    // The 180 after the 183 keeps it, and the 200 with the same SDP goes on without
    // restarting the media.
    assert!(
        gw.wait_log("outgoing sip call answered", SOON),
        "not answered:\n{}",
        gw.log_text()
    );
    let log = gw.log_text();
    let answered = log
        .lines()
        .map(crate::harness::strip_ansi)
        .find(|l| l.contains("outgoing sip call answered"))
        .unwrap_or_default();
    assert!(
        answered.contains("early_media_kept=true"),
        "the answer restarted the media: {answered}"
    );
    let after = heard_rms(&phone, 800);
    assert!(
        after > 100.0,
        "the media goes on after the 200 (rms {after:.0})"
    );
    phone.on_hook();
    wait_sipp(far_end, "trunk far end with early media", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(cdrs[0].callee, "0301234");
    let q = cdr_quality(&gw, &cdrs[0].call_id);
    assert!(
        q[3..].iter().all(Option::is_some),
        "trunk leg quality: {q:?}"
    );
}

/// Waits (bounded, only against a hang) for a SIPp child; whether it succeeded.
pub(crate) fn wait_child(child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    false
}

/// Overload: with one RTP port pair in `[media]` and that pair leased by a ringing
/// trunk call, the next INVITE is refused at once with `503` and `Retry-After`
/// (nothing rings for it), instead of waiting to time out; once the first call is
/// gone the pair is free again and a call goes through.
#[test]
fn an_invite_when_every_rtp_port_pair_is_leased_gets_503_with_retry_after() {
    let trunk_port = free_port();
    let rtp = crate::harness::free_ports(2, false);
    let plan = format!(
        r#"{DIAL_PLAN}
[media]
local_ip = "127.0.0.1"
rtp_port_min = {rtp}
rtp_port_max = {rtp_max}

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"

[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
register = false
keepalive_s = 0
"#,
        rtp_max = rtp + 1
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    let target = sip_addr(&gw);
    let invite = |socket: &UdpSocket, call: &str, ext: &str| {
        let local = socket.local_addr().expect("local addr");
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let msg = format!(
            "INVITE sip:{ext}@branch.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call};rport\r\n\
             From: <sip:5551234@carrier.test>;tag=t{call}\r\nTo: <sip:{ext}@branch.test>\r\n\
             Call-ID: {call}@carrier\r\nCSeq: 1 INVITE\r\nContact: <sip:5551234@{local}>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        socket.send_to(msg.as_bytes(), target).expect("send INVITE");
    };
    // Answers on `socket` until one starts with `status` (or none within `within`).
    let answer = |socket: &UdpSocket, status: &str, within: Duration| -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                return None;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with(status) {
                return Some(text);
            }
        }
        None
    };

    let first = UdpSocket::bind("127.0.0.1:0").expect("bind");
    invite(&first, "overload-1", "101");
    assert!(
        answer(&first, "SIP/2.0 180", SOON).is_some(),
        "the first call does not ring:\n{}",
        gw.log_text()
    );
    // The 180 goes out when call control rings the port; the simulated phone's
    // ringing follows the line controller's frames a moment later.
    assert!(
        wait(SOON, || gw.sim.phone(1).is_ringing()),
        "phone 1 not ringing"
    );

    let second = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sent = Instant::now();
    invite(&second, "overload-2", "102");
    let refused = answer(&second, "SIP/2.0 503", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no 503 for the second call:\n{}", gw.log_text()));
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "the 503 came late: {:?}",
        sent.elapsed()
    );
    let retry_after = refused
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After:"))
        .map(str::trim);
    assert_eq!(retry_after, Some("2"), "{refused}");
    assert!(
        !gw.sim.phone(2).is_ringing(),
        "the refused call rang its phone"
    );
    assert!(gw.wait_log("no RTP ports for an incoming call: 503", SOON));

    // The first caller gives up (CANCEL): the pair comes free, a new call rings.
    let local = first.local_addr().expect("local addr");
    let cancel = format!(
        "CANCEL sip:101@branch.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKoverload-1;rport\r\n\
         From: <sip:5551234@carrier.test>;tag=toverload-1\r\nTo: <sip:101@branch.test>\r\n\
         Call-ID: overload-1@carrier\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    first
        .send_to(cancel.as_bytes(), target)
        .expect("send CANCEL");
    assert!(
        answer(&first, "SIP/2.0 487", SOON).is_some(),
        "no 487 after CANCEL:\n{}",
        gw.log_text()
    );
    // The leg's ports are released as the call ends, which may come just after the
    // 487: a new call (a new INVITE each time) rings within a short while.
    let deadline = Instant::now() + SOON;
    let mut attempt = 0;
    let rang = loop {
        attempt += 1;
        let next = UdpSocket::bind("127.0.0.1:0").expect("bind");
        invite(&next, &format!("overload-3-{attempt}"), "102");
        if answer(&next, "SIP/2.0 180", Duration::from_millis(500)).is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(rang, "the pair did not come free:\n{}", gw.log_text());
}
