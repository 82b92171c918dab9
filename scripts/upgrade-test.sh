#!/usr/bin/env bash
# The Debian 12 -> 13 upgrade test alone (tests/e2e/test_upgrade.py), as root:
# a Debian 12 SSH host with pam-twofa and an enrolled user is upgraded to
# Debian 13 with apt; the same user then logs in with a code, /etc/pam.d untouched.
#   sudo bash scripts/upgrade-test.sh
# It sets up what the test command does (without running the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
PAM_TWOFA_SETUP_ONLY=1 bash scripts/test.sh
VENV=${PAM_TWOFA_TEST_VENV:-/var/tmp/pam-twofa-test-venv}
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -s tests/e2e/test_upgrade.py "$@"
