//! Dialogs over the transaction layer (RFC 3261 12-15, RFC 3262 100rel/PRACK, RFC 3311
//! UPDATE, RFC 5407 crossed BYEs, RFC 3261 13.2.2.4 forking), sans-IO.
//!
//! # Map
//!
//! - [`DialogLayer`]: every dialog of one endpoint, keyed by [`DialogId`] (Call-ID, local
//!   tag, remote tag), plus the INVITEs we sent that may still fork. It is the INVITE
//!   "UA core": the TU (call control / B2BUA) feeds it the requests and responses the
//!   [`crate::transaction::TransactionLayer`] reports ([`DialogLayer::on_request`],
//!   [`DialogLayer::on_ack`], [`DialogLayer::on_response`]), asks it to build messages
//!   ([`DialogLayer::invite`], [`DialogLayer::answer_invite`],
//!   [`DialogLayer::send_request`]), and forwards what it produces
//!   ([`DialogLayer::poll_action`]: requests for new client transactions, responses to
//!   resend in a server transaction, stateless ACKs) to the transaction layer. Timers:
//!   [`DialogLayer::timeout`] / [`DialogLayer::handle_timeout`]; randomness (tags,
//!   branches, Call-IDs, the 491 back-off) comes from a seed given to
//!   [`DialogLayer::new`].
//! - [`Dialog`] (`state`): one dialog's state and the 12.2.1.1 request builder (loose and
//!   strict routing).
//!
//! # Behaviour
//!
//! - Creation: a 1xx with a To tag creates an early dialog, a 2xx a confirmed one, on
//!   either side. The UAC's route set is the Record-Route of the response reversed (and
//!   is recomputed from the 2xx when an early dialog is confirmed, 12.2.1.2); the UAS's
//!   is the request's Record-Route as is. The remote target is the peer's Contact and is
//!   refreshed by re-INVITE and UPDATE.
//! - Forking: each To tag of the responses to one INVITE is its own early dialog; the
//!   first 2xx wins and the other early dialogs end ([`EndReason::ForkLost`]); a later 2xx
//!   from another fork is ACKed and immediately BYEd (13.2.2.4).
//! - UAC INVITE: the layer sends the ACK for every 2xx (again for each retransmission,
//!   with the INVITE's CSeq number). UAS INVITE: the 2xx is retransmitted (T1 doubling,
//!   capped at T2) until the ACK; with no ACK after 64*T1 the dialog ends with a BYE
//!   ([`EndReason::NoAck`], 13.3.1.4). Both also for re-INVITEs, and on TCP/TLS too:
//!   the 2xx/ACK exchange is end to end and may cross UDP hops behind a proxy.
//! - Validation of in-dialog requests: unknown dialog -> 481; CSeq lower than the remote
//!   CSeq -> 500; a re-INVITE while ours is pending -> 491, while theirs is pending ->
//!   500 with Retry-After (14.2). Our re-INVITE answered 491 is resent after the 14.1
//!   back-off (2.1-4 s when we own the Call-ID, 0-2 s otherwise, 10 ms steps).
//! - 100rel: a reliable provisional response carries `Require: 100rel` and `RSeq` and is
//!   resent (T1 doubling) until the matching PRACK, giving up after 64*T1 with
//!   [`DialogEvent::PrackTimeout`] (the TU answers the INVITE 5xx, RFC 3262 3). The UAC
//!   PRACKs each reliable 1xx in RSeq order with `RAck`, and drops duplicates and
//!   out-of-order ones (RFC 3262 4).
//! - BYE: sending one ends the dialog at once; a BYE received ends it too (in an early
//!   dialog the INVITE may still be answered with a final non-2xx, RFC 3261 15.1.2). When both
//!   sides send BYE (RFC 5407 crossed BYEs) each answers the other's BYE with 200 and the
//!   dialog ends once, whatever comes back for our own BYE. A 481 or 408 to an in-dialog
//!   request ends the dialog (12.2.1.2).
//! - Ended dialogs linger 64*T1 so late messages of them are recognised, then vanish.
//!   What they do not need then (2xx and reliable 1xx retransmission, the 491 retry) is
//!   dropped and boxed; an INVITE set keeps only the Request-URI, From and CSeq.
//!
//! # Why our own layer and not a crate
//!
//! See [`crate::transaction`]: rsipstack's dialog layer sits on its tokio-driven
//! transactions and cannot run on a virtual clock; the sans-IO crates do not build on rsip.
//!
//! # Limits
//!
//! - Session timers (RFC 4028, [`crate::session_timer`]), SUBSCRIBE-created dialogs
//!   and the offer/answer rules of SDP bodies are not here (the B2BUA owns SDP).
//! - Only one unacknowledged reliable provisional response at a time per INVITE (RFC 3262
//!   allows the UAS to wait, and we do).
//! - The TU must answer every INVITE through [`DialogLayer::answer_invite`] (or the
//!   early dialog and its tag stay until answered), and report an INVITE of ours that
//!   ended without a final response with [`DialogLayer::on_invite_failed`].
//! - Tags, branches and Call-IDs come from a SplitMix64 stream seeded by the caller; the
//!   driver must seed it from the OS's randomness so they are not guessable.

mod state;
#[cfg(test)]
mod tests;

pub use state::{Dialog, DialogState, Role};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, SipMessage, StatusCodeKind, Uri};

use crate::transaction::{self, Peer, ServerKey, TimerConfig};

/// Identifies a dialog (RFC 3261 12): Call-ID, our tag, the peer's tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (From tag of our requests).
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{};{}", self.call_id, self.local_tag, self.remote_tag)
    }
}

/// Configuration of a [`DialogLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogConfig {
    /// T1, T2, T4 (the same values as the transaction layer's).
    pub timers: TimerConfig,
    /// Most dialogs held at once (ended ones included while they linger); further
    /// dialogs are refused with [`Error::TooManyDialogs`].
    pub max_dialogs: usize,
}

impl Default for DialogConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            max_dialogs: 100_000,
        }
    }
}

