"""What must hold on every Keras backend: the suite runs this file on TensorFlow, JAX and PyTorch.

`make test` runs it three times (KERAS_BACKEND=tensorflow, jax, then torch),
together with the backend-neutral unit tests listed in the Makefile (BACKEND_TESTS).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import tfprune

BACKEND = keras.backend.backend()


def _data(count=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, 8, 8, 1)).astype("float32"), rng.integers(0, 4, count)


def _plain_cnn():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _compiled(model):
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_import_keeps_the_backend_of_keras_json_and_loads_no_tensorflow(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    environment["KERAS_HOME"] = str(tmp_path)
    script = (
        "import sys, tfprune, keras; "
        "print(keras.backend.backend(), [m for m in ('tensorflow', 'ai_edge_litert', 'tensorflow_datasets') "
        "if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "jax []"


def test_str_layers_with_sparsity_budget_reach_the_target_in_fit():
    inputs = keras.Input((8, 8, 1))
    x = tfprune.layers.STRConv2D(16, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = _compiled(keras.Model(inputs, tfprune.layers.STRDense(4, name="head")(x)))
    history = model.fit(*_data(), batch_size=16, epochs=3, verbose=0,
                        callbacks=[tfprune.callbacks.SparsityBudget(0.8, update_every=1)])  # fmt: skip
    assert history.history["sparsity"][-1] == pytest.approx(0.8, abs=0.02)
    report = tfprune.sparsity_report(model)
    assert 1 - report.nonzero_parameters / report.parameters == pytest.approx(0.8, abs=0.02)


def test_magnitude_pruning_keeps_pruned_weights_exactly_zero_after_every_step():
    model = _compiled(tfprune.prune_low_magnitude(_plain_cnn(), tfprune.PolynomialDecay(0.0, 0.6, 0, 6, frequency=2)))
    wrappers = tfprune.magnitude.pruning_wrappers(model)
    regrown = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model  # noqa: B018 - syncs the JAX training state
            for wrapper in wrappers:
                kernel = np.asarray(wrapper.layer.kernel.numpy())
                mask = np.asarray(wrapper.masks[0].numpy())
                regrown.append(int(np.count_nonzero(kernel[mask == 0])))

    model.fit(*_data(), batch_size=8, epochs=2, verbose=0,
              callbacks=[tfprune.callbacks.UpdatePruningStep(), Check()])  # fmt: skip
    assert len(regrown) == 16 * len(wrappers) and not any(regrown)
    assert tfprune.magnitude.mask_sparsity(model) == pytest.approx(0.6, abs=0.02)
    stripped = tfprune.strip(model)
    assert np.mean(np.asarray(stripped.get_layer("conv").kernel.numpy()) == 0) == pytest.approx(0.6, abs=0.02)


def test_bn_sparsity_warmup_turns_the_penalty_on_after_the_warmup():
    model = _compiled(_plain_cnn())
    callback = tfprune.callbacks.BNSparsity(5.0, mode="subgradient", penalty="gamma", warmup_epochs=1)
    loss = model.fit(*_data(), batch_size=16, epochs=2, verbose=0, callbacks=[callback]).history["loss"]
    # Epoch 2 adds 5 * sum|gamma| (16 scales near 1) to the loss: on JAX too, where the
    # strength would otherwise be frozen into the compiled step at 0.
    assert loss[1] - loss[0] > 40
    assert callback.get_config()["warmup_epochs"] == 1


@pytest.mark.parametrize("convert", [tfprune.sparsify, lambda model: tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))],
                         ids=["sparsify", "prune_low_magnitude"])  # fmt: skip
def test_training_the_copy_leaves_the_input_model_usable_and_unchanged(convert):
    original = _plain_cnn()
    x, y = _data()
    before = ops.convert_to_numpy(original(x))
    copy = _compiled(convert(original))
    callbacks = [tfprune.callbacks.UpdatePruningStep()] if tfprune.magnitude.pruning_wrappers(copy) else []
    copy.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    stripped = _compiled(tfprune.strip(copy))
    stripped.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(ops.convert_to_numpy(original(x)), before)


def test_export_gives_the_same_file_as_a_tensorflow_export(tmp_path):
    model = _compiled(_plain_cnn())
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    report = tfprune.export.to_tflite(model, tmp_path / "here.tflite", sample_inputs=x[:8])
    assert report.max_abs_error < 1e-4
    model.save(tmp_path / "model.keras")
    script = (
        "import sys, keras, tfprune; "
        "r = tfprune.export.to_tflite(keras.models.load_model(sys.argv[1]), sys.argv[2], verify=False); "
        "print(keras.backend.backend(), r.size_bytes, sorted(r.ops.items()))"
    )
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras"), str(tmp_path / "tf.tflite")],
        env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"tensorflow {report.size_bytes} {sorted(report.ops.items())}"
    assert (tmp_path / "here.tflite").read_bytes() == (tmp_path / "tf.tflite").read_bytes()
