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
use std::hint::black_box;
use std::time::Instant;

use branchline_sip::message::{self, Limits};

#[path = "support/invite.rs"]
mod invite;
use invite::INVITE;

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("iteration count"))
        .unwrap_or(200_000);
    let limits = Limits::default();
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
