"""Channel gates at the layers that read a group's channels (used by both searches).

A width search needs models in which channels of some groups are switched
off (ABCPruner's candidates) or weighted by a keep probability (DMCP),
without rebuilding the model for every width vector. The gates multiply the
input of every layer that reads channels of a searched group (the next conv
or dense, found from the `"input"` members of `tfprune.graph`), channel by
channel: a channel multiplied by 0 there contributes exactly what a removed
channel contributes, in the forward and the backward pass (its producer
weights get no gradient), so a masked model computes what the pruned model
computes, in one traced graph for all candidates.

The channels of each group are numbered in a **chain order** (by default by
decreasing L1 norm of their filters); keeping `w` channels keeps the first `w`
of the chain, the ones channel surgery (`set_widths` with the same scores)
keeps.
"""

import keras
import numpy as np

from tfprune import criteria
from tfprune._utils import functional_view

# The gates the searches train; nothing here is meant to be imported by users.
__all__ = []

CHANNEL_ORDERS = ("l1", "index")


def chain_ranks(model, graph, groups, channel_order="l1"):
    """Position of each channel in its group's chain: `{group_name: int array}`."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(
            f"`channel_order` must be one of {CHANNEL_ORDERS}. Received: channel_order={channel_order!r}"
        )
    scores = criteria.get("l1")(model, graph) if channel_order == "l1" else {}
    ranks = {}
    for group in groups:
        # Higher score first; stable, so equal scores keep index order.
        order = np.argsort(-np.asarray(scores.get(group.name, np.zeros(group.size))), kind="stable")
        ranks[group.name] = np.argsort(order, kind="stable")
    return ranks


def reading_sites(model, graph, groups, ranks):
    """`{layer name: gather indices}` for every layer reading a searched group.

    Index 0 stands for "not searched" (gate 1); group `g`'s chain position
    `j` is at `1 + (sizes of the groups before g) + j`.
    """
    shapes = {weight.path: tuple(weight.shape) for weight in model.weights}
    sites, offset = {}, 1
    for group in groups:
        for member in graph[group.name].members:
            if member.role != "input":
                continue
            path, axis = member.weights[0]  # e.g. a conv kernel's input-channel axis
            indices = sites.setdefault(member.layer_name, [0] * shapes[path][axis])
            for position, channel in zip(member.positions, member.channels):
                indices[position] = offset + int(ranks[group.name][channel])
        offset += group.size
    return sites


def gated_model(plain, gates):
    """`plain`'s graph with `gates` applied to the input of every site layer (layers shared)."""

    def call_function(layer, *args, **kwargs):
        if layer.name in gates.sites:
            args = (gates(args[0], site=layer.name),) + args[1:]
        return layer(*args, **kwargs)

    return keras.models.clone_model(
        functional_view(plain), clone_function=lambda layer: layer, call_function=call_function
    )


class SiteGates(keras.layers.Layer):
    """Base class: multiplies a site layer's input by `[1, values()...]` gathered per channel.

    Subclasses implement `values()`: one value per chain position of every
    searched group, groups concatenated.

    Args:
        group_sizes: List of ints. Channels of each searched group.
        sites: Dict `{site name: list of ints}` (see `reading_sites`).

    Call arguments:
        inputs: Tensor whose last axis has `len(sites[site])` channels.
        site: String. The site name.
    """

    def __init__(self, group_sizes, sites, **kwargs):
        super().__init__(**kwargs)
        self.group_sizes = [int(size) for size in group_sizes]
        self.sites = {name: [int(index) for index in indices] for name, indices in sites.items()}

    def call(self, inputs, site):
        values = self.values()
        gate = keras.ops.take(keras.ops.concatenate([keras.ops.ones((1,), values.dtype), values]), self.sites[site])
        return inputs * keras.ops.cast(gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"group_sizes": self.group_sizes, "sites": self.sites})
        return config


@keras.saving.register_keras_serializable(package="tfprune")
class ChannelMasks(SiteGates):
    """Binary gates: each searched group keeps the first `width` channels of its chain.

    Holds one non-trainable weight, `mask`; `set_widths` rewrites it without
    retracing the model, so one traced training step serves every candidate.

    Args:
        group_sizes: List of ints. Channels of each searched group.
        sites: Dict `{site name: list of ints}` (see `reading_sites`).

    Example:

    >>> masks = ChannelMasks([4], {"dense": [1, 2, 3, 4]})
    >>> masks.set_widths([2])
    >>> np.asarray(masks(np.ones((1, 4), "float32"), site="dense")).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """

    def build(self, input_shape=None):
        self.mask = self.add_weight(
            shape=(sum(self.group_sizes),), initializer="ones", trainable=False, name="mask"
        )
        self.built = True

    def values(self):
        return self.mask

    def set_widths(self, widths):
        """Keeps the first `widths[i]` chain channels of group `i`.

        Args:
            widths: Sequence of ints, one per group, in [0, size].
        """
        if not self.built:
            self.build()
        self.mask.assign(
            np.concatenate([np.arange(size) < width for size, width in zip(self.group_sizes, widths)]).astype(
                self.mask.dtype
            )
        )
