//! Wire protocol between the Branchline daemon and the line-controller MCU.
//!
//! The analog ports of the box (FXS for phones, FXO for PSTN lines) are driven by a
//! small MCU with the SLIC/DAA chips behind it, reached over a high-speed UART. This
//! crate is the protocol both ends speak; it is `#![no_std]` with `heapless` buffers so
//! that the very same codec can be compiled into the MCU firmware.
//!
//! # Frame layout
//!
//! On the wire every frame is COBS-encoded and terminated by a single `0x00` byte, so a
//! receiver that lost sync re-synchronises at the next zero. Inside the COBS envelope:
//!
//! ```text
//! [kind: u8][port: u8][seq: u8][payload: 0..=MAX_PAYLOAD bytes][crc16: u16 big-endian]
//! ```
//!
//! `kind` selects an [`Event`] (MCU to daemon, `0x01..=0x3F`), a [`Command`] (daemon to
//! MCU, `0x40..=0x7F`) or an [`Audio`] frame (both ways, `0x80..=0x81`). `port` is the
//! 1-based analog port, or [`BOARD_PORT`] for the board as a whole. `seq` counts frames
//! per direction modulo 256 so a receiver can count lost frames. The CRC is
//! CRC-16/IBM-3740 (a.k.a. CCITT-FALSE) over kind, port, seq and payload.
//!
//! # Modules
//!
//! - [`frame`]: [`Frame`], its body and the pure [`encode`] / [`decode`] functions;
//!   [`encode`] refuses any field value [`decode`] would reject.
//! - [`cobs`]: COBS byte stuffing (hand-written for speed, see its docs).
//! - [`event`], [`command`]: the typed messages and their payload encodings.
//! - [`callerid`]: caller-ID data carried by ring detection and the caller-ID command.
//! - [`tone`]: tone and ring cadences (frequencies, on/off steps) the MCU plays.
//! - [`deframer`]: a byte-at-a-time stream reassembler with bounded memory, for the MCU
//!   side and for stream readers that want one frame at a time.
//! - [`g711`]: µ-law and A-law companding (ITU-T G.711) used by audio frames.
//!
//! # Errors
//!
//! [`decode`] keeps "need more bytes" ([`DecodeError::Incomplete`]) apart from
//! "invalid" ([`DecodeError::Invalid`]); an invalid frame reports how many bytes to
//! skip, so a reader counts it and carries on with the next frame. No input makes the
//! decoder panic (checked by property tests and a fuzz target).
//!
//! # Limits
//!
//! Payloads are at most [`MAX_PAYLOAD`] bytes; audio frames are exactly 20 ms of 8 kHz
//! G.711 ([`AUDIO_FRAME_LEN`] bytes).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod callerid;
pub mod cobs;
pub mod command;
pub mod deframer;
pub mod event;
pub mod frame;
pub mod g711;
pub mod tone;

pub use callerid::{CallerId, CallerIdMode, Presentation};
pub use command::Command;
pub use deframer::Deframer;
pub use event::{Event, FaultKind};
pub use frame::{decode, encode, Audio, Body, DecodeError, EncodeError, Frame, InvalidFrame};
pub use tone::{Cadence, CadenceStep, ToneSpec};

/// Bytes of one 20 ms G.711 audio frame at 8 kHz.
pub const AUDIO_FRAME_LEN: usize = 160;
/// Largest payload of any frame (audio is the largest).
pub const MAX_PAYLOAD: usize = 192;
/// Largest decoded frame: kind, port, seq, payload and CRC.
pub const MAX_RAW_FRAME: usize = 3 + MAX_PAYLOAD + 2;
/// Largest encoded frame on the wire, COBS overhead and the `0x00` terminator included.
pub const MAX_WIRE_FRAME: usize = MAX_RAW_FRAME + MAX_RAW_FRAME / 254 + 2;
/// Port number that addresses the board itself rather than one analog port.
pub const BOARD_PORT: u8 = 0xFF;
/// Protocol version carried in [`Event::Ready`] and [`Command::Hello`].
pub const PROTOCOL_VERSION: u8 = 1;
