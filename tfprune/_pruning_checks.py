"""The checks `tfprune.prune` runs on a pruned model before returning it.

The pruned model is run once on a probe input made from its input spec,
rebuilt from its config and saved to `.keras` and loaded back: a failure the
input model does not share is refused, naming the layer (a custom layer
whose code or config holds a channel count). A pruned model with more
parameters than its input (a tied weight copied twice) is refused too.
"""

import contextlib
import contextvars
import json
import os
import tempfile
import warnings

import keras
import numpy as np

from tfprune._keras import functional
from tfprune._utils import (
    first_line,
    functional_view,
)
from tfprune.export import inputs as input_data

# False inside `sensitivity`, which runs every pruned model through its evaluation anyway.
_CHECK_PRUNED = contextvars.ContextVar("tfprune_check_pruned", default=True)

# Unknown sizes of a probe input: the spatial axes of images (inputs of rank 4 or
# more: 32 survives the 32x downsampling of the usual backbones), and every other
# axis, such as a sequence (8 tokens).
_PROBE_SPATIAL_SIZE = 32
_PROBE_SIZE = 8


def _probe_inputs(model):
    """One example for `model` from its input spec, in the structure it is called with.

    The values are those `tfprune.export` verifies files with
    (`tfprune.export.inputs.random_batch`: floats uniform in [0, 1), token
    ids 0, masks and booleans 1), except an integer input of one value per
    example, which is 1; unknown sizes are `_PROBE_SPATIAL_SIZE` on the
    spatial axes of images and `_PROBE_SIZE` otherwise.
    """
    items = input_data.model_inputs(model)

    def known(shape):
        rank = len(shape)
        return tuple(
            size
            if size is not None
            else _PROBE_SPATIAL_SIZE
            if rank >= 4 and axis < rank - 1
            else _PROBE_SIZE
            for axis, size in enumerate(shape)
        )

    shapes = {item.name: known(item.shape)[1:] for item in input_data._unknown_sizes(items)}
    count = next((item.shape[0] for item in items if item.shape[0] is not None), 1)
    batch = input_data.random_batch(items, count, shapes)
    for item in items:
        # One integer per example is a count rather than a token id: a diffusion
        # model's `num_steps`, whose scheduler has no noise level to take at 0 steps.
        if len(item.shape) == 1 and "int" in item.dtype:
            batch[item.name] = np.ones_like(batch[item.name])
    return input_data._call_arguments(input_data._input_structure(model), items, batch)


def _failing_operation(model, inputs):
    """The first operation of `model` whose call raises on `inputs`, or None."""
    started = []

    def operation_fn(operation):
        def call(*args, **kwargs):
            started.append(operation)
            return operation(*args, **kwargs)

        return call

    try:
        # Keras's own graph runner (what `Functional.call` uses), with each call recorded.
        functional.run_graph(functional_view(model), inputs, operation_fn=operation_fn)
    except Exception:  # noqa: BLE001 - the last operation started is the one that failed
        return started[-1] if started else None
    return None


def _runs(model, inputs):
    """None if `model` runs on `inputs`, else the exception it raised."""
    try:
        model(inputs, training=False)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot run"
        return error
    return None


def _custom_objects(model):
    """The classes of `model`'s layers from outside Keras, by class and registered name.

    Passed to deserialization so that a class the user did not register
    (which `keras.saving.load_model` would need in `custom_objects` too) is
    not taken for a config the pruning broke.
    """
    objects = {}
    for layer in model.layers:
        cls = type(layer)
        if not cls.__module__.startswith("keras."):
            objects[cls.__name__] = cls
            objects[keras.saving.get_registered_name(cls)] = cls
    return objects


def _rebuilt(item, custom_objects):
    """`item` (a layer or model) re-created as `keras.saving.load_model` would: config -> JSON -> object."""
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(item)))
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def _weight_shapes(layer):
    return [tuple(weight.shape) for weight in layer.weights]


