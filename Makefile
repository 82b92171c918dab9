# Shortcuts; install, test, demo, bench, deb and upgrade-test need root.
# unit and lint use the test venv that scripts/test.sh builds: run it once first.
VENV ?= /var/tmp/pam-twofa-test-venv
# The layers that need root, pam_wrapper, the installed module, PostgreSQL or Docker.
SLOW_LAYERS = --ignore=tests/pam --ignore=tests/hardening --ignore=tests/e2e --ignore=tests/e2e_fleet --ignore=tests/db
.PHONY: install test demo bench unit lint deb upgrade-test
install:
	bash scripts/install.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
# The unit tests alone (everything but tests/pam, tests/hardening, tests/db, tests/e2e, tests/e2e_fleet).
unit:
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(SLOW_LAYERS) tests
# ruff check, ruff format --check and mypy, as scripts/test.sh runs them first.
lint:
	PAM_TWOFA_TEST_VENV=$(VENV) bash scripts/lint.sh
deb:
	bash scripts/build-deb.sh
upgrade-test:
	bash scripts/upgrade-test.sh
