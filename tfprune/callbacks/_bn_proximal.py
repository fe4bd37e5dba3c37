"""The proximal step of `BNSparsity`: step sizes, the group soft threshold and the groups it acts on.

After each optimizer step, `BNSparsity` shrinks every penalised group of BN
parameters towards zero with the proximal operator of the group L1 penalty
(`group_soft_threshold`), in the metric of the step the optimizer really took
(`effective_step`). `channel_coordinates` lists the variables and groups.
"""

import keras
import numpy as np
from keras import ops

from tfprune._keras.optimizers import slot as optimizer_slot
from tfprune.structure import batch_norm_layers, expansion_layers


def effective_step(optimizer, variable):
    """Returns the step size the optimizer applied to each coordinate of `variable` in its last update.

    The proximal step of `BNSparsity` must use the step the optimizer really
    takes: under SGD that is the learning rate, but Adam divides every
    coordinate's step by the root of its second-moment estimate, so a scale
    whose loss gradient is small moves much faster than the learning rate.
    The returned `η` is such that the optimizer's update was `η * ĝ` for a
    bias-corrected gradient estimate `ĝ`:

    - Adam, AdamW, Nadam (anything with a velocity slot and `beta_2`):
      `lr * sqrt(1 - beta_2**t) / (sqrt(v) + epsilon)`.
    - Adamax: `lr / (u + epsilon)`.
    - RMSprop: `lr / sqrt(v + epsilon)`.
    - Adagrad: `lr / sqrt(accumulator + epsilon)`.
    - Anything else (SGD with or without momentum, Lion, ...): `lr`.

    A `LossScaleOptimizer` (mixed precision) is looked through.

    Args:
        optimizer: A built `keras.optimizers.Optimizer` that has taken at least one step.
        variable: A trainable variable the optimizer updates.

    Returns:
        A float32 tensor broadcastable to `variable`'s shape.

    Example:

    >>> import keras
    >>> from tfprune.callbacks.bn_sparsity import effective_step
    >>> variable = keras.Variable([1.0, 2.0])
    >>> optimizer = keras.optimizers.SGD(0.1)
    >>> optimizer.apply([keras.ops.ones(2)], [variable])
    >>> float(effective_step(optimizer, variable))
    0.1...
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    learning_rate = ops.cast(optimizer.learning_rate, "float32")
    if isinstance(optimizer, keras.optimizers.Adamax):
        return learning_rate / (_slot(optimizer, variable, "u") + optimizer.epsilon)
    if isinstance(optimizer, keras.optimizers.RMSprop):
        return learning_rate / ops.sqrt(_slot(optimizer, variable, "velocity") + optimizer.epsilon)
    if isinstance(optimizer, keras.optimizers.Adagrad):
        return learning_rate / ops.sqrt(
            _slot(optimizer, variable, "accumulator") + optimizer.epsilon
        )
    velocity = _slot(optimizer, variable, "velocity")
    if velocity is not None and hasattr(optimizer, "beta_2"):
        steps = ops.maximum(ops.cast(optimizer.iterations, "float32"), 1.0)
        correction = ops.sqrt(1.0 - ops.power(ops.cast(optimizer.beta_2, "float32"), steps))
        return learning_rate * correction / (ops.sqrt(velocity) + optimizer.epsilon)
    return learning_rate


def _slot(optimizer, variable, name):
    """The optimizer's slot `name` for `variable` as float32, or None when it keeps none."""
    value = optimizer_slot(optimizer, variable, name)
    return None if value is None else ops.cast(value, "float32")


