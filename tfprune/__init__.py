"""tfprune: pruning for Keras 3.

Learnable unstructured sparsity (STR layers), structured pruning that
physically removes channels from functional models, and export to
TFLite/LiteRT. The public API is re-exported here.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfprune import analysis, callbacks, datasets, layers
from tfprune.analysis import analyze
from tfprune.sparsity import strip
from tfprune.version import __version__

__all__ = [
    "__version__",
    "analysis",
    "analyze",
    "callbacks",
    "datasets",
    "layers",
    "strip",
]
