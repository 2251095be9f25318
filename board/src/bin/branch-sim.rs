//! `branch-sim`: runs the simulated line controller on a pty so `branchd` (or a person
//! with a terminal program) can talk to it like a real board.
//!
//! ```text
//! branch-sim [--profile sim] [--link /tmp/branchline-lc] [--console 127.0.0.1:7700] [--law ulaw|alaw]
//! branch-sim --connect 127.0.0.1:7878     # drive a simulator that runs elsewhere (e.g. in branchd)
//! ```
//!
//! Console commands are read from stdin (and from `--console` connections); `help`
//! lists them. Ends at EOF on stdin or on ctrl-c. The `button` and `leds` commands act
//! on the simulated GPIO, which only a `branchd` running the simulator in-process
//! drives (`--connect` to its `[board] sim_console`): a standalone `branch-sim` has no
//! daemon reading its button.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use branchline_board::profile::BoardProfile;
use branchline_board::sim::{console_command, serve_console, Simulator};
use clap::{Parser, ValueEnum};
use line_proto::g711::Law;

#[derive(Debug, Parser)]
#[command(
    name = "branch-sim",
    version,
    about = "Simulated Branchline line controller on a pty"
)]
struct Args {
    /// Board profile: a built-in name (sim, bl-400, bl-812) or a TOML file.
    #[arg(long, default_value = "sim")]
    profile: String,
    /// Symlink to create pointing at the pty (an existing symlink is replaced).
    #[arg(long, default_value = "/tmp/branchline-lc")]
    link: PathBuf,
    /// Also serve the console on this TCP address (e.g. 127.0.0.1:7700).
    #[arg(long)]
    console: Option<String>,
    /// Do not start a simulator: connect to the console of a running one (for example
    /// the one `branchd` starts on the `sim` profile) and relay stdin and stdout.
    #[arg(long, conflicts_with_all = ["console", "link", "profile"])]
    connect: Option<String>,
    /// Companding law of the audio the simulator sends.
    #[arg(long, value_enum, default_value_t = LawArg::Ulaw)]
    law: LawArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LawArg {
    Ulaw,
    Alaw,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("branch-sim: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out = format!("{out}: {c}");
        }
    }
    out
}

fn replace_symlink(link: &Path, target: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)
            .with_context(|| format!("cannot remove old symlink {}", link.display()))?,
        Ok(_) => bail!(
            "{} exists and is not a symlink; not replacing it",
            link.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", link.display())),
    }
    std::os::unix::fs::symlink(target, link).with_context(|| {
        format!(
            "cannot create symlink {} -> {}",
            link.display(),
            target.display()
        )
    })
}

/// Relays stdin to a running simulator's console and its replies to stdout.
fn connect(addr: &str) -> anyhow::Result<()> {
    let stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("cannot connect to the simulator console at {addr}"))?;
    let mut from_console = stream.try_clone().context("cannot clone the connection")?;
    let printer =
        std::thread::spawn(move || std::io::copy(&mut from_console, &mut std::io::stdout()));
    let mut to_console = &stream;
    std::io::copy(&mut std::io::stdin().lock(), &mut to_console)
        .context("cannot send to the simulator console")?;
    // Stdin ended: let the console answer what is in flight, then close.
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("cannot close the connection")?;
    match printer.join() {
        Ok(r) => r
            .map(|_| ())
            .context("cannot read from the simulator console"),
        Err(_) => bail!("the console reader thread panicked"),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = &args.connect {
        return connect(addr);
    }
    let profile = BoardProfile::resolve(&args.profile)?;
    let law = match args.law {
        LawArg::Ulaw => Law::Ulaw,
        LawArg::Alaw => Law::Alaw,
    };
    let sim = Simulator::start(&profile, law)?;
    replace_symlink(&args.link, sim.tty_path())?;
    println!(
        "branch-sim: {} ({} FXS + {} FXO) on {} (linked from {})",
        profile.model,
        profile.fxs_ports,
        profile.fxo_ports,
        sim.tty_path().display(),
        args.link.display()
    );
    if let Some(addr) = &args.console {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        println!("branch-sim: console on {}", listener.local_addr()?);
        let handle = sim.handle();
        std::thread::Builder::new()
            .name("sim-console-accept".into())
            .spawn(move || serve_console(handle, listener))
            .context("cannot start the console thread")?;
    }
    println!("branch-sim: type 'help' for commands; ctrl-d or ctrl-c ends");

    // Ctrl-c ends the process; the pty disappears with it, as the board would.
    let handle = sim.handle();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match console_command(&handle, &line) {
            Ok(reply) => writeln!(stdout, "{reply}")?,
            Err(e) => writeln!(stdout, "error: {e}")?,
        }
        stdout.flush()?;
    }
    drop(sim);
    if std::fs::read_link(&args.link).is_ok() {
        // Best effort: a stale link to a vanished pty only confuses the next reader.
        let _ = std::fs::remove_file(&args.link);
    }
    Ok(())
}
