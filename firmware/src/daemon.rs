//! The tokio edge of `branchd`: opens the board and the store, then drives call control.
//!
//! ```text
//! line controller (UART/pty) ──frames──▶ board loop ──▶ CallControl (sans-IO)
//!        ▲                                  │  │
//!        └──────commands, bridged audio─────┘  └──jobs──▶ store task ──▶ writer thread (SQLite)
//! ```
//!
//! - The board loop owns [`CallControl`] and the audio routing table. Audio frames are
//!   forwarded to the bridged port as soon as they arrive (no buffering in the daemon,
//!   so the added latency is the time to re-encode one frame).
//! - The media engine ([`crate::media_engine`]) runs as a task of its own, created at
//!   start with `[media]` (or its defaults): the board loop hands it the frames and key
//!   presses of ports bridged to SIP legs and turns call control's `Connect` /
//!   `Disconnect` involving a leg into engine bridges; the engine sends frames for those
//!   ports straight to the line controller every 20 ms. Call control's SIP actions go
//!   to the SIP endpoint's channel (logged and dropped while there is none); SIP inputs
//!   and the engine's RFC 4733 digits come back to call control on one channel.
//!   Conference rooms (`Output::Conference`: supervisor listen / whisper / barge) are
//!   the engine's too: the board loop sends the frames of ports in a room to it.
//! - Supervisor rights (`Output::CheckSupervisor`) are checked off the loop like agent
//!   PINs ([`crate::accounts::may_supervise`]: `calls.listen` over the agent's groups,
//!   for the user owning the dialling extension); the answer comes back to call control
//!   through the main loop, and each decision is logged with its reason.
//! - Call recording ([`crate::recorder`]): at start-up, before the store's writer
//!   starts, recordings a crash cut short are repaired and indexed; then a writer
//!   thread records calls by `[recording]` policy. The board loop taps the frames from
//!   the ports, the media engine's port sink those to the ports and its relay the RTP
//!   of recorded SIP legs, and call control's bridges (with each leg's call,
//!   `call_of_leg`), answered queue calls, the digits keyed during calls (the
//!   on-demand toggle code, from ports and SIP legs; a start, pause or resume is
//!   confirmed with a beep to the phone that keyed it) and CDRs start, pause and stop
//!   recordings. At shutdown the recorder finishes its files after the media engine
//!   stopped, and they are indexed before the store stops.
//! - Store writes (CDRs, port states) go through one ordered queue to a task that awaits
//!   each commit, so the loop never waits on `fsync`; a CDR is logged as stored only
//!   after its commit returned.
//! - Shutdown (SIGTERM/SIGINT or the `shutdown` future): call control ends every call
//!   (CDRs with hang-up side "system"), the commands reach the line controller, the store
//!   queue is drained and the writer thread checkpoints the WAL before `run` returns.
//! - The web API ([`crate::api`], when `[web] listen` is set) runs as a task of its
//!   own; at shutdown it is told to stop, finishes the requests in flight (or is
//!   aborted after 5 s) and drops its store writer handle before
//!   the writer thread is joined.
//! - The web page's live status ([`crate::web::status`]): the board loop feeds a
//!   `StatusPublisher` the board's events and call control's port states, publishes
//!   it on a watch channel after every turn (only when it changed), sends the line
//!   readings and ring-test commands it asks for, and answers the page's ring tests
//!   and its requests for the calls in progress (call control's snapshot, joined on a
//!   task of its own with the media engine's leg statistics). The SIP endpoint
//!   publishes its registrations snapshot on a watch channel made before the web
//!   starts (the page says "starting" until its first snapshot).
//! - Progressive campaigns ([`crate::campaign::driver`]): a task plans rounds in the
//!   store; the main loop publishes the ACD's available agents to it on a watch
//!   channel after every turn, places its dials with `CallControl::campaign_dial`
//!   (a placed lead pops on the agent's desktop as a `leads` event) and sends it back
//!   what became of each dial and call control's attempt outcomes. At shutdown it is
//!   stopped (after recording those outcomes) and awaited before the writer is joined.
//! - Sync with HQ ([`crate::sync`]): the agent (when `[hq]` is set) and the WAN monitor
//!   run as tasks; the board loop follows the WAN states (WAN LED, trunk-or-FXO
//!   routing of outside calls). At shutdown they are cancelled and awaited before the
//!   writer thread is joined. A sync setup error (missing certificate) is logged and
//!   shown in the sync status; the daemon runs on without sync.
//! - The post-boot health check ([`crate::health`]) wraps the daemon: [`run`] starts
//!   it, the start-up reports its facts (store read back, line controller ready, web
//!   and SIP listeners bound, main loop reached), and an update's trial boot that
//!   fails it shuts the daemon down with [`Error::UpdateUnhealthy`].
//! - Updates through HQ ([`crate::updater`]): with `[update] from_hq = true` and sync
//!   set up, the updater task runs next to the sync agent (same mutual-TLS client,
//!   stopped and awaited with it). The main loop publishes the number of calls up on
//!   a watch channel after every turn; the health check tells it when a trial boot is
//!   committed. When it has installed an update, the daemon shuts down as on SIGTERM
//!   and [`run`] answers [`Exit::RestartIntoUpdate`] (exit status
//!   [`crate::updater::EXIT_RESTART_INTO_UPDATE`]).
//! - Provisioning and factory reset: at start the provisioned settings are laid over
//!   `branchd.toml` ([`crate::provision::settings`]); when the USB watcher applies a
//!   bundle, or the web page or API a QR token ([`crate::provision::local`]; both
//!   report on one `applied` channel), the daemon stops as on SIGTERM once no call is up and [`run`] answers
//!   [`Exit::RestartProvisioned`]. The main loop samples the reset button every
//!   [`crate::factory_reset::POLL_INTERVAL`]; held 10 s, the daemon stops, wipes
//!   ([`crate::factory_reset::reset`]) after the store writer is joined, and answers
//!   [`Exit::RestartFactoryReset`]. `main` re-executes `branchd` for both (exit status
//!   [`EXIT_RESTART`] if that fails). The data directory is locked
//!   ([`crate::factory_reset::DaemonLock`]) for the daemon's lifetime.
//! - Reboot (the system page, `POST /api/v1/system/reboot`): the web side sends
//!   [`crate::web::status::ControlRequest::Reboot`]; the main loop refuses it while
//!   calls are up unless forced ([`crate::web::status::reboot_decision`]), else ends
//!   the calls (CDRs written), stops as on SIGTERM and [`run`] answers [`Exit::Reboot`]:
//!   `main` exits with [`EXIT_REBOOT`], which the generated unit turns into a reboot.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchline_board::gpio::{CdevGpio, Gpio, Led, MemoryGpio};
use branchline_board::link::{LineLink, LinkSender};
use branchline_board::profile::{BoardProfile, UartPath};
use branchline_board::sim::{serve_console, Simulator};
use branchline_media::progress::{ProgressDetector, ProgressTone};
use line_proto::{Body, Command, Event, Frame, BOARD_PORT, PROTOCOL_VERSION};
use tokio::sync::mpsc;

use crate::accounts::{self, Accounts, AuthSettings, HashParams, InstallerStatus};
use crate::call::{
    AcdSettings, CallControl, CallSettings, Extension, FxoLine, LegId, MediaEnd, Output, PortState,
    SipExtension,
};
use crate::cdr::{Cdr, JournalUpdate};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::{self, Fact, HealthCheck};
use crate::media_engine::{MediaEngine, MediaSettings};
use crate::store::{system_clock_ms, ExtensionRow, Store, StoreWriter};
use crate::sync::{self, status::SyncHandle, store::SyncStore};
use crate::tones::Country;

/// How long the line controller has to answer `Hello` before start-up fails.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the web API may take to finish its requests at shutdown.
const WEB_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Work for the store task, in the order the board loop produced it.
#[derive(Debug)]
enum StoreJob {
    /// Boxed: a CDR (with its legs' quality and transfer chain) is far larger than a
    /// port state, and the queue holds one slot per job.
    Cdr(Box<Cdr>),
    /// The journal of live calls (call control's [`Output::Journal`]).
    Journal(JournalUpdate),
    PortState(u8, PortState),
    /// A call-center agent's state change, for `agent_state_log` and the outbox.
    AgentState {
        agent: crate::acd::AgentId,
        state: crate::acd::AgentState,
        extension: Option<String>,
        call_id: Option<String>,
        at_ms: i64,
    },
    /// A call blocked by this blacklist entry: its hit counter.
    BlacklistHit {
        pattern: String,
        at_ms: i64,
    },
    /// Voicemail messages: registered, heard, deleted.
    Voicemail(crate::voicemail::service::StoreJob),
    /// An agent's disposition of a call ([`Output::Disposition`]); the outcome goes
    /// back on `answers`.
    Disposition {
        check: u64,
        agent: crate::acd::AgentId,
        call_id: String,
        caller: String,
        digit: u8,
        at_ms: i64,
        answers: mpsc::UnboundedSender<(Check, u64, bool)>,
    },
}

/// What a call-control check answered off the board loop was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// [`Output::CheckAgentPin`].
    AgentPin,
    /// [`Output::Disposition`].
    Disposition,
    /// [`Output::CheckSupervisor`].
    Supervisor,
}

/// Why the daemon stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `shutdown` completed (SIGTERM/SIGINT).
    Shutdown,
    /// An update from HQ is installed in the inactive slot: restart into it (the
    /// caller exits with [`crate::updater::EXIT_RESTART_INTO_UPDATE`]).
    RestartIntoUpdate,
    /// A provisioning bundle was applied: start again so every subsystem reads the new
    /// settings ([`crate::provision::settings`]); the caller re-executes `branchd`
    /// (or exits with [`EXIT_RESTART`]).
    RestartProvisioned,
    /// The reset button was held 10 s and the box is wiped
    /// ([`crate::factory_reset`]): start again unprovisioned, like
    /// [`Exit::RestartProvisioned`].
    RestartFactoryReset,
    /// A reboot asked from the web page or `POST /api/v1/system/reboot`: the caller
    /// exits with [`EXIT_REBOOT`], which the unit turns into a reboot.
    Reboot,
}

/// Exit status of `branchd` after a reboot was asked for (the system page, the API):
/// the generated unit lists it in `RestartPreventExitStatus=`, so the unit fails and
/// `FailureAction=reboot` reboots the box (as for [`crate::updater::EXIT_RESTART_INTO_UPDATE`]).
pub const EXIT_REBOOT: u8 = 6;

/// Exit status of `branchd` when it should be started again (a provisioning bundle
/// applied, a factory reset done) and re-executing itself failed: `Restart=on-failure`
/// starts it again.
pub const EXIT_RESTART: u8 = 5;

/// Restarts the main loop asked for: the reset button (at once), a reboot from the
/// web page or API (at once: it was refused while calls were up unless forced) or an
/// applied provisioning bundle (once no call is up).
#[derive(Debug, Default)]
struct RestartDue {
    provisioned: Option<String>,
    factory_reset: bool,
    reboot: bool,
}

impl RestartDue {
    fn due(&self, active_calls: usize) -> Option<Exit> {
        if self.factory_reset {
            Some(Exit::RestartFactoryReset)
        } else if self.reboot {
            Some(Exit::Reboot)
        } else if self.provisioned.is_some() && active_calls == 0 {
            Some(Exit::RestartProvisioned)
        } else {
            None
        }
    }
}

/// Runs the daemon until `shutdown` completes or a fatal error occurs, under the
/// post-boot health check: on an update's trial boot it commits the slot once healthy,
/// or stops the daemon and returns [`Error::UpdateUnhealthy`] when not. Also stops
/// (with [`Exit::RestartIntoUpdate`]) once the updater installed an update from HQ.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Exit> {
    let health = HealthCheck::start(&config).await;
    let unhealthy = health.unhealthy();
    // Cancelled by the updater task once an update is installed (see start_updater).
    let restart = tokio_util::sync::CancellationToken::new();
    let restart_due = restart.clone().cancelled_owned();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = unhealthy => tracing::error!("stopping: this update's trial boot failed its health check"),
            () = restart_due => tracing::info!("stopping: restarting into the update installed from HQ"),
        }
    };
    let data_dir = config.paths.data_dir.clone();
    // Set by `serve` when provisioning or the reset button stopped it for a restart.
    let local_restart = std::sync::OnceLock::new();
    let result = serve(
        config,
        shutdown,
        health.reporter(),
        &restart,
        &local_restart,
    )
    .await;
    match health.finish(result).await {
        Ok(()) => Ok(match local_restart.get() {
            Some(exit) => *exit,
            None if restart.is_cancelled() => Exit::RestartIntoUpdate,
            None => Exit::Shutdown,
        }),
        Err(e) => {
            if let Error::UpdateUnhealthy { failed, .. } = &e {
                // The rolled_back report after the reboot says why (updater::trial).
                if let Err(why) = crate::updater::trial::note_failure(&data_dir, failed) {
                    tracing::warn!(error = %why, "failed facts not added to the update trial record");
                }
            }
            Err(e)
        }
    }
}

