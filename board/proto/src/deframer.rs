//! Byte-at-a-time frame reassembly with a fixed buffer, for the MCU's UART interrupt and
//! for readers that receive bytes in arbitrary chunks.

use heapless::Vec;

use crate::frame::{decode_cobs, Frame, InvalidFrame};
use crate::MAX_WIRE_FRAME;

/// Collects bytes until a `0x00` terminator and decodes the frame it ends.
///
/// An over-long frame is reported once as [`InvalidFrame::TooLong`] and its bytes are
/// dropped up to the next terminator, so one lost zero costs one frame, not two.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8, MAX_WIRE_FRAME>,
    discarding: bool,
}

impl Deframer {
    /// An empty deframer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one byte; returns a frame or an invalid-frame report when `byte` ends one.
    pub fn feed(&mut self, byte: u8) -> Option<Result<Frame, InvalidFrame>> {
        if byte == 0 {
            let was_discarding = core::mem::replace(&mut self.discarding, false);
            if was_discarding || self.buf.is_empty() {
                self.buf.clear();
                return None;
            }
            let r = decode_cobs(&self.buf);
            self.buf.clear();
            return Some(r);
        }
        if self.discarding {
            return None;
        }
        if self.buf.push(byte).is_err() {
            self.buf.clear();
            self.discarding = true;
            return Some(Err(InvalidFrame::TooLong));
        }
        None
    }

    /// Bytes held for a frame that has not ended yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}
