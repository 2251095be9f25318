//! Call queues on real calls: the ACD core ([`crate::acd`]) driven by call control.
//!
//! A queue's number is in the dial plan like an extension: an FXS phone or a local SIP
//! phone dials it, a PSTN line's `inbound` list or a trunk DID names it, a blind
//! transfer targets it. The caller enters the queue ([`crate::acd::Input::CallerArrived`])
//! and the ACD decides the rest; its [`crate::acd::Action`]s are carried out here:
//!
//! - Waiting: an analog caller (FXS, or a PSTN line, which is answered - seized - when
//!   it enters the queue) hears the queue's music on hold: the board's tone generator
//!   for the hold chime ([`Tone::MusicOnHold`]), the media engine for a WAV prompt
//!   ([`crate::prompts`]). A SIP caller gets 180 Ringing, then 183 with SDP (early
//!   media: not answered, so not charged) and the music (the chime rendered as audio,
//!   or the prompt) as RTP; it is answered only when an agent is connected. A queue
//!   with silence, or a SIP caller that sent no SDP offer, leaves the caller's phone
//!   playing its own ringback. Every `announce_every` the ACD's position / expected-wait
//!   announcement is spoken from prompts ([`announcement`]) when the box has them, then
//!   the music resumes.
//! - Ring: the agent's logged-in extension is offered the call like a normal call (its
//!   FXS port rings with the caller's ID, its SIP phones get an INVITE), but only a
//!   phone that is free: an agent's phone busy on another call refuses the offer (no
//!   call waiting for queue calls), and the ACD moves on. The ACD owns the ring
//!   timeout; call control's own ring timeout does not apply.
//! - Answer: the agent's phone answering is fed to the ACD (`OfferAnswered`); the
//!   ACD's `Connect` bridges caller and agent (music stops, a SIP caller is answered).
//!   A phone that answers after the ACD withdrew the offer gets busy tone / a BYE.
//! - An offer that fails (the SIP phone declines or is unreachable, the FXS port
//!   faults) is `OfferRejected`; the caller hanging up while waiting is
//!   `CallerAbandoned`; either side ending an answered call (or transferring it away)
//!   is `CallEnded`, after which the agent goes to wrap-up.
//! - Overflow to busy or to a number: the caller hears busy (is refused with 486) or is
//!   sent out through the normal outside routes (trunk, then FXO). Overflow to
//!   voicemail: the caller leaves a message in the mailbox ([`super::voicemail`]).
//! - Every agent state change is an [`Output::AgentState`] (the daemon appends it to
//!   `agent_state_log` and, for HQ, to the outbox).
//!
//! Agent feature codes ([`crate::acd::codes`], `*61<agent>*<pin>#` log in, `*62` log
//! out, `*63[reason]#` pause, `*64` unpause by default) are recognised while an FXS
//! phone dials, and in the number a local SIP phone's INVITE asks for (`features`: the
//! phone's call is answered with the confirmation tone, or refused with 403/404). The PIN is checked outside call control (argon2id is too slow for the
//! board loop): [`Output::CheckAgentPin`] asks, [`CallControl::agent_pin_checked`]
//! answers. The phone hears [`Tone::Confirmation`] when the request was carried out and
//! number-unobtainable tone when it was refused (wrong PIN, unknown agent, extension
//! held by another agent, not logged in), then goes quiet until hung up. After
//! [`PIN_FAILURES`] wrong PINs in a row an agent ID is refused without a check for
//! [`PIN_LOCKOUT`].
//!
//! Disposition (`*60<digit>`): an agent in wrap-up tags the last queue call they
//! answered with a customer-type digit. Call control checks the agent is wrapping up
//! such a call and asks the store ([`Output::Disposition`]: the type must exist; the
//! tag, the caller's customer record and an outbox row are written in one
//! transaction); [`CallControl::disposition_stored`] answers, and the phone hears the
//! confirmation or the refusal as for the other codes.
//!
//! The supervisor codes (`*65`/`*66`/`*67<agent>#`: listen, whisper, barge) are parsed
//! with the same [`FeatureCodes`] and handled by `supervise` (from analog phones; a SIP phone
//! dialling one is refused).
//!
//! Limits: announcements need their prompts (the built-in set, see [`crate::prompts`],
//! has them; a set without them only logs the announcement) and are English-shaped ("caller number 4, about 3
//! minutes"); overflow to voicemail gives busy when the mailbox is missing or full
//! (see [`super::voicemail`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use line_proto::Command;

use crate::acd::codes::{FeatureCodes, FeatureRequest, Parsed, Pin};
use crate::acd::{
    Acd, AcdConfig, Action, AgentId, AgentState, CallId, FeatureCodeError, Input, InputError,
    LoginFrom, MusicOnHold, OverflowTarget, PauseReason, QueueName, StopReason,
};
use crate::cdr::{CdrQueue, CdrQueueOverflow, CdrTransferHop, Disposition, HangupSide};
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

use super::{
    CallControl, CallKey, EndReason, Fxs, MediaEnd, Output, OutsideAttempt, Party, PortState,
    SipTarget,
};

/// Wrong PINs in a row after which an agent ID is locked out of logging in.
pub const PIN_FAILURES: u32 = 5;
/// How long such a lockout lasts.
pub const PIN_LOCKOUT: Duration = Duration::from_secs(300);

/// The call-center part of [`super::CallSettings`].
#[derive(Debug, Clone)]
pub struct AcdSettings {
    /// Queues and agents, as loaded from the store.
    pub config: AcdConfig,
    /// The agent feature codes.
    pub codes: FeatureCodes,
}

/// A call as one agent sees it ([`Output::AgentCall`]): the facts an agent's desktop
/// pops up (the caller, the queue) and what happened. Queue calls, and direct calls
/// offered to the analog phone an agent is logged in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCallEvent {
    /// The agent.
    pub agent: AgentId,
    /// The call's id (as on its CDR).
    pub call_id: String,
    /// The queue the caller came through (`None`: a direct call to the agent's phone).
    pub queue: Option<String>,
    /// Calling number ("" when withheld); unmasked: masking is per viewer.
    pub caller_number: String,
    /// Calling name from caller ID or the calling extension ("" when none).
    pub caller_name: String,
    /// The agent's extension rung (or that answered).
    pub extension: Option<String>,
    /// When the caller entered the queue (a direct call: when it started), ms since
    /// the Unix epoch.
    pub since_ms: i64,
    /// When this happened, ms since the Unix epoch.
    pub at_ms: i64,
    /// What happened.
    pub kind: AgentCallKind,
    /// The call this one continues after a transfer (the last hop of its transfer
    /// chain: the earlier call's id and who transferred it), so the new agent's desktop
    /// gets the customer's context with the call.
    pub transferred_from: Option<CdrTransferHop>,
}

