#!/usr/bin/env bash
# A Debian bullseye root filesystem (glibc 2.31, Python 3.9) for the old-glibc and container tests
# (tests/containers.rs), made once with debootstrap and cached:
#
#   target/rootfs/bullseye       the tree (minbase + python3, python3-requests, libc6-dev), for
#                                chroot, and the sysroot for `gcc --sysroot` (C programs linked
#                                against bullseye's glibc)
#   target/rootfs/bullseye.tar   the same tree as a tarball, for `docker import`
#
# Each is built under a temporary name and renamed when complete, so a killed run never leaves a
# half-made cache; a later run reuses them and returns at once. Runs are serialized with a lock.
# The first run needs root and the Debian mirror (it installs debootstrap with apt-get if missing);
# it prints how long it took.
#
#   rootfs.sh            make the cache (or find it made)
#   rootfs.sh path       print the tree's absolute path
#   rootfs.sh gcc ARGS   the host's gcc building against the tree's glibc: --sysroot, plus -B so
#                        that the start files (Scrt1.o, crti.o) come from the tree too, not from
#                        the host's glibc (which would make the program need GLIBC_2.34)
set -euo pipefail

SUITE=bullseye
MIRROR=${KEEPALIVE_SHIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/target/rootfs
TREE=$CACHE/$SUITE
TAR=$CACHE/$SUITE.tar
# The newest glibc symbol version a program built against the tree may need.
GLIBC_MAX=2.31

sysroot_gcc() { gcc --sysroot="$1" -B"$1/usr/lib/x86_64-linux-gnu" "${@:2}"; }

case ${1:-} in
    path) echo "$TREE"; exit 0 ;;
    gcc) shift; sysroot_gcc "$TREE" "$@"; exit ;;
    '') ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
cd "$ROOT"

say() { echo "rootfs.sh: $*" >&2; }
die() { say "$*"; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# Leftovers of a killed run: debootstrap may have left /proc or /sys mounted inside.
unmount_under() {
    local dir=$1 mnt
    for mnt in $(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
}
for old in "$CACHE"/.tmp.*; do
    [ -e "$old" ] && [ "$(id -u)" -eq 0 ] || continue
    unmount_under "$old"
    rm -rf --one-file-system "$old"
done

if [ -d "$TREE" ] && [ -f "$TAR" ]; then
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "making $TREE needs root (debootstrap, chroot)"

start=$SECONDS

tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX")
trap 'unmount_under "$tmp"; rm -rf --one-file-system "$tmp"' EXIT

apt_install() {
    say "installing $*"
    {
        flock 8
        apt-get update -qq -o DPkg::Lock::Timeout=300
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            "$@" >/dev/null
    } 8>"$ROOT/target/.apt.lock"
}
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v gcc >/dev/null || missing+=(gcc)
command -v readelf >/dev/null || missing+=(binutils)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ ! -d "$TREE" ]; then
    say "debootstrap $SUITE (minbase, python3, python3-requests, libc6-dev) from $MIRROR"
    new=$tmp/tree
    if ! debootstrap --variant=minbase --include=python3,python3-requests,libc6-dev \
        "$SUITE" "$new" "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
        tail -n 30 "$tmp/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    rm -rf "${new:?}"/var/cache/apt/archives/*.deb "${new:?}"/var/lib/apt/lists/*
    chmod 755 "$new"
    # Absolute symbolic links (/lib64/ld-linux-x86-64.so.2 -> /lib/...) would point into the host
    # when the linker follows them from outside: make them relative, the same inside the chroot.
    find "$new/usr/lib" "$new/usr/lib64" -type l -lname '/*' | while read -r link; do
        ln -sfn "$(realpath -sm --relative-to="$(dirname "$link")" "$new$(readlink "$link")")" \
            "$link"
    done

    # Check what the tests rely on before the tree becomes the cache.
    chroot "$new" /usr/bin/python3 -c 'import requests' \
        || die "python3 -c 'import requests' fails in the new tree"
    cat >"$tmp/check.c" <<'EOF'
#include <stdio.h>
#include <sys/socket.h>
#include <gnu/libc-version.h>
int main(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    printf("%s %d\n", gnu_get_libc_version(), fd >= 0);
    return 0;
}
EOF
    sysroot_gcc "$new" -O2 -o "$new/tmp/check" "$tmp/check.c" \
        || die "gcc --sysroot=$new cannot build a program"
    newest=$(readelf -V "$new/tmp/check" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' \
        | sort -V | tail -n 1)
    [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_MAX" | sort -V | tail -n 1)" = "$GLIBC_MAX" ] \
        || die "gcc --sysroot built a program needing GLIBC_$newest (more than $GLIBC_MAX)"
    ran=$(chroot "$new" /tmp/check) || die "a gcc --sysroot program does not run in the tree"
    [ "$ran" = "$GLIBC_MAX 1" ] || die "the program in the tree printed '$ran'"
    rm -f "$new/tmp/check"
    mv "$new" "$TREE"
    say "$TREE: $(du -sh "$TREE" | cut -f1), glibc $GLIBC_MAX, $(chroot "$TREE" python3 -V)"
fi

tar --numeric-owner -C "$TREE" -cf "$tmp/$SUITE.tar" \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude='./tmp/*' .
mv "$tmp/$SUITE.tar" "$TAR"
say "$TAR: $(du -h "$TAR" | cut -f1)"
say "made in $((SECONDS - start)) s"
