//! Sync between a Branchline box and headquarters (issue 5).
//!
//! # Modules
//!
//! - [`wire`]: the versioned wire types (serde) of the protocol between a box and
//!   `branch-hq`, and the protocol itself in words: outbox up, change feed down,
//!   offline edits and conflicts, recording files.
//! - [`agent`]: the box side's sans-IO cores, driven by the firmware's sync task:
//!   [`agent::Uploader`] (outbox batches bounded by count and bytes, one in flight,
//!   trim only on HQ's contiguous acknowledgement, retries, conflicts),
//!   [`agent::Downloader`] (the change-feed cursor, long-poll queries, checked pages
//!   and snapshots applied then confirmed), seeded full-jitter [`agent::Backoff`],
//!   [`agent::SyncStatus`], and the gzip body codec HQ shares
//!   ([`agent::decode_batch`]), and [`agent::FileUploader`] (recording files in
//!   resumable chunks by HQ's policy, with a bandwidth cap).
//! - [`alt_names`]: which subjectAltNames (private LAN addresses, names made of the
//!   serial) a device certificate may carry; the box asks by it and HQ checks by it.
//! - [`wan`]: the box's WAN monitor core [`wan::WanMonitor`]: HQ and trunk
//!   reachability from probe results with hysteresis, Online/Degraded/Offline, and
//!   whether outside calls may use the SIP trunk.
//! - `hq` (feature `hq`, on by default): the HQ server `branch-hq`: the `HqStore` trait
//!   on SQLite (embedded default) and PostgreSQL (several instances share one
//!   database), HTTPS with mutual TLS and a device CA, the sync endpoints (idempotent
//!   ingest, long-poll feed with snapshots, resumable files) and the admin API.
#![forbid(unsafe_code)]

pub mod agent;
pub mod alt_names;
#[cfg(feature = "hq")]
pub mod hq;
pub mod wan;
pub mod wire;

#[cfg(test)]
mod wire_tests {
    use super::wire::*;

