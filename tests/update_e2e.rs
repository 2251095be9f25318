//! Updates through HQ end to end: a real `branch-hq` (SQLite) and a real `branchd` on
//! the simulated board with a directory slot layout, bundles built and signed by the
//! real `branch-image` CLI.
//!
//! - An operator stages a rollout; the box downloads the bundle through a slow proxy,
//!   is killed with SIGKILL mid-download and restarted: the download resumes from the
//!   bytes on disk (not from 0), the sha256 is checked, the bundle is installed into
//!   the inactive slot and `branchd` exits with status 4 (restart into the new slot).
//!   `branch-image boot` plays the bootloader (the trial boot), the health check
//!   commits the slot and HQ's rollout shows `committed`.
//! - A trial boot that fails its health check (its SIP port is taken: on the simulated
//!   board every slot runs the same `branchd`, so the failure is made by the
//!   environment) exits with status 3; the boot step returns to the old slot and the
//!   next start reports `rolled_back`, naming the failed fact.
//! - A bundle altered in HQ's storage (sha256 mismatch) and a bundle signed by a key
//!   HQ accepts but the box does not pin are refused and reported `failed`; the slot
//!   state does not change and the downloads are removed.
//!
//! The bootloader's step between two starts is the test's (`branch-image boot`), as
//! the directory backend's boot step is on a simple board.

use std::ffi::OsStr;
use std::net::UdpSocket;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use branchline_image::bundle;
use branchline_image::keys;
use branchline_image::slot::{SlotId, SlotState, SlotStatus};
use branchline_image::store::{DirSlots, SlotStore};
use nix::sys::signal::Signal;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::{bin, command, strip_ansi, wait, Gateway, HqDb, HqServer, DIAL_PLAN, SOON};
use crate::update_hq::stage;

const BOARD: &str = "sim";
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// `branchd`'s exit status for "restart into the new slot".
const EXIT_RESTART: i32 = 4;
/// `branchd`'s exit status for a failed trial boot.
const EXIT_UNHEALTHY_TRIAL: i32 = 3;

