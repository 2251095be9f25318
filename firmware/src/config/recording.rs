//! `[recording]`: which calls the box records, how long it keeps the files and how
//! much disk it always leaves free. The files go to `[paths] recordings`. Validated like
//! the rest of the file: every error names the file, the line and the field.
//!
//! ```toml
//! [recording]
//! default_policy = "never"      # extensions not listed: "always" | "never" | "on_demand"
//! policies = { "101" = "always", "102" = "on_demand" }
//! retention_days = 90           # 0 (default): keep recordings until deleted by hand
//! min_free_mb = 256             # never let recordings take the last 256 MB of the disk
//! toggle_code = "*1"            # keyed during a call: start / stop an on-demand recording
//! ```
//!
//! - Policies: `always` records every call of the extension from its first bridge;
//!   `on_demand` lets a party of the call start a recording by keying `toggle_code`
//!   during the call (and stop it by keying it again); `never` asks for nothing.
//!   Queues and agents carry a policy of their own in the store (`queues.recording`,
//!   `users.recording`, migration 0017); the most demanding policy of a call wins
//!   (see [`RecordingPolicy`] and [`crate::recorder::calls`]).
//! - `toggle_code`: 2 to 8 of `0-9 * #`, starting with `*` or `#` (a plain digit
//!   would be heard as ordinary DTMF too often). It is a mid-call code, so it is not
//!   one of the dialled feature codes of `[acd]` and may share their prefixes.
//! - Retention: a recording older than `retention_days` is deleted only once HQ has it
//!   (its `uploaded_at_ms` is set) when `[hq]` is configured; without `[hq]` nothing
//!   uploads, so age alone decides.
//! - No `[recording]` section: nothing is recorded, nothing is deleted, and the guard's
//!   reserve is the default.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, ExtensionConfig, SipAccountConfig};
use crate::error::Result;

/// Default and allowed range of `recording.retention_days` (0: keep forever).
pub const RETENTION_DAYS: (i64, RangeInclusive<i64>) = (0, 0..=3650);
/// Default and allowed range of `recording.min_free_mb`.
pub const MIN_FREE_MB: (i64, RangeInclusive<i64>) = (256, 16..=1_048_576);

/// `[recording]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecording {
    pub default_policy: Option<Spanned<String>>,
    #[serde(default)]
    pub policies: BTreeMap<String, Spanned<String>>,
    pub retention_days: Option<Spanned<i64>>,
    pub min_free_mb: Option<Spanned<i64>>,
    pub toggle_code: Option<Spanned<String>>,
}

/// Whether calls are recorded: the policy of an extension (analog or SIP account), a
/// queue or an agent.
///
/// Precedence: the policies that apply to a call (each analog or SIP extension in it,
/// its queue, the agent who answered) are combined with [`RecordingPolicy::max`], the
/// most demanding wins: `never` < `on_demand` < `always`. So `never` asks for nothing
/// and vetoes nothing; a call is recorded from its start when any of them is `always`,
/// may be recorded by the toggle code when the most demanding is `on_demand`, and is
/// not recorded when all are `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub enum RecordingPolicy {
    /// None (the least demanding).
    #[default]
    Never,
    /// When a party of the call keys the toggle code (`[recording] toggle_code`).
    OnDemand,
    /// Every call (the most demanding).
    Always,
}

impl RecordingPolicy {
    /// Every policy's name, for error messages.
    pub const NAMES: &'static str = "\"always\", \"never\" or \"on_demand\"";

    /// The policy named `s` (`always`, `never`, `on_demand`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "always" => Self::Always,
            "never" => Self::Never,
            "on_demand" => Self::OnDemand,
            _ => return None,
        })
    }

    /// Its name as written in config, store and API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Never => "never",
            Self::OnDemand => "on_demand",
        }
    }

    /// The most demanding of the policies (`Never` for none); see the type's docs.
    pub fn most_demanding(policies: impl IntoIterator<Item = Self>) -> Self {
        policies.into_iter().max().unwrap_or(Self::Never)
    }
}

