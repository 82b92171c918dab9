#!/usr/bin/env bash
# The benchmark of docs/performance.md, as root: prints one table of ratios measured in one run.
#   sudo bash scripts/bench.sh [--runs N] [--rounds N] [--ssh-runs N]
# Installs what it needs exactly as the test command does, and builds the
# password-stack SSH host image for figure (5).
set -euo pipefail
cd "$(dirname "$0")/.."
PAM_TWOFA_SETUP_ONLY=1 bash scripts/test.sh
VENV=${PAM_TWOFA_TEST_VENV:-/var/tmp/pam-twofa-test-venv}
docker build -q --network host -f docker/Dockerfile \
    --build-arg BASE=pam-twofa-base:bookworm --build-arg STACK=password --build-arg PORT=2201 \
    -t pam-twofa-bench-sshd . >/dev/null
# The package and tests/pgserver.py from this checkout; bench/ is the script's own folder.
PAM_TWOFA_SSHD_IMAGE=pam-twofa-bench-sshd PYTHONPATH="$PWD:$PWD/tests" exec "$VENV/bin/python" bench/bench.py --ssh --db --capacity "$@"
