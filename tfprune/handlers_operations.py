"""Handlers of operations that move the channel axis: reshapes, transposes, products, slices.

`Reshape`/`Flatten` and `keras.ops.reshape`, transposes, `matmul` and
`einsum`, indexing (`x[..., :4]`), padding, stacking, tiling, splitting and
`take`: each says where the channels of its inputs end up, or freezes them
when they are mixed or cut.
"""

import keras
import numpy as np

from tfprune.handlers_base import Freeze, Handler, _width

__all__ = []  # handlers registered by `tfprune.handlers`; nothing public of their own


class _Reshape(Handler):
    """Flatten/Reshape: maps each channel to every position it lands on.

    The reshape is applied to an array of channel ids; it is supported when
    every position of the output's last axis holds a single channel (the
    channel axis is kept, or spatial axes are flattened into it).
    """

    def trace(self, node, tracer):
        source, target = node.input_tensors[0], node.outputs[0]
        channels = tracer.channels(source)
        source_shape, target_shape = tuple(source.shape[1:]), tuple(target.shape[1:])
        if None in source_shape or None in target_shape:
            return Freeze(f"'{node.operation.name}' reshapes a tensor of unknown size").trace(node, tracer)
        # A per-sample scalar (`Input(())`) is its one channel.
        ids = (np.broadcast_to(channels, source_shape) if source_shape else channels.reshape(())).reshape(target_shape)
        last_axis = ids.reshape(-1, target_shape[-1] if target_shape else 1)
        if target_shape and (last_axis == last_axis[0]).all():
            return [last_axis[0].copy()]
        return Freeze(f"'{node.operation.name}' reshapes channels into several axes").trace(node, tracer)

    def resize(self, config, output_width):
        if "target_shape" in config:
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (output_width,)
        return config


class _Permute(Handler):
    """Permute/transpose that keeps the channel axis last passes channels through."""

    def trace(self, node, tracer):
        operation = node.operation
        rank = len(node.input_tensors[0].shape)
        if hasattr(operation, "dims"):  # the Permute layer: dims of the non-batch axes, from 1
            last = tuple(operation.dims)[-1] == rank - 1
        else:  # keras.ops.transpose: axes of every axis, or None (reversed)
            axes = getattr(operation, "axes", None)
            last = axes is not None and tuple(axes)[-1] % rank == rank - 1
        if last:
            return [tracer.channels(node.input_tensors[0])]
        return Freeze(f"'{operation.name}' moves the channel axis").trace(node, tracer)


class _ReshapeOperation(_Reshape):
    """`keras.ops.reshape`: as the Reshape layer, and channels pass when the last axis keeps its size.

    In row-major order an element at channel `c` of a last axis of size `C`
    lands at flat index `k * C + c`, so a reshape whose output's last axis
    also has size `C` puts it at channel `c` again, whatever the other axes
    become (a sequence of tokens reshaped to an image and back). The target
    shape holds the width when it is written out (`(B, H, W, C)`): the
    surgery writes the new width there (`resize_operation`).
    """

    def trace(self, node, tracer):
        source, target = node.input_tensors[0], node.outputs[0]
        width = source.shape[-1] if len(source.shape) else None
        if width is not None and len(target.shape) and target.shape[-1] == width:
            return [tracer.channels(source)]
        return super().trace(node, tracer)

    def resize_operation(self, operation, output_width):
        """A new operation for a new output width, or None to keep this one."""
        shape = operation.newshape
        if not isinstance(shape, (list, tuple)) or not shape or shape[-1] == -1:
            return None
        return type(operation)(newshape=type(shape)([*shape[:-1], output_width]), name=operation.name)


class _Matmul(Handler):
    """`a @ b` (hand-written attention): `b`'s last axis passes, `a`'s is contracted.

    The output's last axis is `b`'s last axis, so its channels go through;
    `a`'s channels are summed over with `b`'s second-to-last axis, which
    tfprune does not follow, so they are pinned.
    """

    def trace(self, node, tracer):
        name = node.operation.name
        if len(node.input_tensors) != 2 or len(node.input_tensors[1].shape) < 2:
            return Freeze(f"'{name}' multiplies by a constant matrix or a vector").trace(node, tracer)
        left, right = node.input_tensors
        tracer.pin(tracer.channels(left), f"'{name}' contracts them in a matrix product")
        return [tracer.channels(right)]