/// `[recording]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Policy of extensions not in `policies`.
    pub default_policy: RecordingPolicy,
    /// Policy per extension number (each one an `[[extensions]]` or `[[sip_accounts]]`
    /// number).
    pub policies: BTreeMap<String, RecordingPolicy>,
    /// Recordings older than this are deleted (see the module docs); `None`: kept.
    pub retention: Option<Duration>,
    /// Free space the recordings filesystem keeps for the store and the system: a
    /// recording is not started, and is stopped, when free space would fall below it.
    pub min_free_bytes: u64,
    /// The code a party keys during a connected call to start, pause and resume an
    /// on-demand recording (default `*1`).
    pub toggle_code: String,
}

/// Default of `recording.toggle_code`.
pub const DEFAULT_TOGGLE_CODE: &str = "*1";

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            default_policy: RecordingPolicy::Never,
            policies: BTreeMap::new(),
            retention: None,
            min_free_bytes: mb(MIN_FREE_MB.0),
            toggle_code: DEFAULT_TOGGLE_CODE.to_owned(),
        }
    }
}

fn mb(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0) * 1024 * 1024
}

impl RecordingConfig {
    /// The policy of extension `number`.
    pub fn policy(&self, number: &str) -> RecordingPolicy {
        self.policies
            .get(number)
            .copied()
            .unwrap_or(self.default_policy)
    }
}

const POLICY_NAMES: &str = RecordingPolicy::NAMES;

