//! Provisioning on the box: watch the stick mount points, verify a bundle, apply
//! all of its settings or none, write the result back to the stick, show it on the
//! LED; and the same for a QR token given to the web page ([`local`]).
//!
//! # Flow
//!
//! The image's udev rule mounts a stick read-write under a fixed directory
//! (`[provisioning] watch`, e.g. `/run/branchline/usb`). [`watch`] puts an inotify
//! watch (`IN_CREATE`, `IN_MOVED_TO`, `IN_CLOSE_WRITE`, `IN_ATTRIB`) on each watched
//! directory and on each directory directly under it. A mount itself makes no inotify
//! event on the directory it covers, so the contract with the image's mount helper
//! is: create `<watch>/<label>`, mount the stick there, then create or touch any file
//! in `<watch>` (e.g. `<label>.mounted`); a bundle copied straight into a watched
//! directory is seen as well. Whenever something changes there it looks for
//! [`bundle::FILE_NAME`] at the top of the mount point and at the top of each
//! directory directly under it (a stick mounted at `<watch>/<label>`), and runs
//! [`process_file`] on each bundle found. Mount points are also scanned once at start,
//! so a stick inserted while the daemon was down is seen. There is no polling path.
//!
//! # Verify, then apply (all or nothing)
//!
//! [`apply_bundle`]: the file is read with a size bound ([`MAX_BUNDLE_BYTES`]), hashed
//! (sha256), opened with the trusted keys (framing, key id, ed25519, payload, the token
//! inside; `branchline_provisioning::bundle::open`), then, inside ONE SQLite
//! transaction on the daemon's store (`IMMEDIATE`, so the check and the write see the
//! same state):
//!
//! 1. bundle sha256 already in `provisioning_bundles` -> [`Outcome::AlreadyApplied`],
//!    nothing written (re-inserting the same stick is a no-op);
//! 2. `branchline_provisioning::check::check`: expiry, this box's serial, the
//!    revocation list, replay ([`SqliteUsedTokens`] on `provisioning_used_tokens`);
//! 3. the settings replace `provisioned_settings`, one JSON row per field: `site`,
//!    `hq_url`, `ca_pin`, `enrollment_token` (the signed token text, kept for the
//!    enrollment step with HQ), `country`, `network`, `trunk`, `fxs` (port ->
//!    extension map), `fxo`, `installer`;
//! 4. the token is marked used and the bundle recorded;
//! 5. commit. Any error on the way rolls the transaction back: nothing is applied and
//!    the token stays usable.
//!
//! The steps after the signature are [`apply_opened`], inside a transaction its caller
//! holds: [`apply_bundle`] opens its own on its connection; a token from the web page
//! or API ([`open_token`]) is applied in the daemon's store writer's transaction
//! together with its audit row (`crate::api`'s provisioning routes). A token is
//! recorded in `provisioning_bundles` under the sha256 of its text and writes only
//! the enrollment fields (`site`, `hq_url`, `ca_pin`, `enrollment_token`): like a new
//! bundle, it replaces every provisioned setting, so the settings of an earlier
//! stick (trunk, ports, country) give way to what HQ sends at enrollment.
//!
//! Why SQLite rather than a config overlay file: the token's single use and the
//! settings must change together, and the store already gives one durable
//! (`synchronous=FULL`, WAL) transaction for both. The daemon's own store writer is a
//! separate connection; SQLite serialises the two writers (busy timeout
//! [`crate::store::BUSY_TIMEOUT`]).
//!
//! # Result file
//!
//! Every bundle seen gets `branchline-result-<serial>.json` next to it, written
//! atomically (temp file, fsync, rename, fsync of the directory): `status` (`applied`,
//! `already_applied`, `refused`), the bundle's sha256, the fields applied, or the
//! error. If the stick is read-only the result is only logged.
//!
//! # LEDs
//!
//! There is no provisioning LED on the boards, so the power LED shows it
//! ([`LedPattern`]): slow blink while a bundle is verified and applied, steady on
//! when applied (or already applied), fast blink for [`ERROR_BLINK`] after a refusal,
//! then steady on again. The blinking runs in the provisioning thread; the daemon's
//! main loop owns the GPIO and sets the LED to each on/off state it is sent.
//!
//! # Taking effect
//!
//! [`settings`] lays the stored settings over `branchd.toml` at every start
//! (precedence, per-setting refusal, `local_override`). [`watch`] reports each
//! applied bundle on its `applied` channel; the daemon then restarts itself cleanly
//! (once no call is up) so that every subsystem starts with the new settings.
//!
//! # Submodules
//!
//! [`settings`] (the overlay at start), [`state`] (what the web page shows),
//! [`local`] (tokens from the web page: text, link, photo), [`claim`] (the box's claim
//! secret and code).
//!
//! # Limits
//!
//! The revocation list is read once at start from `[provisioning] revoked`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use branchline_provisioning::bundle;
use branchline_provisioning::check::{self, CheckContext, StoreError, UsedTokens};
use branchline_provisioning::keys::TrustedKeys;
use branchline_provisioning::payload::{BoxSerial, SiteConfig, TokenId};
use branchline_provisioning::revocation::RevocationList;
use branchline_provisioning::token::{self, Token};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::ProvisioningConfig;