def _mismatch(shapes, layer):
    return (
        f"rebuilds weights of shapes {shapes} from its config where the pruned layer holds "
        f"{_weight_shapes(layer)} (its config does not record the width the pruning gave it)"
    )


def _reload_problem(model):
    """None if `model` rebuilds from its config with the same weight shapes,
    else `(layer or None, reason)`."""
    custom_objects = _custom_objects(model)
    try:
        rebuilt = _rebuilt(model, custom_objects)
    except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
        rebuilt, model_error = None, error
    if rebuilt is not None:
        for layer in model.layers:
            try:
                shapes = _weight_shapes(rebuilt.get_layer(layer.name))
            except ValueError:
                return layer, "is missing from the rebuilt model"
            if shapes != _weight_shapes(layer):
                return layer, _mismatch(shapes, layer)
        return None
    for layer in model.layers:  # which layer's config fails, alone
        try:
            copy = _rebuilt(layer, custom_objects)
        except Exception as error:  # noqa: BLE001
            return layer, f"raises {first_line(error)} when re-created from its config"
        if copy.built and _weight_shapes(copy) != _weight_shapes(layer):
            return layer, _mismatch(_weight_shapes(copy), layer)
    return None, f"its config raises {first_line(model_error)} when rebuilt"


@contextlib.contextmanager
def _no_state_left(model):
    """Removes the attributes that layers from outside Keras set on themselves while the block runs.

    Some layers cache what their first call computes from its inputs (keras-hub's
    diffusion scheduler keeps the noise levels of its first `num_steps`): run on a
    probe input, the returned model would keep the probe's.
    """
    foreign = [layer for layer in model.layers if not type(layer).__module__.startswith("keras.")]
    before = [set(vars(layer)) for layer in foreign]
    try:
        yield
    finally:
        for layer, keys in zip(foreign, before):
            for key in set(vars(layer)) - keys:
                object.__delattr__(layer, key)


def _rebuilds(model):
    """True when `model` is re-created from its config without an error (layer names aside)."""
    try:
        _rebuilt(model, _custom_objects(model))
    except Exception:  # noqa: BLE001 - any failure means "does not reload"
        return False
    return True


def _rebuild_error(model, layer):
    """The first line of what re-creating `model`'s layer named like `layer` from its config raises, or None."""
    originals = [
        candidate
        for candidate in model.layers
        if layer is not None and candidate.name == layer.name
    ]
    if not originals:
        return None
    try:
        _rebuilt(originals[0], _custom_objects(model))
    except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
        # Keras wraps the cause in "could not be deserialized" messages; the last one is the cause.
        cause = str(error).rsplit("Exception encountered: ", 1)
        return first_line(error) if len(cause) == 1 else first_line(type(error)(cause[1].strip()))
    return None


def _saved_problem(model, inputs):
    """None if `model` saved to `.keras` and loaded back gives its outputs on `inputs`, else why not.

    What `keras.saving.load_model` does besides rebuilding from the config:
    weights found by their path in the file (a weight the rebuilt model
    names otherwise keeps its initial value) and the custom objects looked
    up as they are registered.
    """
    with tempfile.TemporaryDirectory(prefix="tfprune-reload-") as directory:
        path = os.path.join(directory, "model.keras")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns of weights it skips; the outputs tell
                model.save(path)
                loaded = keras.saving.load_model(
                    path, custom_objects=_custom_objects(model), compile=False
                )
            want = keras.tree.flatten(model(inputs, training=False))
            got = keras.tree.flatten(loaded(inputs, training=False))
        except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
            return f"saved to `.keras`, it does not load back and run ({first_line(error)})"
    same = len(got) == len(want) and all(
        np.allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5, rtol=1e-4
        )
        for a, b in zip(got, want)
    )
    return None if same else "saved to `.keras` and loaded back, it computes other outputs"


