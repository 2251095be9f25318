//! Analog phone to analog phone.

use std::time::Duration;

use branchline_board::dsp::tone_ratio;

use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};

#[test]
fn a_calls_b_they_talk_and_the_cdr_is_right() {
    let gw = Gateway::start();
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));

    a.off_hook();
    let dial = wait_tone(&gw.sim, 1, 350, 440).expect("US dial tone on lift");
    assert!(dial.cadence.is_continuous());
    // What the handset hears really is dial tone (the simulator synthesises it).
    let heard = listen(&gw.sim, 1, 500, false);
    let (r350, r440) = (tone_ratio(&heard, 350.0), tone_ratio(&heard, 440.0));
    assert!(
        r350 > 0.3 && r440 > 0.3,
        "dial tone heard: {r350:.2} {r440:.2}"
    );

    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "B rings");
    let cid = b.caller_id().expect("caller ID sent to B");
    assert_eq!(cid.number.as_str(), "101");
    assert_eq!(cid.name.as_str(), "Reception");
    wait_tone(&gw.sim, 1, 440, 480).expect("A hears US ringback");

    std::thread::sleep(Duration::from_millis(500));
    b.off_hook();
    assert!(
        wait(SOON, || a.tone().is_none()),
        "ringback stops on answer"
    );
    assert!(!b.is_ringing());

    // A speaks a 1 kHz tone; B must hear 1 kHz (not just bytes).
    a.inject_tone(1000.0, 8000);
    b.inject_tone(1600.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    let at_b = listen(&gw.sim, 2, 1000, false);
    let at_a = listen(&gw.sim, 1, 1000, false);
    assert!(hears(&at_b, 1000.0), "B hears A's 1 kHz");
    assert!(!hears(&at_b, 1600.0), "B does not hear itself");
    assert!(hears(&at_a, 1600.0), "A hears B's 1.6 kHz");

    std::thread::sleep(Duration::from_millis(500));
    b.on_hook();
    wait_tone(&gw.sim, 1, 480, 620).expect("A hears busy after B hangs up");
    a.on_hook();

    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!(c.direction, "internal");
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("101", "102"));
    assert_eq!((c.caller_port, c.callee_port), (Some(1), Some(2)));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "callee");
    assert!(c.answered);
    // Talked for about 2.7 s (sleeps above) and the call lasted longer than the talk.
    assert!(
        (2000..10_000).contains(&c.billable_ms),
        "billable {}",
        c.billable_ms
    );
    assert!(c.duration_ms > c.billable_ms);
    // The CDR went to the outbox in the same transaction.
    let payload = gw
        .outbox_payload(&c.call_id)
        .expect("outbox row for the CDR");
    assert_eq!(payload["caller"], "101");
    assert_eq!(payload["disposition"], "answered");
}

#[test]
fn busy_extension() {
    let gw = Gateway::start();
    gw.sim.phone(3).off_hook();
    wait_tone(&gw.sim, 3, 350, 440).expect("dial tone");
    let a = gw.sim.phone(1);
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("103");
    wait_tone(&gw.sim, 1, 480, 620).expect("busy tone");
    assert!(!gw.sim.phone(3).is_ringing());
    a.on_hook();
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.disposition, "busy");
    assert_eq!(c.callee, "103");
    assert!(!c.answered);
}

#[test]
fn unknown_number_gets_unobtainable_tone() {
    let gw = Gateway::start();
    let a = gw.sim.phone(1);
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("17");
    let t = wait_tone(&gw.sim, 1, 480, 620).expect("reorder tone");
    assert!(!t.cadence.is_continuous());
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.disposition, "unallocated");
    assert_eq!(c.callee, "17");
    // Nobody rang.
    for p in 2..=4 {
        assert!(!gw.sim.phone(p).is_ringing());
    }
}

#[test]
fn inter_digit_timeout_abandons_the_call() {
    let gw = Gateway::start();
    let a = gw.sim.phone(1);
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("10");
    assert!(
        wait(SOON, || a.tone().is_none()),
        "dial tone stops at the first digit"
    );
    // inter_digit_timeout_ms = 1500 in the test plan.
    wait_tone(&gw.sim, 1, 480, 620).expect("congestion after the inter-digit timeout");
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.disposition, "abandoned");
    assert_eq!(c.callee, "10");
    assert_eq!(c.hangup_side, "system");
}

#[test]
fn caller_hangs_up_while_ringing() {
    let gw = Gateway::start();
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(4));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("104");
    assert!(wait(SOON, || b.is_ringing()));
    a.on_hook();
    assert!(wait(SOON, || !b.is_ringing()), "ringing stops");
    let c = &gw.wait_cdrs(1)[0];
    assert_eq!(c.disposition, "no_answer");
    assert_eq!(c.hangup_side, "caller");
}

