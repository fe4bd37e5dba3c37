"""The channel dependency graph of a Sequential or functional Keras 3 model.

Structured pruning removes channels, and a channel is shared: the filter `n`
of a conv is also channel `n` of the BatchNormalization after it, of the
depthwise conv after that, of every tensor added to it in a residual sum and
row `n` of the kernel of each layer that reads it. `build(model)` walks the
functional graph (`model.operations`, including non-layer operations such as
`x + 3.0` or `keras.ops.relu6(x)`) and returns the **channel groups**: sets
of channels that must be removed together.

How it works: every producer (a conv or dense output, a model input) creates
fresh channel ids; handlers say how ids flow from an operation's inputs to its
outputs (a BatchNormalization passes them through, a Concatenate joins them,
a Flatten repeats each one for every spatial position, a depthwise conv with
`depth_multiplier=M` repeats each one M times) and which weight axes they
index. Elementwise operations between tensors (`Add`, `Multiply`, `x * y`,
...) unify the ids they combine, understanding broadcasting (a `1x1xC`
squeeze-excite gate is unified with the C channels it scales). A group is
then a set of unified ids; group channel `i` is the producer's output channel
`i` for the group's first producer.

```python
graph = tfprune.graph.build(model)
for group in graph.groups:          # deterministic, topological order
    group.name                      # the name of the group's first producer
    group.size                      # number of channels
    group.prunable, group.reason    # False + one sentence when it may not shrink
    group.members                   # Member(layer_name, role, weights, positions, channels)
    group.producers, group.consumers
    group.squeeze_excite_of         # for an SE bottleneck: its expansion group
    group.heads_of                  # for attention heads: the MultiHeadAttention layer
    group.normalized_by             # LayerNormalization layers over a hidden width
graph["expanded_conv_1_expand"]     # a group by name
```

Roles: `"output"` (a producer's output channels: conv/dense kernel last axis
and bias), `"input"` (a consumer's input-channel axis) and `"param"`
(per-channel parameters of a channel-preserving layer: BatchNormalization,
PReLU, depthwise kernels and biases).

A group is not prunable when its channels reach a model input or output, or
pass through an operation tfprune cannot resize (a grouped convolution, a
reshape that splits channels ...) or that couples the channels, so that
removing one, even a dead one, would change the others: a softmax,
normalisation or reduction over the channel axis, whether a layer
(`Softmax`, `LayerNormalization`, ...), an activation (`Activation("softmax")`,
`Dense(..., activation="softmax")`) or a `keras.ops` call (`ops.sum(x,
axis=-1)`); an activation function tfprune does not know is frozen too (declare
an elementwise one with `register_activation(function)`). Unknown layers
and operations are refused by name; teach tfprune about them with
`register_handler(layer_class_or_op_name, handler)`: `Preserve()` for a
channel-preserving layer, `Freeze(reason)` for one that must not be resized,
or a `Handler` subclass (see `tfprune/handlers.py` for the built-in ones).
Models nested as layers inside another model (a backbone called as one
layer) are refused: inline them first with `flatten(model)`.

Design note: a group is a set of unified channel ids rather than a list of
layers, so a Concatenate feeding an Add, or a depthwise conv with
`depth_multiplier > 1`, needs no special case: whatever ids a weight axis
carries, the positions of removed ids are cut from it.
"""

import dataclasses
import inspect
import string
import threading
import warnings

import keras
import numpy as np

from tfprune import (
    _batch_axis,
    _utils,
    handlers,
    handlers_decoders,
    handlers_diffusion,
    handlers_gemma,
    handlers_inferred,
    handlers_keras_hub,
    handlers_multimodal,
    handlers_sam3,
)
from tfprune._keras import functional as keras_graph
from tfprune._keras import layers as keras_layers
from tfprune._keras import ops as keras_ops
from tfprune._utils import ConfigRepairWarning, SharedLayerWarning
from tfprune.handlers import (
    Freeze,
    Handler,
    Preserve,
    Tracer,
    handler_for,
    register_activation,
    register_handler,
)

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "ConfigRepairWarning",
    "Freeze",
    "Handler",
    "Member",
    "Preserve",
    "SharedLayerWarning",
    "Tracer",
    "UnknownOperationError",
    "build",
    "flatten",
    "is_composite",
    "needs_flattening",
    "register_activation",
    "register_handler",
]


class UnknownOperationError(ValueError):
    """A model holds a layer or operation that tfprune has no channel handler for.

    Raised by `build(model)` (and so by `tfprune.prune`, the surgery and the
    searches) when `unknown="raise"`, for a Keras layer or a `keras.ops`
    operation (a subclassed layer of your own is frozen with a warning
    instead). The message says how to register a handler; `operation` is the
    offending layer or operation.

    Args:
        operation: The layer or operation without a handler.

    Example:

    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.ops.flip(keras.layers.Dense(3)(inputs), axis=-1))
    >>> try:
    ...     tfprune.graph.build(model)
    ... except tfprune.graph.UnknownOperationError as error:
    ...     print(type(error.operation).__name__)
    Flip
    """

    def __init__(self, operation, why=None):
        self.operation = operation
        kind = type(operation)
        # Layers are registered by class, other operations by class name.
        key = kind.__name__ if isinstance(operation, keras.layers.Layer) else repr(kind.__name__)
        not_inferred = f" (and its channel rule could not be established numerically: {why})" if why else ""
        super().__init__(
            f"tfprune has no channel handler for operation '{operation.name}' of type "
            f"{kind.__module__}.{kind.__name__}{not_inferred}; register one before pruning, e.g. "
            f"`tfprune.graph.register_handler({key}, tfprune.graph.Freeze('{kind.__name__} is not "
            "pruned'))` to leave the channels around it alone, or "
            f"`tfprune.graph.register_handler({key}, tfprune.graph.Preserve())` if its output "
            "channel c is its input channel c."
        )


