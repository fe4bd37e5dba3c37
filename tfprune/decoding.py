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
(`build_cache` finds no attention layer in them and says so). A layer whose
handler keeps a state of its own (`initial_cache` and `call_with_cache`:
Qwen 3.5's GatedDeltaNet, a recurrent linear attention,
`tfprune.handlers_qwen3_5`) is given its own entry in the cache, which its
handler makes and updates. A pruned
RWKV-7 causal LM carries a recurrent state instead of a key/value cache:
both functions hand it to `tfprune.decoding_rwkv`.

Vision-language models (PaliGemma) put image tokens before the text: the
prompt call is given the images (`inputs={"images": ...}`) and puts the
image tokens in the cache with the prompt; later calls leave them out
(their concatenation takes the text alone, and the slice that drops the
image positions from the logits keeps every position), and
`prefix_length` names the positions every token sees both ways (the
image tokens and the prompt, where PaliGemma's `response_mask` is 0):

```python
logits, cache = tfprune.decoding.build_cache(small, prompt, max_length=images + 32,
                                             inputs={"images": images}, prefix_length=images + prompt_length)
next_logits, cache = tfprune.decoding.call_with_cache(small, next_tokens, cache, images + prompt_length,
                                                      prefix_length=images + prompt_length)
```
"""

import inspect

import keras

from tfprune import _utils, decoding_rwkv, handlers, handlers_decoders
from tfprune._keras.decoders import sliding_window_mask
from tfprune._keras.functional import call_nodes, input_name, model_nodes, run_graph
from tfprune._keras.layers import attention_projections

__all__ = ["attention_layers", "build_cache", "call_with_cache"]


def attention_layers(model):
    """The attention layers of `model` that take a key/value cache (or keep a state of their own), in call order.

    Args:
        model: A functional model, such as a pruned causal language model.

    Returns:
        List of layers: keras-hub's grouped-query attention layers (Llama,
        Gemma, Qwen, Mistral), its `CachedMultiHeadAttention` (GPT-2, OPT)
        and Qwen 3.5's GatedDeltaNet layers.

    Example:

    >>> # [layer.name for layer in tfprune.decoding.attention_layers(small)]
    >>> # ['transformer_layer_0_self_attention', 'transformer_layer_1_self_attention']
    """
    functional = _utils.functional_view(model)
    found = []
    for layer in functional.layers:
        if _state_handler(layer) is not None or (
            _key_projection(layer) is not None and "cache" in inspect.signature(layer.call).parameters
        ):
            found.append(layer)
    return found


def _state_handler(layer):
    """The handler of a layer that keeps a state of its own (`initial_cache`, `call_with_cache`), or None."""
    handler = handlers.handler_for(layer)
    return handler if hasattr(handler, "initial_cache") else None


def _key_projection(layer):
    handler = handlers.handler_for(layer)
    names = getattr(handler, "projections", None)
    if names is not None:
        return getattr(layer, names[1], None)
    if isinstance(layer, keras.layers.MultiHeadAttention) and type(layer).__module__.startswith("keras_hub."):
        return attention_projections(layer)["key"]
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


def build_cache(model, token_ids, max_length=None, inputs=None, prefix_length=0):
    """Runs the prompt through a pruned causal LM and fills a new key/value cache with it.

    Args:
        model: A causal language model pruned by `tfprune.prune` (a flat
            functional model with `token_ids` and `padding_mask` inputs).
        token_ids: Int array `(batch, length)`: the prompt.
        max_length: Int. Positions in the cache (image tokens included).
            Defaults to the prompt's length.
        inputs: Optional dict of the model's other inputs (`{"images":
            ...}`); see `call_with_cache`.
        prefix_length: Int. Positions every position sees (see
            `call_with_cache`). Defaults to 0.

    Returns:
        Tuple `(outputs, cache)`: the model's outputs for the prompt (the
        logits) and a dict mapping each attention layer's name to its cache
        `(batch, 2, max_length, key/value heads, head width)` (a layer with
        a state of its own: that state, made by its handler).

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
    if decoding_rwkv.recurrent_layers(model):  # RWKV-7: a recurrent state, no key/value cache
        return decoding_rwkv.build_cache(model, token_ids)
    layers = attention_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no attention layer that takes a key/value cache (keras-hub's decoder "
            "attention layers), so tfprune.decoding cannot run it step by step."
        )
    cache = {
        layer.name: _state_handler(layer).initial_cache(layer, batch_size, max_length)
        if _state_handler(layer) is not None
        else keras.ops.zeros(_cache_shape(layer, batch_size, max_length), dtype=layer.compute_dtype)
        for layer in layers
    }
    return call_with_cache(model, token_ids, cache, 0, inputs=inputs, prefix_length=prefix_length)


def call_with_cache(model, token_ids, cache, cache_update_index, inputs=None, prefix_length=0):
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
        cache_update_index: Int. The position of the first token (image
            tokens counted).
        inputs: Optional dict of the model's inputs other than
            `token_ids`, `padding_mask` and `response_mask` for this call
            (PaliGemma's `images` on the prompt call). Inputs left out are
            absent: the operations reading them are skipped, a
            concatenation takes its other parts, and a slice that drops
            that many leading positions keeps them all.
        prefix_length: Int. Positions at the start of the cache that every
            position sees, also the ones before them: 0 for a causal LM;
            PaliGemma's image tokens and prompt. Defaults to 0.

    Returns:
        Tuple `(outputs, cache)`: the model's outputs (the logits for these
        tokens) and the updated cache (a new dict).

    Raises:
        ValueError: If `cache` misses an attention layer of the model, or
            the outputs need an input that was left out.

    Example:

    >>> # logits, cache = tfprune.decoding.call_with_cache(small, next_tokens, cache, 7)
    """
    functional = _utils.functional_view(model)
    if decoding_rwkv.recurrent_layers(functional):  # RWKV-7: the state holds every earlier position
        return decoding_rwkv.call_with_cache(model, token_ids, cache)
    missing = [layer.name for layer in attention_layers(functional) if layer.name not in cache]
    if missing:
        raise ValueError(
            f"`cache` has no entry for attention layer(s) {missing[:3]} of model '{model.name}'; make it "
            "with tfprune.decoding.build_cache(model, ...)."
        )
    token_ids = keras.ops.convert_to_tensor(token_ids, dtype="int32")
    ones = keras.ops.ones_like(token_ids)
    # Gemma 4 takes the tokens' positions (its rotary embeddings read them).
    positions = keras.ops.arange(keras.ops.shape(token_ids)[1], dtype="int32") + keras.ops.cast(
        cache_update_index, "int32"
    )
    values = {
        "token_ids": token_ids,
        "padding_mask": ones,
        "response_mask": ones,
        "position_ids": keras.ops.broadcast_to(positions[None], keras.ops.shape(token_ids)),
        **(inputs or {}),
    }
    names = [input_name(tensor) for tensor in functional.inputs]
    absent = [name for name in names if name not in values]
    # Gemma 3n's padding mask is boolean: each value in its input's dtype.
    dtypes = {input_name(tensor): tensor.dtype for tensor in functional.inputs}
    values = {name: keras.ops.cast(value, dtypes[name]) if name in dtypes else value for name, value in values.items()}
    updated = dict(cache)
    # axis -> leading positions the concatenations `concatenations` leave out.
    dropped, concatenations = _left_out(functional, absent)
    # The tokens' own positions: those of the cache, less the image tokens left out.
    first_position = cache_update_index - dropped.get(1, 0)

    def operation_fn(operation):
        if isinstance(operation, keras.layers.Layer) and operation.name in cache:
            run = _cached(operation)
        elif isinstance(operation, keras.layers.Layer) and "start_index" in inspect.signature(operation.call).parameters:
            run = lambda *args, **kwargs: operation(*args, **{**kwargs, "start_index": cache_update_index})  # noqa: E731
        elif isinstance(operation, handlers_decoders.SizeRange) and operation.axis == 1:
            run = _shifted(operation, first_position)
        else:
            run = operation
        return _without_absent(operation, run, dropped, concatenations) if absent else run

    def _cached(layer):
        def call(*args, **kwargs):
            layer_cache = cache[layer.name]
            if _state_handler(layer) is not None:
                output, updated[layer.name] = _state_handler(layer).call_with_cache(
                    layer, args, kwargs, layer_cache, cache_update_index
                )
                return output
            query = args[0] if args else next(value for value in kwargs.values() if keras.ops.is_tensor(value))
            axis = getattr(handlers.handler_for(layer), "cache_length_axis", 2)  # the cache's positions
            mask = _causal_mask(keras.ops.shape(token_ids)[0], keras.ops.shape(query)[1],
                                keras.ops.shape(layer_cache)[axis], cache_update_index, prefix_length)  # fmt: skip
            if getattr(handlers.handler_for(layer), "window_from_block", False) and layer.use_sliding_window_attention:
                # Gemma 4's block, not its attention layer, narrows the mask to the sliding window.
                mask = sliding_window_mask(layer, mask, cache_update_index)
            # The arguments by name (Gemma 3n passes its mask by position), the first one kept by position.
            arguments = inspect.signature(layer.call).bind_partial(*args, **kwargs).arguments
            first = arguments.pop(next(iter(arguments)))
            arguments.update(attention_mask=mask, cache=layer_cache, cache_update_index=cache_update_index)
            arguments.pop("training", None)
            results = layer(first, **arguments)
            updated[layer.name] = results[-1]
            # A layer that returns its cache even without one (Gemma 4) or its attention weights too
            # (Gemma 3n) has as many outputs in the graph: its call with a cache gives them in that order.
            return results[0] if len(call_nodes(layer)[0].outputs) == 1 else results

        return call

    outputs = run_graph(functional, [values.get(name, _ABSENT) for name in names], operation_fn)
    if any(value is _ABSENT for value in keras.tree.flatten(outputs)):
        raise ValueError(
            f"The outputs of model '{model.name}' need its input(s) {absent} in this call; pass them in `inputs`."
        )
    return outputs, updated


class _Absent:
    """An input left out of this call, and what is computed from it."""


_ABSENT = _Absent()


def _shifted(operation, first_position):
    """A `SizeRange` of sequence positions (BLIP-2's OPT embedding) starting at the tokens' own first position."""

    def call(x):
        positions = operation(x)
        return positions + keras.ops.cast(first_position, positions.dtype)

    return call


def _left_out(functional, absent):
    """`({axis: positions}, ids of the concatenations)` that leave positions out when the inputs named `absent` are not given.

    Only leading parts computed from those inputs alone are left out (image
    tokens before the text), and only parts whose size is known.
    """
    derived = {id(tensor) for tensor in functional.inputs if input_name(tensor) in absent}
    dropped, concatenations = {}, set()
    for node in model_nodes(functional):
        if node.is_input or not any(id(tensor) in derived for tensor in node.input_tensors):
            continue
        parts = node.arguments.args[0] if node.arguments.args else None
        if type(node.operation).__name__ == "Concatenate" and isinstance(parts, (list, tuple)):
            flags = [id(part) in derived for part in parts]
            lead = flags.index(False) if False in flags else len(flags)
            axis = node.operation.axis % len(node.outputs[0].shape)
            sizes = [part.shape[axis] for part in parts[:lead]]
            if 0 < lead and not any(flags[lead:]) and None not in sizes:
                dropped[axis] = sum(sizes)
                concatenations.add(id(node.operation))
                continue
        derived.update(id(tensor) for tensor in node.outputs)
    return dropped, concatenations


def _without_absent(operation, run, dropped, concatenations):
    """`run`, skipped on absent values: a concatenation takes its other parts; a slice of the dropped prefix keeps all."""

    def call(*args, **kwargs):
        name = type(operation).__name__
        if id(operation) in concatenations:  # its absent parts lead (image tokens before the text)
            return run([part for part in args[0] if part is not _ABSENT], *args[1:], **kwargs)
        if any(value is _ABSENT for value in keras.tree.flatten((args, kwargs))):
            return _ABSENT
        if name == "GetItem" and dropped and len(args) == 2 and isinstance(args[1], tuple):
            key = args[1]
            if all(key[axis] == slice(size, None, None) for axis, size in dropped.items() if axis < len(key)):
                others = [entry for axis, entry in enumerate(key) if axis not in dropped]
                if all(entry == slice(None) for entry in others):
                    return args[0]
        return run(*args, **kwargs)

    return call


def _causal_mask(batch_size, query_length, cache_length, cache_update_index, prefix_length=0):
    """Query `i` sees cache positions `<= cache_update_index + i` (keras-hub's `compute_causal_mask`) and the prefix."""
    rows = keras.ops.arange(query_length, dtype="float32")[:, None] + keras.ops.cast(cache_update_index, "float32")
    columns = keras.ops.arange(cache_length, dtype="float32")[None, :]
    visible = keras.ops.logical_or(rows >= columns, columns < prefix_length)
    return keras.ops.broadcast_to(visible[None], (batch_size, query_length, cache_length))
