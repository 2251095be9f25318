//! The USB provisioning mount in the rootfs overlay: the files are in every bundle
//! (and survive the signed round trip), the udev rule parses as udev(7) rules do and
//! runs the helper the overlay ships outside udev's sandbox, and the helper
//! refuses bad input before touching anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::overlay;
use branchline_image::version::Version;
use ed25519_dalek::SigningKey;

const BOARDS: [&str; 3] = ["sim", "bl-400", "bl-812"];

fn files(board: &str) -> BTreeMap<String, BundleFile> {
    overlay::generate(board)
        .expect("overlay")
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect()
}

fn text(f: &BundleFile) -> String {
    String::from_utf8(f.contents.clone()).expect("utf8")
}

/// One `KEY{ATTR}OP"VALUE"` of a udev rule.
#[derive(Debug, PartialEq)]
struct Pair {
    key: String,
    attr: Option<String>,
    op: String,
    value: String,
}

/// Parses udev rules text the way udev(7) describes it: one rule per line (a
/// trailing backslash continues it), `#` comments, comma-separated pairs whose value
/// is double-quoted. Returns the rules, or what is wrong and where.
fn parse_udev(text: &str) -> Result<Vec<Vec<Pair>>, String> {
    const MATCH_ONLY: &[&str] = &[
        "ACTION",
        "DEVPATH",
        "KERNEL",
        "KERNELS",
        "NAME",
        "SUBSYSTEM",
        "SUBSYSTEMS",
        "DRIVER",
        "DRIVERS",
        "ATTR",
        "ATTRS",
        "TEST",
        "PROGRAM",
        "RESULT",
    ];
    const ASSIGN_KEYS: &[&str] = &[
        "ENV", "TAG", "RUN", "SYMLINK", "OWNER", "GROUP", "MODE", "OPTIONS", "LABEL", "GOTO",
        "IMPORT", "NAME", "ATTR",
    ];
    let mut rules = Vec::new();
    let mut logical = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.trim();
        if let Some(cont) = line.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(line);
        let rule = std::mem::take(&mut logical);
        let rule = rule.trim();
        if rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        let mut pairs = Vec::new();
        let mut rest = rule;
        loop {
            rest = rest.trim_start();
            let key_end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .ok_or_else(|| format!("line {line_no}: no operator after {rest:?}"))?;
            let key = &rest[..key_end];
            if key.is_empty() {
                return Err(format!("line {line_no}: expected a key at {rest:?}"));
            }
            rest = &rest[key_end..];
            let attr = if let Some(r) = rest.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("line {line_no}: unclosed {{ after {key}"))?;
                let a = &r[..end];
                rest = &r[end + 1..];
                Some(a.to_owned())
            } else {
                None
            };
            let op = ["==", "!=", "+=", "-=", ":=", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .ok_or_else(|| format!("line {line_no}: bad operator after {key} at {rest:?}"))?;
            rest = &rest[op.len()..];
            let r = rest
                .strip_prefix('"')
                .ok_or_else(|| format!("line {line_no}: value of {key} is not quoted"))?;
            let end = r
                .find('"')
                .ok_or_else(|| format!("line {line_no}: unterminated value of {key}"))?;
            let value = r[..end].to_owned();
            rest = &r[end + 1..];
            let is_match = op == "==" || op == "!=";
            let known = if is_match {
                MATCH_ONLY.contains(&key) || ASSIGN_KEYS.contains(&key)
            } else {
                ASSIGN_KEYS.contains(&key)
            };
            if !known {
                return Err(format!(
                    "line {line_no}: {key}{op} is not a udev key/operator"
                ));
            }
            if matches!(key, "ENV" | "ATTR" | "ATTRS") && attr.is_none() {
                return Err(format!("line {line_no}: {key} needs {{NAME}}"));
            }
            pairs.push(Pair {
                key: key.to_owned(),
                attr,
                op: op.to_owned(),
                value,
            });
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| format!("line {line_no}: expected ',' at {rest:?}"))?;
        }
        rules.push(pairs);
    }
    Ok(rules)
}

fn find<'p>(rule: &'p [Pair], key: &str, attr: Option<&str>) -> Option<&'p Pair> {
    rule.iter()
        .find(|p| p.key == key && p.attr.as_deref() == attr)
}

#[test]
fn the_parser_refuses_what_udev_refuses() {
    for bad in [
        "ACTION==add",                          // unquoted
        "ACTION==\"add\" SUBSYSTEM==\"block\"", // missing comma
        "ENV==\"x\"",                           // ENV without {NAME}
        "ACTION=~\"add\"",                      // no such operator
        "FOO=\"1\"",                            // no such key
        "ACTION==\"add",                        // unterminated
    ] {
        assert!(parse_udev(bad).is_err(), "{bad} accepted");
    }
    let ok = parse_udev("# c\nACTION==\"add\", \\\n  TAG+=\"systemd\"\n").expect("ok");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].len(), 2);
}

