# Shortcuts; install, test, demo, bench, deb and upgrade-test need root.
# venv, unit and lint do not: "make venv" builds .venv in the checkout once
# (Debian's /usr/bin/python3, the interpreter PAM embeds, with its system
# packages and the pinned tools of requirements-test.txt); unit and lint use
# .venv when it exists, else the venv scripts/test.sh builds as root.
# VENV=DIR picks another.
ROOT_VENV = /var/tmp/pam-twofa-test-venv
VENV ?= $(shell if [ -x .venv/bin/python ]; then echo .venv; else echo $(ROOT_VENV); fi)
# The Debian packages the unit layer imports (the package's own dependencies,
# the database backend's, pyotp as the tests' reference) and python3-venv.
DEV_DEBS = python3-venv python3-yaml python3-qrcode python3-pampy python3-six python3-psycopg python3-cryptography python3-pyotp
.PHONY: install test demo bench venv unit lint deb upgrade-test
install:
	bash scripts/install.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
# Rebuilt when requirements-test.txt changes (as scripts/test.sh does for its venv).
venv: .venv/requirements-test.txt
.venv/requirements-test.txt: requirements-test.txt
	@/usr/bin/python3 -c 'import ensurepip, yaml, qrcode, pam, six, psycopg, cryptography, pyotp' 2>/dev/null || \
	    { echo "make venv: Debian packages missing: apt-get install $(DEV_DEBS)" >&2; exit 1; }
	rm -rf .venv
	/usr/bin/python3 -m venv --system-site-packages .venv
	.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	cp requirements-test.txt $@
# The unit layer (pytest marker "unit": the files directly in tests/; tests/conftest.py
# marks every test by its folder). Tests marked "root" run only as root: the selection
# leaves them out for anyone else, and says so (pytest never skips them).
unit:
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "unit$$( [ "$$(id -u)" = 0 ] || echo ' and not root')" tests
# ruff check, ruff format --check and mypy, as scripts/test.sh runs them first.
lint:
	PAM_TWOFA_TEST_VENV=$(VENV) bash scripts/lint.sh
deb:
	bash scripts/build-deb.sh
upgrade-test:
	bash scripts/upgrade-test.sh
