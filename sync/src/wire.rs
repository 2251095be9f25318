//! The sync wire protocol, version 1: every type that crosses the WAN between a box and
//! `branch-hq`, with serde.
//!
//! # Transport and identity
//!
//! HTTPS (rustls) with mutual TLS. The box presents its device certificate; HQ takes
//! the box's identity from that certificate (subject CN = box id) and the box's site
//! from its own `boxes` table, never from a request body. A body that names another box
//! ([`UpBatch::box_id`]) is refused. Request and response bodies are JSON; request
//! bodies of [`UP_PATH`] are gzip-compressed (`Content-Encoding: gzip`) and HQ refuses
//! a body that inflates beyond [`MAX_UP_BODY_INFLATED`].
//!
//! # Up: the outbox (box -> HQ)
//!
//! `POST` [`UP_PATH`] with an [`UpBatch`]: consecutive outbox rows of one store
//! incarnation ([`UpBatch::epoch`]; a factory reset starts a new epoch, so its seqs
//! cannot collide with the old ones). HQ validates the whole batch first (a malformed
//! batch is refused whole with an [`ErrorBody`] and nothing is written), upserts each
//! record idempotently by `(box, epoch, seq)`, and answers an [`UpAck`] with the
//! highest contiguous seq it holds for that box and epoch. The box trims its outbox up
//! to [`UpAck::acked_seq`] and nothing beyond, so at-least-once on the wire becomes
//! exactly-once in HQ's tables.
//!
//! # Down: the change feed (HQ -> box)
//!
//! `GET` [`DOWN_PATH`]`?since=REV&wait_ms=MS&limit=N` long-polls the box's site feed
//! for changes after revision `since`. HQ answers a [`DownResponse::Page`] (possibly
//! empty after `wait_ms`), or a [`DownResponse::Snapshot`] when `since` is older than
//! the oldest revision HQ still keeps for the site (or `since=0`). The box applies a
//! page or snapshot in one SQLite transaction and stores the new cursor in the same
//! transaction.
//!
//! # Offline edits and conflicts
//!
//! A change made on the box goes up as an outbox record of kind
//! [`RecordKind::UserChange`] (or role/group) carrying the HQ revision it was based on
//! (`base_revision`, 0 for a row created on the box). HQ applies it when its row's
//! revision still equals `base_revision`, or when every revision of the row since
//! `base_revision` was written by this box's own edits (two edits made before the
//! first one's revision came back down both carry the old base; see
//! `hq::store::decide_edit`). The change then enters the site feed with a new
//! revision, so the box learns the revision through the feed; while an edit of a row
//! is still in the box's outbox the box leaves that row's feed changes alone (HQ's
//! verdict on the edit comes later). Otherwise HQ rejects it: the rejection is listed
//! in [`UpAck::conflicts`] with HQ's current row, which the box takes, writing the
//! conflict to its audit log. Either way the record counts as received (it is
//! acknowledged; it is never re-sent).
//!
//! # Recording files
//!
//! File metadata goes up in the outbox (kind [`RecordKind::Recording`], with the
//! file's sha256 and size) before the file. Which files HQ wants is its policy
//! ([`FilePolicy`], in every [`UpAck`]). The file itself goes in chunks:
//! `GET` [`FILES_PATH`]`/{sha256}` answers a [`FileStatus`] (how many bytes HQ holds),
//! and `PUT` [`FILES_PATH`]`/{sha256}?offset=N` appends one chunk at exactly that
//! offset; HQ verifies the sha256 when the last byte arrives and keeps the file only
//! if it matches.
//!
//! # Versioning
//!
//! [`PROTOCOL_VERSION`] is in every request body and every response; HQ refuses a
//! version it does not speak with [`ErrorCode::UnsupportedVersion`]. New fields of a
//! payload are `#[serde(default)]` so records older firmware wrote still parse. New
//! record kinds are added to version 1 (agent states, dispositions, campaign
//! results and progress, service records, call notes, customers): an HQ that does not
//! know a kind refuses the batch as malformed and the box keeps the rows and retries,
//! so nothing is lost, but HQ must be upgraded before the boxes that send a new kind.
//! New entity kinds (down) need a new protocol version.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Outbox upload: `POST`, body [`UpBatch`] (gzip), answer [`UpAck`].
pub const UP_PATH: &str = "/sync/v1/up";
/// Change feed: `GET ?since=REV&wait_ms=MS&limit=N`, answer [`DownResponse`].
pub const DOWN_PATH: &str = "/sync/v1/down";
/// Recording files: `GET {FILES_PATH}/{sha256}` -> [`FileStatus`];
/// `PUT {FILES_PATH}/{sha256}?offset=N` with a chunk as the body -> [`FileStatus`].
pub const FILES_PATH: &str = "/sync/v1/files";

/// Most records in one [`UpBatch`].
pub const MAX_BATCH_RECORDS: usize = 2000;
/// Most bytes of one [`UpBatch`] as JSON before compression.
pub const MAX_UP_BODY_INFLATED: usize = 4 * 1024 * 1024;
/// Most bytes HQ accepts in one file chunk.
pub const MAX_FILE_CHUNK: usize = 1024 * 1024;
/// Longest long-poll HQ honours; a longer `wait_ms` is clamped to this.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Most changes in one [`DownResponse::Page`]; a larger `limit` is clamped to this.
pub const MAX_PAGE_CHANGES: usize = 1000;

