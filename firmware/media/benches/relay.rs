//! Relay benchmark: N relayed G.711 calls over 127.0.0.1, 50 packets/s each way per
//! call, measuring the relaying process's CPU (utime+stime from /proc/self/stat,
//! USER_HZ 100), its peak RSS (VmHWM) and per-packet relay latency.
//!
//! ```sh
//! cargo bench -p branchline-media --bench relay -- --calls 500 --seconds 20
//! ```
//!
//! This process binds the relay ports (one RTP/RTCP pair per leg, 2 legs per call) and
//! runs the relay on a current-thread tokio runtime; it starts itself again with
//! `--generator` as a separate process that plays both phones of every call (plain
//! threads, 8 sockets shared by all legs), so the generator's CPU is not counted.
//! Latency is measured in the generator from send to receive (one process, one
//! clock): it covers two loopback hops plus the relay.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchline_media::port::PortAllocator;
use branchline_media::relay::{spawn_relay, LatchConfig, RtpSession};
use branchline_media::rtp::{PayloadMap, RtpHeader, MAX_PACKET, PT_PCMU};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Args {
    calls: usize,
    seconds: u64,
    generator: bool,
}

fn args() -> Args {
    let mut a = Args {
        calls: 500,
        seconds: 20,
        generator: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--calls" => a.calls = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.calls),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds),
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let alloc = PortAllocator::new(LO, 30000, 39999).expect("range");
        let mut handles = Vec::new();
        let mut ports = String::new();
        for _ in 0..a.calls {
            let la = RtpSession::new(alloc.allocate().await.expect("ports"), None, PayloadMap::default(), LatchConfig::default());
            let lb = RtpSession::new(alloc.allocate().await.expect("ports"), None, PayloadMap::default(), LatchConfig::default());
            ports.push_str(&format!("{} {}\n", la.local_rtp_addr().unwrap().port(), lb.local_rtp_addr().unwrap().port()));
            handles.push(spawn_relay(la, lb));
        }
        let exe = std::env::current_exe().expect("exe");
        let mut child = Command::new(exe)
            .args(["--generator", "--calls", &a.calls.to_string(), "--seconds", &a.seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("generator");
        child.stdin.take().expect("stdin").write_all(ports.as_bytes()).expect("ports to generator");
        let stdout = child.stdout.take().expect("stdout");
        // Read the generator's lines on a thread; the relay keeps running here.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, Instant)>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
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
        let mut relayed = 0u64;
        let mut dropped = 0u64;
        for h in &handles {
            let [x, y] = h.snapshot();
            relayed += x.rtp_out + y.rtp_out;
            dropped += x.send_dropped + y.send_dropped + x.rtp_foreign + y.rtp_foreign + x.rtp_invalid + y.rtp_invalid;
        }
        println!("calls={} relay_cpu_percent_of_one_core={cpu_pct:.1} relay_vmhwm_mib={:.1} packets_relayed_total={relayed} dropped_total={dropped}", a.calls, vm_hwm_kib() as f64 / 1024.0);
    });
}

const BUCKETS: usize = 100_000; // 1 µs buckets up to 100 ms
/// Generator sockets: each plays the phone of many legs (the relay latches every leg
/// to the socket that sends to it), so the generator costs little and does not
/// distort the latency; the relay still has one socket per leg.
const GEN_SOCKETS: usize = 8;

fn generator(a: Args) {
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
    let epoch = Instant::now();
    let sockets: Vec<Arc<std::net::UdpSocket>> = (0..GEN_SOCKETS)
        .map(|_| Arc::new(std::net::UdpSocket::bind((LO, 0)).expect("bind")))
        .collect();
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
    std::thread::sleep(Duration::from_secs(a.seconds));
    println!("STOP");
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
