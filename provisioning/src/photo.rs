//! A photo or screenshot as a greyscale raster, for the QR reader ([`crate::qr`]).
//!
//! PNG is read with the `png` crate (every colour type and bit depth, palette and
//! 16-bit expanded, transparency laid over white), JPEG (baseline and progressive)
//! with `zune-jpeg`, asking it for luma directly. Pictures larger than the detector
//! needs are shrunk by an integer factor, each output pixel the mean of its block.
//!
//! Why not the `image` crate, which wraps these same two decoders: its `DynamicImage`
//! is generic over a dozen pixel types, and converting and resampling one instantiates
//! code for each of them. On the box that was most of what the photo upload added to
//! `branchd` (see BENCHMARKS.md, "ARM builds"); greyscale is all the QR reader wants,
//! and the conversion and block mean below are a few lines. `image` is still used where
//! size does not matter: `branch-prov` renders PNGs with it, and tests draw with it.

use std::io::Cursor;

use crate::error::{Error, Result};

/// Largest picture accepted, per side.
pub const MAX_SIDE: u32 = 8192;
/// Most memory a decoder may allocate for one picture.
const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// An 8-bit greyscale raster, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grey {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `width * height` luma values, 0 black to 255 white.
    pub pixels: Vec<u8>,
}

impl Grey {
    /// The pixel at (`x`, `y`).
    pub fn at(&self, x: u32, y: u32) -> u8 {
        self.pixels[(y as usize) * (self.width as usize) + x as usize]
    }

    /// Shrinks the raster so neither side exceeds `side` (an integer factor, each new
    /// pixel the mean of the block it covers; a partial block at the right or bottom
    /// edge averages what it has). A raster already small enough is returned as is.
    pub fn shrink_to(self, side: u32) -> Grey {
        let longest = self.width.max(self.height);
        if longest <= side || side == 0 {
            return self;
        }
        let f = longest.div_ceil(side);
        let (w, h) = (self.width.div_ceil(f), self.height.div_ceil(f));
        let mut sums = vec![0u32; (w as usize) * (h as usize)];
        let mut counts = vec![0u32; (w as usize) * (h as usize)];
        for y in 0..self.height {
            let row = &self.pixels[(y as usize) * (self.width as usize)..][..self.width as usize];
            let out_row = ((y / f) as usize) * (w as usize);
            for (x, &v) in row.iter().enumerate() {
                let i = out_row + x / f as usize;
                sums[i] += u32::from(v);
                counts[i] += 1;
            }
        }
        let pixels = sums
            .iter()
            .zip(&counts)
            .map(|(&s, &n)| ((s + n / 2) / n) as u8)
            .collect();
        Grey {
            width: w,
            height: h,
            pixels,
        }
    }
}

/// Reads a PNG or JPEG (told apart by their signatures) into greyscale. Refuses other
/// formats, pictures over [`MAX_SIDE`] per side, and broken or truncated files, each
/// with an [`Error::Image`] saying which.
pub fn decode(bytes: &[u8]) -> Result<Grey> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes)
    } else {
        Err(Error::Image(
            "not a PNG or JPEG picture (unrecognised file signature)".to_owned(),
        ))
    }
}

fn too_big(width: u32, height: u32) -> Option<Error> {
    (width > MAX_SIDE || height > MAX_SIDE).then(|| {
        Error::Image(format!(
            "picture is {width}x{height} pixels; at most {MAX_SIDE} per side is accepted"
        ))
    })
}

fn decode_png(bytes: &[u8]) -> Result<Grey> {
    let bad = |e: png::DecodingError| Error::Image(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODE_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(bad)?;
    if let Some(e) = too_big(header.width, header.height) {
        return Err(e);
    }
    let mut reader = decoder.read_info().map_err(bad)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::Image("PNG: picture too large to hold in memory".to_owned()))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(frame.buffer_size());
    let (width, height) = (frame.width, frame.height);
    let pixels = match frame.color_type {
        png::ColorType::Grayscale => buf,
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .map(|p| over_white(p[0], p[1]))
            .collect(),
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .map(|p| over_white(luma(p[0], p[1], p[2]), p[3]))
            .collect(),
        // EXPAND turns palette pictures into RGB(A); one left indexed is a decoder bug.
        png::ColorType::Indexed => {
            return Err(Error::Image(
                "PNG: palette picture was not expanded".to_owned(),
            ))
        }
    };
    Ok(Grey {
        width,
        height,
        pixels,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Grey> {
    let bad = |e: zune_jpeg::errors::DecodeErrors| Error::Image(format!("JPEG: {e}"));
    let options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_max_width(MAX_SIDE as usize + 1)
        .set_max_height(MAX_SIDE as usize + 1)
        .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::Luma);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_jpeg::zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder.decode_headers().map_err(bad)?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| Error::Image("JPEG: no frame header".to_owned()))?;
    let (width, height) = (w as u32, h as u32);
    if let Some(e) = too_big(width, height) {
        return Err(e);
    }
    let pixels = decoder.decode().map_err(bad)?;
    let components = decoder
        .output_colorspace()
        .map_or(1, |c| c.num_components());
    let pixels = match components {
        1 => pixels,
        3 => pixels
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        4 => pixels
            .chunks_exact(4)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        n => {
            return Err(Error::Image(format!(
                "JPEG: decoded to {n} components per pixel, expected 1, 3 or 4"
            )))
        }
    };
    if pixels.len() != (width as usize) * (height as usize) {
        return Err(Error::Image(format!(
            "JPEG: {} pixels decoded for a {width}x{height} picture",
            pixels.len()
        )));
    }
    Ok(Grey {
        width,
        height,
        pixels,
    })
}

/// Luma of an sRGB pixel, Rec. 709 weights (as `image`'s conversion), in integers.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((2126 * u32::from(r) + 7152 * u32::from(g) + 722 * u32::from(b) + 5000) / 10_000) as u8
}

