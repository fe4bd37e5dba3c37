"""Tests for the STR layers (tfprune/layers/str_*.py) against NumPy references."""

import keras
import numpy as np
import pytest
from backend_gradients import gradients, needs_float64

from tfprune.layers import (
    STRConv1D,
    STRConv2D,
    STRDense,
    STRDepthwiseConv2D,
    STRLowRankDense,
)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_sparse_kernel(kernel, threshold, mode, filter_axes=1, compensate=False):
    """docs/METHODS.md §1, written independently of the layer code.

    With `compensate`, the result is scaled to the L2 norm of the weights (or
    filters) that survive the threshold, measured before the shrinkage.
    """
    if mode == "unstructured":
        sparse = np.sign(kernel) * np.maximum(np.abs(kernel) - threshold, 0.0)
        survivors = np.where(np.abs(kernel) > threshold, kernel, 0.0)
    else:
        reduced = tuple(range(kernel.ndim - filter_axes))
        norm = np.sqrt(np.sum(kernel**2, axis=reduced))
        sparse = kernel * np.maximum(1.0 - threshold / norm, 0.0)
        survivors = kernel * (norm > threshold)
    if compensate:
        sparse = sparse * np.sqrt(np.sum(survivors**2) / np.sum(sparse**2))
    return sparse


# (layer factory, input shape, plain Keras class, number of trailing filter axes)
LAYER_CASES = {
    "conv1d": (lambda **kw: STRConv1D(6, 3, padding="causal", **kw), (2, 9, 4), keras.layers.Conv1D, 1),
    "conv2d": (lambda **kw: STRConv2D(6, 3, strides=2, **kw), (2, 9, 9, 4), keras.layers.Conv2D, 1),
    "depthwise": (
        lambda **kw: STRDepthwiseConv2D(3, depth_multiplier=2, padding="same", **kw),
        (2, 7, 7, 4),
        keras.layers.DepthwiseConv2D,
        2,
    ),
    "dense": (lambda **kw: STRDense(6, activation="relu", **kw), (2, 5), keras.layers.Dense, 1),
}


def built_layer(case, **str_kwargs):
    factory, input_shape, plain_class, filter_axes = LAYER_CASES[case]
    layer = factory(**str_kwargs)
    layer.build(input_shape)
    return layer, np.random.default_rng(0).normal(size=input_shape).astype("float32")


def set_thresholds(layer, values):
    """Sets s so that g(s) equals `values` (sigmoid)."""
    values = np.asarray(values, dtype="float64")
    layer.threshold_parameter.assign(np.log(values / (1.0 - values)).astype("float32"))


def plain_output(case, layer, kernel, inputs):
    """The Keras layer itself, given the independently computed kernel."""
    plain_class = LAYER_CASES[case][2]
    config = {key: value for key, value in layer.get_config().items() if key not in STR_KEYS}
    plain = plain_class.from_config(config)
    plain.build(inputs.shape)
    plain.set_weights([kernel, keras.ops.convert_to_numpy(layer.bias)])
    return keras.ops.convert_to_numpy(plain(inputs))


STR_KEYS = ("s_init", "threshold_fn", "granularity", "mode", "threshold_regularizer", "compensate_shrinkage")


@pytest.mark.parametrize("compensate", [True, False])
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_forward_equals_formula(case, compensate):
    for mode in ("unstructured", "channel"):
        for granularity in ("layer", "filter"):
            check_forward(case, mode, granularity, compensate)


def check_forward(case, mode, granularity, compensate):
    layer, inputs = built_layer(case, mode=mode, granularity=granularity, compensate_shrinkage=compensate)
    kernel = keras.ops.convert_to_numpy(layer._kernel)
    filter_axes = LAYER_CASES[case][3]
    filter_shape = kernel.shape[-filter_axes:]
    norms = np.sqrt(np.sum(kernel**2, axis=tuple(range(kernel.ndim - filter_axes))))
    if granularity == "layer":
        # Some but not all weights (filters) zero: the median magnitude, or
        # between the two smallest filter norms.
        thresholds = np.median(np.abs(kernel)) if mode == "unstructured" else np.sort(norms, None)[:2].mean()
    else:
        # No factor at 1.0: a norm exactly at its threshold sits on the kink.
        scale = np.linspace(0.23, 1.23, norms.size).reshape(filter_shape)
        thresholds = scale * (norms if mode == "channel" else np.max(np.abs(kernel)) / 2)
        thresholds = np.minimum(thresholds, 0.99)
    set_thresholds(layer, thresholds)
    threshold = sigmoid(keras.ops.convert_to_numpy(layer.threshold_parameter).astype("float64"))
    expected_kernel = numpy_sparse_kernel(kernel, threshold, mode, filter_axes, compensate)

    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.sparse_kernel), expected_kernel, atol=1e-5)
    zeros = np.mean(expected_kernel == 0)
    assert 0.0 < zeros < 1.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(inputs)),
        plain_output(case, layer, expected_kernel.astype("float32"), inputs),
        rtol=1e-5,
        atol=1e-5,
    )


