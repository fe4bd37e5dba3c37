import doctest
import functools
import warnings

import keras
import numpy as np
import pytest

import tfprune
from tfprune.pruning import expansion_layers

# These tests count channels on models of 4 to 16 channels per group: exact rates
# (round_to=1). The default round_to=8 has its own tests below.
prune = functools.partial(tfprune.pruning.prune, round_to=1)


def _small_model(seed=0):
    """conv1 (8) -> expansion conv2 (6) -> depthwise -> projection conv3 (4) -> logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("hard_swish", name="act2")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="conv3")(x)
    x = keras.layers.BatchNormalization(name="bn4")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            # From NumPy, not the Keras initializers: the same weights on every backend.
            layer.set_weights([rng.normal(0.0, 0.5, weight.shape).astype("float32") for weight in layer.get_weights()])
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, size), rng.normal(size=size), rng.normal(size=size) * 0.1,
                 rng.uniform(0.5, 1.5, size)]
            )
    return model


def _inputs(count=4):
    return np.random.default_rng(5).uniform(size=(count, 8, 8, 3)).astype("float32")


def _l1_of_filters(model, name):
    kernel = model.get_layer(name).get_weights()[0]
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


HAND_SCORES = {
    "conv1": np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4]),
    "conv2": np.array([0.15, 0.95, 0.25, 0.85, 0.35, 0.05]),
    "conv3": np.array([0.5, 0.45, 0.55, 0.65]),
}


def _hand_criterion(model, graph, data=None, seed=None):
    return {name: values.copy() for name, values in HAND_SCORES.items()}


def test_global_rate_removes_the_lowest_scored_channels_across_groups():
    model = _small_model()
    # 18 channels, rate 0.5 -> the 9 lowest scores 0.05 .. 0.45:
    # conv1 loses 0.1-0.4 (4), conv2 loses 0.05-0.35 (4), conv3 loses 0.45 (1)
    cut = 0.45
    small, result = prune(model, _hand_criterion, rate=0.5, scope="global")
    assert result.threshold == pytest.approx(cut)
    assert result.widths_after == {"conv1": 4, "conv2": 2, "conv3": 3}
    kept = {name: np.flatnonzero(values > cut) for name, values in HAND_SCORES.items()}
    # the kept filters are exactly the highest-scored ones, in their original order,
    # and the next conv keeps the matching input channels (conv2 follows conv1, conv3
    # follows conv2 through the depthwise conv)
    inputs_kept = {"conv1": np.arange(3), "conv2": kept["conv1"], "conv3": kept["conv2"]}
    for name in HAND_SCORES:
        expected_kernel = model.get_layer(name).get_weights()[0][:, :, inputs_kept[name]][..., kept[name]]
        np.testing.assert_array_equal(small.get_layer(name).get_weights()[0], expected_kernel)


def test_global_l1_that_would_empty_a_group_is_refused():
    # conv3 (1x1 over 6 inputs) has far smaller filter L1 norms than conv1 (3x3x3):
    # a global l1 cut at 0.5 would take every conv3 channel.
    l1 = {name: _l1_of_filters(_small_model(), name) for name in HAND_SCORES}
    assert l1["conv3"].max() < np.sort(np.concatenate(list(l1.values())))[9]
    with pytest.raises(ValueError, match=r"Ranking criterion 'l1' globally at rate=0.5 would remove every channel "
                                         r"of 1 group\(s\) \('conv3'\).*scope='group'"):  # fmt: skip
        prune(_small_model(), "l1", rate=0.5, scope="global")


def test_default_scope_is_per_group_for_filter_norms_and_global_for_bn_scales():
    small, result = prune(_small_model(), "l1", rate=0.5)
    assert result.scope == "group"
    assert result.widths_after == {"conv1": 4, "conv2": 3, "conv3": 2}
    _, by_gamma = prune(_small_model(), "bn_gamma", rate=0.5)
    _, explicit = prune(_small_model(), "bn_gamma", rate=0.5, scope="global")
    assert by_gamma.scope == "global"
    assert by_gamma.widths_after == explicit.widths_after


def test_a_comparable_criterion_ranked_globally_keeps_the_guard_and_warns():
    def lowest_in_conv3(model, graph, data=None, seed=None):
        return {"conv1": np.full(8, 2.0), "conv2": np.full(6, 3.0), "conv3": np.full(4, 1.0)}

    with pytest.raises(ValueError, match=r"would remove every channel of 1 group\(s\) \('conv3'\)"):
        prune(_small_model(), lowest_in_conv3, rate=0.25, scope="global")
    assert prune(_small_model(), lowest_in_conv3, rate=0.25)[1].scope == "group"
    lowest_in_conv3.comparable_across_groups = True
    with pytest.warns(UserWarning, match=r"remove all 4 channels of group 'conv3'"):
        small, result = prune(_small_model(), lowest_in_conv3, rate=0.25)
    assert result.scope == "global"
    assert small.get_layer("conv3").filters == 1
    assert {g.name: g.guarded for g in result.groups}["conv3"] is True


def test_comparable_across_groups_of_the_built_in_criteria_and_registration():
    comparable = {name for name in tfprune.criteria.available() if tfprune.criteria.comparable_across_groups(name)}
    assert {"bn_gamma", "sparsity_gamma", "str_zero_filters"} <= comparable
    assert not comparable & {"l1", "l2", "random", "sparsity", "hrank", "activation", "reconstruction"}
    assert tfprune.criteria.comparable_across_groups(tfprune.criteria.bn_gamma)
    assert not tfprune.criteria.comparable_across_groups(_hand_criterion)
    try:
        tfprune.criteria.register("hand_scores", _hand_criterion, comparable_across_groups=True)
        assert tfprune.criteria.comparable_across_groups("hand_scores")
        _, result = prune(_small_model(), "hand_scores", rate=0.5)
        assert result.scope == "global" and result.threshold == pytest.approx(0.45)
        tfprune.criteria.register("hand_scores", _hand_criterion)
        assert not tfprune.criteria.comparable_across_groups("hand_scores")
    finally:
        tfprune.criteria.base._CRITERIA.pop("hand_scores", None)
    with pytest.raises(TypeError, match=r"`comparable_across_groups` must be True or False. Received: "
                                        r"comparable_across_groups='yes'"):  # fmt: skip
        tfprune.criteria.register("hand_scores", _hand_criterion, comparable_across_groups="yes")


def test_group_scope_removes_rate_of_every_group():
    small, result = prune(_small_model(), "l1", rate=0.5, scope="group")
    assert result.widths_after == {"conv1": 4, "conv2": 3, "conv3": 2}
    assert result.threshold is None
    assert small.get_layer("depthwise").get_weights()[0].shape[-2] == 3
    assert small.get_layer("bn3").gamma.shape == (3,)


def test_expansion_targets_are_recognised_structurally():
    assert expansion_layers(_small_model()) == ["conv2"]
    model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), seed=0)
    names = expansion_layers(model)
    assert len(names) == 10 and all(name.endswith("_expand") for name in names)
    # the projection of block 0 and the stem feed no depthwise through BN/activation only
    assert "conv" not in names and "expanded_conv_project" not in names


def test_targets_expansion_and_callable_only_touch_their_groups():
    model = _small_model()
    small, result = prune(model, "l1", rate=0.5, targets="expansion")
    assert [g.name for g in result.groups] == ["conv2"]
    assert (small.get_layer("conv1").filters, small.get_layer("conv2").filters) == (8, 3)
    small, result = prune(model, "l1", rate=0.5, targets=lambda group: group.name == "conv3")
    assert result.widths_after == {"conv3": 2}
    assert small.get_layer("conv2").filters == 6


def test_guard_keeps_min_channels_and_warns_with_the_group_name():
    model = _small_model()
    # conv3's BN scales are tiny: a global bn_gamma cut takes all of them first
    bn4 = model.get_layer("bn4")
    bn4.gamma.assign(np.full(4, 1e-4, "float32"))
    with pytest.warns(UserWarning, match=r"remove all 4 channels of group 'conv3'"):
        small, result = prune(model, "bn_gamma", rate=0.3, min_channels=2)
    assert small.get_layer("conv3").filters == 2
    assert {g.name: g.guarded for g in result.groups}["conv3"] is True


def test_guard_warning_reports_the_width_kept_after_rounding():
    def lowest_in_dense1(model, graph, data=None, seed=None):
        return {"dense0": np.full(16, 2.0), "dense1": np.full(16, 1.0)}

    lowest_in_dense1.comparable_across_groups = True
    # Half of 32 channels, all in dense1: min_channels keeps 1, round_to=8 makes it 8.
    with pytest.warns(UserWarning, match=r"remove all 16 channels of group 'dense1'; keeping 8 "
                                         r"\(min_channels=1, round_to=8\)") as caught:  # fmt: skip
        small, _ = tfprune.prune(_dense_chain(16, 16), lowest_in_dense1, rate=0.5)
    assert small.get_layer("dense1").units == 8
    assert not any("keeping 1 " in str(warning.message) for warning in caught)


def test_max_group_rate_caps_every_group():
    # 0.9 of 8, 6, 4 channels asks 7.2, 5.4, 3.6: floor 7, 5, 3; max_group_rate=0.5 keeps half of each
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # more than half of what was asked goes: no warning
        _, result = prune(_small_model(), "l1", rate=0.9, scope="group", max_group_rate=0.5)
    assert result.widths_after == {"conv1": 4, "conv2": 3, "conv3": 2}
    assert all(group.guarded for group in result.groups)
    # 10 * (1 - 0.7) is 3.0000000000000004 in floats: the group still keeps 3, not 4
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Dense(10, name="wide")(inputs)))
    _, result = prune(model, "l1", rate=0.9, max_group_rate=0.7)
    assert result.widths_after == {"wide": 3}


def test_round_to_gives_multiples():
    # 0.5 of 8, 6, 4 removes 4, 3, 2 -> widths 4, 3, 2 -> multiples of 4: 4, 4, 4 (conv3 stays whole)
    with pytest.warns(UserWarning, match=r"less than half of what rate=0.5 asks from 1 of the 3 targeted groups "
                                         r"of model '\w+': 'conv3' \(0 of 2 channels removed: round_to=4\)"):  # fmt: skip
        _, result = prune(_small_model(), "l1", rate=0.5, scope="group", round_to=4)
    assert result.widths_after == {"conv1": 4, "conv2": 4, "conv3": 4} and not result.unchanged
    # 0.3 asks 2.4, 1.8, 1.2: removes floor = 2, 1, 1 -> widths 6, 5, 3 -> 8, 8, 4: nothing is removed
    with pytest.warns(UserWarning, match=r"removed no channel.*'conv1' \(0 of 2.4 channels removed: round_to=4\)"):
        _, result = prune(_small_model(), "l1", rate=0.3, scope="group", round_to=4)
    assert result.widths_after == {"conv1": 8, "conv2": 6, "conv3": 4} and result.unchanged
    # 0.6 asks 4.8, 3.6, 2.4: removes 4, 3, 2 -> widths 4, 3, 2 -> 4, 4, 2
    _, result = prune(_small_model(), "l1", rate=0.6, scope="group", round_to=2)
    assert result.widths_after == {"conv1": 4, "conv2": 4, "conv3": 2}
    assert all(group.before - group.after <= 0.6 * group.before for group in result.groups)


def test_default_round_to_rounds_widths_up_to_multiples_of_8():
    inputs = keras.Input((6, 6, 3))
    x = inputs
    for name, filters in (("wide", 64), ("mid", 20), ("narrow", 8)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match=r"from 1 of the 3 targeted groups.*'narrow' \(0 of 2.4 channels "
                                         r"removed: round_to=8\); pass a smaller round_to"):  # fmt: skip
        _, result = tfprune.prune(model, "l1", rate=0.3)
    # 64 - 19 = 45 -> 48; 20 - 6 = 14 -> 16; 8 - 2 = 6 -> 8 (a group of 8 stays whole)
    assert result.widths_after == {"wide": 48, "mid": 16, "narrow": 8}
    assert all(group.after >= group.before - 0.3 * group.before for group in result.groups)
    _, exact = tfprune.prune(model, "l1", rate=0.3, round_to=1)
    assert exact.widths_after == {"wide": 45, "mid": 14, "narrow": 6}


def test_skip_by_group_or_layer_name():
    _, result = prune(_small_model(), "l1", rate=0.5, scope="group", skip=("conv1", "bn4"))
    assert [g.name for g in result.groups] == ["conv2"]


def test_ignore_is_a_deprecated_alias_of_skip():
    model = _small_model()
    small, result = prune(model, "l1", rate=0.5, scope="group", skip=("conv1", "bn4"))
    with pytest.warns(DeprecationWarning) as caught:
        old_small, old_result = prune(model, "l1", rate=0.5, scope="group", ignore=("conv1", "bn4"))
    deprecations = [warning for warning in caught if issubclass(warning.category, DeprecationWarning)]
    assert len(deprecations) == 1
    assert str(deprecations[0].message).startswith(
        "`tfprune.prune(ignore=...)` is deprecated; use `skip=...` instead"
    )
    assert deprecations[0].filename == __file__  # points at the caller's line
    assert old_result.groups == result.groups and [g.name for g in result.groups] == ["conv2"]
    for layer, old_layer in zip(small.layers, old_small.layers):
        for weight, old_weight in zip(layer.get_weights(), old_layer.get_weights()):
            np.testing.assert_array_equal(old_weight, weight)
    with pytest.raises(TypeError, match=r"got both `skip` and its old name `ignore`; pass only `skip`"):
        prune(model, "l1", rate=0.5, skip=("conv1",), ignore=("bn4",))


def test_threshold_removes_every_channel_scoring_at_or_below_it():
    model = _small_model()
    gamma = np.array([0.0, 1.0, 0.0, 2.0, 0.01, 1.0], "float32")
    model.get_layer("bn2").gamma.assign(gamma)
    small, result = prune(model, "bn_gamma", threshold=0.01, targets="expansion")
    assert small.get_layer("conv2").filters == 3
    np.testing.assert_array_equal(small.get_layer("bn2").gamma.numpy(), [1.0, 2.0, 1.0])
    assert result.threshold == 0.01


def test_removing_dead_channels_keeps_outputs_and_input_is_untouched():
    model = _small_model()
    # channels 1 and 4 of conv2's group are dead: both BNs of the group output exactly
    # 0 there (γ = β = 0), so hard-swish and ReLU pass 0 to conv3
    for name in ("bn2", "bn3"):
        bn = model.get_layer(name)
        gamma, beta, mean, variance = bn.get_weights()
        gamma[[1, 4]] = 0.0
        beta[[1, 4]] = 0.0
        bn.set_weights([gamma, beta, mean, variance])
    before = [w.copy() for w in model.get_weights()]
    x = _inputs()
    expected = model.predict(x, verbose=0)
    small, result = prune(model, "bn_gamma", threshold=0.0, targets="expansion")
    assert result.widths_after == {"conv2": 4}
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert model.get_layer("conv2").filters == 6


def test_result_counts_match_the_models():
    model = _small_model()
    small, result = prune(model, "sparsity_gamma", rate=0.4)
    assert result.params_before == model.count_params()
    assert result.params_after == small.count_params()
    assert 0 < result.params_reduction < 1 and 0 < result.macs_reduction < 1
    data = result.to_dict()
    assert data["groups"][0]["name"] == "conv1" and data["criterion"] == "sparsity_gamma"
    assert "params" in str(result) and "conv2" in str(result)


def test_reinitialize_gives_same_widths_and_fresh_weights():
    model = _small_model()
    inherited, _ = prune(model, "l1", rate=0.5, scope="group")
    fresh, result = prune(model, "l1", rate=0.5, scope="group", reinitialize=True)
    assert result.reinitialized
    for a, b in zip(inherited.layers, fresh.layers):
        assert a.name == b.name
        assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    assert not np.allclose(inherited.get_layer("conv1").kernel, fresh.get_layer("conv1").kernel)
    # BN statistics start again from their initial values
    np.testing.assert_array_equal(fresh.get_layer("bn1").moving_variance.numpy(), 1.0)


def test_random_criterion_is_reproducible():
    first, _ = prune(_small_model(), "random", rate=0.5, seed=4)
    again, _ = prune(_small_model(), "random", rate=0.5, seed=4)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pruned_model_converts_to_tflite_and_matches_keras(tmp_path):
    small, _ = prune(_small_model(), "sparsity_gamma", rate=0.5)
    path = tmp_path / "small.tflite"
    tfprune.export.to_tflite(small, path, verify=False)
    x = _inputs(2)
    (tflite_output,) = tfprune.export.predict(path, x)
    np.testing.assert_allclose(tflite_output, small.predict(x, verbose=0), atol=1e-4)


def test_pruned_model_round_trips_through_keras_file(tmp_path):
    small, _ = prune(_small_model(), "l1", rate=0.5, scope="group")
    path = tmp_path / "small.keras"
    small.save(path)
    restored = keras.models.load_model(path)
    x = _inputs(2)
    np.testing.assert_allclose(restored.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6)


def test_mobilenet_v3_large_expansion_pruning_matches_the_paper_band():
    model = keras.applications.MobileNetV3Large(
        weights=None, input_shape=(224, 224, 3), classes=10
    )
    first_kernel = model.get_layer("expanded_conv_3_expand").kernel.numpy().copy()
    small, result = prune(model, "sparsity_gamma", rate=0.5, targets="expansion")
    # Liu & Lei report -44.5% params and -40% FLOPs on MobileNetV3-Large
    assert 0.35 <= result.params_reduction <= 0.50, result.params_reduction
    assert 0.30 <= result.macs_reduction <= 0.50, result.macs_reduction
    assert len(result.groups) == 14 and all(g.after < g.before for g in result.groups)
    # the SE bottleneck keeps MobileNetV3's ratio of its new expansion width
    expansion = small.get_layer("expanded_conv_3_expand").filters
    squeeze = small.get_layer("expanded_conv_3_squeeze_excite_conv").filters
    assert squeeze == tfprune.surgery.se_bottleneck_width(expansion)
    np.testing.assert_array_equal(model.get_layer("expanded_conv_3_expand").kernel.numpy(), first_kernel)
    assert small(np.zeros((1, 224, 224, 3), "float32")).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rate": 1.0}, ValueError, r"`rate` must be a number in \[0, 1\).*rate=1.0"),
        ({}, ValueError, r"exactly one of `rate`.*rate=None, threshold=None"),
        ({"rate": 0.5, "threshold": 0.1}, ValueError, r"exactly one of `rate`"),
        ({"rate": 0.5, "scope": "layer"}, ValueError, r"`scope` must be None \(chosen by the criterion\) or one of.*scope='layer'"),
        ({"rate": 0.5, "targets": "depthwise"}, ValueError, r"`targets` must be.*targets='depthwise'"),
        ({"rate": 0.5, "min_channels": 0}, ValueError, r"`min_channels`.*min_channels=0"),
        ({"rate": 0.5, "max_group_rate": 1.5}, ValueError, r"`max_group_rate`.*max_group_rate=1.5"),
        ({"rate": 0.5, "max_group_rate": "half"}, ValueError, r"max_group_rate='half'"),
        ({"rate": 0.5, "round_to": 0}, ValueError, r"`round_to` must be an int >= 1.*round_to=0"),
        ({"rate": 0.5, "skip": "conv1"}, TypeError, r"`skip` must be a tuple.*skip='conv1'"),
        ({"rate": 0.5, "criterion": "nope"}, ValueError, r"Unknown criterion 'nope'"),
        ({"rate": float("nan")}, ValueError, r"`rate` must be a number in \[0, 1\).*rate=nan"),
        ({"rate": np.bool_(True)}, ValueError, r"`rate` must be a number"),
        ({"threshold": float("nan")}, ValueError, r"`threshold` must be a number.*threshold=nan"),
        ({"threshold": "0"}, ValueError, r"`threshold` must be a number.*threshold='0'"),
        ({"rate": 0.5, "min_channels": 1.0}, ValueError, r"`min_channels` must be an int.*min_channels=1.0"),
        ({"rate": 0.5, "skip": ("conv_1",)}, ValueError,
         r"`skip` names layers or groups that model '\w+' does not have.*unknown: \['conv_1'\]"),
        ({"rate": 0.5, "targets": lambda group: False}, ValueError,
         r"`targets` and `skip` leave none of the 3 prunable groups.*nothing would be removed"),
        ({"rate": 0.5, "skip": ("conv1", "conv2", "conv3")}, ValueError,
         r"leave none of the 3 prunable groups .*skip=\('conv1', 'conv2', 'conv3'\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    kwargs = {"criterion": "l1", **kwargs}
    with pytest.raises(error, match=message):
        prune(_small_model(), **kwargs)


def test_prune_refuses_subclassed_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="tfprune.prune"):
        prune(Net(), "l1", rate=0.5)


def test_sensitivity_prunes_each_group_alone_with_a_custom_evaluate():
    model = _small_model()
    result = tfprune.pruning.sensitivity(
        model, data=None, rates=(0.5,), evaluate=lambda candidate: candidate.count_params(),
        verbose=0,
    )
    assert result.baseline == model.count_params()
    assert list(result.values) == ["conv1", "conv2", "conv3"]
    # conv2 at 0.5 keeps 3 of 6: conv2 kernel 8*6 -> 8*3, bn2 and bn3 4*6 -> 4*3,
    # depthwise 9*6 -> 9*3, conv3 kernel 6*4 -> 3*4
    removed = 8 * 3 + 4 * 3 + 4 * 3 + 9 * 3 + 3 * 4
    assert result.values["conv2"] == (model.count_params() - removed,)


def test_sensitivity_with_compiled_metric_and_plot(tmp_path):
    model = _small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = _inputs(16)
    y = np.arange(16) % 3
    result = tfprune.pruning.sensitivity(model, (x, y), rates=(0.25, 0.75), targets="expansion", verbose=0)
    assert result.metric == "accuracy"
    assert result.baseline == pytest.approx(model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"])
    manual, _ = prune(model, "l1", rate=0.75, scope="group", targets="expansion")
    manual.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    expected = manual.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert result.values == {"conv2": (result.values["conv2"][0], pytest.approx(expected))}
    figure = result.plot(tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(figure.axes[0].lines[0].get_ydata()) == list(result.values["conv2"])


def test_sensitivity_needs_a_compiled_model_or_evaluate():
    with pytest.raises(ValueError, match=r"needs a compiled model.*not compiled"):
        tfprune.pruning.sensitivity(_small_model(), (_inputs(), np.zeros(4)), verbose=0)
    with pytest.raises(ValueError, match=r"Every rate must be a number in \[0, 1\).*rates=\(1.5,\)"):
        tfprune.pruning.sensitivity(_small_model(), None, rates=(1.5,), evaluate=len, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, extra",
    [("mobilenetv3_digits.py", []), ("mobilenetv3_cifar10.py", ["--mock-data"])],
)
def test_examples_run_end_to_end(tmp_path, script, extra):
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    command = [
        sys.executable, str(root / "examples" / script), "--variant", "small", "--epochs", "1",
        "--fine-tune-epochs", "1", "--output", str(tmp_path), *extra,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "pruned accuracy after fine-tuning" in completed.stdout
    assert "params" in completed.stdout and "MACs" in completed.stdout
    for name in ("pruned.keras", "pruned.tflite", "widths.png", "gamma.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_numpy_scalars_are_accepted_wherever_python_numbers_are():
    model = _small_model()
    _, python = prune(model, "l1", rate=0.5, scope="group", min_channels=2, round_to=1, max_group_rate=0.75)
    _, numpy = prune(
        model, "l1", rate=np.float32(0.5), scope="group", min_channels=np.int64(2), round_to=np.int32(1),
        max_group_rate=np.float64(0.75),
    )
    assert numpy.widths_after == python.widths_after
    assert type(numpy.rate) is float and numpy.rate == 0.5
    with pytest.warns(UserWarning, match="removed no channel"):
        _, by_threshold = prune(model, "l1", threshold=np.float32(0.0))
    assert type(by_threshold.to_dict()["groups"][0]["after"]) is int
    result = tfprune.pruning.sensitivity(
        model, None, rates=(np.float32(0.5),), evaluate=lambda candidate: candidate.count_params(), verbose=0
    )
    assert result.rates == (0.5,)


def test_channels_first_model_is_refused_naming_why():
    inputs = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(8, 3, data_format="channels_first", name="conv1")(inputs)
    x = keras.layers.Conv2D(4, 1, data_format="channels_first", name="conv2")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match=r"no channel group that may be pruned.*'conv1' uses data_format='channels_first'"):
        prune(model, "l1", rate=0.5)


def test_criterion_that_scores_no_targeted_group_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
    x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    for criterion in ("bn_gamma", "sparsity_gamma"):
        with pytest.raises(ValueError, match=rf"Criterion '{criterion}' scores none of the 1 groups targeted.*'conv1'"):
            prune(model, criterion, rate=0.5)
    with pytest.raises(ValueError, match=r"Criterion 'bn_gamma' scores none"):
        tfprune.pruning.sensitivity(model, None, criterion="bn_gamma", evaluate=len, verbose=0)
    small, _ = prune(model, "l1", rate=0.5)  # what the message suggests works
    assert small.get_layer("conv1").filters == 4


def _nan_criterion(model, graph, data=None, seed=None):
    scores = {name: values.copy() for name, values in HAND_SCORES.items()}
    scores["conv2"][3] = np.nan
    return scores


def test_nan_scores_from_a_criterion_are_refused():
    for scope in ("global", "group"):
        with pytest.raises(ValueError, match=r"Criterion '_nan_criterion' returned NaN scores for group 'conv2' \(channels \[3\]\)"):
            prune(_small_model(), _nan_criterion, rate=0.5, scope=scope)
    with pytest.raises(ValueError, match=r"returned NaN scores for group 'conv2'"):
        prune(_small_model(), _nan_criterion, threshold=0.3)


def test_nan_weights_give_nan_l1_scores_and_are_refused():
    model = _small_model()
    kernel = model.get_layer("conv1").kernel.numpy()
    kernel[0, 0, 0, 5] = np.nan
    model.get_layer("conv1").kernel.assign(kernel)
    with pytest.raises(ValueError, match=r"Criterion 'l1' returned NaN scores for group 'conv1' \(channels \[5\]\)"):
        prune(model, "l1", rate=0.5)


def test_wrong_number_of_scores_is_refused():
    def short(model, graph, data=None, seed=None):
        return {"conv1": np.ones(3)}

    with pytest.raises(ValueError, match=r"Criterion 'short' must return 8 scores for group 'conv1'. Received: shape \(3,\)"):
        prune(_small_model(), short, rate=0.5)


def test_a_prune_that_removes_nothing_warns():
    model = _small_model()
    with pytest.warns(UserWarning, match=r"removed no channel from model '\w+': no score of its 18 targeted channels is <= threshold=-1.0"):
        small, result = prune(model, "l1", threshold=-1.0)
    assert small.count_params() == model.count_params() and result.params_after == result.params_before
    with pytest.warns(UserWarning, match=r"removed no channel.*rate=0.01 of its 18 targeted channels removes none "
                                         r"\('conv1' \(0 of 0.08 channels removed: the rate asks for less than one "
                                         r"of its 8 channels\); .*pass a larger rate"):  # fmt: skip
        _, result = prune(model, "l1", rate=0.01, scope="group")
    assert result.unchanged and "unchanged: no channel was removed" in str(result)
    assert result.to_dict()["unchanged"] is True
    _, result = prune(model, "l1", rate=0.5)
    assert not result.unchanged and "unchanged" not in str(result) and result.to_dict()["unchanged"] is False


def _dense_chain(*widths):
    inputs = keras.Input((4,))
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Dense(width, activation="relu", name=f"dense{index}")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_removal_counts_round_down_so_no_group_loses_more_than_the_rate():
    # 0.5 of 5 and 7 channels asks 2.5 and 3.5: 2 and 3 go (rounding half up took 3 and 4, 60% and 57%)
    _, result = prune(_dense_chain(5, 7), "l1", rate=0.5)
    assert result.widths_after == {"dense0": 3, "dense1": 4}
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 channels
    _, result = prune(_dense_chain(100), "l1", rate=0.29)
    assert result.widths_after == {"dense0": 71}
    # A global ranking: 0.25 of 18 channels asks 4.5, so the 4 lowest scores go (0.05, 0.1, 0.15, 0.2)
    _, result = prune(_small_model(), _hand_criterion, rate=0.25, scope="global")
    assert result.widths_after == {"conv1": 6, "conv2": 4, "conv3": 4} and result.threshold == pytest.approx(0.2)
    for rate in (0.1, 0.3, 0.5, 0.7, 0.9):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="tfprune.prune removed less than half")  # 0.1 of 5, 7, 9
            _, result = prune(_dense_chain(5, 7, 9, 12), "l1", rate=rate)
        assert all(group.before - group.after <= rate * group.before for group in result.groups), rate


def _tfprune_warnings(records):
    return [str(record.message) for record in records if "tfprune.prune removed" in str(record.message)]


def test_a_group_losing_less_than_half_of_what_was_asked_is_named_in_one_warning_with_its_cause():
    model = _small_model()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        _, result = prune(model, "l1", rate=0.5, min_channels=4)
    # conv3 (4 channels) may not lose its 2; conv2 keeps 4 of 6 (2 of the 3 asked go: more than half)
    assert result.widths_after == {"conv1": 4, "conv2": 4, "conv3": 4}
    (message,) = _tfprune_warnings(records)
    assert message == (
        f"tfprune.prune removed less than half of what rate=0.5 asks from 1 of the 3 targeted groups of model "
        f"'{model.name}': 'conv3' (0 of 2 channels removed: min_channels=4); pass a lower min_channels if they "
        "should shrink."
    )
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        prune(model, "l1", rate=0.5, max_group_rate=0.2)
    (message,) = _tfprune_warnings(records)
    assert "from 3 of the 3 targeted groups" in message and "'conv1' (1 of 4 channels removed: max_group_rate=0.2)" in message
    assert message.endswith("pass a larger max_group_rate if they should shrink.")
    # 0.2 of conv3's 4 channels is less than one channel
    with pytest.warns(UserWarning, match=r"from 1 of the 3 targeted groups.*'conv3' \(0 of 0.8 channels removed: the "
                                         r"rate asks for less than one of its 4 channels\); pass a larger rate"):  # fmt: skip
        prune(model, "l1", rate=0.2, scope="group")
    # Several causes and more than three groups: the first three are shown.
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        tfprune.prune(_dense_chain(5, 7, 9, 10), "l1", rate=0.5, round_to=4, min_channels=6)
    (message,) = _tfprune_warnings(records)
    assert "from 4 of the 4 targeted groups" in message and message.count("removed:") == 3 and "; ...;" in message
    assert "'dense0' (0 of 2.5 channels removed: min_channels=6)" in message
    assert "pass a smaller round_to (1 for exact rates) or a lower min_channels" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # exact rates on groups large enough: no warning
        prune(model, "l1", rate=0.5)


def test_prune_result_str_says_incomplete_when_some_macs_were_not_counted():
    model = _model_with_an_unknown_layer()  # the MACs of its custom layer cannot be counted
    _, result = prune(model, "l1", rate=0.5, unknown="freeze")
    assert not result.complete and result.uncounted_layers == ("doubler",)
    assert "INCOMPLETE: the MACs leave out 1 layer(s) tfprune cannot count ('doubler')" in str(result)
    assert result.to_dict()["complete"] is False and result.to_dict()["uncounted_layers"] == ["doubler"]
    _, counted = prune(_small_model(), "l1", rate=0.5)
    assert counted.complete and counted.uncounted_layers == () and "INCOMPLETE" not in str(counted)
    assert counted.to_dict()["complete"] is True


@keras.saving.register_keras_serializable(package="tfprune_test_pruning")
class _RowMixer(keras.layers.Layer):
    """Mixes rows of `width` values with a learned matrix: it holds a width of its own."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape):
        self.mix = self.add_weight(shape=(self.width, self.width), initializer="identity", name="mix")

    def call(self, x):
        rows = keras.ops.reshape(x, (-1, self.width))
        return keras.ops.reshape(keras.ops.matmul(rows, self.mix), (-1,) + tuple(x.shape[1:]))

    def compute_output_shape(self, input_shape):
        return input_shape  # so symbolic calls (the surgery's) never run `call`

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="tfprune_test_pruning")
class _Scale(keras.layers.Layer):
    """One scale per channel; its get_config forgets `width`, right only while it is the default."""

    def __init__(self, width=16, initial=1.0, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.initial = initial

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(self.width,), initializer=keras.initializers.Constant(self.initial), name="scale"
        )

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


