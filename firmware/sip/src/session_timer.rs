//! RFC 4028 session timers, sans-IO: the `Session-Expires` / `Min-SE` header values,
//! both sides of the negotiation, and the per-dialog timer that says when to refresh
//! the session (half the interval, when we are the refresher) and when it expired
//! without a refresh (then the dialog is ended with a BYE).
//!
//! - UAS (INVITEs the box answers): [`negotiate`] gives `422` when the interval is too
//!   small, else the interval and the refresher for the `2xx`.
//! - UAC (INVITEs the box sends): a [`Proposal`] puts `Supported: timer`,
//!   `Session-Expires` (without `refresher`: RFC 4028 7.1 recommends leaving the
//!   choice to the UAS) and `Min-SE` (when not the 90 s default) in the INVITE. A `422`
//!   is retried once ([`Proposal::after_too_small`], [`retry_invite`]: the same
//!   Call-ID and From tag, the next CSeq, `Session-Expires` and `Min-SE` raised to the
//!   `422`'s `Min-SE`, RFC 4028 7.4); a second `422`, a `422` without a usable
//!   `Min-SE`, one not above what was proposed (a retry would loop) or one above
//!   [`MAX_SESSION_EXPIRES`] ends the attempt with a [`RetryRefused`]. The `2xx` decides
//!   ([`Proposal::answered`], RFC 4028 7.2): its `Session-Expires` names the interval
//!   and the refresher (`uas`: the far end refreshes; `uac` or none named: we do);
//!   without one the session has no timer.
//! - Refreshes the box sends carry [`refresh_headers`] (`refresher=uac`: the sender of
//!   a refresh keeps refreshing). Each refresh is a [`Proposal`] of its own
//!   ([`SessionTimer::refresh_proposal`]: the current interval and `Min-SE`, not yet
//!   retried), so a `422` to it follows the INVITE's rule (RFC 4028 7.4 applies to
//!   any session refresh request): retried once with `Session-Expires` and `Min-SE`
//!   raised to the `422`'s `Min-SE` ([`Proposal::after_too_small`],
//!   [`Proposal::refresh_headers`]), the `2xx` to the retry then restarting the timer
//!   at the raised interval; a second `422` to the same refresh, or a `422` that
//!   cannot be retried, is a [`RetryRefused`] and the session ends. The next refresh
//!   starts afresh (one retry per refresh, not per session).
//!
//! Nothing here sends anything: the caller (the firmware's SIP endpoint,
//! `sip_endpoint::session` and `legs`) maps [`Negotiation`] and [`Proposal`] to headers
//! and a [`TimerEvent`] to a re-INVITE/UPDATE or a BYE.
//!
//! Limit: when the `2xx` to our INVITE has no `Session-Expires` (the far end does not
//! do session timers, or turned ours down), RFC 4028 7.2 lets the UAC refresh on its
//! own; we do not (re-INVITEs a peer never asked for are a risk with simple phones, and
//! the endpoint's media inactivity timeout already ends calls whose peer vanished).

use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers};

use crate::transaction;

/// RFC 4028 4: the smallest `Session-Expires` / `Min-SE` anyone may ask for (s).
pub const MIN_SE_FLOOR: u32 = 90;
/// The interval the box proposes when it picks one (RFC 4028 suggests 1800 s).
pub const DEFAULT_SESSION_EXPIRES: u32 = 1800;
/// The longest interval the box proposes, or raises its proposal to after a `422`
/// (one day: a far end asking for more is broken, and a retry would only hide it).
pub const MAX_SESSION_EXPIRES: u32 = 86_400;

/// A header value that is not what RFC 4028 allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTimerError {
    /// `Session-Expires` is not `delta-seconds *(;param)`.
    #[error("Session-Expires {0:?} is not delta-seconds with optional ;refresher=uac|uas")]
    BadSessionExpires(String),
    /// `Min-SE` is not `delta-seconds`.
    #[error("Min-SE {0:?} is not delta-seconds")]
    BadMinSe(String),
    /// A `2xx` named an interval below RFC 4028's floor ([`MIN_SE_FLOOR`]).
    #[error("Session-Expires {0} s is below RFC 4028's floor of 90 s")]
    BelowFloor(u32),
}

