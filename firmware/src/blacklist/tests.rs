use proptest::prelude::*;

use super::*;

fn p(s: &str) -> Pattern {
    s.parse().expect(s)
}

fn list(settings: Settings, entries: &[(&str, Option<&str>)]) -> Blacklist {
    let mut b = Blacklist::new(settings);
    for (pattern, action) in entries {
        b.insert(p(pattern), action.map(|a| a.parse().expect(a)));
    }
    b
}

fn deny() -> Settings {
    Settings::default()
}

fn allow(default_action: BlockAction) -> Settings {
    Settings {
        mode: Mode::Allow,
        default_action,
    }
}

fn block(action: BlockAction, pattern: Option<&str>, mode: Mode) -> Verdict {
    Verdict::Block {
        action,
        pattern: pattern.map(str::to_owned),
        mode,
    }
}

#[test]
fn patterns_parse_and_print_back() {
    for s in [
        "0301234567",
        "+49301234567",
        "0900*",
        "+49*",
        "1",
        "anonymous",
    ] {
        assert_eq!(p(s).to_string(), s);
    }
    assert_eq!(p("0900*"), Pattern::Prefix("0900".into()));
    assert_eq!(p("+4930"), Pattern::Exact("+4930".into()));
    assert_eq!(p("anonymous"), Pattern::Anonymous);
    assert_eq!(p(&"9".repeat(MAX_PATTERN_DIGITS)).to_string().len(), 20);
}

#[test]
fn bad_patterns_say_what_is_wrong() {
    let err = |s: &str| s.parse::<Pattern>().expect_err(s);
    assert_eq!(err(""), PatternError::Empty);
    assert_eq!(err("*"), PatternError::NoDigits);
    assert_eq!(err("+*"), PatternError::NoDigits);
    assert_eq!(err("+"), PatternError::NoDigits);
    assert_eq!(
        err(&"1".repeat(MAX_PATTERN_DIGITS + 1)),
        PatternError::TooLong
    );
    assert_eq!(
        err(&format!("+{}*", "1".repeat(MAX_PATTERN_DIGITS + 1))),
        PatternError::TooLong
    );
    assert_eq!(err("030 123"), PatternError::BadChar { found: ' ', at: 4 });
    assert_eq!(err("09*00"), PatternError::BadChar { found: '*', at: 3 });
    assert_eq!(err("0900**"), PatternError::BadChar { found: '*', at: 5 });
    assert_eq!(err("49+30"), PatternError::BadChar { found: '+', at: 3 });
    assert_eq!(err("123#"), PatternError::BadChar { found: '#', at: 4 });
    assert_eq!(
        err("Anonymous"),
        PatternError::BadChar { found: 'A', at: 1 }
    );
    assert_eq!(err("0é1"), PatternError::BadChar { found: 'é', at: 2 });
    assert!(err("09*00").to_string().contains("position 3"));
}

#[test]
fn deny_mode_blocks_listed_callers_with_their_action() {
    let b = list(
        deny(),
        &[
            ("0900*", None),
            ("0301234567", Some("reject")),
            ("0800*", Some("congestion")),
        ],
    );
    assert_eq!(b.screen(Caller::Number("0301112222")), Verdict::Pass);
    assert_eq!(
        b.screen(Caller::Number("09001234")),
        block(BlockAction::Busy, Some("0900*"), Mode::Deny)
    );
    assert_eq!(
        b.screen(Caller::Number("0301234567")),
        block(BlockAction::Reject, Some("0301234567"), Mode::Deny)
    );
    assert_eq!(
        b.screen(Caller::Number("0800")),
        block(BlockAction::Congestion, Some("0800*"), Mode::Deny)
    );
    // A prefix is not an exact match of a shorter number.
    assert_eq!(b.screen(Caller::Number("090")), Verdict::Pass);
    assert_eq!(b.screen(Caller::Anonymous), Verdict::Pass);
}

