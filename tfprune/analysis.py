"""Parameters, multiply-accumulates and kernel sparsity of a model, as data.

`analyze(model)` reads a built Sequential or functional model's graph (no
forward pass) and returns an `Analysis`: one `LayerRecord` per layer or graph
operation, and totals. The MAC formula of a layer is looked up in a registry
keyed by layer class; the lookup walks the class's MRO, so subclasses of
`Conv2D`, `Dense`, ... (tfprune's STR layers, user layers) are counted by
their base class. Other modules add formulas with `register_macs`. This module
reads the graph; the formulas live in `tfprune._macs` and the records in
`tfprune._analysis_report`.

Conventions, the same as the MobileNet, ResNet and Keras application papers
and tables: one MAC is one multiply-accumulate of a convolution or dense
kernel, counted for one input example; FLOPs are 2 x MACs. Bias additions,
normalization, activations, pooling, elementwise operations (`Add`,
`Multiply`, `x * 0.5`, ...), reshapes and embedding lookups are excluded from
MACs (they count 0). Products of two activations are counted: the scores and
weighted sums of attention (`MultiHeadAttention`, `keras.layers.Attention`,
`keras.ops.dot_product_attention`) and `keras.ops.matmul`/`einsum`/`dot`.

Sequence models read token ids of any length (`keras.Input((None,), "int32")`),
so their graph does not say how many tokens a Dense layer or an attention
runs over. `analyze(model, sequence_length=n)` runs the graph's shapes again
(`compute_output_spec`, no forward pass) with every unknown input axis set to
`n`; by default `n` is the model's `max_sequence_length` (keras-hub text
backbones and the task models around them) or the length of its keras-hub
`PositionEmbedding` table. Layers whose MACs still cannot be counted are
listed in `Analysis.uncounted_layers`, never counted as 0.
"""

import math

import keras
import numpy as np

from tfprune._analysis_report import Analysis, LayerRecord
from tfprune._keras import hub
from tfprune._keras.functional import call_nodes, model_nodes
from tfprune._macs import node_macs, register_macs
from tfprune._utils import functional_view, is_integer, require_graph_model

__all__ = ["Analysis", "LayerRecord", "analyze", "register_macs"]


