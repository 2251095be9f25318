//! Bundle, updater and CLI tests. Each refusal test also checks the slots are untouched.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::manifest::{FileEntry, Manifest};
use branchline_image::policy::Identity;
use branchline_image::slot::{SlotId, SlotState, SlotStatus};
use branchline_image::store::{DirSlots, SlotPayload, SlotStore, UbootEnv};
use branchline_image::update::{self, verify_slot};
use branchline_image::version::Version;
use branchline_image::{overlay, Error};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

const TARGET: &str = "aarch64-unknown-linux-gnu";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn pinned() -> Vec<VerifyingKey> {
    vec![
        SigningKey::from_bytes(&[9u8; 32]).verifying_key(),
        key().verifying_key(),
    ]
}

fn me() -> Identity {
    Identity {
        board: "bl-400".into(),
        target: TARGET.into(),
    }
}

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

fn spec(board: &str, version: &str, min: &str, build_time: u64) -> BuildSpec {
    let mut files = overlay::generate(board).expect("overlay");
    // A fake binary whose contents depend on the version.
    let bin: Vec<u8> = (0..5000u32)
        .map(|i| (i * 31 + version.len() as u32) as u8)
        .chain(version.bytes())
        .collect();
    files.push(BundleFile {
        path: "usr/bin/branchd".into(),
        contents: bin,
        mode: 0o755,
    });
    BuildSpec {
        board: board.into(),
        target: TARGET.into(),
        version: v(version),
        min_version: v(min),
        build_time,
        files,
    }
}

fn bundle(version: &str, min: &str) -> Vec<u8> {
    bundle::build(&spec("bl-400", version, min, 1_700_000_000), &key()).expect("build")
}

/// Every file under `dir` with its bytes and mode: to prove nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.expect("entry").path();
            let meta = fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.clone(),
                    (fs::read(&p).expect("read"), meta.permissions().mode()),
                );
            }
        }
    }
    out
}

fn install(bytes: &[u8], slots: &DirSlots) -> branchline_image::Result<update::Installed> {
    update::install(
        bytes,
        &pinned(),
        &me(),
        false,
        &mut slots.clone(),
        &mut slots.clone(),
    )
}

/// A box with 1.0.0 committed in slot B (installed into a fresh box: A active, B inactive).
fn committed_box(dir: &Path) -> DirSlots {
    let slots = DirSlots::new(dir);
    install(&bundle("1.0.0", "1.0.0"), &slots).expect("install 1.0.0");
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::B);
    update::mark_good(&mut slots.clone()).expect("mark good");
    slots
}

