//! RFC 4028 session timers on the B2BUA's legs: the sans-IO rules of
//! [`branchline_sip::session_timer`] wired to real dialogs.
//!
//! - An INVITE the box answers with `Session-Expires` is negotiated
//!   ([`session_timer::negotiate`]): below our `Min-SE` it is refused `422` with ours;
//!   otherwise the `2xx` carries `Session-Expires` with the refresher (and `Require:
//!   timer` when the caller supports timers), and the leg's timer runs. `Require:
//!   timer` is accepted (no longer `420`). An unreadable `Session-Expires` or `Min-SE`
//!   gets `400` naming the header.
//! - Outgoing INVITEs (to local phones and to the trunk) propose a timer
//!   ([`Proposal`], RFC 4028 7.1): `Supported: timer`, `Session-Expires:
//!   session_expires_s` without a refresher (the answering side picks one), and
//!   `Min-SE` when `min_se_s` is not 90. The `2xx` decides (7.2): its
//!   `Session-Expires` starts the leg's timer with the interval it names, the box
//!   refreshing unless it says `refresher=uas`; a `2xx` without `Session-Expires`
//!   means no timer on that leg. A `422` is retried once (`legs`: same Call-ID and
//!   From tag, next CSeq, `Session-Expires` and `Min-SE` raised to the `422`'s
//!   `Min-SE`, 7.4); a second `422`, or one whose `Min-SE` is missing, unreadable,
//!   not above what was proposed or above a day
//!   ([`session_timer::MAX_SESSION_EXPIRES`]), fails the fork with `422` (logged as
//!   "session interval not agreed"; the trunk then falls back like any failure).
//! - A refresh the far end sends (re-INVITE or UPDATE with `Session-Expires`) is
//!   negotiated the same way and restarts the timer; one without `Session-Expires`
//!   turns the leg's timer off (RFC 4028 9: the session no longer has an expiry).
//! - When the box refreshes, it sends, at half the interval, an UPDATE without a body
//!   when the far end allows UPDATE (its `Allow`), else a re-INVITE with the leg's
//!   current SDP (same session version: nothing changes), with `Session-Expires:
//!   N;refresher=uac` and the leg's `Min-SE` when above 90
//!   ([`session_timer::refresh_headers`]); the `2xx` restarts the timer (with the
//!   interval and refresher it names).
//! - A session that expires (no refresh from the far end by the interval minus
//!   min(32 s, interval/3), or our refresh failed with a final error other than
//!   `491` or a `422` that is retried, below) ends: call control hears
//!   [`SipInput::SessionExpired`], sends the BYE and writes `hangup_cause`
//!   `session_expired` in the CDR.
//! - A `422` to one of our refreshes (RFC 4028 7.4: the far end's minimum may have
//!   grown since the session started) is retried once, at once, like the `422` to an
//!   INVITE: the same method, the next CSeq, `Session-Expires: N;refresher=uac` and
//!   `Min-SE: N` with N the `422`'s `Min-SE`, and the leg keeps that `Min-SE` for its
//!   later refreshes; the `2xx` to the retry restarts the timer at the interval it
//!   names (so the next refresh comes at N/2). A second `422` to the retry, or a
//!   `422` whose `Min-SE` is missing, unreadable, not above the interval proposed or
//!   above a day, ends the session as any failed refresh does (logged "session
//!   interval not agreed"). Each refresh gets its own single retry.
//!
//! Limits: the box never starts a timer on a session whose INVITE (theirs) or `2xx`
//! (to ours) carried no `Session-Expires`: RFC 4028 7.2 would let it refresh a far
//! end that does not do timers on its own, but the media inactivity timeout already
//! covers vanished peers there.

use std::time::Instant;

use branchline_sip::dialog::DialogId;
use branchline_sip::session_timer::{
    self, Negotiation, Proposal, Refresher, SessionExpires, SessionTimer, SessionTimerError,
    TimerEvent, TimerRequest,
};
use branchline_sip::transaction;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::legs::Leg;
use super::sdp::{self, Direction};
use super::{wire, SipEndpoint};
use crate::call::sip::{LegId, SipInput};

