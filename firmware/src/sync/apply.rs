//! Applying what HQ sends down: change-feed pages, snapshots, and the rows that come
//! back with conflicts. Plain functions over one open transaction; the caller (the
//! writer thread, through `StoreWriter::transact`) commits.
//!
//! Rules (see also the [module docs](super)):
//!
//! - Every row is checked before it is written, and the first bad row refuses the whole
//!   page or snapshot with [`Error::SyncRefused`] naming its revision, kind, key and
//!   problem; the caller's transaction then rolls back, so nothing of it is applied and
//!   the cursor does not move.
//! - Nothing here writes outbox rows: rows from HQ are not echoed back.
//! - A feed change of a user, role or group with an edit of it still in the outbox is
//!   skipped (counted in [`Applied::skipped`]): HQ has not decided that edit yet, and
//!   applying the feed's older row would undo the box's change until the edit's own
//!   revision came back (for as long as the WAN is down). HQ's verdict arrives as a
//!   later feed change (the edit applied) or a conflict (HQ's row taken, below).
//! - Users: matched by username (the row id, and so open sessions, survive an update);
//!   hashes are taken as given (argon2id PHC strings); roles and group memberships are
//!   replaced. Failed-login counters and lockouts stay the box's own. The username
//!   `installer` is the box's break-glass account and is refused from HQ.
//! - Roles: matched by name, permissions replaced, `rbac_generation` bumped. Built-in
//!   roles are the firmware's own data: HQ rows for them are skipped. Deleting a role
//!   removes it from the users holding it.
//! - Groups: matched by name; memberships travel on the users and are kept on a group
//!   update, removed with the group on delete.
//! - Extensions: HQ decides number, name and call waiting; the FXS port stays what the
//!   box's config says (never written from HQ; a new HQ extension has no port). When HQ
//!   deletes an extension the config still maps to a port, the row stays as a local one
//!   (revision 0).
//! - Blacklist entries go to the `blacklist` table as HQ's (source `hq`; see
//!   [`crate::blacklist::store`]): a pattern that does not validate refuses the page;
//!   a local entry with the same pattern becomes HQ's; a delete or a snapshot removes
//!   only HQ's entries, never the box's own. [`Applied::blacklist_changed`] tells the
//!   caller to have the list reloaded.
//! - Contacts go to the `customers` tables as HQ's (source `hq`, keyed by HQ's id; see
//!   [`crate::customers::store`]): a number that does not normalise refuses the page; a
//!   delete or a snapshot removes only HQ's contacts, never the box's own customers.
//! - Queues become the call center's rows (`queues`, `queue_members`, the max-wait
//!   overflow; see [`crate::acd::store::upsert_hq_queue`]) and are also kept as their
//!   wire JSON in `hq_rows`; a delete removes HQ's queue (cascading to its members),
//!   never one made on the box. [`Applied::acd_changed`] (also set by users) has the
//!   call center reconfigured.
//! - Dial routes are checked as call control takes them (a bad prefix or `via`
//!   refuses the page) and stored as their wire JSON in `hq_rows`;
//!   [`Applied::dial_routes_changed`] has call control reload them ([`dial_routes`]).
//! - A snapshot replaces everything HQ masters: rows it does not hold are deleted,
//!   except the installer account, extensions the config maps to a port (they become
//!   local rows), and rows made on the box (revision 0) whose edit is still pending in
//!   the outbox (HQ has not seen them yet; they go up and come back through the feed).

use std::collections::BTreeSet;
use std::path::Path;

use branchline_sync::wire::{self, Change, Entity, EntityKind};
use rusqlite::{params, Connection, OptionalExtension};

use crate::accounts::{self, INSTALLER_USERNAME};
use crate::audit::{self, Actor, AuditEntry, AuditResult};
use crate::blacklist;
use crate::config::{ExtensionNumber, MAX_NAME_CHARS};
use crate::customers;
use crate::error::{Error, Result};
use crate::rbac::builtin::{bump_generation, insert_permissions};
use crate::rbac::{Action, Permission, Resource, Scope};

/// What applying a page or snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Applied {
    /// Rows upserted.
    pub upserted: usize,
    /// Rows deleted (by a delete change, or as missing from a snapshot).
    pub deleted: usize,
    /// Rows skipped (built-in roles, and feed changes of rows with an edit of the box
    /// still pending).
    pub skipped: usize,
    /// Whether a blacklist entry was written or deleted (call control must reload it).
    pub blacklist_changed: bool,
    /// Whether a user was written or deleted (the call center's agents may have
    /// changed: call control reconfigures its ACD).
    pub acd_changed: bool,
    /// Whether a dial route was written or deleted (call control reloads its
    /// outside-line routes; see [`dial_routes`]).
    pub dial_routes_changed: bool,
    /// The cursor stored with them.
    pub cursor: i64,
}

/// Why one row is refused, before the page-level context is added.
struct Problem(String);

impl<T: Into<String>> From<T> for Problem {
    fn from(s: T) -> Self {
        Problem(s.into())
    }
}

type Checked<T = ()> = std::result::Result<T, Refusal>;

/// A refused row, or a store error while applying it.
enum Refusal {
    Row(Problem),
    Store(Error),
}

impl From<Problem> for Refusal {
    fn from(p: Problem) -> Self {
        Refusal::Row(p)
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Store(e)
    }
}

