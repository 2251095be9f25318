//! The task against an in-process stand-in for HQ's update endpoints (plain HTTP; the
//! mutual TLS is the sync client's, tested in `sync`): chunked download with a failed
//! chunk in the middle (retried from the offset on disk), sha256, install into
//! `DirSlots`, reports in order, restart; a bundle signed by another key is reported
//! failed and both slots stay as they were.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::slot::{SlotId, SlotStatus};
use branchline_image::store::{DirSlots, SlotStore};
use branchline_sync::wire::{self, Offer, OutcomeState, UpdateOffer, UpdateReport};

use super::*;

const CHUNK: usize = 4096;

#[derive(Clone)]
struct Hq {
    offer: Offer,
    bundle: Arc<Vec<u8>>,
    failed_once: Arc<Mutex<bool>>,
    ranges: Arc<Mutex<Vec<u64>>>,
    reports: Arc<Mutex<Vec<UpdateReport>>>,
}

async fn offer(State(hq): State<Hq>) -> Json<UpdateOffer> {
    Json(UpdateOffer {
        protocol: wire::PROTOCOL_VERSION,
        offer: Some(hq.offer.clone()),
    })
}

async fn chunk(
    State(hq): State<Hq>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, Vec<u8>) {
    assert_eq!(id, hq.offer.rollout);
    let from: u64 = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse().ok())
        .expect("Range: bytes=N-");
    hq.ranges.lock().expect("lock").push(from);
    if from >= 2 * CHUNK as u64 {
        let mut failed = hq.failed_once.lock().expect("lock");
        if !*failed {
            *failed = true;
            return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
        }
    }
    let from = usize::try_from(from).expect("offset");
    let end = (from + CHUNK).min(hq.bundle.len());
    (StatusCode::PARTIAL_CONTENT, hq.bundle[from..end].to_vec())
}

async fn outcome(
    State(hq): State<Hq>,
    UrlPath(id): UrlPath<String>,
    Json(r): Json<UpdateReport>,
) -> StatusCode {
    assert_eq!(id, hq.offer.rollout);
    hq.reports.lock().expect("lock").push(r);
    StatusCode::NO_CONTENT
}

fn build(key_dir: &Path) -> Vec<u8> {
    let key = branchline_image::keys::read_signing_key(
        &key_dir.join(branchline_image::keys::PRIVATE_KEY_FILE),
    )
    .expect("signing key");
    let mut files = branchline_image::overlay::generate("bl-400").expect("overlay");
    files.push(BundleFile {
        path: "usr/bin/branchd".into(),
        // Large enough for several chunks.
        contents: (0..20_000u32).map(|i| (i * 31) as u8).collect(),
        mode: 0o755,
    });
    bundle::build(
        &BuildSpec {
            board: "bl-400".into(),
            target: "aarch64-unknown-linux-gnu".into(),
            version: "1.3.0".parse().expect("version"),
            min_version: "1.0.0".parse().expect("version"),
            build_time: 1_700_000_000,
            files,
        },
        &key,
    )
    .expect("build")
}

/// Runs the task against a stand-in HQ offering `bundle`; returns how it ended, the
/// reports HQ got, the ranges asked for, and the slots root.
async fn run(bundle: Vec<u8>, dir: &Path) -> (Ended, Vec<UpdateReport>, Vec<u64>, PathBuf) {
    let key_file = dir
        .join("pinned")
        .join(branchline_image::keys::PUBLIC_KEY_FILE);
    let hq = Hq {
        offer: Offer {
            rollout: "spring-1.3".into(),
            version: "1.3.0".into(),
            sha256: bundle::sha256_hex(&bundle),
            size: bundle.len() as u64,
            // Forced: the window is the core's business (unit tests); here it must not
            // depend on the time of day the test runs.
            forced: true,
        },
        bundle: Arc::new(bundle),
        failed_once: Arc::default(),
        ranges: Arc::default(),
        reports: Arc::default(),
    };
    let app = Router::new()
        .route(wire::UPDATE_PATH, get(offer))
        .route(&format!("{}/{{id}}/bundle", wire::UPDATE_PATH), get(chunk))
        .route(
            &format!("{}/{{id}}/outcome", wire::UPDATE_PATH),
            post(outcome),
        )
        .with_state(hq.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let slots = dir.join("slots");
    std::fs::create_dir_all(&slots).expect("slots");
    let (_calls_tx, calls_rx) = watch::channel(0usize);
    let task = UpdateTask {
        // Plain HTTP here; reqwest still wants a rustls provider chosen.
        client: reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("tls")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .build()
            .expect("client"),
        base: format!("http://{addr}"),
        timeout: Duration::from_secs(30),
        poll_interval: Duration::from_secs(3600),
        downloads: Downloads::open(dir).expect("downloads"),
        keys: vec![key_file],
        me: Identity {
            board: "bl-400".into(),
            target: "aarch64-unknown-linux-gnu".into(),
        },
        window: Window::parse("00:00-00:01").expect("window"),
        backend: SlotBackend::Dir {
            root: slots.clone(),
        },
        calls_up: calls_rx,
        trial_committed: watch::channel(false).1,
    };
    let stop = CancellationToken::new();
    let runner = tokio::spawn(task.run(stop.clone()));
    // Done when HQ has a final-or-installed report (generous: qemu-user in CI).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = hq
            .reports
            .lock()
            .expect("lock")
            .iter()
            .any(|r| matches!(r.state, OutcomeState::Installed | OutcomeState::Failed));
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        // A failed rollout keeps the task running (idle): stop it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        runner.await.expect("task")
    })
    .await
    .expect("task ends");
    server.abort();
    let reports = hq.reports.lock().expect("lock").clone();
    let ranges = hq.ranges.lock().expect("lock").clone();
    (ended, reports, ranges, slots)
}

