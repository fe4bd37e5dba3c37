"""Feature maps of channel groups, read from the functional graph (not public API).

Data-driven criteria (HRank, DropNet's mean activation, reconstruction) look
at what a channel computes on real inputs. This module turns user data into
NumPy batches (`input_batches`), finds the tensors that carry a group's
channels (`group_features`: each producer's output followed through its
BatchNormalization and activation; `consumer_inputs`: what a consumer layer
reads) and builds one feature-extraction model,
`keras.Model(model.inputs, [those tensors])`, which shares the model's layers
and never changes its weights. Channels that only exist inside a composite
layer (the heads of an attention layer) or only as a product of several
producers (a gated MLP) are read where their consumer projection takes them
in (`LayerInput`). Models with several inputs (a keras-hub causal LM's
`{"token_ids", "padding_mask"}`) take batches of dicts; the positions a
`padding_mask` input marks as padding are left out of the statistics.
"""

import itertools
import sys

import keras
import numpy as np

from tfprune import _layer_inputs
from tfprune._keras.functional import model_nodes, producing_node
from tfprune._keras.ops import operation_class
from tfprune._utils import check_verbose, functional_view

# Layers a producer's output passes through before it is "the feature map"
# (HRank ranks, DropNet averages the post-activation maps).
_POST_ACTIVATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
)
# What joins a gated MLP's two producers, and the casts between (keras-hub's Llama casts to float32).
_PRODUCTS = (
    keras.layers.Multiply,
    operation_class(keras.ops.multiply, keras.KerasTensor((1,)), keras.KerasTensor((1,))),
)
_CASTS = (operation_class(keras.ops.cast, keras.KerasTensor((1,)), "float32"),)


def _readers(functional):
    """`{id(tensor): [node, ...]}`: the nodes of the model that read each tensor."""
    readers = {}
    for node in model_nodes(functional):
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)
    return readers


def call_node(functional, layer_name):
    """The node (call) of layer `layer_name` in the functional model; raises ValueError if none."""
    # Outputs first: a layer called twice (a tied embedding) is found at its call
    # nearest the outputs.
    for node in reversed(model_nodes(functional)):
        if node.operation.name == layer_name and not node.is_input:
            return node
    raise ValueError(f"Layer '{layer_name}' is not called in model '{functional.name}'.")


def post_activation_tensor(functional, layer_name, readers=None):
    """The producer's output after the BN/activation layers that are its only reader."""
    readers = _readers(functional) if readers is None else readers
    tensor = call_node(functional, layer_name).outputs[0]
    while len(readers.get(id(tensor), ())) == 1:
        node = readers[id(tensor)][0]
        if not isinstance(node.operation, _POST_ACTIVATION_LAYERS):
            break
        tensor = node.outputs[0]
    return tensor


def _feature_size(tensor):
    """Sort key: spatial rank, then number of known positions per example."""
    spatial = tensor.shape[1:-1]
    return len(spatial), int(np.prod([size or 1 for size in spatial]))


def _reads_a_product(functional, layer_name):
    """Whether a layer's input is a product (a gated MLP's `act(gate) * up`), through dtype casts."""
    node = producing_node(call_node(functional, layer_name).input_tensors[0])
    while node is not None and isinstance(node.operation, _CASTS):
        node = producing_node(node.input_tensors[0])
    return node is not None and isinstance(node.operation, _PRODUCTS)


def _consumer_inputs(model, group, shared):
    """`[(LayerInput, positions, channels), ...]` for the group's consumer projections, or None.

    `shared` maps a layer's id to its `LayerInput`: one per layer (the key/value
    groups of an attention layer share its output projection).
    """
    entries = []
    for member in group.members:
        if member.role == "input":
            capture = _layer_inputs.projection_input(model, member)
            if capture is None:
                return None
            capture = shared.setdefault(id(capture.layer), capture)
            entries.append((capture, np.asarray(member.positions), np.asarray(member.channels)))
    return entries or None


