//! The box's side of sync with HQ (issue 5).
//!
//! # Modules
//!
//! - [`apply`]: applying what HQ sends down (change-feed pages, snapshots, the rows of
//!   conflicts) in one transaction, with the rules for each kind of row.
//! - [`state`]: the persisted sync state (epoch, cursor, acknowledged seq, last
//!   success and error), the outbox backlog, and handling HQ's acknowledgement.

pub mod agent;
pub mod apply;
pub mod client;
pub mod state;
pub mod status;
pub mod store;
#[cfg(test)]
mod tests;
pub mod wan;
