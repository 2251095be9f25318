//! Call control: a sans-IO state machine over analog ports and SIP call legs (the box
//! is a back-to-back user agent: every party is an FXS port, an FXO line or a SIP leg).
//!
//! The board driver feeds it line-controller events ([`CallControl::handle_event`]), the
//! SIP endpoint feeds it [`SipInput`]s ([`CallControl::handle_sip`]), and timer expiries
//! arrive through [`CallControl::handle_timeout`], always with the current time; it
//! answers with [`Output`]s popped by [`CallControl::poll_output`]: commands for the line
//! controller, SIP actions on legs, audio bridge changes over [`MediaEnd`]s, port-state
//! changes and finished CDRs. It never reads a clock, sleeps or touches a socket, so
//! every flow is tested on a virtual clock (see `tests.rs` and `tests_sip.rs`).
//!
//! Modules: [`sip`] (the fixed interface types with the SIP endpoint), [`outside`] (the
//! trunk-or-FXO route decision), `b2bua` (the SIP flows: incoming legs, outgoing legs,
//! forking, fallback, DTMF, hold), `transfer` (SIP phones' blind and attended
//! transfers, INVITE with Replaces), `features` (agent feature codes dialled from SIP
//! phones), `screening` (caller screening of inbound outside
//! calls against the [`crate::blacklist::Blacklist`] set with
//! [`CallControl::set_blacklist`]), [`voicemail`] (leaving messages on busy / no
//! answer / queue overflow, the phone menu, stutter dial tone for message waiting), `supervise`
//! (supervisor listen / whisper / barge on an agent's live call through a conference
//! room, [`Output::Conference`]), `meetme` (meet-me conference rooms with a PIN,
//! [`MeetMeRoom`]), `pickup` (call pickup: [`GROUP_PICKUP`], [`DIRECTED_PICKUP`]).
//!
//! What it does today:
//! - FXS: off-hook gives the country's dial tone; digits are collected against the dial
//!   plan (FXS and SIP extension numbers, the outside-line prefix) with first-digit and
//!   inter-digit timeouts; the callee rings with caller ID while the caller hears
//!   ringback; busy, congestion and number-unobtainable tones; answer bridges audio;
//!   either side hangs up; the party left behind hears busy tone until it hangs up.
//! - Hook-flash: answer a waiting call (call waiting), swap between the active and the
//!   held call, or put the peer on hold and get dial tone for a second call, then
//!   flash again once it answers to talk three-way (see `three_way`), or hang up to
//!   transfer the held call to the second party, answered or still ringing (see
//!   `transfer`); hanging up with any other call on hold rings the phone back
//!   (recall). A SIP caller waits and is held exactly like an analog one.
//! - FXO: outside calls seize a free line and dial; answer and far-end disconnect are
//!   signalled by polarity reversal. Inbound PSTN rings (with caller ID) ring an
//!   extension or a ring group (ring-all, FXS ports and SIP phones); when the PSTN stops
//!   ringing the caller gave up.
//! - SIP: an extension may be an FXS port, a SIP account or both (then both ring; the
//!   first to answer wins and the other offer is withdrawn). Local SIP phones call
//!   extensions, each other and outside numbers; inbound trunk calls ring the extension
//!   the DID maps to. Outside calls try the SIP trunk first while it is usable and fall
//!   back to an FXO line when the trunk leg fails with congestion before answer. RFC
//!   4733 digits from a SIP leg bridged to an FXO line are dialled on the line (IVRs);
//!   far-end hold disconnects the media without touching the CDR. The ring timeout
//!   applies to SIP callees too (the offer is cancelled with `NoAnswer`).
//! - Transfer by SIP phones (REFER): blind, to any number the dial plan knows (the
//!   transferee calls it as a new call; the transferor hears the outcome), attended
//!   (the two far parties are bridged), and INVITE with Replaces (a phone takes over
//!   a leg). See `transfer`.
//! - Early media: an offered SIP leg with a 183 and SDP ([`SipInput::EarlyMedia`]) is
//!   bridged to the caller instead of ringback (an FXS phone's tone stops; a SIP caller
//!   gets 183 with SDP via [`Output::SipRinging`] `early_media`), and the answer keeps
//!   that bridge (no gap); a later 180 changes nothing; the offer failing or another
//!   device answering removes it.
//! - Caller screening: trunk calls and PSTN rings are checked against the blacklist
//!   (or allowlist) before anything rings; a blocked trunk call is refused (486, 503
//!   or 403), a blocked PSTN call is left unanswered; [`Output::BlacklistHit`] counts
//!   the entry's hit. Local phones are never screened. See `screening`.
//! - Voicemail: a busy or unanswered extension's caller, or a queue's overflow, leaves
//!   a message in the mailbox ([`Output::Capture`]); `*97` / `*98<mailbox>#` play
//!   them; an FXS phone with new messages hears stutter dial tone. See [`voicemail`].
//! - Supervisors listen to, whisper to or barge into an agent's live call by feature
//!   code (`*65`/`*66`/`*67<agent id>#`) from an analog phone or a SIP phone's INVITE,
//!   after a right check outside call control ([`Output::CheckSupervisor`]); keys
//!   4/5/6 (FXS digits or RFC 4733) switch the mode. See `supervise`.
//! - Echo test: an analog or SIP phone dials `*43` and hears itself 0.5 s late
//!   ([`Output::Echo`]) for at most [`ECHO_TEST_LIMIT`]. See `echo`.
//! - Call pickup from analog phones: `*8` takes a call ringing a phone of the same
//!   ring group, `**<ext>` the call ringing that extension. See `pickup`.
//! - Meet-me rooms: an analog phone dialling a room's number, or a SIP phone or trunk
//!   caller calling it, keys its PIN and joins everyone else in the room (entry and
//!   exit beeps, party limit, three PIN tries). See `meetme`.
//! - Media timeout: a SIP leg the media engine heard nothing from for its inactivity
//!   timeout ([`SipInput::MediaTimeout`]) gets a BYE and its call ends as if the leg had
//!   hung up; the CDR says `hangup_side` `system`, `hangup_cause` `media_timeout`.
//! - A CDR for every call, answered or not (busy, unallocated, congestion, abandoned),
//!   with the SIP Call-IDs of the caller's and callee's legs, the call quality the
//!   endpoint measured on those legs (loss, jitter, MOS: a call's CDR waits for the
//!   reports of its legs with RTP, at most [`QUALITY_WAIT`]) and the transfer chain
//!   (the calls it continues and who transferred them).
//!
//! Limits: PSTN (FXO) callers cannot reach meet-me
//! rooms; a transfer shows in the CDRs as the old call ending and
//! a new one starting whose `transfer_chain` names the old one; the old call's CDR
//! gets no quality for a leg that goes on in the new call (it is reported with the
//! call the leg ends in), and a blind transferor's leg, which stays until the
//! outcome, is usually reported after [`QUALITY_WAIT`] (then left out); early media
//! of an offer that is never answered is not on the CDR; a SIP caller
//! to an FXO line is answered when the line is seized (analog lines give no reliable
//! answer supervision before the far end's polarity reversal, and the caller must hear
//! the PSTN's progress tones); SIP re-INVITE hold from a phone does not play music on
//! hold; ring groups ring all members.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use line_proto::{CallerId, Command, Event};

use crate::cdr::{
    Cdr, CdrBlocked, CdrLegQuality, CdrQueue, CdrQueueOverflow, CdrTransferHop, Direction,
    Disposition, HangupCause, HangupSide, JournalUpdate,
};
use crate::tones::{Country, Tone};

mod b2bua;
mod campaign;
mod click;
mod echo;
mod features;
mod hold;
mod journal;
mod meetme;
pub mod outside;
mod pickup;
mod queue;
mod screening;
pub mod sip;
mod supervise;
pub mod survey;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_campaign;
#[cfg(test)]
mod tests_click;
#[cfg(test)]
mod tests_echo;
#[cfg(test)]
mod tests_features;
#[cfg(test)]
mod tests_meetme;
#[cfg(test)]
mod tests_pickup;
#[cfg(test)]
mod tests_queue;
#[cfg(test)]
mod tests_screening;
#[cfg(test)]
mod tests_sip;
#[cfg(test)]
mod tests_supervise;
#[cfg(test)]
mod tests_transfer;
#[cfg(test)]
mod tests_voicemail;
mod three_way;
mod transfer;
pub mod voicemail;

use self::transfer::transfer_failure_status;

pub use self::campaign::{CampaignDial, CampaignDialError};
pub use self::click::{e164_dialable, ClickToCallError, CLICK_TO_CALL_ANSWER, MAX_E164_DIGITS};
pub use self::echo::ECHO_TEST_LIMIT;
pub use self::features::CONFIRMATION;
pub use self::journal::JOURNAL_REFRESH;
pub use self::meetme::{MeetMeRoom, PIN_PROMPT, PIN_TIMEOUT, PIN_TRIES, WRONG_PIN_PROMPT};
pub use self::outside::{
    check_permissions, outside_routes, CallerPermissions, DialRoute, DialRoutes, OutsideVia,
    RouteRefused, TrunkStatus,
};
pub use self::pickup::{DIRECTED_PICKUP, GROUP_PICKUP};
pub use self::queue::announcement as queue_announcement;
pub use self::queue::{
    AcdSettings, AgentCallEnd, AgentCallEvent, AgentCallKind, DeskAction, PIN_FAILURES, PIN_LOCKOUT,
};
pub use self::sip::{EndReason, LegId, MediaEnd, SipInput, SipOrigin, SipTarget, TransferTarget};
pub use self::voicemail::{
    Deposit, MailboxSettings, MessageInfo, VoicemailCodes, VoicemailSettings,
};

/// PSTN ring bursts come every 6 s at most (UK cadence 3 s, US 6 s); no burst for this
/// long means the caller hung up.
const RING_ABSENCE: Duration = Duration::from_secs(8);
/// Longest number accepted after the outside-line prefix (E.164 allows 15 digits).
pub(super) const MAX_OUTSIDE_DIGITS: usize = 15;
/// How long the busy tone plays to a phone left off-hook before it goes quiet.
const LOCKOUT_TONE: Duration = Duration::from_secs(60);

/// An extension on an FXS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Extension number (digits).
    pub number: String,
    /// FXS port.
    pub port: u8,
    /// Name sent as caller ID.
    pub name: String,
    /// Whether a second call may wait on this extension.
    pub call_waiting: bool,
    /// Calling permissions of calls placed from the port (config `permissions`;
    /// see [`CallerPermissions`]).
    pub permissions: Vec<String>,
}

/// An extension served by a local SIP phone (a SIP account). The same number may also
/// be an FXS [`Extension`]: then both ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipExtension {
    /// Extension number (digits; same numbering space as FXS extensions).
    pub number: String,
    /// Name sent as caller ID when the phone does not send one.
    pub name: String,
    /// Whether a call is offered to the phone while it has one already (its own call
    /// waiting shows it); off, such a caller gets busy, like an FXS extension without
    /// call waiting.
    pub call_waiting: bool,
    /// Calling permissions of calls placed from the phone (config `permissions`;
    /// see [`CallerPermissions`]).
    pub permissions: Vec<String>,
}

/// A PSTN line on an FXO port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxoLine {
    /// FXO port.
    pub port: u8,
    /// Extensions rung (all at once) when the line rings.
    pub inbound: Vec<String>,
    /// Usable for outside calls.
    pub outbound: bool,
}

/// Everything call control needs to know, built from the validated config.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Tone plan, ring cadence and caller-ID mode.
    pub country: Country,
    /// FXS extensions.
    pub extensions: Vec<Extension>,
    /// SIP extensions (local SIP phones).
    pub sip_extensions: Vec<SipExtension>,
    /// FXO lines.
    pub fxo_lines: Vec<FxoLine>,
    /// Digits that select an outside line, if any.
    pub outside_line_prefix: Option<String>,
    /// Time allowed for the first digit after dial tone.
    pub first_digit_timeout: Duration,
    /// Time allowed between digits.
    pub inter_digit_timeout: Duration,
    /// Time a call rings unanswered before the box gives up.
    pub ring_timeout: Duration,
    /// Prefix of every call id (unique per boot, e.g. the boot time).
    pub call_id_prefix: String,
    /// Host part of the SIP Call-IDs of outgoing legs (`{call id}-{n}@{host}`).
    pub sip_host: String,
    /// Wall-clock time (ms since the Unix epoch) at `epoch`.
    pub wall_clock_ms: i64,
    /// The monotonic instant that corresponds to `wall_clock_ms`.
    pub epoch: Instant,
    /// The call center (queues, agents, feature codes), if one is configured.
    pub acd: Option<AcdSettings>,
    /// The voice prompts the box has, by name, with their length
    /// ([`crate::prompts::PromptLibrary::durations`]): a queue's prompt music and the
    /// spoken announcements are played only when their prompts are there.
    pub prompts: BTreeMap<String, Duration>,
    /// Meet-me conference rooms (`[[conference_rooms]]`; see `meetme`).
    pub conference_rooms: Vec<MeetMeRoom>,
    /// The number a phone dials for the echo test (`None`: no echo test; see `echo`).
    pub echo_test_code: Option<String>,
}

