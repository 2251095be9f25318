//! The signed manifest (`manifest.json`, `format: 1`) and path rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::version::Version;

/// The only manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;
/// The product every bundle must name.
pub const PRODUCT: &str = "branchline";
/// Name of the manifest entry (always entry 0 of the bundle).
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the detached signature entry (always entry 1 of the bundle).
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// Longest allowed file path (fits the plain ustar name field, no extensions).
pub const MAX_PATH_LEN: usize = 100;
/// Largest manifest read before the signature is checked.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;

/// The bundle manifest. Serialized with `serde_json::to_vec_pretty`; the signature is
/// over those exact bytes, never over a re-serialization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version, [`FORMAT`].
    pub format: u32,
    /// Always [`PRODUCT`].
    pub product: String,
    /// Board profile name (`bl-400`, `sim`, ...).
    pub board: String,
    /// Rust target triple the binaries were built for.
    pub target: String,
    /// Release version.
    pub version: Version,
    /// Anti-rollback floor this release sets once committed (see [`crate::policy`]).
    pub min_version: Version,
    /// Build time, seconds since the epoch, from `SOURCE_DATE_EPOCH`.
    pub build_time: u64,
    /// Every file in the bundle, sorted by path.
    pub files: Vec<FileEntry>,
}

/// One payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the slot (checked by [`check_path`]).
    pub path: String,
    /// sha256 of the contents, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits: `0o644` or `0o755`.
    pub mode: u32,
}

/// Refuses absolute paths, `..`, `.`, empty components, reserved names and anything
/// outside `[A-Za-z0-9._+-]` and `/`.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::UnsafePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return bad("empty or longer than 100 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path == MANIFEST_NAME || path == SIGNATURE_NAME {
        return bad("reserved name");
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("empty component"),
            "." | ".." => return bad("`.` or `..` component"),
            _ => {}
        }
        if !comp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        {
            return bad("character outside [A-Za-z0-9._+-]");
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses the manifest. Call only on bytes whose signature has been verified.
    pub fn from_verified_bytes(bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(Error::ManifestJson)?;
        m.validate()?;
        Ok(m)
    }

    /// Checks field-level invariants: format, product, sorted unique safe paths, hash
    /// syntax, modes, `min_version <= version`.
    pub fn validate(&self) -> Result<()> {
        let field = |field, reason: String| Err(Error::Manifest { field, reason });
        if self.format != FORMAT {
            return field(
                "format",
                format!("{} is not supported (only {FORMAT})", self.format),
            );
        }
        if self.product != PRODUCT {
            return Err(Error::WrongTarget {
                field: "product",
                expected: PRODUCT.to_owned(),
                found: self.product.clone(),
            });
        }
        if self.min_version > self.version {
            return field(
                "min_version",
                format!("{} is above version {}", self.min_version, self.version),
            );
        }
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path)?;
            if i > 0 && self.files[i - 1].path >= f.path {
                return field("files", format!("{:?} is not sorted or duplicated", f.path));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return field(
                    "files.sha256",
                    format!("{:?}: not 64 lowercase hex digits", f.path),
                );
            }
            if f.mode != 0o644 && f.mode != 0o755 {
                return field(
                    "files.mode",
                    format!("{:?}: {:o} (only 644 or 755)", f.path, f.mode),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        for ok in ["usr/bin/branchd", "etc/branchline/branchd.toml", "a"] {
            check_path(ok).expect(ok);
        }
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "manifest.json",
            "a b",
            "a\\b",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path(&"a".repeat(101)).is_err());
    }
}
