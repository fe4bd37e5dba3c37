"""Handlers of Keras layers and operations that keep channels in place.

Per-channel weights (BatchNormalization, PReLU), elementwise combinations
(`Add`, `Multiply`, `x + 3.0`), concatenation, operations over the channel
axis (softmax, reductions), normalisation (LayerNormalization), token
embeddings, tfprune's `Weight` and the unexported layers of
`keras.applications` models.
"""

import keras
import numpy as np

from tfprune._keras import functional
from tfprune._keras import layers as keras_layers
from tfprune.handlers_base import Freeze, Handler, _width

__all__ = []  # handlers registered by `tfprune.handlers`; nothing public of their own


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
            if any(functional.has_producer(item) for item in keras.tree.flatten(value)):
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
            tracer.mark_gates(channels)
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


def _application_handlers(elementwise):
    """Handlers for the private layers of keras.applications models.

    Keras exports no public name for them (`keras_layers.application_layers`
    finds them, skipping any a Keras version moved): ConvNeXt's `LayerScale`
    and InceptionResNetV2's `CustomScaleLayer` (`inputs[0] + inputs[1] *
    scale`, an elementwise sum of two tensors).
    """
    handlers = {"LayerScale": _LayerScale(), "CustomScaleLayer": elementwise}
    return {layer_class: handlers[name] for name, layer_class in keras_layers.application_layers().items()}
