//! Parse throughput: bytes of a typical INVITE with SDP to an `rsip::SipMessage` plus
//! the transaction key (branch, method, Call-ID, CSeq), as the UDP receive path does;
//! and parse + dispatch: the endpoint's whole inbound path for new INVITEs up to the
//! transaction user (guard, rport, a new server transaction, its event, the dialog
//! layer's verdict).
//!
//! `cargo bench -p branchline-sip --bench parse`; the per-core figure is
//! 1 / (time per element).
use std::hint::black_box;
use std::time::Instant;

use branchline_sip::message::{self, Limits};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[path = "support/invite.rs"]
mod invite;
use invite::INVITE;
#[path = "support/dispatch.rs"]
mod dispatch;
use dispatch::{dispatch, distinct_invites, fresh_layers};

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let bytes = INVITE.as_bytes();
    // The fixture must be what it claims: a valid message with the body it announces.
    let parsed = message::parse(bytes, &limits).expect("benchmark INVITE parses");
    assert_eq!(parsed.body().len(), 234);

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("invite_with_sdp+transaction_key", |b| {
        b.iter(|| {
            let msg = message::parse(black_box(bytes), &limits).expect("parses");
            let key = message::transaction_fields(&msg).expect("has a key");
            black_box((key.branch.len(), key.method, key.call_id.len(), key.cseq));
        })
    });
    group.bench_function("frame_stream", |b| {
        b.iter(|| message::frame_stream(black_box(bytes), &limits).expect("frames"))
    });
    group.bench_function("serialize", |b| {
        b.iter(|| message::serialize(black_box(&parsed)))
    });
    group.finish();
}

fn bench_dispatch(c: &mut Criterion) {
    let limits = Limits::default();
    let invites = distinct_invites();
    let now = Instant::now();
    dispatch::check(&invites, &limits, now);

    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(invites.len() as u64));
    group.sample_size(20);
    group.bench_function("new_invites_to_the_tu", |b| {
        b.iter_batched(
            fresh_layers,
            |mut layers| {
                for (bytes, source) in &invites {
                    black_box(dispatch(bytes, *source, &limits, now, &mut layers));
                }
                layers
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench, bench_dispatch);
criterion_main!(benches);
