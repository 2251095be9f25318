//! Caller screening: the blacklist (or allowlist) of outside callers, as a sans-IO
//! matcher ([`Blacklist::screen`]) that call control asks for every inbound call from
//! outside the box (SIP trunk calls and PSTN rings on FXO lines), plus its store
//! ([`store`]: migration 0011's `blacklist` and `blacklist_settings` tables).
//!
//! # Entries
//!
//! An entry's [`Pattern`] is an exact number (`0301234567`, `+49301234567`), a prefix
//! (`0900*`: every number starting with `0900`), or `anonymous` (callers whose identity
//! is withheld or missing). Numbers are digits with an optional leading `+`, 1 to
//! [`MAX_PATTERN_DIGITS`] digits; nothing else is accepted (no spaces, dashes, `#`,
//! `*` other than last, and no bare `*`).
//!
//! A number is matched in all its forms: entries and callers are compared as written
//! and also in the canonical form of the site's numbering plan ([`crate::numbers`],
//! [`Blacklist::with_plan`]), so at a German site `0301234567` blocks a caller
//! presented as `+49301234567` or `0049301234567` and vice versa, and the prefix
//! `030*` blocks `+4930…` (`+4930*` blocks `030…`). A prefix is put in canonical form
//! by its leading international prefix (`0049*` is `+49*`) or trunk prefix (`030*` is
//! `+4930*`, `0*` is every national number); one the plan cannot place (`00*`, `49*`)
//! matches numbers as presented only. An exact entry in any form beats every prefix;
//! among prefixes, the longest matching the caller's canonical form wins, then the
//! longest matching the number as presented.
//!
//! Each entry has an [`EntryAction`]: `allow`, `busy`, `congestion` or `reject`, or
//! none, meaning what the list's [`Mode`] implies (`deny`: the settings'
//! `default_action`; `allow`: let the caller through). The most specific entry that
//! matches decides: an exact number (or `anonymous`) beats any prefix, a longer prefix
//! beats a shorter one. So `0900*` busy with `09001234567` allow lets that one number
//! through; in allow mode `49*` with `4930*` reject turns one area away.
//!
//! # Modes
//!
//! - `deny` (default): callers matching no entry get through; listed callers are
//!   blocked with their entry's action.
//! - `allow`: only listed callers get through; anyone else is blocked with the
//!   settings' `default_action`.
//!
//! # What a blocked caller gets
//!
//! | action | SIP trunk caller | PSTN caller on an FXO line |
//! | --- | --- | --- |
//! | `busy` | 486 Busy Here | not answered |
//! | `congestion` | 503 Service Unavailable | not answered |
//! | `reject` | 403 Forbidden | not answered |
//!
//! An analog line has no way to refuse a call before answer, so a blocked PSTN call
//! is never answered: no extension rings, the line is not seized, and the caller hears
//! the network's ringing until they give up (the CDR is written when the ringing
//! stops). This is what the FXO ports of commercial gateways do with a rejected call
//! (AudioCodes MediaPack and Grandstream GXW "deny" routes, Asterisk's `Hangup()` on
//! an unanswered DAHDI channel); answering to play a tone would start the caller's
//! tariff and tie up the line.
//!
//! A blocked call's CDR has the disposition `busy` (action `busy`) or `congestion`
//! (`congestion`, `reject`) and a `blocked` part naming the mode and the entry's
//! pattern (none when an allowlist lacked the caller).
//!
//! Limits: the match is on the presented number only (no P-Asserted-Identity
//! screening, no name matching); there is no time-of-day rule; HQ's entries carry no
//! action (they take the default); the mode is the box's own (HQ does not sync it).

pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::numbers::SitePlan;

/// Most digits in a pattern (caller ID carries at most 20; E.164 is 15).
pub const MAX_PATTERN_DIGITS: usize = 20;
/// Most characters in an entry's reason.
pub const MAX_REASON_CHARS: usize = 200;
/// The pattern that stands for callers with no (or a withheld) number.
pub const ANONYMOUS: &str = "anonymous";

/// A validated blacklist pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Exactly this number (digits, optional leading `+`).
    Exact(String),
    /// Any number starting with these digits (written with a trailing `*`).
    Prefix(String),
    /// Callers without a presented number.
    Anonymous,
}

