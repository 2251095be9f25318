//! The `branchd` binary's command line: config errors are one line naming the file,
//! the line and the field, with exit code 2, and nothing is started.

use std::path::PathBuf;

use branchline_board::runner::command;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs `branchd --check-config` (or without it) and returns (exit code, stdout, stderr).
fn branchd(args: &[&str]) -> (i32, String, String) {
    let out = command(env!("CARGO_BIN_EXE_branchd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("branchd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn expect_config_error(file: &str, line: usize, field: &str) {
    let path = data(file);
    let p = path.to_str().expect("utf-8 path");
    // Both the check and a real start refuse the file the same way.
    for args in [vec!["--check-config", "--config", p], vec!["--config", p]] {
        let (code, _out, err) = branchd(&args);
        assert_eq!(code, 2, "{file}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{file}, line {line}")),
            "{file}: {err}"
        );
        assert!(err.contains(field), "{file}: field {field} in {err}");
    }
}

#[test]
fn a_bad_extension_number_names_file_line_and_field() {
    expect_config_error("bad-extension.toml", 12, "extensions[1].number");
}

#[test]
fn an_unknown_field_is_refused() {
    expect_config_error("unknown-field.toml", 3, "baudrate");
}

#[test]
fn a_port_the_board_does_not_have_is_refused() {
    expect_config_error("port-not-on-board.toml", 10, "extensions[1].port");
}

#[test]
fn broken_toml_is_refused() {
    let path = data("bad-syntax.toml");
    let (code, _, err) = branchd(&["--check-config", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    assert!(err.contains("bad-syntax.toml, line 4"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, _, err) = branchd(&["--config", "/nonexistent/branchd.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/branchd.toml"), "{err}");
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-config");
    for name in ["sim.toml", "bl-812.toml"] {
        let p = dir.join(name);
        let (code, out, err) = branchd(&["--check-config", "--config", p.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("config OK"), "{out}");
    }
}
