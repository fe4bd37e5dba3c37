"""Channel handlers and recorded operations for keras-hub's diffusion transformers (Stable Diffusion 3's MMDiT).

`tfprune.graph.flatten` inlines the MMDiT's joint blocks (`MMDiTBlock`
and the two `DismantledBlock`s in each): their Dense layers, einsums and
reshapes are then ordinary operations of the graph, so the MLP units and
the hidden widths prune. The joint attention runs over the context tokens
(of a length only known when the model runs) followed by the image
patches, and splits its output back with `attention[:, :context_length]`:
while the block is traced, such a slice is recorded as `SliceToSizes`,
which reads the length when the model runs. MMDiT's position table
(`AdjustablePositionEmbedding`) is sliced with the hidden width like
keras-hub's other position embeddings.
"""

import keras

from tfprune import handlers
from tfprune._keras import hub
from tfprune.handlers import Freeze, Handler, register_handler
from tfprune.handlers_keras_hub import _PerChannelTables

__all__ = ["BY_CLASS", "SliceToSizes"]

_MMDIT = hub.model_module("stable_diffusion_3.mmdit")


def _bound(value, sources, shape_of):
    """A slice bound: None, an int, or `[i, axis]` for the size of `axis` of the `i`-th source."""
    return shape_of(sources[value[0]])[value[1]] if isinstance(value, list) else value


@keras.saving.register_keras_serializable(package="tfprune")
class SliceToSizes(keras.Operation):
    """`x[:, start:stop]` along `axis`, where `start` or `stop` is an axis of another tensor, read when the model runs.

    Recorded by `tfprune.graph.flatten` for `attention[:, :context_length]`
    with `context_length = ops.shape(context)[1]` in a traced block
    (keras-hub's `MMDiTBlock`), whose context length is unknown until the
    model runs.

    Args:
        axis: Int. The axis sliced.
        start: None, an int, or `[i, source_axis]`: the size of
            `source_axis` of the `i`-th tensor after `x`. Defaults to None.
        stop: As `start`. Defaults to None.
        name: Optional name.

    Call arguments:
        x: The tensor to slice.
        *sources: The tensors whose sizes `start` and `stop` refer to.

    Returns:
        The slice of `x`.

    Example:

    >>> op = tfprune.handlers_diffusion.SliceToSizes(axis=1, stop=[0, 1])
    >>> tuple(op(keras.ops.ones((2, 5, 4)), keras.ops.zeros((2, 3))).shape)
    (2, 3, 4)
    """

    def __init__(self, axis, start=None, stop=None, name=None):
        super().__init__(name=name)
        self.axis = int(axis)
        self.start, self.stop = (
            list(bound) if isinstance(bound, (list, tuple)) else None if bound is None else int(bound)
            for bound in (start, stop)
        )

    def _key(self, rank, sources, shape_of):
        bounds = slice(_bound(self.start, sources, shape_of), _bound(self.stop, sources, shape_of))
        return (slice(None),) * (self.axis % rank) + (bounds,)

    def call(self, x, *sources):
        return x[self._key(len(x.shape), sources, keras.ops.shape)]

    def compute_output_spec(self, x, *sources):
        shape = list(x.shape)
        axis = self.axis % len(shape)
        # A bound read from a source axis of unknown size is unknown, not "to the end".
        unknown = any(
            isinstance(bound, list) and sources[bound[0]].shape[bound[1]] is None for bound in (self.start, self.stop)
        )
        bounds = self._key(len(shape), sources, lambda tensor: tensor.shape)[-1]
        shape[axis] = None if unknown or shape[axis] is None else len(range(shape[axis])[bounds])
        return keras.KerasTensor(tuple(shape), dtype=x.dtype)

    def get_config(self):
        return {"axis": self.axis, "start": self.start, "stop": self.stop, "name": self.name}


class _SliceToSizes(Handler):
    """`SliceToSizes`: over an axis other than the channel axis every channel passes; over it, frozen."""

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        if operation.axis % len(source.shape) == len(source.shape) - 1:
            return Freeze(f"'{operation.name}' slices the channel axis").trace(node, tracer)
        return [tracer.channels(source)]


register_handler("SliceToSizes", _SliceToSizes())

# keras-hub layers by (module, class), found by `tfprune.handlers.handler_for`.
BY_CLASS = {
    # Its table (height * width positions, hidden width) is cropped to the image and added to the patches.
    (_MMDIT, "AdjustablePositionEmbedding"): _PerChannelTables(),
}

handlers.register_by_class_name(BY_CLASS)
