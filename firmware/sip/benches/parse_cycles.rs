//! A fixed number of parse + transaction-key iterations, to be counted with
//! `perf stat -e instructions:u,cycles:u`: unlike criterion's wall-clock figures, user
//! cycles and instructions per iteration do not grow when the machine is shared (the
//! process is not charged while it waits for a CPU).
//!
//! ```text
//! cargo bench -p branchline-sip --bench parse_cycles --no-run
//! perf stat -e instructions:u,cycles:u target/release/deps/parse_cycles-<hash> 200000
//! ```
//!
//! Divide the counts by the iteration count (the argument, default 200,000); the set-up
//! (one parse to check the fixture) is negligible. Also prints the wall time per
//! iteration, which is only meaningful on an idle machine.
//!
//! With `dispatch` after the count (`parse_cycles-<hash> 200000 dispatch`) each
//! iteration is one new INVITE through parse + dispatch (`support/dispatch.rs`), in
//! batches of 4,096 distinct INVITEs on fresh layers; the count is rounded up to
//! whole batches and the batches' set-up and drop are counted too (the fixture check,
//! one batch, is not: subtract a run with count 0).
use std::hint::black_box;
use std::time::Instant;

use branchline_sip::message::{self, Limits};

#[path = "support/invite.rs"]
mod invite;
use invite::INVITE;
#[path = "support/dispatch.rs"]
mod dispatch;

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("iteration count"))
        .unwrap_or(200_000);
    let limits = Limits::default();
    if std::env::args().nth(2).as_deref() == Some("dispatch") {
        dispatch_iterations(iterations, &limits);
        return;
    }
    let bytes = INVITE.as_bytes();
    let parsed = message::parse(bytes, &limits).expect("benchmark INVITE parses");
    assert_eq!(parsed.body().len(), 234);

    let started = Instant::now();
    for _ in 0..iterations {
        let msg = message::parse(black_box(bytes), &limits).expect("parses");
        let key = message::transaction_fields(&msg).expect("has a key");
        black_box((key.branch.len(), key.method, key.call_id.len(), key.cseq));
    }
    let elapsed = started.elapsed();
    println!(
        "{iterations} iterations of parse + transaction key: {:.3} µs each (wall clock)",
        elapsed.as_secs_f64() * 1e6 / iterations as f64
    );
}

/// `iterations` new INVITEs (rounded up to whole batches) through parse + dispatch.
fn dispatch_iterations(iterations: u64, limits: &Limits) {
    let invites = dispatch::distinct_invites();
    let now = Instant::now();
    dispatch::check(&invites, limits, now);
    let batches = iterations.div_ceil(invites.len() as u64);
    let started = Instant::now();
    for _ in 0..batches {
        let mut layers = dispatch::fresh_layers();
        for (bytes, source) in &invites {
            black_box(dispatch::dispatch(bytes, *source, limits, now, &mut layers));
        }
    }
    let elapsed = started.elapsed();
    let done = batches * invites.len() as u64;
    println!(
        "{done} new INVITEs through parse + dispatch: {:.3} µs each (wall clock)",
        elapsed.as_secs_f64() * 1e6 / done.max(1) as f64
    );
}
