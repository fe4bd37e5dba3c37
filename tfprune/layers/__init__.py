"""Keras layers provided by tfprune."""

from tfprune.layers.str_base import SoftThresholdMixin, STRMixin
from tfprune.layers.str_conv import STRConv1D, STRConv2D, STRDepthwiseConv2D
from tfprune.layers.str_dense import STRDense
from tfprune.layers.str_low_rank import STRLowRankDense
from tfprune.layers.weight import Weight

__all__ = [
    "STRConv1D",
    "STRConv2D",
    "STRDense",
    "STRDepthwiseConv2D",
    "STRLowRankDense",
    "STRMixin",
    "SoftThresholdMixin",
    "Weight",
]