@dataclasses.dataclass(frozen=True)
class Member:
    """One layer's share of a channel group.

    Attributes:
        layer_name: String. The layer whose weights carry these channels.
        role: String. `"output"` (producer output channels), `"input"`
            (consumer input channels) or `"param"` (per-channel parameters).
        weights: Tuple of `(weight_path, axis)` pairs: the weights sliced
            when channels of the group are removed, and on which axis.
        positions: Tuple of ints. Indices along that axis that belong to the
            group (a Dense after a Flatten has several per channel).
        channels: Tuple of ints, same length as `positions`: the group
            channel each position carries.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> member = tfprune.graph.build(model)["conv"].members[0]
    >>> member.layer_name, member.role, member.weights
    ('conv', 'output', (('conv/kernel', 3), ('conv/bias', 0)))
    """

    layer_name: str
    role: str
    weights: tuple
    positions: tuple
    channels: tuple


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """A set of channels that must be removed together.

    Attributes:
        name: String. Stable id: the name of the group's first producer (a
            conv/dense layer, a model input or an unsupported operation).
        size: Int. Number of channels.
        prunable: Bool. False when the channels may not be removed.
        reason: String. One sentence saying why the group is not prunable;
            empty when it is.
        members: Tuple of `Member`, one per (layer, role, weight axis).
        squeeze_excite_of: String or None. For the bottleneck of a
            squeeze-and-excite block, the name of the group it gates.
        normalized_by: Tuple of layer names. The LayerNormalization /
            RMSNormalization layers that normalise over these channels (a
            transformer's hidden width): removing any channel changes their
            statistics, so the group is prunable only in a graph built with
            `hidden=True`.
        heads_of: String or None. For the heads of a `MultiHeadAttention`
            layer, its name.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> group = tfprune.graph.build(model)["conv"]
    >>> group.size, group.prunable, group.producers, group.consumers
    (16, True, ('conv',), ('head',))
    """

    name: str
    size: int
    prunable: bool
    reason: str
    members: tuple
    squeeze_excite_of: object = None
    normalized_by: tuple = ()
    heads_of: object = None

    @property
    def producers(self):
        """Tuple of layer names whose output channels are in the group."""
        return _layers_with_role(self.members, "output")

    @property
    def consumers(self):
        """Tuple of layer names whose input channels are in the group."""
        return _layers_with_role(self.members, "input")


def _layers_with_role(members, role):
    names = [member.layer_name for member in members if member.role == role]
    return tuple(dict.fromkeys(names))


class ChannelGraph:
    """The channel groups of one model, as returned by `build`.

    Attributes:
        groups: List of `ChannelGroup` in a deterministic (topological) order.
        inferred: Dict. Operation name -> the channel rule tfprune
            established numerically for an operation without a handler
            (`tfprune.handlers_inferred`), as a sentence.

    Example:

    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="head")(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> graph = tfprune.graph.build(model)
    >>> [group.name for group in graph.groups]
    ['image', 'conv', 'head']
    >>> graph["head"].reason
    "Group 'head' is not prunable: its channels are model output 'head'."
    """

    def __init__(self, groups, trace, inferred=None):
        self.groups = list(groups)
        self.inferred = dict(inferred or {})
        self._by_name = {group.name: group for group in self.groups}
        self._trace = trace

    def __getitem__(self, name):
        if name not in self._by_name:
            raise KeyError(
                f"No channel group named {name!r}; group names are the names of their first "
                f"producer layer, e.g. {list(self._by_name)[:5]}."
            )
        return self._by_name[name]

    def __contains__(self, name):
        return name in self._by_name

    def __iter__(self):
        return iter(self.groups)

    def __len__(self):
        return len(self.groups)

    def __repr__(self):
        prunable = sum(group.prunable for group in self.groups)
        return f"<ChannelGraph: {len(self.groups)} groups, {prunable} prunable>"


def build(model, unknown="raise", hidden=False, gqa="query_heads"):
    """Builds the channel dependency graph of a Sequential or functional model.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        unknown: String. What to do with a layer or operation that has no
            registered handler: `"raise"` (default) refuses the model for a
            Keras layer or a `keras.ops` operation, and freezes every group
            touching a subclassed layer of your own or another library's with
            a warning naming it (tfprune cannot see inside it, but leaving its
            channels alone is always correct); `"freeze"` freezes every
            group touching any of them, silently.
        hidden: Bool. Whether groups normalised by LayerNormalization /
            RMSNormalization over their channels (a transformer's hidden
            width, `ChannelGroup.normalized_by`) count as prunable. Removing
            such a channel changes the normalisation statistics, so the
            pruned model computes something else even where the removed
            channel's weights were zero; False (default) leaves them alone.
        gqa: String. How the heads of grouped-query attention layers
            (keras-hub's Llama, Gemma, Qwen, Mistral attention,
            `keras.layers.GroupQueryAttention`) form groups:
            `"query_heads"` (default), one group of query heads per
            key/value head (named `<layer>_heads_<k>`), so the key/value
            projections and cache keep their size; `"groups"`, one group
            of key/value heads (`<layer>_heads`), each removed with its
            query heads. See `tfprune.handlers_decoders`.

    Returns:
        A `ChannelGraph`.

    Raises:
        TypeError: If `model` is not a Keras model or is subclassed, or
            `hidden` is not a bool.
        ValueError: If the model is not built or contains a nested model,
            or `gqa` is not one of its values.
        UnknownOperationError: A `ValueError`, with `unknown="raise"`, for an
            operation without a handler.

    Example:

    >>> model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None)
    >>> graph = tfprune.graph.build(model)
    >>> graph["expanded_conv_3_expand"].producers
    ('expanded_conv_3_expand', 'expanded_conv_3_squeeze_excite_conv_1')
    >>> graph["expanded_conv_3_squeeze_excite_conv"].squeeze_excite_of
    'expanded_conv_3_expand'
    """
    _utils.require_graph_model(model, "tfprune.graph.build")
    if unknown not in ("raise", "freeze"):
        raise ValueError(
            f"`unknown` must be 'raise' or 'freeze'. Received: unknown={unknown!r}"
        )
    if not isinstance(hidden, bool):
        raise TypeError(f"`hidden` must be True or False. Received: hidden={hidden!r}")
    if gqa not in handlers_decoders.GQA_MODES:
        raise ValueError(f"`gqa` must be one of {handlers_decoders.GQA_MODES}. Received: gqa={gqa!r}")
    functional = _utils.functional_view(model)
    tracer = Tracer()
    tracer.gqa = gqa
    for node in _ordered_nodes(functional):
        _trace_node(node, tracer, unknown)
    for tensor in functional.outputs:
        tracer.pin(tracer.channels(tensor), f"its channels are model output '{keras_graph.input_name(tensor)}'")
    return _assemble(functional, tracer, hidden)


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
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
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
    return isinstance(layer, keras.Sequential) or (isinstance(layer, keras.Model) and keras_graph.is_functional(layer))


