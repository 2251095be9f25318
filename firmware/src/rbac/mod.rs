//! Roles and permissions, and the one authorization function every entry point uses.
//!
//! A role is a set of [`Permission`]s `(resource, action, scope)`. Scopes are ordered
//! `own < group < site < all`; a grant at a wider scope implies the narrower ones. The
//! built-in roles are data (`firmware/roles/builtin.toml`, see [`builtin`]); custom
//! roles are rows made at runtime through [`crate::accounts`].
//!
//! [`Authorizer::authorize`] is a pure function over in-memory data: deny by default,
//! and every denial carries a [`DenyReason`] in words, for the audit log and the
//! person who was refused. Each role is precompiled into a [`PermissionSet`], an array
//! holding the widest granted scope per `(resource, action)`, so a check is a hash
//! lookup per role of the subject plus an array index (see `benches/authz.rs`).
//!
//! # Scope resolution
//!
//! The record is described by a [`Target`]:
//!
//! - [`Target::Site`]: a record with no owner (a queue, the system config, the sync
//!   state). Needs scope `site` (or `all`).
//! - [`Target::Owned`]: a record owned by a user (a CDR's agent, a voicemail box) and
//!   the groups that owner belongs to. Needs
//!   - `own` when the subject is the owner;
//!   - `group` when one of the record's groups is a group the subject is a **group
//!     admin** of (`group_members.is_group_admin`). Plain membership of the same group
//!     does not count: a supervisor is the admin of their team's group, and agents who
//!     share a group do not see each other's calls. (Decision for issue 4: it keeps a
//!     group-scoped grant from leaking sideways between colleagues.)
//!   - `site` otherwise (any record on this box). `all` is the same as `site` on a box;
//!     it exists for HQ, where it spans sites.
//!
//! Disabled and locked users are denied everything, whatever their roles.
//!
//! # Cache invalidation
//!
//! Every change to `roles` or `role_permissions` bumps `box_state.rbac_generation` in
//! the same transaction. An [`Authorizer`] remembers the generation it was loaded at;
//! compare it with [`crate::store::StoreReader::rbac_generation`] (one cheap query)
//! and [`Authorizer::load`] again when they differ.

pub mod builtin;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidValue, Result};
use crate::store::StoreReader;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Row id of a user (`users.id`).
    UserId
);
id_type!(
    /// Row id of a group (`groups.id`).
    GroupId
);
id_type!(
    /// Row id of a role (`roles.id`).
    RoleId
);

