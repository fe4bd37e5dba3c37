"""Rewrites a SavedModel's TensorFlow ops into equivalent ones the TFLite converter lowers to built-ins.

The TFLite converter leaves some TensorFlow ops as they are although LiteRT
has a kernel for the computation, and with built-in ops only the conversion
then fails ("'tf.StridedSlice' op is neither a custom op nor a flex op"):

- `tf.StridedSlice` with a `new_axis_mask` (`mask[:, None, :]`, how
  keras-hub's attention layers broadcast a padding mask over heads). The
  converter first reshapes the input to a static shape with the new axes of
  size 1 in place, and gives up when that shape has more than one unknown
  size (the batch and a sequence length). Inserting each new axis with
  `ExpandDims`, which takes any unknown sizes, and slicing that axis whole
  computes the same tensor.
- `tf.Abs` and `tf.Sign` on int64 (DeBERTa-v3's relative positions, made by
  `keras.ops.arange`): LiteRT's ABS and SIGN take int32 and floats only.
  For integers, `abs(x) = maximum(x, -x)` and `sign(x) = minimum(maximum(x,
  -1), 1)` exactly, and NEG, MAXIMUM and MINIMUM take int64.
- `tf.roll` (Swin's shifted windows): LiteRT has no ROLL kernel, but a
  cyclic shift by a constant along an axis of known size is a split in two
  and a concatenation in the other order (SPLIT_V, CONCATENATION). A roll
  by a computed shift or along an axis of unknown size stays, and the
  conversion refuses it.

The rewrite edits the functions of the SavedModel's `saved_model.pb`, which
hold the traced model, and leaves its variables as they are (a frozen graph
would be limited to 2 GB). The last node of each replacement takes the
replaced node's name, so the nodes that read it keep reading it (by its new
output argument's name where that differs). It runs on every export: the
replacements compute the same tensors, whichever sizes are known.
"""

import os
import re

import numpy as np

from tfprune._optional import OptionalModule

__all__ = ["missing_ops_reason", "rewrite_saved_model"]

tf = OptionalModule("tensorflow", "Export to LiteRT")
saved_model_pb2 = OptionalModule(
    "tensorflow.core.protobuf.saved_model_pb2", "Export to LiteRT"
)

# TensorFlow's DataType enum values (tensorflow/core/framework/types.proto).
_INT32 = 3
_INT64 = 9


