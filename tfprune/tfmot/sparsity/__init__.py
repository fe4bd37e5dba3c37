"""`tfmot.sparsity`: only its `keras` namespace (see `tfprune.tfmot`)."""

from tfprune.tfmot.sparsity import keras

__all__ = ["keras"]
