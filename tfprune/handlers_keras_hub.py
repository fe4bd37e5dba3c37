"""Built-in handlers for keras-hub layers that hold weights of their own.

keras-hub builds its models from subclassed layers. Those whose `call` only
runs other layers and `keras.ops` are inlined by `tfprune.graph.flatten`;
the ones below hold weights themselves, so they stay one layer and need a
handler to let their channels shrink. `tfprune.handlers.handler_for` looks
them up here by class, only for layers of a model that uses keras-hub.
The handlers of blocks and attention layers read by attribute names live
in `tfprune.handlers_hub_blocks`, Moonshine's in `tfprune.handlers_moonshine`.
"""


import keras

from tfprune import _first_use, _utils, handlers, handlers_decoders, handlers_gemma
from tfprune._keras import hub
from tfprune.handlers import Freeze, Handler, _MultiHeadAttention, _width
from tfprune.handlers_hub_blocks import (
    _SUBCLASSES,
    _BlockFeedForward,
    _DenseProjectionHeads,
    _first_input,
    add_subclass,
    subclass_of,
)
from tfprune.handlers_moonshine import (  # noqa: F401  (re-exported: where they used to live)
    _MOONSHINE_ATTENTION,
    _DeferredMoonshineAttention,
    _RecordableAttention,
    recordable_moonshine_attention,
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


# tfprune subclasses of keras-hub layers whose heads shrink (`tfprune.handlers_hub_blocks.subclass_of`).
add_subclass("DINOV3Attention", hub.model_module("dinov3.dinov3_layers"), _ExplicitDINOV3Attention)
add_subclass("MultiHeadAttentionWithRelativePE", hub.model_module("vit_det.vit_layers"), _ExplicitViTDetAttention)


def __getattr__(name):
    # `tfprune.handlers_keras_hub.DINOV3Attention` (how Keras finds the class of a saved layer).
    return _first_use.module_attribute(name, _SUBCLASSES, subclass_of, __name__)


_BY_CLASS = {
    (hub.model_module("vit.vit_layers"), "ViTPatchingAndEmbedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("deit.deit_layers"), "DeiTEmbeddings"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("clip.clip_layers"), "CLIPVisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("siglip.siglip_layers"), "SigLIPVisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("metaclip_2.metaclip_2_layers"), "MetaCLIP2VisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("dinov2.dinov2_layers"), "DINOV2Embedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("dinov3.dinov3_layers"), "DINOV3Embedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("pali_gemma.pali_gemma_vit"), "PaliGemmaVitEmbeddings"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("gemma3.gemma3_vision_encoder"), "Gemma3VisionEmbedding"): _PatchEmbedding("hidden_dim"),
    (hub.model_module("vit_det.vit_layers"), "ViTDetPatchingAndEmbedding"): _PatchEmbedding("embed_dim"),
    (hub.model_module("mit.mit_layers"), "OverlappingPatchingAndEmbedding"): _PatchEmbedding("project_dim"),
    (hub.model_module("vit_det.vit_layers"), "AddPositionalEmbedding"): _PerChannelTables("embed_dim"),
    (hub.model_module("mobilenetv5.mobilenetv5_layers"), "LayerScale2d"): _PerChannelTables("dim"),
    (hub.model_module("dinov2.dinov2_layers"), "DINOV2LayerScale"): _PerChannelTables("hidden_dim"),
    (hub.model_module("dinov3.dinov3_layers"), "DINOV3LayerScale"): _PerChannelTables("hidden_dim"),
    (hub.model_module("mobilenetv5.mobilenetv5_layers"), "RmsNorm2d"): _PerChannelTables("dim", normalizes=True),
    (hub.layer_module("modeling.position_embedding"), "PositionEmbedding"): _PerChannelTables(),
    # MultiHeadAttention with a key/value cache for decoding: called without one (as in a
    # functional graph) it computes what MultiHeadAttention does, with the same weights
    # (keras-hub's own CachedMultiHeadAttention: handlers_decoders).
    (hub.model_module("whisper.whisper_cached_multi_head_attention"), "WhisperCachedMultiHeadAttention"): _MultiHeadAttention(),
    _MOONSHINE_ATTENTION: _RecordableAttention(),
    (hub.model_module("xlnet.xlnet_encoder"), "XLNetEncoder"): _BlockFeedForward(
        ("feedforward_intermediate_dense",), "feedforward_output_dense", "intermediate_dim", "activation_function_ff"
    ),
    (hub.model_module("t5.t5_transformer_layer"), "T5TransformerLayer"): _BlockFeedForward(
        ("input_projector", "gate_projector"), "output_projector", "intermediate_dim",
        attentions=("self_attention", "cross_attention"), chain=("position_bias", 1, 1),
    ),
    # T5Gemma's decoder blocks: their grouped-query attention layers (`num_key_value_heads`
    # key/value heads) keep their heads here; the gated MLP's units prune.
    (hub.model_module("t5gemma.t5gemma_decoder"), "T5GemmaDecoderLayer"): _BlockFeedForward(
        ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size", "mlp.act_fn"
    ),
    (hub.model_module("t5gemma2.t5gemma2_decoder"), "T5Gemma2DecoderLayer"): _BlockFeedForward(
        ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size", "mlp.act_fn"
    ),
    # FNet mixes the tokens with a 2-D Fourier transform over the sequence and the hidden width:
    # the hidden width is inherently frozen (every output channel reads every input channel),
    # and the block cannot be inlined (Keras's `fft2` refuses a sequence of unknown length).
    (hub.model_module("roformer_v2.roformer_v2_attention"), "RoformerAttention"): _DenseProjectionHeads(
        ("q_dense", "k_dense", "v_dense", "o_dense"), "heads", output_key="out_dim"
    ),
    (hub.model_module("dinov3.dinov3_layers"), "DINOV3Attention"): _DenseProjectionHeads(
        ("query_dense", "key_dense", "value_dense", "output_dense"), "num_heads", "head_dim",
        output_key="hidden_dim", subclass="DINOV3Attention",
    ),
    (hub.model_module("vit_det.vit_layers"), "MultiHeadAttentionWithRelativePE"): _DenseProjectionHeads(
        ("qkv", "projection"), "num_heads", "key_dim", output_key="output_dim",
        subclass="MultiHeadAttentionWithRelativePE",
    ),
    (hub.model_module("depth_anything.depth_anything_layers"), "DepthAnythingFeatureFusionLayer"): _UniformWidthBlock(
        "hidden_dim"
    ),
    (hub.model_module("depth_anything.depth_anything_layers"), "DepthAnythingDepthEstimationHead"): _FirstConvolutionReads(
        "conv1", "head_in_index"
    ),
    (hub.model_module("esm.esm_attention"), "EsmSelfAttention"): _DenseProjectionHeads(
        ("q_dense", "k_dense", "v_dense", "o_dense"), "heads", output_key="out_dim"
    ),
    (hub.layer_module("modeling.f_net_encoder"), "FNetEncoder"): _BlockFeedForward(
        *hub.FNET_FEEDFORWARD, "intermediate_dim"
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
    (hub.layer_module("modeling.masked_lm_head"), "MaskedLMHead"),
    (hub.model_module("swin_transformer.swin_transformer_layers"), "WindowAttention"),
    (hub.model_module("parseq.parseq_decoder"), "PARSeqDecoder"),
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


_BY_CLASS[(hub.layer_module("modeling.rms_normalization"), "RMSNormalization")] = _AsKerasRMSNormalization()


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


_BY_CLASS[(hub.model_module("d_fine.d_fine_decoder"), "DFineDecoder")] = _DFineDecoder()

handlers.register_by_class_name(_BY_CLASS)
