//! The B2BUA legs: the SIP side of each party call control sees as a [`LegId`].
//!
//! # Incoming legs (INVITE to the box)
//!
//! 1. Origin: a source address of a configured trunk server is the trunk (the called
//!    number goes through the DID table when one is configured; no route: `404`);
//!    anything else must be a local phone and is digest-challenged by the registrar
//!    (`401`, failures reported to the guard).
//! 2. Per-source dialog limit (guard): `503`. Toll restriction for phones: a number
//!    after the outside-line prefix whose class the account may not dial: `403`.
//! 3. `Require` with an option other than `100rel` (and `timer` while session timers
//!    are on): `420` naming it in `Unsupported` (RFC 3261 8.2.2.3). `Session-Expires`
//!    below our `Min-SE`: `422`; unreadable: `400` (`super::session`). SDP offer ([`super::sdp::negotiate`]): unreadable, or no
//!    PCMU/PCMA: `488`. No body at all is a late offer (RFC 3261 13.2.1): the box
//!    puts its own offer in the `200` and starts the media from the answer in the ACK
//!    (an ACK without a usable answer: BYE), or, with early media for a caller that
//!    takes 100rel, in a reliable 183 (step 5). A re-INVITE without SDP gets our
//!    offer in its `200` and the answer from the ACK too.
//! 4. RTP ports ([`MediaEngine::open_leg`]; every pair leased, i.e. overload: `503`
//!    with `Retry-After` at once), `100 Trying`, [`SipInput::Incoming`].
//! 5. Call control answers: `SipRinging` -> `180`, or with early media (the far leg
//!    sent a 183 with SDP, or a queue plays music) a `183` with SDP: for a caller with
//!    an offer the SDP answer, the media started; for a late-offer caller that sent
//!    `Supported: 100rel` or `Require: 100rel` (RFC 3262) our offer, reliably (RSeq,
//!    resent until the PRACK), and the media starts from the answer the PRACK must
//!    carry (then it flows both ways as for an offering caller); a late-offer caller
//!    without 100rel gets a plain `180` (an offer in an unreliable 1xx could not be
//!    answered). A 180 is not sent after a 183 with SDP. With `Require: 100rel` every
//!    1xx is reliable, one at a time: a 183 wanted while a 180 awaits its PRACK goes
//!    out when the PRACK comes.
//!    `SipAnswer` -> `200` with the SDP answer (the same as the 183's; the dialog
//!    layer retransmits it until the ACK), media started unless early media runs
//!    already; after a late offer our offer (answer in the ACK), or, when the PRACK
//!    answered our offer, no SDP at all (the exchange is complete; RFC 6337 3.1 allows
//!    only an identical copy, which adds nothing) and the ACK needs none. While a
//!    reliable 1xx with SDP awaits its PRACK the `200` waits for it (RFC 3262 3: the
//!    far end may well answer first);
//!    `SipHangup` -> `486` (busy), `480` (no answer), `404` (unallocated), `503`
//!    (congestion), `403` (forbidden), `487` (normal: the call went elsewhere), or a
//!    BYE once answered.
//! 6. PRACK errors, each ending the leg with [`SipInput::Ended`] (call control then
//!    cancels or hangs up the far leg, and the CDR is not answered): a PRACK without
//!    an answer to our offer, or with one the box cannot use (no PCMU/PCMA), gets its
//!    `200` (it did acknowledge the 183) and the INVITE `488` with a `Warning` (`399`
//!    no answer, `305` incompatible media): RFC 3264 lets an offerer only start again
//!    or end the session, never refuse an answer. No PRACK within 64*T1 (the dialog
//!    layer's [`DialogEvent::PrackTimeout`]): `500` (RFC 3262 3). A CANCEL while the
//!    183 is unacknowledged: `487` as always; a BYE in the early dialog: `200`, and
//!    `487` to the INVITE (RFC 3261 15.1.2).
//! 7. CANCEL from the caller: `487` and [`SipInput::Ended`]; BYE: `200` and `Ended`;
//!    re-INVITE: answered from the new offer (sendonly/inactive is answered
//!    recvonly/inactive and reported as [`SipInput::Hold`]); INFO with
//!    `application/dtmf-relay` becomes [`SipInput::Digit`]; REFER goes to `refer`
//!    ([`SipInput::Transfer`]).
//! 8. An INVITE with `Replaces` naming a dialog of the box (from a phone; the trunk
//!    gets `403`, an unknown dialog `481`) is reported with that leg in
//!    [`SipInput::Incoming`]'s `replaces`.
//!
//! # Outgoing legs (call control's `SipDial`)
//!
//! - To an extension: one INVITE per registered binding, sent along the flow the
//!   binding registered over (NAT), each with the leg's Call-ID and its own From tag;
//!   the first 2xx wins and the other forks are cancelled (a 2xx that arrives anyway
//!   is ACKed and BYEd). An extension without an account ends `Unallocated`; an
//!   account with no binding ends `NoAnswer` (the phone is offline: "temporarily
//!   unavailable", so call control treats it like an unanswered phone, not a wrong
//!   number).
//! - To the trunk: to the target the trunk registration uses, `From` and
//!   `P-Asserted-Identity` from the caller-ID rules, one digest answer to a 401/407.
//!   3xx responses are not followed (the carrier, not the box, should redirect), and
//!   any failure other than busy or unallocated ends `Congestion`, so call control
//!   falls back to an FXO line. No trunk binding or no caller-ID rule: `Congestion`
//!   at once.
//! - Session timers on (`[sip] session_expires_s` > 0): every INVITE proposes one
//!   (`Supported: timer`, `Session-Expires`, `Min-SE` when not 90; see `session`). A
//!   `422 Session Interval Too Small` is retried once per fork with the `422`'s
//!   `Min-SE` (same Call-ID and From tag, next CSeq; a trunk may challenge the retry
//!   once more); a second `422` or an unusable `Min-SE` fails the fork with `422`.
//! - `180`/`183` -> [`SipInput::Ringing`] (once); the first 18x with a usable SDP is
//!   early media: the leg's media starts from it and call control hears
//!   [`SipInput::EarlyMedia`] (a later 180 without SDP changes nothing); `2xx` -> ACK
//!   (dialog layer), media started from the SDP answer (kept running, without a
//!   restart, when it repeats the early media's SDP), [`SipInput::Answered`]; all
//!   forks failed -> [`SipInput::Ended`] with the best reason (busy over anything
//!   else).
//!
//! RTP latching (symmetric RTP) is on for local phones (they sit behind NAT) and off
//! for the trunk unless `[sip.trunk] latch_rtp = true`. A leg whose media started is
//! announced with [`SipInput::Media`]; when it ends its RTP ports are closed, its call
//! quality logged and sent to call control ([`SipInput::Quality`], before
//! [`SipInput::Ended`]) for the CDR.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use branchline_media::inactivity::Watch;
use branchline_sip::dialog::{DialogEvent, DialogId};
use branchline_sip::guard::Verdict;
use branchline_sip::session_timer::{self, Proposal};
use branchline_sip::transaction::{self, ClientKey, Peer, ServerKey};
use branchline_sip::transport::TransportKind as WireKind;
use branchline_sip::trunk::identity::{outbound_identity, Presentation};
use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::sdp::{self, Direction, LocalMedia, RemoteMedia};
use super::{wire, SipEndpoint};
use crate::call::sip::{EndReason, LegId, SipInput, SipOrigin, SipTarget};
use crate::cdr::CdrLegQuality;
use crate::media_engine::LegMedia;

/// Seconds in the `Retry-After` of the `503` an INVITE gets while every RTP port pair
/// of the `[media]` range is leased (overload): calls a second last a few seconds, so
/// pairs come free within that time.
pub(super) const OVERLOAD_RETRY_AFTER_S: u32 = 2;

/// The transport kind for an rsip transport.
pub(super) fn wire_kind_of(t: rsip::Transport) -> WireKind {
    wire::wire_kind(wire::kind_of_rsip(t))
}

/// Where a leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegState {
    /// Incoming: INVITE received, no final response yet. Outgoing: INVITE(s) sent.
    Offering,
    /// A 2xx was sent or received.
    Answered,
}

/// The incoming side of a leg.
#[derive(Debug)]
pub(super) struct Incoming {
    server: ServerKey,
    invite: rsip::Request,
    source: Peer,
    local_contact: rsip::Uri,
    /// The caller's SDP offer; `None` for a late offer (an INVITE without SDP: the box
    /// offers in its 200 and takes the answer from the ACK).
    offer: Option<RemoteMedia>,
    /// The guard counted a dialog for this source.
    counted: Option<IpAddr>,
    /// What the caller said about reliable provisional responses (RFC 3262).
    rel100: Rel100,
    /// The early dialog of our first 1xx: a PRACK (or a BYE) in it finds the leg.
    /// Kept apart from `by_dialog`, which holds confirmed dialogs only (an early
    /// dialog of ours as UAS must not be `Replaces`-able, RFC 3891 3).
    early_dialog: Option<DialogId>,
    /// A reliable 1xx of ours that waits for its PRACK, and what waits on it.
    prack: Option<AwaitingPrack>,
    /// Our offer went in a reliable 183 and the PRACK brought its answer: the offer/
    /// answer exchange is complete, so the 200 carries no SDP and the ACK none.
    offer_answered_early: bool,
    /// The session-timer headers of our 2xx and the timer they start (interval,
    /// whether the box refreshes) ([`super::session`]).
    session: (Vec<Header>, Option<(u32, bool)>),
}

