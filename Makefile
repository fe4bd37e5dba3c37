# Every target creates (or reuses) .venv and installs what it needs from the
# project's own files, so the two README commands work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfprune-installed
# TFMOT only prunes legacy tf_keras models, so it gets its own virtualenv: tf_keras
# stays out of the test environment and TF_USE_LEGACY_KERAS=1 only ever applies
# to the benchmarks' TFMOT subprocesses.
TFMOT_VENV := .venv-tfmot
BENCH_STAMP := $(TFMOT_VENV)/.tfprune-bench-installed
PYTEST_WORKERS ?= 2
# The oldest Keras of setup.cfg's range: the core tests run on it too, in their own virtualenv.
KERAS_OLDEST := 3.12.*
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.tfprune-oldest-installed

.PHONY: demo test test-oldest test-all lint bench fashion-mnist clean

# tfprune[dev] is everything: the tensorflow extra (TensorFlow, LiteRT, tensorflow-datasets),
# the test tools, JAX, PyTorch and keras-hub; tfprune[bench] includes the tensorflow extra too.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	test -x $(TFMOT_VENV)/bin/python || $(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TFMOT_VENV)/bin/python -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

# Without the tensorflow extra: the core must run without TensorFlow, here on JAX.
$(OLDEST_STAMP): setup.cfg pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e ".[test,jax]" "keras==$(KERAS_OLDEST)"
	touch $(OLDEST_STAMP)

demo: $(STAMP)
	$(BIN)/tfprune demo

lint: $(STAMP)
	$(BIN)/ruff check tfprune tests benchmarks examples _tfprune_main.py

# The tests include the quick mode of every benchmark script; the TFMOT ones run
# in .venv-tfmot, named by TFPRUNE_TFMOT_PYTHON (the smoke test fails if it does not work).
TFMOT_ENV := TFPRUNE_TFMOT_PYTHON=$(abspath $(TFMOT_VENV))/bin/python

# The suite runs on TensorFlow; then what must hold on every backend runs again on JAX
# and on PyTorch: tests/test_backends.py and the backend-neutral unit tests below
# (more of them on JAX in test-all).
BACKEND_TESTS := tests/test_backends.py tests/test_regularizers.py tests/test_criteria_taylor.py
JAX_TESTS_ALL := $(BACKEND_TESTS) tests/test_str_layers.py tests/test_magnitude_prune.py tests/test_magnitude_masks.py \
	tests/test_magnitude_schedules.py tests/test_sparsity.py tests/test_sparsity_budget.py tests/test_bn_sparsity.py \
	tests/test_graph.py tests/test_surgery.py tests/test_channel_coupling.py tests/test_criteria.py \
	tests/test_criteria_data.py tests/test_pruning.py tests/test_search_abc.py tests/test_search_dmcp.py \
	tests/test_pruners.py tests/test_analysis.py tests/test_graph_flatten.py tests/test_attention.py \
	tests/test_handlers_inferred.py
JAX_ENV := KERAS_BACKEND=jax
TORCH_ENV := KERAS_BACKEND=torch

# The core (graph, surgery, prune, STR, magnitude pruning) on the oldest Keras of the range, on JAX
# and without TensorFlow (its few TensorFlow-only tests skip), as a user of plain `pip install tfprune`
# has it; tests/test_optional_tensorflow.py adds the command and the sentences asking for the extra.
CORE_TESTS := tests/test_graph.py tests/test_surgery.py tests/test_str_layers.py tests/test_magnitude_prune.py \
	tests/test_magnitude_masks.py tests/test_sparsity.py tests/test_prune_str.py tests/test_optional_tensorflow.py

test: lint $(BENCH_STAMP) test-oldest
	$(TFMOT_ENV) KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q --durations=15
	$(JAX_ENV) $(BIN)/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q $(BACKEND_TESTS)
	$(TORCH_ENV) $(BIN)/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q $(BACKEND_TESTS)

test-oldest: $(OLDEST_STAMP)
	KERAS_BACKEND=jax $(OLDEST_VENV)/bin/python -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q $(CORE_TESTS)

test-all: lint $(BENCH_STAMP)
	$(TFMOT_ENV) KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q --durations=25
	$(JAX_ENV) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q $(JAX_TESTS_ALL)
	$(TORCH_ENV) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q $(BACKEND_TESTS)

# Regenerates benchmarks/RESULTS.md: every script writes its own section with its
# command; benchmarks.environment writes the machine and versions at the top.
# The heavy (`slow`) tests run here too, not in CI.
bench: $(BENCH_STAMP)
	$(TFMOT_ENV) $(BIN)/python -m pytest -m slow -n $(PYTEST_WORKERS) -q --durations=25
	$(TFMOT_ENV) $(BIN)/python -m benchmarks.run_all

# Fashion-MNIST for tfprune.datasets.fashion_mnist() and the benchmarks on real data
# (demo and test need nothing of it): Debian's package puts the four IDX files in
# /usr/share/datasets/fashion-mnist. Needs apt-get, and root or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
fashion-mnist:
	@command -v apt-get >/dev/null || { echo "make fashion-mnist needs apt-get (Debian, Ubuntu); elsewhere pass path= or download=True to tfprune.datasets.fashion_mnist()"; exit 1; }
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; }
	dpkg -L dataset-fashion-mnist | grep idx

clean:
	rm -rf $(VENV) $(TFMOT_VENV) $(OLDEST_VENV) build *.egg-info .pytest_cache .ruff_cache