/// What happened to a call for an agent ([`AgentCallEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCallKind {
    /// The agent's phone rings for the call.
    Ringing,
    /// The agent answered: caller and agent are connected.
    Answered,
    /// The call is no longer the agent's: it ended, or the offer was withdrawn.
    Ended {
        /// How.
        end: AgentCallEnd,
        /// Talk time, for a call the agent answered.
        talk_ms: Option<i64>,
    },
}

/// How a call ended for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCallEnd {
    /// The call itself ended, with its CDR's disposition.
    Call(Disposition),
    /// The call goes on but no longer rings this agent (no answer in time, another
    /// agent answered, the agent paused, the caller overflowed).
    OfferStopped(StopReason),
}

impl AgentCallEnd {
    /// Stable lower-case name (the event stream's `disposition`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentCallEnd::Call(d) => d.as_str(),
            AgentCallEnd::OfferStopped(StopReason::NoAnswer) => "not_answered",
            AgentCallEnd::OfferStopped(StopReason::AnsweredElsewhere) => "answered_elsewhere",
            AgentCallEnd::OfferStopped(StopReason::Abandoned) => "abandoned",
            AgentCallEnd::OfferStopped(StopReason::Overflowed) => "overflowed",
            AgentCallEnd::OfferStopped(StopReason::AgentLeft) => "agent_left",
        }
    }
}

/// A call's place in the call center.
#[derive(Debug, Clone)]
pub(super) struct QueueCall {
    /// The queue the caller entered.
    pub(super) queue: QueueName,
    /// Devices ringing for the call, and the agent each rings for.
    pub(super) offers: Vec<(Party, AgentId)>,
    /// The agent connected, once one answered.
    pub(super) agent: Option<AgentId>,
    /// The agent's device that answered, until the ACD connects it.
    pub(super) answering: Option<Party>,
    /// How long the caller waited before the agent was connected.
    pub(super) waited: Option<Duration>,
    /// When the caller entered the queue.
    pub(super) entered: Instant,
    /// The caller's end while the media engine plays to it (prompt music on hold,
    /// announcements, any music to a SIP caller).
    pub(super) playing: Option<MediaEnd>,
    /// What the caller hears between announcements (`None`: silence).
    pub(super) music: Option<Sound>,
    /// A SIP caller was sent 183 with SDP for the music.
    pub(super) early_media: bool,
}

