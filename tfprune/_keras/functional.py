"""Reading and running Keras functional graphs: nodes, producers, the walk.

Keras records every call of a layer or operation on symbolic tensors as a
*node* (``operation._inbound_nodes``) and tags each output tensor with the
node that made it (``tensor._keras_history``). Neither has a public accessor;
this module is the only place tfprune reads them.
"""

import collections

import keras
from keras.src.models.functional import Functional

__all__ = [
    "Functional",
    "Producer",
    "call_nodes",
    "forget_calls",
    "has_producer",
    "input_name",
    "inputs_structure",
    "is_functional",
    "model_nodes",
    "producer",
    "producing_node",
    "run_graph",
    "sequential_graph",
    "walk",
]

Producer = collections.namedtuple("Producer", ["operation", "node_index", "tensor_index"])
Producer.__doc__ = "The operation, call (node) index and output index that made a symbolic tensor."


def is_functional(model):
    """Whether `model` is a graph model (what `keras.Model(inputs, outputs)` returns).

    Args:
        model: any object.

    Returns:
        True for functional models (and Sequential's inner graph), False for
        subclassed models and anything else.

    Example:
        >>> inputs = keras.Input((2,))
        >>> is_functional(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
        True
    """
    return isinstance(model, Functional)


def sequential_graph(model):
    """The functional graph a built `keras.Sequential` keeps, or None when it has none yet.

    Args:
        model: a `keras.Sequential`.

    Returns:
        A functional model with the same layers, or None.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> is_functional(sequential_graph(model))
        True
    """
    return getattr(model, "_functional", None)


def has_producer(value):
    """Whether `value` is a symbolic tensor recorded by a functional call.

    Example:
        >>> has_producer(keras.Input((2,))), has_producer(1.0)
        (True, False)
    """
    return hasattr(value, "_keras_history")