pub mod claim;
pub mod local;
pub mod settings;
pub mod state;
#[cfg(test)]
mod tests;

/// Largest bundle read from a stick (a real one is a few KiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024;
/// How long the LED fast-blinks after a refused bundle.
pub const ERROR_BLINK: Duration = Duration::from_secs(60);

/// What became of one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and applied; the fields written.
    Applied {
        /// Site id.
        site: String,
        /// Fields written to `provisioned_settings`.
        fields: Vec<&'static str>,
    },
    /// This exact bundle (same sha256) was applied before; nothing changed.
    AlreadyApplied,
    /// Refused or failed; nothing changed.
    Refused(String),
}

/// The result file written back to the stick.
#[derive(Debug, Serialize)]
pub struct ResultFile<'a> {
    /// This box's serial.
    pub serial: &'a str,
    /// `applied`, `already_applied` or `refused`.
    pub status: &'static str,
    /// sha256 of the bundle file (hex), when it could be read.
    pub bundle_sha256: Option<String>,
    /// The site, when applied.
    pub site: Option<&'a str>,
    /// Fields applied.
    pub applied: &'a [&'static str],
    /// Why not, when refused.
    pub error: Option<&'a str>,
    /// When, RFC 3339.
    pub at: String,
}

/// The box's [`UsedTokens`] store: `provisioning_used_tokens`, on the connection (or
/// transaction) the apply runs in.
#[derive(Debug)]
pub struct SqliteUsedTokens<'c>(pub &'c Connection);

impl UsedTokens for SqliteUsedTokens<'_> {
    fn is_used(&self, id: &TokenId) -> Result<bool, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM provisioning_used_tokens WHERE token_id = ?1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn mark_used(&mut self, id: &TokenId, now: u64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO provisioning_used_tokens (token_id, used_at_s) VALUES (?1, ?2)",
            params![id.to_string(), i64::try_from(now)?],
        )?;
        Ok(())
    }
}

/// What [`apply_bundle`] checks against.
#[derive(Debug)]
pub struct Verifier {
    /// Trusted provisioning keys.
    pub keys: TrustedKeys,
    /// This box's serial.
    pub serial: BoxSerial,
    /// The revocation list.
    pub revoked: RevocationList,
}

impl Verifier {
    /// Loads keys and revocation list named by `[provisioning]`.
    pub fn load(cfg: &ProvisioningConfig) -> Result<Verifier, String> {
        let keys =
            TrustedKeys::from_files(&cfg.keys).map_err(|e| format!("provisioning keys: {e}"))?;
        let revoked = match &cfg.revoked {
            Some(p) if p.exists() => RevocationList::load(p, &keys)
                .map_err(|e| format!("revocation list {}: {e}", p.display()))?,
            _ => RevocationList::default(),
        };
        Ok(Verifier {
            keys,
            serial: cfg.serial.clone(),
            revoked,
        })
    }
}

/// Reads a bundle file, at most [`MAX_BUNDLE_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_BUNDLE_BYTES} bytes: not a bundle",
            path.display()
        ));
    }
    Ok(bytes)
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where an applied artifact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A USB bundle (`branchline-provision.blp`): enrollment and the site's settings.
    Usb,
    /// A QR token applied from the web page or API: enrollment only.
    Token,
}

