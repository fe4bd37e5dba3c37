"""`prune_low_magnitude`: wrap the prunable layers of a model in magnitude masks."""

import keras
import numpy as np
from keras import ops

from tfprune._keras import functional
from tfprune._utils import clone_graph, require_graph_model, warn_partial_coverage
from tfprune.layers.str_base import SoftThresholdMixin
from tfprune.magnitude.policy import PruningPolicy
from tfprune.magnitude.schedules import ConstantSparsity
from tfprune.magnitude.wrapper import PruneLowMagnitude, check_pattern, is_prunable

__all__ = [
    "mask_sparsity",
    "prune_low_magnitude",
    "pruning_wrappers",
    "strip_pruning",
    "update_pruning_step",
]


def _skip_test(skip, model):
    """Returns `layer -> bool` from `skip`: a callable, or layer names and classes."""
    if callable(skip) and not isinstance(skip, type):
        return skip
    entries = (skip,) if isinstance(skip, (str, type)) else skip
    if not isinstance(entries, (tuple, list, set, frozenset)) or not all(
        isinstance(entry, (str, type)) for entry in entries
    ):
        raise TypeError(
            "`skip` must be a callable `layer -> bool` or a tuple of layer names and layer "
            f"classes. Received: skip={skip!r}"
        )
    names = {entry for entry in entries if isinstance(entry, str)}
    unknown = sorted(names - {layer.name for layer in model.layers})
    if unknown:
        raise ValueError(
            f"`skip` names layers that model '{model.name}' does not have; check the names in "
            f"model.summary(). Received: skip={skip!r} (unknown: {unknown})"
        )
    classes = tuple(entry for entry in entries if isinstance(entry, type))
    return lambda layer: layer.name in names or isinstance(layer, classes)


def _one_of(name, value, default, tfmot_name, tfmot_value):
    """The argument given under its tfprune name or its TFMOT name; both is an error."""
    if tfmot_value is None:
        return value
    if value is not default and value != default:
        raise ValueError(
            f"`{name}` and `{tfmot_name}` are the same argument (the second is TensorFlow Model "
            f"Optimization's name); pass only one. Received: {name}={value!r}, {tfmot_name}={tfmot_value!r}"
        )
    return tfmot_value


def _copy_layer(layer):
    """A new layer of the same class and config, built and holding copies of the weights."""
    copy = type(layer).from_config(layer.get_config())
    if layer.built:
        copy.build_from_config(layer.get_build_config())
        copy.set_weights(layer.get_weights())
    return copy


