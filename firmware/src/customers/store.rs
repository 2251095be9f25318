//! Customer records in the store (migration 0012): the box's own customers (the
//! local API and CSV import), HQ's contacts (the change feed: [`upsert_hq`] /
//! [`delete_hq`]), the site's custom fields and customer types, the filtered list, and
//! [`lookup_by_number`] for call control.
//!
//! Rules:
//! - Numbers are stored in the site's canonical form ([`crate::numbers`]; the plan is
//!   read from the store with the schema, [`schema`]), HQ's contacts' too; every
//!   lookup canonicalises the number it is given the same way.
//! - A local write refuses a number any customer (local or HQ's) already holds
//!   ([`Error::CustomerConflict`]); HQ's contacts are written as HQ sends them, so two
//!   customers may share a number when HQ's contact arrives later. The lookup then
//!   prefers the box's own customer, then the oldest.
//! - HQ's contacts are read-only on the box: editing or deleting one is a conflict.
//!   They carry a name and numbers only (HQ's `Contact`); a nameless one is named by
//!   its HQ id. Deletes and snapshots from HQ touch only HQ's rows.
//! - Custom field values are stored as canonical text, one row per value (several
//!   for a multiple choice), so `field.<name>=value` filters are an indexed `EXISTS`.
//!
//! - Sync to HQ: every change of a local customer (create, edit, CSV import, delete,
//!   a type keyed in wrap-up) queues the customer whole as a `customer` outbox record
//!   ([`CustomerRecord`], keyed by the box's id, [`queue_local`]) in the same
//!   transaction; HQ keeps the latest per box. That is up only: HQ lists them
//!   (`GET /admin/v1/customers`) but does not send them to other boxes, and edits made
//!   at HQ do not come down. Down comes only HQ's own contacts (the `contact` entity
//!   of the change feed), which are never sent back up. Custom field definitions and
//!   customer types stay on the box.
//!
//! Every function runs in the caller's connection or transaction; writes go through
//! the store writer thread (`StoreWriter::transact`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use branchline_sync::wire::{CustomerRecord, RecordKind};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::{FieldDef, FieldType, FieldValue, RawValue, Schema, ValidCustomer, MAX_FIELDS};
use crate::accounts::PageRequest;
use crate::error::{Error, FieldProblem, Result};
use crate::rbac::{GroupId, Target, UserId};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

fn invalid(entity: &'static str, key: impl Into<String>, field: &str, message: String) -> Error {
    Error::Invalid {
        entity,
        key: key.into(),
        problems: vec![FieldProblem {
            field: field.to_owned(),
            message,
        }],
    }
}

/// Where a customer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// HQ's contact directory (read-only on the box).
    Hq,
    /// Made on the box.
    Local,
}

impl Source {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hq => "hq",
            Source::Local => "local",
        }
    }
}

/// What call control learns about a calling number: [`lookup_by_number`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerMatch {
    /// The customer's id.
    pub id: i64,
    /// Name (for the caller-ID name).
    pub name: String,
    /// Type digit.
    pub type_digit: Option<u8>,
    /// Type name.
    pub type_name: Option<String>,
    /// Owning agent.
    pub owner_user_id: Option<UserId>,
    /// Owning agent's username.
    pub owner: Option<String>,
    /// Owning group.
    pub owner_group_id: Option<GroupId>,
    /// Owning group's name.
    pub owner_group: Option<String>,
}

/// The customer who holds `number` in the site's canonical form ([`crate::numbers`]:
/// a caller ID in national, international-prefix or `+` form meets the same
/// customer); `None` for no match or a number that is not one. One read of the
/// one-row plan and one index seek on `customer_numbers`. A store error is logged and
/// is `None`: call control goes on without a name.
pub fn lookup_by_number(conn: &Connection, number: &str) -> Option<CustomerMatch> {
    let plan = match crate::numbers::store::site_plan(conn) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(error = %e, "customer lookup: reading the numbering plan failed");
            None
        }
    };
    let number = crate::numbers::canonical(plan.as_ref(), number).ok()?;
    let found = conn
        .prepare_cached(
            "SELECT c.id, c.name, c.type_digit, t.name, c.owner_user_id, u.username,
                    c.owner_group_id, g.name
               FROM customer_numbers n
               JOIN customers c ON c.id = n.customer_id
               LEFT JOIN customer_types t ON t.digit = c.type_digit
               LEFT JOIN users u ON u.id = c.owner_user_id
               LEFT JOIN groups g ON g.id = c.owner_group_id
              WHERE n.number = ?1
              ORDER BY c.source = 'hq', c.id
              LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([&number], |r| {
                Ok(CustomerMatch {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    type_digit: r.get(2)?,
                    type_name: r.get(3)?,
                    owner_user_id: r.get::<_, Option<i64>>(4)?.map(UserId),
                    owner: r.get(5)?,
                    owner_group_id: r.get::<_, Option<i64>>(6)?.map(GroupId),
                    owner_group: r.get(7)?,
                })
            })
            .optional()
        });
    match found {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "customer lookup by number failed");
            None
        }
    }
}

// --- schema ---------------------------------------------------------------------------

