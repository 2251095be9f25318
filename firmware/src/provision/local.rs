//! QR tokens from the box's web page: what the provisioning page and
//! `/api/v1/provisioning` need from the daemon ([`LocalProvisioning`]), and reading a
//! token out of what an installer gives (pasted text, a link, a photo).
//!
//! Applying a token is the USB path's code ([`super::open_token`], then
//! [`super::apply_opened`] in one store transaction, run by the API with its audit
//! row); afterwards [`LocalProvisioning::notify_applied`] tells the daemon's main
//! loop, which restarts `branchd` once no call is up, exactly as after a USB bundle
//! (the daemon's `applied` channel), and enrollment with HQ runs at the next start
//! ([`crate::enroll`]).
//!
//! # Inputs
//!
//! - Text: the token (`BL1:...`), or a link to the box's page carrying it
//!   (`.../provisioning/token?t=<percent-encoded token>`, what a phone's camera
//!   opens); [`token_text`] takes the token out of either.
//! - A photo (PNG or JPEG, at most [`MAX_PHOTO_BYTES`]): decoded on the box by
//!   `branchline_provisioning::qr::decode_image` (rqrr), off the async threads and one
//!   at a time ([`LocalProvisioning::decode_photo`]: a 12-megapixel photo takes a
//!   core for a while, and two at once would starve call handling on a 2-core box).
//!   The first code in the picture that holds a token wins (the box's own claim QR
//!   in the same picture is skipped).

use std::path::PathBuf;
use std::sync::Arc;

use branchline_provisioning::claim::ClaimCode;
use branchline_provisioning::payload::BoxSerial;
use tokio::sync::{mpsc, Semaphore};

use super::Verifier;
use crate::config::Config;

/// Largest photo accepted for decoding (a phone photo is 2 to 6 MB as JPEG).
pub const MAX_PHOTO_BYTES: usize = 8 * 1024 * 1024;
/// Longest text accepted as a token or a link holding one (a token is ~200 characters;
/// percent-encoding triples some).
pub const MAX_TOKEN_TEXT: usize = 4096;

/// What the web page and the API need to show the provisioning state and apply a
/// token. Cheap to clone.
#[derive(Clone)]
pub struct LocalProvisioning {
    inner: Arc<Inner>,
}

struct Inner {
    serial: Option<BoxSerial>,
    /// The trusted keys, serial and revocation list; `Err` says why tokens cannot be
    /// applied here (no `[provisioning]`, an unreadable key).
    verifier: Result<Verifier, String>,
    /// The claim code, or why there is none.
    claim: Result<ClaimCode, String>,
    /// `[hq] client_cert`: its existence is "enrolled".
    client_cert: Option<PathBuf>,
    /// The daemon's main loop: the site of each token applied (it restarts `branchd`).
    applied: mpsc::UnboundedSender<String>,
    /// One photo decode at a time.
    decoding: Semaphore,
}

impl std::fmt::Debug for LocalProvisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvisioning")
            .field("serial", &self.inner.serial)
            .field("accepts_tokens", &self.inner.verifier.is_ok())
            .finish_non_exhaustive()
    }
}

/// Why a photo gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    /// Not a PNG or JPEG the decoder reads (or too large in pixels).
    #[error("not a readable PNG or JPEG image: {0}")]
    Image(String),
    /// No QR code found or readable.
    #[error("{0}")]
    NoQr(String),
    /// QR codes were read, but none holds a Branchline token.
    #[error("the QR code in the image holds no Branchline token (it says {0:?})")]
    NotAToken(String),
    /// The decoding thread failed.
    #[error("decoding failed: {0}")]
    Failed(String),
}

impl LocalProvisioning {
    /// The handle of a daemon running `config`; `applied` is its main loop's channel
    /// of applied sites (the one the USB watcher reports on).
    pub fn from_config(config: &Config, applied: mpsc::UnboundedSender<String>) -> Self {
        let serial = config
            .provisioning
            .as_ref()
            .map(|p| p.serial.clone())
            .or_else(|| {
                config
                    .site
                    .box_serial
                    .as_ref()
                    .and_then(|s| s.as_str().parse().ok())
            });
        let verifier = match &config.provisioning {
            Some(p) => Verifier::load(p),
            None => Err(
                "provisioning is not configured on this box (no [provisioning] in branchd.toml)"
                    .to_owned(),
            ),
        };
        let claim = match &serial {
            Some(s) => super::claim::code(&config.paths.data_dir, s),
            None => Err(
                "this box has no serial (set site.box_serial or [provisioning] serial)".to_owned(),
            ),
        };
        if let Err(e) = &claim {
            tracing::warn!(error = %e, "no claim code on the provisioning page");
        }
        Self::new(
            serial,
            verifier,
            claim,
            config.hq.as_ref().map(|h| h.client_cert.clone()),
            applied,
        )
    }

    /// A handle from its parts (tests, and [`LocalProvisioning::from_config`]).
    pub fn new(
        serial: Option<BoxSerial>,
        verifier: Result<Verifier, String>,
        claim: Result<ClaimCode, String>,
        client_cert: Option<PathBuf>,
        applied: mpsc::UnboundedSender<String>,
    ) -> Self {
        LocalProvisioning {
            inner: Arc::new(Inner {
                serial,
                verifier,
                claim,
                client_cert,
                applied,
                decoding: Semaphore::new(1),
            }),
        }
    }

    /// This box's serial.
    pub fn serial(&self) -> Option<&BoxSerial> {
        self.inner.serial.as_ref()
    }

    /// What tokens are checked against, or why tokens cannot be applied.
    pub fn verifier(&self) -> Result<&Verifier, &str> {
        self.inner.verifier.as_ref().map_err(String::as_str)
    }

