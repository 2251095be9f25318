//! Customer records: the box's small CRM, which is also the shared contact directory
//! HQ syncs down (issue 10 item 1, issue 6 item 8).
//!
//! This module is the sans-IO part: it checks what a person or a CSV file gives
//! against the site's schema (custom field definitions and customer types) and turns
//! it into canonical values, with no database in sight. [`store`] keeps them in SQLite
//! (migration 0012), [`csv`] imports and exports them, [`lookup_by_number`] finds
//! the customer of a calling number for call control (caller-ID names, screen pops),
//! and [`service`] keeps each customer's calls (service records and notes).
//!
//! - **Numbers**: a customer's numbers are stored in the one canonical form of
//!   [`crate::numbers`] (E.164 where the site's numbering plan can tell: `030 123456`,
//!   `004930123456` and `+49 30 123456` are all stored as `+4930123456` at a German
//!   site; an extension or another short form is kept as typed, separators dropped),
//!   and every lookup ([`lookup_by_number`], service records, dispositions, the
//!   `number` filter) canonicalises the number it is given the same way, so a caller
//!   ID or CDR number in any form meets the customer. A customer has 0 to
//!   [`MAX_NUMBERS`] numbers. Phone-type custom fields are stored in the same
//!   canonical form ([`Schema::canonical_value`]), so a `field.<name>` filter finds a
//!   number given in any form; they are shown and filtered, not used to recognise
//!   callers.
//! - **Types**: the site's customer types map a keypad digit 0-9 to a name (so at most
//!   10; an agent keys the digit in wrap-up). A customer has one type or none.
//! - **Custom fields** ([`FieldDef`]): at most [`MAX_FIELDS`] per site, each with a
//!   name (`[a-z][a-z0-9_]*`, at most 32 bytes, not one of the built-in columns), a
//!   label, a [`FieldType`], a required flag, an optional default and, for the choice
//!   types, 1 to [`MAX_CHOICES`] choices. [`FieldDef::check`] applies the default to a
//!   missing value, refuses a missing required one, and parses the rest into a
//!   canonical [`FieldValue`]: integers as `i64`, phone numbers normalised, dates
//!   `YYYY-MM-DD` (a real calendar day), times `HH:MM:SS` (`HH:MM` is accepted),
//!   date-times `YYYY-MM-DDTHH:MM:SS` (site local time, no zone; a space for the `T`
//!   and a missing `:SS` are accepted), choices exactly as defined, a multiple choice
//!   as a set kept in the definition's order.
//!
//! Limits: dates and times are checked by hand (no calendar crate is a dependency of
//! the firmware, and the rules here are a dozen lines: Gregorian leap years, no time
//! zones). Changing a field to required does not revisit existing customers; they
//! must supply it at their next edit.

pub mod csv;
pub mod service;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::FieldProblem;

pub use self::store::{lookup_by_number, CustomerMatch};

/// Custom fields a site may define.
pub const MAX_FIELDS: usize = 32;
/// Numbers one customer may have.
pub const MAX_NUMBERS: usize = 10;
/// Digits in a number (HQ's limit too).
pub const MAX_NUMBER_DIGITS: usize = crate::numbers::MAX_DIGITS;
/// Characters in a local customer's name (HQ's contacts may have up to 1024 bytes).
pub const MAX_NAME_CHARS: usize = 200;
/// Characters in a text field's value.
pub const MAX_TEXT_CHARS: usize = 500;
/// Characters in a field's label and in a customer type's name.
pub const MAX_LABEL_CHARS: usize = 64;
/// Choices of a choice field.
pub const MAX_CHOICES: usize = 50;
/// Characters in one choice.
pub const MAX_CHOICE_CHARS: usize = 64;
/// Bytes in a field's name.
pub const MAX_FIELD_NAME: usize = 32;
/// Names a custom field may not take: the built-in columns of the API, the CSV and
/// the list filters.
pub const RESERVED_FIELD_NAMES: &[&str] = &[
    "id",
    "name",
    "number",
    "numbers",
    "type",
    "owner",
    "owner_group",
    "source",
    "limit",
    "offset",
];

/// `number` cleaned (spaces, `-`, `.`, `(` and `)` dropped; digits with an optional
/// leading `+`, 1 to [`MAX_NUMBER_DIGITS`] digits), or the problem in words. This is
/// rule 1 of [`crate::numbers`] only: phone-type custom fields are stored so. A
/// customer's own numbers go through the site's plan as well ([`Schema::plan`]).
pub fn normalize_number(number: &str) -> Result<String, String> {
    crate::numbers::clean(number)
}

