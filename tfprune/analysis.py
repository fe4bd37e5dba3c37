"""Parameters, multiply-accumulates and kernel sparsity of a model, as data.

`analyze(model)` reads a built Sequential or functional model's graph (no
forward pass) and returns an `Analysis`: one `LayerRecord` per layer or graph
operation, and totals. The MAC formula of a layer is looked up in a registry
keyed by layer class; the lookup walks the class's MRO, so subclasses of
`Conv2D`, `Dense`, ... (tfprune's STR layers, user layers) are counted by
their base class. Other modules add formulas with `register_macs`.

Conventions, the same as the MobileNet, ResNet and Keras application papers
and tables: one MAC is one multiply-accumulate of a convolution or dense
kernel, counted for one input example; FLOPs are 2 x MACs. Bias additions,
normalization, activations, pooling, elementwise operations (`Add`,
`Multiply`, `x * 0.5`, ...), reshapes and embedding lookups are excluded from
MACs (they count 0). Products of two activations are counted: the scores and
weighted sums of attention (`MultiHeadAttention`, `keras.layers.Attention`,
`keras.ops.dot_product_attention`) and `keras.ops.matmul`/`einsum`/`dot`.

Sequence models read token ids of any length (`keras.Input((None,), "int32")`),
so their graph does not say how many tokens a Dense layer or an attention
runs over. `analyze(model, sequence_length=n)` runs the graph's shapes again
(`compute_output_spec`, no forward pass) with every unknown input axis set to
`n`; by default `n` is the model's `max_sequence_length` (keras-hub text
backbones and the task models around them) or the length of its keras-hub
`PositionEmbedding` table. Layers whose MACs still cannot be counted are
listed in `Analysis.uncounted_layers`, never counted as 0.
"""

import dataclasses
import json
import math

import keras
import numpy as np

from tfprune._utils import functional_view, is_integer, require_graph_model

__all__ = ["Analysis", "LayerRecord", "analyze", "register_macs"]

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
            for one example, or None if they cannot be counted. `input_shape` and `output_shape` are the shapes of the
            call's first input and first output, batch dimension included.
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
    extra = [size for letter, size in zip(kernel_spec, layer.kernel.shape) if letter not in input_spec]
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
    # entry, except those below that multiply two activations (`_CallFormula`).
    keras.layers.BatchNormalization: _no_macs,
    keras.layers.LayerNormalization: _no_macs,
    keras.layers.GroupNormalization: _no_macs,
    keras.layers.RMSNormalization: _no_macs,
    keras.layers.Normalization: _no_macs,
    keras.layers.PReLU: _no_macs,
    keras.layers.Embedding: _no_macs,
}.items():
    register_macs(_layer_class, _function)


class _CallFormula:
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
    heads, key_dim = layer.num_heads, layer._key_dim
    value_dim = layer._value_dim or key_dim
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
    _MAC_FUNCTIONS[_layer_class] = _CallFormula(_function)


def _vit_patching_macs(layer, input_shape, output_shape):
    # keras-hub's ViTPatchingAndEmbedding: a patch convolution (stride = kernel
    # size), once per patch; the class token and position embedding are added.
    return layer.num_patches * math.prod(layer.patch_embedding.kernel.shape)


# Classes Keras does not export (`keras.ops` operations) or of optional libraries,
# by (module, class name), so that none is imported here. A test checks that the
# public `keras.ops` functions still create these classes.
_MAC_FUNCTIONS_BY_NAME = {
    ("keras_hub.src.models.vit.vit_layers", "ViTPatchingAndEmbedding"): _vit_patching_macs,
    # A table slice broadcast to the input's shape, added to the token embeddings.
    ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"): _no_macs,
    ("keras.src.ops.numpy", "Matmul"): _CallFormula(_matmul_macs),
    ("keras.src.ops.numpy", "Dot"): _CallFormula(_matmul_macs),
    ("keras.src.ops.numpy", "Inner"): _CallFormula(_matmul_macs),
    ("keras.src.ops.numpy", "Tensordot"): _CallFormula(_tensordot_macs),
    ("keras.src.ops.numpy", "Einsum"): _CallFormula(_einsum_macs),
    ("keras.src.ops.numpy", "Vdot"): _CallFormula(_uncounted),
    ("keras.src.ops.nn", "DotProductAttention"): _CallFormula(_dot_product_attention_macs),
    ("keras.src.ops.nn", "Conv"): _CallFormula(_uncounted),
    ("keras.src.ops.nn", "DepthwiseConv"): _CallFormula(_uncounted),
    ("keras.src.ops.nn", "SeparableConv"): _CallFormula(_uncounted),
    ("keras.src.ops.nn", "ConvTranspose"): _CallFormula(_uncounted),
}


