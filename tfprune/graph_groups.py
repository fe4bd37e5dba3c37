"""The channel groups `tfprune.graph.build` returns, and how they are assembled.

`build` follows channel ids through the graph with a
`tfprune.handlers.Tracer`: each producer makes fresh ids, and handlers unify
the ids that must be removed together. `_assemble` turns the traced ids into
`ChannelGroup`s: ids made by one producer or unified are one group (groups
in the order their first channel was made), with the weights each channel
indexes (`Member`), why a group may not shrink, and the links criteria and
the surgery read: the group a squeeze-excite bottleneck gates, the layers
that normalise over a group, the attention layer whose heads it is.
"""

import dataclasses

import numpy as np

from tfprune.handlers import Tracer

__all__ = ["ChannelGraph", "ChannelGroup", "Member"]


@dataclasses.dataclass(frozen=True)
class Member:
    """One layer's share of a channel group.

    Attributes:
        layer_name: String. The layer whose weights carry these channels.
        role: String. `"output"` (producer output channels), `"input"`
            (consumer input channels) or `"param"` (per-channel parameters).
        weights: Tuple of `(weight_path, axis)` pairs: the weights sliced
            when channels of the group are removed, and on which axis.
        positions: Tuple of ints. Indices along that axis that belong to the
            group (a Dense after a Flatten has several per channel).
        channels: Tuple of ints, same length as `positions`: the group
            channel each position carries.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> member = tfprune.graph.build(model)["conv"].members[0]
    >>> member.layer_name, member.role, member.weights
    ('conv', 'output', (('conv/kernel', 3), ('conv/bias', 0)))
    """

    layer_name: str
    role: str
    weights: tuple
    positions: tuple
    channels: tuple


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be removed together.

    Attributes:
        name: String. Stable id: the name of the group's first producer (a
            conv/dense layer, a model input or an unsupported operation).
        size: Int. Number of channels.
        prunable: Bool. False when the channels may not be removed.
        reason: String. One sentence saying why the group is not prunable;
            empty when it is.
        members: Tuple of `Member`, one per (layer, role, weight axis).
        squeeze_excite_of: String or None. For the bottleneck of a
            squeeze-and-excite block, the name of the group it gates.
        normalized_by: Tuple of layer names. The LayerNormalization /
            RMSNormalization layers that normalise over these channels (a
            transformer's hidden width): removing any channel changes their
            statistics, so the group is prunable only in a graph built with
            `hidden=True`.
        heads_of: String or None. For the heads of a `MultiHeadAttention`
            layer, its name.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> group = tfprune.graph.build(model)["conv"]
    >>> group.size, group.prunable, group.producers, group.consumers
    (16, True, ('conv',), ('head',))
    """

    name: str
    size: int
    prunable: bool
    reason: str
    members: tuple
    squeeze_excite_of: object = None
    normalized_by: tuple = ()
    heads_of: object = None

    @property
    def producers(self):
        """Tuple of layer names whose output channels are in the group."""
        return _layers_with_role(self.members, "output")

    @property
    def consumers(self):
        """Tuple of layer names whose input channels are in the group."""
        return _layers_with_role(self.members, "input")


def _layers_with_role(members, role):
    names = [member.layer_name for member in members if member.role == role]
    return tuple(dict.fromkeys(names))


class ChannelGraph:
    """The channel groups of one model, as returned by `build`.

    Attributes:
        groups: List of `ChannelGroup` in a deterministic (topological) order.
        inferred: Dict. Operation name -> the channel rule tfprune
            established numerically for an operation without a handler
            (`tfprune.handlers_inferred`), as a sentence.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> graph = tfprune.graph.build(model)
    >>> [group.name for group in graph.groups]
    ['image', 'conv', 'head']
    >>> graph["head"].reason
    "Group 'head' is not prunable: its channels are model output 'head'."
    """

    def __init__(self, groups, trace, inferred=None):
        self.groups = list(groups)
        self.inferred = dict(inferred or {})
        self._by_name = {group.name: group for group in self.groups}
        self._trace = trace

    def __getitem__(self, name):
        if name not in self._by_name:
            raise KeyError(
                f"No channel group named {name!r}; group names are the names of their first "
                f"producer layer, e.g. {list(self._by_name)[:5]}."
            )
        return self._by_name[name]

    def __contains__(self, name):
        return name in self._by_name

    def __iter__(self):
        return iter(self.groups)

    def __len__(self):
        return len(self.groups)

    def __repr__(self):
        prunable = sum(group.prunable for group in self.groups)
        return f"<ChannelGraph: {len(self.groups)} groups, {prunable} prunable>"


def _assemble(functional, tracer, hidden=False):
    """Turns the traced ids into `ChannelGroup`s."""
    count = tracer.channel_count
    roots = np.array([tracer.root(channel) for channel in range(count)], dtype=np.int64)
    # Channels created together (one producer) belong to one group: merge the
    # group labels of every root met in a segment. A label is the smallest id
    # of its group, so groups sort in the order their first channel was made.
    label = list(range(count))  # union-find over root ids

    def find(root):
        while label[root] != root:
            label[root] = label[label[root]]
            root = label[root]
        return root

    for first, size, _ in tracer.segments:
        if not size:  # an empty output (a block's unused cache): no channels
            continue
        segment_roots = np.unique(roots[first : first + size]).tolist()
        base = find(segment_roots[0])
        for root in segment_roots[1:]:
            other = find(root)
            if other != base:
                base, other = min(base, other), max(base, other)
                label[other] = base
    label = np.array([find(channel) for channel in range(count)], dtype=np.int64)
    group_of = label[roots]  # channel id -> group key
    # A group's channels are its distinct roots, numbered in order of creation.
    class_roots = np.unique(roots)
    class_roots = class_roots[np.lexsort((class_roots, label[class_roots]))]
    group_keys, starts, sizes = np.unique(label[class_roots], return_index=True, return_counts=True)
    channel_of = np.zeros(count, dtype=np.int64)  # root id -> channel index in its group
    channel_of[class_roots] = np.arange(len(class_roots)) - np.repeat(starts, sizes)
    segment_starts = np.array([first for first, _, _ in tracer.segments])
    names = {}
    for key in group_keys.tolist():
        name = tracer.segments[np.searchsorted(segment_starts, key, side="right") - 1][2]
        names[key] = name if name not in names.values() else f"{name}:{key}"
    reasons = {}
    for channel, reason in tracer.pins.items():
        reasons.setdefault(int(group_of[channel]), reason)

    members = {key: [] for key in names}
    for (layer_name, _, axis), (role, channels, path) in tracer.uses.items():
        channel_groups = group_of[channels]
        for key in np.unique(channel_groups).tolist():
            positions = np.flatnonzero(channel_groups == key)
            group_channels = channel_of[roots[channels[positions]]]
            members[key].append(
                Member(
                    layer_name,
                    role,
                    ((path, axis),),
                    tuple(positions.tolist()),
                    tuple(group_channels.tolist()),
                )
            )
    members = {key: _merge_members(group_members) for key, group_members in members.items()}
    squeeze_excite = _squeeze_excite_links(
        members, names, set(group_of[sorted(tracer.gates)].tolist())
    )
    normalized_by, heads_of = {}, {}
    for channel, layer_names in tracer.normalized.items():
        found = normalized_by.setdefault(int(group_of[channel]), [])
        found.extend(name for name in layer_names if name not in found)
    for channel, layer_name in tracer.heads.items():
        heads_of.setdefault(int(group_of[channel]), layer_name)
    groups = []
    for key, size in zip(group_keys.tolist(), sizes.tolist()):
        name = names[key]
        normalizers = tuple(normalized_by.get(key, ()))
        reason = reasons.get(key)
        if reason is None and normalizers and not hidden:
            listed = ", ".join(f"'{layer}'" for layer in normalizers[:3])
            more = f" and {len(normalizers) - 3} more" if len(normalizers) > 3 else ""
            verb = "normalises" if len(normalizers) == 1 else "normalise"
            reason = (
                f"{listed}{more} {verb} over its channels, so removing any changes the "
                "statistics (a transformer's hidden width: prune it with targets='hidden')"
            )
        groups.append(
            ChannelGroup(
                name=name,
                size=size,
                prunable=reason is None,
                reason=f"Group '{name}' is not prunable: {reason}." if reason is not None else "",
                members=tuple(members[key]),
                squeeze_excite_of=squeeze_excite.get(key),
                normalized_by=normalizers,
                heads_of=heads_of.get(key),
            )
        )
    roots_by_group = {
        names[key]: class_roots[start : start + size]
        for key, start, size in zip(group_keys, starts, sizes)
    }
    return ChannelGraph(groups, _Trace(roots, roots_by_group, tracer), tracer.inferred)


def _merge_members(members):
    """Folds members of one layer and role with equal positions into one."""
    merged = {}
    for member in members:
        key = (member.layer_name, member.role, member.positions, member.channels)
        if key in merged:
            previous = merged[key]
            merged[key] = dataclasses.replace(previous, weights=previous.weights + member.weights)
        else:
            merged[key] = member
    return list(merged.values())


def _squeeze_excite_links(members, names, gated):
    """Maps each squeeze-excite bottleneck group key to the name of the group it gates.

    A bottleneck S reads only channels of one group E (its producers'
    inputs) and its consumers write only channels of E, which E multiplies
    with itself (the gate).
    """
    groups_by_layer = {}  # (layer name, role) -> group keys
    for key, group_members in members.items():
        for member in group_members:
            groups_by_layer.setdefault((member.layer_name, member.role), set()).add(key)
    links = {}
    for key, group_members in members.items():
        read, written = set(), set()
        for member in group_members:
            if member.role == "output":
                read |= groups_by_layer.get((member.layer_name, "input"), set())
            elif member.role == "input":
                written |= groups_by_layer.get((member.layer_name, "output"), set())
        if len(read) == 1 and read == written and read <= gated:
            links[key] = names[next(iter(read))]
    return links


@dataclasses.dataclass
class _Trace:
    """What surgery needs besides the groups (private)."""

    roots: np.ndarray  # channel id -> root id
    roots_by_group: dict  # group name -> root id of each group channel
    tracer: Tracer
