//! `branch-hq serve` configuration: a raw TOML shape ([`RawConfig`], also what the
//! command-line flags fill in) validated into [`ServeConfig`].
//!
//! ```toml
//! listen = "0.0.0.0:8443"          # sync (HTTPS, mutual TLS)
//! admin_listen = "127.0.0.1:8444"  # admin API (bearer token)
//! admin_tls = false                # true: the admin API speaks HTTPS (server cert only)
//! sqlite = "hq.sqlite"             # or: postgres = "host=127.0.0.1 user=postgres dbname=hq"
//! postgres_pool_size = 16
//! tls_dir = "tls"                  # ca.pem ca.key server.pem server.key admin-token
//! files_dir = "files"              # recording files
//! admin_token = "..."              # else $BRANCH_HQ_ADMIN_TOKEN, else tls_dir/admin-token
//! feed_retention_revisions = 100000
//! prune_interval_s = 600
//! poll_interval_ms = 1000          # how often a long-poll looks at the database
//! max_connections = 4096
//! provisioning_keys = ["prov.pub"] # enrollment: the provisioning public keys tokens are
//!                                  # signed with (none: HQ enrolls nobody)
//! provisioning_revoked = "branchline-revoked.blr"  # optional signed revocation list
//! box_cert_lifetime_s = 157680000  # lifetime of device certificates HQ signs at
//!                                  # enrollment and renewal (60 s to 20 years; 5 years)
//! ```
//!
//! Relative paths in a file are relative to the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hq::{Error, Result};

/// Environment variable with the admin token.
pub const ADMIN_TOKEN_ENV: &str = "BRANCH_HQ_ADMIN_TOKEN";
/// Default sync listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default admin listener (loopback only).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8444";

/// The config file's fields, all optional (flags fill the same struct).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Sync listener address.
    pub listen: Option<String>,
    /// Admin listener address.
    pub admin_listen: Option<String>,
    /// Whether the admin listener uses TLS.
    pub admin_tls: Option<bool>,
    /// SQLite database path.
    pub sqlite: Option<PathBuf>,
    /// PostgreSQL connection string.
    pub postgres: Option<String>,
    /// PostgreSQL pool size.
    pub postgres_pool_size: Option<usize>,
    /// TLS directory.
    pub tls_dir: Option<PathBuf>,
    /// Recording files directory.
    pub files_dir: Option<PathBuf>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// Feed revisions kept.
    pub feed_retention_revisions: Option<i64>,
    /// Seconds between prunes (0: never).
    pub prune_interval_s: Option<u64>,
    /// Long-poll database poll interval.
    pub poll_interval_ms: Option<u64>,
    /// Most concurrent connections on the sync listener.
    pub max_connections: Option<usize>,
    /// Public keys (`.pub` files of `branch-prov keygen`) that enrollment tokens
    /// must be signed with.
    pub provisioning_keys: Option<Vec<PathBuf>>,
    /// A signed revocation list (`branch-prov revoke`) of tokens HQ refuses.
    pub provisioning_revoked: Option<PathBuf>,
    /// Lifetime of the device certificates HQ signs (enrollment and renewal), seconds.
    pub box_cert_lifetime_s: Option<u64>,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: "read config",
            path: path.to_owned(),
            source,
        })?;
        let mut raw: RawConfig = toml::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut raw.sqlite,
            &mut raw.tls_dir,
            &mut raw.files_dir,
            &mut raw.provisioning_revoked,
        ]
        .into_iter()
        .flatten()
        .chain(raw.provisioning_keys.iter_mut().flatten())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(raw)
    }

    /// `self` with every field `over` sets replaced (flags over the file).
    pub fn overridden_by(self, over: RawConfig) -> RawConfig {
        let (over_sqlite, over_pg) = (over.sqlite.is_some(), over.postgres.is_some());
        RawConfig {
            listen: over.listen.or(self.listen),
            admin_listen: over.admin_listen.or(self.admin_listen),
            admin_tls: over.admin_tls.or(self.admin_tls),
            sqlite: over.sqlite.or(if over_pg { None } else { self.sqlite }),
            postgres: over
                .postgres
                .or(if over_sqlite { None } else { self.postgres }),
            postgres_pool_size: over.postgres_pool_size.or(self.postgres_pool_size),
            tls_dir: over.tls_dir.or(self.tls_dir),
            files_dir: over.files_dir.or(self.files_dir),
            admin_token: over.admin_token.or(self.admin_token),
            feed_retention_revisions: over
                .feed_retention_revisions
                .or(self.feed_retention_revisions),
            prune_interval_s: over.prune_interval_s.or(self.prune_interval_s),
            poll_interval_ms: over.poll_interval_ms.or(self.poll_interval_ms),
            max_connections: over.max_connections.or(self.max_connections),
            provisioning_keys: over.provisioning_keys.or(self.provisioning_keys),
            provisioning_revoked: over.provisioning_revoked.or(self.provisioning_revoked),
            box_cert_lifetime_s: over.box_cert_lifetime_s.or(self.box_cert_lifetime_s),
        }
    }
}

