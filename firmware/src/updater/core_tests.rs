//! Unit tests of the updater core on a virtual clock.

use super::*;

fn offer(size: u64, forced: bool) -> Offer {
    Offer {
        rollout: "spring".into(),
        version: "1.3.0".into(),
        sha256: "ab".repeat(32),
        size,
        forced,
    }
}

fn fetch(offset: u64) -> Action {
    Action::Fetch {
        rollout: "spring".into(),
        offset,
    }
}

fn verify() -> Action {
    Action::Verify {
        rollout: "spring".into(),
        sha256: "ab".repeat(32),
    }
}

fn install() -> Action {
    Action::Install {
        rollout: "spring".into(),
    }
}

fn report(state: OutcomeState, version: &str, reason: Option<&str>) -> Report {
    Report {
        rollout: "spring".into(),
        state,
        version: Some(version.into()),
        reason: reason.map(str::to_owned),
    }
}

const T0: Duration = Duration::from_secs(1000);

/// Downloads `size` bytes in 10-byte chunks and passes the sha256 check.
fn staged(u: &mut Updater, size: u64, forced: bool) {
    let a = u.offer(Some(offer(size, forced)), 0);
    assert_eq!(
        a,
        vec![
            Action::Report(report(OutcomeState::Downloading, "1.3.0", None)),
            fetch(0)
        ]
    );
    u.reported(&report(OutcomeState::Downloading, "1.3.0", None), true, T0);
    let mut at = 0;
    while at < size {
        let len = 10.min(size - at);
        let a = u.chunk(at, len);
        at += len;
        if at < size {
            assert_eq!(a, vec![fetch(at)]);
        } else {
            assert_eq!(a, vec![verify()]);
        }
    }
    let a = u.verified(Ok(()));
    assert_eq!(
        a.first(),
        Some(&Action::Report(report(OutcomeState::Staged, "1.3.0", None)))
    );
    u.reported(&report(OutcomeState::Staged, "1.3.0", None), true, T0);
}

#[test]
fn happy_path_in_the_window_without_calls() {
    let mut u = Updater::new();
    assert!(u.window(true).is_empty());
    staged(&mut u, 35, false);
    assert_eq!(
        u.phase(),
        &Phase::Installing {
            offer: offer(35, false)
        }
    );
    let a = u.install_result(Ok("1.3.0".into()));
    let r = report(OutcomeState::Installed, "1.3.0", None);
    assert_eq!(a, vec![Action::Report(r.clone())]);
    assert!(matches!(u.phase(), Phase::Installed { .. }));
    // Restart only once HQ has the report.
    assert!(u.reported(&r, false, T0).is_empty());
    assert!(u.tick(T0 + RETRY_MIN - Duration::from_millis(1)).is_empty());
    assert_eq!(u.tick(T0 + RETRY_MIN), vec![Action::Report(r.clone())]);
    assert_eq!(u.reported(&r, true, T0 + RETRY_MIN), vec![Action::Restart]);
}

#[test]
fn outside_the_window_waits() {
    let mut u = Updater::new();
    staged(&mut u, 20, false);
    assert_eq!(
        u.phase(),
        &Phase::Staged {
            offer: offer(20, false)
        }
    );
    assert!(u.tick(T0 + Duration::from_secs(86_400)).is_empty());
    assert!(u.calls(0).is_empty());
    assert_eq!(u.window(true), vec![install()]);
}

#[test]
fn never_installs_while_a_call_is_up_unless_forced() {
    let mut u = Updater::new();
    u.window(true);
    u.calls(1);
    staged(&mut u, 20, false);
    assert_eq!(
        u.phase(),
        &Phase::Staged {
            offer: offer(20, false)
        }
    );
    assert!(u.calls(2).is_empty());
    assert!(u.window(true).is_empty());
    // The window closes before the calls end: still waiting.
    assert!(u.window(false).is_empty());
    assert!(u.calls(0).is_empty());
    assert_eq!(u.window(true), vec![install()]);
}

#[test]
fn forced_installs_with_calls_up_and_window_closed() {
    let mut u = Updater::new();
    u.calls(3);
    staged(&mut u, 20, true);
    assert_eq!(
        u.phase(),
        &Phase::Installing {
            offer: offer(20, true)
        }
    );
}

#[test]
fn hq_forcing_a_staged_offer_later_installs_it() {
    let mut u = Updater::new();
    u.calls(1);
    staged(&mut u, 20, false);
    assert!(u.offer(Some(offer(20, false)), 20).is_empty());
    assert_eq!(u.offer(Some(offer(20, true)), 20), vec![install()]);
}

#[test]
fn resumes_from_the_bytes_on_disk() {
    let mut u = Updater::new();
    let a = u.offer(Some(offer(100, false)), 40);
    assert_eq!(a[1], fetch(40));
    assert_eq!(u.chunk(40, 60), vec![verify()]);
    // All bytes already there: straight to the sha256 check.
    let mut u = Updater::new();
    let a = u.offer(Some(offer(100, false)), 100);
    assert_eq!(a[1], verify());
    // More on disk than the bundle holds: discard and start over.
    let mut u = Updater::new();
    let a = u.offer(Some(offer(100, false)), 101);
    assert_eq!(
        a,
        vec![
            Action::Discard {
                rollout: "spring".into()
            },
            Action::Report(report(OutcomeState::Downloading, "1.3.0", None)),
            fetch(0)
        ]
    );
}

