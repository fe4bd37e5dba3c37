"""tfprune: pruning for Keras 3.

Learnable unstructured sparsity (STR layers), structured pruning that
physically removes channels from functional models, and export to
TFLite/LiteRT. The public API is re-exported here.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfprune import analysis, datasets  # noqa: E402
from tfprune import callbacks, layers  # noqa: E402
from tfprune.analysis import analyze  # noqa: E402
from tfprune.sparsity import strip  # noqa: E402
from tfprune.version import __version__  # noqa: E402

__all__ = [
    "__version__",
    "analysis",
    "analyze",
    "callbacks",
    "datasets",
    "layers",
    "strip",
]