/// A batch of consecutive outbox rows from one box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpBatch {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The sending box; must equal the CN of its client certificate.
    pub box_id: String,
    /// The store incarnation the seqs belong to (random, made when the store is
    /// created; a factory reset makes a new one).
    pub epoch: String,
    /// The box's firmware version, for HQ's box-health view.
    pub firmware_version: String,
    /// Rows still in the box's outbox after this batch (backlog, for box health).
    pub backlog: u64,
    /// Creation time of the oldest row still in the outbox, ms since the Unix epoch.
    pub oldest_pending_ms: Option<i64>,
    /// The rows, in strictly increasing seq order, at most [`MAX_BATCH_RECORDS`].
    /// May be empty (a heartbeat that only reports health).
    pub records: Vec<UpRecord>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpRecord {
    /// Per-box (per-epoch) sequence number, from 1, never reused.
    pub seq: i64,
    /// What the payload is.
    pub kind: RecordKind,
    /// The record's natural key on the box (a CDR's call id, an audit row's id, a
    /// username, ...).
    pub key: String,
    /// When the row was written on the box, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The record itself; its shape depends on [`UpRecord::kind`].
    pub payload: serde_json::Value,
}

/// Kinds of outbox rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A call detail record (one per call leg).
    Cdr,
    /// A row of the box's hash-chained audit log.
    Audit,
    /// A user created, updated or deleted on the box: [`EntityEdit`] of a [`User`].
    UserChange,
    /// A role created, updated or deleted on the box: [`EntityEdit`] of a [`Role`].
    RoleChange,
    /// A group created, updated or deleted on the box: [`EntityEdit`] of a [`Group`].
    GroupChange,
    /// Metadata of a call recording: [`RecordingMeta`].
    Recording,
    /// An agent state transition (call center): [`AgentStateRecord`].
    AgentState,
    /// A post-call survey score (call center).
    Survey,
    /// A call's disposition keyed by the agent in wrap-up: [`DispositionRecord`].
    Disposition,
    /// One attempt of an outbound campaign and its result: [`CampaignResultRecord`].
    CampaignResult,
    /// A campaign's progress (leads by state, attempts by outcome):
    /// [`CampaignProgressRecord`].
    CampaignProgress,
    /// A customer's service record (a call with a known customer):
    /// [`ServiceRecordRecord`].
    ServiceRecord,
    /// A note an agent added to a call: [`CallNoteRecord`].
    CallNote,
    /// A customer created, edited or deleted on the box: [`CustomerRecord`].
    Customer,
}

impl RecordKind {
    /// The name used on the wire and in the box's `outbox.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cdr => "cdr",
            Self::Audit => "audit",
            Self::UserChange => "user_change",
            Self::RoleChange => "role_change",
            Self::GroupChange => "group_change",
            Self::Recording => "recording",
            Self::AgentState => "agent_state",
            Self::Survey => "survey",
            Self::Disposition => "disposition",
            Self::CampaignResult => "campaign_result",
            Self::CampaignProgress => "campaign_progress",
            Self::ServiceRecord => "service_record",
            Self::CallNote => "call_note",
            Self::Customer => "customer",
        }
    }

    /// The kind named `name` (as in the outbox `kind` column), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cdr" => Self::Cdr,
            "audit" => Self::Audit,
            "user_change" => Self::UserChange,
            "role_change" => Self::RoleChange,
            "group_change" => Self::GroupChange,
            "recording" => Self::Recording,
            "agent_state" => Self::AgentState,
            "survey" => Self::Survey,
            "disposition" => Self::Disposition,
            "campaign_result" => Self::CampaignResult,
            "campaign_progress" => Self::CampaignProgress,
            "service_record" => Self::ServiceRecord,
            "call_note" => Self::CallNote,
            "customer" => Self::Customer,
            _ => return None,
        })
    }
}

/// HQ's answer to an [`UpBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpAck {
    /// [`PROTOCOL_VERSION`] of HQ.
    pub version: u16,
    /// The highest seq such that HQ holds every seq from 1 to it for this box and
    /// epoch (0: none). The box may trim its outbox up to here, never beyond.
    pub acked_seq: i64,
    /// Offline edits in this batch that HQ rejected, with HQ's current rows.
    pub conflicts: Vec<Conflict>,
    /// Which recording files HQ wants uploaded.
    pub file_policy: FilePolicy,
}

/// An offline edit HQ rejected because its row changed since the edit's base revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conflict {
    /// The seq of the rejected outbox record.
    pub seq: i64,
    /// What was edited.
    pub entity: EntityKind,
    /// The edited row's key (username, role name, group name).
    pub key: String,
    /// The revision the box's edit was based on.
    pub base_revision: i64,
    /// HQ's current row (`None`: HQ deleted it), which the box takes.
    pub current: Option<Change>,
    /// Why, in words, for the audit log.
    pub reason: String,
}

/// HQ's policy for recording files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FilePolicy {
    /// Upload every recording after its metadata.
    All,
    /// Upload none.
    None,
    /// Upload only these (sha256, lowercase hex), e.g. those an operator asked for.
    OnDemand {
        /// The wanted files.
        wanted: Vec<String>,
    },
}

/// Metadata of one recording, the payload of a [`RecordKind::Recording`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingMeta {
    /// The call leg recorded.
    pub call_id: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
    /// Recording start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Length in ms.
    pub duration_ms: i64,
    /// Container/codec, e.g. `"wav/pcm16/stereo"`.
    pub format: String,
}

/// A call-center agent's state change, the payload of a [`RecordKind::AgentState`]
/// record (the box's `agent_state_log` row). The record key is the agent ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStateRecord {
    /// The agent ID (work number) as it was at the change.
    pub agent_id: String,
    /// The state entered.
    pub state: AgentStateName,
    /// The pause reason code, only with [`AgentStateName::Paused`] (none: paused
    /// without a reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The extension the agent was logged in on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// The box's call id (a [`Cdr::call_id`]) of the call the agent is ringing for or
    /// on, with [`AgentStateName::Ringing`] and [`AgentStateName::OnCall`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The disposition an agent keyed for a call in wrap-up (a customer-type digit), the
