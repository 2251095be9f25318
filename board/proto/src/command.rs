//! Commands the daemon sends to the line controller (kinds `0x40..=0x7F`).

use heapless::String;

use crate::callerid::{CallerId, CallerIdMode};
use crate::event::is_dial_char;
use crate::frame::{InvalidFrame, Reader, Writer};
use crate::tone::{Cadence, ToneSpec};
use crate::EncodeError;

/// Longest digit string one [`Command::FxoDial`] carries.
pub const MAX_DIAL: usize = 32;

/// An instruction for one port (or the board).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// Board: announce ourselves; the MCU answers with [`crate::Event::Ready`].
    Hello {
        /// The daemon's [`crate::PROTOCOL_VERSION`].
        protocol: u8,
    },
    /// FXS: ring the phone with this cadence until [`Command::StopRing`] or off-hook.
    Ring(Cadence),
    /// FXS: stop ringing.
    StopRing,
    /// Play a tone towards the port (replaces any tone playing).
    PlayTone(ToneSpec),
    /// Stop the tone.
    StopTone,
    /// FXS: transmit caller ID; the MCU times it against the ring cadence per `mode`.
    SendCallerId {
        /// Signalling method (per country).
        mode: CallerIdMode,
        /// What to send.
        caller_id: CallerId,
    },
    /// FXO: go off-hook on the PSTN line (answer or prepare to dial).
    FxoSeize,
    /// FXO: go on-hook (release the line).
    FxoRelease,
    /// FXO: dial these digits (DTMF) on a seized line.
    FxoDial(String<MAX_DIAL>),
    /// FXS: set line polarity (reversed signals answer to payphones/PBXs).
    SetPolarity {
        /// True for reversed polarity.
        reversed: bool,
    },
    /// Set transmit and receive gains in tenths of a dB (-120..=120).
    SetGains {
        /// Gain towards the line.
        tx_tenth_db: i8,
        /// Gain from the line.
        rx_tenth_db: i8,
    },
    /// Run the SLIC/DAA self-test; answered with [`crate::Event::SelfTestResult`].
    SelfTest,
    /// Ask for a [`crate::Event::LineReading`].
    ReadLine,
    /// Turn the port's voice path back on itself (`on`) or restore it: while on, the
    /// MCU sends back, as the port's audio frames, the audio frames it receives for
    /// the port, through the port's codec (the loopback test of an idle port). The
    /// MCU turns it off by itself when the port goes off-hook, rings or is seized.
    SetLoopback {
        /// True to loop the voice path, false to restore it.
        on: bool,
    },
}

pub(crate) const HELLO: u8 = 0x40;
pub(crate) const RING: u8 = 0x41;
pub(crate) const STOP_RING: u8 = 0x42;
pub(crate) const PLAY_TONE: u8 = 0x43;
pub(crate) const STOP_TONE: u8 = 0x44;
pub(crate) const SEND_CALLER_ID: u8 = 0x45;
pub(crate) const FXO_SEIZE: u8 = 0x46;
pub(crate) const FXO_RELEASE: u8 = 0x47;
pub(crate) const FXO_DIAL: u8 = 0x48;
pub(crate) const SET_POLARITY: u8 = 0x49;
pub(crate) const SET_GAINS: u8 = 0x4A;
pub(crate) const SELF_TEST: u8 = 0x4B;
pub(crate) const READ_LINE: u8 = 0x4C;
pub(crate) const SET_LOOPBACK: u8 = 0x4D;

impl Command {
    /// A dial command; `None` when `digits` is empty, too long or holds a non-dial character.
    pub fn fxo_dial(digits: &str) -> Option<Self> {
        if digits.is_empty() || !digits.bytes().all(is_dial_char) {
            return None;
        }
        let mut s = String::new();
        s.push_str(digits).ok()?;
        Some(Command::FxoDial(s))
    }

