#!/usr/bin/env bash
# The dead-peer lab: three network namespaces, client — bridge — server, joined by veth pairs,
# with addresses used only inside them. Used by the Rust tests (tests/dead_peer.rs), the demo and
# the peer comparison. Needs root and iproute2.
#
#   lab.sh up NAME      make NAME-c (client), NAME-b (bridge), NAME-s (server)
#   lab.sh cut NAME server|client
#                       take that side's own link down; the other side's stays up, so its
#                       packets leave and are lost, as on a real network
#   lab.sh down NAME    remove the three namespaces (and with them the links)
#   lab.sh sweep        remove the namespaces of labs whose creating process is gone
#
# A NAME of the form kas-PID-N belongs to process PID; `sweep` removes those whose PID is dead,
# so a run that was killed before it could clean up leaves nothing behind for long.
#
# Addresses (the same in every lab, since each lab has its own namespaces):
#   client 10.77.0.1/24  fd77::1/64      server 10.77.0.2/24  fd77::2/64
# Neighbour entries are pinned on both sides (nud permanent): otherwise, once the cut side stops
# answering ARP/ND, some cases end early with EHOSTUNREACH and a test would measure address
# resolution, not TCP.
set -euo pipefail

CLIENT4=10.77.0.1 SERVER4=10.77.0.2 CLIENT6=fd77::1 SERVER6=fd77::2

mac() { ip -n "$1" -o link show eth0 | sed -E 's/.*link\/ether ([0-9a-f:]+).*/\1/'; }

up() {
    local n=$1
    trap 'down "$n" 2>/dev/null || true' ERR
    ip netns add "$n-c"
    ip netns add "$n-b"
    ip netns add "$n-s"
    ip -n "$n-b" link add br0 type bridge
    for side in c s; do
        ip -n "$n-b" link add "$side" type veth peer name eth0 netns "$n-$side"
        ip -n "$n-b" link set "$side" master br0 up
        ip -n "$n-$side" link set lo up
    done
    ip -n "$n-b" link set br0 up
    ip -n "$n-c" addr add "$CLIENT4/24" dev eth0
    ip -n "$n-c" addr add "$CLIENT6/64" dev eth0 nodad
    ip -n "$n-s" addr add "$SERVER4/24" dev eth0
    ip -n "$n-s" addr add "$SERVER6/64" dev eth0 nodad
    ip -n "$n-c" link set eth0 up
    ip -n "$n-s" link set eth0 up
    local cmac smac
    cmac=$(mac "$n-c")
    smac=$(mac "$n-s")
    ip -n "$n-c" neigh replace "$SERVER4" lladdr "$smac" dev eth0 nud permanent
    ip -n "$n-c" neigh replace "$SERVER6" lladdr "$smac" dev eth0 nud permanent
    ip -n "$n-s" neigh replace "$CLIENT4" lladdr "$cmac" dev eth0 nud permanent
    ip -n "$n-s" neigh replace "$CLIENT6" lladdr "$cmac" dev eth0 nud permanent
    trap - ERR
}

cut() {
    case $2 in
        server) ip -n "$1-s" link set eth0 down ;;
        client) ip -n "$1-c" link set eth0 down ;;
        *) echo "lab.sh: cut takes server or client, not '$2'" >&2; exit 2 ;;
    esac
}

down() {
    local n=$1 side
    for side in c b s; do
        ip netns del "$n-$side" 2>/dev/null || true
    done
}

sweep() {
    local ns pid
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^kas-[0-9]+-[0-9]+-[cbs]$' || true); do
        pid=${ns#kas-}
        pid=${pid%%-*}
        if ! kill -0 "$pid" 2>/dev/null; then
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

case ${1:-} in
    up) up "$2" ;;
    cut) cut "$2" "$3" ;;
    down) down "$2" ;;
    sweep) sweep ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