#[test]
fn round_trip() {
    let spec = spec("bl-400", "1.2.3", "1.0.0", 1_700_000_000);
    let bytes = bundle::build(&spec, &key()).expect("build");
    let signed = bundle::open(&bytes, &pinned()).expect("open");
    assert_eq!(signed.key, key().verifying_key());
    let verified = signed.verify_files().expect("verify");
    let m = &verified.manifest;
    assert_eq!(
        (m.format, m.product.as_str(), m.board.as_str()),
        (1, "branchline", "bl-400")
    );
    assert_eq!(
        (m.version, m.min_version, m.build_time),
        (v("1.2.3"), v("1.0.0"), 1_700_000_000)
    );
    let want: BTreeMap<_, _> = spec
        .files
        .iter()
        .map(|f| (f.path.clone(), (f.contents.clone(), f.mode)))
        .collect();
    let got: BTreeMap<_, _> = verified
        .files()
        .map(|(e, c)| (e.path.clone(), (c.to_vec(), e.mode)))
        .collect();
    assert_eq!(got, want);
    assert!(m.files.windows(2).all(|w| w[0].path < w[1].path), "sorted");
    // The kernel lets branchd have the SIP receive buffer it asks for.
    let sysctl = String::from_utf8(want[overlay::SYSCTL_PATH].0.clone()).expect("utf8");
    assert!(
        sysctl.lines().any(|l| l == "net.core.rmem_max = 4194304"),
        "{sysctl}"
    );
    const { assert!(4_194_304 >= branchline_sip::transport::DEFAULT_UDP_RECEIVE_BUFFER) };
    // The generated unit is what the overlay promised.
    let unit = String::from_utf8(want[overlay::UNIT_PATH].0.clone()).expect("utf8");
    for line in [
        "User=branchline",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_PACKET",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/branchline",
        "DeviceAllow=/dev/ttymxc2 rw",
        "DeviceAllow=/dev/gpiochip0 rw",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "RestartPreventExitStatus=3",
        "FailureAction=reboot",
        "ReadWritePaths=-/var/lib/branchline-slots",
        "DeviceAllow=char-mtd rw",
        "ReadWritePaths=-/run/lock",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from unit");
    }
    // The exit status the unit keeps from restarting is the one branchd uses for a
    // failed trial boot.
    assert_eq!(
        branchline_firmware::health::EXIT_UNHEALTHY_TRIAL,
        3,
        "RestartPreventExitStatus= follows health::EXIT_UNHEALTHY_TRIAL"
    );
    // The simulator board has no U-Boot environment to write.
    let sim = overlay::generate("sim").expect("overlay");
    let sim_unit = sim
        .iter()
        .find(|f| f.path == overlay::UNIT_PATH)
        .map(|f| String::from_utf8(f.contents.clone()).expect("utf8"))
        .expect("unit");
    assert!(!sim_unit.contains("char-mtd"), "{sim_unit}");
    assert!(sim_unit.lines().any(|l| l == "WatchdogSec=30s"));
    // Its slots are a directory: the boot step runs once per boot before branchd.
    for line in [
        "Wants=branchline-slot-boot.service",
        "After=branchline-slot-boot.service",
    ] {
        assert!(sim_unit.lines().any(|l| l == line), "{line} missing");
    }
    let boot = sim
        .iter()
        .find(|f| f.path == overlay::BOOT_UNIT_PATH)
        .map(|f| String::from_utf8(f.contents.clone()).expect("utf8"))
        .expect("boot-step unit");
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "Before=branchd.service",
        "ExecStart=/usr/bin/branch-image boot --slots /var/lib/branchline-slots",
    ] {
        assert!(boot.lines().any(|l| l == line), "{line} missing: {boot}");
    }
    assert_eq!(
        overlay::required_binaries("sim").expect("sim"),
        ["branchd", "branch-image"]
    );
    // U-Boot boards: the bootloader does it.
    assert!(!want.contains_key(overlay::BOOT_UNIT_PATH));
    assert!(!unit.contains("branchline-slot-boot"), "{unit}");
    assert_eq!(
        overlay::required_binaries("bl-400").expect("bl-400"),
        ["branchd"]
    );
    assert!(overlay::required_binaries("nope").is_err());
}

#[test]
fn generated_config_loads_in_branchd() {
    for board in ["sim", "bl-400", "bl-812"] {
        let dir = tempfile::tempdir().expect("tmp");
        let files = overlay::generate(board).expect("overlay");
        let cfg = files
            .iter()
            .find(|f| f.path == overlay::CONFIG_PATH)
            .expect("config");
        let path = dir.path().join("branchd.toml");
        fs::write(&path, &cfg.contents).expect("write");
        let config = branchline_firmware::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("{board}: {e}"));
        // A shipped box serves the technicians' page on every LAN address.
        assert_eq!(
            config.web.listen,
            Some("0.0.0.0:80".parse().expect("addr")),
            "{board}"
        );
    }
}

