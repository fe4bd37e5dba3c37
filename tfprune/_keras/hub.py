"""keras-hub classes by module path: keras-hub exports its models, not its building blocks.

tfprune's handlers for keras-hub layers are registered by `(module, class
name)` so that keras-hub need not be imported (nor installed); the module
paths live under `keras_hub.src`, which is private. These helpers build the
keys.
"""

__all__ = ["LIBRARY_ROOT", "layer_module", "model_module", "utils_module"]

LIBRARY_ROOT = "keras_hub.src."


def model_module(tail):
    """The module path of a keras-hub model file.

    Example:
        >>> model_module("vit.vit_layers")
        'keras_hub.src.models.vit.vit_layers'
    """
    return f"{LIBRARY_ROOT}models.{tail}"


def layer_module(tail):
    """The module path of a keras-hub shared layer file.

    Example:
        >>> layer_module("modeling.position_embedding")
        'keras_hub.src.layers.modeling.position_embedding'
    """
    return f"{LIBRARY_ROOT}layers.{tail}"


def utils_module(tail):
    """The module path of a keras-hub utility file.

    Example:
        >>> utils_module("keras_utils")
        'keras_hub.src.utils.keras_utils'
    """
    return f"{LIBRARY_ROOT}utils.{tail}"