/// A bundle or token whose signatures verified: what [`apply_opened`] writes.
#[derive(Debug, Clone)]
pub struct Opened {
    /// sha256 (hex) of the artifact: the bundle's bytes, or the token's text. The key
    /// of `provisioning_bundles`, so the same artifact again is a no-op.
    pub sha256: String,
    /// The enrollment token (the bundle's, or the token itself).
    pub token: Token,
    /// The site's settings (bundles only).
    pub config: Option<SiteConfig>,
}

impl Opened {
    /// Where it came from.
    pub fn source(&self) -> Source {
        if self.config.is_some() {
            Source::Usb
        } else {
            Source::Token
        }
    }
}

/// Why a bundle or token was refused (its HTTP status on the web page and API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not a bundle or token, or not one HQ signed with a trusted key: framing, text,
    /// base45, truncation, tampering, unknown key, payload.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Bound to other boxes.
    WrongSerial,
    /// On the revocation list.
    Revoked,
    /// Its token was already used on this box.
    Replayed,
}

/// A refusal: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// Which check failed.
    pub reason: Reason,
    /// The check's message.
    pub message: String,
}

impl Refused {
    fn of(what: &str, e: &branchline_provisioning::Error) -> Refused {
        use branchline_provisioning::Error as E;
        let reason = match e {
            E::Expired { .. } => Reason::Expired,
            E::WrongSerial { .. } => Reason::WrongSerial,
            E::Revoked { .. } => Reason::Revoked,
            E::Replayed(_) => Reason::Replayed,
            _ => Reason::Invalid,
        };
        Refused {
            reason,
            message: format!("{what} refused: {e}"),
        }
    }
}

/// What can stop [`apply_opened`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A check refused it; nothing was written (every check runs before the first
    /// write).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The store failed; the caller rolls its transaction back.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Verifies bundle bytes (framing, key, signature, payload, the token inside).
pub fn open_bundle(bytes: &[u8], v: &Verifier) -> Result<Opened, Refused> {
    let opened = bundle::open(bytes, &v.keys).map_err(|e| Refused::of("bundle", &e))?;
    Ok(Opened {
        sha256: sha256_hex(bytes),
        token: opened.token,
        config: Some(opened.payload.config),
    })
}

/// Verifies a token's text (prefix, base45, size, key, signature, body); surrounding
/// white space is ignored.
pub fn open_token(text: &str, v: &Verifier) -> Result<Opened, Refused> {
    let token = token::decode(text, &v.keys).map_err(|e| Refused::of("token", &e))?;
    Ok(Opened {
        sha256: sha256_hex(token.text.as_bytes()),
        token,
        config: None,
    })
}