def test_dense_forward_matches_numpy_matmul_with_exp_threshold():
    layer = STRDense(4, threshold_fn="exp", s_init=float(np.log(0.4)), compensate_shrinkage=False)
    inputs = np.random.default_rng(1).normal(size=(3, 5)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(inputs))
    kernel = keras.ops.convert_to_numpy(layer._kernel)
    expected = inputs @ (np.sign(kernel) * np.maximum(np.abs(kernel) - 0.4, 0)) + keras.ops.convert_to_numpy(
        layer.bias
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compensate", [False, True])
@pytest.mark.parametrize("granularity", ["layer", "filter"])
def test_gradients_equal_closed_forms(granularity, compensate):
    """dL/dW = dL/dŴ 1[|W| > g], dL/ds = -g'(s) Σ sign(W) 1[|W| > g] dL/dŴ (docs/METHODS.md §1).

    With `compensate_shrinkage` the forward pass is scaled by the gain
    sqrt(Σ W² 1[|W| > g] / Σ Ŵ²) while the gradients stay exactly these.
    """
    layer = STRDense(5, s_init=-1.2, granularity=granularity, use_bias=False, compensate_shrinkage=compensate)
    inputs = np.random.default_rng(2).normal(size=(7, 6)).astype("float32")
    upstream = np.random.default_rng(3).normal(size=(7, 5)).astype("float32")
    layer.build(inputs.shape)
    if granularity == "filter":
        layer.threshold_parameter.assign(np.linspace(-2.0, -0.5, 5).astype("float32"))
    kernel_gradient, s_gradient = gradients(
        lambda: keras.ops.sum(layer(inputs) * upstream), [layer._kernel, layer.threshold_parameter]
    )

    kernel = keras.ops.convert_to_numpy(layer._kernel).astype("float64")
    s = keras.ops.convert_to_numpy(layer.threshold_parameter).astype("float64")
    threshold = sigmoid(s)
    mask = np.abs(kernel) > threshold
    assert 0 < mask.mean() < 1
    effective_gradient = inputs.T.astype("float64") @ upstream  # dL/dŴ of y = x Ŵ
    expected_kernel_gradient = effective_gradient * mask
    derivative = threshold * (1.0 - threshold)  # g'(s) of the sigmoid
    per_filter = np.sum(np.sign(kernel) * mask * effective_gradient, axis=0)
    expected_s_gradient = -derivative * (per_filter.sum() if granularity == "layer" else per_filter)
    if compensate:  # the forward pass is scaled (not vacuous: the gain is large) ...
        sparse = np.sign(kernel) * np.maximum(np.abs(kernel) - threshold, 0.0)
        gain = np.sqrt(np.sum((kernel * mask) ** 2) / np.sum(sparse**2))
        assert gain > 1.5
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(inputs)), inputs @ (gain * sparse), rtol=1e-4, atol=1e-5
        )  # ... and the gradients above are still the paper's

    np.testing.assert_allclose(kernel_gradient, expected_kernel_gradient, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_gradient, expected_s_gradient, rtol=1e-4, atol=1e-6)


