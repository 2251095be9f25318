//! `/api/v1/lead-lists`, `/api/v1/leads`, `/api/v1/campaigns`,
//! `/api/v1/campaign-settings` in-process: permissions per role, import all or
//! nothing, bad input is a 400 that changes nothing, masking, next leads per agent,
//! supervisor assignment, state changes and progress, audit.

use super::*;

fn count(env: &Env, table: &str) -> i64 {
    let reader = env.accounts.reader().expect("reader");
    reader
        .connection()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

async fn csv(env: &Env, c: &Client, uri: &str, text: &str) -> Reply {
    env.send(
        Method::POST,
        uri,
        Some(c),
        true,
        Some(("text/csv", text.to_owned())),
        "127.0.0.1",
    )
    .await
}

fn campaign(list_id: i64, group_id: i64) -> Value {
    json!({
        "name": "Winter offer",
        "list_id": list_id,
        "group_id": group_id,
        "mode": "preview",
        "hours_start": "09:00",
        "hours_end": "17:00",
        "weekdays": ["mon", "tue", "wed", "thu", "fri"],
        "max_attempts": 3,
        "busy_retry_s": 300,
        "no_answer_retry_s": 900,
        "failed_retry_s": 120,
        "ring_timeout_s": 30,
        "caller_id": "+49 30 1234",
    })
}

#[tokio::test]
async fn campaigns_end_to_end_through_the_api_with_permissions_masking_and_audit() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let olga = env.user("olga", &["agent"], Some("101")).await;
    let pete = env.user("pete", &["agent"], Some("102")).await;
    let eve = env.user("eve", &["agent"], Some("103")).await;
    let rita = env.user("rita", &["supervisor"], Some("104")).await;
    env.user("tim", &["technician"], None).await;
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "sales", "description": "",
                    "members": [{ "user_id": olga.id, "is_group_admin": false },
                                { "user_id": pete.id, "is_group_admin": false },
                                { "user_id": rita.id, "is_group_admin": true }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let group = r.json()["id"].as_i64().expect("group id");

    // Agents and technicians may not make lists.
    let oc = env.login("olga").await;
    let tc = env.login("tim").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &oc,
            json!({ "name": "X" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env.get("/api/v1/lead-lists", &tc).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(count(&env, "lead_lists"), 0);

    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &admin,
            json!({ "name": "" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &admin,
            json!({ "name": "Nov", "x": 1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &admin,
            json!({ "name": "Nov" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let list = r.json()["id"].as_i64().expect("list id");
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &admin,
            json!({ "name": "Nov" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Import: the agent may not; a bad row refuses the whole file.
    let uri = format!("/api/v1/lead-lists/{list}/import");
    let r = csv(&env, &oc, &uri, "numbers\n5550100\n").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = csv(
        &env,
        &admin,
        &uri,
        "name,numbers,product\nAnn,13812345678,fibre\nBen,nope,\nCy,138 1234 5678,\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let rows: Vec<i64> = r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["row"].as_i64().expect("row"))
        .collect();
    assert_eq!(rows, [3, 4]);
    assert_eq!(count(&env, "leads"), 0);
    let r = csv(
        &env,
        &admin,
        &uri,
        "name,numbers,product\nAnn,13812345678,fibre\nBen,13999887766,\nCy,5550103,\nDi,5550104,\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["imported"], 4);

    // Numbers: the admin sees them, the supervisor (numbers.view for her group only,
    // and no lead is her group's yet) does not.
    let leads_uri = format!("/api/v1/lead-lists/{list}/leads");
    let r = env.get(&leads_uri, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains(CUSTOMER_IN), "{}", r.text);
    assert_eq!(r.json()["total"], 4);
    assert_eq!(r.json()["items"][0]["data"]["product"], "fibre");
    let rc = env.login("rita").await;
    let r = env.get(&leads_uri, &rc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(CUSTOMER_IN), "{}", r.text);
    assert_eq!(r.json()["items"][0]["masked"], true);

    // A campaign: bad fields are a 400 naming each, and nothing is written.
    let mut bad = campaign(list, group);
    bad["hours_end"] = json!("08:00");
    bad["max_attempts"] = json!(50);
    bad["weekdays"] = json!(["funday"]);
    let r = env
        .write(Method::POST, "/api/v1/campaigns", &admin, bad)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let fields: Vec<String> = r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().expect("field").to_owned())
        .collect();
    assert_eq!(fields, ["weekdays", "retry.max_attempts"], "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/campaigns",
            &oc,
            campaign(list, group),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(count(&env, "campaigns"), 0);
    let r = env
        .write(
            Method::POST,
            "/api/v1/campaigns",
            &rc,
            campaign(list, group),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let c = r.json();
    let id = c["id"].as_i64().expect("id");
    assert_eq!(c["state"], "draft");
    assert_eq!(c["weekdays"], json!(["mon", "tue", "wed", "thu", "fri"]));
    assert_eq!(c["caller_id"], "+49301234");
    // The hours are on the site's clocks; no zone adopted in this store: UTC.
    assert_eq!(c["time_zone"], "UTC");
    assert!(c.get("utc_offset_min").is_none());

    // Members of the group see it; eve (not a member) and the technician do not.
    let r = env.get("/api/v1/campaigns", &oc).await;
    assert_eq!(r.json()["campaigns"].as_array().map(Vec::len), Some(1));
    let ec = env.login("eve").await;
    let r = env.get("/api/v1/campaigns", &ec).await;
    assert_eq!(r.json()["campaigns"].as_array().map(Vec::len), Some(0));
    let r = env.get(&format!("/api/v1/campaigns/{id}"), &ec).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env.get(&format!("/api/v1/campaigns/{id}"), &tc).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // Next leads: not before the campaign runs; only members; at most next_leads.
    let next = format!("/api/v1/campaigns/{id}/next");
    let r = env.write(Method::POST, &next, &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/start"),
            &oc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/start"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["state"], "running");
    let r = env
        .write(Method::POST, "/api/v1/campaign-settings", &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/campaign-settings",
            &oc,
            json!({ "next_leads": 2 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/campaign-settings",
            &admin,
            json!({ "next_leads": 0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/campaign-settings",
            &admin,
            json!({ "next_leads": 2 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env.get("/api/v1/campaign-settings", &oc).await;
    assert_eq!(r.json()["next_leads"], 2);
    let r = env
        .write(Method::POST, &next, &oc, json!({ "count": 3 }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env.write(Method::POST, &next, &ec, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env.write(Method::POST, &next, &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mine = r.json()["leads"].clone();
    assert_eq!(mine.as_array().map(Vec::len), Some(2));
    assert_eq!(mine[0]["assigned_user_id"], olga.id.0);
    // The agent has no numbers.view: masked even on their own leads.
    assert!(
        !r.text.contains(CUSTOMER_IN) && !r.text.contains(CUSTOMER_OUT),
        "{}",
        r.text
    );
    let r = env
        .write(Method::POST, &next, &oc, json!({ "count": 1 }))
        .await;
    assert_eq!(
        r.json()["leads"][0]["id"],
        mine[0]["id"],
        "the same until dialled"
    );
    let r = env
        .write(Method::POST, &next, &env.login("pete").await, json!({}))
        .await;
    let petes: Vec<i64> = r.json()["leads"]
        .as_array()
        .expect("leads")
        .iter()
        .map(|l| l["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(petes.len(), 2);
    // Olga's own lead: she may read it; eve may not.
    let lead_uri = format!("/api/v1/leads/{}", mine[0]["id"]);
    let r = env.get(&lead_uri, &oc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["attempt_history"], json!([]));
    let r = env.get(&lead_uri, &ec).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // The supervisor administers the group: she sees the group's leads unmasked now.
    let r = env.get(&lead_uri, &rc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["masked"], false, "{}", r.text);

    // Assignment: only to members, all or nothing.
    let assign = format!("/api/v1/campaigns/{id}/assign");
    let r = env
        .write(
            Method::POST,
            &assign,
            &rc,
            json!({ "leads": petes, "user_id": eve.id.0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &assign,
            &rc,
            json!({ "leads": [petes[0], 999], "user_id": olga.id.0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let reader = env.accounts.reader().expect("reader");
    let petes_now: i64 = reader
        .connection()
        .query_row(
            "SELECT count(*) FROM leads WHERE assigned_user_id = ?1",
            [pete.id.0],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(petes_now, 2, "a refused assignment changes nothing");
    let r = env
        .write(
            Method::POST,
            &assign,
            &oc,
            json!({ "leads": [petes[0]], "user_id": olga.id.0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &assign,
            &rc,
            json!({ "leads": [petes[0]], "user_id": olga.id.0 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Progress, and the state rules.
    let r = env
        .get(&format!("/api/v1/campaigns/{id}/progress"), &oc)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["progress"]["leads"], 4);
    assert_eq!(r.json()["progress"]["pending"], 4);
    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/campaigns/{id}"),
            &rc,
            campaign(list, group),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(
            Method::DELETE,
            &format!("/api/v1/lead-lists/{list}"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/pause"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/pause"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let mut changed = campaign(list, group);
    changed["max_attempts"] = json!(5);
    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/campaigns/{id}"),
            &rc,
            changed,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["max_attempts"], 5);
    let r = env
        .write(
            Method::DELETE,
            &format!("/api/v1/campaigns/{id}"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env
        .write(
            Method::DELETE,
            &format!("/api/v1/lead-lists/{list}"),
            &rc,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(count(&env, "leads"), 0);

    // Every change audited under `campaigns`, refusals too.
    let reader = env.accounts.reader().expect("reader");
    let rows: Vec<(String, String)> = audit::list(&reader, 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.resource == "campaigns")
        .map(|r| (r.action, r.result))
        .collect();
    for want in [
        ("lead_list_add", "ok"),
        ("lead_list_add", "failed"),
        ("lead_import", "failed"),
        ("lead_import", "ok"),
        ("campaign_add", "ok"),
        ("campaign_start", "ok"),
        ("lead_next", "ok"),
        ("lead_assign", "failed"),
        ("lead_assign", "ok"),
        ("campaign_pause", "failed"),
        ("campaign_edit", "ok"),
        ("campaign_delete", "ok"),
        ("lead_list_delete", "ok"),
        ("import", "denied"),
    ] {
        assert!(
            rows.iter().any(|(a, r)| a == want.0 && r == want.1),
            "{want:?} not in {rows:?}"
        );
    }
}

fn clicked(number: &str) -> usize {
    CLICKS
        .lock()
        .expect("lock")
        .iter()
        .filter(|n| *n == number)
        .count()
}

#[tokio::test]
async fn preview_dial_and_customer_dial_check_every_rule_and_the_do_not_call_list() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let olga = env.user("olga", &["agent"], Some("101")).await;
    env.user("eve", &["agent"], Some("103")).await;
    env.user("tim", &["technician"], None).await;
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "sales", "description": "",
                    "members": [{ "user_id": olga.id, "is_group_admin": false }] }),
        )
        .await;
    let group = r.json()["id"].as_i64().expect("group id");
    let r = env
        .write(
            Method::POST,
            "/api/v1/lead-lists",
            &admin,
            json!({ "name": "Dial" }),
        )
        .await;
    let list = r.json()["id"].as_i64().expect("list");
    let r = csv(
        &env,
        &admin,
        &format!("/api/v1/lead-lists/{list}/import"),
        "name,numbers\nAnn,7770001\nBen,7770002;7770003\nCy,+497770004\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Ben's numbers are both on the blacklist.
    for pattern in ["7770002", "7770003"] {
        let r = env
            .write(
                Method::POST,
                "/api/v1/blacklist",
                &admin,
                json!({ "pattern": pattern, "reason": "asked not to be called" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let mut c = campaign(list, group);
    c["hours_start"] = json!("00:00");
    c["hours_end"] = json!("24:00");
    c["weekdays"] = json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
    let r = env
        .write(Method::POST, "/api/v1/campaigns", &admin, c)
        .await;
    let id = r.json()["id"].as_i64().expect("campaign");
    // The campaign holds its group: deleting the group is a conflict, not a 500.
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/groups/{group}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("1 campaign(s)"), "{}", r.text);
    let oc = env.login("olga").await;
    let ann: i64 = {
        let reader = env.accounts.reader().expect("reader");
        reader
            .connection()
            .query_row("SELECT id FROM leads WHERE name = 'Ann'", [], |r| r.get(0))
            .expect("ann")
    };
    let dial = |lead: i64| format!("/api/v1/campaigns/{id}/leads/{lead}/dial");
    // Not running yet.
    let r = env.write(Method::POST, &dial(ann), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(count(&env, "lead_attempts"), 0);
    let r = env
        .write(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/start"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Eve is not in the group; the technician may not operate campaigns.
    let ec = env.login("eve").await;
    let r = env.write(Method::POST, &dial(ann), &ec, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(Method::POST, &dial(ann), &env.login("tim").await, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(count(&env, "lead_attempts"), 0);

    let r = env.write(Method::POST, &dial(ann), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json()["from"], "101");
    let attempt = r.json()["attempt"].as_i64().expect("attempt");
    let call_id = r.json()["call_id"].as_str().expect("call id").to_owned();
    assert_eq!(clicked("7770001"), 1);
    // Not twice at once, and not a second lead while this one is open.
    let r = env.write(Method::POST, &dial(ann), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(clicked("7770001"), 1);
    // The attempt carries the call's id; its outcome comes from the call.
    let r = env.get(&format!("/api/v1/leads/{ann}"), &oc).await;
    assert_eq!(r.json()["state"], "dialing", "{}", r.text);
    assert_eq!(r.json()["attempt_history"][0]["call_id"], call_id.as_str());
    let put = format!("/api/v1/campaign-attempts/{attempt}");
    let r = env
        .write(Method::PUT, &put, &ec, json!({ "disposition": 2 }))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(Method::PUT, &put, &oc, json!({ "outcome": "busy" }))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("read from its call"), "{}", r.text);
    let r = env
        .write(Method::PUT, &put, &oc, json!({ "disposition": 11 }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env.get(&format!("/api/v1/leads/{ann}"), &oc).await;
    assert_eq!(
        r.json()["state"],
        "dialing",
        "a refused result changes nothing"
    );
    // The agent's disposition and notes while the call goes on.
    let r = env
        .write(
            Method::PUT,
            &put,
            &oc,
            json!({ "disposition": 2, "notes": "line busy" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["outcome"], json!(null), "{}", r.text);
    // The call ends: the lead's line was busy. Its CDR closes the attempt.
    let now = env.state.now();
    let call_cdr = |call_id: &str, disposition: crate::cdr::Disposition| crate::cdr::Cdr {
        call_id: call_id.to_owned(),
        direction: crate::cdr::Direction::Outbound,
        caller: "101".into(),
        caller_port: Some(1),
        callee: "7770001".into(),
        callee_port: Some(5),
        started_at_ms: now - 10_000,
        answered_at_ms: (disposition == crate::cdr::Disposition::Answered).then_some(now - 5_000),
        ended_at_ms: now,
        disposition,
        hangup_side: crate::cdr::HangupSide::Caller,
        caller_sip_call_id: None,
        callee_sip_call_id: None,
        caller_quality: None,
        callee_quality: None,
        transfer_chain: Vec::new(),
        queue: None,
        blocked: None,
        survey_score: None,
        hold_ms: None,
        queue_overflow: None,
        interrupted: false,
        hangup_cause: None,
    };
    env.accounts
        .writer()
        .insert_cdr(call_cdr(&call_id, crate::cdr::Disposition::Busy))
        .await
        .expect("cdr");
    let r = env.get(&format!("/api/v1/leads/{ann}"), &oc).await;
    assert_eq!(r.json()["state"], "pending", "{}", r.text);
    assert_eq!(r.json()["next_at_ms"], now + 300_000, "{}", r.text);
    let first = &r.json()["attempt_history"][0];
    assert_eq!(
        (&first["outcome"], &first["disposition"], &first["notes"]),
        (&json!("busy"), &json!(2), &json!("line busy")),
        "{}",
        r.text
    );
    // Wrap-up after the call keeps the call's outcome.
    let r = env
        .write(
            Method::PUT,
            &put,
            &oc,
            json!({ "disposition": 3, "notes": "try later" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.json()["outcome"], &r.json()["disposition"]),
        (&json!("busy"), &json!(3)),
        "{}",
        r.text
    );
    // Due again only after the busy spacing.
    let r = env.write(Method::POST, &dial(ann), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("not due"), "{}", r.text);
    env.advance(300_000);
    let r = env.write(Method::POST, &dial(ann), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(clicked("7770001"), 2);
    let second_call = r.json()["call_id"].as_str().expect("call id").to_owned();
    let now = env.state.now();
    let mut answered = call_cdr(&second_call, crate::cdr::Disposition::Answered);
    answered.started_at_ms = now - 10_000;
    answered.answered_at_ms = Some(now - 5_000);
    answered.ended_at_ms = now;
    env.accounts
        .writer()
        .insert_cdr(answered)
        .await
        .expect("cdr");
    let r = env.get(&format!("/api/v1/leads/{ann}"), &oc).await;
    assert_eq!(
        (&r.json()["state"], &r.json()["result"]),
        (&json!("done"), &json!("answered")),
        "{}",
        r.text
    );

    // Ben: every number on the do-not-call list: finished, never dialled.
    let ben: i64 = {
        let reader = env.accounts.reader().expect("reader");
        reader
            .connection()
            .query_row("SELECT id FROM leads WHERE name = 'Ben'", [], |r| r.get(0))
            .expect("ben")
    };
    let r = env.write(Method::POST, &dial(ben), &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("blacklisted"), "{}", r.text);
    assert_eq!(clicked("7770002") + clicked("7770003"), 0);
    // Progress: Ann answered on her second attempt, Ben finished undialled, Cy waits.
    let r = env
        .get(&format!("/api/v1/campaigns/{id}/progress"), &oc)
        .await;
    assert_eq!(
        r.json()["progress"]["done"],
        json!({ "answered": 1, "blacklisted": 1 })
    );
    assert_eq!(
        r.json()["progress"]["attempts"],
        json!({ "answered": 1, "busy": 1 })
    );

    // Click-to-dial from a customer record.
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Dora", "numbers": ["7770009", "7770002"], "owner": "olga" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cust = r.json()["id"].as_i64().expect("customer");
    let cdial = format!("/api/v1/customers/{cust}/dial");
    let r = env
        .write(Method::POST, &cdial, &oc, json!({ "number": "7770002" }))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("do-not-call"), "{}", r.text);
    let r = env
        .write(Method::POST, &cdial, &oc, json!({ "number": "5550000" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env.write(Method::POST, &cdial, &ec, json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "not eve's customer: {}",
        r.text
    );
    assert_eq!(clicked("7770009"), 0);
    let r = env.write(Method::POST, &cdial, &oc, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json()["from"], "101");
    assert_eq!(clicked("7770009"), 1);
}
