"""Magnitude masks: which weights to keep, as 0/1 tensors of the weight's shape.

Three patterns, each keeping the largest-magnitude weights:

- unstructured: exactly `round(sparsity * size)` weights are zero;
- blocks: the last two axes (input channels x output channels, i.e. the
  matrix of a Dense layer or of each kernel position of a convolution) are cut
  into `block_size` tiles scored by their average or maximum |w|; exactly
  `round(sparsity * number_of_tiles)` tiles are zero. Edge tiles may be smaller;
  their average is taken over their real weights;
- M:N: along the input-channel axis (the second-to-last axis in Keras's kernel
  layout), every run of N consecutive weights keeps its M largest. A last,
  shorter run keeps at most M, which is what zero-padding to a multiple of N
  would give.
"""

import math

from keras import ops

__all__ = ["block_mask", "m_by_n_mask", "magnitude_mask", "mask_for"]

_POOLINGS = {
    "avg": lambda tiles, counts: ops.sum(tiles, axis=(-3, -1)) / counts,
    "max": lambda tiles, counts: ops.max(tiles, axis=(-3, -1)),
}


def _keep_largest(scores, keep):
    """0/1 tensor of `scores`'s (flat) shape with ones at its `keep` largest entries."""
    size = scores.shape[0]
    if keep <= 0:
        return ops.zeros((size,), dtype=scores.dtype)
    _, indices = ops.top_k(scores, k=keep, sorted=False)
    return ops.scatter(ops.expand_dims(indices, -1), ops.ones((keep,), scores.dtype), (size,))


def _pruned_count(sparsity, size):
    return min(size, int(math.floor(sparsity * size + 0.5)))


