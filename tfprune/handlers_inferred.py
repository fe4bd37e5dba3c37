"""Channel rules established numerically, for operations without a handler.

When `tfprune.graph.build` meets a weightless layer (or one whose weights
are single numbers) or a `keras.ops` operation it has no handler for, it asks `infer` before refusing: the
operation is run on random inputs of its own call's shapes, and it is taken
to act on each channel alone only if all of these hold, in inference mode
and, for a layer whose `call` takes `training`, in training mode too:

1. it is deterministic (the same input gives the same output twice);
2. changing channel `c` of its inputs changes no other output channel,
   for every channel `c` (one run: example `c` of a batch has channel `c`
   changed);
3. run on the inputs without the first channel, without the last, and
   with a random half of them left out, it gives exactly the
   output with those channels left out (so it runs at a smaller width and
   nothing in it depends on the channel count).

The rule is then "output channel c is input channel c" (`_Elementwise`: the
channel inputs are coupled, like `x + y`) and it is recorded in
`ChannelGraph.inferred`, so `tfprune.prune` can say which operations it
pruned through on this evidence. Anything else (weights, a changed channel
axis, several outputs, randomness, an error) is not inferred; the caller
then refuses as before.
"""

import inspect
import weakref

import keras
import numpy as np

from tfprune import _utils
from tfprune._keras import functional

__all__ = ["activation_reason", "infer"]

# Size given to unknown axes (other than the batch) of the probe inputs.
UNKNOWN_AXIS_SIZE = 8
_BATCH = 2


def infer(node, elementwise):
    """Returns `(handler, rule)` for a per-channel operation, else `(None, reason)`.

    Args:
        node: The Keras `Node` of the call without a handler.
        elementwise: The handler to use when the rule holds (the registry's
            elementwise handler).

    Returns:
        A tuple: the handler and a sentence stating the inferred rule, or
        None and a sentence saying why no rule could be established.

    Example:

    >>> inputs = keras.Input((4, 6))
    >>> node = tfprune._keras.functional.producing_node(keras.ops.sin(inputs))
    >>> handler, rule = infer(node, tfprune.handlers.ELEMENTWISE)
    >>> rule
    "'sin' (Sin): output channel c is input channel c, established numerically on 6 channels"
    >>> node = tfprune._keras.functional.producing_node(keras.ops.flip(inputs, axis=-1))
    >>> infer(node, tfprune.handlers.ELEMENTWISE)
    (None, 'changing its input channel ... changes other output channels')
    """
    operation = node.operation
    reason = _unsupported(node)
    if reason is not None:
        return None, reason
    modes = [False, True] if _takes_training(operation) else [None]
    rng = np.random.default_rng(0)
    channel_inputs = [tensor for tensor in node.input_tensors if _same_channel_axis(tensor, node.outputs[0])]
    for positive in (True, False):
        values = {id(tensor): _probe(tensor, rng, positive) for tensor in node.input_tensors}
        for training in modes:
            try:
                reason = _check(node, channel_inputs, values, training, rng)
            except Exception as error:  # the operation itself failed on a probe: no rule
                reason = f"it failed when run on a probe input ({_utils.first_line(error, limit=160)})"
            if reason is not None:
                mode = {None: "", False: " in inference mode", True: " in training mode"}[training]
                return None, reason + mode
    width = node.outputs[0].shape[-1]
    rule = (
        f"'{operation.name}' ({type(operation).__name__}): output channel c is input channel c, "
        f"established numerically on {width} channels"
        + (" in inference and training mode" if len(modes) == 2 else "")
    )
    return elementwise, rule


def _unsupported(node):
    """Why the numerical check cannot apply to this call, or None."""
    operation = node.operation
    weights = list(getattr(operation, "weights", None) or [])
    # Single numbers (HGNetV2's learnable `scale * x + bias`) index no channel: nothing to slice.
    if any(int(np.prod(weight.shape)) != 1 for weight in weights):
        return "it holds weights"
    if any(all(variable is not weight for weight in weights) for variable in getattr(operation, "variables", None) or []):
        return "it holds state that running it would change"  # a seed generator's: running it would change it
    if len(node.outputs) != 1:
        return "it has several outputs"
    output = node.outputs[0]
    if not node.input_tensors:
        return "it has no input tensor"
    if len(output.shape) == 0 or output.shape[-1] is None:
        return "its output's channel axis has unknown size"
    if not any(_same_channel_axis(tensor, output) for tensor in node.input_tensors):
        return "no input has the output's channel axis"
    for tensor in node.input_tensors:
        if not _same_channel_axis(tensor, output) and len(tensor.shape) and tensor.shape[-1] not in (1,):
            return f"input '{tensor.name}' has a different channel axis"
    return None


def _same_channel_axis(tensor, output):
    return len(tensor.shape) == len(output.shape) and tensor.shape[-1] == output.shape[-1]


