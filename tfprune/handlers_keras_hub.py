"""Built-in handlers for keras-hub layers that hold weights of their own.

keras-hub builds its models from subclassed layers. Those whose `call` only
runs other layers and `keras.ops` are inlined by `tfprune.graph.flatten`;
the ones below hold weights themselves, so they stay one layer and need a
handler to let their channels shrink. `tfprune.handlers.handler_for` looks
them up here by class, only for layers of a model that uses keras-hub.
"""

import types

import keras
import numpy as np

from tfprune import _utils, handlers, handlers_decoders, handlers_gemma
from tfprune.handlers import (
    Freeze,
    Handler,
    _MultiHeadAttention,
    _width,
    channel_mixing_activation,
    register_handler,
)

__all__ = ["INLINED_WITH_OWN_WEIGHTS", "handler_for", "inlined_with_own_weights", "recordable_moonshine_attention"]


def _sub_layers(layer):
    """The layers held in `layer`'s attributes (and theirs), depth first."""
    found, stack = [], [value for value in vars(layer).values()]
    while stack:
        value = stack.pop(0)
        if isinstance(value, keras.layers.Layer) and all(value is not seen for seen in found):
            found.append(value)
            stack.extend(vars(value).values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return found


def _own_tables(layer, width, skip=()):
    """Float weights of `layer` (sub-layers included) whose last axis has `width` entries."""
    skipped = {id(weight) for weight in skip}
    return [
        weight for weight in layer.weights
        if id(weight) not in skipped and len(weight.shape) and weight.shape[-1] == width
        and "float" in str(weight.dtype)
    ]  # fmt: skip


class _PatchEmbedding(Handler):
    """keras-hub's patch embeddings: a vision transformer's hidden width starts here.

    One patch convolution (its filters are the hidden width), then class,
    distillation or register tokens, a learned position table, a mask token
    or a LayerNormalization, all of the hidden width: the output channels are
    the convolution's filters and the last axis of every such table.
    Resizing sets the config entry `width_key`. The same shape of layer is
    found in ViT, DeiT, CLIP, SigLIP, MetaCLIP 2, DINOv2, DINOv3, PaliGemma's and
    Gemma 3's vision towers, ViTDet and SegFormer's MiT.

    Args:
        width_key: String. The constructor argument holding the hidden width.
    """

    def __init__(self, width_key):
        self.width_key = width_key

    def trace(self, node, tracer):
        layer = node.operation
        width = _width(node.outputs[0])
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return Freeze(f"'{layer.name}' uses data_format={layer.data_format!r}").trace(node, tracer)
        convolutions = [
            sub for sub in _sub_layers(layer)
            if isinstance(sub, keras.layers.Conv2D) and sub.filters == width and sub.data_format == "channels_last"
        ]  # fmt: skip
        if len(convolutions) != 1:
            return Freeze(f"'{layer.name}' has no single patch convolution of its output width").trace(node, tracer)
        (convolution,) = convolutions
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(width, layer.name)
        tracer.use(layer, convolution.kernel, -2, inputs, "input")
        tracer.use(layer, convolution.kernel, -1, outputs, "output")
        tracer.use(layer, getattr(convolution, "bias", None), 0, outputs, "output")
        for table in _own_tables(layer, width, skip=convolution.weights):
            tracer.use(layer, table, -1, outputs, "param")
        for sub in _sub_layers(layer):
            if isinstance(sub, (keras.layers.LayerNormalization, keras.layers.RMSNormalization)):
                tracer.normalize(outputs, layer.name)
        return [outputs]

    def resize(self, config, output_width):
        return {**config, self.width_key: output_width}


class _PerChannelTables(Handler):
    """keras-hub layers that add or multiply learned per-channel tables.

    The output has the input's shape and channels; every table's last axis
    is sliced with them: position embeddings (`PositionEmbedding`, ViTDet's
    `AddPositionalEmbedding`) and channel scales (MobileNetV5's
    `LayerScale2d`, DINOv2's and DINOv3's `LayerScale`). With `normalizes`, the layer also normalises over the
    channels (MobileNetV5's `RmsNorm2d`), so the group is a hidden width
    (`targets="hidden"`).

    Args:
        width_key: String or None. The constructor argument holding the width.
        normalizes: Bool. Whether the layer normalises over the channels.
    """

    def __init__(self, width_key=None, normalizes=False):
        self.width_key = width_key
        self.normalizes = normalizes

    def trace(self, node, tracer):
        layer = node.operation
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return Freeze(f"'{layer.name}' uses data_format={layer.data_format!r}").trace(node, tracer)
        channels = tracer.channels(node.input_tensors[0])
        for table in _own_tables(layer, len(channels)):
            tracer.use(layer, table, -1, channels, "param")
        if self.normalizes:
            tracer.normalize(channels, layer.name)
        return [channels]

    def resize(self, config, output_width):
        return {**config, self.width_key: output_width} if self.width_key else config


def _attribute(layer, path):
    """`layer.a.b` for the dotted `path` "a.b", or None where an attribute is missing."""
    for name in path.split("."):
        layer = getattr(layer, name, None)
    return layer


# Attribute names of an attention layer's query, key, value and output projections.
_PROJECTION_NAMES = (
    ("query_projector", "key_projector", "value_projector", "output_projector"),  # T5
    ("_query_dense", "_key_dense", "_value_dense", "_output_dense"),  # keras.layers.MultiHeadAttention
)


def _projections(attention):
    """The query, key, value and output Dense / EinsumDense layers of an attention layer, or None."""
    for names in _PROJECTION_NAMES:
        found = [getattr(attention, name, None) for name in names]
        if all(isinstance(dense, (keras.layers.Dense, keras.layers.EinsumDense)) for dense in found):
            if not any(getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None)
                       for dense in found):  # fmt: skip
                return found
    return None


