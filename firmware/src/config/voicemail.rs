//! `[voicemail]`: the voicemail feature codes. Mailboxes live in the store (migration
//! 0014, see [`crate::voicemail`]); only what a phone dials is configured here.
//!
//! ```toml
//! [voicemail]         # all optional; these are the defaults
//! own_code = "*97"    # the phone's own mailbox
//! any_code = "*98"    # then <mailbox>#, then <PIN>#
//! ```
//!
//! Each code is 1 to 8 of `0-9 * #`; neither may be a prefix of the other or clash
//! with the call center's feature codes (`[call_center.feature_codes]`), so a dialled
//! string matches at most one code.

use serde::Deserialize;
use toml::Spanned;

use super::{CallCenterConfig, Ctx};
use crate::acd::codes::Parsed;
use crate::call::VoicemailCodes;
use crate::error::Result;

/// `[voicemail]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVoicemail {
    pub own_code: Option<Spanned<String>>,
    pub any_code: Option<Spanned<String>>,
}

/// `[voicemail]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoicemailConfig {
    /// The feature codes.
    pub codes: VoicemailCodes,
}

impl Ctx<'_> {
    /// `[voicemail]`, checked against the call center's codes.
    pub(super) fn voicemail(
        &self,
        raw: RawVoicemail,
        call_center: &CallCenterConfig,
    ) -> Result<VoicemailConfig> {
        let d = VoicemailCodes::default();
        let mut codes = Vec::new();
        for (field, value, default) in [
            ("voicemail.own_code", raw.own_code, d.own),
            ("voicemail.any_code", raw.any_code, d.any),
        ] {
            let (span, code) = match value {
                Some(v) => (v.span(), v.into_inner()),
                None => (0..0, default),
            };
            if !(1..=8).contains(&code.len())
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
            {
                return Err(self.invalid(span, field, "must be 1 to 8 of 0-9, * and #"));
            }
            if !matches!(call_center.feature_codes.parse(&code), Ok(Parsed::NotACode)) {
                return Err(self.invalid(
                    span,
                    field,
                    format!("{code:?} clashes with a call center feature code (one is a prefix of the other)"),
                ));
            }
            codes.push((span, field, code));
        }
        let (own, any) = (&codes[0], &codes[1]);
        if own.2.starts_with(&any.2) || any.2.starts_with(&own.2) {
            return Err(self.invalid(
                any.0.clone(),
                any.1,
                "own_code and any_code must not be a prefix of each other",
            ));
        }
        Ok(VoicemailConfig {
            codes: VoicemailCodes {
                own: own.2.clone(),
                any: any.2.clone(),
            },
        })
    }
}