def analyze(model, sequence_length=None):
    """Counts params, MACs and kernel sparsity per layer of a model.

    The graph's recorded shapes are used; the model is not run. One record per
    layer or graph operation (`x * 0.5` gives a record with 0 params), in
    graph order; a layer called several times gets one record whose MACs sum
    all its calls. A nested Sequential/functional model is expanded into the
    records of its layers, named `"nested_name/layer_name"`. For layers that
    implement `stripped_layer()` (tfprune's training-time layers), params, MACs
    and kernel sparsity are measured on the effective, stripped layer (what
    ships): an STR threshold or a pruning mask is not counted as a parameter.

    MACs are the multiply-accumulates of convolution (Conv1D/2D/3D with
    `groups`, transposed, depthwise with `depth_multiplier`, separable) and
    Dense/EinsumDense kernels (Dense on N-D inputs repeats over leading axes),
    of `MultiHeadAttention` (the query/key/value and output projections,
    `Q K^T` and the weighted sum over values, for the sequence lengths of the
    call), of the products of two activations (`keras.layers.Attention`,
    `keras.layers.Dot`, `keras.ops.matmul`, `einsum`, `dot_product_attention`)
    and of a `ReversibleEmbedding` called with `reverse=True` (hidden vectors
    times the vocabulary table), for one example; `TimeDistributed` multiplies
    its layer's MACs by the steps. Bias additions, normalization, activations,
    pooling, elementwise operations, reshapes and embedding lookups are
    excluded (0 MACs), as in the papers' and Keras's reference figures.

    Text models take token ids of any length (`keras.Input((None,))`): their
    MACs are counted at `sequence_length` tokens, every unknown non-batch axis
    of the model's inputs set to that length and the graph's shapes worked out
    again (`Analysis.sequence_length` says which length was used). Attention
    grows with the square of the length, so MACs per token differ between
    lengths. Layers with weights (or operations that multiply activations) but
    no formula (see `register_macs`), or over an axis whose size stays unknown,
    get `macs=None`, are listed in `Analysis.uncounted_layers`, and make
    `Analysis.complete` False (the totals are then lower bounds; printing the
    analysis says so). A model with composite layers (subclassed blocks made
    of other layers, as keras-hub's `TransformerEncoder`) is analysed through
    `tfprune.graph.flatten`, so the layers inside the blocks are counted, under
    their inlined names.

    Args:
        model: A built Sequential or functional Keras model.
        sequence_length: Int or None. The length given to every unknown
            non-batch axis of the model's inputs (the token axis of a text
            model). Defaults to None: the model's `max_sequence_length` (or its
            `backbone`'s: keras-hub text backbones and task models), else the
            number of rows of its keras-hub `PositionEmbedding` tables (which
            a pruned keras-hub model keeps), else no length: layers over the
            unknown axis are not counted.

    Returns:
        An `Analysis`.

    Raises:
        TypeError: If `model` is not a Keras model or is a subclassed model.
        ValueError: If the model is not built; if `sequence_length` is not a
            positive integer, is longer than the model's `max_sequence_length`
            or position table, or is given for a model whose inputs have no
            unknown axis; or if the graph cannot run at that length.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((28, 28, 1))
    >>> x = keras.layers.Conv2D(8, 3)(inputs)
    >>> outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    >>> analysis = tfprune.analyze(keras.Model(inputs, outputs))
    >>> analysis.macs == 26 * 26 * 3 * 3 * 1 * 8 + 26 * 26 * 8 * 10
    True
    >>> print(analysis)  # doctest: +SKIP

    Token ids of any length, counted at 16 tokens:

    >>> tokens = keras.Input((None,), dtype="int32")
    >>> x = keras.layers.Embedding(100, 8)(tokens)
    >>> text = keras.Model(tokens, keras.layers.Dense(4)(x))
    >>> tfprune.analyze(text).complete
    False
    >>> analysis = tfprune.analyze(text, sequence_length=16)
    >>> analysis.macs == 16 * 8 * 4, analysis.sequence_length, analysis.complete
    (True, 16, True)
    """
    require_graph_model(model, "tfprune.analyze")
    if sequence_length is not None and not (is_integer(sequence_length) and sequence_length > 0):
        raise ValueError(
            "`tfprune.analyze` expects `sequence_length` to be a positive integer (the number of "
            f"tokens to count the MACs at) or None. Received: sequence_length={sequence_length!r}"
        )
    from tfprune import graph  # noqa: PLC0415 - graph imports the layer handlers

    given = model
    if any(graph.is_composite(layer) and layer._layers for layer in _all_layers(model)):
        model = graph.flatten(model)  # count the layers inside composite blocks
    longest = _longest_sequence(given, model)
    if not _has_unknown_axes(model):
        if sequence_length is not None:
            raise ValueError(
                f"`tfprune.analyze` was given sequence_length={sequence_length}, but the inputs of "
                f"model '{given.name}' have no axis of unknown size for it to fix "
                f"({[tuple(tensor.shape) for tensor in functional_view(model).inputs]}). "
                "Leave `sequence_length` out."
            )
    elif sequence_length is None:
        sequence_length = longest
    elif longest is not None and sequence_length > longest:
        raise ValueError(
            f"`tfprune.analyze` cannot count model '{given.name}' at sequence_length="
            f"{sequence_length}: it accepts at most {longest} tokens (its max_sequence_length or "
            "position table). Pass a shorter `sequence_length`."
        )
    shapes = _Shapes(model, sequence_length)
    return Analysis(
        model_name=model.name,
        layers=tuple(_records(model, prefix="", calls=1, shapes=shapes)),
        sequence_length=sequence_length,
    )


def _has_unknown_axes(model):
    return any(None in tuple(tensor.shape)[1:] for tensor in functional_view(model).inputs)


def _longest_sequence(model, flat):
    """The most tokens `model` accepts, or None when it does not say.

    Read from `max_sequence_length` (keras-hub backbones; task models hold
    theirs as `backbone`), else from the keras-hub `PositionEmbedding` tables
    in the graph: a pruned copy keeps those, not the backbone class.
    """
    for owner in (model, getattr(model, "backbone", None)):
        length = getattr(owner, "max_sequence_length", None)
        if is_integer(length) and length > 0:
            return int(length)
    lengths = [
        layer.sequence_length for layer in _all_layers(flat) if _is_position_embedding(layer)
    ]
    return max(lengths) if lengths else None


def _is_position_embedding(layer):
    return any(
        (layer_class.__module__, layer_class.__name__)
        == (hub.layer_module("modeling.position_embedding"), "PositionEmbedding")
        for layer_class in type(layer).__mro__
    )


