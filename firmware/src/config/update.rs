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
//! # Updates through HQ (off unless from_hq = true; needs [hq]):
//! from_hq = true
//! window = "02:00-04:00"        # daily maintenance window, UTC (may wrap midnight)
//! poll_interval_s = 300         # how often HQ is asked for an offer (1..=86400)
//! keys = ["/etc/branchline/update-keys/release.pub"]  # pinned bundle keys
//! board = "gw4"                 # this box's board profile and target triple, as the
//! target = "aarch64-unknown-linux-gnu"  # bundle manifest must name them
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
use crate::updater::Window;

/// Default and allowed range of `update.poll_interval_s`: how often the updater asks HQ
/// for an offer. Five minutes by default: a staged rollout reaches a box within minutes,
/// and a thousand boxes make about three requests a second at HQ.
pub const POLL_INTERVAL_S: (i64, RangeInclusive<i64>) = (300, 1..=86_400);
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
    pub from_hq: Option<Spanned<bool>>,
    pub window: Option<Spanned<String>>,
    pub poll_interval_s: Option<Spanned<i64>>,
    pub keys: Option<Spanned<Vec<Spanned<String>>>>,
    pub board: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
}

/// `[update]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// Where the A/B slot state lives.
    pub backend: SlotBackend,
    /// How long after start the health check may take before the boot counts as
    /// unhealthy.
    pub health_deadline: Duration,
    /// `from_hq = true`: install what HQ offers (`None`: HQ's offers are ignored).
    pub from_hq: Option<FromHq>,
}

/// Updates through HQ (`from_hq = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromHq {
    /// The daily maintenance window (UTC).
    pub window: Window,
    /// How often HQ is asked for an offer (`poll_interval_s`).
    pub poll_interval: Duration,
    /// The pinned update keys (PEM/raw public key files, `branch-image keygen`'s).
    pub keys: Vec<PathBuf>,
    /// This box's board profile and target triple (the manifest must match).
    pub board: String,
    /// See `board`.
    pub target: String,
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
        let raw_hq = RawFromHq {
            on: raw.from_hq.as_ref().is_some_and(|v| *v.get_ref()),
            from_hq_span: raw
                .from_hq
                .as_ref()
                .map_or_else(|| raw.backend.span(), |v| v.span()),
            window: raw.window,
            poll_interval_s: raw.poll_interval_s,
            keys: raw.keys,
            board: raw.board,
            target: raw.target,
        };
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
        let from_hq = self.hq_updates(&raw_hq)?;
        if from_hq.is_some() {
            if let SlotBackend::Uboot { slots: None, .. } = &backend {
                return Err(self.invalid(
                    raw_hq.from_hq_span.clone(),
                    "update.slots",
                    "from_hq = true with backend = \"uboot\" needs slots (where the slot partitions are mounted)",
                ));
            }
        }
        Ok(UpdateConfig {
            backend,
            health_deadline,
            from_hq,
        })
    }

    /// `from_hq`, `window`, `poll_interval_s`, `keys`, `board`, `target`.
    fn hq_updates(&self, raw: &RawFromHq) -> Result<Option<FromHq>> {
        let fields = [
            (raw.window.as_ref(), "update.window"),
            (raw.board.as_ref(), "update.board"),
            (raw.target.as_ref(), "update.target"),
        ];
        if !raw.on {
            if let Some((v, field)) = fields.iter().find_map(|(v, f)| v.map(|v| (v, *f))) {
                return Err(self.invalid(v.span(), field, "only with from_hq = true"));
            }
            if let Some(k) = &raw.keys {
                return Err(self.invalid(k.span(), "update.keys", "only with from_hq = true"));
            }
            if let Some(p) = &raw.poll_interval_s {
                return Err(self.invalid(
                    p.span(),
                    "update.poll_interval_s",
                    "only with from_hq = true",
                ));
            }
            return Ok(None);
        }
        let need = |v: Option<&Spanned<String>>, field: &str, what: &str| {
            let Some(v) = v else {
                return Err(self.invalid(
                    raw.from_hq_span.clone(),
                    field,
                    format!("from_hq = true needs {what}"),
                ));
            };
            if v.get_ref().trim().is_empty() {
                return Err(self.invalid(v.span(), field, "must not be empty"));
            }
            Ok(v.get_ref().trim().to_owned())
        };
        let window_text = need(
            raw.window.as_ref(),
            "update.window",
            "window = \"HH:MM-HH:MM\" (UTC)",
        )?;
        let window = Window::parse(&window_text).map_err(|e| {
            self.invalid(
                raw.window
                    .as_ref()
                    .map_or(raw.from_hq_span.clone(), |w| w.span()),
                "update.window",
                e,
            )
        })?;
        let board = need(
            raw.board.as_ref(),
            "update.board",
            "board = \"<board profile>\"",
        )?;
        let target = need(
            raw.target.as_ref(),
            "update.target",
            "target = \"<target triple>\"",
        )?;
        let Some(keys) = &raw.keys else {
            return Err(self.invalid(
                raw.from_hq_span.clone(),
                "update.keys",
                "from_hq = true needs keys = [\"/path/to/key.pub\", ...]",
            ));
        };
        if keys.get_ref().is_empty() {
            return Err(self.invalid(keys.span(), "update.keys", "must name at least one key"));
        }
        let keys = keys
            .get_ref()
            .iter()
            .map(|k| self.path(k.clone(), "update.keys"))
            .collect::<Result<Vec<_>>>()?;
        let poll_s = self.ranged(
            raw.poll_interval_s.clone(),
            "update.poll_interval_s",
            POLL_INTERVAL_S,
        )?;
        Ok(Some(FromHq {
            window,
            poll_interval: Duration::from_secs(poll_s.unsigned_abs()),
            keys,
            board,
            target,
        }))
    }
}