/// What the caller's INVITE said about 100rel (RFC 3262).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rel100 {
    /// Neither `Supported` nor `Require`: provisional responses are unreliable.
    No,
    /// `Supported: 100rel`: the box may send a reliable 1xx (it does for its offer).
    Supported,
    /// `Require: 100rel`: every provisional response but 100 must be reliable.
    Required,
}

impl Rel100 {
    fn of(request: &rsip::Request) -> Self {
        let has = |required: bool| {
            request.headers.iter().any(|h| {
                let value = match h {
                    Header::Require(r) => r.value(),
                    Header::Supported(s) if !required => s.value(),
                    _ => return false,
                };
                value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
            })
        };
        if has(true) {
            Rel100::Required
        } else if has(false) {
            Rel100::Supported
        } else {
            Rel100::No
        }
    }
}

/// The option tags of an INVITE's `Require` the box does not support (RFC 3261
/// 8.2.2.3: the INVITE is refused `420` listing them in `Unsupported`): anything but
/// `100rel`, and `timer` (RFC 4028) when `timers` (session timers) are off.
fn unsupported_requirements(request: &rsip::Request, timers: bool) -> Vec<String> {
    request
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Require(r) => Some(r.value()),
            _ => None,
        })
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let supported =
                t.eq_ignore_ascii_case("100rel") || (timers && t.eq_ignore_ascii_case("timer"));
            !t.is_empty() && !supported
        })
        .map(str::to_owned)
        .collect()
}

/// How [`SipEndpoint::answer_incoming`] sends a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// As is (a 1xx unreliably).
    Plain,
    /// A 1xx reliably (RFC 3262).
    Reliable,
    /// A 1xx with our offer, reliably: its PRACK must bring the answer.
    ReliableOffer,
    /// A final response with this `Warning` value (RFC 3261 20.43).
    Warning(&'static str),
}

/// A reliable provisional response of ours waiting for its PRACK (RFC 3262 3: one at a
/// time per INVITE, and no 2xx before the PRACK of one that carried SDP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AwaitingPrack {
    /// It carries our offer (late offer): the PRACK must bring the answer.
    offer: bool,
    /// It carries SDP (our offer or our answer).
    sdp: bool,
    /// Call control's early media came meanwhile: the 183 goes out after the PRACK.
    early_media: bool,
    /// Call control answered meanwhile: the 200 goes out after the PRACK.
    answer: bool,
}

/// One INVITE of an outgoing leg.
#[derive(Debug)]
pub(super) struct Fork {
    invite: rsip::Request,
    client: ClientKey,
    peer: Peer,
    local_contact: rsip::Uri,
    /// Final failure code once it failed.
    failed: Option<u16>,
    /// The RFC 4028 session timer this INVITE proposes (session timers on).
    timer: Option<Proposal>,
}

/// The outgoing side of a leg.
#[derive(Debug)]
pub(super) struct Outgoing {
    forks: Vec<Fork>,
    ringing_sent: bool,
    trunk: bool,
    auth_answered: bool,
}

/// One SIP leg.
#[derive(Debug)]
pub(super) struct Leg {
    pub(super) sip_call_id: String,
    pub(super) state: LegState,
    local_rtp: SocketAddr,
    pub(super) remote: Option<RemoteMedia>,
    latch: bool,
    session_id: u64,
    session_version: u64,
    pub(super) dialog: Option<DialogId>,
    pub(super) held: bool,
    /// The leg's media was started (at answer or with early media): its quality is
    /// reported to call control when it ends.
    media_started: bool,
    /// Early media runs on the leg (183 with SDP sent or received) before the answer.
    early: bool,
    /// We sent our offer in a 2xx (late offer: INVITE or re-INVITE without SDP); the
    /// answer comes in the ACK.
    answer_in_ack: bool,
    /// What the media engine's inactivity timer watches on this leg
    /// ([`SipEndpoint::sync_media_watch`]).
    watch: Watch,
    /// The local phone's extension on this leg (its login on an incoming leg, the
    /// extension rung on an outgoing one); `None` for trunk legs.
    pub(super) extension: Option<String>,
    /// A REFER's subscription in progress: the REFER's CSeq (its `Event` id).
    pub(super) refer: Option<u32>,
    /// RFC 4028 session timer of the answered leg ([`super::session`]).
    pub(super) session: Option<super::session::LegSession>,
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
}

impl Leg {
    /// Our Contact on this leg's dialog.
    pub(super) fn local_contact(&self) -> Option<rsip::Uri> {
        self.incoming
            .as_ref()
            .map(|i| i.local_contact.clone())
            .or_else(|| {
                self.outgoing
                    .as_ref()
                    .and_then(|o| o.forks.first())
                    .map(|f| f.local_contact.clone())
            })
    }

    pub(super) fn local_media(&mut self, direction: Direction, bump: bool) -> LocalMedia {
        if bump {
            self.session_version += 1;
        }
        LocalMedia {
            session_id: self.session_id,
            session_version: self.session_version,
            rtp: self.local_rtp,
            direction,
            ptime_ms: self.remote.map_or(20, |r| r.ptime_ms),
        }
    }
}

fn end_reason_status(reason: EndReason) -> u16 {
    match reason {
        EndReason::Normal => 487,
        EndReason::Busy => 486,
        EndReason::NoAnswer => 480,
        EndReason::Unallocated => 404,
        EndReason::Congestion => 503,
        EndReason::Forbidden => 403,
    }
}

fn reason_of_failure(code: u16, trunk: bool) -> EndReason {
    match code {
        486 | 600 => EndReason::Busy,
        404 | 484 | 604 => EndReason::Unallocated,
        _ if trunk => EndReason::Congestion,
        403 | 603 => EndReason::Forbidden,
        408 | 480 | 487 => EndReason::NoAnswer,
        _ => EndReason::Congestion,
    }
}

fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType(rsip::headers::ContentType::new(
        "application/sdp",
    ))]
}

impl SipEndpoint {
    pub(super) fn input(&self, input: SipInput) {
        tracing::debug!(?input, "sip -> call control");
        if self.inputs.send(input).is_err() {
            tracing::warn!("call control is gone; SIP input dropped");
        }
    }

    fn local_contact(&self, peer: Peer) -> rsip::Uri {
        let hp = self.local_hostport(peer);
        let transport = match peer.transport {
            transaction::TransportKind::Udp => "",
            transaction::TransportKind::Tcp => ";transport=tcp",
            transaction::TransportKind::Tls => ";transport=tls",
        };
        let text = format!("sip:branchline@{hp}{transport}");
        rsip::Uri::try_from(text.as_str()).unwrap_or_else(|_| rsip::Uri {
            scheme: Some(rsip::Scheme::Sip),
            host_with_port: rsip::HostWithPort::from(hp),
            ..Default::default()
        })
    }

    fn is_trunk_source(&self, ip: IpAddr) -> bool {
        self.trunk.as_ref().is_some_and(|t| wire::ip_in(ip, &t.ips))
    }

