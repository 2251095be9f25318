//! Daemon benchmarks on the simulated board (not part of `cargo test`; run by
//! `scripts/bench.sh`, figures in BENCHMARKS.md):
//!
//! - start-up: process spawn to "branchd ready", and to dial tone after a lift;
//! - resident memory idle, and with 8 simultaneous calls with audio both ways;
//! - audio path latency FXS to FXS, measured end to end through the simulator.
//!
//! Set `BRANCHD_BIN_DIR` to the directory holding the `branchd` to measure.

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use branchline_board::dsp::tone_ratio;
use harness::{wait, wait_tone, Gateway, DIAL_PLAN, SOON};

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ")".
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn startup() {
    let mut ready = Vec::new();
    let mut dial = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let gw = Gateway::start();
        ready.push(t0.elapsed().as_secs_f64() * 1e3);
        let phone = gw.sim.phone(1);
        phone.off_hook();
        wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
        dial.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "startup: spawn->ready median {:.1} ms (max {:.1}); spawn->dial tone on lift median {:.1} ms (max {:.1})",
        percentile(&mut ready, 0.5),
        percentile(&mut ready.clone(), 1.0),
        percentile(&mut dial, 0.5),
        percentile(&mut dial.clone(), 1.0)
    );
}

const BIG_PLAN: &str = r#"
[telephony]
country = "US"
outside_line_prefix = "9"

[[extensions]]
number = "201"
port = 1
[[extensions]]
number = "202"
port = 2
[[extensions]]
number = "203"
port = 3
[[extensions]]
number = "204"
port = 4
[[extensions]]
number = "205"
port = 5
[[extensions]]
number = "206"
port = 6
[[extensions]]
number = "207"
port = 7
[[extensions]]
number = "208"
port = 8
[[extensions]]
number = "209"
port = 9
[[extensions]]
number = "210"
port = 10
[[extensions]]
number = "211"
port = 11
[[extensions]]
number = "212"
port = 12

[[fxo_lines]]
port = 13
[[fxo_lines]]
port = 14
[[fxo_lines]]
port = 15
[[fxo_lines]]
port = 16
"#;

fn memory() {
    let gw = Gateway::start_on("sim-16", BIG_PLAN);
    std::thread::sleep(Duration::from_secs(2));
    let (idle, _) = rss_kib(gw.pid());
    // 4 internal calls (ports 1-8) and 4 PSTN calls (ports 9-12 over FXO 13-16).
    for (a, b) in [(1u8, "202"), (3, "204"), (5, "206"), (7, "208")] {
        let p = gw.sim.phone(a);
        p.off_hook();
        wait_tone(&gw.sim, a, 350, 440).expect("dial tone");
        p.dial(b);
        let callee = a + 1;
        assert!(wait(SOON, || gw.sim.phone(callee).is_ringing()));
        gw.sim.phone(callee).off_hook();
        p.inject_tone(1000.0, 8000);
        gw.sim.phone(callee).inject_tone(1500.0, 8000);
    }
    for a in 9u8..=12 {
        let p = gw.sim.phone(a);
        p.off_hook();
        wait_tone(&gw.sim, a, 350, 440).expect("dial tone");
        p.dial(&format!("955501{a:02}#"));
        p.inject_tone(700.0, 8000);
    }
    for l in 13u8..=16 {
        let line = gw.sim.line(l);
        assert!(wait(SOON, || line.is_seized()));
        line.answer();
        line.inject_tone(1200.0, 8000);
    }
    std::thread::sleep(Duration::from_secs(2));
    let t0 = cpu_ticks(gw.pid());
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let cpu = (cpu_ticks(gw.pid()) - t0) as f64 / 100.0 / w0.elapsed().as_secs_f64();
    let (busy, hwm) = rss_kib(gw.pid());
    for p in 1u8..=12 {
        gw.sim.phone(p).take_heard();
    }
    println!(
        "memory: idle RSS {:.1} MiB; 8 calls RSS {:.1} MiB (peak {:.1} MiB); CPU with 8 calls {:.1}% of one core",
        idle as f64 / 1024.0,
        busy as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu * 100.0
    );
}

fn latency() {
    let gw = Gateway::start_with(DIAL_PLAN);
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()));
    b.off_hook();
    std::thread::sleep(Duration::from_millis(300));
    let mut samples = Vec::new();
    for i in 0..60u64 {
        a.inject_silence();
        // Vary the phase against the simulator's 20 ms tick (7 ms steps cover it).
        std::thread::sleep(Duration::from_millis(120 + (i * 7) % 20));
        b.take_heard();
        let t0 = Instant::now();
        a.inject_tone(1000.0, 8000);
        let mut heard = Vec::new();
        loop {
            heard.extend(b.take_heard());
            if heard
                .chunks(160)
                .any(|c| c.len() == 160 && tone_ratio(c, 1000.0) > 0.5)
            {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(2), "tone never arrived");
            std::thread::sleep(Duration::from_micros(500));
        }
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "audio FXS->FXS, tone onset at A to first 20 ms frame of it heard at B: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms \
         (the simulator alone accounts for 20-40 ms: it sends A's frame at its next 20 ms tick and plays B's at the tick after)",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.9),
        percentile(&mut samples, 1.0)
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    startup();
    memory();
    latency();
}
