//! `branchd`: parses arguments, loads the config, sets up logging and runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use branchline_firmware::accounts::{self, HashParams, NewUser};
use branchline_firmware::config::{Config, LogFormat};
use branchline_firmware::daemon;
use branchline_firmware::store::{system_clock_ms, Store};
use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Allocations of this size and more get their own mapping, returned to the system
/// when freed (glibc's initial value, kept fixed: see [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free memory at the top of the heap beyond this goes back to the system (glibc's
/// initial value, kept fixed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 128 * 1024;
/// Malloc arenas at most (glibc's default is 8 per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 2;

/// Tunes glibc's malloc for a daemon that runs for months on a box with little RAM.
///
/// glibc raises its mmap threshold to the size of any mapped block that is freed (up
/// to 32 MiB), and its trim threshold to twice that. One argon2id password check
/// (19 MiB, `accounts::password`: every web login, voicemail and agent PIN) therefore
/// moved every later check's 19 MiB onto the heap, where it stayed resident after
/// the check, freed but never returned: the web server's first logins added about
/// 24 MiB to `branchd`'s RSS for good (BENCHMARKS.md, web page). Setting the
/// thresholds fixes them (glibc stops adjusting them), so large blocks are mapped and
/// unmapped again, and a freed heap top is trimmed. Two arenas bound the per-thread
/// heaps of tokio's worker and blocking threads (the daemon has few busy threads).
/// `mallopt` is the only interface; it runs before any thread exists, and a refusal
/// (another libc) only leaves the defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // FFI to glibc's mallopt; nothing else in branchd is unsafe.
fn tune_malloc() {
    use nix::libc;
    for (param, value) in [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_ARENA_MAX, ARENA_MAX),
    ] {
        // SAFETY: mallopt only sets an allocator parameter (it takes the allocator's
        // lock itself); called first thing in main, before any other thread runs.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

/// Other C libraries keep their own allocator's behaviour.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Default config location on the box.
const DEFAULT_CONFIG: &str = "/etc/branchline/branchd.toml";

/// The Branchline gateway daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file.
    #[arg(short, long, default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    /// A maintenance command instead of running the daemon.
    #[command(subcommand)]
    command: Option<Command>,
    /// Log format, overriding the config's `[log] format`.
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
    /// Only validate the config (and the board profile it names), then exit.
    #[arg(long)]
    check_config: bool,
}

/// Console maintenance commands (run on the box as root, next to the daemon).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Verify the audit log's hash chain: exit 0 if intact, 1 naming the first bad row.
    AuditVerify,
    /// Print the sync status (backlog, cursor, epoch, last success and error, WAN
    /// states as last stored) as JSON, read from the store; works while the daemon runs.
    SyncStatus,
    /// Register an existing recording file (e.g. to queue it for HQ again after the
    /// store was rebuilt): computes its sha256 and size, takes duration and format from
    /// its WAV header, copies it into `paths.recordings` unless it is already there, and
    /// writes its row and outbox row; prints the result as JSON. Works while the daemon
    /// runs (its uploader finds the row at its next outbox poll).
    RecordingAdd {
        /// The call leg it recorded.
        #[arg(long)]
        call_id: String,
        /// Recording start, ms since the Unix epoch (default: the file's modification
        /// time minus its duration).
        #[arg(long)]
        started_at_ms: Option<i64>,
        /// Length in ms (default: from the WAV header).
        #[arg(long)]
        duration_ms: Option<i64>,
        /// Format name, e.g. `wav/pcm16/stereo` (default: from the WAV header).
        #[arg(long)]
        format: Option<String>,
        /// The file.
        file: PathBuf,
    },
    /// Factory reset: wipe the store (users, audit log, CDRs, provisioning state),
    /// keys and certificates, and recordings; the firmware slots and branchd.toml stay.
    /// Refuses without `--yes`, and while `branchd` runs (stop it first, or hold the
    /// reset button 10 s instead). The reset is logged, not audited (the audit log is
    /// wiped too).
    FactoryReset {
        /// Really wipe (no question is asked).
        #[arg(long)]
        yes: bool,
    },
    /// Create a user (e.g. the first admin); the password is read from stdin.
    UserAdd {
        /// Login name.
        #[arg(long)]
        username: String,
        /// Role name (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Extension number.
        #[arg(long)]
        extension: Option<String>,
    },
}

