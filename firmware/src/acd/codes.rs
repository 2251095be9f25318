//! The agent feature codes dialled from a phone, parsed into typed requests.
//!
//! Defaults: `*61<agent id>*<pin>#` log in, `*62` log out, `*63<reason>#` pause
//! (`*63#` without a reason), `*64` unpause, `*60<digit>` disposition (the customer
//! type 0-9 of the call the agent is wrapping up; a `#` after the digit is allowed);
//! for supervisors `*65<agent id>#` listen, `*66<agent id>#` whisper (coach the agent;
//! the caller does not hear it) and `*67<agent id>#` barge in (three-way) on the
//! agent's live call. The eight prefixes are configurable
//! ([`RawFeatureCodes`] -> [`FeatureCodes`]): 1 to 8 of `0-9 * #`, none a prefix of
//! another, so a dialled string matches at most one code.
//!
//! [`FeatureCodes::parse`] is pure and is called with the digits collected so far: it
//! says whether they are not an ACD code at all, a code still being dialled, a
//! complete request, or a malformed code (a clear error; call control plays the
//! error tone). Checking the PIN against `users.pin_hash` (argon2id, see
//! `accounts::password::verify_secret`) is the caller's job; the [`Pin`] type keeps
//! the digits out of `Debug` output and logs.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::InvalidValue;

use super::config::{AgentId, PauseReason};
use super::error::{ConfigError, FeatureCodeError};

/// The feature codes as written in a config file (all optional, defaults `*61` to `*64`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureCodes {
    /// Log-in prefix, followed by `<agent id>*<pin>#`.
    pub login: Option<String>,
    /// Log-out code.
    pub logout: Option<String>,
    /// Pause prefix, followed by `<reason>#` or `#`.
    pub pause: Option<String>,
    /// Unpause code.
    pub unpause: Option<String>,
    /// Disposition prefix, followed by one digit 0-9.
    pub disposition: Option<String>,
    /// Supervisor listen prefix, followed by `<agent id>#`.
    pub listen: Option<String>,
    /// Supervisor whisper prefix, followed by `<agent id>#`.
    pub whisper: Option<String>,
    /// Supervisor barge prefix, followed by `<agent id>#`.
    pub barge: Option<String>,
}

/// Validated feature codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCodes {
    login: String,
    logout: String,
    pause: String,
    unpause: String,
    disposition: String,
    listen: String,
    whisper: String,
    barge: String,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        FeatureCodes {
            login: "*61".to_owned(),
            logout: "*62".to_owned(),
            pause: "*63".to_owned(),
            unpause: "*64".to_owned(),
            disposition: "*60".to_owned(),
            listen: "*65".to_owned(),
            whisper: "*66".to_owned(),
            barge: "*67".to_owned(),
        }
    }
}

impl TryFrom<RawFeatureCodes> for FeatureCodes {
    type Error = ConfigError;

    fn try_from(raw: RawFeatureCodes) -> Result<Self, ConfigError> {
        let d = FeatureCodes::default();
        let codes = FeatureCodes {
            login: raw.login.unwrap_or(d.login),
            logout: raw.logout.unwrap_or(d.logout),
            pause: raw.pause.unwrap_or(d.pause),
            unpause: raw.unpause.unwrap_or(d.unpause),
            disposition: raw.disposition.unwrap_or(d.disposition),
            listen: raw.listen.unwrap_or(d.listen),
            whisper: raw.whisper.unwrap_or(d.whisper),
            barge: raw.barge.unwrap_or(d.barge),
        };
        let all = codes.named();
        for (field, code) in all {
            if !(1..=8).contains(&code.len())
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
            {
                return Err(ConfigError::FeatureCode {
                    field,
                    code: code.to_owned(),
                    message: "must be 1 to 8 of 0-9, * and #".to_owned(),
                });
            }
        }
        for (i, (field, code)) in all.iter().enumerate() {
            for (j, (other_field, other)) in all.iter().enumerate() {
                if i != j && other.starts_with(code) {
                    return Err(ConfigError::FeatureCode {
                        field,
                        code: (*code).to_owned(),
                        message: format!("is a prefix of the {other_field} code {other:?}"),
                    });
                }
            }
        }
        Ok(codes)
    }
}

/// A PIN as dialled: 4 to 8 digits. `Debug` and `Display` do not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// The digits, for the hash check.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

impl FromStr for Pin {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if (4..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Pin(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "PIN",
                // Never echo what may be a real PIN.
                value: String::new(),
                reason: "must be 4 to 8 digits",
            })
        }
    }
}

/// What an agent asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureRequest {
    /// Log in (on the phone dialled from, once the PIN checks out).
    Login {
        /// The agent ID.
        agent: AgentId,
        /// The PIN to check.
        pin: Pin,
    },
    /// Log out.
    Logout,
    /// Pause, with a reason code if one was dialled.
    Pause {
        /// The reason.
        reason: Option<PauseReason>,
    },
    /// Unpause.
    Unpause,
    /// Tag the call being wrapped up with the customer type of this keypad digit.
    Disposition {
        /// 0 to 9.
        digit: u8,
    },
    /// A supervisor joins the agent's live call (the right is checked by the caller,
    /// against the roles of the user owning the dialling extension).
    Supervise {
        /// The agent whose call is joined.
        agent: AgentId,
        /// How.
        mode: SuperviseMode,
    },
}

/// How a supervisor joins an agent's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuperviseMode {
    /// Hears agent and caller; nobody hears the supervisor.
    Listen,
    /// Hears both; only the agent hears the supervisor (coaching).
    Whisper,
    /// A full third party: everyone hears everyone.
    Barge,
}

