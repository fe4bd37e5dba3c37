"""MAC formulas of layers and graph operations, in a registry keyed by class.

`tfprune.analysis` counts a call's multiply-accumulates with the formula
registered for the layer's class, looked up along the class's MRO, so
subclasses of `Conv2D`, `Dense`, ... are counted by their base class. A
formula reads the call's first input and output shapes; a `CallFormula`
reads all of the call's arguments (attention, `keras.ops.matmul`, ...).
Classes Keras does not export (the operations behind `keras.ops`) and those
of keras-hub are keyed by `(module, class name)`, so none is imported here.
The conventions (what counts as a MAC) are in `tfprune.analysis`.
"""

import math

import keras

from tfprune._keras import hub
from tfprune._keras import ops as keras_ops
from tfprune._keras.layers import attention_sizes

__all__ = ["CallFormula", "node_macs", "register_macs"]

_MAC_FUNCTIONS = {}


def register_macs(layer_class, function):
    """Registers the MAC formula of a layer class (and of its subclasses).

    `analyze` walks the MRO of each layer's class and uses the first class
    found in the registry, so registering a base class covers every subclass
    that does not register its own formula.

    Args:
        layer_class: A class, usually a `keras.layers.Layer` subclass.
        function: Callable `function(layer, input_shape, output_shape)`
            returning the multiply-accumulates (int) of one call of `layer`
            for one example, or None if they cannot be counted. `input_shape`
            and `output_shape` are the shapes of the call's first input and
            first output, batch dimension included.
            It is not called when a non-batch axis of either is of unknown
            size (the layer is then listed as uncounted by `analyze`; pass
            `sequence_length=` to fix the token axis of a text model).

    Returns:
        `function`, unchanged.

    Raises:
        TypeError: If `layer_class` is not a class or `function` is not callable.

    Example:

    >>> import keras, tfprune
    >>> class Scale(keras.layers.Layer):
    ...     pass
    >>> def scale_macs(layer, input_shape, output_shape):
    ...     return output_shape[-1]  # one multiply per channel
    >>> _ = tfprune.analysis.register_macs(Scale, scale_macs)
    """
    if not isinstance(layer_class, type):
        raise TypeError(
            "`register_macs` expects a class as `layer_class`; received "
            f"layer_class={layer_class!r}. Pass the layer class, e.g. keras.layers.Conv2D."
        )
    if not callable(function):
        raise TypeError(
            f"`register_macs` expects a callable `function` for {layer_class.__name__}; "
            f"received function={function!r}. Pass `function(layer, input_shape, output_shape)`."
        )
    _MAC_FUNCTIONS[layer_class] = function
    return function


def _conv_geometry(layer, input_shape, output_shape):
    """Returns (input positions, output positions, input channels) of a convolution."""
    channels_last = layer.data_format == "channels_last"
    spatial = slice(1, -1) if channels_last else slice(2, None)
    input_channels = input_shape[-1] if channels_last else input_shape[1]
    return math.prod(input_shape[spatial]), math.prod(output_shape[spatial]), input_channels


