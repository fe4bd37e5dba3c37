"""The channel-coupling audit: which operations let a channel go on its own.

Every registered handler and every Keras activation is checked in a model
`input -> Dense "first" -> producer -> operation -> Dense "consumer"`:

- an operation that computes each channel alone keeps the producer's group
  prunable, and removing provably dead channels (zero producer filters and
  zero consumer rows) leaves the outputs unchanged to float tolerance;
- an operation that couples channels (a softmax, normalisation or reduction
  over the channel axis, as a layer, an `activation=` or a `keras.ops` call)
  freezes the group: surgery refuses it, `prune` keeps every channel of it
  and the outputs do not change; with the freeze switched off, removing
  channels that no layer reads would change the kept values, which is why
  the freeze is there.

`test_every_registered_handler_is_audited` fails when a handler is added
without a case here.
"""

import keras
import numpy as np
import pytest
from surgery_helpers import kill_channels, outputs, random_weights
from test_handlers_inferred import COLOUR_LAYERS, PER_CHANNEL_LAYERS

import tfprune
from tfprune import handlers, handlers_decoders, handlers_rwkv

# keras.applications has no public name for these layers.
from keras.src.applications.convnext import LayerScale  # noqa: E402  isort: skip
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer  # noqa: E402  isort: skip

layers = keras.layers
ops = keras.ops
TOLERANCE = 1e-5
DEAD = (1, 4)  # channels of the producer's group (6 channels) killed by the tests
FIRST_DEAD = (0, 3)  # channels of the "first" group (5 channels), always independent


def build(operation, spatial=2, producer=None):
    inputs = keras.Input((4,) * spatial + (3,), name="image")
    x = layers.Dense(5, name="first")(inputs)
    x = (producer or layers.Dense(6, name="producer"))(x)
    if isinstance(operation, keras.layers.Layer):  # the tables hold one instance per case: copy it
        operation = operation.__class__.from_config(operation.get_config())
    x = operation(x)
    return random_weights(keras.Model(inputs, layers.Dense(4, name="consumer")(x)))


def kill(model, group, channels, roles=("output", "param", "input")):
    """Kills `channels` at their producers and at every layer that reads them."""
    kill_channels(model, group, channels, roles)


def sample(model):
    return np.random.default_rng(1).normal(size=(3, *model.input_shape[1:])).astype("float32")


def assert_independent(model):
    """The producer's group is prunable and its dead channels go without a trace."""
    graph = tfprune.graph.build(model)
    group = graph["producer"]
    assert group.prunable, group.reason
    kill(model, group, DEAD)
    kill(model, graph["first"], FIRST_DEAD)
    small = tfprune.surgery.remove_channels(model, {"producer": list(DEAD), "first": list(FIRST_DEAD)})
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=TOLERANCE, rtol=TOLERANCE)
    assert small.count_params() < model.count_params()


def assert_coupled(model, reason):
    """The producer's group is frozen: surgery refuses it, prune keeps it, outputs stay."""
    graph = tfprune.graph.build(model)
    group = graph["producer"]
    assert not group.prunable
    assert reason in group.reason
    if group.normalized_by:  # a hidden width: refused by prune below, removed when named
        named = tfprune.surgery.remove_channels(model, {"producer": list(DEAD)})
        assert all(weight.shape[-1] == group.size - len(DEAD) for weight in named.get_layer("op").weights)
    else:
        with pytest.raises(ValueError, match="Group 'producer' is not prunable"):
            tfprune.surgery.remove_channels(model, {"producer": list(DEAD)})
    kill(model, graph["first"], FIRST_DEAD)
    small, result = tfprune.prune(model, "l1", threshold=0.0, round_to=1)
    assert result.widths_after == {"first": 3}  # the frozen group was not even a candidate
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=TOLERANCE, rtol=TOLERANCE)


def assert_removal_would_change_outputs(model):
    """With the freeze off, removing channels no layer reads still moves the outputs."""
    group = tfprune.graph.build(model)["producer"]
    assert group.prunable  # the caller switched the freeze off
    kill(model, group, DEAD, roles=("input",))  # nobody reads them; the producer still writes them
    small = tfprune.surgery.remove_channels(model, {"producer": list(DEAD)})
    x = sample(model)
    assert np.max(np.abs(outputs(small, x) - outputs(model, x))) > 1e-3


# Activations: every name Keras knows, as an `Activation` layer and as `activation=`.

