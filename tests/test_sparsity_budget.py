"""Tests for tfprune.callbacks.SparsityBudget and its threshold arithmetic."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfprune
from tfprune.callbacks.sparsity_budget import (
    common_threshold_scale,
    global_sparsity,
    layer_threshold_scales,
    threshold_ratios,
)
from tfprune.layers import STRConv2D, STRDense, STRLowRankDense
from tfprune.sparsity import str_layers


def mixed_layers():
    """Unstructured, per-filter channel and low-rank STR layers with distinct thresholds.

    The channel layer uses g = exp: sigmoid thresholds cannot exceed 1, so
    scaling them up stops at 1 (see `scale_thresholds`).
    """
    dense = STRDense(7, s_init=-3.0)
    dense.build((None, 9))
    conv = STRConv2D(5, 3, mode="channel", granularity="filter", threshold_fn="exp")
    conv.build((None, 6, 6, 4))
    conv.threshold_parameter.assign(np.linspace(-1.5, 0.0, 5).astype("float32"))
    low_rank = STRLowRankDense(4, rank=3, s_init=-0.5)
    low_rank.build((None, 6))
    low_rank.singular_values.assign([1.0, 0.5, 0.2])
    return [dense, conv, low_rank]


def counted_zeros(layers):
    """Zero weights counted from the effective kernels (weights per filter/rank included)."""
    zeros, total = 0, 0
    for layer in layers:
        if isinstance(layer, STRLowRankDense):
            per_rank = layer.left_factor.shape[0] + layer.units
            zeros += (layer.rank - layer.effective_rank()) * per_rank
            total += layer.rank * per_rank
        else:
            kernel = keras.ops.convert_to_numpy(layer.sparse_kernel)
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros, total


def test_global_sparsity_equals_zeros_counted_in_the_kernels():
    layers = mixed_layers()
    zeros, total = counted_zeros(layers)
    assert 0 < zeros < total
    assert global_sparsity(layers) == pytest.approx(zeros / total)


@pytest.mark.parametrize("target", [0.25, 0.5, 0.9])
def test_common_scale_reaches_the_nearest_achievable_sparsity(target):
    layers = mixed_layers()
    thresholds_before = [keras.ops.convert_to_numpy(layer.threshold).copy() for layer in layers]
    ratios, weights = threshold_ratios(layers)
    # Brute force: every achievable sparsity is a prefix of the sorted ratios.
    achievable = np.concatenate([[0.0], np.cumsum(weights[np.argsort(ratios)]) / weights.sum()])
    best = achievable[np.argmin(np.abs(achievable - target))]

    scale = common_threshold_scale(layers, target)
    for layer in layers:
        layer.scale_thresholds(scale)

    zeros, total = counted_zeros(layers)
    assert zeros / total == pytest.approx(best, abs=1e-12)
    # One common factor: every threshold is multiplied by the same number.
    factors = np.concatenate(
        [
            np.ravel(keras.ops.convert_to_numpy(layer.threshold) / before)
            for layer, before in zip(layers, thresholds_before)
        ]
    )
    np.testing.assert_allclose(factors, scale, rtol=1e-4)


def layers_one_would_empty():
    """Three unstructured STR layers with equal thresholds; the first holds the smallest weights."""
    rng = np.random.default_rng(21)
    layers = []
    for units, scale in ((8, 0.001), (16, 0.05), (32, 0.05)):
        layer = STRDense(units, s_init=-4.0)
        layer.build((None, units))
        layer._kernel.assign((scale * rng.uniform(0.5, 1.0, (units, units)) * rng.choice([-1, 1], (units, units))).astype("float32"))
        layers.append(layer)
    return layers


def nonzero_counts(layers):
    return [int(np.count_nonzero(keras.ops.convert_to_numpy(layer.sparse_kernel))) for layer in layers]


def test_without_a_floor_the_common_factor_empties_the_small_weight_layer():
    layers = layers_one_would_empty()
    for layer, scale in zip(layers, layer_threshold_scales(layers, 0.6, 0.0)):
        layer.scale_thresholds(scale)
    assert nonzero_counts(layers)[0] == 0


@pytest.mark.parametrize("floor", [0.05, 0.25])
def test_floor_is_honoured_exactly_and_the_global_target_still_met(floor):
    layers = layers_one_would_empty()
    total = sum(layer._kernel.shape[0] * layer._kernel.shape[1] for layer in layers)
    for layer, scale in zip(layers, layer_threshold_scales(layers, 0.6, floor)):
        layer.scale_thresholds(scale)
    counts = nonzero_counts(layers)
    # The floored layer (8x8 kernel, 8 output channels) keeps exactly its floor: the share
    # (64 - floor((1 - floor) * 64) weights), and at least one weight per output channel.
    assert counts[0] == max(64 - int(np.floor((1 - floor) * 64)), 8) == {0.05: 8, 0.25: 16}[floor]
    assert all(count >= floor * layer._kernel.shape[0] ** 2 for count, layer in zip(counts, layers))
    assert abs(sum(counts) - round(0.4 * total)) <= 1  # the other layers made up the difference


def test_floor_keeps_one_weight_per_output_channel_of_a_depthwise_layer():
    rng = np.random.default_rng(23)
    depthwise = tfprune.layers.STRDepthwiseConv2D(3, s_init=-4.0)
    depthwise.build((None, 8, 8, 16))  # 144 weights, 16 output channels
    depthwise._kernel.assign((1e-3 * rng.uniform(0.5, 1.0, (3, 3, 16, 1))).astype("float32"))
    dense = STRDense(64, s_init=-4.0)
    dense.build((None, 64))
    dense._kernel.assign((0.05 * rng.uniform(0.5, 1.0, (64, 64))).astype("float32"))
    layers = [depthwise, dense]
    for layer, scale in zip(layers, layer_threshold_scales(layers, 0.9, 0.01)):
        layer.scale_thresholds(scale)
    # The share alone (1% of 144) would leave 2 weights for 16 channels.
    assert nonzero_counts(layers)[0] == 16


def test_floor_that_does_not_bind_leaves_the_common_factor():
    layers = layers_one_would_empty()[1:]  # same weight scale: the common factor zeroes both alike
    assert layer_threshold_scales(layers, 0.5, 0.05) == [common_threshold_scale(layers, 0.5)] * 2


def narrow_layer_density_after_fit(budget):
    keras.utils.set_random_seed(22)
    inputs = keras.Input((16,))
    x = STRDense(32, activation="relu", name="wide")(inputs)
    outputs = STRDense(4, name="narrow", kernel_initializer=keras.initializers.RandomUniform(-1e-3, 1e-3))(x)
    model = keras.Model(inputs, outputs)  # "narrow" starts with the smallest weights: first to go
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    data = np.random.default_rng(22).normal(size=(64, 16)).astype("float32")
    model.fit(data, data[:, :4], epochs=3, batch_size=16, verbose=0, callbacks=[budget])
    report = tfprune.sparsity_report(model)
    assert report.global_sparsity == pytest.approx(0.9, abs=1 / report.parameters)
    return {record["name"]: 1 - record["sparsity"] for record in report.layers}["narrow"]


def test_default_floor_keeps_a_quarter_of_the_target_density_in_a_layer_training_would_empty():
    assert narrow_layer_density_after_fit(tfprune.callbacks.SparsityBudget(0.9)) >= 0.025
    assert narrow_layer_density_after_fit(tfprune.callbacks.SparsityBudget(0.9, min_layer_density=0.0)) == 0.0


def started_budget(layers, **arguments):
    """A SparsityBudget whose `on_train_begin` has run on a model holding `layers`."""
    inputs = keras.Input((layers[0]._kernel.shape[0],))
    x = inputs
    for layer in layers:
        x = layer(x)
    budget = tfprune.callbacks.SparsityBudget(0.5, **arguments)
    budget.set_model(keras.Model(inputs, x))
    budget.on_train_begin()
    return budget


def scaled_pair():
    """Two chained 16x16 STR layers with the same weight pattern, the second at 0.7 times the scale."""
    rng = np.random.default_rng(23)
    # Small weights: sigmoid thresholds cannot pass 1, and this one must grow 3x.
    pattern = (0.1 * rng.uniform(0.5, 1.0, (16, 16)) * rng.choice([-1, 1], (16, 16))).astype("float32")
    layers = []
    for scale in (1.0, 0.7):
        layer = STRDense(16, s_init=-6.0)
        layer.build((None, 16))
        layer._kernel.assign(scale * pattern)
        layers.append(layer)
    return layers


def layer_sparsities(layers):
    return [float(np.mean(keras.ops.convert_to_numpy(layer.sparse_kernel) == 0)) for layer in layers]


def test_uniform_start_zeroes_every_layer_alike_where_equal_thresholds_prune_globally():
    layers = scaled_pair()
    started_budget(layers, start="uniform", min_layer_density=0.0)._rescale(0.5)
    assert layer_sparsities(layers) == [0.5, 0.5]
    layers = scaled_pair()
    started_budget(layers, min_layer_density=0.0)._rescale(0.5)
    sparsities = layer_sparsities(layers)
    assert sparsities[0] < 0.5 < sparsities[1]  # global magnitude: the smaller layer loses more


def test_scheduled_sparsity_is_the_cubic_ramp():
    budget = tfprune.callbacks.SparsityBudget(0.8, ramp_epochs=4)
    for time in (0.0, 1.0, 2.5, 4.0, 7.0):
        progress = min(time / 4, 1.0)
        assert budget.scheduled_sparsity(time) == pytest.approx(0.8 * (1 - (1 - progress) ** 3))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"target": 1.0}, r"strictly between 0 and 1.*Received: target=1\.0"),
        ({"target": 0}, r"Received: target=0"),
        ({"target": 0.9, "ramp_epochs": 0}, r"positive `ramp_epochs`.*Received: ramp_epochs=0"),
        ({"target": 0.9, "update_every": 0.5}, r"positive int `update_every`\. Received: update_every=0\.5"),
        ({"target": 0.9, "min_layer_density": 0.1}, r"`min_layer_density` in \[0, 1 - target\) = \[0, 0\.1\).*Received: min_layer_density=0\.1"),
        ({"target": 0.9, "min_layer_density": -0.01}, r"Received: min_layer_density=-0\.01"),
        ({"target": 0.9, "min_layer_density": "auto"}, r"Received: min_layer_density='auto'"),
        ({"target": 0.9, "start": "global"}, r"start in \('equal', 'uniform'\)\. Received: start='global'"),
    ],
)
def test_invalid_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        tfprune.callbacks.SparsityBudget(**arguments)


def test_model_without_str_layers_is_refused_at_fit():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"found no STR layer in model 'plain'.*tfprune\.sparsify"):
        model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0, callbacks=[tfprune.callbacks.SparsityBudget(0.5)])


def small_cnn(width=16):
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def train(model, data, epochs, hold_epochs, callbacks=()):
    (train_images, train_labels), (test_images, test_labels) = data
    steps = int(np.ceil(len(train_images) / 32))
    # Constant learning rate while sparsity ramps up, then cosine decay.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        3e-3, (epochs - hold_epochs) * steps, warmup_target=3e-3, warmup_steps=hold_epochs * steps
    )
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        train_images, train_labels, batch_size=32, epochs=epochs, verbose=0, callbacks=list(callbacks)
    )
    return history, model.evaluate(test_images, test_labels, verbose=0)[1]


def test_digits_cnn_reaches_ninety_percent_sparsity_within_three_points_of_dense():
    data = tfprune.datasets.digits(image_size=16, channels=1, as_numpy=True)
    epochs, ramp_epochs = 12, 6
    keras.utils.set_random_seed(0)
    dense_model = small_cnn()
    _, dense_accuracy = train(dense_model, data, epochs, ramp_epochs)

    keras.utils.set_random_seed(0)
    # A common choice: the first conv and the classifier stay dense.
    sparse_model = tfprune.sparsify(small_cnn(), skip=("first", "logits"))
    budget = tfprune.callbacks.SparsityBudget(0.9, ramp_epochs=ramp_epochs)
    history, sparse_accuracy = train(sparse_model, data, epochs, ramp_epochs, [budget])

    report = tfprune.sparsity_report(sparse_model)
    assert abs(report.global_sparsity - 0.9) < 0.005
    assert len(history.history["sparsity"]) == epochs
    assert history.history["sparsity"][-1] == pytest.approx(report.global_sparsity)
    # Sparsity of ALL kernels of the stripped model, the dense first conv and classifier included.
    kernels = [
        keras.ops.convert_to_numpy(layer.kernel)
        for layer in tfprune.strip(sparse_model).layers
        if hasattr(layer, "kernel")
    ]
    whole_model_sparsity = sum(np.sum(kernel == 0) for kernel in kernels) / sum(k.size for k in kernels)
    assert whole_model_sparsity > 0.8
    assert dense_accuracy > 0.9
    assert sparse_accuracy >= dense_accuracy - 0.03, (sparse_accuracy, dense_accuracy)
    # Learned, non-uniform per-layer budgets.
    layer_sparsities = [record["sparsity"] for record in report.layers]
    assert max(layer_sparsities) - min(layer_sparsities) > 0.1, layer_sparsities


def test_budget_under_mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, dtype="float32")(x)
    model = tfprune.sparsify(keras.Model(inputs, outputs))
    assert str_layers(model)[0].compute_dtype == "float16"
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    data = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    history = model.fit(
        data, np.zeros((64, 4)), batch_size=16, epochs=3, verbose=0,
        callbacks=[tfprune.callbacks.SparsityBudget(0.7)],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert abs(tfprune.sparsity_report(model).global_sparsity - 0.7) < 0.005


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np
    import tfprune

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        x = keras.layers.Flatten()(x)
        model = tfprune.sparsify(keras.Model(inputs, keras.layers.Dense(4)(x)))
        model.compile(keras.optimizers.Adam(1e-3), "mse")
    data = np.random.default_rng(0).uniform(size=(32, 8, 8, 1)).astype("float32")
    history = model.fit(data, np.zeros((32, 4)), batch_size=16, epochs=2, verbose=0,
                        callbacks=[tfprune.callbacks.SparsityBudget(0.8)])
    layers = tfprune.sparsity.str_layers(model)
    replica_thresholds = [
        [float(np.mean(value.numpy())) for value in layer.threshold_parameter.value.values]
        if hasattr(layer.threshold_parameter.value, "values") else None
        for layer in layers
    ]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss": history.history["loss"],
        "sparsity": tfprune.sparsity_report(model).global_sparsity,
        "replica_thresholds": replica_thresholds,
    }))
    """
)


