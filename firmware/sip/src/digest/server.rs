//! The registrar's side of digest authentication.

use std::collections::BTreeMap;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::params::{parse_credentials, push_quoted};
use super::{compute_response, Algorithm, AuthError, ResponseInput};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC kept in a nonce (128 bits).
const MAC_LEN: usize = 16;
/// Hex length of a nonce: issue time (8 bytes), counter (8 bytes), MAC.
const NONCE_HEX_LEN: usize = 2 * (8 + 8 + MAC_LEN);
/// Domain separation for the nonce MAC.
const NONCE_CONTEXT: &[u8] = b"branchline digest nonce v1";

/// Configuration of a [`DigestServer`].
#[derive(Clone)]
pub struct DigestServerConfig {
    /// The realm (usually the SIP domain of the box).
    pub realm: String,
    /// Secret key for the nonce MAC; random per boot is fine (outstanding nonces then
    /// become invalid and clients are simply challenged again).
    pub key: [u8; 32],
    /// How long a nonce is accepted after it was issued, in milliseconds.
    pub nonce_lifetime_ms: u64,
    /// Algorithms offered and accepted, in the order challenges are sent. Phones take
    /// the first one they support, so the strongest comes first and MD5 last as the
    /// fallback for older phones (RFC 8760 2.4).
    pub algorithms: Vec<Algorithm>,
    /// Most nonces whose last `nc` is remembered; the oldest is evicted beyond that
    /// (and then reported stale, never accepted again).
    pub max_tracked_nonces: usize,
}

impl std::fmt::Debug for DigestServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServerConfig")
            .field("realm", &self.realm)
            .field("key", &"<redacted>")
            .field("nonce_lifetime_ms", &self.nonce_lifetime_ms)
            .field("algorithms", &self.algorithms)
            .field("max_tracked_nonces", &self.max_tracked_nonces)
            .finish()
    }
}

impl DigestServerConfig {
    /// A configuration with defaults: 5 minute nonces, SHA-256 then MD5, 4096
    /// tracked nonces.
    pub fn new(realm: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            realm: realm.into(),
            key,
            nonce_lifetime_ms: 300_000,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            max_tracked_nonces: 4096,
        }
    }
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated username.
    pub username: String,
    /// The algorithm the client used.
    pub algorithm: Algorithm,
    /// The nonce count accepted.
    pub nc: u32,
}

/// Identity of an issued nonce: (issue time in ms, counter).
type NonceId = (u64, u64);

/// Issues challenges and verifies credentials (sans-IO: time comes in as `now_ms`, a
/// monotonic millisecond count the caller owns).
#[derive(Debug)]
pub struct DigestServer {
    config: DigestServerConfig,
    /// Distinguishes nonces issued in the same millisecond.
    counter: u64,
    /// Last accepted `nc` per nonce in use, ordered by issue time for eviction.
    seen: BTreeMap<NonceId, u32>,
    /// Nonces at or below this id that are not in `seen` were evicted: stale.
    evicted_up_to: Option<NonceId>,
}

impl DigestServer {
    /// A server with `config`.
    pub fn new(config: DigestServerConfig) -> Self {
        Self {
            config,
            counter: 0,
            seen: BTreeMap::new(),
            evicted_up_to: None,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.config.realm
    }

    /// Number of nonces whose replay state is held.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    fn mac(&self, ts: u64, ctr: u64) -> HmacSha256 {
        // HMAC pads a key shorter than the hash block (64 bytes) with zeros, so the
        // 32-byte key padded here gives the same MAC, through the infallible `new`.
        let mut block_key = [0u8; 64];
        for (dst, src) in block_key.iter_mut().zip(self.config.key) {
            *dst = src;
        }
        let mut mac = <HmacSha256 as KeyInit>::new(&block_key.into());
        mac.update(NONCE_CONTEXT);
        mac.update(&(self.config.realm.len() as u64).to_be_bytes());
        mac.update(self.config.realm.as_bytes());
        mac.update(&ts.to_be_bytes());
        mac.update(&ctr.to_be_bytes());
        mac
    }

    fn new_nonce(&mut self, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        let tag = self.mac(now_ms, self.counter).finalize().into_bytes();
        let mut raw = Vec::with_capacity(16 + MAC_LEN);
        raw.extend_from_slice(&now_ms.to_be_bytes());
        raw.extend_from_slice(&self.counter.to_be_bytes());
        raw.extend_from_slice(tag.get(..MAC_LEN).unwrap_or_default());
        hex::encode(raw)
    }

    /// Checks a nonce's MAC and returns its id.
    fn open_nonce(&self, nonce: &str) -> Result<NonceId, AuthError> {
        if nonce.len() != NONCE_HEX_LEN {
            return Err(AuthError::InvalidNonce);
        }
        let raw = hex::decode(nonce).map_err(|_| AuthError::InvalidNonce)?;
        let (ts, rest) = raw.split_at_checked(8).ok_or(AuthError::InvalidNonce)?;
        let (ctr, tag) = rest.split_at_checked(8).ok_or(AuthError::InvalidNonce)?;
        let ts = u64::from_be_bytes(ts.try_into().map_err(|_| AuthError::InvalidNonce)?);
        let ctr = u64::from_be_bytes(ctr.try_into().map_err(|_| AuthError::InvalidNonce)?);
        self.mac(ts, ctr)
            .verify_truncated_left(tag)
            .map_err(|_| AuthError::InvalidNonce)?;
        Ok((ts, ctr))
    }

