//! What the system page and `GET /api/v1/system` show, built by one function
//! ([`system_report`]) so the page and the JSON never disagree: the firmware version,
//! the A/B slots, uptime, CPU and load, memory, disk and the board's temperatures.
//!
//! - **Slots** are read through [`crate::health::Slots`], the backend the health
//!   check and the updater use (`[update] backend`: `ROOT/state.json` or the U-Boot
//!   environment, the booted slot from the state or the kernel command line). Each slot
//!   shows its state (`good`, `pending` with its tries left, `bad`, `empty`), its
//!   version and anti-rollback floor, and whether it is the booted one and the one the
//!   state calls active. A box without `[update]` (development, simulator) has no A/B
//!   layout: the report says `configured: false`, never a made-up slot.
//! - **Last update**: the updater's trial record (`<data_dir>/update/trial.json`,
//!   [`crate::updater::trial`]) judged against the slot state with the updater's own
//!   [`crate::updater::trial::judge`]: on trial, committed, rolled back (with why),
//!   installed but not booted.
//! - **Machine facts** from Linux: `/proc/loadavg`, `/proc/meminfo`,
//!   `/proc/self/status` (branchd's RSS), `getrusage` (branchd's CPU time), `statvfs`
//!   of the data directory, `/sys/class/thermal/thermal_zone*`.
//!
//! Limits: the trial record is removed once HQ has the trial's final outcome, so the
//! last update is shown only until then (older outcomes are in HQ's rollout report and
//! the log); an install made with `branch-image install` by hand leaves no record.
//! Reading the slots may run `fw_printenv`: call [`system_report`] off the async
//! runtime (`spawn_blocking`).

use std::path::Path;

use branchline_image::slot::{SlotId, SlotInfo, SlotState, SlotStatus};
use serde::Serialize;

use super::status::StatusHandle;
use crate::config::SlotBackend;
use crate::updater::trial::{self, Judgement};

/// Where Linux lists the board's temperature sensors.
pub const THERMAL_ROOT: &str = "/sys/class/thermal";

/// Everything the system page shows, as `GET /api/v1/system` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemReport {
    /// When the report was made, ms since the Unix epoch.
    pub at_ms: i64,
    /// `branchd`'s version.
    pub version: &'static str,
    /// The board model (`null`: the API is not served by a running daemon).
    pub board: Option<String>,
    /// When `branchd` started, ms since the Unix epoch.
    pub started_at_ms: Option<i64>,
    /// How long `branchd` runs, ms.
    pub uptime_ms: Option<i64>,
    /// The A/B slots.
    pub slots: SlotsReport,
    /// CPUs and load.
    pub cpu: CpuReport,
    /// Memory.
    pub memory: MemoryReport,
    /// The file system holding the data directory (`null`: unknown, see `disk_error`).
    pub disk: Option<DiskReport>,
    /// Why the disk is unknown.
    pub disk_error: Option<String>,
    /// The board's temperature sensors (empty: the board reports none).
    pub temperatures: Vec<Thermal>,
}

/// The A/B slots as the updater's backend reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotsReport {
    /// Whether the box has an A/B layout (`[update]`).
    pub configured: bool,
    /// `dir` or `uboot`, when configured.
    pub backend: Option<&'static str>,
    /// Why the state could not be read (the slots are then empty).
    pub error: Option<String>,
    /// The slot running now (`A` / `B`).
    pub booted: Option<String>,
    /// The anti-rollback floor: no image below it installs.
    pub floor: Option<String>,
    /// Slot A then slot B.
    pub slots: Vec<SlotReport>,
    /// The last update from HQ, while its trial record is kept.
    pub last_update: Option<UpdateReport>,
    /// Why the last update's record could not be read.
    pub last_update_error: Option<String>,
}

