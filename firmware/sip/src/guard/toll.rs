//! Outbound toll restrictions: which class a dialled outside number belongs to, and
//! whether a caller may dial it.
//!
//! # Rules
//!
//! 1. The dialled string is cleaned: visual separators (space, `-`, `.`, `(`, `)`,
//!    RFC 3966) are removed; what is left must be digits with at most one leading `+`,
//!    at least one and at most [`MAX_DIGITS`] digits. Anything else (`*`, `#`, letters)
//!    is [`DialledNumberError`]: feature codes never reach the trunk or FXO.
//! 2. An exact match of [`NumberingPlan::emergency`] is [`NumberClass::Emergency`],
//!    which every caller may dial, whatever their permissions.
//! 3. The number is brought to a canonical form so the same destination cannot be
//!    dialled around a rule: `+<country code>…` and `<international prefix><country
//!    code>…` become national (`0…` for DE); any other `+…` or `<international
//!    prefix>…` becomes `+…` (international); the rest stays as dialled.
//! 4. The longest prefix in [`NumberingPlan::prefixes`] (written in canonical form:
//!    `0900`, `015`, `118`, `+881`) that starts the canonical number gives its class.
//! 5. Otherwise: `+…` is [`NumberClass::International`], a number starting with the
//!    national prefix is [`NumberClass::National`], anything else is
//!    [`NumberClass::Local`].
//!
//! [`check_dialled`] turns that into a [`Verdict`]: allowed classes pass, others get
//! `403 Forbidden`, an empty number `484 Address Incomplete`, a malformed one
//! `404 Not Found`.
//!
//! # Limits
//!
//! Prefix tables are data; [`NumberingPlan::germany`] ships the German one (emergency
//! 110/112, 0800 toll-free, 015/016/017 mobile, 0900/0137/0180/0190/0700/012/118
//! premium). Other countries are configured by the daemon from the site's country.

use std::fmt;

use super::{RejectReason, Rejection, Verdict};

/// Most digits a dialled number may have (E.164 has 15, plus an international or
/// carrier prefix).
pub const MAX_DIGITS: usize = 20;

/// The class of an outside number, from cheapest to most abusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberClass {
    /// Police, fire, ambulance: always allowed.
    Emergency,
    /// Free for the caller (0800 in DE).
    TollFree,
    /// Within the local area (no national prefix).
    Local,
    /// Another area of the same country.
    National,
    /// A mobile network of the same country.
    Mobile,
    /// Another country.
    International,
    /// Premium-rate and special services (0900, 0137, 118xx …).
    Premium,
}

impl NumberClass {
    /// Every class, in order.
    pub const ALL: [NumberClass; 7] = [
        NumberClass::Emergency,
        NumberClass::TollFree,
        NumberClass::Local,
        NumberClass::National,
        NumberClass::Mobile,
        NumberClass::International,
        NumberClass::Premium,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Lower-case name for config and logs.
    pub fn name(self) -> &'static str {
        match self {
            NumberClass::Emergency => "emergency",
            NumberClass::TollFree => "toll-free",
            NumberClass::Local => "local",
            NumberClass::National => "national",
            NumberClass::Mobile => "mobile",
            NumberClass::International => "international",
            NumberClass::Premium => "premium",
        }
    }
}

impl fmt::Display for NumberClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`NumberClass`]es a caller may dial (handed in by the daemon from RBAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TollClasses(u8);

impl TollClasses {
    /// No class (emergency calls still pass [`check_dialled`]).
    pub const fn none() -> Self {
        TollClasses(0)
    }

    /// Every class.
    pub fn all() -> Self {
        NumberClass::ALL.into_iter().collect()
    }

    /// This set plus `class`.
    pub fn with(self, class: NumberClass) -> Self {
        TollClasses(self.0 | class.bit())
    }

    /// Is `class` in the set?
    pub fn contains(self, class: NumberClass) -> bool {
        self.0 & class.bit() != 0
    }
}

impl FromIterator<NumberClass> for TollClasses {
    fn from_iter<T: IntoIterator<Item = NumberClass>>(iter: T) -> Self {
        iter.into_iter()
            .fold(TollClasses::none(), TollClasses::with)
    }
}

/// Why a dialled string is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialledNumberError {
    /// Nothing left after removing separators.
    #[error("dialled number is empty")]
    Empty,
    /// A character that is neither a digit, a leading `+` nor a visual separator.
    #[error("dialled number {dialled:?} has invalid character {found:?}")]
    InvalidCharacter {
        /// What was dialled.
        dialled: String,
        /// The offending character.
        found: char,
    },
    /// More than [`MAX_DIGITS`] digits.
    #[error("dialled number has {digits} digits, at most {MAX_DIGITS} are allowed")]
    TooLong {
        /// Digits counted.
        digits: usize,
    },
}