/// The daemon itself: [`run`] without the health check around it; `health` hears of
/// each start-up step as it succeeds.
async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()>,
    health: &health::Reporter,
    restart: &tokio_util::sync::CancellationToken,
    local_restart: &std::sync::OnceLock<Exit>,
) -> Result<()> {
    let profile = BoardProfile::resolve(&config.board.profile)?;
    config.check_board(profile.fxs_ports(), profile.fxo_ports())?;
    let board_country =
        Country::from_code(&profile.country).ok_or_else(|| Error::UnknownBoardCountry {
            model: profile.model.clone(),
            country: profile.country.clone(),
        })?;
    // One daemon per data directory; `branchd factory-reset` refuses while it runs.
    let _data_lock = crate::factory_reset::DaemonLock::acquire(&config.paths.data_dir)?;

    // The store first: nothing happens on the lines before it can record it.
    let db_path = config.paths.db_path();
    let mut store = Store::open(&db_path)?;
    // Provisioned settings over branchd.toml (bad ones refused and logged).
    let board_ports = crate::provision::settings::BoardPorts {
        fxs: profile.fxs_ports(),
        fxo: profile.fxo_ports(),
    };
    let config = crate::provision::settings::apply_at_start(config, &db_path, &board_ports);
    let (country, law) = config.telephony.resolve(board_country);
    // Stored numbers follow the site's numbering plan (re-normalised when it changed).
    let plan = crate::numbers::SitePlan::of_country(country);
    let adopted = store.transact("adopt the numbering plan", |tx, path| {
        crate::numbers::store::adopt(tx, path, &plan, system_clock_ms())
    })?;
    if adopted.changed {
        tracing::info!(
            country = country.code(),
            customer_numbers = adopted.customer_numbers,
            customer_duplicates = adopted.customer_duplicates,
            lead_numbers = adopted.lead_numbers,
            lead_conflicts = adopted.lead_conflicts,
            field_values = adopted.field_values,
            "numbering plan adopted; stored numbers rewritten to its canonical form"
        );
    }
    // The site's time zone for whoever judges the branch's wall clock (calling hours).
    let zone_changed = store.transact("adopt the site time zone", |tx, path| {
        crate::site_time::store::adopt(tx, path, &config.telephony.time_zone, system_clock_ms())
    })?;
    if zone_changed {
        tracing::info!(
            time_zone = %config.telephony.time_zone.spec,
            "site time zone adopted"
        );
    }
    // Until the box is enrolled, the installer account is its only local login.
    let now_ms = system_clock_ms();
    match accounts::bootstrap_installer(
        &mut store,
        config.auth.installer_password_hash.as_deref(),
        &config.paths.data_dir,
        HashParams::OWASP,
        now_ms,
    )? {
        InstallerStatus::CreatedWithLabel(path) => tracing::info!(
            label = %path.display(),
            "installer account created; its password is on the label file"
        ),
        status => tracing::debug!(?status, "installer account"),
    }
    // Calls that were up when the box last stopped (power cut, crash): their CDRs,
    // from the journal of live calls, marked interrupted.
    let cut_calls = match store.recover_live_calls() {
        Ok(r) if r == crate::store::RecoveredCalls::default() => Default::default(),
        Ok(r) => {
            tracing::warn!(
                interrupted = r.interrupted.len(),
                finished = r.finished.len(),
                duplicates = r.duplicates.len(),
                unreadable = r.unreadable.len(),
                "CDRs of the calls up at the last stop stored at start-up"
            );
            r.recordings
        }
        Err(e) => {
            tracing::error!(error = %e, "CDRs of the calls up at the last stop not stored");
            Default::default()
        }
    };
    // Recordings a crash cut short: repaired (or quarantined) and indexed before
    // anything else is recorded; a failure here leaves the phones working.
    match crate::recorder::recover(&mut store, &config.paths.recordings, &cut_calls) {
        Ok(r) if r == crate::recorder::Recovered::default() => {}
        Ok(r) => tracing::warn!(
            repaired = r.repaired.len(),
            registered_late = r.registered_late.len(),
            quarantined = r.quarantined.len(),
            "recordings recovered at start-up"
        ),
        Err(e) => tracing::error!(error = %e, "recordings not recovered at start-up"),
    }
    // Voicemail messages a crash cut short, likewise.
    let voicemail_dir = crate::voicemail::dir(&config.paths.data_dir);
    match crate::voicemail::writer::recover(&mut store, &voicemail_dir) {
        Ok(r) if r == crate::voicemail::writer::Recovered::default() => {}
        Ok(r) => tracing::warn!(
            registered = r.registered.len(),
            quarantined = r.quarantined.len(),
            dropped = r.dropped.len(),
            deletions = r.tombstones,
            "voicemail messages recovered at start-up"
        ),
        Err(e) => tracing::error!(error = %e, "voicemail messages not recovered at start-up"),
    }
    let (writer, writer_thread) = store.spawn_writer();
    let accounts = Accounts::new(
        writer.clone(),
        db_path.clone(),
        AuthSettings::from(&config.auth),
    );
    let ports = profile
        .fxs_ports()
        .map(|p| (p, "fxs"))
        .chain(profile.fxo_ports().map(|p| (p, "fxo")))
        .collect();
    // Analog extensions with their port, and the SIP phones' accounts without one (a
    // SIP account on an FXS extension's number shares that row): both are the box's
    // extensions (a user may be given either through the API, and masking treats both
    // as inside numbers).
    let extensions = config
        .extensions
        .iter()
        .map(|e| ExtensionRow {
            number: e.number.as_str().to_owned(),
            name: e.name.clone(),
            port: Some(e.port.get()),
            call_waiting: e.call_waiting,
        })
        .chain(
            config
                .sip_accounts
                .iter()
                .filter(|a| !config.extensions.iter().any(|e| e.number == a.extension))
                .map(|a| ExtensionRow {
                    number: a.extension.as_str().to_owned(),
                    name: a.name.clone(),
                    port: None,
                    call_waiting: a.call_waiting,
                }),
        )
        .collect();
    writer.replace_board(ports, extensions).await?;
    // HQ masters extension names and call waiting (the config keeps the port map):
    // call control starts with the store's view of them.
    let stored_extensions = Store::reader(&db_path)?.extensions()?;
    // The call center's queues and agents (store tables of migration 0007). A store
    // whose call-center rows do not fit together leaves the phones working without
    // queues, loudly.
    let acd_config = {
        let reader = Store::reader(&db_path)?;
        match crate::acd::store::load_config(reader.connection(), &db_path) {
            Ok(c) => {
                tracing::info!(
                    queues = c.queues().len(),
                    agents = c.agents().len(),
                    "call center loaded"
                );
                Some(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "call center not loaded: queues are off");
                None
            }
        }
    };
    // Caller screening (migration 0011); reloaded whenever it changes (below).
    let blacklist = load_blacklist(&db_path);
    health.passed(
        Fact::Store,
        format!("migrated, {} extensions read back", stored_extensions.len()),
    );

    // Sync with HQ and the WAN monitor: tasks of their own; telephony never waits on
    // them.
    let sync_stop = tokio_util::sync::CancellationToken::new();
    // Calls up, for the updater (it installs only while none is up, unless forced):
    // published by the main loop after every turn.
    let (calls_up_tx, calls_up) = tokio::sync::watch::channel(0usize);
    let updater = UpdaterLinks {
        calls_up,
        trial_committed: health.trial_committed(),
        restart: restart.clone(),
    };
    let (sync, sync_tasks, mut wan_rx) =
        start_sync(&config, &writer, &db_path, &sync_stop, updater);

    // The line controller: real UART, or the simulator's pty, opened the same way.
    let mut _simulator = None;
    let uart_path: PathBuf = match (&config.board.uart, &profile.uart.path) {
        (Some(p), _) => p.clone(),
        (None, UartPath::Device(p)) => p.clone(),
        (None, UartPath::Simulator) => {
            let sim = Simulator::start(&profile, law)?;
            let path = sim.tty_path().to_owned();
            tracing::info!(tty = %path.display(), "started the simulated line controller");
            if let Some(addr) = config.board.sim_console {
                let listener = TcpListener::bind(addr).map_err(|source| Error::Listen {
                    what: "simulator console",
                    addr,
                    source,
                })?;
                let addr = listener.local_addr().unwrap_or(addr);
                tracing::info!(%addr, "simulator console listening (try: branch-sim --connect {addr})");
                let handle = sim.handle();
                std::thread::Builder::new()
                    .name("sim-console".into())
                    .spawn(move || serve_console(handle, listener))
                    .map_err(|source| Error::Thread {
                        what: "simulator console",
                        source,
                    })?;
            }
            _simulator = Some(sim);
            path
        }
    };
    let (link, mut frames, stats) = LineLink::open(&uart_path, profile.uart.baud)?;
    let ready = hello(&link, &mut frames, &uart_path).await?;
    if let Event::Ready {
        fxs_ports,
        fxo_ports,
        firmware,
        ..
    } = ready
    {
        tracing::info!(
            fxs_ports,
            fxo_ports,
            firmware = format!("{firmware:#06x}"),
            "line controller ready"
        );
        if fxs_ports < profile.fxs_ports || fxo_ports < profile.fxo_ports {
            return Err(Error::BoardMismatch {
                model: profile.model.clone(),
                expected: (profile.fxs_ports, profile.fxo_ports),
                found: (fxs_ports, fxo_ports),
            });
        }
        health.passed(
            Fact::LineController,
            format!("ready, firmware {firmware:#06x}, {fxs_ports} FXS / {fxo_ports} FXO"),
        );
    }

    let mut gpio: Box<dyn Gpio> = match (&profile.gpio, profile.simulated) {
        (Some(cfg), false) => Box::new(CdevGpio::open(cfg)?),
        // The built-in simulator's GPIO: its console presses the reset button.
        _ => match _simulator.as_ref().and_then(Simulator::take_gpio) {
            Some(sim_gpio) => Box::new(sim_gpio),
            None => Box::new(MemoryGpio::new(profile.port_count()).0),
        },
    };
    gpio.set_led(Led::Power, true)?;
    // The power-fail relay bridges FXS 1 to FXO 1 while the box is down; the daemon
    // takes the lines over now and hands them back to the relay when it stops.
    gpio.set_power_fail_relay(false)?;

    // Voice prompts: music on hold and announcements (a bad file is named and skipped).
    // The image's built-in set first; the installer's files replace them by name.
    let prompts_dir = config.paths.data_dir.join(crate::prompts::PROMPTS_DIR);
    let system_dir = &config.paths.system_prompts;
    let (mut prompts, prompt_errors) =
        crate::prompts::PromptLibrary::load_dirs(&[system_dir, &prompts_dir]);
    for e in &prompt_errors {
        tracing::error!(error = %e, "voice prompt not loaded");
    }
    tracing::info!(prompts = prompts.len(), dir = %prompts_dir.display(), system_dir = %system_dir.display(), "voice prompts loaded");
    // A PSTN line's inbound list names extensions or queue numbers (queues are the
    // store's, so the config could not check those).
    for line in &config.fxo_lines {
        for n in &line.inbound {
            let known = config.extensions.iter().any(|e| e.number == *n)
                || config.sip_accounts.iter().any(|a| a.extension == *n)
                || acd_config
                    .as_ref()
                    .is_some_and(|a| a.queues().iter().any(|q| q.number == *n));
            if !known {
                tracing::error!(port = line.port.get(), number = %n, "fxo line inbound number is no extension and no queue: skipped");
            }
        }
    }
    if let Some(acd) = &acd_config {
        for q in acd.queues() {
            if let crate::acd::MusicOnHold::Prompt(name) = &q.music_on_hold {
                if prompts.get(name).is_none() {
                    tracing::warn!(queue = %q.name, prompt = %name, "music-on-hold prompt not found: the queue plays the tone");
                }
            }
        }
    }

    // Voicemail (migration 0014): mailboxes, their messages and greetings.
    let voicemail = match crate::voicemail::service::load(
        &db_path,
        &voicemail_dir,
        config.voicemail.codes.clone(),
        &mut prompts,
    ) {
        Ok(v) => {
            tracing::info!(
                mailboxes = v.mailboxes.len(),
                messages = v.messages.len(),
                "voicemail loaded"
            );
            Some(v)
        }
        Err(e) => {
            tracing::error!(error = %e, "voicemail not loaded: no mailboxes");
            None
        }
    };

    let now = Instant::now();
    let wall_clock_ms = system_clock_ms();
    let settings = CallSettings {
        country,
        extensions: config
            .extensions
            .iter()
            .map(|e| {
                let number = e.number.as_str();
                let stored = stored_extensions.iter().find(|s| s.number == number);
                Extension {
                    number: number.to_owned(),
                    port: e.port.get(),
                    name: stored.map_or_else(|| e.name.clone(), |s| s.name.clone()),
                    call_waiting: stored.map_or(e.call_waiting, |s| s.call_waiting),
                    permissions: e.permissions.clone(),
                }
            })
            .collect(),
        fxo_lines: config
            .fxo_lines
            .iter()
            .map(|l| FxoLine {
                port: l.port.get(),
                inbound: l.inbound.iter().map(|n| n.as_str().to_owned()).collect(),
                outbound: l.outbound,
            })
            .collect(),
        outside_line_prefix: config
            .telephony
            .outside_line_prefix
            .as_ref()
            .map(|p| p.as_str().to_owned()),
        first_digit_timeout: config.telephony.first_digit_timeout,
        inter_digit_timeout: config.telephony.inter_digit_timeout,
        ring_timeout: config.telephony.ring_timeout,
        sip_extensions: config
            .sip_accounts
            .iter()
            .map(|a| SipExtension {
                number: a.extension.as_str().to_owned(),
                name: a.name.clone(),
                call_waiting: a.call_waiting,
                permissions: a.permissions.clone(),
            })
            .collect(),
        call_id_prefix: format!("{wall_clock_ms:x}"),
        sip_host: if config.media.local_ip.is_unspecified() {
            "branchd.invalid".to_owned()
        } else {
            config.media.local_ip.to_string()
        },
        wall_clock_ms,
        epoch: now,
        acd: acd_config.clone().map(|acd| AcdSettings {
            config: acd,
            codes: config.call_center.feature_codes.clone(),
        }),
        prompts: prompts.durations(),
        conference_rooms: config
            .conference_rooms
            .iter()
            .map(|r| crate::call::MeetMeRoom {
                number: r.number.as_str().to_owned(),
                pin: r.pin.clone(),
                max_parties: r.max_parties as usize,
            })
            .collect(),
        echo_test_code: config.telephony.echo_test_code.clone(),
    };
    let mut calls = CallControl::new(settings, profile.fxs_ports(), profile.fxo_ports());
    if let Some(v) = voicemail {
        calls.set_voicemail(v);
    }
    if let Some(list) = blacklist {
        tracing::info!(
            entries = list.len(),
            mode = list.settings().mode.as_str(),
            "blacklist loaded"
        );
        calls.set_blacklist(list);
    }
    match StoreDirectory::open(&db_path) {
        Ok(d) => calls.set_directory(Box::new(d)),
        Err(e) => {
            tracing::warn!(error = %e, "customer directory not opened: caller-ID names only")
        }
    }
    let mut blacklist_reloads = reloader(
        writer.blacklist_changed(),
        &db_path,
        "blacklist",
        load_blacklist,
    );
    let mut acd_reloads = reloader(writer.acd_changed(), &db_path, "call center", load_acd);
    // HQ's outside-line routes (the built-in rule where none matches).
    if let Some(routes) = load_dial_routes(&db_path) {
        calls.set_dial_routes(routes);
    }
    let mut dial_route_reloads = reloader(
        writer.dial_routes_changed(),
        &db_path,
        "dial routes",
        load_dial_routes,
    );
    // Outside calls follow the trunk's reachability (trunk first while usable, else FXO).
    let wan_now = wan_rx.borrow_and_update().clone();
    calls.set_trunk_status(sync::wan::trunk_status(&wan_now));
    // The WAN LED: on online, slow blink degraded, off offline (polled with the button).
    let mut wan_led = sync::wan::WanLedDriver::new(Instant::now());
    wan_led.set(sync::wan::wan_led(&wan_now), Instant::now());
    if let Some(on) = wan_led.poll(Instant::now()) {
        gpio.set_led(Led::Wan, on)?;
    }

    // The call recorder (`[recording]`): a writer thread fed by taps on the ports'
    // frames both ways; off (logged) if its directory cannot be made.
    let recording_stop = tokio_util::sync::CancellationToken::new();
    let recording = match crate::recorder::calls::start(&config, &writer, &recording_stop) {
        Ok(mut r) => {
            if let Some(acd) = &acd_config {
                r.calls.set_acd(acd);
            }
            Some(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "call recording is off");
            None
        }
    };
    let tap = recording.as_ref().map(|r| r.calls.tap());
    // The voicemail message writer: a thread of its own, like the recorder's.
    let (vm_outcome_tx, mut vm_outcomes) = mpsc::unbounded_channel();
    let (vm_writer, vm_thread) = match crate::voicemail::writer::MessageWriter::spawn(
        voicemail_dir.clone(),
        vm_outcome_tx,
    ) {
        Ok((w, t)) => (Some(w), Some(t)),
        Err(e) => {
            tracing::error!(error = %e, "voicemail messages cannot be recorded");
            (None, None)
        }
    };
    // The progressive campaign dialer (`campaign::driver`): it reads the ACD's
    // available agents from the main loop, which places its dials.
    let (available_tx, available_rx) = tokio::sync::watch::channel(Vec::new());
    let (campaign_events, campaign_event_rx) = mpsc::unbounded_channel();
    let (campaign_dial_tx, mut campaign_dials) = mpsc::unbounded_channel();
    let campaign_stop = tokio_util::sync::CancellationToken::new();
    let campaign_task = crate::campaign::driver::spawn(
        writer.clone(),
        crate::campaign::driver::DriverChannels {
            available: available_rx,
            events: campaign_event_rx,
            dials: campaign_dial_tx,
        },
        campaign_stop.clone(),
        system_clock_ms,
    );
    let (jobs, job_rx) = mpsc::unbounded_channel();
    let store_task = tokio::spawn(store_task(writer, job_rx, voicemail_dir.clone()));

    // The web page's live status, published by the main loop (`web::status`), and
    // the SIP endpoint's registrations (it publishes them once it runs).
    let (mut web_status, mut web_requests, web_handle) = web_status(&config, &profile, country);
    // The charts' histories (`web::history`), sampled while the web page is served;
    // the line voltage chart wants a reading per sample.
    web_status.sample_lines_every(config.web.chart_sample);
    let web_handle = web_handle.with_charts(crate::web::history::Charts::new(
        crate::web::history::ChartHistories::new(
            config.web.chart_sample,
            config.web.call_sample,
            system_clock_ms(),
        ),
    ));
    let sip_status = config.sip.as_ref().map(|_| {
        tokio::sync::watch::channel(Arc::new(crate::sip_endpoint::status::SipStatus::starting()))
    });
    let web_handle = match &sip_status {
        Some((_, rx)) => web_handle.with_sip(rx.clone()),
        None => web_handle,
    };
    // The agents' desktop events (`/api/v1/events`), published by the main loop.
    let desk_events = crate::screen_pop::EventHub::default();
    let web_handle = web_handle.with_events(desk_events.feed());
    // The tools page's OPTIONS probes go to the SIP endpoint (started below; without
    // `[sip]` the receiver is dropped and the tools say SIP is not configured).
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let tools = crate::tools::Tools::new(
        crate::tools::ToolsSettings::from_config(&config, &profile.model),
        probe_tx,
        crate::tools::logs::installed(),
    );
    let sip_trace = tools.sip_trace().clone();
    let web_handle = web_handle.with_tools(tools);
    // The system page's A/B slots, read through the updater's own backend.
    let web_handle = match &config.update {
        Some(update) => web_handle.with_slots(update.backend.clone()),
        None => web_handle,
    };
    // Sites of bundles applied (USB watcher) and tokens applied (web page, API): the
    // daemon restarts to run with their settings.
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel::<String>();
    let web_handle = web_handle.with_provisioning(
        crate::provision::local::LocalProvisioning::from_config(&config, applied_tx.clone()),
    );
    // The web API last, so it never serves a box whose board is not up.
    let web = match config.web.listen {
        Some(addr) => Some(start_web(addr, accounts, &config, sync.clone(), web_handle).await?),
        None => {
            drop(accounts);
            None
        }
    };
    if let Some(web) = &web {
        health.passed(Fact::Web, format!("listening on {}", web.local_addr));
    }

    // USB provisioning (`[provisioning]`): its own thread, blocked in inotify; the
    // power LED shows its progress through the main loop, which owns the GPIO. A setup
    // failure (unreadable key, no inotify) leaves the phones working and is logged.
    let (prov_led, mut prov_led_rx) = mpsc::unbounded_channel::<bool>();
    if let Some(p) = &config.provisioning {
        match crate::provision::watch(
            p,
            db_path.clone(),
            prov_led,
            applied_tx,
            branchline_provisioning::time::now,
        ) {
            Ok(_thread) => tracing::info!(watch = ?p.watch, "USB provisioning: watching"),
            Err(e) => tracing::error!(error = %e, "USB provisioning is off"),
        }
    }

    tracing::info!(
        model = %profile.model,
        country = country.code(),
        law = ?law,
        db = %db_path.display(),
        uart = %uart_path.display(),
        "branchd ready"
    );

    // The media engine: RTP for SIP legs, bridged to ports through the board loop.
    // Digits it hears on legs go to call control like the SIP endpoint's inputs.
    let (sip_inputs, mut sip_input_rx) = mpsc::unbounded_channel();
    let (media, media_task) = start_media(
        &config,
        law,
        &profile,
        &link,
        tap.clone(),
        sip_inputs.clone(),
    )?;
    // The SIP endpoint (`[sip]`): call control's SIP actions go to it; its inputs come
    // back on the same channel as the media engine's digits; the SIP trunk's
    // registration state drives outside-call routing (instead of the WAN probe).
    let sip_stop = tokio_util::sync::CancellationToken::new();
    let sip = start_sip(
        &config,
        country,
        law,
        &media,
        sip_inputs,
        SipWebChannels {
            status: sip_status.map(|(tx, _)| tx),
            probes: probe_rx,
            trace: sip_trace,
        },
        &sip_stop,
    )
    .await?;
    // With a `[sip]` trunk, outside calls may use it while it is registered and the
    // WAN monitor does not rule it out (sync::wan::routing_trunk_status); the
    // registration as the endpoint last reported it (unusable until it says more).
    let sip_trunk = config.sip.as_ref().is_some_and(|s| s.trunk.is_some());
    let mut trunk_registration = sip_trunk.then_some(crate::call::TrunkStatus::Unusable);
    calls.set_trunk_status(sync::wan::routing_trunk_status(
        trunk_registration,
        &wan_rx.borrow(),
    ));
    // The SIP LED: off without [sip], on while SIP calls can go as configured, a slow
    // blink while a registering trunk is not registered (sync::wan::sip_led).
    let sip_configured = config.sip.is_some();
    let trunk_registers = config
        .sip
        .as_ref()
        .and_then(|s| s.trunk.as_ref())
        .is_some_and(|t| t.register);
    let sip_led_pattern = move |registration: Option<crate::call::TrunkStatus>| {
        sync::wan::sip_led(sip_configured, registration.filter(|_| trunk_registers))
    };
    let mut sip_led = sync::wan::WanLedDriver::new(Instant::now());
    sip_led.set(sip_led_pattern(trunk_registration), Instant::now());
    if let Some(on) = sip_led.poll(Instant::now()) {
        gpio.set_led(Led::Sip, on)?;
    }
    let (sip_outputs, mut trunk_rx, sip_task) = match sip {
        Some((outputs, trunk_rx, task)) => (Some(outputs), Some(trunk_rx), Some(task)),
        None => (None, None, None),
    };
    if sip_task.is_some() {
        health.passed(Fact::Sip, "listeners bound");
    }

    let (call_recorder, recorder_work) = match recording {
        Some(r) => (Some(r.calls), Some((r.thread, r.registrar, r.retention))),
        None => (None, None),
    };
    let (pin_answers, mut pin_results) = mpsc::unbounded_channel::<(Check, u64, bool)>();
    let (vm_done, mut vm_results) = mpsc::unbounded_channel();
    let voicemail = crate::voicemail::service::VoicemailService::new(
        vm_writer,
        voicemail_dir,
        db_path.clone(),
        country,
        vm_done,
    );
    let mut board = BoardLoop {
        voicemail,
        media,
        prompts,
        country,
        dtmf_detectors: HashMap::new(),
        progress_detectors: HashMap::new(),
        call_recorder,
        beeps: HashMap::new(),
        tap,
        leg_routes: HashMap::new(),
        conference_ports: std::collections::HashSet::new(),
        echo_ports: std::collections::HashSet::new(),
        sip_outputs,
        law,
        link,
        routes: HashMap::new(),
        jobs,
        gpio,
        web_status,
        db_path: db_path.clone(),
        pin_answers,
        desk_events,
        campaign_events,
    };
    tokio::pin!(shutdown);
    health.passed(Fact::Daemon, "main loop running");
    // systemd (Type=notify): ready now; the watchdog is fed from this loop.
    let mut notifier = crate::sd_notify::Notifier::from_env();
    notifier.ready("main loop running");
    let mut wan_open = true;
    // The reset button, sampled (factory_reset::ButtonWatch), and restarts asked for.
    let mut button = crate::factory_reset::ButtonWatch::default();
    let mut button_tick = tokio::time::interval(crate::factory_reset::POLL_INTERVAL);
    button_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The loopback test's frames, one per port under test every 20 ms (polled only
    // while a test runs).
    let mut loopback_tick = tokio::time::interval(Duration::from_millis(20));
    loopback_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restart_due = RestartDue::default();
    let outcome = loop {
        let deadline = calls.timeout();
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    break Err(Error::LinkLost { path: uart_path.clone() });
                };
                board.frame(&mut calls, frame);
            }
            () = sleep_until(deadline) => {
                // Frames already queued arrived before this wake-up: they go first, so
                // a digit that beat the inter-digit timeout is not lost to it when the
                // loop runs late on a loaded box.
                while let Ok(frame) = frames.try_recv() {
                    board.frame(&mut calls, frame);
                }
                calls.handle_timeout(Instant::now());
            }
            () = sleep_until(Some(board.web_status.timeout())) => board.web_status_due(),
            _ = loopback_tick.tick(), if board.web_status.loopback_active() => board.loopback_frames(),
            () = sleep_until(calls.journal_deadline()) => calls.update_journal(Instant::now()),
            () = sleep_until(board.beeps.values().min().copied()) => board.beeps_due(),
            Some(request) = web_requests.recv() => {
                if board.web_request(&mut calls, request) {
                    restart_due.reboot = true;
                }
            }
            Some(dial) = campaign_dials.recv() => board.campaign_dial(&mut calls, dial),
            Some(input) = sip_input_rx.recv() => {
                // A SIP phone's key during a call may be the recording toggle code.
                if let (crate::call::SipInput::Digit { leg, digit }, Some(r)) =
                    (&input, &mut board.call_recorder)
                {
                    if r.leg_digit(*leg, *digit).confirms() {
                        board.media.beep(*leg);
                    }
                }
                calls.handle_sip(Instant::now(), input)
            }
            Some((kind, check, ok)) = pin_results.recv() => match kind {
                Check::AgentPin => calls.agent_pin_checked(Instant::now(), check, ok),
                Check::Disposition => calls.disposition_stored(Instant::now(), check, ok),
                Check::Supervisor => calls.supervisor_checked(Instant::now(), check, ok),
            },
            Some(acd) = acd_reloads.recv() => {
                tracing::info!(
                    queues = acd.queues().len(),
                    agents = acd.agents().len(),
                    "call center reconfigured"
                );
                if let Some(r) = &mut board.call_recorder {
                    r.set_acd(&acd);
                }
                let codes = config.call_center.feature_codes.clone();
                calls.reconfigure_acd(Instant::now(), AcdSettings { config: acd, codes });
            }
            Some(outcome) = vm_outcomes.recv() => {
                let jobs = &board.jobs;
                board.voicemail.outcome(outcome, |job| {
                    let _ = jobs.send(StoreJob::Voicemail(job));
                });
            }
            Some(done) = vm_results.recv() => board.voicemail_done(&mut calls, done),
            Some(routes) = dial_route_reloads.recv() => {
                tracing::info!(routes = routes.len(), "dial routes reloaded");
                calls.set_dial_routes(routes);
            }
            Some(list) = blacklist_reloads.recv() => {
                // Logged once in force: the next call is screened with it.
                tracing::info!(
                    entries = list.len(),
                    mode = list.settings().mode.as_str(),
                    "blacklist reloaded"
                );
                calls.set_blacklist(list);
            }
            Some(status) = async { match trunk_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            } } => {
                trunk_registration = Some(status);
                let now = Instant::now();
                sip_led.set(sip_led_pattern(trunk_registration), now);
                if let Some(on) = sip_led.poll(now) {
                    if let Err(e) = board.gpio.set_led(Led::Sip, on) {
                        tracing::warn!(error = %e, "SIP LED not set");
                    }
                }
                let trunk = sync::wan::routing_trunk_status(trunk_registration, &wan_rx.borrow());
                if trunk != calls.trunk_status() {
                    tracing::info!(?trunk, registration = ?status, "outside-call routing follows the SIP trunk");
                    calls.set_trunk_status(trunk);
                }
            }
            changed = wan_rx.changed(), if wan_open => {
                if changed.is_err() {
                    wan_open = false;
                    continue;
                }
                let snapshot = wan_rx.borrow_and_update().clone();
                let trunk = sync::wan::routing_trunk_status(trunk_registration, &snapshot);
                if trunk != calls.trunk_status() {
                    tracing::info!(?trunk, wan = snapshot.state, "outside-call routing follows the trunk and the WAN");
                    calls.set_trunk_status(trunk);
                }
                let now = Instant::now();
                wan_led.set(sync::wan::wan_led(&snapshot), now);
                if let Some(on) = wan_led.poll(now) {
                    if let Err(e) = board.gpio.set_led(Led::Wan, on) {
                        tracing::warn!(error = %e, "WAN LED not set");
                    }
                }
            }
            Some(on) = prov_led_rx.recv() => {
                if let Err(e) = board.gpio.set_led(Led::Power, on) {
                    tracing::warn!(error = %e, "power LED not set");
                }
            }
            Some(site) = applied_rx.recv() => {
                tracing::info!(site, active_calls = calls.active_calls(), "provisioning bundle applied: branchd restarts with its settings once no call is up (a USB bundle or a QR token)");
                restart_due.provisioned = Some(site);
            }
            _ = button_tick.tick() => {
                if button.poll(board.gpio.as_mut(), Instant::now()) {
                    tracing::warn!("reset button held 10 s: factory reset");
                    restart_due.factory_reset = true;
                }
                // The WAN and SIP LEDs' blinks (a steady LED writes nothing).
                if let Some(on) = wan_led.poll(Instant::now()) {
                    if let Err(e) = board.gpio.set_led(Led::Wan, on) {
                        tracing::warn!(error = %e, "WAN LED not set");
                    }
                }
                if let Some(on) = sip_led.poll(Instant::now()) {
                    if let Err(e) = board.gpio.set_led(Led::Sip, on) {
                        tracing::warn!(error = %e, "SIP LED not set");
                    }
                }
            }
            () = notifier.due() => notifier.feed(),
            () = &mut shutdown => {
                notifier.stopping();
                tracing::info!(active_calls = calls.active_calls(), "shutting down");
                calls.shutdown(Instant::now());
                board.drain(&mut calls);
                // A loopback under test is turned off before the daemon goes.
                let off = board.web_status.stop_loopbacks(system_clock_ms());
                board.send_commands(off);
                break Ok(());
            }
        }
        // Calls answered by this event reach the journal of live calls before
        // anything else is written for them.
        calls.update_journal(Instant::now());
        board.drain(&mut calls);
        board
            .web_status
            .set_calls(calls.active_calls(), Some(calls.trunk_status()));
        // Loopbacks ended by this event (a call came, the handset was lifted) go off.
        let off = board.web_status.take_commands();
        board.send_commands(off);
        board.web_status.publish(system_clock_ms());
        // The campaign driver's free agents (a watch: only changes wake it).
        available_tx.send_if_modified(|agents| {
            let now: Vec<crate::acd::AgentId> = calls
                .acd()
                .map(|acd| acd.available_agents().cloned().collect())
                .unwrap_or_default();
            *agents != now && {
                *agents = now;
                true
            }
        });
        // The updater's calls-up count (a watch: only changes wake it).
        calls_up_tx.send_if_modified(|up| {
            let now = calls.active_calls();
            std::mem::replace(up, now) != now
        });
        if let Some(exit) = restart_due.due(calls.active_calls()) {
            notifier.stopping();
            tracing::info!(
                ?exit,
                active_calls = calls.active_calls(),
                "stopping for a restart"
            );
            calls.shutdown(Instant::now());
            board.drain(&mut calls);
            let _ = local_restart.set(exit);
            break Ok(());
        }
    };

    // The agents' event streams end with their hub, and the web page's status streams
    // with the status publisher (its watch channel closes), so the web server stops at
    // once instead of waiting for them (its aborted connections would keep the store's
    // handles alive and the daemon from exiting).
    drop(std::mem::take(&mut board.desk_events));
    drop(board.web_status);
    if let Some(web) = web {
        web.stop().await;
    }
    // The SIP endpoint ends its legs and un-REGISTERs the trunk; it holds a media
    // engine handle, so it goes before the engine.
    sip_stop.cancel();
    if let Some(task) = sip_task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "sip endpoint task failed");
        }
    }
    // The campaign driver records the outcomes of the calls just ended, then stops
    // (it holds a store writer handle).
    campaign_stop.cancel();
    if let Err(e) = campaign_task.await {
        tracing::error!(error = %e, "campaign driver task failed");
    }
    // The sync tasks hold store writer handles: stop them before the writer is joined.
    sync_stop.cancel();
    for task in sync_tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "sync task failed");
        }
    }
    drop(sync);

    // Flush every CDR and port state before returning.
    let BoardLoop {
        jobs,
        mut gpio,
        media,
        call_recorder,
        tap,
        mut voicemail,
        ..
    } = board;
    // The engine ends (and frees its RTP ports) when its last handle is gone.
    drop(media);
    if let Err(e) = media_task.await {
        tracing::error!(error = %e, "media engine task failed");
    }
    // The voicemail writer finishes its messages once its handle and the engine's
    // sinks are gone; the ones written at shutdown are registered before the store
    // stops (with their callers: a restart would only know their files).
    drop(voicemail.take_writer());
    if let Some(thread) = vm_thread {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("voicemail writer thread panicked");
        }
    }
    while let Ok(outcome) = vm_outcomes.try_recv() {
        voicemail.outcome(outcome, |job| {
            let _ = jobs.send(StoreJob::Voicemail(job));
        });
    }
    // The recorder finishes its files once its last handle and tap are gone (the
    // engine's went with it); the registrar indexes them before the store stops.
    drop((call_recorder, tap));
    recording_stop.cancel();
    if let Some((thread, registrar, retention)) = recorder_work {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("recorder thread panicked");
        }
        if let Err(e) = registrar.await {
            tracing::error!(error = %e, "recording registrar failed");
        }
        if let Some(task) = retention {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "recording retention task failed");
            }
        }
    }
    if let Err(e) = gpio.set_power_fail_relay(true) {
        tracing::warn!(error = %e, "power-fail relay not engaged");
    }
    drop(jobs);
    if let Err(e) = store_task.await {
        tracing::error!(error = %e, "store task failed");
    }
    if writer_thread.join().is_err() {
        tracing::error!("store writer thread panicked");
    }
    // Everything that held the store is stopped: wipe now (the restart then starts
    // from the factory config).
    if local_restart.get() == Some(&Exit::RestartFactoryReset) {
        crate::factory_reset::reset(
            &crate::factory_reset::WipePlan::from_config(&config),
            crate::factory_reset::Trigger::Button,
        )?;
    }
    let s = stats.snapshot();
    tracing::info!(
        frames_rx = s.frames_rx,
        frames_tx = s.frames_tx,
        invalid_rx = s.invalid_rx,
        "branchd stopped"
    );
    outcome
}

