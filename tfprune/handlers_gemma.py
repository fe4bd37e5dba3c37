"""Gemma 4 and Gemma 3n decoders: their attention layers, norms and blocks.

Gemma 4's text decoder block (`Gemma4TextDecoderBlock`) holds one weight
of its own, the non-trainable `layer_scalar` its output is multiplied by;
`tfprune.graph.flatten` inlines it all the same (`INLINED_WITH_OWN_WEIGHTS`),
the scalar becoming a `tfprune.layers.Weight`, and its MLP, which
multiplies by its EinsumDense layers' kernels directly, is recorded as
calls of those layers (`graph_traced_ops._traced_matmul`). Its attention layer
(`Gemma4TextAttention`) is a grouped-query attention like Gemma 3's, with
query and key RMS norms over the head width (shared by every head, so
they keep their size) and a value norm without weights; it always returns
its key/value cache as a second output, which nothing reads in a model
without KV sharing. Its heads follow the `gqa` mode of
`tfprune.handlers_decoders`. Layers that reuse another layer's keys and
values (KV sharing, Gemma 4 E2B/E4B) are kept whole.

Gemma 3n's backbone computes its token and per-layer embeddings in a
multimodal embedding processor that reshapes them to `shape(token_ids) +
(layers, width)`; traced, that reshape reads its sizes from the token ids
when the model runs (`ReshapeToSizes`), so the processor and the text
model inline, with their AltUp, Laurel and per-layer-input layers. Its
attention layer (`Gemma3nTextAttention`: Dense projections with the heads
flattened, three outputs) prunes its query heads within key/value groups
(or whole groups), and its MLP units prune as Dense units. Its hidden width
stays: AltUp rescales its predictions by their root mean square, a mean
over the hidden channels computed with `keras.ops`, which every channel
changes.
"""

import functools

import keras
import numpy as np

from tfprune import handlers
from tfprune._keras import hub
from tfprune.handlers import Freeze, Handler, Preserve, _width, register_handler
from tfprune.handlers_decoders import (
    BroadcastToSizes,
    _GroupedQueryAttention,
    _head_groups,
    _HubNormalization,
)

__all__ = ["BY_CLASS", "INLINED_WITH_OWN_WEIGHTS", "ReshapeToSizes"]



@keras.saving.register_keras_serializable(package="tfprune")
class ReshapeToSizes(BroadcastToSizes):
    """`keras.ops.reshape(x, shape)` where entries of `shape` are axes of other tensors, read when the model runs.

    Recorded by `tfprune.graph.flatten` for a reshape to sizes that are
    unknown while a block is traced (Gemma 3n's per-layer inputs,
    `reshape(embeddings, shape(token_ids) + (layers, width))`).

    Args:
        sizes: List. One entry per output axis: an int (-1 allowed), or
            `[i, axis]` for the size of `axis` of the `i`-th tensor after `x`.
        name: Optional name.

    Call arguments:
        x: The tensor to reshape.
        *sources: The tensors whose sizes `sizes` refers to.

    Returns:
        The reshaped tensor.

    Example:

    >>> op = tfprune.handlers_gemma.ReshapeToSizes(sizes=[[0, 0], [0, 1], 2, 3])
    >>> tuple(op(keras.ops.ones((2, 5, 6)), keras.ops.zeros((2, 5))).shape)
    (2, 5, 2, 3)
    """

    def call(self, x, *sources):
        return keras.ops.reshape(x, self._shape(sources, keras.ops.shape))

    def compute_output_spec(self, x, *sources):
        shape = self._shape(sources, lambda tensor: tensor.shape)
        return keras.KerasTensor(tuple(None if size == -1 else size for size in shape), dtype=x.dtype)


class _Reshape(Handler):
    """`ReshapeToSizes`: the channels pass when the last axis keeps its width, else new pinned channels."""

    def trace(self, node, tracer):
        source, output = node.input_tensors[0], node.outputs[0]
        channels = tracer.channels(source)
        width = _width(output)
        if width is not None and width == _width(source) and node.operation.sizes[-1] == width:
            return [channels]
        reason = f"'{node.operation.name}' reshapes their axis"
        tracer.pin(channels, reason)
        outputs = tracer.new_channels(1 if width is None else width, node.operation.name)
        tracer.pin(outputs, reason)
        return [outputs]

    def resize_operation(self, operation, output_width):
        """The same reshape to a new last width."""
        return type(operation)(sizes=[*operation.sizes[:-1], int(output_width)], name=operation.name)