impl SlotsReport {
    fn not_configured() -> SlotsReport {
        SlotsReport {
            configured: false,
            backend: None,
            error: None,
            booted: None,
            floor: None,
            slots: Vec::new(),
            last_update: None,
            last_update_error: None,
        }
    }
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotReport {
    /// `A` or `B`.
    pub slot: String,
    /// `good`, `pending`, `bad` or `empty`.
    pub state: &'static str,
    /// Boot attempts left while `pending`.
    pub tries_left: Option<u8>,
    /// The image's version (`null` when empty).
    pub version: Option<String>,
    /// The image's own anti-rollback floor.
    pub min_version: Option<String>,
    /// Whether this slot runs now.
    pub booted: bool,
    /// Whether the slot state names it active (the one booted last; differs from
    /// `booted` on U-Boot boards between a trial boot and its commit).
    pub active: bool,
}

/// The last update from HQ, from the updater's trial record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    /// HQ's rollout.
    pub rollout: String,
    /// The version installed.
    pub version: String,
    /// The slot it went into.
    pub slot: String,
    /// `on trial`, `committed`, `rolled back`, `installed, not booted` or `stale`.
    pub outcome: &'static str,
    /// Why (rolled back, stale).
    pub detail: Option<String>,
}

/// CPUs and load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuReport {
    /// CPUs this process may run on.
    pub cpus: Option<usize>,
    /// Load average over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// CPU time `branchd` used since it started (user + system), seconds.
    pub branchd_cpu_s: Option<f64>,
}

/// Memory, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// `branchd`'s resident set.
    pub branchd_rss_bytes: Option<u64>,
    /// The machine's memory.
    pub total_bytes: Option<u64>,
    /// What the machine can still give without swapping (`MemAvailable`).
    pub available_bytes: Option<u64>,
}

/// Space on the file system holding the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskReport {
    /// The data directory.
    pub path: String,
    /// Size, bytes.
    pub total_bytes: u64,
    /// Free for branchd (not reserved for root), bytes.
    pub free_bytes: u64,
    /// Used, percent (rounded down).
    pub used_percent: u64,
}

impl DiskReport {
    /// `statvfs` of `path`, or why it failed.
    pub fn of(path: &Path) -> Result<DiskReport, String> {
        let st = nix::sys::statvfs::statvfs(path)
            .map_err(|e| format!("statvfs {}: {e}", path.display()))?;
        let frag = st.fragment_size();
        let total = st.blocks() * frag;
        let free = st.blocks_available() * frag;
        Ok(DiskReport {
            path: path.display().to_string(),
            total_bytes: total,
            free_bytes: free,
            used_percent: used_percent(total, free),
        })
    }
}

/// Used share of a file system of `total` bytes with `free` free, percent.
pub(super) fn used_percent(total: u64, free: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (total - free.min(total)) * 100 / total
}

/// One temperature sensor of the board, as Linux's thermal framework reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thermal {
    /// The zone's `type` (e.g. `cpu-thermal`), or its directory name without one.
    pub name: String,
    /// Degrees Celsius (`temp` is in millidegrees).
    pub celsius: f64,
}

/// The board's temperatures from `<root>/thermal_zone*/{type,temp}` (`root` is
/// [`THERMAL_ROOT`] on a box), sorted by zone. Zones whose `temp` is missing or not a
/// number (a sensor that failed to read) are left out; an empty list means the board
/// reports none, which the page says instead of showing a number.
pub fn thermal_zones(root: &Path) -> Vec<Thermal> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut zones: Vec<(u32, Thermal)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let file = e.file_name();
            let index: u32 = file.to_str()?.strip_prefix("thermal_zone")?.parse().ok()?;
            let milli: i64 = std::fs::read_to_string(e.path().join("temp"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let name = std::fs::read_to_string(e.path().join("type"))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| format!("thermal_zone{index}"));
            Some((
                index,
                Thermal {
                    name,
                    celsius: milli as f64 / 1000.0,
                },
            ))
        })
        .collect();
    zones.sort_by_key(|(i, _)| *i);
    zones.into_iter().map(|(_, t)| t).collect()
}

/// `VmRSS` of this process, and `MemTotal` / `MemAvailable` of the machine.
fn memory() -> MemoryReport {
    fn kib(text: &str, key: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    }
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let all = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    MemoryReport {
        branchd_rss_bytes: kib(&own, "VmRSS:"),
        total_bytes: kib(&all, "MemTotal:"),
        available_bytes: kib(&all, "MemAvailable:"),
    }
}

/// The three load averages of a `/proc/loadavg` line.
pub(super) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some([a, b, c]),
        _ => None,
    }
}

fn cpu() -> CpuReport {
    use nix::sys::resource::{getrusage, UsageWho};
    let used = getrusage(UsageWho::RUSAGE_SELF).ok().map(|u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    });
    CpuReport {
        cpus: std::thread::available_parallelism().ok().map(usize::from),
        load: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .as_deref()
            .and_then(parse_loadavg),
        branchd_cpu_s: used,
    }
}

