"""The criterion registry and the rule that turns per-layer scores into group scores.

A criterion is a callable

    criterion(model, graph, data=None, seed=None) -> {group_name: scores}

that returns, for every channel group of `graph` (`tfprune.graph.build(model)`)
it can score, a 1-D NumPy array with one score per channel of the group
(higher means more important). Groups it cannot score are left out; `prune`
keeps them as they are and lists them in its result.

Most criteria are per-layer: a function `layer -> per-output-channel scores`
of a producer (a conv or dense layer). `from_layer_scores` lifts such a
function to groups with one documented rule, so that scores stay comparable
across groups for a global threshold:

- a group's channel `i` is scored from the producers whose output channels
  are in the group (residual sums and squeeze-excite gates have several);
- `combine="sum"` adds the producers' scores (magnitudes of all the weights
  that create the channel), `combine="mean"` averages them (bounded scores
  such as the sparsity value S, or BN scales, stay on their scale);
- with `batch_norm=True` only producers whose output goes straight into a
  BatchNormalization count, and each producer's score is multiplied by that
  BN's `|γ|`; a group without such a producer is not scored.
"""

import keras
import numpy as np

from tfprune import handlers
from tfprune._keras.functional import model_nodes, producer
from tfprune._keras.layers import attention_projections
from tfprune._utils import functional_view

__all__ = [
    "AttentionHeads",
    "available",
    "comparable_across_groups",
    "consumers",
    "from_layer_scores",
    "get",
    "register",
]

_CRITERIA = {}
# Names of the criteria whose scores may be ranked across groups (one global threshold).
_COMPARABLE = set()


