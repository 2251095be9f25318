//! `branchd`, the Branchline gateway daemon, as a library (the binary only parses
//! arguments, loads the config and calls [`daemon::run`]).
//!
//! # Modules
//!
//! - [`config`]: `branchd.toml`, raw serde structs validated into [`config::Config`].
//! - [`store`]: the SQLite store (WAL, migrations, one writer thread) with CDRs and the outbox.
//! - [`cdr`]: call detail records as produced by call control and kept by the store.
//! - [`tones`]: per-country tones and ring cadences (ITU-T E.180) and caller-ID modes.
//! - [`call`]: call control, a sans-IO state machine over board events and timers.
//! - [`daemon`]: the tokio edge: board driver task, store writer, shutdown.
#![forbid(unsafe_code)]

pub mod call;
pub mod cdr;
pub mod config;
pub mod daemon;
pub mod error;
pub mod store;
pub mod tones;