/// A leg's session timer and how it is refreshed.
#[derive(Debug, Clone)]
pub(super) struct LegSession {
    timer: SessionTimer,
    /// The far end allows UPDATE: refreshes go as UPDATE without a body.
    update: bool,
    /// Our refresh in flight: its CSeq number and what it proposed (a `422` to it is
    /// retried once from this, RFC 4028 7.4).
    pending: Option<(u32, Proposal)>,
    /// The `Min-SE` our refreshes carry: ours, or the one a `422` to our INVITE or to
    /// one of our refreshes named.
    min_se: u32,
}

/// What a request (an INVITE or a refresh) said about session timers.
pub(super) fn timer_request(request: &rsip::Request) -> Result<TimerRequest, SessionTimerError> {
    let supported = request.headers.iter().any(|h| {
        let value = match h {
            Header::Require(r) => r.value(),
            Header::Supported(s) => s.value(),
            Header::Other(name, value)
                if name.eq_ignore_ascii_case("k") || name.eq_ignore_ascii_case("Supported") =>
            {
                value.as_str()
            }
            _ => return false,
        };
        value
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("timer"))
    });
    let session_expires = session_expires_header(&request.headers)
        .map(SessionExpires::parse)
        .transpose()?;
    let min_se = wire::header(&request.headers, "Min-SE")
        .map(session_timer::parse_min_se)
        .transpose()?;
    Ok(TimerRequest {
        supported,
        session_expires,
        min_se,
    })
}

/// `Session-Expires` or its compact form `x`.
fn session_expires_header(headers: &rsip::Headers) -> Option<&str> {
    wire::header(headers, "Session-Expires").or_else(|| wire::header(headers, "x"))
}

/// The far end lists UPDATE in its `Allow`.
pub(super) fn allows_update(headers: &rsip::Headers) -> bool {
    headers.iter().any(|h| match h {
        Header::Allow(a) => a
            .value()
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE")),
        _ => false,
    })
}

/// The headers of a `2xx` that runs a session timer.
pub(super) fn answer_headers(se: SessionExpires, require: bool) -> Vec<Header> {
    let mut headers = vec![Header::Other(
        "Session-Expires".into(),
        se.to_header_value(),
    )];
    if require {
        headers.push(Header::Require(rsip::headers::Require::new("timer")));
    }
    headers
}

/// A `422 Session Interval Too Small` (RFC 4028 6) for `request`.
pub(super) fn too_small(request: &rsip::Request, min_se: u32) -> rsip::Response {
    let mut response = transaction::response_for(request, 422u16.into(), None);
    response
        .headers
        .push(Header::Other("Min-SE".into(), min_se.to_string()));
    response
}

/// A `400` naming the session-timer header that could not be read.
pub(super) fn bad_header(request: &rsip::Request, error: &SessionTimerError) -> rsip::Response {
    let mut response = transaction::response_for(request, 400u16.into(), None);
    response.headers.push(Header::Other(
        "Warning".into(),
        format!("399 branchline \"{error}\""),
    ));
    response
}

/// How the box answers a request that may start or refresh a session timer.
#[derive(Debug)]
pub(super) enum Decision {
    /// Answer `2xx` with these extra headers; run the timer (`Some`) or none.
    Answer {
        /// `Session-Expires` (and `Require: timer`) for the `2xx`.
        headers: Vec<Header>,
        /// The negotiated interval and whether the box refreshes.
        timer: Option<(u32, bool)>,
    },
    /// Answer this error instead (`422` or `400`).
    Refuse(rsip::Response),
}

impl SipEndpoint {
    /// Session timers are on (`[sip] session_expires_s` is not 0).
    pub(super) fn session_timers_on(&self) -> bool {
        self.settings.sip.session_timer.is_some()
    }

