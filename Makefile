# Papayya: `make run` starts everything, `make test` runs the suite. Both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install services run test lint bench chaos topology clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Docker engine, base image, registry and S3 for the cloud path (root, Debian; idempotent).
services: install
	bash scripts/services.sh

# A single-user machine: every project may run agents as local processes (the server says so;
# PAPAYYA_PROCESS_RUNTIME in the environment wins).
run: install
	PAPAYYA_PROCESS_RUNTIME=$${PAPAYYA_PROCESS_RUNTIME:-all} $(VENV)/bin/papayya server

test: install
	$(PY) -m pytest -q

# ruff, mypy --strict, and the layer rule of docs/architecture.md (who may import whom).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_layers.py

# Every benchmark in bench/, one after another, into bench/REPORT.md (BENCH_ARGS=--quick).
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/report.py $(BENCH_ARGS)

# A steady load through the whole stack with workers, agents, Redis, Postgres and the provider
# failing at random; checks no run is lost and nothing finished runs twice. Not part of test.
CHAOS_MINUTES ?= 10
chaos: install
	$(PY) scripts/chaos.py --minutes $(CHAOS_MINUTES)

# A cluster of separate nodes (2 API behind HAProxy, 2 schedulers, a projector, 3 workers)
# that loses one node of each kind under load (tests/topology; docs/deploy.md). In `test` too.
topology: install
	$(PY) -m pytest -q tests/topology

clean:
	rm -rf $(VENV) .papayya .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
