//! Validation of what boxes and operators send, before anything is written.
//!
//! [`validate_batch`] checks a whole [`UpBatch`] against the box that sent it and
//! returns a [`ValidBatch`] whose records carry their typed payloads, or the first
//! problem naming the record (its seq and kind) and the field. [`validate_entity`]
//! checks a row HQ masters (from an operator or from a box's offline edit).
//!
//! A CDR payload is [`crate::wire::Cdr`], the one definition the firmware writes too.
//! The audit shape here mirrors the firmware's `AuditRecord` (`firmware/src/audit.rs`),
//! declared again because this crate must not depend on the firmware.
//!
//! Each [`ValidRecord`] says whether HQ must keep its payload JSON
//! ([`ValidRecord::stored_payload`]): not when a projection table holds every field
//! of it (a CDR, audit row or recording whose keys are all known), so the bulk of
//! what boxes send is stored once; yes for kinds without a projection and for a
//! payload with fields a newer firmware added, so nothing a box sent is lost.

use serde::{Deserialize, Serialize};

use crate::wire::{
    AgentStateName, AgentStateRecord, CallNoteRecord, CampaignProgressRecord, CampaignResultRecord,
    Cdr, CdrDirection, CustomerRecord, CustomerRef, DispositionRecord, EditOp, Entity, EntityEdit,
    RecordKind, RecordingMeta, ServiceRecordRecord, UpBatch, CAMPAIGN_OUTCOMES, CAMPAIGN_STATES,
    LEAD_RESULTS, MAX_BATCH_RECORDS, PROTOCOL_VERSION,
};

/// Longest id of a site or a box.
pub const MAX_ID_LEN: usize = 64;
/// Longest record key, entity key or epoch.
pub const MAX_KEY_LEN: usize = 256;
/// Most transfers one CDR may list in its `transfer_chain`.
pub const MAX_TRANSFER_HOPS: usize = 32;
/// Largest payload of one record, as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Longest free-text field of an entity (names, descriptions).
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest note (a call note, a campaign attempt's notes), in characters, as on the
/// box.
pub const MAX_NOTE_CHARS: usize = 4000;
/// Most digits of a phone number (after an optional leading `+`), as on the box.
pub const MAX_NUMBER_DIGITS: usize = 32;
/// Most numbers of one customer, as on the box.
pub const MAX_CUSTOMER_NUMBERS: usize = 10;
/// Most custom field values of one customer, as on the box.
pub const MAX_CUSTOMER_FIELDS: usize = 32;

/// A row of the box's audit log as the firmware sends it (payload of
/// [`RecordKind::Audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditShape {
    /// 1, 2, 3, ... on the box.
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: String,
    /// What.
    pub action: String,
    /// On what kind of thing.
    pub resource: String,
    /// Which one.
    pub target: String,
    /// `allowed`, `denied`, `ok`, `failed`.
    pub result: String,
    /// Canonical JSON detail.
    pub detail: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl AuditShape {
    /// Every field name of the JSON form (all projected into `audit_rows`).
    pub const FIELDS: [&'static str; 11] = [
        "id",
        "at_ms",
        "actor",
        "source",
        "action",
        "resource",
        "target",
        "result",
        "detail",
        "prev_hash",
        "hash",
    ];
}

/// A record's payload, parsed by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedPayload {
    /// A CDR.
    Cdr(Cdr),
    /// An audit row.
    Audit(AuditShape),
    /// An offline edit of a user, role or group.
    Edit(EntityEdit),
    /// Recording metadata.
    Recording(RecordingMeta),
    /// An agent state change.
    AgentState(AgentStateRecord),
    /// A call's disposition.
    Disposition(DispositionRecord),
    /// A campaign attempt and its result.
    CampaignResult(CampaignResultRecord),
    /// A campaign's progress.
    CampaignProgress(CampaignProgressRecord),
    /// A customer's service record.
    ServiceRecord(ServiceRecordRecord),
    /// A note on a call.
    CallNote(CallNoteRecord),
    /// A customer made on the box.
    Customer(CustomerRecord),
    /// Survey: kept as JSON only (no projection yet).
    Other,
}

/// One validated record.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRecord {
    /// Its seq.
    pub seq: i64,
    /// Its kind.
    pub kind: RecordKind,
    /// Its key.
    pub key: String,
    /// When the box wrote it.
    pub created_at_ms: i64,
    /// The payload as compact JSON (what is stored).
    pub payload_json: String,
    /// The payload, parsed.
    pub typed: TypedPayload,
    /// Whether a projection table holds every field of the payload (so HQ need not
    /// keep the JSON too).
    pub projected_whole: bool,
}

impl ValidRecord {
    /// The payload JSON HQ must keep beside the record's seq: `None` when the
    /// projection holds all of it.
    pub fn stored_payload(&self) -> Option<&str> {
        (!self.projected_whole).then_some(self.payload_json.as_str())
    }
}

/// A batch that passed [`validate_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidBatch {
    /// The store incarnation of the seqs.
    pub epoch: String,
    /// Firmware version for box health.
    pub firmware_version: String,
    /// Backlog after this batch.
    pub backlog: u64,
    /// Oldest pending row's creation time.
    pub oldest_pending_ms: Option<i64>,
    /// The records, seqs strictly increasing.
    pub records: Vec<ValidRecord>,
}

/// Why a batch was refused; each maps to one [`crate::wire::ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch speaks another protocol version.
    #[error("protocol version {got} is not supported (HQ speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version sent.
        got: u16,
    },
    /// The body names another box than the certificate.
    #[error("batch names box {body:?} but the client certificate is box {cert:?}")]
    WrongBox {
        /// `box_id` in the body.
        body: String,
        /// The certificate's box.
        cert: String,
    },
    /// The batch or one record in it is malformed.
    #[error("{0}")]
    Malformed(String),
}

fn malformed(msg: String) -> BatchError {
    BatchError::Malformed(msg)
}

