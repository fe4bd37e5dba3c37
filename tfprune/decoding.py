"""Cached decoding of a pruned decoder language model.

`tfprune.prune` returns a keras-hub task model, such as a `LlamaCausalLM`
or `GemmaCausalLM`, as one flat functional model (its backbone and decoder
blocks inlined, `tfprune.graph.flatten`): the pruned layers may have other
head counts and widths in every block, which keras-hub's backbone configs
cannot express, so the result is no longer a keras-hub class and has no
`call_with_cache` or `generate`. Its attention layers are still keras-hub's
(or tfprune's `LlamaAttention` / `QwenAttention`, which keep `head_dim`
explicit), and they take a key/value cache; this module runs the pruned
model with one cache per attention layer, sized for its pruned head count:

```python
small, result = tfprune.prune(causal_lm, "l1", rate=0.5, targets="heads")
logits, cache = tfprune.decoding.build_cache(small, prompt, max_length=32)
next_logits, cache = tfprune.decoding.call_with_cache(small, next_tokens, cache, prompt.shape[1])
```

The attention layers are given a causal mask over the cache (query `i`
of the call sees cache positions up to `cache_update_index + i`, as
keras-hub's `compute_causal_mask` does) instead of the mask the traced
block computed for the full sequence; layers whose `call` takes a
`start_index` (position embeddings) start at `cache_update_index`, and a
`position_ids` input (Gemma 4) is given the tokens' positions.
Rotary embeddings, computed inside keras-hub's attention layers, follow
the cache index there. Gemma 4's sliding window, which its block adds to
the mask, is added to the cache's mask of its local attention layers; a
block that adds other terms to the mask (Mistral's sliding window) is
not reproduced: decode within its window.
Gemma 3n's attention layers, which lay their cache out `(batch, 2,
key/value heads, length, head width)`, are given caches of that layout.
Pruned GPT-NeoX and SmolLM3 models, whose attention layers take their
cache under other argument names, are not run step by step here
(`build_cache` finds no attention layer in them and says so).
"""

import inspect

import keras

from tfprune import _utils, handlers

__all__ = ["attention_layers", "build_cache", "call_with_cache"]


def attention_layers(model):
    """The attention layers of `model` that take a key/value cache, in call order.

    Args:
        model: A functional model, such as a pruned causal language model.

    Returns:
        List of layers: keras-hub's grouped-query attention layers (Llama,
        Gemma, Qwen, Mistral) and its `CachedMultiHeadAttention` (GPT-2, OPT).

    Example:

    >>> # [layer.name for layer in tfprune.decoding.attention_layers(small)]
    >>> # ['transformer_layer_0_self_attention', 'transformer_layer_1_self_attention']
    """
    functional = _utils.functional_view(model)
    found = []
    for layer in functional.layers:
        if _key_projection(layer) is not None and "cache" in inspect.signature(layer.call).parameters:
            found.append(layer)
    return found


def _key_projection(layer):
    handler = handlers.handler_for(layer)
    names = getattr(handler, "projections", None)
    if names is not None:
        return getattr(layer, names[1], None)
    if isinstance(layer, keras.layers.MultiHeadAttention) and type(layer).__module__.startswith("keras_hub."):
        return layer._key_dense
    return None


def _cache_shape(layer, batch_size, max_length):
    """`(batch, 2, max_length, key/value heads, head width)`: keras-hub's cache of one attention layer."""
    key = _key_projection(layer)
    own = getattr(handlers.handler_for(layer), "cache_shape", None)  # a layer laying its cache out otherwise
    if own is not None:
        return own(layer, batch_size, max_length)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        heads, width = layer.num_heads, layer.key_dim
    else:
        inputs, output = key.equation.split("->")
        input_spec, kernel_spec = inputs.split(",")
        heads, width = (int(key.kernel.shape[kernel_spec.index(letter)]) for letter in output[-2:])
    return (batch_size, 2, max_length, heads, width)


def build_cache(model, token_ids, max_length=None):
    """Runs the prompt through a pruned causal LM and fills a new key/value cache with it.

    Args:
        model: A causal language model pruned by `tfprune.prune` (a flat
            functional model with `token_ids` and `padding_mask` inputs).
        token_ids: Int array `(batch, length)`: the prompt.
        max_length: Int. Positions in the cache. Defaults to the prompt's
            length.

    Returns:
        Tuple `(outputs, cache)`: the model's outputs for the prompt (the
        logits) and a dict mapping each attention layer's name to its cache
        `(batch, 2, max_length, key/value heads, head width)`.

    Raises:
        ValueError: If the model has no attention layer that takes a cache,
            or `max_length` is shorter than the prompt.

    Example:

    >>> # logits, cache = tfprune.decoding.build_cache(small, prompt, max_length=32)
    """
    batch_size, length = (int(size) for size in keras.ops.shape(token_ids))
    max_length = length if max_length is None else int(max_length)
    if max_length < length:
        raise ValueError(f"`max_length` must be at least the prompt's length {length}. Received: max_length={max_length}")
    layers = attention_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no attention layer that takes a key/value cache (keras-hub's decoder "
            "attention layers), so tfprune.decoding cannot run it step by step."
        )
    cache = {
        layer.name: keras.ops.zeros(_cache_shape(layer, batch_size, max_length), dtype=layer.compute_dtype)
        for layer in layers
    }
    return call_with_cache(model, token_ids, cache, 0)


