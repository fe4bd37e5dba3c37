"""Handlers for keras-hub's SAM 3 (`SAM3PromptableConceptBackbone`) layers.

SAM 3's components (vision encoder and neck, text encoder, geometry encoder,
DETR encoder and decoder, mask decoder) are composites that
`tfprune.graph.flatten` inlines; some layers inside them need help:

- its attention layers (`SAM3Attention`, and `SAM3RoPEAttention` in the
  vision transformer) compute their head width as `hidden_dim // num_heads`
  and write `hidden_dim` channels: they stay one layer whose heads prune
  (`_SAM3Heads`), rebuilt as tfprune subclasses that keep the head width
  and the output width explicit, so the pruned model reloads from `.keras`;
- its sine position encoding (`SAM3SinePositionEmbedding`) declares a wrong
  output shape (channels on axis 1, where its call puts them last), so no
  block calling it could be inlined: it is copied as a tfprune subclass with
  the right shape (`_SinePositions`), a constant repeated over the batch;
- its mask decoder declares masks of `hidden_dim` channels where its call
  makes one per query: `corrected_output_spec` gives the flattening's check
  the shape the call makes;
- its geometry encoder branches with `ops.cond` on Python functions, so it
  stays whole; the units of its blocks' MLPs prune (`_StackFeedForward`).

`tfprune.handlers.handler_for` finds the classes of `BY_CLASS` (registered at import).
"""

import keras

from tfprune import _first_use, handlers, handlers_decoders
from tfprune._keras import hub
from tfprune.handlers import Freeze, Handler, _width, channel_mixing_activation
from tfprune.handlers_hub_blocks import _attribute, _BlockFeedForward, _DenseProjectionHeads

__all__ = ["BY_CLASS", "corrected_output_spec", "subclass_of"]

_MODULE = hub.model_module("sam3.sam3_layers")


class _ExplicitHeadWidth:
    """SAM 3 attention with an explicit `head_dim` (keras-hub's computes `hidden_dim // num_heads`).

    The query, key and value projections make `num_heads * head_dim` units
    and the output projection reads them back to `hidden_dim` channels, so
    heads can go while the hidden width and the head width stay. keras-hub's
    call reshapes the attended heads to `self.hidden_dim` channels: that
    attribute holds the heads' width here, and the config's `hidden_dim`
    the output width.
    """

    def __init__(self, hidden_dim, num_heads, *args, head_dim=None, **kwargs):
        super().__init__(hidden_dim, num_heads, *args, **kwargs)
        self.explicit_head_dim = head_dim
        self.output_dim = int(hidden_dim)
        if head_dim is not None:
            self.head_dim = int(head_dim)
            self.scale = self.head_dim**-0.5
            self.hidden_dim = self.num_heads * self.head_dim
            for dense in (self.q_proj, self.k_proj, self.v_proj):
                dense.units = self.hidden_dim  # not built yet: `build` makes the kernels

    def _build_projections(self, query_shape, key_shape, value_shape):
        for dense, shape in zip((self.q_proj, self.k_proj, self.v_proj), (query_shape, key_shape, value_shape)):
            dense.build(shape)
        self.o_proj.build((*query_shape[:-1], self.num_heads * self.head_dim))
        self.built = True

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.output_dim, "head_dim": self.explicit_head_dim}


class _ExplicitAttention(_ExplicitHeadWidth):
    __doc__ = _ExplicitHeadWidth.__doc__

    def build(self, query_shape, key_shape, value_shape):
        self._build_projections(query_shape, key_shape, value_shape)


class _ExplicitRoPEAttention(_ExplicitHeadWidth):
    __doc__ = _ExplicitHeadWidth.__doc__

    def build(self, input_shape):
        self.height, self.width = input_shape[1], input_shape[2]  # its grid, as keras-hub's build reads it
        self._build_projections(input_shape, input_shape, input_shape)


class _CorrectShape:
    """SAM 3's sine position encoding, declaring the shape its call returns: `(batch, height, width, channels)`.

    keras-hub's `compute_output_shape` puts the channels on axis 1, so Keras
    would record every block calling it with wrong shapes; its config holds
    a `scale` its constructor refuses without `normalize`, left out here.
    """

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * self.num_pos_feats)

    def get_config(self):
        # keras-hub's constructor refuses a `scale` without `normalize`, which its own config writes.
        return _loadable_positions_config(super().get_config())

    def compute_output_spec(self, inputs, height=None, width=None, training=None):
        return keras.KerasTensor((inputs.shape[0], height, width, 2 * self.num_pos_feats), dtype=self.compute_dtype)


def _loadable_positions_config(config):
    return config if config.get("normalize") else {key: value for key, value in config.items() if key != "scale"}


