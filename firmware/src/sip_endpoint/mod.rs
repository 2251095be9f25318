//! The SIP endpoint task: the box's registrar, trunk client and the SIP side of every
//! call leg (issue 3), between the `branchline-sip` crate's cores and call control.
//!
//! ```text
//!  UDP/TCP/TLS ─▶ transport ─▶ guard (bans) ─▶ message::parse ─▶ guard (scanners)
//!                                                               │
//!        ┌────────────── TransactionLayer ◀─────────────────────┘
//!        ▼
//!  DialogLayer / Registrar / TrunkRegistration / legs ──SipInput──▶ call control
//!        ▲                                        │
//!        └──────── SipCommand (SipDial, SipRinging, SipAnswer, SipHangup, MWI)
//!                                                 └──open/start/close_leg──▶ media engine
//! ```
//!
//! # Modules
//!
//! - this module: [`SipEndpoint`] (construction, the task loop, REGISTER, OPTIONS,
//!   MESSAGE, MWI, malformed input, the trunk registration and its DNS) and the
//!   public types ([`SipCommand`], [`SipAccount`], [`EndpointSettings`]).
//! - `legs`: the B2BUA legs: incoming INVITEs (digest for phones, trunk by source
//!   address, SDP offer, toll check), outgoing INVITEs (forking to every binding of an
//!   extension, the trunk with caller ID, P-Asserted-Identity and digest), early
//!   media (with a reliable 183 and PRACK for late-offer callers), CANCEL, BYE,
//!   re-INVITE hold, and which legs the media engine watches for media inactivity
//!   (answered ones; the hold timeout while the far end holds), synced after every
//!   event.
//! - `mwi`: `message-summary` subscriptions and their NOTIFYs.
//! - [`probe`]: one-off OPTIONS probes for the tools page ([`crate::tools`]), sent
//!   through the endpoint's transaction layer (on the receiver given to
//!   [`SipEndpoint::start`]).
//! - `refer`: transfers: REFER (RFC 3515) with its implicit subscription and
//!   sipfrag NOTIFYs, `Replaces` (RFC 3891) in a Refer-To or on an INVITE.
//! - [`sdp`]: SDP offer/answer for G.711 audio (our own subset; see its doc).
//! - `session`: RFC 4028 session timers on answered legs (negotiation as UAS with
//!   `422`, the proposal on our INVITEs and its one retry after a `422`, refreshes by
//!   UPDATE or re-INVITE and their one retry after a `422`, expiry).
//! - `wire`: helpers (kind conversions, header readers, raw 400/501 responses).
//! - [`status`]: the snapshot of the trunk registration and the phones' registrations
//!   the endpoint publishes for the web page (on the channel given to
//!   [`SipEndpoint::start`]).
//!
//! # Behaviour
//!
//! - Every message passes, in order: the transport's size and rate limits; a ban check
//!   on the source address *before parsing*; [`branchline_sip::message::parse`]
//!   (malformed: a stateless `400` (`501` for an unknown method, `505`, `513`, `416`)
//!   when the raw bytes still hold Via, From, To, Call-ID and CSeq, silence
//!   otherwise; counted in [`EndpointStats`]); the guard's scanner check; the
//!   transaction layer (per-source transaction limit: `503`).
//! - Timers of every core (transactions, dialogs, registrar expiries, guard bans, the
//!   trunk registration, the legs' session timers) are merged into one tokio sleep.
//! - REGISTER goes to the registrar (accounts from `[[sip_accounts]]`); every failed
//!   digest check is reported to the guard, which bans the source after
//!   `[sip.guard] auth_failures_before_ban` failures (then its packets are dropped).
//!   OPTIONS outside a dialog is answered `200` (keepalive). MESSAGE from an
//!   authenticated phone is relayed to every binding of the target (`202` on the
//!   first 2xx, else the lowest failure). Message waiting (`mwi`): a phone may
//!   SUBSCRIBE to its mailbox's `message-summary` (RFC 3842; other events `489`);
//!   [`SipCommand::Mwi`] (call control's `Output::MessageWaiting`, whenever a
//!   mailbox's counts change) NOTIFYs its subscriptions, or, for an extension without
//!   one, sends an unsolicited NOTIFY to every binding; a phone that registers without
//!   a subscription gets the last counts of its extension's mailbox at once.
//! - The trunk (`[sip.trunk]`, `register = true`) registers with
//!   [`branchline_sip::trunk::TrunkRegistration`], with an OPTIONS keepalive every
//!   `keepalive_s` (default 30 s) to the registered server so that a registrar that
//!   stopped or restarted is noticed within seconds and registered with again (with
//!   backoff) as soon as it answers; its reachability goes to call
//!   control as a [`crate::call::TrunkStatus`] on the channel given to
//!   [`SipEndpoint::start`] (the daemon prefers it over the WAN monitor's probe, which
//!   has no input for it). DNS (`dns`, RFC 3263): a server host name without a port
//!   is looked up as `_sip._udp` / `_sip._tcp` / `_sips._tcp` SRV through
//!   `[sip.trunk] nameservers` (else `/etc/resolv.conf`), tried by priority and
//!   weight, then A/AAAA; without SRV records, the host's A/AAAA with the default port.
//! - Calls: see `legs`. Transfers: a phone's REFER inside an answered call is
//!   answered `202` with sipfrag NOTIFYs (`100 Trying`, then the outcome), blind or
//!   attended (`Replaces`), with the referrer's toll rules; an INVITE with `Replaces`
//!   for a dialog of the box takes that leg's place. See `refer`.
//!
//! # Limits
//!
//! - Late offer (INVITE or re-INVITE without SDP) is taken: our offer goes in the
//!   200 and the answer is read from the ACK; with early media, a caller that offered
//!   100rel gets our offer in a reliable 183 and answers it in the PRACK (RFC 3262),
//!   while one without 100rel still gets a plain `180` (an offer in an unreliable 183
//!   could not be answered). `Require: 100rel` makes every 1xx reliable. The box's own
//!   INVITEs do not offer 100rel (a far end that sends a reliable 1xx anyway is
//!   PRACKed by the dialog layer); an offer in a PRACK is not taken, and UPDATE (RFC
//!   3311) does not change early media. Session timers (RFC 4028, `session`): the
//!   box proposes one on every INVITE it sends and takes the far end's; a session
//!   runs one only when the INVITE or its 2xx carries `Session-Expires`.
//! - REFER is taken from local phones only, inside an answered dialog; the REFER
//!   itself is not digest-challenged (the dialog's tags stand for the phone's login
//!   at call set-up). The transferee hears silence, not ringback, while a SIP target
//!   rings.
//! - Trunk calls are accepted from the IP addresses of the configured trunk servers
//!   (numeric hosts, and the addresses DNS gave); a trunk that sends from other
//!   addresses is treated as an unknown phone and challenged.
//! - Toll restriction uses a per-account `international` flag until SIP accounts map
//!   to users with RBAC permissions.
//! - The registrar keeps phone bindings in memory: after a restart phones must
//!   re-register (they do within their registration interval).