/// Why a `422` to an INVITE the box sent ends the attempt instead of being retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    /// The retry was refused `422` too: no loop.
    #[error("a second 422 after the retry with Session-Expires {proposed} s: not retried again")]
    SecondRefusal {
        /// The interval of the retry.
        proposed: u32,
    },
    /// The `422` has no `Min-SE` (RFC 4028 6 requires one): nothing to retry with.
    #[error("422 without a Min-SE: nothing to retry with")]
    NoMinSe,
    /// The `422`'s `Min-SE` cannot be read.
    #[error("422 with an unreadable Min-SE: {0}")]
    BadMinSe(SessionTimerError),
    /// The `422` asks for no more than was proposed: a retry would be refused again.
    #[error("422 with Min-SE {min_se} s, not above the {proposed} s proposed: a retry would loop")]
    NotLarger {
        /// The `422`'s `Min-SE`.
        min_se: u32,
        /// The interval proposed.
        proposed: u32,
    },
    /// The `422` asks for more than [`MAX_SESSION_EXPIRES`].
    #[error(
        "422 asks for at least {min_se} s, more than the {MAX_SESSION_EXPIRES} s the box accepts"
    )]
    TooLarge {
        /// The `422`'s `Min-SE`.
        min_se: u32,
    },
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

/// `Session-Expires` or its compact form `x` among `headers`.
pub fn session_expires_of(headers: &Headers) -> Option<&str> {
    transaction::other_header(headers, "Session-Expires")
        .or_else(|| transaction::other_header(headers, "x"))
}

/// `Min-SE` among `headers`.
pub fn min_se_of(headers: &Headers) -> Option<&str> {
    transaction::other_header(headers, "Min-SE")
}

/// The session timer the box proposes on an INVITE it sends (RFC 4028 7.1), and the
/// rules for what comes back (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The `Session-Expires` proposed (s).
    pub session_expires: u32,
    /// The `Min-SE` (s): ours, or the `422`'s after a retry. Refreshes carry it too.
    pub min_se: u32,
    /// This is the retry after a `422`: another `422` ends the attempt.
    pub retried: bool,
}

impl Proposal {
    /// The first proposal under `config`: its interval, at least its `Min-SE`.
    pub fn new(config: SessionTimerConfig) -> Proposal {
        let min_se = config.min_se.max(MIN_SE_FLOOR);
        Proposal {
            session_expires: config
                .session_expires
                .clamp(min_se, MAX_SESSION_EXPIRES.max(min_se)),
            min_se,
            retried: false,
        }
    }

    /// The INVITE's headers: `Supported: timer`, `Session-Expires: N` (no refresher:
    /// the UAS chooses), and `Min-SE` when it is not RFC 4028's default of 90 s.
    pub fn headers(&self) -> Vec<Header> {
        let mut headers = vec![
            Header::Supported(rsip::headers::Supported::new("timer")),
            Header::Other("Session-Expires".into(), self.session_expires.to_string()),
        ];
        if self.min_se > MIN_SE_FLOOR {
            headers.push(Header::Other("Min-SE".into(), self.min_se.to_string()));
        }
        headers
    }

    /// RFC 4028 7.4: the retry after a `422` whose `Min-SE` header is `min_se`:
    /// `Session-Expires` and `Min-SE` raised to it; or why there is none.
    pub fn after_too_small(&self, min_se: Option<&str>) -> Result<Proposal, RetryRefused> {
        if self.retried {
            return Err(RetryRefused::SecondRefusal {
                proposed: self.session_expires,
            });
        }
        let min_se =
            parse_min_se(min_se.ok_or(RetryRefused::NoMinSe)?).map_err(RetryRefused::BadMinSe)?;
        if min_se <= self.session_expires {
            return Err(RetryRefused::NotLarger {
                min_se,
                proposed: self.session_expires,
            });
        }
        if min_se > MAX_SESSION_EXPIRES {
            return Err(RetryRefused::TooLarge { min_se });
        }
        Ok(Proposal {
            session_expires: min_se,
            min_se,
            retried: true,
        })
    }

    /// The headers of the session refresh (re-INVITE or UPDATE) this proposal is:
    /// [`refresh_headers`] with its interval and `Min-SE`.
    pub fn refresh_headers(&self) -> Vec<Header> {
        refresh_headers(self.session_expires, self.min_se)
    }