class _ScaleHandler(tfprune.graph.Handler):
    def trace(self, node, tracer):
        channels = tracer.channels(node.input_tensors[0])
        tracer.use(node.operation, node.operation.scale, -1, channels, "param")
        return [channels]

    def resize(self, config, output_width):
        return {**config, "width": output_width}


def _model_around(layer, input_shape):
    inputs = keras.Input(input_shape)
    x = layer(keras.layers.Dense(16, name="proj")(inputs))
    if len(input_shape) > 1:
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_a_pruned_model_that_cannot_run_is_refused_naming_the_layer(monkeypatch):
    # Declared channel-preserving, the mixer reshapes to rows of its recorded width: 5 tokens x 12
    # channels do not make rows of 16, which only shows when the pruned model runs.
    monkeypatch.setitem(tfprune.handlers._HANDLERS, _RowMixer, tfprune.graph.Preserve())
    model = _model_around(_RowMixer(16, name="mixer"), (5, 16))
    with pytest.raises(ValueError, match=r"^tfprune.prune refuses to return the pruned model '\w+': layer 'mixer' "
                                         r"\(_RowMixer\) fails on a probe input that the input model runs "
                                         r"\(\w+: .*\), so its code or config likely holds a channel count "
                                         r"the pruning changed; .*skip=\('mixer',\)\)\.$"):  # fmt: skip
        prune(model, "l1", rate=0.25, targets=lambda group: group.name == "proj")


