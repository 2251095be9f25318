//! Per-country tones and ring cadences (ITU-T E.180 supplement) and caller-ID modes.

/// A country whose tone plan the box knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Country {
    /// United States (and NANP).
    Us,
    /// United Kingdom.
    Uk,
    /// Germany.
    De,
    /// France.
    Fr,
    /// China.
    Cn,
    /// Japan.
    Jp,
}

impl Country {
    /// Every supported country.
    pub const ALL: [Country; 6] = [
        Country::Us,
        Country::Uk,
        Country::De,
        Country::Fr,
        Country::Cn,
        Country::Jp,
    ];

    /// Parses an ISO 3166 alpha-2 code (case-insensitive; `GB` is accepted for `UK`).
    pub fn from_code(code: &str) -> Option<Country> {
        Some(match code.to_ascii_uppercase().as_str() {
            "US" => Country::Us,
            "UK" | "GB" => Country::Uk,
            "DE" => Country::De,
            "FR" => Country::Fr,
            "CN" => Country::Cn,
            "JP" => Country::Jp,
            _ => return None,
        })
    }

    /// The code used in config files.
    pub fn code(self) -> &'static str {
        match self {
            Country::Us => "US",
            Country::Uk => "UK",
            Country::De => "DE",
            Country::Fr => "FR",
            Country::Cn => "CN",
            Country::Jp => "JP",
        }
    }
}

use line_proto::g711::Law;
use line_proto::{Cadence, CallerIdMode, ToneSpec};

/// The call-progress tones the box plays towards a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tone {
    /// Off-hook, ready for digits.
    Dial,
    /// The called party is being rung.
    Ringback,
    /// The called party is busy (also played after the far end hangs up).
    Busy,
    /// No route or no free line; ring timeout.
    Congestion,
    /// A second call waits (played over the conversation).
    CallWaiting,
    /// The dialled number does not exist.
    Unobtainable,
    /// A feature code was accepted (agent logged in, paused, ...): three short beeps
    /// at the dial-tone frequencies, repeated every 2 s.
    Confirmation,
    /// Music on hold generated from tones (a caller waiting in a queue): a soft
    /// two-note chime (G4 + B4) every 3 s, the same in every country.
    MusicOnHold,
    /// Message waiting: the country's dial tone interrupted 0.1 s on / 0.1 s off
    /// (Telcordia GR-506 "stutter dial tone"; call control plays it for
    /// [`crate::call::voicemail::STUTTER`], then steady dial tone).
    StutterDial,
    /// The beep before a voicemail message is recorded: 1000 Hz, steady (call control
    /// times it).
    VoicemailBeep,
}

/// Per-tone level in dBm0 (E.180 recommends -10 to -24 dBm0 per frequency).
const LEVEL_DIAL: i8 = -13;
const LEVEL_PROGRESS: i8 = -19;
const LEVEL_HOLD: i8 = -22;

fn spec(f1: u16, f2: u16, level: i8, cadence: &[(u16, u16)]) -> ToneSpec {
    ToneSpec {
        freq1_hz: f1,
        freq2_hz: f2,
        level_dbm0: level,
        // Every table entry below has at most MAX_STEPS steps.
        cadence: Cadence::from_pairs(cadence).unwrap_or_default(),
    }
}

