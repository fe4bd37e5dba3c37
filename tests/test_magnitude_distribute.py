"""Magnitude pruning under tf.distribute.MirroredStrategy on two logical CPUs.

Logical devices must be configured before TensorFlow initialises its devices,
which the test process has already done, so the training runs in a subprocess.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, tfprune

keras.utils.set_random_seed(0)
inputs = keras.Input((8,))
hidden = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
model = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))
random = np.random.default_rng(0)
x, y = random.random((64, 8), dtype="float32"), random.random((64, 4), dtype="float32")
schedule = tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, power=1, frequency=2)

def train(strategy):
    with strategy.scope():
        pruned = tfprune.prune_low_magnitude(model, schedule)
        pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    pruned.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
               callbacks=[tfprune.callbacks.UpdatePruningStep()])
    return pruned

mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
single = train(tf.distribute.get_strategy())
report = {"replicas": 0, "layers": {}}
for wrapper in tfprune.magnitude.pruning_wrappers(mirrored):
    kernels = [value.numpy() for value in wrapper.layer.kernel.value.values]
    masks = [value.numpy() for value in wrapper.masks[0].value.values]
    report["replicas"] = len(kernels)
    reference = single.get_layer(wrapper.name)
    report["layers"][wrapper.name] = {
        "sparsity": [float(np.mean(mask == 0)) for mask in masks],
        "pruned_weights_zero": [bool(np.all(k[m == 0] == 0)) for k, m in zip(kernels, masks)],
        "replicas_equal": bool(np.array_equal(kernels[0], kernels[1]) and np.array_equal(masks[0], masks[1])),
        "mask_equals_single_device": bool(np.array_equal(masks[0], reference.masks[0].numpy())),
        "kernel_difference_to_single_device": float(np.abs(kernels[0] - reference.layer.kernel.numpy()).max()),
        "step": int(wrapper.pruning_step.numpy()),
    }
print("REPORT" + json.dumps(report))
"""


def test_pruning_under_mirrored_strategy_matches_single_device_training():
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("REPORT"))
    report = json.loads(line[len("REPORT") :])
    assert report["replicas"] == 2
    assert sorted(report["layers"]) == ["hidden", "out"]
    for name, layer in report["layers"].items():
        assert layer["sparsity"] == [pytest.approx(0.75)] * 2, name
        assert layer["pruned_weights_zero"] == [True, True], name
        assert layer["replicas_equal"], name
        assert layer["step"] == 12, name
        # Two replicas of 8 examples average to the single-device batch of 16.
        assert layer["mask_equals_single_device"], name
        assert layer["kernel_difference_to_single_device"] < 1e-5, name
