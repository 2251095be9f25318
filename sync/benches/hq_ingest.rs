//! HQ ingest throughput on PostgreSQL: N simulated boxes (default 100) post batches
//! of CDRs (default 1000 each, one request in flight per box, like the agent) to an
//! in-process `branch-hq` over mutual TLS; prints sustained CDRs/s.
//!
//! ```text
//! cargo bench -p branchline-sync --bench hq_ingest
//! HQ_BENCH_BOXES=100 HQ_BENCH_BATCH=1000 HQ_BENCH_BATCHES=10 HQ_BENCH_POOL=16 \
//!     cargo bench -p branchline-sync --bench hq_ingest
//! ```
//!
//! Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust); makes and drops a
//! database `hq_bench_<random>`. The load generator runs in the same process, so
//! the figure is for server, database and clients sharing this machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use branchline_sync::agent::encode_batch;
use branchline_sync::hq::store::postgres::PostgresStore;
use branchline_sync::hq::{self, pki, HqConfig, HqStore};
use branchline_sync::wire::{RecordKind, UpBatch, UpRecord, PROTOCOL_VERSION, UP_PATH};
use serde_json::json;

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch(box_id: &str, first: i64, n: usize) -> UpBatch {
    let records = (first..first + n as i64)
        .map(|seq| {
            let call_id = format!("{box_id}-{seq}");
            let started = 1_700_000_000_000 + seq * 45_000;
            let answered = seq % 3 != 0;
            UpRecord {
                seq,
                kind: RecordKind::Cdr,
                key: call_id.clone(),
                created_at_ms: started + 40_000,
                payload: json!({
                    "call_id": call_id, "direction": if seq % 2 == 0 { "inbound" } else { "outbound" },
                    "caller": format!("55501{:05}", seq % 100_000), "caller_port": null,
                    "callee": format!("{}", 200 + seq % 16), "callee_port": (seq % 16) as u8,
                    "started_at_ms": started,
                    "answered_at_ms": if answered { Some(started + 4_000) } else { None },
                    "ended_at_ms": started + 40_000,
                    "disposition": if answered { "answered" } else { "no_answer" },
                    "hangup_side": "caller",
                }),
            }
        })
        .collect();
    UpBatch {
        version: PROTOCOL_VERSION,
        box_id: box_id.to_owned(),
        epoch: "bench".to_owned(),
        firmware_version: "bench".to_owned(),
        backlog: 0,
        oldest_pending_ms: None,
        records,
    }
}

fn main() {
    let boxes = env_num("HQ_BENCH_BOXES", 100);
    let batch_size = env_num("HQ_BENCH_BATCH", 1000);
    let batches = env_num("HQ_BENCH_BATCHES", 10);
    let pool = env_num("HQ_BENCH_POOL", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = format!("hq_bench_{}", pki::random_hex(6).expect("random"));
        let (admin, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        // Run in a task so that a failed run still drops its database.
        let name = db.clone();
        let result =
            tokio::spawn(async move { run(&name, boxes, batch_size, batches, pool).await }).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .expect("drop database");
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}

async fn run(db: &str, boxes: usize, batch_size: usize, batches: usize, pool: usize) {
    let setup = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls_dir = dir.path().join("tls");
    pki::init_ca(&tls_dir, &[], SystemTime::now()).expect("CA");
    let url = format!("host=127.0.0.1 port=5432 user=postgres dbname={db}");
    let store: Arc<dyn HqStore> =
        Arc::new(PostgresStore::connect(&url, pool).await.expect("store"));
    store
        .create_site("bench", "Bench", hq::now_ms())
        .await
        .expect("site");
    let ca = pki::Ca::load(&tls_dir).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::load_certs(&tls_dir.join(pki::CA_CERT)).expect("CA cert") {
        roots.add(c).expect("root");
    }
    let now = SystemTime::now();
    let mut clients = Vec::new();
    let mut wire_bytes = 0usize;
    for b in 0..boxes {
        let id = format!("box{b:04}");
        let issued = ca
            .issue_box(
                &id,
                now - Duration::from_secs(60),
                now + Duration::from_secs(86_400),
            )
            .expect("cert");
        store
            .register_box(&id, "bench", Some(&issued.fingerprint), hq::now_ms())
            .await
            .expect("box");
        let certs = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
        let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
            .expect("key pem")
            .expect("key");
        let tls = rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs, key)
            .expect("client cert");
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let bodies: Vec<Vec<u8>> = (0..batches)
            .map(|i| encode_batch(&batch(&id, (i * batch_size) as i64 + 1, batch_size)))
            .collect();
        wire_bytes += bodies.iter().map(Vec::len).sum::<usize>();
        clients.push((http, bodies));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = HqConfig::new(
        tls_dir.clone(),
        dir.path().join("files"),
        "bench-token-0123456789".into(),
    );
    config.prune_interval = None;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hq::run(
        listener,
        admin,
        config,
        Arc::clone(&store),
        async {
            let _ = stop_rx.await;
        },
    ));

    let total = boxes * batches * batch_size;
    eprintln!(
        "hq_ingest: setup done in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (http, bodies) in clients {
        tasks.push(tokio::spawn(async move {
            let mut last = 0i64;
            for body in bodies {
                let resp = http
                    .post(format!("https://127.0.0.1:{port}{UP_PATH}"))
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status().as_u16(), 200, "upload refused");
                let ack: serde_json::Value = resp.json().await.expect("ack");
                last = ack["acked_seq"].as_i64().expect("acked_seq");
            }
            last
        }));
    }
    for t in tasks {
        let last = t.await.expect("box task");
        assert_eq!(last, (batches * batch_size) as i64, "final ack");
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let _ = server.await;
    let counts = store.counts("box0000").await.expect("counts");
    assert_eq!(
        counts.cdrs,
        (batches * batch_size) as i64,
        "box0000 rows stored once"
    );
    println!(
        "hq_ingest: {boxes} boxes x {batches} batches x {batch_size} CDRs = {total} CDRs in {:.2} s: {:.0} CDRs/s sustained ({:.1} wire bytes/CDR gzip, pool {pool})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        wire_bytes as f64 / total as f64,
    );
}
