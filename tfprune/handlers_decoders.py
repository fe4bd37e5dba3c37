"""Decoder language models: grouped-query attention, and sizes read while the model runs.

keras-hub's decoders (Llama, Gemma, Qwen, Mistral, ...) are functional
models of decoder blocks. A block holds no weights of its own, so
`tfprune.graph.flatten` inlines it; inside, it builds a causal mask from the
sequence length, which is unknown on symbolic tensors. While a block is
traced, `ops.shape` gives a marker for that length and `ops.arange` /
`ops.broadcast_to` given one record the two operations below, which read the
size from a tensor when the model runs (`SizeRange`, `BroadcastToSizes`):
the traced block then holds for any length.

The attention layers stay whole: their heads are a unit of pruning. With
grouped-query attention (`num_query_heads` query heads sharing
`num_key_value_heads` key/value heads, query head `i` reading key/value
head `i // (num_query_heads // num_key_value_heads)`), two choices keep the
layer valid, chosen with `gqa=` (`tfprune.prune`, `tfprune.graph.build`,
`tfprune.surgery`):

- `"query_heads"` (default): the query heads of each key/value group are a
  channel group of their own (`ChannelGroup.heads_of` names the layer), so a
  rate removes the same number from every key/value group (the groups are
  balanced: `tfprune.prune` gives the query-head groups of one layer the same
  width) and the key/value projections, and so the key/value cache, keep
  their size.
- `"groups"`: whole key/value heads, each with its query heads; the cache
  shrinks with them.

Heads are scored like `MultiHeadAttention` heads: the l1 norm of their
query (and, for `"groups"`, key and value) projection weights.

A layer whose head width follows `hidden_dim // num_query_heads` (Llama's
and Qwen's attention) is rebuilt as a subclass that keeps `head_dim`
explicit (`LlamaAttention`, `QwenAttention` registered in the `tfprune`
package), so the pruned model reloads from `.keras` with `tfprune`
imported. Two other head layouts are read the same way: GPT-NeoX's fused
query-key-value projection `(hidden, heads, 3 * head width)`
(`GPTNeoXAttention`) and SmolLM3's Dense projections with the heads
flattened, `(hidden, heads * head width)` (`SmolLM3Attention`).

Mixture-of-experts blocks (Mixtral, Qwen-MoE, Qwen3-MoE, GPT-OSS) keep
their experts' gated MLPs stacked, one tensor per projection: the units
of the experts are one channel group, each unit removed from every expert
(the stacked tensors cannot hold experts of different widths), scored over
all experts; the router and the number of experts are kept.
"""

import inspect
import math

import keras
import numpy as np

from tfprune import _utils, handlers
from tfprune.handlers import (
    Freeze,
    Handler,
    _MultiHeadAttention,
    _Normalization,
    _ReversibleEmbedding,
    _width,
    handler_for,
    register_handler,
)

__all__ = ["BroadcastToSizes", "DenseMultiply", "GQA_MODES", "SizeRange", "explicit_head_dim_class"]

GQA_MODES = ("query_heads", "groups")


@keras.saving.register_keras_serializable(package="tfprune")
class SizeRange(keras.Operation):
    """`keras.ops.arange(start, size, step)` where `size` is an axis of a tensor, read when the model runs.

    Recorded by `tfprune.graph.flatten` for `ops.arange(ops.shape(x)[1])`
    in a traced decoder block (a causal mask's positions).

    Args:
        axis: Int. The axis of the input whose size ends the range.
        start: Int. First value. Defaults to 0.
        step: Int. Defaults to 1.
        dtype: Optional dtype name of the result.
        name: Optional name.

    Call arguments:
        x: A tensor; only its shape is read.

    Returns:
        A 1-D tensor.

    Example:

    >>> keras.ops.convert_to_numpy(tfprune.handlers_decoders.SizeRange(axis=1)(keras.ops.zeros((2, 3, 4)))).tolist()
    [0, 1, 2]
    """

    def __init__(self, axis, start=0, step=1, dtype=None, name=None):
        super().__init__(name=name)
        self.axis = int(axis)
        self.start = int(start)
        self.step = int(step)
        self.range_dtype = dtype

    def call(self, x):
        stop = keras.ops.shape(x)[self.axis]
        return keras.ops.arange(self.start, stop, self.step, dtype=self.range_dtype)

    def compute_output_spec(self, x):
        size = x.shape[self.axis]
        length = None if size is None else len(range(self.start, size, self.step))
        dtype = self.range_dtype or "int32"
        return keras.KerasTensor((length,), dtype=dtype)

    def get_config(self):
        return {"axis": self.axis, "start": self.start, "step": self.step, "dtype": self.range_dtype,
                "name": self.name}  # fmt: skip


@keras.saving.register_keras_serializable(package="tfprune")
class BroadcastToSizes(keras.Operation):
    """`keras.ops.broadcast_to(x, shape)` where entries of `shape` are axes of other tensors.

    Recorded by `tfprune.graph.flatten` for `ops.broadcast_to(mask,
    (batch, length, length))` in a traced decoder block.

    Args:
        sizes: List. One entry per output axis: an int, or `[i, axis]` for
            the size of `axis` of the `i`-th tensor after `x`.
        name: Optional name.

    Call arguments:
        x: The tensor to broadcast.
        *sources: The tensors whose sizes `sizes` refers to.

    Returns:
        The broadcast tensor.

    Example:

    >>> op = tfprune.handlers_decoders.BroadcastToSizes(sizes=[[0, 0], 3])
    >>> tuple(op(keras.ops.ones((3,)), keras.ops.zeros((2, 5))).shape)
    (2, 3)
    """

    def __init__(self, sizes, name=None):
        super().__init__(name=name)
        self.sizes = [list(size) if isinstance(size, (list, tuple)) else int(size) for size in sizes]

    def _shape(self, sources, shape_of):
        return tuple(shape_of(sources[size[0]])[size[1]] if isinstance(size, list) else size for size in self.sizes)

    def call(self, x, *sources):
        return keras.ops.broadcast_to(x, self._shape(sources, keras.ops.shape))

    def compute_output_spec(self, x, *sources):
        return keras.KerasTensor(self._shape(sources, lambda tensor: tensor.shape), dtype=x.dtype)

    def get_config(self):
        return {"sizes": self.sizes, "name": self.name}


