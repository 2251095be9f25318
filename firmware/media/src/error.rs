//! The crate's error type.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

/// Everything that can go wrong in the media crate. Variants carry the offending values
/// so a log line names what was wrong without a debugger.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than a fixed RTP header (12).
    #[error("RTP packet of {len} bytes is shorter than the 12-byte header")]
    RtpTooShort {
        /// Bytes received.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {version} is not 2")]
    RtpVersion {
        /// The version found.
        version: u8,
    },
    /// The CSRC list announced by the CC field runs past the end of the packet.
    #[error("RTP CSRC count {count} needs {needed} bytes, packet has {len}")]
    RtpCsrcTruncated {
        /// The CC field.
        count: u8,
        /// Bytes the fixed header plus CSRC list need.
        needed: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The X bit is set but the 4-byte extension header or its body is cut off.
    #[error("RTP header extension needs {needed} bytes, packet has {len}")]
    RtpExtensionTruncated {
        /// Bytes the headers up to the end of the extension need.
        needed: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The P bit is set but the padding count is 0 or longer than what follows the header.
    #[error("RTP padding of {padding} bytes is invalid with {available} bytes after the header")]
    RtpPadding {
        /// The last byte of the packet (padding count).
        padding: u8,
        /// Bytes after the headers (payload plus padding).
        available: usize,
    },
    /// A packet to build would not be valid RTP.
    #[error("cannot build RTP packet: {reason}")]
    RtpBuild {
        /// What rtp-rs refused (payload type > 127, buffer too small, ...).
        reason: &'static str,
    },
    /// A payload type above 127.
    #[error("payload type {pt} is out of range 0..=127")]
    PayloadType {
        /// The value given.
        pt: u8,
    },
    /// A payload type the call did not negotiate (or not audio where audio is needed).
    #[error("payload type {pt} was not negotiated for this stream")]
    UnexpectedPayloadType {
        /// The payload type received.
        pt: u8,
    },
    /// An audio payload longer than the jitter buffer accepts.
    #[error("audio payload of {len} samples exceeds {max}")]
    PayloadTooLong {
        /// Samples in the payload.
        len: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A ptime other than 10, 20 or 30 ms.
    #[error("ptime {ms} ms is not supported (10, 20 or 30)")]
    Ptime {
        /// The value given.
        ms: u32,
    },
    /// An RTCP packet is malformed.
    #[error("RTCP packet invalid at byte {offset}: {reason}")]
    Rtcp {
        /// Byte offset in the compound packet where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A telephone-event payload is not 4 bytes or holds an out-of-range value.
    #[error("telephone-event payload invalid: {reason}")]
    TelephoneEvent {
        /// What was wrong.
        reason: &'static str,
    },
    /// A character that is not a DTMF digit (`0-9 * # A-D`).
    #[error("{digit:?} is not a DTMF digit")]
    NotADigit {
        /// The byte given.
        digit: u8,
    },
    /// Jitter buffer configuration out of range.
    #[error("jitter buffer config invalid: {reason} (min {min_ms} ms, max {max_ms} ms)")]
    JitterConfig {
        /// What was wrong.
        reason: &'static str,
        /// Configured minimum delay.
        min_ms: u32,
        /// Configured maximum delay.
        max_ms: u32,
    },
    /// An RTP port range that cannot hold an even/odd pair.
    #[error("RTP port range {first}..={last} is invalid: {reason}")]
    PortRange {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// Every RTP/RTCP pair in the range is leased or could not be bound.
    #[error("no free RTP port pair in {range:?} ({leased} leased)")]
    PortsExhausted {
        /// The configured range.
        range: RangeInclusive<u16>,
        /// Pairs currently leased by this allocator.
        leased: usize,
    },
    /// A socket operation failed.
    #[error("{op} on {addr}: {kind}")]
    Io {
        /// What we were doing ("bind", "send", "recv").
        op: &'static str,
        /// Local or remote address involved.
        addr: SocketAddr,
        /// The OS error kind.
        kind: std::io::ErrorKind,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the conference mixer ([`crate::mix::Mixer`]) refuses; `K` is the caller's key
/// for a member (a port or SIP leg in the daemon). A refused change leaves the mixer
/// as it was.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError<K: std::fmt::Debug> {
    /// The mixer already holds its maximum number of members.
    #[error("conference is full ({max} members); {member:?} not added")]
    Full {
        /// Who was refused.
        member: K,
        /// The mixer's limit.
        max: usize,
    },
    /// `join` for a member that is already in.
    #[error("{member:?} is already a conference member")]
    AlreadyMember {
        /// The member.
        member: K,
    },
    /// A frame, role change or leave for someone who is not a member.
    #[error("{member:?} is not a conference member")]
    NotMember {
        /// Who was named.
        member: K,
    },
    /// A whisperer's target is itself or not a member.
    #[error("{member:?} cannot whisper to {target:?}: {reason}")]
    WhisperTarget {
        /// The whisperer.
        member: K,
        /// The target named.
        target: K,
        /// What is wrong.
        reason: &'static str,
    },
}