/// The type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// Free text, at most [`MAX_TEXT_CHARS`] characters, no control characters.
    Text,
    /// A whole number (`i64`).
    Integer,
    /// A phone number (in the canonical form of a customer's numbers, and masked like
    /// them).
    Phone,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM:SS`.
    Time,
    /// `YYYY-MM-DDTHH:MM:SS`, site local time.
    DateTime,
    /// One of the field's choices.
    SingleChoice,
    /// Any set of the field's choices.
    MultiChoice,
}

impl FieldType {
    /// Every type.
    pub const ALL: [FieldType; 8] = [
        FieldType::Text,
        FieldType::Integer,
        FieldType::Phone,
        FieldType::Date,
        FieldType::Time,
        FieldType::DateTime,
        FieldType::SingleChoice,
        FieldType::MultiChoice,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Phone => "phone",
            FieldType::Date => "date",
            FieldType::Time => "time",
            FieldType::DateTime => "datetime",
            FieldType::SingleChoice => "single_choice",
            FieldType::MultiChoice => "multi_choice",
        }
    }

    /// Whether the field has choices.
    pub fn has_choices(self) -> bool {
        matches!(self, FieldType::SingleChoice | FieldType::MultiChoice)
    }
}

impl FromStr for FieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FieldType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.as_str()).collect();
                format!("{s:?} is not one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FieldType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A value as given, before it is checked against its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    /// Missing, `null`, an empty string or an empty list.
    Absent,
    /// A string (a CSV cell, a JSON string).
    Text(String),
    /// A JSON integer.
    Integer(i64),
    /// A JSON list of strings (multiple choice).
    List(Vec<String>),
}

impl RawValue {
    /// A JSON value: `null`, a string, an integer or a list of strings.
    pub fn from_json(v: &serde_json::Value) -> Result<RawValue, String> {
        use serde_json::Value as J;
        Ok(match v {
            J::Null => RawValue::Absent,
            J::String(s) if s.is_empty() => RawValue::Absent,
            J::String(s) => RawValue::Text(s.clone()),
            J::Number(n) => RawValue::Integer(
                n.as_i64()
                    .ok_or_else(|| format!("{n} is not a whole number"))?,
            ),
            J::Array(items) if items.is_empty() => RawValue::Absent,
            J::Array(items) => RawValue::List(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("list item {i} is not a string"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            J::Bool(_) | J::Object(_) => {
                return Err("must be a string, a whole number or a list of strings".to_owned())
            }
        })
    }

    /// A CSV cell (trimmed; empty is absent).
    pub fn from_cell(cell: &str) -> RawValue {
        let t = cell.trim();
        if t.is_empty() {
            RawValue::Absent
        } else {
            RawValue::Text(t.to_owned())
        }
    }
}

/// A checked value in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A normalised phone number.
    Phone(String),
    /// `YYYY-MM-DD`.
    Date(String),
    /// `HH:MM:SS`.
    Time(String),
    /// `YYYY-MM-DDTHH:MM:SS`.
    DateTime(String),
    /// One choice.
    Choice(String),
    /// Several choices, in the definition's order.
    Choices(Vec<String>),
}

impl FieldValue {
    /// The rows it is stored as in `customer_field_values` (one per choice).
    pub fn stored(&self) -> Vec<String> {
        match self {
            FieldValue::Integer(i) => vec![i.to_string()],
            FieldValue::Choices(c) => c.clone(),
            FieldValue::Text(s)
            | FieldValue::Phone(s)
            | FieldValue::Date(s)
            | FieldValue::Time(s)
            | FieldValue::DateTime(s)
            | FieldValue::Choice(s) => vec![s.clone()],
        }
    }

    /// Rebuilds a value of type `t` from its stored rows (`None` when there are none,
    /// or an integer row does not parse: written by something else than this module).
    pub fn from_stored(t: FieldType, mut rows: Vec<String>) -> Option<FieldValue> {
        if rows.is_empty() {
            return None;
        }
        if t == FieldType::MultiChoice {
            return Some(FieldValue::Choices(rows));
        }
        let one = rows.swap_remove(0);
        Some(match t {
            FieldType::Text => FieldValue::Text(one),
            FieldType::Integer => FieldValue::Integer(one.parse().ok()?),
            FieldType::Phone => FieldValue::Phone(one),
            FieldType::Date => FieldValue::Date(one),
            FieldType::Time => FieldValue::Time(one),
            FieldType::DateTime => FieldValue::DateTime(one),
            FieldType::SingleChoice | FieldType::MultiChoice => FieldValue::Choice(one),
        })
    }

    /// As JSON: an integer is a number, a multiple choice a list, the rest strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Integer(i) => serde_json::json!(i),
            FieldValue::Choices(c) => serde_json::json!(c),
            other => serde_json::json!(other.stored()[0]),
        }
    }

    /// As a CSV cell: a multiple choice `;`-separated.
    pub fn to_cell(&self) -> String {
        self.stored().join(";")
    }

    /// The phone number this value holds, if it is a phone field's.
    pub fn phone(&self) -> Option<&str> {
        match self {
            FieldValue::Phone(p) => Some(p),
            _ => None,
        }
    }
}

/// A custom field definition, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// Its name (the key in the API, the CSV column, the `field.<name>` filter).
    pub name: String,
    /// What people see.
    pub label: String,
    /// Its type.
    pub field_type: FieldType,
    /// Whether a customer must have a value (after the default is applied).
    pub required: bool,
    /// The value a customer gets when none is given.
    pub default: Option<FieldValue>,
    /// The choices of a choice field (empty otherwise).
    pub choices: Vec<String>,
}

fn two(s: &str) -> Option<u32> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` when it names a real day.
fn parse_date(s: &str) -> Option<String> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || !y.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: u32 = y.parse().ok()?;
    let (month, day) = (two(m)?, two(d)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (year >= 1 && (1..=days).contains(&day)).then(|| s.to_owned())
}

