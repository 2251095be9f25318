//! Call detail records: one per call, for every call (answered or not), with the SIP
//! Call-IDs of its SIP legs.
//!
//! The record's shape is part of the sync wire protocol, so it is defined once, in
//! `branchline_sync::wire`, and re-exported here under the names the firmware uses:
//! HQ parses and projects exactly what the box writes.

pub use branchline_sync::wire::{
    Cdr, CdrDirection as Direction, CdrDisposition as Disposition, CdrHangupSide as HangupSide,
};

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
