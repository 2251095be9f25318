//! The daemon's live status for the web page and `/api/v1/status`: a read-only
//! snapshot ([`BoxStatus`]) published on a `watch` channel by the main loop, and the
//! port actions the page may ask of the main loop: the ring test and the line test
//! ([`crate::tools::line_test`]: self-test and line reading judged, the result kept
//! in the port's status).
//!
//! [`StatusPublisher`] is owned by the main loop and is sans-IO: it is fed the board's
//! events, call control's port states, the number of active calls and the trunk's
//! state, with `now` passed in; it returns the line-controller commands it wants sent
//! (periodic `ReadLine` for line voltage / loop current and hook state, `Ring` /
//! `StopRing` for a ring test, `SelfTest` / `ReadLine` for a line test) and says when
//! it next needs time
//! ([`StatusPublisher::timeout`]). [`StatusPublisher::publish`] sends a new snapshot
//! only when something changed, so watchers (SSE streams) wake only on changes.
//!
//! Hook state of an FXS port comes from the board: `OffHook` / `OnHook` events, and
//! the loop current of a `LineReading` (at start-up every port is read, so the page
//! knows the hook state before the first event). FXO ports show call control's state.
//!
//! The calls page asks the main loop for the calls in progress
//! ([`ControlRequest::Calls`]): call control's snapshot, joined with the RTP
//! statistics of their SIP legs the media engine reports ([`ActiveCalls`]); the SIP
//! page reads the SIP endpoint's own registrations snapshot ([`StatusHandle::sip`]).
//!
//! Limits: dialled digits are not kept in a port's recent events (they are customers'
//! numbers); a ring test is refused when call
//! control has the port in any state but idle, and a call that arrives on the port
//! during the test rings it as usual (the test then does not stop that ringing).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use line_proto::{Cadence, Command, Event, FaultKind};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::call::{CallSnapshot, PortState, TrunkStatus};
use crate::media_engine::LegSnapshot;
use crate::sip_endpoint::status::SipStatus;
use crate::tools::line_test::{LineTestResult, LineTestRun, LINE_TEST_TIMEOUT};
use crate::tools::loopback::{LoopbackResult, LoopbackRun, Pcm, LOOPBACK_TEST_TIMEOUT};

/// How often every port's line is read (voltage, loop current).
pub const LINE_READING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ring test rings the phone.
pub const RING_TEST_DURATION: Duration = Duration::from_secs(6);
/// Recent events kept per port.
pub const EVENTS_PER_PORT: usize = 8;
/// Loop current above which an FXS line counts as off-hook (µA).
pub const OFF_HOOK_MICROAMPS: u32 = 10_000;

/// The kind of an analog port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A phone plugs in here.
    Fxs,
    /// A PSTN line plugs in here.
    Fxo,
}

impl PortKind {
    /// `"FXS"` / `"FXO"`.
    pub fn label(self) -> &'static str {
        match self {
            PortKind::Fxs => "FXS",
            PortKind::Fxo => "FXO",
        }
    }
}

/// Hook state of a port's line as the board reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Handset down (FXS) / line released (FXO).
    OnHook,
    /// Handset lifted (FXS) / line seized (FXO).
    OffHook,
    /// Not reported by the board yet.
    Unknown,
}

impl Hook {
    /// Words for people: `on-hook`, `off-hook`, `not reported yet`.
    pub fn label(self) -> &'static str {
        match self {
            Hook::OnHook => "on-hook",
            Hook::OffHook => "off-hook",
            Hook::Unknown => "not reported yet",
        }
    }
}

/// One line measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineReading {
    /// Tip-to-ring voltage, mV.
    pub millivolts: i32,
    /// Loop current, µA.
    pub microamps: u32,
    /// When it was reported, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Something that happened on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortEvent {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// What, in words.
    pub what: String,
}

/// One port as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortStatus {
    /// Port number (FXS first, then FXO, from 1).
    pub port: u8,
    /// FXS or FXO.
    pub kind: PortKind,
    /// The extension on this port (FXS) from the config.
    pub extension: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Call control's state (`idle`, `dialing`, `ringing`, `calling`, `talking`,
    /// `lockout`, `fault`).
    pub state: &'static str,
    /// Hook state: an FXS port's from the board (events and loop current); an FXO
    /// port's is the box's own seizure of the PSTN line, from call control's state
    /// (released while idle or ringing, seized while dialling, calling or talking).
    pub hook: Hook,
    /// The last line reading, when the board gave one.
    pub line: Option<LineReading>,
    /// The fault the board reported, until the port works again.
    pub fault: Option<String>,
    /// Whether a ring test is ringing the phone now.
    pub ring_test: bool,
    /// Whether a line test is running on the port now.
    pub line_testing: bool,
    /// The last line test's outcome, while the daemon runs.
    pub line_test: Option<LineTestResult>,
    /// Whether a loopback test runs on the port now.
    pub loopback_testing: bool,
    /// The last loopback test's outcome, while the daemon runs.
    pub loopback_test: Option<LoopbackResult>,
    /// Recent events, newest last.
    pub events: VecDeque<PortEvent>,
}

/// The daemon's live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxStatus {
    /// Bumped at every published change (lets clients skip duplicates).
    pub version: u64,
    /// When this snapshot was made, ms since the Unix epoch.
    pub at_ms: i64,
    /// When the daemon started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Every analog port.
    pub ports: Vec<PortStatus>,
    /// Calls in progress (call control's count).
    pub active_calls: usize,
    /// The SIP trunk: `not configured`, `usable` or `unusable` (registration failed
    /// or the trunk stopped answering).
    pub trunk: &'static str,
}

/// What does not change while the daemon runs, for the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticInfo {
    /// `branchd`'s version.
    pub version: &'static str,
    /// The board model.
    pub board_model: String,
    /// The data directory (its file system's free space is the disk line).
    pub data_dir: PathBuf,
    /// Whether `[sip]` is configured.
    pub sip_configured: bool,
    /// Local SIP accounts configured (`[[sip_accounts]]`).
    pub sip_accounts: usize,
}

/// Why a line test was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineTestError {
    /// No such port.
    #[error("port {port} does not exist on this board")]
    NoSuchPort {
        /// The port asked for.
        port: u8,
    },
    /// The port is in use.
    #[error("port {port} is busy ({state}); a line test needs an idle port (FXS: handset down)")]
    Busy {
        /// The port asked for.
        port: u8,
        /// Its state.
        state: &'static str,
    },
    /// A line test already runs on it.
    #[error("a line test is already running on port {port}")]
    AlreadyTesting {
        /// The port asked for.
        port: u8,
    },
    /// The main loop is gone (the daemon is stopping), or never published the result.
    #[error("the daemon is stopping")]
    Stopping,
}

/// Why a loopback test was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopbackError {
    /// No such port.
    #[error("port {port} does not exist on this board")]
    NoSuchPort {
        /// The port asked for.
        port: u8,
    },
    /// The port is in use or under another test.
    #[error("port {port} is busy ({state}); a loopback test needs an idle port (FXS: handset down) with no other test running")]
    Busy {
        /// The port asked for.
        port: u8,
        /// Its state, or the test running on it.
        state: &'static str,
    },
    /// The main loop is gone (the daemon is stopping), or never published the result.
    #[error("the daemon is stopping")]
    Stopping,
}

