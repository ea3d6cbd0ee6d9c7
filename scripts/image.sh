#!/usr/bin/env bash
# Writes the keepalive-shim image, keepalive-shim:VERSION for linux/amd64 and linux/arm64/v8, as
# ONE archive without a Docker daemon (no root, no registry): an OCI image layout whose
# index.json names one image index (the tag's two platforms), plus the manifest.json that
# `docker load` reads. scripts/dist.sh calls it with its release folders; tests/image.rs calls
# it again to prove that the same binaries give the same archive.
#
# Usage: SOURCE_DATE_EPOCH=SECONDS scripts/image.sh OUT.tar VERSION LICENSE X86_64_DIR AARCH64_DIR
#   X86_64_DIR, AARCH64_DIR: release folders holding libkeepalive_shim.so and keepalive-shim
#
# Each platform's image is FROM scratch, one gzip layer:
#   /usr/bin/keepalive-shim                          0755 0:0   the static tool, the entrypoint
#   /usr/lib/keepalive-shim/libkeepalive_shim.so     0644 0:0   the library
#   /keepalive-shim/                                 0777 0:0, empty: the mount point
# and runs as 65532:65532 (distroless's "nonroot"), so a pod passes the restricted Pod Security
# Standard with `runAsNonRoot: true`. The default command `copy-library /keepalive-shim` copies
# the library into the volume mounted there: a Kubernetes emptyDir (0777), or a Docker volume,
# which Docker makes with the owner and mode of the image's folder: 0777 as an emptyDir, so any
# user may write it, 65532 or root (old recipes, `--user 0`) even with every capability dropped.
#
# Who reads what:
# - containerd (`ctr images import --all-platforms`, kind, k3s, Docker with the containerd image
#   store) and skopeo (`oci-archive:`, to push to a registry): the OCI layout; index.json holds
#   one entry, the image index, named docker.io/library/keepalive-shim:VERSION (ref.name
#   VERSION). tests/image.rs runs ctr and skopeo on it; podman 4.3's `load` (tried by hand) gives
#   the amd64 image.
# - `docker load` with Docker's own image store (every version up to 28, and later ones unless
#   the containerd store is on) reads only manifest.json, and loads every image listed there
#   under its tag whatever its platform (Docker 28 adds `--platform`). It lists the amd64 image
#   only, tagged keepalive-shim:VERSION, as containerd's exporter writes an index's archive on an
#   amd64 host. On an arm64 host with Docker's own store, load the arm64 image with
#   `skopeo copy oci-archive:ARCHIVE docker-daemon:keepalive-shim:VERSION` (skopeo picks the
#   host's platform) or pull from a registry.
# Names sorted, owners fixed, mtimes and `created` from SOURCE_DATE_EPOCH, JSON in a fixed order,
# `gzip -n`: the same binaries give the same archive.
set -euo pipefail