/// Something the TU must hand to the transaction layer.
#[derive(Debug, Clone)]
pub enum DialogAction {
    /// Send in a new client transaction ([`crate::transaction::TransactionLayer::send_request`]):
    /// a PRACK, a re-INVITE resent after 491, a BYE.
    SendRequest {
        /// The dialog.
        dialog: DialogId,
        /// The request.
        request: rsip::Request,
        /// Where to.
        destination: Peer,
    },
    /// Send in server transaction `server` ([`crate::transaction::TransactionLayer::respond`]):
    /// a retransmitted 2xx or reliable provisional response.
    Respond {
        /// The INVITE server transaction.
        server: ServerKey,
        /// The response.
        response: rsip::Response,
    },
    /// Send outside any transaction ([`crate::transaction::TransactionLayer::send_stateless`]):
    /// the ACK for a 2xx.
    SendStateless {
        /// The message.
        message: SipMessage,
        /// Where to.
        destination: Peer,
    },
}

/// Why a dialog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// We sent BYE.
    LocalBye,
    /// The peer sent BYE.
    RemoteBye,
    /// The INVITE got this non-2xx final response (early dialogs).
    Rejected(u16),
    /// Another fork answered first.
    ForkLost,
    /// Our 2xx was never ACKed within 64*T1; a BYE was sent.
    NoAck,
    /// An in-dialog request got 481 or 408 (12.2.1.2).
    RequestFailed(u16),
}

/// What the layer tells the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogEvent {
    /// An early dialog exists.
    Early {
        /// The dialog.
        id: DialogId,
    },
    /// The dialog is confirmed (2xx sent or received).
    Confirmed {
        /// The dialog.
        id: DialogId,
    },
    /// The dialog ended (reported once per dialog).
    Terminated {
        /// The dialog.
        id: DialogId,
        /// Why.
        reason: EndReason,
    },
    /// A reliable provisional response was never PRACKed within 64*T1; the TU should
    /// answer the INVITE with a 5xx (RFC 3262 3).
    PrackTimeout {
        /// The dialog.
        id: DialogId,
        /// The INVITE server transaction.
        server: ServerKey,
    },
}

/// What to do with a received request ([`DialogLayer::on_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// No To tag: a request outside any dialog (a new call, OPTIONS, REGISTER, ...).
    OutOfDialog,
    /// A valid request in this dialog; the TU handles and answers it.
    InDialog(DialogId),
    /// Answer with this rejection ([`rejection_response`]) and do nothing else.
    Reject(Rejection),
}

/// A refusal of an in-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// 481, 491 or 500.
    pub status: u16,
    /// Seconds for a Retry-After header (500 to a second re-INVITE, 14.2).
    pub retry_after: Option<u32>,
}

/// What to do with a received response ([`DialogLayer::on_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// Hand it to the TU (with the dialog it belongs to, if any).
    Pass(Option<DialogId>),
    /// Handled here (a 2xx retransmission re-ACKed, a duplicate reliable 1xx, a late
    /// fork's 2xx ACKed and BYEd, a response to our BYE after the dialog ended).
    Absorb,
}

/// Errors of the dialog layer. None of them changes any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A header the layer needs is missing.
    #[error("message lacks a {header} header")]
    MissingHeader {
        /// Header name.
        header: &'static str,
    },
    /// A header the layer needs cannot be read.
    #[error("invalid {header} header: {reason}")]
    InvalidHeader {
        /// Header name.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such dialog.
    #[error("no dialog {id}")]
    UnknownDialog {
        /// The dialog.
        id: DialogId,
    },
    /// The dialog has ended.
    #[error("dialog {id} has ended")]
    DialogEnded {
        /// The dialog.
        id: DialogId,
    },
    /// A re-INVITE is already in progress in this dialog (14.1).
    #[error("an INVITE is already pending in dialog {id}")]
    InvitePending {
        /// The dialog.
        id: DialogId,
    },
    /// A reliable provisional response is still waiting for its PRACK.
    #[error("a reliable provisional response awaits its PRACK in dialog {id}")]
    PrackPending {
        /// The dialog.
        id: DialogId,
    },
    /// The peer did not offer 100rel, so a reliable provisional cannot be sent.
    #[error("the INVITE does not support 100rel")]
    No100rel,
    /// This method is not sent through [`DialogLayer::send_request`].
    #[error("{method} is not sent with send_request")]
    MethodNotAllowed {
        /// The method.
        method: Method,
    },
    /// The dialog limit is reached.
    #[error("dialog limit reached ({limit} dialogs)")]
    TooManyDialogs {
        /// The limit.
        limit: usize,
    },
    /// The request is not an INVITE.
    #[error("{method} is not an INVITE")]
    NotInvite {
        /// The method.
        method: Method,
    },
}

impl From<transaction::Error> for Error {
    fn from(e: transaction::Error) -> Self {
        match e {
            transaction::Error::MissingHeader { header } => Error::MissingHeader { header },
            transaction::Error::InvalidHeader { header, reason } => {
                Error::InvalidHeader { header, reason }
            }
            other => Error::InvalidHeader {
                header: "message",
                reason: other.to_string(),
            },
        }
    }
}

/// Result with the layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The response for a [`Rejection`] of `request` (the To tag is the request's own).
pub fn rejection_response(request: &rsip::Request, rejection: Rejection) -> rsip::Response {
    let mut response = transaction::response_for(request, rejection.status.into(), None);
    if let Some(secs) = rejection.retry_after {
        response
            .headers
            .push(Header::RetryAfter(rsip::headers::RetryAfter::new(
                secs.to_string(),
            )));
    }
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    /// 2xx retransmission (UAS).
    Ok = 0,
    /// Reliable provisional retransmission (UAS).
    Prack = 1,
    /// 491 back-off before resending our re-INVITE (UAC of it).
    Glare = 2,
    /// Removal of an ended dialog.
    Linger = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Dialog(u64, Slot),
    InviteSet(u64),
}

#[derive(Debug, Clone)]
struct Retransmit {
    server: ServerKey,
    response: rsip::Response,
    interval: Duration,
    give_up: Instant,
    /// CSeq number of the INVITE (2xx) or RSeq (reliable 1xx).
    seq: u32,
    /// CSeq number of the INVITE (reliable 1xx: for RAck matching).
    invite_seq: u32,
}

#[derive(Debug)]
struct Entry {
    dialog: Dialog,
    timers: [Option<Instant>; 4],
    /// Boxed, like `reliable`, `ack` and `glare_retry`: mostly empty, and an ended
    /// dialog lingers 64*T1.
    ok: Option<Box<Retransmit>>,
    reliable: Option<Box<Retransmit>>,
    next_rseq: u32,
    last_rseq: Option<u32>,
    ack: Option<Box<(u32, rsip::Request)>>,
    pending_invite: Option<u32>,
    glare_retry: Option<Box<(Vec<Header>, Vec<u8>)>>,
    incoming_invite: bool,
    bye_sent: bool,
    ended: bool,
}