fn refuse(p: impl Into<String>) -> Refusal {
    Refusal::Row(Problem(p.into()))
}

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The name of an entity kind (as in the wire's `kind` tag).
pub fn entity_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::User => "user",
        EntityKind::Role => "role",
        EntityKind::Group => "group",
        EntityKind::Extension => "extension",
        EntityKind::Queue => "queue",
        EntityKind::Contact => "contact",
        EntityKind::Blacklist => "blacklist",
        EntityKind::DialRoute => "dial_route",
    }
}

/// The RBAC resource an entity kind belongs to (for audit rows).
pub fn entity_resource(kind: EntityKind) -> Resource {
    match kind {
        EntityKind::User => Resource::Users,
        EntityKind::Role => Resource::Roles,
        EntityKind::Group => Resource::Groups,
        EntityKind::Extension => Resource::Extensions,
        EntityKind::Queue => Resource::Queues,
        EntityKind::Contact => Resource::Contacts,
        EntityKind::Blacklist => Resource::Blacklist,
        EntityKind::DialRoute => Resource::SystemConfig,
    }
}

/// Adds the page context to a refusal.
fn in_context(what: &'static str, change: &Change, r: Refusal) -> Error {
    match r {
        Refusal::Store(e) => e,
        Refusal::Row(Problem(problem)) => Error::SyncRefused {
            what,
            revision: change.revision,
            entity: entity_name(change.entity),
            key: change.key.clone(),
            problem,
        },
    }
}

/// The stored down cursor.
pub fn cursor(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row(
        "SELECT down_cursor FROM sync_state WHERE only = 1",
        [],
        |r| r.get(0),
    )
    .map_err(sql(path, "read down cursor"))
}

fn store_cursor(conn: &Connection, path: &Path, cursor: i64, now_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE sync_state SET down_cursor = ?1, last_down_ok_ms = ?2 WHERE only = 1",
        params![cursor, now_ms],
    )
    .map_err(sql(path, "store down cursor"))?;
    Ok(())
}

/// Applies a change-feed page or a snapshot and stores its cursor, in the caller's
/// transaction. A page must continue from the stored cursor (revisions ascending,
/// after it); a snapshot may move the cursor anywhere (HQ restored from a backup).
pub fn apply_down(
    conn: &Connection,
    path: &Path,
    response: &wire::DownResponse,
    now_ms: i64,
) -> Result<Applied> {
    match response {
        wire::DownResponse::Page {
            version,
            changes,
            cursor: next,
            ..
        } => {
            check_version(*version, "page")?;
            apply_page(conn, path, changes, *next, now_ms)
        }
        wire::DownResponse::Snapshot {
            version,
            rows,
            cursor: next,
        } => {
            check_version(*version, "snapshot")?;
            apply_snapshot(conn, path, rows, *next, now_ms)
        }
    }
}

fn check_version(version: u16, what: &'static str) -> Result<()> {
    if version == wire::PROTOCOL_VERSION {
        return Ok(());
    }
    Err(Error::SyncRefused {
        what,
        revision: 0,
        entity: "protocol",
        key: version.to_string(),
        problem: format!(
            "protocol version {version} is not the box's ({})",
            wire::PROTOCOL_VERSION
        ),
    })
}

fn apply_page(
    conn: &Connection,
    path: &Path,
    changes: &[Change],
    next: i64,
    now_ms: i64,
) -> Result<Applied> {
    let current = cursor(conn, path)?;
    let mut applied = Applied::default();
    let mut last = current;
    let mut roles_changed = false;
    for change in changes {
        if change.revision <= last {
            return Err(in_context(
                "page",
                change,
                refuse(format!(
                    "revision {} does not come after {last} (the cursor or the previous change)",
                    change.revision
                )),
            ));
        }
        last = change.revision;
        let outcome = if edit_pending(conn, path, change.entity, &change.key)? {
            // HQ has not decided the box's own edit of this row yet: its verdict comes
            // back as a later change of the feed or as a conflict (HQ's row taken).
            // The change is still checked in full (applied, then rolled back), so a bad
            // row refuses the page here as anywhere.
            conn.execute_batch("SAVEPOINT pending_edit")
                .map_err(sql(path, "savepoint"))?;
            let checked = apply_change(conn, path, change, now_ms);
            conn.execute_batch("ROLLBACK TO pending_edit; RELEASE pending_edit")
                .map_err(sql(path, "roll back savepoint"))?;
            checked.map_err(|r| in_context("page", change, r))?;
            tracing::debug!(key = %change.key, revision = change.revision,
                "sync: feed change left for the box's pending edit of the row");
            Outcome::Skipped
        } else {
            apply_change(conn, path, change, now_ms).map_err(|r| in_context("page", change, r))?
        };
        roles_changed |= change.entity == EntityKind::Role && outcome != Outcome::Skipped;
        applied.blacklist_changed |=
            change.entity == EntityKind::Blacklist && outcome != Outcome::Skipped;
        applied.acd_changed |= matches!(change.entity, EntityKind::User | EntityKind::Queue)
            && outcome != Outcome::Skipped;
        applied.dial_routes_changed |=
            change.entity == EntityKind::DialRoute && outcome != Outcome::Skipped;
        applied.count(outcome);
    }
    if next < last {
        return Err(Error::SyncRefused {
            what: "page",
            revision: next,
            entity: "cursor",
            key: next.to_string(),
            problem: format!(
                "the page's cursor {next} is behind its own changes or the box's cursor {last}"
            ),
        });
    }
    if roles_changed {
        bump_generation(conn).map_err(sql(path, "bump rbac generation"))?;
    }
    store_cursor(conn, path, next, now_ms)?;
    applied.cursor = next;
    Ok(applied)
}

