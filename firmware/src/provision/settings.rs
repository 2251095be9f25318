//! Provisioned settings take effect: at every start, `branchd` lays the settings of
//! the last applied bundle (`provisioned_settings`, see [`crate::provision`]) over
//! `branchd.toml` and runs with the result.
//!
//! # Precedence
//!
//! `branchd.toml` is the factory default file shipped in the image; a provisioned value
//! overrides it, except where `[provisioning] local_override` names the setting
//! (then the file wins). Every start logs one line per setting: applied, kept local
//! (the override is never silent), refused (with the reason) or not applicable.
//!
//! | setting | from the bundle | goes to |
//! | --- | --- | --- |
//! | `country` | `country` | `[telephony] country` (tones, ring cadences, caller ID) |
//! | `port_map` | `fxs`, `fxo` | `[[extensions]]` and `[[fxo_lines]]`, replaced together; FXO line `n` of the bundle is the board's `n`-th FXO port |
//! | `trunk` | `trunk` | `[sip.trunk]` servers (transport as `;transport=`), domain, username; the password when the bundle has one, else the file's; other trunk settings stay the file's |
//! | `hq_url` | `hq_url`, `ca_pin` | `[hq] url`, only when `[hq] ca_cert`'s public key matches the pin |
//! | `site` | `site` | logged (the site id HQ knows the box by; HQ checks it at enrollment) |
//!
//! # How, and why this way
//!
//! The overlay edits the TOML table of `branchd.toml` and runs the result through the
//! same validator as the file ([`Config::from_toml_str`], then
//! [`Config::check_board`]), one setting at a time, in the order of the table above:
//! a setting whose result does not validate (an unknown country, a port this board
//! does not have, an FXO line ringing an extension nobody defines) is refused with
//! the validator's message and the file's value stays; the others still apply. So a
//! bad stored value never takes the box down, and provisioned values get exactly the
//! checks and defaults a hand-written file gets, with no second validator to keep in
//! step.
//!
//! A bundle applied while the daemon runs takes effect through a clean restart (see
//! [`crate::daemon`]): every subsystem (call control, SIP endpoint, sync agent) reads
//! its settings at start and none of them reloads.
//!
//! # Limits
//!
//! `network` and `installer` are stored but not applied here (the WAN is the OS's
//! network configuration; the installer account comes from `[auth]`). A trunk
//! provisioned into a file without `[sip]` waits: the SIP endpoint is off without its
//! listeners. `hq_url` needs `[hq]` (the device certificate comes from enrollment). A
//! bundle that says "no trunk" leaves the file's trunk in place.

use std::ops::RangeInclusive;
use std::path::Path;

use branchline_provisioning::payload::{CaPin, Country, FxoLine, FxsPort, HqUrl, SiteId, Trunk};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use toml::{Table, Value};

use crate::config::Config;
use crate::error::Error;

/// The settings the overlay applies, in order (names as in `local_override`).
pub const SETTINGS: [&str; 4] = ["country", "port_map", "trunk", "hq_url"];

/// The provisioned settings as stored: field name -> JSON value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// `(field, JSON value)` rows of `provisioned_settings`.
    pub rows: Vec<(String, String)>,
    /// The bundle they came from (sha256).
    pub bundle_sha256: Option<String>,
}

impl Stored {
    /// Reads `provisioned_settings` (empty when nothing was provisioned).
    pub fn load(conn: &Connection) -> rusqlite::Result<Stored> {
        let mut stmt = conn.prepare(
            "SELECT field, value, bundle_sha256 FROM provisioned_settings ORDER BY field",
        )?;
        let mut stored = Stored::default();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (field, value, sha) = row?;
            stored.bundle_sha256 = Some(sha);
            stored.rows.push((field, value));
        }
        Ok(stored)
    }

    /// Reads them from the store file at `db` (read-only).
    pub fn load_path(db: &Path) -> rusqlite::Result<Stored> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Stored::load(&conn)
    }

    /// Whether anything was provisioned.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn raw(&self, field: &str) -> Option<&str> {
        self.rows
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_str())
    }

    /// The stored `field` decoded as `T`; `Ok(None)` when absent.
    fn get<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<Option<T>, String> {
        self.raw(field)
            .map(|v| {
                serde_json::from_str(v)
                    .map_err(|e| format!("stored {field} {v:?} is not valid: {e}"))
            })
            .transpose()
    }
}

