"""HRank (Lin et al., CVPR 2020): the average matrix rank of each channel's feature maps.

A filter whose output feature maps (H x W matrices) have low rank carries
little information and goes first (docs/METHODS.md §6). The maps are the
post-activation outputs of each group's producers (see `tfprune._features`),
computed on a few batches of user data, without any retraining.
"""

import numpy as np

from tfprune import _features
from tfprune.criteria.base import register

__all__ = ["hrank"]


def _feature_map_ranks(features, weights=None):
    """`(batch, height, width, channels)` -> `(batch, channels)` matrix ranks; None otherwise.

    `weights` (padding of token inputs) does not apply to image feature maps.
    """
    if features.ndim != 4:
        return None
    matrices = np.transpose(features, (0, 3, 1, 2))
    # Ranks in the features' own precision (float32): NumPy's default tolerance
    # scales with the dtype's eps, so float32 round-off does not count as rank.
    return np.linalg.matrix_rank(matrices).astype("float64")


def hrank(model, graph, data=None, seed=None, num_batches=5, batch_size=128, verbose="auto"):
    """Scores each channel by the average rank of its feature maps (HRank).

    For every prunable group whose producers output 2-D feature maps (convs),
    the score of channel `n` is the matrix rank of its `H x W` post-activation
    map, averaged over the images of `num_batches` batches (and over the
    group's producers, e.g. the branches of a residual sum). Groups without
    2-D feature maps (dense layers) are not scored. A progress bar shows the
    batches. Pass other defaults with `functools.partial`.

    Args:
        model: A built Sequential or functional single-input `keras.Model`. Not modified.
        graph: `tfprune.graph.build(model)`.
        data: What `model.fit` accepts: an array of inputs, an `(x, y)`
            tuple of arrays, or batches (`x` or `(x, y)`) from a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator.
        seed: Unused (the criterion is deterministic).
        num_batches: Int. Batches used; the reference uses 5 batches of 128.
            Defaults to `5`.
        batch_size: Int. Batch size when `data` is an array. Defaults to `128`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar over
            the batches. Defaults to `"auto"`.

    Returns:
        Dict `{group_name: scores}` (higher is more important).

    Raises:
        ValueError: If `data` is missing or empty, its inputs do not have
            the model's input shape, or `verbose` is not 0, 1, 2 or "auto".
        TypeError: If `data` is not a dataset or an array.

    Example:

    >>> # small, result = tfprune.prune(model, "hrank", rate=0.5, data=x_train)
    >>> # criterion = functools.partial(tfprune.criteria.hrank, num_batches=10, verbose=0)
    """
    return _features.group_statistics(
        model,
        graph,
        data,
        _feature_map_ranks,
        num_batches,
        batch_size,
        "Criterion 'hrank'",
        verbose,
        consumer_inputs=False,  # a head's context is no image: HRank ranks conv feature maps only
    )


register("hrank", hrank)