# keras-hub layers copied or rebuilt as tfprune subclasses: name -> mixin. The classes are made
# on first use (importing tfprune does not import keras-hub), registered as `tfprune>name`.
_SUBCLASSES = {
    "SAM3Attention": _ExplicitAttention,
    "SAM3RoPEAttention": _ExplicitRoPEAttention,
    "SAM3SinePositionEmbedding": _CorrectShape,
}
_MADE = {}


def subclass_of(name):
    """tfprune's subclass of keras-hub's SAM 3 layer `name`, made on first use.

    Args:
        name: String. `"SAM3Attention"`, `"SAM3RoPEAttention"` or
            `"SAM3SinePositionEmbedding"`.

    Returns:
        The class (registered for serialization in package `tfprune`).

    Raises:
        ImportError: If keras-hub (with SAM 3) is not installed.

    Example:

    >>> subclass_of("SAM3Attention").__name__  # doctest: +SKIP
    'SAM3Attention'
    """
    return _first_use.subclass(_MADE, name, _MODULE, _SUBCLASSES[name], __name__,
                               handler=lambda: BY_CLASS[(_MODULE, name)])  # fmt: skip


for _name in _SUBCLASSES:
    _first_use.register_stand_in(_name, subclass_of)


def __getattr__(name):
    # `tfprune.handlers_sam3.SAM3Attention`.
    return _first_use.module_attribute(name, _SUBCLASSES, subclass_of, __name__)


class _SAM3Heads(_DenseProjectionHeads):
    """The heads of SAM 3's attention layers: `_DenseProjectionHeads` with a query, key and value of their own.

    `SAM3Attention` projects its `query`, `key` and `value` arguments (three
    tensors in cross-attention), so each projection reads the channels of
    its own input. Called with an `attention_bias` (the DETR decoder's box
    position bias, one per head), its heads stay: the bias is made outside
    the layer, and tfprune does not slice it. Rebuilt as
    `subclass_of(<class name>)`, which keeps the head width and the output
    width explicit.
    """

    def __init__(self, name):
        super().__init__(("q_proj", "k_proj", "v_proj", "o_proj"), "num_heads", "head_dim", output_key="hidden_dim")
        self.name = name

    def trace(self, node, tracer):
        layer = node.operation
        bias = node.arguments.kwargs.get("attention_bias")
        if isinstance(bias, keras.KerasTensor):
            return Freeze(f"'{layer.name}' adds a per-head attention bias made outside it").trace(node, tracer)
        return super().trace(node, tracer)

    def _projection_inputs(self, node, count):
        if self.name != "SAM3Attention":
            return super()._projection_inputs(node, count)
        # keras-hub's call takes (query, key, value): three tensors in cross-attention.
        arguments = [*node.arguments.args, *(node.arguments.kwargs.get(key) for key in ("query", "key", "value"))]
        return [value for value in arguments if isinstance(value, keras.KerasTensor)][:count]

    def rebuild(self, layer, config):
        """A new layer from `config`, as tfprune's subclass keeping the head and output widths."""
        cls = subclass_of(self.name)
        parent = next(base for base in cls.__mro__ if base.__module__ == _MODULE)
        arguments = handlers_decoders._constructor_config(layer, parent)
        arguments.update({key: config[key] for key in ("num_heads", "hidden_dim") if key in config})
        arguments["name"] = config["name"]
        return cls.from_config({**arguments, "head_dim": self._layouts[layer.name][1]})

    def build(self, layer, input_shapes, node=None):
        # Called as in the model, on symbolic tensors of the new shapes.
        values = {id(tensor): keras.KerasTensor(tuple(shape), dtype=tensor.dtype)
                  for tensor, shape in zip(node.input_tensors, input_shapes)}  # fmt: skip
        args, kwargs = node.arguments.fill_in(values)
        layer(*args, **kwargs)


class _SinePositions(Handler):
    """SAM 3's sine position encoding: a constant of the grid, repeated over its input's batch.

    Its input gives only the batch size: its channels are untouched. The
    encoding's channels are new and pinned (a fixed function of the grid
    position). Copied as `subclass_of("SAM3SinePositionEmbedding")`, which
    declares the shape the layer computes.
    """

    def trace(self, node, tracer):
        layer = node.operation
        outputs = []
        for tensor in node.outputs:
            outputs.append(tracer.new_channels(_width(tensor), layer.name))
            tracer.pin(outputs[-1], f"'{layer.name}' is a sine position encoding (a constant of the grid)")
        return outputs

    def copy(self, layer):
        """A copy of `layer` as tfprune's subclass with the right output shape (`tfprune.graph.flatten`)."""
        cls = subclass_of("SAM3SinePositionEmbedding")
        return cls.from_config(_loadable_positions_config(layer.get_config()))