def rewrite_saved_model(directory):
    """Rewrites the ops of a SavedModel that the TFLite converter cannot lower, in place.

    Args:
        directory: String. A SavedModel directory, as `keras.export.ExportArchive`
            writes it.

    Returns:
        A dict op type -> number of nodes rewritten (empty if none were).

    Example:

    >>> archive = keras.export.ExportArchive()  # doctest: +SKIP
    >>> archive.track(model); archive.add_endpoint("serve", model.call, specs)  # doctest: +SKIP
    >>> archive.write_out(directory)  # doctest: +SKIP
    >>> rewrite_saved_model(directory)  # doctest: +SKIP
    {'StridedSlice': 2}
    """
    path = os.path.join(directory, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as file:
        saved_model.ParseFromString(file.read())
    counts = {}
    for meta_graph in saved_model.meta_graphs:
        for function in meta_graph.graph_def.library.function:
            for op_type, count in _rewrite_function(function).items():
                counts[op_type] = counts.get(op_type, 0) + count
    if counts:
        with open(path, "wb") as file:
            file.write(saved_model.SerializeToString())
    return counts


def _rewrite_function(function):
    """Rewrites the nodes of one `FunctionDef`; returns the counts per op type."""
    producers = {node.name: node for node in function.node_def}
    new_nodes, counts, renamed = [], {}, {}
    for node in function.node_def:
        rewrite = _REWRITES.get(node.op)
        replacement = rewrite(node, producers) if rewrite else None
        if replacement is None:
            new_nodes.append(node)
            continue
        added, output_argument = replacement
        new_nodes.extend(added)
        counts[node.op] = counts.get(node.op, 0) + 1
        # Inside a function an output is read as `node:argument:index`; the
        # replacing op (under the same node name) may call its output otherwise.
        old_argument = _OUTPUT_ARGUMENTS[node.op]
        if output_argument != old_argument:
            renamed[f"{node.name}:{old_argument}:"] = f"{node.name}:{output_argument}:"
    if counts:
        del function.node_def[:]
        function.node_def.extend(new_nodes)
        for node in function.node_def:
            for index, tensor_name in enumerate(node.input):
                node.input[index] = _renamed(tensor_name, renamed)
        for key in list(function.ret):
            function.ret[key] = _renamed(function.ret[key], renamed)
    return counts


def _renamed(tensor_name, renamed):
    prefix, separator, index = tensor_name.rpartition(":")
    if separator and f"{prefix}:" in renamed:
        return renamed[f"{prefix}:"] + index
    return tensor_name


def _integer(node, key):
    """An integer attribute of a node, 0 when absent (a protobuf map would add an empty entry on `[]`)."""
    return node.attr[key].i if key in node.attr else 0


def _bits(mask):
    """The positions of the set bits of an integer mask, lowest first."""
    return [position for position in range(mask.bit_length()) if (mask >> position) & 1]


def _constant_length(tensor_name, producers):
    """The length of a 1-D tensor produced in the function (the slice's `begin`), or None if unknown."""
    producer = producers.get(tensor_name.split(":")[0].lstrip("^"))
    if producer is None:
        return None
    if producer.op == "Const":
        dims = producer.attr["value"].tensor.tensor_shape.dim
        return dims[0].size if len(dims) == 1 else None
    shapes = producer.attr["_output_shapes"].list.shape if "_output_shapes" in producer.attr else []
    if len(shapes) == 1 and len(shapes[0].dim) == 1 and shapes[0].dim[0].size >= 0:
        return shapes[0].dim[0].size
    return None


def _constant_values(tensor_name, producers):
    """The values of a tensor produced by a `Const` node of the function, or None."""
    producer = producers.get(tensor_name.split(":")[0].lstrip("^"))
    if producer is None or producer.op != "Const":
        return None
    return tf.make_ndarray(producer.attr["value"].tensor)


def _controls(node):
    """The control inputs (`^name`) of a node, which the node replacing it must keep."""
    return [name for name in node.input if name.startswith("^")]


def _node(name, op, inputs, **attributes):
    node = tf.compat.v1.NodeDef(name=name, op=op, input=list(inputs))
    for key, value in attributes.items():
        node.attr[key].CopyFrom(value)
    return node


def _type_attribute(dtype_enum):
    return tf.compat.v1.AttrValue(type=dtype_enum)


def _constant(name, value, dtype_enum):
    """A `Const` node holding `value` (a scalar) of TensorFlow type `dtype_enum`."""
    tensor = tf.make_tensor_proto(np.array(value, dtype=tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype))
    return _node(name, "Const", [], dtype=_type_attribute(dtype_enum), value=tf.compat.v1.AttrValue(tensor=tensor))


def _unique_name(base, producers):
    name, index = base, 0
    while name in producers:
        index += 1
        name = f"{base}_{index}"
    producers[name] = None  # reserved
    return name


def _expand_new_axes(node, producers):
    """`x[:, None, :]` -> `expand_dims(x, 1)[:, :, :]`, the new axes sliced whole.

    Without an ellipsis, the slice's i-th entry reads the i-th axis of the
    input once every new axis is inserted, so the new axis of entry i is
    inserted at axis i (lowest first). After an ellipsis, entries count from
    the end: entry j of n is axis j - n, inserted highest first. Returns the
    new nodes (the slice, or an Identity where it no longer slices anything,
    last and under the slice's name) and that node's output argument, or
    None to leave the slice.
    """
    ellipsis_mask = _integer(node, "ellipsis_mask")
    new_axis_mask = _integer(node, "new_axis_mask") & ~ellipsis_mask  # TensorFlow: the ellipsis wins
    if not new_axis_mask:
        return None
    new_axes = _bits(new_axis_mask)
    if ellipsis_mask:
        ellipsis = _bits(ellipsis_mask)[0]  # TensorFlow uses the first ellipsis only
        length = _constant_length(node.input[1], producers)
        if length is None:
            return None
        before = [axis for axis in new_axes if axis < ellipsis]
        after = [axis - length for axis in new_axes if axis > ellipsis]
        # Highest first (-1 before -2): each insertion then leaves the axes to its right in place.
        axes = before + sorted(after, reverse=True)
    else:
        axes = new_axes
    nodes, current = [], node.input[0]
    for axis in axes:
        axis_name = _unique_name(f"{node.name}/new_axis_{'m' if axis < 0 else ''}{abs(axis)}", producers)
        expand_name = _unique_name(f"{node.name}/expand_dims_{'m' if axis < 0 else ''}{abs(axis)}", producers)
        nodes.append(_constant(axis_name, axis, _INT32))
        nodes.append(
            _node(expand_name, "ExpandDims", [current, f"{axis_name}:output:0"],
                  T=node.attr["T"], Tdim=_type_attribute(_INT32))
        )  # fmt: skip
        current = f"{expand_name}:output:0"
    begin_mask = _integer(node, "begin_mask") | new_axis_mask
    end_mask = _integer(node, "end_mask") | new_axis_mask
    shrink_axis_mask = _integer(node, "shrink_axis_mask") & ~new_axis_mask
    length = _constant_length(node.input[1], producers)
    strides = _constant_values(node.input[3], producers)
    every_entry = (1 << length) - 1 if length is not None else None
    if (
        every_entry is not None
        and (begin_mask & end_mask | ellipsis_mask) & every_entry == every_entry
        and not shrink_axis_mask
        and strides is not None
        and np.all(strides == 1)
    ):
        # `x[:, None, :]` slices nothing once the axes are inserted: leave no STRIDED_SLICE in the file.
        identity = _node(node.name, "Identity", [current, *_controls(node)], T=node.attr["T"])
        return [*nodes, identity], "output"
    slice_node = tf.compat.v1.NodeDef()
    slice_node.CopyFrom(node)
    slice_node.input[0] = current
    slice_node.attr["new_axis_mask"].i = 0
    slice_node.attr["begin_mask"].i = begin_mask
    slice_node.attr["end_mask"].i = end_mask
    slice_node.attr["shrink_axis_mask"].i = shrink_axis_mask
    return [*nodes, slice_node], "output"


def _integer_abs(node, producers):
    """int64 `abs(x)` -> `maximum(x, -x)`."""
    if node.attr["T"].type != _INT64:
        return None
    negative = _unique_name(f"{node.name}/negative", producers)
    nodes = [
        _node(negative, "Neg", [node.input[0]], T=node.attr["T"]),
        _node(node.name, "Maximum", [node.input[0], f"{negative}:y:0", *_controls(node)], T=node.attr["T"]),
    ]
    return nodes, "z"


def _integer_sign(node, producers):
    """int64 `sign(x)` -> `minimum(maximum(x, -1), 1)`."""
    if node.attr["T"].type != _INT64:
        return None
    minus_one = _unique_name(f"{node.name}/minus_one", producers)
    one = _unique_name(f"{node.name}/one", producers)
    at_least = _unique_name(f"{node.name}/at_least_minus_one", producers)
    nodes = [
        _constant(minus_one, -1, _INT64),
        _constant(one, 1, _INT64),
        _node(at_least, "Maximum", [node.input[0], f"{minus_one}:output:0"], T=node.attr["T"]),
        _node(node.name, "Minimum", [f"{at_least}:z:0", f"{one}:output:0", *_controls(node)], T=node.attr["T"]),
    ]
    return nodes, "z"


def _roll_as_split_concat(node, producers):
    """`roll(x, shift, axis)` -> `concat([x[n - s:], x[:n - s]], axis)` per axis, s = shift mod n.

    LiteRT has no ROLL kernel, but a cyclic shift by a constant along an axis
    of known size n is a split and a concatenation (Swin's shifted windows).
    Returns None (the op stays, and the conversion refuses it) when a shift or
    axis is not a constant or a shifted axis has an unknown size.
    """
    shifts = _constant_values(node.input[1], producers)
    axes = _constant_values(node.input[2], producers)
    shapes = node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else []
    if shifts is None or axes is None or len(shapes) != 1 or shapes[0].unknown_rank:
        return None
    sizes = [dim.size for dim in shapes[0].dim]
    total = {}  # TensorFlow adds the shifts given for the same axis
    for shift, axis in zip(*np.broadcast_arrays(np.ravel(shifts), np.ravel(axes))):
        axis = int(axis) % len(sizes)
        if sizes[axis] < 0:
            return None
        total[axis] = (total.get(axis, 0) + int(shift)) % sizes[axis]
    nodes, current = [], node.input[0]
    rolled = [(axis, shift) for axis, shift in sorted(total.items()) if shift]
    for position, (axis, shift) in enumerate(rolled):
        last = position == len(rolled) - 1
        split_sizes = _unique_name(f"{node.name}/split_sizes_{axis}", producers)
        axis_name = _unique_name(f"{node.name}/axis_{axis}", producers)
        split = _unique_name(f"{node.name}/split_{axis}", producers)
        concat = node.name if last else _unique_name(f"{node.name}/concat_{axis}", producers)
        nodes += [
            _constant(split_sizes, [sizes[axis] - shift, shift], _INT32),
            _constant(axis_name, axis, _INT32),
            _node(split, "SplitV", [current, f"{split_sizes}:output:0", f"{axis_name}:output:0"],
                  T=node.attr["T"], Tlen=_type_attribute(_INT32), num_split=tf.compat.v1.AttrValue(i=2)),
            _node(concat, "ConcatV2",
                  [f"{split}:output:1", f"{split}:output:0", f"{axis_name}:output:0", *(_controls(node) if last else [])],
                  T=node.attr["T"], Tidx=_type_attribute(_INT32), N=tf.compat.v1.AttrValue(i=2)),
        ]  # fmt: skip
        current = f"{concat}:output:0"
    if not rolled:  # every shift a whole turn
        nodes.append(_node(node.name, "Identity", [current, *_controls(node)], T=node.attr["T"]))
    return nodes, "output"


# op type -> function(node, producers) returning the nodes that replace it
# (the last one under its name) and that one's output argument, or None to keep it.
_REWRITES = {
    "StridedSlice": _expand_new_axes,
    "Abs": _integer_abs,
    "Sign": _integer_sign,
    "Roll": _roll_as_split_concat,
}

# The name of each rewritten op's output argument (tensorflow/core/ops/*.cc).
_OUTPUT_ARGUMENTS = {"StridedSlice": "output", "Abs": "y", "Sign": "y", "Roll": "output"}

# TensorFlow op -> what it computes, for the sentence refusing a model that still uses it
# after the rewrites above: LiteRT has no built-in kernel for these computations.
_INHERENT = {
    "Roll": "tf.roll (keras.ops.roll, e.g. Swin's shifted windows) by a shift computed at run time or "
            "along an axis of unknown size (a constant shift along an axis of known size is exported "
            "as a split and a concatenation; give the model a fixed input size)",
    "FFT": "a Fourier transform of complex numbers (keras.ops.fft)",
    "FFT2D": "a 2-D Fourier transform of complex numbers (keras.ops.fft2, e.g. FNet's token mixing)",
    "FFT3D": "a 3-D Fourier transform of complex numbers",
    "IFFT": "an inverse Fourier transform of complex numbers (keras.ops.ifft)",
    "IFFT2D": "an inverse 2-D Fourier transform of complex numbers (keras.ops.ifft2)",
    "Complex": "complex numbers (tf.complex, as keras.ops.fft and fft2 build them)",
}  # fmt: skip
_FOURIER = {"FFT", "FFT2D", "FFT3D", "IFFT", "IFFT2D"}
# One location of the converter's error text: `fused["Op:", "scope/of/layer/op_name@function"]`,
# on the line that says the op is "neither a custom op nor a flex op".
_MISSING_OP = re.compile(
    r'fused\["\w+:", "([^"@]+)@[^\n]*?' + r"'tf\.(\w+)' op is neither a custom op nor a flex op"
)


def missing_ops_reason(converter_message):
    """The reason, as one clause, that the converter left TensorFlow ops without a built-in kernel.

    Ops LiteRT has no kernel for whatever the graph (`_INHERENT`: a roll
    that could not be rewritten, Fourier transforms, complex numbers) are
    named with what they compute and the layer scope that uses them; other
    ops by their TensorFlow name.

    Args:
        converter_message: String. The text of the TFLite converter's error.

    Returns:
        A string such as "TensorFlow ops ['Svd'] have no TFLite built-in
        kernel; replace the layers that use them (in 'model_1/svd_layer_1')",
        or None if the message names no such op.

    Example:

    >>> missing_ops_reason('loc(fused["Roll:", "swin_1/block_1/Roll@f"]): '
    ...                    "error: 'tf.Roll' op is neither a custom op nor a flex op")[:40]
    "layer 'swin_1/block_1' uses tf.roll (ker"
    """
    scopes = {}  # op -> layer scopes using it, in order of appearance
    for path, op in _MISSING_OP.findall(converter_message):
        scope = path.rpartition("/")[0] or path
        scopes.setdefault(op, [])
        if scope not in scopes[op]:
            scopes[op].append(scope)
    for op in re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", converter_message):
        scopes.setdefault(op, [])
    if not scopes:
        return None

    if scopes.keys() & _FOURIER:
        scopes.pop("Complex", None)  # the transform's input: its reason says it already

    def uses(op):
        names = scopes[op]
        if not names:
            return "the model uses"
        shown = ", ".join(f"'{name}'" for name in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"layer {shown} uses" if len(names) == 1 else f"layers {shown} use"

    inherent = [
        f"{uses(op)} {_INHERENT[op]}, which LiteRT has no built-in kernel for (TensorFlow op {op})"
        for op in sorted(scopes) if op in _INHERENT
    ]  # fmt: skip
    others = sorted(op for op in scopes if op not in _INHERENT)
    clauses = list(inherent)
    if others:
        located = sorted({scope for op in others for scope in scopes[op]})
        suffix = f" (in {', '.join(repr(scope) for scope in located[:3])})" if located else ""
        clauses.append(f"TensorFlow ops {others} have no TFLite built-in kernel; replace the layers that use them{suffix}")
    return "; ".join(clauses)