ELEMENTWISE_ACTIVATIONS = [  # `threshold` needs arguments a string activation cannot give
    name
    for name in handlers._ELEMENTWISE_ACTIVATIONS
    if name != "threshold" and keras.activations.get(name) in handlers._ELEMENTWISE_FUNCTIONS
]
# Keras cannot build a model with activation="glu" (the layer's symbolic output
# keeps the channel count that glu halves); `keras.ops.glu` is audited below.
MIXING_ACTIVATIONS = [name for name in handlers._CHANNEL_MIXING_ACTIVATIONS if name != "glu"]
SHAPE_PRESERVING_MIXING = ("softmax", "log_softmax")


def test_the_activation_tables_cover_every_keras_activation():
    from keras.src.activations import ALL_OBJECTS_DICT  # no public list of activation names exists

    known = set(handlers._ELEMENTWISE_ACTIVATIONS) | set(handlers._CHANNEL_MIXING_ACTIVATIONS)
    assert set(ALL_OBJECTS_DICT) <= known
    assert not set(handlers._ELEMENTWISE_ACTIVATIONS) & set(handlers._CHANNEL_MIXING_ACTIVATIONS)


@pytest.mark.parametrize("name", ELEMENTWISE_ACTIVATIONS)
def test_elementwise_activation_layer_keeps_channels_independent(name):
    assert_independent(build(layers.Activation(name, name="act")))


@pytest.mark.parametrize("name", ELEMENTWISE_ACTIVATIONS)
def test_elementwise_activation_argument_keeps_channels_independent(name):
    assert_independent(build(lambda x: x, producer=layers.Dense(6, activation=name, name="producer")))


@pytest.mark.parametrize("name", MIXING_ACTIVATIONS)
def test_channel_mixing_activation_layer_freezes_the_group(name):
    assert_coupled(build(layers.Activation(name, name="act")), f"'act' applies activation '{name}'")


@pytest.mark.parametrize("name", MIXING_ACTIVATIONS)
def test_channel_mixing_activation_argument_freezes_the_group(name):
    model = build(lambda x: x, producer=layers.Dense(6, activation=name, name="producer"))
    assert_coupled(model, f"'producer' applies activation '{name}' over the channel axis")


@pytest.mark.parametrize("name", SHAPE_PRESERVING_MIXING)
def test_without_the_freeze_a_mixing_activation_would_change_kept_values(name, monkeypatch):
    layer_model = build(layers.Activation(name, name="act"))
    argument_model = build(lambda x: x, producer=layers.Dense(6, activation=name, name="producer"))
    monkeypatch.setattr(handlers, "channel_mixing_activation", lambda layer: None)
    assert_removal_would_change_outputs(layer_model)
    assert_removal_would_change_outputs(argument_model)


@keras.saving.register_keras_serializable(package="tfprune_tests")
def doubled(x):
    return x * 2.0


@keras.saving.register_keras_serializable(package="tfprune_tests")
def centred(x):
    return x - keras.ops.mean(x, axis=-1, keepdims=True)


def test_an_unknown_activation_function_is_checked_numerically_then_registered(monkeypatch):
    # `doubled` acts on each channel alone: established numerically, prunable.
    assert_independent(build(lambda x: x, producer=layers.Dense(6, activation=doubled, name="producer")))
    # `centred` subtracts the mean over the channels: frozen, saying which check failed.
    model = build(lambda x: x, producer=layers.Dense(6, activation=centred, name="producer"))
    assert_coupled(model, "applies activation 'centred', which tfprune does not know to act on each channel alone")
    reason = tfprune.graph.build(model)["producer"].reason
    assert "changes other output channels; if it does: `tfprune.graph.register_activation(centred)`)" in reason
    monkeypatch.setattr(handlers, "_ELEMENTWISE_FUNCTIONS", dict(handlers._ELEMENTWISE_FUNCTIONS))
    monkeypatch.setattr(handlers, "_MIXING_FUNCTIONS", dict(handlers._MIXING_FUNCTIONS))
    tfprune.graph.register_activation(doubled, mixes_channels=True)  # a registration wins over the check
    model = build(lambda x: x, producer=layers.Dense(6, activation=doubled, name="producer"))
    assert_coupled(model, "'producer' applies activation 'doubled' over the channel axis")
    tfprune.graph.register_activation(doubled)
    assert_independent(build(lambda x: x, producer=layers.Dense(6, activation=doubled, name="producer")))
    with pytest.raises(TypeError, match=r"expects the activation function itself.*function='doubled'"):
        tfprune.graph.register_activation("doubled")


# Every producer class, with an elementwise and with a channel-mixing activation.