impl QueueCall {
    /// The CDR's call-center fields for the call ending at `now`.
    pub(super) fn cdr(&self, now: Instant) -> CdrQueue {
        let wait = self
            .waited
            .unwrap_or_else(|| now.saturating_duration_since(self.entered));
        CdrQueue {
            queue: self.queue.as_str().to_owned(),
            agent: self.agent.as_ref().map(|a| a.as_str().to_owned()),
            wait_ms: i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A login waiting for its PIN check.
#[derive(Debug)]
pub(super) struct PendingLogin {
    from: Party,
    extension: String,
    agent: AgentId,
}

/// The call center's runtime state inside call control.
#[derive(Debug)]
pub(super) struct CallCenter {
    acd: Acd,
    codes: FeatureCodes,
    /// Queue number -> queue.
    numbers: BTreeMap<String, QueueName>,
    /// Queue -> its post-call survey prompt (queues with a survey only).
    surveys: BTreeMap<QueueName, String>,
    pin_checks: BTreeMap<u64, PendingLogin>,
    next_check: u64,
    /// Wrong PINs in a row per agent, and the end of its lockout.
    pin_failures: BTreeMap<AgentId, (u32, Option<Instant>)>,
    /// The last answered queue call of each agent, which a disposition tags.
    last_calls: BTreeMap<AgentId, LastCall>,
    /// Dispositions being stored: who keyed them, by check number.
    disposition_checks: BTreeMap<u64, Party>,
}

/// An agent's last answered queue call, for the disposition keyed in wrap-up.
#[derive(Debug, Clone)]
struct LastCall {
    call_id: String,
    caller: String,
}

/// Queue number -> queue.
fn queue_numbers(config: &AcdConfig) -> BTreeMap<String, QueueName> {
    config
        .queues()
        .iter()
        .map(|q| (q.number.as_str().to_owned(), q.name.clone()))
        .collect()
}

/// Queue -> its survey prompt, for queues with a survey.
fn queue_surveys(config: &AcdConfig) -> BTreeMap<QueueName, String> {
    config
        .queues()
        .iter()
        .filter_map(|q| Some((q.name.clone(), q.survey.clone()?)))
        .collect()
}

impl CallCenter {
    /// `digits` checked against the agent feature codes.
    pub(super) fn parse_code(&self, digits: &str) -> Result<Parsed, FeatureCodeError> {
        self.codes.parse(digits)
    }

    pub(super) fn new(settings: &AcdSettings, now: Instant) -> CallCenter {
        CallCenter {
            acd: Acd::new(&settings.config, now),
            codes: settings.codes.clone(),
            numbers: queue_numbers(&settings.config),
            surveys: queue_surveys(&settings.config),
            pin_checks: BTreeMap::new(),
            next_check: 1,
            pin_failures: BTreeMap::new(),
            last_calls: BTreeMap::new(),
            disposition_checks: BTreeMap::new(),
        }
    }

    pub(super) fn timeout(&self, now: Instant) -> Option<Instant> {
        self.acd.timeout(now)
    }

    /// Whether `digits` are (or start) an agent feature code.
    pub(super) fn codes_parse_is_code(&self, digits: &str) -> bool {
        !matches!(self.codes.parse(digits), Ok(Parsed::NotACode))
    }

    /// The survey prompt of `queue`, if it has one.
    pub(super) fn survey_prompt(&self, queue: &QueueName) -> Option<&str> {
        self.surveys.get(queue).map(String::as_str)
    }
}

impl CallControl {
    /// The ACD, when a call center is configured (read-only: for status pages).
    pub fn acd(&self) -> Option<&Acd> {
        self.center.as_ref().map(|c| &c.acd)
    }

    /// The queue dialled as `number`, if it is a queue's number.
    pub(super) fn queue_of(&self, number: &str) -> Option<QueueName> {
        self.center.as_ref()?.numbers.get(number).cloned()
    }

    /// Whether some queue number starts with `digits`.
    pub(super) fn queue_number_prefix(&self, digits: &str) -> bool {
        self.center
            .as_ref()
            .is_some_and(|c| c.numbers.keys().any(|n| n.starts_with(digits)))
    }

    /// Feeds one input to the ACD and carries out its actions; `None` without a call
    /// center.
    pub(super) fn acd_input(
        &mut self,
        now: Instant,
        input: Input,
    ) -> Option<Result<(), InputError>> {
        let center = self.center.as_mut()?;
        let result = center.acd.handle(now, input);
        self.drain_acd(now);
        Some(result)
    }

    /// An agent's desktop acts on the agent (the local API, `crate::api`'s agents
    /// module): log in on `extension` (which the API chose by the agent's extension
    /// mode), log out, pause, unpause. `None` without a call center; a refusal leaves
    /// everything unchanged.
    pub fn agent_desk(
        &mut self,
        now: Instant,
        agent: AgentId,
        action: DeskAction,
    ) -> Option<Result<(), InputError>> {
        let input = match action {
            DeskAction::Login { extension } => Input::AgentLogin {
                agent,
                extension,
                from: LoginFrom::Desktop,
            },
            DeskAction::Logout => Input::AgentLogout { agent },
            DeskAction::Pause { reason } => Input::AgentPause { agent, reason },
            DeskAction::Unpause => Input::AgentUnpause { agent },
        };
        self.acd_input(now, input)
    }

    /// Takes the call center's configuration anew (the store's queues and agents
    /// changed) while calls go on: see [`crate::acd::Acd::reconfigure`] for what
    /// happens to agents, queues and waiting callers. New callers dial the new queue
    /// numbers from now on; the feature codes are `settings.codes`. Starts the call
    /// center if there was none.
    pub fn reconfigure_acd(&mut self, now: Instant, settings: AcdSettings) {
        match self.center.as_mut() {
            Some(center) => {
                center.acd.reconfigure(&settings.config, now);
                center.numbers = queue_numbers(&settings.config);
                center.surveys = queue_surveys(&settings.config);
                center.codes = settings.codes;
            }
            None => self.center = Some(CallCenter::new(&settings, now)),
        }
        self.drain_acd(now);
    }

    /// Runs `f` with the ACD's decisions held back until it is done (they wait in the
    /// ACD's queue). A phone hanging up ends its call inside the handler, which frees
    /// the agent; the agent's next offer must find the phone idle, which it is only
    /// once the whole hang-up is handled (else the offer is refused as "phone busy"
    /// and the agent is passed over).
    pub(super) fn with_acd_deferred<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let outer = std::mem::replace(&mut self.acd_deferred, true);
        let result = f(self);
        self.acd_deferred = outer;
        self.drain_acd(now);
        result
    }

    /// Runs the ACD's timers due at `now`.
    pub(super) fn acd_timeout(&mut self, now: Instant) {
        if let Some(center) = self.center.as_mut() {
            center.acd.handle_timeout(now);
            self.drain_acd(now);
        }
    }

    fn drain_acd(&mut self, now: Instant) {
        if self.acd_deferred {
            return;
        }
        while let Some(action) = self.center.as_mut().and_then(|c| c.acd.poll_action()) {
            self.acd_action(now, action);
        }
    }

    fn acd_action(&mut self, now: Instant, action: Action) {
        match action {
            Action::Ring {
                call,
                agent,
                extension,
            } => self.ring_agent(now, call.0, agent, extension),
            Action::StopRinging {
                call,
                agent,
                reason,
                ..
            } => self.stop_agent_offers(now, call.0, &agent, reason),
            Action::Connect {
                call,
                agent,
                waited,
            } => self.connect_agent(now, call.0, agent, waited),
            Action::StartMusicOnHold { call, music } => self.music_on_hold(call.0, &music),
            Action::Announce {
                call,
                position,
                expected_wait,
            } => self.announce(call.0, position, expected_wait),
            Action::Overflow {
                call,
                target,
                reason,
            } => self.overflow(now, call.0, target, reason),
            Action::AgentStateChanged {
                agent,
                state,
                extension,
                at,
            } => {
                let at_ms = self.wall(at);
                let call_id = match &state {
                    AgentState::Ringing(c) | AgentState::OnCall(c) => {
                        Some(format!("{}-{}", self.settings.call_id_prefix, c.0))
                    }
                    _ => None,
                };
                self.outputs.push_back(Output::AgentState {
                    agent,
                    state,
                    extension,
                    call_id,
                    at_ms,
                });
            }
        }
    }

    /// Call `key` (already placed, alerting, nobody offered) enters `queue`.
    pub(super) fn enter_queue(&mut self, now: Instant, key: CallKey, queue: QueueName) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.queue = Some(QueueCall {
            queue: queue.clone(),
            offers: Vec::new(),
            agent: None,
            answering: None,
            waited: None,
            entered: now,
            playing: None,
            music: None,
            early_media: false,
        });
        call.deadline = None;
        call.last_ring = None;
        let caller = call.caller;
        let caller_number = call.caller_number.clone();
        match caller {
            Party::Fxs(port) => {
                self.set_fxs(port, Fxs::Caller(key));
                self.port_state(port, PortState::Calling);
            }
            Party::Fxo(line) => {
                // A PSTN caller is answered by the queue (it hears the music).
                call.caller_connected = true;
                self.cmd(line, Command::FxoSeize);
                self.port_state(line, PortState::Talking);
            }
            Party::Sip(leg) => {
                if !call.caller_alerted && !call.caller_connected {
                    call.caller_alerted = true;
                    self.outputs.push_back(Output::SipRinging {
                        leg,
                        early_media: false,
                    });
                }
            }
        }
        tracing::info!(call = key, queue = %queue, caller = %caller_number, "caller enters queue");
        let arrived = Input::CallerArrived {
            call: CallId(key),
            queue,
            caller: caller_number,
            skill: None,
        };
        if let Some(Err(e)) = self.acd_input(now, arrived) {
            tracing::warn!(call = key, error = %e, "queue refused the caller");
            if let Some(call) = self.calls.get_mut(&key) {
                call.queue = None;
            }
            self.fail_call(now, key, Disposition::Busy, HangupSide::System);
        }
    }

    /// The ACD offers call `key` to `agent` on `extension`: its free devices ring.
    fn ring_agent(&mut self, now: Instant, key: CallKey, agent: AgentId, extension: String) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let (caller, number, name) = (
            call.caller,
            call.caller_number.clone(),
            call.caller_name.clone(),
        );
        let mut parties = Vec::new();
        if let Some(port) = self.fxs_port_of(&extension) {
            let free = self
                .fxs
                .get(&port)
                .is_some_and(|p| p.state == Fxs::Idle && !p.off_hook);
            if free && Party::Fxs(port) != caller {
                self.ring(port, &number, &name);
                self.set_fxs(port, Fxs::Ringing(key));
                if let Some(call) = self.calls.get_mut(&key) {
                    call.ringing.push(port);
                }
                parties.push(Party::Fxs(port));
            }
        }
        let phone_busy = self.legs.values().any(|l| l.phone && l.number == extension);
        if self.is_sip_extension(&extension)
            && !phone_busy
            && caller_leg_number(self, caller) != extension
        {
            if let Some(leg) = self.offer_sip(
                now,
                key,
                SipTarget::Extension(extension.clone()),
                extension.clone(),
            ) {
                parties.push(Party::Sip(leg));
            }
        }
        let Some(q) = self.calls.get_mut(&key).and_then(|c| {
            // The ACD owns the ring timeout.
            c.deadline = None;
            c.queue.as_mut()
        }) else {
            return;
        };
        if parties.is_empty() {
            tracing::info!(call = key, %agent, extension, "agent's phone busy or unavailable: offer refused");
            let rejected = Input::OfferRejected {
                call: CallId(key),
                agent,
            };
            self.acd_input(now, rejected);
            return;
        }
        q.offers
            .extend(parties.into_iter().map(|p| (p, agent.clone())));
        self.agent_call(now, key, agent, Some(extension), AgentCallKind::Ringing);
    }