/// Why a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing given.
    #[error("must not be empty (a number, a prefix ending in *, or \"anonymous\")")]
    Empty,
    /// No digit (`+`, or a bare `*`, which would match every caller).
    #[error("needs at least one digit (a bare * would match every caller)")]
    NoDigits,
    /// Too many digits.
    #[error("more than {MAX_PATTERN_DIGITS} digits")]
    TooLong,
    /// A character other than digits, a leading `+` and a trailing `*`.
    #[error(
        "{found:?} at position {at}: only digits, one leading + and one trailing * are allowed"
    )]
    BadChar {
        /// The character.
        found: char,
        /// Its 1-based position.
        at: usize,
    },
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s == ANONYMOUS {
            return Ok(Pattern::Anonymous);
        }
        let last = s.chars().count() - 1;
        for (i, c) in s.chars().enumerate() {
            let ok = c.is_ascii_digit() || (c == '+' && i == 0) || (c == '*' && i == last);
            if !ok {
                return Err(PatternError::BadChar {
                    found: c,
                    at: i + 1,
                });
            }
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let digits = body.strip_prefix('+').unwrap_or(body);
        if digits.is_empty() {
            return Err(PatternError::NoDigits);
        }
        if digits.len() > MAX_PATTERN_DIGITS {
            return Err(PatternError::TooLong);
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Anonymous => f.write_str(ANONYMOUS),
        }
    }
}

/// What a blocked caller gets (see the [module docs](self) for the SIP codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockAction {
    /// 486 Busy Here; CDR disposition `busy`.
    Busy,
    /// 503 Service Unavailable; CDR disposition `congestion`.
    Congestion,
    /// 403 Forbidden; CDR disposition `congestion`.
    Reject,
}

/// What an entry does to a caller it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryAction {
    /// Let the caller through (an exception inside a blocked prefix, or an allowlist
    /// entry).
    Allow,
    /// Block the caller.
    Block(BlockAction),
}

impl EntryAction {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryAction::Allow => "allow",
            EntryAction::Block(BlockAction::Busy) => "busy",
            EntryAction::Block(BlockAction::Congestion) => "congestion",
            EntryAction::Block(BlockAction::Reject) => "reject",
        }
    }
}

impl FromStr for EntryAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "allow" => EntryAction::Allow,
            "busy" => EntryAction::Block(BlockAction::Busy),
            "congestion" => EntryAction::Block(BlockAction::Congestion),
            "reject" => EntryAction::Block(BlockAction::Reject),
            other => {
                return Err(format!(
                    "{other:?} is not one of allow, busy, congestion, reject"
                ))
            }
        })
    }
}

impl BlockAction {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        EntryAction::Block(self).as_str()
    }
}

impl FromStr for BlockAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<EntryAction>()? {
            EntryAction::Block(a) => Ok(a),
            EntryAction::Allow => Err("must block: one of busy, congestion, reject".to_owned()),
        }
    }
}

/// Whether the list names callers to block or the only callers to let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Listed callers are blocked.
    #[default]
    Deny,
    /// Only listed callers get through.
    Allow,
}

impl Mode {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Allow => "allow",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(Mode::Deny),
            "allow" => Ok(Mode::Allow),
            other => Err(format!("{other:?} is not one of deny, allow")),
        }
    }
}

/// Who is calling, as far as screening cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A presented number.
    Number(&'a str),
    /// No number, or a withheld one.
    Anonymous,
}

impl<'a> Caller<'a> {
    /// A SIP caller from its From user part: anonymous when it holds no digit
    /// (`""`, `anonymous`, `restricted`, `unavailable`: RFC 3323 and carriers' habits).
    pub fn from_sip(number: &'a str) -> Caller<'a> {
        if number.bytes().any(|b| b.is_ascii_digit()) {
            Caller::Number(number)
        } else {
            Caller::Anonymous
        }
    }

    /// A PSTN caller from its caller ID: anonymous when none came, it is withheld
    /// ("P") or unavailable ("O"), or the number is empty.
    pub fn from_caller_id(caller_id: Option<&'a line_proto::CallerId>) -> Caller<'a> {
        match caller_id {
            Some(c)
                if c.presentation == line_proto::Presentation::Allowed && !c.number.is_empty() =>
            {
                Caller::Number(c.number.as_str())
            }
            _ => Caller::Anonymous,
        }
    }
}

/// The list's settings: its mode and the action of blocks with no entry action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Deny (blacklist) or allow (allowlist).
    pub mode: Mode,
    /// What a blocked caller gets when no entry says otherwise (deny-mode entries
    /// without an action, callers missing from an allowlist).
    pub default_action: BlockAction,
}

impl Default for Settings {
    /// Deny mode, busy.
    fn default() -> Self {
        Settings {
            mode: Mode::Deny,
            default_action: BlockAction::Busy,
        }
    }
}

/// The screening verdict for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the call through.
    Pass,
    /// Block it.
    Block {
        /// What the caller gets.
        action: BlockAction,
        /// The entry that decided (its pattern as written); `None` when an
        /// allowlist lacked the caller.
        pattern: Option<String>,
        /// The list's mode.
        mode: Mode,
    },
}

