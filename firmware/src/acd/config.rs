//! The ACD's validated configuration: newtypes for the values (agent IDs, queue names,
//! skills and levels, VIP patterns, overflow targets) and [`AcdConfig`], whose
//! constructor checks the cross references (members are known agents, overflow queues
//! exist). Built by [`super::store::load_config`] from the store's rows, or directly by
//! tests and benches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{ExtensionNumber, RecordingPolicy};
use crate::error::InvalidValue;

use super::error::ConfigError;

fn invalid(what: &'static str, value: &str, reason: &'static str) -> InvalidValue {
    InvalidValue {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// Implements `FromStr`-based `TryFrom<&str>`, `Display` and `as_str` for a string newtype.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidValue;

            fn try_from(s: &str) -> Result<Self, InvalidValue> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// An agent's work number (agent ID): 2 to 10 digits, as `users.agent_id` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(String);
string_newtype!(AgentId);

impl FromStr for AgentId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if crate::accounts::agent_id_format(s) {
            Ok(AgentId(s.to_owned()))
        } else {
            Err(invalid("agent ID", s, "must be 2 to 10 digits"))
        }
    }
}

fn is_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A queue's name: 1 to 32 of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);
string_newtype!(QueueName);

impl FromStr for QueueName {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if is_name(s) {
            Ok(QueueName(s.to_owned()))
        } else {
            Err(invalid(
                "queue name",
                s,
                "must be 1 to 32 of a-z, 0-9, _ and -",
            ))
        }
    }
}

/// A skill's name (`french`, `billing`): 1 to 32 of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Skill(String);
string_newtype!(Skill);

impl FromStr for Skill {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if is_name(s) {
            Ok(Skill(s.to_owned()))
        } else {
            Err(invalid("skill", s, "must be 1 to 32 of a-z, 0-9, _ and -"))
        }
    }
}

/// A skill level, 1 (beginner) to 10 (expert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkillLevel(u8);

impl SkillLevel {
    /// The level, 1 to 10.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for SkillLevel {
    type Error = InvalidValue;

    fn try_from(n: i64) -> Result<Self, InvalidValue> {
        match u8::try_from(n) {
            Ok(l @ 1..=10) => Ok(SkillLevel(l)),
            _ => Err(invalid("skill level", &n.to_string(), "must be 1 to 10")),
        }
    }
}

/// A pause reason code (from `*63<reason>#` or the web page): 1 to 16 of
/// `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PauseReason(String);
string_newtype!(PauseReason);

impl FromStr for PauseReason {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if (1..=16).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(PauseReason(s.to_owned()))
        } else {
            Err(invalid(
                "pause reason",
                s,
                "must be 1 to 16 of A-Z, a-z, 0-9, _ and -",
            ))
        }
    }
}

/// An outside or inside number an overflowing caller is sent to: 1 to 20 digits with
/// an optional leading `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetNumber(String);
string_newtype!(TargetNumber);

impl FromStr for TargetNumber {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        if (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(TargetNumber(s.to_owned()))
        } else {
            Err(invalid(
                "number",
                s,
                "must be 1 to 20 digits with an optional leading +",
            ))
        }
    }
}

/// A VIP rule: a caller number (exact) or a prefix (written with a trailing `*`),
/// digits with an optional leading `+`. Callers matching any rule of the queue wait
/// ahead of all other callers.
///
/// A number is matched in all its forms once the rule knows the site's numbering plan
/// ([`VipPattern::with_plan`], done when the call center is loaded from the store):
/// the caller as presented against the rule as written, and the caller's canonical
/// form ([`crate::numbers`]) against the rule's, so `030*` at a German site also makes
/// `+4930…` and `004930…` callers VIPs, and `+4930555` matches `030555`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipPattern {
    digits: String,
    prefix: bool,
    /// The rule in canonical form and the plan callers are canonicalised with.
    canonical: Option<(String, crate::numbers::SitePlan)>,
}

impl VipPattern {
    /// Whether `caller` matches.
    pub fn matches(&self, caller: &str) -> bool {
        let hit = |pattern: &str, number: &str| {
            if self.prefix {
                number.starts_with(pattern)
            } else {
                number == pattern
            }
        };
        hit(&self.digits, caller)
            || self.canonical.as_ref().is_some_and(|(pattern, plan)| {
                plan.canonical(caller)
                    .is_ok_and(|number| hit(pattern, &number))
            })
    }

