//! Tests of the box-side sync cores.

mod codec;
mod download;
mod download_model;
mod upload;
mod upload_model;
