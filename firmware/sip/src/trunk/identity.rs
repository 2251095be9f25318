//! Outbound caller identity for calls through the trunk: caller-ID rules,
//! anonymity and `P-Asserted-Identity` (RFC 3325, RFC 3323).
//!
//! # Patterns and templates
//!
//! A [`NumberPattern`] matches a whole number, Asterisk-style: digits, `+`, `*` and `#`
//! match themselves; `X` any digit, `Z` 1-9, `N` 2-9 (case-insensitive); a trailing
//! `.` one or more further characters, a trailing `!` zero or more. `2XX` matches
//! extensions 200-299.
//!
//! A [`NumberTemplate`] builds a number: literal text plus `{ext}` (the whole matched
//! number) and `{last:N}` (its last N characters, N in 1..=20). `+49301234200` presents
//! the site number for everyone, `+4930123420{last:1}` a direct-dial number per
//! extension.
//!
//! # Rules
//!
//! [`CallerIdRules::presented_number`] takes the first rule whose pattern matches the
//! calling extension, else the default template, else none (then the call must not
//! go out through the trunk: the daemon refuses it). [`outbound_identity`] builds:
//!
//! - presentation allowed: `From: "<name>" <sip:<number>@<domain>>` and
//!   `P-Asserted-Identity: "<name>" <sip:<number>@<domain>;user=phone>`;
//! - presentation restricted: `From: "Anonymous" <sip:anonymous@anonymous.invalid>`,
//!   the same `P-Asserted-Identity` (the trunk needs the real number for billing and
//!   emergency calls) and `Privacy: id`, which asks the trusted network to remove it
//!   before the call leaves it (RFC 3325 9.3).

use std::fmt;

use rsip::headers::UntypedHeader;
use rsip::Header;

/// Most characters in a pattern, template or number handled here.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Literal(char),
    AnyDigit,
    OneToNine,
    TwoToNine,
}

/// A whole-number pattern (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPattern {
    text: String,
    atoms: Vec<Atom>,
    /// `None`: exact length; `Some(1)`: `.`; `Some(0)`: `!`.
    tail_min: Option<usize>,
}

/// A pattern or template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty or longer than [`MAX_LEN`].
    #[error("{0:?} is empty or longer than {MAX_LEN} characters")]
    Length(String),
    /// A character that is not allowed at that place.
    #[error("{text:?}: character {found:?} is not allowed")]
    BadCharacter {
        /// The pattern or template.
        text: String,
        /// The character.
        found: char,
    },
    /// A `{…}` placeholder that is not `{ext}` or `{last:N}` with N in 1..=20.
    #[error("{text:?}: bad placeholder {placeholder:?}")]
    BadPlaceholder {
        /// The template.
        text: String,
        /// The placeholder.
        placeholder: String,
    },
}

impl NumberPattern {
    /// Parses a pattern.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(PatternError::Length(text.to_owned()));
        }
        let mut atoms = Vec::new();
        let mut tail_min = None;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let last = chars.peek().is_none();
            let atom = match c {
                '0'..='9' | '+' | '*' | '#' => Atom::Literal(c),
                'X' | 'x' => Atom::AnyDigit,
                'Z' | 'z' => Atom::OneToNine,
                'N' | 'n' => Atom::TwoToNine,
                '.' if last => {
                    tail_min = Some(1);
                    continue;
                }
                '!' if last => {
                    tail_min = Some(0);
                    continue;
                }
                found => {
                    return Err(PatternError::BadCharacter {
                        text: text.to_owned(),
                        found,
                    })
                }
            };
            atoms.push(atom);
        }
        Ok(Self {
            text: text.to_owned(),
            atoms,
            tail_min,
        })
    }

    /// Does the whole `number` match?
    pub fn matches(&self, number: &str) -> bool {
        let chars: Vec<char> = number.chars().collect();
        if chars.len() < self.atoms.len() {
            return false;
        }
        let fixed_ok = self.atoms.iter().zip(&chars).all(|(a, &c)| match a {
            Atom::Literal(l) => *l == c,
            Atom::AnyDigit => c.is_ascii_digit(),
            Atom::OneToNine => ('1'..='9').contains(&c),
            Atom::TwoToNine => ('2'..='9').contains(&c),
        });
        let rest = chars.len() - self.atoms.len();
        fixed_ok
            && match self.tail_min {
                None => rest == 0,
                Some(min) => rest >= min,
            }
    }

    /// True when the pattern has no wildcard (an exact number).
    pub fn is_exact(&self) -> bool {
        self.tail_min.is_none() && self.atoms.iter().all(|a| matches!(a, Atom::Literal(_)))
    }
}

