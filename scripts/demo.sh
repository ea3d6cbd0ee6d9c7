#!/usr/bin/env bash
# A demo for people: a Python tool using requests with no timeout, its server's network cut, with
# and without keepalive-shim, side by side, in network namespaces made for the purpose (root).
set -euo pipefail
source "$(dirname "$0")/cases.sh"
cases_init

# The kernel's count of connections it ended after a timeout (TcpExt TCPAbortOnTimeout) in the
# network namespace NS: every program in it, every kind of timeout.
aborts() {
    ip netns exec "$1" awk '/^TcpExt:/ { if (!c) { for (i = 2; i <= NF; i++)
        if ($i == "TCPAbortOnTimeout") c = i } else { print $c; exit } }' /proc/net/netstat
}
# The lab as cases.sh drives it, reading that count in the client's namespace when the server's
# link is cut and again before the lab is removed.
REAL_LAB=$LAB CUT_BEFORE= CUT_AFTER=
counting_lab() {
    case $1 in
        cut) CUT_BEFORE=$(aborts "$2-c") ;;
        down) [ -z "$CUT_BEFORE" ] || CUT_AFTER=$(aborts "$2-c" 2>/dev/null || echo "?") ;;
    esac
    "$REAL_LAB" "$@"
}
LAB=counting_lab
kernel_cut() {
    local n="?"
    [[ "$CUT_BEFORE$CUT_AFTER" =~ ^[0-9]+$ ]] && n=$((CUT_AFTER - CUT_BEFORE))
    printf '  %-24s %s connection(s) after a timeout (TcpExt TCPAbortOnTimeout of the client'"'"'s namespace: %s at the cut, %s at the end)\n' \
        "the kernel ended:" "$n" "$CUT_BEFORE" "$CUT_AFTER"
    CUT_BEFORE= CUT_AFTER=
}

show() {
    local label outcome seconds
    while IFS=$'\t' read -r label outcome seconds; do
        if [ "$outcome" = blocked ]; then
            printf '  %-24s still waiting after %s s\n' "$label:" "$seconds"
        else
            printf '  %-24s %s after %s s\n' "$label:" "$outcome" "$seconds"
        fi
    done
}

cat <<'TXT'
Case 1: waiting for an answer. requests.get(url), no timeout; the server accepted the request
and never answers; then the server's network goes away.
  keepalive-shim settings: KEEPALIVE_IDLE=2 KEEPALIVE_INTERVAL=1 KEEPALIVE_COUNT=2
  expected bound: idle + interval x count = 4 s
TXT
RUN_CASE_SHOW=show run_case 1 20 \
    "with keepalive-shim|LD_PRELOAD=$SHIM KEEPALIVE_IDLE=2 KEEPALIVE_INTERVAL=1 KEEPALIVE_COUNT=2" \
    "without keepalive-shim|KEEPALIVE_IDLE=2"
kernel_cut

cat <<'TXT'

Case 2: a request never acknowledged. A requests.Session made one request on a keep-alive
connection; the server's network goes away; the second request goes out on the same connection.
Keepalive cannot help here (there is unacknowledged data); TCP_USER_TIMEOUT does.
  keepalive-shim settings: KEEPALIVE_USER_TIMEOUT=3s (keepalive idle 600 s, far too slow to fire)
  expected bound: the user timeout, 3 s (without it the kernel retries for about 15 minutes)
TXT
RUN_CASE_SHOW=show run_case 2 20 \
    "with keepalive-shim|LD_PRELOAD=$SHIM KEEPALIVE_USER_TIMEOUT=3s KEEPALIVE_IDLE=600" \
    "without keepalive-shim|KEEPALIVE_USER_TIMEOUT=3s"
kernel_cut
echo
echo "Seconds are counted from the moment the server's link went down."
