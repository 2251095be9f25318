//! Tests of the box-side sync cores.

mod codec;
mod upload;
mod upload_model;
