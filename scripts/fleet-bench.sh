#!/usr/bin/env bash
# What fleet mode costs per connection and per setsockopt() call: one process moves itself
# between two cgroups made for the purpose (keepalive-shim's programs attached to one, nothing to
# the other) and times alternating blocks of loopback connections (both ends in the cgroup: the
# sock_ops program runs for the connect and for the accept) and of setsockopt(TCP_NODELAY) calls
# (which the setsockopt program inspects and lets through). Each round gives the ratio of the
# two sides; the table shows medians with the interquartile range of the ratio, and the
# median of the per-round differences as the cost. Run for the
# default settings and with KEEPALIVE_FORCE=1. Needs root and cgroup v2; about a minute.
# Prints Markdown.
#
#   scripts/fleet-bench.sh [ROUNDS] [CONNECTS PER BLOCK] [SETSOCKOPTS PER BLOCK]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-40} CONNECTS=${2:-2000} CALLS=${3:-20000}
[ "$(id -u)" -eq 0 ] || { echo "fleet-bench.sh: needs root" >&2; exit 1; }
BASE=$(awk '{split($0, p, " - "); split(p[2], f, " "); split(p[1], g, " ");
             if (f[1] == "cgroup2") {print g[5]; exit}}' /proc/self/mountinfo)
[ -n "$BASE" ] || { echo "fleet-bench.sh: no cgroup v2 hierarchy is mounted" >&2; exit 1; }

cargo build --quiet --release -p keepalive-shim-cli
CLI=$PWD/target/release/keepalive-shim
WORK=$(mktemp -d)
ON=$BASE/kas-bench-$$-on
OFF=$BASE/kas-bench-$$-off
ATTACH=
cleanup() {
    [ -z "$ATTACH" ] || kill "$ATTACH" 2>/dev/null || true
    wait 2>/dev/null || true
    "$CLI" fleet detach --cgroup "$ON" >/dev/null 2>&1 || true
    rmdir "$ON" "$OFF" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir "$ON" "$OFF"
gcc -O2 -o "$WORK/fleet_bench" tests/programs/fleet_bench.c

echo "| settings | operation | attached | detached | ratio, median (p25–p75) | cost per operation |"
echo "|---|---|---|---|---|---|"
for settings in "default" "KEEPALIVE_FORCE=1"; do
    vars=()
    [ "$settings" = default ] || vars=("$settings")
    env -u KEEPALIVE_FORCE "${vars[@]}" "$CLI" fleet attach --cgroup "$ON" >"$WORK/attach.log" 2>&1 &
    ATTACH=$!
    for _ in $(seq 1 100); do
        grep -q "running in the foreground" "$WORK/attach.log" && break
        sleep 0.1
    done
    grep -q "running in the foreground" "$WORK/attach.log" \
        || { cat "$WORK/attach.log" >&2; exit 1; }
    "$WORK/fleet_bench" "$ON/cgroup.procs" "$OFF/cgroup.procs" "$ROUNDS" "$CONNECTS" "$CALLS" \
        >"$WORK/raw"
    kill "$ATTACH"
    wait "$ATTACH" || true
    ATTACH=
    python3 - "$WORK/raw" "$settings" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kind, on, off = line.split()
    rows.setdefault(kind, []).append((float(on), float(off)))
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]
for kind, label in (("connect", "loopback connection (connect + accept)"),
                    ("setsockopt", "setsockopt(TCP_NODELAY)")):
    pairs = rows[kind]
    on = statistics.median(p[0] for p in pairs)
    off = statistics.median(p[1] for p in pairs)
    ratios = [p[0] / p[1] for p in pairs]
    fmt = (lambda ns: "%.2f µs" % (ns / 1000)) if kind == "connect" else (lambda ns: "%.0f ns" % ns)
    cost = statistics.median(p[0] - p[1] for p in pairs)
    print("| %s | %s | %s | %s | %.3f (%.3f–%.3f) | %+.0f ns |" % (
        sys.argv[2], label, fmt(on), fmt(off), statistics.median(ratios),
        q(ratios, 0.25), q(ratios, 0.75), cost))
PY
done
echo
echo "$ROUNDS rounds; blocks of $CONNECTS connections and $CALLS setsockopt calls, alternating."