/// The schema with the field ids the value rows refer to.
#[derive(Debug, Clone, Default)]
pub struct StoredSchema {
    /// Fields and types.
    pub schema: Schema,
    /// Field name -> `customer_fields.id`.
    pub field_ids: HashMap<String, i64>,
}

/// A custom field definition as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Label.
    pub label: String,
    /// Type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Required flag.
    pub required: bool,
    /// Default value (JSON as a customer's value).
    pub default: Option<serde_json::Value>,
    /// Choices.
    pub choices: Vec<String>,
}

fn field_row(id: i64, def: &FieldDef) -> FieldRow {
    FieldRow {
        id,
        name: def.name.clone(),
        label: def.label.clone(),
        field_type: def.field_type,
        required: def.required,
        default: def.default.as_ref().map(FieldValue::to_json),
        choices: def.choices.clone(),
    }
}

/// A `customer_fields` row: id, name, label, type, required, default, choices.
type RawFieldRow = (i64, String, String, String, bool, Option<String>, String);

/// The owners' ids: `(user, group)`.
pub type OwnerIds = (Option<i64>, Option<i64>);

/// Loads the site's schema. A definition that no longer parses (written by something
/// else) is skipped with a warning.
pub fn schema(conn: &Connection, path: &Path) -> Result<StoredSchema> {
    let rows: Vec<RawFieldRow> = conn
        .prepare_cached(
            "SELECT id, name, label, type, required, default_value, choices
               FROM customer_fields ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read customer fields"))?;
    let mut out = StoredSchema::default();
    for (id, name, label, t, required, default, choices) in rows {
        let Ok(field_type) = t.parse::<FieldType>() else {
            tracing::warn!(field = name, "customer field skipped: unknown type {t:?}");
            continue;
        };
        let choices: Vec<String> = serde_json::from_str(&choices).unwrap_or_default();
        let mut def = FieldDef {
            name: name.clone(),
            label,
            field_type,
            required: false,
            default: None,
            choices,
        };
        if let Some(d) = default {
            let parsed = serde_json::from_str::<serde_json::Value>(&d)
                .map_err(|e| e.to_string())
                .and_then(|j| RawValue::from_json(&j))
                .and_then(|raw| def.check(&raw));
            match parsed {
                Ok(v) => def.default = v,
                Err(e) => tracing::warn!(field = name, error = e, "customer field default dropped"),
            }
        }
        def.required = required;
        out.field_ids.insert(name, id);
        out.schema.fields.push(def);
    }
    out.schema.types = types(conn, path)?
        .into_iter()
        .map(|t| (t.digit, t.name))
        .collect();
    out.schema.plan = crate::numbers::store::plan(conn, path)?;
    Ok(out)
}

/// The custom field definitions.
pub fn fields(conn: &Connection, path: &Path) -> Result<Vec<FieldRow>> {
    let s = schema(conn, path)?;
    Ok(s.schema
        .fields
        .iter()
        .map(|d| field_row(s.field_ids[&d.name], d))
        .collect())
}

fn field_by_name(conn: &Connection, path: &Path, name: &str) -> Result<Option<FieldRow>> {
    Ok(fields(conn, path)?.into_iter().find(|f| f.name == name))
}

fn write_field(conn: &Connection, path: &Path, def: &FieldDef, now_ms: i64) -> Result<()> {
    let default = def.default.as_ref().map(|d| d.to_json().to_string());
    let choices = serde_json::json!(def.choices).to_string();
    conn.execute(
        "INSERT INTO customer_fields (name, label, type, required, default_value, choices,
                                      updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO UPDATE
            SET label = excluded.label, required = excluded.required,
                default_value = excluded.default_value, choices = excluded.choices,
                updated_at_ms = excluded.updated_at_ms",
        params![
            def.name,
            def.label,
            def.field_type.as_str(),
            def.required,
            default,
            choices,
            now_ms
        ],
    )
    .map_err(sql(path, "write customer field"))?;
    Ok(())
}

/// Adds a field definition. The cap ([`MAX_FIELDS`]) and a name in use are
/// [`Error::CustomerConflict`]; nothing is written then.
pub fn add_field(conn: &Connection, path: &Path, def: &FieldDef, now_ms: i64) -> Result<FieldRow> {
    let existing = fields(conn, path)?;
    if existing.iter().any(|f| f.name == def.name) {
        return Err(Error::CustomerConflict {
            what: "customer field",
            key: def.name.clone(),
            why: "a field with this name exists already".to_owned(),
        });
    }
    if existing.len() >= MAX_FIELDS {
        return Err(Error::CustomerConflict {
            what: "customer field",
            key: def.name.clone(),
            why: format!(
                "a site has at most {MAX_FIELDS} custom fields and has {} already; \
                 delete one first",
                existing.len()
            ),
        });
    }
    write_field(conn, path, def, now_ms)?;
    field_by_name(conn, path, &def.name)?.ok_or_else(|| Error::NotFound {
        entity: "customer field",
        key: def.name.clone(),
    })
}

/// Replaces field `name`'s label, required flag, default and choices with `def`'s;
/// returns the definition before and after. Its name and type cannot change (a 400
/// naming `name` or `type`), and a choice still in use cannot be removed (`choices`).
pub fn update_field(
    conn: &Connection,
    path: &Path,
    name: &str,
    def: &FieldDef,
    now_ms: i64,
) -> Result<(FieldRow, FieldRow)> {
    let before = field_by_name(conn, path, name)?.ok_or_else(|| Error::NotFound {
        entity: "customer field",
        key: name.to_owned(),
    })?;
    if def.name != name {
        return Err(invalid(
            "customer field",
            name,
            "name",
            "a field's name cannot change; delete it and add a new one".to_owned(),
        ));
    }
    if def.field_type != before.field_type {
        return Err(invalid(
            "customer field",
            name,
            "type",
            format!(
                "a field's type cannot change (it is {}); delete it and add a new one",
                before.field_type
            ),
        ));
    }
    for gone in before.choices.iter().filter(|c| !def.choices.contains(c)) {
        let used: i64 = conn
            .query_row(
                "SELECT count(*) FROM customer_field_values WHERE field_id = ?1 AND value = ?2",
                params![before.id, gone],
                |r| r.get(0),
            )
            .map_err(sql(path, "count choice use"))?;
        if used > 0 {
            return Err(invalid(
                "customer field",
                name,
                "choices",
                format!("choice {gone:?} is held by {used} customer(s); change them first"),
            ));
        }
    }
    write_field(conn, path, def, now_ms)?;
    let after = field_by_name(conn, path, name)?.ok_or_else(|| Error::NotFound {
        entity: "customer field",
        key: name.to_owned(),
    })?;
    Ok((before, after))
}

/// Deletes field `name` and every customer's value of it.
pub fn delete_field(conn: &Connection, path: &Path, name: &str) -> Result<FieldRow> {
    let row = field_by_name(conn, path, name)?.ok_or_else(|| Error::NotFound {
        entity: "customer field",
        key: name.to_owned(),
    })?;
    conn.execute("DELETE FROM customer_fields WHERE id = ?1", [row.id])
        .map_err(sql(path, "delete customer field"))?;
    Ok(row)
}

/// A customer type as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeRow {
    /// The keypad digit.
    pub digit: u8,
    /// Its name.
    pub name: String,
}

