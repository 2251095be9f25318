//! One canonical form of a telephone number (issue 10): every comparison of a number
//! on the box (a customer's numbers against a caller ID or a CDR's outside party, a
//! lead's numbers against each other, a number against the blacklist) goes through
//! [`SitePlan::canonical`], so `+4930123456`, `030123456`, `004930123456` and
//! `+49 (0)30 123-456` are one number at a German site.
//!
//! # The canonical form
//!
//! The site's numbering plan ([`SitePlan`]: country code, international prefix, trunk
//! (national) prefix, from the site's country, [`SitePlan::of_country`]) decides:
//!
//! 1. Spaces, `-`, `.`, `(` and `)` are dropped; what is left must be 1 to
//!    [`MAX_DIGITS`] digits with an optional leading `+` (anything else is refused
//!    with the reason in words).
//! 2. `+digits` is E.164 already. A trunk prefix written after the site's own
//!    country code (`+49 (0)30 …`, a habit of German and British business cards) is
//!    dropped when the trunk prefix is `0` (no national number starts with it there).
//! 3. The international prefix then digits (`0049301234`) is `+` and those digits.
//! 4. The trunk prefix then at least [`MIN_NATIONAL_DIGITS`] digits (`0301234`) is a
//!    national number: `+`, the country code, and the digits after the trunk prefix.
//! 5. Anything else (an extension `201`, a short code `112`, a trunk prefix followed by
//!    too few digits to be a national number, a number without any prefix) is kept as
//!    typed (rule 1's cleaned form): the plan cannot tell what it is.
//!
//! No plan (a store nobody has told the site's country yet, see [`store`]) means rule
//! 1 only: numbers are compared exactly as written, as before issue 10's fix.
//!
//! Limits: a subscriber number dialled without the area code (a local call in a
//! country with area codes, or a NANP 10-digit number without the leading `1`) is kept
//! as typed and so does not meet its `+` form; the plan has no area code to add.
//! Country-specific length rules are not checked (E.164 allows at most 15 digits; we
//! accept what HQ does, [`MAX_DIGITS`]).

pub mod store;

use serde::{Deserialize, Serialize};

use crate::tones::Country;

/// Most digits in a number (HQ's limit too).
pub const MAX_DIGITS: usize = 32;
/// Fewest digits after the trunk prefix for a national number (rule 4). Shorter ones
/// (`0`, an operator code, a 5-digit extension behind a `1` at a NANP site) are kept
/// as typed.
pub const MIN_NATIONAL_DIGITS: usize = 6;

/// The parts of a site's numbering plan the canonical form needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SitePlan {
    /// Country calling code without `+` (`49`).
    pub country_code: String,
    /// What a phone dials before a country code (`00`, `011`).
    pub international_prefix: String,
    /// What a phone dials before a national number (`0`, `1`).
    pub national_prefix: String,
}

impl SitePlan {
    /// The plan of a site in `country` (the same prefixes call routing and toll rules
    /// use, `crate::sip_endpoint::numbering_plan`).
    pub fn of_country(country: Country) -> SitePlan {
        let (cc, intl, national) = match country {
            Country::Us => ("1", "011", "1"),
            Country::Uk => ("44", "00", "0"),
            Country::De => ("49", "00", "0"),
            Country::Fr => ("33", "00", "0"),
            Country::Cn => ("86", "00", "0"),
            Country::Jp => ("81", "010", "0"),
        };
        SitePlan {
            country_code: cc.to_owned(),
            international_prefix: intl.to_owned(),
            national_prefix: national.to_owned(),
        }
    }

    /// `number` in canonical form (see the module docs), or why it is not a number.
    pub fn canonical(&self, number: &str) -> Result<String, String> {
        let cleaned = clean(number)?;
        Ok(self.canonicalize(cleaned))
    }

