"""Handlers: how channels flow through each kind of layer or operation.

A `Handler` is given one call node of an operation and a `Tracer`; it says
which channel ids come out of the call and which weight axes they index.
`tfprune.graph.build` looks handlers up in a registry that users extend with
`register_handler` (layers by exact class, non-layer operations such as the
`Add` that `x + 3.0` records by class name). This module is the public face
of the handlers and registers the built-in ones for Keras layers and
`keras.ops` operations (at the bottom). It holds the handlers of the layers
that apply an `activation` (convolutions, Dense, EinsumDense, `Activation`)
and the activation tables they consult; the others live in:

- `tfprune.tracer`: the `Tracer` handlers write to;
- `tfprune.handlers_base`: `Handler`, `Freeze`, `Preserve` and the registry;
- `tfprune.handlers_layers`: layers keeping channels in place (per-channel
  weights, elementwise, normalisation, embeddings);
- `tfprune.handlers_operations`: reshapes, transposes, products, slices;
- `tfprune.handlers_attention`: `MultiHeadAttention` and `dot_product_attention`.

keras-hub families have modules of their own (`tfprune.handlers_keras_hub`,
`handlers_decoders`, ...), which register their handlers by class name.
"""

import keras
import numpy as np

from tfprune import layers as _tfprune_layers
from tfprune._keras import hub
from tfprune.handlers_attention import _DotProductAttention, _MultiHeadAttention, attention_inputs  # noqa: F401
from tfprune.handlers_base import (  # noqa: F401  (re-exported: the registry's names)
    _BY_CLASS_NAME,
    _HANDLERS,
    _TRAINING_LAYER,
    INPUT,
    Freeze,
    Handler,
    Preserve,
    _width,
    handler_for,
    register_by_class_name,
    register_handler,
)
from tfprune.handlers_layers import (  # noqa: F401
    _application_handlers,
    _Concatenate,
    _Elementwise,
    _Embedding,
    _LayerScale,
    _Normalization,
    _OverAxis,
    _PerChannel,
    _Rescaling,
    _ReversibleEmbedding,
    _Weight,
)
from tfprune.handlers_operations import (
    _AxisInsertOrRemove,
    _Einsum,
    _GetItem,
    _Map,
    _Matmul,
    _Pad,
    _Permute,
    _Reshape,
    _ReshapeOperation,
    _Split,
    _Stack,
    _Take,
    _Tile,
    _TopK,
    _Unstack,
)
from tfprune.tracer import ROLES, ChannelMismatchError, Tracer

__all__ = [
    "ROLES",
    "ChannelMismatchError",
    "Freeze",
    "Handler",
    "Preserve",
    "Tracer",
    "channel_mixing_activation",
    "handler_for",
    "register_by_class_name",
    "register_activation",
    "register_handler",
]


# Activations (keras.activations names) that map channel `c` to channel `c`
# alone. The ones in _CHANNEL_MIXING_ACTIVATIONS normalise over (softmax,
# log_softmax, sparsemax) or split (glu) the channel axis: removing a channel,
# even a dead one, changes the values of the others.
_ELEMENTWISE_ACTIVATIONS = (
    "celu elu exponential gelu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh "
    "leaky_relu linear log_sigmoid mish relu relu6 selu sigmoid silu soft_shrink softplus "
    "softsign sparse_plus sparse_sigmoid squareplus swish tanh tanh_shrink threshold"
).split()
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax", "sparsemax", "glu")


def _activation_names(names):
    functions = {}
    for name in names:
        try:
            functions[keras.activations.get(name)] = name
        except ValueError:  # a name this Keras version does not have
            continue
    return functions


_ELEMENTWISE_FUNCTIONS = _activation_names(_ELEMENTWISE_ACTIVATIONS)
_MIXING_FUNCTIONS = _activation_names(_CHANNEL_MIXING_ACTIVATIONS)


# Element-wise activations of libraries tfprune does not import, by (module, name):
# keras-hub's BERT-family models use `gelu(x, approximate=True)` under this name.
_LIBRARY_ELEMENTWISE = {(hub.utils_module("keras_utils"), "gelu_approximate")}


