"""Composite layers, and how `flatten` traces one into the operations it runs.

A composite layer is a subclassed layer whose `call` is made of other layers
and `keras.ops` (`is_composite`). `tfprune.graph_inline` inlines one by
calling that `call` on symbolic tensors, on a shadow of the layer whose
sub-layers are copies (`_traced`): the layers and operations it runs are
recorded in the new graph. While a trace runs, Keras's `Layer.__call__` and
a few `keras.ops` functions are replaced (`_PATCHES`): a composite nested in
it is inlined at once (`_nested_shadow_call`), and sizes unknown until the
model runs are recorded as operations reading them
(`tfprune.graph_traced_ops`, `tfprune.graph_traced_reshape`). A trace that
cannot take the layer's place (`tfprune.graph_composite_checks`) leaves the
layer whole, and the reason is kept on it for the warning that freezes its
channels.
"""

import inspect
import threading

import keras

from tfprune import _utils, handlers_keras_hub
from tfprune._keras import functional as keras_graph
from tfprune._keras import layers as keras_layers
from tfprune._keras import ops as keras_ops
from tfprune.graph_composite_checks import (
    _branches_on_training,
    _declared_output_spec,
    _reads_sizes,
    _records_a_marker,
    _same_specs,
    _unnamed_function,
    _verified,
)
from tfprune.graph_traced_ops import (
    _BATCH_ROWS,
    _KERNEL_LAYERS,
    _LAYER_CALL,
    _MULTIPLY_OPERATION,
    _SIZE_MARKERS,
    _TRACER_THREAD,
    _dense_multiply_call,
    _kernel_layers,
    _traced_arange,
    _traced_broadcast_to,
    _traced_einsum,
    _traced_getitem,
    _traced_matmul,
    _traced_ones,
    _traced_pad,
    _traced_shape,
    _traced_tile,
    _tracing_here,
)
from tfprune.graph_traced_reshape import (
    _GUESSED,
    _RESHAPE_OPERATION,
    _static_reshape_call,
    _UnknownReshape,
)
from tfprune.handlers import handler_for

__all__ = ["is_composite"]

_NESTING = [0]  # depth of `_traced` calls in progress
_TRACE_LOCK = threading.RLock()


def is_composite(layer):
    """True for a subclassed layer that `flatten` tries to inline.

    A composite layer is a subclassed layer with no weights of its own (its
    sub-layers may have some) and no channel handler (a registered handler
    always wins) that is not one of Keras's or tfprune's own layers: its
    `call` is then made of other layers and `keras.ops`. A `keras.layers.Lambda` counts as one too: its
    function is traced like a `call`; so does a `keras.layers.Activation` whose
    function a `.keras` file could not name (one not registered with Keras).

    Args:
        layer: A `keras.layers.Layer`.

    Returns:
        Bool.

    Example:

    >>> class Twice(keras.layers.Layer):
    ...     def call(self, x):
    ...         return keras.ops.add(x, x)
    >>> Twice.__module__ = "my_project.layers"  # as when defined in your own module
    >>> tfprune.graph.is_composite(Twice()), tfprune.graph.is_composite(keras.layers.Dense(2))
    (True, False)
    """
    if type(layer) is keras.layers.Activation and not _utils.loads_back(layer.activation):
        # keras-hub CLIP's quick_gelu: a `.keras` file could not name it; traced, its ops can.
        return True
    if _is_graph_model(layer) or handler_for(layer) is not None:
        return False  # a subclassed model (keras-hub's Flux `MLPEmbedder`) is traced like a layer
    if type(layer) is keras.layers.Lambda:
        return True  # its function is traced like a composite layer's `call`
    module = type(layer).__module__
    if module.startswith(("keras.", "tfprune.")):
        return False
    return not keras_layers.own_variables(layer) or _inlined_with_own_weights(layer)


