//! Provisioning signing keys and the set of keys a box trusts.
//!
//! Key files are one lowercase hex line each, as for `branch-image`: `NAME.key` holds
//! the 32-byte ed25519 secret seed (mode 0600, never overwritten), `NAME.pub` the
//! 32-byte public key. A key's [`KeyId`] is the first 4 bytes of sha256 of the public
//! key; every artifact names the key that signed it, so HQ can rotate keys (sign with
//! the new key once every box's image trusts it, then drop the old one from images)
//! and a box picks the one key to check instead of trying all of them.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

fn read_hex32(path: &Path) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let bad = |reason: &str| Error::Key {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
    bytes
        .try_into()
        .map_err(|_| bad("expected 32 bytes (64 hex digits)"))
}

/// Reads a private (signing) key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
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
    VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| Error::Key {
        path: path.to_owned(),
        reason: "not a valid ed25519 public key".to_owned(),
    })
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
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let private = with_suffix(prefix, ".key");
    let public = with_suffix(prefix, ".pub");
    if public.exists() {
        return Err(Error::io(
            "create",
            &public,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| Error::io("create", &private, e))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &private, e))?;
    let verifying = key.verifying_key();
    fs::write(&public, format!("{}\n", hex::encode(verifying.as_bytes())))
        .map_err(|e| Error::io("write", &public, e))?;
    Ok(KeyFiles {
        private,
        public,
        key_id: KeyId::of(&verifying),
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
