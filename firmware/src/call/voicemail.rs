//! Voicemail in call control: leaving a message, the phone menu that plays them, and
//! message waiting (stutter dial tone).
//!
//! Mailboxes and their messages come from the store at start
//! ([`CallControl::set_voicemail`], built by the daemon from [`crate::voicemail`]);
//! call control keeps their message lists from then on and tells the daemon what
//! changed ([`Output::MessageHeard`], [`Output::DeleteMessage`]); a message being left
//! becomes a message when the daemon reports it written and stored
//! ([`CallControl::voicemail_message_done`]).
//!
//! **Leaving a message.** A call goes to a mailbox when
//! - it is to an extension that is busy (no free FXS port, no SIP phone that takes
//!   it, a SIP phone answering 486) and the extension's mailbox has `on_busy`;
//! - it rings unanswered for the mailbox's `no_answer` time (else the ring timeout)
//!   and the mailbox has `on_no_answer`;
//! - a queue overflows to `voicemail` ([`crate::acd::OverflowTarget::Voicemail`]).
//!
//! Not for outside calls, transfers in progress, a phone calling its own mailbox, or
//! a full mailbox (the caller gets busy as before). The box answers the caller (an
//! FXS caller's ringback stops, a PSTN line is seized, a SIP caller gets 200 OK) and
//! plays the greeting: the mailbox's own ([`crate::voicemail::greeting_prompt`]), else
//! the system prompt [`crate::voicemail::SYSTEM_GREETING`], else nothing; then the
//! beep ([`Tone::VoicemailBeep`], [`BEEP`]); then the caller's audio is captured
//! ([`Output::Capture`]: the media engine hands the unbridged end's frames to the
//! daemon's message writer) up to the mailbox's longest message. `#` (an analog
//! phone's key, a SIP caller's RFC 4733 / INFO digit, a PSTN caller's in-band DTMF),
//! the caller hanging up, or the time running out ends it ([`Output::CaptureEnd`]);
//! the writer drops a message shorter than [`crate::voicemail::MIN_MESSAGE_MS`]. `#`
//! during the greeting skips to the beep. The CDR keeps the extension's outcome
//! (`busy` or `no_answer`).
//!
//! **The menu.** An analog phone dials [`VoicemailCodes::own`] (default `*97`: the
//! phone's own extension's mailbox, no PIN) or [`VoicemailCodes::any`] + mailbox + `#`
//! (default `*98201#`), then the PIN and `#`. The PIN is checked outside call control
//! ([`Output::CheckMailboxPin`], answered by [`CallControl::mailbox_pin_checked`]);
//! after [`PIN_FAILURES`] wrong PINs in a row a mailbox is refused without a check for
//! [`PIN_LOCKOUT`]. A mailbox that does not exist asks for a PIN all the same and
//! refuses it (the menu does not tell which mailboxes exist). Then the messages play,
//! new ones first, each oldest first: during or after a message `7` deletes it, `9` or
//! `#` keeps it and plays the next, `*` plays it again; a message played to its end
//! counts as heard. After each message the [`MENU_PROMPT`] prompt lists the choices
//! when the box has it (the image's built-in set does); tones mark the other steps,
//! and the choices without the prompt: the confirmation beeps
//! ([`Tone::Confirmation`]) ask for the PIN, follow each message (choose 7/9/#/*) and
//! say "no more messages"; number unobtainable is a refused PIN or mailbox. A local SIP phone calls the same codes (INVITE to `*97`, `*98201`; the
//! `#` optional) and keys the PIN and the menu keys as RFC 4733 or INFO digits; it
//! hears the tones as audio, and gets a BYE where an analog phone is left with a
//! tone (no more messages, a refused PIN).
//!
//! **Message waiting.** An FXS phone whose extension's mailbox holds new messages
//! hears stutter dial tone ([`Tone::StutterDial`]) for [`STUTTER`] when it goes
//! off-hook, then steady dial tone. Every change of a mailbox's counts is an
//! [`Output::MessageWaiting`]: the SIP endpoint NOTIFYs the extension's SIP phones
//! (`message-summary`, RFC 3842: in their subscriptions, else unsolicited).
//!
//! Limits: a greeting cannot be recorded from the phone (it is a file); a PSTN
//! call ringing an extension unanswered does not go to its mailbox (the line rings
//! until the caller gives up), a busy one does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use line_proto::Command;

use crate::acd::codes::Pin;
use crate::cdr::{Disposition, HangupSide};
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

use super::{
    CallControl, CallKey, CallPhase, Direction, EndReason, Fxs, MediaEnd, Output, Party, PortState,
};

