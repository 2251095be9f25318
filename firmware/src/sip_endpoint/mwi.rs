//! Message waiting for SIP phones (RFC 3842 over RFC 6665): subscriptions to the
//! `message-summary` event and their NOTIFYs.
//!
//! - `SUBSCRIBE` with `Event: message-summary` from a local phone (digest-checked like
//!   an INVITE) to its own extension's mailbox (the Request-URI's user; another's is
//!   `403`) is answered `200` with the granted `Expires` (the asked one within
//!   [`MIN_EXPIRES`]..[`MAX_EXPIRES`], [`MAX_EXPIRES`] when absent) and followed by a
//!   NOTIFY in the new dialog with the mailbox's current counts
//!   (`Subscription-State: active;expires=N`). A refresh (a SUBSCRIBE inside the
//!   dialog) renews it; `Expires: 0` ends it (`terminated`); a SUBSCRIBE for a dialog
//!   the box does not know is `481`, for another event `489`.
//! - Every change of the mailbox's counts ([`super::SipCommand::Mwi`]) is a NOTIFY in
//!   every subscription of its extension; a subscription not refreshed in time gets a
//!   last NOTIFY with `terminated;reason=timeout` and is dropped.
//! - Phones that do not subscribe still get unsolicited NOTIFYs (see
//!   [`SipEndpoint::mwi`](super::SipEndpoint)).
//!
//! Limits: subscriptions live in memory (a restart ends them; phones subscribe again
//! when their refresh fails); NOTIFYs follow the subscriber's Contact without a route
//! set (local phones only).

use std::time::{Duration, Instant};

use branchline_sip::registrar::mwi::message_summary_body;
use branchline_sip::transaction::{self, Peer, ServerKey};
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Method};

use super::{wire, SipEndpoint};

/// Longest subscription granted (s).
pub const MAX_EXPIRES: u32 = 3600;
/// Shortest subscription granted (s): shorter requests are raised to it.
pub const MIN_EXPIRES: u32 = 60;

/// One `message-summary` subscription (a dialog the box is the notifier of).
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    /// The mailbox's extension.
    extension: String,
    call_id: String,
    /// Our tag (the To tag of the SUBSCRIBE's 200).
    local_tag: String,
    /// The subscriber's From tag.
    remote_tag: String,
    /// The SUBSCRIBE's To URI (our From in NOTIFYs).
    local_uri: String,
    /// The SUBSCRIBE's From URI (our To in NOTIFYs).
    remote_uri: String,
    /// Where NOTIFYs go: the subscriber's Contact.
    target: rsip::Uri,
    peer: Peer,
    /// CSeq of our last NOTIFY.
    seq: u32,
    expires_at: Instant,
}

/// The value of the first header named `name` (typed or not).
fn header_text(headers: &rsip::Headers, name: &str) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::Event(v) if name.eq_ignore_ascii_case("event") => Some(v.value().to_owned()),
        Header::Expires(v) if name.eq_ignore_ascii_case("expires") => Some(v.value().to_owned()),
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.clone()),
        _ => None,
    })
}

