//! `/api/v1/recordings` in-process: scope per role (agent none, supervisor their
//! group's, quality inspector the site's, admin all), masking, listen vs download,
//! range requests, retention's 410, and audit rows.

use sha2::{Digest, Sha256};

use super::*;
use crate::recorder::index::{self, Finished};

/// A recorded call: a stereo WAV of `frames` 20 ms frames (a ramp, so every byte
/// position is distinct) registered under `call_id`; returns the row id and the bytes.
pub(super) fn add_recording(env: &Env, call_id: &str, frames: u64) -> (i64, Vec<u8>) {
    let db = env._dir.path().join("branchline.db");
    let dir = env._dir.path().join("recordings");
    std::fs::create_dir_all(&dir).expect("dir");
    let data_len = frames * crate::recorder::wav::FRAME_BYTES;
    let mut bytes = crate::recorder::wav::header(data_len).to_vec();
    bytes.extend((0..data_len).map(|i| (i * 7 % 251) as u8));
    let path = dir.join(format!("rec-{call_id}.wav"));
    std::fs::write(&path, &bytes).expect("file");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let conn = rusqlite::Connection::open(&db).expect("open");
    let registered = index::register_tx(
        &conn,
        &db,
        &Finished {
            path,
            call_id: call_id.to_owned(),
            started_at_ms: T0,
            data_len,
            port: Some(1),
            interrupted: false,
            sha256,
            size: bytes.len() as u64,
        },
        T0,
    )
    .expect("register");
    (registered.id, bytes)
}

/// Calls c1 (customer -> bob's 101) and c2 (cyd's 102 -> customer), each recorded,
/// and a recording cut by a crash (no CDR). Bob is in rita's group; rita administers it.
struct Fixture {
    env: Env,
    c1: i64,
    c1_bytes: Vec<u8>,
    c2: i64,
    crash: i64,
}

