//! Inbound DID routing: which extension or queue a call from the trunk rings.
//!
//! # Rules
//!
//! 1. The called number (Request-URI user, else To user: [`called_number`]) is
//!    cleaned: visual separators (space `-` `.` `(` `)`) removed; what is left must be
//!    digits with at most one leading `+` (else [`DidError::InvalidNumber`]).
//! 2. Configured [`DidNormalization::strip_prefixes`] are removed (the longest that
//!    matches, once), e.g. a carrier's routing prefix.
//! 3. The number is made canonical: `+…` stays; `<international prefix>…` becomes
//!    `+…`; `<national prefix>…` becomes `+<country code>…`; anything else (a short
//!    number some carriers send) stays as is.
//! 4. Routes are [`NumberPattern`]s over the canonical form (`+49301234200`,
//!    `+493012342XX`). Exact routes are looked at first, then patterned ones in table
//!    order; the first match renders its [`NumberTemplate`] with the canonical number
//!    (`{last:3}` gives `2XX` from `+493012342XX`).
//! 5. No match: the default target, else [`DidError::NoRoute`] (answer 404).

use super::identity::{NumberPattern, NumberTemplate, PatternError, MAX_LEN};
use rsip::Request;

/// How called numbers are made canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidNormalization {
    /// Country code without `+` (`49`).
    pub country_code: String,
    /// International prefix (`00`).
    pub international_prefix: String,
    /// National (trunk) prefix (`0`).
    pub national_prefix: String,
    /// Prefixes removed before anything else.
    pub strip_prefixes: Vec<String>,
}

