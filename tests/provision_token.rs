//! A QR token applied through the web API of the real `branchd` on the simulated
//! board: the token and its QR PNG made by the real `branch-prov`; the box's state
//! and claim code read back; bad input refused with nothing stored; the PNG uploaded
//! and decoded on the box, applied, and `branchd` restarting with the settings as
//! after a USB stick; the same token again refused as replayed. And with the real
//! `branch-hq`: a token given as the link a phone opens enrolls the box, and the
//! provisioning state then says enrolled.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::api_client::{create_admin, Api};
use crate::harness::{Gateway, DIAL_PLAN, SOON};
use crate::provision_usb::{branch_prov, rows, site_file, SERIAL};

const PASSWORD: &str = "Provisioning-pass-2024";

#[test]
fn a_qr_token_photo_is_applied_through_the_web_api_and_branchd_restarts_with_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let usb = work.path().join("usb");
    std::fs::create_dir(&usb).expect("usb dir");
    let prefix = work.path().join("hq-prov");
    branch_prov(&[
        "key".as_ref(),
        "new".as_ref(),
        "--out".as_ref(),
        prefix.as_os_str(),
    ]);
    let (text_file, png_file) = (work.path().join("token.txt"), work.path().join("token.png"));
    branch_prov(&[
        "token".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        site_file().as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        text_file.as_os_str(),
        "--png".as_ref(),
        png_file.as_os_str(),
        "--no-terminal".as_ref(),
    ]);
    let token = std::fs::read_to_string(&text_file)
        .expect("token")
        .trim()
        .to_owned();
    let png = std::fs::read(&png_file).expect("png");

    let plan = format!(
        "{DIAL_PLAN}\n[provisioning]\nwatch = [{usb:?}]\nkeys = [{key:?}]\nserial = \"{SERIAL}\"\n",
        key = prefix.with_extension("pub"),
    );
    let mut gw = Gateway::start_with(&plan);
    let api = create_admin(&gw, "boss", PASSWORD);

    // Not provisioned; the claim QR from a 0600 secret in the data directory.
    let (status, st) = api.get("/api/v1/provisioning");
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["serial"], SERIAL);
    assert_eq!(st["accepts_tokens"], true, "{st}");
    assert_eq!(st["provisioned"], serde_json::Value::Null);
    let code = st["claim"]["code"].as_str().expect("claim code").to_owned();
    assert_eq!(code.len(), 19, "{code}");
    assert_eq!(
        st["claim"]["qr_text"],
        format!("BLC1:{SERIAL}:{}", code.replace('-', ""))
    );
    let secret = gw.data_dir().join("claim-secret");
    let mode = std::fs::metadata(&secret)
        .expect("claim secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, page) = api.get_text("/provisioning");
    assert_eq!(status, 200);
    assert!(page.contains(&code) && page.contains("<svg"), "{page}");

    // Bad input: 4xx, nothing stored.
    let settings = "SELECT field FROM provisioned_settings ORDER BY field";
    let (status, e) = api.post(
        "/api/v1/provisioning/token",
        json!({ "token": "not a token" }),
    );
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid")), "{e}");
    let (status, e) = api.post_multipart(
        "/api/v1/provisioning/photo",
        &[("photo", "x.png", b"\x89PNG but not really")],
    );
    assert_eq!(status, 400, "{e}");
    assert!(rows(&gw, settings).is_empty());

    // The PNG branch-prov made, uploaded: decoded on the box and applied.
    let ready_before = gw.log_count("branchd ready");
    let (status, applied) = api.post_multipart(
        "/api/v1/provisioning/photo",
        &[("photo", "token.png", &png)],
    );
    assert_eq!(status, 200, "{applied}\n{}", gw.log_text());
    assert_eq!(applied["site"], "lyon-02");
    assert_eq!(
        rows(&gw, settings),
        ["ca_pin", "enrollment_token", "hq_url", "site"]
    );
    assert_eq!(
        rows(&gw, "SELECT token_id FROM provisioning_used_tokens").len(),
        1
    );
    // branchd restarts with the settings, as after a stick.
    gw.follow_self_restart(ready_before);
    assert!(gw.wait_log("provisioning bundle applied: branchd restarts", SOON));

    // After the restart (sessions are gone: log in again): provisioned from a token,
    // the same claim code, and the token refused as replayed.
    let (api, _) = Api::login(gw.latest_web_addr(), "boss", PASSWORD);
    let (status, st) = api.get("/api/v1/provisioning");
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["provisioned"]["site"], "lyon-02", "{st}");
    assert_eq!(st["provisioned"]["source"], "token", "{st}");
    assert_eq!(st["enrollment"]["status"], "pending", "{st}");
    assert_eq!(st["claim"]["code"], code);
    assert!(!st.to_string().contains(&token[4..40]), "token text shown");
    let before = rows(&gw, settings);
    let (status, e) = api.post("/api/v1/provisioning/token", json!({ "token": token }));
    assert_eq!((status, e["code"].as_str()), (409, Some("replayed")), "{e}");
    assert_eq!(rows(&gw, settings), before);
    let audit = rows(
        &gw,
        "SELECT result FROM audit_log WHERE action = 'apply_token' ORDER BY id",
    );
    // The bad token and the replay are audited as failed (a photo that holds no
    // token never reaches the apply step).
    assert_eq!(audit, ["failed", "ok", "failed"], "{audit:?}");
}