@needs_float64
def test_channel_mode_gradients_match_finite_differences():
    # The paper's layer: with compensate_shrinkage the gain is held constant in
    # backprop, so its gradients are not those of the forward function.
    layer = STRConv2D(3, 2, mode="channel", dtype="float64", compensate_shrinkage=False)
    inputs = np.random.default_rng(4).normal(size=(2, 4, 4, 2))
    layer.build(inputs.shape)
    norms = np.sqrt(np.sum(keras.ops.convert_to_numpy(layer._kernel) ** 2, axis=(0, 1, 2)))
    threshold = np.sort(norms)[:2].mean()  # one filter zero, no norm at the kink
    layer.threshold_parameter.assign(np.log(threshold / (1 - threshold)))
    upstream = np.random.default_rng(5).normal(size=(2, 3, 3, 3))

    def loss():
        return keras.ops.sum(layer(inputs) * upstream)

    kernel_gradient, s_gradient = gradients(loss, [layer._kernel, layer.threshold_parameter])
    step = 1e-6
    s = float(layer.threshold_parameter.numpy())
    layer.threshold_parameter.assign(s + step)
    plus = float(loss())
    layer.threshold_parameter.assign(s - step)
    minus = float(loss())
    layer.threshold_parameter.assign(s)
    np.testing.assert_allclose(float(s_gradient), (plus - minus) / (2 * step), rtol=1e-5)
    kernel = layer._kernel.numpy()
    for index in [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 2)]:
        shifted = kernel.copy()
        shifted[index] += step
        layer._kernel.assign(shifted)
        plus = float(loss())
        shifted[index] -= 2 * step
        layer._kernel.assign(shifted)
        minus = float(loss())
        layer._kernel.assign(kernel)
        np.testing.assert_allclose(kernel_gradient[index], (plus - minus) / (2 * step), rtol=1e-5, atol=1e-9)


def all_layer_types_model(**str_kwargs):
    inputs = keras.Input((9, 9, 4))
    x = STRConv2D(6, 3, **str_kwargs)(inputs)
    x = STRDepthwiseConv2D(3, depth_multiplier=2, padding="same", **str_kwargs)(x)
    x = keras.layers.Reshape((49, 12))(x)
    x = STRConv1D(4, 3, padding="causal", **str_kwargs)(x)
    x = keras.layers.Flatten()(x)
    outputs = STRDense(3, **str_kwargs)(x)
    return keras.Model(inputs, outputs)


def test_threshold_is_a_trainable_weight_that_training_moves():
    model = all_layer_types_model(s_init=-1.5)
    str_layers = model.layers[1:3] + model.layers[4:5] + model.layers[6:]
    for layer in str_layers:
        assert [weight.name for weight in layer.trainable_weights] == ["kernel", "bias", "threshold_parameter"]
    before = [float(keras.ops.convert_to_numpy(layer.threshold_parameter)) for layer in str_layers]
    data = np.random.default_rng(12).normal(size=(8, 9, 9, 4)).astype("float32")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(data, np.ones((8, 3)), epochs=1, verbose=0)
    after = [float(keras.ops.convert_to_numpy(layer.threshold_parameter)) for layer in str_layers]
    assert all(old != new for old, new in zip(before, after))


def test_default_threshold_regularizer_is_the_papers_weight_decay():
    layer = STRDense(2, s_init=-3.0)
    layer.build((None, 2))
    # Keras L2(5e-5): 5e-5 * s**2, i.e. gradient 1e-4 * s (SGD weight decay 1e-4).
    np.testing.assert_allclose(float(sum(layer.losses)), 5e-5 * 9.0, rtol=1e-6)
    unregularized = STRDense(2, threshold_regularizer=None)
    unregularized.build((None, 2))
    assert unregularized.losses == []


@pytest.mark.parametrize("mode", ["unstructured", "channel"])
def test_keras_file_round_trip_keeps_threshold_and_outputs(mode, tmp_path):
    model = all_layer_types_model(s_init=-1.0, mode=mode, granularity="filter", threshold_fn="exp")
    rng = np.random.default_rng(6)
    for layer in model.layers:
        if hasattr(layer, "threshold_parameter"):
            layer.threshold_parameter.assign(rng.uniform(-3, -1, size=layer.threshold_parameter.shape))
    inputs = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for layer, loaded_layer in zip(model.layers, loaded.layers):
        assert type(loaded_layer) is type(layer)
        assert loaded_layer.get_config() == layer.get_config()
        if hasattr(layer, "threshold_parameter"):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(loaded_layer.threshold_parameter),
                keras.ops.convert_to_numpy(layer.threshold_parameter),
            )
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