#[tokio::test]
async fn downloads_resumes_after_a_failed_chunk_installs_reports_and_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pinned = tmp.path().join("pinned");
    branchline_image::keys::keygen(&pinned).expect("keygen");
    let bundle = build(&pinned);
    let size = bundle.len() as u64;
    assert!(size > 3 * CHUNK as u64, "bundle of {size} bytes");
    let (ended, reports, ranges, slots) = run(bundle, tmp.path()).await;
    assert_eq!(ended, Ended::Restart);
    let states: Vec<_> = reports.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        vec![
            OutcomeState::Downloading,
            OutcomeState::Staged,
            OutcomeState::Installed
        ]
    );
    assert_eq!(reports[2].version.as_deref(), Some("1.3.0"));
    // Every chunk from where the previous ended; the failed one asked for again.
    let c = CHUNK as u64;
    assert_eq!(&ranges[..4], &[0, c, 2 * c, 2 * c]);
    assert!(
        ranges.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + c),
        "{ranges:?}"
    );
    let state = DirSlots::new(&slots).load().expect("state");
    assert_eq!(
        state.slot(SlotId::B).status,
        SlotStatus::Pending { tries_left: 1 }
    );
    assert!(tmp.path().join("update/spring-1.3.bundle").exists());
    // The trial record for the next start.
    let record = super::trial::load(&tmp.path().join("update"))
        .expect("record readable")
        .expect("record written");
    assert_eq!(
        (
            record.rollout.as_str(),
            record.version.as_str(),
            record.slot
        ),
        ("spring-1.3", "1.3.0", SlotId::B)
    );
}

#[tokio::test]
async fn a_bundle_signed_by_another_key_is_reported_failed_and_slots_stay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pinned, other) = (tmp.path().join("pinned"), tmp.path().join("other"));
    branchline_image::keys::keygen(&pinned).expect("keygen");
    branchline_image::keys::keygen(&other).expect("keygen");
    let bundle = build(&other);
    let (ended, reports, _, slots) = run(bundle, tmp.path()).await;
    assert_eq!(ended, Ended::Stopped);
    let last = reports.last().expect("a report");
    assert_eq!(last.state, OutcomeState::Failed, "{reports:?}");
    assert!(
        last.reason.as_deref().unwrap_or("").contains("signature"),
        "{last:?}"
    );
    let state = DirSlots::new(&slots).load().expect("state");
    assert_eq!(state, branchline_image::slot::SlotState::default());
    assert!(
        !slots.join("slots/b").exists()
            || std::fs::read_dir(slots.join("slots/b")).expect("b").count() == 0
    );
    assert!(!tmp.path().join("update/spring-1.3.bundle").exists());
    assert_eq!(
        super::trial::load(&tmp.path().join("update")).expect("readable"),
        None,
        "nothing installed: no trial record"
    );
}

// --- after the restart: the trial record ------------------------------------------

use branchline_image::slot::{SlotInfo, SlotState};

use super::trial::{self, TrialRecord};

/// Bounds a wait for something that must happen (qemu-user in CI is slow).
const LONG: Duration = Duration::from_secs(60);

/// A running 1.2.0 in A, and 1.3.0 in B with `b`; `active` booted.
fn trial_state(active: SlotId, b: SlotStatus) -> SlotState {
    let v = |s: &str| s.parse().expect("version");
    SlotState {
        active,
        a: SlotInfo {
            status: SlotStatus::Good,
            version: Some(v("1.2.0")),
            min_version: Some(v("1.0.0")),
        },
        b: SlotInfo {
            status: b,
            version: Some(v("1.3.0")),
            min_version: Some(v("1.0.0")),
        },
        floor: Some(v("1.0.0")),
    }
}