def producer(tensor):
    """The `Producer` (operation, node index, tensor index) of a symbolic tensor.

    Args:
        tensor: a `keras.KerasTensor` made by a layer or operation call.

    Returns:
        A `Producer`, or None when the tensor was not recorded by a call.

    Example:
        >>> inputs = keras.Input((2,))
        >>> producer(keras.layers.Dense(1, name="d")(inputs)).operation.name
        'd'
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return Producer(history.operation, history.node_index, history.tensor_index)


def producing_node(tensor):
    """The node (call) that made a symbolic tensor, or None.

    Example:
        >>> inputs = keras.Input((2,))
        >>> producing_node(keras.layers.Dense(1)(inputs)).input_tensors[0] is inputs
        True
    """
    made_by = producer(tensor)
    if made_by is None:
        return None
    return call_nodes(made_by.operation)[made_by.node_index]


def input_name(tensor):
    """The name of the layer or operation that made `tensor` (an `Input`'s name for model inputs).

    Example:
        >>> input_name(keras.Input((2,), name="ids"))
        'ids'
    """
    return tensor._keras_history.operation.name


def call_nodes(operation):
    """Every recorded call (node) of a layer or operation, in call order, in any graph.

    Example:
        >>> dense = keras.layers.Dense(1)
        >>> _ = dense(keras.Input((2,))); _ = dense(keras.Input((2,)))
        >>> len(call_nodes(dense))
        2
    """
    return list(operation._inbound_nodes)


def forget_calls(layer):
    """Clears the calls recorded on a layer object (a fresh copy must not share its source's).

    Both the calls of the layer and the calls that read its outputs: a
    shallow copy holds its source's lists, which its own calls would grow.

    Example:
        >>> dense = keras.layers.Dense(1)
        >>> _ = dense(keras.Input((2,)))
        >>> forget_calls(dense); call_nodes(dense)
        []
    """
    object.__setattr__(layer, "_inbound_nodes", [])
    object.__setattr__(layer, "_outbound_nodes", [])


def model_nodes(functional):
    """The nodes of one functional model, in the order Keras runs them (inputs first).

    Unlike `call_nodes`, only the calls made inside this model: a layer shared
    with another model has calls there too.

    Example:
        >>> inputs = keras.Input((2,))
        >>> model = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))
        >>> [node.operation.name for node in model_nodes(model) if not node.is_input]
        ['d']
    """
    by_depth = functional._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def walk(outputs, stop=()):
    """The one walk of a Keras graph: the nodes that made `outputs`, each once, in topological order.

    A depth-first post-order from the outputs, visiting a node's inputs in
    argument order, so a reader meets the first branch of an `Add` or
    `Concatenate` first. The walk does not go past a tensor in `stop` (pass a
    model's inputs to stay inside it) nor past a value no call recorded.

    Args:
        outputs: a tensor or nested structure of tensors.
        stop: tensors where the walk ends.

    Returns:
        A list of nodes; every node comes after the nodes that made its inputs.

    Example:
        >>> inputs = keras.Input((2,))
        >>> x = keras.layers.Dense(2, name="a")(inputs)
        >>> y = keras.layers.Add(name="add")([x, keras.layers.Dense(2, name="b")(inputs)])
        >>> [node.operation.name for node in walk(y, stop=[inputs])]
        ['a', 'b', 'add']
    """
    stopped = {id(tensor) for tensor in keras.tree.flatten(stop)}
    ordered, done = [], set()
    stack = [(tensor, False) for tensor in reversed(keras.tree.flatten(outputs))]
    while stack:
        item, expanded = stack.pop()
        if expanded:
            if id(item) not in done:
                done.add(id(item))
                ordered.append(item)
            continue
        if id(item) in stopped:
            continue
        node = producing_node(item)
        if node is None or id(node) in done:
            continue
        stack.append((node, True))
        stack.extend((tensor, False) for tensor in reversed(node.input_tensors))
    return ordered


def run_graph(functional, inputs, operation_fn):
    """Runs a functional graph on `inputs` with each operation replaced by `operation_fn(operation)`.

    Args:
        functional: a functional model.
        inputs: a flat list of values, one per model input, in `functional.inputs` order.
        operation_fn: called with each operation, returns the callable to use in its place.

    Returns:
        The model's outputs, in the structure of `functional.outputs`.

    Example:
        >>> inputs = keras.Input((2,))
        >>> model = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))
        >>> run_graph(model, [numpy.ones((1, 2))], lambda op: (lambda x: x * 0)).shape
        (1, 2)
    """
    return functional._run_through_graph(inputs, operation_fn=operation_fn)


def inputs_structure(functional):
    """The nested structure the functional model was built with (a dict, a list, one tensor)."""
    return functional._inputs_struct


def nested_layers(layer):
    """`layer` and every layer it holds, at any depth (a composite layer's sublayers).

    Args:
        layer: a `keras.layers.Layer` (a model included).

    Returns:
        A list of layers, `layer` first.

    Example:
        >>> inputs = keras.Input((2,))
        >>> inner = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs), name="inner")
        >>> [sub.name for sub in nested_layers(inner) if sub.weights]
        ['inner', 'd']
    """
    return list(layer._flatten_layers(include_self=True))


def copy_input_shape_argument(source, target):
    """Gives `target` the `input_shape=` argument `source` was made with (None if it had none).

    `keras.Sequential` takes its input from its first layer's `input_shape=`
    argument; a layer put in the place of such a layer needs it too.

    Args:
        source: the `keras.layers.Layer` being replaced.
        target: the `keras.layers.Layer` taking its place.

    Returns:
        The argument given to `target` (a shape tuple), or None.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # Keras advises `keras.Input` instead
        ...     dense = keras.layers.Dense(1, input_shape=(3,))
        >>> copy_input_shape_argument(dense, keras.layers.Dense(1))
        (3,)
    """
    value = getattr(source, "_input_shape_arg", None)
    target._input_shape_arg = value
    return value


def lambda_output_shape(layer):
    """The `output_shape` a `keras.layers.Lambda` was made with (a shape, a callable or None).

    A `Lambda` layer's config holds its functions as bytecode, which safe mode
    refuses to load; a copy is made from the objects themselves instead.

    Args:
        layer: a `keras.layers.Lambda`.

    Returns:
        The `output_shape` it was given.

    Example:
        >>> lambda_output_shape(keras.layers.Lambda(lambda x: x, output_shape=(2,)))
        (2,)
    """
    return layer._output_shape
