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
