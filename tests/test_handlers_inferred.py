"""Layers and operations without a handler of their own: augmentation and
preprocessing layers, activation functions called as functions, and channel
rules established numerically (`tfprune.handlers_inferred`)."""

import doctest
import inspect
import re

import keras
import numpy as np
import pytest
from keras import layers

import tfprune
from tfprune import handlers_inferred

PER_CHANNEL_LAYERS = {
    "Resizing": lambda **kw: layers.Resizing(12, 12, **kw),
    "CenterCrop": lambda **kw: layers.CenterCrop(12, 12, **kw),
    "RandomFlip": lambda **kw: layers.RandomFlip(**kw),
    "RandomRotation": lambda **kw: layers.RandomRotation(0.1, **kw),
    "RandomZoom": lambda **kw: layers.RandomZoom(0.1, **kw),
    "RandomTranslation": lambda **kw: layers.RandomTranslation(0.1, 0.1, **kw),
    "RandomCrop": lambda **kw: layers.RandomCrop(12, 12, **kw),
    "RandomContrast": lambda **kw: layers.RandomContrast(0.2, **kw),
    "RandomBrightness": lambda **kw: layers.RandomBrightness(0.2, value_range=(-10.0, 10.0), **kw),
    "RandomGaussianBlur": lambda **kw: layers.RandomGaussianBlur(**kw),
    "RandomErasing": lambda **kw: layers.RandomErasing(**kw),
    "RandomSharpness": lambda **kw: layers.RandomSharpness(0.2, **kw),
    "RandomPerspective": lambda **kw: layers.RandomPerspective(**kw),
    "RandomShear": lambda **kw: layers.RandomShear(0.2, **kw),
    "Solarization": lambda **kw: layers.Solarization(**kw),
    "AutoContrast": lambda **kw: layers.AutoContrast(**kw),
    "MixUp": lambda **kw: layers.MixUp(**kw),
    "CutMix": lambda **kw: layers.CutMix(**kw),
    "RandomInvert": lambda **kw: layers.RandomInvert(value_range=(-10.0, 10.0), **kw),
    "RandomElasticTransform": lambda **kw: layers.RandomElasticTransform(**kw),
    "RandomPosterization": lambda **kw: layers.RandomPosterization(4, value_range=(-10.0, 10.0), **kw),
    "Permute": lambda **kw: layers.Permute((2, 1, 3), **kw),
}


def _model(middle, filters=8):
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
    x = middle(x)
    x = layers.Conv2D(4, 3, padding="same", name="head")(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x))


def _kill(model, dead):
    """Zeroes filters `dead` of layer 'conv' in place (a copy the test owns)."""
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., dead], bias[dead] = 0.0, 0.0
    model.get_layer("conv").set_weights([kernel, bias])


