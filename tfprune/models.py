"""Small model builders used by the demo, examples, benchmarks and tests."""

import keras

from tfprune._utils import clone_graph

__all__ = ["mobilenet_v3"]

_MOBILENET_V3 = {
    "small": keras.applications.MobileNetV3Small,
    "large": keras.applications.MobileNetV3Large,
}


def mobilenet_v3(
    variant="large",
    input_shape=(32, 32, 3),
    classes=10,
    alpha=1.0,
    minimalistic=False,
    bn_momentum=0.9,
    dropout_rate=0.2,
    seed=None,
):
    """Builds a randomly initialised Keras MobileNetV3 for small-data training.

    This is `keras.applications.MobileNetV3Small`/`MobileNetV3Large` with
    `weights=None` and without the built-in `Rescaling` (inputs are expected in
    [0, 1]), whose BatchNormalization momentum is lowered from Keras's 0.999 to
    `bn_momentum`: with a few hundred training steps (the digits data) the
    moving statistics would otherwise still be far from the batch statistics
    and evaluation would be near chance.

    Args:
        variant: String. `"small"` or `"large"`. Defaults to `"large"`.
        input_shape: Tuple of 3 ints. Defaults to `(32, 32, 3)` (at least 32x32).
        classes: Int. Number of classes. Defaults to `10`.
        alpha: Float. Width multiplier. Defaults to `1.0`.
        minimalistic: Bool. Keras's minimalistic variant (no SE, no hard-swish).
        bn_momentum: Float in (0, 1). Momentum of every BatchNormalization.
            Defaults to `0.9`.
        dropout_rate: Float. Dropout before the classifier. Defaults to `0.2`.
        seed: Optional int. Seeds Keras's initializers for a reproducible model.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `variant` or `bn_momentum` is not valid.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10)
    >>> model.output_shape
    (None, 10)
    """
    if variant not in _MOBILENET_V3:
        raise ValueError(
            f"`variant` must be one of {sorted(_MOBILENET_V3)}. Received: variant={variant!r}"
        )
    if not 0.0 < bn_momentum < 1.0:
        raise ValueError(f"`bn_momentum` must be in (0, 1). Received: bn_momentum={bn_momentum}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = _MOBILENET_V3[variant](
        input_shape=tuple(input_shape),
        alpha=alpha,
        minimalistic=minimalistic,
        weights=None,
        classes=classes,
        dropout_rate=dropout_rate,
        include_preprocessing=False,
    )

    def with_momentum(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return None
        config = layer.get_config()
        config["momentum"] = bn_momentum
        new_layer = layer.__class__.from_config(config)
        new_layer.build(layer.input.shape)
        new_layer.set_weights(layer.get_weights())
        return new_layer

    return clone_graph(model, with_momentum)
