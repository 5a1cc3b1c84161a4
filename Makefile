# The two commands: `make demo` and `make test`. Both set up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-lab bench lint clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(PY) bench/demo.py

test: setup lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

test-unit: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit

test-lab: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/lab

bench: setup
	$(PY) bench/failover.py $(BENCH_ARGS)
	$(PY) bench/api.py
	$(PY) bench/anycast.py

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	-$(VENV)/bin/escadm lab down