    #[test]
    fn entity_round_trips_with_its_kind_tag() {
        let change = Change {
            revision: 7,
            entity: EntityKind::User,
            key: "alice".into(),
            row: Some(Entity::User(User {
                username: "alice".into(),
                display_name: "Alice".into(),
                password_hash: "$argon2id$x".into(),
                pin_hash: None,
                agent_id: Some("101".into()),
                extension: Some("201".into()),
                enabled: true,
                must_change_password: false,
                roles: vec!["agent".into()],
                groups: vec![GroupMembership {
                    group: "team".into(),
                    admin: false,
                }],
            })),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains(r#""kind":"user""#), "{json}");
        let back: Change = serde_json::from_str(&json).unwrap();
        assert_eq!(back, change);
        let unknown = json.replace(r#""enabled":true"#, r#""enabled":true,"extra":1"#);
        assert!(serde_json::from_str::<Change>(&unknown).is_err());
    }

    /// Every record kind survives its name and back, and an unknown name is none.
    #[test]
    fn record_kinds_round_trip_by_name() {
        let kinds = [
            RecordKind::Cdr,
            RecordKind::Audit,
            RecordKind::UserChange,
            RecordKind::RoleChange,
            RecordKind::GroupChange,
            RecordKind::Recording,
            RecordKind::AgentState,
            RecordKind::Survey,
            RecordKind::Disposition,
            RecordKind::CampaignResult,
            RecordKind::CampaignProgress,
            RecordKind::ServiceRecord,
            RecordKind::CallNote,
            RecordKind::Customer,
        ];
        for kind in kinds {
            assert_eq!(RecordKind::from_name(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<RecordKind>(&json).unwrap(), kind);
        }
        assert_eq!(RecordKind::from_name("campaign"), None);
        assert!(serde_json::from_str::<RecordKind>("\"campaign\"").is_err());
    }

    fn round_trip<T>(value: &T) -> serde_json::Value
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_value(value).unwrap();
        let back: T = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(&back, value);
        json
    }

    /// Issue 10's records: full and minimal forms round-trip, optional fields are
    /// left out when empty, and an unknown field is refused.
    #[test]
    fn call_center_records_round_trip_and_refuse_unknown_fields() {
        let mut result = CampaignResultRecord {
            attempt_id: 7,
            campaign_id: 2,
            campaign: "spring".into(),
            lead_id: 40,
            lead_name: "Ada".into(),
            number: "+4930123456".into(),
            agent: Some("ana".into()),
            call_id: Some("c-9".into()),
            started_at_ms: 1_000,
            ended_at_ms: Some(9_000),
            outcome: Some("answered".into()),
            disposition: Some(3),
            notes: "call back in May".into(),
            lead_result: Some("answered".into()),
        };
        round_trip(&result);
        result.agent = None;
        result.call_id = None;
        result.ended_at_ms = None;
        result.outcome = None;
        result.disposition = None;
        result.lead_result = None;
        let json = round_trip(&result);
        for absent in ["agent", "call_id", "ended_at_ms", "outcome", "disposition"] {
            assert!(json.get(absent).is_none(), "{absent} in {json}");
        }
        let progress = CampaignProgressRecord {
            campaign_id: 2,
            campaign: "spring".into(),
            state: "running".into(),
            leads: 10,
            pending: 6,
            dialing: 1,
            done: [("answered".to_owned(), 3)].into(),
            attempts: [("answered".to_owned(), 3), ("busy".to_owned(), 2)].into(),
            at_ms: 5,
        };
        round_trip(&progress);
        let service = ServiceRecordRecord {
            call_id: "c-9".into(),
            customer: CustomerRef::Local(12),
            number: "+4930123456".into(),
            direction: CdrDirection::Outbound,
            agent_id: Some("101".into()),
            user: Some("ana".into()),
            extension: Some("201".into()),
            started_at_ms: 1_000,
            talk_ms: 60_000,
            outcome: CdrDisposition::Answered,
        };
        let json = round_trip(&service);
        assert_eq!(json["customer"], serde_json::json!({ "local": 12 }));
        let hq = ServiceRecordRecord {
            customer: CustomerRef::Hq("c-1".into()),
            ..service.clone()
        };
        assert_eq!(
            round_trip(&hq)["customer"],
            serde_json::json!({ "hq": "c-1" })
        );
        round_trip(&CallNoteRecord {
            call_id: "c-9".into(),
            note_id: 4,
            author: "ana".into(),
            text: "line 1\nline 2".into(),
            at_ms: 2,
        });
        let mut customer = CustomerRecord {
            id: 12,
            name: "Ada Lovelace".into(),
            numbers: vec!["+4930123456".into(), "0301234".into()],
            type_digit: Some(2),
            type_name: Some("vip".into()),
            owner: Some("ana".into()),
            owner_group: Some("sales".into()),
            fields: [("tier".to_owned(), serde_json::json!("gold"))].into(),
            created_by: "ana".into(),
            created_at_ms: 1,
            updated_at_ms: 2,
            deleted: false,
        };
        let json = round_trip(&customer);
        assert!(json.get("deleted").is_none(), "{json}");
        customer.deleted = true;
        assert_eq!(round_trip(&customer)["deleted"], true);
        for (value, field) in [
            (serde_json::to_value(&result).unwrap(), "mood"),
            (serde_json::to_value(&progress).unwrap(), "mood"),
            (serde_json::to_value(&service).unwrap(), "mood"),
            (serde_json::to_value(&customer).unwrap(), "mood"),
        ] {
            let mut v = value;
            v[field] = 1.into();
            let text = v.to_string();
            assert!(
                serde_json::from_str::<CampaignResultRecord>(&text).is_err()
                    && serde_json::from_str::<CampaignProgressRecord>(&text).is_err()
                    && serde_json::from_str::<ServiceRecordRecord>(&text).is_err()
                    && serde_json::from_str::<CustomerRecord>(&text).is_err(),
                "{text}"
            );
        }
    }
}