class _Repeat(Handler):
    """`keras.ops.repeat`: channels pass when another axis than the last is repeated (Gemma 3n's AltUp).

    Repeating the channel axis (or the flattened tensor, `axis=None`) puts
    every channel at several positions of a wider axis: frozen.
    """

    def trace(self, node, tracer):
        operation, source = node.operation, node.input_tensors[0]
        rank = len(source.shape)
        if operation.axis is not None and rank and operation.axis % rank != rank - 1:
            return [tracer.channels(source)]
        return Freeze(f"'{operation.name}' repeats the channel axis").trace(node, tracer)


class _GemmaAttention(_GroupedQueryAttention):
    """What Gemma 4's and Gemma 3n's attention handlers share: when a layer is kept whole, and why."""

    description = ""  # the projections tfprune reads, for the reason a layer is kept whole

    def _head_counts(self, layer, projections):
        raise NotImplementedError

    def _kept_whole(self, node, tracer):
        """The traced outputs of a layer whose heads cannot prune (all channels pinned), or None."""
        layer = node.operation
        projections = self._projections(layer)
        why = (
            "reads the keys and values of another layer (KV sharing)" if getattr(layer, "is_kv_shared_layer", False)
            else f"has no {self.description} projections tfprune knows" if projections is None
            else "is called with a key/value cache" if node.arguments.kwargs.get("cache") is not None
            else None
        )  # fmt: skip
        if why is None:
            num_query, num_key_value = self._head_counts(layer, projections)
            if num_query % num_key_value:
                why = f"has {num_query} query heads over {num_key_value} key/value heads"
        return None if why is None else Freeze(f"'{layer.name}' {why}").trace(node, tracer)

    def trace(self, node, tracer):
        frozen = self._kept_whole(node, tracer)
        if frozen is not None:
            return frozen
        layer = node.operation
        projections = self._projections(layer)
        hidden = tracer.channels(self._inputs(node)[0])
        query_heads, key_value_heads, _ = _head_groups(layer.name, *self._head_counts(layer, projections), tracer)
        return self._trace_heads(node, tracer, projections, hidden, query_heads, key_value_heads)

    def _trace_heads(self, node, tracer, projections, hidden, query_heads, key_value_heads):
        """The outputs' channels; declares the projections' weights with the hidden channels and the heads."""
        raise NotImplementedError


class _Gemma4Attention(_GemmaAttention):
    """`Gemma4TextAttention`: grouped-query heads, and a key/value cache always returned as a second output.

    The query kernel is `(query heads, hidden, head width)` (`"btd,ndh->btnh"`),
    the key and value kernels `(key/value heads, hidden, head width)`, the
    output kernel `(query heads, head width, hidden)`. With
    `attention_k_eq_v` (global layers with `num_global_key_value_heads`)
    the value is the key projection's output and there is no value kernel.
    The cache output's channels (the head width) are new and pinned; in
    `gqa="groups"` mode its key/value heads shrink with the layer's.
    """

    window_from_block = True  # its block narrows the mask to the sliding window (`tfprune.decoding`)

    def __init__(self):
        super().__init__(("query_dense", "key_dense", "value_dense", "output_dense"))

    def _projections(self, layer):
        if not getattr(layer, "attention_k_eq_v", False):
            return super()._projections(layer)
        # The value is the key projection's output: its kernel stands in the value's place for the checks.
        query, key, _, output = self.projections
        found = super()._projections(layer, (query, key, key, output))
        return None if found is None else [*found[:2], None, found[3]]

    description = "query, key, value and output EinsumDense"

    def _head_counts(self, layer, projections):
        return int(projections[0].kernel.shape[0]), int(projections[1].kernel.shape[0])

    def _trace_heads(self, node, tracer, projections, hidden, query_heads, key_value_heads):
        layer = node.operation
        query, key, value, output = projections
        tracer.use(layer, query.kernel, 1, hidden, "input")
        tracer.use(layer, query.kernel, 0, query_heads, "output")
        for dense in (key, value):
            if dense is None:
                continue
            tracer.use(layer, dense.kernel, 1, hidden, "input")
            if key_value_heads is not None:
                tracer.use(layer, dense.kernel, 0, key_value_heads, "param")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, 0, query_heads, "input")
        tracer.use(layer, output.kernel, 2, outputs, "output")
        results = [outputs]
        for extra in node.outputs[1:]:  # the key/value cache: (batch, 2, length, key/value heads, head width)
            channels = tracer.new_channels(_width(extra), f"{layer.name}_cache")
            tracer.pin(channels, f"'{layer.name}' returns its key/value cache, laid out by head width")
            results.append(channels)
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = ((weights.index(id(query.kernel)), 0), (weights.index(id(key.kernel)), 0))
        return results

    def copy(self, layer):
        """A copy of `layer` with its weights, whose sliding-window mask a traced block can record."""
        copy = super().copy(layer)
        if copy is not None and not getattr(copy, "use_bidirectional_attention", True):
            object.__setattr__(copy, "_mask_sliding_window", functools.partial(_sliding_window_mask, copy))
        return copy

    def resize_for_weights(self, config, output_width, weight_shapes):
        config = super().resize_for_weights(config, output_width, weight_shapes)
        if config.get("attention_k_eq_v") and config.get("num_global_key_value_heads") is not None:
            # Such a layer's key/value heads are `num_global_key_value_heads`.
            config["num_global_key_value_heads"] = config["num_key_value_heads"]
        return config


