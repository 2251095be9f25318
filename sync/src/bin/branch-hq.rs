//! `branch-hq`: the HQ server. Parses arguments and calls the library
//! (`branchline_sync::hq`); see that module for what it does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use branchline_sync::hq::{self, pki, validate, RawConfig, ServeConfig, StoreConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "branch-hq",
    version,
    about = "Branchline HQ server: sync for branch boxes, admin API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the sync API (mutual TLS) and the admin API.
    Serve(ServeArgs),
    /// The device CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Boxes.
    #[command(subcommand, name = "box")]
    Box(BoxCommand),
    /// Sites.
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// One directory for everything: DIR/hq.sqlite, DIR/tls, DIR/files (created on
    /// first start; --db, --tls-dir, --files-dir and the config file override parts).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A config file (hq.toml) naming the store.
    #[arg(long)]
    config: Option<PathBuf>,
    /// SQLite database file.
    #[arg(long, conflicts_with = "postgres")]
    db: Option<PathBuf>,
    /// PostgreSQL connection string.
    #[arg(long)]
    postgres: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Sync listener (default 0.0.0.0:8443).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener (default 127.0.0.1:8444).
    #[arg(long)]
    admin_listen: Option<String>,
    /// TLS directory (created with a new CA on first start; default ./tls).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Recording files directory (default ./files).
    #[arg(long)]
    files_dir: Option<PathBuf>,
    /// Admin bearer token (else $BRANCH_HQ_ADMIN_TOKEN, else TLS_DIR/admin-token).
    #[arg(long)]
    admin_token: Option<String>,
    /// Serve the admin API over HTTPS with the server certificate.
    #[arg(long)]
    admin_tls: bool,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the CA, the server certificate and the admin token in a directory.
    Init {
        /// The TLS directory.
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names or IPs for the server certificate (besides 127.0.0.1, localhost).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BoxCommand {
    /// Register a box for a site and write its key, certificate and the CA certificate.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The site.
        #[arg(long)]
        site: String,
        /// The box id (becomes the certificate's CN).
        #[arg(long = "box")]
        box_id: String,
        /// Where to write box.key, box.pem, ca.pem.
        #[arg(long)]
        out: PathBuf,
        /// The TLS directory with the CA (default DIR/tls with --dir, else ./tls).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Certificate lifetime in days.
        #[arg(long, default_value_t = pki::BOX_CERT_DAYS)]
        days: u64,
    },
    /// Revoke a box: every mutual-TLS request of it is refused (403 `revoked`) until it
    /// re-enrolls with a fresh token. Audited (actor `cli`), like the admin API's
    /// `POST /admin/v1/boxes/{box}/revoke`.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The box id.
        #[arg(long = "box")]
        box_id: String,
        /// Why (kept with the box and in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Create a site.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// Site id.
        #[arg(long)]
        site: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
}

/// What `--dir DIR` means: the SQLite database, TLS and files directories inside it
/// (the lowest layer: the config file and the other flags override each part).
fn dir_defaults(dir: &std::path::Path) -> RawConfig {
    RawConfig {
        sqlite: Some(dir.join(hq::DIR_SQLITE)),
        tls_dir: Some(dir.join(hq::DIR_TLS)),
        files_dir: Some(dir.join(hq::DIR_FILES)),
        ..RawConfig::default()
    }
}

fn serve_config(store: StoreArgs, flags: RawConfig) -> anyhow::Result<ServeConfig> {
    let file = match &store.config {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    let file = match &store.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the HQ directory {}", dir.display()))?;
            dir_defaults(dir).overridden_by(file)
        }
        None => file,
    };
    let flags = RawConfig {
        sqlite: store.db,
        postgres: store.postgres,
        ..flags
    };
    let source = store.config.unwrap_or_else(|| PathBuf::from("<flags>"));
    Ok(ServeConfig::from_raw(file.overridden_by(flags), &source)?)
}

