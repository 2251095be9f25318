#!/usr/bin/env bash
# Relay benchmark of the daemon's media engine (firmware/benches/relay.rs): 500
# SIP-to-SIP G.711 calls, 50 packets/s each way per call, for 20 s. Figures go into
# BENCHMARKS.md ("Media") by hand, with the date, commit and load average.
#
# The bench binary is built at nice 19 (the machine's cores are shared); the run is at
# nice -15 with the engine process pinned to CPU 1 and the generator process (which it
# starts itself, under taskset) to CPU 0, so the two do not compete for a core.
#
#   scripts/bench-relay.sh [--calls N] [--seconds S]
set -euo pipefail
# shellcheck source=scripts/bench-sched.sh
. "$(dirname "$0")/bench-sched.sh"
bench_own_session "$@"
cd "$(dirname "$0")/.."

calls=500
seconds=20
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) calls="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        *) echo "usage: $0 [--calls N] [--seconds S]" >&2; exit 2 ;;
    esac
done

build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
if ! nice -n 19 cargo bench -p branchline-firmware --bench relay --no-run 2>"$build_log"; then
    cat "$build_log" >&2
    exit 1
fi
bin=$(sed -n 's/.*Executable benches\/relay.rs (\(.*\))$/\1/p' "$build_log" | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    cat "$build_log" >&2
    echo "bench-relay: bench binary not found in cargo's output" >&2
    exit 1
fi
case "$bin" in /*) ;; *) bin="${CARGO_TARGET_DIR:-target}/${bin#target/}" ;; esac

cpus=$(nproc)
if [ "$cpus" -lt 2 ]; then
    echo "bench-relay: needs 2 CPUs (engine and generator on their own); this machine has $cpus" >&2
    exit 1
fi
echo "bench-relay: $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
bench_autogroup_nice -15
echo "bench-relay: $(bench_sched_note)"
echo "bench-relay: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c 1 nice -n -15 "$bin" --calls "$calls" --seconds "$seconds" --generator-cpu 0
echo "bench-relay: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
