//! Call recording cost: 32 simultaneous stereo recordings (issue 6 target: under 5% of
//! one core spent writing).
//!
//! One iteration runs the real recorder (writer thread, taps, files on the disk under
//! `$TMPDIR`, header updates every second of audio, fdatasync every 2 s, final fsync,
//! rename and sha256) for 32 port-to-port recordings of 10 s of audio each: 500 frames
//! of 20 ms from each of the 64 ports, handed over as fast as the writer takes them.
//! The time of an iteration is what 10 s of 32 recordings cost; divided by 500 it is
//! the cost of one 20 ms tick of 32 recordings, and divided by 10 s the share of one
//! core (`scripts`-free: BENCHMARKS.md shows the arithmetic). That time includes the
//! writes' fsyncs; after the criterion group the bench also prints the writer's own
//! CPU time per 10 s (process CPU minus the feeding thread's, from `/proc`), the
//! figure the target is about.

use std::time::{Duration, Instant};

use branchline_firmware::recorder::guard::Statvfs;
use branchline_firmware::recorder::{Layout, Recorder, Side, FRAME_QUEUE};
use criterion::{criterion_group, criterion_main, Criterion};
use line_proto::g711::Law;
use line_proto::Audio;

const RECORDINGS: u8 = 32;
const FRAMES: usize = 500;

fn frames() -> Vec<Audio> {
    // A 1 kHz-ish tone, µ-law: realistic bytes for the decoder (a constant would be as fast).
    (0..8)
        .map(|k| {
            let mut samples = [0u8; 160];
            for (i, s) in samples.iter_mut().enumerate() {
                let t = (k * 160 + i) as f64 / 8000.0;
                let v = (t * 1000.0 * std::f64::consts::TAU).sin() * 8000.0;
                *s = Law::Ulaw.encode(v as i16);
            }
            Audio {
                law: Law::Ulaw,
                samples,
            }
        })
        .collect()
}

fn ten_seconds_of_32(dir: &std::path::Path, audio: &[Audio]) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let (mut recorder, thread) =
        Recorder::spawn(dir.to_owned(), 16 << 20, Box::new(Statvfs), tx).expect("recorder");
    let tap = recorder.tap();
    for r in 0..RECORDINGS {
        let (a, b) = (2 * r, 2 * r + 1);
        recorder.start(a, Layout::ports(a, b));
    }
    for f in 0..FRAMES {
        let frame = &audio[f % audio.len()];
        for port in 0..2 * RECORDINGS {
            tap.frame(port, Side::FromPort, frame);
        }
        // Keep within the tap's bound: the writer is a thread of its own, and a real
        // call hands it one frame per port every 20 ms, not 500 at once.
        while tap.queued_frames() > FRAME_QUEUE / 2 {
            std::thread::yield_now();
        }
    }
    for r in 0..RECORDINGS {
        recorder.stop(2 * r, Some(format!("bench-{r}")));
    }
    let dropped = recorder.stats().dropped_frames;
    drop((recorder, tap));
    thread.join().expect("writer thread");
    let took = start.elapsed();
    let mut done = 0;
    while let Ok(rec) = rx.try_recv() {
        let _ = std::fs::remove_file(&rec.path);
        done += 1;
    }
    assert_eq!(done, usize::from(RECORDINGS), "every recording finished");
    assert_eq!(
        dropped, 0,
        "frames dropped: the measurement would flatter the writer"
    );
    took
}

/// User + system CPU time of `/proc/<path>/stat` (this process, or this thread), in
/// clock ticks of 10 ms (USER_HZ is 100 on Linux); a process's figure includes its
/// threads that have ended.
fn cpu_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("stat");
    // Fields after the command name (which may hold spaces): state is the first,
    // utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The writer's CPU time for 10 s of 32 recordings, as a share of one core: the
/// process's CPU time over a run minus the feeding thread's own (which spins while the
/// writer's queue is full), over 5 runs.
fn writer_cpu_share(dir: &std::path::Path, audio: &[Audio]) {
    const RUNS: u64 = 5;
    let (process, feeder) = (
        cpu_ticks("/proc/self/stat"),
        cpu_ticks("/proc/thread-self/stat"),
    );
    for _ in 0..RUNS {
        ten_seconds_of_32(dir, audio);
    }
    let process = cpu_ticks("/proc/self/stat") - process;
    let feeder = cpu_ticks("/proc/thread-self/stat") - feeder;
    let writer_ms = (process.saturating_sub(feeder) * 10) as f64 / RUNS as f64;
    println!(
        "recording writer CPU: {writer_ms:.0} ms per 10 s of 32 stereo recordings = {:.2}% of one core (feeder {} ms per run)",
        writer_ms / 10_000.0 * 100.0,
        feeder * 10 / RUNS
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let audio = frames();
    let mut group = c.benchmark_group("recording");
    group.sample_size(10);
    group.bench_function("32 stereo recordings, 10 s of audio", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| ten_seconds_of_32(dir.path(), &audio))
                .sum()
        })
    });
    group.finish();
    writer_cpu_share(dir.path(), &audio);
}

criterion_group!(benches, bench);
criterion_main!(benches);
