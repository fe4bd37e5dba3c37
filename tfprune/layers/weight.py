"""`Weight`: a layer whose output is its one weight, so that a graph can hold a layer's own tensor."""

import keras

__all__ = ["Weight"]


@keras.saving.register_keras_serializable(package="tfprune")
class Weight(keras.layers.Layer):
    """A layer whose output is its one weight; its input only places it in the graph.

    `tfprune.graph.flatten` inlines some layers that hold weights of their
    own besides their sub-layers (keras-hub's `MaskedLMHead`, whose output
    bias is added to the logits of the token embedding it shares with the
    backbone): their `call` is recorded as the operations it runs, and each
    of their own weights becomes one `Weight` layer whose output the
    recorded operations use (`logits + bias`). The weight then stays
    trainable, is saved in `.keras` files and can be sliced by the surgery
    like any layer's.

    Args:
        shape: Tuple of ints. The shape of the weight (and of the output).
        initializer: String or `keras.initializers.Initializer`. How the
            weight starts when the layer is built. Defaults to `"zeros"`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: Any tensor of the graph: its values are not read.

    Output shape:
        `shape`, without a batch axis.

    Raises:
        ValueError: If `shape` is not a tuple of positive ints.

    Example:

    >>> inputs = keras.Input((3,))
    >>> bias = tfprune.layers.Weight((3,), initializer="ones")(inputs)
    >>> model = keras.Model(inputs, inputs + bias)
    >>> model(np.zeros((1, 3))).tolist()
    [[1.0, 1.0, 1.0]]
    """

    def __init__(self, shape, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else shape
        if not isinstance(shape, tuple) or not all(isinstance(size, int) and size > 0 for size in shape):
            raise ValueError(f"`shape` must be a tuple of positive ints. Received: shape={shape!r}")
        self.shape = shape
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.weight = self.add_weight(
            name="weight", shape=self.shape, initializer=self.initializer, dtype=self.variable_dtype
        )

    def call(self, inputs):
        return keras.ops.convert_to_tensor(self.weight, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self.shape

    def get_config(self):
        return {
            **super().get_config(),
            "shape": list(self.shape),
            "initializer": keras.initializers.serialize(self.initializer),
        }
