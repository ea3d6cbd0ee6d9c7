#!/usr/bin/env bash
# The cost the seccomp supervisor (`keepalive-shim run --mode seccomp`) adds to the calls it
# traps, and to those it does not.
#
# First, the headline: the added cost per TCP socket() under the socket trap (the supervisor
# makes the socket, sets the options and installs it in the program), as median and p99:
# tests/programs/socket_cost.c, built static, times N socket() calls bare and under the
# supervisor, in alternation, ROUNDS times each, with the program and the supervisor pinned to
# one CPU (taskset -c 0) and left to the scheduler (what a user gets). With
# KEEPALIVE_SHIM_BENCH_BEFORE=/path/to/an/older/keepalive-shim, that binary is measured in the
# same rounds ("before"), beside this tree's release build ("after"). Each cell is the median
# over the rounds; "added" is the median over the rounds of (with - without) of that
# percentile. The goal (issue 16): added median <= 20 us and p99 <= 100 us unpinned.
#
# Then, unless KEEPALIVE_SHIM_BENCH_DETAIL=0, this tree's build alone on more calls:
# benches/supervise_calls.c run with and without the supervisor, each run giving the median of
# its timed calls. Rows:
#   socket trap:  TCP socket() (trapped), UDP socket() (the filter reads its arguments),
#                 getpid() (allowed from the kernel's per-number cache)
#   connect trap: loopback connect() (trapped)
#   FORCE:        setsockopt(TCP_KEEPIDLE) (trapped only with KEEPALIVE_FORCE)
#   the bare round trip: an MPTCP socket() (trapped, let through at once)
# with the supervisor and the program on one CPU (both pinned to CPU 0), left to the scheduler,
# and kept apart (supervisor on CPU 0, program on CPU 1), with and without
# SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
#
# Prints Markdown. A minute or two. Usage:
#   [KEEPALIVE_SHIM_BENCH_BEFORE=OLD] [KEEPALIVE_SHIM_BENCH_DETAIL=0] scripts/bench-supervise.sh [ROUNDS]
# (ROUNDS: default 7). An older build to compare with, without touching this work tree:
#   mkdir -p /tmp/before && git archive COMMIT | tar -x -C /tmp/before &&
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p keepalive-shim-cli)
#   KEEPALIVE_SHIM_BENCH_BEFORE=/tmp/before-target/release/keepalive-shim scripts/bench-supervise.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
N=20000

BEFORE=${KEEPALIVE_SHIM_BENCH_BEFORE:-}
if [ -n "$BEFORE" ] && ! [ -x "$BEFORE" ]; then
    echo "bench-supervise.sh: KEEPALIVE_SHIM_BENCH_BEFORE=$BEFORE is no executable" >&2
    exit 1
fi
cargo build --quiet --release -p keepalive-shim-cli
TOOL=$PWD/target/release/keepalive-shim
BIN=$PWD/target/tmp/supervise_calls
COST=$PWD/target/tmp/socket_cost
mkdir -p target/tmp
gcc -static -O2 -pthread -o "$BIN" benches/supervise_calls.c
gcc -static -O2 -o "$COST" tests/programs/socket_cost.c

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

us() { awk -v n="$1" 'BEGIN { printf "%.1f µs", n / 1000 }'; }
signed_us() { awk -v n="$1" 'BEGIN { printf "%+.1f µs", n / 1000 }'; }

# cost CPUS ("one" or "any"): ROUNDS rounds of socket_cost bare, under this tree's build and
# under $BEFORE, in that order each round; one table row per build.
cost() {
    local cpus=$1 pin=()
    [ "$cpus" = one ] && pin=(taskset -c 0)
    local tools=() names=()
    if [ -n "$BEFORE" ]; then
        tools+=("$BEFORE")
        names+=(before)
    fi
    tools+=("$TOOL")
    names+=(after)
    local bare_m=() bare_p=() out bm bp wm wp i
    local -A with_m=() with_p=() add_m=() add_p=()
    for _ in $(seq "$ROUNDS"); do
        out=$("${pin[@]}" "$COST" "$N")
        bm=$(field median <<<"$out")
        bp=$(field p99 <<<"$out")
        bare_m+=("$bm")
        bare_p+=("$bp")
        for i in "${!tools[@]}"; do
            out=$(env -u LD_PRELOAD "${pin[@]}" "${tools[$i]}" run --mode seccomp --trap socket -- \
                "$COST" "$N")
            wm=$(field median <<<"$out")
            wp=$(field p99 <<<"$out")
            with_m[$i]+="$wm "
            with_p[$i]+="$wp "
            add_m[$i]+="$((wm - bm)) "
            add_p[$i]+="$((wp - bp)) "
        done
    done
    local m_bare p_bare
    m_bare=$(printf '%s\n' "${bare_m[@]}" | median)
    p_bare=$(printf '%s\n' "${bare_p[@]}" | median)
    for i in "${!tools[@]}"; do
        local am ap
        am=$(tr ' ' '\n' <<<"${add_m[$i]}" | grep . | median)
        ap=$(tr ' ' '\n' <<<"${add_p[$i]}" | grep . | median)
        printf '| %s | %s | %s | %s | %s | %s | **%s** | **%s** |\n' "${names[$i]}" \
            "$([ "$cpus" = one ] && echo "pinned (one CPU)" || echo "unpinned")" \
            "$(us "$m_bare")" "$(us "$p_bare")" \
            "$(us "$(tr ' ' '\n' <<<"${with_m[$i]}" | grep . | median)")" \
            "$(us "$(tr ' ' '\n' <<<"${with_p[$i]}" | grep . | median)")" \
            "$(signed_us "$am")" "$(signed_us "$ap")"
        if [ "${names[$i]}" = after ] && [ "$cpus" = any ]; then
            GOAL_M=$am
            GOAL_P=$ap
        fi
    done
}

echo "## The seccomp supervisor: added cost per TCP socket() (socket trap)"
echo
echo "Median over $ROUNDS alternated rounds of $N socket() calls each, $(nproc) CPUs."
echo
echo "| build | CPUs | without: median | without: p99 | with: median | with: p99 | added: median | added: p99 |"
echo "|---|---|---|---|---|---|---|---|"
GOAL_M=0
GOAL_P=0
for cpus in one any; do
    cost "$cpus"
done
echo
if [ -n "$BEFORE" ]; then
    echo "before: \`$BEFORE\` ($("$BEFORE" --version 2>/dev/null || echo '?')); after: this tree's \`$TOOL\`."
    echo
fi
verdict() { [ "$1" -le "$2" ] && echo "met" || echo "not met"; }
echo "Goal, unpinned (after): added median ≤ 20 µs: $(signed_us "$GOAL_M"), $(verdict "$GOAL_M" 20000);" \
    "added p99 ≤ 100 µs: $(signed_us "$GOAL_P"), $(verdict "$GOAL_P" 100000)."
echo
[ "${KEEPALIVE_SHIM_BENCH_DETAIL:-1}" = 0 ] && exit 0

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
