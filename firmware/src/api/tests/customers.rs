//! `/api/v1/customers`, `/api/v1/customer-fields`, `/api/v1/customer-types`
//! in-process: every field type, required and defaults, the cap, filters, scope,
//! masking (list and export), CSV import all or nothing, duplicate numbers, HQ's
//! read-only contacts, permissions and audit.

use super::*;

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

fn customer_count(env: &Env) -> i64 {
    let reader = env.accounts.reader().expect("reader");
    reader
        .connection()
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .expect("count")
}

fn problem_fields(r: &Reply) -> Vec<String> {
    r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["field"].as_str().expect("field").to_owned())
        .collect()
}

/// One field of every type, and two customer types.
async fn schema(env: &Env, admin: &Client) {
    for (digit, name) in [("1", "prospect"), ("2", "client")] {
        let r = env
            .write(
                Method::PUT,
                &format!("/api/v1/customer-types/{digit}"),
                admin,
                json!({ "name": name }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    for f in [
        json!({ "name": "notes", "type": "text" }),
        json!({ "name": "age", "type": "integer" }),
        json!({ "name": "mobile", "type": "phone", "label": "Mobile" }),
        json!({ "name": "birthday", "type": "date" }),
        json!({ "name": "call_after", "type": "time" }),
        json!({ "name": "last_visit", "type": "datetime" }),
        json!({ "name": "tier", "type": "single_choice", "required": true,
                "default": "silver", "choices": ["gold", "silver"] }),
        json!({ "name": "tags", "type": "multi_choice", "choices": ["vip", "new", "reseller"] }),
        json!({ "name": "region", "type": "text", "required": true }),
    ] {
        let r = env
            .write(Method::POST, "/api/v1/customer-fields", admin, f.clone())
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{f}: {}", r.text);
    }
}

#[tokio::test]
async fn customers_round_trip_with_every_field_type_filters_and_audit() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let olga = env.user("olga", &["agent"], Some("101")).await;
    let admin = env.login("ada").await;
    schema(&env, &admin).await;

    let r = env.get("/api/v1/customer-fields", &admin).await;
    assert_eq!(r.json()["max_fields"], 32);
    assert_eq!(r.json()["fields"].as_array().map(Vec::len), Some(9));
    assert_eq!(r.json()["fields"][6]["default"], "silver");

    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({
                "name": "Acme Ltd",
                "numbers": ["+49 30 1234567", "030-7654321"],
                "type": 2,
                "owner": "olga",
                "fields": {
                    "notes": "pays late", "age": 36, "mobile": "+49 151 0000001",
                    "birthday": "1988-02-29", "call_after": "09:30",
                    "last_visit": "2026-11-02 14:05", "tags": ["reseller", "vip"],
                    "region": "north",
                },
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let c = r.json();
    let id = c["id"].as_i64().expect("id");
    assert_eq!(c["numbers"], json!(["+49301234567", "0307654321"]));
    assert_eq!(c["type"], 2);
    assert_eq!(c["type_name"], "client");
    assert_eq!(c["owner"], "olga");
    assert_eq!(c["owner_user_id"], olga.id.0);
    assert_eq!(c["source"], "local");
    assert_eq!(c["masked"], false);
    let f = &c["fields"];
    assert_eq!(f["age"], 36);
    assert_eq!(f["mobile"], "+491510000001");
    assert_eq!(f["call_after"], "09:30:00");
    assert_eq!(f["last_visit"], "2026-11-02T14:05:00");
    assert_eq!(f["tier"], "silver", "the default applies");
    assert_eq!(f["tags"], json!(["vip", "reseller"]));

    // The lookup call control uses finds it by any of its numbers.
    let reader = env.accounts.reader().expect("reader");
    let m = crate::customers::lookup_by_number(reader.connection(), "0307654321").expect("match");
    assert_eq!(
        (m.id, m.name.as_str(), m.owner.as_deref()),
        (id, "Acme Ltd", Some("olga"))
    );
    drop(reader);

    let other = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Bolt GmbH", "numbers": ["5550100"], "type": "prospect",
                    "fields": { "region": "south", "tier": "gold", "tags": ["new"] } }),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text);
    let bolt = other.json()["id"].as_i64().expect("id");

    for (query, want) in [
        ("name=acme", vec![id]),
        ("number=%2B49-30-1234567", vec![id]),
        ("type=1", vec![bolt]),
        ("type=client", vec![id]),
        ("owner=olga", vec![id]),
        ("field.tier=gold", vec![bolt]),
        ("field.age=036", vec![id]),
        ("field.birthday=1988-02-29", vec![id]),
        ("field.mobile=%2B491510000001", vec![id]),
        ("field.tags=vip", vec![id]),
        ("field.region=south", vec![bolt]),
        ("source=local", vec![id, bolt]),
        ("limit=1&offset=1", vec![bolt]),
    ] {
        let r = env.get(&format!("/api/v1/customers?{query}"), &admin).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text);
        let ids: Vec<i64> = r.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, want, "{query}");
    }
    for (query, field) in [
        ("field.age=old", "field.age"),
        ("field.nope=1", "field.nope"),
        ("colour=red", "colour"),
        ("owner=nobody", "owner"),
        ("number=abc", "number"),
        ("limit=0", "limit"),
    ] {
        let r = env.get(&format!("/api/v1/customers?{query}"), &admin).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text);
        assert_eq!(problem_fields(&r), [field], "{query}");
    }

    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/customers/{id}"),
            &admin,
            json!({ "name": "Acme Limited", "numbers": ["0307654321"],
                    "fields": { "region": "west", "tier": "gold" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["name"], "Acme Limited");
    assert_eq!(r.json()["type"], Value::Null);
    assert_eq!(r.json()["owner"], Value::Null);
    assert_eq!(
        r.json()["fields"],
        json!({ "region": "west", "tier": "gold" })
    );
    let r = env.get(&format!("/api/v1/customers/{id}"), &admin).await;
    assert_eq!(r.json()["numbers"], json!(["0307654321"]));

    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/customers/{id}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env.get(&format!("/api/v1/customers/{id}"), &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    let mine: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.resource == "contacts")
        .map(|r| (r.action.as_str(), r.target.as_str(), r.result.as_str()))
        .collect();
    let target = format!("customer:{id}");
    assert!(mine.contains(&("type_set", "type:2", "ok")), "{mine:?}");
    assert!(
        mine.contains(&("field_create", "field:tags", "ok")),
        "{mine:?}"
    );
    assert!(mine.contains(&("create", &target, "ok")), "{mine:?}");
    assert!(mine.contains(&("update", &target, "ok")), "{mine:?}");
    assert!(mine.contains(&("delete", &target, "ok")), "{mine:?}");
    // The audit log is not masked: it holds no numbers.
    assert!(
        rows.iter().all(|r| !r.detail.contains("7654321")),
        "a number in the audit log"
    );
}

#[tokio::test]
async fn bad_values_of_each_type_are_a_400_naming_the_field_and_change_nothing() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    schema(&env, &admin).await;
    let base = json!({ "name": "X", "fields": { "region": "north" } });
    for (field, value) in [
        ("notes", json!("bell\u{7}")),
        ("notes", json!("x".repeat(501))),
        ("age", json!("thirty")),
        ("age", json!(3.5)),
        ("mobile", json!("ask reception")),
        ("birthday", json!("2023-02-29")),
        ("call_after", json!("25:00")),
        ("last_visit", json!("2026-11-02")),
        ("tier", json!("bronze")),
        ("tags", json!(["vip", "platinum"])),
        ("tags", json!(true)),
        ("region", json!("")),
        ("unknown_field", json!("x")),
    ] {
        let mut body = base.clone();
        body["fields"][field] = value.clone();
        let r = env
            .write(Method::POST, "/api/v1/customers", &admin, body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{field}={value}: {}",
            r.text
        );
        assert_eq!(
            problem_fields(&r),
            [format!("fields.{field}")],
            "{field}={value}"
        );
    }
    // Required without a default: missing is refused.
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "X" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(problem_fields(&r), ["fields.region"]);
    assert!(r.text.contains("required"), "{}", r.text);
    for (body, field) in [
        (json!({ "name": "", "fields": { "region": "n" } }), "name"),
        (
            json!({ "name": "X", "numbers": ["12ab"], "fields": { "region": "n" } }),
            "numbers[0]",
        ),
        (
            json!({ "name": "X", "type": 7, "fields": { "region": "n" } }),
            "type",
        ),
        (
            json!({ "name": "X", "owner": "nobody", "fields": { "region": "n" } }),
            "owner",
        ),
        (
            json!({ "name": "X", "owner_group": "nogroup", "fields": { "region": "n" } }),
            "owner_group",
        ),
        (json!({ "name": "X", "colour": "red" }), "body"),
    ] {
        let r = env
            .write(Method::POST, "/api/v1/customers", &admin, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(problem_fields(&r), [field], "{body}");
    }
    assert_eq!(customer_count(&env), 0);

    // Bad field definitions and types: a 400 naming the field, nothing added.
    for (body, field) in [
        (json!({ "name": "Bad", "type": "text" }), "name"),
        (json!({ "name": "owner", "type": "text" }), "name"),
        (json!({ "name": "x1", "type": "colour" }), "type"),
        (json!({ "name": "x2", "type": "single_choice" }), "choices"),
        (
            json!({ "name": "x3", "type": "integer", "default": "ten" }),
            "default",
        ),
    ] {
        let r = env
            .write(
                Method::POST,
                "/api/v1/customer-fields",
                &admin,
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(problem_fields(&r), [field], "{body}");
    }
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customer-types/10",
            &admin,
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(problem_fields(&r), ["digit"]);
    // A type's name is unique; a field's type cannot change.
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customer-types/3",
            &admin,
            json!({ "name": "client" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customer-fields/age",
            &admin,
            json!({ "name": "age", "type": "text" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(problem_fields(&r), ["type"]);
    let r = env.get("/api/v1/customer-fields", &admin).await;
    assert_eq!(r.json()["fields"].as_array().map(Vec::len), Some(9));
}

#[tokio::test]
async fn the_33rd_custom_field_is_refused_with_the_cap_in_the_message() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    for i in 0..32 {
        let r = env
            .write(
                Method::POST,
                "/api/v1/customer-fields",
                &admin,
                json!({ "name": format!("f{i}"), "type": "text" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{i}: {}", r.text);
    }
    let r = env
        .write(
            Method::POST,
            "/api/v1/customer-fields",
            &admin,
            json!({ "name": "one_more", "type": "text" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("at most 32 custom fields"), "{}", r.text);
    let r = env.get("/api/v1/customer-fields", &admin).await;
    assert_eq!(r.json()["fields"].as_array().map(Vec::len), Some(32));
    // Deleting one makes room.
    let r = env
        .send(
            Method::DELETE,
            "/api/v1/customer-fields/f0",
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/customer-fields",
            &admin,
            json!({ "name": "one_more", "type": "text" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_csv_import_with_one_bad_row_or_a_duplicate_number_changes_nothing() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.user("olga", &["agent"], Some("101")).await;
    let admin = env.login("ada").await;
    schema(&env, &admin).await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Existing", "numbers": ["5559999"], "fields": { "region": "n" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let bad = "name,numbers,type,owner,region,age,tags\n\
               Ann,5550001;5550002,client,olga,north,30,vip;new\n\
               Ben,5550003,1,,south,x,\n\
               Cid,5550002,,,east,,\n\
               Dan,555-9999,,,west,,\n\
               Eve,5550005,,nobody,,,\n";
    let r = csv(&env, &admin, "/api/v1/customers/import", bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let problems: Vec<(i64, String)> = r.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["row"].as_i64().expect("row"),
                p["field"].as_str().expect("f").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            (3, "fields.age".to_owned()),
            (4, "numbers".to_owned()),
            (5, "numbers".to_owned()),
            (6, "fields.region".to_owned()),
        ],
        "{}",
        r.text
    );
    assert!(r.text.contains("also on row 2"), "{}", r.text);
    assert!(r.text.contains("belongs to customer 1"), "{}", r.text);
    assert_eq!(customer_count(&env), 1, "nothing imported");

    let good = "name,numbers,type,owner,region,age,tags\n\
                Ann,5550001;5550002,client,olga,north,30,vip;new\n\
                Ben,5550003,1,,south,,\n";
    let r = csv(&env, &admin, "/api/v1/customers/import", good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["imported"], 2);
    assert_eq!(customer_count(&env), 3);
    let r = env.get("/api/v1/customers?owner=olga", &admin).await;
    assert_eq!(
        r.json()["items"][0]["fields"]["tags"],
        json!(["vip", "new"])
    );
    assert_eq!(r.json()["items"][0]["fields"]["tier"], "silver");

    // The same file again: every number is taken now.
    let r = csv(&env, &admin, "/api/v1/customers/import", good).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(customer_count(&env), 3);
    // A POST with a taken number is a conflict.
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Dup", "numbers": ["555 0003"], "fields": { "region": "n" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // A bad header is row 1.
    let r = csv(
        &env,
        &admin,
        "/api/v1/customers/import",
        "name,colour\nx,red\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json()["problems"][0]["row"], 1);

    let reader = env.accounts.reader().expect("reader");
    let results: Vec<String> = audit::list(&reader, 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.resource == "contacts" && r.action == "import")
        .map(|r| r.result)
        .collect();
    assert_eq!(results, ["failed", "ok", "failed", "failed"]);
}

#[tokio::test]
async fn exports_and_lists_are_masked_for_roles_that_may_not_unmask() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    // A CRM clerk: every customer, import and export, but numbers masked.
    let r = env
        .write(
            Method::POST,
            "/api/v1/roles",
            &admin,
            json!({ "name": "crm_clerk", "description": "customers, masked",
                    "permissions": [
                        { "resource": "contacts", "action": "view", "scope": "site" },
                        { "resource": "contacts", "action": "export", "scope": "site" },
                    ] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    env.user("cleo", &["crm_clerk"], None).await;
    let clerk = env.login("cleo").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/customer-fields",
            &admin,
            json!({ "name": "mobile", "type": "phone" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Masked Co", "numbers": [CUSTOMER_IN],
                    "fields": { "mobile": CUSTOMER_OUT } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let r = env.get("/api/v1/customers/export", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ct")
        .starts_with("text/csv"));
    assert!(
        r.text
            .starts_with("name,numbers,type,owner,owner_group,mobile\n"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(CUSTOMER_IN) && r.text.contains(CUSTOMER_OUT),
        "{}",
        r.text
    );

    let r = env.get("/api/v1/customers/export", &clerk).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("138****5678"), "{}", r.text);
    assert!(r.text.contains("139****7766"), "{}", r.text);
    assert!(
        !r.text.contains(CUSTOMER_IN) && !r.text.contains(CUSTOMER_OUT),
        "{}",
        r.text
    );
    for uri in ["/api/v1/customers", "/api/v1/customers/1"] {
        let r = env.get(uri, &clerk).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
        assert!(r.text.contains("138****5678"), "{uri}: {}", r.text);
        assert!(!r.text.contains(CUSTOMER_IN), "{uri}: {}", r.text);
        assert!(!r.text.contains(CUSTOMER_OUT), "{uri}: {}", r.text);
        assert!(r.text.contains("\"masked\":true"), "{uri}: {}", r.text);
    }
    // The clerk may not import.
    let r = csv(&env, &clerk, "/api/v1/customers/import", "name\nx\n").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(customer_count(&env), 1);
    let reader = env.accounts.reader().expect("reader");
    let exports: Vec<String> = audit::list(&reader, 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.resource == "contacts" && r.action == "export")
        .map(|r| format!("{} {}", r.actor, r.detail))
        .collect();
    assert_eq!(exports.len(), 2, "{exports:?}");
    assert!(
        exports[1].starts_with("cleo") && exports[1].contains("\"masked\":1"),
        "{exports:?}"
    );
}

#[tokio::test]
async fn permissions_and_scope_decide_who_sees_and_changes_what() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let olga = env.user("olga", &["agent"], Some("101")).await;
    env.user("pete", &["agent"], Some("102")).await;
    let rita = env.user("rita", &["supervisor"], Some("104")).await;
    env.user("tim", &["technician"], None).await;
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/groups",
            &admin,
            json!({ "name": "floor", "description": "",
                    "members": [{ "user_id": olga.id, "is_group_admin": false },
                                { "user_id": rita.id, "is_group_admin": true }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for (name, owner, number) in [("Olga's", "olga", "5550001"), ("Pete's", "pete", "5550002")] {
        let r = env
            .write(
                Method::POST,
                "/api/v1/customers",
                &admin,
                json!({ "name": name, "numbers": [number], "owner": owner }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Team's", "numbers": ["5550003"], "owner_group": "floor" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["owner_group"], "floor");
    let names = |r: &Reply| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let olga_c = env.login("olga").await;
    let r = env.get("/api/v1/customers", &olga_c).await;
    assert_eq!(names(&r), ["Olga's"]);
    assert_eq!(
        r.json()["items"][0]["numbers"],
        json!(["*****01"]),
        "agents see masked numbers"
    );
    let r = env.get("/api/v1/customers/2", &olga_c).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // The supervisor administers olga's group: her customer and the group's, unmasked.
    let rita_c = env.login("rita").await;
    let r = env.get("/api/v1/customers", &rita_c).await;
    assert_eq!(names(&r), ["Olga's", "Team's"]);
    assert_eq!(r.json()["items"][0]["numbers"], json!(["5550001"]));
    // The agent may edit her own customer but not give it to pete.
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customers/1",
            &olga_c,
            json!({ "name": "Olga's", "numbers": ["5550001"], "owner": "olga" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customers/1",
            &olga_c,
            json!({ "name": "Olga's", "numbers": ["5550001"], "owner": "pete" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // No contacts.add / delete for agents; nothing for technicians; no field changes
    // without system_config.edit.
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &olga_c,
            json!({ "name": "New", "owner": "olga" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .send(
            Method::DELETE,
            "/api/v1/customers/1",
            Some(&olga_c),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let tim = env.login("tim").await;
    for uri in [
        "/api/v1/customers",
        "/api/v1/customers/export",
        "/api/v1/customer-fields",
    ] {
        let r = env.get(uri, &tim).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.text);
    }
    let r = env
        .write(
            Method::POST,
            "/api/v1/customer-fields",
            &rita_c,
            json!({ "name": "x", "type": "text" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/customer-types/1",
            &rita_c,
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(customer_count(&env), 3);
    let reader = env.accounts.reader().expect("reader");
    let denied = audit::list(&reader, 0, 1000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.resource == "contacts" && r.result == "denied")
        .count();
    assert!(denied >= 5, "denials audited: {denied}");
}

#[tokio::test]
async fn hqs_contacts_are_read_only_on_the_box() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    let admin = env.login("ada").await;
    env.accounts
        .writer()
        .transact("hq contact", |tx, path| {
            crate::customers::store::upsert_hq(
                tx,
                path,
                "hq-7",
                "HQ Contact",
                &["5557777".to_owned()],
                12,
                T0,
            )
        })
        .await
        .expect("hq contact");
    let r = env.get("/api/v1/customers?source=hq", &admin).await;
    assert_eq!(r.json()["total"], 1, "{}", r.text);
    assert_eq!(r.json()["items"][0]["hq_id"], "hq-7");
    let id = r.json()["items"][0]["id"].as_i64().expect("id");
    let r = env
        .write(
            Method::PUT,
            &format!("/api/v1/customers/{id}"),
            &admin,
            json!({ "name": "Renamed" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("HQ owns"), "{}", r.text);
    let r = env
        .send(
            Method::DELETE,
            &format!("/api/v1/customers/{id}"),
            Some(&admin),
            true,
            None,
            "127.0.0.1",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = env.get(&format!("/api/v1/customers/{id}"), &admin).await;
    assert_eq!(r.json()["name"], "HQ Contact");
}

#[tokio::test]
async fn service_records_and_call_notes_follow_the_customer_and_the_calls_owner() {
    let env = env().await;
    env.user("ada", &["admin"], None).await;
    env.user("olga", &["agent"], Some("101")).await;
    env.user("pete", &["agent"], Some("102")).await;
    let admin = env.login("ada").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/customers",
            &admin,
            json!({ "name": "Acme Ltd", "numbers": ["+49 30 1234567"], "owner": "olga" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_i64().expect("id");
    // Olga, on the call (no CDR yet), notes it; then the call's CDR is stored.
    let olga = env.login("olga").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/calls/c-77/notes",
            &olga,
            json!({ "text": "wants a callback" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["author"], "olga");
    let mut cdr = crate::cdr::Cdr {
        call_id: "c-77".into(),
        direction: crate::cdr::Direction::Inbound,
        caller: "+49301234567".into(),
        caller_port: None,
        callee: "101".into(),
        callee_port: Some(1),
        started_at_ms: T0,
        answered_at_ms: Some(T0 + 2_000),
        ended_at_ms: T0 + 32_000,
        disposition: crate::cdr::Disposition::Answered,
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
        .insert_cdr(cdr.clone())
        .await
        .expect("cdr");
    let r = env
        .get(&format!("/api/v1/customers/{id}/service-records"), &olga)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let recs = r.json()["records"].as_array().expect("records").clone();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["user"], "olga");
    assert_eq!(recs[0]["talk_ms"], 30_000);
    assert_eq!(recs[0]["notes"][0]["text"], "wants a callback");
    // After the call: olga adds to her record, pete (not his call) may not.
    let r = env
        .write(
            Method::POST,
            "/api/v1/calls/c-77/notes",
            &olga,
            json!({ "text": "called back" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let pete = env.login("pete").await;
    let r = env
        .write(
            Method::POST,
            "/api/v1/calls/c-77/notes",
            &pete,
            json!({ "text": "mine" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Pete cannot see olga's customer's history either.
    let r = env
        .get(&format!("/api/v1/customers/{id}/service-records"), &pete)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Bad input: an empty note, an unknown field, a limit out of range.
    let r = env
        .write(
            Method::POST,
            "/api/v1/calls/c-77/notes",
            &olga,
            json!({ "text": " " }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/calls/c-77/notes",
            &olga,
            json!({ "text": "x", "mood": 1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .get(
            &format!("/api/v1/customers/{id}/service-records?limit=0"),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .get(&format!("/api/v1/customers/{id}/service-records"), &admin)
        .await;
    assert_eq!(
        r.json()["records"][0]["notes"].as_array().map(Vec::len),
        Some(2)
    );
    // A second call from an unknown number has no record.
    cdr.call_id = "c-78".into();
    cdr.caller = "5550000".into();
    env.accounts.writer().insert_cdr(cdr).await.expect("cdr");
    let r = env
        .get(&format!("/api/v1/customers/{id}/service-records"), &admin)
        .await;
    assert_eq!(r.json()["records"].as_array().map(Vec::len), Some(1));
}