/// The running web API task and its stop signal.
struct WebTask {
    /// Tells the server to stop accepting and finish its requests.
    stop: tokio_util::sync::CancellationToken,
    /// The bound address (for the health check).
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl WebTask {
    /// Stops the server; aborts it when requests do not finish within the grace time.
    async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        match tokio::time::timeout(WEB_SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!("web api stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "web api failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "web api task failed"),
            Err(_) => {
                tracing::warn!("web api requests did not finish in time; aborted");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Starts the sync agent (when `[hq]` is set and its TLS files load) and the WAN
/// monitor; returns the handle for the API, the tasks to await at shutdown, and the
/// WAN states for call routing and the LED. A sync setup error is logged and shown in
/// the sync status; it never stops the daemon.
fn start_sync(
    config: &Config,
    writer: &StoreWriter,
    db_path: &std::path::Path,
    stop: &tokio_util::sync::CancellationToken,
    updater: UpdaterLinks,
) -> (
    SyncHandle,
    Vec<tokio::task::JoinHandle<()>>,
    tokio::sync::watch::Receiver<sync::wan::WanSnapshot>,
) {
    let store = SyncStore::new(writer.clone(), db_path.to_owned());
    let trunk = config
        .wan
        .trunk
        .clone()
        .map(|t| (t, config.wan.trunk_transport));
    // A staged identity a power cut left mid-renewal is finished (or dropped) before
    // any client loads the files.
    if let Some(hq) = &config.hq {
        match crate::renew::recover(hq) {
            Ok(crate::renew::Recovery::Nothing) => {}
            Ok(r) => {
                tracing::warn!(recovery = ?r, "a renewal was cut short; its staged files were recovered")
            }
            Err(e) => tracing::error!(error = %e, "recovering a staged device certificate failed"),
        }
    }
    // A bundle applied on a box that has a certificate: re-enroll first.
    let reenroll = match (&config.hq, &config.provisioning) {
        (Some(hq), Some(_)) if !crate::enroll::needed(hq) => crate::enroll::pending_at(db_path)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the provisioning state");
                false
            }),
        _ => false,
    };
    let client = if reenroll {
        None
    } else {
        config.hq.as_ref().map(|hq| {
            let identity = sync::client::DeviceIdentity::load(hq)?;
            sync::client::http_client_with(hq, Arc::clone(&identity)).map(|c| (c, identity))
        })
    };
    // HQ is probed over HTTPS with the agent's client, or by a TCP connect when the
    // TLS setup failed.
    let hq_probe = match (&config.hq, &client) {
        (Some(hq), Some(Ok((client, _)))) => Some(sync::wan::HqProbe::Https {
            client: client.clone(),
            url: hq.url.clone(),
        }),
        (Some(hq), _) => sync::wan::hq_probe_target(&hq.url).map(sync::wan::HqProbe::Tcp),
        (None, _) => None,
    };
    let (wan_tx, wan_rx) = tokio::sync::watch::channel(sync::wan::initial_snapshot(
        hq_probe.as_ref().map(|p| p.describe()).as_deref(),
        trunk.as_ref().map(|(t, _)| t.as_str()),
    ));
    let handle = SyncHandle::new(config.hq.as_ref(), wan_rx.clone());
    let (reach_tx, reach_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    match (&config.hq, client) {
        (Some(hq), Some(Ok((client, identity)))) => {
            tasks.extend(start_updater(config, hq, client.clone(), updater, stop));
            let mut seed = [0u8; 8];
            if let Err(e) = getrandom::fill(&mut seed) {
                tracing::warn!(error = %e, "no OS randomness for the sync backoff seed; using the clock");
                seed = system_clock_ms().to_le_bytes();
            }
            let agent = sync::agent::Agent {
                hq: hq.clone(),
                client,
                store: store.clone(),
                handle: handle.clone(),
                hq_reach: reach_tx,
                seed: u64::from_le_bytes(seed),
            };
            let renew = crate::renew::RenewTask {
                hq: hq.clone(),
                client: agent.client.clone(),
                identity,
                handle: handle.clone(),
                seed: sync_seed(),
                web_listen: config.web.listen,
            };
            tasks.push(tokio::spawn(agent.run(stop.clone())));
            tasks.push(tokio::spawn(renew.run(stop.clone())));
        }
        (Some(hq), client) => match (&config.provisioning, reenroll || crate::enroll::needed(hq)) {
            // No device certificate yet, or a new bundle: enroll with the provisioned
            // token, then sync.
            (Some(prov), true) => {
                if reenroll {
                    tracing::info!(
                        "a new provisioning bundle was applied: re-enrolling with a new key"
                    );
                } else {
                    tracing::info!(cert = %hq.client_cert.display(), "not enrolled yet: enrollment waits for a provisioning bundle");
                }
                let task = crate::enroll::EnrollTask {
                    hq: hq.clone(),
                    serial: prov.serial.clone(),
                    db_path: db_path.to_owned(),
                    writer: writer.clone(),
                    auth: crate::accounts::AuthSettings::from(&config.auth),
                    handle: handle.clone(),
                    seed: sync_seed(),
                    web_listen: config.web.listen,
                };
                let (store, handle, stop) = (store.clone(), handle.clone(), stop.clone());
                let web_listen = config.web.listen;
                tasks.push(tokio::spawn(async move {
                    let Some(hq) = task.run(stop.clone()).await else {
                        return;
                    };
                    let built = sync::client::DeviceIdentity::load(&hq).and_then(|identity| {
                        sync::client::http_client_with(&hq, Arc::clone(&identity))
                            .map(|c| (c, identity))
                    });
                    match built {
                        Ok((client, identity)) => {
                            handle.clear_setup_error();
                            let renew = crate::renew::RenewTask {
                                hq: hq.clone(),
                                client: client.clone(),
                                identity,
                                handle: handle.clone(),
                                seed: sync_seed(),
                                web_listen,
                            };
                            let agent = sync::agent::Agent {
                                hq,
                                client,
                                store,
                                handle,
                                hq_reach: reach_tx,
                                seed: sync_seed(),
                            };
                            tokio::join!(agent.run(stop.clone()), renew.run(stop));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "enrolled, but the sync client cannot use the new certificate");
                            handle.set_setup_error(e.to_string());
                        }
                    }
                }));
            }
            _ => {
                let e = match client {
                    Some(Err(e)) => e.to_string(),
                    _ => "a re-enrollment waits, but [provisioning] is not set".to_owned(),
                };
                tracing::error!(error = %e, "sync with HQ is off: its TLS setup failed");
                handle.set_setup_error(e);
            }
        },
        _ => {
            tracing::info!("sync with HQ not configured (no [hq] section)");
            if config.update.as_ref().is_some_and(|u| u.from_hq.is_some()) {
                tracing::warn!("[update] from_hq = true needs [hq]: updates through HQ are off");
            }
        }
    }
    let wan = sync::wan::WanTask {
        hq: hq_probe,
        trunk,
        probe_interval: config
            .hq
            .as_ref()
            .map_or(config.wan.probe_interval, |hq| hq.probe_interval),
        hq_samples: reach_rx,
        publish: wan_tx,
        store,
    };
    tasks.push(tokio::spawn(wan.run(stop.clone())));
    (handle, tasks, wan_rx)
}

/// What the updater task needs from the rest of the daemon.
struct UpdaterLinks {
    /// Calls up, published by the main loop.
    calls_up: tokio::sync::watch::Receiver<usize>,
    /// The health check's "this boot's trial slot is committed".
    trial_committed: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when the updater installed an update: the daemon shuts down and
    /// [`run`] answers [`Exit::RestartIntoUpdate`].
    restart: tokio_util::sync::CancellationToken,
}

/// Starts the updater task (`[update] from_hq = true`) with the sync agent's client;
/// `None` when updates through HQ are off or the download directory cannot be made
/// (logged: telephony runs on). The offer is polled every `[update] poll_interval_s`.
fn start_updater(
    config: &Config,
    hq: &crate::config::HqConfig,
    client: reqwest::Client,
    links: UpdaterLinks,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use crate::updater::task::{Ended, UpdateTask};
    let update = config.update.as_ref()?;
    let Some(from_hq) = &update.from_hq else {
        tracing::debug!("updates through HQ are off ([update] from_hq)");
        return None;
    };
    let downloads = match crate::updater::io::Downloads::open(&config.paths.data_dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "updates through HQ are off");
            return None;
        }
    };
    let task = UpdateTask {
        client,
        base: hq.url.clone(),
        timeout: hq.request_timeout,
        poll_interval: from_hq.poll_interval,
        downloads,
        keys: from_hq.keys.clone(),
        me: branchline_image::policy::Identity {
            board: from_hq.board.clone(),
            target: from_hq.target.clone(),
        },
        window: from_hq.window,
        backend: update.backend.clone(),
        calls_up: links.calls_up,
        trial_committed: links.trial_committed,
    };
    tracing::info!(window = %from_hq.window, board = %from_hq.board, "updates through HQ: on");
    let stop = stop.clone();
    let restart = links.restart;
    Some(tokio::spawn(async move {
        if task.run(stop).await == Ended::Restart {
            restart.cancel();
        }
    }))
}