#[test]
fn the_most_specific_entry_wins() {
    let b = list(
        deny(),
        &[
            ("09*", Some("congestion")),
            ("0900*", Some("busy")),
            ("09001*", Some("allow")),
            ("0900123", Some("reject")),
        ],
    );
    assert_eq!(
        b.screen(Caller::Number("0912")),
        block(BlockAction::Congestion, Some("09*"), Mode::Deny)
    );
    assert_eq!(
        b.screen(Caller::Number("09005")),
        block(BlockAction::Busy, Some("0900*"), Mode::Deny)
    );
    assert_eq!(b.screen(Caller::Number("0900199")), Verdict::Pass);
    assert_eq!(
        b.screen(Caller::Number("0900123")),
        block(BlockAction::Reject, Some("0900123"), Mode::Deny)
    );
    // A longer number under the exact one falls back to the longest prefix.
    assert_eq!(b.screen(Caller::Number("09001234")), Verdict::Pass);
    assert_eq!(
        b.screen(Caller::Number("09002345")),
        block(BlockAction::Busy, Some("0900*"), Mode::Deny)
    );
}

#[test]
fn allow_mode_lets_only_listed_callers_through() {
    let b = list(
        allow(BlockAction::Reject),
        &[("+4930*", None), ("+493012345", Some("busy"))],
    );
    assert_eq!(b.screen(Caller::Number("+4930999")), Verdict::Pass);
    assert_eq!(
        b.screen(Caller::Number("+4940999")),
        block(BlockAction::Reject, None, Mode::Allow)
    );
    assert_eq!(
        b.screen(Caller::Number("+493012345")),
        block(BlockAction::Busy, Some("+493012345"), Mode::Allow)
    );
    assert_eq!(
        b.screen(Caller::Anonymous),
        block(BlockAction::Reject, None, Mode::Allow)
    );
    // An empty allowlist blocks everyone.
    let empty = Blacklist::new(allow(BlockAction::Busy));
    assert_eq!(
        empty.screen(Caller::Number("1")),
        block(BlockAction::Busy, None, Mode::Allow)
    );
}

#[test]
fn anonymous_callers_follow_the_anonymous_entry() {
    let b = list(deny(), &[("anonymous", Some("congestion"))]);
    assert_eq!(
        b.screen(Caller::Anonymous),
        block(BlockAction::Congestion, Some("anonymous"), Mode::Deny)
    );
    assert_eq!(b.screen(Caller::Number("123")), Verdict::Pass);
    let a = list(allow(BlockAction::Busy), &[("anonymous", None)]);
    assert_eq!(a.screen(Caller::Anonymous), Verdict::Pass);
}

#[test]
fn callers_are_anonymous_without_digits_or_caller_id() {
    assert_eq!(Caller::from_sip(""), Caller::Anonymous);
    assert_eq!(Caller::from_sip("anonymous"), Caller::Anonymous);
    assert_eq!(Caller::from_sip("Restricted"), Caller::Anonymous);
    assert_eq!(Caller::from_sip("+4930"), Caller::Number("+4930"));
    assert_eq!(Caller::from_caller_id(None), Caller::Anonymous);
    let cid = |presentation, number: &str| {
        let mut c = line_proto::CallerId::new(number, "").expect("caller id");
        c.presentation = presentation;
        c
    };
    let shown = cid(line_proto::Presentation::Allowed, "5551234");
    assert_eq!(
        Caller::from_caller_id(Some(&shown)),
        Caller::Number("5551234")
    );
    for (pres, number) in [
        (line_proto::Presentation::Private, ""),
        (line_proto::Presentation::Unavailable, ""),
        (line_proto::Presentation::Allowed, ""),
    ] {
        let c = cid(pres, number);
        assert_eq!(Caller::from_caller_id(Some(&c)), Caller::Anonymous);
    }
}

#[test]
fn names_round_trip() {
    for s in ["allow", "busy", "congestion", "reject"] {
        assert_eq!(s.parse::<EntryAction>().expect(s).as_str(), s);
    }
    assert!("block".parse::<EntryAction>().is_err());
    assert!("allow".parse::<BlockAction>().is_err());
    assert_eq!("deny".parse::<Mode>(), Ok(Mode::Deny));
    assert!("Deny".parse::<Mode>().is_err());
}