    /// The rule, also matched in canonical form with `plan` (a prefix the plan cannot
    /// place, such as a bare `00*`, stays as written only).
    pub fn with_plan(mut self, plan: &crate::numbers::SitePlan) -> VipPattern {
        let canonical = if self.prefix {
            plan.canonical_prefix(&self.digits)
        } else {
            plan.canonical(&self.digits).ok()
        };
        self.canonical = canonical.map(|c| (c, plan.clone()));
        self
    }
}

impl FromStr for VipPattern {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        let digits = body.strip_prefix('+').unwrap_or(body);
        if (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(VipPattern {
                digits: body.to_owned(),
                prefix,
                canonical: None,
            })
        } else {
            Err(invalid(
                "VIP pattern",
                s,
                "must be 1 to 20 digits with an optional leading + and an optional trailing *",
            ))
        }
    }
}

impl fmt::Display for VipPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digits)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// How a queue picks the agent(s) to ring for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Every free agent of the lowest free penalty tier rings at once; the first to
    /// answer gets the call.
    RingAll,
    /// The next free member after the one rung last (in member order), remembered
    /// across calls.
    RoundRobin,
    /// The free agent whose last call ended (or who logged in) longest ago.
    LongestIdle,
    /// The free agent who answered the fewest calls of this queue since the ACD
    /// started; ties go to the longest idle.
    FewestCalls,
    /// Agents with the call's required skill at or above its minimum level, best level
    /// first (ties: longest idle); after the queue's `skill_fallback` wait, any agent.
    SkillBased,
}

impl Strategy {
    /// The name stored in `queues.strategy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RingAll => "ring_all",
            Strategy::RoundRobin => "round_robin",
            Strategy::LongestIdle => "longest_idle",
            Strategy::FewestCalls => "fewest_calls",
            Strategy::SkillBased => "skill_based",
        }
    }
}

impl FromStr for Strategy {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Ok(match s {
            "ring_all" => Strategy::RingAll,
            "round_robin" => Strategy::RoundRobin,
            "longest_idle" => Strategy::LongestIdle,
            "fewest_calls" => Strategy::FewestCalls,
            "skill_based" => Strategy::SkillBased,
            _ => {
                return Err(invalid(
                    "strategy",
                    s,
                    "must be ring_all, round_robin, longest_idle, fewest_calls or skill_based",
                ))
            }
        })
    }
}

/// Where an overflowing caller goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OverflowTarget {
    /// Leave a message in this mailbox (an extension number).
    Voicemail(ExtensionNumber),
    /// Wait in another queue (the ACD moves the caller itself).
    Queue(QueueName),
    /// Ring this number (an extension or an outside number).
    Number(TargetNumber),
    /// Busy tone, then the call is dropped.
    Busy,
}

/// What a waiting caller hears between announcements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MusicOnHold {
    /// Silence.
    Silence,
    /// The box's generated hold tone.
    Tone,
    /// A WAV prompt from the store, by name.
    Prompt(String),
}

/// An agent's membership of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The agent.
    pub agent: AgentId,
    /// 0 to 100; an agent is only offered a call when no free member with a lower
    /// penalty can take it.
    pub penalty: u32,
}

