"""`tfmot.sparsity.keras` for Keras 3: TFMOT's names bound to tfprune's magnitude pruning.

Example:

>>> import keras, tfprune.tfmot as tfmot
>>> inputs = keras.Input((8,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> pruned = tfmot.sparsity.keras.prune_low_magnitude(
...     model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
>>> type(pruned.layers[1]).__name__
'PruneLowMagnitude'
"""

import contextlib

from tfprune.callbacks import PruningSummaries, UpdatePruningStep
from tfprune.magnitude import (
    ConstantSparsity,
    PolynomialDecay,
    PruneForLatencyOnXNNPack,
    PruningPolicy,
    PruningSchedule,
    prune_low_magnitude,
    strip_pruning,
)

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]


class PrunableLayer:
    """Mix-in for your own layers: `get_prunable_weights()` lists the weights to prune.

    tfprune needs no base class (any layer with a `get_prunable_weights`
    method is prunable); this one keeps TFMOT code that inherits from
    `tfmot.sparsity.keras.PrunableLayer` working.

    Example:

    >>> import keras, tfprune.tfmot as tfmot
    >>> class MyDense(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
    ...     def get_prunable_weights(self):
    ...         return [self.kernel]
    >>> import tfprune
    >>> tfprune.magnitude.is_prunable(MyDense(3))
    True
    """

    def get_prunable_weights(self):
        """Returns the list of variables to prune.

        Returns:
            List of `keras.Variable`.

        Raises:
            NotImplementedError: Subclasses must implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `get_prunable_weights`.")


@contextlib.contextmanager
def prune_scope():
    """TFMOT's scope for loading pruned models; with tfprune it is not needed.

    tfprune's wrapper, schedules and callbacks are registered Keras
    serializables, so `keras.models.load_model` reads them without a scope;
    this context manager does nothing and exists so that TFMOT code runs.

    Yields:
        None.

    Example:

    >>> import tfprune.tfmot as tfmot
    >>> with tfmot.sparsity.keras.prune_scope():
    ...     pass
    """
    yield
