//! RFC 3261 transactions (section 17, with RFC 6026's Accepted state), sans-IO.
//!
//! # Map
//!
//! - [`TransactionLayer`]: every client and server transaction of one SIP endpoint.
//!   Inputs: [`TransactionLayer::handle_message`] (an already parsed message and the
//!   [`Peer`] it came from), [`TransactionLayer::handle_timeout`], and the TU's calls
//!   [`TransactionLayer::send_request`], [`TransactionLayer::respond`],
//!   [`TransactionLayer::cancel`], [`TransactionLayer::send_stateless`]. Outputs:
//!   [`TransactionLayer::poll_transmit`] ([`Transmit`]: a message and where to send it),
//!   [`TransactionLayer::poll_event`] ([`TransactionEvent`]) and
//!   [`TransactionLayer::timeout`]. Time is always passed in; nothing here reads a clock,
//!   opens a socket or spawns a task, so tests run on a virtual clock.
//! - `fields` (private, re-exported helpers [`response_for`]): reading Via/CSeq/tags and
//!   building the responses, ACKs and CANCELs the layer produces itself.
//!
//! # What the layer does (and what it leaves to the TU)
//!
//! - Keys: client transactions by top Via branch + CSeq method (17.1.3); server
//!   transactions by branch + sent-by + method, where ACK maps to INVITE (17.2.3). A
//!   request whose branch lacks the `z9hG4bK` cookie (RFC 2543 peers) is keyed by
//!   Call-ID, From tag, CSeq number and Request-URI instead, which keeps the ACK and
//!   CANCEL of such a peer on its INVITE.
//! - Header forms: the key fields are read from the header text with the message
//!   module's grammar, not rsip's typed headers, so every legal spelling of a request
//!   and its retransmission (or of a response) gives the same key: compact names (`v`,
//!   `i`, `f`, `t`, `l`, ...; undone by [`crate::message::parse`]), folded lines, LWS
//!   around `/`, `:`, `;` and `=` in a Via (`SIP / 2.0 / UDP host : 5060 ; branch =
//!   z9hG4bK...`), several Via values on one line (only the first counts), CSeq padded
//!   with white space or leading zeros. The sent-by is compared without that white
//!   space and lowercased. The magic cookie is recognised only as the exact
//!   characters `z9hG4bK` (RFC 3261 8.1.1.7; `Z9HG4BK...` is keyed RFC 2543 style),
//!   and a branch is compared byte for byte: it is an opaque identifier that a client
//!   never changes between retransmissions, and RFC 3261 17.2.3 asks for equality
//!   (Kamailio and reSIProcate compare it the same way). `transaction/tests/forms.rs`
//!   holds one test per form.
//! - Client INVITE: Calling, Proceeding, Accepted (RFC 6026), Completed, Terminated; timers
//!   A (retransmit, doubling, UDP only), B (64*T1 in Calling), D (linger after a non-2xx,
//!   `max(32 s, 64*T1)`, zero on TCP/TLS), M (64*T1 in Accepted: 2xx retransmissions reach
//!   the TU so it can ACK each). The layer sends the ACK for a non-2xx final response
//!   itself (17.1.1.3) and re-sends it for every retransmission of that response.
//! - Client non-INVITE: Trying, Proceeding, Completed; timers E (doubling up to T2, UDP
//!   only), F (64*T1), K (T4, zero on TCP/TLS).
//! - Server INVITE: Proceeding, Accepted, Completed, Confirmed; a 100 Trying goes out
//!   after 200 ms (configurable) if the TU has not sent a provisional response yet;
//!   timers G (UDP only), H, I, L. INVITE retransmissions get the last response again.
//!   An ACK for a non-2xx response is absorbed (Completed to Confirmed); an ACK that
//!   matches no transaction or an Accepted one (an ACK for a 2xx) goes to the TU as
//!   [`TransactionEvent::Ack`].
//! - Server non-INVITE: Trying, Proceeding, Completed; timer J (64*T1, zero on TCP/TLS).
//!   Beyond the RFC, a server non-INVITE transaction the TU never answers ends after 64*T1
//!   with [`TransactionEvent::Timeout`] (the client gave up by then) so it cannot leak.
//! - CANCEL received: its own server transaction; the layer answers it (200 when it
//!   matches an INVITE server transaction, 481 otherwise, RFC 3261 9.2) and tells the TU
//!   with [`TransactionEvent::Cancelled`] when that INVITE is still unanswered, so the TU
//!   answers the INVITE with 487.
//! - CANCEL sent: [`TransactionLayer::cancel`] builds it per 9.1 and sends it only once a
//!   provisional response arrived (queued until then). If the INVITE has no final
//!   response 64*T1 after the CANCEL, the INVITE transaction ends with a timeout (9.1).
//! - Stray responses (18.1.2): dropped, except a 2xx to an INVITE, which reaches the TU as
//!   [`TransactionEvent::StrayResponse`] (a late 2xx of another fork must be ACKed and
//!   BYEd, 13.2.2.4).
//! - Limits: [`TransactionConfig::max_transactions`] in total and
//!   [`TransactionConfig::max_server_transactions_per_source`] per source IP address
//!   (overridable per address with [`TransactionLayer::set_source_limit`], e.g. for a
//!   trunk). A request over a limit is refused with [`Error::Overloaded`] or
//!   [`Error::SourceOverloaded`], creates nothing, and the caller may answer 503.
//! - Memory: a transaction keeps only what its state may still send or answer from
//!   (the request until the final response, the last response where a retransmitted
//!   request or timer G needs it, never a 2xx to INVITE), boxed, so the ~4 transactions
//!   a finished call leaves for 32 s cost little (`tests/retained_memory.rs` counts it).
//! - Responses of a server transaction go back to the [`Peer`] the request came from
//!   (symmetric signalling, which is what phones behind NAT need; RFC 3581 rport). The
//!   transport layer owns connection reuse and the full 18.2.2 rules.
//!
//! # Why our own layer and not a crate
//!
//! rsipstack (restsend/rsipstack, the most used Rust SIP stack) was checked for this
//! layer. Its `Transaction` owns tokio `mpsc` channels to its TU, sends through an `async`
//! `SipConnection` inside the state machine, and its timer wheel reads `Instant::now()`
//! and sleeps with `tokio::time::sleep`; its `Endpoint` spawns the tasks that drive it. The
//! core cannot be stepped by hand on a virtual clock, which is how this project tests every
//! timer path (DESIGN.md: protocol cores are sans-IO), and it would put IO inside the
//! core of a B2BUA that must survive loss and floods deterministically. The crates that
//! advertise a sans-IO core (sipx-sip, a 1.0 release candidate; rsiprtp) bring their own
//! message model instead of rsip, which the rest of this crate is built on, and neither
//! has the track record to trust them with every call. The state machines are small and
//! precisely specified, so we keep them here, driven only by inputs and `now`.
//!
//! # Limits
//!
//! - Merged-request detection (8.2.2.2) and loop detection are the TU's job.
//! - A response's source address is not checked against the request's destination.
//! - `handle_message` trusts that the message passed the `message` module's checks;
//!   anything it still cannot read is refused with an [`Error`] and changes nothing.

