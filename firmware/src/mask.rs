//! Masking of customers' phone numbers.
//!
//! **This is the one path by which phone numbers leave the box**: API responses, CSV
//! exports, reports and the event stream build their call records with [`cdr_view`]
//! (or [`list_cdrs`]), never from a raw [`Cdr`]. A number is shown unmasked only when
//! the subject holds `numbers.view` at a scope that covers the record (see
//! [`crate::rbac`]); internal extension numbers (rows of the `extensions` table) are
//! not customer numbers and are never masked.
//!
//! # Pattern
//!
//! `[privacy] mask_pattern = "3*4"` keeps the first 3 and the last 4 digits and
//! replaces every digit between them with `*`: `13812345678` -> `138****5678`. A
//! leading `+` is kept and not counted; other non-digit characters stay in place.
//! A number with no more digits than first + last would be shown whole, so it is
//! masked entirely except its last 2 digits (`5551234` -> `*****34` under `3*4`);
//! a number of 1 or 2 digits is masked entirely. A withheld number (`""`) stays empty.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::accounts::{Page, PageRequest};
use crate::cdr::{Cdr, Direction, Disposition, HangupSide};
use crate::error::{Error, InvalidValue, Result};
use crate::rbac::{Action, Authorizer, GroupId, Resource, Subject, Target, UserId};
use crate::store::StoreReader;

/// How many leading and trailing digits stay visible. Parsed from `"<first>*<last>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskPattern {
    /// Leading digits kept.
    pub keep_first: u8,
    /// Trailing digits kept.
    pub keep_last: u8,
}

impl Default for MaskPattern {
    /// `3*4`.
    fn default() -> Self {
        MaskPattern {
            keep_first: 3,
            keep_last: 4,
        }
    }
}

impl FromStr for MaskPattern {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue {
            what: "mask pattern",
            value: s.to_owned(),
            reason: "must be <first>*<last> with each 0 to 8, e.g. 3*4",
        };
        let (a, b) = s.split_once('*').ok_or_else(bad)?;
        let keep_first: u8 = a.parse().map_err(|_| bad())?;
        let keep_last: u8 = b.parse().map_err(|_| bad())?;
        if keep_first > 8 || keep_last > 8 {
            return Err(bad());
        }
        Ok(MaskPattern {
            keep_first,
            keep_last,
        })
    }
}

impl fmt::Display for MaskPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}*{}", self.keep_first, self.keep_last)
    }
}

impl MaskPattern {
    /// `number` with its middle digits replaced by `*` (see the module docs).
    pub fn mask(&self, number: &str) -> String {
        let (plus, rest) = match number.strip_prefix('+') {
            Some(rest) => ("+", rest),
            None => ("", number),
        };
        let digits = rest.bytes().filter(u8::is_ascii_digit).count();
        let (first, last) = (usize::from(self.keep_first), usize::from(self.keep_last));
        let (keep_first, keep_last) = if digits > first + last {
            (first, last)
        } else if digits > 2 {
            (0, 2)
        } else {
            (0, 0)
        };
        let mut out = String::with_capacity(number.len());
        out.push_str(plus);
        let mut seen = 0;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                let visible = seen < keep_first || seen >= digits - keep_last;
                out.push(if visible { c } else { '*' });
                seen += 1;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// `number` as a subject may see it: unmasked when `can_unmask`, else masked.
    pub fn present_number(&self, number: &str, can_unmask: bool) -> String {
        if can_unmask {
            number.to_owned()
        } else {
            self.mask(number)
        }
    }
}

/// Who owns which extension, and which numbers are extensions at all (loaded per
/// request or cached with the authorizer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberDirectory {
    extensions: HashSet<String>,
    owners: HashMap<String, (UserId, Vec<GroupId>)>,
}

impl NumberDirectory {
    /// A directory from its parts: the extension numbers, and for each owned extension
    /// its user and that user's groups.
    pub fn new(
        extensions: impl IntoIterator<Item = String>,
        owners: impl IntoIterator<Item = (String, UserId, Vec<GroupId>)>,
    ) -> NumberDirectory {
        NumberDirectory {
            extensions: extensions.into_iter().collect(),
            owners: owners
                .into_iter()
                .map(|(ext, user, groups)| (ext, (user, groups)))
                .collect(),
        }
    }