#[test]
fn reproducible() {
    let a = bundle::build(&spec("bl-400", "1.2.3", "1.0.0", 1_700_000_000), &key()).expect("build");
    let b = bundle::build(&spec("bl-400", "1.2.3", "1.0.0", 1_700_000_000), &key()).expect("build");
    assert_eq!(a, b, "same inputs, same bytes");
    let c = bundle::build(&spec("bl-400", "1.2.3", "1.0.0", 1_700_000_001), &key()).expect("build");
    assert_ne!(a, c, "SOURCE_DATE_EPOCH is in the bundle");
    // Input order does not matter.
    let mut s = spec("bl-400", "1.2.3", "1.0.0", 1_700_000_000);
    s.files.reverse();
    assert_eq!(bundle::build(&s, &key()).expect("build"), a);
}

#[test]
fn every_flipped_byte_is_refused_and_slots_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    let before = snapshot(dir.path());
    let good = bundle("1.1.0", "1.0.0");
    // Entries 0 and 1 (headers + data blocks of manifest.json and manifest.sig) byte by
    // byte, then every 97th byte of the rest, plus the last byte.
    let manifest_len = tar::Header::from_byte_slice(&good[..512])
        .size()
        .expect("size") as usize;
    let mut reasons = BTreeMap::<String, usize>::new();
    let head_end = 512 + manifest_len.div_ceil(512) * 512 + 512 + 512;
    let positions: Vec<usize> = (0..head_end)
        .chain((head_end..good.len()).step_by(97))
        .chain([good.len() - 1])
        .collect();
    assert!(positions.len() > head_end + 10);
    for pos in positions {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        let err = install(&bad, &slots)
            .err()
            .unwrap_or_else(|| panic!("flip at {pos} accepted"));
        let kind = format!("{err:?}");
        *reasons
            .entry(kind.split([' ', '(', '{']).next().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    println!("refusals by kind: {reasons:?}");
    assert!(
        reasons.contains_key("NotCanonical") && reasons.contains_key("BadSignature"),
        "{reasons:?}"
    );
    assert_eq!(snapshot(dir.path()), before, "slots touched");
    // And the unmodified bundle does install.
    install(&good, &slots).expect("good bundle");
}

#[test]
fn wrong_key_other_board_truncated_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    let before = snapshot(dir.path());
    let good = bundle("1.1.0", "1.0.0");

    let other = SigningKey::from_bytes(&[1u8; 32]);
    let foreign = bundle::build(&spec("bl-400", "1.1.0", "1.0.0", 1), &other).expect("build");
    match install(&foreign, &slots) {
        Err(Error::BadSignature {
            key_count: 2,
            fingerprints,
        }) => assert!(fingerprints.contains(", ")),
        other => panic!("wrong key: {other:?}"),
    }

    let board = bundle::build(&spec("bl-812", "1.1.0", "1.0.0", 1), &key()).expect("build");
    assert!(matches!(
        install(&board, &slots),
        Err(Error::WrongTarget { field: "board", .. })
    ));
    let mut s = spec("bl-400", "1.1.0", "1.0.0", 1);
    s.target = "armv7-unknown-linux-gnueabihf".into();
    let target = bundle::build(&s, &key()).expect("build");
    assert!(matches!(
        install(&target, &slots),
        Err(Error::WrongTarget {
            field: "target",
            ..
        })
    ));

    for len in [
        0,
        100,
        511,
        512,
        1500,
        good.len() / 2,
        good.len() - 1024,
        good.len() - 512,
        good.len() - 1,
    ] {
        let err = install(&good[..len], &slots).expect_err("truncated accepted");
        assert!(!err.to_string().is_empty(), "{len}");
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0u8; 512]);
    assert!(matches!(
        install(&longer, &slots),
        Err(Error::NotCanonical { .. })
    ));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn downgrade_and_floor() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    // Commit 2.0.0 with floor 1.5.0.
    install(&bundle("2.0.0", "1.5.0"), &slots).expect("install");
    update::boot(&mut slots.clone()).expect("boot");
    update::mark_good(&mut slots.clone()).expect("good");
    assert_eq!(slots.load().expect("load").floor, Some(v("1.5.0")));
    let before = snapshot(dir.path());

    let older = bundle("1.9.0", "1.0.0");
    assert!(matches!(
        install(&older, &slots),
        Err(Error::NotNewer { .. })
    ));
    assert!(matches!(
        install(&bundle("2.0.0", "1.0.0"), &slots),
        Err(Error::NotNewer { .. })
    ));
    let below = bundle("1.4.9", "1.0.0");
    for allow in [false, true] {
        let r = update::install(
            &below,
            &pinned(),
            &me(),
            allow,
            &mut slots.clone(),
            &mut slots.clone(),
        );
        assert!(matches!(r, Err(Error::BelowFloor { .. })), "{allow}: {r:?}");
    }
    assert_eq!(snapshot(dir.path()), before);
    // A deliberate downgrade to or above the floor is possible when asked for.
    update::install(
        &older,
        &pinned(),
        &me(),
        true,
        &mut slots.clone(),
        &mut slots.clone(),
    )
    .expect("allowed downgrade");
}

