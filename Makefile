# Two commands matter: `make test` (everything the CI runs) and `make run` (the master with
# the demo app and an embedded Redis, no Docker: app/run.py). The venv is built from pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
APP ?= app.wsgi:app
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install test test-fast run bench chaos dashboard-screenshot clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

run: install
	$(PY) -m app.run $(APP) $(RUN_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache

# The benchmark (docs/BENCHMARKS.md, docs/bench/) and the chaos scenarios (docs/chaos/).
# QUICK=1 for a short run, written to var/bench-quick/ so the committed full report stays;
# SCENARIO=name for one scenario; COMPOSE=1 against the compose stack.
bench: install
	$(PY) -m loadtest.bench $(if $(QUICK),--quick --out var/bench-quick)

chaos: install
	$(PY) -m loadtest.chaos $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(COMPOSE),--compose)

# The README's dashboard screenshot (docs/img/dashboard.png), taken by headless Chromium during a
# crash demo on loopback: two workers SIGKILLed under load, then a rolling restart (~1 min).
dashboard-screenshot: install
	$(PY) -m loadtest.dashboard_shot
