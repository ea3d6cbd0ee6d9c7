#!/usr/bin/env bash
# Makes the release artifacts in target/dist/, for x86_64 and aarch64 Linux:
#   keepalive-shim-VERSION-ARCH-linux/            libkeepalive_shim.so, keepalive-shim, README.md, LICENSE
#   keepalive-shim-VERSION-ARCH-linux.tar.gz      that folder
#   keepalive-shim_VERSION_amd64.deb, keepalive-shim_VERSION_arm64.deb
#   keepalive-shim-VERSION-1.x86_64.rpm, keepalive-shim-VERSION-1.aarch64.rpm
#                                                 the same library and tool as the folders, in
#                                                 /usr/lib/keepalive-shim/VERSION/ and /usr/bin/, with
#                                                 README.md and the licence in
#                                                 /usr/share/doc/keepalive-shim/ and the fleet unit
#                                                 (disabled) in /usr/lib/systemd/system/
#   keepalive-shim-image_VERSION.tar              the image keepalive-shim:VERSION, ONE OCI image
#                                                 index for linux/amd64 and linux/arm64/v8 (FROM
#                                                 scratch: the same library and tool, in
#                                                 /usr/lib/keepalive-shim/ and /usr/bin/; user
#                                                 65532:65532); its default command
#                                                 `keepalive-shim copy-library /keepalive-shim`
#                                                 copies the library into the volume mounted there
#                                                 (the init container of examples/kubernetes/).
#                                                 To a registry, both platforms under one tag:
#                                                   skopeo copy --all oci-archive:keepalive-shim-image_VERSION.tar \
#                                                     docker://REGISTRY/keepalive-shim:VERSION
#                                                 `docker load -i` of it gives keepalive-shim:VERSION
#                                                 for amd64 (scripts/image.sh: arm64 hosts, the
#                                                 other readers)
#   SHA256SUMS                                    the archives, the packages, the image and the
#                                                 binaries in the folders
# VERSION is the version in Cargo.toml. The x86_64 library is target/release/libkeepalive_shim.so
# from plain `cargo build --release` (the README's command, and the file the tests preload),
# copied; the aarch64 library is the same package, profile and build.rs cross-linked with
# Debian's aarch64-linux-gnu-gcc (.cargo/config.toml). The tool is a static musl binary for each
# architecture, so it runs on any Linux of that architecture. Each artifact is checked before
# target/dist is replaced: libraries need only libc.so.6 + libdl.so.2 and no glibc version above
# 2.17, tools have no program interpreter and run (the aarch64 one under qemu-aarch64).
#
# Installs what is missing (rustup targets; Debian's cross gcc and aarch64 glibc, qemu-user, and
# musl-tools for tests/portable.rs; Debian's rpm for rpmbuild, and lintian for tests/packages.rs),
# with one `apt-get update` first; that needs root. The .deb files are made by dpkg-deb, the .rpm
# files by rpmbuild from packaging/ (control, maintainer scripts, spec, unit). A package brings
# its library under a name of its own, /usr/lib/keepalive-shim/VERSION/libkeepalive_shim.so; its
# post-installation script (`keepalive-shim system install-library`) probes it and renames a
# copy to /usr/lib/keepalive-shim/libkeepalive_shim.so, the path /etc/ld.so.preload names, so an
# upgrade never writes over a library running programs have mapped and never hands every program
# one that does not load. Installing switches nothing on; `keepalive-shim system enable` does, and
# the package removal scripts run `keepalive-shim system disable --all`.
# The image is written without a Docker daemon (no root, no registry). Archives, packages and
# the image are reproducible: the same binaries give the same files and checksums (timestamps from
# SOURCE_DATE_EPOCH, else the last commit).
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
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v rpmbuild >/dev/null || missing+=(rpm)
command -v lintian >/dev/null || missing+=(lintian)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "dist.sh: needs ${missing[*]} (install them, or run as root)" >&2
        exit 1
    fi
    echo "dist.sh: installing ${missing[*]}"
    apt-get update -qq -o DPkg::Lock::Timeout=600
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
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