/// A crafted, correctly signed bundle whose tar entries the signer did not produce.
fn crafted(manifest: &Manifest, entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut m = serde_json::to_vec_pretty(manifest).expect("json");
    m.push(b'\n');
    let sig = key().sign(&m).to_bytes();
    let mut b = tar::Builder::new(Vec::new());
    let mut raw = |name: &[u8], kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(manifest.build_time);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    raw(b"manifest.json", tar::EntryType::Regular, &m);
    raw(b"manifest.sig", tar::EntryType::Regular, &sig);
    for (name, kind, data) in entries {
        raw(name, *kind, data);
    }
    b.into_inner().expect("tar")
}

#[test]
fn hostile_entries_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    let before = snapshot(dir.path());
    let data = b"#!/bin/sh\n";
    let manifest = Manifest {
        format: 1,
        product: "branchline".into(),
        board: "bl-400".into(),
        target: TARGET.into(),
        version: v("1.1.0"),
        min_version: v("1.0.0"),
        build_time: 5,
        files: vec![FileEntry {
            path: "usr/bin/branchd".into(),
            sha256: bundle::sha256_hex(data),
            size: data.len() as u64,
            mode: 0o755,
        }],
    };
    let regular = tar::EntryType::Regular;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            crafted(&manifest, &[(b"../../etc/passwd", regular, data)]),
        ),
        (
            "absolute",
            crafted(&manifest, &[(b"/usr/bin/branchd", regular, data)]),
        ),
        (
            "inner dotdot",
            crafted(&manifest, &[(b"usr/../../x", regular, data)]),
        ),
        (
            "symlink",
            crafted(
                &manifest,
                &[(b"usr/bin/branchd", tar::EntryType::Symlink, b"")],
            ),
        ),
        (
            "hardlink",
            crafted(
                &manifest,
                &[(b"usr/bin/branchd", tar::EntryType::Link, b"")],
            ),
        ),
        (
            "extra entry",
            crafted(
                &manifest,
                &[
                    (b"usr/bin/branchd", regular, data),
                    (b"usr/bin/evil", regular, data),
                ],
            ),
        ),
        ("missing entry", crafted(&manifest, &[])),
        (
            "other name",
            crafted(&manifest, &[(b"usr/bin/other", regular, data)]),
        ),
        (
            "changed data",
            crafted(&manifest, &[(b"usr/bin/branchd", regular, b"#!/bin/sh\nX")]),
        ),
    ];
    for (name, bytes) in cases {
        let err = install(&bytes, &slots).expect_err(name);
        println!("{name}: {err}");
        match name {
            "dotdot" | "absolute" | "inner dotdot" => {
                assert!(matches!(err, Error::UnsafePath { .. }), "{name}: {err}")
            }
            "symlink" | "hardlink" => {
                assert!(matches!(err, Error::NotRegularFile { .. }), "{name}: {err}")
            }
            "extra entry" | "other name" => assert!(
                matches!(err, Error::UnexpectedEntry { .. }),
                "{name}: {err}"
            ),
            "missing entry" => assert!(matches!(err, Error::Truncated(_)), "{name}: {err}"),
            _ => assert!(
                matches!(err, Error::SizeMismatch { .. } | Error::HashMismatch { .. }),
                "{name}: {err}"
            ),
        }
    }
    // A signed manifest that itself lists a traversal path.
    let mut evil = manifest.clone();
    evil.files[0].path = "../x".into();
    let err =
        install(&crafted(&evil, &[(b"../x", regular, data)]), &slots).expect_err("evil manifest");
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    assert!(
        !dir.path().join("etc").exists()
            && !dir.path().parent().expect("parent").join("x").exists()
    );
}