/// What became of one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The provisioned value is in effect.
    Applied(&'static str),
    /// `local_override` keeps branchd.toml's value.
    KeptLocal(&'static str),
    /// The stored value is bad; branchd.toml's value stays.
    Refused(&'static str, String),
    /// The setting cannot apply to this file (e.g. a trunk without `[sip]`).
    NotApplicable(&'static str, String),
}

/// The config the daemon runs with, and what happened to each setting.
#[derive(Debug, Clone)]
pub struct Effective {
    /// branchd.toml with the provisioned settings laid over it.
    pub config: Config,
    /// The provisioned site id, if any.
    pub site: Option<String>,
    /// One note per provisioned setting.
    pub notes: Vec<Note>,
}

/// The board's port ranges, for [`Config::check_board`] and the FXO numbering.
#[derive(Debug, Clone)]
pub struct BoardPorts {
    /// FXS ports.
    pub fxs: RangeInclusive<u8>,
    /// FXO ports.
    pub fxo: RangeInclusive<u8>,
}

/// Lays `stored` over `base` (validated from `text`, the file's contents) for a board
/// with `board`'s ports; `local_override` names the settings the file keeps. Pure
/// apart from reading `[hq] ca_cert` for the pin check.
pub fn effective(
    base: &Config,
    text: &str,
    stored: &Stored,
    board: &BoardPorts,
    local_override: &[&str],
) -> Effective {
    let mut notes = Vec::new();
    let site = match stored.get::<SiteId>("site") {
        Ok(s) => s.map(|s| s.to_string()),
        Err(e) => {
            notes.push(Note::Refused("site", e));
            None
        }
    };
    let mut table: Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            // The file was validated from this text a moment ago; only a file changed
            // in between gets here.
            for name in SETTINGS.iter().filter(|n| present(stored, n)) {
                notes.push(Note::Refused(
                    name,
                    format!("{} cannot be read as TOML: {e}", base.source.display()),
                ));
            }
            return Effective {
                config: base.clone(),
                site,
                notes,
            };
        }
    };
    let mut config = base.clone();
    for name in SETTINGS {
        if !present(stored, name) {
            continue;
        }
        if local_override.contains(&name) {
            notes.push(Note::KeptLocal(name));
            continue;
        }
        let mut candidate = table.clone();
        match lay(&mut candidate, name, stored, base, board) {
            Ok(()) => {}
            Err(Skip::Refused(why)) => {
                notes.push(Note::Refused(name, why));
                continue;
            }
            Err(Skip::NotApplicable(why)) => {
                notes.push(Note::NotApplicable(name, why));
                continue;
            }
        }
        match validate(&candidate, base, board) {
            Ok(c) => {
                table = candidate;
                config = c;
                notes.push(Note::Applied(name));
            }
            Err(why) => notes.push(Note::Refused(name, why)),
        }
    }
    Effective {
        config,
        site,
        notes,
    }
}

fn present(stored: &Stored, name: &str) -> bool {
    match name {
        "port_map" => stored.raw("fxs").is_some() || stored.raw("fxo").is_some(),
        // A stored `null` trunk means "the site has no trunk": nothing to lay over.
        "trunk" => stored.raw("trunk").is_some_and(|v| v.trim() != "null"),
        other => stored.raw(other).is_some(),
    }
}

enum Skip {
    Refused(String),
    NotApplicable(String),
}

fn validate(table: &Table, base: &Config, board: &BoardPorts) -> Result<Config, String> {
    let text = toml::to_string(table).map_err(|e| format!("cannot encode the settings: {e}"))?;
    let describe = |e: Error| match e {
        // Lines would point into the generated text, not the file: leave them out.
        Error::ConfigInvalid { field, message, .. } => format!("{field}: {message}"),
        Error::ConfigSyntax { message, .. } => message,
        other => other.to_string(),
    };
    let config = Config::from_toml_str(&text, &base.source).map_err(describe)?;
    config
        .check_board(board.fxs.clone(), board.fxo.clone())
        .map_err(describe)?;
    Ok(config)
}

fn section<'t>(table: &'t mut Table, name: &str) -> Result<&'t mut Table, Skip> {
    table
        .entry(name)
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| Skip::Refused(format!("[{name}] in the file is not a table")))
}

