//! Whether a supervisor may join an agent's live call (listen, whisper, barge; see
//! `crate::call`'s `supervise`): the one authorization function
//! ([`crate::rbac::Authorizer::authorize`]) asked for `calls.listen` on a record owned
//! by the agent's user, with the agent's groups. The built-in supervisor role grants it
//! at `group` scope, so a supervisor reaches the agents of the groups they are a group
//! admin of, and nobody else's; `site` (admin) reaches every agent.
//!
//! The supervisor is the user owning the dialling extension (`users.extension`). An
//! extension that no enabled user owns, or that several users own (which one is
//! asking?), is refused; so is an agent ID no user has.

use rusqlite::OptionalExtension;

use super::{load_subject, sql};
use crate::error::Result;
use crate::rbac::{Action, Authorizer, Decision, GroupId, Resource, Target, UserId};
use crate::store::StoreReader;

/// The answer of [`may_supervise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorDecision {
    /// Allowed; the supervisor's username, for the log.
    Allowed {
        /// Who.
        supervisor: String,
    },
    /// Refused, and why in words (for the log).
    Denied {
        /// Why.
        reason: String,
    },
}

impl SupervisorDecision {
    /// Whether it is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, SupervisorDecision::Allowed { .. })
    }
}

/// May the user owning `extension` listen to (whisper to, barge into) the calls of
/// agent `agent_id`, at `now_ms`? See the module docs. Store errors are errors; every
/// other refusal is a [`SupervisorDecision::Denied`].
pub fn may_supervise(
    reader: &StoreReader,
    extension: &str,
    agent_id: &str,
    now_ms: i64,
) -> Result<SupervisorDecision> {
    let (conn, path) = (reader.connection(), reader.path());
    let denied = |reason: String| Ok(SupervisorDecision::Denied { reason });
    let owners: Vec<UserId> = conn
        .prepare_cached("SELECT id FROM users WHERE extension = ?1 AND enabled = 1 ORDER BY id")
        .and_then(|mut s| {
            s.query_map([extension], |r| r.get(0).map(UserId))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read the extension's user"))?;
    let supervisor = match owners.as_slice() {
        [one] => *one,
        [] => return denied(format!("no enabled user owns extension {extension}")),
        _ => {
            return denied(format!(
                "{} users own extension {extension}; it does not say who is asking",
                owners.len()
            ))
        }
    };
    let agent: Option<UserId> = conn
        .query_row(
            "SELECT id FROM users WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0).map(UserId),
        )
        .optional()
        .map_err(sql(path, "read the agent's user"))?;
    let Some(agent) = agent else {
        return denied(format!("no user has agent ID {agent_id}"));
    };
    let groups: Vec<GroupId> = conn
        .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1 ORDER BY group_id")
        .and_then(|mut s| {
            s.query_map([agent.0], |r| r.get(0).map(GroupId))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read the agent's groups"))?;
    let subject = load_subject(reader, supervisor, now_ms)?;
    let authorizer = Authorizer::load(reader)?;
    let target = Target::Owned {
        owner: Some(agent),
        groups,
    };
    Ok(
        match authorizer.authorize(&subject, Resource::Calls, Action::Listen, &target) {
            Decision::Allow { .. } => SupervisorDecision::Allowed {
                supervisor: subject.username,
            },
            Decision::Deny { reason } => SupervisorDecision::Denied {
                reason: reason.to_string(),
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Users: sue (supervisor, admin of group "team"), ann (agent 100 in "team"), bob
    /// (agent 200 in "other"), joe (agent role, admin of "team": admin of the group but
    /// without the grant), ted and tim (both on extension 105), root (admin role).
    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("branchline.db");
        drop(Store::open(&path).expect("open"));
        let db = rusqlite::Connection::open(&path).expect("raw");
        db.execute_batch(
            "INSERT INTO users (id, username, display_name, password_hash, agent_id, extension,
                                enabled, created_at_ms, updated_at_ms) VALUES
                 (1, 'sue', 'Sue', 'x', NULL, '103', 1, 0, 0),
                 (2, 'ann', 'Ann', 'x', '100', '102', 1, 0, 0),
                 (3, 'bob', 'Bob', 'x', '200', '104', 1, 0, 0),
                 (4, 'joe', 'Joe', 'x', NULL, '101', 1, 0, 0),
                 (5, 'ted', 'Ted', 'x', NULL, '105', 1, 0, 0),
                 (6, 'tim', 'Tim', 'x', NULL, '105', 1, 0, 0),
                 (7, 'root', 'Root', 'x', NULL, '106', 1, 0, 0),
                 (8, 'old', 'Old', 'x', NULL, '107', 0, 0, 0);
             INSERT INTO groups (id, name) VALUES (1, 'team'), (2, 'other');
             INSERT INTO group_members (group_id, user_id, is_group_admin) VALUES
                 (1, 1, 1), (1, 2, 0), (2, 3, 0), (1, 4, 1), (1, 8, 1);
             INSERT INTO user_roles (user_id, role_id)
                 SELECT u, r.id FROM roles r, (SELECT 1 AS u UNION SELECT 8) WHERE r.name = 'supervisor';
             INSERT INTO user_roles (user_id, role_id)
                 SELECT u, r.id FROM roles r, (SELECT 2 AS u UNION SELECT 3 UNION SELECT 4)
                 WHERE r.name = 'agent';
             INSERT INTO user_roles (user_id, role_id)
                 SELECT 7, id FROM roles WHERE name = 'admin';",
        )
        .expect("fixture");
        (dir, path)
    }

    fn decide(path: &std::path::Path, extension: &str, agent: &str) -> SupervisorDecision {
        let reader = Store::reader(path).expect("reader");
        may_supervise(&reader, extension, agent, 0).expect("decision")
    }

    #[test]
    fn a_group_admin_supervisor_may_listen_to_their_agents_only() {
        let (_dir, path) = store();
        assert_eq!(
            decide(&path, "103", "100"),
            SupervisorDecision::Allowed {
                supervisor: "sue".into()
            }
        );
        let SupervisorDecision::Denied { reason } = decide(&path, "103", "200") else {
            panic!("sue may not listen to bob");
        };
        assert!(reason.contains("needs site scope"), "{reason}");
        // The admin role reaches everyone.
        assert!(decide(&path, "106", "200").is_allowed());
    }

    #[test]
    fn no_grant_unknown_shared_or_disabled_extensions_and_unknown_agents_are_refused() {
        let (_dir, path) = store();
        for (ext, agent, why) in [
            ("101", "100", "grants calls.listen"),
            ("102", "100", "grants calls.listen"),
            ("199", "100", "no enabled user owns extension 199"),
            ("105", "100", "2 users own extension 105"),
            ("107", "100", "no enabled user owns extension 107"),
            ("103", "300", "no user has agent ID 300"),
        ] {
            match decide(&path, ext, agent) {
                SupervisorDecision::Denied { reason } => {
                    assert!(reason.contains(why), "{ext} {agent}: {reason}")
                }
                d => panic!("{ext} {agent}: {d:?}"),
            }
        }
    }
}
