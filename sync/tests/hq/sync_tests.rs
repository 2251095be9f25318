//! Upload, feed, edits, files, admin: each scenario on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use branchline_sync::wire::{
    EditOp, Entity, EntityEdit, Group, RecordKind, RecordingMeta, UpRecord, User, DOWN_PATH,
    FILES_PATH,
};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::harness::{Backend, Env};
use crate::both_stores;

fn user(name: &str, display: &str) -> Value {
    json!({
        "username": name, "display_name": display, "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "pin_hash": null, "agent_id": "101", "extension": "201", "enabled": true,
        "must_change_password": false, "roles": ["agent"], "groups": [{"group": "team", "admin": false}]
    })
}

async fn idempotent_upload(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let batch = b1.cdr_batch(1..=50);
    let (status, first) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["acked_seq"], 50);
    let (status, second) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200);
    assert_eq!(second, first, "same batch twice, same answer");
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (50, 50));
    // Health was recorded.
    let (_, boxes) = env.hq.admin(Method::GET, "/admin/v1/boxes", None).await;
    let b = boxes
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "b1")
        .unwrap();
    assert_eq!(b["firmware_version"], "1.2.3");
    assert_eq!(b["backlog"], 7);
    assert!(b["last_seen_ms"].as_i64().unwrap() > 0);
    assert!(b["oldest_pending_age_ms"].as_i64().unwrap() > 0);
    env.hq.stop().await;
}
both_stores!(idempotent_upload);

async fn gaps_hold_the_ack(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let (_, ack) = b1.post(&env.hq, &b1.cdr_batch(1..=10)).await;
    assert_eq!(ack["acked_seq"], 10);
    let (_, ack) = b1.post(&env.hq, &b1.cdr_batch(21..=30)).await;
    assert_eq!(ack["acked_seq"], 10, "21..30 held, 11..20 missing");
    let (_, ack) = b1.post(&env.hq, &b1.cdr_batch(11..=20)).await;
    assert_eq!(ack["acked_seq"], 30, "gap filled");
    // Another epoch (factory reset) starts its own count.
    let mut reset = b1.cdr_batch([1, 2]);
    reset.epoch = "epoch-2".into();
    reset.records.iter_mut().for_each(|r| {
        r.key = format!("{}-e2", r.key);
        r.payload["call_id"] = json!(r.key);
    });
    let (_, ack) = b1.post(&env.hq, &reset).await;
    assert_eq!(ack["acked_seq"], 2);
    assert_eq!(env.hq.store.counts("b1").await.unwrap().cdrs, 32);
    env.hq.stop().await;
}
both_stores!(gaps_hold_the_ack);

async fn malformed_batch_is_refused_whole(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    // Record 3 is not a CDR.
    let mut batch = b1.cdr_batch(1..=5);
    batch.records[2].payload["disposition"] = json!("exploded");
    let (status, body) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "malformed_batch");
    assert!(
        body["message"].as_str().unwrap().contains("seq 3"),
        "{body}"
    );
    // Seqs out of order.
    let batch = b1.cdr_batch([1, 3, 2]);
    let (status, body) = b1.post(&env.hq, &batch).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("malformed_batch"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("strictly increasing"),
        "{body}"
    );
    // seq 0.
    let (status, _) = b1.post(&env.hq, &b1.cdr_batch([0, 1])).await;
    assert_eq!(status, 400);
    // An edit whose row is not valid (password in clear).
    let mut u: User = serde_json::from_value(user("eve", "Eve")).unwrap();
    u.password_hash = "hunter2".into();
    let edit = EntityEdit {
        op: EditOp::Create,
        base_revision: 0,
        row: Entity::User(u),
    };
    let mut batch = b1.cdr_batch(1..=2);
    batch.records.push(UpRecord {
        seq: 3,
        kind: RecordKind::UserChange,
        key: "eve".into(),
        created_at_ms: 1,
        payload: serde_json::to_value(&edit).unwrap(),
    });
    let (status, body) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("password_hash"),
        "{body}"
    );
    // Wrong version.
    let mut batch = b1.cdr_batch(1..=2);
    batch.version = 99;
    let (status, body) = b1.post(&env.hq, &batch).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unsupported_version"))
    );
    // Not gzip, and a gzip bomb.
    let (status, body) = b1
        .post_raw(&env.hq, b"not gzip at all".to_vec())
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("malformed_batch"))
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut bomb, &vec![b' '; 8 * 1024 * 1024]).unwrap();
    let (status, body) = b1.post_raw(&env.hq, bomb.finish().unwrap()).await.unwrap();
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (0, 0), "nothing stored");
    assert!(env
        .hq
        .store
        .entity("s1", branchline_sync::wire::EntityKind::User, "eve")
        .await
        .unwrap()
        .is_none());
    env.hq.stop().await;
}
both_stores!(malformed_batch_is_refused_whole);

