#!/usr/bin/env bash
# Cross build for the box without docker, following ../shared/cross.md:
#
#   scripts/cross-build.sh TARGET [--no-test]
#
# TARGET is aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf. Installs what the
# build needs if it is missing (Debian's rustc-web with its arm64 std or rust-web-src, the
# gcc cross linker, qemu-user), builds the release binaries (the box's release profile)
# into target/cross/TARGET/release, then runs the workspace's unit, integration, end-to-end
# and doc tests under qemu-user, with the runner from .cargo/config.toml. armv7 builds its
# std from source (RUSTC_BOOTSTRAP=1 -Zbuild-std), as Debian's armhf std cannot be
# installed here. CI runs aarch64; armv7 is run by hand.
#
# The tests run with cargo-nextest where it is installed (a deadline and one retry per
# test, .config/nextest.toml profile "cross"), else with cargo test.
#
# Environment: CROSS_TEST_TIMEOUT (seconds, default 3600) bounds the whole qemu test
# run; CROSS_E2E (default "smoke") runs, of the end-to-end tests in tests/, only those
# listed in scripts/qemu-e2e-smoke.txt under nextest ("all": every one; they all run
# natively in CI); CARGO_TARGET_DIR defaults to target/cross so that the host build, made with
# rustup's rustc, is not invalidated by Debian's; CROSS_RELEASE_BINS (default "box")
# picks the release binaries: "box" builds what runs on the box (branchd, branch-image
# for the slot boot step, branch-sim for image/qemu-system-boot.sh), "all" adds the
# host tools (branch-hq, branch-prov). Each release binary is its own fat-LTO link of
# a few minutes, and the test build compiles every binary for the target anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf [--no-test]" >&2; exit 2; }
[ $# -ge 1 ] || usage
TARGET=$1
shift
RUN_TESTS=1
for arg in "$@"; do
    case "$arg" in
        --no-test) RUN_TESTS=0 ;;
        *) usage ;;
    esac
done

step() { printf '\n=== cross %s: %s (%s)\n' "$TARGET" "$1" "$(date -u +%H:%M:%S)"; }

case "$TARGET" in
    aarch64-unknown-linux-gnu)
        SYSROOT=/usr/aarch64-linux-gnu
        QEMU=qemu-aarch64
        CC_CROSS=aarch64-linux-gnu-gcc
        PACKAGES=(rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
        BUILD_STD=()
        ;;
    armv7-unknown-linux-gnueabihf)
        SYSROOT=/usr/arm-linux-gnueabihf
        QEMU=qemu-arm
        CC_CROSS=arm-linux-gnueabihf-gcc
        PACKAGES=(rustc-web rust-web-src gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user)
        # Debian's armhf std needs the armhf architecture, whose index is broken here:
        # build std from rust-web-src instead.
        BUILD_STD=(-Zbuild-std=std,panic_abort)
        export RUSTC_BOOTSTRAP=1
        ;;
    *) usage ;;
esac

step "install packages"
missing=()
for p in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    # arm64 only: never add armhf (its security index is broken; apt-get update would
    # then fail for every architecture).
    if [ "$TARGET" = aarch64-unknown-linux-gnu ] \
        && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
else
    echo "all present: ${PACKAGES[*]}"
fi

# Debian's rustc 1.96 with the target's std; rustup's cargo (1.95) drives it. RUSTDOC
# too, or the doctests fail with E0463 (no std for the target).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
# The runner in .cargo/config.toml runs the test binaries; the binaries those tests start
# (branchd, branch-sim) are foreign too and, without binfmt_misc, need the same runner:
# tests/harness.rs puts BRANCHLINE_TEST_RUNNER in front of them. The -E LD_LIBRARY_PATH
# keeps the loader and libc from one glibc build (else tokio can spin under qemu).
export BRANCHLINE_TEST_RUNNER="$QEMU -L $SYSROOT -E LD_LIBRARY_PATH=$SYSROOT/lib"
# qemu-user 7.2 does not emulate the termios2 ioctls that serialport uses to set the
# UART speed (every serial open fails with ENOSYS, even on the simulator's pty): preload
# a test-only shim into the emulated programs that maps them to TCGETS/TCSETS. See
# scripts/qemu-termios2-shim.c; QEMU_SET_ENV reaches every qemu the tests start.
SHIM="$(realpath -m "$CARGO_TARGET_DIR")/$TARGET/qemu-termios2-shim.so"
mkdir -p "$(dirname "$SHIM")"
"$CC_CROSS" -O2 -shared -fPIC -Wall -Wextra -Werror -o "$SHIM" scripts/qemu-termios2-shim.c
export QEMU_SET_ENV="LD_PRELOAD=$SHIM"
"$RUSTC" --version

step "release build"
start=$SECONDS
case "${CROSS_RELEASE_BINS:-box}" in
    box) BIN_ARGS=(--bin branchd --bin branch-image --bin branch-sim) ;;
    all) BIN_ARGS=(--bins) ;;
    *) echo "CROSS_RELEASE_BINS must be box or all" >&2; exit 2 ;;
