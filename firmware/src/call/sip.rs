//! The interface between call control and the SIP endpoint: SIP call legs as parties.
//!
//! The box is a back-to-back user agent: every SIP call leg (a local SIP phone's
//! dialog, or a dialog with the trunk) is one party of a call, exactly like an FXS or
//! FXO port. The SIP endpoint (`crate::sip_endpoint`) owns the SIP side of a leg (its
//! transactions, dialog, SDP and RTP session) and tells call control what happened
//! with [`SipInput`]s; call control decides what the call does (ring a port, place a
//! second leg, bridge audio, write the CDR) and asks the endpoint to act on a leg with
//! the SIP variants of [`super::Output`]. Call control never sees SIP messages or SDP.
//!
//! Leg ids are allocated by whoever creates the leg: the endpoint for incoming legs
//! ([`SipInput::Incoming`]), call control for outgoing ones ([`super::Output::SipDial`])
//! from a disjoint range ([`LegId::is_outgoing`]), so neither has to ask the other.

use std::fmt;

/// One SIP call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegId(pub u64);

impl LegId {
    /// Bit set in the ids of legs call control places (outgoing legs).
    pub const OUTGOING: u64 = 1 << 63;

    /// Whether call control made this leg (an outgoing leg).
    pub fn is_outgoing(self) -> bool {
        self.0 & Self::OUTGOING != 0
    }
}

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_outgoing() {
            write!(f, "out-{}", self.0 & !Self::OUTGOING)
        } else {
            write!(f, "in-{}", self.0)
        }
    }
}

/// Where an incoming SIP leg comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipOrigin {
    /// A registered local SIP phone, authenticated as this extension.
    Extension(String),
    /// The SIP trunk (HQ or a carrier); the endpoint already mapped the DID.
    Trunk,
}

/// Where call control wants an outgoing leg to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipTarget {
    /// A local SIP phone: every registered contact of this extension is rung (forking).
    Extension(String),
    /// An outside number through the SIP trunk.
    Trunk(String),
}

/// Why a leg ends or is refused; the endpoint maps it to a SIP status or request
/// (486, 480, 404, 503, 487, BYE, CANCEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// Normal clearing (BYE after answer, CANCEL before).
    Normal,
    /// The callee is busy (486 Busy Here).
    Busy,
    /// Nobody answered in time (480 Temporarily Unavailable, or 408 from the far end).
    NoAnswer,
    /// The number does not exist (404 Not Found).
    Unallocated,
    /// No route or resource (503 Service Unavailable).
    Congestion,
    /// Refused by policy: blacklist, toll restriction (403 Forbidden).
    Forbidden,
}

/// What the SIP endpoint tells call control.
#[derive(Debug, Clone, PartialEq)]
pub enum SipInput {
    /// A new incoming call (an INVITE with an acceptable offer; the endpoint already
    /// answered 100 Trying). Call control answers with [`super::Output::SipRinging`],
    /// [`super::Output::SipAnswer`] or [`super::Output::SipHangup`].
    Incoming {
        /// The new leg.
        leg: LegId,
        /// Who is calling.
        origin: SipOrigin,
        /// Caller's number (From user part, or P-Asserted-Identity from the trunk).
        caller_number: String,
        /// Caller's display name, if any.
        caller_name: String,
        /// The number dialled (Request-URI user part, after DID mapping).
        dialled: String,
        /// The leg's SIP Call-ID (for the CDR).
        sip_call_id: String,
        /// The INVITE carried `Replaces` (RFC 3891) naming the dialog of this other
        /// leg (the endpoint found it): the new leg takes that leg's place in its
        /// call instead of calling `dialled`.
        replaces: Option<LegId>,
    },
    /// An outgoing leg is ringing at the far end (180/183).
    Ringing {
        /// The leg.
        leg: LegId,
    },
    /// An outgoing leg has early media: a 183 (or 180) with SDP, whose media the
    /// endpoint started. Call control bridges it to the caller instead of ringback.
    EarlyMedia {
        /// The leg.
        leg: LegId,
    },
    /// An outgoing leg was answered (2xx; the endpoint sent the ACK).
    Answered {
        /// The leg.
        leg: LegId,
    },
    /// The leg ended: the far end refused it, hung up, or it failed.
    Ended {
        /// The leg.
        leg: LegId,
        /// Why, as call control understands it.
        reason: EndReason,
    },
    /// A DTMF digit on the leg (RFC 4733, or SIP INFO).
    Digit {
        /// The leg.
        leg: LegId,
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
    },
    /// The far end put the leg on hold (`true`) or resumed it (`false`).
    Hold {
        /// The leg.
        leg: LegId,
        /// On hold.
        held: bool,
    },
    /// The leg's RTP session started (at answer, or with early media). When the leg
    /// ends the endpoint reports what it measured with [`SipInput::Quality`], and the
    /// CDR of the leg's call waits for that report (at most
    /// [`super::QUALITY_WAIT`]).
    Media {
        /// The leg.
        leg: LegId,
    },
    /// The call quality of what the leg received (RTP loss, jitter, MOS), sent once
    /// the leg's media is closed; `None` when no RTP arrived.
    Quality {
        /// The leg.
        leg: LegId,
        /// The measurement.
        quality: Option<crate::cdr::CdrLegQuality>,
    },
    /// The media engine heard nothing (no RTP, no RTCP) on the leg for the configured
    /// media inactivity timeout (`[media] rtp_timeout_s`, or `rtp_hold_timeout_s` while
    /// the far end holds the call): its far end vanished. Call control ends the leg
    /// (BYE) and its call as if it had hung up, with the CDR's `hangup_side` `system`
    /// and `hangup_cause` `media_timeout`.
    MediaTimeout {
        /// The silent leg.
        leg: LegId,
    },
    /// The leg's RFC 4028 session timer expired: the far end did not refresh the
    /// session in time, or refused our refresh. Call control ends the leg (BYE) and
    /// its call as for [`SipInput::MediaTimeout`], with `hangup_cause`
    /// `session_expired`.
    SessionExpired {
        /// The leg whose session expired.
        leg: LegId,
    },
    /// A local phone asked (REFER, RFC 3515) to transfer the party it talks to on
    /// `leg`. The endpoint accepted the REFER (`202`, `NOTIFY 100 Trying`) and checked
    /// the referrer may dial the number; call control reports the outcome with
    /// [`super::Output::SipTransferStatus`].
    Transfer {
        /// The transferor's leg (the dialog the REFER came in).
        leg: LegId,
        /// Where to.
        target: TransferTarget,
    },
}

/// Where a REFER transfers the transferor's peer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// Blind transfer: the number of the Refer-To URI (an extension, or an outside
    /// number with the outside-line prefix).
    Number(String),
    /// Attended transfer: Refer-To with `Replaces` naming another leg of the
    /// transferor; the peers of both legs are bridged and both legs end.
    Replaces(LegId),
}

/// One end of an audio bridge: an analog port or a SIP leg's RTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaEnd {
    /// An FXS or FXO port (20 ms G.711 frames over the line-controller link).
    Port(u8),
    /// A SIP leg's RTP session.
    Leg(LegId),
}
