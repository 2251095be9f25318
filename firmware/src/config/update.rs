//! `[update]`: where this box keeps its A/B slot state, and how long the post-boot
//! health check ([`crate::health`]) may take. Validated like the rest of the file:
//! every error names the file, the line and the field.
//!
//! ```toml
//! [update]
//! backend = "dir"               # "dir": ROOT/state.json + ROOT/slots/{a,b}
//! slots = "/slots"              # dir only: the slots root
//! health_deadline_s = 120       # how long the health check may take (10..=3600)
//!
//! # or, on a board whose bootloader is U-Boot:
//! # backend = "uboot"
//! # fw_printenv = "fw_printenv" # program paths (default: found on PATH)
//! # fw_setenv = "fw_setenv"
//! # cmdline = "/proc/cmdline"   # where the bootloader's branchline.slot=A|B is read
//! # slots = "/var/lib/branchline-slots"  # slot partitions mounted at slots/{a,b}
//! ```
//!
//! No `[update]` section means the box has no A/B slots (a development machine): the
//! health check still runs and logs its verdict, but never touches slot state.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::error::Result;

/// Default and allowed range of `update.health_deadline_s`.
pub const HEALTH_DEADLINE_S: (i64, RangeInclusive<i64>) = (120, 10..=3600);
/// Default of `update.cmdline`: the kernel command line.
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";
/// Default of `update.fw_printenv` (looked up on `PATH`).
pub const DEFAULT_FW_PRINTENV: &str = "fw_printenv";
/// Default of `update.fw_setenv` (looked up on `PATH`).
pub const DEFAULT_FW_SETENV: &str = "fw_setenv";

/// `[update]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdate {
    pub backend: Spanned<String>,
    pub slots: Option<Spanned<String>>,
    pub fw_printenv: Option<Spanned<String>>,
    pub fw_setenv: Option<Spanned<String>>,
    pub cmdline: Option<Spanned<String>>,
    pub health_deadline_s: Option<Spanned<i64>>,
}

/// `[update]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// Where the A/B slot state lives.
    pub backend: SlotBackend,
    /// How long after start the health check may take before the boot counts as
    /// unhealthy.
    pub health_deadline: Duration,
}

/// Where the A/B slot state lives (see `branchline_image::store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotBackend {
    /// `backend = "dir"`: `ROOT/state.json` and `ROOT/slots/{a,b}`; the booted slot is
    /// the state's `active` slot (the boot step, `branch-image boot`, sets it).
    Dir {
        /// The slots root (`slots`).
        root: PathBuf,
    },
    /// `backend = "uboot"`: U-Boot environment variables through `fw_printenv` /
    /// `fw_setenv`; the booted slot is `branchline.slot=A|B` on the kernel command line
    /// (U-Boot's script adds it to `bootargs`), since the bootloader spends the try
    /// without updating the daemon's bookkeeping.
    Uboot {
        /// The `fw_printenv` program.
        fw_printenv: PathBuf,
        /// The `fw_setenv` program.
        fw_setenv: PathBuf,
        /// The file holding the kernel command line.
        cmdline: PathBuf,
        /// Where the slot partitions are mounted (`slots/a`, `slots/b` under it), for
        /// the updater (`slots`, optional: without it HQ updates cannot be installed).
        slots: Option<PathBuf>,
    },
}

