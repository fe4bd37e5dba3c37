"""The layers one-shot pruning handles, seen as matrices (not public API).

Every layer handled here computes `outputs = rows @ matrix` (plus a bias),
where `matrix` is its kernel laid out as `(inputs, outputs)` and `rows` are
its inputs laid out as rows of `inputs` values:

- Dense: the kernel itself; the rows are the inputs along their last axis;
- EinsumDense: the kernel's axes that the equation contracts with the input
  (in the kernel's order) times the axes it writes to the output; the rows are
  the input with the contracted axes moved last;
- Conv1D/Conv2D: the kernel reshaped to `(kernel positions * channels,
  filters)`; the rows are the input patches (im2col), in that order.

`channels` is the length of the innermost input axis (a Dense layer's inputs,
a convolution's input channels, an EinsumDense's last contracted axis): M:N
runs go along it and restart at each kernel position, as
`tfprune.check_m_by_n` counts them.
"""

import keras
import numpy as np

from tfprune._keras import functional
from tfprune._keras import layers as keras_layers


class KernelView:
    """A target layer's kernel as an `(inputs, outputs)` matrix, and its inputs as rows of it.

    Attributes:
        layer: The Dense, EinsumDense, Conv1D or Conv2D layer.
        name: String. Its qualified name (`"outer/inner/name"` when nested).
        channels: Int. Length of the innermost input axis (M:N runs restart after it).
    """

    def __init__(self, layer, name, permutation, contracted, channels, to_rows):
        self.layer = layer
        self.name = name
        self.channels = channels
        self._permutation = permutation  # kernel axes: the contracted ones first, then the outputs
        self._contracted = contracted  # how many of them
        self._to_rows = to_rows

    def matrix(self):
        """The kernel as a float64 `(inputs, outputs)` matrix."""
        kernel = np.asarray(
            keras.ops.convert_to_numpy(keras_layers.kernel_variable(self.layer)), "float64"
        )
        kernel = np.transpose(kernel, self._permutation)
        inputs = int(np.prod(kernel.shape[: self._contracted]))
        return kernel.reshape(inputs, -1)

    def assign(self, matrix):
        """Writes an `(inputs, outputs)` matrix back into the kernel, in the kernel's layout and dtype."""
        variable = keras_layers.kernel_variable(self.layer)
        shape = [tuple(variable.shape)[axis] for axis in self._permutation]
        kernel = np.transpose(np.reshape(matrix, shape), np.argsort(self._permutation))
        variable.assign(kernel.astype(keras.backend.standardize_dtype(variable.dtype)))

    def rows(self, inputs):
        """`(rows, leading_shape)`: the layer's input as float64 rows, and the shape the rows came from."""
        array = self._to_rows(np.asarray(keras.ops.convert_to_numpy(inputs)))
        return array.reshape(-1, array.shape[-1]).astype("float64"), array.shape[:-1]


def _refuse(layer, name, reason):
    raise ValueError(
        f"`tfprune.oneshot.prune` cannot prune layer '{name}' ({type(layer).__name__}): {reason}; "
        f"pass skip=({name!r},) to leave it dense."
    )


def _dense_view(layer, name):
    inputs = tuple(keras_layers.kernel_variable(layer).shape)[0]
    return KernelView(layer, name, (0, 1), 1, inputs, lambda array: array)


def _axis(spec, letter):
    """The axis of `letter` in an einsum operand `spec`, negative when it follows an ellipsis."""
    if "..." not in spec:
        return spec.index(letter)
    before, after = spec.split("...")
    return before.index(letter) if letter in before else after.index(letter) - len(after)


def _einsum_view(layer, name):
    equation = layer.equation.replace(" ", "")
    operands, _, output_spec = equation.partition("->")
    operands = operands.split(",")
    if len(operands) != 2 or "." in operands[1]:
        _refuse(layer, name, f"its equation {layer.equation!r} is not `inputs,kernel->outputs`")
    input_spec, kernel_spec = operands
    letters = [spec.replace(".", "") for spec in (input_spec, kernel_spec, output_spec)]
    contracted = [
        letter for letter in kernel_spec if letter in input_spec and letter not in output_spec
    ]
    produced = [
        letter for letter in kernel_spec if letter in output_spec and letter not in input_spec
    ]
    mappable = (
        contracted
        and len(contracted) + len(produced) == len(kernel_spec)
        and all(len(set(spec)) == len(spec) for spec in letters)
        and all(letter in kernel_spec or letter in output_spec for letter in letters[0])
    )
    if not mappable:
        _refuse(
            layer, name,
            f"its equation {layer.equation!r} does not contract the input with the kernel as one matrix "
            "(every kernel axis must be either summed with the input or written to the output)",
        )  # fmt: skip
    permutation = [kernel_spec.index(letter) for letter in contracted + produced]
    input_axes = [_axis(input_spec, letter) for letter in contracted]
    last_axes = list(range(-len(contracted), 0))
    shape = tuple(keras_layers.kernel_variable(layer).shape)
    channels = shape[permutation[len(contracted) - 1]]

    def to_rows(array):
        array = np.moveaxis(array, input_axes, last_axes)
        return array.reshape(array.shape[: -len(contracted)] + (-1,))

    return KernelView(layer, name, permutation, len(contracted), channels, to_rows)


