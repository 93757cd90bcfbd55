# One command each: `make serve` sets up and starts ZTDP; `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve demo test lint bench clean

$(VENV)/.installed: pyproject.toml plugins/ztdp-kubernetes/pyproject.toml \
		plugins/ztdp-eventstore-postgres/pyproject.toml plugins/ztdp-postgres/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e 'plugins/ztdp-kubernetes[test]' \
		-e 'plugins/ztdp-eventstore-postgres[test]' -e 'plugins/ztdp-postgres[test]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(VENV)/bin/ztdp serve

demo: setup
	$(VENV)/bin/ztdp demo

lint: setup
	$(VENV)/bin/ruff check ztdp tests benchmarks plugins
	$(VENV)/bin/ruff format --check ztdp tests benchmarks plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest tests plugins/ztdp-kubernetes/tests plugins/ztdp-postgres/tests

bench: setup
	$(PY) benchmarks/plan.py
	$(PY) benchmarks/api_throughput.py
	$(PY) benchmarks/runtime.py
	$(PY) benchmarks/cel_budget.py
	$(PY) benchmarks/event_store.py
	$(PY) benchmarks/postgres_provider.py
	$(PY) benchmarks/reconcile.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
