"""keras-hub's Qwen 3.5 and Qwen 3.5-MoE: gated attention, GatedDeltaNet linear attention and experts.

Qwen 3.5 alternates two kinds of decoder block. A `"full_attention"` block
runs `Qwen3_5Attention`: grouped-query attention whose query projection
writes, per query head, the query and a sigmoid gate side by side
(`"bqm,muh->bquh"` with `h` twice the head width), so a query head is
removed with its gate; it is handled like Qwen3's attention (see
`tfprune.handlers_decoders`), its heads pruned within each key/value group
(`gqa="query_heads"`) or whole key/value groups (`gqa="groups"`).

A `"linear_attention"` block runs `Qwen3_5GatedDeltaNet`, a recurrent
linear attention: `num_key_heads` query/key heads of width `key_head_dim`
and `num_value_heads` value heads of width `value_head_dim`, value head `j`
reading key head `j // (num_value_heads // num_key_heads)`. The fused
query-key-value projection, the causal depthwise convolution over its
channels, the gate projection `z`, the per-head decay and write-gate
projections (`a`, `b`) and their `A_log` / `dt_bias` are laid out per head,
and each value head's recurrence is independent of the others: a value head
is removed from all of them and from the output projection's rows, leaving
the others' outputs unchanged. Value heads are grouped by key head like
query heads by key/value head, so the same `gqa` modes apply (the key heads
are kept with `"query_heads"`; with `"groups"` a key head goes with its
value heads). The widths inside a head are kept: the queries and keys are
L2-normalised over the key head width and each value head's output passes
through an RMS norm over the value head width whose scale all heads share,
so removing any of those channels changes the statistics of the others.

keras-hub's GatedDeltaNet cannot compute its output shape on symbolic
tensors (its chunked recurrence pads the sequence to a multiple of 64 with
Python conditions on the length, unknown while traced), so a decoder block
holding it could not be inlined: it is copied as `Qwen3_5GatedDeltaNet`
registered in the `tfprune` package, which says its output shape (its
output has the input's shape with `hidden_size` channels) and computes
the same values. For the same reason a model holding it cannot be traced
into a TensorFlow graph with an unknown sequence length, which LiteRT
export needs: the copy says so in one sentence.

Qwen 3.5-MoE's sparse block is handled like Qwen-MoE's
(`tfprune.handlers_decoders._MixtureOfExperts`): the experts' units are one
group (the same units removed from every expert), the shared expert's units
another, the router and the number of experts kept.

`tfprune.decoding` runs pruned Qwen 3.5 models step by step: the handler
below gives each GatedDeltaNet layer its own cache (its convolution and
recurrent states, sized for its pruned heads).
"""

import keras
import numpy as np

from tfprune import _utils, handlers, handlers_hub_blocks
from tfprune._keras import hub
from tfprune._keras import layers as keras_layers
from tfprune.handlers import Freeze, Handler, _width
from tfprune.handlers_decoders import (
    _GroupedQueryAttention,
    _head_groups,
    _HubNormalization,
    _MixtureOfExperts,
)

__all__ = ["BY_CLASS"]

_QWEN3_5 = hub.model_module("qwen3_5.")
_GATED_DELTA_NET = "Qwen3_5GatedDeltaNet"


class _GatedDeltaNetShapes:
    """keras-hub's `Qwen3_5GatedDeltaNet` that says its output shape on symbolic tensors (tfprune's copy of it).

    The layer's own call runs a chunked recurrence whose Python conditions
    read the sequence length, so Keras cannot infer its output on symbolic
    tensors of unknown length; the output has the input's shape with
    `hidden_size` channels (and, called with a cache, the cache's shapes).
    Run in a graph traced with an unknown sequence length (a LiteRT export),
    it refuses in one sentence instead of TensorFlow's error. Everything
    else is keras-hub's.
    """

    def call(self, hidden_states, attention_mask=None, cache=None, cache_update_index=None, training=None):
        # The arguments spelled out: Keras reads the call's signature to tell tensors from other arguments.
        if not isinstance(keras.ops.shape(hidden_states)[1], int):
            raise ValueError(
                f"Layer '{self.name}' (Qwen 3.5's GatedDeltaNet) loops over the sequence in Python, so it "
                "cannot run in a graph traced with an unknown sequence length; run it eagerly or with a fixed length."
            )
        return super().call(hidden_states, attention_mask, cache, cache_update_index, training)

    def compute_output_spec(self, hidden_states, attention_mask=None, cache=None, cache_update_index=None,
                            training=None):  # fmt: skip
        output = keras.KerasTensor((*hidden_states.shape[:-1], self.hidden_size), dtype=self.compute_dtype)
        if cache is None:
            return output
        return output, tuple(keras.KerasTensor(tuple(state.shape), dtype=state.dtype) for state in cache)


