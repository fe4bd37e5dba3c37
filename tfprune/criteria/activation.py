"""DropNet's criterion (Tan & Motani, ICML 2020): the mean post-activation value per channel.

Channels whose activations are small on the data contribute little and are
removed first (docs/METHODS.md §8); `tfprune.pruners.DropNet` repeats
prune-and-retrain with it.
"""

import numpy as np

from tfprune import _features
from tfprune.criteria.base import register

__all__ = ["activation"]


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

    Channels without a tensor of their own are read where their consumer
    projection takes them in: an attention head's `a` is its context vector
    (its rows of the output projection's input; with `gqa="groups"` a
    key/value group scores the mean of its query heads) and a gated MLP
    unit's is `act(gate) * up`, what the down projection reads. For a
    language model, the calibration data is a few token sequences in the
    form the model takes them, `{"token_ids": ..., "padding_mask": ...}`;
    positions whose `padding_mask` is 0 are left out, so each score is a
    mean over the real tokens (docs/METHODS.md §14).

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        graph: `tfprune.graph.build(model)`.
        data: What `model.fit` accepts: an array of inputs, an `(x, y)`
            tuple of arrays, or batches (`x` or `(x, y)`) from a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator. For a
            model with several inputs (a keras-hub CausalLM), `x` is a dict
            `{input_name: array}` with exactly the model's input names.
        seed: Unused (the criterion is deterministic).
        num_batches: Int or None. Batches used; None (default) uses all the data.
        batch_size: Int. Batch size when `data` is an array (or a dict of
            arrays). Defaults to `128`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar over
            the batches. Defaults to `"auto"`.

    Returns:
        Dict `{group_name: scores}` for every prunable group (higher is more
        important); the heads of an attention layer whose output projection
        is not a Dense or EinsumDense layer are not scored.

    Raises:
        ValueError: If `data` is missing or empty, its inputs do not have
            the model's input shape or names (a dict whose keys are not the
            model's input names, arrays for a model with several inputs),
            or `verbose` is not 0, 1, 2 or "auto".
        TypeError: If `data` is not a dataset or an array.

    Example:

    >>> # small, result = tfprune.prune(model, "activation", rate=0.2, data=x_train)
    >>> # A keras-hub causal LM, on a few calibration sequences:
    >>> # calibration = {"token_ids": token_ids, "padding_mask": padding_mask}
    >>> # small, result = tfprune.prune(lm, "activation", rate=0.3, data=calibration)
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