def group_soft_threshold(
    values, steps, group_ids, group_count, strength, group_units=None, cutoff=None
):
    """The proximal operator of `strength * Σ_c ||u_c||_2` in the metric of per-coordinate steps.

    Coordinate `i` of `values` belongs to group `group_ids[i]` (`group_count`
    means "no group": left unchanged). Each group `u_c` is shrunk towards zero,
    `u_c ← u_c * max(0, 1 - strength * η_c / ||u_c||)`, with `η_c` the group's
    step: `1 / sqrt(mean_i (1/η_i)²)` over its coordinates (for equal steps,
    just `η`). A group of one coordinate gets the soft threshold
    `sign(u) * max(|u| - strength * η, 0)`.

    Args:
        values: 1-D float tensor, the coordinates.
        steps: 1-D float tensor of positive step sizes `η_i`, same length.
        group_ids: 1-D int tensor, the group of each coordinate in `[0, group_count]`.
        group_count: Int. Number of groups.
        strength: Float. The penalty strength λ.
        group_units: Optional 1-D int array of length `group_count`: the unit
            (a channel group of the graph, or a BatchNormalization layer) each
            group belongs to, numbered from 0. With it, a unit is never
            emptied: if the step would zero every group of a unit, the group
            with the largest norm before the step keeps its values. Defaults to
            `None` (no guard).
        cutoff: Optional float: groups whose norm before the step is above it
            are left unchanged (the target form of `BNSparsity` penalises only
            the groups ranked below its target share). Defaults to `None`
            (every group is penalised).

    Returns:
        1-D float tensor: the new coordinates (exact zeros for removed groups).

    Example:

    >>> import numpy as np
    >>> from tfprune.callbacks.bn_sparsity import group_soft_threshold
    >>> new = group_soft_threshold(np.array([3.0, 4.0, 0.5], "float32"),
    ...                            np.ones(3, "float32"), np.array([0, 0, 1]), 2, 1.0)
    >>> np.round(np.asarray(new, 'float64'), 3).tolist()
    [2.4, 3.2, 0.0]
    """
    values = ops.convert_to_tensor(values, "float32")
    segments = group_count + 1
    inverse_steps = 1.0 / ops.maximum(ops.convert_to_tensor(steps, "float32"), 1e-30)
    squares = ops.segment_sum(ops.square(values), group_ids, num_segments=segments)
    counts = ops.segment_sum(ops.ones_like(values), group_ids, num_segments=segments)
    mean_inverse = ops.segment_sum(ops.square(inverse_steps), group_ids, num_segments=segments)
    group_steps = 1.0 / ops.sqrt(mean_inverse / ops.maximum(counts, 1.0))
    norms = ops.sqrt(squares)
    factors = ops.maximum(0.0, 1.0 - strength * group_steps / ops.maximum(norms, 1e-30))
    if cutoff is not None:
        factors = ops.where(norms > cutoff, 1.0, factors)
    factors = factors[:group_count]
    if group_units is not None:
        # An emptied unit cuts the network (every channel of a layer at zero):
        # its largest group skips this step instead.
        norms = norms[:group_count]
        units = ops.convert_to_tensor(np.asarray(group_units, "int32"))
        unit_count = int(np.max(group_units)) + 1 if len(group_units) else 0
        largest_before = ops.take(ops.segment_max(norms, units, num_segments=unit_count), units)
        largest_after = ops.take(
            ops.segment_max(norms * factors, units, num_segments=unit_count), units
        )
        keep = ops.logical_and(
            ops.equal(largest_after, 0.0), ops.logical_and(norms > 0.0, norms >= largest_before)
        )
        factors = ops.where(keep, 1.0, factors)
    # the "no group" segment keeps its coordinates
    factors = ops.concatenate([factors, ops.ones((1,), "float32")])
    return values * ops.take(factors, group_ids)


def _targeted_groups(model, targets):
    """The prunable channel groups `tfprune.prune(..., targets=targets)` would score."""
    from tfprune import graph as graph_module

    graph = graph_module.build(model)
    groups = [group for group in graph.groups if group.prunable]
    if targets == "expansion":
        expansion = set(expansion_layers(model))
        return [group for group in groups if expansion & set(group.producers)]
    if callable(targets):
        return [group for group in groups if targets(group)]
    return groups


def channel_coordinates(model, targets, penalty):
    """`(variables, group ids per variable, group count, unit of each group)` for the proximal step.

    penalty="channel": one group per channel of every targeted channel group,
    holding γ and β of every BatchNormalization the channel passes through.
    penalty="gamma": one group per γ coordinate of those BatchNormalizations
    (with targets="all": of every BN with a trainable scale, nested ones too).
    The unit of a group is what must keep at least one channel: its channel
    group of the graph (penalty="channel") or its BatchNormalization layer.
    """
    if penalty == "gamma" and targets == "all":
        layers = batch_norm_layers(model)
        ids, units, offset = [], [], 0
        for index, layer in enumerate(layers):
            size = int(layer.gamma.shape[0])
            ids.append(np.arange(offset, offset + size))
            units.append(np.full(size, index))
            offset += size
        units = np.concatenate(units) if units else np.zeros(0, "int64")
        return [layer.gamma for layer in layers], ids, offset, units
    members = {}  # layer name -> (layer, group id per channel, -1 where not targeted)
    units = []
    offset = 0
    for group_index, group in enumerate(_targeted_groups(model, targets)):
        units.append(np.full(group.size, group_index))
        for member in group.members:
            layer = model.get_layer(member.layer_name)
            if member.role != "param" or not isinstance(layer, keras.layers.BatchNormalization):
                continue
            if not (layer.scale and layer.trainable):
                continue
            _, ids = members.setdefault(layer.name, (layer, np.full(int(layer.gamma.shape[0]), -1)))
            ids[np.asarray(member.positions)] = offset + np.asarray(member.channels)
        offset += group.size
    variables, variable_ids = [], []
    unit_count = len(units)
    for layer, ids in members.values():
        if penalty == "gamma":
            # one group per γ coordinate: renumber so that channels of a group stay apart
            ids = np.where(ids >= 0, offset + np.arange(len(ids)), -1)
            offset += len(ids)
            units.append(np.full(len(ids), unit_count))  # the unit is the layer
            unit_count += 1
        pairs = [layer.gamma] + ([layer.beta] if penalty == "channel" and layer.center else [])
        for variable in pairs:
            variables.append(variable)
            variable_ids.append(ids)
    count = offset
    units = np.concatenate(units) if units else np.zeros(0, "int64")
    return variables, [np.where(ids >= 0, ids, count) for ids in variable_ids], count, units
