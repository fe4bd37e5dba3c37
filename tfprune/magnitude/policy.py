"""Pruning policies: which layers `prune_low_magnitude` may wrap (TFMOT's `pruning_policy`)."""

import keras

__all__ = ["PruneForLatencyOnXNNPack", "PruningPolicy"]


class PruningPolicy:
    """Decides which layers of a model `prune_low_magnitude` may wrap.

    Subclass it and override `allow_pruning`; `ensure_model_supports_pruning`
    may refuse a model as a whole. Pass an instance as
    `prune_low_magnitude(model, pruning_policy=...)`.

    Example:

    >>> import keras, tfprune
    >>> class DenseOnly(tfprune.magnitude.PruningPolicy):
    ...     def allow_pruning(self, layer):
    ...         return isinstance(layer, keras.layers.Dense)
    >>> DenseOnly().allow_pruning(keras.layers.Conv2D(4, 3))
    False
    """

    def allow_pruning(self, layer):
        """Returns whether `layer` may be wrapped.

        Args:
            layer: A Keras layer of the model.

        Returns:
            Bool. The default allows every layer.

        Example:

        >>> import keras, tfprune
        >>> tfprune.magnitude.PruningPolicy().allow_pruning(keras.layers.Dense(2))
        True
        """
        return True

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` if the policy cannot apply to `model` (default: accepts all).

        Args:
            model: The (flattened) functional model about to be wrapped.

        Raises:
            ValueError: In subclasses, when the model cannot be pruned under
                the policy (the default raises nothing).

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> tfprune.magnitude.PruningPolicy().ensure_model_supports_pruning(model)
        """


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the layers XNNPACK's sparse kernels speed up: 1x1 convolutions.

    TensorFlow Model Optimization's policy of the same name: XNNPACK (the
    LiteRT CPU delegate) runs sparse inference for pointwise convolutions,
    so only `Conv2D` layers with a 1x1 kernel, stride 1, no dilation, one
    group and channels-last data are wrapped; everything else stays dense.
    LiteRT takes the sparse path only for models whose 1x1 convolutions are
    sparse enough (TFMOT suggests 70-80%); measure with
    `tfprune.export.benchmark`.

    Raises:
        ValueError: From `ensure_model_supports_pruning`, when the model has
            no such convolution.

    Example:

    >>> import keras, tfprune
    >>> policy = tfprune.magnitude.PruneForLatencyOnXNNPack()
    >>> policy.allow_pruning(keras.layers.Conv2D(8, 1)), policy.allow_pruning(keras.layers.Conv2D(8, 3))
    (True, False)
    """

    def allow_pruning(self, layer):
        return (
            type(layer) is keras.layers.Conv2D
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1
            and layer.data_format == "channels_last"
        )

    def ensure_model_supports_pruning(self, model):
        if not any(self.allow_pruning(layer) for layer in model.layers):
            raise ValueError(
                f"PruneForLatencyOnXNNPack found no 1x1 Conv2D layer (stride 1, no dilation, one "
                f"group, channels_last) in model '{model.name}': nothing it would prune speeds up "
                "on XNNPACK. Leave `pruning_policy` out to prune every prunable layer."
            )