def call_with_cache(model, token_ids, cache, cache_update_index):
    """Runs a pruned causal LM on `token_ids` at position `cache_update_index` of a key/value cache.

    What keras-hub's `CausalLM.call_with_cache` does, for the flat model
    `tfprune.prune` returns: the keys and values of `token_ids` are written
    into each attention layer's cache at `cache_update_index`, and every
    token attends to the cache up to its own position.

    Args:
        model: A causal language model pruned by `tfprune.prune`.
        token_ids: Int array `(batch, length)`: the tokens at positions
            `cache_update_index ...`.
        cache: Dict from `build_cache` (or a previous call).
        cache_update_index: Int. The position of the first token.

    Returns:
        Tuple `(outputs, cache)`: the model's outputs (the logits for these
        tokens) and the updated cache (a new dict).

    Raises:
        ValueError: If `cache` misses an attention layer of the model.

    Example:

    >>> # logits, cache = tfprune.decoding.call_with_cache(small, next_tokens, cache, 7)
    """
    functional = _utils.functional_view(model)
    missing = [layer.name for layer in attention_layers(functional) if layer.name not in cache]
    if missing:
        raise ValueError(
            f"`cache` has no entry for attention layer(s) {missing[:3]} of model '{model.name}'; make it "
            "with tfprune.decoding.build_cache(model, ...)."
        )
    token_ids = keras.ops.convert_to_tensor(token_ids, dtype="int32")
    length = keras.ops.shape(token_ids)[1]
    values = {"token_ids": token_ids, "padding_mask": keras.ops.ones_like(token_ids)}
    # Gemma 4 takes the tokens' positions (its rotary embeddings read them).
    positions = keras.ops.arange(length, dtype="int32") + keras.ops.cast(cache_update_index, "int32")
    values["position_ids"] = keras.ops.broadcast_to(positions[None], keras.ops.shape(token_ids))
    inputs = []
    for tensor in functional.inputs:
        name = tensor._keras_history.operation.name
        if name not in values:
            raise ValueError(
                f"tfprune.decoding runs models whose inputs are token_ids, padding_mask and position_ids; model "
                f"'{model.name}' also takes '{name}'."
            )
        inputs.append(keras.ops.cast(values[name], tensor.dtype))  # Gemma 3n's padding mask is boolean
    updated = dict(cache)

    def operation_fn(operation):
        if isinstance(operation, keras.layers.Layer) and operation.name in cache:
            return _cached(operation)
        if isinstance(operation, keras.layers.Layer) and "start_index" in inspect.signature(operation.call).parameters:
            return lambda *args, **kwargs: operation(*args, **{**kwargs, "start_index": cache_update_index})
        return operation

    def _cached(layer):
        def call(*args, **kwargs):
            layer_cache = cache[layer.name]
            axis = getattr(handlers.handler_for(layer), "cache_length_axis", 2)  # the cache's positions
            mask = _causal_mask(keras.ops.shape(token_ids)[0], length, keras.ops.shape(layer_cache)[axis],
                                cache_update_index)  # fmt: skip
            if getattr(handlers.handler_for(layer), "window_from_block", False) and layer.use_sliding_window_attention:
                # Gemma 4's block, not its attention layer, narrows the mask to the sliding window.
                mask = layer._mask_sliding_window(mask, cache_update_index=cache_update_index)
            # The arguments by name (Gemma 3n passes its mask by position), the first one kept by position.
            arguments = inspect.signature(layer.call).bind_partial(*args, **kwargs).arguments
            first = arguments.pop(next(iter(arguments)))
            arguments.update(attention_mask=mask, cache=layer_cache, cache_update_index=cache_update_index)
            arguments.pop("training", None)
            results = layer(first, **arguments)
            updated[layer.name] = results[-1]
            # A layer that returns its cache even without one (Gemma 4) or its attention weights too
            # (Gemma 3n) has as many outputs in the graph: its call with a cache gives them in that order.
            return results[0] if len(layer._inbound_nodes[0].outputs) == 1 else results

        return call

    outputs = functional._run_through_graph(inputs, operation_fn=operation_fn)
    return outputs, updated


def _causal_mask(batch_size, query_length, cache_length, cache_update_index):
    """Query `i` sees cache positions `<= cache_update_index + i` (keras-hub's `compute_causal_mask`)."""
    rows = keras.ops.arange(query_length, dtype="float32")[:, None] + keras.ops.cast(cache_update_index, "float32")
    columns = keras.ops.arange(cache_length, dtype="float32")[None, :]
    return keras.ops.broadcast_to((rows >= columns)[None], (batch_size, query_length, cache_length))