def _inlined_with_own_weights(layer):
    """A keras-hub layer inlined although it holds weights (`handlers_keras_hub.INLINED_WITH_OWN_WEIGHTS`)."""
    return type(layer).__module__.startswith("keras_hub.") and handlers_keras_hub.inlined_with_own_weights(layer)


def _flatten_once(functional, copies, composites, name):
    copies["names"] = {layer.name for layer in functional.layers}
    inputs = [
        keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=keras_graph.input_name(tensor))
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
        copies[id(layer)] = copied if copied is not None else _utils.copy_or_share(layer, "tfprune.graph.flatten")
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
    if isinstance(value, (list, tuple)) and any(isinstance(item, keras.layers.Layer) for item in value):
        items = [_swapped(item, copies, owner) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict) and any(isinstance(item, keras.layers.Layer) for item in value.values()):
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
            name = layer.name if layer.name not in taken else _unique(f"{prefix}_{layer.name}", copies)
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
                inner, _adjusted_ranks(inner, inputs), copies, composites, changed, prefix=operation.name
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
        tensors = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
        marked = any(isinstance(output, keras.KerasTensor) and output.sparse for output in keras.tree.flatten(outputs))
        if type(operation).__name__ == "Multiply" and tensors and marked and not any(t.sparse for t in tensors):
            return handlers_decoders.DenseMultiply(name=operation.name)(*args, **kwargs)
        return outputs

    return call


def _renamed(copy, name, original):
    if copy.name != name and copy is not original:  # the user's own layer is never renamed
        object.__setattr__(copy, "_tfprune_own_name", getattr(copy, "_tfprune_own_name", copy.name))
        object.__setattr__(copy, "name", name)
    return copy


_LAYER_CALL = keras.layers.Layer.__call__
_RESHAPE_OPERATION = keras_ops.operation_class(keras.ops.reshape, keras.KerasTensor((1, 2)), (2,))
_RESHAPE_SYMBOLIC_CALL = _RESHAPE_OPERATION.symbolic_call
_SHAPE = keras.ops.shape
_ARANGE = keras.ops.arange
_BROADCAST_TO = keras.ops.broadcast_to
_ONES = keras.ops.ones
_PAD = keras.ops.pad
_EINSUM = keras.ops.einsum
_GET_ITEM = keras.KerasTensor.__getitem__
_TILE = keras.ops.tile
_MATMUL = keras.ops.matmul
_MULTIPLY_OPERATION = handlers_decoders._MULTIPLY
_MULTIPLY_SYMBOLIC_CALL = _MULTIPLY_OPERATION.symbolic_call
_SIZE_MARKERS = [True]  # False while a trace is retried without sequence-length markers
_NESTING = [0]  # depth of `_traced` calls in progress
_BATCH_ROWS = {}  # `_batch_axis.factor`'s memo for the trace in progress
_TRACE_LOCK = threading.RLock()
_TRACER_THREAD = [None]  # the thread whose trace the patches serve


def _tracing_here():
    return _TRACER_THREAD[0] == threading.get_ident()


class _TracedBatch:
    """The batch size that `keras.ops.shape` gives while a composite is traced.

    It is unknown, but code computes with it (`B * windows`, `B // windows`,
    then reshapes to it): such arithmetic keeps the marker, and a reshape
    whose first entry is the marker records -1 there (`_batch_free_shape`).
    `keras.ops.broadcast_to` (or `keras.ops.ones`) to a shape holding it records an operation that
    reads the size from `source` when the model runs (`_traced_broadcast_to`).
    Used as a number anywhere else it raises, so the layer is kept whole.

    Args:
        source: `KerasTensor` or None. The tensor whose size it is.
        axis: Int. The axis of `source` it is the size of.
        rows: `fractions.Fraction` or None. How many rows of a tensor's first
            axis this size is per sample (`_batch_axis.factor`): 1 for the
            batch, 4 for `B * 4`; None when unknown.
    """

    def __init__(self, source=None, axis=0, rows=None):
        self.source = source  # the tensor whose size it is (None: not known)
        self.axis = axis
        self.rows = rows

    def _scaled(self, rows):
        # `B * n` is no longer the size of `source`'s axis, unless n is 1.
        if rows == self.rows:
            return self
        return _TracedBatch(None, self.axis, rows)

    def __mul__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            return self._scaled(None if self.rows is None else self.rows * other) if other != 1 else self
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, int) and not isinstance(other, bool) and other:
            return self._scaled(None if self.rows is None else self.rows / other) if other != 1 else self
        return NotImplemented

    def __index__(self):
        raise TypeError("the batch size is unknown while tfprune traces the layer")

    __int__ = __index__

    def __repr__(self):  # backends quote it when they refuse it as a size
        return "<batch size, unknown while traced>"


class _TracedSize:
    """An unknown size other than the batch (a sequence length) while a composite is traced.

    Decoders build their causal masks and positions from the sequence
    length (`ops.arange(ops.shape(x)[1])`, then `ops.broadcast_to(mask,
    (batch, length, length))`); on symbolic tensors that length is None.
    `ops.shape` gives this marker instead, and `ops.arange` and
    `ops.broadcast_to` given one record operations that read the size from
    `source` when the model runs (`handlers_decoders.SizeRange`,
    `handlers_decoders.BroadcastToSizes`), so the trace holds for any
    length; one length less another is a pad `ops.pad` records
    (`handlers_multimodal.PadToSizes`). Used as a number anywhere else it
    raises; the trace is then
    retried with None sizes, as before markers existed (`_SIZE_MARKERS`).
    """

    def __init__(self, source, axis):
        self.source = source
        self.axis = axis

    def __sub__(self, other):
        # `length - ops.shape(mask)[1]`: what PaliGemma pads its mask by (`_traced_pad`).
        if type(self) is type(other) is _TracedSize and None not in (self.source, other.source):
            return _TracedDifference(self, other)
        return NotImplemented

    def __index__(self):
        raise TypeError("a sequence length is unknown while tfprune traces the layer")

    __int__ = __index__

    def __repr__(self):
        return f"<size of axis {self.axis}, unknown while traced>"


class _TracedDifference(_TracedSize):
    """One traced size less another: only `keras.ops.pad` records it (`_traced_pad`), as a pad to a size."""

    def __init__(self, minuend, subtrahend):
        super().__init__(None, None)
        self.minuend, self.subtrahend = minuend, subtrahend