/// A grey value with coverage `alpha` laid over white paper.
fn over_white(v: u8, alpha: u8) -> u8 {
    let a = u32::from(alpha);
    ((u32::from(v) * a + 255 * (255 - a) + 127) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(img: image::DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn every_png_colour_type_reads_to_the_same_grey() {
        let grey = image::GrayImage::from_fn(7, 5, |x, y| image::Luma([(x * 30 + y * 7) as u8]));
        let want = grey.as_raw().clone();
        let variants = [
            image::DynamicImage::ImageLuma8(grey.clone()),
            image::DynamicImage::ImageLuma8(grey.clone())
                .to_luma16()
                .into(),
            image::DynamicImage::ImageLuma8(grey.clone())
                .to_luma_alpha8()
                .into(),
            image::DynamicImage::ImageLuma8(grey.clone())
                .to_rgb8()
                .into(),
            image::DynamicImage::ImageLuma8(grey.clone())
                .to_rgba8()
                .into(),
            image::DynamicImage::ImageLuma8(grey.clone())
                .to_rgb16()
                .into(),
        ];
        for img in variants {
            let kind = format!("{:?}", img.color());
            let got = decode(&png_of(img)).unwrap();
            assert_eq!((got.width, got.height), (7, 5), "{kind}");
            for (g, w) in got.pixels.iter().zip(&want) {
                assert!(g.abs_diff(*w) <= 1, "{kind}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn transparency_is_laid_over_white() {
        let img = image::RgbaImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgba([0, 0, 0, 0])
            } else {
                image::Rgba([0, 0, 0, 255])
            }
        });
        let got = decode(&png_of(img.into())).unwrap();
        assert_eq!(got.pixels, vec![255, 0]);
    }

    #[test]
    fn jpeg_colour_and_grey_read_as_luma() {
        let rgb = image::RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                image::Rgb([250, 250, 250])
            } else {
                image::Rgb([10, 10, 10])
            }
        });
        for img in [
            image::DynamicImage::ImageRgb8(rgb.clone()),
            image::DynamicImage::ImageRgb8(rgb).to_luma8().into(),
        ] {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
            let got = decode(out.get_ref()).unwrap();
            assert_eq!((got.width, got.height), (32, 16));
            assert!(got.at(2, 8) > 230, "light half: {}", got.at(2, 8));
            assert!(got.at(29, 8) < 30, "dark half: {}", got.at(29, 8));
        }
    }

    #[test]
    fn bad_pictures_are_refused_with_the_reason() {
        let png = png_of(image::DynamicImage::ImageLuma8(image::GrayImage::new(4, 4)));
        let cases: [(&[u8], &str); 4] = [
            (b"GIF89a....", "not a PNG or JPEG"),
            (&png[..png.len() / 2], "PNG"),
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J'], "JPEG"),
            (b"", "not a PNG or JPEG"),
        ];
        for (bytes, want) in cases {
            let e = decode(bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // A header claiming a picture over the side limit is refused before decoding.
        let mut huge = png.clone();
        huge[16..20].copy_from_slice(&(MAX_SIDE + 1).to_be_bytes());
        // The IHDR checksum no longer matches; fix it so only the size is wrong.
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode(&huge).unwrap_err().to_string();
        assert!(e.contains("at most 8192"), "{e}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn shrinking_takes_block_means_and_keeps_small_pictures() {
        let g = Grey {
            width: 5,
            height: 3,
            pixels: vec![
                0, 100, 200, 50, 10, 20, 30, 40, 60, 70, 255, 255, 255, 255, 255,
            ],
        };
        assert_eq!(g.clone().shrink_to(5), g);
        let s = g.shrink_to(2);
        // Factor 3: blocks of 3x3, the right block 2 columns wide.
        assert_eq!((s.width, s.height), (2, 1));
        let left = (100 + 200 + 20 + 30 + 40 + 255 * 3) as f64 / 9.0;
        let right = (50 + 10 + 60 + 70 + 255 * 2) as f64 / 6.0;
        assert_eq!(s.pixels, vec![left.round() as u8, right.round() as u8]);
    }
}
