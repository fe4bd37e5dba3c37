"""`STRDense`: a Dense layer with a learned soft threshold on its kernel."""

import keras

from tfprune.layers.str_base import STRMixin

__all__ = ["STRDense"]


@keras.saving.register_keras_serializable(package="tfprune")
class STRDense(STRMixin, keras.layers.Dense):
    """`keras.layers.Dense` with a learned soft threshold on its kernel (STR).

    The forward pass multiplies by `sparse_kernel`
    (`sign(W) * relu(|W| - g(s))`, or per-unit norm thresholding with
    `mode="channel"`); `tfprune.strip` turns the layer into a plain `Dense`
    holding that kernel.

    Args:
        The arguments of `keras.layers.Dense`, plus the keyword-only STR
        arguments documented in `tfprune.layers.STRMixin`: `s_init`,
        `threshold_fn`, `granularity`, `mode`, `threshold_regularizer`.

    Raises:
        ValueError: If an STR argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRDense(4, s_init=-1.0)
    >>> outputs = layer(keras.ops.ones((2, 3)))
    >>> float(layer.threshold) > 0.26  # sigmoid(-1)
    True
    """