    fn canonicalize(&self, cleaned: String) -> String {
        if let Some(digits) = cleaned.strip_prefix('+') {
            let own = digits
                .strip_prefix(self.country_code.as_str())
                .map(|rest| rest.trim_start_matches('0'))
                .filter(|rest| self.national_prefix == "0" && !rest.is_empty());
            return match own {
                Some(rest) => format!("+{}{rest}", self.country_code),
                None => cleaned,
            };
        }
        if let Some(rest) = cleaned
            .strip_prefix(self.international_prefix.as_str())
            .filter(|r| !r.is_empty())
        {
            return self.canonicalize(format!("+{rest}"));
        }
        match cleaned.strip_prefix(self.national_prefix.as_str()) {
            Some(rest) if rest.len() >= MIN_NATIONAL_DIGITS => {
                self.canonicalize(format!("+{}{rest}", self.country_code))
            }
            _ => cleaned,
        }
    }

    /// A blacklist prefix (`030`, `0900`, `+4930`, `0049`) in canonical form, when the
    /// plan can tell: `+` prefixes as they are, the international prefix then digits as
    /// `+digits`, the trunk prefix then digits (any number of them: `0*` is every
    /// national number) as `+` country code and those digits. `None` for a prefix the
    /// plan cannot place (no prefix at all, or a bare international prefix `00*`):
    /// such a pattern is matched against numbers as presented only.
    pub fn canonical_prefix(&self, prefix: &str) -> Option<String> {
        if prefix.starts_with('+') {
            return (prefix.len() > 1).then(|| prefix.to_owned());
        }
        if let Some(rest) = prefix.strip_prefix(self.international_prefix.as_str()) {
            return (!rest.is_empty()).then(|| format!("+{rest}"));
        }
        prefix
            .strip_prefix(self.national_prefix.as_str())
            .map(|rest| format!("+{}{rest}", self.country_code))
    }
}

/// `number` in canonical form with `plan` (rule 1 only without one).
pub fn canonical(plan: Option<&SitePlan>, number: &str) -> Result<String, String> {
    match plan {
        Some(plan) => plan.canonical(number),
        None => clean(number),
    }
}

