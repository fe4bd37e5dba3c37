"""The channel tracer: union-find over channel ids, filled by the handlers.

`tfprune.graph.build` walks a model and hands each call to its handler with
one `Tracer`. A channel id is an int; a tensor's last axis is a 1-D array of
ids. Handlers make ids (`new_channels`), couple them (`couple`: the same
channel seen in two places), pin them (`pin`: not removable) and say which
weight axes they index (`use`). `tfprune.graph` then reads the trace (`root`,
`segments`, `pins`, `uses`, ...) to form the channel groups, and
`tfprune.surgery` reads `uses` to slice the weights.
"""

import numpy as np

__all__ = ["ROLES", "ChannelMismatchError", "Tracer"]

ROLES = ("output", "input", "param")


class ChannelMismatchError(ValueError):
    """A handler coupled two channel axes of different sizes.

    `tfprune.graph.build` catches it and refuses the model naming the
    operation whose handler did it.

    Args:
        sizes: Ints. The sizes of the axes.

    Example:

    >>> tracer = tfprune.graph.Tracer()
    >>> tracer.couple(tracer.new_channels(1, "a"), tracer.new_channels(2, "b"))
    Traceback (most recent call last):
    ...
    tfprune.tracer.ChannelMismatchError: cannot couple channel axes of sizes 1 and 2
    """

    def __init__(self, *sizes):
        self.sizes = sizes
        super().__init__(f"cannot couple channel axes of sizes {' and '.join(map(str, sizes))}")


