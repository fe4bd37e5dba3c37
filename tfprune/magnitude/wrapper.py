"""`PruneLowMagnitude`: a wrapper that masks a layer's prunable weights."""

import keras
from keras import ops

from tfprune._keras.layers import call_takes_training
from tfprune.magnitude.masks import mask_for
from tfprune.magnitude.schedules import PruningSchedule

__all__ = ["PRUNABLE_LAYERS", "PruneLowMagnitude", "is_prunable", "prunable_weights"]

# Layer class -> (attributes holding its prunable weights, whether those weights
# sum over an input-channel axis, the second-to-last one, so that M:N sparsity
# applies). Depthwise kernels and embedding tables have no such axis.
PRUNABLE_LAYERS = {
    keras.layers.Dense: (("kernel",), True),
    keras.layers.Conv1D: (("kernel",), True),
    keras.layers.Conv2D: (("kernel",), True),
    keras.layers.Conv3D: (("kernel",), True),
    keras.layers.SeparableConv1D: (("pointwise_kernel",), True),
    keras.layers.SeparableConv2D: (("pointwise_kernel",), True),
    keras.layers.DepthwiseConv1D: (("kernel",), False),
    keras.layers.DepthwiseConv2D: (("kernel",), False),
    keras.layers.Embedding: (("embeddings",), False),
}


def _registry_entry(layer):
    for cls in type(layer).__mro__:
        if cls in PRUNABLE_LAYERS:
            return PRUNABLE_LAYERS[cls]
    return None


def is_prunable(layer, m_by_n=None):
    """Returns whether `prune_low_magnitude` can wrap `layer`.

    A layer is prunable if its class (or a base class) is in
    `tfprune.magnitude.PRUNABLE_LAYERS`, or if it implements
    `get_prunable_weights()` returning a list of its variables (the interface
    for your own layers, like TensorFlow Model Optimization's `PrunableLayer`).
    With `m_by_n`, only layers whose weights have an input-channel axis qualify
    (not depthwise convolutions or embeddings); a layer of your own qualifies if
    its prunable weights have at least 2 axes, the input channels second to last.

    Args:
        layer: A Keras layer.
        m_by_n: Optional tuple `(m, n)`. Defaults to `None`.

    Returns:
        Bool.

    Example:

    >>> import keras
    >>> from tfprune.magnitude import is_prunable
    >>> is_prunable(keras.layers.Dense(3)), is_prunable(keras.layers.ReLU())
    (True, False)
    """
    if hasattr(layer, "get_prunable_weights"):
        return True
    entry = _registry_entry(layer)
    if entry is None:
        return False
    return m_by_n is None or entry[1]


def prunable_weights(layer):
    """Returns the variables of a built layer that magnitude pruning masks.

    Args:
        layer: A built Keras layer that `is_prunable`.

    Returns:
        List of `keras.Variable`.

    Raises:
        TypeError: If the layer is not prunable, or a prunable weight is not a
            plain variable (LoRA-enabled or quantized layers).

    Example:

    >>> import keras
    >>> from tfprune.magnitude import prunable_weights
    >>> layer = keras.layers.Dense(3)
    >>> layer.build((None, 4))
    >>> [weight.name for weight in prunable_weights(layer)]
    ['kernel']
    """
    if hasattr(layer, "get_prunable_weights"):
        weights = list(layer.get_prunable_weights())
    elif _registry_entry(layer) is not None:
        weights = [getattr(layer, name) for name in _registry_entry(layer)[0]]
    else:
        raise TypeError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no prunable weights; prune one of "
            f"{sorted(cls.__name__ for cls in PRUNABLE_LAYERS)} or give your layer a "
            "`get_prunable_weights()` method returning its variables."
        )
    for weight in weights:
        if not isinstance(weight, keras.Variable):
            raise TypeError(
                f"Layer '{layer.name}' returned a prunable weight that is not a keras.Variable "
                f"(received {type(weight).__name__}); LoRA-enabled or quantized layers cannot be "
                "pruned, prune the plain layer first."
            )
    return weights