def _takes_training(operation):
    if not isinstance(operation, keras.layers.Layer):
        return False
    try:
        return "training" in inspect.signature(operation.call).parameters
    except (TypeError, ValueError):
        return False


def _probe(tensor, rng, positive):
    shape = [_BATCH] + [UNKNOWN_AXIS_SIZE if size is None else size for size in tensor.shape[1:]]
    dtype = str(tensor.dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if "int" in dtype:
        return rng.integers(0, 4, shape).astype(dtype)
    # Positive values away from 0 keep sqrt/log finite; values of both signs and
    # zeros reach the branches of relu-like or masking operations.
    if positive:
        return rng.uniform(0.5, 1.5, shape).astype(dtype)
    values = rng.normal(0.0, 2.0, shape)
    values[rng.random(shape) < 0.1] = 0.0
    return values.astype(dtype)


def _run(node, values, training):
    args, kwargs = node.arguments.fill_in(values)
    if training is not None:
        kwargs = {**kwargs, "training": training}
    outputs = node.operation(*args, **kwargs)
    return keras.ops.convert_to_numpy(keras.tree.flatten(outputs)[0]).astype("float64")


def _close(left, right):
    if left.shape != right.shape:
        return False
    scale = 1.0 + float(np.nanmax(np.abs(left), initial=0.0))
    return bool(np.allclose(left, right, rtol=0.0, atol=1e-5 * scale, equal_nan=True))


def _check(node, channel_inputs, values, training, rng):
    """Why the three conditions of the module docstring fail, or None."""
    reference = _run(node, values, training)
    if not _close(_run(node, values, training), reference):
        return "its output is random"
    width = reference.shape[-1]
    channels = np.arange(width)
    # Every channel, in one run: example c of the batch is example 0 with channel c changed.
    first = {key: value[:1] for key, value in values.items()}
    alone = _run(node, first, training)
    batch = {key: np.repeat(value, width, axis=0) for key, value in first.items()}
    for tensor in channel_inputs:
        changed = batch[id(tensor)]
        for channel in channels.tolist():
            changed[channel, ..., channel] = _perturbed(changed[channel, ..., channel])
    moved = _run(node, batch, training)
    for channel in channels.tolist():
        others = np.delete(channels, channel)
        if not _close(moved[channel : channel + 1][..., others], alone[..., others]):
            return f"changing its input channel {channel} changes other output channels"
    # At smaller widths: without the first channel, without the last, and half of them.
    subsets = [channels[1:], channels[:-1], np.sort(rng.choice(channels, max(1, width // 2), replace=False))]
    for kept in subsets if width > 1 else []:
        narrow = dict(values)
        for tensor in channel_inputs:
            narrow[id(tensor)] = values[id(tensor)][..., kept]
        if not _close(_run(node, narrow, training), reference[..., kept]):
            return "run on fewer channels it does not give the kept channels' output"
    return None


def _perturbed(values):
    if values.dtype == bool:
        return ~values
    if np.issubdtype(values.dtype, np.integer):
        return values + 1
    return values * 1.5 + 0.25


# activation function -> None (elementwise) or the reason it is not; weak, so closures can go
_FUNCTION_RULES = weakref.WeakKeyDictionary()


def activation_reason(function):
    """Why an activation function is not known to act on each channel alone, or None.

    The function is run on random `(2, 3, 8)` arrays of two distributions and
    must be deterministic, leave other channels alone when one channel
    changes, and give the kept channels' values at a smaller width (the
    checks of `infer`); the answer is cached per function.

    Args:
        function: The callable a layer keeps as its `activation`.

    Returns:
        None when the checks hold, else a sentence saying which failed.

    Example:

    >>> activation_reason(lambda x: x * keras.ops.sigmoid(1.702 * x)) is None
    True
    >>> activation_reason(lambda x: x - keras.ops.mean(x, axis=-1, keepdims=True))
    'changing its input channel ... changes other output channels'
    """
    try:
        return _FUNCTION_RULES[function]
    except (KeyError, TypeError):  # not cached, or not hashable
        pass
    inputs = keras.Input((3, 8))
    try:
        outputs = _Applied(function)(inputs)
        node = functional.producing_node(outputs)
        handler, why = infer(node, object())
        reason = None if handler is not None else why
    except Exception as error:  # the function cannot even run symbolically
        reason = f"it failed when run on a probe input ({_utils.first_line(error, limit=160)})"
    try:
        _FUNCTION_RULES[function] = reason
    except TypeError:
        pass
    return reason


class _Applied(keras.Operation):
    """An activation function as an operation of its own (so it has a call node to check)."""

    def __init__(self, function):
        super().__init__(name="activation")
        self.function = function

    def call(self, inputs):
        return self.function(inputs)