/// A seed for the sync and enrollment backoff jitter (the clock when the OS has no
/// randomness).
fn sync_seed() -> u64 {
    let mut seed = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut seed) {
        tracing::warn!(error = %e, "no OS randomness for the sync backoff seed; using the clock");
        seed = system_clock_ms().to_le_bytes();
    }
    u64::from_le_bytes(seed)
}

/// Binds the web API's listener, logs its address and starts serving.
async fn start_web(
    addr: SocketAddr,
    accounts: Accounts,
    config: &Config,
    sync: SyncHandle,
    status: crate::web::status::StatusHandle,
) -> Result<WebTask> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            what: "web api",
            addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Listen {
        what: "web api",
        addr,
        source,
    })?;
    tracing::info!(addr = %local_addr, "web api listening");
    let state = crate::api::ApiState::with_status(
        accounts,
        config.privacy.mask_pattern,
        Arc::new(crate::store::system_clock_ms),
        sync,
        Some(status.clone()),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    // The charts' sampler runs as long as the page is served.
    if let Some(charts) = status.charts().cloned() {
        let sampler = crate::web::history::ChartSampler {
            charts,
            status: status.clone(),
            db_path: config.paths.db_path(),
        };
        tokio::spawn(sampler.run(stop.clone()));
    }
    let https = state.https().clone();
    let router = crate::web::router(state);
    // HTTPS with the device certificate once enrolled (`web::tls`); plain HTTP when
    // there is no `[hq]` to enroll with or `[web] https = "off"`.
    let task = match (&config.hq, config.web.https) {
        (Some(hq), crate::config::WebHttps::Auto) => tokio::spawn(crate::web::tls::serve(
            listener,
            router,
            crate::web::tls::CertWatch::new(hq.clone()),
            https,
            shutdown,
        )),
        _ => tokio::spawn(crate::api::serve(listener, router, shutdown)),
    };
    Ok(WebTask {
        stop,
        task,
        local_addr,
    })
}