#[test]
fn ab_cycle_rollback_then_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    let b_dir = slots.slot_dir(SlotId::B);
    let b_before = snapshot(&b_dir);

    // Install 1.1.0: goes to A, B (active) untouched.
    let done = install(&bundle("1.1.0", "1.0.0"), &slots).expect("install");
    assert_eq!(done.slot, SlotId::A);
    assert_eq!(snapshot(&b_dir), b_before, "active slot written");
    verify_slot(&slots.slot_dir(SlotId::A), &pinned()).expect("A verifies");
    // Reboot: A is tried once. Health check fails (no mark-good). Reboot: back to B.
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    assert!(
        install(&bundle("1.2.0", "1.0.0"), &slots).is_err(),
        "no install over the fallback during a trial"
    );
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::B);
    let s = slots.load().expect("load");
    assert_eq!(
        (s.active, s.a.status, s.b.status),
        (SlotId::B, SlotStatus::Bad, SlotStatus::Good)
    );
    assert_eq!(
        update::boot(&mut slots.clone()).expect("boot"),
        SlotId::B,
        "stays on B"
    );
    assert_eq!(
        verify_slot(&b_dir, &pinned()).expect("B").version,
        v("1.0.0")
    );

    // Again, and this time the health check passes.
    install(&bundle("1.1.0", "1.0.0"), &slots).expect("install");
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    update::mark_good(&mut slots.clone()).expect("good");
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    assert_eq!(update::boot(&mut slots.clone()).expect("boot"), SlotId::A);
    let s = slots.load().expect("load");
    assert_eq!(
        (s.active, s.a.status, s.a.version),
        (SlotId::A, SlotStatus::Good, Some(v("1.1.0")))
    );
}

/// Wraps a store or payload; fails (simulated power loss) at IO step `fail_at`, shared
/// between the wrappers. A failing `write_file` first writes half the file.
#[derive(Clone)]
struct Faulty<T> {
    inner: T,
    step: Rc<Cell<usize>>,
    fail_at: usize,
}

impl<T> Faulty<T> {
    fn tick(&self) -> branchline_image::Result<bool> {
        let step = self.step.get();
        self.step.set(step + 1);
        if step == self.fail_at {
            return Err(Error::Injected { step });
        }
        Ok(step + 1 == self.fail_at)
    }
}

impl<T: SlotStore> SlotStore for Faulty<T> {
    fn load(&self) -> branchline_image::Result<SlotState> {
        self.inner.load()
    }
    fn save(&mut self, state: &SlotState) -> branchline_image::Result<()> {
        self.tick()?;
        self.inner.save(state)
    }
}

