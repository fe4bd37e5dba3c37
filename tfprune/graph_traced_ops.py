"""The `keras.ops` functions as they act while `flatten` traces a composite layer.

Tracing runs a composite layer's own `call` on symbolic tensors
(`tfprune.graph_composites`), where the batch size and sequence lengths are
None, yet code computes with them: `B = ops.shape(x)[0]`, then
`ops.reshape(y, (B, -1, C))`, or a causal mask over `ops.arange(length)`.
While a trace runs, `tfprune.graph_composites` puts the functions below in
place of Keras's: `keras.ops.shape` gives size markers (`_TracedBatch`,
`_TracedSize`) for the unknown sizes, and the functions given a marker
record operations that read the size when the model runs (`SizeRange`,
`BroadcastToSizes`, `PadToSizes`, `SliceToSizes`; a reshape's, in
`tfprune.graph_traced_reshape`), or record `x @ layer.kernel` as a call of
that layer (`_traced_matmul`). They act so only in the thread running the
trace (`_tracing_here`); anywhere else they are Keras's own.
"""

import string
import threading

import keras

from tfprune import (
    _batch_axis,
    _utils,
    handlers_decoders,
    handlers_diffusion,
    handlers_multimodal,
)

__all__ = []

# Keras's own functions and operation classes, which the replacements call.
_LAYER_CALL = keras.layers.Layer.__call__
_SHAPE = keras.ops.shape
_ARANGE = keras.ops.arange
_BROADCAST_TO = keras.ops.broadcast_to
_ONES = keras.ops.ones
_PAD = keras.ops.pad
_EINSUM = keras.ops.einsum
_GET_ITEM = keras.KerasTensor.__getitem__
_TILE = keras.ops.tile
_MATMUL = keras.ops.matmul
_MULTIPLY_OPERATION = handlers_decoders._MULTIPLY
_MULTIPLY_SYMBOLIC_CALL = _MULTIPLY_OPERATION.symbolic_call

# The trace in progress.
_SIZE_MARKERS = [True]  # False while a trace is retried without sequence-length markers
_BATCH_ROWS = {}  # `_batch_axis.factor`'s memo for the trace in progress
_TRACER_THREAD = [None]  # the thread whose trace the patches serve


def _tracing_here():
    return _TRACER_THREAD[0] == threading.get_ident()


class _TracedBatch:
    """The batch size that `keras.ops.shape` gives while a composite is traced.

    It is unknown, but code computes with it (`B * windows`, `B // windows`,
    then reshapes to it): such arithmetic keeps the marker, and a reshape
    whose first entry is the marker records -1 there (`_batch_free_shape`).
    `keras.ops.broadcast_to` (or `keras.ops.ones`) to a shape holding it records an operation that
    reads the size from `source` when the model runs (`_traced_broadcast_to`).
    Used as a number anywhere else it raises, so the layer is kept whole.

    Args:
        source: `KerasTensor` or None. The tensor whose size it is.
        axis: Int. The axis of `source` it is the size of.
        rows: `fractions.Fraction` or None. How many rows of a tensor's first
            axis this size is per sample (`_batch_axis.factor`): 1 for the
            batch, 4 for `B * 4`; None when unknown.
    """

    def __init__(self, source=None, axis=0, rows=None):
        self.source = source  # the tensor whose size it is (None: not known)
        self.axis = axis
        self.rows = rows

    def _scaled(self, rows):
        # `B * n` is no longer the size of `source`'s axis, unless n is 1.
        if rows == self.rows:
            return self
        return _TracedBatch(None, self.axis, rows)

    def __mul__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            return (
                self._scaled(None if self.rows is None else self.rows * other)
                if other != 1
                else self
            )
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, int) and not isinstance(other, bool) and other:
            return (
                self._scaled(None if self.rows is None else self.rows / other)
                if other != 1
                else self
            )
        return NotImplemented

    def __index__(self):
        raise TypeError("the batch size is unknown while tfprune traces the layer")

    __int__ = __index__

    def __repr__(self):  # backends quote it when they refuse it as a size
        return "<batch size, unknown while traced>"


