//! Call pickup on the real `branchd` and the simulated board (standard dial plan: PSTN
//! line 5 rings 101 and 102, line 6 rings 103): `**<ext>` picks up the call ringing
//! that phone, `*8` a call ringing a phone of the same ring group; audio flows between
//! the caller and the picker.

use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};

#[test]
fn directed_and_group_pickup_answer_a_ringing_call() {
    let gw = Gateway::start();
    let [p1, p2, p3, p4] = [1, 2, 3, 4].map(|p| gw.sim.phone(p));

    // 104 calls 101; 103 picks it up with **101 and talks with 104.
    p4.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    p4.dial("101");
    assert!(wait(SOON, || p1.is_ringing()), "101 rings");
    p3.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    p3.dial("**101");
    assert!(wait(SOON, || !p1.is_ringing()), "101 stops ringing");
    p4.inject_tone(1000.0, 6000);
    p3.inject_tone(1600.0, 6000);
    assert!(wait(SOON, || hears(
        &listen(&gw.sim, 3, 400, false),
        1000.0
    )));
    assert!(hears(&listen(&gw.sim, 4, 400, false), 1600.0));
    p4.on_hook();
    p3.on_hook();

    // 104 calls 101 again; 103 is in no ring group with 101: *8 is refused.
    p4.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    p4.dial("101");
    assert!(wait(SOON, || p1.is_ringing()));
    p3.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    p3.dial("*8");
    wait_tone(&gw.sim, 3, 480, 620).expect("nothing to pick up for 103");
    assert!(p1.is_ringing());
    p3.on_hook();
    // 102 shares line 5's group with 101: *8 picks the call up.
    p2.off_hook();
    wait_tone(&gw.sim, 2, 350, 440).expect("dial tone");
    p2.dial("*8");
    assert!(wait(SOON, || !p1.is_ringing()), "101 stops ringing");
    p2.inject_tone(1600.0, 6000);
    assert!(wait(SOON, || hears(
        &listen(&gw.sim, 2, 400, false),
        1000.0
    )));
    assert!(hears(&listen(&gw.sim, 4, 400, false), 1600.0));
    p2.on_hook();
    p4.on_hook();
    let cdrs = gw.wait_cdrs(3);
    let picked: Vec<_> = cdrs
        .iter()
        .filter(|c| c.disposition == "answered")
        .map(|c| c.callee_port)
        .collect();
    assert_eq!(picked, [Some(3), Some(2)], "{cdrs:?}");
}

/// A SIP phone picks up: analog 104 calls 101, SIPp registered as 201 sends an
/// INVITE to `**101`; the box answers it, 101 stops ringing, the analog caller hears
/// the SIP phone's audio, and the CDR names the phone's SIP call-id as the callee's.
#[test]
fn a_sip_phone_picks_up_a_call_ringing_an_analog_phone() {
    use crate::sip_calls::{
        call_args, cdr_sip_ids, free_port, register, sip_addr, sipp, wait_sipp,
    };
    use std::time::Duration;
    let gw = crate::sip_calls::gateway();
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let (p1, p4) = (gw.sim.phone(1), gw.sim.phone(4));
    p4.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    p4.dial("101");
    assert!(wait(SOON, || p1.is_ringing()), "101 rings");
    let args = call_args("**101", "201", "desk-phone-pass-one", target);
    let call = sipp(
        "uac_call.xml",
        target,
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    assert!(
        wait(SOON, || !p1.is_ringing()),
        "101 stops ringing:\n{}",
        gw.log_text()
    );
    // SIPp plays speech from its pcap: the analog caller hears it.
    std::thread::sleep(Duration::from_millis(600));
    p4.take_heard();
    std::thread::sleep(Duration::from_millis(1500));
    let heard = p4.take_heard();
    let rms = (heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>()
        / heard.len().max(1) as f64)
        .sqrt();
    assert!(
        rms > 100.0,
        "the caller hears the SIP picker (rms {rms:.0})"
    );
    // SIPp hangs up after its 4 s; the caller is left with busy tone.
    wait_sipp(call, "pickup call", &gw);
    p4.on_hook();
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!(c.caller, "104");
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.callee_port, None, "answered by the SIP phone, not FXS 1");
    let (_, callee_sip) = cdr_sip_ids(&gw, &c.call_id);
    assert!(
        callee_sip.is_some(),
        "the picker's SIP call-id is on the CDR"
    );
}
