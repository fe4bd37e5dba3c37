"""Tests for tfprune.graph: channel groups derived from the functional graph."""

import warnings

import keras
import numpy as np
import pytest
from surgery_helpers import outputs

import tfprune
from tfprune import handlers

layers = keras.layers


def conv_bn_model():
    inputs = keras.Input((6, 6, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(4, 1, name="conv2")(x)
    return keras.Model(inputs, x)


def test_conv_bn_relu_chain_groups():
    graph = tfprune.graph.build(conv_bn_model())
    assert [group.name for group in graph.groups] == ["image", "conv1", "conv2"]
    group = graph["conv1"]
    assert group.size == 8 and group.prunable and group.reason == ""
    assert group.producers == ("conv1",)
    assert group.consumers == ("conv2",)
    weights = {(m.layer_name, m.role): dict(m.weights) for m in group.members}
    assert weights[("conv1", "output")] == {"conv1/kernel": 3, "conv1/bias": 0}
    assert weights[("conv2", "input")] == {"conv2/kernel": 2}
    assert set(weights[("bn1", "param")]) == {
        "bn1/gamma", "bn1/beta", "bn1/moving_mean", "bn1/moving_variance"
    }
    for member in group.members:
        assert member.positions == tuple(range(8)) == member.channels


def test_model_input_and_output_groups_are_not_prunable():
    graph = tfprune.graph.build(conv_bn_model())
    assert not graph["image"].prunable
    assert "model input 'image'" in graph["image"].reason
    assert not graph["conv2"].prunable
    assert "model output" in graph["conv2"].reason


def test_residual_add_couples_both_producers():
    inputs = keras.Input((5, 5, 3))
    a = layers.Conv2D(6, 1, name="a")(inputs)
    b = layers.Conv2D(6, 3, padding="same", name="b")(inputs)
    x = layers.Add(name="add")([a, b])
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    group = graph["a"]
    assert group.producers == ("a", "b")
    assert group.consumers == ("head",)
    assert "b" not in graph


def test_non_layer_ops_and_broadcast_gate_couple_like_squeeze_excite():
    # The MobileNetV3 pattern: hard sigmoid built from `x + 3.0`, relu6, `* (1/6)`.
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(16, 1, name="expand")(inputs)
    x = keras.ops.relu6(x)
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(8, 1, name="se_reduce")(gate)
    gate = layers.ReLU()(gate)
    gate = layers.Conv2D(16, 1, name="se_expand")(gate)
    gate = layers.ReLU(6.0)(gate + 3.0) * (1.0 / 6.0)
    x = layers.Multiply(name="se_mul")([x, gate])
    x = layers.Conv2D(4, 1, name="project")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    expansion = graph["expand"]
    assert expansion.size == 16
    assert expansion.producers == ("expand", "se_expand")
    assert set(expansion.consumers) == {"se_reduce", "project"}
    assert expansion.squeeze_excite_of is None
    bottleneck = graph["se_reduce"]
    assert bottleneck.size == 8 and bottleneck.prunable
    assert bottleneck.squeeze_excite_of == "expand"


def test_residual_block_is_not_mistaken_for_squeeze_excite():
    inputs = keras.Input((1, 1, 4))
    x = layers.Conv2D(6, 1, name="stem")(inputs)
    y = layers.Conv2D(3, 1, name="inner")(x)
    y = layers.Conv2D(6, 1, name="outer")(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    assert graph["inner"].squeeze_excite_of is None


def test_concatenate_maps_channels_by_offset():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(5, 1, name="b")(inputs)
    x = layers.Concatenate(name="concat")([a, b])
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    (head_a,) = [m for m in graph["a"].members if m.layer_name == "head"]
    (head_b,) = [m for m in graph["b"].members if m.layer_name == "head"]
    assert head_a.positions == (0, 1, 2) and head_a.channels == (0, 1, 2)
    assert head_b.positions == (3, 4, 5, 6, 7) and head_b.channels == (0, 1, 2, 3, 4)


def test_flatten_into_dense_maps_each_channel_to_its_spatial_positions():
    inputs = keras.Input((2, 2, 1))
    x = layers.Conv2D(3, 1, name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(2, name="dense")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    (dense,) = [m for m in graph["conv"].members if m.layer_name == "dense"]
    # Row-major flatten of (2, 2, 3): feature 3 * position + channel.
    assert dense.positions == tuple(range(12))
    assert dense.channels == tuple(np.tile(np.arange(3), 4))
    assert dense.weights == (("dense/kernel", 0),)


def test_depthwise_multiplier_maps_each_input_channel_to_its_outputs():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(3, 1, name="conv")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    members = {(m.layer_name, m.weights[0][0]): m for m in graph["conv"].members}
    kernel = members[("dw", "dw/kernel")]
    assert kernel.weights == (("dw/kernel", 2),) and kernel.channels == (0, 1, 2)
    bn = members[("bn", "bn/gamma")]
    assert bn.positions == tuple(range(6)) and bn.channels == (0, 0, 1, 1, 2, 2)
    assert members[("head", "head/kernel")].channels == (0, 0, 1, 1, 2, 2)


def test_separable_conv_is_a_producer_and_a_consumer():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(3, 1, name="conv")(inputs)
    x = layers.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(x)
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    assert graph["conv"].consumers == ("sep",)
    sep_inputs = {m.weights[0][0]: m for m in graph["conv"].members if m.layer_name == "sep"}
    assert sep_inputs["sep/depthwise_kernel"].channels == (0, 1, 2)
    assert sep_inputs["sep/pointwise_kernel"].channels == (0, 0, 1, 1, 2, 2)
    assert graph["sep"].producers == ("sep",) and graph["sep"].size == 5


def test_grouped_conv_is_refused_explicitly():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(4, 1, name="conv")(inputs)
    x = layers.Conv2D(4, 1, groups=2, name="grouped")(x)
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    for name in ("conv", "grouped"):
        assert not graph[name].prunable
        assert "'grouped' is a grouped convolution (groups=2)" in graph[name].reason


def test_reshape_that_splits_channels_is_frozen():
    inputs = keras.Input((4, 6))
    x = layers.Dense(6, name="dense")(inputs)
    x = layers.Reshape((4, 2, 3))(x)
    x = layers.Dense(2, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    assert not graph["dense"].prunable
    assert "reshapes channels into several axes" in graph["dense"].reason


def test_softmax_over_channels_is_frozen():
    inputs = keras.Input((4,))
    x = layers.Dense(6, name="dense")(inputs)
    x = layers.Softmax()(x)
    x = layers.Dense(2, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    assert not graph["dense"].prunable
    assert "normalises over the channel axis" in graph["dense"].reason


def test_shared_layer_couples_its_calls():
    inputs = keras.Input((4, 4, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(3, 1, name="b")(inputs)
    shared = layers.Conv2D(5, 1, name="shared")
    x = layers.Concatenate()([shared(a), shared(b)])
    x = layers.Conv2D(2, 1, name="head")(x)
    graph = tfprune.graph.build(keras.Model(inputs, x))
    # Both callers feed the same kernel rows: their channels are one group.
    assert graph["a"].producers == ("a", "b")


def test_sequential_model_is_supported():
    model = keras.Sequential(
        [keras.Input((8,)), layers.Dense(6, name="hidden"), layers.ReLU(), layers.Dense(2, name="out")]
    )
    graph = tfprune.graph.build(model)
    assert graph["hidden"].prunable and graph["hidden"].consumers == ("out",)


def test_group_order_and_names_are_deterministic():
    first = [(g.name, g.size) for g in tfprune.graph.build(conv_bn_model()).groups]
    keras.backend.clear_session()
    second = [(g.name, g.size) for g in tfprune.graph.build(conv_bn_model()).groups]
    assert first == second


def test_mobilenet_v3_small_squeeze_excite_groups_match_keras_construction():
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10)
    graph = tfprune.graph.build(model)
    expansion = graph["expanded_conv_3_expand"]
    assert expansion.size == 96
    assert set(expansion.producers) == {"expanded_conv_3_expand", "expanded_conv_3_squeeze_excite_conv_1"}
    assert {"expanded_conv_3_depthwise", "expanded_conv_3_depthwise_bn", "expanded_conv_3_expand_bn"} <= {
        m.layer_name for m in expansion.members if m.role == "param"
    }
    bottlenecks = {g.name: g.squeeze_excite_of for g in graph.groups if g.squeeze_excite_of}
    squeeze_convs = [layer.name for layer in model.layers if layer.name.endswith("squeeze_excite_conv")]
    assert sorted(bottlenecks) == sorted(squeeze_convs)
    assert bottlenecks["expanded_conv_3_squeeze_excite_conv"] == "expanded_conv_3_expand"


def test_build_does_not_mutate_the_model():
    model = conv_bn_model()
    before = [w.numpy().copy() for w in model.weights]
    tfprune.graph.build(model)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


class Scale(layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


def scale_model():
    inputs = keras.Input((4,))
    x = layers.Dense(5, name="dense")(inputs)
    x = Scale(name="scale")(x)
    return keras.Model(inputs, layers.Dense(2, name="head")(x))


def test_a_custom_layer_without_handler_is_frozen_with_a_warning_naming_it():
    with pytest.warns(UserWarning, match=r"cannot see inside layer 'scale' \(Scale\).*frozen.*register_handler\(Scale"):
        graph = tfprune.graph.build(scale_model())
    assert not graph["dense"].prunable
    assert "cannot see inside layer 'scale' (Scale): it could not be inlined and has no handler" in graph["dense"].reason


def test_a_keras_hub_layer_without_handler_is_frozen_saying_why_without_a_registry_hint():
    # Nothing for the user to register: the layer ships with keras-hub.
    class HubScale(Scale):
        pass

    HubScale.__module__ = "keras_hub.src.models.example.example_layers"
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="head")(HubScale(name="scale")(layers.Dense(5, name="dense")(inputs))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tfprune.graph.build(model)
    [message] = [str(warning.message) for warning in caught if "cannot see inside" in str(warning.message)]
    assert message == (
        "tfprune cannot see inside layer 'scale' (HubScale), so the channels around it are frozen (they cannot shrink)."
    )


def repeat_model():
    # A Keras layer without handler, whose channel rule cannot be inferred (it adds an axis).
    inputs = keras.Input((4,))
    x = layers.RepeatVector(2, name="repeat")(layers.Dense(5, name="dense")(inputs))
    return keras.Model(inputs, layers.Dense(2, name="head")(layers.GlobalAveragePooling1D()(x)))


def test_a_keras_layer_without_handler_is_refused_by_name_pointing_to_the_registry():
    with pytest.raises(ValueError, match=r"no channel handler for operation 'repeat' of type .*RepeatVector \(and its channel rule could not be established numerically: .*\); register one"):
        tfprune.graph.build(repeat_model())


def test_freeze_handler_pins_a_registered_layer():
    tfprune.graph.register_handler(Scale, tfprune.graph.Freeze("'Scale' mixes channels"))
    try:
        graph = tfprune.graph.build(scale_model())
    finally:
        handlers._HANDLERS.pop(Scale)
    assert graph["dense"].reason == "Group 'dense' is not prunable: 'Scale' mixes channels."


def test_unknown_layer_can_be_frozen():
    graph = tfprune.graph.build(scale_model(), unknown="freeze")
    assert not graph["dense"].prunable
    assert "cannot see inside layer 'scale' (Scale): it could not be inlined and has no handler" in graph["dense"].reason


def test_unknown_argument_value_is_refused():
    with pytest.raises(ValueError, match=r"`unknown` must be 'raise' or 'freeze'. Received: unknown='skip'"):
        tfprune.graph.build(conv_bn_model(), unknown="skip")


class ScaleHandler(tfprune.graph.Handler):
    def trace(self, node, tracer):
        channels = tracer.channels(node.input_tensors[0])
        tracer.use(node.operation, node.operation.scale, -1, channels, "param")
        return [channels]


@pytest.fixture
def registered_scale():
    tfprune.graph.register_handler(Scale, ScaleHandler())
    yield
    handlers._HANDLERS.pop(Scale)


def test_registered_handler_teaches_a_custom_layer(registered_scale):
    graph = tfprune.graph.build(scale_model())
    group = graph["dense"]
    assert group.prunable
    assert ("scale", "param", (("scale/scale", 0),)) in {(m.layer_name, m.role, m.weights) for m in group.members}


def test_non_layer_operation_is_refused_then_registered_by_class_name():
    def sine_model():
        inputs = keras.Input((4,))
        x = keras.ops.flip(layers.Dense(5, name="dense")(inputs), axis=-1)  # reverses the channels
        return keras.Model(inputs, layers.Dense(2, name="head")(x))

    with pytest.raises(ValueError, match=r"operation 'flip' of type keras.src.ops.numpy.Flip \(and its channel rule could not be established numerically: changing its input channel \d changes other output channels\); register one"):
        tfprune.graph.build(sine_model())
    tfprune.graph.register_handler("Flip", tfprune.graph.Freeze("flips the channels"))
    try:
        graph = tfprune.graph.build(sine_model())
    finally:
        handlers._HANDLERS.pop("Flip")
    assert not graph["dense"].prunable and "flips the channels" in graph["dense"].reason


def test_register_handler_rejects_wrong_types():
    with pytest.raises(TypeError, match=r"expects a keras.layers.Layer subclass .* received: 3"):
        tfprune.graph.register_handler(3, ScaleHandler())
    with pytest.raises(TypeError, match=r"expects a tfprune.graph.Handler instance; received: 'oops'"):
        tfprune.graph.register_handler(Scale, "oops")


def test_handler_base_class_requires_trace():
    with pytest.raises(NotImplementedError, match="must implement `trace`"):
        tfprune.graph.Handler().trace(None, None)


def test_tracer_refuses_mismatched_couplings():
    tracer = tfprune.graph.Tracer()
    with pytest.raises(ValueError, match="cannot couple channel axes of sizes 2 and 3"):
        tracer.couple(tracer.new_channels(2, "a"), tracer.new_channels(3, "b"))


def nested_model():
    inner_inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(6, 3, padding="same", name="inner_conv")(inner_inputs)
    x = layers.BatchNormalization(name="inner_bn")(x)
    backbone = keras.Model(inner_inputs, layers.ReLU(name="inner_relu")(x), name="backbone")
    inputs = keras.Input((4, 4, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
    return model, backbone


def test_nested_model_is_refused_pointing_to_flatten():
    model, _ = nested_model()
    with pytest.raises(ValueError, match=r"Model 'backbone' is nested .* `model = tfprune.graph.flatten\(model\)`"):
        tfprune.graph.build(model)


def test_flatten_inlines_nested_models_without_touching_them():
    model, backbone = nested_model()
    before = [weight.numpy().copy() for weight in model.weights]
    flat = tfprune.graph.flatten(model)
    assert [layer.name for layer in flat.layers] == ["image", "inner_conv", "inner_bn", "inner_relu", "pool", "head"]
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(outputs(flat, x), outputs(model, x), atol=1e-6)
    graph = tfprune.graph.build(flat)
    assert graph["inner_conv"].consumers == ("head",)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)
    # The user's layers got no extra call nodes (their `.output` stays defined).
    assert len(backbone.get_layer("inner_conv")._inbound_nodes) == 1
    flat.get_layer("inner_conv").kernel.assign(np.zeros((3, 3, 3, 6)))
    assert np.abs(backbone.get_layer("inner_conv").kernel.numpy()).min() >= 0.5


def test_subclassed_and_unbuilt_models_are_refused():
    class Net(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(TypeError, match="cannot transform subclassed model"):
        tfprune.graph.build(Net())
    with pytest.raises(ValueError, match="is not built"):
        tfprune.graph.build(keras.Sequential([layers.Dense(2)]))


def test_unknown_group_name_lists_known_ones():
    graph = tfprune.graph.build(conv_bn_model())
    with pytest.raises(KeyError, match=r"No channel group named 'nope'.*'conv1'"):
        graph["nope"]
    assert len(graph) == 3 and "conv1" in graph
    assert repr(graph) == "<ChannelGraph: 3 groups, 1 prunable>"


def _suggested_registrations(message):
    """The `tfprune.graph.register_handler(...)` calls a refusal suggests, as code."""
    import re

    return re.findall(r"`(tfprune\.graph\.register_handler\(.*?\))`", message)


@pytest.mark.parametrize("choice", [0, 1])
def test_refusal_suggests_a_registration_that_works_for_a_layer(choice):
    with pytest.raises(tfprune.graph.UnknownOperationError) as refusal:
        tfprune.graph.build(repeat_model())
    assert refusal.value.operation.name == "repeat"
    suggestions = _suggested_registrations(str(refusal.value))
    assert len(suggestions) == 2
    try:
        eval(suggestions[choice], {"tfprune": tfprune, "RepeatVector": layers.RepeatVector})
        graph = tfprune.graph.build(repeat_model())
    finally:
        handlers._HANDLERS.pop(layers.RepeatVector)
    assert graph["dense"].prunable == (choice == 1)  # Freeze leaves it alone, Preserve passes channels


def test_refusal_suggests_a_registration_that_works_for_an_operation():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="head")(keras.ops.flip(layers.Dense(5, name="dense")(inputs), -1)))
    with pytest.raises(tfprune.graph.UnknownOperationError) as refusal:
        tfprune.graph.build(model)
    preserve = _suggested_registrations(str(refusal.value))[1]
    assert preserve == "tfprune.graph.register_handler('Flip', tfprune.graph.Preserve())"
    try:
        eval(preserve, {"tfprune": tfprune})
        assert tfprune.graph.build(model)["dense"].prunable
    finally:
        handlers._HANDLERS.pop("Flip")