impl<T: SlotPayload> SlotPayload for Faulty<T> {
    fn slot_dir(&self, slot: SlotId) -> PathBuf {
        self.inner.slot_dir(slot)
    }
    fn clear(&mut self, slot: SlotId) -> branchline_image::Result<()> {
        self.tick()?;
        self.inner.clear(slot)
    }
    fn write_file(
        &mut self,
        slot: SlotId,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> branchline_image::Result<()> {
        let step = self.step.get();
        if step == self.fail_at {
            // Torn write: half the file reaches the disk.
            let _ = self
                .inner
                .write_file(slot, path, &contents[..contents.len() / 2], mode);
        }
        self.tick()?;
        self.inner.write_file(slot, path, contents, mode)
    }
    fn sync(&mut self, slot: SlotId) -> branchline_image::Result<()> {
        self.tick()?;
        self.inner.sync(slot)
    }
}

#[test]
fn power_loss_at_every_step_leaves_a_bootable_verified_slot() {
    let mut crashes = 0;
    for fail_at in 0.. {
        let dir = tempfile::tempdir().expect("tmp");
        let slots = committed_box(dir.path());
        let step = Rc::new(Cell::new(0));
        let mut store = Faulty {
            inner: slots.clone(),
            step: step.clone(),
            fail_at,
        };
        let mut payload = store.clone();
        // The whole update: install, reboot into the new slot, health check commits.
        let result = update::install(
            &bundle("1.1.0", "1.0.0"),
            &pinned(),
            &me(),
            false,
            &mut store,
            &mut payload,
        )
        .and_then(|_| update::boot(&mut store))
        .and_then(|_| update::mark_good(&mut store));
        match result {
            Ok(()) => {
                assert!(crashes >= 8, "too few IO steps exercised: {crashes}");
                let s = slots.load().expect("load");
                assert_eq!(s.installed(), Some(v("1.1.0")));
                break;
            }
            Err(Error::Injected { .. }) => crashes += 1,
            Err(e) => panic!("step {fail_at}: {e}"),
        }
        // Power back on, twice (a pending trial that is not marked good rolls back):
        // every boot must land on a slot holding a complete, verified image.
        for _ in 0..2 {
            let slot =
                update::boot(&mut slots.clone()).unwrap_or_else(|e| panic!("step {fail_at}: {e}"));
            let m = verify_slot(&slots.slot_dir(slot), &pinned())
                .unwrap_or_else(|e| panic!("step {fail_at}: slot {slot}: {e}"));
            assert!(m.version == v("1.0.0") || m.version == v("1.1.0"));
        }
        // And the box can still be updated afterwards.
        let s = slots.load().expect("load");
        if s.installed() == Some(v("1.0.0")) {
            install(&bundle("1.1.0", "1.0.0"), &slots)
                .unwrap_or_else(|e| panic!("step {fail_at}: retry: {e}"));
        }
    }
}

#[test]
fn stale_temp_state_file_is_ignored() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = committed_box(dir.path());
    let state = slots.load().expect("load");
    fs::write(dir.path().join("state.json.tmp"), b"{ torn").expect("write");
    assert_eq!(slots.load().expect("load"), state);
    update::mark_good(&mut slots.clone()).expect("save over stale temp");
}

fn fake_uboot(dir: &Path) -> UbootEnv {
    use std::os::unix::fs::PermissionsExt;
    let env = dir.join("uboot.env");
    let print = dir.join("fw_printenv");
    let set = dir.join("fw_setenv");
    fs::write(
        &print,
        format!(
            "#!/bin/sh\n[ -f '{e}' ] && cat '{e}'\nexit 0\n",
            e = env.display()
        ),
    )
    .expect("write");
    fs::write(
        &set,
        format!(
            "#!/bin/sh\n# fake fw_setenv: only '-s FILE' (NAME VALUE lines; no value deletes)\n\
             [ \"$1\" = -s ] || {{ echo usage >&2; exit 2; }}\nE='{e}'\ntouch \"$E\"\n\
             while read -r name value; do\n  grep -v \"^$name=\" \"$E\" > \"$E.new\" || true\n\
               [ -n \"$value\" ] && echo \"$name=$value\" >> \"$E.new\"\n  mv \"$E.new\" \"$E\"\ndone < \"$2\"\n",
            e = env.display()
        ),
    )
    .expect("write");
    for p in [&print, &set] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    UbootEnv::new(print, set)
}