def check_pattern(block_size, block_pooling, m_by_n):
    """Validates the sparsity-pattern arguments shared by the wrapper and `prune_low_magnitude`.

    Args:
        block_size: Tuple of two positive ints.
        block_pooling: String, `"avg"` or `"max"`.
        m_by_n: None or a tuple `(m, n)` of positive ints with `m <= n`.

    Returns:
        Tuple `(block_size, block_pooling, m_by_n)` with tuples for the sizes.

    Raises:
        ValueError: If an argument is invalid, or both `m_by_n` and a block are given.

    Example:

    >>> from tfprune.magnitude.wrapper import check_pattern
    >>> check_pattern([1, 4], "max", None)
    ((1, 4), 'max', None)
    """
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(size, int) and size >= 1 for size in block_size)
    ):
        raise ValueError(
            "`block_size` must be a tuple of two positive ints such as (1, 4). "
            f"Received: block_size={block_size!r}"
        )
    if block_pooling not in ("avg", "max"):
        raise ValueError(
            f"`block_pooling` must be 'avg' or 'max'. Received: block_pooling={block_pooling!r}"
        )
    if m_by_n is not None:
        if (
            not isinstance(m_by_n, (tuple, list))
            or len(m_by_n) != 2
            or not all(isinstance(value, int) and value >= 1 for value in m_by_n)
        ):
            raise ValueError(
                "`m_by_n` must be None or a tuple of two positive ints (m, n) such as (2, 4). "
                f"Received: m_by_n={m_by_n!r}"
            )
        if m_by_n[0] > m_by_n[1]:
            raise ValueError(
                "`m_by_n` keeps m weights in every n, so m must not exceed n; pass e.g. (2, 4). "
                f"Received: m_by_n={tuple(m_by_n)!r}"
            )
        if tuple(block_size) != (1, 1):
            raise ValueError(
                "`m_by_n` and `block_size` are two different patterns; pass only one of them. "
                f"Received: block_size={tuple(block_size)!r}, m_by_n={tuple(m_by_n)!r}"
            )
        m_by_n = tuple(m_by_n)
    return tuple(block_size), block_pooling, m_by_n


def _step_dtype():
    # JAX computes in 32 bits unless x64 is enabled, and warns when asked for int64.
    if keras.backend.backend() == "jax":
        import jax

        return "int64" if jax.config.jax_enable_x64 else "int32"
    return "int64"


class _MaskConstraint(keras.constraints.Constraint):
    """Re-applies the mask after every optimizer step, then any constraint of the layer.

    Masked gradients are zero, but optimizer momentum or Adam's running moments
    from before the weight was pruned would still move it; this keeps pruned
    weights exactly zero. (A `Constraint` subclass: Keras 3.12 accepts
    no other object as a variable's constraint.)
    """

    def __init__(self, mask, original):
        self.mask = mask
        self.original = original

    def __call__(self, weight):
        masked = ops.multiply(weight, ops.cast(self.mask, weight.dtype))
        return masked if self.original is None else self.original(masked)