/// Why a ring test was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingTestError {
    /// No such port.
    #[error("port {port} does not exist on this board")]
    NoSuchPort {
        /// The port asked for.
        port: u8,
    },
    /// Only FXS ports have a phone to ring.
    #[error("port {port} is an FXO port (a PSTN line); only FXS ports ring a phone")]
    NotFxs {
        /// The port asked for.
        port: u8,
    },
    /// The port is in use.
    #[error("port {port} is busy ({state}); a ring test needs an idle port with the handset down")]
    Busy {
        /// The port asked for.
        port: u8,
        /// Its state.
        state: &'static str,
    },
    /// A ring test already rings it.
    #[error("a ring test is already ringing port {port}")]
    AlreadyRinging {
        /// The port asked for.
        port: u8,
    },
    /// The main loop is gone (the daemon is stopping).
    #[error("the daemon is stopping; try again when it is back")]
    Stopping,
}

/// The calls in progress as the main loop answers [`ControlRequest::Calls`].
#[derive(Debug, Clone)]
pub struct ActiveCalls {
    /// Call control's calls, oldest first.
    pub calls: Vec<CallSnapshot>,
    /// The media engine's open legs (RTP statistics), or why they are unknown.
    pub legs: Result<Vec<LegSnapshot>, String>,
}

/// The call center live, as the main loop answers [`ControlRequest::CallCenter`]
/// (`GET /api/v1/call-center`, the queues page). Callers' numbers are as dialled in:
/// the API masks them per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallCenterStatus {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Queues in configuration order.
    pub queues: Vec<QueueLive>,
    /// Agents in configuration order.
    pub agents: Vec<AgentLive>,
}

/// A queue in [`CallCenterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueLive {
    /// The queue's name.
    pub name: String,
    /// The number callers dial.
    pub number: String,
    /// Its strategy (`ring_all`, `round_robin`, ...).
    pub strategy: &'static str,
    /// Members logged in and free for a call now.
    pub agents_available: usize,
    /// Members logged in (any state but logged out).
    pub agents_logged_in: usize,
    /// Every member with the calls each answered from this queue since the start.
    pub members: Vec<MemberLive>,
    /// Callers waiting, first to be served first.
    pub waiting: Vec<WaitingLive>,
}

/// A queue member in [`QueueLive`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberLive {
    /// The agent ID.
    pub agent_id: String,
    /// Calls answered from the queue since the daemon started.
    pub answered: u64,
}

/// A waiting caller in [`QueueLive`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingLive {
    /// 1 for the next caller served.
    pub position: usize,
    /// The caller's number ("" when withheld).
    pub caller: String,
    /// A VIP caller (served before the others).
    pub vip: bool,
    /// Milliseconds waited so far.
    pub waited_ms: i64,
    /// Agents being rung for the caller now.
    pub ringing: Vec<String>,
}

/// An agent in [`CallCenterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentLive {
    /// The agent ID.
    pub agent_id: String,
    /// `logged_out`, `available`, `ringing`, `on_call`, `wrap_up` or `paused`.
    pub state: &'static str,
    /// The pause reason, when paused with one.
    pub reason: Option<String>,
    /// The extension logged in on.
    pub extension: Option<String>,
    /// Milliseconds in this state so far.
    pub in_state_ms: i64,
}

impl CallCenterStatus {
    /// The status of `acd` at `now` (wall clock `at_ms`).
    pub fn of(acd: &crate::acd::Acd, now: Instant, at_ms: i64) -> CallCenterStatus {
        use crate::acd::AgentState;
        let ms = |since: Instant| {
            i64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(i64::MAX)
        };
        let status = acd.status();
        let state_of: BTreeMap<&str, &AgentState> = status
            .agents
            .iter()
            .map(|a| (a.id.as_str(), &a.state))
            .collect();
        let queues = status
            .queues
            .iter()
            .map(|q| QueueLive {
                name: q.name.to_string(),
                number: q.number.clone(),
                strategy: q.strategy,
                agents_available: q
                    .members
                    .iter()
                    .filter(|(id, _)| state_of.get(id.as_str()) == Some(&&AgentState::Available))
                    .count(),
                agents_logged_in: q
                    .members
                    .iter()
                    .filter(|(id, _)| {
                        state_of
                            .get(id.as_str())
                            .is_some_and(|s| **s != AgentState::LoggedOut)
                    })
                    .count(),
                members: q
                    .members
                    .iter()
                    .map(|(id, answered)| MemberLive {
                        agent_id: id.to_string(),
                        answered: *answered,
                    })
                    .collect(),
                waiting: q
                    .waiting
                    .iter()
                    .enumerate()
                    .map(|(i, w)| WaitingLive {
                        position: i + 1,
                        caller: w.caller.clone(),
                        vip: w.priority > 0,
                        waited_ms: ms(w.arrived),
                        ringing: w.ringing.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            })
            .collect();
        let agents = status
            .agents
            .iter()
            .map(|a| AgentLive {
                agent_id: a.id.to_string(),
                state: a.state.name(),
                reason: match &a.state {
                    AgentState::Paused(Some(r)) => Some(r.to_string()),
                    _ => None,
                },
                extension: a.extension.clone(),
                in_state_ms: ms(a.since),
            })
            .collect();
        CallCenterStatus {
            at_ms,
            queues,
            agents,
        }
    }
}

/// An agent as their desktop sees them ([`StatusHandle::agent_desk`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentDeskState {
    /// The agent ID.
    pub agent_id: String,
    /// `login`, `fixed` or `automatic`.
    pub extension_mode: &'static str,
    /// `logged_out`, `available`, `ringing`, `on_call`, `wrap_up` or `paused`.
    pub state: &'static str,
    /// The pause reason, when paused with one.
    pub reason: Option<String>,
    /// The extension logged in on.
    pub extension: Option<String>,
    /// Since when the state holds, ms since the Unix epoch.
    pub since_ms: i64,
}

/// Why [`StatusHandle::agent_desk`] did not act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentDeskError {
    /// No call center runs (no queue and no agent configured).
    #[error("the call center is not running (no queues or agents configured)")]
    NoCallCenter,
    /// The ACD does not know the agent (disabled, or added since its last load).
    #[error("agent {0} is not known to the call center")]
    UnknownAgent(String),
    /// The ACD refused the action; nothing changed.
    #[error("{0}")]
    Refused(crate::acd::InputError),
    /// The main loop is gone (the daemon is stopping).
    #[error("the daemon is stopping; try again when it is back")]
    Stopping,
}

/// A request from the web side to the main loop.
#[derive(Debug)]
pub enum ControlRequest {
    /// The calls in progress and their legs' RTP statistics.
    Calls {
        /// The answer.
        reply: oneshot::Sender<ActiveCalls>,
    },
    /// The call center's queues and agents now (`None`: no call center runs).
    CallCenter {
        /// The answer.
        reply: oneshot::Sender<Option<CallCenterStatus>>,
    },
    /// Click-to-call: ring a user's phone, then dial for it.
    ClickToCall {
        /// What to ring and dial.
        request: crate::screen_pop::ClickRequest,
        /// The outcome.
        reply:
            oneshot::Sender<Result<crate::screen_pop::ClickStarted, crate::screen_pop::ClickError>>,
    },
    /// An agent's desktop: act on the agent (`None`: only read the state), then
    /// answer the agent's state.
    AgentDesk {
        /// The agent.
        agent: crate::acd::AgentId,
        /// What to do.
        action: Option<crate::call::DeskAction>,
        /// The agent's state after it, or why nothing was done.
        reply: oneshot::Sender<Result<AgentDeskState, AgentDeskError>>,
    },
    /// A voicemail message was deleted through the API: call control forgets it.
    VoicemailDeleted {
        /// The message's row id.
        id: i64,
    },
    /// Publish an event to the agents' desktops (`/api/v1/events`) for the API: the
    /// main loop owns the hub.
    Publish {
        /// The event.
        event: crate::screen_pop::DeskEvent,
    },
    /// Loopback-test an idle port ([`crate::tools::loopback`]); the answer is the
    /// run's number (its result appears in the port's status).
    LoopbackTest {
        /// The port.
        port: u8,
        /// The run's number, or why it was not started.
        reply: oneshot::Sender<Result<u64, LoopbackError>>,
    },
    /// Line-test an idle port ([`crate::tools::line_test`]); the answer is the run's
    /// number, its result comes in the port's status.
    LineTest {
        /// The port.
        port: u8,
        /// The run's number, or why it did not start.
        reply: oneshot::Sender<Result<u64, LineTestError>>,
    },
    /// The line voltage chart's readings ([`StatusPublisher::line_history`]).
    LineHistory {
        /// The answer.
        reply: oneshot::Sender<super::history::LineHistory>,
    },
    /// Ring an idle FXS phone for [`RING_TEST_DURATION`].
    RingTest {
        /// The port.
        port: u8,
        /// The outcome.
        reply: oneshot::Sender<Result<(), RingTestError>>,
    },
    /// Reboot the box: refused while calls are up unless `force`; accepted, the main
    /// loop ends the calls and stops with `daemon::Exit::Reboot`.
    Reboot {
        /// Reboot even with calls up (they are ended).
        force: bool,
        /// The calls ended by it, or why not.
        reply: oneshot::Sender<Result<usize, RebootError>>,
    },
}

