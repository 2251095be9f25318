//! Which calls get recorded: the daemon's board loop hands call control's bridges,
//! answered call-center calls, the digits keyed during calls and the CDRs to
//! [`CallRecorder`], which starts, pauses and stops [`Recorder`] recordings, and the
//! frames of the ports through a [`Tap`] (from the ports in the board loop, to the
//! ports through [`TapSink`] around the media engine's [`PortSink`]); the media engine
//! hands the RTP of the legs of a recorded SIP-to-SIP call to the same [`Tap`] (as its
//! [`crate::media_engine::RtpTap`]).
//!
//! Policy ([`RecordingPolicy`], the most demanding wins: never < on_demand < always):
//! a bridge's policy is the most demanding of the `[recording]` policies of the
//! extensions in it (analog ports, and the SIP phone behind a leg, which the daemon
//! looks up with call control's `phone_extension`; a trunk leg has none) and, once a
//! call-center call is answered, of the call's queue (`queues.recording`) and the
//! agent (`users.recording`) - applied to the agent's analog port, to the port talking
//! to the agent's SIP phone, or, when the agent's SIP phone talks to another SIP leg
//! (a trunk caller, a SIP phone), to that call (by its call id, whether the bridge
//! comes before or after the answer).
//!
//! - `always`: the recording starts at the bridge (or when the queue call is answered)
//!   and runs until the call's CDR; the toggle code does not stop it.
//! - `on_demand`: a party keys `[recording] toggle_code` (default `*1`) during the
//!   connected call - on an analog phone, or on a SIP phone (RFC 4733 or INFO digits,
//!   [`CallRecorder::leg_digit`]): the recording starts; keying it again pauses it
//!   (the file takes no audio), again resumes it. One file per call either way, ended
//!   and registered under the CDR's call id like an `always` recording. Keys of a
//!   bridge whose policy is `never` are ignored (logged).
//!
//! Keying and layout: a bridge between two ports records keyed on the caller's port
//! (call control bridges caller first; left = the caller's voice, right = the
//! callee's); a bridge between a port and a SIP leg records keyed on the port (its
//! two directions; the caller's voice left); a bridge between two SIP legs records
//! keyed on the caller's leg (call control's `call_of_leg` says which leg is the caller;
//! left = what the caller's leg receives, right = the other leg's). Later bridges of
//! the same call (hold, transfer) keep the recording going; the CDR naming one of its
//! ports, or carrying the call id of its legs, ends it.
//!
//! Limits: a SIP-to-SIP recording ends with the CDR of the call its legs had when they
//! were bridged (a call id that changes by a transfer ends it at the first CDR).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use line_proto::Audio;
use tokio::sync::mpsc;

use crate::acd::AcdConfig;
use crate::call::{AgentCallEvent, AgentCallKind, LegId, MediaEnd};
use crate::cdr::Cdr;
use crate::config::{Config, RecordingPolicy};
use crate::media_engine::PortSink;
use crate::store::StoreWriter;

use super::guard::Statvfs;
use super::{Key, Layout, Recorder, RecorderError, Side, StatsSnapshot, Tap};

/// Matches a mid-call code against the digits keyed one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeMatcher {
    keyed: String,
}

impl CodeMatcher {
    /// Takes digit `d`; true when the digits so far end in a complete `code` (the
    /// matcher then starts over).
    pub fn digit(&mut self, code: &str, d: char) -> bool {
        self.keyed.push(d);
        // The longest tail of what was keyed that is still a start of the code.
        while !code.starts_with(self.keyed.as_str()) {
            self.keyed.remove(0);
        }
        if !self.keyed.is_empty() && self.keyed == code {
            self.keyed.clear();
            return true;
        }
        false
    }
}

/// What a keyed toggle code did ([`CallRecorder::digit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    /// Not (yet) a complete code, or the port is not in a call.
    Nothing,
    /// A recording started.
    Started,
    /// The recording was paused.
    Paused,
    /// The paused recording resumed.
    Resumed,
    /// The call's policy is `never`: nothing recorded.
    Refused,
    /// The call is recorded by an `always` policy: the code does not stop it.
    Always,
}