def _projections(layer):
    """The GatedDeltaNet's query-key-value, z, b, a and output Dense layers, or None if any is LoRA or quantized."""
    projections = (layer.in_proj_qkv, layer.in_proj_z, layer.in_proj_b, layer.in_proj_a, layer.out_proj)
    if any(getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None) for dense in projections):
        return None
    return projections


class _GatedDeltaNet(Handler):
    """`Qwen3_5GatedDeltaNet`: value heads pruned within each key head's group (see the module docstring).

    Called with a cache, or returning more than its output, it is frozen.
    Heads are scored on all the weights laid out per value head (the value
    part of the fused projection, `z`, `a`, `b` and the output projection's
    rows).
    """

    def __init__(self):
        self._layouts = {}  # layer name -> indices of the fused, z and b kernels in layer.weights

    def trace(self, node, tracer):
        layer = node.operation
        if node.arguments.kwargs.get("cache") is not None or len(node.outputs) != 1:
            return Freeze(f"'{layer.name}' is called with a cache").trace(node, tracer)
        projections = _projections(layer)
        if projections is None:
            return Freeze(f"'{layer.name}' has LoRA or quantized projections").trace(node, tracer)
        num_key, num_value = layer.num_k_heads, layer.num_v_heads
        if num_value % num_key:
            return Freeze(f"'{layer.name}' has {num_value} value heads over {num_key} key heads").trace(node, tracer)
        hidden = tracer.channels(self._hidden_input(node))
        value_heads, key_heads, _ = _head_groups(layer.name, num_value, num_key, tracer)
        if key_heads is None:
            key_heads = tracer.new_channels(num_key, f"{layer.name}_key_heads")
            tracer.pin(key_heads, f"'{layer.name}' keeps its key heads with gqa='query_heads'")
        values = np.repeat(value_heads, layer.head_v_dim)
        keys = np.repeat(key_heads, layer.head_k_dim)
        fused = np.concatenate([keys, keys, values])  # [queries | keys | values]
        # The first per-head weight names the heads' positions for the criteria (one per head).
        for dense in (layer.in_proj_b, layer.in_proj_a):
            tracer.use(layer, dense.kernel, 1, value_heads, "output")
        tracer.use(layer, layer.in_proj_qkv.kernel, 1, fused, "output")
        tracer.use(layer, layer.in_proj_z.kernel, 1, values, "output")
        for dense in projections[:4]:
            tracer.use(layer, dense.kernel, 0, hidden, "input")
        tracer.use(layer, layer.conv1d_weight, 0, fused, "param")
        tracer.use(layer, layer.dt_bias, 0, value_heads, "param")
        tracer.use(layer, layer.A_log, 0, value_heads, "param")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, layer.out_proj.kernel, 0, values, "input")
        tracer.use(layer, layer.out_proj.kernel, 1, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        self._layouts[layer.name] = tuple(
            weights.index(id(dense.kernel)) for dense in (layer.in_proj_qkv, layer.in_proj_z, layer.in_proj_b)
        )
        return [outputs]

    _hidden_input = staticmethod(_MixtureOfExperts._hidden_input)  # the first argument, or `hidden_states`

    def head_kernel(self, layer):
        """The weights of each value head as `(coefficients, value heads)`: what magnitude criteria score heads by.

        Args:
            layer: A GatedDeltaNet layer this handler traces.

        Returns:
            NumPy array.
        """
        heads, width = layer.num_v_heads, layer.head_v_dim

        def per_head(kernel, axis, size):
            kernel = keras.ops.convert_to_numpy(kernel)
            shape = kernel.shape[:axis] + (heads, size) + kernel.shape[axis + 1 :]
            return np.moveaxis(kernel.reshape(shape), axis, -1).reshape(-1, heads)

        value_part = keras.ops.convert_to_numpy(layer.in_proj_qkv.kernel)[:, 2 * layer.key_dim :]
        parts = [per_head(value_part, 1, width), per_head(layer.in_proj_z.kernel, 1, width),
                 per_head(layer.in_proj_a.kernel, 1, 1), per_head(layer.in_proj_b.kernel, 1, 1),
                 per_head(layer.out_proj.kernel, 0, width)]  # fmt: skip
        return np.concatenate(parts, axis=0)

    def resize_for_weights(self, config, output_width, weight_shapes):
        fused, gate, write = self._layouts[config["name"]]
        value_width = int(weight_shapes[gate][1])
        key_width = (int(weight_shapes[fused][1]) - value_width) // 2
        return {**config, "hidden_size": int(output_width), "linear_num_value_heads": int(weight_shapes[write][1]),
                "linear_num_key_heads": key_width // int(config["linear_key_head_dim"])}  # fmt: skip

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(self._hidden_input(node))])

    def rebuild(self, layer, config):
        """A new layer from `config`, as tfprune's subclass (which says its output shape)."""
        return handlers_hub_blocks.subclass_of(_GATED_DELTA_NET).from_config(config)

    def copy(self, layer):
        """A copy of `layer` with its weights, as tfprune's subclass (`tfprune.graph.flatten` calls it symbolically).

        None (copied as it is, so its block stays whole) with LoRA or quantized projections.
        """
        if _projections(layer) is None:
            return None
        copy = handlers_hub_blocks.subclass_of(_GATED_DELTA_NET).from_config(layer.get_config())
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy

    def initial_cache(self, layer, batch_size, max_length):
        """The layer's cache before the first token: zero convolution and recurrent states (`tfprune.decoding`).

        Args:
            layer: A GatedDeltaNet layer.
            batch_size: Int.
            max_length: Int. Unused: the states do not grow with the sequence.

        Returns:
            Tuple `(convolution state (batch, channels, kernel - 1), recurrent state
            (batch, value heads, key head width, value head width))`.
        """
        channels = 2 * layer.key_dim + layer.value_dim
        return (
            keras.ops.zeros((batch_size, channels, layer.conv_kernel_size - 1), dtype=layer.compute_dtype),
            keras.ops.zeros((batch_size, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim), dtype="float32"),
        )

    def call_with_cache(self, layer, args, kwargs, cache, cache_update_index):
        """Runs `layer` on the new tokens from its states (`tfprune.decoding`); returns `(output, new cache)`.

        Args:
            layer: A GatedDeltaNet layer.
            args: Positional arguments of its call in the model.
            kwargs: Keyword arguments of its call in the model.
            cache: Its cache, from `initial_cache` or a previous call.
            cache_update_index: Int. The position of the first token.

        Returns:
            Tuple `(output, cache)`.
        """
        kwargs = {**kwargs, "cache": tuple(cache), "cache_update_index": cache_update_index}
        kwargs.pop("training", None)
        output, cache = layer(*args, **kwargs)
        return output, tuple(cache)


