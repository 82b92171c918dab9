#!/usr/bin/env bash
# Lint: ruff (rules and formatting) and mypy, with the tools of the test venv
# (pinned in requirements-test.txt; scripts/test.sh builds the venv as root and
# runs this before the tests; "make venv lint" builds .venv and runs this
# without root). Exit status 1 and a line saying what failed on any error.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${PAM_TWOFA_TEST_VENV:-/var/tmp/pam-twofa-test-venv}
for tool in ruff mypy; do
    if [ ! -x "$VENV/bin/$tool" ]; then
        echo "lint: $VENV/bin/$tool is missing: run 'make venv' (or scripts/test.sh as root) once to build the test venv" >&2
        exit 1
    fi
done
# pyproject.toml's mypy cache (/var/tmp) is root's (scripts/test.sh): anyone
# else keeps one of their own, and never creates the folder root then writes in.
if [ "$(id -u)" != 0 ] && [ -z "${MYPY_CACHE_DIR:-}" ]; then
    export MYPY_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pam-twofa-mypy"
fi

failed=""
"$VENV/bin/ruff" check . || failed="$failed ruff-check"
"$VENV/bin/ruff" format --check . || failed="$failed ruff-format"
# pyproject.toml's mypy run skips the conftest.py files (all four are the
# module "conftest" there); each is checked in a run of its own.
"$VENV/bin/mypy" || failed="$failed mypy"
for conftest in $(find tests -name conftest.py | sort); do
    "$VENV/bin/mypy" "$conftest" || failed="$failed mypy:$conftest"
done

if [ -n "$failed" ]; then
    echo "lint FAILED:$failed (fix them, or run 'ruff format FILE' for formatting)" >&2
    exit 1
fi
echo "lint OK: ruff check, ruff format --check, mypy"