@pytest.mark.parametrize("compensate", [True, False])
def test_compensate_shrinkage_round_trips_through_keras_file(compensate, tmp_path):
    model = all_layer_types_model(s_init=-1.5, compensate_shrinkage=compensate)
    inputs = np.random.default_rng(13).normal(size=(2, 9, 9, 4)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [getattr(layer, "compensate_shrinkage", None) for layer in loaded.layers] == [
        getattr(layer, "compensate_shrinkage", None) for layer in model.layers
    ]
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_config_saved_before_compensate_shrinkage_existed_loads_as_the_papers_layer():
    layer, inputs = built_layer("dense", s_init=-1.5, compensate_shrinkage=False)
    legacy_config = {key: value for key, value in layer.get_config().items() if key != "compensate_shrinkage"}
    legacy = STRDense.from_config(legacy_config)
    legacy.build(inputs.shape)
    legacy.set_weights(layer.get_weights())
    assert legacy.compensate_shrinkage is False
    np.testing.assert_allclose(keras.ops.convert_to_numpy(legacy(inputs)), keras.ops.convert_to_numpy(layer(inputs)))
    assert STRDense(3).compensate_shrinkage is True  # new layers compensate by default


def test_compensation_keeps_the_survivors_norm_and_the_papers_zeros():
    paper, _ = built_layer("conv2d", compensate_shrinkage=False)
    kernel = keras.ops.convert_to_numpy(paper._kernel)
    set_thresholds(paper, np.quantile(np.abs(kernel), 0.8))  # 80% zeros
    compensated, _ = built_layer("conv2d")
    compensated.set_weights(paper.get_weights())
    threshold = float(keras.ops.convert_to_numpy(paper.threshold))
    paper_kernel = keras.ops.convert_to_numpy(paper.sparse_kernel)
    compensated_kernel = keras.ops.convert_to_numpy(compensated.sparse_kernel)
    np.testing.assert_array_equal(compensated_kernel == 0, paper_kernel == 0)
    survivors = kernel[np.abs(kernel) > threshold]
    assert np.linalg.norm(paper_kernel) < 0.5 * np.linalg.norm(survivors)  # the shrinkage being undone
    np.testing.assert_allclose(np.linalg.norm(compensated_kernel), np.linalg.norm(survivors), rtol=1e-5)


def test_get_config_round_trip():
    for case in LAYER_CASES:
        layer, _ = built_layer(case, s_init=-4.0, threshold_fn="exp", granularity="filter", mode="channel")
        config = layer.get_config()
        assert {key: config[key] for key in ("s_init", "threshold_fn", "granularity", "mode")} == {
            "s_init": -4.0,
            "threshold_fn": "exp",
            "granularity": "filter",
            "mode": "channel",
        }
        assert type(layer).from_config(config).get_config() == config


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_stripped_layer_is_plain_and_computes_the_same(case):
    layer, inputs = built_layer(case, s_init=-2.0)
    plain = layer.stripped_layer()
    assert type(plain) is LAYER_CASES[case][2]
    assert plain.name == layer.name
    stripped_kernel = keras.ops.convert_to_numpy(plain.kernel)
    assert np.mean(stripped_kernel == 0) > 0.05
    np.testing.assert_array_equal(stripped_kernel, keras.ops.convert_to_numpy(layer.sparse_kernel))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(inputs)), keras.ops.convert_to_numpy(layer(inputs)), atol=1e-6
    )


def test_zero_filters_in_channel_mode():
    layer = STRConv2D(4, 2, mode="channel", granularity="filter")
    layer.build((None, 5, 5, 3))
    layer._kernel.assign(np.random.default_rng(11).uniform(-0.1, 0.1, size=(2, 2, 3, 4)))
    norms = np.sqrt(np.sum(keras.ops.convert_to_numpy(layer._kernel) ** 2, axis=(0, 1, 2)))
    factors = np.array([0.5, 1.5, 0.9, 1.1])  # threshold below/above each filter's norm
    set_thresholds(layer, norms * factors)
    np.testing.assert_array_equal(layer.zero_filters(), norms * factors >= norms)
    sparse = keras.ops.convert_to_numpy(layer.sparse_kernel)
    assert np.all(sparse[..., 1] == 0) and np.all(sparse[..., 3] == 0)
    assert np.all(sparse[..., 0] != 0)


def test_depthwise_zero_filters_follow_output_channel_order():
    layer = STRDepthwiseConv2D(3, depth_multiplier=2, mode="channel", granularity="filter")
    layer.build((None, 6, 6, 3))
    thresholds = np.full((3, 2), 1e-6)
    thresholds[1, 0] = 0.99  # input channel 1, multiplier 0 -> output channel 1 * 2 + 0
    set_thresholds(layer, thresholds)
    expected = np.zeros(6, dtype=bool)
    expected[2] = True
    np.testing.assert_array_equal(layer.zero_filters(), expected)
    outputs = keras.ops.convert_to_numpy(layer(np.random.default_rng(7).normal(size=(1, 6, 6, 3))))
    bias = keras.ops.convert_to_numpy(layer.bias)
    np.testing.assert_allclose(outputs[..., 2], bias[2])  # the zero filter outputs only its bias


