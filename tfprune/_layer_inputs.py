"""What a projection layer reads, recorded while a model runs (not public API).

Some channels have no tensor of their own in a model's functional graph: the
heads of an attention layer exist only inside it, where its output
projection reads them, and the units of a gated MLP are the product of two
producers (`silu(gate) * up`). The activation of such a channel is what its
consumer reads: the input of the consumer's Dense or EinsumDense projection.
`projection_input` finds that projection (inside a composite layer too) and
`recording` wraps its `call` while the model runs, so that every call's input
is kept, with the axis the kernel contracts the channels on moved last.
"""

import contextlib

import keras
import numpy as np

from tfprune._keras import functional
from tfprune._keras import layers as keras_layers


class LayerInput:
    """The inputs a Dense or EinsumDense layer receives, with their channel axis last.

    Attributes:
        layer: The projection layer.
        axis: Int. The axis of its input that holds the channels.
        values: List of NumPy arrays, one per call while `recording`.
    """

    def __init__(self, layer, axis):
        self.layer = layer
        self.axis = axis
        self.values = []


def _input_axis(layer, kernel_axis):
    """The input axis contracted with the kernel's `kernel_axis`, or None when there is none."""
    if isinstance(layer, keras.layers.EinsumDense):
        operands = layer.equation.split("->")[0].split(",")
        if len(operands) != 2 or "." in layer.equation:
            return None
        input_spec, kernel_spec = operands
        letter = kernel_spec[kernel_axis]
        return input_spec.index(letter) if letter in input_spec else None
    if isinstance(layer, keras.layers.Dense):
        return -1 if kernel_axis == 0 else None
    return None


def projection_input(model, member):
    """The input of the projection whose kernel a consumer member reads the group with.

    Args:
        model: The model holding the member's layer.
        member: A `ChannelMember` of role `"input"`; its first weight is the
            kernel (path and axis) that reads the group's channels.

    Returns:
        A `LayerInput`, or None when that weight is not the kernel of a Dense
        or EinsumDense layer whose input carries the channels on one axis.
    """
    if not member.weights:
        return None
    path, kernel_axis = member.weights[0]
    for layer in functional.nested_layers(model.get_layer(member.layer_name)):
        if not isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            continue
        kernel = keras_layers.kernel_variable(layer)  # the variable itself (`kernel` may be a LoRA sum)
        if kernel is not None and kernel.path == path:
            axis = _input_axis(layer, kernel_axis)
            return None if axis is None else LayerInput(layer, axis)
    return None


@contextlib.contextmanager
def recording(captures):
    """Records the inputs of the captured layers (into `capture.values`) while the block runs.

    Each layer's `call` is wrapped for the duration of the block and restored
    after it; the wrapper reads the input and calls the layer's own `call`.

    Args:
        captures: Iterable of `LayerInput`, at most one per layer.

    Yields:
        None.
    """
    wrapped = []  # (layer, its own instance `call` or None)
    try:
        for capture in captures:
            original = capture.layer.call
            own = capture.layer.__dict__.get("call")  # a call set on the instance (a shadow's traceable call)

            def call(inputs, *args, _original=original, _capture=capture, **kwargs):
                array = np.asarray(keras.ops.convert_to_numpy(inputs))
                _capture.values.append(np.moveaxis(array, _capture.axis, -1))
                return _original(inputs, *args, **kwargs)

            # Layer.__setattr__ would track the function; an instance attribute shadows the method.
            object.__setattr__(capture.layer, "call", call)
            wrapped.append((capture.layer, own))
        yield
    finally:
        for layer, own in wrapped:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
