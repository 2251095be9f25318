//! Integration tests of `branch-hq`: the real server (library `run`) on 127.0.0.1:0
//! with real TLS, against SQLite in a temp dir and PostgreSQL at 127.0.0.1:5432 (each
//! test creates and drops its own database; an unreachable PostgreSQL fails the
//! test). Every scenario runs on both stores.
#![cfg(feature = "hq")]

mod hq {
    mod crm_tests;
    mod enroll_tests;
    pub mod harness;
    mod ingest_tests;
    mod renewal_tests;
    mod sync_tests;
    mod tls_tests;
}
