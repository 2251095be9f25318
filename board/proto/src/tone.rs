//! Tones and ring cadences. The daemon owns the per-country tables (ITU-T E.180); the
//! MCU only plays what it is told: up to two frequencies at a level, switched on and off
//! by a cadence of up to [`MAX_STEPS`] steps.

use heapless::Vec;

use crate::frame::{InvalidFrame, Reader, Writer};
use crate::EncodeError;

/// Most on/off steps in one cadence (UK ringback needs 2, the longest E.180 entries 4).
pub const MAX_STEPS: usize = 4;

/// One step of a cadence: sound for `on_ms`, then silence for `off_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CadenceStep {
    /// Milliseconds of tone or ringing.
    pub on_ms: u16,
    /// Milliseconds of silence after it.
    pub off_ms: u16,
}

/// A repeating cadence; an empty one means "continuous".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Cadence {
    /// The steps, played in order and then repeated.
    pub steps: Vec<CadenceStep, MAX_STEPS>,
}

impl Cadence {
    /// A continuous (un-interrupted) cadence.
    pub fn continuous() -> Self {
        Cadence { steps: Vec::new() }
    }

    /// A cadence from `(on_ms, off_ms)` pairs; `None` when there are more than [`MAX_STEPS`].
    pub fn from_pairs(pairs: &[(u16, u16)]) -> Option<Self> {
        let mut steps = Vec::new();
        for &(on_ms, off_ms) in pairs {
            steps.push(CadenceStep { on_ms, off_ms }).ok()?;
        }
        Some(Cadence { steps })
    }

    /// True when the cadence never pauses.
    pub fn is_continuous(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether sound is on at `t_ms` after the start of the cadence.
    pub fn is_on_at(&self, t_ms: u64) -> bool {
        let period: u64 = self
            .steps
            .iter()
            .map(|s| u64::from(s.on_ms) + u64::from(s.off_ms))
            .sum();
        if period == 0 {
            return true;
        }
        let mut t = t_ms % period;
        for s in &self.steps {
            if t < u64::from(s.on_ms) {
                return true;
            }
            t -= u64::from(s.on_ms);
            if t < u64::from(s.off_ms) {
                return false;
            }
            t -= u64::from(s.off_ms);
        }
        false
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.steps.len() as u8)?;
        for s in &self.steps {
            w.u16(s.on_ms)?;
            w.u16(s.off_ms)?;
        }
        Ok(())
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidFrame> {
        let n = r.u8()? as usize;
        if n > MAX_STEPS {
            return Err(InvalidFrame::BadField("cadence steps"));
        }
        let mut steps = Vec::new();
        for _ in 0..n {
            let on_ms = r.u16()?;
            let off_ms = r.u16()?;
            if on_ms == 0 {
                return Err(InvalidFrame::BadField("cadence on time"));
            }
            // Capacity was checked against MAX_STEPS above.
            steps
                .push(CadenceStep { on_ms, off_ms })
                .map_err(|_| InvalidFrame::BadField("cadence steps"))?;
        }
        Ok(Cadence { steps })
    }
}

/// A tone to play towards a phone (dial, ringback, busy, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToneSpec {
    /// First frequency in Hz (1..=4000).
    pub freq1_hz: u16,
    /// Second frequency in Hz, or 0 for a single-frequency tone.
    pub freq2_hz: u16,
    /// Level per frequency in dBm0 (e.g. -13); the MCU clamps to its range.
    pub level_dbm0: i8,
    /// When the tone sounds.
    pub cadence: Cadence,
}

impl ToneSpec {
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.freq1_hz)?;
        w.u16(self.freq2_hz)?;
        w.u8(self.level_dbm0 as u8)?;
        self.cadence.write(w)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, InvalidFrame> {
        let freq1_hz = r.u16()?;
        let freq2_hz = r.u16()?;
        if freq1_hz == 0 || freq1_hz > 4000 || freq2_hz > 4000 {
            return Err(InvalidFrame::BadField("tone frequency"));
        }
        let level_dbm0 = r.u8()? as i8;
        if !(-60..=3).contains(&level_dbm0) {
            return Err(InvalidFrame::BadField("tone level"));
        }
        let cadence = Cadence::read(r)?;
        Ok(ToneSpec {
            freq1_hz,
            freq2_hz,
            level_dbm0,
            cadence,
        })
    }
}
