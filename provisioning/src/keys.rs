//! Provisioning signing keys and the set of keys a box trusts.
//!
//! Key files are one lowercase hex line each, read and written by `branch-image`'s
//! code (`branchline_image::keys`, the one implementation of the format): `NAME.key` holds
//! the 32-byte ed25519 secret seed (mode 0600, never overwritten), `NAME.pub` the
//! 32-byte public key. A key's [`KeyId`] is the first 4 bytes of sha256 of the public
//! key; every artifact names the key that signed it, so HQ can rotate keys (sign with
//! the new key once every box's image trusts it, then drop the old one from images)
//! and a box picks the one key to check instead of trying all of them.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Names a signing key: the first 4 bytes of sha256 of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        KeyId([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The public keys a box (or `branch-prov verify`) accepts signatures from, by id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, VerifyingKey)>,
}

impl TrustedKeys {
    /// A set of keys; two keys with the same id are refused.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self> {
        let mut out = TrustedKeys::default();
        for key in keys {
            let id = KeyId::of(&key);
            if out.keys.iter().any(|(k, _)| *k == id) {
                return Err(Error::DuplicateKeyId(id));
            }
            out.keys.push((id, key));
        }
        Ok(out)
    }

    /// Reads each public key file.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let keys = paths
            .iter()
            .map(|p| read_verifying_key(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        TrustedKeys::new(keys)
    }

    /// The key with this id.
    pub fn get(&self, id: KeyId) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, v)| v)
    }

    /// The ids, comma-separated, for messages.
    pub fn ids(&self) -> String {
        if self.keys.is_empty() {
            return "none".to_owned();
        }
        self.keys
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A key-file error of `branchline_image` (which owns the file format) as ours.
fn key_file_error(path: &Path) -> impl FnOnce(branchline_image::Error) -> Error + '_ {
    move |e| match e {
        branchline_image::Error::Io { op, path, source } => Error::Io { op, path, source },
        branchline_image::Error::Key { path, reason } => Error::Key { path, reason },
        other => Error::Key {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Reads a private (signing) key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    branchline_image::keys::read_signing_key(path).map_err(key_file_error(path))
}

/// Reads a public (verifying) key file. A private key file given by mistake is
/// refused by name rather than silently treated as a public key.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    if path.extension().is_some_and(|e| e == "key") {
        return Err(Error::Key {
            path: path.to_owned(),
            reason: "this is a private key file; give the .pub file".to_owned(),
        });
    }
    branchline_image::keys::read_verifying_key(path).map_err(key_file_error(path))
}

/// The two files written by [`generate`].
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// `PREFIX.key`, mode 0600.
    pub private: PathBuf,
    /// `PREFIX.pub`.
    pub public: PathBuf,
    /// The new key's id.
    pub key_id: KeyId,
}

/// Generates a key pair from the OS random source and writes `PREFIX.key` (mode 0600,
/// created exclusively: an existing key is never overwritten) and `PREFIX.pub`.
pub fn generate(prefix: &Path) -> Result<KeyFiles> {
    let private = with_suffix(prefix, ".key");
    let public = with_suffix(prefix, ".pub");
    let key = branchline_image::keys::write_key_pair(&private, &public)
        .map_err(key_file_error(&private))?;
    Ok(KeyFiles {
        private,
        public,
        key_id: KeyId::of(&key.verifying_key()),
    })
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_writes_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("hq");
        let files = generate(&prefix).unwrap();
        let mode = fs::metadata(&files.private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sk = read_signing_key(&files.private).unwrap();
        let pk = read_verifying_key(&files.public).unwrap();
        assert_eq!(sk.verifying_key(), pk);
        assert_eq!(KeyId::of(&pk), files.key_id);
        let before = fs::read(&files.private).unwrap();
        assert!(matches!(generate(&prefix), Err(Error::Io { .. })));
        assert_eq!(fs::read(&files.private).unwrap(), before);
        assert!(matches!(
            read_verifying_key(&files.private),
            Err(Error::Key { .. })
        ));
    }

    #[test]
    fn duplicate_ids_refused() {
        let k = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(matches!(
            TrustedKeys::new([k, k]),
            Err(Error::DuplicateKeyId(_))
        ));
    }
}
