//! Transfers from SIP phones: REFER (RFC 3515) with its implicit subscription, and
//! the `Replaces` header (RFC 3891) in a Refer-To or on an INVITE.
//!
//! A REFER is taken only inside an answered dialog with a local phone (the dialog
//! tags stand for the phone's digest login at call set-up); the trunk may not
//! transfer (`403`). Refer-To must be a SIP URI: without `Replaces` its user part is
//! the number to transfer to, and when that number starts with the outside-line
//! prefix the referrer's toll classes apply exactly as when it dials (`403`, nothing
//! changes). With `?Replaces=call-id;to-tag=..;from-tag=..` it must name another
//! dialog of the same phone account with the box (attended transfer; either tag
//! orientation is accepted, as phones differ); an unknown dialog is reported as a
//! `481` in the NOTIFY, the way the INVITE the REFER asked for would have failed.
//! One transfer at a time per leg (`491`).
//!
//! Accepted REFERs get `202` and at once a NOTIFY (`Event: refer;id=<CSeq>`,
//! `message/sipfrag` body `SIP/2.0 100 Trying`, subscription active); call control's
//! [`crate::call::Output::SipTransferStatus`] sends the final NOTIFY (`200 OK`, or
//! the failure) with `Subscription-State: terminated;reason=noresource`.

use std::time::Instant;

use branchline_sip::dialog::DialogId;
use branchline_sip::guard::Verdict;
use branchline_sip::transaction::{self, ServerKey};
use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::{wire, SipEndpoint};
use crate::call::sip::{LegId, SipInput, TransferTarget};

use super::legs::LegState;

/// How long the box says a REFER's subscription lasts while the transfer runs.
const REFER_SUBSCRIPTION_S: u32 = 60;

/// The dialog a `Replaces` header names (RFC 3891).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
}

/// What a Refer-To header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReferTo {
    /// The user part of the URI (the number).
    pub user: String,
    /// An embedded `Replaces` header (attended transfer).
    pub replaces: Option<Replaces>,
}

/// Why a Refer-To or Replaces value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ReferError {
    /// Not `sip:`/`sips:` with a user part.
    #[error("Refer-To is not a SIP URI with a user part: {0:?}")]
    NotSipUser(String),
    /// A Replaces value without its call-id, to-tag or from-tag.
    #[error("Replaces lacks the call-id, to-tag or from-tag: {0:?}")]
    BadReplaces(String),
    /// A `%xx` escape that is not hex, or that decodes to invalid UTF-8.
    #[error("bad %-escape: {0:?}")]
    BadEscape(String),
}

/// Decodes `%xx` escapes (URI headers carry `;` `=` `@` escaped; a phone's dialled
/// number `#` as `%23`).
pub(super) fn percent_decode(s: &str) -> Result<String, ReferError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ReferError::BadEscape(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ReferError::BadEscape(s.to_owned()))
}

/// Parses a `Replaces` header value: `call-id;to-tag=a;from-tag=b[;early-only]`.
pub(super) fn parse_replaces(value: &str) -> Result<Replaces, ReferError> {
    let bad = || ReferError::BadReplaces(value.to_owned());
    let mut parts = value.split(';').map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty()).ok_or_else(bad)?;
    let (mut to_tag, mut from_tag) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("to-tag") => to_tag = Some(v.trim()),
            Some((k, v)) if k.trim().eq_ignore_ascii_case("from-tag") => from_tag = Some(v.trim()),
            _ => {}
        }
    }
    match (to_tag, from_tag) {
        (Some(t), Some(f)) if !t.is_empty() && !f.is_empty() => Ok(Replaces {
            call_id: call_id.to_owned(),
            to_tag: t.to_owned(),
            from_tag: f.to_owned(),
        }),
        _ => Err(bad()),
    }
}