/// What [`apply_change`] did to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Upserted,
    Deleted,
    /// A delete of a row the box does not have, or a built-in role.
    Skipped,
}

impl Applied {
    fn count(&mut self, o: Outcome) {
        match o {
            Outcome::Upserted => self.upserted += 1,
            Outcome::Deleted => self.deleted += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }
}

/// Whether an edit the box made of this row (users, roles and groups are edited on the
/// box) is still in the outbox, that is, not yet acknowledged by HQ. One seek on the
/// partial index `outbox_pending_edits`.
fn edit_pending(conn: &Connection, path: &Path, kind: EntityKind, key: &str) -> Result<bool> {
    let record = match kind {
        EntityKind::User => wire::RecordKind::UserChange,
        EntityKind::Role => wire::RecordKind::RoleChange,
        EntityKind::Group => wire::RecordKind::GroupChange,
        _ => return Ok(false),
    };
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM outbox
                         WHERE kind = ?1 AND record_key = ?2
                           AND kind IN ('user_change', 'role_change', 'group_change'))",
    )
    .and_then(|mut s| s.query_row(params![record.as_str(), key], |r| r.get(0)))
    .map_err(sql(path, "look up pending edit"))
}

/// Checks a change's envelope: positive revision, row kind and key matching it.
fn check_envelope(change: &Change) -> Checked {
    if change.revision <= 0 {
        return Err(refuse(format!(
            "revision {} is not positive",
            change.revision
        )));
    }
    if change.key.is_empty() || change.key.len() > 256 {
        return Err(refuse("key must be 1 to 256 bytes"));
    }
    if let Some(row) = &change.row {
        if row.kind() != change.entity {
            return Err(refuse(format!(
                "the row is a {} but the change is about a {}",
                entity_name(row.kind()),
                entity_name(change.entity)
            )));
        }
        if row.key() != change.key {
            return Err(refuse(format!(
                "the row's key {:?} differs from the change's key",
                row.key()
            )));
        }
    }
    Ok(())
}

