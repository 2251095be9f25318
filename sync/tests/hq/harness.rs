//! Starts `branch-hq` in-process on 127.0.0.1:0 and talks to it like a box and an
//! operator would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use branchline_sync::agent::encode_batch;
use branchline_sync::hq::store::postgres::PostgresStore;
use branchline_sync::hq::store::sqlite::SqliteStore;
use branchline_sync::hq::{self, pki, HqConfig, HqStore};
use branchline_sync::wire::{RecordKind, UpBatch, UpRecord, PROTOCOL_VERSION, UP_PATH};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async scenario on both stores as two tests.
#[macro_export]
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::hq::harness::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::hq::harness::Backend::Postgres).await;
            }
        }
    };
}

pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A PostgreSQL database made for one test, dropped when this is dropped.
#[derive(Debug)]
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let name = format!("hq_test_{}", pki::random_hex(8).unwrap());
        let (client, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must be reachable at 127.0.0.1:5432 (user postgres, trust)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        PgDb { name }
    }

    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: drop the database from a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// One running `branch-hq`.
pub struct Hq {
    pub sync_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub store: Arc<dyn HqStore>,
    pub tls_dir: PathBuf,
    pub files_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

/// Everything one test holds: temp dir, database, servers.
pub struct Env {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDb>,
    pub hq: Hq,
}

impl Env {
    /// A fresh HQ with site `s1` and box `b1` registered (certificate pinned).
    pub async fn start(backend: Backend) -> Env {
        // reqwest is built without a default crypto provider; the admin client needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        {
            use tracing_subscriber::prelude::*;
            let filter: tracing_subscriber::filter::Targets =
                "warn,branchline_sync=info".parse().expect("filter");
            let _ = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_test_writer()
                        .with_filter(filter),
                )
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        pki::init_ca(&tls_dir, &[], SystemTime::now()).unwrap();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDb::create().await),
        };
        let store = open(backend, dir.path(), pg.as_ref()).await;
        store
            .create_site("s1", "Site one", hq::now_ms())
            .await
            .unwrap();
        store
            .create_site("s2", "Site two", hq::now_ms())
            .await
            .unwrap();
        let hq = Hq::start(store, &tls_dir, &dir.path().join("files")).await;
        Env {
            backend,
            dir,
            pg,
            hq,
        }
    }

    /// A second instance on the same database (PostgreSQL only).
    pub async fn second_instance(&self) -> Hq {
        let store = open(self.backend, self.dir.path(), self.pg.as_ref()).await;
        Hq::start(store, &self.hq.tls_dir, &self.dir.path().join("files2")).await
    }

    /// Registers `box_id` in `site` and returns a client with its certificate.
    pub async fn new_box(&self, box_id: &str, site: &str) -> BoxClient {
        let ca = pki::Ca::load(&self.hq.tls_dir).unwrap();
        let now = SystemTime::now();
        let issued = ca
            .issue_box(
                box_id,
                now - Duration::from_secs(60),
                now + Duration::from_secs(86_400),
            )
            .unwrap();
        self.hq
            .store
            .register_box(box_id, site, Some(&issued.fingerprint), hq::now_ms())
            .await
            .unwrap();
        BoxClient::new(box_id, &issued.cert_pem, &issued.key_pem, &self.hq.tls_dir)
    }
}

pub async fn open(backend: Backend, dir: &Path, pg: Option<&PgDb>) -> Arc<dyn HqStore> {
    match backend {
        Backend::Sqlite => Arc::new(SqliteStore::open(dir.join("hq.sqlite")).await.unwrap()),
        Backend::Postgres => Arc::new(PostgresStore::connect(&pg.unwrap().url(), 8).await.unwrap()),
    }
}

impl Hq {
    pub async fn start(store: Arc<dyn HqStore>, tls_dir: &Path, files_dir: &Path) -> Hq {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (sync_addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let mut config = HqConfig::new(
            tls_dir.to_owned(),
            files_dir.to_owned(),
            ADMIN_TOKEN.to_owned(),
        );
        config.poll_interval = Duration::from_millis(200);
        config.prune_interval = None;
        let (tx, rx) = oneshot::channel();
        let st = Arc::clone(&store);
        let task = tokio::spawn(async move {
            hq::run(listener, admin, config, st, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Hq {
            sync_addr,
            admin_addr,
            store,
            tls_dir: tls_dir.to_owned(),
            files_dir: files_dir.to_owned(),
            stop: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// An admin request; returns status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.admin_addr))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// rustls client config trusting HQ's CA and presenting a certificate.
pub fn client_tls(cert_pem: &str, key_pem: &str, ca_dir: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::load_certs(&ca_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    rustls::ClientConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap()
}

/// A box talking to HQ over mutual TLS.
pub struct BoxClient {
    pub id: String,
    pub http: reqwest::Client,
    pub tls: Arc<rustls::ClientConfig>,
    pub epoch: String,
}

impl BoxClient {
    pub fn new(id: &str, cert_pem: &str, key_pem: &str, ca_dir: &Path) -> BoxClient {
        let tls = client_tls(cert_pem, key_pem, ca_dir);
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        BoxClient {
            id: id.to_owned(),
            http,
            tls: Arc::new(tls),
            epoch: "epoch-1".to_owned(),
        }
    }

    /// POSTs a gzip body; returns status and JSON.
    pub async fn post_raw(&self, hq: &Hq, body: Vec<u8>) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!(
                "https://127.0.0.1:{}{UP_PATH}",
                hq.sync_addr.port()
            ))
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn post(&self, hq: &Hq, batch: &UpBatch) -> (u16, Value) {
        self.post_raw(hq, encode_batch(batch))
            .await
            .expect("request")
    }

    pub async fn get(&self, hq: &Hq, path_and_query: &str) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .http
            .get(format!(
                "https://127.0.0.1:{}{path_and_query}",
                hq.sync_addr.port()
            ))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn put(&self, hq: &Hq, path_and_query: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .put(format!(
                "https://127.0.0.1:{}{path_and_query}",
                hq.sync_addr.port()
            ))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A batch of the given records.
    pub fn batch(&self, records: Vec<UpRecord>) -> UpBatch {
        UpBatch {
            version: PROTOCOL_VERSION,
            box_id: self.id.clone(),
            epoch: self.epoch.clone(),
            firmware_version: "1.2.3".to_owned(),
            backlog: 7,
            oldest_pending_ms: Some(1_700_000_000_000),
            records,
        }
    }

    /// A batch of CDRs with these seqs.
    pub fn cdr_batch(&self, seqs: impl IntoIterator<Item = i64>) -> UpBatch {
        self.batch(seqs.into_iter().map(|s| cdr_record(&self.id, s)).collect())
    }
}

/// A CDR record with seq `seq` (answered when seq is even).
pub fn cdr_record(box_id: &str, seq: i64) -> UpRecord {
    let call_id = format!("{box_id}-call-{seq}");
    let started = 1_700_000_000_000 + seq * 60_000;
    let answered = seq % 2 == 0;
    UpRecord {
        seq,
        kind: RecordKind::Cdr,
        key: call_id.clone(),
        created_at_ms: started + 30_000,
        payload: json!({
            "call_id": call_id,
            "direction": "inbound",
            "caller": "5551234",
            "caller_port": null,
            "callee": "201",
            "callee_port": 1,
            "started_at_ms": started,
            "answered_at_ms": if answered { Some(started + 5_000) } else { None },
            "ended_at_ms": started + 30_000,
            "disposition": if answered { "answered" } else { "no_answer" },
            "hangup_side": "caller",
        }),
    }
}