async fn another_boxs_id_is_refused(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let _b2 = env.new_box("b2", "s2").await;
    let mut batch = b1.cdr_batch(1..=3);
    batch.box_id = "b2".into();
    let (status, body) = b1.post(&env.hq, &batch).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("unknown_box")),
        "{body}"
    );
    for b in ["b1", "b2"] {
        assert_eq!(env.hq.store.counts(b).await.unwrap().up_records, 0);
    }
    env.hq.stop().await;
}
both_stores!(another_boxs_id_is_refused);

async fn long_poll_returns_when_an_admin_changes_a_row(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    // Empty site: a page, not a snapshot.
    let (status, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since=0&wait_ms=50"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(page["type"], "page");
    let started = Instant::now();
    let poll = {
        let url = format!("{DOWN_PATH}?since=0&wait_ms=20000");
        let hq_port = env.hq.sync_addr.port();
        let http = b1.http.clone();
        tokio::spawn(async move {
            let resp = http
                .get(format!("https://127.0.0.1:{hq_port}{url}"))
                .send()
                .await
                .unwrap();
            resp.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, change) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/user/alice",
            Some(user("alice", "Alice")),
        )
        .await;
    assert_eq!(status, 200, "{change}");
    let got = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // since=0 with a row present: a snapshot of the site.
    assert_eq!(got["type"], "snapshot", "{got}");
    let cursor = got["cursor"].as_i64().unwrap();
    assert_eq!(cursor, change["revision"].as_i64().unwrap());
    assert_eq!(got["rows"][0]["row"]["username"], "alice");
    // From the cursor: wait for the next change, a page.
    let poll = {
        let url = format!(
            "https://127.0.0.1:{}{DOWN_PATH}?since={cursor}&wait_ms=20000",
            env.hq.sync_addr.port()
        );
        let http = b1.http.clone();
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/group/team",
            Some(json!({"name": "team", "description": "Team"})),
        )
        .await;
    assert_eq!(status, 200);
    let got = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["type"], "page", "{got}");
    assert_eq!(got["changes"][0]["key"], "team");
    assert_eq!(got["more"], false);
    // Another site's change is not in s1's feed.
    let (status, _) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s2/group/other",
            Some(json!({"name": "other", "description": ""})),
        )
        .await;
    assert_eq!(status, 200);
    let c2 = got["cursor"].as_i64().unwrap();
    let (_, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since={c2}&wait_ms=300"))
        .await
        .unwrap();
    assert_eq!(page["changes"].as_array().unwrap().len(), 0, "{page}");
    // Bad payloads are refused by the admin API.
    let mut bad = user("bob", "Bob");
    bad["password_hash"] = json!("plain");
    let (status, body) = env
        .hq
        .admin(Method::PUT, "/admin/v1/sites/s1/user/bob", Some(bad))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/user/carol",
            Some(user("bob", "Bob")),
        )
        .await;
    assert_eq!(status, 400, "key mismatch");
    env.hq.stop().await;
}
both_stores!(long_poll_returns_when_an_admin_changes_a_row);

