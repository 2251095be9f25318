#!/usr/bin/env bash
# SIP signalling benchmark (not part of the test run; figures go into BENCHMARKS.md by
# hand, with the date, the machine and the load average this script prints).
#
# Target (issue 3): SIPp UAC -> box (branchd as B2BUA) -> SIPp UAS, short calls, at
# least 1,000 calls/s sustained with zero failed calls, compared in the same run with
# SIPp UAC -> Kamailio (transaction-stateful proxy) -> SIPp UAS.
#
# What one run does:
#   1. builds the release branchd (`cargo build --release -p branchline-firmware
#      --bin branchd`), the profile that ships;
#   2. starts Kamailio in the foreground (`-DD -E`, config scripts/bench-sip/kamailio.cfg:
#      tm + t_relay + record_route, a static route to the UAS, no registration) and
#      branchd (config scripts/bench-sip/branchd.toml, simulated board, SIP on UDP),
#      both on loopback ports of their own (never 5060), with working directory, PID
#      file and data in a temporary directory that is removed at the end;
#   3. registers the SIPp UAS's address as SIP extension 201 on branchd (REGISTER with
#      digest auth, scripts/bench-sip/register.py, SHA-256: SIPp 3.6.1 reads only the
#      first challenge and knows only MD5, and branchd offers SHA-256 first);
#   4. for every rate (calls/s), first through Kamailio, then through branchd: starts
#      the SIPp UAS (uas.xml), runs the SIPp UAC (uac.xml) with `-r RATE -m
#      RATE*DURATION`: INVITE (G.711 offer) / 100 / 180 / 200 (answer) / ACK / pause
#      0-100 ms uniform / BYE / 200. The UAC reaches branchd as its SIP trunk (the trunk
#      authenticates by source address: no digest on INVITE), dialling a DID that
#      routes to extension 201, so every call is two SIP legs bridged by the B2BUA;
#   5. reports per step: successful and failed calls (UAC and UAS, from SIPp's
#      `-trace_stat` CSV), achieved calls/s (successful calls / wall time of the UAC
#      run, which includes the last call's 0-100 ms tail; "created" is the rate SIPp
#      started calls at while it was starting them), SIPp retransmissions,
#      mean INVITE->200 time, and the system under test's CPU (% of one core, from
#      utime+stime in /proc/<pid>/stat over the UAC run; Kamailio: all its processes)
#      and memory (branchd: VmRSS and VmHWM from /proc/<pid>/status; Kamailio: the sum
#      of Pss over its processes, since they share one SHM segment);
#   6. prints, per system, the highest rate that passed (zero failed calls on both
#      SIPp sides, every call successful, calls created at >= 95% of the target rate
#      so the load generator was not the limit) and the ratio box / Kamailio, plus
#      the CPU ratio at each rate both passed.
#   A system stops stepping up after its first failed step.
#
# CPU pinning (on by default; --no-pin to turn off): the machine has 2 cores. The
# system under test (Kamailio with all its processes, or branchd with all its
# threads) is pinned to the last CPU, both SIPp instances to the first, so each
# system gets the same single core and never competes with the load generator. On a
# machine with more cores the system under test still gets exactly one.
# Priority (--nice N, default -10 when run as root, else 0): every process of the
# bench (SIPp, Kamailio, branchd) runs at this nice value, so that other work on the
# machine (builds) takes a small, equal share of the cores from both systems instead
# of starving the load generator; pinning alone does not keep other processes off
# the pinned cores. With the kernel's scheduler autogroups on, a nice value only
# weighs inside its session: the script re-runs itself in a session of its own and
# gives that session's autogroup the same nice value (scripts/bench-sched.sh; it
# prints how the CPU is shared). The load average printed with every step shows how
# busy the machine was.
# Kamailio runs with the TLSF allocator (-x tlsf -X tlsf): with the Debian build's
# default q_malloc it spent two thirds of its CPU in qm_malloc and failed at 500
# calls/s, which would make a poor baseline.
# Kamailio runs 1 UDP worker by default (--kam-workers N): it has one core, and with
# more workers it relays messages of one call in parallel and so reorders them (a 180
# overtaking the 200, a BYE overtaking the ACK), which the strict SIPp scenarios count
# as failed calls although a real UA would cope.
#
# Usage:
#   scripts/bench-sip.sh [--rates "200 500 1000 1500"] [--duration SECONDS]
#                        [--only kamailio|box|both] [--no-pin] [--kam-workers N]
#                        [--nice N] [--no-build | --branchd PATH] [--keep]
#     --rates      calls/s steps, ascending (default "200 500 1000 1500")
#     --duration   seconds per step (default 30): each step is RATE*DURATION calls
#     --only       run one side only (default both, interleaved rate by rate)
#     --no-pin     no taskset pinning
#     --nice N     nice value of the bench's processes (default -10 as root, else 0)
#     --no-build   use target/release/branchd as it is (e.g. while the working tree
#                  does not compile); the script prints the binary's build time
#     --branchd P  benchmark the branchd binary at P instead (implies --no-build)
#     --keep       keep the temporary directory (SIPp CSVs, screens, error logs,
#                  daemon logs) and print its path
#   Ports (loopback, overridable by environment): Kamailio BENCH_SIP_KAM_PORT (15070)
#   with its SIPp UAC BENCH_SIP_UAC_PORT (15080) and UAS BENCH_SIP_UAS_PORT (15090);
#   branchd BENCH_SIP_BOX_PORT (15060) with its SIPp UAC BENCH_SIP_BOX_UAC_PORT (15084)
#   and UAS BENCH_SIP_BOX_UAS_PORT (15094). Each system has SIPp ports of its own, so
#   late retransmissions from one never reach the other's SIPp. A system that fails a
#   step is stopped at once, so that it does not go on using the core the other
#   system is measured on. branchd's web API and simulator console:
#   BENCH_SIP_BOX_WEB_PORT (15081), BENCH_SIP_BOX_CONSOLE_PORT (15082); its RTP ports
#   20000-29999.
#
# Needs: sipp (Debian sip-tester), kamailio (Debian kamailio), taskset (util-linux),
# python3 (the REGISTER helper).
set -euo pipefail
# shellcheck source=scripts/bench-sched.sh
. "$(dirname "$0")/bench-sched.sh"
bench_own_session "$@"
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/scripts/bench-sip

