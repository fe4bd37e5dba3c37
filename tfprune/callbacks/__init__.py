"""Keras callbacks provided by tfprune."""

from tfprune.callbacks.bn_sparsity import BNSparsity

__all__ = ["BNSparsity"]
