//! The diagnostics bundle: one `tar.gz` a technician downloads and sends to support.
//!
//! | file | what |
//! | --- | --- |
//! | `config.toml` | the config file with every secret replaced by `<redacted>` |
//! | `logs/recent.log` | the daemon's recent log output ([`super::logs`]), or why there is none |
//! | `store.json` | schema version, database and WAL size, row count of every table |
//! | `versions.json` | branchd version, board model, kernel, when the bundle was made |
//! | `status.json` | live status (ports, calls, trunk), SIP registrations, sync and WAN |
//!
//! **Secrets** are removed twice: every config value whose key names a secret
//! (`password`, `pin`, `token`, `key`, `secret`, `hash`, ... as a `_`-separated word)
//! is replaced, and then every text of the bundle has each secret value of the
//! effective config ([`config_secrets`]: SIP trunk and account passwords, the
//! installer password hash, conference PINs) replaced, so a secret that reached a log
//! line or came from provisioning does not leave either.
//!
//! Limits: logs are only what this run of `branchd` kept in memory (journald has the
//! rest); the store's own secrets (password hashes, PIN hashes) are not in it at all
//! (only row counts are).

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::Config;

/// Config key words that mark a secret value.
const SECRET_WORDS: [&str; 12] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "pin",
    "pins",
    "token",
    "key",
    "keys",
    "psk",
    "hash",
    "credentials",
];

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Every secret value of the effective config.
pub fn config_secrets(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = config.sip.as_ref().and_then(|s| s.trunk.as_ref()) {
        out.push(t.password.clone());
    }
    out.extend(config.sip_accounts.iter().map(|a| a.password.clone()));
    out.extend(config.auth.installer_password_hash.clone());
    out.extend(
        config
            .conference_rooms
            .iter()
            .map(|r| r.pin.expose().to_owned()),
    );
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// Whether a config key names a secret.
fn secret_key(key: &str) -> bool {
    key.to_ascii_lowercase()
        .split(['_', '-', '.'])
        .any(|w| SECRET_WORDS.contains(&w))
}

fn redact_value(v: &mut toml::Value) {
    match v {
        toml::Value::Table(t) => redact_table(t),
        toml::Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_table(t: &mut toml::Table) {
    for (k, v) in t.iter_mut() {
        if secret_key(k) {
            *v = toml::Value::String(REDACTED.to_owned());
        } else {
            redact_value(v);
        }
    }
}

/// The config file's text with every secret-named value replaced; an error when it
/// does not read or parse (then the bundle says so instead of copying it).
pub fn redacted_config(text: &str) -> Result<String, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    redact_table(&mut table);
    toml::to_string_pretty(&table).map_err(|e| e.to_string())
}

/// Replaces every occurrence of every secret in `text`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    // Longest first, so a secret that contains another goes whole.
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// Schema version, file sizes and row counts of the store at `db_path`.
pub fn store_stats(conn: &rusqlite::Connection, db_path: &Path) -> Value {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let wal = {
        let mut s = db_path.as_os_str().to_owned();
        s.push("-wal");
        std::path::PathBuf::from(s)
    };
    let version: Result<i64, _> = conn.pragma_query_value(None, "user_version", |r| r.get(0));
    let mut tables = serde_json::Map::new();
    let names: Result<Vec<String>, rusqlite::Error> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    let names_error = names.as_ref().err().map(ToString::to_string);
    for name in names.unwrap_or_default() {
        // Names come from sqlite_master; quoted as identifiers all the same.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let count: Result<i64, _> =
            conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0));
        tables.insert(
            name,
            match count {
                Ok(n) => json!(n),
                Err(e) => json!({ "error": e.to_string() }),
            },
        );
    }
    json!({
        "path": db_path.display().to_string(),
        "schema_version": version.ok(),
        "schema_version_of_this_firmware": crate::store::SCHEMA_VERSION,
        "db_bytes": size(db_path),
        "wal_bytes": size(&wal),
        "tables": tables,
        "tables_error": names_error,
    })
}

/// One file of the bundle.
#[derive(Debug, Clone)]
pub struct BundleFile {
    /// Path inside the archive.
    pub name: &'static str,
    /// Its text.
    pub text: String,
}

/// Packs `files` (each scrubbed of `secrets`) into a `tar.gz` under the directory
/// `top` (e.g. `branchline-diagnostics-20261130T1213Z`).
pub fn pack(
    top: &str,
    files: &[BundleFile],
    secrets: &[String],
    mtime_s: u64,
) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for f in files {
        let text = scrub(&f.text, secrets);
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime_s);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{top}/{}", f.name), text.as_bytes())?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_words_not_substrings() {
        for k in [
            "password",
            "installer_password_hash",
            "pin",
            "tls_key",
            "keys",
            "client-key",
            "token",
        ] {
            assert!(secret_key(k), "{k}");
        }
        for k in [
            "keepalive_s",
            "mapping",
            "ping",
            "domain",
            "username",
            "spin_s",
            "box_id",
        ] {
            assert!(!secret_key(k), "{k}");
        }
    }

    #[test]
    fn the_config_loses_its_secrets_and_keeps_the_rest() {
        let text = r#"
[site]
name = "Branch 7"
[sip.trunk]
username = "branch7"
password = "trunk-Secret-99"
[[sip_accounts]]
extension = "201"
password = "phone-Secret-201"
[[conference_rooms]]
number = "800"
pin = "4711"
"#;
        let out = redacted_config(text).expect("redacted");
        for s in ["trunk-Secret-99", "phone-Secret-201", "4711"] {
            assert!(!out.contains(s), "{s} left in:\n{out}");
        }
        assert!(out.contains("Branch 7") && out.contains("branch7") && out.contains("201"));
        assert!(out.contains(REDACTED));
        assert!(redacted_config("not [toml").is_err());
    }

    #[test]
    fn scrub_replaces_every_secret_everywhere() {
        let secrets = vec!["abc".to_owned(), "abcdef".to_owned(), String::new()];
        assert_eq!(
            scrub("x abcdef y abc z", &secrets),
            format!("x {REDACTED} y {REDACTED} z")
        );
        assert_eq!(scrub("nothing here", &secrets), "nothing here");
    }
}