impl Toggle {
    /// Whether the party that keyed the code gets the confirmation beep: the recording
    /// started, paused or resumed.
    pub fn confirms(self) -> bool {
        matches!(self, Toggle::Started | Toggle::Paused | Toggle::Resumed)
    }
}

/// A bridge the recorder decides about: the one an analog port is in, or the one
/// between two SIP legs (named by either leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bridge {
    Port(u8),
    Legs(LegId),
}

/// The board loop's recording decisions (see the module docs).
#[derive(Debug)]
pub struct CallRecorder {
    recorder: Recorder,
    /// `[recording]` policy of each analog extension's port.
    port_policy: HashMap<u8, RecordingPolicy>,
    /// Analog extension number -> port.
    ext_port: HashMap<String, u8>,
    /// Queue name -> policy.
    queue_policy: HashMap<String, RecordingPolicy>,
    /// Agent ID -> policy.
    agent_policy: HashMap<String, RecordingPolicy>,
    /// What each port is bridged to, and whether it was the first end (the caller).
    peer: HashMap<u8, (MediaEnd, bool)>,
    /// Policies a port's current call got from its queue and agent (until its CDR).
    demand: HashMap<u8, RecordingPolicy>,
    /// The toggle code and each port's digits towards it.
    toggle_code: String,
    keyed: HashMap<u8, CodeMatcher>,
    /// Recordings (by key) started by the toggle code.
    by_code: HashSet<Key>,
    /// `[recording]` policies by extension number (analog and SIP accounts).
    policies: crate::config::RecordingConfig,
    /// The SIP phone's extension behind each bridged leg (none for a trunk leg).
    leg_ext: HashMap<LegId, String>,
    /// Each bridged leg's toggle-code digits.
    leg_keyed: HashMap<LegId, CodeMatcher>,
    /// What each leg bridged to another leg is bridged to, and whether it is the
    /// caller.
    leg_peer: HashMap<LegId, (LegId, bool)>,
    /// The call (id, as on its CDR) each bridged leg belongs to, and whether the leg is
    /// its caller (call control's `call_of_leg`).
    leg_call: HashMap<LegId, (String, bool)>,
    /// Policies a call between two SIP legs got from its queue and agent (by call id,
    /// until its CDR).
    call_demand: HashMap<String, RecordingPolicy>,
}

impl CallRecorder {
    /// Wraps `recorder` with the policy of `config`'s analog extensions (queues and
    /// agents: [`CallRecorder::set_acd`]).
    pub fn new(recorder: Recorder, config: &Config) -> Self {
        let port_policy = config
            .extensions
            .iter()
            .map(|e| (e.port.get(), config.recording.policy(e.number.as_str())))
            .collect();
        let ext_port = config
            .extensions
            .iter()
            .map(|e| (e.number.as_str().to_owned(), e.port.get()))
            .collect();
        Self {
            recorder,
            port_policy,
            ext_port,
            queue_policy: HashMap::new(),
            agent_policy: HashMap::new(),
            peer: HashMap::new(),
            demand: HashMap::new(),
            toggle_code: config.recording.toggle_code.clone(),
            keyed: HashMap::new(),
            by_code: HashSet::new(),
            policies: config.recording.clone(),
            leg_ext: HashMap::new(),
            leg_keyed: HashMap::new(),
            leg_peer: HashMap::new(),
            leg_call: HashMap::new(),
            call_demand: HashMap::new(),
        }
    }

    /// Tells which call `leg` belongs to and whether it is the caller (call control's
    /// `leg_call`), before [`CallRecorder::connect`] bridges it.
    pub fn leg_call(&mut self, leg: LegId, call: Option<(&str, bool)>) {
        match call {
            Some((id, caller)) => {
                self.leg_call.insert(leg, (id.to_owned(), caller));
            }
            None => {
                self.leg_call.remove(&leg);
            }
        }
    }