/// The main loop's answer to [`ControlRequest::Reboot`] with `active_calls` up:
/// refused unless none is up or `force`; accepted, the calls it cuts.
pub fn reboot_decision(active_calls: usize, force: bool) -> Result<usize, RebootError> {
    if active_calls > 0 && !force {
        Err(RebootError::CallsInProgress {
            calls: active_calls,
        })
    } else {
        Ok(active_calls)
    }
}

/// Why a reboot was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebootError {
    /// Calls are up and the request did not force it.
    #[error(
        "{calls} call(s) in progress; reboot when they are over, or force it (the calls are cut)"
    )]
    CallsInProgress {
        /// The calls in progress.
        calls: usize,
    },
    /// The main loop is gone (the daemon is stopping already).
    #[error("branchd is stopping")]
    Stopping,
}

/// Waits until the published status holds what `pick` finds in `port`'s status (a
/// test's result with its id); `None` when the daemon stops or `limit` passes.
async fn port_result<T>(
    mut rx: watch::Receiver<Arc<BoxStatus>>,
    port: u8,
    limit: Duration,
    pick: impl Fn(&PortStatus) -> Option<T>,
) -> Option<T> {
    let wait = async {
        loop {
            let done = rx
                .borrow_and_update()
                .ports
                .iter()
                .find(|p| p.port == port)
                .and_then(&pick);
            if done.is_some() {
                return done;
            }
            rx.changed().await.ok()?;
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

/// The web side's handle: the snapshots, the control channel and the static facts.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    status: watch::Receiver<Arc<BoxStatus>>,
    control: mpsc::UnboundedSender<ControlRequest>,
    info: Arc<StaticInfo>,
    /// The SIP endpoint's registrations (`None`: no SIP endpoint runs).
    sip: Option<watch::Receiver<Arc<SipStatus>>>,
    /// The agents' desktop events (`None`: not published, e.g. API-only tests).
    events: Option<crate::screen_pop::EventFeed>,
    /// The technician's tools (`None`: not offered, e.g. API-only tests).
    tools: Option<crate::tools::Tools>,
    /// QR tokens and the claim QR (`None`: not offered, e.g. API-only tests).
    provisioning: Option<crate::provision::local::LocalProvisioning>,
    /// The charts' histories (`None`: not sampled, e.g. API-only tests).
    charts: Option<super::history::Charts>,
    /// Where the A/B slot state lives (`[update]`; `None`: no A/B layout, a
    /// development or simulator run), for the system page ([`super::system`]).
    slots: Option<crate::config::SlotBackend>,
}

impl StatusHandle {
    /// The handle over a publisher's channels.
    pub fn new(
        status: watch::Receiver<Arc<BoxStatus>>,
        control: mpsc::UnboundedSender<ControlRequest>,
        info: StaticInfo,
    ) -> StatusHandle {
        StatusHandle {
            status,
            control,
            info: Arc::new(info),
            sip: None,
            events: None,
            tools: None,
            provisioning: None,
            charts: None,
            slots: None,
        }
    }

    /// The handle with the box's A/B slot backend (`[update] backend`), which the
    /// system page and `GET /api/v1/system` read through [`crate::health::Slots`].
    pub fn with_slots(mut self, slots: crate::config::SlotBackend) -> StatusHandle {
        self.slots = Some(slots);
        self
    }

    /// The A/B slot backend (`None`: the box has no `[update]` section).
    pub fn slots(&self) -> Option<&crate::config::SlotBackend> {
        self.slots.as_ref()
    }

    /// The handle with the charts' histories ([`super::history::ChartSampler`] feeds
    /// them).
    pub fn with_charts(mut self, charts: super::history::Charts) -> StatusHandle {
        self.charts = Some(charts);
        self
    }

    /// The charts' histories (`None`: not sampled).
    pub fn charts(&self) -> Option<&super::history::Charts> {
        self.charts.as_ref()
    }

    /// The handle with the provisioning page's part of the daemon (state, claim QR,
    /// applying tokens).
    pub fn with_provisioning(
        mut self,
        provisioning: crate::provision::local::LocalProvisioning,
    ) -> StatusHandle {
        self.provisioning = Some(provisioning);
        self
    }

    /// The provisioning page's part of the daemon (`None`: not offered).
    pub fn provisioning(&self) -> Option<&crate::provision::local::LocalProvisioning> {
        self.provisioning.as_ref()
    }

    /// The handle with the technician's tools (the tools page and `/api/v1/tools`).
    pub fn with_tools(mut self, tools: crate::tools::Tools) -> StatusHandle {
        self.tools = Some(tools);
        self
    }

    /// The technician's tools (`None`: not offered).
    pub fn tools(&self) -> Option<&crate::tools::Tools> {
        self.tools.as_ref()
    }

    /// The handle with the agents' desktop events the main loop publishes.
    pub fn with_events(mut self, events: crate::screen_pop::EventFeed) -> StatusHandle {
        self.events = Some(events);
        self
    }

    /// Asks the main loop to publish `event` on the agents' desktop events.
    pub fn publish_desk_event(&self, event: crate::screen_pop::DeskEvent) {
        // A stopping main loop drops it; nobody is listening then.
        let _ = self.control.send(ControlRequest::Publish { event });
    }

    /// The agents' desktop events (`None`: not published).
    pub fn events(&self) -> Option<&crate::screen_pop::EventFeed> {
        self.events.as_ref()
    }

    /// Asks the main loop for a click-to-call.
    pub async fn click_to_call(
        &self,
        request: crate::screen_pop::ClickRequest,
    ) -> Result<crate::screen_pop::ClickStarted, crate::screen_pop::ClickError> {
        use crate::screen_pop::ClickError;
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::ClickToCall { request, reply })
            .map_err(|_| ClickError::Stopping)?;
        answer.await.map_err(|_| ClickError::Stopping)?
    }

    /// Asks the main loop to act for an agent's desktop (`None`: only read the
    /// agent's state) and answers the agent's state.
    pub async fn agent_desk(
        &self,
        agent: crate::acd::AgentId,
        action: Option<crate::call::DeskAction>,
    ) -> Result<AgentDeskState, AgentDeskError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::AgentDesk {
                agent,
                action,
                reply,
            })
            .map_err(|_| AgentDeskError::Stopping)?;
        answer.await.map_err(|_| AgentDeskError::Stopping)?
    }

    /// Tells the main loop that voicemail message `id` was deleted (API).
    pub fn voicemail_deleted(&self, id: i64) {
        if self
            .control
            .send(ControlRequest::VoicemailDeleted { id })
            .is_err()
        {
            tracing::debug!(id, "main loop gone; voicemail deletion not passed on");
        }
    }

    /// The handle with the SIP endpoint's registrations snapshot.
    pub fn with_sip(mut self, sip: watch::Receiver<Arc<SipStatus>>) -> StatusHandle {
        self.sip = Some(sip);
        self
    }

    /// The SIP endpoint's latest registrations snapshot (`None`: no SIP endpoint).
    pub fn sip(&self) -> Option<Arc<SipStatus>> {
        self.sip.as_ref().map(|rx| Arc::clone(&rx.borrow()))
    }

    /// Asks the main loop for the call center's queues and agents (`Err`: the daemon
    /// is stopping; `Ok(None)`: no call center is configured).
    pub async fn call_center(&self) -> Result<Option<CallCenterStatus>, AgentDeskError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::CallCenter { reply })
            .map_err(|_| AgentDeskError::Stopping)?;
        answer.await.map_err(|_| AgentDeskError::Stopping)
    }

    /// Asks the main loop for the line voltage chart's readings (`None`: the daemon
    /// is stopping).
    pub async fn line_history(&self) -> Option<super::history::LineHistory> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::LineHistory { reply })
            .ok()?;
        answer.await.ok()
    }

    /// Asks the main loop for the calls in progress (`None`: the daemon is stopping).
    pub async fn active_calls(&self) -> Option<ActiveCalls> {
        let (reply, answer) = oneshot::channel();
        self.control.send(ControlRequest::Calls { reply }).ok()?;
        answer.await.ok()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<BoxStatus> {
        Arc::clone(&self.status.borrow())
    }

    /// A receiver that wakes on every published change (for SSE streams).
    pub fn subscribe(&self) -> watch::Receiver<Arc<BoxStatus>> {
        self.status.clone()
    }

    /// The static facts.
    pub fn info(&self) -> &StaticInfo {
        &self.info
    }

    /// Asks the main loop to ring-test `port`.
    pub async fn ring_test(&self, port: u8) -> Result<(), RingTestError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::RingTest { port, reply })
            .map_err(|_| RingTestError::Stopping)?;
        answer.await.map_err(|_| RingTestError::Stopping)?
    }

    /// Asks the main loop to line-test `port` and waits for the result (at most
    /// [`LINE_TEST_TIMEOUT`] and a second).
    pub async fn line_test(&self, port: u8) -> Result<LineTestResult, LineTestError> {
        let rx = self.status.clone();
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::LineTest { port, reply })
            .map_err(|_| LineTestError::Stopping)?;
        let id = answer.await.map_err(|_| LineTestError::Stopping)??;
        port_result(rx, port, LINE_TEST_TIMEOUT + Duration::from_secs(1), |p| {
            p.line_test.clone().filter(|r| r.id == id)
        })
        .await
        .ok_or(LineTestError::Stopping)
    }

    /// Asks the main loop to loopback-test `port` and waits for the result (at most
    /// [`LOOPBACK_TEST_TIMEOUT`] and a second).
    pub async fn loopback_test(&self, port: u8) -> Result<LoopbackResult, LoopbackError> {
        let rx = self.status.clone();
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::LoopbackTest { port, reply })
            .map_err(|_| LoopbackError::Stopping)?;
        let id = answer.await.map_err(|_| LoopbackError::Stopping)??;
        port_result(
            rx,
            port,
            LOOPBACK_TEST_TIMEOUT + Duration::from_secs(1),
            |p| p.loopback_test.clone().filter(|r| r.id == id),
        )
        .await
        .ok_or(LoopbackError::Stopping)
    }

    /// Asks the main loop to reboot the box (see [`ControlRequest::Reboot`]).
    pub async fn reboot(&self, force: bool) -> Result<usize, RebootError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlRequest::Reboot { force, reply })
            .map_err(|_| RebootError::Stopping)?;
        answer.await.map_err(|_| RebootError::Stopping)?
    }
}

