#!/usr/bin/env bash
# Sync benchmarks (issue 5 targets; not part of the test run). Figures go into
# BENCHMARKS.md by hand, with the date and machine.
#
#   (a) catch-up: a box whose outbox holds a backlog of CDRs (default 1,000,000,
#       written into its stopped SQLite store with the daemon's schema) drains to a
#       real branch-hq on PostgreSQL; CDRs/s, and the box's VmRSS every second
#       (flat = no growth with the backlog). Target: >= 20,000 CDRs/s.
#       (tests/benches/sync.rs, release binaries as shipped)
#   (b) HQ ingest: 100 simulated boxes posting CDR batches at once to an in-process
#       branch-hq on PostgreSQL over mutual TLS. Target: >= 50,000 CDRs/s.
#       (sync/benches/hq_ingest.rs, written with the HQ server)
#   (c) wire cost: bytes box -> HQ per CDR, measured in (a) at a TCP proxy between
#       box and HQ (TLS, HTTP headers, gzip bodies, long polls). Target: < 120 B/CDR.
#
# Needs PostgreSQL at 127.0.0.1:5432 with trust auth for user postgres (each part
# creates and drops its own database).
#
# Environment:
#   SYNC_BENCH_CDRS   backlog size of (a) (default 1000000; 200000 for a quick run)
#   SYNC_BENCH_BATCH  the box's hq.batch_records in (a) (default: firmware default)
#   HQ_BENCH_BOXES, HQ_BENCH_BATCH, HQ_BENCH_BATCHES, HQ_BENCH_POOL   for (b)
#   SKIP_CATCHUP=1 / SKIP_INGEST=1   run only one part
#
# Usage: bash scripts/bench-sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL is not accepting connections on 127.0.0.1:5432" >&2
    exit 1
fi

if [ "${SKIP_CATCHUP:-0}" != 1 ]; then
    echo "== (a) catch-up and (c) wire cost: branchd and branch-hq, release profile as shipped"
    cargo build --release -p branchline-firmware --bin branchd -p branchline-sync --bin branch-hq
    ls -l target/release/branchd target/release/branch-hq
    SYNC_BENCH_CDRS="${SYNC_BENCH_CDRS:-1000000}" \
        BRANCHD_BIN_DIR="$PWD/target/release" \
        cargo bench -p branchline-tests --bench sync
fi

if [ "${SKIP_INGEST:-0}" != 1 ]; then
    echo "== (b) HQ ingest: ${HQ_BENCH_BOXES:=100} boxes at once into PostgreSQL"
    if [ ! -f sync/benches/hq_ingest.rs ]; then
        echo "sync/benches/hq_ingest.rs is missing (the HQ server's ingest bench)" >&2
        exit 1
    fi
    HQ_BENCH_BOXES="$HQ_BENCH_BOXES" cargo bench -p branchline-sync --bench hq_ingest
fi
