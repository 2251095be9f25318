//! The ACD (automatic call distributor): call queues and agents as a sans-IO state
//! machine that call control drives.
//!
//! [`Acd::handle`] takes an [`Input`] (a caller arrives or abandons, an agent answers,
//! rejects or does not answer an offer, a call ends, an agent logs in or out, pauses,
//! unpauses, finishes wrap-up) with the current time; [`Acd::handle_timeout`] runs the
//! timers that are due (ring timeouts, wrap-up ends, max wait, skill fallback,
//! announcements) and [`Acd::timeout`] says when the next one is. The decisions come out
//! as [`Action`]s from [`Acd::poll_action`]: ring agent X for call C, stop ringing,
//! connect, start music on hold, announce position and expected wait, overflow, and
//! every agent state change (for the state history log). It never reads a clock or
//! touches a socket; tests drive it on a virtual clock (`tests/`).
//! [`Acd::reconfigure`] takes a changed configuration while calls go on (the daemon
//! reads the store anew after a user edit through the API or from HQ).
//!
//! Modules: [`config`] (validated queues and agents), [`codes`] (the agent feature-code
//! parser, `*61<agent>*<pin>#` and friends), [`store`] (loading the configuration from
//! migration 0007's tables, appending to `agent_state_log`), [`error`].
//!
//! # Rules
//!
//! - Callers wait in one order over all queues: VIP callers (a queue's [`VipPattern`]s)
//!   first, then by arrival in their current queue (FIFO). A free agent goes to the
//!   first waiting call that may have them; a call not already ringing someone is
//!   offered to one agent at a time (ring-all: to every free agent of its tier at once).
//! - An agent rings for one call at a time and is offered calls only while available
//!   (never while ringing, on a call, in wrap-up, paused or logged out).
//! - Penalty tiers: only the free eligible agents with the lowest penalty are
//!   considered. Agents that already failed to answer this call are skipped while an
//!   untried one is free (so an unanswered offer moves on, also to a higher tier);
//!   once all free ones were tried, they are tried again, [`RETRY_DELAY`] after the
//!   last failed offer. Ring-all rings one tier: an agent who becomes free while it
//!   rings joins at that tier or a better one, never a worse one.
//! - Strategies: see [`Strategy`]. Longest idle counts from the end of the agent's last
//!   call (end of wrap-up) or login; pauses do not reset it. Fewest calls counts calls
//!   answered from this queue since the ACD was built.
//! - Wrap-up follows every answered call for the queue's `wrap_up` time, or until
//!   [`Input::WrapUpDone`]. A pause asked for during a call takes effect after wrap-up.
//! - Overflow: a full queue (`max_len` callers waiting), `max_wait`, and (if configured)
//!   no member logged in send the caller to the queue's target. A target queue is
//!   entered by the ACD itself (the caller starts there as a new arrival); a queue the
//!   caller already passed through is not entered again and the caller gets
//!   [`OverflowTarget::Busy`] instead, so overflow rules cannot loop.
//! - Expected wait = position x mean handle time (talk time plus the queue's wrap-up) of
//!   the queue's last [`HANDLE_TIME_SAMPLES`] calls / members logged in and not paused;
//!   none until a call of this queue has ended.
//! - Outbound calls of a progressive campaign (`crate::campaign`) reserve an
//!   available agent ([`Input::OutboundReserved`]: on that call from then on, so never
//!   offered a queue call meanwhile) until the call ends ([`Input::OutboundEnded`]:
//!   available again at once, or paused if a pause was asked for; no wrap-up).
//! - Every input that is refused ([`InputError`]) leaves the core unchanged.
//!
//! # Wiring
//!
//! Call control drives the core on real calls (`crate::call`'s `queue` module): the
//! daemon builds it from [`store::load_config`] at start-up; queue numbers are in the
//! dial plan; [`Action::Ring`] rings the agent's logged-in extension and the phone's
//! answer, refusal or failure comes back as an input; [`Action::Connect`] bridges the
//! caller and the agent; agent feature codes ([`codes::FeatureCodes::parse`]) become
//! login (after the PIN check, [`store::check_agent_pin`]), logout, pause and unpause;
//! every [`Action::AgentStateChanged`] is appended with [`store::append_state_log`].

//! # Limits
//!
//! A configuration change is taken with [`Acd::reconfigure`] (states and waiting
//! callers carried over). A call's skill requirement counts only in skill-based
//! queues. Agent state changes go to `agent_state_log` and the outbox
//! ([`store::append_state_log`]).
//! Logging in again on another extension while logged in is refused (log out first).
//! Handle-time statistics start empty at every start.
//!
//! # Extension modes
//!
//! Each agent has an [`ExtensionMode`]: `login` (hot-desking by feature code, the
//! default), `fixed` (their own extension only: a feature-code log-in on another
//! phone is refused with [`InputError::FixedExtension`]) or `automatic` (log-in from
//! the desktop only, [`LoginFrom::Desktop`], with the extension the API found: the SIP
//! phone registered from the desktop's address). A log-in the mode does not take is
//! refused with [`InputError::WrongLoginPath`].

pub mod codes;
pub mod config;
pub mod error;
pub mod store;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

pub use self::config::{
    AcdConfig, AgentConfig, AgentId, ExtensionMode, Member, MusicOnHold, OverflowTarget,
    PauseReason, QueueConfig, QueueName, Skill, SkillLevel, Strategy, TargetNumber, VipPattern,
};
pub use self::error::{ConfigError, FeatureCodeError, InputError, StoreError};

/// How many recent handle times per queue feed the expected wait.
pub const HANDLE_TIME_SAMPLES: usize = 20;

/// After an offer fails (no answer, rejected, the phone busy), agents who already
/// failed the call are offered it again no sooner than this (Asterisk's `retry`
/// default); an agent not tried yet is offered at once. Without it a phone that
/// refuses every offer (busy on a private call) would be re-offered in a loop.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Call control's id of a queued call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The skill a call needs (skill-based queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillRequirement {
    /// The skill.
    pub skill: Skill,
    /// The lowest level that may take the call before the queue's fallback wait.
    pub min_level: SkillLevel,
}