    /// The claim code, or why there is none.
    pub fn claim(&self) -> Result<&ClaimCode, &str> {
        self.inner.claim.as_ref().map_err(String::as_str)
    }

    /// `[hq] client_cert`, if `[hq]` is set.
    pub fn client_cert(&self) -> Option<&std::path::Path> {
        self.inner.client_cert.as_deref()
    }

    /// Tells the daemon a token for `site` was applied: it restarts with the settings
    /// once no call is up.
    pub fn notify_applied(&self, site: &str) {
        if self.inner.applied.send(site.to_owned()).is_err() {
            tracing::warn!(
                site,
                "token applied but the main loop is gone: the settings apply at the next start"
            );
        }
    }

    /// The token in a photo: decoded on a blocking thread, one photo at a time.
    pub async fn decode_photo(&self, bytes: Vec<u8>) -> Result<String, PhotoError> {
        let _permit = self
            .inner
            .decoding
            .acquire()
            .await
            .map_err(|e| PhotoError::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(move || token_in_photo(&bytes))
            .await
            .map_err(|e| PhotoError::Failed(e.to_string()))?
    }
}

/// The token in a photo's QR codes (see the module doc).
pub fn token_in_photo(bytes: &[u8]) -> Result<String, PhotoError> {
    use branchline_provisioning::Error as E;
    let texts = match branchline_provisioning::qr::decode_image(bytes) {
        Ok(t) => t,
        Err(e @ E::QrNotFound { .. }) => return Err(PhotoError::NoQr(e.to_string())),
        Err(e) => return Err(PhotoError::Image(e.to_string())),
    };
    texts.iter().find_map(|t| token_text(t)).ok_or_else(|| {
        let first = texts.first().map(String::as_str).unwrap_or_default();
        PhotoError::NotAToken(first.chars().take(60).collect())
    })
}

/// The token text in `input`: the token itself, or a link whose `t` query parameter
/// holds it percent-encoded. `None` when it is neither (the token's own checks come
/// later: this only finds it).
pub fn token_text(input: &str) -> Option<String> {
    let input = input.trim();
    if input.starts_with(branchline_provisioning::token::PREFIX) {
        return Some(input.to_owned());
    }
    let (_, query) = input.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("t=")?;
        let text = percent_decode(value)?;
        text.trim()
            .starts_with(branchline_provisioning::token::PREFIX)
            .then(|| text.trim().to_owned())
    })
}

/// `%XX` decoding (a `+` stays a `+`: it is a base45 character, and the links this
/// box reads escape a space as `%20`).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The link to the box's page that carries `token` (`base` is the box's address,
/// e.g. `http://192.0.2.10`): what a QR code for a phone's camera holds.
pub fn token_link(base: &str, token: &str) -> String {
    let mut out = format!("{}/provisioning/token?t=", base.trim_end_matches('/'));
    for b in token.trim().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "BL1:6BFOXN*TS0BE+ 9%$/:.-";

    #[test]
    fn a_token_is_found_in_text_and_links() {
        assert_eq!(token_text(TOKEN).as_deref(), Some(TOKEN));
        assert_eq!(token_text(&format!("  {TOKEN}\n")).as_deref(), Some(TOKEN));
        let link = token_link("http://192.0.2.10/", TOKEN);
        assert!(!link.contains(' ') && !link.contains('+'), "{link}");
        assert_eq!(token_text(&link).as_deref(), Some(TOKEN));
        assert_eq!(
            token_text(&format!("{link}&x=1#top")).as_deref(),
            Some(TOKEN)
        );
        for no in [
            "",
            "hello",
            "http://192.0.2.10/provisioning",
            "http://x/?t=hello",
            "http://x/?t=BL1%zz",
            "BLC1:BL-1:0000000000000000",
        ] {
            assert_eq!(token_text(no), None, "{no:?}");
        }
    }

    #[test]
    fn a_jpeg_photo_of_a_token_among_other_codes_is_read() {
        // A token-sized QR code next to the box's claim QR, on a grey page, as a JPEG
        // (lossy) at phone-photo size: the token is found, the claim QR skipped.
        let token = format!("BL1:{}", "6BFOXN*TS0BE+ 9%$/:.-".repeat(8));
        let code = |text: &str| {
            let png = branchline_provisioning::qr::Qr::encode(text)
                .expect("qr")
                .to_png(12)
                .expect("png");
            image::load_from_memory(&png).expect("decode").to_luma8()
        };
        let (claim, tok) = (code("BLC1:BL-1:0000000000000000"), code(&token));
        let mut page = image::GrayImage::from_pixel(2400, 1400, image::Luma([200u8]));
        image::imageops::overlay(&mut page, &claim, 60, 100);
        image::imageops::overlay(&mut page, &tok, 1000, 100);
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(page)
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .expect("jpeg");
        assert_eq!(token_in_photo(&jpeg.into_inner()), Ok(token));
    }

    #[test]
    fn photos_without_a_token_say_why() {
        assert!(matches!(
            token_in_photo(b"not an image"),
            Err(PhotoError::Image(_))
        ));
        let qr = branchline_provisioning::qr::Qr::encode("https://example.com/")
            .expect("qr")
            .to_png(4)
            .expect("png");
        assert!(matches!(
            token_in_photo(&qr),
            Err(PhotoError::NotAToken(t)) if t == "https://example.com/"
        ));
        let blank = {
            let img = image::GrayImage::from_pixel(64, 64, image::Luma([255u8]));
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageLuma8(img)
                .write_to(&mut out, image::ImageFormat::Png)
                .expect("png");
            out.into_inner()
        };
        assert!(matches!(token_in_photo(&blank), Err(PhotoError::NoQr(_))));
    }
}
