# Sourced by the benchmark scripts (bench-sip.sh, bench-relay.sh): makes their `nice`
# count on a kernel with scheduler autogroups.
#
# With CONFIG_SCHED_AUTOGROUP on (/proc/sys/kernel/sched_autogroup_enabled = 1, the
# default of Debian's kernels) the scheduler first shares a CPU between sessions
# (autogroups), and a process's nice value only weighs against processes of its own
# session. A benchmark pinned to a core at nice -10 then still gets only 1/(N+1) of
# that core while N other sessions (builds started from other terminals or agents)
# have runnable work there, whatever their nice. Measured on the 2-core machine on
# 2026-12-02: branchd under bench-sip.sh failed 700 calls/s at 46% of its core while
# two other sessions' builds ran at nice 19, and passed 1,300 calls/s once autogroups
# were off. So: run the bench in a session of its own (setsid), and give that
# session's autogroup the bench's nice value (/proc/self/autogroup, see sched(7));
# autogroups are left on for everything else.
#
#   bench_own_session "$@"        first thing in the script: re-executes it under
#                                 setsid when autogroups are on (no-op otherwise)
#   bench_autogroup_nice N        after the options are parsed: the session's nice
#   bench_sched_note              one line for the report: how the CPU is shared

bench_autogroups_on() {
    [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]
}

bench_own_session() {
    if bench_autogroups_on && [ -z "${BENCH_OWN_SESSION:-}" ] && command -v setsid >/dev/null; then
        export BENCH_OWN_SESSION=1
        # -w: wait for the script and pass its exit status on.
        exec setsid -w bash "$0" "$@"
    fi
}

bench_autogroup_nice() {
    BENCH_AUTOGROUP_NICE=
    if bench_autogroups_on && [ -w /proc/self/autogroup ]; then
        # A negative value needs CAP_SYS_NICE (root); a refusal leaves the session's
        # weight as it was, and the note says so.
        if echo "$1" 2>/dev/null >/proc/self/autogroup; then
            BENCH_AUTOGROUP_NICE=$1
        fi
    fi
}

bench_sched_note() {
    if ! bench_autogroups_on; then
        echo "scheduler autogroups off: nice values weigh machine-wide"
    elif [ -n "${BENCH_AUTOGROUP_NICE:-}" ]; then
        echo "scheduler autogroups on: the bench runs in its own session, autogroup nice $BENCH_AUTOGROUP_NICE"
    else
        echo "scheduler autogroups on and the session's autogroup nice NOT set (not root?): other sessions' work takes an equal share of the bench's cores"
    fi
}
