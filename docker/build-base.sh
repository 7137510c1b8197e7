#!/usr/bin/env bash
# Build a local Debian bookworm image with Python 3.11, for machines that reach no image
# registry (this project's CI): the Dockerfiles' default base, python:3.11-slim, cannot be
# pulled there. Used by `make test-compose` through docker/compose.test.yml.
#
#   docker/build-base.sh [IMAGE]      (default autodep-base:bookworm; root, debootstrap, dockerd)
#
# The root file system comes from `debootstrap --variant=minbase` against the Debian mirror of
# this machine's apt sources (DEBIAN_MIRROR overrides it). The machine's extra CA certificates
# (/usr/local/share/ca-certificates) are trusted inside, and PIP_CERT points pip at the system
# store: Debian's pip 23 would otherwise use its own certifi bundle and fail behind a TLS proxy.
# The tarball is cached in $AUTODEP_CACHE_DIR (default ~/.cache/autodep-celery), keyed by this
# script and the certificates; nothing relies on the cache being there.
set -euo pipefail

IMAGE=${1:-autodep-base:bookworm}
SUITE=bookworm
CACHE=${AUTODEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autodep-celery}
CERTS=/usr/local/share/ca-certificates
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "build-base: $IMAGE exists"
    exit 0
fi

mirror() {
    # The first Debian (not security) mirror of apt's deb822 or one-line sources.
    local m=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

key=$( (cat "$0"; cat "$CERTS"/*.crt 2>/dev/null || true) | sha256sum | cut -c1-12)
tarball="$CACHE/base-$SUITE-$key.tar"
mkdir -p "$CACHE"

if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "build-base: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    url=${DEBIAN_MIRROR:-$(mirror)}
    echo "build-base: debootstrap $SUITE from $url"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$url" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    if compgen -G "$CERTS/*.crt" >/dev/null; then
        cp "$CERTS"/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    # older tarballs of other keys are stale
    find "$CACHE" -name "base-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
fi

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$tarball" "$IMAGE" >/dev/null
echo "build-base: imported $IMAGE from $tarball"