esac
# The box's release binaries are linked without .eh_frame_hdr and without .eh_frame
# (scripts/no-eh-frame.ld, added to ld's default script): about 1.4 MB of branchd's
# size budget (BENCHMARKS.md, ARM builds). Nothing on the box unwinds (the release
# profile aborts on panic; no thread is cancelled), so the only loss is the frames of
# a backtrace printed with RUST_BACKTRACE: a panic still reports its message and
# source location. Release only: the tests catch panics by unwinding.
#
# They are linked by LLVM's lld (the version of Debian's rustc's LLVM, package lld-N)
# with packed relative relocations (-z pack-relative-relocs: DT_RELR, glibc >= 2.36,
# which the image's Debian has): a position-independent executable keeps one 24-byte
# RELA entry per pointer in its data (vtables, string tables), about 0.55 MB of
# branchd; RELR packs them into bitmaps of a few KB. GNU ld 2.40 (bookworm) ignores
# the option for aarch64, hence lld, found by gcc through -B (a directory holding only
# an ld.lld link). The binary keeps PIE (ASLR) and its GLIBC_ABI_DT_RELR dependency
# makes an older glibc refuse it instead of misloading it. BENCHMARKS.md, ARM builds.
LLVM_MAJOR=$("$RUSTC" --version --verbose | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
LLD_PKG="lld-$LLVM_MAJOR"
if [ "$(dpkg-query -W -f='${db:Status-Status}' "$LLD_PKG" 2>/dev/null)" != installed ]; then
    echo "installing $LLD_PKG"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$LLD_PKG" >/dev/null
fi
LLD_DIR="$(realpath -m "$CARGO_TARGET_DIR")/lld-bin"
mkdir -p "$LLD_DIR"
ln -sf "/usr/lib/llvm-$LLVM_MAJOR/bin/ld.lld" "$LLD_DIR/ld.lld"
TRIPLE_VAR=$(echo "$TARGET" | tr 'a-z-' 'A-Z_')
LINK_ARGS="-C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/scripts/no-eh-frame.ld"
LINK_ARGS="$LINK_ARGS -C link-arg=-B$LLD_DIR -C link-arg=-fuse-ld=lld -C link-arg=-Wl,-z,pack-relative-relocs"
env "CARGO_TARGET_${TRIPLE_VAR}_RUSTFLAGS=$LINK_ARGS" \
    cargo build --release --workspace "${BIN_ARGS[@]}" --locked --target "$TARGET" "${BUILD_STD[@]}"
echo "release build: $((SECONDS - start)) s"
ls -l "$CARGO_TARGET_DIR/$TARGET/release/branchd" "$CARGO_TARGET_DIR/$TARGET/release/branch-sim"
timeout 60 $BRANCHLINE_TEST_RUNNER "$CARGO_TARGET_DIR/$TARGET/release/branchd" --version

if [ "$RUN_TESTS" = 1 ]; then
    step "tests under qemu-user"
    start=$SECONDS
    # Build first (no timeout: a cold build takes minutes), then bound the qemu run.
    cargo test --workspace --locked --target "$TARGET" "${BUILD_STD[@]}" --no-run
    echo "test build: $((SECONDS - start)) s"
    start=$SECONDS
    if cargo nextest --version >/dev/null 2>&1; then
        # One process per test, each with its own deadline and one retry
        # (.config/nextest.toml, profile "cross"); the doc tests, which nextest does not
        # run, follow with cargo test.
        # Every unit and integration test; of the end-to-end binary (tests/) the smoke
        # list scripts/qemu-e2e-smoke.txt, or all of it with CROSS_E2E=all.
        FILTER=()
        if [ "${CROSS_E2E:-smoke}" != all ]; then
            expr='not binary_id(branchline-tests::tests)'
            while read -r name; do
                case "$name" in ''|'#'*) continue ;; esac
                expr="$expr | (binary_id(branchline-tests::tests) & test(=$name))"
            done < scripts/qemu-e2e-smoke.txt
            FILTER=(-E "$expr")
            echo "end-to-end tests under qemu: the smoke list (CROSS_E2E=all runs all)"
        fi
        timeout --kill-after=30 "${CROSS_TEST_TIMEOUT:-3600}" \
            cargo nextest run --workspace --locked --profile cross --target "$TARGET" \
            "${BUILD_STD[@]}" "${FILTER[@]}"
        # The 15 slowest tests of the run (nextest's JUnit report), for CI's time budget.
        # (nextest keeps its store under the workspace's target/, whatever
        # CARGO_TARGET_DIR says; the first path is for a nextest that follows it.)
        junit="$CARGO_TARGET_DIR/nextest/cross/junit.xml"
        [ -f "$junit" ] || junit="target/nextest/cross/junit.xml"
        if [ -f "$junit" ] && command -v python3 >/dev/null; then
            python3 - "$junit" <<'PY' || true
import sys, xml.etree.ElementTree as ET
cases = [(float(c.get("time", 0)), c.get("classname", ""), c.get("name", ""))
         for c in ET.parse(sys.argv[1]).iter("testcase")]
print(f"slowest of {len(cases)} tests under qemu (total {sum(t for t, _, _ in cases):.0f} s):")
for t, cls, name in sorted(cases, reverse=True)[:15]:
    print(f"  {t:7.1f} s  {cls} {name}")
PY
        fi
        timeout --kill-after=30 600 \
            cargo test --workspace --doc --locked --target "$TARGET" "${BUILD_STD[@]}"
    else
        timeout --kill-after=30 "${CROSS_TEST_TIMEOUT:-3600}" \
            cargo test --workspace --locked --no-fail-fast --target "$TARGET" "${BUILD_STD[@]}"
    fi
    echo "tests under qemu: $((SECONDS - start)) s"
fi

step "done"