_MULTIPLY = type(keras.ops.multiply(keras.KerasTensor((2,)), keras.KerasTensor((2,)))._keras_history.operation)


@keras.saving.register_keras_serializable(package="tfprune")
class DenseMultiply(_MULTIPLY):
    """`keras.ops.multiply`, whose output is sparse only when a tensor input is.

    Keras's own `Multiply` marks `x * c` sparse when the constant `c` is not
    a Keras tensor; `tfprune.graph.flatten` records such products with this
    operation, so that the layers after them are not given a sparse
    placeholder (`graph._dense_unless_sparse_input`).

    Example:

    >>> x = keras.Input((4,))
    >>> tfprune.handlers_decoders.DenseMultiply()(x, 2.0).sparse
    False
    """

    def compute_output_spec(self, x1, x2):
        spec = super().compute_output_spec(x1, x2)
        sparse = any(getattr(value, "sparse", False) for value in (x1, x2) if isinstance(value, keras.KerasTensor))
        return keras.KerasTensor(spec.shape, dtype=spec.dtype, sparse=sparse)


class _ReadsShape(Handler):
    """`SizeRange` / `BroadcastToSizes`: new, pinned channels; the inputs read only for their shapes pass untouched."""

    def trace(self, node, tracer):
        output = node.outputs[0]
        reason = f"'{node.operation.name}' makes positions or a mask from a sequence length"
        if isinstance(node.operation, BroadcastToSizes):
            # The broadcast tensor's own channels (a mask's positions) are laid out anew.
            tracer.pin(tracer.channels(node.input_tensors[0]), reason)
        width = _width(output)
        channels = tracer.new_channels(1 if width is None else width, node.operation.name)
        tracer.pin(channels, reason)
        return [channels]


# ---------------------------------------------------------------- grouped-query attention


class _GroupedQueryAttention(Handler):
    """Attention layers with `num_query_heads` query heads over `num_key_value_heads` key/value heads.

    The four projections are EinsumDense layers found by attribute name;
    their equations say which kernel axes are the hidden width and the
    heads (`"bqm,muh->bquh"`, `"btd,ndh->btnh"`, ... and the output
    projection `"bquh,uhm->bqm"`). The hidden channels are read on the
    query, key and value kernels' input axis and made by the output
    projection, like a Dense layer's units; heads follow the layer's mode
    (see the module docstring). Called with a key/value cache, or in a
    layer whose projections are not found, it is frozen.

    Args:
        projections: Tuple of four attribute names: query, key, value and
            output projections.
        extra_per_head: Tuple of attribute names of further EinsumDense
            layers laid out like the query projection (a gate), sliced
            with the query heads.
        explicit_head_dim: Optional string naming the subclass the layer is
            rebuilt as (`explicit_head_dim_class`), which keeps `head_dim`
            in its config (for layers whose head width is
            `hidden_dim // num_query_heads`).
        per_head_weights: Tuple of attribute names of the layer's own
            weights with one entry per query head (GPT-OSS's attention
            sinks), sliced with the query heads.
    """

    def __init__(self, projections, extra_per_head=(), explicit_head_dim=None, per_head_weights=()):
        self.projections = projections
        self.extra_per_head = extra_per_head
        self.per_head_weights = per_head_weights
        self.explicit_head_dim = explicit_head_dim
        self._layouts = {}  # layer name -> weight indices and head axes, for the resize

    @staticmethod
    def _axes(dense, side):
        """(hidden axis, head axis) of a projection's kernel: `side` "in" for q/k/v, "out" for the output."""
        inputs, output = dense.equation.split("->")
        input_spec, kernel_spec = inputs.split(",")
        if side == "in":
            hidden, head = input_spec[-1], output[-2]
        else:
            hidden, head = output[-1], input_spec[-2]
        if hidden not in kernel_spec or head not in kernel_spec:
            return None
        return kernel_spec.index(hidden), kernel_spec.index(head)

    _projection_type = keras.layers.EinsumDense  # the class of the projection layers

    def _projections(self, layer, names=None):
        found = [getattr(layer, name, None) for name in names or self.projections]
        if not all(isinstance(dense, self._projection_type) for dense in found):
            return None
        if any(getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None) for dense in found):
            return None
        return found

    def trace(self, node, tracer):
        layer = node.operation
        projections = self._projections(layer)
        arguments = node.arguments.kwargs
        why = (
            "has no query, key, value and output EinsumDense projections tfprune knows" if projections is None
            else "is called with a key/value cache" if arguments.get("cache") is not None
            else "returns more than its output" if len(node.outputs) != 1
            else None
        )  # fmt: skip
        if why is None:
            query, key, value, output = projections
            axes = [self._axes(dense, "in") for dense in (query, key, value)] + [self._axes(output, "out")]
            if None in axes:
                why = "has projections whose equations tfprune cannot read"
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        inputs = [tracer.channels(tensor) for tensor in self._inputs(node)]
        hidden = inputs[0]
        num_query = query.kernel.shape[axes[0][1]]
        num_key_value = key.kernel.shape[axes[1][1]]
        if num_query % num_key_value or value.kernel.shape[axes[2][1]] != num_key_value:
            return Freeze(f"'{layer.name}' has {num_query} query heads over {num_key_value} key/value heads").trace(
                node, tracer
            )
        query_heads, key_value_heads, _ = _head_groups(layer.name, num_query, num_key_value, tracer)
        for dense, (hidden_axis, head_axis), channels in zip((query, key, value), axes[:3], inputs):
            tracer.use(layer, dense.kernel, hidden_axis, channels, "input")
            heads = query_heads if dense is query else key_value_heads
            # Heads are scored on the query projection (`head_kernel`); key and value heads are sliced with them.
            role = "output" if dense is query else "param"
            if heads is not None:
                tracer.use(layer, dense.kernel, head_axis, heads, role)
                if getattr(dense, "bias", None) is not None:
                    self._use_bias(layer, dense, heads, tracer, role)
        for name in self.per_head_weights:
            tracer.use(layer, getattr(layer, name, None), 0, query_heads, "param")
        for name in self.extra_per_head:
            extra = getattr(layer, name, None)
            if isinstance(extra, keras.layers.EinsumDense):
                extra_axes = self._axes(extra, "in")
                tracer.use(layer, extra.kernel, extra_axes[0], hidden, "input")
                tracer.use(layer, extra.kernel, extra_axes[1], query_heads, "output")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, axes[3][1], query_heads, "input")
        tracer.use(layer, output.kernel, axes[3][0], outputs, "output")
        if getattr(output, "bias", None) is not None:
            tracer.use(layer, output.bias, -1, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = (
            (weights.index(id(query.kernel)), axes[0][1]),
            (weights.index(id(key.kernel)), axes[1][1]),
        )
        return [outputs]

    @staticmethod
    def _inputs(node):
        """The query, key and value tensors of the call (keras-hub's layers: one hidden sequence)."""
        args, kwargs = node.arguments.args, node.arguments.kwargs
        hidden = args[0] if args else next(kwargs[name] for name in ("hidden_states", "x", "inputs") if name in kwargs)
        return [hidden] * 3

    @staticmethod
    def _use_bias(layer, dense, heads, tracer, role):
        # A bias laid out (heads, head_dim): its head axis is the output's second-to-last.
        bias = dense.bias
        if len(bias.shape) >= 2 and bias.shape[-2] == len(heads):
            tracer.use(layer, bias, -2, heads, role)

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(self._inputs(node)[0])])

    def head_kernel(self, layer):
        """The query projection's kernel as `(coefficients, query heads)`: what magnitude criteria score heads by.

        Args:
            layer: An attention layer this handler traces.

        Returns:
            NumPy array.
        """
        query = self._projections(layer)[0]
        head_axis = self._axes(query, "in")[1]
        kernel = np.moveaxis(keras.ops.convert_to_numpy(query.kernel), head_axis, -1)
        return kernel.reshape(-1, kernel.shape[-1])

    def resize_for_weights(self, config, output_width, weight_shapes):
        (query_index, query_axis), (key_index, key_axis) = self._layouts[config["name"]]
        config = dict(config)
        config["num_query_heads"] = int(weight_shapes[query_index][query_axis])
        config["num_key_value_heads"] = int(weight_shapes[key_index][key_axis])
        if "head_dim" in config and config["head_dim"] is None:
            # Left to `hidden_dim // num_query_heads` it would change with the heads: the query kernel's
            # last axis is the head width ("muh").
            config["head_dim"] = int(weight_shapes[query_index][-1])
        return config

    def _explicit_class(self):
        return None if self.explicit_head_dim is None else explicit_head_dim_class(self.explicit_head_dim)

    def rebuild(self, layer, config):
        """A new layer from `config`; with `explicit_head_dim`, of that class, keeping the head width."""
        explicit = self._explicit_class()
        if explicit is None:
            return type(layer).from_config(config)
        return explicit.from_config({**config, "head_dim": _head_dim(layer, self._projections(layer)[0])})

    def copy(self, layer):
        """A copy of `layer` with its weights, or None to copy it from its config (`tfprune.graph.flatten`)."""
        explicit = self._explicit_class()
        if explicit is None or type(layer) is explicit or not self._projections(layer):
            return _copy_from_attributes(layer)
        return explicit.copy_of(layer, _head_dim(layer, self._projections(layer)[0]))