/// The customer types, by digit.
pub fn types(conn: &Connection, path: &Path) -> Result<Vec<TypeRow>> {
    conn.prepare_cached("SELECT digit, name FROM customer_types ORDER BY digit")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(TypeRow {
                    digit: r.get(0)?,
                    name: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read customer types"))
}

/// Sets type `digit`'s name (adding it); returns the previous name. A name another
/// digit has is [`Error::CustomerConflict`].
pub fn set_type(
    conn: &Connection,
    path: &Path,
    digit: u8,
    name: &str,
    now_ms: i64,
) -> Result<Option<String>> {
    let all = types(conn, path)?;
    if let Some(other) = all.iter().find(|t| t.name == name && t.digit != digit) {
        return Err(Error::CustomerConflict {
            what: "customer type",
            key: digit.to_string(),
            why: format!("type {} is called {name:?} already", other.digit),
        });
    }
    conn.execute(
        "INSERT INTO customer_types (digit, name, updated_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (digit) DO UPDATE SET name = excluded.name,
                                           updated_at_ms = excluded.updated_at_ms",
        params![digit, name, now_ms],
    )
    .map_err(sql(path, "write customer type"))?;
    Ok(all.into_iter().find(|t| t.digit == digit).map(|t| t.name))
}

/// Deletes type `digit`; its customers keep no type. Returns it.
pub fn delete_type(conn: &Connection, path: &Path, digit: u8) -> Result<TypeRow> {
    let row = types(conn, path)?
        .into_iter()
        .find(|t| t.digit == digit)
        .ok_or_else(|| Error::NotFound {
            entity: "customer type",
            key: digit.to_string(),
        })?;
    conn.execute("DELETE FROM customer_types WHERE digit = ?1", [digit])
        .map_err(sql(path, "delete customer type"))?;
    Ok(row)
}

// --- customers ------------------------------------------------------------------------

/// A stored customer (the API masks its numbers before it leaves the box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Type digit.
    pub type_digit: Option<u8>,
    /// Type name.
    pub type_name: Option<String>,
    /// Owning agent.
    pub owner_user_id: Option<i64>,
    /// Owning agent's username.
    pub owner: Option<String>,
    /// Owning group.
    pub owner_group_id: Option<i64>,
    /// Owning group's name.
    pub owner_group: Option<String>,
    /// `hq` or `local`.
    pub source: Source,
    /// HQ's id for its contacts.
    pub hq_id: Option<String>,
    /// HQ's revision (0 for a local customer).
    pub revision: i64,
    /// Numbers, in order.
    pub numbers: Vec<String>,
    /// Custom field values by name.
    pub fields: BTreeMap<String, FieldValue>,
    /// Who made it (a username; `hq` for HQ's).
    pub created_by: String,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// The owner's groups and the owning group (for the RBAC target).
    pub owner_groups: Vec<GroupId>,
}

impl CustomerRow {
    /// The record as RBAC sees it: owned by its agent, in its agent's groups and its
    /// owning group; a customer with neither is a site record.
    pub fn target(&self) -> Target {
        Target::Owned {
            owner: self.owner_user_id.map(UserId),
            groups: self.owner_groups.clone(),
        }
    }
}

const COLUMNS: &str = "c.id, c.name, c.type_digit, t.name, c.owner_user_id, u.username,
                       c.owner_group_id, g.name, c.source, c.hq_id, c.revision, c.created_by,
                       c.created_at_ms, c.updated_at_ms";
const FROM: &str = "customers c
                    LEFT JOIN customer_types t ON t.digit = c.type_digit
                    LEFT JOIN users u ON u.id = c.owner_user_id
                    LEFT JOIN groups g ON g.id = c.owner_group_id";

fn base_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CustomerRow> {
    let source: String = r.get(8)?;
    Ok(CustomerRow {
        id: r.get(0)?,
        name: r.get(1)?,
        type_digit: r.get(2)?,
        type_name: r.get(3)?,
        owner_user_id: r.get(4)?,
        owner: r.get(5)?,
        owner_group_id: r.get(6)?,
        owner_group: r.get(7)?,
        source: if source == "hq" {
            Source::Hq
        } else {
            Source::Local
        },
        hq_id: r.get(9)?,
        revision: r.get(10)?,
        numbers: Vec::new(),
        fields: BTreeMap::new(),
        created_by: r.get(11)?,
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
        owner_groups: Vec::new(),
    })
}

/// Fills numbers, field values and owner groups.
fn complete(conn: &Connection, path: &Path, schema: &Schema, row: &mut CustomerRow) -> Result<()> {
    row.numbers = conn
        .prepare_cached(
            "SELECT number FROM customer_numbers WHERE customer_id = ?1 ORDER BY position",
        )
        .and_then(|mut s| {
            s.query_map([row.id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql(path, "read customer numbers"))?;
    let values: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT f.name, v.value FROM customer_field_values v
               JOIN customer_fields f ON f.id = v.field_id
              WHERE v.customer_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map([row.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read customer field values"))?;
    let mut by_field: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (f, v) in values {
        by_field.entry(f).or_default().push(v);
    }
    row.fields.clear();
    for (name, mut stored) in by_field {
        let Some(def) = schema.field(&name) else {
            continue;
        };
        // A multiple choice in the definition's order.
        stored.sort_by_key(|v| def.choices.iter().position(|c| c == v));
        if let Some(v) = FieldValue::from_stored(def.field_type, stored) {
            row.fields.insert(name, v);
        }
    }
    let mut groups: Vec<GroupId> = match row.owner_user_id {
        Some(u) => conn
            .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
            .and_then(|mut s| {
                s.query_map([u], |r| r.get(0).map(GroupId))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql(path, "read customer owner groups"))?,
        None => Vec::new(),
    };
    if let Some(g) = row.owner_group_id {
        if !groups.contains(&GroupId(g)) {
            groups.push(GroupId(g));
        }
    }
    row.owner_groups = groups;
    Ok(())
}

/// Customer `id`, if it exists.
pub fn get(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    id: i64,
) -> Result<Option<CustomerRow>> {
    let row = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM {FROM} WHERE c.id = ?1"))
        .and_then(|mut s| s.query_row([id], base_row).optional())
        .map_err(sql(path, "read customer"))?;
    match row {
        Some(mut row) => {
            complete(conn, path, schema, &mut row)?;
            Ok(Some(row))
        }
        None => Ok(None),
    }
}

/// Which customers a subject may list (its widest `contacts.view` scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every customer.
    All,
    /// Customers the user owns, owned by a member of a group they administer, or owned
    /// by such a group.
    Group {
        /// The user.
        me: i64,
        /// The groups they administer.
        groups: Vec<i64>,
    },
    /// Customers the user owns.
    Own {
        /// The user.
        me: i64,
    },
}

/// The filters of `GET /api/v1/customers`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Name contains (case-insensitive for ASCII).
    pub name: Option<String>,
    /// A normalised number the customer has.
    pub number: Option<String>,
    /// Type digit.
    pub type_digit: Option<u8>,
    /// Owning agent's user id.
    pub owner_user_id: Option<i64>,
    /// Owning group's id.
    pub owner_group_id: Option<i64>,
    /// Source.
    pub source: Option<Source>,
    /// `(field id, stored value)`: the customer has that value of that field.
    pub fields: Vec<(i64, String)>,
}

/// Resolves the query parameters of the list route into a filter and a page: `name`,
/// `number`, `type` (digit or name), `owner` (username), `owner_group` (group name),
/// `source` (hq, local), `field.<name>` (a value as the field takes it; for a multiple
/// choice, `a;b` means both), `limit`, `offset`. A bad or unknown one is a 400 naming it.
pub fn parse_filter(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    pairs: &[(String, String)],
) -> Result<(Filter, PageRequest)> {
    let mut f = Filter::default();
    let mut page = PageRequest::default();
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(FieldProblem {
            field: field.to_owned(),
            message,
        });
    };
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.as_str()) {
            problem(k, "given twice".to_owned());
            continue;
        }
        match k.as_str() {
            "name" => f.name = Some(v.clone()),
            "number" => match crate::numbers::canonical(stored.schema.plan.as_ref(), v) {
                Ok(n) => f.number = Some(n),
                Err(m) => problem(k, m),
            },
            "type" => match stored.schema.type_digit(v) {
                Ok(d) => f.type_digit = Some(d),
                Err(m) => problem(k, m),
            },
            "owner" => {
                let id: Option<i64> = conn
                    .query_row("SELECT id FROM users WHERE username = ?1", [v], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(sql(path, "look up owner"))?;
                match id {
                    Some(id) => f.owner_user_id = Some(id),
                    None => problem(k, format!("no user {v:?}")),
                }
            }
            "owner_group" => {
                let id: Option<i64> = conn
                    .query_row("SELECT id FROM groups WHERE name = ?1", [v], |r| r.get(0))
                    .optional()
                    .map_err(sql(path, "look up owner group"))?;
                match id {
                    Some(id) => f.owner_group_id = Some(id),
                    None => problem(k, format!("no group {v:?}")),
                }
            }
            "source" => match v.as_str() {
                "hq" => f.source = Some(Source::Hq),
                "local" => f.source = Some(Source::Local),
                _ => problem(k, format!("{v:?} is not hq or local")),
            },
            "limit" => match v.parse() {
                Ok(l) => page.limit = l,
                Err(_) => problem(k, format!("{v:?} is not a number")),
            },
            "offset" => match v.parse() {
                Ok(o) => page.offset = o,
                Err(_) => problem(k, format!("{v:?} is not a number")),
            },
            other => match other.strip_prefix("field.") {
                Some(name) => match stored.schema.field(name) {
                    None => problem(k, format!("no custom field {name:?}")),
                    Some(def) => {
                        // The filter value is checked like a customer's value, so it
                        // compares with the canonical stored text.
                        let mut def = def.clone();
                        def.default = None;
                        def.required = true;
                        match def
                            .check(&RawValue::from_cell(v))
                            .and_then(|v| v.map(|v| stored.schema.canonical_value(v)).transpose())
                        {
                            Ok(Some(value)) => {
                                let id = stored.field_ids[name];
                                f.fields.extend(value.stored().into_iter().map(|s| (id, s)));
                            }
                            Ok(None) => {}
                            Err(m) => problem(k, m),
                        }
                    }
                },
                None => problem(
                    k,
                    "unknown parameter (name, number, type, owner, owner_group, source, \
                     field.<name>, limit, offset)"
                        .to_owned(),
                ),
            },
        }
    }
    if let Err(Error::Invalid { problems: p, .. }) = page.validate() {
        problems.extend(p);
    }
    if !problems.is_empty() {
        return Err(Error::Invalid {
            entity: "customer query",
            key: String::new(),
            problems,
        });
    }
    Ok((f, page))
}

fn where_clause(filter: &Filter, vis: &Visibility) -> (String, Vec<SqlValue>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |v: SqlValue| {
        args.push(v);
        format!("?{}", args.len())
    };
    if let Some(n) = &filter.name {
        let escaped = n
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let p = arg(SqlValue::Text(format!("%{escaped}%")));
        clauses.push(format!("c.name LIKE {p} ESCAPE '\\'"));
    }
    if let Some(n) = &filter.number {
        let p = arg(SqlValue::Text(n.clone()));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM customer_numbers n WHERE n.number = {p} AND n.customer_id = c.id)"
        ));
    }
    if let Some(d) = filter.type_digit {
        let p = arg(SqlValue::Integer(i64::from(d)));
        clauses.push(format!("c.type_digit = {p}"));
    }
    if let Some(u) = filter.owner_user_id {
        let p = arg(SqlValue::Integer(u));
        clauses.push(format!("c.owner_user_id = {p}"));
    }
    if let Some(g) = filter.owner_group_id {
        let p = arg(SqlValue::Integer(g));
        clauses.push(format!("c.owner_group_id = {p}"));
    }
    if let Some(s) = filter.source {
        let p = arg(SqlValue::Text(s.as_str().to_owned()));
        clauses.push(format!("c.source = {p}"));
    }
    for (field, value) in &filter.fields {
        let f = arg(SqlValue::Integer(*field));
        let v = arg(SqlValue::Text(value.clone()));
        clauses.push(format!(
            "EXISTS (SELECT 1 FROM customer_field_values v
                      WHERE v.field_id = {f} AND v.value = {v} AND v.customer_id = c.id)"
        ));
    }
    match vis {
        Visibility::All => {}
        Visibility::Own { me } => {
            let p = arg(SqlValue::Integer(*me));
            clauses.push(format!("c.owner_user_id = {p}"));
        }
        Visibility::Group { me, groups } => {
            let me = arg(SqlValue::Integer(*me));
            let list: Vec<String> = groups.iter().map(|g| arg(SqlValue::Integer(*g))).collect();
            let list = list.join(", ");
            clauses.push(format!(
                "(c.owner_user_id = {me} OR c.owner_group_id IN ({list})
                  OR c.owner_user_id IN (SELECT user_id FROM group_members
                                          WHERE group_id IN ({list})))"
            ));
        }
    }
    let w = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (w, args)
}