#[derive(Debug)]
struct InviteSet {
    /// What a response to the INVITE needs to create its dialog: the Request-URI, From
    /// and CSeq (no body, no other headers: the set lingers 64*T1 after the final
    /// response for late forks).
    invite: rsip::Request,
    local_contact: Uri,
    peer: Peer,
    winner: Option<DialogId>,
    dialogs: Vec<DialogId>,
    key: (String, String),
    expires: Option<Instant>,
}

/// SplitMix64, the seeded source of tags, branches, Call-IDs and back-off delays.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// All dialogs of one endpoint. See the [module docs](self).
#[derive(Debug)]
pub struct DialogLayer {
    config: DialogConfig,
    rng: SplitMix,
    next_num: u64,
    /// Boxed, like `sets`: a slot of the map is then a pointer, not a whole entry (the
    /// map keeps its capacity at the peak number of dialogs, ended ones included).
    entries: HashMap<u64, Box<Entry>>,
    by_id: HashMap<DialogId, u64>,
    sets: HashMap<u64, Box<InviteSet>>,
    set_by_key: HashMap<(String, String), u64>,
    uas_tags: HashMap<ServerKey, String>,
    timers: BTreeSet<(Instant, TimerRef)>,
    actions: VecDeque<DialogAction>,
    events: VecDeque<DialogEvent>,
}

