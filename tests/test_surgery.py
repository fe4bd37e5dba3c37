"""Tests for tfprune.surgery: removing provably dead channels keeps outputs."""

import doctest

import keras
import numpy as np
import pytest
from surgery_helpers import (
    assert_same_weights,
    kill_channels,
    outputs,
    random_weights,
    weights_snapshot,
)

import tfprune

layers = keras.layers
TOLERANCE = 1e-5


def inputs_for(model, seed=1):
    return np.random.default_rng(seed).normal(size=(2, *model.input_shape[1:])).astype("float32")


def assert_equivalent(model, removals, **kwargs):
    """Kills `removals` in `model`, removes them, compares the outputs."""
    graph = tfprune.graph.build(model)
    for name, channels in removals.items():
        kill_channels(model, graph[name], channels)
    snapshot = weights_snapshot(model)
    small = tfprune.surgery.remove_channels(model, removals, **kwargs)
    x = inputs_for(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=TOLERANCE, rtol=0)
    assert small.count_params() < model.count_params()
    assert_same_weights(model, snapshot)
    return small


def conv_bn_model():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(4, 1, name="conv2")(x)
    return random_weights(keras.Model(inputs, x))


def test_conv_bn_chain_with_hand_killed_channels_matches():
    # Dead channels made by hand (not through the graph): zero filters, BN beta, mean.
    model = conv_bn_model()
    dead = [1, 4, 6]
    kernel, bias = model.get_layer("conv1").get_weights()
    kernel[..., dead], bias[dead] = 0.0, 0.0
    model.get_layer("conv1").set_weights([kernel, bias])
    gamma, beta, mean, variance = model.get_layer("bn1").get_weights()
    beta[dead], mean[dead] = 0.0, 0.0
    model.get_layer("bn1").set_weights([gamma, beta, mean, variance])
    small = tfprune.surgery.remove_channels(model, {"conv1": dead})
    x = inputs_for(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=TOLERANCE, rtol=0)
    assert small.get_layer("conv1").filters == 5
    keep = [0, 2, 3, 5, 7]
    np.testing.assert_array_equal(small.get_layer("conv1").get_weights()[0], kernel[..., keep])
    np.testing.assert_array_equal(small.get_layer("bn1").get_weights()[1], beta[keep])
    np.testing.assert_array_equal(
        small.get_layer("conv2").get_weights()[0], model.get_layer("conv2").get_weights()[0][:, :, keep]
    )
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]


def test_removing_live_channels_changes_outputs():
    # The converse check: the equivalence tests would catch a no-op surgery.
    model = conv_bn_model()
    small = tfprune.surgery.remove_channels(model, {"conv1": [1, 4]})
    x = inputs_for(model)
    assert np.abs(outputs(small, x) - outputs(model, x)).max() > 1e-3


def test_residual_add_equivalence():
    inputs = keras.Input((5, 5, 3))
    stem = layers.Conv2D(6, 1, name="stem")(inputs)
    x = layers.BatchNormalization()(stem)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(4, 3, padding="same", name="inner")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(6, 1, name="outer")(x)
    x = layers.Add()([stem, x])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(3, name="head")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"stem": [0, 5], "inner": [2]})
    assert small.get_layer("outer").filters == 4 and small.get_layer("inner").filters == 3


def test_concatenate_equivalence_and_offsets():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(5, 3, padding="same", name="b")(inputs)
    x = layers.Concatenate()([a, layers.ReLU()(b)])
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(2, 1, name="head")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"a": [1], "b": [0, 4]})
    head = model.get_layer("head").get_weights()[0]
    np.testing.assert_array_equal(small.get_layer("head").get_weights()[0], head[:, :, [0, 2, 4, 5, 6]])


def test_flatten_into_dense_equivalence():
    inputs = keras.Input((3, 3, 2))
    x = layers.Conv2D(4, 2, name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(5, name="hidden")(x)
    x = layers.Dense(2, name="head")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"conv": [2], "hidden": [0, 3]})
    kernel = model.get_layer("hidden").get_weights()[0]
    rows = [row for row in range(16) if row % 4 != 2]
    np.testing.assert_array_equal(small.get_layer("hidden").get_weights()[0], kernel[rows][:, [1, 2, 4]])