impl Ctx<'_> {
    /// `[update]`.
    pub(super) fn update(&self, raw: RawUpdate) -> Result<UpdateConfig> {
        let deadline_s = self.ranged(
            raw.health_deadline_s,
            "update.health_deadline_s",
            HEALTH_DEADLINE_S,
        )?;
        let health_deadline = Duration::from_secs(u64::try_from(deadline_s).unwrap_or(120));
        let backend = match raw.backend.get_ref().as_str() {
            "dir" => {
                for (value, field) in [
                    (&raw.fw_printenv, "update.fw_printenv"),
                    (&raw.fw_setenv, "update.fw_setenv"),
                    (&raw.cmdline, "update.cmdline"),
                ] {
                    if let Some(v) = value {
                        return Err(self.invalid(v.span(), field, "only for backend = \"uboot\""));
                    }
                }
                let Some(slots) = raw.slots else {
                    return Err(self.invalid(
                        raw.backend.span(),
                        "update.slots",
                        "backend = \"dir\" needs slots = \"/path/to/slots\" (the directory holding state.json and slots/a, slots/b)",
                    ));
                };
                SlotBackend::Dir {
                    root: self.path(slots, "update.slots")?,
                }
            }
            "uboot" => {
                let path = |v: Option<Spanned<String>>, field: &str, default: &str| {
                    v.map_or_else(|| Ok(PathBuf::from(default)), |v| self.path(v, field))
                };
                SlotBackend::Uboot {
                    fw_printenv: path(raw.fw_printenv, "update.fw_printenv", DEFAULT_FW_PRINTENV)?,
                    fw_setenv: path(raw.fw_setenv, "update.fw_setenv", DEFAULT_FW_SETENV)?,
                    cmdline: path(raw.cmdline, "update.cmdline", DEFAULT_CMDLINE)?,
                    slots: raw
                        .slots
                        .map(|v| self.path(v, "update.slots"))
                        .transpose()?,
                }
            }
            other => {
                return Err(self.invalid(
                    raw.backend.span(),
                    "update.backend",
                    format!("{other:?} is not a slot backend (\"dir\" or \"uboot\")"),
                ))
            }
        };
        Ok(UpdateConfig {
            backend,
            health_deadline,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const FILE: &str = "/etc/branchline/branchd.toml";

    fn load(update: &str) -> Result<Config> {
        Config::from_toml_str(
            &format!("[telephony]\ncountry = \"US\"\n\n{update}"),
            Path::new(FILE),
        )
    }

    fn error(update: &str) -> String {
        match load(update) {
            Ok(c) => panic!("expected an error, got {:?}", c.update),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn absent_means_no_slots() {
        assert_eq!(load("").expect("loads").update, None);
    }

    #[test]
    fn dir_backend_with_defaults() {
        let c = load("[update]\nbackend = \"dir\"\nslots = \"/slots\"\n").expect("loads");
        assert_eq!(
            c.update,
            Some(UpdateConfig {
                backend: SlotBackend::Dir {
                    root: PathBuf::from("/slots")
                },
                health_deadline: Duration::from_secs(120),
            })
        );
    }

    #[test]
    fn uboot_backend_with_paths_and_deadline() {
        let c = load(
            "[update]\nbackend = \"uboot\"\nfw_printenv = \"/usr/sbin/fw_printenv\"\n\
             health_deadline_s = 30\n",
        )
        .expect("loads");
        assert_eq!(
            c.update,
            Some(UpdateConfig {
                backend: SlotBackend::Uboot {
                    fw_printenv: PathBuf::from("/usr/sbin/fw_printenv"),
                    fw_setenv: PathBuf::from(DEFAULT_FW_SETENV),
                    cmdline: PathBuf::from(DEFAULT_CMDLINE),
                    slots: None,
                },
                health_deadline: Duration::from_secs(30),
            })
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        // The [update] header is on line 4 of the loaded text.
        for (update, line, field, words) in [
            (
                "[update]\nslots = \"/slots\"\n",
                4,
                "update.backend",
                "missing field",
            ),
            (
                "[update]\nbackend = \"grub\"\n",
                5,
                "update.backend",
                "not a slot backend",
            ),
            (
                "[update]\nbackend = \"dir\"\n",
                5,
                "update.slots",
                "needs slots",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"\"\n",
                6,
                "update.slots",
                "must not be empty",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"/s\"\ncmdline = \"/proc/cmdline\"\n",
                7,
                "update.cmdline",
                "only for backend = \"uboot\"",
            ),
            (
                "[update]\nbackend = \"uboot\"\nslots = \"\"\n",
                6,
                "update.slots",
                "must not be empty",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"/s\"\nhealth_deadline_s = 5\n",
                7,
                "update.health_deadline_s",
                "out of range",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"/s\"\nrollback = true\n",
                7,
                "update.rollback",
                "unknown field",
            ),
        ] {
            let message = error(update);
            let prefix = format!("{FILE}, line {line}: {field}: ");
            assert!(
                message.starts_with(&prefix) && message.contains(words),
                "{update:?}: expected {prefix:?} ... {words:?}, got {message:?}"
            );
        }
    }
}
