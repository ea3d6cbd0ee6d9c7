# The dead-peer cases for people, sourced by scripts/demo.sh and scripts/compare-peers.sh: each
# case runs several variants of the same client side by side in one lab (scripts/lab.sh) and
# reports how long after the cut each one failed, or that it was still blocked.
#
# A variant is "LABEL|VAR=value VAR=value ..." (the environment it runs with, LD_PRELOAD
# included); run_case prints one line per variant: LABEL<TAB>OUTCOME<TAB>SECONDS, where OUTCOME
# is the exception the program saw, or "blocked" (SECONDS is then the check point). Call it in
# the main shell, not in a pipeline: it records the labs and processes it makes for the cleanup.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"
PROGRAMS="$ROOT/tests/programs"
SHIM="$ROOT/target/release/libkeepalive_shim.so"
SERVER4=10.77.0.2
PORT=8080
LABS=()
PIDS=()

cases_init() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$(basename "$0"): network namespaces need root" >&2
        exit 1
    fi
    # The real interpreter: a wrapper script (pyenv's shim) would load the library a dozen times.
    PYTHON=$(python3 -c 'import sys; print(sys.executable)')
    python3 -c 'import requests' 2>/dev/null || python3 -m pip install --quiet requests
    (cd "$ROOT" && cargo build --quiet --release)
    WORK=$(mktemp -d)
    trap cases_cleanup EXIT INT TERM
    "$LAB" sweep
}

cases_cleanup() {
    local pid lab
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for lab in "${LABS[@]}"; do "$LAB" down "$lab"; done
    rm -rf "$WORK"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# in NS_SIDE OUTFILE ENV... -- PROGRAM ARGS...: runs in the background inside the lab.
in_ns() {
    local ns=$1 out=$2
    shift 2
    local vars=()
    while [ "$1" != "--" ]; do vars+=("$1"); shift; done
    shift
    ip netns exec "$ns" env -i PATH="$PATH" "${vars[@]}" "$@" >"$out" 2>"$out.err" </dev/null &
    PIDS+=($!)
}

# wait_for FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN (at most 15 s).
wait_for() {
    local i
    for i in $(seq 150); do
        [ "$(grep -c "$3" "$1" 2>/dev/null)" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): timed out waiting for '$3' in $1" >&2
    return 1
}

# run_case CASE CHECK VARIANT...: CASE 1-5 as in tests/dead_peer.rs; CHECK, how long to wait
# after the cut before calling a run blocked. With RUN_CASE_SHOW=FUNCTION, FUNCTION is called
# with each line (on its standard input) as its result lands, the blocked ones at the end;
# otherwise every line is printed at the end, in the variants' order.
run_case() {
    local case=$1 check=$2
    shift 2
    local lab="kas-$$-$case" n=$# i=0 variant label vars host=$SERVER4 t0
    LABS+=("$lab")
    "$LAB" up "$lab"
    [ "$case" = 5 ] && host="[fd77::2]"
    local url="http://$host:$PORT/" outs=()
    case $case in
        1|5)
            in_ns "$lab-s" "$WORK/server" -- "$PYTHON" "$PROGRAMS/server.py" --mode=silent \
                "--host=${host//[\[\]]/}" --port=$PORT
            wait_for "$WORK/server" 1 listening
            for variant in "$@"; do
                read -ra vars <<<"${variant#*|}"
                in_ns "$lab-c" "$WORK/c$i" "${vars[@]}" -- "$PYTHON" "$PROGRAMS/client.py" get "$url"
                outs+=("$WORK/c$i"); i=$((i + 1))
            done
            wait_for "$WORK/server" "$n" request
            "$LAB" cut "$lab" server
            ;;
        2)
            in_ns "$lab-s" "$WORK/server" -- "$PYTHON" "$PROGRAMS/server.py" --mode=http \
                --host=$SERVER4 --port=$PORT
            wait_for "$WORK/server" 1 listening
            for variant in "$@"; do
                read -ra vars <<<"${variant#*|}"
                mkfifo "$WORK/go$i"
                ip netns exec "$lab-c" env -i PATH="$PATH" "${vars[@]}" "$PYTHON" \
                    "$PROGRAMS/client.py" session "$url" >"$WORK/c$i" 2>&1 <"$WORK/go$i" &
                PIDS+=($!)
                exec {fd}>"$WORK/go$i"
                eval "go_fd_$i=$fd"
                outs+=("$WORK/c$i"); i=$((i + 1))
            done
            for ((i = 0; i < n; i++)); do wait_for "$WORK/c$i" 1 first-done; done
            "$LAB" cut "$lab" server
            for ((i = 0; i < n; i++)); do eval "echo go >&\$go_fd_$i"; done
            ;;
        3)
            "$LAB" cut "$lab" server
            for variant in "$@"; do
                read -ra vars <<<"${variant#*|}"
                in_ns "$lab-c" "$WORK/c$i" "${vars[@]}" -- "$PYTHON" "$PROGRAMS/client.py" get "$url"
                outs+=("$WORK/c$i"); i=$((i + 1))
            done
            ;;
        4)
            local targets=()
            for variant in "$@"; do
                read -ra vars <<<"${variant#*|}"
                in_ns "$lab-s" "$WORK/s$i" "${vars[@]}" -- "$PYTHON" "$PROGRAMS/server.py" \
                    --mode=once --host=$SERVER4 --port=$((8081 + i))
                wait_for "$WORK/s$i" 1 listening
                targets+=("$SERVER4:$((8081 + i))")
                outs+=("$WORK/s$i"); i=$((i + 1))
            done
            in_ns "$lab-c" "$WORK/holder" -- "$PYTHON" "$PROGRAMS/client.py" hold "${targets[@]}"
            for ((i = 0; i < n; i++)); do wait_for "$WORK/s$i" 1 accepted; done
            "$LAB" cut "$lab" client
            ;;
    esac
    t0=$(now)
    local done_=() left=$n line
    while [ "$left" -gt 0 ] && [ "$(since "$t0" | cut -d. -f1)" -lt "$check" ]; do
        for ((i = 0; i < n; i++)); do
            [ -n "${done_[$i]:-}" ] && continue
            line=$(grep -m1 -E '^(result|error) ' "${outs[$i]}" 2>/dev/null || true)
            [ -z "$line" ] && continue
            # Case 3 starts at the call, not at a cut: the client times its own call.
            if [ "$case" = 3 ]; then
                done_[$i]="$(awk '{printf "%s\t%.1f", $2, $3}' <<<"$line")"
            else
                done_[$i]="$(awk '{print $2}' <<<"$line")	$(since "$t0")"
            fi
            left=$((left - 1))
            if [ -n "${RUN_CASE_SHOW:-}" ]; then
                local live=("$@")
                printf '%s\t%s\n' "${live[$i]%%|*}" "${done_[$i]}" | "$RUN_CASE_SHOW"
            fi
        done
        sleep 0.05
    done
    i=0
    for variant in "$@"; do
        label=${variant%%|*}
        if [ -z "${RUN_CASE_SHOW:-}" ]; then
            printf '%s\t%s\n' "$label" "${done_[$i]:-blocked	$check}"
        elif [ -z "${done_[$i]:-}" ]; then
            printf '%s\t%s\n' "$label" "blocked	$check" | "$RUN_CASE_SHOW"
        fi
        i=$((i + 1))
    done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    PIDS=()
    "$LAB" down "$lab"
    find "$WORK" -mindepth 1 ! -name out -delete
}