/// payload of a [`RecordKind::Disposition`] record (the box's `cdr_dispositions` row);
/// the record key is the call id. Keying again replaces it: HQ keeps the latest by
/// [`DispositionRecord::at_ms`] per call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispositionRecord {
    /// The box's call id (a [`Cdr::call_id`]).
    pub call_id: String,
    /// The agent who keyed it.
    pub agent_id: String,
    /// The keypad digit, 0 to 9.
    pub digit: u8,
    /// The site's customer type of that digit, by name, when it was keyed.
    pub type_name: String,
    /// HQ's key of the contact whose type the box set (the caller's), when the
    /// caller is one of HQ's contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_hq_id: Option<String>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// How a campaign attempt ended ([`CampaignResultRecord::outcome`]), as the box
/// stores it (`lead_attempts.outcome`).
pub const CAMPAIGN_OUTCOMES: [&str; 4] = ["answered", "busy", "no_answer", "failed"];
/// How a lead finished ([`CampaignResultRecord::lead_result`], the box's
/// `leads.result`).
pub const LEAD_RESULTS: [&str; 4] = ["answered", "max_attempts", "blacklisted", "no_number"];
/// A campaign's states ([`CampaignProgressRecord::state`], the box's
/// `campaigns.state`).
pub const CAMPAIGN_STATES: [&str; 4] = ["draft", "running", "paused", "done"];

/// One attempt of an outbound campaign, the payload of a
/// [`RecordKind::CampaignResult`] record (the box's `lead_attempts` row with its
/// campaign and lead); the record key is the attempt id. The box sends the attempt
/// again each time it changes (its outcome when the call ends, the agent's wrap-up
/// with disposition and notes, before or after): HQ keeps the latest per box, epoch
/// and attempt (by seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignResultRecord {
    /// The attempt's id on the box (the record key).
    pub attempt_id: i64,
    /// The campaign's id on the box.
    pub campaign_id: i64,
    /// The campaign's name.
    pub campaign: String,
    /// The lead's id on the box.
    pub lead_id: i64,
    /// The lead's name ("" when the list gave none).
    pub lead_name: String,
    /// The number dialled, as dialled (digits, optional leading `+`).
    pub number: String,
    /// The agent (box username) the attempt was for, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The call's id (a [`Cdr::call_id`]), once the call was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// When the attempt started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When it ended (`None` while the call is up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
    /// How it ended, one of [`CAMPAIGN_OUTCOMES`] (`None` while the call is up; set
    /// exactly when `ended_at_ms` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The disposition digit (0-9) the agent keyed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<u8>,
    /// The agent's notes ("" for none).
    #[serde(default)]
    pub notes: String,
    /// The lead's result when this attempt finished it, one of [`LEAD_RESULTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_result: Option<String>,
}

/// A campaign's progress, the payload of a [`RecordKind::CampaignProgress`] record;
/// the record key is the campaign id. The box sends it when an attempt ends, when a
/// lead is finished without a call (blacklisted, no number) and when the campaign's
/// state changes; HQ keeps the latest per box, epoch and campaign (by seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignProgressRecord {
    /// The campaign's id on the box (the record key).
    pub campaign_id: i64,
    /// The campaign's name.
    pub campaign: String,
    /// Its state, one of [`CAMPAIGN_STATES`].
    pub state: String,
    /// Leads in its list.
    pub leads: i64,
    /// Leads waiting for an attempt.
    pub pending: i64,
    /// Leads being dialled.
    pub dialing: i64,
    /// Finished leads by result ([`LEAD_RESULTS`]).
    pub done: std::collections::BTreeMap<String, i64>,
    /// Attempts by outcome ([`CAMPAIGN_OUTCOMES`], `open` for those in flight).
    pub attempts: std::collections::BTreeMap<String, i64>,
    /// When the box counted, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Which customer a record is about: one of HQ's contacts (by HQ's id) or a customer
/// made on the box (by its id there, which HQ knows from [`RecordKind::Customer`]
/// records of the same box and epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerRef {
    /// HQ's contact id.
    Hq(String),
    /// The box's customer id.
    Local(i64),
}

/// A customer's service record, the payload of a [`RecordKind::ServiceRecord`]
/// record (the box's `service_records` row, written with the call's CDR); the record
/// key is the call id. The disposition the agent keys ([`DispositionRecord`]), the
/// notes ([`CallNoteRecord`]) and the recording ([`RecordingMeta`]) come as records
/// of their own, joined by call id at HQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecordRecord {
    /// The call's id (a [`Cdr::call_id`], the record key).
    pub call_id: String,
    /// The customer.
    pub customer: CustomerRef,
    /// The customer's number on the call.
    pub number: String,
    /// [`CdrDirection::Inbound`] or [`CdrDirection::Outbound`].
    pub direction: CdrDirection,
    /// The call-center agent who took it (queue calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The box user who handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The local extension on the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// When the call started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Talk time in ms (0 when unanswered).
    pub talk_ms: i64,
    /// How the call ended.
    pub outcome: CdrDisposition,
}

/// A note on a call, the payload of a [`RecordKind::CallNote`] record (the box's
/// `call_notes` row); the record key is the call id. Notes only add up: each is a
/// record of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallNoteRecord {
    /// The call's id (the record key).
    pub call_id: String,
    /// The note's id on the box.
    pub note_id: i64,
    /// Who wrote it (a box username).
    pub author: String,
    /// The text (line breaks and tabs allowed).
    pub text: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// A customer made on the box, the payload of a [`RecordKind::Customer`] record;
/// the record key is the box's customer id. Sent whole after every change (create,
/// edit, type keyed in wrap-up, CSV import) and once more with `deleted` when it is
/// deleted; HQ keeps the latest per box, epoch and id (by seq). HQ's own contacts are
/// not sent back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRecord {
    /// The box's customer id (the record key).
    pub id: i64,
    /// Name.
    pub name: String,
    /// Numbers (digits, optional leading `+`), in order.
    pub numbers: Vec<String>,
    /// Customer type: keypad digit and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_digit: Option<u8>,
    /// The type's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Owning agent (box username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Owning group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_group: Option<String>,
    /// Custom field values by field name, as the box's API shows them.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
    /// Who made it (box username).
    pub created_by: String,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change (the deletion, for a deleted one).
    pub updated_at_ms: i64,
    /// The customer was deleted on the box (the rest is the row as it was).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The states of a call-center agent, as named on the wire and in the box's