impl fmt::Display for NumberPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Whole,
    Last(usize),
}

/// A number template (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl NumberTemplate {
    /// Parses a template; literal text may hold digits, `+`, `*` and `#`.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(PatternError::Length(text.to_owned()));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '{' {
                let end = rest.find('}').ok_or_else(|| PatternError::BadPlaceholder {
                    text: text.to_owned(),
                    placeholder: rest.to_owned(),
                })?;
                let inner = &rest[1..end];
                let piece = if inner == "ext" {
                    Piece::Whole
                } else if let Some(n) = inner.strip_prefix("last:") {
                    match n.parse::<usize>() {
                        Ok(n @ 1..=20) => Piece::Last(n),
                        _ => {
                            return Err(PatternError::BadPlaceholder {
                                text: text.to_owned(),
                                placeholder: rest[..=end].to_owned(),
                            })
                        }
                    }
                } else {
                    return Err(PatternError::BadPlaceholder {
                        text: text.to_owned(),
                        placeholder: rest[..=end].to_owned(),
                    });
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &rest[end + 1..];
            } else {
                if !(c.is_ascii_digit() || c == '+' || c == '*' || c == '#') {
                    return Err(PatternError::BadCharacter {
                        text: text.to_owned(),
                        found: c,
                    });
                }
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            pieces,
        })
    }

    /// The number for `input` (the matched extension or DID).
    pub fn render(&self, input: &str) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Whole => out.push_str(input),
                Piece::Last(n) => {
                    let chars: Vec<char> = input.chars().collect();
                    let start = chars.len().saturating_sub(*n);
                    out.extend(&chars[start..]);
                }
            }
        }
        out
    }
}

impl fmt::Display for NumberTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One caller-ID rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdRule {
    /// Calling extensions it applies to.
    pub pattern: NumberPattern,
    /// The number presented.
    pub presented: NumberTemplate,
}

/// The caller-ID table (first match wins, then the default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerIdRules {
    /// Rules in order.
    pub rules: Vec<CallerIdRule>,
    /// Template for extensions no rule matches.
    pub default: Option<NumberTemplate>,
}

impl CallerIdRules {
    /// Builds the table from `(pattern, template)` text pairs and an optional default.
    pub fn parse(rules: &[(&str, &str)], default: Option<&str>) -> Result<Self, PatternError> {
        Ok(Self {
            rules: rules
                .iter()
                .map(|(p, t)| {
                    Ok(CallerIdRule {
                        pattern: NumberPattern::new(p)?,
                        presented: NumberTemplate::new(t)?,
                    })
                })
                .collect::<Result<_, PatternError>>()?,
            default: default.map(NumberTemplate::new).transpose()?,
        })
    }

    /// The number presented for a call from `extension`.
    pub fn presented_number(&self, extension: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(extension))
            .map(|r| &r.presented)
            .or(self.default.as_ref())
            .map(|t| t.render(extension))
    }
}

/// Whether the callee may see the caller's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// Show it.
    Allowed,
    /// Hide it (`Privacy: id`).
    Restricted,
}

/// The identity headers of an outbound INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundIdentity {
    /// The number presented (also in the PAI).
    pub number: String,
    /// `From` without tag (the dialog layer adds it).
    pub from: rsip::headers::From,
    /// `P-Asserted-Identity`.
    pub p_asserted_identity: Header,
    /// `Privacy: id` when restricted.
    pub privacy: Option<Header>,
}

/// Why no outbound identity can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No rule or default matches the extension.
    #[error("no caller-ID rule matches extension {0:?}")]
    NoRule(String),
    /// The domain cannot go into a URI.
    #[error("domain {0:?} cannot be used in a SIP URI")]
    BadDomain(String),
}

