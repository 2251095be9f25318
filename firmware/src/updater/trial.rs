//! The trial record: what the updater installed, kept across the restart into the new
//! slot so that the next start can tell HQ how the trial boot ended (`committed` or
//! `rolled_back`), exactly once from HQ's view.
//!
//! - Written (`<data_dir>/update/trial.json`, temp file + fsync + rename + directory
//!   fsync) right after an install succeeded, before `installed` is reported.
//! - At every start, [`judge`] compares it with the slot state and the booted slot: a
//!   pure function, so every combination is unit-tested. The task then reports
//!   `committed` (the trial slot is good), waits for the health check (booted into
//!   the trial slot, still pending), reports `rolled_back` (the bootloader went back:
//!   the trial slot is bad, or its try is spent and the other slot booted), restarts
//!   again (installed but not booted yet), or drops a stale record.
//! - Removed only once HQ accepted the final report. HQ keeps the first final outcome
//!   of a box (`sync/src/hq/rollouts/`), so a report sent again after a crash or a lost
//!   answer changes nothing there.
//! - [`note_failure`]: when a trial boot fails its health check, `branchd` adds the
//!   failed facts to the record, so the `rolled_back` report after the reboot says why.
//!
//! Limits: errors are plain strings, like the rest of the updater's IO edge (they end
//! up in logs and HQ reports, nothing matches on them); a record that cannot be parsed
//! is logged and left in place (it changes nothing: a later install replaces it).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use branchline_image::slot::{SlotId, SlotState, SlotStatus};
use serde::{Deserialize, Serialize};

/// The record's file name in the download directory.
pub const TRIAL_FILE: &str = "trial.json";

/// What was installed, waiting for its trial boot's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRecord {
    /// The rollout that installed it.
    pub rollout: String,
    /// The version installed (the verified manifest's).
    pub version: String,
    /// The slot it was installed into.
    pub slot: SlotId,
    /// The failed health-check facts of its trial boot, when `branchd` noted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Where the trial stands, from the slot state and the booted slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Booted into the trial slot, not committed yet: the health check decides.
    OnTrial,
    /// The trial slot is good: report `committed`.
    Committed,
    /// The bootloader went back to the other slot: report `rolled_back`.
    RolledBack {
        /// Why, for HQ.
        reason: String,
    },
    /// Installed, but not booted yet (the restart did not happen): restart again.
    NotBooted,
    /// The slot no longer holds this install: drop the record.
    Stale {
        /// Why, for the log.
        reason: String,
    },
}

/// Judges `record` against `state` with `booted` the running slot.
pub fn judge(record: &TrialRecord, state: &SlotState, booted: SlotId) -> Judgement {
    let info = state.slot(record.slot);
    let holds = info.version.map(|v| v.to_string()).as_deref() == Some(record.version.as_str());
    if info.status == SlotStatus::Empty || !holds {
        return Judgement::Stale {
            reason: format!(
                "slot {} holds {:?} ({:?}), not the {} installed by rollout {}",
                record.slot,
                info.version.map(|v| v.to_string()),
                info.status,
                record.version,
                record.rollout
            ),
        };
    }
    let on_it = booted == record.slot;
    match info.status {
        SlotStatus::Good => Judgement::Committed,
        SlotStatus::Pending { .. } if on_it => Judgement::OnTrial,
        SlotStatus::Pending { tries_left } if tries_left > 0 => Judgement::NotBooted,
        // Spent and not good while the other slot runs, or marked bad by the boot step.
        SlotStatus::Pending { .. } | SlotStatus::Bad => Judgement::RolledBack {
            reason: format!(
                "the trial boot of {} in slot {} was not committed ({}); slot {} runs again",
                record.version,
                record.slot,
                record
                    .failed
                    .as_deref()
                    .unwrap_or("health check failed or the box did not come up"),
                booted
            ),
        },
        SlotStatus::Empty => unreachable!("handled above"),
    }
}

/// `<dir>/trial.json`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(TRIAL_FILE)
}