/// How long the beep before the recording lasts.
pub const BEEP: Duration = Duration::from_millis(500);
/// How long stutter dial tone plays before steady dial tone.
pub const STUTTER: Duration = Duration::from_secs(1);
/// Wrong PINs in a row after which a mailbox is locked.
pub const PIN_FAILURES: u32 = 3;
/// How long such a lockout lasts.
pub const PIN_LOCKOUT: Duration = Duration::from_secs(300);
/// Time to key the PIN.
pub const PIN_WAIT: Duration = Duration::from_secs(20);
/// Time to choose after a message played; then the next one plays.
pub const MENU_WAIT: Duration = Duration::from_secs(10);
/// Longest PIN keyed.
const MAX_PIN: usize = 8;
/// The prompt after each message ("press 7 to delete ...", in the image's built-in
/// set); without it the confirmation beeps.
pub const MENU_PROMPT: &str = "vm-menu";

/// The voicemail feature codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoicemailCodes {
    /// Open the dialling phone's own mailbox (no PIN).
    pub own: String,
    /// Followed by a mailbox number and `#`, then the PIN and `#`: any mailbox.
    pub any: String,
}

impl Default for VoicemailCodes {
    fn default() -> Self {
        VoicemailCodes {
            own: "*97".to_owned(),
            any: "*98".to_owned(),
        }
    }
}

/// A mailbox as call control uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSettings {
    /// The number (an extension's, or a queue overflow's target).
    pub number: String,
    /// The greeting prompt (in [`super::CallSettings::prompts`]), if the mailbox has
    /// one.
    pub greeting: Option<String>,
    /// Longest message.
    pub max_message: Duration,
    /// Most messages kept.
    pub max_messages: usize,
    /// Busy calls to the extension go here.
    pub on_busy: bool,
    /// Unanswered calls go here.
    pub on_no_answer: bool,
    /// Ring time before an unanswered call comes here (`None`: the ring timeout).
    pub no_answer: Option<Duration>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its row id.
    pub id: i64,
    /// Its mailbox.
    pub mailbox: String,
    /// The WAV file.
    pub file: PathBuf,
    /// Length.
    pub duration: Duration,
    /// Listened to already.
    pub heard: bool,
}

/// Voicemail for [`CallControl::set_voicemail`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoicemailSettings {
    /// The feature codes.
    pub codes: VoicemailCodes,
    /// The mailboxes.
    pub mailboxes: Vec<MailboxSettings>,
    /// Their messages (any order).
    pub messages: Vec<MessageInfo>,
}

/// A message being left ([`Output::Capture`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    /// Identifies the capture (in [`Output::CaptureEnd`] and
    /// [`CallControl::voicemail_message_done`]).
    pub capture: u64,
    /// The caller's end whose audio is recorded.
    pub end: MediaEnd,
    /// The mailbox.
    pub mailbox: String,
    /// The call's id (as on its CDR).
    pub call_id: String,
    /// Calling number.
    pub caller_number: String,
    /// Calling name.
    pub caller_name: String,
    /// When the recording starts, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Longest message.
    pub max: Duration,
}

#[derive(Debug)]
struct Mailbox {
    settings: MailboxSettings,
    messages: Vec<MessageInfo>,
}

impl Mailbox {
    fn counts(&self) -> (usize, usize) {
        let new = self.messages.iter().filter(|m| !m.heard).count();
        (new, self.messages.len() - new)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Greeting,
    Beep,
    Recording { capture: u64 },
    Pin { digits: String },
    PinCheck { check: u64 },
    Playing { index: usize },
    AfterMessage { index: usize },
}

/// A caller leaving a message, or a phone in the menu (its call stays in `calls`).
#[derive(Debug)]
struct Session {
    mailbox: String,
    stage: Stage,
    deadline: Option<Instant>,
    /// The CDR's disposition.
    disposition: Disposition,
    /// The menu's messages, by id, in play order.
    playlist: Vec<i64>,
}

/// Call control's voicemail state.
#[derive(Debug, Default)]
pub(super) struct Voicemail {
    codes: VoicemailCodes,
    boxes: BTreeMap<String, Mailbox>,
    sessions: BTreeMap<CallKey, Session>,
    /// FXS ports hearing stutter dial tone, until when.
    stutter: BTreeMap<u8, Instant>,
    next_capture: u64,
    /// Captures whose message is not stored yet, by mailbox (they count towards full).
    in_flight: BTreeMap<u64, String>,
    next_check: u64,
    pin_checks: BTreeMap<u64, CallKey>,
    pin_failures: BTreeMap<String, (u32, Option<Instant>)>,
}

/// What the digits dialled are, as a voicemail code.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VmCode {
    NotACode,
    Incomplete,
    Own,
    Mailbox(String),
    Bad,
}

/// Why a call is going to voicemail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Busy,
    NoAnswer,
}

