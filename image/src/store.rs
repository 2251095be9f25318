//! Persisting [`SlotState`] and writing slot payloads.
//!
//! - [`DirSlots`]: `ROOT/state.json` (atomic: temp file, fsync, rename, fsync dir) and
//!   payload directories `ROOT/slots/a`, `ROOT/slots/b`. Used in tests and on simple
//!   boards; also the payload side on U-Boot boards (slot partitions mounted there).
//! - [`UbootEnv`]: state in U-Boot environment variables via `fw_printenv` /
//!   `fw_setenv -s FILE` (libubootenv writes the whole set at once, redundant-env safe).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::slot::{SlotId, SlotInfo, SlotState, SlotStatus};
use crate::version::Version;

/// Loads and saves the slot state. `save` must be atomic: after a power loss, `load`
/// returns either the old or the new state.
pub trait SlotStore {
    /// Reads the persisted state (the default, all empty, when none exists yet).
    fn load(&self) -> Result<SlotState>;
    /// Persists `state` durably.
    fn save(&mut self, state: &SlotState) -> Result<()>;
}

/// Writes an image into a slot. Each call is one IO step (the unit of crash tests).
pub trait SlotPayload {
    /// Directory holding the slot's files.
    fn slot_dir(&self, slot: SlotId) -> PathBuf;
    /// Removes everything in the slot.
    fn clear(&mut self, slot: SlotId) -> Result<()>;
    /// Writes one file (creating parent directories) and fsyncs it.
    fn write_file(&mut self, slot: SlotId, path: &str, contents: &[u8], mode: u32) -> Result<()>;
    /// fsyncs every directory of the slot.
    fn sync(&mut self, slot: SlotId) -> Result<()>;
}

/// Directory backend: `ROOT/state.json`, `ROOT/slots/{a,b}/`.
#[derive(Debug, Clone)]
pub struct DirSlots {
    root: PathBuf,
}

/// State file name under a [`DirSlots`] root.
pub const STATE_FILE: &str = "state.json";

fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

impl DirSlots {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSlots { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_path(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }
}

impl SlotStore for DirSlots {
    fn load(&self) -> Result<SlotState> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                origin: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SlotState::default()),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    fn save(&mut self, state: &SlotState) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io("create", &self.root, e))?;
        let path = self.state_path();
        let tmp = self.root.join(format!("{STATE_FILE}.tmp"));
        let mut json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            origin: path.display().to_string(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        fsync_dir(&self.root)
    }
}

impl SlotPayload for DirSlots {
    fn slot_dir(&self, slot: SlotId) -> PathBuf {
        self.root.join("slots").join(slot.dir_name())
    }

    fn clear(&mut self, slot: SlotId) -> Result<()> {
        let dir = self.slot_dir(slot);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        fsync_dir(&self.root.join("slots"))
    }

    fn write_file(&mut self, slot: SlotId, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        crate::manifest::check_path(path).or_else(|e| {
            // The slot's own copies of the manifest and signature are the exception.
            if path == crate::manifest::MANIFEST_NAME || path == crate::manifest::SIGNATURE_NAME {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let full = self.slot_dir(slot).join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&full)
            .map_err(|e| Error::io("create", &full, e))?;
        f.write_all(contents)
            .and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)))
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &full, e))
    }

    fn sync(&mut self, slot: SlotId) -> Result<()> {
        let mut stack = vec![self.slot_dir(slot)];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                if entry
                    .file_type()
                    .map_err(|e| Error::io("stat", entry.path(), e))?
                    .is_dir()
                {
                    stack.push(entry.path());
                }
            }
            fsync_dir(&dir)?;
        }
        fsync_dir(&self.root.join("slots"))
    }
}

/// U-Boot environment backend.
///
/// Variables: `BOOT_ORDER` (`"A B"` or `"B A"`, pending or active slot first),
/// `BOOT_A_LEFT` / `BOOT_B_LEFT` (tries the bootloader script may still spend: 1 for a
/// pending slot, [`UbootEnv::GOOD_TRIES`] for a good one, 0 for empty/bad), and the
/// bookkeeping U-Boot ignores: `BRANCHLINE_ACTIVE`, `BRANCHLINE_FLOOR`,
/// `BRANCHLINE_SLOT_A` / `_B` (`"STATUS VERSION MIN_VERSION"`). On load a pending
/// slot's tries come from `BOOT_x_LEFT`, since the bootloader decrements it.
#[derive(Debug, Clone)]
pub struct UbootEnv {
    printenv: PathBuf,
    setenv: PathBuf,
}

