#!/usr/bin/env bash
# Build the images the real-node e2e tests run, without a registry, and export each
# as an OCI archive for `ctr images import`:
#   pause.tar   the sandbox image: pause.c, built with `gcc -static`, from scratch
#   bjc.tar     the controller image, from the repository's Dockerfile, tagged as the
#               shipped manifests expect (ghcr.io/bjc-project/bjc:0.1.0)
#   job.tar     the example job image, from examples/job-image/Dockerfile (node-check:e2e)
# Both Dockerfiles start FROM python:3.11-slim. No registry is reachable here, so that
# base is made locally once and cached: Debian bookworm (minbase, python3, pip,
# ca-certificates) by mmdebstrap, shaped like the official image where the Dockerfiles
# rely on it (pip may install into /usr/local; `pip install --prefix=/install`
# followed by `COPY /install /usr/local` is importable). It is tagged
# docker.io/library/python:3.11-slim in buildah's local storage and `buildah bud
# --pull=false` uses it; with a registry the official image is used unchanged.
#
# Caches, keyed by what they are built from: ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/images/
#   base-<suite>-<sha of build_base>.tar (the root file system) and
#   pause-<sha of pause.c>.tar.
# The bjc and job images are rebuilt every run (buildah --layers reuses unchanged steps).
# Usage: build_images.sh OUT_DIR.  Needs root, buildah, mmdebstrap, gcc.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
OUT="${1:?usage: $0 OUT_DIR}"
CACHE="${BJC_E2E_CACHE:-$HOME/.cache/bjc-e2e}/images"
SUITE=bookworm
MIRROR="${BJC_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAG=docker.io/library/python:3.11-slim
BJC_TAG=ghcr.io/bjc-project/bjc:0.1.0
JOB_TAG=localhost/node-check:e2e
PAUSE_TAG=localhost/bjc-e2e/pause:1
mkdir -p "$OUT" "$CACHE"
rm -f "$OUT"/*.tar  # a failed build must not leave the last run's images to test

[[ $EUID -eq 0 ]] || { echo "build_images: needs root (buildah, mmdebstrap)" >&2; exit 1; }
for tool in buildah mmdebstrap gcc; do
    command -v "$tool" >/dev/null || { echo "build_images: $tool not found" >&2; exit 1; }
done

export_image() {  # tag archive
    rm -f "$2"
    buildah push --quiet "$1" "oci-archive:$2:$1" >/dev/null
}

build_pause() {
    local key archive
    key="$(sha256sum "$HERE/pause.c" | cut -c1-12)"
    archive="$CACHE/pause-$key.tar"
    if [[ ! -f "$archive" ]]; then
        local work
        work="$(mktemp -d)"
        gcc -static -O2 -o "$work/pause" "$HERE/pause.c"
        local c
        c="$(buildah from scratch)"
        buildah copy --quiet "$c" "$work/pause" /pause
        buildah config --entrypoint '["/pause"]' "$c"
        buildah commit --quiet "$c" "$PAUSE_TAG" >/dev/null
        buildah rm "$c" >/dev/null
        export_image "$PAUSE_TAG" "$archive.tmp"
        mv "$archive.tmp" "$archive"
        rm -rf "$work"
        echo "build_images: built $archive"
    fi
    cp "$archive" "$OUT/pause.tar"
}

build_base() {
    # keyed by how it is made: this function's own text
    local key rootfs
    key="$(declare -f build_base | sha256sum | cut -c1-12)"
    rootfs="$CACHE/base-$SUITE-$key.tar"
    if [[ ! -f "$rootfs" ]]; then
        # the official image's pip installs into /usr/local: drop Debian's
        # EXTERNALLY-MANAGED marker, and let the interpreter find /usr/local/lib/python3
        # (where Debian's pip puts a --prefix install under the deb layout)
        mmdebstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
            --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
            --customize-hook='echo /usr/local/lib/python3/dist-packages > "$1"/usr/lib/python3/dist-packages/bjc-e2e-local.pth' \
            --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
            --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
            "$SUITE" "$rootfs.part.tar" "$MIRROR"  # a .tar name makes mmdebstrap write a tarball
        mv "$rootfs.part.tar" "$rootfs"
        echo "build_images: built $rootfs"
    fi
    # (re)tag the base in buildah's storage unless it is this rootfs already
    local tagged
    tagged="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "bjc-e2e-base"}}' \
        "$BASE_TAG" 2>/dev/null || true)"
    if [[ "$tagged" != "$key" ]]; then
        local c
        c="$(buildah from scratch)"
        buildah add --quiet "$c" "$rootfs" /
        buildah config --env DEB_PYTHON_INSTALL_LAYOUT=deb --env LANG=C.UTF-8 \
            --label "bjc-e2e-base=$key" --cmd '["python3"]' "$c"
        buildah commit --quiet "$c" "$BASE_TAG" >/dev/null
        buildah rm "$c" >/dev/null
        echo "build_images: tagged $BASE_TAG"
    fi
}

build_from_dockerfile() {  # dockerfile tag archive
    # pip in the build reaches PyPI with the host's CA bundle (a proxying registry
    # may use a CA of its own); the Dockerfiles are used exactly as committed
    buildah bud --quiet --pull=false --layers --network=host \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        -f "$1" -t "$2" "$ROOT" >/dev/null
    export_image "$2" "$3"
    echo "build_images: built $2"
}

build_pause
build_base
build_from_dockerfile "$ROOT/Dockerfile" "$BJC_TAG" "$OUT/bjc.tar"
build_from_dockerfile "$ROOT/examples/job-image/Dockerfile" "$JOB_TAG" "$OUT/job.tar"