mod fields;
#[cfg(test)]
mod tests;

pub use fields::response_for;
#[doc(hidden)]
pub use fields::{
    ack_for_non_2xx, branch as via_branch, call_id, cancel_for, cseq, from as from_header,
    from_tag, other as other_header, retry_request, to as to_header, to_tag, top_via, MAGIC_COOKIE,
};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rsip::{Method, SipMessage, StatusCodeKind};

/// The transport a message travels on; TCP and TLS are reliable, so the RFC's
/// retransmission timers are off and the linger timers are zero for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// UDP: unreliable, the transaction layer retransmits.
    Udp,
    /// TCP: reliable.
    Tcp,
    /// TLS over TCP: reliable.
    Tls,
}

impl TransportKind {
    /// Whether the transport delivers reliably (TCP, TLS).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }
}

/// A remote SIP endpoint: socket address and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// Transport to use (or the message came on).
    pub transport: TransportKind,
}

/// A message the driver must send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The message.
    pub message: SipMessage,
    /// Where to send it.
    pub destination: Peer,
    /// The transaction it belongs to (none for stateless sends), for
    /// [`TransactionLayer::handle_transport_error`].
    pub transaction: Option<TransactionKey>,
}

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
    /// How long a server INVITE transaction waits for the TU's first provisional response
    /// before it sends 100 Trying itself (17.2.1), default 200 ms.
    pub trying_delay: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D on an unreliable transport: at least 32 s (17.1.1.2).
    pub fn timer_d(&self) -> Duration {
        self.t1x64().max(Duration::from_secs(32))
    }
}

/// Configuration of a [`TransactionLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Timer base values.
    pub timers: TimerConfig,
    /// Most transactions (client and server) held at once; further ones are refused with
    /// [`Error::Overloaded`].
    pub max_transactions: usize,
    /// Most server transactions per source IP address; further requests from it are
    /// refused with [`Error::SourceOverloaded`].
    pub max_server_transactions_per_source: usize,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            max_transactions: 200_000,
            max_server_transactions_per_source: 2_000,
        }
    }
}

/// Key of a client transaction (RFC 3261 17.1.3): top Via branch and CSeq method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    branch: String,
    method: Method,
}

impl ClientKey {
    /// The branch of the request's top Via.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The request method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The key of the CANCEL that cancels this (INVITE) transaction: same branch.
    pub fn cancel_key(&self) -> ClientKey {
        ClientKey {
            branch: self.branch.clone(),
            method: Method::Cancel,
        }
    }
}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.branch.hash(state);
        std::mem::discriminant(&self.method).hash(state);
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {}", self.method, self.branch)
    }
}

/// Key of a server transaction (RFC 3261 17.2.3): branch, sent-by of the top Via, and
/// method (an ACK carries the key of its INVITE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

impl ServerKey {
    /// The branch (or, for an RFC 2543 peer, the fields standing in for it).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The sent-by of the request's top Via.
    pub fn sent_by(&self) -> &str {
        &self.sent_by
    }

    /// The request method.
    pub fn method(&self) -> Method {
        self.method
    }

    fn with_method(&self, method: Method) -> ServerKey {
        ServerKey {
            branch: self.branch.clone(),
            sent_by: self.sent_by.clone(),
            method,
        }
    }
}

