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
//! - [`wan`]: the box's WAN monitor core [`wan::WanMonitor`]: HQ and trunk
//!   reachability from probe results with hysteresis, Online/Degraded/Offline, and
//!   whether outside calls may use the SIP trunk.
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
}
