//! Frames and the pure codec functions: [`encode`] a [`Frame`] into wire bytes, and
//! [`decode`] the first frame out of a byte buffer.

use core::fmt;

use crc::{Crc, Table, CRC_16_IBM_3740};

use crate::command::Command;
use crate::event::Event;
use crate::{AUDIO_FRAME_LEN, MAX_PAYLOAD, MAX_RAW_FRAME, MAX_WIRE_FRAME};

/// CRC-16/IBM-3740 (CCITT-FALSE), slice-by-16 tables for speed on the daemon side.
const CRC16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_IBM_3740);

const AUDIO_ULAW: u8 = 0x80;
const AUDIO_ALAW: u8 = 0x81;

/// One frame: which port it is about, its sequence number, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1-based analog port, or [`crate::BOARD_PORT`].
    pub port: u8,
    /// Per-direction sequence number, modulo 256.
    pub seq: u8,
    /// The message.
    pub body: Body,
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// MCU to daemon.
    Event(Event),
    /// Daemon to MCU.
    Command(Command),
    /// 20 ms of audio, both ways.
    Audio(Audio),
}

/// 20 ms of 8 kHz G.711 audio.
#[derive(Clone, PartialEq, Eq)]
pub struct Audio {
    /// Companding law of `samples`.
    pub law: crate::g711::Law,
    /// 160 companded samples.
    pub samples: [u8; AUDIO_FRAME_LEN],
}

impl fmt::Debug for Audio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audio")
            .field("law", &self.law)
            .field("samples", &format_args!("[{} bytes]", self.samples.len()))
            .finish()
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is smaller than the encoded frame (use [`MAX_WIRE_FRAME`]).
    BufferTooSmall,
    /// The payload would exceed [`MAX_PAYLOAD`].
    PayloadTooLarge,
    /// A field holds a value the protocol cannot carry.
    InvalidField(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer too small"),
            EncodeError::PayloadTooLarge => f.write_str("payload too large"),
            EncodeError::InvalidField(n) => write!(f, "invalid {n}"),
        }
    }
}

/// What is wrong with a complete but unusable frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidFrame {
    /// No terminator within [`MAX_WIRE_FRAME`] bytes.
    TooLong,
    /// Fewer bytes than kind, port, seq and CRC.
    TooShort,
    /// The COBS encoding is broken.
    BadCobs,
    /// The CRC does not match.
    BadCrc {
        /// CRC carried by the frame.
        received: u16,
        /// CRC computed over the frame.
        computed: u16,
    },
    /// A kind byte nobody defined.
    UnknownKind(u8),
    /// The payload ends before its fields do.
    Truncated,
    /// Bytes left over after the payload's fields.
    TrailingBytes,
    /// A field holds a value outside its range.
    BadField(&'static str),
}

impl fmt::Display for InvalidFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidFrame::TooLong => write!(f, "no frame terminator within {MAX_WIRE_FRAME} bytes"),
            InvalidFrame::TooShort => f.write_str("frame shorter than its header and CRC"),
            InvalidFrame::BadCobs => f.write_str("broken COBS encoding"),
            InvalidFrame::BadCrc { received, computed } => {
                write!(
                    f,
                    "CRC mismatch (frame says {received:#06x}, computed {computed:#06x})"
                )
            }
            InvalidFrame::UnknownKind(k) => write!(f, "unknown frame kind {k:#04x}"),
            InvalidFrame::Truncated => f.write_str("payload truncated"),
            InvalidFrame::TrailingBytes => f.write_str("unexpected bytes after payload"),
            InvalidFrame::BadField(n) => write!(f, "invalid {n}"),
        }
    }
}

/// Why [`decode`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// No complete frame yet: read more bytes and call again with the same buffer.
    Incomplete,
    /// The first frame in the buffer is unusable: drop `consumed` bytes and carry on.
    Invalid {
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
        /// What was wrong.
        reason: InvalidFrame,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete frame"),
            DecodeError::Invalid { reason, .. } => reason.fmt(f),
        }
    }
}

/// Appends big-endian fields to a fixed buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        let end = self.len + v.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::PayloadTooLarge)?;
        dst.copy_from_slice(v);
        self.len = end;
        Ok(())
    }
}

/// Reads big-endian fields from a payload; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn u8(&mut self) -> Result<u8, InvalidFrame> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, InvalidFrame> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, InvalidFrame> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], InvalidFrame> {
        if n > self.buf.len() {
            return Err(InvalidFrame::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn finish(&self) -> Result<(), InvalidFrame> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(InvalidFrame::TrailingBytes)
        }
    }
}