/// One page of the customers `vis` reaches that match `filter`, by name then id, and
/// how many match in all.
pub fn list(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    filter: &Filter,
    vis: &Visibility,
    page: PageRequest,
) -> Result<(Vec<CustomerRow>, i64)> {
    page.validate()?;
    let (w, mut args) = where_clause(filter, vis);
    let total: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM customers c {w}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )
        .map_err(sql(path, "count customers"))?;
    args.push(SqlValue::Integer(i64::from(page.limit)));
    args.push(SqlValue::Integer(i64::from(page.offset)));
    let n = args.len();
    let mut rows = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM {FROM} {w} ORDER BY c.name, c.id LIMIT ?{} OFFSET ?{n}",
            n - 1
        ))
        .and_then(|mut s| {
            s.query_map(params_from_iter(args.iter()), base_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "list customers"))?;
    for row in &mut rows {
        complete(conn, path, schema, row)?;
    }
    Ok((rows, total))
}

/// Every customer (for the export), by name then id, calling `each` per row.
pub fn for_each(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    mut each: impl FnMut(CustomerRow) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM {FROM} ORDER BY c.name, c.id"
        ))
        .map_err(sql(path, "export customers"))?;
    let mut rows = stmt.query([]).map_err(sql(path, "export customers"))?;
    while let Some(r) = rows.next().map_err(sql(path, "export customers"))? {
        let mut row = base_row(r).map_err(sql(path, "export customers"))?;
        complete(conn, path, schema, &mut row)?;
        each(row)?;
    }
    Ok(())
}

