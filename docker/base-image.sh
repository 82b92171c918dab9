#!/usr/bin/env bash
# Make sure the Debian 12 base image exists locally, as IMAGE (default
# pam-twofa-base:bookworm). A real admin pulls debian:bookworm-slim; where no
# registry can be reached (as on the project's CI), build an equivalent
# minimal image with debootstrap and `docker import`. Idempotent.
set -euo pipefail
IMAGE=${1:-pam-twofa-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    docker tag debian:bookworm-slim "$IMAGE"
    exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
rootfs=$(mktemp -d /var/tmp/pam-twofa-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image.sh: no registry; building $IMAGE with debootstrap (about a minute)" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/var/tmp/pam-twofa-debootstrap.log 2>&1 \
    || { tail -20 /var/tmp/pam-twofa-debootstrap.log >&2; exit 1; }
# As in the official image: no apt caches, the standard sources.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$IMAGE" >/dev/null