def _mask_decoder_spec(layer):
    """`SAM3MaskDecoder`'s output spec: its masks have one channel per query (keras-hub declares `hidden_dim`)."""

    def spec(decoder_queries, *args, **kwargs):
        masks, semantic = layer.compute_output_spec(decoder_queries, *args, **kwargs)
        queries = decoder_queries.shape[1]
        shape = (*masks.shape[:-1], queries) if layer.data_format == "channels_last" else (
            masks.shape[0], queries, *masks.shape[2:])  # fmt: skip
        return keras.KerasTensor(shape, dtype=masks.dtype), semantic

    return spec


_OUTPUT_SPECS = {(_MODULE.replace("sam3_layers", "sam3_mask_decoder"), "SAM3MaskDecoder"): _mask_decoder_spec}


def corrected_output_spec(layer):
    """The output spec function of a SAM 3 layer whose own is wrong, or None.

    `tfprune.graph.flatten` checks a traced composite against its output
    spec; keras-hub's `SAM3MaskDecoder` declares masks of `hidden_dim`
    channels where its call makes one per query.

    Args:
        layer: A layer whose class is defined in keras-hub.

    Returns:
        A function taking the layer's call arguments, or None.

    Example:

    >>> corrected_output_spec(keras.layers.Dense(2)) is None
    True
    """
    make = _OUTPUT_SPECS.get((type(layer).__module__, type(layer).__name__))
    return None if make is None else make(layer)


class _StackFeedForward(_BlockFeedForward):
    """A stack of SAM 3 blocks kept as one layer (its geometry encoder): the units of their MLPs prune.

    `SAM3GeometryEncoder` encodes its box prompts under `ops.cond` on two
    Python functions, which a functional graph cannot record (nor a `.keras`
    file name), so `tfprune.graph.flatten` keeps it whole: its inputs' and
    outputs' channels are pinned. Its constructor takes one
    `intermediate_dim` for the MLPs of all its blocks, so unit `u` of every
    block's MLP (`fc1`'s output, `fc2`'s input) is one channel of one group:
    removing a unit whose `fc2` rows are zero in every block leaves the
    outputs unchanged. Its attention heads stay (its attention layers'
    head width is `hidden_dim // num_heads`).
    """

    def __init__(self):
        super().__init__(("mlp.fc1",), "mlp.fc2", "intermediate_dim", "mlp.act")

    def trace(self, node, tracer):
        layer = node.operation
        reason = (
            f"tfprune cannot see inside layer '{layer.name}' ({type(layer).__name__}): its call branches with "
            "`ops.cond` on two Python functions, which a functional graph cannot record, so it is kept whole"
        )
        outputs = Freeze(reason).trace(node, tracer)
        blocks = [block for block in getattr(layer, "layers", []) if isinstance(block, keras.layers.Layer)]
        pairs = [(_attribute(block, self.producers[0]), _attribute(block, self.consumer)) for block in blocks]
        dense_layers = [dense for pair in pairs for dense in pair]
        if not pairs or any(type(dense) is not keras.layers.Dense or getattr(dense, "lora_enabled", False)
                            or getattr(dense, "quantization_mode", None) for dense in dense_layers):  # fmt: skip
            return outputs  # another keras-hub version's attributes, or LoRA/quantized: nothing is sliced
        if len({fc1.units for fc1, _ in pairs}) != 1:
            return outputs
        self._kernel_index[layer.name] = [id(weight) for weight in layer.weights].index(id(pairs[0][0].kernel))
        units = tracer.new_channels(pairs[0][0].units, f"{layer.name}_mlp_units")
        for block, (fc1, fc2) in zip(blocks, pairs):
            tracer.use(layer, fc1.kernel, -1, units, "output")
            tracer.use(layer, fc1.bias, 0, units, "output")
            tracer.use(layer, fc2.kernel, 0, units, "input")
            activation = _attribute(block, self.activation_name)
            why = channel_mixing_activation(activation) if activation is not None else None
            if why is not None:
                tracer.pin(units, why)
        return outputs


BY_CLASS = {
    (_MODULE, "SAM3Attention"): _SAM3Heads("SAM3Attention"),
    (_MODULE, "SAM3RoPEAttention"): _SAM3Heads("SAM3RoPEAttention"),
    (_MODULE, "SAM3SinePositionEmbedding"): _SinePositions(),
    (_MODULE.replace("sam3_layers", "sam3_geometry_encoder"), "SAM3GeometryEncoder"): _StackFeedForward(),
}

handlers.register_by_class_name(BY_CLASS)
