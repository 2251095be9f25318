//! The box's side of sync with HQ (issue 5). The protocol is
//! [`branchline_sync::wire`]; the decisions (batching, trimming, cursor, retries with
//! backoff) are the sans-IO cores of [`branchline_sync::agent`]; this module is their
//! IO edge: the store, HTTPS, tasks.
//!
//! # Modules
//!
//! - [`apply`]: applying what HQ sends down (change-feed pages, snapshots, the rows of
//!   conflicts) in one transaction with the cursor, and the rules for each kind of row
//!   (which rows HQ masters, what the box keeps: the installer, the port map, pending
//!   local edits).
//! - [`state`]: the persisted sync state (`sync_state`: epoch, cursor, acknowledged
//!   seq, last success and error, file policy, WAN states), the outbox backlog, and
//!   carrying out an acknowledgement (conflicts, trim) in one transaction.
//! - [`store`]: [`store::SyncStore`], the agent's handle on the store (bounded outbox
//!   pages from a read connection, writes through the writer thread).
//! - [`client`]: the HTTPS client: rustls with the ring provider, HQ's CA as the only
//!   root, the device certificate for mutual TLS.
//! - [`agent`]: the agent task driving the uploader and downloader cores.
//! - [`files`]: recordings: registering one (row + outbox row in one transaction,
//!   `branchd recording-add`), and the task driving the file uploader core (local
//!   file checks, chunks over the agent's client, `uploaded_at_ms`).
//! - [`wan`]: the WAN monitor task driving `branchline_sync::wan::WanMonitor` with
//!   real probes of HQ and the trunk, its published states, the WAN LED rule and the
//!   trunk status call routing reads.
//! - [`status`]: the sync status report (`GET /api/v1/sync`, `branchd sync-status`)
//!   and [`status::SyncHandle`] (live status, force).
//!
//! # Epoch
//!
//! Outbox seqs are unique per store incarnation: migration 0003 makes a random epoch
//! when the store is created, and every batch names it. A factory reset deletes the
//! database, so the next start makes a new epoch and HQ keeps the old seqs apart.
//!
//! # Limits
//!
//! Uploaded recording files stay on the box (no retention yet); an outbox row
//! too large for any batch stops uploads (no quarantine table); HQ's extension names
//! reach call control at the next start; the trunk probe is TCP/UDP reachability, not
//! SIP OPTIONS.

pub mod agent;
pub mod apply;
pub mod client;
pub mod files;
pub mod state;
pub mod status;
pub mod store;
#[cfg(test)]
mod tests;
pub mod wan;
