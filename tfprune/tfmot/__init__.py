"""TensorFlow Model Optimization's pruning API, served by tfprune, for Keras 3.

Code written for TFMOT's `tfmot.sparsity.keras` runs on Keras 3 with one line
changed: replace `import tensorflow_model_optimization as tfmot` with

```python
import tfprune.tfmot as tfmot
```

and `tfmot.sparsity.keras.prune_low_magnitude`, `strip_pruning`,
`UpdatePruningStep`, `PruningSummaries`, `ConstantSparsity`,
`PolynomialDecay`, `PrunableLayer`, `prune_scope`, `PruningPolicy` and
`PruneForLatencyOnXNNPack` are tfprune's implementations (see
`tfprune.tfmot.sparsity.keras`). Only pruning is offered: TFMOT's
quantization and clustering APIs are not.
"""

from tfprune.tfmot import sparsity

__all__ = ["sparsity"]