fn status_name(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Empty => "empty",
        SlotStatus::Pending { .. } => "pending",
        SlotStatus::Good => "good",
        SlotStatus::Bad => "bad",
    }
}

fn slot_report(id: SlotId, info: &SlotInfo, state: &SlotState, booted: SlotId) -> SlotReport {
    SlotReport {
        slot: id.to_string(),
        state: status_name(info.status),
        tries_left: match info.status {
            SlotStatus::Pending { tries_left } => Some(tries_left),
            _ => None,
        },
        version: info.version.map(|v| v.to_string()),
        min_version: info.min_version.map(|v| v.to_string()),
        booted: id == booted,
        active: id == state.active,
    }
}

/// The last update from its trial record, judged like the updater judges it.
pub(super) fn update_report(
    record: &trial::TrialRecord,
    state: &SlotState,
    booted: SlotId,
) -> UpdateReport {
    let (outcome, detail) = match trial::judge(record, state, booted) {
        Judgement::OnTrial => ("on trial", None),
        Judgement::Committed => ("committed", None),
        Judgement::RolledBack { reason } => ("rolled back", Some(reason)),
        Judgement::NotBooted => ("installed, not booted", None),
        Judgement::Stale { reason } => ("stale", Some(reason)),
    };
    UpdateReport {
        rollout: record.rollout.clone(),
        version: record.version.clone(),
        slot: record.slot.to_string(),
        outcome,
        detail,
    }
}