/// Encodes `frame` into `out` (COBS, CRC and the `0x00` terminator); returns the bytes written.
///
/// `out` of [`MAX_WIRE_FRAME`] bytes always suffices.
pub fn encode(frame: &Frame, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut raw = [0u8; MAX_RAW_FRAME];
    let kind = match &frame.body {
        Body::Event(e) => e.kind(),
        Body::Command(c) => c.kind(),
        Body::Audio(a) => match a.law {
            crate::g711::Law::Ulaw => AUDIO_ULAW,
            crate::g711::Law::Alaw => AUDIO_ALAW,
        },
    };
    raw[0] = kind;
    raw[1] = frame.port;
    raw[2] = frame.seq;
    let payload_len = {
        let mut w = Writer {
            buf: &mut raw[3..3 + MAX_PAYLOAD],
            len: 0,
        };
        match &frame.body {
            Body::Event(e) => e.write_payload(&mut w)?,
            Body::Command(c) => c.write_payload(&mut w)?,
            Body::Audio(a) => w.bytes(&a.samples)?,
        }
        w.len
    };
    // What we send must be what the other end accepts: read the payload back with the
    // decoder's own validation (audio needs none), so encode and decode never disagree.
    if !matches!(frame.body, Body::Audio(_)) {
        let mut r = Reader {
            buf: &raw[3..3 + payload_len],
        };
        let back = match &frame.body {
            Body::Event(_) => Event::read(kind, &mut r).map(|_| ()),
            _ => Command::read(kind, &mut r).map(|_| ()),
        };
        back.and_then(|()| r.finish()).map_err(|e| match e {
            InvalidFrame::BadField(name) => EncodeError::InvalidField(name),
            _ => EncodeError::InvalidField("payload"),
        })?;
    }
    let body_len = 3 + payload_len;
    let crc = CRC16.checksum(&raw[..body_len]);
    raw[body_len..body_len + 2].copy_from_slice(&crc.to_be_bytes());
    let raw_len = body_len + 2;
    let n = crate::cobs::encode(&raw[..raw_len], out).ok_or(EncodeError::BufferTooSmall)?;
    *out.get_mut(n).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(n + 1)
}

/// Decodes the first frame in `buf`; returns it and the bytes it used (terminator included).
///
/// Leading `0x00` bytes (idle fill) are skipped and counted in the bytes used of the
/// frame that follows them. While no frame follows, `Incomplete` cannot report them,
/// so a stream reader drops leading zeros itself before waiting for more bytes (as
/// `branchline_board::link` does) to keep its buffer bounded on a zero-idling line.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let start = buf.iter().position(|&b| b != 0).unwrap_or(buf.len());
    let rest = &buf[start..];
    let Some(end) = memchr::memchr(0, rest) else {
        if rest.len() > MAX_WIRE_FRAME {
            return Err(DecodeError::Invalid {
                consumed: buf.len(),
                reason: InvalidFrame::TooLong,
            });
        }
        return Err(DecodeError::Incomplete);
    };
    let consumed = start + end + 1;
    decode_cobs(&rest[..end])
        .map(|f| (f, consumed))
        .map_err(|reason| DecodeError::Invalid { consumed, reason })
}

/// Decodes one frame from its COBS bytes (without the `0x00` terminator).
pub fn decode_cobs(encoded: &[u8]) -> Result<Frame, InvalidFrame> {
    if encoded.len() > MAX_WIRE_FRAME {
        return Err(InvalidFrame::TooLong);
    }
    let mut raw = [0u8; MAX_WIRE_FRAME];
    let n = crate::cobs::decode(encoded, &mut raw).ok_or(InvalidFrame::BadCobs)?;
    if n > MAX_RAW_FRAME {
        return Err(InvalidFrame::TooLong);
    }
    decode_raw(&raw[..n])
}

fn decode_raw(raw: &[u8]) -> Result<Frame, InvalidFrame> {
    if raw.len() < 5 {
        return Err(InvalidFrame::TooShort);
    }
    let (body, crc) = raw.split_at(raw.len() - 2);
    let received = u16::from_be_bytes([crc[0], crc[1]]);
    let computed = CRC16.checksum(body);
    if received != computed {
        return Err(InvalidFrame::BadCrc { received, computed });
    }
    let (kind, port, seq) = (body[0], body[1], body[2]);
    let mut r = Reader { buf: &body[3..] };
    let body = match kind {
        0x01..=0x3F => Body::Event(Event::read(kind, &mut r)?),
        0x40..=0x7F => Body::Command(Command::read(kind, &mut r)?),
        AUDIO_ULAW | AUDIO_ALAW => {
            let s = r.bytes(AUDIO_FRAME_LEN)?;
            let mut samples = [0u8; AUDIO_FRAME_LEN];
            samples.copy_from_slice(s);
            Body::Audio(Audio {
                law: if kind == AUDIO_ULAW {
                    crate::g711::Law::Ulaw
                } else {
                    crate::g711::Law::Alaw
                },
                samples,
            })
        }
        _ => return Err(InvalidFrame::UnknownKind(kind)),
    };
    r.finish()?;
    Ok(Frame { port, seq, body })
}
