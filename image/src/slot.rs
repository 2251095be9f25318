//! A/B slot state as a pure value: transitions are functions from state to state, with
//! no IO. Persisting it is [`crate::store`]'s job.
//!
//! Life of an update (target = the inactive slot):
//! `begin_install` (target -> `Empty`: its old contents are no longer trusted) ->
//! payload written and synced -> `finish_install` (target -> `Pending { tries_left: 1 }`)
//! -> `on_boot` boots the pending slot and spends its try -> the health check calls
//! `mark_good` (-> `Good`, floor raised). If the box boots again while the slot is
//! still `Pending { tries_left: 0 }`, `on_boot` marks it `Bad` and boots the other slot.
//!
//! Invariant kept by every transition: the slot that was `Good` and active when an
//! install began stays `Good` until a newer slot is committed, so there is always a
//! bootable slot.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::version::Version;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotId {
    /// Slot A (`slots/a`).
    A,
    /// Slot B (`slots/b`).
    B,
}

impl SlotId {
    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }
    /// Lowercase directory name (`a`, `b`).
    pub fn dir_name(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotId::A => "A",
            SlotId::B => "B",
        })
    }
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Nothing trustworthy (never installed, or an install is in progress).
    Empty,
    /// Installed and verified, not yet proven: boots while `tries_left > 0`.
    Pending {
        /// Boot attempts left (1 after install: boot-once).
        tries_left: u8,
    },
    /// Booted and passed the health check.
    Good,
    /// Booted and never marked good: never booted again.
    Bad,
}

/// One slot's status and the image it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// Status.
    pub status: SlotStatus,
    /// Version of the image (`None` when `Empty`).
    pub version: Option<Version>,
    /// The image's anti-rollback floor (`None` when `Empty`).
    pub min_version: Option<Version>,
}

impl SlotInfo {
    /// An empty slot.
    pub const EMPTY: SlotInfo = SlotInfo {
        status: SlotStatus::Empty,
        version: None,
        min_version: None,
    };
}

/// The whole A/B state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotState {
    /// The slot booted last (the running one).
    pub active: SlotId,
    /// Slot A.
    pub a: SlotInfo,
    /// Slot B.
    pub b: SlotInfo,
    /// Anti-rollback floor: highest `min_version` of any image ever committed.
    pub floor: Option<Version>,
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState {
            active: SlotId::A,
            a: SlotInfo::EMPTY,
            b: SlotInfo::EMPTY,
            floor: None,
        }
    }
}

impl SlotState {
    /// A slot's info.
    pub fn slot(&self, id: SlotId) -> &SlotInfo {
        match id {
            SlotId::A => &self.a,
            SlotId::B => &self.b,
        }
    }

    fn slot_mut(&mut self, id: SlotId) -> &mut SlotInfo {
        match id {
            SlotId::A => &mut self.a,
            SlotId::B => &mut self.b,
        }
    }

    /// The slot an install writes to.
    pub fn inactive(&self) -> SlotId {
        self.active.other()
    }

    /// Version running now, if the active slot is committed.
    pub fn installed(&self) -> Option<Version> {
        let s = self.slot(self.active);
        (s.status == SlotStatus::Good)
            .then_some(s.version)
            .flatten()
    }

    /// Starts overwriting `target`. Refused for the active slot, and while the active
    /// slot is itself an unproven trial (its fallback must not be overwritten).
    pub fn begin_install(&self, target: SlotId) -> Result<SlotState> {
        let active = self.slot(self.active).status;
        if target == self.active {
            return Err(Error::Transition {
                slot: target,
                action: "install into the active slot",
                status: active,
            });
        }
        if matches!(active, SlotStatus::Pending { .. }) {
            return Err(Error::Transition {
                slot: self.active,
                action: "install while the running slot is not yet marked good",
                status: active,
            });
        }
        let mut s = *self;
        *s.slot_mut(target) = SlotInfo::EMPTY;
        Ok(s)
    }

    /// The payload of `target` is written and synced: make it boot-once.
    pub fn finish_install(
        &self,
        target: SlotId,
        version: Version,
        min_version: Version,
    ) -> Result<SlotState> {
        let status = self.slot(target).status;
        if target == self.active || status != SlotStatus::Empty {
            return Err(Error::Transition {
                slot: target,
                action: "finish install",
                status,
            });
        }
        let mut s = *self;
        *s.slot_mut(target) = SlotInfo {
            status: SlotStatus::Pending { tries_left: 1 },
            version: Some(version),
            min_version: Some(min_version),
        };
        Ok(s)
    }