/// Rule 1: drops visual separators and checks the characters and the length.
pub fn clean(number: &str) -> Result<String, String> {
    let t = number.trim();
    let (plus, rest) = match t.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", t),
    };
    let mut out = String::with_capacity(t.len());
    out.push_str(plus);
    for (i, c) in rest.chars().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            other => {
                return Err(format!(
                    "{number:?} is not a phone number: {other:?} at position {} \
                     (digits with an optional leading +)",
                    i + 1 + plus.len()
                ))
            }
        }
    }
    let digits = out.len() - plus.len();
    if digits == 0 {
        return Err(format!("{number:?} has no digits"));
    }
    if digits > MAX_DIGITS {
        return Err(format!(
            "{number:?} has {digits} digits, at most {MAX_DIGITS}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn de() -> SitePlan {
        SitePlan::of_country(Country::De)
    }

    fn us() -> SitePlan {
        SitePlan::of_country(Country::Us)
    }

    #[test]
    fn national_international_prefix_and_plus_forms_are_one_number() {
        for form in [
            "+4930123456",
            "030123456",
            "004930123456",
            "+49 30 123456",
            "030 / 12 34 56".replace('/', "").as_str(),
            "(030) 123-456",
            "+49 (0)30 123456",
            "0049 (0)30.123456",
            " 030-123-456 ",
        ] {
            assert_eq!(de().canonical(form).as_deref(), Ok("+4930123456"), "{form}");
        }
        // Another country's number through the international prefix.
        assert_eq!(
            de().canonical("0012125550100").as_deref(),
            Ok("+12125550100")
        );
        assert_eq!(
            de().canonical("+1 212 555 0100").as_deref(),
            Ok("+12125550100")
        );
        // A NANP site: trunk prefix 1, international 011.
        assert_eq!(
            us().canonical("1 212 555 0100").as_deref(),
            Ok("+12125550100")
        );
        assert_eq!(
            us().canonical("011 49 30 123456").as_deref(),
            Ok("+4930123456")
        );
        // The trunk prefix after +1 is not dropped (NANP's is 1, not 0).
        assert_eq!(
            us().canonical("+12125550100").as_deref(),
            Ok("+12125550100")
        );
    }

    #[test]
    fn short_and_unknown_forms_are_kept_as_typed() {
        for (typed, kept) in [
            ("201", "201"),
            ("112", "112"),
            ("0", "0"),
            ("01234", "01234"),
            ("5550001", "5550001"),
            ("4930123456", "4930123456"),
            ("2-01", "201"),
        ] {
            assert_eq!(de().canonical(typed).as_deref(), Ok(kept), "{typed}");
        }
        // At a NANP site a 1 then a 5-digit extension is not a national number.
        assert_eq!(us().canonical("10001").as_deref(), Ok("10001"));
        // A bare international prefix is not a number in another country.
        assert_eq!(de().canonical("00").as_deref(), Ok("00"));
        // `+` and the own country code only: nothing to drop.
        assert_eq!(de().canonical("+490").as_deref(), Ok("+490"));
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let e = de().canonical("030-CALL-ME").unwrap_err();
        assert!(e.contains("'C' at position 5"), "{e}");
        assert!(de().canonical("").unwrap_err().contains("no digits"));
        assert!(de().canonical("+").unwrap_err().contains("no digits"));
        assert!(de().canonical(" - ").unwrap_err().contains("no digits"));
        assert!(de()
            .canonical("++49")
            .unwrap_err()
            .contains("'+' at position 2"));
        assert!(de().canonical("030#1").unwrap_err().contains("'#'"));
        let long = "1".repeat(MAX_DIGITS + 1);
        assert!(de().canonical(&long).unwrap_err().contains("at most 32"));
        assert!(de().canonical(&"1".repeat(MAX_DIGITS)).is_ok());
    }

    #[test]
    fn without_a_plan_numbers_are_only_cleaned() {
        assert_eq!(canonical(None, "030 123").as_deref(), Ok("030123"));
        assert_eq!(canonical(None, "+49 30").as_deref(), Ok("+4930"));
        assert_eq!(
            canonical(Some(&de()), "030 123456").as_deref(),
            Ok("+4930123456")
        );
    }

    #[test]
    fn blacklist_prefixes_in_canonical_form() {
        assert_eq!(de().canonical_prefix("030").as_deref(), Some("+4930"));
        assert_eq!(de().canonical_prefix("0").as_deref(), Some("+49"));
        assert_eq!(de().canonical_prefix("0049").as_deref(), Some("+49"));
        assert_eq!(de().canonical_prefix("001").as_deref(), Some("+1"));
        assert_eq!(de().canonical_prefix("+4930").as_deref(), Some("+4930"));
        assert_eq!(de().canonical_prefix("00"), None);
        assert_eq!(de().canonical_prefix("+"), None);
        assert_eq!(de().canonical_prefix("49"), None);
    }

    proptest! {
        /// The canonical form is a fixed point, and every written form of a German
        /// national number meets the same one.
        #[test]
        fn canonical_is_idempotent_and_form_independent(national in "[1-9][0-9]{5,12}") {
            let plan = de();
            let plus = plan.canonical(&format!("+49{national}")).unwrap();
            prop_assert_eq!(plan.canonical(&plus).unwrap(), plus.clone());
            prop_assert_eq!(plan.canonical(&format!("0{national}")).unwrap(), plus.clone());
            prop_assert_eq!(plan.canonical(&format!("0049{national}")).unwrap(), plus.clone());
            prop_assert_eq!(plan.canonical(&format!("+49 (0) {national}")).unwrap(), plus);
        }

        #[test]
        fn canonical_never_panics_and_is_idempotent(s in "[0-9+ ()-]{0,40}") {
            let plan = de();
            if let Ok(c) = plan.canonical(&s) {
                prop_assert_eq!(plan.canonical(&c).unwrap(), c);
            }
        }
    }
}
