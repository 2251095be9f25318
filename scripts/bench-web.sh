#!/usr/bin/env bash
# Web diagnostics page benchmark (issue 8 targets; not part of the test run). Figures
# go into BENCHMARKS.md by hand, with the date and machine.
#
#   - dashboard first contentful paint in headless Chromium (target < 300 ms),
#     WEB_BENCH_RUNS loads (default 30) after logging in, the first (cold) apart;
#   - dashboard page weight (target < 100 KB);
#   - the RSS the web server adds to branchd (target < 2 MiB): VmRSS without [web],
#     with it idle, and after browsing every page with the dashboard's SSE open.
#
# branchd is the release build as shipped (tests/benches/web.rs, BRANCHD_BIN_DIR).
# Needs Debian's chromium and chromium-driver (.ci/run installs them).
#
# Usage: bash scripts/bench-web.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p branchline-firmware --bin branchd
ls -l target/release/branchd
BRANCHD_BIN_DIR="$PWD/target/release" cargo bench -p branchline-tests --bench web