/// Validates a whole batch sent by `cert_box` (the box of the client certificate).
/// Returns the first problem; nothing about the batch may be written on error.
pub fn validate_batch(batch: UpBatch, cert_box: &str) -> Result<ValidBatch, BatchError> {
    if batch.version != PROTOCOL_VERSION {
        return Err(BatchError::UnsupportedVersion { got: batch.version });
    }
    if batch.box_id != cert_box {
        return Err(BatchError::WrongBox {
            body: batch.box_id,
            cert: cert_box.to_owned(),
        });
    }
    check_text("epoch", &batch.epoch, MAX_KEY_LEN).map_err(malformed)?;
    if batch.firmware_version.len() > MAX_KEY_LEN {
        return Err(malformed(format!(
            "firmware_version is longer than {MAX_KEY_LEN} bytes"
        )));
    }
    if batch.records.len() > MAX_BATCH_RECORDS {
        return Err(malformed(format!(
            "{} records, more than the {MAX_BATCH_RECORDS} allowed in one batch",
            batch.records.len()
        )));
    }
    let mut records = Vec::with_capacity(batch.records.len());
    let mut last_seq = 0i64;
    for (index, record) in batch.records.into_iter().enumerate() {
        let at = format!(
            "record {index} (seq {}, kind {})",
            record.seq,
            record.kind.as_str()
        );
        if record.seq <= 0 {
            return Err(malformed(format!("{at}: seq must be greater than 0")));
        }
        if record.seq <= last_seq {
            return Err(malformed(format!(
                "{at}: seqs must be strictly increasing (previous seq {last_seq})"
            )));
        }
        last_seq = record.seq;
        check_text("key", &record.key, MAX_KEY_LEN).map_err(|e| malformed(format!("{at}: {e}")))?;
        if record.created_at_ms < 0 {
            return Err(malformed(format!("{at}: created_at_ms is negative")));
        }
        let payload_json = serde_json::to_string(&record.payload)
            .map_err(|e| malformed(format!("{at}: payload: {e}")))?;
        if payload_json.len() > MAX_PAYLOAD_BYTES {
            return Err(malformed(format!(
                "{at}: payload is {} bytes, more than {MAX_PAYLOAD_BYTES}",
                payload_json.len()
            )));
        }
        let projected_whole = projection_holds_whole(record.kind, &record.payload);
        let typed = typed_payload(record.kind, &record.key, record.payload)
            .map_err(|e| malformed(format!("{at}: {e}")))?;
        records.push(ValidRecord {
            seq: record.seq,
            kind: record.kind,
            key: record.key,
            created_at_ms: record.created_at_ms,
            payload_json,
            typed,
            projected_whole,
        });
    }
    Ok(ValidBatch {
        epoch: batch.epoch,
        firmware_version: batch.firmware_version,
        backlog: batch.backlog,
        oldest_pending_ms: batch.oldest_pending_ms,
        records,
    })
}

/// Whether HQ's projection of `kind` has a column for every key of `payload` (checked
/// before parsing; a payload that then fails to parse is refused anyway).
fn projection_holds_whole(kind: RecordKind, payload: &serde_json::Value) -> bool {
    let fields: &[&str] = match kind {
        RecordKind::Cdr => &Cdr::FIELDS,
        RecordKind::Audit => &AuditShape::FIELDS,
        // These refuse unknown fields: if they parse, they are whole.
        RecordKind::Recording
        | RecordKind::AgentState
        | RecordKind::Disposition
        | RecordKind::CampaignResult
        | RecordKind::CampaignProgress
        | RecordKind::ServiceRecord
        | RecordKind::CallNote
        | RecordKind::Customer => return true,
        _ => return false,
    };
    payload
        .as_object()
        .is_some_and(|o| o.keys().all(|k| fields.contains(&k.as_str())))
}