impl Hash for ServerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.branch.hash(state);
        self.sent_by.hash(state);
        std::mem::discriminant(&self.method).hash(state);
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {} {} {}", self.method, self.branch, self.sent_by)
    }
}

/// Key of any transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// A client transaction.
    Client(ClientKey),
    /// A server transaction.
    Server(ServerKey),
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionKey::Client(k) => k.fmt(f),
            TransactionKey::Server(k) => k.fmt(f),
        }
    }
}

/// States of the RFC 3261 / RFC 6026 transaction machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Client INVITE sent, no response yet.
    Calling,
    /// Client or server non-INVITE, nothing final yet.
    Trying,
    /// A provisional response was received (client) or the request is with the TU (server INVITE).
    Proceeding,
    /// RFC 6026: a 2xx to INVITE was received or sent; waits for its retransmissions (M / L).
    Accepted,
    /// A final response was received or sent; absorbs retransmissions.
    Completed,
    /// Server INVITE: the ACK for a non-2xx response arrived (timer I).
    Confirmed,
    /// Done; the layer forgets the transaction right after this.
    Terminated,
}

/// What the layer tells its transaction user (TU).
#[derive(Debug, Clone)]
pub enum TransactionEvent {
    /// A new request created a server transaction; answer with [`TransactionLayer::respond`].
    Request {
        /// The new server transaction.
        key: ServerKey,
        /// The request.
        request: rsip::Request,
        /// Where it came from (responses go back there).
        source: Peer,
    },
    /// An ACK for a 2xx response (it matched no transaction, or an Accepted one).
    Ack {
        /// The ACK.
        request: rsip::Request,
        /// Where it came from.
        source: Peer,
    },
    /// A CANCEL matched this INVITE server transaction before its final response; the
    /// layer answered the CANCEL with 200; the TU should answer the INVITE with 487.
    Cancelled {
        /// The INVITE server transaction.
        invite: ServerKey,
        /// The CANCEL request.
        cancel: rsip::Request,
    },
    /// A response for a client transaction (retransmitted 2xx included, in Accepted).
    Response {
        /// The client transaction.
        key: ClientKey,
        /// The response.
        response: rsip::Response,
    },
    /// A 2xx to an INVITE that matches no transaction (a late fork, or after timer M).
    StrayResponse {
        /// The response.
        response: rsip::Response,
        /// Where it came from.
        source: Peer,
    },
    /// The transaction timed out (B, F, H, the CANCEL guard, or the non-INVITE TU guard).
    Timeout {
        /// The transaction.
        key: TransactionKey,
    },
    /// The driver reported a transport error for this transaction.
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transaction is gone; its key may be reused.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
}

/// Errors of the transaction layer. None of them changes any state.
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
    /// The CSeq method differs from the request method.
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMismatch {
        /// Request method.
        method: Method,
        /// CSeq method.
        cseq: Method,
    },
    /// The total transaction limit is reached.
    #[error("transaction limit reached ({limit} transactions)")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The per-source server transaction limit is reached for this address.
    #[error("{peer} already has {limit} server transactions")]
    SourceOverloaded {
        /// The source address.
        peer: IpAddr,
        /// The limit.
        limit: usize,
    },
    /// No transaction has this key.
    #[error("no transaction {key}")]
    UnknownTransaction {
        /// The key.
        key: TransactionKey,
    },
    /// A transaction with this key exists already (a reused branch).
    #[error("transaction {key} exists already")]
    DuplicateTransaction {
        /// The key.
        key: TransactionKey,
    },
    /// The transaction's state does not allow the action.
    #[error("transaction {key} in state {state:?} cannot {action}")]
    InvalidState {
        /// The key.
        key: TransactionKey,
        /// Its state.
        state: TransactionState,
        /// What was attempted.
        action: &'static str,
    },
    /// ACK is never sent in a client transaction; use [`TransactionLayer::send_stateless`].
    #[error("ACK is not sent in a transaction")]
    AckNotTransactional,
    /// Only INVITE transactions can be cancelled.
    #[error("{key} is not an INVITE transaction")]
    NotInvite {
        /// The key.
        key: TransactionKey,
    },
}

/// Result with the layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerSlot {
    /// A, E, G.
    Retransmit = 0,
    /// B, F, H, the CANCEL guard, the non-INVITE TU guard.
    Timeout = 1,
    /// D, K, I, J, L, M.
    Linger = 2,
    /// The 200 ms 100-Trying delay.
    Trying = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

/// One transaction. What it holds is only what its state still needs (see
/// [`Transaction::request`] and [`Transaction::last_response`]): a transaction that
/// has its final response lingers 32 s for timers D, J, L, M, so at 1,000 calls/s
/// some 100,000 of them are alive, and whole INVITEs with SDP in each would cost
/// megabytes (BENCHMARKS.md, "SIP signalling").
#[derive(Debug)]
struct Transaction {
    key: TransactionKey,
    kind: Kind,
    state: TransactionState,
    peer: Peer,
    /// The request, while it may still be sent again or answered from: a client
    /// transaction's until its final response (timers A and E, the CANCEL, the ACK for
    /// a non-2xx), an INVITE server transaction's until its final response (the 100
    /// Trying; only its [`fields::response_skeleton`]). A non-INVITE server transaction
    /// never keeps it.
    request: Option<Box<rsip::Request>>,
    /// The response a retransmitted request gets again (and timer G resends): an
    /// INVITE server transaction's last provisional or non-2xx final, a non-INVITE
    /// server transaction's last response. Not kept in Accepted, where the TU
    /// retransmits its 2xx itself and INVITE retransmissions are absorbed.
    last_response: Option<Box<rsip::Response>>,
    /// The ACK for a non-2xx final response (client INVITE, Completed).
    ack: Option<Box<rsip::Request>>,
    interval: Duration,
    timers: [Option<Instant>; 4],
    source_ip: Option<IpAddr>,
    pending_cancel: bool,
}

