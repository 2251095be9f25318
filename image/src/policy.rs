//! Which bundles a box accepts (step 4 of the verification order).
//!
//! Rules, checked on the signature-verified manifest:
//! 1. `product` is `branchline`, `board` and `target` equal this box's;
//! 2. **anti-rollback floor**: `version >= floor`, where `floor` is the highest
//!    `min_version` of any image ever committed (marked good) on this box. No option
//!    overrides this;
//! 3. **no downgrade**: `version > installed` (the committed running version), unless
//!    `allow_downgrade` is set — then older or equal versions are accepted, but still
//!    never below the floor.
//!
//! A release raises the floor only once it has booted and passed the health check, so
//! a bad release that rolled back cannot lock the box out of the version it returns to.

use crate::error::{Error, Result};
use crate::manifest::{Manifest, PRODUCT};
use crate::slot::SlotState;

/// What this box is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Board profile name.
    pub board: String,
    /// Target triple.
    pub target: String,
}

/// Applies the rules above.
pub fn check(
    manifest: &Manifest,
    me: &Identity,
    state: &SlotState,
    allow_downgrade: bool,
) -> Result<()> {
    for (field, expected, found) in [
        ("product", PRODUCT, manifest.product.as_str()),
        ("board", me.board.as_str(), manifest.board.as_str()),
        ("target", me.target.as_str(), manifest.target.as_str()),
    ] {
        if expected != found {
            return Err(Error::WrongTarget {
                field,
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
    }
    if let Some(floor) = state.floor {
        if manifest.version < floor {
            return Err(Error::BelowFloor {
                bundle: manifest.version,
                floor,
            });
        }
    }
    if let Some(installed) = state.installed() {
        if manifest.version <= installed && !allow_downgrade {
            return Err(Error::NotNewer {
                bundle: manifest.version,
                installed,
            });
        }
    }
    Ok(())
}