def _is_graph_model(layer):
    """A Sequential or functional model: inlined from its graph (a subclassed model is a composite)."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and keras_graph.is_functional(layer)
    )


def _inlined_with_own_weights(layer):
    """A keras-hub layer inlined although it holds weights (`handlers_keras_hub.INLINED_WITH_OWN_WEIGHTS`)."""
    from_keras_hub = type(layer).__module__.startswith("keras_hub.")
    return from_keras_hub and handlers_keras_hub.inlined_with_own_weights(layer)


_GUESSED_REASON = (
    "its call reshapes to sizes read from a tensor whose batch or sequence length is unknown until it runs, "
    "and worked out from the tensor's own sizes they compute other values"
)


def _nested_shadow_call(self, *args, **kwargs):
    """`Layer.__call__` while a composite is traced: a nested composite is inlined at once.

    Calling it as a layer would make Keras record it as one operation, which
    refuses outputs that are not tensors (keras-hub's DeiT blocks return
    `(x, None)`); its own `call`, run on the symbolic tensors, does not.
    """
    if getattr(self, "_tfprune_is_shadow", False) and _tracing_here():
        symbolic = any(
            isinstance(value, keras.KerasTensor) for value in keras.tree.flatten((args, kwargs))
        )
        if symbolic:
            return _traced(self, [False])(*args, **kwargs)
        # On the probe's arrays (`_same_on_a_probe`): its own code, never `build`
        # (a shadow's `build` would make new sub-layers).
        return self.call(*args, **_accepted(self, kwargs))
    if not _tracing_here():
        return _LAYER_CALL(self, *args, **kwargs)
    kwargs = _without_unspecified_none(self, kwargs)
    try:
        return _LAYER_CALL(self, *args, **kwargs)
    except ValueError as error:
        if not _returns_none(error):
            raise
        own = (
            "holds weights of its own, so it is not inlined, and " if not is_composite(self) else ""
        )
        raise _NotRecordable(
            f"its block '{self.name}' ({type(self).__name__}) {own}returns None, which Keras cannot record as "
            "one operation"
        ) from error


def _failing_keras_operation(error):
    """`" in keras.ops.fft2"` when a `keras.ops` operation refused the symbolic tensors, else `""`.

    FNet's encoder runs `keras.ops.fft2` over the sequence: Keras refuses to
    record it on a sequence of unknown length, the reason the block stays whole.
    """
    frames, traceback = [], error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):
        operation = frame.f_locals.get("self")
        if (
            frame.f_code.co_name in ("compute_output_spec", "symbolic_call")
            and isinstance(operation, keras.Operation)
            and not isinstance(operation, keras.layers.Layer)
        ):
            module = type(operation).__module__
            name = getattr(operation, "name", type(operation).__name__)
            return f" in operation '{name}' ({keras_ops.public_module(module)}.{type(operation).__name__})"
    return ""


class _NotRecordable(ValueError):
    """A block inside a traced composite that can only be recorded as one operation, which Keras refuses."""


def _returns_none(error):
    """Keras's refusal of an operation whose outputs are not all tensors (`(x, None)`)."""
    return "All operation outputs must be tensors" in str(error)


def _accepted_by(function, kwargs):
    """`kwargs` without the keywords `function` does not take (keras-hub's QFormer blocks pass
    `training` to sub-layers whose `compute_output_spec` takes only the inputs)."""
    parameters = inspect.signature(function).parameters
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in parameters}


def _without_unspecified_none(layer, kwargs):
    """`kwargs` without arguments passed as None that `layer.call` defaults to None and its output spec refuses.

    keras-hub's `CachedMultiHeadAttention` is called with `cache=None`,
    which `MultiHeadAttention.compute_output_spec` does not take: called as a
    layer on symbolic tensors (it has a handler, so it is not inlined) it
    would fail, in the trace and wherever the recorded call is run again.
    """
    spec = inspect.signature(layer.compute_output_spec).parameters
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in spec.values()):
        return kwargs
    call = inspect.signature(layer.call).parameters
    return {
        key: value for key, value in kwargs.items()
        if not (value is None and key not in spec and key in call and call[key].default is None and key != "training")
    }  # fmt: skip


