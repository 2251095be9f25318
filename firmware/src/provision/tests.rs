//! Apply tests against a real store (migrations included) in a temp dir, with bundles
//! signed by the provisioning crate's API: every refusal or failure leaves the store
//! exactly as it was, and the token usable.

use std::path::PathBuf;

use branchline_provisioning::bundle;
use branchline_provisioning::keys::{self, TrustedKeys};
use branchline_provisioning::site::SiteDescription;
use rusqlite::Connection;

use super::*;
use crate::store::Store;

const SERIAL: &str = "BL2418-00042";
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

struct Fixture {
    dir: tempfile::TempDir,
    conn: Connection,
    verifier: Verifier,
    key: PathBuf,
    site: SiteDescription,
    _store: Store,
}

fn site_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../provisioning/examples/site.toml"
    ))
    .expect("example site")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = keys::generate(&dir.path().join("hq-prov")).expect("key");
    let db = dir.path().join("branchd.db");
    let store = Store::open(&db).expect("store");
    let mut conn = Connection::open(&db).expect("conn");
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)
        .expect("timeout");
    let _ = &mut conn;
    let verifier = Verifier {
        keys: TrustedKeys::from_files(&[&files.public]).expect("trusted"),
        serial: SERIAL.parse().expect("serial"),
        revoked: RevocationList::default(),
    };
    Fixture {
        conn,
        verifier,
        key: files.private,
        site: SiteDescription::parse(&site_text()).expect("site"),
        _store: store,
        dir,
    }
}

impl Fixture {
    fn bundle(&self, issued: u64, valid_for: u64) -> Vec<u8> {
        let key = keys::read_signing_key(&self.key).expect("key");
        self.site
            .make_bundle(&key, issued, valid_for)
            .expect("bundle")
    }

    /// Everything apply may write, as text, to compare before/after.
    fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT field || '=' || value || '@' || bundle_sha256 FROM provisioned_settings ORDER BY field",
            "SELECT token_id || '@' || used_at_s FROM provisioning_used_tokens ORDER BY token_id",
            "SELECT sha256 || '@' || token_id || '@' || site FROM provisioning_bundles ORDER BY sha256",
        ] {
            let mut stmt = self.conn.prepare(sql).expect("prepare");
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows");
            out.push(rows.join("\n"));
        }
        out
    }

    fn setting(&self, field: &str) -> Option<serde_json::Value> {
        self.conn
            .query_row(
                "SELECT value FROM provisioned_settings WHERE field = ?1",
                [field],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .expect("query")
            .map(|v| serde_json::from_str(&v).expect("json"))
    }
}

