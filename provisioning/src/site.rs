//! The site description an HQ operator writes (TOML, see
//! `provisioning/examples/site.toml`) and what `branch-prov` makes from it.

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::payload::{
    BoxSerial, BundlePayload, CaPin, Country, Enrollment, FxoLine, FxsPort, HqUrl,
    InstallerCredential, Network, SiteConfig, SiteId, TokenId, Trunk, PAYLOAD_FORMAT,
};
use crate::time::parse_period;

/// Validity of a token when neither the file nor the command line says.
pub const DEFAULT_VALID_FOR: &str = "7d";

/// A site description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDescription {
    /// Site id.
    pub site: SiteId,
    /// Boxes that may use the token.
    pub serials: Vec<BoxSerial>,
    /// HQ's base URL.
    pub hq_url: HqUrl,
    /// sha256 of HQ's CA SubjectPublicKeyInfo, 64 hex digits.
    pub ca_pin: CaPin,
    /// How long tokens made from it are valid (`90m`, `12h`, `14d`).
    #[serde(default)]
    pub valid_for: Option<String>,
    /// Country (tone plan).
    pub country: Country,
    /// WAN settings.
    pub network: Network,
    /// SIP trunk.
    #[serde(default)]
    pub trunk: Option<Trunk>,
    /// FXS ports.
    #[serde(default)]
    pub fxs: Vec<FxsPort>,
    /// FXO lines.
    #[serde(default)]
    pub fxo: Vec<FxoLine>,
    /// Installer account.
    #[serde(default)]
    pub installer: Option<InstallerCredential>,
}

impl SiteDescription {
    /// Parses and validates a description; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<SiteDescription> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::SiteFile { message, .. } => Error::SiteFile {
                path: path.to_owned(),
                message,
            },
            other => Error::SiteFile {
                path: path.to_owned(),
                message: other.to_string(),
            },
        })
    }

    /// Parses and validates description text.
    pub fn parse(text: &str) -> Result<SiteDescription> {
        let site: SiteDescription = toml::from_str(text).map_err(|e| Error::SiteFile {
            path: "<site description>".into(),
            message: e.to_string(),
        })?;
        site.config().validate()?;
        site.enrollment(TokenId([0; 8]), 0, site.validity(None)?)?;
        Ok(site)
    }

    /// The validity period in seconds: `override_` (the command line), else the
    /// file's `valid_for`, else [`DEFAULT_VALID_FOR`].
    pub fn validity(&self, override_: Option<&str>) -> Result<u64> {
        match override_ {
            Some(p) => parse_period("--valid-for", p),
            None => parse_period(
                "valid_for",
                self.valid_for.as_deref().unwrap_or(DEFAULT_VALID_FOR),
            ),
        }
    }

    /// The enrollment data for a new token issued at `now`.
    pub fn enrollment(&self, token_id: TokenId, now: u64, valid_for: u64) -> Result<Enrollment> {
        let e = Enrollment {
            token_id,
            site: self.site.clone(),
            serials: self.serials.clone(),
            hq_url: self.hq_url.clone(),
            ca_pin: self.ca_pin.clone(),
            expires_at: now + valid_for,
        };
        e.validate()?;
        Ok(e)
    }

    /// The day-one settings.
    pub fn config(&self) -> SiteConfig {
        SiteConfig {
            country: self.country.clone(),
            network: self.network.clone(),
            trunk: self.trunk.clone(),
            fxs: self.fxs.clone(),
            fxo: self.fxo.clone(),
            installer: self.installer.clone(),
        }
    }

    /// Makes a signed token (text) for a new random token id.
    pub fn make_token(&self, key: &SigningKey, now: u64, valid_for: u64) -> Result<String> {
        let enrollment = self.enrollment(TokenId::random()?, now, valid_for)?;
        crate::token::encode(&enrollment, key)
    }

    /// Makes a signed bundle (bytes) with a new token.
    pub fn make_bundle(&self, key: &SigningKey, now: u64, valid_for: u64) -> Result<Vec<u8>> {
        let payload = BundlePayload {
            format: PAYLOAD_FORMAT,
            issued_at: now,
            token: self.make_token(key, now, valid_for)?,
            config: self.config(),
        };
        crate::bundle::make(&payload, key)
    }
}
