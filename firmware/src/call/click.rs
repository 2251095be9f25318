//! Click-to-call: a desktop asks the box to ring a user's own phone and, when that
//! phone answers, to dial a number for it ([`CallControl::click_to_call`], behind
//! `POST /api/v1/calls`).
//!
//! The number is checked against the dial plan up front (an extension, a queue, or the
//! outside-line prefix and a number: exactly what the phone could dial) and the phone
//! must be free. The phone rings with the target as its caller ID (number, and the
//! extension's name for an internal target). An extension with an FXS port is rung
//! there: lifting it plays the digits into call control as if the user had dialled
//! them, so the routing, the outside routes (trunk, then FXO) and the CDR are those of
//! a dialled call; an outside number gets a `#` so it is dialled at once instead of
//! after the inter-digit timeout. A SIP-only extension's phones get an INVITE; the leg
//! that answers becomes the caller of the dialled call, placed like a blind transfer's
//! (the leg is up already). The call keeps the id [`CallControl::click_to_call`]
//! returned. No answer within [`CLICK_TO_CALL_ANSWER`] ends it (the phone stops
//! ringing; a `no_answer` CDR from the phone to the target); a SIP phone that declines
//! or cannot be reached ends it too (`busy` or `no_answer`).
//!
//! # Outside numbers and `+`
//!
//! A customer's or a lead's number is stored as digits with an optional leading `+`
//! (E.164). [`CallControl::outside_dial_string`] turns it into what a phone on the
//! site would dial, then puts the outside-line prefix in front, so the call takes the
//! normal outside routes (SIP trunk, then FXO) and toll rules like a dialled one. A
//! `+` number is rewritten by the site's country's numbering plan ([`e164_dialable`],
//! the plan the toll rules classify with) the way gateways' number-manipulation
//! tables do for PSTN lines (an FXO line cannot
//! send a `+`, and many trunks want the national form): the site's own country code
//! becomes the national trunk prefix (`+4930123456` at a German site dials
//! `030123456`; `+12125550100` at a US site `12125550100`), any other becomes the
//! international access prefix (`+4930123456` at a US site dials `0114930123456`,
//! at a Japanese one `0104930123456`). A number without `+` is dialled as stored.
//! A `+` number with no digits, more than 15 digits (E.164's limit), or nothing after
//! the site's country code is refused as a bad number.
//!
//! # Calling permissions
//!
//! A click-to-call holds the calling permissions of the calling extension's phone
//! (its FXS port's `permissions`, else its SIP account's; see [`super::outside`]),
//! as the call it becomes does once dialled. When HQ's dial route matching an
//! outside number needs a permission that phone lacks, nothing rings:
//! [`ClickToCallError::NotPermitted`] names the route and the permission (the API
//! answers 403). Users' roles carry no calling permissions, so the user's own roles
//! do not widen or narrow this.
//!
//! Limits: a SIP phone hears silence, not ringback, while the target rings (no in-band
//! tones towards SIP legs yet). The SIP endpoint's per-account toll check
//! (`international`) applies to INVITEs a phone sends, not to this call the box
//! places for it. The `+`
//! rewriting knows the countries the box has tone plans for ([`Country`]); a trunk
//! that wants E.164 with `+` gets the national or international form all the same.

use std::time::{Duration, Instant};

use crate::cdr::{Direction, Disposition, HangupSide};
use crate::tones::Country;

use super::{
    Call, CallControl, EndReason, Fxs, LegId, LegInfo, Output, Party, PlanMatch, SipTarget,
};

/// How long the calling phone rings before a click-to-call gives up.
pub const CLICK_TO_CALL_ANSWER: Duration = Duration::from_secs(30);
/// Longest number accepted (an outside prefix and 15 E.164 digits fit).
const MAX_DIGITS: usize = 24;

/// Most digits of an E.164 number (country code included).
pub const MAX_E164_DIGITS: usize = 15;

