"""STR convolution layers: `STRConv1D`, `STRConv2D`, `STRDepthwiseConv2D`."""

import keras

from tfprune.layers.str_base import STRMixin

__all__ = ["STRConv1D", "STRConv2D", "STRDepthwiseConv2D"]


@keras.saving.register_keras_serializable(package="tfprune")
class STRConv1D(STRMixin, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with a learned soft threshold on its kernel (STR).

    The forward pass convolves with `sparse_kernel`
    (`sign(W) * relu(|W| - g(s))`); `tfprune.strip` turns the layer into a
    plain `Conv1D` holding that kernel.

    Args:
        The arguments of `keras.layers.Conv1D`, plus the keyword-only STR
        arguments documented in `tfprune.layers.STRMixin`: `s_init`,
        `threshold_fn`, `granularity`, `mode`, `threshold_regularizer`.

    Raises:
        ValueError: If an STR argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRConv1D(8, 3, padding="causal")
    >>> tuple(layer(keras.ops.ones((2, 10, 4))).shape)
    (2, 10, 8)
    """


@keras.saving.register_keras_serializable(package="tfprune")
class STRConv2D(STRMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a learned soft threshold on its kernel (STR).

    The forward pass convolves with `sparse_kernel`
    (`sign(W) * relu(|W| - g(s))`, or per-filter norm thresholding with
    `mode="channel"`); `tfprune.strip` turns the layer into a plain `Conv2D`
    holding that kernel.

    Args:
        The arguments of `keras.layers.Conv2D`, plus the keyword-only STR
        arguments documented in `tfprune.layers.STRMixin`: `s_init`,
        `threshold_fn`, `granularity`, `mode`, `threshold_regularizer`.

    Raises:
        ValueError: If an STR argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRConv2D(16, 3, padding="same", granularity="filter")
    >>> tuple(layer(keras.ops.ones((1, 8, 8, 3))).shape)
    (1, 8, 8, 16)
    >>> tuple(layer.threshold_parameter.shape)
    (16,)
    """


@keras.saving.register_keras_serializable(package="tfprune")
class STRDepthwiseConv2D(STRMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a learned soft threshold on its kernel (STR).

    Output channel `c * depth_multiplier + m` is the filter `W[..., c, m]`;
    with `granularity="filter"`, `s` has shape `(input_channels,
    depth_multiplier)`.

    Args:
        The arguments of `keras.layers.DepthwiseConv2D`, plus the keyword-only
        STR arguments documented in `tfprune.layers.STRMixin`: `s_init`,
        `threshold_fn`, `granularity`, `mode`, `threshold_regularizer`.

    Raises:
        ValueError: If an STR argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRDepthwiseConv2D(3, depth_multiplier=2)
    >>> tuple(layer(keras.ops.ones((1, 8, 8, 4))).shape)
    (1, 6, 6, 8)
    >>> layer.zero_filters().shape
    (8,)
    """

    _filter_axes = 2
