//! Calls over the FXO lines to and from the (simulated) PSTN.

use std::time::Duration;

use line_proto::CallerId;

use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};

#[test]
fn inbound_pstn_call_rings_the_group_with_caller_id() {
    let gw = Gateway::start();
    let line = gw.sim.line(5);
    line.ring(Some(
        CallerId::new("5551234", "ACME CORP").expect("valid caller id"),
    ));
    let (p1, p2) = (gw.sim.phone(1), gw.sim.phone(2));
    assert!(
        wait(SOON, || p1.is_ringing() && p2.is_ringing()),
        "ring group 101+102 rings"
    );
    for p in [&p1, &p2] {
        let cid = p.caller_id().expect("caller ID");
        assert_eq!(cid.number.as_str(), "5551234");
        assert_eq!(cid.name.as_str(), "ACME CORP");
    }
    assert!(!gw.sim.phone(3).is_ringing());
    p2.off_hook();
    assert!(wait(SOON, || line.is_seized()), "the line is answered");
    assert!(
        wait(SOON, || !p1.is_ringing()),
        "the other phone stops ringing"
    );

    line.inject_tone(1000.0, 8000);
    p2.inject_tone(700.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        hears(&listen(&gw.sim, 2, 800, false), 1000.0),
        "phone hears the PSTN caller"
    );
    assert!(
        hears(&listen(&gw.sim, 5, 800, true), 700.0),
        "PSTN caller hears the phone"
    );

    p2.on_hook();
    assert!(wait(SOON, || !line.is_seized()), "line released");
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.direction, "inbound");
    assert_eq!(c.caller, "5551234");
    assert_eq!(c.callee, "102");
    assert_eq!((c.caller_port, c.callee_port), (Some(5), Some(2)));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "callee");
}

#[test]
fn inbound_pstn_caller_gives_up() {
    let gw = Gateway::start();
    let line = gw.sim.line(6);
    line.ring(None);
    let p3 = gw.sim.phone(3);
    assert!(wait(SOON, || p3.is_ringing()));
    line.stop_ring();
    // No ring burst for 8 s means the caller hung up.
    assert!(wait(Duration::from_secs(20), || !p3.is_ringing()));
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.direction, "inbound");
    assert_eq!(c.disposition, "no_answer");
    assert_eq!(c.hangup_side, "caller");
    assert!(!line.is_seized());
}

#[test]
fn outbound_pstn_call_seizes_dials_and_sees_far_end_hangup() {
    let gw = Gateway::start();
    let a = gw.sim.phone(4);
    let line = gw.sim.line(5);
    a.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    a.dial("95550100#");
    assert!(wait(SOON, || line.is_seized()), "an outside line is seized");
    assert!(
        wait(SOON, || line.dialed() == "5550100"),
        "dialled {:?}",
        line.dialed()
    );
    line.answer();
    a.inject_tone(1000.0, 8000);
    line.inject_tone(500.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        hears(&listen(&gw.sim, 5, 800, true), 1000.0),
        "far end hears the phone"
    );
    assert!(
        hears(&listen(&gw.sim, 4, 800, false), 500.0),
        "phone hears the far end"
    );
    line.hang_up();
    wait_tone(&gw.sim, 4, 480, 620).expect("busy after the far end hangs up");
    assert!(wait(SOON, || !line.is_seized()), "line released");
    a.on_hook();
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.direction, "outbound");
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("104", "5550100"));
    assert_eq!(c.callee_port, Some(5));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "callee");
}

#[test]
fn outbound_uses_the_next_line_and_congests_when_none_is_free() {
    let gw = Gateway::start();
    let (a, b, c) = (gw.sim.phone(1), gw.sim.phone(2), gw.sim.phone(3));
    for (p, n) in [(&a, "9111#"), (&b, "9222#")] {
        p.off_hook();
        wait_tone(&gw.sim, p.port(), 350, 440).expect("dial tone");
        p.dial(n);
    }
    assert!(wait(SOON, || gw.sim.line(5).is_seized()
        && gw.sim.line(6).is_seized()));
    c.off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    c.dial("9333#");
    wait_tone(&gw.sim, 3, 480, 620).expect("congestion: no free line");
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "congestion");
    assert_eq!(cdrs[0].callee, "333");
}