/// What a phone at a site of `country` dials for E.164 number `e164` (`+` then at
/// most [`MAX_E164_DIGITS`] digits): the site's numbering plan (the one toll rules
/// classify with, [`crate::sip_endpoint::numbering_plan`]) writes it in national or
/// international form (see the module docs). The reason when it is not a usable
/// E.164 number.
pub fn e164_dialable(country: Country, e164: &str) -> Result<String, &'static str> {
    let digits = e164
        .strip_prefix('+')
        .ok_or("an E.164 number starts with +")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("+ must be followed by digits 0-9");
    }
    if digits.len() > MAX_E164_DIGITS {
        return Err("an E.164 number has at most 15 digits");
    }
    crate::sip_endpoint::numbering_plan(country)
        .dialable(e164)
        .map_err(|_| "nothing follows the country code")
}

/// Why [`CallControl::click_to_call`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickToCallError {
    /// `to` is not something the phone could dial.
    #[error("{to:?} is not a number the dial plan knows: {reason}")]
    BadNumber {
        /// The number given.
        to: String,
        /// Why.
        reason: &'static str,
    },
    /// No extension has this number.
    #[error("no extension {0}")]
    UnknownExtension(String),
    /// The phone is in use (off-hook, ringing or in a call) or out of service.
    #[error("the phone of extension {0} is busy")]
    Busy(String),
    /// An outside number was asked for (a customer's or a lead's), but the box has no
    /// outside-line prefix, so no route out.
    #[error("no outside-line prefix is configured, so {0} cannot be dialled out")]
    NoOutsideLine(String),
    /// The dial route matching the outside number needs a calling permission the
    /// calling extension's phone does not hold (nothing rings).
    #[error("{to} cannot be dialled from extension {from}: {refused}")]
    NotPermitted {
        /// The calling extension.
        from: String,
        /// The number asked for.
        to: String,
        /// The route and the permission it needs.
        refused: super::RouteRefused,
    },
}

/// A click-to-call ringing its caller's phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Click {
    /// The call's key (reserved: the dialled call gets it).
    pub(super) key: super::CallKey,
    /// The digits to dial once answered (with `#` for an outside number).
    pub(super) digits: String,
    /// When the API asked.
    pub(super) started: Instant,
    /// When it gives up.
    pub(super) deadline: Instant,
}

impl CallControl {
    /// What a phone dials to reach outside number `number` (a customer's or a lead's,
    /// stored without the prefix): the outside-line prefix, then the number; a `+`
    /// number rewritten by the site's numbering plan first ([`e164_dialable`]; see the
    /// module docs).
    pub fn outside_dial_string(&self, number: &str) -> Result<String, ClickToCallError> {
        let prefix = self
            .settings
            .outside_line_prefix
            .as_deref()
            .ok_or_else(|| ClickToCallError::NoOutsideLine(number.to_owned()))?;
        let digits = if number.starts_with('+') {
            e164_dialable(self.settings.country, number).map_err(|reason| {
                ClickToCallError::BadNumber {
                    to: number.to_owned(),
                    reason,
                }
            })?
        } else {
            number.to_owned()
        };
        Ok(format!("{prefix}{digits}"))
    }

