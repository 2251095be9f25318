//! Issue 10's records at HQ (schema 10), on both stores: campaign attempt results and
//! progress, customers' service records with their notes, dispositions and
//! recordings, and customers made on a box. Each is stored once per (box, epoch,
//! seq), kinds sent again after a change keep the latest, the admin API lists them
//! across branches, and a record HQ cannot use is refused naming the problem with
//! nothing of its batch stored.

use branchline_sync::wire::{RecordKind, UpRecord};
use reqwest::Method;
use serde_json::{json, Value};

use super::harness::{cdr_record, Backend, Env};
use crate::both_stores;

fn record(seq: i64, kind: RecordKind, key: &str, payload: Value) -> UpRecord {
    UpRecord {
        seq,
        kind,
        key: key.to_owned(),
        created_at_ms: 1_700_000_000_000 + seq,
        payload,
    }
}

fn result(seq: i64, attempt: i64, outcome: Option<&str>, disposition: Option<u8>) -> UpRecord {
    let mut p = json!({
        "attempt_id": attempt, "campaign_id": 2, "campaign": "spring", "lead_id": 40,
        "lead_name": "Ada", "number": "+4930123456", "agent": "ana", "call_id": "b1-call-1",
        "started_at_ms": 1_700_000_000_000i64, "notes": "",
    });
    if let Some(o) = outcome {
        p["outcome"] = json!(o);
        p["ended_at_ms"] = json!(1_700_000_030_000i64);
    }
    if let Some(d) = disposition {
        p["disposition"] = json!(d);
        p["notes"] = json!("call back in May");
        p["lead_result"] = json!("max_attempts");
    }
    record(seq, RecordKind::CampaignResult, &attempt.to_string(), p)
}

fn progress(seq: i64) -> UpRecord {
    record(
        seq,
        RecordKind::CampaignProgress,
        "2",
        json!({ "campaign_id": 2, "campaign": "spring", "state": "running", "leads": 3,
                "pending": 1, "dialing": 1, "done": { "max_attempts": 1 },
                "attempts": { "busy": 1, "open": 1 }, "at_ms": 5 }),
    )
}

fn customer(seq: i64, name: &str, deleted: bool) -> UpRecord {
    let mut p = json!({
        "id": 12, "name": name, "numbers": ["+4930123456", "0301234"], "type_digit": 2,
        "type_name": "vip", "owner": "ana", "fields": { "tier": "gold", "tags": ["a", "b"] },
        "created_by": "ana", "created_at_ms": 1, "updated_at_ms": seq,
    });
    if deleted {
        p["deleted"] = json!(true);
    }
    record(seq, RecordKind::Customer, "12", p)
}

fn service(seq: i64) -> UpRecord {
    record(
        seq,
        RecordKind::ServiceRecord,
        "b1-call-1",
        json!({ "call_id": "b1-call-1", "customer": { "local": 12 }, "number": "+4930123456",
                "direction": "outbound", "agent_id": "100", "user": "ana", "extension": "201",
                "started_at_ms": 1_700_000_000_000i64, "talk_ms": 25_000,
                "outcome": "answered" }),
    )
}

fn note(seq: i64, id: i64, text: &str) -> UpRecord {
    record(
        seq,
        RecordKind::CallNote,
        "b1-call-1",
        json!({ "call_id": "b1-call-1", "note_id": id, "author": "ana", "text": text,
                "at_ms": 1_700_000_040_000i64 + id }),
    )
}

async fn list(env: &Env, path: &str, field: &str) -> Vec<Value> {
    let (status, page) = env.hq.admin(Method::GET, path, None).await;
    assert_eq!(status, 200, "{path}: {page}");
    page[field]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{path}: {page}"))
}

