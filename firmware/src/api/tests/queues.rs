//! `/api/v1/queues` in-process: permissions, validation, the whole-center check, HQ's
//! queues, audit and the reconfiguration poke.

use super::*;

impl Env {
    async fn agent(&self, name: &str, agent_id: &str) {
        self.accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    agent_id: Some(agent_id.to_owned()),
                    pin: Some("4821".to_owned()),
                    enabled: true,
                    roles: vec!["agent".to_owned()],
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("agent");
    }

    fn store(&self) -> rusqlite::Connection {
        let reader = self.accounts.reader().expect("reader");
        rusqlite::Connection::open(reader.path()).expect("open")
    }
}

fn sales() -> Value {
    json!({
        "number": "7001",
        "strategy": "round_robin",
        "ring_timeout_ms": 12000,
        "wrap_up_ms": 5000,
        "members": [{ "agent_id": "100" }, { "agent_id": "200", "penalty": 3 }],
        "overflow": { "max_wait": { "kind": "number", "target": "+4930123" } },
        "max_wait_ms": 120000,
        "vip": ["+4930*"],
    })
}

#[tokio::test]
async fn queues_are_created_listed_replaced_and_deleted_with_audit_and_reload() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.agent("ana", "100").await;
    env.agent("bob", "200").await;
    let admin = env.login("ada").await;
    let changed = env.accounts.writer().acd_changed();

    let r = env
        .write(Method::PUT, "/api/v1/queues/sales", &admin, sales())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let q = r.json();
    assert_eq!(q["number"], "7001");
    assert_eq!(q["source"], "local");
    assert_eq!(q["members"][1]["username"], "bob");
    assert_eq!(q["members"][1]["penalty"], 3);
    assert_eq!(q["overflow"]["max_wait"]["target"], "+4930123");
    assert_eq!(q["music_on_hold"], "tone");
    assert_eq!(q["recording"], "never", "the default");
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the daemon's reconfiguration is poked");

    // Replaced: 200, the new settings in force.
    let mut again = sales();
    again["strategy"] = json!("ring_all");
    again["members"] = json!([{ "agent_id": "200" }]);
    again["recording"] = json!("always");
    let r = env
        .write(Method::PUT, "/api/v1/queues/sales", &admin, again)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env.get("/api/v1/queues", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.json()["queues"].as_array().expect("queues").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["strategy"], "ring_all");
    assert_eq!(list[0]["members"].as_array().expect("members").len(), 1);
    assert_eq!(list[0]["recording"], "always");
    // The ACD loads it.
    let reader = env.accounts.reader().expect("reader");
    let config = crate::acd::store::load_config(reader.connection(), reader.path()).expect("loads");
    assert_eq!(config.queues()[0].name.as_str(), "sales");
    assert_eq!(
        config.queues()[0].recording,
        crate::config::RecordingPolicy::Always
    );
    // An unknown policy: 400 naming the field, the queue as it was.
    let mut bad = sales();
    bad["recording"] = json!("sometimes");
    let r = env
        .write(Method::PUT, "/api/v1/queues/sales", &admin, bad)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("\"recording\""), "{}", r.text);
    let r = env.get("/api/v1/queues", &admin).await;
    assert_eq!(r.json()["queues"][0]["recording"], "always");
    assert_eq!(r.json()["queues"][0]["strategy"], "ring_all");

    let r = env
        .send(
            Method::DELETE,
            "/api/v1/queues/sales",
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
            "/api/v1/queues/sales",
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let audited = env
        .store()
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE resource = 'queues' AND result = 'ok'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("audit");
    assert_eq!(audited, 3);
}