    /// RFC 4028 7.2: the session timer the `2xx` to our INVITE starts, from its
    /// `Session-Expires` value (`session_expires`): `(interval, we_refresh)`, the box
    /// refreshing unless the far end named itself (`refresher=uas`); `None` without
    /// `Session-Expires` (the session has no timer). An unreadable value, or one below
    /// the 90 s floor, is an error (the caller runs no timer and says why).
    pub fn answered(
        &self,
        session_expires: Option<&str>,
    ) -> Result<Option<(u32, bool)>, SessionTimerError> {
        let Some(value) = session_expires else {
            return Ok(None);
        };
        let se = SessionExpires::parse(value)?;
        if se.delta < MIN_SE_FLOOR {
            return Err(SessionTimerError::BelowFloor(se.delta));
        }
        Ok(Some((se.delta, se.refresher != Some(Refresher::Uas))))
    }
}

/// The retry of `invite` (ours, refused `422`) with `next`'s interval: a new
/// transaction ([`transaction::retry_request`]: `branch`, the next CSeq, the same
/// Call-ID and tags) whose `Session-Expires` and `Min-SE` are `next`'s.
pub fn retry_invite(
    invite: &rsip::Request,
    branch: &str,
    next: Proposal,
) -> Result<rsip::Request, transaction::Error> {
    let mut retry = transaction::retry_request(invite, branch)?;
    retry.headers.retain(|h| {
        !matches!(h, Header::Other(name, _)
            if ["Session-Expires", "x", "Min-SE"].iter().any(|n| name.eq_ignore_ascii_case(n)))
    });
    let mut headers = Headers::default();
    let mut added = false;
    for h in retry.headers.iter() {
        // Ours go before the body's headers, where the first proposal had them.
        if !added && matches!(h, Header::ContentType(_) | Header::ContentLength(_)) {
            for p in next.headers().into_iter().skip(1) {
                headers.push(p);
            }
            added = true;
        }
        headers.push(h.clone());
    }
    if !added {
        for p in next.headers().into_iter().skip(1) {
            headers.push(p);
        }
    }
    retry.headers = headers;
    Ok(retry)
}

