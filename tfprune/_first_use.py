"""tfprune's subclasses of keras-hub layers, made the first time they are needed.

Some keras-hub layers are rebuilt or copied as a tfprune subclass (a mixin
over keras-hub's class) that keeps a width explicit or a config loadable.
Importing tfprune must not import keras-hub, so each subclass is made on
first use; a `.keras` file naming one (`tfprune>LlamaAttention`) finds it
through a stand-in registered under that name at import, and Keras finds
the class itself through its module's `__getattr__`. The family modules
(`tfprune.handlers_keras_hub`, `handlers_decoders`, `handlers_sam3`,
`handlers_rwkv`) share these three helpers.
"""

import importlib

import keras

from tfprune.handlers_base import register_handler


def subclass(made, name, module, mixin, home, handler=None, attributes=None, doc=None):
    """tfprune's subclass `mixin + keras-hub's <module>.<name>`, made and registered once.

    Args:
        made: Dict name -> class (or None: keras-hub lacks it), the cache of
            the calling module.
        name: String. The keras-hub class, and the subclass's name.
        module: String. keras-hub's module defining it.
        mixin: The class put before keras-hub's.
        home: String. The module the subclass says it is from (the caller's
            `__name__`, whose `__getattr__` finds it).
        handler: Callable returning the `Handler` to register for the
            subclass, or None.
        attributes: Dict of class attributes, or None.
        doc: String. The docstring (default: the mixin's).

    Returns:
        The class, registered for serialization in package `tfprune`.

    Raises:
        ImportError: If keras-hub, or that class of it, is not installed.
    """
    if name not in made:
        try:
            parent = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            made[name] = None
        else:
            namespace = {"__module__": home, "__doc__": doc or mixin.__doc__, **(attributes or {})}
            cls = type(name, (mixin, parent), namespace)
            made[name] = keras.saving.register_keras_serializable(package="tfprune")(cls)
            if handler is not None:
                register_handler(cls, handler())  # its module is tfprune's: found by class
    if made[name] is None:
        raise ImportError(f"keras-hub's {name} ({module}) is not installed")
    return made[name]


def register_stand_in(name, make, family=""):
    """Registers a stand-in under `tfprune>name` that loads a saved layer through `make(name)`.

    Keras finds a saved layer's class by its registered name only; the
    stand-in makes the real subclass when a file naming it is loaded.

    Args:
        name: String. The subclass's name.
        make: Callable `name -> class`, raising ImportError (or returning
            None) without keras-hub.
        family: String. Said after the class's name in the error (`" (RWKV-7)"`).
    """

    def from_config(cls, config):
        try:
            made = make(name)
        except ImportError:
            made = None
        if made is None:
            raise ImportError(
                f"Layer '{config.get('name', name)}' of this .keras file is tfprune's subclass of keras-hub's "
                f"{name}{family}; install keras-hub (`pip install keras-hub`) to load it."
            )
        return made.from_config(config)

    namespace = {"from_config": classmethod(from_config), "get_config": lambda self: {}}
    stand_in = type(f"_Deferred{name}", (), namespace)
    return keras.saving.register_keras_serializable(package="tfprune", name=name)(stand_in)


def module_attribute(name, names, make, module):
    """A family module's `__getattr__`: the subclass `make(name)` for one of `names`.

    Args:
        name: String. The attribute asked for.
        names: The subclass names the module makes.
        make: Callable `name -> class`, raising ImportError (or returning
            None) without keras-hub.
        module: String. The module's `__name__`, for the error.

    Returns:
        The class.

    Raises:
        AttributeError: If `name` is none of `names` or keras-hub lacks it
            (`hasattr` must say False, not raise).
    """
    if name in names:
        try:
            made = make(name)
        except ImportError as error:
            raise AttributeError(f"{name} needs keras-hub, which is not installed") from error
        if made is not None:
            return made
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