fn lay(
    table: &mut Table,
    name: &str,
    stored: &Stored,
    base: &Config,
    board: &BoardPorts,
) -> Result<(), Skip> {
    match name {
        "country" => {
            let Some(c) = stored.get::<Country>("country").map_err(Skip::Refused)? else {
                return Ok(());
            };
            section(table, "telephony")?.insert("country".into(), c.to_string().into());
        }
        "port_map" => {
            let fxs: Vec<FxsPort> = stored
                .get("fxs")
                .map_err(Skip::Refused)?
                .unwrap_or_default();
            let fxo: Vec<FxoLine> = stored
                .get("fxo")
                .map_err(Skip::Refused)?
                .unwrap_or_default();
            let extensions: Vec<Value> = fxs
                .iter()
                .map(|p| {
                    let mut t = Table::new();
                    t.insert("number".into(), p.extension.to_string().into());
                    t.insert("port".into(), i64::from(p.port).into());
                    if let Some(n) = &p.name {
                        t.insert("name".into(), n.clone().into());
                    }
                    Value::Table(t)
                })
                .collect();
            let fxo_count = board.fxo.clone().count();
            let mut lines = Vec::new();
            for l in &fxo {
                // The bundle numbers FXO lines from 1; the box numbers all ports.
                let n = usize::from(l.port);
                if n == 0 || n > fxo_count {
                    return Err(Skip::Refused(format!(
                        "fxo line {n}: this board has {fxo_count} FXO line(s)"
                    )));
                }
                let port = i64::from(*board.fxo.start()) + i64::try_from(n - 1).unwrap_or(0);
                let mut t = Table::new();
                t.insert("port".into(), port.into());
                t.insert(
                    "inbound".into(),
                    Value::Array(vec![l.inbound.to_string().into()]),
                );
                t.insert("outbound".into(), l.outbound.into());
                lines.push(Value::Table(t));
            }
            table.insert("extensions".into(), Value::Array(extensions));
            table.insert("fxo_lines".into(), Value::Array(lines));
        }
        "trunk" => {
            let Some(trunk) = stored
                .get::<Option<Trunk>>("trunk")
                .map_err(Skip::Refused)?
                .flatten()
            else {
                return Ok(());
            };
            if base.sip.is_none() {
                return Err(Skip::NotApplicable(
                    "branchd.toml has no [sip] section, so the SIP endpoint is off".into(),
                ));
            }
            let sip = section(table, "sip")?;
            let t = section(sip, "trunk")?;
            let transport = serde_json::to_value(trunk.transport)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "udp".to_owned());
            let servers: Vec<Value> = trunk
                .servers
                .iter()
                .map(|s| {
                    if transport == "udp" || s.contains(";transport=") {
                        s.clone().into()
                    } else {
                        format!("{s};transport={transport}").into()
                    }
                })
                .collect();
            t.insert("servers".into(), Value::Array(servers));
            t.insert("domain".into(), trunk.domain.clone().into());
            t.insert("username".into(), trunk.username.clone().into());
            t.remove("auth_username");
            match &trunk.password {
                Some(p) => {
                    t.insert("password".into(), p.expose().to_owned().into());
                }
                None if t.contains_key("password") => {}
                None => {
                    return Err(Skip::Refused(
                        "the bundle has no trunk password and branchd.toml has no [sip.trunk] \
                         password (HQ delivers it at enrollment)"
                            .into(),
                    ))
                }
            }
        }
        "hq_url" => {
            let Some(url) = stored.get::<HqUrl>("hq_url").map_err(Skip::Refused)? else {
                return Ok(());
            };
            let Some(hq) = &base.hq else {
                return Err(Skip::NotApplicable(
                    "branchd.toml has no [hq] section (sync needs the device certificate \
                     from enrollment)"
                        .into(),
                ));
            };
            let pin: CaPin = stored
                .get("ca_pin")
                .map_err(Skip::Refused)?
                .ok_or_else(|| Skip::Refused("no ca_pin stored with hq_url".into()))?;
            let spki = spki_sha256(&hq.ca_cert).map_err(Skip::Refused)?;
            if !pin.matches(&spki) {
                return Err(Skip::Refused(format!(
                    "[hq] ca_cert {} is not the CA the bundle pins (pin {pin}, certificate key sha256 {})",
                    hq.ca_cert.display(),
                    hex::encode(spki)
                )));
            }
            section(table, "hq")?.insert("url".into(), url.to_string().into());
        }
        _ => {}
    }
    Ok(())
}

