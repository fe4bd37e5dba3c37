"""Physically remove channels from a Sequential or functional Keras 3 model.

`remove_channels(model, {group_name: indices})` returns a new model in which
the given channels of the given groups (see `tfprune.graph`) are gone: layer
configs are updated (`filters`, `units`, reshape targets), every weight that
carries a removed channel is sliced (kernels on the right axis, biases,
BatchNormalization gamma/beta/moving statistics, depthwise kernels, the convs
of squeeze-and-excite blocks), layer names are kept and the input model is
not touched. `set_widths(model, {group_name: width}, scores=...)` keeps the
highest-scored channels of each group instead, and can apply the MobileNetV3
rule of docs/METHODS.md §11 to squeeze-and-excite bottlenecks.
"""

import keras
import numpy as np

from tfprune import _utils, handlers
from tfprune import graph as graph_module
from tfprune._keras.functional import walk

__all__ = ["remove_channels", "se_bottleneck_width", "set_widths", "squeeze_excite_widths"]


def remove_channels(model, removals, unknown="raise", gqa="query_heads"):
    """Returns a new model without the given channels.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        removals: Dict mapping a group name (`tfprune.graph.build(model)`) to
            the channel indices of that group to remove. A transformer's
            hidden width (a group with `normalized_by`, prunable in
            `build(model, hidden=True)`) may be named: its
            LayerNormalization/RMSNormalization weights are sliced, and as
            their statistics then run over fewer channels the outputs change
            even when the removed channels were dead.
        unknown: String. `"raise"` (default) or `"freeze"`: how the channel
            graph treats operations without a handler (`tfprune.graph.build`).
        gqa: String. `"query_heads"` (default) or `"groups"`: the head groups
            of grouped-query attention layers, as in `tfprune.graph.build`;
            the group names in `removals` must come from a graph built so.

    Returns:
        A new `keras.Model` of the same kind, with the same layer names.

    Raises:
        TypeError: If `model` is not a graph model or `removals` is not a dict.
        ValueError: If a group is unknown or not prunable, an index is out of
            range or repeated, or every channel of a group would be removed.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> small = tfprune.surgery.remove_channels(model, {"conv": [0, 5]})
    >>> small.get_layer("conv").filters, tuple(small.get_layer("bn").gamma.shape)
    (14, (14,))
    """
    _utils.require_graph_model(model, "tfprune.surgery.remove_channels")
    if not isinstance(removals, dict):
        raise TypeError(
            "`removals` must be a dict {group_name: channel indices}; received an object of "
            f"type {type(removals).__name__}."
        )
    graph = graph_module.build(model, unknown=unknown, hidden=True, gqa=gqa)
    return _rewrite(model, graph, _checked_removals(graph, removals))