impl Voicemail {
    /// Parses dialled digits against the codes.
    pub(super) fn code(&self, digits: &str) -> VmCode {
        let (own, any) = (&self.codes.own, &self.codes.any);
        if self.boxes.is_empty() {
            return VmCode::NotACode; // no voicemail on this box
        }
        if digits == own {
            return VmCode::Own;
        }
        if let Some(rest) = digits.strip_prefix(any.as_str()) {
            return match rest.strip_suffix('#') {
                Some(n) if crate::voicemail::valid_number(n) => VmCode::Mailbox(n.to_owned()),
                Some(_) => VmCode::Bad,
                None if rest.len() <= 6 && rest.bytes().all(|b| b.is_ascii_digit()) => {
                    VmCode::Incomplete
                }
                None => VmCode::Bad,
            };
        }
        if own.starts_with(digits) || any.starts_with(digits) {
            return VmCode::Incomplete;
        }
        VmCode::NotACode
    }
}

impl CallControl {
    /// Sets the mailboxes, their messages and the codes (at start, from the store).
    /// Emits [`Output::MessageWaiting`] for every mailbox.
    pub fn set_voicemail(&mut self, settings: VoicemailSettings) {
        let mut boxes: BTreeMap<String, Mailbox> = settings
            .mailboxes
            .into_iter()
            .map(|s| {
                (
                    s.number.clone(),
                    Mailbox {
                        settings: s,
                        messages: Vec::new(),
                    },
                )
            })
            .collect();
        for m in settings.messages {
            match boxes.get_mut(&m.mailbox) {
                Some(b) => b.messages.push(m),
                None => tracing::warn!(
                    id = m.id,
                    mailbox = m.mailbox,
                    "message of an unknown mailbox ignored"
                ),
            }
        }
        self.vm.codes = settings.codes;
        self.vm.boxes = boxes;
        let numbers: Vec<String> = self.vm.boxes.keys().cloned().collect();
        for n in numbers {
            self.mwi(&n);
        }
    }

    /// New and heard messages of mailbox `number` (`None`: no such mailbox).
    pub fn mailbox_counts(&self, number: &str) -> Option<(usize, usize)> {
        self.vm.boxes.get(number).map(Mailbox::counts)
    }

    /// The daemon finished capture `capture`: `Some` message when it was written and
    /// stored, `None` when it was dropped (too short) or failed.
    pub fn voicemail_message_done(&mut self, capture: u64, message: Option<MessageInfo>) {
        self.vm.in_flight.remove(&capture);
        let Some(m) = message else {
            return;
        };
        let number = m.mailbox.clone();
        let Some(b) = self.vm.boxes.get_mut(&number) else {
            return;
        };
        tracing::info!(mailbox = number, id = m.id, "voicemail message stored");
        b.messages.push(m);
        self.mwi(&number);
    }

    /// Message `id` was deleted outside the phone menu (the API): it is forgotten (a
    /// menu playing it moves on at its next step) and message waiting follows.
    pub fn voicemail_message_removed(&mut self, id: i64) {
        let found = self.vm.boxes.iter_mut().find_map(|(n, b)| {
            let before = b.messages.len();
            b.messages.retain(|m| m.id != id);
            (b.messages.len() != before).then(|| n.clone())
        });
        if let Some(number) = found {
            tracing::info!(id, mailbox = number, "voicemail message deleted elsewhere");
            self.mwi(&number);
        }
    }

    /// The answer to [`Output::CheckMailboxPin`] `check`.
    pub fn mailbox_pin_checked(&mut self, now: Instant, check: u64, ok: bool) {
        let Some(key) = self.vm.pin_checks.remove(&check) else {
            return;
        };
        let Some(s) = self.vm.sessions.get(&key) else {
            return;
        };
        if s.stage != (Stage::PinCheck { check }) {
            return;
        }
        let mailbox = s.mailbox.clone();
        if ok && self.vm.boxes.contains_key(&mailbox) {
            self.vm.pin_failures.remove(&mailbox);
            tracing::info!(call = key, mailbox, "mailbox opened");
            return self.menu(now, key);
        }
        let entry = self
            .vm
            .pin_failures
            .entry(mailbox.clone())
            .or_insert((0, None));
        entry.0 += 1;
        if entry.0 >= PIN_FAILURES {
            entry.1 = Some(now + PIN_LOCKOUT);
            tracing::warn!(mailbox, "mailbox locked after {PIN_FAILURES} wrong PINs");
        }
        tracing::info!(call = key, mailbox, "mailbox PIN refused");
        self.vm_end(now, key, None, Tone::Unobtainable);
    }

    /// Mailbox `number`'s counts changed (or are first known).
    fn mwi(&mut self, number: &str) {
        if let Some((new, heard)) = self.mailbox_counts(number) {
            self.outputs.push_back(Output::MessageWaiting {
                mailbox: number.to_owned(),
                new,
                heard,
            });
        }
    }

