//! Criterion benchmarks of the per-frame media work: jitter buffer push+pop, G.711
//! PLC, in-band DTMF detection, RTP parsing.
//!
//! `cargo bench -p branchline-media --bench media`

use std::hint::black_box;
use std::time::{Duration, Instant};

use branchline_board::dsp::SineGenerator;
use branchline_media::dtmf::InbandDetector;
use branchline_media::jitter::{JitterBuffer, JitterConfig};
use branchline_media::plc::Plc;
use branchline_media::rtp::{parse, PayloadMap, RtpHeader, MAX_PACKET, PT_PCMU};
use criterion::{criterion_group, criterion_main, Criterion};

fn packet(seq: u16) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_PACKET];
    let n = RtpHeader {
        payload_type: PT_PCMU,
        marker: seq == 0,
        seq,
        timestamp: u32::from(seq).wrapping_mul(160),
        ssrc: 0x1234,
    }
    .write(&[0x35; 160], &mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

fn bench_jitter(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..=u16::MAX).map(packet).collect();
    c.bench_function("jitter push+pop 20 ms (adaptive, in order)", |b| {
        let mut jb = JitterBuffer::new(JitterConfig::default(), PayloadMap::default());
        let t0 = Instant::now();
        let mut i: u64 = 0;
        b.iter(|| {
            let now = t0 + Duration::from_millis(20 * i);
            let p = parse(&packets[(i & 0xFFFF) as usize]).unwrap();
            black_box(jb.push(now, &p).unwrap());
            black_box(jb.pop(now + Duration::from_millis(5)));
            i += 1;
        });
    });
    c.bench_function("jitter push+pop 20 ms (reordered pairs, 2% loss)", |b| {
        let mut jb = JitterBuffer::new(JitterConfig::default(), PayloadMap::default());
        let t0 = Instant::now();
        let mut i: u64 = 0;
        b.iter(|| {
            let now = t0 + Duration::from_millis(20 * i);
            let seq = if i % 2 == 0 { i + 1 } else { i - 1 };
            if i % 50 != 7 {
                let p = parse(&packets[(seq & 0xFFFF) as usize]).unwrap();
                black_box(jb.push(now, &p).unwrap());
            }
            black_box(jb.pop(now + Duration::from_millis(5)));
            i += 1;
        });
    });
}

fn bench_plc(c: &mut Criterion) {
    let mut g = SineGenerator::new(180.0, 8000);
    let mut speech = [0i16; 160];
    c.bench_function("plc conceal 20 ms after 20 ms good", |b| {
        let mut plc = Plc::new();
        b.iter(|| {
            g.fill(&mut speech);
            plc.good(&mut speech);
            let mut out = [0i16; 160];
            plc.conceal(&mut out);
            black_box(out);
        });
    });
}

fn bench_dtmf(c: &mut Criterion) {
    let mut g = SineGenerator::new(941.0, 6000);
    let mut h = SineGenerator::new(1336.0, 6000);
    let mut frames = Vec::new();
    for _ in 0..50 {
        let mut a = [0i16; 160];
        let mut b = [0i16; 160];
        g.fill(&mut a);
        h.fill(&mut b);
        frames.push(std::array::from_fn::<i16, 160, _>(|i| {
            a[i].saturating_add(b[i])
        }));
    }
    c.bench_function("in-band DTMF detect per 20 ms frame", |b| {
        let mut d = InbandDetector::default();
        let mut i = 0;
        b.iter(|| {
            d.process(black_box(&frames[i % frames.len()]));
            while d.poll_event().is_some() {}
            i += 1;
        });
    });
}

fn bench_rtp(c: &mut Criterion) {
    let p = packet(7);
    c.bench_function("rtp parse 172 bytes", |b| {
        b.iter(|| black_box(parse(black_box(&p)).unwrap()))
    });
}

criterion_group!(benches, bench_jitter, bench_plc, bench_dtmf, bench_rtp);
criterion_main!(benches);
