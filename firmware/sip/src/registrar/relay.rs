//! SIP MESSAGE relay between local phones (RFC 3428; issue 3, item 9).
//!
//! # Rules
//!
//! The daemon first authenticates the MESSAGE with
//! [`super::Registrar::authenticate`] (a 401 challenge otherwise), then calls
//! [`super::Registrar::relay_message`] with the sender's extension:
//!
//! 1. The target is the Request-URI user; no such account: `404`.
//! 2. `Content-Type` must be `text/plain` (parameters such as `charset` allowed):
//!    otherwise `415` with `Accept: text/plain`.
//! 3. A body above [`super::RegistrarConfig::message_max_bytes`] (default 1300 bytes,
//!    RFC 3428 6 for transports without congestion control): `413`.
//! 4. The target has no unexpired binding: `480 Temporarily Unavailable`.
//! 5. Otherwise one new MESSAGE per binding, best first: Request-URI = the binding's
//!    contact, `From: "<sender name>" <sip:<sender>@<realm>>;tag=…`,
//!    `To: <sip:<target>@<realm>>`, a new Call-ID, `CSeq: 1 MESSAGE`, the original
//!    body and Content-Type, and a top Via with a fresh branch, to be sent along the
//!    binding's [`super::Flow`].
//!
//! The daemon answers the original MESSAGE from the forwarded transactions: `202
//! Accepted` (or `200 OK`) as soon as the first forwarded MESSAGE gets a 2xx, and when
//! all of them fail, the lowest failure code (`408` if they all timed out). Nothing is
//! stored for later delivery (no offline messages).

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, Request};

use super::{headers as hdr, Flow, Registrar};
use crate::trunk::identity::quote_display_name;
use crate::trunk::rng::Rng;

/// One forwarded MESSAGE.
#[derive(Debug, Clone)]
pub struct RelayedMessage {
    /// Send it along this flow.
    pub flow: Flow,
    /// The request (with Via, ready for the transaction layer).
    pub request: Request,
}

/// Why a MESSAGE is not relayed; answer with [`RelayRejection::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayRejection {
    /// No account with the target extension (404).
    #[error("no local account {0:?}")]
    UnknownTarget(String),
    /// Not `text/plain` (415, with `Accept: text/plain`).
    #[error("content type {0:?} is not text/plain")]
    UnsupportedMediaType(String),
    /// Body too large (413).
    #[error("body of {size} bytes exceeds {max}")]
    TooLarge {
        /// Body size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The target is not registered (480).
    #[error("extension {0:?} is not registered")]
    NotRegistered(String),
    /// The request is not a MESSAGE (405).
    #[error("not a MESSAGE request")]
    NotMessage,
}

impl RelayRejection {
    /// The status code to answer with.
    pub fn code(&self) -> u16 {
        match self {
            RelayRejection::UnknownTarget(_) => 404,
            RelayRejection::UnsupportedMediaType(_) => 415,
            RelayRejection::TooLarge { .. } => 413,
            RelayRejection::NotRegistered(_) => 480,
            RelayRejection::NotMessage => 405,
        }
    }

    /// Headers the response must carry (`Accept` for 415).
    pub fn extra_headers(&self) -> Vec<Header> {
        match self {
            RelayRejection::UnsupportedMediaType(_) => {
                vec![Header::Accept(rsip::headers::Accept::new("text/plain"))]
            }
            _ => Vec::new(),
        }
    }
}

impl Registrar {
    /// Relays an authenticated MESSAGE from local `sender` (see [`self`] module doc).
    /// `seed` makes the new Call-IDs, tags and branches (random in production).
    pub fn relay_message(
        &self,
        now: Instant,
        request: &Request,
        sender: &str,
        seed: u64,
    ) -> Result<Vec<RelayedMessage>, RelayRejection> {
        if request.method != Method::Message {
            return Err(RelayRejection::NotMessage);
        }
        let target = request.uri.user().unwrap_or("").to_owned();
        if !self.accounts.contains_key(&target) {
            return Err(RelayRejection::UnknownTarget(target));
        }
        let content_type = hdr::header_value(&request.headers, "Content-Type")
            .unwrap_or("")
            .trim()
            .to_owned();
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "text/plain" {
            return Err(RelayRejection::UnsupportedMediaType(content_type));
        }
        let max = self.config.message_max_bytes;
        if request.body.len() > max {
            return Err(RelayRejection::TooLarge {
                size: request.body.len(),
                max,
            });
        }
        let bindings = self.lookup(now, &target);
        if bindings.is_empty() {
            return Err(RelayRejection::NotRegistered(target));
        }
        let realm = &self.config.realm;
        let name = self
            .accounts
            .get(sender)
            .and_then(|a| a.display_name.as_deref())
            .map(|n| format!("{} ", quote_display_name(n)))
            .unwrap_or_default();
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(bindings.len());
        for b in bindings {
            let mut headers = Headers::default();
            headers.push(Header::Via(rsip::headers::Via::new(format!(
                "SIP/2.0/{} {};branch=z9hG4bK{};rport",
                b.flow.transport.to_string().to_ascii_uppercase(),
                self.config.sent_by,
                rng.hex()
            ))));
            headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
            headers.push(Header::From(rsip::headers::From::new(format!(
                "{name}<sip:{sender}@{realm}>;tag={}",
                rng.hex()
            ))));
            headers.push(Header::To(rsip::headers::To::new(format!(
                "<sip:{target}@{realm}>"
            ))));
            headers.push(Header::CallId(rsip::headers::CallId::new(format!(
                "{}{}@{}",
                rng.hex(),
                rng.hex(),
                self.config.sent_by
            ))));
            headers.push(Header::CSeq(rsip::headers::CSeq::new("1 MESSAGE")));
            headers.push(Header::ContentType(rsip::headers::ContentType::new(
                content_type.clone(),
            )));
            headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
                request.body.len().to_string(),
            )));
            out.push(RelayedMessage {
                flow: b.flow,
                request: Request {
                    method: Method::Message,
                    uri: b.contact.uri.clone(),
                    version: rsip::Version::V2,
                    headers,
                    body: request.body.clone(),
                },
            });
        }
        Ok(out)
    }
}