impl DialogLayer {
    /// An empty layer; `seed` drives every random choice (tags, branches, back-off).
    pub fn new(config: DialogConfig, seed: u64) -> Self {
        Self {
            config,
            rng: SplitMix(seed),
            next_num: 0,
            entries: HashMap::new(),
            by_id: HashMap::new(),
            sets: HashMap::new(),
            set_by_key: HashMap::new(),
            uas_tags: HashMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A new random tag.
    pub fn new_tag(&mut self) -> String {
        format!("{:016x}", self.rng.next())
    }

    /// A new RFC 3261 branch (`z9hG4bK` + 16 hex digits).
    pub fn new_branch(&mut self) -> String {
        format!("{}{:016x}", transaction::MAGIC_COOKIE, self.rng.next())
    }

    /// A new Call-ID at `host`.
    pub fn new_call_id(&mut self, host: &str) -> String {
        format!(
            "{:016x}{:08x}@{host}",
            self.rng.next(),
            self.rng.next() as u32
        )
    }

    /// The dialog with this id, while it exists (ended ones linger 64*T1).
    pub fn dialog(&self, id: &DialogId) -> Option<&Dialog> {
        self.by_id
            .get(id)
            .and_then(|n| self.entries.get(n))
            .map(|e| &e.dialog)
    }

    /// Number of dialogs held (lingering ended ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no dialog and no forkable INVITE is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.sets.is_empty()
    }

    /// The next thing to hand to the transaction layer.
    pub fn poll_action(&mut self) -> Option<DialogAction> {
        self.actions.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<DialogEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Builds an initial INVITE (new Call-ID, From tag and branch, CSeq 1) and remembers
    /// it so its responses create dialogs. `from` and `to` are name-addrs without tag
    /// (`<sip:alice@example.com>`). Send it with the transaction layer to `peer`.
    #[allow(clippy::too_many_arguments)]
    pub fn invite(
        &mut self,
        now: Instant,
        from: &str,
        to: &str,
        request_uri: Uri,
        local_contact: Uri,
        extra: Vec<Header>,
        body: Vec<u8>,
        peer: Peer,
    ) -> Result<rsip::Request> {
        let call_id = self.new_call_id(&local_contact.host_with_port.host.to_string());
        let tag = self.new_tag();
        let branch = self.new_branch();
        let transport = match peer.transport {
            transaction::TransportKind::Udp => "UDP",
            transaction::TransportKind::Tcp => "TCP",
            transaction::TransportKind::Tls => "TLS",
        };
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{transport} {};branch={branch};rport",
            local_contact.host_with_port
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{from};tag={tag}"
        ))));
        headers.push(Header::To(rsip::headers::To::new(to.to_string())));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
        headers.push(Header::CSeq(
            rsip::typed::CSeq {
                seq: 1,
                method: Method::Invite,
            }
            .into(),
        ));
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{local_contact}>"
        ))));
        for h in extra {
            headers.push(h);
        }
        headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
            body.len() as u32,
        )));
        let invite = rsip::Request {
            method: Method::Invite,
            uri: request_uri,
            version: rsip::Version::V2,
            headers,
            body,
        };
        self.track_invite(now, &invite, local_contact, peer)?;
        Ok(invite)
    }

    /// Remembers an INVITE built elsewhere (it must carry a From tag and a Call-ID) so
    /// its responses create dialogs. Only its Request-URI, From and CSeq are kept.
    pub fn track_invite(
        &mut self,
        _now: Instant,
        invite: &rsip::Request,
        local_contact: Uri,
        peer: Peer,
    ) -> Result<()> {
        if invite.method != Method::Invite {
            return Err(Error::NotInvite {
                method: invite.method,
            });
        }
        let call_id = transaction::call_id(&invite.headers)?;
        let tag = transaction::from_tag(&invite.headers)?
            .ok_or(Error::MissingHeader { header: "From tag" })?;
        transaction::cseq(&invite.headers)?;
        transaction::to_header(&invite.headers)?;
        let key = (call_id, tag);
        if let Some(old) = self.set_by_key.remove(&key) {
            self.sets.remove(&old);
        }
        let mut headers = rsip::Headers::default();
        for h in invite.headers.iter() {
            if matches!(h, Header::From(_) | Header::CSeq(_)) {
                headers.push(h.clone());
            }
        }
        let invite = rsip::Request {
            method: Method::Invite,
            uri: invite.uri.clone(),
            version: invite.version.clone(),
            headers,
            body: Vec::new(),
        };
        let num = self.alloc();
        self.sets.insert(
            num,
            Box::new(InviteSet {
                invite,
                local_contact,
                peer,
                winner: None,
                dialogs: Vec::new(),
                key: key.clone(),
                expires: None,
            }),
        );
        self.set_by_key.insert(key, num);
        Ok(())
    }

    /// Builds a request inside dialog `id`: BYE, re-INVITE (hold/resume), UPDATE, INFO,
    /// REFER, NOTIFY, MESSAGE, OPTIONS. Send it with the transaction layer to the returned
    /// peer. Sending BYE ends the dialog at once; a second INVITE while one is pending is
    /// refused (14.1). ACK, CANCEL and PRACK are produced by the layers themselves.
    pub fn send_request(
        &mut self,
        now: Instant,
        id: &DialogId,
        method: Method,
        extra: Vec<Header>,
        body: Vec<u8>,
    ) -> Result<(rsip::Request, Peer)> {
        if matches!(method, Method::Ack | Method::Cancel | Method::PRack) {
            return Err(Error::MethodNotAllowed { method });
        }
        let num = *self
            .by_id
            .get(id)
            .ok_or_else(|| Error::UnknownDialog { id: id.clone() })?;
        let branch = self.new_branch();
        let Some(entry) = self.entries.get_mut(&num) else {
            return Err(Error::UnknownDialog { id: id.clone() });
        };
        if entry.ended {
            return Err(Error::DialogEnded { id: id.clone() });
        }
        if method == Method::Invite && (entry.pending_invite.is_some() || entry.incoming_invite) {
            return Err(Error::InvitePending { id: id.clone() });
        }
        if method == Method::Invite {
            entry.glare_retry = Some(Box::new((extra.clone(), body.clone())));
        }
        let request = entry
            .dialog
            .build_request(method, &branch, None, extra, body);
        let peer = entry.dialog.peer;
        if method == Method::Invite {
            entry.pending_invite = Some(entry.dialog.local_seq);
        }
        if method == Method::Bye {
            entry.bye_sent = true;
            self.end(now, num, EndReason::LocalBye);
        }
        Ok((request, peer))
    }

    /// Builds the UAS's response to an INVITE (initial or re-INVITE) received in server
    /// transaction `server`, and updates the dialog: a 1xx (not 100) creates an early
    /// dialog, a 2xx confirms it and starts its retransmission until the ACK, a non-2xx
    /// final ends an early dialog. `reliable` sends a 1xx with 100rel (the INVITE must
    /// support it). Pass the result to the transaction layer's `respond`.
    #[allow(clippy::too_many_arguments)]
    pub fn answer_invite(
        &mut self,
        now: Instant,
        server: &ServerKey,
        invite: &rsip::Request,
        source: Peer,
        status: u16,
        local_contact: &Uri,
        extra: Vec<Header>,
        body: Vec<u8>,
        reliable: bool,
    ) -> Result<rsip::Response> {
        if invite.method != Method::Invite {
            return Err(Error::NotInvite {
                method: invite.method,
            });
        }
        let code = rsip::StatusCode::from(status);
        let kind = code.kind();
        let call_id = transaction::call_id(&invite.headers)?;
        let remote_tag = transaction::from_tag(&invite.headers)?
            .ok_or(Error::MissingHeader { header: "From tag" })?;
        let invite_seq = transaction::cseq(&invite.headers)?.seq;
        let existing_tag = transaction::to_tag(&invite.headers)?;
        if status == 100 {
            return Ok(transaction::response_for(invite, code, None));
        }
        let reinvite = existing_tag.is_some();
        let local_tag = match existing_tag {
            Some(t) => t,
            None => match self.uas_tags.get(server) {
                Some(t) => t.clone(),
                None => self.new_tag(),
            },
        };
        let id = DialogId {
            call_id,
            local_tag: local_tag.clone(),
            remote_tag,
        };
        if reliable && !supports_100rel(invite) {
            return Err(Error::No100rel);
        }
        let num = match self.by_id.get(&id) {
            Some(n) => *n,
            None if reinvite => return Err(Error::UnknownDialog { id }),
            None if kind == StatusCodeKind::Provisional || kind == StatusCodeKind::Successful => {
                let dialog = uas_dialog(&id, invite, local_contact, source)?;
                let n = self.insert(dialog)?;
                if kind == StatusCodeKind::Provisional {
                    self.events.push_back(DialogEvent::Early { id: id.clone() });
                }
                n
            }
            None => {
                // A final non-2xx without any dialog: nothing to track.
                self.uas_tags.remove(server);
                let mut response = transaction::response_for(invite, code, Some(&local_tag));
                append(&mut response, extra, body);
                return Ok(response);
            }
        };
        if let Some(entry) = self.entries.get(&num) {
            if entry.ended {
                if !reinvite
                    && kind != StatusCodeKind::Provisional
                    && kind != StatusCodeKind::Successful
                {
                    // The caller's BYE ended the early dialog: its INVITE still gets its
                    // final response (487, RFC 3261 15.1.2), and nothing else changes.
                    self.uas_tags.remove(server);
                    let mut response = transaction::response_for(invite, code, Some(&local_tag));
                    append(&mut response, extra, body);
                    return Ok(response);
                }
                return Err(Error::DialogEnded { id });
            }
            if reliable && entry.reliable.is_some() {
                return Err(Error::PrackPending { id });
            }
        }
        let mut response = transaction::response_for(invite, code, Some(&local_tag));
        if kind != StatusCodeKind::Provisional || status > 100 {
            for h in invite.headers.iter() {
                if matches!(h, Header::RecordRoute(_)) {
                    response.headers.push(h.clone());
                }
            }
            if matches!(
                kind,
                StatusCodeKind::Provisional | StatusCodeKind::Successful
            ) {
                response
                    .headers
                    .push(Header::Contact(rsip::headers::Contact::new(format!(
                        "<{local_contact}>"
                    ))));
            }
        }
        let t = self.config.timers;
        let Some(entry) = self.entries.get_mut(&num) else {
            return Err(Error::UnknownDialog { id });
        };
        match kind {
            StatusCodeKind::Provisional => {
                if !reinvite {
                    self.uas_tags.insert(server.clone(), local_tag);
                }
                if reliable {
                    entry.next_rseq = entry.next_rseq.wrapping_add(1).max(1);
                    let rseq = entry.next_rseq;
                    response
                        .headers
                        .push(Header::Require(rsip::headers::Require::new("100rel")));
                    response
                        .headers
                        .push(Header::Other("RSeq".into(), rseq.to_string()));
                    append(&mut response, extra, body);
                    entry.reliable = Some(Box::new(Retransmit {
                        server: server.clone(),
                        response: response.clone(),
                        interval: t.t1,
                        give_up: now + t.t1x64(),
                        seq: rseq,
                        invite_seq,
                    }));
                    self.arm(num, Slot::Prack, now + t.t1);
                } else {
                    append(&mut response, extra, body);
                }
            }
            StatusCodeKind::Successful => {
                append(&mut response, extra, body);
                let was_early = entry.dialog.state == DialogState::Early;
                entry.dialog.state = DialogState::Confirmed;
                entry.incoming_invite = false;
                entry.reliable = None;
                entry.ok = Some(Box::new(Retransmit {
                    server: server.clone(),
                    response: response.clone(),
                    interval: t.t1,
                    give_up: now + t.t1x64(),
                    seq: invite_seq,
                    invite_seq,
                }));
                self.uas_tags.remove(server);
                self.disarm(num, Slot::Prack);
                self.arm(num, Slot::Ok, now + t.t1);
                if was_early || !reinvite {
                    self.events.push_back(DialogEvent::Confirmed { id });
                }
            }
            _ => {
                append(&mut response, extra, body);
                entry.incoming_invite = false;
                entry.reliable = None;
                self.disarm(num, Slot::Prack);
                self.uas_tags.remove(server);
                if !reinvite {
                    self.end(now, num, EndReason::Rejected(status));
                }
            }
        }
        Ok(response)
    }

    /// Checks a request the transaction layer reported
    /// ([`crate::transaction::TransactionEvent::Request`]) against the dialogs. ACKs go
    /// to [`on_ack`](Self::on_ack) instead.
    pub fn on_request(&mut self, now: Instant, request: &rsip::Request) -> RequestDisposition {
        let reject = |status| {
            RequestDisposition::Reject(Rejection {
                status,
                retry_after: None,
            })
        };
        let (Ok(call_id), Ok(from_tag), Ok(to_tag), Ok(cseq)) = (
            transaction::call_id(&request.headers),
            transaction::from_tag(&request.headers),
            transaction::to_tag(&request.headers),
            transaction::cseq(&request.headers),
        ) else {
            return reject(400);
        };
        let Some(local_tag) = to_tag else {
            return RequestDisposition::OutOfDialog;
        };
        let id = DialogId {
            call_id,
            local_tag,
            remote_tag: from_tag.unwrap_or_default(),
        };
        let Some(&num) = self.by_id.get(&id) else {
            return reject(481);
        };
        let retry_after = (self.rng.next() % 11) as u32;
        let Some(entry) = self.entries.get_mut(&num) else {
            return reject(481);
        };
        if entry.ended {
            // RFC 5407: the peer's BYE crossing ours is answered 200, nothing else.
            if request.method == Method::Bye && entry.bye_sent {
                return RequestDisposition::InDialog(id);
            }
            return reject(481);
        }
        if let Some(remote) = entry.dialog.remote_seq {
            if cseq.seq < remote {
                return reject(500);
            }
        }
        match request.method {
            Method::Invite if entry.pending_invite.is_some() => return reject(491),
            Method::Invite if entry.incoming_invite => {
                return RequestDisposition::Reject(Rejection {
                    status: 500,
                    retry_after: Some(retry_after),
                })
            }
            Method::PRack => {
                let rack = transaction::other_header(&request.headers, "RAck");
                let matched = match (&entry.reliable, rack.and_then(parse_rack)) {
                    (Some(r), Some((rseq, seq, Method::Invite))) => {
                        r.seq == rseq && r.invite_seq == seq
                    }
                    _ => false,
                };
                if !matched {
                    return reject(481);
                }
                entry.reliable = None;
                entry.dialog.remote_seq = Some(cseq.seq);
                self.disarm(num, Slot::Prack);
                return RequestDisposition::InDialog(id);
            }
            _ => {}
        }
        entry.dialog.remote_seq = Some(cseq.seq);
        match request.method {
            Method::Invite => {
                entry.incoming_invite = true;
                if let Ok(target) = state::contact_uri(&request.headers) {
                    entry.dialog.remote_target = target;
                }
            }
            Method::Update => {
                if let Ok(target) = state::contact_uri(&request.headers) {
                    entry.dialog.remote_target = target;
                }
            }
            Method::Bye => self.end(now, num, EndReason::RemoteBye),
            _ => {}
        }
        RequestDisposition::InDialog(id)
    }

    /// An ACK the transaction layer reported ([`crate::transaction::TransactionEvent::Ack`]):
    /// stops the 2xx retransmission it acknowledges. Returns its dialog, if known.
    pub fn on_ack(&mut self, _now: Instant, ack: &rsip::Request) -> Option<DialogId> {
        let id = DialogId {
            call_id: transaction::call_id(&ack.headers).ok()?,
            local_tag: transaction::to_tag(&ack.headers).ok()??,
            remote_tag: transaction::from_tag(&ack.headers)
                .ok()?
                .unwrap_or_default(),
        };
        let seq = transaction::cseq(&ack.headers).ok()?.seq;
        let num = *self.by_id.get(&id)?;
        let entry = self.entries.get_mut(&num)?;
        if entry.ok.as_ref().is_some_and(|ok| ok.seq == seq) {
            entry.ok = None;
            self.disarm(num, Slot::Ok);
        }
        Some(id)
    }

    /// A response the transaction layer reported
    /// ([`crate::transaction::TransactionEvent::Response`] or `StrayResponse`).
    pub fn on_response(
        &mut self,
        now: Instant,
        response: &rsip::Response,
    ) -> Result<ResponseDisposition> {
        let cseq = transaction::cseq(&response.headers)?;
        let call_id = transaction::call_id(&response.headers)?;
        let local_tag = transaction::from_tag(&response.headers)?
            .ok_or(Error::MissingHeader { header: "From tag" })?;
        let remote_tag = transaction::to_tag(&response.headers)?;
        let code = response.status_code.code();
        let kind = response.status_code.kind();
        let id = remote_tag.map(|remote_tag| DialogId {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag,
        });
        let num = id.as_ref().and_then(|id| self.by_id.get(id).copied());
        if cseq.method != Method::Invite {
            let (Some(id), Some(num)) = (id, num) else {
                return Ok(ResponseDisposition::Pass(None));
            };
            let Some(entry) = self.entries.get(&num) else {
                return Ok(ResponseDisposition::Pass(None));
            };
            if entry.ended {
                // Our BYE's answer (200, or 481 when BYEs crossed): nothing left to do.
                return Ok(ResponseDisposition::Absorb);
            }
            if code == 481 || code == 408 {
                self.end(now, num, EndReason::RequestFailed(code));
            }
            return Ok(ResponseDisposition::Pass(Some(id)));
        }
        let set_num = self.set_by_key.get(&(call_id, local_tag)).copied();
        let initial = set_num
            .and_then(|s| self.sets.get(&s))
            .and_then(|s| transaction::cseq(&s.invite.headers).ok())
            .is_some_and(|c| c.seq == cseq.seq);
        if !initial {
            return self.on_reinvite_response(now, id, num, cseq.seq, response);
        }
        let Some(set_num) = set_num else {
            return Ok(ResponseDisposition::Absorb);
        };
        let t = self.config.timers;
        match kind {
            StatusCodeKind::Provisional => {
                let Some(id) = id else {
                    return Ok(ResponseDisposition::Pass(None));
                };
                if self.sets.get(&set_num).is_some_and(|s| s.winner.is_some()) {
                    return Ok(ResponseDisposition::Absorb);
                }
                let num = match num {
                    Some(n) => n,
                    None => {
                        let Some(set) = self.sets.get(&set_num) else {
                            return Ok(ResponseDisposition::Absorb);
                        };
                        let dialog =
                            uac_dialog(&id, &set.invite, response, &set.local_contact, set.peer)?;
                        let n = self.insert(dialog)?;
                        if let Some(set) = self.sets.get_mut(&set_num) {
                            set.dialogs.push(id.clone());
                        }
                        self.events.push_back(DialogEvent::Early { id: id.clone() });
                        n
                    }
                };
                let rseq = transaction::other_header(&response.headers, "RSeq")
                    .and_then(|v| v.parse::<u32>().ok());
                if let (true, Some(rseq)) = (requires_100rel(response), rseq) {
                    let branch = self.new_branch();
                    let Some(entry) = self.entries.get_mut(&num) else {
                        return Ok(ResponseDisposition::Absorb);
                    };
                    let in_order = match entry.last_rseq {
                        None => true,
                        Some(last) => rseq == last.wrapping_add(1),
                    };
                    if !in_order {
                        return Ok(ResponseDisposition::Absorb);
                    }
                    entry.last_rseq = Some(rseq);
                    let rack = Header::Other("RAck".into(), format!("{rseq} {} INVITE", cseq.seq));
                    let prack = entry.dialog.build_request(
                        Method::PRack,
                        &branch,
                        None,
                        vec![rack],
                        Vec::new(),
                    );
                    let destination = entry.dialog.peer;
                    self.actions.push_back(DialogAction::SendRequest {
                        dialog: id.clone(),
                        request: prack,
                        destination,
                    });
                }
                Ok(ResponseDisposition::Pass(Some(id)))
            }
            StatusCodeKind::Successful => {
                let id = id.ok_or(Error::MissingHeader { header: "To tag" })?;
                let winner = self.sets.get(&set_num).and_then(|s| s.winner.clone());
                if let Some(num) = num {
                    if let Some(entry) = self.entries.get(&num) {
                        if let Some((seq, ack)) = entry.ack.as_deref() {
                            if *seq == cseq.seq {
                                // A retransmitted 2xx: the same ACK again.
                                self.actions.push_back(DialogAction::SendStateless {
                                    message: ack.clone().into(),
                                    destination: entry.dialog.peer,
                                });
                                return Ok(ResponseDisposition::Absorb);
                            }
                        }
                    }
                }
                let late_fork = winner.as_ref().is_some_and(|w| *w != id);
                let num = match num {
                    Some(n) => n,
                    None => {
                        let Some(set) = self.sets.get(&set_num) else {
                            return Ok(ResponseDisposition::Absorb);
                        };
                        let dialog =
                            uac_dialog(&id, &set.invite, response, &set.local_contact, set.peer)?;
                        let n = self.insert(dialog)?;
                        if let Some(set) = self.sets.get_mut(&set_num) {
                            set.dialogs.push(id.clone());
                        }
                        n
                    }
                };
                // Recompute the route set and target from the 2xx (12.2.1.2).
                let routes = state::record_routes(&response.headers)?;
                let target = state::contact_uri(&response.headers).ok();
                let branch = self.new_branch();
                let bye_branch = self.new_branch();
                let Some(entry) = self.entries.get_mut(&num) else {
                    return Ok(ResponseDisposition::Absorb);
                };
                entry.dialog.route_set = routes.into_iter().rev().collect();
                if let Some(target) = target {
                    entry.dialog.remote_target = target;
                }
                entry.dialog.state = DialogState::Confirmed;
                let ack = entry.dialog.build_request(
                    Method::Ack,
                    &branch,
                    Some(cseq.seq),
                    Vec::new(),
                    Vec::new(),
                );
                entry.ack = Some(Box::new((cseq.seq, ack.clone())));
                let destination = entry.dialog.peer;
                self.actions.push_back(DialogAction::SendStateless {
                    message: ack.into(),
                    destination,
                });
                if late_fork {
                    // 13.2.2.4: ACK, then BYE the fork that lost.
                    let bye = entry.dialog.build_request(
                        Method::Bye,
                        &bye_branch,
                        None,
                        Vec::new(),
                        Vec::new(),
                    );
                    entry.bye_sent = true;
                    self.actions.push_back(DialogAction::SendRequest {
                        dialog: id.clone(),
                        request: bye,
                        destination,
                    });
                    self.end(now, num, EndReason::ForkLost);
                    if let Some(entry) = self.entries.get_mut(&num) {
                        entry.dialog.state = DialogState::Terminated;
                    }
                    return Ok(ResponseDisposition::Absorb);
                }
                self.events
                    .push_back(DialogEvent::Confirmed { id: id.clone() });
                let mut losers = Vec::new();
                if let Some(set) = self.sets.get_mut(&set_num) {
                    set.winner = Some(id.clone());
                    losers = set.dialogs.iter().filter(|d| **d != id).cloned().collect();
                }
                for loser in losers {
                    if let Some(&n) = self.by_id.get(&loser) {
                        if self
                            .entries
                            .get(&n)
                            .is_some_and(|e| e.dialog.state == DialogState::Early)
                        {
                            self.end(now, n, EndReason::ForkLost);
                        }
                    }
                }
                self.arm_set(set_num, now + t.t1x64());
                Ok(ResponseDisposition::Pass(Some(id)))
            }
            _ => {
                let mut early = Vec::new();
                if let Some(set) = self.sets.get(&set_num) {
                    if set.winner.is_none() {
                        early = set.dialogs.clone();
                    }
                }
                for d in early {
                    if let Some(&n) = self.by_id.get(&d) {
                        self.end(now, n, EndReason::Rejected(code));
                    }
                }
                self.arm_set(set_num, now + t.t1x64());
                Ok(ResponseDisposition::Pass(id))
            }
        }
    }

    fn on_reinvite_response(
        &mut self,
        now: Instant,
        id: Option<DialogId>,
        num: Option<u64>,
        seq: u32,
        response: &rsip::Response,
    ) -> Result<ResponseDisposition> {
        let (Some(id), Some(num)) = (id, num) else {
            return Ok(ResponseDisposition::Absorb);
        };
        let code = response.status_code.code();
        let kind = response.status_code.kind();
        let branch = self.new_branch();
        let backoff = self.rng.next();
        let Some(entry) = self.entries.get_mut(&num) else {
            return Ok(ResponseDisposition::Absorb);
        };
        match kind {
            StatusCodeKind::Provisional => Ok(ResponseDisposition::Pass(Some(id))),
            StatusCodeKind::Successful => {
                let destination = entry.dialog.peer;
                if let Some((ack_seq, ack)) = entry.ack.as_deref() {
                    if *ack_seq == seq {
                        self.actions.push_back(DialogAction::SendStateless {
                            message: ack.clone().into(),
                            destination,
                        });
                        return Ok(ResponseDisposition::Absorb);
                    }
                }
                if entry.ended {
                    return Ok(ResponseDisposition::Absorb);
                }
                if let Ok(target) = state::contact_uri(&response.headers) {
                    entry.dialog.remote_target = target;
                }
                let ack = entry.dialog.build_request(
                    Method::Ack,
                    &branch,
                    Some(seq),
                    Vec::new(),
                    Vec::new(),
                );
                entry.ack = Some(Box::new((seq, ack.clone())));
                if entry.pending_invite == Some(seq) {
                    entry.pending_invite = None;
                    entry.glare_retry = None;
                }
                self.actions.push_back(DialogAction::SendStateless {
                    message: ack.into(),
                    destination,
                });
                Ok(ResponseDisposition::Pass(Some(id)))
            }
            _ => {
                if entry.pending_invite == Some(seq) {
                    entry.pending_invite = None;
                }
                if entry.ended {
                    return Ok(ResponseDisposition::Absorb);
                }
                if code == 491 && entry.glare_retry.is_some() {
                    // 14.1: the Call-ID owner (the dialog's UAC) waits 2.1-4 s, the other
                    // side 0-2 s, in 10 ms steps.
                    let delay_ms = match entry.dialog.role {
                        Role::Uac => 2100 + 10 * (backoff % 191),
                        Role::Uas => 10 * (backoff % 201),
                    };
                    self.arm(num, Slot::Glare, now + Duration::from_millis(delay_ms));
                } else {
                    entry.glare_retry = None;
                }
                if code == 481 || code == 408 {
                    self.end(now, num, EndReason::RequestFailed(code));
                }
                Ok(ResponseDisposition::Pass(Some(id)))
            }
        }
    }

    /// The INVITE we sent ended without a final response (transaction timeout or
    /// transport error, [`crate::transaction::TransactionEvent::Timeout`]): its early
    /// dialogs end as if answered 408, and the INVITE is forgotten after 64*T1.
    pub fn on_invite_failed(&mut self, now: Instant, invite: &rsip::Request) {
        let (Ok(call_id), Ok(Some(tag))) = (
            transaction::call_id(&invite.headers),
            transaction::from_tag(&invite.headers),
        ) else {
            return;
        };
        let Some(&set_num) = self.set_by_key.get(&(call_id, tag)) else {
            return;
        };
        let early = match self.sets.get(&set_num) {
            Some(set) if set.winner.is_none() => set.dialogs.clone(),
            _ => Vec::new(),
        };
        for d in early {
            if let Some(&n) = self.by_id.get(&d) {
                self.end(now, n, EndReason::Rejected(408));
            }
        }
        let at = now + self.config.timers.t1x64();
        self.arm_set(set_num, at);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                TimerRef::InviteSet(n) => {
                    if let Some(set) = self.sets.remove(&n) {
                        self.set_by_key.remove(&set.key);
                    }
                }
                TimerRef::Dialog(n, slot) => {
                    if let Some(e) = self.entries.get_mut(&n) {
                        e.timers[slot as usize] = None;
                        self.fire(now, n, slot, at);
                    }
                }
            }
        }
    }

    fn fire(&mut self, now: Instant, num: u64, slot: Slot, at: Instant) {
        let t = self.config.timers;
        let branch = self.new_branch();
        let Some(entry) = self.entries.get_mut(&num) else {
            return;
        };
        let id = entry.dialog.id.clone();
        match slot {
            Slot::Ok => {
                let Some(ok) = entry.ok.as_mut() else { return };
                if at >= ok.give_up {
                    // 13.3.1.4: no ACK within 64*T1: end the dialog with a BYE.
                    entry.ok = None;
                    let bye = entry.dialog.build_request(
                        Method::Bye,
                        &branch,
                        None,
                        Vec::new(),
                        Vec::new(),
                    );
                    entry.bye_sent = true;
                    let destination = entry.dialog.peer;
                    self.actions.push_back(DialogAction::SendRequest {
                        dialog: id,
                        request: bye,
                        destination,
                    });
                    self.end(now, num, EndReason::NoAck);
                    return;
                }
                self.actions.push_back(DialogAction::Respond {
                    server: ok.server.clone(),
                    response: ok.response.clone(),
                });
                ok.interval = (ok.interval * 2).min(t.t2);
                let next = (at + ok.interval).min(ok.give_up);
                self.arm(num, Slot::Ok, next);
            }
            Slot::Prack => {
                let Some(r) = entry.reliable.as_mut() else {
                    return;
                };
                if at >= r.give_up {
                    let server = r.server.clone();
                    entry.reliable = None;
                    self.events
                        .push_back(DialogEvent::PrackTimeout { id, server });
                    return;
                }
                self.actions.push_back(DialogAction::Respond {
                    server: r.server.clone(),
                    response: r.response.clone(),
                });
                r.interval *= 2;
                let next = (at + r.interval).min(r.give_up);
                self.arm(num, Slot::Prack, next);
            }
            Slot::Glare => {
                if entry.ended || entry.pending_invite.is_some() || entry.incoming_invite {
                    // Something else happened meanwhile; the TU decides again.
                    entry.glare_retry = None;
                    return;
                }
                let Some((extra, body)) = entry.glare_retry.as_deref().cloned() else {
                    return;
                };
                let request =
                    entry
                        .dialog
                        .build_request(Method::Invite, &branch, None, extra, body);
                entry.pending_invite = Some(entry.dialog.local_seq);
                let destination = entry.dialog.peer;
                self.actions.push_back(DialogAction::SendRequest {
                    dialog: id,
                    request,
                    destination,
                });
            }
            Slot::Linger => {
                if let Some(e) = self.entries.remove(&num) {
                    self.by_id.remove(&e.dialog.id);
                    for (slot, at) in [Slot::Ok, Slot::Prack, Slot::Glare, Slot::Linger]
                        .into_iter()
                        .zip(e.timers)
                    {
                        if let Some(at) = at {
                            self.timers.remove(&(at, TimerRef::Dialog(num, slot)));
                        }
                    }
                }
            }
        }
    }

    fn alloc(&mut self) -> u64 {
        self.next_num = self.next_num.wrapping_add(1);
        self.next_num
    }

    fn insert(&mut self, dialog: Dialog) -> Result<u64> {
        if self.entries.len() >= self.config.max_dialogs {
            return Err(Error::TooManyDialogs {
                limit: self.config.max_dialogs,
            });
        }
        let num = self.alloc();
        self.by_id.insert(dialog.id.clone(), num);
        self.entries.insert(
            num,
            Box::new(Entry {
                dialog,
                timers: [None; 4],
                ok: None,
                reliable: None,
                next_rseq: (self.rng.next() % 0x7fff_ffff) as u32,
                last_rseq: None,
                ack: None,
                pending_invite: None,
                glare_retry: None,
                incoming_invite: false,
                bye_sent: false,
                ended: false,
            }),
        );
        Ok(num)
    }

    fn end(&mut self, now: Instant, num: u64, reason: EndReason) {
        let Some(entry) = self.entries.get_mut(&num) else {
            return;
        };
        if entry.ended {
            return;
        }
        entry.ended = true;
        entry.dialog.state = DialogState::Terminated;
        entry.ok = None;
        entry.reliable = None;
        entry.glare_retry = None;
        let id = entry.dialog.id.clone();
        self.disarm(num, Slot::Ok);
        self.disarm(num, Slot::Prack);
        self.disarm(num, Slot::Glare);
        let linger = now + self.config.timers.t1x64();
        self.arm(num, Slot::Linger, linger);
        self.events
            .push_back(DialogEvent::Terminated { id, reason });
    }

    fn arm(&mut self, num: u64, slot: Slot, at: Instant) {
        let Some(e) = self.entries.get_mut(&num) else {
            return;
        };
        if let Some(old) = e.timers[slot as usize].replace(at) {
            self.timers.remove(&(old, TimerRef::Dialog(num, slot)));
        }
        self.timers.insert((at, TimerRef::Dialog(num, slot)));
    }

    fn disarm(&mut self, num: u64, slot: Slot) {
        if let Some(e) = self.entries.get_mut(&num) {
            if let Some(old) = e.timers[slot as usize].take() {
                self.timers.remove(&(old, TimerRef::Dialog(num, slot)));
            }
        }
    }

    fn arm_set(&mut self, set: u64, at: Instant) {
        let Some(s) = self.sets.get_mut(&set) else {
            return;
        };
        if s.expires.is_some() {
            // Armed by the first final response already.
            return;
        }
        s.expires = Some(at);
        self.timers.insert((at, TimerRef::InviteSet(set)));
    }
}

