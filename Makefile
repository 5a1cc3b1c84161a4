# The two commands: `make demo` and `make test`. Both set up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-lab bench chaos sim lint rules-docs clean

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

# every fault 5 times, on a lab of its own (never an operator's: own prefix and directory)
CHAOS_COUNT ?= 5
chaos: setup
	ESC_LAB_NS_PREFIX=chaos- ESC_LAB_DIR=/var/tmp/esc-chaos $(VENV)/bin/escadm lab chaos \
		--count $(CHAOS_COUNT) --report docs/benchmarks/chaos-$$(date +%F).md $(CHAOS_ARGS)
	ESC_LAB_NS_PREFIX=chaos- ESC_LAB_DIR=/var/tmp/esc-chaos $(VENV)/bin/escadm lab chaos --witness \
		--count $(CHAOS_COUNT) --report docs/benchmarks/chaos-$$(date +%F)-witness.md $(CHAOS_ARGS)

# the real agent loop under the deterministic simulation (tests/sim runs 1000 seeds)
SEEDS ?= 10000
sim: setup
	$(PY) -m esc.sim --seeds $(SEEDS) --jobs $$(nproc)

lint: setup
	$(VENV)/bin/ruff check src tests bench

# the role state machine's table in docs/ (rules.dot, rules.svg, ha.md): after changing
# src/esc/roles/rules.py (tests/unit/test_rules.py fails until then)
rules-docs: setup
	$(PY) scripts/rules_docs.py

clean:
	-$(VENV)/bin/escadm lab down