    /// Rings the FXS phone of extension `from` with `to` as caller ID; when it answers,
    /// `to` is dialled as if typed on it. Returns the call's id (its CDR's). See the
    /// module docs.
    pub fn click_to_call(
        &mut self,
        now: Instant,
        from: &str,
        to: &str,
    ) -> Result<String, ClickToCallError> {
        let bad = |reason| ClickToCallError::BadNumber {
            to: to.to_owned(),
            reason,
        };
        if to.is_empty() || to.len() > MAX_DIGITS || !to.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("1 to 24 digits 0-9"));
        }
        let port = self.fxs_port_of(from);
        if port.is_none() && !self.is_sip_extension(from) {
            return Err(ClickToCallError::UnknownExtension(from.to_owned()));
        }
        if to == from {
            return Err(bad("it is the calling extension"));
        }
        let feature = self
            .center
            .as_ref()
            .map(|c| c.codes_parse_is_code(to))
            .unwrap_or(false);
        if feature {
            return Err(bad("it is a feature code"));
        }
        let (digits, shown, name) = match self.match_plan(to) {
            PlanMatch::Extension => (to.to_owned(), to.to_owned(), self.extension_name(to)),
            PlanMatch::Outside { complete } => {
                let number = self.outside_number(to).unwrap_or_default().to_owned();
                if number.is_empty() {
                    return Err(bad("no number after the outside-line prefix"));
                }
                // Refused up front, before the phone rings, when the call would be
                // refused once dialled (the same check, the same phone's permissions).
                let held = self.extension_permissions(from);
                if let Err(refused) = self.dial_routes.check(&number, &held) {
                    tracing::warn!(
                        from,
                        to,
                        route = refused.route,
                        permission = refused.permission,
                        "click-to-call refused: the dial route needs a calling permission the phone lacks"
                    );
                    return Err(ClickToCallError::NotPermitted {
                        from: from.to_owned(),
                        to: to.to_owned(),
                        refused,
                    });
                }
                let digits = if complete {
                    to.to_owned()
                } else {
                    format!("{to}#")
                };
                (digits, number, String::new())
            }
            PlanMatch::Partial => return Err(bad("incomplete")),
            PlanMatch::Room(_) => return Err(bad("a conference room needs its PIN keyed")),
            PlanMatch::None => return Err(bad("no extension, queue or outside line")),
        };
        let free = match port {
            Some(port) => self
                .fxs
                .get(&port)
                .is_some_and(|p| p.state == Fxs::Idle && !p.off_hook),
            // A SIP phone with a call (or rung for a click-to-call) is busy.
            None => !self.legs.values().any(|l| l.phone && l.number == from),
        };
        if !free {
            return Err(ClickToCallError::Busy(from.to_owned()));
        }
        let key = self.next_call;
        self.next_call += 1;
        let id = format!("{}-{}", self.settings.call_id_prefix, key);
        let click = Click {
            key,
            digits,
            started: now,
            deadline: now + CLICK_TO_CALL_ANSWER,
        };
        tracing::info!(
            call = id,
            from,
            to,
            ?port,
            "click-to-call: ringing the caller's phone"
        );
        match port {
            Some(port) => {
                self.ring(port, &shown, &name);
                self.set_fxs(port, Fxs::ClickToCall(click));
            }
            None => {
                let n = self.next_leg;
                self.next_leg += 1;
                let leg = LegId(LegId::OUTGOING | n);
                let sip_call_id = format!("{id}-{n}@{}", self.settings.sip_host);
                self.legs.insert(
                    leg,
                    LegInfo {
                        call: key,
                        number: from.to_owned(),
                        sip_call_id: sip_call_id.clone(),
                        far_held: false,
                        phone: true,
                    },
                );
                self.outputs.push_back(Output::SipDial {
                    leg,
                    target: SipTarget::Extension(from.to_owned()),
                    caller_number: shown,
                    caller_name: name,
                    sip_call_id,
                });
                self.sip_clicks.insert(leg, click);
            }
        }
        Ok(id)
    }

    /// The SIP phone rung for a click-to-call answered on `leg`: the leg calls the
    /// number, as a transferee does after a blind transfer (it is up already).
    pub(super) fn click_sip_answered(&mut self, now: Instant, leg: LegId, click: Click) {
        let Some(info) = self.legs.get(&leg).cloned() else {
            return;
        };
        let mut call = self.click_call(&info.number, &click, Party::Sip(leg), now);
        call.caller_sip_call_id = Some(info.sip_call_id);
        call.caller_connected = true;
        let outside = call.direction == Direction::Outbound;
        self.reserved_key = Some(click.key);
        if outside {
            self.call_outside(now, call);
        } else {
            self.call_extension(now, call);
        }
        self.reserved_key = None;
    }

    /// The SIP phone rung for a click-to-call did not answer: its leg ended with
    /// `reason`, or `reason` is `None` when call control gives up (no answer in time,
    /// shutdown) and ends the leg itself. The attempt gets a CDR.
    pub(super) fn click_sip_failed(
        &mut self,
        now: Instant,
        leg: LegId,
        click: Click,
        reason: Option<EndReason>,
    ) {
        let extension = self
            .legs
            .get(&leg)
            .map(|l| l.number.clone())
            .unwrap_or_default();
        let disposition = match reason {
            Some(EndReason::Busy) => Disposition::Busy,
            Some(EndReason::Congestion) => Disposition::Congestion,
            _ => Disposition::NoAnswer,
        };
        if reason.is_none() {
            self.hangup_leg(leg, EndReason::NoAnswer);
        }
        tracing::info!(%leg, ?reason, "click-to-call: the caller's SIP phone did not answer");
        let mut call = self.click_call(&extension, &click, Party::Sip(leg), click.started);
        call.id = format!("{}-{}", self.settings.call_id_prefix, click.key);
        self.emit_cdr(now, &call, disposition, HangupSide::System);
    }

    /// A call from extension `from`'s phone (`caller`) to a click-to-call's number,
    /// alerting, not placed yet (no id: `new_call` gives the reserved one).
    fn click_call(&self, from: &str, click: &Click, caller: Party, started: Instant) -> Call {
        let number = click.digits.trim_end_matches('#');
        let (direction, callee_number) = match self.outside_number(number) {
            Some(n) => (Direction::Outbound, n.to_owned()),
            None => (Direction::Internal, number.to_owned()),
        };
        Call::new(
            direction,
            caller,
            from.to_owned(),
            self.extension_name(from),
            callee_number,
            started,
        )
    }

    /// The phone of a click-to-call answered: it dials the number.
    pub(super) fn click_answered(&mut self, now: Instant, port: u8, click: Click) {
        self.cmd(port, line_proto::Command::StopRing);
        self.set_fxs(
            port,
            Fxs::Dialing {
                digits: String::new(),
                started: now,
                deadline: now + self.settings.inter_digit_timeout,
            },
        );
        // The dialled call takes the id the API returned.
        self.reserved_key = Some(click.key);
        for d in click.digits.chars() {
            if !matches!(self.fxs_state(port), Some(Fxs::Dialing { .. })) {
                break;
            }
            self.digit(now, port, d);
        }
        self.reserved_key = None;
    }

    /// A click-to-call's phone did not answer in time (or faulted): it stops ringing
    /// and the attempt gets a CDR with `disposition`.
    pub(super) fn click_failed(
        &mut self,
        now: Instant,
        port: u8,
        click: Click,
        disposition: Disposition,
    ) {
        tracing::info!(port, "click-to-call: the caller's phone did not answer");
        self.cmd(port, line_proto::Command::StopRing);
        self.set_fxs(port, Fxs::Idle);
        let number = click.digits.trim_end_matches('#');
        let direction = match self.outside_number(number) {
            Some(_) => Direction::Outbound,
            None => Direction::Internal,
        };
        let callee = self.outside_number(number).unwrap_or(number).to_owned();
        let call = super::Call {
            id: format!("{}-{}", self.settings.call_id_prefix, click.key),
            ..self.call_from_port(port, click.started, direction, callee)
        };
        self.emit_cdr(now, &call, disposition, HangupSide::System);
    }

    /// The name of extension `number` (FXS first, then SIP), "" when it has none.
    pub(super) fn extension_name(&self, number: &str) -> String {
        self.settings
            .extensions
            .iter()
            .find(|e| e.number == number)
            .map(|e| e.name.clone())
            .or_else(|| {
                self.settings
                    .sip_extensions
                    .iter()
                    .find(|e| e.number == number)
                    .map(|e| e.name.clone())
            })
            .unwrap_or_default()
    }
}