/// The checks after the signature, read-only: the artifact already applied
/// ([`Outcome::AlreadyApplied`]), then expiry, serial, revocation and replay. What
/// the web page shows before asking to apply a token.
pub fn precheck(
    conn: &Connection,
    opened: &Opened,
    v: &Verifier,
    now: u64,
) -> Result<Option<Outcome>, ApplyError> {
    let seen = conn
        .query_row(
            "SELECT 1 FROM provisioning_bundles WHERE sha256 = ?1",
            [&opened.sha256],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if seen {
        return Ok(Some(Outcome::AlreadyApplied));
    }
    let ctx = CheckContext {
        serial: &v.serial,
        now,
        revoked: &v.revoked,
    };
    let what = match opened.source() {
        Source::Usb => "bundle",
        Source::Token => "token",
    };
    check::check(&opened.token.enrollment, &ctx, &SqliteUsedTokens(conn))
        .map_err(|e| Refused::of(what, &e))?;
    Ok(None)
}

/// Applies a verified bundle or token inside the caller's transaction `tx` (see the
/// module doc): [`precheck`], then the settings replace `provisioned_settings`, the
/// token is marked used and the artifact recorded. A [`Refused`] comes before the
/// first write; after an [`ApplyError::Store`] the caller must roll back. The one
/// apply path of USB bundles ([`apply_bundle`]) and tokens from the web page
/// ([`crate::api`]'s provisioning routes).
pub fn apply_opened(
    tx: &Connection,
    opened: &Opened,
    v: &Verifier,
    now: u64,
) -> Result<Outcome, ApplyError> {
    if let Some(outcome) = precheck(tx, opened, v, now)? {
        return Ok(outcome);
    }
    let enrollment = &opened.token.enrollment;
    let invalid = |e: serde_json::Error| Refused {
        reason: Reason::Invalid,
        message: format!("encoding settings: {e}"),
    };
    let json = |v: serde_json::Result<String>| v.map_err(invalid);
    let mut fields: Vec<(&'static str, String)> = vec![
        ("site", json(serde_json::to_string(&enrollment.site))?),
        ("hq_url", json(serde_json::to_string(&enrollment.hq_url))?),
        ("ca_pin", json(serde_json::to_string(&enrollment.ca_pin))?),
        (
            "enrollment_token",
            json(serde_json::to_string(&opened.token.text))?,
        ),
    ];
    if let Some(cfg) = &opened.config {
        fields.extend([
            ("country", json(serde_json::to_string(&cfg.country))?),
            ("network", json(serde_json::to_string(&cfg.network))?),
            ("trunk", json(serde_json::to_string(&cfg.trunk))?),
            ("fxs", json(serde_json::to_string(&cfg.fxs))?),
            ("fxo", json(serde_json::to_string(&cfg.fxo))?),
            ("installer", json(serde_json::to_string(&cfg.installer))?),
        ]);
    }
    let now_i = i64::try_from(now).map_err(|_| Refused {
        reason: Reason::Invalid,
        message: "clock out of range".to_owned(),
    })?;
    // The first write: from here on only store errors.
    tx.execute(
        "INSERT INTO provisioning_used_tokens (token_id, used_at_s) VALUES (?1, ?2)",
        params![enrollment.token_id.to_string(), now_i],
    )?;
    tx.execute(
        "INSERT INTO provisioning_bundles (sha256, token_id, site, applied_at_s) VALUES (?1, ?2, ?3, ?4)",
        params![opened.sha256, enrollment.token_id.to_string(), enrollment.site.as_str(), now_i],
    )?;
    tx.execute("DELETE FROM provisioned_settings", [])?;
    for (field, value) in &fields {
        tx.execute(
            "INSERT INTO provisioned_settings (field, value, bundle_sha256) VALUES (?1, ?2, ?3)",
            params![field, value, opened.sha256],
        )?;
    }
    Ok(Outcome::Applied {
        site: enrollment.site.to_string(),
        fields: fields.iter().map(|(f, _)| *f).collect(),
    })
}

/// Verifies `bytes` and applies them in one transaction on `conn` (see the module
/// doc); `now` is Unix seconds. Nothing is written unless the outcome is
/// [`Outcome::Applied`].
pub fn apply_bundle(conn: &mut Connection, bytes: &[u8], v: &Verifier, now: u64) -> Outcome {
    match try_apply(conn, bytes, v, now) {
        Ok(o) => o,
        Err(e) => Outcome::Refused(e),
    }
}

fn try_apply(
    conn: &mut Connection,
    bytes: &[u8],
    v: &Verifier,
    now: u64,
) -> Result<Outcome, String> {
    let opened = open_bundle(bytes, v).map_err(|e| e.message)?;
    let db = |e: rusqlite::Error| format!("store: {e}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let outcome = apply_opened(&tx, &opened, v, now).map_err(|e| e.to_string())?;
    if matches!(outcome, Outcome::Applied { .. }) {
        tx.commit().map_err(db)?;
    }
    Ok(outcome)
}

/// The result file's name for `serial`.
pub fn result_file_name(serial: &BoxSerial) -> String {
    format!("branchline-result-{serial}.json")
}

/// Writes `contents` to `path` atomically: a temp file in the same directory, fsync,
/// rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Verifies and applies the bundle at `path` and writes the result file next to it.
pub fn process_file(conn: &mut Connection, path: &Path, v: &Verifier, now: u64) -> Outcome {
    let (sha, outcome) = match read_bounded(path) {
        Ok(bytes) => (Some(sha256_hex(&bytes)), apply_bundle(conn, &bytes, v, now)),
        Err(e) => (None, Outcome::Refused(e)),
    };
    let (status, site, applied, error): (_, _, &[&'static str], _) = match &outcome {
        Outcome::Applied { site, fields } => ("applied", Some(site.as_str()), fields, None),
        Outcome::AlreadyApplied => ("already_applied", None, &[], None),
        Outcome::Refused(e) => ("refused", None, &[], Some(e.as_str())),
    };
    let result = ResultFile {
        serial: v.serial.as_str(),
        status,
        bundle_sha256: sha.clone(),
        site,
        applied,
        error,
        at: branchline_provisioning::time::rfc3339(now),
    };
    match &outcome {
        Outcome::Refused(e) => {
            tracing::warn!(bundle = %path.display(), sha256 = ?sha, error = %e, "provisioning bundle refused; nothing applied")
        }
        Outcome::Applied { site, .. } => {
            tracing::info!(bundle = %path.display(), sha256 = ?sha, site, "provisioning bundle applied")
        }
        Outcome::AlreadyApplied => {
            tracing::info!(bundle = %path.display(), sha256 = ?sha, "provisioning bundle already applied; nothing to do")
        }
    }
    let out = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(result_file_name(&v.serial));
    match serde_json::to_vec_pretty(&result) {
        Ok(json) => {
            if let Err(e) = write_atomic(&out, &json) {
                tracing::warn!(path = %out.display(), error = %e, "provisioning result not written to the stick");
            }
        }
        Err(e) => tracing::warn!(error = %e, "provisioning result not encoded"),
    }
    outcome
}

/// Whether the stick already holds this box's result for exactly the bundle at
/// `bundle` (same sha256): any change in a watched directory rescans it (a copy's temp
/// file, the mount helper's marker), and a bundle whose answer is already on the stick
/// is not processed again, so an `applied` result is never overwritten by an
/// `already_applied` one for the same insertion. A re-inserted stick whose result was
/// removed (or a new bundle) is processed as usual.
fn result_on_stick_for(bundle: &Path, result_name: &str) -> bool {
    let Some(dir) = bundle.parent() else {
        return false;
    };
    let Ok(result) = fs::read(dir.join(result_name)) else {
        return false;
    };
    let Ok(result) = serde_json::from_slice::<serde_json::Value>(&result) else {
        return false;
    };
    let Ok(bytes) = read_bounded(bundle) else {
        return false;
    };
    result["bundle_sha256"].as_str() == Some(sha256_hex(&bytes).as_str())
}

/// Bundle files present under a mount point: at its top, or at the top of a
/// directory directly under it.
pub fn find_bundles(mount: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let top = mount.join(bundle::FILE_NAME);
    if top.is_file() {
        out.push(top);
    }
    if let Ok(entries) = fs::read_dir(mount) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let b = p.join(bundle::FILE_NAME);
                if b.is_file() {
                    out.push(b);
                }
            }
        }
    }
    out.sort();
    out
}