/// sha256 of the SubjectPublicKeyInfo of the first certificate in the PEM file `path`.
pub fn spki_sha256(path: &Path) -> Result<[u8; 32], String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", path.display()))?;
    Ok(Sha256::digest(cert.public_key().raw).into())
}

/// Start-up: reads the stored settings from the store at `db`, lays them over
/// `config` (re-reading its file for the TOML table) and logs one line per setting.
/// Any failure to read leaves `config` as it is, logged.
pub fn apply_at_start(config: Config, db: &Path, board: &BoardPorts) -> Config {
    let stored = match Stored::load_path(db) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(db = %db.display(), error = %e, "provisioned settings not read; running with branchd.toml alone");
            return config;
        }
    };
    if stored.is_empty() {
        tracing::info!("no provisioned settings: running with branchd.toml (factory defaults)");
        return config;
    }
    let text = match std::fs::read_to_string(&config.source) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(file = %config.source.display(), error = %e, "provisioned settings not applied: cannot read the config file again");
            return config;
        }
    };
    let overrides = config
        .provisioning
        .as_ref()
        .map(|p| p.local_override.clone())
        .unwrap_or_default();
    let eff = effective(&config, &text, &stored, board, &overrides);
    log(&eff, stored.bundle_sha256.as_deref());
    eff.config
}

