//! USB provisioning end to end: the real `branchd` on the simulated board watches a
//! temp dir as its stick mount point; bundles made with the real `branch-prov` CLI
//! are dropped there (renamed into place, as a copy onto a mounted stick ends).
//! Tampered -> refused result file, nothing in the store; good -> applied result file
//! and the settings in the store; the same stick again -> no-op result, store unchanged.

use crate::harness::{bin, command, wait, Gateway, DIAL_PLAN, SOON};
use std::path::{Path, PathBuf};

pub(crate) const SERIAL: &str = "BL2418-00042";
const BUNDLE: &str = "branchline-provision.blp";

pub(crate) fn site_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../provisioning/examples/site.toml")
}

pub(crate) fn branch_prov(args: &[&std::ffi::OsStr]) {
    let out = command(bin("branch-prov"))
        .args(args)
        .output()
        .expect("branch-prov runs");
    assert!(
        out.status.success(),
        "branch-prov {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts `bytes` on the "stick" the way a finished copy lands: temp file, rename.
pub(crate) fn drop_bundle(usb: &Path, bytes: &[u8]) {
    let tmp = usb.join("copy.tmp");
    std::fs::write(&tmp, bytes).expect("write bundle");
    std::fs::rename(&tmp, usb.join(BUNDLE)).expect("rename bundle");
}

fn result(usb: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(usb.join(format!("branchline-result-{SERIAL}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn wait_status(usb: &Path, sha: &str, status: &str, gw: &Gateway) -> serde_json::Value {
    let mut last = None;
    let ok = wait(SOON * 3, || {
        last = result(usb);
        last.as_ref()
            .is_some_and(|r| r["status"] == status && r["bundle_sha256"] == sha)
    });
    assert!(
        ok,
        "no {status:?} result for {sha}; last result {last:?}\n{}",
        gw.log_text()
    );
    last.expect("result")
}

pub(crate) fn rows(gw: &Gateway, sql: &str) -> Vec<String> {
    let db = gw.db();
    let mut stmt = db.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

pub(crate) fn sha256_of(bytes: &[u8]) -> String {
    use std::io::Write;
    // The same digest the daemon reports, via the system tool, so the test does not
    // share the daemon's hashing code.
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

#[test]
fn usb_bundle_is_verified_applied_once_and_reported_on_the_stick() {
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
    let bundle_path = work.path().join("made.blp");
    branch_prov(&[
        "bundle".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        site_file().as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        bundle_path.as_os_str(),
    ]);
    let good = std::fs::read(&bundle_path).expect("bundle");

    let plan = format!(
        "{DIAL_PLAN}\n[provisioning]\nwatch = [{usb:?}]\nkeys = [{key:?}]\nserial = \"{SERIAL}\"\n",
        key = prefix.with_extension("pub"),
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("USB provisioning: watching", SOON),
        "{}",
        gw.log_text()
    );
    let settings = "SELECT field || '=' || value FROM provisioned_settings ORDER BY field";

    // Tampered: one flipped byte. Refused, nothing stored, the token still unused.
    let mut tampered = good.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    drop_bundle(&usb, &tampered);
    let r = wait_status(&usb, &sha256_of(&tampered), "refused", &gw);
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert_eq!(r["serial"], SERIAL);
    assert!(rows(&gw, settings).is_empty());
    assert!(rows(&gw, "SELECT token_id FROM provisioning_used_tokens").is_empty());

    // The good bundle replaces it on the stick: applied, all fields in the store.
    let sha = sha256_of(&good);
    drop_bundle(&usb, &good);
    let r = wait_status(&usb, &sha, "applied", &gw);
    assert_eq!(r["site"], "lyon-02");
    assert_eq!(r["applied"].as_array().map(Vec::len), Some(10), "{r}");
    let applied = rows(&gw, settings);
    assert_eq!(applied.len(), 10, "{applied:?}");
    let fxs = applied
        .iter()
        .find_map(|r| r.strip_prefix("fxs="))
        .expect("fxs row");
    let fxs: serde_json::Value = serde_json::from_str(fxs).expect("fxs json");
    assert_eq!(fxs[0]["port"], 1);
    assert_eq!(fxs[0]["extension"], "201");
    assert!(
        applied.contains(&"hq_url=\"https://hq.example.com\"".to_owned()),
        "{applied:?}"
    );
    assert_eq!(
        rows(&gw, "SELECT sha256 FROM provisioning_bundles"),
        std::slice::from_ref(&sha)
    );

    // The same stick again (mount helper's marker touched): no-op, store unchanged.
    std::fs::remove_file(usb.join(format!("branchline-result-{SERIAL}.json")))
        .expect("remove result");
    std::fs::write(usb.join("stick.mounted"), b"").expect("marker");
    wait_status(&usb, &sha, "already_applied", &gw);
    assert_eq!(rows(&gw, settings), applied);
    assert_eq!(rows(&gw, "SELECT sha256 FROM provisioning_bundles"), [sha]);
    assert_eq!(
        rows(&gw, "SELECT token_id FROM provisioning_used_tokens").len(),
        1
    );
    // Nothing left behind on the stick but the bundle, the marker and the result.
    let mut names: Vec<String> = std::fs::read_dir(&usb)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            BUNDLE.to_owned(),
            format!("branchline-result-{SERIAL}.json"),
            "stick.mounted".to_owned()
        ]
    );
}
