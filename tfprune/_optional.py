"""TensorFlow, LiteRT and tensorflow-datasets: optional, asked for where a feature needs them (not public API).

tfprune's core (building, pruning, STR training, analysis) runs on any
Keras backend and imports none of them. What only TensorFlow does (export to
LiteRT, the tf.data form of `tfprune.datasets`, TensorBoard summaries) imports
them through `require` or an `OptionalModule` here, so that a missing package
is one sentence saying what to install, the same everywhere.
"""

import importlib
import sys

__all__ = [
    "EXTRA",
    "MissingDependencyError",
    "OptionalModule",
    "is_tf_dataset",
    "require",
    "require_tensorflow",
]

# The extra of setup.cfg that installs all three.
EXTRA = "tensorflow"
# The name a user knows each module by: its pip package.
PACKAGES = {
    "tensorflow": "TensorFlow",
    "ai_edge_litert": "ai-edge-litert",
    "tensorflow_datasets": "tensorflow-datasets",
}


class MissingDependencyError(ImportError):
    """A feature needs a package of the `tfprune[tensorflow]` extra that is not installed."""


def require(feature, *modules):
    """Imports `modules` and returns the first; one sentence naming what to install if any is missing.

    Only an absent package of the extra is reported so (tensorflow-datasets
    installed without TensorFlow says TensorFlow is missing); a package that
    is installed but fails to import for another reason raises its own error.

    Args:
        feature: String. What needs the modules, as the sentence's subject,
            e.g. `"Export to LiteRT"`.
        *modules: Strings. Module names, e.g. `"tensorflow"`,
            `"ai_edge_litert.interpreter"`.

    Returns:
        The first module.

    Raises:
        MissingDependencyError: If a package is not installed (an
            `ImportError`; the `tfprune` command exits 2 with its message).

    Example:

    >>> require("Adding numbers", "math").fsum([0.5, 0.25])
    0.75
    >>> require("Export to LiteRT", "no_such_module")
    Traceback (most recent call last):
    ...
    tfprune._optional.MissingDependencyError: Export to LiteRT needs no_such_module, which is not installed; install it with: pip install "tfprune[tensorflow]"
    """
    imported, missing = [], []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            absent = (error.name or "").split(".")[0]
            if absent != name.split(".")[0] and absent not in PACKAGES:
                raise  # installed, but something it imports is missing
            if PACKAGES.get(absent, absent) not in missing:
                missing.append(PACKAGES.get(absent, absent))
    if missing:
        names = " and ".join(missing)
        which, them = ("which are", "them") if len(missing) > 1 else ("which is", "it")
        raise MissingDependencyError(
            f"{feature} needs {names}, {which} not installed; install {them} with: "
            f'pip install "tfprune[{EXTRA}]"'
        )
    return imported[0]


def require_tensorflow(feature):
    """Returns the `tensorflow` module, or raises one sentence saying to install `tfprune[tensorflow]`.

    Args:
        feature: String. What needs TensorFlow, e.g. `"TensorBoard summaries"`.

    Returns:
        The `tensorflow` module.

    Raises:
        MissingDependencyError: If TensorFlow is not installed.

    Example:

    >>> tf = require_tensorflow("TensorBoard summaries")  # doctest: +SKIP
    """
    return require(feature, "tensorflow")


class OptionalModule:
    """A module imported through `require` on first attribute access.

    For modules whose functions use an optional package throughout (`tf.data`
    in `tfprune.datasets`, the converter in `tfprune.export`): nothing is
    imported by `import tfprune`, and the first use without the package is
    the one sentence.

    Args:
        name: String. The module, e.g. `"ai_edge_litert.interpreter"`.
        feature: String. What needs it, for the sentence.

    Example:

    >>> tf = OptionalModule("tensorflow", "Export to LiteRT")  # nothing imported yet
    """

    def __init__(self, name, feature):
        self._name = name
        self._feature = feature

    def __getattr__(self, attribute):
        return getattr(require(self._feature, self._name), attribute)


def is_tf_dataset(value):
    """True if `value` is a `tf.data.Dataset`; never imports TensorFlow (none exists before it is imported).

    Args:
        value: Anything.

    Returns:
        Bool.

    Example:

    >>> is_tf_dataset([1, 2, 3])
    False
    """
    tensorflow = sys.modules.get("tensorflow")
    return tensorflow is not None and isinstance(value, tensorflow.data.Dataset)
