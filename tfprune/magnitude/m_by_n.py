"""Checks that a model's kernels follow an M:N sparsity pattern."""

import keras
import numpy as np
from keras import ops

from tfprune.magnitude.wrapper import (
    PruneLowMagnitude,
    is_prunable,
    prunable_weights,
)

__all__ = ["check_m_by_n", "count_m_by_n_violations"]


def count_m_by_n_violations(weight, m, n):
    """Counts the runs of `n` input channels of a kernel with more than `m` non-zeros.

    Runs go along the second-to-last axis (input channels in Keras's kernel
    layout), for every output channel and kernel position; a last, shorter run
    is checked as if zero-padded to `n`.

    Args:
        weight: Array-like with at least 2 axes.
        m: Int. Most non-zeros allowed per run.
        n: Int. Run length.

    Returns:
        Tuple `(runs, violating_runs)` of ints.

    Example:

    >>> import numpy as np
    >>> from tfprune.magnitude import count_m_by_n_violations
    >>> count_m_by_n_violations(np.array([[1.0], [0.0], [2.0], [3.0]]), 2, 4)
    (1, 1)
    """
    weight = np.asarray(weight)
    runs = np.moveaxis(weight, -2, -1)
    inputs = runs.shape[-1]
    padding = [(0, 0)] * (runs.ndim - 1) + [(0, -inputs % n)]
    runs = np.pad(runs, padding).reshape(runs.shape[:-1] + (-1, n))
    nonzeros = np.count_nonzero(runs, axis=-1)
    return int(nonzeros.size), int(np.sum(nonzeros > m))


def _effective_m_by_n_weights(layer):
    """The weights of `layer` that M:N applies to, masked if `layer` is a pruning wrapper."""
    if isinstance(layer, PruneLowMagnitude):
        if not is_prunable(layer.layer, m_by_n=(1, 1)):
            return []
        return [
            ops.convert_to_numpy(weight.value * mask.value)
            for weight, mask in zip(prunable_weights(layer.layer), layer.masks)
        ]
    if not layer.built or not is_prunable(layer, m_by_n=(1, 1)):
        return []
    weights = [ops.convert_to_numpy(weight.value) for weight in prunable_weights(layer)]
    return [weight for weight in weights if weight.ndim >= 2]


def _layers(model):
    for layer in model.layers:
        if getattr(layer, "layers", None) and not isinstance(layer, PruneLowMagnitude):
            yield from _layers(layer)
        else:
            yield layer


def check_m_by_n(model, m=2, n=4):
    """Checks every kernel with an input-channel axis for the M:N pattern, layer by layer.

    Looks at the effective weights (`weight * mask` for `PruneLowMagnitude`
    layers, the kernel itself for plain layers, e.g. after `tfprune.strip`) of
    every layer whose weights sum over input channels: Dense, Conv1D/2D/3D,
    SeparableConv pointwise kernels and layers with `get_prunable_weights()`
    (see `tfprune.magnitude.PRUNABLE_LAYERS`); nested models are searched too.

    Args:
        model: A Keras model.
        m: Int. Most non-zeros allowed in each run of `n`. Defaults to `2`.
        n: Int. Run length along the input channels. Defaults to `4`.

    Returns:
        Dict `{layer name: {"runs": int, "violations": int, "ok": bool}}`, where
        `violations` counts the runs with more than `m` non-zeros.

    Raises:
        TypeError: If `model` is not a Keras model.
        ValueError: If `m` and `n` are not ints with `1 <= m <= n`.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    >>> tfprune.check_m_by_n(model, 2, 4)["dense"]["ok"]
    False
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`tfprune.check_m_by_n` expects a keras.Model. Received an object of type "
            f"{type(model).__name__}."
        )
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (m, n)) or not (
        1 <= m <= n
    ):
        raise ValueError(
            f"`m` and `n` must be ints with 1 <= m <= n, such as m=2, n=4. Received: m={m!r}, n={n!r}"
        )
    results = {}
    for layer in _layers(model):
        weights = _effective_m_by_n_weights(layer)
        if not weights:
            continue
        counts = [count_m_by_n_violations(weight, m, n) for weight in weights]
        runs, violations = (sum(column) for column in zip(*counts))
        results[layer.name] = {"runs": runs, "violations": violations, "ok": violations == 0}
    return results


