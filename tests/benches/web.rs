//! Web diagnostics page benchmark (not part of `cargo test`; run by
//! `scripts/bench-web.sh`, figures in BENCHMARKS.md). Needs Debian's `chromium` and
//! `chromium-driver`; set `BRANCHD_BIN_DIR` to a release build of `branchd`.
//!
//! - **First paint**: a technician logged in with the form loads `/dashboard`
//!   `WEB_BENCH_RUNS` times (default 30) in headless Chromium; Chromium's own paint
//!   timing (`first-contentful-paint`, from navigation start) of each load, reported as
//!   min / median / p90 / max, the first (cold: CSS and JS fetched) apart.
//! - **Page weight**: the dashboard's HTML plus the CSS and JS it loads (decoded bytes).
//! - **The server's RSS**: `VmRSS` of `branchd` on the simulated board without a
//!   `[web]` section, then of another one with the web server, idle, and after the
//!   browsing above plus a visit of every page and ten seconds with the dashboard's
//!   SSE stream open. Each figure is the median of ten samples a second apart, taken
//!   after three quiet seconds. What the web server adds is the last minus the first.

#[allow(dead_code)]
#[path = "../api_client.rs"]
mod api_client;
#[allow(dead_code)]
#[path = "../browser.rs"]
mod browser;
#[allow(dead_code)]
#[path = "../fault_proxy.rs"]
mod fault_proxy;
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use std::time::Duration;

use fantoccini::Client;
use harness::{Gateway, DIAL_PLAN};
use serde_json::Value;

const PASSWORD: &str = "Field-tech-pass-2024";
const PAGES: [&str; 9] = [
    "/dashboard",
    "/ports",
    "/sip",
    "/calls",
    "/queues",
    "/sync",
    "/system",
    "/tools",
    "/logs",
];

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Median `VmRSS` (KiB) of ten samples a second apart, after three quiet seconds.
fn settled_rss(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_secs(3));
    let mut samples: Vec<u64> = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            rss_kib(pid)
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn dashboard_timing(c: &Client, base: &str) -> Value {
    c.goto(&format!("{base}/dashboard")).await.expect("goto");
    // Paint entries appear once the page painted; poll briefly.
    for _ in 0..100 {
        let v = c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];
                 const fcp = performance.getEntriesByType('paint')
                   .find(p => p.name === 'first-contentful-paint');
                 return fcp ? {
                   fcp_ms: fcp.startTime,
                   html_bytes: n.decodedBodySize,
                   static_bytes: performance.getEntriesByType('resource')
                     .filter(r => r.name.includes('/static/'))
                     .reduce((s, r) => s + r.decodedBodySize, 0),
                 } : null;",
                vec![],
            )
            .await
            .expect("timing");
        if !v.is_null() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no first-contentful-paint entry for the dashboard");
}

fn main() {
    let runs = env_num("WEB_BENCH_RUNS", 30).max(2);
    println!("binary: {}", harness::bin("branchd").display());

    let baseline = {
        let gw = Gateway::start_without_web(DIAL_PLAN);
        settled_rss(gw.pid())
    };
    println!("branchd without [web]: VmRSS {baseline} KiB");

    let gw = Gateway::start();
    let idle = settled_rss(gw.pid());
    println!("branchd with [web], idle: VmRSS {idle} KiB");
    api_client::add_user(&gw, "tech1", "technician", PASSWORD);
    let base = format!("http://{}", gw.web_addr());

    let driver = browser::Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (timings, weight) = rt.block_on(async {
        let c = browser::browser(&driver).await;
        browser::login(&c, &base, "tech1", PASSWORD).await;
        let mut timings = Vec::new();
        let mut weight = 0;
        for _ in 0..runs {
            let t = dashboard_timing(&c, &base).await;
            timings.push(t["fcp_ms"].as_f64().expect("fcp"));
            weight =
                t["html_bytes"].as_u64().unwrap_or(0) + t["static_bytes"].as_u64().unwrap_or(0);
        }
        for page in PAGES {
            c.goto(&format!("{base}{page}")).await.expect("page");
        }
        c.goto(&format!("{base}/dashboard"))
            .await
            .expect("dashboard");
        // The SSE stream stays open while the server's memory is sampled.
        let after = tokio::task::spawn_blocking({
            let pid = gw.pid();
            move || settled_rss(pid)
        });
        let after = after.await.expect("rss");
        println!("branchd with [web], after browsing with the dashboard open: VmRSS {after} KiB");
        println!(
            "the web server adds {} KiB idle, {} KiB in use",
            idle as i64 - baseline as i64,
            after as i64 - baseline as i64
        );
        c.close().await.expect("close");
        (timings, weight)
    });
    let cold = timings[0];
    let mut warm: Vec<f64> = timings[1..].to_vec();
    warm.sort_by(f64::total_cmp);
    println!("dashboard weight: {weight} bytes (HTML + CSS + JS, decoded)");
    println!("first contentful paint, first (cold) load: {cold:.0} ms");
    println!(
        "first contentful paint, {} warm loads: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        warm.len(),
        warm[0],
        percentile(&warm, 0.5),
        percentile(&warm, 0.9),
        warm[warm.len() - 1]
    );
}
