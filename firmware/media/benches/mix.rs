//! Criterion benchmark of the conference mixer: one 20 ms tick (push every member's
//! frame, mix every member's output) for 8 and 32 talkers, and 32 members of which one
//! listens and one whispers.
//!
//! `cargo bench -p branchline-media --bench mix`

use std::hint::black_box;

use branchline_board::dsp::SineGenerator;
use branchline_media::mix::{Frame, Mixer, Role, FRAME_SAMPLES};
use criterion::{criterion_group, criterion_main, Criterion};

fn frames(n: usize) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let mut g = SineGenerator::new(300.0 + 50.0 * i as f64, 6000);
            let mut f = [0i16; FRAME_SAMPLES];
            for s in f.iter_mut() {
                *s = g.next_sample();
            }
            f
        })
        .collect()
}

fn tick(c: &mut Criterion, name: &str, roles: Vec<Role<u16>>) {
    let n = roles.len();
    let input = frames(n);
    let mut mixer = Mixer::new(n);
    // Everyone joins as a talker first, so whisper targets are members.
    for k in 0..n as u16 {
        mixer.join(k, Role::Talker).expect("join");
    }
    for (k, role) in (0..n as u16).zip(roles) {
        mixer.set_role(k, role).expect("role");
    }
    let mut out = Vec::with_capacity(n);
    c.bench_function(name, |b| {
        b.iter(|| {
            for (k, f) in (0..n as u16).zip(&input) {
                mixer.push(k, black_box(f)).expect("push");
            }
            mixer.mix_into(&mut out);
            black_box(&out);
        })
    });
}

fn bench(c: &mut Criterion) {
    tick(c, "mix tick, 8 talkers", vec![Role::Talker; 8]);
    tick(c, "mix tick, 32 talkers", vec![Role::Talker; 32]);
    let mut roles = vec![Role::Talker; 32];
    roles[30] = Role::Listener;
    roles[31] = Role::Whisperer { to: 0 };
    tick(c, "mix tick, 30 talkers + listener + whisperer", roles);
}

criterion_group!(benches, bench);
criterion_main!(benches);