    /// Loads extensions and the users assigned to them.
    pub fn load(reader: &StoreReader) -> Result<NumberDirectory> {
        let (conn, path) = (reader.connection(), reader.path());
        let sql = |op| {
            move |source| Error::Sqlite {
                path: path.to_owned(),
                op,
                source,
            }
        };
        let extensions = reader.extensions()?.into_iter().map(|e| e.number);
        let users: Vec<(String, i64)> = conn
            .prepare_cached("SELECT extension, id FROM users WHERE extension IS NOT NULL")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql("read extension owners"))?;
        let mut owners = Vec::with_capacity(users.len());
        for (ext, id) in users {
            let groups = conn
                .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
                .and_then(|mut s| {
                    s.query_map([id], |r| r.get(0).map(GroupId))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sql("read extension owner groups"))?;
            owners.push((ext, UserId(id), groups));
        }
        Ok(NumberDirectory::new(extensions, owners))
    }

    /// Whether `number` is an internal extension.
    pub fn is_extension(&self, number: &str) -> bool {
        self.extensions.contains(number)
    }

    /// The targets a CDR stands for: one per internal party with an owner (an internal
    /// call belongs to both ends), or an ownerless record when no party has one.
    pub fn cdr_targets(&self, cdr: &Cdr) -> Vec<Target> {
        self.call_targets(&cdr.caller, &cdr.callee)
    }

    /// The targets of a call between `caller` and `callee` (see
    /// [`NumberDirectory::cdr_targets`]; also for calls still in progress).
    pub fn call_targets(&self, caller: &str, callee: &str) -> Vec<Target> {
        let mut out: Vec<Target> = [caller, callee]
            .into_iter()
            .filter_map(|n| self.owners.get(n))
            .map(|(user, groups)| Target::Owned {
                owner: Some(*user),
                groups: groups.clone(),
            })
            .collect();
        if out.is_empty() {
            out.push(Target::Owned {
                owner: None,
                groups: Vec::new(),
            });
        }
        out
    }

    /// The owner of the first owned party, for display.
    fn owner(&self, cdr: &Cdr) -> Option<UserId> {
        [&cdr.caller, &cdr.callee]
            .into_iter()
            .find_map(|n| self.owners.get(n.as_str()).map(|o| o.0))
    }
}

/// A call record as it may leave the box: the external number masked unless the
/// subject may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrView {
    /// Unique call id on this box.
    pub call_id: String,
    /// Internal, inbound or outbound.
    pub direction: Direction,
    /// Calling number as presented (masked if a customer's and not unmaskable).
    pub caller: String,
    /// Called number as presented.
    pub callee: String,
    /// The user owning the record (the agent on the extension), if any.
    pub owner: Option<UserId>,
    /// Whether a number in this view was masked.
    pub masked: bool,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Answer, if answered.
    pub answered_at_ms: Option<i64>,
    /// End.
    pub ended_at_ms: i64,
    /// Whole length in ms.
    pub duration_ms: i64,
    /// Talk time in ms.
    pub billable_ms: i64,
    /// How it ended.
    pub disposition: Disposition,
    /// Who ended it.
    pub hangup_side: HangupSide,
    /// Why the box ended it, when it did (`media_timeout`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<crate::cdr::HangupCause>,
}

/// Whether `subject` may see this CDR's customer numbers unmasked: `numbers.view` at a
/// scope covering one of the record's targets.
pub fn can_unmask(
    subject: &Subject,
    authorizer: &Authorizer,
    dir: &NumberDirectory,
    cdr: &Cdr,
) -> bool {
    dir.cdr_targets(cdr).iter().any(|t| {
        authorizer
            .authorize(subject, Resource::Numbers, Action::View, t)
            .is_allowed()
    })
}

/// Whether `subject` may see this CDR at all (`calls.view` on one of its targets).
pub fn can_view_cdr(
    subject: &Subject,
    authorizer: &Authorizer,
    dir: &NumberDirectory,
    cdr: &Cdr,
) -> bool {
    dir.cdr_targets(cdr).iter().any(|t| {
        authorizer
            .authorize(subject, Resource::Calls, Action::View, t)
            .is_allowed()
    })
}

