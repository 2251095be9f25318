//! Media inactivity timeout against a real SIP peer: a SIPp phone calls an analog
//! phone and, once answered, either sends no RTP at all (its far end "vanished": the
//! gateway must end the call with a BYE after `[media] rtp_timeout_s` and say why in
//! the CDR) or keeps sending RTP for well over the timeout (the call must stay up
//! until the phone hangs up itself).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{wait, wait_tone, Gateway, DIAL_PLAN, SOON};
use crate::sip_calls::{call_args, free_port, register, sip_addr, sipp, wait_sipp, SIP_PLAN};

/// The timeout of these tests' gateways.
const TIMEOUT_S: u64 = 2;

/// The SIP accounts of `sip_calls` with `rtp_timeout_s` set to `timeout_s`.
fn gateway(timeout_s: u64) -> Gateway {
    let media = "local_ip = \"127.0.0.1\"\n";
    assert!(SIP_PLAN.contains(media), "SIP_PLAN's [media] changed");
    let sip = SIP_PLAN.replace(media, &format!("{media}rtp_timeout_s = {timeout_s}\n"));
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}\n{sip}"));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

/// A copy of `uac_call.xml` changed by `edits` (each `(from, to)` must occur).
fn scenario(gw: &Gateway, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sip/uac_call.xml");
    let mut text = std::fs::read_to_string(template).expect("uac_call.xml");
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in uac_call.xml");
        text = text.replace(from, to);
    }
    let path = gw.dir.path().join(name);
    std::fs::write(&path, text).expect("write scenario");
    path
}

fn cdr_cause(gw: &Gateway, call_id: &str) -> Option<String> {
    gw.db()
        .query_row(
            "SELECT hangup_cause FROM cdrs WHERE call_id = ?1",
            [call_id],
            |r| r.get(0),
        )
        .expect("cdr row")
}

/// Registers 201, has it call 101 with `scenario`, answers on FXS 1; returns SIPp and
/// when the phone answered.
fn answered_call(gw: &Gateway, scenario: &Path) -> (std::process::Child, Instant) {
    let target = sip_addr(gw);
    let port = free_port();
    register(gw, "201", "desk-phone-pass-one", port);
    let args = call_args("101", "201", "desk-phone-pass-one", target);
    let call = sipp(
        scenario.to_str().expect("utf-8 path"),
        target,
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    phone.off_hook();
    (call, Instant::now())
}

#[test]
fn a_sip_caller_that_sends_no_rtp_is_hung_up_after_the_timeout() {
    let gw = gateway(TIMEOUT_S);
    // No RTP from the phone, and it waits up to 15 s for the gateway's BYE (no BYE:
    // SIPp fails on the timeout).
    let silent = scenario(
        &gw,
        "uac_call_silent.xml",
        &[
            (
                r#"<exec play_pcap_audio="/usr/share/sip-tester/g711a.pcap"/>"#,
                "",
            ),
            (
                r#"<recv request="BYE" timeout="4000" ontimeout="local_bye" next="remote_bye"/>"#,
                r#"<recv request="BYE" timeout="15000" next="remote_bye"/>"#,
            ),
        ],
    );
    let (call, answered) = answered_call(&gw, &silent);
    wait_sipp(call, "silent call (gateway sends BYE)", &gw);
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_secs(TIMEOUT_S) - Duration::from_millis(200),
        "BYE only after the timeout ({after:?})"
    );
    assert!(gw.wait_log("media timeout", SOON), "{}", gw.log_text());
    // The analog phone is released like after a far-end hangup: busy tone.
    wait_tone(&gw.sim, 1, 480, 620).expect("busy tone after the media timeout");
    gw.sim.phone(1).on_hook();
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "system");
    assert_eq!(cdr_cause(&gw, &c.call_id).as_deref(), Some("media_timeout"));
    // And so says the record HQ gets.
    let payload = gw.outbox_payload(&c.call_id).expect("outbox record");
    assert_eq!(payload["hangup_cause"], "media_timeout", "{payload}");
}

#[test]
fn a_call_whose_rtp_keeps_flowing_outlives_the_timeout() {
    let gw = gateway(TIMEOUT_S);
    // RTP from the pcap (about 6.8 s of speech) while the phone talks 6 s, three
    // timeouts, then hangs up itself.
    let talking = scenario(
        &gw,
        "uac_call_6s.xml",
        &[(
            r#"<recv request="BYE" timeout="4000""#,
            r#"<recv request="BYE" timeout="6000""#,
        )],
    );
    let (call, _) = answered_call(&gw, &talking);
    wait_sipp(call, "talking call (phone hangs up)", &gw);
    wait_tone(&gw.sim, 1, 480, 620).expect("busy tone after the SIP phone hung up");
    gw.sim.phone(1).on_hook();
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!(c.disposition, "answered");
    assert_eq!(
        c.hangup_side, "caller",
        "the phone hung up, not the gateway"
    );
    assert!(c.billable_ms >= 5_500, "talked {} ms", c.billable_ms);
    assert_eq!(cdr_cause(&gw, &c.call_id), None);
    assert!(
        !gw.log_text().contains("media timeout"),
        "{}",
        gw.log_text()
    );
}