// --- property tests against a reference model ---------------------------------------

fn de_list(entries: &[(&str, Option<&str>)]) -> Blacklist {
    let mut b = Blacklist::with_plan(
        deny(),
        Some(crate::numbers::SitePlan::of_country(
            crate::tones::Country::De,
        )),
    );
    for (pattern, action) in entries {
        b.insert(p(pattern), action.map(|a| a.parse().expect(a)));
    }
    b
}

#[test]
fn a_number_written_nationally_blocks_its_international_forms_and_back() {
    let b = de_list(&[("0301234567", None), ("+4940555", None)]);
    assert_eq!(b.len(), 2);
    for caller in ["0301234567", "+49301234567", "0049301234567"] {
        assert_eq!(
            b.screen(Caller::Number(caller)),
            block(BlockAction::Busy, Some("0301234567"), Mode::Deny),
            "{caller}"
        );
    }
    for caller in ["+4940555", "040555", "004940555"] {
        // 040555 has too few digits to be a national number (kept as typed), so it
        // does not meet +4940555; the other forms do.
        let want = if caller == "040555" {
            Verdict::Pass
        } else {
            block(BlockAction::Busy, Some("+4940555"), Mode::Deny)
        };
        assert_eq!(b.screen(Caller::Number(caller)), want, "{caller}");
    }
    assert_eq!(b.screen(Caller::Number("+49301234568")), Verdict::Pass);
    assert_eq!(b.screen(Caller::Number("301234567")), Verdict::Pass);
}

#[test]
fn prefixes_match_in_every_form_and_the_most_specific_still_wins() {
    let b = de_list(&[
        ("0900*", Some("reject")),
        ("+4990012*", Some("allow")),
        ("0049180*", None),
        ("00*", Some("congestion")),
    ]);
    assert_eq!(
        b.screen(Caller::Number("+499001111")),
        block(BlockAction::Reject, Some("0900*"), Mode::Deny)
    );
    assert_eq!(
        b.screen(Caller::Number("00499001111")),
        block(BlockAction::Reject, Some("0900*"), Mode::Deny)
    );
    // The longer prefix, written in + form, lets its numbers through in any form.
    assert_eq!(b.screen(Caller::Number("0900123456")), Verdict::Pass);
    assert_eq!(b.screen(Caller::Number("+49900123456")), Verdict::Pass);
    // 0049180* is +49180*: it blocks the national form.
    assert_eq!(
        b.screen(Caller::Number("01805123456")),
        block(BlockAction::Busy, Some("0049180*"), Mode::Deny)
    );
    // 00* cannot be placed by the plan: it matches numbers presented with 00 only.
    assert_eq!(
        b.screen(Caller::Number("0033123456789")),
        block(BlockAction::Congestion, Some("00*"), Mode::Deny)
    );
    assert_eq!(b.screen(Caller::Number("+33123456789")), Verdict::Pass);
    assert_eq!(b.screen(Caller::Number("030123456")), Verdict::Pass);
}

#[test]
fn an_exact_entry_in_any_form_beats_a_prefix() {
    let b = de_list(&[("030*", Some("busy")), ("+49301234567", Some("allow"))]);
    assert_eq!(b.screen(Caller::Number("0301234567")), Verdict::Pass);
    assert_eq!(b.screen(Caller::Number("0049301234567")), Verdict::Pass);
    assert_eq!(
        b.screen(Caller::Number("0301234568")),
        block(BlockAction::Busy, Some("030*"), Mode::Deny)
    );
    // Both forms listed: each is an entry of its own, the written one is reported.
    let b = de_list(&[
        ("+49301234567", Some("reject")),
        ("0301234567", Some("busy")),
    ]);
    assert_eq!(b.len(), 2);
    assert_eq!(
        b.screen(Caller::Number("+49301234567")),
        block(BlockAction::Reject, Some("+49301234567"), Mode::Deny)
    );
    assert_eq!(
        b.screen(Caller::Number("0301234567")),
        block(BlockAction::Busy, Some("0301234567"), Mode::Deny)
    );
}

