"""Whether the trace of a composite layer can take the layer's place.

`tfprune.graph_composites` traces a composite layer's `call` on symbolic
tensors. The operations it records replace the layer only if they give
outputs of the layer's declared spec (`_same_specs`), read the sizes that
size markers stood for and keep no marker (`_reads_sizes`,
`_records_a_marker`), do not depend on `training` (`_branches_on_training`),
pass no function a `.keras` file cannot name (`_unnamed_function`) and
compute the layer's own values on a probe of 3 samples (`_verified`).
"""

import inspect

import keras
import numpy as np

from tfprune import _utils, handlers_sam3
from tfprune._keras import functional as keras_graph
from tfprune._keras import layers as keras_layers
from tfprune.graph_traced_ops import _holds_marker

__all__ = []


def _declared_output_spec(layer):
    """`layer.compute_output_spec`, or tfprune's correction of a keras-hub layer's wrong one (`handlers_sam3`)."""
    if type(layer).__module__.startswith("keras_hub."):
        corrected = handlers_sam3.corrected_output_spec(layer)
        if corrected is not None:
            return corrected
    return layer.compute_output_spec


def _same_specs(traced, expected):
    """Same structure, shapes, dtypes and sparseness (Keras marks `x * 2.0` traced op by op sparse)."""
    traced, expected = keras.tree.flatten(traced), keras.tree.flatten(expected)
    return len(traced) == len(expected) and all(
        (got is None and want is None)  # an optional output left out: `return x, None`
        or _same_constant(got, want)
        or isinstance(got, keras.KerasTensor)
        and _compatible(tuple(got.shape), tuple(want.shape))
        and got.dtype == want.dtype
        and bool(got.sparse) == bool(getattr(want, "sparse", False))
        for got, want in zip(traced, expected)
    )


def _same_constant(traced, expected):
    """A constant output of the declared shape (keras-hub's DeiT returns empty stacks it was not asked for)."""
    return (
        not isinstance(traced, keras.KerasTensor)
        and hasattr(traced, "shape")
        and None not in tuple(expected.shape)
        and tuple(traced.shape) == tuple(expected.shape)
    )


def _compatible(traced, expected):
    """Equal shapes, but for sizes one side does not know (never the channel axis)."""
    return (
        len(traced) == len(expected)
        and traced[-1:] == expected[-1:]
        and all(got == want or got is None or want is None for got, want in zip(traced, expected))
    )


def _verified(shadow, args, kwargs, outputs, strict=False, variables=None):
    """Whether the recorded operations compute what the layer's own code computes, on a probe of 3 samples.

    A trace can record a constant made from a size that is unknown on
    symbolic tensors (`ops.arange(0, length)` gives an empty range for a
    length of None), or a -1 worked out wrongly (`_batch_free_shape`): the
    layer's own code, run on arrays, says what the operations must give.
    When that code cannot run on the probe (it needs other values), the trace
    is taken as it is, unless `strict`. `variables` are the layer's own
    variables by attribute, which its own code reads (while it is traced,
    `tfprune.layers.Weight` outputs stand in their place).
    """
    if kwargs.get("training"):
        # Dropout draws other values in each run; `_branches_on_training` traces in training mode only
        # to compare the operations, and the inference trace is the one checked.
        return True
    symbolic = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    ]
    traced = [
        value for value in keras.tree.flatten(outputs) if isinstance(value, keras.KerasTensor)
    ]
    generator = np.random.default_rng(0)
    probes = {}

    def probe(value):
        if not isinstance(value, keras.KerasTensor):
            return value
        if id(value) not in probes:
            shape = [3 if size is None else size for size in value.shape]
            array = (
                generator.standard_normal(shape) if "float" in str(value.dtype) else np.ones(shape)
            )
            probes[id(value)] = keras.ops.convert_to_tensor(array, dtype=value.dtype)
        return probes[id(value)]

    standing = {key: getattr(shadow, key) for key in variables or {}}
    try:
        for key, value in (variables or {}).items():
            object.__setattr__(shadow, key, value)
        own = type(shadow).call(shadow, *keras.tree.map_structure(probe, args),
                                **keras.tree.map_structure(probe, kwargs))  # fmt: skip
        want = [value for value, spec in zip(keras.tree.flatten(own), keras.tree.flatten(outputs))
                if isinstance(spec, keras.KerasTensor)]  # fmt: skip
    except Exception:  # noqa: BLE001 - the layer's own code needs other inputs: nothing to compare with
        return not strict
    finally:
        for key, value in standing.items():
            object.__setattr__(shadow, key, value)
    if any(isinstance(value, keras.KerasTensor) for value in want):
        # Its own weights stand as graph tensors while it is traced (`_own_weights_as_layers`).
        return not strict
    try:
        got = keras.tree.flatten(
            keras.Function(symbolic, traced)([probe(value) for value in symbolic])
        )
        return len(got) == len(want) and all(
            np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5, rtol=1e-4,
                        equal_nan=True)
            for a, b in zip(got, want)
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - the recorded operations do not run where the layer does
        return False


def _branches_on_training(shadow, args, kwargs, outputs):
    if not keras_layers.call_takes_training(shadow):
        return False
    inputs = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    ]
    traces = [_operations_between(inputs, outputs)]
    for training in (True, False):
        traced = shadow.call(*args, **{**kwargs, "training": training})
        traces.append(_operations_between(inputs, traced))
    return any(trace != traces[0] for trace in traces[1:])


def _reads_sizes(args, kwargs, outputs):
    """True when the trace records a size read when the model runs (`SizeRange`, `BroadcastToSizes`, `SliceToSizes`, ...).

    A trace that used markers without recording one of them made
    constants of them (`ops.ones((length, length))` builds an empty array):
    it is redone without markers, as every trace was before them.
    """
    inputs = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    ]
    sized = {"SizeRange", "BroadcastToSizes", "PadToSizes", "SliceToSizes", "ReshapeToSizes"}
    return bool(sized & set(_operations_between(inputs, outputs)))


def _records_a_marker(args, kwargs, outputs):
    """True when an operation of the trace holds a size marker as an argument (`x[:, :length]`).

    Keras records such a slice without reading the marker; the recorded
    operation could not run.
    """
    inputs = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    ]
    return any(
        _holds_marker((node.arguments.args, node.arguments.kwargs))
        for node in keras_graph.walk(outputs, stop=inputs)
    )


def _unnamed_function(args, kwargs, outputs):
    """The name of a Python function an operation of the trace takes as an argument and a `.keras` file cannot name, or None.

    `keras.ops.map(gather, ...)` with a function local to a layer's `call`
    (keras-hub's D-FINE query generator) records the function itself: the
    model holding the operation would not load back.
    """
    inputs = [
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    ]
    for node in keras_graph.walk(outputs, stop=inputs):
        for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs)):
            if (inspect.isfunction(value) or inspect.ismethod(value)) and not _utils.loads_back(
                value
            ):
                return value.__name__
    return None


def _operations_between(inputs, outputs):
    """The classes of the operations recorded from `inputs` to `outputs`, in a fixed order."""
    return [type(node.operation).__name__ for node in keras_graph.walk(outputs, stop=inputs)]