    /// A new INVITE outside any dialog (see the module doc).
    pub(super) async fn on_invite(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        source: Peer,
    ) {
        let reject = |this: &mut Self, code: u16| {
            let response = transaction::response_for(&request, code.into(), None);
            this.respond(now, &key, response);
        };
        let from = wire::from_value(&request.headers).unwrap_or_default();
        let trunk = self.is_trunk_source(source.addr.ip());
        let requested = request.uri.user().unwrap_or("").to_owned();
        let (origin, caller_number, caller_name, dialled) = if trunk {
            let dialled = match self.trunk.as_ref().and_then(|t| t.did.as_ref()) {
                Some(did) => {
                    let called = branchline_sip::trunk::did::called_number(&request)
                        .unwrap_or_else(|| requested.clone());
                    match did.route(&called) {
                        Ok(ext) => ext,
                        Err(e) => {
                            tracing::info!(called, error = %e, "trunk call without DID route");
                            reject(self, 404);
                            return;
                        }
                    }
                }
                None => requested.clone(),
            };
            let pai = wire::header(&request.headers, "P-Asserted-Identity");
            let number = pai
                .and_then(wire::user_of_name_addr)
                .or_else(|| wire::user_of_name_addr(&from))
                .unwrap_or_default();
            let name = pai
                .and_then(wire::display_name)
                .or_else(|| wire::display_name(&from))
                .unwrap_or_default();
            (SipOrigin::Trunk, number, name, dialled)
        } else {
            let Some(extension) = self.authenticate(now, &key, &request, source) else {
                return;
            };
            // Phones escape `#` (and may escape `*`) in the number dialled: feature
            // codes and IVR-style numbers end in `#`.
            let requested = match super::refer::percent_decode(&requested) {
                Ok(number) => number,
                Err(e) => {
                    tracing::info!(extension, error = %e, "INVITE with a malformed number refused");
                    reject(self, 400);
                    return;
                }
            };
            if let Some(prefix) = self.settings.outside_line_prefix.clone() {
                if let Some(number) = requested.strip_prefix(prefix.as_str()) {
                    if !number.is_empty() {
                        let allowed = self.toll_classes(&extension);
                        let verdict =
                            branchline_sip::guard::toll::check_dialled(&self.plan, number, allowed);
                        if let Verdict::Reject(r) = verdict {
                            tracing::warn!(extension, number, reason = ?r.reason, "outside call refused (toll restriction)");
                            let response =
                                transaction::response_for(&request, r.status_code(), None);
                            self.respond(now, &key, response);
                            return;
                        }
                    }
                }
            }
            let name = wire::display_name(&from)
                .or_else(|| {
                    self.settings
                        .accounts
                        .iter()
                        .find(|a| a.extension == extension)
                        .map(|a| a.name.clone())
                })
                .unwrap_or_default();
            (
                SipOrigin::Extension(extension.clone()),
                extension,
                name,
                requested,
            )
        };
        // RFC 3891: an INVITE that replaces a dialog of the box (a phone picking up a
        // call another phone of the same account or a transferor handed over).
        let replaces = match wire::header(&request.headers, "Replaces") {
            None => None,
            Some(value) => {
                let found = super::refer::parse_replaces(value)
                    .ok()
                    .and_then(|r| self.leg_of_replaces(&r));
                match found {
                    Some(old) if !trunk => Some(old),
                    Some(_) => {
                        tracing::info!(source = %source.addr, "INVITE with Replaces from the trunk refused");
                        reject(self, 403);
                        return;
                    }
                    None => {
                        tracing::info!(source = %source.addr, replaces = value, "INVITE with Replaces for an unknown dialog");
                        reject(self, 481);
                        return;
                    }
                }
            }
        };
        // RFC 3261 8.2.2.3: an option the box does not support in `Require` (it
        // supports `100rel`, RFC 3262) refuses the INVITE.
        let unsupported = unsupported_requirements(&request, self.session_timers_on());
        if !unsupported.is_empty() {
            tracing::info!(source = %source.addr, ?unsupported, "INVITE refused: 420");
            let mut response = transaction::response_for(&request, 420u16.into(), None);
            response
                .headers
                .push(Header::Unsupported(rsip::headers::Unsupported::new(
                    unsupported.join(", "),
                )));
            self.respond(now, &key, response);
            return;
        }
        // RFC 4028: a Session-Expires below our Min-SE gets 422, an unreadable one 400.
        let session = match self.session_decision(&request) {
            super::session::Decision::Refuse(response) => {
                tracing::info!(source = %source.addr, status = response.status_code.code(), "INVITE refused: session timer");
                self.respond(now, &key, response);
                return;
            }
            super::session::Decision::Answer { headers, timer } => (headers, timer),
        };
        let counted = if trunk {
            None
        } else {
            match self.guard.dialog_started(now, source.addr.ip()) {
                Verdict::Allow => Some(source.addr.ip()),
                _ => {
                    reject(self, 503);
                    return;
                }
            }
        };
        let release = |this: &mut Self| {
            if let Some(ip) = counted {
                this.guard.dialog_ended(ip);
            }
        };
        // An INVITE without a body is a late offer (RFC 3261 13.2.1): the box makes
        // the offer in its 200 and takes the answer from the ACK.
        let offer = match sdp::negotiate(&request.body) {
            _ if request.body.is_empty() => None,
            Ok(o) => Some(o),
            Err(e) => {
                tracing::info!(source = %source.addr, error = %e, "INVITE refused: 488");
                let mut response = transaction::response_for(&request, 488u16.into(), None);
                response.headers.push(Header::Other(
                    "Warning".into(),
                    "304 branchline \"Media type not available\"".into(),
                ));
                self.respond(now, &key, response);
                release(self);
                return;
            }
        };
        let extension = match &origin {
            SipOrigin::Extension(ext) => Some(ext.clone()),
            SipOrigin::Trunk => None,
        };
        let leg = LegId(self.next_in_leg);
        self.next_in_leg += 1;
        let local_rtp = match self.media.open_leg(leg).await {
            Ok(a) => a,
            Err(e) => {
                // Overload (every port pair leased): refuse at once, before anything
                // rings, and tell the caller when to try again (RFC 3261 21.5.4), rather
                // than let the call wait and time out.
                tracing::warn!(%leg, error = %e, "no RTP ports for an incoming call: 503");
                let mut response = transaction::response_for(&request, 503u16.into(), None);
                response
                    .headers
                    .push(Header::RetryAfter(rsip::headers::RetryAfter::new(
                        OVERLOAD_RETRY_AFTER_S.to_string(),
                    )));
                self.respond(now, &key, response);
                release(self);
                return;
            }
        };
        let trying = transaction::response_for(&request, 100u16.into(), None);
        self.respond(now, &key, trying);
        let sip_call_id = transaction::call_id(&request.headers).unwrap_or_default();
        let local_contact = self.local_contact(source);
        let latch = !trunk || self.trunk.as_ref().is_some_and(|t| t.config.latch_rtp);
        let session_id = self.next_random() >> 1;
        let rel100 = Rel100::of(&request);
        tracing::info!(%leg, source = %source.addr, caller = caller_number, dialled, sip_call_id, late_offer = offer.is_none(), ?rel100, "incoming sip call");
        self.by_server.insert(key.clone(), leg);
        self.legs.insert(
            leg,
            Leg {
                sip_call_id: sip_call_id.clone(),
                state: LegState::Offering,
                local_rtp,
                remote: offer,
                latch,
                session_id,
                session_version: 1,
                dialog: None,
                held: false,
                media_started: false,
                early: false,
                answer_in_ack: false,
                watch: Watch::Off,
                extension,
                refer: None,
                session: None,
                incoming: Some(Incoming {
                    server: key,
                    invite: request,
                    source,
                    local_contact,
                    offer,
                    counted,
                    rel100,
                    early_dialog: None,
                    prack: None,
                    offer_answered_early: false,
                    session,
                }),
                outgoing: None,
            },
        );
        self.input(SipInput::Incoming {
            leg,
            origin,
            caller_number,
            caller_name,
            dialled,
            sip_call_id,
            replaces,
        });
    }

