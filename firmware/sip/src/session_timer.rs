//! RFC 4028 session timers, sans-IO: the `Session-Expires` / `Min-SE` header values,
//! the UAS's negotiation of an INVITE's request (`422` when the interval is too
//! small, refresher selection) and the per-dialog timer that says when to refresh the
//! session (half the interval, when we are the refresher) and when it expired without
//! a refresh (then the dialog is ended with a BYE).
//!
//! Limits: only the UAS side of the negotiation (INVITEs the box receives) is here;
//! the UAC side (reading a `2xx`'s `Session-Expires`) is a header parse the caller
//! does with [`SessionExpires::parse`]. Nothing here sends anything: the caller (the
//! firmware's SIP endpoint, `sip_endpoint::session`) maps [`Negotiation`] to headers
//! and a [`TimerEvent`] to a re-INVITE/UPDATE or a BYE.

use std::time::{Duration, Instant};

/// RFC 4028 4: the smallest `Session-Expires` / `Min-SE` anyone may ask for (s).
pub const MIN_SE_FLOOR: u32 = 90;
/// The interval the box proposes when it picks one (RFC 4028 suggests 1800 s).
pub const DEFAULT_SESSION_EXPIRES: u32 = 1800;

/// A header value that is not what RFC 4028 allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTimerError {
    /// `Session-Expires` is not `delta-seconds *(;param)`.
    #[error("Session-Expires {0:?} is not delta-seconds with optional ;refresher=uac|uas")]
    BadSessionExpires(String),
    /// `Min-SE` is not `delta-seconds`.
    #[error("Min-SE {0:?} is not delta-seconds")]
    BadMinSe(String),
}

/// Which side refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The side that sent the INVITE.
    Uac,
    /// The side that answered it.
    Uas,
}

impl Refresher {
    /// The `refresher` parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A parsed `Session-Expires` (RFC 4028 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The interval, seconds.
    pub delta: u32,
    /// The `refresher` parameter, if any.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses `1800;refresher=uac` (other parameters are ignored, as RFC 4028 asks).
    pub fn parse(value: &str) -> Result<SessionExpires, SessionTimerError> {
        let bad = || SessionTimerError::BadSessionExpires(value.to_owned());
        let mut parts = value.split(';');
        let delta = parse_delta(parts.next().unwrap_or("")).ok_or_else(bad)?;
        let mut refresher = None;
        for p in parts {
            let (name, v) = p.split_once('=').unwrap_or((p, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher = Some(match v.trim().to_ascii_lowercase().as_str() {
                    "uac" => Refresher::Uac,
                    "uas" => Refresher::Uas,
                    _ => return Err(bad()),
                });
            }
        }
        Ok(SessionExpires { delta, refresher })
    }

    /// The header value: `1800;refresher=uac`.
    pub fn to_header_value(self) -> String {
        match self.refresher {
            Some(r) => format!("{};refresher={}", self.delta, r.as_str()),
            None => self.delta.to_string(),
        }
    }
}

/// Parses a `Min-SE` value (`delta-seconds`, parameters ignored).
pub fn parse_min_se(value: &str) -> Result<u32, SessionTimerError> {
    parse_delta(value.split(';').next().unwrap_or(""))
        .ok_or_else(|| SessionTimerError::BadMinSe(value.to_owned()))
}

fn parse_delta(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // RFC 3261 delta-seconds: values past 2^32-1 are taken as that.
    Some(
        s.parse::<u64>()
            .map_or(u32::MAX, |v| v.min(u64::from(u32::MAX)) as u32),
    )
}

/// The box's session-timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The smallest interval accepted (`Min-SE` of our `422`), at least
    /// [`MIN_SE_FLOOR`].
    pub min_se: u32,
    /// The largest interval the box lets a session run without refresh: a longer
    /// request is lowered to it (RFC 4028 9 lets the UAS reduce it, never below the
    /// request's `Min-SE`).
    pub session_expires: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            min_se: MIN_SE_FLOOR,
            session_expires: DEFAULT_SESSION_EXPIRES,
        }
    }
}

/// What an INVITE the box answers asked for, as far as session timers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerRequest {
    /// `Supported: timer` (or `Require: timer`): the UAC can refresh and understands
    /// `Session-Expires` in the answer.
    pub supported: bool,
    /// Its `Session-Expires`, if any.
    pub session_expires: Option<SessionExpires>,
    /// Its `Min-SE`, if any.
    pub min_se: Option<u32>,
}