/// Starts the task with a trial record of spring-1.3 in slot B and `state`, against
/// a stand-in HQ that still offers spring-1.3; `commit` fires the health check's
/// commit signal after start. Returns how it ended (stopped once `until` holds for
/// the reports or after `bound`, or at once if it ends by itself), the reports, the
/// ranges asked for.
async fn after_restart(
    dir: &Path,
    state: SlotState,
    commit: bool,
    until: impl Fn(&[UpdateReport]) -> bool,
    bound: Duration,
) -> (Ended, Vec<UpdateReport>, Vec<u64>) {
    let slots = dir.join("slots");
    DirSlots::new(&slots).save(&state).expect("state");
    let downloads = Downloads::open(dir).expect("downloads");
    trial::save(
        downloads.dir(),
        &TrialRecord {
            rollout: "spring-1.3".into(),
            version: "1.3.0".into(),
            slot: SlotId::B,
            failed: Some("sip: cannot bind".into()),
        },
    )
    .expect("record");
    std::fs::write(downloads.bundle("spring-1.3"), b"the bundle").expect("bundle");
    let hq = Hq {
        offer: Offer {
            rollout: "spring-1.3".into(),
            version: "1.3.0".into(),
            sha256: "00".repeat(32),
            size: 10,
            forced: true,
        },
        bundle: Arc::new(b"the bundle".to_vec()),
        failed_once: Arc::new(Mutex::new(true)),
        ranges: Arc::default(),
        reports: Arc::default(),
    };
    let app = Router::new()
        .route(wire::UPDATE_PATH, get(offer))
        .route(&format!("{}/{{id}}/bundle", wire::UPDATE_PATH), get(chunk))
        .route(
            &format!("{}/{{id}}/outcome", wire::UPDATE_PATH),
            post(outcome),
        )
        .with_state(hq.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (_calls_tx, calls_rx) = watch::channel(0usize);
    let (commit_tx, commit_rx) = watch::channel(false);
    let task = UpdateTask {
        client: reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("tls")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .build()
            .expect("client"),
        base: format!("http://{addr}"),
        timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        downloads,
        keys: Vec::new(),
        me: Identity {
            board: "bl-400".into(),
            target: "aarch64-unknown-linux-gnu".into(),
        },
        window: Window::parse("00:00-00:01").expect("window"),
        backend: SlotBackend::Dir { root: slots },
        calls_up: calls_rx,
        trial_committed: commit_rx,
    };
    let stop = CancellationToken::new();
    let mut runner = tokio::spawn(task.run(stop.clone()));
    if commit {
        commit_tx.send_replace(true);
    }
    let deadline = Instant::now() + bound;
    let ended = loop {
        if runner.is_finished() {
            break runner.await.expect("task");
        }
        let done = until(&hq.reports.lock().expect("lock"));
        if done || Instant::now() > deadline {
            // Several offer polls while the record was open (or after it closed).
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
            break tokio::time::timeout(Duration::from_secs(60), &mut runner)
                .await
                .expect("task ends")
                .expect("task");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.abort();
    let reports = hq.reports.lock().expect("lock").clone();
    let ranges = hq.ranges.lock().expect("lock").clone();
    (ended, reports, ranges)
}

#[tokio::test]
async fn installed_but_never_booted_restarts_again_and_reports_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = trial_state(SlotId::A, SlotStatus::Pending { tries_left: 1 });
    let (ended, reports, ranges) = after_restart(tmp.path(), state, false, |_| false, LONG).await;
    assert_eq!(ended, Ended::Restart);
    assert!(reports.is_empty() && ranges.is_empty(), "{reports:?}");
    let dir = tmp.path().join("update");
    assert!(
        trial::load(&dir).expect("readable").is_some(),
        "record kept"
    );
}

#[tokio::test]
async fn a_rolled_back_trial_is_reported_once_then_the_record_and_bundle_go() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = trial_state(SlotId::A, SlotStatus::Bad);
    let (ended, reports, ranges) =
        after_restart(tmp.path(), state, false, |r| !r.is_empty(), LONG).await;
    assert_eq!(ended, Ended::Stopped);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].state, OutcomeState::RolledBack);
    assert_eq!(reports[0].version.as_deref(), Some("1.3.0"));
    let reason = reports[0].reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("sip: cannot bind") && reason.contains("slot A runs again"),
        "{reason}"
    );
    // HQ still offering the rollout does not start it again.
    assert!(ranges.is_empty(), "{ranges:?}");
    let dir = tmp.path().join("update");
    assert_eq!(trial::load(&dir).expect("readable"), None);
    assert!(!dir.join("spring-1.3.bundle").exists());
}

#[tokio::test]
async fn a_trial_boot_is_reported_committed_once_the_health_check_commits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Not committed yet, and no signal within a second: nothing is reported, no offer
    // is taken up, the record stays.
    let state = trial_state(SlotId::B, SlotStatus::Pending { tries_left: 0 });
    let (ended, reports, ranges) =
        after_restart(tmp.path(), state, false, |_| false, Duration::from_secs(1)).await;
    assert_eq!(ended, Ended::Stopped);
    assert!(
        reports.is_empty() && ranges.is_empty(),
        "{reports:?} {ranges:?}"
    );
    assert!(trial::load(&tmp.path().join("update"))
        .expect("readable")
        .is_some());
    // The health check commits: `committed`, once.
    let (ended, reports, ranges) =
        after_restart(tmp.path(), state, true, |r| !r.is_empty(), LONG).await;
    assert_eq!(ended, Ended::Stopped);
    let states: Vec<_> = reports.iter().map(|r| r.state).collect();
    assert_eq!(states, vec![OutcomeState::Committed]);
    assert!(ranges.is_empty(), "{ranges:?}");
    assert_eq!(
        trial::load(&tmp.path().join("update")).expect("readable"),
        None
    );
}
