//! One dialog's state (RFC 3261 12): identifiers, sequence numbers, remote target, route
//! set, and building requests inside it (12.2.1.1).

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Method, Param, Uri, UriWithParams};

use super::{DialogId, Error, Result};
use crate::transaction::{self, Peer};

/// Which side of the dialog we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the INVITE (and own the Call-ID, which matters for 491 back-off, 14.1).
    Uac,
    /// We received the INVITE.
    Uas,
}

/// Dialog states (RFC 3261 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended (BYE, non-2xx, 481/408 to an in-dialog request, no ACK); kept briefly so
    /// late messages of it are recognised.
    Terminated,
}

/// The state of one dialog. Built and driven by [`super::DialogLayer`]; readable by the TU.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub(super) id: DialogId,
    pub(super) role: Role,
    pub(super) state: DialogState,
    /// Our URI as a To/From value without tag (`<sip:alice@host>`).
    pub(super) local_uri: String,
    /// The peer's URI as a To/From value without tag.
    pub(super) remote_uri: String,
    pub(super) local_seq: u32,
    pub(super) remote_seq: Option<u32>,
    pub(super) remote_target: Uri,
    pub(super) route_set: Vec<UriWithParams>,
    pub(super) secure: bool,
    pub(super) local_contact: Uri,
    pub(super) peer: Peer,
}

impl Dialog {
    /// Call-ID, local and remote tag.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Our side.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current state.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The CSeq number of the last request we sent in the dialog.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// The CSeq number of the last request the peer sent, if any.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// Where in-dialog requests go (the peer's Contact).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, in the order Route headers of our requests list it.
    pub fn route_set(&self) -> &[UriWithParams] {
        &self.route_set
    }

    /// Whether the dialog was set up over SIPS (12.1.1).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The transport peer in-dialog messages are sent to.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Builds a request inside the dialog (12.2.1.1): Request-URI and Route from the
    /// remote target and route set (loose or strict routing), From/To with the tags,
    /// Call-ID, a new CSeq number (except ACK, which takes `ack_seq`), a Via with
    /// `branch`, Max-Forwards, our Contact for target-refresh methods.
    pub(super) fn build_request(
        &mut self,
        method: Method,
        branch: &str,
        ack_seq: Option<u32>,
        extra: Vec<Header>,
        body: Vec<u8>,
    ) -> rsip::Request {
        let seq = match (method, ack_seq) {
            (Method::Ack | Method::Cancel, Some(seq)) => seq,
            _ => {
                self.local_seq = self.local_seq.wrapping_add(1).max(1);
                self.local_seq
            }
        };
        let (uri, routes) = self.request_uri_and_routes();
        let mut headers = Headers::default();
        let transport = match self.peer.transport {
            transaction::TransportKind::Udp => "UDP",
            transaction::TransportKind::Tcp => "TCP",
            transaction::TransportKind::Tls => "TLS",
        };
        let sent_by = self.local_contact.host_with_port.to_string();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{transport} {sent_by};branch={branch};rport"
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
        if !routes.is_empty() {
            headers.push(Header::Route(
                rsip::typed::Route(rsip::UriWithParamsList(routes)).into(),
            ));
        }
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{};tag={}",
            self.local_uri, self.id.local_tag
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "{};tag={}",
            self.remote_uri, self.id.remote_tag
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.id.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::typed::CSeq { seq, method }.into()));
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        ) {
            headers.push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{}>",
                self.local_contact
            ))));
        }
        for h in extra {
            headers.push(h);
        }
        headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
            body.len() as u32,
        )));
        rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body,
        }
    }

    /// 12.2.1.1: loose routing puts the remote target in the Request-URI and the route
    /// set in Route; a strict router first in the set takes the Request-URI (parameters
    /// not allowed there stripped) and the remote target goes last in Route.
    pub(super) fn request_uri_and_routes(&self) -> (Uri, Vec<UriWithParams>) {
        match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if first.uri.params.contains(&Param::Lr) => {
                (self.remote_target.clone(), self.route_set.clone())
            }
            Some(first) => {
                let mut uri = first.uri.clone();
                uri.params
                    .retain(|p| !matches!(p, Param::Method(_) | Param::Ttl(_) | Param::Maddr(_)));
                uri.headers.clear();
                let mut routes: Vec<UriWithParams> = self.route_set[1..].to_vec();
                routes.push(UriWithParams {
                    uri: self.remote_target.clone(),
                    params: Vec::new(),
                });
                (uri, routes)
            }
        }
    }
}

/// The name-addr of a From/To header without its tag, e.g. `"Bob" <sip:bob@host>`.
pub(super) fn without_tag(display: Option<&String>, uri: &Uri, params: &[Param]) -> String {
    let params: String = params
        .iter()
        .filter(|p| !matches!(p, Param::Tag(_)))
        .map(|p| p.to_string())
        .collect();
    match display {
        Some(d) if !d.is_empty() => format!("{d} <{uri}>{params}"),
        _ => format!("<{uri}>{params}"),
    }
}

/// The Record-Route entries of a message, top to bottom.
pub(super) fn record_routes(headers: &Headers) -> Result<Vec<UriWithParams>> {
    use rsip::headers::ToTypedHeader;
    let mut out = Vec::new();
    for h in headers.iter() {
        if let Header::RecordRoute(rr) = h {
            let typed = rr.typed().map_err(|e| Error::InvalidHeader {
                header: "Record-Route",
                reason: e.to_string(),
            })?;
            out.extend(typed.uris().iter().cloned());
        }
    }
    Ok(out)
}

/// The URI of the first Contact of a message.
pub(super) fn contact_uri(headers: &Headers) -> Result<Uri> {
    use rsip::headers::ToTypedHeader;
    let contact = headers
        .iter()
        .find_map(|h| match h {
            Header::Contact(c) => Some(c),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "Contact" })?;
    contact
        .typed()
        .map(|c| c.uri)
        .map_err(|e| Error::InvalidHeader {
            header: "Contact",
            reason: e.to_string(),
        })
}
