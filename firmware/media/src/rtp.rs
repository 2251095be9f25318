//! RTP packets (RFC 3550 section 5) for G.711 voice: parsing with validation, payload
//! type classification and the state of an outgoing stream.
//!
//! Parsing and building use rtp-rs; [`parse`] checks every header field itself first so
//! that each kind of malformation gets its own [`Error`] variant (rtp-rs folds CSRC and
//! extension truncation into one error), then lets rtp-rs read the fields. No input
//! panics: a property test feeds arbitrary bytes.
//!
//! Limits: the outgoing stream is G.711 (one byte per sample at 8 kHz); other codecs are
//! refused at SDP time, so nothing here knows their clock rates.

use line_proto::g711::Law;
use rtp_rs::{RtpPacketBuildError, RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

use crate::{Error, Result};

/// Static payload type of G.711 µ-law (RFC 3551).
pub const PT_PCMU: u8 = 0;
/// Static payload type of G.711 A-law (RFC 3551).
pub const PT_PCMA: u8 = 8;
/// Static payload type of comfort noise (RFC 3389).
pub const PT_CN: u8 = 13;
/// The payload type most peers offer for telephone-event (dynamic, negotiated in SDP).
pub const PT_TELEPHONE_EVENT_DEFAULT: u8 = 101;
/// RTP clock rate of G.711 and telephone-event.
pub const CLOCK_RATE: u32 = 8000;
/// Fixed RTP header size.
pub const HEADER_LEN: usize = 12;
/// Largest RTP packet the crate builds or accepts from a socket (Ethernet MTU).
pub const MAX_PACKET: usize = 1500;

/// A validated RTP packet borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit (start of a talkspurt for audio, start of an event for telephone-event).
    pub marker: bool,
    /// Payload type (0..=127).
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp (8 kHz for G.711).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRC entries (0..=15).
    pub csrc_count: u8,
    /// The CSRC list, 4 bytes per entry (see [`RtpPacket::csrcs`]).
    pub csrc_bytes: &'a [u8],
    /// Header extension `(profile id, body)` when the X bit is set.
    pub extension: Option<(u16, &'a [u8])>,
    /// Padding bytes (including the count byte) when the P bit is set.
    pub padding: u8,
    /// Payload without padding.
    pub payload: &'a [u8],
}

/// Parses and validates an RTP packet: version 2, CSRC list, header extension and
/// padding all within `buf`.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>> {
    let len = buf.len();
    if len < HEADER_LEN {
        return Err(Error::RtpTooShort { len });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(Error::RtpVersion { version });
    }
    let count = buf[0] & 0x0F;
    let csrc_end = HEADER_LEN + 4 * usize::from(count);
    if csrc_end > len {
        return Err(Error::RtpCsrcTruncated {
            count,
            needed: csrc_end,
            len,
        });
    }
    let mut header_end = csrc_end;
    if buf[0] & 0x10 != 0 {
        if csrc_end + 4 > len {
            return Err(Error::RtpExtensionTruncated {
                needed: csrc_end + 4,
                len,
            });
        }
        let words = usize::from(u16::from_be_bytes([buf[csrc_end + 2], buf[csrc_end + 3]]));
        header_end = csrc_end + 4 + 4 * words;
        if header_end > len {
            return Err(Error::RtpExtensionTruncated {
                needed: header_end,
                len,
            });
        }
    }
    if buf[0] & 0x20 != 0 {
        let available = len - header_end;
        let padding = buf[len - 1];
        if available == 0 || padding == 0 || usize::from(padding) > available {
            return Err(Error::RtpPadding { padding, available });
        }
    }
    let reader = RtpReader::new(buf).map_err(|e| reader_error(e, buf))?;
    Ok(RtpPacket {
        marker: reader.mark(),
        payload_type: reader.payload_type(),
        seq: u16::from(reader.sequence_number()),
        timestamp: reader.timestamp(),
        ssrc: reader.ssrc(),
        csrc_count: reader.csrc_count(),
        csrc_bytes: &buf[HEADER_LEN..csrc_end],
        extension: reader.extension(),
        padding: reader.padding().unwrap_or(0),
        payload: reader.payload(),
    })
}

/// Maps an rtp-rs error to ours. Unreachable after our own checks, but mapped properly
/// rather than unwrapped so a future rtp-rs check cannot turn into a panic.
fn reader_error(e: RtpReaderError, buf: &[u8]) -> Error {
    match e {
        RtpReaderError::BufferTooShort(len) => Error::RtpTooShort { len },
        RtpReaderError::UnsupportedVersion(version) => Error::RtpVersion { version },
        RtpReaderError::HeadersTruncated { header_len, .. } => Error::RtpExtensionTruncated {
            needed: header_len,
            len: buf.len(),
        },
        RtpReaderError::PaddingLengthInvalid(padding) => Error::RtpPadding {
            padding,
            available: buf.len().saturating_sub(HEADER_LEN),
        },
    }
}

