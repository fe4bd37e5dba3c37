"""Gradual magnitude pruning for Keras 3 (what TensorFlow Model Optimization offers tf_keras).

`prune_low_magnitude(model, schedule=...)` wraps the prunable layers in
`PruneLowMagnitude` masks; `tfprune.callbacks.UpdatePruningStep` advances the
schedules during `model.fit` (or `update_pruning_step(model)` in a custom
loop); `tfprune.strip` bakes the zeros in. Unstructured, block and M:N
patterns; `check_m_by_n` verifies an M:N model.
"""

from tfprune.magnitude.m_by_n import check_m_by_n, count_m_by_n_violations
from tfprune.magnitude.masks import block_mask, m_by_n_mask, magnitude_mask, mask_for
from tfprune.magnitude.policy import PruneForLatencyOnXNNPack, PruningPolicy
from tfprune.magnitude.prune import (
    mask_sparsity,
    prune_low_magnitude,
    pruning_wrappers,
    strip_pruning,
    update_pruning_step,
)
from tfprune.magnitude.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfprune.magnitude.wrapper import (
    PRUNABLE_LAYERS,
    PruneLowMagnitude,
    is_prunable,
    prunable_weights,
)

__all__ = [
    "PRUNABLE_LAYERS",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "block_mask",
    "check_m_by_n",
    "count_m_by_n_violations",
    "is_prunable",
    "m_by_n_mask",
    "magnitude_mask",
    "mask_for",
    "mask_sparsity",
    "prunable_weights",
    "prune_low_magnitude",
    "pruning_wrappers",
    "strip_pruning",
    "update_pruning_step",
]
