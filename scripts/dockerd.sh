#!/usr/bin/env bash
# A private Docker daemon for the container tests (tests/containers.rs), apart from the machine's
# own: its own socket, data root, exec root and pid file, all under target/docker/, and no
# networking of its own (no bridge, no iptables rules; containers get `--network none`). Images
# come from `docker import` of scripts/rootfs.sh's tarball: no registry is needed. The data root
# persists, so the imported image is reused by later runs. Needs root.
#
#   dockerd.sh start        install Debian's docker.io if missing, start the daemon unless it
#                           runs, wait until it answers
#   dockerd.sh stop         stop it by the PID in its pid file, wait until it is gone
#   dockerd.sh import       import target/rootfs/bullseye.tar as keepalive-shim/bullseye, unless
#                           that image exists and was made from the same tarball
#   dockerd.sh docker ARGS  the docker client (Debian's, matching the daemon) on this daemon
#
# Its configuration and identity key are under target/docker/ too (--config-file, and in it
# "deprecated-key-path", else it writes /etc/docker/key.json). The daemon's own containerd keeps
# its state under the exec root, but containerd-shim-runc-v2 puts its sockets in
# /run/containerd/s/ (a fixed path, one hashed name per container, removed with the container).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/target/docker
SOCK=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log
DOCKERD=/usr/sbin/dockerd
DOCKER=/usr/bin/docker
IMAGE=keepalive-shim/bullseye:latest
TAR=$ROOT/target/rootfs/bullseye.tar

say() { echo "dockerd.sh: $*" >&2; }
die() { say "$*"; exit 1; }

client() { DOCKER_BUILDKIT=0 "$DOCKER" -H "unix://$SOCK" "$@"; }

# The PID in the pid file, if that process is a dockerd using our data root.
running_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
        | grep -q -- "--data-root $STATE/data " || return 1
    echo "$pid"
}

install() {
    [ -x "$DOCKERD" ] && [ -x "$DOCKER" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "docker.io is not installed, and installing it needs root"
    say "installing docker.io"
    local policy=/usr/sbin/policy-rc.d made=
    # Never let the package start the machine's own daemon.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made=1
    fi
    local ok=1
    mkdir -p "$STATE"
    {
        flock 8
        apt-get update -qq -o DPkg::Lock::Timeout=300 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
                --no-install-recommends docker.io >/dev/null
    } 8>"$ROOT/target/.apt.lock" || ok=
    [ -z "$made" ] || rm -f "$policy"
    [ -n "$ok" ] || die "apt-get install docker.io failed"
}

start() {
    install
    mkdir -p "$STATE/data" "$STATE/run"
    if running_pid >/dev/null; then
        client version >/dev/null 2>&1 && return 0
    else
        [ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"
        printf '{"deprecated-key-path": "%s"}\n' "$STATE/key.json" >"$STATE/daemon.json"
        rm -f "$SOCK"
        # In the caller's process group (a Ctrl-C stops it too); `stop` ends it by its PID.
        "$DOCKERD" \
            --data-root "$STATE/data" --exec-root "$STATE/run" \
            -H "unix://$SOCK" --pidfile "$PIDFILE" --config-file "$STATE/daemon.json" \
            --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --bridge=none --userland-proxy=false --storage-driver=overlay2 --log-level=warn \
            </dev/null >"$LOG" 2>&1 &
    fi
    local i
    for i in $(seq 1 300); do
        client version >/dev/null 2>&1 && return 0
        running_pid >/dev/null || [ "$i" -lt 20 ] || break
        sleep 0.1
    done
    tail -n 20 "$LOG" >&2
    die "dockerd did not answer on $SOCK within 30 s (log: $LOG)"
}

stop() {
    local pid i
    pid=$(running_pid) || return 0
    kill -TERM "$pid"
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "dockerd $pid still running after 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

import() {
    [ -f "$TAR" ] || die "$TAR is missing (scripts/rootfs.sh makes it)"
    local made
    made=$(stat -c '%s-%Y' "$TAR")
    if [ "$(client image inspect -f '{{index .Config.Labels "keepalive-shim.rootfs"}}' "$IMAGE" \
        2>/dev/null)" = "$made" ]; then
        return 0
    fi
    local start=$SECONDS
    client import \
        --change "LABEL keepalive-shim.rootfs=$made" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        "$TAR" "$IMAGE" >/dev/null
    client image prune -f >/dev/null
    say "imported $IMAGE in $((SECONDS - start)) s"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    import) import ;;
    docker) shift; client "$@" ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