class _TracedSize:
    """An unknown size other than the batch (a sequence length) while a composite is traced.

    Decoders build their causal masks and positions from the sequence
    length (`ops.arange(ops.shape(x)[1])`, then `ops.broadcast_to(mask,
    (batch, length, length))`); on symbolic tensors that length is None.
    `ops.shape` gives this marker instead, and `ops.arange` and
    `ops.broadcast_to` given one record operations that read the size from
    `source` when the model runs (`handlers_decoders.SizeRange`,
    `handlers_decoders.BroadcastToSizes`), so the trace holds for any
    length; one length less another is a pad `ops.pad` records
    (`handlers_multimodal.PadToSizes`). Used as a number anywhere else it
    raises; the trace is then
    retried with None sizes, as before markers existed (`_SIZE_MARKERS`).
    """

    def __init__(self, source, axis):
        self.source = source
        self.axis = axis

    def __sub__(self, other):
        # `length - ops.shape(mask)[1]`: what PaliGemma pads its mask by (`_traced_pad`).
        if type(self) is type(other) is _TracedSize and None not in (self.source, other.source):
            return _TracedDifference(self, other)
        return NotImplemented

    def __index__(self):
        raise TypeError("a sequence length is unknown while tfprune traces the layer")

    __int__ = __index__

    def __repr__(self):
        return f"<size of axis {self.axis}, unknown while traced>"


class _TracedDifference(_TracedSize):
    """One traced size less another: only `keras.ops.pad` records it (`_traced_pad`), as a pad to a size."""

    def __init__(self, minuend, subtrahend):
        super().__init__(None, None)
        self.minuend, self.subtrahend = minuend, subtrahend


def _traced_shape(x):
    """`keras.ops.shape` while a composite is traced: unknown sizes are `_TracedBatch` / `_TracedSize` markers."""
    shape = _SHAPE(x)
    if not (_tracing_here() and isinstance(x, keras.KerasTensor) and len(shape)):
        return shape
    shape = tuple(shape)
    if shape[0] is None:
        shape = (_TracedBatch(x, 0, _batch_axis.factor(x, _BATCH_ROWS)), *shape[1:])
    if _SIZE_MARKERS[0]:
        shape = tuple(
            _TracedSize(x, axis) if size is None else size for axis, size in enumerate(shape)
        )
    return shape


# `arange(n)`, told apart from `arange(0, None)` (a stop read as None from a shape).
_NO_STOP = object()


def _traced_arange(start, stop=_NO_STOP, step=None, dtype=None):
    """`keras.ops.arange` while a composite is traced: a range up to a traced size is recorded as an operation."""
    end = start if stop is _NO_STOP else stop
    begin = 0 if stop is _NO_STOP else start
    stop = None if stop is _NO_STOP else stop
    if _tracing_here() and end is None:
        # `arange(0, None)` is an empty range: recorded, it would be a constant of no positions.
        raise TypeError("a range up to a size unknown while traced cannot be recorded")
    if _tracing_here() and isinstance(end, (_TracedSize, _TracedBatch)) and end.source is not None:
        if not all(_utils.is_integer(value) for value in (begin, 1 if step is None else step)):
            raise TypeError(
                "a range up to a sequence length from a traced start or step cannot be recorded"
            )
        operation = handlers_decoders.SizeRange(axis=end.axis, start=int(begin), step=int(1 if step is None else step),
                                                dtype=dtype)  # fmt: skip
        return operation(end.source)
    return (
        _ARANGE(start, stop, step, dtype) if step is not None else _ARANGE(start, stop, dtype=dtype)
    )


def _traced_broadcast_to(x, shape):
    """`keras.ops.broadcast_to` while a composite is traced: traced sizes in `shape` are read when the model runs."""
    entries = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if not (
        _tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries)
    ):
        return _BROADCAST_TO(x, shape)
    sizes, sources = _sizes_read_when_run(entries, "a broadcast")
    if not isinstance(x, keras.KerasTensor):  # a constant: an operation's first input is a tensor
        x = keras.ops.convert_to_tensor(x)
    return handlers_decoders.BroadcastToSizes(sizes=sizes)(x, *sources)


def _sizes_read_when_run(entries, what):
    """`(sizes, sources)` of `BroadcastToSizes` for a shape holding traced sizes: `[i, axis]` of `sources[i]`, or ints."""
    sources, sizes = [], []
    for size in entries:
        if isinstance(size, (_TracedSize, _TracedBatch)):
            if size.source is None:
                raise TypeError(f"{what} to a size unknown while traced cannot be recorded")
            index = next((i for i, source in enumerate(sources) if source is size.source), None)
            if index is None:
                sources.append(size.source)
                index = len(sources) - 1
            sizes.append([index, size.axis])
        elif _utils.is_integer(size):
            sizes.append(int(size))
        else:
            raise TypeError(f"{what} to a shape holding {size!r} cannot be recorded")
    return sizes, sources


