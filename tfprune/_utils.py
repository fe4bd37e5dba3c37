"""Small helpers shared by every tfprune module (not public API).

Argument checks (`is_number`, `is_integer`, `check_verbose`,
`renamed_argument`), `first_line` for quoting errors and `LazyModule`. The
helpers of one topic live in their own modules and are re-exported here:
`tfprune._model_checks` (graph models), `tfprune._atomic_files` (writing
outputs), `tfprune._layer_copies` (copying layers, cloning models) and
`tfprune._tensorboard` (summaries).
"""

import importlib
import numbers
import re
import warnings

import numpy as np

# The helpers of one topic live in modules of their own; the rest of tfprune
# (and its tests) still reads them from here.
from tfprune._atomic_files import _TEMPORARY_NAME as _TEMPORARY_NAME
from tfprune._atomic_files import STALE_AFTER_SECONDS as STALE_AFTER_SECONDS
from tfprune._atomic_files import TEMPORARY_PREFIX as TEMPORARY_PREFIX
from tfprune._atomic_files import atomic_path as atomic_path
from tfprune._atomic_files import remove_stale_temporaries as remove_stale_temporaries
from tfprune._layer_copies import ConfigRepairWarning as ConfigRepairWarning
from tfprune._layer_copies import SharedLayerWarning as SharedLayerWarning
from tfprune._layer_copies import _build_like as _build_like
from tfprune._layer_copies import _same_outputs as _same_outputs
from tfprune._layer_copies import _write_config as _write_config
from tfprune._layer_copies import clone_graph as clone_graph
from tfprune._layer_copies import copy_layer as copy_layer
from tfprune._layer_copies import copy_or_share as copy_or_share
from tfprune._layer_copies import loads_back as loads_back
from tfprune._layer_copies import rebuild_from_config as rebuild_from_config
from tfprune._model_checks import _is_functional as _is_functional
from tfprune._model_checks import functional_view as functional_view
from tfprune._model_checks import require_graph_model as require_graph_model
from tfprune._model_checks import warn_partial_coverage as warn_partial_coverage
from tfprune._tensorboard import write_summary as write_summary


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


# `doctest.testmod(tfprune._utils)` runs the examples of what this module re-exports too.
__test__ = {
    "ConfigRepairWarning": ConfigRepairWarning,
    "SharedLayerWarning": SharedLayerWarning,
    "loads_back": loads_back,
    "remove_stale_temporaries": remove_stale_temporaries,
}