async fn crm_records_are_stored_once_latest_wins_and_listed_across_branches(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let sha = "ab".repeat(32);
    let batch = b1.batch(vec![
        cdr_record("b1", 1),
        result(2, 7, None, None),
        result(3, 7, Some("busy"), None),
        progress(4),
        customer(5, "Ada Lovelace", false),
        service(6),
        note(7, 1, "asked for a quote"),
        record(
            8,
            RecordKind::Disposition,
            "b1-call-1",
            json!({ "call_id": "b1-call-1", "agent_id": "100", "digit": 3,
                    "type_name": "interested", "at_ms": 9 }),
        ),
        record(
            9,
            RecordKind::Recording,
            "b1-call-1",
            json!({ "call_id": "b1-call-1", "sha256": sha, "size": 10,
                    "started_at_ms": 1, "duration_ms": 2, "format": "wav/pcm16/stereo" }),
        ),
        note(10, 2, "quote sent\nby mail"),
        result(11, 7, Some("busy"), Some(4)),
    ]);
    let (status, ack) = b1.post(&env.hq, &batch).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acked_seq"], 11);
    // Sent again: the same answer, nothing added.
    let (status, again) = b1.post(&env.hq, &batch).await;
    assert_eq!((status, &again), (200, &ack));

    let results = list(
        &env,
        "/admin/v1/campaign-results?site=s1",
        "campaign_results",
    )
    .await;
    assert_eq!(results.len(), 1, "one row per attempt: {results:?}");
    let r = &results[0];
    assert_eq!(
        (r["box"].as_str(), r["site"].as_str()),
        (Some("b1"), Some("s1"))
    );
    assert_eq!(r["attempt_id"], 7);
    assert_eq!(r["outcome"], "busy", "the latest record wins");
    assert_eq!(r["disposition"], 4);
    assert_eq!(r["notes"], "call back in May");
    assert_eq!(r["number"], "+4930123456");
    assert_eq!(r["lead_result"], "max_attempts");
    assert_eq!(
        list(
            &env,
            "/admin/v1/campaign-results?campaign=spring&agent=ana",
            "campaign_results"
        )
        .await
        .len(),
        1
    );
    assert!(list(
        &env,
        "/admin/v1/campaign-results?agent=bob",
        "campaign_results"
    )
    .await
    .is_empty());

    let progress_rows = list(
        &env,
        "/admin/v1/campaign-progress?site=s1",
        "campaign_progress",
    )
    .await;
    assert_eq!(progress_rows.len(), 1);
    assert_eq!(progress_rows[0]["pending"], 1);
    assert_eq!(progress_rows[0]["done"], json!({ "max_attempts": 1 }));

    let services = list(&env, "/admin/v1/service-records?site=s1", "service_records").await;
    assert_eq!(services.len(), 1);
    let s = &services[0];
    assert_eq!(s["customer"], json!({ "local": 12 }));
    assert_eq!(
        (s["talk_ms"].as_i64(), s["outcome"].as_str()),
        (Some(25_000), Some("answered"))
    );
    assert_eq!(
        s["disposition"],
        json!({ "digit": 3, "type_name": "interested" })
    );
    assert_eq!(s["recording_sha256"], json!(sha));
    let notes: Vec<&str> = s["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["asked for a quote", "quote sent\nby mail"]);
    assert_eq!(
        list(
            &env,
            "/admin/v1/service-records?number=%2B4930123456&agent=100",
            "service_records"
        )
        .await
        .len(),
        1
    );
    assert!(list(
        &env,
        "/admin/v1/service-records?customer=c-1",
        "service_records"
    )
    .await
    .is_empty());

    let customers = list(&env, "/admin/v1/customers?number=0301234", "customers").await;
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0]["name"], "Ada Lovelace");
    assert_eq!(
        customers[0]["fields"],
        json!({ "tier": "gold", "tags": ["a", "b"] })
    );
    assert_eq!(customers[0]["id"], 12, "the box's id");

    // The customer is edited (a number dropped), then deleted on the box.
    let mut edited = customer(12, "Ada King", false);
    edited.payload["numbers"] = json!(["+4930123456"]);
    let (status, _) = b1.post(&env.hq, &b1.batch(vec![edited])).await;
    assert_eq!(status, 200);
    let by_old_number = list(&env, "/admin/v1/customers?number=0301234", "customers").await;
    assert!(by_old_number.is_empty(), "{by_old_number:?}");
    let now = list(&env, "/admin/v1/customers?site=s1", "customers").await;
    assert_eq!(now[0]["name"], "Ada King");
    let (status, _) = b1
        .post(&env.hq, &b1.batch(vec![customer(13, "Ada King", true)]))
        .await;
    assert_eq!(status, 200);
    assert!(list(&env, "/admin/v1/customers?site=s1", "customers")
        .await
        .is_empty());
    let gone = list(
        &env,
        "/admin/v1/customers?site=s1&deleted=true",
        "customers",
    )
    .await;
    assert_eq!((gone.len(), &gone[0]["deleted"]), (1, &json!(true)));

    // Another branch: its rows sit beside b1's, and the site filter tells them apart.
    let b2 = env.new_box("b2", "s2").await;
    let (status, _) = b2
        .post(
            &env.hq,
            &b2.batch(vec![result(1, 7, Some("answered"), None)]),
        )
        .await;
    assert_eq!(status, 200);
    let all = list(&env, "/admin/v1/campaign-results", "campaign_results").await;
    let sites: Vec<&str> = all.iter().map(|r| r["site"].as_str().unwrap()).collect();
    assert_eq!(sites, ["s1", "s2"]);
    assert_eq!(
        list(
            &env,
            "/admin/v1/campaign-results?site=s2",
            "campaign_results"
        )
        .await[0]["outcome"],
        "answered"
    );
    let (status, page) = env
        .hq
        .admin(
            Method::GET,
            "/admin/v1/campaign-results?site=s1&limit=1",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page["next"].is_i64(), "{page}");
    let (status, body) = env
        .hq
        .admin(Method::GET, "/admin/v1/service-records?colour=red", None)
        .await;
    assert_eq!(status, 400, "{body}");

    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!(counts.up_records, 13);
    env.hq.stop().await;
}
both_stores!(crm_records_are_stored_once_latest_wins_and_listed_across_branches);