/// How the power LED shows provisioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// Steady on (idle, or applied).
    Steady,
    /// Slow blink: a bundle is being verified and applied.
    Working,
    /// Fast blink: the last bundle was refused.
    Error,
}

impl LedPattern {
    /// Half period of the blink; `None` for steady.
    pub fn half_period(self) -> Option<Duration> {
        match self {
            LedPattern::Steady => None,
            LedPattern::Working => Some(Duration::from_millis(500)),
            LedPattern::Error => Some(Duration::from_millis(100)),
        }
    }
}

/// Sends the LED on/off states to the daemon's main loop (which owns the GPIO).
pub type LedSender = tokio::sync::mpsc::UnboundedSender<bool>;

/// Drives the LED from pattern changes: each `(pattern, for)` received shows
/// `pattern` for `for` (forever if `None`), then steady on. Ends when `rx` closes.
pub fn drive_led(led: &LedSender, rx: &std_mpsc::Receiver<(LedPattern, Option<Duration>)>) {
    let mut pattern = LedPattern::Steady;
    let mut until: Option<std::time::Instant> = None;
    let mut on = true;
    let _ = led.send(true);
    loop {
        let wait = pattern.half_period().unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok((p, d)) => {
                pattern = p;
                until = d.map(|d| std::time::Instant::now() + d);
                on = pattern.half_period().is_none();
                let _ = led.send(on);
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                if until.is_some_and(|u| std::time::Instant::now() >= u) {
                    pattern = LedPattern::Steady;
                    until = None;
                    on = true;
                    let _ = led.send(true);
                } else if pattern.half_period().is_some() {
                    on = !on;
                    let _ = led.send(on);
                }
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                let _ = led.send(true);
                return;
            }
        }
    }
}