impl<'a> RtpPacket<'a> {
    /// The CSRC identifiers.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc_bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// What a payload type carries in a call, after SDP negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// G.711 audio in this law.
    Audio(Law),
    /// RFC 4733 telephone-event.
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    ComfortNoise,
}

/// The payload types negotiated for one call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadMap {
    /// Dynamic payload type of telephone-event, when negotiated.
    pub telephone_event: Option<u8>,
    /// Whether comfort noise (PT 13) was negotiated.
    pub comfort_noise: bool,
}

impl Default for PayloadMap {
    fn default() -> Self {
        PayloadMap {
            telephone_event: Some(PT_TELEPHONE_EVENT_DEFAULT),
            comfort_noise: true,
        }
    }
}

impl PayloadMap {
    /// A map with telephone-event on `pt` (must be a dynamic type, 96..=127).
    pub fn with_telephone_event(pt: u8) -> Result<Self> {
        if !(96..=127).contains(&pt) {
            return Err(Error::PayloadType { pt });
        }
        Ok(PayloadMap {
            telephone_event: Some(pt),
            comfort_noise: true,
        })
    }

    /// What `pt` carries, or `None` for a payload type this call did not negotiate.
    pub fn classify(&self, pt: u8) -> Option<PayloadKind> {
        match pt {
            PT_PCMU => Some(PayloadKind::Audio(Law::Ulaw)),
            PT_PCMA => Some(PayloadKind::Audio(Law::Alaw)),
            PT_CN if self.comfort_noise => Some(PayloadKind::ComfortNoise),
            _ if self.telephone_event == Some(pt) => Some(PayloadKind::TelephoneEvent),
            _ => None,
        }
    }
}

/// The static payload type of a G.711 law.
pub fn audio_payload_type(law: Law) -> u8 {
    match law {
        Law::Ulaw => PT_PCMU,
        Law::Alaw => PT_PCMA,
    }
}

/// Packetisation time of an audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ptime {
    /// 10 ms, 80 samples.
    Ms10,
    /// 20 ms, 160 samples (the default of RFC 3551 and of the line controller).
    Ms20,
    /// 30 ms, 240 samples.
    Ms30,
}

impl Ptime {
    /// From an SDP `a=ptime` value.
    pub fn from_ms(ms: u32) -> Result<Self> {
        match ms {
            10 => Ok(Ptime::Ms10),
            20 => Ok(Ptime::Ms20),
            30 => Ok(Ptime::Ms30),
            _ => Err(Error::Ptime { ms }),
        }
    }

    /// Milliseconds per packet.
    pub fn ms(self) -> u32 {
        match self {
            Ptime::Ms10 => 10,
            Ptime::Ms20 => 20,
            Ptime::Ms30 => 30,
        }
    }

    /// Samples (and G.711 bytes) per packet at 8 kHz.
    pub fn samples(self) -> u32 {
        self.ms() * CLOCK_RATE / 1000
    }
}

/// SplitMix64: expands a seed into well-mixed 64-bit values. Used for SSRCs and initial
/// sequence numbers and timestamps, which RFC 3550 wants random; the seed is injected so
/// tests are reproducible and the IO edge supplies real entropy.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The header fields of one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes header and `payload` into `out`; returns the packet length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize> {
        RtpPacketBuilder::new()
            .payload_type(self.payload_type)
            .marked(self.marker)
            .sequence(Seq::from(self.seq))
            .timestamp(self.timestamp)
            .ssrc(self.ssrc)
            .payload(payload)
            .build_into(out)
            .map_err(|e| Error::RtpBuild {
                reason: match e {
                    RtpPacketBuildError::BufferTooSmall => "buffer too small",
                    RtpPacketBuildError::PayloadTypeInvalid => "payload type above 127",
                    RtpPacketBuildError::ExtensionTooLarge => "extension too large",
                    RtpPacketBuildError::ExtensionMissingPadding => "extension not padded",
                },
            })
    }
}

/// State of one outgoing G.711 RTP stream: SSRC, sequence numbers and timestamps.
///
/// Sequence number and timestamp start at random values derived from the seed (RFC 3550
/// 5.1). The first packet after [`RtpSender::new`] or after a silence gap
/// ([`RtpSender::skip`]) carries the marker bit (start of a talkspurt). Telephone-event
/// packets share the SSRC and sequence space but bring their own timestamp.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    audio_pt: u8,
    ptime: Ptime,
    talkspurt_start: bool,
    packets: u64,
    octets: u64,
}