class Tracer:
    """Collects channel ids while `build` walks a model (passed to handlers).

    A channel id is an int; a tensor's last axis is a 1-D array of ids.

    Example:

    ```python
    def trace(self, node, tracer):
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(node.operation.units, node.operation.name)
        tracer.use(node.operation, node.operation.kernel, 0, inputs, "input")
        tracer.use(node.operation, node.operation.kernel, 1, outputs, "output")
        return [outputs]
    ```
    """

    def __init__(self):
        self._parent = []  # union-find over channel ids
        self._segments = []  # (first id, count, name): ids created together
        self._pins = {}  # channel id -> reason it may not be removed
        self._tensors = {}  # id(KerasTensor) -> channel ids of its last axis
        self._uses = {}  # (layer name, weight index, axis) -> [role, ids]
        self._gates = set()  # ids that gate a larger tensor (squeeze-excite)
        self._normalized = {}  # channel id -> names of the layers normalising over it
        self._heads = {}  # channel id -> the attention layer whose head it is
        self.inferred = {}  # operation name -> channel rule established numerically
        # How grouped-query attention layers make their head groups (tfprune.handlers_decoders).
        self.gqa = "query_heads"

    def channels(self, tensor):
        """Returns the channel ids of a traced tensor's last axis.

        Args:
            tensor: A `KerasTensor` of the model.

        Returns:
            1-D NumPy int array.
        """
        return self._tensors[id(tensor)]

    def new_channels(self, count, name):
        """Creates `count` fresh channel ids (a producer's output channels).

        Args:
            count: Int. Number of channels.
            name: String. The producer's name (names the group).

        Returns:
            1-D NumPy int array of new ids.
        """
        if count is None:
            raise ValueError(
                f"Operation '{name}' outputs a tensor whose channel axis has unknown size; "
                "give the model inputs a fully known channel dimension."
            )
        first = len(self._parent)
        self._parent.extend(range(first, first + count))
        self._segments.append((first, count, name))
        return np.arange(first, first + count)

    def couple(self, *channel_arrays):
        """Declares that equal positions of the arrays are the same channel.

        Args:
            *channel_arrays: 1-D int arrays of equal length.

        Raises:
            ChannelMismatchError: A `ValueError`, if the arrays differ in
                length (`tfprune.graph.build` adds the operation's name).
        """
        if not channel_arrays:
            return
        first = channel_arrays[0]
        for other in channel_arrays[1:]:
            if len(other) != len(first):
                raise ChannelMismatchError(len(first), len(other))
            for left, right in zip(first.tolist(), other.tolist()):
                self._union(left, right)

    def pin(self, channels, reason):
        """Marks channels (and so their groups) as not removable.

        Args:
            channels: 1-D int array of channel ids.
            reason: String. One sentence saying why, shown in `group.reason`.
        """
        for channel in np.asarray(channels).tolist():
            self._pins.setdefault(channel, reason)

    def normalize(self, channels, layer_name):
        """Declares that `layer_name` normalises over `channels` (LayerNormalization).

        Removing one such channel changes the normalisation statistics and so
        the values of the others: their group is prunable only when the
        graph is built with `hidden=True` (`tfprune.prune(...,
        targets="hidden")`), and `ChannelGroup.normalized_by` names the layers.

        Args:
            channels: 1-D int array of channel ids.
            layer_name: String. The normalising layer.

        Example:

        ```python
        class MyNormHandler(tfprune.graph.Handler):
            # a layer normalising over its input's last axis, with a (channels,) scale
            def trace(self, node, tracer):
                channels = tracer.channels(node.input_tensors[0])
                tracer.use(node.operation, node.operation.scale, 0, channels, "param")
                tracer.normalize(channels, node.operation.name)
                return [channels]
        ```
        """
        for channel in np.asarray(channels).tolist():
            names = self._normalized.setdefault(channel, [])
            if layer_name not in names:
                names.append(layer_name)

    def use(self, layer, weight, axis, channels, role):
        """Declares that axis `axis` of `weight` is indexed by `channels`.

        Using the same weight axis twice (a shared layer) couples the ids.

        Args:
            layer: The `keras.layers.Layer` owning the weight.
            weight: A `keras.Variable` of `layer` (or None: ignored, e.g. no bias).
            axis: Int. The sliced axis (negative counts from the end).
            channels: 1-D int array, one id per position along the axis.
            role: String. One of `"output"`, `"input"`, `"param"`.

        Raises:
            ValueError: If `role` is unknown or the sizes do not match.
        """
        if weight is None:
            return
        if role not in ROLES:
            raise ValueError(f"Unknown member role {role!r}; use one of {ROLES}.")
        index = [id(variable) for variable in layer.weights].index(id(weight))
        axis = axis % len(weight.shape)
        if weight.shape[axis] != len(channels):
            raise ValueError(
                f"Layer '{layer.name}': weight '{weight.path}' has {weight.shape[axis]} entries "
                f"on axis {axis} but {len(channels)} channels were given."
            )
        key = (layer.name, index, axis)
        if key in self._uses:
            self.couple(self._uses[key][1], channels)
        else:
            self._uses[key] = [role, np.asarray(channels), weight.path]

    # Recording, for `tfprune.graph.build` and the handlers.

    def record(self, tensor, channels):
        """Records the channel ids of a traced tensor's last axis (what `channels(tensor)` returns).

        `tfprune.graph.build` calls it with what a handler's `trace` returned.

        Args:
            tensor: A `KerasTensor` of the model.
            channels: 1-D int array, one id per position of the last axis.
        """
        self._tensors[id(tensor)] = np.asarray(channels, dtype=np.int64)

    def mark_heads(self, channels, layer_name):
        """Declares that `channels` are the attention heads of `layer_name` (`ChannelGroup.heads_of`).

        Args:
            channels: 1-D int array of channel ids, one per head.
            layer_name: String. The attention layer (or `layer/part`).
        """
        for channel in np.asarray(channels).tolist():
            self._heads[channel] = layer_name

    def mark_gates(self, channels):
        """Declares that `channels` gate a larger tensor (a squeeze-excite block's multiplier).

        Args:
            channels: 1-D int array of channel ids.
        """
        self._gates.update(np.asarray(channels).tolist())

    # Reading the trace, for `tfprune.graph.build` (groups) and `tfprune.surgery` (slices).

    @property
    def channel_count(self):
        """Int. The number of channel ids made so far (ids are `0 .. channel_count - 1`)."""
        return len(self._parent)

    def root(self, channel):
        """The representative id of the channels coupled with `channel` (the oldest of them).

        Args:
            channel: Int. A channel id.

        Returns:
            Int. Equal for two ids exactly when they were coupled.

        Example:

        >>> tracer = Tracer()
        >>> first, second = tracer.new_channels(2, "a"), tracer.new_channels(2, "b")
        >>> tracer.couple(first, second)
        >>> tracer.root(3), tracer.root(1)
        (1, 1)
        """
        return self._find(channel)

    @property
    def segments(self):
        """List of `(first id, count, name)`: the ids made by each `new_channels` call, in order."""
        return self._segments

    @property
    def pins(self):
        """Dict channel id -> the reason it may not be removed (the first one given)."""
        return self._pins

    @property
    def uses(self):
        """Dict `(layer name, weight index, axis)` -> `[role, channel ids, weight path]`.

        One entry per weight axis a handler declared with `use`; the weight
        index is the position in `layer.weights`.
        """
        return self._uses

    @property
    def gates(self):
        """Set of the channel ids declared with `mark_gates`."""
        return self._gates

    @property
    def normalized(self):
        """Dict channel id -> names of the layers normalising over it (see `normalize`)."""
        return self._normalized

    @property
    def heads(self):
        """Dict channel id -> the attention layer whose head it is (see `mark_heads`)."""
        return self._heads

    def _find(self, channel):
        parent = self._parent
        root = channel
        while parent[root] != root:
            root = parent[root]
        while parent[channel] != root:
            parent[channel], channel = root, parent[channel]
        return root

    def _union(self, left, right):
        left, right = self._find(left), self._find(right)
        if left != right:
            # The older id stays the root, so a group keeps its first producer.
            self._parent[max(left, right)] = min(left, right)
