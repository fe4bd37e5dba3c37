"""Handlers: how channels flow through each kind of layer or operation.

A `Handler` is given one call node of an operation and a `Tracer`; it says
which channel ids come out of the call and which weight axes they index.
`tfprune.graph.build` looks handlers up in a registry that users extend with
`register_handler` (layers by exact class, non-layer operations such as the
`Add` that `x + 3.0` records by class name). The built-in handlers for Keras
layers and `keras.ops` operations are registered at the bottom of this file.
"""

import keras
import numpy as np

from tfprune import layers as _tfprune_layers

__all__ = [
    "ROLES",
    "ChannelMismatchError",
    "Freeze",
    "Handler",
    "Preserve",
    "Tracer",
    "channel_mixing_activation",
    "handler_for",
    "register_by_class_name",
    "register_activation",
    "register_handler",
]

ROLES = ("output", "input", "param")


class Handler:
    """Tells tfprune how channels flow through one kind of operation.

    Subclass it for your own layer and register it with `register_handler`.
    `trace` receives the call `node` (a Keras `Node`: `node.operation`,
    `node.arguments.args`, `node.input_tensors`, `node.outputs`) and a
    `Tracer`; it returns the channel ids of each output tensor's last axis and
    declares which weight axes they index. `resize` returns the layer config
    for a new output width (needed by producers such as `filters`/`units`).

    Example:

    ```python
    class ScaleHandler(tfprune.graph.Handler):
        # a layer `Scale` with one weight `scale` of shape (channels,)
        def trace(self, node, tracer):
            channels = tracer.channels(node.input_tensors[0])
            tracer.use(node.operation, node.operation.scale, -1, channels, "param")
            return [channels]

    tfprune.graph.register_handler(Scale, ScaleHandler())
    ```
    """

    def trace(self, node, tracer):
        """Returns the channel ids (1-D int arrays) of each output of `node`.

        Args:
            node: The Keras `Node` of one call of the operation.
            tracer: The `Tracer` collecting channels, couplings and weight use.

        Returns:
            List of NumPy int arrays, one per tensor in `node.outputs`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `trace`.")

    def resize(self, config, output_width):
        """Returns `config` updated for a new output width (default: unchanged).

        Args:
            config: Dict. A copy of the layer's `get_config()`.
            output_width: Int. The new size of the output's last axis.

        Returns:
            The layer config to rebuild the layer from.
        """
        return config

    def resize_for_weights(self, config, output_width, weight_shapes):
        """Returns the new config from the output width and the sliced weights' shapes.

        The surgery calls this one; the default is `resize(config,
        output_width)`. Override it when a config entry follows a weight axis
        rather than the output width (the number of attention heads).

        Args:
            config: Dict. A copy of the layer's `get_config()`.
            output_width: Int. The new size of the output's last axis.
            weight_shapes: List of tuples. The shapes of the layer's weights
                after the removed channels were cut, in `layer.weights` order.

        Returns:
            The layer config to rebuild the layer from.

        Example:

        ```python
        class HeadsHandler(tfprune.graph.Handler):
            def resize_for_weights(self, config, output_width, weight_shapes):
                return {**config, "num_heads": weight_shapes[0][1]}
        ```
        """
        return self.resize(config, output_width)

    def build(self, layer, input_shapes, node=None):
        """Builds a rebuilt `layer` for its new input shapes (default: `layer.build`).

        Override it for a layer whose `build` takes several shapes
        (`MultiHeadAttention.build(query_shape, value_shape, key_shape)`).

        Args:
            layer: The new, unbuilt layer.
            input_shapes: List of shape tuples, one per input tensor of the
                call, with the new channel widths.
            node: The original call's Keras `Node`, to tell the inputs apart.

        Example:

        ```python
        class TwoInputHandler(tfprune.graph.Handler):
            def build(self, layer, input_shapes, node=None):
                layer.build(*input_shapes)
        ```
        """
        layer.build(input_shapes[0] if len(input_shapes) == 1 else input_shapes)


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
    tfprune.handlers.ChannelMismatchError: cannot couple channel axes of sizes 1 and 2
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


_HANDLERS = {}


def register_handler(layer_class_or_op_name, handler):
    """Registers how channels flow through a layer class or a Keras operation.

    Layers are looked up by their exact class (a subclass of `Conv2D` is not
    assumed to behave like `Conv2D`); non-layer operations recorded in
    `model.operations` (e.g. what `x + 3.0` or `keras.ops.relu6(x)` creates)
    by their class name, such as `"Add"` or `"Relu6"`. A later registration
    replaces an earlier one.

    Args:
        layer_class_or_op_name: A `keras.layers.Layer` subclass, or a string
            naming a non-layer operation class.
        handler: A `Handler` instance.

    Raises:
        TypeError: If the key or the handler has the wrong type.

    Example:

    >>> tfprune.graph.register_handler(MyScale, MyScaleHandler())  # doctest: +SKIP
    """
    is_layer_class = isinstance(layer_class_or_op_name, type) and issubclass(
        layer_class_or_op_name, keras.layers.Layer
    )
    if not (is_layer_class or isinstance(layer_class_or_op_name, str)):
        raise TypeError(
            "`register_handler` expects a keras.layers.Layer subclass or an operation class name; "
            f"received: {layer_class_or_op_name!r}. Pass the class itself, e.g. `MyLayer`."
        )
    if not isinstance(handler, Handler):
        raise TypeError(
            "`register_handler` expects a tfprune.graph.Handler instance; received: "
            f"{handler!r}. Subclass tfprune.graph.Handler and pass an instance."
        )
    _HANDLERS[layer_class_or_op_name] = handler


# Built-in handlers of classes defined elsewhere (keras-hub's layers), by (module, class name):
# the family modules (tfprune.handlers_keras_hub, handlers_decoders, ...) fill it when they are
# imported, so that neither keras-hub nor a family module is imported to find one.
_BY_CLASS_NAME = {}


def register_by_class_name(table):
    """Registers built-in handlers of classes by `(module, class name)`, without importing the classes.

    tfprune's handler modules for keras-hub families call it once when they
    are imported; `handler_for` then finds the handler of any layer whose
    class has that module and name.

    Args:
        table: Dict `(module name, class name) -> Handler`.

    Raises:
        ValueError: If a key already has a handler of another type (two
            family modules claiming one class). One of the same type
            replaces it (a family module imported again).

    Example:

    >>> register_by_class_name({("my_package.layers", "Mixer"): Freeze("Mixer mixes channels")})
    >>> handler_for(type("Mixer", (), {"__module__": "my_package.layers"})()).reason
    'Mixer mixes channels'
    >>> del _BY_CLASS_NAME[("my_package.layers", "Mixer")]
    """
    for key, handler in table.items():
        if type(_BY_CLASS_NAME.get(key, handler)) is not type(handler):
            raise ValueError(
                f"Two built-in handlers of different types for class {key[1]!r} of module {key[0]!r}; "
                "for a handler of your own use `tfprune.graph.register_handler`, which takes precedence."
            )
        _BY_CLASS_NAME[key] = handler


def handler_for(operation):
    """The registered `Handler` of an operation, or None.

    Besides the registry, keras-hub layers with a built-in handler
    (`tfprune.handlers_keras_hub` and the other family modules, see
    `register_by_class_name`) are found by class, without importing
    keras-hub unless the model uses it.

    Args:
        operation: A Keras layer or operation.

    Returns:
        A `Handler`, or None.

    Example:

    >>> handler_for(keras.layers.Dense(4)) is not None
    True
    >>> handler_for(keras.layers.Layer()) is None
    True
    """
    if type(operation) in _HANDLERS:
        return _HANDLERS[type(operation)]
    if not isinstance(operation, keras.layers.Layer) and type(operation).__name__ in _HANDLERS:
        return _HANDLERS[type(operation).__name__]
    key = (type(operation).__module__, type(operation).__name__)
    if key in _BY_CLASS_NAME:
        return _BY_CLASS_NAME[key]
    if hasattr(operation, "stripped_layer"):
        return _TRAINING_LAYER
    return None


# Built-in handlers.


class _Input(Handler):
    def trace(self, node, tracer):
        outputs = []
        for tensor in node.outputs:
            width = tensor.shape[-1] if len(tensor.shape) > 1 else 1
            if width is None:
                # A last axis of any length (token ids or a padding mask over a sequence,
                # `Input((None,))`) is no weight's axis: one pinned channel stands for it
                # (an Embedding makes channels of its own). So does a per-sample scalar.
                width = 1
            channels = tracer.new_channels(width, node.operation.name)
            tracer.pin(channels, f"its channels are model input '{node.operation.name}'")
            outputs.append(channels)
        return outputs


INPUT = _Input()


class _TrainingLayer(Handler):
    """tfprune's training-time layers (STR layers, `prune_low_magnitude` wrappers): refused, strip first.

    An STR layer's threshold acts on the whole kernel (on each filter's norm
    over all its inputs in `mode="channel"`, and its shrinkage compensation
    on the kernel's norm), so removing channels would change which weights
    survive: the pruned layer would not compute what the trained one did.
    `tfprune.prune` strips such layers itself; `tfprune.graph.build` and
    `tfprune.surgery` are given models without them.
    """

    def trace(self, node, tracer):
        layer = node.operation
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is a tfprune training layer whose sparsity depends "
            "on its whole kernel, so its channels cannot be removed in place: call `tfprune.strip(model)` first "
            "(`tfprune.prune` and `tfprune.sensitivity` strip by themselves)."
        )


_TRAINING_LAYER = _TrainingLayer()


class Freeze(Handler):
    """Pins every channel in and out of an operation that cannot be resized.

    Register it for a layer whose channels must stay as they are; the groups
    touching it become not prunable, with `reason` in their explanation.

    Args:
        reason: String. Why, in a few words (e.g. `"'attention' mixes channels"`).

    Example:

    >>> tfprune.graph.register_handler(MyMixer, tfprune.graph.Freeze("MyMixer mixes channels"))  # doctest: +SKIP
    """

    def __init__(self, reason):
        self.reason = reason

    def trace(self, node, tracer):
        for tensor in node.input_tensors:
            tracer.pin(tracer.channels(tensor), self.reason)
        outputs = []
        for tensor in node.outputs:
            # A last axis of unknown size (a sequence, as for token ids) is no weight's
            # axis: one pinned channel stands for it, as for such model inputs.
            width = _width(tensor)
            if width == 0:  # an empty output (EdRec's decoder blocks return an empty cache): no channel
                outputs.append(np.zeros(0, dtype=np.int64))
                continue
            channels = tracer.new_channels(1 if width is None else width, node.operation.name)
            tracer.pin(channels, self.reason)
            outputs.append(channels)
        return outputs


class Preserve(Handler):
    """Passes the channels of the first input through, like an activation.

    Right for any weightless layer or operation that maps channel `c` of its
    first input to channel `c` of its output (activations, pooling, padding,
    dropout, elementwise functions).

    Example:

    >>> tfprune.graph.register_handler(MyActivation, tfprune.graph.Preserve())  # doctest: +SKIP
    """

    def trace(self, node, tracer):
        return [tracer.channels(node.input_tensors[0])]


# Activations (keras.activations names) that map channel `c` to channel `c`
# alone. The ones in _CHANNEL_MIXING_ACTIVATIONS normalise over (softmax,
# log_softmax, sparsemax) or split (glu) the channel axis: removing a channel,
# even a dead one, changes the values of the others.
_ELEMENTWISE_ACTIVATIONS = (
    "celu elu exponential gelu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh "
    "leaky_relu linear log_sigmoid mish relu relu6 selu sigmoid silu soft_shrink softplus "
    "softsign sparse_plus sparse_sigmoid squareplus swish tanh tanh_shrink threshold"
).split()
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax", "sparsemax", "glu")


def _activation_names(names):
    functions = {}
    for name in names:
        try:
            functions[keras.activations.get(name)] = name
        except ValueError:  # a name this Keras version does not have
            continue
    return functions


_ELEMENTWISE_FUNCTIONS = _activation_names(_ELEMENTWISE_ACTIVATIONS)
_MIXING_FUNCTIONS = _activation_names(_CHANNEL_MIXING_ACTIVATIONS)


# Element-wise activations of libraries tfprune does not import, by (module, name):
# keras-hub's BERT-family models use `gelu(x, approximate=True)` under this name.
_LIBRARY_ELEMENTWISE = {("keras_hub.src.utils.keras_utils", "gelu_approximate")}


def channel_mixing_activation(layer):
    """Why `layer`'s `activation` couples its output channels, or None.

    Args:
        layer: A Keras layer; layers without an `activation` attribute pass.

    Returns:
        None when the activation acts on each channel alone (relu, swish, ...
        or no activation), else a reason for `Freeze`: the activation mixes
        channels (softmax, log_softmax, sparsemax, glu), or it is a function
        tfprune does not know (it might).

    Example:

    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation="relu")) is None
    True
    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation="softmax", name="probs"))
    "'probs' applies activation 'softmax' over the channel axis"
    """
    activation = getattr(layer, "activation", None)
    if activation is None or activation in _ELEMENTWISE_FUNCTIONS:
        return None
    if (getattr(activation, "__module__", None), getattr(activation, "__name__", None)) in _LIBRARY_ELEMENTWISE:
        return None
    if activation in _MIXING_FUNCTIONS:
        return f"'{layer.name}' applies activation '{_MIXING_FUNCTIONS[activation]}' over the channel axis"
    from tfprune import handlers_inferred  # imports this module

    why = handlers_inferred.activation_reason(activation)
    if why is None:  # established numerically: each channel alone
        return None
    name = getattr(activation, "__name__", type(activation).__name__)
    return (
        f"'{layer.name}' applies activation '{name}', which tfprune does not know to act on "
        f"each channel alone ({why}; if it does: `tfprune.graph.register_activation({name})`)"
    )


def register_activation(function, mixes_channels=False):
    """Tells tfprune whether a custom activation function acts on each channel alone.

    A layer whose `activation` tfprune does not know freezes its output
    channels, since the function might couple them (as softmax does).
    Register an elementwise function (`f(x)[..., c]` depends on `x[..., c]`
    only) to let those channels be pruned.

    Args:
        function: The activation callable, as stored in `layer.activation`
            (for a model loaded from a file: the registered custom object).
        mixes_channels: Bool. True for a function that couples channels
            (normalises or reduces over the last axis). Defaults to `False`.

    Raises:
        TypeError: If `function` is not callable.

    Example:

    >>> @keras.saving.register_keras_serializable(package="example")
    ... def scaled_tanh(x):
    ...     return 1.7 * keras.ops.tanh(x)
    >>> tfprune.graph.register_activation(scaled_tanh)
    >>> tfprune.handlers.channel_mixing_activation(keras.layers.Dense(4, activation=scaled_tanh)) is None
    True
    """
    if not callable(function):
        raise TypeError(
            "`register_activation` expects the activation function itself, e.g. "
            f"`register_activation(my_activation)`. Received: function={function!r}"
        )
    name = getattr(function, "__name__", type(function).__name__)
    _MIXING_FUNCTIONS.pop(function, None)
    _ELEMENTWISE_FUNCTIONS.pop(function, None)
    (_MIXING_FUNCTIONS if mixes_channels else _ELEMENTWISE_FUNCTIONS)[function] = name


class _PerChannel(Handler):
    """Channel-preserving layers whose weights hold one value per channel.

    Every weight whose last axis has the channel count is sliced on it
    (BatchNormalization gamma/beta/moving stats, PReLU alpha). A
    BatchNormalization whose `axis` is not the channel axis is frozen: its
    statistics would then be shared across channels.
    """

    def trace(self, node, tracer):
        layer = node.operation
        channels = tracer.channels(node.input_tensors[0])
        rank = len(node.input_tensors[0].shape)
        axis = getattr(layer, "axis", -1)
        axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
        if axes != [rank - 1]:
            return Freeze(f"'{layer.name}' works over axes {axis}, not only the channel axis").trace(
                node, tracer
            )
        for weight in layer.weights:
            if len(weight.shape) and weight.shape[-1] == len(channels) and len(channels) > 1:
                tracer.use(layer, weight, -1, channels, "param")
        return [channels]


def _pin_if_mixing(layer, channels, tracer):
    """Pins a layer's output channels when its `activation` couples them."""
    reason = channel_mixing_activation(layer)
    if reason is not None:
        tracer.pin(channels, reason)
    return channels