async fn snapshot_when_the_cursor_was_pruned(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    for name in ["a", "b", "c"] {
        let (s, _) = env
            .hq
            .admin(
                Method::PUT,
                &format!("/admin/v1/sites/s1/group/{name}"),
                Some(json!({"name": name, "description": ""})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (_, snap) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since=0"))
        .await
        .unwrap();
    let old_cursor = snap["cursor"].as_i64().unwrap();
    assert_eq!(snap["rows"].as_array().unwrap().len(), 3);
    // Pages of one change at a time.
    let (_, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since=0&limit=1&wait_ms=0"))
        .await
        .unwrap();
    assert_eq!(
        page["type"], "snapshot",
        "since=0 is always a snapshot once rows exist"
    );
    let first_rev = snap["rows"][0]["revision"].as_i64().unwrap();
    let (_, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since={first_rev}&limit=1"))
        .await
        .unwrap();
    assert_eq!(
        (page["type"].as_str(), page["more"].as_bool()),
        (Some("page"), Some(true)),
        "{page}"
    );
    // b is deleted, d added, then everything is pruned.
    let (s, _) = env
        .hq
        .admin(Method::DELETE, "/admin/v1/sites/s1/group/b", None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/group/d",
            Some(json!({"name": "d", "description": ""})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, pruned) = env
        .hq
        .admin(
            Method::POST,
            "/admin/v1/feed/prune",
            Some(json!({"keep_revisions": 0})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(pruned["pruned"].as_u64().unwrap() >= 5, "{pruned}");
    let (_, got) = b1
        .get(
            &env.hq,
            &format!("{DOWN_PATH}?since={old_cursor}&wait_ms=0"),
        )
        .await
        .unwrap();
    assert_eq!(got["type"], "snapshot", "{got}");
    let names: Vec<&str> = got["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c", "d"]);
    // From the snapshot's cursor: an (empty) page, not another snapshot.
    let c = got["cursor"].as_i64().unwrap();
    let (_, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since={c}&wait_ms=0"))
        .await
        .unwrap();
    assert_eq!(page["type"], "page", "{page}");
    // A cursor from another database (ahead of HQ): a snapshot.
    let (_, got) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since=999999&wait_ms=0"))
        .await
        .unwrap();
    assert_eq!(got["type"], "snapshot");
    env.hq.stop().await;
}
both_stores!(snapshot_when_the_cursor_was_pruned);

fn edit_record(seq: i64, op: EditOp, base: i64, row: Entity) -> UpRecord {
    let kind = match &row {
        Entity::User(_) => RecordKind::UserChange,
        Entity::Group(_) => RecordKind::GroupChange,
        _ => RecordKind::RoleChange,
    };
    UpRecord {
        seq,
        kind,
        key: row.key().to_owned(),
        created_at_ms: 1,
        payload: serde_json::to_value(EntityEdit {
            op,
            base_revision: base,
            row,
        })
        .unwrap(),
    }
}

async fn offline_edits_apply_or_conflict(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let (_, created) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/user/alice",
            Some(user("alice", "Alice")),
        )
        .await;
    let base = created["revision"].as_i64().unwrap();
    // The box changes Alice's display name based on the current revision: applied.
    let alice: User = serde_json::from_value(user("alice", "Alice (box)")).unwrap();
    let team = Group {
        name: "night".into(),
        description: "created on the box".into(),
    };
    let batch = b1.batch(vec![
        edit_record(1, EditOp::Update, base, Entity::User(alice.clone())),
        edit_record(2, EditOp::Create, 0, Entity::Group(team)),
    ]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 2);
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 0, "{ack}");
    let (_, now) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/user/alice", None)
        .await;
    assert_eq!(now["row"]["display_name"], "Alice (box)");
    let applied_rev = now["revision"].as_i64().unwrap();
    assert!(applied_rev > base);
    let (s, _) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/group/night", None)
        .await;
    assert_eq!(s, 200);
    // The change is in the site's feed.
    let (_, page) = b1
        .get(&env.hq, &format!("{DOWN_PATH}?since={base}&wait_ms=0"))
        .await
        .unwrap();
    assert_eq!(page["changes"].as_array().unwrap().len(), 2, "{page}");
    // Meanwhile HQ changes Alice again; a box edit on the old base conflicts.
    let (_, hq_change) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/user/alice",
            Some(user("alice", "Alice (HQ)")),
        )
        .await;
    let stale = b1.batch(vec![edit_record(
        3,
        EditOp::Update,
        applied_rev,
        Entity::User(alice),
    )]);
    let (_, ack) = b1.post(&env.hq, &stale).await;
    assert_eq!(ack["acked_seq"], 3, "a rejected edit is still received");
    let conflicts = ack["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{ack}");
    assert_eq!(conflicts[0]["seq"], 3);
    assert_eq!(conflicts[0]["base_revision"], applied_rev);
    assert_eq!(conflicts[0]["current"]["revision"], hq_change["revision"]);
    assert_eq!(conflicts[0]["current"]["row"]["display_name"], "Alice (HQ)");
    // Sent again (lost answer): the same conflict, nothing applied twice.
    let (_, again) = b1.post(&env.hq, &stale).await;
    assert_eq!(again, ack);
    let (_, now) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/user/alice", None)
        .await;
    assert_eq!(now["row"]["display_name"], "Alice (HQ)");
    // Deleting a row HQ deleted: conflict with no current row.
    env.hq
        .admin(Method::DELETE, "/admin/v1/sites/s1/group/night", None)
        .await;
    let gone = Group {
        name: "night".into(),
        description: "x".into(),
    };
    let (_, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![edit_record(4, EditOp::Update, 5, Entity::Group(gone))]),
        )
        .await;
    assert_eq!(ack["conflicts"][0]["current"], Value::Null, "{ack}");
    // The edit went to the box's own site only.
    let (_, s2) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s2/user", None)
        .await;
    assert_eq!(s2.as_array().unwrap().len(), 0);
    env.hq.stop().await;
}
both_stores!(offline_edits_apply_or_conflict);

async fn a_boxs_consecutive_offline_edits_are_not_conflicts(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let b2 = env.new_box("b2", "s1").await;
    let carl = |name: &str| -> Entity {
        Entity::User(serde_json::from_value(user("carl", name)).unwrap())
    };
    let display = |env_hq: Value| env_hq["row"]["display_name"].clone();
    // Made on b1 while offline and edited twice before any of it came back down: all
    // three edits carry base revision 0, in one batch and then in a later one.
    let (status, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![
                edit_record(1, EditOp::Create, 0, carl("Carl")),
                edit_record(2, EditOp::Update, 0, carl("Carl (2nd edit)")),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 0, "{ack}");
    let (_, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![edit_record(
                3,
                EditOp::Update,
                0,
                carl("Carl (3rd edit)"),
            )]),
        )
        .await;
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 0, "{ack}");
    let (_, now) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/user/carl", None)
        .await;
    assert_eq!(display(now.clone()), "Carl (3rd edit)");
    let own_rev = now["revision"].as_i64().unwrap();
    // Another box of the site never saw b1's rows: its edit on base 0 conflicts.
    let (_, ack) = b2
        .post(
            &env.hq,
            &b2.batch(vec![edit_record(1, EditOp::Update, 0, carl("Carl (b2)"))]),
        )
        .await;
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 1, "{ack}");
    assert_eq!(ack["conflicts"][0]["current"]["revision"], own_rev);
    // An operator's change ends b1's run: b1's next edit on its old base conflicts,
    // one based on the operator's revision applies.
    let (_, op) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/user/carl",
            Some(user("carl", "Carl (HQ)")),
        )
        .await;
    let op_rev = op["revision"].as_i64().unwrap();
    let (_, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![edit_record(
                4,
                EditOp::Update,
                own_rev,
                carl("Carl (stale)"),
            )]),
        )
        .await;
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 1, "{ack}");
    assert_eq!(
        ack["conflicts"][0]["current"]["row"]["display_name"],
        "Carl (HQ)"
    );
    let (_, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![
                edit_record(5, EditOp::Update, op_rev, carl("Carl (on HQ's)")),
                edit_record(6, EditOp::Update, op_rev, carl("Carl (and again)")),
            ]),
        )
        .await;
    assert_eq!(ack["conflicts"].as_array().unwrap().len(), 0, "{ack}");
    let (_, now) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/user/carl", None)
        .await;
    assert_eq!(display(now), "Carl (and again)");
    // Sent again after a lost answer: nothing applied twice, no conflict invented.
    let (_, again) = b1
        .post(
            &env.hq,
            &b1.batch(vec![edit_record(
                5,
                EditOp::Update,
                op_rev,
                carl("Carl (on HQ's)"),
            )]),
        )
        .await;
    assert_eq!(again["conflicts"].as_array().unwrap().len(), 0, "{again}");
    let (_, now) = env
        .hq
        .admin(Method::GET, "/admin/v1/sites/s1/user/carl", None)
        .await;
    assert_eq!(display(now), "Carl (and again)");
    env.hq.stop().await;
}
both_stores!(a_boxs_consecutive_offline_edits_are_not_conflicts);

