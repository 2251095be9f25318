//! The HQ server `branch-hq`: receives every box's outbox, masters the rows boxes
//! sync down, and serves operators.
//!
//! # Layout
//!
//! - [`config`]: `hq.toml` and flags -> [`config::ServeConfig`].
//! - [`pki`]: the device CA, server and device certificates, rustls configs.
//! - [`server`]: TLS / mutual-TLS listeners over tokio-rustls + hyper, peer identity
//!   as a request extension, connection limit, graceful shutdown.
//! - [`sync_api`]: the box-facing endpoints of [`crate::wire`] (up, down long-poll,
//!   files).
//! - [`enroll`]: enrollment: a one-time provisioning token and a CSR from a box
//!   without a certificate yet, answered with its device certificate (the one route
//!   served without a client certificate).
//! - [`admin_api`]: the operator API (sites, boxes, certificates, box revocation and
//!   the audit of identity changes, entity CRUD, CDR queries and reports, campaign
//!   results and progress, service records and box-made customers across branches,
//!   box health, feed pruning).
//! - [`validate`]: whole-batch validation and entity validation, before any write.
//! - [`store`]: the [`store::HqStore`] trait, SQLite and PostgreSQL implementations,
//!   numbered migrations (`sync/migrations/`); [`store::crm`] keeps issue 10's
//!   records (campaigns, service records and notes, customers) the same way on both.
//! - [`files`]: resumable recording uploads verified by sha256.
//! - [`feed`]: in-process long-poll wake-ups.
//! - [`rollouts`]: update rollouts: bundles staged for sites in waves (a per-box seed
//!   picks each box's wave), the offer/bundle/outcome endpoints boxes call, outcomes
//!   per box.
//!
//! [`run`] serves both listeners until its shutdown future completes.
//!
//! # Security model
//!
//! Boxes reach only the sync listener, which requires a client certificate signed by
//! HQ's device CA (checked by rustls during the handshake, including validity
//! dates) for everything but enrollment (a client without a certificate is served the
//! enrollment route only, see [`enroll`]); the box is the certificate's CN, looked up in `boxes` (unknown -> 403
//! `unknown_box`, revoked by an operator -> 403 `revoked`), optionally pinned to the
//! certificate's fingerprint (and, during a renewal, to the staged next one). A box's site
//! comes from its `boxes` row, never from a request, so a box can write only its own
//! records and its own site's rows, and a body naming another box is refused. The
//! admin listener is separate, bearer-token protected, loopback by default.
//!
//! # Several instances
//!
//! With PostgreSQL, any number of `branch-hq` processes may serve the same database
//! (behind a TCP load balancer): ingest is idempotent, acks and revisions are
//! computed under row locks (see [`store::postgres`]), and a long-poll sees another
//! instance's changes within `poll_interval`. Recording files need a shared
//! `files_dir`.
//!
//! # Limits
//!
//! Batches: [`crate::wire::MAX_BATCH_RECORDS`] records, 4 MiB inflated; payloads
//! 256 KiB; file chunks 1 MiB; long-polls 60 s. A snapshot holds every live row of a
//! site in one answer. Changes to rows master at HQ are per site (there is no
//! "all sites" row yet: an operator writes each site). Survey records are stored with
//! their payload JSON (in `up_records` on SQLite, `up_seqs` on PostgreSQL) but not
//! projected into a table (the score is on the CDR). Customers made on a box are
//! listed, not mastered: HQ does not edit them or send them to other boxes.

pub mod admin_api;
pub mod config;
pub mod enroll;
mod error;
pub mod feed;
pub mod files;
pub mod pki;
pub mod rollouts;
pub mod server;
pub mod store;
pub mod sync_api;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use config::{HqConfig, RawConfig, ServeConfig, StoreConfig};
pub use error::{Error, Result};
pub use store::HqStore;

