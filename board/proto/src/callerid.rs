//! Caller-ID data: what the MCU reports when an FXO line rings, and what the daemon
//! asks it to transmit to an FXS phone (Bellcore/ETSI FSK MDMF or DTMF CLIP).

use heapless::String;

use crate::frame::{InvalidFrame, Reader, Writer};

/// Longest caller number carried (ETSI/Bellcore MDMF allow 20 digits).
pub const MAX_NUMBER: usize = 20;
/// Longest caller name carried (MDMF allows 15 in the US, more in ETSI; 32 is enough).
pub const MAX_NAME: usize = 32;

/// How the caller's identity may be presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presentation {
    /// Number (and name if any) may be shown.
    Allowed,
    /// The caller withheld their identity ("P" / "Private").
    Private,
    /// The network does not know the identity ("O" / "Out of area").
    Unavailable,
}

impl Presentation {
    fn to_byte(self) -> u8 {
        match self {
            Presentation::Allowed => 0,
            Presentation::Private => 1,
            Presentation::Unavailable => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, InvalidFrame> {
        Ok(match b {
            0 => Presentation::Allowed,
            1 => Presentation::Private,
            2 => Presentation::Unavailable,
            _ => return Err(InvalidFrame::BadField("presentation")),
        })
    }
}

/// Date and time stamp sent with caller ID (local time, no year, as in MDMF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerIdTime {
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
}

/// The caller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId {
    /// Presentation indicator.
    pub presentation: Presentation,
    /// Digits `0-9`, `*`, `#` and a leading `+`; empty when not presented.
    pub number: String<MAX_NUMBER>,
    /// Printable ASCII; may be empty.
    pub name: String<MAX_NAME>,
    /// Date and time, when the sender has a clock.
    pub time: Option<CallerIdTime>,
}

/// Why a caller ID could not be built from the given strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerIdError {
    /// Number longer than [`MAX_NUMBER`] or with characters other than digits, `*`, `#`, leading `+`.
    BadNumber,
    /// Name longer than [`MAX_NAME`] or not printable ASCII.
    BadName,
}

impl CallerId {
    /// A presentable caller ID with number and name.
    pub fn new(number: &str, name: &str) -> Result<Self, CallerIdError> {
        if !valid_number(number.as_bytes()) {
            return Err(CallerIdError::BadNumber);
        }
        if !valid_name(name.as_bytes()) {
            return Err(CallerIdError::BadName);
        }
        let mut n = String::new();
        n.push_str(number).map_err(|_| CallerIdError::BadNumber)?;
        let mut m = String::new();
        m.push_str(name).map_err(|_| CallerIdError::BadName)?;
        Ok(CallerId {
            presentation: Presentation::Allowed,
            number: n,
            name: m,
            time: None,
        })
    }

    /// A caller ID that says "private" with no number.
    pub fn private() -> Self {
        CallerId {
            presentation: Presentation::Private,
            number: String::new(),
            name: String::new(),
            time: None,
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), crate::EncodeError> {
        w.u8(self.presentation.to_byte())?;
        w.u8(self.number.len() as u8)?;
        w.bytes(self.number.as_bytes())?;
        w.u8(self.name.len() as u8)?;
        w.bytes(self.name.as_bytes())?;
        match self.time {
            None => w.u8(0),
            Some(t) => {
                w.u8(1)?;
                w.bytes(&[t.month, t.day, t.hour, t.minute])
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidFrame> {
        let presentation = Presentation::from_byte(r.u8()?)?;
        let n = r.u8()? as usize;
        let number = r.bytes(n)?;
        if n > MAX_NUMBER || !valid_number(number) {
            return Err(InvalidFrame::BadField("caller number"));
        }
        let n = r.u8()? as usize;
        let name = r.bytes(n)?;
        if n > MAX_NAME || !valid_name(name) {
            return Err(InvalidFrame::BadField("caller name"));
        }
        let time = match r.u8()? {
            0 => None,
            1 => {
                let b = r.bytes(4)?;
                let t = CallerIdTime {
                    month: b[0],
                    day: b[1],
                    hour: b[2],
                    minute: b[3],
                };
                if !(1..=12).contains(&t.month)
                    || !(1..=31).contains(&t.day)
                    || t.hour > 23
                    || t.minute > 59
                {
                    return Err(InvalidFrame::BadField("caller-id time"));
                }
                Some(t)
            }
            _ => return Err(InvalidFrame::BadField("caller-id time flag")),
        };
        // Both were validated as ASCII above, so these conversions cannot fail.
        let mut out = CallerId {
            presentation,
            number: String::new(),
            name: String::new(),
            time,
        };
        for &c in number {
            out.number
                .push(c as char)
                .map_err(|_| InvalidFrame::BadField("caller number"))?;
        }
        for &c in name {
            out.name
                .push(c as char)
                .map_err(|_| InvalidFrame::BadField("caller name"))?;
        }
        Ok(out)
    }
}

fn valid_number(b: &[u8]) -> bool {
    b.len() <= MAX_NUMBER
        && b.iter()
            .enumerate()
            .all(|(i, &c)| c.is_ascii_digit() || c == b'*' || c == b'#' || (c == b'+' && i == 0))
}

fn valid_name(b: &[u8]) -> bool {
    b.len() <= MAX_NAME && b.iter().all(|&c| (0x20..0x7f).contains(&c))
}

/// How caller ID is signalled to an analog phone; countries differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerIdMode {
    /// Bell 202 FSK, MDMF, after the first ring (US, CN, JP variants).
    FskBell202,
    /// V.23 FSK, MDMF, before the first ring with line reversal (UK BT, FR, DE ETSI).
    FskV23,
    /// DTMF CLIP before the first ring (some EU/Asian networks).
    Dtmf,
}

impl CallerIdMode {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            CallerIdMode::FskBell202 => 0,
            CallerIdMode::FskV23 => 1,
            CallerIdMode::Dtmf => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Self, InvalidFrame> {
        Ok(match b {
            0 => CallerIdMode::FskBell202,
            1 => CallerIdMode::FskV23,
            2 => CallerIdMode::Dtmf,
            _ => return Err(InvalidFrame::BadField("caller-id mode")),
        })
    }
}