def _einsum_specs(subscripts, count):
    """The input specs and the output spec of an einsum equation (implicit output written out)."""
    subscripts = subscripts.replace(" ", "")
    inputs, arrow, output = subscripts.partition("->")
    specs = inputs.split(",")
    if len(specs) != count:
        return None, None
    if not arrow:  # numpy's implicit form: the letters used once, in alphabetical order
        letters = "".join(specs).replace(".", "")
        ellipsis = "..." if "..." in inputs else ""
        output = ellipsis + "".join(sorted(letter for letter in set(letters) if letters.count(letter) == 1))
    return specs, output


class _Einsum(Handler):
    """`keras.ops.einsum`: channels follow the letters of the equation's last axes.

    The output's last letter, when it is the last letter of input tensors,
    passes their channels (coupled, as in an elementwise product: `"bqd,bd->bqd"`,
    or a weighted sum of values: `"bqk,bkd->bqd"`); otherwise the output's
    channels are made from some other axis and are new, pinned ones. An input's
    last letter that is contracted with the last axis of other inputs alone
    couples their channels (`"bqd,bkd->bqk"`: removing channel `d` of both
    removes one term of the sum, zero for a dead channel). A last letter that
    is summed within one input, moved to another axis of the output, or matched
    with a non-channel axis or a constant pins its channels. An equation that
    elides the channel axis (`"...->..."`), repeats a letter within one operand
    or makes a scalar is frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        name = operation.name
        operands = list(node.arguments.args)
        specs, output_spec = _einsum_specs(operation.subscripts, len(operands))
        output = node.outputs[0]
        why = (
            "could not be read" if specs is None
            else "elides the channel axis" if output_spec.endswith(".") or any(spec.endswith(".") for spec in specs)
            else "makes a scalar" if not output_spec
            else "repeats a letter within one operand"
            if any(len(set(spec.replace(".", ""))) != len(spec.replace(".", "")) for spec in specs)
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{name}' ({operation.subscripts!r}) {why}").trace(node, tracer)
        tensors = [(spec, operand) for spec, operand in zip(specs, operands) if isinstance(operand, keras.KerasTensor)]
        # Letters on an axis no channel id stands for: an inner axis of an input or of the
        # output, or any axis of a constant operand.
        elsewhere = set(output_spec[:-1])
        for spec, operand in zip(specs, operands):
            elsewhere |= set(spec[:-1] if isinstance(operand, keras.KerasTensor) else spec)
        by_letter = {}
        for spec, tensor in tensors:
            if spec:
                by_letter.setdefault(spec[-1], []).append(tensor)
        last = output_spec[-1]
        for letter, readers in by_letter.items():
            if letter == last:
                continue
            channels = [tracer.channels(tensor) for tensor in readers]
            why = (
                "moves them to another axis" if letter in output_spec
                else "contracts them with an axis that is not a channel axis" if letter in elsewhere
                else "sums over them" if len(readers) == 1
                else "contracts channel axes of different sizes" if len({_width(tensor) for tensor in readers}) != 1
                or _width(readers[0]) is None
                else None
            )  # fmt: skip
            if why is None:
                tracer.couple(*channels)
            else:
                for ids in channels:
                    tracer.pin(ids, f"'{name}' ({operation.subscripts!r}) {why}")
        width = _width(output)
        sources = [tensor for tensor in by_letter.get(last, []) if _width(tensor) == width]
        if not sources:
            # No input's channel axis becomes the output's: its channels are made here.
            for tensor in by_letter.get(last, []):
                tracer.pin(tracer.channels(tensor), f"'{name}' ({operation.subscripts!r}) broadcasts them")
            channels = tracer.new_channels(1 if width is None else width, name)
            tracer.pin(channels, f"'{name}' ({operation.subscripts!r}) makes them from an axis that is not a "
                       "channel axis")  # fmt: skip
            return [channels]
        # Inputs whose channel axis has size 1 broadcast; one of unknown size may not.
        unknown = [tensor for tensor in by_letter[last] if _width(tensor) is None and width is not None]
        channels = tracer.channels(sources[0])
        tracer.couple(*[tracer.channels(tensor) for tensor in sources])
        if unknown or last in elsewhere:
            tracer.pin(channels, f"'{name}' ({operation.subscripts!r}) matches them with an axis of another size "
                       "or that is not a channel axis")  # fmt: skip
        return [channels]


class _GetItem(Handler):
    """`x[key]` (`x[:, 0]`, a class token): passes the channels when the key keeps the channel axis whole.

    The key is applied to an array of channel ids; the channels pass only if
    every position of the result's last axis holds the input's channels in
    order. A key that picks or reorders channels is a constant of the graph,
    so those channels are frozen.
    """

    def trace(self, node, tracer):
        source = node.input_tensors[0]
        channels = tracer.channels(source)
        key = node.arguments.args[1] if len(node.arguments.args) > 1 else node.arguments.kwargs.get("key")
        key = tuple(key) if isinstance(key, list) else key
        # An unknown axis (a sequence of any length) gets a size every integer of the key fits.
        integers = [abs(int(part)) for part in (key if isinstance(key, tuple) else (key,))
                    if isinstance(part, (int, np.integer)) and not isinstance(part, bool)]  # fmt: skip
        unknown = max(integers, default=0) + 2
        shape = [unknown if size is None else size for size in source.shape[:-1]] + [len(channels)]
        try:
            picked = np.broadcast_to(channels, shape)[key]
        except (IndexError, TypeError, ValueError):
            picked = None
        if picked is not None and picked.ndim and picked.shape[-1] == len(channels):
            rows = picked.reshape(-1, len(channels))
            if (rows == channels).all():
                return [channels]
        why = "could not be checked to keep the channel axis whole" if picked is None else "indexes the channel axis"
        return Freeze(f"'{node.operation.name}' {why}").trace(node, tracer)


class _AxisInsertOrRemove(Handler):
    """`keras.ops.expand_dims` / `squeeze`: the channels pass when the channel axis stays the last axis.

    A new last axis (`expand_dims(mask, -1)`, to broadcast a padding mask
    over the channels) or a squeezed last axis moves the channel axis: those
    channels are frozen.
    """

    def __init__(self, verb):
        self.verb = verb

    def trace(self, node, tracer):
        operation, source, output = node.operation, node.input_tensors[0], node.outputs[0]
        axis = operation.axis
        axes = (
            list(range(len(source.shape))) if axis is None
            else list(axis) if isinstance(axis, (list, tuple)) else [axis]
        )  # fmt: skip
        rank = len(output.shape) if self.verb == "adds" else len(source.shape)
        if rank and (rank - 1) in [value % rank for value in axes]:
            return Freeze(f"'{operation.name}' {self.verb} the last axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Pad(Handler):
    """`keras.ops.pad`: passes the channels when the channel axis is not padded."""

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        if tuple(operation.pad_width[-1]) != (0, 0):
            return Freeze(f"'{operation.name}' pads the channel axis").trace(node, tracer)
        return [tracer.channels(source)]


class _Stack(Handler):
    """`keras.ops.stack`: along a new axis before the last, channel `c` of every input is channel `c` of the output.

    The inputs' channels are coupled (one group, as in a sum) and pass; a
    constant among them holds one value per channel, so they are pinned.
    Along a new last axis the output's channels are the stacked inputs: the
    inputs' channels are pinned and the output's are new, pinned ones.
    """

    def trace(self, node, tracer):
        operation = node.operation
        output = node.outputs[0]
        rank = len(output.shape)
        if operation.axis % rank == rank - 1:
            return Freeze(f"'{operation.name}' stacks its inputs along a new last axis").trace(node, tracer)
        items = node.arguments.args[0] if node.arguments.args else node.arguments.kwargs["x"]
        tensors = [item for item in items if isinstance(item, keras.KerasTensor)]
        channels = [tracer.channels(tensor) for tensor in tensors]
        tracer.couple(*channels)
        if len(tensors) != len(items):
            tracer.pin(channels[0], f"'{operation.name}' stacks them with a constant")
        return [channels[0]]


class _Tile(Handler):
    """`keras.ops.tile`: channels pass when the last axis is repeated once (a token copied over the batch).

    Repeating the channel axis puts every channel at several positions of a
    wider axis, whose width the call holds: those channels are frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        repeats = operation.repeats
        last = repeats if isinstance(repeats, int) else list(repeats)[-1] if len(repeats) else 1
        source = node.input_tensors[0]
        if isinstance(last, (int, np.integer)) and int(last) == 1 and len(source.shape):
            return [tracer.channels(source)]
        return Freeze(f"'{operation.name}' repeats the channel axis").trace(node, tracer)


