//! Parse throughput: bytes of a typical INVITE with SDP to an `rsip::SipMessage` plus
//! the transaction key (branch, method, Call-ID, CSeq), as the UDP receive path does.
//!
//! `cargo bench -p branchline-sip --bench parse`; the per-core figure is
//! 1 / (time per iteration).
use std::hint::black_box;

use branchline_sip::message::{self, Limits};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const INVITE: &str = "INVITE sip:201@branch.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---4f1a2b3c4d5e6f70;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:100@192.0.2.10:5060;transport=udp>\r\n\
To: <sip:201@branch.example.com>\r\n\
From: \"Front Desk\" <sip:100@branch.example.com>;tag=a1b2c3d4\r\n\
Call-ID: 7f3e9a1c-2b4d-4e5f-8a6b-1c2d3e4f5a6b@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, norefersub, timer\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 234\r\n\
\r\n\
v=0\r\n\
o=- 3917416829 3917416829 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

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

criterion_group!(benches, bench);
criterion_main!(benches);