/// The compiled list call control screens with. Cheap to clone (it is rebuilt from
/// the store whenever the list changes; see `CallControl::set_blacklist`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blacklist {
    settings: Settings,
    /// The site's numbering plan: entries and callers are also compared in canonical
    /// form (see the module docs).
    plan: Option<SitePlan>,
    /// Number (as written, and in canonical form) to the entry as written and its
    /// action.
    exact: BTreeMap<String, (String, Option<EntryAction>)>,
    /// Prefix digits (as written, and in canonical form) to the entry's prefix as
    /// written and its action.
    prefixes: BTreeMap<String, (String, Option<EntryAction>)>,
    anonymous: Option<Option<EntryAction>>,
}

impl Blacklist {
    /// An empty list with these settings (in allow mode, it blocks everyone) that
    /// compares numbers as written.
    pub fn new(settings: Settings) -> Blacklist {
        Blacklist::with_plan(settings, None)
    }

    /// An empty list with these settings that compares every number also in the
    /// canonical form of the site's `plan` ([`crate::numbers`]).
    pub fn with_plan(settings: Settings, plan: Option<SitePlan>) -> Blacklist {
        Blacklist {
            settings,
            plan,
            ..Blacklist::default()
        }
    }

    /// Adds (or replaces) an entry; `None` action: what the mode implies.
    pub fn insert(&mut self, pattern: Pattern, action: Option<EntryAction>) {
        match pattern {
            Pattern::Exact(n) => {
                let canonical = self.plan.as_ref().and_then(|p| p.canonical(&n).ok());
                insert_forms(&mut self.exact, n, canonical, action);
            }
            Pattern::Prefix(p) => {
                let canonical = self
                    .plan
                    .as_ref()
                    .and_then(|plan| plan.canonical_prefix(&p));
                insert_forms(&mut self.prefixes, p, canonical, action);
            }
            Pattern::Anonymous => self.anonymous = Some(action),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        let written = |m: &BTreeMap<String, (String, Option<EntryAction>)>| {
            m.iter().filter(|(k, (w, _))| k == &w).count()
        };
        written(&self.exact) + written(&self.prefixes) + usize::from(self.anonymous.is_some())
    }

    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most specific entry matching `caller`: its pattern (as written) and action.
    /// An exact entry in any form beats any prefix (one written as the caller is
    /// presented first); prefixes are tried on the canonical form first, then on the
    /// number as presented.
    pub fn lookup(&self, caller: Caller<'_>) -> Option<(Pattern, Option<EntryAction>)> {
        match caller {
            Caller::Anonymous => self.anonymous.map(|a| (Pattern::Anonymous, a)),
            Caller::Number(n) => {
                let canonical = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.canonical(n).ok())
                    .filter(|c| c != n);
                // An entry written as the caller is presented, then one in any form.
                if let Some((written, a)) = [Some(n), canonical.as_deref()]
                    .into_iter()
                    .flatten()
                    .find_map(|f| self.exact.get(f))
                {
                    return Some((Pattern::Exact(written.clone()), *a));
                }
                let forms: Vec<&str> = canonical.as_deref().into_iter().chain([n]).collect();
                // Longest prefix first: at most MAX_PATTERN_DIGITS + 1 lookups a form.
                forms.iter().find_map(|f| {
                    (1..=f.len())
                        .rev()
                        .filter(|&i| f.is_char_boundary(i))
                        .find_map(|i| self.prefixes.get(&f[..i]))
                        .map(|(written, a)| (Pattern::Prefix(written.clone()), *a))
                })
            }
        }
    }

    /// What to do with a call from `caller`.
    pub fn screen(&self, caller: Caller<'_>) -> Verdict {
        let Settings {
            mode,
            default_action,
        } = self.settings;
        match (self.lookup(caller), mode) {
            (None, Mode::Deny) => Verdict::Pass,
            (None, Mode::Allow) => Verdict::Block {
                action: default_action,
                pattern: None,
                mode,
            },
            (Some((pattern, action)), _) => {
                let action = action.unwrap_or(match mode {
                    Mode::Deny => EntryAction::Block(default_action),
                    Mode::Allow => EntryAction::Allow,
                });
                match action {
                    EntryAction::Allow => Verdict::Pass,
                    EntryAction::Block(action) => Verdict::Block {
                        action,
                        pattern: Some(pattern.to_string()),
                        mode,
                    },
                }
            }
        }
    }
}

/// Entry `written` under its written key and, when different, its canonical one. A
/// canonical key never replaces an entry written in that form (the written entry is
/// the more specific word of whoever listed it).
fn insert_forms(
    map: &mut BTreeMap<String, (String, Option<EntryAction>)>,
    written: String,
    canonical: Option<String>,
    action: Option<EntryAction>,
) {
    if let Some(c) = canonical.filter(|c| *c != written) {
        if map.get(&c).is_none_or(|(w, _)| *w != c) {
            map.insert(c, (written.clone(), action));
        }
    }
    map.insert(written.clone(), (written, action));
}

#[cfg(test)]
mod tests;
