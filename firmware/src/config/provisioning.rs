//! `[provisioning]`: USB provisioning (see [`crate::provision`]). Validated like the
//! rest of the file: every error names the file, the line and the field.
//!
//! ```toml
//! [provisioning]
//! watch = ["/run/branchline/usb"]          # mount points the image's udev rule uses
//! keys = ["/etc/branchline/hq-prov.pub"]   # trusted HQ provisioning keys (ed25519)
//! serial = "BL2418-00042"                  # default: site.box_serial
//! revoked = "/var/lib/branchline/branchline-revoked.blr"   # optional revocation list
//! local_override = ["trunk"]               # optional: these keep branchd.toml's value
//! ```
//!
//! No `[provisioning]` section means the box does not watch for sticks (settings
//! provisioned earlier still apply, see [`crate::provision::settings`]).
//!
//! `local_override` lists provisioned settings that branchd.toml wins over:
//! `country`, `port_map` (FXS extensions and FXO lines), `trunk`, `hq_url`
//! ([`OVERRIDABLE`]). By default every
//! provisioned setting overrides the file (the file is the factory default); each
//! override is logged at every start, so a local exception is never silent.

use std::path::PathBuf;

use branchline_provisioning::payload::BoxSerial;
use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::error::Result;

/// Most mount points or keys one box lists.
pub const MAX_PROVISIONING_PATHS: usize = 8;
/// The provisioned settings `local_override` may name.
pub const OVERRIDABLE: [&str; 4] = ["country", "port_map", "trunk", "hq_url"];

/// `[provisioning]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvisioning {
    pub watch: Spanned<Vec<Spanned<String>>>,
    pub keys: Spanned<Vec<Spanned<String>>>,
    pub serial: Option<Spanned<String>>,
    pub revoked: Option<Spanned<String>>,
    pub local_override: Option<Vec<Spanned<String>>>,
}

/// `[provisioning]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningConfig {
    /// Mount points watched for a stick with a bundle (absolute paths).
    pub watch: Vec<PathBuf>,
    /// Public key files of HQ's provisioning keys (read at start).
    pub keys: Vec<PathBuf>,
    /// This box's serial, which a bundle's token must name.
    pub serial: BoxSerial,
    /// The signed revocation list the box consults, if any.
    pub revoked: Option<PathBuf>,
    /// Provisioned settings that keep branchd.toml's value (names from
    /// `OVERRIDABLE`: country, port_map, trunk, hq_url).
    pub local_override: Vec<&'static str>,
}