class _Shapes:
    """The shapes of a graph model's tensors, with its inputs' unknown axes `length` long.

    Without a length, every tensor keeps the shape the graph recorded. With one,
    the graph's operations are run on `KerasTensor`s (`compute_output_spec`:
    nothing is computed, no call node is added to the user's layers) from inputs
    whose unknown non-batch axes are `length` long, nested graph models included.
    """

    def __init__(self, model, length=None):
        self._specs = {}
        if length is None:
            return
        graph = functional_view(model)
        inputs = [
            keras.KerasTensor(
                (tensor.shape[0], *(length if size is None else size for size in tensor.shape[1:])),
                dtype=tensor.dtype,
            )
            for tensor in graph.inputs
        ]
        self._run(graph, inputs, length)

    def _run(self, graph, inputs, length):
        for tensor, spec in zip(graph.inputs, inputs):
            self._specs[id(tensor)] = spec
        for node in model_nodes(graph):  # the order Keras runs them: inputs first
            if node.is_input or not node.operation:
                continue
            if any(id(tensor) not in self._specs for tensor in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(self._specs)
            operation = node.operation
            try:
                if isinstance(operation, keras.Model) and _is_graph_model(operation):
                    inner = functional_view(operation)
                    outputs = self._run(inner, keras.tree.flatten(args[0]), length)
                else:
                    outputs = operation.compute_output_spec(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - said in one sentence below
                raise ValueError(
                    f"`tfprune.analyze` could not work out the shapes of '{operation.name}' "
                    f"({type(operation).__name__}) at sequence_length={length}: {error} "
                    "Pass a `sequence_length` the model accepts."
                ) from error
            for tensor, spec in zip(node.outputs, keras.tree.flatten(outputs)):
                self._specs[id(tensor)] = spec
        return [self._specs.get(id(tensor), tensor) for tensor in graph.outputs]

    def resolve(self, value):
        """The `KerasTensor` standing for `value` at the chosen length (`value` itself otherwise)."""
        if isinstance(value, keras.KerasTensor):
            return self._specs.get(id(value), value)
        return value

    def shape(self, tensor):
        return tuple(self.resolve(tensor).shape)


def _all_layers(model):
    for layer in functional_view(model).layers:
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            yield from _all_layers(layer)
        else:
            yield layer


def _records(model, prefix, calls, shapes):
    """Yields the records of a graph model; `calls` multiplies the MACs."""
    graph = functional_view(model)
    graph_nodes = {id(node) for node in model_nodes(graph)}
    for operation in graph.operations:
        if isinstance(operation, keras.layers.InputLayer):
            if not prefix:  # a nested model's inputs repeat the outer tensors
                yield _record(operation, prefix, [], 0, shapes)
            continue
        nodes = [node for node in call_nodes(operation) if id(node) in graph_nodes]
        if isinstance(operation, keras.Model) and _is_graph_model(operation):
            yield from _records(operation, f"{prefix}{operation.name}/", calls * len(nodes), shapes)
            continue
        yield _record(operation, prefix, nodes, calls, shapes)


def _is_graph_model(model):
    try:
        require_graph_model(model, "tfprune.analyze")
    except (TypeError, ValueError):
        return False
    return True


def _record(operation, prefix, nodes, calls, shapes):
    if nodes:
        output_shapes = [shapes.shape(tensor) for tensor in nodes[0].output_tensors]
    else:  # an InputLayer
        output_shapes = [shapes.shape(operation.output)]
    effective = operation.stripped_layer() if hasattr(operation, "stripped_layer") else operation
    kernels = [
        # `.numpy()`: converting a TensorFlow variable with NumPy 2 raises a DeprecationWarning.
        weight.numpy()
        for weight in getattr(effective, "weights", [])
        if weight.name.endswith("kernel")
    ]
    per_call = [node_macs(effective, node, shapes) for node in nodes]
    return LayerRecord(
        name=prefix + operation.name,
        type=type(operation).__name__,
        output_shape=output_shapes[0] if len(output_shapes) == 1 else output_shapes,
        params=_count(getattr(effective, "weights", [])),
        trainable_params=_count(getattr(effective, "trainable_weights", [])),
        macs=None if None in per_call else calls * sum(per_call),
        kernel_params=sum(kernel.size for kernel in kernels),
        nonzero_kernel_params=sum(int(np.count_nonzero(kernel)) for kernel in kernels),
    )


def _count(weights):
    return sum(math.prod(weight.shape) for weight in weights)

