//! The checks after the signature: expiry, serial binding, revocation and replay.
//!
//! [`check`] is pure apart from the [`UsedTokens`] lookup, takes the box's clock as
//! `now`, and changes nothing: the box calls [`UsedTokens::mark_used`] in the same
//! transaction that applies the settings (all or nothing), so a refused or failed
//! apply leaves the token usable. The box implements [`UsedTokens`] on its SQLite
//! store; HQ on its own store; [`MemoryUsedTokens`] is for tests and the CLI.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::payload::{BoxSerial, Enrollment, TokenId};
use crate::revocation::RevocationList;

/// Error type of a [`UsedTokens`] store.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Remembers which token ids were used, so a token works once.
pub trait UsedTokens {
    /// Whether `id` was used.
    fn is_used(&self, id: &TokenId) -> std::result::Result<bool, StoreError>;
    /// Records `id` as used at `now` (Unix seconds).
    fn mark_used(&mut self, id: &TokenId, now: u64) -> std::result::Result<(), StoreError>;
}

/// An in-memory [`UsedTokens`].
#[derive(Debug, Clone, Default)]
pub struct MemoryUsedTokens {
    used: HashMap<TokenId, u64>,
}

impl UsedTokens for MemoryUsedTokens {
    fn is_used(&self, id: &TokenId) -> std::result::Result<bool, StoreError> {
        Ok(self.used.contains_key(id))
    }

    fn mark_used(&mut self, id: &TokenId, now: u64) -> std::result::Result<(), StoreError> {
        self.used.entry(*id).or_insert(now);
        Ok(())
    }
}

/// Who is checking, and when.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    /// This box's serial (at HQ: the serial in the enrolling box's CSR).
    pub serial: &'a BoxSerial,
    /// The clock, Unix seconds.
    pub now: u64,
    /// The newest revocation list known.
    pub revoked: &'a RevocationList,
}

/// Checks, in order: not expired (`now < expires_at`), this serial allowed, not
/// revoked, not used. Each failure is its own [`Error`] variant.
pub fn check(enrollment: &Enrollment, ctx: &CheckContext<'_>, used: &dyn UsedTokens) -> Result<()> {
    let token_id = enrollment.token_id;
    if ctx.now >= enrollment.expires_at {
        return Err(Error::Expired {
            token_id,
            expires_at: enrollment.expires_at,
            now: ctx.now,
        });
    }
    if !enrollment.allows(ctx.serial) {
        return Err(Error::WrongSerial {
            token_id,
            serial: ctx.serial.to_string(),
            allowed: enrollment
                .serials
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(r) = ctx.revoked.find(&token_id) {
        return Err(Error::Revoked {
            token_id,
            revoked_at: r.revoked_at,
            reason: r.reason.clone(),
        });
    }
    if used.is_used(&token_id).map_err(Error::UsedTokens)? {
        return Err(Error::Replayed(token_id));
    }
    Ok(())
}
