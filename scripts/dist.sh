#!/usr/bin/env bash
# Makes the release artifacts in target/dist/, for x86_64 and aarch64 Linux:
#   keepalive-shim-VERSION-ARCH-linux/            libkeepalive_shim.so, keepalive-shim, README.md, LICENSE
#   keepalive-shim-VERSION-ARCH-linux.tar.gz      that folder
#   SHA256SUMS                                    the archives and the binaries in the folders
# VERSION is the version in Cargo.toml. The x86_64 library is target/release/libkeepalive_shim.so
# from plain `cargo build --release` (the README's command, and the file the tests preload),
# copied; the aarch64 library is the same package, profile and build.rs cross-linked with
# Debian's aarch64-linux-gnu-gcc (.cargo/config.toml). The tool is a static musl binary for each
# architecture, so it runs on any Linux of that architecture. Each artifact is checked before
# target/dist is replaced: libraries need only libc.so.6 + libdl.so.2 and no glibc version above
# 2.17, tools have no program interpreter and run (the aarch64 one under qemu-aarch64).
#
# Installs what is missing (rustup targets; Debian's cross gcc and aarch64 glibc, qemu-user, and
# musl-tools for tests/portable.rs), with one `apt-get update` first; that needs root.
# Archives are reproducible: the same binaries give the same archive and checksum.
#
# Usage: scripts/dist.sh          (no arguments; runs from any directory)
set -euo pipefail
cd "$(dirname "$0")/.."
# The paths the README and the tests name.
export CARGO_TARGET_DIR="$PWD/target"

field() { # field NAME: the value of NAME in Cargo.toml's [package] table
    awk -F'"' -v name="$1" '/^\[/ { pkg = ($0 == "[package]") }
        pkg && $1 ~ "^" name " *= *$" { print $2; exit }' Cargo.toml
}
version=$(field version)
license=$(field license)
[ -n "$version" ] && [ -n "$license" ] || { echo "dist.sh: no version/license in Cargo.toml" >&2; exit 1; }

# --- what the builds and checks need ------------------------------------------------------------
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so ] || missing+=(libc6-dev-arm64-cross)
command -v readelf >/dev/null || missing+=(binutils)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "dist.sh: needs ${missing[*]} (install them, or run as root)" >&2
        exit 1
    fi
    echo "dist.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
installed=$(rustup target list --installed)
for target in aarch64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    grep -qx "$target" <<<"$installed" || rustup target add "$target"
done

# --- builds -------------------------------------------------------------------------------------
cargo build --release
cargo build --release -p keepalive-shim --target aarch64-unknown-linux-gnu
cargo build --release -p keepalive-shim-cli \
    --target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl

# --- checks -------------------------------------------------------------------------------------
fail() { echo "dist.sh: $*" >&2; exit 1; }
check_library() { # check_library FILE MACHINE
    local needed newest
    readelf -hW "$1" | grep -q "Machine: *$2\$" || fail "$1 is not built for $2"
    needed=$(readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort | tr '\n' ' ')
    [ "$needed" = "libc.so.6 libdl.so.2 " ] || fail "$1 needs: $needed"
    newest=$(readelf -VW "$1" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
    [ "$(printf '%s\n' "$newest" GLIBC_2.17 | sort -V | tail -n1)" = GLIBC_2.17 ] \
        || fail "$1 needs $newest (at most GLIBC_2.17 allowed)"
}
check_tool() { # check_tool FILE MACHINE RUNNER...
    local file=$1 machine=$2 out
    shift 2
    readelf -hW "$file" | grep -q "Machine: *$machine\$" || fail "$file is not built for $machine"
    ! readelf -lW "$file" | grep -q INTERP || fail "$file has a program interpreter (not static)"
    ! readelf -dW "$file" | grep -q NEEDED || fail "$file needs shared libraries"
    out=$(env -u LD_PRELOAD "$@" "$file" --version) || fail "$file --version failed"
    [ "$out" = "keepalive-shim $version" ] || fail "$file --version printed: $out"
    env -u LD_PRELOAD "$@" "$file" check >/dev/null || fail "$file check failed"
}
x86_lib=target/release/libkeepalive_shim.so
arm_lib=target/aarch64-unknown-linux-gnu/release/libkeepalive_shim.so
x86_tool=target/x86_64-unknown-linux-musl/release/keepalive-shim
arm_tool=target/aarch64-unknown-linux-musl/release/keepalive-shim
check_library "$x86_lib" "Advanced Micro Devices X86-64"
check_library "$arm_lib" AArch64
check_tool "$x86_tool" "Advanced Micro Devices X86-64"
check_tool "$arm_tool" AArch64 qemu-aarch64

# --- packages -----------------------------------------------------------------------------------
# Timestamps, owners, order and gzip header fixed: the same inputs give the same archive.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
stage=target/dist.new
rm -rf "$stage"
mkdir -p "$stage"
package() { # package ARCH LIBRARY TOOL
    local name="keepalive-shim-$version-$1-linux"
    local dir="$stage/$name"
    mkdir "$dir"
    cp "$2" "$dir/libkeepalive_shim.so"
    cp "$3" "$dir/keepalive-shim"
    cp README.md "$dir/README.md"
    echo "keepalive-shim $version is licensed under $license (SPDX-License-Identifier: $license)." \
        >"$dir/LICENSE"
    chmod 0755 "$dir" "$dir/libkeepalive_shim.so" "$dir/keepalive-shim"
    chmod 0644 "$dir/README.md" "$dir/LICENSE"
    touch -h -d "@$epoch" "$dir" "$dir"/*
    tar -C "$stage" --format=gnu --sort=name --mtime="@$epoch" --owner=0 --group=0 \
        --numeric-owner -cf - "$name" | gzip -9n >"$stage/$name.tar.gz"
}
package x86_64 "$x86_lib" "$x86_tool"
package aarch64 "$arm_lib" "$arm_tool"
cmp -s "$x86_lib" "$stage/keepalive-shim-$version-x86_64-linux/libkeepalive_shim.so" \
    || fail "the packaged x86_64 library differs from $x86_lib"
(cd "$stage" && sha256sum -- *.tar.gz */libkeepalive_shim.so */keepalive-shim >SHA256SUMS)
rm -rf target/dist
mv "$stage" target/dist

# --- summary ------------------------------------------------------------------------------------
cd target/dist
echo
echo "target/dist (keepalive-shim $version):"
while read -r sum file; do
    printf '  %-56s %8s  %s\n' "$file" "$(stat -c %s "$file")" "$sum"
done <SHA256SUMS
echo "  check a copy with: sha256sum -c --ignore-missing SHA256SUMS"
echo "dist.sh: done in ${SECONDS}s"