#[test]
fn a_token_applied_on_the_web_page_enrolls_the_box_with_the_real_branch_hq() {
    use crate::enroll_e2e::{ca_pin, site_for};
    use crate::harness::{wait, HqDb, HqServer};

    let work = tempfile::tempdir().expect("tempdir");
    let usb = work.path().join("usb");
    std::fs::create_dir(&usb).expect("usb dir");
    let prefix = work.path().join("hq-prov");
    branch_prov(&[
        "key".as_ref(),
        "new".as_ref(),
        "--out".as_ref(),
        prefix.as_os_str(),
    ]);
    let mut hq = HqServer::new(HqDb::Sqlite);
    let hq_toml = work.path().join("hq.toml");
    std::fs::write(
        &hq_toml,
        format!("provisioning_keys = [{:?}]\n", prefix.with_extension("pub")),
    )
    .expect("hq.toml");
    hq.serve_config = Some(hq_toml);
    hq.add_site("lyon-02");
    hq.serve();
    let hq_url = format!("https://127.0.0.1:{}", hq.sync.port());
    let site = site_for(work.path(), &hq_url, &ca_pin(&hq.tls_dir().join("ca.pem")));
    let text_file = work.path().join("token.txt");
    branch_prov(&[
        "token".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        site.as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        text_file.as_os_str(),
        "--no-terminal".as_ref(),
    ]);
    let token = std::fs::read_to_string(&text_file)
        .expect("token")
        .trim()
        .to_owned();

    let creds = work.path().join("creds");
    let (ca, cert, key) = (
        creds.join("ca.pem"),
        creds.join("box.pem"),
        creds.join("box.key"),
    );
    let plan = format!(
        "{DIAL_PLAN}\n[provisioning]\nwatch = [{usb:?}]\nkeys = [{pubkey:?}]\nserial = \"{SERIAL}\"\n\n\
         [hq]\nurl = \"{hq_url}\"\nca_cert = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n\
         box_id = \"{SERIAL}\"\nlong_poll_ms = 2000\nupload_interval_ms = 1000\nprobe_interval_ms = 1000\n",
        pubkey = prefix.with_extension("pub"),
    );
    let mut gw = Gateway::start_with(&plan);
    let api = create_admin(&gw, "boss", PASSWORD);
    let (_, st) = api.get("/api/v1/provisioning");
    assert_eq!(st["enrollment"]["status"], "not_provisioned", "{st}");
    assert_eq!(st["enrollment"]["certificate"], false, "{st}");

    // The link a phone's camera opens, as the API's input: applied, then enrolled.
    let link = format!(
        "http://box/provisioning/token?t={}",
        token
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let ready_before = gw.log_count("branchd ready");
    let (status, applied) = api.post("/api/v1/provisioning/token", json!({ "token": link }));
    assert_eq!(status, 200, "{applied}");
    gw.follow_self_restart(ready_before);
    assert!(
        wait(SOON * 3, || cert.exists()),
        "no certificate\nbox:\n{}\nHQ:\n{}",
        gw.log_text(),
        hq.log_text()
    );
    assert!(gw.wait_log("enrolled with HQ", SOON), "{}", gw.log_text());

    // The page's state says so (the installer account is retired: the admin logs in).
    let (api, _) = Api::login(gw.latest_web_addr(), "boss", PASSWORD);
    let enrolled = wait(SOON * 3, || {
        api.get("/api/v1/provisioning").1["enrollment"]["status"] == "enrolled"
    });
    let (_, st) = api.get("/api/v1/provisioning");
    assert!(enrolled, "{st}");
    assert_eq!(st["enrollment"]["box_id"], SERIAL, "{st}");
    assert_eq!(st["enrollment"]["certificate"], true, "{st}");
    assert_eq!(st["provisioned"]["source"], "token", "{st}");
    let (_, page) = api.get_text("/provisioning");
    assert!(page.contains("enrolled") && page.contains(SERIAL), "{page}");
}
