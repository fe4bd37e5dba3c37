"""How many rows of a traced tensor's first axis each sample of the batch fills.

While `tfprune.graph.flatten` traces a composite layer, the batch size is
unknown (None) on every tensor, yet a layer's code often reshapes with it:
`B = ops.shape(x)[0]`, then `ops.reshape(y, (B, -1, C))`. Recording that
reshape needs the -1 worked out, which takes knowing how many samples the
first axis of `y` holds: one per row for most tensors, but several rows per
sample once the code folded windows or heads into it (`(B * windows, ...)`).

`factor(tensor, memo)` answers by walking the tensor's recorded history: a
model input has one row per sample (factor 1); a reshape to `(-1, rest)`
of an input with factor `g` and known sizes has `g * prod(input rest) /
prod(rest)`; an operation that may move, join or split the first axis gives
an unknown factor (None), but a concatenation along the first axis adds
its inputs' factors up; any other operation (an einsum whose output and
operands all start with one letter) keeps the common factor of its inputs
whose first axis is the batch.
"""

import fractions
import math

from tfprune._keras.functional import producing_node

# Operations that may change what the first axis holds, when they act on it (their
# `axis`/`axes` argument) or always (einsum, tile, swap/move of axes).
_BY_AXIS = {"Concatenate", "Stack", "Repeat", "Split", "ExpandDims", "Squeeze", "Take", "TakeAlongAxis", "Flip", "Roll"}
_ALWAYS_UNKNOWN = {"Einsum", "Tile", "Swapaxes", "Moveaxis", "Meshgrid", "BroadcastTo"}


def _first_axis_is_batch(tensor):
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) > 0 and shape[0] is None


def _einsum_keeps_first_axis(operation, node):
    """An einsum whose output and every tensor operand start with one letter (`"btnh,bsnh->bnts"`)."""
    inputs, arrow, output = str(getattr(operation, "subscripts", "")).replace(" ", "").partition("->")
    specs = inputs.split(",")
    if not arrow or not output or not output[0].isalpha() or len(specs) != len(node.arguments.args):
        return False
    tensors = [spec for spec, operand in zip(specs, node.arguments.args) if hasattr(operand, "shape")]
    return bool(tensors) and all(spec[:1] == output[0] for spec in tensors)


def _may_change_first_axis(operation, node):
    name = type(operation).__name__
    if name == "Einsum" and _einsum_keeps_first_axis(operation, node):
        return False
    if name in _ALWAYS_UNKNOWN:
        return True
    tensors = [tensor for tensor in node.input_tensors if getattr(tensor, "shape", None) is not None]
    rank = max([len(tensor.shape) for tensor in tensors] + [len(output.shape) for output in node.output_tensors])
    if name == "Transpose":
        axes = getattr(operation, "axes", None)
        return axes is None or tuple(axes)[0] % rank != 0
    if name in _BY_AXIS:
        axis = getattr(operation, "axis", None)
        if axis is None:
            return True
        axes = axis if isinstance(axis, (list, tuple)) else (axis,)
        return any(int(item) % rank == 0 for item in axes)
    return False


def _output_factor(node, output, input_factors):
    operation = node.operation
    batched = [
        factor for tensor, factor in zip(node.input_tensors, input_factors) if _first_axis_is_batch(tensor)
    ]
    if type(operation).__name__ == "Reshape" and not hasattr(operation, "target_shape"):
        # `keras.ops.reshape` (the Reshape layer keeps the batch axis out of its target).
        source = node.input_tensors[0]
        if not batched or batched[0] is None:
            return None
        sizes = list(source.shape[1:]) + list(output.shape[1:])
        if any(size is None for size in sizes):
            return None
        return batched[0] * fractions.Fraction(math.prod(source.shape[1:]), math.prod(output.shape[1:]))
    if type(operation).__name__ == "Concatenate" and _may_change_first_axis(operation, node):
        # Joined along the batch axis (classifier-free guidance's `[latents, latents]`): the rows add up.
        if len(batched) != len(node.input_tensors) or None in batched or getattr(operation, "axis", None) is None:
            return None
        return sum(batched, fractions.Fraction(0))
    if _may_change_first_axis(operation, node):
        return None
    if not batched:
        return fractions.Fraction(1)
    return batched[0] if all(factor == batched[0] for factor in batched) else None


def factor(tensor, memo):
    """How many rows of a traced tensor's first axis each sample fills, or None when unknown.

    Args:
        tensor: A `KerasTensor` whose first axis has unknown size.
        memo: Dict, kept for one trace: `id(tensor) -> (tensor, factor)`.

    Returns:
        A `fractions.Fraction` (1 for the batch itself, 4 when four windows of
        each sample were folded into it), or None.

    Example:

    >>> import keras
    >>> x = keras.Input((8, 8, 3))
    >>> windows = keras.ops.reshape(x, (-1, 4, 4, 3))
    >>> factor(x, {}), factor(windows, {})
    (Fraction(1, 1), Fraction(4, 1))
    """
    stack = [tensor]
    while stack:
        current = stack[-1]
        if id(current) in memo:
            stack.pop()
            continue
        node = producing_node(current)
        if node is None:
            memo[id(current)] = (current, fractions.Fraction(1))
            stack.pop()
            continue
        pending = [item for item in node.input_tensors if id(item) not in memo]
        if pending:
            stack.extend(pending)
            continue
        factors = [memo[id(item)][1] for item in node.input_tensors]
        memo[id(current)] = (current, _output_factor(node, current, factors))
        stack.pop()
    return memo[id(tensor)][1]