def _traced_shape(x):
    """`keras.ops.shape` while a composite is traced: unknown sizes are `_TracedBatch` / `_TracedSize` markers."""
    shape = _SHAPE(x)
    if not (_tracing_here() and isinstance(x, keras.KerasTensor) and len(shape)):
        return shape
    shape = tuple(shape)
    if shape[0] is None:
        shape = (_TracedBatch(x, 0, _batch_axis.factor(x, _BATCH_ROWS)), *shape[1:])
    if _SIZE_MARKERS[0]:
        shape = tuple(_TracedSize(x, axis) if size is None else size for axis, size in enumerate(shape))
    return shape


_NO_STOP = object()  # `arange(n)`, told apart from `arange(0, None)` (a stop read as None from a shape)


def _traced_arange(start, stop=_NO_STOP, step=None, dtype=None):
    """`keras.ops.arange` while a composite is traced: a range up to a traced size is recorded as an operation."""
    end = start if stop is _NO_STOP else stop
    begin = 0 if stop is _NO_STOP else start
    stop = None if stop is _NO_STOP else stop
    if _tracing_here() and end is None:
        # `arange(0, None)` is an empty range: recorded, it would be a constant of no positions.
        raise TypeError("a range up to a size unknown while traced cannot be recorded")
    if _tracing_here() and isinstance(end, (_TracedSize, _TracedBatch)) and end.source is not None:
        if not all(_utils.is_integer(value) for value in (begin, 1 if step is None else step)):
            raise TypeError("a range up to a sequence length from a traced start or step cannot be recorded")
        operation = handlers_decoders.SizeRange(axis=end.axis, start=int(begin), step=int(1 if step is None else step),
                                                dtype=dtype)  # fmt: skip
        return operation(end.source)
    return _ARANGE(start, stop, step, dtype) if step is not None else _ARANGE(start, stop, dtype=dtype)


def _traced_broadcast_to(x, shape):
    """`keras.ops.broadcast_to` while a composite is traced: traced sizes in `shape` are read when the model runs."""
    entries = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if not (_tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries)):
        return _BROADCAST_TO(x, shape)
    sizes, sources = _sizes_read_when_run(entries, "a broadcast")
    if not isinstance(x, keras.KerasTensor):  # a constant: the operation's first input must be a tensor
        x = keras.ops.convert_to_tensor(x)
    return handlers_decoders.BroadcastToSizes(sizes=sizes)(x, *sources)


def _sizes_read_when_run(entries, what):
    """`(sizes, sources)` of `BroadcastToSizes` for a shape holding traced sizes: `[i, axis]` of `sources[i]`, or ints."""
    sources, sizes = [], []
    for size in entries:
        if isinstance(size, (_TracedSize, _TracedBatch)):
            if size.source is None:
                raise TypeError(f"{what} to a size unknown while traced cannot be recorded")
            index = next((i for i, source in enumerate(sources) if source is size.source), None)
            if index is None:
                sources.append(size.source)
                index = len(sources) - 1
            sizes.append([index, size.axis])
        elif _utils.is_integer(size):
            sizes.append(int(size))
        else:
            raise TypeError(f"{what} to a shape holding {size!r} cannot be recorded")
    return sizes, sources


def _traced_pad(x, pad_width, mode="constant", constant_values=None):
    """`keras.ops.pad` while a composite is traced: a pad of `size - own size` makes an axis of `x` that size when the model runs."""
    if not (_tracing_here() and _holds_marker(pad_width)):  # any pad Keras takes, in any thread
        return _PAD(x, pad_width, mode=mode, constant_values=constant_values)
    pairs = [list(pair) if isinstance(pair, (list, tuple)) else [pair] for pair in pad_width]
    sources, widths = [], []
    for axis, pair in enumerate(pairs):
        sides = []
        for side in pair:
            if isinstance(side, _TracedDifference):
                target, own = side.minuend, side.subtrahend
                if mode != "constant" or own.source is not x or own.axis != axis:
                    raise TypeError("a pad by a size unknown while traced cannot be recorded")
                index = next((i for i, source in enumerate(sources) if source is target.source), None)
                if index is None:
                    sources.append(target.source)
                    index = len(sources) - 1
                side = [index, target.axis]
            elif not _utils.is_integer(side):
                raise TypeError(f"a pad by {side!r} cannot be recorded")
            sides.append(side if isinstance(side, list) else int(side))
        widths.append(sides)
    constant = 0 if constant_values is None else constant_values
    return handlers_multimodal.PadToSizes(pad_width=widths, constant_values=constant)(x, *sources)


def _traced_ones(shape, dtype=None):
    """`keras.ops.ones` while a composite is traced: a shape holding traced sizes is a recorded broadcast of a one.

    PARSeq's decoder repeats its position queries over the batch with
    `ops.ones((batch, 1, 1)) * queries`.
    """
    entries = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if _tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries):
        return _traced_broadcast_to(_ONES((), dtype=dtype), shape)
    return _ONES(shape, dtype=dtype)


def _traced_einsum(subscripts, *operands, **kwargs):
    """`keras.ops.einsum` while a composite is traced: upper-case subscripts are recorded in lower case.

    Keras works out a symbolic einsum's output shape by replacing each
    letter by its size, and replaces the letters left (of the output alone)
    only when they are lower case: keras-hub's MMDiT attention
    (`"BTNH,BSNH->BNTS"`) fails on symbolic tensors. The same equation with
    each letter renamed to a lower-case one not in it computes the same values.
    """
    if _tracing_here() and isinstance(subscripts, str) and any(letter.isupper() for letter in subscripts):
        letters = list(dict.fromkeys(letter for letter in subscripts if letter.isalpha()))
        free = [letter for letter in string.ascii_lowercase if letter not in letters]
        upper = [letter for letter in letters if letter.isupper()]
        if len(upper) <= len(free):
            renamed = dict(zip(upper, free))
            subscripts = "".join(renamed.get(letter, letter) for letter in subscripts)
    return _EINSUM(subscripts, *operands, **kwargs)