def _accepted(layer, kwargs):
    """`kwargs` without `training`/`mask` where `layer.call` does not take them, as `Layer.__call__` does."""
    parameters = inspect.signature(layer.call).parameters
    return {
        key: value
        for key, value in kwargs.items()
        if key not in ("training", "mask") or key in parameters
    }


# What a trace replaces while it runs, each `(owner, attribute, Keras's own, replacement)`.
_PATCHES = [
    (owner, attribute, getattr(owner, attribute), replacement)
    for owner, attribute, replacement in (
        (keras.layers.Layer, "__call__", _nested_shadow_call),
        (_RESHAPE_OPERATION, "symbolic_call", _static_reshape_call),
        (_MULTIPLY_OPERATION, "symbolic_call", _dense_multiply_call),
        (keras.KerasTensor, "__getitem__", _traced_getitem),
        (keras.ops, "shape", _traced_shape),
        (keras.ops, "arange", _traced_arange),
        (keras.ops, "broadcast_to", _traced_broadcast_to),
        (keras.ops, "ones", _traced_ones),
        (keras.ops, "pad", _traced_pad),
        (keras.ops, "einsum", _traced_einsum),
        (keras.ops, "tile", _traced_tile),
        (keras.ops, "matmul", _traced_matmul),
    )
]


