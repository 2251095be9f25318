//! `/api/v1/blacklist` in-process: permissions, validation, HQ-owned entries, the
//! mode, masking, audit, and the reload poke.

use super::*;

fn entries(v: &Value) -> Vec<Value> {
    v["entries"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn blacklist_entries_are_added_listed_and_deleted_with_audit_and_reload() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    let changed = env.accounts.writer().blacklist_changed();

    let r = env.get("/api/v1/blacklist", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["mode"], "deny");
    assert_eq!(r.json()["default_action"], "busy");
    assert!(entries(&r.json()).is_empty());

    let r = env
        .write(
            Method::POST,
            "/api/v1/blacklist",
            &admin,
            json!({ "pattern": "0900*", "reason": "premium", "action": "reject" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let added = r.json();
    assert_eq!(added["pattern"], "0900*");
    assert_eq!(added["source"], "local");
    assert_eq!(added["action"], "reject");
    assert_eq!(added["hits"], 0);
    assert_eq!(added["created_by"], "ada");
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the daemon's reload is poked");

    // The same pattern again: 409, nothing added.
    let r = env
        .write(
            Method::POST,
            "/api/v1/blacklist",
            &admin,
            json!({ "pattern": "0900*" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("already listed"), "{}", r.text);

    let r = env.get("/api/v1/blacklist", &admin).await;
    let list = entries(&r.json());
    assert_eq!(list.len(), 1);
    // An admin holds numbers.view: patterns unmasked.
    assert_eq!(list[0]["pattern"], "0900*");
    assert_eq!(r.json()["masked"], false);

    let id = added["id"].as_i64().expect("id");
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/blacklist/{id}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/blacklist/{id}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(entries(&env.get("/api/v1/blacklist", &admin).await.json()).is_empty());

    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    let mine: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.resource == "blacklist")
        .map(|r| (r.action.as_str(), r.target.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        mine,
        [
            ("create", "0900*", "ok"),
            ("create", "0900*", "failed"),
            ("delete", "0900*", "ok"),
            ("delete", &*id.to_string(), "failed"),
        ]
    );
}

#[tokio::test]
async fn bad_blacklist_input_is_a_400_naming_the_field_and_changes_nothing() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    for (body, field) in [
        (json!({ "pattern": "09*00" }), "pattern"),
        (json!({ "pattern": "" }), "pattern"),
        (json!({ "pattern": "*" }), "pattern"),
        (json!({ "pattern": "123456789012345678901" }), "pattern"),
        (json!({ "pattern": "0900*", "action": "drop" }), "action"),
        (
            json!({ "pattern": "0900*", "reason": "x".repeat(201) }),
            "reason",
        ),
        (json!({ "pattern": "0900*", "colour": "red" }), "body"),
        (json!({ "reason": "no pattern" }), "body"),
    ] {
        let r = env
            .write(Method::POST, "/api/v1/blacklist", &admin, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        let problems = r.json()["problems"].clone();
        assert_eq!(problems[0]["field"], field, "{body}: {}", r.text);
    }
    for (body, field) in [
        (json!({ "mode": "block" }), "mode"),
        (
            json!({ "mode": "allow", "default_action": "allow" }),
            "default_action",
        ),
        (json!({ "default_action": "busy" }), "body"),
    ] {
        let r = env
            .write(Method::PUT, "/api/v1/blacklist/mode", &admin, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.json()["problems"][0]["field"], field, "{}", r.text);
    }
    let r = env.get("/api/v1/blacklist", &admin).await;
    assert!(entries(&r.json()).is_empty());
    assert_eq!(r.json()["mode"], "deny");
}

#[tokio::test]
async fn hq_entries_cannot_be_deleted_locally() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    env.accounts
        .writer()
        .transact("hq entry", |tx, path| {
            crate::blacklist::store::upsert_hq(
                tx,
                path,
                &"+4930*".parse().expect("pattern"),
                "from hq",
                7,
                T0,
            )
        })
        .await
        .expect("hq entry");
    let r = env.get("/api/v1/blacklist", &admin).await;
    let list = entries(&r.json());
    assert_eq!(list[0]["source"], "hq");
    assert_eq!(list[0]["revision"], 7);
    assert_eq!(list[0]["action"], Value::Null);
    let id = list[0]["id"].as_i64().expect("id");
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/blacklist/{id}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("HQ owns"), "{}", r.text);
    assert_eq!(
        entries(&env.get("/api/v1/blacklist", &admin).await.json()).len(),
        1
    );
    // A local entry with HQ's pattern is refused too.
    let r = env
        .write(
            Method::POST,
            "/api/v1/blacklist",
            &admin,
            json!({ "pattern": "+4930*" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("by HQ"), "{}", r.text);
}

#[tokio::test]
async fn the_mode_is_read_and_set_with_its_permissions() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.user("sue", &["supervisor"], None).await;
    env.user("olga", &["agent"], Some("101")).await;
    let admin = env.login("ada").await;
    let sup = env.login("sue").await;
    let agent = env.login("olga").await;

    let r = env
        .write(
            Method::PUT,
            "/api/v1/blacklist/mode",
            &admin,
            json!({ "mode": "allow", "default_action": "congestion" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({ "mode": "allow", "default_action": "congestion" })
    );
    // default_action absent: unchanged.
    let r = env
        .write(
            Method::PUT,
            "/api/v1/blacklist/mode",
            &admin,
            json!({ "mode": "deny" }),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({ "mode": "deny", "default_action": "congestion" })
    );

    // A supervisor may view (blacklist.view) but not change; an agent neither.
    let r = env.get("/api/v1/blacklist/mode", &sup).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/blacklist/mode",
            &sup,
            json!({ "mode": "allow" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/blacklist",
            &sup,
            json!({ "pattern": "1" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env.get("/api/v1/blacklist", &agent).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Without the CSRF token: refused.
    let r = env
        .send(
            Method::PUT,
            "/api/v1/blacklist/mode",
            Some(&admin),
            false,
            Some(("application/json", json!({ "mode": "allow" }).to_string())),
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(
        env.get("/api/v1/blacklist/mode", &admin).await.json()["mode"],
        "deny"
    );

    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    assert_eq!(
        rows.iter()
            .filter(|r| r.resource == "blacklist" && r.action == "update" && r.result == "ok")
            .count(),
        2
    );
    assert!(rows
        .iter()
        .any(|r| r.actor == "sue" && r.resource == "blacklist" && r.result == "denied"));
}

#[tokio::test]
async fn patterns_are_masked_without_numbers_view() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    // A role with blacklist.view but no numbers.view.
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/roles",
            &admin,
            json!({ "name": "screener", "description": "views the blacklist",
                    "permissions": [{ "resource": "blacklist", "action": "view", "scope": "site" }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    env.user("sam", &["screener"], None).await;
    let sam = env.login("sam").await;
    for pattern in ["13812345678", "anonymous"] {
        let r = env
            .write(
                Method::POST,
                "/api/v1/blacklist",
                &admin,
                json!({ "pattern": pattern }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = env.get("/api/v1/blacklist", &sam).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["masked"], true);
    let shown: Vec<String> = entries(&r.json())
        .iter()
        .map(|e| e["pattern"].as_str().expect("pattern").to_owned())
        .collect();
    assert_eq!(shown, ["138****5678", "anonymous"]);
    assert!(!r.text.contains("13812345678"));
}
