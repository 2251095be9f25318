#!/usr/bin/env bash
# Boots the aarch64 `branchd` in a full emulated ARM machine and measures it (issue 9,
# item 6). Not part of CI (a cold run takes tens of minutes); run it by hand:
#
#   image/qemu-system-boot.sh [--runs N] [--sim separate|builtin] [--store fresh|kept]
#                             [--env VAR=VALUE]... [--bin DIR]
#   image/qemu-system-boot.sh --prepare     # steps 1-4 only (kernel, initramfs, rootfs)
#
# What it does, each step cached under $QEMU_BOOT_WORK (default target/qemu-system;
# delete the directory to rebuild everything):
#
# 1. Installs what it needs from Debian's packages if missing: qemu-system-arm,
#    debootstrap, e2fsprogs (mkfs.ext4 -d, debugfs), cpio, kmod (depmod); adds the
#    arm64 architecture to dpkg if needed (for the two downloads below).
# 2. Fetches Debian's arm64 kernel (the package `linux-image-arm64` points at) and
#    `busybox-static:arm64` with `apt-get download` (not installed on the host).
# 3. Builds a small initramfs: busybox, and the modules the generic kernel needs to
#    mount the root disk (virtio-pci, virtio-blk, ext4 and their dependencies, resolved
#    with depmod). Its /init brings up `lo` (branchd's web API and the simulator's
#    console listen on 127.0.0.1), mounts /dev/vda and switch_roots to the `bl.init=`
#    program on the kernel command line.
# 4. Builds a minimal Debian arm64 root filesystem: `debootstrap --foreign --arch=arm64
#    --variant=minbase` from the mirror the host's apt uses, packed into an ext4 image
#    with `mkfs.ext4 -d`, then the second stage runs *inside the guest* (first boot, as
#    PID 1). That needs no binfmt_misc registration on the host (a machine-wide change
#    that would also alter how other aarch64 programs run here, e.g. the cross tests
#    under qemu-user), at the cost of emulated dpkg once (about 20 minutes here).
# 5. Copies the base image and writes into it, with debugfs (no loop mount): the
#    cross-built release `branchd` and `branch-sim` as /usr/bin/*, the README's
#    simulated-board config (firmware/examples-config/sim.toml, store in
#    /var/lib/branchline) as /etc/branchline/branchd.toml, and the measuring init.
# 6. Boots it RUNS times (default 3): `qemu-system-aarch64 -M virt -cpu cortex-a57
#    -m 512 -nographic` (TCG: no KVM here), one vCPU. The guest init wipes the store
#    (a first boot: store created and migrated, installer password hashed; `--store
#    kept` wipes it only on the first run, so runs 2..N are ordinary boots), starts
#    `branch-sim --link /run/branchline-lc` (the simulated line controller as its own
#    process, as the MCU is on a box; `--sim builtin` runs the simulator inside branchd
#    instead, as scripts/qemu-footprint.sh does), starts branchd as the systemd unit would (same ExecStart, plus any --env
#    variables as Environment= lines), and waits for the "branchd ready" log line.
#    3 s later it prints branchd's (and branch-sim's) VmRSS/VmHWM from
#    /proc/<pid>/status, smaps_rollup and the biggest mappings on the serial console,
#    stops branchd with SIGTERM (checking "branchd stopped") and powers off.
#
# Reported per run (parsed from the console, summary at the end):
# - host: qemu started -> the guest reports ready (kernel boot, init, branchd start);
# - guest: kernel start -> ready (/proc/uptime), and branchd spawn -> ready;
# - branchd VmRSS / VmHWM idle 3 s after ready, and the simulator's.
#
# --bin DIR: where branchd and branch-sim are (default
# target/cross/aarch64-unknown-linux-gnu/release, from
# scripts/cross-build.sh aarch64-unknown-linux-gnu). --env VAR=VALUE (repeatable) is put
# in branchd's environment, e.g. --env MALLOC_ARENA_MAX=2. Needs root (debootstrap,
# apt-get), about 1.5 GB of disk and 512 MiB of RAM for the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