#[test]
fn fetch_errors_retry_with_backoff() {
    let mut u = Updater::new();
    u.offer(Some(offer(100, false)), 0);
    u.reported(&report(OutcomeState::Downloading, "1.3.0", None), true, T0);
    u.chunk(0, 30);
    u.fetch_error(T0);
    assert!(u.tick(T0 + Duration::from_secs(4)).is_empty());
    assert_eq!(u.tick(T0 + RETRY_MIN), vec![fetch(30)]);
    u.fetch_error(T0 + RETRY_MIN);
    // Doubled: 10 s.
    assert!(u.tick(T0 + RETRY_MIN + Duration::from_secs(9)).is_empty());
    assert_eq!(u.tick(T0 + RETRY_MIN * 3), vec![fetch(30)]);
    // A chunk resets the backoff.
    u.chunk(30, 10);
    u.fetch_error(T0 * 2);
    assert_eq!(u.tick(T0 * 2 + RETRY_MIN), vec![fetch(40)]);
    // The backoff is capped.
    let mut now = T0 * 3;
    for _ in 0..20 {
        u.fetch_error(now);
        now += RETRY_MAX;
        assert_eq!(u.tick(now), vec![fetch(40)]);
    }
}

#[test]
fn sha256_mismatch_fails_and_discards() {
    let mut u = Updater::new();
    u.window(true);
    u.offer(Some(offer(10, false)), 0);
    assert_eq!(u.chunk(0, 10), vec![verify()]);
    let a = u.verified(Err("00".repeat(32)));
    assert_eq!(
        a[0],
        Action::Discard {
            rollout: "spring".into()
        }
    );
    let Action::Report(r) = &a[1] else {
        panic!("{a:?}")
    };
    assert_eq!(r.state, OutcomeState::Failed);
    assert!(
        r.reason.as_deref().unwrap_or("").contains("sha256"),
        "{r:?}"
    );
    assert_eq!(
        u.phase(),
        &Phase::Done {
            rollout: "spring".into()
        }
    );
    // Done with that rollout: the same offer again starts nothing.
    assert!(u.offer(Some(offer(10, false)), 0).is_empty());
}

#[test]
fn refused_bundle_is_reported_failed_with_the_reason() {
    let mut u = Updater::new();
    u.window(true);
    staged(&mut u, 10, false);
    let a = u.install_result(Err("bad signature (1 pinned key)".into()));
    assert_eq!(
        a,
        vec![
            Action::Discard {
                rollout: "spring".into()
            },
            Action::Report(report(
                OutcomeState::Failed,
                "1.3.0",
                Some("bad signature (1 pinned key)")
            ))
        ]
    );
    assert!(u.install_result(Ok("1.3.0".into())).is_empty());
}

#[test]
fn bad_chunks_fail_the_rollout() {
    for (offset, len, words) in [
        (5, 10, "expected byte 0"),
        (0, 11, "11 bytes of a 10-byte bundle"),
        (0, 0, "empty chunk"),
    ] {
        let mut u = Updater::new();
        u.offer(Some(offer(10, false)), 0);
        let a = u.chunk(offset, len);
        let Some(Action::Report(r)) = a.get(1) else {
            panic!("{a:?}")
        };
        assert_eq!(r.state, OutcomeState::Failed);
        assert!(r.reason.as_deref().unwrap_or("").contains(words), "{r:?}");
    }
}

#[test]
fn withdrawn_offer_stops_and_a_new_rollout_replaces_the_old() {
    let mut u = Updater::new();
    u.offer(Some(offer(100, false)), 0);
    u.chunk(0, 50);
    assert!(u.offer(None, 0).is_empty());
    assert_eq!(u.phase(), &Phase::Idle);
    assert!(
        u.chunk(50, 50).is_empty(),
        "late chunk after withdrawal ignored"
    );
    // Offered again: resumes from the file.
    let a = u.offer(Some(offer(100, false)), 50);
    assert_eq!(a[1], fetch(50));
    // Another rollout: the old download is discarded.
    let mut other = offer(7, false);
    other.rollout = "summer".into();
    let a = u.offer(Some(other), 0);
    assert_eq!(
        a[0],
        Action::Discard {
            rollout: "spring".into()
        }
    );
    assert_eq!(
        a[2],
        Action::Fetch {
            rollout: "summer".into(),
            offset: 0
        }
    );
}

#[test]
fn installing_is_not_interrupted_by_offers() {
    let mut u = Updater::new();
    u.window(true);
    staged(&mut u, 10, false);
    assert!(u.offer(None, 0).is_empty());
    let mut other = offer(7, false);
    other.rollout = "summer".into();
    assert!(u.offer(Some(other), 0).is_empty());
    assert!(matches!(u.phase(), Phase::Installing { .. }));
}

#[test]
fn a_trial_outcome_is_reported_until_accepted_and_its_offer_ignored() {
    let mut u = Updater::new();
    let report = Report {
        rollout: "spring".into(),
        state: OutcomeState::Committed,
        version: Some("1.3.0".into()),
        reason: None,
    };
    assert_eq!(
        u.trial_outcome(report.clone()),
        vec![Action::Report(report.clone())]
    );
    // HQ still offers it until the report lands: ignored.
    assert!(u.offer(Some(offer(100, false)), 100).is_empty());
    // Not delivered: sent again after the backoff.
    let t0 = Duration::from_secs(10);
    assert!(u.reported(&report, false, t0).is_empty());
    assert!(u.tick(t0 + RETRY_MIN / 2).is_empty());
    assert_eq!(u.tick(t0 + RETRY_MIN), vec![Action::Report(report.clone())]);
    // Delivered: no restart, nothing more.
    assert!(u.reported(&report, true, t0 + RETRY_MIN).is_empty());
    assert!(u.tick(t0 + RETRY_MAX * 2).is_empty());
    assert_eq!(
        u.phase(),
        &Phase::Done {
            rollout: "spring".into()
        }
    );
}