    /// Whether FXS `port`'s extension has new messages.
    fn port_has_new_messages(&self, port: u8) -> bool {
        let number = self.port_number(port);
        self.mailbox_counts(&number).is_some_and(|(new, _)| new > 0)
    }

    /// Dial tone for FXS `port`: stutter dial tone first when its mailbox has new
    /// messages.
    pub(super) fn dial_tone(&mut self, now: Instant, port: u8) {
        if self.port_has_new_messages(port) {
            self.tone(port, Tone::StutterDial);
            self.vm.stutter.insert(port, now + STUTTER);
        } else {
            self.tone(port, Tone::Dial);
        }
    }

    /// FXS `port` stopped hearing dial tone (a digit, on-hook).
    pub(super) fn stutter_over(&mut self, port: u8) {
        self.vm.stutter.remove(&port);
    }

    /// The voicemail session call `key`'s caller `party` is in, if any.
    pub(super) fn vm_session_of(&self, party: Party) -> Option<CallKey> {
        self.vm
            .sessions
            .keys()
            .copied()
            .find(|k| self.calls.get(k).is_some_and(|c| c.caller == party))
    }

    /// Whether call `key` is a voicemail session.
    pub(super) fn in_voicemail(&self, key: CallKey) -> bool {
        self.vm.sessions.contains_key(&key)
    }

    /// The earliest voicemail deadline.
    pub(super) fn vm_timeout(&self) -> Option<Instant> {
        let sessions = self.vm.sessions.values().filter_map(|s| s.deadline);
        sessions.chain(self.vm.stutter.values().copied()).min()
    }

