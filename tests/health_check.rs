//! The post-boot health check inside the real `branchd`: an update's trial boot on a
//! directory slot layout is committed when the daemon comes up healthy, and left to
//! roll back (with the failed fact named, and exit status 3) when it cannot.

use std::net::UdpSocket;
use std::path::Path;

use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::keys;
use branchline_image::policy::Identity;
use branchline_image::slot::{SlotId, SlotStatus};
use branchline_image::store::{DirSlots, SlotStore};
use branchline_image::update;
use branchline_image::version::Version;
use nix::sys::signal::Signal;

use crate::harness::{strip_ansi, Gateway, DIAL_PLAN, SOON};

const BOARD: &str = "sim";
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

/// A box that ran 1.1.0 from slot A (1.0.0 before it, in B), then installed 1.2.0
/// into B and booted it once: B is pending with its try spent, A is the fallback.
/// Built with the updater's own API, as `branch-image install` / `boot` /
/// `mark-good` would.
pub(crate) fn box_on_trial_of_b(dir: &Path) -> DirSlots {
    let key_dir = dir.join("keys");
    let public = keys::keygen(&key_dir).expect("keygen");
    let key = keys::read_signing_key(&key_dir.join(keys::PRIVATE_KEY_FILE)).expect("key");
    let slots = DirSlots::new(dir.join("slots"));
    let me = Identity {
        board: BOARD.into(),
        target: TARGET.into(),
    };
    let install = |version: &str| {
        let mut files = branchline_image::overlay::generate(BOARD).expect("overlay");
        files.push(BundleFile {
            path: "usr/bin/branchd".into(),
            contents: format!("branchd {version}").into_bytes(),
            mode: 0o755,
        });
        let spec = BuildSpec {
            board: BOARD.into(),
            target: TARGET.into(),
            version: v(version),
            min_version: v(version),
            build_time: 1_700_000_000,
            files,
        };
        let bytes = bundle::build(&spec, &key).expect("build");
        update::install(
            &bytes,
            &[public],
            &me,
            false,
            &mut slots.clone(),
            &mut slots.clone(),
        )
        .expect("install")
    };
    assert_eq!(install("1.0.0").slot, SlotId::B);
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::B);
    update::mark_good(&mut slots.clone()).expect("good");
    assert_eq!(install("1.1.0").slot, SlotId::A);
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    update::mark_good(&mut slots.clone()).expect("good");
    assert_eq!(install("1.2.0").slot, SlotId::B);
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::B);
    let state = slots.load().expect("state");
    assert_eq!(
        (state.active, state.b.status, state.a.status),
        (
            SlotId::B,
            SlotStatus::Pending { tries_left: 0 },
            SlotStatus::Good
        )
    );
    slots
}

pub(crate) fn update_section(slots: &DirSlots) -> String {
    format!(
        "\n[update]\nbackend = \"dir\"\nslots = {:?}\nhealth_deadline_s = 60\n",
        slots.root()
    )
}

#[test]
fn healthy_trial_boot_is_committed() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = box_on_trial_of_b(dir.path());
    // Local SIP listeners on a free port: SIP bound is one of the facts.
    let plan = format!(
        "{DIAL_PLAN}{}\n[sip]\nudp = \"127.0.0.1:0\"\n",
        update_section(&slots)
    );
    let mut gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("update committed", SOON),
        "never committed:\n{}",
        gw.log_text()
    );
    let log = strip_ansi(&gw.log_text());
    let line = log
        .lines()
        .find(|l| l.contains("update committed"))
        .expect("line");
    for word in [
        "slot=B",
        "version=1.2.0",
        "store: migrated",
        "line_controller: ready",
        "web: listening on 127.0.0.1:",
        "sip: listeners bound",
        "daemon: main loop running",
    ] {
        assert!(line.contains(word), "{word:?} not in {line:?}");
    }
    let state = slots.load().expect("state");
    assert_eq!(state.active, SlotId::B);
    assert_eq!(state.b.status, SlotStatus::Good);
    assert_eq!(state.a.status, SlotStatus::Good, "the fallback is kept");
    assert_eq!(state.floor, Some(v("1.2.0")), "anti-rollback floor raised");

    let status = gw.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status:?}:\n{}", gw.log_text());
    // The next boot stays on the committed slot.
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::B);
}

#[test]
fn trial_boot_whose_sip_port_is_taken_is_not_committed_and_rolls_back() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().expect("tmp");
    let slots = box_on_trial_of_b(dir.path());
    // Something else holds the SIP port: the new image cannot serve SIP phones.
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let plan = format!(
        "{DIAL_PLAN}{}\n[sip]\nudp = \"127.0.0.1:{port}\"\n",
        update_section(&slots)
    );
    let mut gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("update health check failed", SOON),
        "no health failure:\n{}",
        gw.log_text()
    );
    let log = strip_ansi(&gw.log_text());
    let line = log
        .lines()
        .find(|l| l.contains("update health check failed"))
        .expect("line");
    for word in [
        "slot=B",
        "version=1.2.0",
        "sip: branchd stopped before it",
        &format!("127.0.0.1:{port}"),
        "daemon: not reached",
        "returns to slot A",
    ] {
        assert!(line.contains(word), "{word:?} not in {line:?}");
    }
    assert!(!log.contains("update committed"), "{log}");
    let status = gw.stop_with(Signal::SIGTERM);
    assert_eq!(
        status.code(),
        Some(3),
        "exit status for a failed trial, got {status:?} (signal {:?}):\n{}",
        status.signal(),
        gw.log_text()
    );

    // Not marked good: still the spent trial, and the next boot returns to A.
    let state = slots.load().expect("state");
    assert_eq!(state.b.status, SlotStatus::Pending { tries_left: 0 });
    assert_eq!(state.floor, Some(v("1.1.0")), "floor not raised");
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    let state = slots.load().expect("state");
    assert_eq!(
        (state.active, state.a.status, state.b.status),
        (SlotId::A, SlotStatus::Good, SlotStatus::Bad)
    );
    drop(taken);
}