/// The reference: scan every entry, keep the one with the longest matching pattern
/// (an exact match counts as longer than any prefix of the same number).
fn model(
    settings: Settings,
    entries: &[(Pattern, Option<EntryAction>)],
    caller: Caller<'_>,
) -> Verdict {
    let mut best: Option<(usize, &Pattern, Option<EntryAction>)> = None;
    for (pattern, action) in entries {
        let rank = match (pattern, caller) {
            (Pattern::Anonymous, Caller::Anonymous) => Some(usize::MAX),
            (Pattern::Exact(e), Caller::Number(n)) if e == n => Some(usize::MAX),
            (Pattern::Prefix(pre), Caller::Number(n)) if n.starts_with(pre.as_str()) => {
                Some(pre.len())
            }
            _ => None,
        };
        // Later entries replace earlier ones with the same pattern (like insert).
        if let Some(rank) = rank {
            if best.is_none_or(|(r, _, _)| rank >= r) {
                best = Some((rank, pattern, *action));
            }
        }
    }
    match best {
        None if settings.mode == Mode::Deny => Verdict::Pass,
        None => block(settings.default_action, None, settings.mode),
        Some((_, pattern, action)) => {
            match action.unwrap_or(match settings.mode {
                Mode::Deny => EntryAction::Block(settings.default_action),
                Mode::Allow => EntryAction::Allow,
            }) {
                EntryAction::Allow => Verdict::Pass,
                EntryAction::Block(a) => Verdict::Block {
                    action: a,
                    pattern: Some(pattern.to_string()),
                    mode: settings.mode,
                },
            }
        }
    }
}

fn arb_number() -> impl Strategy<Value = String> {
    // A small alphabet so prefixes and numbers collide often.
    "\\+?[0-2]{1,6}"
}

fn arb_entry() -> impl Strategy<Value = (Pattern, Option<EntryAction>)> {
    let pattern = prop_oneof![
        arb_number().prop_map(Pattern::Exact),
        arb_number().prop_map(Pattern::Prefix),
        Just(Pattern::Anonymous),
    ];
    let action = prop_oneof![
        Just(None),
        Just(Some(EntryAction::Allow)),
        Just(Some(EntryAction::Block(BlockAction::Busy))),
        Just(Some(EntryAction::Block(BlockAction::Congestion))),
        Just(Some(EntryAction::Block(BlockAction::Reject))),
    ];
    (pattern, action)
}

proptest! {
    #[test]
    fn screening_matches_the_reference_model(
        entries in proptest::collection::vec(arb_entry(), 0..12),
        caller in proptest::option::of(arb_number()),
        allow_mode in any::<bool>(),
        reject in any::<bool>(),
    ) {
        let settings = Settings {
            mode: if allow_mode { Mode::Allow } else { Mode::Deny },
            default_action: if reject { BlockAction::Reject } else { BlockAction::Busy },
        };
        let mut b = Blacklist::new(settings);
        for (pattern, action) in &entries {
            b.insert(pattern.clone(), *action);
        }
        let who = caller.as_deref().map_or(Caller::Anonymous, Caller::Number);
        prop_assert_eq!(b.screen(who), model(settings, &entries, who));
    }

    #[test]
    fn valid_patterns_print_as_parsed(s in "\\+?[0-9]{1,20}\\*?") {
        let pattern: Pattern = s.parse().expect("valid");
        prop_assert_eq!(pattern.to_string(), s);
    }

    #[test]
    fn anything_else_is_refused_not_accepted(s in "\\PC{0,24}") {
        let valid = s == ANONYMOUS || {
            let body = s.strip_suffix('*').unwrap_or(&s);
            let digits = body.strip_prefix('+').unwrap_or(body);
            !digits.is_empty()
                && digits.len() <= MAX_PATTERN_DIGITS
                && digits.bytes().all(|b| b.is_ascii_digit())
        };
        prop_assert_eq!(s.parse::<Pattern>().is_ok(), valid);
    }
}
