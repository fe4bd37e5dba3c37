"""Reconstruction-based channel selection (He et al., ICCV 2017), docs/METHODS.md §5.

The channels of a group are the input channels of its consumers (the conv or
dense layers that read them). On sampled input patches `X` of a consumer and
its original outputs `Y`, channel `i` contributes `Z_i = X_i W_i` to the
output; LASSO on a mask `β`,

    minimise ||Y - Σ_i β_i Z_i||² + α ||β||₁,

keeps the channels that reconstruct `Y` best. A group read by several
consumers sums their errors, each divided by its `||Y||²`. The problem is
solved on its Gram matrix (`ZᵀZ`, one row per channel, so memory does not
grow with the number of samples) by scikit-learn's LASSO path
(`lars_path_gram`): channels that enter the path earlier rank higher.
`tfprune.pruners.ChannelPruning` then refits the consumers' kernels on the
kept channels by least squares.

Consumers that can be reconstructed: `Conv2D` (`groups=1`) and `Dense` that
read only the group's channels. Groups without one are not scored.
"""

import warnings
import zlib

import keras
import numpy as np

from tfprune import _features
from tfprune._utils import functional_view
from tfprune.criteria.base import register

__all__ = ["reconstruction"]


def _conv_patches(layer, inputs):
    patches = keras.ops.image.extract_patches(
        inputs,
        size=tuple(layer.kernel_size),
        strides=tuple(layer.strides),
        dilation_rate=tuple(layer.dilation_rate),
        padding=layer.padding,
    )
    return np.asarray(keras.ops.convert_to_numpy(patches))


# Consumer layer class -> `(layer, inputs) -> (batch, ..., kernel positions * channels)`:
# the rows whose product with `kernel.reshape(-1, units)` is the layer's output
# (without bias). Exact classes only: a subclass (e.g. an STR layer) may use
# another kernel than the one it stores.
_PATCHES = {
    keras.layers.Conv2D: _conv_patches,
    keras.layers.Dense: lambda layer, inputs: inputs,
}


def flat_kernel(layer):
    """A consumer's kernel as a `(kernel positions * input channels, units)` float64 array.

    Args:
        layer: A `Conv2D` or `Dense` layer.

    Returns:
        NumPy array whose product with the rows of `sampled_inputs` is the
        layer's output without bias.

    Example:

    >>> import keras
    >>> from tfprune.criteria.reconstruction import flat_kernel
    >>> layer = keras.layers.Conv2D(4, 3)
    >>> layer.build((None, 8, 8, 2))
    >>> flat_kernel(layer).shape
    (18, 4)
    """
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), "float64")
    return kernel.reshape(-1, kernel.shape[-1])


def reconstructable_consumers(model, group):
    """The consumers of a group whose outputs can be reconstructed.

    Args:
        model: The model.
        group: A `ChannelGroup`.

    Returns:
        List of `(layer_name, order)`: `order[c]` is the consumer's input
        position that carries group channel `c`.

    Example:

    >>> # reconstructable_consumers(model, tfprune.graph.build(model)["expand"])
    >>> # [('consumer', array([0, 1, 2, 3, 4, 5, 6, 7]))]
    """
    functional = functional_view(model)
    consumers = []
    for member in group.members:
        layer = model.get_layer(member.layer_name)
        if (
            member.role != "input"
            or type(layer) not in _PATCHES
            or getattr(layer, "groups", 1) != 1
        ):
            continue
        inputs = _features.call_node(functional, layer.name).input_tensors[0]
        if len(member.positions) != group.size or inputs.shape[-1] != group.size:
            continue  # the layer also reads other channels (e.g. after a concatenation)
        order = np.empty(group.size, dtype=np.int64)
        order[list(member.channels)] = member.positions
        consumers.append((layer.name, order))
    return consumers


