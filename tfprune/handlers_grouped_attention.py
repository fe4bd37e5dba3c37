"""Grouped-query attention layers of decoder language models: heads as a unit of pruning.

`_GroupedQueryAttention` reads `num_query_heads` query heads over
`num_key_value_heads` key/value heads from the layer's projections (by
attribute names); `tracer.gqa` says how the heads form groups (see
`tfprune.handlers_decoders`). A keras-hub layer that computes its head width
as `hidden_dim // num_query_heads` is rebuilt, when its heads or hidden
width shrink, as tfprune's subclass with an explicit `head_dim`
(`explicit_head_dim_class`, made on first use).
"""

import inspect

import keras
import numpy as np

from tfprune import _first_use, _utils
from tfprune._keras import hub
from tfprune._keras import layers as keras_layers
from tfprune.handlers_base import Freeze, Handler, _width
from tfprune.handlers_layers import _Normalization

__all__ = ["GQA_MODES", "explicit_head_dim_class"]

GQA_MODES = ("query_heads", "groups")


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
        if keras_layers.gated_attention(layer):
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
        hub.set_attention_head_width(self, self.head_dim, hidden)  # Mixtral keeps both widths for its call
        for name in self._tfprune_projections:
            old = getattr(self, name)
            config = old.get_config()
            if name == self._tfprune_projections[-1]:
                config["output_shape"] = (None, hidden)
                shape = (None, None, self.num_query_heads, self.head_dim)
            else:
                shape = inputs_shape
            _replace_sub_layer(self, name, type(old).from_config(config), shape)
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
        tracer.mark_heads(heads, name)
    return query_heads, key_value_heads, groups


def _replace_sub_layer(layer, name, new, shape):
    """Sets `layer.<name>` to `new` built for `shape`, where the old one was among the sub-layers (weights keep their order)."""
    keras_layers.replace_sublayer(layer, name, new)
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


_LLAMA_NAMES = keras_layers.ATTENTION_PROJECTION_ATTRIBUTES  # keras.layers.MultiHeadAttention's names
_GEMMA_NAMES = ("query_dense", "key_dense", "value_dense", "output_dense")
# keras-hub attention layers rebuilt as tfprune subclasses with an explicit head_dim: name ->
# (keras-hub module, projections). Qwen3's takes a head_dim, but its get_config reads
# attributes it never sets, so it is rebuilt as one too.
_EXPLICIT = {
    "LlamaAttention": (hub.model_module("llama.llama_attention"), _LLAMA_NAMES),
    "QwenAttention": (hub.model_module("qwen.qwen_attention"), _LLAMA_NAMES),
    "Phi3Attention": (hub.model_module("phi3.phi3_attention"), _GEMMA_NAMES),
    "Qwen3Attention": (hub.model_module("qwen3.qwen3_attention"), _LLAMA_NAMES),
    "CachedMixtralAttention": (hub.model_module("mixtral.mixtral_attention"), _GEMMA_NAMES),
    "GPTNeoXAttention": (hub.model_module("gpt_neo_x.gpt_neo_x_attention"), None),
    "SmolLM3Attention": (hub.model_module("smollm3.smollm3_layers"), None),
}
# Layers kept explicit in their own way, with their own handler: name -> (mixin, handler class),
# filled by `tfprune.handlers_fused_attention` (the others: _ExplicitHeadDimMixin, _GroupedQueryAttention).
_OWN_WAY = {}
# Where the classes say they are from: `tfprune.handlers_decoders.LlamaAttention` (that module's
# `__getattr__` makes them).
_HOME = "tfprune.handlers_decoders"


def _explicit_handler(name):
    if name in _OWN_WAY:
        return _OWN_WAY[name][1]()
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
    module, projections = _EXPLICIT[name]
    mixin = _OWN_WAY.get(name, (_ExplicitHeadDimMixin,))[0]
    doc = (f"keras-hub's `{name}` with an explicit `head_dim` (what `tfprune.prune` rebuilds it as when its "
           "heads or hidden width shrink).")  # fmt: skip
    try:
        return _first_use.subclass(_EXPLICIT_CLASSES, name, module, mixin, _HOME,
                                   handler=lambda: _explicit_handler(name),
                                   attributes={"_tfprune_projections": projections}, doc=doc)  # fmt: skip
    except ImportError:
        return None