# --- system packages ----------------------------------------------------------------------------
# The files of the folders above, in the usual places. The tree is staged once per architecture
# with fixed modes and timestamps; dpkg-deb (owner root, sorted, SOURCE_DATE_EPOCH) and rpmbuild
# (build time and file times clamped to SOURCE_DATE_EPOCH, a fixed build host) then give the
# same package for the same files.
# The project names no address of its own: set KEEPALIVE_SHIM_MAINTAINER for a real one.
maintainer=${KEEPALIVE_SHIM_MAINTAINER:-keepalive-shim maintainers <keepalive-shim@example.org>}
export SOURCE_DATE_EPOCH=$epoch
date_rfc2822=$(date -u -R -d "@$epoch")
# The copyright years: from the first commit's to the last one's.
years=$(date -u -d "@$epoch" +%Y)
first=$(git log --reverse --format=%ad --date=format:%Y 2>/dev/null | head -n1 || true)
[ -z "$first" ] || [ "$first" = "$years" ] || years="$first-$years"
stage_tree() { # stage_tree DIR FOLDER: the package's files, from the release folder FOLDER
    local tree=$1 from=$2 doc=$1/usr/share/doc/keepalive-shim
    install -d -m 0755 "$tree/usr/bin" "$tree/usr/lib/keepalive-shim/$version" \
        "$tree/usr/lib/systemd/system" "$doc"
    install -m 0755 "$from/keepalive-shim" "$tree/usr/bin/keepalive-shim"
    install -m 0644 "$from/libkeepalive_shim.so" \
        "$tree/usr/lib/keepalive-shim/$version/libkeepalive_shim.so"
    install -m 0644 packaging/keepalive-shim-fleet.service "$tree/usr/lib/systemd/system/"
    install -m 0644 "$from/README.md" "$from/LICENSE" "$doc/"
}
deb() { # deb ARCH DEBARCH: keepalive-shim_VERSION_DEBARCH.deb from the ARCH folder
    local tree=$stage/.deb-$2 doc
    doc=$tree/usr/share/doc/keepalive-shim
    stage_tree "$tree" "$stage/keepalive-shim-$version-$1-linux"
    # Debian's names and formats for the licence and the changelog; lintian's accepted tags.
    rm "$doc/LICENSE"
    sed "s/@YEARS@/$years/" packaging/deb/copyright >"$doc/copyright"
    chmod 0644 "$doc/copyright"
    install -d -m 0755 "$tree/usr/share/lintian/overrides"
    install -m 0644 packaging/deb/lintian-overrides "$tree/usr/share/lintian/overrides/keepalive-shim"
    printf '%s\n' "keepalive-shim ($version) unstable; urgency=medium" "" \
        "  * Release $version." "" " -- $maintainer  $date_rfc2822" >"$doc/changelog"
    touch -d "@$epoch" "$doc/changelog"
    gzip -9n "$doc/changelog"
    install -d -m 0755 "$tree/DEBIAN"
    install -m 0755 packaging/deb/prerm packaging/deb/postrm "$tree/DEBIAN/"
    sed "s/@VERSION@/$version/" packaging/deb/postinst >"$tree/DEBIAN/postinst"
    chmod 0755 "$tree/DEBIAN/postinst"
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$2/" -e "s/@MAINTAINER@/$maintainer/" \
        -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$tree" | cut -f1)/" packaging/deb/control \
        >"$tree/DEBIAN/control"
    (cd "$tree" && find usr -type f | LC_ALL=C sort | xargs md5sum >DEBIAN/md5sums)
    chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/md5sums"
    find "$tree" -exec touch -h -d "@$epoch" {} +
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$stage/keepalive-shim_${version}_$2.deb" \
        >/dev/null
    rm -rf "$tree"
}
rpm_package() { # rpm_package ARCH: keepalive-shim-VERSION-1.ARCH.rpm from the ARCH folder
    local top=$PWD/target/rpmbuild tree
    tree=$top/stage-$1
    rm -rf "$top"
    stage_tree "$tree" "$stage/keepalive-shim-$version-$1-linux"
    find "$tree" -exec touch -h -d "@$epoch" {} +
    rpmbuild -bb --quiet --target "$1-linux" \
        --define "_topdir $top" --define "stage $tree" \
        --define "ks_version $version" --define "ks_license $license" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_date_epoch 1" --define "_buildhost reproducible" \
        --define "_binary_payload w9.gzdio" \
        packaging/rpm/keepalive-shim.spec >/dev/null
    mv "$top/RPMS/$1/keepalive-shim-$version-1.$1.rpm" "$stage/"
    rm -rf "$top"
}
deb x86_64 amd64
deb aarch64 arm64
rpm_package x86_64
rpm_package aarch64

# --- the image ----------------------------------------------------------------------------------
# keepalive-shim-image_VERSION.tar: keepalive-shim:VERSION for linux/amd64 and linux/arm64/v8 as
# one OCI image index, from the two release folders (scripts/image.sh says what is in it and who
# reads which part).
image=keepalive-shim-image_$version.tar
scripts/image.sh "$stage/$image" "$version" "$license" \
    "$stage/keepalive-shim-$version-x86_64-linux" "$stage/keepalive-shim-$version-aarch64-linux"
# The packages and images hold the folders' very files: the x86_64 library is the tested one.
image_libraries() { # image_libraries ARCHIVE: the sha256sum of the library in each layer
    local blob
    for blob in $(tar -tf "$1" | grep '^blobs/sha256/.'); do
        { tar -xOf "$1" "$blob" | gzip -dc 2>/dev/null \
            | tar -xOf - usr/lib/keepalive-shim/libkeepalive_shim.so 2>/dev/null || true; } \
            | sha256sum
    done
}
same_library() { # same_library PACKAGE_FILE ARCH
    local lib=$stage/keepalive-shim-$version-$2-linux/libkeepalive_shim.so inside
    case $1 in
        *.deb) inside=$(dpkg-deb --fsys-tarfile "$1" \
            | tar -xOf - "./usr/lib/keepalive-shim/$version/libkeepalive_shim.so" | sha256sum) ;;
        *.rpm) inside=$(rpm -qp --qf '[%{FILEDIGESTS} %{FILENAMES}\n]' "$1" | awk -v \
            f="/usr/lib/keepalive-shim/$version/libkeepalive_shim.so" '$2 == f { print $1 "  -" }') ;;
        *.tar) inside=$(image_libraries "$1" | grep -x -- "$(sha256sum <"$lib")" || true) ;;
    esac
    [ "$inside" = "$(sha256sum <"$lib")" ] || fail "the library in $1 differs from $lib"
}
same_library "$stage/keepalive-shim_${version}_amd64.deb" x86_64
same_library "$stage/keepalive-shim_${version}_arm64.deb" aarch64
same_library "$stage/keepalive-shim-$version-1.x86_64.rpm" x86_64
same_library "$stage/keepalive-shim-$version-1.aarch64.rpm" aarch64
same_library "$stage/$image" x86_64
same_library "$stage/$image" aarch64
(cd "$stage" && sha256sum -- *.tar.gz *.deb *.rpm *.tar */libkeepalive_shim.so \
    */keepalive-shim >SHA256SUMS)
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