/// `agent_state_log.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStateName {
    /// Not logged in.
    LoggedOut,
    /// Logged in, waiting for a call.
    Available,
    /// A queue call is ringing the agent's phone.
    Ringing,
    /// On a queue call.
    OnCall,
    /// After-call work.
    WrapUp,
    /// Paused (with or without a reason).
    Paused,
}

impl AgentStateName {
    /// Every state.
    pub const ALL: [AgentStateName; 6] = [
        Self::LoggedOut,
        Self::Available,
        Self::Ringing,
        Self::OnCall,
        Self::WrapUp,
        Self::Paused,
    ];

    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged_out",
            Self::Available => "available",
            Self::Ringing => "ringing",
            Self::OnCall => "on_call",
            Self::WrapUp => "wrap_up",
            Self::Paused => "paused",
        }
    }

    /// The state named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One call detail record, the payload of a [`RecordKind::Cdr`] record: the one
/// definition the box writes (`firmware/src/cdr.rs` re-exports it) and HQ parses and
/// projects. Times are milliseconds since the Unix epoch.
///
/// Fields added later must be `#[serde(default)]` (a box's outbox may hold records
/// written by older firmware) and listed in [`Cdr::FIELDS`] once HQ's projection has
/// columns for them, so that HQ knows its projection holds the whole record (until
/// then HQ keeps such a record's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    /// Unique call id on this box.
    pub call_id: String,
    /// Internal, inbound or outbound.
    pub direction: CdrDirection,
    /// Calling number: an extension, or the PSTN caller's number ("" when withheld).
    pub caller: String,
    /// Analog port of the caller, if any.
    pub caller_port: Option<u8>,
    /// Called number as dialled (extension or outside number).
    pub callee: String,
    /// Analog port that answered or was rung last, if any.
    pub callee_port: Option<u8>,
    /// When the call started (off-hook or ring detected).
    pub started_at_ms: i64,
    /// When it was answered.
    pub answered_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: i64,
    /// How it ended.
    pub disposition: CdrDisposition,
    /// Who ended it.
    pub hangup_side: CdrHangupSide,
    /// SIP Call-ID of the caller's leg, when the caller was a SIP leg (a local SIP phone
    /// or the trunk). Absent in records written before SIP.
    #[serde(default)]
    pub caller_sip_call_id: Option<String>,
    /// SIP Call-ID of the callee's leg (the one that answered, or was tried last).
    #[serde(default)]
    pub callee_sip_call_id: Option<String>,
    /// Call quality of what the box received on the caller's SIP leg (RTP), when the
    /// caller was a SIP leg that carried media. Absent in records written before it,
    /// and left out of the JSON when `None` (so HQs that predate it still hold such a
    /// record in their projection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_quality: Option<CdrLegQuality>,
    /// Call quality of what the box received on the callee's SIP leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_quality: Option<CdrLegQuality>,
    /// The calls this one continues after transfers, oldest first: each hop names the
    /// call that was transferred and who transferred it. Empty (and left out of the
    /// JSON) for a call that was not transferred.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_chain: Vec<CdrTransferHop>,
    /// The call-center queue the call went through, the agent who took it and how
    /// long the caller waited. Absent (and left out of the JSON) for calls that never
    /// entered a queue. HQ projects it into `cdrs.queue`, `agent_id` and
    /// `queue_wait_ms` (HQ schema 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<CdrQueue>,
    /// Why the box's caller screening (blacklist / allowlist) blocked the call, for
    /// a call it blocked. Absent (and left out of the JSON) for every other call, so
    /// HQs that predate it still take the record. HQ projects it into
    /// `cdrs.blocked_mode`, `blocked_action` and `blocked_pattern` (HQ schema 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<CdrBlocked>,
    /// The score (1-5) the caller keyed in the post-call survey of a queue call.
    /// Absent (and left out of the JSON) when no survey was asked or none was keyed.
    /// HQ projects it into `cdrs.survey_score` (HQ schema 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey_score: Option<u8>,
    /// Milliseconds the call spent on hold (some party held it: hook-flash on an analog
    /// phone, a SIP re-INVITE to `sendonly`/`inactive`; overlapping holds count once).
    /// Absent (and left out of the JSON) for a call never held. HQ projects it into
    /// `cdrs.hold_ms` (HQ schema 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<i64>,
    /// Where a queued call went when it left its queue without an agent, by the
    /// queue's overflow rule (full, or waited too long); the queue stays in `queue`
    /// (its `agent` is `None`). Absent (and left out of the JSON) for every other call.
    /// HQ projects it into `cdrs.queue_overflow` (HQ schema 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_overflow: Option<CdrQueueOverflow>,
    /// The box stopped (power cut, crash, `kill -9`) while the call was up: the record
    /// was rebuilt at the next start from the box's journal of live calls, so
    /// `ended_at_ms` is the last moment the box knew the call was up (within a few
    /// seconds of the cut) and `hangup_side` is `system`. Absent (and left out of the
    /// JSON) for every call that ended normally. HQ projects it into
    /// `cdrs.interrupted` (HQ schema 8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Why the box ended the call, when it did so for a reason a person would ask
    /// about (`hangup_side` is then `system`): `media_timeout` when a SIP leg received
    /// no RTP or RTCP for the media inactivity timeout (its far end vanished without a
    /// BYE), `session_expired` when a leg's RFC 4028 session timer ran out,
    /// `route_not_permitted` when the box refused an outside call whose dial route
    /// needs a calling permission the caller lacks. Absent (and left out of the JSON) for every other call. Not yet a column
    /// of HQ's projection (not in [`Cdr::FIELDS`]): HQ keeps the JSON of a record that
    /// carries it, so nothing is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<CdrHangupCause>,
}