/// Starts the provisioning thread: inotify watches on the mount points, an initial
/// scan, then [`process_file`] for every bundle that appears; the site of each bundle
/// applied goes to `applied`. Errors setting up the watch (keys, store, inotify) are
/// returned; later errors are logged. The thread blocks in inotify and lives as long
/// as the process.
pub fn watch(
    cfg: &ProvisioningConfig,
    db_path: PathBuf,
    led: LedSender,
    applied: tokio::sync::mpsc::UnboundedSender<String>,
    now: fn() -> u64,
) -> Result<std::thread::JoinHandle<()>, String> {
    use inotify::{Inotify, WatchMask};

    let verifier = Verifier::load(cfg)?;
    let mut conn = Connection::open(&db_path).map_err(|e| {
        format!(
            "provisioning: cannot open the store {}: {e}",
            db_path.display()
        )
    })?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)
        .map_err(|e| format!("provisioning: store busy timeout: {e}"))?;
    let mut inotify = Inotify::init().map_err(|e| format!("provisioning: inotify: {e}"))?;
    let mask = WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR;
    for dir in &cfg.watch {
        fs::create_dir_all(dir)
            .map_err(|e| format!("provisioning: mount point {}: {e}", dir.display()))?;
        inotify
            .watches()
            .add(dir, mask)
            .map_err(|e| format!("provisioning: cannot watch {}: {e}", dir.display()))?;
    }
    let dirs = cfg.watch.clone();
    let result_name = result_file_name(&verifier.serial);
    let result_tmp = format!(".{result_name}.tmp");
    std::thread::Builder::new()
        .name("provisioning".into())
        .spawn(move || {
            let (blink_tx, blink_rx) = std_mpsc::channel::<(LedPattern, Option<Duration>)>();
            let led_thread = std::thread::Builder::new()
                .name("provisioning-led".into())
                .spawn(move || drive_led(&led, &blink_rx));
            if let Err(e) = led_thread {
                tracing::warn!(error = %e, "provisioning LED thread not started");
            }
            let run = |conn: &mut Connection, watches: &mut inotify::Watches| {
                for dir in &dirs {
                    // A stick mounted at <watch>/<label>: watch it too (idempotent).
                    if let Ok(entries) = fs::read_dir(dir) {
                        for e in entries.flatten() {
                            if e.path().is_dir() {
                                let _ = watches.add(e.path(), mask);
                            }
                        }
                    }
                    for b in find_bundles(dir) {
                        if result_on_stick_for(&b, &result_name) {
                            continue;
                        }
                        let _ = blink_tx.send((LedPattern::Working, None));
                        let outcome = process_file(conn, &b, &verifier, now());
                        if let Outcome::Applied { site, .. } = &outcome {
                            let _ = applied.send(site.clone());
                        }
                        let pattern = match outcome {
                            Outcome::Refused(_) => (LedPattern::Error, Some(ERROR_BLINK)),
                            _ => (LedPattern::Steady, None),
                        };
                        let _ = blink_tx.send(pattern);
                    }
                }
            };
            let mut watches = inotify.watches();
            run(&mut conn, &mut watches);
            let mut buf = [0u8; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buf) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::error!(error = %e, "provisioning: inotify read failed; USB provisioning stops");
                        return;
                    }
                };
                // Our own result file (and its temp file) must not trigger a rescan.
                let relevant = events.into_iter().any(|ev| {
                    ev.name.is_none_or(|n| {
                        let n = n.to_string_lossy();
                        n != result_name && n != result_tmp
                    })
                });
                if relevant {
                    run(&mut conn, &mut watches);
                }
            }
        })
        .map_err(|e| format!("provisioning: thread: {e}"))
}