    /// Negotiates `request` (an INVITE or a refresh the far end sent) as its UAS.
    pub(super) fn session_decision(&self, request: &rsip::Request) -> Decision {
        let Some(config) = self.settings.sip.session_timer else {
            return Decision::Answer {
                headers: Vec::new(),
                timer: None,
            };
        };
        let asked = match timer_request(request) {
            Ok(a) => a,
            Err(e) => return Decision::Refuse(bad_header(request, &e)),
        };
        match session_timer::negotiate(config, asked) {
            Negotiation::None => Decision::Answer {
                headers: Vec::new(),
                timer: None,
            },
            Negotiation::TooSmall { min_se } => Decision::Refuse(too_small(request, min_se)),
            Negotiation::Timer {
                session_expires,
                require,
            } => Decision::Answer {
                headers: answer_headers(session_expires, require),
                // We answer this request: `uas` is us.
                timer: Some((
                    session_expires.delta,
                    session_expires.refresher == Some(Refresher::Uas),
                )),
            },
        }
    }

    /// Starts (or restarts) `leg`'s session timer, or stops it (`None`).
    pub(super) fn set_session(
        &mut self,
        now: Instant,
        leg: LegId,
        timer: Option<(u32, bool)>,
        far_end_allow: Option<&rsip::Headers>,
    ) {
        let our_min_se = self
            .settings
            .sip
            .session_timer
            .map_or(session_timer::MIN_SE_FLOOR, |c| c.min_se);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let mut min_se = our_min_se;
        if let Some(old) = l.session.take() {
            self.session_deadlines.remove(&(old.timer.timeout(), leg));
            min_se = old.min_se;
            if timer.is_none() {
                tracing::info!(%leg, "session timer off (refresh without Session-Expires)");
            }
        }
        let Some((interval, we_refresh)) = timer else {
            return;
        };
        let update = far_end_allow.is_some_and(allows_update);
        let session = LegSession {
            timer: SessionTimer::new(now, interval, we_refresh),
            update,
            pending: None,
            min_se,
        };
        tracing::debug!(%leg, interval, we_refresh, update, "session timer running");
        self.session_deadlines
            .insert((session.timer.timeout(), leg));
        l.session = Some(session);
    }

    /// Forgets `leg`'s timer (the leg ends).
    pub(super) fn drop_session(&mut self, leg: LegId, l: &Leg) {
        if let Some(s) = &l.session {
            self.session_deadlines.remove(&(s.timer.timeout(), leg));
        }
    }

    /// The next session-timer deadline of any leg.
    pub(super) fn session_timeout(&self) -> Option<Instant> {
        self.session_deadlines.first().map(|(at, _)| *at)
    }

