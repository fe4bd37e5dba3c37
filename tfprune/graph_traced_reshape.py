"""`keras.ops.reshape` as it acts while `flatten` traces a composite layer.

A layer's `call` often reshapes with the batch size read from a tensor
(`B = ops.shape(x)[0]`, then `ops.reshape(y, (B, -1, C))`), which is None on
symbolic tensors: recorded as it is, the reshape could not run and its
output would lose the size the -1 stands for. While a trace runs,
`tfprune.graph_composites` puts `_static_reshape_call` in place of the
symbolic call of Keras's `Reshape` operation: the batch entry becomes -1,
a -1 beside it is worked out from how many rows of the input's first axis a
sample fills (`tfprune._batch_axis`), and a shape of sizes only known when
the model runs is recorded as an operation reading them (`ReshapeToSizes`).
"""

import keras
import numpy as np

from tfprune import _batch_axis, _utils, handlers_gemma
from tfprune._keras import ops as keras_ops
from tfprune.graph_traced_ops import (
    _BATCH_ROWS,
    _sizes_read_when_run,
    _TracedBatch,
    _TracedSize,
    _tracing_here,
)

__all__ = []

_RESHAPE_OPERATION = keras_ops.operation_class(keras.ops.reshape, keras.KerasTensor((1, 2)), (2,))
_RESHAPE_SYMBOLIC_CALL = _RESHAPE_OPERATION.symbolic_call
_GUESSED = [0]  # reshapes whose -1 beside the traced batch size was worked out


class _UnknownReshape(ValueError):
    """A traced reshape whose target sizes are only known when the model runs."""


def _static_reshape_call(self, x, *args, **kwargs):
    """`keras.ops.reshape` while a composite is traced: a traced batch size becomes -1.

    A layer's `call` often reshapes with `B = ops.shape(x)[0]`, which is None
    on symbolic tensors: the recorded `Reshape` would hold None (it cannot
    run) and its output would lose every size the -1 beside it stands for.
    When the batch entry is the only unknown one it becomes -1. Beside
    another -1 (`(B, -1, C)`), that -1 is worked out from how many rows of
    the input's first axis a sample fills (not always one: code folds windows
    or heads into it), read from the input's history (`_batch_axis`); when
    that is unknown the trace is refused.
    """
    if not _tracing_here():
        return _RESHAPE_SYMBOLIC_CALL(self, x, *args, **kwargs)
    newshape = _batch_free_shape(x, self.newshape)
    kept = _per_sample_shape(x, newshape)
    if kept is not None:
        return keras.layers.Reshape(kept, name=self.name)(x)
    if isinstance(newshape, (list, tuple)) and any(_unknown(size) for size in newshape):
        markers = [size for size in newshape if isinstance(size, (_TracedSize, _TracedBatch))]
        if len(markers) == sum(_unknown(size) for size in newshape) and all(
            marker.source is not None for marker in markers
        ):
            # Every unknown size is an axis of a tensor of the graph (Gemma 3n's `reshape(x,
            # shape(ids) + (layers, width))`): read from it when the model runs.
            sizes, sources = _sizes_read_when_run(newshape, "a reshape")
            return handlers_gemma.ReshapeToSizes(sizes=sizes)(x, *sources)
        # A reshape to sizes only known when it runs: recorded, it could not run.
        raise _UnknownReshape(
            f"its call reshapes to {tuple(newshape)}, sizes read from a tensor whose batch or "
            "sequence length is unknown until it runs"
        )
    if newshape is not self.newshape:  # a new operation, so that its config holds the new shape
        self = type(self)(newshape=newshape, name=self.name)
    return _RESHAPE_SYMBOLIC_CALL(self, x, *args, **kwargs)


def _per_sample_shape(x, newshape):
    """The shape of each sample when a traced reshape `(B, -1, ...)` keeps the input's first axis, else None.

    keras-hub's MMDiT reshapes its attention with `(batch, -1, width)` over
    a context of unknown length: the -1 beside the batch cannot be worked
    out, but when the batch entry is the input's own first axis (as many
    rows of it per sample as the input has) the reshape is the `Reshape`
    layer's, of the other sizes, which keeps the first axis.
    """
    if not (
        isinstance(newshape, (list, tuple))
        and len(newshape) > 1
        and isinstance(newshape[0], _TracedBatch)
    ):
        return None
    rest = list(newshape[1:])
    if (
        tuple(x.shape)[:1] != (None,)
        or rest.count(-1) != 1
        or not all(_utils.is_integer(size) for size in rest)
    ):
        return None
    rows = newshape[0].rows
    if rows is None or rows != _batch_axis.factor(x, _BATCH_ROWS):
        return None
    return tuple(int(size) for size in rest)


def _batch_free_shape(x, newshape):
    input_shape = tuple(x.shape)
    if not isinstance(newshape, (list, tuple)) or not newshape:
        return newshape
    if not (newshape[0] is None or isinstance(newshape[0], _TracedBatch)):
        return newshape
    if input_shape[0] is not None or any(_unknown(size) for size in newshape[1:]):
        return newshape
    rest = list(newshape[1:])
    if -1 in rest:
        # `(B, -1, C)`: the -1 is what each sample's rows of the input hold, over
        # the sizes given beside it; it is known when both how many rows of the
        # input and how many of the output a sample fills are (`_batch_axis`).
        rows_in = _batch_axis.factor(x, _BATCH_ROWS)
        rows_out = getattr(newshape[0], "rows", None)
        if rest.count(-1) > 1 or None in input_shape[1:]:
            return newshape
        known = [size for size in rest if size != -1]
        total, part = int(np.prod(input_shape[1:])), int(np.prod(known))
        if rows_in is not None and rows_out is not None and part:
            size = rows_in * total / (rows_out * part)
            if size.denominator != 1 or size < 1:
                return newshape
            rest[rest.index(-1)] = int(size)
        else:
            # Unknown rows: taking the input's first axis for the batch is wrong once the
            # code folded windows or heads into it, so the trace that records this guess is
            # used only if it computes the layer's values (`_verified`).
            if not known and len(rest) > 1 or part == 0 or total % part:
                return newshape
            rest[rest.index(-1)] = total // part
            _GUESSED[0] += 1
    return (-1, *rest) if isinstance(newshape, tuple) else [-1, *rest]


def _unknown(size):
    return size is None or isinstance(size, (_TracedBatch, _TracedSize))