class _TopK(Handler):
    """`keras.ops.top_k`: picks entries of the last axis by their values, so which channel lands where depends on the data.

    The input's channels are pinned, and both outputs (values and indices)
    have new, pinned channels of their own.
    """

    def trace(self, node, tracer):
        return Freeze(f"'{node.operation.name}' picks entries of the channel axis by value").trace(node, tracer)


class _Map(Handler):
    """`keras.ops.map(function, xs)`: runs a Python function on each entry of the first axis.

    What the function does to the channels is not recorded in the graph (its
    operations run inside the map), so every channel in and out is pinned.
    """

    def trace(self, node, tracer):
        function = node.arguments.args[0] if node.arguments.args else None
        name = getattr(function, "__name__", "a function")
        return Freeze(f"'{node.operation.name}' maps {name} over the batch, which the graph does not record").trace(
            node, tracer
        )


class _Split(Handler):
    """`keras.ops.split`: over another axis every piece keeps the channels.

    Over the channel axis into `n` equal sections (CSPNet splits a stage in
    two halves), channel `j` of every section is one channel: they are
    removed together, so the sections stay equal and the call is unchanged.
    Split at given indices, the sizes are part of the call, so those
    channels are frozen and each piece carries its slice.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        channels = tracer.channels(source)
        if operation.axis % len(source.shape) != len(source.shape) - 1:
            return [channels for _ in node.outputs]
        sections = operation.indices_or_sections
        if isinstance(sections, (int, np.integer)) and not isinstance(sections, bool):
            pieces = [piece.copy() for piece in np.split(channels, int(sections))]
            tracer.couple(*pieces)
            return pieces
        tracer.pin(channels, f"'{operation.name}' splits the channel axis into fixed pieces")
        bounds = np.cumsum([0] + [_width(tensor) for tensor in node.outputs])
        return [channels[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


class _Unstack(Handler):
    """`keras.ops.unstack`: over another axis every piece keeps the channels (Swin's q, k, v).

    Over the channel axis each piece is one channel and loses the axis: frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.input_tensors[0]
        if operation.axis % len(source.shape) == len(source.shape) - 1:
            return Freeze(f"'{operation.name}' unstacks the channel axis").trace(node, tracer)
        channels = tracer.channels(source)
        return [channels for _ in node.outputs]


class _Take(Handler):
    """`keras.ops.take(x, indices, axis)`: rows gathered over another axis keep `x`'s channels.

    Swin gathers its relative position bias per head from a table whose last
    axis is the heads. Gathering over the channel axis (or a flattened `x`)
    picks fixed channels: frozen.
    """

    def trace(self, node, tracer):
        operation = node.operation
        source = node.arguments.args[0] if node.arguments.args else None
        if (
            not isinstance(source, keras.KerasTensor)
            or operation.axis is None
            or operation.axis % len(source.shape) == len(source.shape) - 1
        ):
            return Freeze(f"'{operation.name}' gathers over the channel axis").trace(node, tracer)
        return [tracer.channels(source)]
