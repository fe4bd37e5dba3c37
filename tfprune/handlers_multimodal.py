"""Vision-language decoders: masks padded to a sequence length read while the model runs.

keras-hub's PaliGemma concatenates the image tokens and the text tokens
into one sequence; each decoder block pads the text's padding mask at the
front to that sequence's length (`pad = length - ops.shape(mask)[1]`, then
`ops.pad(mask, ((0, 0), (pad, 0)))`), so that the image tokens are always
seen. Both lengths are unknown on symbolic tensors. While a block is
traced (`tfprune.graph.flatten`), the difference of two sequence-length
markers is a marker too, and `ops.pad` given one records `PadToSizes`,
which works the pad out from the tensors when the model runs: the block is
inlined, and its attention heads and MLP units prune like Gemma's.

BLIP-2's OPT embedding reads its positions from a buffer made when it is
built, sliced to the sequence length (`self._position_ids[:, :length]`),
which a symbolic length cannot slice. It is traced with `traceable_call`
instead: the same positions made from the length
(`position_offset + ops.arange(length)`, recorded as a `SizeRange`), and
the image queries' positions broadcast over the batch, so that the
position embedding is one layer of the graph. Inlined, the token embedding
is one layer with the causal LM's output projection it is tied to (kept
whole, the embedding layer held a second copy of it). The trace is checked
against the layer's own `call` (`tfprune.graph.flatten` runs both on a
probe).
"""

import keras

from tfprune._keras import hub
from tfprune.handlers import Handler, _width, register_handler

__all__ = ["PadToSizes", "TRACEABLE_CALLS", "traceable_call"]


@keras.saving.register_keras_serializable(package="tfprune")
class PadToSizes(keras.Operation):
    """`keras.ops.pad(x, pad_width)` where a pad makes an axis of `x` as long as an axis of another tensor.

    Recorded by `tfprune.graph.flatten` for `ops.pad(mask, ((0, 0),
    (ops.shape(x)[1] - ops.shape(mask)[1], 0)))` in a traced decoder block
    (PaliGemma's padding mask, padded over the image tokens).

    Args:
        pad_width: List. One `[before, after]` pair per axis of `x`; each
            entry an int, or `[i, axis]` for the size of `axis` of the
            `i`-th tensor after `x` less the size of `x` on this axis.
        constant_values: Number. The value padded in. Defaults to 0.
        name: Optional name.

    Call arguments:
        x: The tensor to pad.
        *sources: The tensors whose sizes `pad_width` refers to.

    Returns:
        The padded tensor.

    Example:

    >>> op = tfprune.handlers_multimodal.PadToSizes(pad_width=[[0, 0], [[0, 1], 0]], constant_values=1)
    >>> keras.ops.convert_to_numpy(op(keras.ops.zeros((1, 2), "int32"), keras.ops.zeros((1, 5)))).tolist()
    [[1, 1, 1, 0, 0]]
    """

    def __init__(self, pad_width, constant_values=0, name=None):
        super().__init__(name=name)
        self.pad_width = [[list(side) if isinstance(side, (list, tuple)) else int(side) for side in pair]
                          for pair in pad_width]  # fmt: skip
        self.constant_values = constant_values

    def call(self, x, *sources):
        shape = keras.ops.shape(x)
        widths = [[keras.ops.shape(sources[side[0]])[side[1]] - shape[axis] if isinstance(side, list) else side
                   for side in pair] for axis, pair in enumerate(self.pad_width)]  # fmt: skip
        return keras.ops.pad(x, widths, constant_values=self.constant_values)

    def compute_output_spec(self, x, *sources):
        shape = []
        for size, pair in zip(x.shape, self.pad_width):
            references = [side for side in pair if isinstance(side, list)]
            others = sum(side for side in pair if not isinstance(side, list))
            if references:  # padded to the size of the tensor it refers to
                targets = [sources[index].shape[axis] for index, axis in references]
                size = None if None in targets or len(targets) > 1 else targets[0] + others
            elif size is not None:
                size += others
            shape.append(size)
        return keras.KerasTensor(tuple(shape), dtype=x.dtype)

    def get_config(self):
        return {"pad_width": self.pad_width, "constant_values": self.constant_values, "name": self.name}


class _PadsToSizes(Handler):
    """`PadToSizes`: the padded tensor (a mask) is laid out anew; its channels and the new ones are pinned."""

    def trace(self, node, tracer):
        reason = f"'{node.operation.name}' pads a mask to a sequence length"
        tracer.pin(tracer.channels(node.input_tensors[0]), reason)
        width = _width(node.outputs[0])
        channels = tracer.new_channels(1 if width is None else width, node.operation.name)
        tracer.pin(channels, reason)
        return [channels]


def _blip2_opt_embeddings_call(self, token_ids, position_ids=None, visual_position_ids=None, training=None):
    """`BLIP2OPTEmbeddings.call` with its positions made from the sequence length rather than sliced from a buffer."""
    if position_ids is None:
        # What `self._position_ids[:, :length]` holds: `position_offset`, `position_offset + 1`, ...
        length = keras.ops.shape(token_ids)[-1]
        position_ids = keras.ops.expand_dims(keras.ops.arange(length, dtype="int32") + self.position_offset, 0)
    if visual_position_ids is not None and not isinstance(visual_position_ids, keras.KerasTensor):
        # A constant: broadcast over the batch, it is a graph tensor, so the position embedding
        # stays a layer on this path too (rather than its rows becoming a constant).
        batch = keras.ops.shape(token_ids)[0]
        visual_position_ids = keras.ops.broadcast_to(visual_position_ids, (batch, visual_position_ids.shape[-1]))
    return type(self).call(self, token_ids, position_ids=position_ids, visual_position_ids=visual_position_ids,
                           training=training)  # fmt: skip


# keras-hub layers traced with another `call` that computes the same: (module, class) -> function.
TRACEABLE_CALLS = {
    (hub.model_module("blip2.blip2_custom_opt"), "BLIP2OPTEmbeddings"): _blip2_opt_embeddings_call,
}


def traceable_call(layer):
    """The function `tfprune.graph.flatten` traces in place of `layer.call`, or None.

    Some keras-hub layers compute what a traced graph can record in a way a
    trace cannot follow (BLIP-2's OPT embedding slices a buffer of positions
    by the sequence length); the function computes the same from the
    layer's attributes. The trace is still checked against the layer's own
    `call`.

    Args:
        layer: A layer.

    Returns:
        A function taking the layer and `call`'s arguments, or None.

    Example:

    >>> tfprune.handlers_multimodal.traceable_call(keras.layers.Dense(2)) is None
    True
    """
    return TRACEABLE_CALLS.get((type(layer).__module__, type(layer).__name__))


register_handler("PadToSizes", _PadsToSizes())