PRODUCERS = {
    layers.Conv1D: (1, lambda **kw: layers.Conv1D(6, 1, name="producer", **kw)),
    layers.Conv2D: (2, lambda **kw: layers.Conv2D(6, 3, padding="same", name="producer", **kw)),
    layers.Conv3D: (3, lambda **kw: layers.Conv3D(6, 1, name="producer", **kw)),
    layers.Conv1DTranspose: (1, lambda **kw: layers.Conv1DTranspose(6, 2, name="producer", **kw)),
    layers.Conv2DTranspose: (2, lambda **kw: layers.Conv2DTranspose(6, 2, name="producer", **kw)),
    layers.Conv3DTranspose: (3, lambda **kw: layers.Conv3DTranspose(6, 1, name="producer", **kw)),
    layers.Dense: (1, lambda **kw: layers.Dense(6, name="producer", **kw)),
    layers.EinsumDense: (2, lambda **kw: layers.EinsumDense("...c,cd->...d", output_shape=6, bias_axes="d",
                                                           name="producer", **kw)),
    layers.SeparableConv1D: (1, lambda **kw: layers.SeparableConv1D(6, 3, padding="same", name="producer", **kw)),
    layers.SeparableConv2D: (2, lambda **kw: layers.SeparableConv2D(6, 3, padding="same", name="producer", **kw)),
}
# Depthwise convs do not make channels: they sit between the producer and the consumer.
DEPTHWISE = {
    layers.DepthwiseConv1D: (1, lambda **kw: layers.DepthwiseConv1D(3, padding="same", name="depthwise", **kw)),
    layers.DepthwiseConv2D: (2, lambda **kw: layers.DepthwiseConv2D(3, padding="same", name="depthwise", **kw)),
}


@pytest.mark.parametrize("layer_class", list(PRODUCERS), ids=lambda cls: cls.__name__)
def test_every_producer_with_elementwise_activation_is_independent(layer_class):
    spatial, make = PRODUCERS[layer_class]
    assert_independent(build(lambda x: x, spatial, producer=make(activation="relu")))


@pytest.mark.parametrize("layer_class", list(PRODUCERS), ids=lambda cls: cls.__name__)
def test_every_producer_with_softmax_activation_is_frozen(layer_class):
    spatial, make = PRODUCERS[layer_class]
    model = build(lambda x: x, spatial, producer=make(activation="softmax"))
    assert_coupled(model, "'producer' applies activation 'softmax'")


@pytest.mark.parametrize("layer_class", list(DEPTHWISE), ids=lambda cls: cls.__name__)
def test_depthwise_with_elementwise_or_mixing_activation(layer_class):
    spatial, make = DEPTHWISE[layer_class]
    assert_independent(build(make(activation="relu6"), spatial))
    assert_coupled(build(make(activation="softmax"), spatial), "'depthwise' applies activation 'softmax'")
    assert_coupled(build(make(activation="log_softmax"), spatial), "'depthwise' applies activation 'log_softmax'")


def test_grouped_convolution_with_one_channel_per_group_is_depthwise():
    # keras-hub's MobileNet writes its depthwise convolutions as Conv2D(C, groups=C).
    grouped = layers.Conv2D(6, 3, padding="same", groups=6, name="depthwise")
    assert_independent(build(grouped))
    small = tfprune.surgery.remove_channels(build(grouped), {"producer": list(DEAD)})
    assert small.get_layer("depthwise").groups == small.get_layer("depthwise").filters == 6 - len(DEAD)


def test_grouped_convolution_with_several_channels_per_group_stays_frozen():
    assert_coupled(build(layers.Conv2D(6, 3, padding="same", groups=3, name="op")), "grouped convolution (groups=3)")


# Layers and operations between the producer and the consumer: (handler key,
# spatial rank, operation). Keys are layer classes or operation class names.