/// Reads the record in `dir` (the download directory), if any.
pub fn load(dir: &Path) -> Result<Option<TrialRecord>, String> {
    let p = path(dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: not a trial record: {e}", p.display()))
}

/// Writes the record atomically and durably.
pub fn save(dir: &Path, record: &TrialRecord) -> Result<(), String> {
    let p = path(dir);
    let tmp = dir.join(format!("{TRIAL_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| format!("cannot encode the trial record: {e}"))?;
    File::create(&tmp)
        .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &p).map_err(|e| format!("cannot rename to {}: {e}", p.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// Removes the record (done once HQ accepted the final report).
pub fn remove(dir: &Path) -> Result<(), String> {
    let p = path(dir);
    match fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot remove {}: {e}", p.display())),
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// Adds the failed health-check facts of a trial boot to the record in
/// `<data_dir>/update`, if there is one (nothing to do otherwise).
pub fn note_failure(data_dir: &Path, failed: &str) -> Result<(), String> {
    let dir = data_dir.join(super::io::UPDATE_DIR);
    let Some(mut record) = load(&dir)? else {
        return Ok(());
    };
    record.failed = Some(failed.to_owned());
    save(&dir, &record)
}

#[cfg(test)]
mod tests {
    use branchline_image::slot::SlotInfo;
    use branchline_image::version::Version;

    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    fn record() -> TrialRecord {
        TrialRecord {
            rollout: "spring-1.3".into(),
            version: "1.3.0".into(),
            slot: SlotId::B,
            failed: None,
        }
    }

    /// A good 1.2.0 in A and 1.3.0 in B with `b`.
    fn state(active: SlotId, b: SlotStatus) -> SlotState {
        SlotState {
            active,
            a: SlotInfo {
                status: SlotStatus::Good,
                version: Some(v("1.2.0")),
                min_version: Some(v("1.0.0")),
            },
            b: SlotInfo {
                status: b,
                version: Some(v("1.3.0")),
                min_version: Some(v("1.0.0")),
            },
            floor: Some(v("1.0.0")),
        }
    }

    #[test]
    fn every_slot_state_after_the_restart() {
        let r = record();
        let pending = |n| SlotStatus::Pending { tries_left: n };
        assert_eq!(
            judge(&r, &state(SlotId::B, pending(0)), SlotId::B),
            Judgement::OnTrial
        );
        assert_eq!(
            judge(&r, &state(SlotId::B, SlotStatus::Good), SlotId::B),
            Judgement::Committed
        );
        assert_eq!(
            judge(&r, &state(SlotId::A, pending(1)), SlotId::A),
            Judgement::NotBooted
        );
        // The directory boot step marked it bad; U-Boot left it spent and booted A.
        for b in [SlotStatus::Bad, pending(0)] {
            let Judgement::RolledBack { reason } = judge(&r, &state(SlotId::A, b), SlotId::A)
            else {
                panic!("{b:?}: not a rollback")
            };
            assert!(
                reason.contains("1.3.0") && reason.contains("slot A runs again"),
                "{reason}"
            );
        }
        // The failed facts noted at the trial boot are the reason.
        let noted = TrialRecord {
            failed: Some("sip: cannot bind".into()),
            ..record()
        };
        let Judgement::RolledBack { reason } =
            judge(&noted, &state(SlotId::A, SlotStatus::Bad), SlotId::A)
        else {
            panic!("not a rollback")
        };
        assert!(reason.contains("sip: cannot bind"), "{reason}");
        // Emptied or overwritten by another install: stale.
        assert!(matches!(
            judge(&r, &state(SlotId::A, SlotStatus::Empty), SlotId::A),
            Judgement::Stale { .. }
        ));
        let mut other = state(SlotId::A, pending(1));
        other.b.version = Some(v("1.4.0"));
        assert!(matches!(
            judge(&r, &other, SlotId::A),
            Judgement::Stale { .. }
        ));
    }

    #[test]
    fn record_round_trip_note_and_remove() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join(super::super::io::UPDATE_DIR);
        fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(load(&dir).expect("load"), None);
        note_failure(tmp.path(), "sip: x").expect("no record: nothing to do");
        assert_eq!(load(&dir).expect("load"), None);
        save(&dir, &record()).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(record()));
        note_failure(tmp.path(), "sip: cannot bind").expect("note");
        assert_eq!(
            load(&dir).expect("load").and_then(|r| r.failed).as_deref(),
            Some("sip: cannot bind")
        );
        remove(&dir).expect("remove");
        remove(&dir).expect("twice is fine");
        assert_eq!(load(&dir).expect("load"), None);
        assert!(!dir.join(format!("{TRIAL_FILE}.tmp")).exists());
    }

    #[test]
    fn a_malformed_record_is_an_error_naming_the_file_and_stays() {
        let tmp = tempfile::tempdir().expect("tmp");
        fs::write(path(tmp.path()), "{\"rollout\": 3}").expect("write");
        let e = load(tmp.path()).expect_err("malformed");
        assert!(
            e.contains("trial.json") && e.contains("not a trial record"),
            "{e}"
        );
        assert!(path(tmp.path()).exists());
    }
}