def test_budget_under_mirrored_strategy_with_two_logical_cpus():
    # Logical devices must be configured before TensorFlow initialises: fresh process.
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True, text=True, timeout=300, env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["replicas"] == 2
    assert np.all(np.isfinite(output["loss"]))
    assert abs(output["sparsity"] - 0.8) < 0.005
    for thresholds in output["replica_thresholds"]:
        if thresholds is not None:  # mirrored copies must agree after the callback's assigns
            assert thresholds[0] == thresholds[1]


def sparsity_with_early_stopping(early_stopping_first):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, STRDense(4, name="out")(STRDense(32, activation="relu", name="wide")(inputs)))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    data = np.random.default_rng(3).normal(size=(64, 16)).astype("float32")
    # mode="max" on the loss makes the first epoch the "best": its weights are restored.
    stopper = keras.callbacks.EarlyStopping("loss", patience=10, restore_best_weights=True, mode="max")
    budget = tfprune.callbacks.SparsityBudget(0.9, ramp_epochs=4)
    callbacks = [stopper, budget] if early_stopping_first else [budget, stopper]
    model.fit(data, data[:, :4], epochs=6, batch_size=16, verbose=0, callbacks=callbacks)
    return tfprune.sparsity_report(model).global_sparsity


def test_early_stopping_restoring_weights_must_come_before_the_budget():
    # The order the SparsityBudget docstring prescribes reaches the target ...
    assert sparsity_with_early_stopping(early_stopping_first=True) == pytest.approx(0.9, abs=0.01)
    # ... the other order ends with the thresholds of the restored epoch, below it.
    assert sparsity_with_early_stopping(early_stopping_first=False) < 0.8
