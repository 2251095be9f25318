//! Codec throughput: audio frames are 50 per second per direction per port, so the
//! daemon side wants encode + decode of a 20 ms G.711 frame well under a microsecond
//! (target: at least 2 M audio frames per second per core).
//!
//! `cargo bench -p branchline-line-proto --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use line_proto::g711::Law;
use line_proto::{
    decode, encode, Audio, Body, CallerId, Deframer, Event, Frame, AUDIO_FRAME_LEN, MAX_WIRE_FRAME,
};

/// A 20 ms frame of speech-like µ-law: a 440 Hz tone with some zero codes in it, so COBS
/// has blocks to split (µ-law 0x00 is the most negative code).
fn audio_frame() -> Frame {
    let samples = core::array::from_fn(|i| {
        let t = i as f64 / 8000.0;
        let s = (t * 440.0 * core::f64::consts::TAU).sin() * 12000.0;
        let code = Law::Ulaw.encode(s as i16);
        if i % 37 == 0 {
            0
        } else {
            code
        }
    });
    Frame {
        port: 1,
        seq: 42,
        body: Body::Audio(Audio {
            law: Law::Ulaw,
            samples,
        }),
    }
}

fn event_frame() -> Frame {
    let mut cid = CallerId::new("+442079460000", "Branch Office").expect("valid caller ID");
    cid.time = Some(line_proto::callerid::CallerIdTime {
        month: 3,
        day: 14,
        hour: 9,
        minute: 26,
    });
    Frame {
        port: 5,
        seq: 7,
        body: Body::Event(Event::RingDetected {
            caller_id: Some(cid),
        }),
    }
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = [0u8; MAX_WIRE_FRAME];
    let n = encode(frame, &mut out).expect("encodes");
    out[..n].to_vec()
}

fn frames(c: &mut Criterion) {
    let audio = audio_frame();
    let audio_wire = encoded(&audio);
    let event = event_frame();
    let event_wire = encoded(&event);

    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));

    g.bench_function("encode_audio_frame", |b| {
        let mut out = [0u8; MAX_WIRE_FRAME];
        b.iter(|| encode(black_box(&audio), &mut out).expect("encodes"))
    });

    g.bench_function("decode_audio_frame", |b| {
        b.iter(|| decode(black_box(&audio_wire)).expect("decodes"))
    });

    g.bench_function("encode_decode_audio_frame", |b| {
        let mut out = [0u8; MAX_WIRE_FRAME];
        b.iter(|| {
            let n = encode(black_box(&audio), &mut out).expect("encodes");
            decode(black_box(&out[..n])).expect("decodes")
        })
    });

    g.bench_function("deframer_audio_frame", |b| {
        let mut d = Deframer::new();
        b.iter(|| {
            let mut got = None;
            for &byte in black_box(&audio_wire[..]) {
                if let Some(r) = d.feed(byte) {
                    got = Some(r);
                }
            }
            got.expect("one frame per pass").expect("valid")
        })
    });

    g.bench_function("decode_event_frame", |b| {
        b.iter(|| decode(black_box(&event_wire)).expect("decodes"))
    });
    g.finish();
}

fn g711(c: &mut Criterion) {
    let pcm: [i16; AUDIO_FRAME_LEN] = core::array::from_fn(|i| {
        let t = i as f64 / 8000.0;
        ((t * 1004.0 * core::f64::consts::TAU).sin() * 20000.0) as i16
    });
    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(AUDIO_FRAME_LEN as u64));
    for (name, law) in [("ulaw", Law::Ulaw), ("alaw", Law::Alaw)] {
        let mut codes = [0u8; AUDIO_FRAME_LEN];
        law.encode_block(&pcm, &mut codes);
        g.bench_function(format!("g711_{name}_encode_160"), |b| {
            let mut out = [0u8; AUDIO_FRAME_LEN];
            b.iter(|| {
                law.encode_block(black_box(&pcm), &mut out);
                out
            })
        });
        g.bench_function(format!("g711_{name}_decode_160"), |b| {
            let mut out = [0i16; AUDIO_FRAME_LEN];
            b.iter(|| {
                law.decode_block(black_box(&codes), &mut out);
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frames, g711);
criterion_main!(benches);