def sampled_inputs(model, layer_names, batches, seed, positions_per_example):
    """Yields `(layer, batch_index, rows)`: sampled input patches of each consumer.

    For every example, `positions_per_example` output positions are drawn
    (all of them when there are fewer) by a generator seeded with
    `(seed, batch_index, crc32(layer_name))`, so that two models with the same
    layer names and spatial sizes are sampled at the same positions.

    Args:
        model: The model.
        layer_names: Names of consumer layers (keys of `_PATCHES`).
        batches: List of input arrays (`_features.input_batches`).
        seed: Int.
        positions_per_example: Int.

    Yields:
        Tuples `(layer, batch_index, rows)` with `rows` of shape
        `(samples, kernel positions * input channels)`, float64.

    Example:

    >>> # for layer, batch_index, rows in sampled_inputs(model, ["conv"], [x], 0, 10):
    >>> #     outputs = rows @ flat_kernel(layer)   # the conv outputs at 10 positions per image
    """
    functional = functional_view(model)
    layers = [model.get_layer(name) for name in layer_names]
    tensors = [_features.call_node(functional, name).input_tensors[0] for name in layer_names]
    extractor = _features.feature_model(model, tensors)
    for batch_index, batch in enumerate(batches):
        for layer, inputs in zip(layers, _features.run(extractor, batch)):
            patches = _PATCHES[type(layer)](layer, inputs)
            patches = patches.reshape(len(patches), -1, patches.shape[-1])
            count = patches.shape[1]
            generator = np.random.default_rng([seed, batch_index, zlib.crc32(layer.name.encode())])
            if count <= positions_per_example:
                rows = patches
            else:
                chosen = np.stack(
                    [generator.choice(count, positions_per_example, replace=False) for _ in patches]
                )
                rows = np.take_along_axis(patches, chosen[:, :, None], axis=1)
            yield layer, batch_index, rows.reshape(-1, rows.shape[-1]).astype("float64")


def moments(model, layer_names, batches, seed, positions_per_example, targets=None):
    """Accumulates `XᵀX`, `XᵀY` and `YᵀY` of each consumer's sampled patches.

    Args:
        model: The model.
        layer_names: Consumer layer names.
        batches: List of input arrays.
        seed: Int. See `sampled_inputs`.
        positions_per_example: Int.
        targets: Optional dict `{(layer_name, batch_index): Y rows}`; defaults
            to the layer's own outputs `X @ kernel` (without bias).

    Returns:
        Dict `{layer_name: (inputs_gram, cross, target_energy)}`.

    Example:

    >>> # gram, cross, energy = moments(model, ["conv"], [x], 0, 10)["conv"]
    """
    totals = {}
    for layer, batch_index, rows in sampled_inputs(
        model, layer_names, batches, seed, positions_per_example
    ):
        target = (
            rows @ flat_kernel(layer) if targets is None else targets[(layer.name, batch_index)]
        )
        gram, cross, energy = totals.get(layer.name, (0.0, 0.0, 0.0))
        totals[layer.name] = (
            gram + rows.T @ rows,
            cross + rows.T @ target,
            energy + np.sum(target**2),
        )
    return totals


def lasso_ranking(gram, correlation):
    """Ranks channels by when they enter the LASSO path of `βᵀGβ - 2bᵀβ + α‖β‖₁`.

    scikit-learn's `lars_path_gram` computes the exact LASSO path (least-angle
    regression with the LASSO modification) from the Gram matrix alone, as
    `α` decreases from the value that zeroes every `β`. The channel that
    enters first ranks highest, so the `k` best channels are the support of
    the LASSO solution with `k` non-zeros (He et al. raise `α` until
    `‖β‖₀ ≤ k`). Channels that never enter (the path ends when the target is
    reconstructed or the rest is collinear) follow, ordered by their own
    normalised correlation `|b_i| / sqrt(G_ii)` with the target.

    Args:
        gram: `(channels, channels)` array `G = ZᵀZ`.
        correlation: `(channels,)` array `b = ZᵀY`.

    Returns:
        `(channels,)` array of scores in `(0, 1]`: the best channel scores 1,
        the worst `1 / channels`.

    Example:

    >>> import numpy as np
    >>> from tfprune.criteria.reconstruction import lasso_ranking
    >>> design = np.random.default_rng(0).normal(size=(50, 3))
    >>> target = design @ np.array([0.1, 2.0, 0.0])
    >>> lasso_ranking(design.T @ design, design.T @ target).round(2).tolist()
    [0.67, 1.0, 0.33]
    """
    from sklearn.linear_model import lars_path_gram

    size = len(correlation)
    diagonal = np.diag(gram)
    strength = np.abs(correlation) / np.sqrt(np.where(diagonal > 0, diagonal, np.inf))
    entry = np.zeros(size)
    if np.any(correlation):
        with warnings.catch_warnings():
            # Collinear channels (e.g. exact duplicates) make LARS drop them with a
            # warning; that is the intended outcome here.
            warnings.simplefilter("ignore")
            _, _, coefficients = lars_path_gram(
                correlation, gram, n_samples=1, method="lasso", max_iter=size
            )
        active = coefficients != 0
        entry = np.where(active.any(axis=1), active.argmax(axis=1), coefficients.shape[1])
    order = np.lexsort((-strength, entry))
    scores = np.empty(size)
    scores[order] = (size - np.arange(size)) / size
    return scores