impl SuperviseMode {
    /// Lower-case name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SuperviseMode::Listen => "listen",
            SuperviseMode::Whisper => "whisper",
            SuperviseMode::Barge => "barge",
        }
    }
}

/// The result of parsing digits dialled so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not an ACD feature code (leave it to the dial plan).
    NotACode,
    /// An ACD code being dialled: wait for more digits.
    Incomplete,
    /// A complete request.
    Request(FeatureRequest),
}

impl FeatureCodes {
    fn named(&self) -> [(&'static str, &str); 8] {
        [
            ("login", &self.login),
            ("logout", &self.logout),
            ("pause", &self.pause),
            ("unpause", &self.unpause),
            ("disposition", &self.disposition),
            ("listen", &self.listen),
            ("whisper", &self.whisper),
            ("barge", &self.barge),
        ]
    }

    /// Parses the digits dialled so far. See the module docs.
    pub fn parse(&self, dialled: &str) -> Result<Parsed, FeatureCodeError> {
        if dialled.is_empty() {
            return Ok(Parsed::NotACode);
        }
        if let Some(rest) = dialled.strip_prefix(self.login.as_str()) {
            return parse_login(rest);
        }
        if let Some(rest) = dialled.strip_prefix(self.pause.as_str()) {
            return parse_pause(rest);
        }
        if let Some(rest) = dialled.strip_prefix(self.disposition.as_str()) {
            return parse_disposition(rest);
        }
        for (name, code, mode) in [
            ("listen", &self.listen, SuperviseMode::Listen),
            ("whisper", &self.whisper, SuperviseMode::Whisper),
            ("barge", &self.barge, SuperviseMode::Barge),
        ] {
            if let Some(rest) = dialled.strip_prefix(code.as_str()) {
                return parse_supervise(name, mode, rest);
            }
        }
        for (name, code, request) in [
            ("logout", &self.logout, FeatureRequest::Logout),
            ("unpause", &self.unpause, FeatureRequest::Unpause),
        ] {
            if let Some(rest) = dialled.strip_prefix(code.as_str()) {
                return if rest.is_empty() {
                    Ok(Parsed::Request(request))
                } else {
                    Err(FeatureCodeError::Trailing {
                        code: name,
                        rest: rest.to_owned(),
                    })
                };
            }
        }
        if self.named().iter().any(|(_, c)| c.starts_with(dialled)) {
            Ok(Parsed::Incomplete)
        } else {
            Ok(Parsed::NotACode)
        }
    }
}

fn parse_login(rest: &str) -> Result<Parsed, FeatureCodeError> {
    let bad_part = |source| FeatureCodeError::BadPart {
        code: "login",
        source,
    };
    match rest.strip_suffix('#') {
        None => {
            let stars = rest.bytes().filter(|&b| b == b'*').count();
            if stars <= 1 && rest.bytes().all(|b| b.is_ascii_digit() || b == b'*') {
                Ok(Parsed::Incomplete)
            } else {
                Err(FeatureCodeError::LoginShape(mask_pin(rest)))
            }
        }
        Some(body) => {
            let Some((agent, pin)) = body.split_once('*') else {
                return Err(FeatureCodeError::LoginShape(mask_pin(rest)));
            };
            let agent = agent.parse::<AgentId>().map_err(bad_part)?;
            let pin = pin.parse::<Pin>().map_err(bad_part)?;
            Ok(Parsed::Request(FeatureRequest::Login { agent, pin }))
        }
    }
}

/// The login digits with everything after the first `*` (the PIN) hidden.
fn mask_pin(rest: &str) -> String {
    match rest.split_once('*') {
        Some((agent, _)) => format!("{agent}*.."),
        None => rest.to_owned(),
    }
}

fn parse_disposition(rest: &str) -> Result<Parsed, FeatureCodeError> {
    match rest.as_bytes() {
        [] => Ok(Parsed::Incomplete),
        [d @ b'0'..=b'9'] | [d @ b'0'..=b'9', b'#'] => {
            Ok(Parsed::Request(FeatureRequest::Disposition {
                digit: d - b'0',
            }))
        }
        _ => Err(FeatureCodeError::Trailing {
            code: "disposition",
            rest: rest.to_owned(),
        }),
    }
}

fn parse_supervise(
    code: &'static str,
    mode: SuperviseMode,
    rest: &str,
) -> Result<Parsed, FeatureCodeError> {
    match rest.strip_suffix('#') {
        None if rest.bytes().all(|b| b.is_ascii_digit()) => Ok(Parsed::Incomplete),
        None => Err(FeatureCodeError::Trailing {
            code,
            rest: rest.to_owned(),
        }),
        Some(agent) => {
            let agent = agent
                .parse::<AgentId>()
                .map_err(|source| FeatureCodeError::BadPart { code, source })?;
            Ok(Parsed::Request(FeatureRequest::Supervise { agent, mode }))
        }
    }
}

fn parse_pause(rest: &str) -> Result<Parsed, FeatureCodeError> {
    match rest.strip_suffix('#') {
        None if rest.bytes().all(|b| b.is_ascii_digit()) => Ok(Parsed::Incomplete),
        None => Err(FeatureCodeError::Trailing {
            code: "pause",
            rest: rest.to_owned(),
        }),
        Some("") => Ok(Parsed::Request(FeatureRequest::Pause { reason: None })),
        Some(reason) => {
            let reason =
                reason
                    .parse::<PauseReason>()
                    .map_err(|source| FeatureCodeError::BadPart {
                        code: "pause",
                        source,
                    })?;
            Ok(Parsed::Request(FeatureRequest::Pause {
                reason: Some(reason),
            }))
        }
    }
}
