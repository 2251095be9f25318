//! `/api/v1/voicemail` in-process: scope per mailbox owner, masking, the WAV download,
//! deletion (row, file, audit, call control told) and refusals that change nothing.

use super::*;
use crate::voicemail::store::{self as vm_store, NewMailbox, NewMessage};

/// Mailbox 101 of `owner` with one message from a customer, for the masking walk.
pub(super) fn walk_message(env: &Env, owner: i64) {
    add_messages(env, &[("101", owner)]);
}

/// Mailboxes 201 (owner `owner`) and 202 (owner `other`) with one message each, and
/// their files; returns the message ids.
fn messages(env: &Env, owner: i64, other: i64) -> (i64, i64) {
    let ids = add_messages(env, &[("201", owner), ("202", other)]);
    (ids[0], ids[1])
}

/// A mailbox per `(number, owner)` with one message from [`CUSTOMER_IN`] and its file.
fn add_messages(env: &Env, boxes: &[(&str, i64)]) -> Vec<i64> {
    let db = env._dir.path().join("branchline.db");
    let dir = crate::voicemail::dir_of_store(&db);
    std::fs::create_dir_all(&dir).expect("dir");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut ids = Vec::new();
    for &(number, user) in boxes {
        let mut b = NewMailbox::new(number);
        b.owner_user_id = Some(user);
        vm_store::add_mailbox(&conn, &db, &b).expect("mailbox");
        let file = format!("msg-{number}-1.wav");
        let mut bytes = crate::recorder::wav::header_for(1, 320).to_vec();
        bytes.extend_from_slice(&[7u8; 320]);
        std::fs::write(dir.join(&file), &bytes).expect("file");
        let m = vm_store::insert_message(
            &conn,
            &db,
            &NewMessage {
                mailbox: number.to_owned(),
                call_id: "c-1".to_owned(),
                caller_number: CUSTOMER_IN.to_owned(),
                caller_name: "Ann".to_owned(),
                received_at_ms: T0,
                duration_ms: 20,
                file,
                size_bytes: bytes.len() as i64,
                sha256: "b".repeat(64),
                interrupted: false,
            },
        )
        .expect("message");
        ids.push(m.id);
    }
    ids
}

fn listed(v: &Value) -> Vec<String> {
    v["mailboxes"]
        .as_array()
        .expect("mailboxes")
        .iter()
        .map(|b| b["number"].as_str().expect("number").to_owned())
        .collect()
}

#[tokio::test]
async fn an_agent_sees_listens_to_and_deletes_only_their_own_messages_and_numbers_are_masked() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let bob = env.user("bob", &["agent"], Some("101")).await;
    let cyd = env.user("cyd", &["agent"], Some("102")).await;
    let (own, others) = messages(&env, bob.id.0, cyd.id.0);
    let (admin, agent) = (env.login("ada").await, env.login("bob").await);

    // The agent: their mailbox only, the caller's number masked.
    let r = env.get("/api/v1/voicemail", &agent).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(listed(&v), ["201"]);
    assert_eq!(v["masked"], true);
    let number = v["mailboxes"][0]["messages"][0]["caller_number"]
        .as_str()
        .expect("number");
    assert_ne!(number, CUSTOMER_IN);
    assert_eq!(v["mailboxes"][0]["new"], 1);
    // The admin: both, unmasked.
    let v = env.get("/api/v1/voicemail", &admin).await.json();
    assert_eq!(listed(&v), ["201", "202"]);
    assert_eq!(
        v["mailboxes"][1]["messages"][0]["caller_number"],
        CUSTOMER_IN
    );

    // Audio: their own message's WAV; another's is refused; an unknown one is 404.
    let r = env
        .get(&format!("/api/v1/voicemail/{own}/audio"), &agent)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "audio/wav");
    let r = env
        .get(&format!("/api/v1/voicemail/{others}/audio"), &agent)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env.get("/api/v1/voicemail/999/audio", &agent).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Delete: another's refused and nothing changes; their own goes, file and all.
    let delete = |id: i64| {
        let (env, agent) = (&env, &agent);
        async move {
            env.send(
                Method::DELETE,
                &format!("/api/v1/voicemail/{id}"),
                Some(agent),
                true,
                None,
                "127.0.0.1",
            )
            .await
        }
    };
    assert_eq!(delete(others).await.status, StatusCode::FORBIDDEN);
    let r = delete(own).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(delete(own).await.status, StatusCode::NOT_FOUND);
    let db = env._dir.path().join("branchline.db");
    let dir = crate::voicemail::dir_of_store(&db);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(
        left,
        ["msg-202-1.wav"],
        "no file or tombstone of the deleted one"
    );
    let v = env.get("/api/v1/voicemail", &admin).await.json();
    assert!(v["mailboxes"][0]["messages"]
        .as_array()
        .expect("list")
        .is_empty());
    assert_eq!(
        v["mailboxes"][1]["messages"]
            .as_array()
            .expect("list")
            .len(),
        1
    );
    // The main loop hears of it (the control channel is asynchronous).
    let told = || VOICEMAIL_DELETED.lock().expect("lock").contains(&own);
    for _ in 0..100 {
        if told() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(told(), "call control was not told of the deletion");

    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    let mine: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.resource == "voicemail")
        .map(|r| (r.action.as_str(), r.target.as_str(), r.result.as_str()))
        .collect();
    assert!(
        mine.contains(&("delete", "msg-201-1.wav", "ok")),
        "{mine:?}"
    );
}

#[tokio::test]
async fn a_user_without_voicemail_permissions_is_refused() {
    let env = env().await;
    env.user("tech", &["technician"], None).await;
    let tech = env.login("tech").await;
    let r = env.get("/api/v1/voicemail", &tech).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}