async fn store_of(args: StoreArgs) -> anyhow::Result<std::sync::Arc<dyn hq::HqStore>> {
    let cfg = serve_config(args, RawConfig::default())?;
    let what = match &cfg.store {
        StoreConfig::Sqlite(p) => format!("SQLite database {}", p.display()),
        StoreConfig::Postgres { .. } => "PostgreSQL".to_owned(),
    };
    hq::open_store(&cfg.store)
        .await
        .with_context(|| format!("opening the {what}"))
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let flags = RawConfig {
                listen: args.listen,
                admin_listen: args.admin_listen,
                tls_dir: args.tls_dir,
                files_dir: args.files_dir,
                admin_token: args.admin_token,
                admin_tls: args.admin_tls.then_some(true),
                ..RawConfig::default()
            };
            let mut cfg = serve_config(args.store, flags)?;
            let token_file = cfg
                .token_from_tls_dir
                .then(|| cfg.hq.tls_dir.join(pki::ADMIN_TOKEN));
            hq::prepare_tls_dir(&mut cfg)?;
            if let Some(path) = token_file {
                tracing::info!(path = %path.display(), "admin API token (Authorization: Bearer)");
            }
            let store = hq::open_store(&cfg.store)
                .await
                .context("opening the store")?;
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("listening on {}", cfg.listen))?;
            let admin = tokio::net::TcpListener::bind(cfg.admin_listen)
                .await
                .with_context(|| format!("listening on {}", cfg.admin_listen))?;
            tracing::info!(
                sync = %listener.local_addr()?,
                admin = %admin.local_addr()?,
                "branch-hq listening"
            );
            hq::run(listener, admin, cfg.hq, store, shutdown_signal()).await?;
            tracing::info!("branch-hq stopped");
        }
        Command::Ca(CaCommand::Init { dir, names }) => {
            pki::init_ca(&dir, &names, SystemTime::now())?;
            println!(
                "CA, server certificate and admin token written to {}",
                dir.display()
            );
        }
        Command::Box(BoxCommand::Add {
            store,
            site,
            box_id,
            out,
            tls_dir,
            days,
        }) => {
            validate::validate_id("--box", &box_id)?;
            let tls_dir = tls_dir.unwrap_or_else(|| match &store.dir {
                Some(dir) => dir.join(hq::DIR_TLS),
                None => PathBuf::from("tls"),
            });
            let ca = pki::Ca::load(&tls_dir)?;
            let now = SystemTime::now();
            let issued = ca.issue_box(
                &box_id,
                now - Duration::from_secs(3600),
                now + Duration::from_secs(days.saturating_mul(86_400)),
            )?;
            let store = store_of(store).await?;
            store
                .register_box(&box_id, &site, Some(&issued.fingerprint), hq::now_ms())
                .await?;
            for path in pki::write_box_files(&out, &issued)? {
                println!("wrote {}", path.display());
            }
        }
        Command::Box(BoxCommand::Revoke {
            store,
            box_id,
            reason,
        }) => {
            validate::validate_id("--box", &box_id)?;
            let reason = validate::revocation_reason(&reason)?;
            let store = store_of(store).await?;
            let rec = store
                .revoke_box(&box_id, reason, "cli", hq::now_ms())
                .await?;
            tracing::warn!(box_id = %rec.id, reason, "box revoked");
            println!("box {} revoked (site {})", rec.id, rec.site);
        }
        Command::Site(SiteCommand::Add { store, site, name }) => {
            validate::validate_id("--site", &site)?;
            let store = store_of(store).await?;
            store
                .create_site(&site, name.as_deref().unwrap_or(&site), hq::now_ms())
                .await?;
            println!("site {site} created");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // RUST_LOG as `Targets` (`info`, `warn,branchline_sync=debug`): the box's
    // branchd does the same, and the workspace builds tracing-subscriber without the
    // regex-based EnvFilter (its size on the box).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("branch-hq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("branch-hq: {e:#}");
            ExitCode::FAILURE
        }
    }
}