fn refused(o: &Outcome) -> &str {
    match o {
        Outcome::Refused(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn applies_all_fields_in_one_go_and_marks_the_token_used() {
    let mut f = fixture();
    let bytes = f.bundle(NOW, 14 * DAY);
    let outcome = apply_bundle(&mut f.conn, &bytes, &f.verifier, NOW + 60);
    let Outcome::Applied { site, fields } = outcome else {
        panic!("not applied: {outcome:?}");
    };
    assert_eq!(site, "lyon-02");
    assert_eq!(fields.len(), 10);
    assert_eq!(f.setting("site"), Some(serde_json::json!("lyon-02")));
    assert_eq!(
        f.setting("hq_url"),
        Some(serde_json::json!("https://hq.example.com"))
    );
    let fxs = f.setting("fxs").expect("fxs");
    assert_eq!(fxs[0]["port"], 1);
    assert_eq!(fxs[0]["extension"], "201");
    assert_eq!(fxs[1]["extension"], "202");
    let token = f.setting("enrollment_token").expect("token");
    assert!(
        token.as_str().is_some_and(|t| t.starts_with("BL1:")),
        "{token}"
    );
    let opened = bundle::open(&bytes, &f.verifier.keys).expect("open");
    assert!(SqliteUsedTokens(&f.conn)
        .is_used(&opened.token.enrollment.token_id)
        .expect("used"));
    let sha: String = f
        .conn
        .query_row("SELECT sha256 FROM provisioning_bundles", [], |r| r.get(0))
        .expect("bundle row");
    assert_eq!(sha, sha256_hex(&bytes));
}

#[test]
fn the_same_bundle_again_is_a_no_op() {
    let mut f = fixture();
    let bytes = f.bundle(NOW, DAY);
    assert!(matches!(
        apply_bundle(&mut f.conn, &bytes, &f.verifier, NOW + 1),
        Outcome::Applied { .. }
    ));
    let before = f.snapshot();
    assert_eq!(
        apply_bundle(&mut f.conn, &bytes, &f.verifier, NOW + 2),
        Outcome::AlreadyApplied
    );
    assert_eq!(f.snapshot(), before);
}

#[test]
fn every_refusal_changes_nothing() {
    let mut f = fixture();
    // A first bundle applied, so "nothing changed" also means "old settings kept".
    let first = f.bundle(NOW, DAY);
    assert!(matches!(
        apply_bundle(&mut f.conn, &first, &f.verifier, NOW),
        Outcome::Applied { .. }
    ));
    let before = f.snapshot();
    let good = f.bundle(NOW + 10, DAY);

    // Tampered: one flipped byte in the JSON payload.
    let mut tampered = good.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let e = apply_bundle(&mut f.conn, &tampered, &f.verifier, NOW + 20);
    assert!(refused(&e).contains("refused"), "{e:?}");
    assert_eq!(f.snapshot(), before);

    // Truncated, and garbage.
    for bad in [&good[..good.len() - 1], b"not a bundle".as_slice(), &[]] {
        let e = apply_bundle(&mut f.conn, bad, &f.verifier, NOW + 20);
        refused(&e);
        assert_eq!(f.snapshot(), before);
    }

    // Signed by a key the box does not trust.
    let other = keys::generate(&f.dir.path().join("other")).expect("key");
    let other_key = keys::read_signing_key(&other.private).expect("key");
    let foreign = f.site.make_bundle(&other_key, NOW, DAY).expect("bundle");
    refused(&apply_bundle(&mut f.conn, &foreign, &f.verifier, NOW + 20));
    assert_eq!(f.snapshot(), before);

    // Expired.
    let e = apply_bundle(&mut f.conn, &good, &f.verifier, NOW + 10 + DAY);
    assert!(refused(&e).contains("expire"), "{e:?}");
    assert_eq!(f.snapshot(), before);

    // Another box's serial.
    let mut other_box = Verifier {
        keys: f.verifier.keys.clone(),
        serial: "BL2418-99999".parse().expect("serial"),
        revoked: RevocationList::default(),
    };
    let e = apply_bundle(&mut f.conn, &good, &other_box, NOW + 20);
    assert!(refused(&e).contains("BL2418-99999"), "{e:?}");
    assert_eq!(f.snapshot(), before);

    // Revoked.
    let token_id = bundle::open(&good, &f.verifier.keys)
        .expect("open")
        .token
        .enrollment
        .token_id;
    other_box.serial = SERIAL.parse().expect("serial");
    other_box
        .revoked
        .revoke(token_id, None, "stick lost", NOW + 15)
        .expect("revoke");
    let e = apply_bundle(&mut f.conn, &good, &other_box, NOW + 20);
    assert!(refused(&e).contains("revoked"), "{e:?}");
    assert_eq!(f.snapshot(), before);

    // Replay: the first bundle's token in a re-signed bundle with other bytes.
    let mut payload = bundle::open(&first, &f.verifier.keys)
        .expect("open")
        .payload;
    payload.issued_at += 1;
    let key = keys::read_signing_key(&f.key).expect("key");
    let replay = bundle::make(&payload, &key).expect("make");
    assert_ne!(sha256_hex(&replay), sha256_hex(&first));
    let e = apply_bundle(&mut f.conn, &replay, &f.verifier, NOW + 20);
    assert!(refused(&e).contains("used"), "{e:?}");
    assert_eq!(f.snapshot(), before);

    // The good one still applies afterwards: none of the above used its token.
    assert!(matches!(
        apply_bundle(&mut f.conn, &good, &f.verifier, NOW + 30),
        Outcome::Applied { .. }
    ));
    assert_ne!(f.snapshot(), before);
}

#[test]
fn a_store_failure_half_way_rolls_everything_back() {
    let mut f = fixture();
    let first = f.bundle(NOW, DAY);
    assert!(matches!(
        apply_bundle(&mut f.conn, &first, &f.verifier, NOW),
        Outcome::Applied { .. }
    ));
    let before = f.snapshot();
    // The write of the 7th field fails (as a full disk would), after the token was
    // marked used, the bundle recorded and the old settings deleted.
    f.conn
        .execute_batch(
            "CREATE TRIGGER fail_trunk BEFORE INSERT ON provisioned_settings \
             WHEN NEW.field = 'trunk' BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .expect("trigger");
    let good = f.bundle(NOW + 10, DAY);
    let e = apply_bundle(&mut f.conn, &good, &f.verifier, NOW + 20);
    assert!(refused(&e).contains("disk full"), "{e:?}");
    assert_eq!(f.snapshot(), before);
    f.conn
        .execute_batch("DROP TRIGGER fail_trunk;")
        .expect("drop trigger");
    assert!(matches!(
        apply_bundle(&mut f.conn, &good, &f.verifier, NOW + 30),
        Outcome::Applied { .. }
    ));
}

#[test]
fn process_file_writes_the_result_next_to_the_bundle() {
    let mut f = fixture();
    let stick = f.dir.path().join("usb");
    std::fs::create_dir(&stick).expect("stick");
    let path = stick.join(bundle::FILE_NAME);
    let bytes = f.bundle(NOW, DAY);
    std::fs::write(&path, &bytes).expect("write");
    assert_eq!(find_bundles(&f.dir.path().join("usb")), vec![path.clone()]);
    assert_eq!(find_bundles(f.dir.path()), vec![path.clone()]);

    let result_path = stick.join(format!("branchline-result-{SERIAL}.json"));
    let read = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&result_path).expect("result")).expect("json")
    };
    assert!(matches!(
        process_file(&mut f.conn, &path, &f.verifier, NOW),
        Outcome::Applied { .. }
    ));
    let r = read();
    assert_eq!(r["status"], "applied");
    assert_eq!(r["serial"], SERIAL);
    assert_eq!(r["bundle_sha256"], sha256_hex(&bytes));
    assert_eq!(r["applied"].as_array().map(Vec::len), Some(10));

    assert_eq!(
        process_file(&mut f.conn, &path, &f.verifier, NOW + 1),
        Outcome::AlreadyApplied
    );
    assert_eq!(read()["status"], "already_applied");

    let mut bad = f.bundle(NOW + 5, DAY);
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    std::fs::write(&path, &bad).expect("write");
    let before = f.snapshot();
    refused(&process_file(&mut f.conn, &path, &f.verifier, NOW + 6));
    let r = read();
    assert_eq!(r["status"], "refused");
    assert_eq!(r["bundle_sha256"], sha256_hex(&bad));
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert_eq!(f.snapshot(), before);
    // No temp file left behind.
    let names: Vec<_> = std::fs::read_dir(&stick)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn oversized_files_are_refused_unread() {
    let mut f = fixture();
    let path = f.dir.path().join(bundle::FILE_NAME);
    std::fs::write(
        &path,
        vec![0u8; usize::try_from(MAX_BUNDLE_BYTES).expect("size") + 1],
    )
    .expect("write");
    let e = process_file(&mut f.conn, &path, &f.verifier, NOW);
    assert!(refused(&e).contains("larger"), "{e:?}");
}

#[test]
fn led_patterns_blink_then_settle() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ptx, prx) = std_mpsc::channel();
    let t = std::thread::spawn(move || drive_led(&tx, &prx));
    ptx.send((LedPattern::Error, Some(Duration::from_millis(600))))
        .expect("send");
    std::thread::sleep(Duration::from_millis(50));
    drop(ptx);
    t.join().expect("led thread");
    let mut states = Vec::new();
    while let Ok(s) = rx.try_recv() {
        states.push(s);
    }
    // Starts steady, goes off for the blink, ends steady on.
    assert_eq!(states.first(), Some(&true));
    assert!(states.contains(&false), "{states:?}");
    assert_eq!(states.last(), Some(&true));
}