/// Runs `branch-image` with `args`; panics with its output unless it succeeds.
fn branch_image(args: &[&OsStr]) -> String {
    let out = command(bin("branch-image"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("branch-image runs");
    assert!(
        out.status.success(),
        "branch-image {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A signing key made by `branch-image keygen` in `dir`; answers the public key file.
fn keygen(dir: &Path) -> PathBuf {
    branch_image(&[OsStr::new("keygen"), OsStr::new("--out"), dir.as_os_str()]);
    dir.join(keys::PUBLIC_KEY_FILE)
}

/// `branch-image build` of `version` for the simulated board, signed with the key in
/// `key_dir`, with a `branchd` of `size` bytes; answers the bundle's bytes.
fn build(dir: &Path, key_dir: &Path, version: &str, size: usize) -> Vec<u8> {
    let bin_dir = dir.join(format!("bin-{version}"));
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let exe = bin_dir.join("branchd");
    // Not compressible to nothing, different per version.
    let seed = version
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b.into()));
    let contents: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect();
    std::fs::write(&exe, contents).expect("write binary");
    let out = dir.join(format!("branchline-{version}.bundle"));
    branch_image(&[
        OsStr::new("build"),
        OsStr::new("--board"),
        OsStr::new(BOARD),
        OsStr::new("--target"),
        OsStr::new(TARGET),
        OsStr::new("--version"),
        OsStr::new(version),
        OsStr::new("--min-version"),
        OsStr::new(version),
        OsStr::new("--key"),
        key_dir.join(keys::PRIVATE_KEY_FILE).as_os_str(),
        OsStr::new("--bin"),
        exe.as_os_str(),
        // The simulated board's slots are a directory: its boot-step unit runs
        // branch-image, so the bundle must carry it.
        OsStr::new("--bin"),
        bin("branch-image").as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    std::fs::read(&out).expect("bundle")
}

/// A box that runs 1.0.0, committed, from slot B (installed, booted, marked good with
/// the CLI, as at the factory).
fn factory_slots(dir: &Path, key_dir: &Path, public: &Path) -> DirSlots {
    let slots = dir.join("slots");
    std::fs::create_dir_all(&slots).expect("slots");
    let first = build(dir, key_dir, "1.0.0", 64 * 1024);
    let file = dir.join("factory.bundle");
    std::fs::write(&file, first).expect("write");
    branch_image(&[
        OsStr::new("install"),
        OsStr::new("--key"),
        public.as_os_str(),
        OsStr::new("--slots"),
        slots.as_os_str(),
        OsStr::new("--board"),
        OsStr::new(BOARD),
        OsStr::new("--target"),
        OsStr::new(TARGET),
        file.as_os_str(),
    ]);
    boot(&slots);
    branch_image(&[
        OsStr::new("mark-good"),
        OsStr::new("--slots"),
        slots.as_os_str(),
    ]);
    let s = DirSlots::new(&slots);
    let state = s.load().expect("state");
    assert_eq!(
        (state.active, state.b.status),
        (SlotId::B, SlotStatus::Good)
    );
    s
}

/// The bootloader's step: `branch-image boot`.
fn boot(slots: &Path) {
    branch_image(&[OsStr::new("boot"), OsStr::new("--slots"), slots.as_os_str()]);
}

/// A maintenance window open now (UTC), as `HH:MM-HH:MM`.
fn open_window() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let minute = (now % 86_400) / 60;
    let (start, end) = ((minute + 1440 - 60) % 1440, (minute + 180) % 1440);
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        start / 60,
        start % 60,
        end / 60,
        end % 60
    )
}

/// The box's config: the standard dial plan, local SIP on `sip_port` (0: any), `[hq]`
/// reaching HQ at `hq_addr`, `[update]` from HQ with the window open now.
fn box_plan(
    hq: &HqServer,
    creds: &crate::harness::BoxCredentials,
    hq_addr: std::net::SocketAddr,
    slots: &DirSlots,
    public: &Path,
    sip_port: u16,
) -> String {
    format!(
        "{DIAL_PLAN}\n[sip]\nudp = \"127.0.0.1:{sip_port}\"\n{hq}\n[update]\nbackend = \"dir\"\n\
         slots = {root:?}\nhealth_deadline_s = 60\nfrom_hq = true\nwindow = {window:?}\n\
         poll_interval_s = 1\n\
         keys = [{public:?}]\nboard = {BOARD:?}\ntarget = {TARGET:?}\n",
        hq = hq.box_config(creds, hq_addr, ""),
        root = slots.root(),
        window = open_window(),
    )
}

/// The outcome HQ holds for `rollout` (state, reason), once it is `state`.
fn wait_outcome(hq: &HqServer, gw: &Gateway, rollout: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait(SOON * 6, || {
        let (status, view) = hq.admin("GET", &format!("/admin/v1/rollouts/{rollout}"), None);
        assert_eq!(status, 200, "{view}");
        last = view["outcomes"].clone();
        last[0]["state"] == state
    });
    assert!(
        ok,
        "HQ never saw {state} for {rollout}: {last}\nbox:\n{}\nhq:\n{}",
        gw.log_text(),
        hq.log_text()
    );
    assert_eq!(last.as_array().map(Vec::len), Some(1), "{last}");
    last[0].clone()
}

/// Waits for `branchd` to exit by itself (after `needle` was logged) and reaps it.
fn wait_exit(gw: &mut Gateway, needle: &str) -> ExitStatus {
    assert!(
        gw.wait_log(needle, SOON * 6),
        "no {needle:?}:\n{}",
        gw.log_text()
    );
    // Already stopping: the signal only reaps it (or hurries a slow shutdown).
    gw.stop_with(Signal::SIGTERM)
}

fn assert_code(status: ExitStatus, code: i32, gw: &Gateway) {
    assert_eq!(
        status.code(),
        Some(code),
        "exit status {status:?} (signal {:?}):\n{}",
        status.signal(),
        gw.log_text()
    );
}

/// Offsets of the chunk requests logged by the `n`-th start of the updater (1-based).
fn chunk_offsets_of_start(gw: &Gateway, n: usize) -> Vec<u64> {
    let log = strip_ansi(&gw.log_text());
    let mut seen = 0;
    log.lines()
        .filter(|l| {
            if l.contains("updates through HQ: on") {
                seen += 1;
            }
            seen == n
        })
        .filter(|l| l.contains("update chunk requested"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("offset="))
                .and_then(|o| o.parse().ok())
        })
        .collect()
}

fn state_of(slots: &DirSlots) -> SlotState {
    slots.load().expect("slot state")
}

#[test]
fn update_from_hq_resumes_after_kill_installs_restarts_and_commits() {
    let dir = tempfile::tempdir().expect("tmp");
    let key_dir = dir.path().join("keys");
    let public = keygen(&key_dir);
    let slots = factory_slots(dir.path(), &key_dir, &public);

    let mut hq = HqServer::new(HqDb::Sqlite);
    hq.add_site("north");
    let creds = hq.add_box("north", "box-n1");
    let pinned = hq.tls_dir().join("update-keys");
    std::fs::create_dir_all(&pinned).expect("keys dir");
    std::fs::copy(&public, pinned.join("release.pub")).expect("pin key");
    hq.serve();
    // Three and a bit chunks (HQ answers 1 MiB per request).
    let bundle_bytes = build(dir.path(), &key_dir, "1.1.0", 3 * 1024 * 1024 + 5000);
    let size = bundle_bytes.len() as u64;
    let (status, r) = stage(&hq, "id=r-1.1&sites=north", &bundle_bytes);
    assert_eq!(status, 201, "{r}");

    // Slow link: every 16 KiB piece is held 30 ms, so a 1 MiB chunk takes ~2 s.
    let proxy = FaultProxy::start(hq.sync);
    proxy.set_fault(Fault::Delay(Duration::from_millis(30)));
    let plan = box_plan(&hq, &creds, proxy.addr(), &slots, &public, 0);
    let mut gw = Gateway::start_with(&plan);
    let part = gw.data_dir().join("update/r-1.1.part");
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    assert!(
        wait(SOON * 6, || len(&part) >= 1024 * 1024),
        "no first chunk on disk:\n{}",
        gw.log_text()
    );
    let status = gw.stop_with(Signal::SIGKILL);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let on_disk = len(&part);
    assert!(
        on_disk >= 1024 * 1024 && on_disk < size,
        "killed mid-download: {on_disk} of {size} bytes"
    );
    assert_eq!(state_of(&slots).active, SlotId::B, "nothing installed yet");

    // Restart on a fast link: resumes from the bytes on disk, installs into A, exits 4.
    proxy.set_fault(Fault::None);
    gw.restart();
    let status = wait_exit(&mut gw, "restarting into the update installed from HQ");
    assert_code(status, EXIT_RESTART, &gw);
    let offsets = chunk_offsets_of_start(&gw, 2);
    assert_eq!(
        offsets.first(),
        Some(&on_disk),
        "the download resumed where it stopped: {offsets:?}"
    );
    assert!(offsets.iter().all(|&o| o >= on_disk), "{offsets:?}");
    let state = state_of(&slots);
    assert_eq!(
        (state.active, state.a.status, state.b.status),
        (
            SlotId::B,
            SlotStatus::Pending { tries_left: 1 },
            SlotStatus::Good
        )
    );
    // Installed as signed: the slot re-verifies against the pinned key.
    let key = keys::read_verifying_key(&public).expect("public key");
    let manifest = branchline_image::update::verify_slot(&slots.root().join("slots/a"), &[key])
        .expect("slot A verifies");
    assert_eq!(manifest.version.to_string(), "1.1.0");
    let outcome = wait_outcome(&hq, &gw, "r-1.1", "installed");
    assert_eq!(outcome["version"], "1.1.0");

    // The "reboot": the boot step tries A once; the health check commits it and HQ
    // hears `committed`.
    boot(slots.root());
    assert_eq!(state_of(&slots).active, SlotId::A);
    gw.restart();
    assert!(
        gw.wait_log("update committed", SOON * 3),
        "{}",
        gw.log_text()
    );
    let outcome = wait_outcome(&hq, &gw, "r-1.1", "committed");
    assert_eq!(outcome["version"], "1.1.0");
    let state = state_of(&slots);
    assert_eq!(
        (
            state.active,
            state.a.status,
            state.floor.map(|v| v.to_string())
        ),
        (SlotId::A, SlotStatus::Good, Some("1.1.0".to_owned()))
    );
    // The record and the bundle are gone once HQ has the outcome.
    let update_dir = gw.data_dir().join("update");
    assert!(
        wait(SOON, || !update_dir.join("trial.json").exists()),
        "trial record kept"
    );
    assert!(!update_dir.join("r-1.1.bundle").exists());
    assert!(!update_dir.join("r-1.1.part").exists());

    // Reported once; a later start has nothing left to report.
    let committed_reports = |gw: &Gateway| {
        strip_ansi(&gw.log_text())
            .lines()
            .filter(|l| {
                l.contains("update outcome reported to HQ") && l.contains("state=committed")
            })
            .count()
    };
    assert_eq!(committed_reports(&gw), 1);
    let at = outcome["updated_at_ms"].clone();
    let status = gw.stop_with(Signal::SIGTERM);
    assert_code(status, 0, &gw);
    gw.restart();
    assert!(gw.wait_log_count("updates through HQ: on", 4, SOON));
    assert_eq!(committed_reports(&gw), 1);
    let again = wait_outcome(&hq, &gw, "r-1.1", "committed");
    assert_eq!(again["updated_at_ms"], at, "HQ's outcome unchanged");
    let status = gw.stop_with(Signal::SIGTERM);
    assert_code(status, 0, &gw);
}

#[test]
fn update_from_hq_trial_failure_rolls_back_and_tampered_bundles_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let key_dir = dir.path().join("keys");
    let public = keygen(&key_dir);
    // A key HQ pins but the box does not.
    let rogue_dir = dir.path().join("rogue");
    let rogue = keygen(&rogue_dir);
    let slots = factory_slots(dir.path(), &key_dir, &public);

    let mut hq = HqServer::new(HqDb::Sqlite);
    hq.add_site("north");
    let creds = hq.add_box("north", "box-n1");
    let pinned = hq.tls_dir().join("update-keys");
    std::fs::create_dir_all(&pinned).expect("keys dir");
    std::fs::copy(&public, pinned.join("release.pub")).expect("pin key");
    std::fs::copy(&rogue, pinned.join("other.pub")).expect("pin key");
    hq.serve();
    let (status, r) = stage(
        &hq,
        "id=r-1.1&sites=north",
        &build(dir.path(), &key_dir, "1.1.0", 200 * 1024),
    );
    assert_eq!(status, 201, "{r}");

    // A SIP port that is free now and taken during the trial boot.
    let sip_port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    };
    let plan = box_plan(&hq, &creds, hq.sync, &slots, &public, sip_port);
    let mut gw = Gateway::start_with(&plan);
    let status = wait_exit(&mut gw, "restarting into the update installed from HQ");
    assert_code(status, EXIT_RESTART, &gw);
    wait_outcome(&hq, &gw, "r-1.1", "installed");

    // The trial boot of A cannot bind SIP: health check failed, exit 3.
    let taken = UdpSocket::bind(("127.0.0.1", sip_port)).expect("take the SIP port");
    boot(slots.root());
    assert_eq!(state_of(&slots).active, SlotId::A);
    gw.restart();
    let status = wait_exit(&mut gw, "update health check failed");
    assert_code(status, EXIT_UNHEALTHY_TRIAL, &gw);
    drop(taken);

    // The boot step returns to B and marks A bad; the next start reports it.
    boot(slots.root());
    let state = state_of(&slots);
    assert_eq!(
        (state.active, state.a.status, state.b.status),
        (SlotId::B, SlotStatus::Bad, SlotStatus::Good)
    );
    gw.restart();
    let outcome = wait_outcome(&hq, &gw, "r-1.1", "rolled_back");
    let reason = outcome["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("1.1.0") && reason.contains("sip") && reason.contains("slot B"),
        "{outcome}"
    );
    let before = std::fs::read(slots.root().join("state.json")).expect("state");
    let update_dir = gw.data_dir().join("update");
    assert!(
        wait(SOON, || !update_dir.join("trial.json").exists()),
        "trial record kept"
    );

    // Altered in HQ's storage after staging: the sha256 check refuses it.
    let altered = build(dir.path(), &key_dir, "1.2.0", 200 * 1024);
    let (status, r) = stage(&hq, "id=r-1.2&sites=north", &altered);
    assert_eq!(status, 201, "{r}");
    let stored = hq
        .dir
        .path()
        .join("files/bundles")
        .join(format!("{}.bundle", bundle::sha256_hex(&altered)));
    let mut bytes = std::fs::read(&stored).expect("stored bundle");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&stored, &bytes).expect("alter");
    let outcome = wait_outcome(&hq, &gw, "r-1.2", "failed");
    assert!(
        outcome["reason"].as_str().unwrap_or("").contains("sha256"),
        "{outcome}"
    );

    // Signed by a key HQ accepts but the box does not pin: the box refuses it.
    let foreign = build(dir.path(), &rogue_dir, "1.3.0", 200 * 1024);
    let (status, r) = stage(&hq, "id=r-1.3&sites=north", &foreign);
    assert_eq!(status, 201, "{r}");
    let outcome = wait_outcome(&hq, &gw, "r-1.3", "failed");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap_or("")
            .contains("signature"),
        "{outcome}"
    );

    // Nothing installed: the slot state is byte for byte what it was; no download
    // left behind.
    assert_eq!(
        std::fs::read(slots.root().join("state.json")).expect("state"),
        before
    );
    for f in ["r-1.2.part", "r-1.2.bundle", "r-1.3.part", "r-1.3.bundle"] {
        assert!(!update_dir.join(f).exists(), "{f} left behind");
    }
    let status = gw.stop_with(Signal::SIGTERM);
    assert_code(status, 0, &gw);
}