/// The ids of a valid customer's owners, or the problems naming `owner` /
/// `owner_group` when they do not exist.
pub fn resolve_owners(
    conn: &Connection,
    path: &Path,
    v: &ValidCustomer,
) -> Result<std::result::Result<OwnerIds, Vec<FieldProblem>>> {
    let mut problems = Vec::new();
    let user = match &v.owner {
        None => None,
        Some(name) => {
            let id: Option<i64> = conn
                .prepare_cached("SELECT id FROM users WHERE username = ?1")
                .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
                .map_err(sql(path, "look up owner"))?;
            if id.is_none() {
                problems.push(FieldProblem {
                    field: "owner".to_owned(),
                    message: format!("no user {name:?}"),
                });
            }
            id
        }
    };
    let group = match &v.owner_group {
        None => None,
        Some(name) => {
            let id: Option<i64> = conn
                .prepare_cached("SELECT id FROM groups WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
                .map_err(sql(path, "look up owner group"))?;
            if id.is_none() {
                problems.push(FieldProblem {
                    field: "owner_group".to_owned(),
                    message: format!("no group {name:?}"),
                });
            }
            id
        }
    };
    Ok(if problems.is_empty() {
        Ok((user, group))
    } else {
        Err(problems)
    })
}

/// The customer (other than `except`) holding `number`, if any.
pub fn number_holder(
    conn: &Connection,
    path: &Path,
    number: &str,
    except: Option<i64>,
) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT customer_id FROM customer_numbers WHERE number = ?1 AND customer_id <> ?2
          ORDER BY customer_id LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![number, except.unwrap_or(0)], |r| r.get(0))
            .optional()
    })
    .map_err(sql(path, "look up number"))
}