/// A record HQ cannot use is refused with the field named, and nothing of its batch
/// (not even the good records before it) is stored.
async fn bad_crm_records_are_refused_and_nothing_is_stored(backend: Backend) {
    let env = Env::start(backend).await;
    let b1 = env.new_box("b1", "s1").await;
    let with = |r: UpRecord, f: &dyn Fn(&mut Value)| {
        let mut r = r;
        f(&mut r.payload);
        r
    };
    let cases: Vec<(UpRecord, &str)> = vec![
        (
            with(result(2, 7, Some("busy"), None), &|p| {
                p["outcome"] = json!("maybe")
            }),
            "outcome \"maybe\" is not one of",
        ),
        (
            with(result(2, 7, None, None), &|p| p["ended_at_ms"] = json!(5)),
            "outcome and ended_at_ms go together",
        ),
        (
            with(result(2, 7, None, None), &|p| p["number"] = json!("+49 30")),
            "is not a number",
        ),
        (
            with(result(2, 7, None, Some(4)), &|p| {
                p["disposition"] = json!(11)
            }),
            "disposition 11 is not 0-9",
        ),
        (
            record(
                2,
                RecordKind::CampaignResult,
                "8",
                result(2, 7, None, None).payload,
            ),
            "differs from the record key",
        ),
        (
            with(progress(2), &|p| p["leads"] = json!(9)),
            "counts 3 leads",
        ),
        (
            with(progress(2), &|p| p["state"] = json!("sleeping")),
            "state \"sleeping\"",
        ),
        (
            with(service(2), &|p| p["direction"] = json!("internal")),
            "inbound or outbound",
        ),
        (
            with(service(2), &|p| p["customer"] = json!({ "local": 0 })),
            "customer local id",
        ),
        (
            with(service(2), &|p| p["talk_ms"] = json!(-1)),
            "talk_ms is negative",
        ),
        (
            with(note(2, 1, "x"), &|p| p["text"] = json!("")),
            "text is empty",
        ),
        (
            with(note(2, 1, "x"), &|p| p["text"] = json!("a\u{7}b")),
            "control characters",
        ),
        (
            with(customer(2, "Ada", false), &|p| {
                p["numbers"] = json!(["12ab"])
            }),
            "numbers[0]",
        ),
        (
            with(customer(2, "Ada", false), &|p| {
                p["type_digit"] = Value::Null
            }),
            "type_name without type_digit",
        ),
        (
            with(customer(2, "Ada", false), &|p| p["mood"] = json!(1)),
            "unknown field",
        ),
    ];
    for (bad, want) in cases {
        let batch = b1.batch(vec![cdr_record("b1", 1), bad]);
        let (status, body) = b1.post(&env.hq, &batch).await;
        assert_eq!(status, 400, "{want}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{want}: {body}");
    }
    let counts = env.hq.store.counts("b1").await.unwrap();
    assert_eq!((counts.up_records, counts.cdrs), (0, 0));
    for (path, field) in [
        ("/admin/v1/campaign-results", "campaign_results"),
        ("/admin/v1/campaign-progress", "campaign_progress"),
        ("/admin/v1/service-records", "service_records"),
        ("/admin/v1/customers?deleted=true", "customers"),
    ] {
        assert!(list(&env, path, field).await.is_empty(), "{path}");
    }
    env.hq.stop().await;
}
both_stores!(bad_crm_records_are_refused_and_nothing_is_stored);