/// What call control wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a command to the line controller.
    Command {
        /// Port addressed.
        port: u8,
        /// What to do.
        command: Command,
    },
    /// Bridge audio between two ends (ports or SIP legs), both ways.
    Connect(MediaEnd, MediaEnd),
    /// Stop bridging these two ends.
    Disconnect(MediaEnd, MediaEnd),
    /// Place an outgoing SIP leg (INVITE). Call control allocated `leg`
    /// ([`LegId::OUTGOING`] set) and its Call-ID.
    SipDial {
        /// The new leg.
        leg: LegId,
        /// Where to.
        target: SipTarget,
        /// Calling number to present.
        caller_number: String,
        /// Calling name to present ("" for none).
        caller_name: String,
        /// The SIP Call-ID to use (unique).
        sip_call_id: String,
    },
    /// The callee is being alerted: send 180 Ringing on this incoming leg; with
    /// `early_media`, the far end's early media is bridged to it: send 183 Session
    /// Progress with the SDP answer and start its media.
    SipRinging {
        /// The incoming leg.
        leg: LegId,
        /// The leg gets early media (183 with SDP) instead of a plain 180.
        early_media: bool,
    },
    /// Answer this incoming leg (200 OK with the SDP answer).
    SipAnswer {
        /// The incoming leg.
        leg: LegId,
    },
    /// End the leg: a final response, CANCEL or BYE, as fits its state.
    SipHangup {
        /// The leg.
        leg: LegId,
        /// Why (the endpoint maps it to a status code).
        reason: EndReason,
    },
    /// How the transfer a REFER on `leg` asked for went: the endpoint sends it as a
    /// `message/sipfrag` NOTIFY in the REFER's subscription (RFC 3515); a final
    /// status (`>= 200`) ends the subscription.
    SipTransferStatus {
        /// The transferor's leg.
        leg: LegId,
        /// A SIP status: 200 when the target answered, else why it failed.
        status: u16,
    },
    /// A port changed state (for the store, LEDs and the web page).
    PortState {
        /// The port.
        port: u8,
        /// New state.
        state: PortState,
    },
    /// A call ended; store its record. Boxed: a CDR is far larger than the other
    /// outputs, and the output queue holds one slot per output.
    Cdr(Box<Cdr>),
    /// Write the journal of live calls (see [`CallControl::update_journal`]): in
    /// order with the CDRs, so a call's row is always written before the CDR that
    /// deletes it.
    Journal(JournalUpdate),
    /// A call-center agent's state changed (for `agent_state_log` and the outbox).
    AgentState {
        /// The agent.
        agent: crate::acd::AgentId,
        /// The new state.
        state: crate::acd::AgentState,
        /// The extension the agent is (or was) logged in on.
        extension: Option<String>,
        /// The call's id (as on its CDR) while the agent is ringing for or on a call.
        call_id: Option<String>,
        /// When, in ms since the Unix epoch.
        at_ms: i64,
    },
    /// Caller screening blocked a call by the blacklist entry `pattern`: count the
    /// hit (`hits`, `last_hit_ms` of the entry in the store).
    BlacklistHit {
        /// The entry's pattern, as written.
        pattern: String,
        /// When, in ms since the Unix epoch.
        at_ms: i64,
    },
    /// A progressive campaign's attempt has its outcome, read from the call (see
    /// `campaign`): the campaign driver records it.
    CampaignOutcome {
        /// The attempt ([`CampaignDial::attempt`]).
        attempt: i64,
        /// The call's id (its CDR's).
        call_id: String,
        /// How it ended.
        outcome: crate::campaign::Outcome,
    },
    /// Play prompts / music to an end that is not bridged (the media engine, see
    /// [`crate::prompts`]); replaces what played there before.
    Play {
        /// The analog port or SIP leg.
        end: MediaEnd,
        /// What to play.
        playback: crate::prompts::Playback,
    },
    /// Stop what [`Output::Play`] plays to `end`.
    StopPlay {
        /// The end.
        end: MediaEnd,
    },
    /// A call-center call changed for an agent: offered to them, answered by them, or
    /// over for them (for the agents' screen-pop event stream, `/api/v1/events`).
    /// Boxed like [`Output::Cdr`].
    AgentCall(Box<AgentCallEvent>),
    /// Search (or stop searching) the audio from PSTN line `port` for in-band DTMF and
    /// report each digit as an [`Event::Digit`] of that port (the post-call survey of
    /// a PSTN caller).
    DetectDtmf {
        /// The FXO port.
        port: u8,
        /// Start (true) or stop.
        on: bool,
    },
    /// Search (or stop searching) the audio from PSTN line `port` for the country's
    /// busy and congestion tones ([`branchline_media::progress`]) and report one with
    /// [`CallControl::progress_tone`] (a campaign lead dialled on the line).
    DetectProgress {
        /// The FXO port.
        port: u8,
        /// Start (true) or stop.
        on: bool,
    },
    /// An agent in wrap-up keyed disposition `digit` for their last call: store it
    /// (`cdr_dispositions`, the customer's type, the outbox) and answer with
    /// [`CallControl::disposition_stored`] and the same `check`.
    Disposition {
        /// Identifies the request.
        check: u64,
        /// The agent.
        agent: crate::acd::AgentId,
        /// The call's id (as on its CDR).
        call_id: String,
        /// The call's caller number (the customer whose type the digit sets).
        caller: String,
        /// The customer-type digit, 0 to 9.
        digit: u8,
        /// When, in ms since the Unix epoch.
        at_ms: i64,
    },
    /// Change a conference room's members (the media engine mixes every end joined to
    /// a room each 20 ms; see [`ConferenceOp`]). Call control removes an end's
    /// two-party bridge before it joins, and decides what bridges it gets back after
    /// it leaves.
    Conference {
        /// The room (numbered by call control).
        room: RoomId,
        /// What changes.
        op: ConferenceOp,
    },
    /// Check that the user owning the dialling `extension` may supervise `agent`'s
    /// calls (`calls.listen` over the agent's groups) and answer with
    /// [`CallControl::supervisor_checked`] and the same `check`.
    CheckSupervisor {
        /// Identifies the request.
        check: u64,
        /// The supervisor's extension (the phone that dialled the code).
        extension: String,
        /// The agent whose call is to be joined.
        agent: crate::acd::AgentId,
        /// Listen, whisper or barge.
        mode: crate::acd::codes::SuperviseMode,
    },
    /// Check an agent's PIN (argon2id against `users.pin_hash`) and answer with
    /// [`CallControl::agent_pin_checked`] and the same `check`.
    CheckAgentPin {
        /// Identifies the request.
        check: u64,
        /// The agent ID dialled.
        agent: crate::acd::AgentId,
        /// The PIN dialled.
        pin: crate::acd::codes::Pin,
    },
    /// Start recording a voicemail message: hand the audio `end` receives to the
    /// message writer (see [`voicemail`]). Boxed like [`Output::Cdr`].
    Capture(Box<Deposit>),
    /// Start (`on`) or stop the echo test on `end`: what it receives is played back
    /// to it [`branchline_media::echo::ECHO_DELAY`] later (see `echo`).
    Echo {
        /// The caller's end.
        end: MediaEnd,
        /// Start or stop.
        on: bool,
    },
    /// Stop recording `capture` from `end`; `keep` it (the writer still drops one
    /// that is too short) or delete it. Answered by
    /// [`CallControl::voicemail_message_done`].
    CaptureEnd {
        /// The end recorded.
        end: MediaEnd,
        /// The capture ([`Deposit::capture`]).
        capture: u64,
        /// Keep the message.
        keep: bool,
    },
    /// Check a mailbox PIN (argon2id against `voicemail_boxes.pin_hash`) and answer
    /// with [`CallControl::mailbox_pin_checked`] and the same `check`.
    CheckMailboxPin {
        /// Identifies the request.
        check: u64,
        /// The mailbox number.
        mailbox: String,
        /// The PIN keyed.
        pin: crate::acd::codes::Pin,
    },
    /// Play a voicemail message's WAV file to `end` (replaces what played there;
    /// [`Output::StopPlay`] stops it).
    PlayMessage {
        /// The end.
        end: MediaEnd,
        /// The message file.
        file: std::path::PathBuf,
    },
    /// A message was listened to: store it as heard.
    MessageHeard {
        /// Its row id.
        id: i64,
    },
    /// A message was deleted from the phone menu: delete its row and file.
    DeleteMessage {
        /// Its row id.
        id: i64,
    },
    /// A mailbox's message counts changed (message waiting: SIP phones'
    /// `message-summary` NOTIFY; FXS phones get stutter dial tone from call control).
    MessageWaiting {
        /// The mailbox number.
        mailbox: String,
        /// New messages.
        new: usize,
        /// Heard (saved) messages.
        heard: usize,
    },
}

/// A conference room's number (unique while call control runs).
pub type RoomId = u64;

/// Who hears a conference member: the mixer's [`branchline_media::mix::Role`] over
/// media ends (talker, listener, whisperer to one end).
pub type ConferenceRole = branchline_media::mix::Role<MediaEnd>;

/// A change to a conference room ([`Output::Conference`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceOp {
    /// `end` joins the room (the room is made by its first join).
    Join {
        /// The port or SIP leg.
        end: MediaEnd,
        /// Who hears it.
        role: ConferenceRole,
    },
    /// A member's role changes (a supervisor going from listen to whisper or barge).
    SetRole {
        /// The member.
        end: MediaEnd,
        /// The new role.
        role: ConferenceRole,
    },
    /// `end` leaves the room (the room goes when its last member leaves). The end is
    /// left unbridged.
    Leave {
        /// The member.
        end: MediaEnd,
    },
    /// Everyone in the room hears a short beep: a party came in (`entry`, high) or
    /// left (low).
    Beep {
        /// Entry (true) or exit beep.
        entry: bool,
    },
}

/// Coarse state of a port, as shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortState {
    /// On-hook and quiet.
    Idle,
    /// Off-hook, dialling.
    Dialing,
    /// Ringing (FXS) or being rung from the PSTN (FXO).
    Ringing,
    /// Calling out, waiting for an answer.
    Calling,
    /// In a conversation.
    Talking,
    /// Off-hook hearing a busy or error tone.
    Lockout,
    /// Out of service after a hardware fault.
    Fault,
}

impl PortState {
    /// Stable lower-case name (stored in the database).
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Idle => "idle",
            PortState::Dialing => "dialing",
            PortState::Ringing => "ringing",
            PortState::Calling => "calling",
            PortState::Talking => "talking",
            PortState::Lockout => "lockout",
            PortState::Fault => "fault",
        }
    }
}

/// A party to a call in progress, as [`CallControl::snapshot`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallParty {
    /// An analog phone on this FXS port.
    Fxs(u8),
    /// A PSTN line on this FXO port.
    Fxo(u8),
    /// A SIP leg: a local SIP phone's (`phone`) or the trunk's.
    Sip {
        /// The leg (its RTP statistics are the media engine's).
        leg: LegId,
        /// A local SIP phone's leg (else the trunk's).
        phone: bool,
    },
}

/// A call in progress ([`CallControl::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// The call's id (its CDR will carry it).
    pub call_id: String,
    /// Internal, inbound or outbound.
    pub direction: Direction,
    /// Calling number ("" when withheld).
    pub caller_number: String,
    /// Called number as dialled.
    pub callee_number: String,
    /// Who called.
    pub caller: CallParty,
    /// Who answered (or the FXO line of an outbound analog call), once known.
    pub callee: Option<CallParty>,
    /// Ports and SIP legs being offered the call (not answered yet).
    pub ringing: Vec<CallParty>,
    /// `alerting`, `proceeding` (outbound FXO call dialled) or `connected`.
    pub phase: &'static str,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Answer, ms since the Unix epoch.
    pub answered_at_ms: Option<i64>,
}

/// A party to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Party {
    Fxs(u8),
    Fxo(u8),
    Sip(LegId),
}

impl Party {
    fn port(self) -> Option<u8> {
        match self {
            Party::Fxs(p) | Party::Fxo(p) => Some(p),
            Party::Sip(_) => None,
        }
    }

    fn media(self) -> MediaEnd {
        match self {
            Party::Fxs(p) | Party::Fxo(p) => MediaEnd::Port(p),
            Party::Sip(leg) => MediaEnd::Leg(leg),
        }
    }
}

type CallKey = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    /// Callee(s) ringing; caller hears ringback.
    Alerting,
    /// Outbound FXO call dialled; waiting for answer supervision.
    Proceeding,
    /// Parties talk.
    Connected,
}

/// An outside call still trying its routes (trunk, then FXO).
#[derive(Debug, Clone)]
struct OutsideAttempt {
    /// The number dialled after the prefix.
    number: String,
    /// Routes not tried yet, in order.
    routes_left: Vec<OutsideVia>,
}

