//! Caller screening end to end: the real `branchd` with a SIP trunk (trusted by
//! address, no registration), entries added and the mode flipped through the JSON
//! API, SIPp as the carrier offering calls, the simulated board's phones and PSTN
//! line, and the store's CDRs and hit counters.

use std::path::PathBuf;
use std::time::Duration;

use line_proto::CallerId;
use serde_json::json;

use crate::api_client::create_admin;
use crate::harness::{wait, Gateway, SOON};
use crate::sip_calls::{
    free_port, sip_addr, sipp, sipp_state, trunk_gateway as gateway, wait_sipp,
};

/// The refusal scenario with `status` written in (SIPp fails on any other answer).
fn refused_scenario(gw: &Gateway, status: u16) -> PathBuf {
    crate::sip_calls::with_status(gw, "uac_trunk_refused.xml", status)
}

/// The carrier offers a call from `caller` to 101 and expects `status`.
fn trunk_call_refused(gw: &Gateway, caller: &str, status: u16) {
    let scenario = refused_scenario(gw, status);
    let child = sipp(
        scenario.to_str().expect("utf-8 path"),
        sip_addr(gw),
        free_port(),
        &["-s", "101", "-set", "caller", caller, "-m", "1"],
    )
    .spawn()
    .expect("sipp starts");
    wait_sipp(
        child,
        &format!("trunk call from {caller} refused with {status}"),
        gw,
    );
}

/// The carrier offers a call from `caller` to 101: FXS 1 rings (with the caller's
/// number), then the caller gives up.
fn trunk_call_rings(gw: &Gateway, caller: &str) {
    let mut child = sipp(
        "uac_trunk_ringing.xml",
        sip_addr(gw),
        free_port(),
        &["-s", "101", "-set", "caller", caller, "-m", "1"],
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings for {caller} (sipp: {}):\n{}",
        sipp_state(&mut child),
        gw.log_text()
    );
    assert_eq!(
        phone.caller_id().map(|c| c.number.to_string()).as_deref(),
        Some(caller)
    );
    wait_sipp(child, &format!("trunk call from {caller} rings"), gw);
    assert!(wait(SOON, || !phone.is_ringing()), "FXS 1 stops ringing");
}

