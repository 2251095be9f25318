//! Events the line controller reports to the daemon (kinds `0x01..=0x3F`).

use crate::callerid::CallerId;
use crate::frame::{InvalidFrame, Reader, Writer};
use crate::EncodeError;

/// A hardware fault on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Loop current beyond the SLIC's limit (shorted line).
    OverCurrent,
    /// AC or DC voltage from outside on tip/ring (crossed with mains or another line).
    ForeignVoltage,
    /// SLIC thermal shutdown.
    Thermal,
    /// Too many ringers on the port for the ring generator.
    RingerOverload,
    /// FXO: no battery on the PSTN line (line cut or not connected).
    NoLineVoltage,
}

impl FaultKind {
    fn to_byte(self) -> u8 {
        match self {
            FaultKind::OverCurrent => 1,
            FaultKind::ForeignVoltage => 2,
            FaultKind::Thermal => 3,
            FaultKind::RingerOverload => 4,
            FaultKind::NoLineVoltage => 5,
        }
    }

    fn from_byte(b: u8) -> Result<Self, InvalidFrame> {
        Ok(match b {
            1 => FaultKind::OverCurrent,
            2 => FaultKind::ForeignVoltage,
            3 => FaultKind::Thermal,
            4 => FaultKind::RingerOverload,
            5 => FaultKind::NoLineVoltage,
            _ => return Err(InvalidFrame::BadField("fault kind")),
        })
    }
}

/// Something the line controller saw on a port (or on the board).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// The MCU is up: sent at boot as the MCU's first frame (seq 0, so a receiver can
    /// tell a reboot from a reply) and in answer to [`crate::Command::Hello`].
    Ready {
        /// [`crate::PROTOCOL_VERSION`] of the MCU firmware.
        protocol: u8,
        /// MCU firmware version.
        firmware: u16,
        /// Number of FXS ports (numbered from 1).
        fxs_ports: u8,
        /// Number of FXO ports (numbered after the FXS ports).
        fxo_ports: u8,
    },
    /// FXS: the handset was lifted (loop closed).
    OffHook,
    /// FXS: the handset was put down (loop open longer than the flash window).
    OnHook,
    /// FXS: a short on-hook (hook-flash, "R" key) within the flash window.
    HookFlash,
    /// FXS: a dialled digit (`0-9`, `*`, `#`, `A-D`), from DTMF or pulse dialling.
    Digit(u8),
    /// FXO: ringing voltage detected; caller ID once decoded (usually after the first ring).
    RingDetected {
        /// The caller's identity if the line delivered one.
        caller_id: Option<CallerId>,
    },
    /// FXO: tip/ring polarity reversed (answer or disconnect supervision).
    PolarityReversal,
    /// A line measurement, sent on request or when it changes.
    LineReading {
        /// Tip-to-ring voltage in millivolts.
        millivolts: i32,
        /// Loop current in microamps.
        microamps: u32,
    },
    /// A hardware fault; the port is unusable until it clears.
    Fault(FaultKind),
    /// Result of a self-test command.
    SelfTestResult {
        /// True when every check passed.
        passed: bool,
        /// First failing check, 0 when passed.
        code: u8,
    },
    /// A command was refused (e.g. FXO seize on an FXS port).
    Rejected {
        /// The `seq` of the refused command frame.
        seq: u8,
        /// Why (MCU-defined code).
        reason: u8,
    },
}

pub(crate) const READY: u8 = 0x01;
pub(crate) const OFF_HOOK: u8 = 0x02;
pub(crate) const ON_HOOK: u8 = 0x03;
pub(crate) const HOOK_FLASH: u8 = 0x04;
pub(crate) const DIGIT: u8 = 0x05;
pub(crate) const RING_DETECTED: u8 = 0x06;
pub(crate) const POLARITY_REVERSAL: u8 = 0x07;
pub(crate) const LINE_READING: u8 = 0x08;
pub(crate) const FAULT: u8 = 0x09;
pub(crate) const SELF_TEST_RESULT: u8 = 0x0A;
pub(crate) const REJECTED: u8 = 0x0B;

/// True for the characters a phone can dial.
pub fn is_dial_char(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b'*' | b'#' | b'A'..=b'D')
}

impl Event {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Event::Ready { .. } => READY,
            Event::OffHook => OFF_HOOK,
            Event::OnHook => ON_HOOK,
            Event::HookFlash => HOOK_FLASH,
            Event::Digit(_) => DIGIT,
            Event::RingDetected { .. } => RING_DETECTED,
            Event::PolarityReversal => POLARITY_REVERSAL,
            Event::LineReading { .. } => LINE_READING,
            Event::Fault(_) => FAULT,
            Event::SelfTestResult { .. } => SELF_TEST_RESULT,
            Event::Rejected { .. } => REJECTED,
        }
    }

    pub(crate) fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Event::Ready {
                protocol,
                firmware,
                fxs_ports,
                fxo_ports,
            } => {
                w.u8(*protocol)?;
                w.u16(*firmware)?;
                w.u8(*fxs_ports)?;
                w.u8(*fxo_ports)
            }
            Event::OffHook | Event::OnHook | Event::HookFlash | Event::PolarityReversal => Ok(()),
            Event::Digit(d) => {
                if !is_dial_char(*d) {
                    return Err(EncodeError::InvalidField("digit"));
                }
                w.u8(*d)
            }
            Event::RingDetected { caller_id } => match caller_id {
                None => w.u8(0),
                Some(c) => {
                    w.u8(1)?;
                    c.write(w)
                }
            },
            Event::LineReading {
                millivolts,
                microamps,
            } => {
                w.u32(*millivolts as u32)?;
                w.u32(*microamps)
            }
            Event::Fault(k) => w.u8(k.to_byte()),
            Event::SelfTestResult { passed, code } => {
                w.u8(u8::from(*passed))?;
                w.u8(*code)
            }
            Event::Rejected { seq, reason } => {
                w.u8(*seq)?;
                w.u8(*reason)
            }
        }
    }

    pub(crate) fn read(kind: u8, r: &mut Reader<'_>) -> Result<Self, InvalidFrame> {
        Ok(match kind {
            READY => Event::Ready {
                protocol: r.u8()?,
                firmware: r.u16()?,
                fxs_ports: r.u8()?,
                fxo_ports: r.u8()?,
            },
            OFF_HOOK => Event::OffHook,
            ON_HOOK => Event::OnHook,
            HOOK_FLASH => Event::HookFlash,
            DIGIT => {
                let d = r.u8()?;
                if !is_dial_char(d) {
                    return Err(InvalidFrame::BadField("digit"));
                }
                Event::Digit(d)
            }
            RING_DETECTED => match r.u8()? {
                0 => Event::RingDetected { caller_id: None },
                1 => Event::RingDetected {
                    caller_id: Some(CallerId::read(r)?),
                },
                _ => return Err(InvalidFrame::BadField("caller-id flag")),
            },
            POLARITY_REVERSAL => Event::PolarityReversal,
            LINE_READING => Event::LineReading {
                millivolts: r.u32()? as i32,
                microamps: r.u32()?,
            },
            FAULT => Event::Fault(FaultKind::from_byte(r.u8()?)?),
            SELF_TEST_RESULT => {
                let passed = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(InvalidFrame::BadField("self-test passed flag")),
                };
                Event::SelfTestResult {
                    passed,
                    code: r.u8()?,
                }
            }
            REJECTED => Event::Rejected {
                seq: r.u8()?,
                reason: r.u8()?,
            },
            _ => return Err(InvalidFrame::UnknownKind(kind)),
        })
    }
}