def _conv_macs(layer, input_shape, output_shape):
    _, output_positions, input_channels = _conv_geometry(layer, input_shape, output_shape)
    kernel_positions = math.prod(layer.kernel_size)
    return output_positions * kernel_positions * (input_channels // layer.groups) * layer.filters


def _conv_transpose_macs(layer, input_shape, output_shape):
    # Every input position is multiplied with the whole kernel (the usual
    # convention), including products that `padding="same"` crops away.
    input_positions, _, input_channels = _conv_geometry(layer, input_shape, output_shape)
    return input_positions * math.prod(layer.kernel_size) * input_channels * layer.filters


def _depthwise_conv_macs(layer, input_shape, output_shape):
    _, output_positions, input_channels = _conv_geometry(layer, input_shape, output_shape)
    kernel_positions = math.prod(layer.kernel_size)
    return output_positions * kernel_positions * input_channels * layer.depth_multiplier


def _separable_conv_macs(layer, input_shape, output_shape):
    _, output_positions, input_channels = _conv_geometry(layer, input_shape, output_shape)
    pointwise = output_positions * input_channels * layer.depth_multiplier * layer.filters
    return _depthwise_conv_macs(layer, input_shape, output_shape) + pointwise


def _dense_macs(layer, input_shape, output_shape):
    # Dense applies to the last axis; leading axes (e.g. timesteps) repeat it.
    return math.prod(input_shape[1:]) * layer.units


def _einsum_dense_macs(layer, input_shape, output_shape):
    # Every input entry meets every kernel entry along the letters the input lacks
    # ("btd,ndh->btnh": t*d inputs times n*h); the batch axis is not counted.
    input_spec, kernel_spec = layer.equation.split("->")[0].split(",")
    extra = [
        size for letter, size in zip(kernel_spec, layer.kernel.shape) if letter not in input_spec
    ]
    if any(size is None for size in input_shape[1:]):
        return None
    return math.prod(input_shape[1:]) * math.prod(extra)


_dense_macs.uses_output_shape = False
_einsum_dense_macs.uses_output_shape = False


def _time_distributed_macs(layer, input_shape, output_shape):
    # The wrapped layer runs once per step of axis 1.
    step_macs = _call_macs(
        layer.layer, input_shape[:1] + input_shape[2:], output_shape[:1] + output_shape[2:]
    )
    return None if step_macs is None else input_shape[1] * step_macs


def _no_macs(layer, input_shape, output_shape):
    return 0


_no_macs.counts_unknown_sizes = True  # 0 at any length


def _reversible_embedding_macs(layer, input_shape, output_shape):
    # Forwards a table lookup (token ids in, one more axis out): 0 MACs, as for
    # Embedding. Called with `reverse=True` (same rank in and out), every hidden
    # vector is multiplied with the table: one dot product per vocabulary entry.
    if len(output_shape) != len(input_shape):
        return 0
    if None in input_shape[1:]:
        return None
    return math.prod(input_shape[1:]) * layer.input_dim


_reversible_embedding_macs.counts_unknown_sizes = True


for _layer_class, _function in {
    keras.layers.Conv1D: _conv_macs,
    keras.layers.Conv2D: _conv_macs,
    keras.layers.Conv3D: _conv_macs,
    keras.layers.Conv1DTranspose: _conv_transpose_macs,
    keras.layers.Conv2DTranspose: _conv_transpose_macs,
    keras.layers.Conv3DTranspose: _conv_transpose_macs,
    keras.layers.DepthwiseConv1D: _depthwise_conv_macs,
    keras.layers.DepthwiseConv2D: _depthwise_conv_macs,
    keras.layers.SeparableConv1D: _separable_conv_macs,
    keras.layers.SeparableConv2D: _separable_conv_macs,
    keras.layers.Dense: _dense_macs,
    keras.layers.EinsumDense: _einsum_dense_macs,
    keras.layers.TimeDistributed: _time_distributed_macs,
    keras.layers.ReversibleEmbedding: _reversible_embedding_macs,
    # Layers with weights that do no kernel multiply-accumulates (excluded by
    # convention). Weightless layers and graph operations count 0 without an
    # entry, except those below that multiply two activations (`CallFormula`).
    keras.layers.BatchNormalization: _no_macs,
    keras.layers.LayerNormalization: _no_macs,
    keras.layers.GroupNormalization: _no_macs,
    keras.layers.RMSNormalization: _no_macs,
    keras.layers.Normalization: _no_macs,
    keras.layers.PReLU: _no_macs,
    keras.layers.Embedding: _no_macs,
}.items():
    register_macs(_layer_class, _function)


class CallFormula:
    """A MAC formula that reads a call's arguments, not only its first input.

    `function(operation, args, kwargs, outputs)` gets the call's arguments and
    outputs with every tensor as a `KerasTensor` of its (resolved) shape, and
    returns the MACs per example or None.
    """

    def __init__(self, function):
        self.function = function


def _shape(value):
    return None if value is None else tuple(value.shape)


def _argument(args, kwargs, index, name):
    return args[index] if len(args) > index else kwargs.get(name)


def _known(*shapes):
    """True when no shape has an unknown axis other than the batch axis."""
    return all(shape is not None and None not in shape[1:] for shape in shapes)


def _ranks(*shapes):
    return {len(shape) for shape in shapes}


def _attention_macs(layer, args, kwargs, outputs):
    # MultiHeadAttention over sequences (batch, length, width): the query, key
    # and value projections, the scores Q K^T, the weighted sum softmax(...) V
    # and the output projection. None for attention over several axes.
    query = _shape(_argument(args, kwargs, 0, "query"))
    value = _shape(_argument(args, kwargs, 1, "value"))
    key = _shape(_argument(args, kwargs, 2, "key")) or value
    output = _shape(outputs[0])
    if not _known(query, value, key, output) or _ranks(query, value, key, output) != {3}:
        return None
    heads, key_dim, value_dim = attention_sizes(layer)
    query_length, value_length = query[1], value[1]
    projections = (
        query_length * query[2] * heads * key_dim
        + key[1] * key[2] * heads * key_dim
        + value_length * value[2] * heads * value_dim
    )
    attention = (
        heads * query_length * key[1] * key_dim + heads * query_length * value_length * value_dim
    )
    return projections + attention + query_length * heads * value_dim * output[2]


def _dot_attention_layer_macs(layer, args, kwargs, outputs):
    # keras.layers.Attention / AdditiveAttention, inputs [query, value, key]:
    # one product per (query step, key step, channel) for the scores and per
    # (query step, value step, value channel) for the weighted sum.
    inputs = _argument(args, kwargs, 0, "inputs")
    query, value = _shape(inputs[0]), _shape(inputs[1])
    key = _shape(inputs[2]) if len(inputs) > 2 else value
    if not _known(query, value, key) or _ranks(query, value, key) != {3}:
        return None
    return query[1] * key[1] * query[2] + query[1] * value[1] * value[2]


def _dot_layer_macs(layer, args, kwargs, outputs):
    # keras.layers.Dot: every output entry is a dot product over the contracted axis.
    inputs = _argument(args, kwargs, 0, "inputs")
    first, output = _shape(inputs[0]), _shape(outputs[0])
    axis = layer.axes if isinstance(layer.axes, int) else layer.axes[0]
    if not _known(first, output):
        return None
    return math.prod(output[1:]) * first[axis]


def _matmul_macs(operation, args, kwargs, outputs):
    # keras.ops.matmul / dot / inner: every output entry is a dot product over
    # the first operand's last axis (the only axis it contracts).
    first, output = _shape(_argument(args, kwargs, 0, "x1")), _shape(outputs[0])
    if not first or not _known(output) or first[-1] is None:
        return None
    return math.prod(output[1:]) * first[-1]


def _tensordot_macs(operation, args, kwargs, outputs):
    first, output = _shape(_argument(args, kwargs, 0, "x1")), _shape(outputs[0])
    if first is None or not _known(output):
        return None
    axes = operation.axes
    contracted = (
        first[len(first) - axes :] if isinstance(axes, int) else [first[axis] for axis in axes[0]]
    )
    return None if None in contracted else math.prod(output[1:]) * math.prod(contracted)


def _einsum_macs(operation, args, kwargs, outputs):
    # One product per combination of the letters of both operands, the batch
    # letter (the output's first) left out: "bqd,bkd->bqk" is q*k*d per example.
    operands = [_shape(operand) for operand in args]
    if len(operands) == 1:
        return 0  # a transpose, trace or sum: no products
    subscripts = operation.subscripts.replace(" ", "")
    if len(operands) != 2 or "..." in subscripts:
        return None
    inputs, arrow, output = subscripts.partition("->")
    specs = inputs.split(",")
    if not arrow:  # implicit output: the letters that appear once, sorted
        output = "".join(
            sorted(letter for letter in set(inputs) - {","} if inputs.count(letter) == 1)
        )
    sizes = {}
    for spec, shape in zip(specs, operands):
        if len(spec) != len(shape):
            return None
        sizes.update({letter: size for letter, size in zip(spec, shape) if size is not None})
    letters = set("".join(specs)) - set(output[:1])
    if any(letter not in sizes for letter in letters):
        return None
    return math.prod(sizes[letter] for letter in letters)


def _dot_product_attention_macs(operation, args, kwargs, outputs):
    # keras.ops.dot_product_attention on (batch, length, heads, head_dim):
    # the scores Q K^T and the weighted sum over the values.
    query = _shape(_argument(args, kwargs, 0, "query"))
    key = _shape(_argument(args, kwargs, 1, "key"))
    value = _shape(_argument(args, kwargs, 2, "value"))
    if not _known(query, key, value) or _ranks(query, key, value) != {4}:
        return None
    length, heads = query[1], query[2]
    return heads * length * key[1] * query[3] + heads * length * value[1] * value[3]


def _uncounted(operation, args, kwargs, outputs):
    return None  # multiplies, but tfprune has no formula for it yet


for _layer_class, _function in {
    keras.layers.MultiHeadAttention: _attention_macs,
    keras.layers.Attention: _dot_attention_layer_macs,
    keras.layers.Dot: _dot_layer_macs,
}.items():
    _MAC_FUNCTIONS[_layer_class] = CallFormula(_function)


def _vit_patching_macs(layer, input_shape, output_shape):
    # keras-hub's ViTPatchingAndEmbedding: a patch convolution (stride = kernel
    # size), once per patch; the class token and position embedding are added.
    return layer.num_patches * math.prod(layer.patch_embedding.kernel.shape)


# Classes Keras does not export (`keras.ops` operations) or of optional libraries,
# by (module, class name), so that none is imported here. A test checks that the
# public `keras.ops` functions still create these classes.
_MAC_FUNCTIONS_BY_NAME = {
    (hub.model_module("vit.vit_layers"), "ViTPatchingAndEmbedding"): _vit_patching_macs,
    # A table slice broadcast to the input's shape, added to the token embeddings.
    (hub.layer_module("modeling.position_embedding"), "PositionEmbedding"): _no_macs,
    (keras_ops.NUMPY, "Matmul"): CallFormula(_matmul_macs),
    (keras_ops.NUMPY, "Dot"): CallFormula(_matmul_macs),
    (keras_ops.NUMPY, "Inner"): CallFormula(_matmul_macs),
    (keras_ops.NUMPY, "Tensordot"): CallFormula(_tensordot_macs),
    (keras_ops.NUMPY, "Einsum"): CallFormula(_einsum_macs),
    (keras_ops.NUMPY, "Vdot"): CallFormula(_uncounted),
    (keras_ops.NN, "DotProductAttention"): CallFormula(_dot_product_attention_macs),
    (keras_ops.NN, "Conv"): CallFormula(_uncounted),
    (keras_ops.NN, "DepthwiseConv"): CallFormula(_uncounted),
    (keras_ops.NN, "SeparableConv"): CallFormula(_uncounted),
    (keras_ops.NN, "ConvTranspose"): CallFormula(_uncounted),
}


def _mac_function(layer):
    for layer_class in type(layer).__mro__:
        if layer_class in _MAC_FUNCTIONS:
            return _MAC_FUNCTIONS[layer_class]
        if (layer_class.__module__, layer_class.__name__) in _MAC_FUNCTIONS_BY_NAME:
            return _MAC_FUNCTIONS_BY_NAME[(layer_class.__module__, layer_class.__name__)]
    return None


def node_macs(layer, node, shapes):
    """MACs of the call `node` of `layer`, or None when they cannot be counted.

    Args:
        layer: The layer or operation (its stripped layer for tfprune's training-time layers).
        node: One of its call nodes.
        shapes: What gives the tensors' shapes: `shapes.resolve(value)` returns
            the `KerasTensor` standing for a value, `shapes.shape(tensor)` its shape.

    Returns:
        Int or None.
    """
    function = _mac_function(layer)
    if isinstance(function, CallFormula):
        args, kwargs = node.arguments.convert(shapes.resolve)
        macs = function.function(
            layer, args, kwargs, [shapes.resolve(tensor) for tensor in node.outputs]
        )
        return None if macs is None else int(macs)
    return _call_macs(
        layer, shapes.shape(node.input_tensors[0]), shapes.shape(node.output_tensors[0])
    )


def _call_macs(layer, input_shape, output_shape):
    """MACs of one call of `layer` from its first input and output shapes, or None."""
    function = _mac_function(layer)
    if function is None:
        return None if getattr(layer, "weights", None) else 0
    if isinstance(function, CallFormula):
        return None  # needs the call's arguments (a MultiHeadAttention in TimeDistributed)
    # A formula that reads only the input shape (`uses_output_shape = False`) also
    # counts a call whose output has an unknown axis (EinsumDense's `output_shape=(None, 64)`);
    # one that `counts_unknown_sizes` (0 for lookups) gets shapes with unknown axes too.
    unknown = None in input_shape[1:] or (
        getattr(function, "uses_output_shape", True) and None in output_shape[1:]
    )
    if unknown and not getattr(function, "counts_unknown_sizes", False):
        return None
    macs = function(layer, input_shape, output_shape)
    return None if macs is None else int(macs)