#[test]
fn uboot_env_backend() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut env = fake_uboot(dir.path());
    assert_eq!(env.load().expect("empty env"), SlotState::default());
    let payload = DirSlots::new(dir.path().join("root"));
    let install_with_env = |env: &mut UbootEnv, version: &str| {
        update::install(
            &bundle(version, "1.0.0"),
            &pinned(),
            &me(),
            false,
            env,
            &mut payload.clone(),
        )
    };
    install_with_env(&mut env, "1.0.0").expect("install");
    let vars = fs::read_to_string(dir.path().join("uboot.env")).expect("env");
    for line in [
        "BOOT_ORDER=B A",
        "BOOT_A_LEFT=0",
        "BOOT_B_LEFT=1",
        "BRANCHLINE_SLOT_B=pending 1.0.0 1.0.0",
    ] {
        assert!(vars.lines().any(|l| l == line), "{line} not in\n{vars}");
    }
    assert_eq!(update::boot(&mut env).expect("boot"), SlotId::B);
    assert!(fs::read_to_string(dir.path().join("uboot.env"))
        .expect("env")
        .contains("BOOT_B_LEFT=0"));
    update::mark_good(&mut env).expect("good");
    let s = env.load().expect("load");
    assert_eq!(
        (s.active, s.b.status, s.floor),
        (SlotId::B, SlotStatus::Good, Some(v("1.0.0")))
    );
    assert!(fs::read_to_string(dir.path().join("uboot.env"))
        .expect("env")
        .contains("BOOT_B_LEFT=3"));

    // Rollback through the env, as with the directory backend.
    install_with_env(&mut env, "1.1.0").expect("install");
    assert_eq!(update::boot(&mut env).expect("boot"), SlotId::A);
    assert_eq!(update::boot(&mut env).expect("boot"), SlotId::B);
    assert_eq!(env.load().expect("load").a.status, SlotStatus::Bad);

    // A failing command is an error naming the command.
    let mut broken = UbootEnv::new(dir.path().join("fw_printenv"), "/nonexistent/fw_setenv");
    let err = broken
        .save(&SlotState::default())
        .expect_err("missing fw_setenv");
    assert!(err.to_string().contains("/nonexistent/fw_setenv"), "{err}");
}

