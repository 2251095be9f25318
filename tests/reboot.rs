//! A reboot from the API on the real `branchd`: refused for an agent, refused while a
//! call is up, then forced: the call is cut with its CDR, the reboot is audited, and
//! the daemon exits with the status the systemd unit turns into a reboot
//! (`RestartPreventExitStatus=6` + `FailureAction=reboot`).

use std::os::unix::process::ExitStatusExt;

use serde_json::json;

use crate::api_client::{add_user, create_admin, Api};
use crate::harness::{wait, wait_tone, Gateway, SOON};

const PASSWORD: &str = "a-Good-passphrase-42";

/// `EXIT_REBOOT` of `branchline_firmware::daemon` (the tests do not link the daemon).
const EXIT_REBOOT: i32 = 6;

#[test]
fn a_reboot_waits_for_calls_unless_forced_then_branchd_exits_for_the_reboot() {
    let mut gw = Gateway::start();
    let _admin = create_admin(&gw, "boss", PASSWORD);
    add_user(&gw, "tech", "technician", PASSWORD);
    add_user(&gw, "agent1", "agent", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech", PASSWORD).0;
    let agent = Api::login(gw.web_addr(), "agent1", PASSWORD).0;

    // An agent may not.
    let (status, body) = agent.post("/api/v1/system/reboot", json!({}));
    assert_eq!(status, 403, "{body}");

    // A call up: refused, the call goes on.
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "{}", gw.log_text());
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "ringback stops");
    let (status, body) = tech.post("/api/v1/system/reboot", json!({}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("in progress"),
        "{body}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(gw.running(), "{}", gw.log_text());
    assert!(gw.cdrs().is_empty(), "the call is still up");

    // Forced: accepted, the call cut, and branchd exits with the reboot status.
    let (status, body) = tech.post("/api/v1/system/reboot", json!({ "force": true }));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "rebooting": true, "calls_ended": 1 }));
    let exit = gw.wait_exit(SOON);
    assert_eq!(
        exit.code(),
        Some(EXIT_REBOOT),
        "exit {exit:?} (signal {:?}):\n{}",
        exit.signal(),
        gw.log_text()
    );
    assert!(
        gw.log_text()
            .contains("reboot asked from the web page or API"),
        "{}",
        gw.log_text()
    );
    let cdrs = gw.cdrs();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0].disposition, "answered", "{cdrs:?}");
    assert_eq!(cdrs[0].hangup_side, "system", "{cdrs:?}");

    // Audited: the refusals and the reboot, by whom.
    let rows: Vec<(String, String, String)> = {
        let db = gw.db();
        let mut stmt = db
            .prepare(
                "SELECT actor, action, result FROM audit_log \
                 WHERE action = 'reboot' OR (resource = 'system_config' AND result = 'denied') \
                 ORDER BY id",
            )
            .expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    };
    let row = |who: &str, action: &str, result: &str| {
        (who.to_owned(), action.to_owned(), result.to_owned())
    };
    assert!(rows.contains(&row("tech", "reboot", "failed")), "{rows:?}");
    assert!(rows.contains(&row("tech", "reboot", "ok")), "{rows:?}");
    assert!(
        rows.iter()
            .any(|(who, _, result)| who == "agent1" && result == "denied"),
        "{rows:?}"
    );
}