def _conv_view(layer, name):
    if layer.groups != 1:
        _refuse(layer, name, f"it is a grouped convolution (groups={layer.groups})")
    shape = tuple(keras_layers.kernel_variable(layer).shape)
    one_dimensional = len(shape) == 3
    size, strides, dilation = (
        tuple(value) for value in (layer.kernel_size, layer.strides, layer.dilation_rate)
    )
    padding = layer.padding

    def to_rows(array):
        if layer.data_format == "channels_first":
            array = np.moveaxis(array, 1, -1)
        causal = padding == "causal"
        if causal:  # Conv1D only: zeros before the sequence, then a valid convolution
            array = np.pad(array, [(0, 0), ((size[0] - 1) * dilation[0], 0), (0, 0)])
        if one_dimensional:
            array = array[:, None]
        patches = keras.ops.image.extract_patches(
            array,
            size=((1,) if one_dimensional else ()) + size,
            strides=((1,) if one_dimensional else ()) + strides,
            dilation_rate=((1,) if one_dimensional else ()) + dilation,
            padding="valid" if causal else padding,
            data_format="channels_last",
        )
        patches = np.asarray(keras.ops.convert_to_numpy(patches))
        return patches[:, 0] if one_dimensional else patches

    permutation = tuple(range(len(shape)))
    return KernelView(layer, name, permutation, len(shape) - 1, shape[-2], to_rows)


# Exact classes: a subclass (an STR layer, a user's layer) may compute with another kernel.
_VIEWS = {
    keras.layers.Dense: _dense_view,
    keras.layers.EinsumDense: _einsum_view,
    keras.layers.Conv1D: _conv_view,
    keras.layers.Conv2D: _conv_view,
}


def _children(layer):
    """The layers `layer` holds directly (not through another of them)."""
    below = functional.nested_layers(layer)[1:]
    deeper = {id(inner) for child in below for inner in functional.nested_layers(child)[1:]}
    return [child for child in below if id(child) not in deeper]


def named_layers(model, prefix=""):
    """Every layer inside `model` with its qualified name (`"outer/inner/name"`), each layer once.

    Args:
        model: A Keras model or layer.
        prefix: String put before the names. Defaults to `""`.

    Returns:
        List of `(qualified_name, layer)`, parents before their children.
    """
    named, seen = [], set()
    stack = [(prefix, child) for child in reversed(_children(model))]
    while stack:
        outer, layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        name = f"{outer}{layer.name}"
        named.append((name, layer))
        stack.extend((f"{name}/", child) for child in reversed(_children(layer)))
    return named


def _skipped(name, skip):
    parts = name.split("/")
    return parts[-1] in skip or any(
        "/".join(parts[:end]) in skip for end in range(1, len(parts) + 1)
    )


def kernel_views(model, skip, caller):
    """The `KernelView` of every Dense, EinsumDense, Conv1D and Conv2D layer of `model` not in `skip`.

    Args:
        model: A built Keras model.
        skip: Set of names: a layer's own name, its qualified name, or the
            qualified name of a layer holding it.
        caller: String. The public function, named in the errors.

    Returns:
        List of `KernelView`, in the order of `named_layers`.

    Raises:
        ValueError: If `skip` names no layer of the model, or a layer cannot
            be seen as a matrix (a grouped convolution, an EinsumDense whose
            equation is not one matrix product, a LoRA-enabled or quantized layer).
    """
    named = named_layers(model)
    known = {name for name, _ in named} | {layer.name for _, layer in named}
    unknown = sorted(set(skip) - known)
    if unknown:
        raise ValueError(
            f"`{caller}` got names in `skip` that model '{model.name}' does not have: {unknown}; use a "
            "layer's name or its qualified name ('outer/inner') as the result's table prints them."
        )
    views = []
    for name, layer in named:
        factory = _VIEWS.get(type(layer))
        if factory is None or _skipped(name, skip):
            continue
        variable = keras_layers.kernel_variable(layer)
        if getattr(layer, "lora_enabled", False) or "float" not in keras.backend.standardize_dtype(
            variable.dtype
        ):
            _refuse(
                layer,
                name,
                "its kernel is LoRA-enabled or quantized; prune the plain float layer first",
            )
        views.append(factory(layer, name))
    return views