def group_features(model, graph, consumer_inputs=True):
    """The feature tensors that represent each prunable group's channels.

    Every producer of a group is followed to its post-activation output; the
    producers with the largest feature maps are kept (a squeeze-excite gate
    producer's 1x1 output is a per-channel scale, not a feature map). Each
    entry maps the producer's output positions to group channels. Channels
    without a tensor of their own are read where their consumer projection
    takes them in (a `tfprune._layer_inputs.LayerInput`): the heads of an
    attention layer (per query head; per key/value group with
    `gqa="groups"`, averaged over its query heads) and the units of a gated
    MLP (the product `act(gate) * up` that the down projection reads).

    Args:
        model: The model.
        graph: `tfprune.graph.build(model)`.
        consumer_inputs: Bool. Whether to read those channels at their
            consumer projection; False leaves heads out and reads gated
            units at their producers, as for the other groups.

    Returns:
        Dict `{group_name: [(tensor or LayerInput, positions, channels), ...]}`;
        a head group whose output projection is not a Dense or EinsumDense
        layer is left out.
    """
    functional = functional_view(model)
    readers = _readers(functional)
    features, shared = {}, {}
    for group in graph.groups:
        if not group.prunable:
            continue
        consumers = [member.layer_name for member in group.members if member.role == "input"]
        gated = consumers and all(_reads_a_product(functional, name) for name in consumers)
        if group.heads_of is not None and not consumer_inputs:
            continue
        if consumer_inputs and (group.heads_of is not None or gated):
            entries = _consumer_inputs(model, group, shared)
            if entries is not None:
                features[group.name] = entries
                continue
            if group.heads_of is not None:
                continue  # heads have no tensor of their own: not scored
            # A convolution reading a squeeze-excite product: its producers' maps, as before.
        entries, seen = [], set()
        for member in group.members:
            if member.role != "output" or member.layer_name in seen:
                continue
            seen.add(member.layer_name)
            tensor = post_activation_tensor(functional, member.layer_name, readers)
            entries.append((tensor, np.asarray(member.positions), np.asarray(member.channels)))
        largest = max(_feature_size(tensor) for tensor, _, _ in entries)
        features[group.name] = [entry for entry in entries if _feature_size(entry[0]) == largest]
    return features


def feature_model(model, tensors):
    """`keras.Model(model.inputs, tensors)`: shares the model's layers and weights."""
    functional = functional_view(model)
    inputs = functional.inputs[0] if len(functional.inputs) == 1 else functional.inputs
    return keras.Model(inputs, list(tensors))


def run(extractor, batch):
    """Runs a feature model on one batch in inference mode; returns a list of arrays."""
    # A model with one output returns a tensor, not a list: flatten both alike.
    outputs = keras.tree.flatten(extractor(batch, training=False))
    return [np.asarray(keras.ops.convert_to_numpy(output)) for output in outputs]


def _first_input(element):
    # Datasets and arrays of `(x, y)` or `(x, y, sample_weight)` carry the inputs first.
    if isinstance(element, (tuple, list)) and not isinstance(element, np.ndarray):
        return element[0]
    return element


def _is_tf_dataset(data):
    return "tensorflow" in sys.modules and isinstance(data, sys.modules["tensorflow"].data.Dataset)


def _as_arrays(inputs):
    """An input batch as NumPy: one array, or a dict of arrays for a model with named inputs."""
    if isinstance(inputs, dict):
        return {name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in inputs.items()}
    return np.asarray(keras.ops.convert_to_numpy(inputs))


def _as_batch(element):
    return _as_arrays(_first_input(element))