fn log(eff: &Effective, sha: Option<&str>) {
    let site = eff.site.as_deref().unwrap_or("-");
    let bundle = sha.unwrap_or("-");
    for note in &eff.notes {
        match note {
            Note::Applied(s) => {
                tracing::info!(setting = s, site, bundle, "provisioned setting applied")
            }
            Note::KeptLocal(s) => tracing::warn!(
                setting = s,
                site,
                "provisioned setting NOT applied: [provisioning] local_override keeps branchd.toml's value"
            ),
            Note::Refused(s, why) => tracing::error!(
                setting = s,
                site,
                bundle,
                error = %why,
                "provisioned setting refused; branchd.toml's value stays"
            ),
            Note::NotApplicable(s, why) => tracing::warn!(
                setting = s,
                site,
                reason = %why,
                "provisioned setting not applicable"
            ),
        }
    }
    tracing::info!(
        site,
        bundle,
        "running with provisioned settings over branchd.toml"
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::tones::Country as Tones;

    const FILE: &str = "/etc/branchline/branchd.toml";
    const BASE: &str = r#"[telephony]
country = "US"
outside_line_prefix = "9"

[[extensions]]
number = "101"
port = 1
name = "Reception"

[[fxo_lines]]
port = 5
inbound = ["101"]
"#;

    fn board() -> BoardPorts {
        BoardPorts {
            fxs: 1..=4,
            fxo: 5..=6,
        }
    }

    fn stored(rows: &[(&str, &str)]) -> Stored {
        Stored {
            rows: rows
                .iter()
                .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
                .collect(),
            bundle_sha256: Some("ab".repeat(32)),
        }
    }

    fn run(text: &str, rows: &[(&str, &str)], overrides: &[&str]) -> Effective {
        let base = Config::from_toml_str(text, Path::new(FILE)).expect("base config");
        effective(&base, text, &stored(rows), &board(), overrides)
    }

    fn base(text: &str) -> Config {
        Config::from_toml_str(text, Path::new(FILE)).expect("base config")
    }

    const PORT_MAP: [(&str, &str); 2] = [
        (
            "fxs",
            r#"[{"port":1,"extension":"201","name":"reception"},{"port":2,"extension":"202"}]"#,
        ),
        ("fxo", r#"[{"port":2,"inbound":"202","outbound":false}]"#),
    ];

    #[test]
    fn nothing_provisioned_is_the_file() {
        let e = run(BASE, &[], &[]);
        assert_eq!(e.config, base(BASE));
        assert!(e.notes.is_empty());
        assert_eq!(e.site, None);
    }

    #[test]
    fn provisioned_values_override_the_file() {
        let mut rows = vec![("site", r#""lyon-02""#), ("country", r#""FR""#)];
        rows.extend(PORT_MAP);
        let e = run(BASE, &rows, &[]);
        assert_eq!(
            e.notes,
            [Note::Applied("country"), Note::Applied("port_map")]
        );
        assert_eq!(e.site.as_deref(), Some("lyon-02"));
        let c = &e.config;
        assert_eq!(c.telephony.country, Some(Tones::Fr));
        let ext: Vec<(&str, u8, &str)> = c
            .extensions
            .iter()
            .map(|x| (x.number.as_str(), x.port.get(), x.name.as_str()))
            .collect();
        assert_eq!(ext[0], ("201", 1, "reception"));
        assert_eq!((ext[1].0, ext[1].1), ("202", 2));
        assert_eq!(c.fxo_lines.len(), 1);
        // FXO line 2 of the bundle is the board's second FXO port.
        assert_eq!(c.fxo_lines[0].port.get(), 6);
        assert_eq!(c.fxo_lines[0].inbound[0].as_str(), "202");
        assert!(!c.fxo_lines[0].outbound);
        // Everything else is the file's.
        assert_eq!(c.source, PathBuf::from(FILE));
        assert_eq!(c.paths, base(BASE).paths);
    }

    #[test]
    fn local_override_keeps_the_file_and_says_so() {
        let mut rows = vec![("country", r#""FR""#)];
        rows.extend(PORT_MAP);
        let e = run(BASE, &rows, &["country"]);
        assert_eq!(
            e.notes,
            [Note::KeptLocal("country"), Note::Applied("port_map")]
        );
        assert_eq!(e.config.telephony.country, Some(Tones::Us));
        assert_eq!(e.config.extensions[0].number.as_str(), "201");
    }

    #[test]
    fn bad_stored_values_are_refused_one_by_one_and_the_file_stays() {
        // A country without a tone plan, a port the board lacks: each refused with the
        // validator's message; the good trunk-less rest still applies.
        let e = run(
            BASE,
            &[
                ("country", r#""ZZ""#),
                ("fxs", r#"[{"port":9,"extension":"201"}]"#),
                ("fxo", "[]"),
            ],
            &[],
        );
        assert_eq!(e.config, base(BASE));
        match &e.notes[..] {
            [Note::Refused("country", c), Note::Refused("port_map", p)] => {
                assert!(c.contains("telephony.country"), "{c}");
                assert!(p.contains("extensions[0].port") && p.contains("FXS"), "{p}");
            }
            other => panic!("{other:?}"),
        }
        // An FXO line ringing a malformed number (one that is no extension may be a
        // queue's: queues are the store's, checked by branchd at start); an FXO line
        // the board lacks; a stored value that does not decode.
        let e = run(
            BASE,
            &[
                ("fxs", r#"[{"port":1,"extension":"201"}]"#),
                ("fxo", r#"[{"port":1,"inbound":"20a"}]"#),
            ],
            &[],
        );
        assert!(
            matches!(&e.notes[..], [Note::Refused("port_map", m)] if m.contains("inbound") && m.contains("20a") && m.contains("2 to 6 digits")),
            "{:?}",
            e.notes
        );
        let e = run(BASE, &[("fxo", r#"[{"port":3,"inbound":"101"}]"#)], &[]);
        assert!(
            matches!(&e.notes[..], [Note::Refused("port_map", m)] if m.contains("2 FXO line")),
            "{:?}",
            e.notes
        );
        let e = run(BASE, &[("country", r#""france""#), ("site", "7")], &[]);
        assert!(
            matches!(&e.notes[..], [Note::Refused("site", s), Note::Refused("country", c)]
                if s.contains("stored site") && c.contains("stored country")),
            "{:?}",
            e.notes
        );
        assert_eq!(e.config, base(BASE));
    }

    const SIP: &str = "\n[sip]\nudp = \"127.0.0.1:0\"\ndomain = \"branch.test\"\n";
    const TRUNK: &str = r#"{"servers":["sip1.example.net:5070","sip2.example.net"],"transport":"tcp","domain":"example.net","username":"lyon02"}"#;

    #[test]
    fn trunk_needs_sip_and_a_password() {
        let e = run(BASE, &[("trunk", TRUNK)], &[]);
        assert!(
            matches!(&e.notes[..], [Note::NotApplicable("trunk", m)] if m.contains("[sip]")),
            "{:?}",
            e.notes
        );
        let with_sip = format!("{BASE}{SIP}");
        let e = run(&with_sip, &[("trunk", TRUNK)], &[]);
        assert!(
            matches!(&e.notes[..], [Note::Refused("trunk", m)] if m.contains("password")),
            "{:?}",
            e.notes
        );
        assert_eq!(e.config, base(&with_sip));
        // No trunk in the bundle: nothing to do.
        assert!(run(&with_sip, &[("trunk", "null")], &[]).notes.is_empty());
    }

    #[test]
    fn trunk_replaces_servers_and_account_and_keeps_local_password() {
        let text = format!(
            "{BASE}{SIP}\n[sip.trunk]\nservers = [\"192.0.2.20\"]\ndomain = \"old.test\"\n\
             username = \"old\"\nauth_username = \"old-auth\"\npassword = \"local-secret\"\nexpires = 600\n"
        );
        let e = run(&text, &[("trunk", TRUNK)], &[]);
        assert_eq!(e.notes, [Note::Applied("trunk")]);
        let t = e
            .config
            .sip
            .as_ref()
            .and_then(|s| s.trunk.as_ref())
            .expect("trunk");
        let servers: Vec<String> = t.servers.iter().map(ToString::to_string).collect();
        assert_eq!(servers.len(), 2);
        assert!(
            servers[0].contains("sip1.example.net") && servers[0].contains("tcp"),
            "{servers:?}"
        );
        assert_eq!(t.domain, "example.net");
        assert_eq!(t.username, "lyon02");
        assert_eq!(t.auth_username, None);
        assert_eq!(t.password, "local-secret");
        assert_eq!(t.expires, 600);
        // With a password in the bundle, it wins.
        let with_pw = TRUNK.replace("\"lyon02\"", "\"lyon02\",\"password\":\"from-bundle\"");
        let e = run(&text, &[("trunk", &with_pw)], &[]);
        let t = e
            .config
            .sip
            .as_ref()
            .and_then(|s| s.trunk.as_ref())
            .expect("trunk");
        assert_eq!(t.password, "from-bundle");
    }

    fn ca_cert(dir: &Path) -> (PathBuf, String) {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["hq-ca".to_owned()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("cert");
        let path = dir.join("hq-ca.pem");
        std::fs::write(&path, cert.pem()).expect("write");
        let pin = hex::encode(Sha256::digest(key.subject_public_key_info()));
        (path, pin)
    }

    #[test]
    fn hq_url_applies_only_when_the_ca_matches_the_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, pin) = ca_cert(dir.path());
        let text = format!(
            "{BASE}\n[hq]\nurl = \"https://old.example.net\"\nca_cert = {ca:?}\nclient_cert = \"/var/lib/b/box.pem\"\nclient_key = \"/var/lib/b/box.key\"\nbox_id = \"BOX-1\"\n"
        );
        let url = r#""https://hq.example.com""#;
        let pin_json = format!("{pin:?}");
        let e = run(&text, &[("hq_url", url), ("ca_pin", &pin_json)], &[]);
        assert_eq!(e.notes, [Note::Applied("hq_url")]);
        assert!(
            e.config
                .hq
                .as_ref()
                .expect("hq")
                .url
                .starts_with("https://hq.example.com"),
            "{:?}",
            e.config.hq
        );
        let wrong = format!("{:?}", "00".repeat(32));
        let e = run(&text, &[("hq_url", url), ("ca_pin", &wrong)], &[]);
        assert!(
            matches!(&e.notes[..], [Note::Refused("hq_url", m)] if m.contains("is not the CA")),
            "{:?}",
            e.notes
        );
        assert_eq!(e.config, base(&text));
        // No [hq]: waits for enrollment.
        let e = run(BASE, &[("hq_url", url), ("ca_pin", &pin_json)], &[]);
        assert!(
            matches!(&e.notes[..], [Note::NotApplicable("hq_url", _)]),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn stored_rows_are_read_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("branchline.db");
        drop(crate::store::Store::open(&db).expect("store (migrated)"));
        assert!(Stored::load_path(&db).expect("read").is_empty());
        let sha = "ab".repeat(32);
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(&format!(
            "INSERT INTO provisioning_used_tokens VALUES ('0123456789abcdef', 1);
             INSERT INTO provisioning_bundles VALUES ('{sha}', '0123456789abcdef', 'lyon-02', 1);
             INSERT INTO provisioned_settings VALUES ('country', '\"FR\"', '{sha}');
             INSERT INTO provisioned_settings VALUES ('site', '\"lyon-02\"', '{sha}');"
        ))
        .expect("seed");
        let s = Stored::load_path(&db).expect("read");
        assert_eq!(s.bundle_sha256.as_deref(), Some(sha.as_str()));
        let e = effective(&base(BASE), BASE, &s, &board(), &[]);
        assert_eq!(e.notes, [Note::Applied("country")]);
        assert_eq!(e.site.as_deref(), Some("lyon-02"));
    }
}
