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

Where the parts live: `graph_groups` (the groups `build` returns and how
traced ids become groups), `graph_inline` (`flatten`), `graph_composites`
(composite layers and the tracing of their `call`),
`graph_composite_checks` (whether a trace may replace its layer),
`graph_traced_ops` and `graph_traced_reshape` (the `keras.ops` functions as
they act during a trace).
"""

import warnings

import keras
import numpy as np

from tfprune import _utils, handlers, handlers_decoders, handlers_inferred
from tfprune._keras import functional as keras_graph
from tfprune._utils import ConfigRepairWarning, SharedLayerWarning
from tfprune.graph_composites import _is_graph_model, is_composite
from tfprune.graph_groups import ChannelGraph, ChannelGroup, Member, _assemble
from tfprune.graph_inline import flatten, needs_flattening
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

# `doctest.testmod(tfprune.graph)` runs the examples of the names defined in the
# graph_* modules and exported here too.
__test__ = {
    "Member": Member,
    "ChannelGroup": ChannelGroup,
    "ChannelGraph": ChannelGraph,
    "flatten": flatten,
    "needs_flattening": needs_flattening,
    "is_composite": is_composite,
}


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
        not_inferred = (
            f" (and its channel rule could not be established numerically: {why})" if why else ""
        )
        super().__init__(
            f"tfprune has no channel handler for operation '{operation.name}' of type "
            f"{kind.__module__}.{kind.__name__}{not_inferred}; register one before pruning, e.g. "
            f"`tfprune.graph.register_handler({key}, tfprune.graph.Freeze('{kind.__name__} is not "
            "pruned'))` to leave the channels around it alone, or "
            f"`tfprune.graph.register_handler({key}, tfprune.graph.Preserve())` if its output "
            "channel c is its input channel c."
        )


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
        raise ValueError(f"`unknown` must be 'raise' or 'freeze'. Received: unknown={unknown!r}")
    if not isinstance(hidden, bool):
        raise TypeError(f"`hidden` must be True or False. Received: hidden={hidden!r}")
    if gqa not in handlers_decoders.GQA_MODES:
        raise ValueError(
            f"`gqa` must be one of {handlers_decoders.GQA_MODES}. Received: gqa={gqa!r}"
        )
    functional = _utils.functional_view(model)
    tracer = Tracer()
    tracer.gqa = gqa
    for node in _ordered_nodes(functional):
        _trace_node(node, tracer, unknown)
    for tensor in functional.outputs:
        tracer.pin(
            tracer.channels(tensor),
            f"its channels are model output '{keras_graph.input_name(tensor)}'",
        )
    return _assemble(functional, tracer, hidden)


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
            hint = (
                ""
                if type(operation).__module__.startswith("keras_hub.")
                else (
                    f"; to prune through it, register a handler, e.g. `tfprune.graph.register_handler({kind}, "
                    "tfprune.graph.Preserve())` if its output channel c is its input channel c"
                )
            )
            warnings.warn(
                f"tfprune cannot see inside layer '{operation.name}' ({kind}){_not_inlined(operation)}, "
                f"so the channels around it are frozen (they cannot shrink){hint}.",
                stacklevel=4,
            )
        handler = handlers.Freeze(
            (
                f"tfprune cannot see inside layer '{operation.name}' ({type(operation).__name__}): it could not "
                f"be inlined{_not_inlined(operation)} and has no handler"
                if _is_foreign_layer(operation)
                else f"operation '{operation.name}' ({type(operation).__name__}) has no handler"
            )
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
        tracer.record(tensor, np.asarray(channels, dtype=np.int64))


def _not_inlined(operation):
    why = getattr(operation, "_tfprune_not_inlined", None)
    return f" ({why})" if why else ""


def _is_foreign_layer(operation):
    """A subclassed layer from outside Keras and tfprune (the user's, keras-hub's ...)."""
    return isinstance(operation, keras.layers.Layer) and not type(operation).__module__.startswith(
        ("keras.", "tfprune.")
    )