/// How the box answers an INVITE's session-timer request (RFC 4028 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// No session timer on this dialog (the INVITE asked for none).
    None,
    /// Refuse the INVITE `422 Session Interval Too Small` with this `Min-SE`.
    TooSmall {
        /// Our `Min-SE`.
        min_se: u32,
    },
    /// Run a session timer: the 2xx carries `Session-Expires` (with the refresher),
    /// and `Require: timer` when the UAC supports it.
    Timer {
        /// The interval and the refresher chosen.
        session_expires: SessionExpires,
        /// Put `Require: timer` in the 2xx (the UAC supports it).
        require: bool,
    },
}

/// The UAS's decision on an INVITE (RFC 4028 9): `422` when the request's interval is
/// below our minimum; else the interval (lowered to ours when ours is not below the
/// request's `Min-SE`) and the refresher: the one the UAC asked for, else the UAC
/// when it supports timers, else us (a UAC without timer support cannot refresh).
pub fn negotiate(config: SessionTimerConfig, request: TimerRequest) -> Negotiation {
    let Some(se) = request.session_expires else {
        return Negotiation::None;
    };
    let our_min = config.min_se.max(MIN_SE_FLOOR);
    if se.delta < our_min {
        return Negotiation::TooSmall { min_se: our_min };
    }
    let floor = request.min_se.unwrap_or(0).max(our_min);
    let delta = if config.session_expires >= floor {
        se.delta.min(config.session_expires)
    } else {
        se.delta
    };
    let refresher = if request.supported {
        se.refresher.unwrap_or(Refresher::Uac)
    } else {
        Refresher::Uas
    };
    Negotiation::Timer {
        session_expires: SessionExpires {
            delta,
            refresher: Some(refresher),
        },
        require: request.supported,
    }
}

/// What a [`SessionTimer`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// We are the refresher and half the interval has passed: send a session refresh
    /// (re-INVITE or UPDATE).
    Refresh,
    /// No refresh came in time: end the dialog with a BYE.
    Expired,
}

/// The session timer of one dialog. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    refresh_at: Option<Instant>,
    expire_at: Instant,
}