/// Something that happened, fed to [`Acd::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A caller dialled a queue.
    CallerArrived {
        /// Call control's id for the call (unique while in the ACD).
        call: CallId,
        /// The queue.
        queue: QueueName,
        /// The caller's number as call control knows it (for VIP rules).
        caller: String,
        /// The skill the call needs, if any.
        skill: Option<SkillRequirement>,
    },
    /// A waiting caller hung up.
    CallerAbandoned {
        /// The call.
        call: CallId,
    },
    /// The agent answered the offer.
    OfferAnswered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The agent's phone declined the offer (busy, reject).
    OfferRejected {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The agent's phone could not be reached or stopped ringing by itself.
    OfferNoAnswer {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// An answered call ended (either side hung up or it was transferred away).
    CallEnded {
        /// The call.
        call: CallId,
    },
    /// An agent logged in on an extension.
    AgentLogin {
        /// The agent.
        agent: AgentId,
        /// The extension their calls ring (one agent per extension).
        extension: String,
        /// Where the log-in came from; the agent's [`ExtensionMode`] says which are
        /// accepted.
        from: LoginFrom,
    },
    /// An agent logged out.
    AgentLogout {
        /// The agent.
        agent: AgentId,
    },
    /// An agent paused (on a call: after the call's wrap-up).
    AgentPause {
        /// The agent.
        agent: AgentId,
        /// Why, if given.
        reason: Option<PauseReason>,
    },
    /// An agent unpaused (or cancelled a pending pause).
    AgentUnpause {
        /// The agent.
        agent: AgentId,
    },
    /// An agent finished after-call work early.
    WrapUpDone {
        /// The agent.
        agent: AgentId,
    },
    /// A progressive campaign reserved the available agent for an outbound call
    /// (`crate::campaign`): the agent is on that call from now on
    /// ([`AgentState::OnCall`]), so no queue call is offered to them while the lead
    /// rings, rings the agent, or talks with them.
    OutboundReserved {
        /// Call control's id of the outbound call (not a queued call).
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The reserved outbound call ended (answered or not): the agent is available
    /// again at once (or paused, if they asked for a pause meanwhile). An outbound
    /// call has no wrap-up time: the agent records its disposition through the API.
    OutboundEnded {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
}

/// Where an agent's log-in came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFrom {
    /// The feature code, dialled on the phone whose extension is logged in.
    Phone,
    /// The agent's desktop (the local API), which chose the extension by the agent's
    /// mode (the fixed one, or the phone registered from the desktop's address).
    Desktop,
}

/// An agent's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    /// Not logged in.
    LoggedOut,
    /// Logged in, free for a call.
    Available,
    /// Ringing for a call.
    Ringing(CallId),
    /// On a call.
    OnCall(CallId),
    /// After-call work.
    WrapUp,
    /// Paused, with the reason given.
    Paused(Option<PauseReason>),
}

impl AgentState {
    /// The name stored in `agent_state_log.state`.
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Available => "available",
            AgentState::Ringing(_) => "ringing",
            AgentState::OnCall(_) => "on_call",
            AgentState::WrapUp => "wrap_up",
            AgentState::Paused(_) => "paused",
        }
    }
}

/// Why an offer stopped ringing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The ring timeout passed.
    NoAnswer,
    /// Another agent answered (ring-all).
    AnsweredElsewhere,
    /// The caller hung up.
    Abandoned,
    /// The caller overflowed.
    Overflowed,
    /// The agent paused or logged out.
    AgentLeft,
}

/// Why a caller overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowReason {
    /// The queue had `max_len` callers waiting.
    QueueFull,
    /// The caller waited `max_wait`.
    MaxWait,
    /// No member of the queue was logged in.
    NoAgents,
}

/// What the ACD wants done, from [`Acd::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring the agent's extension for the call.
    Ring {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// The extension the agent is logged in on.
        extension: String,
    },
    /// Stop ringing the agent for the call.
    StopRinging {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// The extension that rang.
        extension: String,
        /// Why.
        reason: StopReason,
    },
    /// Bridge the caller with the agent who answered.
    Connect {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// How long the caller waited in its last queue.
        waited: Duration,
    },
    /// Play music on hold to the caller (it entered a queue).
    StartMusicOnHold {
        /// The call.
        call: CallId,
        /// What to play.
        music: MusicOnHold,
    },
    /// Tell the caller their position and expected wait, then resume music.
    Announce {
        /// The call.
        call: CallId,
        /// 1 = next.
        position: usize,
        /// Expected wait, when the queue has handle-time history.
        expected_wait: Option<Duration>,
    },
    /// The caller leaves the queue for `target` (for [`OverflowTarget::Queue`] the ACD
    /// keeps the call and queues it there; this action is for logs and CDRs).
    Overflow {
        /// The call.
        call: CallId,
        /// Where to.
        target: OverflowTarget,
        /// Why.
        reason: OverflowReason,
    },
    /// An agent's state changed (for the state history log).
    AgentStateChanged {
        /// The agent.
        agent: AgentId,
        /// The new state.
        state: AgentState,
        /// The extension the agent is (or was, for a logout) logged in on.
        extension: Option<String>,
        /// When.
        at: Instant,
    },
}

