#!/usr/bin/env bash
# What the library costs a program, rerunnable by anyone: per-call overhead (cargo bench,
# alternating calls in one process, median ratios), process start-up (hyperfine, and
# callgrind's instruction counts for the constructor), the release library's size and the glibc
# symbol versions it needs. Installs hyperfine, valgrind and Debian's libkeepalive0 (for the same
# measurement of a peer) when missing. Prints Markdown on stdout, and on stderr what it is doing
# before each long step. About four minutes on 2 cores.
# KEEPALIVE_SHIM_BENCH_BEFORE=path/to/lib.so also measures an earlier build: its per-call rows,
# its /bin/true start-up and instructions, and its size.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v valgrind >/dev/null || need+=(valgrind)
dpkg -s libkeepalive0 >/dev/null 2>&1 || need+=(libkeepalive0)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The shipped library, built by the README's command.
say() { echo "bench.sh: $*" >&2; }
say "building the release library and tool"
cargo build --quiet --release
LIB=$PWD/target/release/libkeepalive_shim.so
PEER=$(dpkg -L libkeepalive0 | grep -m1 '/libkeepalive\.so')
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say "per-call overhead: about 60 s (cargo bench, rounds alternating the library and libc)"
echo "## Per call (median of per-round ratios; rounds interleave the two call by call)"
echo
# libkeepalive applies its three TCP options only when its variables are set.
KEEPIDLE=30 KEEPINTVL=10 KEEPCNT=3 cargo bench --quiet --bench overhead -- "$LIB" --peer "libkeepalive 0.3=$PEER"
# Another build measured the same way right after (KEEPALIVE_SHIM_BENCH_BEFORE=path/to/lib.so),
# to compare a change's ratios with those of the build before it; a build without a hook of
# the table (close, dup, fcntl) is measured with libc's.
if [ -n "${KEEPALIVE_SHIM_BENCH_BEFORE:-}" ]; then
    echo
    echo "### The same rows for $KEEPALIVE_SHIM_BENCH_BEFORE"
    echo
    cargo bench --quiet --bench overhead -- "$KEEPALIVE_SHIM_BENCH_BEFORE"
fi

echo
say "process start-up: about 30 s (hyperfine, /bin/true and python3)"
echo "## Process start-up (hyperfine, mean ± σ)"
echo
echo "| program | without | with the library | difference |"
echo "|---|---|---|---|"
startup() {
    local name=$1 runs=$2 lib=${STARTUP_LIB:-$LIB}
    shift 2
    hyperfine --style none --shell=none --warmup 20 --runs "$runs" --export-json "$WORK/h.json" \
        "env LD_PRELOAD= $*" "env LD_PRELOAD=$lib $*" >/dev/null 2>&1
    python3 - "$WORK/h.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
(a, b) = r
ms = lambda x: x * 1000
print("| %s | %.3f ± %.3f ms | %.3f ± %.3f ms | %+.3f ms |" % (
    sys.argv[2], ms(a["mean"]), ms(a["stddev"]), ms(b["mean"]), ms(b["stddev"]),
    ms(b["mean"] - a["mean"])))
PY
}
startup "/bin/true" 2000 /bin/true
startup "python3 -c pass" 300 "$PYTHON" -c pass
if [ -n "${KEEPALIVE_SHIM_BENCH_BEFORE:-}" ]; then
    STARTUP_LIB=$KEEPALIVE_SHIM_BENCH_BEFORE startup "/bin/true, the earlier build" 2000 /bin/true
fi

echo
say "instructions at start-up: about 20 s (callgrind)"
echo "## Instructions (callgrind; the same on every run of the same build)"
echo
# The same build with its symbols kept, only so callgrind can attribute the constructor's share.
CARGO_PROFILE_RELEASE_STRIP=none cargo build --quiet --release --package keepalive-shim --lib \
    --target-dir target/bench-symbols
SYMBOLS=$PWD/target/bench-symbols/release/libkeepalive_shim.so
count() { valgrind --tool=callgrind --callgrind-out-file="$WORK/cg" "$@" 2>&1 | sed -n 's/.*refs: *//p' | tr -d ,; }
plain=$(count /bin/true)
with=$(LD_PRELOAD=$SYMBOLS count /bin/true)
# awk reads to the end: leaving early would kill callgrind_annotate with SIGPIPE, and under
# pipefail that status (141) would stop the script.
ctor=$(callgrind_annotate --inclusive=yes "$WORK/cg" 2>/dev/null \
    | awk '!found && /init::constructor/ {gsub(",", "", $1); print $1; found = 1}')
echo "| what | instructions |"
echo "|---|---|"
echo "| /bin/true | $plain |"
echo "| /bin/true with the library (loading, relocation, constructor) | $with (+$((with - plain))) |"
echo "| the constructor alone (reads the environment and /etc/keepalive-shim.conf, resolves the real functions) | $ctor |"
if [ -n "${KEEPALIVE_SHIM_BENCH_BEFORE:-}" ]; then
    before=$(LD_PRELOAD=$KEEPALIVE_SHIM_BENCH_BEFORE count /bin/true)
    echo "| /bin/true with the earlier build $KEEPALIVE_SHIM_BENCH_BEFORE | $before (+$((before - plain))) |"
fi

echo
echo "## The release library"
echo
size=$(stat -c %s "$LIB")
glibc=$(objdump -T "$LIB" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
exports=$(nm -D --defined-only --format=just-symbols "$LIB" | tr '\n' ' ')
needed=$(readelf -d "$LIB" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "| size | exports | needs | newest glibc symbol version |"
echo "|---|---|---|---|"
echo "| $size bytes | $exports| $needed| $glibc |"
if [ -n "${KEEPALIVE_SHIM_BENCH_BEFORE:-}" ]; then
    echo
    echo "The earlier build: $(stat -c %s "$KEEPALIVE_SHIM_BENCH_BEFORE") bytes."
fi

echo
say "fleet mode: about 40 s (scripts/fleet-bench.sh)"
echo "## Fleet mode (BPF programs on a cgroup; root and cgroup v2)"
echo
if [ "$(id -u)" -eq 0 ]; then
    scripts/fleet-bench.sh
else
    echo "(skipped: needs root)"
fi

echo
say "the seccomp supervisor: about 60 s (scripts/bench-supervise.sh)"
echo "## keepalive-shim run --mode seccomp (the supervisor)"
echo
# KEEPALIVE_SHIM_BENCH_BEFORE names an earlier library here, an earlier tool there: not passed on.
env -u KEEPALIVE_SHIM_BENCH_BEFORE scripts/bench-supervise.sh
