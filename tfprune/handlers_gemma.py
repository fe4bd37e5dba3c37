"""Gemma 4 and Gemma 3n decoders: their attention layers, norms and blocks.

Gemma 4's text decoder block (`Gemma4TextDecoderBlock`) holds one weight
of its own, the non-trainable `layer_scalar` its output is multiplied by;
`tfprune.graph.flatten` inlines it all the same (`INLINED_WITH_OWN_WEIGHTS`),
the scalar becoming a `tfprune.layers.Weight`, and its MLP, which
multiplies by its EinsumDense layers' kernels directly, is recorded as
calls of those layers (`graph._traced_matmul`). Its attention layer
(`Gemma4TextAttention`) is a grouped-query attention like Gemma 3's, with
query and key RMS norms over the head width (shared by every head, so
they keep their size) and a value norm without weights; it always returns
its key/value cache as a second output, which nothing reads in a model
without KV sharing. Its heads follow the `gqa` mode of
`tfprune.handlers_decoders`. Layers that reuse another layer's keys and
values (KV sharing, Gemma 4 E2B/E4B) are kept whole.
"""

import functools

import keras

from tfprune.handlers import Freeze, _width
from tfprune.handlers_decoders import _GroupedQueryAttention, _head_groups, _HubNormalization

__all__ = ["BY_CLASS", "INLINED_WITH_OWN_WEIGHTS"]

_HUB = "keras_hub.src.models."


class _Gemma4Attention(_GroupedQueryAttention):
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

    def trace(self, node, tracer):
        layer = node.operation
        projections = self._projections(layer)
        why = (
            "reads the keys and values of another layer (KV sharing)" if getattr(layer, "is_kv_shared_layer", False)
            else "has no query, key, value and output EinsumDense projections tfprune knows" if projections is None
            else "is called with a key/value cache" if node.arguments.kwargs.get("cache") is not None
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        query, key, value, output = projections
        hidden = tracer.channels(self._inputs(node)[0])
        num_query, num_key_value = int(query.kernel.shape[0]), int(key.kernel.shape[0])
        if num_query % num_key_value:
            return Freeze(f"'{layer.name}' has {num_query} query heads over {num_key_value} key/value heads").trace(
                node, tracer
            )
        query_heads, key_value_heads, _ = _head_groups(layer.name, num_query, num_key_value, tracer)
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


# Layers holding weights of their own that `tfprune.graph.flatten` inlines all the same
# (`tfprune.handlers_keras_hub.inlined_with_own_weights`): Gemma 4's decoder block holds
# only its `layer_scalar`; kept whole, its heads and MLP units could not prune.
INLINED_WITH_OWN_WEIGHTS = {
    (_HUB + "gemma4.gemma4_decoder_block", "Gemma4TextDecoderBlock"),
}

# keras-hub classes by (module, name): tfprune.handlers_keras_hub.handler_for looks here too.
BY_CLASS = {
    (_HUB + "gemma4.gemma4_attention", "Gemma4TextAttention"): _Gemma4Attention(),
    (_HUB + "gemma4.gemma4_layers", "RMSNormalization"): _HubNormalization(),
}
