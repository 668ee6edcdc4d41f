# Two commands a new user needs: `make plan` (offline plan of the dev stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: plan test lint bench snapshots clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

plan: $(VENV)/.installed  ## offline plan (no cloud, no pulumi CLI): make plan STACK=prod
	$(PY) -m components.plan $(STACK)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint  ## ruff, mypy and the whole offline test suite
	$(PY) -m pytest

bench: $(VENV)/.installed  ## plan wall time and peak RSS per stack, against the import floor
	$(PY) benchmarks/plan_bench.py

snapshots: $(VENV)/.installed  ## deliberately regenerate golden plans; review the diff before committing
	$(PY) -m tests.golden --update

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
