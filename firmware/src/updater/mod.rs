//! Updates through HQ, the box side (issue 9 item 5): poll HQ's offer along the sync
//! loop, download the bundle in resumable chunks, check its sha256, wait for the
//! maintenance window and for calls to end (unless HQ forced the offer), install into
//! the inactive slot with `branchline_image`, report the outcome.
//!
//! - [`core`]: the sans-IO state machine (every decision, on a virtual clock).
//! - [`io`]: the download files (resume from the `.part` length, fsync, sha256,
//!   rename), the install into the inactive slot, HQ's update endpoints.
//! - [`task`]: the task running the core against HQ (poll, act, window, calls).
//! - [`window`]: the maintenance window (`[update] window`, UTC).

pub mod core;
pub mod io;
pub mod task;
pub mod window;

pub use window::Window;