/// Which store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite at this path.
    Sqlite(PathBuf),
    /// PostgreSQL.
    Postgres {
        /// Connection string.
        url: String,
        /// Pool size.
        pool_size: usize,
    },
}

/// What [`crate::hq::run`] needs besides listeners and the store.
#[derive(Debug, Clone)]
pub struct HqConfig {
    /// TLS directory ([`crate::hq::pki`] layout). Its CA also issues device
    /// certificates through the admin API.
    pub tls_dir: PathBuf,
    /// Recording files.
    pub files_dir: PathBuf,
    /// Admin bearer token.
    pub admin_token: String,
    /// Whether the admin listener speaks TLS.
    pub admin_tls: bool,
    /// Feed revisions kept by the periodic prune.
    pub feed_retention_revisions: i64,
    /// Time between prunes (`None`: never).
    pub prune_interval: Option<Duration>,
    /// How often a waiting long-poll looks at the database (changes made by another
    /// instance sharing PostgreSQL are seen this late at most).
    pub poll_interval: Duration,
    /// Most concurrent connections on the sync listener.
    pub max_connections: usize,
    /// Enrollment of boxes with provisioning tokens (`None`: off, HQ answers
    /// `not_enabled`).
    pub enrollment: Option<crate::hq::enroll::EnrollSettings>,
    /// Lifetime of the device certificates signed at enrollment and renewal.
    pub box_cert_lifetime: Duration,
}

/// Allowed `box_cert_lifetime_s`: a minute (tests of renewal) to 20 years.
pub const BOX_CERT_LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 60..=20 * 365 * 86_400;

impl HqConfig {
    /// Defaults for a TLS directory, files directory and token (tests).
    pub fn new(tls_dir: PathBuf, files_dir: PathBuf, admin_token: String) -> HqConfig {
        HqConfig {
            tls_dir,
            files_dir,
            admin_token,
            admin_tls: false,
            feed_retention_revisions: 100_000,
            prune_interval: Some(Duration::from_secs(600)),
            poll_interval: Duration::from_millis(1000),
            max_connections: 4096,
            enrollment: None,
            box_cert_lifetime: Duration::from_secs(crate::hq::pki::BOX_CERT_DAYS * 86_400),
        }
    }
}

/// Everything `branch-hq serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Sync listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// The store.
    pub store: StoreConfig,
    /// The rest.
    pub hq: HqConfig,
    /// Whether the admin token still has to be read from (or made in) the TLS dir.
    pub token_from_tls_dir: bool,
}

