"""DropNet's criterion (Tan & Motani, ICML 2020): the mean post-activation value per channel.

Channels whose activations are small on the data contribute little and are
removed first (docs/METHODS.md §8); `tfprune.pruners.DropNet` repeats
prune-and-retrain with it.
"""

import numpy as np

from tfprune import _features
from tfprune.criteria.base import register


def _mean_absolute_activation(features, weights=None):
    """`(batch, ..., channels)` -> `(batch, channels)`: mean |a| over the (unpadded) positions."""
    values = np.abs(features.reshape(len(features), -1, features.shape[-1]).astype("float64"))
    if weights is None:
        return values.mean(axis=1)
    return (values * weights[:, :, None]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)[:, None]


def activation(model, graph, data=None, seed=None, num_batches=None, batch_size=128, verbose="auto"):
    """Scores each channel by its mean post-activation magnitude over the data (DropNet).

    The score of channel `n` is the mean of `|a_n|` over every position and
    example, where `a` is the output of each producer of the group after its
    BatchNormalization and activation (averaged over the group's producers).
    For ReLU-family activations `|a| = a`: this is the paper's mean
    activation; the magnitude keeps channels that are strongly negative
    (linear bottlenecks, hard-swish) from looking unimportant.

    Args:
        model: A built Sequential or functional single-input `keras.Model`. Not modified.
        graph: `tfprune.graph.build(model)`.
        data: What `model.fit` accepts: an array of inputs, an `(x, y)`
            tuple of arrays, or batches (`x` or `(x, y)`) from a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator.
        seed: Unused (the criterion is deterministic).
        num_batches: Int or None. Batches used; None (default) uses all the data.
        batch_size: Int. Batch size when `data` is an array. Defaults to `128`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar over
            the batches. Defaults to `"auto"`.

    Returns:
        Dict `{group_name: scores}` for every prunable group (higher is more important).

    Raises:
        ValueError: If `data` is missing or empty, its inputs do not have
            the model's input shape, or `verbose` is not 0, 1, 2 or "auto".
        TypeError: If `data` is not a dataset or an array.

    Example:

    >>> # small, result = tfprune.prune(model, "activation", rate=0.2, data=x_train)
    """
    return _features.group_statistics(
        model,
        graph,
        data,
        _mean_absolute_activation,
        num_batches,
        batch_size,
        "Criterion 'activation'",
        verbose,
    )


register("activation", activation)
