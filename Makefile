# Shortcuts; install, test, demo and bench need root.
# unit and lint use the test venv that scripts/test.sh builds: run it once first.
VENV ?= /var/tmp/pam-twofa-test-venv
# The layers that need root, pam_wrapper, the installed module or Docker.
SLOW_LAYERS = --ignore=tests/pam --ignore=tests/hardening --ignore=tests/e2e
.PHONY: install test demo bench unit lint
install:
	bash scripts/install.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
# The unit tests alone (everything but tests/pam, tests/hardening, tests/e2e): about a minute on 2 cores.
unit:
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(SLOW_LAYERS) tests
# ruff check, ruff format --check and mypy, as scripts/test.sh runs them first.
lint:
	PAM_TWOFA_TEST_VENV=$(VENV) bash scripts/lint.sh