def channel_mixing_activation(layer):
    """Why `layer`'s `activation` couples its output channels, or None.

    Args:
        layer: A Keras layer; layers without an `activation` attribute pass.

    Returns:
        None when the activation acts on each channel alone (relu, swish, ...
        or no activation), else a reason for `Freeze`: the activation mixes
        channels (softmax, log_softmax, sparsemax, glu), or it is a function
        tfprune does not know (it might).

    Example:

    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation="relu")) is None
    True
    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation="softmax", name="probs"))
    "'probs' applies activation 'softmax' over the channel axis"
    """
    activation = getattr(layer, "activation", None)
    if activation is None or activation in _ELEMENTWISE_FUNCTIONS:
        return None
    if (getattr(activation, "__module__", None), getattr(activation, "__name__", None)) in _LIBRARY_ELEMENTWISE:
        return None
    if activation in _MIXING_FUNCTIONS:
        return f"'{layer.name}' applies activation '{_MIXING_FUNCTIONS[activation]}' over the channel axis"
    from tfprune import handlers_inferred  # imports this module

    why = handlers_inferred.activation_reason(activation)
    if why is None:  # established numerically: each channel alone
        return None
    name = getattr(activation, "__name__", type(activation).__name__)
    return (
        f"'{layer.name}' applies activation '{name}', which tfprune does not know to act on "
        f"each channel alone ({why}; if it does: `tfprune.graph.register_activation({name})`)"
    )


def register_activation(function, mixes_channels=False):
    """Tells tfprune whether a custom activation function acts on each channel alone.

    A layer whose `activation` tfprune does not know freezes its output
    channels, since the function might couple them (as softmax does).
    Register an elementwise function (`f(x)[..., c]` depends on `x[..., c]`
    only) to let those channels be pruned.

    Args:
        function: The activation callable, as stored in `layer.activation`
            (for a model loaded from a file: the registered custom object).
        mixes_channels: Bool. True for a function that couples channels
            (normalises or reduces over the last axis). Defaults to `False`.

    Raises:
        TypeError: If `function` is not callable.

    Example:

    >>> @keras.saving.register_keras_serializable(package="example")
    ... def scaled_tanh(x):
    ...     return 1.7 * keras.ops.tanh(x)
    >>> tfprune.graph.register_activation(scaled_tanh)
    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation=scaled_tanh)) is None
    True
    """
    if not callable(function):
        raise TypeError(
            "`register_activation` expects the activation function itself, e.g. "
            f"`register_activation(my_activation)`. Received: function={function!r}"
        )
    name = getattr(function, "__name__", type(function).__name__)
    _MIXING_FUNCTIONS.pop(function, None)
    _ELEMENTWISE_FUNCTIONS.pop(function, None)
    (_MIXING_FUNCTIONS if mixes_channels else _ELEMENTWISE_FUNCTIONS)[function] = name


def _pin_if_mixing(layer, channels, tracer):
    """Pins a layer's output channels when its `activation` couples them."""
    reason = channel_mixing_activation(layer)
    if reason is not None:
        tracer.pin(channels, reason)
    return channels


class _Producer(Handler):
    """Conv/Dense: new output channels; input channels on `input_axis`."""

    def __init__(self, width_key, input_axis=-2, output_axis=-1):
        self.width_key = width_key
        self.input_axis = input_axis
        self.output_axis = output_axis

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        width = node.outputs[0].shape[-1]
        groups = getattr(layer, "groups", 1)
        if groups != 1 and groups == len(inputs) == width and self.output_axis == -1:
            # groups == input channels == filters: a depthwise convolution written as
            # a grouped Conv (keras-hub's MobileNet): channel c in, channel c out.
            tracer.use(layer, layer.kernel, -1, inputs, "param")
            tracer.use(layer, getattr(layer, "bias", None), 0, inputs, "param")
            return [_pin_if_mixing(layer, inputs, tracer)]
        outputs = tracer.new_channels(width, layer.name)
        if groups != 1:
            reason = f"'{layer.name}' is a grouped convolution (groups={layer.groups})"
            tracer.pin(inputs, reason)
            tracer.pin(outputs, reason)
            return [outputs]
        tracer.use(layer, layer.kernel, self.input_axis, inputs, "input")
        tracer.use(layer, layer.kernel, self.output_axis, outputs, "output")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        if config.get("groups", 1) != 1:  # the depthwise form: one group per channel
            config["groups"] = output_width
        config[self.width_key] = output_width
        return config


class _Depthwise(Handler):
    """Depthwise conv: output channel `c * M + m` comes from input channel c."""

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        outputs = np.repeat(inputs, layer.depth_multiplier)
        tracer.use(layer, layer.kernel, -2, inputs, "param")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "param")
        return [_pin_if_mixing(layer, outputs, tracer)]


class _Separable(Handler):
    """SeparableConv: a depthwise kernel, then a pointwise kernel (a producer)."""

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(node.outputs[0].shape[-1], layer.name)
        tracer.use(layer, layer.depthwise_kernel, -2, inputs, "input")
        tracer.use(layer, layer.pointwise_kernel, -2, np.repeat(inputs, layer.depth_multiplier), "input")
        tracer.use(layer, layer.pointwise_kernel, -1, outputs, "output")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        config["filters"] = output_width
        return config