/// Why the box itself ended a call, on a [`Cdr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrHangupCause {
    /// A SIP leg of the call received no RTP or RTCP for the media inactivity timeout
    /// (`[media] rtp_timeout_s`, or `rtp_hold_timeout_s` while held): the box sent it
    /// a BYE and released the other party.
    MediaTimeout,
    /// A SIP leg's RFC 4028 session timer expired (the far end did not refresh the
    /// session, or refused the box's refresh): the box sent it a BYE and released
    /// the other party.
    SessionExpired,
    /// An outside call refused because the dial route matching the number needs a
    /// calling permission the caller does not hold (HQ's `dial_route`
    /// `needs_permission`); `disposition` is `congestion`.
    RouteNotPermitted,
}

impl CdrHangupCause {
    /// The name on the wire and in the box's `cdrs.hangup_cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MediaTimeout => "media_timeout",
            Self::SessionExpired => "session_expired",
            Self::RouteNotPermitted => "route_not_permitted",
        }
    }

    /// The cause called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "media_timeout" => Some(Self::MediaTimeout),
            "session_expired" => Some(Self::SessionExpired),
            "route_not_permitted" => Some(Self::RouteNotPermitted),
            _ => None,
        }
    }
}

/// Where an overflowed queue call went, on a [`Cdr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrQueueOverflow {
    /// To a voicemail box (the caller could leave a message).
    Voicemail,
    /// Out to a number (an extension or an outside number).
    Number,
    /// Busy tone / SIP 486.
    Busy,
}

impl CdrQueueOverflow {
    /// The name on the wire and in HQ's `cdrs.queue_overflow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voicemail => "voicemail",
            Self::Number => "number",
            Self::Busy => "busy",
        }
    }

    /// The overflow called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "voicemail" => Some(Self::Voicemail),
            "number" => Some(Self::Number),
            "busy" => Some(Self::Busy),
            _ => None,
        }
    }
}

/// The caller-screening part of a [`Cdr`] of a blocked call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrBlocked {
    /// The list's mode when the call came.
    pub mode: CdrBlockedMode,
    /// What the caller got (the disposition is `busy` for `busy`, `congestion` for
    /// the others).
    pub action: CdrBlockedAction,
    /// The entry that blocked the call, as written (a number, a prefix ending in
    /// `*`, or `anonymous`); `None` when an allowlist lacked the caller.
    pub pattern: Option<String>,
}

/// A caller-screening list's mode, on a [`CdrBlocked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrBlockedMode {
    /// Listed callers are blocked.
    Deny,
    /// Only listed callers get through.
    Allow,
}

impl CdrBlockedMode {
    /// The name on the wire and in HQ's `cdrs.blocked_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }

    /// The mode called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "deny" => Some(Self::Deny),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }
}

/// What a blocked caller got, on a [`CdrBlocked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrBlockedAction {
    /// Busy (SIP 486; an FXO call is not answered).
    Busy,
    /// Congestion (SIP 503; an FXO call is not answered).
    Congestion,
    /// Refused (SIP 403; an FXO call is not answered).
    Reject,
}

impl CdrBlockedAction {
    /// The name on the wire and in HQ's `cdrs.blocked_action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Congestion => "congestion",
            Self::Reject => "reject",
        }
    }

    /// The action called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "busy" => Some(Self::Busy),
            "congestion" => Some(Self::Congestion),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// The call-center part of a [`Cdr`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrQueue {
    /// The queue's name (the last one, after overflow from queue to queue).
    pub queue: String,
    /// The agent ID of the agent who answered; `None`: nobody did (abandoned,
    /// overflowed out).
    pub agent: Option<String>,
    /// Milliseconds the caller waited in the queue (until the agent answered, or
    /// until the caller left the queue).
    pub wait_ms: i64,
}

/// Per-leg call quality on a [`Cdr`]: what the box measured on the RTP it received
/// on that leg (RFC 3550 loss and interarrival jitter, and the E-model MOS estimate of
/// `branchline_media::rtcp::CallQuality`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrLegQuality {
    /// Packets lost, percent (0..=100).
    pub loss_percent: f64,
    /// Interarrival jitter, ms (>= 0).
    pub jitter_ms: f64,
    /// Mean opinion score estimate (1.0..=5.0).
    pub mos: f64,
}

impl CdrLegQuality {
    /// Why these values cannot be a measurement (not finite, or out of range), if so.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        if !(self.loss_percent.is_finite() && (0.0..=100.0).contains(&self.loss_percent)) {
            Some("loss_percent must be within 0..=100")
        } else if !(self.jitter_ms.is_finite() && self.jitter_ms >= 0.0) {
            Some("jitter_ms must be a finite number >= 0")
        } else if !(self.mos.is_finite() && (1.0..=5.0).contains(&self.mos)) {
            Some("mos must be within 1..=5")
        } else {
            None
        }
    }
}

/// One transfer a call went through (see [`Cdr::transfer_chain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrTransferHop {
    /// The box's id of the call that was transferred (its own CDR has this `call_id`).
    pub call_id: String,
    /// The number of the party that transferred it (the phone that sent the REFER or
    /// the INVITE with `Replaces`).
    pub transferred_by: String,
}

impl Cdr {
    /// Every field name of the JSON form. A payload with only these keys is held whole
    /// by HQ's `cdrs` projection, so HQ need not keep the JSON as well.
    pub const FIELDS: [&'static str; 22] = [
        "call_id",
        "direction",
        "caller",
        "caller_port",
        "callee",
        "callee_port",
        "started_at_ms",
        "answered_at_ms",
        "ended_at_ms",
        "disposition",
        "hangup_side",
        "caller_sip_call_id",
        "callee_sip_call_id",
        "caller_quality",
        "callee_quality",
        "transfer_chain",
        "queue",
        "blocked",
        "survey_score",
        "hold_ms",
        "queue_overflow",
        "interrupted",
    ];

