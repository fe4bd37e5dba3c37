"""Operations that read a sequence length when the model runs, and their handler.

`tfprune.graph.flatten` records the positions and masks a decoder makes from
its input's length (`keras.ops.arange(length)`, a mask broadcast to the
input's shape) as these operations, so that the traced graph holds for any
length; a `Multiply` of a tensor by a Dense output is recorded as
`DenseMultiply`. Their channels are new and pinned (`_ReadsShape`).
"""

import keras

from tfprune._keras import functional, ops
from tfprune.handlers_base import Handler, _width, handler_for, register_handler

__all__ = ["BroadcastToSizes", "DenseMultiply", "SizeRange"]


@keras.saving.register_keras_serializable(package="tfprune")
class SizeRange(keras.Operation):
    """`keras.ops.arange(start, size, step)` where `size` is an axis of a tensor, read when the model runs.

    Recorded by `tfprune.graph.flatten` for `ops.arange(ops.shape(x)[1])`
    in a traced decoder block (a causal mask's positions).

    Args:
        axis: Int. The axis of the input whose size ends the range.
        start: Int. First value. Defaults to 0.
        step: Int. Defaults to 1.
        dtype: Optional dtype name of the result.
        name: Optional name.

    Call arguments:
        x: A tensor; only its shape is read.

    Returns:
        A 1-D tensor.

    Example:

    >>> keras.ops.convert_to_numpy(tfprune.handlers_decoders.SizeRange(axis=1)(keras.ops.zeros((2, 3, 4)))).tolist()
    [0, 1, 2]
    """

    def __init__(self, axis, start=0, step=1, dtype=None, name=None):
        super().__init__(name=name)
        self.axis = int(axis)
        self.start = int(start)
        self.step = int(step)
        self.range_dtype = dtype

    def call(self, x):
        stop = keras.ops.shape(x)[self.axis]
        return keras.ops.arange(self.start, stop, self.step, dtype=self.range_dtype)

    def compute_output_spec(self, x):
        size = x.shape[self.axis]
        length = None if size is None else len(range(self.start, size, self.step))
        dtype = self.range_dtype or "int32"
        return keras.KerasTensor((length,), dtype=dtype)

    def get_config(self):
        return {"axis": self.axis, "start": self.start, "step": self.step, "dtype": self.range_dtype,
                "name": self.name}  # fmt: skip


@keras.saving.register_keras_serializable(package="tfprune")
class BroadcastToSizes(keras.Operation):
    """`keras.ops.broadcast_to(x, shape)` where entries of `shape` are axes of other tensors.

    Recorded by `tfprune.graph.flatten` for `ops.broadcast_to(mask,
    (batch, length, length))` in a traced decoder block.

    Args:
        sizes: List. One entry per output axis: an int, or `[i, axis]` for
            the size of `axis` of the `i`-th tensor after `x`.
        name: Optional name.

    Call arguments:
        x: The tensor to broadcast.
        *sources: The tensors whose sizes `sizes` refers to.

    Returns:
        The broadcast tensor.

    Example:

    >>> op = tfprune.handlers_decoders.BroadcastToSizes(sizes=[[0, 0], 3])
    >>> tuple(op(keras.ops.ones((3,)), keras.ops.zeros((2, 5))).shape)
    (2, 3)
    """

    def __init__(self, sizes, name=None):
        super().__init__(name=name)
        self.sizes = [
            list(size) if isinstance(size, (list, tuple)) else int(size) for size in sizes
        ]

    def _shape(self, sources, shape_of):
        return tuple(
            shape_of(sources[size[0]])[size[1]] if isinstance(size, list) else size
            for size in self.sizes
        )

    def call(self, x, *sources):
        return keras.ops.broadcast_to(x, self._shape(sources, keras.ops.shape))

    def compute_output_spec(self, x, *sources):
        return keras.KerasTensor(self._shape(sources, lambda tensor: tensor.shape), dtype=x.dtype)

    def get_config(self):
        return {"sizes": self.sizes, "name": self.name}


_MULTIPLY = ops.operation_class(
    keras.ops.multiply, keras.KerasTensor((2,)), keras.KerasTensor((2,))
)


@keras.saving.register_keras_serializable(package="tfprune")
class DenseMultiply(_MULTIPLY):
    """`keras.ops.multiply`, whose output is sparse only when a tensor input is.

    Keras's own `Multiply` marks `x * c` sparse when the constant `c` is not
    a Keras tensor; `tfprune.graph.flatten` records such products with this
    operation, so that the layers after them are not given a sparse
    placeholder (`graph_inline._dense_unless_sparse_input`).

    Example:

    >>> x = keras.Input((4,))
    >>> tfprune.handlers_decoders.DenseMultiply()(x, 2.0).sparse
    False
    """

    def compute_output_spec(self, x1, x2):
        spec = super().compute_output_spec(x1, x2)
        sparse = any(
            getattr(value, "sparse", False)
            for value in (x1, x2)
            if isinstance(value, keras.KerasTensor)
        )
        return keras.KerasTensor(spec.shape, dtype=spec.dtype, sparse=sparse)


class _ReadsShape(Handler):
    """`SizeRange` / `BroadcastToSizes`: new, pinned channels; the inputs read only for their shapes pass untouched."""

    def trace(self, node, tracer):
        output = node.outputs[0]
        reason = f"'{node.operation.name}' makes positions or a mask from a sequence length"
        if isinstance(node.operation, BroadcastToSizes):
            # The broadcast tensor's own channels (a mask's positions) are laid out anew.
            tracer.pin(tracer.channels(node.input_tensors[0]), reason)
        width = _width(output)
        channels = tracer.new_channels(1 if width is None else width, node.operation.name)
        tracer.pin(channels, reason)
        return [channels]


register_handler("SizeRange", _ReadsShape())
register_handler(
    "DenseMultiply",
    handler_for(functional.producer(keras.ops.multiply(keras.KerasTensor((2,)), 2.0)).operation),
)
register_handler("BroadcastToSizes", _ReadsShape())
