//! `branch-image`: build, verify and install signed Branchline update bundles, and
//! drive the A/B slot state of a directory-backed box.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use branchline_image::bundle::{self, BuildSpec, BundleFile};
use branchline_image::policy::Identity;
use branchline_image::store::{DirSlots, SlotPayload, SlotStore};
use branchline_image::version::Version;
use branchline_image::{keys, overlay, update};
use clap::{Parser, Subcommand};
use ed25519_dalek::VerifyingKey;

#[derive(Parser)]
#[command(version, about = "Signed Branchline update bundles and A/B slots")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an ed25519 signing keypair (private key mode 0600).
    Keygen {
        /// Directory for the key files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a signed bundle (needs SOURCE_DATE_EPOCH).
    Build {
        /// Board profile name (built-in: sim, sim-16, bl-400, bl-812).
        #[arg(long)]
        board: String,
        /// Target triple of the binaries.
        #[arg(long)]
        target: String,
        /// Release version, MAJOR.MINOR.PATCH.
        #[arg(long)]
        version: Version,
        /// Anti-rollback floor this release sets once committed.
        #[arg(long)]
        min_version: Version,
        /// Private signing key file.
        #[arg(long)]
        key: PathBuf,
        /// Binaries, installed as usr/bin/NAME (mode 0755).
        #[arg(long = "bin", required = true, num_args = 1..)]
        bins: Vec<PathBuf>,
        /// Extra rootfs files; overrides generated files with the same path.
        #[arg(long)]
        overlay: Option<PathBuf>,
        /// Output bundle.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle (signature, manifest, every file) without installing it.
    Verify {
        /// Pinned public key file(s); any one may match.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Install a bundle into the inactive slot (boot-once).
    Install {
        /// Pinned public key file(s); any one may match.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Slots directory (state.json, slots/a, slots/b).
        #[arg(long)]
        slots: PathBuf,
        /// This box's board; default: the board of the running slot's image.
        #[arg(long)]
        board: Option<String>,
        /// This box's target triple; default: that of the running slot's image.
        #[arg(long)]
        target: Option<String>,
        /// Accept a version not newer than the installed one (never below the floor).
        #[arg(long)]
        allow_downgrade: bool,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Show the slot state.
    Status {
        /// Slots directory.
        #[arg(long)]
        slots: PathBuf,
    },
    /// Commit the running slot (what the health check does).
    MarkGood {
        /// Slots directory.
        #[arg(long)]
        slots: PathBuf,
    },
    /// Simulate the bootloader: choose the slot to boot and record the spent try.
    Boot {
        /// Slots directory.
        #[arg(long)]
        slots: PathBuf,
    },
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>> {
    paths
        .iter()
        .map(|p| Ok(keys::read_verifying_key(p)?))
        .collect()
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading bundle {}", path.display()))
}

fn overlay_files(dir: &Path, out: &mut BTreeMap<String, BundleFile>) -> Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                bail!(
                    "{}: only regular files may be in the overlay",
                    path.display()
                );
            }
            let rel = path
                .strip_prefix(dir)?
                .to_str()
                .context("non-UTF-8 overlay path")?
                .to_owned();
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let contents = fs::read(&path)?;
            out.insert(
                rel.clone(),
                BundleFile {
                    path: rel,
                    contents,
                    mode,
                },
            );
        }
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Cmd::Keygen { out } => {
            let public = keys::keygen(&out)?;
            println!(
                "wrote {} (keep offline) and {} (fingerprint {})",
                out.join(keys::PRIVATE_KEY_FILE).display(),
                out.join(keys::PUBLIC_KEY_FILE).display(),
                keys::fingerprint(&public)
            );
        }
        Cmd::Build {
            board,
            target,
            version,
            min_version,
            key,
            bins,
            overlay: extra,
            out,
        } => {
            let build_time = bundle::source_date_epoch()?;
            let key = keys::read_signing_key(&key)?;
            let mut files: BTreeMap<String, BundleFile> = overlay::generate(&board)?
                .into_iter()
                .map(|f| (f.path.clone(), f))
                .collect();
            if let Some(dir) = extra {
                overlay_files(&dir, &mut files)?;
            }
            for bin in bins {
                let name = bin
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("binary path has no UTF-8 file name")?;
                let path = format!("usr/bin/{name}");
                let contents =
                    fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
                files.insert(
                    path.clone(),
                    BundleFile {
                        path,
                        contents,
                        mode: 0o755,
                    },
                );
            }
            // The units in the overlay run these: a bundle without one would boot a
            // box whose unit fails.
            for name in overlay::required_binaries(&board)? {
                let path = format!("usr/bin/{name}");
                if !files.contains_key(&path) {
                    bail!(
                        "board {board} needs {path} in the bundle (its systemd units run it): \
                         add --bin <path to {name}>"
                    );
                }
            }
            let spec = BuildSpec {
                board,
                target,
                version,
                min_version,
                build_time,
                files: files.into_values().collect(),
            };
            let bytes = bundle::build(&spec, &key)?;
            fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} bytes, sha256 {})",
                out.display(),
                bytes.len(),
                bundle::sha256_hex(&bytes)
            );
        }
        Cmd::Verify { keys, bundle: path } => {
            let keys = read_keys(&keys)?;
            let bytes = read_bundle(&path)?;
            let signed = bundle::open(&bytes, &keys)?;
            let key = keys::fingerprint(&signed.key);
            let v = signed.verify_files()?;
            let m = &v.manifest;
            println!(
                "ok: {} {} for {} / {} (min {}), {} files, signed by {key}",
                m.product,
                m.version,
                m.board,
                m.target,
                m.min_version,
                m.files.len()
            );
        }
        Cmd::Install {
            keys,
            slots,
            board,
            target,
            allow_downgrade,
            bundle: path,
        } => {
            let keys = read_keys(&keys)?;
            let bytes = read_bundle(&path)?;
            let mut store = DirSlots::new(&slots);
            let state = store.load()?;
            let running = match state.installed() {
                Some(_) => Some(update::verify_slot(&store.slot_dir(state.active), &keys)?),
                None => None,
            };
            let board = board.or_else(|| running.as_ref().map(|m| m.board.clone()));
            let target = target.or_else(|| running.as_ref().map(|m| m.target.clone()));
            let (Some(board), Some(target)) = (board, target) else {
                bail!(
                    "no committed image in {}: give --board and --target",
                    slots.display()
                );
            };
            let mut payload = store.clone();
            let done = update::install(
                &bytes,
                &keys,
                &Identity { board, target },
                allow_downgrade,
                &mut store,
                &mut payload,
            )?;
            println!(
                "installed {} into slot {} (boot-once)",
                done.version, done.slot
            );
        }
        Cmd::Status { slots } => {
            let state = DirSlots::new(&slots).load()?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Cmd::MarkGood { slots } => {
            update::mark_good(&mut DirSlots::new(&slots))?;
            println!("running slot marked good");
        }
        Cmd::Boot { slots } => {
            let slot = update::boot(&mut DirSlots::new(&slots))?;
            println!("{slot}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("branch-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}