INDEPENDENT = [
    (layers.ReLU, 2, layers.ReLU()),
    (layers.LeakyReLU, 2, layers.LeakyReLU(0.2)),
    (layers.ELU, 2, layers.ELU()),
    (layers.PReLU, 2, layers.PReLU()),
    (layers.BatchNormalization, 2, layers.BatchNormalization()),
    (layers.Dropout, 2, layers.Dropout(0.5)),
    (layers.SpatialDropout1D, 1, layers.SpatialDropout1D(0.5)),
    (layers.SpatialDropout2D, 2, layers.SpatialDropout2D(0.5)),
    (layers.SpatialDropout3D, 3, layers.SpatialDropout3D(0.5)),
    (layers.GaussianNoise, 2, layers.GaussianNoise(0.5)),
    (layers.GaussianDropout, 2, layers.GaussianDropout(0.5)),
    (layers.AlphaDropout, 2, layers.AlphaDropout(0.5)),
    (layers.ActivityRegularization, 2, layers.ActivityRegularization(l1=0.1)),
    (layers.Identity, 2, layers.Identity()),
    (layers.ZeroPadding1D, 1, layers.ZeroPadding1D(1)),
    (layers.ZeroPadding2D, 2, layers.ZeroPadding2D(1)),
    (layers.ZeroPadding3D, 3, layers.ZeroPadding3D(1)),
    (layers.Cropping1D, 1, layers.Cropping1D(1)),
    (layers.Cropping2D, 2, layers.Cropping2D(1)),
    (layers.Cropping3D, 3, layers.Cropping3D(1)),
    (layers.UpSampling1D, 1, layers.UpSampling1D(2)),
    (layers.UpSampling2D, 2, layers.UpSampling2D(2)),
    (layers.UpSampling3D, 3, layers.UpSampling3D(2)),
    (layers.MaxPooling1D, 1, layers.MaxPooling1D(2)),
    (layers.MaxPooling2D, 2, layers.MaxPooling2D(2)),
    (layers.MaxPooling3D, 3, layers.MaxPooling3D(2)),
    (layers.AveragePooling1D, 1, layers.AveragePooling1D(2)),
    (layers.AveragePooling2D, 2, layers.AveragePooling2D(2)),
    (layers.AveragePooling3D, 3, layers.AveragePooling3D(2)),
    (layers.GlobalAveragePooling1D, 1, layers.GlobalAveragePooling1D()),
    (layers.GlobalAveragePooling2D, 2, layers.GlobalAveragePooling2D()),
    (layers.GlobalAveragePooling3D, 3, layers.GlobalAveragePooling3D()),
    (layers.GlobalMaxPooling1D, 1, layers.GlobalMaxPooling1D()),
    (layers.GlobalMaxPooling2D, 2, layers.GlobalMaxPooling2D()),
    (layers.GlobalMaxPooling3D, 3, layers.GlobalMaxPooling3D()),
    (layers.Flatten, 2, layers.Flatten()),
    (layers.Reshape, 2, layers.Reshape((16, 6))),
    (layers.Rescaling, 2, layers.Rescaling(0.5, offset=0.1)),
    (layers.Softmax, 2, layers.Softmax(axis=[1, 2])),
    (layers.LayerNormalization, 2, layers.LayerNormalization(axis=[1, 2])),
    (layers.UnitNormalization, 2, layers.UnitNormalization(axis=1)),
    (layers.Add, 2, lambda x: layers.Add()([x, layers.ReLU()(x)])),
    (layers.Subtract, 2, lambda x: layers.Subtract()([x, layers.ReLU()(x)])),
    (layers.Multiply, 2, lambda x: layers.Multiply()([x, layers.ReLU()(x)])),
    (layers.Maximum, 2, lambda x: layers.Maximum()([x, layers.ReLU()(x)])),
    (layers.Minimum, 2, lambda x: layers.Minimum()([x, layers.ReLU()(x)])),
    (layers.Average, 2, lambda x: layers.Average()([x, layers.ReLU()(x)])),
    (layers.Concatenate, 2, lambda x: layers.Concatenate()([x, layers.ReLU()(x)])),
    # keras.applications' private layers (ConvNeXt, InceptionResNetV2): x * gamma, x + r * scale
    (LayerScale, 2, lambda x: LayerScale(0.5, 6)(x)),
    (CustomScaleLayer, 2, lambda x: CustomScaleLayer(0.5)([x, layers.ReLU()(x)])),
    ("Concatenate", 2, lambda x: ops.concatenate([x, ops.relu(x)], axis=1)),
    # keras-hub's ResNetV2 pads spatially with ops.pad; CSPNet splits with ops.split.
    ("Pad", 2, lambda x: ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])),
    ("Repeat", 2, lambda x: ops.repeat(x, 2, axis=1)),  # a spatial axis repeated: channels pass
    ("ZerosLike", 2, lambda x: x + ops.zeros_like(x)),
    ("Split", 2, lambda x: ops.concatenate(ops.split(x, 2, axis=1)[::-1], axis=1)),
    ("Relu", 2, ops.relu),
    ("Relu6", 2, ops.relu6),
    ("Sigmoid", 2, ops.sigmoid),
    ("HardSigmoid", 2, ops.hard_sigmoid),
    ("HardSilu", 2, ops.hard_silu),
    ("Silu", 2, ops.silu),
    ("Gelu", 2, ops.gelu),
    ("Elu", 2, ops.elu),
    ("Selu", 2, ops.selu),
    ("Celu", 2, ops.celu),
    ("LeakyRelu", 2, ops.leaky_relu),
    ("Softplus", 2, ops.softplus),
    ("Softsign", 2, ops.softsign),
    ("Tanh", 2, ops.tanh),
    ("TanhShrink", 2, ops.tanh_shrink),
    ("HardTanh", 2, ops.hard_tanh),
    ("SoftShrink", 2, ops.soft_shrink),
    ("HardShrink", 2, ops.hard_shrink),
    ("LogSigmoid", 2, ops.log_sigmoid),
    ("Squareplus", 2, ops.squareplus),
    ("SparsePlus", 2, ops.sparse_plus),
    ("SparseSigmoid", 2, ops.sparse_sigmoid),
    ("Threshold", 2, lambda x: ops.threshold(x, 0.1, 0.0)),
    ("Exp", 2, ops.exp),
    ("Expm1", 2, ops.expm1),
    ("Log", 2, lambda x: ops.log(ops.square(x) + 1.0)),
    ("Log1p", 2, lambda x: ops.log1p(ops.abs(x))),
    ("Abs", 2, ops.abs),
    ("Absolute", 2, ops.absolute),
    ("Negative", 2, ops.negative),
    ("Square", 2, ops.square),
    ("Sqrt", 2, lambda x: ops.sqrt(ops.abs(x))),
    ("Rsqrt", 2, lambda x: ops.rsqrt(ops.abs(x) + 1.0)),
    ("Reciprocal", 2, lambda x: ops.reciprocal(ops.abs(x) + 1.0)),
    ("Cast", 2, lambda x: ops.cast(x, "float32")),
    ("Clip", 2, lambda x: ops.clip(x, -0.5, 0.5)),
    ("Add", 2, lambda x: x + 3.0),
    ("Subtract", 2, lambda x: x - ops.relu(x)),
    ("Multiply", 2, lambda x: x * ops.sigmoid(x)),
    ("Divide", 2, lambda x: ops.divide(x, 2.0)),
    ("TrueDivide", 2, lambda x: ops.true_divide(x, 2.0)),
    ("Maximum", 2, lambda x: ops.maximum(x, 0.1)),
    ("Minimum", 2, lambda x: ops.minimum(x, 0.1)),
    ("Power", 2, lambda x: ops.power(x, 2.0)),
    ("ExpandDims", 2, lambda x: ops.expand_dims(x, 1)),
    ("Squeeze", 2, lambda x: ops.squeeze(x[:, :1], 1)),
    ("ReLU", 2, lambda x: keras.activations.relu(x, negative_slope=0.1)),  # an activation called as a function
    ("Sin", 2, ops.sin),
    ("Cos", 2, ops.cos),
    ("Tan", 2, lambda x: ops.tan(ops.tanh(x))),
    ("Sinh", 2, ops.sinh),
    ("Cosh", 2, ops.cosh),
    ("Arcsin", 2, lambda x: ops.arcsin(ops.tanh(x))),
    ("Arccos", 2, lambda x: ops.arccos(ops.tanh(x))),
    ("Arctan", 2, ops.arctan),
    ("Arcsinh", 2, ops.arcsinh),
    ("Arccosh", 2, lambda x: ops.arccosh(ops.abs(x) + 1.0)),
    ("Arctanh", 2, lambda x: ops.arctanh(ops.tanh(x) * 0.5)),
    ("Erf", 2, ops.erf),
    ("Erfinv", 2, lambda x: ops.erfinv(ops.tanh(x) * 0.5)),
    ("Sign", 2, ops.sign),
    ("Floor", 2, ops.floor),
    ("Ceil", 2, ops.ceil),
    ("Round", 2, ops.round),
    ("Trunc", 2, ops.trunc),
    ("Exp2", 2, ops.exp2),
    ("Log2", 2, lambda x: ops.log2(ops.abs(x) + 1.0)),
    ("Log10", 2, lambda x: ops.log10(ops.abs(x) + 1.0)),
    ("IsNan", 2, lambda x: x * ops.cast(ops.isnan(x), "float32")),
    ("IsInf", 2, lambda x: x * ops.cast(ops.isinf(x), "float32")),
    ("IsFinite", 2, lambda x: x * ops.cast(ops.isfinite(x), "float32")),
    ("NanToNum", 2, ops.nan_to_num),
    ("Real", 2, ops.real),
    ("Imag", 2, lambda x: x + ops.imag(x)),
    ("Conjugate", 2, ops.conjugate),
    ("FloorDivide", 2, lambda x: ops.floor_divide(x, 0.5)),
    ("Mod", 2, lambda x: ops.mod(x, 0.5)),
    ("Arctan2", 2, lambda x: ops.arctan2(x, 1.0)),
    ("Logaddexp", 2, lambda x: ops.logaddexp(x, 0.0)),
    ("Where", 2, lambda x: ops.where(x > 0, x, 0.1 * x)),
    ("Transpose", 2, lambda x: ops.transpose(x, (0, 2, 1, 3))),
    # Tokens to an image and back, with the width written out (the surgery rewrites it).
    ("Reshape", 2, lambda x: ops.reshape(ops.reshape(x, (-1, 16, 6)), (-1, 4, 4, 6))),
    (layers.Permute, 2, layers.Permute((2, 1, 3))),
    # Comparisons and logic (a padding mask from token ids), cast back to numbers.
    ("Equal", 2, lambda x: ops.cast(ops.equal(x, 0.5), "float32")),
    ("NotEqual", 2, lambda x: ops.cast(ops.not_equal(x, 0.0), "float32")),
    ("Less", 2, lambda x: ops.cast(ops.less(x, 0.5), "float32")),
    ("LessEqual", 2, lambda x: ops.cast(ops.less_equal(x, 0.5), "float32")),
    ("Greater", 2, lambda x: ops.cast(ops.greater(x, 0.5), "float32")),
    ("GreaterEqual", 2, lambda x: ops.cast(ops.greater_equal(x, 0.5), "float32")),
    ("LogicalAnd", 2, lambda x: ops.cast(ops.logical_and(x > 0.0, x < 1.0), "float32")),
    ("LogicalOr", 2, lambda x: ops.cast(ops.logical_or(x > 1.0, x < -1.0), "float32")),
    ("LogicalNot", 2, lambda x: ops.cast(ops.logical_not(x > 0.0), "float32")),
    ("Softmax", 2, lambda x: ops.softmax(x, axis=1)),
    ("LogSoftmax", 2, lambda x: ops.log_softmax(x, axis=1)),
    ("Sparsemax", 2, lambda x: ops.sparsemax(x, axis=1)),
    ("Normalize", 2, lambda x: ops.normalize(x, axis=1)),
    ("Sum", 2, lambda x: ops.sum(x, axis=[1, 2])),
    ("Mean", 2, lambda x: ops.mean(x, axis=[1, 2])),
    ("Max", 2, lambda x: ops.max(x, axis=1)),
    ("Min", 2, lambda x: ops.min(x, axis=1, keepdims=True)),
    ("Amax", 2, lambda x: ops.amax(x, axis=1)),
    ("Amin", 2, lambda x: ops.amin(x, axis=1)),
    ("Prod", 2, lambda x: ops.prod(x, axis=1)),
    ("Var", 2, lambda x: ops.var(x, axis=1)),
    ("Std", 2, lambda x: ops.std(x, axis=1)),
    ("Norm", 2, lambda x: ops.norm(x, axis=1)),
    ("Logsumexp", 2, lambda x: ops.logsumexp(x, axis=1)),
    ("Cumsum", 2, lambda x: ops.cumsum(x, axis=1)),
    ("Cumprod", 2, lambda x: ops.cumprod(x, axis=1)),
    ("Sort", 2, lambda x: ops.sort(x, axis=1)),
    ("Any", 2, lambda x: ops.cast(ops.any(x, axis=1), "float32")),
    ("All", 2, lambda x: ops.cast(ops.all(x, axis=1), "float32")),
    ("Argmax", 2, lambda x: ops.cast(ops.argmax(x, axis=1), "float32")),
    ("Argmin", 2, lambda x: ops.cast(ops.argmin(x, axis=1), "float32")),
]

