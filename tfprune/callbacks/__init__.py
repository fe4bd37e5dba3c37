"""Keras callbacks provided by tfprune."""

from tfprune.callbacks.bn_sparsity import BNSparsity
from tfprune.callbacks.pruning_step import PruningSummaries, UpdatePruningStep
from tfprune.callbacks.sparsity_budget import SparsityBudget

__all__ = ["BNSparsity", "PruningSummaries", "SparsityBudget", "UpdatePruningStep"]
