"""Copying layers with their weights, and cloning graph models (not public API).

Keras copies a layer by re-creating it from its config; `copy_layer` does the
same and checks the copy (same weights, same outputs), repairing two config
defects of third-party layers. `clone_graph` rebuilds a Sequential or
functional model from such copies, with some layers replaced (the surgery's
resized layers), and `rebuild_from_config` re-creates a layer from an edited
config.
"""

import inspect
import warnings

import keras
import numpy as np

from tfprune._keras import functional


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

    >>> import keras
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
            if [tuple(weight.shape) for weight in copy.weights] != [
                value.shape for value in values
            ]:
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
    if getattr(layer, "_tfprune_written_config", False) and not getattr(
        copy, "_tfprune_written_config", False
    ):
        _write_config(
            copy, layer.get_config()
        )  # its class's `get_config` raises (`_from_attributes`)
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
        if (
            layer.weights
            or not _constructor_arguments(cls) - _BASE_LAYER_KWARGS <= _BASE_LAYER_NAMED
        ):
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
            if (
                parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
                or parameter.name == "self"
            ):
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