impl Call {
    /// A call `caller` starts at `started` towards `callee_number`, not yet ringing
    /// anything: no id yet ([`CallControl::new_call`] gives it one), alerting, no
    /// callee, no transfer, queue or hold. Callers set what differs with struct update
    /// syntax.
    fn new(
        direction: Direction,
        caller: Party,
        caller_number: String,
        caller_name: String,
        callee_number: String,
        started: Instant,
    ) -> Call {
        Call {
            id: String::new(),
            direction,
            caller,
            caller_number,
            caller_name,
            callee: None,
            callee_number,
            ringing: Vec::new(),
            ringing_legs: Vec::new(),
            phase: CallPhase::Alerting,
            started,
            answered: None,
            deadline: None,
            last_ring: None,
            caller_alerted: false,
            outside: None,
            caller_sip_call_id: None,
            callee_sip_call_id: None,
            transfer_chain: Vec::new(),
            transferor: None,
            caller_connected: false,
            early_media: None,
            queue: None,
            desk_agents: Vec::new(),
            blocked: None,
            awaiting_caller_id: false,
            survey_score: None,
            talk_ended: None,
            hold: hold::HoldClock::default(),
            overflowed: None,
            hangup_cause: None,
            journaled: false,
        }
    }

    /// The caller's SIP leg, if the caller is one.
    fn caller_leg(&self) -> Option<LegId> {
        match self.caller {
            Party::Sip(leg) => Some(leg),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Call {
    id: String,
    direction: Direction,
    caller: Party,
    caller_number: String,
    /// Caller name for caller ID (extension name, or from the PSTN/SIP).
    caller_name: String,
    /// Who answered (or, for outbound FXO calls, the line).
    callee: Option<Party>,
    callee_number: String,
    /// Ports being rung.
    ringing: Vec<u8>,
    /// Outgoing SIP legs offered the call (not answered yet).
    ringing_legs: Vec<LegId>,
    phase: CallPhase,
    started: Instant,
    answered: Option<Instant>,
    /// Ring timeout (alerting) or PSTN ring-absence deadline (inbound alerting).
    deadline: Option<Instant>,
    /// Inbound from the PSTN: last ring burst seen.
    last_ring: Option<Instant>,
    /// A SIP caller was sent 180 Ringing already.
    caller_alerted: bool,
    /// An outside call with routes left to try.
    outside: Option<OutsideAttempt>,
    /// SIP Call-ID of the caller's leg.
    caller_sip_call_id: Option<String>,
    /// SIP Call-ID of the callee's leg (answered, or offered last).
    callee_sip_call_id: Option<String>,
    /// The calls this one continues after transfers, oldest first (for the CDR).
    transfer_chain: Vec<CdrTransferHop>,
    /// A blind transfer in progress: the transferor's leg, told the outcome.
    transferor: Option<LegId>,
    /// The caller was talking before this call existed (a transferred party): no
    /// answer or ringing is signalled to it again.
    caller_connected: bool,
    /// The offered leg whose early media (183 with SDP) the caller hears instead of
    /// ringback, bridged to the caller until answer or until that offer ends.
    early_media: Option<LegId>,
    /// The call is in (or was answered from) a call-center queue.
    queue: Option<queue::QueueCall>,
    /// Agents told of this direct (not queued) call on their desktops because it was
    /// offered to the phone they are logged in on, with that phone's extension (see
    /// `queue::desk_offer`).
    desk_agents: Vec<(crate::acd::AgentId, String)>,
    /// Caller screening blocked the call (see `screening`): for its CDR.
    blocked: Option<CdrBlocked>,
    /// A PSTN call that rang without caller ID while screening is on: nobody is rung
    /// until the next ring burst brings the caller ID (or proves there is none).
    awaiting_caller_id: bool,
    /// The score the caller keyed in the post-call survey (see `survey`).
    survey_score: Option<u8>,
    /// When the conversation ended, for a call that goes on for its caller (the
    /// survey): the CDR's end.
    talk_ended: Option<Instant>,
    /// Time on hold, for the CDR (see `hold`).
    hold: hold::HoldClock,
    /// The queue a call left without an agent by the queue's overflow rule, and where
    /// it went: the CDR keeps both (`queue` is `None` once it left).
    overflowed: Option<(CdrQueue, CdrQueueOverflow)>,
    /// The box ended the call for this reason (a SIP leg's media timeout): its CDR
    /// says `hangup_side` `system` with this cause, whoever's end it was.
    hangup_cause: Option<HangupCause>,
    /// The store's journal of live calls has a row for this call (see [`journal`]).
    journaled: bool,
}

/// What call control knows of a SIP leg.
#[derive(Debug, Clone)]
struct LegInfo {
    call: CallKey,
    /// The number the leg stands for (the SIP extension, or the outside number).
    number: String,
    sip_call_id: String,
    /// The far end put the leg on hold.
    far_held: bool,
    /// The leg is a local SIP phone's (its extension is `number`): it makes that
    /// extension busy for call waiting.
    phone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fxs {
    Idle,
    /// Off-hook collecting digits; `digits` empty means dial tone is playing.
    Dialing {
        digits: String,
        started: Instant,
        deadline: Instant,
    },
    /// Caller side of a call.
    Caller(CallKey),
    /// Being rung for a call, on-hook.
    Ringing(CallKey),
    /// Answered party of a call.
    Callee(CallKey),
    /// Off-hook with an error/busy tone until on-hook; the tone stops at `quiet_at`.
    Lockout {
        quiet_at: Option<Instant>,
    },
    /// Hardware fault reported.
    Fault,
    /// Rung for a click-to-call (on-hook); answering dials its number (see `click`).
    ClickToCall(click::Click),
    /// A supervisor in an agent's call `CallKey` (listen, whisper or barge; see
    /// `supervise`).
    Supervisor(CallKey),
    /// Keying a meet-me room's PIN, or in the room (see `meetme`).
    MeetMe,
}

#[derive(Debug)]
struct FxsPort {
    ext: Option<usize>,
    state: Fxs,
    off_hook: bool,
    /// A second call waiting (its caller hears ringback, we hear call-waiting tone).
    waiting: Option<CallKey>,
    /// A call on hold by hook-flash.
    held: Option<CallKey>,
    /// `held` was put on hold by this phone to dial out (a consultation): the next
    /// flash once the second call is up makes a three-way call (see `three_way`).
    consult: bool,
}

#[derive(Debug)]
struct FxoPort {
    line: Option<usize>,
    call: Option<CallKey>,
    fault: bool,
}

/// The call-control state machine. See the module docs.
#[derive(Debug)]
pub struct CallControl {
    settings: CallSettings,
    fxs: BTreeMap<u8, FxsPort>,
    fxo: BTreeMap<u8, FxoPort>,
    calls: BTreeMap<CallKey, Call>,
    next_call: u64,
    /// SIP legs of calls in progress.
    legs: BTreeMap<LegId, LegInfo>,
    /// Number of the next outgoing leg.
    next_leg: u64,
    /// Media bridges in force (each pair once, smaller end first), so every Connect
    /// gets exactly one Disconnect.
    bridges: BTreeSet<(MediaEnd, MediaEnd)>,
    outputs: VecDeque<Output>,
    shut_down: bool,
    /// Whether the SIP trunk may be used, as the daemon last decided it from the
    /// trunk's registration and the WAN monitor (see [`outside`]).
    trunk: TrunkStatus,
    /// HQ's outside-line routes (see [`outside`]; empty: the built-in rule).
    dial_routes: DialRoutes,
    /// Legs whose RTP started ([`SipInput::Media`]): the endpoint reports their
    /// quality when they end, and a CDR naming them waits for it.
    media_legs: BTreeSet<LegId>,
    /// Quality reports that came before the CDR that needs them (a far end's BYE is
    /// reported after its leg's media closed).
    leg_quality: BTreeMap<LegId, Option<CdrLegQuality>>,
    /// CDRs waiting for their legs' quality, oldest first.
    pending_cdrs: Vec<PendingCdr>,
    /// The call center, when queues and agents are configured.
    center: Option<queue::CallCenter>,
    /// Caller screening of inbound outside calls (empty: everyone gets through).
    blacklist: crate::blacklist::Blacklist,
    /// The key the next call takes instead of a fresh one: a click-to-call's call
    /// keeps the id the API returned (set only while its digits are dialled).
    reserved_key: Option<CallKey>,
    /// Click-to-calls ringing a SIP phone, by the leg offered to it (see `click`).
    sip_clicks: BTreeMap<LegId, click::Click>,
    /// Progressive campaign leads being dialled, by their leg (see `campaign`).
    lead_legs: BTreeMap<LegId, campaign::LeadLeg>,
    /// Progressive campaign leads being dialled on an FXO line, by the line's port.
    lead_lines: BTreeMap<u8, campaign::LeadLeg>,
    /// Campaign leads that answered, connected (or being connected) to their agent,
    /// by call (see `campaign`).
    campaign_calls: BTreeMap<CallKey, campaign::CampaignCall>,
    /// Calls whose caller is in the post-call survey.
    surveys: BTreeMap<CallKey, survey::Survey>,
    /// SIP phones' legs that dialled a feature code (see `features`).
    feature_legs: BTreeMap<LegId, features::FeatureLeg>,
    /// The ACD's decisions wait until the event being handled is done (see
    /// `queue::with_acd_deferred`).
    acd_deferred: bool,
    /// Outside callers' names (`None`: caller ID names only).
    directory: Option<Box<dyn CallerDirectory>>,
    /// Mailboxes, callers leaving messages, phones in the menu, message waiting.
    vm: voicemail::Voicemail,
    /// Echo tests running, with when each reaches its limit (see `echo`).
    echo_tests: BTreeMap<CallKey, Instant>,
    /// Supervisors in agents' calls, by the supervisor's phone: an FXS port or a SIP
    /// phone's leg (see `supervise`).
    supervisions: BTreeMap<Party, supervise::Supervision>,
    /// Supervisor rights being checked ([`Output::CheckSupervisor`]), by check number.
    supervise_checks: BTreeMap<u64, supervise::PendingSupervision>,
    /// Number of the next supervisor check.
    next_supervise_check: u64,
    /// Number of the next conference room.
    next_room: RoomId,
    /// Supervisors dropped because their call changed, whose busy tone still needs its
    /// quiet time (set at the next `handle_timeout`, due at once).
    supervisors_dropped: Vec<u8>,
    /// Phones in meet-me rooms or keying their PIN (see `meetme`).
    meetme: meetme::MeetMe,
    /// Three-way calls by hook-flash, by the phone's port (see `three_way`).
    three_ways: BTreeMap<u8, three_way::ThreeWay>,
    /// What the store's journal of live calls holds (see [`journal`]).
    journal: journal::Journal,
}

/// Names of outside callers from the customer directory, for the caller ID shown on
/// the phones. The daemon's looks the number up in the store (one indexed seek,
/// `customers::lookup_by_number`); tests use a map. Kept behind a trait so call
/// control stays free of IO it does not own: the lookup is a read of a local file,
/// microseconds long, done on the board loop.
pub trait CallerDirectory: Send + std::fmt::Debug {
    /// The directory's name for `number`, if it has one.
    fn name_of(&self, number: &str) -> Option<String>;
}

/// How long a finished call's CDR waits for the quality of its SIP legs (the endpoint
/// reports it as soon as it closed their media, normally within milliseconds); after
/// this it is written without the missing values.
pub const QUALITY_WAIT: Duration = Duration::from_secs(3);

/// A CDR waiting for the quality of its SIP legs.
#[derive(Debug)]
struct PendingCdr {
    cdr: Cdr,
    /// The caller's leg, while its report is missing.
    caller_leg: Option<LegId>,
    /// The callee's leg, while its report is missing.
    callee_leg: Option<LegId>,
    /// Written without the missing reports at this time.
    deadline: Instant,
    /// The journal of live calls has a row for this call (see [`journal`]).
    journaled: bool,
}

impl CallControl {
    /// Call control for a board with these FXS and FXO ports.
    pub fn new(
        settings: CallSettings,
        fxs_ports: impl IntoIterator<Item = u8>,
        fxo_ports: impl IntoIterator<Item = u8>,
    ) -> Self {
        let fxs = fxs_ports
            .into_iter()
            .map(|p| {
                let ext = settings.extensions.iter().position(|e| e.port == p);
                let port = FxsPort {
                    ext,
                    state: Fxs::Idle,
                    off_hook: false,
                    waiting: None,
                    held: None,
                    consult: false,
                };
                (p, port)
            })
            .collect();
        let fxo = fxo_ports
            .into_iter()
            .map(|p| {
                let line = settings.fxo_lines.iter().position(|l| l.port == p);
                (
                    p,
                    FxoPort {
                        line,
                        call: None,
                        fault: false,
                    },
                )
            })
            .collect();
        let center = settings
            .acd
            .as_ref()
            .map(|a| queue::CallCenter::new(a, settings.epoch));
        CallControl {
            center,
            settings,
            fxs,
            fxo,
            calls: BTreeMap::new(),
            next_call: 1,
            legs: BTreeMap::new(),
            next_leg: 1,
            bridges: BTreeSet::new(),
            outputs: VecDeque::new(),
            shut_down: false,
            trunk: TrunkStatus::NotConfigured,
            dial_routes: DialRoutes::default(),
            media_legs: BTreeSet::new(),
            leg_quality: BTreeMap::new(),
            pending_cdrs: Vec::new(),
            blacklist: crate::blacklist::Blacklist::default(),
            reserved_key: None,
            sip_clicks: BTreeMap::new(),
            lead_legs: BTreeMap::new(),
            lead_lines: BTreeMap::new(),
            campaign_calls: BTreeMap::new(),
            surveys: BTreeMap::new(),
            feature_legs: BTreeMap::new(),
            acd_deferred: false,
            directory: None,
            vm: voicemail::Voicemail::default(),
            echo_tests: BTreeMap::new(),
            supervisions: BTreeMap::new(),
            supervise_checks: BTreeMap::new(),
            next_supervise_check: 1,
            next_room: 1,
            supervisors_dropped: Vec::new(),
            meetme: meetme::MeetMe::default(),
            three_ways: BTreeMap::new(),
            journal: journal::Journal::default(),
        }
    }

    /// Names outside callers from `directory` from now on.
    pub fn set_directory(&mut self, directory: Box<dyn CallerDirectory>) {
        self.directory = Some(directory);
    }

    /// The name to show for outside caller `number`: the directory's when it knows
    /// the number (a curated name beats the network's), else what the network sent.
    fn outside_caller_name(&self, number: &str, sent: String) -> String {
        if number.is_empty() {
            return sent;
        }
        self.directory
            .as_ref()
            .and_then(|d| d.name_of(number))
            .filter(|n| !n.is_empty())
            .unwrap_or(sent)
    }

    /// Tells call control whether the SIP trunk is usable (the daemon's verdict from
    /// the trunk's registration and the WAN monitor); outside calls placed from now on
    /// try the trunk only while it is ([`DialRoutes::routes_for`]).
    pub fn set_trunk_status(&mut self, trunk: TrunkStatus) {
        self.trunk = trunk;
    }

    /// Takes HQ's outside-line routes for the outside calls placed from now on (calls
    /// trying their routes keep the ones they started with).
    pub fn set_dial_routes(&mut self, routes: DialRoutes) {
        self.dial_routes = routes;
    }

    /// The calling permissions outside `call` holds (see [`CallerPermissions`]): a
    /// transferred call those of the transferring phone, else its caller's: an FXS
    /// port's, a local SIP phone's; an FXO line or the trunk holds none.
    fn caller_permissions(&self, call: &Call) -> CallerPermissions {
        match call.transferor {
            Some(leg) => self.party_permissions(Party::Sip(leg)),
            None => self.party_permissions(call.caller),
        }
    }

    /// The calling permissions of `party` (none for a line or a trunk leg).
    fn party_permissions(&self, party: Party) -> CallerPermissions {
        let list = match party {
            Party::Fxs(port) => self
                .settings
                .extensions
                .iter()
                .find(|e| e.port == port)
                .map(|e| &e.permissions),
            Party::Sip(leg) => self
                .legs
                .get(&leg)
                .filter(|l| l.phone)
                .and_then(|l| {
                    self.settings
                        .sip_extensions
                        .iter()
                        .find(|e| e.number == l.number)
                })
                .map(|e| &e.permissions),
            Party::Fxo(_) => None,
        };
        CallerPermissions::new(list.into_iter().flatten().cloned())
    }

    /// The calling permissions of extension `number`'s phone: its FXS port's, else
    /// its SIP account's (a click-to-call rings the port first; a campaign call talks
    /// on the agent's extension).
    fn extension_permissions(&self, number: &str) -> CallerPermissions {
        let fxs = self
            .settings
            .extensions
            .iter()
            .find(|e| e.number == number)
            .map(|e| &e.permissions);
        let sip = || {
            self.settings
                .sip_extensions
                .iter()
                .find(|e| e.number == number)
                .map(|e| &e.permissions)
        };
        CallerPermissions::new(fxs.or_else(sip).into_iter().flatten().cloned())
    }

    /// The SIP trunk status in force.
    pub fn trunk_status(&self) -> TrunkStatus {
        self.trunk
    }

    /// The extension of the local SIP phone behind `leg` (`None`: a trunk leg, or no
    /// such leg); the call recorder looks up its recording policy.
    pub fn phone_extension(&self, leg: LegId) -> Option<&str> {
        self.legs
            .get(&leg)
            .filter(|l| l.phone)
            .map(|l| l.number.as_str())
    }

    /// The call `leg` belongs to (its id, as on the CDR) and whether the leg is that
    /// call's caller; `None` for no such leg. The call recorder keys and lays out the
    /// recording of a call between two SIP legs with it.
    pub fn call_of_leg(&self, leg: LegId) -> Option<(&str, bool)> {
        let info = self.legs.get(&leg)?;
        let call = self.calls.get(&info.call)?;
        Some((call.id.as_str(), call.caller == Party::Sip(leg)))
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Number of calls in progress (alerting or connected), campaign leads being
    /// dialled included.
    pub fn active_calls(&self) -> usize {
        self.calls.len() + self.lead_legs.len() + self.lead_lines.len()
    }

    /// When [`CallControl::handle_timeout`] must next be called.
    pub fn timeout(&self) -> Option<Instant> {
        let ports = self.fxs.values().filter_map(|p| match &p.state {
            Fxs::Dialing { deadline, .. } => Some(*deadline),
            Fxs::Lockout { quiet_at } => *quiet_at,
            Fxs::ClickToCall(c) => Some(c.deadline),
            _ => None,
        });
        let calls = self.calls.values().filter_map(|c| c.deadline);
        let cdrs = self.pending_cdrs.iter().map(|p| p.deadline);
        let clicks = self.sip_clicks.values().map(|c| c.deadline);
        let acd = self
            .center
            .as_ref()
            .and_then(|c| c.timeout(self.settings.epoch));
        // A dropped supervisor's tone gets its quiet time at once.
        let dropped = (!self.supervisors_dropped.is_empty()).then_some(self.settings.epoch);
        ports
            .chain(dropped)
            .chain(self.meetme.timeout())
            .chain(calls)
            .chain(cdrs)
            .chain(clicks)
            .chain(self.lead_legs_timeout())
            .chain(acd)
            .chain(self.survey_timeout())
            .chain(self.feature_timeout())
            .chain(self.vm_timeout())
            .chain(self.echo_timeout())
            .min()
    }

    /// Handles every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle_dropped_supervisors(now);
        let due: Vec<u8> = self
            .fxs
            .iter()
            .filter(|(_, p)| match &p.state {
                Fxs::Dialing { deadline, .. } => *deadline <= now,
                Fxs::Lockout { quiet_at } => quiet_at.is_some_and(|q| q <= now),
                Fxs::ClickToCall(c) => c.deadline <= now,
                _ => false,
            })
            .map(|(&n, _)| n)
            .collect();
        for port in due {
            match self.fxs_state(port) {
                Some(Fxs::Dialing { .. }) => self.dial_timeout(now, port),
                Some(Fxs::Lockout { .. }) => {
                    self.cmd(port, Command::StopTone);
                    self.set_fxs(port, Fxs::Lockout { quiet_at: None });
                }
                Some(Fxs::ClickToCall(click)) => {
                    self.click_failed(now, port, click, Disposition::NoAnswer)
                }
                _ => {}
            }
        }
        let due: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            if self.in_voicemail(key) {
                continue;
            }
            if let Some(mailbox) = self.deposit_target(key, voicemail::Trigger::NoAnswer) {
                if self.start_deposit(now, key, &mailbox, Disposition::NoAnswer) {
                    continue;
                }
            }
            let Some(call) = self.calls.get(&key) else {
                continue;
            };
            if call.last_ring.is_some() {
                // The PSTN stopped ringing: the caller gave up.
                self.end_call(now, key, None, HangupSide::Caller, EndReason::Normal);
            } else {
                // Nobody answered in time.
                self.end_call(now, key, None, HangupSide::System, EndReason::NoAnswer);
            }
        }
        let due: Vec<LegId> = self
            .sip_clicks
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&l, _)| l)
            .collect();
        for leg in due {
            if let Some(click) = self.sip_clicks.remove(&leg) {
                self.click_sip_failed(now, leg, click, None);
            }
        }
        self.lead_legs_due(now);
        self.acd_timeout(now);
        self.meetme_timeouts(now);
        self.survey_timeouts(now);
        self.feature_legs_due(Some(now));
        self.vm_timeouts(now);
        self.echo_timeouts(now);
        self.flush_cdrs(|p| p.deadline <= now);
    }

    /// The board loop heard a busy or congestion tone on PSTN line `port`, whose audio
    /// it was asked to search ([`Output::DetectProgress`]). Ignored when the line is no
    /// longer a campaign lead's ringing line.
    pub fn progress_tone(
        &mut self,
        now: Instant,
        port: u8,
        tone: branchline_media::progress::ProgressTone,
    ) {
        if self.shut_down {
            return;
        }
        if !self.lead_line_progress(now, port, tone) {
            tracing::debug!(port, ?tone, "call-progress tone on a line no lead rings on");
        }
    }

    /// Handles one event from the line controller.
    pub fn handle_event(&mut self, now: Instant, port: u8, event: &Event) {
        if self.shut_down {
            return;
        }
        if self.fxs.contains_key(&port) {
            self.fxs_event(now, port, event);
        } else if self.fxo.contains_key(&port) {
            self.fxo_event(now, port, event);
        } else {
            tracing::debug!(port, ?event, "event for an unknown port ignored");
        }
    }

    /// The calls in progress, oldest first, for the web page's calls list (read-only:
    /// the parties, numbers and times call control holds; nothing changes).
    pub fn snapshot(&self) -> Vec<CallSnapshot> {
        let party = |p: Party| match p {
            Party::Fxs(port) => CallParty::Fxs(port),
            Party::Fxo(port) => CallParty::Fxo(port),
            Party::Sip(leg) => CallParty::Sip {
                leg,
                phone: self.legs.get(&leg).is_some_and(|l| l.phone),
            },
        };
        self.calls
            .values()
            .map(|c| CallSnapshot {
                call_id: c.id.clone(),
                direction: c.direction,
                caller_number: c.caller_number.clone(),
                callee_number: c.callee_number.clone(),
                caller: party(c.caller),
                callee: c.callee.map(party),
                ringing: c
                    .ringing
                    .iter()
                    .map(|&p| party(Party::Fxs(p)))
                    .chain(c.ringing_legs.iter().map(|&l| party(Party::Sip(l))))
                    .collect(),
                phase: match c.phase {
                    CallPhase::Alerting => "alerting",
                    CallPhase::Proceeding => "proceeding",
                    CallPhase::Connected => "connected",
                },
                started_at_ms: self.wall(c.started),
                answered_at_ms: c.answered.map(|t| self.wall(t)),
            })
            .collect()
    }

    /// Ends every call (CDRs with hang-up side "system") and silences every port.
    pub fn shutdown(&mut self, now: Instant) {
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.end_call(now, key, None, HangupSide::System, EndReason::Congestion);
        }
        for (leg, click) in std::mem::take(&mut self.sip_clicks) {
            self.click_sip_failed(now, leg, click, None);
        }
        self.lead_legs_close_all(now);
        self.feature_legs_due(None);
        self.supervisions_close_all();
        self.meetme_close_all(now);
        let ports: Vec<u8> = self.fxs.keys().copied().collect();
        for port in ports {
            if self.fxs_state(port) != Some(Fxs::Idle) {
                self.cmd(port, Command::StopTone);
                self.cmd(port, Command::StopRing);
            }
        }
        // Nothing waits for quality reports once the daemon stops: every CDR now.
        self.flush_cdrs(|_| true);
        self.shut_down = true;
    }

