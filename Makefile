# The two commands: `make demo` and `make test`. Both set up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit test-lab bench bench-scale chaos sim lint rules-docs clean

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

# the raw keepalived + promote floor first; failover.py reports the project's ratio to it
FLOOR_RUNS ?= 10
FLOOR_JSON := docs/benchmarks/floor.json
bench: setup
	$(PY) bench/floor.py --runs $(FLOOR_RUNS) --json > $(FLOOR_JSON)
	$(PY) bench/failover.py --floor $(FLOOR_JSON) $(BENCH_ARGS)
	$(PY) bench/api.py
	$(PY) bench/anycast.py
	$(PY) bench/etsi.py
	$(PY) bench/netconf.py

# failover and rejoin with a 2 GB database (100,000 deployments, 1,000,000 events) against
# the small one: 2-4 min here and ~7 GB of disk in the lab directory; a target of its own
SCALE_RUNS ?= 5
bench-scale: setup
	$(PY) bench/scale.py --runs $(SCALE_RUNS) $(SCALE_ARGS)

# every fault 5 times, on a lab of its own (never an operator's: own prefix and directory)
CHAOS_COUNT ?= 5
# with the etcd witness: its own faults, and those a witness changes
CHAOS_ETCD_FAULTS ?= kill-etcd-member kill-etcd-all power-cut-active partition-all pause-active
chaos: setup
	ESC_LAB_NS_PREFIX=chaos- ESC_LAB_DIR=/var/tmp/esc-chaos $(VENV)/bin/escadm lab chaos \
		--count $(CHAOS_COUNT) --report docs/benchmarks/chaos-$$(date +%F).md $(CHAOS_ARGS)
	ESC_LAB_NS_PREFIX=chaos- ESC_LAB_DIR=/var/tmp/esc-chaos $(VENV)/bin/escadm lab chaos --witness \
		--count $(CHAOS_COUNT) --report docs/benchmarks/chaos-$$(date +%F)-witness.md $(CHAOS_ARGS)
	ESC_LAB_NS_PREFIX=chaos- ESC_LAB_DIR=/var/tmp/esc-chaos $(VENV)/bin/escadm lab chaos --witness etcd \
		$(foreach f,$(CHAOS_ETCD_FAULTS),--fault $(f)) \
		--count $(CHAOS_COUNT) --report docs/benchmarks/chaos-$$(date +%F)-etcd.md $(CHAOS_ARGS)

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