fn write_children(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    id: i64,
    v: &ValidCustomer,
) -> Result<()> {
    let mut num = conn
        .prepare_cached(
            "INSERT INTO customer_numbers (number, customer_id, position) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql(path, "insert customer number"))?;
    for (i, n) in v.numbers.iter().enumerate() {
        num.execute(params![n, id, i as i64])
            .map_err(sql(path, "insert customer number"))?;
    }
    let mut val = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO customer_field_values (customer_id, field_id, value)
             VALUES (?1, ?2, ?3)",
        )
        .map_err(sql(path, "insert customer field value"))?;
    for (name, value) in &v.fields {
        let Some(field) = stored.field_ids.get(name) else {
            continue;
        };
        for s in value.stored() {
            val.execute(params![id, field, s])
                .map_err(sql(path, "insert customer field value"))?;
        }
    }
    Ok(())
}

fn check_numbers_free(
    conn: &Connection,
    path: &Path,
    v: &ValidCustomer,
    except: Option<i64>,
) -> Result<()> {
    for n in &v.numbers {
        if let Some(other) = number_holder(conn, path, n, except)? {
            return Err(Error::CustomerConflict {
                what: "customer",
                key: n.clone(),
                why: format!("the number belongs to customer {other} already"),
            });
        }
    }
    Ok(())
}