/// `(disposition, blocked_mode, blocked_action, blocked_pattern)` of the CDR of the
/// call from `caller`, the latest one.
fn blocked_cdr(
    gw: &Gateway,
    caller: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    gw.db()
        .query_row(
            "SELECT disposition, blocked_mode, blocked_action, blocked_pattern FROM cdrs
              WHERE caller = ?1 ORDER BY started_at_ms DESC, rowid DESC LIMIT 1",
            [caller],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("cdr")
}

fn hits(gw: &Gateway, pattern: &str) -> i64 {
    gw.db()
        .query_row(
            "SELECT hits FROM blacklist WHERE pattern = ?1",
            [pattern],
            |r| r.get(0),
        )
        .expect("entry")
}

#[test]
fn blacklisted_trunk_callers_are_refused_others_ring_and_allow_mode_flips_it() {
    let gw = gateway();
    let api = create_admin(&gw, "ada", "a-Good-passphrase-42");
    assert!(gw.wait_log("blacklist loaded", SOON));

    // Before any entry, the premium-rate caller rings through.
    trunk_call_rings(&gw, "09005551234");

    let (status, entry) = api.post(
        "/api/v1/blacklist",
        json!({ "pattern": "0900*", "reason": "premium-rate spam", "action": "reject" }),
    );
    assert_eq!(status, 201, "{entry}");
    // The daemon reloads the list without a restart.
    assert!(
        gw.wait_log_count("blacklist reloaded", 1, SOON),
        "no reload:\n{}",
        gw.log_text()
    );
    trunk_call_refused(&gw, "09005551234", 403);
    assert!(!gw.sim.phone(1).is_ringing(), "nobody rang");
    gw.wait_cdrs(2);
    assert_eq!(
        blocked_cdr(&gw, "09005551234"),
        (
            "congestion".to_owned(),
            Some("deny".to_owned()),
            Some("reject".to_owned()),
            Some("0900*".to_owned())
        )
    );
    // Another number is not screened out.
    trunk_call_rings(&gw, "0301234567");
    gw.wait_cdrs(3);
    assert_eq!(blocked_cdr(&gw, "0301234567").1, None);

    // The hit is counted once the store task wrote it; the API shows it.
    assert!(
        wait(SOON, || hits(&gw, "0900*") == 1),
        "hit not counted:\n{}",
        gw.log_text()
    );
    let (status, list) = api.get("/api/v1/blacklist");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["entries"][0]["hits"], 1);
    assert!(list["entries"][0]["last_hit_ms"].is_i64(), "{list}");
    // The CDR went up with its blocked part.
    let call_id: String = gw
        .db()
        .query_row(
            "SELECT call_id FROM cdrs WHERE blocked_pattern = '0900*'",
            [],
            |r| r.get(0),
        )
        .expect("blocked cdr");
    let payload = gw.outbox_payload(&call_id).expect("outbox row");
    assert_eq!(payload["blocked"]["pattern"], "0900*", "{payload}");

    // Allow mode: only listed callers get through; the 0300 caller is listed.
    let (status, entry) = api.post(
        "/api/v1/blacklist",
        json!({ "pattern": "0301234567", "reason": "our customer" }),
    );
    assert_eq!(status, 201, "{entry}");
    assert!(gw.wait_log_count("blacklist reloaded", 2, SOON));
    let (status, mode) = api.put(
        "/api/v1/blacklist/mode",
        json!({ "mode": "allow", "default_action": "busy" }),
    );
    assert_eq!(status, 200, "{mode}");
    assert!(gw.wait_log_count("blacklist reloaded", 3, SOON));
    trunk_call_rings(&gw, "0301234567");
    trunk_call_refused(&gw, "0407654321", 486);
    gw.wait_cdrs(5);
    assert_eq!(
        blocked_cdr(&gw, "0407654321"),
        (
            "busy".to_owned(),
            Some("allow".to_owned()),
            Some("busy".to_owned()),
            None
        )
    );
    // The 0900 entry keeps its own action (reject) inside the allowlist.
    trunk_call_refused(&gw, "09005551234", 403);
    assert!(wait(SOON, || hits(&gw, "0900*") == 2));
}

#[test]
fn a_blacklisted_pstn_caller_is_not_answered_and_nobody_rings() {
    let gw = Gateway::start();
    let api = create_admin(&gw, "ada", "a-Good-passphrase-42");
    let (status, entry) = api.post("/api/v1/blacklist", json!({ "pattern": "5551234" }));
    assert_eq!(status, 201, "{entry}");
    assert!(gw.wait_log_count("blacklist reloaded", 1, SOON));

    let line = gw.sim.line(5);
    assert!(line.ring(Some(CallerId::new("5551234", "SPAMMER").expect("cid"))));
    assert!(
        gw.wait_log("inbound call blocked by caller screening", SOON),
        "not screened:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!gw.sim.phone(1).is_ringing(), "no extension rings");
    assert!(!line.is_seized(), "the line is not answered");
    // The caller gives up: the CDR is written when the ringing has stopped long enough.
    line.stop_ring();
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "busy");
    assert!(!cdrs[0].answered);
    assert_eq!(blocked_cdr(&gw, "5551234").3.as_deref(), Some("5551234"));
    assert!(wait(SOON, || hits(&gw, "5551234") == 1));

    // Another caller rings FXS 1.
    assert!(line.ring(Some(CallerId::new("5550000", "FRIEND").expect("cid"))));
    assert!(
        wait(SOON, || gw.sim.phone(1).is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    line.stop_ring();
}
