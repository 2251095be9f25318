//! The `branch-sim` binary: stand-alone console, and `--connect` to a running console.

use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;

use branchline_board::profile::BoardProfile;
use branchline_board::runner::command;
use branchline_board::sim::{serve_console, Simulator};
use line_proto::g711::Law;

fn run_with_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = command(env!("CARGO_BIN_EXE_branch-sim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branch-sim starts");
    // branch-sim may exit before reading its input (a bad argument, a refused
    // connection): a broken pipe then is part of the outcome under test, not an error.
    match child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().expect("branch-sim exits");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connect_drives_a_running_simulator() {
    let profile = BoardProfile::builtin("sim").expect("sim profile");
    let sim = Simulator::start(&profile, Law::Ulaw).expect("simulator");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handle = sim.handle();
    std::thread::spawn(move || serve_console(handle, listener));

    let (ok, out, err) = run_with_stdin(&["--connect", &addr], "lift 2\nstatus\nbogus\n");
    assert!(ok, "{err}");
    assert!(
        sim.handle().phone(2).is_off_hook(),
        "the command reached the simulator"
    );
    assert!(out.contains("error: "), "unknown command reported: {out}");
    assert!(out.lines().count() >= 7, "status lists every port: {out}");
}

#[test]
fn standalone_console_and_bad_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("lc");
    let link = link.to_str().expect("utf-8");
    let (ok, out, err) = run_with_stdin(&["--link", link], "lift 1\nstatus\n");
    assert!(ok, "{err}");
    assert!(out.contains("linked from"), "{out}");
    assert!(out.contains("port 1 FXS off-hook"), "{out}");
    assert!(out.contains("port 5 FXO idle"), "{out}");

    let (ok, _, err) = run_with_stdin(&["--profile", "no-such-board", "--link", link], "");
    assert!(!ok);
    assert!(err.starts_with("branch-sim: "), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let (ok, _, err) = run_with_stdin(&["--connect", "127.0.0.1:1"], "status\n");
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}
