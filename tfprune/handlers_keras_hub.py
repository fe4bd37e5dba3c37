"""Built-in handlers for keras-hub layers that hold weights of their own.

keras-hub builds its models from subclassed layers. Those whose `call` only
runs other layers and `keras.ops` are inlined by `tfprune.graph.flatten`;
the ones below hold weights themselves, so they stay one layer and need a
handler to let their channels shrink. `tfprune.handlers.handler_for` looks
them up here by class, only for layers of a model that uses keras-hub.
"""

import types

import keras

from tfprune import _utils, handlers
from tfprune.handlers import Freeze, Handler, _MultiHeadAttention, _width, channel_mixing_activation

__all__ = ["INLINED_WITH_OWN_WEIGHTS", "handler_for", "inlined_with_own_weights"]


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


class _BlockFeedForward(Handler):
    """A transformer block kept as one layer: the units of its feed-forward part prune.

    XLNet's encoder block holds per-head attention biases of its own, and T5's
    attention layers return None for their cache, so `tfprune.graph.flatten`
    cannot inline these blocks. The block's inputs' and outputs' channels are
    pinned (the hidden width, which their normalisation couples anyway); the
    units between the feed-forward Dense layers are a group of their own,
    sliced on the producing Dense layers' kernels and biases (a gated block
    has two, multiplied channel by channel) and on the last Dense's kernel;
    `units_key` records the new width. An activation on the units that does
    not act on each channel alone pins them.

    Args:
        producers: Tuple of strings. The attributes holding the Dense layers
            making the units (a missing one, such as an optional gate, is skipped).
        consumer: String. The attribute holding the Dense layer reading them.
        units_key: String. The constructor argument holding the units.
        activation_name: String or None. An attribute holding an activation
            applied to the units besides the Dense layers' own.
    """

    def __init__(self, producers, consumer, units_key, activation_name=None):
        self.producers = producers
        self.consumer = consumer
        self.units_key = units_key
        self.activation_name = activation_name
        self._kernel_index = {}  # layer name -> index of the first producer's kernel in `layer.weights`

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
        producers = [getattr(layer, name) for name in self.producers if getattr(layer, name, None) is not None]
        consumer = getattr(layer, self.consumer)
        self._kernel_index[layer.name] = [id(weight) for weight in layer.weights].index(id(producers[0].kernel))
        units = tracer.new_channels(producers[0].units, f"{layer.name}_{producers[0].name}")
        for dense in producers:
            tracer.use(layer, dense.kernel, -1, units, "output")
            tracer.use(layer, getattr(dense, "bias", None), 0, units, "output")
        tracer.use(layer, consumer.kernel, 0, units, "input")
        activations = list(producers)
        if self.activation_name is not None:
            activations.append(types.SimpleNamespace(activation=getattr(layer, self.activation_name), name=layer.name))
        for holder in activations:
            why = channel_mixing_activation(holder)
            if why is not None:
                tracer.pin(units, why)
        return outputs

    def resize_for_weights(self, config, output_width, weight_shapes):
        # The surgery builds the graph (so traces the layer) before it resizes.
        return {**config, self.units_key: int(weight_shapes[self._kernel_index[config["name"]]][-1])}

    def build(self, layer, input_shapes, node=None):
        # Called as in the model (on symbolic tensors of the new shapes): such blocks build
        # their sub-layers from several inputs, or only when called.
        values = {
            id(tensor): keras.KerasTensor(shape, dtype=tensor.dtype)
            for tensor, shape in zip(node.input_tensors, input_shapes)
        }
        args, kwargs = node.arguments.fill_in(values)
        layer(*args, **kwargs)


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
    (_MODELS + "xlnet.xlnet_encoder", "XLNetEncoder"): _BlockFeedForward(
        ("feedforward_intermediate_dense",), "feedforward_output_dense", "intermediate_dim", "activation_function_ff"
    ),
    (_MODELS + "t5.t5_transformer_layer", "T5TransformerLayer"): _BlockFeedForward(
        ("input_projector", "gate_projector"), "output_projector", "intermediate_dim"
    ),
}


# Layers holding weights of their own that `tfprune.graph.flatten` inlines all
# the same, each own weight becoming a `tfprune.layers.Weight`: copied through
# its config, `MaskedLMHead` would re-create the token embedding it shares
# with the backbone (the copy has one more vocabulary table than the model);
# inlined, the embedding is one layer called forwards and in reverse. Swin's
# `WindowAttention` (its relative position bias table) has a config that does
# not load back (it writes its output Dropout layer as `proj_drop`).
INLINED_WITH_OWN_WEIGHTS = {
    ("keras_hub.src.layers.modeling.masked_lm_head", "MaskedLMHead"),
    ("keras_hub.src.models.swin_transformer.swin_transformer_layers", "WindowAttention"),
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