def _traced_getitem(self, key):
    """`KerasTensor.__getitem__` while a composite is traced: a slice up to a traced size is read when it runs.

    keras-hub's MMDiT splits its joint attention with
    `attention[:, :context_length]`, the context's length read with
    `ops.shape`: recorded as `handlers_diffusion.SliceToSizes`. Only keys
    of full slices and one slice of int, None or traced bounds are recorded
    so; any other key holding a marker is left to Keras (the trace is then
    redone without markers).
    """
    parts = key if isinstance(key, tuple) else (key,)
    if not _tracing_here() or not _holds_marker(parts):
        return _GET_ITEM(self, key)
    axis = next((i for i, part in enumerate(parts) if not (isinstance(part, slice) and part == slice(None))), None)
    part = parts[axis] if axis is not None else None
    if axis is None or axis != len(parts) - 1 or not isinstance(part, slice) or part.step is not None:
        return _GET_ITEM(self, key)
    sources, bounds = [], []
    for bound in (part.start, part.stop):
        if isinstance(bound, (_TracedSize, _TracedBatch)):
            if bound.source is None:
                return _GET_ITEM(self, key)
            sources.append(bound.source)
            bounds.append([len(sources) - 1, bound.axis])
        elif bound is None or _utils.is_integer(bound):
            bounds.append(None if bound is None else int(bound))
        else:
            return _GET_ITEM(self, key)
    return handlers_diffusion.SliceToSizes(axis=axis, start=bounds[0], stop=bounds[1])(self, *sources)


def _traced_tile(x, repeats):
    """`keras.ops.tile` while a composite is traced: repeating axes of size 1 a traced number of times is a broadcast.

    SAM 3 repeats its constant position encodings and queries over the
    batch (`ops.tile(pos, (batch, 1, 1, 1))`) and its padding mask over the
    sequence (`ops.tile(mask[:, None, None, :], (1, 1, length, 1))`).
    Other tiles are left to `keras.ops.tile`.
    """
    entries = list(repeats) if isinstance(repeats, (list, tuple)) else [repeats]
    if not (_tracing_here() and any(isinstance(size, (_TracedSize, _TracedBatch)) for size in entries)):
        return _TILE(x, repeats)
    sizes = _traced_shape(x) if isinstance(x, keras.KerasTensor) else tuple(keras.ops.shape(x))
    if len(sizes) != len(entries):
        return _TILE(x, repeats)
    shape = []
    for size, repeat in zip(sizes, entries):
        if isinstance(repeat, (_TracedSize, _TracedBatch)):
            if size != 1:
                return _TILE(x, repeats)
            shape.append(repeat)
        elif repeat == 1:
            shape.append(size)
        elif _utils.is_integer(size):
            shape.append(int(size) * int(repeat))
        else:
            return _TILE(x, repeats)
    return _traced_broadcast_to(x, tuple(shape))


_KERNEL_LAYERS = {}  # id of a kernel -> the sub-layer of a traced composite that holds it (`_traced_matmul`)


def _kernel_layers(shadow):
    """The Dense / EinsumDense sub-layers of `shadow` whose call is `x @ kernel`, by the id of their kernel."""
    found = {}
    for value in vars(shadow).values():
        if not isinstance(value, (keras.layers.Dense, keras.layers.EinsumDense)) or not value.built:
            continue
        if value.quantization_mode:
            continue
        kernel = value.kernel  # a tensor, not the variable, when LoRA is on
        if not isinstance(kernel, keras.Variable) or len(kernel.shape) != 2:
            continue
        if getattr(value, "bias", None) is not None or value.activation not in (None, keras.activations.linear):
            continue
        if isinstance(value, keras.layers.EinsumDense):
            inputs, _, output = value.equation.partition("->")
            source, _, weights = inputs.partition(",")
            if len(weights) != 2 or source[-1:] != weights[0] or output != source[:-1] + weights[1]:
                continue
        found[id(kernel)] = value
    return found


def _traced_matmul(x1, x2):
    """`keras.ops.matmul` while a composite is traced: `x @ layer.kernel` is recorded as a call of that layer.

    Gemma 4's decoder block multiplies by its MLP layers' kernels directly
    (`ops.matmul(x, self.gating_ffw.kernel)`); recorded as a product with a
    constant, the kernel would be no weight of the new model. The layer
    computes the same product (no bias, no activation), and its call is a
    layer tfprune can slice.
    """
    layer = _KERNEL_LAYERS.get(id(x2)) if _tracing_here() and isinstance(x2, keras.Variable) else None
    if layer is not None and isinstance(x1, keras.KerasTensor):
        rank = len(layer.equation.partition(",")[0]) if isinstance(layer, keras.layers.EinsumDense) else None
        if rank is None or rank == len(x1.shape):
            return layer(x1)
    return _MATMUL(x1, x2)


def _dense_multiply_call(self, x1, x2):
    """`x * c` while a composite is traced: recorded as a `DenseMultiply` when Keras marks it sparse (see `_dense_unless_sparse_input`).

    Gemma 3n's scaled word embedding multiplies by a constant in its `call`;
    traced, the product would be marked sparse where the layer's own output
    spec is dense, and the trace refused.
    """
    outputs = _MULTIPLY_SYMBOLIC_CALL(self, x1, x2)
    if not _tracing_here() or type(self) is not _MULTIPLY_OPERATION or not getattr(outputs, "sparse", False):
        return outputs
    tensors = [value for value in (x1, x2) if isinstance(value, keras.KerasTensor)]
    if tensors and not any(tensor.sparse for tensor in tensors):
        return handlers_decoders.DenseMultiply(name=self.name)(x1, x2)
    return outputs


class _UnknownReshape(ValueError):
    """A traced reshape whose target sizes are only known when the model runs."""


def _static_reshape_call(self, x, *args, **kwargs):
    """`keras.ops.reshape` while a composite is traced: a traced batch size becomes -1.

    A layer's `call` often reshapes with `B = ops.shape(x)[0]`, which is None
    on symbolic tensors: the recorded `Reshape` would hold None (it cannot
    run) and its output would lose every size the -1 beside it stands for.
    When the batch entry is the only unknown one it becomes -1. Beside
    another -1 (`(B, -1, C)`), that -1 is worked out from how many rows of
    the input's first axis a sample fills (not always one: code folds windows
    or heads into it), read from the input's history (`_batch_axis`); when
    that is unknown the trace is refused.
    """
    if not _tracing_here():
        return _RESHAPE_SYMBOLIC_CALL(self, x, *args, **kwargs)
    newshape = _batch_free_shape(x, self.newshape)
    kept = _per_sample_shape(x, newshape)
    if kept is not None:
        return keras.layers.Reshape(kept, name=self.name)(x)
    if isinstance(newshape, (list, tuple)) and any(_unknown(size) for size in newshape):
        markers = [size for size in newshape if isinstance(size, (_TracedSize, _TracedBatch))]
        if len(markers) == sum(_unknown(size) for size in newshape) and all(marker.source is not None for marker in markers):
            # Every unknown size is an axis of a tensor of the graph (Gemma 3n's `reshape(x,
            # shape(ids) + (layers, width))`): read from it when the model runs.
            sizes, sources = _sizes_read_when_run(newshape, "a reshape")
            return handlers_gemma.ReshapeToSizes(sizes=sizes)(x, *sources)
        # A reshape to sizes only known when it runs: recorded, it could not run.
        raise _UnknownReshape(
            f"its call reshapes to {tuple(newshape)}, sizes read from a tensor whose batch or "
            "sequence length is unknown until it runs"
        )
    if newshape is not self.newshape:  # a new operation, so that its config holds the new shape
        self = type(self)(newshape=newshape, name=self.name)
    return _RESHAPE_SYMBOLIC_CALL(self, x, *args, **kwargs)