/// Highest penalty accepted.
pub const MAX_PENALTY: u32 = 100;

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Unique name.
    pub name: QueueName,
    /// The extension number callers dial to reach the queue (for call control's dial plan).
    pub number: ExtensionNumber,
    /// Agent selection.
    pub strategy: Strategy,
    /// How long one offer rings before the next agent is tried (> 0).
    pub ring_timeout: Duration,
    /// After-call work time before the agent is offered the next call.
    pub wrap_up: Duration,
    /// Longest wait before the caller overflows to `on_max_wait`.
    pub max_wait: Option<Duration>,
    /// Most callers waiting (not yet answered); one more overflows to `on_full`.
    pub max_len: Option<usize>,
    /// Skill-based only: after this wait a call may go to any agent.
    pub skill_fallback: Option<Duration>,
    /// Period of position / expected-wait announcements (first one after one period).
    pub announce_every: Option<Duration>,
    /// What waiting callers hear.
    pub music_on_hold: MusicOnHold,
    /// The voice prompt of the post-call survey (callers hear it when the agent hangs
    /// up first and key a score 1-5); `None`: no survey.
    pub survey: Option<String>,
    /// Where callers go when the queue is full.
    pub on_full: OverflowTarget,
    /// Where callers go after `max_wait`.
    pub on_max_wait: OverflowTarget,
    /// Where callers go when no member is logged in (arrivals, and everyone waiting
    /// when the last member logs out); `None`: they wait anyway.
    pub on_no_agents: Option<OverflowTarget>,
    /// Callers matching any of these wait ahead of the others.
    pub vip: Vec<VipPattern>,
    /// The agents of the queue, in round-robin order.
    pub members: Vec<Member>,
    /// Whether its calls are recorded (`queues.recording`; combined with the agent's and
    /// the extensions', see [`crate::recorder::calls`]).
    pub recording: RecordingPolicy,
}

impl QueueConfig {
    /// A queue with the given name, number and strategy, 15 s ring timeout, no wrap-up,
    /// no limits, tone music on hold, busy on full/max wait, and no members.
    pub fn new(name: QueueName, number: ExtensionNumber, strategy: Strategy) -> QueueConfig {
        QueueConfig {
            name,
            number,
            strategy,
            ring_timeout: Duration::from_secs(15),
            wrap_up: Duration::ZERO,
            max_wait: None,
            max_len: None,
            skill_fallback: None,
            announce_every: None,
            music_on_hold: MusicOnHold::Tone,
            survey: None,
            on_full: OverflowTarget::Busy,
            on_max_wait: OverflowTarget::Busy,
            on_no_agents: None,
            vip: Vec::new(),
            members: Vec::new(),
            recording: RecordingPolicy::Never,
        }
    }
}

/// Which phone an agent's queue calls ring (issue 6 "extension modes"; stored as
/// `users.extension_mode`, migration 0018).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExtensionMode {
    /// Hot-desking: the agent logs in with the feature code on any phone, and their
    /// calls ring that phone (which no other agent holds). Not from the desktop.
    #[default]
    Login,
    /// Always this extension (the user's own): a log-in by feature code is accepted
    /// only on that phone (any other phone is refused), a desktop log-in binds it.
    Fixed(String),
    /// The SIP phone registered from the same IP address as the agent's desktop: the
    /// agent logs in through the local API (`POST /api/v1/agents/me/login`), not with
    /// the feature code.
    Automatic,
}

impl ExtensionMode {
    /// The stored name: `login`, `fixed` or `automatic`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExtensionMode::Login => "login",
            ExtensionMode::Fixed(_) => "fixed",
            ExtensionMode::Automatic => "automatic",
        }
    }

    /// The mode named `name` for a user whose own extension is `extension` (`fixed`
    /// needs one).
    pub fn parse(name: &str, extension: Option<&str>) -> Result<ExtensionMode, String> {
        match name {
            "login" => Ok(ExtensionMode::Login),
            "automatic" => Ok(ExtensionMode::Automatic),
            "fixed" => match extension {
                Some(e) if !e.is_empty() => Ok(ExtensionMode::Fixed(e.to_owned())),
                _ => Err("fixed needs the user's extension; the user has none".to_owned()),
            },
            other => Err(format!(
                "unknown extension mode {other:?}: login, fixed or automatic"
            )),
        }
    }
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent ID.
    pub id: AgentId,
    /// Skills and their levels.
    pub skills: BTreeMap<Skill, SkillLevel>,
    /// Whether the calls the agent answers are recorded (`users.recording`).
    pub recording: RecordingPolicy,
    /// Which phone their calls ring.
    pub mode: ExtensionMode,
}

/// The whole ACD configuration, cross-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdConfig {
    queues: Vec<QueueConfig>,
    agents: Vec<AgentConfig>,
}

