"""The `Handler` base class, the handler registry and the handlers every graph needs.

A `Handler` is given one call node of an operation and a `Tracer`; it says
which channel ids come out of the call and which weight axes they index.
`handler_for` finds an operation's handler: users register theirs with
`register_handler` (layers by exact class, non-layer operations by class
name), tfprune's modules for keras-hub families with
`register_by_class_name`. `Freeze` and `Preserve` are the two handlers a
user most often registers; `INPUT` traces a model's inputs.
"""

import keras
import numpy as np

__all__ = [
    "INPUT",
    "Freeze",
    "Handler",
    "Preserve",
    "handler_for",
    "register_by_class_name",
    "register_handler",
]


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


def _width(tensor):
    """Size of a tensor's channel (last) axis; a scalar counts as one channel."""
    return tensor.shape[-1] if len(tensor.shape) else 1


def _attribute(layer, path):
    """`layer.a.b` for the dotted `path` "a.b", or None where an attribute is missing."""
    for name in path.split("."):
        layer = getattr(layer, name, None)
    return layer