def test_a_pruned_model_whose_config_does_not_rebuild_is_refused_naming_the_layer(monkeypatch, tmp_path):
    monkeypatch.setitem(tfprune.handlers._HANDLERS, _Scale, _ScaleHandler())
    model = _model_around(_Scale(name="scale"), (16,))
    model.save(tmp_path / "model.keras")  # the input model reloads: its width is the default
    keras.models.load_model(tmp_path / "model.keras")
    with pytest.raises(ValueError, match=r"^tfprune.prune refuses to return the pruned model '\w+': it would not "
                                         r"reload, as layer 'scale' \(_Scale\) rebuilds weights of shapes \[\(16,\)\] "
                                         r"from its config where the pruned layer holds \[\(12,\)\] \(its config does "
                                         r"not record the width the pruning gave it\); .*skip=\('scale',\)\)\.$"):  # fmt: skip
        prune(model, "l1", rate=0.25, targets=lambda group: group.name == "proj")


def test_probe_inputs_follow_the_input_spec_and_good_pruned_models_pass(tmp_path):
    images = keras.Input((None, None, 3), name="image")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name="conv")(images))
    y = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 8, name="embed")(tokens))
    model = keras.Model({"image": images, "tokens": tokens}, keras.layers.Dense(2, name="head")(x + y))
    probe = tfprune.pruning._probe_inputs(model)
    assert set(probe) == {"image", "tokens"} and probe["image"].shape == (1, 32, 32, 3)
    assert probe["tokens"].dtype == np.int32 and probe["tokens"].shape == (1, 8)
    assert (probe["tokens"] == 0).all() and 0 <= probe["image"].min() and probe["image"].max() < 1
    inputs = keras.Input(batch_shape=(4, None, 5))
    fixed_batch = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert tfprune.pruning._probe_inputs(fixed_batch).shape == (4, 8, 5)
    # A custom layer that is not registered (frozen, unpruned) does not fail the check either.
    for good in (model, _model_with_an_unknown_layer()):
        small, result = prune(good, "l1", rate=0.5, unknown="freeze")
        assert not result.unchanged
        small.save(tmp_path / "small.keras")
        keras.models.load_model(tmp_path / "small.keras", custom_objects={"_Doubler": _Doubler})