def _images(count=2):
    return np.random.default_rng(0).uniform(0.0, 1.0, (count, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(PER_CHANNEL_LAYERS))
def test_augmentation_and_preprocessing_layers_pass_channels_through(name):
    keras.utils.set_random_seed(0)
    model = _model(PER_CHANNEL_LAYERS[name]())
    graph = tfprune.graph.build(model)
    assert graph["conv"].prunable, graph["conv"].reason
    assert not graph.inferred  # registered handlers, nothing guessed
    _kill(model, [1, 4, 6])
    small = tfprune.surgery.remove_channels(model, {"conv": [1, 4, 6]})
    x = _images()
    assert small.get_layer("conv").filters == 5
    # At inference the augmentation layers are identities: dead channels go without a trace.
    np.testing.assert_allclose(small(x, training=False), model(x, training=False), atol=1e-5)
    assert small(x, training=True).shape == (2, 4)  # and they train at the new width


COLOUR_LAYERS = ("RandomHue", "RandomSaturation", "RandomGrayscale", "RandomColorJitter",
                 "RandomColorDegeneration", "AugMix", "RandAugment")  # fmt: skip


# Their random fill values are drawn per channel, so fewer channels draw other values.
_DRAWS_PER_CHANNEL = ("RandomErasing",)


@pytest.mark.parametrize("name", sorted(PER_CHANNEL_LAYERS))
def test_augmentation_layers_act_on_each_channel_in_training_too(name):
    # With the same seed, the layer given fewer channels gives the kept channels' output.
    make = PER_CHANNEL_LAYERS[name]
    if "seed" not in inspect.signature(type(make()).__init__).parameters or name in _DRAWS_PER_CHANNEL:
        pytest.skip(f"{name} draws nothing at random, or draws per channel")
    x = np.random.default_rng(0).uniform(0.0, 1.0, (2, 16, 16, 6)).astype("float32")
    kept = [0, 2, 3, 5]
    full = keras.ops.convert_to_numpy(make(seed=7)(x, training=True))
    narrow = keras.ops.convert_to_numpy(make(seed=7)(x[..., kept], training=True))
    np.testing.assert_allclose(narrow, full[..., kept], atol=1e-5)


@pytest.mark.parametrize("name", COLOUR_LAYERS)
def test_colour_layers_freeze_the_channels_they_mix(name):
    cls = getattr(layers, name)
    # Some refuse any other number of channels than 3.
    model = _model(cls(0.2) if name in ("RandomHue", "RandomSaturation", "RandomColorDegeneration") else cls(), 3)
    graph = tfprune.graph.build(model)
    assert not graph["conv"].prunable
    assert f"{name} works on the three colour channels of an image together" in graph["conv"].reason


FUNCTIONS = {
    "relu": lambda x: keras.activations.relu(x),
    "relu6": lambda x: keras.activations.relu(x, max_value=6.0),
    "erf": keras.ops.erf,
    "sin": keras.ops.sin,
    "where": lambda x: keras.ops.where(x > 0.1, x, -x),
    "image_resize": lambda x: keras.ops.image.resize(x, (8, 8)),
    "transpose": lambda x: keras.ops.transpose(x, (0, 2, 1, 3)),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_called_on_tensors_prune_and_dead_channels_leave_no_trace(name):
    keras.utils.set_random_seed(0)
    model = _model(FUNCTIONS[name])
    _kill(model, [0, 5])
    graph = tfprune.graph.build(model)
    assert graph["conv"].prunable, graph["conv"].reason
    small = tfprune.surgery.remove_channels(model, {"conv": [0, 5]})
    x = _images()
    np.testing.assert_allclose(small(x), model(x), atol=1e-5)


def test_an_inferred_rule_is_stated_in_the_graph():
    model = _model(lambda x: keras.ops.deg2rad(x) * 2.0)  # Deg2rad has no handler
    graph = tfprune.graph.build(model)
    assert graph["conv"].prunable
    (name,) = graph.inferred
    assert graph.inferred[name] == (
        f"'{name}' (Deg2rad): output channel c is input channel c, established numerically on 8 channels"
    )


class _Softsign(layers.Layer):
    """A weightless layer of this test module whose call Keras cannot trace symbolically."""

    def call(self, inputs, training=None):
        if training:  # branches on `training`, so tfprune keeps it whole
            return inputs
        return inputs / (1.0 + keras.ops.abs(inputs))


def test_a_custom_weightless_layer_is_pruned_through_on_its_inferred_rule():
    keras.utils.set_random_seed(0)
    model = _model(_Softsign(name="softsign"))
    _kill(model, [2, 3])
    graph = tfprune.graph.build(model)
    assert graph["conv"].prunable
    assert "'softsign' (_Softsign): output channel c is input channel c" in graph.inferred["softsign"]
    assert graph.inferred["softsign"].endswith("in inference and training mode")
    small = tfprune.surgery.remove_channels(model, {"conv": [2, 3]})
    np.testing.assert_allclose(small(_images()), model(_images()), atol=1e-5)


class _DividedByWidth(layers.Layer):
    def call(self, inputs):
        return inputs / keras.ops.cast(keras.ops.shape(inputs)[-1], inputs.dtype)


class _Noisy(layers.Layer):
    def call(self, inputs, training=None):
        if training:
            return inputs + keras.random.normal(keras.ops.shape(inputs))
        return inputs


class _MixesChannels(layers.Layer):
    def call(self, inputs):
        return inputs - keras.ops.mean(inputs, axis=-1, keepdims=True)


@pytest.mark.parametrize("layer, reason", [
    (_DividedByWidth(), "run on fewer channels it does not give the kept channels' output"),
    (_Noisy(), "its output is random in training mode"),
    (_MixesChannels(), r"changing its input channel \d changes other output channels"),
    (layers.Dense(8), "it holds weights"),
    (layers.RepeatVector(3), "no input has the output's channel axis"),
])  # fmt: skip
def test_no_rule_is_inferred_where_a_check_fails(layer, reason):
    inputs = keras.Input((8,) if isinstance(layer, layers.RepeatVector) else (5, 8))
    outputs = layer(inputs)
    node = outputs._keras_history.operation._inbound_nodes[0]
    handler, why = handlers_inferred.infer(node, tfprune.handlers.ELEMENTWISE)
    assert handler is None
    assert why is not None and re.search(reason, why), why


def test_a_foreign_layer_without_a_rule_is_frozen_and_says_why():
    model = _model(_Noisy(name="noisy"))
    with pytest.warns(UserWarning, match="cannot see inside layer 'noisy'"):
        graph = tfprune.graph.build(model)
    assert not graph["conv"].prunable
    assert "no channel rule could be established numerically (its output is random in training mode)" in graph["conv"].reason


def test_the_module_examples_run():
    results = doctest.testmod(
        handlers_inferred, extraglobs={"tfprune": tfprune, "keras": keras}, optionflags=doctest.ELLIPSIS
    )
    assert results.attempted >= 4 and results.failed == 0


def test_a_matrix_product_passes_its_right_operands_channels_and_pins_the_contracted_ones():
    # Hand-written attention: `scores @ values` keeps the values' channels.
    keras.utils.set_random_seed(0)
    left_inputs, right_inputs = keras.Input((3, 4), name="left"), keras.Input((6, 4), name="right")
    left = layers.Dense(6, name="producer")(left_inputs)
    right = layers.Dense(5, name="values")(right_inputs)
    outputs = layers.Dense(2, name="head")(keras.ops.matmul(left, right))
    model = keras.Model([left_inputs, right_inputs], outputs)
    graph = tfprune.graph.build(model)
    assert not graph["producer"].prunable and "contracts them in a matrix product" in graph["producer"].reason
    assert graph["values"].prunable
    kernel, bias = model.get_layer("values").get_weights()
    kernel[:, [1, 3]], bias[[1, 3]] = 0.0, 0.0
    model.get_layer("values").set_weights([kernel, bias])
    small = tfprune.surgery.remove_channels(model, {"values": [1, 3]})
    x = [np.random.default_rng(0).normal(size=(2, 3, 4)), np.random.default_rng(1).normal(size=(2, 6, 4))]
    np.testing.assert_allclose(small(x), model(x), atol=1e-5)


def test_dot_product_attention_pins_query_key_and_value_and_the_rest_prunes():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    query, key, values = (layers.Dense(4, name=name)(inputs)[:, :, None, :] for name in ("q", "k", "values"))
    attended = keras.ops.dot_product_attention(query, key, values)  # one head of 4 channels
    hidden = layers.Dense(6, name="hidden")(attended[:, :, 0])
    model = keras.Model(inputs, layers.Dense(3, name="head")(hidden))
    graph = tfprune.graph.build(model)
    for name in ("q", "k", "values"):
        assert not graph[name].prunable and "contracts them in attention" in graph[name].reason
    assert graph["hidden"].prunable  # what reads the attention's output still prunes
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, [0, 5]], bias[[0, 5]] = 0.0, 0.0
    model.get_layer("hidden").set_weights([kernel, bias])
    small = tfprune.surgery.remove_channels(model, {"hidden": [0, 5]})
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_allclose(small(x), model(x), atol=1e-5)


@pytest.mark.parametrize("width", [11, 18, 40])
@pytest.mark.parametrize("function, reason", [
    (lambda x: x - x[..., -1:], r"changing its input channel \d+ changes other output channels"),
    (lambda x: x * keras.ops.cast(x[..., :1] > 0, x.dtype), r"changes other output channels|fewer channels"),
])  # fmt: skip
def test_coupling_through_the_first_or_last_channel_is_never_inferred(function, reason, width):
    node = handlers_inferred._Applied(function)(keras.Input((5, width)))._keras_history.operation._inbound_nodes[0]
    handler, why = handlers_inferred.infer(node, tfprune.handlers.ELEMENTWISE)
    assert handler is None and re.search(reason, why), why
    assert handlers_inferred.activation_reason(function) is not None


class _SeededNoise(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(1)

    def call(self, inputs):
        return inputs


def test_an_operation_with_state_is_not_run_so_the_model_is_untouched():
    layer = _SeededNoise()
    node = layer(keras.Input((3, 4)))._keras_history.operation._inbound_nodes[0]
    state = [keras.ops.convert_to_numpy(variable).copy() for variable in layer.variables]
    assert handlers_inferred.infer(node, tfprune.handlers.ELEMENTWISE) == (
        None, "it holds state that running it would change"
    )
    for variable, value in zip(layer.variables, state):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