impl Ctx<'_> {
    /// `[provisioning]`; `box_serial` is `site.box_serial` (the default serial).
    pub(super) fn provisioning(
        &self,
        raw: RawProvisioning,
        box_serial: Option<&str>,
    ) -> Result<ProvisioningConfig> {
        let paths = |list: Spanned<Vec<Spanned<String>>>, field: &str| -> Result<Vec<PathBuf>> {
            let span = list.span();
            let list = list.into_inner();
            if list.is_empty() || list.len() > MAX_PROVISIONING_PATHS {
                return Err(self.invalid(
                    span,
                    field,
                    format!(
                        "{} entries; must list 1 to {MAX_PROVISIONING_PATHS} absolute paths",
                        list.len()
                    ),
                ));
            }
            let mut out: Vec<PathBuf> = Vec::with_capacity(list.len());
            for (i, v) in list.into_iter().enumerate() {
                let item = format!("{field}[{i}]");
                let vspan = v.span();
                let p = self.path(v, &item)?;
                if !p.is_absolute() {
                    return Err(self.invalid(vspan, item, "must be an absolute path"));
                }
                if out.contains(&p) {
                    return Err(self.invalid(
                        vspan,
                        item,
                        format!("{} is listed twice", p.display()),
                    ));
                }
                out.push(p);
            }
            Ok(out)
        };
        let watch_span = raw.watch.span();
        let watch = paths(raw.watch, "provisioning.watch")?;
        let keys = paths(raw.keys, "provisioning.keys")?;
        let serial = match (raw.serial, box_serial) {
            (Some(s), _) => s.get_ref().parse::<BoxSerial>().map_err(|e| {
                self.invalid(s.span(), "provisioning.serial", e.to_string())
            })?,
            (None, Some(s)) => s.parse::<BoxSerial>().map_err(|e| {
                self.invalid(watch_span.clone(), "site.box_serial", e.to_string())
            })?,
            (None, None) => {
                return Err(self.invalid(
                    watch_span.clone(),
                    "provisioning.serial",
                    "no serial: set provisioning.serial or site.box_serial (a bundle must name this box)",
                ))
            }
        };
        let revoked = match raw.revoked {
            Some(v) => {
                let span = v.span();
                let p = self.path(v, "provisioning.revoked")?;
                if !p.is_absolute() {
                    return Err(self.invalid(
                        span,
                        "provisioning.revoked",
                        "must be an absolute path",
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let mut local_override: Vec<&'static str> = Vec::new();
        for (i, v) in raw.local_override.into_iter().flatten().enumerate() {
            let field = format!("provisioning.local_override[{i}]");
            let Some(name) = OVERRIDABLE.iter().find(|n| **n == v.get_ref()) else {
                return Err(self.invalid(
                    v.span(),
                    field,
                    format!(
                        "{:?} is not a provisioned setting; one of {}",
                        v.get_ref(),
                        OVERRIDABLE.join(", ")
                    ),
                ));
            };
            if local_override.contains(name) {
                return Err(self.invalid(v.span(), field, format!("{name} is listed twice")));
            }
            local_override.push(name);
        }
        Ok(ProvisioningConfig {
            watch,
            keys,
            serial,
            revoked,
            local_override,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const FILE: &str = "/etc/branchline/branchd.toml";

    fn load(extra: &str) -> Result<Config> {
        Config::from_toml_str(
            &format!("[telephony]\ncountry = \"US\"\n\n{extra}"),
            Path::new(FILE),
        )
    }

    fn error(extra: &str) -> String {
        match load(extra) {
            Ok(c) => panic!("expected an error, got {:?}", c.provisioning),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn absent_means_no_watching() {
        assert_eq!(load("").expect("loads").provisioning, None);
    }

    #[test]
    fn full_section() {
        let c = load(
            "[provisioning]\nwatch = [\"/run/branchline/usb\"]\nkeys = [\"/etc/k.pub\", \"/etc/k2.pub\"]\n\
             serial = \"BL2418-00042\"\nrevoked = \"/var/lib/r.blr\"\nlocal_override = [\"trunk\", \"country\"]\n",
        )
        .expect("loads");
        assert_eq!(
            c.provisioning,
            Some(ProvisioningConfig {
                watch: vec![PathBuf::from("/run/branchline/usb")],
                keys: vec![PathBuf::from("/etc/k.pub"), PathBuf::from("/etc/k2.pub")],
                serial: "BL2418-00042".parse().expect("serial"),
                revoked: Some(PathBuf::from("/var/lib/r.blr")),
                local_override: vec!["trunk", "country"],
            })
        );
    }

    #[test]
    fn bad_values_name_file_line_and_field() {
        let e = error("[provisioning]\nwatch = []\nkeys = [\"/k\"]\nserial = \"A1\"\n");
        assert!(
            e.contains(FILE) && e.contains("provisioning.watch") && e.contains("line 5"),
            "{e}"
        );
        let e = error("[provisioning]\nwatch = [\"usb\"]\nkeys = [\"/k\"]\nserial = \"A1\"\n");
        assert!(
            e.contains("provisioning.watch[0]") && e.contains("absolute"),
            "{e}"
        );
        let e =
            error("[provisioning]\nwatch = [\"/u\", \"/u\"]\nkeys = [\"/k\"]\nserial = \"A1\"\n");
        assert!(
            e.contains("provisioning.watch[1]") && e.contains("twice"),
            "{e}"
        );
        let e =
            error("[provisioning]\nwatch = [\"/u\"]\nkeys = [\"/k\"]\nserial = \"no spaces\"\n");
        assert!(
            e.contains("provisioning.serial") && e.contains("line 7"),
            "{e}"
        );
        let e = error("[provisioning]\nwatch = [\"/u\"]\nkeys = [\"/k\"]\n");
        assert!(
            e.contains("provisioning.serial") && e.contains("site.box_serial"),
            "{e}"
        );
        let e =
            error("[provisioning]\nwatch = [\"/u\"]\nkeys = [\"/k\"]\nserial = \"A1\"\nsize = 3\n");
        assert!(e.contains("size"), "{e}");
        let e = error(
            "[provisioning]\nwatch = [\"/u\"]\nkeys = [\"/k\"]\nserial = \"A1\"\nlocal_override = [\"network\"]\n",
        );
        assert!(
            e.contains("provisioning.local_override[0]")
                && e.contains("line 8")
                && e.contains("trunk"),
            "{e}"
        );
        let e = error(
            "[provisioning]\nwatch = [\"/u\"]\nkeys = [\"/k\"]\nserial = \"A1\"\nlocal_override = [\"port_map\", \"port_map\"]\n",
        );
        assert!(
            e.contains("provisioning.local_override[1]") && e.contains("twice"),
            "{e}"
        );
    }
}