/// The `from_hq` fields, taken out of [`RawUpdate`].
struct RawFromHq {
    on: bool,
    from_hq_span: std::ops::Range<usize>,
    window: Option<Spanned<String>>,
    poll_interval_s: Option<Spanned<i64>>,
    keys: Option<Spanned<Vec<Spanned<String>>>>,
    board: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const FILE: &str = "/etc/branchline/branchd.toml";

    fn load(update: &str) -> Result<Config> {
        Config::from_toml_str(
            format!("[telephony]\ncountry = \"US\"\n\n{update}").as_str(),
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
                from_hq: None,
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
                from_hq: None,
            })
        );
    }

    #[test]
    fn from_hq_with_window_keys_and_identity() {
        let c = load(
            "[update]\nbackend = \"dir\"\nslots = \"/slots\"\nfrom_hq = true\n\
             window = \"23:00-01:30\"\nkeys = [\"/k/a.pub\", \"/k/b.pub\"]\n\
             board = \"gw4\"\ntarget = \"aarch64-unknown-linux-gnu\"\n",
        )
        .expect("loads");
        let hq = c.update.and_then(|u| u.from_hq).expect("from_hq");
        assert_eq!(hq.window.to_string(), "23:00-01:30");
        assert_eq!(
            hq.keys,
            vec![PathBuf::from("/k/a.pub"), PathBuf::from("/k/b.pub")]
        );
        assert_eq!(
            (hq.board.as_str(), hq.target.as_str()),
            ("gw4", "aarch64-unknown-linux-gnu")
        );
        assert_eq!(hq.poll_interval, Duration::from_secs(300), "default");
        let c = load(
            "[update]\nbackend = \"dir\"\nslots = \"/slots\"\nfrom_hq = true\n\
             window = \"23:00-01:30\"\nkeys = [\"/k/a.pub\"]\npoll_interval_s = 3600\n\
             board = \"gw4\"\ntarget = \"aarch64-unknown-linux-gnu\"\n",
        )
        .expect("loads");
        let hq = c.update.and_then(|u| u.from_hq).expect("from_hq");
        assert_eq!(hq.poll_interval, Duration::from_secs(3600));
        let c =
            load("[update]\nbackend = \"dir\"\nslots = \"/s\"\nfrom_hq = false\n").expect("loads");
        assert_eq!(c.update.and_then(|u| u.from_hq), None);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        const HQ: &str = "[update]\nbackend = \"dir\"\nslots = \"/s\"\nfrom_hq = true\n";
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
            (
                format!("{HQ}window = \"02:00-04:00\"\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                7,
                "update.keys",
                "needs keys",
            ),
            (
                format!("{HQ}window = \"02:00-04:00\"\nkeys = [\"/k\"]\npoll_interval_s = 0\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                10,
                "update.poll_interval_s",
                "out of range",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"/s\"\npoll_interval_s = 60\n",
                7,
                "update.poll_interval_s",
                "only with from_hq = true",
            ),
            (
                format!("{HQ}window = \"2-4\"\nkeys = [\"/k\"]\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                8,
                "update.window",
                "not HH:MM",
            ),
            (
                format!("{HQ}window = \"02:00-02:00\"\nkeys = [\"/k\"]\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                8,
                "update.window",
                "empty",
            ),
            (
                format!("{HQ}keys = [\"/k\"]\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                7,
                "update.window",
                "needs window",
            ),
            (
                format!("{HQ}window = \"02:00-04:00\"\nkeys = []\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                9,
                "update.keys",
                "at least one key",
            ),
            (
                format!("{HQ}window = \"02:00-04:00\"\nkeys = [\"\"]\nboard = \"gw4\"\ntarget = \"t\"\n").as_str(),
                9,
                "update.keys",
                "must not be empty",
            ),
            (
                format!("{HQ}window = \"02:00-04:00\"\nkeys = [\"/k\"]\ntarget = \"t\"\n").as_str(),
                7,
                "update.board",
                "needs board",
            ),
            (
                "[update]\nbackend = \"dir\"\nslots = \"/s\"\nwindow = \"02:00-04:00\"\n",
                7,
                "update.window",
                "only with from_hq = true",
            ),
            (
                "[update]\nbackend = \"uboot\"\nfrom_hq = true\nwindow = \"02:00-04:00\"\nkeys = [\"/k\"]\nboard = \"b\"\ntarget = \"t\"\n",
                6,
                "update.slots",
                "needs slots",
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
