//! `branchd user-add` and `branchd audit-verify` against a store in a temp dir.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use branchline_board::runner::command;

/// Runs branchd with `args` and `stdin`, returns (exit code, stdout, stderr).
fn branchd(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = command(env!("CARGO_BIN_EXE_branchd"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchd starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("branchd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path) -> String {
    let path = dir.join("branchd.toml");
    std::fs::write(
        &path,
        format!(
            "[paths]\ndata_dir = {:?}\n",
            dir.join("data").display().to_string()
        ),
    )
    .expect("write config");
    path.display().to_string()
}

#[test]
fn user_add_then_audit_verify_then_tamper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let add = |name: &str, password: &str| {
        branchd(
            &[
                "user-add",
                "--config",
                &cfg,
                "--username",
                name,
                "--role",
                "admin",
            ],
            &format!("{password}\n"),
        )
    };
    let (code, out, err) = add("first-admin", "a-Good-passphrase-42");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("user first-admin created"), "{out}");

    let (code, _, err) = add("second", "password123");
    assert_eq!(code, 1);
    assert!(err.contains("password") && err.contains("common"), "{err}");

    let (code, out, err) = branchd(&["audit-verify", "--config", &cfg], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "audit log OK: 2 rows");

    let db = dir.path().join("data").join("branchline.db");
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 1", [])
        .expect("tamper");
    let (code, _, err) = branchd(&["audit-verify", "--config", &cfg], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("audit log broken at row 1: hash mismatch"),
        "{err}"
    );
}