/// `HH:MM` or `HH:MM:SS` as `HH:MM:SS`.
fn parse_time(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (two(h)?, two(m)?, 0),
        [h, m, sec] => (two(h)?, two(m)?, two(sec)?),
        _ => return None,
    };
    (h < 24 && m < 60 && sec < 60).then(|| format!("{h:02}:{m:02}:{sec:02}"))
}

fn parse_datetime(s: &str) -> Option<String> {
    let (d, t) = s.split_once('T').or_else(|| s.split_once(' '))?;
    Some(format!("{}T{}", parse_date(d)?, parse_time(t)?))
}

fn text_problem(s: &str, max: usize) -> Option<String> {
    let n = s.chars().count();
    if n > max {
        Some(format!("longer than {max} characters ({n})"))
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

impl FieldDef {
    /// Checks `raw` for this field: the canonical value, `None` for an absent value of
    /// an optional field without a default, or the problem in words.
    pub fn check(&self, raw: &RawValue) -> Result<Option<FieldValue>, String> {
        if *raw == RawValue::Absent {
            return match (&self.default, self.required) {
                (Some(d), _) => Ok(Some(d.clone())),
                (None, true) => Err("required".to_owned()),
                (None, false) => Ok(None),
            };
        }
        self.parse(raw).map(Some)
    }

    /// Parses a present value by the field's type.
    fn parse(&self, raw: &RawValue) -> Result<FieldValue, String> {
        let text = || -> Result<&str, String> {
            match raw {
                RawValue::Text(s) => Ok(s.as_str()),
                RawValue::Integer(_) => {
                    Err(format!("must be a string for a {} field", self.field_type))
                }
                RawValue::List(_) => Err(format!(
                    "must be one value for a {} field, not a list",
                    self.field_type
                )),
                RawValue::Absent => Err("required".to_owned()),
            }
        };
        match self.field_type {
            FieldType::Text => {
                let s = text()?;
                match text_problem(s, MAX_TEXT_CHARS) {
                    Some(p) => Err(p),
                    None => Ok(FieldValue::Text(s.to_owned())),
                }
            }
            FieldType::Integer => match raw {
                RawValue::Integer(i) => Ok(FieldValue::Integer(*i)),
                _ => {
                    let s = text()?.trim();
                    s.parse::<i64>()
                        .map(FieldValue::Integer)
                        .map_err(|_| format!("{s:?} is not a whole number"))
                }
            },
            FieldType::Phone => normalize_number(text()?).map(FieldValue::Phone),
            FieldType::Date => {
                let s = text()?.trim();
                parse_date(s)
                    .map(FieldValue::Date)
                    .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))
            }
            FieldType::Time => {
                let s = text()?.trim();
                parse_time(s)
                    .map(FieldValue::Time)
                    .ok_or_else(|| format!("{s:?} is not a time (HH:MM or HH:MM:SS)"))
            }
            FieldType::DateTime => {
                let s = text()?.trim();
                parse_datetime(s)
                    .map(FieldValue::DateTime)
                    .ok_or_else(|| format!("{s:?} is not a date and time (YYYY-MM-DDTHH:MM[:SS])"))
            }
            FieldType::SingleChoice => {
                let s = text()?.trim();
                if self.choices.iter().any(|c| c == s) {
                    Ok(FieldValue::Choice(s.to_owned()))
                } else {
                    Err(format!(
                        "{s:?} is not one of the choices ({})",
                        self.choices.join(", ")
                    ))
                }
            }
            FieldType::MultiChoice => {
                let given: Vec<String> = match raw {
                    RawValue::List(l) => l.iter().map(|s| s.trim().to_owned()).collect(),
                    RawValue::Text(s) => s
                        .split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    RawValue::Integer(_) | RawValue::Absent => {
                        return Err("must be a list of choices".to_owned())
                    }
                };
                let mut chosen = BTreeSet::new();
                for g in &given {
                    if !self.choices.contains(g) {
                        return Err(format!(
                            "{g:?} is not one of the choices ({})",
                            self.choices.join(", ")
                        ));
                    }
                    chosen.insert(g.as_str());
                }
                if chosen.is_empty() {
                    return Err("must name at least one choice".to_owned());
                }
                Ok(FieldValue::Choices(
                    self.choices
                        .iter()
                        .filter(|c| chosen.contains(c.as_str()))
                        .cloned()
                        .collect(),
                ))
            }
        }
    }
}