/// The event package named by an `Event` header value (`message-summary;id=1`).
fn event_package(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `Expires` granted for the asked value (`None`: absent or unreadable).
pub(super) fn granted_expires(asked: Option<u32>) -> u32 {
    match asked {
        Some(0) => 0,
        Some(s) => s.clamp(MIN_EXPIRES, MAX_EXPIRES),
        None => MAX_EXPIRES,
    }
}

impl SipEndpoint {
    /// A SUBSCRIBE (see the module docs).
    pub(super) fn on_subscribe(
        &mut self,
        now: Instant,
        key: &ServerKey,
        request: &rsip::Request,
        source: Peer,
    ) {
        let reply = |this: &mut Self, code: u16, reason: &str| {
            let status = rsip::StatusCode::Other(code, reason.into());
            let response = transaction::response_for(request, status, None);
            this.respond(now, key, response);
        };
        let event = header_text(&request.headers, "event").map(|e| event_package(&e));
        if event.as_deref() != Some("message-summary") {
            return reply(self, 489, "Bad Event");
        }
        let (Ok(call_id), Ok(Some(remote_tag)), Ok(to_tag)) = (
            transaction::call_id(&request.headers),
            transaction::from_tag(&request.headers),
            transaction::to_tag(&request.headers),
        ) else {
            return reply(self, 400, "Bad Request");
        };
        let asked = header_text(&request.headers, "expires").and_then(|e| e.trim().parse().ok());
        let expires = granted_expires(asked);
        let contact = request.headers.iter().find_map(|h| match h {
            Header::Contact(c) => c.typed().ok().map(|c| c.uri),
            _ => None,
        });
        let id = (call_id.clone(), remote_tag.clone());
        if let Some(local_tag) = to_tag {
            // A refresh or an unsubscribe inside the dialog.
            let known = self
                .mwi_subscriptions
                .get(&id)
                .is_some_and(|s| s.local_tag == local_tag);
            if !known {
                return reply(self, 481, "Subscription Does Not Exist");
            }
            let response = self.subscribe_ok(request, &local_tag, expires, source);
            self.respond(now, key, response);
            if let Some(s) = self.mwi_subscriptions.get_mut(&id) {
                s.expires_at = now + Duration::from_secs(u64::from(expires));
                if let Some(target) = contact {
                    s.target = target;
                }
            }
            return self.notify_subscription(now, &id, expires == 0, "");
        }
        let Some(extension) = self.authenticate(now, key, request, source) else {
            return;
        };
        let mailbox = request.uri.auth.as_ref().map(|a| a.user.clone());
        if mailbox.as_deref() != Some(extension.as_str()) {
            tracing::info!(
                extension,
                ?mailbox,
                "message-summary SUBSCRIBE to another mailbox refused"
            );
            return reply(self, 403, "Forbidden");
        }
        let (Some(target), Ok(from), Ok(to)) = (
            contact,
            transaction::from_header(&request.headers),
            transaction::to_header(&request.headers),
        ) else {
            return reply(self, 400, "Bad Request");
        };
        let local_tag = self.dialogs.new_tag();
        let response = self.subscribe_ok(request, &local_tag, expires, source);
        self.respond(now, key, response);
        tracing::info!(extension, expires, "message-summary subscription");
        self.mwi_subscriptions.insert(
            id.clone(),
            Subscription {
                extension,
                call_id,
                local_tag,
                remote_tag,
                local_uri: to.uri.to_string(),
                remote_uri: from.uri.to_string(),
                target,
                peer: source,
                seq: 0,
                expires_at: now + Duration::from_secs(u64::from(expires)),
            },
        );
        self.notify_subscription(now, &id, expires == 0, "");
    }

    fn subscribe_ok(
        &self,
        request: &rsip::Request,
        local_tag: &str,
        expires: u32,
        source: Peer,
    ) -> rsip::Response {
        let mut response = transaction::response_for(request, 200u16.into(), Some(local_tag));
        response
            .headers
            .push(Header::Expires(rsip::headers::Expires::new(
                expires.to_string(),
            )));
        let user = request
            .uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .unwrap_or_default();
        let local = self.local_hostport(source);
        response
            .headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:{user}@{local}>"
            ))));
        response
    }

    /// Sends the current counts in subscription `id`; `end` terminates it (`reason`
    /// for the `terminated` state, e.g. `;reason=timeout`).
    fn notify_subscription(
        &mut self,
        now: Instant,
        id: &(String, String),
        end: bool,
        reason: &str,
    ) {
        let realm = self.registrar.config().realm.clone();
        let Some(s) = self.mwi_subscriptions.get_mut(id) else {
            return;
        };
        s.seq += 1;
        let remaining = s.expires_at.saturating_duration_since(now).as_secs();
        let state = if end {
            format!("terminated{reason}")
        } else {
            format!("active;expires={remaining}")
        };
        let summary = self
            .mwi_state
            .get(&s.extension)
            .copied()
            .unwrap_or_default();
        let s = s.clone();
        if end {
            self.mwi_subscriptions.remove(id);
        }
        let aor = format!("sip:{}@{realm}", s.extension);
        let body = message_summary_body(&aor, &summary).into_bytes();
        let local = self.local_hostport(s.peer);
        let branch = self.dialogs.new_branch();
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            wire::wire_kind(s.peer.transport).via_token()
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "<{}>;tag={}",
            s.local_uri, s.local_tag
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<{}>;tag={}",
            s.remote_uri, s.remote_tag
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            s.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{} NOTIFY",
            s.seq
        ))));
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<sip:{}@{local}>",
            s.extension
        ))));
        headers.push(Header::Event(rsip::headers::Event::new("message-summary")));
        headers.push(Header::SubscriptionState(
            rsip::headers::SubscriptionState::new(state),
        ));
        headers.push(Header::ContentType(rsip::headers::ContentType::new(
            "application/simple-message-summary",
        )));
        headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
            body.len() as u32,
        )));
        let request = rsip::Request {
            method: Method::Notify,
            uri: s.target.clone(),
            version: rsip::Version::V2,
            headers,
            body,
        };
        if let Err(e) = self.tx.send_request(now, request, s.peer) {
            tracing::debug!(error = %e, "message-summary NOTIFY not sent");
        }
    }

    /// Whether a phone of `extension` subscribed (then it gets no unsolicited NOTIFYs).
    pub(super) fn subscribed(&self, extension: &str) -> bool {
        self.mwi_subscriptions
            .values()
            .any(|s| s.extension == extension)
    }

    /// The counts of `extension`'s mailbox changed: a NOTIFY in each of its
    /// subscriptions.
    pub(super) fn notify_subscribers(&mut self, now: Instant, extension: &str) {
        let ids: Vec<(String, String)> = self
            .mwi_subscriptions
            .iter()
            .filter(|(_, s)| s.extension == extension)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.notify_subscription(now, &id, false, "");
        }
    }

    /// When the next subscription expires.
    pub(super) fn subscriptions_timeout(&self) -> Option<Instant> {
        self.mwi_subscriptions.values().map(|s| s.expires_at).min()
    }

    /// Ends the subscriptions not refreshed in time.
    pub(super) fn expire_subscriptions(&mut self, now: Instant) {
        let due: Vec<(String, String)> = self
            .mwi_subscriptions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            tracing::info!(call_id = id.0, "message-summary subscription expired");
            self.notify_subscription(now, &id, true, ";reason=timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_granted_expiry_is_clamped_and_zero_ends() {
        assert_eq!(granted_expires(None), MAX_EXPIRES);
        assert_eq!(granted_expires(Some(0)), 0);
        assert_eq!(granted_expires(Some(5)), MIN_EXPIRES);
        assert_eq!(granted_expires(Some(600)), 600);
        assert_eq!(granted_expires(Some(86_400)), MAX_EXPIRES);
    }

    #[test]
    fn the_event_package_ignores_parameters_and_case() {
        assert_eq!(event_package("Message-Summary;id=3"), "message-summary");
        assert_eq!(event_package(" presence "), "presence");
    }
}