/// The headers of a session refresh (re-INVITE or UPDATE) the box sends on a session
/// of `interval` s: `Session-Expires` with `refresher=uac` (the sender of a refresh
/// keeps refreshing), `Supported: timer`, and `Min-SE` when above the 90 s default.
pub fn refresh_headers(interval: u32, min_se: u32) -> Vec<Header> {
    let mut headers = vec![
        Header::Other(
            "Session-Expires".into(),
            SessionExpires {
                delta: interval,
                refresher: Some(Refresher::Uac),
            }
            .to_header_value(),
        ),
        Header::Supported(rsip::headers::Supported::new("timer")),
    ];
    if min_se > MIN_SE_FLOOR {
        headers.push(Header::Other(
            "Min-SE".into(),
            min_se.min(interval).to_string(),
        ));
    }
    headers
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

    /// The refresh [`TimerEvent::Refresh`] asks for, as a [`Proposal`]: the current
    /// interval, `min_se` (the leg's, at most the interval: never more than what is
    /// asked), not yet retried; a `422` to it is handled by
    /// [`Proposal::after_too_small`] like one to an INVITE.
    pub fn refresh_proposal(&self, min_se: u32) -> Proposal {
        let interval = u32::try_from(self.interval.as_secs()).unwrap_or(u32::MAX);
        Proposal {
            session_expires: interval,
            min_se: min_se.min(interval),
            retried: false,
        }
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
    fn value<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
        headers.iter().find_map(|h| match h {
            Header::Other(n, v) if n == name => Some(v.as_str()),
            Header::Supported(v) if name == "Supported" => Some(v.value()),
            _ => None,
        })
    }

    #[test]
    fn the_uac_proposes_its_interval_and_leaves_the_refresher_to_the_uas() {
        let p = Proposal::new(SessionTimerConfig::default());
        assert_eq!(
            p,
            Proposal {
                session_expires: 1800,
                min_se: 90,
                retried: false
            }
        );
        let h = p.headers();
        assert_eq!(value(&h, "Supported"), Some("timer"));
        assert_eq!(value(&h, "Session-Expires"), Some("1800"));
        // Min-SE only when it is not RFC 4028's default.
        assert_eq!(value(&h, "Min-SE"), None);
        let h = Proposal::new(SessionTimerConfig {
            min_se: 120,
            session_expires: 600,
        })
        .headers();
        assert_eq!(value(&h, "Session-Expires"), Some("600"));
        assert_eq!(value(&h, "Min-SE"), Some("120"));
        // Never below our own Min-SE, nor past the day.
        let p = Proposal::new(SessionTimerConfig {
            min_se: 300,
            session_expires: 100,
        });
        assert_eq!((p.session_expires, p.min_se), (300, 300));
        let p = Proposal::new(SessionTimerConfig {
            min_se: 90,
            session_expires: u32::MAX,
        });
        assert_eq!(p.session_expires, MAX_SESSION_EXPIRES);
    }

    #[test]
    fn the_2xx_names_the_interval_and_the_refresher() {
        let p = Proposal::new(SessionTimerConfig::default());
        // The UAS refreshes: we only watch.
        assert_eq!(
            p.answered(Some("1200;refresher=uas")),
            Ok(Some((1200, false)))
        );
        // We refresh: named, or not named at all.
        assert_eq!(
            p.answered(Some("1800;refresher=uac")),
            Ok(Some((1800, true)))
        );
        assert_eq!(p.answered(Some("900")), Ok(Some((900, true))));
        // No Session-Expires in the 2xx: no timer (RFC 4028 7.2).
        assert_eq!(p.answered(None), Ok(None));
        // Unreadable or below the floor: an error the caller logs (no timer).
        assert!(matches!(
            p.answered(Some("soon")),
            Err(SessionTimerError::BadSessionExpires(_))
        ));
        assert_eq!(
            p.answered(Some("30;refresher=uas")),
            Err(SessionTimerError::BelowFloor(30))
        );
    }

    #[test]
    fn a_422_is_retried_once_with_its_min_se() {
        let p = Proposal::new(SessionTimerConfig {
            min_se: 120,
            session_expires: 600,
        });
        let retry = p.after_too_small(Some("1800")).expect("retried");
        assert_eq!(
            retry,
            Proposal {
                session_expires: 1800,
                min_se: 1800,
                retried: true
            }
        );
        let h = retry.headers();
        assert_eq!(value(&h, "Session-Expires"), Some("1800"));
        assert_eq!(value(&h, "Min-SE"), Some("1800"));
        // A second 422: the end, however reasonable its Min-SE.
        assert_eq!(
            retry.after_too_small(Some("3600")),
            Err(RetryRefused::SecondRefusal { proposed: 1800 })
        );
        // A 422 that gives nothing to retry with, or would loop, or asks too much.
        assert_eq!(p.after_too_small(None), Err(RetryRefused::NoMinSe));
        assert!(matches!(
            p.after_too_small(Some("lots")),
            Err(RetryRefused::BadMinSe(SessionTimerError::BadMinSe(_)))
        ));
        assert_eq!(
            p.after_too_small(Some("600")),
            Err(RetryRefused::NotLarger {
                min_se: 600,
                proposed: 600
            })
        );
        assert_eq!(
            p.after_too_small(Some("86401")),
            Err(RetryRefused::TooLarge { min_se: 86_401 })
        );
        assert_eq!(
            p.after_too_small(Some("86400")).map(|r| r.session_expires),
            Ok(86_400)
        );
        for e in [
            RetryRefused::SecondRefusal { proposed: 1800 },
            RetryRefused::NoMinSe,
            RetryRefused::TooLarge { min_se: 99_999 },
        ] {
            assert!(e.to_string().contains("422"), "{e}");
        }
    }

    #[test]
    fn the_retried_invite_is_the_next_transaction_with_the_raised_interval() {
        let text = "INVITE sip:202@192.0.2.20 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfirst;rport\r\n\
            From: <sip:104@branch.test>;tag=t1\r\nTo: <sip:202@branch.test>\r\n\
            Call-ID: leg-1@branch.test\r\nCSeq: 1 INVITE\r\nSupported: timer\r\n\
            Session-Expires: 600\r\nMin-SE: 120\r\n\
            Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n";
        let invite = rsip::Request::try_from(text.as_bytes()).expect("parses");
        let next = Proposal::new(SessionTimerConfig {
            min_se: 120,
            session_expires: 600,
        })
        .after_too_small(Some("1800"))
        .expect("retry");
        let retry = retry_invite(&invite, "z9hG4bKsecond", next).expect("built");
        let h = &retry.headers;
        assert_eq!(transaction::call_id(h).unwrap(), "leg-1@branch.test");
        assert_eq!(transaction::from_tag(h).unwrap().as_deref(), Some("t1"));
        assert_eq!(transaction::cseq(h).unwrap().seq, 2);
        let via = transaction::top_via(h).unwrap();
        assert_eq!(
            transaction::via_branch(&via).as_deref(),
            Some("z9hG4bKsecond")
        );
        assert_eq!(session_expires_of(h), Some("1800"));
        assert_eq!(min_se_of(h), Some("1800"));
        // One of each, Supported kept, the body unchanged.
        let count = |name: &str| {
            h.iter()
                .filter(|x| matches!(x, Header::Other(n, _) if n == name))
                .count()
        };
        assert_eq!((count("Session-Expires"), count("Min-SE")), (1, 1));
        assert!(h.iter().any(|x| matches!(x, Header::Supported(_))));
        assert_eq!(retry.body, invite.body);
    }

    #[test]
    fn a_422_to_our_refresh_is_retried_once_and_the_session_keeps_the_raised_interval() {
        // The box refreshes a 90 s session; the far end wants 120 s, later 180 s.
        let t0 = Instant::now();
        let mut now = t0;
        let mut timer = SessionTimer::new(now, 90, true);
        now = timer.timeout();
        assert_eq!(now, t0 + 45 * S);
        assert_eq!(timer.poll(now), Some(TimerEvent::Refresh));
        let first = timer.refresh_proposal(90);
        assert_eq!(
            first,
            Proposal {
                session_expires: 90,
                min_se: 90,
                retried: false
            }
        );
        let h = first.refresh_headers();
        assert_eq!(value(&h, "Session-Expires"), Some("90;refresher=uac"));
        assert_eq!(value(&h, "Min-SE"), None);
        // 422 Min-SE: 120 a moment later: the retry says 120 twice.
        now += S / 10;
        let retry = first.after_too_small(Some("120")).expect("retried");
        let h = retry.refresh_headers();
        assert_eq!(value(&h, "Session-Expires"), Some("120;refresher=uac"));
        assert_eq!(value(&h, "Min-SE"), Some("120"));
        // Until its answer the old session's expiry still holds.
        assert_eq!(timer.timeout(), t0 + 60 * S);
        // Its 2xx: the session runs at 120 s, next refresh at 60 s after it.
        now += S / 10;
        timer.refreshed(now, retry.session_expires, true);
        assert_eq!(timer.interval(), 120 * S);
        let answered = now;
        now = timer.timeout();
        assert_eq!(now, answered + 60 * S);
        assert_eq!(timer.poll(now - S / 10), None);
        assert_eq!(timer.poll(now), Some(TimerEvent::Refresh));
        // The next refresh starts afresh with the leg's raised Min-SE: one more retry
        // is allowed, and a second 422 to that retry ends the session.
        let second = timer.refresh_proposal(retry.min_se);
        assert_eq!(
            (second.session_expires, second.min_se, second.retried),
            (120, 120, false)
        );
        let again = second.after_too_small(Some("180")).expect("retried");
        assert_eq!(again.session_expires, 180);
        assert_eq!(
            again.after_too_small(Some("240")),
            Err(RetryRefused::SecondRefusal { proposed: 180 })
        );
        // A 422 to a refresh that cannot be retried: missing, not larger, too large.
        assert_eq!(second.after_too_small(None), Err(RetryRefused::NoMinSe));
        assert_eq!(
            second.after_too_small(Some("120")),
            Err(RetryRefused::NotLarger {
                min_se: 120,
                proposed: 120
            })
        );
        assert_eq!(
            second.after_too_small(Some("90000")),
            Err(RetryRefused::TooLarge { min_se: 90_000 })
        );
        // Nothing answered at all: the session expires 120 - 32 s after the 2xx.
        assert_eq!(timer.timeout(), answered + 88 * S);
        assert_eq!(timer.poll(answered + 88 * S), Some(TimerEvent::Expired));
        // A leg Min-SE above the interval is never sent above it.
        assert_eq!(
            SessionTimer::new(t0, 90, true).refresh_proposal(300).min_se,
            90
        );
    }

    #[test]
    fn refreshes_say_the_sender_refreshes_and_carry_a_raised_min_se() {
        let h = refresh_headers(1800, 90);
        assert_eq!(value(&h, "Session-Expires"), Some("1800;refresher=uac"));
        assert_eq!(value(&h, "Supported"), Some("timer"));
        assert_eq!(value(&h, "Min-SE"), None);
        let h = refresh_headers(1800, 1800);
        assert_eq!(value(&h, "Min-SE"), Some("1800"));
    }
}