/// Whether `name` may name a custom field.
pub fn field_name_problem(name: &str) -> Option<String> {
    let mut bytes = name.bytes();
    let ok_shape = matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if !ok_shape || name.len() > MAX_FIELD_NAME {
        Some(format!(
            "{name:?} must be a lowercase letter, then lowercase letters, digits or _, \
             at most {MAX_FIELD_NAME} in all"
        ))
    } else if RESERVED_FIELD_NAMES.contains(&name) {
        Some(format!("{name:?} is a built-in column"))
    } else {
        None
    }
}

/// A field definition as the API takes it (`POST /api/v1/customer-fields`; `PUT`
/// takes the same, whose `name` and `type` must stay as they are).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDefInput {
    /// Name.
    pub name: String,
    /// Label (empty: the name).
    #[serde(default)]
    pub label: String,
    /// Type name.
    #[serde(rename = "type")]
    pub field_type: String,
    /// Required flag.
    #[serde(default)]
    pub required: bool,
    /// Default value (as a customer's value is given).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Choices of a choice field.
    #[serde(default)]
    pub choices: Vec<String>,
}

impl FieldDefInput {
    /// The definition, or every problem naming its field.
    pub fn validate(&self) -> Result<FieldDef, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(FieldProblem {
                field: field.to_owned(),
                message,
            });
        };
        if let Some(p) = field_name_problem(&self.name) {
            problem("name", p);
        }
        let label = if self.label.is_empty() {
            self.name.clone()
        } else {
            self.label.clone()
        };
        if let Some(p) = text_problem(&label, MAX_LABEL_CHARS) {
            problem("label", p);
        }
        let field_type = self
            .field_type
            .parse::<FieldType>()
            .map_err(|m| problem("type", m))
            .ok();
        let mut choices: Vec<String> = Vec::new();
        match field_type {
            Some(t) if t.has_choices() => {
                if self.choices.is_empty() || self.choices.len() > MAX_CHOICES {
                    problem(
                        "choices",
                        format!("a {t} field needs 1 to {MAX_CHOICES} choices"),
                    );
                }
                for (i, c) in self.choices.iter().enumerate() {
                    let c = c.trim();
                    if c.is_empty() || c.contains(';') {
                        problem(
                            &format!("choices[{i}]"),
                            "must be non-empty and must not contain ';'".to_owned(),
                        );
                    } else if let Some(p) = text_problem(c, MAX_CHOICE_CHARS) {
                        problem(&format!("choices[{i}]"), p);
                    } else if choices.iter().any(|x| x == c) {
                        problem(&format!("choices[{i}]"), format!("{c:?} is listed twice"));
                    } else {
                        choices.push(c.to_owned());
                    }
                }
            }
            Some(t) if !self.choices.is_empty() => {
                problem("choices", format!("a {t} field has no choices"));
            }
            _ => {}
        }
        let mut def = field_type.map(|field_type| FieldDef {
            name: self.name.clone(),
            label,
            field_type,
            required: self.required,
            default: None,
            choices,
        });
        if let (Some(d), Some(raw)) = (&mut def, &self.default) {
            match RawValue::from_json(raw).and_then(|raw| {
                if raw == RawValue::Absent {
                    Ok(None)
                } else {
                    d.parse(&raw).map(Some)
                }
            }) {
                Ok(v) => d.default = v,
                Err(m) => problem("default", m),
            }
        }
        match def {
            Some(def) if problems.is_empty() => Ok(def),
            _ => Err(problems),
        }
    }
}

