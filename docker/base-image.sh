#!/usr/bin/env bash
# Make sure a Debian base image exists locally, as IMAGE (default
# pam-twofa-base:bookworm; the tag names the release: bookworm = Debian 12,
# trixie = Debian 13). A real admin pulls debian:RELEASE-slim; where no
# registry can be reached (as on the project's CI), build an equivalent
# minimal image with debootstrap and `docker import`. Idempotent.
set -euo pipefail
IMAGE=${1:-pam-twofa-base:bookworm}
SUITE=${2:-${IMAGE##*:}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
case "$SUITE" in
    bookworm|trixie) ;;
    *) echo "base-image.sh: unknown Debian release '$SUITE' (bookworm or trixie)" >&2; exit 2 ;;
esac

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
if timeout 60 docker pull -q "debian:$SUITE-slim" >/dev/null 2>&1; then
    docker tag "debian:$SUITE-slim" "$IMAGE"
    exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
rootfs=$(mktemp -d /var/tmp/pam-twofa-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image.sh: no registry; building $IMAGE with debootstrap (about a minute)" >&2
log=/var/tmp/pam-twofa-debootstrap-$SUITE.log
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }
# As in the official image: no apt caches, the standard sources.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$IMAGE" >/dev/null