def _head_dim(layer, query):
    """The head width: `layer.head_dim`, or the query kernel's last axis (`"muh"`, `"ndh"`)."""
    head_dim = getattr(layer, "head_dim", None)
    return int(head_dim if head_dim is not None else query.kernel.shape[-1])


def _copy_from_attributes(layer):
    """A copy of a keras-hub layer, from its config if it round-trips, else from its attributes.

    keras-hub builds some layers with a `DTypePolicy` object as `dtype`
    (Gemma's RMSNormalization and attention), which Keras cannot write to a
    config, and some `get_config`s read attributes the layer never sets
    (Qwen3's attention); the copy is then made from the constructor's
    arguments read back from the layer, with the policy's name, and its own
    config loads back.
    """
    copy = _utils.copy_layer(layer)
    if copy is not None:
        return copy
    copy = type(layer).from_config(_constructor_config(layer, type(layer)))
    _utils._build_like(copy, layer)
    copy.set_weights(layer.get_weights())
    return copy


class _HubNormalization(_Normalization):
    """keras-hub's RMS / layer norms over the hidden width (one `scale` per channel), copied from their attributes."""

    def copy(self, layer):
        return _copy_from_attributes(layer)


def _attribute(layer, path):
    """`layer.a.b` for `path` "a.b", or None when an attribute is missing."""
    for name in path.split("."):
        layer = getattr(layer, name, None)
    return layer