def _sliding_window_mask(layer, attention_mask, cache_update_index=0):
    """`Gemma4TextAttention._mask_sliding_window` (causal case) in `keras.ops` alone.

    keras-hub's builds the band with `tf.linalg.band_part` on the TensorFlow
    backend and from sizes of the mask, which a traced block cannot record;
    query `i` (at position `cache_update_index + i`) keeps key `j` when
    `|cache_update_index + i - j| < sliding_window_size`, the same band.
    """
    _, query_length, key_length = keras.ops.shape(attention_mask)
    rows = keras.ops.arange(query_length, dtype="int32") + keras.ops.cast(cache_update_index, "int32")
    columns = keras.ops.arange(key_length, dtype="int32")
    distance = keras.ops.abs(keras.ops.expand_dims(rows, 1) - keras.ops.expand_dims(columns, 0))
    band = keras.ops.expand_dims(keras.ops.less(distance, layer.sliding_window_size), 0)
    return keras.ops.logical_and(attention_mask, band)


class _Gemma3nAttention(_GemmaAttention):
    """`Gemma3nTextAttention`: grouped-query heads over Dense projections, three outputs.

    The query kernel is `(hidden, query heads * head width)` and the key and
    value kernels `(hidden, key/value heads * head width)` (head `h` is
    columns `h * width ... (h + 1) * width - 1`), the output projection a
    Dense `(query heads * head width, hidden)`; query and key RMS norms act
    on the head width, shared by every head. The layer returns its output,
    its attention weights (one row per query head, a last axis of the key
    length) and its key/value cache: the latter two, which the decoder block
    does not use, get new pinned channels. Its constructor takes `head_dim`
    and `hidden_size` (its output width) explicitly. A layer that reads
    another layer's keys and values (KV sharing) or a cache is kept whole.
    """

    description = "q_proj, k_proj, v_proj and o_proj Dense"
    _projection_type = keras.layers.Dense
    cache_length_axis = 3  # its cache is laid out (batch, 2, key/value heads, length, head width)

    def __init__(self):
        super().__init__(("q_proj", "k_proj", "v_proj", "o_proj"))

    def _head_counts(self, layer, projections):
        return int(projections[0].units) // int(layer.head_dim), int(projections[1].units) // int(layer.head_dim)

    def _trace_heads(self, node, tracer, projections, hidden, query_heads, key_value_heads):
        layer = node.operation
        query, key, value, output = projections
        width = int(layer.head_dim)
        query_columns = np.repeat(query_heads, width)
        for dense in (query, key, value):
            tracer.use(layer, dense.kernel, 0, hidden, "input")
            columns = query_columns if dense is query else None
            if dense is not query and key_value_heads is not None:
                columns = np.repeat(key_value_heads, width)
            if columns is not None:
                role = "output" if dense is query else "param"
                tracer.use(layer, dense.kernel, 1, columns, role)
                tracer.use(layer, getattr(dense, "bias", None), 0, columns, role)
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, 0, query_columns, "input")
        tracer.use(layer, output.kernel, 1, outputs, "output")
        tracer.use(layer, getattr(output, "bias", None), 0, outputs, "output")
        results = [outputs]
        for extra, what in zip(node.outputs[1:], ("attention weights", "key/value cache")):
            width_of_extra = _width(extra)
            channels = tracer.new_channels(1 if width_of_extra is None else width_of_extra, f"{layer.name}_{what}")
            tracer.pin(channels, f"'{layer.name}' returns its {what}")
            results.append(channels)
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = (weights.index(id(query.kernel)), weights.index(id(key.kernel)), width)
        return results

    @staticmethod
    def cache_shape(layer, batch_size, max_length):
        """`(batch, 2, key/value heads, max_length, head width)`: the layer's key/value cache (`tfprune.decoding`).

        Args:
            layer: A Gemma 3n text attention layer.
            batch_size: Int.
            max_length: Int. Positions in the cache.

        Returns:
            Tuple of ints.
        """
        width = int(layer.head_dim)
        return (batch_size, 2, int(layer.k_proj.units) // width, max_length, width)

    def head_kernel(self, layer):
        """The query kernel as `(coefficients, query columns)`, each column holding its whole head's weights.

        The heads are made on the query kernel's columns, `head width` of
        them per head: each column is scored as its head, so every head's
        score is its weights' (times the head width, the same for all).

        Args:
            layer: A Gemma 3n text attention layer.

        Returns:
            NumPy array.
        """
        kernel = keras.ops.convert_to_numpy(self._projections(layer)[0].kernel)
        width = int(layer.head_dim)
        kernel = kernel.reshape(kernel.shape[0], -1, width)
        heads = np.moveaxis(kernel, 1, -1).reshape(-1, kernel.shape[1])
        return np.repeat(heads, width, axis=1)

    def copy(self, layer):
        """A copy of `layer` with its weights, which writes no build config (see `_built_when_called`)."""
        return _built_when_called(super().copy(layer))

    def rebuild(self, layer, config):
        """A new layer from `config`, which writes no build config (see `_built_when_called`)."""
        return _built_when_called(type(layer).from_config(config))

    def resize_for_weights(self, config, output_width, weight_shapes):
        query, key, width = self._layouts[config["name"]]
        return {**config, "num_attention_heads": int(weight_shapes[query][1]) // width,
                "num_key_value_heads": int(weight_shapes[key][1]) // width, "hidden_size": int(output_width)}  # fmt: skip


def _built_when_called(layer):
    """`layer`, writing no build config: loaded back, it is built by its call in the model.

    `Gemma3nTextAttention.build` adds tuples to its input shape, which a
    `.keras` file gives back as a list: built from its build config, the
    layer raises. The backbone reloads all the same (its constructor builds
    the layer by calling it); a pruned model loads each layer on its own.
    """
    if layer is not None:
        object.__setattr__(layer, "get_build_config", lambda: None)
    return layer


class _Gemma3nNormalization(_HubNormalization):
    """`Gemma3nRMSNorm`: an RMS norm whose constructor takes its width (`dim`)."""

    def resize(self, config, output_width):
        return {**config, "dim": int(output_width)}


# Layers holding weights of their own that `tfprune.graph.flatten` inlines all the same
# (`tfprune.handlers_keras_hub.inlined_with_own_weights`): Gemma 4's decoder block holds
# only its `layer_scalar`; kept whole, its heads and MLP units could not prune.
INLINED_WITH_OWN_WEIGHTS = {
    (hub.model_module("gemma4.gemma4_decoder_block"), "Gemma4TextDecoderBlock"),
}

# keras-hub classes by (module, name): tfprune.handlers_keras_hub.handler_for looks here too.
BY_CLASS = {
    (hub.model_module("gemma4.gemma4_attention"), "Gemma4TextAttention"): _Gemma4Attention(),
    (hub.model_module("gemma4.gemma4_layers"), "RMSNormalization"): _HubNormalization(),
    (hub.model_module("gemma3n.gemma3n_attention"), "Gemma3nTextAttention"): _Gemma3nAttention(),
    (hub.model_module("gemma3n.rms_normalization"), "Gemma3nRMSNorm"): _Gemma3nNormalization(),
}

register_handler("ReshapeToSizes", _Reshape())
register_handler("Repeat", _Repeat())
# `zeros_like(token_ids)` (Gemma 3n's per-layer token ids): a tensor laid out as its input.
register_handler("ZerosLike", Preserve())

handlers.register_by_class_name(BY_CLASS)