impl ServeConfig {
    /// Validates `raw` (`source` names the file or `"<flags>"` in errors). The admin
    /// token comes from the config, else [`ADMIN_TOKEN_ENV`], else the TLS dir.
    pub fn from_raw(raw: RawConfig, source: &Path) -> Result<ServeConfig> {
        let bad = |field: &'static str, reason: String| Error::Config {
            path: source.to_owned(),
            field,
            reason,
        };
        let addr = |field: &'static str, v: Option<String>, default: &str| -> Result<SocketAddr> {
            let v = v.unwrap_or_else(|| default.to_owned());
            v.parse()
                .map_err(|e| bad(field, format!("{v:?} is not an address:port ({e})")))
        };
        let listen = addr("listen", raw.listen, DEFAULT_LISTEN)?;
        let admin_listen = addr("admin_listen", raw.admin_listen, DEFAULT_ADMIN_LISTEN)?;
        let store = match (raw.sqlite, raw.postgres) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "postgres",
                    "give either sqlite or postgres, not both".into(),
                ))
            }
            (Some(path), None) => StoreConfig::Sqlite(path),
            (None, Some(url)) => StoreConfig::Postgres {
                url,
                pool_size: match raw.postgres_pool_size.unwrap_or(16) {
                    0 => return Err(bad("postgres_pool_size", "must be at least 1".into())),
                    n => n,
                },
            },
            (None, None) => StoreConfig::Sqlite(PathBuf::from("hq.sqlite")),
        };
        let tls_dir = raw.tls_dir.unwrap_or_else(|| PathBuf::from("tls"));
        let files_dir = raw.files_dir.unwrap_or_else(|| PathBuf::from("files"));
        let token = raw
            .admin_token
            .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok())
            .filter(|t| !t.is_empty());
        if let Some(t) = &token {
            if t.len() < 16 {
                return Err(bad("admin_token", "must be at least 16 characters".into()));
            }
        }
        let retention = raw.feed_retention_revisions.unwrap_or(100_000);
        if retention < 0 {
            return Err(bad(
                "feed_retention_revisions",
                "must not be negative".into(),
            ));
        }
        let poll = raw.poll_interval_ms.unwrap_or(1000);
        if !(10..=60_000).contains(&poll) {
            return Err(bad("poll_interval_ms", "must be 10 to 60000".into()));
        }
        let max_connections = raw.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(bad("max_connections", "must be at least 1".into()));
        }
        let lifetime = raw
            .box_cert_lifetime_s
            .unwrap_or(crate::hq::pki::BOX_CERT_DAYS * 86_400);
        if !BOX_CERT_LIFETIME_RANGE.contains(&lifetime) {
            return Err(bad(
                "box_cert_lifetime_s",
                format!(
                    "{lifetime} is outside {}..={} seconds",
                    BOX_CERT_LIFETIME_RANGE.start(),
                    BOX_CERT_LIFETIME_RANGE.end()
                ),
            ));
        }
        let enrollment = match raw.provisioning_keys {
            None => {
                if raw.provisioning_revoked.is_some() {
                    return Err(bad(
                        "provisioning_revoked",
                        "needs provisioning_keys (the keys the list is signed with)".into(),
                    ));
                }
                None
            }
            Some(paths) => {
                let prov = |field: &'static str| {
                    move |e: branchline_provisioning::Error| Error::Provisioning {
                        path: source.to_owned(),
                        field,
                        source: e,
                    }
                };
                if paths.is_empty() {
                    return Err(bad("provisioning_keys", "lists no key file".into()));
                }
                let keys = branchline_provisioning::keys::TrustedKeys::from_files(&paths)
                    .map_err(prov("provisioning_keys"))?;
                let revoked = match &raw.provisioning_revoked {
                    Some(p) => branchline_provisioning::revocation::RevocationList::load(p, &keys)
                        .map_err(prov("provisioning_revoked"))?,
                    None => branchline_provisioning::revocation::RevocationList::default(),
                };
                Some(crate::hq::enroll::EnrollSettings::new(keys, revoked))
            }
        };
        Ok(ServeConfig {
            listen,
            admin_listen,
            store,
            token_from_tls_dir: token.is_none(),
            hq: HqConfig {
                tls_dir,
                files_dir,
                admin_token: token.unwrap_or_default(),
                admin_tls: raw.admin_tls.unwrap_or(false),
                feed_retention_revisions: retention,
                prune_interval: match raw.prune_interval_s.unwrap_or(600) {
                    0 => None,
                    s => Some(Duration::from_secs(s)),
                },
                poll_interval: Duration::from_millis(poll),
                max_connections,
                enrollment,
                box_cert_lifetime: Duration::from_secs(lifetime),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_the_field() {
        assert!(toml::from_str::<RawConfig>("listen = \"1.2.3.4:1\"\nlsten = 1").is_err());
        let raw = RawConfig {
            listen: Some("nowhere".into()),
            ..RawConfig::default()
        };
        let err = ServeConfig::from_raw(raw, Path::new("hq.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hq.toml") && err.contains("listen"), "{err}");
        let raw = RawConfig {
            sqlite: Some("a".into()),
            postgres: Some("b".into()),
            ..RawConfig::default()
        };
        assert!(ServeConfig::from_raw(raw, Path::new("f")).is_err());
        for bad in [0, 59, 20 * 365 * 86_400 + 1] {
            let raw = RawConfig {
                box_cert_lifetime_s: Some(bad),
                ..RawConfig::default()
            };
            let err = ServeConfig::from_raw(raw, Path::new("hq.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("box_cert_lifetime_s"), "{err}");
        }
        let raw = RawConfig {
            box_cert_lifetime_s: Some(120),
            ..RawConfig::default()
        };
        let cfg = ServeConfig::from_raw(raw, Path::new("hq.toml")).unwrap();
        assert_eq!(cfg.hq.box_cert_lifetime, Duration::from_secs(120));
    }

    #[test]
    fn flags_override_the_file_and_pick_one_store() {
        let file = RawConfig {
            sqlite: Some("hq.sqlite".into()),
            poll_interval_ms: Some(500),
            ..RawConfig::default()
        };
        let flags = RawConfig {
            postgres: Some("host=x".into()),
            ..RawConfig::default()
        };
        let raw = file.overridden_by(flags);
        let cfg = ServeConfig::from_raw(raw, Path::new("<flags>")).unwrap();
        assert!(matches!(cfg.store, StoreConfig::Postgres { .. }));
        assert_eq!(cfg.hq.poll_interval, Duration::from_millis(500));
    }
}