def test_a_probe_the_input_model_cannot_take_either_does_not_refuse():
    # A 40x40 kernel cannot run on the 32x32 probe, pruned or not: not the pruning's fault.
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 40, name="wide_kernel")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    small, result = prune(model, "l1", rate=0.5)
    assert result.widths_after == {"wide_kernel": 4}
    assert small(np.zeros((1, 48, 48, 3), "float32")).shape == (1, 2)


class _Doubler(keras.layers.Layer):
    # A weight per channel of its own: tfprune cannot inline the layer (a weightless one
    # made of keras.ops is traced through, see test_graph_flatten.py) nor infer its rule
    # (as for single-number weights, see test_handlers_ops.py).
    def build(self, input_shape):
        self.factor = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(2.0), name="factor"
        )

    def call(self, x):
        return x * keras.ops.sum(self.factor)


def _model_with_an_unknown_layer():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = _Doubler(name="doubler")(keras.layers.ReLU()(x))
    x = keras.layers.Dense(5, name="second")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.ReLU()(x)))


def test_unknown_custom_layer_is_frozen_with_a_warning_or_silently_on_request():
    model = _model_with_an_unknown_layer()
    with pytest.warns(UserWarning, match=r"cannot see inside layer 'doubler' \(_Doubler\).*register_handler\(_Doubler"):
        warned, _ = prune(model, "l1", rate=0.5)
    assert warned.get_layer("hidden").units == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        small, result = prune(model, "l1", rate=0.5, unknown="freeze")
    assert result.widths_after == {"second": 2} or result.widths_after == {"second": 3}
    assert small.get_layer("hidden").units == 8
    result = tfprune.pruning.sensitivity(
        model, None, rates=(0.5,), evaluate=lambda candidate: candidate.count_params(), unknown="freeze", verbose=0
    )
    assert list(result.values) == ["second"]