class _EinsumDense(Handler):
    """`EinsumDense`: a producer when its equation reads and writes the channel axis through the kernel.

    The input's last letter must be contracted with one kernel axis (those
    are the input channels) and the output's last letter must be the
    kernel's last letter alone (the new output channels, with the bias's last
    axis when `bias_axes` holds it; criteria read a producer's output
    channels on its kernel's last axis): `"abc,cd->abd"` (a Dense), keras-hub's
    `"btd,ndh->btnh"` and `"btnh,nhd->btd"` projections. Any other equation
    (the channel axis elided with `...` on the right, carried through to the
    output, or created from no kernel axis), a LoRA or quantized layer, is
    frozen with the reason.
    """

    @staticmethod
    def _specs(layer):
        inputs, output = layer.equation.split("->")
        input_spec, kernel_spec = inputs.split(",")
        return input_spec, kernel_spec, output

    def _refusal(self, layer):
        input_spec, kernel_spec, output_spec = self._specs(layer)
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return "is LoRA-enabled or quantized"
        if input_spec.endswith("...") or output_spec.endswith("..."):
            return f"elides its channel axis ('{layer.equation}')"
        channel, output = input_spec[-1], output_spec[-1]
        if channel not in kernel_spec or channel in output_spec:
            return f"does not contract its input channels with the kernel ('{layer.equation}')"
        if output in input_spec or not kernel_spec.endswith(output):
            return f"does not make its output channels from the kernel's last axis ('{layer.equation}')"
        return None

    def trace(self, node, tracer):
        layer = node.operation
        refusal = self._refusal(layer)
        if refusal is not None:
            return Freeze(f"'{layer.name}' {refusal}").trace(node, tracer)
        input_spec, kernel_spec, output_spec = self._specs(layer)
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, layer.kernel, kernel_spec.index(input_spec[-1]), inputs, "input")
        tracer.use(layer, layer.kernel, kernel_spec.index(output_spec[-1]), outputs, "output")
        if layer.bias is not None and output_spec[-1] in layer.bias_axes:
            tracer.use(layer, layer.bias, -1, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        shape = config["output_shape"]
        if isinstance(shape, int):
            return {**config, "output_shape": output_width}
        return {**config, "output_shape": [*list(shape)[:-1], output_width]}


class _Activation(Handler):
    """The `Activation` layer: passes channels unless its function mixes them."""

    def trace(self, node, tracer):
        reason = channel_mixing_activation(node.operation)
        if reason is not None:
            return Freeze(reason).trace(node, tracer)
        return [tracer.channels(node.input_tensors[0])]


_PRESERVE = Preserve()
_ELEMENTWISE = _Elementwise()
ELEMENTWISE = _ELEMENTWISE  # what `handlers_inferred` hands out for a per-channel rule
_GATING = _Elementwise(gating=True)
_layers = keras.layers
_LAYER_HANDLERS = {
    _layers.Conv1D: _Producer("filters"),
    _layers.Conv2D: _Producer("filters"),
    _layers.Conv3D: _Producer("filters"),
    _layers.Conv1DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Conv2DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Conv3DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Dense: _Producer("units", input_axis=0, output_axis=1),
    _layers.EinsumDense: _EinsumDense(),
    _layers.ReversibleEmbedding: _ReversibleEmbedding(),
    _layers.DepthwiseConv1D: _Depthwise(),
    _layers.DepthwiseConv2D: _Depthwise(),
    _layers.SeparableConv1D: _Separable(),
    _layers.SeparableConv2D: _Separable(),
    _layers.BatchNormalization: _PerChannel(),
    _layers.PReLU: _PerChannel(),
    _layers.Activation: _Activation(),
    _layers.Softmax: _OverAxis("normalises"),
    _layers.LayerNormalization: _Normalization(),
    _layers.RMSNormalization: _Normalization(),
    _layers.Embedding: _Embedding(),
    _tfprune_layers.Weight: _Weight(),
    _layers.UnitNormalization: _OverAxis("normalises"),
    _layers.Add: _ELEMENTWISE,
    _layers.Subtract: _ELEMENTWISE,
    _layers.Multiply: _GATING,
    _layers.Maximum: _ELEMENTWISE,
    _layers.Minimum: _ELEMENTWISE,
    _layers.Average: _ELEMENTWISE,
    _layers.Concatenate: _Concatenate(),
    _layers.MultiHeadAttention: _MultiHeadAttention(),
    _layers.Flatten: _Reshape(),
    _layers.Reshape: _Reshape(),
    _layers.Rescaling: _Rescaling(),
    _layers.Normalization: Freeze("Normalization keeps per-channel statistics tfprune does not slice"),
    _layers.GroupNormalization: Freeze("GroupNormalization ties channels into groups"),
}
for _name in (
    "ReLU LeakyReLU ELU Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D "
    "GaussianNoise GaussianDropout AlphaDropout ActivityRegularization Identity "
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D "
    "UpSampling1D UpSampling2D UpSampling3D "
    "MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D "
    "GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D "
    "GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D"
).split():
    _LAYER_HANDLERS[getattr(_layers, _name)] = _PRESERVE
# Preprocessing and augmentation layers (identities at inference, or spatial
# maps): each output channel is its input channel in training mode too.
# Keras versions without one of them skip it.
for _name in (
    "Resizing CenterCrop Permute RandomFlip RandomRotation RandomZoom RandomTranslation RandomCrop "
    "RandomShear RandomPerspective RandomElasticTransform RandomErasing RandomGaussianBlur "
    "RandomContrast RandomBrightness RandomInvert RandomPosterization RandomSharpness "
    "Solarization AutoContrast MixUp CutMix"
).split():
    if hasattr(_layers, _name):
        _LAYER_HANDLERS[getattr(_layers, _name)] = _Permute() if _name == "Permute" else _PRESERVE
for _name in "RandomHue RandomSaturation RandomGrayscale RandomColorJitter RandomColorDegeneration AugMix RandAugment".split():
    if hasattr(_layers, _name):
        _LAYER_HANDLERS[getattr(_layers, _name)] = Freeze(
            f"{_name} works on the three colour channels of an image together"
        )
# Non-layer operations (what `x + 3.0`, `keras.ops.relu6(x)` record) by class name.
# One-tensor operations go through `_Elementwise` too, so that a per-channel
# constant argument (`keras.ops.clip(x, low, high)` with one bound per
# channel) pins the channels instead of being left at its old length.
for _name in (
    "Relu Relu6 Sigmoid HardSigmoid HardSilu Silu Gelu Elu Selu Celu LeakyRelu Softplus Softsign "
    "Tanh TanhShrink HardTanh SoftShrink HardShrink LogSigmoid Squareplus SparsePlus SparseSigmoid "
    "Threshold Exp Expm1 Log Log1p Abs Absolute Negative Square Sqrt Rsqrt Reciprocal Cast Clip "
    "Add Subtract Divide TrueDivide Maximum Minimum Power "
    "Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot"
).split():
    _LAYER_HANDLERS[_name] = _ELEMENTWISE
for _name in (
    "ReLU Sin Cos Tan Sinh Cosh Arcsin Arccos Arctan Arcsinh Arccosh Arctanh Erf Erfinv "
    "Sign Floor Ceil Round Trunc Exp2 Log2 Log10 IsNan IsInf IsFinite NanToNum Real Imag Conjugate "
    "FloorDivide Mod Arctan2 Logaddexp Where"
).split():  # `keras.activations.relu(x)` records ReLU; the rest are keras.ops math
    _LAYER_HANDLERS[_name] = _ELEMENTWISE
_LAYER_HANDLERS["Multiply"] = _GATING
for _name, _verb in (
    ("Softmax LogSoftmax Sparsemax Normalize LayerNorm RMSNorm", "normalises"),
    ("Sum Mean Max Min Amax Amin Prod Any All Var Std Norm Logsumexp Argmax Argmin", "reduces"),
    ("Cumsum Cumprod Sort", "orders or accumulates"),
    ("Glu", "splits"),
):
    for _op_name in _name.split():
        _LAYER_HANDLERS[_op_name] = _OverAxis(_verb)
_LAYER_HANDLERS["Concatenate"] = _Concatenate()
_LAYER_HANDLERS["Pad"] = _Pad()
_LAYER_HANDLERS["Transpose"] = _Permute()
_LAYER_HANDLERS["Reshape"] = _ReshapeOperation()
_LAYER_HANDLERS["Matmul"] = _Matmul()
_LAYER_HANDLERS["Einsum"] = _Einsum()
_LAYER_HANDLERS["DotProductAttention"] = _DotProductAttention()
_LAYER_HANDLERS["GetItem"] = _GetItem()
_LAYER_HANDLERS["Split"] = _Split()
_LAYER_HANDLERS["Stack"] = _Stack()
_LAYER_HANDLERS["Tile"] = _Tile()
_LAYER_HANDLERS["TopK"] = _TopK()
_LAYER_HANDLERS["Map"] = _Map()
_LAYER_HANDLERS["Unstack"] = _Unstack()
_LAYER_HANDLERS["Take"] = _Take()
_LAYER_HANDLERS["ExpandDims"] = _AxisInsertOrRemove("adds")
_LAYER_HANDLERS["Squeeze"] = _AxisInsertOrRemove("removes")
_LAYER_HANDLERS.update(_application_handlers(_ELEMENTWISE))
_HANDLERS.update(_LAYER_HANDLERS)
del _name, _op_name, _verb, _layers