/// Parses a Refer-To value (`<sip:102@box?Replaces=...>` or a bare URI).
pub(super) fn parse_refer_to(value: &str) -> Result<ReferTo, ReferError> {
    let value = value.trim();
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let not_sip = || ReferError::NotSipUser(value.to_owned());
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .ok_or_else(not_sip)?;
    let (address, headers) = match rest.split_once('?') {
        Some((a, h)) => (a, Some(h)),
        None => (rest, None),
    };
    let (user, _) = address.split_once('@').ok_or_else(not_sip)?;
    let user = percent_decode(user.split(';').next().unwrap_or(user))?;
    if user.is_empty() {
        return Err(not_sip());
    }
    let mut replaces = None;
    for h in headers.into_iter().flat_map(|h| h.split('&')) {
        if let Some((name, v)) = h.split_once('=') {
            if name.eq_ignore_ascii_case("replaces") {
                replaces = Some(parse_replaces(&percent_decode(v)?)?);
            }
        }
    }
    Ok(ReferTo { user, replaces })
}

/// A `message/sipfrag` body with the status line of `status` (the statuses call
/// control reports; RFC 3261 reason phrases).
pub(super) fn sipfrag(status: u16) -> Vec<u8> {
    let reason = match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ if status < 200 => "Progress",
        _ if status < 300 => "Success",
        _ => "Failed",
    };
    format!("SIP/2.0 {status} {reason}\r\n").into_bytes()
}

impl SipEndpoint {
    /// The leg whose dialog `r` names, in either tag orientation.
    pub(super) fn leg_of_replaces(&self, r: &Replaces) -> Option<LegId> {
        self.by_dialog.iter().find_map(|(id, leg)| {
            let matches = id.call_id == r.call_id
                && ((id.local_tag == r.to_tag && id.remote_tag == r.from_tag)
                    || (id.local_tag == r.from_tag && id.remote_tag == r.to_tag));
            matches.then_some(*leg)
        })
    }