    // ----- FXS -----

    fn fxs_event(&mut self, now: Instant, port: u8, event: &Event) {
        match event {
            Event::OffHook => self.off_hook(now, port),
            Event::OnHook => self.on_hook(now, port),
            Event::HookFlash => self.flash(now, port),
            Event::Digit(d) => self.digit(now, port, *d as char),
            Event::Fault(kind) => {
                tracing::warn!(port, ?kind, "FXS port fault: port out of service");
                if let Some(Fxs::ClickToCall(click)) = self.fxs_state(port) {
                    self.click_failed(now, port, click, Disposition::Congestion);
                }
                if let Some(Fxs::Ringing(key)) = self.fxs_state(port) {
                    self.stop_offer(port, key);
                    if self.queue_offer_failed(now, key, Party::Fxs(port)) {
                        self.on_hook(now, port);
                        self.set_fxs(port, Fxs::Fault);
                        return;
                    }
                    let orphaned = self.calls.get_mut(&key).is_some_and(|call| {
                        call.ringing.retain(|&p| p != port);
                        call.ringing.is_empty()
                            && call.ringing_legs.is_empty()
                            && call.last_ring.is_none()
                    });
                    if orphaned {
                        // Nobody else rings for this call: the caller gets busy now.
                        self.end_call(now, key, None, HangupSide::System, EndReason::Busy);
                    }
                }
                self.on_hook(now, port);
                self.set_fxs(port, Fxs::Fault);
            }
            // A passed self-test brings a faulty port back into service.
            Event::SelfTestResult { passed: true, .. }
                if self.fxs_state(port) == Some(Fxs::Fault) =>
            {
                self.set_fxs(port, Fxs::Idle);
            }
            _ => {}
        }
    }