/// A [`NumberingPlan`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberingPlanError {
    /// A field that must be a non-empty digit string is not.
    #[error("numbering plan: {field} {value:?} must be a non-empty string of digits")]
    NotDigits {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A prefix-table entry is not a digit string (optionally with one leading `+`).
    #[error("numbering plan: prefix {prefix:?} must be digits with an optional leading '+'")]
    BadPrefix {
        /// The entry.
        prefix: String,
    },
    /// The international prefix equals the national prefix (the plan would be
    /// ambiguous).
    #[error("numbering plan: international prefix {0:?} equals the national prefix")]
    SamePrefixes(String),
}

/// A country's numbering plan for classification. Build with [`NumberingPlan::new`]
/// or [`NumberingPlan::germany`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberingPlan {
    country_code: String,
    international_prefix: String,
    national_prefix: String,
    emergency: Vec<String>,
    /// (canonical prefix, class), longest first.
    prefixes: Vec<(String, NumberClass)>,
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl NumberingPlan {
    /// A plan: country code (`49`), international prefix (`00`), national (trunk)
    /// prefix (`0`), emergency numbers, and a prefix table in canonical form.
    pub fn new(
        country_code: &str,
        international_prefix: &str,
        national_prefix: &str,
        emergency: &[&str],
        prefixes: &[(&str, NumberClass)],
    ) -> Result<Self, NumberingPlanError> {
        for (field, value) in [
            ("country_code", country_code),
            ("international_prefix", international_prefix),
            ("national_prefix", national_prefix),
        ] {
            if !is_digits(value) {
                return Err(NumberingPlanError::NotDigits {
                    field,
                    value: value.to_owned(),
                });
            }
        }
        if international_prefix == national_prefix {
            return Err(NumberingPlanError::SamePrefixes(
                international_prefix.to_owned(),
            ));
        }
        for e in emergency {
            if !is_digits(e) {
                return Err(NumberingPlanError::NotDigits {
                    field: "emergency",
                    value: (*e).to_owned(),
                });
            }
        }
        let mut table = Vec::with_capacity(prefixes.len());
        for (prefix, class) in prefixes {
            let digits = prefix.strip_prefix('+').unwrap_or(prefix);
            if !is_digits(digits) {
                return Err(NumberingPlanError::BadPrefix {
                    prefix: (*prefix).to_owned(),
                });
            }
            table.push(((*prefix).to_owned(), *class));
        }
        table.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self {
            country_code: country_code.to_owned(),
            international_prefix: international_prefix.to_owned(),
            national_prefix: national_prefix.to_owned(),
            emergency: emergency.iter().map(|s| (*s).to_owned()).collect(),
            prefixes: table,
        })
    }

    /// Germany: `+49`, `00` international, `0` national; 110 and 112 emergency;
    /// 0800 toll-free; 015/016/017 mobile; 0900, 0137, 0180, 0190, 0700, 012 and 118
    /// premium/special; international freephone `+800` toll-free; satellite and
    /// international premium `+881`, `+882`, `+883`, `+979` premium.
    pub fn germany() -> Self {
        use NumberClass::*;
        Self::new(
            "49",
            "00",
            "0",
            &["110", "112"],
            &[
                ("0800", TollFree),
                ("015", Mobile),
                ("016", Mobile),
                ("017", Mobile),
                ("0900", Premium),
                ("0137", Premium),
                ("0180", Premium),
                ("0190", Premium),
                ("0700", Premium),
                ("012", Premium),
                ("118", Premium),
                ("+800", TollFree),
                ("+881", Premium),
                ("+882", Premium),
                ("+883", Premium),
                ("+979", Premium),
            ],
        )
        .unwrap_or_else(|_| unreachable!("the built-in German plan is valid"))
    }

    /// The emergency numbers.
    pub fn emergency(&self) -> &[String] {
        &self.emergency
    }

    /// The prefix table, longest prefix first.
    pub fn prefixes(&self) -> &[(String, NumberClass)] {
        &self.prefixes
    }

    /// The number in canonical form (see the module doc, rule 3).
    pub fn canonical(&self, dialled: &str) -> Result<String, DialledNumberError> {
        let cleaned = clean(dialled)?;
        Ok(self.canonicalize(&cleaned))
    }

    fn canonicalize(&self, cleaned: &str) -> String {
        let international = cleaned
            .strip_prefix('+')
            .or_else(|| cleaned.strip_prefix(self.international_prefix.as_str()));
        match international {
            Some(rest) => match rest.strip_prefix(self.country_code.as_str()) {
                Some(national) => format!("{}{}", self.national_prefix, national),
                None => format!("+{rest}"),
            },
            None => cleaned.to_owned(),
        }
    }

    /// What a phone on this plan's lines dials for `number`: its canonical form (rule
    /// 3) with an international `+` written as the international prefix, because a
    /// PSTN line cannot send a `+` (gateways' number manipulation does the same). On
    /// the German plan `+49301234` dials `0301234` and `+12125550100` dials
    /// `0012125550100`. A number that is only the plan's country code (`+49`) has
    /// nothing to dial: [`DialledNumberError::Empty`].
    pub fn dialable(&self, number: &str) -> Result<String, DialledNumberError> {
        let canonical = self.canonical(number)?;
        if canonical == self.national_prefix && number.trim_start().starts_with('+') {
            return Err(DialledNumberError::Empty);
        }
        Ok(match canonical.strip_prefix('+') {
            Some(rest) => format!("{}{rest}", self.international_prefix),
            None => canonical,
        })
    }

    /// The class of a dialled number (module doc, rules 1-5).
    pub fn classify(&self, dialled: &str) -> Result<NumberClass, DialledNumberError> {
        let cleaned = clean(dialled)?;
        if self.emergency.contains(&cleaned) {
            return Ok(NumberClass::Emergency);
        }
        let canonical = self.canonicalize(&cleaned);
        if let Some((_, class)) = self
            .prefixes
            .iter()
            .find(|(prefix, _)| canonical.starts_with(prefix.as_str()))
        {
            return Ok(*class);
        }
        Ok(if canonical.starts_with('+') {
            NumberClass::International
        } else if canonical.starts_with(self.national_prefix.as_str()) {
            NumberClass::National
        } else {
            NumberClass::Local
        })
    }
}

