"""One-shot unstructured pruning of trained models from calibration data: magnitude, Wanda, SparseGPT.

`prune(model, "sparsegpt", sparsity=0.5, data=x)` (or `m_by_n=(2, 4)`)
returns a new model with exact zeros in its Dense, EinsumDense and
Conv1D/Conv2D kernels and a `OneShotResult`; the layers are pruned one by one
in the order the model runs them, each fitted to the inputs the layers
pruned before it give it. `methods` holds the per-matrix algorithms.
"""

from tfprune.oneshot.methods import magnitude, reconstruction_error, sparsegpt, wanda
from tfprune.oneshot.pruning import METHODS, prune
from tfprune.oneshot.result import OneShotResult

__all__ = [
    "METHODS",
    "OneShotResult",
    "magnitude",
    "prune",
    "reconstruction_error",
    "sparsegpt",
    "wanda",
]
