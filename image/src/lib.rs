//! Branchline firmware images: signed update bundles and the A/B slot updater.
//!
//! Modules:
//! - [`bundle`]: the bundle format (canonical tar: `manifest.json`, `manifest.sig`,
//!   files), [`bundle::build`] and the verification order ([`bundle::open`] checks the
//!   ed25519 signature against pinned keys before the manifest is parsed, then
//!   [`bundle::SignedManifest::verify_files`]);
//! - [`manifest`]: the signed manifest (`format: 1`) and path rules;
//! - [`version`]: `MAJOR.MINOR.PATCH`, compared numerically;
//! - [`policy`]: board/target match, no-downgrade and the anti-rollback floor;
//! - [`slot`]: [`slot::SlotState`], the pure A/B state with its transitions
//!   (`begin_install`, `finish_install`, `on_boot`, `mark_good`);
//! - [`store`]: the IO that persists it ([`store::SlotStore`]: [`store::DirSlots`],
//!   [`store::UbootEnv`]) and writes slot payloads ([`store::SlotPayload`]);
//! - [`update`]: install / boot / mark-good / re-verify a slot;
//! - [`overlay`]: the generated rootfs overlay (systemd unit, config, udev, logrotate);
//! - [`keys`]: ed25519 key files;
//! - [`error`]: the crate's error type.
//!
//! Limits: bundles are verified in memory (at most [`bundle::MAX_BUNDLE_LEN`]); slots
//! are directories (a partition backend would implement [`store::SlotPayload`]); on
//! U-Boot boards the bootloader script, not [`slot::SlotState::on_boot`], spends the
//! tries. `branchd` calls [`update::mark_good`]'s equivalent from its post-boot health
//! check (`branchline_firmware::health`) and exits with status 3 on a failed trial,
//! which the generated unit ([`overlay`]) turns into a reboot into the previous slot.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod overlay;
pub mod policy;
pub mod slot;
pub mod store;
pub mod update;
pub mod version;

pub use error::{Error, Result};