fn main() -> ExitCode {
    tune_malloc();
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("branchd: {e}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Some(Command::AuditVerify) => return audit_verify(&config),
        Some(Command::SyncStatus) => return sync_status(&config),
        Some(Command::RecordingAdd {
            call_id,
            started_at_ms,
            duration_ms,
            format,
            file,
        }) => {
            let add = branchline_firmware::sync::files::AddRecording {
                file,
                call_id,
                started_at_ms,
                duration_ms,
                format,
            };
            return recording_add(&config, &add);
        }
        Some(Command::UserAdd {
            username,
            roles,
            display_name,
            extension,
        }) => return user_add(&config, username, roles, display_name, extension),
        Some(Command::FactoryReset { yes }) => return factory_reset(&config, yes),
        None => {}
    }
    // The board-dependent checks run before anything starts, for --check-config and
    // for a real start alike, so a bad port map never touches the store or the lines.
    if let Err(e) = check(&config) {
        eprintln!("branchd: {e:#}");
        return ExitCode::from(2);
    }
    if args.check_config {
        if let Err(e) = check_sync(&config) {
            eprintln!("branchd: {e:#}");
            return ExitCode::from(2);
        }
        println!("{}: config OK", config.source.display());
        return ExitCode::SUCCESS;
    }
    let format = match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Human,
        None => config.log.format,
    };
    init_logging(&config.log.level, format);
    match run(config) {
        Ok(daemon::Exit::Shutdown) => ExitCode::SUCCESS,
        // A provisioning bundle applied, or a factory reset: start again.
        Ok(daemon::Exit::RestartProvisioned | daemon::Exit::RestartFactoryReset) => restart_self(),
        // An update from HQ is installed: the unit reboots the box into it (see
        // `branchline_firmware::updater::EXIT_RESTART_INTO_UPDATE`).
        Ok(daemon::Exit::RestartIntoUpdate) => {
            ExitCode::from(branchline_firmware::updater::EXIT_RESTART_INTO_UPDATE)
        }
        // A reboot from the system page or the API: the unit reboots the box (see
        // `branchline_firmware::daemon::EXIT_REBOOT`).
        Ok(daemon::Exit::Reboot) => ExitCode::from(daemon::EXIT_REBOOT),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("branchd: {e:#}");
            // A failed trial boot of an update has its own status, so the unit can
            // reboot into the previous slot (see `branchline_firmware::health`).
            match e.downcast_ref::<branchline_firmware::error::Error>() {
                Some(branchline_firmware::error::Error::UpdateUnhealthy { .. }) => {
                    ExitCode::from(branchline_firmware::health::EXIT_UNHEALTHY_TRIAL)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn audit_verify(config: &Config) -> ExitCode {
    let result = Store::reader(&config.paths.db_path())
        .and_then(|reader| branchline_firmware::audit::verify_store(&reader));
    match result {
        Ok(rows) => {
            println!("audit log OK: {rows} rows");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("branchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sync_status(config: &Config) -> ExitCode {
    let result = Store::reader(&config.paths.db_path()).and_then(|reader| {
        branchline_firmware::sync::status::report_from_store(
            &reader,
            config.hq.as_ref(),
            system_clock_ms(),
        )
    });
    match result.map(|report| serde_json::to_string_pretty(&report)) {
        Ok(Ok(json)) => {
            use std::io::Write;
            match writeln!(std::io::stdout().lock(), "{json}") {
                // A reader that stopped early (`| head`) is not an error.
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("branchd: cannot print the sync status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Err(e)) => {
            eprintln!("branchd: cannot print the sync status: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("branchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn recording_add(
    config: &Config,
    add: &branchline_firmware::sync::files::AddRecording,
) -> ExitCode {
    let result = Store::open(&config.paths.db_path())
        .map_err(branchline_firmware::sync::files::AddError::from)
        .and_then(|mut store| {
            branchline_firmware::sync::files::add_recording(
                &mut store,
                &config.paths.recordings,
                add,
            )
        });
    match result.map(|added| serde_json::to_string_pretty(&added)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("branchd: cannot print the recording: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("branchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user_add(
    config: &Config,
    username: String,
    roles: Vec<String>,
    display_name: Option<String>,
    extension: Option<String>,
) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("branchd: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let new = NewUser {
        username,
        display_name: display_name.unwrap_or_default(),
        password,
        extension,
        enabled: true,
        roles,
        ..NewUser::default()
    };
    let result = Store::open(&config.paths.db_path()).and_then(|mut store| {
        accounts::console_create_user(&mut store, &new, HashParams::OWASP, system_clock_ms())
    });
    match result {
        Ok(user) => {
            println!("user {} created (id {})", user.username, user.id);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("branchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces this process with a fresh `branchd` (same arguments, same pid, so systemd
/// and a supervising test keep following it); exits with
/// [`daemon::EXIT_RESTART`] for `Restart=on-failure` when that fails.
fn restart_self() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let error = match std::env::current_exe() {
        Ok(exe) => {
            tracing::info!(exe = %exe.display(), "restarting branchd");
            std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .exec()
        }
        Err(e) => e,
    };
    tracing::error!(error = %error, status = daemon::EXIT_RESTART, "cannot re-execute branchd; exiting for systemd to restart it");
    eprintln!(
        "branchd: cannot re-execute itself ({error}); exit status {} asks systemd to restart it",
        daemon::EXIT_RESTART
    );
    ExitCode::from(daemon::EXIT_RESTART)
}

fn factory_reset(config: &Config, yes: bool) -> ExitCode {
    use branchline_firmware::factory_reset::{reset, DaemonLock, Trigger, WipePlan};
    let plan = WipePlan::from_config(config);
    if !yes {
        eprintln!(
            "branchd: factory reset NOT done: it erases {} (store, users, audit log, CDRs, provisioning), {} and the device certificate and key; run again with --yes",
            plan.data_dir.display(),
            plan.recordings.display()
        );
        return ExitCode::FAILURE;
    }
    // Logged to stderr (the journal when run by systemd): the audit log goes too.
    init_logging(&config.log.level, config.log.format);
    let _lock = match DaemonLock::acquire(&plan.data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("branchd: factory reset NOT done: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reset(&plan, Trigger::Command) {
        Ok(report) => {
            println!(
                "factory reset done: {} paths removed; branchd starts unprovisioned",
                report.removed.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("branchd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &Config) -> anyhow::Result<()> {
    let profile = branchline_board::profile::BoardProfile::resolve(&config.board.profile)?;
    config.check_board(profile.fxs_ports(), profile.fxo_ports())?;
    Ok(())
}

/// `--check-config` also reads the `[hq]` certificates and key (a start does not fail
/// on them: telephony runs without sync, and the sync status shows the error).
fn check_sync(config: &Config) -> anyhow::Result<()> {
    if let Some(hq) = &config.hq {
        branchline_firmware::sync::client::tls_config(hq)?;
    }
    Ok(())
}

fn init_logging(level: &str, format: LogFormat) {
    // RUST_LOG, when set and valid, wins over the config (handy for a technician on
    // the box). `Targets` (`info`, `warn,branchline_firmware::sip_endpoint=debug`)
    // rather than `EnvFilter`: its span/field/regex directives cost the box about
    // 200 KB of regex engine (BENCHMARKS.md, size).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // Standard error, and a ring of recent lines for the diagnostics bundle (`tools::logs`).
    let layer =
        tracing_subscriber::fmt::layer().with_writer(branchline_firmware::tools::logs::install());
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .init(),
        LogFormat::Human => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init(),
    }
}

fn run(config: Config) -> anyhow::Result<daemon::Exit> {
    // Two workers, or one when the daemon may run on one CPU only (a single-core box,
    // or pinned with taskset): a second worker on the same core only adds thread
    // switches to every hand-over between tasks (BENCHMARKS.md, "SIP signalling").
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        // On a worker, not on this thread: the daemon's own loop (call control, the
        // board loop) then hands messages to and from the SIP endpoint and the media
        // engine without waking another thread for each (a profile of the SIP bench
        // had a third of the time in thread switches between this thread and the
        // worker; BENCHMARKS.md, "SIP signalling").
        let daemon = tokio::spawn(daemon::run(config, shutdown));
        Ok(daemon.await.context("the daemon task failed")??)
    })
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
