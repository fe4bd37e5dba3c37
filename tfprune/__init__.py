"""tfprune: pruning for Keras 3.

Learnable unstructured sparsity (STR layers), structured pruning that
physically removes channels from functional models, and export to
TFLite/LiteRT. The public API is re-exported here.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.path.basename(sys.argv[0]) == "tfprune":
    # The `tfprune` command keeps TensorFlow's C++ start-up chatter off the
    # terminal; library users keep whatever logging they configured.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfprune import (
    analysis,
    callbacks,
    criteria,
    datasets,
    export,
    graph,
    layers,
    magnitude,
    models,
    plots,
    pruning,
    regularizers,
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
    "export",
    "graph",
    "layers",
    "magnitude",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "check_m_by_n",
    "prune_low_magnitude",
    "models",
    "sparsify",
    "sparsity_report",
    "strip",
    "criteria",
    "plots",
    "pruning",
    "regularizers",
    "PruneResult",
    "SensitivityResult",
    "prune",
    "sensitivity",
    "surgery",
]
