//! The compact QR enrollment token.
//!
//! Binary form (before base45), integers big-endian:
//!
//! ```text
//! offset  size  field
//!      0     1  token format version: 1
//!      1     4  key id (first 4 bytes of sha256 of the signer's public key)
//!      5     n  body: postcard encoding of TokenBody (below)
//!    5+n    64  ed25519 signature over bytes [0, 5+n)
//! ```
//!
//! `TokenBody` in postcard, field by field: token id (8 raw bytes), expiry (Unix
//! seconds, LEB128 varint), site (varint length + UTF-8), serials (varint count, then
//! each as varint length + UTF-8), HQ URL without `https://` (varint length + UTF-8),
//! CA pin (first 16 bytes of the SPKI sha256, raw). Postcard because it has no field
//! names or tags: a typical token body is ~60 bytes, and the 64-byte signature is
//! already more than half a version-10 QR code at ECC level Q. The body is versioned by
//! the header byte, not by postcard.
//!
//! Text form: `BL1:` then the base45 of the binary form ([`crate::base45`]), only
//! characters of QR alphanumeric mode. At most [`MAX_BINARY_LEN`] bytes.
//!
//! [`decode`] checks the prefix, base45, size, version, key id and signature, in that
//! order, before postcard sees the body.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::base45;
use crate::error::{Artifact, Error, Result};
use crate::keys::{KeyId, TrustedKeys};
use crate::payload::{BoxSerial, CaPin, Enrollment, HqUrl, SiteId, TokenId, TOKEN_ID_LEN};

/// Text prefix.
pub const PREFIX: &str = "BL1:";
/// Token format version (binary header).
pub const VERSION: u8 = 1;
/// Largest binary token accepted (a version-40 QR code at ECC Q holds ~1.6 kB; a token
/// this size is already unscannable from a phone).
pub const MAX_BINARY_LEN: usize = 600;
const HEADER_LEN: usize = 5;
const SIGNATURE_LEN: usize = 64;

#[derive(Serialize, Deserialize)]
struct TokenBody {
    token_id: [u8; TOKEN_ID_LEN],
    expires_at: u64,
    site: String,
    serials: Vec<String>,
    hq: String,
    ca_pin: [u8; CaPin::SHORT_LEN],
}

/// A token whose signature verified, with its decoded enrollment data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The key that signed it.
    pub key_id: KeyId,
    /// What it says (its CA pin is the 16-byte short form).
    pub enrollment: Enrollment,
    /// The token text, exactly as signed: what the box presents to HQ.
    pub text: String,
}

/// Signs `enrollment` into a token (the CA pin is shortened to 16 bytes).
pub fn encode(enrollment: &Enrollment, key: &SigningKey) -> Result<String> {
    enrollment.validate()?;
    let body = TokenBody {
        token_id: enrollment.token_id.0,
        expires_at: enrollment.expires_at,
        site: enrollment.site.to_string(),
        serials: enrollment.serials.iter().map(ToString::to_string).collect(),
        hq: enrollment.hq_url.without_scheme().to_owned(),
        ca_pin: enrollment.ca_pin.as_bytes()[..CaPin::SHORT_LEN]
            .try_into()
            .expect("a pin has at least 16 bytes"),
    };
    let mut bytes = vec![VERSION];
    bytes.extend_from_slice(&KeyId::of(&key.verifying_key()).0);
    bytes.extend_from_slice(
        &postcard::to_allocvec(&body).map_err(|e| Error::invalid("token", e.to_string()))?,
    );
    let signature = key.sign(&bytes);
    bytes.extend_from_slice(&signature.to_bytes());
    if bytes.len() > MAX_BINARY_LEN {
        return Err(Error::TooLarge {
            what: Artifact::Token,
            len: bytes.len(),
            max: MAX_BINARY_LEN,
        });
    }
    Ok(format!("{PREFIX}{}", base45::encode(&bytes)))
}

/// Length in bytes of a token's binary form, from its text (for size reports).
pub fn binary_len(text: &str) -> Result<usize> {
    Ok(unwrap_text(text)?.len())
}

fn unwrap_text(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if text.len() > PREFIX.len() + MAX_BINARY_LEN.div_ceil(2) * 3 {
        return Err(Error::TooLarge {
            what: Artifact::Token,
            len: text.len(),
            max: PREFIX.len() + MAX_BINARY_LEN.div_ceil(2) * 3,
        });
    }
    let rest = text.strip_prefix(PREFIX).ok_or_else(|| {
        Error::TokenText(format!(
            "does not start with {PREFIX:?} (starts with {:?})",
            text.chars().take(PREFIX.len()).collect::<String>()
        ))
    })?;
    base45::decode(rest).map_err(Error::TokenText)
}

/// Verifies a token's text and decodes it. Expiry, serial, revocation and replay are
/// [`crate::check`]'s job.
pub fn decode(text: &str, keys: &TrustedKeys) -> Result<Token> {
    let bytes = unwrap_text(text)?;
    let key_id = verify(&bytes, keys)?;
    let body = &bytes[HEADER_LEN..bytes.len() - SIGNATURE_LEN];
    let bad = |reason: String| Error::Payload {
        what: Artifact::Token,
        reason,
    };
    let (body, rest): (TokenBody, _) =
        postcard::take_from_bytes(body).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} byte(s) after the body", rest.len())));
    }
    let field = |e: Error| bad(e.to_string());
    let enrollment = Enrollment {
        token_id: TokenId(body.token_id),
        site: body.site.parse::<SiteId>().map_err(field)?,
        serials: body
            .serials
            .iter()
            .map(|s| s.parse::<BoxSerial>())
            .collect::<Result<_>>()
            .map_err(field)?,
        hq_url: format!("https://{}", body.hq)
            .parse::<HqUrl>()
            .map_err(field)?,
        ca_pin: CaPin::new(&body.ca_pin).map_err(field)?,
        expires_at: body.expires_at,
    };
    enrollment.validate().map_err(field)?;
    Ok(Token {
        key_id,
        enrollment,
        text: text.trim().to_owned(),
    })
}

/// Checks size, version, key id and signature of a binary token; returns the key id.
pub fn verify(bytes: &[u8], keys: &TrustedKeys) -> Result<KeyId> {
    let what = Artifact::Token;
    if bytes.len() > MAX_BINARY_LEN {
        return Err(Error::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_BINARY_LEN,
        });
    }
    if let Some(&version) = bytes.first() {
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                what,
                version,
                supported: VERSION,
            });
        }
    }
    // The smallest body postcard can produce for a valid token is well over one byte;
    // anything shorter than header + signature + 1 is cut off.
    if bytes.len() <= HEADER_LEN + SIGNATURE_LEN {
        return Err(Error::Truncated {
            what,
            need: HEADER_LEN + SIGNATURE_LEN + 1,
            have: bytes.len(),
        });
    }
    let key_id = KeyId([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let key = keys.get(key_id).ok_or_else(|| Error::UnknownKey {
        what,
        key_id,
        trusted: keys.ids(),
    })?;
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let signature =
        Signature::from_slice(signature).map_err(|_| Error::BadSignature { what, key_id })?;
    key.verify_strict(signed, &signature)
        .map_err(|_| Error::BadSignature { what, key_id })?;
    Ok(key_id)
}

/// The binary form of a token's text (for tests and fuzzing).
pub fn to_binary(text: &str) -> Result<Vec<u8>> {
    unwrap_text(text)
}

/// The text form of binary token bytes (for tests and fuzzing).
pub fn to_text(bytes: &[u8]) -> String {
    format!("{PREFIX}{}", base45::encode(bytes))
}
