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

This module holds the tables that register these handlers by keras-hub
class; the handlers live in `tfprune.handlers_grouped_attention` (and
`handlers_fused_attention`), `tfprune.handlers_experts`, and
`tfprune.handlers_sizes` (the operations a traced causal mask records).
"""

import keras

from tfprune import _first_use, handlers
from tfprune._keras import hub
from tfprune._keras import layers as keras_layers
from tfprune.handlers_attention import _MultiHeadAttention
from tfprune.handlers_base import register_handler
from tfprune.handlers_experts import _MixtureOfExperts
from tfprune.handlers_fused_attention import (  # noqa: F401  (re-exported: where they used to live)
    _FlatHeadDimMixin,
    _FlatHeadsAttention,
    _FusedHeadDimMixin,
    _FusedQueryKeyValue,
)
from tfprune.handlers_grouped_attention import (  # noqa: F401  (re-exported: where they used to live)
    _EXPLICIT,
    _EXPLICIT_CLASSES,
    _GEMMA_NAMES,
    _LLAMA_NAMES,
    GQA_MODES,
    _constructor_config,
    _copy_from_attributes,
    _explicit_handler,
    _ExplicitHeadDimMixin,
    _GroupedQueryAttention,
    _head_dim,
    _head_groups,
    _HubNormalization,
    _KerasGroupedQueryAttention,
    _replace_sub_layer,
    explicit_head_dim_class,
)
from tfprune.handlers_layers import _ReversibleEmbedding
from tfprune.handlers_sizes import (  # noqa: F401
    _MULTIPLY,
    BroadcastToSizes,
    DenseMultiply,
    SizeRange,
    _ReadsShape,
)

__all__ = ["BroadcastToSizes", "DenseMultiply", "GQA_MODES", "SizeRange", "explicit_head_dim_class"]


def _deferred(name):
    """Registers the stand-in of `explicit_head_dim_class(name)` under `tfprune>name` (a `.keras` file names it)."""
    return _first_use.register_stand_in(name, explicit_head_dim_class)


def __getattr__(name):
    """`tfprune.handlers_decoders.LlamaAttention`: how Keras finds the class of a saved layer.

    Example:

    >>> tfprune.handlers_decoders.NoSuchAttention
    Traceback (most recent call last):
    ...
    AttributeError: module 'tfprune.handlers_decoders' has no attribute 'NoSuchAttention'
    """
    return _first_use.module_attribute(name, _EXPLICIT, explicit_head_dim_class, __name__)


# keras-hub classes by (module, name), found by `tfprune.handlers.handler_for` (registered below).
BY_CLASS = {
    (hub.model_module("mistral.mistral_attention"), "CachedMistralAttention"): _GroupedQueryAttention(_LLAMA_NAMES),
    (hub.model_module("gemma.gemma_attention"), "CachedGemmaAttention"): _GroupedQueryAttention(_GEMMA_NAMES),
    (hub.model_module("gemma3.gemma3_attention"), "CachedGemma3Attention"): _GroupedQueryAttention(_GEMMA_NAMES),
    (hub.model_module("gpt_oss.gpt_oss_attention"), "GptOssAttention"): _GroupedQueryAttention(
        _GEMMA_NAMES, per_head_weights=("sinks",)),
    (hub.model_module("qwen3_moe.qwen3_moe_attention"), "Qwen3MoeAttention"): _GroupedQueryAttention(_LLAMA_NAMES),
    (hub.model_module("gemma3.gemma3_layers"), "RMSNormalization"): _HubNormalization(),
    (hub.model_module("phi3.phi3_layernorm"), "Phi3LayerNorm"): _HubNormalization(),
    (hub.model_module("mixtral.mixtral_layer_norm"), "MixtralLayerNormalization"): _HubNormalization(),
    (hub.model_module("qwen3.qwen3_layernorm"), "Qwen3LayerNorm"): _HubNormalization(),
}
# Mixture-of-experts blocks: their experts' units pruned (same units in every expert).
BY_CLASS.update({
    (hub.model_module("mixtral.mixtral_decoder"), "MixtralSparseMoeBlock"): _MixtureOfExperts(
        experts="expert_bank", **hub.MOE_SUBLAYERS["mixtral"]),
    (hub.model_module("qwen_moe.qwen_moe_decoder"), "QwenSparseMoeBlock"): _MixtureOfExperts(
        experts="expert_bank", **hub.MOE_SUBLAYERS["qwen_moe"],
        fused="halves", units_key="moe_intermediate_dim",
        shared="shared_expert_dense", shared_key="shared_expert_intermediate_dim",
        shared_gate="shared_expert_gate_dense",
        attributes={"moe_intermediate_dim": "intermediate_dim",
                    "shared_expert_intermediate_dim": "intermediate_dim_shared"}),
    (hub.model_module("qwen3_moe.qwen3_moe_decoder"), "Qwen3SparseMoeBlock"): _MixtureOfExperts(
        experts="expert_bank", **hub.MOE_SUBLAYERS["qwen_moe"],
        fused="halves", units_key="moe_intermediate_dim",
        attributes={"moe_intermediate_dim": "intermediate_dim"}),
    (hub.model_module("gpt_oss.gpt_oss_decoder"), "GptOssSparseMoeBlock"): _MixtureOfExperts(
        router="router.router_dense", experts="experts", gate="gate_up_proj", fused="interleaved",
        gate_up_bias="gate_up_proj_bias", down="down_proj", down_bias="down_proj_bias"),
})  # fmt: skip
BY_CLASS.update({
    (hub.model_module("llama.llama_layernorm"), "LlamaLayerNorm"): _HubNormalization(),
    (hub.model_module("gemma.rms_normalization"), "RMSNormalization"): _HubNormalization(),
    (hub.model_module("mistral.mistral_layer_norm"), "MistralLayerNormalization"): _HubNormalization(),
    (hub.model_module("qwen.qwen_layernorm"), "QwenLayerNorm"): _HubNormalization(),
    (hub.layer_module("modeling.reversible_embedding"), "ReversibleEmbedding"): _ReversibleEmbedding(),
    (hub.layer_module("modeling.cached_multi_head_attention"), "CachedMultiHeadAttention"): _MultiHeadAttention(),
})

for _name, (_module, _names) in _EXPLICIT.items():
    BY_CLASS[(_module, _name)] = _explicit_handler(_name)
    _deferred(_name)
register_handler(
    keras.layers.GroupQueryAttention, _KerasGroupedQueryAttention(keras_layers.ATTENTION_PROJECTION_ATTRIBUTES)
)

# RWKV-7 (tfprune.handlers_rwkv): imported here so that its saved layers' stand-in is registered with tfprune.
from tfprune import handlers_rwkv  # noqa: E402

BY_CLASS.update(handlers_rwkv.BY_CLASS)

handlers.register_by_class_name(BY_CLASS)