impl AcdConfig {
    /// Checks and builds the configuration: queue names and numbers unique, ring
    /// timeouts above zero, members known agents at most once per queue with penalty
    /// at most [`MAX_PENALTY`], overflow queues existing and not the queue itself,
    /// agent IDs unique, no extension fixed for two agents.
    pub fn new(
        queues: Vec<QueueConfig>,
        agents: Vec<AgentConfig>,
    ) -> Result<AcdConfig, ConfigError> {
        let mut agent_ids = BTreeSet::new();
        let mut fixed: BTreeMap<&str, &AgentId> = BTreeMap::new();
        for a in &agents {
            if !agent_ids.insert(&a.id) {
                return Err(ConfigError::Agent {
                    agent: a.id.to_string(),
                    field: "id",
                    message: "agent ID appears twice".to_owned(),
                });
            }
            if let ExtensionMode::Fixed(ext) = &a.mode {
                if ext.is_empty() {
                    return Err(ConfigError::Agent {
                        agent: a.id.to_string(),
                        field: "extension_mode",
                        message: "fixed needs an extension".to_owned(),
                    });
                }
                if let Some(other) = fixed.insert(ext, &a.id) {
                    return Err(ConfigError::Agent {
                        agent: a.id.to_string(),
                        field: "extension_mode",
                        message: format!("extension {ext} is already fixed for agent {other}"),
                    });
                }
            }
        }
        let names: BTreeSet<&QueueName> = queues.iter().map(|q| &q.name).collect();
        if names.len() != queues.len() {
            let dup = queues
                .iter()
                .enumerate()
                .find(|(i, q)| queues[..*i].iter().any(|p| p.name == q.name))
                .map(|(_, q)| q.name.to_string())
                .unwrap_or_default();
            return Err(queue_err(
                &dup,
                "name",
                "queue name appears twice".to_owned(),
            ));
        }
        let mut numbers = BTreeSet::new();
        for q in &queues {
            let name = q.name.as_str();
            if !numbers.insert(&q.number) {
                return Err(queue_err(
                    name,
                    "number",
                    format!("number {} is used by another queue", q.number),
                ));
            }
            if q.ring_timeout.is_zero() {
                return Err(queue_err(
                    name,
                    "ring_timeout",
                    "must be above zero".to_owned(),
                ));
            }
            for (field, d) in [
                ("max_wait", q.max_wait),
                ("skill_fallback", q.skill_fallback),
                ("announce_every", q.announce_every),
            ] {
                if d.is_some_and(|d| d.is_zero()) {
                    return Err(queue_err(
                        name,
                        field,
                        "must be above zero when set".to_owned(),
                    ));
                }
            }
            if q.max_len == Some(0) {
                return Err(queue_err(
                    name,
                    "max_len",
                    "must be above zero when set".to_owned(),
                ));
            }
            let mut seen = BTreeSet::new();
            for m in &q.members {
                if !agent_ids.contains(&m.agent) {
                    return Err(queue_err(
                        name,
                        "members",
                        format!("agent {} is not a configured agent", m.agent),
                    ));
                }
                if !seen.insert(&m.agent) {
                    return Err(queue_err(
                        name,
                        "members",
                        format!("agent {} is a member twice", m.agent),
                    ));
                }
                if m.penalty > MAX_PENALTY {
                    return Err(queue_err(
                        name,
                        "members",
                        format!(
                            "agent {}: penalty {} is above {MAX_PENALTY}",
                            m.agent, m.penalty
                        ),
                    ));
                }
            }
            for (field, target) in [
                ("on_full", Some(&q.on_full)),
                ("on_max_wait", Some(&q.on_max_wait)),
                ("on_no_agents", q.on_no_agents.as_ref()),
            ] {
                if let Some(OverflowTarget::Queue(t)) = target {
                    if t == &q.name {
                        return Err(queue_err(
                            name,
                            field,
                            "overflow to the queue itself".to_owned(),
                        ));
                    }
                    if !names.contains(t) {
                        return Err(queue_err(name, field, format!("no queue named {t}")));
                    }
                }
            }
        }
        Ok(AcdConfig { queues, agents })
    }

    /// The queues, in configuration order.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// The agents, in configuration order.
    pub fn agents(&self) -> &[AgentConfig] {
        &self.agents
    }
}

fn queue_err(queue: &str, field: &'static str, message: String) -> ConfigError {
    ConfigError::Queue {
        queue: queue.to_owned(),
        field,
        message,
    }
}