def batch_length(batch):
    """The number of examples in an input batch (an array or a dict of arrays)."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)


def _rows(inputs, start, stop):
    if isinstance(inputs, dict):
        return {name: value[start:stop] for name, value in inputs.items()}
    return inputs[start:stop]


def padding_mask(batch):
    """The `(batch, sequence)` boolean mask of a batch's `padding_mask` input (keras-hub's name), or None."""
    if isinstance(batch, dict) and np.ndim(batch.get("padding_mask")) == 2:
        return np.asarray(batch["padding_mask"]).astype(bool)
    return None


def _check_batching(num_batches, batch_size, caller):
    for argument, value in (("num_batches", num_batches), ("batch_size", batch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(
                f"{caller}: `{argument}` must be an int >= 1. Received: {argument}={value!r}"
            )


def _elements(data, num_batches, batch_size, caller):
    """The batches of `data` as `model.fit` would read them: each `x` or `(x, y, ...)`."""
    if _is_tf_dataset(data):  # a tf.data.Dataset exists only if TensorFlow is imported
        dataset = data if num_batches is None else data.take(num_batches)
        return list(dataset.as_numpy_iterator())
    if isinstance(data, keras.utils.PyDataset):
        count = len(data) if num_batches is None else min(num_batches, len(data))
        return [data[index] for index in range(count)]
    if hasattr(data, "__next__"):  # generators and other iterators
        return list(itertools.islice(data, num_batches))
    if isinstance(data, (tuple, list)) and not isinstance(data, np.ndarray):
        parts = list(data)
    elif isinstance(data, (np.ndarray, dict)) or hasattr(data, "__array__"):
        parts = None
    else:
        raise TypeError(
            f"{caller}: `data` must be an array (or a dict of arrays) of inputs, a tf.data.Dataset, a "
            f"keras.utils.PyDataset or a generator of batches. Received: data of type {type(data).__name__}"
        )
    inputs = _as_arrays(data if parts is None else parts[0])  # converted once, sliced per batch
    length = batch_length(inputs)
    stop = length if num_batches is None else min(length, num_batches * batch_size)
    starts = range(0, stop, batch_size)
    if parts is None:
        return [_rows(inputs, start, start + batch_size) for start in starts]
    # Labels and sample weights are sliced alongside when they are arrays of the same
    # length; anything else (None, a dict of labels) is passed through whole.
    others = [_sliceable(part, length) for part in parts[1:]]
    return [
        (_rows(inputs, start, start + batch_size),)
        + tuple(part if not sliceable else part[start : start + batch_size] for part, sliceable in others)
        for start in starts
    ]


def _sliceable(part, length):
    """`(part, True)` with `part` as an array when it is one of `length` rows, else `(part, False)`."""
    if part is None or isinstance(part, dict) or not hasattr(part, "__len__") and not hasattr(part, "__array__"):
        return part, False
    array = np.asarray(part)
    return (array, True) if array.ndim and len(array) == length else (part, False)


def _input_dtype(tensor):
    # Token ids and masks keep their integer type; everything else is fed as float32.
    dtype = str(tensor.dtype)
    return dtype if "int" in dtype or dtype == "bool" else "float32"


def _checked_array(model, tensor, array, caller, name=None):
    expected = tuple(tensor.shape[1:])
    received = array.shape[1:]
    if len(received) != len(expected) or any(
        want is not None and want != got for want, got in zip(expected, received)
    ):
        which = f"input '{name}'" if name is not None else "inputs"
        raise ValueError(
            f"{caller}: model '{model.name}' expects {which} of shape {(None,) + expected}, "
            f"but `data` has a batch of shape {array.shape}; pass batched inputs of the "
            "model's input shape (a tf.data.Dataset needs `.batch(n)`)."
        )
    return array.astype(_input_dtype(tensor))


def _checked_batch(model, functional, batch, caller):
    inputs = {tensor.name: tensor for tensor in functional.inputs}
    if isinstance(batch, dict):
        if set(batch) != set(inputs):
            raise ValueError(
                f"{caller}: model '{model.name}' takes the inputs {sorted(inputs)}, but a batch of `data` "
                f"has the keys {sorted(batch)}; pass dicts with exactly the model's input names (a "
                'keras-hub CausalLM takes {"token_ids", "padding_mask"}, each of shape (batch, sequence)).'
            )
        if len(inputs) == 1:  # a single-input model is called with the array itself
            ((name, tensor),) = inputs.items()
            return _checked_array(model, tensor, batch[name], caller, name)
        lengths = {len(value) for value in batch.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"{caller}: the inputs of a batch of `data` for model '{model.name}' have different "
                f"numbers of examples {sorted(lengths)}; pass inputs of one batch size."
            )
        return {name: _checked_array(model, inputs[name], np.asarray(batch[name]), caller, name) for name in inputs}
    if len(inputs) != 1:
        raise ValueError(
            f"{caller}: model '{model.name}' takes {len(inputs)} inputs {sorted(inputs)}, so `data` must "
            "give each batch as a dict with those keys (e.g. {\"token_ids\": ..., \"padding_mask\": ...} for a "
            f"keras-hub CausalLM); received a batch of type {type(batch).__name__}."
        )
    return _checked_array(model, functional.inputs[0], batch, caller)


def _checked_inputs(model, functional, batches, caller):
    if not batches or sum(batch_length(batch) for batch in batches) == 0:
        raise ValueError(f"{caller}: `data` is empty; pass at least one batch of inputs.")
    return [_checked_batch(model, functional, batch, caller) for batch in batches]


def _needs_data(model, data, caller):
    if data is None:
        raise ValueError(
            f"{caller} needs data: pass `data=` an array of inputs (e.g. `data=x_train`; a dict "
            "{input_name: array} for a model with several inputs, such as a keras-hub CausalLM's "
            '{"token_ids", "padding_mask"}) or batches (a tf.data.Dataset, keras.utils.PyDataset or '
            "generator). Received: data=None"
        )
    return functional_view(model)


def input_batches(model, data, num_batches, batch_size, caller):
    """Turns user data into at most `num_batches` NumPy input batches.

    Args:
        model: The model the inputs are for.
        data: What `model.fit` accepts: an array of inputs or an `(x, y)`
            tuple of arrays (split into `batch_size` batches), or batches
            of `x` or `(x, y, ...)` from a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a Python generator/iterator (read
            until it ends, like `fit` without `steps_per_epoch`, unless
            `num_batches` is given). `x` may be a dict `{input_name: array}`
            (a model with several inputs takes only that, with exactly its
            input names, such as a keras-hub CausalLM's `token_ids` and
            `padding_mask`).
        num_batches: Int or None (all). How many batches to use.
        batch_size: Int. Batch size used to split arrays.
        caller: String naming the criterion or pruner, for the error messages.

    Returns:
        List of batches: NumPy arrays (float32, or the input's integer
        dtype), or for a model with several inputs dicts of them.

    Raises:
        ValueError: If `data` is None or empty, or its inputs do not have
            the model's input shapes or names.
        TypeError: If `data` is not a dataset or an array.
    """
    functional = _needs_data(model, data, caller)
    _check_batching(num_batches, batch_size, caller)
    batches = [_as_batch(element) for element in _elements(data, num_batches, batch_size, caller)]
    return _checked_inputs(model, functional, batches, caller)


def labelled_batches(model, data, num_batches, batch_size, caller, unlabelled=None):
    """Turns user data with labels into at most `num_batches` `(x, y, sample_weight)` NumPy batches.

    Args:
        model: The model the inputs are for.
        data: An `(x, y)` tuple of arrays, or batches of `(x, y)` or
            `(x, y, sample_weight)` from a `tf.data.Dataset`,
            `keras.utils.PyDataset` or generator; `x` is an array, or a dict
            of arrays for a model with several inputs.
        num_batches: Int or None (all). How many batches to use.
        batch_size: Int. Batch size used to split arrays.
        caller: String for the error messages.
        unlabelled: Optional callable `x -> (y, sample_weight)` for batches
            without labels (a causal LM's next tokens); None refuses them.

    Returns:
        List of `(x, y, sample_weight)`: inputs as `input_batches` gives them,
        labels as given, and the sample weights as an array or None.

    Raises:
        ValueError: As `input_batches`, and if a batch carries no labels
            (and `unlabelled` is None) or several.
        TypeError: If `data` is not a dataset or an array.
    """
    functional = _needs_data(model, data, caller)
    _check_batching(num_batches, batch_size, caller)
    elements = _elements(data, num_batches, batch_size, caller)
    inputs = _checked_inputs(model, functional, [_as_batch(element) for element in elements], caller)
    batches = []
    for element, x in zip(elements, inputs):
        if not isinstance(element, (tuple, list)) or len(element) < 2 or element[1] is None:
            if unlabelled is None:
                raise ValueError(
                    f"{caller} needs labels: pass `data=(x, y)` or batches of `(x, y)`; received "
                    "inputs without labels."
                )
            batches.append((x, *unlabelled(x)))
            continue
        if isinstance(element[1], (dict, list, tuple)):
            raise ValueError(
                f"{caller} supports single-output models: pass `data=(x, y)` with `y` one array; "
                f"received labels of type {type(element[1]).__name__}."
            )
        weight = element[2] if len(element) > 2 else None
        weight = None if weight is None else np.asarray(keras.ops.convert_to_numpy(weight), "float32")
        batches.append((x, np.asarray(keras.ops.convert_to_numpy(element[1])), weight))
    return batches


def _position_weights(output, mask):
    """`(batch, positions)` weights of a feature array's positions: 0 at padding, 1 elsewhere; None if unmasked."""
    if mask is None or output.ndim < 3 or output.shape[:2] != mask.shape:
        return None  # not a per-token tensor of this batch
    expanded = mask.reshape(mask.shape + (1,) * (output.ndim - 3))
    return np.broadcast_to(expanded, output.shape[:-1]).reshape(len(output), -1).astype("float64")


def _weighted_sums(statistic, output, mask):
    """`(sum over examples of weight * statistic, sum of weights)`, or None if `statistic` skips `output`."""
    weights = _position_weights(output, mask)
    values = statistic(output, weights)
    if values is None:
        return None
    # An example counts by its unpadded positions: the score is a mean over tokens.
    example_weights = np.ones(len(output)) if weights is None else weights.sum(axis=1)
    return (np.asarray(values, "float64") * example_weights[:, None]).sum(axis=0), example_weights.sum()


def group_statistics(
    model, graph, data, statistic, num_batches, batch_size, caller, verbose=0, consumer_inputs=True
):
    """Averages a per-example, per-channel statistic of each group's feature maps.

    Positions that a `padding_mask` input (keras-hub's name) marks as padding
    are left out: a `(batch, sequence, ..., channels)` feature array is
    weighted by the mask, and each example counts by its unpadded positions,
    so the score is a mean over the tokens of the data.

    Args:
        model: The model.
        graph: `tfprune.graph.build(model)`.
        data: See `input_batches`.
        statistic: Callable `(features (batch, ..., channels), weights) -> (batch, channels)`,
            or None for a tensor it cannot handle (the group is not scored).
            `weights` is None, or `(batch, positions)` weights of the
            flattened positions (0 at padding) to average over.
        num_batches: Int or None. Number of batches.
        batch_size: Int. Batch size when `data` is an array.
        caller: String for messages.
        verbose: Int. 1 shows a progress bar over the batches.
        consumer_inputs: Bool. See `group_features`.

    Returns:
        Dict `{group_name: scores}`: per group channel, the mean over examples
        and over the group's feature producers.
    """
    batches = input_batches(model, data, num_batches, batch_size, caller)
    features = group_features(model, graph, consumer_inputs)
    entries = [(name, entry) for name, group_entries in features.items() for entry in group_entries]
    tensors = [source for _, (source, _, _) in entries if not isinstance(source, _layer_inputs.LayerInput)]
    captures = {id(source): source for _, (source, _, _) in entries if isinstance(source, _layer_inputs.LayerInput)}
    # The model's outputs make the extractor call every layer, the recorded projections too.
    functional = functional_view(model)
    extractor = feature_model(model, tensors + (list(functional.outputs) if captures else []))
    captures = list(captures.values())
    totals, weights = [None] * len(entries), [0.0] * len(entries)
    progress = keras.utils.Progbar(len(batches), verbose=check_verbose(verbose, caller), unit_name="batch")
    for batch in batches:
        for capture in captures:
            capture.values.clear()
        with _layer_inputs.recording(captures):
            outputs = iter(run(extractor, batch))
        mask = padding_mask(batch)
        for index, (_, (source, _, _)) in enumerate(entries):
            arrays = source.values if isinstance(source, _layer_inputs.LayerInput) else [next(outputs)]
            for output in arrays:
                sums = _weighted_sums(statistic, output, mask)
                if sums is not None:
                    totals[index] = (0.0 if totals[index] is None else totals[index]) + sums[0]
                    weights[index] += sums[1]
        progress.add(1)
    scores, counts = {}, {}
    for (name, (_, positions, channels)), total, weight in zip(entries, totals, weights):
        if total is None:
            continue
        size = graph[name].size
        scores.setdefault(name, np.zeros(size))
        counts.setdefault(name, np.zeros(size))
        np.add.at(scores[name], channels, np.asarray(total, "float64")[positions] / max(weight, 1e-12))
        np.add.at(counts[name], channels, 1)
    return {name: scores[name] / np.maximum(counts[name], 1) for name in scores}