def test_reshape_into_dense_updates_target_shape():
    inputs = keras.Input((2, 2, 1))
    x = layers.Conv2D(3, 1, name="conv")(inputs)
    x = layers.Reshape((12,), name="flat")(x)
    x = layers.Dense(2, name="head")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"conv": [1]})
    assert small.get_layer("flat").target_shape == (8,)


def test_depthwise_with_multiplier_equivalence():
    inputs = keras.Input((5, 5, 2))
    x = layers.Conv2D(4, 1, name="expand")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.ZeroPadding2D()(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Conv2D(3, 1, name="project")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"expand": [0, 3]})
    assert small.get_layer("dw").get_weights()[0].shape == (3, 3, 2, 2)
    assert small.get_layer("dw_bn").get_weights()[0].shape == (4,)


def test_separable_conv_equivalence():
    inputs = keras.Input((5, 5, 2))
    x = layers.Conv2D(4, 1, name="conv")(inputs)
    x = layers.SeparableConv2D(6, 3, depth_multiplier=2, padding="same", name="sep")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(2, 1, name="head")(x)
    model = random_weights(keras.Model(inputs, x))
    small = assert_equivalent(model, {"conv": [1], "sep": [0, 2, 5]})
    assert small.get_layer("sep").filters == 3


def squeeze_excite_model(expansion=16, bottleneck=8):
    # MobileNetV3's block: hard sigmoid from non-layer ops, hard swish activation.
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(expansion, 1, name="expand")(inputs)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = layers.Activation("hard_swish")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.ops.relu6(x)
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(bottleneck, 1, name="se_reduce")(gate)
    gate = layers.ReLU()(gate)
    gate = layers.Conv2D(expansion, 1, name="se_expand")(gate)
    gate = layers.ReLU(6.0)(gate + 3.0) * (1.0 / 6.0)
    x = layers.Multiply()([x, gate])
    x = layers.Conv2D(4, 1, name="project")(x)
    return random_weights(keras.Model(inputs, x))


def test_squeeze_excite_block_equivalence():
    model = squeeze_excite_model()
    small = assert_equivalent(model, {"expand": [0, 7, 9], "se_reduce": [1, 2]})
    assert small.get_layer("se_expand").filters == 13
    assert small.get_layer("se_reduce").filters == 6
    assert small.get_layer("dw").get_weights()[0].shape == (3, 3, 13, 1)


