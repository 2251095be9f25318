//! Update rollouts at HQ (issue 9 item 5): an operator stages a signed bundle for a set
//! of sites in waves; each box's wave is fixed by a per-box seed; the operator advances,
//! pauses or cancels the rollout; boxes report their outcome.
//!
//! This module is the pure core, free of IO so it is tested exhaustively:
//!
//! - [`Waves`]: cumulative percentages (`[10, 50, 100]`: wave 0 is 10 % of the boxes,
//!   wave 1 the next 40 %, wave 2 the rest). Validated: 1..=10 waves, strictly rising,
//!   each 1..=100, the last 100 (every box is in some wave).
//! - [`bucket`]: the per-box seed, a stable hash of `(rollout id, box id)` into
//!   `0..100`: sha256 over `rollout_id NUL box_id`, first 8 bytes big-endian, mod 100.
//!   Stable across HQ restarts, instances and stores; different per rollout, so the same
//!   boxes do not always go first.
//! - [`Rollout::offer_for`]: whether a box is offered the rollout now (site targeted,
//!   rollout active, box's wave reached, no final outcome yet).
//! - [`Rollout::transition`]: advance / pause / resume / cancel, with the refusals an
//!   operator needs to see (advancing past the last wave, resuming a cancelled one).
//! - [`OutcomeState`]: what a box reports (downloading, staged, installed, committed,
//!   rolled-back, failed), in `crate::wire` so the box and HQ share it.
//!
//! [`sqlite`] and [`postgres`] keep rollouts in the same database as the rest of HQ,
//! in tables created by their own numbered migrations
//! (`sync/migrations/<store>/rollouts/NNNN_*.sql`, tracked in `rollout_migrations`).
//!
//! [`api`] holds the admin and sync endpoints and the bundle files. HQ verifies a
//! staged bundle (signature against the keys pinned in `tls_dir/update-keys/`, then
//! every file) before storing it; the box verifies it again against its own pinned
//! keys before installing.

pub mod api;
pub mod postgres;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hq::{Error, Result};
use crate::wire::OutcomeState;

/// Most waves in one rollout.
pub const MAX_WAVES: usize = 10;

/// Cumulative wave percentages, validated (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waves(Vec<u8>);

impl Waves {
    /// Validates cumulative percentages.
    pub fn new(percents: Vec<u8>) -> Result<Waves> {
        let invalid = |reason: String| Error::Invalid {
            field: "waves".into(),
            reason,
        };
        if percents.is_empty() || percents.len() > MAX_WAVES {
            return Err(invalid(format!(
                "{} waves: a rollout has 1 to {MAX_WAVES}",
                percents.len()
            )));
        }
        if let Some(p) = percents.iter().find(|&&p| p == 0 || p > 100) {
            return Err(invalid(format!("{p}: each wave is 1 to 100 percent")));
        }
        if percents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(format!(
                "{percents:?}: cumulative percentages must rise strictly"
            )));
        }
        if percents.last() != Some(&100) {
            return Err(invalid(format!(
                "{percents:?}: the last wave must reach 100 (every box in some wave)"
            )));
        }
        Ok(Waves(percents))
    }

    /// The cumulative percentages.
    pub fn percents(&self) -> &[u8] {
        &self.0
    }

    /// How many waves.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (validated non-empty); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The wave a box with `bucket` (0..100) is in.
    pub fn wave_of(&self, bucket: u8) -> usize {
        self.0
            .iter()
            .position(|&p| bucket < p)
            .unwrap_or(self.0.len() - 1)
    }
}

/// The per-box seed: `rollout_id` and `box_id` hashed into `0..100`.
pub fn bucket(rollout_id: &str, box_id: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(rollout_id.as_bytes());
    h.update([0]);
    h.update(box_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // < 100: fits.
    (u64::from_be_bytes(first) % 100) as u8
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Offered to the boxes of the waves reached.
    Active,
    /// Offered to nobody new; boxes already downloading finish what they started only
    /// if they already hold the whole bundle (they ask for the offer again first).
    Paused,
    /// Withdrawn for good.
    Cancelled,
}

impl RolloutState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<RolloutState> {
        Some(match name {
            "active" => RolloutState::Active,
            "paused" => RolloutState::Paused,
            "cancelled" => RolloutState::Cancelled,
            _ => return None,
        })
    }
}