mod challenges;
mod dns;
mod legs;
mod mwi;
pub mod probe;
mod refer;
pub mod sdp;
mod session;
pub mod status;
mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use branchline_sip::dialog::{DialogConfig, DialogLayer};
use branchline_sip::digest::DigestClient;
use branchline_sip::guard::toll::{NumberClass, NumberingPlan, TollClasses};
use branchline_sip::guard::{Guard, GuardConfig, GuardEvent, Verdict};
use branchline_sip::message::{self, Limits, ParseError};
use branchline_sip::registrar::mwi::{mwi_notify, MessageSummary};
use branchline_sip::registrar::{
    Account, AuthOutcome, Authentication, Flow as RegFlow, Registrar, RegistrarConfig,
};
use branchline_sip::transaction::{
    self, ClientKey, Peer, ServerKey, TransactionConfig, TransactionEvent, TransactionKey,
    TransactionLayer,
};
use branchline_sip::transport::{
    Inbound, ListenerConfig, Outbound, Transport, TransportConfig, TransportKind as WireKind,
};
use branchline_sip::trunk::did::{DidNormalization, DidRouting};
use branchline_sip::trunk::{DnsAnswer, TrunkConfig, TrunkEvent, TrunkRegistration};
use line_proto::g711::Law;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method, SipMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::call::sip::{EndReason, LegId, SipInput, SipTarget};
use crate::call::TrunkStatus;
use crate::config::SipConfig;
use crate::media_engine::MediaEngine;
use crate::tones::Country;
use crate::tools::sip_trace::{Captured, Direction};

use self::legs::Leg;

/// How long shutdown waits for the trunk's un-REGISTER and the last BYEs.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The `User-Agent` / `Server` the box sends.
pub const USER_AGENT: &str = concat!("Branchline/", env!("CARGO_PKG_VERSION"));

/// A local SIP account (one `[[sip_accounts]]` entry).
#[derive(Clone, PartialEq, Eq)]
pub struct SipAccount {
    /// Extension number (also the digest username).
    pub extension: String,
    /// Display name.
    pub name: String,
    /// Digest password.
    pub password: String,
    /// May dial international and premium numbers.
    pub international: bool,
}

impl std::fmt::Debug for SipAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipAccount")
            .field("extension", &self.extension)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("international", &self.international)
            .finish()
    }
}

/// What the endpoint needs besides `[sip]`.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// `[sip]`.
    pub sip: SipConfig,
    /// `[[sip_accounts]]`.
    pub accounts: Vec<SipAccount>,
    /// The site's country (numbering plan for toll classes and DID normalisation).
    pub country: Country,
    /// The law the box prefers in its offers.
    pub law: Law,
    /// `[telephony] outside_line_prefix` (toll checks apply to numbers after it).
    pub outside_line_prefix: Option<String>,
    /// Seed of tags, branches, Call-IDs, nonces and backoff (random at start-up).
    pub seed: u64,
    /// Where every message received (past the flood guard) and sent is recorded for
    /// the diagnostics pages' live trace; `None`: not traced.
    pub trace: Option<crate::tools::sip_trace::SipTrace>,
}

/// What call control asks of the endpoint (its SIP outputs), plus MWI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipCommand {
    /// Place an outgoing leg ([`crate::call::Output::SipDial`]).
    Dial {
        /// The new leg (allocated by call control).
        leg: LegId,
        /// Where to.
        target: SipTarget,
        /// Calling number.
        caller_number: String,
        /// Calling name ("" for none).
        caller_name: String,
        /// SIP Call-ID to use.
        sip_call_id: String,
    },
    /// Send 180 Ringing on an incoming leg; with `early_media`, 183 Session Progress
    /// with the SDP answer, and start the leg's media.
    Ringing {
        /// The leg.
        leg: LegId,
        /// 183 with SDP and media instead of 180.
        early_media: bool,
    },
    /// Answer an incoming leg (200 with the SDP answer).
    Answer {
        /// The leg.
        leg: LegId,
    },
    /// End a leg (final response, CANCEL or BYE as fits).
    Hangup {
        /// The leg.
        leg: LegId,
        /// Why.
        reason: EndReason,
    },
    /// Report a transfer's progress to the phone that sent the REFER on `leg`
    /// ([`crate::call::Output::SipTransferStatus`]).
    TransferStatus {
        /// The transferor's leg.
        leg: LegId,
        /// The SIP status for the sipfrag NOTIFY.
        status: u16,
    },
    /// Send an RFC 3842 message-summary NOTIFY to every binding of `extension`.
    Mwi {
        /// The mailbox's extension.
        extension: String,
        /// The counts.
        summary: MessageSummary,
    },
}