#[test]
fn a_token_takes_the_bundle_path_and_shares_its_replay_record() {
    let mut f = fixture();
    let key = keys::read_signing_key(&f.key).expect("key");
    // A stick first: the state says USB, with every field.
    let stick = f.bundle(NOW, DAY);
    assert!(matches!(
        apply_bundle(&mut f.conn, &stick, &f.verifier, NOW),
        Outcome::Applied { .. }
    ));
    let st = state::provisioned(&f.conn)
        .expect("state")
        .expect("provisioned");
    assert_eq!(st.source, Source::Usb);
    assert_eq!(st.fields.len(), 10);
    assert_eq!(st.site, "lyon-02");

    // Then a token: the same apply (checks, one transaction), enrollment fields only,
    // replacing the stick's settings; the state says token.
    let text = f.site.make_token(&key, NOW + 10, DAY).expect("token");
    let opened = open_token(&format!("  {text}\n"), &f.verifier).expect("opened");
    assert_eq!(opened.source(), Source::Token);
    assert_eq!(opened.sha256, sha256_hex(text.as_bytes()));
    let tx = f
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("tx");
    let outcome = apply_opened(&tx, &opened, &f.verifier, NOW + 20).expect("applied");
    tx.commit().expect("commit");
    assert_eq!(
        outcome,
        Outcome::Applied {
            site: "lyon-02".into(),
            fields: vec!["site", "hq_url", "ca_pin", "enrollment_token"],
        }
    );
    let st = state::provisioned(&f.conn)
        .expect("state")
        .expect("provisioned");
    assert_eq!(st.source, Source::Token);
    assert_eq!(st.applied_at_s, i64::try_from(NOW + 20).expect("time"));
    assert_eq!(f.setting("country"), None);
    assert_eq!(f.setting("enrollment_token"), Some(serde_json::json!(text)));
    // The enrollment step reads the same fields it reads after a stick.
    let pending = crate::enroll::pending(&f.conn, f.dir.path())
        .expect("pending")
        .expect("waits for enrollment");
    assert_eq!(pending.token, text);

    // The same token again: already applied, nothing written; a bundle carrying a
    // token already used by a token apply is refused as replayed.
    let before = f.snapshot();
    assert_eq!(
        precheck(&f.conn, &opened, &f.verifier, NOW + 30).expect("precheck"),
        Some(Outcome::AlreadyApplied)
    );
    let tx = f
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("tx");
    assert_eq!(
        apply_opened(&tx, &opened, &f.verifier, NOW + 30).expect("no-op"),
        Outcome::AlreadyApplied
    );
    drop(tx);
    assert_eq!(f.snapshot(), before);
    let mut payload: branchline_provisioning::payload::BundlePayload = serde_json::from_slice(
        branchline_provisioning::envelope::open(
            branchline_provisioning::envelope::Kind::Bundle,
            &f.bundle(NOW + 40, DAY),
            &f.verifier.keys,
        )
        .expect("envelope")
        .payload,
    )
    .expect("payload");
    payload.token = text;
    let replayed = bundle::make(&payload, &key).expect("bundle");
    let e = apply_bundle(&mut f.conn, &replayed, &f.verifier, NOW + 50);
    assert!(refused(&e).contains("already used"), "{e:?}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn token_refusals_name_their_reason_and_change_nothing() {
    let f = fixture();
    let key = keys::read_signing_key(&f.key).expect("key");
    let before = f.snapshot();
    let reason = |r: Result<Opened, Refused>| r.expect_err("refused").reason;
    assert_eq!(reason(open_token("hello", &f.verifier)), Reason::Invalid);
    let text = f.site.make_token(&key, NOW, DAY).expect("token");
    assert_eq!(
        reason(open_token(&text[..text.len() - 3], &f.verifier)),
        Reason::Invalid
    );
    let opened = open_token(&text, &f.verifier).expect("opened");
    let check = |v: &Verifier, now| match precheck(&f.conn, &opened, v, now) {
        Err(ApplyError::Refused(r)) => r.reason,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(check(&f.verifier, NOW + DAY), Reason::Expired);
    let other_box = Verifier {
        keys: f.verifier.keys.clone(),
        serial: "BL2418-99999".parse().expect("serial"),
        revoked: RevocationList::default(),
    };
    assert_eq!(check(&other_box, NOW + 1), Reason::WrongSerial);
    let mut revoked = RevocationList::default();
    revoked
        .revoke(opened.token.enrollment.token_id, None, "lost", NOW)
        .expect("revoke");
    let revoking = Verifier {
        keys: f.verifier.keys.clone(),
        serial: SERIAL.parse().expect("serial"),
        revoked,
    };
    assert_eq!(check(&revoking, NOW + 1), Reason::Revoked);
    assert_eq!(f.snapshot(), before);
}