#[test]
fn udev_rule_parses_and_wants_the_shipped_mount_unit() {
    for board in BOARDS {
        let f = files(board);
        let rules =
            parse_udev(&text(&f[overlay::UDEV_PATH])).unwrap_or_else(|e| panic!("{board}: {e}"));
        assert_eq!(rules.len(), 2, "{rules:?}");
        let r = &rules[0];
        let eq = |key, attr, want: &str| {
            let p = find(r, key, attr).unwrap_or_else(|| panic!("{key} {attr:?} missing: {r:?}"));
            assert_eq!((p.op.as_str(), p.value.as_str()), ("==", want), "{key}");
        };
        eq("ACTION", None, "add");
        eq("SUBSYSTEM", None, "block");
        eq("ENV", Some("ID_BUS"), "usb");
        eq("ENV", Some("ID_FS_USAGE"), "filesystem");
        // The helper runs outside udev's sandbox, as a transient service.
        let run = find(r, "RUN", Some("program")).expect("RUN{program}");
        assert_eq!(run.op, "+=");
        let script = format!("/{}", overlay::USB_MOUNT_SCRIPT_PATH);
        assert!(
            run.value.starts_with("/usr/bin/systemd-run --no-block ")
                && run.value.ends_with(&format!("{script} add %k")),
            "{}",
            run.value
        );
        let remove = &rules[1];
        let run = find(remove, "RUN", Some("program")).expect("remove RUN");
        assert!(
            run.value.ends_with(&format!("{script} remove %k")),
            "{}",
            run.value
        );
        assert_eq!(
            find(remove, "ACTION", None).map(|p| p.value.as_str()),
            Some("remove")
        );
    }
}

#[test]
fn helper_and_base_directory_are_shipped() {
    for board in BOARDS {
        let f = files(board);
        // The helper is there, executable, with the required mount options; the base
        // directory is created at boot and writable in branchd's unit.
        let helper = &f[overlay::USB_MOUNT_SCRIPT_PATH];
        assert_eq!(helper.mode, 0o755);
        let body = text(helper);
        assert!(body.starts_with("#!/bin/sh\n"));
        for opt in ["rw", "nodev", "nosuid", "noexec"] {
            assert!(
                overlay::USB_MOUNT_OPTIONS.split(',').any(|o| o == opt),
                "{opt} missing"
            );
        }
        assert!(body.contains(&format!("OPTIONS={}", overlay::USB_MOUNT_OPTIONS)));
        let tmpfiles = text(&f[overlay::TMPFILES_PATH]);
        assert!(
            tmpfiles
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(overlay::USB_MOUNT_BASE)),
            "{tmpfiles}"
        );
        let branchd = text(&f[overlay::UNIT_PATH]);
        assert!(branchd.contains(&format!("ReadWritePaths=-{}", overlay::USB_MOUNT_BASE)));
    }
}

fn helper(dir: &Path) -> std::path::PathBuf {
    let f = files("sim");
    let path = dir.join("usb-mount");
    std::fs::write(&path, &f[overlay::USB_MOUNT_SCRIPT_PATH].contents).expect("write");
    path
}

#[test]
fn helper_is_valid_sh_and_refuses_bad_input_before_doing_anything() {
    let dir = tempfile::tempdir().expect("tmp");
    let script = helper(dir.path());
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("sh -n");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for (args, want) in [
        (vec![], "usage"),
        (vec!["add"], "usage"),
        (vec!["add", "../../etc"], "bad device name"),
        (vec!["add", "sda1;reboot"], "bad device name"),
        (vec!["add", "SDA1"], "bad device name"),
        (vec!["add", ""], "bad device name"),
        (vec!["eject", "sda1"], "unknown action"),
    ] {
        let out = Command::new("sh")
            .arg(&script)
            .args(&args)
            .output()
            .expect("run helper");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A device that does not exist, and a file that is not a block device: refused
    // before anything is probed or mounted.
    for name in ["nosuchdisk9", "null"] {
        let out = Command::new("sh")
            .arg(&script)
            .args(["add", name])
            .output()
            .expect("run helper");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("is not a block device"), "{name}: {err}");
    }
}

#[test]
fn the_files_are_in_the_signed_bundle() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let mut files = overlay::generate("bl-400").expect("overlay");
    files.push(BundleFile {
        path: "usr/bin/branchd".into(),
        contents: b"binary".to_vec(),
        mode: 0o755,
    });
    let v: Version = "1.0.0".parse().expect("version");
    let spec = BuildSpec {
        board: "bl-400".into(),
        target: "aarch64-unknown-linux-gnu".into(),
        version: v,
        min_version: v,
        build_time: 1_700_000_000,
        files,
    };
    let bytes = bundle::build(&spec, &key).expect("build");
    let opened = bundle::open(&bytes, &[key.verifying_key()])
        .expect("open")
        .verify_files()
        .expect("hashes");
    let inside: BTreeMap<String, (Vec<u8>, u32)> = opened
        .files()
        .map(|(e, c)| (e.path.clone(), (c.to_vec(), e.mode)))
        .collect();
    for path in [
        overlay::UDEV_PATH,
        overlay::USB_MOUNT_SCRIPT_PATH,
        overlay::TMPFILES_PATH,
    ] {
        let (contents, mode) = inside
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in the bundle: {:?}", inside.keys()));
        let want = files_of("bl-400", path);
        assert_eq!(contents, &want.contents, "{path}");
        assert_eq!(*mode, want.mode, "{path}");
    }
}

fn files_of(board: &str, path: &str) -> BundleFile {
    files(board).remove(path).expect("generated")
}