def register(name, criterion, comparable_across_groups=False):
    """Registers a criterion under a name usable as `prune(criterion=name)`.

    Args:
        name: String. The name.
        criterion: Callable `(model, graph, data=None, seed=None) -> {group_name: scores}`.
        comparable_across_groups: Bool. Whether one global threshold over the
            scores of all groups is meaningful (scores on one scale whatever
            the layer's size, such as BN scales). `tfprune.prune` then ranks
            globally by default; otherwise it removes the same share of every
            group. Defaults to `False`.

    Returns:
        `criterion`, unchanged.

    Raises:
        TypeError: If `name` is not a string or `criterion` is not callable.

    Example:

    >>> import numpy as np, tfprune
    >>> def ones(model, graph, data=None, seed=None):
    ...     return {group.name: np.ones(group.size) for group in graph.groups if group.prunable}
    >>> _ = tfprune.criteria.register("ones", ones)
    >>> tfprune.criteria.get("ones") is ones
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"A criterion name must be a string. Received: name={name!r}")
    if not callable(criterion):
        raise TypeError(
            f"Criterion '{name}' must be a callable (model, graph, data=None, seed=None) -> "
            f"{{group_name: scores}}. Received: {criterion!r}"
        )
    if not isinstance(comparable_across_groups, bool):
        raise TypeError(
            f"`comparable_across_groups` must be True or False. "
            f"Received: comparable_across_groups={comparable_across_groups!r}"
        )
    _CRITERIA[name] = criterion
    _COMPARABLE.discard(name)
    if comparable_across_groups:
        _COMPARABLE.add(name)
    return criterion


def comparable_across_groups(criterion):
    """Whether a criterion's scores may be ranked across groups with one threshold.

    Args:
        criterion: String naming a registered criterion, or a criterion
            callable (a registered one, or any callable with a true
            `comparable_across_groups` attribute).

    Returns:
        Bool. True for the criteria registered with
        `comparable_across_groups=True` (`"bn_gamma"`, `"sparsity_gamma"`,
        `"str_zero_filters"`); False for the others, whose scores grow with a
        layer's size or have no common scale (`"l1"`, `"l2"`, `"random"`,
        the data-driven criteria, unregistered callables).

    Example:

    >>> import tfprune
    >>> tfprune.criteria.comparable_across_groups("bn_gamma")
    True
    >>> tfprune.criteria.comparable_across_groups("l1")
    False
    """
    if isinstance(criterion, str):
        return criterion in _COMPARABLE
    if any(_CRITERIA[name] is criterion for name in _COMPARABLE):
        return True
    return getattr(criterion, "comparable_across_groups", False) is True


def get(name):
    """Returns a registered criterion (a callable is returned unchanged).

    Args:
        name: String naming a registered criterion, or a criterion callable.

    Returns:
        The criterion callable.

    Raises:
        ValueError: If no criterion has that name.

    Example:

    >>> import tfprune
    >>> tfprune.criteria.get("l1") is tfprune.criteria.l1
    True
    """
    if callable(name):
        return name
    if name not in _CRITERIA:
        raise ValueError(
            f"Unknown criterion {name!r}; use one of {available()} or register your own with "
            "tfprune.criteria.register(name, fn)."
        )
    return _CRITERIA[name]


def available():
    """Returns the sorted names of the registered criteria.

    Returns:
        List of strings.

    Example:

    >>> import tfprune
    >>> "sparsity_gamma" in tfprune.criteria.available()
    True
    """
    return sorted(_CRITERIA)


def consumers(model):
    """Maps each layer name to the layers and operations that read its output.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        Dict `{layer_name: [operation, ...]}` in call order.

    Example:

    >>> import keras
    >>> from tfprune.criteria.base import consumers
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(3, name="dense")(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    >>> [operation.name for operation in consumers(model)["dense"]]
    ['bn']
    """
    functional = functional_view(model)
    position = {id(operation): index for index, operation in enumerate(functional.operations)}
    # The model's calls grouped by operation, in the order of `functional.operations`.
    nodes = sorted(model_nodes(functional), key=lambda node: position.get(id(node.operation), -1))
    readers = {}
    for node in nodes:
        for tensor in node.input_tensors:
            made_by = producer(tensor)
            if made_by is not None and id(made_by.operation) in position:
                readers.setdefault(made_by.operation.name, []).append(node.operation)
    return readers


def following_batch_norm(model, layer_name, readers=None):
    """Returns the BatchNormalization that directly normalises a layer's output, or None.

    Args:
        model: The model.
        layer_name: String. The producer layer.
        readers: Optional result of `consumers(model)`, to avoid recomputing it.

    Returns:
        A `keras.layers.BatchNormalization` or None.

    Example:

    >>> # following_batch_norm(model, "expanded_conv_1_expand").name
    >>> # 'expanded_conv_1_expand_bn'
    """
    import keras

    readers = consumers(model) if readers is None else readers
    for operation in readers.get(layer_name, ()):
        if isinstance(operation, keras.layers.BatchNormalization) and operation.scale:
            return operation
    return None


def _producer_members(group):
    """One output member per producer layer (the first, which carries the kernel)."""
    seen = {}
    for member in group.members:
        if member.role == "output" and member.layer_name not in seen:
            seen[member.layer_name] = member
    return list(seen.values())


class AttentionHeads:
    """The heads of a `MultiHeadAttention` layer, seen as a producer with one filter per head.

    Per-layer criteria score a producer's output channels from its `kernel`
    (output channels on the last axis); a `MultiHeadAttention` layer produces
    two groups, its output width (the output projection, scored as the
    layer itself) and its heads. For the heads group, the layer is given to
    the per-layer score as this view, whose `kernel` stacks the query, key
    and value kernels `(width, heads, dim)` with the heads last: a head's
    magnitude is that of all its projection weights.

    Attributes:
        layer: The `MultiHeadAttention` layer.
        name: Its name.
        kernel: NumPy array `(3 * width * dim, heads)`.

    Example:

    >>> layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    >>> tokens = keras.Input((5, 6))
    >>> _ = layer(tokens, tokens)
    >>> AttentionHeads(layer).kernel.shape
    (72, 2)
    """

    def __init__(self, layer):
        self.layer = layer
        self.name = layer.name
        # Grouped-query attention layers lay their heads out in their own way.
        head_kernel = getattr(handlers.handler_for(layer), "head_kernel", None)
        if head_kernel is not None:
            self.kernel = head_kernel(layer)
            return
        projections = attention_projections(layer)
        kernels = [projections[name].kernel for name in ("query", "key", "value")]
        parts = [
            np.moveaxis(keras.ops.convert_to_numpy(kernel), 1, -1).reshape(-1, layer.num_heads)
            for kernel in kernels
        ]
        self.kernel = np.concatenate(parts, axis=0)


class _OutputWeight:
    """A producer member's first weight seen as a kernel with the output channels last.

    For a layer that makes channels with a weight other than its own `kernel`
    (a block whose handler declares its feed-forward Dense's kernel), so that
    per-layer criteria score it like a Dense layer.
    """

    def __init__(self, layer, member):
        path, axis = member.weights[0]
        weight = next(weight for weight in layer.weights if weight.path == path)
        self.layer, self.name = layer, layer.name
        self.kernel = np.moveaxis(keras.ops.convert_to_numpy(weight), axis, -1)
        self.weights = [weight]


def from_layer_scores(layer_score, combine="sum", batch_norm=False, finish=None):
    """Builds a group criterion from a per-layer score (the rule in the module docstring).

    Args:
        layer_score: Callable `layer -> 1-D array` with one score per output
            channel of a producer layer, or None when it cannot score the layer.
        combine: String. `"sum"` or `"mean"` over the group's scored producers.
        batch_norm: Bool. Multiply by the following BN's `|γ|` and only use
            producers that have one.
        finish: Optional callable applied to the combined scores (e.g. `np.sqrt`).

    Returns:
        A criterion `(model, graph, data=None, seed=None) -> {group_name: scores}`.

    Raises:
        ValueError: If `combine` is not `"sum"` or `"mean"`.

    Example:

    >>> import numpy as np, tfprune
    >>> max_abs = tfprune.criteria.from_layer_scores(
    ...     lambda layer: np.abs(layer.get_weights()[0]).reshape(-1, layer.get_weights()[0].shape[-1]).max(0))
    """
    if combine not in ("sum", "mean"):
        raise ValueError(f"`combine` must be 'sum' or 'mean'. Received: combine={combine!r}")

    def criterion(model, graph, data=None, seed=None):
        readers = consumers(model)
        scores = {}
        for group in graph.groups:
            if not group.prunable:
                continue
            total = np.zeros(group.size)
            count = np.zeros(group.size)
            for member in _producer_members(group):
                layer = model.get_layer(member.layer_name)
                if group.heads_of == layer.name:
                    layer = AttentionHeads(layer)
                values = layer_score(layer)
                if values is None and member.weights:  # a block holding the producer's kernel inside
                    values = layer_score(_OutputWeight(layer, member))
                if values is None:
                    continue
                values = np.asarray(values, dtype="float64").reshape(-1)
                if batch_norm:
                    normalization = following_batch_norm(model, layer.name, readers)
                    if normalization is None:
                        continue
                    values = values * np.abs(np.asarray(normalization.gamma.numpy(), "float64"))
                positions = list(member.positions)
                np.add.at(total, list(member.channels), values[positions])
                np.add.at(count, list(member.channels), 1)
            if not count.any():
                continue
            if combine == "mean":
                total = total / np.maximum(count, 1)
            scores[group.name] = finish(total) if finish is not None else total
        return scores

    return criterion
