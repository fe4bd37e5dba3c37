"""GPT-NeoX's and SmolLM3's attention: heads of a fused projection, and of a flat one.

GPT-NeoX fuses its query, key and value projections into one kernel laid
out per head; SmolLM3 writes its heads flat (`hidden_size // heads` wide).
Both are rebuilt with an explicit head width when their heads shrink
(`tfprune.handlers_grouped_attention.explicit_head_dim_class`, with the
mixins here).
"""


import keras
import numpy as np

from tfprune import _utils
from tfprune._keras import hub
from tfprune._keras import layers as keras_layers
from tfprune.handlers_base import Freeze, Handler, _width
from tfprune.handlers_grouped_attention import (
    _OWN_WAY,
    _GroupedQueryAttention,
    _head_groups,
    _replace_sub_layer,
    explicit_head_dim_class,
)

__all__ = []  # registered in `tfprune.handlers_grouped_attention._OWN_WAY` (below)


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
        fused, output = keras_layers.qkv_projection(layer), keras_layers.attention_projections(layer)["output"]
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
        tracer.mark_heads(heads, layer.name)
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
            hub.set_attention_head_width(self, self.attn_head_size)
            self.hidden_dim = self.num_heads * self.attn_head_size

    def build(self, input_shape):
        super().build(input_shape)
        if self.head_dim is None:
            return
        old = keras_layers.attention_projections(self)["output"]
        config = {**old.get_config(), "output_shape": (None, input_shape[-1])}
        name = keras_layers.ATTENTION_PROJECTION_ATTRIBUTES[-1]
        _replace_sub_layer(self, name, type(old).from_config(config), (None, None, self.hidden_dim))

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


_OWN_WAY["GPTNeoXAttention"] = (_FusedHeadDimMixin, _FusedQueryKeyValue)
_OWN_WAY["SmolLM3Attention"] = (_FlatHeadDimMixin, _FlatHeadsAttention)