    /// What the bootloader does at power-on: returns the slot to boot and the state to
    /// persist *before* booting it.
    pub fn on_boot(&self) -> Result<(SlotId, SlotState)> {
        let mut s = *self;
        for id in [SlotId::A, SlotId::B] {
            match s.slot(id).status {
                SlotStatus::Pending { tries_left } if tries_left > 0 => {
                    s.slot_mut(id).status = SlotStatus::Pending {
                        tries_left: tries_left - 1,
                    };
                    s.active = id;
                    return Ok((id, s));
                }
                // Tried, never marked good: roll back.
                SlotStatus::Pending { .. } => s.slot_mut(id).status = SlotStatus::Bad,
                _ => {}
            }
        }
        for id in [s.active, s.active.other()] {
            if s.slot(id).status == SlotStatus::Good {
                s.active = id;
                return Ok((id, s));
            }
        }
        Err(Error::NoBootableSlot)
    }

    /// The health check passed on the running slot: commit it and raise the floor.
    /// Idempotent on a slot that is already good.
    pub fn mark_good(&self) -> Result<SlotState> {
        let mut s = *self;
        let slot = s.slot_mut(self.active);
        match slot.status {
            SlotStatus::Good => {}
            SlotStatus::Pending { tries_left: 0 } => slot.status = SlotStatus::Good,
            status => {
                return Err(Error::Transition {
                    slot: self.active,
                    action: "mark good",
                    status,
                })
            }
        }
        let min = slot.min_version;
        s.floor = s.floor.max(min);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(m: u32) -> Version {
        Version::new(m, 0, 0)
    }

    fn committed_a() -> SlotState {
        let s = SlotState {
            active: SlotId::B,
            ..SlotState::default()
        };
        let s = s
            .begin_install(SlotId::A)
            .and_then(|s| s.finish_install(SlotId::A, v(1), v(1)))
            .expect("install");
        let (slot, s) = s.on_boot().expect("boot");
        assert_eq!(slot, SlotId::A);
        s.mark_good().expect("good")
    }

    #[test]
    fn boot_once_then_rollback() {
        let s = committed_a();
        let s = s
            .begin_install(s.inactive())
            .and_then(|s| s.finish_install(SlotId::B, v(2), v(2)))
            .expect("install");
        let (slot, s) = s.on_boot().expect("boot");
        assert_eq!(slot, SlotId::B);
        // Not marked good; the next boot goes back to A and B is bad.
        let (slot, s) = s.on_boot().expect("boot");
        assert_eq!(slot, SlotId::A);
        assert_eq!(s.b.status, SlotStatus::Bad);
        assert_eq!(s.floor, Some(v(1)));
        let (slot, _) = s.on_boot().expect("boot");
        assert_eq!(slot, SlotId::A);
    }

    #[test]
    fn commit_raises_floor_and_sticks() {
        let s = committed_a();
        let s = s
            .begin_install(SlotId::B)
            .and_then(|s| s.finish_install(SlotId::B, v(3), v(2)))
            .expect("install");
        let (_, s) = s.on_boot().expect("boot");
        let s = s.mark_good().expect("good");
        assert_eq!(s.floor, Some(v(2)));
        assert_eq!(s.on_boot().expect("boot").0, SlotId::B);
        assert_eq!(s.installed(), Some(v(3)));
    }

    #[test]
    fn refusals() {
        let s = committed_a();
        assert!(s.begin_install(SlotId::A).is_err(), "active slot");
        let s = s
            .begin_install(SlotId::B)
            .and_then(|s| s.finish_install(SlotId::B, v(2), v(1)))
            .expect("install");
        assert!(s.mark_good().is_ok(), "A is good: idempotent");
        let (_, s) = s.on_boot().expect("boot");
        assert!(
            s.begin_install(SlotId::A).is_err(),
            "trial running: keep the fallback"
        );
        assert!(SlotState::default().on_boot().is_err());
        assert!(SlotState::default().mark_good().is_err());
    }
}
