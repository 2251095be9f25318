//! See the crate docs (module under construction for issue 3).