    /// Handles every session-timer deadline due at `now`.
    pub(super) fn on_session_timeout(&mut self, now: Instant) {
        while let Some(&(at, leg)) = self.session_deadlines.first() {
            if at > now {
                break;
            }
            self.session_deadlines.remove(&(at, leg));
            let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) else {
                continue;
            };
            match s.timer.poll(now) {
                Some(TimerEvent::Refresh) => {
                    self.session_deadlines.insert((s.timer.timeout(), leg));
                    let proposal = s.timer.refresh_proposal(s.min_se);
                    self.send_refresh(now, leg, proposal);
                }
                Some(TimerEvent::Expired) => self.session_expired(leg, "no refresh in time"),
                None => {
                    self.session_deadlines.insert((s.timer.timeout(), leg));
                }
            }
        }
    }

    /// The session of `leg` is over: call control ends the call (BYE, CDR cause).
    fn session_expired(&mut self, leg: LegId, why: &str) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if let Some(s) = l.session.take() {
            self.session_deadlines.remove(&(s.timer.timeout(), leg));
        }
        tracing::warn!(%leg, sip_call_id = l.sip_call_id, why, "session expired: ending the call");
        self.input(SipInput::SessionExpired { leg });
    }

    /// Sends our refresh of `leg`'s session proposing `proposal` (the current interval,
    /// or the raised one of the retry after a `422`): UPDATE when the far end allows
    /// it, else a re-INVITE with the current SDP.
    fn send_refresh(&mut self, now: Instant, leg: LegId, proposal: Proposal) {
        let law = self.settings.law;
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let (Some(id), Some(s)) = (l.dialog.clone(), l.session.as_ref()) else {
            return;
        };
        let interval = proposal.session_expires;
        let update = s.update;
        // We send this request and keep refreshing (refresher=uac).
        let mut extra = proposal.refresh_headers();
        let (method, body) = if update {
            (Method::Update, Vec::new())
        } else {
            let direction = if l.held {
                Direction::RecvOnly
            } else {
                Direction::SendRecv
            };
            let local = l.local_media(direction, false);
            let body = sdp::build_offer(&local, l.remote.map_or(law, |r| r.law));
            extra.push(Header::ContentType(rsip::headers::ContentType::new(
                "application/sdp",
            )));
            (Method::Invite, body)
        };
        match self.dialogs.send_request(now, &id, method, extra, body) {
            Ok((request, peer)) => {
                let seq = transaction::cseq(&request.headers).ok().map(|c| c.seq);
                if let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) {
                    s.pending = seq.map(|seq| (seq, proposal));
                }
                tracing::debug!(%leg, %method, interval, "session refresh sent");
                if let Err(e) = self.tx.send_request(now, request, peer) {
                    tracing::warn!(%leg, error = %e, "session refresh not sent");
                }
            }
            // A re-INVITE of the far end is under way: it refreshes the session itself.
            Err(e) => tracing::debug!(%leg, error = %e, "session refresh not built"),
        }
    }

    /// The `2xx` to our INVITE on outgoing leg `leg`, which proposed `proposal`
    /// (RFC 4028 7.2): its `Session-Expires` starts the leg's timer (the box refreshes
    /// unless it says `refresher=uas`); without one the session has no timer; an
    /// unreadable one (or below 90 s) is logged and runs none.
    pub(super) fn session_from_answer(
        &mut self,
        now: Instant,
        leg: LegId,
        proposal: Option<Proposal>,
        response: &rsip::Response,
    ) {
        let Some(proposal) = proposal else {
            return;
        };
        match proposal.answered(session_timer::session_expires_of(&response.headers)) {
            Ok(Some(timer)) => {
                self.set_session(now, leg, Some(timer), Some(&response.headers));
                if let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) {
                    s.min_se = proposal.min_se;
                }
            }
            Ok(None) => {
                tracing::debug!(%leg, "2xx without Session-Expires: no session timer")
            }
            Err(e) => {
                tracing::info!(%leg, error = %e, "2xx with a bad Session-Expires: no session timer")
            }
        }
    }

    /// Our refresh of `leg` proposing `proposal` was refused `422 Session Interval Too
    /// Small` (RFC 4028 7.4): retried once with `Session-Expires` and `Min-SE` raised
    /// to the `422`'s `Min-SE` (the leg keeps that `Min-SE` for later refreshes); a
    /// second `422` or one that cannot be retried ends the session.
    fn refresh_too_small(
        &mut self,
        now: Instant,
        leg: LegId,
        proposal: Proposal,
        response: &rsip::Response,
    ) {
        let next = match proposal.after_too_small(session_timer::min_se_of(&response.headers)) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(%leg, error = %e, "session refresh refused 422: session interval not agreed");
                self.session_expired(leg, "session refresh refused 422");
                return;
            }
        };
        let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) else {
            return;
        };
        s.pending = None;
        s.min_se = next.min_se;
        tracing::info!(%leg, session_expires = next.session_expires, "session refresh refused 422: retried with the far end's Min-SE");
        self.send_refresh(now, leg, next);
        let pending = self
            .legs
            .get(&leg)
            .and_then(|l| l.session.as_ref())
            .is_some_and(|s| s.pending.is_some());
        if !pending {
            // Not sent (the dialog is gone or busy with a re-INVITE of the far end,
            // which refreshes the session itself): the timer's expiry still stands.
            tracing::debug!(%leg, "session refresh after 422 not sent");
        }
    }

    /// A final response to our refresh on dialog `id`; `true` when it was one.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        id: &DialogId,
        response: &rsip::Response,
    ) -> bool {
        let Some(&leg) = self.by_dialog.get(id) else {
            return false;
        };
        let Ok(cseq) = transaction::cseq(&response.headers) else {
            return false;
        };
        let Some(s) = self.legs.get(&leg).and_then(|l| l.session.as_ref()) else {
            return false;
        };
        let Some((_, proposal)) = s.pending.filter(|(seq, _)| *seq == cseq.seq) else {
            return false;
        };
        let code = response.status_code.code();
        if code < 200 {
            return true;
        }
        if (200..300).contains(&code) {
            let interval = proposal.session_expires;
            // The 2xx names the interval and refresher; without it the far end
            // dropped the timer (RFC 4028 7.4).
            let timer = match session_expires_header(&response.headers).map(SessionExpires::parse) {
                Some(Ok(se)) => Some((se.delta, se.refresher != Some(Refresher::Uas))),
                Some(Err(e)) => {
                    tracing::info!(%leg, error = %e, "refresh answer with a bad Session-Expires: keeping ours");
                    Some((interval, true))
                }
                None => None,
            };
            let allow = allows_update(&response.headers).then_some(&response.headers);
            let update = self
                .legs
                .get(&leg)
                .and_then(|l| l.session.as_ref())
                .is_some_and(|s| s.update);
            self.set_session(now, leg, timer, allow);
            if let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) {
                s.update |= update;
            }
            tracing::info!(%leg, "session refreshed");
        } else if code == 422 {
            self.refresh_too_small(now, leg, proposal, response);
        } else if code == 491 {
            // Glare: the far end's re-INVITE refreshes the session, or the dialog
            // layer retries ours.
            if let Some(s) = self.legs.get_mut(&leg).and_then(|l| l.session.as_mut()) {
                s.pending = None;
            }
        } else {
            self.session_expired(leg, "session refresh refused");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &str) -> rsip::Request {
        let text = format!(
            "UPDATE sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:201@127.0.0.1>;tag=a\r\nTo: <sip:101@127.0.0.1>;tag=b\r\n\
             Call-ID: c1\r\nCSeq: 2 UPDATE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_bytes()).expect("parses")
    }

    #[test]
    fn the_request_is_read_from_supported_require_session_expires_and_min_se() {
        let r = timer_request(&request(
            "Supported: 100rel, timer\r\nSession-Expires: 600;refresher=uac\r\nMin-SE: 120\r\n",
        ))
        .expect("valid");
        assert!(r.supported);
        assert_eq!(
            r.session_expires,
            Some(SessionExpires {
                delta: 600,
                refresher: Some(Refresher::Uac)
            })
        );
        assert_eq!(r.min_se, Some(120));
        let r = timer_request(&request("Require: timer\r\nx: 1800\r\n")).expect("valid");
        assert!(r.supported);
        assert_eq!(r.session_expires.map(|s| s.delta), Some(1800));
        let r = timer_request(&request("Supported: 100rel\r\n")).expect("valid");
        assert_eq!(r, TimerRequest::default());
    }

    #[test]
    fn unreadable_headers_are_errors_named_in_a_400() {
        for bad in [
            "Session-Expires: soon\r\n",
            "Min-SE: -1\r\nSession-Expires: 90\r\n",
        ] {
            let req = request(bad);
            let e = timer_request(&req).expect_err(bad);
            let response = bad_header(&req, &e);
            assert_eq!(response.status_code.code(), 400);
            let warning = wire::header(&response.headers, "Warning").expect("warning");
            assert!(
                warning.contains("Session-Expires") || warning.contains("Min-SE"),
                "{warning}"
            );
        }
    }

    #[test]
    fn a_422_carries_our_min_se_and_a_2xx_the_session_expires() {
        let response = too_small(&request("Session-Expires: 60\r\n"), 90);
        assert_eq!(response.status_code.code(), 422);
        assert_eq!(wire::header(&response.headers, "Min-SE"), Some("90"));
        let headers = answer_headers(
            SessionExpires {
                delta: 90,
                refresher: Some(Refresher::Uas),
            },
            true,
        );
        let h = rsip::Headers::from(headers);
        assert_eq!(
            wire::header(&h, "Session-Expires"),
            Some("90;refresher=uas")
        );
        assert!(h
            .iter()
            .any(|h| matches!(h, Header::Require(r) if r.value() == "timer")));
    }

    #[test]
    fn update_is_used_only_when_the_far_end_allows_it() {
        assert!(allows_update(
            &request("Allow: INVITE, ACK, BYE, update\r\n").headers
        ));
        assert!(!allows_update(
            &request("Allow: INVITE, ACK, BYE\r\n").headers
        ));
        assert!(!allows_update(&request("").headers));
    }
}