    /// Runs the voicemail deadlines due at `now`.
    pub(super) fn vm_timeouts(&mut self, now: Instant) {
        let ports: Vec<u8> = self
            .vm
            .stutter
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(&p, _)| p)
            .collect();
        for port in ports {
            self.vm.stutter.remove(&port);
            if matches!(self.fxs_state(port), Some(Fxs::Dialing { digits, .. }) if digits.is_empty())
            {
                self.tone(port, Tone::Dial);
            }
        }
        let due: Vec<CallKey> = self
            .vm
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            let Some(stage) = self.vm.sessions.get(&key).map(|s| s.stage.clone()) else {
                continue;
            };
            match stage {
                Stage::Greeting => self.beep(now, key),
                Stage::Beep => self.record(now, key),
                Stage::Recording { .. } => {
                    tracing::info!(call = key, "voicemail message reached its longest length");
                    self.vm_end(now, key, None, Tone::Confirmation);
                }
                Stage::Pin { .. } | Stage::PinCheck { .. } => {
                    self.vm_end(now, key, None, Tone::Unobtainable)
                }
                Stage::Playing { index } => self.message_played(now, key, index),
                Stage::AfterMessage { index } => self.next_message(now, key, index, true),
            }
        }
    }

    // ----- leaving a message -----

    /// The mailbox call `key` goes to for `trigger`, if it should go to one.
    pub(super) fn deposit_target(&self, key: CallKey, trigger: Trigger) -> Option<String> {
        let call = self.calls.get(&key)?;
        if call.queue.is_some()
            || call.transferor.is_some()
            || call.callee.is_some()
            || call.outside.is_some()
            || call.phase != CallPhase::Alerting
            || call.direction == Direction::Outbound
        {
            return None;
        }
        let number = &call.callee_number;
        let b = self.vm.boxes.get(number)?;
        let wanted = match trigger {
            Trigger::Busy => b.settings.on_busy,
            // A PSTN call's deadline while it rings is the ring-absence one: due, the
            // caller gave up.
            Trigger::NoAnswer => b.settings.on_no_answer && call.last_ring.is_none(),
        };
        let own =
            self.party_number(call.caller) == *number && call.direction == Direction::Internal;
        (wanted && !own).then(|| number.clone())
    }

    /// Ring time of calls to extension `number` when its mailbox takes unanswered
    /// calls sooner than the ring timeout.
    pub(super) fn no_answer_time(&self, number: &str) -> Option<Duration> {
        let b = self.vm.boxes.get(number)?;
        b.settings
            .no_answer
            .filter(|_| b.settings.on_no_answer)
            .filter(|&t| t < self.settings.ring_timeout)
    }

    /// Call `key` goes to `mailbox` instead of failing with `disposition`. False (the
    /// caller must get `disposition` as before) when the mailbox is unknown or full.
    pub(super) fn start_deposit(
        &mut self,
        now: Instant,
        key: CallKey,
        mailbox: &str,
        disposition: Disposition,
    ) -> bool {
        let Some(b) = self.vm.boxes.get(mailbox) else {
            tracing::warn!(call = key, mailbox, "voicemail: no such mailbox");
            return false;
        };
        let pending = self.vm.in_flight.values().filter(|m| *m == mailbox).count();
        if b.messages.len() + pending >= b.settings.max_messages {
            tracing::info!(call = key, mailbox, "voicemail: mailbox full");
            return false;
        }
        let greeting = b
            .settings
            .greeting
            .clone()
            .filter(|g| self.settings.prompts.contains_key(g))
            .or_else(|| {
                let system = crate::voicemail::SYSTEM_GREETING;
                self.settings
                    .prompts
                    .contains_key(system)
                    .then(|| system.to_owned())
            });
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let ringing = std::mem::take(&mut call.ringing);
        let legs = std::mem::take(&mut call.ringing_legs);
        let early = call.early_media.take();
        let caller = call.caller;
        let was_connected = call.caller_connected;
        call.phase = CallPhase::Connected;
        call.deadline = None;
        call.last_ring = None;
        call.caller_connected = true;
        for port in ringing {
            self.stop_offer(port, key);
        }
        for leg in legs {
            self.hangup_leg(leg, EndReason::NoAnswer);
        }
        if let Some(leg) = early {
            self.disconnect(caller, Party::Sip(leg));
        }
        match caller {
            Party::Fxs(port) => {
                self.cmd(port, Command::StopTone);
                self.port_state(port, PortState::Talking);
            }
            Party::Fxo(line) => {
                if !was_connected {
                    self.cmd(line, Command::FxoSeize);
                }
                self.port_state(line, PortState::Talking);
                self.outputs.push_back(Output::DetectDtmf {
                    port: line,
                    on: true,
                });
            }
            Party::Sip(leg) => {
                if !was_connected && !leg.is_outgoing() {
                    self.outputs.push_back(Output::SipAnswer { leg });
                }
            }
        }
        tracing::info!(
            call = key,
            mailbox,
            ?disposition,
            greeting,
            "call goes to voicemail"
        );
        self.vm.sessions.insert(
            key,
            Session {
                mailbox: mailbox.to_owned(),
                stage: Stage::Greeting,
                deadline: None,
                disposition,
                playlist: Vec::new(),
            },
        );
        match greeting {
            Some(prompt) => {
                let length = self
                    .settings
                    .prompts
                    .get(&prompt)
                    .copied()
                    .unwrap_or_default();
                self.outputs.push_back(Output::Play {
                    end: caller.media(),
                    playback: Playback {
                        once: vec![prompt],
                        then: None,
                    },
                });
                if let Some(s) = self.vm.sessions.get_mut(&key) {
                    s.deadline = Some(now + length);
                }
            }
            None => self.beep(now, key),
        }
        true
    }

    fn beep(&mut self, now: Instant, key: CallKey) {
        let Some(end) = self.calls.get(&key).map(|c| c.caller.media()) else {
            return;
        };
        if let Some(s) = self.vm.sessions.get_mut(&key) {
            s.stage = Stage::Beep;
            s.deadline = Some(now + BEEP);
        }
        self.outputs.push_back(Output::Play {
            end,
            playback: Playback::looped(Sound::Tone(Tone::VoicemailBeep)),
        });
    }

    fn record(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let Some(s) = self.vm.sessions.get(&key) else {
            return;
        };
        let Some(b) = self.vm.boxes.get(&s.mailbox) else {
            return;
        };
        let capture = self.vm.next_capture;
        self.vm.next_capture += 1;
        let deposit = Deposit {
            capture,
            end: call.caller.media(),
            mailbox: s.mailbox.clone(),
            call_id: call.id.clone(),
            caller_number: call.caller_number.clone(),
            caller_name: call.caller_name.clone(),
            received_at_ms: self.wall(now),
            max: b.settings.max_message,
        };
        let max = b.settings.max_message;
        self.vm.in_flight.insert(capture, s.mailbox.clone());
        if let Some(s) = self.vm.sessions.get_mut(&key) {
            s.stage = Stage::Recording { capture };
            s.deadline = Some(now + max);
        }
        tracing::info!(
            call = key,
            capture,
            mailbox = deposit.mailbox,
            "voicemail: recording"
        );
        self.outputs
            .push_back(Output::StopPlay { end: deposit.end });
        self.outputs.push_back(Output::Capture(Box::new(deposit)));
    }

    // ----- the menu -----

    /// What FXS `port` dialled is a voicemail code: `None` when it is not one (the
    /// dial plan decides), `Some(true)` when it was handled, `Some(false)` when more
    /// digits are needed.
    pub(super) fn vm_digits(
        &mut self,
        now: Instant,
        port: u8,
        digits: &str,
        started: Instant,
    ) -> Option<bool> {
        match self.vm.code(digits) {
            VmCode::NotACode => None,
            VmCode::Incomplete => Some(false),
            VmCode::Bad => {
                tracing::info!(port, "voicemail code refused: bad mailbox number");
                self.lockout(now, port, Tone::Unobtainable);
                Some(true)
            }
            VmCode::Own => {
                let own = self.port_number(port);
                if !self.vm.boxes.contains_key(&own) {
                    tracing::info!(
                        port,
                        extension = own,
                        "voicemail: the extension has no mailbox"
                    );
                    self.lockout(now, port, Tone::Unobtainable);
                    return Some(true);
                }
                let key = self.fxs_service_call(port, started, digits);
                self.open_mailbox(now, key, own, false);
                Some(true)
            }
            VmCode::Mailbox(number) => {
                let key = self.fxs_service_call(port, started, digits);
                self.open_mailbox(now, key, number, true);
                Some(true)
            }
        }
    }

    /// A local SIP phone's call (from `extension`) to a voicemail code opens the
    /// mailbox: `*97` its own, `*98<mailbox>` (the `#` optional: phones keep it as
    /// their send key) any, then the PIN and `#` as RFC 4733 / INFO digits. `Some`
    /// gives the call back when the number is no voicemail code (a malformed one, or
    /// the own code from an extension without a mailbox, then gets 404 from the dial
    /// plan).
    pub(super) fn sip_voicemail_code(
        &mut self,
        now: Instant,
        call: super::Call,
        extension: &str,
    ) -> Option<super::Call> {
        let code = match self.vm.code(&call.callee_number) {
            VmCode::Incomplete => self.vm.code(&format!("{}#", call.callee_number)),
            code => code,
        };
        let (mailbox, pin) = match code {
            VmCode::Own if self.vm.boxes.contains_key(extension) => (extension.to_owned(), false),
            VmCode::Mailbox(m) => (m, true),
            _ => return Some(call),
        };
        let key = self.new_call(call);
        self.open_mailbox(now, key, mailbox, pin);
        None
    }

    /// Call `key` (its caller any party: an analog phone, a SIP phone's feature-code
    /// call) opens mailbox `mailbox`: asks for the PIN when `pin`, else plays the
    /// messages. The box answers the call.
    pub(super) fn open_mailbox(&mut self, now: Instant, key: CallKey, mailbox: String, pin: bool) {
        let Some(caller) = self.answer_by_box(now, key) else {
            return;
        };
        self.vm.sessions.insert(
            key,
            Session {
                mailbox: mailbox.clone(),
                stage: Stage::Pin {
                    digits: String::new(),
                },
                deadline: Some(now + PIN_WAIT),
                disposition: Disposition::Answered,
                playlist: Vec::new(),
            },
        );
        if !pin {
            tracing::info!(call = key, mailbox, "own mailbox opened");
            return self.menu(now, key);
        }
        if let Some(&(_, Some(until))) = self.vm.pin_failures.get(&mailbox) {
            if until > now {
                tracing::warn!(
                    call = key,
                    mailbox,
                    "mailbox refused: locked after wrong PINs"
                );
                return self.vm_end(now, key, None, Tone::Unobtainable);
            }
            self.vm.pin_failures.remove(&mailbox);
        }
        self.signal(caller, Tone::Confirmation);
    }

    /// A key from the caller of voicemail session `key`.
    pub(super) fn vm_digit(&mut self, now: Instant, key: CallKey, digit: char) {
        let Some(stage) = self.vm.sessions.get(&key).map(|s| s.stage.clone()) else {
            return;
        };
        let Some(caller) = self.calls.get(&key).map(|c| c.caller) else {
            return;
        };
        match (stage, digit) {
            (Stage::Greeting, '#') => self.beep(now, key),
            (Stage::Beep, '#') => self.record(now, key),
            (Stage::Recording { .. }, '#') => self.vm_end(now, key, None, Tone::Confirmation),
            (Stage::Pin { digits }, d) => self.pin_digit(now, key, caller, digits, d),
            (Stage::Playing { index } | Stage::AfterMessage { index }, d) => match d {
                '7' => self.delete_message(now, key, index),
                '9' | '#' => {
                    self.mark_heard(key, index);
                    self.next_message(now, key, index, true);
                }
                '*' => self.play_message(now, key, index),
                _ => {}
            },
            _ => tracing::debug!(call = key, %digit, "voicemail: key ignored"),
        }
    }

    /// A key while the PIN is keyed (`digits` so far).
    fn pin_digit(
        &mut self,
        now: Instant,
        key: CallKey,
        caller: Party,
        mut digits: String,
        d: char,
    ) {
        if digits.is_empty() {
            self.quiet(caller);
        }
        let stage = match d {
            '#' => {
                let check = self.vm.next_check;
                self.vm.next_check += 1;
                self.vm.pin_checks.insert(check, key);
                let Some(s) = self.vm.sessions.get_mut(&key) else {
                    return;
                };
                s.stage = Stage::PinCheck { check };
                match digits.parse::<Pin>() {
                    Ok(pin) => {
                        let mailbox = s.mailbox.clone();
                        self.outputs.push_back(Output::CheckMailboxPin {
                            check,
                            mailbox,
                            pin,
                        });
                    }
                    // Not a PIN at all: a wrong PIN, without asking.
                    Err(_) => self.mailbox_pin_checked(now, check, false),
                }
                return;
            }
            '*' => String::new(),
            d if d.is_ascii_digit() && digits.len() < MAX_PIN => {
                digits.push(d);
                digits
            }
            _ => return,
        };
        if let Some(s) = self.vm.sessions.get_mut(&key) {
            s.stage = Stage::Pin { digits: stage };
        }
    }

    fn menu(&mut self, now: Instant, key: CallKey) {
        let Some(s) = self.vm.sessions.get_mut(&key) else {
            return;
        };
        let Some(b) = self.vm.boxes.get(&s.mailbox) else {
            return;
        };
        let mut list: Vec<&MessageInfo> = b.messages.iter().collect();
        // New first; each oldest first (the order they were stored).
        list.sort_by_key(|m| m.heard);
        s.playlist = list.iter().map(|m| m.id).collect();
        tracing::info!(
            call = key,
            mailbox = s.mailbox,
            messages = s.playlist.len(),
            "voicemail menu"
        );
        self.next_message(now, key, 0, false);
    }

    /// The message at `index` of session `key`'s playlist, if it still exists.
    fn playlist_message(&self, key: CallKey, index: usize) -> Option<MessageInfo> {
        let s = self.vm.sessions.get(&key)?;
        let id = *s.playlist.get(index)?;
        self.vm
            .boxes
            .get(&s.mailbox)?
            .messages
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// Plays the first message still there at or after `index` (after `index` when
    /// `after`); "no more messages" when none is left.
    fn next_message(&mut self, now: Instant, key: CallKey, index: usize, after: bool) {
        let len = self.vm.sessions.get(&key).map_or(0, |s| s.playlist.len());
        let start = if after { index + 1 } else { index };
        match (start..len).find(|&i| self.playlist_message(key, i).is_some()) {
            Some(i) => self.play_message(now, key, i),
            None => {
                tracing::info!(call = key, "voicemail: no more messages");
                self.vm_end(now, key, None, Tone::Confirmation);
            }
        }
    }

    fn play_message(&mut self, now: Instant, key: CallKey, index: usize) {
        let Some(m) = self.playlist_message(key, index) else {
            return self.next_message(now, key, index, true);
        };
        let Some(caller) = self.calls.get(&key).map(|c| c.caller) else {
            return;
        };
        self.quiet(caller);
        if let Some(s) = self.vm.sessions.get_mut(&key) {
            s.stage = Stage::Playing { index };
            s.deadline = Some(now + m.duration);
        }
        tracing::info!(call = key, id = m.id, "voicemail: playing message");
        self.outputs.push_back(Output::PlayMessage {
            end: caller.media(),
            file: m.file,
        });
    }

    fn message_played(&mut self, now: Instant, key: CallKey, index: usize) {
        self.mark_heard(key, index);
        let Some(caller) = self.calls.get(&key).map(|c| c.caller) else {
            return;
        };
        if let Some(s) = self.vm.sessions.get_mut(&key) {
            s.stage = Stage::AfterMessage { index };
            s.deadline = Some(now + MENU_WAIT);
        }
        // The spoken choices when the box has them (the image's built-in set), else
        // the beeps.
        if self.settings.prompts.contains_key(MENU_PROMPT) {
            self.quiet(caller);
            self.outputs.push_back(Output::Play {
                end: caller.media(),
                playback: Playback {
                    once: vec![MENU_PROMPT.to_owned()],
                    then: None,
                },
            });
        } else {
            self.signal(caller, Tone::Confirmation);
        }
    }

    fn mark_heard(&mut self, key: CallKey, index: usize) {
        let Some(m) = self.playlist_message(key, index) else {
            return;
        };
        if m.heard {
            return;
        }
        if let Some(b) = self.vm.boxes.get_mut(&m.mailbox) {
            if let Some(x) = b.messages.iter_mut().find(|x| x.id == m.id) {
                x.heard = true;
            }
        }
        self.outputs.push_back(Output::MessageHeard { id: m.id });
        self.mwi(&m.mailbox);
    }

    fn delete_message(&mut self, now: Instant, key: CallKey, index: usize) {
        let Some(m) = self.playlist_message(key, index) else {
            return;
        };
        if let Some(b) = self.vm.boxes.get_mut(&m.mailbox) {
            b.messages.retain(|x| x.id != m.id);
        }
        tracing::info!(call = key, id = m.id, "voicemail: message deleted");
        self.outputs.push_back(Output::DeleteMessage { id: m.id });
        self.mwi(&m.mailbox);
        self.next_message(now, key, index, true);
    }

    /// A tone that marks a menu step: the board's tone generator for an analog phone,
    /// the tone as audio for a SIP or PSTN caller.
    fn signal(&mut self, party: Party, tone: Tone) {
        match party {
            Party::Fxs(port) => {
                self.outputs
                    .push_back(Output::StopPlay { end: party.media() });
                self.tone(port, tone);
            }
            _ => self.outputs.push_back(Output::Play {
                end: party.media(),
                playback: Playback::looped(Sound::Tone(tone)),
            }),
        }
    }

    /// Stops what plays to `party` (tone or audio).
    fn quiet(&mut self, party: Party) {
        if let Party::Fxs(port) = party {
            self.cmd(port, Command::StopTone);
        }
        self.outputs
            .push_back(Output::StopPlay { end: party.media() });
    }

    /// Ends voicemail session `key`: `by` hung up, or the box ends it (the caller's
    /// phone, still off-hook, hears `tone`; a SIP caller gets a BYE, a PSTN line is
    /// released). A message being recorded is kept (the writer drops it when too
    /// short). Writes the CDR.
    pub(super) fn vm_end(&mut self, now: Instant, key: CallKey, by: Option<Party>, tone: Tone) {
        let Some(s) = self.vm.sessions.remove(&key) else {
            return;
        };
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        let end = call.caller.media();
        match s.stage {
            Stage::Recording { capture } => {
                tracing::info!(call = key, capture, "voicemail: recording ends");
                self.outputs.push_back(Output::CaptureEnd {
                    end,
                    capture,
                    keep: true,
                });
            }
            Stage::PinCheck { check } => {
                self.vm.pin_checks.remove(&check);
            }
            _ => {}
        }
        self.outputs.push_back(Output::StopPlay { end });
        if let Party::Fxo(port) = call.caller {
            if s.disposition != Disposition::Answered {
                self.outputs
                    .push_back(Output::DetectDtmf { port, on: false });
            }
        }
        let side = self.release_service_caller(now, key, call.caller, by, tone);
        self.emit_cdr(now, &call, s.disposition, side);
    }

    /// A call from FXS `port` to a code the box answers itself (`digits`: voicemail,
    /// the echo test), the port its caller. Returns its key.
    pub(super) fn fxs_service_call(&mut self, port: u8, started: Instant, digits: &str) -> CallKey {
        let call = self.call_from_port(port, started, Direction::Internal, digits.to_owned());
        let key = self.new_call(call);
        self.set_fxs(port, Fxs::Caller(key));
        key
    }

    /// The box answers call `key` itself (voicemail, the echo test): connected from
    /// now on, a SIP caller gets its 200 OK (unless it was talking already), an
    /// analog caller's port shows talking. Returns the caller; `None` when there is
    /// no such call.
    pub(super) fn answer_by_box(&mut self, now: Instant, key: CallKey) -> Option<Party> {
        let call = self.calls.get_mut(&key)?;
        call.phase = CallPhase::Connected;
        call.answered = Some(now);
        call.deadline = None;
        let caller = call.caller;
        let was_connected = std::mem::replace(&mut call.caller_connected, true);
        match caller {
            Party::Sip(leg) if !was_connected && !leg.is_outgoing() => {
                self.outputs.push_back(Output::SipAnswer { leg });
            }
            Party::Fxs(port) => self.port_state(port, PortState::Talking),
            _ => {}
        }
        Some(caller)
    }

    /// Releases the caller of call `key`, one the box answered itself (voicemail, the
    /// echo test), as it ends: `by` hung up, or the box ends it (an analog phone still
    /// off hook hears `tone`, a SIP caller gets a BYE, a PSTN line is released).
    /// Returns the CDR's hang-up side.
    pub(super) fn release_service_caller(
        &mut self,
        now: Instant,
        key: CallKey,
        caller: Party,
        by: Option<Party>,
        tone: Tone,
    ) -> HangupSide {
        match (caller, by) {
            (Party::Sip(leg), Some(_)) => {
                self.legs.remove(&leg);
            }
            (Party::Fxs(_), Some(_)) => {}
            (Party::Fxs(port), None) => {
                if self.fxs_state(port) == Some(Fxs::Caller(key)) {
                    if self.fxs.get(&port).is_some_and(|p| p.off_hook) {
                        self.lockout(now, port, tone);
                    } else {
                        self.set_fxs(port, Fxs::Idle);
                    }
                }
            }
            (party, _) => self.release_party(now, party, key, EndReason::Normal),
        }
        if by.is_some() {
            HangupSide::Caller
        } else {
            HangupSide::System
        }
    }
}