    /// Whole call length in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.ended_at_ms - self.started_at_ms
    }

    /// Talk time in milliseconds (0 when unanswered).
    pub fn billable_ms(&self) -> i64 {
        self.answered_at_ms.map_or(0, |a| self.ended_at_ms - a)
    }
}

/// Which way a call went relative to the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrDirection {
    /// Extension to extension.
    Internal,
    /// From the PSTN (FXO) or a trunk to the box.
    Inbound,
    /// From an extension out over the PSTN (FXO) or a trunk.
    Outbound,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrDisposition {
    /// The callee answered.
    Answered,
    /// Rang but nobody answered (caller gave up or ring timeout).
    NoAnswer,
    /// The callee was busy.
    Busy,
    /// The dialled number does not exist.
    Unallocated,
    /// No route or no free line (congestion).
    Congestion,
    /// The caller hung up or timed out before dialling a complete number.
    Abandoned,
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrHangupSide {
    /// The calling party.
    Caller,
    /// The called party.
    Callee,
    /// The box (timeout, shutdown, fault).
    System,
}

impl CdrDirection {
    /// The JSON and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl CdrDisposition {
    /// The JSON and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoAnswer => "no_answer",
            Self::Busy => "busy",
            Self::Unallocated => "unallocated",
            Self::Congestion => "congestion",
            Self::Abandoned => "abandoned",
        }
    }
}

impl CdrHangupSide {
    /// The JSON and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
            Self::System => "system",
        }
    }
}

/// What HQ holds of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStatus {
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Bytes received so far (the offset of the next chunk).
    pub received: u64,
    /// Whether the whole file arrived and its sha256 matched.
    pub complete: bool,
}

/// Query of [`DOWN_PATH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownQuery {
    /// The box's cursor: the last revision it applied (0: never synced).
    pub since: i64,
    /// How long HQ may hold the request open when there is nothing new (clamped to
    /// [`MAX_WAIT_MS`]).
    #[serde(default)]
    pub wait_ms: u64,
    /// Most changes wanted (clamped to [`MAX_PAGE_CHANGES`]).
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    MAX_PAGE_CHANGES
}

/// HQ's answer on [`DOWN_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DownResponse {
    /// Changes after `since`, in revision order.
    Page {
        /// [`PROTOCOL_VERSION`] of HQ.
        version: u16,
        /// The changes, each with its revision, ascending. Empty when nothing changed
        /// within `wait_ms`.
        changes: Vec<Change>,
        /// The cursor to store after applying this page (the last change's revision,
        /// or `since` when empty).
        cursor: i64,
        /// Whether more changes are waiting (ask again at once).
        more: bool,
    },
    /// The site's full state at revision `cursor`: replace everything HQ masters.
    Snapshot {
        /// [`PROTOCOL_VERSION`] of HQ.
        version: u16,
        /// Every live row of the site (upserts only).
        rows: Vec<Change>,
        /// The cursor to store after applying the snapshot.
        cursor: i64,
    },
}

/// One change in a site's feed: an entity upserted or deleted at a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The feed revision of this change (monotonic per HQ, gap-free not promised).
    pub revision: i64,
    /// What changed.
    pub entity: EntityKind,
    /// The row's key within its kind (username, role name, extension number, ...).
    pub key: String,
    /// The new row; `None` deletes it.
    pub row: Option<Entity>,
}

/// Kinds of rows HQ masters and syncs down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// [`User`].
    User,
    /// [`Role`].
    Role,
    /// [`Group`].
    Group,
    /// [`Extension`].
    Extension,
    /// [`Queue`].
    Queue,
    /// [`Contact`].
    Contact,
    /// [`BlacklistEntry`].
    Blacklist,
    /// [`DialRoute`].
    DialRoute,
}

/// A row HQ masters, tagged by its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    /// A user.
    User(User),
    /// A role.
    Role(Role),
    /// A group.
    Group(Group),
    /// An extension.
    Extension(Extension),
    /// A call queue.
    Queue(Queue),
    /// A customer contact.
    Contact(Contact),
    /// A blacklisted number or prefix.
    Blacklist(BlacklistEntry),
    /// An outside-line route.
    DialRoute(DialRoute),
}

impl Entity {
    /// The kind of this row.
    pub fn kind(&self) -> EntityKind {
        match self {
            Self::User(_) => EntityKind::User,
            Self::Role(_) => EntityKind::Role,
            Self::Group(_) => EntityKind::Group,
            Self::Extension(_) => EntityKind::Extension,
            Self::Queue(_) => EntityKind::Queue,
            Self::Contact(_) => EntityKind::Contact,
            Self::Blacklist(_) => EntityKind::Blacklist,
            Self::DialRoute(_) => EntityKind::DialRoute,
        }
    }

    /// The key of this row within its kind.
    pub fn key(&self) -> &str {
        match self {
            Self::User(u) => &u.username,
            Self::Role(r) => &r.name,
            Self::Group(g) => &g.name,
            Self::Extension(e) => &e.number,
            Self::Queue(q) => &q.number,
            Self::Contact(c) => &c.id,
            Self::Blacklist(b) => &b.pattern,
            Self::DialRoute(d) => &d.name,
        }
    }
}

/// A user as HQ masters it. Password and PIN travel as argon2id PHC strings, never
/// in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name (the key).
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// argon2id PHC string of the password.
    pub password_hash: String,
    /// argon2id PHC string of the agent PIN, if any.
    pub pin_hash: Option<String>,
    /// Call-center agent ID, if any.
    pub agent_id: Option<String>,
    /// Extension number, if any.
    pub extension: Option<String>,
    /// Whether the account may log in.
    pub enabled: bool,
    /// Whether the next login must change the password.
    pub must_change_password: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Group memberships.
    pub groups: Vec<GroupMembership>,
}