    /// Answers the INVITE of incoming leg `leg` with `status` (and a body), sent as
    /// `delivery` says. A reliable 1xx (RFC 3262: the dialog layer adds `Require:
    /// 100rel` and `RSeq` and resends it until the PRACK) is remembered in the leg's
    /// [`AwaitingPrack`]; a final response forgets it.
    fn answer_incoming(
        &mut self,
        now: Instant,
        leg: LegId,
        status: u16,
        body: Vec<u8>,
        delivery: Delivery,
    ) -> bool {
        let Some(l) = self.legs.get(&leg) else {
            return false;
        };
        let Some(inc) = l.incoming.as_ref() else {
            return false;
        };
        let mut extra = if body.is_empty() {
            Vec::new()
        } else {
            sdp_headers()
        };
        if let Delivery::Warning(warning) = delivery {
            extra.push(Header::Other("Warning".into(), warning.into()));
        }
        let session = if (200..300).contains(&status) {
            extra.extend(inc.session.0.iter().cloned());
            inc.session.1
        } else {
            None
        };
        let sdp = !body.is_empty();
        let reliable = matches!(delivery, Delivery::Reliable | Delivery::ReliableOffer);
        let offer = delivery == Delivery::ReliableOffer;
        let result = self.dialogs.answer_invite(
            now,
            &inc.server,
            &inc.invite,
            inc.source,
            status,
            &inc.local_contact,
            extra,
            body,
            reliable,
        );
        let server = inc.server.clone();
        match result {
            Ok(response) => {
                let id = match (
                    transaction::call_id(&response.headers),
                    transaction::from_tag(&response.headers),
                    transaction::to_tag(&response.headers),
                ) {
                    (Ok(call_id), Ok(Some(remote)), Ok(Some(local))) => Some(DialogId {
                        call_id,
                        local_tag: local,
                        remote_tag: remote,
                    }),
                    _ => None,
                };
                if let (true, Some(id)) = ((200..300).contains(&status), id.clone()) {
                    tracing::debug!(%leg, dialog = %id, "incoming leg answered");
                    self.by_dialog.insert(id.clone(), leg);
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.dialog = Some(id);
                    }
                    if session.is_some() {
                        let allow = self
                            .legs
                            .get(&leg)
                            .and_then(|l| l.incoming.as_ref())
                            .map(|i| i.invite.headers.clone());
                        self.set_session(now, leg, session, allow.as_ref());
                    }
                }
                if let Some(inc) = self.legs.get_mut(&leg).and_then(|l| l.incoming.as_mut()) {
                    if status >= 200 {
                        inc.prack = None;
                    } else {
                        if inc.early_dialog.is_none() {
                            inc.early_dialog = id;
                        }
                        if reliable {
                            inc.prack = Some(AwaitingPrack {
                                offer,
                                sdp,
                                ..AwaitingPrack::default()
                            });
                        }
                    }
                }
                self.respond(now, &server, response);
                true
            }
            Err(e) => {
                tracing::warn!(%leg, status, reliable, error = %e, "INVITE not answered");
                false
            }
        }
    }

    /// The leg whose INVITE an early dialog of ours belongs to (a PRACK or BYE in it).
    fn leg_of_early_dialog(&self, id: &DialogId) -> Option<LegId> {
        self.legs.iter().find_map(|(leg, l)| {
            let inc = l.incoming.as_ref()?;
            (l.state == LegState::Offering && inc.early_dialog.as_ref() == Some(id)).then_some(*leg)
        })
    }

    /// Call control alerts the caller of incoming leg `leg`: `180`, or with
    /// `early_media` a `183` with SDP (the far end's early media, or queue music, is
    /// bridged to it):
    ///
    /// - caller with an offer: the 183 carries our answer and the leg's media starts;
    /// - late-offer caller that takes 100rel (`Supported` or `Require`): a reliable 183
    ///   carries our offer; the media starts from the answer in its PRACK
    ///   ([`Self::on_prack`]);
    /// - late-offer caller without 100rel: a plain `180` (an offer in an unreliable
    ///   1xx could not be answered).
    ///
    /// With `Require: 100rel` every 1xx is reliable; while one awaits its PRACK the
    /// next waits (RFC 3262 3) and goes out when the PRACK comes. No 180 follows a 183
    /// with SDP (it would stop the caller's early media).
    pub(super) async fn ringing(&mut self, now: Instant, leg: LegId, early_media: bool) {
        tracing::debug!(%leg, early_media, "ringing");
        let law = self.settings.law;
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.state != LegState::Offering || l.early {
            return;
        }
        let Some(inc) = l.incoming.as_mut() else {
            return;
        };
        if let Some(p) = inc.prack.as_mut() {
            p.early_media |= early_media;
            return;
        }
        let (offer, rel100) = (inc.offer, inc.rel100);
        let delivery = if rel100 == Rel100::Required {
            Delivery::Reliable
        } else {
            Delivery::Plain
        };
        match offer {
            Some(offer) if early_media => {
                let local = l.local_media(offer.direction.answer(), false);
                let body = sdp::build_answer(&local, &offer);
                if self.answer_incoming(now, leg, 183, body, delivery) {
                    let latch = self.legs.get(&leg).is_some_and(|l| l.latch);
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.early = true;
                    }
                    self.start_media(leg, &offer, latch).await;
                }
            }
            None if early_media && rel100 != Rel100::No => {
                let local = l.local_media(Direction::SendRecv, false);
                let body = sdp::build_offer(&local, law);
                if self.answer_incoming(now, leg, 183, body, Delivery::ReliableOffer) {
                    tracing::info!(%leg, "late offer: our offer in a reliable 183");
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.early = true;
                    }
                } else {
                    self.answer_incoming(now, leg, 180, Vec::new(), Delivery::Plain);
                }
            }
            _ => {
                self.answer_incoming(now, leg, 180, Vec::new(), delivery);
            }
        }
    }

    /// Call control answers incoming leg `leg`: `200` with our answer to the caller's
    /// offer; after a late offer with our offer (its answer comes in the ACK,
    /// [`Self::on_ack`]), or, when our offer went in a reliable 183 and its PRACK
    /// answered it, without SDP: the offer/answer exchange is complete (RFC 6337 3.1
    /// allows only an identical copy; the box sends none, which no UAC can take for
    /// a new offer). While a reliable 1xx with SDP awaits its PRACK the 200 waits for
    /// it (RFC 3262 3); a reliable 1xx without SDP needs no PRACK before the 200.
    pub(super) async fn answer(&mut self, now: Instant, leg: LegId) {
        let law = self.settings.law;
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.state != LegState::Offering {
            return;
        }
        let Some(inc) = l.incoming.as_mut() else {
            return;
        };
        if let Some(p) = inc.prack.as_mut().filter(|p| p.sdp) {
            tracing::info!(%leg, "answer waits for the PRACK of our reliable 183");
            p.answer = true;
            return;
        }
        let (offer, answered_early) = (inc.offer, inc.offer_answered_early);
        if answered_early {
            if !self.answer_incoming(now, leg, 200, Vec::new(), Delivery::Plain) {
                return;
            }
            if let Some(l) = self.legs.get_mut(&leg) {
                l.state = LegState::Answered;
                l.early = false;
            }
            return;
        }
        let Some(offer) = offer else {
            // Late offer: our offer in the 200, the answer in the ACK ([`Self::on_ack`]).
            let local = l.local_media(Direction::SendRecv, false);
            let body = sdp::build_offer(&local, law);
            if !self.answer_incoming(now, leg, 200, body, Delivery::Plain) {
                return;
            }
            if let Some(l) = self.legs.get_mut(&leg) {
                l.state = LegState::Answered;
                l.answer_in_ack = true;
            }
            return;
        };
        // After early media the 200 repeats the 183's answer (same session version).
        let local = l.local_media(offer.direction.answer(), false);
        let body = sdp::build_answer(&local, &offer);
        if !self.answer_incoming(now, leg, 200, body, Delivery::Plain) {
            return;
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.state = LegState::Answered;
        l.held = offer.direction.is_hold();
        let (latch, early) = (l.latch, l.early);
        l.early = false;
        if !early {
            self.start_media(leg, &offer, latch).await;
        }
    }

    /// The ACK of a 2xx on dialog `id`. After a late offer (ours in the 2xx) it carries
    /// the answer: the media starts from it; an ACK without a usable answer ends the
    /// leg with a BYE (RFC 3264 has no other way out).
    pub(super) async fn on_ack(&mut self, now: Instant, id: &DialogId, ack: &rsip::Request) {
        let Some(&leg) = self.by_dialog.get(id) else {
            return;
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if !l.answer_in_ack {
            return;
        }
        l.answer_in_ack = false;
        let answer = match sdp::negotiate(&ack.body) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%leg, error = %e, empty = ack.body.is_empty(), "ACK without a usable SDP answer to our offer: hanging up");
                self.send_bye(now, leg);
                self.end_leg(leg, Some(EndReason::Normal)).await;
                return;
            }
        };
        let held = answer.direction.is_hold();
        let media_changed = l.remote.is_none_or(|r| {
            r.rtp != answer.rtp || r.law != answer.law || r.payload_type != answer.payload_type
        });
        let hold_changed = held != l.held;
        l.held = held;
        l.remote = Some(answer);
        let latch = l.latch;
        tracing::info!(%leg, remote = %answer.rtp, "SDP answer in the ACK");
        if media_changed && !answer.rtp.ip().is_unspecified() {
            self.start_media(leg, &answer, latch).await;
        }
        if hold_changed {
            self.input(SipInput::Hold { leg, held });
        }
    }

    async fn start_media(&mut self, leg: LegId, remote: &RemoteMedia, latch: bool) {
        let media = LegMedia {
            law: remote.law,
            payload_type: remote.payload_type,
            telephone_event_pt: remote.telephone_event_pt,
            ptime_ms: remote.ptime_ms,
            latch,
        };
        if let Err(e) = self.media.start_leg(leg, remote.rtp, media).await {
            tracing::warn!(%leg, error = %e, "media not started");
            return;
        }
        let first = self.legs.get_mut(&leg).is_some_and(|l| {
            let first = !l.media_started;
            l.media_started = true;
            first
        });
        if first {
            self.input(SipInput::Media { leg });
        }
    }

    /// Tells the media engine which legs' media inactivity to watch (run after every
    /// event): a leg whose call is up (answered, media started, no answer still due
    /// in an ACK) is watched, with the hold timeout while the far end holds it
    /// (`sendonly`/`inactive`); a ringing leg, one with early media only (a queued
    /// caller hearing music may send nothing) or one ending is not. Only changes are
    /// sent; each restarts the engine's count, so a resumed leg gets a whole timeout.
    pub(super) fn sync_media_watch(&mut self) {
        for (&leg, l) in self.legs.iter_mut() {
            let want = match (l.state, l.media_started && !l.answer_in_ack, l.held) {
                (LegState::Answered, true, false) => Watch::Active,
                (LegState::Answered, true, true) => Watch::Held,
                _ => Watch::Off,
            };
            if want != l.watch {
                l.watch = want;
                self.media.watch_leg(leg, want);
            }
        }
    }

    /// Call control ends a leg.
    pub(super) async fn hangup(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        match (l.state, l.incoming.is_some()) {
            (LegState::Offering, true) => {
                self.answer_incoming(
                    now,
                    leg,
                    end_reason_status(reason),
                    Vec::new(),
                    Delivery::Plain,
                );
            }
            (LegState::Offering, false) => {
                let keys: Vec<ClientKey> = l
                    .outgoing
                    .iter()
                    .flat_map(|o| o.forks.iter())
                    .filter(|f| f.failed.is_none())
                    .map(|f| f.client.clone())
                    .collect();
                for k in keys {
                    if let Err(e) = self.tx.cancel(now, &k) {
                        tracing::debug!(%leg, error = %e, "fork not cancelled");
                    }
                }
            }
            (LegState::Answered, _) => self.send_bye(now, leg),
        }
        self.end_leg(leg, None).await;
    }

    fn send_bye(&mut self, now: Instant, leg: LegId) {
        let Some(id) = self.legs.get(&leg).and_then(|l| l.dialog.clone()) else {
            return;
        };
        self.bye_dialog(now, &id);
    }

    fn bye_dialog(&mut self, now: Instant, id: &DialogId) {
        match self
            .dialogs
            .send_request(now, id, Method::Bye, Vec::new(), Vec::new())
        {
            Ok((request, peer)) => {
                if let Err(e) = self.tx.send_request(now, request, peer) {
                    tracing::debug!(error = %e, "BYE not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "BYE not built"),
        }
    }

    /// Forgets a leg, closes its media, logs its quality; tells call control when
    /// `reason` is given.
    async fn end_leg(&mut self, leg: LegId, reason: Option<EndReason>) {
        let Some(l) = self.legs.remove(&leg) else {
            return;
        };
        self.drop_session(leg, &l);
        if let Some(inc) = &l.incoming {
            self.by_server.remove(&inc.server);
            if let Some(ip) = inc.counted {
                self.guard.dialog_ended(ip);
            }
        }
        if let Some(id) = &l.dialog {
            self.by_dialog.remove(id);
        }
        if let Some(o) = &l.outgoing {
            let forget_at = Instant::now() + self.tx.config().timers.t1x64();
            for f in &o.forks {
                if let (Ok(call_id), Ok(Some(tag))) = (
                    transaction::call_id(&f.invite.headers),
                    transaction::from_tag(&f.invite.headers),
                ) {
                    self.invites_ended.push_back((forget_at, (call_id, tag)));
                }
            }
        }
        let quality = self.media.close_leg(leg).await;
        match quality {
            Some(q) => {
                tracing::info!(%leg, sip_call_id = l.sip_call_id, quality = ?q, "sip leg ended")
            }
            None => {
                tracing::info!(%leg, sip_call_id = l.sip_call_id, "sip leg ended (no RTP received)")
            }
        }
        if l.media_started {
            // Before `Ended`: the CDR that the end completes finds it there.
            self.input(SipInput::Quality {
                leg,
                quality: quality.and_then(|q| cdr_quality(&q)),
            });
        }
        if let Some(reason) = reason {
            self.input(SipInput::Ended { leg, reason });
        }
    }

    pub(super) async fn on_cancelled(&mut self, now: Instant, invite: &ServerKey) {
        let Some(&leg) = self.by_server.get(invite) else {
            return;
        };
        if self
            .legs
            .get(&leg)
            .is_some_and(|l| l.state == LegState::Offering)
        {
            self.answer_incoming(now, leg, 487, Vec::new(), Delivery::Plain);
            tracing::info!(%leg, "caller cancelled");
            self.end_leg(leg, Some(EndReason::Normal)).await;
        }
    }

    pub(super) async fn on_in_dialog(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        source: Peer,
        id: DialogId,
    ) {
        let leg = self
            .by_dialog
            .get(&id)
            .copied()
            .or_else(|| self.leg_of_early_dialog(&id));
        let ok = transaction::response_for(&request, 200u16.into(), None);
        match request.method {
            Method::Bye => {
                self.respond(now, &key, ok);
                if let Some(leg) = leg {
                    tracing::info!(%leg, "far end hung up");
                    if self
                        .legs
                        .get(&leg)
                        .is_some_and(|l| l.state == LegState::Offering && l.incoming.is_some())
                    {
                        // A caller's BYE in the early dialog (RFC 3261 15.1.2): the
                        // INVITE gets 487.
                        self.answer_incoming(now, leg, 487, Vec::new(), Delivery::Plain);
                    }
                    self.end_leg(leg, Some(EndReason::Normal)).await;
                }
            }
            Method::PRack => self.on_prack(now, key, request, leg).await,
            Method::Invite => self.on_reinvite(now, key, request, source, leg).await,
            Method::Info => {
                self.respond(now, &key, ok);
                if let (Some(leg), Some(digit)) = (leg, dtmf_relay_digit(&request)) {
                    self.input(SipInput::Digit { leg, digit });
                }
            }
            Method::Refer => self.on_refer(now, key, request, leg),
            Method::Update => {
                // An UPDATE refreshes the session (RFC 4028) once the call is up.
                let answered = leg.filter(|l| {
                    self.legs
                        .get(l)
                        .is_some_and(|l| l.state == LegState::Answered)
                });
                match (answered, self.session_decision(&request)) {
                    (_, super::session::Decision::Refuse(response)) => {
                        self.respond(now, &key, response)
                    }
                    (Some(leg), super::session::Decision::Answer { headers, timer }) => {
                        let mut ok = ok;
                        for h in headers {
                            ok.headers.push(h);
                        }
                        self.respond(now, &key, ok);
                        if self.session_timers_on() {
                            self.set_session(now, leg, timer, Some(&request.headers));
                        }
                    }
                    (None, _) => self.respond(now, &key, ok),
                }
            }
            _ => self.respond(now, &key, ok),
        }
    }

    async fn on_reinvite(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        source: Peer,
        leg: Option<LegId>,
    ) {
        let answer = |this: &mut Self, status: u16, body: Vec<u8>, contact: rsip::Uri| {
            let extra = if body.is_empty() {
                Vec::new()
            } else {
                sdp_headers()
            };
            match this.dialogs.answer_invite(
                now, &key, &request, source, status, &contact, extra, body, false,
            ) {
                Ok(r) => this.respond(now, &key, r),
                Err(e) => tracing::debug!(error = %e, "re-INVITE not answered"),
            }
        };
        let contact = self.local_contact(source);
        let Some(leg) = leg else {
            answer(self, 481, Vec::new(), contact);
            return;
        };
        // A re-INVITE refreshes the session (RFC 4028): negotiated like an INVITE.
        let (session_headers, timer) = match self.session_decision(&request) {
            super::session::Decision::Refuse(response) => {
                self.respond(now, &key, response);
                return;
            }
            super::session::Decision::Answer { headers, timer } => (headers, timer),
        };
        let answer = |this: &mut Self, status: u16, body: Vec<u8>, contact: rsip::Uri| {
            let mut extra = if body.is_empty() {
                Vec::new()
            } else {
                sdp_headers()
            };
            if status == 200 {
                extra.extend(session_headers.iter().cloned());
            }
            match this.dialogs.answer_invite(
                now, &key, &request, source, status, &contact, extra, body, false,
            ) {
                Ok(r) => {
                    this.respond(now, &key, r);
                    if status == 200 && this.session_timers_on() {
                        this.set_session(now, leg, timer, Some(&request.headers));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "re-INVITE not answered"),
            }
        };
        if request.body.is_empty() {
            // A re-INVITE without SDP (a late offer, e.g. a session refresh): our
            // current offer in the 200, the answer in the ACK ([`Self::on_ack`]).
            let law = self.settings.law;
            let Some(l) = self.legs.get_mut(&leg) else {
                answer(self, 481, Vec::new(), contact);
                return;
            };
            let local = l.local_media(Direction::SendRecv, true);
            let body = match l.remote {
                Some(r) => sdp::build_offer(&local, r.law),
                None => sdp::build_offer(&local, law),
            };
            l.answer_in_ack = true;
            answer(self, 200, body, contact);
            return;
        }
        let offer = match sdp::negotiate(&request.body) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(%leg, error = %e, "re-INVITE refused: 488");
                answer(self, 488, Vec::new(), contact);
                return;
            }
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            answer(self, 481, Vec::new(), contact);
            return;
        };
        let media_changed = l.remote.is_none_or(|r| {
            r.rtp != offer.rtp || r.law != offer.law || r.payload_type != offer.payload_type
        });
        let held = offer.direction.is_hold();
        let hold_changed = held != l.held;
        l.held = held;
        l.remote = Some(offer);
        let latch = l.latch;
        let local = l.local_media(offer.direction.answer(), true);
        let body = sdp::build_answer(&local, &offer);
        answer(self, 200, body, contact);
        if media_changed && !offer.rtp.ip().is_unspecified() {
            self.start_media(leg, &offer, latch).await;
        }
        if hold_changed {
            tracing::info!(%leg, held, "far end hold");
            self.input(SipInput::Hold { leg, held });
        }
    }

    /// A PRACK for our reliable 1xx on `leg` (the dialog layer matched its RAck and
    /// stopped the retransmission). After our offer it must carry the answer: the
    /// media starts from it, as after a caller's offer. Without an answer, or with one
    /// the box cannot use (no PCMU/PCMA), the offer/answer exchange failed; an answer
    /// cannot be refused (RFC 3264 5: the offerer may only start again or end the
    /// session), so the PRACK gets its `200` and the INVITE `488` with a `Warning`
    /// (RFC 3261 21.4.26), the leg ends and call control drops the far end. Then what
    /// waited for the PRACK goes out: the answer, else a 183 with early media.
    async fn on_prack(
        &mut self,
        now: Instant,
        key: ServerKey,
        request: rsip::Request,
        leg: Option<LegId>,
    ) {
        let ok = transaction::response_for(&request, 200u16.into(), None);
        self.respond(now, &key, ok);
        let Some(leg) = leg else {
            return;
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(p) = l.incoming.as_mut().and_then(|i| i.prack.take()) else {
            return;
        };
        tracing::debug!(%leg, offer = p.offer, "PRACK for our reliable 1xx");
        if p.offer {
            let answer = match sdp::negotiate(&request.body) {
                Ok(a) => a,
                Err(e) => {
                    let missing = request.body.is_empty();
                    tracing::warn!(%leg, error = %e, missing, "PRACK without a usable SDP answer to our offer: 488");
                    let warning = if missing {
                        "399 branchline \"No SDP answer in the PRACK\""
                    } else {
                        "305 branchline \"Incompatible media format\""
                    };
                    self.answer_incoming(now, leg, 488, Vec::new(), Delivery::Warning(warning));
                    self.end_leg(leg, Some(EndReason::Normal)).await;
                    return;
                }
            };
            l.remote = Some(answer);
            l.held = answer.direction.is_hold();
            let latch = l.latch;
            if let Some(inc) = l.incoming.as_mut() {
                inc.offer_answered_early = true;
            }
            tracing::info!(%leg, remote = %answer.rtp, "SDP answer in the PRACK");
            if !answer.rtp.ip().is_unspecified() {
                self.start_media(leg, &answer, latch).await;
            }
        } else if !request.body.is_empty() {
            tracing::info!(%leg, "SDP in a PRACK not taken (an offer there is not supported)");
        }
        if p.answer {
            self.answer(now, leg).await;
        } else if p.early_media {
            self.ringing(now, leg, true).await;
        }
    }

    pub(super) async fn on_dialog_event(&mut self, now: Instant, ev: DialogEvent) {
        if let DialogEvent::PrackTimeout { id, server } = &ev {
            // RFC 3262 3: a reliable 1xx never PRACKed ends the INVITE with a 5xx.
            let Some(&leg) = self.by_server.get(server) else {
                return;
            };
            tracing::warn!(%leg, dialog = %id, "no PRACK for our reliable 1xx: 500");
            self.answer_incoming(now, leg, 500, Vec::new(), Delivery::Plain);
            self.end_leg(leg, Some(EndReason::Normal)).await;
            return;
        }
        if let DialogEvent::Terminated { id, reason } = ev {
            tracing::debug!(dialog = %id, ?reason, "sip dialog ended");
            let Some(&leg) = self.by_dialog.get(&id) else {
                return;
            };
            use branchline_sip::dialog::EndReason as D;
            if matches!(reason, D::NoAck | D::RequestFailed(_)) {
                tracing::info!(%leg, ?reason, "sip dialog failed");
                self.end_leg(leg, Some(EndReason::Normal)).await;
            }
        }
    }

    // ----- outgoing legs -----

    pub(super) async fn dial(
        &mut self,
        now: Instant,
        leg: LegId,
        target: SipTarget,
        caller_number: String,
        caller_name: String,
        sip_call_id: String,
    ) {
        let domain = self.settings.sip.domain.clone();
        // (peer, request-URI, From without tag, To, extra headers) per fork.
        let mut plans: Vec<(Peer, rsip::Uri, String, String, Vec<Header>)> = Vec::new();
        let trunk_leg = matches!(target, SipTarget::Trunk(_));
        let name = if caller_name.is_empty() {
            String::new()
        } else {
            format!(
                "{} ",
                branchline_sip::trunk::identity::quote_display_name(&caller_name)
            )
        };
        match &target {
            SipTarget::Extension(ext) => {
                if self.registrar.account(ext).is_none() {
                    tracing::info!(%leg, extension = ext, "no SIP account for the extension");
                    self.input(SipInput::Ended {
                        leg,
                        reason: EndReason::Unallocated,
                    });
                    return;
                }
                let bindings: Vec<_> = self
                    .registrar
                    .lookup(now, ext)
                    .into_iter()
                    .map(|b| (b.uri().clone(), b.flow))
                    .collect();
                if bindings.is_empty() {
                    tracing::info!(%leg, extension = ext, "SIP extension not registered");
                    self.input(SipInput::Ended {
                        leg,
                        reason: EndReason::NoAnswer,
                    });
                    return;
                }
                for (uri, flow) in bindings {
                    let peer = wire::peer(flow.peer, flow.transport);
                    plans.push((
                        peer,
                        uri,
                        format!("{name}<sip:{caller_number}@{domain}>"),
                        format!("<sip:{ext}@{domain}>"),
                        Vec::new(),
                    ));
                }
            }
            SipTarget::Trunk(number) => {
                let Some(t) = self.trunk.as_ref() else {
                    self.input(SipInput::Ended {
                        leg,
                        reason: EndReason::Congestion,
                    });
                    return;
                };
                let target = t
                    .registration
                    .as_ref()
                    .and_then(|r| r.active_target())
                    .map(|tg| wire::peer(tg.addr, tg.transport))
                    .or_else(|| {
                        // Without registration: the first numeric server.
                        t.config.servers.iter().find_map(|s| {
                            s.ip().map(|ip| {
                                wire::peer(
                                    SocketAddr::new(
                                        ip,
                                        s.port.unwrap_or(
                                            branchline_sip::trunk::resolve::default_port(
                                                s.transport,
                                            ),
                                        ),
                                    ),
                                    s.transport,
                                )
                            })
                        })
                    });
                let Some(peer) = target else {
                    tracing::info!(%leg, "trunk not registered: outside call falls back");
                    self.input(SipInput::Ended {
                        leg,
                        reason: EndReason::Congestion,
                    });
                    return;
                };
                let identity = outbound_identity(
                    &t.config.caller_id,
                    &caller_number,
                    (!caller_name.is_empty()).then_some(caller_name.as_str()),
                    Presentation::Allowed,
                    &t.config.domain,
                );
                let (from, extra) = match identity {
                    Ok(id) => (id.from.value().to_owned(), vec![id.p_asserted_identity]),
                    Err(e)
                        if t.config.caller_id.rules.is_empty()
                            && t.config.caller_id.default.is_none() =>
                    {
                        // No rules configured: present the trunk account's number.
                        tracing::debug!(error = %e, "no caller-ID rules; presenting the account");
                        (
                            format!("{name}<sip:{}@{}>", t.config.username, t.config.domain),
                            Vec::new(),
                        )
                    }
                    Err(e) => {
                        tracing::warn!(%leg, error = %e, "outside call refused: no caller ID");
                        self.input(SipInput::Ended {
                            leg,
                            reason: EndReason::Congestion,
                        });
                        return;
                    }
                };
                let uri_text = format!("sip:{number}@{}", t.config.domain);
                let Ok(uri) = rsip::Uri::try_from(uri_text.as_str()) else {
                    self.input(SipInput::Ended {
                        leg,
                        reason: EndReason::Unallocated,
                    });
                    return;
                };
                plans.push((peer, uri, from, format!("<{uri_text}>"), extra));
            }
        }
        let local_rtp = match self.media.open_leg(leg).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(%leg, error = %e, "no RTP ports for an outgoing call");
                self.input(SipInput::Ended {
                    leg,
                    reason: EndReason::Congestion,
                });
                return;
            }
        };
        let session_id = self.next_random() >> 1;
        let offer = sdp::build_offer(
            &LocalMedia {
                session_id,
                session_version: 1,
                rtp: local_rtp,
                direction: Direction::SendRecv,
                ptime_ms: 20,
            },
            self.settings.law,
        );
        let mut forks = Vec::new();
        // RFC 4028 7.1: Supported: timer, Session-Expires (the UAS picks the
        // refresher) and Min-SE when not the default.
        let proposal = self.settings.sip.session_timer.map(Proposal::new);
        for (peer, uri, from, to, mut extra) in plans {
            extra.extend(proposal.iter().flat_map(Proposal::headers));
            let tag = self.dialogs.new_tag();
            let contact = self.local_contact(peer);
            let invite = self.build_invite(
                peer,
                &uri,
                &from,
                &tag,
                &to,
                &sip_call_id,
                1,
                &contact,
                extra,
                offer.clone(),
            );
            if let Err(e) = self
                .dialogs
                .track_invite(now, &invite, contact.clone(), peer)
            {
                tracing::warn!(%leg, error = %e, "INVITE not tracked");
                continue;
            }
            match self.tx.send_request(now, invite.clone(), peer) {
                Ok(client) => {
                    self.by_invite
                        .insert((sip_call_id.clone(), tag), (leg, forks.len()));
                    forks.push(Fork {
                        invite,
                        client,
                        peer,
                        local_contact: contact,
                        failed: None,
                        timer: proposal,
                    });
                }
                Err(e) => tracing::warn!(%leg, error = %e, "INVITE not sent"),
            }
        }
        if forks.is_empty() {
            self.media.close_leg(leg).await;
            self.input(SipInput::Ended {
                leg,
                reason: EndReason::Congestion,
            });
            return;
        }
        tracing::info!(%leg, ?target, forks = forks.len(), sip_call_id, "outgoing sip call");
        let latch = !trunk_leg || self.trunk.as_ref().is_some_and(|t| t.config.latch_rtp);
        self.legs.insert(
            leg,
            Leg {
                sip_call_id,
                state: LegState::Offering,
                local_rtp,
                remote: None,
                latch,
                session_id,
                session_version: 1,
                dialog: None,
                held: false,
                media_started: false,
                early: false,
                answer_in_ack: false,
                watch: Watch::Off,
                extension: match &target {
                    SipTarget::Extension(ext) => Some(ext.clone()),
                    SipTarget::Trunk(_) => None,
                },
                refer: None,
                session: None,
                incoming: None,
                outgoing: Some(Outgoing {
                    forks,
                    ringing_sent: false,
                    trunk: trunk_leg,
                    auth_answered: false,
                }),
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn build_invite(
        &mut self,
        peer: Peer,
        uri: &rsip::Uri,
        from: &str,
        tag: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        contact: &rsip::Uri,
        extra: Vec<Header>,
        body: Vec<u8>,
    ) -> rsip::Request {
        let branch = self.dialogs.new_branch();
        let local = self.local_hostport(peer);
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            wire::wire_kind(peer.transport).via_token()
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{from};tag={tag}"
        ))));
        headers.push(Header::To(rsip::headers::To::new(to.to_owned())));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            call_id.to_owned(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} INVITE"
        ))));
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{contact}>"
        ))));
        headers.push(Header::Allow(rsip::headers::Allow::new(
            branchline_sip::trunk::registration::ALLOW,
        )));
        headers.push(Header::UserAgent(rsip::headers::UserAgent::new(
            super::USER_AGENT,
        )));
        for h in extra {
            headers.push(h);
        }
        headers.push(Header::ContentType(rsip::headers::ContentType::new(
            "application/sdp",
        )));
        headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
            body.len() as u32,
        )));
        rsip::Request {
            method: Method::Invite,
            uri: uri.clone(),
            version: rsip::Version::V2,
            headers,
            body,
        }
    }

    /// Fork of a response: (leg, fork index) by Call-ID and From tag.
    fn fork_of(&self, response: &rsip::Response) -> Option<(LegId, usize)> {
        let call_id = transaction::call_id(&response.headers).ok()?;
        let tag = transaction::from_tag(&response.headers).ok()??;
        self.by_invite.get(&(call_id, tag)).copied()
    }

    pub(super) async fn on_leg_response(
        &mut self,
        now: Instant,
        key: Option<ClientKey>,
        response: rsip::Response,
    ) {
        use branchline_sip::dialog::ResponseDisposition;
        let disposition = match self.dialogs.on_response(now, &response) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "response not taken by the dialog layer");
                return;
            }
        };
        let Ok(cseq) = transaction::cseq(&response.headers) else {
            return;
        };
        let dialog = match disposition {
            ResponseDisposition::Absorb => return,
            ResponseDisposition::Pass(d) => d,
        };
        // The answer to our session refresh (UPDATE or re-INVITE), never a fork's.
        if let Some(id) = &dialog {
            if self.on_refresh_response(now, id, &response) {
                return;
            }
        }
        if cseq.method != Method::Invite {
            return; // BYE, CANCEL, INFO answers: nothing to do.
        }
        let code = response.status_code.code();
        let Some((leg, fork)) = self.fork_of(&response) else {
            // A re-INVITE answer, or a response for a leg long gone.
            return;
        };
        let live = self.legs.get(&leg).is_some_and(|l| l.outgoing.is_some());
        if !live {
            if (200..300).contains(&code) {
                if let Some(id) = dialog {
                    // Answered after the caller gave up: ACKed by the dialog layer; end it.
                    self.bye_dialog(now, &id);
                }
            }
            return;
        }
        // Only the current INVITE of the fork counts (not one replaced after a 401).
        let current = self
            .legs
            .get(&leg)
            .and_then(|l| l.outgoing.as_ref())
            .and_then(|o| o.forks.get(fork))
            .is_some_and(|f| key.as_ref().is_none_or(|k| *k == f.client));
        if !current && !(200..300).contains(&code) {
            return;
        }
        match code {
            // 100 Trying (a proxy such as Kamailio sends one for every INVITE it
            // relays) only stops retransmissions: never a failure of the fork.
            100..=199 => {
                if code >= 180 && !response.body.is_empty() {
                    self.early_media(leg, &response).await;
                }
                let Some(o) = self.legs.get_mut(&leg).and_then(|l| l.outgoing.as_mut()) else {
                    return;
                };
                if code >= 180 && !o.ringing_sent {
                    o.ringing_sent = true;
                    self.input(SipInput::Ringing { leg });
                }
            }
            200..=299 => {
                self.on_fork_answered(now, leg, fork, dialog, &response)
                    .await
            }
            401 | 407 => {
                let trunk = self
                    .legs
                    .get(&leg)
                    .and_then(|l| l.outgoing.as_ref())
                    .is_some_and(|o| o.trunk && !o.auth_answered);
                if trunk && self.reinvite_with_credentials(now, leg, fork, &response, code == 407) {
                    return;
                }
                self.fork_failed(leg, fork, code).await;
            }
            // RFC 4028 7.4: our interval is below the far end's Min-SE.
            422 => {
                if self.retry_too_small(now, leg, fork, &response) {
                    return;
                }
                self.fork_failed(leg, fork, code).await;
            }
            _ => self.fork_failed(leg, fork, code).await,
        }
    }

    /// A 18x with SDP on outgoing leg `leg`: the far end's early media. The first one
    /// starts the leg's media and goes to call control ([`SipInput::EarlyMedia`]); a
    /// later 18x (a 180 without SDP, or another 183) keeps it running. An SDP the box
    /// cannot use is ignored (the call rings as before).
    async fn early_media(&mut self, leg: LegId, response: &rsip::Response) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.early || l.state != LegState::Offering {
            return;
        }
        let remote = match sdp::negotiate(&response.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%leg, error = %e, "18x SDP not usable: no early media");
                return;
            }
        };
        l.early = true;
        l.remote = Some(remote);
        let latch = l.latch;
        tracing::info!(%leg, remote = %remote.rtp, "early media from the far end");
        self.start_media(leg, &remote, latch).await;
        self.input(SipInput::EarlyMedia { leg });
    }

    /// Re-sends a fork's INVITE with digest credentials (trunk legs, once).
    fn reinvite_with_credentials(
        &mut self,
        now: Instant,
        leg: LegId,
        fork: usize,
        response: &rsip::Response,
        proxy: bool,
    ) -> bool {
        let challenges = wire::challenges(response, proxy);
        let Some(l) = self.legs.get(&leg) else {
            return false;
        };
        let Some(f) = l.outgoing.as_ref().and_then(|o| o.forks.get(fork)) else {
            return false;
        };
        let old = f.invite.clone();
        let (peer, contact) = (f.peer, f.local_contact.clone());
        let uri = old.uri.to_string();
        let Some(trunk) = self.trunk.as_mut() else {
            return false;
        };
        let refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
        let credentials = match trunk.digest.authorize_best(&refs, "INVITE", &uri) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%leg, error = %e, "trunk challenge not answered");
                return false;
            }
        };
        let branch = self.dialogs.new_branch();
        let mut invite = match transaction::retry_request(&old, &branch) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(%leg, error = %e, "authenticated INVITE not built");
                return false;
            }
        };
        invite
            .headers
            .retain(|h| !matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)));
        if proxy {
            invite.headers.push(Header::ProxyAuthorization(
                rsip::headers::ProxyAuthorization::new(credentials),
            ));
        } else {
            invite
                .headers
                .push(Header::Authorization(rsip::headers::Authorization::new(
                    credentials,
                )));
        }
        if !self.resend_fork(
            now,
            leg,
            fork,
            invite,
            peer,
            contact,
            "authenticated INVITE",
        ) {
            return false;
        }
        if let Some(o) = self.legs.get_mut(&leg).and_then(|l| l.outgoing.as_mut()) {
            o.auth_answered = true;
        }
        true
    }

    /// Re-sends a fork's INVITE once after `422 Session Interval Too Small` (RFC 4028
    /// 7.4) with `Session-Expires` and `Min-SE` raised to the `422`'s `Min-SE`: the
    /// same Call-ID and From tag, the next CSeq. `false` (the fork fails with the 422)
    /// when the fork proposed no timer, on a second 422, or on a `Min-SE` that is
    /// missing, unreadable, not above the proposal or above a day.
    fn retry_too_small(
        &mut self,
        now: Instant,
        leg: LegId,
        fork: usize,
        response: &rsip::Response,
    ) -> bool {
        let Some(f) = self
            .legs
            .get(&leg)
            .and_then(|l| l.outgoing.as_ref())
            .and_then(|o| o.forks.get(fork))
        else {
            return false;
        };
        let Some(proposal) = f.timer else {
            tracing::warn!(%leg, "INVITE refused 422 though it proposed no session timer");
            return false;
        };
        let next = match proposal.after_too_small(session_timer::min_se_of(&response.headers)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%leg, error = %e, "INVITE refused 422: session interval not agreed, call failed");
                return false;
            }
        };
        let (old, peer, contact) = (f.invite.clone(), f.peer, f.local_contact.clone());
        let branch = self.dialogs.new_branch();
        let invite = match session_timer::retry_invite(&old, &branch, next) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(%leg, error = %e, "INVITE after 422 not built");
                return false;
            }
        };
        if !self.resend_fork(now, leg, fork, invite, peer, contact, "INVITE after 422") {
            return false;
        }
        if let Some(o) = self.legs.get_mut(&leg).and_then(|l| l.outgoing.as_mut()) {
            // The far end may challenge the new INVITE again (its nonce count moved
            // on): one more digest answer, bounded by the single 422 retry.
            o.auth_answered = false;
            if let Some(f) = o.forks.get_mut(fork) {
                f.timer = Some(next);
            }
        }
        tracing::info!(%leg, session_expires = next.session_expires, "INVITE refused 422: retried with the far end's Min-SE");
        true
    }

    /// Sends `invite`, the next attempt of a fork's INVITE, in a new transaction and
    /// makes it the fork's current one (its responses count, CANCEL goes to it).
    #[allow(clippy::too_many_arguments)]
    fn resend_fork(
        &mut self,
        now: Instant,
        leg: LegId,
        fork: usize,
        invite: rsip::Request,
        peer: Peer,
        contact: rsip::Uri,
        what: &str,
    ) -> bool {
        if let Err(e) = self.dialogs.track_invite(now, &invite, contact, peer) {
            tracing::warn!(%leg, error = %e, "{what} not tracked");
            return false;
        }
        match self.tx.send_request(now, invite.clone(), peer) {
            Ok(client) => {
                if let Some(f) = self
                    .legs
                    .get_mut(&leg)
                    .and_then(|l| l.outgoing.as_mut())
                    .and_then(|o| o.forks.get_mut(fork))
                {
                    f.invite = invite;
                    f.client = client;
                }
                true
            }
            Err(e) => {
                tracing::warn!(%leg, error = %e, "{what} not sent");
                false
            }
        }
    }

    async fn on_fork_answered(
        &mut self,
        now: Instant,
        leg: LegId,
        fork: usize,
        dialog: Option<DialogId>,
        response: &rsip::Response,
    ) {
        let Some(id) = dialog else {
            return;
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.state == LegState::Answered {
            if l.dialog.as_ref() != Some(&id) {
                // Another fork answered too: ACKed already; hang it up.
                self.bye_dialog(now, &id);
            }
            return;
        }
        l.state = LegState::Answered;
        l.dialog = Some(id.clone());
        self.by_dialog.insert(id.clone(), leg);
        // The session timer this fork proposed (RFC 4028), read with its 2xx below.
        let proposal = l
            .outgoing
            .as_ref()
            .and_then(|o| o.forks.get(fork))
            .and_then(|f| f.timer);
        let others: Vec<ClientKey> = l
            .outgoing
            .iter()
            .flat_map(|o| o.forks.iter().enumerate())
            .filter(|(i, f)| *i != fork && f.failed.is_none())
            .map(|(_, f)| f.client.clone())
            .collect();
        for k in others {
            let _ = self.tx.cancel(now, &k);
        }
        match sdp::negotiate(&response.body) {
            Ok(remote) => {
                let latch = l.latch;
                // The early media goes on unchanged when the 2xx repeats its SDP.
                let same = l.early
                    && l.remote.is_some_and(|r| {
                        r.rtp == remote.rtp
                            && r.law == remote.law
                            && r.payload_type == remote.payload_type
                            && r.telephone_event_pt == remote.telephone_event_pt
                    });
                l.early = false;
                l.remote = Some(remote);
                l.held = remote.direction.is_hold();
                if !same {
                    self.start_media(leg, &remote, latch).await;
                }
                tracing::info!(%leg, early_media_kept = same, "outgoing sip call answered");
                self.input(SipInput::Answered { leg });
                self.session_from_answer(now, leg, proposal, response);
            }
            Err(e) => {
                tracing::warn!(%leg, error = %e, "2xx without a usable SDP answer: hanging up");
                self.bye_dialog(now, &id);
                self.end_leg(leg, Some(EndReason::Congestion)).await;
            }
        }
    }

    async fn fork_failed(&mut self, leg: LegId, fork: usize, code: u16) {
        let Some(o) = self.legs.get_mut(&leg).and_then(|l| l.outgoing.as_mut()) else {
            return;
        };
        if let Some(f) = o.forks.get_mut(fork) {
            if f.failed.is_some() {
                return;
            }
            f.failed = Some(code);
        }
        if o.forks.iter().any(|f| f.failed.is_none()) {
            return;
        }
        let trunk = o.trunk;
        let codes: Vec<u16> = o.forks.iter().filter_map(|f| f.failed).collect();
        let reason = if codes.iter().any(|c| matches!(c, 486 | 600)) {
            EndReason::Busy
        } else {
            codes
                .first()
                .map_or(EndReason::Congestion, |c| reason_of_failure(*c, trunk))
        };
        let answered = self
            .legs
            .get(&leg)
            .is_some_and(|l| l.state == LegState::Answered);
        if !answered {
            tracing::info!(%leg, ?codes, ?reason, "outgoing sip call failed");
            self.end_leg(leg, Some(reason)).await;
        }
    }

    pub(super) async fn on_invite_failed(&mut self, now: Instant, client: &ClientKey) {
        let found = self.legs.iter().find_map(|(id, l)| {
            l.outgoing.as_ref().and_then(|o| {
                o.forks
                    .iter()
                    .position(|f| f.client == *client)
                    .map(|i| (*id, i, o.forks[i].invite.clone()))
            })
        });
        if let Some((leg, fork, invite)) = found {
            self.dialogs.on_invite_failed(now, &invite);
            self.fork_failed(leg, fork, 408).await;
        }
    }
}

