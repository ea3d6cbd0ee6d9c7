#!/usr/bin/env bash
# What one AdmissionReview costs the webhook, rerunnable by anyone; every figure against a
# baseline measured in the same run:
#   1. in one process: `cargo bench -p keepalive-shim-kube --bench review`, each fixture's review
#      interleaved with reading the same body as JSON and writing it back;
#   2. end to end over HTTPS: `keepalive-shim webhook serve` with the certificates of `webhook
#      certs`, called on one keep-alive connection (benches/webhook_https.py, TLS verified under
#      the Service's name as the API server does), rounds alternating a block of reviews of the
#      plain pod with a block of `GET /healthz` on the same connection (the same TLS and HTTP, no
#      review);
#   3. throughput: curl --parallel (4 keep-alive connections) sending 2,000 reviews, and 2,000
#      `GET /healthz` right after, three times alternating.
# 1 also built for x86_64-unknown-linux-musl, and 2 and 3 for the tool `cargo build --release`
# makes (glibc) and for the static musl tool the image ships (the webhook's pods run that one),
# when scripts/dist.sh has made it.
# Prints Markdown on stdout, and on stderr what it is doing. About 30 s on 2 cores once built.
#
#   scripts/bench-webhook.sh [ROUNDS]      (ROUNDS of step 2, default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-60}
PER_ROUND=50
PARALLEL=4
THROUGHPUT_N=2000
say() { echo "bench-webhook.sh: $*" >&2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { say "needs $tool"; exit 1; }
done

version=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && $1 ~ /^version *= *$/ { print $2; exit }' Cargo.toml)
FIXTURE=$PWD/crates/kube/tests/fixtures/plain-replicaset.json
HOST=keepalive-shim-webhook.keepalive-shim-system.svc
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say "building the release tool (cargo build --release)"
cargo build --quiet --release
CHECKOUT_TOOL=$PWD/target/release/keepalive-shim
SHIPPED_TOOL=$PWD/target/dist/keepalive-shim-$version-x86_64-linux/keepalive-shim
"$CHECKOUT_TOOL" webhook certs --out "$WORK/certs" >/dev/null

echo "## One review in one process (cargo bench -p keepalive-shim-kube --bench review)"
echo
say "in one process: about 5 s"
cargo bench --quiet -p keepalive-shim-kube --bench review 2>/dev/null
echo
# The image's tool is a static musl build (scripts/dist.sh): the same program built so.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "The same, built for x86_64-unknown-linux-musl (static, as the image's tool is):"
    echo
    say "in one process, musl: about 10 s once built (the first build takes a minute)"
    cargo bench --quiet -p keepalive-shim-kube --bench review \
        --target x86_64-unknown-linux-musl 2>/dev/null
    echo
else
    say "no x86_64-unknown-linux-musl target (scripts/dist.sh adds it): its in-process rows are left out"
fi

# serve TOOL: starts `TOOL webhook serve` on a free port of loopback; sets PORT and SERVER_PID.
serve() {
    local log=$WORK/serve.log i
    : >"$log"
    "$1" webhook serve --listen 127.0.0.1:0 --tls-cert "$WORK/certs/tls.crt" \
        --tls-key "$WORK/certs/tls.key" 2>"$log" &
    SERVER_PID=$!
    PORT=
    for i in $(seq 1 100); do
        PORT=$(sed -n 's|^keepalive-shim: serving https://127.0.0.1:\([0-9]*\)/mutate.*|\1|p' "$log")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    say "webhook serve did not start: $(cat "$log")"
    exit 1
}

stop() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# throughput PATH [curl args]: requests per second of THROUGHPUT_N requests to PATH over
# PARALLEL keep-alive connections; every answer must be 200.
throughput() {
    local path=$1 config=$WORK/urls.cfg start end ok
    shift
    : >"$config"
    for _ in $(seq 1 "$THROUGHPUT_N"); do
        printf 'url = "https://%s:%s%s"\noutput = "/dev/null"\n' "$HOST" "$PORT" "$path" >>"$config"
    done
    start=$(date +%s%N)
    ok=$(curl --silent --no-progress-meter --noproxy '*' --cacert "$WORK/certs/ca.crt" \
        --resolve "$HOST:$PORT:127.0.0.1" --parallel --parallel-max "$PARALLEL" \
        --write-out '%{http_code}\n' "$@" --config "$config" 2>"$WORK/curl.err" \
        | grep -c '^200$' || true)
    end=$(date +%s%N)
    [ "$ok" -eq "$THROUGHPUT_N" ] || {
        say "$path: $ok of $THROUGHPUT_N answered 200: $(head -c 2000 "$WORK/curl.err")"
        exit 1
    }
    echo $(( THROUGHPUT_N * 1000000000 / (end - start) ))
}

median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

echo "## End to end over HTTPS (webhook serve, the plain pod of a ReplicaSet, $(wc -c <"$FIXTURE") bytes)"
echo
echo "One keep-alive connection, $ROUNDS rounds of $PER_ROUND reviews alternating with $PER_ROUND \`GET /healthz\` (medians; the ratio's interquartile range):"
echo
echo "| tool | one review | baseline: GET /healthz | difference | ratio (IQR) | reviews/s, $PARALLEL connections | GET /healthz/s, $PARALLEL connections |"
echo "|---|---|---|---|---|---|---|"
for which in checkout shipped; do
    if [ "$which" = checkout ]; then
        tool=$CHECKOUT_TOOL
        label="cargo build --release (glibc)"
    else
        tool=$SHIPPED_TOOL
        label="the image's (static, musl)"
        if [ ! -x "$tool" ]; then
            say "no $tool (scripts/dist.sh makes it): the shipped tool is not measured"
            continue
        fi
    fi
    serve "$tool"
    say "$label: $ROUNDS rounds on one connection"
    result=$(python3 benches/webhook_https.py "$PORT" "$WORK/certs/ca.crt" "$HOST" "$FIXTURE" \
        "$ROUNDS" "$PER_ROUND")
    say "$label: throughput, 3 x $THROUGHPUT_N reviews and $THROUGHPUT_N GET /healthz"
    reviews=()
    probes=()
    for i in 1 2 3; do
        if [ $((i % 2)) -eq 1 ]; then
            reviews+=("$(throughput /mutate --header 'Content-Type: application/json' --data-binary "@$FIXTURE")")
            probes+=("$(throughput /healthz)")
        else
            probes+=("$(throughput /healthz)")
            reviews+=("$(throughput /mutate --header 'Content-Type: application/json' --data-binary "@$FIXTURE")")
        fi
    done
    stop
    python3 - "$result" "$label" "$(median3 "${reviews[@]}")" "$(median3 "${probes[@]}")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
label, reviews, probes = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lo, hi = r["ratio_iqr"]
print(f"| {label} | {r['review_us']:.0f} µs | {r['baseline_us']:.0f} µs | "
      f"+{r['difference_us']:.0f} µs | {r['ratio']:.2f}× ({lo:.2f}–{hi:.2f}) | "
      f"{reviews:,} | {probes:,} |")
PY
done
echo
echo "The difference is what a review adds to an HTTPS round trip on a kept connection: the"
echo "AdmissionReview's body sent and read, the review, the answer sent back; the API server"
echo "waits for the whole round trip (its timeout for this webhook is 3 s)."
