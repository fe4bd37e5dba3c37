"""Inlining nested models and composite layers into one graph: `flatten`.

`flatten(model)` runs the model's graph on new inputs with a copy of each
layer (`_inline`, `_copy`). A nested Sequential or functional model is
replaced by its own graph, a composite layer by the layers and operations
its `call` runs, traced on a shadow of it whose sub-layers are copies
(`_shadow`, `tfprune.graph_composites`). Each pass inlines one level of
nesting; passes repeat until none changes the graph.
"""

import warnings

import keras

from tfprune import _utils, handlers_decoders, handlers_multimodal
from tfprune._keras import functional as keras_graph
from tfprune._keras import layers as keras_layers
from tfprune.graph_composites import _is_graph_model, _traced, is_composite
from tfprune.handlers import handler_for

__all__ = ["flatten", "needs_flattening"]


def flatten(model, composites=True):
    """Returns a copy of `model` with nested models and composite layers inlined.

    Transfer-learning and task models call a whole backbone as one layer
    (`keras.Sequential([backbone, head])`, keras-hub's `ImageClassifier`), and
    libraries such as keras-hub build blocks as subclassed layers whose `call`
    runs other layers (`DepthwiseConvBlock`, `FusedMBConvBlock`); the channel
    graph needs to see the layers inside. The copy is one functional model
    whose layers are called directly on each other's tensors, with copies of
    the original weights; the input model is not touched and the inputs keep
    their names. A model with nothing to inline comes back as a plain copy.

    A composite layer is inlined by calling its `call` on symbolic tensors,
    which records the layers and `keras.ops` it runs. That works when the
    layer has no weights of its own (only its sub-layers have) and its `call`
    is plain Keras code; a layer that holds weights itself, or whose `call`
    cannot run symbolically, stays one unit (tfprune then freezes the
    channels around it). So does one whose recorded operations, run on a
    probe of 3 samples, compute other values than its own `call` (a size
    read from a symbolic tensor is None: `ops.arange(0, length)` records an
    empty range). A few keras-hub layers that hold weights are inlined all
    the same, each weight becoming a `tfprune.layers.Weight`
    (`MaskedLMHead`, whose copy would untie the token embedding it shares
    with the backbone, Swin's `WindowAttention` and PARSeq's decoder). `Lambda` layers are traced the same way, so that a
    function of plain `keras.ops` becomes operations tfprune can read (and a
    model that Keras can reload without turning its safe mode off). Layers are copied through `from_config`, `Lambda`
    layers from their function (Keras's safe mode stays on). A layer whose
    config holds keys its own constructor refuses is copied without them, if
    the copy computes the same outputs, and the copy writes its config
    without them, so the result reloads from `.keras` (a
    `ConfigRepairWarning` names the class and the keys). A layer whose
    automatic config raises (an argument Keras cannot serialize, such as a
    `DTypePolicy` object) is copied from its constructor arguments read back
    from its attributes, if the copy computes the same outputs. Any other
    layer whose config does not round-trip is shared with the original
    model, with a `SharedLayerWarning` naming it.

    Args:
        model: A built Sequential or functional `keras.Model`.
        composites: Bool. Also inline composite (subclassed) layers (default
            True); False inlines nested models only.

    Returns:
        A new functional `keras.Model` computing the same outputs.

    Raises:
        TypeError: If `model` is not a Keras model or is subclassed.
        ValueError: If the model is not built, or inlining makes two layers
            share a name (rename one of them).

    Example:

    >>> backbone = keras.Sequential(
    ...     [keras.Input((8,)), keras.layers.Dense(6, name="hidden")], name="backbone")
    >>> model = keras.Sequential([backbone, keras.layers.Dense(2, name="head")])
    >>> [layer.name for layer in tfprune.graph.flatten(model).layers][1:]
    ['hidden', 'head']
    """
    _utils.require_graph_model(model, "tfprune.graph.flatten")
    functional = _utils.functional_view(model)
    # Layers are copied before they are called on the new tensors: calling the
    # user's layers would add call nodes to them.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", _utils.SharedLayerWarning)
        warnings.simplefilter("always", _utils.ConfigRepairWarning)
        for _ in range(_MAX_INLINING_DEPTH):
            copies = {}
            functional, changed = _flatten_once(functional, copies, composites, name=model.name)
            if not changed:
                break
    seen = set()
    for warning in caught:  # each pass copies again: say each thing once
        if str(warning.message) not in seen:
            seen.add(str(warning.message))
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return functional


_MAX_INLINING_DEPTH = 8


def needs_flattening(model, composites=True):
    """True when `model` holds a nested model or (with `composites`) an inlinable composite layer.

    Args:
        model: A built Sequential or functional `keras.Model`.
        composites: Bool. Count composite layers too.

    Returns:
        Bool.

    Example:

    >>> inputs = keras.Input((4,))
    >>> tfprune.graph.needs_flattening(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    False
    """
    for layer in _utils.functional_view(model).layers:
        if _is_graph_model(layer) or (composites and is_composite(layer)):
            return True
    return False


