//! The built-in roles, shipped as data in `firmware/roles/builtin.toml`.
//!
//! Seeding runs at every [`crate::store::Store::open`]: it inserts missing built-in
//! roles and makes the grants of existing ones match the file, bumping
//! `box_state.rbac_generation` only when something changed (so re-opening is
//! idempotent). A custom role that happens to carry a built-in name is refused.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;

use super::{Action, Permission, Resource, Scope};
use crate::error::{Error, Result};

/// The file, compiled in.
pub const BUILTIN_ROLES_TOML: &str = include_str!("../../roles/builtin.toml");

/// Name of the installer role (and of the installer user).
pub const INSTALLER: &str = "installer";
/// Name of the administrator role.
pub const ADMIN: &str = "admin";

/// A built-in role as defined by the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinRole {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its grants, sorted.
    pub permissions: Vec<Permission>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    roles: BTreeMap<String, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    description: String,
    everything: Option<Scope>,
    #[serde(default)]
    grants: BTreeMap<Resource, BTreeMap<Action, Scope>>,
}

/// Parses [`BUILTIN_ROLES_TOML`].
pub fn builtin_roles() -> Result<Vec<BuiltinRole>> {
    parse(BUILTIN_ROLES_TOML)
}

fn parse(text: &str) -> Result<Vec<BuiltinRole>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| Error::BuiltinRoles {
        message: e.to_string(),
    })?;
    Ok(raw
        .roles
        .into_iter()
        .map(|(name, role)| {
            let mut permissions = Vec::new();
            if let Some(scope) = role.everything {
                for &resource in Resource::ALL {
                    for &action in Action::ALL {
                        permissions.push(Permission::new(resource, action, scope));
                    }
                }
            }
            for (resource, actions) in role.grants {
                for (action, scope) in actions {
                    permissions.retain(|p| !(p.resource == resource && p.action == action));
                    permissions.push(Permission::new(resource, action, scope));
                }
            }
            permissions.sort();
            BuiltinRole {
                name,
                description: role.description,
                permissions,
            }
        })
        .collect())
}

/// Inserts or updates the built-in roles in one transaction (see the module docs).
pub(crate) fn seed(conn: &mut Connection, path: &Path, now_ms: i64) -> Result<()> {
    let sql = |op| {
        move |source| Error::Sqlite {
            path: path.to_owned(),
            op,
            source,
        }
    };
    let roles = builtin_roles()?;
    let tx = conn.transaction().map_err(sql("begin seed roles"))?;
    let mut changed = false;
    for role in &roles {
        let existing: Option<(i64, bool, String)> = tx
            .query_row(
                "SELECT id, builtin, description FROM roles WHERE name = ?1",
                [&role.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql("look up role"))?;
        let id = match existing {
            Some((_, false, _)) => {
                return Err(Error::RoleNameReserved {
                    name: role.name.clone(),
                })
            }
            Some((id, true, description)) => {
                if description != role.description {
                    tx.execute(
                        "UPDATE roles SET description = ?1, updated_at_ms = ?2 WHERE id = ?3",
                        params![role.description, now_ms, id],
                    )
                    .map_err(sql("update builtin role"))?;
                }
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO roles (name, description, builtin, revision, updated_at_ms)
                     VALUES (?1, ?2, 1, 0, ?3)",
                    params![role.name, role.description, now_ms],
                )
                .map_err(sql("insert builtin role"))?;
                changed = true;
                tx.last_insert_rowid()
            }
        };
        let mut current: Vec<Permission> = tx
            .prepare("SELECT resource, action, scope FROM role_permissions WHERE role_id = ?1")
            .and_then(|mut s| {
                s.query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql("read builtin role permissions"))?
            .into_iter()
            .filter_map(|(r, a, s)| {
                Some(Permission::new(
                    r.parse().ok()?,
                    a.parse().ok()?,
                    s.parse().ok()?,
                ))
            })
            .collect();
        current.sort();
        if current != role.permissions {
            tx.execute("DELETE FROM role_permissions WHERE role_id = ?1", [id])
                .map_err(sql("clear builtin role permissions"))?;
            insert_permissions(&tx, id, &role.permissions)
                .map_err(sql("insert builtin role permissions"))?;
            changed = true;
        }
    }
    if changed {
        bump_generation(&tx).map_err(sql("bump rbac generation"))?;
    }
    tx.commit().map_err(sql("commit seed roles"))
}

/// Inserts `perms` for role `id`.
pub(crate) fn insert_permissions(
    conn: &Connection,
    id: i64,
    perms: &[Permission],
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO role_permissions (role_id, resource, action, scope) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for p in perms {
        stmt.execute(params![
            id,
            p.resource.as_str(),
            p.action.as_str(),
            p.scope.as_str()
        ])?;
    }
    Ok(())
}

/// Bumps `box_state.rbac_generation` (every change to roles or their grants must).
pub(crate) fn bump_generation(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE box_state SET rbac_generation = rbac_generation + 1 WHERE only = 1",
        [],
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_and_names_every_builtin_role() {
        let roles = builtin_roles().expect("builtin.toml parses");
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "admin",
                "agent",
                "finance",
                "installer",
                "quality_inspector",
                "supervisor",
                "technician"
            ]
        );
    }

    #[test]
    fn a_typo_in_the_file_is_an_error() {
        let e =
            parse("[roles.x]\ndescription = \"\"\n[roles.x.grants]\ncall = { view = \"own\" }\n")
                .expect_err("unknown resource");
        assert!(e.to_string().contains("call"), "{e}");
        let e = parse("[roles.x]\ndescription = \"\"\nscope = \"own\"\n").expect_err("unknown key");
        assert!(e.to_string().contains("scope"), "{e}");
    }
}