def group_scores(model, group, consumer_moments):
    """LASSO scores of one group's channels from its consumers' moments.

    Args:
        model: The model the moments were taken on.
        group: The `ChannelGroup`.
        consumer_moments: Dict `{layer_name: (inputs_gram, cross, target_energy)}`
            covering the group's reconstructable consumers.

    Returns:
        `(group.size,)` array, or None if the group has no reconstructable consumer.

    Example:

    >>> # group = graph["expand"]
    >>> # names = [name for name, _ in reconstructable_consumers(model, group)]
    >>> # scores = group_scores(model, group, moments(model, names, [x], 0, 10))
    """
    consumers = reconstructable_consumers(model, group)
    if not consumers:
        return None
    gram, correlation = 0.0, 0.0
    for name, order in consumers:
        inputs_gram, cross, energy = consumer_moments[name]
        kernel = flat_kernel(model.get_layer(name))
        units = kernel.shape[-1]
        kernel = kernel.reshape(-1, group.size, units)[:, order]
        positions = len(kernel)
        inputs_gram = inputs_gram.reshape(positions, group.size, positions, group.size)[:, order][
            ..., order
        ]
        cross = cross.reshape(positions, group.size, units)[:, order]
        kernel_gram = np.einsum("kco,ldo->kcld", kernel, kernel)
        scale = max(energy, np.finfo("float64").tiny)
        gram = gram + np.einsum("kcld,kcld->cd", inputs_gram, kernel_gram) / scale
        correlation = correlation + np.einsum("kco,kco->c", cross, kernel) / scale
    return lasso_ranking(gram, correlation)


def reconstruction(
    model, graph, data=None, seed=None, num_batches=5, batch_size=128, positions_per_example=10
):
    """Scores channels by how well they reconstruct their consumers' outputs (He et al.).

    One-shot: inputs and outputs both come from `model`; the scores are the
    LASSO ranks of `lasso_ranking` (in `(0, 1]` within each group, so they
    express an order, not a magnitude: use `scope="group"`). For the full
    method, with the pruned model's inputs, the original outputs and a
    least-squares refit of the consumers, use `tfprune.pruners.ChannelPruning`.

    Args:
        model: A built Sequential or functional single-input `keras.Model`. Not modified.
        graph: `tfprune.graph.build(model)`.
        data: What `model.fit` accepts: an array of inputs, an `(x, y)`
            tuple of arrays, or batches (`x` or `(x, y)`) from a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator.
        seed: Optional int for the sampled positions. Defaults to 0.
        num_batches: Int. Batches used. Defaults to `5`.
        batch_size: Int. Batch size when `data` is an array. Defaults to `128`.
        positions_per_example: Int. Output positions sampled per example and
            consumer (He et al. sample 10). Defaults to `10`.

    Returns:
        Dict `{group_name: scores}` for every prunable group with a
        reconstructable consumer.

    Raises:
        ValueError: If `data` is missing or empty, or its inputs do not have
            the model's input shape.
        TypeError: If `data` is not a dataset or an array.

    Example:

    >>> # small, result = tfprune.prune(model, "reconstruction", rate=0.5, scope="group", data=x)
    """
    batches = _features.input_batches(
        model, data, num_batches, batch_size, "Criterion 'reconstruction'"
    )
    groups = [group for group in graph.groups if group.prunable]
    consumers = {group.name: reconstructable_consumers(model, group) for group in groups}
    names = sorted({name for entries in consumers.values() for name, _ in entries})
    if not names:
        return {}
    consumer_moments = moments(
        model, names, batches, 0 if seed is None else int(seed), positions_per_example
    )
    scores = {}
    for group in groups:
        if consumers[group.name]:
            scores[group.name] = group_scores(model, group, consumer_moments)
    return scores


register("reconstruction", reconstruction)