def _flatten_once(functional, copies, composites, name):
    copies["names"] = {layer.name for layer in functional.layers}
    inputs = [
        keras.Input(
            batch_shape=tensor.shape, dtype=tensor.dtype, name=keras_graph.input_name(tensor)
        )
        for tensor in functional.inputs
    ]
    changed = [False]
    outputs = _inline(functional, inputs, copies, composites, changed)
    try:
        flat = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name)
    except ValueError as error:
        shared = [layer for key, layer in copies.items() if isinstance(key, int)
                  and isinstance(layer, keras.layers.Layer) and str(layer.name) in str(error)
                  and not getattr(layer, "_tfprune_is_shadow", False) and id(layer) == key]  # fmt: skip
        why = (
            f"layer '{shared[0].name}' ({type(shared[0]).__name__}) cannot be copied, as its config does "
            "not load back, so each block keeps the original with its one name"
            if shared
            else "rename one of them"
        )
        raise ValueError(
            f"`tfprune.graph.flatten`: inlining model '{name}' gives two layers the same name "
            f"({' '.join(str(error).split())}); {why}."
        ) from error
    return flat, changed[0]


def _copy(layer, copies):
    if id(layer) not in copies:
        # A handler may copy a layer whose own config does not load back (keras-hub's LlamaAttention).
        copy = getattr(handler_for(layer), "copy", None)
        copied = copy(layer) if copy is not None else None
        copies[id(layer)] = (
            copied if copied is not None else _utils.copy_or_share(layer, "tfprune.graph.flatten")
        )
    return copies[id(layer)]


def _shadow(layer, copies, name=None):
    """A stand-in for a composite layer whose sub-layers are copies of the original's.

    Calling `shadow.call` runs the composite's own Python code on the copies,
    so tracing it records them (not the user's layers) in the new graph; the
    composite's config never needs to round-trip. Sub-layers that are
    composite themselves get shadows too, inlined by the next pass. `name`
    renames the shadow (its sub-layers then take that name as their prefix).
    """
    if id(layer) in copies:
        return copies[id(layer)]
    shadow = object.__new__(type(layer))
    copies[id(layer)] = shadow
    own_name = getattr(layer, "_tfprune_own_name", layer.name)
    if name is not None and name != layer.name:
        own_name = layer.name
    owner = (name or layer.name, own_name)
    for key, value in layer.__dict__.items():
        object.__setattr__(shadow, key, _swapped(value, copies, owner))
    object.__setattr__(shadow, "name", owner[0])
    object.__setattr__(shadow, "_tfprune_is_shadow", True)
    object.__setattr__(shadow, "_tfprune_own_name", own_name)
    traceable = handlers_multimodal.traceable_call(layer)
    if traceable is not None:  # traced in place of `call`; `_verified` still runs the layer's own
        object.__setattr__(shadow, "call", traceable.__get__(shadow))
    # The shadow's calls must not be recorded in the original layer's node lists.
    keras_graph.forget_calls(shadow)
    return shadow


def _swapped(value, copies, owner):
    if isinstance(value, keras.Model) and not isinstance(value, type) and _is_graph_model(value):
        # A block's Sequential (ViTDet's MLP): a copy, sharing the pass's layer
        # copies, so the shadow neither holds the user's weights nor counts them twice.
        if id(value) not in copies:
            copies[id(value)] = keras.models.clone_model(
                value, clone_function=lambda layer: _swapped(layer, copies, owner)
            )
        return copies[id(value)]
    if isinstance(value, keras.layers.Layer) and not _is_graph_model(value):
        owner_name, owner_own_name = owner
        fresh = id(value) not in copies
        # Blocks name their sub-layers within the block ("dropout" in every
        # encoder block); inlined, they take the block's name as a prefix.
        prefixed = value.name.startswith((owner_name + "_", owner_own_name + "_"))
        name = value.name if prefixed else f"{owner_name}_{value.name}"
        if fresh:
            name = _unique(name, copies)
        if is_composite(value):
            return _shadow(value, copies, name=name)
        new = _copy(value, copies)
        if fresh and new is not value and new.name != name:
            object.__setattr__(new, "_tfprune_own_name", new.name)
            object.__setattr__(new, "name", name)
        return new
    if isinstance(value, (list, tuple)) and any(
        isinstance(item, keras.layers.Layer) for item in value
    ):
        items = [_swapped(item, copies, owner) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict) and any(
        isinstance(item, keras.layers.Layer) for item in value.values()
    ):
        return {key: _swapped(item, copies, owner) for key, item in value.items()}
    return value