[ $# -eq 5 ] || { sed -n '8,9p' "$0" >&2; exit 2; }
out=$1 version=$2 license=$3 x86_dir=$4 arm_dir=$5
fail() { echo "image.sh: $*" >&2; exit 1; }
[ -n "${SOURCE_DATE_EPOCH:-}" ] || fail "SOURCE_DATE_EPOCH is not set (seconds since 1970)"
epoch=$SOURCE_DATE_EPOCH
[[ $epoch =~ ^[0-9]+$ ]] || fail "SOURCE_DATE_EPOCH=$epoch: not a number of seconds since 1970"
# Both end up in JSON and the version in the tag: a tag's characters, no quote.
[[ $version =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
    || fail "VERSION $version: a tag takes letters, digits, '_', '.', '-' (at most 128)"
[[ $license != *[\"\\]* ]] || fail "LICENSE $license: no '\"' or '\\' accepted"
for dir in "$x86_dir" "$arm_dir"; do
    for file in keepalive-shim libkeepalive_shim.so; do
        [ -f "$dir/$file" ] || fail "$dir/$file is missing"
    done
done
# The image's user and group: distroless's "nonroot".
nonroot=65532
layout=$(mktemp -d "${TMPDIR:-/tmp}/keepalive-shim-image.XXXXXX")
trap 'rm -rf "$layout"' EXIT
mkdir -p "$layout/blobs/sha256"
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

blob() { # blob FILE: moves FILE to blobs/sha256/DIGEST; prints DIGEST SIZE
    local digest size
    digest=$(sha256sum <"$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$digest"
    echo "$digest $size"
}

# platform DEBARCH: the OCI platform's JSON members
platform() {
    case $1 in
        amd64) echo '"architecture": "amd64", "os": "linux"' ;;
        arm64) echo '"architecture": "arm64", "os": "linux", "variant": "v8"' ;;
    esac
}

# image DEBARCH DIR: one platform's layer, config and manifest; sets manifest_DEBARCH (digest
# size), config_DEBARCH, layer_DEBARCH (digests)
image() {
    local arch=$1 from=$2 tree=$layout/tree-$1 out diff layer layer_size config config_size
    install -d -m 0755 "$tree/usr/bin" "$tree/usr/lib/keepalive-shim"
    install -d -m 0777 "$tree/keepalive-shim"
    install -m 0755 "$from/keepalive-shim" "$tree/usr/bin/keepalive-shim"
    install -m 0644 "$from/libkeepalive_shim.so" "$tree/usr/lib/keepalive-shim/libkeepalive_shim.so"
    find "$tree" -exec touch -h -d "@$epoch" {} +
    tar -C "$tree" --format=gnu --sort=name --mtime="@$epoch" --owner=0 --group=0 \
        --numeric-owner -cf "$layout/layer" keepalive-shim usr
    rm -rf "$tree"
    diff=$(sha256sum <"$layout/layer" | cut -d' ' -f1)
    gzip -9n "$layout/layer"
    out=$(blob "$layout/layer.gz")
    read -r layer layer_size <<<"$out"
    cat >"$layout/config" <<EOF
{
  $(platform "$arch"),
  "config": {
    "User": "$nonroot:$nonroot",
    "Env": ["PATH=/usr/bin"],
    "Entrypoint": ["/usr/bin/keepalive-shim"],
    "Cmd": ["copy-library", "/keepalive-shim"],
    "WorkingDir": "/",
    "Labels": {
      "org.opencontainers.image.licenses": "$license",
      "org.opencontainers.image.title": "keepalive-shim",
      "org.opencontainers.image.version": "$version"
    }
  },
  "created": "$created",
  "history": [
    {"created": "$created", "created_by": "scripts/image.sh: libkeepalive_shim.so and keepalive-shim"}
  ],
  "rootfs": {"type": "layers", "diff_ids": ["sha256:$diff"]}
}
EOF
    out=$(blob "$layout/config")
    read -r config config_size <<<"$out"
    cat >"$layout/manifest" <<EOF
{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:$config",
    "size": $config_size
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "sha256:$layer",
      "size": $layer_size
    }
  ]
}
EOF
    out=$(blob "$layout/manifest")
    printf -v "manifest_$arch" '%s' "$out"
    printf -v "config_$arch" '%s' "$config"
    printf -v "layer_$arch" '%s' "$layer"
}
image amd64 "$x86_dir"
image arm64 "$arm_dir"

# The tag's image index: both platforms.
descriptor() { # descriptor DEBARCH: the index's entry for that platform's manifest
    local digest size var=manifest_$1
    read -r digest size <<<"${!var}"
    cat <<EOF
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:$digest",
      "size": $size,
      "platform": {$(platform "$1")}
    }
EOF
}
cat >"$layout/index" <<EOF
{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
$(descriptor amd64),
$(descriptor arm64)
  ]
}
EOF
read -r index index_size <<<"$(blob "$layout/index")"
cat >"$layout/index.json" <<EOF
{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "digest": "sha256:$index",
      "size": $index_size,
      "annotations": {
        "io.containerd.image.name": "docker.io/library/keepalive-shim:$version",
        "org.opencontainers.image.ref.name": "$version"
      }
    }
  ]
}
EOF
cat >"$layout/manifest.json" <<EOF
[{"Config": "blobs/sha256/$config_amd64", "RepoTags": ["keepalive-shim:$version"], "Layers": ["blobs/sha256/$layer_amd64"]}]
EOF
echo '{"imageLayoutVersion": "1.0.0"}' >"$layout/oci-layout"
chmod 0755 "$layout/blobs" "$layout/blobs/sha256"
chmod 0644 "$layout/index.json" "$layout/manifest.json" "$layout/oci-layout" \
    "$layout"/blobs/sha256/*
find "$layout" -exec touch -h -d "@$epoch" {} +
tar -C "$layout" --format=gnu --sort=name --mtime="@$epoch" --owner=0 --group=0 \
    --numeric-owner -cf "$out.new" blobs index.json manifest.json oci-layout
mv "$out.new" "$out"
