//! Local accounts: users, groups and custom roles; login with lockout; passwords and
//! PINs; CSV import/export; the installer account.
//!
//! This is the library an HTTP API (`/api/v1`), the web page and the console build on.
//!
//! - **Reads** are plain functions over a [`StoreReader`] ([`list_users`], [`user`],
//!   [`list_roles`], [`list_groups`], [`load_subject`], [`export_users_csv`], ...).
//! - **Writes** go through [`Accounts`], a handle on the store writer thread. Every
//!   method takes the [`Actor`] (who, from where) and an injected `now_ms`; it writes
//!   the change, its audit row (result `ok`) and its outbox rows in **one**
//!   transaction. An operation that fails (validation, not found, ...) writes nothing
//!   and is audited with result `failed` in a transaction of its own.
//! - **Authorization is the caller's job**, before calling a write: check with
//!   [`crate::rbac::Authorizer::authorize`] and audit a denial with
//!   [`crate::audit::audit_denied`]. These methods trust their caller.
//!
//! # Sync with HQ
//!
//! Users, roles and groups are mastered at HQ. Every local change writes an outbox row
//! of kind `user_change` / `role_change` / `group_change` whose payload is a
//! [`wire::EntityEdit`] (`{"op": "create"|"update"|"delete", "base_revision": <rev>,
//! "row": {"kind": "user", ...}}`), so the sync agent sends rows as stored:
//! `base_revision` is the HQ revision the row was based on (0 = created on this box),
//! so HQ can apply it only when its row is unchanged. The user row ([`wire::User`])
//! carries the password and PIN hashes (HQ distributes them to the site); CSV exports
//! never do. Group memberships travel on the users: a group edit that changes its
//! members also writes a user update for each user who joined or left. Rows HQ sends
//! down are applied by [`crate::sync`] without outbox rows (no echo).
//!
//! Limit: renaming a role or group on the box goes up as an update keyed by the new
//! name; HQ sees it as a change of a row it does not know.
//!
//! # Lockout
//!
//! After `max_failed_logins` consecutive failures (default 5) an account is locked for
//! `lockout_ms` (default 15 min). The counter and `locked_until_ms` are columns of
//! `users`, so a restart does not lift a lockout. A successful login resets the counter;
//! the first failure after a lockout ran out starts counting from 1 again. Attempts
//! while locked are refused without checking the password and are not counted.
//!
//! # Installer
//!
//! Until the box is enrolled with HQ, the local user `installer` (role `installer`)
//! exists; see [`bootstrap_installer`]. [`Accounts::set_enrolled`] retires it: the user
//! is disabled and its login refused with [`LoginError::InstallerRetired`].
//!
//! Validation rules: username 3-32 of `a-z 0-9 . _ -`; display name at most 64
//! characters (empty = the username); extension must be in the `extensions` table
//! (FXS extensions, the SIP phones' accounts and HQ's extensions);
//! agent ID 2-10 digits, unique; roles and groups must exist; the `installer` role is
//! reserved for the installer user. Pages hold at most [`MAX_PAGE`] items.

mod csv;
pub mod password;
mod supervisor;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, AuditEntry, AuditResult};
use crate::error::{Error, FieldProblem, LoginError, Result};
use crate::rbac::builtin::{bump_generation, insert_permissions, INSTALLER};
use crate::rbac::{GroupId, Permission, Resource, RoleId, Subject, UserId};
use crate::store::{Store, StoreReader, StoreWriter};
use branchline_sync::wire;

pub use self::csv::{export_audit_entry, export_users_csv, InitialPassword, CSV_COLUMNS};
pub use self::password::HashParams;
pub use self::supervisor::{may_supervise, SupervisorDecision};

/// Most items one page may hold.
pub const MAX_PAGE: u32 = 500;
/// Default of `[auth] max_failed_logins`.
pub const DEFAULT_MAX_FAILED_LOGINS: u32 = 5;
/// Default of `[auth] lockout_minutes`.
pub const DEFAULT_LOCKOUT_MINUTES: u32 = 15;
/// Username of the installer account.
pub const INSTALLER_USERNAME: &str = "installer";
/// File in the data directory holding a generated installer password (the stand-in for
/// the label printed on the box), mode 0600.
pub const INSTALLER_LABEL_FILE: &str = "installer-label.txt";

/// Login and hashing settings (from `[auth]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// Consecutive failures that lock an account.
    pub max_failed_logins: u32,
    /// How long a lockout lasts, in milliseconds.
    pub lockout_ms: i64,
    /// argon2id parameters for new hashes.
    pub hash: HashParams,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            max_failed_logins: DEFAULT_MAX_FAILED_LOGINS,
            lockout_ms: i64::from(DEFAULT_LOCKOUT_MINUTES) * 60_000,
            hash: HashParams::OWASP,
        }
    }
}

impl From<&crate::config::AuthConfig> for AuthSettings {
    fn from(c: &crate::config::AuthConfig) -> Self {
        AuthSettings {
            max_failed_logins: c.max_failed_logins,
            lockout_ms: i64::from(c.lockout_minutes) * 60_000,
            hash: HashParams::OWASP,
        }
    }
}

/// Which page of a list: `limit` 1..=[`MAX_PAGE`], `offset` from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Items per page.
    pub limit: u32,
    /// Items to skip.
    pub offset: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: 50,
            offset: 0,
        }
    }
}

impl PageRequest {
    /// Checks `limit`.
    pub fn validate(&self) -> Result<()> {
        if (1..=MAX_PAGE).contains(&self.limit) {
            Ok(())
        } else {
            Err(invalid(
                "page",
                "",
                vec![problem("limit", format!("must be 1 to {MAX_PAGE}"))],
            ))
        }
    }
}

/// One page of a list, and the total number of items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many items the whole list has.
    pub total: i64,
    /// The limit asked for.
    pub limit: u32,
    /// The offset asked for.
    pub offset: u32,
}

/// A user as the API shows it (never with hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Row id.
    pub id: UserId,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Extension number, if any.
    pub extension: Option<String>,
    /// Call-center agent ID, if any.
    pub agent_id: Option<String>,
    /// Whether an agent PIN is set.
    pub has_pin: bool,
    /// Recording policy of the calls the user answers as an agent (`always`, `never`,
    /// `on_demand`; see [`crate::recorder::calls`]).
    #[serde(default = "never")]
    pub recording: String,
    /// Whether the account may log in.
    pub enabled: bool,
    /// Whether the next login must change the password (imported users, admin reset).
    pub must_change_password: bool,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Locked until then (ms since the Unix epoch), if locked (compare with now).
    pub locked_until_ms: Option<i64>,
    /// HQ revision the row is based on (0 = created locally).
    pub revision: i64,
    /// Role names, sorted.
    pub roles: Vec<String>,
    /// Group memberships, by group name.
    pub groups: Vec<Membership>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A user's membership of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group's name.
    pub group: String,
    /// Whether the user is a group admin (supervisor) of it.
    pub is_group_admin: bool,
}

/// Input of [`Accounts::create_user`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Display name ("" = the username).
    pub display_name: String,
    /// Initial password (policy-checked).
    pub password: String,
    /// Extension number.
    pub extension: Option<String>,
    /// Agent ID.
    pub agent_id: Option<String>,
    /// Agent PIN (4-8 digits).
    pub pin: Option<String>,
    /// Whether the account may log in.
    pub enabled: bool,
    /// Whether the first login must change the password.
    pub must_change_password: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Group names (joined as plain members).
    pub groups: Vec<String>,
}

/// Input of [`Accounts::update_user`]: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New extension (`Some(None)` clears it).
    pub extension: Option<Option<String>>,
    /// New agent ID (`Some(None)` clears it).
    pub agent_id: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replace the roles.
    pub roles: Option<Vec<String>>,
    /// Replace the group memberships (plain members; admin flags of groups kept are
    /// kept).
    pub groups: Option<Vec<String>>,
    /// New recording policy as an agent (`always`, `never`, `on_demand`).
    #[serde(default)]
    pub recording: Option<String>,
}

fn never() -> String {
    "never".to_owned()
}

/// A role with its grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Row id.
    pub id: RoleId,
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Shipped with the firmware (not editable).
    pub builtin: bool,
    /// HQ revision it is based on.
    pub revision: i64,
    /// Grants, sorted.
    pub permissions: Vec<Permission>,
}

