//! ITU-T G.711 companding: 16-bit linear PCM to and from 8-bit µ-law and A-law.
//!
//! Written here rather than taken from a crate because it must be `no_std`, branch-free
//! enough for the MCU, and is about forty lines; decoding uses tables built at compile
//! time. Round-trips are exact on the companded side (`encode(decode(x)) == x`), which
//! the tests check for all 256 codes of both laws.

/// Companding law of an audio frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (North America, Japan).
    Ulaw,
    /// A-law (Europe, China, most of the world).
    Alaw,
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Linear 16-bit sample to µ-law.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && (s & mask) == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// µ-law to linear 16-bit sample.
pub const fn ulaw_to_linear_calc(code: u8) -> i16 {
    let u = !code;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear 16-bit sample to A-law.
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s >= 0 { 0xD5 } else { 0x55 };
    if s < 0 {
        s = -s - 1;
    }
    if s > 32767 {
        s = 32767;
    }
    let code = if s < 256 {
        s >> 4
    } else {
        let mut exponent = 7;
        let mut mask = 0x4000;
        while exponent > 1 && (s & mask) == 0 {
            exponent -= 1;
            mask >>= 1;
        }
        (exponent << 4) | ((s >> (exponent + 3)) & 0x0F)
    };
    (code as u8) ^ sign
}

/// A-law to linear 16-bit sample.
pub const fn alaw_to_linear_calc(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear_calc(i as u8)
        } else {
            ulaw_to_linear_calc(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

/// µ-law to linear (table lookup).
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// A-law to linear (table lookup).
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

impl Law {
    /// Compands one linear sample.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(sample),
            Law::Alaw => linear_to_alaw(sample),
        }
    }

    /// Expands one companded sample.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_to_linear(code),
            Law::Alaw => alaw_to_linear(code),
        }
    }

    /// The code for silence (linear 0).
    pub fn silence(self) -> u8 {
        self.encode(0)
    }

    /// Compands a block of samples; `out` must be at least as long as `pcm`.
    pub fn encode_block(self, pcm: &[i16], out: &mut [u8]) {
        for (o, &s) in out.iter_mut().zip(pcm) {
            *o = self.encode(s);
        }
    }

    /// Expands a block of codes; `out` must be at least as long as `codes`.
    pub fn decode_block(self, codes: &[u8], out: &mut [i16]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = self.decode(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for law in [Law::Ulaw, Law::Alaw] {
            for c in 0..=255u8 {
                let lin = law.decode(c);
                let back = law.encode(lin);
                // µ-law has two codes for zero (0x7F and 0xFF); both decode to 0.
                if law == Law::Ulaw && lin == 0 {
                    assert_eq!(back, 0xFF);
                } else {
                    assert_eq!(back, c, "{law:?} code {c:#04x} -> {lin} -> {back:#04x}");
                }
            }
        }
    }

    #[test]
    fn known_values() {
        // Reference points from ITU-T G.711 tables.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn companding_error_is_bounded() {
        for law in [Law::Ulaw, Law::Alaw] {
            for s in (-32768i32..=32767).step_by(7) {
                let s = s as i16;
                let back = law.decode(law.encode(s)) as i32;
                let err = (back - s as i32).abs();
                // Quantisation step is at most 1/16 of the segment's magnitude (+ clip).
                let bound = (s as i32).abs() / 16 + 140;
                assert!(err <= bound, "{law:?} {s} -> {back}");
            }
        }
    }
}