fn append(response: &mut rsip::Response, extra: Vec<Header>, body: Vec<u8>) {
    for h in extra {
        response.headers.push(h);
    }
    if !body.is_empty() {
        response
            .headers
            .retain(|h| !matches!(h, Header::ContentLength(_)));
        response
            .headers
            .push(Header::ContentLength(rsip::headers::ContentLength::from(
                body.len() as u32,
            )));
        response.body = body;
    }
}

fn has_option_tag(headers: &rsip::Headers, tag: &str, require_only: bool) -> bool {
    headers.iter().any(|h| {
        let value = match h {
            Header::Require(r) => r.value(),
            Header::Supported(s) if !require_only => s.value(),
            _ => return false,
        };
        value.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag))
    })
}

fn supports_100rel(invite: &rsip::Request) -> bool {
    has_option_tag(&invite.headers, "100rel", false)
}

fn requires_100rel(response: &rsip::Response) -> bool {
    has_option_tag(&response.headers, "100rel", true)
}

/// `RAck: <rseq> <cseq> <method>`.
fn parse_rack(value: &str) -> Option<(u32, u32, Method)> {
    let mut parts = value.split_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let method = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((rseq, seq, method))
}

fn uac_dialog(
    id: &DialogId,
    invite: &rsip::Request,
    response: &rsip::Response,
    local_contact: &Uri,
    peer: Peer,
) -> Result<Dialog> {
    let from = transaction::from_header(&invite.headers)?;
    let to = transaction::to_header(&response.headers)?;
    let routes = state::record_routes(&response.headers)?;
    let target = state::contact_uri(&response.headers).unwrap_or_else(|_| invite.uri.clone());
    Ok(Dialog {
        id: id.clone(),
        role: Role::Uac,
        state: if response.status_code.kind() == StatusCodeKind::Successful {
            DialogState::Confirmed
        } else {
            DialogState::Early
        },
        local_uri: state::without_tag(from.display_name.as_ref(), &from.uri, &from.params),
        remote_uri: state::without_tag(to.display_name.as_ref(), &to.uri, &to.params),
        local_seq: transaction::cseq(&invite.headers)?.seq,
        remote_seq: None,
        remote_target: target,
        route_set: routes.into_iter().rev().collect(),
        secure: invite.uri.is_sips().unwrap_or(false),
        local_contact: local_contact.clone(),
        peer,
    })
}

fn uas_dialog(
    id: &DialogId,
    invite: &rsip::Request,
    local_contact: &Uri,
    peer: Peer,
) -> Result<Dialog> {
    let from = transaction::from_header(&invite.headers)?;
    let to = transaction::to_header(&invite.headers)?;
    let routes = state::record_routes(&invite.headers)?;
    let target = state::contact_uri(&invite.headers)?;
    Ok(Dialog {
        id: id.clone(),
        role: Role::Uas,
        state: DialogState::Early,
        local_uri: state::without_tag(to.display_name.as_ref(), &to.uri, &to.params),
        remote_uri: state::without_tag(from.display_name.as_ref(), &from.uri, &from.params),
        local_seq: 0,
        remote_seq: Some(transaction::cseq(&invite.headers)?.seq),
        remote_target: target,
        route_set: routes,
        secure: invite.uri.is_sips().unwrap_or(false),
        local_contact: local_contact.clone(),
        peer,
    })
}