/// Sends `Hello` until the line controller answers `Ready`.
async fn hello(
    link: &LinkSender,
    frames: &mut mpsc::Receiver<Frame>,
    path: &std::path::Path,
) -> Result<Event> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        link.send(
            BOARD_PORT,
            Body::Command(Command::Hello {
                protocol: PROTOCOL_VERSION,
            }),
        )?;
        let retry = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(retry.min(deadline), frames.recv()).await {
                Ok(Some(Frame {
                    body: Body::Event(e @ Event::Ready { .. }),
                    ..
                })) => return Ok(e),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(Error::LinkLost { path: path.into() }),
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::LineControllerSilent {
                path: path.into(),
                waited: HELLO_TIMEOUT,
            });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What the SIP endpoint gives the web side and takes from it.
struct SipWebChannels {
    /// Where its registrations snapshot goes (the web page's; `None`: a channel of its own).
    status: Option<tokio::sync::watch::Sender<Arc<crate::sip_endpoint::status::SipStatus>>>,
    /// The tools page's OPTIONS probes.
    probes: mpsc::UnboundedReceiver<crate::sip_endpoint::probe::OptionsProbe>,
    /// The diagnostics pages' SIP message trace.
    trace: crate::tools::sip_trace::SipTrace,
}

/// Starts the SIP endpoint when `[sip]` is set: returns where call control's SIP
/// outputs go, the SIP trunk's reachability, and the endpoint's task; its
/// registrations snapshot goes to `web.status` (the web page's; a channel of its own
/// when `None`) and it takes the tools page's OPTIONS probes from `web.probes`.
async fn start_sip(
    config: &Config,
    country: Country,
    law: line_proto::g711::Law,
    media: &MediaEngine,
    inputs: mpsc::UnboundedSender<crate::call::SipInput>,
    web: SipWebChannels,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<
    Option<(
        mpsc::UnboundedSender<Output>,
        mpsc::UnboundedReceiver<crate::call::TrunkStatus>,
        tokio::task::JoinHandle<()>,
    )>,
> {
    use crate::sip_endpoint::{EndpointSettings, SipAccount, SipCommand, SipEndpoint};
    let Some(sip) = &config.sip else {
        tracing::info!("SIP not configured (no [sip] section)");
        return Ok(None);
    };
    let mut seed = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut seed) {
        tracing::warn!(error = %e, "no OS randomness for SIP tags and nonces; using the clock");
        seed = system_clock_ms().to_le_bytes();
    }
    let settings = EndpointSettings {
        sip: sip.clone(),
        accounts: config
            .sip_accounts
            .iter()
            .map(|a| SipAccount {
                extension: a.extension.as_str().to_owned(),
                name: a.name.clone(),
                password: a.password.clone(),
                international: a.international,
            })
            .collect(),
        country,
        law,
        outside_line_prefix: config
            .telephony
            .outside_line_prefix
            .as_ref()
            .map(|p| p.as_str().to_owned()),
        seed: u64::from_le_bytes(seed),
        trace: Some(web.trace.clone()),
    };
    let (trunk_tx, trunk_rx) = mpsc::unbounded_channel();
    let SipWebChannels { status, probes, .. } = web;
    let status = status.unwrap_or_else(|| {
        tokio::sync::watch::channel(Arc::new(crate::sip_endpoint::status::SipStatus::starting())).0
    });
    let (handle, task) = SipEndpoint::start(
        settings,
        media.clone(),
        inputs,
        trunk_tx,
        status,
        probes,
        stop.clone(),
    )
    .await?;
    // Call control's outputs become endpoint commands on a small forwarding task, so
    // the board loop never waits on SIP.
    let (outputs, mut output_rx) = mpsc::unbounded_channel::<Output>();
    tokio::spawn(async move {
        while let Some(out) = output_rx.recv().await {
            if let Some(cmd) = SipCommand::from_output(out) {
                if !handle.send(cmd) {
                    tracing::error!("SIP endpoint gone; SIP action lost");
                }
            }
        }
    });
    Ok(Some((outputs, trunk_rx, task)))
}

