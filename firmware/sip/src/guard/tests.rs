//! Guard rules on a virtual clock.

use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn request(user_agent: Option<&str>) -> Request {
    let ua = user_agent
        .map(|ua| format!("User-Agent: {ua}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "OPTIONS sip:100@192.0.2.200 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-1;rport\r\n\
         From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6162\r\n\
         To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
         Call-ID: 1234@1.1.1.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         {ua}Content-Length: 0\r\n\r\n"
    );
    Request::try_from(text.as_str()).unwrap()
}

fn guard() -> Guard {
    Guard::new(GuardConfig::default()).unwrap()
}

#[test]
fn five_failures_in_window_ban_for_ten_minutes() {
    let mut g = guard();
    let t0 = Instant::now();
    for i in 0..4 {
        assert_eq!(
            g.record_auth_failure(t0 + Duration::from_secs(i * 10), ip(1)),
            None
        );
    }
    assert_eq!(g.auth_failures(t0 + Duration::from_secs(40), ip(1)), 4);
    let at = t0 + Duration::from_secs(50);
    let until = g.record_auth_failure(at, ip(1)).unwrap();
    assert_eq!(until, at + Duration::from_secs(600));
    assert_eq!(
        g.poll_event(),
        Some(GuardEvent::Banned {
            source: ip(1),
            until,
            level: 1,
            cause: BanCause::AuthFailures
        })
    );
    assert_eq!(
        g.check_request(
            at + Duration::from_secs(1),
            ip(1),
            &request(Some("Yealink SIP-T46S"))
        ),
        Verdict::Drop(DropReason::Banned { until })
    );
    // Another source is unaffected.
    assert_eq!(g.check_request(at, ip(2), &request(None)), Verdict::Allow);
    assert_eq!(g.timeout(), Some(until));
    g.handle_timeout(until);
    assert_eq!(g.poll_event(), Some(GuardEvent::Unbanned { source: ip(1) }));
    assert_eq!(
        g.check_request(until, ip(1), &request(None)),
        Verdict::Allow
    );
    // The ban ended the window: the count starts from zero.
    assert_eq!(g.auth_failures(until, ip(1)), 0);
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let mut g = guard();
    let t0 = Instant::now();
    // One failure every 15 s: never 5 within 60 s.
    for i in 0..20 {
        assert_eq!(
            g.record_auth_failure(t0 + Duration::from_secs(i * 15), ip(1)),
            None
        );
    }
    assert_eq!(g.auth_failures(t0 + Duration::from_secs(19 * 15), ip(1)), 4);
    // Five within 60 s (the window is half-open: a failure exactly 60 s old is out).
    let t1 = t0 + Duration::from_secs(1000);
    for i in 0..4 {
        assert_eq!(
            g.record_auth_failure(t1 + Duration::from_secs(i * 14), ip(1)),
            None
        );
    }
    assert!(g
        .record_auth_failure(t1 + Duration::from_secs(59), ip(1))
        .is_some());
}

#[test]
fn repeated_bans_escalate_and_cap() {
    let config = GuardConfig {
        auth_failures_before_ban: 1,
        ban_duration: Duration::from_secs(600),
        ban_escalation: 3,
        max_ban_duration: Duration::from_secs(3 * 3600),
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let mut now = Instant::now();
    let mut durations = Vec::new();
    for _ in 0..5 {
        let until = g.record_auth_failure(now, ip(9)).unwrap();
        durations.push((until - now).as_secs());
        now = until + Duration::from_secs(5);
        g.handle_timeout(now);
    }
    assert_eq!(durations, vec![600, 1800, 5400, 10800, 10800]);
    let levels: Vec<u32> = std::iter::from_fn(|| g.poll_event())
        .filter_map(|e| match e {
            GuardEvent::Banned { level, .. } => Some(level),
            _ => None,
        })
        .collect();
    assert_eq!(levels, vec![1, 2, 3, 4, 5]);
}

#[test]
fn ban_level_is_forgotten_after_offence_memory() {
    let config = GuardConfig {
        auth_failures_before_ban: 1,
        offence_memory: Duration::from_secs(3600),
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let t0 = Instant::now();
    let until = g.record_auth_failure(t0, ip(3)).unwrap();
    let later = until + Duration::from_secs(3600);
    g.handle_timeout(later);
    // The record is gone entirely once nothing about it is remembered.
    assert_eq!(g.tracked_sources(), 0);
    let until2 = g.record_auth_failure(later, ip(3)).unwrap();
    assert_eq!(until2 - later, Duration::from_secs(600));
}

#[test]
fn scanners_are_dropped_and_banned() {
    let mut g = guard();
    let now = Instant::now();
    for ua in [
        "friendly-scanner",
        "sipvicious",
        "SIPVicious 0.3.4",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "sip-scan",
        "sundayddr",
        "iWar",
        "Mozilla/5.0 (friendly-SCANNER)",
    ] {
        assert!(g.is_scanner(ua), "{ua}");
    }
    for ua in [
        "Yealink SIP-T46S 66.86.0.15",
        "PolycomVVX-VVX_411-UA/6.4.3",
        "baresip v3.20.0",
    ] {
        assert!(!g.is_scanner(ua), "{ua}");
    }
    assert_eq!(
        g.check_request(now, ip(4), &request(Some("friendly-scanner"))),
        Verdict::Drop(DropReason::Scanner)
    );
    assert!(matches!(
        g.poll_event(),
        Some(GuardEvent::Banned {
            cause: BanCause::Scanner,
            level: 1,
            ..
        })
    ));
    // Now banned: even a friendly user agent is dropped.
    assert!(matches!(
        g.check_request(now, ip(4), &request(Some("Yealink SIP-T46S"))),
        Verdict::Drop(DropReason::Banned { .. })
    ));
    // Retrying while banned neither extends nor escalates.
    assert!(g.poll_event().is_none());
}

#[test]
fn scanner_lists_are_configurable() {
    let config = GuardConfig {
        block_default_scanners: false,
        extra_scanner_user_agents: vec!["  EvilDialer ".into()],
        ban_scanners: false,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let now = Instant::now();
    assert_eq!(
        g.check_request(now, ip(5), &request(Some("friendly-scanner"))),
        Verdict::Allow
    );
    assert_eq!(
        g.check_request(now, ip(5), &request(Some("x-evildialer-2"))),
        Verdict::Drop(DropReason::Scanner)
    );
    // Not banned: a normal request still passes.
    assert_eq!(g.check_request(now, ip(5), &request(None)), Verdict::Allow);
    assert!(g.poll_event().is_none());
}

#[test]
fn transaction_and_dialog_limits() {
    let config = GuardConfig {
        max_transactions_per_source: 3,
        max_dialogs_per_source: 2,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let now = Instant::now();
    for _ in 0..3 {
        assert_eq!(g.transaction_started(now, ip(6)), Verdict::Allow);
    }
    let refused = g.transaction_started(now, ip(6));
    assert_eq!(
        refused,
        Verdict::Reject(Rejection {
            code: 503,
            reason: RejectReason::TooManyTransactions
        })
    );
    if let Verdict::Reject(r) = refused {
        assert_eq!(r.status_code().code(), 503);
    }
    assert_eq!(g.transaction_started(now, ip(7)), Verdict::Allow);
    g.transaction_ended(ip(6));
    assert_eq!(g.transaction_started(now, ip(6)), Verdict::Allow);
    assert_eq!(g.dialog_started(now, ip(6)), Verdict::Allow);
    assert_eq!(g.dialog_started(now, ip(6)), Verdict::Allow);
    assert!(matches!(
        g.dialog_started(now, ip(6)),
        Verdict::Reject(Rejection {
            code: 503,
            reason: RejectReason::TooManyDialogs
        })
    ));
    g.dialog_ended(ip(6));
    assert_eq!(g.live(ip(6)), (3, 1));
    // Ending more than started never underflows.
    for _ in 0..10 {
        g.dialog_ended(ip(6));
        g.transaction_ended(ip(6));
    }
    assert_eq!(g.live(ip(6)), (0, 0));
}

#[test]
fn exempt_sources_are_never_limited() {
    let config = GuardConfig {
        auth_failures_before_ban: 1,
        max_transactions_per_source: 1,
        exempt: vec![ip(10)],
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let now = Instant::now();
    assert_eq!(g.record_auth_failure(now, ip(10)), None);
    assert_eq!(g.ban(now, ip(10), BanCause::AuthFailures), None);
    assert_eq!(
        g.check_request(now, ip(10), &request(Some("friendly-scanner"))),
        Verdict::Allow
    );
    for _ in 0..5 {
        assert_eq!(g.transaction_started(now, ip(10)), Verdict::Allow);
    }
}

#[test]
fn manual_unban() {
    let mut g = guard();
    let now = Instant::now();
    g.ban(now, ip(11), BanCause::AuthFailures).unwrap();
    g.poll_event();
    assert!(g.unban(now, ip(11)));
    assert_eq!(
        g.poll_event(),
        Some(GuardEvent::Unbanned { source: ip(11) })
    );
    assert!(!g.unban(now, ip(11)));
    assert_eq!(g.check_request(now, ip(11), &request(None)), Verdict::Allow);
}

#[test]
fn memory_is_bounded() {
    let config = GuardConfig {
        max_tracked_sources: 3,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(config).unwrap();
    let t0 = Instant::now();
    // Three busy sources (live transactions) fill the table.
    for i in 0..3 {
        assert_eq!(g.transaction_started(t0, ip(i)), Verdict::Allow);
    }
    assert_eq!(
        g.transaction_started(t0, ip(50)),
        Verdict::Reject(Rejection {
            code: 503,
            reason: RejectReason::TooManySources
        })
    );
    assert_eq!(g.record_auth_failure(t0, ip(50)), None);
    assert_eq!(g.tracked_sources(), 3);
    // One goes idle: the newcomer evicts it.
    g.transaction_ended(ip(1));
    assert_eq!(g.transaction_started(t0, ip(50)), Verdict::Allow);
    assert_eq!(g.tracked_sources(), 3);
    assert_eq!(g.live(ip(1)), (0, 0));
}

#[test]
fn bad_configs_are_refused() {
    let cases: Vec<(GuardConfig, GuardConfigError)> = vec![
        (
            GuardConfig {
                auth_failures_before_ban: 0,
                ..GuardConfig::default()
            },
            GuardConfigError::Zero {
                field: "auth_failures_before_ban",
            },
        ),
        (
            GuardConfig {
                auth_failure_window: Duration::ZERO,
                ..GuardConfig::default()
            },
            GuardConfigError::Zero {
                field: "auth_failure_window",
            },
        ),
        (
            GuardConfig {
                max_dialogs_per_source: 0,
                ..GuardConfig::default()
            },
            GuardConfigError::Zero {
                field: "max_dialogs_per_source",
            },
        ),
        (
            GuardConfig {
                max_ban_duration: Duration::from_secs(1),
                ..GuardConfig::default()
            },
            GuardConfigError::MaxBanTooShort {
                base: Duration::from_secs(600),
                max: Duration::from_secs(1),
            },
        ),
        (
            GuardConfig {
                extra_scanner_user_agents: vec!["ok".into(), " ".into()],
                ..GuardConfig::default()
            },
            GuardConfigError::EmptyScannerPattern { index: 1 },
        ),
    ];
    for (config, error) in cases {
        assert_eq!(Guard::new(config).unwrap_err(), error);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Fail(u8),
    Advance(u16),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Fail),
        (0u16..400).prop_map(Op::Advance),
        Just(Op::Timeout),
    ]
}

proptest! {
    /// Against a reference model: a source is banned exactly when it had `threshold`
    /// failures inside the window since its last ban, and a banned source's requests
    /// are always dropped until the ban's end.
    #[test]
    fn bans_follow_the_sliding_window(ops in proptest::collection::vec(op(), 1..200)) {
        let config = GuardConfig {
            auth_failures_before_ban: 3,
            auth_failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(120),
            ..GuardConfig::default()
        };
        let mut g = Guard::new(config).unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let mut model_failures: HashMap<u8, Vec<Instant>> = HashMap::new();
        let mut model_ban: HashMap<u8, Instant> = HashMap::new();
        for op in ops {
            match op {
                Op::Advance(s) => now += Duration::from_secs(u64::from(s)),
                Op::Timeout => g.handle_timeout(now),
                Op::Fail(n) => {
                    let banned = model_ban.get(&n).is_some_and(|&u| u > now);
                    let got = g.record_auth_failure(now, ip(n));
                    if banned {
                        // Failures while banned count towards nothing.
                        prop_assert_eq!(got, None);
                        continue;
                    }
                    let f = model_failures.entry(n).or_default();
                    f.retain(|&t| now - t < Duration::from_secs(60));
                    f.push(now);
                    if f.len() >= 3 {
                        f.clear();
                        prop_assert!(got.is_some());
                        model_ban.insert(n, got.unwrap());
                    } else {
                        prop_assert_eq!(got, None);
                    }
                }
            }
            for n in 0..4u8 {
                let banned = model_ban.get(&n).is_some_and(|&u| u > now);
                let verdict = g.check_request(now, ip(n), &request(None));
                prop_assert_eq!(matches!(verdict, Verdict::Drop(_)), banned);
            }
            if let Some(t) = g.timeout() {
                prop_assert!(model_ban.values().any(|&u| u == t));
            }
        }
    }
}
