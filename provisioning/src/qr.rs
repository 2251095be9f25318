//! QR codes: render a token with the `qrcode` crate (PNG via `image`, SVG, terminal)
//! at error-correction level Q, and read tokens back from a PNG or JPEG (a screenshot
//! or a phone photo) with `rqrr` - the decoder the box's web page uses for uploads.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Luma};
use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode, Version};

use crate::error::{Error, Result};

/// Error-correction level for tokens: Q restores up to ~25% of damaged modules, what
/// a phone camera at an angle or a smudged printout needs.
pub const EC_LEVEL: EcLevel = EcLevel::Q;
/// Largest QR version the project targets for a typical site's token.
pub const TARGET_VERSION: i16 = 10;
/// Largest image accepted for decoding, per side.
pub const MAX_DECODE_SIDE: u32 = crate::photo::MAX_SIDE;
/// Images larger than this per side are scaled down before detection (phone photos
/// are ~4000 px; the finder patterns survive scaling and detection gets faster).
const DETECT_SIDE: u32 = 1600;

/// A token as a QR code.
#[derive(Clone)]
pub struct Qr {
    code: QrCode,
}

impl std::fmt::Debug for Qr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qr")
            .field("version", &self.version())
            .field("width", &self.width())
            .finish()
    }
}

impl Qr {
    /// Encodes `text` at [`EC_LEVEL`] in the smallest version that holds it (the
    /// encoder picks alphanumeric mode for base45 text).
    pub fn encode(text: &str) -> Result<Qr> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EC_LEVEL)
            .map_err(|e| Error::QrEncode(format!("{} characters: {e}", text.len())))?;
        Ok(Qr { code })
    }

    /// The QR version (1 to 40).
    pub fn version(&self) -> i16 {
        match self.code.version() {
            Version::Normal(v) | Version::Micro(v) => v,
        }
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.code.width()
    }

    /// A PNG with `module_px` pixels per module and the 4-module quiet zone.
    pub fn to_png(&self, module_px: u32) -> Result<Vec<u8>> {
        let img = self
            .code
            .render::<Luma<u8>>()
            .module_dimensions(module_px, module_px)
            .build();
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageLuma8(img)
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| Error::Image(e.to_string()))?;
        Ok(out.into_inner())
    }

    /// An SVG document.
    pub fn to_svg(&self) -> String {
        self.code
            .render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .build()
    }

    /// Unicode half blocks for a terminal (two modules per character cell vertically),
    /// drawn for the usual dark-background terminal: dark modules are left blank and
    /// light ones (and the quiet zone) are filled, so the code shows dark on light.
    pub fn to_terminal(&self) -> String {
        self.code
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build()
    }
}

/// Finds and reads every QR code in a PNG or JPEG picture ([`crate::photo`]). Refuses
/// pictures over [`MAX_DECODE_SIDE`] per side; larger than 1600 pixels a side they are
/// shrunk first.
pub fn decode_image(bytes: &[u8]) -> Result<Vec<String>> {
    let grey = crate::photo::decode(bytes)?.shrink_to(DETECT_SIDE);
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        grey.width as usize,
        grey.height as usize,
        |x, y| grey.at(x as u32, y as u32),
    );
    let grids = prepared.detect_grids();
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for grid in grids {
        match grid.decode() {
            Ok((_, content)) => found.push(content),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if found.is_empty() {
        return Err(Error::QrNotFound {
            detail: errors.join("; "),
        });
    }
    Ok(found)
}
