"""tfprune: pruning for Keras 3.

Learnable unstructured sparsity (STR layers), structured pruning that
physically removes channels from functional models, and export to
TFLite/LiteRT. The public API is re-exported here.
"""

import importlib.util
import os
import sys


def _import_tensorflow_quietly():
    # TensorFlow's C++ runtime logs start-up notes (oneDNN, CUDA probing) to
    # file descriptor 2 before its log level applies. The `tfprune` command
    # keeps them off the terminal so that an error is one line; library users
    # keep whatever logging they configured.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_logical_devices()  # device probing logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _installed_backend():
    # TensorFlow first (the `tensorflow` extra); without it the first other backend installed.
    for name in ("tensorflow", "jax", "torch"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "tensorflow"  # none installed: Keras's own error says so


# The library runs on the user's Keras backend (KERAS_BACKEND or
# ~/.keras/keras.json). The `tfprune` command is a TensorFlow program: it
# chooses TensorFlow for itself unless the variable says otherwise, or JAX or
# PyTorch when TensorFlow is not installed (its commands that need TensorFlow
# then say what to install).
if os.path.basename(sys.argv[0]) == "tfprune":
    os.environ.setdefault("KERAS_BACKEND", _installed_backend())
    if os.environ["KERAS_BACKEND"] == "tensorflow" and importlib.util.find_spec("tensorflow"):
        _import_tensorflow_quietly()

from tfprune import (
    analysis,
    callbacks,
    criteria,
    datasets,
    decoding,
    export,
    graph,
    # Registers the names of the keras-hub layers tfprune rebuilds as its own subclasses
    # (`tfprune>DINOV3Attention`), so that a pruned model reloads from `.keras`.
    handlers_keras_hub,  # noqa: F401
    handlers_qwen3_5,  # noqa: F401
    handlers_sam3,  # noqa: F401  (`tfprune>SAM3Attention`, ...)
    latency,
    layers,
    magnitude,
    models,
    oneshot,
    plots,
    pruners,
    pruning,
    regularizers,
    search,
    surgery,
)
from tfprune.analysis import analyze
from tfprune.magnitude import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    check_m_by_n,
    prune_low_magnitude,
)
from tfprune.pruning import PruneResult, SensitivityResult, prune, sensitivity
from tfprune.sparsity import sparsify, sparsity_report, strip
from tfprune.version import __version__

__all__ = [
    "__version__",
    "analysis",
    "analyze",
    "callbacks",
    "datasets",
    "decoding",
    "export",
    "graph",
    "latency",
    "layers",
    "magnitude",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "check_m_by_n",
    "prune_low_magnitude",
    "models",
    "oneshot",
    "sparsify",
    "sparsity_report",
    "strip",
    "criteria",
    "plots",
    "pruners",
    "pruning",
    "regularizers",
    "PruneResult",
    "SensitivityResult",
    "prune",
    "sensitivity",
    "search",
    "surgery",
]
