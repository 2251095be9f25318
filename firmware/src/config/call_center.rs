//! `[call_center]`: the agent feature codes. Queues, agents, skills and overflow rules
//! live in the store (migration 0007, synced from HQ); only what a phone dials is
//! configured here. Validated like the rest of the file: an error names the file, the
//! line and the field.
//!
//! ```toml
//! [call_center.feature_codes]   # all optional; these are the defaults
//! login = "*61"      # then <agent id>*<pin>#
//! logout = "*62"
//! pause = "*63"      # then <reason>#, or # for none
//! unpause = "*64"
//! disposition = "*60" # then one digit 0-9 (the customer type), during wrap-up
//! listen = "*65"     # supervisors: then <agent id>#
//! whisper = "*66"    # then <agent id>#
//! barge = "*67"      # then <agent id>#
//! ```
//!
//! Each code is 1 to 8 of `0-9 * #`, and none may be a prefix of another, so a dialled
//! string matches at most one code (see [`crate::acd::codes`]).

use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::acd::codes::{FeatureCodes, RawFeatureCodes};
use crate::acd::ConfigError;
use crate::error::Result;

/// `[call_center]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallCenter {
    pub feature_codes: Option<Spanned<RawFeatureCodes>>,
}

/// `[call_center]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCenterConfig {
    /// The agent feature codes.
    pub feature_codes: FeatureCodes,
}

impl Ctx<'_> {
    /// `[call_center]`.
    pub(super) fn call_center(&self, raw: RawCallCenter) -> Result<CallCenterConfig> {
        let Some(codes) = raw.feature_codes else {
            return Ok(CallCenterConfig::default());
        };
        let span = codes.span();
        let feature_codes = FeatureCodes::try_from(codes.into_inner()).map_err(|e| {
            let field = match &e {
                ConfigError::FeatureCode { field, .. } => {
                    format!("call_center.feature_codes.{field}")
                }
                _ => "call_center.feature_codes".to_owned(),
            };
            self.invalid(span, field, e.to_string())
        })?;
        Ok(CallCenterConfig { feature_codes })
    }
}