def _mac_function(layer):
    for layer_class in type(layer).__mro__:
        if layer_class in _MAC_FUNCTIONS:
            return _MAC_FUNCTIONS[layer_class]
        if (layer_class.__module__, layer_class.__name__) in _MAC_FUNCTIONS_BY_NAME:
            return _MAC_FUNCTIONS_BY_NAME[(layer_class.__module__, layer_class.__name__)]
    return None


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """Figures for one layer or graph operation of an analysed model.

    Args:
        name: String. The layer name; layers of a nested model are prefixed
            with the nested model's name and a slash (`"backbone/conv1"`).
        type: String. The class name (`"Conv2D"`, `"Multiply"` for `x * y`).
        output_shape: Tuple (or list of tuples for several outputs) of the
            layer's first call in the graph, batch dimension included.
        params: Int. Number of weights of the layer (0 for graph operations).
        trainable_params: Int. Number of trainable weights.
        macs: Int or None. Kernel multiply-accumulates per example, summed
            over all calls of the layer in the graph; None when they cannot be
            counted (no registered formula, or unknown spatial size).
        kernel_params: Int. Number of entries in the layer's kernels (weights
            whose name ends in `kernel`), 0 when it has none.
        nonzero_kernel_params: Int. How many of those are not exactly zero.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
    >>> tfprune.analyze(model)["logits"].macs
    8
    """

    name: str
    type: str
    output_shape: object
    params: int
    trainable_params: int
    macs: object
    kernel_params: int
    nonzero_kernel_params: int

    @property
    def flops(self):
        """Int or None. 2 x MACs (one multiply and one add per MAC)."""
        return None if self.macs is None else 2 * self.macs

    @property
    def kernel_sparsity(self):
        """Float or None. Share of exact zeros in the kernels; None without a kernel."""
        return _sparsity(self.kernel_params, self.nonzero_kernel_params)

    def to_dict(self):
        """Returns the record as a JSON-serialisable dict (shapes as lists).

        Returns:
            Dict with the fields plus `flops` and `kernel_sparsity`.

        Example:

        >>> record = LayerRecord("d", "Dense", (None, 2), 10, 10, 8, 8, 8)
        >>> record.to_dict()["flops"]
        16
        """
        result = dataclasses.asdict(self)
        result["output_shape"] = _shape_to_list(self.output_shape)
        result["flops"] = self.flops
        result["kernel_sparsity"] = self.kernel_sparsity
        return result


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Per-layer records and totals returned by `tfprune.analyze`.

    MACs count kernel multiply-accumulates of convolution and dense layers
    (and the products of activations in attention) for one example, of
    `sequence_length` tokens when that is set; FLOPs (2xMACs) are twice that.
    Normalization, activations, pooling, elementwise operations and embedding
    lookups are excluded (see the module docstring).

    Args:
        model_name: String. The analysed model's name.
        layers: Tuple of `LayerRecord`, in graph order.
        sequence_length: Int or None. The length the model's unknown input
            axes were given (see `tfprune.analyze`); None when its inputs have
            none, or no length was known. Defaults to None.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8, 8, 3))
    >>> outputs = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> analysis = tfprune.analyze(keras.Model(inputs, outputs))
    >>> analysis.macs, analysis.flops, analysis.params
    (6912, 13824, 112)
    >>> text = analysis.to_json()
    """

    model_name: str
    layers: tuple
    sequence_length: object = None

    def __getitem__(self, name):
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(
            f"Model '{self.model_name}' has no layer named {name!r}; "
            f"known names: {[record.name for record in self.layers]}."
        )

    @property
    def params(self):
        """Int. Total number of weights."""
        return sum(record.params for record in self.layers)

    @property
    def trainable_params(self):
        """Int. Total number of trainable weights."""
        return sum(record.trainable_params for record in self.layers)

    @property
    def complete(self):
        """Bool. True when every layer's MACs were counted (`uncounted_layers` is empty).

        When False, `macs` and `flops` are lower bounds: they leave out the
        layers named in `uncounted_layers`.

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> tfprune.analyze(keras.Model(inputs, keras.layers.Dense(2)(inputs))).complete
        True
        """
        return not self.uncounted_layers

    @property
    def macs(self):
        """Int. Kernel multiply-accumulates per example of the layers that could be counted.

        A lower bound when `complete` is False.
        """
        return sum(record.macs for record in self.layers if record.macs is not None)

    @property
    def flops(self):
        """Int. 2 x `macs`."""
        return 2 * self.macs

    @property
    def kernel_params(self):
        """Int. Total number of kernel entries."""
        return sum(record.kernel_params for record in self.layers)

    @property
    def nonzero_kernel_params(self):
        """Int. Total number of kernel entries that are not exactly zero."""
        return sum(record.nonzero_kernel_params for record in self.layers)

    @property
    def kernel_sparsity(self):
        """Float or None. Share of exact zeros over all kernels."""
        return _sparsity(self.kernel_params, self.nonzero_kernel_params)

    @property
    def uncounted_layers(self):
        """Tuple of layer names whose MACs are unknown (left out of `macs`)."""
        return tuple(record.name for record in self.layers if record.macs is None)

    def to_dict(self):
        """Returns the analysis as a JSON-serialisable dict.

        Returns:
            Dict with `model`, `sequence_length`, `layers` (a list of `LayerRecord.to_dict()`),
            `totals` (with `complete`: False when some layers' MACs are
            unknown and the MAC totals are lower bounds) and `uncounted_layers`.

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> tfprune.analyze(model).to_dict()["totals"]["flops"]
        12
        """
        return {
            "model": self.model_name,
            "mac_convention": (
                "MACs: kernel multiply-accumulates of conv/dense layers and products of "
                "activations in attention and matmul/einsum, per example (of sequence_length "
                "tokens when set); FLOPs = 2 x MACs; normalization, activation, pooling, "
                "elementwise ops and embedding lookups excluded"
            ),
            "sequence_length": self.sequence_length,
            "layers": [record.to_dict() for record in self.layers],
            "totals": {
                "params": self.params,
                "trainable_params": self.trainable_params,
                "macs": self.macs,
                "flops": self.flops,
                "kernel_params": self.kernel_params,
                "nonzero_kernel_params": self.nonzero_kernel_params,
                "kernel_sparsity": self.kernel_sparsity,
                "complete": self.complete,
            },
            "uncounted_layers": list(self.uncounted_layers),
        }

    def to_json(self, indent=2):
        """Returns `to_dict()` as a JSON string.

        Args:
            indent: Int or None. Passed to `json.dumps`. Defaults to 2.

        Returns:
            String.

        Example:

        >>> import json, keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
        >>> json.loads(tfprune.analyze(model).to_json())["layers"][1]["name"]
        'logits'
        """
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self):
        return (
            f"Analysis(model={self.model_name!r}, layers={len(self.layers)}, "
            f"params={self.params}, macs={self.macs})"
        )

    def __str__(self):
        header = (
            "Name",
            "Type",
            "Output shape",
            "Params",
            "MACs",
            "FLOPs (2xMACs)",
            "Kernel sparsity",
        )
        rows = [
            (
                record.name,
                record.type,
                str(record.output_shape),
                f"{record.params:,}",
                _format_count(record.macs),
                _format_count(record.flops),
                _format_share(record.kernel_sparsity),
            )
            for record in self.layers
        ]
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

        def line(row):
            # Text columns left-aligned, numbers right-aligned.
            cells = [
                cell.ljust(width) if column < 3 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(header))
        lines = [f"Model: {self.model_name}", rule, line(header), rule, *map(line, rows), rule]
        lines += [
            f"Params: {_human(self.params)}, trainable: {self.trainable_params:,}",
            f"MACs: {_human(self.macs)}, conv and dense kernels and attention, per example"
            + ("" if self.sequence_length is None else f" of {self.sequence_length} tokens"),
            f"FLOPs (2xMACs): {_human(self.flops)}",
            f"Kernel params: {self.kernel_params:,}, nonzero: {self.nonzero_kernel_params:,} "
            f"(sparsity {_format_share(self.kernel_sparsity)})",
        ]
        if self.uncounted_layers:
            lines.append(
                f"INCOMPLETE: MACs and FLOPs above leave out {len(self.uncounted_layers)} layer(s) "
                f"whose MACs are unknown: {', '.join(self.uncounted_layers)}"
            )
            if self.sequence_length is None and any(
                record.type == "InputLayer" and None in record.output_shape[1:]
                for record in self.layers
            ):
                lines.append(
                    "The inputs have an axis of unknown size: tfprune.analyze(model, "
                    "sequence_length=...) counts the layers over it at that length."
                )
        return "\n".join(lines)


def analyze(model, sequence_length=None):
    """Counts params, MACs and kernel sparsity per layer of a model.

    The graph's recorded shapes are used; the model is not run. One record per
    layer or graph operation (`x * 0.5` gives a record with 0 params), in
    graph order; a layer called several times gets one record whose MACs sum
    all its calls. A nested Sequential/functional model is expanded into the
    records of its layers, named `"nested_name/layer_name"`. For layers that
    implement `stripped_layer()` (tfprune's training-time layers), params, MACs
    and kernel sparsity are measured on the effective, stripped layer (what
    ships): an STR threshold or a pruning mask is not counted as a parameter.

    MACs are the multiply-accumulates of convolution (Conv1D/2D/3D with
    `groups`, transposed, depthwise with `depth_multiplier`, separable) and
    Dense/EinsumDense kernels (Dense on N-D inputs repeats over leading axes),
    of `MultiHeadAttention` (the query/key/value and output projections,
    `Q K^T` and the weighted sum over values, for the sequence lengths of the
    call), of the products of two activations (`keras.layers.Attention`,
    `keras.layers.Dot`, `keras.ops.matmul`, `einsum`, `dot_product_attention`)
    and of a `ReversibleEmbedding` called with `reverse=True` (hidden vectors
    times the vocabulary table), for one example; `TimeDistributed` multiplies
    its layer's MACs by the steps. Bias additions, normalization, activations,
    pooling, elementwise operations, reshapes and embedding lookups are
    excluded (0 MACs), as in the papers' and Keras's reference figures.

    Text models take token ids of any length (`keras.Input((None,))`): their
    MACs are counted at `sequence_length` tokens, every unknown non-batch axis
    of the model's inputs set to that length and the graph's shapes worked out
    again (`Analysis.sequence_length` says which length was used). Attention
    grows with the square of the length, so MACs per token differ between
    lengths. Layers with weights (or operations that multiply activations) but
    no formula (see `register_macs`), or over an axis whose size stays unknown,
    get `macs=None`, are listed in `Analysis.uncounted_layers`, and make
    `Analysis.complete` False (the totals are then lower bounds; printing the
    analysis says so). A model with composite layers (subclassed blocks made
    of other layers, as keras-hub's `TransformerEncoder`) is analysed through
    `tfprune.graph.flatten`, so the layers inside the blocks are counted, under
    their inlined names.

    Args:
        model: A built Sequential or functional Keras model.
        sequence_length: Int or None. The length given to every unknown
            non-batch axis of the model's inputs (the token axis of a text
            model). Defaults to None: the model's `max_sequence_length` (or its
            `backbone`'s: keras-hub text backbones and task models), else the
            number of rows of its keras-hub `PositionEmbedding` tables (which
            a pruned keras-hub model keeps), else no length: layers over the
            unknown axis are not counted.

    Returns:
        An `Analysis`.

    Raises:
        TypeError: If `model` is not a Keras model or is a subclassed model.
        ValueError: If the model is not built; if `sequence_length` is not a
            positive integer, is longer than the model's `max_sequence_length`
            or position table, or is given for a model whose inputs have no
            unknown axis; or if the graph cannot run at that length.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras.layers.Conv2D(8, 3)(inputs)
    >>> outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    >>> analysis = tfprune.analyze(keras.Model(inputs, outputs))
    >>> analysis.macs == 26 * 26 * 3 * 3 * 1 * 8 + 26 * 26 * 8 * 10
    True
    >>> print(analysis)  # doctest: +SKIP

    Token ids of any length, counted at 16 tokens:

    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 8)(tokens)
    >>> text = keras.Model(tokens, keras.layers.Dense(4)(x))
    >>> tfprune.analyze(text).complete
    False
    >>> analysis = tfprune.analyze(text, sequence_length=16)
    >>> analysis.macs == 16 * 8 * 4, analysis.sequence_length, analysis.complete
    (True, 16, True)
    """
    require_graph_model(model, "tfprune.analyze")
    if sequence_length is not None and not (is_integer(sequence_length) and sequence_length > 0):
        raise ValueError(
            "`tfprune.analyze` expects `sequence_length` to be a positive integer (the number of "
            f"tokens to count the MACs at) or None. Received: sequence_length={sequence_length!r}"
        )
    from tfprune import graph  # noqa: PLC0415 - graph imports the layer handlers

    given = model
    if any(graph.is_composite(layer) and layer._layers for layer in _all_layers(model)):
        model = graph.flatten(model)  # count the layers inside composite blocks
    longest = _longest_sequence(given, model)
    if not _has_unknown_axes(model):
        if sequence_length is not None:
            raise ValueError(
                f"`tfprune.analyze` was given sequence_length={sequence_length}, but the inputs of "
                f"model '{given.name}' have no axis of unknown size for it to fix "
                f"({[tuple(tensor.shape) for tensor in functional_view(model).inputs]}). "
                "Leave `sequence_length` out."
            )
    elif sequence_length is None:
        sequence_length = longest
    elif longest is not None and sequence_length > longest:
        raise ValueError(
            f"`tfprune.analyze` cannot count model '{given.name}' at sequence_length="
            f"{sequence_length}: it accepts at most {longest} tokens (its max_sequence_length or "
            "position table). Pass a shorter `sequence_length`."
        )
    shapes = _Shapes(model, sequence_length)
    return Analysis(
        model_name=model.name,
        layers=tuple(_records(model, prefix="", calls=1, shapes=shapes)),
        sequence_length=sequence_length,
    )


def _has_unknown_axes(model):
    return any(None in tuple(tensor.shape)[1:] for tensor in functional_view(model).inputs)


def _longest_sequence(model, flat):
    """The most tokens `model` accepts, or None when it does not say.

    Read from `max_sequence_length` (keras-hub backbones; task models hold
    theirs as `backbone`), else from the keras-hub `PositionEmbedding` tables
    in the graph: a pruned copy keeps those, not the backbone class.
    """
    for owner in (model, getattr(model, "backbone", None)):
        length = getattr(owner, "max_sequence_length", None)
        if is_integer(length) and length > 0:
            return int(length)
    lengths = [
        layer.sequence_length for layer in _all_layers(flat) if _is_position_embedding(layer)
    ]
    return max(lengths) if lengths else None


def _is_position_embedding(layer):
    return any(
        (layer_class.__module__, layer_class.__name__)
        == ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding")
        for layer_class in type(layer).__mro__
    )


class _Shapes:
    """The shapes of a graph model's tensors, with its inputs' unknown axes `length` long.

    Without a length, every tensor keeps the shape the graph recorded. With one,
    the graph's operations are run on `KerasTensor`s (`compute_output_spec`:
    nothing is computed, no call node is added to the user's layers) from inputs
    whose unknown non-batch axes are `length` long, nested graph models included.
    """

    def __init__(self, model, length=None):
        self._specs = {}
        if length is None:
            return
        graph = functional_view(model)
        inputs = [
            keras.KerasTensor(
                (tensor.shape[0], *(length if size is None else size for size in tensor.shape[1:])),
                dtype=tensor.dtype,
            )
            for tensor in graph.inputs
        ]
        self._run(graph, inputs, length)

    def _run(self, graph, inputs, length):
        for tensor, spec in zip(graph.inputs, inputs):
            self._specs[id(tensor)] = spec
        # The order of `Functional._run_through_graph`: deepest nodes (inputs) first.
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.is_input or not node.operation:
                    continue
                if any(id(tensor) not in self._specs for tensor in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(self._specs)
                operation = node.operation
                try:
                    if isinstance(operation, keras.Model) and _is_graph_model(operation):
                        inner = functional_view(operation)
                        outputs = self._run(inner, keras.tree.flatten(args[0]), length)
                    else:
                        outputs = operation.compute_output_spec(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - said in one sentence below
                    raise ValueError(
                        f"`tfprune.analyze` could not work out the shapes of '{operation.name}' "
                        f"({type(operation).__name__}) at sequence_length={length}: {error} "
                        "Pass a `sequence_length` the model accepts."
                    ) from error
                for tensor, spec in zip(node.outputs, keras.tree.flatten(outputs)):
                    self._specs[id(tensor)] = spec
        return [self._specs.get(id(tensor), tensor) for tensor in graph.outputs]

    def resolve(self, value):
        """The `KerasTensor` standing for `value` at the chosen length (`value` itself otherwise)."""
        if isinstance(value, keras.KerasTensor):
            return self._specs.get(id(value), value)
        return value

    def shape(self, tensor):
        return tuple(self.resolve(tensor).shape)


def _all_layers(model):
    for layer in functional_view(model).layers:
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            yield from _all_layers(layer)
        else:
            yield layer


def _records(model, prefix, calls, shapes):
    """Yields the records of a graph model; `calls` multiplies the MACs."""
    graph = functional_view(model)
    # Keras has no public accessor for a graph's call nodes; `_nodes_by_depth`
    # (this graph's nodes) and `_inbound_nodes` (a layer's calls) are what
    # `keras.Model.summary` reads too.
    graph_nodes = {id(node) for nodes in graph._nodes_by_depth.values() for node in nodes}
    for operation in graph.operations:
        if isinstance(operation, keras.layers.InputLayer):
            if not prefix:  # a nested model's inputs repeat the outer tensors
                yield _record(operation, prefix, [], 0, shapes)
            continue
        nodes = [node for node in operation._inbound_nodes if id(node) in graph_nodes]
        if isinstance(operation, keras.Model) and _is_graph_model(operation):
            yield from _records(operation, f"{prefix}{operation.name}/", calls * len(nodes), shapes)
            continue
        yield _record(operation, prefix, nodes, calls, shapes)


def _is_graph_model(model):
    try:
        require_graph_model(model, "tfprune.analyze")
    except (TypeError, ValueError):
        return False
    return True


def _record(operation, prefix, nodes, calls, shapes):
    if nodes:
        output_shapes = [shapes.shape(tensor) for tensor in nodes[0].output_tensors]
    else:  # an InputLayer
        output_shapes = [shapes.shape(operation.output)]
    effective = operation.stripped_layer() if hasattr(operation, "stripped_layer") else operation
    kernels = [
        # `.numpy()`: converting a TensorFlow variable with NumPy 2 raises a DeprecationWarning.
        weight.numpy()
        for weight in getattr(effective, "weights", [])
        if weight.name.endswith("kernel")
    ]
    per_call = [_node_macs(effective, node, shapes) for node in nodes]
    return LayerRecord(
        name=prefix + operation.name,
        type=type(operation).__name__,
        output_shape=output_shapes[0] if len(output_shapes) == 1 else output_shapes,
        params=_count(getattr(effective, "weights", [])),
        trainable_params=_count(getattr(effective, "trainable_weights", [])),
        macs=None if None in per_call else calls * sum(per_call),
        kernel_params=sum(kernel.size for kernel in kernels),
        nonzero_kernel_params=sum(int(np.count_nonzero(kernel)) for kernel in kernels),
    )


def _node_macs(layer, node, shapes):
    """MACs of the call `node` of `layer`, or None when they cannot be counted."""
    function = _mac_function(layer)
    if isinstance(function, _CallFormula):
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
    if isinstance(function, _CallFormula):
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


def _count(weights):
    return sum(math.prod(weight.shape) for weight in weights)


def _sparsity(kernel_params, nonzero_kernel_params):
    if kernel_params == 0:
        return None
    return 1.0 - nonzero_kernel_params / kernel_params


def _shape_to_list(shape):
    if isinstance(shape, tuple):
        return list(shape)
    return [list(item) for item in shape]


def _format_count(value):
    return "?" if value is None else f"{value:,}"


def _format_share(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _human(value):
    """Formats 3896 as "3,896 (3.90 K)" and 122 as "122"."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value:,} ({value / factor:.2f} {suffix})"
    return f"{value:,}"
