//! `branch-prov`: provisioning keys, USB bundles, QR enrollment tokens and revocation
//! lists, for HQ operators and installers. See the README's "Provisioning" section.
//!
//! Exit status: 0 success, 1 refused or failed (one line on stderr saying why), 2 bad
//! usage (clap).

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use branchline_provisioning::check::{self, CheckContext, MemoryUsedTokens};
use branchline_provisioning::keys::{self, KeyId, TrustedKeys};
use branchline_provisioning::payload::{BoxSerial, Enrollment, TokenId};
use branchline_provisioning::qr::{self, Qr};
use branchline_provisioning::revocation::RevocationList;
use branchline_provisioning::site::SiteDescription;
use branchline_provisioning::time::{now, parse_rfc3339, rfc3339};
use branchline_provisioning::{bundle, envelope, token};

#[derive(Parser, Debug)]
#[command(
    name = "branch-prov",
    version,
    about = "Branchline provisioning bundles and QR tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// USB provisioning bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// QR enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show what a bundle, token, QR image or revocation list holds (verified when
    /// --pub is given, the header only otherwise).
    Inspect {
        /// A file (.blp, .blr, PNG/JPEG with a QR code, text file with a token) or
        /// token text starting with BL1:.
        input: String,
        /// Trusted public key file(s).
        #[arg(long = "pub")]
        public: Vec<PathBuf>,
    },
    /// Verify a bundle, token or QR image as a box would: signature, expiry, and
    /// (when given) serial binding and revocation. Exit status 1 when refused.
    Verify {
        /// As for inspect.
        input: String,
        /// Trusted public key file(s).
        #[arg(long = "pub", required = true)]
        public: Vec<PathBuf>,
        /// The box serial to check the binding against.
        #[arg(long)]
        serial: Option<String>,
        /// Revocation list to consult.
        #[arg(long)]
        revoked: Option<PathBuf>,
        /// Check as of this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Add a token to a revocation list (created if absent), re-signed with --key.
    Revoke {
        /// The revocation list file.
        #[arg(long)]
        list: PathBuf,
        /// Private key to sign the list with.
        #[arg(long)]
        key: PathBuf,
        /// What to revoke: a token id (16 hex digits), token text, or a file
        /// holding a bundle, token or QR image.
        token: String,
        /// Why (stored in the list).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Read a password from stdin (first line) and print its argon2id hash for the
    /// site description's `[installer] password_hash`.
    HashPassword,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a provisioning signing key: PREFIX.key (mode 0600) and PREFIX.pub.
    New {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct MakeArgs {
    /// The site description (TOML).
    #[arg(long)]
    site: PathBuf,
    /// Private key to sign with.
    #[arg(long)]
    key: PathBuf,
    /// Token validity (90m, 12h, 14d); overrides the site's valid_for.
    #[arg(long)]
    valid_for: Option<String>,
}

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Make a signed bundle for a USB stick.
    Make {
        #[command(flatten)]
        make: MakeArgs,
        /// Output file (the box looks for branchline-provision.blp on the stick).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a signed QR token: prints it, its size and QR version at ECC level Q, and
    /// shows the code in the terminal.
    Make {
        #[command(flatten)]
        make: MakeArgs,
        /// Write the token text here too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a PNG of the QR code.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Write an SVG of the QR code.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Do not draw the code in the terminal.
        #[arg(long)]
        no_terminal: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("{e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("branch-prov: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Key(KeyCommand::New { out }) => {
            let files = keys::generate(&out)?;
            println!(
                "private key: {} (mode 0600, keep it offline)",
                files.private.display()
            );
            println!(
                "public key:  {} (goes into the box image)",
                files.public.display()
            );
            println!("key id:      {}", files.key_id);
            Ok(())
        }
        Command::Bundle(BundleCommand::Make { make, out }) => bundle_make(&make, &out),
        Command::Token(TokenCommand::Make {
            make,
            out,
            png,
            svg,
            no_terminal,
        }) => token_make(
            &make,
            out.as_deref(),
            png.as_deref(),
            svg.as_deref(),
            !no_terminal,
        ),
        Command::Inspect { input, public } => inspect(&input, &public),
        Command::Verify {
            input,
            public,
            serial,
            revoked,
            at,
        } => verify(
            &input,
            &public,
            serial.as_deref(),
            revoked.as_deref(),
            at.as_deref(),
        ),
        Command::Revoke {
            list,
            key,
            token,
            reason,
        } => revoke(&list, &key, &token, &reason),
        Command::HashPassword => hash_password(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a failed run
/// leaves no half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("write {}", path.display()))
}

fn load_make(make: &MakeArgs) -> Result<(SiteDescription, ed25519_dalek::SigningKey, u64)> {
    let site = SiteDescription::load(&make.site)?;
    let key = keys::read_signing_key(&make.key)?;
    let valid_for = site.validity(make.valid_for.as_deref())?;
    Ok((site, key, valid_for))
}

fn bundle_make(make: &MakeArgs, out: &Path) -> Result<()> {
    let (site, key, valid_for) = load_make(make)?;
    let bytes = site.make_bundle(&key, now(), valid_for)?;
    let own = TrustedKeys::new([key.verifying_key()])?;
    let opened = bundle::open(&bytes, &own)?;
    write_atomic(out, &bytes)?;
    let e = &opened.token.enrollment;
    println!("bundle:   {} ({} bytes)", out.display(), bytes.len());
    println!("site:     {}", e.site);
    println!("token id: {}", e.token_id);
    println!("expires:  {}", rfc3339(e.expires_at));
    println!("key id:   {}", opened.key_id);
    if opened
        .payload
        .config
        .trunk
        .as_ref()
        .is_some_and(|t| t.password.is_some())
    {
        eprintln!(
            "warning: the bundle carries the trunk password in clear (signed, not encrypted); \
             anyone who reads the stick can read it"
        );
    }
    Ok(())
}

fn token_make(
    make: &MakeArgs,
    out: Option<&Path>,
    png: Option<&Path>,
    svg: Option<&Path>,
    terminal: bool,
) -> Result<()> {
    let (site, key, valid_for) = load_make(make)?;
    let text = site.make_token(&key, now(), valid_for)?;
    let own = TrustedKeys::new([key.verifying_key()])?;
    let decoded = token::decode(&text, &own)?;
    let code = Qr::encode(&text)?;
    if let Some(path) = out {
        write_atomic(path, format!("{text}\n").as_bytes())?;
    }
    if let Some(path) = png {
        write_atomic(path, &code.to_png(8)?)?;
    }
    if let Some(path) = svg {
        write_atomic(path, code.to_svg().as_bytes())?;
    }
    if terminal {
        println!("{}", code.to_terminal());
    }
    let e = &decoded.enrollment;
    println!("{text}");
    println!("site:     {}", e.site);
    println!("token id: {}", e.token_id);
    println!("expires:  {}", rfc3339(e.expires_at));
    println!("key id:   {}", decoded.key_id);
    println!(
        "size:     {} bytes signed, {} characters (base45)",
        token::binary_len(&text)?,
        text.len()
    );
    let verdict = if code.version() <= qr::TARGET_VERSION {
        "within"
    } else {
        "OVER"
    };
    println!(
        "qr:       version {} ({}x{} modules) at ECC level Q, {verdict} the version-{} target",
        code.version(),
        code.width(),
        code.width(),
        qr::TARGET_VERSION
    );
    for (what, path) in [("png", png), ("svg", svg), ("text", out)] {
        if let Some(p) = path {
            println!(
                "{what}:{:width$}{}",
                "",
                p.display(),
                width = 9 - what.len()
            );
        }
    }
    Ok(())
}

/// What an input argument holds.
enum Input {
    Bundle(Vec<u8>),
    Revocations(Vec<u8>),
    Token(String),
}

fn read_input(arg: &str) -> Result<Input> {
    if arg.trim_start().starts_with(token::PREFIX) {
        return Ok(Input::Token(arg.trim().to_owned()));
    }
    let bytes = fs::read(arg).with_context(|| format!("read {arg}"))?;
    if bytes.starts_with(envelope::Kind::Bundle.magic()) {
        return Ok(Input::Bundle(bytes));
    }
    if bytes.starts_with(envelope::Kind::RevocationList.magic()) {
        return Ok(Input::Revocations(bytes));
    }
    if bytes.starts_with(b"\x89PNG") || bytes.starts_with(b"\xff\xd8\xff") {
        let texts =
            qr::decode_image(&bytes).with_context(|| format!("read the QR code in {arg}"))?;
        return texts
            .into_iter()
            .find(|t| t.starts_with(token::PREFIX))
            .map(Input::Token)
            .with_context(|| format!("the QR code in {arg} is not a Branchline token"));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.trim_start().starts_with(token::PREFIX) => {
            Ok(Input::Token(text.trim().to_owned()))
        }
        _ => bail!("{arg} is not a bundle, revocation list, token or QR image"),
    }
}

fn trusted(public: &[PathBuf]) -> Result<TrustedKeys> {
    Ok(TrustedKeys::from_files(public)?)
}

fn enrollment_json(e: &Enrollment, key_id: KeyId) -> serde_json::Value {
    json!({
        "key_id": key_id.to_string(),
        "token_id": e.token_id.to_string(),
        "site": e.site,
        "serials": e.serials,
        "hq_url": e.hq_url,
        "ca_pin": e.ca_pin.to_string(),
        "expires_at": rfc3339(e.expires_at),
    })
}

fn inspect(input: &str, public: &[PathBuf]) -> Result<()> {
    let input = read_input(input)?;
    if public.is_empty() {
        // Header only: nothing unauthenticated is decoded.
        match input {
            Input::Bundle(b) | Input::Revocations(b) => {
                if b.len() < envelope::HEADER_LEN {
                    bail!("{} bytes: shorter than the header", b.len());
                }
                println!("kind:        {}", String::from_utf8_lossy(&b[..6]));
                println!("version:     {}", b[6]);
                println!("key id:      {}", hex::encode(&b[8..12]));
                println!(
                    "payload:     {} bytes",
                    u32::from_be_bytes([b[12], b[13], b[14], b[15]])
                );
                println!("file:        {} bytes", b.len());
            }
            Input::Token(t) => {
                let bin = token::to_binary(&t)?;
                println!("kind:        token");
                println!("version:     {}", bin.first().copied().unwrap_or(0));
                if bin.len() >= 5 {
                    println!("key id:      {}", hex::encode(&bin[1..5]));
                }
                println!("size:        {} bytes, {} characters", bin.len(), t.len());
            }
        }
        println!("UNVERIFIED: give --pub KEY to verify the signature and show the contents");
        return Ok(());
    }
    let keys = trusted(public)?;
    let value = match input {
        Input::Bundle(b) => {
            let opened = bundle::open(&b, &keys)?;
            let mut config = serde_json::to_value(&opened.payload.config)?;
            if let Some(pw) = config.pointer_mut("/trunk/password") {
                *pw = json!("(set, in clear in the bundle)");
            }
            json!({
                "kind": "bundle",
                "key_id": opened.key_id.to_string(),
                "issued_at": rfc3339(opened.payload.issued_at),
                "enrollment": enrollment_json(&opened.token.enrollment, opened.token.key_id),
                "config": config,
            })
        }
        Input::Token(t) => {
            let decoded = token::decode(&t, &keys)?;
            let mut v = enrollment_json(&decoded.enrollment, decoded.key_id);
            v["kind"] = json!("token");
            v
        }
        Input::Revocations(b) => {
            let (key_id, list) = RevocationList::open(&b, &keys)?;
            json!({
                "kind": "revocation list",
                "key_id": key_id.to_string(),
                "updated_at": rfc3339(list.updated_at),
                "entries": list.entries.iter().map(|r| json!({
                    "token_id": r.token_id.to_string(),
                    "revoked_at": rfc3339(r.revoked_at),
                    "expires_at": r.expires_at.map(rfc3339),
                    "reason": r.reason,
                })).collect::<Vec<_>>(),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn verify(
    input: &str,
    public: &[PathBuf],
    serial: Option<&str>,
    revoked: Option<&Path>,
    at: Option<&str>,
) -> Result<()> {
    let keys = trusted(public)?;
    let now = match at {
        Some(t) => parse_rfc3339("--at", t)?,
        None => now(),
    };
    let (what, enrollment) = match read_input(input)? {
        Input::Bundle(b) => ("bundle", bundle::open(&b, &keys)?.token.enrollment),
        Input::Token(t) => ("token", token::decode(&t, &keys)?.enrollment),
        Input::Revocations(b) => {
            let (key_id, list) = RevocationList::open(&b, &keys)?;
            println!(
                "OK: revocation list signed by {key_id}, {} entries, updated {}",
                list.entries.len(),
                rfc3339(list.updated_at)
            );
            return Ok(());
        }
    };
    let revoked = match revoked {
        Some(p) => RevocationList::load(p, &keys)?,
        None => RevocationList::default(),
    };
    // Without --serial the binding is not checked: use the token's first serial.
    let (serial, binding) = match serial {
        Some(s) => (s.parse::<BoxSerial>()?, format!("bound to {s}")),
        None => (
            enrollment.serials[0].clone(),
            "serial binding not checked (no --serial)".to_owned(),
        ),
    };
    let ctx = CheckContext {
        serial: &serial,
        now,
        revoked: &revoked,
    };
    check::check(&enrollment, &ctx, &MemoryUsedTokens::default())?;
    println!(
        "OK: {what} for site {} (token {}), valid until {}, {binding}",
        enrollment.site,
        enrollment.token_id,
        rfc3339(enrollment.expires_at)
    );
    Ok(())
}

fn revoke(list_path: &Path, key_path: &Path, what: &str, reason: &str) -> Result<()> {
    let key = keys::read_signing_key(key_path)?;
    let keys = TrustedKeys::new([key.verifying_key()])?;
    let (id, expires_at) = match what.parse::<TokenId>() {
        Ok(id) if !Path::new(what).exists() => (id, None),
        _ => {
            let e = match read_input(what)? {
                Input::Bundle(b) => bundle::open(&b, &keys)?.token.enrollment,
                Input::Token(t) => token::decode(&t, &keys)?.enrollment,
                Input::Revocations(_) => bail!("{what} is a revocation list, not a token"),
            };
            (e.token_id, Some(e.expires_at))
        }
    };
    let mut list = if list_path.exists() {
        RevocationList::load(list_path, &keys)
            .with_context(|| format!("{} (it must be signed with this key)", list_path.display()))?
    } else {
        RevocationList::default()
    };
    if !list.revoke(id, expires_at, reason, now())? {
        println!(
            "token {id} was already revoked; {} unchanged",
            list_path.display()
        );
        return Ok(());
    }
    write_atomic(list_path, &list.seal(&key)?)?;
    println!(
        "revoked token {id}; {} now lists {} token(s)",
        list_path.display(),
        list.entries.len()
    );
    Ok(())
}

fn hash_password() -> Result<()> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.len() < 8 {
        bail!("the password must be at least 8 characters");
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    println!("{hash}");
    Ok(())
}
