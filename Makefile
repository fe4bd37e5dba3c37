# Every target creates (or reuses) .venv and installs what it needs from the
# project's own files, so the two README commands work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfprune-installed
BENCH_STAMP := $(VENV)/.tfprune-bench-installed
PYTEST_WORKERS ?= 2

.PHONY: demo test test-all lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/tfprune demo

lint: $(STAMP)
	$(BIN)/ruff check tfprune tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q --durations=15

test-all: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q --durations=25

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