def test_transpose_conv_prelu_upsampling_cropping_and_ops_concatenate_equivalence():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="up_conv")(inputs)
    a = layers.PReLU(name="prelu")(a)
    b = layers.UpSampling2D(name="upsample")(layers.Conv2D(3, 1, name="b")(inputs))
    x = keras.ops.concatenate([a, b], axis=-1)
    x = layers.Cropping2D(1)(layers.ZeroPadding2D(1)(x))
    x = layers.Conv2DTranspose(4, 1, name="mix")(x)
    x = layers.GlobalMaxPooling2D()(layers.ReLU()(x))
    model = random_weights(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    small = assert_equivalent(model, {"up_conv": [0, 3], "b": [1], "mix": [2]})
    assert small.get_layer("up_conv").filters == 3
    assert small.get_layer("prelu").get_weights()[0].shape == (8, 8, 3)
    assert small.get_layer("mix").get_weights()[0].shape == (1, 1, 3, 5)


def test_sequence_model_with_conv1d_and_dense_on_timesteps_equivalence():
    inputs = keras.Input((6, 3))
    x = layers.Conv1D(5, 3, padding="same", name="conv")(inputs)
    x = layers.ReLU()(x)
    x = layers.Dense(4, name="per_step")(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling1D()(x)
    model = random_weights(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    small = assert_equivalent(model, {"conv": [4], "per_step": [0, 1]})
    assert small.get_layer("per_step").units == 2


def test_layer_normalization_over_channels_is_refused_by_default_and_sliced_when_named():
    # Its mean and variance run over the channels: removing one, even a dead
    # one, changes every other output (see tests/test_channel_coupling.py). The
    # graph refuses the group unless built with hidden=True; the surgery, told
    # which channels to remove, slices gamma and beta and normalises what is left.
    inputs = keras.Input((5,))
    x = layers.Dense(6, name="dense")(inputs)
    x = layers.LayerNormalization(name="norm")(x)
    model = random_weights(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    group = tfprune.graph.build(model)["dense"]
    assert not group.prunable and group.normalized_by == ("norm",)
    assert "prune it with targets='hidden'" in group.reason
    assert tfprune.graph.build(model, hidden=True)["dense"].prunable

    small = tfprune.surgery.remove_channels(model, {"dense": [1, 4]})
    keep = [0, 2, 3, 5]
    x = inputs_for(model)
    kernel, bias = model.get_layer("dense").get_weights()
    hidden = x @ kernel[:, keep] + bias[keep]
    norm = model.get_layer("norm")
    mean, variance = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    normalised = (hidden - mean) / np.sqrt(variance + norm.epsilon)
    normalised = normalised * norm.gamma.numpy()[keep] + norm.beta.numpy()[keep]
    head_kernel, head_bias = model.get_layer("head").get_weights()
    np.testing.assert_allclose(outputs(small, x), normalised @ head_kernel[keep] + head_bias, atol=1e-5)


def test_layer_normalization_over_time_steps_passes_channels_equivalence():
    inputs = keras.Input((4, 3))
    x = layers.Dense(6, name="dense")(inputs)
    x = layers.LayerNormalization(axis=1, name="norm")(x)
    model = random_weights(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    # beta is per time step, shared by the channels: zero it so that dead channels stay 0.
    model.get_layer("norm").beta.assign(np.zeros(4, "float32"))
    small = assert_equivalent(model, {"dense": [1, 4]})
    np.testing.assert_array_equal(small.get_layer("norm").gamma.numpy(), model.get_layer("norm").gamma.numpy())


def test_sequential_model_equivalence():
    model = keras.Sequential(
        [keras.Input((6,)), layers.Dense(5, name="hidden"), layers.ReLU(), layers.Dense(2, name="out")]
    )
    random_weights(model)
    small = assert_equivalent(model, {"hidden": [1, 2]})
    assert isinstance(small, keras.Sequential)
    assert small.get_layer("hidden").units == 3


def test_pruned_model_round_trips_through_keras_file(tmp_path):
    model = squeeze_excite_model()
    small = tfprune.surgery.remove_channels(model, {"expand": [1, 2], "se_reduce": [0]})
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    x = inputs_for(model)
    np.testing.assert_allclose(outputs(reloaded, x), outputs(small, x), atol=1e-6)


def test_set_widths_keeps_the_highest_scored_channels():
    model = conv_bn_model()
    scores = {"conv1": np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.0, 0.2, 0.7])}
    small = tfprune.surgery.set_widths(model, {"conv1": 3}, scores=scores)
    kernel = model.get_layer("conv1").get_weights()[0]
    np.testing.assert_array_equal(small.get_layer("conv1").get_weights()[0], kernel[..., [1, 4, 7]])


def test_set_widths_defaults_to_producer_l1_norm():
    model = conv_bn_model()
    kernel, bias = model.get_layer("conv1").get_weights()
    l1 = np.abs(kernel).reshape(-1, 8).sum(axis=0) + np.abs(bias)
    keep = np.sort(np.argsort(-l1)[:5])
    small = tfprune.surgery.set_widths(model, {"conv1": 5})
    np.testing.assert_array_equal(small.get_layer("conv1").get_weights()[0], kernel[..., keep])


def test_set_widths_full_width_is_a_copy():
    model = conv_bn_model()
    small = tfprune.surgery.set_widths(model, {"conv1": 8})
    x = inputs_for(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-6)
    assert small is not model


# SE bottleneck widths of MobileNetV3-Large and -Small (Howard et al. 2019).
PUBLISHED_SE_WIDTHS = {16: 8, 72: 24, 96: 24, 120: 32, 144: 40, 240: 64, 288: 72, 480: 120, 576: 144, 672: 168, 960: 240}


@pytest.mark.parametrize("expansion, bottleneck", sorted(PUBLISHED_SE_WIDTHS.items()))
def test_se_bottleneck_width_matches_published_mobilenet_v3(expansion, bottleneck):
    assert tfprune.surgery.se_bottleneck_width(expansion) == bottleneck


def test_se_bottleneck_width_rounds_to_multiples_of_eight_with_ten_percent_guard():
    assert tfprune.surgery.se_bottleneck_width(4) == 8  # never below the divisor
    assert tfprune.surgery.se_bottleneck_width(48) == 16  # 12 rounds half up to 16
    assert tfprune.surgery.se_bottleneck_width(100) == 24  # 25 rounds down to 24
    assert tfprune.surgery.se_bottleneck_width(76) == 24  # 19 -> 16 < 0.9 * 19: add 8


def test_se_bottleneck_width_agrees_with_mobilenet_v3_large_layers():
    model = keras.applications.MobileNetV3Large(input_shape=(32, 32, 3), weights=None, classes=10)
    graph = tfprune.graph.build(model)
    pairs = [(g.size, graph[g.squeeze_excite_of].size) for g in graph.groups if g.squeeze_excite_of]
    assert len(pairs) == 8
    for bottleneck, expansion in pairs:
        assert tfprune.surgery.se_bottleneck_width(expansion) == bottleneck


def test_keep_ratio_policy_shrinks_the_squeeze_excite_bottleneck():
    model = squeeze_excite_model(expansion=96, bottleneck=24)
    scores = {"expand": np.arange(96.0)[::-1], "se_reduce": np.arange(24.0)[::-1]}
    small = tfprune.surgery.set_widths(model, {"expand": 48}, scores=scores, se_policy="keep_ratio")
    assert small.get_layer("expand").filters == 48
    # _depth(48 * 0.25) = 16: the 8 lowest-scored bottleneck channels (16..23) go.
    assert small.get_layer("se_reduce").filters == 16
    kernel = model.get_layer("se_reduce").get_weights()[0]
    np.testing.assert_array_equal(small.get_layer("se_reduce").get_weights()[0], kernel[:, :, :48, :16])
    expand_back = model.get_layer("se_expand").get_weights()[0]
    np.testing.assert_array_equal(small.get_layer("se_expand").get_weights()[0], expand_back[:, :, :16, :48])
    without_policy = tfprune.surgery.set_widths(model, {"expand": 48})
    assert without_policy.get_layer("se_reduce").filters == 24


def test_squeeze_excite_widths_only_fills_shrinking_gated_groups():
    graph = tfprune.graph.build(squeeze_excite_model(expansion=96, bottleneck=24))
    assert tfprune.surgery.squeeze_excite_widths(graph, {"expand": 48}) == {"expand": 48, "se_reduce": 16}
    assert tfprune.surgery.squeeze_excite_widths(graph, {"expand": 96}) == {"expand": 96}
    assert tfprune.surgery.squeeze_excite_widths(graph, {"expand": 48, "se_reduce": 20}) == {
        "expand": 48, "se_reduce": 20
    }
    # The rule never widens a bottleneck: _depth(92 * 0.25) = 24 is capped at 24 anyway.
    graph = tfprune.graph.build(squeeze_excite_model(expansion=96, bottleneck=16))
    assert tfprune.surgery.squeeze_excite_widths(graph, {"expand": 92}) == {"expand": 92, "se_reduce": 16}


@pytest.mark.parametrize("module", [tfprune.graph, tfprune.surgery])
def test_docstring_examples_run(module):
    globs = {"tfprune": tfprune, "keras": keras}
    results = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 8 and results.failed == 0


def test_input_model_is_untouched():
    model = squeeze_excite_model()
    snapshot = weights_snapshot(model)
    tfprune.surgery.remove_channels(model, {"expand": [0, 1]})
    tfprune.surgery.set_widths(model, {"expand": 8}, se_policy="keep_ratio")
    assert_same_weights(model, snapshot)
    assert model.get_layer("expand").filters == 16


@pytest.mark.parametrize(
    "removals, error, message",
    [
        ({"nope": [0]}, ValueError, r"Unknown channel group 'nope'; use a name from tfprune.graph.build"),
        ({"conv2": [0]}, ValueError, r"Group 'conv2' is not prunable: its channels are model output"),
        ({"conv1": [8]}, ValueError, r"Channel index 8 is out of range for group 'conv1' of size 8"),
        ({"conv1": [-1]}, ValueError, r"Channel index -1 is out of range"),
        ({"conv1": [1, 1]}, ValueError, r"Channels of group 'conv1' are repeated. Received: \[1, 1\]"),
        ({"conv1": list(range(8))}, ValueError, r"Cannot remove all 8 channels of group 'conv1'"),
        ({"conv1": [0.5]}, ValueError, r"must be a 1-D list of ints. Received: \[0.5\]"),
        ([("conv1", [0])], TypeError, r"`removals` must be a dict .* received an object of type list"),
    ],
)
def test_remove_channels_errors(removals, error, message):
    with pytest.raises(error, match=message):
        tfprune.surgery.remove_channels(conv_bn_model(), removals)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"widths": {"conv1": 0}}, ValueError, r"Width of group 'conv1' must be an int in \[1, 8\]. Received: 0"),
        ({"widths": {"conv1": 9}}, ValueError, r"Received: 9"),
        ({"widths": {"conv1": 2.0}}, ValueError, r"Received: 2.0"),
        ({"widths": {"conv1": 2}, "scores": {"conv1": [1.0, 2.0]}}, ValueError,
         r"Scores of group 'conv1' must have shape \(8,\). Received: shape \(2,\)"),
        ({"widths": {"conv1": 2}, "se_policy": "ratio"}, ValueError,
         r"`se_policy` must be None or 'keep_ratio'. Received: se_policy='ratio'"),
        ({"widths": [4]}, TypeError, r"`widths` must be a dict keyed by group name"),
        ({"widths": {"conv1": 2}, "scores": {"conv_1": np.ones(8)}}, ValueError, r"Unknown channel group 'conv_1'"),
        ({"widths": {"conv1": 2}, "scores": {"conv1": [1.0, np.nan, 2.0, 3.0, 4.0, 5.0, np.nan, 6.0]}}, ValueError,
         r"Scores of group 'conv1' must be numbers, but channels \[1, 6\] are NaN"),
        ({"widths": {}, "scores": {"conv1": np.full(8, np.nan)}}, ValueError, r"channels \[0, 1, 2, 3, 4\] are NaN"),
        ({"widths": {"conv1": np.int64(2)}, "scores": {"conv1": np.arange(8)}, "unknown": "skip"}, ValueError,
         r"`unknown` must be 'raise' or 'freeze'"),
    ],
)
def test_set_widths_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        tfprune.surgery.set_widths(conv_bn_model(), **kwargs)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(TypeError, match="`tfprune.surgery.remove_channels` cannot transform subclassed model"):
        tfprune.surgery.remove_channels(Net(), {})


