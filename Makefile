# Shortcuts; each target needs root.
.PHONY: install test demo bench deb upgrade-test
install:
	bash scripts/install.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
deb:
	bash scripts/build-deb.sh
upgrade-test:
	bash scripts/upgrade-test.sh
