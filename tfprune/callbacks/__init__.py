"""Keras callbacks provided by tfprune."""

from tfprune.callbacks.bn_sparsity import BNSparsity
from tfprune.callbacks.pruning_step import UpdatePruningStep

__all__ = ["BNSparsity", "UpdatePruningStep"]