impl DidNormalization {
    /// Germany: `49`, `00`, `0`, nothing stripped.
    pub fn germany() -> Self {
        Self {
            country_code: "49".into(),
            international_prefix: "00".into(),
            national_prefix: "0".into(),
            strip_prefixes: Vec::new(),
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidRoute {
    /// Canonical called numbers it applies to.
    pub pattern: NumberPattern,
    /// The extension or queue number to ring.
    pub target: NumberTemplate,
}

/// The DID table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidRouting {
    normalization: DidNormalization,
    routes: Vec<DidRoute>,
    default: Option<String>,
}

/// Why a DID table or a called number cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    /// A pattern or template in the table is invalid.
    #[error("DID route {index}: {source}")]
    BadRoute {
        /// Position in the table.
        index: usize,
        /// What is wrong.
        source: PatternError,
    },
    /// A normalization field is not a digit string.
    #[error("DID normalization: {field} {value:?} must be digits")]
    BadNormalization {
        /// Field.
        field: &'static str,
        /// Value.
        value: String,
    },
    /// The default target is not a number.
    #[error("DID default target {0:?} must be digits")]
    BadDefault(String),
    /// The called number is empty, too long, or has other characters.
    #[error("called number {0:?} is not a number")]
    InvalidNumber(String),
    /// No route and no default.
    #[error("no DID route for {0:?}")]
    NoRoute(String),
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl DidRouting {
    /// Builds the table from `(pattern, target template)` text pairs.
    pub fn new(
        normalization: DidNormalization,
        routes: &[(&str, &str)],
        default: Option<&str>,
    ) -> Result<Self, DidError> {
        for (field, value) in [
            ("country_code", &normalization.country_code),
            ("international_prefix", &normalization.international_prefix),
            ("national_prefix", &normalization.national_prefix),
        ] {
            if !digits(value) {
                return Err(DidError::BadNormalization {
                    field,
                    value: value.clone(),
                });
            }
        }
        for p in &normalization.strip_prefixes {
            if !digits(p.strip_prefix('+').unwrap_or(p)) {
                return Err(DidError::BadNormalization {
                    field: "strip_prefixes",
                    value: p.clone(),
                });
            }
        }
        if let Some(d) = default {
            if !digits(d) {
                return Err(DidError::BadDefault(d.to_owned()));
            }
        }
        let routes = routes
            .iter()
            .enumerate()
            .map(|(index, (p, t))| {
                let route = NumberPattern::new(p).and_then(|pattern| {
                    Ok(DidRoute {
                        pattern,
                        target: NumberTemplate::new(t)?,
                    })
                });
                route.map_err(|source| DidError::BadRoute { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            normalization,
            routes,
            default: default.map(str::to_owned),
        })
    }

    /// The canonical form of a called number (rules 1-3).
    pub fn canonical(&self, called: &str) -> Result<String, DidError> {
        let invalid = || DidError::InvalidNumber(called.to_owned());
        let mut cleaned = String::with_capacity(called.len());
        for c in called.chars() {
            match c {
                ' ' | '-' | '.' | '(' | ')' => {}
                '+' if cleaned.is_empty() => cleaned.push(c),
                '0'..='9' => cleaned.push(c),
                _ => return Err(invalid()),
            }
        }
        if cleaned.trim_start_matches('+').is_empty() || cleaned.len() > MAX_LEN {
            return Err(invalid());
        }
        let n = &self.normalization;
        if let Some(p) = n
            .strip_prefixes
            .iter()
            .filter(|p| cleaned.starts_with(p.as_str()) && cleaned.len() > p.len())
            .max_by_key(|p| p.len())
        {
            cleaned = cleaned[p.len()..].to_owned();
        }
        Ok(if cleaned.starts_with('+') {
            cleaned
        } else if let Some(rest) = cleaned.strip_prefix(n.international_prefix.as_str()) {
            format!("+{rest}")
        } else if let Some(rest) = cleaned.strip_prefix(n.national_prefix.as_str()) {
            format!("+{}{rest}", n.country_code)
        } else {
            cleaned
        })
    }

    /// The extension or queue number to ring for `called` (rules 1-5).
    pub fn route(&self, called: &str) -> Result<String, DidError> {
        let canonical = self.canonical(called)?;
        let exact = self
            .routes
            .iter()
            .filter(|r| r.pattern.is_exact())
            .chain(self.routes.iter().filter(|r| !r.pattern.is_exact()))
            .find(|r| r.pattern.matches(&canonical));
        match (exact, &self.default) {
            (Some(r), _) => Ok(r.target.render(&canonical)),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => Err(DidError::NoRoute(canonical)),
        }
    }
}

/// The called number of an inbound INVITE: the Request-URI user when it looks like a
/// number, else the To URI's user.
pub fn called_number(request: &Request) -> Option<String> {
    use rsip::headers::ToTypedHeader;
    let looks_numeric = |u: &str| {
        let t = u.strip_prefix('+').unwrap_or(u);
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b"-.() ".contains(&b))
    };
    if let Some(user) = request.uri.user().filter(|u| looks_numeric(u)) {
        return Some(user.to_owned());
    }
    request.headers.iter().find_map(|h| match h {
        rsip::Header::To(to) => to
            .typed()
            .ok()
            .and_then(|t| t.uri.user().map(str::to_owned))
            .filter(|u| looks_numeric(u)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DidRouting {
        DidRouting::new(
            DidNormalization {
                strip_prefixes: vec!["999".into()],
                ..DidNormalization::germany()
            },
            &[
                ("+493012342XX", "{last:3}"),
                ("+49301234200", "600"),
                ("+49301234100", "601"),
            ],
            Some("600"),
        )
        .unwrap()
    }

    #[test]
    fn canonical_forms() {
        let t = table();
        for called in [
            "+49 30 1234200",
            "004930 1234200",
            "030-1234200",
            "999030 1234200",
            "+49 (30) 1234200",
        ] {
            assert_eq!(t.canonical(called).unwrap(), "+49301234200", "{called}");
        }
        assert_eq!(t.canonical("200").unwrap(), "200");
        assert_eq!(t.canonical("0033 1 234").unwrap(), "+331234");
        for bad in ["", "+", "12a", "1+2", &"1".repeat(80)] {
            assert!(
                matches!(t.canonical(bad), Err(DidError::InvalidNumber(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn exact_routes_win_then_patterns_then_default() {
        let t = table();
        assert_eq!(t.route("+49301234200").unwrap(), "600");
        assert_eq!(t.route("030 1234 215").unwrap(), "215");
        assert_eq!(t.route("+49301234100").unwrap(), "601");
        assert_eq!(t.route("+49301234999").unwrap(), "600");
        let strict = DidRouting::new(
            DidNormalization::germany(),
            &[("+493012342XX", "{last:3}")],
            None,
        )
        .unwrap();
        assert_eq!(
            strict.route("0301234999"),
            Err(DidError::NoRoute("+49301234999".into()))
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(matches!(
            DidRouting::new(DidNormalization::germany(), &[("+49Q", "1")], None),
            Err(DidError::BadRoute { index: 0, .. })
        ));
        assert!(matches!(
            DidRouting::new(DidNormalization::germany(), &[], Some("60a")),
            Err(DidError::BadDefault(_))
        ));
        let mut n = DidNormalization::germany();
        n.country_code = "+49".into();
        assert!(matches!(
            DidRouting::new(n, &[], None),
            Err(DidError::BadNormalization { .. })
        ));
    }

    #[test]
    fn called_number_from_invite() {
        let req = |uri: &str, to: &str| {
            rsip::Request::try_from(format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:+4930999@carrier>;tag=1\r\nTo: {to}\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ))
            .unwrap()
        };
        assert_eq!(
            called_number(&req("sip:+49301234200@192.0.2.9", "<sip:x@y>")).as_deref(),
            Some("+49301234200")
        );
        assert_eq!(
            called_number(&req("sip:branch@192.0.2.9", "<sip:0301234215@carrier>")).as_deref(),
            Some("0301234215")
        );
        assert_eq!(
            called_number(&req("sip:branch@192.0.2.9", "<sip:branch@carrier>")),
            None
        );
    }
}