/// An operator's command on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Open the next wave.
    Advance,
    /// Stop offering.
    Pause,
    /// Offer again after a pause.
    Resume,
    /// Withdraw for good.
    Cancel,
}

/// One staged update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Operator-chosen id (validated like other HQ ids).
    pub id: String,
    /// The bundle's version (`MAJOR.MINOR.PATCH` from its manifest).
    pub version: String,
    /// The bundle's board.
    pub board: String,
    /// sha256 of the whole bundle (lowercase hex).
    pub sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Install even while calls are up / outside the maintenance window.
    pub forced: bool,
    /// The sites targeted.
    pub sites: Vec<String>,
    /// The waves.
    pub waves: Waves,
    /// The highest wave open (0: only the first).
    pub current_wave: usize,
    /// Active, paused or cancelled.
    pub state: RolloutState,
    /// When it was staged (ms since the Unix epoch).
    pub created_at_ms: i64,
}

impl Rollout {
    /// Whether the box `box_id` of `site` is offered this rollout now, given its last
    /// reported outcome (`None`: none yet).
    pub fn offer_for(&self, box_id: &str, site: &str, outcome: Option<OutcomeState>) -> bool {
        self.state == RolloutState::Active
            && self.sites.iter().any(|s| s == site)
            && self.waves.wave_of(bucket(&self.id, box_id)) <= self.current_wave
            && !outcome.is_some_and(OutcomeState::is_final)
    }

    /// Applies `command`; the error says why it does not apply.
    pub fn transition(&self, command: Command) -> Result<Rollout> {
        let refuse = |reason: String| Error::Invalid {
            field: "rollout".into(),
            reason: format!("{}: {reason}", self.id),
        };
        let mut next = self.clone();
        match (command, self.state) {
            (_, RolloutState::Cancelled) => {
                return Err(refuse("cancelled; stage a new rollout".into()))
            }
            (Command::Advance, RolloutState::Active) => {
                if self.current_wave + 1 >= self.waves.len() {
                    return Err(refuse(format!(
                        "already at its last wave ({} of {})",
                        self.current_wave + 1,
                        self.waves.len()
                    )));
                }
                next.current_wave += 1;
            }
            (Command::Advance, RolloutState::Paused) => {
                return Err(refuse("paused; resume it before advancing".into()))
            }
            (Command::Pause, RolloutState::Active) => next.state = RolloutState::Paused,
            (Command::Pause, RolloutState::Paused) => return Err(refuse("paused already".into())),
            (Command::Resume, RolloutState::Paused) => next.state = RolloutState::Active,
            (Command::Resume, RolloutState::Active) => return Err(refuse("not paused".into())),
            (Command::Cancel, _) => next.state = RolloutState::Cancelled,
        }
        Ok(next)
    }
}