/// Removes visual separators and checks the characters (module doc, rule 1).
fn clean(dialled: &str) -> Result<String, DialledNumberError> {
    let mut out = String::with_capacity(dialled.len());
    for c in dialled.chars() {
        match c {
            ' ' | '-' | '.' | '(' | ')' => {}
            '+' if out.is_empty() => out.push('+'),
            '0'..='9' => out.push(c),
            found => {
                return Err(DialledNumberError::InvalidCharacter {
                    dialled: dialled.to_owned(),
                    found,
                })
            }
        }
    }
    let digits = out.trim_start_matches('+').len();
    if digits == 0 {
        return Err(DialledNumberError::Empty);
    }
    if digits > MAX_DIGITS {
        return Err(DialledNumberError::TooLong { digits });
    }
    Ok(out)
}

/// May a caller with `allowed` classes dial `dialled`? Emergency numbers always pass.
pub fn check_dialled(plan: &NumberingPlan, dialled: &str, allowed: TollClasses) -> Verdict {
    match plan.classify(dialled) {
        Ok(NumberClass::Emergency) => Verdict::Allow,
        Ok(class) if allowed.contains(class) => Verdict::Allow,
        Ok(class) => Verdict::Reject(Rejection {
            code: 403,
            reason: RejectReason::TollRestricted(class),
        }),
        Err(DialledNumberError::Empty) => Verdict::Reject(Rejection {
            code: 484,
            reason: RejectReason::NumberIncomplete,
        }),
        Err(_) => Verdict::Reject(Rejection {
            code: 404,
            reason: RejectReason::InvalidNumber,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use NumberClass::*;

    fn de() -> NumberingPlan {
        NumberingPlan::germany()
    }

    #[test]
    fn e164_numbers_become_what_a_line_dials() {
        let plan = de();
        for (number, want) in [
            ("+49 30 123456", "030123456"),
            ("+12125550100", "0012125550100"),
            ("030123456", "030123456"),
            ("0012125550100", "0012125550100"),
        ] {
            assert_eq!(plan.dialable(number).as_deref(), Ok(want), "{number}");
        }
        // Dialled as it classifies: the international form stays international.
        assert_eq!(plan.classify("0012125550100"), Ok(International));
        assert_eq!(plan.dialable("+49"), Err(DialledNumberError::Empty));
        assert_eq!(plan.dialable("+"), Err(DialledNumberError::Empty));
        assert!(matches!(
            plan.dialable("+49 30 12a"),
            Err(DialledNumberError::InvalidCharacter { found: 'a', .. })
        ));
        assert!(matches!(
            plan.dialable(&format!("+{}", "1".repeat(21))),
            Err(DialledNumberError::TooLong { .. })
        ));
    }

    #[test]
    fn german_classes() {
        let plan = de();
        let cases = [
            ("110", Emergency),
            ("112", Emergency),
            ("0800 1234567", TollFree),
            ("1234567", Local),
            ("030 1234567", National),
            ("089-123456", National),
            ("0151 12345678", Mobile),
            ("0171/12345", Mobile),
            ("0900 5123456", Premium),
            ("01371234", Premium),
            ("0180 5 123456", Premium),
            ("11833", Premium),
            ("0033 1 23456789", International),
            ("+33 1 23456789", International),
            ("+1 (212) 555-0100", International),
            ("+49 30 1234567", National),
            ("0049 30 1234567", National),
            ("+49 900 5123456", Premium),
            ("0049 171 1234567", Mobile),
            ("00800 12345678", TollFree),
            ("+881 612345678", Premium),
        ];
        for (dialled, class) in cases {
            let got = plan.classify(&dialled.replace('/', ""));
            assert_eq!(got, Ok(class), "{dialled}");
        }
    }

    #[test]
    fn emergency_only_when_exact() {
        let plan = de();
        assert_eq!(plan.classify("1120"), Ok(Local));
        assert_eq!(plan.classify("+49112"), Ok(National));
        assert_eq!(plan.classify("112"), Ok(Emergency));
    }

    #[test]
    fn bad_numbers_are_errors() {
        let plan = de();
        assert_eq!(plan.classify(""), Err(DialledNumberError::Empty));
        assert_eq!(plan.classify(" - "), Err(DialledNumberError::Empty));
        assert_eq!(plan.classify("+"), Err(DialledNumberError::Empty));
        assert!(matches!(
            plan.classify("*3100123"),
            Err(DialledNumberError::InvalidCharacter { found: '*', .. })
        ));
        assert!(matches!(
            plan.classify("0301+23"),
            Err(DialledNumberError::InvalidCharacter { found: '+', .. })
        ));
        assert!(matches!(
            plan.classify("0301#"),
            Err(DialledNumberError::InvalidCharacter { found: '#', .. })
        ));
        assert_eq!(
            plan.classify("012345678901234567890"),
            Err(DialledNumberError::TooLong { digits: 21 })
        );
    }

    #[test]
    fn check_applies_permissions() {
        let plan = de();
        let local_national: TollClasses = [Local, National, TollFree].into_iter().collect();
        assert_eq!(
            check_dialled(&plan, "0301234567", local_national),
            Verdict::Allow
        );
        assert_eq!(
            check_dialled(&plan, "00331234", local_national),
            Verdict::Reject(Rejection {
                code: 403,
                reason: RejectReason::TollRestricted(International)
            })
        );
        assert_eq!(
            check_dialled(&plan, "+49 900 1234", local_national),
            Verdict::Reject(Rejection {
                code: 403,
                reason: RejectReason::TollRestricted(Premium)
            })
        );
        // Emergency needs no permission.
        assert_eq!(
            check_dialled(&plan, "112", TollClasses::none()),
            Verdict::Allow
        );
        assert_eq!(
            check_dialled(&plan, "110", TollClasses::none()),
            Verdict::Allow
        );
        assert!(matches!(
            check_dialled(&plan, "", TollClasses::all()),
            Verdict::Reject(Rejection { code: 484, .. })
        ));
        assert!(matches!(
            check_dialled(&plan, "abc", TollClasses::all()),
            Verdict::Reject(Rejection { code: 404, .. })
        ));
        assert_eq!(
            check_dialled(&plan, "0900 123", TollClasses::all()),
            Verdict::Allow
        );
    }

    #[test]
    fn invalid_plans_are_refused() {
        assert!(matches!(
            NumberingPlan::new("4x", "00", "0", &[], &[]),
            Err(NumberingPlanError::NotDigits {
                field: "country_code",
                ..
            })
        ));
        assert!(matches!(
            NumberingPlan::new("49", "0", "0", &[], &[]),
            Err(NumberingPlanError::SamePrefixes(_))
        ));
        assert!(matches!(
            NumberingPlan::new("49", "00", "0", &["11a"], &[]),
            Err(NumberingPlanError::NotDigits {
                field: "emergency",
                ..
            })
        ));
        assert!(matches!(
            NumberingPlan::new("49", "00", "0", &[], &[("09+00", Premium)]),
            Err(NumberingPlanError::BadPrefix { .. })
        ));
    }

    #[test]
    fn other_country_plan() {
        // North America: 011 international, 1 national, 911 emergency, 1900 premium.
        let plan = NumberingPlan::new(
            "1",
            "011",
            "1",
            &["911"],
            &[("1900", Premium), ("1800", TollFree)],
        )
        .unwrap();
        assert_eq!(plan.classify("911"), Ok(Emergency));
        assert_eq!(plan.classify("1 900 555 0100"), Ok(Premium));
        assert_eq!(plan.classify("+1 900 555 0100"), Ok(Premium));
        assert_eq!(plan.classify("011 49 30 1234"), Ok(International));
        assert_eq!(plan.classify("1 212 555 0100"), Ok(National));
        assert_eq!(plan.classify("555 0100"), Ok(Local));
    }

    proptest! {
        /// Every way of writing a German number in international form lands in the same
        /// class as its national form: a prefix rule cannot be dialled around.
        #[test]
        fn international_form_cannot_bypass(national in "0[1-9][0-9]{2,12}") {
            let plan = de();
            let class = plan.classify(&national).unwrap();
            let rest = &national[1..];
            prop_assert_eq!(plan.classify(&format!("+49{rest}")).unwrap(), class);
            prop_assert_eq!(plan.classify(&format!("0049{rest}")).unwrap(), class);
            prop_assert_eq!(plan.classify(&format!("+49 ({}) {}", &rest[..2], &rest[2..])).unwrap(), class);
        }

        /// Arbitrary strings never panic and only allowed classes pass.
        #[test]
        fn check_never_allows_a_forbidden_class(s in "\\PC{0,30}", bits in 0u8..128) {
            let plan = de();
            let allowed: TollClasses = NumberClass::ALL
                .into_iter()
                .filter(|c| bits & (1 << (*c as u8)) != 0)
                .collect();
            if check_dialled(&plan, &s, allowed).is_allow() {
                let class = plan.classify(&s).unwrap();
                prop_assert!(class == Emergency || allowed.contains(class));
            }
        }
    }
}
