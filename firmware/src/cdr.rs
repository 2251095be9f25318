//! Call detail records: one per call, for every call (answered or not), with the SIP
//! Call-IDs of its SIP legs.

use serde::{Deserialize, Serialize};

/// Which way a call went relative to the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
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
pub enum Disposition {
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
pub enum HangupSide {
    /// The calling party.
    Caller,
    /// The called party.
    Callee,
    /// The box (timeout, shutdown, fault).
    System,
}

/// One call detail record. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    /// Unique call id on this box.
    pub call_id: String,
    /// Internal, inbound or outbound.
    pub direction: Direction,
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
    pub disposition: Disposition,
    /// Who ended it.
    pub hangup_side: HangupSide,
    /// SIP Call-ID of the caller's leg, when the caller was a SIP leg (a local SIP phone
    /// or the trunk). Absent in records written before SIP.
    #[serde(default)]
    pub caller_sip_call_id: Option<String>,
    /// SIP Call-ID of the callee's leg (the one that answered, or was tried last).
    #[serde(default)]
    pub callee_sip_call_id: Option<String>,
}

impl Cdr {
    /// Whole call length in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.ended_at_ms - self.started_at_ms
    }

    /// Talk time in milliseconds (0 when unanswered).
    pub fn billable_ms(&self) -> i64 {
        self.answered_at_ms.map_or(0, |a| self.ended_at_ms - a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_sip_still_parse() {
        // An outbox payload written by firmware without the SIP Call-ID fields.
        let old = r#"{"call_id":"18c-1","direction":"internal","caller":"101",
            "caller_port":1,"callee":"102","callee_port":2,"started_at_ms":1,
            "answered_at_ms":null,"ended_at_ms":5,"disposition":"no_answer",
            "hangup_side":"caller"}"#;
        let cdr: Cdr = serde_json::from_str(old).expect("old payload");
        assert_eq!(cdr.caller_sip_call_id, None);
        assert_eq!(cdr.callee_sip_call_id, None);
        let json = serde_json::to_string(&Cdr {
            caller_sip_call_id: Some("abc@host".into()),
            ..cdr
        })
        .expect("serialize");
        let back: Cdr = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.caller_sip_call_id.as_deref(), Some("abc@host"));
    }
}