/// A leg's RTP quality as the CDR stores it: loss and MOS clamped to their ranges;
/// `None` when a value is not a number (the CDR must stay valid JSON for HQ).
pub(super) fn cdr_quality(q: &branchline_media::rtcp::CallQuality) -> Option<CdrLegQuality> {
    if !(q.loss_percent.is_finite() && q.jitter_ms.is_finite() && q.mos.is_finite()) {
        return None;
    }
    Some(CdrLegQuality {
        loss_percent: q.loss_percent.clamp(0.0, 100.0),
        jitter_ms: q.jitter_ms.max(0.0),
        mos: q.mos.clamp(1.0, 5.0),
    })
}

/// The digit of an `application/dtmf-relay` INFO body (`Signal=5`).
fn dtmf_relay_digit(request: &rsip::Request) -> Option<char> {
    let ct = wire::header(&request.headers, "Content-Type")?;
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/dtmf-relay")
    {
        return None;
    }
    let body = std::str::from_utf8(&request.body).ok()?;
    body.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("signal") {
            return None;
        }
        let c = v.trim().chars().next()?.to_ascii_uppercase();
        matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(headers: &str) -> rsip::Request {
        let text = format!(
            "INVITE sip:101@branch.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:101@branch.test>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_bytes()).expect("INVITE parses")
    }

    #[test]
    fn rel100_is_read_from_supported_and_require() {
        assert_eq!(Rel100::of(&invite("")), Rel100::No);
        assert_eq!(
            Rel100::of(&invite("Supported: replaces, 100rel\r\n")),
            Rel100::Supported
        );
        assert_eq!(
            Rel100::of(&invite("Supported: timer\r\nRequire: 100REL\r\n")),
            Rel100::Required
        );
        // An option tag is a whole token: `100relx` is not 100rel.
        assert_eq!(Rel100::of(&invite("Supported: 100relx\r\n")), Rel100::No);
    }

    #[test]
    fn only_100rel_and_timer_while_on_may_be_required() {
        assert!(unsupported_requirements(&invite("Require: 100rel\r\n"), false).is_empty());
        assert!(unsupported_requirements(&invite("Supported: timer\r\n"), false).is_empty());
        let both = invite("Require: timer, 100rel\r\nRequire: precondition\r\n");
        // Session timers off: `timer` is refused with the rest.
        assert_eq!(
            unsupported_requirements(&both, false),
            vec!["timer".to_owned(), "precondition".to_owned()]
        );
        // On: only `precondition`.
        assert_eq!(
            unsupported_requirements(&both, true),
            vec!["precondition".to_owned()]
        );
    }
}