impl SessionTimer {
    /// A timer for a session negotiated at `now` with `interval` seconds; `we_refresh`
    /// when the box is the refresher.
    pub fn new(now: Instant, interval: u32, we_refresh: bool) -> SessionTimer {
        let interval = Duration::from_secs(u64::from(interval));
        SessionTimer {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| now + interval / 2),
            expire_at: now + Self::grace(interval),
        }
    }

    /// RFC 4028 10: the side that does not refresh sends BYE "at the session
    /// expiration minus the smaller of 32 seconds and one third of the interval"; the
    /// refresher itself ends the session at the expiry.
    fn grace(interval: Duration) -> Duration {
        interval - Duration::from_secs(32).min(interval / 3)
    }

    /// A refresh succeeded at `now` (a 2xx to a re-INVITE or UPDATE, ours or the
    /// peer's), possibly with a new interval and refresher.
    pub fn refreshed(&mut self, now: Instant, interval: u32, we_refresh: bool) {
        *self = SessionTimer::new(now, interval, we_refresh);
    }

    /// Whether the box refreshes this session.
    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When [`SessionTimer::poll`] has something next.
    pub fn timeout(&self) -> Instant {
        self.refresh_at
            .map_or(self.expire_at, |r| r.min(self.expire_at))
    }

    /// What is due at `now`: a refresh once per interval (then the timer waits for
    /// [`SessionTimer::refreshed`] or the expiry), or the expiry.
    pub fn poll(&mut self, now: Instant) -> Option<TimerEvent> {
        if now >= self.expire_at {
            return Some(TimerEvent::Expired);
        }
        if self.refresh_at.is_some_and(|r| now >= r) {
            self.refresh_at = None;
            return Some(TimerEvent::Refresh);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn request(supported: bool, se: Option<&str>, min_se: Option<u32>) -> TimerRequest {
        TimerRequest {
            supported,
            session_expires: se.map(|v| SessionExpires::parse(v).expect("valid")),
            min_se,
        }
    }

    #[test]
    fn headers_parse_and_bad_ones_are_named() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=UAC").unwrap(),
            SessionExpires {
                delta: 1800,
                refresher: Some(Refresher::Uac)
            }
        );
        assert_eq!(
            SessionExpires::parse(" 600 ; foo=bar").unwrap(),
            SessionExpires {
                delta: 600,
                refresher: None
            }
        );
        assert_eq!(
            SessionExpires::parse("99999999999").unwrap().delta,
            u32::MAX
        );
        for bad in ["", "abc", "-5", "1800;refresher=both", "18 00"] {
            let e = SessionExpires::parse(bad).unwrap_err();
            assert!(e.to_string().contains("Session-Expires"), "{bad}: {e}");
        }
        assert_eq!(parse_min_se("90").unwrap(), 90);
        assert_eq!(parse_min_se("120;x=1").unwrap(), 120);
        assert!(parse_min_se("ninety").is_err());
        let se = SessionExpires {
            delta: 900,
            refresher: Some(Refresher::Uas),
        };
        assert_eq!(se.to_header_value(), "900;refresher=uas");
        assert_eq!(SessionExpires::parse(&se.to_header_value()).unwrap(), se);
    }

    #[test]
    fn the_uas_negotiates_interval_and_refresher() {
        let c = SessionTimerConfig::default();
        // No Session-Expires: no timer.
        assert_eq!(negotiate(c, request(true, None, None)), Negotiation::None);
        // Too small: 422 with our Min-SE.
        assert_eq!(
            negotiate(c, request(true, Some("60"), None)),
            Negotiation::TooSmall { min_se: 90 }
        );
        let strict = SessionTimerConfig { min_se: 300, ..c };
        assert_eq!(
            negotiate(strict, request(true, Some("200"), Some(90))),
            Negotiation::TooSmall { min_se: 300 }
        );
        // The UAC's choice of refresher is kept; none: the UAC refreshes.
        assert_eq!(
            negotiate(c, request(true, Some("600;refresher=uas"), None)),
            Negotiation::Timer {
                session_expires: SessionExpires {
                    delta: 600,
                    refresher: Some(Refresher::Uas)
                },
                require: true
            }
        );
        assert!(matches!(
            negotiate(c, request(true, Some("600"), None)),
            Negotiation::Timer {
                session_expires: SessionExpires {
                    refresher: Some(Refresher::Uac),
                    ..
                },
                ..
            }
        ));
        // A UAC without timer support (a proxy added Session-Expires): we refresh,
        // and no Require in the answer.
        assert_eq!(
            negotiate(c, request(false, Some("600;refresher=uac"), None)),
            Negotiation::Timer {
                session_expires: SessionExpires {
                    delta: 600,
                    refresher: Some(Refresher::Uas)
                },
                require: false
            }
        );
        // A longer interval is lowered to ours, but never below the request's Min-SE.
        let Negotiation::Timer {
            session_expires, ..
        } = negotiate(c, request(true, Some("7200"), None))
        else {
            panic!("timer");
        };
        assert_eq!(session_expires.delta, 1800);
        let Negotiation::Timer {
            session_expires, ..
        } = negotiate(c, request(true, Some("7200"), Some(3600)))
        else {
            panic!("timer");
        };
        assert_eq!(session_expires.delta, 7200);
    }

    #[test]
    fn the_refresher_refreshes_at_half_the_interval() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(t0, 600, true);
        assert_eq!(t.timeout(), t0 + 300 * S);
        assert_eq!(t.poll(t0 + 299 * S), None);
        assert_eq!(t.poll(t0 + 300 * S), Some(TimerEvent::Refresh));
        // Once; then it waits for the refresh's answer.
        assert_eq!(t.poll(t0 + 301 * S), None);
        t.refreshed(t0 + 301 * S, 600, true);
        assert_eq!(t.timeout(), t0 + 601 * S);
        // A refresh that is never answered: the session expires (600 - 32 s).
        assert_eq!(t.poll(t0 + 601 * S), Some(TimerEvent::Refresh));
        assert_eq!(t.timeout(), t0 + 301 * S + 568 * S);
        assert_eq!(t.poll(t0 + 869 * S), Some(TimerEvent::Expired));
    }

    #[test]
    fn without_a_refresh_from_the_peer_the_session_expires() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(t0, 90, false);
        // 90 - min(32, 30) = 60 s.
        assert_eq!(t.timeout(), t0 + 60 * S);
        assert_eq!(t.poll(t0 + 59 * S), None);
        assert_eq!(t.poll(t0 + 60 * S), Some(TimerEvent::Expired));
        // The peer refreshing in time keeps the session.
        let mut u = SessionTimer::new(t0, 1800, false);
        let mut now = t0;
        for _ in 0..10 {
            now += 900 * S;
            assert_eq!(u.poll(now), None);
            u.refreshed(now, 1800, false);
        }
        assert_eq!(u.timeout(), now + 1768 * S);
        assert!(!u.we_refresh());
        assert_eq!(u.interval(), 1800 * S);
    }
}