async fn files_resume_and_verify(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&data));
    let bogus = "0".repeat(64);
    let meta = |seq: i64, sha: &str, size: u64| UpRecord {
        seq,
        kind: RecordKind::Recording,
        key: format!("rec-{seq}"),
        created_at_ms: 1,
        payload: serde_json::to_value(RecordingMeta {
            call_id: format!("call-{seq}"),
            sha256: sha.to_owned(),
            size,
            started_at_ms: 1,
            duration_ms: 1000,
            format: "wav/pcm16/stereo".into(),
        })
        .unwrap(),
    };
    let (s, p) = env
        .hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/file-policy",
            Some(json!({"mode": "all"})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    // A chunk before the metadata is refused.
    let (s, body) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset=0"),
            data[..10].to_vec(),
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (404, Some("bad_chunk")));
    let (_, ack) = b1
        .post(
            &env.hq,
            &b1.batch(vec![meta(1, &sha, data.len() as u64), meta(2, &bogus, 100)]),
        )
        .await;
    assert_eq!(ack["file_policy"]["mode"], "all", "{ack}");
    let mib = 1024 * 1024;
    let (s, st) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset=0"),
            data[..mib].to_vec(),
        )
        .await;
    assert_eq!(
        (s, st["received"].as_u64()),
        (200, Some(mib as u64)),
        "{st}"
    );
    // An interrupted chunk: headers promise 1 MiB, 100 KiB arrive, the connection drops.
    {
        let tcp = tokio::net::TcpStream::connect(env.hq.sync_addr)
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(b1.tls.clone());
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let head = format!(
            "PUT {FILES_PATH}/{sha}?offset={mib} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {mib}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&data[mib..mib + 100 * 1024]).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tls);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, st) = b1
        .get(&env.hq, &format!("{FILES_PATH}/{sha}"))
        .await
        .unwrap();
    assert_eq!(
        (st["received"].as_u64(), st["complete"].as_bool()),
        (Some(mib as u64), Some(false)),
        "{st}"
    );
    // Wrong offset, too large a chunk: refused.
    let (s, body) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset=5"),
            data[5..10].to_vec(),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (409, Some("bad_chunk")),
        "{body}"
    );
    let (s, _) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset={mib}"),
            vec![0; mib + 1],
        )
        .await;
    assert_eq!(s, 413);
    // Resume and finish.
    let (s, _) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset={mib}"),
            data[mib..2 * mib].to_vec(),
        )
        .await;
    assert_eq!(s, 200);
    let (s, st) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{sha}?offset={}", 2 * mib),
            data[2 * mib..].to_vec(),
        )
        .await;
    assert_eq!((s, st["complete"].as_bool()), (200, Some(true)), "{st}");
    assert_eq!(std::fs::read(env.hq.files_dir.join(&sha)).unwrap(), data);
    // A file whose bytes do not match its sha256: refused and discarded.
    let (s, body) = b1
        .put(
            &env.hq,
            &format!("{FILES_PATH}/{bogus}?offset=0"),
            vec![1; 100],
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (422, Some("bad_chunk")),
        "{body}"
    );
    let (_, st) = b1
        .get(&env.hq, &format!("{FILES_PATH}/{bogus}"))
        .await
        .unwrap();
    assert_eq!(
        (st["received"].as_u64(), st["complete"].as_bool()),
        (Some(0), Some(false))
    );
    assert!(!env.hq.files_dir.join(&bogus).exists());
    env.hq.stop().await;
}
both_stores!(files_resume_and_verify);

