"""Data-free criteria: filter norms, BN scales, the sparsity value S, random, STR zeros.

Every criterion here has the signature
`criterion(model, graph, data=None, seed=None) -> {group_name: scores}`; see
`tfprune.criteria.base` for how producer scores are combined into group scores.
"""

import zlib

import keras
import numpy as np

from tfprune._keras.layers import attention_projections
from tfprune.criteria.base import from_layer_scores, register

__all__ = [
    "bn_gamma",
    "filter_sparsity",
    "l1",
    "l2",
    "random",
    "sparsity",
    "sparsity_gamma",
    "str_zero_filters",
]


def to_numpy(value):
    """A variable or tensor as a NumPy array (`np.asarray` on a Keras variable is deprecated)."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _depthwise_kernel(layer):
    # (h, w, in, multiplier) -> output channel `in * multiplier + m` on the last axis
    kernel = to_numpy(layer.kernel)
    return kernel.reshape(kernel.shape[:-2] + (-1,))


# Which kernel of a producer holds its output channels on the last axis; layer
# classes not listed use `layer.kernel` (Conv, Dense and tfprune's STR layers,
# whose `kernel` is the effective sparse kernel).
def _transpose_kernel(layer):
    # (..., filters, in): a transposed conv keeps its output channels on axis -2
    return np.swapaxes(to_numpy(layer.kernel), -1, -2)


def _attention_output_kernel(layer):
    # The output projection (heads, dim, width): the layer's output channels last.
    kernel = to_numpy(attention_projections(layer)["output"].kernel)
    return kernel.reshape(-1, kernel.shape[-1])


_OUTPUT_KERNELS = {
    keras.layers.MultiHeadAttention: _attention_output_kernel,
    keras.layers.Embedding: lambda layer: to_numpy(layer.embeddings),
    keras.layers.DepthwiseConv1D: _depthwise_kernel,
    keras.layers.DepthwiseConv2D: _depthwise_kernel,
    keras.layers.SeparableConv1D: lambda layer: to_numpy(layer.pointwise_kernel),
    keras.layers.SeparableConv2D: lambda layer: to_numpy(layer.pointwise_kernel),
    keras.layers.Conv1DTranspose: _transpose_kernel,
    keras.layers.Conv2DTranspose: _transpose_kernel,
    keras.layers.Conv3DTranspose: _transpose_kernel,
}


def output_kernel(layer):
    """Returns a producer's kernel with output channels on the last axis, or None.

    Args:
        layer: A Keras layer.

    Returns:
        NumPy array, or None if the layer has no kernel.

    Example:

    >>> import keras
    >>> from tfprune.criteria.magnitude import output_kernel
    >>> layer = keras.layers.Dense(3)
    >>> layer.build((None, 2))
    >>> output_kernel(layer).shape
    (2, 3)
    """
    for layer_class in type(layer).__mro__:
        if layer_class in _OUTPUT_KERNELS:
            return _OUTPUT_KERNELS[layer_class](layer)
    if getattr(layer, "kernel", None) is None:
        return None
    return to_numpy(layer.kernel)


def _per_filter(function):
    """Applies `function(filters)` to the kernel reshaped to `(coefficients, filters)`."""

    def layer_score(layer):
        kernel = output_kernel(layer)
        if kernel is None:
            return None
        return function(kernel.reshape(-1, kernel.shape[-1]).astype("float64"))

    return layer_score


def filter_sparsity(layer):
    """The filter sparsity value S of Liu & Lei (docs/METHODS.md §11) of each output filter.

    `S(n) = (1 / (C·H·W)) Σ 1[|W[h, w, c, n]| > M]`, with `M` the mean `|W|` of
    the whole layer: the share of a filter's coefficients above the layer mean.

    Args:
        layer: A producer layer (conv, dense).

    Returns:
        NumPy array with one value in [0, 1] per output channel, or None.

    Example:

    >>> import keras, numpy as np
    >>> from tfprune.criteria.magnitude import filter_sparsity
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 2))
    >>> _ = layer.kernel.assign(np.array([[4.0, 0.0], [1.0, 1.0]]))  # mean |W| = 1.5
    >>> filter_sparsity(layer).tolist()
    [0.5, 0.0]
    """
    kernel = output_kernel(layer)
    if kernel is None:
        return None
    magnitudes = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    return np.mean(magnitudes > magnitudes.mean(), axis=0)


def _nonzero_filters(layer):
    if hasattr(layer, "zero_filters"):
        return 1.0 - np.asarray(layer.zero_filters(), dtype="float64")
    # A plain layer (e.g. after `tfprune.strip`) carries the STR zeros in its kernel.
    kernel = output_kernel(layer)
    if kernel is None:
        return None
    return np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0).astype("float64")


def random(model, graph, data=None, seed=None):
    """Uniform random scores, reproducible from `seed` (the baseline criterion).

    Each group draws from its own generator seeded with `(seed, crc32(name))`,
    so a group's scores do not depend on the other groups.

    Args:
        model: The model.
        graph: `tfprune.graph.build(model)`.
        data: Unused.
        seed: Optional int. Defaults to 0.

    Returns:
        Dict `{group_name: scores}` for every prunable group.

    Example:

    >>> # tfprune.prune(model, criterion="random", rate=0.5, seed=3)
    """
    seed = 0 if seed is None else int(seed)
    return {
        group.name: np.random.default_rng([seed, zlib.crc32(group.name.encode())]).random(group.size)
        for group in graph.groups
        if group.prunable
    }


# The criteria below share the signature of every criterion
# (`from_layer_scores`); their docstrings share its Args and Returns.
_CRITERION_ARGUMENTS = """
Args:
    model: A built Sequential or functional Keras model.
    graph: `tfprune.graph.build(model)`.
    data: Unused (these criteria read weights only).
    seed: Unused.

