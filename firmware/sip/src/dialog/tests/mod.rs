//! Dialog layer tests: two endpoints (transaction layer + dialog layer + a small TU)
//! joined by a network that can drop chosen messages, on a virtual clock.

mod call;
mod glare_prack;
mod routing;
mod session_timer;

use super::*;
use crate::transaction::{
    response_for, TransactionConfig, TransactionEvent, TransactionLayer, TransportKind,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub(super) const A_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 5060);
pub(super) const B_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)), 5060);

pub(super) fn uri(s: &str) -> Uri {
    Uri::try_from(s).expect("test URI parses")
}

/// What a side's TU saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// New requests: server key, request, source, what the dialog layer said.
    pub requests: Vec<(ServerKey, rsip::Request, Peer, RequestDisposition)>,
    pub responses: Vec<(rsip::Response, ResponseDisposition)>,
    pub acks: Vec<rsip::Request>,
    pub cancelled: Vec<ServerKey>,
    pub events: Vec<DialogEvent>,
    pub timeouts: usize,
}

pub(super) struct Side {
    pub tl: TransactionLayer,
    pub dl: DialogLayer,
    pub contact: Uri,
    pub transport: TransportKind,
    pub seen: Seen,
    /// Answer in-dialog non-INVITE requests (BYE, PRACK, UPDATE, INFO...) with 200 and
    /// rejections with their status, as a B2BUA leg would.
    pub auto_answer: bool,
}

impl Side {
    pub fn new(addr: SocketAddr, seed: u64, transport: TransportKind) -> Self {
        Side {
            tl: TransactionLayer::new(TransactionConfig::default()),
            dl: DialogLayer::new(DialogConfig::default(), seed),
            contact: uri(&format!("sip:user@{addr}")),
            transport,
            seen: Seen::default(),
            auto_answer: true,
        }
    }

    pub fn peer_of(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr,
            transport: self.transport,
        }
    }

    /// Moves dialog actions into the transaction layer and transaction events into the
    /// dialog layer until both are quiet.
    pub fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(action) = self.dl.poll_action() {
                busy = true;
                match action {
                    DialogAction::SendRequest {
                        request,
                        destination,
                        ..
                    } => {
                        self.tl
                            .send_request(now, request, destination)
                            .expect("dialog requests are well formed");
                    }
                    DialogAction::Respond { server, response } => {
                        // The transaction may have ended (timer L); nothing to resend then.
                        let _ = self.tl.respond(now, &server, response);
                    }
                    DialogAction::SendStateless {
                        message,
                        destination,
                    } => self.tl.send_stateless(message, destination),
                }
            }
            while let Some(ev) = self.tl.poll_event() {
                busy = true;
                match ev {
                    TransactionEvent::Request {
                        key,
                        request,
                        source,
                    } => {
                        let disposition = self.dl.on_request(now, &request);
                        if self.auto_answer {
                            match &disposition {
                                RequestDisposition::Reject(r) => {
                                    self.tl
                                        .respond(now, &key, rejection_response(&request, *r))
                                        .expect("fresh transaction");
                                }
                                RequestDisposition::InDialog(_)
                                    if request.method != Method::Invite =>
                                {
                                    self.tl
                                        .respond(
                                            now,
                                            &key,
                                            response_for(&request, 200u16.into(), None),
                                        )
                                        .expect("fresh transaction");
                                }
                                _ => {}
                            }
                        }
                        self.seen.requests.push((key, request, source, disposition));
                    }
                    TransactionEvent::Ack { request, .. } => {
                        self.dl.on_ack(now, &request);
                        self.seen.acks.push(request);
                    }
                    TransactionEvent::Response { response, .. }
                    | TransactionEvent::StrayResponse { response, .. } => {
                        let d = self
                            .dl
                            .on_response(now, &response)
                            .expect("responses are well formed");
                        self.seen.responses.push((response, d));
                    }
                    TransactionEvent::Cancelled { invite, .. } => self.seen.cancelled.push(invite),
                    TransactionEvent::Timeout { .. } => self.seen.timeouts += 1,
                    _ => {}
                }
            }
            while let Some(ev) = self.dl.poll_event() {
                busy = true;
                self.seen.events.push(ev);
            }
            if !busy {
                break;
            }
        }
    }

    pub fn timeout(&self) -> Option<Instant> {
        [self.tl.timeout(), self.dl.timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tl.handle_timeout(now);
        self.dl.handle_timeout(now);
    }

    /// The last new request with this method.
    pub fn last_request(&self, method: Method) -> (ServerKey, rsip::Request, Peer) {
        self.seen
            .requests
            .iter()
            .rev()
            .find(|(_, r, _, _)| r.method == method)
            .map(|(k, r, p, _)| (k.clone(), r.clone(), *p))
            .unwrap_or_else(|| panic!("no {method} received"))
    }

    pub fn terminated(&self) -> Vec<(DialogId, EndReason)> {
        self.seen
            .events
            .iter()
            .filter_map(|e| match e {
                DialogEvent::Terminated { id, reason } => Some((id.clone(), *reason)),
                _ => None,
            })
            .collect()
    }
}

/// A message on the wire, for the drop filter.
#[derive(Debug, Clone)]
pub(super) struct Wire {
    pub at: Duration,
    pub to_b: bool,
    pub message: SipMessage,
}

