# Papayya: `make run` starts everything, `make test` runs the suite. Both install first:
# run installs what running needs; test adds the dev extras and brings up its services.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8080
# setuptools' notes about editable installs are for packagers, not for someone starting us.
PIP    := PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-dev services run test lint bench chaos topology clean

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-run: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run
	$(PIP) -e '.[dev]'
	touch $@

# Docker engine, base image, registry, S3 and Chromium for the tests of the cloud path and the
# dashboard (Debian, as root; idempotent and quick when all is there; without root it says
# what is missing, and the tests that need it fail).
services: install-dev
	bash scripts/services.sh

# A single-user machine: every project may run agents as local processes (the server says so;
# PAPAYYA_PROCESS_RUNTIME in the environment wins). PORT=8081 for another port.
run: install
	PAPAYYA_PROCESS_RUNTIME=$${PAPAYYA_PROCESS_RUNTIME:-all} $(VENV)/bin/papayya server --port $(PORT)

test: install-dev services
	$(PY) -m pytest -q

# ruff, mypy --strict, and the layer rule of docs/architecture.md (who may import whom).
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_layers.py

# Every benchmark in bench/, one after another, into bench/REPORT.md (BENCH_ARGS=--quick).
bench: install-dev
	$(PIP) -e '.[dev,bench]'
	$(PY) bench/report.py $(BENCH_ARGS)

# A steady load through the whole stack with workers, agents, Redis, Postgres and the provider
# failing at random; checks no run is lost and nothing finished runs twice. Not part of test.
CHAOS_MINUTES ?= 10
chaos: install-dev
	$(PY) scripts/chaos.py --minutes $(CHAOS_MINUTES)

# A cluster of separate nodes (2 API behind HAProxy, 2 schedulers, a projector, 3 workers)
# that loses one node of each kind under load (tests/topology; docs/deploy.md). In `test` too.
topology: install-dev
	$(PY) -m pytest -q tests/topology

clean:
	rm -rf $(VENV) .papayya .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
