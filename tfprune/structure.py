"""Which layers of a model play a structural role: BatchNormalization scales and expansion convs.

Shared by `tfprune.prune` (`targets="expansion"`), the BN-γ sparsity
callback and the plots, which import it rather than each other.
"""

import keras

from tfprune.criteria.base import consumers

__all__ = ["batch_norm_layers", "expansion_layers"]

# Layers an expansion conv's output may pass through before the depthwise conv.
_EXPANSION_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ZeroPadding2D,
)


def batch_norm_layers(model):
    """Returns every BatchNormalization layer with a trainable scale, nested models included.

    Args:
        model: A Keras model (or layer with sub-layers).

    Returns:
        List of `keras.layers.BatchNormalization` layers, in graph order.

    Example:

    >>> import keras
    >>> from tfprune.structure import batch_norm_layers
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    >>> len(batch_norm_layers(model))
    1
    """
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.scale and layer.trainable:
                found.append(layer)
        elif getattr(layer, "layers", None):
            found.extend(batch_norm_layers(layer))
    return found


def expansion_layers(model):
    """Names of the 1x1 expansion convs of the model's inverted-residual blocks.

    Recognised from the graph, not from names: a `Conv2D` with a 1x1 kernel
    (and `groups=1`) whose output reaches a `DepthwiseConv2D` through nothing
    but BatchNormalization, activation and zero-padding layers, each read by
    one layer only.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        List of layer names.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3("small")
    >>> tfprune.structure.expansion_layers(model)[:2]
    ['expanded_conv_1_expand', 'expanded_conv_2_expand']
    """
    readers = consumers(model)
    names = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.groups != 1:
            continue
        if tuple(layer.kernel_size) != (1, 1):
            continue
        current = layer
        while len(readers.get(current.name, ())) == 1:
            current = readers[current.name][0]
            if isinstance(current, keras.layers.DepthwiseConv2D):
                names.append(layer.name)
                break
            if not isinstance(current, _EXPANSION_PASS_THROUGH):
                break
    return names
