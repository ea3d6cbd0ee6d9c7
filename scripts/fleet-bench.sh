#!/usr/bin/env bash
# What fleet mode costs per connection and per setsockopt() call: one process moves itself
# between cgroups made for the purpose (nothing attached to one, keepalive-shim's programs to
# the others) and times blocks of loopback connections (both ends in the cgroup: the sock_ops
# program runs for the connect and for the accept) and of setsockopt(TCP_NODELAY) calls (which
# the setsockopt program inspects and lets through), every cgroup once per round in a rotating
# order. Each round gives the ratio and the difference against the detached cgroup; the table
# shows medians with the interquartile range of the ratio, and the median of the per-round
# differences as the cost. Run for the default settings and with KEEPALIVE_FORCE=1, counting on
# (as `fleet attach` always counts). Needs root and cgroup v2; about a minute per build.
# Prints Markdown.
#
#   scripts/fleet-bench.sh [ROUNDS] [CONNECTS PER BLOCK] [SETSOCKOPTS PER BLOCK]
#
# KAS_BEFORE=PATH measures another build of the tool in the same run, attached to a cgroup of
# its own, interleaved with this one (for example the previous commit's:
# `git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release -p
# keepalive-shim-cli)`, then KAS_BEFORE=/tmp/before/target/release/keepalive-shim). KAS_CLI=PATH
# takes this build's tool from PATH instead of building it.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-40} CONNECTS=${2:-2000} CALLS=${3:-20000}
[ "$(id -u)" -eq 0 ] || { echo "fleet-bench.sh: needs root" >&2; exit 1; }
BASE=$(awk '{split($0, p, " - "); split(p[2], f, " "); split(p[1], g, " ");
             if (f[1] == "cgroup2") {print g[5]; exit}}' /proc/self/mountinfo)
[ -n "$BASE" ] || { echo "fleet-bench.sh: no cgroup v2 hierarchy is mounted" >&2; exit 1; }

if [ -n "${KAS_CLI:-}" ]; then
    CLI=$KAS_CLI
else
    cargo build --quiet --release -p keepalive-shim-cli
    CLI=$PWD/target/release/keepalive-shim
fi
BUILDS=("$CLI")
NAMES=("this build")
if [ -n "${KAS_BEFORE:-}" ]; then
    [ -x "$KAS_BEFORE" ] || { echo "fleet-bench.sh: KAS_BEFORE=$KAS_BEFORE is not a program" >&2; exit 1; }
    BUILDS+=("$KAS_BEFORE")
    NAMES+=("KAS_BEFORE")
fi
WORK=$(mktemp -d)
OFF=$BASE/kas-bench-$$-off
CGROUPS=()
PIDS=()
for i in "${!BUILDS[@]}"; do CGROUPS+=("$BASE/kas-bench-$$-on$i"); done
stop_attached() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_attached
    local i
    for i in "${!BUILDS[@]}"; do
        "${BUILDS[$i]}" fleet detach --cgroup "${CGROUPS[$i]}" >/dev/null 2>&1 || true
    done
    rmdir "${CGROUPS[@]}" "$OFF" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$OFF" "${CGROUPS[@]}"
gcc -O2 -o "$WORK/fleet_bench" tests/programs/fleet_bench.c
CPU=$(($(nproc) - 1))

echo "Machine: $(nproc) CPUs, $(uname -r); load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
for i in "${!BUILDS[@]}"; do
    echo "${NAMES[$i]}: ${BUILDS[$i]} ($("${BUILDS[$i]}" --version 2>/dev/null || echo "version unknown"))"
done
echo
echo "| settings | operation | build | detached | attached | ratio, median (p25–p75) | cost per operation |"
echo "|---|---|---|---|---|---|---|"
for settings in "default" "KEEPALIVE_FORCE=1"; do
    vars=()
    [ "$settings" = default ] || vars=("$settings")
    procs=("$OFF/cgroup.procs")
    for i in "${!BUILDS[@]}"; do
        log=$WORK/attach-$i.log
        env -u KEEPALIVE_FORCE "${vars[@]}" "${BUILDS[$i]}" fleet attach --cgroup "${CGROUPS[$i]}" \
            >"$log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 1 100); do
            grep -q "running in the foreground" "$log" && break
            sleep 0.1
        done
        grep -q "running in the foreground" "$log" || { cat "$log" >&2; exit 1; }
        procs+=("${CGROUPS[$i]}/cgroup.procs")
        # What the kernel's verifier said of each program (instructions, processed states).
        sed -n 's/^  \(sock_ops\|setsockopt\): /\1: /p' "$log" \
            | sed "s/^/${NAMES[$i]}, $settings: /" >>"$WORK/verifier"
    done
    # On one CPU, ahead of other work (nice -15): fewer migrations, and less noise from
    # whatever else the machine runs; the ratios are what counts.
    nice -n -15 taskset -c "$CPU" "$WORK/fleet_bench" "$ROUNDS" "$CONNECTS" "$CALLS" "${procs[@]}" \
        >"$WORK/raw"
    stop_attached
    python3 - "$WORK/raw" "$settings" "${NAMES[@]}" <<'PY'
import statistics, sys
raw, settings, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for line in open(raw):
    kind, *values = line.split()
    rows.setdefault(kind, []).append([float(v) for v in values])
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]
for kind, label in (("connect", "loopback connection (connect + accept)"),
                    ("setsockopt", "setsockopt(TCP_NODELAY)")):
    rounds = rows[kind]
    fmt = (lambda ns: "%.2f µs" % (ns / 1000)) if kind == "connect" else (lambda ns: "%.0f ns" % ns)
    off = statistics.median(r[0] for r in rounds)
    for i, name in enumerate(names, start=1):
        on = statistics.median(r[i] for r in rounds)
        ratios = [r[i] / r[0] for r in rounds]
        cost = statistics.median(r[i] - r[0] for r in rounds)
        print("| %s | %s | %s | %s | %s | %.3f (%.3f–%.3f) | %+.0f ns |" % (
            settings, label, name, fmt(off), fmt(on), statistics.median(ratios),
            q(ratios, 0.25), q(ratios, 0.75), cost))
    if len(names) > 1:
        diff = statistics.median(r[1] - r[2] for r in rounds)
        print("| %s | %s | %s − %s, per round | | | | %+.0f ns |" % (
            settings, label, names[0], names[1], diff))
PY
done
echo
echo "$ROUNDS rounds; blocks of $CONNECTS connections and $CALLS setsockopt calls, every cgroup once"
echo "per round in a rotating order, on CPU $CPU at nice -15. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "The verifier (instructions as generated; what it processed):"
echo
sed 's/^/- /' "$WORK/verifier"