/// The main loop's side: keeps [`BoxStatus`] and publishes it. See the module docs.
#[derive(Debug)]
pub struct StatusPublisher {
    status: BoxStatus,
    tx: watch::Sender<Arc<BoxStatus>>,
    changed: bool,
    /// When every port's line is read next.
    next_reading: Instant,
    /// How often every port's line is read ([`LINE_READING_INTERVAL`] unless set
    /// shorter for the line voltage chart).
    reading_interval: Duration,
    /// The line voltage chart's readings ([`super::history`]).
    line_history: super::history::LineHistory,
    /// Ring tests in progress: port -> when to stop.
    ring_tests: BTreeMap<u8, Instant>,
    /// Line tests in progress.
    line_tests: BTreeMap<u8, LineTestRun>,
    /// The last line test's number.
    line_test_id: u64,
    /// Loopback tests in progress.
    loopback_tests: BTreeMap<u8, LoopbackRun>,
    /// The last loopback test's number (shares nothing with the line tests').
    loopback_id: u64,
    /// Commands due outside a request's answer (a loopback ended by an event or a
    /// state change is turned off); the main loop sends them after each event.
    pending: Vec<(u8, Command)>,
    /// The country's ring cadence.
    cadence: Cadence,
}

/// One port as the publisher is built with: number, kind, extension and name.
pub type PortSpec = (u8, PortKind, Option<(String, String)>);

impl StatusPublisher {
    /// A publisher over `ports`; `trunk_configured` says whether a SIP trunk exists.
    /// The first [`StatusPublisher::handle_timeout`] (due at `now`) reads every line.
    pub fn new(
        ports: Vec<PortSpec>,
        trunk_configured: bool,
        cadence: Cadence,
        now: Instant,
        now_ms: i64,
    ) -> (StatusPublisher, watch::Receiver<Arc<BoxStatus>>) {
        let status = BoxStatus {
            version: 1,
            at_ms: now_ms,
            started_at_ms: now_ms,
            ports: ports
                .into_iter()
                .map(|(port, kind, ext)| PortStatus {
                    port,
                    kind,
                    extension: ext.as_ref().map(|(n, _)| n.clone()),
                    name: ext.map(|(_, name)| name),
                    state: PortState::Idle.as_str(),
                    // The box starts with every PSTN line released; a phone's hook is
                    // known only once the board reports it.
                    hook: match kind {
                        PortKind::Fxo => Hook::OnHook,
                        PortKind::Fxs => Hook::Unknown,
                    },
                    line: None,
                    fault: None,
                    ring_test: false,
                    line_testing: false,
                    line_test: None,
                    loopback_testing: false,
                    loopback_test: None,
                    events: VecDeque::new(),
                })
                .collect(),
            active_calls: 0,
            trunk: if trunk_configured {
                "unusable"
            } else {
                "not configured"
            },
        };
        let (tx, rx) = watch::channel(Arc::new(status.clone()));
        (
            StatusPublisher {
                status,
                tx,
                changed: false,
                next_reading: now,
                reading_interval: LINE_READING_INTERVAL,
                line_history: super::history::LineHistory::new(super::history::DEFAULT_LINE_SAMPLE),
                ring_tests: BTreeMap::new(),
                line_tests: BTreeMap::new(),
                line_test_id: 0,
                loopback_tests: BTreeMap::new(),
                loopback_id: 0,
                pending: Vec::new(),
                cadence,
            },
            rx,
        )
    }

    /// Keeps one line reading per `interval` for the line voltage chart (`[web]
    /// chart_sample_seconds`), and reads the lines that often when it is shorter than
    /// [`LINE_READING_INTERVAL`]. The readings kept so far are dropped.
    pub fn sample_lines_every(&mut self, interval: Duration) {
        self.reading_interval = interval.clamp(Duration::from_secs(1), LINE_READING_INTERVAL);
        self.line_history = super::history::LineHistory::new(interval);
    }