/// Applies one change (upsert or delete), checked first.
fn apply_change(conn: &Connection, path: &Path, change: &Change, now_ms: i64) -> Checked<Outcome> {
    check_envelope(change)?;
    let rev = change.revision;
    match &change.row {
        Some(Entity::User(u)) => {
            upsert_user(conn, path, u, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(Entity::Role(r)) => upsert_role(conn, path, r, rev, now_ms),
        Some(Entity::Group(g)) => {
            upsert_group(conn, path, g, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(Entity::Extension(e)) => {
            upsert_extension(conn, path, e, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(Entity::Blacklist(b)) => {
            upsert_blacklist(conn, path, b, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(Entity::Contact(c)) => {
            upsert_contact(conn, path, c, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(row @ Entity::Queue(q)) => {
            upsert_queue(conn, path, row, q, rev, now_ms).map(|()| Outcome::Upserted)
        }
        Some(row @ Entity::DialRoute(d)) => {
            check_dial_route(d)?;
            upsert_hq_row(conn, path, row, rev, now_ms).map(|()| Outcome::Upserted)
        }
        None => delete_row(conn, path, change.entity, &change.key, now_ms),
    }
}

// --- users ----------------------------------------------------------------------------

fn check_user(conn: &Connection, path: &Path, u: &wire::User) -> Checked {
    if u.username == INSTALLER_USERNAME {
        return Err(refuse(
            "username \"installer\" is reserved for the box's local installer account",
        ));
    }
    let first = |problems: Vec<crate::error::FieldProblem>| -> Checked {
        match problems.into_iter().next() {
            Some(p) => Err(refuse(p.to_string())),
            None => Ok(()),
        }
    };
    first(accounts::username_problems(&u.username))?;
    first(accounts::display_name_problems(&u.display_name))?;
    accounts::password::check_phc(&u.password_hash)
        .map_err(|m| refuse(format!("password_hash: {m}")))?;
    if let Some(pin) = &u.pin_hash {
        accounts::password::check_phc(pin).map_err(|m| refuse(format!("pin_hash: {m}")))?;
    }
    if let Some(agent) = &u.agent_id {
        if !accounts::agent_id_format(agent) {
            return Err(refuse(format!(
                "agent_id {agent:?}: must be 2 to 10 digits"
            )));
        }
        let holder: Option<String> = conn
            .query_row(
                "SELECT username FROM users WHERE agent_id = ?1 AND username <> ?2",
                params![agent, u.username],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, "look up agent id"))?;
        if let Some(holder) = holder {
            return Err(refuse(format!(
                "agent_id {agent:?} is already user {holder:?}'s"
            )));
        }
    }
    if let Some(ext) = &u.extension {
        ext.parse::<ExtensionNumber>()
            .map_err(|e| refuse(format!("extension: {e}")))?;
    }
    let mut seen = BTreeSet::new();
    for (i, role) in u.roles.iter().enumerate() {
        if !seen.insert(role) {
            return Err(refuse(format!("roles[{i}]: role {role:?} is listed twice")));
        }
        if role == crate::rbac::builtin::INSTALLER {
            return Err(refuse(format!(
                "roles[{i}]: role {role:?} is reserved for the installer account"
            )));
        }
        if role_id(conn, path, role)?.is_none() {
            return Err(refuse(format!("roles[{i}]: unknown role {role:?}")));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, m) in u.groups.iter().enumerate() {
        if !seen.insert(&m.group) {
            return Err(refuse(format!(
                "groups[{i}]: group {:?} is listed twice",
                m.group
            )));
        }
        if group_id(conn, path, &m.group)?.is_none() {
            return Err(refuse(format!("groups[{i}]: unknown group {:?}", m.group)));
        }
    }
    Ok(())
}

fn role_id(conn: &Connection, path: &Path, name: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM roles WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(sql(path, "look up role"))
}

fn group_id(conn: &Connection, path: &Path, name: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM groups WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(sql(path, "look up group"))
}

fn upsert_user(
    conn: &Connection,
    path: &Path,
    u: &wire::User,
    revision: i64,
    now_ms: i64,
) -> Checked {
    check_user(conn, path, u)?;
    let display_name = if u.display_name.is_empty() {
        &u.username
    } else {
        &u.display_name
    };
    let existing: Option<i64> = conn
        .query_row(
            "SELECT id FROM users WHERE username = ?1",
            [&u.username],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "look up user"))?;
    let id = match existing {
        Some(id) => {
            conn.execute(
                "UPDATE users SET display_name = ?1, password_hash = ?2, pin_hash = ?3,
                        agent_id = ?4, extension = ?5, enabled = ?6, must_change_password = ?7,
                        revision = ?8, updated_at_ms = ?9
                  WHERE id = ?10",
                params![
                    display_name,
                    u.password_hash,
                    u.pin_hash,
                    u.agent_id,
                    u.extension,
                    u.enabled,
                    u.must_change_password,
                    revision,
                    now_ms,
                    id
                ],
            )
            .map_err(sql(path, "update user from hq"))?;
            id
        }
        None => {
            conn.execute(
                "INSERT INTO users (username, display_name, password_hash, agent_id, pin_hash,
                                    extension, enabled, must_change_password, failed_logins,
                                    locked_until_ms, revision, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, ?9, ?10, ?10)",
                params![
                    u.username,
                    display_name,
                    u.password_hash,
                    u.agent_id,
                    u.pin_hash,
                    u.extension,
                    u.enabled,
                    u.must_change_password,
                    revision,
                    now_ms
                ],
            )
            .map_err(sql(path, "insert user from hq"))?;
            conn.last_insert_rowid()
        }
    };
    conn.execute("DELETE FROM user_roles WHERE user_id = ?1", [id])
        .map_err(sql(path, "clear user roles"))?;
    for role in &u.roles {
        // Checked above: the role exists.
        let role = role_id(conn, path, role)?.ok_or_else(|| refuse("role vanished"))?;
        conn.execute(
            "INSERT INTO user_roles (user_id, role_id) VALUES (?1, ?2)",
            params![id, role],
        )
        .map_err(sql(path, "insert user role"))?;
    }
    conn.execute("DELETE FROM group_members WHERE user_id = ?1", [id])
        .map_err(sql(path, "clear user groups"))?;
    for m in &u.groups {
        let group = group_id(conn, path, &m.group)?.ok_or_else(|| refuse("group vanished"))?;
        conn.execute(
            "INSERT INTO group_members (group_id, user_id, is_group_admin) VALUES (?1, ?2, ?3)",
            params![group, id, m.admin],
        )
        .map_err(sql(path, "insert group member"))?;
    }
    Ok(())
}

// --- roles ----------------------------------------------------------------------------

fn is_builtin_role(conn: &Connection, path: &Path, name: &str) -> Result<bool> {
    let builtin: Option<bool> = conn
        .query_row("SELECT builtin FROM roles WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql(path, "look up role"))?;
    Ok(builtin.unwrap_or(false))
}

fn check_role(r: &wire::Role) -> Checked<Vec<Permission>> {
    if let Some(p) = accounts::role_name_problems(&r.name).into_iter().next() {
        return Err(refuse(p.to_string()));
    }
    if r.description.chars().count() > 200 {
        return Err(refuse("description: must be at most 200 characters"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(r.permissions.len());
    for (i, p) in r.permissions.iter().enumerate() {
        let bad = |e: crate::error::InvalidValue| refuse(format!("permissions[{i}]: {e}"));
        let resource: Resource = p.resource.parse().map_err(bad)?;
        let action: Action = p.action.parse().map_err(bad)?;
        let scope: Scope = p.scope.parse().map_err(bad)?;
        if !seen.insert((resource, action)) {
            return Err(refuse(format!(
                "permissions[{i}]: {resource}.{action} is granted twice"
            )));
        }
        out.push(Permission::new(resource, action, scope));
    }
    Ok(out)
}

fn upsert_role(
    conn: &Connection,
    path: &Path,
    r: &wire::Role,
    revision: i64,
    now_ms: i64,
) -> Checked<Outcome> {
    if is_builtin_role(conn, path, &r.name)? {
        tracing::debug!(role = %r.name, "built-in role from HQ skipped (the firmware's own)");
        return Ok(Outcome::Skipped);
    }
    let permissions = check_role(r)?;
    let id = match role_id(conn, path, &r.name)? {
        Some(id) => {
            conn.execute(
                "UPDATE roles SET description = ?1, revision = ?2, updated_at_ms = ?3 WHERE id = ?4",
                params![r.description, revision, now_ms, id],
            )
            .map_err(sql(path, "update role from hq"))?;
            conn.execute("DELETE FROM role_permissions WHERE role_id = ?1", [id])
                .map_err(sql(path, "clear role permissions"))?;
            id
        }
        None => {
            conn.execute(
                "INSERT INTO roles (name, description, builtin, revision, updated_at_ms)
                 VALUES (?1, ?2, 0, ?3, ?4)",
                params![r.name, r.description, revision, now_ms],
            )
            .map_err(sql(path, "insert role from hq"))?;
            conn.last_insert_rowid()
        }
    };
    insert_permissions(conn, id, &permissions).map_err(sql(path, "insert role permissions"))?;
    Ok(Outcome::Upserted)
}

// --- groups ---------------------------------------------------------------------------

fn upsert_group(
    conn: &Connection,
    path: &Path,
    g: &wire::Group,
    revision: i64,
    now_ms: i64,
) -> Checked {
    let n = g.name.chars().count();
    if !(1..=64).contains(&n) || g.name.chars().any(char::is_control) {
        return Err(refuse(
            "name: must be 1 to 64 characters, no control characters",
        ));
    }
    if g.description.chars().count() > 200 {
        return Err(refuse("description: must be at most 200 characters"));
    }
    conn.execute(
        "INSERT INTO groups (name, description, revision, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE
            SET description = excluded.description, revision = excluded.revision,
                updated_at_ms = excluded.updated_at_ms",
        params![g.name, g.description, revision, now_ms],
    )
    .map_err(sql(path, "upsert group from hq"))?;
    Ok(())
}

// --- extensions -----------------------------------------------------------------------

fn upsert_extension(
    conn: &Connection,
    path: &Path,
    e: &wire::Extension,
    revision: i64,
    now_ms: i64,
) -> Checked {
    e.number
        .parse::<ExtensionNumber>()
        .map_err(|err| refuse(format!("number: {err}")))?;
    if e.name.chars().count() > MAX_NAME_CHARS {
        return Err(refuse(format!(
            "name: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if e.name.chars().any(char::is_control) {
        return Err(refuse("name: must not contain control characters"));
    }
    // `port` is not written: the box's config owns the port map.
    conn.execute(
        "INSERT INTO extensions (number, name, port, call_waiting, updated_at_ms, revision)
         VALUES (?1, ?2, NULL, ?3, ?4, ?5)
         ON CONFLICT (number) DO UPDATE
            SET name = excluded.name, call_waiting = excluded.call_waiting,
                revision = excluded.revision, updated_at_ms = excluded.updated_at_ms",
        params![e.number, e.name, e.call_waiting, now_ms, revision],
    )
    .map_err(sql(path, "upsert extension from hq"))?;
    Ok(())
}

// --- blacklist ------------------------------------------------------------------------

fn upsert_blacklist(
    conn: &Connection,
    path: &Path,
    b: &wire::BlacklistEntry,
    revision: i64,
    now_ms: i64,
) -> Checked {
    let pattern = blacklist::store::check_hq(b).map_err(refuse)?;
    blacklist::store::upsert_hq(conn, path, &pattern, &b.reason, revision, now_ms)?;
    Ok(())
}

// --- contacts -------------------------------------------------------------------------

fn upsert_contact(
    conn: &Connection,
    path: &Path,
    c: &wire::Contact,
    revision: i64,
    now_ms: i64,
) -> Checked {
    let plan = crate::numbers::store::plan(conn, path)?;
    let (name, numbers) = customers::store::check_hq(c, plan.as_ref()).map_err(refuse)?;
    customers::store::upsert_hq(conn, path, &c.id, &name, &numbers, revision, now_ms)?;
    Ok(())
}

// --- queues, dial routes --------------------------------------------------------------

/// HQ's queue: kept whole in `hq_rows` (HQ's view, for the web page and a later
/// firmware) and made the call center's rows ([`crate::acd::store::upsert_hq_queue`]).
fn upsert_queue(
    conn: &Connection,
    path: &Path,
    row: &Entity,
    q: &wire::Queue,
    revision: i64,
    now_ms: i64,
) -> Checked {
    use crate::acd::store::HqQueueError;
    let skipped = match crate::acd::store::upsert_hq_queue(conn, path, q, revision, now_ms) {
        Ok(skipped) => skipped,
        Err(HqQueueError::Invalid(why)) => return Err(refuse(why)),
        Err(HqQueueError::Store(e)) => return Err(Error::AcdStore(Box::new(e)).into()),
    };
    if !skipped.is_empty() {
        tracing::warn!(
            queue = q.number,
            ?skipped,
            "queue members from HQ that are no agents on the box are left out"
        );
    }
    upsert_hq_row(conn, path, row, revision, now_ms)
}

/// A dial route as call control takes it ([`crate::call::DialRoute::new`]): one it
/// would refuse refuses the page, so the routes in force are always all of HQ's.
fn check_dial_route(d: &wire::DialRoute) -> Checked {
    crate::call::DialRoute::new(&d.name, &d.prefix, &d.via, d.needs_permission.clone())
        .map(drop)
        .map_err(refuse)
}

/// HQ's dial routes as stored (`hq_rows` of kind `dial_route`), for call control.
/// A stored row that does not read back as a route (written by an older firmware
/// that did not check them) is left out and logged; one whose only fault is a
/// `needs_permission` name no phone can hold is kept and refuses every caller.
pub fn dial_routes(conn: &Connection, path: &Path) -> Result<crate::call::DialRoutes> {
    let mut stmt = conn
        .prepare("SELECT key, row FROM hq_rows WHERE kind = 'dial_route' ORDER BY key")
        .map_err(sql(path, "read dial routes"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql(path, "read dial routes"))?;
    let mut routes = Vec::with_capacity(rows.len());
    for (key, json) in rows {
        let route = match serde_json::from_str::<Entity>(&json) {
            Ok(Entity::DialRoute(d)) => {
                let permission = d.needs_permission.clone();
                crate::call::DialRoute::new(&d.name, &d.prefix, &d.via, d.needs_permission)
                    .or_else(|problem| {
                        // A permission name this firmware refuses (stored by one that
                        // took any text): the route stays, needing that name, which no
                        // phone can hold, so it refuses every caller. Leaving it out
                        // would pass its numbers to a less specific route.
                        let mut route =
                            crate::call::DialRoute::new(&d.name, &d.prefix, &d.via, None)?;
                        tracing::warn!(route = key, %problem, "stored dial route refuses every caller");
                        route.needs_permission = permission;
                        Ok(route)
                    })
            }
            Ok(other) => Err(format!("holds a {}", entity_name(other.kind()))),
            Err(e) => Err(e.to_string()),
        };
        match route {
            Ok(r) => routes.push(r),
            Err(problem) => {
                tracing::warn!(route = key, %problem, "stored dial route left out")
            }
        }
    }
    Ok(crate::call::DialRoutes::new(routes))
}

fn upsert_hq_row(
    conn: &Connection,
    path: &Path,
    row: &Entity,
    revision: i64,
    now_ms: i64,
) -> Checked {
    let json = serde_json::to_string(row).map_err(|source| Error::Json {
        kind: entity_name(row.kind()),
        key: row.key().to_owned(),
        source,
    })?;
    conn.execute(
        "INSERT INTO hq_rows (kind, key, revision, row, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, key) DO UPDATE
            SET revision = excluded.revision, row = excluded.row,
                updated_at_ms = excluded.updated_at_ms",
        params![entity_name(row.kind()), row.key(), revision, json, now_ms],
    )
    .map_err(sql(path, "upsert hq row"))?;
    Ok(())
}

// --- deletes --------------------------------------------------------------------------

/// Deletes the row `key` of `kind` as HQ asked (or because a snapshot lacks it).
fn delete_row(
    conn: &Connection,
    path: &Path,
    kind: EntityKind,
    key: &str,
    now_ms: i64,
) -> Checked<Outcome> {
    let n = match kind {
        EntityKind::User => {
            if key == INSTALLER_USERNAME {
                return Err(refuse(
                    "username \"installer\" is the box's local installer account, not HQ's",
                ));
            }
            conn.execute("DELETE FROM users WHERE username = ?1", [key])
                .map_err(sql(path, "delete user from hq"))?
        }
        EntityKind::Role => {
            if is_builtin_role(conn, path, key)? {
                return Ok(Outcome::Skipped);
            }
            let Some(id) = role_id(conn, path, key)? else {
                return Ok(Outcome::Skipped);
            };
            conn.execute("DELETE FROM user_roles WHERE role_id = ?1", [id])
                .map_err(sql(path, "remove deleted role from users"))?;
            conn.execute("DELETE FROM roles WHERE id = ?1", [id])
                .map_err(sql(path, "delete role from hq"))?
        }
        EntityKind::Group => conn
            .execute("DELETE FROM groups WHERE name = ?1", [key])
            .map_err(sql(path, "delete group from hq"))?,
        EntityKind::Extension => {
            // Still mapped to a port by the config: it stays, as a local row.
            let kept = conn
                .execute(
                    "UPDATE extensions SET revision = 0, updated_at_ms = ?2
                      WHERE number = ?1 AND port IS NOT NULL",
                    params![key, now_ms],
                )
                .map_err(sql(path, "release extension"))?;
            kept + conn
                .execute(
                    "DELETE FROM extensions WHERE number = ?1 AND port IS NULL",
                    [key],
                )
                .map_err(sql(path, "delete extension from hq"))?
        }
        // Rows from before migration 0011 that never fitted the table may still sit
        // in hq_rows: they go too.
        EntityKind::Blacklist => {
            blacklist::store::delete_hq(conn, path, key)?
                + conn
                    .execute(
                        "DELETE FROM hq_rows WHERE kind = 'blacklist' AND key = ?1",
                        [key],
                    )
                    .map_err(sql(path, "delete hq row"))?
        }
        // Contacts from before migration 0012 that never fitted may sit in hq_rows.
        EntityKind::Contact => {
            customers::store::delete_hq(conn, path, key)?
                + conn
                    .execute(
                        "DELETE FROM hq_rows WHERE kind = 'contact' AND key = ?1",
                        [key],
                    )
                    .map_err(sql(path, "delete hq row"))?
        }
        EntityKind::Queue => {
            let deleted = crate::acd::store::delete_hq_queue(conn, path, key)
                .map_err(|e| Error::AcdStore(Box::new(e)))?;
            usize::from(deleted)
                + conn
                    .execute(
                        "DELETE FROM hq_rows WHERE kind = 'queue' AND key = ?1",
                        [key],
                    )
                    .map_err(sql(path, "delete hq row"))?
        }
        other => conn
            .execute(
                "DELETE FROM hq_rows WHERE kind = ?1 AND key = ?2",
                params![entity_name(other), key],
            )
            .map_err(sql(path, "delete hq row"))?,
    };
    Ok(if n > 0 {
        Outcome::Deleted
    } else {
        Outcome::Skipped
    })
}

// --- snapshots ------------------------------------------------------------------------

/// The order rows of a snapshot are applied in: what others refer to first.
fn snapshot_rank(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::Role => 0,
        EntityKind::Group => 1,
        EntityKind::Extension => 2,
        EntityKind::User => 3,
        _ => 4,
    }
}

fn apply_snapshot(
    conn: &Connection,
    path: &Path,
    rows: &[Change],
    next: i64,
    now_ms: i64,
) -> Result<Applied> {
    if next < 0 {
        return Err(Error::SyncRefused {
            what: "snapshot",
            revision: next,
            entity: "cursor",
            key: next.to_string(),
            problem: "the cursor is negative".to_owned(),
        });
    }
    let mut order: Vec<&Change> = rows.iter().collect();
    order.sort_by_key(|c| snapshot_rank(c.entity));
    let mut keep: BTreeSet<(EntityKind, &str)> = BTreeSet::new();
    for c in &order {
        if c.row.is_none() {
            return Err(in_context(
                "snapshot",
                c,
                refuse("a snapshot holds live rows only, not deletes"),
            ));
        }
        if !keep.insert((c.entity, c.key.as_str())) {
            return Err(in_context("snapshot", c, refuse("the row is listed twice")));
        }
    }
    // Agent IDs move between users from one snapshot to the next: clear them on the
    // users the snapshot carries so the new owner never collides with the old one.
    for c in order.iter().filter(|c| c.entity == EntityKind::User) {
        conn.execute(
            "UPDATE users SET agent_id = NULL WHERE username = ?1 AND username <> ?2",
            params![c.key, INSTALLER_USERNAME],
        )
        .map_err(sql(path, "clear agent id"))?;
    }
    let mut applied = Applied::default();
    for c in &order {
        let outcome =
            apply_change(conn, path, c, now_ms).map_err(|r| in_context("snapshot", c, r))?;
        applied.blacklist_changed |= c.entity == EntityKind::Blacklist;
        applied.acd_changed |= matches!(c.entity, EntityKind::User | EntityKind::Queue);
        applied.dial_routes_changed |= c.entity == EntityKind::DialRoute;
        applied.count(outcome);
    }

    // Everything HQ masters that the snapshot lacks goes.
    let pending = |kind: EntityKind, key: &str| edit_pending(conn, path, kind, key);
    let names = |query: &str| -> Result<Vec<(String, i64)>> {
        conn.prepare(query)
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql(path, "list rows for snapshot"))
    };
    let mut gone: Vec<(EntityKind, String)> = Vec::new();
    for (name, revision) in names("SELECT username, revision FROM users")? {
        if name == INSTALLER_USERNAME || keep.contains(&(EntityKind::User, name.as_str())) {
            continue;
        }
        if revision == 0 && pending(EntityKind::User, &name)? {
            continue;
        }
        gone.push((EntityKind::User, name));
    }
    for (name, revision) in names("SELECT name, revision FROM roles WHERE builtin = 0")? {
        if keep.contains(&(EntityKind::Role, name.as_str()))
            || (revision == 0 && pending(EntityKind::Role, &name)?)
        {
            continue;
        }
        gone.push((EntityKind::Role, name));
    }
    for (name, revision) in names("SELECT name, revision FROM groups")? {
        if keep.contains(&(EntityKind::Group, name.as_str()))
            || (revision == 0 && pending(EntityKind::Group, &name)?)
        {
            continue;
        }
        gone.push((EntityKind::Group, name));
    }
    // Extensions: only those HQ gave (revision > 0); the config's own stay.
    for (number, _) in names("SELECT number, revision FROM extensions WHERE revision > 0")? {
        if !keep.contains(&(EntityKind::Extension, number.as_str())) {
            gone.push((EntityKind::Extension, number));
        }
    }
    // Blacklist: only HQ's entries; the box's own stay.
    for pattern in blacklist::store::hq_patterns(conn, path)? {
        if !keep.contains(&(EntityKind::Blacklist, pattern.as_str())) {
            gone.push((EntityKind::Blacklist, pattern));
        }
    }
    // Contacts: only HQ's; the box's own customers stay.
    for id in customers::store::hq_ids(conn, path)? {
        if !keep.contains(&(EntityKind::Contact, id.as_str())) {
            gone.push((EntityKind::Contact, id));
        }
    }
    for (kind_key, _) in names("SELECT kind || char(31) || key, revision FROM hq_rows")? {
        let Some((kind, key)) = kind_key.split_once('\u{1f}') else {
            continue;
        };
        let kind = match kind {
            "queue" => EntityKind::Queue,
            "contact" => EntityKind::Contact,
            "blacklist" => EntityKind::Blacklist,
            _ => EntityKind::DialRoute,
        };
        if !keep.contains(&(kind, key)) {
            gone.push((kind, key.to_owned()));
        }
    }
    // Users first (they hold roles and groups), then the rest.
    gone.sort_by_key(|(k, _)| u8::from(*k != EntityKind::User));
    for (kind, key) in gone {
        let outcome = delete_row(conn, path, kind, &key, now_ms).map_err(|r| match r {
            Refusal::Store(e) => e,
            Refusal::Row(Problem(problem)) => Error::SyncRefused {
                what: "snapshot",
                revision: next,
                entity: entity_name(kind),
                key: key.clone(),
                problem,
            },
        })?;
        applied.blacklist_changed |= kind == EntityKind::Blacklist && outcome != Outcome::Skipped;
        applied.acd_changed |=
            matches!(kind, EntityKind::User | EntityKind::Queue) && outcome != Outcome::Skipped;
        applied.dial_routes_changed |= kind == EntityKind::DialRoute && outcome != Outcome::Skipped;
        applied.count(outcome);
    }
    bump_generation(conn).map_err(sql(path, "bump rbac generation"))?;
    store_cursor(conn, path, next, now_ms)?;
    applied.cursor = next;
    tracing::info!(
        upserted = applied.upserted,
        deleted = applied.deleted,
        cursor = next,
        "sync snapshot applied"
    );
    Ok(applied)
}

// --- conflicts ------------------------------------------------------------------------

/// Resolves conflicts from an [`wire::UpAck`] in the caller's transaction: for each,
/// HQ's current row replaces the box's (the same code as a feed change; `None` deletes
/// the box's row) and an audit row is written (actor `hq`, source `sync`, action
/// `sync_conflict`, result `failed` since the box's edit did not take, detail with the
/// outbox seq, base revision, key, HQ's reason and revision).
///
/// Each conflict runs in a savepoint: one whose row is invalid is not applied, and is
/// audited with the error instead, so the others (and the trim that shares the
/// transaction) still happen. A conflict already audited (same key and outbox seq) is
/// applied again but not audited twice. Returns how many were applied.
pub fn apply_conflicts(
    conn: &Connection,
    path: &Path,
    conflicts: &[wire::Conflict],
    now_ms: i64,
) -> Result<usize> {
    let mut applied = 0;
    let mut roles_changed = false;
    for c in conflicts {
        conn.execute_batch("SAVEPOINT sync_conflict")
            .map_err(sql(path, "savepoint"))?;
        let result = resolve(conn, path, c, now_ms);
        let (outcome, error) = match result {
            Ok(o) => {
                conn.execute_batch("RELEASE sync_conflict")
                    .map_err(sql(path, "release savepoint"))?;
                applied += 1;
                roles_changed |= c.entity == EntityKind::Role;
                (Some(o), None)
            }
            Err(Refusal::Row(Problem(p))) => {
                conn.execute_batch("ROLLBACK TO sync_conflict; RELEASE sync_conflict")
                    .map_err(sql(path, "roll back savepoint"))?;
                tracing::warn!(key = %c.key, problem = %p, "sync conflict: HQ's row refused");
                (None, Some(p))
            }
            Err(Refusal::Store(e)) => return Err(e),
        };
        // The same conflict can come again after a crash between HQ's answer and
        // this commit (the batch is sent again): the row replacement is idempotent,
        // the audit row is written once per rejected edit.
        let audited: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM audit_log
                                 WHERE action = 'sync_conflict' AND target = ?1
                                   AND json_extract(detail, '$.seq') = ?2)",
                params![c.key, c.seq],
                |r| r.get(0),
            )
            .map_err(sql(path, "look up conflict audit"))?;
        if audited {
            continue;
        }
        let resolution = match (outcome, &error) {
            (_, Some(_)) => "not applied: HQ's row is invalid",
            (_, None) if c.current.is_none() => "took HQ's state: the row does not exist at HQ",
            _ => "took HQ's row",
        };
        audit::append(
            conn,
            path,
            &AuditEntry {
                actor: Actor::new("hq", "sync"),
                action: "sync_conflict".to_owned(),
                resource: entity_resource(c.entity).as_str().to_owned(),
                target: c.key.clone(),
                result: AuditResult::Failed,
                detail: serde_json::json!({
                    "seq": c.seq,
                    "entity": entity_name(c.entity),
                    "key": c.key,
                    "base_revision": c.base_revision,
                    "reason": c.reason,
                    "hq_revision": c.current.as_ref().map(|ch| ch.revision),
                    "resolution": resolution,
                    "error": error,
                }),
            },
            now_ms,
        )?;
    }
    if roles_changed {
        bump_generation(conn).map_err(sql(path, "bump rbac generation"))?;
    }
    Ok(applied)
}

fn resolve(conn: &Connection, path: &Path, c: &wire::Conflict, now_ms: i64) -> Checked<Outcome> {
    match &c.current {
        Some(change) => {
            if change.entity != c.entity || change.key != c.key {
                return Err(refuse(format!(
                    "HQ's row is {} {:?}, not the conflicting {} {:?}",
                    entity_name(change.entity),
                    change.key,
                    entity_name(c.entity),
                    c.key
                )));
            }
            if change.row.is_none() {
                return delete_row(conn, path, c.entity, &c.key, now_ms);
            }
            apply_change(conn, path, change, now_ms)
        }
        None => delete_row(conn, path, c.entity, &c.key, now_ms),
    }
}
