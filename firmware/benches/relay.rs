//! Relay benchmark of the daemon's media engine: N SIP-to-SIP G.711 calls over
//! 127.0.0.1, 50 packets/s each way per call, relayed by the real
//! [`MediaEngine`](branchline_firmware::media_engine::MediaEngine) (two legs per call,
//! opened, started with symmetric RTP and bridged leg to leg as the daemon does),
//! measuring the engine process's CPU (utime+stime of every thread from
//! `/proc/self/stat`, USER_HZ 100), its peak RSS (VmHWM) and per-packet relay latency.
//!
//! ```sh
//! scripts/bench-relay.sh                  # 500 calls, 20 s, pinned, nice -15
//! cargo bench -p branchline-firmware --bench relay -- --calls 500 --seconds 20
//! ```
//!
//! This process runs the engine on a tokio runtime built like `branchd`'s (multi-thread,
//! one worker per CPU it may use, at most two) and starts itself again with
//! `--generator` as a separate process that plays both phones of every call (plain
//! threads, 8 sockets shared by all legs), so the generator's CPU is not counted.
//! `--generator-cpu N` starts the generator under `taskset -c N` (the script pins the
//! engine to CPU 1 and the generator to CPU 0, so the two do not compete for a core).
//! Latency is measured in the generator from send to receive (one process, one clock):
//! it covers two loopback hops plus the relay.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchline_firmware::call::sip::{LegId, MediaEnd};
use branchline_firmware::media_engine::{LegMedia, MediaEngine, MediaSettings};
use branchline_media::inactivity::InactivityConfig;
use branchline_media::jitter::JitterConfig;
use branchline_media::rtp::{RtpHeader, MAX_PACKET, PT_PCMU};
use line_proto::g711::Law;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Args {
    calls: usize,
    seconds: u64,
    generator: bool,
    generator_cpu: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        calls: 500,
        seconds: 20,
        generator: false,
        generator_cpu: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--calls" => a.calls = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.calls),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds),
            "--generator-cpu" => a.generator_cpu = it.next().and_then(|v| v.parse().ok()),
            "--generator" => a.generator = true,
            _ => {} // cargo passes --bench
        }
    }
    a
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let a = args();
    if a.generator {
        generator(a);
    } else {
        relay(a);
    }
}

fn relay(a: Args) {
    // As `branchd` builds its runtime (main.rs): one worker per usable CPU, at most two.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (frame_tx, _frames) = tokio::sync::mpsc::unbounded_channel();
        let (sip_tx, _sip) = tokio::sync::mpsc::unbounded_channel();
        let settings = MediaSettings {
            local_ip: LO,
            rtp_port_min: 30000,
            rtp_port_max: 39999,
            jitter: JitterConfig::adaptive(20, 200).expect("jitter"),
            board_law: Law::Ulaw,
            seed: 1,
            fxo_ports: 5..=6,
            rtcp_interval: branchline_media::rtcp::DEFAULT_REPORT_INTERVAL,
            inactivity: InactivityConfig::default(),
        };
        let (engine, _task) =
            MediaEngine::start(settings, Arc::new(frame_tx), sip_tx).expect("media engine");

        let exe = std::env::current_exe().expect("exe");
        let gen_args = [
            "--generator".to_string(),
            "--calls".to_string(),
            a.calls.to_string(),
            "--seconds".to_string(),
            a.seconds.to_string(),
        ];
        let mut cmd = match a.generator_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = cmd
            .args(gen_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("generator");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // The generator's sockets first: the legs' SDP addresses (the phones).
        let phones: Vec<SocketAddr> = lines
            .next()
            .and_then(Result::ok)
            .expect("generator sockets")
            .split_whitespace()
            .filter_map(|p| p.parse::<u16>().ok())
            .map(|p| SocketAddr::new(LO, p))
            .collect();
        assert!(!phones.is_empty(), "generator sent no sockets");
        let media = LegMedia {
            law: Law::Ulaw,
            payload_type: PT_PCMU,
            telephone_event_pt: Some(101),
            ptime_ms: 20,
            latch: true,
        };
        let mut ports = String::new();
        for c in 0..a.calls {
            let (la, lb) = (LegId(2 * c as u64), LegId(LegId::OUTGOING | (2 * c as u64 + 1)));
            let aa = engine.open_leg(la).await.expect("open leg");
            let ab = engine.open_leg(lb).await.expect("open leg");
            engine
                .start_leg(la, phones[(2 * c) % phones.len()], media)
                .await
                .expect("start leg");
            engine
                .start_leg(lb, phones[(2 * c + 1) % phones.len()], media)
                .await
                .expect("start leg");
            engine.bridge(MediaEnd::Leg(la), MediaEnd::Leg(lb));
            ports.push_str(&format!("{} {}\n", aa.port(), ab.port()));
        }
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(ports.as_bytes()).expect("ports to generator");
        drop(stdin);
        // Read the generator's lines on a thread; the engine keeps running here.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, Instant)>();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send((line, cpu_ticks(), Instant::now()));
            }
        });
        let mut start: Option<(u64, Instant)> = None;
        let mut cpu_pct = 0.0;
        while let Some((line, ticks, at)) = rx.recv().await {
            match line.as_str() {
                "START" => start = Some((ticks, at)),
                "STOP" => {
                    if let Some((t0, i0)) = start {
                        let secs = at.duration_since(i0).as_secs_f64();
                        cpu_pct = (ticks - t0) as f64 / 100.0 / secs * 100.0;
                    }
                }
                other => println!("{other}"),
            }
        }
        let _ = child.wait();
        let stats = engine.stats().await.expect("stats");
        let sum = |f: fn(&branchline_firmware::media_engine::LegSnapshot) -> u64| {
            stats.iter().map(f).sum::<u64>()
        };
        println!(
            "calls={} workers={workers} engine_cpu_percent_of_one_core={cpu_pct:.1} engine_vmhwm_mib={:.1} \
             packets_in={} packets_out={} invalid={} foreign={} dropped={}",
            a.calls,
            vm_hwm_kib() as f64 / 1024.0,
            sum(|s| s.packets_in),
            sum(|s| s.packets_out),
            sum(|s| s.invalid),
            sum(|s| s.foreign),
            stats.iter().map(|s| s.dropped).max().unwrap_or(0),
        );
    });
}