#[tokio::test]
async fn bad_queues_are_refused_naming_each_field_and_change_nothing() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.agent("ana", "100").await;
    let admin = env.login("ada").await;
    let put = |body: Value| {
        let (env, admin) = (&env, &admin);
        async move {
            env.write(Method::PUT, "/api/v1/queues/sales", admin, body)
                .await
        }
    };
    let r = put(json!({
        "number": "7",
        "strategy": "random",
        "ring_timeout_ms": 0,
        "music_on_hold": "prompt",
        "members": [{ "agent_id": "x" , "penalty": 500 }],
        "overflow": { "soon": { "kind": "busy" }, "full": { "kind": "queue" } },
        "vip": ["12a"],
        "recording": "sometimes",
    }))
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let fields: Vec<String> = r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().unwrap_or("").to_owned())
        .collect();
    for want in [
        "number",
        "strategy",
        "ring_timeout_ms",
        "moh_prompt",
        "members[0].agent_id",
        "members[0].penalty",
        "overflow.soon",
        "overflow.full.target",
        "vip[0]",
        "recording",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} in {fields:?}");
    }
    // An agent ID nobody has, an overflow to a queue that does not exist: the whole
    // call center is checked, nothing is written.
    let mut body = sales();
    body["members"] = json!([{ "agent_id": "999" }]);
    let r = put(body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("999"), "{}", r.text);
    let mut body = sales();
    body["members"] = json!([{ "agent_id": "100" }]);
    body["overflow"] = json!({ "full": { "kind": "queue", "target": "nowhere" } });
    let r = put(body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("nowhere"), "{}", r.text);
    // Unknown fields are refused too.
    let mut body = sales();
    body["colour"] = json!("blue");
    assert_eq!(put(body).await.status, StatusCode::BAD_REQUEST);
    let count = env
        .store()
        .query_row("SELECT COUNT(*) FROM queues", [], |r| r.get::<_, i64>(0))
        .expect("count");
    assert_eq!(count, 0);
    // A name that cannot be a queue's.
    let r = env
        .write(Method::PUT, "/api/v1/queues/Sales%20EU", &admin, sales())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn hqs_queues_and_numbers_in_use_are_conflicts_and_rights_are_checked() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.user("sue", &["supervisor"], None).await;
    env.user("alf", &["agent"], None).await;
    env.agent("ana", "100").await;
    env.store()
        .execute_batch(
            "INSERT INTO queues (name, number, strategy, revision) VALUES ('hq-sales', '7005', 'ring_all', 4);",
        )
        .expect("HQ's queue");
    let admin = env.login("ada").await;
    let r = env
        .write(Method::PUT, "/api/v1/queues/hq-sales", &admin, sales())
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("HQ"), "{}", r.text);
    let r = env
        .send(
            Method::DELETE,
            "/api/v1/queues/hq-sales",
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let mut body = sales();
    body["number"] = json!("7005");
    let r = env
        .write(Method::PUT, "/api/v1/queues/sales", &admin, body)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // A supervisor sees queues but may not change them; an agent sees none.
    let sue = env.login("sue").await;
    assert_eq!(env.get("/api/v1/queues", &sue).await.status, StatusCode::OK);
    let r = env
        .write(Method::PUT, "/api/v1/queues/sales", &sue, sales())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let al = env.login("alf").await;
    assert_eq!(
        env.get("/api/v1/queues", &al).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_agents_recording_policy_is_set_by_an_admin_checked_and_reloads_the_center() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.agent("ana", "100").await;
    let admin = env.login("ada").await;
    let ana = env.login("ana").await;
    let id: i64 = env
        .store()
        .query_row("SELECT id FROM users WHERE username = 'ana'", [], |r| {
            r.get(0)
        })
        .expect("ana");
    let url = format!("/api/v1/users/{id}");
    let r = env.get(&url, &admin).await;
    assert_eq!(r.json()["recording"], "never", "the default");

    // An unknown policy: 400 naming the field, nothing changed.
    let r = env
        .write(Method::PATCH, &url, &admin, json!({ "recording": "often" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("\"recording\""), "{}", r.text);
    assert_eq!(env.get(&url, &admin).await.json()["recording"], "never");

    let changed = env.accounts.writer().acd_changed();
    let r = env
        .write(
            Method::PATCH,
            &url,
            &admin,
            json!({ "recording": "always" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["recording"], "always");
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the daemon's reconfiguration is poked");
    let reader = env.accounts.reader().expect("reader");
    let config = crate::acd::store::load_config(reader.connection(), reader.path()).expect("loads");
    assert_eq!(
        config.agents()[0].recording,
        crate::config::RecordingPolicy::Always
    );

    // The agent cannot turn their own recording off.
    let r = env
        .write(Method::PATCH, &url, &ana, json!({ "recording": "never" }))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(env.get(&url, &admin).await.json()["recording"], "always");
}

/// `GET /api/v1/call-center`: the main loop's live view, callers' numbers masked
/// unless the role may see them; `queues.view` needed.
#[tokio::test]
async fn the_live_call_center_needs_queues_view_and_masks_callers() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.user("sue", &["supervisor"], None).await;
    env.user("tec", &["technician"], None).await;
    env.user("fin", &["finance"], None).await;
    let admin = env.login("ada").await;
    let r = env.get("/api/v1/call-center", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).expect("json");
    assert_eq!(v["configured"], true);
    let q = &v["status"]["queues"][0];
    assert_eq!(q["name"], "sales");
    assert_eq!(
        q["waiting"][0]["caller"], "+4930555123",
        "admin sees numbers"
    );
    assert_eq!(q["waiting"][0]["vip"], true);
    assert_eq!(q["waiting"][0]["ringing"], json!(["100"]));
    assert_eq!(v["status"]["agents"][1]["reason"], "lunch");
    // A supervisor sees the queue, the outside caller (no team's number) masked.
    let sue = env.login("sue").await;
    let r = env.get("/api/v1/call-center", &sue).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).expect("json");
    let caller = v["status"]["queues"][0]["waiting"][0]["caller"]
        .as_str()
        .expect("caller");
    assert_ne!(caller, "+4930555123");
    assert!(
        caller.starts_with("+49") && caller.ends_with("5123"),
        "{caller}"
    );
    // Technicians and finance have no queues.view.
    for name in ["tec", "fin"] {
        let who = env.login(name).await;
        let r = env.get("/api/v1/call-center", &who).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {}", r.text);
    }
}