def _head_count(attention):
    """An attention layer's number of heads (`num_heads`, or Keras's `_num_heads`), or None."""
    return getattr(attention, "num_heads", getattr(attention, "_num_heads", None))


def _head_ids(weight, axis, heads):
    """One channel id per entry of `weight`'s `axis`: each head's id repeated over its head width.

    A Dense kernel lays the heads out flat (`(width, heads * dim)`), an
    EinsumDense one on an axis of their own (`(width, heads, dim)`).
    """
    size = weight.shape[axis]
    return np.repeat(heads, size // len(heads)) if size % len(heads) == 0 else None


class _BlockFeedForward(Handler):
    """A transformer block kept as one layer: the units of its feed-forward part and its attention heads prune.

    XLNet's encoder block holds per-head attention biases of its own, and T5's
    attention layers return None for their cache, so `tfprune.graph.flatten`
    cannot inline these blocks. The block's inputs' and outputs' channels are
    pinned (the hidden width, which their normalisation couples anyway); the
    units between the feed-forward Dense layers are a group of their own,
    sliced on the producing Dense layers' kernels and biases (a gated block
    has two, multiplied channel by channel) and on the last Dense's kernel;
    `units_key` records the new width. An activation on the units that does
    not act on each channel alone pins them.

    With `attentions`, the heads of those attention sub-layers are a group
    too: head `h` is the `h`-th slice of the query, key and value kernels
    and biases and of the output projection's input axis, and of the last
    axis of any other weight of the attention layer with one entry per head
    (T5's relative position bias table). The block's constructor takes one
    head count (`heads_key`) for all of them, so head `h` of each is removed
    together. Blocks that pass one layer's per-head tensor on to the next
    (T5's position bias, with the first block's relative position bias and
    the attention mask folded in, reused by every later block of the stack)
    name it with `chain`: the heads of every block along the chain are one
    group. Its `ChannelGroup.heads_of` is `"<block>/<attention attribute>"`
    (of the first block), so it is pruned as heads (`targets="heads"`, never
    rounded to `round_to`). Removing a head whose output-projection rows are
    zero leaves the block's outputs unchanged.

    Args:
        producers: Tuple of strings. The attributes holding the Dense layers
            making the units (a missing one, such as an optional gate, is
            skipped); dotted paths reach into a sub-layer (`"mlp.gate_proj"`).
        consumer: String. The attribute holding the Dense layer reading them.
        units_key: String. The constructor argument holding the units.
        activation_name: String or None. An attribute holding an activation
            applied to the units besides the Dense layers' own.
        attentions: Tuple of strings. Attributes holding attention layers
            whose heads prune (a missing one is skipped).
        heads_key: String. The constructor argument holding the head count.
        chain: Tuple `(keyword, output index, head axis)` or None: the call
            keyword taking the previous block's per-head tensor, which output
            passes it on, and its axis of heads.
    """

    def __init__(self, producers, consumer, units_key, activation_name=None, attentions=(), heads_key="num_heads",
                 chain=None):  # fmt: skip
        self.producers = producers
        self.consumer = consumer
        self.units_key = units_key
        self.activation_name = activation_name
        self.attentions = attentions
        self.heads_key = heads_key
        self.chain = chain
        self._kernel_index = {}  # layer name -> index of the first producer's kernel in `layer.weights`
        self._heads_layout = {}  # layer name -> (index of a query kernel in `layer.weights`, its head axis, head width)

    def trace(self, node, tracer):
        layer = node.operation
        reason = f"'{layer.name}' ({type(layer).__name__}) is a block tfprune keeps as one layer"
        for tensor in node.input_tensors:
            tracer.pin(tracer.channels(tensor), reason)
        outputs = []
        for tensor in node.outputs:
            width = _width(tensor)
            outputs.append(tracer.new_channels(1 if width is None else width, layer.name))
            tracer.pin(outputs[-1], reason)
        producers = [_attribute(layer, name) for name in self.producers if _attribute(layer, name) is not None]
        consumer = _attribute(layer, self.consumer)
        dense_layers = [*producers, consumer]
        if not producers or any(getattr(dense, "kernel", None) is None for dense in dense_layers) or any(
            getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None) for dense in dense_layers
        ):  # another keras-hub version's attribute names, or LoRA/quantized projections: nothing is sliced
            return outputs
        self._kernel_index[layer.name] = [id(weight) for weight in layer.weights].index(id(producers[0].kernel))
        units = tracer.new_channels(producers[0].units, f"{layer.name}_{producers[0].name}")
        for dense in producers:
            tracer.use(layer, dense.kernel, -1, units, "output")
            tracer.use(layer, getattr(dense, "bias", None), 0, units, "output")
        tracer.use(layer, consumer.kernel, 0, units, "input")
        activations = list(producers)
        if self.activation_name is not None:
            holder = types.SimpleNamespace(activation=_attribute(layer, self.activation_name), name=layer.name)
            activations.append(holder)
        for holder in activations:
            why = channel_mixing_activation(holder)
            if why is not None:
                tracer.pin(units, why)
        if self.attentions:
            self._trace_heads(node, tracer)
        return outputs

    def _trace_heads(self, node, tracer):
        layer = node.operation
        self._heads_layout.pop(layer.name, None)
        attentions = [_attribute(layer, name) for name in self.attentions]
        attentions = [attention for attention in attentions if attention is not None]
        found = [_projections(attention) for attention in attentions]
        counts = {_head_count(attention) for attention in attentions}
        count = next(iter(counts)) if len(counts) == 1 else None
        cached = any(isinstance(value, keras.KerasTensor) and "cache" in name
                     for name, value in node.arguments.kwargs.items())  # fmt: skip
        # Heads tfprune cannot lay out, or a key/value cache laid out by heads: they stay.
        if not attentions or None in found or not isinstance(count, int) or cached:
            return
        # Every weight axis laid out by heads: (weight, axis, one channel position per entry), head by head.
        layout = []
        for attention, (query, key, value, output) in zip(attentions, found):
            for dense in (query, key, value):
                layout.append((dense.kernel, -1 if len(dense.kernel.shape) == 2 else -2, "output"))
                bias = getattr(dense, "bias", None)
                if bias is not None:
                    layout.append((bias, -1 if len(bias.shape) == 1 else -2, "output"))
            layout.append((output.kernel, 0, "input"))
            projection_weights = {id(weight) for dense in (query, key, value, output) for weight in dense.weights}
            layout += [(table, -1, "param") for table in attention.weights
                       if id(table) not in projection_weights and len(table.shape) and table.shape[-1] == count]  # fmt: skip
        placeholder = np.arange(count)
        if any(_head_ids(weight, axis, placeholder) is None for weight, axis, _ in layout):
            return
        # The previous block's per-head tensor: its heads are these heads.
        chains = tracer.__dict__.setdefault("_tfprune_chained_heads", {})
        passed = node.arguments.kwargs.get(self.chain[0]) if self.chain else None
        heads = chains.get(id(passed)) if isinstance(passed, keras.KerasTensor) else None
        if heads is None:
            heads = tracer.new_channels(count, f"{layer.name}_heads")
            if isinstance(passed, keras.KerasTensor):  # made elsewhere: its heads cannot follow
                tracer.pin(heads, f"'{layer.name}' reads a per-head tensor '{self.chain[0]}' tfprune cannot follow")
            # Heads, not channels (`ChannelGroup.heads_of`: no `round_to`, `targets="heads"`), named by
            # the block's first attention layer (a block's path: its weights are scored as a producer's).
            name = next(path for path in self.attentions if _attribute(layer, path) is not None)
            for channel in heads.tolist():
                tracer._heads[channel] = f"{layer.name}/{name}"
        if self.chain:
            chains[id(node.outputs[self.chain[1]])] = heads
        for weight, axis, role in layout:
            tracer.use(layer, weight, axis, _head_ids(weight, axis, heads), role)
        query = found[0][0]
        self._heads_layout[layer.name] = (
            [id(weight) for weight in layer.weights].index(id(query.kernel)),
            -1 if len(query.kernel.shape) == 2 else -2,
            query.kernel.shape[-1] // count if len(query.kernel.shape) == 2 else 1,
        )

    def resize_for_weights(self, config, output_width, weight_shapes):
        # The surgery builds the graph (so traces the layer) before it resizes.
        config = {**config, self.units_key: int(weight_shapes[self._kernel_index[config["name"]]][-1])}
        if config["name"] in self._heads_layout:
            index, axis, head_width = self._heads_layout[config["name"]]
            config[self.heads_key] = int(weight_shapes[index][axis]) // head_width
        return config

    def build(self, layer, input_shapes, node=None):
        # Called as in the model (on symbolic tensors of the new shapes): such blocks build
        # their sub-layers from several inputs, or only when called.
        # A tensor whose last axis is unknown (a mask, T5's position bias over the keys) keeps it
        # unknown; the chained per-head tensor has the new block's head count.
        passed = node.arguments.kwargs.get(self.chain[0]) if self.chain else None
        values = {}
        for tensor, shape in zip(node.input_tensors, input_shapes):
            shape = list(shape)
            if tensor.shape[-1] is None:
                shape[-1] = None
            if tensor is passed:
                shape[self.chain[2]] = _head_count(_attribute(layer, self.attentions[0]))
            values[id(tensor)] = keras.KerasTensor(tuple(shape), dtype=tensor.dtype)
        args, kwargs = node.arguments.fill_in(values)
        layer(*args, **kwargs)