Returns:
    Dict `{group_name: scores}`: one float per channel of each prunable
    group with at least one scored producer.

"""

# The examples' model: `hidden` (4 units, followed by a BN with |γ| = 0.5, 2, 0, 1) is
# the one prunable group.
_EXAMPLE_MODEL = """
>>> import keras, numpy as np, tfprune
>>> inputs = keras.Input((3,))
>>> hidden = keras.layers.Dense(4, name="hidden")
>>> normalization = keras.layers.BatchNormalization(name="normalization")
>>> model = keras.Model(inputs, keras.layers.Dense(2)(normalization(hidden(inputs))))
>>> hidden.set_weights([np.ones((3, 4)) * [1.0, -2.0, 0.0, 3.0], np.zeros(4)])
>>> normalization.set_weights([np.array([0.5, -2.0, 0.0, 1.0]), np.zeros(4), np.zeros(4), np.ones(4)])
"""

l1 = from_layer_scores(_per_filter(lambda filters: np.abs(filters).sum(axis=0)), combine="sum")
l1.__doc__ = (
    """L1 norm of each filter, `Σ|W[..., n]|` (Li et al.), summed over the group's producers.
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.l1(model, tfprune.graph.build(model))["hidden"].tolist()
[3.0, 6.0, 0.0, 9.0]
"""
)

l2 = from_layer_scores(
    _per_filter(lambda filters: np.square(filters).sum(axis=0)), combine="sum", finish=np.sqrt
)
l2.__doc__ = (
    """L2 norm of each channel's filters over all the group's producers.
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.l2(model, tfprune.graph.build(model))["hidden"].round(3).tolist()
[1.732, 3.464, 0.0, 5.196]
"""
)

bn_gamma = from_layer_scores(
    _per_filter(lambda filters: np.ones(filters.shape[-1])), combine="mean", batch_norm=True
)
bn_gamma.__doc__ = (
    """`|γ|` of the BatchNormalization right after each producer (Network Slimming).

Averaged over the producers that have one; groups without are not scored.
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.bn_gamma(model, tfprune.graph.build(model))["hidden"].tolist()
[0.5, 2.0, 0.0, 1.0]
"""
)

sparsity = from_layer_scores(filter_sparsity, combine="mean")
sparsity.__doc__ = (
    """The filter sparsity value S (see `filter_sparsity`), averaged over producers.
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.sparsity(model, tfprune.graph.build(model))["hidden"].tolist()  # mean |W| is 1.5
[0.0, 1.0, 0.0, 1.0]
"""
)

sparsity_gamma = from_layer_scores(filter_sparsity, combine="mean", batch_norm=True)
sparsity_gamma.__doc__ = (
    """`|γ|·S`, the MobileNetV3 criterion of Liu & Lei (docs/METHODS.md §11).

S of each producer times `|γ|` of the BN right after it, averaged over the
producers that have one; groups without are not scored.
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.sparsity_gamma(model, tfprune.graph.build(model))["hidden"].tolist()
[0.0, 2.0, 0.0, 1.0]
"""
)

str_zero_filters = from_layer_scores(_nonzero_filters, combine="mean")
str_zero_filters.__doc__ = (
    """0 for channels whose every producer filter is zero, else > 0.

A filter whose kernel is all zeros counts as zero: the filters channel-mode
STR drove to zero are such filters once the model is stripped, and
`tfprune.prune` strips STR layers before it scores (a channel graph is
built on plain layers only). The score is the share of the group's
producers whose filter is not zero. `prune(model, "str_zero_filters")`
takes no rate and removes exactly the zero channels (threshold 0).
"""
    + _CRITERION_ARGUMENTS
    + "Example:\n"
    + _EXAMPLE_MODEL
    + """>>> tfprune.criteria.str_zero_filters(model, tfprune.graph.build(model))["hidden"].tolist()
[1.0, 1.0, 0.0, 1.0]
"""
)

for _name, _criterion in {
    "l1": l1,
    "l2": l2,
    "bn_gamma": bn_gamma,
    "sparsity": sparsity,
    "sparsity_gamma": sparsity_gamma,
    "random": random,
    "str_zero_filters": str_zero_filters,
}.items():
    _criterion.__name__ = _name
    # BN scales (and |γ|·S, S in [0, 1]) are on one scale in every layer, and
    # str_zero_filters a share in [0, 1]: Network Slimming and Liu & Lei rank them
    # globally. Filter norms grow with fan-in; "sparsity" alone and random
    # scores say nothing about which layer can spare channels.
    register(_name, _criterion, comparable_across_groups=_name in ("bn_gamma", "sparsity_gamma", "str_zero_filters"))