    fn write_challenge(&mut self, now_ms: u64, algorithm: Algorithm, stale: bool) -> String {
        let nonce = self.new_nonce(now_ms);
        let mut out = String::with_capacity(160);
        out.push_str("Digest realm=");
        push_quoted(&mut out, &self.config.realm);
        out.push_str(", nonce=\"");
        out.push_str(&nonce);
        out.push_str("\", algorithm=");
        out.push_str(algorithm.as_str());
        out.push_str(", qop=\"auth\"");
        if stale {
            out.push_str(", stale=true");
        }
        out
    }

    /// A `WWW-Authenticate` / `Proxy-Authenticate` value with a fresh nonce.
    pub fn challenge(&mut self, now_ms: u64, algorithm: Algorithm) -> String {
        self.write_challenge(now_ms, algorithm, false)
    }

    /// Like [`Self::challenge`] with `stale=true`, for a request that failed with
    /// [`AuthError::StaleNonce`]: the phone retries without asking the user.
    pub fn stale_challenge(&mut self, now_ms: u64, algorithm: Algorithm) -> String {
        self.write_challenge(now_ms, algorithm, true)
    }

    /// One challenge per configured algorithm, in the configured order (one header
    /// each in the 401/407).
    pub fn challenges(&mut self, now_ms: u64, stale: bool) -> Vec<String> {
        let algorithms = self.config.algorithms.clone();
        algorithms
            .into_iter()
            .map(|a| self.write_challenge(now_ms, a, stale))
            .collect()
    }

    fn forget_expired(&mut self, now_ms: u64) {
        let lifetime = self.config.nonce_lifetime_ms;
        while let Some((&(ts, _), _)) = self.seen.first_key_value() {
            if ts.saturating_add(lifetime) >= now_ms {
                break;
            }
            self.seen.pop_first();
        }
    }

    /// Verifies an `Authorization` / `Proxy-Authorization` value for a request with
    /// `method` and `request_uri`. `password_of` returns the user's password.
    ///
    /// State changes only on success (the accepted `nc` is recorded), so failed
    /// attempts cannot lock a legitimate client out of its nonce.
    pub fn verify(
        &mut self,
        now_ms: u64,
        method: &str,
        request_uri: &str,
        authorization: &str,
        password_of: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Verified, AuthError> {
        let cred = parse_credentials(authorization)?;
        if cred.realm != self.config.realm {
            return Err(AuthError::WrongRealm { realm: cred.realm });
        }
        let id = self.open_nonce(&cred.nonce)?;
        if now_ms.saturating_sub(id.0) > self.config.nonce_lifetime_ms {
            return Err(AuthError::StaleNonce);
        }
        let algorithm = Algorithm::from_token(&cred.algorithm)
            .filter(|a| self.config.algorithms.contains(a))
            .ok_or_else(|| AuthError::UnsupportedAlgorithm {
                algorithm: cred.algorithm.clone(),
            })?;
        match cred.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {}
            other => {
                return Err(AuthError::UnsupportedQop {
                    qop: other.unwrap_or_default().to_owned(),
                })
            }
        }
        let cnonce = cred
            .cnonce
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::MissingParam { name: "cnonce" })?;
        let nc_text = cred
            .nc
            .as_deref()
            .ok_or(AuthError::MissingParam { name: "nc" })?;
        if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Malformed {
                reason: "nc is not 8 hex digits",
            });
        }
        let nc = u32::from_str_radix(nc_text, 16).map_err(|_| AuthError::Malformed {
            reason: "nc is not 8 hex digits",
        })?;
        if cred.uri != request_uri {
            return Err(AuthError::UriMismatch { uri: cred.uri });
        }

        self.forget_expired(now_ms);
        match self.seen.get(&id) {
            Some(&last) if nc <= last => return Err(AuthError::Replay { nc }),
            Some(_) => {}
            None if self.evicted_up_to.is_some_and(|floor| id <= floor) => {
                return Err(AuthError::StaleNonce)
            }
            None if nc == 0 => return Err(AuthError::Replay { nc }),
            None => {}
        }

        let password = password_of(&cred.username).ok_or_else(|| AuthError::UnknownUser {
            username: cred.username.clone(),
        })?;
        let expected = compute_response(&ResponseInput {
            algorithm,
            username: &cred.username,
            realm: &self.config.realm,
            password: &password,
            method,
            uri: &cred.uri,
            nonce: &cred.nonce,
            qop_auth: Some((cnonce, nc_text)),
        });
        let given = cred.response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(AuthError::WrongResponse {
                username: cred.username,
            });
        }

        self.seen.insert(id, nc);
        while self.seen.len() > self.config.max_tracked_nonces.max(1) {
            if let Some((evicted, _)) = self.seen.pop_first() {
                self.evicted_up_to = Some(self.evicted_up_to.map_or(evicted, |f| f.max(evicted)));
            }
        }
        Ok(Verified {
            username: cred.username,
            algorithm,
            nc,
        })
    }
}
