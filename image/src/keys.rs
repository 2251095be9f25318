//! Ed25519 key files: one lowercase hex line each (64 hex digits: the 32-byte secret
//! seed, or the 32-byte public key).
//!
//! This is the one implementation of the format: `branch-prov`'s provisioning keys
//! (`branchline_provisioning::keys`) read and write their files through
//! [`read_signing_key`], [`read_verifying_key`] and [`write_key_pair`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{Error, Result};

/// File name of the private key written by [`keygen`].
pub const PRIVATE_KEY_FILE: &str = "branchline-signing.key";
/// File name of the public key written by [`keygen`].
pub const PUBLIC_KEY_FILE: &str = "branchline-signing.pub";

/// Short fingerprint of a public key (first 8 bytes, hex) for messages and logs.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&key.as_bytes()[..8])
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

/// Reads a public (verifying) key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| Error::Key {
        path: path.to_owned(),
        reason: "not a valid ed25519 public key".to_owned(),
    })
}

/// Generates a keypair from the OS random source and writes
/// `DIR/`[`PRIVATE_KEY_FILE`] (mode 0600, refused if it exists) and
/// `DIR/`[`PUBLIC_KEY_FILE`]. Returns the public key.
pub fn keygen(dir: &Path) -> Result<VerifyingKey> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let key = write_key_pair(&dir.join(PRIVATE_KEY_FILE), &dir.join(PUBLIC_KEY_FILE))?;
    Ok(key.verifying_key())
}

/// Generates a keypair from the OS random source and writes the secret seed to
/// `private` (mode 0600, created exclusively, fsynced) and the public key to `public`.
/// An existing key is never overwritten: an existing `public` or `private` is refused
/// before anything is written. Returns the new signing key.
pub fn write_key_pair(private: &Path, public: &Path) -> Result<SigningKey> {
    if public.exists() {
        return Err(Error::io(
            "create",
            public,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::io("random", private, std::io::Error::other(e)))?;
    let key = SigningKey::from_bytes(&seed);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .map_err(|e| Error::io("create", private, e))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", private, e))?;
    let verifying = key.verifying_key();
    fs::write(public, format!("{}\n", hex::encode(verifying.as_bytes())))
        .map_err(|e| Error::io("write", public, e))?;
    Ok(key)
}