/// A quoted-string display name (RFC 3261 25.1) without control characters.
pub fn quote_display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars().filter(|c| !c.is_control()).take(MAX_LEN) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `From`, `P-Asserted-Identity` and `Privacy` of a call from `extension` through
/// the trunk whose SIP domain is `domain`.
pub fn outbound_identity(
    rules: &CallerIdRules,
    extension: &str,
    display_name: Option<&str>,
    presentation: Presentation,
    domain: &str,
) -> Result<OutboundIdentity, IdentityError> {
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(IdentityError::BadDomain(domain.to_owned()));
    }
    let number = rules
        .presented_number(extension)
        .ok_or_else(|| IdentityError::NoRule(extension.to_owned()))?;
    let name = display_name
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!("{} ", quote_display_name(n)))
        .unwrap_or_default();
    let pai = format!("{name}<sip:{number}@{domain};user=phone>");
    let (from, privacy) = match presentation {
        Presentation::Allowed => (format!("{name}<sip:{number}@{domain}>"), None),
        Presentation::Restricted => (
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_owned(),
            Some(Header::Other("Privacy".into(), "id".into())),
        ),
    };
    Ok(OutboundIdentity {
        number,
        from: rsip::headers::From::new(from),
        p_asserted_identity: Header::Other("P-Asserted-Identity".into(), pai),
        privacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::headers::ToTypedHeader;

    #[test]
    fn patterns() {
        let p = NumberPattern::new("2XX").unwrap();
        assert!(p.matches("200") && p.matches("299"));
        assert!(!p.matches("20") && !p.matches("2000") && !p.matches("300") && !p.matches("2a0"));
        let p = NumberPattern::new("N!").unwrap();
        assert!(p.matches("2") && p.matches("912345") && !p.matches("1"));
        let p = NumberPattern::new("0.").unwrap();
        assert!(p.matches("030") && !p.matches("0"));
        let p = NumberPattern::new("z").unwrap();
        assert!(p.matches("1") && !p.matches("0"));
        assert!(NumberPattern::new("+4930").unwrap().is_exact());
        assert!(!NumberPattern::new("2XX").unwrap().is_exact());
        assert!(matches!(
            NumberPattern::new("2.X"),
            Err(PatternError::BadCharacter { found: '.', .. })
        ));
        assert!(matches!(
            NumberPattern::new("2Y"),
            Err(PatternError::BadCharacter { found: 'Y', .. })
        ));
        assert!(matches!(
            NumberPattern::new(""),
            Err(PatternError::Length(_))
        ));
    }

    #[test]
    fn templates() {
        let t = NumberTemplate::new("+4930123420{last:1}").unwrap();
        assert_eq!(t.render("205"), "+49301234205");
        assert_eq!(NumberTemplate::new("{ext}").unwrap().render("205"), "205");
        assert_eq!(
            NumberTemplate::new("{last:5}").unwrap().render("205"),
            "205"
        );
        for bad in ["{last:0}", "{last:21}", "{foo}", "{ext", "+49 30", "abc"] {
            assert!(NumberTemplate::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn caller_id_rules_first_match_then_default() {
        let rules = CallerIdRules::parse(
            &[("20X", "+4930123420{last:1}"), ("2XX", "+49301234200")],
            Some("+49301234000"),
        )
        .unwrap();
        assert_eq!(
            rules.presented_number("205").as_deref(),
            Some("+49301234205")
        );
        assert_eq!(
            rules.presented_number("231").as_deref(),
            Some("+49301234200")
        );
        assert_eq!(
            rules.presented_number("301").as_deref(),
            Some("+49301234000")
        );
        let strict = CallerIdRules::parse(&[("2XX", "+49301234200")], None).unwrap();
        assert_eq!(strict.presented_number("301"), None);
        assert_eq!(
            outbound_identity(&strict, "301", None, Presentation::Allowed, "trunk.example"),
            Err(IdentityError::NoRule("301".into()))
        );
    }

    #[test]
    fn identity_allowed_and_restricted() {
        let rules = CallerIdRules::parse(&[("2XX", "+49301234200")], None).unwrap();
        let id = outbound_identity(
            &rules,
            "201",
            Some("Anna \"A\" Schmidt"),
            Presentation::Allowed,
            "sip.carrier.example",
        )
        .unwrap();
        assert_eq!(id.number, "+49301234200");
        let from = id.from.typed().unwrap();
        assert_eq!(from.uri.to_string(), "sip:+49301234200@sip.carrier.example");
        assert_eq!(
            id.p_asserted_identity.to_string(),
            "P-Asserted-Identity: \"Anna \\\"A\\\" Schmidt\" <sip:+49301234200@sip.carrier.example;user=phone>"
        );
        assert_eq!(id.privacy, None);

        let anon = outbound_identity(
            &rules,
            "201",
            Some("Anna"),
            Presentation::Restricted,
            "sip.carrier.example",
        )
        .unwrap();
        let from = anon.from.typed().unwrap();
        assert_eq!(from.uri.to_string(), "sip:anonymous@anonymous.invalid");
        assert_eq!(anon.privacy.unwrap().to_string(), "Privacy: id");
        assert!(anon
            .p_asserted_identity
            .to_string()
            .contains("+49301234200"));
        assert_eq!(
            outbound_identity(&rules, "201", None, Presentation::Allowed, "bad domain"),
            Err(IdentityError::BadDomain("bad domain".into()))
        );
    }

    #[test]
    fn display_names_are_quoted_safely() {
        assert_eq!(quote_display_name("a\\b\"c\r\n"), "\"a\\\\b\\\"c\"");
    }
}