    /// Emits [`Output::AgentCall`] for queue call `key` (still in `self.calls`).
    fn agent_call(
        &mut self,
        now: Instant,
        key: CallKey,
        agent: AgentId,
        extension: Option<String>,
        kind: AgentCallKind,
    ) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let Some(event) = self.agent_call_event(now, call, agent, extension, kind) else {
            return;
        };
        self.outputs.push_back(Output::AgentCall(Box::new(event)));
    }

    /// The [`AgentCallEvent`] of `call` for `agent`.
    pub(super) fn agent_call_event(
        &self,
        now: Instant,
        call: &super::Call,
        agent: AgentId,
        extension: Option<String>,
        kind: AgentCallKind,
    ) -> Option<AgentCallEvent> {
        let q = call.queue.as_ref();
        Some(AgentCallEvent {
            agent,
            call_id: call.id.clone(),
            queue: q.map(|q| q.queue.as_str().to_owned()),
            caller_number: call.caller_number.clone(),
            caller_name: call.caller_name.clone(),
            extension,
            since_ms: self.wall(q.map_or(call.started, |q| q.entered)),
            at_ms: self.wall(now),
            kind,
            transferred_from: call.transfer_chain.last().cloned(),
        })
    }

    /// Direct call `key` was offered to `party` (an FXS port, or a SIP phone's new
    /// leg): an agent logged in on its extension hears of it on their desktop (once per
    /// call).
    pub(super) fn desk_offer(&mut self, now: Instant, key: CallKey, party: Party) {
        let extension = self.party_number(party);
        if extension.is_empty() {
            return;
        }
        let Some(agent) = self
            .center
            .as_ref()
            .and_then(|c| c.acd.agent_at(&extension))
            .cloned()
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.queue.is_some() || call.desk_agents.iter().any(|(a, _)| *a == agent) {
            return;
        }
        call.desk_agents.push((agent.clone(), extension.clone()));
        self.agent_call(now, key, agent, Some(extension), AgentCallKind::Ringing);
    }

    /// Call `key` now carries a transferred party (see `transfer`): the agents at its
    /// phones hear of it again, with the transfer (the event's `transferred_from`) and
    /// the transferred caller's number, so their desktop shows the customer: `Answered`
    /// when the call is connected (an attended transfer), `Ringing` for the phones it
    /// still rings (a transfer on ringing). A queue call is the queue's business.
    pub(super) fn desk_transferred(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.queue.is_some() {
            return;
        }
        let connected = call.phase == super::CallPhase::Connected;
        let parties: Vec<Party> = if connected {
            std::iter::once(call.caller).chain(call.callee).collect()
        } else {
            call.ringing
                .iter()
                .map(|&p| Party::Fxs(p))
                .chain(call.ringing_legs.iter().map(|&l| Party::Sip(l)))
                .collect()
        };
        for party in parties {
            let extension = self.party_number(party);
            let Some(agent) = self
                .center
                .as_ref()
                .and_then(|c| c.acd.agent_at(&extension))
                .cloned()
            else {
                continue;
            };
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            if !call.desk_agents.iter().any(|(a, _)| *a == agent) {
                call.desk_agents.push((agent.clone(), extension.clone()));
            }
            let kind = if connected {
                AgentCallKind::Answered
            } else {
                AgentCallKind::Ringing
            };
            self.agent_call(now, key, agent, Some(extension), kind);
        }
    }

    /// Direct call `key` was answered by `callee`: the agent on that phone hears it
    /// was answered, the other agents offered it that it went elsewhere.
    pub(super) fn desk_answered(&mut self, now: Instant, key: CallKey, callee: Party) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.desk_agents.is_empty() {
            return;
        }
        let extension = self.party_number(callee);
        let answering = self
            .center
            .as_ref()
            .and_then(|c| c.acd.agent_at(&extension))
            .cloned();
        let agents = call.desk_agents.clone();
        for (agent, ext) in agents {
            if Some(&agent) == answering.as_ref() {
                self.agent_call(now, key, agent, Some(ext), AgentCallKind::Answered);
            } else {
                let kind = AgentCallKind::Ended {
                    end: AgentCallEnd::OfferStopped(StopReason::AnsweredElsewhere),
                    talk_ms: None,
                };
                self.agent_call(now, key, agent.clone(), Some(ext), kind);
                if let Some(c) = self.calls.get_mut(&key) {
                    c.desk_agents.retain(|(a, _)| *a != agent);
                }
            }
        }
    }

    /// Call `call` (removed, ending with `disposition`) is over for the agent who
    /// took it and for every agent still offered it.
    pub(super) fn agent_calls_ended(
        &mut self,
        now: Instant,
        call: &super::Call,
        disposition: Disposition,
    ) {
        let talk_ms = call.answered.map(|a| {
            i64::try_from(now.saturating_duration_since(a).as_millis()).unwrap_or(i64::MAX)
        });
        let end = AgentCallEnd::Call(disposition);
        let callee_ext = call
            .callee
            .map(|p| self.party_number(p))
            .filter(|n| !n.is_empty());
        let answered = call.callee.and(talk_ms);
        let mut agents: Vec<(AgentId, Option<String>, Option<i64>)> = Vec::new();
        if let Some(q) = call.queue.as_ref() {
            if let Some(agent) = &q.agent {
                agents.push((agent.clone(), callee_ext.clone(), talk_ms));
                if let (Some(center), Some(_)) = (self.center.as_mut(), answered) {
                    let last = LastCall {
                        call_id: call.id.clone(),
                        caller: call.caller_number.clone(),
                    };
                    center.last_calls.insert(agent.clone(), last);
                }
            }
            for (party, agent) in &q.offers {
                if agents.iter().all(|(a, _, _)| a != agent) {
                    let ext = Some(self.party_number(*party)).filter(|n| !n.is_empty());
                    agents.push((agent.clone(), ext, None));
                }
            }
        }
        // A direct call: after an answer only the answering agent is left.
        for (agent, ext) in &call.desk_agents {
            agents.push((agent.clone(), Some(ext.clone()), answered));
        }
        for (agent, extension, talk_ms) in agents {
            let kind = AgentCallKind::Ended { end, talk_ms };
            if let Some(e) = self.agent_call_event(now, call, agent, extension, kind) {
                self.outputs.push_back(Output::AgentCall(Box::new(e)));
            }
        }
    }

    /// Stops every device ringing for `agent` on call `key`.
    fn stop_agent_offers(
        &mut self,
        now: Instant,
        key: CallKey,
        agent: &AgentId,
        reason: StopReason,
    ) {
        let Some(q) = self.calls.get_mut(&key).and_then(|c| c.queue.as_mut()) else {
            return;
        };
        let answering = q.answering;
        let mut stopped = Vec::new();
        q.offers.retain(|(p, a)| {
            let stop = a == agent && Some(*p) != answering;
            if stop {
                stopped.push(*p);
            }
            !stop
        });
        let leg_reason = if reason == StopReason::NoAnswer {
            EndReason::NoAnswer
        } else {
            EndReason::Normal
        };
        if let Some(&first) = stopped.first() {
            let extension = Some(self.party_number(first)).filter(|n| !n.is_empty());
            let kind = AgentCallKind::Ended {
                end: AgentCallEnd::OfferStopped(reason),
                talk_ms: None,
            };
            self.agent_call(now, key, agent.clone(), extension, kind);
        }
        for party in stopped {
            match party {
                Party::Fxs(port) => {
                    self.stop_offer(port, key);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.ringing.retain(|&p| p != port);
                    }
                }
                Party::Sip(leg) => {
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.ringing_legs.retain(|&l| l != leg);
                    }
                    self.hangup_leg(leg, leg_reason);
                }
                Party::Fxo(_) => {}
            }
        }
    }

    /// `callee` answered queue call `key`: the ACD decides (see the module docs). True
    /// when the answer was taken over (call control's own answer must not run).
    pub(super) fn queue_answer(&mut self, now: Instant, key: CallKey, callee: Party) -> bool {
        let Some(q) = self.calls.get_mut(&key).and_then(|c| c.queue.as_mut()) else {
            return false;
        };
        if q.agent.is_some() || q.answering.is_some() {
            return false; // connected already: call control's answer runs
        }
        let Some(agent) = q
            .offers
            .iter()
            .find(|(p, _)| *p == callee)
            .map(|(_, a)| a.clone())
        else {
            return false;
        };
        q.answering = Some(callee);
        let answered = Input::OfferAnswered {
            call: CallId(key),
            agent: agent.clone(),
        };
        if let Some(Err(e)) = self.acd_input(now, answered) {
            // The offer was withdrawn as the phone answered.
            tracing::info!(call = key, %agent, error = %e, "late answer to a queue call refused");
            if let Some(q) = self.calls.get_mut(&key).and_then(|c| c.queue.as_mut()) {
                q.answering = None;
                q.offers.retain(|(p, _)| *p != callee);
            }
            if let Some(c) = self.calls.get_mut(&key) {
                c.ringing.retain(|&p| Party::Fxs(p) != callee);
                c.ringing_legs.retain(|&l| Party::Sip(l) != callee);
            }
            match callee {
                Party::Fxs(port) => {
                    self.cmd(port, Command::StopRing);
                    self.lockout(now, port, Tone::Busy);
                }
                Party::Sip(leg) => self.hangup_leg(leg, EndReason::Normal),
                Party::Fxo(_) => {}
            }
        }
        true
    }

    /// The ACD connects the agent who answered call `key`.
    fn connect_agent(&mut self, now: Instant, key: CallKey, agent: AgentId, waited: Duration) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let caller = call.caller;
        let Some(q) = call.queue.as_mut() else {
            return;
        };
        let Some(party) = q.answering.take() else {
            tracing::warn!(call = key, %agent, "connect without an answering device");
            return;
        };
        q.agent = Some(agent.clone());
        q.waited = Some(waited);
        q.offers.clear();
        tracing::info!(call = key, %agent, waited_ms = waited.as_millis() as u64, "queue call connected to agent");
        self.stop_queue_music(key);
        if let Party::Fxo(line) = caller {
            self.cmd(line, Command::StopTone);
        }
        self.answer(now, key, party);
        let extension = Some(self.party_number(party)).filter(|n| !n.is_empty());
        self.agent_call(now, key, agent, extension, AgentCallKind::Answered);
    }

    /// Stops what the media engine plays to queue call `key`'s caller, if anything.
    fn stop_queue_music(&mut self, key: CallKey) {
        let playing = self
            .calls
            .get_mut(&key)
            .and_then(|c| c.queue.as_mut())
            .and_then(|q| q.playing.take());
        if let Some(end) = playing {
            self.outputs.push_back(Output::StopPlay { end });
        }
    }

    /// Plays `playback` to queue call `key`'s caller through the media engine: an
    /// analog caller's port (its tone stopped), or a SIP caller's leg, which gets 183
    /// with SDP first (early media: the call is not answered, so not charged; a caller
    /// that sent no SDP offer gets the box's offer in a reliable 183 when it takes
    /// 100rel, and otherwise only 180, hearing its own ringback).
    fn queue_play(&mut self, key: CallKey, playback: Playback) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let caller = call.caller;
        let connected = call.caller_connected;
        let Some(q) = call.queue.as_mut() else {
            return;
        };
        let end = match caller {
            Party::Fxs(p) | Party::Fxo(p) => MediaEnd::Port(p),
            Party::Sip(leg) => MediaEnd::Leg(leg),
        };
        let early = matches!(caller, Party::Sip(_)) && !q.early_media && !connected;
        q.early_media |= early;
        q.playing = Some(end);
        match caller {
            Party::Fxs(p) | Party::Fxo(p) => self.cmd(p, Command::StopTone),
            Party::Sip(leg) if early => self.outputs.push_back(Output::SipRinging {
                leg,
                early_media: true,
            }),
            Party::Sip(_) => {}
        }
        self.outputs.push_back(Output::Play { end, playback });
    }

    /// The ACD's periodic announcement to a waiting caller: spoken when the prompts
    /// for it are there ([`announcement`]), then the caller's music again. Without
    /// them it is only logged.
    fn announce(&mut self, key: CallKey, position: usize, expected_wait: Option<Duration>) {
        let Some(music) = self
            .calls
            .get(&key)
            .and_then(|c| c.queue.as_ref())
            .map(|q| q.music.clone())
        else {
            return;
        };
        let prompts = announcement(&self.settings.prompts, position, expected_wait);
        tracing::info!(
            call = key,
            position,
            expected_wait_s = expected_wait.map(|d| d.as_secs()),
            spoken = !prompts.is_empty(),
            "queue announcement"
        );
        if prompts.is_empty() {
            return;
        }
        self.queue_play(
            key,
            Playback {
                once: prompts,
                then: music,
            },
        );
    }

    fn music_on_hold(&mut self, key: CallKey, music: &MusicOnHold) {
        let sound = match music {
            MusicOnHold::Silence => None,
            MusicOnHold::Tone => Some(Sound::Tone(Tone::MusicOnHold)),
            MusicOnHold::Prompt(name) if self.settings.prompts.contains_key(name) => {
                Some(Sound::Prompt(name.clone()))
            }
            MusicOnHold::Prompt(name) => {
                tracing::warn!(call = key, prompt = %name, "music-on-hold prompt not found: tone instead");
                Some(Sound::Tone(Tone::MusicOnHold))
            }
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let caller = call.caller;
        let Some(q) = call.queue.as_mut() else {
            return;
        };
        q.music = sound.clone();
        match (caller, sound) {
            // The board's own tone generator plays the hold chime to an analog caller.
            (Party::Fxs(p) | Party::Fxo(p), Some(Sound::Tone(tone))) => {
                self.stop_queue_music(key);
                self.tone(p, tone);
            }
            (Party::Fxs(p) | Party::Fxo(p), None) => {
                self.stop_queue_music(key);
                self.cmd(p, Command::StopTone);
            }
            (_, Some(sound)) => self.queue_play(key, Playback::looped(sound)),
            // Silence for a SIP caller: its phone's own ringback (180 only).
            (Party::Sip(_), None) => self.stop_queue_music(key),
        }
    }

    fn overflow(
        &mut self,
        now: Instant,
        key: CallKey,
        target: OverflowTarget,
        reason: crate::acd::OverflowReason,
    ) {
        tracing::info!(call = key, ?target, ?reason, "queue overflow");
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(q) = call.queue.as_mut() else {
            return;
        };
        if !matches!(target, OverflowTarget::Queue(_)) {
            if let Some(end) = q.playing.take() {
                self.outputs.push_back(Output::StopPlay { end });
            }
        }
        // Out of the ACD: the CDR keeps the queue it left and where it went.
        let left = |q: &QueueCall, kind| Some((q.cdr(now), kind));
        let number = match target {
            OverflowTarget::Queue(name) => {
                // The ACD queues it there itself.
                q.queue = name;
                return;
            }
            OverflowTarget::Number(n) => {
                call.overflowed = left(q, CdrQueueOverflow::Number);
                n.as_str().to_owned()
            }
            OverflowTarget::Voicemail(mailbox) => {
                call.overflowed = left(q, CdrQueueOverflow::Voicemail);
                call.queue = None;
                if let Party::Fxs(p) | Party::Fxo(p) = call.caller {
                    self.cmd(p, Command::StopTone);
                }
                if self.start_deposit(now, key, mailbox.as_str(), Disposition::NoAnswer) {
                    return;
                }
                tracing::warn!(call = key, %mailbox, "overflow to voicemail: mailbox missing or full, caller gets busy");
                return self.fail_call(now, key, Disposition::Busy, HangupSide::System);
            }
            OverflowTarget::Busy => {
                call.overflowed = left(q, CdrQueueOverflow::Busy);
                call.queue = None;
                return self.fail_call(now, key, Disposition::Busy, HangupSide::System);
            }
        };
        // Out through the normal routes; the caller hears ringback again.
        call.queue = None;
        call.callee_number = number.clone();
        // The overflow target is the queue's, but the call is an outside caller's,
        // which holds no calling permission: a route needing one refuses it.
        let routes_left =
            match self
                .dial_routes
                .decide(&number, self.trunk, &super::CallerPermissions::none())
            {
                Ok(routes) => routes,
                Err(refused) => {
                    tracing::warn!(
                    call = call.id,
                    number,
                    route = refused.route,
                    permission = refused.permission,
                    "queue overflow to a number refused: the dial route needs a calling permission"
                );
                    call.hangup_cause = Some(super::HangupCause::RouteNotPermitted);
                    Vec::new()
                }
            };
        call.outside = Some(OutsideAttempt {
            number,
            routes_left,
        });
        if let Party::Fxs(p) | Party::Fxo(p) = call.caller {
            self.cmd(p, Command::StopTone);
        }
        self.next_route(now, key, false);
    }

    /// A device offering queue call `key` stopped before answering (declined,
    /// unreachable, faulted): the ACD hears the agent rejected it once none of the
    /// agent's devices rings any more. False when `key` is not a queue call.
    pub(super) fn queue_offer_failed(&mut self, now: Instant, key: CallKey, party: Party) -> bool {
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        call.ringing.retain(|&p| Party::Fxs(p) != party);
        call.ringing_legs.retain(|&l| Party::Sip(l) != party);
        let Some(q) = call.queue.as_mut() else {
            return false;
        };
        let Some(pos) = q.offers.iter().position(|(p, _)| *p == party) else {
            return true;
        };
        let (_, agent) = q.offers.remove(pos);
        if q.offers.iter().all(|(_, a)| *a != agent) {
            self.acd_input(
                now,
                Input::OfferRejected {
                    call: CallId(key),
                    agent,
                },
            );
        }
        true
    }

    /// Call `key` (already removed, its CDR written) is over for the ACD: the agent
    /// goes to wrap-up, or the waiting caller abandoned.
    pub(super) fn queue_call_gone(
        &mut self,
        now: Instant,
        key: CallKey,
        queue: Option<&QueueCall>,
    ) {
        let Some(q) = queue else {
            return;
        };
        if let Some(end) = q.playing {
            self.outputs.push_back(Output::StopPlay { end });
        }
        let Some(center) = self.center.as_ref() else {
            return;
        };
        if center.acd.call_status(CallId(key)).is_none() {
            return; // overflowed out of the ACD already
        }
        let input = if q.agent.is_some() {
            Input::CallEnded { call: CallId(key) }
        } else {
            Input::CallerAbandoned { call: CallId(key) }
        };
        if let Some(Err(e)) = self.acd_input(now, input) {
            tracing::warn!(call = key, error = %e, "queue call end refused by the ACD");
        }
    }

    /// Digits dialled on an FXS phone, checked against the agent feature codes.
    /// `None`: not a feature code (the dial plan decides); otherwise the code was
    /// handled (completed, refused, or waiting for more digits: `Some(false)`).
    pub(super) fn feature_digits(&mut self, now: Instant, port: u8, digits: &str) -> Option<bool> {
        let parsed = self.center.as_ref()?.codes.parse(digits);
        match parsed {
            Ok(Parsed::NotACode) => None,
            Ok(Parsed::Incomplete) => Some(false),
            Ok(Parsed::Request(request)) => {
                let extension = self.port_number(port);
                self.feature_request(now, Party::Fxs(port), extension, request);
                Some(true)
            }
            Err(e) => {
                tracing::info!(port, error = %e, "feature code refused");
                self.lockout(now, port, Tone::Unobtainable);
                Some(true)
            }
        }
    }

    /// Carries out a complete agent feature code dialled by `from` (an FXS phone or a
    /// SIP phone's leg, see `features`) on `extension`.
    pub(super) fn feature_request(
        &mut self,
        now: Instant,
        from: Party,
        extension: String,
        request: FeatureRequest,
    ) {
        let Some(center) = self.center.as_mut() else {
            return;
        };
        let here = center.acd.agent_at(&extension).cloned();
        let input = match request {
            FeatureRequest::Login { agent, pin } => {
                return self.request_pin_check(now, from, extension, agent, pin);
            }
            FeatureRequest::Logout => here.map(|agent| Input::AgentLogout { agent }),
            FeatureRequest::Pause { reason } => {
                here.map(|agent| Input::AgentPause { agent, reason })
            }
            FeatureRequest::Unpause => here.map(|agent| Input::AgentUnpause { agent }),
            FeatureRequest::Disposition { digit } => {
                return self.request_disposition(now, from, here, digit);
            }
            FeatureRequest::Supervise { agent, mode } => {
                return self.request_supervision(now, from, extension, agent, mode);
            }
        };
        let ok = match input {
            None => {
                tracing::info!(
                    ?from,
                    extension,
                    "feature code from an extension no agent is logged in on"
                );
                false
            }
            Some(input) => match self.acd_input(now, input) {
                Some(Ok(())) => true,
                Some(Err(e)) => {
                    tracing::info!(?from, extension, error = %e, "agent feature code refused");
                    false
                }
                None => false,
            },
        };
        self.feature_done(now, from, ok);
    }

    fn request_pin_check(
        &mut self,
        now: Instant,
        from: Party,
        extension: String,
        agent: AgentId,
        pin: Pin,
    ) {
        let Some(center) = self.center.as_mut() else {
            return;
        };
        if let Some(&(_, Some(until))) = center.pin_failures.get(&agent) {
            if until > now {
                tracing::warn!(?from, %agent, "agent login refused: too many wrong PINs");
                return self.feature_done(now, from, false);
            }
            center.pin_failures.remove(&agent);
        }
        let check = center.next_check;
        center.next_check += 1;
        center.pin_checks.insert(
            check,
            PendingLogin {
                from,
                extension,
                agent: agent.clone(),
            },
        );
        // Quiet until the check answers (a SIP phone's leg stays unanswered meanwhile).
        if let Party::Fxs(port) = from {
            self.cmd(port, Command::StopTone);
            self.set_fxs(port, Fxs::Lockout { quiet_at: None });
        }
        self.outputs
            .push_back(Output::CheckAgentPin { check, agent, pin });
    }

    /// A disposition keyed by the agent on the phone (`None`: no agent there): asks the
    /// store to tag the agent's last call ([`Output::Disposition`]) while the agent is
    /// in wrap-up; refused otherwise.
    fn request_disposition(
        &mut self,
        now: Instant,
        from: Party,
        agent: Option<AgentId>,
        digit: u8,
    ) {
        let at_ms = self.wall(now);
        let Some(center) = self.center.as_mut() else {
            return;
        };
        let last = agent.as_ref().and_then(|agent| {
            let wrapping = matches!(center.acd.agent(agent), Some((AgentState::WrapUp, _, _)));
            wrapping
                .then(|| center.last_calls.get(agent).cloned())
                .flatten()
        });
        let (Some(agent), Some(last)) = (agent, last) else {
            tracing::info!(
                ?from,
                digit,
                "disposition refused: no agent wrapping up a call here"
            );
            return self.feature_done(now, from, false);
        };
        let check = center.next_check;
        center.next_check += 1;
        center.disposition_checks.insert(check, from);
        if let Party::Fxs(port) = from {
            self.cmd(port, Command::StopTone);
            self.set_fxs(port, Fxs::Lockout { quiet_at: None });
        }
        tracing::info!(%agent, call = last.call_id, digit, "disposition keyed");
        self.outputs.push_back(Output::Disposition {
            check,
            agent,
            call_id: last.call_id,
            caller: last.caller,
            digit,
            at_ms,
        });
    }

    /// The answer to [`Output::Disposition`] `check`: whether it was stored (false: no
    /// customer type has that digit, or the store failed).
    pub fn disposition_stored(&mut self, now: Instant, check: u64, ok: bool) {
        let Some(from) = self
            .center
            .as_mut()
            .and_then(|c| c.disposition_checks.remove(&check))
        else {
            return;
        };
        self.feature_done(now, from, ok);
    }

    /// The answer to [`Output::CheckAgentPin`] `check`: whether the PIN is the agent's
    /// (false also for an unknown or disabled agent, or a store error).
    pub fn agent_pin_checked(&mut self, now: Instant, check: u64, ok: bool) {
        let Some(center) = self.center.as_mut() else {
            return;
        };
        let Some(login) = center.pin_checks.remove(&check) else {
            return;
        };
        let from = login.from;
        if !ok {
            let entry = center
                .pin_failures
                .entry(login.agent.clone())
                .or_insert((0, None));
            entry.0 += 1;
            if entry.0 >= PIN_FAILURES {
                entry.1 = Some(now + PIN_LOCKOUT);
                tracing::warn!(agent = %login.agent, "agent ID locked out after {PIN_FAILURES} wrong PINs");
            }
            tracing::info!(?from, agent = %login.agent, "agent login refused: wrong PIN or unknown agent");
            return self.feature_done(now, from, false);
        }
        center.pin_failures.remove(&login.agent);
        let input = Input::AgentLogin {
            agent: login.agent.clone(),
            extension: login.extension.clone(),
            from: LoginFrom::Phone,
        };
        let ok = match self.acd_input(now, input) {
            Some(Ok(())) => {
                tracing::info!(?from, agent = %login.agent, extension = login.extension, "agent logged in");
                true
            }
            Some(Err(e)) => {
                tracing::info!(?from, agent = %login.agent, error = %e, "agent login refused");
                false
            }
            None => false,
        };
        self.feature_done(now, from, ok);
    }

    /// The phone that dialled a feature code hears the outcome until it hangs up (a SIP
    /// phone: see `features`).
    pub(super) fn feature_done(&mut self, now: Instant, from: Party, ok: bool) {
        let port = match from {
            Party::Fxs(port) => port,
            Party::Sip(leg) => return self.sip_feature_done(now, leg, ok),
            Party::Fxo(_) => return,
        };
        let off_hook = self.fxs.get(&port).is_some_and(|p| p.off_hook);
        let waiting = matches!(
            self.fxs_state(port),
            Some(Fxs::Lockout { .. } | Fxs::Idle | Fxs::Dialing { .. })
        );
        if off_hook && waiting {
            let tone = if ok {
                Tone::Confirmation
            } else {
                Tone::Unobtainable
            };
            self.lockout(now, port, tone);
        }
    }
}

