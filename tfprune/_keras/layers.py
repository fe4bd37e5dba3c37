"""Private fields of Keras layers that tfprune reads or changes.

`keras.layers.MultiHeadAttention` keeps its four projections and head sizes
in private attributes; Keras's own applications keep two small layers
(`LayerScale`, `CustomScaleLayer`) unexported; a layer's own variables and
whether its `call` takes `training` are private too.
"""

__all__ = [
    "ATTENTION_PROJECTION_ATTRIBUTES",
    "application_layers",
    "attention_output_shape",
    "attention_projections",
    "attention_sizes",
    "call_takes_training",
    "gated_attention",
    "head_count",
    "own_variables",
    "qkv_projection",
    "replace_sublayer",
    "untrack",
]


def attention_projections(layer):
    """The query, key, value and output `EinsumDense` layers of a `keras.layers.MultiHeadAttention`.

    Args:
        layer: a built `MultiHeadAttention` (or a subclass keeping Keras's fields).

    Returns:
        A dict with keys "query", "key", "value", "output"; a value is None when
        the layer has no such projection.

    Example:
        >>> import keras
        >>> attention = keras.layers.MultiHeadAttention(2, 4)
        >>> _ = attention(keras.Input((3, 8)), keras.Input((3, 8)))
        >>> tuple(attention_projections(attention)["output"].kernel.shape)
        (2, 4, 8)
    """
    return {
        "query": getattr(layer, "_query_dense", None),
        "key": getattr(layer, "_key_dense", None),
        "value": getattr(layer, "_value_dense", None),
        "output": getattr(layer, "_output_dense", None),
    }


def attention_sizes(layer):
    """`(num_heads, key_dim, value_dim)` of a `MultiHeadAttention` (value_dim defaults to key_dim).

    Example:
        >>> import keras
        >>> attention_sizes(keras.layers.MultiHeadAttention(2, 4))
        (2, 4, 4)
    """
    key_dim = getattr(layer, "_key_dim", None)
    return head_count(layer), key_dim, getattr(layer, "_value_dim", None) or key_dim


def head_count(layer):
    """An attention layer's number of heads (`num_heads`, or Keras's private `_num_heads`), or None.

    Example:
        >>> import keras
        >>> head_count(keras.layers.MultiHeadAttention(3, 4)), head_count(keras.layers.Dense(2))
        (3, None)
    """
    return getattr(layer, "num_heads", getattr(layer, "_num_heads", None))


def gated_attention(layer):
    """Whether an attention layer was made with `use_gate=True` (public or private field).

    Example:
        >>> import keras
        >>> gated_attention(keras.layers.MultiHeadAttention(2, 4))
        False
    """
    return bool(getattr(layer, "use_gate", False) or getattr(layer, "_use_gate", False))


def call_takes_training(layer):
    """Whether the layer's `call` has a `training` argument (Keras passes it then).

    Example:
        >>> import keras
        >>> call_takes_training(keras.layers.Dropout(0.5)), call_takes_training(keras.layers.ReLU())
        (True, False)
    """
    return bool(getattr(layer, "_call_has_training_arg", False))


def own_variables(layer):
    """The variables a layer created itself, not those of the layers it holds.

    Example:
        >>> import keras
        >>> dense = keras.layers.Dense(2, name="d")
        >>> dense.build((None, 3))
        >>> [variable.path for variable in own_variables(dense)]
        ['d/kernel', 'd/bias']
    """
    return list(getattr(layer, "_trainable_variables", [])) + list(
        getattr(layer, "_non_trainable_variables", [])
    )


def untrack(layer, value):
    """Stops a layer from tracking `value` (a sublayer or variable about to be replaced).

    Example:
        >>> import keras
        >>> outer = keras.layers.Layer()
        >>> outer.inner = keras.layers.Dense(2)
        >>> untrack(outer, outer.inner)
        >>> len(outer._layers)
        0
    """
    layer._tracker.untrack(value)


def attention_output_shape(layer):
    """The `output_shape` a `MultiHeadAttention` was made with (None: the query's width).

    Example:
        >>> import keras
        >>> attention_output_shape(keras.layers.MultiHeadAttention(2, 4, output_shape=6))
        (6,)
        >>> attention_output_shape(keras.layers.MultiHeadAttention(2, 4)) is None
        True
    """
    return getattr(layer, "_output_shape", None)


def qkv_projection(layer):
    """The fused query/key/value projection of an attention layer keeping one (`_qkv_dense`), or None.

    Example:
        >>> import keras
        >>> qkv_projection(keras.layers.MultiHeadAttention(2, 4)) is None
        True
    """
    return getattr(layer, "_qkv_dense", None)


_APPLICATION_LAYERS = {
    "LayerScale": "keras.src.applications.convnext",
    "CustomScaleLayer": "keras.src.applications.inception_resnet_v2",
}


def application_layers():
    """The layer classes Keras's applications define but do not export, by class name.

    ConvNeXt's `LayerScale` and InceptionResNetV2's `CustomScaleLayer`; a
    Keras version that moved or dropped one leaves it out.

    Returns:
        A dict class name -> class.

    Example:
        >>> sorted(application_layers())
        ['CustomScaleLayer', 'LayerScale']
    """
    import importlib

    found = {}
    for name, module in _APPLICATION_LAYERS.items():
        try:
            found[name] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return found


def replace_sublayer(layer, name, new):
    """Sets `layer.<name>` to `new` in the old sub-layer's place, so that `layer.weights` keep their order.

    Args:
        layer: a layer holding a sub-layer in attribute `name`.
        name: String. The attribute.
        new: the layer to put there (built or not).

    Example:
        >>> import keras
        >>> outer = keras.layers.Layer()
        >>> outer.first, outer.second = keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")
        >>> replace_sublayer(outer, "first", keras.layers.Dense(3, name="c"))
        >>> [sub.name for sub in outer._layers]
        ['c', 'b']
    """
    old = getattr(layer, name)
    position = next(index for index, sub in enumerate(layer._layers) if sub is old)
    layer._tracker.untrack(old)
    setattr(layer, name, new)
    layer._layers.remove(new)
    layer._layers.insert(position, new)


# The private attributes `keras.layers.MultiHeadAttention` keeps its query, key, value and
# output projections in; keras-hub's Llama-family attention layers use the same names.
ATTENTION_PROJECTION_ATTRIBUTES = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def kernel_variable(layer):
    """The kernel variable itself of a Dense/EinsumDense/Conv layer (its `kernel` may be a LoRA sum or a view).

    Keras's Dense, EinsumDense and convolution layers keep the variable in a
    private `_kernel` and expose `kernel` as a property; DepthwiseConv2D
    keeps it in `kernel` itself.

    Example:
        >>> import keras
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 3))
        >>> kernel_variable(dense) is dense.kernel
        True
    """
    return layer._kernel if hasattr(layer, "_kernel") else layer.kernel


def set_kernel_variable(layer, variable):
    """Stores `variable` where Keras's layers keep their kernel variable (`_kernel`).

    For a layer class that overrides the `kernel` property (tfprune's STR
    layers return the thresholded kernel there) while Keras's `build` still
    assigns the variable to it.

    Example:
        >>> class Layer:
        ...     pass
        >>> layer = Layer()
        >>> set_kernel_variable(layer, 3)
        >>> kernel_variable(layer)
        3
    """
    layer._kernel = variable


def stored_kernel(layer):
    """The variable `set_kernel_variable` (or Keras's own `build`) stored as the layer's kernel.

    Example:
        >>> import keras
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 3))
        >>> stored_kernel(dense).shape == (3, 2)
        True
    """
    return layer._kernel
