//! Revocation lists (`branchline-revoked.blr`): token ids HQ has withdrawn.
//!
//! Decision: the list is a signed file in the same envelope as bundles (magic
//! `BLPREV`, [`crate::envelope`]), signed by the same provisioning key, so it can
//! travel over any channel - shipped in the image, copied next to a bundle on a
//! stick, or pulled by the sync agent - and still be trusted. HQ is the authority: it
//! consults its list at enrollment, so a revoked token never gets a certificate even
//! if a box's copy is stale. A box consults its copy before applying a bundle or
//! token, and replaces its copy only with a list whose `updated_at` is newer (an old
//! list cannot un-revoke a token). Entries whose token expiry is known are dropped
//! once the token has expired (an expired token is refused anyway), which keeps the
//! list small.

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, Kind};
use crate::error::{Artifact, Error, Result};
use crate::keys::{KeyId, TrustedKeys};
use crate::payload::{TokenId, PAYLOAD_FORMAT};

/// Default file name.
pub const FILE_NAME: &str = "branchline-revoked.blr";

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The token.
    pub token_id: TokenId,
    /// When it was revoked, Unix seconds.
    pub revoked_at: u64,
    /// The token's own expiry, when known; the entry is pruned after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Why (free text, may be empty).
    #[serde(default)]
    pub reason: String,
}

/// The list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// [`PAYLOAD_FORMAT`].
    pub format: u8,
    /// When it was last changed, Unix seconds (a box keeps the newest it has seen).
    pub updated_at: u64,
    /// Revoked tokens.
    pub entries: Vec<Revocation>,
}

impl Default for RevocationList {
    fn default() -> Self {
        RevocationList {
            format: PAYLOAD_FORMAT,
            updated_at: 0,
            entries: Vec::new(),
        }
    }
}

impl RevocationList {
    /// The entry for `id`, if revoked.
    pub fn find(&self, id: &TokenId) -> Option<&Revocation> {
        self.entries.iter().find(|r| r.token_id == *id)
    }

    /// Revokes `id` at `now` (and drops entries of tokens expired before `now`).
    /// Returns false, changing nothing, if it was already revoked.
    pub fn revoke(
        &mut self,
        id: TokenId,
        expires_at: Option<u64>,
        reason: &str,
        now: u64,
    ) -> Result<bool> {
        if reason.len() > 200 || reason.chars().any(char::is_control) {
            return Err(Error::invalid(
                "reason",
                "at most 200 bytes without control characters",
            ));
        }
        if self.find(&id).is_some() {
            return Ok(false);
        }
        self.entries
            .retain(|r| r.expires_at.is_none_or(|e| e >= now));
        self.entries.push(Revocation {
            token_id: id,
            revoked_at: now,
            expires_at,
            reason: reason.to_owned(),
        });
        self.updated_at = now.max(self.updated_at + 1);
        Ok(true)
    }

    /// Signs the list.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Payload {
            what: Artifact::RevocationList,
            reason: e.to_string(),
        })?;
        envelope::seal(Kind::RevocationList, &json, key)
    }

    /// Verifies and decodes a signed list.
    pub fn open(bytes: &[u8], keys: &TrustedKeys) -> Result<(KeyId, RevocationList)> {
        let opened = envelope::open(Kind::RevocationList, bytes, keys)?;
        let bad = |reason: String| Error::Payload {
            what: Artifact::RevocationList,
            reason,
        };
        let list: RevocationList =
            serde_json::from_slice(opened.payload).map_err(|e| bad(e.to_string()))?;
        if list.format != PAYLOAD_FORMAT {
            return Err(bad(format!(
                "format {}; this build reads {PAYLOAD_FORMAT}",
                list.format
            )));
        }
        Ok((opened.key_id, list))
    }

    /// Reads and verifies a list file.
    pub fn load(path: &Path, keys: &TrustedKeys) -> Result<RevocationList> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        Ok(Self::open(&bytes, keys)?.1)
    }
}