_ATTENTION_NAMES = keras_layers.ATTENTION_PROJECTION_ATTRIBUTES
# keras-hub classes by (module, name), found by `tfprune.handlers.handler_for` (registered below).
BY_CLASS = {
    (_QWEN3_5 + "qwen3_5_attention", "Qwen3_5Attention"): _GroupedQueryAttention(_ATTENTION_NAMES),
    (_QWEN3_5 + "qwen3_5_layers", "Qwen3_5LayerNorm"): _HubNormalization(),
    (_QWEN3_5 + "qwen3_5_gated_delta_net", _GATED_DELTA_NET): _GatedDeltaNet(),
    (hub.model_module("qwen3_5_moe.qwen3_5_moe_decoder"), "Qwen3_5MoeSparseMoeBlock"): _MixtureOfExperts(
        experts="expert_bank", **hub.MOE_SUBLAYERS["qwen3_5_moe"], fused="halves",
        units_key="moe_intermediate_dim", shared="shared_expert",
        shared_key="shared_expert_intermediate_size"),
}  # fmt: skip

# Copied as tfprune's subclass, made on first use and registered as `tfprune>Qwen3_5GatedDeltaNet`.
handlers_hub_blocks.add_subclass(_GATED_DELTA_NET, _QWEN3_5 + "qwen3_5_gated_delta_net", _GatedDeltaNetShapes)

handlers.register_by_class_name(BY_CLASS)