class _MixtureOfExperts(Handler):
    """keras-hub's sparse mixture-of-experts blocks: the experts' units pruned, the same units in every expert.

    A router (a Dense layer, `num_experts` logits per token) sends each token
    to some experts; the experts' gated MLPs are stacked in one tensor per
    projection, `(experts, hidden, units)` for the gate and up projections
    (separate, or fused as `[gate | up]` halves or interleaved `gate, up`
    pairs) and `(experts, units, hidden)` for the down projection. Unit `u`
    is slice `u` of every expert's gate, up and down weights: the units are
    one channel group, so every expert keeps the same units (the stacked
    tensors cannot hold experts of different widths), scored over all
    experts. Removing a unit whose gate or up weights are zero in every
    expert leaves the outputs unchanged, as the routing only reads the
    router. A shared expert (an ordinary gated MLP beside the routed ones,
    Qwen-MoE) has its units as a group of its own. The hidden channels are
    read by the router, the experts and the shared expert, and made by the
    down projections; the router's logits (the second output) are one per
    expert, pinned. The block is copied from its constructor's arguments,
    read back from its attributes (`attributes` maps an argument to the
    attribute keeping it, where the names differ).

    Args:
        router: Dotted attribute path of the router Dense layer.
        experts: Attribute of the expert bank layer.
        gate: Attribute (on the expert bank) of the gate kernel, or of the
            fused gate-and-up kernel.
        down: Attribute of the down kernel.
        up: Attribute of the up kernel, when not fused.
        fused: None, `"halves"` or `"interleaved"`: how `gate` holds the up
            projection too.
        gate_up_bias: Attribute of the gate (and up) bias `(experts, units)`.
        down_bias: Attribute of the down bias `(experts, hidden)`.
        units_key: Constructor argument holding the experts' width.
        shared: Attribute of the shared expert (an MLP of three Dense layers
            `_feedforward_gate_dense`, `_feedforward_intermediate_dense`,
            `_feedforward_output_dense`).
        shared_key: Constructor argument holding the shared expert's width.
        shared_gate: Attribute of the Dense layer gating the shared expert.
        attributes: Dict from constructor argument to attribute name.
    """

    _SHARED = ("_feedforward_gate_dense", "_feedforward_intermediate_dense", "_feedforward_output_dense")
    makes_mlp_units = True  # its unit groups are what `tfprune.prune(..., targets="mlp")` selects

    def __init__(self, router, experts, gate, down, up=None, fused=None, gate_up_bias=None, down_bias=None,
                 units_key="intermediate_dim", shared=None, shared_key=None, shared_gate=None, attributes=None):  # fmt: skip
        self.router, self.experts, self.gate, self.down, self.up = router, experts, gate, down, up
        self.fused, self.gate_up_bias, self.down_bias = fused, gate_up_bias, down_bias
        self.units_key, self.shared, self.shared_key, self.shared_gate = units_key, shared, shared_key, shared_gate
        self.attributes = attributes or {}
        self._layouts = {}  # layer name -> (index of the down kernel, index of the shared down kernel or None)

    def _parts(self, layer):
        """(router, expert bank, shared expert Dense layers or None), or None when one is missing."""
        router, bank = _attribute(layer, self.router), getattr(layer, self.experts, None)
        if not isinstance(router, keras.layers.Dense) or bank is None:
            return None
        names = [self.gate, self.down] + ([self.up] if self.up else [])
        if not all(isinstance(getattr(bank, name, None), keras.Variable) for name in names):
            return None
        shared = None
        if self.shared is not None:
            mlp = getattr(layer, self.shared, None)
            shared = [getattr(mlp, name, None) for name in self._SHARED]
            if not all(isinstance(dense, keras.layers.Dense) for dense in shared):
                return None
        return router, bank, shared

    def trace(self, node, tracer):
        layer = node.operation
        parts = self._parts(layer)
        if parts is None:
            return Freeze(f"'{layer.name}' has no router and expert weights tfprune knows").trace(node, tracer)
        router, bank, shared = parts
        hidden = tracer.channels(self._hidden_input(node))
        gate, down = getattr(bank, self.gate), getattr(bank, self.down)
        units = tracer.new_channels(int(down.shape[1]), f"{layer.name}_experts")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, router.kernel, 0, hidden, "input")
        # Each unit's positions on the gate (and fused up) kernel's last axis.
        on_gate = {None: units, "halves": np.concatenate([units, units]), "interleaved": np.repeat(units, 2)}
        for kernel in [gate] + ([getattr(bank, self.up)] if self.up else []):
            tracer.use(layer, kernel, 1, hidden, "input")
            tracer.use(layer, kernel, 2, on_gate[self.fused], "output")
        if self.gate_up_bias is not None:
            tracer.use(layer, getattr(bank, self.gate_up_bias), 1, on_gate[self.fused], "output")
        tracer.use(layer, down, 1, units, "input")
        tracer.use(layer, down, 2, outputs, "output")
        if self.down_bias is not None:
            tracer.use(layer, getattr(bank, self.down_bias), 1, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        shared_down = None
        if shared is not None:
            shared_gate, shared_up, shared_output = shared
            shared_units = tracer.new_channels(shared_output.kernel.shape[0], f"{layer.name}_shared_expert")
            for dense in (shared_gate, shared_up):
                tracer.use(layer, dense.kernel, 0, hidden, "input")
                tracer.use(layer, dense.kernel, 1, shared_units, "output")
                tracer.use(layer, dense.bias, 0, shared_units, "output")
            tracer.use(layer, shared_output.kernel, 0, shared_units, "input")
            tracer.use(layer, shared_output.kernel, 1, outputs, "output")
            tracer.use(layer, shared_output.bias, 0, outputs, "output")
            shared_down = weights.index(id(shared_output.kernel))
        if self.shared_gate is not None:
            tracer.use(layer, getattr(layer, self.shared_gate).kernel, 0, hidden, "input")
        self._layouts[layer.name] = (weights.index(id(down)), shared_down)
        results = [outputs]
        for extra in node.outputs[1:]:  # the router's logits: one per expert
            logits = tracer.new_channels(_width(extra), f"{layer.name}_router")
            tracer.pin(logits, f"'{layer.name}' returns its router's logits, one per expert")
            results.append(logits)
        return results

    @staticmethod
    def _hidden_input(node):
        args, kwargs = node.arguments.args, node.arguments.kwargs
        return args[0] if args else kwargs["hidden_states"]

    def resize_for_weights(self, config, output_width, weight_shapes):
        down, shared_down = self._layouts[config["name"]]
        config = {**config, "hidden_dim": int(output_width), self.units_key: int(weight_shapes[down][1])}
        if shared_down is not None:
            config[self.shared_key] = int(weight_shapes[shared_down][0])
        return config

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(self._hidden_input(node))])

    def copy(self, layer):
        """A copy of `layer` made from its constructor's arguments, so that its config round-trips."""
        copy = type(layer).from_config(_constructor_config(layer, type(layer), self.attributes))
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy


class _KerasGroupedQueryAttention(_GroupedQueryAttention):
    """`keras.layers.GroupQueryAttention`: query, value and key are separate call arguments."""

    @staticmethod
    def _arguments(node):
        args, kwargs = node.arguments.args, node.arguments.kwargs
        query = args[0] if args else kwargs["query"]
        value = args[1] if len(args) > 1 else kwargs["value"]
        key = args[2] if len(args) > 2 else kwargs.get("key")
        return query, value, key

    @classmethod
    def _inputs(cls, node):
        query, value, key = cls._arguments(node)
        return [query, value if key is None else key, value]

    def trace(self, node, tracer):
        layer = node.operation
        if getattr(layer, "use_gate", False) or getattr(layer, "_use_gate", False):
            return Freeze(f"'{layer.name}' is a gated attention layer (use_gate=True)").trace(node, tracer)
        if node.arguments.kwargs.get("return_attention_scores") or len(node.outputs) != 1:
            return Freeze(f"'{layer.name}' returns its attention scores").trace(node, tracer)
        return super().trace(node, tracer)

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        query, value, key = self._arguments(node)
        layer.build(shapes[id(query)], shapes[id(value)], None if key is None else shapes[id(key)])

    def rebuild(self, layer, config):
        return type(layer).from_config(config)