    /// The line voltage chart's readings.
    pub fn line_history(&self) -> &super::history::LineHistory {
        &self.line_history
    }

    /// The snapshot as it stands (published or not).
    pub fn status(&self) -> &BoxStatus {
        &self.status
    }

    fn port_mut(&mut self, port: u8) -> Option<&mut PortStatus> {
        self.status.ports.iter_mut().find(|p| p.port == port)
    }

    fn note(&mut self, port: u8, now_ms: i64, what: String) {
        if let Some(p) = self.port_mut(port) {
            if p.events.len() == EVENTS_PER_PORT {
                p.events.pop_front();
            }
            p.events.push_back(PortEvent {
                at_ms: now_ms,
                what,
            });
            self.changed = true;
        }
    }

    fn set_hook(&mut self, port: u8, hook: Hook) {
        if let Some(p) = self.port_mut(port) {
            if p.hook != hook {
                p.hook = hook;
                self.changed = true;
            }
        }
    }

    /// A board event on `port`.
    pub fn on_event(&mut self, now_ms: i64, port: u8, event: &Event) {
        match event {
            Event::OffHook => self.abort_loopback(now_ms, port, "the handset was lifted"),
            Event::RingDetected { .. } => {
                self.abort_loopback(now_ms, port, "the PSTN line rang");
            }
            _ => {}
        }
        if let Some(run) = self.line_tests.get_mut(&port) {
            if run.on_event(event) {
                self.finish_line_test(now_ms, port);
            }
        }
        match event {
            Event::OffHook => {
                self.set_hook(port, Hook::OffHook);
                // Ring trip: lifting the handset stops the ringing on the board.
                if self.ring_tests.remove(&port).is_some() {
                    self.set_ring_test(port, false);
                    self.note(port, now_ms, "ring test answered (handset lifted)".into());
                }
                self.note(port, now_ms, "off-hook".into());
            }
            Event::OnHook => {
                self.set_hook(port, Hook::OnHook);
                self.note(port, now_ms, "on-hook".into());
            }
            Event::HookFlash => self.note(port, now_ms, "hook flash".into()),
            Event::RingDetected { .. } => self.note(port, now_ms, "ringing from the PSTN".into()),
            Event::PolarityReversal => self.note(port, now_ms, "polarity reversal".into()),
            Event::LineReading {
                millivolts,
                microamps,
            } => {
                let kind = self.port_mut(port).map(|p| p.kind);
                let reading = LineReading {
                    millivolts: *millivolts,
                    microamps: *microamps,
                    at_ms: now_ms,
                };
                if kind.is_some() {
                    self.line_history.record(port, reading);
                }
                if let Some(p) = self.port_mut(port) {
                    let old = p.line;
                    p.line = Some(reading);
                    // Only a changed value is news for the watchers.
                    if old.map(|l| (l.millivolts, l.microamps)) != Some((*millivolts, *microamps)) {
                        self.changed = true;
                    }
                }
                if kind == Some(PortKind::Fxs) {
                    let hook = if *microamps >= OFF_HOOK_MICROAMPS {
                        Hook::OffHook
                    } else {
                        Hook::OnHook
                    };
                    self.set_hook(port, hook);
                }
            }
            Event::Fault(kind) => {
                let what = fault_text(*kind);
                if let Some(p) = self.port_mut(port) {
                    p.fault = Some(what.to_owned());
                }
                self.note(port, now_ms, format!("fault: {what}"));
            }
            Event::SelfTestResult { passed, code } => {
                let what = if *passed {
                    "self-test passed".to_owned()
                } else {
                    format!("self-test failed (code {code})")
                };
                self.note(port, now_ms, what);
            }
            Event::Digit(_) | Event::Ready { .. } | Event::Rejected { .. } => {}
        }
    }

    /// Call control's new state of `port`.
    pub fn on_port_state(&mut self, now_ms: i64, port: u8, state: PortState) {
        let Some(p) = self.port_mut(port) else {
            return;
        };
        if p.state == state.as_str() {
            return;
        }
        p.state = state.as_str();
        if state != PortState::Fault {
            p.fault = None;
        }
        if p.kind == PortKind::Fxo {
            // The line is seized by the box itself: its hook follows the call.
            match state {
                PortState::Idle | PortState::Ringing => p.hook = Hook::OnHook,
                PortState::Dialing | PortState::Calling | PortState::Talking => {
                    p.hook = Hook::OffHook;
                }
                PortState::Lockout | PortState::Fault => {}
            }
        }
        self.changed = true;
        if state != PortState::Idle && state != PortState::Fault {
            self.abort_loopback(now_ms, port, "a call came to the port");
        }
        self.note(port, now_ms, format!("call state: {}", state.as_str()));
    }

    /// The number of calls in progress and the trunk's state (`None`: no trunk).
    pub fn set_calls(&mut self, active_calls: usize, trunk: Option<TrunkStatus>) {
        let trunk = match trunk {
            None | Some(TrunkStatus::NotConfigured) => "not configured",
            Some(TrunkStatus::Usable) => "usable",
            Some(TrunkStatus::Unusable) => "unusable",
        };
        if self.status.active_calls != active_calls || self.status.trunk != trunk {
            self.status.active_calls = active_calls;
            self.status.trunk = trunk;
            self.changed = true;
        }
    }

    fn set_ring_test(&mut self, port: u8, on: bool) {
        if let Some(p) = self.port_mut(port) {
            p.ring_test = on;
            self.changed = true;
        }
    }

    /// Starts a ring test on `port`: the commands to send, or why not.
    pub fn ring_test(
        &mut self,
        now: Instant,
        now_ms: i64,
        port: u8,
    ) -> Result<Vec<(u8, Command)>, RingTestError> {
        let p = self
            .status
            .ports
            .iter()
            .find(|p| p.port == port)
            .ok_or(RingTestError::NoSuchPort { port })?;
        if p.kind != PortKind::Fxs {
            return Err(RingTestError::NotFxs { port });
        }
        if self.ring_tests.contains_key(&port) {
            return Err(RingTestError::AlreadyRinging { port });
        }
        if self.loopback_tests.contains_key(&port) {
            return Err(RingTestError::Busy {
                port,
                state: "loopback test",
            });
        }
        if p.state != PortState::Idle.as_str() {
            return Err(RingTestError::Busy {
                port,
                state: p.state,
            });
        }
        if p.hook == Hook::OffHook {
            return Err(RingTestError::Busy {
                port,
                state: "off-hook",
            });
        }
        self.ring_tests.insert(port, now + RING_TEST_DURATION);
        self.set_ring_test(port, true);
        self.note(port, now_ms, "ring test started".into());
        Ok(vec![(port, Command::Ring(self.cadence.clone()))])
    }

    /// Starts a line test of `port` ([`crate::tools::line_test`]): the run's number and
    /// the commands to send (self-test and a line reading). Refused on a port with a
    /// call up, an FXS port off the hook or ringing for a ring test, or one already
    /// under test; a port out of service after a fault may be tested (a passed
    /// self-test puts it back into service).
    pub fn line_test(
        &mut self,
        now: Instant,
        now_ms: i64,
        port: u8,
    ) -> Result<(u64, Vec<(u8, Command)>), LineTestError> {
        let p = self
            .status
            .ports
            .iter()
            .find(|p| p.port == port)
            .ok_or(LineTestError::NoSuchPort { port })?;
        if self.line_tests.contains_key(&port) {
            return Err(LineTestError::AlreadyTesting { port });
        }
        if p.state != PortState::Idle.as_str() && p.state != PortState::Fault.as_str() {
            return Err(LineTestError::Busy {
                port,
                state: p.state,
            });
        }
        if self.ring_tests.contains_key(&port) {
            return Err(LineTestError::Busy {
                port,
                state: "ring test",
            });
        }
        if self.loopback_tests.contains_key(&port) {
            return Err(LineTestError::Busy {
                port,
                state: "loopback test",
            });
        }
        if p.kind == PortKind::Fxs && p.hook == Hook::OffHook {
            return Err(LineTestError::Busy {
                port,
                state: "off-hook",
            });
        }
        self.line_test_id += 1;
        let id = self.line_test_id;
        let run = LineTestRun::new(id, p.kind, now, p.fault.clone());
        self.line_tests.insert(port, run);
        if let Some(p) = self.port_mut(port) {
            p.line_testing = true;
        }
        self.note(port, now_ms, "line test started".into());
        Ok((
            id,
            vec![(port, Command::SelfTest), (port, Command::ReadLine)],
        ))
    }