impl RtpSender {
    /// A stream in `law` with packets of `ptime`; SSRC, first sequence number and first
    /// timestamp come from `seed`.
    pub fn new(seed: u64, law: Law, ptime: Ptime) -> Self {
        let mut state = seed;
        let a = splitmix64(&mut state);
        let b = splitmix64(&mut state);
        RtpSender {
            ssrc: a as u32,
            seq: (a >> 32) as u16,
            timestamp: b as u32,
            audio_pt: audio_payload_type(law),
            ptime,
            talkspurt_start: true,
            packets: 0,
            octets: 0,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packetisation time.
    pub fn ptime(&self) -> Ptime {
        self.ptime
    }

    /// Timestamp the next audio packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Sequence number the next packet will carry.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Packets sent so far (for RTCP SR).
    pub fn packet_count(&self) -> u64 {
        self.packets
    }

    /// Payload octets sent so far (for RTCP SR).
    pub fn octet_count(&self) -> u64 {
        self.octets
    }

    /// Header of the next audio packet carrying `samples` samples; advances sequence
    /// number and timestamp.
    pub fn next_audio(&mut self, samples: u32) -> RtpHeader {
        let header = RtpHeader {
            payload_type: self.audio_pt,
            marker: self.talkspurt_start,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.talkspurt_start = false;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.packets += 1;
        self.octets += u64::from(samples);
        header
    }

    /// Builds the next audio packet from G.711 `payload` (one byte per sample) into `out`.
    pub fn write_audio(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize> {
        let samples = u32::try_from(payload.len()).map_err(|_| Error::RtpBuild {
            reason: "payload too large",
        })?;
        let mut copy = self.clone();
        let header = copy.next_audio(samples);
        let n = header.write(payload, out)?;
        *self = copy;
        Ok(n)
    }

    /// A silence gap (DTX) of `samples`: the timestamp moves on, nothing is sent, and
    /// the next audio packet starts a new talkspurt (marker bit).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.talkspurt_start = true;
    }

    /// Header of a packet with payload type `pt`, marker and timestamp given by the
    /// caller (telephone-event, comfort noise); takes the next sequence number.
    pub fn next_other(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        octets: usize,
    ) -> RtpHeader {
        let header = RtpHeader {
            payload_type,
            marker,
            seq: self.seq,
            timestamp,
            ssrc: self.ssrc,
        };
        self.seq = self.seq.wrapping_add(1);
        self.packets += 1;
        self.octets += octets as u64;
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(first: u8, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![first, 0x80, 0x12, 0x34, 0, 0, 0, 160, 1, 2, 3, 4];
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn parses_plain_packet() {
        let p = packet(0x80, &[0xFF; 160]);
        let r = parse(&p).unwrap();
        assert!(r.marker);
        assert_eq!(r.payload_type, 0);
        assert_eq!(r.seq, 0x1234);
        assert_eq!(r.timestamp, 160);
        assert_eq!(r.ssrc, 0x0102_0304);
        assert_eq!(r.payload.len(), 160);
        assert_eq!(r.extension, None);
        assert_eq!(r.padding, 0);
    }

    #[test]
    fn each_malformation_has_its_error() {
        assert_eq!(parse(&[0x80; 11]), Err(Error::RtpTooShort { len: 11 }));
        assert_eq!(
            parse(&packet(0x40, &[])),
            Err(Error::RtpVersion { version: 1 })
        );
        assert_eq!(
            parse(&packet(0x82, &[0, 0, 0, 1])),
            Err(Error::RtpCsrcTruncated {
                count: 2,
                needed: 20,
                len: 16
            })
        );
        assert_eq!(
            parse(&packet(0x90, &[0, 0])),
            Err(Error::RtpExtensionTruncated {
                needed: 16,
                len: 14
            })
        );
        assert_eq!(
            parse(&packet(0x90, &[0xBE, 0xDE, 0, 2, 1, 2, 3, 4])),
            Err(Error::RtpExtensionTruncated {
                needed: 24,
                len: 20
            })
        );
        assert_eq!(
            parse(&packet(0xA0, &[])),
            Err(Error::RtpPadding {
                padding: 4,
                available: 0
            })
        );
        assert_eq!(
            parse(&packet(0xA0, &[1, 2, 0])),
            Err(Error::RtpPadding {
                padding: 0,
                available: 3
            })
        );
        assert_eq!(
            parse(&packet(0xA0, &[1, 2, 4])),
            Err(Error::RtpPadding {
                padding: 4,
                available: 3
            })
        );
    }

    #[test]
    fn csrc_extension_padding_accepted() {
        let mut extra = vec![0, 0, 0, 7]; // one CSRC
        extra.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension, 1 word
        extra.extend_from_slice(&[0xD5; 10]); // payload
        extra.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = packet(0xB1, &extra);
        let r = parse(&p).unwrap();
        assert_eq!(r.csrc_count, 1);
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![7]);
        assert_eq!(r.extension, Some((0xBEDE, &[9u8, 9, 9, 9][..])));
        assert_eq!(r.padding, 3);
        assert_eq!(r.payload, &[0xD5; 10]);
    }

    #[test]
    fn sender_sequence_timestamp_marker() {
        let mut s = RtpSender::new(42, Law::Ulaw, Ptime::Ms20);
        let same = RtpSender::new(42, Law::Ulaw, Ptime::Ms20);
        assert_eq!(s.ssrc(), same.ssrc());
        assert_ne!(s.ssrc(), RtpSender::new(43, Law::Ulaw, Ptime::Ms20).ssrc());
        let (seq0, ts0) = (s.next_seq(), s.timestamp());
        let mut buf = [0u8; MAX_PACKET];
        let n = s.write_audio(&[0xFF; 160], &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert!(p.marker);
        assert_eq!((p.seq, p.timestamp, p.payload_type), (seq0, ts0, PT_PCMU));
        let n = s.write_audio(&[0xFF; 160], &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert!(!p.marker);
        assert_eq!(p.seq, seq0.wrapping_add(1));
        assert_eq!(p.timestamp, ts0.wrapping_add(160));
        s.skip(800);
        let n = s.write_audio(&[0xFF; 160], &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert!(p.marker, "talkspurt after a gap is marked");
        assert_eq!(p.seq, seq0.wrapping_add(2), "no sequence gap for DTX");
        assert_eq!(p.timestamp, ts0.wrapping_add(1120));
        assert_eq!(s.packet_count(), 3);
        assert_eq!(s.octet_count(), 480);
    }

    #[test]
    fn sender_wraps_and_failed_write_changes_nothing() {
        let mut s = RtpSender::new(7, Law::Alaw, Ptime::Ms30);
        s.seq = u16::MAX;
        s.timestamp = u32::MAX - 100;
        let h = s.next_audio(240);
        assert_eq!(h.payload_type, PT_PCMA);
        assert_eq!(s.next_seq(), 0);
        assert_eq!(s.timestamp(), 139);
        let before = (s.next_seq(), s.timestamp(), s.packet_count());
        let mut small = [0u8; 20];
        assert_eq!(
            s.write_audio(&[0; 240], &mut small),
            Err(Error::RtpBuild {
                reason: "buffer too small"
            })
        );
        assert_eq!(before, (s.next_seq(), s.timestamp(), s.packet_count()));
    }

    #[test]
    fn ptime_and_payload_map() {
        assert_eq!(Ptime::from_ms(10).unwrap().samples(), 80);
        assert_eq!(Ptime::from_ms(30).unwrap().samples(), 240);
        assert_eq!(Ptime::from_ms(40), Err(Error::Ptime { ms: 40 }));
        let m = PayloadMap::with_telephone_event(96).unwrap();
        assert_eq!(m.classify(0), Some(PayloadKind::Audio(Law::Ulaw)));
        assert_eq!(m.classify(8), Some(PayloadKind::Audio(Law::Alaw)));
        assert_eq!(m.classify(13), Some(PayloadKind::ComfortNoise));
        assert_eq!(m.classify(96), Some(PayloadKind::TelephoneEvent));
        assert_eq!(m.classify(101), None);
        assert_eq!(m.classify(18), None);
        assert_eq!(
            PayloadMap::with_telephone_event(8),
            Err(Error::PayloadType { pt: 8 })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = parse(&bytes) {
                // Whatever parses lies inside the buffer and agrees with rtp-rs.
                prop_assert!(p.payload.len() + HEADER_LEN <= bytes.len());
                let r = RtpReader::new(&bytes).unwrap();
                prop_assert_eq!(r.payload(), p.payload);
            }
        }

        #[test]
        fn parse_v2_headers_never_panics(
            first in 0x80u8..=0xBF,
            rest in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![first];
            bytes.extend(rest);
            let _ = parse(&bytes);
        }

        #[test]
        fn build_parse_round_trip(
            pt in 0u8..128, marker: bool, seq: u16, ts: u32, ssrc: u32,
            payload in proptest::collection::vec(any::<u8>(), 0..240),
        ) {
            let h = RtpHeader { payload_type: pt, marker, seq, timestamp: ts, ssrc };
            let mut buf = [0u8; MAX_PACKET];
            let n = h.write(&payload, &mut buf).unwrap();
            let p = parse(&buf[..n]).unwrap();
            prop_assert_eq!(
                (p.payload_type, p.marker, p.seq, p.timestamp, p.ssrc),
                (pt, marker, seq, ts, ssrc)
            );
            prop_assert_eq!(p.payload, &payload[..]);
        }
    }
}
