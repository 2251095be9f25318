//! The accounts API of the real `branchd`: installer login from the label file, the
//! first admin made with `branchd user-add`, and a real call's CDR read back.

use serde_json::json;

use crate::api_client::{agent, create_admin, Api};
use crate::harness::{wait, Gateway, SOON};

const ADMIN_PASSWORD: &str = "first-Admin-pass-2024";

#[test]
fn installer_logs_in_first_admin_is_created_and_sees_the_call() {
    let gw = Gateway::start();
    let addr = gw.web_addr();

    // The installer's password is on the "label" the daemon wrote at first start.
    let label = std::fs::read_to_string(gw.data_dir().join("installer-label.txt"))
        .expect("installer label file");
    let password = label
        .lines()
        .find_map(|l| l.strip_prefix("installer password: "))
        .expect("password line")
        .trim()
        .to_owned();
    let (installer, body) = Api::login(addr, "installer", &password);
    assert_eq!(body["username"], "installer");
    let (status, me) = installer.get("/api/v1/me");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "installer");
    assert_eq!(me["roles"], json!(["installer"]));
    let (status, denied) = installer.get("/api/v1/users");
    assert_eq!(status, 403, "{denied}");
    assert!(
        denied["error"]
            .as_str()
            .unwrap_or_default()
            .contains("users.view"),
        "{denied}"
    );
    // A wrong password is refused without a session.
    let resp = agent()
        .post(&format!("http://{addr}/api/v1/session"))
        .send_json(json!({ "username": "installer", "password": "not-the-password" }))
        .expect("request");
    assert_eq!(resp.status(), 401);

    // A quick internal call, 101 -> 102.
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    crate::harness::wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "102 rings");
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "answered");
    b.on_hook();
    a.on_hook();
    let cdrs = gw.wait_cdrs(1);

    // The first admin, from the console, while the daemon runs.
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    let (status, list) = admin.get("/api/v1/cdrs");
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().expect("items");
    let call = items
        .iter()
        .find(|c| c["call_id"] == cdrs[0].call_id.as_str())
        .unwrap_or_else(|| panic!("the call in {list}"));
    assert_eq!(
        (call["caller"].as_str(), call["callee"].as_str()),
        (Some("101"), Some("102"))
    );
    assert_eq!(call["direction"], "internal");
    let (status, users) = admin.get("/api/v1/users");
    assert_eq!(status, 200, "{users}");
    assert!(users["total"].as_i64() >= Some(2), "{users}");

    assert_eq!(admin.delete("/api/v1/session"), 204);
    assert_eq!(admin.get("/api/v1/me").0, 401);
}