/// Where a call is, from [`Acd::call_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallStatus {
    /// Waiting in a queue; `ringing` lists the agents ringing for it.
    Waiting {
        /// The queue.
        queue: QueueName,
        /// Agents ringing.
        ringing: Vec<AgentId>,
    },
    /// Answered by the agent.
    Connected {
        /// The queue it was answered from.
        queue: QueueName,
        /// The agent.
        agent: AgentId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentRt {
    id: AgentId,
    skills: BTreeMap<Skill, SkillLevel>,
    mode: ExtensionMode,
    state: AgentState,
    since: Instant,
    extension: Option<String>,
    idle_since: Instant,
    wrap_until: Option<Instant>,
    /// `Some(reason)`: pause after the current call's wrap-up.
    pending_pause: Option<Option<PauseReason>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberRt {
    agent: usize,
    penalty: u32,
    answered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueRt {
    cfg: QueueConfig,
    members: Vec<MemberRt>,
    /// Round-robin: member index to start looking from.
    rr_next: usize,
    waiting: usize,
    handle_times: VecDeque<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Waiting {
        /// (agent index, ring deadline)
        ringing: Vec<(usize, Instant)>,
    },
    Connected {
        agent: usize,
        answered: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CallRt {
    queue: usize,
    caller: String,
    priority: u8,
    seq: u64,
    arrived: Instant,
    skill: Option<SkillRequirement>,
    phase: Phase,
    visited: Vec<usize>,
    tried: Vec<usize>,
    next_announce: Option<Instant>,
    fallback_at: Option<Instant>,
    fallback_passed: bool,
    /// A new round (offering agents who already failed this call) waits until then.
    retry_at: Option<Instant>,
}

type WaitKey = (Reverse<u8>, u64, CallId);

/// The call center at one moment ([`Acd::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdStatus {
    /// Queues in configuration order.
    pub queues: Vec<QueueStatus>,
    /// Agents in configuration order.
    pub agents: Vec<AgentStatus>,
}

/// A queue in [`AcdStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// The queue.
    pub name: QueueName,
    /// The number callers dial.
    pub number: String,
    /// Its strategy's name.
    pub strategy: &'static str,
    /// Its members with the calls each answered from it since the daemon started.
    pub members: Vec<(AgentId, u64)>,
    /// Callers waiting, first to be served first.
    pub waiting: Vec<WaitingCaller>,
}

/// A caller waiting in a queue, in [`QueueStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCaller {
    /// The ACD's call.
    pub call: CallId,
    /// The caller's number ("" when withheld).
    pub caller: String,
    /// Higher is served first (VIP numbers).
    pub priority: u8,
    /// When the caller joined the queue.
    pub arrived: Instant,
    /// Agents being rung for the caller now.
    pub ringing: Vec<AgentId>,
}

/// An agent in [`AcdStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The agent.
    pub id: AgentId,
    /// Its state (with the pause reason).
    pub state: AgentState,
    /// Since when.
    pub since: Instant,
    /// The extension logged in on.
    pub extension: Option<String>,
}

/// The ACD core. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Acd {
    queues: Vec<QueueRt>,
    queue_index: HashMap<QueueName, usize>,
    agents: Vec<AgentRt>,
    agent_index: HashMap<AgentId, usize>,
    extensions: HashMap<String, usize>,
    calls: BTreeMap<CallId, CallRt>,
    /// All waiting calls in offer order.
    waiting: BTreeSet<WaitKey>,
    next_seq: u64,
    free_agents: usize,
    actions: VecDeque<Action>,
}