/// Adds a local customer (checked against the schema by the caller; owners and
/// numbers are checked here). Returns its id. A number another customer holds is
/// [`Error::CustomerConflict`]; an unknown owner [`Error::Invalid`].
pub fn insert_local(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    v: &ValidCustomer,
    created_by: &str,
    now_ms: i64,
) -> Result<i64> {
    let (user, group) = resolve_owners(conn, path, v)?.map_err(|problems| Error::Invalid {
        entity: "customer",
        key: v.name.clone(),
        problems,
    })?;
    check_numbers_free(conn, path, v, None)?;
    insert_unchecked(conn, path, stored, v, (user, group), created_by, now_ms)
}

/// [`insert_local`] without the owner and number checks (a CSV import checked them).
pub(crate) fn insert_unchecked(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    v: &ValidCustomer,
    (user, group): OwnerIds,
    created_by: &str,
    now_ms: i64,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO customers (name, type_digit, owner_user_id, owner_group_id, source,
                                hq_id, revision, created_by, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, 'local', NULL, 0, ?5, ?6, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            v.name,
            v.type_digit,
            user,
            group,
            created_by,
            now_ms
        ])
    })
    .map_err(sql(path, "insert customer"))?;
    let id = conn.last_insert_rowid();
    write_children(conn, path, stored, id, v)?;
    // Built from what was just written rather than read back: a CSV import queues one
    // per row.
    let record = CustomerRecord {
        id,
        name: v.name.clone(),
        numbers: v.numbers.clone(),
        type_digit: v.type_digit,
        type_name: v
            .type_digit
            .and_then(|d| stored.schema.types.get(&d).cloned()),
        owner: v.owner.clone(),
        owner_group: v.owner_group.clone(),
        fields: v
            .fields
            .iter()
            .filter(|(name, _)| stored.field_ids.contains_key(*name))
            .map(|(name, value)| (name.clone(), value.to_json()))
            .collect(),
        created_by: created_by.to_owned(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        deleted: false,
    };
    queue_for_hq(conn, path, &record, now_ms)?;
    Ok(id)
}

fn local_or_conflict(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    id: i64,
    op: &str,
) -> Result<CustomerRow> {
    let row = get(conn, path, schema, id)?.ok_or_else(|| Error::NotFound {
        entity: "customer",
        key: id.to_string(),
    })?;
    if row.source == Source::Hq {
        return Err(Error::CustomerConflict {
            what: "customer",
            key: id.to_string(),
            why: format!("HQ owns this contact: it can only be {op} at HQ"),
        });
    }
    Ok(row)
}

/// The stored customer `id` for an edit: [`Error::NotFound`], or a conflict for one
/// of HQ's contacts.
pub fn editable(conn: &Connection, path: &Path, schema: &Schema, id: i64) -> Result<CustomerRow> {
    local_or_conflict(conn, path, schema, id, "changed")
}

/// Replaces local customer `id` with `v` (name, numbers, type, owners, every field
/// value). Not found, HQ's, a taken number or an unknown owner: nothing is written.
pub fn replace_local(
    conn: &Connection,
    path: &Path,
    stored: &StoredSchema,
    id: i64,
    v: &ValidCustomer,
    now_ms: i64,
) -> Result<()> {
    local_or_conflict(conn, path, &stored.schema, id, "changed")?;
    let (user, group) = resolve_owners(conn, path, v)?.map_err(|problems| Error::Invalid {
        entity: "customer",
        key: id.to_string(),
        problems,
    })?;
    check_numbers_free(conn, path, v, Some(id))?;
    conn.execute(
        "UPDATE customers SET name = ?1, type_digit = ?2, owner_user_id = ?3,
                              owner_group_id = ?4, updated_at_ms = ?5
          WHERE id = ?6",
        params![v.name, v.type_digit, user, group, now_ms, id],
    )
    .map_err(sql(path, "update customer"))?;
    conn.execute("DELETE FROM customer_numbers WHERE customer_id = ?1", [id])
        .map_err(sql(path, "clear customer numbers"))?;
    conn.execute(
        "DELETE FROM customer_field_values WHERE customer_id = ?1",
        [id],
    )
    .map_err(sql(path, "clear customer field values"))?;
    write_children(conn, path, stored, id, v)?;
    queue_local(conn, path, &stored.schema, id, now_ms)
}

/// Deletes local customer `id` and returns it; HQ's is a conflict. HQ learns of the
/// deletion through the outbox.
pub fn delete_local(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    id: i64,
    now_ms: i64,
) -> Result<CustomerRow> {
    let row = local_or_conflict(conn, path, schema, id, "deleted")?;
    conn.execute("DELETE FROM customers WHERE id = ?1", [id])
        .map_err(sql(path, "delete customer"))?;
    queue_for_hq(conn, path, &hq_record(&row, Some(now_ms)), now_ms)?;
    Ok(row)
}

// --- sync to HQ -----------------------------------------------------------------------

/// A local customer as HQ gets it ([`CustomerRecord`]); `deleted_at_ms`: it was
/// deleted then.
pub fn hq_record(row: &CustomerRow, deleted_at_ms: Option<i64>) -> CustomerRecord {
    CustomerRecord {
        id: row.id,
        name: row.name.clone(),
        numbers: row.numbers.clone(),
        type_digit: row.type_digit,
        type_name: row.type_name.clone().filter(|_| row.type_digit.is_some()),
        owner: row.owner.clone(),
        owner_group: row.owner_group.clone(),
        fields: row
            .fields
            .iter()
            .map(|(name, v)| (name.clone(), v.to_json()))
            .collect(),
        created_by: row.created_by.clone(),
        created_at_ms: row.created_at_ms,
        updated_at_ms: deleted_at_ms.unwrap_or(row.updated_at_ms),
        deleted: deleted_at_ms.is_some(),
    }
}