def prune_low_magnitude(
    model_or_layer,
    schedule=None,
    block_size=(1, 1),
    block_pooling="avg",
    m_by_n=None,
    skip=(),
    *,
    pruning_schedule=None,
    block_pooling_type=None,
    sparsity_m_by_n=None,
    pruning_policy=None,
):
    """Returns a copy of a model (or layer) whose prunable weights carry magnitude masks.

    Every prunable layer (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, the
    pointwise kernel of SeparableConv1D/2D, Embedding, and your own layers with
    a `get_prunable_weights()` method) that `skip` does not exclude is wrapped
    in a `tfprune.magnitude.PruneLowMagnitude` with the same name; all other
    layers are copied with their weights. Train the result with
    `tfprune.callbacks.UpdatePruningStep()` among the callbacks, then call
    `tfprune.strip` to get plain Keras layers with the zeros baked in. The
    input is not modified. A model that nests other models or composite
    layers (a keras-hub task model, keras-hub blocks) is inlined first with
    `tfprune.graph.flatten`, as TFMOT descends into nested models: the result
    is then one flat functional model. A warning names the largest layers left
    dense when they hold most of the weights.

    This is TensorFlow Model Optimization's `prune_low_magnitude` for Keras 3,
    and it takes TFMOT's keyword names too: `pruning_schedule=` (for
    `schedule`), `block_pooling_type="AVG"`/`"MAX"` (for `block_pooling`) and
    `sparsity_m_by_n=` (for `m_by_n`), with TFMOT's default schedule, so
    `tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=s)`
    becomes `tfprune.prune_low_magnitude(model, pruning_schedule=s)`.

    Args:
        model_or_layer: A built Sequential or functional `keras.Model`, or a
            prunable layer (a wrapped copy is returned, to use in a new model).
        schedule: A schedule such as `tfprune.PolynomialDecay(0.0, 0.9, 0, 1000)`
            or `tfprune.ConstantSparsity(0.5)`. Defaults to `None`: TFMOT's
            default, `tfprune.ConstantSparsity(0.5, begin_step=0)` (masks
            recomputed every 100 steps).
        block_size: Tuple of two ints. Prune tiles of this shape over the
            (input, output) channel axes of each kernel; `(1, 1)` prunes single
            weights. Defaults to `(1, 1)`.
        block_pooling: String. `"avg"` or `"max"`: how a tile is scored from its
            |w|. Defaults to `"avg"`.
        m_by_n: Optional tuple `(m, n)`, e.g. `(2, 4)`: keep the `m` largest of
            every `n` consecutive input channels (the schedule then only decides
            when masks are computed). Depthwise convolutions and embeddings have
            no input-channel axis and are left dense. Defaults to `None`.
        skip: Layer names and/or layer classes to leave dense, or a callable
            `layer -> bool` returning True for layers to leave dense.
            Defaults to `()`.
        pruning_schedule: TFMOT's name for `schedule`; pass one of the two.
        block_pooling_type: TFMOT's name for `block_pooling` (`"AVG"` or
            `"MAX"`, any case).
        sparsity_m_by_n: TFMOT's name for `m_by_n`.
        pruning_policy: Optional `tfprune.magnitude.PruningPolicy`, such as
            `tfprune.magnitude.PruneForLatencyOnXNNPack()`: only layers it
            allows are wrapped, and it may refuse the model. Defaults to `None`.

    Returns:
        A new `keras.Model` of the same kind, or a `PruneLowMagnitude` layer.

    Raises:
        TypeError: If `model_or_layer` is a subclassed model, neither a model nor
            a prunable layer, or `schedule`/`skip`/`pruning_policy` has the
            wrong type.
        ValueError: If a pattern argument is invalid, `skip` names a layer the
            model does not have, no layer is left to prune, an argument is
            given under both its tfprune and its TFMOT name, `pruning_policy`
            is given with a single layer, the policy refuses the model
            (`PruneForLatencyOnXNNPack` with no 1x1 convolution), or the model
            holds an STR layer that `skip` does not exclude (`tfprune.strip` it
            first: STR learns its own sparsity).

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> outputs = keras.layers.Dense(2, name="logits")(keras.layers.Dense(16)(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> pruned = tfprune.prune_low_magnitude(
    ...     model, schedule=tfprune.PolynomialDecay(0.0, 0.9, 0, 100), skip=("logits",))
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['InputLayer', 'PruneLowMagnitude', 'Dense']
    """
    schedule = _one_of("schedule", schedule, None, "pruning_schedule", pruning_schedule)
    if schedule is None:
        schedule = ConstantSparsity(0.5, begin_step=0)
    block_pooling = _one_of("block_pooling", block_pooling, "avg", "block_pooling_type", block_pooling_type)
    if isinstance(block_pooling, str):
        block_pooling = block_pooling.lower()
    m_by_n = _one_of("m_by_n", m_by_n, None, "sparsity_m_by_n", sparsity_m_by_n)
    block_size, block_pooling, m_by_n = check_pattern(block_size, block_pooling, m_by_n)
    options = dict(schedule=schedule, block_size=block_size, block_pooling=block_pooling, m_by_n=m_by_n)
    if isinstance(model_or_layer, keras.layers.Layer) and not isinstance(model_or_layer, keras.Model):
        if pruning_policy is not None:
            raise ValueError("`pruning_policy` applies to a whole model, not to one layer.")
        wrapper = PruneLowMagnitude(_copy_layer(model_or_layer), **options)
        if model_or_layer.built:
            wrapper.build_from_config(model_or_layer.get_build_config())
        # `Dense(20, input_shape=...)` as a Sequential's first layer gives the model
        # its input; the wrapper in its place must too.
        functional.copy_input_shape_argument(model_or_layer, wrapper)
        return wrapper
    model = require_graph_model(model_or_layer, "tfprune.prune_low_magnitude")
    from tfprune import graph  # noqa: PLC0415 - graph imports the layer handlers

    if graph.needs_flattening(model):
        model = graph.flatten(model)
    skipped = _skip_test(skip, model)
    _refuse_str_layers(model, skipped)
    if pruning_policy is not None:
        if not isinstance(pruning_policy, PruningPolicy):
            raise TypeError(
                "`pruning_policy` must be a tfprune.magnitude.PruningPolicy such as "
                f"PruneForLatencyOnXNNPack(). Received: pruning_policy={pruning_policy!r}"
            )
        pruning_policy.ensure_model_supports_pruning(model)
        user_skipped = skipped
        skipped = lambda layer: user_skipped(layer) or not pruning_policy.allow_pruning(layer)  # noqa: E731

    def replace(layer):
        if isinstance(layer, keras.Model) or skipped(layer) or not is_prunable(layer, m_by_n):
            return None
        wrapper = PruneLowMagnitude(_copy_layer(layer), **options)
        wrapper.build_from_config(layer.get_build_config())
        return wrapper

    pruned = clone_graph(model, replace, caller="tfprune.prune_low_magnitude")
    wrapped = {layer.name for layer in pruning_wrappers(pruned)}
    if not wrapped:
        raise ValueError(
            f"Model '{model.name}' has no layer left to prune (skip={skip!r}, m_by_n={m_by_n}); "
            "it needs Dense, convolution or Embedding layers, or layers with "
            "`get_prunable_weights()`, that `skip` does not exclude."
        )
    skipped_names = {layer.name for layer in model.layers if skipped(layer)}
    warn_partial_coverage(model, wrapped, skipped_names, "tfprune.prune_low_magnitude", "wrapped")
    return pruned