RUNS=3
SIM=separate
STORE=fresh
BIN_DIR=target/cross/aarch64-unknown-linux-gnu/release
GUEST_ENV=()
PREPARE_ONLY=0
usage() {
    echo "usage: $0 [--runs N] [--sim separate|builtin] [--store fresh|kept] [--env VAR=VALUE]... [--bin DIR] | --prepare" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
        --sim) [ $# -ge 2 ] || usage; SIM=$2; shift 2 ;;
        --store) [ $# -ge 2 ] || usage; STORE=$2; shift 2 ;;
        --env) [ $# -ge 2 ] || usage; GUEST_ENV+=("$2"); shift 2 ;;
        --bin) [ $# -ge 2 ] || usage; BIN_DIR=$2; shift 2 ;;
        --prepare) PREPARE_ONLY=1; shift ;;
        *) usage ;;
    esac
done
case "$RUNS" in '' | *[!0-9]* | 0) echo "--runs: a positive number, not '$RUNS'" >&2; exit 2 ;; esac
case "$SIM" in separate | builtin) ;; *) echo "--sim: separate or builtin, not '$SIM'" >&2; exit 2 ;; esac
case "$STORE" in fresh | kept) ;; *) echo "--store: fresh or kept, not '$STORE'" >&2; exit 2 ;; esac
for e in ${GUEST_ENV[@]+"${GUEST_ENV[@]}"}; do
    [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_./:,=-]*$ ]] \
        || { echo "--env: VAR=VALUE with a plain value, not '$e'" >&2; exit 2; }
done
for b in branchd branch-sim; do
    [ "$PREPARE_ONLY" = 1 ] || [ -x "$BIN_DIR/$b" ] || {
        echo "no $BIN_DIR/$b: run scripts/cross-build.sh aarch64-unknown-linux-gnu --no-test first" >&2
        exit 1
    }
done
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, apt-get)" >&2; exit 1; }