impl Country {
    /// The tone as this country's network plays it (ITU-T E.180 supplement 2 values).
    pub fn tone(self, tone: Tone) -> ToneSpec {
        use Tone::*;
        match (self, tone) {
            (_, Confirmation) => {
                let dial = self.tone(Dial);
                spec(
                    dial.freq1_hz,
                    dial.freq2_hz,
                    LEVEL_PROGRESS,
                    &[(100, 100), (100, 100), (100, 1500)],
                )
            }
            (_, MusicOnHold) => spec(392, 494, LEVEL_HOLD, &[(400, 2600)]),
            (_, StutterDial) => {
                let dial = self.tone(Dial);
                spec(dial.freq1_hz, dial.freq2_hz, LEVEL_DIAL, &[(100, 100)])
            }
            (_, VoicemailBeep) => spec(1000, 0, LEVEL_PROGRESS, &[]),
            // United States (Telcordia GR-506 "precise tone plan").
            (Country::Us, Dial) => spec(350, 440, LEVEL_DIAL, &[]),
            (Country::Us, Ringback) => spec(440, 480, LEVEL_PROGRESS, &[(2000, 4000)]),
            (Country::Us, Busy) => spec(480, 620, LEVEL_PROGRESS, &[(500, 500)]),
            (Country::Us, Congestion | Unobtainable) => {
                spec(480, 620, LEVEL_PROGRESS, &[(250, 250)])
            }
            (Country::Us, CallWaiting) => spec(440, 0, LEVEL_PROGRESS, &[(300, 9700)]),
            // United Kingdom (BT SIN 350).
            (Country::Uk, Dial) => spec(350, 440, LEVEL_DIAL, &[]),
            (Country::Uk, Ringback) => spec(400, 450, LEVEL_PROGRESS, &[(400, 200), (400, 2000)]),
            (Country::Uk, Busy) => spec(400, 0, LEVEL_PROGRESS, &[(375, 375)]),
            (Country::Uk, Congestion) => spec(400, 0, LEVEL_PROGRESS, &[(400, 350), (225, 525)]),
            (Country::Uk, Unobtainable) => spec(400, 0, LEVEL_PROGRESS, &[]),
            (Country::Uk, CallWaiting) => spec(400, 0, LEVEL_PROGRESS, &[(100, 2000)]),
            // Germany (FTZ 1 TR 110).
            (Country::De, Dial) => spec(425, 0, LEVEL_DIAL, &[]),
            (Country::De, Ringback) => spec(425, 0, LEVEL_PROGRESS, &[(1000, 4000)]),
            (Country::De, Busy) => spec(425, 0, LEVEL_PROGRESS, &[(480, 480)]),
            (Country::De, Congestion | Unobtainable) => spec(425, 0, LEVEL_PROGRESS, &[(240, 240)]),
            (Country::De, CallWaiting) => spec(425, 0, LEVEL_PROGRESS, &[(200, 200), (200, 5000)]),
            // France.
            (Country::Fr, Dial) => spec(440, 0, LEVEL_DIAL, &[]),
            (Country::Fr, Ringback) => spec(440, 0, LEVEL_PROGRESS, &[(1500, 3500)]),
            (Country::Fr, Busy) => spec(440, 0, LEVEL_PROGRESS, &[(500, 500)]),
            (Country::Fr, Congestion | Unobtainable) => spec(440, 0, LEVEL_PROGRESS, &[(250, 250)]),
            (Country::Fr, CallWaiting) => spec(440, 0, LEVEL_PROGRESS, &[(300, 10000)]),
            // China (GB 3380 / YD/T 1258).
            (Country::Cn, Dial) => spec(450, 0, LEVEL_DIAL, &[]),
            (Country::Cn, Ringback) => spec(450, 0, LEVEL_PROGRESS, &[(1000, 4000)]),
            (Country::Cn, Busy) => spec(450, 0, LEVEL_PROGRESS, &[(350, 350)]),
            (Country::Cn, Congestion | Unobtainable) => spec(450, 0, LEVEL_PROGRESS, &[(700, 700)]),
            (Country::Cn, CallWaiting) => spec(450, 0, LEVEL_PROGRESS, &[(400, 4000)]),
            // Japan (NTT).
            (Country::Jp, Dial) => spec(400, 0, LEVEL_DIAL, &[]),
            (Country::Jp, Ringback) => spec(400, 0, LEVEL_PROGRESS, &[(1000, 2000)]),
            (Country::Jp, Busy) => spec(400, 0, LEVEL_PROGRESS, &[(500, 500)]),
            (Country::Jp, Congestion | Unobtainable) => spec(400, 0, LEVEL_PROGRESS, &[(500, 500)]),
            (Country::Jp, CallWaiting) => spec(400, 0, LEVEL_PROGRESS, &[(100, 100), (100, 3000)]),
        }
    }

    /// The ring cadence for analog phones.
    pub fn ring_cadence(self) -> Cadence {
        let pairs: &[(u16, u16)] = match self {
            Country::Us => &[(2000, 4000)],
            Country::Uk => &[(400, 200), (400, 2000)],
            Country::De | Country::Cn => &[(1000, 4000)],
            Country::Fr => &[(1500, 3500)],
            Country::Jp => &[(1000, 2000)],
        };
        Cadence::from_pairs(pairs).unwrap_or_default()
    }

    /// How caller ID is sent to analog phones.
    pub fn caller_id_mode(self) -> CallerIdMode {
        match self {
            Country::Us | Country::Cn => CallerIdMode::FskBell202,
            Country::Uk | Country::De | Country::Fr | Country::Jp => CallerIdMode::FskV23,
        }
    }

    /// The G.711 law the country's network uses.
    pub fn default_law(self) -> Law {
        match self {
            Country::Us | Country::Jp => Law::Ulaw,
            _ => Law::Alaw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in Country::ALL {
            assert_eq!(Country::from_code(c.code()), Some(c));
        }
        assert_eq!(Country::from_code("gb"), Some(Country::Uk));
        assert_eq!(Country::from_code("XX"), None);
    }

    #[test]
    fn every_tone_is_well_formed() {
        let tones = [
            Tone::Dial,
            Tone::Ringback,
            Tone::Busy,
            Tone::Congestion,
            Tone::CallWaiting,
            Tone::Unobtainable,
            Tone::Confirmation,
            Tone::MusicOnHold,
        ];
        for c in Country::ALL {
            for t in tones {
                let s = c.tone(t);
                assert!((300..=500).contains(&s.freq1_hz), "{c:?} {t:?}");
                assert!(s.freq2_hz == 0 || (300..=700).contains(&s.freq2_hz));
                // Dial tone is continuous everywhere; ringback and busy never are.
                if t == Tone::Dial {
                    assert!(s.cadence.is_continuous(), "{c:?} dial tone");
                }
                if matches!(
                    t,
                    Tone::Ringback
                        | Tone::Busy
                        | Tone::CallWaiting
                        | Tone::Confirmation
                        | Tone::MusicOnHold
                ) {
                    assert!(!s.cadence.is_continuous(), "{c:?} {t:?}");
                }
            }
            assert!(!c.ring_cadence().is_continuous());
        }
    }

    #[test]
    fn us_and_de_values() {
        let d = Country::Us.tone(Tone::Dial);
        assert_eq!((d.freq1_hz, d.freq2_hz), (350, 440));
        let b = Country::De.tone(Tone::Busy);
        assert_eq!(b.freq1_hz, 425);
        assert!(b.cadence.is_on_at(100) && !b.cadence.is_on_at(600));
    }
}
