#!/usr/bin/env bash
# keepalive-shim against the C preload libraries Debian ships for the same job, libkeepalive0
# (0.3) and libdontdie0 (1.2), on the five dead-peer cases, each library given the same settings
# through its own variables: idle 2 s, interval 1 s, count 2. Prints a Markdown table of how long
# after the cut each client failed, or "hangs" when it was still blocked at 12 s (three times the
# 4 s bound). Installs the two packages with apt. Needs root.
set -euo pipefail
source "$(dirname "$0")/cases.sh"
cases_init

if ! dpkg -s libkeepalive0 libdontdie0 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libkeepalive0 libdontdie0 >/dev/null
fi
libkeepalive=$(dpkg -L libkeepalive0 | grep -m1 '/libkeepalive\.so')
libdontdie=$(dpkg -L libdontdie0 | grep -m1 '/libdontdie\.so')

variants=(
    "no library|"
    "keepalive-shim|LD_PRELOAD=$SHIM KEEPALIVE_IDLE=2 KEEPALIVE_INTERVAL=1 KEEPALIVE_COUNT=2"
    "libkeepalive 0.3|LD_PRELOAD=$libkeepalive KEEPIDLE=2 KEEPINTVL=1 KEEPCNT=2"
    "libdontdie 1.2|LD_PRELOAD=$libdontdie DD_TCP_KEEPALIVE_TIME=2 DD_TCP_KEEPALIVE_INTVL=1 DD_TCP_KEEPALIVE_PROBES=2"
)
names=(
    ""
    "1. waiting for an answer (silent server)"
    "2. request never acknowledged"
    "3. connect to a cut server"
    "4. server side: accepted client vanishes"
    "5. waiting for an answer, IPv6"
)

header="| case |"
rule="|---|"
for v in "${variants[@]}"; do header+=" ${v%%|*} |"; rule+="---|"; done
rows=()
for c in 1 2 3 4 5; do
    run_case "$c" 12 "${variants[@]}" >"$WORK/out"
    row="| ${names[$c]} |"
    while IFS=$'\t' read -r _ outcome seconds; do
        if [ "$outcome" = blocked ]; then row+=" hangs (still blocked at ${seconds} s) |"
        else row+=" ${seconds} s ($outcome) |"; fi
    done <"$WORK/out"
    rows+=("$row")
    echo "$row" >&2
done
echo
echo "$header"
echo "$rule"
printf '%s\n' "${rows[@]}"