def set_widths(model, widths, scores=None, se_policy=None, unknown="raise", gqa="query_heads", graph=None):
    """Returns a new model whose groups keep only their highest-scored channels.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        widths: Dict mapping a group name to the number of channels to keep
            (a transformer's hidden width included, as for `remove_channels`).
        scores: Optional dict mapping a group name to a 1-D array with one
            score per channel (higher is more important). Groups without one
            are scored by the L1 norm of their producers' filters.
        se_policy: None or `"keep_ratio"`. With `"keep_ratio"`, every
            squeeze-and-excite bottleneck whose gated group shrinks (and that
            has no width of its own in `widths`) keeps
            `se_bottleneck_width(new_width)` channels, dropping its
            lowest-scored ones (docs/METHODS.md §11).
        unknown: String. `"raise"` (default) or `"freeze"`, as for
            `remove_channels`.
        gqa: String. `"query_heads"` (default) or `"groups"`, as for
            `remove_channels`.
        graph: Optional `tfprune.graph.ChannelGraph` of `model`, already
            built (`tfprune.prune` passes the one it scored with), so the
            graph is not traced again; `unknown` and `gqa` are then those it
            was built with, and a group it marks as not prunable is refused.
            Defaults to `None`: built here with `hidden=True`.

    Returns:
        A new `keras.Model` of the same kind, with the same layer names.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a group is unknown or not prunable, a width is out of
            `[1, size]`, a score array has the wrong shape or holds NaN, or
            `se_policy` is unknown.

    Example:

    >>> model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None)
    >>> small = tfprune.surgery.set_widths(
    ...     model, {"expanded_conv_3_expand": 48}, se_policy="keep_ratio")
    >>> small.get_layer("expanded_conv_3_squeeze_excite_conv").filters
    16
    """
    _utils.require_graph_model(model, "tfprune.surgery.set_widths")
    scores = {} if scores is None else scores
    for argument, value in (("widths", widths), ("scores", scores)):
        if not isinstance(value, dict):
            raise TypeError(
                f"`{argument}` must be a dict keyed by group name; received an object of type "
                f"{type(value).__name__}."
            )
    if se_policy not in (None, "keep_ratio"):
        raise ValueError(
            f"`se_policy` must be None or 'keep_ratio'. Received: se_policy={se_policy!r}"
        )
    if graph is None:
        graph = graph_module.build(model, unknown=unknown, hidden=True, gqa=gqa)
    elif not isinstance(graph, graph_module.ChannelGraph):
        raise TypeError(
            "`graph` must be the `tfprune.graph.build(model)` of the model; received an object of "
            f"type {type(graph).__name__}."
        )
    for name, values in scores.items():
        _checked_group(graph, name)
        nan = np.flatnonzero(np.isnan(np.asarray(values, dtype=np.float64).reshape(-1)))
        if nan.size:
            raise ValueError(
                f"Scores of group '{name}' must be numbers, but channels {nan.tolist()[:5]} are "
                "NaN, which cannot be ranked; give every channel a finite score."
            )
    widths = dict(widths)
    for name, width in widths.items():
        group = _checked_group(graph, name)
        if not _utils.is_integer(width) or not 1 <= width <= group.size:
            raise ValueError(
                f"Width of group '{name}' must be an int in [1, {group.size}]. Received: {width!r}"
            )
    if se_policy == "keep_ratio":
        widths = squeeze_excite_widths(graph, widths)
    removals = {}
    for name, width in widths.items():
        group = graph[name]
        if width == group.size:
            continue
        group_scores = scores.get(name)
        if group_scores is None:
            group_scores = _producer_l1(model, group)
        group_scores = np.asarray(group_scores, dtype=np.float64)
        if group_scores.shape != (group.size,):
            raise ValueError(
                f"Scores of group '{name}' must have shape ({group.size},). "
                f"Received: shape {group_scores.shape}"
            )

        keep = _kept_channels(group, group_scores, width)
        removals[name] = np.flatnonzero(~np.isin(np.arange(group.size), keep))
    return _rewrite(model, graph, _checked_removals(graph, removals))


def squeeze_excite_widths(graph, widths):
    """Adds the squeeze-excite bottleneck widths of the MobileNetV3 rule.

    Every bottleneck group (`group.squeeze_excite_of` set) whose gated group
    shrinks in `widths` and that has no width of its own gets
    `se_bottleneck_width(new gated width)`, at most its current size. This is
    what `set_widths(..., se_policy="keep_ratio")` applies.

    Args:
        graph: The `tfprune.graph.ChannelGraph` of the model.
        widths: Dict `{group_name: width}`. Not modified.

    Returns:
        A new dict: `widths` plus the bottleneck widths.

    Example:

    >>> model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None)
    >>> graph = tfprune.graph.build(model)
    >>> tfprune.surgery.squeeze_excite_widths(graph, {"expanded_conv_3_expand": 48})
    {'expanded_conv_3_expand': 48, 'expanded_conv_3_squeeze_excite_conv': 16}
    """
    widths = dict(widths)
    for group in graph.groups:
        gated = group.squeeze_excite_of
        if gated in widths and group.name not in widths and widths[gated] < graph[gated].size:
            widths[group.name] = min(group.size, se_bottleneck_width(widths[gated]))
    return widths


