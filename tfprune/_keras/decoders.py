"""Private methods of keras-hub's decoder layers that cached decoding calls.

Gemma 4's decoder block, not its attention layer, narrows the causal mask to
the sliding window of a local attention layer, with the attention layer's
private `_mask_sliding_window`; `tfprune.decoding` runs the attention layers
of a pruned model itself, so it applies that window the same way.
"""

__all__ = ["sliding_window_mask"]


def sliding_window_mask(layer, mask, cache_update_index=0):
    """A causal mask narrowed to the sliding window of a keras-hub attention layer.

    Args:
        layer: A keras-hub attention layer with a sliding window (Gemma,
            Gemma 3, Gemma 4, Qwen); its `sliding_window_size` is the window.
        mask: Boolean tensor `(batch, query length, key length)`.
        cache_update_index: Int. The position of the first query in the cache.
            Defaults to 0.

    Returns:
        A boolean tensor of the shape of `mask`: `mask` and the window.

    Example:
        >>> from keras_hub.src.models.gemma4.gemma4_attention import Gemma4TextAttention
        >>> attention = Gemma4TextAttention(
        ...     4, 2, 1, use_sliding_window_attention=True, sliding_window_size=2
        ... )
        >>> mask = sliding_window_mask(attention, keras.ops.ones((1, 3, 3), "bool"))
        >>> keras.ops.convert_to_numpy(mask)[0].astype(int).tolist()
        [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    """
    return layer._mask_sliding_window(mask, cache_update_index=cache_update_index)