impl Acd {
    /// Builds the core with every agent logged out and no callers; `now` is the time
    /// the agents' states start at.
    pub fn new(config: &AcdConfig, now: Instant) -> Acd {
        let agents: Vec<AgentRt> = config
            .agents()
            .iter()
            .map(|a| AgentRt {
                id: a.id.clone(),
                skills: a.skills.clone(),
                mode: a.mode.clone(),
                state: AgentState::LoggedOut,
                since: now,
                extension: None,
                idle_since: now,
                wrap_until: None,
                pending_pause: None,
            })
            .collect();
        let agent_index: HashMap<AgentId, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let queues: Vec<QueueRt> = config
            .queues()
            .iter()
            .map(|q| QueueRt {
                members: q
                    .members
                    .iter()
                    .map(|m| MemberRt {
                        agent: agent_index[&m.agent],
                        penalty: m.penalty,
                        answered: 0,
                    })
                    .collect(),
                cfg: q.clone(),
                rr_next: 0,
                waiting: 0,
                handle_times: VecDeque::new(),
            })
            .collect();
        let queue_index = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.cfg.name.clone(), i))
            .collect();
        Acd {
            queues,
            queue_index,
            agents,
            agent_index,
            extensions: HashMap::new(),
            calls: BTreeMap::new(),
            waiting: BTreeSet::new(),
            next_seq: 0,
            free_agents: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time a timer is due, if any; call [`Acd::handle_timeout`] then.
    pub fn timeout(&self, _now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut take = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for c in self.calls.values() {
            let Phase::Waiting { ringing } = &c.phase else {
                continue;
            };
            for &(_, deadline) in ringing {
                take(deadline);
            }
            if let Some(max) = self.queues[c.queue].cfg.max_wait {
                take(c.arrived + max);
            }
            if let Some(t) = c.next_announce {
                take(t);
            }
            if let (Some(t), false) = (c.fallback_at, c.fallback_passed) {
                take(t);
            }
            if let Some(t) = c.retry_at {
                take(t);
            }
        }
        for a in &self.agents {
            if let Some(t) = a.wrap_until {
                take(t);
            }
        }
        next
    }

    /// Runs every timer due at `now`, then offers calls to free agents.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Max wait first: a caller overflowing at the same instant as a ring timeout
        // is not offered again.
        let expired: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase, Phase::Waiting { .. })
                    && self.queues[c.queue]
                        .cfg
                        .max_wait
                        .is_some_and(|m| c.arrived + m <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let target = self.queues[self.calls[&id].queue].cfg.on_max_wait.clone();
            self.overflow(id, target, OverflowReason::MaxWait, now);
        }
        // Ring timeouts.
        let mut timed_out = Vec::new();
        for (&id, c) in &self.calls {
            if let Phase::Waiting { ringing } = &c.phase {
                timed_out.extend(
                    ringing
                        .iter()
                        .filter(|(_, d)| *d <= now)
                        .map(|&(a, _)| (id, a)),
                );
            }
        }
        for (id, agent) in timed_out {
            self.offer_failed(id, agent, StopReason::NoAnswer, now);
        }
        // Wrap-up ends.
        for i in 0..self.agents.len() {
            if self.agents[i].wrap_until.is_some_and(|t| t <= now) {
                self.end_wrap_up(i, now);
            }
        }
        // Skill fallback and announcements.
        let mut announce = Vec::new();
        for (&id, c) in self.calls.iter_mut() {
            if !matches!(c.phase, Phase::Waiting { .. }) {
                continue;
            }
            if c.fallback_at.is_some_and(|t| t <= now) {
                c.fallback_passed = true;
            }
            if c.retry_at.is_some_and(|t| t <= now) {
                c.retry_at = None;
            }
            if let Some(t) = c.next_announce.filter(|&t| t <= now) {
                let every = self.queues[c.queue].cfg.announce_every;
                let mut next = t;
                if let Some(every) = every {
                    while next <= now {
                        next += every;
                    }
                }
                c.next_announce = every.map(|_| next);
                announce.push(id);
            }
        }
        for id in announce {
            let (position, expected_wait) = self.position_and_ewt(id);
            self.actions.push_back(Action::Announce {
                call: id,
                position,
                expected_wait,
            });
        }
        self.dispatch(now);
    }

    /// Handles one input at `now`. Timers due by `now` run first (as
    /// [`Acd::handle_timeout`] would); then a refused input returns the error and
    /// changes nothing more.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), InputError> {
        self.handle_timeout(now);
        self.check(&input)?;
        match input {
            Input::CallerArrived {
                call,
                queue,
                caller,
                skill,
            } => {
                let q = self.queue_index[&queue];
                let rt = CallRt {
                    queue: q,
                    caller,
                    priority: 0,
                    seq: 0,
                    arrived: now,
                    skill,
                    phase: Phase::Waiting {
                        ringing: Vec::new(),
                    },
                    visited: Vec::new(),
                    tried: Vec::new(),
                    next_announce: None,
                    fallback_at: None,
                    fallback_passed: false,
                    retry_at: None,
                };
                self.calls.insert(call, rt);
                self.enqueue(call, q, now);
            }
            Input::CallerAbandoned { call } => {
                self.stop_all_ringing(call, StopReason::Abandoned, now);
                self.remove_waiting(call);
                self.calls.remove(&call);
            }
            Input::OfferAnswered { call, agent } => {
                let a = self.agent_index[&agent];
                self.stop_all_ringing_except(call, a, now);
                self.remove_waiting(call);
                let c = self.calls.get_mut(&call).expect("checked");
                let waited = now.saturating_duration_since(c.arrived);
                c.next_announce = None;
                c.fallback_at = None;
                c.phase = Phase::Connected {
                    agent: a,
                    answered: now,
                };
                let q = c.queue;
                if let Some(m) = self.queues[q].members.iter_mut().find(|m| m.agent == a) {
                    m.answered += 1;
                }
                self.set_state(a, AgentState::OnCall(call), now);
                self.actions.push_back(Action::Connect {
                    call,
                    agent,
                    waited,
                });
            }
            Input::OfferRejected { call, agent } | Input::OfferNoAnswer { call, agent } => {
                let a = self.agent_index[&agent];
                let reason = StopReason::NoAnswer;
                self.offer_failed(call, a, reason, now);
            }
            Input::CallEnded { call } => {
                let c = self.calls.remove(&call).expect("checked");
                let Phase::Connected { agent, answered } = c.phase else {
                    unreachable!("checked")
                };
                let q = &mut self.queues[c.queue];
                let wrap = q.cfg.wrap_up;
                if q.handle_times.len() == HANDLE_TIME_SAMPLES {
                    q.handle_times.pop_front();
                }
                q.handle_times
                    .push_back(now.saturating_duration_since(answered) + wrap);
                if self.agents[agent].state == AgentState::OnCall(call) {
                    if wrap.is_zero() {
                        self.end_wrap_up(agent, now);
                    } else {
                        self.agents[agent].wrap_until = Some(now + wrap);
                        self.set_state(agent, AgentState::WrapUp, now);
                    }
                }
            }
            Input::AgentLogin {
                agent, extension, ..
            } => {
                let a = self.agent_index[&agent];
                self.extensions.insert(extension.clone(), a);
                let rt = &mut self.agents[a];
                rt.extension = Some(extension);
                rt.idle_since = now;
                rt.pending_pause = None;
                self.set_state(a, AgentState::Available, now);
            }
            Input::AgentLogout { agent } => {
                let a = self.agent_index[&agent];
                self.log_out(a, now);
                self.overflow_if_unstaffed(now);
            }
            Input::AgentPause { agent, reason } => {
                let a = self.agent_index[&agent];
                match self.agents[a].state {
                    AgentState::OnCall(_) => self.agents[a].pending_pause = Some(reason),
                    _ => {
                        self.leave_ringing(a, now);
                        self.agents[a].wrap_until = None;
                        self.agents[a].pending_pause = None;
                        self.set_state(a, AgentState::Paused(reason), now);
                    }
                }
            }
            Input::AgentUnpause { agent } => {
                let a = self.agent_index[&agent];
                if matches!(self.agents[a].state, AgentState::Paused(_)) {
                    self.set_state(a, AgentState::Available, now);
                } else {
                    self.agents[a].pending_pause = None;
                }
            }
            Input::WrapUpDone { agent } => {
                let a = self.agent_index[&agent];
                self.end_wrap_up(a, now);
            }
            Input::OutboundReserved { call, agent } => {
                let a = self.agent_index[&agent];
                self.set_state(a, AgentState::OnCall(call), now);
            }
            Input::OutboundEnded { agent, .. } => {
                let a = self.agent_index[&agent];
                self.end_wrap_up(a, now);
                // A logout asked for is not pending: logout is refused while on a call.
            }
        }
        self.dispatch(now);
        Ok(())
    }

    /// Refuses an input that does not fit the current state, without changing anything.
    fn check(&self, input: &Input) -> Result<(), InputError> {
        let agent = |id: &AgentId| {
            self.agent_index
                .get(id)
                .map(|&i| &self.agents[i])
                .ok_or_else(|| InputError::UnknownAgent(id.clone()))
        };
        let logged_in = |id: &AgentId| {
            let a = agent(id)?;
            if a.state == AgentState::LoggedOut {
                Err(InputError::NotLoggedIn(id.clone()))
            } else {
                Ok(a)
            }
        };
        let call = |id: CallId| self.calls.get(&id).ok_or(InputError::UnknownCall(id));
        match input {
            Input::CallerArrived { call, queue, .. } => {
                if self.calls.contains_key(call) {
                    return Err(InputError::DuplicateCall(*call));
                }
                if !self.queue_index.contains_key(queue) {
                    return Err(InputError::UnknownQueue(queue.clone()));
                }
            }
            Input::CallerAbandoned { call: id } => {
                if matches!(call(*id)?.phase, Phase::Connected { .. }) {
                    return Err(InputError::AlreadyConnected(*id));
                }
            }
            Input::OfferAnswered { call: id, agent: a }
            | Input::OfferRejected { call: id, agent: a }
            | Input::OfferNoAnswer { call: id, agent: a } => {
                call(*id)?;
                if agent(a)?.state != AgentState::Ringing(*id) {
                    return Err(InputError::NotOffered {
                        call: *id,
                        agent: a.clone(),
                    });
                }
            }
            Input::CallEnded { call: id } => {
                if !matches!(call(*id)?.phase, Phase::Connected { .. }) {
                    return Err(InputError::NotConnected(*id));
                }
            }
            Input::AgentLogin {
                agent: id,
                extension,
                from,
            } => {
                let a = agent(id)?;
                match (&a.mode, from) {
                    (ExtensionMode::Fixed(fixed), _) if fixed != extension => {
                        return Err(InputError::FixedExtension {
                            agent: id.clone(),
                            fixed: fixed.clone(),
                        });
                    }
                    (ExtensionMode::Automatic, LoginFrom::Phone) => {
                        return Err(InputError::WrongLoginPath {
                            agent: id.clone(),
                            mode: "automatic",
                            hint: "log in from the desktop (the phone registered from its address is used)",
                        });
                    }
                    (ExtensionMode::Login, LoginFrom::Desktop) => {
                        return Err(InputError::WrongLoginPath {
                            agent: id.clone(),
                            mode: "login",
                            hint: "log in with the feature code on the phone to use",
                        });
                    }
                    _ => {}
                }
                if let Some(ext) = &a.extension {
                    return Err(InputError::AlreadyLoggedIn {
                        agent: id.clone(),
                        extension: ext.clone(),
                    });
                }
                if let Some(&holder) = self.extensions.get(extension) {
                    return Err(InputError::ExtensionTaken {
                        extension: extension.clone(),
                        holder: self.agents[holder].id.clone(),
                    });
                }
            }
            Input::AgentLogout { agent: id } => {
                if let AgentState::OnCall(c) = logged_in(id)?.state {
                    return Err(InputError::AgentOnCall {
                        agent: id.clone(),
                        call: c,
                    });
                }
            }
            Input::AgentPause { agent: id, .. } => {
                logged_in(id)?;
            }
            Input::AgentUnpause { agent: id } => {
                let a = logged_in(id)?;
                if !matches!(a.state, AgentState::Paused(_)) && a.pending_pause.is_none() {
                    return Err(InputError::NotPaused(id.clone()));
                }
            }
            Input::WrapUpDone { agent: id } => {
                if logged_in(id)?.state != AgentState::WrapUp {
                    return Err(InputError::NotInWrapUp(id.clone()));
                }
            }
            Input::OutboundReserved { call, agent: id } => {
                if self.calls.contains_key(call) {
                    return Err(InputError::DuplicateCall(*call));
                }
                if logged_in(id)?.state != AgentState::Available {
                    return Err(InputError::NotAvailable(id.clone()));
                }
            }
            Input::OutboundEnded { call, agent: id } => {
                if logged_in(id)?.state != AgentState::OnCall(*call)
                    || self.calls.contains_key(call)
                {
                    return Err(InputError::NotOnOutboundCall {
                        call: *call,
                        agent: id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The agents available now (logged in, free for a call), in configuration
    /// order: the ones a progressive campaign may reserve.
    pub fn available_agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents
            .iter()
            .filter(|a| a.state == AgentState::Available)
            .map(|a| &a.id)
    }

    /// An agent's extension mode.
    pub fn extension_mode(&self, id: &AgentId) -> Option<&ExtensionMode> {
        Some(&self.agents[*self.agent_index.get(id)?].mode)
    }

    /// An agent's state, the time it started, and the extension logged in on.
    pub fn agent(&self, id: &AgentId) -> Option<(&AgentState, Instant, Option<&str>)> {
        let a = &self.agents[*self.agent_index.get(id)?];
        Some((&a.state, a.since, a.extension.as_deref()))
    }

    /// The agent logged in on `extension`, if any.
    pub fn agent_at(&self, extension: &str) -> Option<&AgentId> {
        self.extensions.get(extension).map(|&a| &self.agents[a].id)
    }

    /// Where a call is; `None` once it left the ACD (ended, abandoned, overflowed out).
    pub fn call_status(&self, call: CallId) -> Option<CallStatus> {
        let c = self.calls.get(&call)?;
        let queue = self.queues[c.queue].cfg.name.clone();
        Some(match &c.phase {
            Phase::Waiting { ringing } => CallStatus::Waiting {
                queue,
                ringing: ringing
                    .iter()
                    .map(|&(a, _)| self.agents[a].id.clone())
                    .collect(),
            },
            Phase::Connected { agent, .. } => CallStatus::Connected {
                queue,
                agent: self.agents[*agent].id.clone(),
            },
        })
    }

    /// Every queue and agent as a status page shows them: queues in configuration
    /// order with their waiting callers (first to be served first), agents in
    /// configuration order.
    pub fn status(&self) -> AcdStatus {
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(qi, q)| QueueStatus {
                name: q.cfg.name.clone(),
                number: q.cfg.number.as_str().to_owned(),
                strategy: q.cfg.strategy.as_str(),
                members: q
                    .members
                    .iter()
                    .map(|m| (self.agents[m.agent].id.clone(), m.answered))
                    .collect(),
                waiting: self
                    .waiting
                    .iter()
                    .filter_map(|k| {
                        let c = self.calls.get(&k.2)?;
                        (c.queue == qi).then(|| WaitingCaller {
                            call: k.2,
                            caller: c.caller.clone(),
                            priority: c.priority,
                            arrived: c.arrived,
                            ringing: match &c.phase {
                                Phase::Waiting { ringing } => ringing
                                    .iter()
                                    .map(|&(a, _)| self.agents[a].id.clone())
                                    .collect(),
                                Phase::Connected { .. } => Vec::new(),
                            },
                        })
                    })
                    .collect(),
            })
            .collect();
        let agents = self
            .agents
            .iter()
            .map(|a| AgentStatus {
                id: a.id.clone(),
                state: a.state.clone(),
                since: a.since,
                extension: a.extension.clone(),
            })
            .collect();
        AcdStatus { queues, agents }
    }

    /// The calls waiting in a queue, first to be served first.
    pub fn waiting(&self, queue: &QueueName) -> Vec<CallId> {
        let Some(&q) = self.queue_index.get(queue) else {
            return Vec::new();
        };
        self.waiting
            .iter()
            .filter(|k| self.calls[&k.2].queue == q)
            .map(|k| k.2)
            .collect()
    }

    // --- internals -------------------------------------------------------------

    fn set_state(&mut self, a: usize, state: AgentState, now: Instant) {
        let rt = &mut self.agents[a];
        let was_free = rt.state == AgentState::Available;
        let is_free = state == AgentState::Available;
        match (was_free, is_free) {
            (true, false) => self.free_agents -= 1,
            (false, true) => self.free_agents += 1,
            _ => {}
        }
        rt.state = state.clone();
        rt.since = now;
        self.actions.push_back(Action::AgentStateChanged {
            agent: rt.id.clone(),
            state,
            extension: rt.extension.clone(),
            at: now,
        });
    }

    /// Logs agent `a` out: its offers stop, its extension is free; a call it is on
    /// goes on (call control owns it) without wrap-up.
    fn log_out(&mut self, a: usize, now: Instant) {
        self.leave_ringing(a, now);
        let rt = &mut self.agents[a];
        rt.wrap_until = None;
        rt.pending_pause = None;
        self.set_state(a, AgentState::LoggedOut, now);
        if let Some(ext) = self.agents[a].extension.take() {
            self.extensions.remove(&ext);
        }
    }

    /// Takes a new configuration (queues, agents, skills, members) while calls go on,
    /// from the store after an edit: no restart, nobody's call is cut.
    ///
    /// - Agents are matched by ID. One still configured keeps its state, extension,
    ///   idle time and calls, with the new skills and extension mode (logged out when
    ///   now fixed to another extension than the one logged in on, unless on a call);
    ///   a new one starts logged out; one no
    ///   longer configured is logged out (its offers stop; a call it is on goes on) and
    ///   refused from then on. Configured again later, it comes back logged out.
    /// - Queues are matched by name. One still configured takes the new settings and
    ///   members (a member's calls-answered count and the round-robin place are kept,
    ///   the place moved into the new member list); its waiting callers stay, in
    ///   order, and are offered by the new rules. A removed queue takes no new callers;
    ///   those already waiting stay until answered or gone, under its old rules.
    /// - Then callers are offered to whoever is free now, and a queue left without a
    ///   logged-in member overflows as it would on a log-out.
    pub fn reconfigure(&mut self, config: &AcdConfig, now: Instant) {
        self.handle_timeout(now);
        let wanted: HashMap<&AgentId, &AgentConfig> =
            config.agents().iter().map(|a| (&a.id, a)).collect();
        let gone: Vec<(AgentId, usize)> = self
            .agent_index
            .iter()
            .filter(|(id, _)| !wanted.contains_key(id))
            .map(|(id, &a)| (id.clone(), a))
            .collect();
        for (id, a) in gone {
            if self.agents[a].state != AgentState::LoggedOut {
                self.log_out(a, now);
            }
            self.agent_index.remove(&id);
        }
        for cfg in config.agents() {
            let known = self
                .agent_index
                .get(&cfg.id)
                .copied()
                .or_else(|| self.agents.iter().position(|r| r.id == cfg.id));
            let a = match known {
                Some(a) => a,
                None => {
                    self.agents.push(AgentRt {
                        id: cfg.id.clone(),
                        skills: BTreeMap::new(),
                        mode: cfg.mode.clone(),
                        state: AgentState::LoggedOut,
                        since: now,
                        extension: None,
                        idle_since: now,
                        wrap_until: None,
                        pending_pause: None,
                    });
                    self.agents.len() - 1
                }
            };
            self.agents[a].skills = cfg.skills.clone();
            self.agents[a].mode = cfg.mode.clone();
            // Now fixed to another extension than the one logged in on: logged out.
            let misplaced = match (&cfg.mode, &self.agents[a].extension) {
                (ExtensionMode::Fixed(fixed), Some(ext)) => fixed != ext,
                _ => false,
            };
            if misplaced && !matches!(self.agents[a].state, AgentState::OnCall(_)) {
                self.log_out(a, now);
            }
            self.agent_index.insert(cfg.id.clone(), a);
        }
        self.queue_index
            .retain(|name, _| config.queues().iter().any(|q| q.name == *name));
        for cfg in config.queues() {
            let members: Vec<MemberRt> = cfg
                .members
                .iter()
                .map(|m| MemberRt {
                    agent: self.agent_index[&m.agent],
                    penalty: m.penalty,
                    answered: 0,
                })
                .collect();
            let known = self
                .queue_index
                .get(&cfg.name)
                .copied()
                .or_else(|| self.queues.iter().position(|q| q.cfg.name == cfg.name));
            match known {
                Some(q) => {
                    let old = &mut self.queues[q];
                    let next_agent = old.members.get(old.rr_next).map(|m| m.agent);
                    let mut members = members;
                    for m in &mut members {
                        if let Some(o) = old.members.iter().find(|o| o.agent == m.agent) {
                            m.answered = o.answered;
                        }
                    }
                    // The member due next keeps its turn; if it left, whoever now
                    // stands at its place does.
                    let place = old.rr_next;
                    old.rr_next = next_agent
                        .and_then(|a| members.iter().position(|m| m.agent == a))
                        .unwrap_or(if place < members.len() { place } else { 0 });
                    old.members = members;
                    old.cfg = cfg.clone();
                    self.queue_index.insert(cfg.name.clone(), q);
                }
                None => {
                    self.queues.push(QueueRt {
                        cfg: cfg.clone(),
                        members,
                        rr_next: 0,
                        waiting: 0,
                        handle_times: VecDeque::new(),
                    });
                    self.queue_index
                        .insert(cfg.name.clone(), self.queues.len() - 1);
                }
            }
        }
        self.overflow_if_unstaffed(now);
        self.dispatch(now);
    }

    /// Wrap-up over (or skipped): paused if a pause is pending, otherwise available.
    fn end_wrap_up(&mut self, a: usize, now: Instant) {
        let rt = &mut self.agents[a];
        rt.wrap_until = None;
        rt.idle_since = now;
        match rt.pending_pause.take() {
            Some(reason) => self.set_state(a, AgentState::Paused(reason), now),
            None => self.set_state(a, AgentState::Available, now),
        }
    }

    /// Puts a call (new, or overflowed from another queue) into queue `q`, or
    /// overflows it straight away when the queue is full or unstaffed.
    fn enqueue(&mut self, call: CallId, q: usize, now: Instant) {
        let queue = &self.queues[q];
        let staffed = queue
            .members
            .iter()
            .any(|m| self.agents[m.agent].state != AgentState::LoggedOut);
        if !staffed {
            if let Some(target) = queue.cfg.on_no_agents.clone() {
                self.calls.get_mut(&call).expect("in calls").visited.push(q);
                self.overflow(call, target, OverflowReason::NoAgents, now);
                return;
            }
        }
        if queue.cfg.max_len.is_some_and(|max| queue.waiting >= max) {
            let target = queue.cfg.on_full.clone();
            self.calls.get_mut(&call).expect("in calls").visited.push(q);
            self.overflow(call, target, OverflowReason::QueueFull, now);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cfg = &self.queues[q].cfg;
        let music = cfg.music_on_hold.clone();
        let next_announce = cfg.announce_every.map(|e| now + e);
        let fallback_at = match (cfg.strategy, cfg.skill_fallback) {
            (Strategy::SkillBased, Some(f)) => Some(now + f),
            _ => None,
        };
        let priority = u8::from(cfg.vip.iter().any(|v| v.matches(&self.calls[&call].caller)));
        let c = self.calls.get_mut(&call).expect("in calls");
        c.queue = q;
        c.seq = seq;
        c.priority = priority;
        c.arrived = now;
        c.visited.push(q);
        c.tried.clear();
        c.next_announce = next_announce;
        c.fallback_at = fallback_at;
        c.fallback_passed = false;
        self.waiting.insert((Reverse(priority), seq, call));
        self.queues[q].waiting += 1;
        self.actions
            .push_back(Action::StartMusicOnHold { call, music });
    }

    fn remove_waiting(&mut self, call: CallId) {
        let c = &self.calls[&call];
        if matches!(c.phase, Phase::Waiting { .. })
            && self.waiting.remove(&(Reverse(c.priority), c.seq, call))
        {
            self.queues[c.queue].waiting -= 1;
        }
    }

    /// Sends a waiting call to `target`; queue targets are entered here (once per
    /// call: a queue already visited gives busy instead).
    fn overflow(
        &mut self,
        call: CallId,
        target: OverflowTarget,
        reason: OverflowReason,
        now: Instant,
    ) {
        self.stop_all_ringing(call, StopReason::Overflowed, now);
        self.remove_waiting(call);
        let next_queue = match &target {
            OverflowTarget::Queue(name) => Some(self.queue_index[name]),
            _ => None,
        };
        match next_queue {
            Some(q) if !self.calls[&call].visited.contains(&q) => {
                self.actions.push_back(Action::Overflow {
                    call,
                    target,
                    reason,
                });
                self.enqueue(call, q, now);
            }
            Some(_) => {
                self.actions.push_back(Action::Overflow {
                    call,
                    target: OverflowTarget::Busy,
                    reason,
                });
                self.calls.remove(&call);
            }
            None => {
                self.actions.push_back(Action::Overflow {
                    call,
                    target,
                    reason,
                });
                self.calls.remove(&call);
            }
        }
    }

    /// After a logout: callers waiting in queues with `on_no_agents` and nobody
    /// logged in overflow.
    fn overflow_if_unstaffed(&mut self, now: Instant) {
        for q in 0..self.queues.len() {
            let queue = &self.queues[q];
            let Some(target) = queue.cfg.on_no_agents.clone() else {
                continue;
            };
            if queue.waiting == 0
                || queue
                    .members
                    .iter()
                    .any(|m| self.agents[m.agent].state != AgentState::LoggedOut)
            {
                continue;
            }
            let calls: Vec<CallId> = self
                .waiting
                .iter()
                .filter(|k| self.calls[&k.2].queue == q)
                .map(|k| k.2)
                .collect();
            for call in calls {
                self.overflow(call, target.clone(), OverflowReason::NoAgents, now);
            }
        }
    }

    fn stop_all_ringing(&mut self, call: CallId, reason: StopReason, now: Instant) {
        self.stop_all_ringing_filtered(call, None, reason, now);
    }

    fn stop_all_ringing_except(&mut self, call: CallId, keep: usize, now: Instant) {
        self.stop_all_ringing_filtered(call, Some(keep), StopReason::AnsweredElsewhere, now);
    }

    fn stop_all_ringing_filtered(
        &mut self,
        call: CallId,
        keep: Option<usize>,
        reason: StopReason,
        now: Instant,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Phase::Waiting { ringing } = &mut c.phase else {
            return;
        };
        for (a, _) in std::mem::take(ringing) {
            if Some(a) == keep {
                continue;
            }
            self.stop_ringing_action(call, a, reason);
            self.set_state(a, AgentState::Available, now);
        }
    }

    fn stop_ringing_action(&mut self, call: CallId, a: usize, reason: StopReason) {
        let rt = &self.agents[a];
        self.actions.push_back(Action::StopRinging {
            call,
            agent: rt.id.clone(),
            extension: rt.extension.clone().unwrap_or_default(),
            reason,
        });
    }

    /// If the agent is ringing, stops it (the call stays waiting); the caller then
    /// sets the agent's new state.
    fn leave_ringing(&mut self, a: usize, _now: Instant) {
        let AgentState::Ringing(call) = self.agents[a].state else {
            return;
        };
        if let Some(Phase::Waiting { ringing }) = self.calls.get_mut(&call).map(|c| &mut c.phase) {
            ringing.retain(|&(x, _)| x != a);
        }
        self.stop_ringing_action(call, a, StopReason::AgentLeft);
    }

    /// The agent did not take the offer: they are free again, the call remembers them
    /// as tried.
    fn offer_failed(&mut self, call: CallId, a: usize, reason: StopReason, now: Instant) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Phase::Waiting { ringing } = &mut c.phase else {
            return;
        };
        ringing.retain(|&(x, _)| x != a);
        if !c.tried.contains(&a) {
            c.tried.push(a);
        }
        c.retry_at = Some(now + RETRY_DELAY);
        self.stop_ringing_action(call, a, reason);
        self.set_state(a, AgentState::Available, now);
    }

    fn position_and_ewt(&self, call: CallId) -> (usize, Option<Duration>) {
        let c = &self.calls[&call];
        let key = (Reverse(c.priority), c.seq, call);
        let position = 1 + self
            .waiting
            .range(..key)
            .filter(|k| self.calls[&k.2].queue == c.queue)
            .count();
        let q = &self.queues[c.queue];
        let ewt = (!q.handle_times.is_empty()).then(|| {
            let total: Duration = q.handle_times.iter().sum();
            let mean = total / q.handle_times.len() as u32;
            let staffed = q
                .members
                .iter()
                .filter(|m| {
                    !matches!(
                        self.agents[m.agent].state,
                        AgentState::LoggedOut | AgentState::Paused(_)
                    )
                })
                .count()
                .max(1);
            mean * position as u32 / staffed as u32
        });
        (position, ewt)
    }

    /// Offers waiting calls to free agents, in waiting order.
    fn dispatch(&mut self, now: Instant) {
        if self.free_agents == 0 || self.waiting.is_empty() {
            return;
        }
        let order: Vec<CallId> = self.waiting.iter().map(|k| k.2).collect();
        let mut picked = Vec::new();
        for call in order {
            if self.free_agents == 0 {
                break;
            }
            let c = &self.calls[&call];
            let q = &self.queues[c.queue];
            let Phase::Waiting { ringing } = &c.phase else {
                continue;
            };
            if q.cfg.strategy != Strategy::RingAll && !ringing.is_empty() {
                continue;
            }
            picked.clear();
            self.select(call, &mut picked);
            if picked.is_empty() {
                continue;
            }
            let qi = c.queue;
            let deadline = now + self.queues[qi].cfg.ring_timeout;
            if self.queues[qi].cfg.strategy == Strategy::RoundRobin {
                let m = picked[0].1;
                self.queues[qi].rr_next = m + 1;
            }
            for &(a, _) in &picked {
                if let Some(Phase::Waiting { ringing }) =
                    self.calls.get_mut(&call).map(|c| &mut c.phase)
                {
                    ringing.push((a, deadline));
                }
                self.set_state(a, AgentState::Ringing(call), now);
                let rt = &self.agents[a];
                self.actions.push_back(Action::Ring {
                    call,
                    agent: rt.id.clone(),
                    extension: rt.extension.clone().unwrap_or_default(),
                });
            }
            let c = self.calls.get_mut(&call).expect("waiting");
            if c.tried.iter().any(|t| picked.iter().any(|p| p.0 == *t)) {
                // Everyone free had been tried: this starts a new round.
                c.tried.clear();
            }
        }
    }

    /// The agents (agent index, member index) to ring for `call` now, by its queue's
    /// strategy; empty when nobody suitable is free.
    fn select(&self, call: CallId, out: &mut Vec<(usize, usize)>) {
        let c = &self.calls[&call];
        let q = &self.queues[c.queue];
        let skill_needed = match (&c.skill, q.cfg.strategy) {
            (Some(s), Strategy::SkillBased) if !c.fallback_passed => Some(s),
            _ => None,
        };
        let level = |a: &AgentRt| -> u8 {
            c.skill
                .as_ref()
                .and_then(|s| a.skills.get(&s.skill))
                .map_or(0, |l| l.get())
        };
        let eligible = |m: &MemberRt| {
            let a = &self.agents[m.agent];
            a.state == AgentState::Available
                && skill_needed.is_none_or(|s| level(a) >= s.min_level.get())
        };
        // Lowest penalty among eligible untried agents; if every eligible agent was
        // tried, among all eligible ones.
        let mut tier_untried: Option<u32> = None;
        let mut tier_all: Option<u32> = None;
        for m in q.members.iter().filter(|m| eligible(m)) {
            tier_all = Some(tier_all.map_or(m.penalty, |t| t.min(m.penalty)));
            if !c.tried.contains(&m.agent) {
                tier_untried = Some(tier_untried.map_or(m.penalty, |t| t.min(m.penalty)));
            }
        }
        let (tier, skip_tried) = match (tier_untried, tier_all) {
            (Some(t), _) => (t, true),
            // Everyone free failed this call already: a new round, after the delay.
            (None, Some(_)) if c.retry_at.is_some() => return,
            (None, Some(t)) => (t, false),
            (None, None) => return,
        };
        // Ring-all already ringing a tier: an agent who becomes free joins the ring
        // at that tier or a better one; a worse tier waits until the ring fails.
        if let Phase::Waiting { ringing } = &c.phase {
            let ringing_tier = ringing
                .iter()
                .filter_map(|(a, _)| q.members.iter().find(|m| m.agent == *a))
                .map(|m| m.penalty)
                .min();
            if ringing_tier.is_some_and(|r| tier > r) {
                return;
            }
        }
        let candidates = q.members.iter().enumerate().filter(|(_, m)| {
            m.penalty == tier && eligible(m) && !(skip_tried && c.tried.contains(&m.agent))
        });
        let idle = |m: &MemberRt| self.agents[m.agent].idle_since;
        let best = match q.cfg.strategy {
            Strategy::RingAll => {
                out.extend(candidates.map(|(i, m)| (m.agent, i)));
                return;
            }
            Strategy::RoundRobin => {
                let n = q.members.len().max(1);
                candidates.min_by_key(|(i, _)| (i + n - q.rr_next % n) % n)
            }
            Strategy::LongestIdle => candidates.min_by_key(|&(i, m)| (idle(m), i)),
            Strategy::FewestCalls => candidates.min_by_key(|&(i, m)| (m.answered, idle(m), i)),
            Strategy::SkillBased => {
                candidates.min_by_key(|&(i, m)| (Reverse(level(&self.agents[m.agent])), idle(m), i))
            }
        };
        if let Some((i, m)) = best {
            out.push((m.agent, i));
        }
    }
}