class _Producer(Handler):
    """Conv/Dense: new output channels; input channels on `input_axis`."""

    def __init__(self, width_key, input_axis=-2, output_axis=-1):
        self.width_key = width_key
        self.input_axis = input_axis
        self.output_axis = output_axis

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        width = node.outputs[0].shape[-1]
        groups = getattr(layer, "groups", 1)
        if groups != 1 and groups == len(inputs) == width and self.output_axis == -1:
            # groups == input channels == filters: a depthwise convolution written as
            # a grouped Conv (keras-hub's MobileNet): channel c in, channel c out.
            tracer.use(layer, layer.kernel, -1, inputs, "param")
            tracer.use(layer, getattr(layer, "bias", None), 0, inputs, "param")
            return [_pin_if_mixing(layer, inputs, tracer)]
        outputs = tracer.new_channels(width, layer.name)
        if groups != 1:
            reason = f"'{layer.name}' is a grouped convolution (groups={layer.groups})"
            tracer.pin(inputs, reason)
            tracer.pin(outputs, reason)
            return [outputs]
        tracer.use(layer, layer.kernel, self.input_axis, inputs, "input")
        tracer.use(layer, layer.kernel, self.output_axis, outputs, "output")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        if config.get("groups", 1) != 1:  # the depthwise form: one group per channel
            config["groups"] = output_width
        config[self.width_key] = output_width
        return config


