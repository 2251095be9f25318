//! The box side of sync, as sans-IO cores the firmware's sync task drives.
//!
//! # Modules
//!
//! - [`codec`]: the gzip JSON body of an upload ([`encode_batch`], and [`decode_batch`]
//!   with an inflation limit, which HQ uses).
//!
//! The uploader, downloader, backoff and status cores follow in this module.

pub mod backoff;
pub mod codec;

pub use codec::{decode_batch, encode_batch, DecodeError};

#[cfg(test)]
mod tests;
