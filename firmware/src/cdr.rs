//! Call detail records: one per call, for every call (answered or not), with the SIP
//! Call-IDs of its SIP legs, the call quality measured on them (loss, jitter, MOS of
//! the RTP received) and the transfers the call went through.
//!
//! The record's shape is part of the sync wire protocol, so it is defined once, in
//! `branchline_sync::wire`, and re-exported here under the names the firmware uses:
//! HQ parses and projects exactly what the box writes.

pub use branchline_sync::wire::{
    Cdr, CdrBlocked, CdrBlockedAction, CdrBlockedMode, CdrDirection as Direction,
    CdrDisposition as Disposition, CdrHangupCause as HangupCause, CdrHangupSide as HangupSide,
    CdrLegQuality, CdrQueue, CdrQueueOverflow, CdrTransferHop,
};

/// A call that is up, or that ended and whose CDR waits for its legs' quality reports:
/// a row of the store's journal of live calls (`live_calls`, schema 20). After a
/// crash or power cut, start-up stores each row's `cdr` as the call's CDR
/// ([`crate::store::Store::recover_live_calls`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCall {
    /// For a call still up: the CDR it gets if the box stops now (ended now by the
    /// box, `interrupted`). For an ended call: its CDR as it stands.
    pub cdr: Cdr,
    /// The call ended (its CDR is only waiting for quality reports).
    pub ended: bool,
    /// The keys of the call's running recordings (`p1`, `l3`: as in their file
    /// names), filled in by the daemon from its recorder.
    pub recordings: Vec<String>,
}

/// A write to the journal of live calls.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalUpdate {
    /// Add or refresh these calls' rows; other rows stay.
    Upsert(Vec<LiveCall>),
    /// The journal is exactly these calls (rows of calls not listed are dropped).
    Replace(Vec<LiveCall>),
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

    #[test]
    fn quality_and_transfer_chain_are_optional_on_the_wire() {
        // Written by firmware from before call quality and transfer chains.
        let old = r#"{"call_id":"18c-2","direction":"inbound","caller":"5551234",
            "caller_port":null,"callee":"201","callee_port":null,"started_at_ms":1,
            "answered_at_ms":2,"ended_at_ms":5,"disposition":"answered",
            "hangup_side":"callee","caller_sip_call_id":"x@trunk",
            "callee_sip_call_id":null}"#;
        let cdr: Cdr = serde_json::from_str(old).expect("old payload");
        assert_eq!(cdr.caller_quality, None);
        assert_eq!(cdr.callee_quality, None);
        assert!(cdr.transfer_chain.is_empty());
        // Absent values stay out of the JSON: an HQ that predates the fields still
        // holds the record in its projection.
        let json = serde_json::to_value(&cdr).expect("serialize");
        for key in ["caller_quality", "callee_quality", "transfer_chain"] {
            assert!(json.get(key).is_none(), "{key} in {json}");
        }
        let with = Cdr {
            callee_quality: Some(CdrLegQuality {
                loss_percent: 1.5,
                jitter_ms: 7.25,
                mos: 4.2,
            }),
            transfer_chain: vec![CdrTransferHop {
                call_id: "18c-1".into(),
                transferred_by: "201".into(),
            }],
            ..cdr
        };
        let json = serde_json::to_string(&with).expect("serialize");
        let back: Cdr = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, with);
        // Every key the box writes is one HQ's projection has a column for.
        let keys = serde_json::to_value(&with).expect("value");
        for key in keys.as_object().expect("object").keys() {
            assert!(Cdr::FIELDS.contains(&key.as_str()), "{key} not in FIELDS");
        }
    }

    #[test]
    fn impossible_quality_values_are_named() {
        let q = |loss_percent, jitter_ms, mos| CdrLegQuality {
            loss_percent,
            jitter_ms,
            mos,
        };
        assert_eq!(q(0.0, 0.0, 4.4).invalid_reason(), None);
        assert!(q(f64::NAN, 0.0, 4.4)
            .invalid_reason()
            .is_some_and(|r| r.contains("loss_percent")));
        assert!(q(101.0, 0.0, 4.4).invalid_reason().is_some());
        assert!(q(0.0, -1.0, 4.4)
            .invalid_reason()
            .is_some_and(|r| r.contains("jitter_ms")));
        assert!(q(0.0, 0.0, 0.5)
            .invalid_reason()
            .is_some_and(|r| r.contains("mos")));
    }
}