class _Depthwise(Handler):
    """Depthwise conv: output channel `c * M + m` comes from input channel c."""

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        outputs = np.repeat(inputs, layer.depth_multiplier)
        tracer.use(layer, layer.kernel, -2, inputs, "param")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "param")
        return [_pin_if_mixing(layer, outputs, tracer)]


class _Separable(Handler):
    """SeparableConv: a depthwise kernel, then a pointwise kernel (a producer)."""

    def trace(self, node, tracer):
        layer = node.operation
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(node.outputs[0].shape[-1], layer.name)
        tracer.use(layer, layer.depthwise_kernel, -2, inputs, "input")
        tracer.use(layer, layer.pointwise_kernel, -2, np.repeat(inputs, layer.depth_multiplier), "input")
        tracer.use(layer, layer.pointwise_kernel, -1, outputs, "output")
        tracer.use(layer, getattr(layer, "bias", None), 0, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        config["filters"] = output_width
        return config


def _width(tensor):
    """Size of a tensor's channel (last) axis; a scalar counts as one channel."""
    return tensor.shape[-1] if len(tensor.shape) else 1


def _is_constant_per_channel(value):
    """True for a non-tensor argument that broadcasts over several channels."""
    try:
        shape = np.shape(value)
    except ValueError:  # a ragged list: not an array constant
        return False
    return len(shape) > 0 and shape[-1] > 1


class _Elementwise(Handler):
    """Add/Multiply/... between tensors: equal channels are unified.

    Broadcasting is understood: an input whose channel axis has size 1 is not
    coupled, a `1x1xC` squeeze-excite gate is unified with the C channels it
    scales. A `gating` handler (a product of tensors) remembers the channels
    it multiplies, which is how squeeze-excite bottlenecks are recognised.
    """

    def __init__(self, gating=False):
        self.gating = gating

    def trace(self, node, tracer):
        tensors = node.input_tensors
        # Constants come as call arguments (`x * w`) or, for some operations
        # (`keras.ops.clip(x, low, high)`), as attributes of the operation.
        attributes = [
            value
            for value in vars(node.operation).values()
            if isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype"))
        ] if not isinstance(node.operation, keras.layers.Layer) else []
        for value in [*node.arguments.args, *node.arguments.kwargs.values(), *attributes]:
            if any(hasattr(item, "_keras_history") for item in keras.tree.flatten(value)):
                continue
            if _is_constant_per_channel(value):
                channels = tracer.channels(tensors[0])
                tracer.pin(channels, f"'{node.operation.name}' uses a constant with one value per channel")
        widest = max(tensors, key=lambda tensor: _width(tensor) or 0)
        channels = tracer.channels(widest)
        coupled = []
        for tensor in tensors:
            if len(channels) == 1 or _width(tensor) not in (1, None):
                coupled.append(tracer.channels(tensor))
            elif _width(tensor) is None:
                # A last axis of unknown size (a per-sample scalar `(batch,)`, one pinned
                # channel standing for it) broadcasts against these channels or matches
                # them, which only running the model tells: they stay as they are.
                tracer.pin(channels, f"'{node.operation.name}' combines them with a tensor whose last "
                           "axis has unknown size")
        if len({len(ids) for ids in coupled}) > 1:
            # Last axes of unknown size (masks over a sequence) stand for their tensors with
            # as many pinned channels as their producers made: nothing to line up, all stay.
            for ids in coupled:
                tracer.pin(ids, f"'{node.operation.name}' combines last axes of unknown size")
            return [channels]
        tracer.couple(*coupled)
        width = _width(node.outputs[0])
        if width is not None and width > 1 and len(channels) == 1:
            # Widened by a constant (`t * frequencies`, a `(batch, 1)` timestep times
            # `(1, F)`): the output's channels are the constant's, made here.
            reason = f"'{node.operation.name}' broadcasts them against a constant of {width} channels"
            tracer.pin(channels, reason)
            channels = tracer.new_channels(width, node.operation.name)
            tracer.pin(channels, reason)
        if self.gating and len(tensors) > 1:
            tracer._gates.update(channels.tolist())
        return [channels]


class _Concatenate(Handler):
    """Concatenate on the channel axis joins channel ids by offset."""

    def trace(self, node, tracer):
        tensors = node.input_tensors
        rank = len(tensors[0].shape)
        # Both the Concatenate layer and the `keras.ops.concatenate` operation keep `axis`.
        if node.operation.axis % rank == rank - 1:
            return [np.concatenate([tracer.channels(tensor) for tensor in tensors])]
        tracer.couple(*[tracer.channels(tensor) for tensor in tensors])
        return [tracer.channels(tensors[0])]


class _Reshape(Handler):
    """Flatten/Reshape: maps each channel to every position it lands on.

    The reshape is applied to an array of channel ids; it is supported when
    every position of the output's last axis holds a single channel (the
    channel axis is kept, or spatial axes are flattened into it).
    """

    def trace(self, node, tracer):
        source, target = node.input_tensors[0], node.outputs[0]
        channels = tracer.channels(source)
        source_shape, target_shape = tuple(source.shape[1:]), tuple(target.shape[1:])
        if None in source_shape or None in target_shape:
            return Freeze(f"'{node.operation.name}' reshapes a tensor of unknown size").trace(node, tracer)
        # A per-sample scalar (`Input(())`) is its one channel.
        ids = (np.broadcast_to(channels, source_shape) if source_shape else channels.reshape(())).reshape(target_shape)
        last_axis = ids.reshape(-1, target_shape[-1] if target_shape else 1)
        if target_shape and (last_axis == last_axis[0]).all():
            return [last_axis[0].copy()]
        return Freeze(f"'{node.operation.name}' reshapes channels into several axes").trace(node, tracer)

    def resize(self, config, output_width):
        if "target_shape" in config:
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (output_width,)
        return config


class _Permute(Handler):
    """Permute/transpose that keeps the channel axis last passes channels through."""

    def trace(self, node, tracer):
        operation = node.operation
        rank = len(node.input_tensors[0].shape)
        if hasattr(operation, "dims"):  # the Permute layer: dims of the non-batch axes, from 1
            last = tuple(operation.dims)[-1] == rank - 1
        else:  # keras.ops.transpose: axes of every axis, or None (reversed)
            axes = getattr(operation, "axes", None)
            last = axes is not None and tuple(axes)[-1] % rank == rank - 1
        if last:
            return [tracer.channels(node.input_tensors[0])]
        return Freeze(f"'{operation.name}' moves the channel axis").trace(node, tracer)


class _ReshapeOperation(_Reshape):
    """`keras.ops.reshape`: as the Reshape layer, and channels pass when the last axis keeps its size.

    In row-major order an element at channel `c` of a last axis of size `C`
    lands at flat index `k * C + c`, so a reshape whose output's last axis
    also has size `C` puts it at channel `c` again, whatever the other axes
    become (a sequence of tokens reshaped to an image and back). The target
    shape holds the width when it is written out (`(B, H, W, C)`): the
    surgery writes the new width there (`resize_operation`).
    """

    def trace(self, node, tracer):
        source, target = node.input_tensors[0], node.outputs[0]
        width = source.shape[-1] if len(source.shape) else None
        if width is not None and len(target.shape) and target.shape[-1] == width:
            return [tracer.channels(source)]
        return super().trace(node, tracer)

    def resize_operation(self, operation, output_width):
        """A new operation for a new output width, or None to keep this one."""
        shape = operation.newshape
        if not isinstance(shape, (list, tuple)) or not shape or shape[-1] == -1:
            return None
        return type(operation)(newshape=type(shape)([*shape[:-1], output_width]), name=operation.name)


class _Matmul(Handler):
    """`a @ b` (hand-written attention): `b`'s last axis passes, `a`'s is contracted.

    The output's last axis is `b`'s last axis, so its channels go through;
    `a`'s channels are summed over with `b`'s second-to-last axis, which
    tfprune does not follow, so they are pinned.
    """

    def trace(self, node, tracer):
        name = node.operation.name
        if len(node.input_tensors) != 2 or len(node.input_tensors[1].shape) < 2:
            return Freeze(f"'{name}' multiplies by a constant matrix or a vector").trace(node, tracer)
        left, right = node.input_tensors
        tracer.pin(tracer.channels(left), f"'{name}' contracts them in a matrix product")
        return [tracer.channels(right)]


def _einsum_specs(subscripts, count):
    """The input specs and the output spec of an einsum equation (implicit output written out)."""
    subscripts = subscripts.replace(" ", "")
    inputs, arrow, output = subscripts.partition("->")
    specs = inputs.split(",")
    if len(specs) != count:
        return None, None
    if not arrow:  # numpy's implicit form: the letters used once, in alphabetical order
        letters = "".join(specs).replace(".", "")
        ellipsis = "..." if "..." in inputs else ""
        output = ellipsis + "".join(sorted(letter for letter in set(letters) if letters.count(letter) == 1))
    return specs, output


class _Einsum(Handler):
    """`keras.ops.einsum`: channels follow the letters of the equation's last axes.

    The output's last letter, when it is the last letter of input tensors,
    passes their channels (coupled, as in an elementwise product: `"bqd,bd->bqd"`,
    or a weighted sum of values: `"bqk,bkd->bqd"`); otherwise the output's
    channels are made from some other axis and are new, pinned ones. An input's
    last letter that is contracted with the last axis of other inputs alone
    couples their channels (`"bqd,bkd->bqk"`: removing channel `d` of both
    removes one term of the sum, zero for a dead channel). A last letter that
    is summed within one input, moved to another axis of the output, or matched
    with a non-channel axis or a constant pins its channels. An equation that
    elides the channel axis (`"...->..."`), repeats a letter within one operand
    or makes a scalar is frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        name = operation.name
        operands = list(node.arguments.args)
        specs, output_spec = _einsum_specs(operation.subscripts, len(operands))
        output = node.outputs[0]
        why = (
            "could not be read" if specs is None
            else "elides the channel axis" if output_spec.endswith(".") or any(spec.endswith(".") for spec in specs)
            else "makes a scalar" if not output_spec
            else "repeats a letter within one operand"
            if any(len(set(spec.replace(".", ""))) != len(spec.replace(".", "")) for spec in specs)
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{name}' ({operation.subscripts!r}) {why}").trace(node, tracer)
        tensors = [(spec, operand) for spec, operand in zip(specs, operands) if isinstance(operand, keras.KerasTensor)]
        # Letters on an axis no channel id stands for: an inner axis of an input or of the
        # output, or any axis of a constant operand.
        elsewhere = set(output_spec[:-1])
        for spec, operand in zip(specs, operands):
            elsewhere |= set(spec[:-1] if isinstance(operand, keras.KerasTensor) else spec)
        by_letter = {}
        for spec, tensor in tensors:
            if spec:
                by_letter.setdefault(spec[-1], []).append(tensor)
        last = output_spec[-1]
        for letter, readers in by_letter.items():
            if letter == last:
                continue
            channels = [tracer.channels(tensor) for tensor in readers]
            why = (
                "moves them to another axis" if letter in output_spec
                else "contracts them with an axis that is not a channel axis" if letter in elsewhere
                else "sums over them" if len(readers) == 1
                else "contracts channel axes of different sizes" if len({_width(tensor) for tensor in readers}) != 1
                or _width(readers[0]) is None
                else None
            )  # fmt: skip
            if why is None:
                tracer.couple(*channels)
            else:
                for ids in channels:
                    tracer.pin(ids, f"'{name}' ({operation.subscripts!r}) {why}")
        width = _width(output)
        sources = [tensor for tensor in by_letter.get(last, []) if _width(tensor) == width]
        if not sources:
            # No input's channel axis becomes the output's: its channels are made here.
            for tensor in by_letter.get(last, []):
                tracer.pin(tracer.channels(tensor), f"'{name}' ({operation.subscripts!r}) broadcasts them")
            channels = tracer.new_channels(1 if width is None else width, name)
            tracer.pin(channels, f"'{name}' ({operation.subscripts!r}) makes them from an axis that is not a "
                       "channel axis")  # fmt: skip
            return [channels]
        # Inputs whose channel axis has size 1 broadcast; one of unknown size may not.
        unknown = [tensor for tensor in by_letter[last] if _width(tensor) is None and width is not None]
        channels = tracer.channels(sources[0])
        tracer.couple(*[tracer.channels(tensor) for tensor in sources])
        if unknown or last in elsewhere:
            tracer.pin(channels, f"'{name}' ({operation.subscripts!r}) matches them with an axis of another size "
                       "or that is not a channel axis")  # fmt: skip
        return [channels]


class _DotProductAttention(Handler):
    """`keras.ops.dot_product_attention(query, key, value)`: all three head widths stay.

    The output is a weighted sum of the values, head by head, so its last
    axis is the value's; the query's and key's are contracted with each
    other. Keras works out the output's width from the query's, so the value's
    cannot shrink alone either: every channel is pinned, and the output
    carries the value's (pinned) channels on to what reads it.
    """

    def trace(self, node, tracer):
        query, key, value = (list(node.input_tensors) + [None] * 3)[:3]
        if value is None or _width(value) != _width(node.outputs[0]):
            return Freeze(f"'{node.operation.name}' has no value input of its output's width").trace(node, tracer)
        for tensor in (query, key, value):
            tracer.pin(tracer.channels(tensor), f"'{node.operation.name}' contracts them in attention")
        return [tracer.channels(value)]


class _Rescaling(Handler):
    def trace(self, node, tracer):
        channels = tracer.channels(node.input_tensors[0])
        layer = node.operation
        if _is_constant_per_channel(layer.scale) or _is_constant_per_channel(layer.offset):
            tracer.pin(channels, f"'{layer.name}' rescales with one value per channel")
        return [channels]


class _OverAxis(Handler):
    """Softmax, normalisations and reductions: they compute over `axis`.

    Over the channel axis (or every axis, `axis=None`) they couple all
    channels: removing one, even a dead one, changes the values of the
    others (a softmax's denominator, a norm, a mean), so the channels are
    frozen. Over other axes every channel is computed on its own and passes
    through (`keras.ops.mean(x, axis=[1, 2])` is a global average pooling);
    weights, if any, are laid out along those other axes and are not sliced.
    """

    def __init__(self, verb):
        self.verb = verb

    def trace(self, node, tracer):
        operation = node.operation
        source, output = node.input_tensors[0], node.outputs[0]
        rank = len(source.shape)
        axis = getattr(operation, "axis", -1)
        axes = range(rank) if axis is None else axis if isinstance(axis, (list, tuple)) else [axis]
        if rank - 1 in [value % rank for value in axes] or _width(output) != _width(source):
            return Freeze(f"'{operation.name}' {self.verb} over the channel axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Normalization(Handler):
    """LayerNormalization / RMSNormalization over the channel axis alone.

    The channels pass through and the per-channel scale and offset (`gamma`,
    `beta`, `scale`) are sliced with them, but the statistics are computed
    over every channel: removing any, even one whose weights are zero,
    changes the normalised values of the others. The channels are declared
    normalised (`Tracer.normalize`), which keeps their group from being
    pruned unless asked for (`targets="hidden"`). Over other axes as well the
    layer is frozen; over other axes only, the channels pass untouched.
    """

    def trace(self, node, tracer):
        layer = node.operation
        source = node.input_tensors[0]
        rank = len(source.shape)
        axis = getattr(layer, "axis", -1)
        axes = sorted({a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])})
        channels = tracer.channels(source)
        if rank - 1 not in axes:  # per position: every channel is normalised on its own
            return [channels]
        if axes != [rank - 1]:
            return Freeze(f"'{layer.name}' normalises over the channel axis and axes {axes[:-1]}").trace(
                node, tracer
            )
        for weight in layer.weights:
            if tuple(weight.shape) == (len(channels),):
                tracer.use(layer, weight, 0, channels, "param")
        tracer.normalize(channels, layer.name)
        return [channels]


class _EinsumDense(Handler):
    """`EinsumDense`: a producer when its equation reads and writes the channel axis through the kernel.

    The input's last letter must be contracted with one kernel axis (those
    are the input channels) and the output's last letter must be the
    kernel's last letter alone (the new output channels, with the bias's last
    axis when `bias_axes` holds it; criteria read a producer's output
    channels on its kernel's last axis): `"abc,cd->abd"` (a Dense), keras-hub's
    `"btd,ndh->btnh"` and `"btnh,nhd->btd"` projections. Any other equation
    (the channel axis elided with `...` on the right, carried through to the
    output, or created from no kernel axis), a LoRA or quantized layer, is
    frozen with the reason.
    """

    @staticmethod
    def _specs(layer):
        inputs, output = layer.equation.split("->")
        input_spec, kernel_spec = inputs.split(",")
        return input_spec, kernel_spec, output

    def _refusal(self, layer):
        input_spec, kernel_spec, output_spec = self._specs(layer)
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return "is LoRA-enabled or quantized"
        if input_spec.endswith("...") or output_spec.endswith("..."):
            return f"elides its channel axis ('{layer.equation}')"
        channel, output = input_spec[-1], output_spec[-1]
        if channel not in kernel_spec or channel in output_spec:
            return f"does not contract its input channels with the kernel ('{layer.equation}')"
        if output in input_spec or not kernel_spec.endswith(output):
            return f"does not make its output channels from the kernel's last axis ('{layer.equation}')"
        return None

    def trace(self, node, tracer):
        layer = node.operation
        refusal = self._refusal(layer)
        if refusal is not None:
            return Freeze(f"'{layer.name}' {refusal}").trace(node, tracer)
        input_spec, kernel_spec, output_spec = self._specs(layer)
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, layer.kernel, kernel_spec.index(input_spec[-1]), inputs, "input")
        tracer.use(layer, layer.kernel, kernel_spec.index(output_spec[-1]), outputs, "output")
        if layer.bias is not None and output_spec[-1] in layer.bias_axes:
            tracer.use(layer, layer.bias, -1, outputs, "output")
        return [_pin_if_mixing(layer, outputs, tracer)]

    def resize(self, config, output_width):
        shape = config["output_shape"]
        if isinstance(shape, int):
            return {**config, "output_shape": output_width}
        return {**config, "output_shape": [*list(shape)[:-1], output_width]}


class _Embedding(Handler):
    """`Embedding`: a producer whose output channels index the table's second axis."""

    def trace(self, node, tracer):
        layer = node.operation
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return Freeze(f"'{layer.name}' is LoRA-enabled or quantized").trace(node, tracer)
        outputs = tracer.new_channels(layer.output_dim, layer.name)
        tracer.use(layer, layer.embeddings, 1, outputs, "output")
        return [outputs]

    def resize(self, config, output_width):
        return {**config, "output_dim": output_width}


class _ReversibleEmbedding(_Embedding):
    """`ReversibleEmbedding`: an Embedding forwards; called with `reverse=True`, a projection to the vocabulary.

    The reverse call reads the hidden channels on the embedding table's
    second axis (tied weights; the same axis as the forward output, so both
    calls share one group) or on `reverse_embeddings`' first axis, and makes
    one logit per vocabulary entry, which never shrink.
    """

    def trace(self, node, tracer):
        layer = node.operation
        arguments = node.arguments
        reverse = arguments.kwargs.get("reverse", arguments.args[1] if len(arguments.args) > 1 else False)
        if not reverse or getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return super().trace(node, tracer)
        inputs = tracer.channels(node.input_tensors[0])
        if layer.tie_weights:
            tracer.use(layer, layer.embeddings, 1, inputs, "input")
        else:
            tracer.use(layer, layer.reverse_embeddings, 0, inputs, "input")
        logits = tracer.new_channels(layer.input_dim, f"{layer.name}_logits")
        tracer.pin(logits, f"'{layer.name}' makes one logit per entry of its vocabulary")
        return [logits]

    def resize_for_weights(self, config, output_width, weight_shapes):
        # Two calls may give two output widths; the table's second axis is the hidden width.
        return {**config, "output_dim": int(weight_shapes[0][1])}


class _Weight(Handler):
    """`tfprune.layers.Weight`: a producer whose output channels are its weight's last axis."""

    def trace(self, node, tracer):
        layer = node.operation
        if not layer.shape:
            # Its input only places it in the graph (Gemma 4's `layer_scalar` reads the hidden
            # state): those channels are not its own, and stay free.
            scalar = tracer.new_channels(1, layer.name)
            tracer.pin(scalar, f"'{layer.name}' outputs a scalar")
            return [scalar]
        outputs = tracer.new_channels(layer.shape[-1], layer.name)
        tracer.use(layer, layer.weight, -1, outputs, "output")
        return [outputs]

    def resize(self, config, output_width):
        return {**config, "shape": [*list(config["shape"])[:-1], output_width]}


class _GetItem(Handler):
    """`x[key]` (`x[:, 0]`, a class token): passes the channels when the key keeps the channel axis whole.

    The key is applied to an array of channel ids; the channels pass only if
    every position of the result's last axis holds the input's channels in
    order. A key that picks or reorders channels is a constant of the graph,
    so those channels are frozen.
    """

    def trace(self, node, tracer):
        source = node.input_tensors[0]
        channels = tracer.channels(source)
        key = node.arguments.args[1] if len(node.arguments.args) > 1 else node.arguments.kwargs.get("key")
        key = tuple(key) if isinstance(key, list) else key
        # An unknown axis (a sequence of any length) gets a size every integer of the key fits.
        integers = [abs(int(part)) for part in (key if isinstance(key, tuple) else (key,))
                    if isinstance(part, (int, np.integer)) and not isinstance(part, bool)]  # fmt: skip
        unknown = max(integers, default=0) + 2
        shape = [unknown if size is None else size for size in source.shape[:-1]] + [len(channels)]
        try:
            picked = np.broadcast_to(channels, shape)[key]
        except (IndexError, TypeError, ValueError):
            picked = None
        if picked is not None and picked.ndim and picked.shape[-1] == len(channels):
            rows = picked.reshape(-1, len(channels))
            if (rows == channels).all():
                return [channels]
        why = "could not be checked to keep the channel axis whole" if picked is None else "indexes the channel axis"
        return Freeze(f"'{node.operation.name}' {why}").trace(node, tracer)


class _AxisInsertOrRemove(Handler):
    """`keras.ops.expand_dims` / `squeeze`: the channels pass when the channel axis stays the last axis.

    A new last axis (`expand_dims(mask, -1)`, to broadcast a padding mask
    over the channels) or a squeezed last axis moves the channel axis: those
    channels are frozen.
    """

    def __init__(self, verb):
        self.verb = verb

    def trace(self, node, tracer):
        operation, source, output = node.operation, node.input_tensors[0], node.outputs[0]
        axis = operation.axis
        axes = (
            list(range(len(source.shape))) if axis is None
            else list(axis) if isinstance(axis, (list, tuple)) else [axis]
        )  # fmt: skip
        rank = len(output.shape) if self.verb == "adds" else len(source.shape)
        if rank and (rank - 1) in [value % rank for value in axes]:
            return Freeze(f"'{operation.name}' {self.verb} the last axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Pad(Handler):
    """`keras.ops.pad`: passes the channels when the channel axis is not padded."""

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        if tuple(operation.pad_width[-1]) != (0, 0):
            return Freeze(f"'{operation.name}' pads the channel axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Stack(Handler):
    """`keras.ops.stack`: along a new axis before the last, channel `c` of every input is channel `c` of the output.

    The inputs' channels are coupled (one group, as in a sum) and pass; a
    constant among them holds one value per channel, so they are pinned.
    Along a new last axis the output's channels are the stacked inputs: the
    inputs' channels are pinned and the output's are new, pinned ones.
    """

    def trace(self, node, tracer):
        operation = node.operation
        output = node.outputs[0]
        rank = len(output.shape)
        if operation.axis % rank == rank - 1:
            return Freeze(f"'{operation.name}' stacks its inputs along a new last axis").trace(node, tracer)
        items = node.arguments.args[0] if node.arguments.args else node.arguments.kwargs["x"]
        tensors = [item for item in items if isinstance(item, keras.KerasTensor)]
        channels = [tracer.channels(tensor) for tensor in tensors]
        tracer.couple(*channels)
        if len(tensors) != len(items):
            tracer.pin(channels[0], f"'{operation.name}' stacks them with a constant")
        return [channels[0]]


class _Tile(Handler):
    """`keras.ops.tile`: channels pass when the last axis is repeated once (a token copied over the batch).

    Repeating the channel axis puts every channel at several positions of a
    wider axis, whose width the call holds: those channels are frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        repeats = operation.repeats
        last = repeats if isinstance(repeats, int) else list(repeats)[-1] if len(repeats) else 1
        source = node.input_tensors[0]
        if isinstance(last, (int, np.integer)) and int(last) == 1 and len(source.shape):
            return [tracer.channels(source)]
        return Freeze(f"'{operation.name}' repeats the channel axis").trace(node, tracer)


class _TopK(Handler):
    """`keras.ops.top_k`: picks entries of the last axis by their values, so which channel lands where depends on the data.

    The input's channels are pinned, and both outputs (values and indices)
    have new, pinned channels of their own.
    """

    def trace(self, node, tracer):
        return Freeze(f"'{node.operation.name}' picks entries of the channel axis by value").trace(node, tracer)


class _Map(Handler):
    """`keras.ops.map(function, xs)`: runs a Python function on each entry of the first axis.

    What the function does to the channels is not recorded in the graph (its
    operations run inside the map), so every channel in and out is pinned.
    """

    def trace(self, node, tracer):
        function = node.arguments.args[0] if node.arguments.args else None
        name = getattr(function, "__name__", "a function")
        return Freeze(f"'{node.operation.name}' maps {name} over the batch, which the graph does not record").trace(
            node, tracer
        )


class _Split(Handler):
    """`keras.ops.split`: over another axis every piece keeps the channels.

    Over the channel axis into `n` equal sections (CSPNet splits a stage in
    two halves), channel `j` of every section is one channel: they are
    removed together, so the sections stay equal and the call is unchanged.
    Split at given indices, the sizes are part of the call, so those
    channels are frozen and each piece carries its slice.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        channels = tracer.channels(source)
        if operation.axis % len(source.shape) != len(source.shape) - 1:
            return [channels for _ in node.outputs]
        sections = operation.indices_or_sections
        if isinstance(sections, (int, np.integer)) and not isinstance(sections, bool):
            pieces = [piece.copy() for piece in np.split(channels, int(sections))]
            tracer.couple(*pieces)
            return pieces
        tracer.pin(channels, f"'{operation.name}' splits the channel axis into fixed pieces")
        bounds = np.cumsum([0] + [_width(tensor) for tensor in node.outputs])
        return [channels[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


class _Unstack(Handler):
    """`keras.ops.unstack`: over another axis every piece keeps the channels (Swin's q, k, v).

    Over the channel axis each piece is one channel and loses the axis: frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        if operation.axis % len(source.shape) == len(source.shape) - 1:
            return Freeze(f"'{operation.name}' unstacks the channel axis").trace(node, tracer)
        channels = tracer.channels(source)
        return [channels for _ in node.outputs]


class _Take(Handler):
    """`keras.ops.take(x, indices, axis)`: rows gathered over another axis keep `x`'s channels.

    Swin gathers its relative position bias per head from a table whose last
    axis is the heads. Gathering over the channel axis (or a flattened `x`)
    picks fixed channels: frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.arguments.args[0] if node.arguments.args else None
        if (
            not isinstance(source, keras.KerasTensor)
            or operation.axis is None
            or operation.axis % len(source.shape) == len(source.shape) - 1
        ):
            return Freeze(f"'{operation.name}' gathers over the channel axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Activation(Handler):
    """The `Activation` layer: passes channels unless its function mixes them."""

    def trace(self, node, tracer):
        reason = channel_mixing_activation(node.operation)
        if reason is not None:
            return Freeze(reason).trace(node, tracer)
        return [tracer.channels(node.input_tensors[0])]


class _LayerScale(Handler):
    """ConvNeXt's `LayerScale`: `x * gamma`, one `gamma` per channel; `projection_dim` is the width."""

    def trace(self, node, tracer):
        layer = node.operation
        channels = tracer.channels(node.input_tensors[0])
        if layer.gamma.shape != (len(channels),):
            return Freeze(f"'{layer.name}' has {layer.gamma.shape} scales for {len(channels)} channels").trace(
                node, tracer
            )
        tracer.use(layer, layer.gamma, 0, channels, "param")
        return [channels]

    def resize(self, config, output_width):
        return {**config, "projection_dim": output_width}


class _MultiHeadAttention(Handler):
    """`keras.layers.MultiHeadAttention`: heads, and the widths in and out.

    Head `h` is slice `h` of the head axis of the query, key and value
    kernels and biases (`(width, heads, dim)` and `(heads, dim)`) and of the
    first axis of the output projection's kernel (`(heads, dim, width)`); the
    heads are a channel group of their own (`ChannelGroup.heads_of`), and
    removing heads rebuilds the layer with a smaller `num_heads`. Removing a
    head whose output-projection rows are zero leaves the outputs unchanged,
    as the heads are summed through that projection. The query, key and value
    channels are read on the first axis of their kernels, and the output
    channels are made by the output projection (its kernel's last axis and
    its bias), like a Dense layer's units; in a transformer they join the
    residual stream, which LayerNormalization normalises (`targets="hidden"`).
    A layer with `use_gate=True`, a multi-axis `output_shape`, or called with
    `return_attention_scores=True`, is frozen as a whole.
    """

    def trace(self, node, tracer):
        layer = node.operation
        query, value, key = attention_inputs(node)
        output_shape = getattr(layer, "_output_shape", None)
        multi_axis_output = isinstance(output_shape, (list, tuple)) and len(output_shape) != 1
        why = (
            "is a gated attention layer (use_gate=True)" if getattr(layer, "_use_gate", False)
            else "returns its attention scores" if len(node.outputs) != 1
            else f"has a multi-axis output_shape {tuple(output_shape)}" if multi_axis_output
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        heads = tracer.new_channels(layer.num_heads, f"{layer.name}_heads")
        for channel in heads.tolist():
            tracer._heads[channel] = layer.name
        for dense, tensor in ((layer._query_dense, query), (layer._key_dense, key if key is not None else value),
                              (layer._value_dense, value)):  # fmt: skip
            tracer.use(layer, dense.kernel, 0, tracer.channels(tensor), "input")
            tracer.use(layer, dense.kernel, 1, heads, "output")
            tracer.use(layer, getattr(dense, "bias", None), 0, heads, "output")
        tracer.use(layer, layer._output_dense.kernel, 0, heads, "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, layer._output_dense.kernel, -1, outputs, "output")
        tracer.use(layer, getattr(layer._output_dense, "bias", None), 0, outputs, "output")
        return [outputs]

    def resize_for_weights(self, config, output_width, weight_shapes):
        query_width, num_heads = (int(size) for size in weight_shapes[0][:2])
        config = {**config, "num_heads": num_heads}
        if config.get("output_shape") is not None or output_width != query_width:
            config["output_shape"] = output_width
        return config

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        query, value, key = attention_inputs(node)
        layer.build(shapes[id(query)], shapes[id(value)], None if key is None else shapes[id(key)])


def attention_inputs(node):
    """The query, value and key (or None) tensors of a `MultiHeadAttention` call node.

    Taken from the call's arguments, not from their order among the node's
    tensors, where an `attention_mask` may come third.

    Args:
        node: The Keras `Node` of one call of the layer.

    Returns:
        Tuple `(query, value, key)` of `KerasTensor`s; `key` is None when the
        call gave none (the value is then the key).
    """
    args, kwargs = node.arguments.args, node.arguments.kwargs
    query = args[0] if args else kwargs["query"]
    value = args[1] if len(args) > 1 else kwargs["value"]
    key = args[2] if len(args) > 2 else kwargs.get("key")
    return query, value, key


def _application_handlers(elementwise):
    """Handlers for the private layers of keras.applications models.

    Keras exports no public name for them, so they are looked up in the
    modules that define them (and skipped if a Keras version moves them):
    ConvNeXt's `LayerScale` and InceptionResNetV2's `CustomScaleLayer`
    (`inputs[0] + inputs[1] * scale`, an elementwise sum of two tensors).
    """
    found = {}
    try:
        from keras.src.applications.convnext import LayerScale

        found[LayerScale] = _LayerScale()
    except ImportError:
        pass
    try:
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

        found[CustomScaleLayer] = elementwise
    except ImportError:
        pass
    return found


_PRESERVE = Preserve()
_ELEMENTWISE = _Elementwise()
ELEMENTWISE = _ELEMENTWISE  # what `handlers_inferred` hands out for a per-channel rule
_GATING = _Elementwise(gating=True)
_layers = keras.layers
_LAYER_HANDLERS = {
    _layers.Conv1D: _Producer("filters"),
    _layers.Conv2D: _Producer("filters"),
    _layers.Conv3D: _Producer("filters"),
    _layers.Conv1DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Conv2DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Conv3DTranspose: _Producer("filters", input_axis=-1, output_axis=-2),
    _layers.Dense: _Producer("units", input_axis=0, output_axis=1),
    _layers.EinsumDense: _EinsumDense(),
    _layers.ReversibleEmbedding: _ReversibleEmbedding(),
    _layers.DepthwiseConv1D: _Depthwise(),
    _layers.DepthwiseConv2D: _Depthwise(),
    _layers.SeparableConv1D: _Separable(),
    _layers.SeparableConv2D: _Separable(),
    _layers.BatchNormalization: _PerChannel(),
    _layers.PReLU: _PerChannel(),
    _layers.Activation: _Activation(),
    _layers.Softmax: _OverAxis("normalises"),
    _layers.LayerNormalization: _Normalization(),
    _layers.RMSNormalization: _Normalization(),
    _layers.Embedding: _Embedding(),
    _tfprune_layers.Weight: _Weight(),
    _layers.UnitNormalization: _OverAxis("normalises"),
    _layers.Add: _ELEMENTWISE,
    _layers.Subtract: _ELEMENTWISE,
    _layers.Multiply: _GATING,
    _layers.Maximum: _ELEMENTWISE,
    _layers.Minimum: _ELEMENTWISE,
    _layers.Average: _ELEMENTWISE,
    _layers.Concatenate: _Concatenate(),
    _layers.MultiHeadAttention: _MultiHeadAttention(),
    _layers.Flatten: _Reshape(),
    _layers.Reshape: _Reshape(),
    _layers.Rescaling: _Rescaling(),
    _layers.Normalization: Freeze("Normalization keeps per-channel statistics tfprune does not slice"),
    _layers.GroupNormalization: Freeze("GroupNormalization ties channels into groups"),
}
for _name in (
    "ReLU LeakyReLU ELU Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D "
    "GaussianNoise GaussianDropout AlphaDropout ActivityRegularization Identity "
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D "
    "UpSampling1D UpSampling2D UpSampling3D "
    "MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D "
    "GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D "
    "GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D"
).split():
    _LAYER_HANDLERS[getattr(_layers, _name)] = _PRESERVE
# Preprocessing and augmentation layers (identities at inference, or spatial
# maps): each output channel is its input channel in training mode too.
# Keras versions without one of them skip it.
for _name in (
    "Resizing CenterCrop Permute RandomFlip RandomRotation RandomZoom RandomTranslation RandomCrop "
    "RandomShear RandomPerspective RandomElasticTransform RandomErasing RandomGaussianBlur "
    "RandomContrast RandomBrightness RandomInvert RandomPosterization RandomSharpness "
    "Solarization AutoContrast MixUp CutMix"
).split():
    if hasattr(_layers, _name):
        _LAYER_HANDLERS[getattr(_layers, _name)] = _Permute() if _name == "Permute" else _PRESERVE
for _name in "RandomHue RandomSaturation RandomGrayscale RandomColorJitter RandomColorDegeneration AugMix RandAugment".split():
    if hasattr(_layers, _name):
        _LAYER_HANDLERS[getattr(_layers, _name)] = Freeze(
            f"{_name} works on the three colour channels of an image together"
        )
# Non-layer operations (what `x + 3.0`, `keras.ops.relu6(x)` record) by class name.
# One-tensor operations go through `_Elementwise` too, so that a per-channel
# constant argument (`keras.ops.clip(x, low, high)` with one bound per
# channel) pins the channels instead of being left at its old length.
for _name in (
    "Relu Relu6 Sigmoid HardSigmoid HardSilu Silu Gelu Elu Selu Celu LeakyRelu Softplus Softsign "
    "Tanh TanhShrink HardTanh SoftShrink HardShrink LogSigmoid Squareplus SparsePlus SparseSigmoid "
    "Threshold Exp Expm1 Log Log1p Abs Absolute Negative Square Sqrt Rsqrt Reciprocal Cast Clip "
    "Add Subtract Divide TrueDivide Maximum Minimum Power "
    "Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot"
).split():
    _LAYER_HANDLERS[_name] = _ELEMENTWISE
for _name in (
    "ReLU Sin Cos Tan Sinh Cosh Arcsin Arccos Arctan Arcsinh Arccosh Arctanh Erf Erfinv "
    "Sign Floor Ceil Round Trunc Exp2 Log2 Log10 IsNan IsInf IsFinite NanToNum Real Imag Conjugate "
    "FloorDivide Mod Arctan2 Logaddexp Where"
).split():  # `keras.activations.relu(x)` records ReLU; the rest are keras.ops math
    _LAYER_HANDLERS[_name] = _ELEMENTWISE
_LAYER_HANDLERS["Multiply"] = _GATING
for _name, _verb in (
    ("Softmax LogSoftmax Sparsemax Normalize LayerNorm RMSNorm", "normalises"),
    ("Sum Mean Max Min Amax Amin Prod Any All Var Std Norm Logsumexp Argmax Argmin", "reduces"),
    ("Cumsum Cumprod Sort", "orders or accumulates"),
    ("Glu", "splits"),
):
    for _op_name in _name.split():
        _LAYER_HANDLERS[_op_name] = _OverAxis(_verb)
_LAYER_HANDLERS["Concatenate"] = _Concatenate()
_LAYER_HANDLERS["Pad"] = _Pad()
_LAYER_HANDLERS["Transpose"] = _Permute()
_LAYER_HANDLERS["Reshape"] = _ReshapeOperation()
_LAYER_HANDLERS["Matmul"] = _Matmul()
_LAYER_HANDLERS["Einsum"] = _Einsum()
_LAYER_HANDLERS["DotProductAttention"] = _DotProductAttention()
_LAYER_HANDLERS["GetItem"] = _GetItem()
_LAYER_HANDLERS["Split"] = _Split()
_LAYER_HANDLERS["Stack"] = _Stack()
_LAYER_HANDLERS["Tile"] = _Tile()
_LAYER_HANDLERS["TopK"] = _TopK()
_LAYER_HANDLERS["Map"] = _Map()
_LAYER_HANDLERS["Unstack"] = _Unstack()
_LAYER_HANDLERS["Take"] = _Take()
_LAYER_HANDLERS["ExpandDims"] = _AxisInsertOrRemove("adds")
_LAYER_HANDLERS["Squeeze"] = _AxisInsertOrRemove("removes")
_LAYER_HANDLERS.update(_application_handlers(_ELEMENTWISE))
_HANDLERS.update(_LAYER_HANDLERS)
del _name, _op_name, _verb, _layers
