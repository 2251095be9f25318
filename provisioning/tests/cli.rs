//! `branch-prov` end to end: the built binary, run in a temp directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use branchline_board::runner::command;
use branchline_provisioning::keys::TrustedKeys;
use branchline_provisioning::{bundle, qr, token};

const EXAMPLE: &str = include_str!("../examples/site.toml");

/// A command running `branch-prov` (under the cross test stage's emulator when there
/// is one).
fn branch_prov() -> Command {
    command(env!("CARGO_BIN_EXE_branch-prov"))
}

fn prov(dir: &Path, args: &[&str]) -> Output {
    branch_prov()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run branch-prov")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = prov(dir, args);
    assert!(
        out.status.success(),
        "branch-prov {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with status 1; returns its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = prov(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "branch-prov {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("branch-prov: "), "{err}");
    err
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        ok(dir.path(), &["key", "new", "--out", "hq"]);
        fs::write(dir.path().join("site.toml"), EXAMPLE).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn keys(&self) -> TrustedKeys {
        TrustedKeys::from_files(&[self.path("hq.pub")]).unwrap()
    }
}

#[test]
fn key_new_is_0600_and_never_overwritten() {
    let s = Setup::new();
    let mode = fs::metadata(s.path("hq.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = fs::read(s.path("hq.key")).unwrap();
    let err = refused(s.dir.path(), &["key", "new", "--out", "hq"]);
    assert!(err.contains("hq"), "{err}");
    assert_eq!(fs::read(s.path("hq.key")).unwrap(), before);
}

#[test]
fn token_make_prints_size_and_version_and_its_png_decodes_back() {
    let s = Setup::new();
    let out = ok(
        s.dir.path(),
        &[
            "token",
            "make",
            "--site",
            "site.toml",
            "--key",
            "hq.key",
            "--png",
            "t.png",
            "--svg",
            "t.svg",
            "--out",
            "t.txt",
        ],
    );
    let text = fs::read_to_string(s.path("t.txt"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(out.contains(&text), "{out}");
    assert!(
        out.contains("at ECC level Q, within the version-10 target"),
        "{out}"
    );
    assert!(out.contains(&format!("{} characters", text.len())), "{out}");
    // The terminal rendering is there (half-block characters).
    assert!(out.contains('▀') || out.contains('▄'), "{out}");
    // The PNG branch-prov wrote, decoded by the box's decoder, is the same token.
    let png = fs::read(s.path("t.png")).unwrap();
    assert_eq!(qr::decode_image(&png).unwrap(), vec![text.clone()]);
    let decoded = token::decode(&text, &s.keys()).unwrap();
    assert_eq!(decoded.enrollment.site.as_str(), "lyon-02");
    assert!(fs::read_to_string(s.path("t.svg"))
        .unwrap()
        .contains("<svg"));

    let verified = ok(
        s.dir.path(),
        &[
            "verify",
            "t.png",
            "--pub",
            "hq.pub",
            "--serial",
            "BL2418-00042",
        ],
    );
    assert!(
        verified.starts_with("OK: token for site lyon-02"),
        "{verified}"
    );
    let shown = ok(s.dir.path(), &["inspect", &text, "--pub", "hq.pub"]);
    assert!(
        shown.contains("\"hq_url\": \"https://hq.example.com\""),
        "{shown}"
    );
}

#[test]
fn bundle_make_inspect_verify_and_refusals() {
    let s = Setup::new();
    ok(
        s.dir.path(),
        &[
            "bundle",
            "make",
            "--site",
            "site.toml",
            "--key",
            "hq.key",
            "--out",
            "b.blp",
        ],
    );
    let bytes = fs::read(s.path("b.blp")).unwrap();
    let opened = bundle::open(&bytes, &s.keys()).unwrap();
    assert_eq!(opened.payload.config.fxs.len(), 2);

    let header = ok(s.dir.path(), &["inspect", "b.blp"]);
    assert!(header.contains("UNVERIFIED"), "{header}");
    let shown = ok(s.dir.path(), &["inspect", "b.blp", "--pub", "hq.pub"]);
    assert!(shown.contains("\"extension\": \"201\""), "{shown}");
    ok(
        s.dir.path(),
        &[
            "verify",
            "b.blp",
            "--pub",
            "hq.pub",
            "--serial",
            "BL2418-00042",
        ],
    );

    // Wrong serial, expired, another key, a tampered byte: each refused, by name.
    let err = refused(
        s.dir.path(),
        &["verify", "b.blp", "--pub", "hq.pub", "--serial", "BL9"],
    );
    assert!(err.contains("not this box (BL9)"), "{err}");
    let err = refused(
        s.dir.path(),
        &[
            "verify",
            "b.blp",
            "--pub",
            "hq.pub",
            "--at",
            "2200-01-01T00:00:00Z",
        ],
    );
    assert!(err.contains("expired"), "{err}");
    ok(s.dir.path(), &["key", "new", "--out", "other"]);
    let err = refused(s.dir.path(), &["verify", "b.blp", "--pub", "other.pub"]);
    assert!(err.contains("not among the trusted keys"), "{err}");
    let mut bad = bytes.clone();
    bad[40] ^= 1;
    fs::write(s.path("bad.blp"), &bad).unwrap();
    let err = refused(s.dir.path(), &["verify", "bad.blp", "--pub", "hq.pub"]);
    assert!(err.contains("signature does not verify"), "{err}");
    fs::write(s.path("short.blp"), &bytes[..bytes.len() - 10]).unwrap();
    let err = refused(s.dir.path(), &["verify", "short.blp", "--pub", "hq.pub"]);
    assert!(err.contains("truncated"), "{err}");
    // A private key where a public one belongs is refused by name.
    let err = refused(s.dir.path(), &["verify", "b.blp", "--pub", "hq.key"]);
    assert!(err.contains("private key"), "{err}");
}

#[test]
fn bad_site_description_names_file_and_field_and_writes_nothing() {
    let s = Setup::new();
    fs::write(
        s.path("bad.toml"),
        EXAMPLE.replace("gateway = \"192.0.2.1\"", "gateway = \"10.0.0.1\""),
    )
    .unwrap();
    let err = refused(
        s.dir.path(),
        &[
            "bundle", "make", "--site", "bad.toml", "--key", "hq.key", "--out", "b.blp",
        ],
    );
    assert!(
        err.contains("bad.toml") && err.contains("network.gateway"),
        "{err}"
    );
    assert!(!s.path("b.blp").exists());
    let err = refused(
        s.dir.path(),
        &[
            "token",
            "make",
            "--site",
            "site.toml",
            "--key",
            "hq.key",
            "--valid-for",
            "3w",
        ],
    );
    assert!(err.contains("--valid-for"), "{err}");
}

#[test]
fn revoke_then_verify_refuses_the_token() {
    let s = Setup::new();
    ok(
        s.dir.path(),
        &[
            "token",
            "make",
            "--site",
            "site.toml",
            "--key",
            "hq.key",
            "--out",
            "t.txt",
            "--no-terminal",
        ],
    );
    let list = ok(
        s.dir.path(),
        &[
            "revoke",
            "--list",
            "revoked.blr",
            "--key",
            "hq.key",
            "t.txt",
            "--reason",
            "stick lost",
        ],
    );
    assert!(list.contains("now lists 1 token"), "{list}");
    let again = ok(
        s.dir.path(),
        &[
            "revoke",
            "--list",
            "revoked.blr",
            "--key",
            "hq.key",
            "t.txt",
        ],
    );
    assert!(again.contains("already revoked"), "{again}");
    let err = refused(
        s.dir.path(),
        &[
            "verify",
            "t.txt",
            "--pub",
            "hq.pub",
            "--revoked",
            "revoked.blr",
        ],
    );
    assert!(
        err.contains("revoked") && err.contains("stick lost"),
        "{err}"
    );
    let shown = ok(s.dir.path(), &["inspect", "revoked.blr", "--pub", "hq.pub"]);
    assert!(shown.contains("stick lost"), "{shown}");
    // A list signed by another key is not extended with this one.
    ok(s.dir.path(), &["key", "new", "--out", "other"]);
    let before = fs::read(s.path("revoked.blr")).unwrap();
    refused(
        s.dir.path(),
        &[
            "revoke",
            "--list",
            "revoked.blr",
            "--key",
            "other.key",
            "0011223344556677",
        ],
    );
    assert_eq!(fs::read(s.path("revoked.blr")).unwrap(), before);
}

#[test]
fn hash_password_makes_an_argon2id_hash_the_site_accepts() {
    let s = Setup::new();
    let mut child = branch_prov()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let start = EXAMPLE.find("password_hash = ").unwrap();
    let end = start + EXAMPLE[start..].find('\n').unwrap();
    let site = format!(
        "{}password_hash = \"{hash}\"{}",
        &EXAMPLE[..start],
        &EXAMPLE[end..]
    );
    fs::write(s.path("site2.toml"), site).unwrap();
    ok(
        s.dir.path(),
        &[
            "bundle",
            "make",
            "--site",
            "site2.toml",
            "--key",
            "hq.key",
            "--out",
            "b.blp",
        ],
    );
}