/// One box's reported outcome for a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxOutcome {
    /// The box.
    pub box_id: String,
    /// What it reported last.
    pub state: OutcomeState,
    /// The version it runs (or tried), as reported.
    pub version: Option<String>,
    /// Why, for `failed` / `rolled_back`.
    pub reason: Option<String>,
    /// When HQ received it.
    pub updated_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(waves: Vec<u8>) -> Rollout {
        Rollout {
            id: "r1".into(),
            version: "1.2.0".into(),
            board: "sim".into(),
            sha256: "00".repeat(32),
            size: 10,
            forced: false,
            sites: vec!["s1".into()],
            waves: Waves::new(waves).expect("waves"),
            current_wave: 0,
            state: RolloutState::Active,
            created_at_ms: 0,
        }
    }

    #[test]
    fn waves_are_validated() {
        for (bad, words) in [
            (vec![], "0 waves"),
            (vec![0, 100], "1 to 100"),
            (vec![50, 101], "1 to 100"),
            (vec![50, 50, 100], "rise strictly"),
            (vec![60, 40, 100], "rise strictly"),
            (vec![10, 50], "reach 100"),
            (vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100], "1 to 10"),
        ] {
            let e = Waves::new(bad.clone()).expect_err("invalid").to_string();
            assert!(e.contains(words), "{bad:?}: {e}");
        }
        let w = Waves::new(vec![10, 50, 100]).expect("valid");
        assert_eq!(
            (w.wave_of(0), w.wave_of(9), w.wave_of(10), w.wave_of(49)),
            (0, 0, 1, 1)
        );
        assert_eq!((w.wave_of(50), w.wave_of(99)), (2, 2));
    }

    #[test]
    fn bucket_is_stable_spread_and_per_rollout() {
        // Stable: a fixed value (the seed must not change between HQ versions, or
        // boxes would move between waves mid-rollout).
        assert_eq!(bucket("r1", "box-1"), bucket("r1", "box-1"));
        let pinned = {
            let d = Sha256::digest(b"r1\0box-1");
            (u64::from_be_bytes(d[..8].try_into().expect("8")) % 100) as u8
        };
        assert_eq!(bucket("r1", "box-1"), pinned);
        // Spread: 2000 boxes over ten deciles, none empty or more than twice its share.
        let mut deciles = [0u32; 10];
        for i in 0..2000 {
            deciles[usize::from(bucket("r1", &format!("box-{i}")) / 10)] += 1;
        }
        assert!(
            deciles.iter().all(|&n| (100..=400).contains(&n)),
            "{deciles:?}"
        );
        // Per rollout: the same box lands elsewhere in another rollout (for most boxes).
        let moved = (0..200)
            .filter(|i| bucket("r1", &format!("b{i}")) != bucket("r2", &format!("b{i}")))
            .count();
        assert!(moved > 150, "{moved}");
        // No separator ambiguity: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            Sha256::digest(b"ab\0c").as_slice(),
            Sha256::digest(b"a\0bc").as_slice()
        );
    }

    #[test]
    fn offers_follow_site_state_wave_and_outcome() {
        let mut r = rollout(vec![50, 100]);
        let (first, second): (Vec<String>, Vec<String>) = (0..100)
            .map(|i| format!("box-{i}"))
            .partition(|b| bucket("r1", b) < 50);
        assert!(!first.is_empty() && !second.is_empty());
        assert!(r.offer_for(&first[0], "s1", None));
        assert!(!r.offer_for(&second[0], "s1", None), "second wave not open");
        assert!(!r.offer_for(&first[0], "s2", None), "site not targeted");
        assert!(r.offer_for(&first[0], "s1", Some(OutcomeState::Downloading)));
        assert!(r.offer_for(&first[0], "s1", Some(OutcomeState::Staged)));
        for done in [
            OutcomeState::Committed,
            OutcomeState::RolledBack,
            OutcomeState::Failed,
        ] {
            assert!(
                !r.offer_for(&first[0], "s1", Some(done)),
                "{done:?} is final"
            );
        }
        r = r.transition(Command::Advance).expect("advance");
        assert!(r.offer_for(&second[0], "s1", None));
        r = r.transition(Command::Pause).expect("pause");
        assert!(!r.offer_for(&first[0], "s1", None), "paused");
        r = r.transition(Command::Resume).expect("resume");
        assert!(r.offer_for(&first[0], "s1", None));
        r = r.transition(Command::Cancel).expect("cancel");
        assert!(!r.offer_for(&first[0], "s1", None), "cancelled");
    }

    #[test]
    fn transitions_refuse_what_does_not_apply() {
        let r = rollout(vec![100]);
        let e = r.transition(Command::Advance).expect_err("one wave");
        assert!(e.to_string().contains("last wave (1 of 1)"), "{e}");
        let e = r.transition(Command::Resume).expect_err("active");
        assert!(e.to_string().contains("not paused"), "{e}");
        let p = r.transition(Command::Pause).expect("pause");
        assert!(p
            .transition(Command::Advance)
            .expect_err("paused")
            .to_string()
            .contains("resume it"));
        assert!(p.transition(Command::Pause).is_err());
        let c = p.transition(Command::Cancel).expect("cancel a paused one");
        for cmd in [
            Command::Advance,
            Command::Pause,
            Command::Resume,
            Command::Cancel,
        ] {
            let e = c.transition(cmd).expect_err("cancelled");
            assert!(e.to_string().contains("cancelled"), "{cmd:?}: {e}");
        }
        // The original is untouched by refused or applied transitions.
        assert_eq!(r, rollout(vec![100]));
    }
}