    fn off_hook(&mut self, now: Instant, port: u8) {
        let Some(p) = self.fxs.get_mut(&port) else {
            return;
        };
        if p.off_hook {
            return;
        }
        p.off_hook = true;
        match p.state.clone() {
            Fxs::Idle => self.start_dialing(now, port),
            Fxs::Ringing(key) => self.answer(now, key, Party::Fxs(port)),
            Fxs::ClickToCall(click) => self.click_answered(now, port, click),
            Fxs::Fault => {}
            other => tracing::debug!(port, ?other, "off-hook in unexpected state"),
        }
    }

    fn start_dialing(&mut self, now: Instant, port: u8) {
        self.dial_tone(now, port);
        let deadline = now + self.settings.first_digit_timeout;
        self.set_fxs(
            port,
            Fxs::Dialing {
                digits: String::new(),
                started: now,
                deadline,
            },
        );
    }

    fn on_hook(&mut self, now: Instant, port: u8) {
        self.with_acd_deferred(now, |cc| cc.on_hook_inner(now, port));
    }

    fn on_hook_inner(&mut self, now: Instant, port: u8) {
        let Some(p) = self.fxs.get_mut(&port) else {
            return;
        };
        if !p.off_hook {
            return;
        }
        p.off_hook = false;
        self.stutter_over(port);
        if self.in_three_way(port) {
            self.three_way_hung_up(now, port);
        }
        let Some(p) = self.fxs.get_mut(&port) else {
            return;
        };
        let state = p.state.clone();
        let waiting = p.waiting.take();
        let held = p.held.take();
        let consult = std::mem::take(&mut p.consult);
        // Hanging up while consulting transfers the held call (see `transfer`).
        if let (Fxs::Caller(active), Some(h), true) = (&state, held, consult) {
            if self.transfer_on_hang_up(now, port, *active, h) {
                self.cmd(port, Command::StopTone);
                if self.fxs_state(port) != Some(Fxs::Fault) {
                    self.set_fxs(port, Fxs::Idle);
                }
                // A call waiting still rings the phone back.
                if let Some(w) = waiting.filter(|w| self.calls.contains_key(w)) {
                    self.recall(now, port, w);
                }
                return;
            }
        }
        match state {
            Fxs::Dialing {
                digits, started, ..
            } => {
                self.cmd(port, Command::StopTone);
                if !digits.is_empty() {
                    self.abandoned_cdr(now, port, started, digits, HangupSide::Caller);
                }
                self.set_fxs(port, Fxs::Idle);
            }
            Fxs::Caller(key) | Fxs::Callee(key) => {
                self.cmd(port, Command::StopTone);
                self.end_call(
                    now,
                    key,
                    Some(Party::Fxs(port)),
                    HangupSide::Caller,
                    EndReason::Normal,
                );
            }
            Fxs::Lockout { .. } => {
                self.cmd(port, Command::StopTone);
                self.set_fxs(port, Fxs::Idle);
            }
            Fxs::Supervisor(_) => self.supervisor_hung_up(Party::Fxs(port)),
            Fxs::MeetMe => {
                self.cmd(port, Command::StopTone);
                self.meetme_hung_up(now, Party::Fxs(port));
            }
            Fxs::Idle | Fxs::Ringing(_) | Fxs::Fault | Fxs::ClickToCall(_) => {}
        }
        if self.fxs_state(port) != Some(Fxs::Fault) {
            self.set_fxs(port, Fxs::Idle);
        }
        // A call still on hold or waiting rings the phone again (recall).
        for key in [held, waiting].into_iter().flatten() {
            if self.calls.contains_key(&key) {
                self.recall(now, port, key);
                break;
            }
        }
    }

    fn recall(&mut self, now: Instant, port: u8, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let other = if call.caller == Party::Fxs(port) {
            call.callee
        } else {
            Some(call.caller)
        };
        // The recall rings this port as the callee of the held call.
        if call.caller == Party::Fxs(port) {
            if let Some(o) = other {
                call.caller = o;
            }
        }
        let number = call.caller_number.clone();
        let name = call.caller_name.clone();
        call.callee = None;
        call.phase = CallPhase::Alerting;
        call.ringing = vec![port];
        call.deadline = Some(now + self.settings.ring_timeout);
        call.last_ring = None;
        let number = match other {
            Some(o @ (Party::Fxs(_) | Party::Sip(_))) => self.party_number(o),
            _ => number,
        };
        let name = match other {
            Some(Party::Fxs(p)) => self.port_name(p),
            _ => name,
        };
        self.ring(port, &number, &name);
        self.set_fxs(port, Fxs::Ringing(key));
    }

