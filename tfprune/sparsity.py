"""Turn models with tfprune's training-time layers back into plain Keras models.

`strip` is shared by every method that trains with a reparameterised or masked
layer (STR layers, magnitude-pruning masks). Such a layer takes part by
implementing one method:

    def stripped_layer(self):
        '''Returns a new, built, plain Keras layer with the same name whose
        weights hold this layer's effective (sparse) weights.'''

`strip` calls it for every layer that has it and keeps every other layer as it
is (cloned, with its weights copied).
"""

from tfprune._utils import clone_graph, require_graph_model


def strip(model):
    """Returns a plain Keras model with the sparse kernels baked in.

    Every layer that implements `stripped_layer()` (tfprune's STR layers and
    magnitude-pruning wrappers) is replaced by the plain Keras layer it
    returns; all other layers are cloned with their weights. The outputs of the
    returned model equal those of `model` and the input model is not modified.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        A new `keras.Model` of the same kind that contains only plain Keras
        layers (and any custom layers the input model already had).

    Raises:
        TypeError: If `model` is not a Keras model or is a subclassed model.
        ValueError: If `model` is not built.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> plain = tfprune.strip(model)
    >>> [type(layer).__name__ for layer in plain.layers]
    ['InputLayer', 'Dense']
    """
    require_graph_model(model, "tfprune.strip")

    def replace(layer):
        if hasattr(layer, "stripped_layer"):
            return layer.stripped_layer()
        return None

    return clone_graph(model, replace)