impl Default for UbootEnv {
    fn default() -> Self {
        UbootEnv::new("fw_printenv", "fw_setenv")
    }
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| Error::Command {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

impl UbootEnv {
    /// Tries a good slot gets (reset by every `mark_good`).
    pub const GOOD_TRIES: u8 = 3;

    /// A backend using these `fw_printenv` / `fw_setenv` programs.
    pub fn new(printenv: impl Into<PathBuf>, setenv: impl Into<PathBuf>) -> Self {
        UbootEnv {
            printenv: printenv.into(),
            setenv: setenv.into(),
        }
    }

    fn bad(reason: String) -> Error {
        Error::State {
            origin: "U-Boot environment".into(),
            reason,
        }
    }

    fn encode_slot(info: &SlotInfo) -> String {
        let status = match info.status {
            SlotStatus::Empty => return "empty".into(),
            SlotStatus::Pending { .. } => "pending",
            SlotStatus::Good => "good",
            SlotStatus::Bad => "bad",
        };
        let v = |v: Option<Version>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!("{status} {} {}", v(info.version), v(info.min_version))
    }

    fn decode_slot(text: Option<&String>, left: u8) -> Result<SlotInfo> {
        let Some(text) = text else {
            return Ok(SlotInfo::EMPTY);
        };
        let mut parts = text.split_whitespace();
        let status = match parts.next() {
            Some("empty") | None => return Ok(SlotInfo::EMPTY),
            Some("pending") => SlotStatus::Pending {
                tries_left: left.min(1),
            },
            Some("good") => SlotStatus::Good,
            Some("bad") => SlotStatus::Bad,
            Some(other) => return Err(Self::bad(format!("unknown slot status {other:?}"))),
        };
        let mut ver = || -> Result<Option<Version>> {
            match parts.next() {
                Some("-") | None => Ok(None),
                Some(v) => v.parse().map(Some),
            }
        };
        Ok(SlotInfo {
            status,
            version: ver()?,
            min_version: ver()?,
        })
    }
}

impl SlotStore for UbootEnv {
    fn load(&self) -> Result<SlotState> {
        let out = run(&mut Command::new(&self.printenv))?;
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let left = |name: &str| -> Result<u8> {
            vars.get(name).map_or(Ok(0), |v| {
                v.parse().map_err(|_| Self::bad(format!("{name}={v:?}")))
            })
        };
        let active = match vars.get("BRANCHLINE_ACTIVE").map(String::as_str) {
            Some("B") => SlotId::B,
            Some("A") | None => SlotId::A,
            Some(other) => return Err(Self::bad(format!("BRANCHLINE_ACTIVE={other:?}"))),
        };
        let floor = match vars.get("BRANCHLINE_FLOOR").map(String::as_str) {
            None | Some("") | Some("-") => None,
            Some(v) => Some(v.parse()?),
        };
        Ok(SlotState {
            active,
            a: Self::decode_slot(vars.get("BRANCHLINE_SLOT_A"), left("BOOT_A_LEFT")?)?,
            b: Self::decode_slot(vars.get("BRANCHLINE_SLOT_B"), left("BOOT_B_LEFT")?)?,
            floor,
        })
    }

    fn save(&mut self, state: &SlotState) -> Result<()> {
        let left = |info: &SlotInfo| match info.status {
            SlotStatus::Pending { tries_left } => tries_left,
            SlotStatus::Good => Self::GOOD_TRIES,
            SlotStatus::Empty | SlotStatus::Bad => 0,
        };
        let first = [SlotId::A, SlotId::B]
            .into_iter()
            .find(|id| matches!(state.slot(*id).status, SlotStatus::Pending { tries_left } if tries_left > 0))
            .unwrap_or(state.active);
        let script = format!(
            "BOOT_ORDER {} {}\nBOOT_A_LEFT {}\nBOOT_B_LEFT {}\nBRANCHLINE_ACTIVE {}\nBRANCHLINE_FLOOR {}\nBRANCHLINE_SLOT_A {}\nBRANCHLINE_SLOT_B {}\n",
            first,
            first.other(),
            left(&state.a),
            left(&state.b),
            state.active,
            state.floor.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            Self::encode_slot(&state.a),
            Self::encode_slot(&state.b),
        );
        let file = tempfile_path();
        let result = (|| {
            fs::write(&file, script).map_err(|e| Error::io("write", &file, e))?;
            run(Command::new(&self.setenv).arg("-s").arg(&file)).map(drop)
        })();
        let _ = fs::remove_file(&file);
        result
    }
}

/// A per-call script path: unique per process and call, so concurrent saves never share it.
fn tempfile_path() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "branchline-fw_setenv-{}-{n}.txt",
        std::process::id()
    ))
}
