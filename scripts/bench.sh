#!/usr/bin/env bash
# Benchmarks (not part of the test run): the codec and G.711 (criterion), then the
# daemon on the simulated board: start-up, memory idle and with 8 calls, audio latency.
# Figures go into BENCHMARKS.md by hand, with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== criterion: line-controller codec and G.711"
cargo bench -p branchline-line-proto --bench codec -- --warm-up-time 1 --measurement-time 3

echo "== criterion: authorization check"
cargo bench -p branchline-firmware --bench authz -- --warm-up-time 1 --measurement-time 3

echo "== criterion: customer lookup among 1,000,000 and import of 100,000 (prints p99 too)"
cargo bench -p branchline-firmware --bench customers

echo "== criterion: lead list import of 100,000"
cargo bench -p branchline-firmware --bench campaigns

echo "== branchd (release profile, as shipped) on the simulated board"
cargo build --release -p branchline-firmware --bin branchd
ls -l target/release/branchd
BRANCHD_BIN_DIR="$PWD/target/release" cargo bench -p branchline-tests --bench daemon
