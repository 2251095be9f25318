//! Updates through HQ, the box side (issue 9 item 5): poll HQ's offer along the sync
//! loop, download the bundle in resumable chunks, check its sha256, wait for the
//! maintenance window and for calls to end (unless HQ forced the offer), install into
//! the inactive slot with `branchline_image`, report the outcome.
//!
//! - [`core`]: the sans-IO state machine (every decision, on a virtual clock).
//! - [`io`]: the download files (resume from the `.part` length, fsync, sha256,
//!   rename), the install into the inactive slot, HQ's update endpoints.
//! - [`task`]: the task running the core against HQ (poll, act, window, calls).
//! - [`trial`]: the trial record kept across the restart into the new slot, so the
//!   next start reports `committed` or `rolled_back` to HQ.
//! - [`window`]: the maintenance window (`[update] window`, UTC).
//!
//! `branchd` ([`crate::daemon`]) starts the task when `[update] from_hq = true` and
//! sync with HQ is set up, and exits with [`EXIT_RESTART_INTO_UPDATE`] once it ends
//! with [`task::Ended::Restart`].

pub mod core;
pub mod io;
pub mod task;
pub mod trial;
pub mod window;

pub use window::Window;

/// Exit status of `branchd` after an update from HQ was installed into the inactive
/// slot: "restart into the new slot". The generated systemd unit lists it in
/// `RestartPreventExitStatus=`, so the unit fails and `FailureAction=reboot` reboots the
/// box; the bootloader then boots the new slot once (the trial boot). On the
/// directory backend the boot step (`branch-image boot`) plays the bootloader.
pub const EXIT_RESTART_INTO_UPDATE: u8 = 4;

#[cfg(test)]
mod tests {
    use branchline_image::overlay::{self, UNIT_PATH};

    #[test]
    fn the_generated_unit_reboots_instead_of_restarting_after_an_install_or_a_reboot_request() {
        for board in ["sim", "bl-400"] {
            let files = overlay::generate(board).expect("overlay");
            let unit = files
                .iter()
                .find(|f| f.path == UNIT_PATH)
                .map(|f| String::from_utf8(f.contents.clone()).expect("utf8"))
                .expect("unit");
            let prevent = format!(
                "RestartPreventExitStatus={}",
                super::EXIT_RESTART_INTO_UPDATE
            );
            // A reboot from the system page or the API exits the same way.
            let reboot = format!("RestartPreventExitStatus={}", crate::daemon::EXIT_REBOOT);
            for line in [
                prevent.as_str(),
                reboot.as_str(),
                "FailureAction=reboot",
                "Restart=on-failure",
            ] {
                assert!(unit.lines().any(|l| l == line), "{board}: {line} missing");
            }
        }
    }
}
