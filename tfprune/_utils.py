"""Small helpers shared by every tfprune module (not public API)."""

import contextlib
import importlib
import inspect
import numbers
import os
import re
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np

from tfprune._keras import functional


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


def check_verbose(verbose, caller):
    """Resolves a Keras-style `verbose` argument to 0 (silent), 1 (progress) or 2 (one line per step).

    Every long tfprune operation takes `verbose="auto"` by default, as
    `model.fit` does; `"auto"` means 1.

    Args:
        verbose: `"auto"`, a bool, or 0, 1 or 2.
        caller: String. The public function, named in the error.

    Returns:
        Int.

    Raises:
        ValueError: For any other value.
    """
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if is_integer(verbose) and 0 <= verbose <= 2:
        return int(verbose)
    raise ValueError(
        f"`{caller}` takes verbose=0 (silent), 1 (progress), 2 (one line per step) or 'auto' "
        f"(1), as Keras's `fit` does. Received: verbose={verbose!r}"
    )


def is_integer(value):
    """True for an integer, Python or NumPy (`3`, `np.int64(3)`), not a bool (nor `3.0`)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


# Terminal colours (Keras prints its errors in bold) and TensorFlow's
# "{{function_node __wrapped__MatMul_device_/job:...}}" prefix of op errors.
_MESSAGE_NOISE = re.compile(r"\x1b\[[0-9;]*m|\{\{function_node [^}]*\}\}\s*")


def first_line(error, limit=300):
    """One line naming an exception, to quote inside another message.

    The line is `Type: first line of the message`, without terminal colours
    or TensorFlow's `{{function_node ...}}` prefix; Keras's "Exception
    encountered when calling X.call()." line is passed over for the cause
    after it.

    Args:
        error: The exception.
        limit: Int. At most this many characters are returned. Defaults to
            `300`.

    Returns:
        String. The exception's type name alone when its message is empty.

    Example:

    >>> first_line(ValueError("Expected 3 channels.\\nDetails follow."))
    'ValueError: Expected 3 channels.'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = _MESSAGE_NOISE.sub("", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception encountered")] or lines
    name = type(error).__name__
    return (f"{name}: {lines[0]}" if lines else name)[:limit]


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
        if not model.built or functional.sequential_graph(model) is None:
            raise ValueError(
                f"`{caller}` needs a built model, but Sequential model '{model.name}' is not "
                "built. Give it a `keras.Input(shape=...)` first or call `model.build(input_shape)`."
            )
        return model
    if not functional.is_functional(model):
        raise TypeError(
            f"`{caller}` cannot transform subclassed model '{model.name}' "
            f"({type(model).__name__}): its graph is Python code that tfprune cannot read. "
            "Rewrite it as a functional or Sequential model."
        )
    return model


def _is_functional(model):
    # Kept for tfprune.graph, which still calls it by this name.
    return functional.is_functional(model)


def functional_view(model):
    """Returns the functional graph of a Sequential or functional model.

    A built Sequential model holds an equivalent functional model
    (`tfprune._keras.functional.sequential_graph`); functional models are
    returned as they are.
    """
    if isinstance(model, keras.Sequential):
        return functional.sequential_graph(model)
    return model


TEMPORARY_PREFIX = ".tfprune-"
# Exactly what `atomic_path` names: prefix, process id, tempfile's 8 random characters, the output's suffix.
_TEMPORARY_NAME = re.compile(r"\.tfprune-(\d+)-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")
# A file younger than this is never removed: its writer may run on another host sharing the
# directory (an NFS mount, another container), where its process id means nothing here.
STALE_AFTER_SECONDS = 3600


def remove_stale_temporaries(directory):
    """Deletes the hidden temporary files that killed `tfprune` runs left in `directory`.

    `atomic_path` writes to `.tfprune-<process id>-<8 random characters><suffix>`
    beside the output and renames it at the end; a run killed outright
    (SIGKILL, power loss) cannot delete it. A file of exactly that form is
    removed when it is over an hour old and no process of its id runs on this
    machine; every other file (yours, a running `tfprune`'s, one that might be
    written from another host) is left alone. Nothing is removed on Windows.

    Args:
        directory: String or path-like. The directory to clean.

    Returns:
        List of the removed paths (strings).

    Raises:
        OSError: If `directory` cannot be listed.

    Example:

    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> path = os.path.join(directory, ".tfprune-999999999-abcd1234.keras")
    >>> open(path, "w").close()
    >>> os.utime(path, (0, 0))  # written long ago, by a process that is gone
    >>> [os.path.basename(p) for p in remove_stale_temporaries(directory)]
    ['.tfprune-999999999-abcd1234.keras']
    """
    removed = []
    for name in os.listdir(directory):
        match = _TEMPORARY_NAME.fullmatch(name)
        candidate = os.path.join(directory, name)
        if match is None or _process_runs(int(match.group(1))) or not os.path.isfile(candidate):
            continue
        try:
            if time.time() - os.path.getmtime(candidate) < STALE_AFTER_SECONDS:
                continue
            os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            pass  # another run removed it first, or it is not ours to remove
    return removed


def _process_runs(pid):
    if os.name == "nt":  # os.kill would end the process there: never clean up on Windows
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


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
    remove_stale_temporaries(directory)
    suffix = os.path.splitext(path)[1]
    # The writer's process id in the name tells a later run whether the file is still being written.
    handle, temporary = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", suffix=suffix, dir=directory)
    os.close(handle)
    os.unlink(temporary)  # writers such as model.save() want to create the file themselves
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        # What the writer left behind on failure (a file, or a directory from a writer that made one).
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.unlink(temporary)



def renamed_argument(function_name, name, value, default, old_name, old_value):
    """The value of an argument that was renamed (CONTRIBUTING.md, "API conventions").

    The old name keeps working, with a `DeprecationWarning` naming the new
    one; the new name wins when only it is given.

    Args:
        function_name: String. The public function, e.g. `"tfprune.prune"`.
        name: String. The argument's conventional name.
        value: Its value.
        default: Its default value (`value == default` means it was not given).
        old_name: String. The old name.
        old_value: Its value; None when the old name was not used.

    Returns:
        `old_value` if the old name was used, else `value`.

    Raises:
        TypeError: If both names were given and the new one differs from its default
            (a new name left at its default is taken as not given).

    Example:

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_argument("tfprune.prune", "skip", (), (), "ignore", ("conv",))
    ('conv',)
    >>> str(caught[0].message).split(";")[0]
    '`tfprune.prune(ignore=...)` is deprecated'
    """
    if old_value is None:
        return value
    if not _same(value, default):
        raise TypeError(
            f"{function_name} got both `{name}` and its old name `{old_name}`; pass only "
            f"`{name}`. Received: {name}={value!r}, {old_name}={old_value!r}"
        )
    warnings.warn(
        f"`{function_name}({old_name}=...)` is deprecated; use `{name}=...` instead (same meaning). "
        f"`{old_name}` will be removed in a future release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def _same(value, default):
    try:
        return bool(value == default)
    except Exception:  # an array compared element-wise: given, not the default
        return False

class SharedLayerWarning(UserWarning):
    """A layer could not be copied, so a new model shares it with the original.

    Example:

    >>> import warnings, tfprune
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", tfprune.graph.SharedLayerWarning)  # refuse shared layers
    ...     issubclass(tfprune.graph.SharedLayerWarning, UserWarning)
    True
    """


def loads_back(function):
    """Whether a `.keras` file can name `function` and load it back (in safe mode).

    Keras's own activations and functions registered with
    `keras.saving.register_keras_serializable` do; a plain function of
    another library does not.

    Args:
        function: A callable, such as a layer's `activation`.

    Returns:
        Bool.

    Example:

    >>> loads_back(keras.activations.relu), loads_back(lambda x: x)
    (True, False)
    """
    try:
        config = keras.saving.serialize_keras_object(function)
        return keras.saving.deserialize_keras_object(config) is function
    except Exception:  # noqa: BLE001 - any failure means it would not load back
        return False


def copy_layer(layer):
    """Returns an unbuilt-or-built copy of `layer` with its own weights, or None.

    Keras copies a layer by re-creating it from `get_config()`; tfprune does
    the same, but checks the copy: a `Lambda` layer is re-created from its
    function object (its config holds Python bytecode that Keras's safe mode
    refuses to deserialize, and tfprune never switches safe mode off), a copy
    whose name differs from the original's gets the original's name, and a
    copy whose weights do not match the original's in number and shape is
    rejected.

    Two config defects of third-party layers are repaired rather than passed
    on, so that the copy can be saved to and loaded from `.keras`:

    - a config that holds keys the layer's own constructor refuses (keras-hub
      0.32's `ViTPatchingAndEmbedding` writes `num_patches` and
      `num_positions`): the copy is made without them, must give the
      original's outputs on a probe input, and writes its config without
      them (a `ConfigRepairWarning` names the class and the keys);
    - a weightless layer whose constructor takes only the base `Layer`
      arguments but whose `get_config` raises because it was built with an
      object Keras cannot serialize (keras-hub builds `keras.layers.Identity`
      with a `DTypePolicy` object): the copy is made from its name, dtype
      and trainable flag.

    Args:
        layer: A `keras.layers.Layer`.

    Returns:
        A new layer holding a copy of `layer`'s weights (built if `layer` has
        weights), or None when it cannot be copied that way (its
        `from_config(get_config())` raises for another reason, builds other
        weights, or a repaired copy computes something else).
    """
    dropped = getattr(layer, "_tfprune_dropped_config_keys", ())
    if isinstance(layer, keras.layers.Lambda):
        copy = keras.layers.Lambda(
            layer.function,
            output_shape=functional.lambda_output_shape(layer),
            mask=layer.mask,
            arguments=dict(layer.arguments),
            name=layer.name,
            dtype=layer.dtype_policy,
            trainable=layer.trainable,
        )
    elif type(layer) is keras.layers.Activation:
        # From the function object too: an activation function that is not a
        # registered serializable (keras-hub CLIP's quick_gelu) fails the config round trip.
        copy = keras.layers.Activation(
            layer.activation, name=layer.name, dtype=layer.dtype_policy, trainable=layer.trainable
        )
    else:
        copy, repaired = _from_own_config(layer)
        if copy is None:
            return None
        dropped = tuple(sorted(set(dropped) | set(repaired)))
    if copy.name != layer.name:
        copy.name = layer.name
    if layer.weights:
        try:
            _build_like(copy, layer)
            values = layer.get_weights()
            if [tuple(weight.shape) for weight in copy.weights] != [value.shape for value in values]:
                return None
            copy.set_weights(values)
        except Exception:  # noqa: BLE001 - a build or weight mismatch: not copyable
            return None
    if dropped and not getattr(layer, "_tfprune_dropped_config_keys", None):
        if not _same_outputs(copy, layer):
            return None
        warnings.warn(
            f"{type(layer).__name__}.get_config() returns {', '.join(map(repr, dropped))}, which its "
            "constructor refuses, so its config would not load back; tfprune's copies of these "
            "layers write their config without those keys. A model loaded back from `.keras` has "
            "the original class again: transform it with tfprune again before saving it again.",
            ConfigRepairWarning,
            stacklevel=3,
        )
    if dropped:
        _write_config_without(copy, dropped)
    if getattr(layer, "_tfprune_written_config", False) and not getattr(copy, "_tfprune_written_config", False):
        _write_config(copy, layer.get_config())  # its class's `get_config` raises (`_from_attributes`)
    if getattr(layer, "_tfprune_not_inlined", None):
        # A block `flatten` kept whole stays one in copies, and says why where it is met again.
        object.__setattr__(copy, "_tfprune_not_inlined", layer._tfprune_not_inlined)
    return copy


class ConfigRepairWarning(UserWarning):
    """tfprune copied a layer whose own config would not load back, and repaired the copy's.

    Example:

    >>> import warnings, tfprune
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", tfprune.graph.ConfigRepairWarning)  # repairs expected
    ...     issubclass(tfprune.graph.ConfigRepairWarning, UserWarning)
    True
    """


# Keyword arguments `keras.layers.Layer.__init__` accepts besides its named ones.
_BASE_LAYER_KWARGS = frozenset({"input_dim", "input_shape"})
_BASE_LAYER_NAMED = frozenset({"activity_regularizer", "trainable", "dtype", "autocast", "name"})


def _constructor_arguments(cls):
    """Names a layer class's constructor accepts, through every `**kwargs` up to `Layer`."""
    names = set(_BASE_LAYER_KWARGS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) or klass is keras.layers.Layer:
            break
    names.discard("self")
    return names


def _from_own_config(layer):
    """`(copy, dropped_keys)` re-created from `layer`'s config (repaired if need be), or `(None, ())`."""
    cls = type(layer)
    try:
        config = layer.get_config()
    except NotImplementedError:
        # Built with an argument Keras cannot serialize; only a layer whose
        # constructor takes nothing but the base arguments is re-created safely.
        if layer.weights or not _constructor_arguments(cls) - _BASE_LAYER_KWARGS <= _BASE_LAYER_NAMED:
            return _from_attributes(layer), ()
        config = {
            "name": layer.name,
            "trainable": layer.trainable,
            "dtype": keras.dtype_policies.serialize(layer.dtype_policy),
        }
        try:
            copy = cls.from_config(config)
            copy.get_config()
        except Exception:  # noqa: BLE001 - any failure means "cannot be copied"
            return None, ()
        return copy, ()
    except Exception:  # noqa: BLE001 - any failure means "cannot be copied"
        return None, ()
    try:
        return _from_config_without_refused_keys(cls, config)
    except Exception:  # noqa: BLE001 - any failure means "cannot be copied"
        return None, ()


def _plain(value):
    """`value` as a config entry (NumPy scalars as Python numbers), or raises TypeError."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    raise TypeError(f"{type(value).__name__} is not a plain config value")


def _from_attributes(layer):
    """A copy of a layer whose `get_config` raises, from its constructor arguments read back, or None.

    Keras gives a layer without a `get_config` of its own a config made of
    its constructor arguments, unless one of them is not a plain value
    (keras-hub passes its `DTypePolicy` object as `dtype`); `get_config` then
    raises, and the layer could neither be copied nor saved. keras-hub's
    Gemma `RMSNormalization` keeps its one argument as the attribute of the
    same name (`epsilon`). The copy is made from those attributes, the base
    arguments and every other argument's default; it is used only if it
    builds the same weights and gives the layer's outputs on a probe input,
    and it writes that config, so a model holding it reloads.
    """
    cls = type(layer)
    config = {
        "name": layer.name,
        "trainable": layer.trainable,
        "dtype": keras.dtype_policies.serialize(layer.dtype_policy),
    }
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or parameter.name == "self":
                continue
            if parameter.name in config or parameter.name in _BASE_LAYER_NAMED | _BASE_LAYER_KWARGS:
                continue
            try:
                config[parameter.name] = _plain(getattr(layer, parameter.name))
            except (AttributeError, TypeError):
                if parameter.default is parameter.empty:
                    return None
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) or klass is keras.layers.Layer:
            break
    try:
        copy = cls.from_config(dict(config))
        if layer.weights:
            _build_like(copy, layer)
            if _weight_shapes(copy) != _weight_shapes(layer):
                return None
            copy.set_weights(layer.get_weights())
        if not _same_outputs(copy, layer):
            return None
    except Exception:  # noqa: BLE001 - any failure means "cannot be copied"
        return None
    _write_config(copy, config)
    return copy


def _weight_shapes(layer):
    return [tuple(weight.shape) for weight in layer.weights]


def _write_config(layer, config):
    """Makes `layer.get_config()` (and so `.keras` files) return `config` (see `_from_attributes`)."""
    # The name is read when asked: `flatten` renames copies after making them.
    object.__setattr__(layer, "get_config", lambda: {**config, "name": layer.name})
    object.__setattr__(layer, "_tfprune_written_config", True)


def _from_config_without_refused_keys(cls, config):
    """`(cls.from_config(config), ())`, else without the keys `cls`'s constructor refuses."""
    try:
        return cls.from_config(config), ()
    except Exception:  # noqa: BLE001 - try once more without the keys the constructor refuses
        refused = tuple(sorted(set(config) - _constructor_arguments(cls)))
        if not refused:
            raise
    return cls.from_config({k: v for k, v in config.items() if k not in refused}), refused


def rebuild_from_config(layer, config):
    """A new layer of `layer`'s class from an edited `config` (the surgery's resize).

    Keys the class's constructor refuses (see `copy_layer`) are left out, and
    the new layer writes its config without them, as `layer` did if it was a
    repaired copy.

    Args:
        layer: The `keras.layers.Layer` being resized.
        config: Dict. Its edited config.

    Returns:
        A new, unbuilt layer.

    Raises:
        Exception: Whatever `from_config` raises for a config that cannot be
            repaired by leaving keys out.
    """
    new_layer, refused = _from_config_without_refused_keys(type(layer), config)
    keys = tuple(sorted(set(refused) | set(getattr(layer, "_tfprune_dropped_config_keys", ()))))
    if keys:
        _write_config_without(new_layer, keys)
    if getattr(layer, "_tfprune_written_config", False):
        _write_config(new_layer, config)
    return new_layer


def _write_config_without(layer, keys):
    """Makes `layer.get_config()` (and so `.keras` files) leave out `keys`."""
    class_get_config = type(layer).get_config

    def get_config():
        config = class_get_config(layer)
        for key in keys:
            config.pop(key, None)
        return config

    object.__setattr__(layer, "get_config", get_config)
    object.__setattr__(layer, "_tfprune_dropped_config_keys", tuple(keys))


def _probe_inputs(layer):
    """Random inputs shaped like `layer`'s first call (None dimensions as 2), or None.

    A sub-layer called only inside another layer's `call` has no call node;
    the input shape it was built with stands for it.
    """
    generator = np.random.default_rng(0)
    calls = functional.call_nodes(layer)
    if not calls:
        shape = (layer.get_build_config() or {}).get("input_shape")
        if not shape or not all(size is None or isinstance(size, int) for size in shape):
            return None
        shape = [2 if size is None else size for size in shape]
        dtype = layer.compute_dtype
        return (keras.ops.convert_to_tensor(generator.standard_normal(shape), dtype=dtype),), {}
    node = calls[0]

    def probe(value):
        if isinstance(value, keras.KerasTensor):
            shape = [2 if dim is None else dim for dim in value.shape]
            return keras.ops.convert_to_tensor(generator.standard_normal(shape), dtype=value.dtype)
        return value

    return (keras.tree.map_structure(probe, node.arguments.args),
            keras.tree.map_structure(probe, node.arguments.kwargs))  # fmt: skip


def _same_outputs(copy, layer, atol=1e-6):
    """Whether `copy` computes what `layer` computes on a probe input (False if it cannot be probed)."""
    inputs = _probe_inputs(layer)
    if inputs is None:
        return False
    args, kwargs = inputs
    try:
        want = keras.tree.flatten(layer(*args, **kwargs))
        got = keras.tree.flatten(copy(*args, **kwargs))
    except Exception:  # noqa: BLE001 - a layer that cannot be probed is not trusted
        return False
    return len(want) == len(got) and all(
        np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=atol, rtol=0)
        for a, b in zip(want, got)
    )


def _build_like(copy, layer):
    """Builds `copy` as `layer` was built: from its build config, else by a symbolic call.

    Composite layers often create their sub-layers' weights on the first call
    rather than in `build`; calling the copy on symbolic inputs shaped like
    the original's first call creates them.
    """
    if not copy.built:  # a copy checked numerically is built already (`_from_attributes`)
        with warnings.catch_warnings():
            # Keras's warning about a layer without `build`: the symbolic call below builds it.
            warnings.filterwarnings("ignore", message=r"`build\(\)` was called on layer")
            copy.build_from_config(layer.get_build_config())
    calls = functional.call_nodes(layer)
    if len(copy.weights) == len(layer.weights) or not calls:
        return
    # Its `build` does not make what its first call makes (keras-hub's DeBERTa
    # RelativeEmbedding has no `build` and builds a LayerNormalization in
    # `call`): with no build config, a `.keras` file builds it by that call
    # too, instead of loading weights into sub-layers that were never built.
    object.__setattr__(copy, "get_build_config", lambda: None)
    if type(copy).build is keras.layers.Layer.build:
        copy.built = False  # Keras's own `build` only marked it built: the call below builds it
    node = calls[0]

    def fresh(value):
        if isinstance(value, keras.KerasTensor):
            return keras.Input(batch_shape=value.shape, dtype=value.dtype)
        return value

    copy(*keras.tree.map_structure(fresh, node.arguments.args),
         **keras.tree.map_structure(fresh, node.arguments.kwargs))  # fmt: skip


def copy_or_share(layer, caller):
    """`copy_layer(layer)`, or `layer` itself (with a `SharedLayerWarning` if it has weights).

    Args:
        layer: A `keras.layers.Layer` (any other operation, stateless, is
            returned as it is).
        caller: String. The public function asking, named in the warning.

    Returns:
        A copy of `layer`, or `layer` when it cannot be copied.
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a keras.ops operation: stateless
    copy = copy_layer(layer)
    if copy is not None:
        return copy
    if not layer.weights:
        return layer  # no state to share: using the same object changes nothing
    warnings.warn(
        f"`{caller}`: layer '{layer.name}' ({type(layer).__name__}) cannot be re-created from its "
        "config (its `from_config(get_config())` fails or builds other weights), so the new model "
        "shares this layer and its weights with the original model: training one changes the "
        "other. Give the layer a `get_config` that round-trips to get an independent copy.",
        SharedLayerWarning,
        stacklevel=3,
    )
    return layer


def clone_graph(model, replace=None, caller="tfprune"):
    """Clones a Sequential/functional model, replacing some layers.

    Every layer for which `replace(layer)` returns None is copied with
    `copy_layer` (its weights included); a layer that cannot be copied is
    shared with the original model, with a `SharedLayerWarning` naming it.
    Otherwise the returned (built) layer is used as it is. Input layer names
    are preserved, so the clone's `model.layers` names match the original's.
    The input model is not touched.

    Args:
        model: A built Sequential or functional Keras model.
        replace: Optional callable `layer -> keras.layers.Layer | None`.
        caller: String. The public function asking, named in warnings.

    Returns:
        A new model of the same kind.
    """
    copies = {}

    def clone_function(layer):
        if id(layer) in copies:
            return copies[id(layer)]
        new_layer = replace(layer) if replace is not None else None
        if new_layer is None:
            new_layer = copy_or_share(layer, caller)
        copies[id(layer)] = new_layer
        return new_layer

    kwargs = {}
    if not isinstance(model, keras.Sequential):
        kwargs["input_tensors"] = keras.tree.map_structure(
            lambda tensor: keras.Input(
                batch_shape=tensor.shape,
                dtype=tensor.dtype,
                sparse=tensor.sparse,
                name=functional.input_name(tensor),
            ),
            functional.inputs_structure(model),
        )
    return keras.models.clone_model(model, clone_function=clone_function, **kwargs)


def _parameter_count(layer):
    return int(sum(np.prod(weight.shape) for weight in layer.trainable_weights))


def warn_partial_coverage(model, covered, skipped, caller, verb, share=0.5):
    """Warns when layers that `caller` left alone hold more than `share` of the weights.

    `sparsify` and `prune_low_magnitude` only transform the layers they know;
    a model whose weights mostly sit in other layers (an embedding layer, a
    layer with weights of its own) would end up barely sparse, with no sign of
    it. Layers the user skipped on purpose do not count as left alone.

    Args:
        model: The (flattened) model that was transformed.
        covered: Set of layer names that were transformed.
        skipped: Set of layer names the user asked to leave alone.
        caller: String. The public function, named in the warning.
        verb: String. What happened to the covered layers ("converted", "wrapped").
        share: Float. The untouched share above which to warn.

    Returns:
        Float. The share of the model's trainable parameters left untouched.
    """
    sizes = {layer.name: _parameter_count(layer) for layer in model.layers}
    total = sum(sizes.values())
    untouched = {name: size for name, size in sizes.items()
                 if size and name not in covered and name not in skipped}  # fmt: skip
    left = sum(untouched.values()) / total if total else 0.0
    if left > share:
        largest = sorted(untouched.items(), key=lambda item: -item[1])[:3]
        names = ", ".join(
            f"'{name}' ({type(model.get_layer(name)).__name__}, {size / total:.0%})"
            for name, size in largest
        )
        warnings.warn(
            f"`{caller}` {verb} {len(covered)} layer(s) of model '{model.name}', but {left:.0%} of "
            f"its trainable weights are in layers it cannot transform: {names}. The result will "
            "be far less sparse than its target; see the README section on models tfprune "
            "supports.",
            stacklevel=3,
        )
    return left


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