def _traced_pad(x, pad_width, mode="constant", constant_values=None):
    """`keras.ops.pad` while a composite is traced: a pad of `size - own size` makes an axis of `x` that size when the model runs."""
    if not (_tracing_here() and _holds_marker(pad_width)):  # any pad Keras takes, in any thread
        return _PAD(x, pad_width, mode=mode, constant_values=constant_values)
    pairs = [list(pair) if isinstance(pair, (list, tuple)) else [pair] for pair in pad_width]
    sources, widths = [], []
    for axis, pair in enumerate(pairs):
        sides = []
        for side in pair:
            if isinstance(side, _TracedDifference):
                target, own = side.minuend, side.subtrahend
                if mode != "constant" or own.source is not x or own.axis != axis:
                    raise TypeError("a pad by a size unknown while traced cannot be recorded")
                index = next(
                    (i for i, source in enumerate(sources) if source is target.source), None
                )
                if index is None:
                    sources.append(target.source)
                    index = len(sources) - 1
                side = [index, target.axis]
            elif not _utils.is_integer(side):
                raise TypeError(f"a pad by {side!r} cannot be recorded")
            sides.append(side if isinstance(side, list) else int(side))
        widths.append(sides)
    constant = 0 if constant_values is None else constant_values
    return handlers_multimodal.PadToSizes(pad_width=widths, constant_values=constant)(x, *sources)


def _traced_ones(shape, dtype=None):
    """`keras.ops.ones` while a composite is traced: a shape holding traced sizes is a recorded broadcast of a one.

    PARSeq's decoder repeats its position queries over the batch with
    `ops.ones((batch, 1, 1)) * queries`.
    """
    entries = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if _tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries):
        return _traced_broadcast_to(_ONES((), dtype=dtype), shape)
    return _ONES(shape, dtype=dtype)


def _traced_einsum(subscripts, *operands, **kwargs):
    """`keras.ops.einsum` while a composite is traced: upper-case subscripts are recorded in lower case.

    Keras works out a symbolic einsum's output shape by replacing each
    letter by its size, and replaces the letters left (of the output alone)
    only when they are lower case: keras-hub's MMDiT attention
    (`"BTNH,BSNH->BNTS"`) fails on symbolic tensors. The same equation with
    each letter renamed to a lower-case one not in it computes the same values.
    """
    if (
        _tracing_here()
        and isinstance(subscripts, str)
        and any(letter.isupper() for letter in subscripts)
    ):
        letters = list(dict.fromkeys(letter for letter in subscripts if letter.isalpha()))
        free = [letter for letter in string.ascii_lowercase if letter not in letters]
        upper = [letter for letter in letters if letter.isupper()]
        if len(upper) <= len(free):
            renamed = dict(zip(upper, free))
            subscripts = "".join(renamed.get(letter, letter) for letter in subscripts)
    return _EINSUM(subscripts, *operands, **kwargs)


def _traced_getitem(self, key):
    """`KerasTensor.__getitem__` while a composite is traced: a slice up to a traced size is read when it runs.

    keras-hub's MMDiT splits its joint attention with
    `attention[:, :context_length]`, the context's length read with
    `ops.shape`: recorded as `handlers_diffusion.SliceToSizes`. Only keys
    of full slices and one slice of int, None or traced bounds are recorded
    so; any other key holding a marker is left to Keras (the trace is then
    redone without markers).
    """
    parts = key if isinstance(key, tuple) else (key,)
    if not _tracing_here() or not _holds_marker(parts):
        return _GET_ITEM(self, key)
    axis = next(
        (
            i
            for i, part in enumerate(parts)
            if not (isinstance(part, slice) and part == slice(None))
        ),
        None,
    )
    part = parts[axis] if axis is not None else None
    if (
        axis is None
        or axis != len(parts) - 1
        or not isinstance(part, slice)
        or part.step is not None
    ):
        return _GET_ITEM(self, key)
    sources, bounds = [], []
    for bound in (part.start, part.stop):
        if isinstance(bound, (_TracedSize, _TracedBatch)):
            if bound.source is None:
                return _GET_ITEM(self, key)
            sources.append(bound.source)
            bounds.append([len(sources) - 1, bound.axis])
        elif bound is None or _utils.is_integer(bound):
            bounds.append(None if bound is None else int(bound))
        else:
            return _GET_ITEM(self, key)
    return handlers_diffusion.SliceToSizes(axis=axis, start=bounds[0], stop=bounds[1])(
        self, *sources
    )