impl Wire {
    pub fn is_request(&self, method: Method) -> bool {
        matches!(&self.message, SipMessage::Request(r) if r.method == method)
    }

    pub fn is_response(&self, code: u16, method: Method) -> bool {
        match &self.message {
            SipMessage::Response(r) => {
                r.status_code.code() == code
                    && transaction::cseq(&r.headers).is_ok_and(|c| c.method == method)
            }
            SipMessage::Request(_) => false,
        }
    }
}

pub(super) type DropFilter = Box<dyn FnMut(&Wire) -> bool>;

pub(super) struct World {
    pub a: Side,
    pub b: Side,
    pub t0: Instant,
    pub now: Instant,
    /// Every message put on the wire (dropped ones included), in order.
    pub wire: Vec<Wire>,
    pub drop: DropFilter,
}

impl World {
    pub fn new(transport: TransportKind) -> Self {
        let t0 = Instant::now();
        World {
            a: Side::new(A_ADDR, 1, transport),
            b: Side::new(B_ADDR, 2, transport),
            t0,
            now: t0,
            wire: Vec::new(),
            drop: Box::new(|_| false),
        }
    }

    /// Pumps both sides and delivers messages (no delay) until nothing moves.
    pub fn settle(&mut self) {
        loop {
            self.a.pump(self.now);
            self.b.pump(self.now);
            let mut moved = false;
            while let Some(t) = self.a.tl.poll_transmit() {
                moved = true;
                self.deliver(t.message, true);
            }
            while let Some(t) = self.b.tl.poll_transmit() {
                moved = true;
                self.deliver(t.message, false);
            }
            if !moved {
                break;
            }
        }
    }

    fn deliver(&mut self, message: SipMessage, to_b: bool) {
        let wire = Wire {
            at: self.now - self.t0,
            to_b,
            message: message.clone(),
        };
        let dropped = (self.drop)(&wire);
        self.wire.push(wire);
        if dropped {
            return;
        }
        let now = self.now;
        if to_b {
            let src = self.b.peer_of(A_ADDR);
            self.b
                .tl
                .handle_message(now, message, src)
                .expect("valid message");
        } else {
            let src = self.a.peer_of(B_ADDR);
            self.a
                .tl
                .handle_message(now, message, src)
                .expect("valid message");
        }
    }

    /// Runs timers and deliveries up to `until` (offset from t0).
    pub fn run_until(&mut self, until: Duration) {
        let until = self.t0 + until;
        self.settle();
        while let Some(at) = [self.a.timeout(), self.b.timeout()]
            .into_iter()
            .flatten()
            .min()
        {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.settle();
        }
        self.now = self.now.max(until);
    }

    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by - self.t0;
        self.run_until(until);
    }

    /// Offsets (ms) at which messages matching `f` were put on the wire.
    pub fn times(&self, f: impl Fn(&Wire) -> bool) -> Vec<u64> {
        self.wire
            .iter()
            .filter(|w| f(w))
            .map(|w| w.at.as_millis() as u64)
            .collect()
    }

    /// A calls B: INVITE built by A's dialog layer, sent, and settled.
    pub fn call(&mut self, extra: Vec<Header>) -> ClientKeyAndInvite {
        let peer = self.a.peer_of(B_ADDR);
        let contact = self.a.contact.clone();
        let invite = self
            .a
            .dl
            .invite(
                self.now,
                "<sip:alice@192.0.2.10>",
                "<sip:bob@192.0.2.20>",
                uri("sip:bob@192.0.2.20"),
                contact,
                extra,
                b"v=0 offer".to_vec(),
                peer,
            )
            .expect("INVITE builds");
        let key = self
            .a
            .tl
            .send_request(self.now, invite.clone(), peer)
            .expect("INVITE sent");
        self.settle();
        ClientKeyAndInvite { key, invite }
    }

    /// B answers its last INVITE with `status`.
    pub fn b_answers(&mut self, status: u16, reliable: bool) -> rsip::Response {
        let (key, invite, source) = self.b.last_request(Method::Invite);
        let contact = self.b.contact.clone();
        let response = self
            .b
            .dl
            .answer_invite(
                self.now,
                &key,
                &invite,
                source,
                status,
                &contact,
                Vec::new(),
                if status == 200 {
                    b"v=0 answer".to_vec()
                } else {
                    Vec::new()
                },
                reliable,
            )
            .expect("answer builds");
        self.b
            .tl
            .respond(self.now, &key, response.clone())
            .expect("server transaction takes the answer");
        self.settle();
        response
    }

    /// A established call (INVITE, 180, 200, ACK); returns A's and B's dialog ids.
    pub fn established(&mut self) -> (DialogId, DialogId) {
        self.call(Vec::new());
        self.b_answers(180, false);
        self.b_answers(200, false);
        (confirmed(&self.a), confirmed(&self.b))
    }
}

pub(super) struct ClientKeyAndInvite {
    pub key: crate::transaction::ClientKey,
    pub invite: rsip::Request,
}

pub(super) fn confirmed(side: &Side) -> DialogId {
    side.seen
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            DialogEvent::Confirmed { id } => Some(id.clone()),
            _ => None,
        })
        .expect("a confirmed dialog")
}

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub(super) fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}