/// Starts the media engine from `[media]` (defaults when the section is absent: ports
/// 10000-10999 on every address, jitter 20-200 ms); frames for ports go straight to the
/// line controller.
fn start_media(
    config: &Config,
    board_law: line_proto::g711::Law,
    profile: &BoardProfile,
    link: &LinkSender,
    tap: Option<crate::recorder::Tap>,
    sip_inputs: mpsc::UnboundedSender<crate::call::SipInput>,
) -> Result<(MediaEngine, tokio::task::JoinHandle<()>)> {
    let m = &config.media;
    let invalid = |message: String| Error::ConfigInvalid {
        path: config.source.clone(),
        line: None,
        field: "media".to_owned(),
        message,
    };
    let jitter = branchline_media::jitter::JitterConfig::adaptive(m.jitter_min_ms, m.jitter_max_ms)
        .map_err(|e| invalid(e.to_string()))?;
    let mut seed = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut seed) {
        tracing::warn!(error = %e, "no OS randomness for RTP SSRCs; using the clock");
        seed = system_clock_ms().to_le_bytes();
    }
    let settings = MediaSettings {
        local_ip: m.local_ip,
        rtp_port_min: m.rtp_port_min,
        rtp_port_max: m.rtp_port_max,
        jitter,
        board_law,
        seed: u64::from_le_bytes(seed),
        fxo_ports: profile.fxo_ports(),
        rtcp_interval: branchline_media::rtcp::DEFAULT_REPORT_INTERVAL,
        inactivity: branchline_media::inactivity::InactivityConfig {
            active: m.rtp_timeout,
            held: m.rtp_hold_timeout,
        },
    };
    // Frames to ports pass the call recorder's tap (the "to the port" direction), and
    // so does the RTP of legs it records (calls between two SIP legs).
    let rtp_tap = tap
        .clone()
        .map(|t| Arc::new(t) as Arc<dyn crate::media_engine::RtpTap>);
    let ports: Arc<dyn crate::media_engine::PortSink> = match tap {
        Some(tap) => Arc::new(crate::recorder::calls::TapSink::new(link.clone(), tap)),
        None => Arc::new(link.clone()),
    };
    let (engine, task) = MediaEngine::start_with_tap(settings, ports, sip_inputs, rtp_tap)
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(
        ip = %m.local_ip,
        ports = format!("{}-{}", m.rtp_port_min, m.rtp_port_max),
        "media engine ready"
    );
    Ok((engine, task))
}

/// Outside callers' names from the store's customer directory (call control's
/// [`crate::call::CallerDirectory`]): a read-only connection of its own, one indexed
/// seek per call.
#[derive(Debug)]
struct StoreDirectory {
    conn: rusqlite::Connection,
}

impl StoreDirectory {
    fn open(path: &Path) -> rusqlite::Result<StoreDirectory> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(200))?;
        Ok(StoreDirectory { conn })
    }
}

impl crate::call::CallerDirectory for StoreDirectory {
    fn name_of(&self, number: &str) -> Option<String> {
        crate::customers::lookup_by_number(&self.conn, number).map(|m| m.name)
    }
}

/// The board side of the main loop: routes audio and carries out call control's outputs.
struct BoardLoop {
    link: LinkSender,
    /// The line controller's audio law (the loopback test's frames are encoded in it).
    law: line_proto::g711::Law,
    /// Audio bridges: frames from the key port go to the value port.
    routes: HashMap<u8, u8>,
    /// Ports bridged to a SIP leg: their frames and digits go to the media engine.
    leg_routes: HashMap<u8, LegId>,
    /// Ports in a conference room: their frames go to the media engine's mixer (their
    /// digits to call control only).
    conference_ports: std::collections::HashSet<u8>,
    /// Ports in an echo test: their frames go to the media engine, which plays them
    /// back late (call control's `Output::Echo`).
    echo_ports: std::collections::HashSet<u8>,
    /// The media engine (port-to-leg and leg-to-leg bridges).
    media: MediaEngine,
    /// The voice prompts call control's `Play` outputs name.
    prompts: crate::prompts::PromptLibrary,
    /// Tone plan of tones played as audio.
    country: Country,
    /// PSTN lines whose audio is searched for in-band DTMF for call control
    /// (`Output::DetectDtmf`: a PSTN caller keying a survey score).
    dtmf_detectors: HashMap<u8, branchline_media::dtmf::InbandDetector>,
    /// PSTN lines whose audio is searched for busy / congestion tones
    /// (`Output::DetectProgress`: a campaign lead dialled on the line).
    progress_detectors: HashMap<u8, ProgressDetector>,
    /// Starts and stops call recordings on bridges and CDRs (`None`: recording off).
    call_recorder: Option<crate::recorder::calls::CallRecorder>,
    /// Phones hearing the recording toggle code's confirmation beep, until when (the
    /// line controller's tone is stopped then, unless call control played another
    /// tone to the port meanwhile).
    beeps: HashMap<u8, Instant>,
    /// The recorder's tap on the frames from the ports.
    tap: Option<crate::recorder::Tap>,
    /// Where SIP actions of call control go: the SIP endpoint task. `None` while the
    /// daemon runs without one (then call control never places SIP legs, and any SIP
    /// output is logged and dropped).
    sip_outputs: Option<mpsc::UnboundedSender<Output>>,
    jobs: mpsc::UnboundedSender<StoreJob>,
    gpio: Box<dyn Gpio>,
    /// The web page's live status (ports, calls, trunk) and its ring tests.
    web_status: crate::web::status::StatusPublisher,
    /// The store, for agent PIN checks.
    db_path: PathBuf,
    /// Where PIN check, disposition and supervisor check results go (to the main
    /// loop, then call control).
    pin_answers: mpsc::UnboundedSender<(Check, u64, bool)>,
    /// The agents' desktop events (`/api/v1/events`).
    desk_events: crate::screen_pop::EventHub,
    /// Voicemail: message captures, message playback, mailbox PIN checks.
    voicemail: crate::voicemail::service::VoicemailService,
    /// Placed / refused dials and attempt outcomes for the campaign driver.
    campaign_events: mpsc::UnboundedSender<crate::campaign::driver::DriverEvent>,
}

impl BoardLoop {
    /// A result of voicemail work done off the loop.
    fn voicemail_done(&mut self, calls: &mut CallControl, done: crate::voicemail::service::Done) {
        use crate::voicemail::service::Done;
        match done {
            Done::Pin(check, ok) => calls.mailbox_pin_checked(Instant::now(), check, ok),
            Done::Play(end, generation, player) => {
                self.voicemail
                    .play_decoded(&self.media, end, generation, player);
            }
            Done::Stored(capture, message) => calls.voicemail_message_done(capture, message),
        }
    }

    /// One frame from the line controller: audio is routed, events go to the web
    /// status and call control.
    fn frame(&mut self, calls: &mut CallControl, frame: Frame) {
        if let Body::Event(event) = &frame.body {
            self.web_status
                .on_event(system_clock_ms(), frame.port, event);
        }
        // A key pressed during a call may be the recording toggle code; the digit still
        // goes where it would (call control, the far end).
        if let (Body::Event(Event::Digit(d)), Some(r)) = (&frame.body, &mut self.call_recorder) {
            if r.digit(frame.port, char::from(*d)).confirms() {
                self.beep(frame.port);
            }
        }
        match frame.body {
            // A port under a loopback test: its audio is the test's.
            Body::Audio(audio) if self.web_status.loopback_on(frame.port) => {
                let mut pcm = [0i16; line_proto::AUDIO_FRAME_LEN];
                audio.law.decode_block(&audio.samples, &mut pcm);
                self.web_status
                    .loopback_audio(system_clock_ms(), frame.port, &pcm);
            }
            Body::Audio(audio) => {
                if let Some(tap) = &self.tap {
                    tap.frame(frame.port, crate::recorder::Side::FromPort, &audio);
                }
                if let Some(det) = self.dtmf_detectors.get_mut(&frame.port) {
                    let mut pcm = [0i16; line_proto::AUDIO_FRAME_LEN];
                    audio.law.decode_block(&audio.samples, &mut pcm);
                    det.process(&pcm);
                    while let Some(ev) = det.poll_event() {
                        if let branchline_media::dtmf::DtmfEvent::Start { event, .. } = ev {
                            if let Some(d) = event.to_digit() {
                                tracing::debug!(port = frame.port, digit = %char::from(d), "in-band DTMF from the line");
                                calls.handle_event(Instant::now(), frame.port, &Event::Digit(d));
                            }
                        }
                    }
                }
                if let Some(det) = self.progress_detectors.get_mut(&frame.port) {
                    let mut pcm = [0i16; line_proto::AUDIO_FRAME_LEN];
                    audio.law.decode_block(&audio.samples, &mut pcm);
                    det.process(&pcm);
                    if let Some(tone) = det.poll_event() {
                        tracing::info!(port = frame.port, ?tone, "call-progress tone on the line");
                        self.progress_detectors.remove(&frame.port);
                        calls.progress_tone(Instant::now(), frame.port, tone);
                    }
                }
                if self.conference_ports.contains(&frame.port) {
                    self.media.port_audio(frame.port, audio);
                } else if let Some(&peer) = self.routes.get(&frame.port) {
                    if let Err(e) = self.link.send(peer, Body::Audio(audio)) {
                        tracing::warn!(port = peer, error = %e, "audio frame not sent");
                    }
                } else if self.leg_routes.contains_key(&frame.port)
                    || self.voicemail.captures_port(frame.port)
                    || self.echo_ports.contains(&frame.port)
                {
                    self.media.port_audio(frame.port, audio);
                }
            }
            // A key pressed on a phone talking to a SIP leg goes out as RFC 4733 too.
            Body::Event(Event::Digit(d)) if self.leg_routes.contains_key(&frame.port) => {
                if let Some(&leg) = self.leg_routes.get(&frame.port) {
                    self.media.send_digit(leg, char::from(d));
                }
                calls.handle_event(Instant::now(), frame.port, &Event::Digit(d));
            }
            Body::Event(Event::Rejected { seq, reason }) => {
                tracing::warn!(
                    port = frame.port,
                    seq,
                    reason,
                    "line controller rejected a command"
                );
            }
            // The MCU numbers its frames from 0 after a reset, so a Ready with seq 0 is a
            // reboot; any other Ready answers one of our Hellos.
            Body::Event(Event::Ready { .. }) if frame.seq == 0 => {
                tracing::warn!(
                    "line controller restarted; port states resynchronise with the next events"
                );
            }
            Body::Event(Event::Ready { .. }) => tracing::debug!("line controller answered hello"),
            Body::Event(Event::LineReading {
                millivolts,
                microamps,
            }) => {
                tracing::debug!(port = frame.port, millivolts, microamps, "line reading");
            }
            Body::Event(event) => {
                tracing::debug!(port = frame.port, ?event, "board event");
                calls.handle_event(Instant::now(), frame.port, &event);
            }
            Body::Command(c) => {
                tracing::warn!(port = frame.port, command = ?c, "unexpected command frame from the line controller");
            }
        }
    }

    /// The recording toggle code's confirmation beep to the phone on `port`: the
    /// media engine's [`crate::media_engine::BEEP_HZ`] for its
    /// [`crate::media_engine::BEEP_DURATION`], played by the line controller over the
    /// call's audio.
    fn beep(&mut self, port: u8) {
        let spec = line_proto::tone::ToneSpec {
            freq1_hz: crate::media_engine::BEEP_HZ as u16,
            freq2_hz: 0,
            level_dbm0: -13,
            cadence: line_proto::tone::Cadence::continuous(),
        };
        if let Err(e) = self.link.send(port, Body::Command(Command::PlayTone(spec))) {
            tracing::warn!(port, error = %e, "confirmation beep not sent");
            return;
        }
        self.beeps
            .insert(port, Instant::now() + crate::media_engine::BEEP_DURATION);
    }