/// The site's schema: its custom fields (in definition order) and customer types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Field definitions.
    pub fields: Vec<FieldDef>,
    /// Customer types: digit -> name.
    pub types: BTreeMap<u8, String>,
    /// The site's numbering plan customers' numbers are canonicalised with
    /// ([`crate::numbers`]); `None`: cleaned only.
    pub plan: Option<crate::numbers::SitePlan>,
}

/// A customer as given, before it is checked: the JSON body or a CSV row. Owners are
/// names (resolved by the store).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Draft {
    /// Name.
    pub name: String,
    /// Numbers as typed.
    pub numbers: Vec<String>,
    /// Type: a digit or a type's name (`None`: no type).
    pub customer_type: Option<String>,
    /// Owning agent's username.
    pub owner: Option<String>,
    /// Owning group's name.
    pub owner_group: Option<String>,
    /// Custom field values by field name.
    pub fields: Vec<(String, RawValue)>,
}

/// A checked customer: what the store writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCustomer {
    /// Name.
    pub name: String,
    /// Normalised numbers, without repeats, in the given order.
    pub numbers: Vec<String>,
    /// Type digit.
    pub type_digit: Option<u8>,
    /// Owning agent's username.
    pub owner: Option<String>,
    /// Owning group's name.
    pub owner_group: Option<String>,
    /// Values by field name (fields without a value are absent).
    pub fields: BTreeMap<String, FieldValue>,
}

impl Schema {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The type digit `given` names: a configured digit, or a configured type's name.
    pub fn type_digit(&self, given: &str) -> Result<u8, String> {
        let given = given.trim();
        if let Ok(d) = given.parse::<u8>() {
            if given.len() == 1 && self.types.contains_key(&d) {
                return Ok(d);
            }
        }
        self.types
            .iter()
            .find(|(_, n)| n.as_str() == given)
            .map(|(d, _)| *d)
            .ok_or_else(|| {
                let known: Vec<String> =
                    self.types.iter().map(|(d, n)| format!("{d} {n}")).collect();
                if known.is_empty() {
                    format!("{given:?}: no customer types are configured")
                } else {
                    format!(
                        "{given:?} is not a configured type digit or name ({})",
                        known.join(", ")
                    )
                }
            })
    }

    /// A checked field value as stored: a phone number in the site's canonical form
    /// (like a customer's numbers), anything else as it is.
    pub fn canonical_value(&self, value: FieldValue) -> Result<FieldValue, String> {
        match value {
            FieldValue::Phone(p) => {
                crate::numbers::canonical(self.plan.as_ref(), &p).map(FieldValue::Phone)
            }
            other => Ok(other),
        }
    }