def _traced_tile(x, repeats):
    """`keras.ops.tile` while a composite is traced: repeating axes of size 1 a traced number of times is a broadcast.

    SAM 3 repeats its constant position encodings and queries over the
    batch (`ops.tile(pos, (batch, 1, 1, 1))`) and its padding mask over the
    sequence (`ops.tile(mask[:, None, None, :], (1, 1, length, 1))`).
    Other tiles are left to `keras.ops.tile`.
    """
    entries = list(repeats) if isinstance(repeats, (list, tuple)) else [repeats]
    if not (
        _tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries)
    ):
        return _TILE(x, repeats)
    sizes = _traced_shape(x) if isinstance(x, keras.KerasTensor) else tuple(keras.ops.shape(x))
    if len(sizes) != len(entries):
        return _TILE(x, repeats)
    shape = []
    for size, repeat in zip(sizes, entries):
        if isinstance(repeat, (_TracedSize, _TracedBatch)):
            if size != 1:
                return _TILE(x, repeats)
            shape.append(repeat)
        elif repeat == 1:
            shape.append(size)
        elif _utils.is_integer(size):
            shape.append(int(size) * int(repeat))
        else:
            return _TILE(x, repeats)
    return _traced_broadcast_to(x, tuple(shape))


_KERNEL_LAYERS = {}  # id of a kernel -> the sub-layer of a traced composite that holds it (`_traced_matmul`)


def _kernel_layers(shadow):
    """The Dense / EinsumDense sub-layers of `shadow` whose call is `x @ kernel`, by the id of their kernel."""
    found = {}
    for value in vars(shadow).values():
        if not isinstance(value, (keras.layers.Dense, keras.layers.EinsumDense)) or not value.built:
            continue
        if value.quantization_mode:
            continue
        kernel = value.kernel  # a tensor, not the variable, when LoRA is on
        if not isinstance(kernel, keras.Variable) or len(kernel.shape) != 2:
            continue
        if getattr(value, "bias", None) is not None or value.activation not in (
            None,
            keras.activations.linear,
        ):
            continue
        if isinstance(value, keras.layers.EinsumDense):
            inputs, _, output = value.equation.partition("->")
            source, _, weights = inputs.partition(",")
            if len(weights) != 2 or source[-1:] != weights[0] or output != source[:-1] + weights[1]:
                continue
        found[id(kernel)] = value
    return found


def _traced_matmul(x1, x2):
    """`keras.ops.matmul` while a composite is traced: `x @ layer.kernel` is recorded as a call of that layer.

    Gemma 4's decoder block multiplies by its MLP layers' kernels directly
    (`ops.matmul(x, self.gating_ffw.kernel)`); recorded as a product with a
    constant, the kernel would be no weight of the new model. The layer
    computes the same product (no bias, no activation), and its call is a
    layer tfprune can slice.
    """
    layer = (
        _KERNEL_LAYERS.get(id(x2)) if _tracing_here() and isinstance(x2, keras.Variable) else None
    )
    if layer is not None and isinstance(x1, keras.KerasTensor):
        rank = (
            len(layer.equation.partition(",")[0])
            if isinstance(layer, keras.layers.EinsumDense)
            else None
        )
        if rank is None or rank == len(x1.shape):
            return layer(x1)
    return _MATMUL(x1, x2)


def _dense_multiply_call(self, x1, x2):
    """`x * c` while a composite is traced: recorded as a `DenseMultiply` when Keras marks it sparse (see `_dense_unless_sparse_input`).

    Gemma 3n's scaled word embedding multiplies by a constant in its `call`;
    traced, the product would be marked sparse where the layer's own output
    spec is dense, and the trace refused.
    """
    outputs = _MULTIPLY_SYMBOLIC_CALL(self, x1, x2)
    if (
        not _tracing_here()
        or type(self) is not _MULTIPLY_OPERATION
        or not getattr(outputs, "sparse", False)
    ):
        return outputs
    tensors = [value for value in (x1, x2) if isinstance(value, keras.KerasTensor)]
    if tensors and not any(tensor.sparse for tensor in tensors):
        return handlers_decoders.DenseMultiply(name=self.name)(x1, x2)
    return outputs


def _holds_marker(value):
    if isinstance(value, (_TracedSize, _TracedBatch)):
        return True
    if isinstance(value, slice):
        return _holds_marker((value.start, value.stop, value.step))
    if isinstance(value, (list, tuple)):
        return any(_holds_marker(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_marker(item) for item in value.values())
    return False
