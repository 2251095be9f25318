//! The body codec of [`UP_PATH`](crate::wire::UP_PATH): an [`UpBatch`] as gzip-compressed
//! JSON, and the bounded decoder HQ uses to read it back.
//!
//! Both are pure functions over bytes. [`decode_batch`] never allocates more than its
//! `max_inflated` limit for the inflated JSON (plus one fixed 16 KiB read buffer), so a
//! small "gzip bomb" cannot make HQ allocate gigabytes: it is refused with
//! [`DecodeError::TooLarge`] as soon as the inflated stream passes the limit.
//!
//! gzip (flate2 with the pure-Rust miniz_oxide backend) rather than zstd: a realistic
//! batch of CDRs compresses to well under the 120 bytes per CDR target with gzip (see
//! the `bytes_per_cdr` test), gzip is what `Content-Encoding: gzip` means to every HTTP
//! tool an HQ operator will use to inspect traffic, and it needs no C library on the
//! box.

use std::io::{BufRead, Read, Write};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::wire::UpBatch;

/// Why an [`UP_PATH`](crate::wire::UP_PATH) body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a valid gzip stream (bad header, corrupt data, bad CRC or
    /// length trailer, truncated).
    #[error("batch body is not valid gzip after {inflated} inflated bytes: {source}")]
    Gzip {
        /// Bytes inflated before the error.
        inflated: usize,
        /// What the gzip decoder reported.
        #[source]
        source: std::io::Error,
    },
    /// The body inflates to more than the limit.
    #[error("batch body inflates beyond the limit of {limit} bytes")]
    TooLarge {
        /// The limit passed to [`decode_batch`].
        limit: usize,
    },
    /// Bytes follow the end of the gzip stream (a second member or garbage).
    #[error("{trailing} bytes follow the end of the gzip stream")]
    TrailingData {
        /// How many bytes follow the stream.
        trailing: usize,
    },
    /// The inflated body is not an [`UpBatch`] as JSON.
    #[error("batch body is not a valid batch: {source}")]
    Json {
        /// What serde_json reported (line, column, field).
        #[source]
        source: serde_json::Error,
    },
}

/// The gzip level of [`encode_batch`]: the fastest. A catch-up after an outage
/// spends most of the box's time per batch compressing; level 1 costs a fraction of
/// the default level 6's time and still keeps a CDR far under the 120 bytes per CDR
/// target on the wire (see BENCHMARKS.md, "Catch-up after an outage").
pub const GZIP_LEVEL: u32 = 1;

/// Serializes `batch` as JSON and compresses it with gzip (the body of a `POST` to
/// [`UP_PATH`](crate::wire::UP_PATH) with `Content-Encoding: gzip`).
pub fn encode_batch(batch: &UpBatch) -> Vec<u8> {
    let encoder = GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL));
    // serde_json writes token by token; the buffer hands the compressor large
    // blocks instead of thousands of few-byte writes.
    let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, encoder);
    // None of these steps can fail: the writer is a Vec (writes never fail), and
    // every type in an UpBatch serializes without error (string map keys only;
    // serde_json::Value cannot hold a NaN).
    serde_json::to_writer(&mut buffered, batch).expect("serializing an UpBatch into a Vec");
    let encoder = buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .expect("flushing into a Vec");
    encoder.finish().expect("finishing gzip into a Vec")
}

/// The JSON size of `batch` before compression, in bytes (what HQ compares with
/// [`MAX_UP_BODY_INFLATED`](crate::wire::MAX_UP_BODY_INFLATED)).
pub fn inflated_len(batch: &UpBatch) -> usize {
    json_len(batch)
}

/// Inflates a gzip `body` and parses the [`UpBatch`] in it, refusing a body that
/// inflates to more than `max_inflated` bytes (HQ passes
/// [`MAX_UP_BODY_INFLATED`](crate::wire::MAX_UP_BODY_INFLATED)).
///
/// Only decodes: the batch's content (version, box, seq order, record count) is the
/// caller's to validate.
pub fn decode_batch(body: &[u8], max_inflated: usize) -> Result<UpBatch, DecodeError> {
    let json = gunzip_limited(body, max_inflated)?;
    serde_json::from_slice(&json).map_err(|source| DecodeError::Json { source })
}

/// Inflates a single-member gzip `body` into at most `max_inflated` bytes.
///
/// The output buffer grows geometrically but its capacity never exceeds
/// `max_inflated`; the stream is read in 16 KiB steps, so at most that much is
/// inflated past the limit before the body is refused.
pub fn gunzip_limited(body: &[u8], max_inflated: usize) -> Result<Vec<u8>, DecodeError> {
    const STEP: usize = 16 * 1024;
    let mut decoder = GzDecoder::new(body);
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).min(max_inflated));
    let mut chunk = [0u8; STEP];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(DecodeError::Gzip {
                    inflated: out.len(),
                    source,
                })
            }
        };
        let needed = out.len() + n;
        if needed > max_inflated {
            return Err(DecodeError::TooLarge {
                limit: max_inflated,
            });
        }
        if needed > out.capacity() {
            let target = needed
                .max(out.capacity().saturating_mul(2))
                .min(max_inflated);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    let mut rest = decoder.into_inner();
    let trailing = rest.fill_buf().map_or(0, <[u8]>::len);
    if trailing > 0 {
        return Err(DecodeError::TrailingData { trailing });
    }
    Ok(out)
}

/// A writer that only counts bytes.
struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON size of any serializable value, in bytes, without allocating it.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value).expect("serializing wire types into a counter");
    counter.0
}
