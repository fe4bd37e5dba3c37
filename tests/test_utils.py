import doctest
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfprune import _utils


def _functional():
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden * 0.5))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_require_graph_model_accepts_functional_and_sequential():
    model = _functional()
    assert _utils.require_graph_model(model, "f") is model
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _utils.require_graph_model(sequential, "f") is sequential


def test_require_graph_model_refuses_subclassed_unbuilt_and_non_models():
    with pytest.raises(TypeError, match="cannot transform subclassed model"):
        _utils.require_graph_model(_Subclassed(), "tfprune.f")
    with pytest.raises(ValueError, match="is not built"):
        _utils.require_graph_model(keras.Sequential([keras.layers.Dense(2)]), "tfprune.f")
    with pytest.raises(TypeError, match="expects a Keras 3 `keras.Model`"):
        _utils.require_graph_model(keras.layers.Dense(2), "tfprune.f")


def test_clone_graph_copies_weights_keeps_names_and_replaces():
    model = _functional()
    before = [weight.copy() for weight in model.get_weights()]

    def replace(layer):
        if layer.name != "hidden":
            return None
        new_layer = keras.layers.Dense(4, name="hidden", kernel_initializer="zeros")
        new_layer.build((None, 6))
        return new_layer

    clone = _utils.clone_graph(model, replace)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(clone.get_layer("logits").kernel, model.get_layer("logits").kernel)
    np.testing.assert_array_equal(clone.get_layer("hidden").kernel, np.zeros((6, 4)))
    # The input model is untouched and the clone does not share its variables.
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    inputs = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    untouched = _utils.clone_graph(model)
    np.testing.assert_allclose(untouched(inputs), model(inputs), atol=0)
    untouched.get_layer("logits").kernel.assign(np.ones((4, 2)))
    assert not np.allclose(model.get_layer("logits").kernel, 1.0)


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError):
        with _utils.atomic_path(target) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "original"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind
    with _utils.atomic_path(target) as temporary:
        with open(temporary, "w") as handle:
            handle.write("new")
    assert target.read_text() == "new"
    with pytest.raises(FileExistsError, match="already exists"):
        with _utils.atomic_path(target, overwrite=False):
            pass


def test_first_line_drops_colours_tensorflow_prefixes_and_keras_call_banner():
    # As TensorFlow and Keras print an op error inside a layer call.
    error = ValueError(
        "\x1b[1mException encountered when calling Dense.call().\x1b[0m\n\n"
        "\x1b[1m{{function_node __wrapped__MatMul_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "Matrix size-incompatible: In[0]: [2,3], In[1]: [4,2] [Op:MatMul]\x1b[0m\n\n"
        "Arguments received by Dense.call():\n  • inputs=tf.Tensor(shape=(2, 3), dtype=float32)"
    )
    assert _utils.first_line(error) == (
        "ValueError: Matrix size-incompatible: In[0]: [2,3], In[1]: [4,2] [Op:MatMul]"
    )
    # The banner alone is still quoted; an empty message gives the type's name.
    assert _utils.first_line(RuntimeError("Exception encountered when calling X.call().")) == (
        "RuntimeError: Exception encountered when calling X.call()."
    )
    assert _utils.first_line(KeyError()) == "KeyError"
    assert _utils.first_line(TypeError("Expected a list:\nmore")) == "TypeError: Expected a list:"
    assert _utils.first_line(ValueError("x" * 500)) == "ValueError: " + "x" * 288
    assert _utils.first_line(ValueError("x" * 500), limit=20) == "ValueError: xxxxxxxx"


def test_docstring_examples_run():
    results = doctest.testmod(_utils, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted > 0


def test_atomic_path_removes_what_killed_runs_left_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    old = 0  # a modification time long past
    stale = tmp_path / f".tfprune-{dead.pid}-abc12345.keras"
    kept = {
        "recent": tmp_path / f".tfprune-{dead.pid}-def12345.keras",  # maybe another host's run: too young
        "live": tmp_path / f".tfprune-{os.getpid()}-ghi12345.keras",  # a run writing now
        "user file": tmp_path / f".tfprune-{dead.pid}-notes.txt",  # not the form atomic_path writes
        "user dated file": tmp_path / ".tfprune-2024-backup1.keras",
        "plain": tmp_path / "model.keras",
    }
    for path in [stale, *kept.values()]:
        path.write_text("contents")
    directory = tmp_path / f".tfprune-{dead.pid}-jkl12345.keras"  # a directory is never removed
    directory.mkdir()
    for path in [stale, directory, *(kept[name] for name in ("live", "user file", "user dated file"))]:
        os.utime(path, (old, old))
    with _utils.atomic_path(tmp_path / "out.txt") as temporary:
        assert _utils._TEMPORARY_NAME.fullmatch(os.path.basename(temporary))
        assert os.path.basename(temporary).startswith(f".tfprune-{os.getpid()}-")
        with open(temporary, "w") as handle:
            handle.write("new")
    assert not stale.exists()
    assert [name for name, path in kept.items() if not path.exists()] == [] and directory.is_dir()
    assert (tmp_path / "out.txt").read_text() == "new"


def test_atomic_path_keeps_the_writers_error_when_it_left_a_directory(tmp_path):
    with pytest.raises(RuntimeError, match="writer failed"):
        with _utils.atomic_path(tmp_path / "model.savedmodel") as temporary:
            os.makedirs(os.path.join(temporary, "variables"))
            raise RuntimeError("writer failed")
    assert os.listdir(tmp_path) == []


def test_remove_stale_temporaries_docstring_example_runs():
    runner = doctest.DocTestRunner()
    globs = {"remove_stale_temporaries": _utils.remove_stale_temporaries}
    for test in doctest.DocTestFinder().find(_utils.remove_stale_temporaries, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries == 6