def test_search_classes_accept_the_unknown_option_they_advise():
    model = _model_with_an_unknown_layer()
    model.compile("adam", "mse", metrics=["mae"])
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(32, 6)).astype("float32"), rng.normal(size=(32, 2)).astype("float32"))
    for search_class, arguments in ((tfprune.search.DMCP, {"target": 0.9}), (tfprune.search.ABCPruner, {"data": data})):
        with pytest.warns(UserWarning, match=r"cannot see inside layer 'doubler'"):
            search_class(model, **arguments)
        search = search_class(model, unknown="freeze", **arguments)
        assert [group.name for group in search.groups] == ["second"]
    result = tfprune.search.DMCP(model, target=0.9, unknown="freeze").prune()
    assert result.model.get_layer("hidden").units == 8 and result.model.get_layer("second").units <= 5


def test_docstring_examples_run():
    results = doctest.testmod(tfprune.pruning, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 10 and results.failed == 0
    results = doctest.testmod(tfprune.structure, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 6 and results.failed == 0


class _CachesItsFirstCall(keras.layers.Layer):
    """Like keras-hub's diffusion scheduler: keeps what its first call computed from its input."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")  # not inlined

    def call(self, x):
        if not hasattr(self, "cached") and isinstance(keras.ops.shape(x)[0], int):  # run, not traced
            self.cached = keras.ops.shape(x)[0]
        return x * self.scale


def test_the_probe_leaves_no_state_in_the_pruned_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="narrow")(keras.layers.Dense(8, activation="relu", name="hidden")(inputs))
    x = keras.layers.Dense(2, name="head")(_CachesItsFirstCall(name="cache")(x))
    model = keras.Model(inputs, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, _ = prune(model, "l1", rate=0.5, unknown="freeze")
    assert not hasattr(small.get_layer("cache"), "cached")


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _TupleOnlyBuild(keras.layers.Layer):
    """Like keras-hub's D-FINE decoder: its `build` refuses the list a `.keras` file gives it."""

    def build(self, input_shape):
        if not isinstance(input_shape, tuple):
            raise TypeError(f"expected a tuple, got {input_shape!r}")
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _Backbone(keras.Model):
    """A keras-hub-style backbone: functional, and reloaded through its own constructor."""

    def __init__(self, width=8, decoder_name="decoder", **kwargs):
        inputs = keras.Input((6,), name="features")
        x = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
        x = _TupleOnlyBuild(name=decoder_name)(keras.layers.Dense(4, name="narrow")(x))
        super().__init__(inputs, x, **kwargs)
        self.width, self.decoder_name = width, decoder_name

    def get_config(self):
        return {"width": self.width, "decoder_name": self.decoder_name, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@pytest.mark.parametrize("decoder_name", ["decoder", None])  # None: a new name each time it is built
def test_a_layer_that_never_rebuilds_from_its_own_config_is_named_as_the_reason(decoder_name, tmp_path):
    model = _Backbone(decoder_name=decoder_name)
    model.save(tmp_path / "backbone.keras")
    keras.models.load_model(tmp_path / "backbone.keras")  # through its constructor
    with pytest.raises(ValueError, match=r"it would not reload, as layer '\w+' \(_TupleOnlyBuild\) raises "
                                         r"TypeError: expected a tuple.* when re-created from its own config even "
                                         r"unpruned, and a pruned model loads back through each layer's config"):  # fmt: skip
        prune(model, "l1", rate=0.5, unknown="freeze")


def _attention_model():
    inputs = keras.Input((6, 16))
    x = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(inputs, inputs)
    x = keras.layers.Dense(32, activation="relu", name="up")(x)
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "make_model, targets", [(_small_model, "all"), (_attention_model, "heads"), (_attention_model, "all")]
)
def test_prune_builds_the_channel_graph_once(monkeypatch, make_model, targets):
    builds = []
    build = tfprune.graph.build

    def counting_build(*args, **kwargs):
        builds.append(args[0].name)
        return build(*args, **kwargs)

    monkeypatch.setattr(tfprune.graph, "build", counting_build)
    model = make_model()
    pruned, result = prune(model, "l1", rate=0.5, targets=targets)
    assert not result.unchanged
    assert len(builds) == 1
