#!/usr/bin/env bash
# The cost the seccomp supervisor (`keepalive-shim run --mode seccomp`) adds to the calls it
# traps, and to those it does not: benches/supervise_calls.c, built static, run with and without
# the supervisor in alternation, ROUNDS times each; each run gives the median of its timed calls,
# and the table shows, per row, the median over the rounds of (with − without) and of the two
# medians. Rows:
#   socket trap:  TCP socket() (trapped), UDP socket() (the filter reads its arguments),
#                 getpid() (allowed from the kernel's per-number cache)
#   connect trap: loopback connect() (trapped)
#   FORCE:        setsockopt(TCP_KEEPIDLE) (trapped only with KEEPALIVE_FORCE)
#   the bare round trip: an MPTCP socket() (trapped, let through at once)
# with the supervisor and the program on one CPU (both pinned to CPU 0), left to the scheduler
# (no pinning: what a user gets), and kept apart (supervisor on CPU 0, program on CPU 1), with
# and without SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
# Prints Markdown. About a minute. Usage: scripts/bench-supervise.sh [ROUNDS] (default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
N=20000

cargo build --quiet --release -p keepalive-shim-cli
TOOL=$PWD/target/release/keepalive-shim
BIN=$PWD/target/tmp/supervise_calls
mkdir -p target/tmp
gcc -static -O2 -pthread -o "$BIN" benches/supervise_calls.c

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
field() { sed -E "s/.*\"$1\":([0-9]+).*/\1/"; }

# row LABEL MODE CPUS OPTIONS...: CPUS is "one", "any" or "apart".
row() {
    local label=$1 mode=$2 cpus=$3
    shift 3
    local pin=() cpu_arg=()
    case $cpus in
        one) pin=(taskset -c 0) ;;
        apart) pin=(taskset -c 0); cpu_arg=(1) ;;
    esac
    local diffs=() withs=() withouts=()
    for _ in $(seq "$ROUNDS"); do
        local without with
        without=$("${pin[@]}" "$BIN" "$mode" "$N" "${cpu_arg[@]}" | field median)
        with=$(env -u LD_PRELOAD "$@" "${pin[@]}" "$TOOL" run --mode seccomp "${RUN_OPTS[@]}" -- \
            "$BIN" "$mode" "$N" "${cpu_arg[@]}" | field median)
        withouts+=("$without")
        withs+=("$with")
        diffs+=($((with - without)))
    done
    local w wo d
    wo=$(printf '%s\n' "${withouts[@]}" | median)
    w=$(printf '%s\n' "${withs[@]}" | median)
    d=$(printf '%s\n' "${diffs[@]}" | median)
    printf '| %s | %s | %d ns | %d ns | %+d ns (%.2f×) |\n' "$label" "$cpus" "$wo" "$w" "$d" \
        "$(echo "$w / $wo" | bc -l)"
}

command -v bc >/dev/null || { echo "bench-supervise.sh: needs bc" >&2; exit 1; }
echo "## The seccomp supervisor: cost per call (median of $ROUNDS alternated runs of $N calls)"
echo
echo "| call | CPUs | without | with | added |"
echo "|---|---|---|---|---|"
for cpus in one any apart; do
    RUN_OPTS=(--trap socket)
    row "TCP socket(), socket trap" socket "$cpus"
    RUN_OPTS=(--trap socket --no-sync-wake-up)
    row "TCP socket(), socket trap, no sync wake-up" socket "$cpus"
    RUN_OPTS=(--trap connect)
    row "loopback connect(), connect trap" connect "$cpus"
    RUN_OPTS=(--trap connect --no-sync-wake-up)
    row "loopback connect(), connect trap, no sync wake-up" connect "$cpus"
done
RUN_OPTS=(--trap socket)
row "MPTCP socket(): the bare round trip" mptcp one
row "UDP socket() (the filter reads its arguments, allows)" udp one
row "getpid() (allowed from the per-number cache)" getpid one
RUN_OPTS=(--trap socket --force)
row "setsockopt(TCP_KEEPIDLE), KEEPALIVE_FORCE" setsockopt one