#[test]
fn call_waiting_by_hook_flash() {
    let gw = Gateway::start();
    let (a, b, d) = (gw.sim.phone(1), gw.sim.phone(2), gw.sim.phone(4));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()));
    b.off_hook();
    d.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    d.dial("102");
    wait_tone(&gw.sim, 2, 440, 0).expect("call-waiting tone at B");
    b.flash();
    assert!(wait(SOON, || b.tone().is_none()));
    d.inject_tone(900.0, 8000);
    a.inject_tone(1300.0, 8000);
    std::thread::sleep(Duration::from_millis(200));
    let heard = listen(&gw.sim, 2, 800, false);
    assert!(hears(&heard, 900.0), "B now talks to D");
    assert!(!hears(&heard, 1300.0), "A is on hold");
    d.on_hook();
    b.on_hook();
    // A, still held, rings B back.
    assert!(wait(SOON, || b.is_ringing()), "recall of the held call");
    a.on_hook();
    assert!(wait(SOON, || !b.is_ringing()));
    let cdrs = gw.wait_cdrs(2);
    assert!(cdrs.iter().all(|c| c.disposition == "answered"), "{cdrs:?}");
    // A's call was on hold from B's flash until A hung up (at least the second of
    // listening above); D's call was never held.
    for c in &cdrs {
        let payload = gw.outbox_payload(&c.call_id).expect("outbox row");
        let hold = payload.get("hold_ms").and_then(serde_json::Value::as_i64);
        if c.caller_port == Some(1) {
            let hold = hold.unwrap_or_else(|| panic!("A's call held: {payload}"));
            assert!(
                (1_000..=c.duration_ms).contains(&hold),
                "{hold} ms on hold of {c:?}"
            );
        } else {
            assert_eq!(hold, None, "D's call was not held: {payload}");
        }
    }
}

#[test]
fn broken_frames_are_counted_and_skipped() {
    let gw = Gateway::start();
    // Garbage, a frame with a bad CRC, and a lone terminator.
    gw.sim.write_raw(&[0x13, 0x37, 0xFF, 0x00]);
    gw.sim
        .write_raw(&[0x05, 0x02, 0x01, 0x07, 0x12, 0x34, 0x00]);
    gw.sim.write_raw(&[0x00]);
    assert!(gw.wait_log("invalid frame", SOON), "{}", gw.log_text());
    // The link still works: a normal call goes through.
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()));
}

/// Transfer from an analog phone: B takes A's call, flashes (A held), calls C and
/// hangs up once C answered (attended), then again while C still rings (on
/// ringing): each time A and C talk, and the CDR of the call they talk in names the
/// call B transferred and B in its `transfer_chain`.
#[test]
fn an_analog_phone_transfers_the_caller_attended_and_on_ringing() {
    let gw = Gateway::start();
    let (a, b, c) = (gw.sim.phone(1), gw.sim.phone(2), gw.sim.phone(3));
    for (round, attended) in [(0usize, true), (1, false)] {
        a.off_hook();
        wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
        a.dial("102");
        assert!(wait(SOON, || b.is_ringing()));
        b.off_hook();
        std::thread::sleep(Duration::from_millis(200));
        b.flash();
        wait_tone(&gw.sim, 2, 350, 440).expect("dial tone for the consultation");
        b.dial("103");
        assert!(wait(SOON, || c.is_ringing()), "{}", gw.log_text());
        if attended {
            c.off_hook();
            std::thread::sleep(Duration::from_millis(300));
        }
        b.on_hook();
        // B is done: neither rung back nor left with anything.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!b.is_ringing(), "no recall after a transfer");
        if !attended {
            assert!(c.is_ringing(), "C goes on ringing for A");
            c.off_hook();
        }
        a.inject_tone(1300.0, 8000);
        c.inject_tone(700.0, 8000);
        std::thread::sleep(Duration::from_millis(200));
        assert!(hears(&listen(&gw.sim, 3, 800, false), 1300.0), "C hears A");
        assert!(hears(&listen(&gw.sim, 1, 800, false), 700.0), "A hears C");
        c.on_hook();
        a.on_hook();
        let cdrs = gw.wait_cdrs(3 * round + 3 - usize::from(!attended));
        let transferred = cdrs
            .iter()
            .rev()
            .find(|r| r.caller == "101" && r.callee == "103")
            .unwrap_or_else(|| panic!("A-C call in {cdrs:?}"));
        assert_eq!(transferred.disposition, "answered", "{transferred:?}");
        let payload = gw.outbox_payload(&transferred.call_id).expect("outbox row");
        let chain = payload["transfer_chain"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(chain.len(), 1, "{payload}");
        assert_eq!(chain[0]["transferred_by"], "102", "{payload}");
        let first = cdrs
            .iter()
            .find(|r| r.call_id == chain[0]["call_id"].as_str().unwrap_or(""))
            .unwrap_or_else(|| panic!("the transferred call's CDR in {cdrs:?}"));
        assert_eq!(
            (first.caller.as_str(), first.callee.as_str()),
            ("101", "102")
        );
        assert_eq!(first.disposition, "answered");
        std::thread::sleep(Duration::from_millis(300));
    }
}