def se_bottleneck_width(expansion_width, ratio=0.25, divisor=8):
    """The squeeze-excite bottleneck width MobileNetV3 gives an expansion width.

    MobileNetV3 builds its SE reduce conv with `_depth(filters * se_ratio)`:
    round to the nearest multiple of `divisor` (at least `divisor`) and add
    one `divisor` when rounding lost more than 10%.

    Args:
        expansion_width: Int. Channels of the gated (expansion) group.
        ratio: Float. The SE ratio. Defaults to 0.25.
        divisor: Int. Widths are multiples of it. Defaults to 8.

    Returns:
        Int.

    Example:

    >>> tfprune.surgery.se_bottleneck_width(72)
    24
    >>> tfprune.surgery.se_bottleneck_width(240)
    64
    """
    value = expansion_width * ratio
    width = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if width < 0.9 * value:
        width += divisor
    return width


def _checked_group(graph, name):
    if name not in graph:
        prunable = [group.name for group in graph.groups if group.prunable]
        raise ValueError(
            f"Unknown channel group {name!r}; use a name from tfprune.graph.build(model), "
            f"e.g. one of {prunable[:5]}."
        )
    return graph[name]


def _checked_removals(graph, removals):
    """Validates `{group: indices}`; returns `{group: sorted int array}`."""
    checked = {}
    for name, indices in removals.items():
        group = _checked_group(graph, name)
        indices = np.asarray(indices)
        if indices.size == 0:
            continue
        if not group.prunable:
            raise ValueError(f"{group.reason} Remove channels of another group.")
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"Channels of group '{name}' must be a 1-D list of ints. Received: {indices.tolist()!r}"
            )
        out_of_range = indices[(indices < 0) | (indices >= group.size)]
        if out_of_range.size:
            raise ValueError(
                f"Channel index {int(out_of_range[0])} is out of range for group '{name}' of size "
                f"{group.size}; use indices in [0, {group.size - 1}]."
            )
        if len(np.unique(indices)) != len(indices):
            raise ValueError(f"Channels of group '{name}' are repeated. Received: {indices.tolist()}")
        if len(indices) == group.size:
            raise ValueError(
                f"Cannot remove all {group.size} channels of group '{name}'; keep at least one."
            )
        checked[name] = np.sort(indices)
    return checked


def _kept_channels(group, scores, width):
    """The `width` channels of `group` to keep: its highest-scored ones, and
    at least one of every producer that makes only part of the group.

    A group can join the outputs of several producers (a Concatenate whose
    result is added to another tensor); a producer left with no channel
    would be a layer with 0 filters. Each such producer keeps its best
    channel, and the rest of the width goes by score. Stable sort: among
    equal scores the lower channel index is kept.
    """
    ranking = np.argsort(-scores, kind="stable")
    forced = []
    for member in group.members:
        channels = np.unique(np.asarray(member.channels, dtype=np.int64))
        if member.role != "output" or channels.size == group.size:
            continue
        if not np.isin(channels, forced).any():
            forced.append(channels[np.argmax(scores[channels])])
    if len(forced) > width:
        raise ValueError(
            f"Width {width} of group '{group.name}' is too small: the group joins the outputs "
            f"of {len(forced)} layers ({', '.join(group.producers)}) and each must keep at least "
            f"one channel; use a width of at least {len(forced)}."
        )
    rest = [channel for channel in ranking if channel not in set(forced)]
    return np.sort(np.asarray(forced + rest[: width - len(forced)], dtype=np.int64))