    /// Checks a draft: the customer, or every problem naming its field (`name`,
    /// `numbers[i]`, `type`, `owner`, `owner_group`, `fields.<name>`).
    pub fn check(&self, draft: &Draft) -> Result<ValidCustomer, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| {
            problems.push(FieldProblem { field, message });
        };
        let name = draft.name.trim();
        if name.is_empty() {
            problem("name".to_owned(), "required".to_owned());
        } else if let Some(p) = text_problem(name, MAX_NAME_CHARS) {
            problem("name".to_owned(), p);
        }
        if draft.numbers.len() > MAX_NUMBERS {
            problem(
                "numbers".to_owned(),
                format!("at most {MAX_NUMBERS} numbers ({})", draft.numbers.len()),
            );
        }
        let mut numbers: Vec<String> = Vec::with_capacity(draft.numbers.len());
        for (i, n) in draft.numbers.iter().enumerate() {
            match crate::numbers::canonical(self.plan.as_ref(), n) {
                Ok(n) if numbers.contains(&n) => {
                    problem(format!("numbers[{i}]"), format!("{n} is listed twice"));
                }
                Ok(n) => numbers.push(n),
                Err(m) => problem(format!("numbers[{i}]"), m),
            }
        }
        let type_digit = match &draft.customer_type {
            None => None,
            Some(t) => self
                .type_digit(t)
                .map_err(|m| problem("type".to_owned(), m))
                .ok(),
        };
        for (who, value) in [("owner", &draft.owner), ("owner_group", &draft.owner_group)] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    problem(
                        who.to_owned(),
                        "must not be empty (leave it out)".to_owned(),
                    );
                }
            }
        }
        let mut given: BTreeMap<&str, &RawValue> = BTreeMap::new();
        for (name, raw) in &draft.fields {
            if self.field(name).is_none() {
                problem(
                    format!("fields.{name}"),
                    "no such custom field (GET /api/v1/customer-fields)".to_owned(),
                );
            } else if given.insert(name, raw).is_some() {
                problem(format!("fields.{name}"), "given twice".to_owned());
            }
        }
        let mut fields = BTreeMap::new();
        for def in &self.fields {
            let raw = given
                .get(def.name.as_str())
                .copied()
                .unwrap_or(&RawValue::Absent);
            match def
                .check(raw)
                .and_then(|v| v.map(|v| self.canonical_value(v)).transpose())
            {
                Ok(Some(v)) => {
                    fields.insert(def.name.clone(), v);
                }
                Ok(None) => {}
                Err(m) => problem(format!("fields.{}", def.name), m),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ValidCustomer {
            name: name.to_owned(),
            numbers,
            type_digit,
            owner: draft.owner.as_ref().map(|o| o.trim().to_owned()),
            owner_group: draft.owner_group.as_ref().map(|o| o.trim().to_owned()),
            fields,
        })
    }
}

/// A customer as the API takes it (`POST` / `PUT /api/v1/customers`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    /// Name.
    pub name: String,
    /// Numbers.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Type: a digit (number or string) or a type's name; `null` / absent: none.
    #[serde(default, rename = "type")]
    pub customer_type: Option<serde_json::Value>,
    /// Owning agent's username.
    #[serde(default)]
    pub owner: Option<String>,
    /// Owning group's name.
    #[serde(default)]
    pub owner_group: Option<String>,
    /// Custom field values by name.
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl CustomerInput {
    /// The draft, or the problems of values that are not even the right JSON shape.
    pub fn draft(&self) -> Result<Draft, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let customer_type = match &self.customer_type {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(FieldProblem {
                    field: "type".to_owned(),
                    message: format!("{other} must be a digit 0-9 or a type's name"),
                });
                None
            }
        };
        let mut fields = Vec::with_capacity(self.fields.len());
        for (name, v) in &self.fields {
            match RawValue::from_json(v) {
                Ok(raw) => fields.push((name.clone(), raw)),
                Err(m) => problems.push(FieldProblem {
                    field: format!("fields.{name}"),
                    message: m,
                }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Draft {
            name: self.name.clone(),
            numbers: self.numbers.clone(),
            customer_type,
            owner: self.owner.clone(),
            owner_group: self.owner_group.clone(),
            fields,
        })
    }
}

/// A customer type as the API takes it (`PUT /api/v1/customer-types/{digit}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeInput {
    /// Its name.
    pub name: String,
}

/// Checks a type's digit and name.
pub fn check_type(digit: &str, name: &str) -> Result<(u8, String), Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let d = match digit.parse::<u8>() {
        Ok(d) if digit.len() == 1 && d <= 9 => Some(d),
        _ => {
            problems.push(FieldProblem {
                field: "digit".to_owned(),
                message: format!("{digit:?} must be one digit 0-9 (at most 10 types)"),
            });
            None
        }
    };
    let name = name.trim();
    let bad = if name.is_empty() {
        Some("required".to_owned())
    } else if name.len() == 1 && name.as_bytes()[0].is_ascii_digit() {
        Some("must not be a single digit (it would read as a type digit)".to_owned())
    } else {
        text_problem(name, MAX_LABEL_CHARS)
    };
    if let Some(m) = bad {
        problems.push(FieldProblem {
            field: "name".to_owned(),
            message: m,
        });
    }
    match d {
        Some(d) if problems.is_empty() => Ok((d, name.to_owned())),
        _ => Err(problems),
    }
}
