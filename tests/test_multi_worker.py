"""Pruning while training on two workers (tf.distribute) and on two JAX devices (keras.distribution).

Two worker processes on this machine (`TF_CONFIG` with two `localhost`
ports, CPU) each run `tests/distributed/worker.py`: STR layers with
`SparsityBudget`, `prune_low_magnitude` with `UpdatePruningStep` and a
`PolynomialDecay`, and `BNSparsity` with a warm-up epoch. The callbacks read
and rewrite variables between steps on every worker; the workers must end
in the same state. They do so bit for bit: the strategy syncs the initial
values and all-reduces the gradients, BatchNormalization is synchronized,
and each callback computes its thresholds and masks from those identical
variables with the same deterministic code, so there is nothing for
floating-point order to change. The broken variant (worker 1 rescales
towards another target) shows that the comparison catches a divergence.
"""

import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow's"
)
WORKER = os.path.join(os.path.dirname(__file__), "distributed", "worker.py")
JAX_DATA_PARALLEL = os.path.join(os.path.dirname(__file__), "distributed", "jax_data_parallel.py")
TIMEOUT = 600  # seconds for both workers; a run takes about a minute on 2 cores


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(directory, broken=False):
    """Starts both workers, waits for them (bounded), always cleans up; returns their states."""
    ports = ",".join(str(port) for port in free_ports(2))
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    processes = [
        subprocess.Popen(
            [sys.executable, WORKER, str(index), ports, str(directory)] + (["--broken"] if broken else []),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        )
        for index in range(2)
    ]  # fmt: skip
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index} failed:\n{output[-3000:]}"
    return [dict(np.load(directory / f"worker-{index}.npz")) for index in range(2)]


def differing(states):
    first, second = states
    assert first.keys() == second.keys()
    return sorted(name for name in first if not np.array_equal(first[name], second[name]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workers")
    return directory, run_workers(directory)


@tensorflow_only
def test_every_worker_ends_with_the_same_weights_thresholds_and_masks(trained):
    _, states = trained
    assert differing(states) == []
    names = set(states[0])
    assert {"str_budget/conv/threshold_parameter", "magnitude/conv/kernel_mask",
            "magnitude/conv/pruning_step", "bn_sparsity/bn/gamma", "bn_sparsity/bn/moving_mean"} <= names  # fmt: skip


@tensorflow_only
def test_the_targets_are_reached_and_the_chief_files_match(trained):
    directory, states = trained
    str_model = keras.models.load_model(directory / "str_budget.keras")
    report = tfprune.sparsity_report(str_model)
    assert report.global_sparsity == pytest.approx(0.7, abs=2 / report.parameters)
    magnitude = keras.models.load_model(directory / "magnitude.keras")
    assert tfprune.magnitude.mask_sparsity(magnitude) == pytest.approx(0.75, abs=0.01)
    assert int(magnitude.get_layer("conv").pruning_step.numpy()) == 12  # 3 epochs x 4 steps
    for name in ("str_budget", "magnitude", "bn_sparsity"):
        model = keras.models.load_model(directory / f"{name}.keras")
        for variable in model.variables:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), states[0][f"{name}/{variable.path}"])


@tensorflow_only
def test_a_worker_that_rescales_differently_is_caught(tmp_path):
    states = run_workers(tmp_path, broken=True)
    diverged = differing(states)
    assert "str_budget/conv/threshold_parameter" in diverged
    assert not [name for name in diverged if not name.startswith("str_budget/")]


def test_jax_data_parallel_keeps_every_variable_replicated_and_reaches_the_targets(tmp_path):
    # A process of its own: XLA_FLAGS must give JAX two CPU devices before it starts.
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, JAX_DATA_PARALLEL, str(tmp_path)], capture_output=True,
                               text=True, env=environment, timeout=TIMEOUT)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    import json

    result = json.loads((tmp_path / "jax.json").read_text())
    assert len(result["devices"]) == 2
    for name, model in result["models"].items():
        broken = {path: state for path, state in model["variables"].items()
                  if state != {"devices": 2, "replicated": True, "equal": True}}  # fmt: skip
        assert broken == {}, name
    assert result["models"]["str_budget"]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert result["models"]["magnitude"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert {"conv/threshold_parameter", "conv/kernel_mask", "bn/gamma"} <= {
        path for model in result["models"].values() for path in model["variables"]}  # fmt: skip