def _producer_l1(model, group):
    """L1 norm of each channel's producer filters (default score)."""
    weights = {weight.path: weight for weight in model.weights}
    scores = np.zeros(group.size)
    for member in group.members:
        if member.role != "output":
            continue
        for path, axis in member.weights:
            value = np.abs(np.asarray(weights[path]))
            per_position = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1).sum(axis=1)
            np.add.at(scores, list(member.channels), per_position[list(member.positions)])
    return scores


def _rewrite(model, graph, removals):
    """Clones `model` with `removals` ({group name: indices}) applied."""
    trace = graph._trace
    removed = np.zeros(len(trace.roots), dtype=bool)
    for name, indices in removals.items():
        removed[trace.roots_by_group[name][indices]] = True
    keep_of_id = ~removed[trace.roots]

    tracer = trace.tracer
    slices = {}  # layer name -> {weight index: [(axis, keep mask)]}
    for (layer_name, index, axis), (_, channels, _) in tracer.uses.items():
        keep = keep_of_id[channels]
        if not keep.all():
            slices.setdefault(layer_name, {}).setdefault(index, []).append((axis, keep))

    functional = _utils.functional_view(model)
    calls = {}
    for node in walk(functional.outputs):
        calls.setdefault(node.operation.name, node)

    def new_width(tensor):
        return int(keep_of_id[tracer.channels(tensor)].sum())

    def replace(layer):
        node = calls.get(layer.name)
        if node is None or node.is_input:
            return None
        if not isinstance(layer, keras.layers.Layer):  # a keras.ops operation holding a width
            resize = getattr(handlers.handler_for(layer), "resize_operation", None)
            width = new_width(node.outputs[0]) if len(node.outputs[0].shape) else None
            if resize is None or width is None or width == node.outputs[0].shape[-1]:
                return None
            return resize(layer, width)
        output_width = new_width(node.outputs[0])
        if output_width == 0 and node.outputs[0].shape[-1]:
            group = next((group.name for group in graph.groups if any(
                member.layer_name == layer.name for member in group.members)), "?")  # fmt: skip
            raise ValueError(
                f"Removing these channels would leave layer '{layer.name}' (group '{group}') with no "
                "output channel: its channels are only part of the group (joined by a Concatenate), "
                "and none of them is kept. Keep more channels of that group, or leave it out "
                "(`skip=` in tfprune.prune)."
            )
        # A scalar output (a `tfprune.layers.Weight` of shape ()) has no channel axis to resize.
        resized = len(node.outputs[0].shape) > 0 and output_width != node.outputs[0].shape[-1]
        if layer.name not in slices and not resized:
            return None
        # No handler: a weightless operation whose per-channel rule was inferred
        # numerically (`graph.inferred`); its config holds no width.
        handler = handlers.handler_for(layer) or handlers.Handler()
        if not layer.weights and type(handler).resize is handlers.Handler.resize:
            # Weightless, and its config holds no width (activations, pooling,
            # augmentation, inferred rules): a copy does, even when its config
            # does not round-trip (keras-hub's Identity, Keras's RandomShear).
            return _utils.copy_or_share(layer, "tfprune.prune")
        try:
            config = dict(layer.get_config())
        except NotImplementedError:
            if layer.weights:
                raise
            return _utils.copy_or_share(layer, "tfprune.prune")
        values = layer.get_weights()
        for index, cuts in slices.get(layer.name, {}).items():
            for axis, keep in cuts:
                values[index] = np.compress(keep, values[index], axis=axis)
        config = handler.resize_for_weights(config, output_width, [value.shape for value in values])
        rebuild = getattr(handler, "rebuild", None)  # a handler that rebuilds the layer as another class
        new_layer = rebuild(layer, config) if rebuild is not None else _utils.rebuild_from_config(layer, config)
        if not layer.weights:
            return new_layer
        input_shapes = [
            tuple(tensor.shape[:-1]) + (new_width(tensor),) for tensor in node.input_tensors
        ]
        handler.build(new_layer, input_shapes, node)
        new_layer.set_weights(values)
        return new_layer

    return _utils.clone_graph(model, replace)