impl SipCommand {
    /// The command for one of call control's SIP outputs (`None` for the others).
    pub fn from_output(output: crate::call::Output) -> Option<SipCommand> {
        use crate::call::Output;
        Some(match output {
            Output::SipDial {
                leg,
                target,
                caller_number,
                caller_name,
                sip_call_id,
            } => SipCommand::Dial {
                leg,
                target,
                caller_number,
                caller_name,
                sip_call_id,
            },
            Output::SipRinging { leg, early_media } => SipCommand::Ringing { leg, early_media },
            Output::SipAnswer { leg } => SipCommand::Answer { leg },
            Output::SipHangup { leg, reason } => SipCommand::Hangup { leg, reason },
            Output::SipTransferStatus { leg, status } => SipCommand::TransferStatus { leg, status },
            Output::MessageWaiting {
                mailbox,
                new,
                heard,
            } => SipCommand::Mwi {
                extension: mailbox,
                summary: MessageSummary {
                    new: u32::try_from(new).unwrap_or(u32::MAX),
                    old: u32::try_from(heard).unwrap_or(u32::MAX),
                    urgent_new: 0,
                    urgent_old: 0,
                },
            },
            _ => return None,
        })
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A listener could not be bound, or the transport settings are invalid.
    #[error("SIP transport: {0}")]
    Transport(#[from] branchline_sip::transport::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("SIP TLS: {0}")]
    Tls(#[from] branchline_sip::transport::tls::TlsError),
    /// The registrar refused its settings or accounts.
    #[error("SIP registrar: {0}")]
    Registrar(#[from] branchline_sip::registrar::RegistrarError),
    /// The guard refused its settings.
    #[error("SIP guard: {0}")]
    Guard(#[from] branchline_sip::guard::GuardConfigError),
    /// The trunk settings cannot work.
    #[error("SIP trunk: {0}")]
    Trunk(#[from] branchline_sip::trunk::TrunkConfigError),
    /// The DID table cannot be used with the site's numbering.
    #[error("SIP trunk DID table: {0}")]
    Did(#[from] branchline_sip::trunk::did::DidError),
}

/// Counters of what the endpoint refused or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages that did not parse.
    pub malformed: u64,
    /// ... of which were answered with a stateless error response.
    pub malformed_answered: u64,
    /// Messages dropped because their source is banned.
    pub dropped_banned: u64,
    /// Requests dropped as scanners.
    pub dropped_scanner: u64,
    /// Requests refused by the transaction layer (limits, unreadable fields).
    pub refused: u64,
}

/// Handle on the running endpoint.
#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::UnboundedSender<SipCommand>,
    local_addrs: Vec<(WireKind, SocketAddr)>,
}

impl SipHandle {
    /// Passes a command to the endpoint; `false` when it has stopped.
    pub fn send(&self, command: SipCommand) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The bound listeners.
    pub fn local_addrs(&self) -> &[(WireKind, SocketAddr)] {
        &self.local_addrs
    }
}

/// A MESSAGE being relayed to the bindings of its target.
#[derive(Debug)]
struct Relay {
    server: ServerKey,
    request: rsip::Request,
    outstanding: usize,
    lowest_failure: Option<u16>,
    answered: bool,
}

/// The trunk side of the endpoint.
struct TrunkSide {
    registration: Option<TrunkRegistration>,
    /// IP addresses of the trunk's servers (numeric hosts and DNS answers).
    ips: Vec<IpAddr>,
    /// Host names by address, for TLS server names.
    names: HashMap<IpAddr, String>,
    /// Pending DNS queries: id -> name.
    queries: HashMap<u64, String>,
    did: Option<DidRouting>,
    config: crate::config::SipTrunkConfig,
    /// Digest client for INVITEs through the trunk.
    digest: DigestClient,
    reachable: bool,
    /// Answers the registration's DNS queries (SRV, A/AAAA).
    dns: std::sync::Arc<dns::TrunkDns>,
}

/// The endpoint task's state. See the module docs.
pub struct SipEndpoint {
    settings: EndpointSettings,
    transport: Transport,
    limits: Limits,
    tx: TransactionLayer,
    dialogs: DialogLayer,
    registrar: Registrar,
    guard: Guard,
    trunk: Option<TrunkSide>,
    plan: NumberingPlan,
    media: MediaEngine,
    inputs: mpsc::UnboundedSender<SipInput>,
    trunk_status: mpsc::UnboundedSender<TrunkStatus>,
    dns_tx: mpsc::UnboundedSender<(u64, DnsAnswer)>,
    legs: HashMap<LegId, Leg>,
    /// Incoming initial INVITE server transactions.
    by_server: HashMap<ServerKey, LegId>,
    /// Dialogs of legs.
    by_dialog: HashMap<branchline_sip::dialog::DialogId, LegId>,
    /// Outgoing INVITEs by (Call-ID, From tag): leg and fork index. Kept for 64*T1
    /// after the leg ended so a late 2xx is BYEd (the dialog layer forgets the INVITE
    /// by then too), then dropped through `invites_ended`.
    by_invite: HashMap<(String, String), (LegId, usize)>,
    /// The `by_invite` keys of ended legs, with when to drop them, oldest first.
    invites_ended: std::collections::VecDeque<(Instant, (String, String))>,
    relays: HashMap<u64, Relay>,
    relay_by_client: HashMap<ClientKey, u64>,
    next_relay: u64,
    next_in_leg: u64,
    rng: u64,
    stats: EndpointStats,
    /// The first UDP listener (the socket requests leave from).
    udp_local: Option<SocketAddr>,
    /// Where the registrations snapshot goes (the web page's receiver).
    status_tx: watch::Sender<std::sync::Arc<status::SipStatus>>,
    /// A binding or the trunk registration changed since the last snapshot.
    status_dirty: bool,
    /// Version of the last snapshot.
    status_version: u64,
    /// The last message-waiting counts of each mailbox ([`SipCommand::Mwi`]): a phone
    /// that registers gets its extension's at once.
    mwi_state: HashMap<String, MessageSummary>,
    /// `message-summary` subscriptions by (Call-ID, subscriber's tag) (see `mwi`).
    mwi_subscriptions: HashMap<(String, String), mwi::Subscription>,
    /// OPTIONS probes of the tools page waiting for their answer (see `probe`).
    probes: HashMap<ClientKey, probe::PendingProbe>,
    /// When each leg's RFC 4028 session timer is next due, soonest first (see
    /// `session`): one ordered set, so that the endpoint's wake-up does not scan
    /// every leg.
    session_deadlines: std::collections::BTreeSet<(Instant, LegId)>,
}

impl std::fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("legs", &self.legs.len())
            .field("transactions", &self.tx.len())
            .field("dialogs", &self.dialogs.len())
            .field("bindings", &self.registrar.binding_count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The numbering plan of a country, for toll classes.
pub fn numbering_plan(country: Country) -> NumberingPlan {
    use NumberClass::*;
    let plan = match country {
        Country::De => return NumberingPlan::germany(),
        Country::Us => NumberingPlan::new(
            "1",
            "011",
            "1",
            &["911"],
            &[
                ("1800", TollFree),
                ("1888", TollFree),
                ("1900", Premium),
                ("1976", Premium),
            ],
        ),
        Country::Uk => NumberingPlan::new(
            "44",
            "00",
            "0",
            &["999", "112"],
            &[
                ("0800", TollFree),
                ("07", Mobile),
                ("09", Premium),
                ("118", Premium),
            ],
        ),
        Country::Fr => NumberingPlan::new(
            "33",
            "00",
            "0",
            &["112", "15", "17", "18"],
            &[
                ("0800", TollFree),
                ("06", Mobile),
                ("07", Mobile),
                ("089", Premium),
            ],
        ),
        Country::Cn => NumberingPlan::new(
            "86",
            "00",
            "0",
            &["110", "119", "120"],
            &[("400", TollFree), ("800", TollFree), ("1", Mobile)],
        ),
        Country::Jp => NumberingPlan::new(
            "81",
            "010",
            "0",
            &["110", "119", "118"],
            &[
                ("0120", TollFree),
                ("090", Mobile),
                ("080", Mobile),
                ("0990", Premium),
            ],
        ),
    };
    // The tables above are constants that satisfy `new`'s checks.
    plan.unwrap_or_else(|_| NumberingPlan::germany())
}

fn did_normalization(country: Country) -> DidNormalization {
    let plan = crate::numbers::SitePlan::of_country(country);
    DidNormalization {
        country_code: plan.country_code,
        international_prefix: plan.international_prefix,
        national_prefix: plan.national_prefix,
        strip_prefixes: Vec::new(),
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl SipEndpoint {
    /// Binds the `[sip]` listeners, builds the cores and spawns the task. SIP inputs
    /// for call control go to `inputs`, the trunk's reachability to `trunk_status`,
    /// the registrations snapshot ([`status::SipStatus`]) to `status` (at once, then
    /// after every change).
    /// The task ends when `shutdown` is cancelled (after un-REGISTERing the trunk
    /// and ending every leg, at most [`SHUTDOWN_GRACE`]).
    pub async fn start(
        settings: EndpointSettings,
        media: MediaEngine,
        inputs: mpsc::UnboundedSender<SipInput>,
        trunk_status: mpsc::UnboundedSender<TrunkStatus>,
        status: watch::Sender<std::sync::Arc<status::SipStatus>>,
        probes: mpsc::UnboundedReceiver<probe::OptionsProbe>,
        shutdown: CancellationToken,
    ) -> Result<(SipHandle, JoinHandle<()>), EndpointError> {
        let sip = &settings.sip;
        let mut listeners = Vec::new();
        for (kind, addr) in [
            (WireKind::Udp, sip.udp),
            (WireKind::Tcp, sip.tcp),
            (WireKind::Tls, sip.tls),
        ] {
            if let Some(addr) = addr {
                listeners.push(ListenerConfig { kind, addr });
            }
        }
        let mut transport_config = TransportConfig::new(listeners);
        transport_config.limits.message.max_message_len = sip.max_message_bytes;
        if let (Some(_), Some(cert), Some(key)) = (sip.tls, &sip.tls_cert, &sip.tls_key) {
            let certs = branchline_sip::transport::tls::load_certs(cert)?;
            let key = branchline_sip::transport::tls::load_private_key(key)?;
            transport_config.tls_server =
                Some(branchline_sip::transport::tls::server_config(certs, key)?);
        }
        if sip.trunk.as_ref().is_some_and(|t| {
            t.servers
                .iter()
                .any(|s| s.transport == rsip::Transport::Tls)
        }) {
            transport_config.tls_client = Some(branchline_sip::transport::tls::client_config(
                &branchline_sip::transport::tls::TrustRoots::WebPki,
            )?);
            transport_config.client_keepalive = Some(Default::default());
        }
        let (transport, inbound) = Transport::bind(transport_config, shutdown.clone()).await?;
        let local_addrs = transport.local_addrs();
        let udp_local = transport.local_addr(WireKind::Udp);

        let now = Instant::now();
        let mut rng = settings.seed;
        let mut nonce_key = [0u8; 32];
        for chunk in nonce_key.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut rng).to_le_bytes());
        }
        let sent_by = local_addrs
            .first()
            .map(|(_, a)| {
                let host = sip.contact_host.unwrap_or(a.ip());
                SocketAddr::new(host, a.port()).to_string()
            })
            .unwrap_or_else(|| "branchline".to_owned());
        let mut registrar_config = RegistrarConfig::new(sip.domain.clone(), nonce_key, sent_by);
        registrar_config.min_expires = 30;
        registrar_config.digest_algorithms = settings.sip.digest_algorithms.clone();
        let mut registrar = Registrar::new(registrar_config, now)?;
        registrar.set_accounts(
            settings
                .accounts
                .iter()
                .map(|a| Account {
                    extension: a.extension.clone(),
                    username: a.extension.clone(),
                    password: a.password.clone(),
                    display_name: (!a.name.is_empty()).then(|| a.name.clone()),
                })
                .collect(),
        )?;

        let mut tx = TransactionLayer::new(TransactionConfig {
            max_server_transactions_per_source: sip.guard.max_transactions_per_source as usize,
            ..TransactionConfig::default()
        });

        let mut exempt = Vec::new();
        let trunk = match &sip.trunk {
            None => None,
            Some(t) => {
                let ips: Vec<IpAddr> = t.servers.iter().filter_map(|s| s.ip()).collect();
                for ip in &ips {
                    // The trunk carries many calls: no per-source limit for it.
                    tx.set_source_limit(*ip, Some(100_000));
                    exempt.push(*ip);
                }
                let did = if t.did.is_empty() && t.did_default.is_none() {
                    None
                } else {
                    Some(t.did_routing(did_normalization(settings.country))?)
                };
                let registration = if t.register {
                    let contact_host = sip
                        .contact_host
                        .or_else(|| {
                            local_addrs
                                .first()
                                .map(|(_, a)| a.ip())
                                .filter(|ip| !ip.is_unspecified())
                        })
                        .or_else(|| {
                            t.servers
                                .iter()
                                .find_map(|s| s.ip())
                                .and_then(|ip| route_ip(SocketAddr::new(ip, 5060)))
                        })
                        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
                    let kind = legs::wire_kind_of(t.servers[0].transport);
                    let port = local_addrs
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .or(local_addrs.first())
                        .map_or(5060, |(_, a)| a.port());
                    let host_port = SocketAddr::new(contact_host, port).to_string();
                    let transport_param = match kind {
                        WireKind::Udp => "",
                        WireKind::Tcp => ";transport=tcp",
                        WireKind::Tls => ";transport=tls",
                    };
                    let mut config = TrunkConfig::new(
                        t.servers.clone(),
                        t.domain.clone(),
                        t.username.clone(),
                        t.password.clone(),
                        format!("sip:{}@{host_port}{transport_param}", t.username),
                        host_port,
                    );
                    config.auth_username = t.auth_username.clone();
                    config.expires = t.expires;
                    config.user_agent = USER_AGENT.to_owned();
                    // A trunk that is down should be found again quickly.
                    config.retry_base = Duration::from_secs(2);
                    config.retry_max = Duration::from_secs(60);
                    config.request_timeout = Duration::from_secs(35);
                    // Finds a registrar that went away (or restarted and lost the
                    // binding) in seconds; registering again follows the backoff.
                    config.keepalive_interval = t.keepalive;
                    let mut r = TrunkRegistration::new(config, splitmix(&mut rng), now)?;
                    r.start(now);
                    Some(r)
                } else {
                    None
                };
                let digest = DigestClient::new(
                    t.auth_username
                        .clone()
                        .unwrap_or_else(|| t.username.clone()),
                    t.password.clone(),
                    splitmix(&mut rng),
                );
                Some(TrunkSide {
                    registration,
                    ips,
                    names: HashMap::new(),
                    queries: HashMap::new(),
                    did,
                    config: t.clone(),
                    digest,
                    reachable: false,
                    dns: std::sync::Arc::new(dns::TrunkDns::new(&t.nameservers)),
                })
            }
        };

        // The trunk carries every outside call: exempt it from the transport's
        // per-source message rate limit too (the bench found it dropping the trunk's
        // messages above 200/s, about 30 calls/s).
        transport.set_rate_exempt(exempt.iter().copied());
        let guard = Guard::new(GuardConfig {
            auth_failures_before_ban: sip.guard.auth_failures_before_ban,
            auth_failure_window: sip.guard.auth_failure_window,
            ban_duration: sip.guard.ban,
            max_ban_duration: sip.guard.max_ban,
            ban_scanners: sip.guard.ban_scanners,
            extra_scanner_user_agents: sip.guard.scanner_user_agents.clone(),
            max_transactions_per_source: sip.guard.max_transactions_per_source,
            max_dialogs_per_source: sip.guard.max_dialogs_per_source,
            exempt,
            ..GuardConfig::default()
        })?;

        let dialogs = DialogLayer::new(DialogConfig::default(), splitmix(&mut rng));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (dns_tx, dns_rx) = mpsc::unbounded_channel();
        let limits = Limits {
            max_message_len: sip.max_message_bytes,
            ..Limits::default()
        };
        let mut endpoint = SipEndpoint {
            plan: numbering_plan(settings.country),
            settings,
            transport,
            limits,
            tx,
            dialogs,
            registrar,
            guard,
            trunk,
            media,
            inputs,
            trunk_status,
            dns_tx,
            legs: HashMap::new(),
            by_server: HashMap::new(),
            by_dialog: HashMap::new(),
            by_invite: HashMap::new(),
            invites_ended: std::collections::VecDeque::new(),
            relays: HashMap::new(),
            relay_by_client: HashMap::new(),
            next_relay: 1,
            next_in_leg: 1,
            rng,
            stats: EndpointStats::default(),
            udp_local,
            status_tx: status,
            status_dirty: true,
            status_version: 0,
            mwi_state: HashMap::new(),
            mwi_subscriptions: HashMap::new(),
            probes: HashMap::new(),
            session_deadlines: std::collections::BTreeSet::new(),
        };
        endpoint.publish_status(now);
        for (kind, addr) in &local_addrs {
            tracing::info!(%kind, %addr, "sip endpoint listening");
        }
        let task = tokio::spawn(endpoint.run(inbound, command_rx, dns_rx, probes, shutdown));
        Ok((
            SipHandle {
                commands,
                local_addrs,
            },
            task,
        ))
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::UnboundedReceiver<SipCommand>,
        mut dns: mpsc::UnboundedReceiver<(u64, DnsAnswer)>,
        mut probes: mpsc::UnboundedReceiver<probe::OptionsProbe>,
        shutdown: CancellationToken,
    ) {
        // The first REGISTER of the trunk (started in `start`).
        self.pump(Instant::now()).await;
        loop {
            let deadline = self.timeout();
            tokio::select! {
                () = shutdown.cancelled() => break,
                msg = inbound.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_inbound(Instant::now(), msg).await;
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.on_command(Instant::now(), cmd).await;
                }
                answer = dns.recv() => {
                    if let Some((id, answer)) = answer {
                        self.on_dns(Instant::now(), id, answer);
                    }
                }
                // A closed channel (no tools page) disables this branch for the turn.
                Some(p) = probes.recv() => self.start_probe(Instant::now(), p),
                () = sleep_until(deadline) => self.on_timeout(Instant::now()),
            }
            self.pump(Instant::now()).await;
            self.sync_media_watch();
        }
        self.shutdown(&mut inbound).await;
    }

    /// Ends every leg and un-REGISTERs the trunk, for at most [`SHUTDOWN_GRACE`].
    async fn shutdown(&mut self, inbound: &mut mpsc::Receiver<Inbound>) {
        let now = Instant::now();
        let legs: Vec<LegId> = self.legs.keys().copied().collect();
        for leg in legs {
            self.hangup(now, leg, EndReason::Congestion).await;
        }
        if let Some(r) = self.trunk.as_mut().and_then(|t| t.registration.as_mut()) {
            r.shutdown(now);
        }
        self.pump(now).await;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut done = self
            .trunk
            .as_ref()
            .and_then(|t| t.registration.as_ref())
            .is_none();
        while !done && Instant::now() < deadline {
            let wake = self.timeout().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(msg) => self.on_inbound(Instant::now(), msg).await,
                    None => break,
                },
                () = tokio::time::sleep_until(wake.into()) => self.on_timeout(Instant::now()),
            }
            if let Some(r) = self.trunk.as_mut().and_then(|t| t.registration.as_mut()) {
                while let Some(e) = r.poll_event() {
                    if e == TrunkEvent::Unregistered {
                        done = true;
                    }
                }
            }
            self.pump(Instant::now()).await;
        }
        tracing::info!(
            malformed = self.stats.malformed,
            malformed_answered = self.stats.malformed_answered,
            dropped_banned = self.stats.dropped_banned,
            dropped_scanner = self.stats.dropped_scanner,
            refused = self.stats.refused,
            "sip endpoint stopped"
        );
        self.transport.shutdown().await;
    }

    fn timeout(&self) -> Option<Instant> {
        let trunk = self
            .trunk
            .as_ref()
            .and_then(|t| t.registration.as_ref())
            .and_then(TrunkRegistration::timeout);
        [
            self.tx.timeout(),
            self.dialogs.timeout(),
            self.registrar.timeout(),
            self.guard.timeout(),
            self.subscriptions_timeout(),
            self.invites_ended.front().map(|(at, _)| *at),
            self.session_timeout(),
            trunk,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.dialogs.handle_timeout(now);
        self.registrar.handle_timeout(now);
        self.guard.handle_timeout(now);
        if let Some(r) = self.trunk.as_mut().and_then(|t| t.registration.as_mut()) {
            r.handle_timeout(now);
        }
        self.expire_subscriptions(now);
        self.on_session_timeout(now);
        while self.invites_ended.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.invites_ended.pop_front() {
                self.by_invite.remove(&key);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    // ----- inbound path -----

    async fn on_inbound(&mut self, now: Instant, msg: Inbound) {
        let source = msg.peer;
        if self.guard.banned_until(now, source.ip()).is_some() {
            self.stats.dropped_banned += 1;
            return;
        }
        if !msg.bytes.iter().all(u8::is_ascii_whitespace) {
            self.trace(Direction::In, msg.kind, msg.peer, &msg.bytes);
        }
        let parsed = match message::parse(&msg.bytes, &self.limits) {
            Ok(m) => m,
            Err(ParseError::Empty) => return,
            Err(e) => {
                self.on_malformed(&msg, &e).await;
                return;
            }
        };
        let peer = Peer {
            addr: source,
            transport: wire::tx_kind(msg.kind),
        };
        let message = match parsed {
            SipMessage::Request(mut request) => {
                match self.guard.check_request(now, source.ip(), &request) {
                    Verdict::Allow => {}
                    Verdict::Drop(reason) => {
                        self.stats.dropped_scanner += 1;
                        tracing::debug!(%source, ?reason, "sip request dropped");
                        return;
                    }
                    Verdict::Reject(r) => {
                        let response = transaction::response_for(&request, r.status_code(), None);
                        self.send_stateless(response.into(), peer).await;
                        return;
                    }
                }
                // RFC 3581: record where the request really came from.
                if let Err(e) = branchline_sip::transport::via::apply_received_rport(
                    &mut request.headers,
                    source,
                ) {
                    tracing::debug!(%source, error = %e, "top Via not rewritten");
                }
                SipMessage::Request(request)
            }
            response => response,
        };
        let is_request = matches!(message, SipMessage::Request(_));
        let copy = is_request.then(|| message.clone());
        if let Err(e) = self.tx.handle_message(now, message, peer) {
            self.stats.refused += 1;
            tracing::debug!(%source, error = %e, "sip message refused by the transaction layer");
            if let Some(SipMessage::Request(request)) = copy {
                if request.method != Method::Ack {
                    let status: u16 = match e {
                        transaction::Error::Overloaded { .. }
                        | transaction::Error::SourceOverloaded { .. } => 503,
                        _ => 400,
                    };
                    let response = transaction::response_for(&request, status.into(), None);
                    self.send_stateless(response.into(), peer).await;
                }
            }
        }
    }

    async fn on_malformed(&mut self, msg: &Inbound, error: &ParseError) {
        self.stats.malformed += 1;
        let answer = error
            .status_hint()
            .and_then(|status| wire::raw_response(&msg.bytes, status, wire::reason_phrase(status)));
        tracing::info!(
            source = %msg.peer,
            error = %error,
            answered = answer.is_some(),
            "malformed sip message"
        );
        if let Some(bytes) = answer {
            self.stats.malformed_answered += 1;
            let mut out = Outbound::new(msg.kind, msg.peer, bytes);
            out.connection = msg.connection;
            out.local = Some(msg.local);
            self.trace(Direction::Out, out.kind, out.dest, &out.bytes);
            if let Err(e) = self.transport.send(out).await {
                tracing::debug!(error = %e, "response to a malformed message not sent");
            }
        }
    }

    async fn send_stateless(&mut self, message: SipMessage, to: Peer) {
        self.tx.send_stateless(message, to);
        self.flush().await;
    }

    fn on_dns(&mut self, now: Instant, id: u64, answer: DnsAnswer) {
        let Some(trunk) = self.trunk.as_mut() else {
            return;
        };
        if let (Some(name), DnsAnswer::Addresses(ips)) = (trunk.queries.remove(&id), &answer) {
            for ip in ips {
                trunk.names.insert(*ip, name.clone());
                if !wire::ip_in(*ip, &trunk.ips) {
                    trunk.ips.push(*ip);
                    self.tx.set_source_limit(*ip, Some(100_000));
                }
            }
            self.transport.set_rate_exempt(trunk.ips.iter().copied());
        }
        if let Some(r) = trunk.registration.as_mut() {
            r.handle_dns_answer(now, id, answer);
        }
    }

    /// Runs every core until nothing moves, then sends what they produced.
    async fn pump(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut progressed = false;
            while let Some(ev) = self.tx.poll_event() {
                progressed = true;
                self.on_tx_event(now, ev).await;
            }
            while let Some(action) = self.dialogs.poll_action() {
                progressed = true;
                self.on_dialog_action(now, action);
            }
            while let Some(ev) = self.dialogs.poll_event() {
                progressed = true;
                self.on_dialog_event(now, ev).await;
            }
            if self.pump_trunk(now) {
                progressed = true;
                self.status_dirty = true;
            }
            while let Some(ev) = self.registrar.poll_event() {
                self.status_dirty = true;
                tracing::info!(event = ?binding_event_summary(&ev), "sip registration");
            }
            while let Some(ev) = self.guard.poll_event() {
                match ev {
                    GuardEvent::Banned {
                        source,
                        level,
                        cause,
                        until,
                    } => tracing::warn!(
                        %source,
                        level,
                        ?cause,
                        secs = until.saturating_duration_since(now).as_secs(),
                        "sip source banned"
                    ),
                    GuardEvent::Unbanned { source } => {
                        tracing::info!(%source, "sip source unbanned")
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        self.publish_status(now);
        self.flush().await;
    }

    /// Publishes the registrations snapshot when a binding or the trunk changed.
    fn publish_status(&mut self, now: Instant) {
        if !self.status_dirty {
            return;
        }
        self.status_dirty = false;
        self.status_version += 1;
        let report = self.status_report(self.status_version, now, crate::store::system_clock_ms());
        self.status_tx.send_replace(std::sync::Arc::new(report));
    }

    fn pump_trunk(&mut self, now: Instant) -> bool {
        let Some(trunk) = self.trunk.as_mut() else {
            return false;
        };
        let Some(r) = trunk.registration.as_mut() else {
            return false;
        };
        let mut progressed = false;
        while let Some(q) = r.poll_dns_query() {
            progressed = true;
            trunk.queries.insert(q.id, q.name.clone());
            let dns = self.dns_tx.clone();
            let resolver = std::sync::Arc::clone(&trunk.dns);
            tokio::spawn(async move {
                let answer = resolver.answer(&q).await;
                let _ = dns.send((q.id, answer));
            });
        }
        while let Some(t) = r.poll_transmit() {
            progressed = true;
            let peer = wire::peer(t.target.addr, t.target.transport);
            if let Err(e) = self.tx.send_request(now, t.request, peer) {
                tracing::warn!(error = %e, "trunk REGISTER not sent");
                r.handle_failure(
                    now,
                    &t.branch,
                    branchline_sip::trunk::TransportFailure::Transport,
                );
            }
        }
        while let Some(ev) = r.poll_event() {
            progressed = true;
            match &ev {
                TrunkEvent::Registered { target, until, .. } => tracing::info!(
                    server = %target.addr,
                    secs = until.saturating_duration_since(now).as_secs(),
                    "trunk registered"
                ),
                TrunkEvent::Failed { server, reason } => {
                    tracing::warn!(server, ?reason, "trunk registration failed")
                }
                TrunkEvent::Backoff { attempt, until } => tracing::info!(
                    attempt,
                    secs = until.saturating_duration_since(now).as_secs(),
                    "trunk registration backing off"
                ),
                TrunkEvent::Reachability(r) => {
                    let reachable = r.is_reachable();
                    trunk.reachable = reachable;
                    tracing::info!(reachable, "trunk reachability");
                    let status = if reachable {
                        TrunkStatus::Usable
                    } else {
                        TrunkStatus::Unusable
                    };
                    let _ = self.trunk_status.send(status);
                }
                TrunkEvent::Unregistered => tracing::info!("trunk unregistered"),
            }
        }
        progressed
    }

    /// Records a message in the diagnostics trace, when there is one.
    fn trace(&self, direction: Direction, kind: WireKind, peer: SocketAddr, bytes: &bytes::Bytes) {
        if let Some(trace) = &self.settings.trace {
            trace.record(Captured {
                at_ms: crate::store::system_clock_ms(),
                direction,
                transport: match kind {
                    WireKind::Udp => "udp",
                    WireKind::Tcp => "tcp",
                    WireKind::Tls => "tls",
                },
                peer,
                bytes: bytes.clone(),
            });
        }
    }

    /// Sends everything the transaction layer queued.
    async fn flush(&mut self) {
        while let Some(t) = self.tx.poll_transmit() {
            let bytes = message::serialize(&t.message);
            let kind = wire::wire_kind(t.destination.transport);
            let mut out = Outbound::new(kind, t.destination.addr, bytes);
            if kind == WireKind::Udp {
                out.local = self.udp_local;
            }
            if kind == WireKind::Tls {
                if let Some(name) = self
                    .trunk
                    .as_ref()
                    .and_then(|tr| tr.names.get(&t.destination.addr.ip()))
                {
                    out = out.with_server_name(name.clone());
                }
            }
            self.trace(Direction::Out, out.kind, out.dest, &out.bytes);
            if let Err(e) = self.transport.send(out).await {
                tracing::debug!(dest = %t.destination.addr, error = %e, "sip message not sent");
                if let Some(key) = t.transaction {
                    self.tx.handle_transport_error(&key);
                }
            }
        }
    }

    fn on_dialog_action(&mut self, now: Instant, action: branchline_sip::dialog::DialogAction) {
        use branchline_sip::dialog::DialogAction;
        match action {
            DialogAction::SendRequest {
                request,
                destination,
                ..
            } => {
                if let Err(e) = self.tx.send_request(now, request, destination) {
                    tracing::debug!(error = %e, "in-dialog request not sent");
                }
            }
            DialogAction::Respond { server, response } => {
                if let Err(e) = self.tx.respond(now, &server, response) {
                    tracing::debug!(error = %e, "dialog retransmission not sent");
                }
            }
            DialogAction::SendStateless {
                message,
                destination,
            } => self.tx.send_stateless(message, destination),
        }
    }

    async fn on_tx_event(&mut self, now: Instant, ev: TransactionEvent) {
        match ev {
            TransactionEvent::Request {
                key,
                request,
                source,
            } => self.on_request(now, key, request, source).await,
            TransactionEvent::Ack { request, .. } => {
                if let Some(id) = self.dialogs.on_ack(now, &request) {
                    self.on_ack(now, &id, &request).await;
                }
            }
            TransactionEvent::Cancelled { invite, .. } => self.on_cancelled(now, &invite).await,
            TransactionEvent::Response { key, response } => {
                self.on_response(now, Some(key), response).await
            }
            TransactionEvent::StrayResponse { response, .. } => {
                self.on_response(now, None, response).await
            }
            TransactionEvent::Timeout { key } => {
                self.on_client_failure(now, &key, "no answer (the transaction timed out)")
                    .await
            }
            TransactionEvent::TransportError { key } => {
                self.on_client_failure(now, &key, "the transport could not send it")
                    .await
            }
            TransactionEvent::Terminated { .. } => {}
        }
    }

    async fn on_client_failure(&mut self, now: Instant, key: &TransactionKey, why: &str) {
        let TransactionKey::Client(client) = key else {
            return;
        };
        if let Some(r) = self.trunk.as_mut().and_then(|t| t.registration.as_mut()) {
            r.handle_failure(
                now,
                client.branch(),
                branchline_sip::trunk::TransportFailure::Timeout,
            );
        }
        if let Some(relay) = self.relay_by_client.remove(client) {
            self.relay_result(now, relay, 408);
            return;
        }
        if self.probe_failed(client, why) {
            return;
        }
        if client.method() == Method::Invite {
            self.on_invite_failed(now, client).await;
        }
    }

    async fn on_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        source: Peer,
    ) {
        use branchline_sip::dialog::RequestDisposition;
        // REGISTER has no dialog; a SUBSCRIBE's dialog is the `mwi` module's own.
        let disposition = if matches!(request.method, Method::Register | Method::Subscribe) {
            RequestDisposition::OutOfDialog
        } else {
            self.dialogs.on_request(now, &request)
        };
        match disposition {
            RequestDisposition::Reject(rejection) => {
                tracing::debug!(
                    method = %request.method,
                    status = rejection.status,
                    call_id = transaction::call_id(&request.headers).unwrap_or_default(),
                    to_tag = transaction::to_tag(&request.headers).ok().flatten().unwrap_or_default(),
                    "in-dialog request rejected"
                );
                let response = branchline_sip::dialog::rejection_response(&request, rejection);
                self.respond(now, &key, response);
            }
            RequestDisposition::InDialog(id) => {
                self.on_in_dialog(now, key, request, source, id).await
            }
            RequestDisposition::OutOfDialog => match request.method {
                Method::Register => self.on_register(now, &key, &request, source),
                Method::Options => {
                    let mut response = transaction::response_for(&request, 200u16.into(), None);
                    response
                        .headers
                        .push(Header::Allow(rsip::headers::Allow::new(
                            branchline_sip::trunk::registration::ALLOW,
                        )));
                    response
                        .headers
                        .push(Header::Accept(rsip::headers::Accept::new(
                            "application/sdp",
                        )));
                    self.respond(now, &key, response);
                }
                Method::Message => self.on_message(now, &key, &request, source),
                Method::Invite => self.on_invite(now, key, request, source).await,
                Method::Subscribe => self.on_subscribe(now, &key, &request, source),
                Method::Bye | Method::Update | Method::PRack | Method::Info => {
                    let response = transaction::response_for(&request, 481u16.into(), None);
                    self.respond(now, &key, response);
                }
                _ => {
                    let mut response = transaction::response_for(&request, 405u16.into(), None);
                    response
                        .headers
                        .push(Header::Allow(rsip::headers::Allow::new(
                            branchline_sip::trunk::registration::ALLOW,
                        )));
                    self.respond(now, &key, response);
                }
            },
        }
    }

    fn respond(&mut self, now: Instant, key: &ServerKey, mut response: rsip::Response) {
        if response.status_code.code() == 401 {
            response.headers = challenges::order_challenges(
                &response.headers,
                &self.settings.sip.digest_algorithms,
            );
        }
        response
            .headers
            .push(Header::Server(rsip::headers::Server::new(USER_AGENT)));
        if let Err(e) = self.tx.respond(now, key, response) {
            tracing::debug!(error = %e, "response not sent");
        }
    }

    fn on_register(
        &mut self,
        now: Instant,
        key: &ServerKey,
        request: &rsip::Request,
        source: Peer,
    ) {
        let flow = RegFlow {
            transport: wire::rsip_transport(wire::wire_kind(source.transport)),
            peer: source.addr,
            connection: None,
        };
        let outcome = self.registrar.handle_register(now, request, flow);
        match &outcome.auth {
            AuthOutcome::Failed { error } => {
                tracing::info!(source = %source.addr, %error, "sip registration refused");
                self.guard.record_auth_failure(now, source.addr.ip());
            }
            AuthOutcome::Succeeded { extension } => {
                tracing::debug!(source = %source.addr, extension, code = outcome.response.status_code.code(), "sip register");
            }
            _ => {}
        }
        let registered = match &outcome.auth {
            AuthOutcome::Succeeded { extension } if outcome.response.status_code.code() == 200 => {
                Some(extension.clone())
            }
            _ => None,
        };
        self.respond(now, key, outcome.response);
        // A phone that (re-)registers learns its mailbox's state (RFC 3842 unsolicited
        // NOTIFY), e.g. after the box or the phone restarted.
        let registered = registered.filter(|e| !self.subscribed(e));
        if let Some(summary) = registered.and_then(|e| Some((*self.mwi_state.get(&e)?, e))) {
            self.mwi(now, &summary.1, &summary.0);
        }
    }

    /// Authenticates a request from a phone (INVITE, MESSAGE): the extension, or
    /// `None` after the challenge was sent (failures counted by the guard).
    fn authenticate(
        &mut self,
        now: Instant,
        key: &ServerKey,
        request: &rsip::Request,
        source: Peer,
    ) -> Option<String> {
        match self.registrar.authenticate(now, request) {
            Authentication::Authenticated { extension } => Some(extension),
            Authentication::Rejected { response, auth } => {
                if let AuthOutcome::Failed { error } = &auth {
                    tracing::info!(source = %source.addr, method = %request.method, %error, "sip authentication failed");
                    self.guard.record_auth_failure(now, source.addr.ip());
                }
                self.respond(now, key, *response);
                None
            }
        }
    }

    fn on_message(&mut self, now: Instant, key: &ServerKey, request: &rsip::Request, source: Peer) {
        let Some(sender) = self.authenticate(now, key, request, source) else {
            return;
        };
        let seed = self.next_random();
        match self.registrar.relay_message(now, request, &sender, seed) {
            Err(rejection) => {
                let mut response =
                    transaction::response_for(request, rejection.code().into(), None);
                for h in rejection.extra_headers() {
                    response.headers.push(h);
                }
                tracing::info!(from = sender, %rejection, "sip MESSAGE not relayed");
                self.respond(now, key, response);
            }
            Ok(relayed) => {
                let id = self.next_relay;
                self.next_relay += 1;
                let mut outstanding = 0;
                for m in relayed {
                    let peer = wire::peer(m.flow.peer, m.flow.transport);
                    match self.tx.send_request(now, m.request, peer) {
                        Ok(client) => {
                            self.relay_by_client.insert(client, id);
                            outstanding += 1;
                        }
                        Err(e) => tracing::debug!(error = %e, "relayed MESSAGE not sent"),
                    }
                }
                if outstanding == 0 {
                    let response = transaction::response_for(request, 480u16.into(), None);
                    self.respond(now, key, response);
                    return;
                }
                self.relays.insert(
                    id,
                    Relay {
                        server: key.clone(),
                        request: request.clone(),
                        outstanding,
                        lowest_failure: None,
                        answered: false,
                    },
                );
            }
        }
    }

    /// A final response (or failure) of one relayed MESSAGE.
    fn relay_result(&mut self, now: Instant, id: u64, code: u16) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        relay.outstanding = relay.outstanding.saturating_sub(1);
        let mut answer = None;
        if (200..300).contains(&code) {
            if !relay.answered {
                relay.answered = true;
                answer = Some(202u16);
            }
        } else {
            relay.lowest_failure = Some(relay.lowest_failure.map_or(code, |c| c.min(code)));
            if relay.outstanding == 0 && !relay.answered {
                answer = relay.lowest_failure;
            }
        }
        let done = relay.outstanding == 0;
        let (server, request) = (relay.server.clone(), relay.request.clone());
        if done {
            self.relays.remove(&id);
        }
        if let Some(code) = answer {
            let response = transaction::response_for(&request, code.into(), None);
            self.respond(now, &server, response);
        }
    }

    async fn on_response(
        &mut self,
        now: Instant,
        key: Option<ClientKey>,
        response: rsip::Response,
    ) {
        if let Some(r) = self.trunk.as_mut().and_then(|t| t.registration.as_mut()) {
            if r.handle_response(now, &response) {
                return;
            }
        }
        if let Some(key) = &key {
            if self.probe_response(now, key, &response) {
                return;
            }
            if response.status_code.code() >= 200 {
                if let Some(relay) = self.relay_by_client.remove(key) {
                    self.relay_result(now, relay, response.status_code.code());
                    return;
                }
            }
        }
        self.on_leg_response(now, key, response).await;
    }

    async fn on_command(&mut self, now: Instant, command: SipCommand) {
        match command {
            SipCommand::Dial {
                leg,
                target,
                caller_number,
                caller_name,
                sip_call_id,
            } => {
                self.dial(now, leg, target, caller_number, caller_name, sip_call_id)
                    .await
            }
            SipCommand::Ringing { leg, early_media } => self.ringing(now, leg, early_media).await,
            SipCommand::Answer { leg } => self.answer(now, leg).await,
            SipCommand::Hangup { leg, reason } => self.hangup(now, leg, reason).await,
            SipCommand::TransferStatus { leg, status } => self.transfer_notify(now, leg, status),
            SipCommand::Mwi { extension, summary } => {
                self.mwi_state.insert(extension.clone(), summary);
                if self.subscribed(&extension) {
                    self.notify_subscribers(now, &extension);
                } else {
                    self.mwi(now, &extension, &summary);
                }
            }
        }
    }

    /// Sends an unsolicited message-summary NOTIFY to every binding of `extension`.
    fn mwi(&mut self, now: Instant, extension: &str, summary: &MessageSummary) {
        let realm = self.registrar.config().realm.clone();
        let bindings: Vec<_> = self
            .registrar
            .lookup(now, extension)
            .into_iter()
            .cloned()
            .collect();
        for b in bindings {
            let notify = mwi_notify(&b, extension, &realm, summary);
            let peer = wire::peer(b.flow.peer, b.flow.transport);
            let local = self.local_hostport(peer);
            let branch = self.dialogs.new_branch();
            let tag = self.dialogs.new_tag();
            let call_id = self.dialogs.new_call_id(&local.ip().to_string());
            let mut headers = rsip::Headers::default();
            headers.push(Header::Via(rsip::headers::Via::new(format!(
                "SIP/2.0/{} {local};branch={branch};rport",
                wire::wire_kind(peer.transport).via_token()
            ))));
            headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
            headers.push(Header::From(rsip::headers::From::new(format!(
                "<sip:{extension}@{realm}>;tag={tag}"
            ))));
            headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
            headers.push(Header::CSeq(rsip::headers::CSeq::new("1 NOTIFY")));
            for h in notify.headers {
                headers.push(h);
            }
            headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
                notify.body.len() as u32,
            )));
            let request = rsip::Request {
                method: Method::Notify,
                uri: notify.request_uri,
                version: rsip::Version::V2,
                headers,
                body: notify.body,
            };
            if let Err(e) = self.tx.send_request(now, request, peer) {
                tracing::debug!(error = %e, "MWI NOTIFY not sent");
            }
        }
    }

    /// Our address (host and port) as the peer should see it, for Via and Contact.
    fn local_hostport(&self, peer: Peer) -> SocketAddr {
        let kind = wire::wire_kind(peer.transport);
        let listener = self
            .transport
            .local_addr(kind)
            .or_else(|| self.transport.local_addrs().first().map(|(_, a)| *a))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
        let ip = self
            .settings
            .sip
            .contact_host
            .or_else(|| (!listener.ip().is_unspecified()).then(|| listener.ip()))
            .or_else(|| route_ip(peer.addr))
            .unwrap_or(listener.ip());
        SocketAddr::new(ip, listener.port())
    }

    /// Toll classes a local account may dial.
    fn toll_classes(&self, extension: &str) -> TollClasses {
        let international = self
            .settings
            .accounts
            .iter()
            .any(|a| a.extension == extension && a.international);
        if international {
            TollClasses::all()
        } else {
            NumberClass::ALL
                .into_iter()
                .filter(|c| !matches!(c, NumberClass::International | NumberClass::Premium))
                .collect()
        }
    }
}

/// The local IP address the kernel would use towards `dest` (no packet is sent).
fn route_ip(dest: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dest.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(dest).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

fn binding_event_summary(ev: &branchline_sip::registrar::BindingEvent) -> String {
    use branchline_sip::registrar::BindingEvent;
    match ev {
        BindingEvent::Added { extension, binding } => {
            format!(
                "added {extension} {} via {}",
                binding.uri(),
                binding.flow.peer
            )
        }
        BindingEvent::Refreshed { extension, binding } => {
            format!("refreshed {extension} {}", binding.uri())
        }
        BindingEvent::Removed {
            extension,
            binding,
            reason,
        } => format!("removed {extension} {} ({reason:?})", binding.uri()),
        BindingEvent::Expired { extension, binding } => {
            format!("expired {extension} {}", binding.uri())
        }
    }
}