/// The numbers of a call in progress (the web page's active calls) as `subject` may
/// see them, by the rules of [`cdr_view`]: `(caller, callee, masked)`.
pub fn call_numbers(
    subject: &Subject,
    authorizer: &Authorizer,
    pattern: &MaskPattern,
    dir: &NumberDirectory,
    caller: &str,
    callee: &str,
) -> (String, String, bool) {
    let unmask = dir.call_targets(caller, callee).iter().any(|t| {
        authorizer
            .authorize(subject, Resource::Numbers, Action::View, t)
            .is_allowed()
    });
    let mut masked = false;
    let mut present = |n: &str| {
        if dir.is_extension(n) || unmask || n.is_empty() {
            n.to_owned()
        } else {
            masked = true;
            pattern.mask(n)
        }
    };
    let caller = present(caller);
    let callee = present(callee);
    (caller, callee, masked)
}

/// The view of `cdr` for `subject`. It does not check `calls.view`: use
/// [`can_view_cdr`] or [`list_cdrs`] for that.
pub fn cdr_view(
    cdr: &Cdr,
    subject: &Subject,
    authorizer: &Authorizer,
    pattern: &MaskPattern,
    dir: &NumberDirectory,
) -> CdrView {
    let unmask = can_unmask(subject, authorizer, dir, cdr);
    let mut masked = false;
    let mut present = |n: &str| {
        if dir.is_extension(n) || unmask || n.is_empty() {
            n.to_owned()
        } else {
            masked = true;
            pattern.mask(n)
        }
    };
    let caller = present(&cdr.caller);
    let callee = present(&cdr.callee);
    CdrView {
        call_id: cdr.call_id.clone(),
        direction: cdr.direction,
        caller,
        callee,
        owner: dir.owner(cdr),
        masked,
        started_at_ms: cdr.started_at_ms,
        answered_at_ms: cdr.answered_at_ms,
        ended_at_ms: cdr.ended_at_ms,
        duration_ms: cdr.duration_ms(),
        billable_ms: cdr.billable_ms(),
        disposition: cdr.disposition,
        hangup_side: cdr.hangup_side,
        hangup_cause: cdr.hangup_cause,
    }
}

/// The CDRs started in `[since_ms, until_ms)` that `subject` may view, newest first,
/// masked for them, one page of them (`total` counts the visible ones).
///
/// Limits: scope filtering happens in memory over the time window, so keep windows to
/// what a box holds (days, not years).
#[allow(clippy::too_many_arguments)]
pub fn list_cdrs(
    reader: &StoreReader,
    subject: &Subject,
    authorizer: &Authorizer,
    pattern: &MaskPattern,
    dir: &NumberDirectory,
    since_ms: i64,
    until_ms: i64,
    page: PageRequest,
) -> Result<Page<CdrView>> {
    page.validate()?;
    let visible: Vec<Cdr> = reader
        .cdrs_between(since_ms, until_ms)?
        .into_iter()
        .filter(|c| can_view_cdr(subject, authorizer, dir, c))
        .collect();
    let total = i64::try_from(visible.len()).unwrap_or(i64::MAX);
    let items = visible
        .iter()
        .skip(page.offset as usize)
        .take(page.limit as usize)
        .map(|c| cdr_view(c, subject, authorizer, pattern, dir))
        .collect();
    Ok(Page {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> MaskPattern {
        s.parse().expect("pattern")
    }

    #[test]
    fn patterns() {
        assert_eq!(p("3*4").mask("13812345678"), "138****5678");
        assert_eq!(p("3*4").mask("+8613812345678"), "+861******5678");
        assert_eq!(p("2*2").mask("0612345678"), "06******78");
        assert_eq!(p("0*4").mask("5551234567"), "******4567");
        assert_eq!(p("3*4").mask("555-123-4567"), "555-***-4567");
        // Short numbers: all but the last 2.
        assert_eq!(p("3*4").mask("5551234"), "*****34");
        assert_eq!(p("3*4").mask("12345678"), "123*5678");
        assert_eq!(p("3*4").mask("1234567"), "*****67");
        assert_eq!(p("3*4").mask("911"), "*11");
        assert_eq!(p("3*4").mask("12"), "**");
        assert_eq!(p("3*4").mask(""), "");
        assert_eq!(MaskPattern::default(), p("3*4"));
        assert_eq!(p("3*4").present_number("13812345678", true), "13812345678");
        assert_eq!(p("3*4").present_number("13812345678", false), "138****5678");
        for bad in ["", "3", "3-4", "a*4", "9*1", "3*4*5", "-1*2"] {
            assert!(bad.parse::<MaskPattern>().is_err(), "{bad}");
        }
        assert_eq!(p("3*4").to_string(), "3*4");
    }
}