    pub(crate) fn kind(&self) -> u8 {
        match self {
            Command::Hello { .. } => HELLO,
            Command::Ring(_) => RING,
            Command::StopRing => STOP_RING,
            Command::PlayTone(_) => PLAY_TONE,
            Command::StopTone => STOP_TONE,
            Command::SendCallerId { .. } => SEND_CALLER_ID,
            Command::FxoSeize => FXO_SEIZE,
            Command::FxoRelease => FXO_RELEASE,
            Command::FxoDial(_) => FXO_DIAL,
            Command::SetPolarity { .. } => SET_POLARITY,
            Command::SetGains { .. } => SET_GAINS,
            Command::SelfTest => SELF_TEST,
            Command::ReadLine => READ_LINE,
            Command::SetLoopback { .. } => SET_LOOPBACK,
        }
    }

    pub(crate) fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Command::Hello { protocol } => w.u8(*protocol),
            Command::Ring(c) => c.write(w),
            Command::PlayTone(t) => t.write(w),
            Command::SendCallerId { mode, caller_id } => {
                w.u8(mode.to_byte())?;
                caller_id.write(w)
            }
            Command::FxoDial(d) => {
                if d.is_empty() || !d.bytes().all(is_dial_char) {
                    return Err(EncodeError::InvalidField("dial digits"));
                }
                w.u8(d.len() as u8)?;
                w.bytes(d.as_bytes())
            }
            Command::SetPolarity { reversed } => w.u8(u8::from(*reversed)),
            Command::SetLoopback { on } => w.u8(u8::from(*on)),
            Command::SetGains {
                tx_tenth_db,
                rx_tenth_db,
            } => {
                w.u8(*tx_tenth_db as u8)?;
                w.u8(*rx_tenth_db as u8)
            }
            Command::StopRing
            | Command::StopTone
            | Command::FxoSeize
            | Command::FxoRelease
            | Command::SelfTest
            | Command::ReadLine => Ok(()),
        }
    }

    pub(crate) fn read(kind: u8, r: &mut Reader<'_>) -> Result<Self, InvalidFrame> {
        Ok(match kind {
            HELLO => Command::Hello { protocol: r.u8()? },
            RING => Command::Ring(Cadence::read(r)?),
            STOP_RING => Command::StopRing,
            PLAY_TONE => Command::PlayTone(ToneSpec::read(r)?),
            STOP_TONE => Command::StopTone,
            SEND_CALLER_ID => Command::SendCallerId {
                mode: CallerIdMode::from_byte(r.u8()?)?,
                caller_id: CallerId::read(r)?,
            },
            FXO_SEIZE => Command::FxoSeize,
            FXO_RELEASE => Command::FxoRelease,
            FXO_DIAL => {
                let n = r.u8()? as usize;
                let d = r.bytes(n)?;
                if n == 0 || n > MAX_DIAL || !d.iter().all(|&c| is_dial_char(c)) {
                    return Err(InvalidFrame::BadField("dial digits"));
                }
                let mut s = String::new();
                for &c in d {
                    s.push(c as char)
                        .map_err(|_| InvalidFrame::BadField("dial digits"))?;
                }
                Command::FxoDial(s)
            }
            SET_POLARITY => Command::SetPolarity {
                reversed: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(InvalidFrame::BadField("polarity")),
                },
            },
            SET_GAINS => {
                let tx = r.u8()? as i8;
                let rx = r.u8()? as i8;
                if !(-120..=120).contains(&tx) || !(-120..=120).contains(&rx) {
                    return Err(InvalidFrame::BadField("gain"));
                }
                Command::SetGains {
                    tx_tenth_db: tx,
                    rx_tenth_db: rx,
                }
            }
            SELF_TEST => Command::SelfTest,
            READ_LINE => Command::ReadLine,
            SET_LOOPBACK => Command::SetLoopback {
                on: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(InvalidFrame::BadField("loopback")),
                },
            },
            _ => return Err(InvalidFrame::UnknownKind(kind)),
        })
    }
}