fn typed_payload(
    kind: RecordKind,
    key: &str,
    payload: serde_json::Value,
) -> Result<TypedPayload, String> {
    match kind {
        RecordKind::Cdr => {
            let cdr: Cdr =
                serde_json::from_value(payload).map_err(|e| format!("not a CDR: {e}"))?;
            if cdr.call_id != key {
                return Err(format!(
                    "CDR call_id {:?} differs from the record key",
                    cdr.call_id
                ));
            }
            if cdr.ended_at_ms < cdr.started_at_ms {
                return Err("CDR ends before it starts".to_owned());
            }
            check_text("caller", &cdr.caller, MAX_KEY_LEN)?;
            check_text_allow_empty("callee", &cdr.callee, MAX_KEY_LEN)?;
            for (field, q) in [
                ("caller_quality", cdr.caller_quality),
                ("callee_quality", cdr.callee_quality),
            ] {
                if let Some(reason) = q.and_then(|q| q.invalid_reason()) {
                    return Err(format!("CDR {field}: {reason}"));
                }
            }
            if cdr.transfer_chain.len() > MAX_TRANSFER_HOPS {
                return Err(format!(
                    "CDR transfer_chain has more than {MAX_TRANSFER_HOPS} hops"
                ));
            }
            for hop in &cdr.transfer_chain {
                check_text("transfer_chain call_id", &hop.call_id, MAX_KEY_LEN)?;
                check_text_allow_empty(
                    "transfer_chain transferred_by",
                    &hop.transferred_by,
                    MAX_KEY_LEN,
                )?;
            }
            if let Some(q) = &cdr.queue {
                check_text("queue", &q.queue, MAX_KEY_LEN)?;
                if let Some(agent) = &q.agent {
                    check_text("queue agent", agent, MAX_KEY_LEN)?;
                }
                if q.wait_ms < 0 {
                    return Err("CDR queue wait_ms is negative".to_owned());
                }
            }
            if let Some(pattern) = cdr.blocked.as_ref().and_then(|b| b.pattern.as_ref()) {
                check_text("blocked pattern", pattern, MAX_KEY_LEN)?;
            }
            if let Some(hold) = cdr.hold_ms {
                if !(0..=cdr.duration_ms()).contains(&hold) {
                    return Err(format!(
                        "CDR hold_ms {hold} is outside 0..={} (the call's length)",
                        cdr.duration_ms()
                    ));
                }
            }
            let unanswered_queue = cdr.queue.as_ref().is_some_and(|q| q.agent.is_none());
            if cdr.queue_overflow.is_some() && !unanswered_queue {
                return Err("CDR queue_overflow needs a queue that no agent answered".to_owned());
            }
            if cdr.interrupted && cdr.hangup_side != crate::wire::CdrHangupSide::System {
                return Err(
                    "CDR interrupted needs hangup_side system (the box ended it by stopping)"
                        .to_owned(),
                );
            }
            Ok(TypedPayload::Cdr(cdr))
        }
        RecordKind::Audit => {
            let row: AuditShape =
                serde_json::from_value(payload).map_err(|e| format!("not an audit row: {e}"))?;
            if row.id.to_string() != key {
                return Err(format!("audit id {} differs from the record key", row.id));
            }
            Ok(TypedPayload::Audit(row))
        }
        RecordKind::UserChange | RecordKind::RoleChange | RecordKind::GroupChange => {
            let edit: EntityEdit =
                serde_json::from_value(payload).map_err(|e| format!("not an entity edit: {e}"))?;
            let matches = matches!(
                (kind, &edit.row),
                (RecordKind::UserChange, Entity::User(_))
                    | (RecordKind::RoleChange, Entity::Role(_))
                    | (RecordKind::GroupChange, Entity::Group(_))
            );
            if !matches {
                return Err(format!(
                    "edit row of kind {:?} in a {} record",
                    edit.row.kind(),
                    kind.as_str()
                ));
            }
            if edit.row.key() != key {
                return Err(format!(
                    "edited row key {:?} differs from the record key",
                    edit.row.key()
                ));
            }
            if edit.base_revision < 0 {
                return Err("base_revision is negative".to_owned());
            }
            if edit.op == EditOp::Create && edit.base_revision != 0 {
                return Err("a create must have base_revision 0".to_owned());
            }
            validate_entity(&edit.row).map_err(|e| e.to_string())?;
            Ok(TypedPayload::Edit(edit))
        }
        RecordKind::Recording => {
            let meta: RecordingMeta = serde_json::from_value(payload)
                .map_err(|e| format!("not recording metadata: {e}"))?;
            if !is_sha256_hex(&meta.sha256) {
                return Err("recording sha256 is not 64 lowercase hex digits".to_owned());
            }
            if meta.duration_ms < 0 {
                return Err("recording duration_ms is negative".to_owned());
            }
            check_text("call_id", &meta.call_id, MAX_KEY_LEN)?;
            Ok(TypedPayload::Recording(meta))
        }
        RecordKind::AgentState => {
            let rec: AgentStateRecord =
                serde_json::from_value(payload).map_err(|e| format!("not an agent state: {e}"))?;
            if rec.agent_id != key {
                return Err(format!(
                    "agent state agent_id {:?} differs from the record key",
                    rec.agent_id
                ));
            }
            check_text("agent_id", &rec.agent_id, MAX_KEY_LEN)?;
            if rec.reason.is_some() && rec.state != AgentStateName::Paused {
                return Err(format!(
                    "agent state reason given with state {}",
                    rec.state.as_str()
                ));
            }
            if let Some(reason) = &rec.reason {
                check_text("reason", reason, MAX_KEY_LEN)?;
            }
            if let Some(extension) = &rec.extension {
                check_text("extension", extension, MAX_KEY_LEN)?;
            }
            let on_a_call = matches!(rec.state, AgentStateName::Ringing | AgentStateName::OnCall);
            match &rec.call_id {
                Some(call) if on_a_call => check_text("call_id", call, MAX_KEY_LEN)?,
                Some(_) => {
                    return Err(format!(
                        "agent state call_id given with state {}",
                        rec.state.as_str()
                    ))
                }
                None => {}
            }
            if rec.at_ms < 0 {
                return Err("agent state at_ms is negative".to_owned());
            }
            Ok(TypedPayload::AgentState(rec))
        }
        RecordKind::Disposition => {
            let rec: DispositionRecord =
                serde_json::from_value(payload).map_err(|e| format!("bad disposition: {e}"))?;
            check_text("call_id", &rec.call_id, MAX_KEY_LEN)?;
            if rec.call_id != key {
                return Err(format!(
                    "disposition call_id {:?} differs from the record key {key:?}",
                    rec.call_id
                ));
            }
            check_text("agent_id", &rec.agent_id, MAX_KEY_LEN)?;
            if rec.digit > 9 {
                return Err(format!("disposition digit {} is not 0-9", rec.digit));
            }
            check_text("type_name", &rec.type_name, MAX_KEY_LEN)?;
            if let Some(hq_id) = &rec.customer_hq_id {
                check_text("customer_hq_id", hq_id, MAX_KEY_LEN)?;
            }
            if rec.at_ms < 0 {
                return Err("disposition at_ms is negative".to_owned());
            }
            Ok(TypedPayload::Disposition(rec))
        }
        RecordKind::CampaignResult => {
            let rec: CampaignResultRecord = serde_json::from_value(payload)
                .map_err(|e| format!("not a campaign result: {e}"))?;
            check_key_id("campaign result attempt_id", rec.attempt_id, key)?;
            check_positive("campaign_id", rec.campaign_id)?;
            check_positive("lead_id", rec.lead_id)?;
            check_text("campaign", &rec.campaign, MAX_KEY_LEN)?;
            check_text_allow_empty("lead_name", &rec.lead_name, MAX_TEXT_LEN)?;
            check_number("number", &rec.number)?;
            if let Some(agent) = &rec.agent {
                check_text("agent", agent, MAX_KEY_LEN)?;
            }
            if let Some(call) = &rec.call_id {
                check_text("call_id", call, MAX_KEY_LEN)?;
            }
            if rec.started_at_ms < 0 {
                return Err("campaign result started_at_ms is negative".to_owned());
            }
            match (&rec.outcome, rec.ended_at_ms) {
                (Some(outcome), Some(ended)) => {
                    one_of("outcome", outcome, &CAMPAIGN_OUTCOMES)?;
                    if ended < rec.started_at_ms {
                        return Err("campaign result ends before it starts".to_owned());
                    }
                }
                (None, None) => {}
                _ => {
                    return Err(
                        "campaign result outcome and ended_at_ms go together (both or neither)"
                            .to_owned(),
                    )
                }
            }
            if let Some(d) = rec.disposition.filter(|d| *d > 9) {
                return Err(format!("campaign result disposition {d} is not 0-9"));
            }
            check_note("notes", &rec.notes, true)?;
            if let Some(result) = &rec.lead_result {
                one_of("lead_result", result, &LEAD_RESULTS)?;
            }
            Ok(TypedPayload::CampaignResult(rec))
        }
        RecordKind::CampaignProgress => {
            let rec: CampaignProgressRecord = serde_json::from_value(payload)
                .map_err(|e| format!("not a campaign progress: {e}"))?;
            check_key_id("campaign progress campaign_id", rec.campaign_id, key)?;
            check_text("campaign", &rec.campaign, MAX_KEY_LEN)?;
            one_of("state", &rec.state, &CAMPAIGN_STATES)?;
            for (field, n) in [
                ("leads", rec.leads),
                ("pending", rec.pending),
                ("dialing", rec.dialing),
                ("at_ms", rec.at_ms),
            ] {
                if n < 0 {
                    return Err(format!("campaign progress {field} is negative"));
                }
            }
            let mut finished = 0i64;
            for (result, n) in &rec.done {
                one_of("done", result, &LEAD_RESULTS)?;
                if *n < 0 {
                    return Err(format!("campaign progress done.{result} is negative"));
                }
                finished = finished.saturating_add(*n);
            }
            for (outcome, n) in &rec.attempts {
                if outcome != "open" {
                    one_of("attempts", outcome, &CAMPAIGN_OUTCOMES)?;
                }
                if *n < 0 {
                    return Err(format!("campaign progress attempts.{outcome} is negative"));
                }
            }
            let counted = rec
                .pending
                .saturating_add(rec.dialing)
                .saturating_add(finished);
            if counted != rec.leads {
                return Err(format!(
                    "campaign progress counts {counted} leads (pending + dialing + done) \
                     but says leads {}",
                    rec.leads
                ));
            }
            Ok(TypedPayload::CampaignProgress(rec))
        }
        RecordKind::ServiceRecord => {
            let rec: ServiceRecordRecord = serde_json::from_value(payload)
                .map_err(|e| format!("not a service record: {e}"))?;
            check_text("call_id", &rec.call_id, MAX_KEY_LEN)?;
            if rec.call_id != key {
                return Err(format!(
                    "service record call_id {:?} differs from the record key {key:?}",
                    rec.call_id
                ));
            }
            check_customer_ref(&rec.customer)?;
            check_number("number", &rec.number)?;
            if rec.direction == CdrDirection::Internal {
                return Err("service record direction must be inbound or outbound".to_owned());
            }
            for (field, v) in [
                ("agent_id", &rec.agent_id),
                ("user", &rec.user),
                ("extension", &rec.extension),
            ] {
                if let Some(v) = v {
                    check_text(field, v, MAX_KEY_LEN)?;
                }
            }
            if rec.started_at_ms < 0 {
                return Err("service record started_at_ms is negative".to_owned());
            }
            if rec.talk_ms < 0 {
                return Err("service record talk_ms is negative".to_owned());
            }
            Ok(TypedPayload::ServiceRecord(rec))
        }
        RecordKind::CallNote => {
            let rec: CallNoteRecord =
                serde_json::from_value(payload).map_err(|e| format!("not a call note: {e}"))?;
            check_text("call_id", &rec.call_id, MAX_KEY_LEN)?;
            if rec.call_id != key {
                return Err(format!(
                    "call note call_id {:?} differs from the record key {key:?}",
                    rec.call_id
                ));
            }
            check_positive("note_id", rec.note_id)?;
            check_text("author", &rec.author, MAX_KEY_LEN)?;
            check_note("text", &rec.text, false)?;
            if rec.at_ms < 0 {
                return Err("call note at_ms is negative".to_owned());
            }
            Ok(TypedPayload::CallNote(rec))
        }
        RecordKind::Customer => {
            let rec: CustomerRecord =
                serde_json::from_value(payload).map_err(|e| format!("not a customer: {e}"))?;
            check_key_id("customer id", rec.id, key)?;
            check_text("name", &rec.name, MAX_TEXT_LEN)?;
            if rec.numbers.len() > MAX_CUSTOMER_NUMBERS {
                return Err(format!(
                    "customer has {} numbers, at most {MAX_CUSTOMER_NUMBERS}",
                    rec.numbers.len()
                ));
            }
            for (i, n) in rec.numbers.iter().enumerate() {
                check_number(&format!("numbers[{i}]"), n)?;
            }
            match (rec.type_digit, &rec.type_name) {
                (Some(d), _) if d > 9 => return Err(format!("customer type_digit {d} is not 0-9")),
                (Some(_), Some(name)) => check_text("type_name", name, MAX_KEY_LEN)?,
                (None, Some(_)) => return Err("customer type_name without type_digit".to_owned()),
                _ => {}
            }
            for (field, v) in [("owner", &rec.owner), ("owner_group", &rec.owner_group)] {
                if let Some(v) = v {
                    check_text(field, v, MAX_KEY_LEN)?;
                }
            }
            if rec.fields.len() > MAX_CUSTOMER_FIELDS {
                return Err(format!(
                    "customer has {} field values, at most {MAX_CUSTOMER_FIELDS}",
                    rec.fields.len()
                ));
            }
            for (name, value) in &rec.fields {
                check_text("field name", name, 32)?;
                if value.is_object() || value.is_null() {
                    return Err(format!(
                        "customer field {name:?}: a value is text, a number or a list"
                    ));
                }
            }
            check_text_allow_empty("created_by", &rec.created_by, MAX_KEY_LEN)?;
            if rec.created_at_ms < 0 || rec.updated_at_ms < 0 {
                return Err("customer created_at_ms / updated_at_ms is negative".to_owned());
            }
            Ok(TypedPayload::Customer(rec))
        }
        RecordKind::Survey => {
            if !payload.is_object() {
                return Err("payload must be a JSON object".to_owned());
            }
            Ok(TypedPayload::Other)
        }
    }
}