def _concatenated_producers_model():
    # a (2 channels) and b (4) are concatenated and added to c (6): one group of 6 channels,
    # whose first two belong to `a` alone.
    inputs = keras.Input((4, 4, 3))
    a = keras.layers.Conv2D(2, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    c = keras.layers.Conv2D(6, 1, name="c")(inputs)
    x = keras.layers.Add(name="add")([keras.layers.Concatenate(name="join")([a, b]), c])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    (group,) = [group for group in tfprune.graph.build(model).groups if group.prunable]
    return model, group


def test_set_widths_keeps_one_channel_of_every_concatenated_producer():
    model, group = _concatenated_producers_model()
    scores = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])  # a's channels score lowest
    # Top-4 by score alone would be channels 2-5, all of b: `a` keeps its best (1) instead
    # of b's worst (2).
    small = tfprune.surgery.set_widths(model, {group.name: 4}, scores={group.name: scores})
    assert small.get_layer("a").filters == 1 and small.get_layer("b").filters == 3
    np.testing.assert_array_equal(small.get_layer("a").get_weights()[0], model.get_layer("a").get_weights()[0][..., 1:])
    np.testing.assert_array_equal(small.get_layer("b").get_weights()[0], model.get_layer("b").get_weights()[0][..., 1:])
    np.testing.assert_array_equal(small.get_layer("c").get_weights()[0], model.get_layer("c").get_weights()[0][..., [1, 3, 4, 5]])
    # A width the ranking already satisfies is unchanged by the rule.
    small = tfprune.surgery.set_widths(model, {group.name: 5}, scores={group.name: scores})
    assert small.get_layer("a").filters == 1 and small.get_layer("b").filters == 4
    np.testing.assert_array_equal(small.get_layer("c").get_weights()[0], model.get_layer("c").get_weights()[0][..., 1:])
    with pytest.raises(ValueError, match=r"Width 1 of group '\w+' is too small: the group joins the outputs of 2 layers"):
        tfprune.surgery.set_widths(model, {group.name: 1}, scores={group.name: scores})


def test_removing_every_channel_of_a_concatenated_producer_is_refused_by_name():
    model, group = _concatenated_producers_model()
    with pytest.raises(ValueError, match=r"would leave layer 'a' \(group '\w+'\) with no output channel"):
        tfprune.surgery.remove_channels(model, {group.name: [0, 1]})