# (handler key, operation, words of the freeze reason, whether it keeps the channel count)
COUPLED = [
    (layers.Softmax, layers.Softmax(name="op"), "normalises over the channel axis", True),
    (layers.LayerNormalization, layers.LayerNormalization(name="op"), "normalises over its channels", True),
    (layers.RMSNormalization, layers.RMSNormalization(name="op"), "normalises over its channels", True),
    (layers.UnitNormalization, layers.UnitNormalization(name="op"), "normalises over the channel axis", True),
    (layers.BatchNormalization, layers.BatchNormalization(axis=1, name="op"), "works over axes 1", False),
    (layers.Normalization, layers.Normalization(mean=0.0, variance=1.0, name="op"), "per-channel statistics", False),
    (layers.GroupNormalization, layers.GroupNormalization(groups=2, name="op"), "ties channels into groups", False),
    ("Softmax", lambda x: ops.softmax(x), "normalises over the channel axis", True),
    ("Repeat", lambda x: ops.repeat(x, 2, axis=-1), "repeats the channel axis", False),
    ("LogSoftmax", lambda x: ops.log_softmax(x), "normalises over the channel axis", True),
    ("Sparsemax", lambda x: ops.sparsemax(x), "normalises over the channel axis", False),
    ("Normalize", lambda x: ops.normalize(x), "normalises over the channel axis", True),
    ("LayerNorm", lambda x: ops.layer_normalization(x), "normalises over the channel axis", True),
    ("RMSNorm", lambda x: ops.rms_normalization(x), "normalises over the channel axis", True),
    ("Glu", lambda x: ops.glu(x), "splits over the channel axis", False),
    ("Sum", lambda x: x / (ops.sum(ops.abs(x), axis=-1, keepdims=True) + 1.0), "reduces over the channel axis", True),
    ("Mean", lambda x: x - ops.mean(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Max", lambda x: x - ops.max(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Min", lambda x: x - ops.min(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Amax", lambda x: x - ops.amax(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Amin", lambda x: x - ops.amin(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Prod", lambda x: x * ops.prod(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Var", lambda x: x / ops.var(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Std", lambda x: x / ops.std(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Norm", lambda x: x / ops.norm(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Logsumexp", lambda x: x - ops.logsumexp(x, axis=-1, keepdims=True), "reduces over the channel axis", True),
    ("Sum", lambda x: x * ops.sum(x), "reduces over the channel axis", False),  # axis=None: every axis
    ("Any", lambda x: x * ops.cast(ops.any(x, axis=-1, keepdims=True), "float32"), "reduces", False),
    ("All", lambda x: x * ops.cast(ops.all(x, axis=-1, keepdims=True), "float32"), "reduces", False),
    ("Argmax", lambda x: x * ops.cast(ops.argmax(x, axis=-1, keepdims=True), "float32"), "reduces", False),
    ("Argmin", lambda x: x * ops.cast(ops.argmin(x, axis=-1, keepdims=True), "float32"), "reduces", False),
    ("Cumsum", lambda x: ops.cumsum(x, axis=-1), "orders or accumulates over the channel axis", True),
    ("Cumprod", lambda x: ops.cumprod(x, axis=-1), "orders or accumulates over the channel axis", True),
    ("Sort", lambda x: ops.sort(x, axis=-1), "orders or accumulates over the channel axis", True),
    ("Pad", lambda x: ops.pad(x, [[0, 0], [0, 0], [0, 0], [1, 1]]), "pads the channel axis", False),
    ("ExpandDims", lambda x: ops.expand_dims(x, -1), "adds the last axis", False),
    ("Split", lambda x: ops.concatenate(ops.split(x, [2], axis=-1)[::-1], axis=-1),
     "splits the channel axis into fixed pieces", False),
    ("Multiply", lambda x: x * np.arange(1.0, 7.0, dtype="float32"), "uses a constant with one value per channel", False),
    (layers.Rescaling, layers.Rescaling(np.arange(1.0, 7.0)), "rescales with one value per channel", False),
    (layers.Reshape, layers.Reshape((4, 4, 2, 3)), "reshapes channels into several axes", False),
    ("Transpose", lambda x: ops.transpose(x, (0, 1, 3, 2)), "moves the channel axis", False),
    ("Matmul", lambda x: ops.matmul(x, np.ones((6, 3), "float32")), "multiplies by a constant matrix", False),
    (layers.Permute, layers.Permute((1, 3, 2)), "moves the channel axis", False),
]


def _key_name(key):
    return key if isinstance(key, str) else key.__name__


# Keras 3.15 on JAX cannot run ops.norm(x, axis=...) in a functional model at all (it
# hands the axis to jax.jit as a list: "Non-hashable static arguments are not supported").
_KERAS_CANNOT_RUN = {"Norm"} if keras.backend.backend() == "jax" else set()


def _cases(cases, values, keep=lambda case: True):
    """pytest params `values(case)`, ids `name-index`, skipping what Keras itself cannot run here."""
    return [
        pytest.param(
            *values(case), id=f"{_key_name(case[0])}-{index}",
            marks=[pytest.mark.skip(reason="Keras on JAX cannot run ops.norm with an axis in a functional model")]
            if _key_name(case[0]) in _KERAS_CANNOT_RUN else [],
        )
        for index, case in enumerate(cases)
        if keep(case)
    ]  # fmt: skip


@pytest.mark.parametrize("spatial, operation", _cases(INDEPENDENT, lambda case: case[1:]))
def test_per_channel_operation_lets_dead_channels_go(spatial, operation):
    assert_independent(build(operation, spatial))


@pytest.mark.parametrize("operation, reason", _cases(COUPLED, lambda case: case[1:3]))
def test_channel_coupling_operation_freezes_the_group(operation, reason):
    assert_coupled(build(operation), reason)


@pytest.mark.parametrize("key, operation", _cases(COUPLED, lambda case: case[:2], keep=lambda case: case[3]))
def test_without_the_freeze_a_coupling_operation_would_change_kept_values(key, operation, monkeypatch):
    # What the handler would be if the operation acted per channel: weights (a
    # LayerNormalization's gamma) sliced with the channels, or a plain pass-through.
    handler = handlers._PerChannel() if isinstance(key, type) else tfprune.graph.Preserve()
    monkeypatch.setitem(handlers._HANDLERS, key, handler)
    assert_removal_would_change_outputs(build(operation))


def test_every_registered_handler_is_audited():
    audited = {case[0] for case in INDEPENDENT} | {case[0] for case in COUPLED}
    audited |= set(PRODUCERS) | set(DEPTHWISE) | {layers.Activation}
    # Attention heads, token embeddings and class-token slices: tests/test_attention.py
    audited |= {layers.MultiHeadAttention, layers.Embedding, layers.ReversibleEmbedding, "GetItem"}
    # Preprocessing and augmentation layers: tests/test_handlers_inferred.py
    audited |= {getattr(layers, name) for name in (*PER_CHANNEL_LAYERS, *COLOUR_LAYERS)}
    audited |= {"Matmul", "DotProductAttention"}  # with two tensors: tests/test_handlers_inferred.py
    audited |= {"Einsum", "Stack", "Tile", "TopK", "Map"}  # tests/test_handlers_ops.py
    audited |= {"Take", "Unstack", tfprune.layers.Weight}  # tests/test_layer_copies.py
    # Decoder language models: tests/test_decoders.py.
    audited |= {"SizeRange", "BroadcastToSizes", "DenseMultiply", layers.GroupQueryAttention}
    audited |= {cls for cls in handlers_decoders._EXPLICIT_CLASSES.values() if cls is not None}
    audited |= {cls for cls in handlers_rwkv._CLASSES.values() if cls is not None}  # tests/test_rwkv.py
    # Sizes read when the model runs: tests/test_multimodal_decoders.py, test_handlers_diffusion.py, test_gemma.py.
    audited |= {"PadToSizes", "SliceToSizes", "ReshapeToSizes"}
    assert set(handlers._HANDLERS) - audited == set()


def test_per_channel_bounds_held_by_the_operation_freeze_the_group():
    # `keras.ops.clip` keeps its bounds as attributes, not call arguments (and
    # Keras cannot clone such a model, so only the graph is checked).
    model = build(lambda x: ops.clip(x, -np.ones(6, "float32"), np.ones(6, "float32")))
    group = tfprune.graph.build(model)["producer"]
    assert not group.prunable
    assert "uses a constant with one value per channel" in group.reason


def test_handlers_docstring_examples_run():
    import doctest

    results = doctest.testmod(handlers, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted >= 2 and results.failed == 0


def test_squeezing_the_channel_axis_freezes_it():
    inputs = keras.Input((4, 3), name="image")
    x = layers.Dense(1, name="one")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="consumer")(ops.squeeze(x, -1)))
    group = tfprune.graph.build(model)["one"]
    assert not group.prunable and "removes the last axis" in group.reason


def test_split_into_equal_sections_removes_the_same_channel_from_every_section():
    # CSPNet: `ops.split(x, 2)` over channels. Channel j of each half is one channel of
    # the group, so the halves stay equal and the split call is unchanged.
    def halves(x):
        first, second = ops.split(x, 2, axis=-1)
        return ops.concatenate([first * 2.0, second], axis=-1)

    model = build(halves)
    group = tfprune.graph.build(model)["producer"]
    assert group.prunable and group.size == 3, group.reason
    kill(model, group, (1,))
    small = tfprune.surgery.remove_channels(model, {"producer": [1]})
    assert small.get_layer("producer").units == 4 and small.get_layer("consumer").kernel.shape == (4, 4)
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=TOLERANCE, rtol=TOLERANCE)