/// A numeric id that must be positive and equal the record key.
fn check_key_id(field: &str, id: i64, key: &str) -> Result<(), String> {
    check_positive(field, id)?;
    if id.to_string() != key {
        return Err(format!("{field} {id} differs from the record key {key:?}"));
    }
    Ok(())
}

fn check_positive(field: &str, id: i64) -> Result<(), String> {
    if id <= 0 {
        return Err(format!("{field} must be greater than 0"));
    }
    Ok(())
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} {value:?} is not one of {}",
            allowed.join(", ")
        ))
    }
}

/// A phone number as the box stores it: 1 to [`MAX_NUMBER_DIGITS`] digits with an
/// optional leading `+`.
fn check_number(field: &str, number: &str) -> Result<(), String> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty()
        || digits.len() > MAX_NUMBER_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{field} {number:?} is not a number (1 to {MAX_NUMBER_DIGITS} digits, optional leading +)"
        ));
    }
    Ok(())
}

/// A note: at most [`MAX_NOTE_CHARS`] characters, no control characters but line
/// breaks and tabs.
fn check_note(field: &str, text: &str, allow_empty: bool) -> Result<(), String> {
    if text.is_empty() && !allow_empty {
        return Err(format!("{field} is empty"));
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(format!(
            "{field} is longer than {MAX_NOTE_CHARS} characters"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

fn check_customer_ref(customer: &CustomerRef) -> Result<(), String> {
    match customer {
        CustomerRef::Hq(id) => check_text("customer hq id", id, MAX_KEY_LEN),
        CustomerRef::Local(id) => check_positive("customer local id", *id),
    }
}

/// Whether `s` is a sha256 in lowercase hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    check_text_allow_empty(field, value, max)
}

fn check_text_allow_empty(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// Checks a site or box id: 1 to [`MAX_ID_LEN`] of `A-Z a-z 0-9 . _ -`.
pub fn validate_id(field: &str, id: &str) -> crate::hq::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::hq::Error::invalid(
            field,
            format!("{id:?} must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Longest reason for revoking a box, bytes.
pub const MAX_REVOKE_REASON: usize = 512;

/// Checks the reason an operator gives for revoking a box (admin API and CLI alike):
/// 1 to [`MAX_REVOKE_REASON`] bytes of text without control characters, once trimmed.
/// Returns it trimmed.
pub fn revocation_reason(reason: &str) -> crate::hq::Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > MAX_REVOKE_REASON || reason.chars().any(char::is_control)
    {
        return Err(crate::hq::Error::invalid(
            "reason",
            format!("must be 1 to {MAX_REVOKE_REASON} bytes of text without control characters"),
        ));
    }
    Ok(reason)
}

/// Checks a row HQ masters: keys and names present, bounded and printable, numbers
/// made of digits, enumerated values known, hashes in PHC form.
pub fn validate_entity(entity: &Entity) -> crate::hq::Result<()> {
    let kind = entity_kind_name(entity.kind());
    let f = |field: &str| format!("{kind}.{field}");
    let text = |field: &str, value: &str| {
        check_text_allow_empty(field, value, MAX_TEXT_LEN)
            .map_err(|reason| crate::hq::Error::invalid(f(field), reason))
    };
    let key = entity.key();
    check_text("key", key, MAX_KEY_LEN)
        .map_err(|reason| crate::hq::Error::invalid(f("key"), reason))?;
    let digits = |field: &str, value: &str| {
        if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
            Err(crate::hq::Error::invalid(
                f(field),
                format!("{value:?} must be 1 to 32 digits"),
            ))
        } else {
            Ok(())
        }
    };
    let phc = |field: &str, value: &str| {
        if value.starts_with("$argon2id$") && value.len() <= MAX_TEXT_LEN {
            Ok(())
        } else {
            Err(crate::hq::Error::invalid(
                f(field),
                "must be an argon2id PHC string ($argon2id$...)",
            ))
        }
    };
    match entity {
        Entity::User(u) => {
            text("display_name", &u.display_name)?;
            phc("password_hash", &u.password_hash)?;
            if let Some(pin) = &u.pin_hash {
                phc("pin_hash", pin)?;
            }
            if let Some(agent) = &u.agent_id {
                digits("agent_id", agent)?;
            }
            if let Some(ext) = &u.extension {
                digits("extension", ext)?;
            }
            for role in &u.roles {
                check_text("roles[]", role, MAX_KEY_LEN)
                    .map_err(|r| crate::hq::Error::invalid(f("roles"), r))?;
            }
            for m in &u.groups {
                check_text("groups[].group", &m.group, MAX_KEY_LEN)
                    .map_err(|r| crate::hq::Error::invalid(f("groups"), r))?;
            }
        }
        Entity::Role(r) => {
            text("description", &r.description)?;
            for p in &r.permissions {
                for (field, value) in [("resource", &p.resource), ("action", &p.action)] {
                    check_text(field, value, 64)
                        .map_err(|reason| crate::hq::Error::invalid(f("permissions"), reason))?;
                }
                if !matches!(p.scope.as_str(), "own" | "group" | "site" | "all") {
                    return Err(crate::hq::Error::invalid(
                        f("permissions.scope"),
                        format!("{:?} is not own, group, site or all", p.scope),
                    ));
                }
            }
        }
        Entity::Group(g) => text("description", &g.description)?,
        Entity::Extension(e) => {
            digits("number", &e.number)?;
            text("name", &e.name)?;
        }
        Entity::Queue(q) => {
            digits("number", &q.number)?;
            text("name", &q.name)?;
            const STRATEGIES: [&str; 5] = [
                "ring_all",
                "round_robin",
                "longest_idle",
                "fewest_calls",
                "skill_based",
            ];
            if !STRATEGIES.contains(&q.strategy.as_str()) {
                return Err(crate::hq::Error::invalid(
                    f("strategy"),
                    format!("{:?} is not one of {}", q.strategy, STRATEGIES.join(", ")),
                ));
            }
            if let Some(over) = &q.overflow {
                digits("overflow", over)?;
            }
            for agent in &q.agents {
                check_text("agents[]", agent, MAX_KEY_LEN)
                    .map_err(|r| crate::hq::Error::invalid(f("agents"), r))?;
            }
        }
        Entity::Contact(c) => {
            text("name", &c.name)?;
            for n in &c.numbers {
                let ok = !n.is_empty()
                    && n.len() <= 32
                    && n.bytes()
                        .enumerate()
                        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'+'));
                if !ok {
                    return Err(crate::hq::Error::invalid(
                        f("numbers"),
                        format!("{n:?} is not a phone number (digits, optional leading +)"),
                    ));
                }
            }
        }
        Entity::Blacklist(b) => {
            let body = b.pattern.strip_suffix('*').unwrap_or(&b.pattern);
            let ok = (!body.is_empty() || b.pattern == "*")
                && body.len() <= 32
                && body
                    .bytes()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == b'+'));
            if !ok || b.pattern == "*" {
                return Err(crate::hq::Error::invalid(
                    f("pattern"),
                    format!("{:?} must be a number or a prefix ending in *", b.pattern),
                ));
            }
            text("reason", &b.reason)?;
        }
        Entity::DialRoute(d) => {
            // The box's call control checks the same (a row it refused would stop the
            // site's whole feed): digits with an optional leading +, each way once.
            let digits = d.prefix.strip_prefix('+').unwrap_or(&d.prefix);
            if !digits.bytes().all(|b| b.is_ascii_digit()) || d.prefix.len() > 32 {
                return Err(crate::hq::Error::invalid(
                    f("prefix"),
                    format!(
                        "{:?} must be digits (a leading + allowed), at most 32",
                        d.prefix
                    ),
                ));
            }
            if d.via.is_empty() || d.via.iter().any(|v| v != "sip" && v != "fxo") {
                return Err(crate::hq::Error::invalid(
                    f("via"),
                    "must list one or more of \"sip\", \"fxo\"",
                ));
            }
            if d.via
                .iter()
                .enumerate()
                .any(|(i, v)| d.via[..i].contains(v))
            {
                return Err(crate::hq::Error::invalid(f("via"), "lists a way twice"));
            }
            if let Some(p) = &d.needs_permission {
                // The box's rule (a calling-permission name), so a route HQ accepts is
                // one the box can enforce.
                crate::wire::check_route_permission(p).map_err(|reason| {
                    crate::hq::Error::invalid(f("needs_permission"), format!("{p:?}: {reason}"))
                })?;
            }
        }
    }
    Ok(())
}