const BUCKETS: usize = 100_000; // 1 µs buckets up to 100 ms
/// Generator sockets: each plays the phone of many legs (every leg latches to the socket
/// that sends to it), so the generator costs little and does not distort the latency;
/// the engine still has one socket pair per leg.
const GEN_SOCKETS: usize = 8;

fn generator(a: Args) {
    let sockets: Vec<Arc<std::net::UdpSocket>> = (0..GEN_SOCKETS)
        .map(|_| Arc::new(std::net::UdpSocket::bind((LO, 0)).expect("bind")))
        .collect();
    let names: Vec<String> = sockets
        .iter()
        .map(|s| s.local_addr().expect("addr").port().to_string())
        .collect();
    println!("{}", names.join(" "));
    let _ = std::io::stdout().flush();
    let targets: Vec<u16> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect();
    assert_eq!(targets.len(), 2 * a.calls, "leg ports from the engine");
    let epoch = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for s in &sockets {
        let (s, measuring, stop) = (Arc::clone(s), Arc::clone(&measuring), Arc::clone(&stop));
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        receivers.push(std::thread::spawn(move || {
            let mut hist = vec![0u64; BUCKETS + 1];
            let mut buf = [0u8; MAX_PACKET];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = s.recv_from(&mut buf) else {
                    continue;
                };
                if n < 20 || !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let stamp = u64::from_be_bytes(buf[12..20].try_into().unwrap_or([0; 8]));
                let now = epoch.elapsed().as_nanos() as u64;
                hist[((now.saturating_sub(stamp) / 1000) as usize).min(BUCKETS)] += 1;
            }
            hist
        }));
    }
    // One sender thread: every 20 ms each leg gets one packet, spread over 20 slots of
    // 1 ms so the load is even.
    let sender = {
        let (sockets, measuring, stop, sent) = (
            sockets.clone(),
            Arc::clone(&measuring),
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        std::thread::spawn(move || {
            let slots = 20;
            let per = targets.len().div_ceil(slots).max(1);
            let mut buf = [0u8; MAX_PACKET];
            let mut payload = [0xD5u8; 160];
            let mut seq: u16 = 0;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                for slot in 0..slots {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += Duration::from_millis(1);
                    for (i, port) in targets.iter().enumerate().skip(slot * per).take(per) {
                        let stamp = epoch.elapsed().as_nanos() as u64;
                        payload[..8].copy_from_slice(&stamp.to_be_bytes());
                        let n = RtpHeader {
                            payload_type: PT_PCMU,
                            marker: false,
                            seq,
                            timestamp: u32::from(seq) * 160,
                            ssrc: i as u32 + 1,
                        }
                        .write(&payload, &mut buf)
                        .expect("packet");
                        let s = &sockets[i % GEN_SOCKETS];
                        if s.send_to(&buf[..n], SocketAddr::new(LO, *port)).is_ok()
                            && measuring.load(Ordering::Relaxed)
                        {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3)); // warm-up: latching, caches
    measuring.store(true, Ordering::Relaxed);
    println!("START");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(a.seconds));
    println!("STOP");
    let _ = std::io::stdout().flush();
    measuring.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let mut counts = vec![0u64; BUCKETS + 1];
    for r in receivers {
        if let Ok(h) = r.join() {
            for (c, x) in counts.iter_mut().zip(h) {
                *c += x;
            }
        }
    }
    let total: u64 = counts.iter().sum();
    let pct = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (us, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return us;
            }
        }
        BUCKETS
    };
    let max = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    let s = sent.load(Ordering::Relaxed);
    println!(
        "generator: sent={s} received={total} lost_or_in_flight={} latency_us p50={} p99={} p999={} max={}",
        s.saturating_sub(total),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        max
    );
    let _ = std::io::stdout().flush();
}