    fn finish_line_test(&mut self, now_ms: i64, port: u8) {
        let Some(run) = self.line_tests.remove(&port) else {
            return;
        };
        let result = run.finish(now_ms);
        let what = if result.passed {
            "line test passed".to_owned()
        } else {
            format!("line test failed: {}", result.summary())
        };
        if let Some(p) = self.port_mut(port) {
            p.line_testing = false;
            p.line_test = Some(result);
        }
        self.note(port, now_ms, what);
    }

    /// Starts a loopback test of `port` ([`crate::tools::loopback`]): the run's number
    /// and the command to send (the loopback on). Refused on a port with a call up,
    /// an FXS port off the hook, one ringing for a ring test or
    /// under any other test.
    pub fn loopback_test(
        &mut self,
        now: Instant,
        now_ms: i64,
        port: u8,
    ) -> Result<(u64, Vec<(u8, Command)>), LoopbackError> {
        let p = self
            .status
            .ports
            .iter()
            .find(|p| p.port == port)
            .ok_or(LoopbackError::NoSuchPort { port })?;
        let busy = |state| Err(LoopbackError::Busy { port, state });
        if self.loopback_tests.contains_key(&port) {
            return busy("loopback test");
        }
        if self.line_tests.contains_key(&port) {
            return busy("line test");
        }
        if self.ring_tests.contains_key(&port) {
            return busy("ring test");
        }
        // A port out of service after a fault may be tested: that is when it is needed.
        if p.state != PortState::Idle.as_str() && p.state != PortState::Fault.as_str() {
            return busy(p.state);
        }
        if p.kind == PortKind::Fxs && p.hook == Hook::OffHook {
            return busy("off-hook");
        }
        self.loopback_id += 1;
        let id = self.loopback_id;
        self.loopback_tests.insert(port, LoopbackRun::new(id, now));
        if let Some(p) = self.port_mut(port) {
            p.loopback_testing = true;
        }
        self.note(port, now_ms, "loopback test started".into());
        Ok((id, vec![(port, Command::SetLoopback { on: true })]))
    }

    /// Whether a loopback test runs (the main loop then sends its frames every 20 ms).
    pub fn loopback_active(&self) -> bool {
        !self.loopback_tests.is_empty()
    }

    /// Whether `port` is under a loopback test (its audio goes to the test).
    pub fn loopback_on(&self, port: u8) -> bool {
        self.loopback_tests.contains_key(&port)
    }

    /// The test frames due by `now` of every loopback test (call every 20 ms; see
    /// [`LoopbackRun::poll_frames`]).
    pub fn loopback_frames(&mut self, now: Instant) -> Vec<(u8, Pcm)> {
        self.loopback_tests
            .iter_mut()
            .flat_map(|(&port, run)| run.poll_frames(now).into_iter().map(move |f| (port, f)))
            .collect()
    }

    /// A frame `port` sent while under a loopback test.
    pub fn loopback_audio(&mut self, now_ms: i64, port: u8, pcm: &Pcm) {
        if self
            .loopback_tests
            .get_mut(&port)
            .is_some_and(|run| run.on_audio(pcm))
        {
            self.finish_loopback(now_ms, port, None);
        }
    }

    fn abort_loopback(&mut self, now_ms: i64, port: u8, why: &str) {
        if self.loopback_tests.contains_key(&port) {
            self.finish_loopback(now_ms, port, Some(why));
        }
    }

    /// Ends `port`'s loopback test (judged, or aborted with `why`) and turns the
    /// loopback off.
    fn finish_loopback(&mut self, now_ms: i64, port: u8, why: Option<&str>) {
        let Some(run) = self.loopback_tests.remove(&port) else {
            return;
        };
        let result = match why {
            None => run.finish(now_ms),
            Some(why) => run.abort(now_ms, why),
        };
        let what = if result.passed {
            "loopback test passed".to_owned()
        } else {
            format!("loopback test failed: {}", result.reason)
        };
        if let Some(p) = self.port_mut(port) {
            p.loopback_testing = false;
            p.loopback_test = Some(result);
        }
        self.note(port, now_ms, what);
        self.pending
            .push((port, Command::SetLoopback { on: false }));
    }

    /// Ends every loopback test (the daemon stops): the commands that turn them off.
    pub fn stop_loopbacks(&mut self, now_ms: i64) -> Vec<(u8, Command)> {
        let ports: Vec<u8> = self.loopback_tests.keys().copied().collect();
        for port in ports {
            self.finish_loopback(now_ms, port, Some("the daemon is stopping"));
        }
        self.take_commands()
    }

    /// Commands due since the last call (loopbacks to turn off).
    pub fn take_commands(&mut self) -> Vec<(u8, Command)> {
        std::mem::take(&mut self.pending)
    }

    /// When [`StatusPublisher::handle_timeout`] is next due.
    pub fn timeout(&self) -> Instant {
        self.ring_tests
            .values()
            .copied()
            .chain(self.line_tests.values().map(LineTestRun::deadline))
            .chain(self.loopback_tests.values().map(LoopbackRun::deadline))
            .fold(self.next_reading, Instant::min)
    }

    /// Runs what is due at `now`: the commands to send.
    pub fn handle_timeout(&mut self, now: Instant, now_ms: i64) -> Vec<(u8, Command)> {
        let mut out = Vec::new();
        let ended: Vec<u8> = self
            .line_tests
            .iter()
            .filter(|(_, run)| run.deadline() <= now)
            .map(|(&p, _)| p)
            .collect();
        for port in ended {
            self.finish_line_test(now_ms, port);
        }
        let ended: Vec<u8> = self
            .loopback_tests
            .iter()
            .filter(|(_, run)| run.deadline() <= now)
            .map(|(&p, _)| p)
            .collect();
        for port in ended {
            // Judged with what arrived (nothing, when the board sent no audio back).
            self.finish_loopback(now_ms, port, None);
        }
        out.append(&mut self.pending);
        let due: Vec<u8> = self
            .ring_tests
            .iter()
            .filter(|(_, &end)| end <= now)
            .map(|(&p, _)| p)
            .collect();
        for port in due {
            self.ring_tests.remove(&port);
            self.set_ring_test(port, false);
            // Stop only our own ringing: a call may have taken the port meanwhile.
            let idle = self
                .status
                .ports
                .iter()
                .any(|p| p.port == port && p.state == PortState::Idle.as_str());
            if idle {
                out.push((port, Command::StopRing));
            }
            self.note(port, now_ms, "ring test ended".into());
        }
        if self.next_reading <= now {
            self.next_reading = now + self.reading_interval;
            out.extend(
                self.status
                    .ports
                    .iter()
                    .map(|p| (p.port, Command::ReadLine)),
            );
        }
        out
    }

