"""Built-in handlers for keras-hub layers that hold weights of their own.

keras-hub builds its models from subclassed layers. Those whose `call` only
runs other layers and `keras.ops` are inlined by `tfprune.graph.flatten`;
the ones below hold weights themselves, so they stay one layer and need a
handler to let their channels shrink. `tfprune.handlers.handler_for` looks
them up here by class, only for layers of a model that uses keras-hub.
"""

from tfprune.handlers import Freeze, Handler, _width

__all__ = ["handler_for"]


class _ViTPatchingAndEmbedding(Handler):
    """keras-hub's `ViTPatchingAndEmbedding`: the ViT's hidden width starts here.

    A patch convolution (`patch_embedding`, `hidden_dim` filters), an
    optional class token and a learned position embedding, all of the hidden
    width: the output channels are the convolution's filters, the class
    token's and the position table's last axis. Resizing sets `hidden_dim`.
    """

    def trace(self, node, tracer):
        layer = node.operation
        if layer.data_format != "channels_last":
            return Freeze(f"'{layer.name}' uses data_format={layer.data_format!r}").trace(node, tracer)
        inputs = tracer.channels(node.input_tensors[0])
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        convolution = layer.patch_embedding
        tracer.use(layer, convolution.kernel, -2, inputs, "input")
        tracer.use(layer, convolution.kernel, -1, outputs, "output")
        tracer.use(layer, getattr(convolution, "bias", None), 0, outputs, "output")
        tracer.use(layer, getattr(layer, "class_token", None), -1, outputs, "param")
        tracer.use(layer, layer.position_embedding.embeddings, -1, outputs, "param")
        return [outputs]

    def resize(self, config, output_width):
        return {**config, "hidden_dim": output_width}


class _PositionEmbedding(Handler):
    """keras-hub's `PositionEmbedding`: a learned table, one row per position, of its input's width.

    Its output has the input's shape and channels (it is added to the token
    embeddings afterwards); the table's last axis is sliced with them.
    """

    def trace(self, node, tracer):
        layer = node.operation
        channels = tracer.channels(node.input_tensors[0])
        tracer.use(layer, layer.position_embeddings, -1, channels, "param")
        return [channels]


_BY_CLASS = {
    ("keras_hub.src.models.vit.vit_layers", "ViTPatchingAndEmbedding"): _ViTPatchingAndEmbedding(),
    ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"): _PositionEmbedding(),
}


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
    return _BY_CLASS.get((type(operation).__module__, type(operation).__name__))