def magnitude_mask(weight, sparsity):
    """Returns the unstructured mask that zeroes the smallest-magnitude weights.

    Args:
        weight: Tensor or variable of any shape.
        sparsity: Float in [0, 1). Share of weights to zero; exactly
            `round(sparsity * size)` entries of the mask are 0.

    Returns:
        Float tensor of `weight`'s shape and dtype with 1 for kept weights.

    Example:

    >>> import numpy as np
    >>> from tfprune.magnitude import magnitude_mask
    >>> np.asarray(magnitude_mask(np.array([0.1, -3.0, 0.5, 2.0]), 0.5)).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    weight = ops.convert_to_tensor(weight)
    size = math.prod(weight.shape)
    scores = ops.reshape(ops.abs(weight), (size,))
    mask = _keep_largest(scores, size - _pruned_count(sparsity, size))
    return ops.reshape(mask, weight.shape)


def _as_matrices(weight):
    """Views `weight` as a stack of matrices over its last two axes: (stack, rows, columns)."""
    shape = tuple(weight.shape)
    if len(shape) < 2:
        raise ValueError(
            f"Block and M:N masks need a weight with at least 2 axes. Received: shape={shape}"
        )
    return ops.reshape(weight, (math.prod(shape[:-2]), shape[-2], shape[-1]))


def block_mask(weight, sparsity, block_size=(1, 1), block_pooling="avg"):
    """Returns a mask that zeroes whole tiles of the last two axes, smallest tiles first.

    Args:
        weight: Tensor or variable with at least 2 axes (Keras kernel layout).
        sparsity: Float in [0, 1). Share of tiles to zero; exactly
            `round(sparsity * number_of_tiles)` tiles are 0.
        block_size: Tuple of two ints `(rows, columns)`, the tile shape over the
            (input channels, output channels) axes. Defaults to `(1, 1)`.
        block_pooling: String. How a tile is scored from its |w|: `"avg"` or
            `"max"`. Defaults to `"avg"`.

    Returns:
        Float tensor of `weight`'s shape and dtype, constant over each tile.

    Raises:
        ValueError: If `weight` has fewer than 2 axes or `block_pooling` is unknown.

    Example:

    >>> import numpy as np
    >>> from tfprune.magnitude import block_mask
    >>> weight = np.array([[1.0, 2.0, 0.1, 0.1], [3.0, 4.0, 0.2, 0.1]])
    >>> np.asarray(block_mask(weight, 0.5, block_size=(2, 2))).tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    """
    if block_pooling not in _POOLINGS:
        raise ValueError(
            f"`block_pooling` must be one of {sorted(_POOLINGS)}. Received: "
            f"block_pooling={block_pooling!r}"
        )
    weight = ops.convert_to_tensor(weight)
    matrices = ops.abs(_as_matrices(weight))
    stack, rows, columns = matrices.shape
    block_rows, block_columns = block_size
    tile_rows, tile_columns = -(-rows // block_rows), -(-columns // block_columns)
    padding = [(0, 0), (0, tile_rows * block_rows - rows), (0, tile_columns * block_columns - columns)]
    tile_shape = (stack, tile_rows, block_rows, tile_columns, block_columns)
    tiles = ops.reshape(ops.pad(matrices, padding), tile_shape)
    # Edge tiles hold fewer real weights; the average divides by their count.
    counts = ops.sum(ops.reshape(ops.pad(ops.ones_like(matrices), padding), tile_shape), axis=(-3, -1))
    scores = ops.reshape(_POOLINGS[block_pooling](tiles, counts), (-1,))
    size = scores.shape[0]
    tile_mask = _keep_largest(scores, size - _pruned_count(sparsity, size))
    tile_mask = ops.reshape(tile_mask, (stack, tile_rows, 1, tile_columns, 1))
    mask = ops.broadcast_to(tile_mask, tile_shape)
    mask = ops.reshape(mask, (stack, tile_rows * block_rows, tile_columns * block_columns))
    return ops.reshape(mask[:, :rows, :columns], weight.shape)


def m_by_n_mask(weight, m, n):
    """Returns the M:N mask: in every N consecutive input channels, the M largest survive.

    Runs go along the input-channel axis, the second-to-last axis of a Keras
    kernel (`(input, output)` for Dense, `(..., input, output)` for convolutions),
    separately for every output channel and kernel position.

    Args:
        weight: Tensor or variable with at least 2 axes.
        m: Int. Weights kept in each run.
        n: Int. Length of a run.

    Returns:
        Float tensor of `weight`'s shape and dtype.

    Raises:
        ValueError: If `weight` has fewer than 2 axes.

    Example:

    >>> import numpy as np
    >>> from tfprune.magnitude import m_by_n_mask
    >>> weight = np.array([[0.1], [-5.0], [0.3], [2.0]])
    >>> np.asarray(m_by_n_mask(weight, 2, 4))[:, 0].tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    weight = ops.convert_to_tensor(weight)
    # Runs along the input axis: move it last, (stack, output, input).
    matrices = ops.transpose(ops.abs(_as_matrices(weight)), (0, 2, 1))
    stack, columns, rows = matrices.shape
    groups = -(-rows // n)
    # Padding scores are -1, below every |w|: they are only kept in a short last run.
    padded = ops.pad(matrices, [(0, 0), (0, 0), (0, groups * n - rows)], constant_values=-1.0)
    runs = ops.reshape(padded, (stack, columns, groups, n))
    _, indices = ops.top_k(runs, k=min(m, n), sorted=False)
    mask = ops.sum(ops.one_hot(indices, n, dtype=weight.dtype), axis=-2)
    mask = ops.reshape(mask, (stack, columns, groups * n))[:, :, :rows]
    return ops.reshape(ops.transpose(mask, (0, 2, 1)), weight.shape)


def mask_for(weight, sparsity, block_size=(1, 1), block_pooling="avg", m_by_n=None):
    """Returns the mask of `weight` for one pruning step, in the pattern asked for.

    Args:
        weight: Tensor or variable.
        sparsity: Float in [0, 1). Ignored when `m_by_n` is given (the pattern
            fixes the sparsity at `1 - m / n`).
        block_size: Tuple `(rows, columns)`. `(1, 1)` means unstructured.
            Defaults to `(1, 1)`.
        block_pooling: String, `"avg"` or `"max"`. Defaults to `"avg"`.
        m_by_n: Optional tuple `(m, n)`. Defaults to `None`.

    Returns:
        Float tensor of `weight`'s shape.

    Example:

    >>> import numpy as np
    >>> from tfprune.magnitude import mask_for
    >>> float(np.mean(np.asarray(mask_for(np.arange(1.0, 9.0).reshape(4, 2), 0.25))))
    0.75
    """
    if m_by_n is not None:
        return m_by_n_mask(weight, *m_by_n)
    if tuple(block_size) != (1, 1):
        return block_mask(weight, sparsity, block_size, block_pooling)
    return magnitude_mask(weight, sparsity)