class _ExplicitHeadDimMixin:
    """Keeps `head_dim` explicit in an attention layer that computes it as `hidden_dim // num_query_heads`."""

    def __init__(self, *args, head_dim=None, **kwargs):
        if "head_dim" in inspect.signature(super().__init__).parameters:  # Qwen3's takes one
            kwargs["head_dim"] = head_dim
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim

    def build(self, inputs_shape):
        if self.head_dim is None:
            return super().build(inputs_shape)
        hidden = inputs_shape[-1]
        # The parent builds its projections for `width // num_query_heads`: built on a
        # width that gives this head_dim, then the projections that read or write the
        # hidden width are made again for the real one, each in its place (the
        # weights keep their order, so the surgery's sliced weights fit).
        super().build((*inputs_shape[:-1], self.num_query_heads * self.head_dim))
        self._inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        if hasattr(self, "_head_dim"):  # Mixtral keeps it, and its hidden width, for its call
            self._head_dim = self.head_dim
            self._hidden_dim = hidden
        for name in self._tfprune_projections:
            old = getattr(self, name)
            config = old.get_config()
            if name == self._tfprune_projections[-1]:
                config["output_shape"] = (None, hidden)
                shape = (None, None, self.num_query_heads, self.head_dim)
            else:
                shape = inputs_shape
            new = type(old).from_config(config)
            position = next(i for i, layer in enumerate(self._layers) if layer is old)
            self._tracker.untrack(old)
            setattr(self, name, new)
            # Where the old one was among the sub-layers: the weights keep their order.
            self._layers.remove(new)
            self._layers.insert(position, new)
            new.build(shape)
        self.built = True

    def get_config(self):
        return {**_constructor_config(self, type(self).__mro__[2]), "head_dim": self.head_dim}

    @classmethod
    def copy_of(cls, layer, head_dim):
        """A copy of keras-hub's `layer` (built, same weights) as this class, with `head_dim`."""
        copy = cls.from_config({**_constructor_config(layer, type(layer)), "head_dim": int(head_dim)})
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy


class _FusedQueryKeyValue(Handler):
    """GPT-NeoX's attention: one fused query-key-value projection laid out per head.

    The fused kernel is `(hidden, heads, 3 * head width)` (`"abc,cde->abde"`:
    each head's query, key and value side by side), its bias `(heads, 3 *
    head width)`, and the output projection reads the heads flattened,
    `(heads * head width, hidden)`: head `h` is slice `h` of the fused
    kernel's head axis and rows `h * width ... (h + 1) * width - 1` of the
    output kernel, so heads are pruned like `MultiHeadAttention` heads. The
    layer computes its head width as `hidden_dim // num_heads`, so it is
    rebuilt as tfprune's `GPTNeoXAttention`, which keeps `head_dim`
    explicit. Called with a key/value cache it is frozen (tfprune.decoding
    does not run it step by step).
    """

    explicit_head_dim = "GPTNeoXAttention"

    def __init__(self):
        self._layouts = {}  # layer name -> (index of the fused kernel, head width)

    @staticmethod
    def _projections(layer):
        fused, output = getattr(layer, "_qkv_dense", None), getattr(layer, "_output_dense", None)
        if not all(isinstance(dense, keras.layers.EinsumDense) for dense in (fused, output)):
            return None
        if fused.equation != "abc,cde->abde" or output.equation != "abc,cd->abd":
            return None
        return fused, output

    def trace(self, node, tracer):
        layer = node.operation
        projections = self._projections(layer)
        why = (
            "has no fused query-key-value and output EinsumDense projections tfprune knows" if projections is None
            else "is called with a key/value cache" if node.arguments.kwargs.get("cache") is not None
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        fused, output = projections
        hidden = tracer.channels(self._hidden_input(node))
        num_heads, width = int(fused.kernel.shape[1]), int(fused.kernel.shape[2]) // 3
        heads = tracer.new_channels(num_heads, f"{layer.name}_heads")
        for channel in heads.tolist():
            tracer._heads[channel] = layer.name
        tracer.use(layer, fused.kernel, 0, hidden, "input")
        tracer.use(layer, fused.kernel, 1, heads, "output")
        tracer.use(layer, getattr(fused, "bias", None), 0, heads, "output")
        tracer.use(layer, output.kernel, 0, np.repeat(heads, width), "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, 1, outputs, "output")
        tracer.use(layer, getattr(output, "bias", None), 0, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = (weights.index(id(fused.kernel)), width)
        return [outputs] + [tracer.new_channels(_width(extra), layer.name) for extra in node.outputs[1:]]

    @staticmethod
    def _hidden_input(node):
        args, kwargs = node.arguments.args, node.arguments.kwargs
        return args[0] if args else kwargs["hidden_states"]

    def head_kernel(self, layer):
        """The fused kernel as `(coefficients, heads)`: a head's query, key and value weights together.

        Args:
            layer: A GPT-NeoX attention layer.

        Returns:
            NumPy array.
        """
        kernel = np.moveaxis(keras.ops.convert_to_numpy(self._projections(layer)[0].kernel), 1, -1)
        return kernel.reshape(-1, kernel.shape[-1])

    def resize_for_weights(self, config, output_width, weight_shapes):
        fused, width = self._layouts[config["name"]]
        return {**config, "num_heads": int(weight_shapes[fused][1]), "head_dim": width}

    def rebuild(self, layer, config):
        """A tfprune `GPTNeoXAttention` from `config` (which names the head width)."""
        return explicit_head_dim_class(self.explicit_head_dim).from_config(config)

    def copy(self, layer):
        """A copy of `layer` (built, same weights) as tfprune's `GPTNeoXAttention`, which a traced block can record."""
        explicit = explicit_head_dim_class(self.explicit_head_dim)
        projections = self._projections(layer)
        if type(layer) is explicit or projections is None:
            return None
        width = int(projections[0].kernel.shape[2]) // 3
        copy = explicit.from_config({**layer.get_config(), "head_dim": width})
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(self._hidden_input(node))])


class _FusedHeadDimMixin:
    """Keeps `head_dim` explicit in GPT-NeoX's attention, which computes it as `hidden_dim // num_heads`.

    With `head_dim`, the attention's own width (what its call reshapes the
    heads' outputs to) is `num_heads * head_dim`, and the output projection
    is rebuilt to read that width and write the input's.
    """

    def __init__(self, *args, head_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim
        if head_dim is not None:
            self.attn_head_size = int(head_dim)
            self.rotary_dim = int(self.attn_head_size * self.rotary_percentage)
            self._inv_norm_factor = 1.0 / math.sqrt(self.attn_head_size)
            self.hidden_dim = self.num_heads * self.attn_head_size

    def build(self, input_shape):
        super().build(input_shape)
        if self.head_dim is None:
            return
        old = self._output_dense
        config = {**old.get_config(), "output_shape": (None, input_shape[-1])}
        _replace_sub_layer(self, "_output_dense", type(old).from_config(config), (None, None, self.hidden_dim))

    def __call__(self, *args, **kwargs):
        # Without a cache the layer returns `(output, None)`, and Keras records no operation
        # with a None output: called on symbolic tensors, the output alone is recorded, and the
        # pair its callers unpack (`x, cache = attention(...)`) returned.
        symbolic = any(isinstance(value, keras.KerasTensor) for value in keras.tree.flatten((args, kwargs)))
        if not symbolic or kwargs.get("cache") is not None:
            return super().__call__(*args, **kwargs)
        self._tfprune_output_only = True
        try:
            output = super().__call__(*args, **kwargs)
        finally:
            self._tfprune_output_only = False
        return output, None

    def call(self, *args, **kwargs):
        outputs = super().call(*args, **kwargs)
        if getattr(self, "_tfprune_output_only", False) and isinstance(outputs, tuple) and outputs[1] is None:
            return outputs[0]
        return outputs

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim}


class _FlatHeadsAttention(_GroupedQueryAttention):
    """SmolLM3's grouped-query attention: Dense query, key and value projections with the heads flattened.

    The query kernel is `(hidden, query heads * head width)` (and the key
    and value kernels `(hidden, key/value heads * head width)`): head `h`
    is columns `h * width ... (h + 1) * width - 1`; the output projection
    is an EinsumDense `(query heads, head width, hidden)`. Heads follow the
    `gqa` mode as for the other grouped-query layers. The layer computes its
    head width as `hidden_size // num_attention_heads`, so it is rebuilt as
    tfprune's `SmolLM3Attention`, which keeps `head_dim` (and its output
    width) explicit. Called with a key/value cache it is frozen.
    """

    def __init__(self):
        super().__init__(("q_proj", "k_proj", "v_proj", "o_proj"), explicit_head_dim="SmolLM3Attention")

    def _projections(self, layer):
        found = [getattr(layer, name, None) for name in self.projections]
        if not all(isinstance(dense, keras.layers.Dense) for dense in found[:3]):
            return None
        if not isinstance(found[3], keras.layers.EinsumDense) or found[3].equation != "bquh,uhm->bqm":
            return None
        return found

    def trace(self, node, tracer):
        layer = node.operation
        projections = self._projections(layer)
        why = (
            "has no q_proj, k_proj, v_proj Dense and o_proj EinsumDense projections tfprune knows"
            if projections is None
            else "is called with a key/value cache" if node.arguments.kwargs.get("self_attention_cache") is not None
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        query, key, value, output = projections
        num_query, num_key_value = int(output.kernel.shape[0]), int(layer.num_key_value_heads)
        width = int(output.kernel.shape[1])
        if num_query % num_key_value or key.kernel.shape[1] != num_key_value * width:
            return Freeze(f"'{layer.name}' has {num_query} query heads over {num_key_value} key/value heads").trace(
                node, tracer
            )
        hidden = tracer.channels(self._inputs(node)[0])
        query_heads, key_value_heads, _ = _head_groups(layer.name, num_query, num_key_value, tracer)
        for dense in (query, key, value):
            tracer.use(layer, dense.kernel, 0, hidden, "input")
            heads = query_heads if dense is query else key_value_heads
            if heads is not None:
                columns = np.repeat(heads, width)
                tracer.use(layer, dense.kernel, 1, columns, "param")
                tracer.use(layer, dense.bias, 0, columns, "param")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        # The heads are declared made on the output projection's head axis, one position per
        # head (scores, `head_kernel`, are one per head); the query columns are sliced with them.
        tracer.use(layer, output.kernel, 0, query_heads, "output")
        tracer.use(layer, output.kernel, 2, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = (weights.index(id(query.kernel)), weights.index(id(key.kernel)), width)
        extras = []
        for extra in node.outputs[1:]:
            channels = tracer.new_channels(_width(extra), f"{layer.name}_weights")
            tracer.pin(channels, f"'{layer.name}' returns its attention weights")
            extras.append(channels)
        return [outputs] + extras

    def head_kernel(self, layer):
        """The query kernel as `(coefficients, query heads)`.

        Args:
            layer: A SmolLM3 attention layer.

        Returns:
            NumPy array.
        """
        query, output = self._projections(layer)[0], self._projections(layer)[3]
        heads, width = (int(size) for size in output.kernel.shape[:2])
        kernel = keras.ops.convert_to_numpy(query.kernel).reshape(-1, heads, width)
        return np.moveaxis(kernel, 1, -1).reshape(-1, heads)

    def resize_for_weights(self, config, output_width, weight_shapes):
        query, key, width = self._layouts[config["name"]]
        return {**config, "num_attention_heads": int(weight_shapes[query][1]) // width,
                "num_key_value_heads": int(weight_shapes[key][1]) // width, "head_dim": width,
                "output_dim": int(output_width)}  # fmt: skip

    def rebuild(self, layer, config):
        """A tfprune `SmolLM3Attention` from `config` (which names the head and output widths)."""
        return explicit_head_dim_class(self.explicit_head_dim).from_config(config)

    def copy(self, layer):
        """A copy of `layer` (built, same weights) as tfprune's `SmolLM3Attention`, whose output spec a traced block can record."""
        explicit = explicit_head_dim_class(self.explicit_head_dim)
        if type(layer) is explicit or self._projections(layer) is None:
            return None
        copy = explicit.from_config({**layer.get_config(), "head_dim": int(layer.head_dim)})
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build([shapes[id(self._inputs(node)[0])]])


def _head_groups(name, num_query, num_key_value, tracer):
    """(query heads, key/value heads or None, the head groups) of a grouped-query layer in `tracer.gqa` mode.

    `"groups"`: one group of the key/value heads, each query head the channel of its key/value head;
    `"query_heads"`: the query heads of each key/value head, a group of their own.
    """
    per_group = num_query // num_key_value
    if tracer.gqa == "groups":
        key_value_heads = tracer.new_channels(num_key_value, f"{name}_heads")
        groups = [key_value_heads]
        query_heads = np.repeat(key_value_heads, per_group)
    else:
        groups = [
            tracer.new_channels(per_group, f"{name}_heads" + (f"_{group}" if num_key_value > 1 else ""))
            for group in range(num_key_value)
        ]
        query_heads, key_value_heads = np.concatenate(groups), None
    for heads in groups:
        for channel in heads.tolist():
            tracer._heads[channel] = name
    return query_heads, key_value_heads, groups


class _FlatHeadDimMixin:
    """Keeps `head_dim` and the output width explicit in SmolLM3's attention (head width `hidden_size // heads`).

    With `head_dim`, the layer is made for a `hidden_size` of `num_attention_heads
    * head_dim` (its head width and rotary embedding follow it), and its
    output projection writes `output_dim` channels.
    """

    def __init__(self, *args, head_dim=None, output_dim=None, **kwargs):
        if head_dim is not None:
            kwargs["hidden_size"] = int(kwargs["num_attention_heads"]) * int(head_dim)
        super().__init__(*args, **kwargs)
        self.output_dim = self.hidden_size if output_dim is None else int(output_dim)
        if self.output_dim != self.hidden_size:
            old = self.o_proj
            config = {**old.get_config(), "output_shape": (None, self.output_dim)}
            _replace_sub_layer(self, "o_proj", type(old).from_config(config),
                               (None, None, self.num_attention_heads, self.head_dim))  # fmt: skip

    def compute_output_spec(self, *args, **kwargs):
        # keras-hub's compute_output_shape expects a list of shapes and gives two outputs
        # (the call returns one tensor without a cache): the spec is given here instead.
        if kwargs.get("self_attention_cache") is not None:
            return super().compute_output_spec(*args, **kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        return keras.KerasTensor((*hidden.shape[:-1], self.output_dim), dtype=self.compute_dtype)


def _replace_sub_layer(layer, name, new, shape):
    """Sets `layer.<name>` to `new` built for `shape`, where the old one was among the sub-layers (weights keep their order)."""
    old = getattr(layer, name)
    position = next(i for i, sub in enumerate(layer._layers) if sub is old)
    layer._tracker.untrack(old)
    setattr(layer, name, new)
    layer._layers.remove(new)
    layer._layers.insert(position, new)
    new.build(shape)


def _constructor_config(layer, cls, attributes=None):
    """The config of `layer` from the arguments of `cls.__init__`, read back from its attributes of the same name.

    keras-hub's own `get_config` of the Llama and Qwen attention layers reads
    attributes they never set (`rope_scaling_factor`), so it raises.
    `attributes` maps an argument to the attribute keeping it where the
    names differ (Qwen-MoE's `moe_intermediate_dim` is `intermediate_dim`).
    """
    attributes = attributes or {}
    config = {"name": layer.name, "trainable": layer.trainable,
              "dtype": keras.dtype_policies.serialize(layer.dtype_policy)}  # fmt: skip
    for name in inspect.signature(cls.__init__).parameters:
        attribute = attributes.get(name, name)
        if name in ("self", "args", "kwargs") or not hasattr(layer, attribute):
            continue
        value = getattr(layer, attribute)
        if isinstance(value, keras.initializers.Initializer):
            value = keras.initializers.serialize(value)
        config[name] = value
    return config


def _explicit_head_dim_class(module, name, projections):
    try:
        parent = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None
    mixin = _MIXINS.get(name, _ExplicitHeadDimMixin)
    cls = type(name, (mixin, parent), {"__module__": __name__, "_tfprune_projections": projections,
                                                       "__doc__": (
        f"keras-hub's `{name}` with an explicit `head_dim` (what `tfprune.prune` rebuilds it as when its "
        "heads or hidden width shrink)."
    )})  # fmt: skip
    return keras.saving.register_keras_serializable(package="tfprune")(cls)


_HUB = "keras_hub.src.models."
_LLAMA_NAMES = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
_GEMMA_NAMES = ("query_dense", "key_dense", "value_dense", "output_dense")
# keras-hub attention layers rebuilt as tfprune subclasses with an explicit head_dim: name ->
# (keras-hub module, projections). Qwen3's takes a head_dim, but its get_config reads
# attributes it never sets, so it is rebuilt as one too.
_EXPLICIT = {
    "LlamaAttention": (_HUB + "llama.llama_attention", _LLAMA_NAMES),
    "QwenAttention": (_HUB + "qwen.qwen_attention", _LLAMA_NAMES),
    "Phi3Attention": (_HUB + "phi3.phi3_attention", _GEMMA_NAMES),
    "Qwen3Attention": (_HUB + "qwen3.qwen3_attention", _LLAMA_NAMES),
    "CachedMixtralAttention": (_HUB + "mixtral.mixtral_attention", _GEMMA_NAMES),
    "GPTNeoXAttention": (_HUB + "gpt_neo_x.gpt_neo_x_attention", None),
    "SmolLM3Attention": (_HUB + "smollm3.smollm3_layers", None),
}
# Layers kept explicit in their own way, with their own handler (the others: _ExplicitHeadDimMixin, _GroupedQueryAttention).
_MIXINS = {"GPTNeoXAttention": _FusedHeadDimMixin, "SmolLM3Attention": _FlatHeadDimMixin}
_HANDLERS = {"GPTNeoXAttention": _FusedQueryKeyValue, "SmolLM3Attention": _FlatHeadsAttention}


def _explicit_handler(name):
    if name in _HANDLERS:
        return _HANDLERS[name]()
    return _GroupedQueryAttention(_EXPLICIT[name][1], explicit_head_dim=name)
_EXPLICIT_CLASSES = {}


def explicit_head_dim_class(name):
    """tfprune's subclass of keras-hub's attention layer `name` with an explicit `head_dim`, or None.

    Made and registered for serialization (package `tfprune`) on first use,
    so that importing tfprune does not import keras-hub; a `.keras` file
    naming it finds it through this module's attributes
    (`tfprune.handlers_decoders.LlamaAttention`).

    Args:
        name: String. A key of `_EXPLICIT`, such as `"LlamaAttention"`.

    Returns:
        The class, or None when keras-hub (or that layer) is not installed.

    Example:

    >>> tfprune.handlers_decoders.explicit_head_dim_class("LlamaAttention").__name__  # doctest: +SKIP
    'LlamaAttention'
    """
    if name not in _EXPLICIT_CLASSES:
        module, projections = _EXPLICIT[name]
        cls = _explicit_head_dim_class(module, name, projections)
        _EXPLICIT_CLASSES[name] = cls
        if cls is not None:
            register_handler(cls, _explicit_handler(name))
    return _EXPLICIT_CLASSES[name]


def _deferred(name):
    """Stands for `explicit_head_dim_class(name)` in Keras's registry until it is made.

    A `.keras` file names the class `tfprune>LlamaAttention`; Keras finds
    classes by that name only, so this stand-in is registered under it when
    tfprune is imported, and makes the real class when a file is loaded.
    """

    def from_config(cls, config):
        return explicit_head_dim_class(name).from_config(config)

    stand_in = type(f"_Deferred{name}", (), {"from_config": classmethod(from_config), "get_config": lambda self: {}})
    return keras.saving.register_keras_serializable(package="tfprune", name=name)(stand_in)


def __getattr__(name):
    # `tfprune.handlers_decoders.LlamaAttention` (how Keras finds the class of a saved layer).
    if name in _EXPLICIT and explicit_head_dim_class(name) is not None:
        return _EXPLICIT_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# keras-hub classes by (module, name), found by `tfprune.handlers.handler_for` (registered below).
BY_CLASS = {
    (_HUB + "mistral.mistral_attention", "CachedMistralAttention"): _GroupedQueryAttention(_LLAMA_NAMES),
    (_HUB + "gemma.gemma_attention", "CachedGemmaAttention"): _GroupedQueryAttention(_GEMMA_NAMES),
    (_HUB + "gemma3.gemma3_attention", "CachedGemma3Attention"): _GroupedQueryAttention(_GEMMA_NAMES),
    (_HUB + "gpt_oss.gpt_oss_attention", "GptOssAttention"): _GroupedQueryAttention(
        _GEMMA_NAMES, per_head_weights=("sinks",)),
    (_HUB + "qwen3_moe.qwen3_moe_attention", "Qwen3MoeAttention"): _GroupedQueryAttention(_LLAMA_NAMES),
    (_HUB + "gemma3.gemma3_layers", "RMSNormalization"): _HubNormalization(),
    (_HUB + "phi3.phi3_layernorm", "Phi3LayerNorm"): _HubNormalization(),
    (_HUB + "mixtral.mixtral_layer_norm", "MixtralLayerNormalization"): _HubNormalization(),
    (_HUB + "qwen3.qwen3_layernorm", "Qwen3LayerNorm"): _HubNormalization(),
}
# Mixture-of-experts blocks: their experts' units pruned (same units in every expert).
BY_CLASS.update({
    (_HUB + "mixtral.mixtral_decoder", "MixtralSparseMoeBlock"): _MixtureOfExperts(
        router="_sparse_feedforward_gate_dense", experts="expert_bank", gate="_expert_feedforward_gate_dense",
        up="_expert_feedforward_intermediate_dense", down="_expert_feedforward_output_dense"),
    (_HUB + "qwen_moe.qwen_moe_decoder", "QwenSparseMoeBlock"): _MixtureOfExperts(
        router="_sparse_feedforward_gate_dense", experts="expert_bank", gate="_expert_feedforward_gate_dense",
        fused="halves", down="_expert_feedforward_output_dense", units_key="moe_intermediate_dim",
        shared="shared_expert_dense", shared_key="shared_expert_intermediate_dim",
        shared_gate="shared_expert_gate_dense",
        attributes={"moe_intermediate_dim": "intermediate_dim",
                    "shared_expert_intermediate_dim": "intermediate_dim_shared"}),
    (_HUB + "qwen3_moe.qwen3_moe_decoder", "Qwen3SparseMoeBlock"): _MixtureOfExperts(
        router="_sparse_feedforward_gate_dense", experts="expert_bank", gate="_expert_feedforward_gate_dense",
        fused="halves", down="_expert_feedforward_output_dense", units_key="moe_intermediate_dim",
        attributes={"moe_intermediate_dim": "intermediate_dim"}),
    (_HUB + "gpt_oss.gpt_oss_decoder", "GptOssSparseMoeBlock"): _MixtureOfExperts(
        router="router.router_dense", experts="experts", gate="gate_up_proj", fused="interleaved",
        gate_up_bias="gate_up_proj_bias", down="down_proj", down_bias="down_proj_bias"),
})  # fmt: skip
BY_CLASS.update({
    (_HUB + "llama.llama_layernorm", "LlamaLayerNorm"): _HubNormalization(),
    (_HUB + "gemma.rms_normalization", "RMSNormalization"): _HubNormalization(),
    (_HUB + "mistral.mistral_layer_norm", "MistralLayerNormalization"): _HubNormalization(),
    (_HUB + "qwen.qwen_layernorm", "QwenLayerNorm"): _HubNormalization(),
    ("keras_hub.src.layers.modeling.reversible_embedding", "ReversibleEmbedding"): _ReversibleEmbedding(),
    ("keras_hub.src.layers.modeling.cached_multi_head_attention", "CachedMultiHeadAttention"): _MultiHeadAttention(),
})

for _name, (_module, _names) in _EXPLICIT.items():
    BY_CLASS[(_module, _name)] = _explicit_handler(_name)
    _deferred(_name)
register_handler("SizeRange", _ReadsShape())
register_handler("DenseMultiply", handler_for(keras.ops.multiply(keras.KerasTensor((2,)), 2.0)._keras_history.operation))
register_handler("BroadcastToSizes", _ReadsShape())
register_handler(
    keras.layers.GroupQueryAttention,
    _KerasGroupedQueryAttention(("_query_dense", "_key_dense", "_value_dense", "_output_dense")),
)

# RWKV-7 (tfprune.handlers_rwkv): imported here so that its saved layers' stand-in is registered with tfprune.
from tfprune import handlers_rwkv  # noqa: E402

BY_CLASS.update(handlers_rwkv.BY_CLASS)

handlers.register_by_class_name(BY_CLASS)
