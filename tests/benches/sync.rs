//! Sync catch-up benchmark (not part of `cargo test`; run by `scripts/bench-sync.sh`,
//! figures in BENCHMARKS.md):
//!
//! A box whose outbox holds a backlog of `SYNC_BENCH_CDRS` CDRs (default 1,000,000;
//! written into its stopped store with the daemon's schema, see
//! `harness::fill_cdr_backlog`) is started against a real `branch-hq` on PostgreSQL
//! (a fresh database `bl_sync_bench_<random>` on 127.0.0.1:5432, dropped at the end),
//! through the fault proxy with no fault (it only counts bytes). Reported:
//!
//! - drain time and CDRs/s (until HQ's `cdrs` table holds the whole backlog), with
//!   the rate in each 10 s window;
//! - the box's `VmRSS` sampled every second (min, max, and the series);
//! - wire cost: bytes client -> server (TLS records, HTTP headers, gzip bodies, the
//!   change-feed long polls and heartbeats running meanwhile) per CDR, and server ->
//!   client per CDR;
//! - that HQ holds each CDR exactly once (distinct call ids = rows = backlog).
//!
//! `SYNC_BENCH_BATCH` sets the box's `hq.batch_records` (default: the firmware's
//! default). Set `BRANCHD_BIN_DIR` to the directory holding `branchd` and `branch-hq`.

#[allow(dead_code)]
#[path = "../fault_proxy.rs"]
mod fault_proxy;
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use fault_proxy::FaultProxy;
use harness::{fill_cdr_backlog, wait, Gateway, HqDb, HqServer, DIAL_PLAN, SOON};
use nix::sys::signal::Signal;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
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

fn outbox_len(gw: &Gateway) -> i64 {
    gw.db()
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("outbox count")
}

fn main() {
    let n = env_num("SYNC_BENCH_CDRS", 1_000_000);
    let batch = std::env::var("SYNC_BENCH_BATCH")
        .ok()
        .map(|b| format!("batch_records = {b}\n"))
        .unwrap_or_default();

    let sqlite = std::env::var("SYNC_BENCH_STORE").is_ok_and(|s| s == "sqlite");
    let mut hq = HqServer::new(if sqlite {
        HqDb::Sqlite
    } else {
        HqDb::Postgres(harness::PgDatabase::create("bl_sync_bench"))
    });
    let store = if sqlite { "SQLite" } else { "PostgreSQL" };
    hq.add_site("bench-site");
    let creds = hq.add_box("bench-site", "bench-box");
    hq.serve();
    let proxy = FaultProxy::start(hq.sync);
    let mut gw = Gateway::start_with(&format!(
        "{DIAL_PLAN}{}",
        hq.box_config(&creds, proxy.addr(), &batch)
    ));
    assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());
    // The first exchange with HQ done (nothing left over), then the box goes down.
    assert!(wait(SOON * 6, || outbox_len(&gw) == 0), "{}", gw.log_text());
    assert!(gw.stop_with(Signal::SIGTERM).success());
    let t = Instant::now();
    fill_cdr_backlog(&gw.db_path(), "bench", n);
    let store_mb = std::fs::metadata(gw.db_path()).map_or(0, |m| m.len()) / 1_000_000;
    println!(
        "backlog: {n} CDRs written into the stopped box's store in {:.1} s ({store_mb} MB)",
        t.elapsed().as_secs_f64()
    );

    // HQ's CDR count: straight from PostgreSQL, or from the SQLite file (WAL: reads
    // do not block the server's writes).
    let hq_db = hq.dir.path().join("hq.db");
    let hq_count = |sql: &str| -> i64 {
        match hq.postgres() {
            Some(pg) => pg.query_i64(sql),
            None => rusqlite::Connection::open_with_flags(
                &hq_db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|db| db.query_row(sql, [], |r| r.get(0)))
            .expect("count at HQ"),
        }
    };
    let before = proxy.stats();
    let base = hq_count("SELECT count(*) FROM cdrs");
    let t0 = Instant::now();
    gw.restart();
    let pid = gw.pid();
    let mut rss = Vec::new();
    let mut windows = Vec::new();
    let (mut last_count, mut last_at) = (0_i64, Instant::now());
    let target = i64::try_from(n).expect("fits") + base;
    let deadline = t0 + Duration::from_secs(600 + u64::try_from(n / 500).unwrap_or(0));
    let done = loop {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(pid));
        let count = hq_count("SELECT count(*) FROM cdrs");
        if last_at.elapsed() >= Duration::from_secs(10) {
            windows.push((count - last_count) as f64 / last_at.elapsed().as_secs_f64());
            (last_count, last_at) = (count, Instant::now());
        }
        if count >= target {
            break t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "drain stalled at {count} of {target}:\n{}",
            gw.log_text()
        );
    };
    let after = proxy.stats();
    let secs = done.as_secs_f64();
    println!(
        "catch-up: {n} CDRs drained to branch-hq ({store}) in {secs:.1} s = {:.0} CDRs/s \
         (from branchd spawn to the last row committed at HQ, 1 s polling)",
        n as f64 / secs
    );
    println!(
        "  rate per 10 s window (CDRs/s): {}",
        windows
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rss_min = rss.iter().copied().min().unwrap_or(0);
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "  box VmRSS during the drain: min {:.1} MiB, max {:.1} MiB, last {:.1} MiB ({} samples, 1/s)",
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss.last().copied().unwrap_or(0) as f64 / 1024.0,
        rss.len()
    );
    let step = (rss.len() / 30).max(1);
    println!(
        "  VmRSS series (KiB, every {step} s): {}",
        rss.iter()
            .step_by(step)
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let up = after.bytes_up - before.bytes_up;
    let down = after.bytes_down - before.bytes_down;
    println!(
        "wire: {up} bytes box -> HQ = {:.1} bytes/CDR; {down} bytes HQ -> box = {:.1} bytes/CDR; \
         {} TCP connections",
        up as f64 / n as f64,
        down as f64 / n as f64,
        after.connections - before.connections
    );
    let rows = hq_count("SELECT count(*) FROM cdrs WHERE call_id LIKE 'bench-%'");
    let distinct =
        hq_count("SELECT count(DISTINCT call_id) FROM cdrs WHERE call_id LIKE 'bench-%'");
    println!("exactly once: {rows} rows, {distinct} distinct call ids, backlog {n}");
    assert_eq!((rows, distinct), (n as i64, n as i64));
}
