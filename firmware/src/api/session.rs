//! Login sessions and per-source-IP login throttling, in memory.
//!
//! Both are plain data over an injected `now_ms`; the API state keeps each behind a
//! `Mutex`. Sessions live only in this process: **a restart of `branchd` logs everyone
//! out** (the box is small and restarts are rare; a persisted session table can come
//! with the web page if that proves annoying).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::rbac::UserId;

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT_MS: i64 = 30 * 60_000;
/// A session ends this long after login, however active.
pub const ABSOLUTE_TIMEOUT_MS: i64 = 12 * 60 * 60_000;
/// Most live sessions kept; at the limit the least recently used one is dropped.
pub const MAX_SESSIONS: usize = 1024;
/// Failed logins one source IP may make within [`THROTTLE_WINDOW_MS`].
pub const MAX_FAILED_LOGINS_PER_IP: usize = 10;
/// The window of [`MAX_FAILED_LOGINS_PER_IP`].
pub const THROTTLE_WINDOW_MS: i64 = 5 * 60_000;

/// One logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user_id: UserId,
    /// Their username (for the audit log).
    pub username: String,
    /// The token every state-changing request must echo in `X-CSRF-Token`.
    pub csrf_token: String,
    /// Whether the user must change their password (as of login, cleared on change).
    pub must_change_password: bool,
    /// Login time.
    pub created_ms: i64,
    /// Last request.
    pub last_seen_ms: i64,
}

/// The live sessions, by session token (the `bl_session` cookie).
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// Starts a session and returns its token (32 random bytes, hex).
    pub fn create(&mut self, mut session: Session) -> Result<String> {
        self.expire(session.created_ms);
        if self.by_token.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(t, _)| t.clone())
            {
                self.by_token.remove(&oldest);
            }
        }
        let token = random_hex("session token")?;
        session.csrf_token = random_hex("csrf token")?;
        self.by_token.insert(token.clone(), session);
        Ok(token)
    }

    /// The live session of `token`, touched at `now_ms`; an expired one is removed.
    pub fn touch(&mut self, token: &str, now_ms: i64) -> Option<Session> {
        let session = self.by_token.get_mut(token)?;
        if !is_live(session, now_ms) {
            self.by_token.remove(token);
            return None;
        }
        session.last_seen_ms = now_ms.max(session.last_seen_ms);
        Some(session.clone())
    }

    /// Updates the must-change flag of every session of `user`.
    pub fn set_must_change(&mut self, user: UserId, must_change: bool) {
        for s in self.by_token.values_mut().filter(|s| s.user_id == user) {
            s.must_change_password = must_change;
        }
    }

    /// Ends a session.
    pub fn remove(&mut self, token: &str) -> Option<Session> {
        self.by_token.remove(token)
    }

    /// Ends every session of `user` except `keep` (after a password change or reset,
    /// or when the user is deleted).
    pub fn remove_user(&mut self, user: UserId, keep: Option<&str>) {
        self.by_token
            .retain(|token, s| s.user_id != user || Some(token.as_str()) == keep);
    }

    /// Drops expired sessions.
    pub fn expire(&mut self, now_ms: i64) {
        self.by_token.retain(|_, s| is_live(s, now_ms));
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

fn is_live(s: &Session, now_ms: i64) -> bool {
    now_ms.saturating_sub(s.last_seen_ms) < IDLE_TIMEOUT_MS
        && now_ms.saturating_sub(s.created_ms) < ABSOLUTE_TIMEOUT_MS
}

/// 32 random bytes as 64 hex digits.
fn random_hex(what: &'static str) -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|source| Error::Random { what, source })?;
    Ok(hex::encode(bytes))
}

/// Failed logins per source IP in a sliding window, in front of the per-account
/// lockout (which stops guessing one account; this stops one source spraying many).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<IpAddr, VecDeque<i64>>,
}

impl LoginThrottle {
    /// `Some(retry_after_ms)` when `ip` has used up its failed logins for now.
    pub fn check(&mut self, ip: IpAddr, now_ms: i64) -> Option<i64> {
        let q = self.failures.get_mut(&ip)?;
        while q.front().is_some_and(|&t| now_ms - t >= THROTTLE_WINDOW_MS) {
            q.pop_front();
        }
        if q.is_empty() {
            self.failures.remove(&ip);
            return None;
        }
        (q.len() >= MAX_FAILED_LOGINS_PER_IP)
            .then(|| q.front().map_or(0, |&t| t + THROTTLE_WINDOW_MS - now_ms))
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now_ms: i64) {
        // Bound memory: forget IPs whose window has passed.
        if self.failures.len() > 4096 {
            self.failures
                .retain(|_, q| q.back().is_some_and(|&t| now_ms - t < THROTTLE_WINDOW_MS));
        }
        self.failures.entry(ip).or_default().push_back(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: i64) -> Session {
        Session {
            user_id: UserId(1),
            username: "u".to_owned(),
            csrf_token: String::new(),
            must_change_password: false,
            created_ms: now,
            last_seen_ms: now,
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let mut s = Sessions::default();
        let t = s.create(session(0)).expect("create");
        assert_eq!(t.len(), 64);
        assert!(s.touch(&t, IDLE_TIMEOUT_MS - 1).is_some());
        assert!(s.touch(&t, 2 * IDLE_TIMEOUT_MS - 2).is_some());
        assert!(s.touch(&t, 3 * IDLE_TIMEOUT_MS).is_none(), "idle");
        assert!(s.is_empty());
        let t = s.create(session(0)).expect("create");
        let mut now = 0;
        while now < ABSOLUTE_TIMEOUT_MS - IDLE_TIMEOUT_MS {
            now += IDLE_TIMEOUT_MS / 2;
            assert!(s.touch(&t, now).is_some(), "active at {now}");
        }
        assert!(s.touch(&t, ABSOLUTE_TIMEOUT_MS).is_none(), "absolute");
    }

    #[test]
    fn throttle_counts_per_ip_in_a_window() {
        let mut th = LoginThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..MAX_FAILED_LOGINS_PER_IP {
            assert_eq!(th.check(a, i as i64), None);
            th.record_failure(a, i as i64);
        }
        assert!(th.check(a, 100).is_some());
        assert_eq!(th.check(b, 100), None);
        assert_eq!(th.check(a, THROTTLE_WINDOW_MS + 100), None);
    }
}