/// Input of [`Accounts::create_role`] and [`Accounts::update_role`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoleSpec {
    /// Name: 3-32 of `a-z 0-9 _ -`.
    pub name: String,
    /// At most 200 characters.
    pub description: String,
    /// Grants; each `(resource, action)` at most once.
    pub permissions: Vec<Permission>,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Row id.
    pub id: GroupId,
    /// Name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// HQ revision it is based on.
    pub revision: i64,
    /// Members, by user id.
    pub members: Vec<GroupMember>,
}

/// A member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The user.
    pub user_id: UserId,
    /// Whether they administer the group (see [`crate::rbac`] on `group` scope).
    pub is_group_admin: bool,
}

/// Input of [`Accounts::create_group`] and [`Accounts::update_group`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Name: 1-64 characters, no control characters.
    pub name: String,
    /// At most 200 characters.
    pub description: String,
    /// Members (replacing the current ones on update).
    pub members: Vec<GroupMember>,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginOk {
    /// The user as a subject for authorization.
    pub subject: Subject,
    /// The user must change the password before doing anything else.
    pub must_change_password: bool,
}

/// What [`bootstrap_installer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerStatus {
    /// The box is enrolled: no installer account.
    Retired,
    /// The installer account already existed (its hash was updated from the config if
    /// that differs).
    Present,
    /// Created with the hash from the config.
    CreatedFromConfig,
    /// Created with a generated password, written to this file (mode 0600).
    CreatedWithLabel(PathBuf),
}

// ---------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------

fn problem(field: impl Into<String>, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        message: message.into(),
    }
}

fn invalid(entity: &'static str, key: &str, problems: Vec<FieldProblem>) -> Error {
    Error::Invalid {
        entity,
        key: key.to_owned(),
        problems,
    }
}

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

fn not_found(entity: &'static str, key: impl ToString) -> Error {
    Error::NotFound {
        entity,
        key: key.to_string(),
    }
}

/// Writes an outbox row (in the caller's transaction) and returns its seq.
pub(crate) fn outbox(
    conn: &Connection,
    path: &Path,
    kind: &str,
    key: &str,
    payload: &str,
    now_ms: i64,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (kind, record_key, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![kind, key, payload, now_ms]))
    .map_err(sql(path, "insert outbox row"))?;
    Ok(conn.last_insert_rowid())
}

/// Runs a blocking closure (password hashing) off the async executor.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::TaskFailed { what })?
}

// ---------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------

pub(crate) fn username_problems(username: &str) -> Vec<FieldProblem> {
    let ok_chars = username
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if (3..=32).contains(&username.len()) && ok_chars {
        Vec::new()
    } else {
        vec![problem(
            "username",
            "must be 3 to 32 of a-z, 0-9, '.', '_' and '-'",
        )]
    }
}

pub(crate) fn display_name_problems(name: &str) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    if name.chars().count() > 64 {
        out.push(problem("display_name", "must be at most 64 characters"));
    }
    if name.chars().any(char::is_control) {
        out.push(problem(
            "display_name",
            "must not contain control characters",
        ));
    }
    out
}

pub(crate) fn agent_id_format(agent_id: &str) -> bool {
    (2..=10).contains(&agent_id.len()) && agent_id.bytes().all(|b| b.is_ascii_digit())
}

/// The user fields every create path validates the same way (API, CSV, console).
#[derive(Debug, Clone, Default)]
struct UserFields {
    username: String,
    display_name: String,
    extension: Option<String>,
    agent_id: Option<String>,
    enabled: bool,
    roles: Vec<String>,
    groups: Vec<String>,
}

/// Checks `fields` against the rules and the database; `own_id` is the user being
/// updated (its own username/agent ID are not conflicts).
fn user_field_problems(
    conn: &Connection,
    path: &Path,
    f: &UserFields,
    own_id: Option<UserId>,
) -> Result<Vec<FieldProblem>> {
    let mut out = username_problems(&f.username);
    out.extend(display_name_problems(&f.display_name));
    let other = |found: Option<i64>| found.is_some_and(|id| Some(UserId(id)) != own_id);
    if out.is_empty() {
        let found: Option<i64> = conn
            .query_row(
                "SELECT id FROM users WHERE username = ?1",
                [&f.username],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, "look up username"))?;
        if other(found) {
            out.push(problem(
                "username",
                format!("{:?} is already taken", f.username),
            ));
        }
    }
    if let Some(ext) = &f.extension {
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM extensions WHERE number = ?1)",
                [ext],
                |r| r.get(0),
            )
            .map_err(sql(path, "look up extension"))?;
        if !exists {
            out.push(problem(
                "extension",
                format!("extension {ext:?} does not exist on this box"),
            ));
        }
    }
    if let Some(agent_id) = &f.agent_id {
        if !agent_id_format(agent_id) {
            out.push(problem("agent_id", "must be 2 to 10 digits"));
        } else {
            let found: Option<i64> = conn
                .query_row(
                    "SELECT id FROM users WHERE agent_id = ?1",
                    [agent_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql(path, "look up agent id"))?;
            if other(found) {
                out.push(problem(
                    "agent_id",
                    format!("agent ID {agent_id} is already used"),
                ));
            }
        }
    }
    for role in &f.roles {
        if role == INSTALLER && f.username != INSTALLER_USERNAME {
            out.push(problem(
                "roles",
                "the installer role is reserved for the installer account",
            ));
        } else if role_id_by_name(conn, path, role)?.is_none() {
            out.push(problem("roles", format!("role {role:?} does not exist")));
        }
    }
    let mut seen = BTreeSet::new();
    for role in &f.roles {
        if !seen.insert(role) {
            out.push(problem("roles", format!("role {role:?} is listed twice")));
        }
    }
    let mut seen = BTreeSet::new();
    for group in &f.groups {
        if group_id_by_name(conn, path, group)?.is_none() {
            out.push(problem("groups", format!("group {group:?} does not exist")));
        }
        if !seen.insert(group) {
            out.push(problem(
                "groups",
                format!("group {group:?} is listed twice"),
            ));
        }
    }
    Ok(out)
}

fn role_id_by_name(conn: &Connection, path: &Path, name: &str) -> Result<Option<RoleId>> {
    conn.query_row("SELECT id FROM roles WHERE name = ?1", [name], |r| {
        r.get(0).map(RoleId)
    })
    .optional()
    .map_err(sql(path, "look up role"))
}

fn group_id_by_name(conn: &Connection, path: &Path, name: &str) -> Result<Option<GroupId>> {
    conn.query_row("SELECT id FROM groups WHERE name = ?1", [name], |r| {
        r.get(0).map(GroupId)
    })
    .optional()
    .map_err(sql(path, "look up group"))
}

// ---------------------------------------------------------------------------------
// Row access (shared by readers and the writer's transactions)
// ---------------------------------------------------------------------------------

const USER_COLUMNS: &str =
    "id, username, display_name, extension, agent_id, pin_hash IS NOT NULL, \
     enabled, must_change_password, failed_logins, locked_until_ms, revision, created_at_ms, \
     updated_at_ms, recording";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId(r.get(0)?),
        username: r.get(1)?,
        display_name: r.get(2)?,
        extension: r.get(3)?,
        agent_id: r.get(4)?,
        has_pin: r.get(5)?,
        recording: r.get(13)?,
        enabled: r.get(6)?,
        must_change_password: r.get(7)?,
        failed_logins: r.get(8)?,
        locked_until_ms: r.get(9)?,
        revision: r.get(10)?,
        roles: Vec::new(),
        groups: Vec::new(),
        created_at_ms: r.get(11)?,
        updated_at_ms: r.get(12)?,
    })
}