    /// Ends the confirmation beeps that are due.
    fn beeps_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u8> = self
            .beeps
            .iter()
            .filter(|(_, &end)| end <= now)
            .map(|(&p, _)| p)
            .collect();
        for port in due {
            self.beeps.remove(&port);
            if let Err(e) = self.link.send(port, Body::Command(Command::StopTone)) {
                tracing::warn!(port, error = %e, "confirmation beep not stopped");
            }
        }
    }

    fn drain(&mut self, calls: &mut CallControl) {
        while let Some(out) = calls.poll_output() {
            match out {
                Output::Command { port, command } => {
                    if matches!(command, Command::PlayTone(_) | Command::StopTone) {
                        // Call control's tone replaces the beep: it is not stopped.
                        self.beeps.remove(&port);
                    }
                    tracing::debug!(port, ?command, "to line controller");
                    if let Err(e) = self.link.send(port, Body::Command(command)) {
                        tracing::error!(port, error = %e, "command not sent to the line controller");
                    }
                }
                Output::Connect(MediaEnd::Port(a), MediaEnd::Port(b)) => {
                    self.routes.insert(a, b);
                    self.routes.insert(b, a);
                    if let Some(r) = &mut self.call_recorder {
                        r.connect(MediaEnd::Port(a), MediaEnd::Port(b));
                    }
                }
                Output::Disconnect(MediaEnd::Port(a), MediaEnd::Port(b)) => {
                    if let Some(r) = &mut self.call_recorder {
                        r.disconnect(MediaEnd::Port(a), MediaEnd::Port(b));
                    }
                    if self.routes.get(&a) == Some(&b) {
                        self.routes.remove(&a);
                    }
                    if self.routes.get(&b) == Some(&a) {
                        self.routes.remove(&b);
                    }
                }
                Output::Connect(a, b) => {
                    for (end, other) in [(a, b), (b, a)] {
                        if let (MediaEnd::Port(p), MediaEnd::Leg(leg)) = (end, other) {
                            self.leg_routes.insert(p, leg);
                        }
                    }
                    if let Some(r) = &mut self.call_recorder {
                        for end in [a, b] {
                            if let MediaEnd::Leg(leg) = end {
                                r.leg_phone(leg, calls.phone_extension(leg));
                                r.leg_call(leg, calls.call_of_leg(leg));
                            }
                        }
                        r.connect(a, b);
                    }
                    self.media.bridge(a, b);
                }
                Output::Play { end, playback } => {
                    self.voicemail.played(end);
                    let player = self.prompts.player(&playback, self.country);
                    self.media.play(end, player);
                }
                Output::StopPlay { end } => {
                    self.voicemail.played(end);
                    self.media.stop_playing(end);
                }
                Output::PlayMessage { end, file } => self.voicemail.play_message(end, file),
                Output::Capture(deposit) => {
                    let capture = deposit.capture;
                    if !self.voicemail.capture(&self.media, *deposit) {
                        calls.voicemail_message_done(capture, None);
                    }
                }
                Output::CaptureEnd { end, capture, keep } => {
                    self.voicemail.capture_end(&self.media, end, capture, keep);
                }
                Output::Echo { end, on } => {
                    if let MediaEnd::Port(p) = end {
                        if on {
                            self.echo_ports.insert(p);
                        } else {
                            self.echo_ports.remove(&p);
                        }
                    }
                    if on {
                        self.media.echo(end);
                    } else {
                        self.media.stop_echo(end);
                    }
                }
                Output::CheckMailboxPin {
                    check,
                    mailbox,
                    pin,
                } => self.voicemail.check_pin(check, mailbox, pin),
                Output::MessageHeard { id } => {
                    let job = crate::voicemail::service::StoreJob::Heard(id);
                    let _ = self.jobs.send(StoreJob::Voicemail(job));
                }
                Output::DeleteMessage { id } => {
                    let job = crate::voicemail::service::StoreJob::Delete(id);
                    let _ = self.jobs.send(StoreJob::Voicemail(job));
                }
                Output::MessageWaiting {
                    ref mailbox,
                    new,
                    heard,
                } => {
                    // FXS phones get stutter dial tone from call control; SIP phones a
                    // message-summary NOTIFY from the SIP endpoint.
                    tracing::info!(mailbox, new, heard, "message waiting");
                    if let Some(tx) = &self.sip_outputs {
                        if tx.send(out).is_err() {
                            tracing::error!("SIP endpoint gone; MWI NOTIFY lost");
                        }
                    }
                }
                Output::DetectDtmf { port, on: true } => {
                    self.dtmf_detectors.insert(port, Default::default());
                }
                Output::DetectDtmf { port, on: false } => {
                    self.dtmf_detectors.remove(&port);
                }
                Output::DetectProgress { port, on: true } => {
                    let tones = [
                        (
                            ProgressTone::Busy,
                            self.country.tone(crate::tones::Tone::Busy),
                        ),
                        (
                            ProgressTone::Congestion,
                            self.country.tone(crate::tones::Tone::Congestion),
                        ),
                    ];
                    self.progress_detectors
                        .insert(port, ProgressDetector::new(&tones));
                }
                Output::DetectProgress { port, on: false } => {
                    self.progress_detectors.remove(&port);
                }
                Output::Disconnect(a, b) => {
                    for (end, other) in [(a, b), (b, a)] {
                        if let (MediaEnd::Port(p), MediaEnd::Leg(leg)) = (end, other) {
                            if self.leg_routes.get(&p) == Some(&leg) {
                                self.leg_routes.remove(&p);
                            }
                        }
                    }
                    if let Some(r) = &mut self.call_recorder {
                        r.disconnect(a, b);
                    }
                    self.media.unbridge(a, b);
                }
                sip @ (Output::SipDial { .. }
                | Output::SipRinging { .. }
                | Output::SipAnswer { .. }
                | Output::SipHangup { .. }
                | Output::SipTransferStatus { .. }) => match &self.sip_outputs {
                    Some(tx) => {
                        if tx.send(sip).is_err() {
                            tracing::error!("SIP endpoint gone; SIP action lost");
                        }
                    }
                    None => tracing::debug!(output = ?sip, "no SIP endpoint; SIP action dropped"),
                },
                Output::PortState { port, state } => {
                    self.web_status
                        .on_port_state(system_clock_ms(), port, state);
                    tracing::info!(port, state = state.as_str(), "port state");
                    if let Err(e) = self.gpio.set_led(Led::Port(port), state != PortState::Idle) {
                        tracing::warn!(port, error = %e, "port LED not set");
                    }
                    let _ = self.jobs.send(StoreJob::PortState(port, state));
                }
                Output::AgentState {
                    agent,
                    state,
                    extension,
                    call_id,
                    at_ms,
                } => {
                    tracing::info!(%agent, state = state.name(), extension, call_id, "agent state");
                    self.desk_events
                        .publish(crate::screen_pop::DeskEvent::AgentState {
                            agent: agent.clone(),
                            state: state.name(),
                            extension: extension.clone(),
                            call_id: call_id.clone(),
                            at_ms,
                        });
                    let _ = self.jobs.send(StoreJob::AgentState {
                        agent,
                        state,
                        extension,
                        call_id,
                        at_ms,
                    });
                }
                Output::AgentCall(event) => {
                    if let Some(r) = &mut self.call_recorder {
                        r.agent_call(&event);
                    }
                    self.desk_events
                        .publish(crate::screen_pop::DeskEvent::Call(*event));
                }
                Output::CampaignOutcome {
                    attempt,
                    call_id,
                    outcome,
                } => {
                    let event = crate::campaign::driver::DriverEvent::Outcome {
                        attempt_id: attempt,
                        call_id,
                        outcome,
                    };
                    if self.campaign_events.send(event).is_err() {
                        tracing::error!(attempt, "campaign driver gone; attempt outcome lost");
                    }
                }
                Output::BlacklistHit { pattern, at_ms } => {
                    let _ = self.jobs.send(StoreJob::BlacklistHit { pattern, at_ms });
                }
                Output::Conference { room, op } => {
                    match op {
                        crate::call::ConferenceOp::Join {
                            end: MediaEnd::Port(p),
                            ..
                        } => {
                            self.conference_ports.insert(p);
                        }
                        crate::call::ConferenceOp::Leave {
                            end: MediaEnd::Port(p),
                        } => {
                            self.conference_ports.remove(&p);
                        }
                        _ => {}
                    }
                    self.media.conference(room, op);
                }
                Output::CheckSupervisor {
                    check,
                    extension,
                    agent,
                    mode,
                } => {
                    // A store read (roles, groups) off the board loop, like the PIN check.
                    let (db, answers) = (self.db_path.clone(), self.pin_answers.clone());
                    tokio::task::spawn_blocking(move || {
                        let decision = Store::reader(&db).and_then(|r| {
                            accounts::may_supervise(
                                &r,
                                &extension,
                                agent.as_str(),
                                system_clock_ms(),
                            )
                        });
                        let ok = match decision {
                            Ok(accounts::SupervisorDecision::Allowed { supervisor }) => {
                                tracing::info!(%agent, extension, supervisor, mode = mode.as_str(), "supervision allowed");
                                true
                            }
                            Ok(accounts::SupervisorDecision::Denied { reason }) => {
                                tracing::warn!(%agent, extension, mode = mode.as_str(), reason, "supervision denied");
                                false
                            }
                            Err(e) => {
                                tracing::error!(%agent, extension, error = %e, "supervisor right not checked");
                                false
                            }
                        };
                        let _ = answers.send((Check::Supervisor, check, ok));
                    });
                }
                Output::CheckAgentPin { check, agent, pin } => {
                    // argon2id takes tens of milliseconds: off the board loop.
                    let (db, answers) = (self.db_path.clone(), self.pin_answers.clone());
                    tokio::task::spawn_blocking(move || {
                        let ok = Store::reader(&db)
                            .map_err(|e| e.to_string())
                            .and_then(|r| {
                                crate::acd::store::check_agent_pin(
                                    r.connection(),
                                    &db,
                                    &agent,
                                    &pin,
                                )
                                .map_err(|e| e.to_string())
                            })
                            .unwrap_or_else(|e| {
                                tracing::error!(%agent, error = %e, "agent PIN not checked");
                                false
                            });
                        let _ = answers.send((Check::AgentPin, check, ok));
                    });
                }
                Output::Disposition {
                    check,
                    agent,
                    call_id,
                    caller,
                    digit,
                    at_ms,
                } => {
                    let job = StoreJob::Disposition {
                        check,
                        agent,
                        call_id,
                        caller,
                        digit,
                        at_ms,
                        answers: self.pin_answers.clone(),
                    };
                    if self.jobs.send(job).is_err() {
                        tracing::error!("store task gone; disposition lost");
                    }
                }
                Output::Journal(mut update) => {
                    // The calls' running recordings, so a crash-cut file is filed
                    // under its call at the next start.
                    if let Some(r) = &self.call_recorder {
                        let (JournalUpdate::Upsert(calls) | JournalUpdate::Replace(calls)) =
                            &mut update;
                        for call in calls.iter_mut().filter(|c| !c.ended) {
                            call.recordings = r.recording_keys(&call.cdr);
                        }
                    }
                    if self.jobs.send(StoreJob::Journal(update)).is_err() {
                        tracing::error!("store task gone; journal of live calls not written");
                    }
                }
                Output::Cdr(cdr) => {
                    if let Some(r) = &mut self.call_recorder {
                        r.cdr(&cdr);
                    }
                    if self.jobs.send(StoreJob::Cdr(cdr)).is_err() {
                        tracing::error!("store task gone; CDR lost");
                    }
                }
            }
        }
    }
}

/// Applies store jobs in order. Writes are pipelined: each is queued on the writer
/// thread as it arrives (the writer's queue is FIFO, so the order per call, journal
/// before CDR, is kept) without waiting for the previous one to commit, so the
/// writer can group them into one commit ([`StoreWriter`]'s group commit). What
/// follows a commit (the `cdr stored` log line, the disposition's answer) runs when
/// that write's reply comes, in queue order. A voicemail job (files and rows) is
/// awaited: it comes after everything queued before it anyway.
async fn store_task(
    writer: StoreWriter,
    mut jobs: mpsc::UnboundedReceiver<StoreJob>,
    voicemail_dir: PathBuf,
) {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    type Done = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    let mut pending: FuturesOrdered<Done> = FuturesOrdered::new();
    loop {
        let job = tokio::select! {
            biased;
            Some(()) = pending.next(), if !pending.is_empty() => continue,
            job = jobs.recv() => job,
        };
        let Some(job) = job else { break };
        if let StoreJob::Voicemail(job) = job {
            crate::voicemail::service::run_job(&writer, &voicemail_dir, job).await;
            continue;
        }
        pending.push_back(queue_store_job(&writer, job));
    }
    while pending.next().await.is_some() {}
}

/// Queues `job` on the store writer now and returns what to do once it committed.
fn queue_store_job(
    writer: &StoreWriter,
    job: StoreJob,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    match job {
        StoreJob::Voicemail(_) => {
            unreachable!("the store task runs voicemail jobs itself")
        }
        StoreJob::Cdr(cdr) => {
            let call_id = cdr.call_id.clone();
            let disposition = cdr.disposition;
            let stored = writer.queue_cdr(*cdr);
            Box::pin(async move {
                match stored.await {
                    Ok(seq) => {
                        tracing::info!(call_id, ?disposition, outbox_seq = seq, "cdr stored")
                    }
                    Err(e) => tracing::error!(call_id, error = %e, "CDR not stored"),
                }
            })
        }
        StoreJob::Journal(update) => {
            let written = writer.queue_journal(update);
            Box::pin(async move {
                if let Err(e) = written.await {
                    tracing::warn!(error = %e, "journal of live calls not written");
                }
            })
        }
        StoreJob::PortState(port, state) => {
            let written = writer.queue_port_state(port, state.as_str());
            Box::pin(async move {
                if let Err(e) = written.await {
                    tracing::warn!(port, error = %e, "port state not stored");
                }
            })
        }
        StoreJob::AgentState {
            agent,
            state,
            extension,
            call_id,
            at_ms,
        } => {
            let shown = agent.clone();
            let written = writer.queue_transact("append agent state", move |tx, path| {
                crate::acd::store::append_state_log(
                    tx,
                    path,
                    &agent,
                    &state,
                    extension.as_deref(),
                    call_id.as_deref(),
                    at_ms,
                )
                .map_err(|e| crate::error::Error::AcdStore(Box::new(e)))
            });
            Box::pin(async move {
                if let Err(e) = written.await {
                    tracing::warn!(agent = %shown, error = %e, "agent state not stored");
                }
            })
        }
        StoreJob::BlacklistHit { pattern, at_ms } => {
            let shown = pattern.clone();
            let written = writer.queue_transact("count blacklist hit", move |tx, path| {
                crate::blacklist::store::record_hit(tx, path, &pattern, at_ms)
            });
            Box::pin(async move {
                match written.await {
                    Ok(true) => {}
                    // Deleted between the call and now: nothing to count.
                    Ok(false) => tracing::debug!(pattern = shown, "hit on a gone blacklist entry"),
                    Err(e) => {
                        tracing::warn!(pattern = shown, error = %e, "blacklist hit not stored")
                    }
                }
            })
        }
        StoreJob::Disposition {
            check,
            agent,
            call_id,
            caller,
            digit,
            at_ms,
            answers,
        } => {
            let (shown_agent, shown_call) = (agent.clone(), call_id.clone());
            let written = writer.queue_transact("store a disposition", move |tx, path| {
                crate::acd::store::record_disposition(
                    tx, path, &agent, &call_id, &caller, digit, at_ms,
                )
                .map_err(|e| crate::error::Error::AcdStore(Box::new(e)))
            });
            Box::pin(async move {
                let ok = match written.await {
                    Ok(Some(stored)) => {
                        tracing::info!(agent = %shown_agent, call = shown_call, digit, customer_type = stored.type_name, customer = ?stored.customer_id, "disposition stored");
                        true
                    }
                    Ok(None) => {
                        tracing::info!(agent = %shown_agent, call = shown_call, digit, "disposition refused: no customer type has that digit");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(agent = %shown_agent, call = shown_call, error = %e, "disposition not stored");
                        false
                    }
                };
                let _ = answers.send((Check::Disposition, check, ok));
            })
        }
    }
}