def _check_runs_and_reloads(pruned, given, inlined=None):
    """Refuses a pruned model that fails on a probe input or does not reload.

    The model must run on a probe input, rebuild from its config with the
    same weight shapes (which names the layer at fault) and, saved to a
    `.keras` file and loaded back, give the same outputs. A failure the
    input model `given` shares (a probe its layers cannot take, a layer
    whose config never loaded) is not the pruning's doing and passes. A
    layer that does not rebuild from its own config in the (`inlined`)
    input model either is named as such.
    """
    inputs = _probe_inputs(pruned)
    with _no_state_left(pruned):
        error = _runs(pruned, inputs)
    # The input model gets the same probe in its own structure (a keras-hub
    # backbone takes a dict; the inlined model, a list of the same inputs).
    if error is not None and _runs(given, _probe_inputs(given)) is None:
        operation = _failing_operation(pruned, inputs)
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': {_named(operation, 'it')} "
            f"fails on a probe input that the input model runs ({first_line(error)}), so its code or "
            "config likely holds a channel count the pruning changed; give it a handler that resizes "
            f"it (tfprune.graph.register_handler) or leave its channels alone ({_ignore(operation)})."
        )
    problem = _reload_problem(pruned)
    if problem is not None:
        layer, reason = problem
        why = getattr(layer, "_tfprune_not_inlined", None)
        if why is not None and _reload_problem(given) is None:
            # A block tfprune kept whole: the input model rebuilds it from its owner's config.
            raise ValueError(
                f"tfprune.prune refuses to return the pruned model '{pruned.name}': {_named(layer, 'a layer')} "
                f"could not be inlined ({why}), and on its own it {reason}, so the pruned model would not "
                "reload."
            )
        unpruned = _rebuild_error(inlined if inlined is not None else given, layer)
        if unpruned is not None and _rebuilds(given):
            # Not the pruning's doing: the input model loads back through its own config
            # (a keras-hub backbone's constructor), the pruned one through each layer's.
            raise ValueError(
                f"tfprune.prune refuses to return the pruned model '{pruned.name}': it would not reload, as "
                f"{_named(layer, 'the model')} raises {unpruned} when re-created from its own config even "
                "unpruned, and a pruned model loads back through each layer's config, not through the input "
                "model's."
            )
    if problem is not None and _reload_problem(given) is None:
        layer, reason = problem
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': it would not reload, as "
            f"{_named(layer, 'the model')} {reason}; give the layer a get_config that records its new "
            "width or a handler that resizes it (tfprune.graph.register_handler), or leave its channels "
            f"alone ({_ignore(layer)})."
        )
    # Also when the config check failed for the input model too: a keras-hub
    # model reloads through its own config, which the inlined model no longer has.
    with _no_state_left(pruned):
        saved = _saved_problem(pruned, inputs) if error is None else None
    if saved is not None and _saved_problem(given, _probe_inputs(given)) is None:
        culprit = (
            f" ({_named(problem[0], 'the model')} {problem[1]})" if problem is not None else ""
        )
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': {saved}{culprit}, where the "
            "input model reloads; this is a tfprune bug, please report it with the model."
        )


def _check_not_larger(pruned, given):
    """Refuses a pruned model with more parameters than the input model.

    Inlining and surgery copy layers through their configs; a layer holding
    another layer of the model (keras-hub's `MaskedLMHead` holds the token
    embedding it shares with the backbone) would come back with a copy of
    it, untying the weights. Nothing tfprune does may add parameters, so
    such a result is never returned.
    """
    before, after = given.count_params(), pruned.count_params()
    if after > before:
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': it has {after} parameters, "
            f"more than the {before} of the input model, so a weight the input model shares between "
            "layers (tied weights) was copied as two; this is a tfprune bug, please report it with the model."
        )


def _named(operation, otherwise):
    return (
        f"layer '{operation.name}' ({type(operation).__name__})"
        if operation is not None
        else otherwise
    )


def _ignore(operation):
    return f"skip=({operation.name!r},)" if operation is not None else "`skip=`"
