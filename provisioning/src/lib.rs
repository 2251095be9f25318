//! Branchline provisioning: signed USB bundles, compact QR enrollment tokens, their
//! checks, QR rendering and decoding, and the `branch-prov` CLI.
//!
//! An installer provisions a box with a USB stick holding a bundle, or with a QR
//! token (pasted, opened as a link, or an uploaded photo). Both carry the same
//! enrollment data, signed by HQ's provisioning key (ed25519); the box trusts the
//! public keys in its image.
//!
//! Modules:
//! - [`payload`]: the versioned payload types and their validation (the secrecy
//!   model is there: signed, not encrypted);
//! - [`token`]: the QR token, `BL1:` + base45 of version, key id, postcard body and
//!   signature, byte by byte in its doc;
//! - [`envelope`]: the signed binary envelope of bundles and revocation lists;
//! - [`bundle`]: USB bundles (`branchline-provision.blp`: JSON payload in the
//!   envelope, with the token inside);
//! - [`claim`]: the box's claim code (serial + HMAC of a per-box secret) and the
//!   text of its claim QR;
//! - [`check`]: expiry, serial binding, revocation and replay, with the
//!   [`check::UsedTokens`] store the box implements;
//! - [`revocation`]: the signed revocation list (`branchline-revoked.blr`);
//! - [`keys`]: key files, [`keys::KeyId`] and the [`keys::TrustedKeys`] set;
//! - [`site`]: the TOML site description HQ operators write;
//! - [`qr`]: QR rendering (PNG, SVG, terminal) and decoding (rqrr);
//! - [`photo`]: a PNG or JPEG photo as greyscale for the QR reader (without `image`);
//! - [`base45`]: RFC 9285;
//! - [`time`]: Unix-second helpers;
//! - [`error`]: the crate's error type.
//!
//! Verification order, for every artifact: size and framing, key id, ed25519
//! signature (`verify_strict`), and only then the payload decoder; then
//! [`check::check`] (expiry, serial, revocation, replay). Any failure is its own
//! [`Error`] variant and nothing is applied.
//!
//! Threat model, in short: an attacker who can write to the stick or show the box a
//! QR code cannot make it accept anything HQ did not sign (tampering, truncation,
//! another key, a stale or replayed token, a token for another box are all refused).
//! Someone who can *read* a bundle or token learns its contents (signed, not
//! encrypted: keep trunk passwords out of bundles, see [`payload`]) and can use the
//! token once, on a box whose serial it names, before it expires or is revoked. Key
//! rotation: artifacts name their key by [`keys::KeyId`]; images trust the old and new
//! keys during a rotation. A compromised provisioning key is revoked by shipping
//! images that no longer trust it.
//!
//! Limits: the box side (USB watcher, applying a bundle, enrollment CSR with HQ,
//! factory reset) lives in `branchd` and `branch-hq` and calls this crate. The link a
//! phone's camera opens is `http://<box>/provisioning/token?t=<token>` with the token
//! percent-encoded (base45 uses space, `+`, `%`, `/` and `:`, which a query string
//! must escape); `branch-prov` does not print such links yet (it does not know the
//! box's address).

#![forbid(unsafe_code)]

pub mod base45;
pub mod bundle;
pub mod check;
pub mod claim;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod payload;
pub mod photo;
pub mod qr;
pub mod revocation;
pub mod site;
pub mod time;
pub mod token;

pub use error::{Error, Result};

#[cfg(test)]
mod tests;