/// The stored and URL name of an entity kind.
pub fn entity_kind_name(kind: crate::wire::EntityKind) -> &'static str {
    use crate::wire::EntityKind as K;
    match kind {
        K::User => "user",
        K::Role => "role",
        K::Group => "group",
        K::Extension => "extension",
        K::Queue => "queue",
        K::Contact => "contact",
        K::Blacklist => "blacklist",
        K::DialRoute => "dial_route",
    }
}

/// The entity kind stored or routed as `name`.
pub fn entity_kind_from_name(name: &str) -> Option<crate::wire::EntityKind> {
    use crate::wire::EntityKind as K;
    Some(match name {
        "user" => K::User,
        "role" => K::Role,
        "group" => K::Group,
        "extension" => K::Extension,
        "queue" => K::Queue,
        "contact" => K::Contact,
        "blacklist" => K::Blacklist,
        "dial_route" => K::DialRoute,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{UpRecord, PROTOCOL_VERSION};

    fn batch_with(payload: serde_json::Value) -> UpBatch {
        batch_of(RecordKind::Cdr, "c-1", payload)
    }

    fn batch_of(kind: RecordKind, key: &str, payload: serde_json::Value) -> UpBatch {
        UpBatch {
            version: PROTOCOL_VERSION,
            box_id: "box-1".into(),
            epoch: "e1".into(),
            firmware_version: "0.1.0".into(),
            backlog: 0,
            oldest_pending_ms: None,
            records: vec![UpRecord {
                seq: 1,
                kind,
                key: key.into(),
                created_at_ms: 2,
                payload,
            }],
        }
    }

    fn cdr(queue: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "call_id": "c-1", "direction": "inbound", "caller": "5550100",
            "caller_port": 5, "callee": "7001", "callee_port": 2, "started_at_ms": 1,
            "answered_at_ms": 3, "ended_at_ms": 9, "disposition": "answered",
            "hangup_side": "caller", "caller_sip_call_id": null, "callee_sip_call_id": null,
        });
        if !queue.is_null() {
            v["queue"] = queue;
        }
        v
    }

    #[test]
    fn a_queue_cdr_is_held_whole_by_the_projection() {
        let plain =
            validate_batch(batch_with(cdr(serde_json::Value::Null)), "box-1").expect("plain CDR");
        assert_eq!(plain.records[0].stored_payload(), None);
        let queued = serde_json::json!({ "queue": "sales", "agent": "100", "wait_ms": 4200 });
        let valid = validate_batch(batch_with(cdr(queued)), "box-1").expect("queue CDR");
        assert_eq!(valid.records[0].stored_payload(), None);
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR: {:?}", valid.records[0].typed);
        };
        let q = c.queue.as_ref().expect("queue");
        assert_eq!(
            (q.queue.as_str(), q.agent.as_deref(), q.wait_ms),
            ("sales", Some("100"), 4200)
        );
        // A survey score is projected too (HQ schema 6).
        let mut scored = cdr(serde_json::Value::Null);
        scored["survey_score"] = 4.into();
        let valid = validate_batch(batch_with(scored), "box-1").expect("scored CDR");
        assert_eq!(valid.records[0].stored_payload(), None);
        // Hold time and a queue overflow are projected too (HQ schema 7).
        let mut held = cdr(serde_json::Value::Null);
        held["hold_ms"] = 4.into();
        let valid = validate_batch(batch_with(held), "box-1").expect("held CDR");
        assert_eq!(valid.records[0].stored_payload(), None);
        let mut overflowed =
            cdr(serde_json::json!({ "queue": "sales", "agent": null, "wait_ms": 60000 }));
        overflowed["queue_overflow"] = "voicemail".into();
        let valid = validate_batch(batch_with(overflowed), "box-1").expect("overflowed CDR");
        assert_eq!(valid.records[0].stored_payload(), None);
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR");
        };
        assert_eq!(
            c.queue_overflow,
            Some(crate::wire::CdrQueueOverflow::Voicemail)
        );
        // An interrupted call's mark is projected too (HQ schema 8).
        let mut cut = cdr(serde_json::Value::Null);
        cut["interrupted"] = true.into();
        cut["hangup_side"] = "system".into();
        let valid = validate_batch(batch_with(cut), "box-1").expect("interrupted CDR");
        assert_eq!(valid.records[0].stored_payload(), None);
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR");
        };
        assert!(c.interrupted);
        // A media timeout's cause is typed, and kept in the JSON (not yet a column).
        let mut silent = cdr(serde_json::Value::Null);
        silent["hangup_side"] = "system".into();
        silent["hangup_cause"] = "media_timeout".into();
        let valid = validate_batch(batch_with(silent), "box-1").expect("media timeout CDR");
        assert!(valid.records[0]
            .stored_payload()
            .is_some_and(|p| p.contains("media_timeout")));
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR");
        };
        assert_eq!(
            c.hangup_cause,
            Some(crate::wire::CdrHangupCause::MediaTimeout)
        );
        // So is an expired session timer's; a cause HQ does not know is refused.
        let mut expired = cdr(serde_json::Value::Null);
        expired["hangup_side"] = "system".into();
        expired["hangup_cause"] = "session_expired".into();
        let valid = validate_batch(batch_with(expired), "box-1").expect("session expired CDR");
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR");
        };
        assert_eq!(
            c.hangup_cause,
            Some(crate::wire::CdrHangupCause::SessionExpired)
        );
        let mut unknown = cdr(serde_json::Value::Null);
        unknown["hangup_cause"] = "gremlins".into();
        assert!(validate_batch(batch_with(unknown), "box-1").is_err());
        // A field a newer firmware adds keeps the JSON again.
        let mut newer = cdr(serde_json::Value::Null);
        newer["park_ms"] = 4.into();
        let valid = validate_batch(batch_with(newer), "box-1").expect("newer CDR");
        assert!(valid.records[0].stored_payload().is_some());
    }

    #[test]
    fn bad_hold_time_and_overflow_are_refused() {
        let answered = serde_json::json!({ "queue": "sales", "agent": "100", "wait_ms": 1 });
        let unanswered = serde_json::json!({ "queue": "sales", "agent": null, "wait_ms": 1 });
        for (queue, field, value, words) in [
            (
                serde_json::Value::Null,
                "hold_ms",
                serde_json::json!(-1),
                "outside",
            ),
            // The call lasts 8 ms (1..9).
            (
                serde_json::Value::Null,
                "hold_ms",
                serde_json::json!(9),
                "outside",
            ),
            (
                serde_json::Value::Null,
                "queue_overflow",
                serde_json::json!("busy"),
                "needs a queue",
            ),
            (
                answered,
                "queue_overflow",
                serde_json::json!("number"),
                "needs a queue",
            ),
            (
                unanswered,
                "queue_overflow",
                serde_json::json!("fax"),
                "unknown variant",
            ),
            // Only the box ends a call by stopping (the helper's CDR says "caller").
            (
                serde_json::Value::Null,
                "interrupted",
                serde_json::json!(true),
                "needs hangup_side system",
            ),
            (
                serde_json::Value::Null,
                "interrupted",
                serde_json::json!("yes"),
                "expected a boolean",
            ),
        ] {
            let mut v = cdr(queue);
            v[field] = value.clone();
            let e = validate_batch(batch_with(v), "box-1").expect_err("refused");
            assert!(format!("{e:?}").contains(words), "{field}={value}: {e:?}");
        }
    }

    #[test]
    fn agent_states_are_typed_and_held_whole() {
        let ok = [
            serde_json::json!({ "agent_id": "100", "state": "available", "extension": "201",
                                "at_ms": 5 }),
            serde_json::json!({ "agent_id": "100", "state": "paused", "reason": "lunch",
                                "at_ms": 5 }),
            serde_json::json!({ "agent_id": "100", "state": "paused", "at_ms": 5 }),
            serde_json::json!({ "agent_id": "100", "state": "on_call", "call_id": "1a-7",
                                "extension": "201", "at_ms": 5 }),
            serde_json::json!({ "agent_id": "100", "state": "logged_out", "at_ms": 0 }),
        ];
        for payload in ok {
            let valid = validate_batch(
                batch_of(RecordKind::AgentState, "100", payload.clone()),
                "box-1",
            )
            .unwrap_or_else(|e| panic!("{payload}: {e:?}"));
            assert_eq!(valid.records[0].stored_payload(), None, "{payload}");
            let TypedPayload::AgentState(rec) = &valid.records[0].typed else {
                panic!("{payload}: {:?}", valid.records[0].typed);
            };
            assert_eq!(serde_json::to_value(rec).expect("json"), payload);
        }
    }

    #[test]
    fn dispositions_are_typed_and_bad_ones_refused_naming_the_problem() {
        let good = serde_json::json!({ "call_id": "1a-7", "agent_id": "100", "digit": 3,
                                       "type_name": "interested", "customer_hq_id": "c-1",
                                       "at_ms": 5 });
        let valid = validate_batch(
            batch_of(RecordKind::Disposition, "1a-7", good.clone()),
            "box-1",
        )
        .expect("valid");
        assert_eq!(valid.records[0].stored_payload(), None);
        let TypedPayload::Disposition(rec) = &valid.records[0].typed else {
            panic!("{:?}", valid.records[0].typed);
        };
        assert_eq!(serde_json::to_value(rec).expect("json"), good);
        let with = |field: &str, value: serde_json::Value| {
            let mut p = good.clone();
            p[field] = value;
            p
        };
        for (key, payload, want) in [
            ("1a-8", good.clone(), "differs from the record key"),
            ("1a-7", with("digit", 10.into()), "digit 10 is not 0-9"),
            ("1a-7", with("digit", (-1).into()), "bad disposition"),
            ("1a-7", with("type_name", "".into()), "type_name is empty"),
            ("1a-7", with("agent_id", "".into()), "agent_id is empty"),
            ("1a-7", with("at_ms", (-5).into()), "at_ms is negative"),
            ("1a-7", with("mood", "x".into()), "unknown field"),
        ] {
            let err = validate_batch(
                batch_of(RecordKind::Disposition, key, payload.clone()),
                "box-1",
            )
            .expect_err("refused");
            let BatchError::Malformed(text) = &err else {
                panic!("{payload}: {err:?}");
            };
            assert!(text.contains(want), "{payload}: {text}");
        }
    }

    #[test]
    fn bad_agent_states_are_refused_naming_the_problem() {
        for (key, payload, want) in [
            (
                "101",
                serde_json::json!({ "agent_id": "100", "state": "available", "at_ms": 5 }),
                "differs from the record key",
            ),
            (
                "100",
                serde_json::json!({ "agent_id": "100", "state": "dancing", "at_ms": 5 }),
                "not an agent state",
            ),
            (
                "100",
                serde_json::json!({ "agent_id": "100", "state": "available",
                                        "reason": "lunch", "at_ms": 5 }),
                "reason given with state available",
            ),
            (
                "100",
                serde_json::json!({ "agent_id": "100", "state": "wrap_up",
                                        "call_id": "1a-7", "at_ms": 5 }),
                "call_id given with state wrap_up",
            ),
            (
                "100",
                serde_json::json!({ "agent_id": "100", "state": "available", "at_ms": -1 }),
                "at_ms is negative",
            ),
            (
                "100",
                serde_json::json!({ "agent_id": "100", "state": "available", "at_ms": 5,
                                        "mood": "happy" }),
                "unknown field",
            ),
            (
                "",
                serde_json::json!({ "agent_id": "", "state": "available", "at_ms": 5 }),
                "key is empty",
            ),
        ] {
            let err = validate_batch(
                batch_of(RecordKind::AgentState, key, payload.clone()),
                "box-1",
            )
            .expect_err("refused");
            let BatchError::Malformed(text) = &err else {
                panic!("{payload}: {err:?}");
            };
            assert!(text.contains(want), "{payload}: {text}");
        }
    }

    #[test]
    fn a_cdr_with_bad_queue_fields_is_refused() {
        for bad in [
            serde_json::json!({ "queue": "sales", "agent": null, "wait_ms": -1 }),
            serde_json::json!({ "queue": "", "agent": null, "wait_ms": 0 }),
            serde_json::json!({ "queue": "sales", "agent": "100", "wait_ms": 0, "x": 1 }),
        ] {
            let err = validate_batch(batch_with(cdr(bad.clone())), "box-1").expect_err("refused");
            assert!(matches!(err, BatchError::Malformed(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn a_blocked_cdr_is_projected_and_bad_blocked_fields_are_refused() {
        let blocked = |b: serde_json::Value| {
            let mut v = cdr(serde_json::Value::Null);
            v["disposition"] = "busy".into();
            v["answered_at_ms"] = serde_json::Value::Null;
            v["blocked"] = b;
            v
        };
        let ok = serde_json::json!({ "mode": "deny", "action": "reject", "pattern": "0900*" });
        let valid = validate_batch(batch_with(blocked(ok)), "box-1").expect("blocked CDR");
        // HQ schema 6 projects it: no JSON kept.
        assert_eq!(valid.records[0].stored_payload(), None);
        let TypedPayload::Cdr(c) = &valid.records[0].typed else {
            panic!("not a CDR");
        };
        let b = c.blocked.as_ref().expect("blocked");
        assert_eq!(b.pattern.as_deref(), Some("0900*"));
        let allow = serde_json::json!({ "mode": "allow", "action": "busy", "pattern": null });
        validate_batch(batch_with(blocked(allow)), "box-1").expect("allowlist block");
        for bad in [
            serde_json::json!({ "mode": "block", "action": "busy", "pattern": null }),
            serde_json::json!({ "mode": "deny", "action": "drop", "pattern": null }),
            serde_json::json!({ "mode": "deny", "action": "busy", "pattern": "" }),
            serde_json::json!({ "mode": "deny", "action": "busy", "pattern": "1\u{7}" }),
            serde_json::json!({ "mode": "deny", "action": "busy", "pattern": null, "x": 1 }),
        ] {
            let err =
                validate_batch(batch_with(blocked(bad.clone())), "box-1").expect_err("refused");
            assert!(matches!(err, BatchError::Malformed(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn dial_routes_are_checked_as_the_box_checks_them() {
        let route = |prefix: &str, via: &[&str]| {
            Entity::DialRoute(crate::wire::DialRoute {
                name: "r".to_owned(),
                prefix: prefix.to_owned(),
                via: via.iter().map(|v| (*v).to_owned()).collect(),
                needs_permission: None,
            })
        };
        let needing = |permission: &str| {
            let Entity::DialRoute(mut d) = route("00", &["sip"]) else {
                unreachable!("a dial route")
            };
            d.needs_permission = Some(permission.to_owned());
            Entity::DialRoute(d)
        };
        for ok in [
            route("", &["sip"]),
            route("0", &["fxo", "sip"]),
            route("+49", &["fxo"]),
            needing("international"),
            needing("mobile_intl-2"),
            needing(&"p".repeat(32)),
        ] {
            validate_entity(&ok).expect("valid");
        }
        for bad in [
            "",
            "International",
            "9intl",
            "intl calls",
            "calls.view:site",
            &"p".repeat(33),
        ] {
            let e = validate_entity(&needing(bad)).expect_err(bad).to_string();
            assert!(e.contains("needs_permission"), "{bad:?}: {e}");
        }
        for (bad, field) in [
            (route("0+1", &["sip"]), "prefix"),
            (route("9x", &["sip"]), "prefix"),
            (route(&"1".repeat(33), &["sip"]), "prefix"),
            (route("0", &[]), "via"),
            (route("0", &["isdn"]), "via"),
            (route("0", &["sip", "sip"]), "via"),
        ] {
            let e = validate_entity(&bad).expect_err("refused").to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
