#!/usr/bin/env bash
# Start-up time and idle memory of the aarch64 `branchd` under qemu-user (figures in
# BENCHMARKS.md):
#
#   scripts/qemu-footprint.sh [BRANCHD] [RUNS]
#
# BRANCHD defaults to the release build of scripts/cross-build.sh
# (target/cross/aarch64-unknown-linux-gnu/release/branchd); RUNS defaults to 5. Each run
# copies firmware/examples-config/sim.toml into a fresh temp dir (so the store is created
# and migrated from scratch, like a first boot; the simulator console and web API are
# moved to free ports) and starts branchd there under qemu-aarch64. Reported:
#
# - spawn to the "branchd ready" log line (polled every 10 ms);
# - VmRSS / VmHWM 3 s after ready, idle. Under qemu-user this is the qemu process's
#   resident memory: the emulator itself, its translated-code cache and the guest
#   together. For scale the script also measures qemu running a trivial aarch64 C
#   program that only sleeps (the emulator's own floor).
#
# NATIVE=1 runs a host build the same way without qemu (BRANCHD then is, say,
# target/release/branchd), for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/cross/aarch64-unknown-linux-gnu/release/branchd}
RUNS=${2:-5}
SYSROOT=/usr/aarch64-linux-gnu
[ -x "$BIN" ] || { echo "no $BIN: run scripts/cross-build.sh aarch64-unknown-linux-gnu first" >&2; exit 1; }
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

echo "binary: $BIN ($(stat -c %s "$BIN") bytes)"
if [ "${NATIVE:-0}" = 1 ]; then
    RUNNER=(env)
    echo "native, no qemu"
else
    RUNNER=(qemu-aarch64 -L "$SYSROOT" -E "LD_LIBRARY_PATH=$SYSROOT/lib")
    # qemu-user 7.2 lacks the termios2 ioctls serialport uses: the test-only shim built
    # by scripts/cross-build.sh stands in for them (see scripts/qemu-termios2-shim.c).
    SHIM=$(dirname "$(dirname "$BIN")")/qemu-termios2-shim.so
    [ -f "$SHIM" ] || { echo "no $SHIM: run scripts/cross-build.sh aarch64-unknown-linux-gnu first" >&2; exit 1; }
    export QEMU_SET_ENV="LD_PRELOAD=$SHIM"
    "${RUNNER[@]}" --version | head -1

    # The emulator's floor: an aarch64 program that does nothing but sleep.
    printf '#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n' >"$WORK/idle.c"
    aarch64-linux-gnu-gcc -O2 -o "$WORK/idle" "$WORK/idle.c"
    "${RUNNER[@]}" "$WORK/idle" &
    PID=$!
    sleep 2
    echo "qemu-aarch64 running an idle C program: VmRSS $(status_kib $PID VmRSS) KiB"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
fi

for run in $(seq 1 "$RUNS"); do
    dir="$WORK/run$run"
    mkdir -p "$dir"
    sed -e 's/^sim_console = .*/sim_console = "127.0.0.1:0"/' \
        -e 's/^listen = .*/listen = "127.0.0.1:0"/' \
        firmware/examples-config/sim.toml >"$dir/sim.toml"
    t0=$(date +%s%N)
    (cd "$dir" && exec timeout 120 "${RUNNER[@]}" "$BIN" --config sim.toml) 2>"$dir/log" >/dev/null &
    PID=$!
    until grep -q "branchd ready" "$dir/log"; do
        if ! kill -0 "$PID" 2>/dev/null; then cat "$dir/log" >&2; exit 1; fi
        sleep 0.01
    done
    t1=$(date +%s%N)
    sleep 3
    # $PID is timeout(1); its child is qemu running branchd.
    qpid=$(pgrep -P "$PID" | head -1)
    printf 'run %d: spawn->ready %d ms; idle VmRSS %s KiB, VmHWM %s KiB\n' "$run" \
        $(((t1 - t0) / 1000000)) "$(status_kib "$qpid" VmRSS)" "$(status_kib "$qpid" VmHWM)"
    kill -TERM "$qpid"
    wait "$PID" || true
    PID=""
    grep -q "branchd stopped" "$dir/log" || { echo "no clean stop:" >&2; tail -5 "$dir/log" >&2; }
done