/// A user's membership of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMembership {
    /// Group name.
    pub group: String,
    /// Whether the user administers the group (supervisor of a team).
    pub admin: bool,
}

/// A role: a named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Role name (the key).
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// Grants, as `(resource, action, scope)` names (see the firmware's RBAC module).
    pub permissions: Vec<Permission>,
}

/// One grant of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// Resource name, e.g. `"users"`.
    pub resource: String,
    /// Action name, e.g. `"edit"`.
    pub action: String,
    /// Scope name: `own`, `group`, `site` or `all`.
    pub scope: String,
}

/// A group of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name (the key).
    pub name: String,
    /// What the group is.
    pub description: String,
}

/// An extension in the site's dial plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Extension number (the key).
    pub number: String,
    /// Display name.
    pub name: String,
    /// FXS port that rings for it, if analog.
    pub port: Option<u8>,
    /// Whether call waiting is on.
    pub call_waiting: bool,
}

/// A call queue (its behaviour is the call center's; the fields here are what HQ
/// masters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Queue number in the dial plan (the key).
    pub number: String,
    /// Display name.
    pub name: String,
    /// Distribution strategy name, e.g. `"longest_idle"`.
    pub strategy: String,
    /// Longest wait in seconds before overflow.
    pub max_wait_s: u32,
    /// Where callers go after `max_wait_s` (a number), if anywhere.
    pub overflow: Option<String>,
    /// Agent usernames that may log in to the queue.
    pub agents: Vec<String>,
}

/// A customer contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// HQ's id for the contact (the key).
    pub id: String,
    /// Name.
    pub name: String,
    /// Phone numbers.
    pub numbers: Vec<String>,
}

/// A blacklisted caller number or prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlacklistEntry {
    /// Number, or prefix ending in `*` (the key).
    pub pattern: String,
    /// Why, for operators.
    pub reason: String,
}

/// An outside-line route in the dial plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialRoute {
    /// Route name (the key).
    pub name: String,
    /// Dialled-number prefix the route matches.
    pub prefix: String,
    /// Trunks in order of preference: `"sip"` or `"fxo"`.
    pub via: Vec<String>,
    /// The calling permission a caller must hold to dial it (e.g. `international`),
    /// if any: a name [`check_route_permission`] accepts. The box refuses a call
    /// whose matching route needs a permission the caller does not hold (it never
    /// falls through to a less specific route).
    pub needs_permission: Option<String>,
}

/// Longest calling-permission name ([`check_route_permission`]).
pub const MAX_ROUTE_PERMISSION_LEN: usize = 32;

/// Checks a calling-permission name (a dial route's `needs_permission`, an entry of a
/// phone's `permissions` in the box's config): 1 to [`MAX_ROUTE_PERMISSION_LEN`]
/// characters, lowercase ASCII letters, digits, `_` and `-`, starting with a letter
/// (`international`, `premium`, `mobile_intl`). HQ's admin API and the box apply the
/// same rule, so a route HQ accepts is one the box can enforce. The reason when it
/// is not one.
pub fn check_route_permission(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_ROUTE_PERMISSION_LEN {
        return Err("a calling permission has 1 to 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("a calling permission starts with a lowercase letter a-z");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("a calling permission has only lowercase letters a-z, digits, _ and -");
    }
    Ok(())
}

/// The payload of a [`RecordKind::UserChange`], [`RecordKind::RoleChange`] or
/// [`RecordKind::GroupChange`] record: an edit made on the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityEdit {
    /// What the edit did.
    pub op: EditOp,
    /// The HQ revision the edited row was based on (0: created on the box).
    pub base_revision: i64,
    /// The row after the edit (for a delete: the row as it was).
    pub row: Entity,
}

/// The operation of an [`EntityEdit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOp {
    /// A new row.
    Create,
    /// A changed row.
    Update,
    /// A removed row.
    Delete,
}

/// The body of every error answer from HQ (with a 4xx/5xx status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// What was wrong, for a person: which record, which field.
    pub message: String,
}

/// Machine-readable reasons of [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The protocol version is not one HQ speaks.
    UnsupportedVersion,
    /// The body is not valid (bad JSON, bad gzip, a record out of order, a payload of
    /// the wrong shape): nothing was applied.
    MalformedBatch,
    /// The body is larger than HQ accepts.
    TooLarge,
    /// The client certificate does not name a box HQ knows, or the body names a
    /// different box.
    UnknownBox,
    /// The box tried to write something that is not its site's.
    Forbidden,
    /// A file chunk at the wrong offset, or a file whose sha256 did not match.
    BadChunk,
    /// HQ could not do it now (database down); retry later.
    Unavailable,
    /// The box was revoked by an operator: every request is refused until it
    /// re-enrolls with a fresh token. Not worth retrying soon.
    Revoked,
    /// A renewal's CSR does not parse, its self-signature does not verify, its key
    /// is not ECDSA P-256, or its CN is not the box's.
    BadCsr,
}

// ---------------------------------------------------------------------------------
// Updates through HQ (additive to protocol version 1: new paths, no field of an
// existing message changes).
// ---------------------------------------------------------------------------------

/// The update offer: `GET`, answer [`UpdateOffer`]. Bundle bytes:
/// `GET {UPDATE_PATH}/{rollout}/bundle` with `Range: bytes=N-` (HQ answers at most
/// [`MAX_BUNDLE_CHUNK`] bytes from `N`, `206 Partial Content`). Outcome:
/// `POST {UPDATE_PATH}/{rollout}/outcome` with an [`UpdateReport`].
pub const UPDATE_PATH: &str = "/sync/v1/update";
/// Most bytes HQ sends in one bundle chunk.
pub const MAX_BUNDLE_CHUNK: usize = 1024 * 1024;