/// The blacklist as stored, compiled for call control; `None` (logged: nobody is
/// screened) when the store cannot be read.
fn load_blacklist(db_path: &std::path::Path) -> Option<crate::blacklist::Blacklist> {
    let loaded =
        Store::reader(db_path).and_then(|r| crate::blacklist::store::load(r.connection(), db_path));
    match loaded {
        Ok((list, skipped)) => {
            if skipped > 0 {
                tracing::warn!(
                    skipped,
                    "blacklist entries that do not validate are ignored"
                );
            }
            Some(list)
        }
        Err(e) => {
            tracing::error!(error = %e, "blacklist not loaded: callers are not screened");
            None
        }
    }
}

/// HQ's dial routes as stored; `None`, logged, when they cannot be read: the routes
/// in force stay. Routes that need a permission are logged: call control does not
/// enforce it.
fn load_dial_routes(db_path: &std::path::Path) -> Option<crate::call::DialRoutes> {
    let loaded = Store::reader(db_path)
        .and_then(|r| crate::sync::apply::dial_routes(r.connection(), db_path));
    match loaded {
        Ok(routes) => {
            for r in routes.iter().filter(|r| r.needs_permission.is_some()) {
                tracing::info!(
                    route = r.name,
                    prefix = r.prefix,
                    permission = r.needs_permission.as_deref().unwrap_or_default(),
                    "dial route only for callers holding the calling permission"
                );
            }
            Some(routes)
        }
        Err(e) => {
            tracing::error!(error = %e, "dial routes not loaded: the routes in force stay");
            None
        }
    }
}

/// Reloads something from the store off the main loop each time `changed` is poked
/// (the sync applier and the local API poke it after their commit) and sends it to
/// the main loop; ends when the main loop's receiver is gone. `load` logs its own
/// failures and returns `None` for them: what is in force stays.
fn reloader<T: Send + 'static>(
    changed: std::sync::Arc<tokio::sync::Notify>,
    db_path: &std::path::Path,
    what: &'static str,
    load: fn(&std::path::Path) -> Option<T>,
) -> mpsc::UnboundedReceiver<T> {
    let (tx, rx) = mpsc::unbounded_channel();
    let db_path = db_path.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tx.closed() => return,
            }
            let path = db_path.clone();
            match tokio::task::spawn_blocking(move || load(&path)).await {
                Ok(Some(loaded)) => {
                    if tx.send(loaded).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, what, "reload task failed"),
            }
        }
    });
    rx
}

/// The call center's queues and agents as stored (for the ACD's reconfiguration
/// while calls go on); `None`, logged, when the rows do not fit together: the
/// configuration in force stays.
fn load_acd(db_path: &std::path::Path) -> Option<crate::acd::AcdConfig> {
    let loaded = Store::reader(db_path)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            crate::acd::store::load_config(r.connection(), db_path).map_err(|e| e.to_string())
        });
    match loaded {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::error!(error = %e, "call center not reconfigured: the one in force stays");
            None
        }
    }
}

/// The web page's status publisher over the board's ports and the config's
/// extensions, the channel of its requests, and the handle the web side reads.
fn web_status(
    config: &Config,
    profile: &BoardProfile,
    country: Country,
) -> (
    crate::web::status::StatusPublisher,
    mpsc::UnboundedReceiver<crate::web::status::ControlRequest>,
    crate::web::status::StatusHandle,
) {
    use crate::web::status::{PortKind, StaticInfo, StatusHandle, StatusPublisher};
    let ext = |port: u8| {
        config
            .extensions
            .iter()
            .find(|e| e.port.get() == port)
            .map(|e| (e.number.as_str().to_owned(), e.name.clone()))
    };
    let ports = profile
        .fxs_ports()
        .map(|p| (p, PortKind::Fxs, ext(p)))
        .chain(profile.fxo_ports().map(|p| (p, PortKind::Fxo, None)))
        .collect();
    let (publisher, rx) = StatusPublisher::new(
        ports,
        false,
        country.ring_cadence(),
        Instant::now(),
        system_clock_ms(),
    );
    let (control, requests) = mpsc::unbounded_channel();
    let info = StaticInfo {
        version: env!("CARGO_PKG_VERSION"),
        board_model: profile.model.clone(),
        data_dir: config.paths.data_dir.clone(),
        sip_configured: config.sip.is_some(),
        sip_accounts: config.sip_accounts.len(),
    };
    (publisher, requests, StatusHandle::new(rx, control, info))
}

impl BoardLoop {
    fn send_commands(&self, commands: Vec<(u8, Command)>) {
        for (port, command) in commands {
            if let Err(e) = self.link.send(port, Body::Command(command)) {
                tracing::warn!(port, error = %e, "web status command not sent to the line controller");
            }
        }
    }

    /// The loopback tests' next frames, to their ports.
    fn loopback_frames(&mut self) {
        for (port, pcm) in self.web_status.loopback_frames(Instant::now()) {
            let mut samples = [0u8; line_proto::AUDIO_FRAME_LEN];
            self.law.encode_block(&pcm, &mut samples);
            let audio = line_proto::Audio {
                law: self.law,
                samples,
            };
            if let Err(e) = self.link.send(port, Body::Audio(audio)) {
                tracing::warn!(port, error = %e, "loopback test frame not sent");
            }
        }
    }

    /// Line readings and ring-test ends of the web status.
    fn web_status_due(&mut self) {
        let commands = self
            .web_status
            .handle_timeout(Instant::now(), system_clock_ms());
        self.send_commands(commands);
    }

    /// A dial of the campaign driver: call control places it (or refuses: the agent
    /// is no longer free); the driver hears which, and a placed lead pops on the
    /// agent's desktop.
    fn campaign_dial(
        &mut self,
        calls: &mut CallControl,
        dial: crate::campaign::driver::PlannedDial,
    ) {
        use crate::campaign::driver::DriverEvent;
        let request = crate::call::CampaignDial {
            attempt: dial.attempt_id,
            agent: dial.agent.clone(),
            number: dial.number,
            caller_id: dial.caller_id,
            ring_timeout: dial.ring_timeout,
        };
        let event = match calls.campaign_dial(Instant::now(), request) {
            Ok(call_id) => {
                self.desk_events
                    .publish(crate::screen_pop::DeskEvent::Leads {
                        agent: dial.agent,
                        campaign: dial.campaign_id,
                        leads: vec![dial.lead_id],
                        at_ms: system_clock_ms(),
                    });
                DriverEvent::Placed {
                    attempt_id: dial.attempt_id,
                    call_id,
                }
            }
            Err(e) => DriverEvent::Refused {
                attempt_id: dial.attempt_id,
                agent: dial.agent,
                why: e.to_string(),
                undialable: matches!(e, crate::call::CampaignDialError::BadNumber(_)),
            },
        };
        if self.campaign_events.send(event).is_err() {
            tracing::error!("campaign driver gone; dial not recorded");
        }
    }

    /// A request from the web page (a ring test, the calls in progress, a reboot).
    /// Answers whether the box is to reboot now.
    fn web_request(
        &mut self,
        calls: &mut CallControl,
        request: crate::web::status::ControlRequest,
    ) -> bool {
        use crate::web::status::{reboot_decision, ActiveCalls, ControlRequest};
        match request {
            ControlRequest::Reboot { force, reply } => {
                let decision = reboot_decision(calls.active_calls(), force);
                let accepted = decision.is_ok();
                if accepted {
                    tracing::warn!(
                        active_calls = calls.active_calls(),
                        force,
                        "reboot asked from the web page or API: stopping to reboot"
                    );
                }
                let _ = reply.send(decision);
                return accepted;
            }
            ControlRequest::Calls { reply } => {
                // Call control's calls now; the RTP statistics of their legs from the
                // media engine, asked on a task of its own so the loop never waits.
                let calls = calls.snapshot();
                let media = self.media.clone();
                tokio::spawn(async move {
                    let legs = media.stats().await.map_err(|e| e.to_string());
                    let _ = reply.send(ActiveCalls { calls, legs });
                });
            }
            ControlRequest::LineHistory { reply } => {
                let _ = reply.send(self.web_status.line_history().clone());
            }
            ControlRequest::CallCenter { reply } => {
                let status = calls.acd().map(|acd| {
                    crate::web::status::CallCenterStatus::of(acd, Instant::now(), system_clock_ms())
                });
                let _ = reply.send(status);
            }
            ControlRequest::ClickToCall { request, reply } => {
                // The agent's logged-in phone, if the caller is an agent logged in.
                let agent_extension = match &request.phone {
                    crate::screen_pop::ClickPhone::Own {
                        agent: Some(agent), ..
                    } => calls
                        .acd()
                        .and_then(|acd| acd.agent(agent))
                        .filter(|(state, _, _)| **state != crate::acd::AgentState::LoggedOut)
                        .and_then(|(_, _, ext)| ext.map(str::to_owned)),
                    _ => None,
                };
                let outcome = request
                    .resolve(agent_extension.as_deref())
                    .and_then(|from| {
                        let to = if request.outside {
                            calls.outside_dial_string(&request.to)?
                        } else {
                            request.to.clone()
                        };
                        let call_id = calls.click_to_call(Instant::now(), &from, &to)?;
                        Ok(crate::screen_pop::ClickStarted { call_id, from })
                    });
                let _ = reply.send(outcome);
            }
            ControlRequest::AgentDesk {
                agent,
                action,
                reply,
            } => {
                let _ = reply.send(agent_desk(calls, agent, action));
            }
            ControlRequest::VoicemailDeleted { id } => calls.voicemail_message_removed(id),
            ControlRequest::Publish { event } => self.desk_events.publish(event),
            ControlRequest::LoopbackTest { port, reply } => {
                let outcome =
                    self.web_status
                        .loopback_test(Instant::now(), system_clock_ms(), port);
                let started = outcome.map(|(id, commands)| {
                    tracing::info!(port, "loopback test started");
                    self.send_commands(commands);
                    id
                });
                let _ = reply.send(started);
            }
            ControlRequest::LineTest { port, reply } => {
                let outcome = self
                    .web_status
                    .line_test(Instant::now(), system_clock_ms(), port);
                let started = outcome.map(|(id, commands)| {
                    tracing::info!(port, "line test started");
                    self.send_commands(commands);
                    id
                });
                let _ = reply.send(started);
            }
            ControlRequest::RingTest { port, reply } => {
                let outcome = self
                    .web_status
                    .ring_test(Instant::now(), system_clock_ms(), port);
                let started = match outcome {
                    Ok(commands) => {
                        tracing::info!(port, "ring test started");
                        self.send_commands(commands);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(started);
            }
        }
        false
    }
}

/// Carries out an agent desktop's request on call control and reports the agent's
/// state ([`crate::web::status::ControlRequest::AgentDesk`]).
pub(crate) fn agent_desk(
    calls: &mut CallControl,
    agent: crate::acd::AgentId,
    action: Option<crate::call::DeskAction>,
) -> Result<crate::web::status::AgentDeskState, crate::web::status::AgentDeskError> {
    use crate::web::status::{AgentDeskError, AgentDeskState};
    let now = Instant::now();
    let acd = calls.acd().ok_or(AgentDeskError::NoCallCenter)?;
    if acd.agent(&agent).is_none() {
        return Err(AgentDeskError::UnknownAgent(agent.to_string()));
    }
    if let Some(action) = action {
        match calls.agent_desk(now, agent.clone(), action) {
            None => return Err(AgentDeskError::NoCallCenter),
            Some(Err(e)) => return Err(AgentDeskError::Refused(e)),
            Some(Ok(())) => {}
        }
    }
    let acd = calls.acd().ok_or(AgentDeskError::NoCallCenter)?;
    let (state, since, extension) = acd
        .agent(&agent)
        .ok_or_else(|| AgentDeskError::UnknownAgent(agent.to_string()))?;
    let ago = i64::try_from(now.saturating_duration_since(since).as_millis()).unwrap_or(0);
    Ok(AgentDeskState {
        agent_id: agent.to_string(),
        extension_mode: acd
            .extension_mode(&agent)
            .map_or("login", crate::acd::ExtensionMode::as_str),
        state: state.name(),
        reason: match state {
            crate::acd::AgentState::Paused(Some(r)) => Some(r.to_string()),
            _ => None,
        },
        extension: extension.map(str::to_owned),
        since_ms: system_clock_ms() - ago,
    })
}
