"""Handlers for keras-hub transformer blocks and attention layers kept whole, read by attribute names.

`_BlockFeedForward` prunes the units of a block's feed-forward part (and
the heads of its attention layers); `_DenseProjectionHeads` the heads of an
attention layer made of Dense/EinsumDense projections. Both are configured
with the attribute names of the sub-layers (`"mlp.gate_proj"`), so one
class serves many keras-hub families (`tfprune.handlers_keras_hub`,
`handlers_sam3`). A layer whose head width must stay explicit when its heads
shrink is rebuilt as a tfprune subclass (`subclass_of`, made on first use).
"""

import types

import keras
import numpy as np

from tfprune import _first_use, _utils
from tfprune._keras import layers as keras_layers
from tfprune.handlers import Freeze, Handler, _width, channel_mixing_activation
from tfprune.handlers_base import _BY_CLASS_NAME, _attribute
from tfprune.handlers_grouped_attention import _constructor_config

__all__ = ["subclass_of"]

# Where the subclasses say they are from: `tfprune.handlers_keras_hub.DINOV3Attention`
# (that module's `__getattr__` makes them).
_HOME = "tfprune.handlers_keras_hub"
# keras-hub layers rebuilt as tfprune subclasses when their heads shrink: name -> (keras-hub
# module, mixin), filled by the family modules. The classes are made on first use (importing
# tfprune does not import keras-hub) and registered for serialization as `tfprune>name`.
_SUBCLASSES = {}
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
    module, mixin = _SUBCLASSES[name]
    return _first_use.subclass(
        _SUBCLASS_CLASSES, name, module, mixin, _HOME, handler=lambda: _BY_CLASS_NAME.get((module, name))
    )


def add_subclass(name, module, mixin):
    """Declares tfprune's subclass `name` (`mixin` over keras-hub's `module.name`) and registers its stand-in."""
    _SUBCLASSES[name] = (module, mixin)
    _first_use.register_stand_in(name, subclass_of)


# Attribute names of an attention layer's query, key, value and output projections (T5's).
_PROJECTION_NAMES = ("query_projector", "key_projector", "value_projector", "output_projector")


def _projections(attention):
    """The query, key, value and output Dense / EinsumDense layers of an attention layer, or None."""
    candidates = (
        [getattr(attention, name, None) for name in _PROJECTION_NAMES],
        list(keras_layers.attention_projections(attention).values()),  # keras.layers.MultiHeadAttention
    )
    for found in candidates:
        if all(isinstance(dense, (keras.layers.Dense, keras.layers.EinsumDense)) for dense in found):
            if not any(getattr(dense, "lora_enabled", False) or getattr(dense, "quantization_mode", None)
                       for dense in found):  # fmt: skip
                return found
    return None


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
        counts = {keras_layers.head_count(attention) for attention in attentions}
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
            tracer.mark_heads(heads, f"{layer.name}/{name}")
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
                shape[self.chain[2]] = keras_layers.head_count(_attribute(layer, self.attentions[0]))
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
        tracer.mark_heads(heads, layer.name)
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
        arguments = _constructor_config(layer, parent)
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