    fn is_caller_leg(&self, leg: LegId) -> bool {
        self.leg_call.get(&leg).is_some_and(|(_, c)| *c)
    }

    /// The policy of the bridge between SIP `leg` and the leg it is bridged to.
    fn legs_policy(&self, leg: LegId) -> RecordingPolicy {
        let Some(&(other, _)) = self.leg_peer.get(&leg) else {
            return RecordingPolicy::Never;
        };
        let demand = self
            .leg_call
            .get(&leg)
            .and_then(|(id, _)| self.call_demand.get(id))
            .copied()
            .unwrap_or_default();
        self.leg_policy(leg).max(self.leg_policy(other)).max(demand)
    }

    /// Starts recording the bridge between SIP `leg` and its peer, keyed on the
    /// caller's leg (a no-op when none or one runs).
    fn start_legs(&mut self, leg: LegId) -> bool {
        let Some(&(other, is_caller)) = self.leg_peer.get(&leg) else {
            return false;
        };
        if self.recorder.records_leg(leg) || self.recorder.records_leg(other) {
            return false;
        }
        let (caller, callee) = if is_caller {
            (leg, other)
        } else {
            (other, leg)
        };
        self.recorder
            .start(Key::Leg(caller), Layout::legs(caller, callee));
        true
    }

    fn bridge_policy(&self, b: Bridge) -> RecordingPolicy {
        match b {
            Bridge::Port(p) => self.policy(p),
            Bridge::Legs(l) => self.legs_policy(l),
        }
    }

    fn bridge_key(&self, b: Bridge) -> Option<Key> {
        match b {
            Bridge::Port(p) => self.recorder.key_of(p),
            Bridge::Legs(l) => self.recorder.key_of_leg(l),
        }
    }

    fn start(&mut self, b: Bridge) -> bool {
        match b {
            Bridge::Port(p) => self.start_bridge(p),
            Bridge::Legs(l) => self.start_legs(l),
        }
    }

    /// Tells which SIP phone's extension is behind `leg` (call control's
    /// `phone_extension`), before [`CallRecorder::connect`] bridges it.
    pub fn leg_phone(&mut self, leg: LegId, extension: Option<&str>) {
        match extension {
            Some(e) => {
                self.leg_ext.insert(leg, e.to_owned());
            }
            None => {
                self.leg_ext.remove(&leg);
            }
        }
    }

    fn leg_policy(&self, leg: LegId) -> RecordingPolicy {
        self.leg_ext
            .get(&leg)
            .map(|e| self.policies.policy(e))
            .unwrap_or_default()
    }

    /// The analog port bridged to `leg`, if any.
    fn port_of_leg(&self, leg: LegId) -> Option<u8> {
        self.peer
            .iter()
            .find(|(_, (other, _))| *other == MediaEnd::Leg(leg))
            .map(|(&p, _)| p)
    }

    /// Takes the queues' and agents' policies (at start-up and each reconfiguration).
    pub fn set_acd(&mut self, acd: &AcdConfig) {
        self.queue_policy = acd
            .queues()
            .iter()
            .map(|q| (q.name.as_str().to_owned(), q.recording))
            .collect();
        self.agent_policy = acd
            .agents()
            .iter()
            .map(|a| (a.id.as_str().to_owned(), a.recording))
            .collect();
    }

    /// A tap for frames.
    pub fn tap(&self) -> Tap {
        self.recorder.tap()
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.recorder.stats()
    }

