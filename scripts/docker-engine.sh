#!/usr/bin/env bash
# Make sure a Docker engine and docker-compose (v1) are usable, for the end to
# end tests (tests/e2e). Debian 12, as root. Idempotent.
#
# If no engine answers, start dockerd in the background WITHOUT its default
# bridge, NAT or iptables rules: every test container and build uses host
# networking and binds 127.0.0.1 only (traffic to private address ranges is not
# allowed on the project's machines). Log: /var/log/pam-twofa-dockerd.log.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then echo "docker-engine.sh: run as root" >&2; exit 1; fi

PKGS="docker.io docker-compose debootstrap"
missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"; done)
if [ -n "$missing" ]; then
    # Keep the package from starting its own dockerd (with the default
    # bridge): this script starts it with the flags it needs.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    trap '[ -z "$guard" ] || rm -f "$guard"' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

LOG=/var/log/pam-twofa-dockerd.log
# A dockerd that is still starting keeps its pid file: do not start a second one.
if ! { [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }; then
    echo "docker-engine.sh: starting dockerd (log: $LOG)" >&2
    # setsid: the engine outlives this script and the test run.
    setsid dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        </dev/null >>"$LOG" 2>&1 &
fi

# Bounded wait for the engine to answer.
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "docker-engine.sh: dockerd did not answer within 60 s; last lines of $LOG:" >&2
tail -20 "$LOG" >&2 || true
exit 1
