//! The trunk's side of digest authentication.

use super::params::{parse_challenge, push_quoted, Challenge};
use super::{compute_response, AuthError, ResponseInput};

/// Answers digest challenges for one account (sans-IO: randomness comes from a seed).
///
/// After a 401/407, [`DigestClient::authorize`] (or [`DigestClient::authorize_best`]
/// when the response carries several challenges) gives the `Authorization` /
/// `Proxy-Authorization` value; later requests in the same nonce use
/// [`DigestClient::reauthorize`], which increments `nc`.
pub struct DigestClient {
    username: String,
    password: String,
    /// splitmix64 state for cnonces.
    rng: u64,
    /// The challenge in use and the last `nc` sent with it.
    current: Option<(Challenge, u32)>,
}

impl std::fmt::Debug for DigestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestClient")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl DigestClient {
    /// A client for `username` / `password`; `seed` drives cnonce generation (give a
    /// random one in production, a fixed one in tests).
    pub fn new(username: impl Into<String>, password: impl Into<String>, seed: u64) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            rng: seed,
            current: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Answers one challenge header value for a request with `method` and `uri`.
    pub fn authorize(
        &mut self,
        challenge: &str,
        method: &str,
        uri: &str,
    ) -> Result<String, AuthError> {
        let challenge = parse_challenge(challenge)?;
        self.use_challenge(challenge, method, uri)
    }

    /// Answers the strongest supported challenge among several (one per header of the
    /// 401/407): SHA-512-256, then SHA-256, then MD5, the first of equals. Fails with
    /// the first challenge's error when none is usable.
    pub fn authorize_best(
        &mut self,
        challenges: &[&str],
        method: &str,
        uri: &str,
    ) -> Result<String, AuthError> {
        let mut best: Option<Challenge> = None;
        let mut first_error = None;
        for value in challenges {
            match parse_challenge(value).and_then(|c| usable(&c).map(|()| c)) {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match best {
            Some(c) => self.use_challenge(c, method, uri),
            None => Err(first_error.unwrap_or(AuthError::MissingParam { name: "nonce" })),
        }
    }

    /// Credentials for another request under the last challenge (`nc` + 1), or `None`
    /// when no challenge has been answered yet.
    pub fn reauthorize(&mut self, method: &str, uri: &str) -> Option<String> {
        let (challenge, nc) = self.current.take()?;
        let nc = nc.wrapping_add(1).max(1);
        let value = self.write(&challenge, nc, method, uri);
        self.current = Some((challenge, nc));
        Some(value)
    }

    fn use_challenge(
        &mut self,
        challenge: Challenge,
        method: &str,
        uri: &str,
    ) -> Result<String, AuthError> {
        usable(&challenge)?;
        let nc = match &self.current {
            Some((c, nc)) if c.nonce == challenge.nonce && c.realm == challenge.realm => {
                nc.wrapping_add(1).max(1)
            }
            _ => 1,
        };
        let value = self.write(&challenge, nc, method, uri);
        self.current = Some((challenge, nc));
        Ok(value)
    }

    fn write(&mut self, c: &Challenge, nc: u32, method: &str, uri: &str) -> String {
        let qop_auth = c.qop.iter().any(|q| q == "auth");
        let cnonce = format!("{:016x}{:016x}", self.next_u64(), self.next_u64());
        let nc_text = format!("{nc:08x}");
        let response = compute_response(&ResponseInput {
            algorithm: c.algorithm,
            username: &self.username,
            realm: &c.realm,
            password: &self.password,
            method,
            uri,
            nonce: &c.nonce,
            qop_auth: qop_auth.then_some((cnonce.as_str(), nc_text.as_str())),
        });
        let mut out = String::with_capacity(256);
        out.push_str("Digest username=");
        push_quoted(&mut out, &self.username);
        out.push_str(", realm=");
        push_quoted(&mut out, &c.realm);
        out.push_str(", nonce=");
        push_quoted(&mut out, &c.nonce);
        out.push_str(", uri=");
        push_quoted(&mut out, uri);
        out.push_str(", response=\"");
        out.push_str(&response);
        out.push_str("\", algorithm=");
        out.push_str(c.algorithm.as_str());
        if qop_auth {
            out.push_str(", cnonce=\"");
            out.push_str(&cnonce);
            out.push_str("\", qop=auth, nc=");
            out.push_str(&nc_text);
        }
        if let Some(opaque) = &c.opaque {
            out.push_str(", opaque=");
            push_quoted(&mut out, opaque);
        }
        out
    }
}

/// Can this client answer `c`? (`qop` must offer `auth`, or be absent for RFC 2069
/// servers with a non-session algorithm.)
fn usable(c: &Challenge) -> Result<(), AuthError> {
    let auth = c.qop.iter().any(|q| q == "auth");
    if auth || (c.qop.is_empty() && !c.algorithm.is_session()) {
        Ok(())
    } else {
        Err(AuthError::UnsupportedQop {
            qop: c.qop.join(","),
        })
    }
}