    /// A REFER inside the dialog of `leg` (see the module doc).
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        leg: Option<LegId>,
    ) {
        let refuse = |this: &mut Self, status: u16, why: &str| {
            tracing::info!(leg = ?leg, status, why, "REFER refused");
            let response = transaction::response_for(&request, status.into(), None);
            this.respond(now, &key, response);
        };
        let Some((leg, l)) = leg.and_then(|id| self.legs.get(&id).map(|l| (id, l))) else {
            return refuse(self, 481, "no call on this dialog");
        };
        if l.state != LegState::Answered {
            return refuse(self, 481, "call not answered");
        }
        let Some(extension) = l.extension.clone() else {
            return refuse(self, 403, "only local phones may transfer");
        };
        if l.refer.is_some() {
            return refuse(self, 491, "a transfer is already in progress");
        }
        let Some(value) = wire::header(&request.headers, "Refer-To") else {
            return refuse(self, 400, "no Refer-To");
        };
        let refer_to = match parse_refer_to(value) {
            Ok(r) => r,
            Err(e) => return refuse(self, 400, &e.to_string()),
        };
        let target = match &refer_to.replaces {
            Some(r) => match self.leg_of_replaces(r) {
                Some(other) if other == leg => {
                    return refuse(self, 400, "Replaces names the REFER's own dialog");
                }
                Some(other) => {
                    let same_phone = self
                        .legs
                        .get(&other)
                        .is_some_and(|o| o.extension.as_deref() == Some(extension.as_str()));
                    if !same_phone {
                        return refuse(self, 403, "Replaces names another extension's call");
                    }
                    Some(TransferTarget::Replaces(other))
                }
                None => None,
            },
            None => {
                if let Some(prefix) = self.settings.outside_line_prefix.clone() {
                    if let Some(number) = refer_to.user.strip_prefix(prefix.as_str()) {
                        let number = number.trim_end_matches('#');
                        if !number.is_empty() {
                            let allowed = self.toll_classes(&extension);
                            let verdict = branchline_sip::guard::toll::check_dialled(
                                &self.plan, number, allowed,
                            );
                            if let Verdict::Reject(r) = verdict {
                                tracing::warn!(extension, number, reason = ?r.reason, "transfer refused (toll restriction)");
                                return refuse(self, 403, "toll restriction");
                            }
                        }
                    }
                }
                Some(TransferTarget::Number(refer_to.user.clone()))
            }
        };
        let seq = transaction::cseq(&request.headers).map_or(0, |c| c.seq);
        let mut response = transaction::response_for(
            &request,
            rsip::StatusCode::Other(202, "Accepted".into()),
            None,
        );
        let contact = self.legs.get(&leg).and_then(|l| l.local_contact());
        if let Some(c) = contact {
            response
                .headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{c}>"
                ))));
        }
        self.respond(now, &key, response);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.refer = Some(seq);
        }
        tracing::info!(%leg, extension, refer_to = value, "REFER accepted");
        match target {
            Some(target) => {
                self.transfer_notify(now, leg, 100);
                self.input(SipInput::Transfer { leg, target });
            }
            // The dialog to replace is not the box's: the INVITE the REFER asks for
            // would get 481, and so does the REFER's subscription.
            None => self.transfer_notify(now, leg, 481),
        }
    }

    /// Sends the REFER subscription's NOTIFY on `leg` with `status`; a final status
    /// ends the subscription.
    pub(super) fn transfer_notify(&mut self, now: Instant, leg: LegId, status: u16) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(seq) = l.refer else {
            tracing::debug!(%leg, status, "transfer status without a REFER");
            return;
        };
        let Some(id) = l.dialog.clone() else {
            return;
        };
        let state = if status >= 200 {
            l.refer = None;
            "terminated;reason=noresource".to_owned()
        } else {
            format!("active;expires={REFER_SUBSCRIPTION_S}")
        };
        self.send_notify(now, &id, seq, &state, status);
    }

    fn send_notify(&mut self, now: Instant, id: &DialogId, seq: u32, state: &str, status: u16) {
        let extra = vec![
            Header::Event(rsip::headers::Event::new(format!("refer;id={seq}"))),
            Header::SubscriptionState(rsip::headers::SubscriptionState::new(state.to_owned())),
            Header::ContentType(rsip::headers::ContentType::new(
                "message/sipfrag;version=2.0",
            )),
        ];
        match self
            .dialogs
            .send_request(now, id, Method::Notify, extra, sipfrag(status))
        {
            Ok((request, peer)) => {
                if let Err(e) = self.tx.send_request(now, request, peer) {
                    tracing::debug!(error = %e, "REFER NOTIFY not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "REFER NOTIFY not built"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_refer_to() {
        let r = parse_refer_to("<sip:102@192.0.2.1>").unwrap();
        assert_eq!(r.user, "102");
        assert_eq!(r.replaces, None);
        let r = parse_refer_to("sip:9555123%23@box;transport=udp").unwrap();
        assert_eq!(r.user, "9555123#");
        let r = parse_refer_to("\"Reception\" <sips:200@box>;x=y").unwrap();
        assert_eq!(r.user, "200");
    }

    #[test]
    fn attended_refer_to() {
        let r = parse_refer_to(
            "<sip:211@box?Replaces=abc%40host%3Bto-tag%3Dt1%3Bfrom-tag%3Df1&Require=replaces>",
        )
        .unwrap();
        assert_eq!(r.user, "211");
        assert_eq!(
            r.replaces,
            Some(Replaces {
                call_id: "abc@host".into(),
                to_tag: "t1".into(),
                from_tag: "f1".into(),
            })
        );
    }

    #[test]
    fn bad_refer_to_values() {
        for bad in [
            "<tel:+4930123>",
            "<sip:box>",
            "<sip:@box>",
            "mailto:a@b",
            "<sip:1%zz@box>",
            "<sip:1@box?Replaces=abc%3Bto-tag%3Dt1>",
            "<sip:1@box?Replaces=%3Bto-tag%3Dt%3Bfrom-tag%3Df>",
        ] {
            assert!(parse_refer_to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replaces_header() {
        let r = parse_replaces("x@y; from-tag=F ;to-tag=T;early-only").unwrap();
        assert_eq!((r.to_tag.as_str(), r.from_tag.as_str()), ("T", "F"));
        assert!(parse_replaces("x@y;to-tag=;from-tag=f").is_err());
    }

    #[test]
    fn sipfrag_bodies() {
        assert_eq!(sipfrag(100), b"SIP/2.0 100 Trying\r\n");
        assert_eq!(sipfrag(200), b"SIP/2.0 200 OK\r\n");
        assert_eq!(sipfrag(486), b"SIP/2.0 486 Busy Here\r\n");
    }
}