/// What an agent's desktop asks for ([`CallControl::agent_desk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeskAction {
    /// Log in on this extension.
    Login {
        /// The fixed extension, or the phone registered from the desktop's address.
        extension: String,
    },
    /// Log out.
    Logout,
    /// Pause (on a call: after its wrap-up).
    Pause {
        /// Why, if given.
        reason: Option<PauseReason>,
    },
    /// Unpause (or cancel a pending pause).
    Unpause,
}

/// The extension of a caller that is a local SIP phone ("" otherwise): a queue call is
/// never offered back to the phone that placed it.
fn caller_leg_number(cc: &CallControl, caller: Party) -> String {
    match caller {
        Party::Sip(leg) => cc
            .legs
            .get(&leg)
            .filter(|l| l.phone)
            .map(|l| l.number.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The prompts of a spoken queue announcement, in order, from the prompts the box has:
/// `queue-position` ("you are caller number"), the position as a number, then (with an
/// expected wait) `queue-wait` ("your expected wait is about"), the minutes as a
/// number and `minutes`. Numbers are `num-N` prompts: `num-0` to `num-19` and the tens
/// `num-20` ... `num-90` (so 47 is `num-40 num-7`); above 99 digit by digit. Empty (the
/// announcement is only logged) unless every prompt needed is there; the wait part is
/// left out alone when only its prompts are missing.
pub fn announcement(
    have: &BTreeMap<String, Duration>,
    position: usize,
    expected_wait: Option<Duration>,
) -> Vec<String> {
    let all_there = |v: &[String]| v.iter().all(|n| have.contains_key(n));
    let mut spoken = vec!["queue-position".to_owned()];
    spoken.extend(number_prompts(position as u64));
    if !all_there(&spoken) {
        return Vec::new();
    }
    if let Some(wait) = expected_wait {
        // Whole minutes, rounded up, at least one.
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut part = vec!["queue-wait".to_owned()];
        part.extend(number_prompts(minutes));
        part.push(if minutes == 1 { "minute" } else { "minutes" }.to_owned());
        if all_there(&part) {
            spoken.extend(part);
        }
    }
    spoken
}

/// The `num-N` prompts that say `n` (see [`announcement`]).
fn number_prompts(n: u64) -> Vec<String> {
    match n {
        0..=19 => vec![format!("num-{n}")],
        20..=99 if n % 10 == 0 => vec![format!("num-{n}")],
        20..=99 => vec![format!("num-{}", n / 10 * 10), format!("num-{}", n % 10)],
        _ => n.to_string().chars().map(|d| format!("num-{d}")).collect(),
    }
}
