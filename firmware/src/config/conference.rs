//! `[[conference_rooms]]`: meet-me conference rooms dialled like extensions.
//!
//! ```toml
//! [[conference_rooms]]
//! number = "800"        # dialled from a phone (2 to 6 digits, not an extension's)
//! pin = "4711"          # 4 to 8 digits, asked for after answer
//! max_parties = 8       # 2 to 32, default 8
//! ```
//!
//! A room's number must not be an extension or a prefix of one (either way), nor start
//! with the outside-line prefix, and two rooms may not share a number.

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, ExtensionConfig, ExtensionNumber, TelephonyConfig};
use crate::acd::codes::Pin;
use crate::error::Result;

/// Parties a room takes when `max_parties` is not set.
pub const DEFAULT_MAX_PARTIES: u32 = 8;
/// The largest `max_parties` accepted.
pub const MAX_PARTIES: u32 = 32;

/// One `[[conference_rooms]]` entry as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConferenceRoom {
    pub number: Spanned<String>,
    pub pin: Spanned<String>,
    pub max_parties: Option<Spanned<i64>>,
}

/// A validated meet-me room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceRoomConfig {
    /// The number that reaches it.
    pub number: ExtensionNumber,
    /// The PIN asked for before joining.
    pub pin: Pin,
    /// Parties at most (2 to [`MAX_PARTIES`]).
    pub max_parties: u32,
}

impl Ctx<'_> {
    /// `[[conference_rooms]]`, checked against the extensions and the outside prefix.
    pub(super) fn conference_rooms(
        &self,
        raw: Vec<RawConferenceRoom>,
        extensions: &[ExtensionConfig],
        telephony: &TelephonyConfig,
    ) -> Result<Vec<ConferenceRoomConfig>> {
        let mut out: Vec<ConferenceRoomConfig> = Vec::with_capacity(raw.len());
        for (i, room) in raw.into_iter().enumerate() {
            let field = |name: &str| format!("conference_rooms[{i}].{name}");
            let number: ExtensionNumber = self.parse(&room.number, &field("number"))?;
            let bad_number =
                |message: String| self.invalid(room.number.span(), field("number"), message);
            let n = number.as_str();
            if let Some(prefix) = &telephony.outside_line_prefix {
                if n.starts_with(prefix.as_str()) {
                    return Err(bad_number(format!(
                        "room {n} starts with the outside line prefix {:?}",
                        prefix.as_str()
                    )));
                }
            }
            if let Some(e) = extensions.iter().find(|e| {
                let x = e.number.as_str();
                x.starts_with(n) || n.starts_with(x)
            }) {
                return Err(bad_number(format!(
                    "room {n} collides with extension {}",
                    e.number
                )));
            }
            if let Some(j) = out.iter().position(|o| {
                let x = o.number.as_str();
                x.starts_with(n) || n.starts_with(x)
            }) {
                return Err(bad_number(format!(
                    "room {n} collides with conference_rooms[{j}] ({})",
                    out[j].number.as_str()
                )));
            }
            let pin: Pin =
                room.pin
                    .get_ref()
                    .parse()
                    .map_err(|e: crate::error::InvalidValue| {
                        self.invalid(room.pin.span(), field("pin"), e.to_string())
                    })?;
            let max_parties = match room.max_parties {
                None => DEFAULT_MAX_PARTIES,
                Some(m) => u32::try_from(*m.get_ref())
                    .ok()
                    .filter(|v| (2..=MAX_PARTIES).contains(v))
                    .ok_or_else(|| {
                        self.invalid(
                            m.span(),
                            field("max_parties"),
                            format!("must be 2 to {MAX_PARTIES}, got {}", m.get_ref()),
                        )
                    })?,
            };
            out.push(ConferenceRoomConfig {
                number,
                pin,
                max_parties,
            });
        }
        Ok(out)
    }
}
