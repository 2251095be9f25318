//! The signed binary envelope shared by USB bundles (`.blp`) and revocation lists
//! (`.blr`). All integers are big-endian:
//!
//! ```text
//! offset  size  field
//!      0     6  magic: "BLPROV" (bundle) or "BLPREV" (revocation list)
//!      6     1  format version: 1
//!      7     1  reserved: 0
//!      8     4  key id: first 4 bytes of sha256(signer's ed25519 public key)
//!     12     4  payload length N, at most MAX_PAYLOAD
//!     16     N  payload: UTF-8 JSON
//!   16+N    64  ed25519 signature over bytes [0, 16+N)
//! ```
//!
//! Why a binary envelope around JSON rather than a signed JSON document: the signature
//! covers exact bytes, so [`open`] checks the length, the key id and the signature
//! before a JSON parser ever sees the payload (no canonicalisation, no parser exposed
//! to unauthenticated input), and the header names the signing key so a box can trust
//! several keys during a rotation. JSON inside, because a bundle is small, an operator
//! can read it with `branch-prov inspect`, and serde_json is already in the image.
//! The signature covers the header too, so the key id, version and length cannot be
//! swapped. Nothing may follow the signature.

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::error::{Artifact, Error, Result};
use crate::keys::{KeyId, TrustedKeys};

/// Header length.
pub const HEADER_LEN: usize = 16;
/// Signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest envelope accepted.
pub const MAX_LEN: usize = HEADER_LEN + MAX_PAYLOAD + SIGNATURE_LEN;
/// Envelope format version.
pub const VERSION: u8 = 1;

/// Which envelope: names the magic and the artifact for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A provisioning bundle.
    Bundle,
    /// A revocation list.
    RevocationList,
}

impl Kind {
    /// The 6-byte magic.
    pub fn magic(self) -> &'static [u8; 6] {
        match self {
            Kind::Bundle => b"BLPROV",
            Kind::RevocationList => b"BLPREV",
        }
    }

    fn artifact(self) -> Artifact {
        match self {
            Kind::Bundle => Artifact::Bundle,
            Kind::RevocationList => Artifact::RevocationList,
        }
    }
}

/// Signs `payload` into an envelope.
pub fn seal(kind: Kind, payload: &[u8], key: &SigningKey) -> Result<Vec<u8>> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::TooLarge {
            what: kind.artifact(),
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
    out.extend_from_slice(kind.magic());
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&KeyId::of(&key.verifying_key()).0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let signature = key.sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// An envelope whose signature verified.
#[derive(Debug, Clone, Copy)]
pub struct Opened<'a> {
    /// The key that signed it.
    pub key_id: KeyId,
    /// The signed payload.
    pub payload: &'a [u8],
}

/// Checks the envelope - size, magic, version, length, key, signature, in that
/// order - and returns the payload. Nothing in the payload is looked at.
pub fn open<'a>(kind: Kind, bytes: &'a [u8], keys: &TrustedKeys) -> Result<Opened<'a>> {
    let what = kind.artifact();
    if bytes.len() > MAX_LEN {
        return Err(Error::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_LEN,
        });
    }
    let magic = kind.magic();
    let seen = &bytes[..bytes.len().min(magic.len())];
    if seen != &magic[..seen.len()] || bytes.is_empty() {
        return Err(Error::BadMagic {
            what,
            found: seen.escape_ascii().to_string(),
        });
    }
    if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
        return Err(Error::Truncated {
            what,
            need: HEADER_LEN + SIGNATURE_LEN,
            have: bytes.len(),
        });
    }
    if bytes[6] != VERSION {
        return Err(Error::UnsupportedVersion {
            what,
            version: bytes[6],
            supported: VERSION,
        });
    }
    if bytes[7] != 0 {
        return Err(Error::Reserved {
            what,
            value: bytes[7],
        });
    }
    let key_id = KeyId([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let len = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(Error::TooLarge {
            what,
            len,
            max: MAX_PAYLOAD,
        });
    }
    let need = HEADER_LEN + len + SIGNATURE_LEN;
    if bytes.len() < need {
        return Err(Error::Truncated {
            what,
            need,
            have: bytes.len(),
        });
    }
    if bytes.len() > need {
        return Err(Error::TrailingBytes {
            what,
            extra: bytes.len() - need,
        });
    }
    let key = keys.get(key_id).ok_or_else(|| Error::UnknownKey {
        what,
        key_id,
        trusted: keys.ids(),
    })?;
    let (signed, signature) = bytes.split_at(HEADER_LEN + len);
    let signature =
        Signature::from_slice(signature).map_err(|_| Error::BadSignature { what, key_id })?;
    key.verify_strict(signed, &signature)
        .map_err(|_| Error::BadSignature { what, key_id })?;
    Ok(Opened {
        key_id,
        payload: &signed[HEADER_LEN..],
    })
}