macro_rules! text_enum {
    (
        $(#[$doc:meta])* $name:ident, $what:literal {
            $($(#[$vdoc:meta])* $variant:ident = $text:literal,)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name stored in the database and used in the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Position in [`Self::ALL`].
            fn index(self) -> usize {
                self as usize
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(InvalidValue {
                        what: $what,
                        value: s.to_owned(),
                        reason: concat!("not a known ", $what),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_enum!(
    /// What a permission is about.
    Resource, "resource" {
        /// User accounts.
        Users = "users",
        /// Roles and their permissions.
        Roles = "roles",
        /// User groups and their members.
        Groups = "groups",
        /// Extensions.
        Extensions = "extensions",
        /// Call queues.
        Queues = "queues",
        /// Call-center agents (state, pause, log out; listen/whisper/barge via `operate`).
        Agents = "agents",
        /// Calls and their CDRs.
        Calls = "calls",
        /// Call recordings.
        Recordings = "recordings",
        /// Voicemail.
        Voicemail = "voicemail",
        /// Reports.
        Reports = "reports",
        /// Contacts (address book).
        Contacts = "contacts",
        /// The caller blacklist.
        Blacklist = "blacklist",
        /// The box's configuration.
        SystemConfig = "system_config",
        /// Sync with HQ.
        Sync = "sync",
        /// Provisioning and enrollment.
        Provisioning = "provisioning",
        /// Diagnostics (port tests, traces, captures, logs).
        Diagnostics = "diagnostics",
        /// The audit log.
        Audit = "audit",
        /// Customers' phone numbers: `numbers.view` shows them unmasked.
        Numbers = "numbers",
        /// Outbound campaigns and their lead lists (`operate`: start / pause, assign
        /// leads, take one's next leads and dial them).
        Campaigns = "campaigns",
    }
);

text_enum!(
    /// What is done to a resource.
    Action, "action" {
        /// Read.
        View = "view",
        /// Create.
        Add = "add",
        /// Change.
        Edit = "edit",
        /// Remove.
        Delete = "delete",
        /// Bulk import.
        Import = "import",
        /// Bulk export (takes data off the box).
        Export = "export",
        /// Download a file (recording, capture, log).
        Download = "download",
        /// Listen to audio.
        Listen = "listen",
        /// Read the audit trail of a resource.
        Audit = "audit",
        /// Operate: listen/whisper/barge, pause/log out agents, run tests, force sync.
        Operate = "operate",
        /// Enable or disable.
        Enable = "enable",
    }
);

text_enum!(
    /// How far a grant reaches; ordered, a wider scope implies the narrower ones.
    Scope, "scope" {
        /// Records the user owns.
        Own = "own",
        /// Records of members of groups the user administers.
        Group = "group",
        /// Every record on this box.
        Site = "site",
        /// Every record everywhere (the same as `site` on a box).
        All = "all",
    }
);

/// One grant: `resource.action` up to `scope`. Written `calls.view:group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    /// What.
    pub resource: Resource,
    /// Which action.
    pub action: Action,
    /// How far.
    pub scope: Scope,
}

impl Permission {
    /// A permission.
    pub fn new(resource: Resource, action: Action, scope: Scope) -> Permission {
        Permission {
            resource,
            action,
            scope,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.resource, self.action, self.scope)
    }
}

impl FromStr for Permission {
    type Err = InvalidValue;

    /// Parses `resource.action:scope`.
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue {
            what: "permission",
            value: s.to_owned(),
            reason: "must be resource.action:scope, e.g. calls.view:group",
        };
        let (ra, scope) = s.split_once(':').ok_or_else(bad)?;
        let (resource, action) = ra.split_once('.').ok_or_else(bad)?;
        Ok(Permission {
            resource: resource.parse()?,
            action: action.parse()?,
            scope: scope.parse()?,
        })
    }
}

const CELLS: usize = 19 * 11;

/// A role's grants compiled for lookup: the widest scope per `(resource, action)`.
#[derive(Clone, PartialEq, Eq)]
pub struct PermissionSet {
    /// 0 = not granted, else `Scope::index() + 1`.
    cells: [u8; CELLS],
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.permissions()).finish()
    }
}

impl Default for PermissionSet {
    fn default() -> Self {
        PermissionSet { cells: [0; CELLS] }
    }
}

fn cell(resource: Resource, action: Action) -> usize {
    resource.index() * Action::ALL.len() + action.index()
}

impl PermissionSet {
    /// The set of the given grants (the widest scope wins when one repeats).
    pub fn from_permissions<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> Self {
        let mut set = PermissionSet::default();
        for p in perms {
            set.grant(*p);
        }
        set
    }

    /// Adds a grant; a narrower grant of an already granted pair changes nothing.
    pub fn grant(&mut self, p: Permission) {
        let c = &mut self.cells[cell(p.resource, p.action)];
        // Scope indexes are 0..4, so this fits a u8.
        let rank = p.scope.index() as u8 + 1;
        *c = (*c).max(rank);
    }

    /// The widest scope granted for `resource.action`, if any.
    pub fn scope(&self, resource: Resource, action: Action) -> Option<Scope> {
        match self.cells[cell(resource, action)] {
            0 => None,
            n => Scope::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    /// The grants, one per granted `(resource, action)` with its widest scope, in
    /// resource then action order.
    pub fn permissions(&self) -> Vec<Permission> {
        let mut out = Vec::new();
        for &resource in Resource::ALL {
            for &action in Action::ALL {
                if let Some(scope) = self.scope(resource, action) {
                    out.push(Permission::new(resource, action, scope));
                }
            }
        }
        out
    }
}

/// Who is asking: a user as loaded for this request (see
/// [`crate::accounts::load_subject`]; reload it per request so a disabled, locked or
/// re-roled user is refused at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The user.
    pub user_id: UserId,
    /// Their username (for deny reasons and the audit log).
    pub username: String,
    /// Their roles.
    pub roles: Vec<RoleId>,
    /// Groups they are a member of (admin or not).
    pub groups: Vec<GroupId>,
    /// Groups they are a group admin of (a subset of `groups`).
    pub admin_of_groups: Vec<GroupId>,
    /// `users.enabled`; a disabled user is denied everything.
    pub enabled: bool,
    /// Whether the account was locked (failed logins) when the subject was loaded; a
    /// locked user is denied everything.
    pub locked: bool,
}

/// The record an action is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A record of the box with no owner (queue, config, sync state): needs `site`.
    Site,
    /// A record owned by a user (or by nobody, e.g. an unanswered queue call) and the
    /// groups its owner belongs to.
    Owned {
        /// The owning user, if any.
        owner: Option<UserId>,
        /// The owner's groups (or the record's, e.g. a queue's group).
        groups: Vec<GroupId>,
    },
}

impl Target {
    /// The narrowest scope under which `subject` reaches this record.
    pub fn required_scope(&self, subject: &Subject) -> Scope {
        match self {
            Target::Site => Scope::Site,
            Target::Owned { owner, groups } => {
                if *owner == Some(subject.user_id) {
                    Scope::Own
                } else if groups.iter().any(|g| subject.admin_of_groups.contains(g)) {
                    Scope::Group
                } else {
                    Scope::Site
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Site => "the record has no owner".to_owned(),
            Target::Owned { owner: Some(u), .. } => format!("record belongs to user {u}"),
            Target::Owned { owner: None, .. } => {
                "record has no owner in a group you administer".to_owned()
            }
        }
    }
}

/// The answer of [`Authorizer::authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Allowed; `scope` is the subject's relation to the record that the grant covered
    /// (own, group or site).
    Allow {
        /// The scope the record needed.
        scope: Scope,
    },
    /// Denied, and why.
    Deny {
        /// Which rule failed.
        reason: DenyReason,
    },
}

impl Decision {
    /// Whether access is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Why access was denied; its `Display` is the text for the audit log and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    /// The account is disabled.
    Disabled {
        /// Who.
        username: String,
    },
    /// The account is locked after failed logins.
    Locked {
        /// Who.
        username: String,
    },
    /// No role of the subject grants `resource.action` at any scope.
    NotGranted {
        /// Who.
        username: String,
        /// What.
        resource: Resource,
        /// Which action.
        action: Action,
    },
    /// A role grants it, but not as wide as the record needs.
    OutOfScope {
        /// Who.
        username: String,
        /// What.
        resource: Resource,
        /// Which action.
        action: Action,
        /// The widest scope the subject's roles grant.
        granted: Scope,
        /// The roles granting it.
        roles: Vec<String>,
        /// The scope the record needs.
        needed: Scope,
        /// The record in words ("record belongs to user 7").
        record: String,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::Disabled { username } => write!(f, "user {username} is disabled"),
            DenyReason::Locked { username } => {
                write!(f, "user {username} is locked after failed logins")
            }
            DenyReason::NotGranted {
                username,
                resource,
                action,
            } => write!(f, "no role of user {username} grants {resource}.{action}"),
            DenyReason::OutOfScope {
                username,
                resource,
                action,
                granted,
                roles,
                needed,
                record,
            } => write!(
                f,
                "role {} of user {username} grants {resource}.{action} only for {granted} \
                 records; {record} (needs {needed} scope)",
                roles.join(", ")
            ),
        }
    }
}

/// One role as [`Authorizer::new`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrants {
    /// Its id.
    pub id: RoleId,
    /// Its name (named in deny reasons).
    pub name: String,
    /// Its grants.
    pub permissions: Vec<Permission>,
}

/// Compiled permission sets of every role, and the one authorization function.
#[derive(Debug, Clone)]
pub struct Authorizer {
    index: HashMap<RoleId, usize>,
    roles: Vec<(String, PermissionSet)>,
    generation: i64,
}

impl Authorizer {
    /// An authorizer over the given roles (for tests and benchmarks); `generation` is
    /// what [`Authorizer::generation`] reports.
    pub fn new(roles: impl IntoIterator<Item = RoleGrants>, generation: i64) -> Authorizer {
        let mut index = HashMap::new();
        let mut compiled = Vec::new();
        for role in roles {
            index.insert(role.id, compiled.len());
            compiled.push((
                role.name,
                PermissionSet::from_permissions(&role.permissions),
            ));
        }
        Authorizer {
            index,
            roles: compiled,
            generation,
        }
    }

    /// Loads every role and its grants from the store.
    pub fn load(reader: &StoreReader) -> Result<Authorizer> {
        Self::load_from(reader.connection(), reader.path())
    }

    /// [`Authorizer::load`] over any connection to the store (`path` names it in errors).
    pub fn load_from(conn: &Connection, path: &std::path::Path) -> Result<Authorizer> {
        let generation = rbac_generation(conn, path)?;
        let roles = load_role_grants(conn, path)?;
        Ok(Authorizer::new(roles, generation))
    }

    /// The `box_state.rbac_generation` this was loaded at.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The compiled grants of a role, if it exists.
    pub fn role(&self, role: RoleId) -> Option<&PermissionSet> {
        self.index.get(&role).map(|&i| &self.roles[i].1)
    }

    /// The widest scope any of the subject's roles grants for `resource.action`
    /// (ignoring enabled/locked), e.g. to build a list query's filter.
    pub fn granted_scope(
        &self,
        subject: &Subject,
        resource: Resource,
        action: Action,
    ) -> Option<Scope> {
        let mut widest: u8 = 0;
        let c = cell(resource, action);
        for role in &subject.roles {
            if let Some(&i) = self.index.get(role) {
                widest = widest.max(self.roles[i].1.cells[c]);
            }
        }
        match widest {
            0 => None,
            n => Scope::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    /// May `subject` do `action` on `resource` for the record `target`? Deny by default.
    pub fn authorize(
        &self,
        subject: &Subject,
        resource: Resource,
        action: Action,
        target: &Target,
    ) -> Decision {
        if !subject.enabled {
            return Decision::Deny {
                reason: DenyReason::Disabled {
                    username: subject.username.clone(),
                },
            };
        }
        if subject.locked {
            return Decision::Deny {
                reason: DenyReason::Locked {
                    username: subject.username.clone(),
                },
            };
        }
        let Some(granted) = self.granted_scope(subject, resource, action) else {
            return Decision::Deny {
                reason: DenyReason::NotGranted {
                    username: subject.username.clone(),
                    resource,
                    action,
                },
            };
        };
        let needed = target.required_scope(subject);
        if granted >= needed {
            return Decision::Allow { scope: needed };
        }
        let roles = subject
            .roles
            .iter()
            .filter_map(|r| self.index.get(r))
            .filter(|&&i| self.roles[i].1.scope(resource, action).is_some())
            .map(|&i| self.roles[i].0.clone())
            .collect();
        Decision::Deny {
            reason: DenyReason::OutOfScope {
                username: subject.username.clone(),
                resource,
                action,
                granted,
                roles,
                needed,
                record: target.describe(),
            },
        }
    }
}

/// `box_state.rbac_generation`.
pub(crate) fn rbac_generation(conn: &Connection, path: &std::path::Path) -> Result<i64> {
    conn.query_row(
        "SELECT rbac_generation FROM box_state WHERE only = 1",
        [],
        |r| r.get(0),
    )
    .map_err(|source| Error::Sqlite {
        path: path.to_owned(),
        op: "read rbac generation",
        source,
    })
}

/// Every role with its grants, by id.
pub(crate) fn load_role_grants(
    conn: &Connection,
    path: &std::path::Path,
) -> Result<Vec<RoleGrants>> {
    let sql = |op| {
        move |source| Error::Sqlite {
            path: path.to_owned(),
            op,
            source,
        }
    };
    let mut roles: Vec<RoleGrants> = conn
        .prepare_cached("SELECT id, name FROM roles ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(RoleGrants {
                    id: RoleId(r.get(0)?),
                    name: r.get(1)?,
                    permissions: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("read roles"))?;
    let rows: Vec<(i64, String, String, String)> = conn
        .prepare_cached("SELECT role_id, resource, action, scope FROM role_permissions")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("read role permissions"))?;
    let pos: HashMap<i64, usize> = roles.iter().enumerate().map(|(i, r)| (r.id.0, i)).collect();
    for (role_id, resource, action, scope) in rows {
        let corrupt = |column: &'static str, value: &str| Error::StoreCorrupt {
            path: path.to_owned(),
            table: "role_permissions",
            key: role_id.to_string(),
            column,
            value: value.to_owned(),
        };
        let p = Permission {
            resource: resource
                .parse()
                .map_err(|_| corrupt("resource", &resource))?,
            action: action.parse().map_err(|_| corrupt("action", &action))?,
            scope: scope.parse().map_err(|_| corrupt("scope", &scope))?,
        };
        if let Some(&i) = pos.get(&role_id) {
            roles[i].permissions.push(p);
        }
    }
    for r in &mut roles {
        r.permissions.sort();
    }
    Ok(roles)
}
