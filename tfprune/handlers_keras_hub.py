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

from tfprune import _utils
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
    found in ViT, DeiT, CLIP, SigLIP, MetaCLIP 2, DINOv2, PaliGemma's and
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
    return (type(layer).__module__, type(layer).__name__) in INLINED_WITH_OWN_WEIGHTS


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
    from tfprune import handlers_decoders  # imports tfprune.handlers, as this module does

    key = (type(operation).__module__, type(operation).__name__)
    return _BY_CLASS.get(key) or handlers_decoders.BY_CLASS.get(key)