def _traced(shadow, changed, fallback=None):
    """Calls the composite's `call` symbolically (inlining it), or the layer as one unit.

    A `call` that branches on `training` in Python would be recorded with one
    branch only; such a layer (its traces in training and in inference differ)
    stays one unit. While it is traced, composites nested in it are inlined
    in the same way (`_nested_shadow_call`).
    """

    def call(*args, **kwargs):
        # The patches are process-wide: one thread traces at a time, and the
        # patched functions act only in that thread (`_tracing_here`).
        with _TRACE_LOCK:
            _NESTING[0] += 1
            if _NESTING[0] == 1:
                _TRACER_THREAD[0] = threading.get_ident()
                for owner, attribute, _, replacement in _PATCHES:
                    setattr(owner, attribute, replacement)
            try:
                return traced_call(*args, **kwargs)
            finally:
                _NESTING[0] -= 1
                if _NESTING[0] == 0:
                    for owner, attribute, original, _ in _PATCHES:
                        setattr(owner, attribute, original)
                    _TRACER_THREAD[0] = None
                    _BATCH_ROWS.clear()
                    _KERNEL_LAYERS.clear()

    def as_one_unit(*args, **kwargs):
        if fallback is not None:
            return fallback()(*args, **kwargs)
        return _LAYER_CALL(shadow, *args, **kwargs)

    def traced_call(*args, **kwargs):
        if _SIZE_MARKERS[0]:
            # First with sequence-length markers (a causal mask over any length), kept
            # when it records an operation reading a size; otherwise (no such mask,
            # or code that uses the length in other ways) traced again as before.
            outputs, why = attempt(*args, marked=True, **kwargs)
            if why is None:
                changed[0] = True
                return outputs
            _SIZE_MARKERS[0] = False
            try:
                return traced_call(*args, **kwargs)
            finally:
                _SIZE_MARKERS[0] = True
        outputs, why = attempt(*args, **kwargs)
        if why is not None:
            # Said where the layer is met again, when its channels are frozen.
            object.__setattr__(shadow, "_tfprune_not_inlined", why)
            try:
                return as_one_unit(*args, **kwargs)
            except ValueError as error:
                # Inside a trace: say why, not Keras's words.
                if _NESTING[0] > 1 and _returns_none(error):
                    raise _NotRecordable(
                        f"its block '{shadow.name}' cannot be inlined ({why}) and returns None, which Keras "
                        "cannot record as one operation"
                    ) from error
                raise
        changed[0] = True
        return outputs

    def attempt(*args, marked=False, **kwargs):
        """The traced outputs and None, or None and why the trace cannot be used.

        `marked`: traced with sequence-length markers, which must have recorded
        an operation reading a size and left no marker in any operation.
        """
        own, guessed = {}, _GUESSED[0]
        outputs = None
        try:
            _own_weights_as_layers(shadow, args, kwargs, own)
            _KERNEL_LAYERS.update(_kernel_layers(shadow))
            kwargs = _accepted(shadow, kwargs)
            outputs = shadow.call(*args, **kwargs)
            spec = _declared_output_spec(shadow)
            expected = spec(*args, **_accepted_by(spec, kwargs))
            why = None
            if not _same_specs(outputs, expected):
                # A -1 worked out beside the traced batch size is what such a mismatch comes from.
                why = (
                    _GUESSED_REASON
                    if _GUESSED[0] != guessed
                    else "its traced call gives other outputs than its output spec"
                )
            elif marked and not (_reads_sizes(args, kwargs, outputs)
                                 and not _records_a_marker(args, kwargs, outputs)):  # fmt: skip
                why = "its trace with sequence-length markers reads no size, or records a marker"
            elif _branches_on_training(shadow, args, kwargs, outputs):
                why = "its call branches on `training`"
            elif (function := _unnamed_function(args, kwargs, outputs)) is not None:
                why = f"its call passes the function '{function}' to an operation, which a `.keras` file cannot name"
            # Nested in another trace, a block is checked with the outermost one: alone, its inputs
            # would be probed with a batch that is no multiple of the windows folded into it (Swin).
            elif _NESTING[0] == 1 and not _verified(
                shadow, args, kwargs, outputs, strict=_GUESSED[0] != guessed, variables=own
            ):
                why = (
                    _GUESSED_REASON
                    if _GUESSED[0] != guessed
                    else (
                        "its traced call computes other values than the layer (it records a size that is only "
                        "known when it runs)"
                    )
                )
        except Exception as error:  # noqa: BLE001 - not traceable: keep the layer as one unit
            if isinstance(error, (_UnknownReshape, _NotRecordable)):
                why = str(error)
            elif any(
                mark in str(error)
                for mark in ("_TracedBatch", "unknown while traced", "batch size is unknown")
            ):
                why = "its call makes a tensor of the batch size, which is unknown until it runs"
            else:
                where = _failing_keras_operation(error)
                why = f"its call fails on symbolic tensors{where}: {_utils.first_line(error, limit=200)}"
        finally:
            for key, value in own.items():  # the shadow holds its variables again
                object.__setattr__(shadow, key, value)
        return (None, why) if why is not None else (outputs, None)

    return call


def _own_weights_as_layers(shadow, args, kwargs, replaced):
    """Points the shadow's own variables to `tfprune.layers.Weight` outputs while it is traced.

    Code such as `logits + self._bias` then records an `Add` of two graph
    tensors, and the weight is a layer of the new model (a copy of the
    value, so the user's layer is untouched). Fills `replaced` with the
    attributes replaced and their variables, to put back.
    """
    from tfprune.layers import Weight

    variables = {id(variable) for variable in keras_layers.own_variables(shadow)}
    if not variables:
        return
    anchor = next(
        value
        for value in keras.tree.flatten((args, kwargs))
        if isinstance(value, keras.KerasTensor)
    )
    for key, value in list(vars(shadow).items()):
        if isinstance(value, keras.Variable) and id(value) in variables:
            layer = Weight(tuple(value.shape), name=f"{shadow.name}_{key.strip('_')}", dtype=value.dtype,
                           trainable=value.trainable)  # fmt: skip
            layer.build()
            layer.weight.assign(value)
            replaced[key] = value
            object.__setattr__(shadow, key, _LAYER_CALL(layer, anchor))
