"""Feature maps of channel groups, read from the functional graph (not public API).

Data-driven criteria (HRank, DropNet's mean activation, reconstruction) look
at what a channel computes on real inputs. This module turns user data into
NumPy batches (`input_batches`), finds the tensors that carry a group's
channels (`group_features`: each producer's output followed through its
BatchNormalization and activation; `consumer_inputs`: what a consumer layer
reads) and builds one feature-extraction model,
`keras.Model(model.inputs, [those tensors])`, which shares the model's layers
and never changes its weights.
"""

import itertools
import sys

import keras
import numpy as np

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


def _nodes(functional):
    # Keras has no public accessor for a model's call nodes; `_nodes_by_depth`
    # holds exactly the nodes of this model (a shared layer may have others).
    return [node for nodes in functional._nodes_by_depth.values() for node in nodes]


def _readers(functional):
    """`{id(tensor): [node, ...]}`: the nodes of the model that read each tensor."""
    readers = {}
    for node in _nodes(functional):
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)
    return readers


def call_node(functional, layer_name):
    """The node (call) of layer `layer_name` in the functional model; raises ValueError if none."""
    for node in _nodes(functional):
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


def group_features(model, graph):
    """The feature tensors that represent each prunable group's channels.

    Every producer of a group is followed to its post-activation output; the
    producers with the largest feature maps are kept (a squeeze-excite gate
    producer's 1x1 output is a per-channel scale, not a feature map). Each
    entry maps the producer's output positions to group channels.

    Returns:
        Dict `{group_name: [(tensor, positions, channels), ...]}`.
    """
    functional = functional_view(model)
    readers = _readers(functional)
    features = {}
    for group in graph.groups:
        if not group.prunable or group.heads_of is not None:
            continue  # attention heads have no feature tensor of their own
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


def _as_batch(element):
    return np.asarray(keras.ops.convert_to_numpy(_first_input(element)))


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
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        parts = None
    else:
        raise TypeError(
            f"{caller}: `data` must be an array of inputs, a tf.data.Dataset, a "
            f"keras.utils.PyDataset or a generator of batches. Received: data of type {type(data).__name__}"
        )
    inputs = np.asarray(data if parts is None else parts[0])  # converted once, sliced per batch
    stop = len(inputs) if num_batches is None else min(len(inputs), num_batches * batch_size)
    starts = range(0, stop, batch_size)
    if parts is None:
        return [inputs[start : start + batch_size] for start in starts]
    # Labels and sample weights are sliced alongside when they are arrays of the same
    # length; anything else (None, a dict of labels) is passed through whole.
    others = [_sliceable(part, len(inputs)) for part in parts[1:]]
    return [
        (inputs[start : start + batch_size],)
        + tuple(part if not sliceable else part[start : start + batch_size] for part, sliceable in others)
        for start in starts
    ]


def _sliceable(part, length):
    """`(part, True)` with `part` as an array when it is one of `length` rows, else `(part, False)`."""
    if part is None or isinstance(part, dict) or not hasattr(part, "__len__") and not hasattr(part, "__array__"):
        return part, False
    array = np.asarray(part)
    return (array, True) if array.ndim and len(array) == length else (part, False)


def _checked_inputs(model, functional, batches, caller):
    if not batches or sum(len(batch) for batch in batches) == 0:
        raise ValueError(f"{caller}: `data` is empty; pass at least one batch of inputs.")
    expected = tuple(functional.inputs[0].shape[1:])
    for batch in batches:
        received = batch.shape[1:]
        if len(received) != len(expected) or any(
            want is not None and want != got for want, got in zip(expected, received)
        ):
            raise ValueError(
                f"{caller}: model '{model.name}' expects inputs of shape {(None,) + expected}, "
                f"but `data` has a batch of shape {batch.shape}; pass batched inputs of the "
                "model's input shape (a tf.data.Dataset needs `.batch(n)`)."
            )
    return [batch.astype("float32") for batch in batches]


def _single_input(model, data, caller):
    functional = functional_view(model)
    if len(functional.inputs) != 1:
        raise ValueError(
            f"{caller} supports single-input models; model '{model.name}' has "
            f"{len(functional.inputs)} inputs."
        )
    if data is None:
        raise ValueError(
            f"{caller} needs data: pass `data=` an array of inputs (e.g. `data=x_train`) or batches "
            "(a tf.data.Dataset, keras.utils.PyDataset or generator). Received: data=None"
        )
    return functional