    /// The recorder (for tests and the health page).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn port_policy(&self, port: u8) -> RecordingPolicy {
        let own = self.port_policy.get(&port).copied().unwrap_or_default();
        let demand = self.demand.get(&port).copied().unwrap_or_default();
        own.max(demand)
    }

    /// The policy of the bridge `port` is in (see the module docs).
    pub fn policy(&self, port: u8) -> RecordingPolicy {
        let mine = self.port_policy(port);
        match self.peer.get(&port) {
            Some((MediaEnd::Port(other), _)) => mine.max(self.port_policy(*other)),
            Some((MediaEnd::Leg(leg), _)) => mine.max(self.leg_policy(*leg)),
            None => mine,
        }
    }

    /// Starts recording the bridge of `port` (a no-op when none or one runs).
    fn start_bridge(&mut self, port: u8) -> bool {
        let Some(&(other, first)) = self.peer.get(&port) else {
            return false;
        };
        match other {
            MediaEnd::Port(other) => {
                if self.recorder.records_port(port) || self.recorder.records_port(other) {
                    return false;
                }
                let (caller, callee) = if first { (port, other) } else { (other, port) };
                self.recorder.start(caller, Layout::ports(caller, callee));
            }
            MediaEnd::Leg(_) => {
                if self.recorder.records_port(port) {
                    return false;
                }
                self.recorder.start(port, Layout::port_and_leg(port, first));
            }
        }
        true
    }

    /// Call control bridged `a` and `b` (`Output::Connect`).
    pub fn connect(&mut self, a: MediaEnd, b: MediaEnd) {
        for (end, other, first) in [(a, b, true), (b, a, false)] {
            if let MediaEnd::Port(p) = end {
                self.peer.insert(p, (other, first));
            }
        }
        let port = match (a, b) {
            (MediaEnd::Port(p), _) | (_, MediaEnd::Port(p)) => p,
            (MediaEnd::Leg(x), MediaEnd::Leg(y)) => {
                // The caller's leg is left; call control bridges the caller first when
                // it does not say.
                let x_first = self.is_caller_leg(x) || !self.is_caller_leg(y);
                self.leg_peer.insert(x, (y, x_first));
                self.leg_peer.insert(y, (x, !x_first));
                if self.legs_policy(x) == RecordingPolicy::Always {
                    self.start_legs(x);
                }
                return;
            }
        };
        if self.policy(port) == RecordingPolicy::Always {
            self.start_bridge(port);
        }
    }

    /// Call control stopped bridging `a` and `b` (`Output::Disconnect`); a recording
    /// goes on until the CDR.
    pub fn disconnect(&mut self, a: MediaEnd, b: MediaEnd) {
        for (end, other) in [(a, b), (b, a)] {
            if let MediaEnd::Port(p) = end {
                if self.peer.get(&p).is_some_and(|(o, _)| *o == other) {
                    self.peer.remove(&p);
                }
            }
            if let MediaEnd::Leg(leg) = end {
                if self
                    .leg_peer
                    .get(&leg)
                    .is_some_and(|(o, _)| MediaEnd::Leg(*o) == other)
                {
                    self.leg_peer.remove(&leg);
                }
            }
        }
        for end in [a, b] {
            if let MediaEnd::Leg(leg) = end {
                if self.port_of_leg(leg).is_none() && !self.leg_peer.contains_key(&leg) {
                    self.leg_ext.remove(&leg);
                    self.leg_keyed.remove(&leg);
                }
            }
        }
    }

    /// A call-center call changed for an agent (`Output::AgentCall`): when it is
    /// answered on an analog agent's phone, its queue's and the agent's policies join
    /// the bridge's.
    pub fn agent_call(&mut self, ev: &AgentCallEvent) {
        if ev.kind != AgentCallKind::Answered {
            return;
        }
        let queue = ev
            .queue
            .as_ref()
            .and_then(|q| self.queue_policy.get(q))
            .copied()
            .unwrap_or_default();
        let agent = self
            .agent_policy
            .get(ev.agent.as_str())
            .copied()
            .unwrap_or_default();
        let wanted = queue.max(agent);
        if wanted == RecordingPolicy::Never {
            return;
        }
        let ext = ev.extension.as_deref().unwrap_or_default();
        // The agent's analog port, or the port talking to the agent's SIP phone.
        let port = self.ext_port.get(ext).copied().or_else(|| {
            self.leg_ext
                .iter()
                .filter(|(_, e)| e.as_str() == ext)
                .find_map(|(&leg, _)| self.port_of_leg(leg))
        });
        let Some(port) = port else {
            // A call between two SIP legs (a trunk or SIP caller, an agent on a SIP
            // phone): the demand holds for the call, bridged now or later.
            let demand = self
                .call_demand
                .get(&ev.call_id)
                .copied()
                .unwrap_or_default()
                .max(wanted);
            self.call_demand.insert(ev.call_id.clone(), demand);
            let leg = self
                .leg_call
                .iter()
                .filter(|(_, (id, _))| *id == ev.call_id)
                .map(|(&l, _)| l)
                .find(|l| self.leg_peer.contains_key(l));
            match leg {
                Some(leg) => self.hold_on(Bridge::Legs(leg)),
                None => {
                    tracing::debug!(agent = %ev.agent, call_id = ev.call_id, "queue/agent recording policy noted for the call's SIP bridge")
                }
            }
            return;
        };
        let now = self
            .demand
            .get(&port)
            .copied()
            .unwrap_or_default()
            .max(wanted);
        self.demand.insert(port, now);
        self.hold_on(Bridge::Port(port));
    }

    /// When bridge `b`'s policy is now `always`: its recording runs (started, or
    /// resumed and no longer the toggle code's).
    fn hold_on(&mut self, b: Bridge) {
        if self.bridge_policy(b) != RecordingPolicy::Always {
            return;
        }
        if let Some(key) = self.bridge_key(b) {
            // Started by code and paused: `always` now holds it on.
            self.by_code.remove(&key);
            self.recorder.resume(key);
        } else {
            self.start(b);
        }
    }

    /// Digit `d` keyed on analog `port` during a call: the toggle code starts, pauses
    /// or resumes the call's recording (see the module docs).
    pub fn digit(&mut self, port: u8, d: char) -> Toggle {
        let code = self.toggle_code.as_str();
        if !self.keyed.entry(port).or_default().digit(code, d) {
            return Toggle::Nothing;
        }
        if !self.peer.contains_key(&port) {
            return Toggle::Nothing;
        }
        self.toggle(Bridge::Port(port))
    }

    /// Digit `d` from SIP `leg` (RFC 4733 or INFO) during a call: as
    /// [`CallRecorder::digit`] for the bridge the leg is in (with an analog port, or
    /// with another SIP leg).
    pub fn leg_digit(&mut self, leg: LegId, d: char) -> Toggle {
        let code = self.toggle_code.as_str();
        if !self.leg_keyed.entry(leg).or_default().digit(code, d) {
            return Toggle::Nothing;
        }
        match self.port_of_leg(leg) {
            Some(port) => self.toggle(Bridge::Port(port)),
            None if self.leg_peer.contains_key(&leg) => self.toggle(Bridge::Legs(leg)),
            None => Toggle::Nothing,
        }
    }

    fn toggle(&mut self, b: Bridge) -> Toggle {
        let outcome = match (self.bridge_policy(b), self.bridge_key(b)) {
            (RecordingPolicy::Never, None) => Toggle::Refused,
            (_, Some(key)) if !self.by_code.contains(&key) => Toggle::Always,
            (_, Some(key)) if self.recorder.is_paused(key) => {
                self.recorder.resume(key);
                Toggle::Resumed
            }
            (_, Some(key)) => {
                self.recorder.pause(key);
                Toggle::Paused
            }
            (_, None) => {
                if self.start(b) {
                    if let Some(key) = self.bridge_key(b) {
                        self.by_code.insert(key);
                    }
                    Toggle::Started
                } else {
                    Toggle::Nothing
                }
            }
        };
        match b {
            Bridge::Port(port) => tracing::info!(port, outcome = ?outcome, "recording toggle code"),
            Bridge::Legs(leg) => tracing::info!(%leg, outcome = ?outcome, "recording toggle code"),
        }
        outcome
    }

    /// The keys (`p1`, `l3`, as in file names) of the running recordings of the call
    /// `cdr` describes (a call still up, for the journal of live calls): those of its
    /// ports and of the SIP legs bridged under its call id.
    pub fn recording_keys(&self, cdr: &Cdr) -> Vec<String> {
        let ports = [cdr.caller_port, cdr.callee_port]
            .into_iter()
            .flatten()
            .filter(|&p| self.recorder.is_recording(p))
            .map(Key::Port);
        let legs = self
            .leg_call
            .iter()
            .filter(|(&leg, (id, _))| {
                *id == cdr.call_id && self.recorder.is_recording(Key::Leg(leg))
            })
            .map(|(&leg, _)| Key::Leg(leg));
        let mut keys: Vec<String> = ports.chain(legs).map(|k| k.to_string()).collect();
        keys.dedup();
        keys
    }

    /// A call ended (`Output::Cdr`): its recording, if any, ends under its call id.
    pub fn cdr(&mut self, cdr: &Cdr) {
        for port in [cdr.caller_port, cdr.callee_port].into_iter().flatten() {
            if self.recorder.is_recording(port) {
                self.recorder.stop(port, Some(cdr.call_id.clone()));
                self.by_code.remove(&Key::Port(port));
            }
            self.demand.remove(&port);
            self.keyed.remove(&port);
        }
        // The call's SIP legs: a recording keyed on one of them ends too.
        let legs: Vec<LegId> = self
            .leg_call
            .iter()
            .filter(|(_, (id, _))| *id == cdr.call_id)
            .map(|(&l, _)| l)
            .collect();
        for leg in legs {
            let key = Key::Leg(leg);
            if self.recorder.is_recording(key) {
                self.recorder.stop(key, Some(cdr.call_id.clone()));
                self.by_code.remove(&key);
            }
            self.leg_call.remove(&leg);
            if let Some((other, _)) = self.leg_peer.remove(&leg) {
                if self.leg_peer.get(&other).is_some_and(|(o, _)| *o == leg) {
                    self.leg_peer.remove(&other);
                }
            }
            if self.port_of_leg(leg).is_none() {
                self.leg_ext.remove(&leg);
                self.leg_keyed.remove(&leg);
            }
        }
        self.call_demand.remove(&cdr.call_id);
    }
}

