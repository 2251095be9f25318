//! SIP phones' features against the real `branchd`: transfer (SIPp as a phone that
//! calls an analog phone and then sends REFER, RFC 3515, checked through the analog
//! phones' audio, the REFER's NOTIFYs in the scenarios, and the stored CDRs) and call
//! waiting switched off for an account.

use std::time::Duration;

use crate::harness::{hears, listen, wait, wait_tone, Gateway, DIAL_PLAN, SOON};
use crate::sip_calls::{
    call_args, free_port, gateway, register, sip_addr, sipp, wait_sipp, SIP_PLAN,
};

fn args(
    number: &str,
    caller: &str,
    password: &str,
    target: &str,
    gw: &crate::harness::Gateway,
) -> Vec<String> {
    let mut a = call_args(number, caller, password, sip_addr(gw));
    a.extend(["-set".to_owned(), "target".to_owned(), target.to_owned()]);
    a
}

#[test]
fn sip_phone_blind_transfers_its_analog_peer_to_another_analog_phone() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let a = args("101", "201", "desk-phone-pass-one", "102", &gw);
    let phone = sipp(
        "refer_blind.xml",
        target,
        port,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let p1 = gw.sim.phone(1);
    assert!(
        wait(SOON, || p1.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    p1.off_hook();
    // The REFER makes 102 ring with the transferee's (101's) caller ID.
    let p2 = gw.sim.phone(2);
    assert!(
        wait(SOON, || p2.is_ringing()),
        "FXS 2 rings after the REFER:\n{}",
        gw.log_text()
    );
    assert_eq!(p2.caller_id().expect("caller ID").number.as_str(), "101");
    p2.off_hook();
    // The phone gets NOTIFY 200 and the box's BYE: the scenario ends.
    wait_sipp(phone, "blind transfer", &gw);
    // 101 and 102 talk to each other.
    p1.inject_tone(1000.0, 8000);
    p2.inject_tone(1600.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    let at_2 = listen(&gw.sim, 2, 1000, false);
    let at_1 = listen(&gw.sim, 1, 1000, false);
    assert!(hears(&at_2, 1000.0), "102 hears 101");
    assert!(hears(&at_1, 1600.0), "101 hears 102");
    p2.on_hook();
    p1.on_hook();
    let cdrs = gw.wait_cdrs(2);
    let first = cdrs
        .iter()
        .find(|c| c.caller == "201")
        .expect("the phone's call");
    assert_eq!(first.callee, "101");
    assert_eq!(first.disposition, "answered");
    // The transferor's side (the callee, 101's peer) ended the first call.
    assert_eq!(first.hangup_side, "caller");
    let second = cdrs
        .iter()
        .find(|c| c.caller == "101")
        .expect("the transferred call");
    assert_eq!(second.callee, "102");
    assert_eq!(second.direction, "internal");
    assert_eq!(second.disposition, "answered");
    assert_eq!(second.caller_port, Some(1));
    assert_eq!(second.callee_port, Some(2));
    assert!(gw.log_text().contains("REFER accepted"));
}

#[test]
fn a_transfer_the_phone_may_not_dial_is_refused_and_the_call_goes_on() {
    let gw = gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    // 201 may not dial international numbers (US plan: 011 ...).
    let a = args("101", "201", "desk-phone-pass-one", "9011441234567", &gw);
    let phone = sipp(
        "refer_refused.xml",
        target,
        port,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let p1 = gw.sim.phone(1);
    assert!(
        wait(SOON, || p1.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    p1.off_hook();
    // 403 to the REFER; the phone then hangs up itself: its BYE ends the call (the CDR
    // is written) before the analog side hangs up (under qemu the BYE can take longer
    // than SIPp's exit).
    wait_sipp(phone, "refused REFER", &gw);
    let cdrs = gw.wait_cdrs(1);
    p1.on_hook();
    assert_eq!(cdrs.len(), 1, "no second call");
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(cdrs[0].hangup_side, "caller");
    assert!(
        !gw.sim.line(6).is_seized(),
        "no outside line was taken for the refused number"
    );
    assert!(gw
        .log_text()
        .contains("transfer refused (toll restriction)"));
}

#[test]
fn a_sip_phone_without_call_waiting_is_busy_while_on_a_call() {
    let gw = Gateway::start_with(&format!(
        "{DIAL_PLAN}\n{SIP_PLAN}\n[[sip_accounts]]\nextension = \"203\"\n\
         name = \"No Waiting\"\npassword = \"no-waiting-pass-three\"\ncall_waiting = false\n"
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "{}",
        gw.log_text()
    );
    let port = free_port();
    register(&gw, "203", "no-waiting-pass-three", port);
    // The phone answers one call (a second INVITE would fail the scenario).
    let uas = sipp("uas_answer.xml", sip_addr(&gw), port, &["-m", "1"])
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    let p4 = gw.sim.phone(4);
    p4.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    p4.dial("203");
    wait_tone(&gw.sim, 4, 440, 480).expect("ringback while the SIP phone rings");
    assert!(
        wait(SOON, || p4.tone().is_none()),
        "answered:\n{}",
        gw.log_text()
    );
    // A second caller gets busy tone at once.
    let p2 = gw.sim.phone(2);
    p2.off_hook();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    p2.dial("203");
    wait_tone(&gw.sim, 2, 480, 620).expect("busy tone: 203 has call waiting off");
    p2.on_hook();
    p4.on_hook();
    wait_sipp(uas, "uas (one call only)", &gw);
    let cdrs = gw.wait_cdrs(2);
    let busy = cdrs.iter().find(|c| c.caller == "102").expect("102's call");
    assert_eq!(busy.callee, "203");
    assert_eq!(busy.disposition, "busy");
    let answered = cdrs.iter().find(|c| c.caller == "104").expect("104's call");
    assert_eq!(answered.disposition, "answered");
}
