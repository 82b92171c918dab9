#!/usr/bin/env bash
# Run the whole test suite on a Debian 12 or 13 host, as root, installing what it needs.
# The end to end layer (tests/e2e) runs on a Debian 12 and a Debian 13 image.
# Idempotent: safe to run again; it assumes nothing was installed before.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "test.sh: run as root" >&2; exit 1; fi

TEST_DEPS="pamtester libpam-wrapper libnss-wrapper python3-venv oathtool util-linux openssh-client zbar-tools python3-pil lintian putty-tools"
# The database backend: a real PostgreSQL 15 started by the tests (tests/pgserver.py), TLS certificates made with openssl.
TEST_DEPS="$TEST_DEPS postgresql-15 python3-psycopg python3-cryptography openssl"
# pyotp: the reference the tests compare the package's own TOTP code with
# (tests/test_totp.py, the e2e harness); the package itself does not use it.
TEST_DEPS="$TEST_DEPS python3-pyotp"
missing=$(for p in $TEST_DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# The product, installed exactly as the README tells an admin (it builds the
# Debian package from this checkout and installs it with apt).
bash scripts/install.sh >/dev/null

# Test tools in a venv of Debian's interpreter (the one PAM embeds), seeing its
# Debian packages (yaml, qrcode, pam, psycopg, cryptography; pyotp for the
# tests) as the installed module does. "make venv" builds the same in .venv.
VENV=${PAM_TWOFA_TEST_VENV:-/var/tmp/pam-twofa-test-venv}
if [ ! -x "$VENV/bin/pytest" ] || ! cmp -s requirements-test.txt "$VENV/requirements-test.txt"; then
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-test.txt
    cp requirements-test.txt "$VENV/requirements-test.txt"
fi

# The other pyotp releases tests/test_totp.py compares with (the system's 2.6
# is the venv's own), each in a folder of its own: pyotp is pure Python.
PYOTP_DIR=/var/tmp/pam-twofa-pyotp
for version in $(sed 's/#.*//' tests/support/pyotp-versions.txt); do
    if [ ! -f "$PYOTP_DIR/$version/pyotp/__init__.py" ]; then
        rm -rf "$PYOTP_DIR/$version.new"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
            --target "$PYOTP_DIR/$version.new" "pyotp==$version"
        mv "$PYOTP_DIR/$version.new" "$PYOTP_DIR/$version"
    fi
done

# Lint before any test (and before the slow Docker setup): a lint error fails
# the run. Not for scripts/bench.sh, which only wants the setup.
if [ -z "${PAM_TWOFA_SETUP_ONLY:-}" ] && ! bash scripts/lint.sh; then
    echo "test.sh: lint failed (see above); no tests were run" >&2
    exit 1
fi

# The end to end layer (tests/e2e): a Docker engine with host networking only,
# and the Debian 12 and 13 base images (pulled, or built with debootstrap when
# no registry can be reached) that docker/docker-compose.yml builds on; the
# e2e session runs every scenario on each (PAM_TWOFA_E2E_DISTROS picks some).
bash scripts/docker-engine.sh
bash docker/base-image.sh pam-twofa-base:bookworm
bash docker/base-image.sh pam-twofa-base:trixie

# scripts/bench.sh reuses all of the above.
[ -n "${PAM_TWOFA_SETUP_ONLY:-}" ] && exit 0

exec "$VENV/bin/python" -m pytest "$@"
