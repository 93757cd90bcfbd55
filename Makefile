# One command each: `make serve` sets up and starts ZTDP; `make test` sets up and runs the tests.
# `serve` and `demo` install what the server needs (ZTDP, its plugins, the Kubernetes sandbox);
# `setup`, `lint` and `test` add the test tools.
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := plugins/ztdp-kubernetes/pyproject.toml plugins/ztdp-eventstore-postgres/pyproject.toml \
	plugins/ztdp-postgres/pyproject.toml
# the example provider is for reading and copying: the tests install it, `make serve` does not
EXAMPLE := plugins/ztdp-example-provider/pyproject.toml

.PHONY: setup runtime serve demo test lint bench clean

$(VENV)/.runtime: pyproject.toml $(PLUGINS)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . -e 'plugins/ztdp-kubernetes[sandbox]' \
		-e plugins/ztdp-eventstore-postgres -e plugins/ztdp-postgres
	touch $@

$(VENV)/.installed: $(VENV)/.runtime $(EXAMPLE)
	$(PY) -m pip install --quiet -e '.[test]' -e 'plugins/ztdp-kubernetes[test]' \
		-e 'plugins/ztdp-eventstore-postgres[test]' -e 'plugins/ztdp-postgres[test]' \
		-e 'plugins/ztdp-example-provider[test]'
	touch $@

runtime: $(VENV)/.runtime

setup: $(VENV)/.installed

serve: runtime
	$(VENV)/bin/ztdp serve

demo: runtime
	$(VENV)/bin/ztdp demo

lint: setup
	$(VENV)/bin/ruff check ztdp tests benchmarks plugins
	$(VENV)/bin/ruff format --check ztdp tests benchmarks plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest tests plugins/ztdp-kubernetes/tests plugins/ztdp-postgres/tests \
		plugins/ztdp-example-provider/tests

bench: setup
	$(PY) benchmarks/plan.py
	$(PY) benchmarks/api_throughput.py
	$(PY) benchmarks/runtime.py
	$(PY) benchmarks/cel_budget.py
	$(PY) benchmarks/event_store.py
	$(PY) benchmarks/reconcile.py
	$(PY) benchmarks/postgres_provider.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