def _per_sample_shape(x, newshape):
    """The shape of each sample when a traced reshape `(B, -1, ...)` keeps the input's first axis, else None.

    keras-hub's MMDiT reshapes its attention with `(batch, -1, width)` over
    a context of unknown length: the -1 beside the batch cannot be worked
    out, but when the batch entry is the input's own first axis (as many
    rows of it per sample as the input has) the reshape is the `Reshape`
    layer's, of the other sizes, which keeps the first axis.
    """
    if not (isinstance(newshape, (list, tuple)) and len(newshape) > 1 and isinstance(newshape[0], _TracedBatch)):
        return None
    rest = list(newshape[1:])
    if tuple(x.shape)[:1] != (None,) or rest.count(-1) != 1 or not all(_utils.is_integer(size) for size in rest):
        return None
    rows = newshape[0].rows
    if rows is None or rows != _batch_axis.factor(x, _BATCH_ROWS):
        return None
    return tuple(int(size) for size in rest)


def _batch_free_shape(x, newshape):
    input_shape = tuple(x.shape)
    if not isinstance(newshape, (list, tuple)) or not newshape:
        return newshape
    if not (newshape[0] is None or isinstance(newshape[0], _TracedBatch)):
        return newshape
    if input_shape[0] is not None or any(_unknown(size) for size in newshape[1:]):
        return newshape
    rest = list(newshape[1:])
    if -1 in rest:
        # `(B, -1, C)`: the -1 is what each sample's rows of the input hold, over
        # the sizes given beside it; it is known when both how many rows of the
        # input and how many of the output a sample fills are (`_batch_axis`).
        rows_in = _batch_axis.factor(x, _BATCH_ROWS)
        rows_out = getattr(newshape[0], "rows", None)
        if rest.count(-1) > 1 or None in input_shape[1:]:
            return newshape
        known = [size for size in rest if size != -1]
        total, part = int(np.prod(input_shape[1:])), int(np.prod(known))
        if rows_in is not None and rows_out is not None and part:
            size = rows_in * total / (rows_out * part)
            if size.denominator != 1 or size < 1:
                return newshape
            rest[rest.index(-1)] = int(size)
        else:
            # Unknown rows: taking the input's first axis for the batch is wrong once the
            # code folded windows or heads into it, so the trace that records this guess is
            # used only if it computes the layer's values (`_verified`).
            if not known and len(rest) > 1 or part == 0 or total % part:
                return newshape
            rest[rest.index(-1)] = total // part
            _GUESSED[0] += 1
    return (-1, *rest) if isinstance(newshape, tuple) else [-1, *rest]