/// HQ's answer to [`UPDATE_PATH`]: the rollout this box should install, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The offered update; `None`: nothing for this box now.
    pub offer: Option<Offer>,
}

/// One offered update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The rollout id (names the bundle and the outcome report).
    pub rollout: String,
    /// The bundle's version, as its manifest says (the box trusts only the manifest it
    /// verifies itself).
    pub version: String,
    /// sha256 of the whole bundle (lowercase hex): checked after the last chunk.
    pub sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Install at once, even outside the maintenance window and with calls up.
    pub forced: bool,
}

/// What a box reports about a rollout (`POST {UPDATE_PATH}/{rollout}/outcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// Where the box stands.
    pub state: OutcomeState,
    /// The version concerned (the running one after a rollback).
    pub version: Option<String>,
    /// Why, for [`OutcomeState::Failed`] and [`OutcomeState::RolledBack`].
    pub reason: Option<String>,
}

/// A box's progress with one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeState {
    /// Fetching the bundle.
    Downloading,
    /// The whole bundle is on the box, sha256 checked; waiting for the window.
    Staged,
    /// Installed into the inactive slot; restarting into it.
    Installed,
    /// The new slot passed its health check and is committed.
    Committed,
    /// The new slot failed its health check; the box runs the previous slot.
    RolledBack,
    /// Refused or failed before the new slot ran (bad signature, wrong board, download
    /// that does not match its sha256, install error).
    Failed,
}

impl OutcomeState {
    /// Whether the box is done with the rollout (HQ offers it no more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OutcomeState::Committed | OutcomeState::RolledBack | OutcomeState::Failed
        )
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeState::Downloading => "downloading",
            OutcomeState::Staged => "staged",
            OutcomeState::Installed => "installed",
            OutcomeState::Committed => "committed",
            OutcomeState::RolledBack => "rolled_back",
            OutcomeState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<OutcomeState> {
        Some(match name {
            "downloading" => OutcomeState::Downloading,
            "staged" => OutcomeState::Staged,
            "installed" => OutcomeState::Installed,
            "committed" => OutcomeState::Committed,
            "rolled_back" => OutcomeState::RolledBack,
            "failed" => OutcomeState::Failed,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------
// Enrollment (additive to protocol version 1: a new path, no field of an existing
// message changes).
// ---------------------------------------------------------------------------------

/// Enrollment: `POST` an [`EnrollRequest`], answer [`EnrollResponse`] (200) or an
/// [`EnrollError`] (4xx: refused, do not retry with the same token; 503: retry
/// later). Served on the sync listener to a box *without* a client certificate (it
/// has none yet): TLS authenticates HQ only, and the box checks HQ's CA against the
/// pin in its token. The token is the authenticator (see `branchline_provisioning`).
pub const ENROLL_PATH: &str = "/sync/v1/enroll";
/// Largest enrollment request body HQ reads.
pub const MAX_ENROLL_BODY: usize = 16 * 1024;

/// What a box sends to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The signed one-time token, text form (`BL1:...`), exactly as provisioned.
    pub token: String,
    /// PKCS#10 certificate signing request (PEM); its subject CN is the box serial and
    /// its key is ECDSA P-256.
    pub csr_pem: String,
}

/// HQ's answer to a good enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The box id HQ knows the box by (the certificate's CN).
    pub box_id: String,
    /// The site the box joined.
    pub site: String,
    /// The device certificate (PEM): clientAuth, CN = `box_id`.
    pub cert_pem: String,
    /// HQ's device CA certificate (PEM): the root the box trusts for HQ from now on.
    pub ca_pem: String,
}

/// Why HQ refused an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollErrorCode {
    /// The body is not an [`EnrollRequest`] HQ understands.
    Malformed,
    /// The token is not one HQ signed (framing, unknown key, bad signature).
    BadToken,
    /// The token has expired.
    Expired,
    /// The token does not name this box's serial.
    WrongSerial,
    /// The token was revoked.
    Revoked,
    /// The token was used already (by another key).
    TokenUsed,
    /// The token's site does not exist at HQ, or the box belongs to another site.
    WrongSite,
    /// The CSR does not parse, its self-signature does not verify, its key is not
    /// ECDSA P-256, or its subject has no usable CN.
    BadCsr,
    /// HQ has no provisioning keys configured: it enrolls nobody.
    NotEnabled,
    /// HQ could not do it now; retry later.
    Unavailable,
}

impl EnrollErrorCode {
    /// Whether retrying later with the same token can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, EnrollErrorCode::Unavailable)
    }
}

/// HQ's refusal of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollError {
    /// Machine-readable reason.
    pub code: EnrollErrorCode,
    /// For people (logged, shown in the box's provisioning state).
    pub message: String,
}

// ---------------------------------------------------------------------------------
// Certificate renewal (additive to protocol version 1: a new path).
// ---------------------------------------------------------------------------------

/// Renewal: `POST` a [`RenewRequest`] over mutual TLS with the box's current (or
/// just renewed) certificate, answer [`RenewResponse`] (200) or an [`ErrorBody`]
/// (403 `revoked` / `unknown_box`, 400 `bad_csr`, 503 `unavailable`). No token: the
/// certificate is the authenticator. HQ keeps accepting the old certificate until the
/// box's first request with the new one.
pub const RENEW_PATH: &str = "/sync/v1/renew";

/// What a box sends to renew its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// PKCS#10 request (PEM) for the new key (ECDSA P-256), subject CN = the box id.
    pub csr_pem: String,
}

/// HQ's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The new device certificate (PEM).
    pub cert_pem: String,
    /// HQ's device CA certificate (PEM).
    pub ca_pem: String,
    /// The new certificate's notAfter, ms since the Unix epoch.
    pub not_after_ms: i64,
}