@keras.saving.register_keras_serializable(package="tfprune")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Masks a layer's prunable weights; the masks follow a pruning schedule.

    The wrapper holds the layer, one non-trainable 0/1 mask per prunable weight
    and a non-trainable step counter `pruning_step`. In the forward pass the
    layer runs with `weight * mask` in place of each prunable weight (through
    `keras.StatelessScope`), so the gradients of pruned weights are zero; after
    each optimizer step the mask is applied to the weight again, so pruned
    weights stay exactly zero even with momentum. Masks change only in
    `update_pruning_step()`, called before each training batch by
    `tfprune.callbacks.UpdatePruningStep` (or by
    `tfprune.magnitude.update_pruning_step(model)` in a custom loop): when the
    schedule prunes at the current step, the weights are masked to the
    schedule's sparsity in the pattern asked for (unstructured, blocks or M:N),
    keeping the largest magnitudes.

    Training the wrapper (a call with `training=True`) before any
    `update_pruning_step()` raises, as TensorFlow Model Optimization does: the
    masks would silently stay all ones.

    The wrapper has the wrapped layer's name by default, so
    `tfprune.strip` (which calls `stripped_layer()`) gives back a model with the
    original layer names. Usually built by `tfprune.prune_low_magnitude`.

    Args:
        layer: A prunable Keras layer (see `tfprune.magnitude.is_prunable`).
        schedule: A `tfprune.PruningSchedule` such as
            `tfprune.PolynomialDecay(0.0, 0.9, 0, 1000)`.
        block_size: Tuple of two ints. Tile shape over the (input, output)
            channel axes; `(1, 1)` is unstructured. Defaults to `(1, 1)`.
        block_pooling: String. `"avg"` or `"max"`, how a tile is scored.
            Defaults to `"avg"`.
        m_by_n: Optional tuple `(m, n)`: keep `m` of every `n` consecutive
            input channels; the schedule then only decides when masks are
            computed. Defaults to `None`.
        **kwargs: Base layer arguments such as `name`.

    Raises:
        TypeError: If `layer` is not prunable or `schedule` is not a schedule.
        ValueError: If a pattern argument is invalid.
        RuntimeError: When called with `training=True` before the first
            `update_pruning_step()` (no `UpdatePruningStep` callback).

    Example:

    >>> import keras, tfprune
    >>> wrapper = tfprune.magnitude.PruneLowMagnitude(
    ...     keras.layers.Dense(4), schedule=tfprune.ConstantSparsity(0.5, frequency=1))
    >>> outputs = wrapper(keras.ops.ones((2, 8)))
    >>> wrapper.update_pruning_step()
    0
    >>> float(keras.ops.mean(wrapper.masks[0]))
    0.5
    """

    def __init__(
        self, layer, schedule, block_size=(1, 1), block_pooling="avg", m_by_n=None, **kwargs
    ):
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(
                "`schedule` must be a tfprune pruning schedule such as "
                f"tfprune.ConstantSparsity(0.5). Received: schedule={schedule!r}"
            )
        self.block_size, self.block_pooling, self.m_by_n = check_pattern(
            block_size, block_pooling, m_by_n
        )
        if not is_prunable(layer, self.m_by_n):
            raise TypeError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be pruned with "
                f"m_by_n={self.m_by_n}; see tfprune.magnitude.PRUNABLE_LAYERS, or give the layer a "
                "`get_prunable_weights()` method."
            )
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        # The masked weights are formed in the variables' own dtype; the wrapped
        # layer casts them to its compute dtype itself.
        super().__init__(layer, autocast=False, **kwargs)
        self.schedule = schedule
        # Set by `update_pruning_step`: training without it would never prune.
        self._steps_updated = False

    def build(self, input_shape=None):
        super().build(input_shape)
        weights = prunable_weights(self.layer)
        self.masks = [
            self.add_weight(
                name=f"{weight.name}_mask",
                shape=weight.shape,
                dtype=weight.dtype,
                initializer="ones",
                trainable=False,
            )
            for weight in weights
        ]
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype=_step_dtype(), initializer="zeros", trainable=False
        )
        if keras.backend.backend() != "jax":
            # JAX's compiled optimizer step sees only the trainable and optimizer
            # variables, not the masks: there `apply_masks` runs after each step
            # (UpdatePruningStep, update_pruning_step) instead.
            for weight, mask in zip(weights, self.masks):
                weight.constraint = _MaskConstraint(mask, weight.constraint)
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        if training is True and not self._steps_updated:
            raise RuntimeError(
                f"PruneLowMagnitude layer '{self.name}' is being trained without "
                "`tfprune.callbacks.UpdatePruningStep`, so its masks would never be updated: add "
                "`callbacks=[tfprune.callbacks.UpdatePruningStep()]` to `fit`, or call "
                "`tfprune.magnitude.update_pruning_step(model)` before each step of a custom "
                "training loop."
            )
        if call_takes_training(self.layer):
            kwargs["training"] = training
        masked = {
            id(weight): ops.multiply(weight.value, mask.value)
            for weight, mask in zip(prunable_weights(self.layer), self.masks)
        }
        # Every variable of the layer is mapped (not only the masked ones) so that
        # an enclosing stateless scope still provides the values it holds.
        mapping = [(variable, masked.get(id(variable), variable.value)) for variable in self.layer.variables]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            before = [scope.get_current_value(variable) for variable, _ in mapping]
            outputs = self.layer(inputs, *args, **kwargs)
        # Hand state updates (if the layer makes any) and activity losses to the outside.
        for (variable, _), value in zip(mapping, before):
            if id(variable) not in masked and scope.get_current_value(variable) is not value:
                variable.assign(scope.get_current_value(variable))
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def update_pruning_step(self, step=None):
        """Updates the masks for one training step, then advances the step counter.

        If the schedule prunes at `step`, each mask is recomputed from the
        current weights and the weights are multiplied by it. The counter is
        then set to `step + 1`. Runs eagerly, outside the training step.

        Args:
            step: Optional int. The step to apply; defaults to the counter's value.

        Returns:
            Int. The step that was applied.

        Example:

        >>> import keras, tfprune
        >>> wrapper = tfprune.magnitude.PruneLowMagnitude(
        ...     keras.layers.Dense(4), schedule=tfprune.ConstantSparsity(0.5))
        >>> wrapper.build((None, 8))
        >>> wrapper.update_pruning_step(), wrapper.update_pruning_step()
        (0, 1)
        """
        self._steps_updated = True
        if step is None:
            step = int(ops.convert_to_numpy(self.pruning_step.value))
        should_prune, sparsity = self.schedule(step)
        if should_prune:
            for weight, mask in zip(prunable_weights(self.layer), self.masks):
                mask.assign(
                    mask_for(weight.value, sparsity, self.block_size, self.block_pooling, self.m_by_n)
                )
        if should_prune or keras.backend.backend() == "jax":
            self.apply_masks()
        self.pruning_step.assign(step + 1)
        return step

    def apply_masks(self):
        """Sets every pruned weight to exactly zero (`weight = weight * mask`).

        On TensorFlow and PyTorch a constraint does this after every optimizer
        step. JAX's compiled step cannot read the masks, so there
        `UpdatePruningStep` calls this after every batch and
        `update_pruning_step` before it; the forward pass always uses
        `weight * mask`, so outputs are the same on every backend.

        Example:

        >>> import keras, tfprune
        >>> wrapper = tfprune.magnitude.PruneLowMagnitude(
        ...     keras.layers.Dense(2), schedule=tfprune.ConstantSparsity(0.5))
        >>> wrapper.build((None, 2))
        >>> _ = wrapper.masks[0].assign([[1.0, 0.0], [0.0, 1.0]])
        >>> wrapper.apply_masks()
        >>> int(keras.ops.sum(keras.ops.cast(wrapper.layer.kernel == 0, "int32")))
        2
        """
        for weight, mask in zip(prunable_weights(self.layer), self.masks):
            weight.assign(ops.multiply(weight.value, ops.cast(mask.value, weight.dtype)))

    def stripped_layer(self):
        """Returns the plain wrapped layer with the masked weights baked in (strip protocol).

        Returns:
            A new, built layer of the wrapped class, with this wrapper's name,
            whose prunable weights equal `weight * mask`.

        Example:

        >>> import keras, tfprune
        >>> wrapper = tfprune.magnitude.PruneLowMagnitude(
        ...     keras.layers.Dense(4), schedule=tfprune.ConstantSparsity(0.5))
        >>> wrapper.build((None, 8))
        >>> type(wrapper.stripped_layer()).__name__
        'Dense'
        """
        config = self.layer.get_config()
        config["name"] = self.name
        plain = type(self.layer).from_config(config)
        plain.build_from_config(self.layer.get_build_config())
        masks = {id(weight): mask for weight, mask in zip(prunable_weights(self.layer), self.masks)}
        plain.set_weights(
            [
                ops.convert_to_numpy(variable.value * masks[id(variable)].value)
                if id(variable) in masks
                else variable.numpy()  # NumPy 2 warns when converting the variable itself
                for variable in self.layer.weights
            ]
        )
        return plain

    def get_config(self):
        return {
            **super().get_config(),
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "block_size": self.block_size,
            "block_pooling": self.block_pooling,
            "m_by_n": self.m_by_n,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"], custom_objects=custom_objects
        )
        for key in ("block_size", "m_by_n"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        return super().from_config(config, custom_objects=custom_objects)
