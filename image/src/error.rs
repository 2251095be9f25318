//! The crate's one error type.

use std::path::PathBuf;

use crate::slot::{SlotId, SlotStatus};
use crate::version::Version;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building, verifying or installing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle is not a well-formed tar archive.
    #[error("bundle is not a valid archive ({context}): {source}")]
    Archive {
        /// Where in the bundle reading failed.
        context: &'static str,
        /// The tar reader's error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle ends early or is missing a required member.
    #[error("bundle is truncated or incomplete: {0}")]
    Truncated(String),
    /// The bundle does not start with `manifest.json` then `manifest.sig`.
    #[error("bundle layout: expected {expected:?} as entry {index}, found {found:?}")]
    Layout {
        /// Entry index (0-based).
        index: usize,
        /// What the format requires there.
        expected: String,
        /// What the bundle has.
        found: String,
    },
    /// `manifest.sig` is not a 64-byte ed25519 signature.
    #[error("manifest.sig is {len} bytes, an ed25519 signature is 64")]
    SignatureSize {
        /// Actual length.
        len: usize,
    },
    /// No pinned key verifies the signature.
    #[error("signature over manifest.json does not verify with any of the {key_count} pinned key(s) ({fingerprints})")]
    BadSignature {
        /// How many keys were tried.
        key_count: usize,
        /// Their fingerprints (first 8 bytes of the key, hex).
        fingerprints: String,
    },
    /// No pinned keys were given: nothing could ever verify.
    #[error("no pinned public keys: refusing to trust any bundle")]
    NoKeys,
    /// A key file is malformed.
    #[error("key file {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The (signed) manifest is not valid JSON for this format.
    #[error("manifest.json: {0}")]
    ManifestJson(#[source] serde_json::Error),
    /// The manifest parsed but a field is invalid.
    #[error("manifest field {field}: {reason}")]
    Manifest {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A version string is not `MAJOR.MINOR.PATCH`.
    #[error("invalid version {0:?}: expected MAJOR.MINOR.PATCH with decimal numbers")]
    Version(String),
    /// A path is absolute, contains `..`, or uses characters the format does not allow.
    #[error("unsafe or invalid path {path:?}: {reason}")]
    UnsafePath {
        /// The offending path as found.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The bundle is for another product, board or target.
    #[error("bundle is for {field} {found:?}, this box is {expected:?}")]
    WrongTarget {
        /// `product`, `board` or `target`.
        field: &'static str,
        /// What this box is.
        expected: String,
        /// What the bundle says.
        found: String,
    },
    /// The bundle is not newer than what is installed.
    #[error("bundle version {bundle} is not newer than installed {installed}")]
    NotNewer {
        /// Bundle version.
        bundle: Version,
        /// Installed (active) version.
        installed: Version,
    },
    /// The bundle is below the anti-rollback floor.
    #[error("bundle version {bundle} is below the anti-rollback floor {floor}")]
    BelowFloor {
        /// Bundle version.
        bundle: Version,
        /// Highest `min_version` of any committed image.
        floor: Version,
    },
    /// A tar entry is not a regular file.
    #[error("bundle entry {path:?} is a {kind}, only regular files are allowed")]
    NotRegularFile {
        /// Entry path.
        path: String,
        /// Entry type.
        kind: String,
    },
    /// A tar entry is not listed in the manifest (or out of order).
    #[error("bundle entry {found:?} is not expected here (manifest expects {expected:?})")]
    UnexpectedEntry {
        /// Entry found.
        found: String,
        /// What the manifest lists next (`None`: nothing more).
        expected: Option<String>,
    },
    /// A file's size differs from the manifest.
    #[error("{path}: size {actual}, manifest says {expected}")]
    SizeMismatch {
        /// File path.
        path: String,
        /// Manifest size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A file's mode differs from the manifest.
    #[error("{path}: mode {actual:o}, manifest says {expected:o}")]
    ModeMismatch {
        /// File path.
        path: String,
        /// Manifest mode.
        expected: u32,
        /// Actual mode.
        actual: u32,
    },
    /// A file's sha256 differs from the manifest.
    #[error("{path}: sha256 {actual}, manifest says {expected}")]
    HashMismatch {
        /// File path.
        path: String,
        /// Manifest hash (hex).
        expected: String,
        /// Actual hash (hex).
        actual: String,
    },
    /// Every member verified, but the bytes are not the canonical encoding (padding,
    /// header fields or trailing data altered).
    #[error("bundle is not in canonical form: first difference at byte {offset} of {len}")]
    NotCanonical {
        /// First differing offset.
        offset: u64,
        /// Bundle length.
        len: u64,
    },
    /// The bundle exceeds the size limit.
    #[error("bundle is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// Actual size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// `SOURCE_DATE_EPOCH` is missing or not a number.
    #[error("SOURCE_DATE_EPOCH: {0}")]
    SourceDateEpoch(String),
    /// A slot state transition is not allowed.
    #[error("slot {slot}: cannot {action} while it is {status:?}")]
    Transition {
        /// The slot.
        slot: SlotId,
        /// The transition attempted.
        action: &'static str,
        /// Its current status.
        status: SlotStatus,
    },
    /// No slot holds a bootable image.
    #[error("no bootable slot (A and B are both empty or bad)")]
    NoBootableSlot,
    /// The persisted slot state could not be parsed.
    #[error("slot state {origin}: {reason}")]
    State {
        /// File or backend.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// An external command (fw_printenv / fw_setenv) failed.
    #[error("command {command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status or spawn error, and stderr.
        reason: String,
    },
    /// A fault injected by a test (simulated power loss).
    #[error("injected fault at IO step {step}")]
    Injected {
        /// The IO step that failed.
        step: usize,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