/// The slots of `backend` (`None`: no A/B layout), with the last update's record in
/// `data_dir` (blocking: file IO, or `fw_printenv` on U-Boot boards).
pub fn slots_report(backend: Option<&SlotBackend>, data_dir: Option<&Path>) -> SlotsReport {
    let Some(backend) = backend else {
        return SlotsReport::not_configured();
    };
    let mut report = SlotsReport {
        configured: true,
        backend: Some(match backend {
            SlotBackend::Dir { .. } => "dir",
            SlotBackend::Uboot { .. } => "uboot",
        }),
        ..SlotsReport::not_configured()
    };
    let (state, booted) = match crate::health::Slots::new(backend).read() {
        Ok(read) => read,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.booted = Some(booted.to_string());
    report.floor = state.floor.map(|v| v.to_string());
    report.slots = [SlotId::A, SlotId::B]
        .into_iter()
        .map(|id| slot_report(id, state.slot(id), &state, booted))
        .collect();
    if let Some(dir) = data_dir {
        match trial::load(&dir.join(crate::updater::io::UPDATE_DIR)) {
            Ok(Some(record)) => report.last_update = Some(update_report(&record, &state, booted)),
            Ok(None) => {}
            Err(e) => report.last_update_error = Some(e),
        }
    }
    report
}

/// The whole report for the system page and `GET /api/v1/system` (blocking: see the
/// module doc), with the temperatures read under `thermal_root` ([`THERMAL_ROOT`]).
pub fn system_report(
    status: Option<&StatusHandle>,
    now_ms: i64,
    thermal_root: &Path,
) -> SystemReport {
    let info = status.map(StatusHandle::info);
    let started = status.map(|s| s.current().started_at_ms);
    let disk = info.map(|i| DiskReport::of(&i.data_dir));
    SystemReport {
        at_ms: now_ms,
        version: env!("CARGO_PKG_VERSION"),
        board: info.map(|i| i.board_model.clone()),
        started_at_ms: started,
        uptime_ms: started.map(|s| (now_ms - s).max(0)),
        slots: slots_report(
            status.and_then(StatusHandle::slots),
            info.map(|i| i.data_dir.as_path()),
        ),
        cpu: cpu(),
        memory: memory(),
        disk_error: match &disk {
            Some(Err(e)) => Some(e.clone()),
            None => Some("the API is not served by a running daemon".to_owned()),
            Some(Ok(_)) => None,
        },
        disk: disk.and_then(Result::ok),
        temperatures: thermal_zones(thermal_root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use branchline_image::store::{DirSlots, SlotStore};
    use branchline_image::version::Version;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn no_update_section_means_no_slots_not_empty_ones() {
        let r = slots_report(None, None);
        assert!(!r.configured);
        assert!(r.slots.is_empty() && r.booted.is_none() && r.error.is_none());
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["configured"], false);
    }

    #[test]
    fn a_dir_backend_shows_each_slot_the_booted_one_and_a_trial() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("slots");
        let mut store = DirSlots::new(&root);
        // 1.2.0 good in A, 1.3.0 installed into B and booted once (its try spent).
        let state = SlotState::default()
            .begin_install(SlotId::B)
            .and_then(|s| s.finish_install(SlotId::B, v("1.3.0"), v("1.1.0")))
            .expect("install");
        let state = SlotState {
            a: SlotInfo {
                status: SlotStatus::Good,
                version: Some(v("1.2.0")),
                min_version: Some(v("1.0.0")),
            },
            floor: Some(v("1.0.0")),
            ..state
        };
        let (booted, state) = state.on_boot().expect("boot");
        assert_eq!(booted, SlotId::B);
        store.save(&state).expect("save");
        let data = tmp.path().join("data");
        let update = data.join(crate::updater::io::UPDATE_DIR);
        std::fs::create_dir_all(&update).expect("dir");
        trial::save(
            &update,
            &trial::TrialRecord {
                rollout: "r-7".into(),
                version: "1.3.0".into(),
                slot: SlotId::B,
                failed: None,
            },
        )
        .expect("record");

        let backend = SlotBackend::Dir { root: root.clone() };
        let r = slots_report(Some(&backend), Some(&data));
        assert_eq!((r.configured, r.backend), (true, Some("dir")));
        assert_eq!(r.error, None);
        assert_eq!(r.booted.as_deref(), Some("B"));
        assert_eq!(r.floor.as_deref(), Some("1.0.0"));
        let a = &r.slots[0];
        assert_eq!(
            (a.slot.as_str(), a.state, a.version.as_deref(), a.booted),
            ("A", "good", Some("1.2.0"), false)
        );
        let b = &r.slots[1];
        assert_eq!(
            (b.slot.as_str(), b.state, b.tries_left, b.booted, b.active),
            ("B", "pending", Some(0), true, true)
        );
        let u = r.last_update.as_ref().expect("last update");
        assert_eq!((u.rollout.as_str(), u.outcome), ("r-7", "on trial"));

        // The health check commits it: good, and the record says committed.
        let committed = state.mark_good().expect("good");
        store.save(&committed).expect("save");
        let r = slots_report(Some(&backend), Some(&data));
        assert_eq!(r.slots[1].state, "good");
        assert_eq!(r.floor.as_deref(), Some("1.1.0"), "floor raised");
        assert_eq!(r.last_update.as_ref().map(|u| u.outcome), Some("committed"));

        // A bad state file is an error, not two empty slots.
        std::fs::write(root.join("state.json"), "{ not json").expect("write");
        let r = slots_report(Some(&backend), Some(&data));
        assert!(r.configured && r.slots.is_empty(), "{r:?}");
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("state.json")),
            "{r:?}"
        );
    }

    #[test]
    fn a_rolled_back_trial_says_why() {
        let state = SlotState {
            active: SlotId::A,
            a: SlotInfo {
                status: SlotStatus::Good,
                version: Some(v("1.2.0")),
                min_version: Some(v("1.0.0")),
            },
            b: SlotInfo {
                status: SlotStatus::Bad,
                version: Some(v("1.3.0")),
                min_version: Some(v("1.0.0")),
            },
            floor: None,
        };
        let record = trial::TrialRecord {
            rollout: "r-8".into(),
            version: "1.3.0".into(),
            slot: SlotId::B,
            failed: Some("sip: not bound".into()),
        };
        let u = update_report(&record, &state, SlotId::A);
        assert_eq!(u.outcome, "rolled back");
        assert!(u.detail.is_some_and(|d| d.contains("sip: not bound")));
    }

    #[test]
    fn loadavg_and_disk_are_read_or_unknown() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        assert_eq!(used_percent(0, 0), 0);
        assert_eq!(used_percent(1000, 250), 75);
        assert_eq!(used_percent(1000, 2000), 0, "free above total is clamped");
        let tmp = tempfile::tempdir().expect("tmp");
        let d = DiskReport::of(tmp.path()).expect("statvfs");
        assert!(d.total_bytes > 0 && d.used_percent <= 100);
        assert!(DiskReport::of(&tmp.path().join("missing")).is_err());
    }
}