impl Ctx<'_> {
    /// `[recording]`; policies must name configured extensions.
    pub(super) fn recording(
        &self,
        raw: RawRecording,
        extensions: &[ExtensionConfig],
        sip_accounts: &[SipAccountConfig],
    ) -> Result<RecordingConfig> {
        let policy = |v: &Spanned<String>, field: &str| {
            RecordingPolicy::parse(v.get_ref()).ok_or_else(|| {
                self.invalid(
                    v.span(),
                    field,
                    format!("{:?} is not a policy ({POLICY_NAMES})", v.get_ref()),
                )
            })
        };
        let default_policy = raw
            .default_policy
            .as_ref()
            .map(|v| policy(v, "recording.default_policy"))
            .transpose()?
            .unwrap_or_default();
        let mut policies = BTreeMap::new();
        for (number, value) in &raw.policies {
            let field = format!("recording.policies.{number}");
            let known = extensions.iter().any(|e| e.number.as_str() == number)
                || sip_accounts.iter().any(|a| a.extension.as_str() == number);
            if !known {
                return Err(self.invalid(
                    value.span(),
                    field,
                    format!("{number:?} is not an extension of [[extensions]] or [[sip_accounts]]"),
                ));
            }
            policies.insert(number.clone(), policy(value, &field)?);
        }
        let days = self.ranged(
            raw.retention_days,
            "recording.retention_days",
            RETENTION_DAYS,
        )?;
        let min_free = self.ranged(raw.min_free_mb, "recording.min_free_mb", MIN_FREE_MB)?;
        let toggle_code = match raw.toggle_code {
            None => DEFAULT_TOGGLE_CODE.to_owned(),
            Some(v) => {
                let code = v.get_ref();
                let ok = (2..=8).contains(&code.len())
                    && code.starts_with(['*', '#'])
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
                if !ok {
                    return Err(self.invalid(
                        v.span(),
                        "recording.toggle_code",
                        format!(
                            "{code:?} is not a toggle code (2 to 8 of 0-9 * #, starting with * or #)"
                        ),
                    ));
                }
                code.clone()
            }
        };
        Ok(RecordingConfig {
            default_policy,
            policies,
            retention: (days > 0)
                .then(|| Duration::from_secs(u64::try_from(days).unwrap_or(0) * 86_400)),
            min_free_bytes: mb(min_free),
            toggle_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::error::Error;

    const BASE: &str = r#"
[[extensions]]
number = "101"
port = 1

[[extensions]]
number = "102"
port = 2
"#;

    fn load(extra: &str) -> Result<Config> {
        Config::from_toml_str(&format!("{BASE}{extra}"), Path::new("/etc/b.toml"))
    }

    fn problem(extra: &str) -> (Option<usize>, String, String) {
        match load(extra) {
            Err(Error::ConfigInvalid {
                line,
                field,
                message,
                ..
            }) => (line, field, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn no_section_records_nothing() {
        let c = load("").expect("config");
        assert_eq!(c.recording, RecordingConfig::default());
        assert_eq!(c.recording.policy("101"), RecordingPolicy::Never);
        assert_eq!(c.recording.min_free_bytes, 256 * 1024 * 1024);
    }

    #[test]
    fn policies_retention_and_reserve() {
        let c = load(
            r#"
[recording]
default_policy = "on_demand"
policies = { "101" = "always", "102" = "never" }
retention_days = 30
min_free_mb = 64
"#,
        )
        .expect("config");
        let r = &c.recording;
        assert_eq!(r.policy("101"), RecordingPolicy::Always);
        assert_eq!(r.policy("102"), RecordingPolicy::Never);
        assert_eq!(r.policy("999"), RecordingPolicy::OnDemand);
        assert_eq!(r.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.min_free_bytes, 64 * 1024 * 1024);
        assert_eq!(r.toggle_code, "*1");
        let c = load("\n[recording]\ntoggle_code = \"#77\"\n").expect("config");
        assert_eq!(c.recording.toggle_code, "#77");
    }

    #[test]
    fn most_demanding_policy_wins() {
        use RecordingPolicy::*;
        assert_eq!(RecordingPolicy::most_demanding([]), Never);
        assert_eq!(RecordingPolicy::most_demanding([Never, Never]), Never);
        assert_eq!(RecordingPolicy::most_demanding([Never, OnDemand]), OnDemand);
        assert_eq!(
            RecordingPolicy::most_demanding([OnDemand, Always, Never]),
            Always
        );
        for p in [Always, Never, OnDemand] {
            assert_eq!(RecordingPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(RecordingPolicy::parse("sometimes"), None);
    }

    #[test]
    fn bad_values_name_line_and_field() {
        let (line, field, message) = problem("\n[recording]\ndefault_policy = \"sometimes\"\n");
        assert_eq!(line, Some(11));
        assert_eq!(field, "recording.default_policy");
        assert!(
            message.contains("\"sometimes\" is not a policy"),
            "{message}"
        );

        let (line, field, message) =
            problem("\n[recording]\npolicies = { \"103\" = \"always\" }\n");
        assert_eq!(line, Some(11));
        assert_eq!(field, "recording.policies.103");
        assert!(message.contains("not an extension"), "{message}");

        let (_, field, message) = problem("\n[recording]\npolicies = { \"101\" = \"yes\" }\n");
        assert_eq!(field, "recording.policies.101");
        assert!(message.contains("not a policy"), "{message}");

        let (line, field, message) = problem("\n[recording]\n\nmin_free_mb = 1\n");
        assert_eq!(line, Some(12));
        assert_eq!(field, "recording.min_free_mb");
        assert!(message.contains("out of range"), "{message}");

        let (_, field, _) = problem("\n[recording]\nretention_days = -1\n");
        assert_eq!(field, "recording.retention_days");

        let (line, field, message) = problem("\n[recording]\ntoggle_code = \"12\"\n");
        assert_eq!(line, Some(11));
        assert_eq!(field, "recording.toggle_code");
        assert!(message.contains("not a toggle code"), "{message}");
        let (_, field, _) = problem("\n[recording]\ntoggle_code = \"*\"\n");
        assert_eq!(field, "recording.toggle_code");
        let (_, field, _) = problem("\n[recording]\ntoggle_code = \"*1a\"\n");
        assert_eq!(field, "recording.toggle_code");

        let (_, field, message) = problem("\n[recording]\ndirectory = \"/tmp\"\n");
        assert!(field.starts_with("recording"), "{field}");
        assert!(message.contains("unknown field"), "{message}");
    }
}