def _unique(name, copies):
    """`name`, or `name_2`, `name_3` ... if an inlined layer of this pass already has it."""
    taken = copies.setdefault("names", set())
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate


def _inline(functional, inputs, copies, composites, changed, prefix=None):
    """Runs `functional` on `inputs` with copies of its layers, inlining what it can.

    `prefix` is the name of the nested model being inlined: a layer of it
    whose name another layer already has is renamed `<prefix>_<name>` (two
    encoders of one model each have a `layer_norm`).
    """

    def claimed(layer):
        if prefix is None:
            return layer.name
        if id(layer) not in copies.setdefault("claimed", {}):
            taken = copies.setdefault("names", set())
            name = (
                layer.name if layer.name not in taken else _unique(f"{prefix}_{layer.name}", copies)
            )
            taken.add(name)
            copies["claimed"][id(layer)] = name
        return copies["claimed"][id(layer)]

    def operation_fn(operation):
        if _is_graph_model(operation):
            changed[0] = True
            inner = _utils.functional_view(operation)
            # As `Functional.call` does: inputs by name, and an axis of size 1 added or
            # removed where the caller's rank differs by one (a `(batch,)` timestep fed to
            # an `Input((1,))`), recorded as operations of the inlined graph.
            return lambda inputs, *args, **kwargs: _inline(
                inner,
                _adjusted_ranks(inner, inputs),
                copies,
                composites,
                changed,
                prefix=operation.name,
            )
        if not isinstance(operation, keras.layers.Layer):
            return _dense_unless_sparse_input(operation)  # a keras.ops operation: stateless
        name = claimed(operation)
        if composites and is_composite(operation):
            if isinstance(operation, (keras.layers.Lambda, keras.layers.Activation)):
                return _traced(_renamed(_copy(operation, copies), name, operation), changed)
            fallback = None
            if keras_layers.own_variables(operation):
                # Kept whole, it must not share its own weights with the user's layer.
                fallback = lambda: _renamed(_copy(operation, copies), name, operation)  # noqa: E731
            return _traced(_shadow(operation, copies, name=name), changed, fallback)
        return _renamed(_copy(operation, copies), name, operation)

    return keras_graph.run_graph(functional, inputs, operation_fn=operation_fn)


def _adjusted_ranks(functional, inputs):
    """`inputs` of a nested model with a trailing axis of size 1 added or removed where `Functional.call` does it.

    A dict given to a model whose inputs are a list (Gemma 3n's backbone) is
    taken by input name, as `Functional.call` does, not in key order.
    """
    if isinstance(inputs, dict) and not isinstance(keras_graph.inputs_structure(functional), dict):
        names = [keras_graph.input_name(tensor) for tensor in functional.inputs]
        if set(names) <= set(inputs):
            inputs = [inputs[name] for name in names]
    flat = keras.tree.flatten(inputs)
    if len(flat) != len(functional.inputs):
        return inputs
    adjusted = []
    for tensor, expected in zip(flat, functional.inputs):
        rank, wanted = len(getattr(tensor, "shape", ())), len(expected.shape)
        if tensor is not None and rank == wanted + 1 and tensor.shape[-1] == 1:
            tensor = keras.ops.squeeze(tensor, axis=-1)
        elif tensor is not None and rank == wanted - 1 and expected.shape[-1] == 1:
            tensor = keras.ops.expand_dims(tensor, axis=-1)
        adjusted.append(tensor)
    return adjusted


def _dense_unless_sparse_input(operation):
    """Calls `operation`; a `Multiply` by a constant that Keras marks sparse is recorded as a `DenseMultiply`.

    Keras marks `x * c` sparse when `c` is not a tensor of its own (it has no
    `sparse` attribute, which Keras's `Multiply` reads as True): Gemma scales
    its embeddings so. A layer called on such a tensor without an output
    shape of its own then runs its `call` on a sparse placeholder, which it
    refuses (while tracing a composite and when the surgery rebuilds the
    model); the product is dense whenever the model runs.
    """

    def call(*args, **kwargs):
        outputs = operation(*args, **kwargs)
        tensors = [
            value
            for value in keras.tree.flatten((args, kwargs))
            if isinstance(value, keras.KerasTensor)
        ]
        marked = any(
            isinstance(output, keras.KerasTensor) and output.sparse
            for output in keras.tree.flatten(outputs)
        )
        if (
            type(operation).__name__ == "Multiply"
            and tensors
            and marked
            and not any(t.sparse for t in tensors)
        ):
            return handlers_decoders.DenseMultiply(name=operation.name)(*args, **kwargs)
        return outputs

    return call


def _renamed(copy, name, original):
    if copy.name != name and copy is not original:  # the user's own layer is never renamed
        object.__setattr__(copy, "_tfprune_own_name", getattr(copy, "_tfprune_own_name", copy.name))
        object.__setattr__(copy, "name", name)
    return copy
