//! Enrollment end to end: the real `branch-hq` (SQLite, `provisioning_keys` from an
//! `hq.toml`) and the real `branchd` on the simulated board with `[provisioning]` and an
//! `[hq]` section whose certificate files do not exist yet. A bundle made by the real
//! `branch-prov` for HQ's URL and CA pin is dropped on the "stick"; the box applies it,
//! enrolls (its own key, CSR, the token), stores key and certificate, retires the
//! installer account, and a call's CDR then reaches HQ over mutual TLS. The same token
//! presented again with another key is refused (409 `token_used`) and changes nothing
//! at HQ.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::harness::{wait, Gateway, HqDb, HqServer, DIAL_PLAN, SOON};
use crate::provision_usb::{
    branch_prov, drop_bundle, rows, sha256_of, site_file, wait_status, SERIAL,
};
use crate::sync_hq::answered_call_to;

/// A site file for HQ at `hq_url` with CA pin `pin` (the example site otherwise).
fn site_for(dir: &Path, hq_url: &str, pin: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(site_file()).expect("example site");
    let text: String = example
        .lines()
        .map(|l| {
            if l.starts_with("hq_url") {
                format!("hq_url = \"{hq_url}\"")
            } else if l.starts_with("ca_pin") {
                format!("ca_pin = \"{pin}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("site file");
    path
}

/// sha256 of the SubjectPublicKeyInfo of the CA certificate `pem`, with the tools the
/// example site file names (so the test does not share HQ's code for it).
fn ca_pin(pem: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
        )
        .arg("sh")
        .arg(pem)
        .output()
        .expect("openssl and sha256sum run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned();
    assert_eq!(pin.len(), 64, "{pin:?}");
    pin
}

/// One `POST` to HQ's sync listener without a client certificate (as a box that is
/// not enrolled): status and JSON body.
fn post_anonymous(hq: &HqServer, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(hq.tls_dir().join("ca.pem")).expect("ca.pem");
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect(hq.sync).expect("connect to HQ");
    tcp.set_read_timeout(Some(SOON * 3)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.to_string();
    write!(
        tls,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = Vec::new();
    // HQ may close without close_notify: what arrived is the answer.
    let _ = tls.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[test]
fn a_provisioned_box_enrolls_then_syncs_over_mutual_tls_and_the_token_works_once() {
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

    // HQ trusts the provisioning key for enrollment tokens.
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
    let pin = ca_pin(&hq.tls_dir().join("ca.pem"));

    let site = site_for(work.path(), &hq_url, &pin);
    let bundle_path = work.path().join("made.blp");
    branch_prov(&[
        "bundle".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        site.as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        bundle_path.as_os_str(),
    ]);
    let bundle = std::fs::read(&bundle_path).expect("bundle");

    // The box: [hq] names where its credentials will go; none exist yet. The bundle's
    // country (FR) is kept out with local_override, so the call at the end hears the
    // file's US tones through the simulator's µ-law (the applied bundle restarts
    // branchd with its other settings).
    let creds = work.path().join("creds");
    let (ca, cert, key) = (
        creds.join("ca.pem"),
        creds.join("box.pem"),
        creds.join("box.key"),
    );
    let plan = format!(
        "{DIAL_PLAN}\n[provisioning]\nwatch = [{usb:?}]\nkeys = [{pubkey:?}]\nserial = \"{SERIAL}\"\n\
         local_override = [\"country\"]\n\n[hq]\nurl = \"{hq_url}\"\nca_cert = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n\
         box_id = \"{SERIAL}\"\nlong_poll_ms = 2000\nupload_interval_ms = 1000\nprobe_interval_ms = 1000\n",
        pubkey = prefix.with_extension("pub"),
    );
    let mut gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("enrollment waits for a provisioning bundle", SOON),
        "{}",
        gw.log_text()
    );
    assert!(!cert.exists() && !key.exists());
    let installer = "SELECT CAST(enabled AS TEXT) FROM users WHERE username = 'installer'";
    assert_eq!(
        rows(&gw, installer),
        ["1"],
        "installer account before enrollment"
    );

    // The stick: applied, then enrolled.
    let ready_before = gw.log_count("branchd ready");
    drop_bundle(&usb, &bundle);
    wait_status(&usb, &sha256_of(&bundle), "applied", &gw);
    // The applied bundle restarts branchd with its settings.
    gw.follow_self_restart(ready_before);
    let enrolled = wait(SOON * 3, || cert.exists());
    assert!(
        enrolled,
        "no certificate\nbox:\n{}\nHQ:\n{}",
        gw.log_text(),
        hq.log_text()
    );
    assert!(gw.wait_log("enrolled with HQ", SOON), "{}", gw.log_text());
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode");
    assert!(ca.exists());

    // HQ registered the box in the token's site and pinned exactly this certificate.
    let (status, boxes) = hq.admin("GET", "/admin/v1/boxes", None);
    assert_eq!(status, 200, "{boxes}");
    let entry = boxes
        .as_array()
        .and_then(|b| b.iter().find(|b| b["id"] == SERIAL))
        .unwrap_or_else(|| panic!("box {SERIAL} not at HQ: {boxes}"));
    assert_eq!(entry["site"], "lyon-02", "{entry}");
    let cert_pem = std::fs::read(&cert).expect("cert");
    let der = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM");
    assert_eq!(
        entry["cert_fingerprint"].as_str(),
        Some(sha256_of(&der).as_str()),
        "{entry}"
    );

    // Enrolled: the installer is retired and the outcome is in the provisioning state.
    assert_eq!(
        rows(&gw, installer),
        ["0"],
        "installer account after enrollment"
    );
    let state = rows(
        &gw,
        "SELECT value FROM provisioned_settings WHERE field = 'enrollment'",
    );
    let state: serde_json::Value = serde_json::from_str(&state[0]).expect("state JSON");
    assert_eq!(state["status"], "enrolled", "{state}");

    // The bundle's port map is in force (201/202 on FXS 1/2; its FXO line names 200,
    // which may be a queue, so it is taken and logged as neither at start).
    assert!(
        gw.log_text()
            .contains("fxo line inbound number is no extension and no queue"),
        "{}",
        gw.log_text()
    );
    // Sync runs over mutual TLS with the new certificate: a call's CDR reaches HQ.
    answered_call_to(&gw, "202");
    let mut at_hq = Vec::new();
    let synced = wait(SOON * 3, || {
        at_hq = hq.cdrs("lyon-02");
        !at_hq.is_empty()
    });
    assert!(
        synced,
        "no CDR at HQ\nbox:\n{}\nHQ:\n{}",
        gw.log_text(),
        hq.log_text()
    );
    assert_eq!(at_hq[0]["box"], SERIAL, "{:?}", at_hq[0]);

    // The token again, with another key: refused, HQ's pin unchanged.
    let token = rows(
        &gw,
        "SELECT value FROM provisioned_settings WHERE field = 'enrollment_token'",
    );
    let token: String = serde_json::from_str(&token[0]).expect("token JSON");
    let other = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SERIAL);
    let csr = params
        .serialize_request(&other)
        .and_then(|c| c.pem())
        .expect("CSR");
    let (status, body) = post_anonymous(
        &hq,
        branchline_sync::wire::ENROLL_PATH,
        &serde_json::json!({"protocol": 1, "token": token, "csr_pem": csr}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("token_used")),
        "{body}"
    );
    let (_, boxes) = hq.admin("GET", "/admin/v1/boxes", None);
    let again = boxes
        .as_array()
        .and_then(|b| b.iter().find(|b| b["id"] == SERIAL))
        .cloned()
        .expect("box");
    assert_eq!(again["cert_fingerprint"], entry["cert_fingerprint"]);
}
