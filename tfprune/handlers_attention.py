"""Handlers of Keras's attention: `MultiHeadAttention` (heads as a channel group) and `dot_product_attention`."""

from tfprune._keras import layers as keras_layers
from tfprune.handlers_base import Freeze, Handler, _width

__all__ = []  # handlers registered by `tfprune.handlers`; `attention_inputs` serves the family modules


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
            return Freeze(
                f"'{node.operation.name}' has no value input of its output's width"
            ).trace(node, tracer)
        for tensor in (query, key, value):
            tracer.pin(
                tracer.channels(tensor), f"'{node.operation.name}' contracts them in attention"
            )
        return [tracer.channels(value)]


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
        output_shape = keras_layers.attention_output_shape(layer)
        multi_axis_output = isinstance(output_shape, (list, tuple)) and len(output_shape) != 1
        why = (
            "is a gated attention layer (use_gate=True)" if keras_layers.gated_attention(layer)
            else "returns its attention scores" if len(node.outputs) != 1
            else f"has a multi-axis output_shape {tuple(output_shape)}" if multi_axis_output
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        heads = tracer.new_channels(layer.num_heads, f"{layer.name}_heads")
        tracer.mark_heads(heads, layer.name)
        projections = keras_layers.attention_projections(layer)
        for dense, tensor in ((projections["query"], query), (projections["key"], key if key is not None else value),
                              (projections["value"], value)):  # fmt: skip
            tracer.use(layer, dense.kernel, 0, tracer.channels(tensor), "input")
            tracer.use(layer, dense.kernel, 1, heads, "output")
            tracer.use(layer, getattr(dense, "bias", None), 0, heads, "output")
        output = projections["output"]
        tracer.use(layer, output.kernel, 0, heads, "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, -1, outputs, "output")
        tracer.use(layer, getattr(output, "bias", None), 0, outputs, "output")
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