def test_scale_thresholds_multiplies_g():
    layer = STRConv2D(2, 1, granularity="filter")
    layer.build((None, 3, 3, 2))
    set_thresholds(layer, [0.1, 0.3])
    layer.scale_thresholds(2.5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.threshold), [0.25, 0.75], rtol=1e-5)
    with pytest.raises(ValueError, match=r"positive factor\. Received: factor=0"):
        layer.scale_thresholds(0)


def test_mixed_precision_layers_compute_in_float16_and_train():
    keras.config.set_dtype_policy("mixed_float16")
    inputs = keras.Input((8, 8, 3))
    x = STRConv2D(4, 3, s_init=-2.0)(inputs)
    x = STRDepthwiseConv2D(3, s_init=-2.0, mode="channel")(x)
    x = keras.layers.Flatten()(x)
    x = STRDense(3, s_init=-2.0)(x)
    outputs = STRLowRankDense(2, rank=2, s_init=-2.0)(x)
    model = keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(outputs))
    assert model.layers[1].compute_dtype == "float16"
    assert model.layers[1].threshold_parameter.dtype == "float32"
    data = np.random.default_rng(8).uniform(size=(16, 8, 8, 3)).astype("float32")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    history = model.fit(data, np.zeros((16, 2)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.layers[1](data).dtype == "float16"


def test_low_rank_dense_forward_rank_and_strip():
    layer = STRLowRankDense(5, rank=4, s_init=float(np.log(0.5)))
    inputs = np.random.default_rng(9).normal(size=(3, 6)).astype("float32")
    layer.build(inputs.shape)
    layer.singular_values.assign([2.0, 1.0, 0.3, -0.7])
    left, right = (keras.ops.convert_to_numpy(w) for w in (layer.left_factor, layer.right_factor))
    effective = np.array([1.5, 0.5, 0.0, -0.2])  # sign(σ) relu(|σ| - 0.5)
    expected = inputs @ (left * effective) @ right + keras.ops.convert_to_numpy(layer.bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(inputs)), expected, rtol=1e-5, atol=1e-5)
    assert layer.effective_rank() == 3
    scores, threshold, weights_per_score = layer.pruning_scores()
    np.testing.assert_allclose(scores, [2.0, 1.0, 0.3, 0.7], rtol=1e-6)
    np.testing.assert_allclose(threshold, 0.5, rtol=1e-6)
    assert weights_per_score == 6 + 5
    plain = layer.stripped_layer()
    assert type(plain) is keras.layers.Dense
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(inputs)), expected, rtol=1e-5, atol=1e-5)


def test_low_rank_dense_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, STRLowRankDense(4, rank=3, s_init=-1.0, activation="tanh")(inputs))
    model.layers[1].singular_values.assign([1.0, 0.2, 0.5])
    data = np.random.default_rng(10).normal(size=(2, 6)).astype("float32")
    path = tmp_path / "low_rank.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert loaded.layers[1].effective_rank() == 2
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)


def test_invalid_arguments_are_named():
    cases = [
        ({"s_init": float("nan")}, r"finite float `s_init`.*Received: s_init=nan"),
        ({"s_init": "low"}, r"Received: s_init='low'"),
        ({"threshold_fn": "relu"}, r"threshold_fn in \['exp', 'sigmoid'\]\. Received: threshold_fn='relu'"),
        ({"granularity": "weight"}, r"granularity in \('layer', 'filter'\)\. Received: granularity='weight'"),
        ({"mode": "block"}, r"mode in \('unstructured', 'channel'\)\. Received: mode='block'"),
        ({"lora_rank": 2}, r"STRDense cannot be combined with LoRA.*Received: lora_rank=2"),
        ({"compensate_shrinkage": "yes"}, r"`compensate_shrinkage` to be True or False\. Received: compensate_shrinkage='yes'"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            STRDense(3, **arguments)


def test_low_rank_dense_rejects_bad_rank():
    with pytest.raises(ValueError, match=r"positive int `rank`\. Received: rank=0"):
        STRLowRankDense(3, rank=0)
