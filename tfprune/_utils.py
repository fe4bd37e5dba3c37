"""Small helpers shared by every tfprune module (not public API)."""

import contextlib
import importlib
import numbers
import os
import tempfile

import keras
import numpy as np


class LazyModule:
    """A module imported on first attribute access.

    tfprune runs on any Keras backend; TensorFlow, tensorflow-datasets and
    LiteRT are imported only by the functions that use them (`tf.data`,
    TFLite conversion, the interpreter), so `import tfprune` under JAX or
    PyTorch loads none of them.

    Example:

    >>> tf = LazyModule("tensorflow")  # nothing imported yet
    """

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


def is_number(value):
    """True for a real number, Python or NumPy (`0.5`, `np.float32(0.5)`, `3`), not a bool.

    Every numeric argument check uses it, so that NumPy scalars are accepted
    wherever Python numbers are.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integer(value):
    """True for an integer, Python or NumPy (`3`, `np.int64(3)`), not a bool (nor `3.0`)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def require_graph_model(model, caller):
    """Checks that `model` is a built Sequential or functional Keras model.

    Args:
        model: The object to check.
        caller: String. Name of the public function asking, used in the error.

    Returns:
        The model, unchanged.

    Raises:
        TypeError: If `model` is not a Keras model, or is a subclassed model.
        ValueError: If the model is not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{caller}` expects a Keras 3 `keras.Model`; received an object of type "
            f"{type(model).__name__}. Build a Sequential or functional keras.Model first."
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not hasattr(model, "_functional"):
            raise ValueError(
                f"`{caller}` needs a built model, but Sequential model '{model.name}' is not "
                "built. Give it a `keras.Input(shape=...)` first or call `model.build(input_shape)`."
            )
        return model
    if not _is_functional(model):
        raise TypeError(
            f"`{caller}` cannot transform subclassed model '{model.name}' "
            f"({type(model).__name__}): its graph is Python code that tfprune cannot read. "
            "Rewrite it as a functional or Sequential model."
        )
    return model


def _is_functional(model):
    # Keras exposes no public name for the class of graph models; `Functional` is
    # what `keras.Model(inputs, outputs)` returns, subclassed models are not one.
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def functional_view(model):
    """Returns the functional graph of a Sequential or functional model.

    A built Sequential model holds an equivalent functional model in
    `model._functional`; functional models are returned as they are.
    """
    if isinstance(model, keras.Sequential):
        return model._functional
    return model


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yields a temporary path beside `path`; moves it into place on success.

    The file at `path` is only replaced once the body finished without error,
    so a crash never leaves a half-written output or destroys an existing file.

    Args:
        path: String or path-like. The final destination.
        overwrite: Bool. If False and `path` exists, raises `FileExistsError`.

    Yields:
        String. A temporary file path in the same directory, with the same suffix.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is False.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(
            f"Output file '{path}' already exists; choose another path or allow overwriting."
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    handle, temporary = tempfile.mkstemp(prefix=".tfprune-", suffix=suffix, dir=directory)
    os.close(handle)
    os.unlink(temporary)  # writers such as model.save() want to create the file themselves
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def clone_graph(model, replace=None):
    """Clones a Sequential/functional model, replacing some layers.

    Every layer for which `replace(layer)` returns None is re-created from its
    config and gets a copy of its weights; otherwise the returned (built) layer
    is used as it is. Input layer names are preserved, so the clone's
    `model.layers` names match the original's. The input model is not touched.

    Args:
        model: A built Sequential or functional Keras model.
        replace: Optional callable `layer -> keras.layers.Layer | None`.

    Returns:
        A new model of the same kind.
    """
    replaced = {}

    def clone_function(layer):
        new_layer = replace(layer) if replace is not None else None
        if new_layer is None:
            new_layer = layer.__class__.from_config(layer.get_config())
        else:
            replaced[layer.name] = True
        return new_layer

    kwargs = {}
    if not isinstance(model, keras.Sequential):
        kwargs["input_tensors"] = keras.tree.map_structure(
            lambda tensor: keras.Input(
                batch_shape=tensor.shape,
                dtype=tensor.dtype,
                sparse=tensor.sparse,
                name=tensor._keras_history.operation.name,
            ),
            model._inputs_struct,
        )
    clone = keras.models.clone_model(model, clone_function=clone_function, **kwargs)
    new_layers = {layer.name: layer for layer in clone.layers}
    for layer in model.layers:
        if layer.name in replaced or not layer.weights:
            continue
        new_layers[layer.name].set_weights(layer.get_weights())
    return clone


def write_summary(tag, value, plugin_name="scalars"):
    """Writes one TensorBoard summary with TensorFlow alone, into the default writer.

    `tf.summary.scalar`/`histogram` live in the TensorBoard package, which
    tfprune does not depend on; `tf.summary.write` with the plugin's metadata
    writes the same event records.

    Args:
        tag: String. Summary name.
        value: Scalar or array (a histogram tensor for `"histograms"`).
        plugin_name: String. TensorBoard plugin, `"scalars"` or `"histograms"`.
    """
    import tensorflow as tf  # TensorBoard summaries are TensorFlow-only

    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    tf.summary.write(tag, value, metadata=metadata)