_GUESSED = [0]  # reshapes whose -1 beside the traced batch size was worked out
_GUESSED_REASON = (
    "its call reshapes to sizes read from a tensor whose batch or sequence length is unknown until it runs, "
    "and worked out from the tensor's own sizes they compute other values"
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
    symbolic = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
    traced = [value for value in keras.tree.flatten(outputs) if isinstance(value, keras.KerasTensor)]
    generator = np.random.default_rng(0)
    probes = {}

    def probe(value):
        if not isinstance(value, keras.KerasTensor):
            return value
        if id(value) not in probes:
            shape = [3 if size is None else size for size in value.shape]
            array = generator.standard_normal(shape) if "float" in str(value.dtype) else np.ones(shape)
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
        return not strict  # its own weights stand as graph tensors while it is traced (`_own_weights_as_layers`)
    try:
        got = keras.tree.flatten(keras.Function(symbolic, traced)([probe(value) for value in symbolic]))
        return len(got) == len(want) and all(
            np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5, rtol=1e-4,
                        equal_nan=True)
            for a, b in zip(got, want)
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - the recorded operations do not run where the layer does
        return False


def _unknown(size):
    return size is None or isinstance(size, (_TracedBatch, _TracedSize))


def _nested_shadow_call(self, *args, **kwargs):
    """`Layer.__call__` while a composite is traced: a nested composite is inlined at once.

    Calling it as a layer would make Keras record it as one operation, which
    refuses outputs that are not tensors (keras-hub's DeiT blocks return
    `(x, None)`); its own `call`, run on the symbolic tensors, does not.
    """
    if getattr(self, "_tfprune_is_shadow", False) and _tracing_here():
        symbolic = any(isinstance(value, keras.KerasTensor) for value in keras.tree.flatten((args, kwargs)))
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
        own = "holds weights of its own, so it is not inlined, and " if not is_composite(self) else ""
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
    return {key: value for key, value in kwargs.items() if key not in ("training", "mask") or key in parameters}


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
                keras.layers.Layer.__call__ = _nested_shadow_call
                _RESHAPE_OPERATION.symbolic_call = _static_reshape_call
                keras.ops.shape = _traced_shape
                keras.ops.arange = _traced_arange
                keras.ops.broadcast_to = _traced_broadcast_to
                keras.ops.ones = _traced_ones
                keras.ops.pad = _traced_pad
                keras.ops.einsum = _traced_einsum
                keras.KerasTensor.__getitem__ = _traced_getitem
                keras.ops.tile = _traced_tile
                keras.ops.matmul = _traced_matmul
                _MULTIPLY_OPERATION.symbolic_call = _dense_multiply_call
            try:
                return traced_call(*args, **kwargs)
            finally:
                _NESTING[0] -= 1
                if _NESTING[0] == 0:
                    keras.layers.Layer.__call__ = _LAYER_CALL
                    _RESHAPE_OPERATION.symbolic_call = _RESHAPE_SYMBOLIC_CALL
                    keras.ops.shape = _SHAPE
                    keras.ops.arange = _ARANGE
                    keras.ops.broadcast_to = _BROADCAST_TO
                    keras.ops.ones = _ONES
                    keras.ops.pad = _PAD
                    keras.ops.einsum = _EINSUM
                    keras.KerasTensor.__getitem__ = _GET_ITEM
                    keras.ops.tile = _TILE
                    keras.ops.matmul = _MATMUL
                    _MULTIPLY_OPERATION.symbolic_call = _MULTIPLY_SYMBOLIC_CALL
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
                if _NESTING[0] > 1 and _returns_none(error):  # inside a trace: say why, not Keras's words
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
                why = _GUESSED_REASON if _GUESSED[0] != guessed else (
                    "its traced call gives other outputs than its output spec"
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
                why = _GUESSED_REASON if _GUESSED[0] != guessed else (
                    "its traced call computes other values than the layer (it records a size that is only "
                    "known when it runs)"
                )
        except Exception as error:  # noqa: BLE001 - not traceable: keep the layer as one unit
            if isinstance(error, (_UnknownReshape, _NotRecordable)):
                why = str(error)
            elif any(mark in str(error) for mark in ("_TracedBatch", "unknown while traced", "batch size is unknown")):
                why = "its call makes a tensor of the batch size, which is unknown until it runs"
            else:
                where = _failing_keras_operation(error)
                why = f"its call fails on symbolic tensors{where}: {_utils.first_line(error, limit=200)}"
        finally:
            for key, value in own.items():  # the shadow holds its variables again
                object.__setattr__(shadow, key, value)
        return (None, why) if why is not None else (outputs, None)

    return call


def _declared_output_spec(layer):
    """`layer.compute_output_spec`, or tfprune's correction of a keras-hub layer's wrong one (`handlers_sam3`)."""
    if type(layer).__module__.startswith("keras_hub."):
        corrected = handlers_sam3.corrected_output_spec(layer)
        if corrected is not None:
            return corrected
    return layer.compute_output_spec


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
    anchor = next(value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor))
    for key, value in list(vars(shadow).items()):
        if isinstance(value, keras.Variable) and id(value) in variables:
            layer = Weight(tuple(value.shape), name=f"{shadow.name}_{key.strip('_')}", dtype=value.dtype,
                           trainable=value.trainable)  # fmt: skip
            layer.build()
            layer.weight.assign(value)
            replaced[key] = value
            object.__setattr__(shadow, key, _LAYER_CALL(layer, anchor))




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


def _branches_on_training(shadow, args, kwargs, outputs):
    if not keras_layers.call_takes_training(shadow):
        return False
    inputs = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
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
    inputs = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
    sized = {"SizeRange", "BroadcastToSizes", "PadToSizes", "SliceToSizes", "ReshapeToSizes"}
    return bool(sized & set(_operations_between(inputs, outputs)))


def _records_a_marker(args, kwargs, outputs):
    """True when an operation of the trace holds a size marker as an argument (`x[:, :length]`).

    Keras records such a slice without reading the marker; the recorded
    operation could not run.
    """
    inputs = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
    return any(
        _holds_marker((node.arguments.args, node.arguments.kwargs)) for node in keras_graph.walk(outputs, stop=inputs)
    )


def _unnamed_function(args, kwargs, outputs):
    """The name of a Python function an operation of the trace takes as an argument and a `.keras` file cannot name, or None.

    `keras.ops.map(gather, ...)` with a function local to a layer's `call`
    (keras-hub's D-FINE query generator) records the function itself: the
    model holding the operation would not load back.
    """
    inputs = [value for value in keras.tree.flatten((args, kwargs)) if isinstance(value, keras.KerasTensor)]
    for node in keras_graph.walk(outputs, stop=inputs):
        for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs)):
            if (inspect.isfunction(value) or inspect.ismethod(value)) and not _utils.loads_back(value):
                return value.__name__
    return None