RATES="200 500 1000 1500"
DURATION=30
ONLY=both
PIN=1
KAM_WORKERS=1
KEEP=0
BUILD=1
BRANCHD=
NICE=$([ "$(id -u)" = 0 ] && echo -10 || echo 0)
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        --kam-workers) KAM_WORKERS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --branchd) BRANCHD=$2; BUILD=0; shift 2 ;;
        --nice) NICE=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-sip: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$ONLY" in kamailio | box | both) ;; *) echo "bench-sip: --only kamailio|box|both" >&2; exit 2 ;; esac
for r in $RATES; do
    [[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "bench-sip: bad rate '$r'" >&2; exit 2; }
done
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "bench-sip: bad duration '$DURATION'" >&2; exit 2; }
[[ "$NICE" =~ ^-?[0-9]+$ ]] || { echo "bench-sip: bad --nice" >&2; exit 2; }
[[ "$KAM_WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-sip: bad --kam-workers" >&2; exit 2; }
bench_autogroup_nice "$NICE"

UAC_PORT=${BENCH_SIP_UAC_PORT:-15080}
UAS_PORT=${BENCH_SIP_UAS_PORT:-15090}
BOX_UAC_PORT=${BENCH_SIP_BOX_UAC_PORT:-15084}
BOX_UAS_PORT=${BENCH_SIP_BOX_UAS_PORT:-15094}
KAM_PORT=${BENCH_SIP_KAM_PORT:-15070}
BOX_PORT=${BENCH_SIP_BOX_PORT:-15060}
BOX_WEB_PORT=${BENCH_SIP_BOX_WEB_PORT:-15081}
BOX_CONSOLE_PORT=${BENCH_SIP_BOX_CONSOLE_PORT:-15082}
for p in "$UAC_PORT" "$UAS_PORT" "$KAM_PORT" "$BOX_PORT" "$BOX_UAC_PORT" "$BOX_UAS_PORT"; do
    if [ "$p" = 5060 ]; then echo "bench-sip: port 5060 is not used by this bench" >&2; exit 2; fi
done
# What branchd's bench config expects (scripts/bench-sip/branchd.toml).
BOX_EXTENSION=201
BOX_PASSWORD=bench-Secret-7f3a
BOX_DOMAIN=bench.branch.test
BOX_DID=+4930555201

for tool in sipp kamailio taskset nice python3 ss; do
    command -v "$tool" >/dev/null || { echo "bench-sip: $tool not found" >&2; exit 1; }
done

NCPU=$(nproc)
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then
    GEN_CPU=0
    SUT_CPU=$((NCPU - 1))
    GEN=(nice -n "$NICE" taskset -c "$GEN_CPU")
    SUT=(nice -n "$NICE" taskset -c "$SUT_CPU")
else
    PIN=0
    GEN=(nice -n "$NICE")
    SUT=(nice -n "$NICE")
fi
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-sip.XXXXXX")
KAM_PID=
BOX_PID=
UAS_PID=

cleanup() {
    set +e
    for pid in $UAS_PID $BOX_PID; do
        kill "$pid" 2>/dev/null
    done
    if [ -n "$KAM_PID" ]; then
        kill "$KAM_PID" 2>/dev/null
    fi
    for pid in $UAS_PID $BOX_PID $KAM_PID; do
        wait_gone "$pid" 5 || kill -9 "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "$KEEP" = 1 ]; then
        echo "bench-sip: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- /proc helpers -----------------------------------------------------------

# utime+stime (clock ticks) summed over the given PIDs (fields 14 and 15 of
# /proc/<pid>/stat, counted after the command name, which may contain spaces).
cpu_ticks() {
    local total=0 pid rest
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        rest=$(sed 's/^.*) //' "/proc/$pid/stat") || continue
        # After "pid (comm) " the state is field 3, so utime (14) and stime (15) are
        # words 12 and 13 of the rest.
        total=$((total + $(echo "$rest" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# Kamailio's main process and its children (UDP workers, timers).
kam_pids() {
    echo "$KAM_PID"
    ps -o pid= --ppid "$KAM_PID" 2>/dev/null | tr -d ' '
}

status_kib() { # pid field
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null
}

pss_kib() { # pids...: sum of Pss
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '$1 == "Pss:" {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

now() { date +%s.%N; }

# --- SIPp helpers -----------------------------------------------------------

# Column of a cumulative counter in a SIPp -trace_stat CSV, from the last row.
csv_value() { # file column-name
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        { last = $col }
        END { if (col == "") exit 1; print last }' "$1"
}

# Seconds since the Unix epoch of a "date<TAB>time<TAB>epoch" CSV cell.
csv_epoch() { # file column-name
    csv_value "$1" "$2" | awk -F'\t' '{print $3}'
}

# SIPp "HH:MM:SS:uuuuuu" to milliseconds.
hms_ms() {
    awk -F: '{printf "%.2f", (($1 * 60 + $2) * 60 + $3) * 1000 + $4 / 1000}' <<<"$1"
}

# Waits until a process has exited (a zombie child of ours counts as exited).
wait_gone() { # pid seconds
    local i state
    for i in $(seq $(($2 * 10))); do
        state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
        if [ -z "$state" ] || [ "$state" = Z ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start_uas() { # step-dir port
    (
        cd "$1"
        exec "${GEN[@]}" sipp -sf "$HERE/uas.xml" -i 127.0.0.1 -p "$2" -t u1 \
            -nostdin -aa -buff_size 4194304 -trace_stat -stf uas.csv -fd 1 \
            -trace_err -trace_screen >uas.out 2>&1
    ) &
    UAS_PID=$!
    sleep 0.5
    if ! kill -0 "$UAS_PID" 2>/dev/null; then
        echo "bench-sip: SIPp UAS did not start:" >&2
        cat "$1/uas.out" >&2
        exit 1
    fi
}

stop_uas() {
    # SIGUSR1: SIPp stops taking new calls, finishes the current ones and writes its
    # final statistics.
    kill -USR1 "$UAS_PID" 2>/dev/null || true
    if ! wait_gone "$UAS_PID" 15; then
        kill "$UAS_PID" 2>/dev/null || true
    fi
    wait "$UAS_PID" 2>/dev/null || true
    UAS_PID=
}

# One step: UAS up, UAC at RATE to the target, measure the system under test.
# Prints one result line and stores it in RESULT_<system>_<rate>.
run_step() { # system(kamailio|box) rate
    local system=$1 rate=$2 dir calls target service caller pids t0 t1 c0 c1 rc uac_port uas_port
    dir=$WORK/$system-$rate
    mkdir -p "$dir"
    calls=$((rate * DURATION))
    if [ "$system" = kamailio ]; then
        target=127.0.0.1:$KAM_PORT
        service=$BOX_EXTENSION
        caller=sipp
        uac_port=$UAC_PORT
        uas_port=$UAS_PORT
    else
        target=127.0.0.1:$BOX_PORT
        service=$BOX_DID
        caller=+4930999000
        uac_port=$BOX_UAC_PORT
        uas_port=$BOX_UAS_PORT
        register_uas "$dir"
    fi
    if ! sut_alive "$system"; then
        echo "bench-sip: $system is no longer running before its $rate calls/s step; its log:" >&2
        tail -20 "$WORK/$system/"*.log >&2
        exit 1
    fi
    start_uas "$dir" "$uas_port"

    if [ "$system" = kamailio ]; then
        mapfile -t pids < <(kam_pids)
    else
        pids=("$BOX_PID")
    fi
    c0=$(cpu_ticks "${pids[@]}")
    u0=$(cpu_ticks "$UAS_PID")
    t0=$(now)
    # The subshell's `times` gives the CPU of its only child, the UAC; -timeout ends
    # a run that hangs.
    (
        cd "$dir"
        rc=0
        "${GEN[@]}" sipp -sf "$HERE/uac.xml" \
            -i 127.0.0.1 -p "$uac_port" -t u1 -s "$service" -key caller "$caller" \
            -r "$rate" -rp 1000 -m "$calls" -l $((rate * 10)) -nostdin -aa \
            -buff_size 4194304 -recv_timeout 10000 -timeout $((DURATION * 3 + 60)) \
            -timeout_error -trace_stat -stf uac.csv -fd 1 -trace_err -trace_screen \
            "$target" >uac.out 2>&1 || rc=$?
        echo "$rc" >uac.rc
        times >uac.times
    )
    t1=$(now)
    rc=$(cat "$dir/uac.rc")
    if [ "$system" = kamailio ]; then
        mapfile -t pids < <(kam_pids)
    fi
    c1=$(cpu_ticks "${pids[@]}")
    u1=$(cpu_ticks "$UAS_PID")
    local gen_cpu
    gen_cpu=$(awk -v a="$t0" -v b="$t1" -v du=$((u1 - u0)) -v hz="$CLK_TCK" '
        function secs(t, m, s) { split(t, m, "m"); s = m[2]; sub("s", "", s); return m[1] * 60 + s }
        NR == 2 { printf "UAC %.0f%% UAS %.0f%%", 100 * (secs($1) + secs($2)) / (b - a), 100 * du / hz / (b - a) }' "$dir/uac.times")
    local mem
    if [ "$system" = kamailio ]; then
        mem="Pss $(mib "$(pss_kib "${pids[@]}")") MiB (all processes)"
    else
        mem="VmRSS $(mib "$(status_kib "$BOX_PID" VmRSS)") MiB, VmHWM $(mib "$(status_kib "$BOX_PID" VmHWM)") MiB"
    fi
    stop_uas
    local died=
    if ! sut_alive "$system"; then
        died=1
        echo "bench-sip: $system exited during the $rate calls/s step (killed from outside, or crashed); its log:" >&2
        tail -20 "$WORK/$system/"*.log >&2
    fi

    if [ ! -s "$dir/uac.csv" ]; then
        echo "bench-sip: $system at $rate calls/s: SIPp UAC wrote no statistics (exit $rc):" >&2
        tail -20 "$dir/uac.out" >&2
        eval "RESULT_${system}_$rate=fail"
        return 0
    fi
    local ok failed created start end wall achieved created_rate retrans rt ooc uas_ok uas_failed cpu pass
    ok=$(csv_value "$dir/uac.csv" 'SuccessfulCall(C)')
    failed=$(csv_value "$dir/uac.csv" 'FailedCall(C)')
    created=$(csv_value "$dir/uac.csv" 'OutgoingCall(C)')
    retrans=$(csv_value "$dir/uac.csv" 'Retransmissions(C)')
    ooc=$(csv_value "$dir/uac.csv" 'OutOfCallMsgs(C)')
    rt=$(hms_ms "$(csv_value "$dir/uac.csv" 'ResponseTime1(C)')")
    start=$(csv_epoch "$dir/uac.csv" StartTime)
    end=$(csv_epoch "$dir/uac.csv" CurrentTime)
    uas_ok=$(csv_value "$dir/uas.csv" 'SuccessfulCall(C)' 2>/dev/null || echo "?")
    uas_failed=$(csv_value "$dir/uas.csv" 'FailedCall(C)' 2>/dev/null || echo "?")
    uas_retrans=$(csv_value "$dir/uas.csv" 'Retransmissions(C)' 2>/dev/null || echo "?")
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
    achieved=$(awk -v n="$ok" -v w="$wall" 'BEGIN {printf "%.1f", (w > 0 ? n / w : 0)}')
    # Creation rate: from the last once-a-second row before the last call was created
    # (calls created so far / time since start); the whole run for very short runs.
    created_rate=$(awk -F';' -v n="$created" -v w="$wall" '
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "StartTime") cs = i; if ($i == "CurrentTime") cc = i; if ($i == "OutgoingCall(C)") co = i }; next }
        { split($cs, a, "\t"); split($cc, b, "\t"); if ($co < n && b[3] - a[3] > 0.5) r = $co / (b[3] - a[3]) }
        END { if (r == "") r = (w > 0 ? n / w : 0); printf "%.1f", r }' "$dir/uac.csv")
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" \
        'BEGIN {printf "%.1f", 100 * d / hz / (b - a)}')
    pass=PASS
    if [ -n "$died" ] || [ "$rc" != 0 ] || [ "$failed" != 0 ] || [ "$ok" != "$calls" ] ||
        [ "$uas_failed" != 0 ] ||
        ! awk -v c="$created_rate" -v r="$rate" 'BEGIN {exit !(c >= 0.95 * r)}'; then
        pass=FAIL
    fi
    printf '%-8s %5d cps  %-4s  ok %6s/%-6s failed %s (UAS ok %s failed %s)  created %7s cps  achieved %7s cps  retrans %s/%s  INVITE->200 %s ms  CPU %5s%%  %s  (SIPp CPU: %s)\n' \
        "$system" "$rate" "$pass" "$ok" "$calls" "$failed" "$uas_ok" "$uas_failed" \
        "$created_rate" "$achieved" "$retrans" "$uas_retrans" "$rt" "$cpu" "$mem" "$gen_cpu"
    if [ "$ooc" != 0 ]; then
        echo "         ($ooc out-of-call messages at the UAC)"
    fi
    if [ "$pass" = FAIL ]; then
        echo "         SIPp UAC exit $rc; logs in $dir (run with --keep to keep them)"
        eval "RESULT_${system}_$rate=fail"
    else
        eval "RESULT_${system}_$rate=$cpu"
    fi
}

# --- systems under test -----------------------------------------------------

start_kamailio() {
    mkdir -p "$WORK/kamailio"
    "${SUT[@]}" kamailio -DD -E -f "$HERE/kamailio.cfg" -l "udp:127.0.0.1:$KAM_PORT" \
        -A "UAS_URI=\"sip:127.0.0.1:$UAS_PORT\"" -A "WORKERS=$KAM_WORKERS" \
        -w "$WORK/kamailio" -Y "$WORK/kamailio" -P "$WORK/kamailio/kamailio.pid" \
        -m 256 -M 16 -x tlsf -X tlsf >"$WORK/kamailio/kamailio.log" 2>&1 &
    KAM_PID=$!
    local i
    for i in $(seq 50); do
        [ -s "$WORK/kamailio/kamailio.pid" ] && break
        kill -0 "$KAM_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$KAM_PID" 2>/dev/null || [ ! -s "$WORK/kamailio/kamailio.pid" ]; then
        echo "bench-sip: kamailio did not start:" >&2
        tail -20 "$WORK/kamailio/kamailio.log" >&2
        exit 1
    fi
    # With -DD the process we started is the main one; its PID file says the same.
    KAM_PID=$(cat "$WORK/kamailio/kamailio.pid")
    echo "$(kamailio -v | sed -n "s/^version: //p") on udp:127.0.0.1:$KAM_PORT, $KAM_WORKERS UDP workers, PID $KAM_PID"
}

start_box() {
    local bin=$BRANCHD dir=$WORK/box
    mkdir -p "$dir"
    sed -e "s|@DATA_DIR@|$dir/data|g" \
        -e "s|@BOX_PORT@|$BOX_PORT|g" \
        -e "s|@WEB_PORT@|$BOX_WEB_PORT|g" \
        -e "s|@CONSOLE_PORT@|$BOX_CONSOLE_PORT|g" \
        -e "s|@UAC_PORT@|$BOX_UAC_PORT|g" \
        -e "s|@EXTENSION@|$BOX_EXTENSION|g" \
        -e "s|@PASSWORD@|$BOX_PASSWORD|g" \
        -e "s|@DOMAIN@|$BOX_DOMAIN|g" \
        -e "s|@DID@|$BOX_DID|g" \
        "$HERE/branchd.toml" >"$dir/branchd.toml"
    "$bin" --config "$dir/branchd.toml" --check-config >/dev/null || {
        echo "bench-sip: branchd rejects the bench config $dir/branchd.toml" >&2
        exit 1
    }
    (cd "$dir" && exec "${SUT[@]}" "$bin" --config "$dir/branchd.toml") >"$dir/branchd.log" 2>&1 &
    BOX_PID=$!
    # Ready when its SIP UDP socket is bound (the log is at "warn": no start-up line).
    local i
    for i in $(seq 100); do
        ss -Hlun "sport = :$BOX_PORT" | grep -q . && break
        kill -0 "$BOX_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! ss -Hlun "sport = :$BOX_PORT" | grep -q . || ! kill -0 "$BOX_PID" 2>/dev/null; then
        echo "bench-sip: branchd did not start:" >&2
        tail -20 "$dir/branchd.log" >&2
        exit 1
    fi
    echo "branchd $(stat -c %s "$bin") bytes on udp:127.0.0.1:$BOX_PORT, PID $BOX_PID, VmRSS idle $(mib "$(status_kib "$BOX_PID" VmRSS)") MiB"
}

# Whether the system under test is still running (not a zombie).
sut_alive() { # kamailio|box
    local pid state
    if [ "$1" = kamailio ]; then pid=$KAM_PID; else pid=$BOX_PID; fi
    [ -n "$pid" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}

# Stops a system under test (after it failed a step).
stop_system() { # kamailio|box
    local pid
    if [ "$1" = kamailio ]; then
        pid=$KAM_PID
        KAM_PID=
    else
        pid=$BOX_PID
        BOX_PID=
    fi
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "         ($1 stopped: it failed this step)"
}

# Registers the UAS's address (127.0.0.1:BOX_UAS_PORT) as the contact of the bench
# extension; done before every box step (a refresh), from the UAS's own port.
register_uas() { # step-dir
    if ! "${GEN[@]}" python3 "$HERE/register.py" --registrar "127.0.0.1:$BOX_PORT" \
        --local "127.0.0.1:$BOX_UAS_PORT" --extension "$BOX_EXTENSION" \
        --password "$BOX_PASSWORD" --domain "$BOX_DOMAIN" >"$1/register.out" 2>&1; then
        echo "bench-sip: REGISTER of extension $BOX_EXTENSION failed:" >&2
        cat "$1/register.out" >&2
        exit 1
    fi
}

# --- run -------------------------------------------------------------------

echo "== bench-sip $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -m), $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   rates: $RATES calls/s, $DURATION s per step; nice $NICE; pinning: $([ "$PIN" = 1 ] && echo "SIPp on CPU $GEN_CPU, system under test on CPU $SUT_CPU" || echo off)"
echo "   $(bench_sched_note)"
echo "   $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1)"

if [ "$ONLY" != kamailio ]; then
    if [ "$BUILD" = 1 ]; then
        echo "== building release branchd"
        cargo build --release -p branchline-firmware --bin branchd
    fi
    if [ -z "$BRANCHD" ]; then
        BRANCHD=$ROOT/target/release/branchd
        tree=", tree at $(git -C "$ROOT" log -1 --format=%h)$(git -C "$ROOT" diff --quiet HEAD -- firmware board sync 2>/dev/null || echo ' with uncommitted changes')"
    else
        BRANCHD=$(realpath "$BRANCHD")
        tree=
    fi
    [ -x "$BRANCHD" ] || { echo "bench-sip: no branchd at $BRANCHD" >&2; exit 1; }
    echo "   branchd: $BRANCHD built $(date -u -r "$BRANCHD" '+%Y-%m-%d %H:%M:%S UTC')$tree"
fi

systems=()
if [ "$ONLY" != box ]; then
    start_kamailio
    systems+=(kamailio)
fi
if [ "$ONLY" != kamailio ]; then
    start_box
    systems+=(box)
fi

echo "== steps (CPU: % of one core used by the system under test during the UAC run)"
declare -A stopped=()
for rate in $RATES; do
    for system in "${systems[@]}"; do
        [ -n "${stopped[$system]:-}" ] && continue
        run_step "$system" "$rate"
        v=RESULT_${system}_$rate
        if [ "${!v}" = fail ]; then
            stopped[$system]=1
            stop_system "$system"
        fi
    done
    echo "   (load average $(cut -d' ' -f1-3 /proc/loadavg))"
done

echo "== summary"
declare -A best=()
for system in "${systems[@]}"; do
    best[$system]=0
    for rate in $RATES; do
        v=RESULT_${system}_$rate
        if [ -n "${!v:-}" ] && [ "${!v}" != fail ]; then
            best[$system]=$rate
        fi
    done
    echo "$system: highest rate with zero failed calls: ${best[$system]} calls/s"
done
if [ "$ONLY" = both ]; then
    awk -v b="${best[box]}" -v k="${best[kamailio]}" 'BEGIN {
        if (k > 0) printf "ratio box / Kamailio (highest passing rate): %.2f\n", b / k;
        else print "ratio box / Kamailio: Kamailio passed no step" }'
    for rate in $RATES; do
        vb=RESULT_box_$rate
        vk=RESULT_kamailio_$rate
        if [ -n "${!vb:-}" ] && [ "${!vb}" != fail ] && [ -n "${!vk:-}" ] && [ "${!vk}" != fail ]; then
            awk -v r="$rate" -v b="${!vb}" -v k="${!vk}" 'BEGIN {
                printf "  at %d calls/s: CPU box %.1f%%, Kamailio %.1f%%", r, b, k;
                if (k > 0) printf " (box / Kamailio %.2f)", b / k;
                printf "\n" }'
        fi
    done
fi
if [ -n "${best[box]:-}" ] && [ "${best[box]}" -lt 1000 ]; then
    echo "box target (1,000 calls/s with zero failed calls): NOT MET"
elif [ -n "${best[box]:-}" ]; then
    echo "box target (1,000 calls/s with zero failed calls): met"
fi