    /// Publishes the snapshot if anything changed since the last call.
    pub fn publish(&mut self, now_ms: i64) {
        if !self.changed {
            return;
        }
        self.changed = false;
        self.status.version += 1;
        self.status.at_ms = now_ms;
        let snapshot = Arc::new(self.status.clone());
        self.tx.send_replace(snapshot);
    }
}

/// A board fault in words, with its usual cause.
pub(crate) fn fault_text(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::OverCurrent => "over-current (shorted line?)",
        FaultKind::ForeignVoltage => "foreign voltage on the line",
        FaultKind::Thermal => "line chip over temperature",
        FaultKind::RingerOverload => "too many ringers on the line",
        FaultKind::NoLineVoltage => "no line voltage (PSTN line cut or unplugged)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> (StatusPublisher, watch::Receiver<Arc<BoxStatus>>, Instant) {
        let now = Instant::now();
        let (p, rx) = StatusPublisher::new(
            vec![
                (1, PortKind::Fxs, Some(("101".into(), "Reception".into()))),
                (2, PortKind::Fxs, None),
                (3, PortKind::Fxo, None),
            ],
            false,
            Cadence::continuous(),
            now,
            1_000,
        );
        (p, rx, now)
    }

    #[test]
    fn a_line_test_judges_the_boards_answers_or_ends_at_its_timeout() {
        let (mut p, _rx, now) = publisher();
        p.handle_timeout(now, 1_000);
        let (id, cmds) = p.line_test(now, 1_000, 1).expect("idle port");
        assert_eq!(cmds, vec![(1, Command::SelfTest), (1, Command::ReadLine)]);
        assert!(p.status().ports[0].line_testing);
        assert_eq!(p.timeout(), now + LINE_TEST_TIMEOUT);
        assert_eq!(
            p.line_test(now, 1_000, 1),
            Err(LineTestError::AlreadyTesting { port: 1 })
        );
        assert!(matches!(
            p.ring_test(now, 1_000, 1),
            Ok(_) | Err(RingTestError::Busy { .. })
        ));
        p.on_event(
            1_100,
            1,
            &Event::SelfTestResult {
                passed: true,
                code: 0,
            },
        );
        assert!(p.status().ports[0].line_testing, "waits for the reading");
        p.on_event(
            1_200,
            1,
            &Event::LineReading {
                millivolts: -48_000,
                microamps: 0,
            },
        );
        let port = &p.status().ports[0];
        assert!(!port.line_testing);
        let result = port.line_test.clone().expect("result");
        assert_eq!((result.id, result.passed, result.at_ms), (id, true, 1_200));
        assert_eq!(
            port.events.back().map(|e| e.what.as_str()),
            Some("line test passed")
        );

        // FXO port 3 whose line controller never answers: failed at the deadline.
        let (id3, _) = p.line_test(now, 1_000, 3).expect("idle FXO");
        assert!(id3 > id);
        assert!(p
            .handle_timeout(now + Duration::from_secs(1), 2_000)
            .is_empty());
        assert!(p.status().ports[2].line_testing);
        p.handle_timeout(now + LINE_TEST_TIMEOUT, 4_000);
        let port = &p.status().ports[2];
        assert!(!port.line_testing);
        let result = port.line_test.clone().expect("result");
        assert!(!result.passed);
        assert!(
            result.summary().contains("no answer"),
            "{}",
            result.summary()
        );
        assert!(port
            .events
            .back()
            .is_some_and(|e| e.what.starts_with("line test failed")));
    }

    #[test]
    fn a_line_test_is_refused_on_a_busy_port_but_runs_on_a_faulty_one() {
        let (mut p, _rx, now) = publisher();
        assert_eq!(
            p.line_test(now, 0, 9),
            Err(LineTestError::NoSuchPort { port: 9 })
        );
        p.on_port_state(0, 3, PortState::Talking);
        assert_eq!(
            p.line_test(now, 0, 3),
            Err(LineTestError::Busy {
                port: 3,
                state: "talking"
            })
        );
        p.on_event(0, 2, &Event::OffHook);
        assert_eq!(
            p.line_test(now, 0, 2),
            Err(LineTestError::Busy {
                port: 2,
                state: "off-hook"
            })
        );
        p.ring_test(now, 0, 1).expect("ring");
        assert_eq!(
            p.line_test(now, 0, 1),
            Err(LineTestError::Busy {
                port: 1,
                state: "ring test"
            })
        );
        assert!(p
            .status()
            .ports
            .iter()
            .all(|port| port.line_test.is_none() && !port.line_testing));
        // A port call control took out of service after a fault: tested, and the
        // board's fault is one of the checks.
        p.on_event(0, 3, &Event::Fault(FaultKind::NoLineVoltage));
        p.on_port_state(0, 3, PortState::Fault);
        p.line_test(now, 0, 3).expect("a faulty port may be tested");
        p.on_event(
            5,
            3,
            &Event::SelfTestResult {
                passed: false,
                code: 1,
            },
        );
        p.on_event(
            6,
            3,
            &Event::LineReading {
                millivolts: 0,
                microamps: 0,
            },
        );
        let result = p.status().ports[2].line_test.clone().expect("result");
        let failed: Vec<&str> = result
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["self-test", "line voltage", "fault"]);
    }

    #[test]
    fn first_timeout_reads_every_line_then_every_interval() {
        let (mut p, _rx, now) = publisher();
        assert_eq!(p.timeout(), now);
        let cmds = p.handle_timeout(now, 1_000);
        assert_eq!(
            cmds,
            vec![
                (1, Command::ReadLine),
                (2, Command::ReadLine),
                (3, Command::ReadLine)
            ]
        );
        assert_eq!(p.timeout(), now + LINE_READING_INTERVAL);
        assert!(p
            .handle_timeout(now + Duration::from_secs(1), 2_000)
            .is_empty());
    }

    #[test]
    fn the_chart_sampling_may_read_the_lines_more_often_never_less() {
        let (mut p, _rx, now) = publisher();
        p.sample_lines_every(Duration::from_secs(2));
        assert_eq!(p.handle_timeout(now, 0).len(), 3);
        assert_eq!(p.timeout(), now + Duration::from_secs(2));
        let (mut p, _rx, now) = publisher();
        p.sample_lines_every(Duration::from_secs(3600));
        let _ = p.handle_timeout(now, 0);
        assert_eq!(p.timeout(), now + LINE_READING_INTERVAL);
    }

    #[test]
    fn every_reading_feeds_the_line_history_even_when_unchanged() {
        let (mut p, mut rx, _) = publisher();
        p.sample_lines_every(Duration::from_secs(1));
        let reading = Event::LineReading {
            millivolts: -48_000,
            microamps: 0,
        };
        for t in [1_000, 2_000, 3_000] {
            p.on_event(t, 1, &reading);
            p.publish(t);
        }
        // An unchanged reading is no news for the watchers, but the chart keeps it.
        rx.mark_unchanged();
        p.on_event(4_000, 1, &reading);
        p.publish(4_000);
        assert!(!rx.has_changed().unwrap_or(true));
        let kept: Vec<i64> = p
            .line_history()
            .samples(1)
            .iter()
            .map(|s| s.at_ms)
            .collect();
        assert_eq!(kept, vec![1_000, 2_000, 3_000, 4_000]);
        // Not a port of this board: nothing kept.
        p.on_event(5_000, 9, &reading);
        assert!(p.line_history().samples(9).is_empty());
    }

    #[test]
    fn hook_follows_events_and_loop_current_and_publishes_only_changes() {
        let (mut p, mut rx, _) = publisher();
        rx.mark_unchanged();
        p.on_event(
            5,
            1,
            &Event::LineReading {
                millivolts: 8_000,
                microamps: 25_000,
            },
        );
        p.publish(5);
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.ports[0].hook, Hook::OffHook);
        assert_eq!(s.ports[0].line.map(|l| l.millivolts), Some(8_000));
        p.on_event(6, 1, &Event::OnHook);
        p.publish(6);
        let s = rx.borrow_and_update().clone();
        assert_eq!(s.ports[0].hook, Hook::OnHook);
        assert_eq!(
            s.ports[0].events.back().map(|e| e.what.as_str()),
            Some("on-hook")
        );
        // Nothing new: nothing published.
        p.publish(7);
        assert!(!rx.has_changed().unwrap());
        // Digits are never kept.
        p.on_event(8, 1, &Event::Digit(b'5'));
        p.publish(8);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn an_fxo_lines_hook_is_the_boxs_seizure_from_the_start() {
        let (mut p, mut rx, _) = publisher();
        // Port 3 is FXO: released from the start; port 1 (FXS) not reported yet.
        assert_eq!(p.status().ports[2].hook, Hook::OnHook);
        assert_eq!(p.status().ports[0].hook, Hook::Unknown);
        rx.mark_unchanged();
        for (state, hook) in [
            (PortState::Ringing, Hook::OnHook),
            (PortState::Talking, Hook::OffHook),
            (PortState::Idle, Hook::OnHook),
            (PortState::Dialing, Hook::OffHook),
            (PortState::Fault, Hook::OffHook),
            (PortState::Idle, Hook::OnHook),
        ] {
            p.on_port_state(10, 3, state);
            p.publish(10);
            let s = rx.borrow_and_update().clone();
            assert_eq!(s.ports[2].hook, hook, "after {state:?}");
        }
        // An FXS port's hook still comes from the board only.
        p.on_port_state(11, 1, PortState::Talking);
        assert_eq!(p.status().ports[0].hook, Hook::Unknown);
    }

    #[test]
    fn ring_test_rings_an_idle_fxs_port_and_stops_after_its_time() {
        let (mut p, _rx, now) = publisher();
        let cmds = p.ring_test(now, 0, 1).expect("idle port rings");
        assert!(matches!(cmds.as_slice(), [(1, Command::Ring(_))]));
        assert!(p.status().ports[0].ring_test);
        assert_eq!(
            p.ring_test(now, 0, 1),
            Err(RingTestError::AlreadyRinging { port: 1 })
        );
        let _ = p.handle_timeout(now, 0); // line readings
        let end = now + RING_TEST_DURATION;
        assert_eq!(p.timeout(), end);
        assert_eq!(p.handle_timeout(end, 6_000), vec![(1, Command::StopRing)]);
        assert!(!p.status().ports[0].ring_test);
    }

    #[test]
    fn ring_test_is_refused_on_a_busy_fxo_or_unknown_port() {
        let (mut p, _rx, now) = publisher();
        p.on_port_state(0, 2, PortState::Talking);
        assert_eq!(
            p.ring_test(now, 0, 2),
            Err(RingTestError::Busy {
                port: 2,
                state: "talking"
            })
        );
        assert_eq!(
            p.ring_test(now, 0, 3),
            Err(RingTestError::NotFxs { port: 3 })
        );
        assert_eq!(
            p.ring_test(now, 0, 9),
            Err(RingTestError::NoSuchPort { port: 9 })
        );
        p.on_event(0, 1, &Event::OffHook);
        assert!(matches!(
            p.ring_test(now, 0, 1),
            Err(RingTestError::Busy { port: 1, .. })
        ));
        // Refusals change nothing.
        assert!(p.status().ports.iter().all(|p| !p.ring_test));
    }

    #[test]
    fn a_call_taking_the_port_keeps_its_ringing_and_off_hook_ends_the_test() {
        let (mut p, _rx, now) = publisher();
        let _ = p.handle_timeout(now, 0);
        p.ring_test(now, 0, 1).expect("rings");
        p.on_port_state(1, 1, PortState::Ringing);
        let end = now + RING_TEST_DURATION;
        assert!(p.handle_timeout(end, 6_000).is_empty(), "no StopRing");
        p.on_port_state(7, 1, PortState::Idle);
        p.ring_test(end, 7, 1).expect("rings again");
        p.on_event(8, 1, &Event::OffHook);
        assert!(!p.status().ports[0].ring_test);
        assert_eq!(p.timeout(), now + LINE_READING_INTERVAL);
    }

    #[test]
    fn a_loopback_test_is_refused_on_a_busy_port_and_always_turned_off() {
        let (mut p, _rx, now) = publisher();
        // Off-hook, under a line test, with a call up: refused.
        p.on_event(0, 1, &Event::OffHook);
        assert!(matches!(
            p.loopback_test(now, 0, 1),
            Err(LoopbackError::Busy {
                state: "off-hook",
                ..
            })
        ));
        p.on_event(0, 1, &Event::OnHook);
        p.line_test(now, 0, 2).expect("line test");
        assert!(matches!(
            p.loopback_test(now, 0, 2),
            Err(LoopbackError::Busy {
                state: "line test",
                ..
            })
        ));
        assert!(matches!(
            p.loopback_test(now, 0, 99),
            Err(LoopbackError::NoSuchPort { port: 99 })
        ));
        // Started: the loopback goes on; a second one, a ring or line test refused.
        let (id, cmds) = p.loopback_test(now, 0, 1).expect("started");
        assert_eq!(cmds, vec![(1, Command::SetLoopback { on: true })]);
        assert!(p.loopback_active() && p.loopback_on(1) && !p.loopback_on(3));
        assert!(p.status().ports[0].loopback_testing);
        assert!(p.loopback_test(now, 0, 1).is_err());
        assert!(p.ring_test(now, 0, 1).is_err());
        assert!(p.line_test(now, 0, 1).is_err());
        // A call comes to the port: aborted, the loopback off.
        assert_eq!(
            p.loopback_frames(now).len(),
            1 + crate::tools::loopback::PRIME_FRAMES,
            "primed"
        );
        assert_eq!(p.loopback_frames(now + Duration::from_millis(20)).len(), 1);
        p.on_port_state(5, 1, PortState::Ringing);
        assert_eq!(
            p.take_commands(),
            vec![(1, Command::SetLoopback { on: false })]
        );
        let r = p.status().ports[0].loopback_test.clone().expect("result");
        assert_eq!(r.id, id);
        assert!(!r.passed);
        assert_eq!(r.reason, "aborted: a call came to the port");
        assert!(!p.loopback_active());
        p.on_port_state(6, 1, PortState::Idle);
        // Lifting the handset aborts it too.
        p.loopback_test(now, 0, 1).expect("started");
        p.on_event(7, 1, &Event::OffHook);
        assert_eq!(
            p.take_commands(),
            vec![(1, Command::SetLoopback { on: false })]
        );
        assert!(p.status().ports[0]
            .loopback_test
            .as_ref()
            .is_some_and(|r| r.reason.contains("handset")));
        // Nothing comes back: judged at the timeout, failed, the loopback off.
        p.on_event(8, 1, &Event::OnHook);
        p.loopback_test(now, 0, 1).expect("started");
        assert!(p.timeout() <= now + LOOPBACK_TEST_TIMEOUT);
        let cmds = p.handle_timeout(now + LOOPBACK_TEST_TIMEOUT, 9);
        assert!(
            cmds.contains(&(1, Command::SetLoopback { on: false })),
            "{cmds:?}"
        );
        let r = p.status().ports[0].loopback_test.clone().expect("result");
        assert!(!r.passed);
        assert!(r.reason.contains("no audio came back"), "{}", r.reason);
        // The daemon stops during a test: turned off.
        p.loopback_test(now, 0, 1).expect("started");
        assert_eq!(
            p.stop_loopbacks(10),
            vec![(1, Command::SetLoopback { on: false })]
        );
    }
}
