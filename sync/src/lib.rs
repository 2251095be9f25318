//! Sync between a Branchline box and headquarters (issue 5).
//!
//! # Modules
//!
//! - [`wire`]: the versioned wire types (serde) of the protocol between a box and
//!   `branch-hq`, and the protocol itself in words: outbox up, change feed down,
//!   offline edits and conflicts, recording files.
//! - [`agent`]: the box side's sans-IO core: outbox batching, upload acknowledgement
//!   and trimming, the down cursor, retry/backoff with jitter, conflicts.
//! - [`wan`]: the box's WAN monitor core: HQ and trunk reachability with hysteresis.
//! - `hq` (feature `hq`, on by default): the HQ server `branch-hq`: the `HqStore` trait
//!   on SQLite (embedded default) and PostgreSQL (several instances share one
//!   database), HTTPS with mutual TLS and a device CA, the sync endpoints (idempotent
//!   ingest, long-poll feed with snapshots, resumable files) and the admin API.
#![forbid(unsafe_code)]

pub mod agent;
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
                groups: vec![GroupMembership { group: "team".into(), admin: false }],
            })),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains(r#""kind":"user""#), "{json}");
        let back: Change = serde_json::from_str(&json).unwrap();
        assert_eq!(back, change);
        let unknown = json.replace(r#""enabled":true"#, r#""enabled":true,"extra":1"#);
        assert!(serde_json::from_str::<Change>(&unknown).is_err());
    }
}