async fn cdr_queries_and_reports(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let b2 = env.new_box("b2", "s2").await;
    b1.post(&env.hq, &b1.cdr_batch(1..=30)).await;
    b2.post(&env.hq, &b2.cdr_batch(1..=10)).await;
    let (_, page) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?site=s1&limit=20", None)
        .await;
    assert_eq!(page["cdrs"].as_array().unwrap().len(), 20);
    let next = page["next"].as_i64().unwrap();
    let (_, page2) = env
        .hq
        .admin(
            Method::GET,
            &format!("/admin/v1/cdrs?site=s1&limit=20&after={next}"),
            None,
        )
        .await;
    assert_eq!(page2["cdrs"].as_array().unwrap().len(), 10);
    assert_eq!(page2["next"], Value::Null);
    let (_, by_box) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?box=b2", None)
        .await;
    assert_eq!(by_box["cdrs"].as_array().unwrap().len(), 10);
    assert_eq!(by_box["cdrs"][0]["site"], "s2");
    let from = 1_700_000_000_000i64 + 5 * 60_000;
    let to = 1_700_000_000_000i64 + 10 * 60_000;
    let (_, window) = env
        .hq
        .admin(
            Method::GET,
            &format!("/admin/v1/cdrs?from_ms={from}&to_ms={to}"),
            None,
        )
        .await;
    assert_eq!(
        window["cdrs"].as_array().unwrap().len(),
        10,
        "seqs 5..9 of both boxes"
    );
    let (_, report) = env
        .hq
        .admin(Method::GET, "/admin/v1/reports/daily", None)
        .await;
    let rows = report.as_array().unwrap();
    let total: i64 = rows.iter().map(|r| r["calls"].as_i64().unwrap()).sum();
    let answered: i64 = rows.iter().map(|r| r["answered"].as_i64().unwrap()).sum();
    let missed: i64 = rows.iter().map(|r| r["missed"].as_i64().unwrap()).sum();
    assert_eq!((total, answered, missed), (40, 20, 20), "{report}");
    let (s, body) = env
        .hq
        .admin(Method::GET, "/admin/v1/cdrs?bogus=1", None)
        .await;
    assert_eq!(s, 400, "{body}");
    // Without the token: 401.
    let resp = reqwest::get(format!("http://{}/admin/v1/sites", env.hq.admin_addr))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    env.hq.stop().await;
}
both_stores!(cdr_queries_and_reports);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_postgres_store_each_record_once() {
    let env = Env::start(Backend::Postgres).await;
    let second = env.second_instance().await;
    let b1 = std::sync::Arc::new(env.new_box("b1", "s1").await);
    // 40 batches of 50 covering 1..=2000, each sent to both instances at once,
    // four senders in parallel, so the same rows race into the database.
    let mut tasks = Vec::new();
    for sender in 0..4i64 {
        let b1 = std::sync::Arc::clone(&b1);
        let ports = (env.hq.sync_addr.port(), second.sync_addr.port());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for chunk in (0..40i64).filter(|c| c % 4 == sender) {
                let batch = b1.cdr_batch(chunk * 50 + 1..=chunk * 50 + 50);
                let body = branchline_sync::agent::encode_batch(&batch);
                let send = |port: u16| {
                    b1.http
                        .post(format!("https://127.0.0.1:{port}/sync/v1/up"))
                        .header("content-encoding", "gzip")
                        .body(body.clone())
                        .send()
                };
                let (r1, r2) = tokio::join!(send(ports.0), send(ports.1));
                for r in [r1, r2] {
                    let r = r.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    acks.push(
                        r.json::<Value>().await.unwrap()["acked_seq"]
                            .as_i64()
                            .unwrap(),
                    );
                }
            }
            acks
        }));
    }
    for t in tasks {
        for ack in t.await.unwrap() {
            assert!((0..=2000).contains(&ack));
        }
    }
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!(
        (counts.up_records, counts.cdrs),
        (2000, 2000),
        "exactly once"
    );
    // Any instance now answers the full ack.
    let (_, ack) = b1.post(&second, &b1.cdr_batch([2000])).await;
    assert_eq!(ack["acked_seq"], 2000);
    // A change made through one instance reaches a long-poll on the other.
    let poll = {
        let url = format!(
            "https://127.0.0.1:{}{DOWN_PATH}?since=0&wait_ms=20000",
            second.sync_addr.port()
        );
        let http = b1.http.clone();
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    env.hq
        .admin(
            Method::PUT,
            "/admin/v1/sites/s1/group/team",
            Some(json!({"name": "team", "description": ""})),
        )
        .await;
    let got = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["rows"][0]["key"], "team", "{got}");
    assert!(started.elapsed() < Duration::from_secs(3));
    second.stop().await;
    env.hq.stop().await;
}