/// Wall-clock ms since the Unix epoch (HQ's timestamps: `last_seen`, `received_at`).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    store: Arc<dyn HqStore>,
    config: Arc<HqConfig>,
    feed: Arc<feed::FeedHub>,
    files: files::FileStore,
    /// Update rollouts, in the store's database (`None`: a store without them).
    rollouts: Option<Arc<rollouts::api::RolloutDb>>,
    /// Cancelled at shutdown: long-polls return early.
    shutdown: CancellationToken,
}

/// Opens the configured store (applying migrations).
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn HqStore>> {
    Ok(match config {
        StoreConfig::Sqlite(path) => {
            Arc::new(store::sqlite::SqliteStore::open(path.clone()).await?)
        }
        StoreConfig::Postgres { url, pool_size } => {
            Arc::new(store::postgres::PostgresStore::connect(url, *pool_size).await?)
        }
    })
}

/// `branch-hq serve --dir DIR`: the SQLite database inside DIR.
pub const DIR_SQLITE: &str = "hq.sqlite";
/// `--dir DIR`: the TLS directory inside DIR (CA, server certificate, admin token).
pub const DIR_TLS: &str = "tls";
/// `--dir DIR`: the recording files directory inside DIR.
pub const DIR_FILES: &str = "files";

/// Makes sure the TLS directory has a CA and server certificate (creating them on
/// first start, so `branch-hq serve --db hq.sqlite` is one command) and fills in the
/// admin token from `tls_dir/admin-token` when the config has none.
pub fn prepare_tls_dir(config: &mut ServeConfig) -> Result<()> {
    let dir = config.hq.tls_dir.clone();
    if !dir.join(pki::CA_KEY).exists() {
        pki::init_ca(&dir, &[], SystemTime::now())?;
        tracing::info!(dir = %dir.display(), "created the device CA and server certificate");
    }
    if config.token_from_tls_dir {
        let path = dir.join(pki::ADMIN_TOKEN);
        if !path.exists() {
            pki::write_file(&path, pki::random_hex(24)?.as_bytes(), true, false)?;
        }
        let token = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            op: "read admin token",
            path: path.clone(),
            source,
        })?;
        config.hq.admin_token = token.trim().to_owned();
        config.token_from_tls_dir = false;
    }
    Ok(())
}

/// Serves the sync API on `listener` (HTTPS, mutual TLS, from `config.tls_dir`) and
/// the admin API on `admin_listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish, and returns.
pub async fn run(
    listener: TcpListener,
    admin_listener: TcpListener,
    config: HqConfig,
    store: Arc<dyn HqStore>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let sync_tls = TlsAcceptor::from(Arc::new(pki::server_tls_config(&config.tls_dir)?));
    let admin_tls = if config.admin_tls {
        Some(TlsAcceptor::from(Arc::new(pki::admin_tls_config(
            &config.tls_dir,
        )?)))
    } else {
        None
    };
    let token = CancellationToken::new();
    let state = AppState {
        store: Arc::clone(&store),
        files: files::FileStore::open(config.files_dir.clone())?,
        rollouts: store.rollout_db().await?.map(Arc::new),
        config: Arc::new(config),
        feed: Arc::default(),
        shutdown: token.clone(),
    };
    // Dropping the guard (when run returns) stops the background tasks.
    let _stop = token.clone().drop_guard();
    if let Some(interval) = state.config.prune_interval {
        let (store, keep, stop) = (
            Arc::clone(&store),
            state.config.feed_retention_revisions,
            token.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                match store.prune_feed(keep).await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned the change feed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning the change feed failed"),
                }
            }
        });
    }
    let max = state.config.max_connections;
    let sync = tokio::spawn(server::serve(
        listener,
        Some(sync_tls),
        true,
        sync_api::router(state.clone()),
        Some(enroll::router(state.clone())),
        max,
        token.clone(),
    ));
    let admin = tokio::spawn(server::serve(
        admin_listener,
        admin_tls,
        false,
        admin_api::router(state.clone()),
        None,
        256,
        token.clone(),
    ));
    shutdown.await;
    token.cancel();
    let _ = sync.await;
    let _ = admin.await;
    Ok(())
}