class _DenseProjectionHeads(Handler):
    """Hand-written attention kept whole, with Dense query, key, value and output projections: heads prune.

    The query, key and value Dense layers make `heads * head_dim` units each
    (or one fused Dense makes `3 * heads * head_dim`, laid out `(3, heads,
    head_dim)`), head `h` being units `h * head_dim` to `(h + 1) * head_dim`
    of each part (the call reshapes them to `(..., heads, head_dim)`); the
    output Dense reads them in the same order. The heads are a channel group
    of their own (`ChannelGroup.heads_of`): removing head `h` slices its
    units out of the projections' kernels and biases and its rows out of the
    output projection's kernel, so a head whose output rows are zero leaves
    the outputs unchanged (the heads are summed through the output
    projection); a rotary or relative position embedding acts within each
    head (on `head_dim`) and is untouched. The hidden channels are read on
    the projections' first kernel axis and made by the output projection,
    like a Dense layer's units.

    RoFormer V2's and ESM2's attention are such layers (their call reshapes
    with a batch size read while the model runs, so `tfprune.graph.flatten`
    cannot inline them), and so are DINOv3's and ViTDet's (SAM's image
    encoder), whose head width or output width follows the number of heads:
    those are rebuilt as a tfprune subclass that keeps it explicit
    (`subclass`), so that the pruned model reloads from `.keras` with
    tfprune imported.

    Args:
        projections: Tuple of attribute names: the query, key and value
            Dense layers (or the one fused Dense), then the output Dense.
        heads_key: String. The constructor argument (and attribute) holding
            the number of heads.
        head_dim_key: String or None. The attribute holding the head width;
            None reads it as the query units over the heads.
        output_key: String or None. A constructor argument holding the output
            width, written explicitly (it may default to `heads * head_dim`).
        subclass: String or None. A key of `_SUBCLASSES`: the tfprune
            subclass the layer is rebuilt as.
    """

    def __init__(self, projections, heads_key, head_dim_key=None, output_key=None, subclass=None):
        self.projections = projections
        self.heads_key = heads_key
        self.head_dim_key = head_dim_key
        self.output_key = output_key
        self.subclass = subclass
        self._layouts = {}  # layer name -> (index of the first projection's kernel in `layer.weights`, head_dim)

    def _dense_layers(self, layer):
        found = [getattr(layer, name, None) for name in self.projections]
        if not all(type(dense) is keras.layers.Dense for dense in found):
            return None
        if any(getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None) for dense in found):
            return None
        return found

    def _head_dim(self, layer, projections):
        num_heads = int(getattr(layer, self.heads_key))
        if self.head_dim_key is not None:
            return int(getattr(layer, self.head_dim_key))
        return projections[0].units // num_heads

    def trace(self, node, tracer):
        layer = node.operation
        projections = self._dense_layers(layer)
        num_heads = int(getattr(layer, self.heads_key))
        head_dim = None if projections is None else self._head_dim(layer, projections)
        why = (
            "has no query, key, value and output Dense projections tfprune knows" if projections is None
            else "returns more than its output" if len(node.outputs) != 1
            else f"has projections that are no multiple of its {num_heads} heads of width {head_dim}"
            if any(dense.units % (num_heads * head_dim) for dense in projections[:-1])
            or projections[-1].kernel.shape[0] != num_heads * head_dim
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        *inner, output = projections
        sources = self._projection_inputs(node, len(inner))
        heads = tracer.new_channels(num_heads, f"{layer.name}_heads")
        for channel in heads.tolist():
            tracer._heads[channel] = layer.name
        units = np.repeat(heads, head_dim)
        for dense, source in zip(inner, sources):
            # Heads are scored on all the projections making them (`head_kernel`): the
            # first one carries the group's scored member, the others are sliced with it.
            role = "output" if dense is inner[0] else "param"
            parts = np.tile(units, dense.units // len(units))
            tracer.use(layer, dense.kernel, 0, tracer.channels(source), "input")
            tracer.use(layer, dense.kernel, -1, parts, role)
            tracer.use(layer, getattr(dense, "bias", None), 0, parts, role)
        tracer.use(layer, output.kernel, 0, units, "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, -1, outputs, "output")
        tracer.use(layer, getattr(output, "bias", None), 0, outputs, "output")
        index = [id(weight) for weight in layer.weights].index(id(inner[0].kernel))
        self._layouts[layer.name] = (index, head_dim, inner[0].units // len(units))
        return [outputs]

    def _projection_inputs(self, node, count):
        """The tensor each of the `count` query/key/value projections reads: the call's first argument."""
        return [_first_input(node)] * count

    def head_kernel(self, layer):
        """The projections making the heads, as `(coefficients, units)`: what magnitude criteria score.

        The query, key and value kernels are stacked on their input axis (a
        fused one is taken whole). Criteria score each unit (a column) and
        add the units of a head up (the heads group's member positions are
        the first projection's units), so a head's score is that of all its
        projection weights.

        Args:
            layer: An attention layer this handler traces.

        Returns:
            NumPy array.
        """
        inner = self._dense_layers(layer)[:-1]
        return np.concatenate([keras.ops.convert_to_numpy(dense.kernel) for dense in inner], axis=0)

    def resize_for_weights(self, config, output_width, weight_shapes):
        # The surgery builds the graph (so traces the layer) before it resizes.
        index, head_dim, parts = self._layouts[config["name"]]
        config = {**config, self.heads_key: int(weight_shapes[index][-1]) // (parts * head_dim)}
        if self.output_key is not None:
            config[self.output_key] = output_width
        return config

    def rebuild(self, layer, config):
        """A new layer from `config`; with `subclass`, of that class, keeping the head and output widths."""
        if self.subclass is None:
            return _utils.rebuild_from_config(layer, config)
        cls = subclass_of(self.subclass)
        parent = cls.__mro__[2]  # (subclass, mixin, keras-hub's class, ...)
        arguments = handlers_decoders._constructor_config(layer, parent)
        arguments.update({key: config[key] for key in (self.heads_key, self.output_key) if key in config})
        arguments["name"] = config["name"]
        return cls.from_config({**arguments, **cls.explicit_arguments(self._layouts[layer.name][1])})

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(_first_input(node))])


def _first_input(node):
    """The first argument of a call: the hidden sequence an attention layer reads."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    return args[0] if args else next(iter(kwargs.values()))


class _UniformWidthBlock(Handler):
    """A block kept whole whose every convolution maps its one width to itself: that width prunes.

    Depth Anything's feature fusion layer adds its two inputs, runs two
    pre-activation residual layers (ReLU, 3x3 convolution, ReLU, 3x3
    convolution, plus the input), resizes the image bilinearly (channel by
    channel; keras-hub calls TensorFlow's resize directly, so
    `tfprune.graph.flatten` cannot trace it) and projects with a 1x1
    convolution, every one of the width `width_key`. The inputs' channels,
    the outputs' and those between the convolutions are then one group:
    channel `c` is sliced from both kernel axes and the bias of every
    convolution, so a channel that is zero everywhere stays zero and removing
    it changes nothing else. A block with a convolution of another shape, or
    whose data format is not channels-last, is frozen.

    Args:
        width_key: String. The constructor argument holding the width.
    """

    def __init__(self, width_key):
        self.width_key = width_key

    def trace(self, node, tracer):
        layer = node.operation
        width = _width(node.outputs[0])
        convolutions = [sub for sub in _sub_layers(layer) if isinstance(sub, keras.layers.Conv2D)]
        why = (
            f"uses data_format={getattr(layer, 'data_format', None)!r}"
            if getattr(layer, "data_format", "channels_last") != "channels_last"
            else "has an input or a convolution of another width"
            if any(_width(tensor) != width for tensor in node.input_tensors)
            or any(tuple(conv.kernel.shape[-2:]) != (width, width) or conv.groups != 1 for conv in convolutions)
            or len(node.outputs) != 1
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        channels = tracer.channels(node.input_tensors[0])
        tracer.couple(*[tracer.channels(tensor) for tensor in node.input_tensors])
        for conv in convolutions:
            tracer.use(layer, conv.kernel, -2, channels, "input")
            tracer.use(layer, conv.kernel, -1, channels, "output")
            tracer.use(layer, getattr(conv, "bias", None), 0, channels, "output")
        return [channels]

    def resize(self, config, output_width):
        return {**config, self.width_key: output_width}

    def build(self, layer, input_shapes, node=None):
        layer.build(input_shapes[0])  # its inputs all have the one width


class _FirstConvolutionReads(Handler):
    """A head kept whole that reads one of its inputs with its first convolution only.

    Depth Anything's depth estimation head takes the neck's feature maps and
    reads the one at `head_in_index` with a 3x3 convolution (whose input
    axis follows the input it is built on), then resizes (keras-hub calls
    TensorFlow's resize directly, which `tfprune.graph.flatten` cannot trace)
    and maps to one depth channel: the input's channels are sliced from that
    convolution's kernel; its own widths and outputs stay.

    Args:
        convolution: String. The attribute holding the reading convolution.
        index_key: String. The attribute holding which input it reads.
    """

    def __init__(self, convolution, index_key):
        self.convolution = convolution
        self.index_key = index_key

    def trace(self, node, tracer):
        layer = node.operation
        convolution = getattr(layer, self.convolution, None)
        inputs = _first_input(node)
        read = inputs[getattr(layer, self.index_key)] if isinstance(inputs, (list, tuple)) else inputs
        if not isinstance(convolution, keras.layers.Conv2D) or getattr(layer, "data_format", None) != "channels_last":
            return Freeze(f"'{layer.name}' has no channels-last convolution '{self.convolution}'").trace(node, tracer)
        tracer.use(layer, convolution.kernel, -2, tracer.channels(read), "input")
        outputs = []
        for tensor in node.outputs:
            width = _width(tensor)
            outputs.append(tracer.new_channels(1 if width is None else width, layer.name))
            tracer.pin(outputs[-1], f"'{layer.name}' ({type(layer).__name__}) is a head tfprune keeps as one layer")
        return outputs


class _ExplicitDINOV3Attention:
    """DINOv3's attention with an explicit `head_dim` (keras-hub's computes `hidden_dim // num_heads`).

    The query, key and value projections make `num_heads * head_dim` units
    and the output projection reads them back to `hidden_dim`, so heads can
    go while the hidden width and the head width stay.
    """

    def __init__(self, *args, head_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.explicit_head_dim = head_dim
        if head_dim is not None:
            self.head_dim = int(head_dim)
            self.scale = self.head_dim**-0.5
            for dense in (self.query_dense, self.key_dense, self.value_dense):
                dense.units = self.num_heads * self.head_dim  # not built yet: `build` makes the kernels

    def build(self, input_shape):
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.num_heads * self.head_dim))
        self.built = True

    def get_config(self):
        # keras-hub's own config writes `query_bias` for the argument `use_query_bias` (it does not load back).
        config = handlers_decoders._constructor_config(self, type(self).__mro__[2])
        return {**config, "head_dim": self.explicit_head_dim}

    @staticmethod
    def explicit_arguments(head_dim):
        return {"head_dim": int(head_dim)}


class _ExplicitViTDetAttention:
    """ViTDet's attention with an explicit `output_dim` (keras-hub's writes `num_heads * key_dim` channels).

    keras-hub's layer reads its fused query/key/value projection from a
    width of `num_heads * key_dim` and reshapes the attended heads to its
    input's width; here the projection reads the input's own width, the
    heads are reshaped to `num_heads * key_dim` and the output projection
    makes `output_dim` channels, so heads can go while the hidden width stays.
    """

    def __init__(self, *args, output_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_dim = output_dim
        if output_dim is not None:
            self.projection.units = int(output_dim)  # not built yet: `build` makes the kernel

    def build(self, input_shape=None):
        self.qkv.build([input_shape[-1]])
        self.projection.build([self.key_dim * self.num_heads])
        self.built = True

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.projection.units)

    def call(self, x):
        batch, height, width = keras.ops.shape(x)[0], keras.ops.shape(x)[1], keras.ops.shape(x)[2]
        tokens = height * width
        # (batch, tokens, 3 * heads * key_dim) -> (3, batch * heads, tokens, key_dim)
        projected = keras.ops.reshape(self.qkv(x), (batch, tokens, 3, self.num_heads, self.key_dim))
        projected = keras.ops.transpose(projected, axes=(2, 0, 3, 1, 4))
        projected = keras.ops.reshape(projected, (3, batch * self.num_heads, tokens, self.key_dim))
        queries, keys, values = projected[0], projected[1], projected[2]
        scores = keras.ops.matmul(queries * self.scale, keras.ops.transpose(keys, axes=(0, 2, 1)))
        if self.use_rel_pos:
            scores = self.add_decomposed_relative_pe(
                scores, queries=queries, query_size=(height, width), key_size=(height, width)
            )
        attended = keras.ops.matmul(keras.ops.softmax(scores, axis=-1), values)
        attended = keras.ops.reshape(attended, (batch, self.num_heads, height, width, self.key_dim))
        attended = keras.ops.transpose(attended, axes=(0, 2, 3, 1, 4))
        return self.projection(keras.ops.reshape(attended, (batch, height, width, self.num_heads * self.key_dim)))

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim}

    @staticmethod
    def explicit_arguments(head_dim):
        return {}


# keras-hub layers rebuilt as tfprune subclasses when their heads shrink: name -> (keras-hub
# module, mixin). The classes are made on first use (importing tfprune does not import
# keras-hub) and registered for serialization as `tfprune>name`.
_SUBCLASSES = {
    "DINOV3Attention": ("keras_hub.src.models.dinov3.dinov3_layers", _ExplicitDINOV3Attention),
    "MultiHeadAttentionWithRelativePE": ("keras_hub.src.models.vit_det.vit_layers", _ExplicitViTDetAttention),
}
_SUBCLASS_CLASSES = {}


def subclass_of(name):
    """tfprune's subclass of keras-hub's layer `name` that keeps a width explicit, made on first use.

    Args:
        name: String. A key of `_SUBCLASSES`: `"DINOV3Attention"`,
            `"MultiHeadAttentionWithRelativePE"` or (added by
            `tfprune.handlers_qwen3_5`) `"Qwen3_5GatedDeltaNet"`.

    Returns:
        The class (registered for serialization in package `tfprune`).

    Raises:
        ImportError: If keras-hub is not installed.

    Example:

    >>> subclass_of("DINOV3Attention").__name__  # doctest: +SKIP
    'DINOV3Attention'
    """
    if name not in _SUBCLASS_CLASSES:
        module, mixin = _SUBCLASSES[name]
        parent = getattr(__import__(module, fromlist=[name]), name)
        cls = type(name, (mixin, parent), {"__module__": __name__, "__doc__": mixin.__doc__})
        _SUBCLASS_CLASSES[name] = keras.saving.register_keras_serializable(package="tfprune")(cls)
        register_handler(cls, _by_class((module, name)))  # its module is tfprune's: found by class
    return _SUBCLASS_CLASSES[name]


def _register_stand_in(name, make=None):
    """Stands for `make(name)` (`subclass_of`) in Keras's registry until it is made (a `.keras` file names `tfprune>name`)."""

    def from_config(cls, config):
        try:
            made = (make or subclass_of)(name)
        except ImportError as error:
            raise ImportError(
                f"Layer '{config.get('name', name)}' of this .keras file is tfprune's {name}, a subclass of "
                "keras-hub's layer of that name; install keras-hub (`pip install keras-hub`) to load it."
            ) from error
        return made.from_config(config)

    stand_in = type(f"_Deferred{name}", (), {"from_config": classmethod(from_config), "get_config": lambda self: {}})
    keras.saving.register_keras_serializable(package="tfprune", name=name)(stand_in)


for _name in _SUBCLASSES:
    _register_stand_in(_name)


def _made_on_first_use(name, names, make, module):
    """A module's `__getattr__`: the subclass `make(name)` for one of `names` (how Keras finds a saved layer's class)."""
    if name in names:
        try:
            return make(name)
        except ImportError as error:  # hasattr() must say False, not raise, without keras-hub
            raise AttributeError(f"{name} needs keras-hub, which is not installed") from error
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def __getattr__(name):
    # `tfprune.handlers_keras_hub.DINOV3Attention`.
    return _made_on_first_use(name, _SUBCLASSES, subclass_of, __name__)


_MOONSHINE_ATTENTION = ("keras_hub.src.models.moonshine.moonshine_multi_head_attention", "MoonshineMultiHeadAttention")
_RECORDABLE = {}  # the class made by `recordable_moonshine_attention`, once made


def recordable_moonshine_attention():
    """tfprune's subclass of keras-hub's `MoonshineMultiHeadAttention`, which a functional graph can record.

    Moonshine's blocks call their attention layers with a `rotary_embedding`
    (and a `cache`), which Keras's `MultiHeadAttention.compute_output_spec`
    refuses, so a block could not be inlined: it stayed whole and neither its
    heads nor its MLP units pruned. `tfprune.graph.flatten` copies the
    attention layers as this class (same weights, same `call`), whose output
    spec takes those arguments; its config also keeps `attention_bias`,
    `attention_dropout`, `use_causal_mask` and `apply_rotary_embedding`,
    which keras-hub's own does not write. Its heads prune as a
    `MultiHeadAttention`'s do. Made and registered for serialization
    (package `tfprune`) on first use, so that importing tfprune does not
    import keras-hub.

    Returns:
        The class, or None when keras-hub (or Moonshine) is not installed.

    Example:

    >>> recordable_moonshine_attention().__name__  # doctest: +SKIP
    'MoonshineMultiHeadAttention'
    """
    if "class" not in _RECORDABLE:
        try:
            module, name = _MOONSHINE_ATTENTION
            parent = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            return None

        def compute_output_spec(self, query, value, key=None, rotary_embedding=None, attention_mask=None, cache=None,
                                cache_update_index=None, training=None, **kwargs):  # fmt: skip
            output = parent.compute_output_spec(self, query, value, key, attention_mask=attention_mask)
            return output if cache is None else (output, keras.KerasTensor(cache.shape, dtype=cache.dtype))

        def get_config(self):
            return {**parent.get_config(self), "attention_bias": self.attention_bias,
                    "attention_dropout": self.attention_dropout, "use_causal_mask": self.use_causal_mask,
                    "apply_rotary_embedding": self.apply_rotary_embedding}  # fmt: skip

        cls = type(name, (parent,), {
            "__module__": __name__, "__doc__": recordable_moonshine_attention.__doc__.split("\n\n")[0],
            "compute_output_spec": compute_output_spec, "get_config": get_config,
        })  # fmt: skip
        _RECORDABLE["class"] = keras.saving.register_keras_serializable(package="tfprune")(cls)
        register_handler(_RECORDABLE["class"], _RecordableAttention())
    return _RECORDABLE["class"]


class _RecordableAttention(_MultiHeadAttention):
    """Moonshine's attention layers: heads as a `MultiHeadAttention`'s, copied as `recordable_moonshine_attention`."""

    def copy(self, layer):
        """A copy of `layer` (built, same weights) as tfprune's recordable class (`tfprune.graph.flatten`)."""
        cls = recordable_moonshine_attention()
        if type(layer) is cls:
            return None  # its own config loads back
        copy = cls.from_config({**layer.get_config(), "attention_bias": layer.attention_bias,
                                "attention_dropout": layer.attention_dropout, "use_causal_mask": layer.use_causal_mask,
                                "apply_rotary_embedding": layer.apply_rotary_embedding})  # fmt: skip
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy


class _DeferredMoonshineAttention:
    """Stands for `recordable_moonshine_attention()` in Keras's registry until it is made.

    A `.keras` file names the class `tfprune>MoonshineMultiHeadAttention`;
    this stand-in, registered under that name when tfprune is imported,
    makes the real class when such a file is loaded.
    """

    @classmethod
    def from_config(cls, config):
        recordable = recordable_moonshine_attention()
        if recordable is None:
            raise ImportError(
                f"Loading layer '{config.get('name')}' (tfprune's MoonshineMultiHeadAttention) needs keras-hub's "
                "Moonshine; install keras-hub (`pip install keras-hub`)."
            )
        return recordable.from_config(config)

    def get_config(self):
        return {}


keras.saving.register_keras_serializable(package="tfprune", name="MoonshineMultiHeadAttention")(
    _DeferredMoonshineAttention
)


_MODELS = "keras_hub.src.models."
_BY_CLASS = {
    (_MODELS + "vit.vit_layers", "ViTPatchingAndEmbedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "deit.deit_layers", "DeiTEmbeddings"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "clip.clip_layers", "CLIPVisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "siglip.siglip_layers", "SigLIPVisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "metaclip_2.metaclip_2_layers", "MetaCLIP2VisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "dinov2.dinov2_layers", "DINOV2Embedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "dinov3.dinov3_layers", "DINOV3Embedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "pali_gemma.pali_gemma_vit", "PaliGemmaVitEmbeddings"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "gemma3.gemma3_vision_encoder", "Gemma3VisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (_MODELS + "vit_det.vit_layers", "ViTDetPatchingAndEmbedding"): _PatchEmbedding("embed_dim"),
    (_MODELS + "mit.mit_layers", "OverlappingPatchingAndEmbedding"): _PatchEmbedding("project_dim"),
    (_MODELS + "vit_det.vit_layers", "AddPositionalEmbedding"): _PerChannelTables("embed_dim"),
    (_MODELS + "mobilenetv5.mobilenetv5_layers", "LayerScale2d"): _PerChannelTables("dim"),
    (_MODELS + "dinov2.dinov2_layers", "DINOV2LayerScale"): _PerChannelTables("hidden_dim"),
    (_MODELS + "dinov3.dinov3_layers", "DINOV3LayerScale"): _PerChannelTables("hidden_dim"),
    (_MODELS + "mobilenetv5.mobilenetv5_layers", "RmsNorm2d"): _PerChannelTables("dim", normalizes=True),
    ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"): _PerChannelTables(),
    # MultiHeadAttention with a key/value cache for decoding: called without one (as in a
    # functional graph) it computes what MultiHeadAttention does, with the same weights
    # (keras-hub's own CachedMultiHeadAttention: handlers_decoders).
    (_MODELS + "whisper.whisper_cached_multi_head_attention", "WhisperCachedMultiHeadAttention"): _MultiHeadAttention(),
    _MOONSHINE_ATTENTION: _RecordableAttention(),
    (_MODELS + "xlnet.xlnet_encoder", "XLNetEncoder"): _BlockFeedForward(
        ("feedforward_intermediate_dense",), "feedforward_output_dense", "intermediate_dim", "activation_function_ff"
    ),
    (_MODELS + "t5.t5_transformer_layer", "T5TransformerLayer"): _BlockFeedForward(
        ("input_projector", "gate_projector"), "output_projector", "intermediate_dim",
        attentions=("self_attention", "cross_attention"), chain=("position_bias", 1, 1),
    ),
    # T5Gemma's decoder blocks: their grouped-query attention layers (`num_key_value_heads`
    # key/value heads) keep their heads here; the gated MLP's units prune.
    (_MODELS + "t5gemma.t5gemma_decoder", "T5GemmaDecoderLayer"): _BlockFeedForward(
        ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size", "mlp.act_fn"
    ),
    (_MODELS + "t5gemma2.t5gemma2_decoder", "T5Gemma2DecoderLayer"): _BlockFeedForward(
        ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size", "mlp.act_fn"
    ),
    # FNet mixes the tokens with a 2-D Fourier transform over the sequence and the hidden width:
    # the hidden width is inherently frozen (every output channel reads every input channel),
    # and the block cannot be inlined (Keras's `fft2` refuses a sequence of unknown length).
    (_MODELS + "roformer_v2.roformer_v2_attention", "RoformerAttention"): _DenseProjectionHeads(
        ("q_dense", "k_dense", "v_dense", "o_dense"), "heads", output_key="out_dim"
    ),
    (_MODELS + "dinov3.dinov3_layers", "DINOV3Attention"): _DenseProjectionHeads(
        ("query_dense", "key_dense", "value_dense", "output_dense"), "num_heads", "head_dim",
        output_key="hidden_dim", subclass="DINOV3Attention",
    ),
    (_MODELS + "vit_det.vit_layers", "MultiHeadAttentionWithRelativePE"): _DenseProjectionHeads(
        ("qkv", "projection"), "num_heads", "key_dim", output_key="output_dim",
        subclass="MultiHeadAttentionWithRelativePE",
    ),
    (_MODELS + "depth_anything.depth_anything_layers", "DepthAnythingFeatureFusionLayer"): _UniformWidthBlock(
        "hidden_dim"
    ),
    (_MODELS + "depth_anything.depth_anything_layers", "DepthAnythingDepthEstimationHead"): _FirstConvolutionReads(
        "conv1", "head_in_index"
    ),
    (_MODELS + "esm.esm_attention", "EsmSelfAttention"): _DenseProjectionHeads(
        ("q_dense", "k_dense", "v_dense", "o_dense"), "heads", output_key="out_dim"
    ),
    ("keras_hub.src.layers.modeling.f_net_encoder", "FNetEncoder"): _BlockFeedForward(
        ("_intermediate_dense",), "_output_dense", "intermediate_dim"
    ),
}


# Layers holding weights of their own that `tfprune.graph.flatten` inlines all
# the same, each own weight becoming a `tfprune.layers.Weight`: copied through
# its config, `MaskedLMHead` would re-create the token embedding it shares
# with the backbone (the copy has one more vocabulary table than the model);
# inlined, the embedding is one layer called forwards and in reverse. Swin's
# `WindowAttention` (its relative position bias table) has a config that does
# not load back (it writes its output Dropout layer as `proj_drop`). PARSeq's
# decoder holds its position queries itself; kept whole, the attention heads
# and MLP units of its blocks could not prune.
INLINED_WITH_OWN_WEIGHTS = {
    ("keras_hub.src.layers.modeling.masked_lm_head", "MaskedLMHead"),
    ("keras_hub.src.models.swin_transformer.swin_transformer_layers", "WindowAttention"),
    (_MODELS + "parseq.parseq_decoder", "PARSeqDecoder"),
}


def inlined_with_own_weights(layer):
    """Whether `tfprune.graph.flatten` inlines this keras-hub layer although it holds weights.

    Args:
        layer: A layer whose class is defined in keras-hub.

    Returns:
        Bool.

    Example:

    >>> inlined_with_own_weights(object())
    False
    """
    key = (type(layer).__module__, type(layer).__name__)
    return key in INLINED_WITH_OWN_WEIGHTS or key in handlers_gemma.INLINED_WITH_OWN_WEIGHTS


def handler_for(operation):
    """The built-in handler of a keras-hub layer, or None.

    Args:
        operation: A layer whose class is defined in keras-hub.

    Returns:
        A `tfprune.graph.Handler`, or None when tfprune has none for it.

    Example:

    >>> handler_for(object()) is None
    True
    """
    return _by_class((type(operation).__module__, type(operation).__name__))


def _by_class(key):
    return handlers._BY_CLASS_NAME.get(key)


# ---------------------------------------------------------------- layers whose constructor takes no base arguments


class _AsKerasRMSNormalization(handlers._Normalization):
    """keras-hub's `keras_hub.layers.RMSNormalization` (Flux's query and key norms), copied as Keras's own.

    Its constructor takes `input_dim` alone, not the `name`, `dtype` and
    `trainable` every Keras config holds, and it keeps no attribute for
    `input_dim`: no config of that class loads back, so neither would a
    model holding it. It computes `x * rsqrt(mean(x**2, axis=-1) + 1e-6) *
    scale` in float32, which is `keras.layers.RMSNormalization(axis=-1,
    epsilon=1e-6)` under a float32 policy: the copy is that layer, with the
    same `scale`, used only if it gives the layer's outputs on a probe
    input. Under another policy (the keras-hub layer computes in float32
    whatever the policy is) it is not copied.
    """

    def copy(self, layer):
        if layer.dtype_policy.compute_dtype != "float32" or layer.dtype_policy.variable_dtype != "float32":
            return None
        copy = keras.layers.RMSNormalization(axis=-1, epsilon=1e-6, name=layer.name, dtype=layer.dtype_policy)
        copy.build((None, layer.scale.shape[0]))
        copy.set_weights(layer.get_weights())
        return copy if _utils._same_outputs(copy, layer) else None


_BY_CLASS[("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization")] = _AsKerasRMSNormalization()


class _DFineDecoder(Freeze):
    """D-FINE's decoder: kept whole (its channels frozen), copied with a config that loads back.

    Two defects of keras-hub's `DFineDecoder` keep its own config from
    loading back once it is built: `build` replaces the `upsampling_factor`
    argument by a weight of that name, so the config holds that Variable
    (which a copy made from it would share, and which `.keras` cannot
    write), and `build` refuses the list a `.keras` file gives back for its
    input shape (it asks for a tuple). The backbone reloads all the same,
    since its constructor builds the decoder by calling it; a pruned model
    loads each layer from that layer's own config. The copy's config holds
    the factor's value, and the copy writes no build config: loaded back,
    it is built by its call in the model, as in the backbone.
    """

    def __init__(self):
        super().__init__("")

    def trace(self, node, tracer):
        layer = node.operation
        reason = (
            f"tfprune cannot see inside layer '{layer.name}' ({type(layer).__name__}): it holds weights of its "
            "own (`reg_scale`, `upsampling_factor`) and is kept whole"
        )
        return Freeze(reason).trace(node, tracer)

    def copy(self, layer):
        config = layer.get_config()
        factor = config.get("upsampling_factor")
        if isinstance(factor, keras.Variable):
            config["upsampling_factor"] = float(keras.ops.convert_to_numpy(factor).reshape(-1)[0])
        try:
            copy = type(layer).from_config(config)
            object.__setattr__(copy, "get_build_config", lambda: None)
            _utils._build_like(copy, layer)
            if [tuple(weight.shape) for weight in copy.weights] != [tuple(weight.shape) for weight in layer.weights]:
                return None
            copy.set_weights(layer.get_weights())
        except Exception:  # noqa: BLE001 - not copyable this way: copied or shared as before
            return None
        _utils._write_config(copy, config)
        return copy


_BY_CLASS[(_MODELS + "d_fine.d_fine_decoder", "DFineDecoder")] = _DFineDecoder()

handlers.register_by_class_name(_BY_CLASS)
