//! HTTP Digest authentication for SIP (RFC 7616 with the RFC 8760 algorithm names;
//! RFC 2617 `MD5` compatibility), `qop=auth` only.
//!
//! # Submodules and roles
//!
//! - `params`: reading and writing `Digest` challenge / credential header values.
//! - `server`: [`DigestServer`], the registrar's side: self-validating nonces
//!   (HMAC-SHA256 over issue time and a counter, so no per-challenge state), expiry
//!   reported as [`AuthError::StaleNonce`] (answer 401 with `stale=true`), replay
//!   protection on `nc` per nonce in a bounded table, constant-time comparison.
//! - `client`: [`DigestClient`], the trunk's side: answers a 401/407 challenge with
//!   `qop=auth`, a cnonce from an injected seed, and an incrementing `nc`.
//!
//! Hand-written rather than taken from a crate: rsip 0.4 has a digest generator but no
//! server side, no nonce handling and no `-sess`/`qop` negotiation, and the general
//! HTTP digest crates hard-code HTTP semantics and read the clock themselves. The
//! hashing is the `md-5` and `sha2` crates'; HMAC is the `hmac` crate's.
//!
//! # Limits
//!
//! - `qop=auth-int` is not supported (no SIP phone the box serves uses it); a
//!   challenge offering only `auth-int` gives [`AuthError::UnsupportedQop`].
//! - `userhash=true` and the `username*` (RFC 5987) form are not supported.
//! - The server requires `qop=auth`: RFC 2069-style credentials without `qop` carry no
//!   `nc` and could be replayed within the nonce lifetime.

mod client;
mod params;
mod server;
#[cfg(test)]
mod tests;

use md5::Md5;
use sha2::{Sha256, Sha512_256};

pub use client::DigestClient;
pub use params::{parse_challenge, parse_credentials, Challenge, Credentials};
pub use server::{DigestServer, DigestServerConfig, Verified};

/// Digest hash algorithms (RFC 7616 3.3 / RFC 8760 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617; the default when a header names none).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// The token written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Reads an algorithm token (case-insensitive).
    pub fn from_token(token: &str) -> Option<Self> {
        [
            Self::Md5,
            Self::Md5Sess,
            Self::Sha256,
            Self::Sha256Sess,
            Self::Sha512_256,
            Self::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// Is this a `-sess` variant (HA1 also covers nonce and cnonce)?
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    /// Client preference: stronger first (RFC 8760 3: SHA-512-256, SHA-256, MD5).
    fn strength(self) -> u8 {
        match self {
            Self::Sha512_256 | Self::Sha512_256Sess => 3,
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Md5 | Self::Md5Sess => 1,
        }
    }

    /// Lower-case hex of the hash of `parts` joined with `:`.
    fn hash_hex(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex::encode(d.finalize())
        }
        match self {
            Self::Md5 | Self::Md5Sess => run::<Md5>(parts),
            Self::Sha256 | Self::Sha256Sess => run::<Sha256>(parts),
            Self::Sha512_256 | Self::Sha512_256Sess => run::<Sha512_256>(parts),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a digest exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header value does not follow the `Digest` auth-param grammar.
    #[error("malformed digest header: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A required parameter is absent.
    #[error("digest parameter {name} is missing")]
    MissingParam {
        /// Parameter name.
        name: &'static str,
    },
    /// The scheme is not `Digest`.
    #[error("authentication scheme {scheme:?} is not Digest")]
    UnsupportedScheme {
        /// The scheme as written.
        scheme: String,
    },
    /// An algorithm this implementation (or this server's configuration) does not accept.
    #[error("digest algorithm {algorithm:?} is not supported")]
    UnsupportedAlgorithm {
        /// The algorithm as written.
        algorithm: String,
    },
    /// No usable `qop` (only `auth` is supported; the server requires it).
    #[error("qop {qop:?} is not supported (only auth)")]
    UnsupportedQop {
        /// The qop as written (empty when absent).
        qop: String,
    },
    /// The realm is not this server's.
    #[error("realm {realm:?} is not this server's")]
    WrongRealm {
        /// The realm as written.
        realm: String,
    },
    /// The `uri` parameter differs from the Request-URI.
    #[error("digest uri {uri:?} does not match the Request-URI")]
    UriMismatch {
        /// The uri as written.
        uri: String,
    },
    /// The nonce was not issued by this server (bad format or MAC).
    #[error("nonce was not issued by this server")]
    InvalidNonce,
    /// The nonce was issued by this server but has expired (or its replay state was
    /// evicted): answer 401 with `stale=true`.
    #[error("nonce is stale")]
    StaleNonce,
    /// `nc` is malformed or not greater than the last one seen for this nonce.
    #[error("nonce count {nc:#010x} replayed or out of order")]
    Replay {
        /// The nonce count received.
        nc: u32,
    },
    /// The user is not known.
    #[error("unknown user {username:?}")]
    UnknownUser {
        /// The username as written.
        username: String,
    },
    /// The response does not match (wrong password or tampered parameters).
    #[error("digest response mismatch for user {username:?}")]
    WrongResponse {
        /// The username as written.
        username: String,
    },
}

/// Inputs of the `response` computation (RFC 7616 3.4.1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `(cnonce, nc as 8 hex digits)` when `qop=auth`; `None` for RFC 2069 style.
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// The `response` value, lower-case hex.
pub(crate) fn compute_response(i: &ResponseInput<'_>) -> String {
    let a = i.algorithm;
    let mut ha1 = a.hash_hex(&[
        i.username.as_bytes(),
        i.realm.as_bytes(),
        i.password.as_bytes(),
    ]);
    if a.is_session() {
        let cnonce = i.qop_auth.map_or("", |(c, _)| c);
        ha1 = a.hash_hex(&[ha1.as_bytes(), i.nonce.as_bytes(), cnonce.as_bytes()]);
    }
    let ha2 = a.hash_hex(&[i.method.as_bytes(), i.uri.as_bytes()]);
    match i.qop_auth {
        Some((cnonce, nc)) => a.hash_hex(&[
            ha1.as_bytes(),
            i.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]),
        None => a.hash_hex(&[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

#[cfg(test)]
mod vectors {
    use super::*;

    /// RFC 7616 3.9.1.
    #[test]
    fn rfc7616_worked_example() {
        let mut input = ResponseInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop_auth: Some(("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "00000001")),
        };
        assert_eq!(compute_response(&input), "8ca523f5e9506fed4657c9700eebdbec");
        input.algorithm = Algorithm::Sha256;
        assert_eq!(
            compute_response(&input),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// RFC 2617 3.5.
    #[test]
    fn rfc2617_example() {
        let input = ResponseInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop_auth: Some(("0a4f113b", "00000001")),
        };
        assert_eq!(compute_response(&input), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn algorithm_tokens() {
        for a in [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ] {
            assert_eq!(Algorithm::from_token(a.as_str()), Some(a));
        }
        assert_eq!(Algorithm::from_token("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_token("SHA-1"), None);
    }
}
