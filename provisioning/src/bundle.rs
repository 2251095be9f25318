//! USB provisioning bundles (`branchline-provision.blp`): a [`BundlePayload`] as JSON
//! in the signed envelope of [`crate::envelope`] (magic `BLPROV`).
//!
//! [`open`] verifies the envelope against the trusted keys, then parses and validates
//! the JSON, then decodes and verifies the enrollment token inside it. Only a
//! [`Bundle`] that came out of [`open`] has a payload to apply; expiry, serial,
//! revocation and replay are checked by [`crate::check::check`].

use ed25519_dalek::SigningKey;

use crate::envelope::{self, Kind};
use crate::error::{Artifact, Error, Result};
use crate::keys::{KeyId, TrustedKeys};
use crate::payload::BundlePayload;
use crate::token::{self, Token};

/// The file name the box looks for at the top of a stick.
pub const FILE_NAME: &str = "branchline-provision.blp";

/// A bundle whose signatures verified and whose payload is valid.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The key that signed the bundle.
    pub key_id: KeyId,
    /// The payload.
    pub payload: BundlePayload,
    /// The decoded enrollment token from the payload.
    pub token: Token,
}

/// Validates `payload` and signs it into bundle bytes. The token inside must verify
/// with `key` (a bundle never carries a token the box would refuse).
pub fn make(payload: &BundlePayload, key: &SigningKey) -> Result<Vec<u8>> {
    payload.validate()?;
    let own = TrustedKeys::new([key.verifying_key()])?;
    token::decode(&payload.token, &own)?;
    let json = serde_json::to_vec_pretty(payload).map_err(|e| Error::Payload {
        what: Artifact::Bundle,
        reason: e.to_string(),
    })?;
    envelope::seal(Kind::Bundle, &json, key)
}

/// Verifies and decodes bundle bytes.
pub fn open(bytes: &[u8], keys: &TrustedKeys) -> Result<Bundle> {
    let opened = envelope::open(Kind::Bundle, bytes, keys)?;
    let bad = |reason: String| Error::Payload {
        what: Artifact::Bundle,
        reason,
    };
    let payload: BundlePayload =
        serde_json::from_slice(opened.payload).map_err(|e| bad(e.to_string()))?;
    payload.validate().map_err(|e| bad(e.to_string()))?;
    let token = token::decode(&payload.token, keys)?;
    Ok(Bundle {
        key_id: opened.key_id,
        payload,
        token,
    })
}
