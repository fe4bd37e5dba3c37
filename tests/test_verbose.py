"""One verbosity convention on every long operation: `verbose="auto"` (1), 0, 1 or 2, as in Keras."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import _utils


def small_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def data():
    return np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")


@pytest.mark.parametrize("verbose, expected", [("auto", 1), (0, 0), (1, 1), (2, 2), (True, 1), (False, 0)])
def test_verbose_values_resolve_like_keras(verbose, expected):
    assert _utils.check_verbose(verbose, "f") == expected


@pytest.mark.parametrize("verbose", [3, -1, "yes", 0.5, None])
def test_bad_verbose_is_refused_by_name(verbose):
    with pytest.raises(ValueError, match=r"`tfprune.prune` takes verbose=0 \(silent\), 1 \(progress\)"):
        tfprune.prune(small_model(), "activation", rate=0.5, data=data(), verbose=verbose)


def operations():
    return {
        "prune with a data criterion": lambda verbose: tfprune.prune(
            small_model(), "hrank", rate=0.5, data=data(), round_to=1, verbose=verbose),
        "criterion called directly": lambda verbose: tfprune.criteria.activation(
            small_model(), tfprune.graph.build(small_model()), data=data(), verbose=verbose),
        "sensitivity": lambda verbose: tfprune.pruning.sensitivity(
            small_model(), None, rates=(0.5,), evaluate=lambda candidate: 0.0, verbose=verbose),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(operations()))
def test_long_operations_are_silent_at_zero_and_report_by_default(name, capsys):
    operation = operations()[name]
    operation(0)
    assert capsys.readouterr().out == ""
    operation("auto")
    assert capsys.readouterr().out.strip()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export converts in a TensorFlow process")
def test_export_says_what_it_does_unless_silenced(tmp_path, capsys):
    model = small_model()
    tfprune.export.to_tflite(model, tmp_path / "a.tflite", verbose=0)
    assert capsys.readouterr().out == ""
    tfprune.export.to_tflite(model, tmp_path / "b.tflite")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tfprune.export.to_tflite: converting model")
    assert lines[-1].startswith(f"tfprune.export.to_tflite: wrote {tmp_path / 'b.tflite'}")


def test_a_partial_that_fixes_verbose_is_respected(capsys):
    import functools

    quiet_hrank = functools.partial(tfprune.criteria.hrank, verbose=0)
    tfprune.prune(small_model(), quiet_hrank, rate=0.5, data=data(), round_to=1)
    assert capsys.readouterr().out == ""
