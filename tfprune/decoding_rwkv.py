"""Cached decoding of a pruned RWKV-7 causal language model (what `tfprune.decoding` runs for RWKV-7).

keras-hub's `RWKV7CausalLM.call_with_cache` carries, per block, the time
mix's recurrent state `(batch, heads, head size, head size)` and the last
token each of its two mixes saw (their token shift). A pruned RWKV-7 causal
LM is a flat functional model (`tfprune.prune`) whose time mixes may have
fewer heads and whose mixes may read a narrower hidden width; this module
runs it with one such cache per mix, sized for the pruned layer.
`tfprune.decoding.build_cache` and `call_with_cache` come here for a model
holding RWKV-7 layers; the cache position they take is not needed (the
state holds everything seen so far).
"""

import keras

from tfprune import _utils, handlers, handlers_rwkv
from tfprune._keras.functional import input_name, run_graph

__all__ = ["build_cache", "call_with_cache", "recurrent_layers"]


def recurrent_layers(model):
    """The RWKV-7 time-mix and channel-mix layers of `model` (keras-hub's or tfprune's), in call order.

    Args:
        model: A functional model.

    Returns:
        List of layers.

    Example:

    >>> # [layer.name for layer in tfprune.decoding_rwkv.recurrent_layers(small)][:2]
    >>> # ['rwkv_layer_0_RWKV_TIME_MIX', 'rwkv_layer_0_RWKV_CMIX']
    """
    kinds = (handlers_rwkv._TimeMix, handlers_rwkv._ChannelMix)
    return [layer for layer in _utils.functional_view(model).layers if isinstance(handlers.handler_for(layer), kinds)]


def _token_shift_key(layer):
    return f"{layer.name}/token_shift"


def build_cache(model, token_ids):
    """Runs the prompt through a pruned RWKV-7 causal LM from an empty state and returns its cache.

    Args:
        model: A pruned RWKV-7 causal LM (inputs `token_ids`, `padding_mask`).
        token_ids: Int array `(batch, length)`: the prompt.

    Returns:
        Tuple `(logits, cache)`: the logits for the prompt and a dict: each
        time mix's name maps to its state `(batch, heads, head size, head
        size)`, and `"<mix>/token_shift"` to the last token each mix read
        `(batch, 1, width)`.

    Example:

    >>> # logits, cache = tfprune.decoding_rwkv.build_cache(small, prompt)
    """
    batch_size = int(keras.ops.shape(token_ids)[0])
    cache = {}
    for layer in recurrent_layers(model):
        width = layer.x_k.shape[0]
        cache[_token_shift_key(layer)] = keras.ops.zeros((batch_size, 1, width), dtype=layer.compute_dtype)
        if isinstance(handlers.handler_for(layer), handlers_rwkv._TimeMix):
            cache[layer.name] = keras.ops.zeros((batch_size, layer.n_head, layer.head_size, layer.head_size))
    return call_with_cache(model, token_ids, cache, rnn_mode=False)


def call_with_cache(model, token_ids, cache, rnn_mode=True):
    """Runs a pruned RWKV-7 causal LM on the tokens that follow those its `cache` has seen.

    Args:
        model: A pruned RWKV-7 causal LM.
        token_ids: Int array `(batch, length)`: the next tokens.
        cache: Dict from `build_cache` (or a previous call).
        rnn_mode: Bool. keras-hub's choice of operator for single steps
            (the same computation without its optional kernels).

    Returns:
        Tuple `(logits, cache)`: the logits for these tokens and the updated
        cache (a new dict).

    Raises:
        ValueError: If `cache` misses a layer of the model, or the model takes
            inputs other than `token_ids` and `padding_mask`.

    Example:

    >>> # logits, cache = tfprune.decoding_rwkv.call_with_cache(small, next_tokens, cache)
    """
    functional = _utils.functional_view(model)
    layers = recurrent_layers(functional)
    missing = [layer.name for layer in layers if _token_shift_key(layer) not in cache]
    if missing:
        raise ValueError(
            f"`cache` has no entry for RWKV-7 layer(s) {missing[:3]} of model '{model.name}'; make it with "
            "tfprune.decoding.build_cache(model, ...)."
        )
    token_ids = keras.ops.convert_to_tensor(token_ids, dtype="int32")
    values = {"token_ids": token_ids, "padding_mask": keras.ops.ones_like(token_ids)}
    names = [input_name(tensor) for tensor in functional.inputs]
    if any(name not in values for name in names):
        raise ValueError(
            f"tfprune.decoding runs models whose inputs are token_ids and padding_mask; model '{model.name}' "
            f"takes {names}."
        )
    updated = dict(cache)
    time_mixes = {layer.name for layer in layers if isinstance(handlers.handler_for(layer), handlers_rwkv._TimeMix)}
    channel_mixes = {layer.name for layer in layers} - time_mixes

    def time_mix(layer):
        def call(x, **kwargs):
            kwargs.pop("training", None)
            output, v_first, last, state = layer.call(
                x, **{**kwargs, "not_generation_mode": False, "rnn_mode": rnn_mode, "training": False,
                      "last_cache_x": cache[_token_shift_key(layer)], "cache_state": cache[layer.name]}
            )  # fmt: skip
            updated[_token_shift_key(layer)], updated[layer.name] = last, state
            return output, v_first, state

        return call

    def channel_mix(layer):
        def call(x, **kwargs):
            kwargs = {**kwargs, "not_generation_mode": False}
            output, updated[_token_shift_key(layer)] = layer.call(x, cache[_token_shift_key(layer)], **kwargs)
            return output

        return call

    def operation_fn(operation):
        name = getattr(operation, "name", None)
        if name in time_mixes:
            return time_mix(operation)
        if name in channel_mixes:
            return channel_mix(operation)
        return operation

    outputs = run_graph(functional, [values[name] for name in names], operation_fn)
    return outputs, updated