async fn fixture() -> Fixture {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let bob = env.user("bob", &["agent"], Some("101")).await;
    env.user("cyd", &["agent"], Some("102")).await;
    let rita = env.user("rita", &["supervisor"], Some("104")).await;
    env.user("sam", &["quality_inspector"], None).await;
    env.user("tom", &["technician"], None).await;
    let writer = env.accounts.writer();
    writer
        .insert_cdr(cdr("c1", CUSTOMER_IN, "101", Direction::Inbound))
        .await
        .expect("cdr");
    writer
        .insert_cdr(cdr("c2", "102", CUSTOMER_OUT, Direction::Outbound))
        .await
        .expect("cdr");
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "team", "description": "",
                    "members": [{ "user_id": bob.id, "is_group_admin": false },
                                { "user_id": rita.id, "is_group_admin": true }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (c1, c1_bytes) = add_recording(&env, "c1", 50);
    let (c2, _) = add_recording(&env, "c2", 10);
    let (crash, _) = add_recording(&env, "rec-1700000000000-p3", 5);
    Fixture {
        env,
        c1,
        c1_bytes,
        c2,
        crash,
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

fn audit_rows(env: &Env, action: &str) -> Vec<(String, String, String)> {
    let reader = env.accounts.reader().expect("reader");
    let mut stmt = reader
        .connection()
        .prepare(
            "SELECT actor, target, result FROM audit_log
              WHERE resource = 'recordings' AND action = ?1 ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows")
}

#[tokio::test]
async fn each_role_lists_the_recordings_its_scope_covers_with_numbers_masked() {
    let Fixture {
        env, c1, c2, crash, ..
    } = fixture().await;
    let since = format!("/api/v1/recordings?since={}", T0 - 1);
    for (who, expected, listen, download) in [
        ("ada", vec![crash, c2, c1], true, true),
        ("rita", vec![c1], true, true),
        ("sam", vec![crash, c2, c1], true, false),
    ] {
        let c = env.login(who).await;
        let r = env.get(&since, &c).await;
        assert_eq!(r.status, StatusCode::OK, "{who}: {}", r.text);
        let v = r.json();
        let mut got = ids(&v);
        let mut want = expected.clone();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{who}: {}", r.text);
        assert_eq!(v["total"], expected.len(), "{who}");
        for item in v["items"].as_array().expect("items") {
            assert_eq!(item["may_listen"], listen, "{who}");
            assert_eq!(item["may_download"], download, "{who}");
            assert_eq!(item["available"], true);
            assert_eq!(item["format"], "wav/pcm16/stereo");
            assert_eq!(
                item["audio_url"],
                json!(format!("/api/v1/recordings/{}/audio", item["id"]))
            );
        }
        let c1_item = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["id"] == c1)
            .expect("c1 listed")
            .clone();
        let caller = c1_item["call"]["caller"].as_str().expect("caller");
        match who {
            // The admin and the team's supervisor see the customer's number.
            "ada" | "rita" => assert_eq!(caller, CUSTOMER_IN, "{who}"),
            // The quality inspector never does.
            _ => {
                assert_eq!(caller, "138****5678", "{who}");
                assert!(!r.text.contains(CUSTOMER_IN) && !r.text.contains(CUSTOMER_OUT));
                assert!(!r.text.contains(&CUSTOMER_OUT[3..7]), "{}", r.text);
            }
        }
    }
    // The crash-cut recording has no call.
    let c = env.login("ada").await;
    let v = env
        .get(
            "/api/v1/recordings?since=0&call_id=rec-1700000000000-p3",
            &c,
        )
        .await
        .json();
    assert_eq!(ids(&v), [crash]);
    assert_eq!(v["items"][0]["call"], Value::Null);
    // Filters: one call; a window that holds none.
    let v = env
        .get("/api/v1/recordings?since=0&call_id=c2", &c)
        .await
        .json();
    assert_eq!(ids(&v), [c2]);
    let v = env
        .get(&format!("/api/v1/recordings?since={}", T0 + 1), &c)
        .await
        .json();
    assert_eq!(ids(&v), Vec::<i64>::new());
    // The default window is the last 7 days (the clock is T0 + 1 h).
    assert_eq!(
        ids(&env.get("/api/v1/recordings", &c).await.json()).len(),
        3
    );

    // No recordings.view at all: 403, audited as a denial.
    for who in ["bob", "tom"] {
        let c = env.login(who).await;
        let r = env.get("/api/v1/recordings?since=0", &c).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
    }
    assert!(
        audit_rows(&env, "view")
            .iter()
            .any(|(actor, _, result)| actor == "bob" && result == "denied"),
        "{:?}",
        audit_rows(&env, "view")
    );
    // Not logged in: 401.
    let r = env
        .send(
            Method::GET,
            "/api/v1/recordings",
            None,
            false,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_list_queries_are_400() {
    let Fixture { env, .. } = fixture().await;
    let c = env.login("ada").await;
    for q in [
        "limit=0",
        "limit=abc",
        "since=10&until=5",
        "call_id=",
        "colour=red",
    ] {
        let r = env.get(&format!("/api/v1/recordings?{q}"), &c).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
        assert!(r.json()["error"].is_string(), "{q}");
    }
}

#[tokio::test]
async fn audio_is_served_per_role_with_ranges_and_audited_once_per_playback() {
    let Fixture {
        env,
        c1,
        c1_bytes,
        c2,
        crash,
    } = fixture().await;
    let len = c1_bytes.len();
    let (rita, sam) = (env.login("rita").await, env.login("sam").await);

    // The whole file.
    let r = env
        .get(&format!("/api/v1/recordings/{c1}/audio"), &rita)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(r.headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(r.headers[header::CONTENT_LENGTH], len.to_string().as_str());
    assert!(r.headers.get(header::CONTENT_DISPOSITION).is_none());
    let whole = env
        .get_bytes(&format!("/api/v1/recordings/{c1}/audio"), &rita, &[])
        .await;
    assert_eq!(whole.2, c1_bytes);
    assert_eq!(audit_rows(&env, "listen").len(), 2);

    // Ranges: a seek in the middle, an open end, a suffix; not audited again.
    let uri = format!("/api/v1/recordings/{c1}/audio");
    for (range, start, end) in [
        ("bytes=100-199", 100, 199),
        ("bytes=1000-", 1000, len - 1),
        ("bytes=-44", len - 44, len - 1),
    ] {
        let (status, headers, body) = env.get_bytes(&uri, &sam, &[(header::RANGE, range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            headers[header::CONTENT_RANGE],
            format!("bytes {start}-{end}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(body, c1_bytes[start..=end], "{range}");
    }
    assert_eq!(audit_rows(&env, "listen").len(), 2, "seeks are not audited");
    // A player's first request (bytes=0-) is a playback: audited.
    let (status, _, body) = env
        .get_bytes(&uri, &sam, &[(header::RANGE, "bytes=0-")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, c1_bytes);
    let rows = audit_rows(&env, "listen");
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[2],
        ("sam".to_owned(), "c1".to_owned(), "ok".to_owned())
    );
    // Past the end: 416 with the length.
    let (status, headers, _) = env
        .get_bytes(&uri, &sam, &[(header::RANGE, "bytes=999999-")])
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes */{len}").as_str()
    );
    // Several ranges, or an If-Range for another version: the whole file.
    for extra in [
        vec![(header::RANGE, "bytes=0-1,5-9")],
        vec![(header::RANGE, "bytes=5-9"), (header::IF_RANGE, "\"old\"")],
    ] {
        let (status, _, body) = env.get_bytes(&uri, &sam, &extra).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), len);
    }

    // Download: the supervisor may (attachment), the quality inspector may not.
    let r = env
        .get(
            &format!("/api/v1/recordings/{c1}/audio?download=true"),
            &rita,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"recording-c1.wav\""
    );
    assert_eq!(audit_rows(&env, "download").len(), 1);
    let r = env
        .get(
            &format!("/api/v1/recordings/{c1}/audio?download=true"),
            &sam,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(audit_rows(&env, "download")
        .iter()
        .any(|(a, t, res)| a == "sam" && t == "c1" && res == "denied"));

    // Outside the supervisor's group (cyd's call, the crash-cut one): 403.
    for id in [c2, crash] {
        let r = env
            .get(&format!("/api/v1/recordings/{id}/audio"), &rita)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{id}: {}", r.text);
    }
    // An agent, even on their own call, and a technician: 403.
    for who in ["bob", "tom"] {
        let c = env.login(who).await;
        let r = env.get(&format!("/api/v1/recordings/{c1}/audio"), &c).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
    }
    // Unknown: 404; a bad query: 400.
    assert_eq!(
        env.get("/api/v1/recordings/999/audio", &sam).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(
            &format!("/api/v1/recordings/{c1}/audio?download=maybe"),
            &sam
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_file_deleted_by_retention_or_gone_is_410_and_listed_as_unavailable() {
    let Fixture { env, c1, c2, .. } = fixture().await;
    let db = env._dir.path().join("branchline.db");
    let dir = env._dir.path().join("recordings");
    // Retention with a 0-day window deletes every file and marks the rows.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let done = index::retention_pass(
        &conn,
        &db,
        &dir,
        T0 + 3_600_000,
        std::time::Duration::ZERO,
        false,
    )
    .expect("retention");
    assert_eq!(done.deleted, 3);
    let sam = env.login("sam").await;
    let r = env
        .get(&format!("/api/v1/recordings/{c1}/audio"), &sam)
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
    assert!(r.json()["error"]
        .as_str()
        .expect("error")
        .contains("deleted by retention"));
    let v = env.get("/api/v1/recordings?since=0", &sam).await.json();
    for item in v["items"].as_array().expect("items") {
        assert_eq!(item["available"], false);
        assert_eq!(item["audio_url"], Value::Null);
        assert!(item["deleted_at_ms"].is_i64());
    }
    // A row whose file vanished without retention: 410 too.
    conn.execute(
        "UPDATE recordings SET deleted_at_ms = NULL WHERE id = ?1",
        [c2],
    )
    .expect("unmark");
    let r = env
        .get(&format!("/api/v1/recordings/{c2}/audio"), &sam)
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
    assert!(r.json()["error"].as_str().expect("error").contains("gone"));
    // Nothing of either was audited as a listen.
    assert!(audit_rows(&env, "listen").is_empty());
}

impl Env {
    /// A GET with extra headers; the status, headers and raw body.
    async fn get_bytes(
        &self,
        uri: &str,
        c: &Client,
        extra: &[(header::HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::COOKIE, &c.cookie);
        for (name, value) in extra {
            req = req.header(name, *value);
        }
        let mut req = req.body(Body::empty()).expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let resp = router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, bytes.to_vec())
    }
}
