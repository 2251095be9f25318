//! The updater: install a bundle into the inactive slot, boot, commit, and re-verify a
//! slot from disk.
//!
//! [`install`] verifies everything (signature, policy, every file, canonical form)
//! in memory before the first write, so a refused bundle never touches a slot. Its IO
//! steps, each a possible power-loss point: save state (target `Empty`), clear the
//! target, write each file (fsynced), write the manifest and signature copies, sync the
//! directories, save state (target `Pending`). The active slot is never written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::bundle;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, MANIFEST_NAME, SIGNATURE_NAME};
use crate::policy::{self, Identity};
use crate::slot::SlotId;
use crate::store::{SlotPayload, SlotStore};
use crate::version::Version;

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The slot written (the previously inactive one).
    pub slot: SlotId,
    /// The version now pending in it.
    pub version: Version,
}

/// Verifies `bundle` and installs it into the inactive slot as boot-once.
pub fn install(
    bundle: &[u8],
    keys: &[VerifyingKey],
    me: &Identity,
    allow_downgrade: bool,
    store: &mut impl SlotStore,
    payload: &mut impl SlotPayload,
) -> Result<Installed> {
    let signed = bundle::open(bundle, keys)?;
    let state = store.load()?;
    policy::check(&signed.manifest, me, &state, allow_downgrade)?;
    let verified = signed.verify_files()?;

    let target = state.inactive();
    let m = &verified.manifest;
    let started = state.begin_install(target)?;
    let finished = started.finish_install(target, m.version, m.min_version)?;
    store.save(&started)?;
    payload.clear(target)?;
    for (entry, contents) in verified.files() {
        payload.write_file(target, &entry.path, contents, entry.mode)?;
    }
    payload.write_file(target, MANIFEST_NAME, verified.manifest_bytes, 0o644)?;
    payload.write_file(target, SIGNATURE_NAME, &verified.signature, 0o644)?;
    payload.sync(target)?;
    store.save(&finished)?;
    Ok(Installed {
        slot: target,
        version: m.version,
    })
}

/// Simulates the bootloader: picks the slot, persists the spent try, returns the slot.
pub fn boot(store: &mut impl SlotStore) -> Result<SlotId> {
    let (slot, next) = store.load()?.on_boot()?;
    store.save(&next)?;
    Ok(slot)
}

/// The health check passed: commit the running slot.
pub fn mark_good(store: &mut impl SlotStore) -> Result<()> {
    let next = store.load()?.mark_good()?;
    store.save(&next)
}

/// Re-verifies an installed slot directory against the pinned keys: signature, then
/// every listed file's size, sha256 and mode. Returns its manifest.
pub fn verify_slot(dir: &Path, keys: &[VerifyingKey]) -> Result<Manifest> {
    if keys.is_empty() {
        return Err(Error::NoKeys);
    }
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read(&p).map_err(|e| Error::io("read", p, e))
    };
    let manifest_bytes = read(MANIFEST_NAME)?;
    let sig = read(SIGNATURE_NAME)?;
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| Error::SignatureSize { len: sig.len() })?;
    let sig = Signature::from_bytes(&sig);
    if !keys
        .iter()
        .any(|k| k.verify_strict(&manifest_bytes, &sig).is_ok())
    {
        return Err(Error::BadSignature {
            key_count: keys.len(),
            fingerprints: keys
                .iter()
                .map(crate::keys::fingerprint)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let manifest = Manifest::from_verified_bytes(&manifest_bytes)?;
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let meta = fs::symlink_metadata(&p).map_err(|e| Error::io("stat", &p, e))?;
        if !meta.file_type().is_file() {
            return Err(Error::NotRegularFile {
                path: f.path.clone(),
                kind: format!("{:?}", meta.file_type()),
            });
        }
        let contents = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        bundle::verify_file(f, &contents)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode != f.mode {
            return Err(Error::ModeMismatch {
                path: f.path.clone(),
                expected: f.mode,
                actual: mode,
            });
        }
    }
    Ok(manifest)
}