#[test]
fn cli_keygen_build_verify_install_boot() {
    use std::os::unix::fs::PermissionsExt;
    let exe = env!("CARGO_BIN_EXE_branch-image");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let run = |args: &[&str], epoch: Option<&str>| {
        // Under scripts/cross-build.sh the binary is foreign too: run it through the
        // same emulator as this test.
        let mut c = branchline_board::runner::command(exe);
        c.args(args).env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e);
        }
        let out = c.output().expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ok = |args: &[&str], epoch: Option<&str>| {
        let (ok, out) = run(args, epoch);
        assert!(ok, "{args:?}: {out}");
        out
    };
    let s = |p: PathBuf| p.to_str().expect("utf8").to_owned();
    ok(&["keygen", "--out", &s(d.join("keys"))], None);
    let private = d.join("keys/branchline-signing.key");
    assert_eq!(
        fs::metadata(&private).expect("key").permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !run(&["keygen", "--out", &s(d.join("keys"))], None).0,
        "keygen must not overwrite a key"
    );
    let public = s(d.join("keys/branchline-signing.pub"));
    fs::write(d.join("branchd"), b"\x7fELF fake branchd").expect("bin");
    fs::create_dir_all(d.join("extra/etc/branchline")).expect("mkdir");
    fs::write(d.join("extra/etc/branchline/site.txt"), b"site").expect("extra");
    let build = |out: &str, version: &str, epoch: &str| {
        run(
            &[
                "build",
                "--board",
                "bl-400",
                "--target",
                TARGET,
                "--version",
                version,
                "--min-version",
                "1.0.0",
                "--key",
                &s(private.clone()),
                "--bin",
                &s(d.join("branchd")),
                "--overlay",
                &s(d.join("extra")),
                "--out",
                &s(d.join(out)),
            ],
            Some(epoch),
        )
    };
    assert!(build("x.bundle", "1.0.0", "1700000000").0);
    assert!(build("y.bundle", "1.0.0", "1700000000").0);
    assert!(build("z.bundle", "1.0.0", "1700000001").0);
    let read = |n: &str| fs::read(d.join(n)).expect("bundle");
    assert_eq!(read("x.bundle"), read("y.bundle"), "reproducible");
    assert_ne!(read("x.bundle"), read("z.bundle"));
    let (ok_, out) = run(
        &[
            "build",
            "--board",
            "bl-400",
            "--target",
            TARGET,
            "--version",
            "1.0.0",
            "--min-version",
            "1.0.0",
            "--key",
            &s(private.clone()),
            "--bin",
            &s(d.join("branchd")),
            "--out",
            &s(d.join("n")),
        ],
        None,
    );
    assert!(!ok_ && out.contains("SOURCE_DATE_EPOCH"), "{out}");
    // The simulated board's slots are a directory: its boot-step unit runs
    // branch-image, so a bundle without it is refused, and nothing is written.
    let sim = |bins: &[&str]| {
        let mut args = vec![
            "build",
            "--board",
            "sim",
            "--target",
            TARGET,
            "--version",
            "1.0.0",
            "--min-version",
            "1.0.0",
            "--key",
        ];
        let key = s(private.clone());
        args.push(&key);
        let paths: Vec<String> = bins.iter().map(|b| s(d.join(b))).collect();
        for p in &paths {
            args.extend(["--bin", p.as_str()]);
        }
        let out = s(d.join("sim.bundle"));
        args.extend(["--out", out.as_str()]);
        run(&args, Some("1700000000"))
    };
    let (ok_, out) = sim(&["branchd"]);
    assert!(
        !ok_ && out.contains("usr/bin/branch-image") && out.contains("--bin"),
        "{out}"
    );
    assert!(!d.join("sim.bundle").exists(), "nothing written");
    fs::write(d.join("branch-image"), b"\x7fELF fake branch-image").expect("bin");
    let (ok_, out) = sim(&["branchd", "branch-image"]);
    assert!(ok_, "{out}");

    let out = ok(&["verify", "--key", &public, &s(d.join("x.bundle"))], None);
    assert!(out.contains("ok: branchline 1.0.0"), "{out}");
    let slots = s(d.join("box"));
    let (ok_, out) = run(
        &[
            "install",
            "--key",
            &public,
            "--slots",
            &slots,
            &s(d.join("x.bundle")),
        ],
        None,
    );
    assert!(
        !ok_ && out.contains("--board"),
        "fresh box needs an identity: {out}"
    );
    ok(
        &[
            "install",
            "--key",
            &public,
            "--slots",
            &slots,
            "--board",
            "bl-400",
            "--target",
            TARGET,
            &s(d.join("x.bundle")),
        ],
        None,
    );
    assert_eq!(ok(&["boot", "--slots", &slots], None).trim(), "B");
    ok(&["mark-good", "--slots", &slots], None);
    assert!(ok(&["status", "--slots", &slots], None).contains("\"good\""));
    assert_eq!(
        fs::read(d.join("box/slots/b/etc/branchline/site.txt")).expect("overlay file"),
        b"site"
    );
    assert!(d.join("box/slots/b/usr/bin/branchd").exists());
    // Identity now comes from the running image; same version is refused.
    let (ok_, out) = run(
        &[
            "install",
            "--key",
            &public,
            "--slots",
            &slots,
            &s(d.join("x.bundle")),
        ],
        None,
    );
    assert!(!ok_ && out.contains("not newer"), "{out}");
    assert!(build("v2.bundle", "1.1.0", "1700000000").0);
    ok(
        &[
            "install",
            "--key",
            &public,
            "--slots",
            &slots,
            &s(d.join("v2.bundle")),
        ],
        None,
    );
}