WORK=$(realpath -m "${QEMU_BOOT_WORK:-target/qemu-system}")
mkdir -p "$WORK"
step() { printf '\n=== qemu-system: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# --- 1. packages ---------------------------------------------------------------------
step "packages"
PACKAGES=(qemu-system-arm debootstrap e2fsprogs cpio kmod)
missing=()
for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    # arm64 only (see ../shared/cross.md: never armhf, its index is broken here).
    dpkg --add-architecture arm64
    apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
else
    echo "all present: ${PACKAGES[*]}"
fi

# The suite and the mirror the host's apt uses for arm64 `main`.
SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME")
MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(ARCHITECTURE)' \
    'Created-By: Packages' | awk -v s="$SUITE" '$2 == s && $3 == "main" && $4 == "arm64" { print $1; exit }')
[ -n "$MIRROR" ] || { echo "apt has no arm64 'main' index for $SUITE: run apt-get update" >&2; exit 1; }
echo "suite $SUITE, mirror $MIRROR"

# --- 2. kernel and busybox -----------------------------------------------------------
step "kernel and busybox (apt-get download)"
fetch() { # fetch PACKAGE DIR: download and unpack one arm64 .deb into DIR (once)
    [ -f "$2/.done" ] && return 0
    rm -rf "$2" && mkdir -p "$2/deb"
    (cd "$2/deb" && apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed')
    dpkg-deb -x "$2"/deb/*.deb "$2/root"
    touch "$2/.done"
}
KPKG=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-arm64:arm64 (apt-get update?)" >&2; exit 1; }
fetch "$KPKG" "$WORK/kernel"
fetch busybox-static:arm64 "$WORK/busybox"
KVER=$(basename "$(ls -d "$WORK"/kernel/root/lib/modules/*)")
VMLINUZ="$WORK/kernel/root/boot/vmlinuz-$KVER"
[ -f "$WORK/kernel/root/lib/modules/$KVER/modules.dep" ] || depmod -b "$WORK/kernel/root" "$KVER"
echo "kernel $KPKG ($KVER)"

# --- 3. initramfs --------------------------------------------------------------------
INITRD="$WORK/initrd.cpio.gz"
if [ ! -f "$INITRD" ]; then
    step "initramfs"
    ird="$WORK/initrd"
    rm -rf "$ird" && mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
    cp "$WORK/busybox/root/bin/busybox" "$ird/bin/busybox"
    # Modules in load order: each one's dependencies (from modules.dep) first. crc32c
    # is ext4's and jbd2's soft dependency (checksums), loaded up front.
    mdir="$WORK/kernel/root/lib/modules/$KVER"
    declare -A loaded=()
    order=()
    add_module() {
        local path=$1 d
        [ -n "${loaded[$path]:-}" ] && return 0
        loaded[$path]=1
        for d in $(awk -v m="$path:" '$1 == m { $1 = ""; print }' "$mdir/modules.dep"); do
            add_module "$d"
        done
        order+=("$path")
    }
    for m in crypto/crc32c_generic drivers/virtio/virtio_pci drivers/block/virtio_blk fs/ext4/ext4; do
        add_module "kernel/$m.ko"
    done
    for path in "${order[@]}"; do
        cp "$mdir/$path" "$ird/lib/modules/"
        basename "$path" >>"$ird/lib/modules/order"
    done
    cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
# initramfs: load the root disk's modules, bring up lo, mount /dev/vda, switch_root
# to bl.init=PROGRAM from the kernel command line.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" || echo "initramfs: insmod $m failed"; done
ip link set lo up
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in bl.init=*) init=${arg#bl.init=} ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
EOF
    chmod 755 "$ird/init"
    (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -9) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    echo "initramfs: ${#order[@]} modules, $(stat -c %s "$INITRD") bytes"
fi

# qemu_boot IMAGE INIT TIMEOUT: boots, echoes the console prefixed with the host's
# seconds since qemu started (to stdout), returns qemu's status.
qemu_boot() {
    local t0=${EPOCHREALTIME/./} line t
    timeout --kill-after=10 "$3" qemu-system-aarch64 -M virt -cpu cortex-a57 -m 512 -nographic \
        -nic none -no-reboot -kernel "$VMLINUZ" -initrd "$INITRD" \
        -append "console=ttyAMA0 quiet loglevel=3 panic=-1 bl.init=$2" \
        -drive "file=$1,if=none,format=raw,id=root" -device virtio-blk-pci,drive=root \
        </dev/null | while IFS= read -r line; do
            t=$((${EPOCHREALTIME/./} - t0))
            printf '[%4d.%03d] %s\n' $((t / 1000000)) $((t / 1000 % 1000)) "${line%$'\r'}"
        done
    return "${PIPESTATUS[0]}"
}

# --- 4. root filesystem --------------------------------------------------------------
BASE="$WORK/base.img"
if [ ! -f "$BASE" ]; then
    step "debootstrap --foreign ($SUITE arm64 minbase)"
    rootfs="$WORK/rootfs"
    if [ ! -f "$rootfs/.foreign-done" ]; then
        rm -rf "$rootfs"
        debootstrap --foreign --arch=arm64 --variant=minbase "$SUITE" "$rootfs" "$MIRROR" \
            >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
        touch "$rootfs/.foreign-done"
    fi
    cat >"$rootfs/sbin/branchline-stage2" <<'EOF'
#!/bin/sh
# First boot, PID 1: debootstrap's second stage inside the guest, then power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
if /debootstrap/debootstrap --second-stage; then echo "BL-STAGE2 ok"; else echo "BL-STAGE2 failed"; tail -30 /debootstrap/debootstrap.log; fi
mountpoint -q /proc || mount -t proc proc /proc
rm -f /sbin/branchline-stage2
sync
echo o >/proc/sysrq-trigger
EOF
    chmod 755 "$rootfs/sbin/branchline-stage2"
    rm -f "$WORK/stage2.img"
    # Without /proc to mount, the first stage links proc -> /proc (a loop once booted).
    if [ -L "$rootfs/proc" ]; then rm "$rootfs/proc" && mkdir -m 555 "$rootfs/proc"; fi
    # Every step's input is the first stage's tree: a failed second stage starts over.
    mkfs.ext4 -q -F -L branchline-root -E root_owner=0:0 -d "$rootfs" "$WORK/stage2.img" 1536M
    debugfs -w -R "rm /.foreign-done" "$WORK/stage2.img" >/dev/null 2>&1
    step "debootstrap --second-stage inside the guest (emulated: minutes)"
    qemu_boot "$WORK/stage2.img" /sbin/branchline-stage2 3600 | tee "$WORK/stage2.log" | grep -E 'BL-STAGE2|E:|W:' || true
    grep -q "BL-STAGE2 ok" "$WORK/stage2.log" || { echo "second stage failed: $WORK/stage2.log" >&2; exit 1; }
    e2fsck -fy "$WORK/stage2.img" >/dev/null 2>&1 || [ $? -le 1 ] # 1: errors corrected
    mv "$WORK/stage2.img" "$BASE"
    rm -rf "$rootfs"
fi

if [ "$PREPARE_ONLY" = 1 ]; then
    echo "prepared: $BASE"
    exit 0
fi

# --- 5. the measured image -----------------------------------------------------------
step "image with branchd"
RUN_IMG="$WORK/run.img"
payload="$WORK/payload"
rm -rf "$payload" && mkdir -p "$payload"
cp --sparse=always "$BASE" "$RUN_IMG"
cfg_sed=(-e 's|^data_dir = .*|data_dir = "/var/lib/branchline"|')
if [ "$SIM" = separate ]; then
    # The stand-alone simulator's pty, as [board] uart overrides the profile's UART.
    cfg_sed+=(-e 's|^sim_console = .*|uart = "/run/branchline-lc"|')
fi
sed "${cfg_sed[@]}" firmware/examples-config/sim.toml >"$payload/branchd.toml"
grep -q '^data_dir = "/var/lib/branchline"' "$payload/branchd.toml" || { echo "sim.toml: no data_dir line to set" >&2; exit 1; }
if [ "$SIM" = separate ]; then
    grep -q '^uart = ' "$payload/branchd.toml" || { echo "sim.toml: no sim_console line to replace" >&2; exit 1; }
fi
{
    echo "# branchd's environment (Environment= lines of the unit), from --env"
    for e in ${GUEST_ENV[@]+"${GUEST_ENV[@]}"}; do echo "export $e"; done
    echo "BL_SIM=$SIM"
    echo "BL_STORE=$STORE"
} >"$payload/boot.env"
cat >"$payload/branchline-boot" <<'EOF'
#!/bin/sh
# PID 1 of the measuring boot (image/qemu-system-boot.sh): starts the simulator and
# branchd, waits for "branchd ready", prints the figures as "BL-RESULT key=value" lines
# on the console, stops branchd and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run
# Ptys (the simulator's line-controller link) need devpts.
mkdir -p /dev/pts && mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
result() { echo "BL-RESULT $*"; }
poweroff_now() { sync; echo o >/proc/sysrq-trigger; sleep 10; }
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# shellcheck disable=SC1091 # written by image/qemu-system-boot.sh
. /etc/branchline/boot.env
read -r up _ </proc/uptime
result "init_s=$up"
# A first boot (the store is created and migrated) unless --store kept and it exists.
if [ "$BL_STORE" = fresh ] || [ ! -f /var/lib/branchline/branchline.db ]; then
    rm -rf /var/lib/branchline && mkdir -p /var/lib/branchline
    result first_boot=1
else
    result first_boot=0
fi
simpid=
if [ "$BL_SIM" = separate ]; then
    # branch-sim reads console commands from stdin and ends at EOF: hold a fifo open.
    mkfifo /run/sim-stdin
    branch-sim --link /run/branchline-lc </run/sim-stdin >/run/branch-sim.log 2>&1 &
    simpid=$!
    exec 7>/run/sim-stdin
    i=0
    while [ ! -e /run/branchline-lc ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    [ -e /run/branchline-lc ] || { result error=no-simulator; cat /run/branch-sim.log; poweroff_now; }
fi
mkfifo /run/branchd-log
read -r t0 _ </proc/uptime
branchd --config /etc/branchline/branchd.toml >/dev/null 2>/run/branchd-log &
pid=$!
exec 3</run/branchd-log
t1=
while IFS= read -r line <&3; do
    echo "branchd| $line"
    case "$line" in *"branchd ready"*) read -r t1 _ </proc/uptime; break ;; esac
done
# Keep draining the log (branchd must never block on it).
cat <&3 >/run/branchd.log &
exec 3<&-
if [ -z "$t1" ]; then result error=not-ready; wait $pid; result exit=$?; poweroff_now; fi
result "ready_uptime_s=$t1" "spawn_to_ready_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
sleep 3
result "branchd_vmrss_kib=$(kib $pid VmRSS)" "branchd_vmhwm_kib=$(kib $pid VmHWM)" "threads=$(kib $pid Threads)"
[ -n "$simpid" ] && result "sim_vmrss_kib=$(kib "$simpid" VmRSS)" "sim_vmhwm_kib=$(kib "$simpid" VmHWM)"
awk '/^(Rss|Pss|Pss_Anon|Pss_File|Anonymous|Private_Clean|Private_Dirty|Shared_Clean):/ { printf "smaps_rollup %s %s kB\n", $1, $2 }' /proc/$pid/smaps_rollup
# Resident memory by mapping (anonymous ones by size: thread stacks and allocator
# arenas show up as repeated sizes).
awk '
    /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anon]" : $6; next }
    /^Size:/ { key = (name == "[anon]") ? "[anon " $2 " kB]" : name; next }
    /^Rss:/ { rss[key] += $2 }
    END { for (k in rss) if (rss[k] > 0) printf "smaps %6d kB %s\n", rss[k], k }' /proc/$pid/smaps | sort -k2 -nr | head -15
grep MemTotal /proc/meminfo | sed 's/^/meminfo /'
tr '\0' '\n' </proc/$pid/environ | sed 's/^/environ /'
kill -TERM $pid
wait $pid
result exit=$?
sleep 0.5
if grep -q "branchd stopped" /run/branchd.log; then result stopped=clean; else result stopped=unclean; tail -5 /run/branchd.log; fi
exec 7>&-
result done=1
poweroff_now
EOF
dfs_cmds="$payload/debugfs.cmds"
cat >"$dfs_cmds" <<EOF
mkdir /etc/branchline
write $REPO/$BIN_DIR/branchd /usr/bin/branchd
write $REPO/$BIN_DIR/branch-sim /usr/bin/branch-sim
write $payload/branchd.toml /etc/branchline/branchd.toml
write $payload/boot.env /etc/branchline/boot.env
write $payload/branchline-boot /usr/sbin/branchline-boot
sif /usr/bin/branchd mode 0100755
sif /usr/bin/branch-sim mode 0100755
sif /usr/sbin/branchline-boot mode 0100755
sif /etc/branchline/branchd.toml mode 0100644
sif /etc/branchline/boot.env mode 0100644
EOF
debugfs -w -f "$dfs_cmds" "$RUN_IMG" >"$payload/debugfs.log" 2>&1
if grep -qiE 'error|not found|could not' "$payload/debugfs.log"; then cat "$payload/debugfs.log" >&2; exit 1; fi
echo "branchd $(stat -c %s "$BIN_DIR/branchd") bytes, simulator: $SIM, store: $STORE, env: ${GUEST_ENV[*]:-none}"

# --- 6. boot and measure -------------------------------------------------------------
step "boot and measure ($RUNS runs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
summary=()
for run in $(seq 1 "$RUNS"); do
    log="$WORK/boot-$run.log"
    qemu_boot "$RUN_IMG" /sbin/branchline-boot 900 >"$log" || true
    val() { grep -o 'BL-RESULT .*' "$log" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
    host_ready=$(sed -n 's/^\[ *\([0-9.]*\)\] BL-RESULT ready_uptime_s=.*/\1/p' "$log" | head -1)
    if [ -z "$host_ready" ] || [ "$(val "done")" != 1 ]; then
        echo "run $run failed; console:" >&2
        tail -40 "$log" >&2
        exit 1
    fi
    line=$(printf 'run %d (first boot: %s): qemu start -> ready %.2f s (guest: kernel -> ready %s s, branchd spawn -> ready %s s); branchd idle VmRSS %s KiB, VmHWM %s KiB, %s threads' \
        "$run" "$(val first_boot)" "$host_ready" "$(val ready_uptime_s)" "$(val spawn_to_ready_s)" \
        "$(val branchd_vmrss_kib)" "$(val branchd_vmhwm_kib)" "$(val threads)")
    if [ "$SIM" = separate ]; then
        line+=$(printf '; branch-sim VmRSS %s KiB' "$(val sim_vmrss_kib)")
    fi
    line+="; stop: $(val stopped)"
    echo "$line"
    summary+=("$line")
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "mappings of the last run ($WORK/boot-$RUNS.log):"
grep -E '^\[ *[0-9.]+\] (smaps|smaps_rollup) ' "$WORK/boot-$RUNS.log" | sed 's/^\[[^]]*\] //' || true