/// A [`PortSink`] that shows every frame to the recorder's tap before sending it.
#[derive(Debug)]
pub struct TapSink<S> {
    inner: S,
    tap: Tap,
}

impl<S> TapSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, tap: Tap) -> Self {
        Self { inner, tap }
    }
}

impl<S: PortSink> PortSink for TapSink<S> {
    fn send_audio(&self, port: u8, audio: Audio) {
        self.tap.frame(port, Side::ToPort, &audio);
        self.inner.send_audio(port, audio);
    }
}

/// The recorder of a running daemon and the work to await at shutdown.
#[derive(Debug)]
pub struct DaemonRecorder {
    /// For the board loop.
    pub calls: CallRecorder,
    /// The writer thread: joined after every handle (and tap) is dropped.
    pub thread: std::thread::JoinHandle<()>,
    /// The registrar: awaited after the thread, before the store writer stops.
    pub registrar: tokio::task::JoinHandle<()>,
    /// Retention (if configured): stopped by `stop`.
    pub retention: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the recorder for the daemon: the writer thread on `[paths] recordings`
/// with the `[recording]` reserve measured by statvfs, the registrar on `writer`, and
/// retention when `retention_days` is set (HQ must have a file first when `[hq]` is).
pub fn start(
    config: &Config,
    writer: &StoreWriter,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<DaemonRecorder, RecorderError> {
    let dir: PathBuf = config.paths.recordings.clone();
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    let (recorder, thread) = Recorder::spawn(
        dir.clone(),
        config.recording.min_free_bytes,
        Box::new(Statvfs),
        finished_tx,
    )?;
    let registrar = tokio::spawn(super::register_task(writer.clone(), finished_rx));
    let retention = config.recording.retention.map(|keep| {
        tokio::spawn(super::retention_task(
            writer.clone(),
            dir,
            keep,
            config.hq.is_some(),
            stop.clone(),
        ))
    });
    Ok(DaemonRecorder {
        calls: CallRecorder::new(recorder, config),
        thread,
        registrar,
        retention,
    })
}
