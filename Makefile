# Shortcuts; each target needs root.
.PHONY: install test demo bench
install:
	bash scripts/install.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash scripts/bench.sh