    fn flash(&mut self, now: Instant, port: u8) {
        let Some(p) = self.fxs.get(&port) else {
            return;
        };
        let (state, waiting, held, consult) = (p.state.clone(), p.waiting, p.held, p.consult);
        if self.vm_session_of(Party::Fxs(port)).is_some() {
            return tracing::debug!(port, "hook-flash ignored in voicemail");
        }
        if self.echo_test_of(Party::Fxs(port)).is_some() {
            return tracing::debug!(port, "hook-flash ignored in the echo test");
        }
        if self.in_three_way(port) {
            tracing::debug!(port, "hook-flash ignored in a three-way call");
            return;
        }
        match state {
            Fxs::Caller(active) | Fxs::Callee(active)
                if self.call_phase(active) == Some(CallPhase::Connected) =>
            {
                if let Some(w) = waiting {
                    // Answer the waiting call; the current one goes on hold.
                    self.cmd(port, Command::StopTone);
                    self.hold(now, port, active);
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.waiting = None;
                        p.held = Some(active);
                        p.consult = false;
                    }
                    self.answer(now, w, Party::Fxs(port));
                } else if let Some(h) =
                    held.filter(|&h| consult && self.start_three_way(port, active, h))
                {
                    tracing::debug!(port, held = h, "consultation joined into a three-way call");
                    self.hold_clock(now, h, Party::Fxs(port), false);
                } else if let Some(h) = held {
                    // Swap between the active and the held call.
                    self.hold(now, port, active);
                    self.resume(now, port, h);
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.held = Some(active);
                    }
                } else {
                    // Hold the peer and give dial tone for a second call.
                    self.hold(now, port, active);
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.held = Some(active);
                        p.consult = true;
                    }
                    self.start_dialing(now, port);
                }
            }
            Fxs::Dialing { .. } if held.is_some() => {
                // Changed their mind: back to the held call.
                self.cmd(port, Command::StopTone);
                if let Some(h) = held {
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.held = None;
                    }
                    self.resume(now, port, h);
                }
            }
            Fxs::Caller(active) if held.is_some() => {
                // Second call not answered yet: drop it and return to the held call.
                self.end_call(
                    now,
                    active,
                    Some(Party::Fxs(port)),
                    HangupSide::Caller,
                    EndReason::Normal,
                );
                if let Some(h) = held {
                    if let Some(p) = self.fxs.get_mut(&port) {
                        p.held = None;
                    }
                    self.resume(now, port, h);
                }
            }
            _ => tracing::debug!(port, "hook-flash ignored in this state"),
        }
    }

    /// Stops the audio between `port` and its peer in `key`, leaving the call up (on
    /// hold from `now`, for the CDR).
    fn hold(&mut self, now: Instant, port: u8, key: CallKey) {
        if let Some(peer) = self.peer_of(key, Party::Fxs(port)) {
            self.disconnect(Party::Fxs(port), peer);
        }
        self.hold_clock(now, key, Party::Fxs(port), true);
    }

    /// `party` starts (`on`) or stops holding call `key` at `now` (for the CDR).
    fn hold_clock(&mut self, now: Instant, key: CallKey, party: Party, on: bool) {
        if let Some(call) = self.calls.get_mut(&key) {
            if on {
                call.hold.start(party, now);
            } else {
                call.hold.stop(party, now);
            }
        }
    }

    /// Makes `key` the active call of `port` again.
    fn resume(&mut self, now: Instant, port: u8, key: CallKey) {
        self.hold_clock(now, key, Party::Fxs(port), false);
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let role = if call.caller == Party::Fxs(port) {
            Fxs::Caller(key)
        } else {
            Fxs::Callee(key)
        };
        if let Some(peer) = self.peer_of(key, Party::Fxs(port)) {
            let far_held =
                matches!(peer, Party::Sip(l) if self.legs.get(&l).is_some_and(|i| i.far_held));
            if !far_held {
                self.connect(Party::Fxs(port), peer);
            }
        }
        self.set_fxs(port, role);
    }

    fn digit(&mut self, now: Instant, port: u8, d: char) {
        if let Some(key) = self.survey_of(Party::Fxs(port)) {
            return self.survey_digit(now, key, d);
        }
        if let Some(key) = self.vm_session_of(Party::Fxs(port)) {
            return self.vm_digit(now, key, d);
        }
        if self.echo_test_of(Party::Fxs(port)).is_some() {
            return tracing::debug!(port, "key ignored in the echo test");
        }
        match self.fxs_state(port) {
            Some(Fxs::Supervisor(_)) => return self.supervisor_digit(Party::Fxs(port), d),
            Some(Fxs::MeetMe) => return self.meetme_digit(now, Party::Fxs(port), d),
            _ => {}
        }
        let Some(Fxs::Dialing {
            mut digits,
            started,
            ..
        }) = self.fxs_state(port)
        else {
            return;
        };
        if digits.is_empty() {
            self.cmd(port, Command::StopTone);
            self.stutter_over(port);
        }
        digits.push(d);
        match self.echo_digits(now, port, &digits, started) {
            None => {}
            Some(true) => return,
            Some(false) => return self.keep_dialing(now, port, digits, started),
        }
        match self.vm_digits(now, port, &digits, started) {
            None => {}
            Some(true) => return,
            Some(false) => return self.keep_dialing(now, port, digits, started),
        }
        match self.feature_digits(now, port, &digits) {
            None => {}
            Some(true) => return,
            Some(false) => return self.keep_dialing(now, port, digits, started),
        }
        match self.pickup_digits(&digits) {
            pickup::PickupDigits::NotPickup => {}
            pickup::PickupDigits::Incomplete => {
                return self.keep_dialing(now, port, digits, started)
            }
            what => return self.pickup(now, port, started, what, digits),
        }
        match self.match_plan(&digits) {
            PlanMatch::Extension => {
                self.set_fxs(port, Fxs::Idle);
                let call = self.call_from_port(port, started, Direction::Internal, digits);
                self.call_extension(now, call);
            }
            PlanMatch::Outside { complete: true } => {
                self.set_fxs(port, Fxs::Idle);
                self.call_outside_from_port(now, port, started, digits);
            }
            PlanMatch::Room(room) => self.meetme_dialled(now, port, room, started, digits),
            PlanMatch::Outside { complete: false } | PlanMatch::Partial => {
                self.keep_dialing(now, port, digits, started)
            }
            PlanMatch::None => {
                self.lockout(now, port, Tone::Unobtainable);
                self.failed_cdr(
                    now,
                    port,
                    started,
                    digits,
                    Direction::Internal,
                    Disposition::Unallocated,
                );
            }
        }
    }

    /// More digits are needed: collect them until the inter-digit timeout.
    fn keep_dialing(&mut self, now: Instant, port: u8, digits: String, started: Instant) {
        let deadline = now + self.settings.inter_digit_timeout;
        self.set_fxs(
            port,
            Fxs::Dialing {
                digits,
                started,
                deadline,
            },
        );
    }

    fn dial_timeout(&mut self, now: Instant, port: u8) {
        let Some(Fxs::Dialing {
            digits, started, ..
        }) = self.fxs_state(port)
        else {
            return;
        };
        match self.outside_number(&digits) {
            Some(n) if !n.is_empty() => {
                self.set_fxs(port, Fxs::Idle);
                self.call_outside_from_port(now, port, started, digits);
            }
            _ => {
                // Off-hook too long without a complete number.
                self.lockout(now, port, Tone::Congestion);
                if !digits.is_empty() {
                    self.abandoned_cdr(now, port, started, digits, HangupSide::System);
                }
            }
        }
    }

    fn match_plan(&self, digits: &str) -> PlanMatch {
        if let Some(rest) = self.outside_number(digits) {
            let complete = rest.ends_with('#') || rest.len() >= MAX_OUTSIDE_DIGITS;
            return PlanMatch::Outside { complete };
        }
        if self.is_extension(digits) {
            return PlanMatch::Extension;
        }
        if let Some(room) = self.meetme_room(digits) {
            return PlanMatch::Room(room);
        }
        let prefix_of_ext = self
            .settings
            .extensions
            .iter()
            .map(|e| &e.number)
            .chain(self.settings.sip_extensions.iter().map(|e| &e.number))
            .any(|n| n.starts_with(digits));
        let prefix_of_outside = self
            .settings
            .outside_line_prefix
            .as_deref()
            .is_some_and(|p| p.starts_with(digits));
        if prefix_of_ext
            || prefix_of_outside
            || self.queue_number_prefix(digits)
            || self.meetme_prefix(digits)
        {
            PlanMatch::Partial
        } else {
            PlanMatch::None
        }
    }

    /// The number after the outside-line prefix, if `digits` starts with it.
    fn outside_number<'a>(&self, digits: &'a str) -> Option<&'a str> {
        let prefix = self.settings.outside_line_prefix.as_deref()?;
        digits.strip_prefix(prefix)
    }

    /// Whether `number` is an extension (FXS, SIP or both).
    fn is_extension(&self, number: &str) -> bool {
        self.fxs_port_of(number).is_some()
            || self.is_sip_extension(number)
            || self.queue_of(number).is_some()
    }

    /// The FXS port of extension `number`, if it has one.
    fn fxs_port_of(&self, number: &str) -> Option<u8> {
        self.settings
            .extensions
            .iter()
            .find(|e| e.number == number)
            .map(|e| e.port)
    }

    /// Whether `number` is served by a SIP phone.
    fn is_sip_extension(&self, number: &str) -> bool {
        self.settings
            .sip_extensions
            .iter()
            .any(|e| e.number == number)
    }

    /// Whether a call may be offered to the SIP phones of extension `number`: it has a
    /// SIP account, and call waiting or no call (a leg of one of its phones) already.
    fn sip_offerable(&self, number: &str) -> bool {
        let Some(ext) = self
            .settings
            .sip_extensions
            .iter()
            .find(|e| e.number == number)
        else {
            return false;
        };
        ext.call_waiting || !self.legs.values().any(|l| l.phone && l.number == number)
    }

    /// Places `call` (alerting, not offered yet) to the extension in
    /// `call.callee_number`: rings its FXS port and/or its SIP phones (forking); busy
    /// when it could be offered nowhere.
    fn call_extension(&mut self, now: Instant, call: Call) {
        let number = call.callee_number.clone();
        let caller = call.caller;
        // A local SIP phone's caller number is its authenticated extension.
        let own_sip_call = call.direction == Direction::Internal
            && matches!(caller, Party::Sip(_))
            && call.caller_number == number;
        let key = self.new_call(call);
        if let Some(queue) = self.queue_of(&number) {
            return self.enter_queue(now, key, queue);
        }
        if let Party::Fxs(p) = caller {
            self.set_fxs(p, Fxs::Caller(key));
        }
        let mut offered = false;
        if let Some(target) = self.fxs_port_of(&number) {
            if Party::Fxs(target) != caller && self.offer(now, key, target) {
                offered = true;
            }
        }
        if self.sip_offerable(&number) && !own_sip_call {
            self.offer_sip(
                now,
                key,
                SipTarget::Extension(number.clone()),
                number.clone(),
            );
            offered = true;
        }
        if !offered {
            if let Some(mailbox) = self.deposit_target(key, voicemail::Trigger::Busy) {
                if self.start_deposit(now, key, &mailbox, Disposition::Busy) {
                    return;
                }
            }
            return self.fail_call(now, key, Disposition::Busy, HangupSide::Callee);
        }
        // The extension's mailbox takes unanswered calls sooner than the ring timeout.
        if let Some(t) = self.no_answer_time(&number) {
            if let Some(call) = self.calls.get_mut(&key) {
                call.deadline = Some(now + t);
            }
        }
    }

    /// Offers call `key` to FXS port `target`: rings it if idle, or makes it a waiting
    /// call if the port is talking and has call waiting. False when busy.
    fn offer(&mut self, now: Instant, key: CallKey, target: u8) -> bool {
        let Some(t) = self.fxs.get(&target) else {
            return false;
        };
        let cw = t
            .ext
            .and_then(|e| self.settings.extensions.get(e))
            .is_some_and(|e| e.call_waiting);
        let (caller_number, caller_name) = match self.calls.get(&key) {
            Some(c) => (c.caller_number.clone(), c.caller_name.clone()),
            None => return false,
        };
        let talking = matches!(t.state, Fxs::Caller(_) | Fxs::Callee(_));
        let free = t.state == Fxs::Idle && !t.off_hook;
        if free {
            self.ring(target, &caller_number, &caller_name);
            self.set_fxs(target, Fxs::Ringing(key));
        } else if talking && cw && t.waiting.is_none() && t.held.is_none() {
            self.tone(target, Tone::CallWaiting);
            if let Some(t) = self.fxs.get_mut(&target) {
                t.waiting = Some(key);
            }
        } else {
            return false;
        }
        let ring_timeout = self.settings.ring_timeout;
        if let Some(call) = self.calls.get_mut(&key) {
            call.ringing.push(target);
            if call.last_ring.is_none() {
                call.deadline = Some(now + ring_timeout);
            }
        }
        self.caller_hears_ringback(key);
        self.desk_offer(now, key, Party::Fxs(target));
        true
    }

    /// The caller of `key` learns that the callee is alerted: ringback tone for a
    /// phone, 180 Ringing (once) for a SIP leg.
    fn caller_hears_ringback(&mut self, key: CallKey) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.early_media.is_some() || call.queue.is_some() {
            // The caller hears the far end's early media (a later 180 keeps it), or
            // waits in a queue (music on hold, or a SIP caller's own ringback).
            return;
        }
        match call.caller {
            Party::Fxs(caller) => self.tone(caller, Tone::Ringback),
            Party::Sip(leg) if !call.caller_alerted && !call.caller_connected => {
                call.caller_alerted = true;
                self.outputs.push_back(Output::SipRinging {
                    leg,
                    early_media: false,
                });
            }
            Party::Sip(_) | Party::Fxo(_) => {}
        }
    }

    /// Call `key` failed before anyone answered: the caller gets the tone (or the SIP
    /// status) of `disposition` and the CDR is written.
    fn fail_call(
        &mut self,
        now: Instant,
        key: CallKey,
        disposition: Disposition,
        side: HangupSide,
    ) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        for &r in &call.ringing {
            self.stop_offer(r, key);
        }
        for &leg in &call.ringing_legs {
            self.hangup_leg(leg, EndReason::Normal);
        }
        if let Some(callee) = call.callee {
            self.disconnect(call.caller, callee);
        }
        let (tone, reason) = match disposition {
            Disposition::Unallocated => (Tone::Unobtainable, EndReason::Unallocated),
            Disposition::Congestion => (Tone::Congestion, EndReason::Congestion),
            Disposition::NoAnswer => (Tone::Busy, EndReason::NoAnswer),
            _ => (Tone::Busy, EndReason::Busy),
        };
        // Refused by the dial plan: a SIP phone (and a transferor) hears 403, not
        // 503, so it does not retry elsewhere; an analog phone gets congestion.
        let not_permitted = call.hangup_cause == Some(HangupCause::RouteNotPermitted);
        let reason = if not_permitted {
            EndReason::Forbidden
        } else {
            reason
        };
        match call.caller {
            Party::Fxs(p) => self.lockout(now, p, tone),
            Party::Sip(leg) => self.hangup_leg(leg, reason),
            Party::Fxo(_) => self.release_party(now, call.caller, key, EndReason::Normal),
        }
        let status = if not_permitted {
            403
        } else {
            transfer_failure_status(disposition)
        };
        self.finish_transfer(call.transferor, status);
        self.emit_cdr(now, &call, disposition, side);
        self.queue_call_gone(now, key, call.queue.as_ref());
        self.campaign_call_gone(now, key);
    }

    /// An outside call dialled on FXS `port` (`digits` with the prefix).
    fn call_outside_from_port(&mut self, now: Instant, port: u8, started: Instant, digits: String) {
        let number = self
            .outside_number(&digits)
            .unwrap_or_default()
            .trim_end_matches('#')
            .to_string();
        let call = self.call_from_port(port, started, Direction::Outbound, number);
        self.call_outside(now, call);
    }

    /// Places outside `call` (to `call.callee_number`) on the first route that takes
    /// it: the ways HQ's matching dial route lists, else the SIP trunk while it is
    /// usable, then an FXO line ([`DialRoutes::routes_for`]).
    /// A call whose matching route needs a calling permission its caller lacks is
    /// refused ([`DialRoutes::decide`]; never a less specific route).
    fn call_outside(&mut self, now: Instant, mut call: Call) {
        let number = call.callee_number.clone();
        let caller = call.caller;
        let held = self.caller_permissions(&call);
        let refused = self.dial_routes.decide(&number, self.trunk, &held);
        let routes_left = refused.as_ref().cloned().unwrap_or_default();
        if refused.is_err() {
            call.hangup_cause = Some(HangupCause::RouteNotPermitted);
        }
        let key = self.new_call(call);
        if let Err(refused) = refused {
            tracing::warn!(
                call = self
                    .calls
                    .get(&key)
                    .map(|c| c.id.as_str())
                    .unwrap_or_default(),
                ?caller,
                number,
                route = refused.route,
                permission = refused.permission,
                "outside call refused: the dial route needs a calling permission the caller lacks"
            );
            if let Party::Fxs(p) = caller {
                self.set_fxs(p, Fxs::Caller(key));
            }
            return self.fail_call(now, key, Disposition::Congestion, HangupSide::System);
        }
        if let Party::Fxs(p) = caller {
            self.set_fxs(p, Fxs::Caller(key));
        }
        if let Some(c) = self.calls.get_mut(&key) {
            c.outside = Some(OutsideAttempt {
                number,
                routes_left,
            });
        }
        self.next_route(now, key, false);
    }

    /// Tries the next route of outside call `key`; congestion when none is left.
    fn next_route(&mut self, now: Instant, key: CallKey, fallback: bool) {
        loop {
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            let Some(attempt) = call.outside.as_mut() else {
                return;
            };
            if attempt.routes_left.is_empty() {
                call.outside = None;
                self.fail_call(now, key, Disposition::Congestion, HangupSide::System);
                return;
            }
            let via = attempt.routes_left.remove(0);
            let number = attempt.number.clone();
            match via {
                OutsideVia::SipTrunk if !number.is_empty() => {
                    self.offer_sip(now, key, SipTarget::Trunk(number.clone()), number);
                    return;
                }
                OutsideVia::SipTrunk => {}
                OutsideVia::Fxo => {
                    if self.call_outside_fxo(key, &number, fallback) {
                        return;
                    }
                }
            }
        }
    }

    /// Puts outside call `key` on a free FXO line; false when no line is free or the
    /// number cannot be dialled.
    fn call_outside_fxo(&mut self, key: CallKey, number: &str, fallback: bool) -> bool {
        let line = self.free_fxo_line();
        let dial = Command::fxo_dial(number);
        let (Some(line), Some(dial)) = (line, dial) else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        call.callee = Some(Party::Fxo(line));
        call.phase = CallPhase::Proceeding;
        call.outside = None;
        call.deadline = None;
        call.callee_sip_call_id = None;
        let caller = call.caller;
        let connected = call.caller_connected;
        // A transfer to an outside number is done once the line is dialled: analog
        // lines report no answer the transferor could wait for.
        let transferor = call.transferor.take();
        if let Some(f) = self.fxo.get_mut(&line) {
            f.call = Some(key);
        }
        self.finish_transfer(transferor, 200);
        self.cmd(line, Command::FxoSeize);
        self.cmd(line, dial);
        match caller {
            // Ringback of the trunk attempt stops; the line's own tones follow.
            Party::Fxs(p) if fallback => self.cmd(p, Command::StopTone),
            // Analog lines give no answer supervision a SIP caller could wait for: it
            // is answered now and hears the PSTN's progress tones through the line.
            Party::Sip(leg) if !connected => self.outputs.push_back(Output::SipAnswer { leg }),
            _ => {}
        }
        // The caller hears the PSTN's own progress tones through the line.
        self.connect(caller, Party::Fxo(line));
        self.port_state(line, PortState::Calling);
        true
    }

    /// The first FXO line for outside calls that is free and not faulty.
    fn free_fxo_line(&self) -> Option<u8> {
        self.settings
            .fxo_lines
            .iter()
            .filter(|l| l.outbound)
            .map(|l| l.port)
            .find(|p| {
                self.fxo
                    .get(p)
                    .is_some_and(|f| f.call.is_none() && !f.fault)
            })
    }

    /// `callee` answers call `key` (an FXS port that was ringing or had the call
    /// waiting, or an outgoing SIP leg).
    fn answer(&mut self, now: Instant, key: CallKey, callee: Party) {
        // A phone answering a call it held (a recall) holds it no longer.
        self.hold_clock(now, key, callee, false);
        if self.queue_answer(now, key, callee) {
            return;
        }
        self.campaign_answer(key);
        let callee_number = self.party_number(callee);
        let callee_sip_call_id = match callee {
            Party::Sip(l) => self.legs.get(&l).map(|i| i.sip_call_id.clone()),
            _ => None,
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // A recalled call (held, then re-rung) was answered before: its SIP legs and
        // PSTN line are already up.
        let first_answer = call.answered.is_none();
        call.phase = CallPhase::Connected;
        call.answered = Some(now);
        call.deadline = None;
        call.callee = Some(callee);
        call.outside = None;
        if call.direction == Direction::Inbound && !callee_number.is_empty() {
            call.callee_number = callee_number;
        }
        if callee_sip_call_id.is_some() {
            call.callee_sip_call_id = callee_sip_call_id;
        }
        let others: Vec<u8> = call
            .ringing
            .drain(..)
            .filter(|&p| Party::Fxs(p) != callee)
            .collect();
        let other_legs: Vec<LegId> = call
            .ringing_legs
            .drain(..)
            .filter(|&l| Party::Sip(l) != callee)
            .collect();
        let caller = call.caller;
        let caller_connected = call.caller_connected;
        let transferor = call.transferor.take();
        let early = call.early_media.take().filter(|&l| Party::Sip(l) != callee);
        call.last_ring = None;
        if let Some(l) = early {
            self.disconnect(caller, Party::Sip(l));
        }
        if let Party::Fxs(port) = callee {
            self.cmd(port, Command::StopRing);
        }
        self.finish_transfer(transferor, 200);
        for o in others {
            self.stop_offer(o, key);
        }
        for l in other_legs {
            self.hangup_leg(l, EndReason::Normal);
        }
        match caller {
            Party::Fxs(c) => self.cmd(c, Command::StopTone),
            Party::Fxo(line) if caller_connected => self.port_state(line, PortState::Talking),
            Party::Fxo(line) => {
                self.cmd(line, Command::FxoSeize);
                self.port_state(line, PortState::Talking);
            }
            Party::Sip(leg) if first_answer && !caller_connected && !leg.is_outgoing() => {
                self.outputs.push_back(Output::SipAnswer { leg })
            }
            Party::Sip(_) => {}
        }
        self.connect(caller, callee);
        if let Party::Fxs(port) = callee {
            self.set_fxs(port, Fxs::Callee(key));
        }
        if let Party::Fxs(c) = caller {
            self.port_state(c, PortState::Talking);
        }
        self.desk_answered(now, key, callee);
    }

    /// Stops offering `key` to `port` (ringing or waiting).
    fn stop_offer(&mut self, port: u8, key: CallKey) {
        let Some(p) = self.fxs.get_mut(&port) else {
            return;
        };
        if p.state == Fxs::Ringing(key) {
            self.cmd(port, Command::StopRing);
            self.set_fxs(port, Fxs::Idle);
        } else if p.waiting == Some(key) {
            p.waiting = None;
            self.cmd(port, Command::StopTone);
        }
    }

    fn lockout(&mut self, now: Instant, port: u8, tone: Tone) {
        self.tone(port, tone);
        self.set_fxs(
            port,
            Fxs::Lockout {
                quiet_at: Some(now + LOCKOUT_TONE),
            },
        );
    }

    // ----- FXO -----

    fn fxo_event(&mut self, now: Instant, port: u8, event: &Event) {
        match event {
            Event::RingDetected { caller_id } => self.pstn_ring(now, port, caller_id.as_ref()),
            Event::PolarityReversal => self.pstn_reversal(now, port),
            // In-band DTMF the board loop found on the line (only asked for surveys).
            Event::Digit(d) => {
                if let Some(key) = self.survey_of(Party::Fxo(port)) {
                    self.survey_digit(now, key, *d as char);
                } else if let Some(key) = self.vm_session_of(Party::Fxo(port)) {
                    self.vm_digit(now, key, *d as char);
                }
            }
            Event::Fault(kind) => {
                tracing::warn!(port, ?kind, "FXO line fault: line out of service");
                self.lead_line_fault(now, port);
                if let Some(key) = self.fxo.get(&port).and_then(|f| f.call) {
                    self.end_call(
                        now,
                        key,
                        Some(Party::Fxo(port)),
                        HangupSide::System,
                        EndReason::Congestion,
                    );
                }
                if let Some(f) = self.fxo.get_mut(&port) {
                    f.fault = true;
                }
                self.port_state(port, PortState::Fault);
            }
            Event::SelfTestResult { passed: true, .. } => {
                if let Some(f) = self.fxo.get_mut(&port) {
                    if f.fault {
                        f.fault = false;
                        self.port_state(port, PortState::Idle);
                    }
                }
            }
            _ => {}
        }
    }

    fn pstn_ring(&mut self, now: Instant, port: u8, caller_id: Option<&CallerId>) {
        let Some(f) = self.fxo.get(&port) else {
            return;
        };
        if f.fault {
            return;
        }
        if let Some(key) = f.call {
            // Another ring burst of a call we already know about.
            let mut screen_now = false;
            if let Some(call) = self.calls.get_mut(&key) {
                if call.phase == CallPhase::Alerting {
                    call.last_ring = Some(now);
                    call.deadline = Some(now + RING_ABSENCE);
                    if call.caller_number.is_empty() {
                        if let Some(cid) = caller_id {
                            call.caller_number = cid.number.to_string();
                            call.caller_name = cid.name.to_string();
                        }
                    }
                    // The caller ID came with this burst: name it from the directory.
                    if let Some(name) = self
                        .directory
                        .as_ref()
                        .filter(|_| !call.caller_number.is_empty())
                        .and_then(|d| d.name_of(&call.caller_number))
                        .filter(|n| !n.is_empty())
                    {
                        call.caller_name = name;
                    }
                    screen_now = std::mem::take(&mut call.awaiting_caller_id);
                }
            }
            if screen_now {
                self.screen_pstn(now, key, port, caller_id);
            }
            return;
        }
        let number = caller_id.map(|c| c.number.to_string()).unwrap_or_default();
        let sent = caller_id.map(|c| c.name.to_string()).unwrap_or_default();
        let name = self.outside_caller_name(&number, sent);
        let key = self.new_call(Call {
            deadline: Some(now + RING_ABSENCE),
            last_ring: Some(now),
            ..Call::new(
                Direction::Inbound,
                Party::Fxo(port),
                number,
                name,
                String::new(),
                now,
            )
        });
        if let Some(fx) = self.fxo.get_mut(&port) {
            fx.call = Some(key);
        }
        self.port_state(port, PortState::Ringing);
        if caller_id.is_none() && self.screening_on() {
            // Caller ID comes between the first and second ring on most lines: the
            // caller is screened (and the extensions rung) on the next burst.
            tracing::info!(port, "PSTN call: waiting for caller ID to screen it");
            if let Some(call) = self.calls.get_mut(&key) {
                call.awaiting_caller_id = true;
            }
            return;
        }
        self.screen_pstn(now, key, port, caller_id);
    }

    /// Rings the extensions (or the queue) FXO `port`'s line sends its callers to.
    fn ring_pstn_targets(&mut self, now: Instant, key: CallKey, port: u8) {
        let line = self
            .fxo
            .get(&port)
            .and_then(|f| f.line)
            .and_then(|l| self.settings.fxo_lines.get(l))
            .cloned();
        let targets: Vec<String> = line
            .map(|l| {
                l.inbound
                    .iter()
                    .filter(|n| self.is_extension(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(call) = self.calls.get_mut(&key) {
            call.callee_number = targets.join(",");
        }
        // A line whose inbound list names a queue sends its callers to the first one.
        if let Some((number, queue)) = targets
            .iter()
            .find_map(|n| self.queue_of(n).map(|q| (n.clone(), q)))
        {
            if let Some(call) = self.calls.get_mut(&key) {
                call.callee_number = number;
            }
            return self.enter_queue(now, key, queue);
        }
        for number in targets {
            if let Some(target) = self.fxs_port_of(&number) {
                self.offer(now, key, target);
            }
            if self.sip_offerable(&number) {
                self.offer_sip(now, key, SipTarget::Extension(number.clone()), number);
            }
        }
        if let Some(call) = self.calls.get(&key) {
            if call.ringing.is_empty() && call.ringing_legs.is_empty() {
                // One extension, busy: its mailbox answers when it takes busy calls.
                if let Some(mailbox) = self.deposit_target(key, voicemail::Trigger::Busy) {
                    if self.start_deposit(now, key, &mailbox, Disposition::Busy) {
                        return;
                    }
                }
                tracing::info!(port, "PSTN call: no extension free to ring; not answered");
            }
        }
    }

    fn pstn_reversal(&mut self, now: Instant, port: u8) {
        if self.lead_line_reversal(now, port) {
            return;
        }
        let Some(key) = self.fxo.get(&port).and_then(|f| f.call) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        match (call.direction, call.phase) {
            (Direction::Outbound, CallPhase::Proceeding) => {
                // Answer supervision.
                call.phase = CallPhase::Connected;
                call.answered = Some(now);
                let caller = call.caller;
                self.port_state(port, PortState::Talking);
                if let Party::Fxs(c) = caller {
                    self.port_state(c, PortState::Talking);
                }
            }
            (Direction::Inbound, CallPhase::Alerting) if call.queue.is_some() => {
                // The PSTN caller hung up while waiting in a queue.
                self.end_call(
                    now,
                    key,
                    Some(Party::Fxo(port)),
                    HangupSide::Caller,
                    EndReason::Normal,
                );
            }
            (_, CallPhase::Connected) => {
                // Disconnect supervision: the far end hung up.
                self.end_call(
                    now,
                    key,
                    Some(Party::Fxo(port)),
                    HangupSide::Caller,
                    EndReason::Normal,
                );
            }
            _ => {}
        }
    }

    // ----- calls -----

    /// A call placed from FXS `port`, alerting, not yet offered to anyone (no id yet:
    /// [`CallControl::new_call`] assigns it).
    fn call_from_port(
        &self,
        port: u8,
        started: Instant,
        direction: Direction,
        callee_number: String,
    ) -> Call {
        Call {
            ..Call::new(
                direction,
                Party::Fxs(port),
                self.port_number(port),
                self.port_name(port),
                callee_number,
                started,
            )
        }
    }

    /// The key of the next call: the reserved one of a click-to-call, else a new one.
    fn take_key(&mut self) -> CallKey {
        self.reserved_key.take().unwrap_or_else(|| {
            let key = self.next_call;
            self.next_call += 1;
            key
        })
    }

    fn new_call(&mut self, mut call: Call) -> CallKey {
        let key = self.take_key();
        call.id = format!("{}-{}", self.settings.call_id_prefix, key);
        // The caller (and a transferor waiting for the outcome) now belong to it.
        for leg in [call.caller_leg(), call.transferor].into_iter().flatten() {
            if let Some(info) = self.legs.get_mut(&leg) {
                info.call = key;
            }
        }
        if let Party::Fxo(line) = call.caller {
            if let Some(f) = self.fxo.get_mut(&line) {
                f.call = Some(key);
            }
        }
        self.calls.insert(key, call);
        key
    }

    /// Ends call `key`. `by` is the party that hung up, if one did; `reason` is told
    /// to SIP legs that were never answered (answered legs get a normal BYE).
    fn end_call(
        &mut self,
        now: Instant,
        key: CallKey,
        by: Option<Party>,
        side: HangupSide,
        reason: EndReason,
    ) {
        if self.surveys.contains_key(&key) {
            return self.finish_survey(now, key, by);
        }
        if self.in_voicemail(key) {
            return self.vm_end(now, key, by, Tone::Busy);
        }
        if self.in_echo_test(key) {
            return self.echo_end(now, key, by);
        }
        if let (Some(agent), Some(prompt)) = (by, self.survey_prompt(key, by)) {
            return self.start_survey(now, key, agent, prompt);
        }
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        // Who hung up relative to the call's direction.
        let side = match by {
            Some(p) if call.caller == p => HangupSide::Caller,
            Some(_) => HangupSide::Callee,
            None => side,
        };
        let disposition = match call.phase {
            // A recalled (held, then re-rung) call was answered before.
            _ if call.answered.is_some() => Disposition::Answered,
            // A blocked PSTN caller gave up (it was never answered).
            _ if call.blocked.is_some() => {
                screening::disposition(call.blocked.as_ref().map(|b| b.action))
            }
            CallPhase::Connected => Disposition::Answered,
            CallPhase::Alerting
                if call.ringing.is_empty()
                    && call.ringing_legs.is_empty()
                    && call.last_ring.is_some() =>
            {
                Disposition::Busy
            }
            CallPhase::Alerting | CallPhase::Proceeding => Disposition::NoAnswer,
        };
        for &r in &call.ringing {
            self.stop_offer(r, key);
        }
        let offer_reason = if reason == EndReason::NoAnswer {
            EndReason::NoAnswer
        } else {
            EndReason::Normal
        };
        for &leg in &call.ringing_legs {
            self.hangup_leg(leg, offer_reason);
        }
        if let Some(leg) = call.early_media {
            self.disconnect(call.caller, Party::Sip(leg));
        }
        if let Some(callee) = call.callee {
            self.disconnect(call.caller, callee);
        }
        let leg_reason = if call.phase == CallPhase::Connected {
            EndReason::Normal
        } else {
            reason
        };
        for party in [Some(call.caller), call.callee].into_iter().flatten() {
            // The phone or leg that hung up needs nothing more; a PSTN line always is
            // released.
            if Some(party) == by {
                match party {
                    Party::Fxs(_) => continue,
                    Party::Sip(leg) => {
                        self.legs.remove(&leg);
                        continue;
                    }
                    Party::Fxo(_) => {}
                }
            }
            self.release_party(now, party, key, leg_reason);
        }
        self.finish_transfer(call.transferor, transfer_failure_status(disposition));
        self.emit_cdr(now, &call, disposition, side);
        self.queue_call_gone(now, key, call.queue.as_ref());
        self.campaign_call_gone(now, key);
    }

    /// The call is over for `party` (it did not hang up itself); a SIP leg is ended
    /// with `reason`.
    fn release_party(&mut self, now: Instant, party: Party, key: CallKey, reason: EndReason) {
        match party {
            Party::Sip(leg) => {
                if self.legs.get(&leg).is_some_and(|i| i.call == key) {
                    self.hangup_leg(leg, reason);
                }
            }
            Party::Fxo(line) => {
                if let Some(f) = self.fxo.get_mut(&line) {
                    if f.call == Some(key) {
                        f.call = None;
                        self.cmd(line, Command::FxoRelease);
                        self.port_state(line, PortState::Idle);
                    }
                }
            }
            Party::Fxs(port) => {
                let Some(p) = self.fxs.get_mut(&port) else {
                    return;
                };
                if p.held == Some(key) {
                    p.held = None;
                    return;
                }
                if p.waiting == Some(key) {
                    p.waiting = None;
                    self.cmd(port, Command::StopTone);
                    return;
                }
                match p.state {
                    Fxs::Caller(k) | Fxs::Callee(k) if k == key => {
                        if p.off_hook {
                            self.lockout(now, port, Tone::Busy);
                        } else {
                            self.set_fxs(port, Fxs::Idle);
                        }
                    }
                    Fxs::Ringing(k) if k == key => {
                        self.cmd(port, Command::StopRing);
                        self.set_fxs(port, Fxs::Idle);
                    }
                    _ => {}
                }
            }
        }
    }

    fn call_phase(&self, key: CallKey) -> Option<CallPhase> {
        self.calls.get(&key).map(|c| c.phase)
    }

    /// The other party of `key` as seen from `party`.
    fn peer_of(&self, key: CallKey, party: Party) -> Option<Party> {
        let call = self.calls.get(&key)?;
        if call.caller == party {
            call.callee
        } else if call.callee == Some(party) {
            Some(call.caller)
        } else {
            // Not a party of the call (an offer, or a transferor waiting).
            None
        }
    }

    /// Bridges the media of `a` and `b` (once). Any bridge change of a supervised
    /// call's agent or peer first ends the supervision (see `supervise`).
    fn connect(&mut self, a: Party, b: Party) {
        self.drop_supervisions_of(a, b);
        self.drop_three_ways_of(a, b);
        let (x, y) = (a.media(), b.media());
        if self.bridges.insert((x.min(y), x.max(y))) {
            self.outputs.push_back(Output::Connect(x, y));
        }
    }

    /// Removes the bridge between `a` and `b`, if there is one.
    fn disconnect(&mut self, a: Party, b: Party) {
        self.drop_supervisions_of(a, b);
        self.drop_three_ways_of(a, b);
        let (x, y) = (a.media(), b.media());
        if self.bridges.remove(&(x.min(y), x.max(y))) {
            self.outputs.push_back(Output::Disconnect(x, y));
        }
    }

    /// Ends SIP leg `leg` and forgets it.
    fn hangup_leg(&mut self, leg: LegId, reason: EndReason) {
        if self.legs.remove(&leg).is_some() {
            self.outputs.push_back(Output::SipHangup { leg, reason });
        }
    }

    // ----- CDRs -----

    fn wall(&self, t: Instant) -> i64 {
        let since = t.saturating_duration_since(self.settings.epoch);
        self.settings.wall_clock_ms + i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }

    fn emit_cdr(&mut self, now: Instant, call: &Call, disposition: Disposition, side: HangupSide) {
        self.agent_calls_ended(now, call, disposition);
        self.record_cdr(now, call, disposition, side);
    }

    /// The CDR of `call` (without the agents' screen-pop events).
    fn record_cdr(
        &mut self,
        now: Instant,
        call: &Call,
        disposition: Disposition,
        side: HangupSide,
    ) {
        let cdr = self.cdr_of(now, call, disposition, side);
        if let Some(last) = call.transfer_chain.last() {
            tracing::info!(
                call = cdr.call_id,
                transfer_of = last.call_id,
                transfers = call.transfer_chain.len(),
                "transferred call ended"
            );
        }
        let callee_leg = match call.callee {
            Some(Party::Sip(leg)) => Some(leg),
            _ => None,
        };
        let mut pending = PendingCdr {
            cdr,
            caller_leg: call.caller_leg(),
            callee_leg,
            deadline: now + QUALITY_WAIT,
            journaled: call.journaled,
        };
        for (slot, leg) in [
            (&mut pending.cdr.caller_quality, &mut pending.caller_leg),
            (&mut pending.cdr.callee_quality, &mut pending.callee_leg),
        ] {
            let Some(l) = *leg else {
                continue;
            };
            if let Some(q) = self.leg_quality.remove(&l) {
                // Reported already (the far end hung up).
                *slot = q;
                *leg = None;
            } else if !self.media_legs.contains(&l) {
                // No RTP session: nothing will be reported.
                *leg = None;
            }
        }
        self.pending_cdrs.push(pending);
        self.flush_cdrs(|_| false);
    }

    /// The CDR `call` gets if it ends at `now` as `disposition`, ended by `side`
    /// (without the legs' quality, which comes later).
    fn cdr_of(&self, now: Instant, call: &Call, disposition: Disposition, side: HangupSide) -> Cdr {
        let callee_port = call
            .callee
            .and_then(Party::port)
            .or_else(|| call.ringing.last().copied());
        let caller_port = call.caller.port();
        let callee = call.callee_number.clone();
        Cdr {
            call_id: call.id.clone(),
            direction: call.direction,
            caller: call.caller_number.clone(),
            caller_port,
            callee,
            callee_port,
            started_at_ms: self.wall(call.started),
            answered_at_ms: call.answered.map(|a| self.wall(a)),
            ended_at_ms: self.wall(call.talk_ended.unwrap_or(now)),
            disposition,
            hangup_side: if call.hangup_cause.is_some() {
                HangupSide::System
            } else {
                side
            },
            caller_sip_call_id: call.caller_sip_call_id.clone(),
            callee_sip_call_id: call.callee_sip_call_id.clone(),
            caller_quality: None,
            callee_quality: None,
            transfer_chain: call.transfer_chain.clone(),
            queue: call
                .queue
                .as_ref()
                .map(|q| q.cdr(now))
                .or_else(|| call.overflowed.as_ref().map(|(q, _)| q.clone())),
            blocked: call.blocked.clone(),
            survey_score: call.survey_score,
            hold_ms: Some(call.hold.total(call.talk_ended.unwrap_or(now)))
                .filter(|d| !d.is_zero())
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            queue_overflow: call.overflowed.as_ref().map(|(_, o)| *o),
            interrupted: false,
            hangup_cause: call.hangup_cause,
        }
    }

    /// A leg's quality report: fills the CDRs waiting for it, or is kept for the CDR
    /// of the leg's call while the leg is still known.
    fn leg_quality(&mut self, leg: LegId, quality: Option<CdrLegQuality>) {
        self.media_legs.remove(&leg);
        let mut used = false;
        for p in &mut self.pending_cdrs {
            if p.caller_leg == Some(leg) {
                p.cdr.caller_quality = quality;
                p.caller_leg = None;
                used = true;
            }
            if p.callee_leg == Some(leg) {
                p.cdr.callee_quality = quality;
                p.callee_leg = None;
                used = true;
            }
        }
        if !used && self.legs.contains_key(&leg) {
            self.leg_quality.insert(leg, quality);
        }
        self.flush_cdrs(|_| false);
    }

    /// A leg goes on in another call (transfer): the CDRs of its earlier calls stop
    /// waiting for its quality (reported with the call it ends in).
    fn leg_moved(&mut self, leg: LegId) {
        for p in &mut self.pending_cdrs {
            if p.caller_leg == Some(leg) {
                p.caller_leg = None;
            }
            if p.callee_leg == Some(leg) {
                p.callee_leg = None;
            }
        }
        self.flush_cdrs(|_| false);
    }

    /// Forgets what is known of the media of a leg call control no longer tracks.
    fn forget_leg_media(&mut self, leg: LegId) {
        if !self.legs.contains_key(&leg) {
            self.leg_quality.remove(&leg);
        }
    }

    /// Writes, in order, the pending CDRs that have every report, and those `force`
    /// selects (without the missing reports).
    fn flush_cdrs(&mut self, force: impl Fn(&PendingCdr) -> bool) {
        let mut i = 0;
        while i < self.pending_cdrs.len() {
            let p = &self.pending_cdrs[i];
            let complete = p.caller_leg.is_none() && p.callee_leg.is_none();
            if complete || force(p) {
                let p = self.pending_cdrs.remove(i);
                if !complete {
                    tracing::debug!(
                        call = p.cdr.call_id,
                        "CDR written without the quality of a leg"
                    );
                }
                self.outputs.push_back(Output::Cdr(Box::new(p.cdr)));
            } else {
                i += 1;
            }
        }
    }

    fn failed_cdr(
        &mut self,
        now: Instant,
        port: u8,
        started: Instant,
        digits: String,
        direction: Direction,
        disposition: Disposition,
    ) {
        // A call that never got anywhere: it only needs an id and its record.
        let key = self.take_key();
        let call = Call {
            id: format!("{}-{}", self.settings.call_id_prefix, key),
            ..self.call_from_port(port, started, direction, digits)
        };
        self.emit_cdr(now, &call, disposition, HangupSide::System);
    }

    fn abandoned_cdr(
        &mut self,
        now: Instant,
        port: u8,
        started: Instant,
        digits: String,
        side: HangupSide,
    ) {
        let direction = if self.outside_number(&digits).is_some() {
            Direction::Outbound
        } else {
            Direction::Internal
        };
        self.failed_cdr(
            now,
            port,
            started,
            digits,
            direction,
            Disposition::Abandoned,
        );
        if let Some(Output::Cdr(cdr)) = self.outputs.back_mut() {
            cdr.hangup_side = side;
        }
    }

    // ----- helpers -----

    fn port_number(&self, port: u8) -> String {
        self.fxs
            .get(&port)
            .and_then(|p| p.ext)
            .and_then(|e| self.settings.extensions.get(e))
            .map(|e| e.number.clone())
            .unwrap_or_default()
    }

    fn party_number(&self, party: Party) -> String {
        match party {
            Party::Fxs(p) => self.port_number(p),
            Party::Sip(leg) => self
                .legs
                .get(&leg)
                .map(|i| i.number.clone())
                .unwrap_or_default(),
            Party::Fxo(l) => self
                .fxo
                .get(&l)
                .and_then(|f| f.call)
                .and_then(|k| self.calls.get(&k))
                .filter(|c| c.caller == party)
                .map(|c| c.caller_number.clone())
                .unwrap_or_default(),
        }
    }

    fn port_name(&self, port: u8) -> String {
        self.fxs
            .get(&port)
            .and_then(|x| x.ext)
            .and_then(|e| self.settings.extensions.get(e))
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    fn ring(&mut self, port: u8, number: &str, name: &str) {
        let caller_id = if number.is_empty() {
            Some(CallerId::private())
        } else {
            CallerId::new(number, name)
                .or_else(|_| CallerId::new(number, ""))
                .ok()
        };
        if let Some(caller_id) = caller_id {
            self.cmd(
                port,
                Command::SendCallerId {
                    mode: self.settings.country.caller_id_mode(),
                    caller_id,
                },
            );
        }
        self.cmd(port, Command::Ring(self.settings.country.ring_cadence()));
    }

    fn tone(&mut self, port: u8, tone: Tone) {
        self.cmd(port, Command::PlayTone(self.settings.country.tone(tone)));
    }

    fn cmd(&mut self, port: u8, command: Command) {
        self.outputs.push_back(Output::Command { port, command });
    }

    fn fxs_state(&self, port: u8) -> Option<Fxs> {
        self.fxs.get(&port).map(|p| p.state.clone())
    }

    fn set_fxs(&mut self, port: u8, state: Fxs) {
        let Some(p) = self.fxs.get_mut(&port) else {
            return;
        };
        let before = fxs_port_state(&p.state, &self.calls);
        p.state = state;
        let after = fxs_port_state(&p.state, &self.calls);
        if before != after {
            self.port_state(port, after);
        }
    }

    fn port_state(&mut self, port: u8, state: PortState) {
        self.outputs.push_back(Output::PortState { port, state });
    }
}

fn fxs_port_state(s: &Fxs, calls: &BTreeMap<CallKey, Call>) -> PortState {
    match s {
        Fxs::Idle => PortState::Idle,
        Fxs::Dialing { .. } => PortState::Dialing,
        Fxs::Ringing(_) | Fxs::ClickToCall(_) => PortState::Ringing,
        Fxs::Caller(k) => match calls.get(k).map(|c| c.phase) {
            Some(CallPhase::Connected) => PortState::Talking,
            _ => PortState::Calling,
        },
        Fxs::Callee(_) | Fxs::Supervisor(_) | Fxs::MeetMe => PortState::Talking,
        Fxs::Lockout { .. } => PortState::Lockout,
        Fxs::Fault => PortState::Fault,
    }
}

#[derive(Debug)]
enum PlanMatch {
    Extension,
    /// A meet-me room (index in the settings).
    Room(usize),
    Outside {
        complete: bool,
    },
    Partial,
    None,
}