def _refuse_str_layers(model, skipped):
    """Refuses a model whose STR layers would be wrapped: they learn their own sparsity."""
    for layer in model.layers:
        if isinstance(layer, SoftThresholdMixin) and not skipped(layer):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) is an STR layer, which learns its own sparsity, so "
                "magnitude pruning cannot mask it: call `tfprune.strip(model)` first to keep its sparse kernel as "
                "a plain layer, or leave it out with `skip`."
            )


def pruning_wrappers(model):
    """Returns every `PruneLowMagnitude` layer of a model, nested models included.

    Args:
        model: A Keras model or layer.

    Returns:
        List of `tfprune.magnitude.PruneLowMagnitude`, in graph order.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> len(tfprune.magnitude.pruning_wrappers(model))
    0
    """
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
        elif getattr(layer, "layers", None):
            found.extend(pruning_wrappers(layer))
    return found


def update_pruning_step(model, step=None):
    """Updates every mask of a model for one training step; for custom training loops.

    Call it once before each training step (the `UpdatePruningStep` callback
    does this inside `model.fit`). Each wrapper whose schedule prunes at `step`
    recomputes its masks from the current weights; every step counter is then
    set to `step + 1`.

    Args:
        model: A Keras model with `PruneLowMagnitude` layers.
        step: Optional int. The step to apply; defaults to the counter of the
            first wrapper (so repeated calls advance one step each).

    Returns:
        Int. The step that was applied.

    Raises:
        ValueError: If the model has no `PruneLowMagnitude` layer.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = tfprune.prune_low_magnitude(
    ...     keras.Model(inputs, keras.layers.Dense(2)(inputs)), tfprune.ConstantSparsity(0.5))
    >>> tfprune.magnitude.update_pruning_step(model)
    0
    >>> tfprune.magnitude.mask_sparsity(model)
    0.5
    """
    wrappers = _require_wrappers(model, "tfprune.magnitude.update_pruning_step")
    if step is None:
        step = int(ops.convert_to_numpy(wrappers[0].pruning_step.value))
    for wrapper in wrappers:
        wrapper.update_pruning_step(step)
    return step


def _require_wrappers(model, caller):
    wrappers = pruning_wrappers(model)
    if not wrappers:
        raise ValueError(
            f"`{caller}` found no PruneLowMagnitude layer in model '{model.name}'; "
            "prune it first with tfprune.prune_low_magnitude(model, schedule=...)."
        )
    return wrappers


def mask_sparsity(model, by_layer=False):
    """Returns the share of masked-out (zero) entries in the masks of a model.

    Args:
        model: A Keras model with `PruneLowMagnitude` layers.
        by_layer: Bool. If True, returns a dict `{layer name: sparsity}` instead
            of one number over all masks. Defaults to `False`.

    Returns:
        Float in [0, 1], or a dict of floats.

    Raises:
        ValueError: If the model has no `PruneLowMagnitude` layer.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = tfprune.prune_low_magnitude(
    ...     keras.Model(inputs, keras.layers.Dense(2)(inputs)), tfprune.ConstantSparsity(0.5))
    >>> tfprune.magnitude.mask_sparsity(model, by_layer=True)
    {'dense': 0.0}
    """
    counts = {}
    for wrapper in _require_wrappers(model, "tfprune.magnitude.mask_sparsity"):
        masks = [ops.convert_to_numpy(mask.value) for mask in wrapper.masks]
        counts[wrapper.name] = (
            sum(int(np.sum(mask == 0)) for mask in masks),
            sum(mask.size for mask in masks),
        )
    if by_layer:
        return {name: zeros / size for name, (zeros, size) in counts.items()}
    return sum(zeros for zeros, _ in counts.values()) / sum(size for _, size in counts.values())


def strip_pruning(model):
    """TensorFlow Model Optimization's name for `tfprune.strip`: bakes the masks in.

    Every `PruneLowMagnitude` wrapper (and STR layer) becomes the plain Keras
    layer it wraps, with the pruned weights exactly zero, so the model saves,
    loads and exports without tfprune. The input is not modified.

    Args:
        model: A Keras model (or layer) returned by `prune_low_magnitude`.

    Returns:
        A new model (or layer) without pruning wrappers.

    Raises:
        TypeError: If `model` is a subclassed model (see `tfprune.strip`).

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
    >>> pruned = tfprune.prune_low_magnitude(model)
    >>> [type(layer).__name__ for layer in tfprune.magnitude.strip_pruning(pruned).layers]
    ['InputLayer', 'Dense']
    """
    from tfprune.sparsity import strip  # tfprune.sparsity imports this package

    return strip(model)
