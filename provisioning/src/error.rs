//! The crate's one error type: every refusal of a bundle, token or revocation list is
//! its own variant, so the box can show (and write to the stick's result file) exactly
//! why, and tests can tell the refusals apart.

use std::fmt;
use std::path::PathBuf;

use crate::keys::KeyId;
use crate::payload::TokenId;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which signed artifact an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// A USB provisioning bundle (`.blp`).
    Bundle,
    /// A QR enrollment token.
    Token,
    /// A revocation list (`.blr`).
    RevocationList,
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Artifact::Bundle => "bundle",
            Artifact::Token => "token",
            Artifact::RevocationList => "revocation list",
        })
    }
}

/// Everything that can go wrong making, reading or checking provisioning artifacts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "create", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("OS random source failed: {0}")]
    Random(String),
    /// A key file is malformed.
    #[error("key file {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Two trusted keys share a key id (the first 4 bytes of their sha256).
    #[error("two trusted keys share key id {0}; remove one")]
    DuplicateKeyId(KeyId),
    /// The input ends before the format says it should.
    #[error("{what} is truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Which artifact.
        what: Artifact,
        /// Bytes the format requires (at least).
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The input is larger than any valid artifact of its kind.
    #[error("{what} is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Which artifact.
        what: Artifact,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input has bytes after the signature.
    #[error("{what} has {extra} unexpected byte(s) after the signature")]
    TrailingBytes {
        /// Which artifact.
        what: Artifact,
        /// How many.
        extra: usize,
    },
    /// The input does not start with the artifact's magic.
    #[error("not a Branchline {what}: {found}")]
    BadMagic {
        /// Which artifact was expected.
        what: Artifact,
        /// What the input starts with (escaped).
        found: String,
    },
    /// The format version is not one this build understands.
    #[error(
        "{what} format version {version} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// Which artifact.
        what: Artifact,
        /// The version found.
        version: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A header field that must be zero is not.
    #[error("{what} header: reserved byte is {value:#04x}, must be 0")]
    Reserved {
        /// Which artifact.
        what: Artifact,
        /// The value found.
        value: u8,
    },
    /// The artifact names a signing key the box does not trust.
    #[error("{what} is signed with key {key_id}, which is not among the trusted keys ({trusted})")]
    UnknownKey {
        /// Which artifact.
        what: Artifact,
        /// The key id in the header.
        key_id: KeyId,
        /// Ids of the keys that are trusted.
        trusted: String,
    },
    /// The signature does not verify: the artifact was altered or not signed by that key.
    #[error(
        "{what} signature does not verify with key {key_id}: altered or signed by another key"
    )]
    BadSignature {
        /// Which artifact.
        what: Artifact,
        /// The key it was checked against.
        key_id: KeyId,
    },
    /// The signature verifies but the signed payload cannot be decoded (a version
    /// mismatch between the signer and this build).
    #[error("{what} payload is signed but not understood: {reason}")]
    Payload {
        /// Which artifact.
        what: Artifact,
        /// Decoder's message.
        reason: String,
    },
    /// The enrollment token has expired.
    #[error("token {token_id} expired at {} (now {})", crate::time::rfc3339(*expires_at), crate::time::rfc3339(*now))]
    Expired {
        /// The token.
        token_id: TokenId,
        /// Its expiry, Unix seconds.
        expires_at: u64,
        /// The box's clock, Unix seconds.
        now: u64,
    },
    /// The token is bound to other boxes.
    #[error("token {token_id} is for box(es) {allowed}, not this box ({serial})")]
    WrongSerial {
        /// The token.
        token_id: TokenId,
        /// This box's serial.
        serial: String,
        /// The serials the token allows.
        allowed: String,
    },
    /// The token was already used on this box (or at HQ).
    #[error("token {0} was already used")]
    Replayed(TokenId),
    /// The token is on the revocation list.
    #[error("token {token_id} was revoked at {}{}", crate::time::rfc3339(*revoked_at), if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Revoked {
        /// The token.
        token_id: TokenId,
        /// When, Unix seconds.
        revoked_at: u64,
        /// The operator's reason (may be empty).
        reason: String,
    },
    /// The used-token store failed; nothing was decided.
    #[error("used-token store: {0}")]
    UsedTokens(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A token's text is not base45 or lacks the prefix.
    #[error("token text: {0}")]
    TokenText(String),
    /// A value in a site description or payload is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted field name (`trunk.servers[0]`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A site description cannot be parsed.
    #[error("{}: {message}", path.display())]
    SiteFile {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names line, column and field).
        message: String,
    },
    /// The token does not fit in any QR code at the chosen error-correction level.
    #[error("QR encoding: {0}")]
    QrEncode(String),
    /// No readable QR code was found in an image.
    #[error("no readable QR code in the image{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    QrNotFound {
        /// Why the codes found (if any) could not be read.
        detail: String,
    },
    /// An image could not be decoded or encoded.
    #[error("image: {0}")]
    Image(String),
}

impl Error {
    /// An [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
