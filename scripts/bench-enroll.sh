#!/usr/bin/env bash
# Enrollment benchmark (issue 7 target; not part of the test run): from a provisioning
# stick inserted to the box enrolled with HQ and syncing, under 10 s. Runs the ignored
# test `enroll_e2e::bench_stick_inserted_to_enrolled_and_syncing` (tests/enroll_e2e.rs
# says what each figure measures) RUNS times (default 5) against the release binaries
# (branchd, branch-hq, branch-prov as shipped) and prints each run's figures and the
# median. Figures go into BENCHMARKS.md by hand, with the date and machine.
#
# Usage: bash scripts/bench-enroll.sh        (RUNS=10 bash scripts/bench-enroll.sh)
# BENCH_PROFILE=dev measures the unoptimised debug binaries instead (no release builds;
# slower binaries, so an upper bound).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}

if [ "${BENCH_PROFILE:-release}" = dev ]; then
    PROFILE_ARGS=()
    BIN_DIR="$PWD/target/debug"
else
    PROFILE_ARGS=(--release)
    BIN_DIR="$PWD/target/release"
fi
cargo build "${PROFILE_ARGS[@]}" -p branchline-firmware --bin branchd -p branchline-sync --bin branch-hq \
    -p branchline-provisioning --bin branch-prov -p branchline-board --bin branch-sim
cargo test "${PROFILE_ARGS[@]}" -p branchline-tests --test tests --no-run

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$RUNS"); do
    BRANCHD_BIN_DIR="$BIN_DIR" cargo test -q "${PROFILE_ARGS[@]}" -p branchline-tests --test tests \
        -- --ignored --exact enroll_e2e::bench_stick_inserted_to_enrolled_and_syncing --nocapture \
        2>/dev/null | grep '^BENCH enroll' | tee -a "$out"
done
echo "== median of $(wc -l <"$out") runs (ms)"
for field in applied restarted enrolled syncing; do
    sed -E "s/.* $field ([0-9]+) ms.*/\1/" "$out" | sort -n |
        awk -v f="$field" '{v[NR]=$1} END {printf "%-10s %d (min %d, max %d)\n", f, v[int((NR+1)/2)], v[1], v[NR]}'
done
