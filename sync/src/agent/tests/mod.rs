//! Tests of the box-side sync cores.

mod codec;
mod download;
mod upload;
mod upload_model;