fn queue_for_hq(
    conn: &Connection,
    path: &Path,
    record: &CustomerRecord,
    now_ms: i64,
) -> Result<()> {
    crate::store::queue_for_hq(
        conn,
        path,
        RecordKind::Customer,
        &record.id.to_string(),
        record,
        now_ms,
    )?;
    Ok(())
}

/// Queues local customer `id` as it now is for HQ, in the caller's transaction (HQ's
/// own contacts are not sent back). A customer that does not exist queues nothing.
pub fn queue_local(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    id: i64,
    now_ms: i64,
) -> Result<()> {
    match get(conn, path, schema, id)? {
        Some(row) if row.source == Source::Local => {
            queue_for_hq(conn, path, &hq_record(&row, None), now_ms)
        }
        _ => Ok(()),
    }
}

// --- HQ's contacts --------------------------------------------------------------------

/// Checks HQ's contact: its name on the box (a nameless one takes its id) and its
/// numbers in canonical form with the site's `plan` ([`crate::numbers`]), or the
/// problem naming the field.
pub fn check_hq(
    c: &branchline_sync::wire::Contact,
    plan: Option<&crate::numbers::SitePlan>,
) -> std::result::Result<(String, Vec<String>), String> {
    let name = if c.name.trim().is_empty() {
        c.id.clone()
    } else {
        c.name.clone()
    };
    if name.len() > 1024 {
        return Err("name: longer than 1024 bytes".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("name: must not contain control characters".to_owned());
    }
    let mut numbers: Vec<String> = Vec::with_capacity(c.numbers.len());
    for (i, n) in c.numbers.iter().enumerate() {
        let n = crate::numbers::canonical(plan, n).map_err(|m| format!("numbers[{i}]: {m}"))?;
        if !numbers.contains(&n) {
            numbers.push(n);
        }
    }
    Ok((name, numbers))
}

/// Writes HQ's contact (checked by the caller with [`check_hq`]) as a customer with
/// source `hq`: its name and numbers are replaced; type, owners and fields stay.
pub fn upsert_hq(
    conn: &Connection,
    path: &Path,
    hq_id: &str,
    name: &str,
    numbers: &[String],
    revision: i64,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO customers (name, source, hq_id, revision, created_by, created_at_ms,
                                updated_at_ms)
         VALUES (?1, 'hq', ?2, ?3, 'hq', ?4, ?4)
         ON CONFLICT (hq_id) DO UPDATE
            SET name = excluded.name, revision = excluded.revision,
                updated_at_ms = excluded.updated_at_ms",
        params![name, hq_id, revision, now_ms],
    )
    .map_err(sql(path, "upsert customer from hq"))?;
    let id: i64 = conn
        .query_row("SELECT id FROM customers WHERE hq_id = ?1", [hq_id], |r| {
            r.get(0)
        })
        .map_err(sql(path, "look up customer from hq"))?;
    conn.execute("DELETE FROM customer_numbers WHERE customer_id = ?1", [id])
        .map_err(sql(path, "clear customer numbers"))?;
    for (i, n) in numbers.iter().enumerate() {
        conn.execute(
            "INSERT INTO customer_numbers (number, customer_id, position) VALUES (?1, ?2, ?3)",
            params![n, id, i as i64],
        )
        .map_err(sql(path, "insert customer number from hq"))?;
    }
    Ok(())
}

/// Deletes HQ's contact `hq_id` (never a local customer); how many rows went.
pub fn delete_hq(conn: &Connection, path: &Path, hq_id: &str) -> Result<usize> {
    conn.execute(
        "DELETE FROM customers WHERE hq_id = ?1 AND source = 'hq'",
        [hq_id],
    )
    .map_err(sql(path, "delete customer from hq"))
}

/// HQ's contact ids on the box (for a snapshot to find the ones it lacks).
pub fn hq_ids(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    conn.prepare("SELECT hq_id FROM customers WHERE source = 'hq'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql(path, "list hq contacts"))
}

/// The RBAC target of a customer owned by `user` and/or `group` (as
/// [`CustomerRow::target`] will be once written).
pub fn owner_target(
    conn: &Connection,
    path: &Path,
    user: Option<i64>,
    group: Option<i64>,
) -> Result<Target> {
    let mut groups: Vec<GroupId> = match user {
        Some(u) => conn
            .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
            .and_then(|mut s| {
                s.query_map([u], |r| r.get(0).map(GroupId))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql(path, "read customer owner groups"))?,
        None => Vec::new(),
    };
    if let Some(g) = group {
        if !groups.contains(&GroupId(g)) {
            groups.push(GroupId(g));
        }
    }
    Ok(Target::Owned {
        owner: user.map(UserId),
        groups,
    })
}