def input_batches(model, data, num_batches, batch_size, caller):
    """Turns user data into at most `num_batches` NumPy input batches.

    Args:
        model: The model the inputs are for (single input).
        data: What `model.fit` accepts: an array of inputs or an `(x, y)`
            tuple of arrays (split into `batch_size` batches), or batches
            of `x` or `(x, y, ...)` from a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a Python generator/iterator (read
            until it ends, like `fit` without `steps_per_epoch`, unless
            `num_batches` is given).
        num_batches: Int or None (all). How many batches to use.
        batch_size: Int. Batch size used to split arrays.
        caller: String naming the criterion or pruner, for the error messages.

    Returns:
        List of float32 NumPy arrays.

    Raises:
        ValueError: If `data` is None or empty, its inputs do not have the
            model's input shape, or the model has several inputs.
        TypeError: If `data` is not a dataset or an array.
    """
    functional = _single_input(model, data, caller)
    _check_batching(num_batches, batch_size, caller)
    batches = [_as_batch(element) for element in _elements(data, num_batches, batch_size, caller)]
    return _checked_inputs(model, functional, batches, caller)


def labelled_batches(model, data, num_batches, batch_size, caller):
    """Turns user data with labels into at most `num_batches` `(x, y)` NumPy batches.

    Args:
        model: The model the inputs are for (single input).
        data: An `(x, y)` tuple of arrays, or batches of `(x, y)` or
            `(x, y, sample_weight)` (the weights are not used) from a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator.
        num_batches: Int or None (all). How many batches to use.
        batch_size: Int. Batch size used to split arrays.
        caller: String for the error messages.

    Returns:
        List of `(x, y)` pairs: float32 inputs and labels as given.

    Raises:
        ValueError: As `input_batches`, and if a batch carries no labels.
        TypeError: If `data` is not a dataset or an array.
    """
    functional = _single_input(model, data, caller)
    _check_batching(num_batches, batch_size, caller)
    elements = _elements(data, num_batches, batch_size, caller)
    for element in elements:
        if not isinstance(element, (tuple, list)) or len(element) < 2 or element[1] is None:
            raise ValueError(
                f"{caller} needs labels: pass `data=(x, y)` or batches of `(x, y)`; received "
                "inputs without labels."
            )
        if isinstance(element[1], (dict, list, tuple)):
            raise ValueError(
                f"{caller} supports single-output models: pass `data=(x, y)` with `y` one array; "
                f"received labels of type {type(element[1]).__name__}."
            )
    inputs = _checked_inputs(model, functional, [_as_batch(element) for element in elements], caller)
    labels = [np.asarray(keras.ops.convert_to_numpy(element[1])) for element in elements]
    return list(zip(inputs, labels))


def group_statistics(model, graph, data, statistic, num_batches, batch_size, caller, verbose=0):
    """Averages a per-example, per-channel statistic of each group's feature maps.

    Args:
        model: The model.
        graph: `tfprune.graph.build(model)`.
        data: See `input_batches`.
        statistic: Callable `features (batch, ..., channels) -> (batch, channels)`,
            or None for a tensor it cannot handle (the group is not scored).
        num_batches: Int or None. Number of batches.
        batch_size: Int. Batch size when `data` is an array.
        caller: String for messages.
        verbose: Int. 1 shows a progress bar over the batches.

    Returns:
        Dict `{group_name: scores}`: per group channel, the mean over examples
        and over the group's feature producers.
    """
    batches = input_batches(model, data, num_batches, batch_size, caller)
    features = group_features(model, graph)
    entries = [(name, entry) for name, group_entries in features.items() for entry in group_entries]
    extractor = feature_model(model, [tensor for _, (tensor, _, _) in entries])
    totals = [None] * len(entries)
    progress = keras.utils.Progbar(len(batches), verbose=check_verbose(verbose, caller), unit_name="batch")
    for batch in batches:
        for index, output in enumerate(run(extractor, batch)):
            values = statistic(output)
            if values is not None:
                totals[index] = (0.0 if totals[index] is None else totals[index]) + values.sum(
                    axis=0
                )
        progress.add(1)
    examples = sum(len(batch) for batch in batches)
    scores, counts = {}, {}
    for (name, (_, positions, channels)), total in zip(entries, totals):
        if total is None:
            continue
        size = graph[name].size
        scores.setdefault(name, np.zeros(size))
        counts.setdefault(name, np.zeros(size))
        np.add.at(scores[name], channels, np.asarray(total, "float64")[positions] / examples)
        np.add.at(counts[name], channels, 1)
    return {name: scores[name] / np.maximum(counts[name], 1) for name in scores}