fn fill_user(conn: &Connection, path: &Path, user: &mut User) -> Result<()> {
    user.roles = conn
        .prepare_cached(
            "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id
              WHERE ur.user_id = ?1 ORDER BY r.name",
        )
        .and_then(|mut s| {
            s.query_map([user.id.0], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql(path, "read user roles"))?;
    user.groups = conn
        .prepare_cached(
            "SELECT g.name, gm.is_group_admin FROM group_members gm
               JOIN groups g ON g.id = gm.group_id
              WHERE gm.user_id = ?1 ORDER BY g.name",
        )
        .and_then(|mut s| {
            s.query_map([user.id.0], |r| {
                Ok(Membership {
                    group: r.get(0)?,
                    is_group_admin: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read user groups"))?;
    Ok(())
}

fn get_user(conn: &Connection, path: &Path, id: UserId) -> Result<User> {
    let mut user = conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            [id.0],
            user_from_row,
        )
        .optional()
        .map_err(sql(path, "read user"))?
        .ok_or_else(|| not_found("user", id))?;
    fill_user(conn, path, &mut user)?;
    Ok(user)
}

pub(crate) fn get_user_by_name(
    conn: &Connection,
    path: &Path,
    username: &str,
) -> Result<Option<User>> {
    let user = conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
            [username],
            user_from_row,
        )
        .optional()
        .map_err(sql(path, "read user"))?;
    match user {
        Some(mut u) => {
            fill_user(conn, path, &mut u)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

fn get_role(conn: &Connection, path: &Path, id: RoleId) -> Result<Role> {
    let (name, description, builtin, revision): (String, String, bool, i64) = conn
        .query_row(
            "SELECT name, description, builtin, revision FROM roles WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(sql(path, "read role"))?
        .ok_or_else(|| not_found("role", id))?;
    let permissions = crate::rbac::load_role_grants(conn, path)?
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| r.permissions)
        .unwrap_or_default();
    Ok(Role {
        id,
        name,
        description,
        builtin,
        revision,
        permissions,
    })
}

fn get_group(conn: &Connection, path: &Path, id: GroupId) -> Result<Group> {
    let (name, description, revision): (String, String, i64) = conn
        .query_row(
            "SELECT name, description, revision FROM groups WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql(path, "read group"))?
        .ok_or_else(|| not_found("group", id))?;
    let members = conn
        .prepare_cached(
            "SELECT user_id, is_group_admin FROM group_members WHERE group_id = ?1 ORDER BY user_id",
        )
        .and_then(|mut s| {
            s.query_map([id.0], |r| {
                Ok(GroupMember {
                    user_id: UserId(r.get(0)?),
                    is_group_admin: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read group members"))?;
    Ok(Group {
        id,
        name,
        description,
        revision,
        members,
    })
}

fn count(conn: &Connection, path: &Path, table: &'static str) -> Result<i64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .map_err(sql(path, "count rows"))
}

fn page_ids(conn: &Connection, path: &Path, query: &str, page: PageRequest) -> Result<Vec<i64>> {
    page.validate()?;
    conn.prepare_cached(query)
        .and_then(|mut s| {
            s.query_map(params![page.limit, page.offset], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(sql(path, "read page"))
}

fn subject_from(conn: &Connection, path: &Path, id: UserId, now_ms: i64) -> Result<Subject> {
    let (username, enabled, locked_until): (String, bool, Option<i64>) = conn
        .query_row(
            "SELECT username, enabled, locked_until_ms FROM users WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql(path, "read subject"))?
        .ok_or_else(|| not_found("user", id))?;
    let roles = conn
        .prepare_cached("SELECT role_id FROM user_roles WHERE user_id = ?1 ORDER BY role_id")
        .and_then(|mut s| {
            s.query_map([id.0], |r| r.get(0).map(RoleId))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read subject roles"))?;
    let memberships: Vec<(GroupId, bool)> = conn
        .prepare_cached(
            "SELECT group_id, is_group_admin FROM group_members WHERE user_id = ?1 ORDER BY group_id",
        )
        .and_then(|mut s| {
            s.query_map([id.0], |r| Ok((GroupId(r.get(0)?), r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read subject groups"))?;
    Ok(Subject {
        user_id: id,
        username,
        roles,
        groups: memberships.iter().map(|m| m.0).collect(),
        admin_of_groups: memberships.iter().filter(|m| m.1).map(|m| m.0).collect(),
        enabled,
        locked: locked_until.is_some_and(|t| t > now_ms),
    })
}

fn enrolled(conn: &Connection, path: &Path) -> Result<bool> {
    conn.query_row("SELECT enrolled FROM box_state WHERE only = 1", [], |r| {
        r.get(0)
    })
    .map_err(sql(path, "read enrollment state"))
}

// ---------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------

/// One page of users, by username.
pub fn list_users(reader: &StoreReader, page: PageRequest) -> Result<Page<User>> {
    let (conn, path) = (reader.connection(), reader.path());
    let ids = page_ids(
        conn,
        path,
        "SELECT id FROM users ORDER BY username LIMIT ?1 OFFSET ?2",
        page,
    )?;
    Ok(Page {
        items: ids
            .into_iter()
            .map(|id| get_user(conn, path, UserId(id)))
            .collect::<Result<_>>()?,
        total: count(conn, path, "users")?,
        limit: page.limit,
        offset: page.offset,
    })
}

/// A user by id ([`Error::NotFound`] if there is none).
pub fn user(reader: &StoreReader, id: UserId) -> Result<User> {
    get_user(reader.connection(), reader.path(), id)
}

/// A user by username.
pub fn user_by_name(reader: &StoreReader, username: &str) -> Result<Option<User>> {
    get_user_by_name(reader.connection(), reader.path(), username)
}

/// One page of roles, by name.
pub fn list_roles(reader: &StoreReader, page: PageRequest) -> Result<Page<Role>> {
    let (conn, path) = (reader.connection(), reader.path());
    let ids = page_ids(
        conn,
        path,
        "SELECT id FROM roles ORDER BY name LIMIT ?1 OFFSET ?2",
        page,
    )?;
    Ok(Page {
        items: ids
            .into_iter()
            .map(|id| get_role(conn, path, RoleId(id)))
            .collect::<Result<_>>()?,
        total: count(conn, path, "roles")?,
        limit: page.limit,
        offset: page.offset,
    })
}

/// A role by id.
pub fn role(reader: &StoreReader, id: RoleId) -> Result<Role> {
    get_role(reader.connection(), reader.path(), id)
}

/// A role's id by name.
pub fn role_id(reader: &StoreReader, name: &str) -> Result<Option<RoleId>> {
    role_id_by_name(reader.connection(), reader.path(), name)
}

/// One page of groups, by name.
pub fn list_groups(reader: &StoreReader, page: PageRequest) -> Result<Page<Group>> {
    let (conn, path) = (reader.connection(), reader.path());
    let ids = page_ids(
        conn,
        path,
        "SELECT id FROM groups ORDER BY name LIMIT ?1 OFFSET ?2",
        page,
    )?;
    Ok(Page {
        items: ids
            .into_iter()
            .map(|id| get_group(conn, path, GroupId(id)))
            .collect::<Result<_>>()?,
        total: count(conn, path, "groups")?,
        limit: page.limit,
        offset: page.offset,
    })
}

/// A group by id.
pub fn group(reader: &StoreReader, id: GroupId) -> Result<Group> {
    get_group(reader.connection(), reader.path(), id)
}

/// A group's id by name.
pub fn group_id(reader: &StoreReader, name: &str) -> Result<Option<GroupId>> {
    group_id_by_name(reader.connection(), reader.path(), name)
}

/// The user as an authorization [`Subject`] at `now_ms` (locked if `locked_until_ms`
/// is later). Load it per request so changes take effect at once.
pub fn load_subject(reader: &StoreReader, id: UserId, now_ms: i64) -> Result<Subject> {
    subject_from(reader.connection(), reader.path(), id, now_ms)
}

/// Whether the box is enrolled with HQ.
pub fn is_enrolled(reader: &StoreReader) -> Result<bool> {
    enrolled(reader.connection(), reader.path())
}

// ---------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------

/// Inserts a validated user (in the caller's transaction) and returns its id.
#[allow(clippy::too_many_arguments)]
fn insert_user(
    conn: &Connection,
    path: &Path,
    f: &UserFields,
    password_hash: &str,
    pin_hash: Option<&str>,
    must_change_password: bool,
    now_ms: i64,
) -> Result<UserId> {
    let display_name = if f.display_name.is_empty() {
        &f.username
    } else {
        &f.display_name
    };
    conn.execute(
        "INSERT INTO users (username, display_name, password_hash, agent_id, pin_hash, extension,
                            enabled, must_change_password, failed_logins, locked_until_ms,
                            revision, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, 0, ?9, ?9)",
        params![
            f.username,
            display_name,
            password_hash,
            f.agent_id,
            pin_hash,
            f.extension,
            f.enabled,
            must_change_password,
            now_ms
        ],
    )
    .map_err(sql(path, "insert user"))?;
    let id = UserId(conn.last_insert_rowid());
    set_user_roles(conn, path, id, &f.roles)?;
    set_user_groups(conn, path, id, &f.groups)?;
    Ok(id)
}

fn set_user_roles(conn: &Connection, path: &Path, id: UserId, roles: &[String]) -> Result<()> {
    conn.execute("DELETE FROM user_roles WHERE user_id = ?1", [id.0])
        .map_err(sql(path, "clear user roles"))?;
    for name in roles {
        let role = role_id_by_name(conn, path, name)?.ok_or_else(|| not_found("role", name))?;
        conn.execute(
            "INSERT INTO user_roles (user_id, role_id) VALUES (?1, ?2)",
            params![id.0, role.0],
        )
        .map_err(sql(path, "insert user role"))?;
    }
    Ok(())
}

fn set_user_groups(conn: &Connection, path: &Path, id: UserId, groups: &[String]) -> Result<()> {
    let mut keep = Vec::new();
    for name in groups {
        let group = group_id_by_name(conn, path, name)?.ok_or_else(|| not_found("group", name))?;
        keep.push(group);
        conn.execute(
            "INSERT INTO group_members (group_id, user_id, is_group_admin) VALUES (?1, ?2, 0)
             ON CONFLICT (group_id, user_id) DO NOTHING",
            params![group.0, id.0],
        )
        .map_err(sql(path, "insert group member"))?;
    }
    let current: Vec<i64> = conn
        .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
        .and_then(|mut s| {
            s.query_map([id.0], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read group members"))?;
    for g in current.into_iter().filter(|g| !keep.contains(&GroupId(*g))) {
        conn.execute(
            "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
            params![g, id.0],
        )
        .map_err(sql(path, "remove group member"))?;
    }
    Ok(())
}

/// The wire form ([`wire::User`]) of the stored user `user`, with its password and PIN
/// hashes (read from the row, which must still exist in `conn`).
pub(crate) fn wire_user(conn: &Connection, path: &Path, user: &User) -> Result<wire::User> {
    let (password_hash, pin_hash): (String, Option<String>) = conn
        .query_row(
            "SELECT password_hash, pin_hash FROM users WHERE id = ?1",
            [user.id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql(path, "read user hashes"))?
        .ok_or_else(|| not_found("user", &user.username))?;
    Ok(wire::User {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        password_hash,
        pin_hash,
        agent_id: user.agent_id.clone(),
        extension: user.extension.clone(),
        enabled: user.enabled,
        must_change_password: user.must_change_password,
        roles: user.roles.clone(),
        groups: user
            .groups
            .iter()
            .map(|m| wire::GroupMembership {
                group: m.group.clone(),
                admin: m.is_group_admin,
            })
            .collect(),
    })
}

/// The wire form ([`wire::Role`]) of a role.
pub(crate) fn wire_role(role: &Role) -> wire::Role {
    wire::Role {
        name: role.name.clone(),
        description: role.description.clone(),
        permissions: role
            .permissions
            .iter()
            .map(|p| wire::Permission {
                resource: p.resource.as_str().to_owned(),
                action: p.action.as_str().to_owned(),
                scope: p.scope.as_str().to_owned(),
            })
            .collect(),
    }
}

/// The wire form ([`wire::Group`]) of a group (members travel on the users).
pub(crate) fn wire_group(group: &Group) -> wire::Group {
    wire::Group {
        name: group.name.clone(),
        description: group.description.clone(),
    }
}

/// Writes the outbox row of a local edit: a [`wire::EntityEdit`] of `row`, keyed by
/// the row's key, of the record kind that matches the entity.
fn edit_outbox(
    conn: &Connection,
    path: &Path,
    op: wire::EditOp,
    base_revision: i64,
    row: wire::Entity,
    now_ms: i64,
) -> Result<()> {
    let kind = match row.kind() {
        wire::EntityKind::User => wire::RecordKind::UserChange,
        wire::EntityKind::Role => wire::RecordKind::RoleChange,
        _ => wire::RecordKind::GroupChange,
    };
    let key = row.key().to_owned();
    let edit = wire::EntityEdit {
        op,
        base_revision,
        row,
    };
    let payload = serde_json::to_string(&edit).map_err(|source| Error::Json {
        kind: kind.as_str(),
        key: key.clone(),
        source,
    })?;
    outbox(conn, path, kind.as_str(), &key, &payload, now_ms)?;
    Ok(())
}

/// The outbox row of a user change: the row with its hashes and its base revision.
/// For a delete, call it before the row is deleted (it reads the hashes).
fn user_outbox(
    conn: &Connection,
    path: &Path,
    op: wire::EditOp,
    user: &User,
    now_ms: i64,
) -> Result<()> {
    let row = wire::Entity::User(wire_user(conn, path, user)?);
    edit_outbox(conn, path, op, user.revision, row, now_ms)
}

fn role_outbox(
    conn: &Connection,
    path: &Path,
    op: wire::EditOp,
    role: &Role,
    now_ms: i64,
) -> Result<()> {
    let row = wire::Entity::Role(wire_role(role));
    edit_outbox(conn, path, op, role.revision, row, now_ms)
}

fn group_outbox(
    conn: &Connection,
    path: &Path,
    op: wire::EditOp,
    group: &Group,
    now_ms: i64,
) -> Result<()> {
    let row = wire::Entity::Group(wire_group(group));
    edit_outbox(conn, path, op, group.revision, row, now_ms)
}

/// Group memberships travel on the users ([`wire::User::groups`]): after a group's
/// members changed, every user who joined or left it gets a `user_change` update.
fn membership_outbox(
    conn: &Connection,
    path: &Path,
    before: &[GroupMember],
    after: &[GroupMember],
    now_ms: i64,
) -> Result<()> {
    let mut touched = BTreeSet::new();
    for m in before {
        if !after.contains(m) {
            touched.insert(m.user_id);
        }
    }
    for m in after {
        if !before.contains(m) {
            touched.insert(m.user_id);
        }
    }
    for id in touched {
        let user = get_user(conn, path, id)?;
        user_outbox(conn, path, wire::EditOp::Update, &user, now_ms)?;
    }
    Ok(())
}

pub(crate) fn role_name_problems(name: &str) -> Vec<FieldProblem> {
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Vec::new()
    } else {
        vec![problem("name", "must be 3 to 32 of a-z, 0-9, '_' and '-'")]
    }
}

fn role_spec_problems(
    conn: &Connection,
    path: &Path,
    spec: &RoleSpec,
    own: Option<RoleId>,
) -> Result<Vec<FieldProblem>> {
    let mut out = role_name_problems(&spec.name);
    if spec.description.chars().count() > 200 {
        out.push(problem("description", "must be at most 200 characters"));
    }
    if let Some(existing) = role_id_by_name(conn, path, &spec.name)? {
        if Some(existing) != own {
            out.push(problem(
                "name",
                format!("role {:?} already exists", spec.name),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in spec.permissions.iter().enumerate() {
        if !seen.insert((p.resource, p.action)) {
            out.push(problem(
                format!("permissions[{i}]"),
                format!("{}.{} is granted twice", p.resource, p.action),
            ));
        }
        if p.resource == Resource::Provisioning {
            // Provisioning is the installer's, before enrollment; custom roles made
            // after enrollment do not need it and must not reopen it.
            out.push(problem(
                format!("permissions[{i}]"),
                "provisioning can only be granted by the built-in installer and admin roles",
            ));
        }
    }
    Ok(out)
}

fn group_spec_problems(
    conn: &Connection,
    path: &Path,
    spec: &GroupSpec,
    own: Option<GroupId>,
) -> Result<Vec<FieldProblem>> {
    let mut out = Vec::new();
    let n = spec.name.chars().count();
    if !(1..=64).contains(&n) || spec.name.chars().any(char::is_control) {
        out.push(problem(
            "name",
            "must be 1 to 64 characters, no control characters",
        ));
    }
    if spec.description.chars().count() > 200 {
        out.push(problem("description", "must be at most 200 characters"));
    }
    if let Some(existing) = group_id_by_name(conn, path, &spec.name)? {
        if Some(existing) != own {
            out.push(problem(
                "name",
                format!("group {:?} already exists", spec.name),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, m) in spec.members.iter().enumerate() {
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                [m.user_id.0],
                |r| r.get(0),
            )
            .map_err(sql(path, "look up user"))?;
        if !exists {
            out.push(problem(
                format!("members[{i}]"),
                format!("user {} does not exist", m.user_id),
            ));
        }
        if !seen.insert(m.user_id) {
            out.push(problem(
                format!("members[{i}]"),
                format!("user {} is listed twice", m.user_id),
            ));
        }
    }
    Ok(out)
}

fn set_group_members(
    conn: &Connection,
    path: &Path,
    id: GroupId,
    members: &[GroupMember],
) -> Result<()> {
    conn.execute("DELETE FROM group_members WHERE group_id = ?1", [id.0])
        .map_err(sql(path, "clear group members"))?;
    for m in members {
        conn.execute(
            "INSERT INTO group_members (group_id, user_id, is_group_admin) VALUES (?1, ?2, ?3)",
            params![id.0, m.user_id.0, m.is_group_admin],
        )
        .map_err(sql(path, "insert group member"))?;
    }
    Ok(())
}

/// Handle for every write to accounts, roles and groups (see the module docs). Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Accounts {
    writer: StoreWriter,
    db_path: PathBuf,
    settings: AuthSettings,
}

/// What an audited write reports for its audit row.
struct Audited<T> {
    value: T,
    target: String,
    detail: serde_json::Value,
}

impl Accounts {
    /// A handle writing through `writer` to the store at `db_path` (readers for
    /// login are opened on it).
    pub fn new(writer: StoreWriter, db_path: PathBuf, settings: AuthSettings) -> Accounts {
        Accounts {
            writer,
            db_path,
            settings,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> AuthSettings {
        self.settings
    }

    /// A new read connection to the store.
    pub fn reader(&self) -> Result<StoreReader> {
        Store::reader(&self.db_path)
    }

    /// Runs `job` in one transaction with its audit row (result `ok`); on failure
    /// audits result `failed` with the error in a transaction of its own.
    async fn audited<T, F>(
        &self,
        actor: &Actor,
        action: &'static str,
        resource: Resource,
        target_hint: String,
        now_ms: i64,
        job: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<Audited<T>> + Send + 'static,
    {
        let ok_actor = actor.clone();
        let result = self
            .writer
            .transact(action, move |tx, path| {
                let done = job(tx, path)?;
                audit::append(
                    tx,
                    path,
                    &AuditEntry {
                        actor: ok_actor,
                        action: action.to_owned(),
                        resource: resource.as_str().to_owned(),
                        target: done.target,
                        result: AuditResult::Ok,
                        detail: done.detail,
                    },
                    now_ms,
                )?;
                Ok(done.value)
            })
            .await;
        if let Err(e) = &result {
            if !matches!(e, Error::StoreWriterGone) {
                let entry = AuditEntry {
                    actor: actor.clone(),
                    action: action.to_owned(),
                    resource: resource.as_str().to_owned(),
                    target: target_hint,
                    result: AuditResult::Failed,
                    detail: serde_json::json!({ "error": e.to_string() }),
                };
                if let Err(audit_error) = audit::audit(&self.writer, entry, now_ms).await {
                    tracing::warn!(error = %audit_error, "failed operation not audited");
                }
            }
        }
        // A user's agent ID, skills or enabled flag feed the call center: the daemon
        // takes the store's queues and agents anew.
        if result.is_ok() && resource == Resource::Users {
            self.writer.notify_acd_changed();
        }
        result
    }

    // --- login and passwords -------------------------------------------------------

    /// Checks a login (see the module docs on lockout). Every attempt is audited
    /// (action `login`, resource `users`, result `ok` or `failed` with the reason).
    /// Unknown usernames and wrong passwords give the same
    /// [`LoginError::InvalidCredentials`] and take the same time.
    pub async fn verify_login(
        &self,
        username: &str,
        password: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<LoginOk, LoginError> {
        let reader = self.reader()?;
        let (conn, path) = (reader.connection(), reader.path());
        let row: Option<(i64, String, Option<i64>)> = conn
            .query_row(
                "SELECT id, password_hash, locked_until_ms FROM users WHERE username = ?1",
                [username],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql(path, "read login"))?;
        let is_enrolled = enrolled(conn, path)?;
        drop(reader);
        // Names longer than any valid username are cut in the audit log.
        let shown: String = username.chars().take(64).collect();
        let actor = Actor::new(shown.clone(), source);
        let fail = |reason: &str| AuditEntry {
            actor: actor.clone(),
            action: "login".to_owned(),
            resource: Resource::Users.as_str().to_owned(),
            target: shown.clone(),
            result: AuditResult::Failed,
            detail: serde_json::json!({ "reason": reason }),
        };

        let Some((id, hash, locked_until)) = row else {
            // Same work as a real check, so timing does not tell which names exist.
            let dummy = DUMMY_HASH.get_or_init(|| {
                password::hash_secret("dummy password", self.settings.hash).unwrap_or_default()
            });
            let (p, h) = (password.to_owned(), dummy.clone());
            let _ = blocking("verify password", move || password::verify_secret(&p, &h)).await;
            audit::audit(&self.writer, fail("unknown user"), now_ms).await?;
            return Err(LoginError::InvalidCredentials);
        };
        if username == INSTALLER_USERNAME && is_enrolled {
            audit::audit(
                &self.writer,
                fail("installer account retired by enrollment"),
                now_ms,
            )
            .await?;
            return Err(LoginError::InstallerRetired);
        }
        if let Some(until_ms) = locked_until.filter(|&t| t > now_ms) {
            audit::audit(&self.writer, fail("account locked"), now_ms).await?;
            return Err(LoginError::Locked { until_ms });
        }
        let p = password.to_owned();
        let good = blocking("verify password", move || {
            password::verify_secret(&p, &hash)
        })
        .await?;
        let settings = self.settings;
        let user_id = UserId(id);
        if !good {
            let entry = fail("wrong password");
            let locked = self
                .writer
                .transact("record failed login", move |tx, path| {
                    let (failed, until): (u32, Option<i64>) = tx
                        .query_row(
                            "SELECT failed_logins, locked_until_ms FROM users WHERE id = ?1",
                            [id],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .map_err(sql(path, "read failed logins"))?;
                    // A lockout that ran out starts the count again.
                    let failed = if until.is_some_and(|t| t <= now_ms) {
                        1
                    } else {
                        failed + 1
                    };
                    let lock = (failed >= settings.max_failed_logins)
                        .then(|| now_ms.saturating_add(settings.lockout_ms));
                    tx.execute(
                        "UPDATE users SET failed_logins = ?1, locked_until_ms = ?2 WHERE id = ?3",
                        params![failed, lock, id],
                    )
                    .map_err(sql(path, "record failed login"))?;
                    let mut entry = entry;
                    entry.detail = serde_json::json!({
                        "reason": "wrong password",
                        "failed_logins": failed,
                        "locked_until_ms": lock,
                    });
                    audit::append(tx, path, &entry, now_ms)?;
                    Ok(lock)
                })
                .await?;
            return Err(match locked {
                Some(until_ms) => LoginError::Locked { until_ms },
                None => LoginError::InvalidCredentials,
            });
        }
        let ok_actor = actor.clone();
        let target = shown.clone();
        let outcome = self
            .writer
            .transact("record login", move |tx, path| {
                let (enabled, must_change): (bool, bool) = tx
                    .query_row(
                        "SELECT enabled, must_change_password FROM users WHERE id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(sql(path, "read login state"))?;
                let result = if enabled {
                    AuditResult::Ok
                } else {
                    AuditResult::Failed
                };
                if enabled {
                    tx.execute(
                        "UPDATE users SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
                        [id],
                    )
                    .map_err(sql(path, "reset failed logins"))?;
                }
                audit::append(
                    tx,
                    path,
                    &AuditEntry {
                        actor: ok_actor,
                        action: "login".to_owned(),
                        resource: Resource::Users.as_str().to_owned(),
                        target,
                        result,
                        detail: if enabled {
                            serde_json::json!({ "must_change_password": must_change })
                        } else {
                            serde_json::json!({ "reason": "account disabled" })
                        },
                    },
                    now_ms,
                )?;
                if !enabled {
                    return Ok(None);
                }
                Ok(Some((
                    subject_from(tx, path, user_id, now_ms)?,
                    must_change,
                )))
            })
            .await?;
        match outcome {
            Some((subject, must_change_password)) => Ok(LoginOk {
                subject,
                must_change_password,
            }),
            None => Err(LoginError::Disabled),
        }
    }

    /// Changes the actor's own password: `old` must be right ([`Error::WrongPassword`]
    /// otherwise, which does not count towards lockout), `new` must pass the policy.
    /// Clears `must_change_password`.
    pub async fn change_own_password(
        &self,
        actor: &Actor,
        user: UserId,
        old: &str,
        new: &str,
        now_ms: i64,
    ) -> Result<()> {
        let reader = self.reader()?;
        let (username, hash): (String, String) = reader
            .connection()
            .query_row(
                "SELECT username, password_hash FROM users WHERE id = ?1",
                [user.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(reader.path(), "read password"))?
            .ok_or_else(|| not_found("user", user))?;
        drop(reader);
        let (o, h) = (old.to_owned(), hash);
        let good = blocking("verify password", move || password::verify_secret(&o, &h)).await?;
        if !good {
            let e = Error::WrongPassword {
                username: username.clone(),
            };
            return self
                .audited(
                    actor,
                    "change_password",
                    Resource::Users,
                    username,
                    now_ms,
                    move |_, _| Err::<Audited<()>, _>(e),
                )
                .await;
        }
        self.set_password(actor, "change_password", user, username, new, false, now_ms)
            .await
    }

    /// Sets a new password for `user` (an administrator's reset); the user must change
    /// it at the next login. `new` must pass the policy.
    pub async fn reset_password(
        &self,
        actor: &Actor,
        user: UserId,
        new: &str,
        now_ms: i64,
    ) -> Result<()> {
        let reader = self.reader()?;
        let username = get_user(reader.connection(), reader.path(), user)?.username;
        drop(reader);
        self.set_password(actor, "reset_password", user, username, new, true, now_ms)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_password(
        &self,
        actor: &Actor,
        action: &'static str,
        user: UserId,
        username: String,
        new: &str,
        must_change: bool,
        now_ms: i64,
    ) -> Result<()> {
        let problems = password::password_problems(&username, new);
        let hash = if problems.is_empty() {
            let (n, params) = (new.to_owned(), self.settings.hash);
            Some(blocking("hash password", move || password::hash_secret(&n, params)).await?)
        } else {
            None
        };
        let target = username.clone();
        self.audited(
            actor,
            action,
            Resource::Users,
            username.clone(),
            now_ms,
            move |tx, path| {
                let Some(hash) = hash else {
                    return Err(invalid("password", &username, problems));
                };
                tx.execute(
                    "UPDATE users SET password_hash = ?1, must_change_password = ?2,
                        failed_logins = 0, locked_until_ms = NULL, updated_at_ms = ?3
                  WHERE id = ?4",
                    params![hash, must_change, now_ms, user.0],
                )
                .map_err(sql(path, "set password"))?;
                let row = get_user(tx, path, user)?;
                user_outbox(tx, path, wire::EditOp::Update, &row, now_ms)?;
                Ok(Audited {
                    value: (),
                    target,
                    detail: serde_json::json!({ "must_change_password": must_change }),
                })
            },
        )
        .await
    }

    /// Sets (or with `None` clears) an agent's PIN (4-8 digits, hashed like passwords).
    pub async fn set_pin(
        &self,
        actor: &Actor,
        user: UserId,
        pin: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let problems = pin.map(password::pin_problems).unwrap_or_default();
        let hash = match pin {
            Some(p) if problems.is_empty() => {
                let (p, params) = (p.to_owned(), self.settings.hash);
                Some(blocking("hash pin", move || password::hash_secret(&p, params)).await?)
            }
            _ => None,
        };
        self.audited(
            actor,
            "set_pin",
            Resource::Users,
            user.to_string(),
            now_ms,
            move |tx, path| {
                let row = get_user(tx, path, user)?;
                if !problems.is_empty() {
                    return Err(invalid("user", &row.username, problems));
                }
                tx.execute(
                    "UPDATE users SET pin_hash = ?1, updated_at_ms = ?2 WHERE id = ?3",
                    params![hash, now_ms, user.0],
                )
                .map_err(sql(path, "set pin"))?;
                let row = get_user(tx, path, user)?;
                user_outbox(tx, path, wire::EditOp::Update, &row, now_ms)?;
                Ok(Audited {
                    value: (),
                    target: row.username,
                    detail: serde_json::json!({ "pin_set": hash.is_some() }),
                })
            },
        )
        .await
    }

    /// Checks an agent's PIN by agent ID (for the phone's agent login feature code).
    /// Returns the user when the PIN matches and the account is enabled and unlocked.
    pub async fn verify_agent_pin(
        &self,
        agent_id: &str,
        pin: &str,
        now_ms: i64,
    ) -> Result<Option<UserId>> {
        let reader = self.reader()?;
        let row: Option<(i64, Option<String>, bool, Option<i64>)> = reader
            .connection()
            .query_row(
                "SELECT id, pin_hash, enabled, locked_until_ms FROM users WHERE agent_id = ?1",
                [agent_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(sql(reader.path(), "read agent"))?;
        drop(reader);
        let Some((id, Some(hash), true, locked)) = row else {
            return Ok(None);
        };
        if locked.is_some_and(|t| t > now_ms) {
            return Ok(None);
        }
        let p = pin.to_owned();
        let good = blocking("verify pin", move || password::verify_secret(&p, &hash)).await?;
        Ok(good.then_some(UserId(id)))
    }

    // --- users -------------------------------------------------------------------

    /// Creates a user (validated: see the module docs; every problem is reported at
    /// once in [`Error::Invalid`]).
    pub async fn create_user(&self, actor: &Actor, new: NewUser, now_ms: i64) -> Result<User> {
        let mut problems = password::password_problems(&new.username, &new.password);
        if let Some(pin) = &new.pin {
            problems.extend(password::pin_problems(pin));
        }
        let hashes = if problems.is_empty() {
            let (pw, pin, params) = (new.password.clone(), new.pin.clone(), self.settings.hash);
            Some(
                blocking("hash password", move || {
                    let pw = password::hash_secret(&pw, params)?;
                    let pin = pin.map(|p| password::hash_secret(&p, params)).transpose()?;
                    Ok((pw, pin))
                })
                .await?,
            )
        } else {
            None
        };
        let fields = UserFields {
            username: new.username.clone(),
            display_name: new.display_name.clone(),
            extension: new.extension.clone(),
            agent_id: new.agent_id.clone(),
            enabled: new.enabled,
            roles: new.roles.clone(),
            groups: new.groups.clone(),
        };
        let must_change = new.must_change_password;
        self.audited(
            actor,
            "create",
            Resource::Users,
            new.username.clone(),
            now_ms,
            move |tx, path| {
                problems.extend(user_field_problems(tx, path, &fields, None)?);
                let Some((pw, pin)) = hashes.filter(|_| problems.is_empty()) else {
                    return Err(invalid("user", &fields.username, problems));
                };
                let id = insert_user(tx, path, &fields, &pw, pin.as_deref(), must_change, now_ms)?;
                let user = get_user(tx, path, id)?;
                user_outbox(tx, path, wire::EditOp::Create, &user, now_ms)?;
                Ok(Audited {
                    target: user.username.clone(),
                    detail: serde_json::json!({ "user": &user }),
                    value: user,
                })
            },
        )
        .await
    }

    /// Changes a user. The `installer` account cannot be changed this way.
    pub async fn update_user(
        &self,
        actor: &Actor,
        id: UserId,
        patch: UserPatch,
        now_ms: i64,
    ) -> Result<User> {
        self.audited(
            actor,
            "update",
            Resource::Users,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let before = get_user(tx, path, id)?;
                if before.username == INSTALLER_USERNAME {
                    return Err(invalid(
                        "user",
                        INSTALLER_USERNAME,
                        vec![problem(
                            "username",
                            "the installer account cannot be edited",
                        )],
                    ));
                }
                let fields = UserFields {
                    username: before.username.clone(),
                    display_name: patch
                        .display_name
                        .clone()
                        .unwrap_or_else(|| before.display_name.clone()),
                    extension: patch.extension.clone().unwrap_or(before.extension.clone()),
                    agent_id: patch.agent_id.clone().unwrap_or(before.agent_id.clone()),
                    enabled: patch.enabled.unwrap_or(before.enabled),
                    roles: patch.roles.clone().unwrap_or(before.roles.clone()),
                    groups: patch
                        .groups
                        .clone()
                        .unwrap_or(before.groups.iter().map(|m| m.group.clone()).collect()),
                };
                let mut problems = user_field_problems(tx, path, &fields, Some(id))?;
                let recording = patch.recording.clone().unwrap_or(before.recording.clone());
                if crate::config::RecordingPolicy::parse(&recording).is_none() {
                    problems.push(problem(
                        "recording",
                        format!(
                            "{recording:?}: must be {}",
                            crate::config::RecordingPolicy::NAMES
                        ),
                    ));
                }
                if !problems.is_empty() {
                    return Err(invalid("user", &fields.username, problems));
                }
                let display_name = if fields.display_name.is_empty() {
                    fields.username.clone()
                } else {
                    fields.display_name.clone()
                };
                tx.execute(
                "UPDATE users SET display_name = ?1, extension = ?2, agent_id = ?3, enabled = ?4,
                        updated_at_ms = ?5, recording = ?7 WHERE id = ?6",
                params![
                    display_name,
                    fields.extension,
                    fields.agent_id,
                    fields.enabled,
                    now_ms,
                    id.0,
                    recording
                ],
            )
            .map_err(sql(path, "update user"))?;
                if patch.roles.is_some() {
                    set_user_roles(tx, path, id, &fields.roles)?;
                }
                if patch.groups.is_some() {
                    set_user_groups(tx, path, id, &fields.groups)?;
                }
                let after = get_user(tx, path, id)?;
                user_outbox(tx, path, wire::EditOp::Update, &after, now_ms)?;
                Ok(Audited {
                    target: after.username.clone(),
                    detail: serde_json::json!({ "before": before, "after": &after }),
                    value: after,
                })
            },
        )
        .await
    }

    /// Deletes a user (not the installer, and not oneself: `actor.username`).
    pub async fn delete_user(&self, actor: &Actor, id: UserId, now_ms: i64) -> Result<()> {
        let me = actor.username.clone();
        self.audited(
            actor,
            "delete",
            Resource::Users,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let user = get_user(tx, path, id)?;
                if user.username == INSTALLER_USERNAME || user.username == me {
                    return Err(invalid(
                        "user",
                        &user.username,
                        vec![problem(
                            "username",
                            "the installer account and your own account cannot be deleted",
                        )],
                    ));
                }
                // Before the delete: the outbox row carries the hashes it reads.
                user_outbox(tx, path, wire::EditOp::Delete, &user, now_ms)?;
                tx.execute("DELETE FROM users WHERE id = ?1", [id.0])
                    .map_err(sql(path, "delete user"))?;
                Ok(Audited {
                    value: (),
                    target: user.username.clone(),
                    detail: serde_json::json!({ "user": user }),
                })
            },
        )
        .await
    }

    // --- roles -------------------------------------------------------------------

    /// Creates a custom role.
    pub async fn create_role(&self, actor: &Actor, spec: RoleSpec, now_ms: i64) -> Result<Role> {
        self.audited(
            actor,
            "create",
            Resource::Roles,
            spec.name.clone(),
            now_ms,
            move |tx, path| {
                let problems = role_spec_problems(tx, path, &spec, None)?;
                if !problems.is_empty() {
                    return Err(invalid("role", &spec.name, problems));
                }
                tx.execute(
                    "INSERT INTO roles (name, description, builtin, revision, updated_at_ms)
                 VALUES (?1, ?2, 0, 0, ?3)",
                    params![spec.name, spec.description, now_ms],
                )
                .map_err(sql(path, "insert role"))?;
                let id = RoleId(tx.last_insert_rowid());
                insert_permissions(tx, id.0, &spec.permissions)
                    .map_err(sql(path, "insert role permissions"))?;
                bump_generation(tx).map_err(sql(path, "bump rbac generation"))?;
                let role = get_role(tx, path, id)?;
                role_outbox(tx, path, wire::EditOp::Create, &role, now_ms)?;
                Ok(Audited {
                    target: role.name.clone(),
                    detail: serde_json::json!({ "role": &role }),
                    value: role,
                })
            },
        )
        .await
    }

    /// Replaces a custom role's name, description and grants. Built-in roles are
    /// [`Error::BuiltinRoleImmutable`].
    pub async fn update_role(
        &self,
        actor: &Actor,
        id: RoleId,
        spec: RoleSpec,
        now_ms: i64,
    ) -> Result<Role> {
        self.audited(
            actor,
            "update",
            Resource::Roles,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let before = get_role(tx, path, id)?;
                if before.builtin {
                    return Err(Error::BuiltinRoleImmutable {
                        name: before.name,
                        op: "edited",
                    });
                }
                let problems = role_spec_problems(tx, path, &spec, Some(id))?;
                if !problems.is_empty() {
                    return Err(invalid("role", &spec.name, problems));
                }
                tx.execute(
                "UPDATE roles SET name = ?1, description = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![spec.name, spec.description, now_ms, id.0],
            )
            .map_err(sql(path, "update role"))?;
                tx.execute("DELETE FROM role_permissions WHERE role_id = ?1", [id.0])
                    .map_err(sql(path, "clear role permissions"))?;
                insert_permissions(tx, id.0, &spec.permissions)
                    .map_err(sql(path, "insert role permissions"))?;
                bump_generation(tx).map_err(sql(path, "bump rbac generation"))?;
                let after = get_role(tx, path, id)?;
                role_outbox(tx, path, wire::EditOp::Update, &after, now_ms)?;
                Ok(Audited {
                    target: after.name.clone(),
                    detail: serde_json::json!({ "before": before, "after": &after }),
                    value: after,
                })
            },
        )
        .await
    }

    /// Deletes a custom role that no user holds.
    pub async fn delete_role(&self, actor: &Actor, id: RoleId, now_ms: i64) -> Result<()> {
        self.audited(
            actor,
            "delete",
            Resource::Roles,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let role = get_role(tx, path, id)?;
                if role.builtin {
                    return Err(Error::BuiltinRoleImmutable {
                        name: role.name,
                        op: "deleted",
                    });
                }
                let users: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM user_roles WHERE role_id = ?1",
                        [id.0],
                        |r| r.get(0),
                    )
                    .map_err(sql(path, "count role users"))?;
                if users > 0 {
                    return Err(Error::RoleInUse {
                        name: role.name,
                        users,
                    });
                }
                tx.execute("DELETE FROM roles WHERE id = ?1", [id.0])
                    .map_err(sql(path, "delete role"))?;
                bump_generation(tx).map_err(sql(path, "bump rbac generation"))?;
                role_outbox(tx, path, wire::EditOp::Delete, &role, now_ms)?;
                Ok(Audited {
                    value: (),
                    target: role.name.clone(),
                    detail: serde_json::json!({ "role": role }),
                })
            },
        )
        .await
    }

    // --- groups ------------------------------------------------------------------

    /// Creates a group with its members.
    pub async fn create_group(&self, actor: &Actor, spec: GroupSpec, now_ms: i64) -> Result<Group> {
        self.audited(actor, "create", Resource::Groups, spec.name.clone(), now_ms, move |tx, path| {
            let problems = group_spec_problems(tx, path, &spec, None)?;
            if !problems.is_empty() {
                return Err(invalid("group", &spec.name, problems));
            }
            tx.execute(
                "INSERT INTO groups (name, description, revision, updated_at_ms) VALUES (?1, ?2, 0, ?3)",
                params![spec.name, spec.description, now_ms],
            )
            .map_err(sql(path, "insert group"))?;
            let id = GroupId(tx.last_insert_rowid());
            set_group_members(tx, path, id, &spec.members)?;
            let group = get_group(tx, path, id)?;
            group_outbox(tx, path, wire::EditOp::Create, &group, now_ms)?;
            membership_outbox(tx, path, &[], &group.members, now_ms)?;
            Ok(Audited {
                target: group.name.clone(),
                detail: serde_json::json!({ "group": &group }),
                value: group,
            })
        })
        .await
    }

    /// Replaces a group's name, description and members.
    pub async fn update_group(
        &self,
        actor: &Actor,
        id: GroupId,
        spec: GroupSpec,
        now_ms: i64,
    ) -> Result<Group> {
        self.audited(
            actor,
            "update",
            Resource::Groups,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let before = get_group(tx, path, id)?;
                let problems = group_spec_problems(tx, path, &spec, Some(id))?;
                if !problems.is_empty() {
                    return Err(invalid("group", &spec.name, problems));
                }
                tx.execute(
                "UPDATE groups SET name = ?1, description = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![spec.name, spec.description, now_ms, id.0],
            )
            .map_err(sql(path, "update group"))?;
                set_group_members(tx, path, id, &spec.members)?;
                let after = get_group(tx, path, id)?;
                group_outbox(tx, path, wire::EditOp::Update, &after, now_ms)?;
                membership_outbox(tx, path, &before.members, &after.members, now_ms)?;
                Ok(Audited {
                    target: after.name.clone(),
                    detail: serde_json::json!({ "before": before, "after": &after }),
                    value: after,
                })
            },
        )
        .await
    }

    /// Deletes a group (its memberships go with it).
    pub async fn delete_group(&self, actor: &Actor, id: GroupId, now_ms: i64) -> Result<()> {
        self.audited(
            actor,
            "delete",
            Resource::Groups,
            id.to_string(),
            now_ms,
            move |tx, path| {
                let group = get_group(tx, path, id)?;
                // Campaigns hold their group (ON DELETE RESTRICT): a conflict in words,
                // not the constraint's error.
                let campaigns: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM campaigns WHERE group_id = ?1",
                        [id.0],
                        |r| r.get(0),
                    )
                    .map_err(sql(path, "count group campaigns"))?;
                if campaigns > 0 {
                    return Err(Error::GroupInUse {
                        name: group.name,
                        campaigns,
                    });
                }
                tx.execute("DELETE FROM groups WHERE id = ?1", [id.0])
                    .map_err(sql(path, "delete group"))?;
                group_outbox(tx, path, wire::EditOp::Delete, &group, now_ms)?;
                Ok(Audited {
                    value: (),
                    target: group.name.clone(),
                    detail: serde_json::json!({ "group": group }),
                })
            },
        )
        .await
    }

    // --- enrollment --------------------------------------------------------------

    /// Marks the box enrolled with HQ and retires the installer account (disabled; its
    /// logins are refused with [`LoginError::InstallerRetired`]).
    pub async fn set_enrolled(&self, actor: &Actor, now_ms: i64) -> Result<()> {
        self.audited(
            actor,
            "enroll",
            Resource::Provisioning,
            String::new(),
            now_ms,
            move |tx, path| {
                tx.execute(
                    "UPDATE box_state SET enrolled = 1, enrolled_at_ms = ?1 WHERE only = 1",
                    [now_ms],
                )
                .map_err(sql(path, "set enrolled"))?;
                tx.execute(
                    "UPDATE users SET enabled = 0, updated_at_ms = ?1 WHERE username = ?2",
                    params![now_ms, INSTALLER_USERNAME],
                )
                .map_err(sql(path, "retire installer"))?;
                Ok(Audited {
                    value: (),
                    target: "box".to_owned(),
                    detail: serde_json::json!({ "installer": "retired" }),
                })
            },
        )
        .await
    }

    /// Writes one audit row in its own transaction (see [`crate::audit::audit`]).
    pub async fn audit(&self, entry: AuditEntry, now_ms: i64) -> Result<audit::AuditRecord> {
        audit::audit(&self.writer, entry, now_ms).await
    }

    /// The store writer this handle writes through.
    pub fn writer(&self) -> &StoreWriter {
        &self.writer
    }
}

/// A hash of a throwaway password, verified against when the username is unknown.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Creates the installer account at store open if the box is not enrolled (run it
/// between [`Store::open`] and [`Store::spawn_writer`]).
///
/// The password hash comes from `[auth] installer_password_hash` when set; otherwise
/// a password is generated, written to `<data_dir>/installer-label.txt` (mode 0600,
/// the stand-in for the label printed on the box) and the path — never the password —
/// is logged. An existing installer keeps its password unless the config sets a
/// different hash. Audited (source `system`).
pub fn bootstrap_installer(
    store: &mut Store,
    config_hash: Option<&str>,
    data_dir: &Path,
    params: HashParams,
    now_ms: i64,
) -> Result<InstallerStatus> {
    let (is_enrolled, existing) = store.transact("read installer", |tx, path| {
        let existing: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, password_hash FROM users WHERE username = ?1",
                [INSTALLER_USERNAME],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(path, "read installer"))?;
        Ok((enrolled(tx, path)?, existing))
    })?;
    if is_enrolled {
        return Ok(InstallerStatus::Retired);
    }
    let record = |tx: &Connection, path: &Path, what: &str| {
        audit::append(
            tx,
            path,
            &AuditEntry {
                actor: Actor::system(),
                action: what.to_owned(),
                resource: Resource::Users.as_str().to_owned(),
                target: INSTALLER_USERNAME.to_owned(),
                result: AuditResult::Ok,
                detail: serde_json::json!({}),
            },
            now_ms,
        )
    };
    if let Some((id, stored)) = existing {
        if let Some(hash) = config_hash.filter(|h| *h != stored) {
            store.transact("update installer", |tx, path| {
                tx.execute(
                    "UPDATE users SET password_hash = ?1, updated_at_ms = ?2 WHERE id = ?3",
                    params![hash, now_ms, id],
                )
                .map_err(sql(path, "update installer"))?;
                record(tx, path, "set_installer_password")?;
                Ok(())
            })?;
        }
        return Ok(InstallerStatus::Present);
    }
    let (hash, status) = match config_hash {
        Some(h) => (h.to_owned(), InstallerStatus::CreatedFromConfig),
        None => {
            let password = password::generate_password()?;
            let file = data_dir.join(INSTALLER_LABEL_FILE);
            write_private(&file, &format!("installer password: {password}\n"))?;
            tracing::warn!(
                path = %file.display(),
                "installer account created; its password is in this file (the box label)"
            );
            (
                password::hash_secret(&password, params)?,
                InstallerStatus::CreatedWithLabel(file),
            )
        }
    };
    store.transact("create installer", |tx, path| {
        let fields = UserFields {
            username: INSTALLER_USERNAME.to_owned(),
            display_name: "Installer".to_owned(),
            enabled: true,
            roles: vec![INSTALLER.to_owned()],
            ..UserFields::default()
        };
        insert_user(tx, path, &fields, &hash, None, false, now_ms)?;
        record(tx, path, "create")?;
        Ok(())
    })?;
    Ok(status)
}

/// Writes `text` to `path` readable by the owner only (0600), replacing it atomically.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::FileWrite {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Creates a user from the console (`branchd user-add`), before the writer thread
/// starts; audited with source `console`. Same validation as [`Accounts::create_user`].
pub fn console_create_user(
    store: &mut Store,
    new: &NewUser,
    params: HashParams,
    now_ms: i64,
) -> Result<User> {
    let mut problems = password::password_problems(&new.username, &new.password);
    if let Some(pin) = &new.pin {
        problems.extend(password::pin_problems(pin));
    }
    let hashes = if problems.is_empty() {
        Some((
            password::hash_secret(&new.password, params)?,
            new.pin
                .as_deref()
                .map(|p| password::hash_secret(p, params))
                .transpose()?,
        ))
    } else {
        None
    };
    let fields = UserFields {
        username: new.username.clone(),
        display_name: new.display_name.clone(),
        extension: new.extension.clone(),
        agent_id: new.agent_id.clone(),
        enabled: new.enabled,
        roles: new.roles.clone(),
        groups: new.groups.clone(),
    };
    let result = store.transact("console create user", |tx, path| {
        problems.extend(user_field_problems(tx, path, &fields, None)?);
        let Some((pw, pin)) = hashes.filter(|_| problems.is_empty()) else {
            return Err(invalid("user", &fields.username, problems));
        };
        let id = insert_user(
            tx,
            path,
            &fields,
            &pw,
            pin.as_deref(),
            new.must_change_password,
            now_ms,
        )?;
        let user = get_user(tx, path, id)?;
        user_outbox(tx, path, wire::EditOp::Create, &user, now_ms)?;
        audit::append(
            tx,
            path,
            &AuditEntry {
                actor: Actor::new("root", "console"),
                action: "create".to_owned(),
                resource: Resource::Users.as_str().to_owned(),
                target: user.username.clone(),
                result: AuditResult::Ok,
                detail: serde_json::json!({ "user": &user }),
            },
            now_ms,
        )?;
        Ok(user)
    });
    if let Err(e) = &result {
        let failed = store.transact("audit console failure", |tx, path| {
            audit::append(
                tx,
                path,
                &AuditEntry {
                    actor: Actor::new("root", "console"),
                    action: "create".to_owned(),
                    resource: Resource::Users.as_str().to_owned(),
                    target: new.username.clone(),
                    result: AuditResult::Failed,
                    detail: serde_json::json!({ "error": e.to_string() }),
                },
                now_ms,
            )
        });
        if let Err(audit_error) = failed {
            tracing::warn!(error = %audit_error, "failed console operation not audited");
        }
    }
    result
}
