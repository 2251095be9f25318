//! Tests of the box-side sync cores.

mod codec;