def _holds_marker(value):
    if isinstance(value, (_TracedSize, _TracedBatch)):
        return True
    if isinstance(value, slice):
        return _holds_marker((value.start, value.stop, value.step))
    if isinstance(value, (list, tuple)):
        return any(_holds_marker(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_marker(item) for item in value.values())
    return False


def _operations_between(inputs, outputs):
    """The classes of the operations recorded from `inputs` to `outputs`, in a fixed order."""
    return [type(node.operation).__name__ for node in keras_graph.walk(outputs, stop=inputs)]


def _ordered_nodes(functional):
    """The model's call nodes in topological order (`surgery` reads them; the one walk)."""
    return keras_graph.walk(functional.outputs)


def _trace_node(node, tracer, unknown):
    operation = node.operation
    if _is_graph_model(operation):
        raise ValueError(
            f"Model '{operation.name}' is nested inside the model as a layer; tfprune cannot "
            "see its channels there. Inline it first: `model = tfprune.graph.flatten(model)`."
        )
    if node.is_input:
        handler = handlers.INPUT
    elif getattr(operation, "data_format", "channels_last") == "channels_first":
        handler = handlers.Freeze(f"'{operation.name}' uses data_format='channels_first'")
    else:
        handler = handler_for(operation)
    if handler is None:
        handler, rule = handlers_inferred.infer(node, handlers.ELEMENTWISE)
        if handler is not None:
            tracer.inferred[operation.name] = rule
    if handler is None:
        if unknown == "raise" and not _is_foreign_layer(operation):
            raise UnknownOperationError(operation, rule)
        if unknown == "raise":
            kind = type(operation).__name__
            # A library's layer is not the user's to describe (a keras-hub block mixing channels
            # by FFT is no `Preserve`): the hint is for the user's own layers.
            hint = "" if type(operation).__module__.startswith("keras_hub.") else (
                f"; to prune through it, register a handler, e.g. `tfprune.graph.register_handler({kind}, "
                "tfprune.graph.Preserve())` if its output channel c is its input channel c"
            )
            warnings.warn(
                f"tfprune cannot see inside layer '{operation.name}' ({kind}){_not_inlined(operation)}, "
                f"so the channels around it are frozen (they cannot shrink){hint}.",
                stacklevel=4,
            )
        handler = handlers.Freeze(
            (f"tfprune cannot see inside layer '{operation.name}' ({type(operation).__name__}): it could not "
            f"be inlined{_not_inlined(operation)} and has no handler"
            if _is_foreign_layer(operation)
            else f"operation '{operation.name}' ({type(operation).__name__}) has no handler")
            + f", and no channel rule could be established numerically ({rule})"
        )
    try:
        outputs = handler.trace(node, tracer)
    except handlers.ChannelMismatchError as error:
        shapes = ", ".join(str(tuple(tensor.shape)) for tensor in node.input_tensors)
        raise ValueError(
            f"tfprune cannot follow the channels through operation '{operation.name}' "
            f"({type(operation).__name__}) on inputs of shapes {shapes}: {error}."
        ) from error
    for tensor, channels in zip(node.outputs, outputs):
        tracer._tensors[id(tensor)] = np.asarray(channels, dtype=np.int64)


def _not_inlined(operation):
    why = getattr(operation, "_tfprune_not_inlined", None)
    return f" ({why})" if why else ""





def _is_foreign_layer(operation):
    """A subclassed layer from outside Keras and tfprune (the user's, keras-hub's ...)."""
    return isinstance(operation, keras.layers.Layer) and not type(operation).__module__.startswith(
        ("keras.", "tfprune.")
    )


def _assemble(functional, tracer, hidden=False):
    """Turns the traced ids into `ChannelGroup`s."""
    count = len(tracer._parent)
    roots = np.array([tracer._find(channel) for channel in range(count)], dtype=np.int64)
    # Channels created together (one producer) belong to one group: merge the
    # group labels of every root met in a segment. A label is the smallest id
    # of its group, so groups sort in the order their first channel was made.
    label = list(range(count))  # union-find over root ids

    def find(root):
        while label[root] != root:
            label[root] = label[label[root]]
            root = label[root]
        return root

    for first, size, _ in tracer._segments:
        if not size:  # an empty output (a block's unused cache): no channels
            continue
        segment_roots = np.unique(roots[first : first + size]).tolist()
        base = find(segment_roots[0])
        for root in segment_roots[1:]:
            other = find(root)
            if other != base:
                base, other = min(base, other), max(base, other)
                label[other] = base
    label = np.array([find(channel) for channel in range(count)], dtype=np.int64)
    group_of = label[roots]  # channel id -> group key
    # A group's channels are its distinct roots, numbered in order of creation.
    class_roots = np.unique(roots)
    class_roots = class_roots[np.lexsort((class_roots, label[class_roots]))]
    group_keys, starts, sizes = np.unique(label[class_roots], return_index=True, return_counts=True)
    channel_of = np.zeros(count, dtype=np.int64)  # root id -> channel index in its group
    channel_of[class_roots] = np.arange(len(class_roots)) - np.repeat(starts, sizes)
    segment_starts = np.array([first for first, _, _ in tracer._segments])
    names = {}
    for key in group_keys.tolist():
        name = tracer._segments[np.searchsorted(segment_starts, key, side="right") - 1][2]
        names[key] = name if name not in names.values() else f"{name}:{key}"
    reasons = {}
    for channel, reason in tracer._pins.items():
        reasons.setdefault(int(group_of[channel]), reason)

    members = {key: [] for key in names}
    for (layer_name, _, axis), (role, channels, path) in tracer._uses.items():
        channel_groups = group_of[channels]
        for key in np.unique(channel_groups).tolist():
            positions = np.flatnonzero(channel_groups == key)
            group_channels = channel_of[roots[channels[positions]]]
            members[key].append(
                Member(layer_name, role, ((path, axis),), tuple(positions.tolist()), tuple(group_channels.tolist()))
            )
    members = {key: _merge_members(group_members) for key, group_members in members.items()}
    squeeze_excite = _squeeze_excite_links(members, names, set(group_of[sorted(tracer._gates)].tolist()))
    normalized_by, heads_of = {}, {}
    for channel, layer_names in tracer._normalized.items():
        found = normalized_by.setdefault(int(group_of[channel]), [])
        found.extend(name for name in layer_names if name not in found)
    for channel, layer_name in tracer._heads.items():
        heads_of.setdefault(int(group_of[channel]), layer_name)
    groups = []
    for key, size in zip(group_keys.tolist(), sizes.tolist()):
        name = names[key]
        normalizers = tuple(normalized_by.get(key, ()))
        reason = reasons.get(key)
        if reason is None and normalizers and not hidden:
            listed = ", ".join(f"'{layer}'" for layer in normalizers[:3])
            more = f" and {len(normalizers) - 3} more" if len(normalizers) > 3 else ""
            verb = "normalises" if len(normalizers) == 1 else "normalise"
            reason = (
                f"{listed}{more} {verb} over its channels, so removing any changes the "
                "statistics (a transformer's hidden width: prune it with targets='hidden')"
            )
        groups.append(
            ChannelGroup(
                name=name,
                size=size,
                prunable=reason is None,
                reason=f"Group '{name}' is not prunable: {reason}." if reason is not None else "",
                members=tuple(members[key]),
                squeeze_excite_of=squeeze_excite.get(key),
                normalized_by=normalizers,
                heads_of=heads_of.get(key),
            )
        )
    roots_by_group = {
        names[key]: class_roots[start : start + size] for key, start, size in zip(group_keys, starts, sizes)
    }
    return ChannelGraph(groups, _Trace(roots, roots_by_group, tracer), tracer.inferred)


def _merge_members(members):
    """Folds members of one layer and role with equal positions into one."""
    merged = {}
    for member in members:
        key = (member.layer_name, member.role, member.positions, member.channels)
        if key in merged:
            previous = merged[key]
            merged[key] = dataclasses.replace(previous, weights=previous.weights + member.weights)
        else:
            merged[key] = member
    return list(merged.values())


def _squeeze_excite_links(members, names, gated):
    """Maps each squeeze-excite bottleneck group key to the name of the group it gates.

    A bottleneck S reads only channels of one group E (its producers'
    inputs) and its consumers write only channels of E, which E multiplies
    with itself (the gate).
    """
    groups_by_layer = {}  # (layer name, role) -> group keys
    for key, group_members in members.items():
        for member in group_members:
            groups_by_layer.setdefault((member.layer_name, member.role), set()).add(key)
    links = {}
    for key, group_members in members.items():
        read, written = set(), set()
        for member in group_members:
            if member.role == "output":
                read |= groups_by_layer.get((member.layer_name, "input"), set())
            elif member.role == "input":
                written |= groups_by_layer.get((member.layer_name, "output"), set())
        if len(read) == 1 and read == written and read <= gated:
            links[key] = names[next(iter(read))]
    return links


@dataclasses.dataclass
class _Trace:
    """What surgery needs besides the groups (private)."""

    roots: np.ndarray  # channel id -> root id
    roots_by_group: dict  # group name -> root id of each group channel
    tracer: Tracer
