//! The disk guard: recordings never take the free space the store and the system need.
//!
//! [`decide`] is the pure rule; [`FreeSpace`] is where the number comes from —
//! [`Statvfs`] (`statvfs(2)` through `nix`: the blocks available to an unprivileged
//! writer on the recordings filesystem) in the daemon, any other implementation in tests
//! that need a full disk without filling one.
//!
//! - Start: a recording starts only if, after [`START_HEADROOM`] (one minute of
//!   stereo audio) more, free space stays at or above the reserve (`[recording]
//!   min_free_mb`).
//! - Running: a recording is stopped (finished and registered, so what it holds is
//!   kept) as soon as free space is below the reserve. It is checked once per header
//!   update (every second of audio).
//! - A filesystem whose free space cannot be read counts as full: recordings are the
//!   thing to give up, not the store.

use std::path::Path;

use super::wav::BYTE_RATE;

/// Space one more minute of recording takes: what a start must leave above the reserve.
pub const START_HEADROOM: u64 = BYTE_RATE as u64 * 60;

/// The guard's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on (or start).
    Allow,
    /// Free space is (or would fall) below the reserve.
    Refuse {
        /// Bytes free now.
        available: u64,
        /// The reserve.
        reserve: u64,
    },
}

/// Whether a recording may start (`starting`) or go on, with `available` bytes free and
/// `reserve` bytes to keep.
pub fn decide(available: u64, reserve: u64, starting: bool) -> Decision {
    let needed = if starting {
        reserve.saturating_add(START_HEADROOM)
    } else {
        reserve
    };
    if available >= needed {
        Decision::Allow
    } else {
        Decision::Refuse { available, reserve }
    }
}

/// Free space of the filesystem holding a directory.
pub trait FreeSpace: Send + 'static {
    /// Bytes an unprivileged writer may still use on `dir`'s filesystem.
    fn available(&self, dir: &Path) -> std::io::Result<u64>;
}

/// [`FreeSpace`] from `statvfs(2)`: `f_bavail * f_frsize`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FreeSpace for Statvfs {
    fn available(&self, dir: &Path) -> std::io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
        #[allow(clippy::useless_conversion)] // the field types differ between targets
        let (avail, frsize) = (
            u64::from(s.blocks_available()),
            u64::from(s.fragment_size()),
        );
        Ok(avail.saturating_mul(frsize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_needs_headroom_above_the_reserve_running_needs_the_reserve() {
        let reserve = 100 << 20;
        assert_eq!(
            decide(reserve + START_HEADROOM, reserve, true),
            Decision::Allow
        );
        assert_eq!(
            decide(reserve + START_HEADROOM - 1, reserve, true),
            Decision::Refuse {
                available: reserve + START_HEADROOM - 1,
                reserve
            }
        );
        assert_eq!(decide(reserve, reserve, false), Decision::Allow);
        assert!(matches!(
            decide(reserve - 1, reserve, false),
            Decision::Refuse { .. }
        ));
        assert!(matches!(decide(0, u64::MAX, true), Decision::Refuse { .. }));
    }

    #[test]
    fn statvfs_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = Statvfs.available(dir.path()).expect("statvfs");
        assert!(free > 0, "a temp dir's filesystem has some room");
        let err = Statvfs
            .available(&dir.path().join("no/such/dir"))
            .expect_err("missing dir");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
