//! OPTIONS probes for the technician's tools page ([`crate::tools`]): one OPTIONS
//! request to a SIP URI, sent through the endpoint's own transaction layer and
//! transport (so it leaves from the box's SIP port, with its Via and User-Agent, as
//! the trunk's own requests do), answered with the final response's status, reason
//! and round-trip time, or the transaction's failure (timeout, transport error).
//!
//! The caller resolves the URI's host to an address first (no DNS in the endpoint
//! task) and bounds its wait; a probe whose caller gave up is answered into the void.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use branchline_sip::transaction::ClientKey;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method};
use tokio::sync::oneshot;

use super::{wire, SipEndpoint, USER_AGENT};

/// One OPTIONS probe asked of the endpoint.
#[derive(Debug)]
pub struct OptionsProbe {
    /// The request URI (`sip:host[:port][;transport=...]`), already checked.
    pub uri: String,
    /// Where to send it.
    pub destination: SocketAddr,
    /// UDP or TCP.
    pub transport: rsip::Transport,
    /// The outcome.
    pub reply: oneshot::Sender<ProbeAnswer>,
}

/// The outcome of an [`OptionsProbe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// A final response arrived.
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// The responder's `Server` or `User-Agent` header, if any.
        server: Option<String>,
        /// Time from sending to the final response.
        rtt: Duration,
        /// The local address the request left from.
        local: SocketAddr,
    },
    /// The transaction failed (no answer within the transaction timer, or the
    /// transport could not send).
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// A probe waiting for its answer.
#[derive(Debug)]
pub(super) struct PendingProbe {
    reply: oneshot::Sender<ProbeAnswer>,
    sent_at: Instant,
    local: SocketAddr,
}

impl SipEndpoint {
    /// Sends the OPTIONS of `probe`; answers at once when it cannot be sent.
    pub(super) fn start_probe(&mut self, now: Instant, probe: OptionsProbe) {
        let uri = match rsip::Uri::try_from(probe.uri.as_str()) {
            Ok(u) => u,
            Err(e) => {
                let _ = probe.reply.send(ProbeAnswer::Failed {
                    reason: format!("not a SIP URI: {e}"),
                });
                return;
            }
        };
        let peer = wire::peer(probe.destination, probe.transport);
        let local = self.local_hostport(peer);
        let branch = self.dialogs.new_branch();
        let tag = self.dialogs.new_tag();
        let call_id = self.dialogs.new_call_id(&local.ip().to_string());
        let domain = self.settings.sip.domain.clone();
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            wire::wire_kind(peer.transport).via_token()
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "<sip:probe@{domain}>;tag={tag}"
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<{}>",
            probe.uri
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("1 OPTIONS")));
        headers.push(Header::Accept(rsip::headers::Accept::new(
            "application/sdp",
        )));
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(USER_AGENT)));
        headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
            0u32,
        )));
        let request = rsip::Request {
            method: Method::Options,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        match self.tx.send_request(now, request, peer) {
            Ok(key) => {
                self.probes.insert(
                    key,
                    PendingProbe {
                        reply: probe.reply,
                        sent_at: now,
                        local,
                    },
                );
            }
            Err(e) => {
                let _ = probe.reply.send(ProbeAnswer::Failed {
                    reason: format!("OPTIONS not sent: {e}"),
                });
            }
        }
    }

    /// A final response to a probe's OPTIONS: `true` when `key` was a probe's.
    pub(super) fn probe_response(
        &mut self,
        now: Instant,
        key: &ClientKey,
        response: &rsip::Response,
    ) -> bool {
        if response.status_code.code() < 200 {
            return self.probes.contains_key(key);
        }
        let Some(p) = self.probes.remove(key) else {
            return false;
        };
        let server = response.headers.iter().find_map(|h| match h {
            Header::Server(v) => Some(v.value().to_owned()),
            Header::UserAgent(v) => Some(v.value().to_owned()),
            _ => None,
        });
        let code = response.status_code.code();
        // rsip keeps the phrase of unknown codes and names known ones (`RequestTimeout`).
        let text = response.status_code.to_string();
        let reason = text
            .strip_prefix(&format!("{code} "))
            .unwrap_or(&text)
            .to_owned();
        let _ = p.reply.send(ProbeAnswer::Response {
            code,
            reason,
            server,
            rtt: now.saturating_duration_since(p.sent_at),
            local: p.local,
        });
        true
    }

    /// The transaction of a probe failed: `true` when `key` was a probe's.
    pub(super) fn probe_failed(&mut self, key: &ClientKey, why: &str) -> bool {
        let Some(p) = self.probes.remove(key) else {
            return false;
        };
        let _ = p.reply.send(ProbeAnswer::Failed {
            reason: why.to_owned(),
        });
        true
    }
}