impl Transaction {
    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }
}

/// All transactions of one SIP endpoint. See the [module docs](self).
#[derive(Debug)]
pub struct TransactionLayer {
    config: TransactionConfig,
    next_id: u64,
    /// Boxed: a slot of the map is then a pointer, not a whole transaction (the map
    /// keeps its capacity at the peak number of transactions).
    transactions: HashMap<u64, Box<Transaction>>,
    clients: HashMap<ClientKey, u64>,
    servers: HashMap<ServerKey, u64>,
    timers: BTreeSet<(Instant, u64, TimerSlot)>,
    per_source: HashMap<IpAddr, usize>,
    source_limits: HashMap<IpAddr, usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TransactionEvent>,
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new(config: TransactionConfig) -> Self {
        Self {
            config,
            next_id: 0,
            transactions: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            timers: BTreeSet::new(),
            per_source: HashMap::new(),
            source_limits: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TransactionConfig {
        &self.config
    }

    /// Overrides the per-source server transaction limit for one address (a trunk or
    /// proxy that carries many calls); `None` restores the default.
    pub fn set_source_limit(&mut self, addr: IpAddr, limit: Option<usize>) {
        match limit {
            Some(l) => self.source_limits.insert(addr, l),
            None => self.source_limits.remove(&addr),
        };
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// The state of a transaction, `None` once it is gone.
    pub fn state(&self, key: &TransactionKey) -> Option<TransactionState> {
        self.id_of(key)
            .and_then(|id| self.transactions.get(&id))
            .map(|t| t.state)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id, slot)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id, slot));
            if let Some(tx) = self.transactions.get_mut(&id) {
                tx.timers[slot as usize] = None;
                self.fire(id, slot, at);
            }
        }
    }

    /// Sends `request` in a new client transaction to `destination`. The request must
    /// carry a top Via whose branch starts with `z9hG4bK` and a CSeq matching its method.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: rsip::Request,
        destination: Peer,
    ) -> Result<ClientKey> {
        if request.method == Method::Ack {
            return Err(Error::AckNotTransactional);
        }
        let (branch, _) = fields::top_via_key(&request.headers)?;
        let branch = branch
            .filter(|b| b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len())
            .ok_or_else(|| Error::InvalidHeader {
                header: "Via",
                reason: "branch missing or without the z9hG4bK cookie".into(),
            })?
            .to_owned();
        let cseq = fields::cseq(&request.headers)?;
        if cseq.method != request.method {
            return Err(Error::CSeqMismatch {
                method: request.method,
                cseq: cseq.method,
            });
        }
        fields::call_id(&request.headers)?;
        let key = ClientKey {
            branch,
            method: request.method,
        };
        if self.clients.contains_key(&key) {
            return Err(Error::DuplicateTransaction {
                key: TransactionKey::Client(key),
            });
        }
        self.check_total()?;
        let kind = if request.method == Method::Invite {
            Kind::InviteClient
        } else {
            Kind::NonInviteClient
        };
        self.start_client(now, key.clone(), kind, request, destination);
        Ok(key)
    }

    fn start_client(
        &mut self,
        now: Instant,
        key: ClientKey,
        kind: Kind,
        request: rsip::Request,
        destination: Peer,
    ) {
        let id = self.alloc_id();
        let t1 = self.config.timers.t1;
        let tx = Transaction {
            key: TransactionKey::Client(key.clone()),
            kind,
            state: if kind == Kind::InviteClient {
                TransactionState::Calling
            } else {
                TransactionState::Trying
            },
            peer: destination,
            request: Some(Box::new(request.clone())),
            last_response: None,
            ack: None,
            interval: t1,
            timers: [None; 4],
            source_ip: None,
            pending_cancel: false,
        };
        let reliable = tx.reliable();
        self.transmits.push_back(Transmit {
            message: request.into(),
            destination,
            transaction: Some(tx.key.clone()),
        });
        self.transactions.insert(id, Box::new(tx));
        self.clients.insert(key, id);
        if !reliable {
            self.arm(id, TimerSlot::Retransmit, now + t1);
        }
        let t64 = self.config.timers.t1x64();
        self.arm(id, TimerSlot::Timeout, now + t64);
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, a stateless response).
    pub fn send_stateless(&mut self, message: SipMessage, destination: Peer) {
        self.transmits.push_back(Transmit {
            message,
            destination,
            transaction: None,
        });
    }

    /// Sends `response` in server transaction `key`.
    ///
    /// Provisional responses keep the transaction proceeding; a 2xx to INVITE moves it
    /// to Accepted (where further 2xx, the TU's retransmissions, are sent as they come); any
    /// other final response completes it.
    pub fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        response: rsip::Response,
    ) -> Result<()> {
        let tkey = TransactionKey::Server(key.clone());
        let id = *self
            .servers
            .get(key)
            .ok_or_else(|| Error::UnknownTransaction { key: tkey.clone() })?;
        let timers = self.config.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return Err(Error::UnknownTransaction { key: tkey });
        };
        let kind = response.status_code.kind();
        let invalid = |state| Error::InvalidState {
            key: tkey.clone(),
            state,
            action: "send this response",
        };
        let provisional = kind == StatusCodeKind::Provisional;
        let success = kind == StatusCodeKind::Successful;
        let reliable = tx.reliable();
        let peer = tx.peer;
        // What happens next, decided before touching the transaction.
        enum Next {
            Stay,
            Accepted,
            Completed,
        }
        let next = match (tx.kind, tx.state) {
            (Kind::InviteServer, TransactionState::Proceeding) if provisional => Next::Stay,
            (Kind::InviteServer, TransactionState::Proceeding) if success => Next::Accepted,
            (Kind::InviteServer, TransactionState::Proceeding) => Next::Completed,
            (Kind::InviteServer, TransactionState::Accepted) if success => Next::Stay,
            (Kind::NonInviteServer, TransactionState::Trying | TransactionState::Proceeding)
                if provisional =>
            {
                Next::Stay
            }
            (Kind::NonInviteServer, TransactionState::Trying | TransactionState::Proceeding) => {
                Next::Completed
            }
            (_, state) => return Err(invalid(state)),
        };
        // A 2xx to INVITE is not kept: nothing resends it from here (the TU
        // retransmits it until the ACK), and it would linger with its SDP for timer L.
        tx.last_response = if tx.kind == Kind::InviteServer && success {
            None
        } else {
            Some(Box::new(response.clone()))
        };
        if !provisional {
            tx.request = None;
        }
        if provisional && tx.kind == Kind::NonInviteServer {
            tx.state = TransactionState::Proceeding;
        }
        self.transmits.push_back(Transmit {
            message: response.into(),
            destination: peer,
            transaction: Some(tkey.clone()),
        });
        self.disarm(id, TimerSlot::Trying);
        match next {
            Next::Stay => {}
            Next::Accepted => {
                self.set_state(id, TransactionState::Accepted);
                self.arm(id, TimerSlot::Linger, now + timers.t1x64());
            }
            Next::Completed if tx_kind(self, id) == Some(Kind::InviteServer) => {
                self.set_state(id, TransactionState::Completed);
                if !reliable {
                    self.arm(id, TimerSlot::Retransmit, now + timers.t1);
                }
                self.arm(id, TimerSlot::Timeout, now + timers.t1x64());
            }
            Next::Completed => {
                self.set_state(id, TransactionState::Completed);
                self.disarm(id, TimerSlot::Timeout);
                if reliable {
                    self.terminate(id);
                } else {
                    self.arm(id, TimerSlot::Linger, now + timers.t1x64());
                }
            }
        }
        Ok(())
    }

    /// Cancels the INVITE client transaction `invite` (RFC 3261 9.1). The CANCEL is sent at
    /// once if a provisional response arrived, otherwise when the first one arrives.
    /// Returns the key of the CANCEL's client transaction
    /// ([`ClientKey::cancel_key`]). Cancelling twice is harmless.
    pub fn cancel(&mut self, now: Instant, invite: &ClientKey) -> Result<ClientKey> {
        let tkey = TransactionKey::Client(invite.clone());
        let id = *self
            .clients
            .get(invite)
            .ok_or_else(|| Error::UnknownTransaction { key: tkey.clone() })?;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return Err(Error::UnknownTransaction { key: tkey });
        };
        if tx.kind != Kind::InviteClient {
            return Err(Error::NotInvite { key: tkey });
        }
        let cancel_key = invite.cancel_key();
        match tx.state {
            TransactionState::Calling => {
                tx.pending_cancel = true;
                Ok(cancel_key)
            }
            TransactionState::Proceeding => {
                if self.clients.contains_key(&cancel_key) {
                    return Ok(cancel_key);
                }
                self.send_cancel(now, id)?;
                Ok(cancel_key)
            }
            state => Err(Error::InvalidState {
                key: tkey,
                state,
                action: "be cancelled after its final response",
            }),
        }
    }

    fn send_cancel(&mut self, now: Instant, invite_id: u64) -> Result<()> {
        let Some(tx) = self.transactions.get_mut(&invite_id) else {
            return Ok(());
        };
        tx.pending_cancel = false;
        let Some(request) = &tx.request else {
            return Ok(()); // final response received: nothing to cancel
        };
        let cancel = fields::cancel_for(request)?;
        let peer = tx.peer;
        let TransactionKey::Client(invite_key) = &tx.key else {
            return Ok(());
        };
        let key = invite_key.cancel_key();
        if self.clients.contains_key(&key) {
            return Ok(());
        }
        self.check_total()?;
        self.start_client(now, key, Kind::NonInviteClient, cancel, peer);
        // 9.1: without a final response 64*T1 after the CANCEL, give the INVITE up.
        let t64 = self.config.timers.t1x64();
        self.arm(invite_id, TimerSlot::Timeout, now + t64);
        Ok(())
    }

    /// The driver could not send a message of transaction `key` (connection refused, ICMP
    /// unreachable): the transaction ends with [`TransactionEvent::TransportError`].
    /// Unknown keys are ignored.
    pub fn handle_transport_error(&mut self, key: &TransactionKey) {
        if let Some(id) = self.id_of(key) {
            self.events
                .push_back(TransactionEvent::TransportError { key: key.clone() });
            self.terminate(id);
        }
    }

    /// Feeds a received message. Errors mean the message was refused and nothing changed;
    /// for a request, [`Error::Overloaded`] and [`Error::SourceOverloaded`] let the caller
    /// answer 503, other errors 400 (or silence).
    pub fn handle_message(
        &mut self,
        now: Instant,
        message: SipMessage,
        source: Peer,
    ) -> Result<()> {
        match message {
            SipMessage::Request(r) => self.handle_request(now, r, source),
            SipMessage::Response(r) => self.handle_response(now, r, source),
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        response: rsip::Response,
        source: Peer,
    ) -> Result<()> {
        let (branch, _) = fields::top_via_key(&response.headers)?;
        let cseq = fields::cseq(&response.headers)?;
        let Some(branch) = branch else {
            return Ok(()); // not ours: stray, dropped (18.1.2)
        };
        let key = ClientKey {
            branch: branch.to_owned(),
            method: cseq.method,
        };
        let kind = response.status_code.kind();
        let Some(&id) = self.clients.get(&key) else {
            if kind == StatusCodeKind::Successful && cseq.method == Method::Invite {
                self.events
                    .push_back(TransactionEvent::StrayResponse { response, source });
            }
            return Ok(());
        };
        let timers = self.config.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return Ok(());
        };
        let reliable = tx.reliable();
        let provisional = kind == StatusCodeKind::Provisional;
        let success = kind == StatusCodeKind::Successful;
        match (tx.kind, tx.state) {
            (Kind::InviteClient, TransactionState::Calling | TransactionState::Proceeding) => {
                if provisional {
                    let was_calling = tx.state == TransactionState::Calling;
                    let pending_cancel = tx.pending_cancel;
                    tx.state = TransactionState::Proceeding;
                    self.emit_response(key, response);
                    if was_calling {
                        self.disarm(id, TimerSlot::Retransmit);
                        self.disarm(id, TimerSlot::Timeout);
                    }
                    if pending_cancel {
                        // A refusal (limit) leaves the CANCEL queued for the next 1xx.
                        let _ = self.send_cancel(now, id);
                    }
                } else if success {
                    tx.state = TransactionState::Accepted;
                    tx.pending_cancel = false;
                    tx.request = None;
                    self.emit_response(key, response);
                    self.disarm(id, TimerSlot::Retransmit);
                    self.disarm(id, TimerSlot::Timeout);
                    self.arm(id, TimerSlot::Linger, now + timers.t1x64());
                } else {
                    let Some(request) = &tx.request else {
                        return Ok(());
                    };
                    let ack = fields::ack_for_non_2xx(request, &response)?;
                    tx.state = TransactionState::Completed;
                    tx.pending_cancel = false;
                    tx.request = None;
                    tx.ack = Some(Box::new(ack.clone()));
                    let peer = tx.peer;
                    self.transmits.push_back(Transmit {
                        message: ack.into(),
                        destination: peer,
                        transaction: Some(TransactionKey::Client(key.clone())),
                    });
                    self.emit_response(key, response);
                    self.disarm(id, TimerSlot::Retransmit);
                    self.disarm(id, TimerSlot::Timeout);
                    if reliable {
                        self.terminate(id);
                    } else {
                        self.arm(id, TimerSlot::Linger, now + timers.timer_d());
                    }
                }
            }
            (Kind::InviteClient, TransactionState::Accepted) if success => {
                self.emit_response(key, response);
            }
            (Kind::InviteClient, TransactionState::Completed) if !provisional && !success => {
                if let Some(ack) = tx.ack.clone() {
                    let peer = tx.peer;
                    self.transmits.push_back(Transmit {
                        message: (*ack).into(),
                        destination: peer,
                        transaction: Some(TransactionKey::Client(key)),
                    });
                }
            }
            (Kind::NonInviteClient, TransactionState::Trying | TransactionState::Proceeding) => {
                if provisional {
                    tx.state = TransactionState::Proceeding;
                    self.emit_response(key, response);
                } else {
                    tx.state = TransactionState::Completed;
                    tx.request = None;
                    self.emit_response(key, response);
                    self.disarm(id, TimerSlot::Retransmit);
                    self.disarm(id, TimerSlot::Timeout);
                    if reliable {
                        self.terminate(id);
                    } else {
                        self.arm(id, TimerSlot::Linger, now + timers.t4);
                    }
                }
            }
            _ => {} // Completed non-INVITE, or a server-side kind: absorbed.
        }
        Ok(())
    }

    fn emit_response(&mut self, key: ClientKey, response: rsip::Response) {
        self.events
            .push_back(TransactionEvent::Response { key, response });
    }

    fn server_key(request: &rsip::Request) -> Result<ServerKey> {
        let (branch, sent_by) = fields::top_via_key(&request.headers)?;
        let cseq = fields::cseq(&request.headers)?;
        let method_ok = cseq.method == request.method;
        if !method_ok {
            return Err(Error::CSeqMismatch {
                method: request.method,
                cseq: cseq.method,
            });
        }
        let call_id = fields::call_id(&request.headers)?;
        let branch = match branch {
            Some(b) if b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len() => b.to_owned(),
            _ => {
                let from_tag = fields::from_tag(&request.headers)?.unwrap_or_default();
                format!(
                    "rfc2543;{};{};{};{}",
                    call_id, from_tag, cseq.seq, request.uri
                )
            }
        };
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method
        };
        Ok(ServerKey {
            branch,
            sent_by,
            method,
        })
    }

    fn handle_request(&mut self, now: Instant, request: rsip::Request, source: Peer) -> Result<()> {
        let key = Self::server_key(&request)?;
        if request.method == Method::Ack {
            return self.handle_ack(now, key, request, source);
        }
        if let Some(&id) = self.servers.get(&key) {
            self.retransmitted_request(id);
            return Ok(());
        }
        self.check_total()?;
        let limit = self
            .source_limits
            .get(&source.addr.ip())
            .copied()
            .unwrap_or(self.config.max_server_transactions_per_source);
        let count = self.per_source.get(&source.addr.ip()).copied().unwrap_or(0);
        if count >= limit {
            return Err(Error::SourceOverloaded {
                peer: source.addr.ip(),
                limit,
            });
        }
        let timers = self.config.timers;
        let is_invite = request.method == Method::Invite;
        let is_cancel = request.method == Method::Cancel;
        let id = self.alloc_id();
        let tx = Transaction {
            key: TransactionKey::Server(key.clone()),
            kind: if is_invite {
                Kind::InviteServer
            } else {
                Kind::NonInviteServer
            },
            state: if is_invite {
                TransactionState::Proceeding
            } else {
                TransactionState::Trying
            },
            peer: source,
            // Only an INVITE server transaction answers from its request (100 Trying),
            // and only from the headers a response copies.
            request: is_invite.then(|| Box::new(fields::response_skeleton(&request))),
            last_response: None,
            ack: None,
            interval: timers.t1,
            timers: [None; 4],
            source_ip: Some(source.addr.ip()),
            pending_cancel: false,
        };
        self.transactions.insert(id, Box::new(tx));
        self.servers.insert(key.clone(), id);
        *self.per_source.entry(source.addr.ip()).or_insert(0) += 1;
        if is_invite {
            self.arm(id, TimerSlot::Trying, now + timers.trying_delay);
        } else {
            self.arm(id, TimerSlot::Timeout, now + timers.t1x64());
        }
        if is_cancel {
            let invite_key = key.with_method(Method::Invite);
            let invite = self
                .servers
                .get(&invite_key)
                .and_then(|i| self.transactions.get(i))
                .map(|t| t.state);
            let status = if invite.is_some() { 200u16 } else { 481 };
            let response = fields::response_for(&request, status.into(), None);
            // The CANCEL transaction was just created in Trying: respond cannot fail.
            let _ = self.respond(now, &key, response);
            if invite == Some(TransactionState::Proceeding) {
                self.events.push_back(TransactionEvent::Cancelled {
                    invite: invite_key,
                    cancel: request,
                });
            }
        } else {
            self.events.push_back(TransactionEvent::Request {
                key,
                request,
                source,
            });
        }
        Ok(())
    }

    fn retransmitted_request(&mut self, id: u64) {
        let Some(tx) = self.transactions.get(&id) else {
            return;
        };
        let resend = match (tx.kind, tx.state) {
            (Kind::InviteServer, TransactionState::Proceeding) => {
                // 17.2.1: the last provisional response, or a 100 Trying now.
                tx.last_response.clone().or_else(|| {
                    tx.request
                        .as_ref()
                        .map(|r| Box::new(fields::response_for(r, 100u16.into(), None)))
                })
            }
            (Kind::InviteServer, TransactionState::Completed) => tx.last_response.clone(),
            (Kind::NonInviteServer, TransactionState::Proceeding | TransactionState::Completed) => {
                tx.last_response.clone()
            }
            _ => None,
        };
        if let Some(response) = resend {
            let peer = tx.peer;
            let key = tx.key.clone();
            if tx.kind == Kind::InviteServer && tx.last_response.is_none() {
                self.disarm(id, TimerSlot::Trying);
                if let Some(tx) = self.transactions.get_mut(&id) {
                    tx.last_response = Some(response.clone());
                }
            }
            self.transmits.push_back(Transmit {
                message: (*response).into(),
                destination: peer,
                transaction: Some(key),
            });
        }
    }

    fn handle_ack(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        source: Peer,
    ) -> Result<()> {
        let Some(&id) = self.servers.get(&key) else {
            self.events
                .push_back(TransactionEvent::Ack { request, source });
            return Ok(());
        };
        let timers = self.config.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return Ok(());
        };
        match tx.state {
            TransactionState::Completed => {
                let reliable = tx.reliable();
                tx.state = TransactionState::Confirmed;
                self.disarm(id, TimerSlot::Retransmit);
                self.disarm(id, TimerSlot::Timeout);
                if reliable {
                    self.terminate(id);
                } else {
                    self.arm(id, TimerSlot::Linger, now + timers.t4);
                }
            }
            TransactionState::Accepted => {
                self.events
                    .push_back(TransactionEvent::Ack { request, source });
            }
            _ => {} // Confirmed: absorbed; Proceeding: an ACK before any final, dropped.
        }
        Ok(())
    }

    fn fire(&mut self, id: u64, slot: TimerSlot, at: Instant) {
        let timers = self.config.timers;
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        match (tx.kind, slot, tx.state) {
            // Timer A.
            (Kind::InviteClient, TimerSlot::Retransmit, TransactionState::Calling) => {
                tx.interval = tx.interval.saturating_mul(2);
                let next = at + tx.interval;
                self.retransmit_request(id);
                self.arm(id, TimerSlot::Retransmit, next);
            }
            // Timer E.
            (
                Kind::NonInviteClient,
                TimerSlot::Retransmit,
                TransactionState::Trying | TransactionState::Proceeding,
            ) => {
                tx.interval = if tx.state == TransactionState::Trying {
                    tx.interval.saturating_mul(2).min(timers.t2)
                } else {
                    timers.t2
                };
                let next = at + tx.interval;
                self.retransmit_request(id);
                self.arm(id, TimerSlot::Retransmit, next);
            }
            // Timer G.
            (Kind::InviteServer, TimerSlot::Retransmit, TransactionState::Completed) => {
                tx.interval = tx.interval.saturating_mul(2).min(timers.t2);
                let next = at + tx.interval;
                if let Some(r) = tx.last_response.clone() {
                    let peer = tx.peer;
                    let key = tx.key.clone();
                    self.transmits.push_back(Transmit {
                        message: (*r).into(),
                        destination: peer,
                        transaction: Some(key),
                    });
                }
                self.arm(id, TimerSlot::Retransmit, next);
            }
            // 100 Trying after 200 ms without a TU response.
            (Kind::InviteServer, TimerSlot::Trying, TransactionState::Proceeding)
                if tx.last_response.is_none() && tx.request.is_some() =>
            {
                let Some(request) = &tx.request else { return };
                let trying = fields::response_for(request, 100u16.into(), None);
                tx.last_response = Some(Box::new(trying.clone()));
                let peer = tx.peer;
                let key = tx.key.clone();
                self.transmits.push_back(Transmit {
                    message: trying.into(),
                    destination: peer,
                    transaction: Some(key),
                });
            }
            // B, F, H, the CANCEL guard and the non-INVITE TU guard.
            (_, TimerSlot::Timeout, _) => {
                let key = tx.key.clone();
                self.events.push_back(TransactionEvent::Timeout { key });
                self.terminate(id);
            }
            // D, K, I, J, L, M.
            (_, TimerSlot::Linger, _) => self.terminate(id),
            _ => {}
        }
    }

    fn retransmit_request(&mut self, id: u64) {
        if let Some(tx) = self.transactions.get(&id) {
            if let Some(request) = &tx.request {
                self.transmits.push_back(Transmit {
                    message: (**request).clone().into(),
                    destination: tx.peer,
                    transaction: Some(tx.key.clone()),
                });
            }
        }
    }

    fn check_total(&self) -> Result<()> {
        if self.transactions.len() >= self.config.max_transactions {
            return Err(Error::Overloaded {
                limit: self.config.max_transactions,
            });
        }
        Ok(())
    }

    fn alloc_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn id_of(&self, key: &TransactionKey) -> Option<u64> {
        match key {
            TransactionKey::Client(k) => self.clients.get(k).copied(),
            TransactionKey::Server(k) => self.servers.get(k).copied(),
        }
    }

    fn set_state(&mut self, id: u64, state: TransactionState) {
        if let Some(tx) = self.transactions.get_mut(&id) {
            tx.state = state;
        }
    }

    fn arm(&mut self, id: u64, slot: TimerSlot, at: Instant) {
        let Some(tx) = self.transactions.get_mut(&id) else {
            return;
        };
        if let Some(old) = tx.timers[slot as usize].replace(at) {
            self.timers.remove(&(old, id, slot));
        }
        self.timers.insert((at, id, slot));
    }

    fn disarm(&mut self, id: u64, slot: TimerSlot) {
        if let Some(tx) = self.transactions.get_mut(&id) {
            if let Some(old) = tx.timers[slot as usize].take() {
                self.timers.remove(&(old, id, slot));
            }
        }
    }

    fn terminate(&mut self, id: u64) {
        let Some(mut tx) = self.transactions.remove(&id) else {
            return;
        };
        tx.state = TransactionState::Terminated;
        for (slot, at) in [
            TimerSlot::Retransmit,
            TimerSlot::Timeout,
            TimerSlot::Linger,
            TimerSlot::Trying,
        ]
        .into_iter()
        .zip(tx.timers)
        {
            if let Some(at) = at {
                self.timers.remove(&(at, id, slot));
            }
        }
        match &tx.key {
            TransactionKey::Client(k) => {
                self.clients.remove(k);
            }
            TransactionKey::Server(k) => {
                self.servers.remove(k);
            }
        }
        if let Some(ip) = tx.source_ip {
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&ip);
                }
            }
        }
        self.events
            .push_back(TransactionEvent::Terminated { key: tx.key });
    }
}

fn tx_kind(layer: &TransactionLayer, id: u64) -> Option<Kind> {
    layer.transactions.get(&id).map(|t| t.kind)
}
